# warmpool — top-level GNU Makefile.
#   make          build build/warmpoold, build/warmpoolctl (tools/), the client library (build/libwarmpool.so,
#                 .a and warmpool.pc), build/wpbackend
#   make demo     run warmpoold in the foreground on config/demo.yaml with the demo backend
#   make check    build an ASan+UBSan variant in build/asan and run every test, then
#                 the integration tests again with every daemon under valgrind
#   make deps     install missing Debian packages (idempotent)
#   make clean

BUILD    ?= build
SAN      ?= 0
CC       ?= cc
PKGS     := yaml-0.1 libsystemd openssl libcares

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS   ?= -O2 -g
ifeq ($(SAN),1)
CFLAGS   := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
endif
# The floors: lib/ stands on nothing of ours, config/ on lib/, daemon/ on
# both; tools/ (warmpoolctl), the test backend and the benchmark client on
# lib/ alone. Each source file sees only the headers of its floor and those
# below (the include path says so: a header from above does not compile), and
# each unit test is compiled and linked as the floor it tests: the floor of a
# file is FLOOR_<its name> when set, else its top directory.
INC_lib    := -Ilib
INC_config := -Ilib -Iconfig
INC_daemon := -Ilib -Iconfig -Idaemon
INC_tools  := -Ilib
INC_tests  := -Ilib
FLOOR_test_config := config
FLOOR_test_pool   := daemon
FLOOR_test_health := daemon
FLOOR_test_tls    := daemon
FLOOR_test_dns    := daemon
FLOOR_fuzz_config := config
FLOOR_fuzz_tls    := config
FLOOR_fuzz_admin  := daemon
floor = $(or $(FLOOR_$(basename $(notdir $1))),$(firstword $(subst /, ,$1)))
floor_inc = $(or $(INC_$(call floor,$1)),$(error $1: no floor (set FLOOR_$(basename $(notdir $1)) in the Makefile)))

ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE $(call floor_inc,$<) \
             $(shell pkg-config --cflags $(PKGS))
LIBS      = $(shell pkg-config --libs $(PKGS)) -lev -lm

# lib/warmpool.c is the public client library (libwarmpool); the rest of lib/
# is internal (libwpcore.a), linked into the daemon, warmpoolctl and tests.
# The client library takes the internal pieces it uses (CLIENT_SRC) into its
# own PIC build, hidden.
LIB_SRC    := $(filter-out lib/warmpool.c,$(wildcard lib/*.c))
CLIENT_SRC := lib/warmpool.c lib/sock.c
CONFIG_SRC := $(wildcard config/*.c)
DAEMON_SRC := $(filter-out daemon/main.c,$(wildcard daemon/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CONFIG_OBJ := $(CONFIG_SRC:%.c=$(BUILD)/obj/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(BUILD)/pic/%.o)

DEB_PKGS := gcc make pkg-config libev-dev libyaml-dev libsystemd-dev libcmocka-dev libssl-dev openssl \
            python3 python3-pytest python3-pytest-xdist socat iproute2 valgrind redis-server memcached postgresql python3-cryptography \
            libc-ares-dev dnsmasq-base strace

.PHONY: all deps demo check floors unit integration valgrind bench bench-deps clean
.DEFAULT_GOAL := all

# The version, from the one place that holds it (lib/version.h).
WARMPOOL_VERSION_STR = $(shell sed -n 's/^\#define WARMPOOL_VERSION "\(.*\)"/\1/p' lib/version.h)

WP_SOVERSION := 0
WP_SONAME    := libwarmpool.so.$(WP_SOVERSION)
WP_SOFILE    := $(WP_SONAME).1.0
CLIENT_LIBS  := $(BUILD)/libwarmpool.a $(BUILD)/$(WP_SOFILE) $(BUILD)/$(WP_SONAME) $(BUILD)/libwarmpool.so \
                $(BUILD)/warmpool.pc

all: $(BUILD)/warmpoold $(BUILD)/warmpoolctl $(CLIENT_LIBS) $(BUILD)/wpbackend

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libwpcore.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# Archives of the upper floors, for the unit tests: the linker takes only
# the members a test needs, and never a member of a floor above the test's.
$(BUILD)/libwpconfig.a: $(CONFIG_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libwpdaemon.a: $(DAEMON_OBJ)
	rm -f $@ && ar rcs $@ $^

# The client library: only the wp_* API is exported (-fvisibility=hidden).
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -MMD -MP -c -o $@ $<

$(BUILD)/libwarmpool.a: $(CLIENT_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/$(WP_SOFILE): $(CLIENT_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,$(WP_SONAME) -o $@ $^

$(BUILD)/$(WP_SONAME) $(BUILD)/libwarmpool.so: $(BUILD)/$(WP_SOFILE)
	ln -sf $(WP_SOFILE) $@

# For building against the build tree: PKG_CONFIG_PATH=build pkg-config warmpool
$(BUILD)/warmpool.pc: packaging/warmpool.pc.in lib/version.h
	sed -e 's|@PREFIX@|$(abspath $(BUILD))|' -e 's|@LIBDIR@|$(abspath $(BUILD))|' \
	  -e 's|@INCLUDEDIR@|$(abspath lib)|' \
	  -e 's|@VERSION@|$(WARMPOOL_VERSION_STR)|' $< > $@

$(BUILD)/warmpoold: $(BUILD)/obj/daemon/main.o $(DAEMON_OBJ) $(CONFIG_OBJ) $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/warmpoolctl: $(BUILD)/obj/tools/warmpoolctl.o $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/wpbackend: $(BUILD)/obj/tests/backend/wpbackend.o $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs openssl) -lev -lm

$(BUILD)/wpload: $(BUILD)/obj/tests/bench/wpload.o $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs openssl) -lev -lm

# What a unit test links, by the floor it tests (lib tests: libwarmpool for
# test_warmpool, libwpcore for the rest).
LINK_tests  := $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
LINK_config := $(BUILD)/libwpconfig.a $(BUILD)/libwpcore.a
LINK_daemon := $(BUILD)/libwpdaemon.a $(BUILD)/libwpconfig.a $(BUILD)/libwpcore.a
define unit_rule
$(BUILD)/tests/$1: $(BUILD)/obj/tests/unit/$1.o $(LINK_$(call floor,tests/unit/$1.c))
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(shell pkg-config --libs cmocka) $$(LIBS)
endef
$(foreach t,$(UNIT_SRC:tests/unit/%.c=%),$(eval $(call unit_rule,$t)))

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# Install what is missing, quietly when nothing is. Needs root (or sudo) only
# when something is actually missing.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  plain=""; bare=""; for p in $$missing; do \
	    case " $(DEB_NO_RECOMMENDS) " in *" $$p "*) bare="$$bare $$p";; *) plain="$$plain $$p";; esac; \
	  done; \
	  $$SUDO apt-get update -qq && \
	  { [ -z "$$plain" ] || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$plain >/dev/null; } && \
	  { [ -z "$$bare" ] || DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	      $$bare >/dev/null; }; \
	fi

demo: deps all
	@exec tests/backend/demo.sh $(BUILD)

# The include path enforces the floors for #include "x.h"; a relative path
# ("../daemon/x.h") would step around it, so none is allowed below tests/.
floors:
	@! grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*/' lib/*.[ch] config/*.[ch] daemon/*.[ch] tools/*.[ch] \
	  || { echo "make floors: an #include with a directory in it steps around the floors (see INC_* in the Makefile)" >&2; exit 1; }

unit: floors $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	WARMPOOL_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

# Every daemon the integration tests start, under valgrind (errors and leaks fail).
valgrind: deps all
	WARMPOOL_BUILD=$(abspath $(BUILD)) WARMPOOL_VALGRIND=1 \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration $(VALGRIND_ARGS)

# The sanitizer variant lives in build/asan so it never mixes with the -O2
# build; the -O2 build then runs the integration tests again under valgrind.
# The .debs are built once (build/package) for the packaging tests and
# systemd-check. The valgrind pass leaves out the files that start no daemon
# (VALGRIND_SKIP: they run the binaries directly, --check-config and the
# like, or build packages): under valgrind they would only repeat the ASan
# pass with the -O2 binaries.
VALGRIND_SKIP := test_packaging.py test_demo.py test_limits.py test_config_cli.py
# Each integration pass runs CHECK_JOBS tests at a time (pytest-xdist; with
# --dist loadgroup the tests that share a fixed place on the machine stay on
# one worker, one after another: see tests/integration/conftest.py). The
# daemons mostly wait on sockets and timers, so 2 workers shorten a pass by
# a third or more even on 2 cores. CHECK_JOBS=1: one test at a time.
CHECK_JOBS       ?= 2
CHECK_BUILD_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CHECK_XDIST       = $(if $(filter-out 0 1,$(CHECK_JOBS)),-n $(CHECK_JOBS) --dist loadgroup)
check: deps
	$(MAKE) --no-print-directory -j$(CHECK_BUILD_JOBS) --output-sync=target check-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  WARMPOOL_BUILD=$(abspath build/asan) WARMPOOL_DEB_DIR=$(abspath build)/package \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration $(CHECK_XDIST)
	$(MAKE) --no-print-directory valgrind VALGRIND_ARGS="$(CHECK_XDIST) $(VALGRIND_SKIP:%=--ignore=tests/integration/%)"
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory systemd-check-only

# Everything check runs, built side by side (the sub-makes share the job
# slots): the ASan+UBSan variant and its unit tests, the -O2 build of the
# valgrind pass, the fuzz targets (fuzz-smoke) and the .debs (the packaging
# tests and systemd-check).
.PHONY: check-build check-build-asan check-build-o2 check-build-fuzz check-build-package
check-build: check-build-asan check-build-o2 check-build-fuzz check-build-package
check-build-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 all unit
check-build-o2:
	@$(MAKE) --no-print-directory all
check-build-fuzz:
	@$(MAKE) --no-print-directory fuzz-bins
check-build-package:
	@$(MAKE) --no-print-directory package

# Benchmarks are never part of check: they measure, they do not assert.
BENCH_PKGS := haproxy nginx libnginx-mod-stream socat util-linux procps stunnel4 redis-server redis-tools nutcracker
bench-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(BENCH_PKGS)"

bench: bench-deps all $(BUILD)/wpload
	/usr/bin/python3 tests/bench/run.py --build $(abspath $(BUILD)) $(BENCH_ARGS)

clean:
	rm -rf build

# ---------------------------------------------------------------------------
# Man pages, install and packages (packaging/).
#   make man        build/man/*.1, *.3, *.5, *.8 from packaging/man/*.scd (part of `make`)
#   make install    PREFIX=/usr/local DESTDIR= (see the variables below); never
#                   overwrites an existing $(SYSCONFDIR)/warmpool/warmpool.yaml
#   make uninstall  removes what install put there, except the configuration
#   make package    the .debs (warmpool, libwarmpool0, libwarmpool-dev) in $(BUILD)/package/
#                   via dpkg-buildpackage, then lintian (packaging/build-deb.sh). Installs
#                   nothing on this machine; test_packaging.py installs, upgrades and purges
#                   them in a throwaway root
#   make dist       build/warmpool-VERSION.tar.gz of the committed tree (HEAD), with
#                   the RPM spec inside: rpmbuild -ta build/warmpool-VERSION.tar.gz

# promtool (Debian package prometheus, without the node exporter it recommends)
# checks the metrics text format in test_metrics.py.
DEB_PKGS += prometheus
DEB_NO_RECOMMENDS := prometheus

# scdoc builds the man pages; man-db and systemd (systemd-analyze) are used by the packaging tests.
DEB_PKGS += scdoc man-db systemd

PREFIX          ?= /usr/local
# warmpoold goes to sbin, warmpoolctl to bin: it serves monitoring users who
# are not root too (daemon.admin_socket_readonly).
BINDIR          ?= $(PREFIX)/bin
SBINDIR         ?= $(PREFIX)/sbin
LIBDIR          ?= $(PREFIX)/lib
INCLUDEDIR      ?= $(PREFIX)/include
PKGCONFIGDIR    ?= $(LIBDIR)/pkgconfig
DATADIR         ?= $(PREFIX)/share
MANDIR          ?= $(DATADIR)/man
DOCDIR          ?= $(DATADIR)/doc/warmpool
# The daemon's built-in default is /etc/warmpool/warmpool.yaml, whatever PREFIX.
SYSCONFDIR      ?= /etc
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR     ?= $(PREFIX)/lib/sysusers.d
# make install never writes $(SYSCONFDIR)/warmpool/warmpool.yaml: the sample
# goes to $(DOCDIR)/examples/, and the unit stays inactive until the
# operator makes a configuration (ConditionPathExists=).
# yes: after a real install (empty DESTDIR), create the warmpool user with
# systemd-sysusers, run ldconfig and reload systemd, so that
# `systemctl start warmpoold` and programs linked with -lwarmpool work.
POST_INSTALL    ?= yes
INSTALL         ?= install


MAN_SRC := $(wildcard packaging/man/*.scd)
MAN_OUT := $(MAN_SRC:packaging/man/%.scd=$(BUILD)/man/%)
INSTALL_BIN  := $(BUILD)/warmpoolctl
INSTALL_SBIN := $(BUILD)/warmpoold
# The client library: the shared one (with its soname and development links,
# when the build makes one: WP_SOFILE/WP_SONAME above) and the static one.
INSTALL_SOLIB := $(if $(WP_SOFILE),$(BUILD)/$(WP_SOFILE))
# The client library's public header (lib/warmpool.h); the other lib/ headers are internal.
INSTALL_HDR  := $(wildcard lib/warmpool.h)
# The packaged unit names /usr/sbin and /etc; point it at this install's paths.
UNIT_SED = -e 's|/usr/sbin/warmpool|$(SBINDIR)/warmpool|g' -e 's|/etc/warmpool/|$(SYSCONFDIR)/warmpool/|g'

.PHONY: man install uninstall package package-deps dist

all: man
man: $(MAN_OUT)

$(BUILD)/man/%: packaging/man/%.scd
	@command -v scdoc >/dev/null || { echo "scdoc not found: run 'make deps' (Debian package scdoc)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	scdoc < $< > $@.tmp && mv $@.tmp $@

install: $(INSTALL_BIN) $(INSTALL_SBIN) $(BUILD)/libwarmpool.a $(INSTALL_SOLIB) $(MAN_OUT)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	  $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	$(INSTALL) -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 0755 $(INSTALL_SBIN) $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 0644 $(BUILD)/libwarmpool.a $(DESTDIR)$(LIBDIR)/
	$(if $(INSTALL_SOLIB),$(INSTALL) -m 0644 $(INSTALL_SOLIB) $(DESTDIR)$(LIBDIR)/)
	$(if $(INSTALL_SOLIB),ln -sf $(WP_SOFILE) $(DESTDIR)$(LIBDIR)/$(WP_SONAME))
	$(if $(INSTALL_SOLIB),ln -sf $(WP_SONAME) $(DESTDIR)$(LIBDIR)/libwarmpool.so)
	$(if $(INSTALL_HDR),$(INSTALL) -m 0644 $(INSTALL_HDR) $(DESTDIR)$(INCLUDEDIR)/)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	  -e 's|@VERSION@|$(WARMPOOL_VERSION_STR)|' packaging/warmpool.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/warmpool.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/warmpool.pc
	$(INSTALL) -m 0644 $(filter %.1,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 0644 $(filter %.3,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man3/
	$(INSTALL) -m 0644 $(filter %.5,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -m 0644 $(filter %.8,$(MAN_OUT)) $(DESTDIR)$(MANDIR)/man8/
	sed $(UNIT_SED) packaging/systemd/warmpoold.service > $(DESTDIR)$(SYSTEMD_UNITDIR)/warmpoold.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNITDIR)/warmpoold.service
	$(INSTALL) -m 0644 packaging/sysusers.d/warmpool.conf $(DESTDIR)$(SYSUSERSDIR)/warmpool.conf
	$(INSTALL) -m 0644 config/warmpool.yaml packaging/systemd/warmpoold.socket $(DESTDIR)$(DOCDIR)/examples/
	@conf=$(DESTDIR)$(SYSCONFDIR)/warmpool/warmpool.yaml; \
	if [ ! -e "$$conf" ] && [ ! -L "$$conf" ]; then \
	  echo "make install: no configuration installed (the service stays inactive until one exists):"; \
	  echo "  cp $(DOCDIR)/examples/warmpool.yaml $(SYSCONFDIR)/warmpool/warmpool.yaml, edit it, then"; \
	  echo "  systemctl enable --now warmpoold"; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ "$(POST_INSTALL)" = yes ]; then \
	  if command -v systemd-sysusers >/dev/null; then \
	    echo "systemd-sysusers $(SYSUSERSDIR)/warmpool.conf"; systemd-sysusers $(SYSUSERSDIR)/warmpool.conf; \
	  fi; \
	  if [ -n "$(INSTALL_SOLIB)" ] && command -v ldconfig >/dev/null; then echo ldconfig; ldconfig; fi; \
	  if [ -d /run/systemd/system ]; then echo "systemctl daemon-reload"; systemctl daemon-reload; fi; \
	fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(INSTALL_BIN))) \
	  $(addprefix $(DESTDIR)$(SBINDIR)/,$(notdir $(INSTALL_SBIN))) $(DESTDIR)$(LIBDIR)/libwarmpool.a \
	  $(if $(INSTALL_SOLIB),$(addprefix $(DESTDIR)$(LIBDIR)/,$(WP_SOFILE) $(WP_SONAME) libwarmpool.so)) \
	  $(addprefix $(DESTDIR)$(INCLUDEDIR)/,$(notdir $(INSTALL_HDR))) $(DESTDIR)$(PKGCONFIGDIR)/warmpool.pc \
	  $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(filter %.1,$(MAN_OUT)))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(filter %.3,$(MAN_OUT)))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(filter %.5,$(MAN_OUT)))) \
	  $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(filter %.8,$(MAN_OUT)))) \
	  $(DESTDIR)$(SYSTEMD_UNITDIR)/warmpoold.service $(DESTDIR)$(SYSUSERSDIR)/warmpool.conf \
	  $(DESTDIR)$(DOCDIR)/examples/warmpool.yaml $(DESTDIR)$(DOCDIR)/examples/warmpoold.socket
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null
	@echo "make uninstall: $(SYSCONFDIR)/warmpool/warmpool.yaml and the warmpool user are left in place"

# Tools for `make package`; the package's own Build-Depends are in packaging/debian/control.
PACKAGE_DEB_PKGS := debhelper dpkg-dev fakeroot lintian
DEB_PKGS += $(PACKAGE_DEB_PKGS)  # make check builds the packages too
package-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(PACKAGE_DEB_PKGS)"

package: package-deps
	packaging/build-deb.sh $(abspath $(BUILD))/package

dist:
	@mkdir -p $(BUILD)
	git archive --format=tar.gz --prefix=warmpool-$(WARMPOOL_VERSION_STR)/ \
	  -o $(BUILD)/warmpool-$(WARMPOOL_VERSION_STR).tar.gz HEAD
	@echo "$(BUILD)/warmpool-$(WARMPOOL_VERSION_STR).tar.gz (committed files only)"

# ---------------------------------------------------------------------------
# Fuzzing (tests/fuzz/): libFuzzer targets, built with clang and ASan+UBSan
# into build/fuzz/, one per input format: config (cfg_load_buffer), admin
# (admin_exec on a real engine), handoff (the client library's parsing of
# the daemon's answer) and tls (a pool's tls: block, its files and SSL_CTX). tests/fuzz/<target>/corpus holds the seeds,
# tests/fuzz/<target>/regressions every input that once crashed, and
# tests/fuzz/<target>/dict the tokens of the format.
#   make fuzz        fuzz each target for FUZZ_SECONDS (default 60) from the seeds and what
#                    earlier runs kept in build/fuzz/corpus/<target>; crashes go to
#                    build/fuzz/crashes/<target>/ (FUZZ_ARGS adds libFuzzer options, e.g. -jobs=4)
#                    (minimise one with: build/fuzz/fuzz_<target> -minimize_crash=1 -runs=10000 FILE)
#   make fuzz-smoke  (the end of `make check`) replay every regression input, then fuzz
#                    each target for FUZZ_SMOKE_SECONDS (default 5) from the seeds alone
FUZZ_PKGS          := clang libclang-rt-14-dev
DEB_PKGS           += $(FUZZ_PKGS)
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FUZZ_ARGS          ?=
FUZZ_TARGETS       := config admin handoff tls
FUZZ_BUILD         := $(BUILD)/fuzz
FUZZ_BINS          := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_SAN           := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# The code under test gets coverage instrumentation (fuzzer-no-link) and the
# project's warnings, as errors only in the gcc build.
FUZZ_CFLAGS         = -std=gnu11 $(filter-out -Werror,$(WARN)) -g -O1 $(FUZZ_SAN) -D_GNU_SOURCE \
                      $(call floor_inc,$<) $(shell pkg-config --cflags $(PKGS))
FUZZ_CORE_OBJ      := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(LIB_SRC) $(CONFIG_SRC))
FUZZ_DAEMON_OBJ    := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(DAEMON_SRC))
# The fuzzer runtime options both runs share: a slow input is a finding (a hang).
# The smoke run is also bounded from outside: libFuzzer's report of an
# out-of-memory input walks the whole heap, which can take minutes.
FUZZ_RUN_OPTS      := -timeout=10 -rss_limit_mb=2048 -print_final_stats=0

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)

.PHONY: fuzz fuzz-smoke fuzz-deps fuzz-bins

fuzz-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(FUZZ_PKGS)"

fuzz-bins: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(FUZZ_BUILD)/fuzz_config: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_config.o $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LIBS) -ldl

# tls: a pool's tls: block (the loader, its files and the SSL_CTX), seeds naming tests/fuzz/tls/files/.
$(FUZZ_BUILD)/fuzz_tls: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_tls.o $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LIBS)

$(FUZZ_BUILD)/fuzz_admin: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_admin.o $(FUZZ_DAEMON_OBJ) $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LIBS)

# lib/warmpool.c is #included by the target (parse_handoff is static); the
# socket toolkit it uses is linked.
$(FUZZ_BUILD)/fuzz_handoff: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_handoff.o $(FUZZ_BUILD)/obj/lib/sock.o
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^

fuzz: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-bins
	@status=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crashes/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s (corpus $(FUZZ_BUILD)/corpus/$$t)"; \
	  $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_RUN_OPTS) -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_BUILD)/crashes/$$t/ -dict=tests/fuzz/$$t/dict $(FUZZ_ARGS) \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/$$t/corpus || status=1; \
	done; \
	[ $$status = 0 ] || echo "make fuzz: a target found a crash: see $(FUZZ_BUILD)/crashes/" >&2; \
	exit $$status

fuzz-smoke: fuzz-deps
	@$(MAKE) --no-print-directory fuzz-bins
	@status=0; for t in $(FUZZ_TARGETS); do \
	  regs=$$(find tests/fuzz/$$t/regressions -type f ! -name '.*' 2>/dev/null | sort); \
	  if [ -n "$$regs" ]; then \
	    echo "== fuzz-smoke $$t: replaying $$(echo "$$regs" | wc -l) regression inputs"; \
	    timeout -k 10 300 $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_RUN_OPTS) $$regs 2>$(FUZZ_BUILD)/replay-$$t.log \
	      || { grep -v '^    #' $(FUZZ_BUILD)/replay-$$t.log | tail -n 40 >&2; status=1; \
	           echo "fuzz-smoke: $$t: a regression input in tests/fuzz/$$t/regressions/ fails again" >&2; }; \
	  fi; \
	  rm -rf $(FUZZ_BUILD)/smoke/$$t $(FUZZ_BUILD)/smoke-crashes/$$t; \
	  mkdir -p $(FUZZ_BUILD)/smoke/$$t $(FUZZ_BUILD)/smoke-crashes/$$t; \
	  echo "== fuzz-smoke $$t: fuzzing for $(FUZZ_SMOKE_SECONDS)s"; \
	  if timeout -k 10 $$(($(FUZZ_SMOKE_SECONDS) + 300)) \
	    $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_RUN_OPTS) -max_total_time=$(FUZZ_SMOKE_SECONDS) \
	    -artifact_prefix=$(FUZZ_BUILD)/smoke-crashes/$$t/ -dict=tests/fuzz/$$t/dict \
	    $(FUZZ_BUILD)/smoke/$$t tests/fuzz/$$t/corpus 2>$(FUZZ_BUILD)/smoke-$$t.log; then \
	    tail -n 1 $(FUZZ_BUILD)/smoke-$$t.log; \
	  else \
	    grep -v '^    #' $(FUZZ_BUILD)/smoke-$$t.log | tail -n 40 >&2; status=1; \
	    echo "fuzz-smoke: $$t crashed; the input is in $(FUZZ_BUILD)/smoke-crashes/$$t/" >&2; \
	  fi; \
	done; \
	exit $$status

# ---------------------------------------------------------------------------
# The packaged unit under a real systemd (tests/systemd/test_real_systemd.py):
# systemd 252 booted as PID 1 of a systemd-nspawn container on a throwaway
# overlay of /, the .deb of `make package` installed there with dpkg, then
# start/READY, STATUS=, reload, watchdog, socket activation, the sandbox as
# the running daemon sees it, and stop, each checked against systemd itself.
#   make systemd-check   (the end of `make check`; about 15 s after the package)
# Skips (exit 0, saying why) where it cannot run: not root, no overlayfs.
# systemd-container without its recommended libnss-mymachines, which would
# edit the host's /etc/nsswitch.conf.
SYSTEMD_CHECK_PKGS := systemd-container
DEB_PKGS           += $(SYSTEMD_CHECK_PKGS)
DEB_NO_RECOMMENDS  += $(SYSTEMD_CHECK_PKGS)

.PHONY: systemd-check systemd-check-only
systemd-check: package
	$(MAKE) --no-print-directory systemd-check-only
# (against the packages already in $(BUILD)/package)
systemd-check-only:
	WARMPOOL_DEB_DIR=$(abspath $(BUILD))/package \
	  /usr/bin/python3 -m pytest -q -rs -p no:cacheprovider tests/systemd
