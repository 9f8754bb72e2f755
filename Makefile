# warmpool — top-level GNU Makefile.
#   make          build build/warmpoold, build/warmpoolctl, the client library (build/libwarmpool.so,
#                 .a and warmpool.pc), build/wpbackend
#   make demo     run warmpoold in the foreground on config/demo.yaml with the demo backend
#   make check    build an ASan+UBSan variant in build/asan and run every test, then
#                 the integration tests again with every daemon under valgrind
#   make deps     install missing Debian packages (idempotent)
#   make clean

BUILD    ?= build
SAN      ?= 0
CC       ?= cc
PKGS     := yaml-0.1 libsystemd

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS   ?= -O2 -g
ifeq ($(SAN),1)
CFLAGS   := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=address,undefined
endif
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Ilib -Iconfig -Idaemon \
             $(shell pkg-config --cflags $(PKGS))
LIBS      = $(shell pkg-config --libs $(PKGS)) -lev -lm

# lib/warmpool.c is the public client library (libwarmpool); the rest of lib/
# is internal (libwpcore.a), linked into the daemon, warmpoolctl and tests.
LIB_SRC    := $(filter-out lib/warmpool.c,$(wildcard lib/*.c))
CONFIG_SRC := $(wildcard config/*.c)
DAEMON_SRC := $(filter-out daemon/main.c daemon/warmpoolctl.c,$(wildcard daemon/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CONFIG_OBJ := $(CONFIG_SRC:%.c=$(BUILD)/obj/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

DEB_PKGS := gcc make pkg-config libev-dev libyaml-dev libsystemd-dev libcmocka-dev \
            python3 python3-pytest socat iproute2 valgrind redis-server memcached

.PHONY: all deps demo check unit integration valgrind bench bench-deps clean
.DEFAULT_GOAL := all

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

# The client library: only the wp_* API is exported (-fvisibility=hidden).
$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fPIC -fvisibility=hidden -MMD -MP -c -o $@ $<

$(BUILD)/libwarmpool.a: $(BUILD)/pic/lib/warmpool.o
	rm -f $@ && ar rcs $@ $^

$(BUILD)/$(WP_SOFILE): $(BUILD)/pic/lib/warmpool.o
	$(CC) $(LDFLAGS) -shared -Wl,-soname,$(WP_SONAME) -o $@ $^

$(BUILD)/$(WP_SONAME) $(BUILD)/libwarmpool.so: $(BUILD)/$(WP_SOFILE)
	ln -sf $(WP_SOFILE) $@

# For building against the build tree: PKG_CONFIG_PATH=build pkg-config warmpool
$(BUILD)/warmpool.pc: packaging/warmpool.pc.in daemon/version.h
	sed -e 's|@PREFIX@|$(abspath $(BUILD))|' -e 's|@LIBDIR@|$(abspath $(BUILD))|' \
	  -e 's|@INCLUDEDIR@|$(abspath lib)|' \
	  -e 's|@VERSION@|$(shell sed -n 's/^\#define WARMPOOL_VERSION "\(.*\)"/\1/p' daemon/version.h)|' $< > $@

$(BUILD)/warmpoold: $(BUILD)/obj/daemon/main.o $(DAEMON_OBJ) $(CONFIG_OBJ) $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/warmpoolctl: $(BUILD)/obj/daemon/warmpoolctl.o $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^

$(BUILD)/wpbackend: $(BUILD)/obj/tests/backend/wpbackend.o $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ -lev -lm

$(BUILD)/wpload: $(BUILD)/obj/tests/bench/wpload.o $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
	$(CC) $(LDFLAGS) -o $@ $^ -lev -lm

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(DAEMON_OBJ) $(CONFIG_OBJ) $(BUILD)/libwarmpool.a $(BUILD)/libwpcore.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs cmocka) $(LIBS)

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
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: deps all
	@exec tests/backend/demo.sh $(BUILD)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	WARMPOOL_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

# Every daemon the integration tests start, under valgrind (errors and leaks fail).
valgrind: deps all
	WARMPOOL_BUILD=$(abspath $(BUILD)) WARMPOOL_VALGRIND=1 \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

# The sanitizer variant lives in build/asan so it never mixes with the -O2
# build; the -O2 build then runs the integration tests again under valgrind.
check: deps
	$(MAKE) --no-print-directory BUILD=build/asan SAN=1 all unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  WARMPOOL_BUILD=$(abspath build/asan) /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration
	$(MAKE) --no-print-directory valgrind

# Benchmarks are never part of check: they measure, they do not assert.
BENCH_PKGS := haproxy nginx libnginx-mod-stream socat util-linux procps
bench-deps: deps
	@$(MAKE) --no-print-directory deps DEB_PKGS="$(BENCH_PKGS)"

bench: bench-deps all $(BUILD)/wpload
	/usr/bin/python3 tests/bench/run.py --build $(abspath $(BUILD)) $(BENCH_ARGS)

clean:
	rm -rf build
