"""Packaging: the systemd unit (systemd-analyze security and verify), the man
pages (man --warnings, every configuration key documented), `make install`
(layout, PREFIX/DESTDIR, an existing configuration never overwritten,
uninstall) and the .deb packages: built and linted as `make package` does,
then installed, upgraded and purged in a throwaway root, never on the host
(test_deb_*, about a minute, as root).
"""

import functools
import json
import os
import re
import select
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from wp import BUILD, REPO

UNIT = REPO / "packaging" / "systemd" / "warmpoold.service"
SOCKET_UNIT = REPO / "packaging" / "systemd" / "warmpoold.socket"
SYSUSERS = REPO / "packaging" / "sysusers.d" / "warmpool.conf"
SAMPLE_CONFIG = REPO / "config" / "warmpool.yaml"
MAN_PAGES = ("warmpoold.8", "warmpoolctl.1", "warmpool.yaml.5", "warmpool.3")
MAX_EXPOSURE = 2.0  # the unit's sandboxing: `systemd-analyze security` must score it at most this


def need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed: run `make deps`")


def make_env():
    """The environment for a nested make: nothing inherited from a make that
    runs this suite (its jobserver descriptors are not passed down)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["LC_ALL"] = "C.UTF-8"
    return env


def make_cmd(*args):
    return ["make", "--no-print-directory", "-C", str(REPO), f"BUILD={BUILD}", *args]


@functools.lru_cache(maxsize=None)
def install_inputs():
    """The files `make install` copies out of the build, as make lists them
    (the install rule's prerequisites, from its database: -p prints it, -q
    runs no recipe)."""
    p = subprocess.run(make_cmd("-pq", "install"), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60, env=make_env())
    # "install: A B" is the rule; "install: VAR := value" a target-specific variable.
    rules = [ln for ln in p.stdout.splitlines() if re.match(r"install:(?!\s+\S+\s+(::?=|:::=|[+?!]?=))", ln)]
    assert len(rules) == 1, f"make -pq install: no single install rule: {rules}\n{p.stderr}"
    inputs = [f for f in rules[0].partition(":")[2].split() if f != "|"]
    missing = [f for f in inputs if not Path(f).exists()]
    assert inputs and not missing, f"the build under test lacks {missing}: make BUILD={BUILD} all"
    return tuple(inputs)


def make(*args, timeout=120):
    """`make` in the repository against the build under test, installing it
    as it is: every input of install is named with -o (--assume-old), so make
    never rebuilds one. A rebuild would use this make's variables, not the
    ones the build was made with (SAN=1, CFLAGS): a source changed since the
    build would relink a different variant into the build under test."""
    old = [f"--assume-old={f}" for f in install_inputs()]
    p = subprocess.run(
        make_cmd("POST_INSTALL=no", *old, *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=make_env(),
    )
    assert p.returncode == 0, f"make {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def unit_settings(path):
    """(section, key) -> [values] of a unit file, in order (no drop-ins)."""
    settings, section = {}, None
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def installed_files(root):
    return {str(p.relative_to(root)): p for p in Path(root).rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------
# the unit


def test_unit_security_exposure_at_most_2():
    need("systemd-analyze")
    p = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, p.stdout
    assert p.returncode == 0, p.stdout + p.stderr


def test_unit_settings():
    s = unit_settings(UNIT)
    assert s[("Service", "Type")] == ["notify"]
    assert s[("Service", "ExecStart")] == ["/usr/sbin/warmpoold -c /etc/warmpool/warmpool.yaml"]
    # Validate first, then signal: a broken file fails `systemctl reload`.
    assert s[("Service", "ExecReload")] == [
        "/usr/sbin/warmpoold --check-config -c /etc/warmpool/warmpool.yaml",
        "/bin/kill -HUP $MAINPID",
    ]
    assert s[("Service", "WatchdogSec")] == ["30s"]
    assert s[("Service", "RuntimeDirectory")] == ["warmpool"]
    assert s[("Service", "LimitNOFILE")] == ["20000"]
    assert s[("Service", "Restart")] == ["on-failure"]
    # Without a configuration the start is skipped, not failed.
    assert s[("Unit", "ConditionPathExists")] == ["/etc/warmpool/warmpool.yaml"]
    # What the daemon needs from the sandbox: Unix sockets (clients, admin,
    # sd_notify, the journal) and TCP to IPv4 and IPv6 backends.
    families = " ".join(s[("Service", "RestrictAddressFamilies")]).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # The user the unit runs as is the one sysusers.d creates.
    user = s[("Service", "User")][0]
    assert s[("Service", "Group")] == [user]
    assert re.search(rf"^u\s+{re.escape(user)}\s", SYSUSERS.read_text(), re.M), SYSUSERS.read_text()
    assert s[("Install", "WantedBy")] == ["multi-user.target"]


def test_socket_example_names_its_pool():
    s = unit_settings(SOCKET_UNIT)
    listen = s[("Socket", "ListenStream")]
    name = s[("Socket", "FileDescriptorName")][0]
    assert listen == [f"/run/warmpool/{name}.sock"]
    # systemd's socket files live in the service's RuntimeDirectory: the
    # service must not delete it when it stops.
    assert unit_settings(UNIT)[("Service", "RuntimeDirectoryPreserve")] == ["yes"]


@pytest.fixture
def real_prefix(tmp_path):
    """An install whose paths exist as written (no DESTDIR), so that the unit's
    ExecStart= names a real executable."""
    prefix = tmp_path / "usr"
    make("install", f"PREFIX={prefix}", f"SYSCONFDIR={tmp_path}/etc")
    return prefix


def test_installed_units_pass_systemd_analyze_verify(real_prefix, tmp_path):
    need("systemd-analyze")
    need("man")
    unitdir = real_prefix / "lib" / "systemd" / "system"
    unit = unitdir / "warmpoold.service"
    text = unit.read_text()
    assert f"ExecStart={real_prefix}/sbin/warmpoold -c {tmp_path}/etc/warmpool/warmpool.yaml" in text
    # The example socket unit, placed beside the service it activates.
    socket = unitdir / "warmpoold.socket"
    shutil.copy(real_prefix / "share" / "doc" / "warmpool" / "examples" / "warmpoold.socket", socket)
    env = dict(os.environ)
    # verify looks up each Documentation=man: page; ours are under the prefix
    # (the trailing colon keeps the system's pages too).
    env["MANPATH"] = f"{real_prefix}/share/man:"
    p = subprocess.run(
        ["systemd-analyze", "verify", str(unit), str(socket)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


# ---------------------------------------------------------------------------
# man pages


@pytest.mark.parametrize("page", MAN_PAGES)
def test_man_page_renders_without_warnings(page):
    need("man")
    path = BUILD / "man" / page
    assert path.is_file(), f"{path} missing: `make` builds it from packaging/man/{page}.scd"
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    p = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    name, section = page.rsplit(".", 1)
    assert p.stdout.lstrip().startswith(f"{name}({section})"), p.stdout[:200]
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert re.search(rf"^{heading}$", p.stdout, re.M), f"{page}: no {heading} section"


def config_keys():
    """Every key the loader accepts, by block: the sections of config/config.c
    (top_keys) and the key table as `warmpoold --dump-schema` prints it."""
    src = (REPO / "config" / "config.c").read_text()
    top = re.search(r"static const char \*const top_keys\[\w*\] = \{(.*?)\};", src, re.S)
    assert top, "config/config.c: no top_keys table (renamed? update this test)"
    tables = {"top": re.findall(r'"([a-z_]+)"', top.group(1))}
    schema = json.loads(subprocess.run([str(BUILD / "warmpoold"), "--dump-schema"], capture_output=True,
                                       check=True, timeout=60).stdout)
    blocks = {"health_check": "health", "listen[]": "listen", "backends[]": "backend"}
    for key in schema["keys"]:
        if "daemon" in key["where"]:
            table, name = "daemon", key["path"]
        elif "." in key["path"]:
            block, name = key["path"].rsplit(".", 1)
            table = blocks.get(block, block)
        else:
            table, name = "pool", key["path"]
        if table != "daemon":  # a block's own name is a key of the pool
            first = re.split(r"[.\[]", key["path"])[0]
            if first not in tables.setdefault("pool", []):
                tables["pool"].append(first)
        if name not in tables.setdefault(table, []):
            tables[table].append(name)
    for t in ("top", "daemon", "pool", "health", "listen"):
        assert tables.get(t), f"--dump-schema: no {t} keys (renamed? update this test)"
    return tables


def rendered(page):
    env = dict(os.environ, MANWIDTH="200", LC_ALL="C.UTF-8")
    p = subprocess.run(
        ["man", "-E", "UTF-8", "-l", str(BUILD / "man" / page)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_warmpool_yaml_5_documents_every_key():
    need("man")
    text = rendered("warmpool.yaml.5")
    # Terms of the definition lists: "key", "key (required)" or "key, key2"
    # on a line of their own at the first indentation level.
    terms = {
        t.split()[0]
        for m in re.finditer(r"^ {7}(\S.*)$", text, re.M)
        for t in m.group(1).split(", ")
        if re.fullmatch(r"[a-z_.]+( \(required\))?", t)
    }
    keys = config_keys()
    missing = []
    missing += [f"daemon.{k}" for k in keys["daemon"] if f"daemon.{k}" not in terms]
    missing += [f"pools.NAME.{k}" for k in keys["pool"] if k not in terms]
    missing += [f"health_check.{k}" for k in keys["health"] if f"health_check.{k}" not in terms]
    # The keys of every other block (backoff, keepalive, backends items,
    # listen items, ...) at least appear.
    words = set(re.findall(r"[a-z_]+", text))
    for table, names in keys.items():
        if table not in ("daemon", "pool", "health"):
            missing += [f"{table}_keys: {k}" for k in names if k not in words]
    # And every key the documented sample file writes.
    sample = set(re.findall(r"^\s*-?\s*([a-z_]+):(?:\s|$)", SAMPLE_CONFIG.read_text(), re.M))
    missing += [f"config/warmpool.yaml: {k}" for k in sorted(sample) if k not in words]
    assert not missing, "warmpool.yaml(5) does not describe: " + ", ".join(missing)


def test_warmpoolctl_1_documents_every_command():
    need("man")
    text = rendered("warmpoolctl.1")
    for cmd in (
        "show pools",
        "show backends",
        "show stats",
        "show metrics",
        "drain",
        "disable",
        "enable",
        "reload",
        "version",
    ):
        assert re.search(rf"^ {{7}}{cmd}\b", text, re.M), f"warmpoolctl(1): no entry for `{cmd}`"
    for opt in ("-s, --socket", "--json", "-T, --timeout"):
        assert opt in text, f"warmpoolctl(1): option {opt} undocumented"


# ---------------------------------------------------------------------------
# make install


def expected_layout(prefix="usr/local", etc="etc"):
    files = {
        f"{prefix}/sbin/warmpoold": 0o755,
        f"{prefix}/bin/warmpoolctl": 0o755,
        f"{prefix}/lib/libwarmpool.a": 0o644,
        f"{prefix}/lib/pkgconfig/warmpool.pc": 0o644,
        f"{prefix}/lib/systemd/system/warmpoold.service": 0o644,
        f"{prefix}/lib/sysusers.d/warmpool.conf": 0o644,
        f"{prefix}/share/man/man3/warmpool.3": 0o644,
        f"{prefix}/share/man/man5/warmpool.yaml.5": 0o644,
        f"{prefix}/share/man/man1/warmpoolctl.1": 0o644,
        f"{prefix}/share/man/man8/warmpoold.8": 0o644,
        f"{prefix}/share/doc/warmpool/examples/warmpool.yaml": 0o644,
        f"{prefix}/share/doc/warmpool/examples/warmpoold.socket": 0o644,
    }
    if (REPO / "lib" / "warmpool.h").exists():
        files[f"{prefix}/include/warmpool.h"] = 0o644
    so = shared_library()
    if so:
        soname = so.name.rsplit(".", 2)[0]  # libwarmpool.so.0.1.0 -> libwarmpool.so.0
        files[f"{prefix}/lib/{so.name}"] = 0o644
        files[f"{prefix}/lib/{soname}"] = f"-> {so.name}"
        files[f"{prefix}/lib/libwarmpool.so"] = f"-> {soname}"
    return files


def shared_library():
    """The build's libwarmpool.so.X.Y.Z, or None when it builds none."""
    found = sorted(p for p in BUILD.glob("libwarmpool.so.*.*.*") if not p.is_symlink())
    return found[0] if found else None


def test_install_layout(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}")
    got = installed_files(dest)
    want = expected_layout()
    assert sorted(got) == sorted(want)
    for rel, mode in want.items():
        if isinstance(mode, str):  # a symbolic link: "-> target"
            assert got[rel].is_symlink() and f"-> {os.readlink(got[rel])}" == mode, rel
        else:
            assert got[rel].stat().st_mode & 0o777 == mode, f"{rel}: mode {got[rel].stat().st_mode & 0o777:o}"
    assert got["usr/local/sbin/warmpoold"].read_bytes() == (BUILD / "warmpoold").read_bytes()
    assert not any(f.startswith("etc/") for f in got), "make install wrote a live configuration"
    assert got["usr/local/share/doc/warmpool/examples/warmpool.yaml"].read_text() == SAMPLE_CONFIG.read_text()
    # The unit names this install's paths, not the package's /usr/sbin.
    unit = unit_settings(got["usr/local/lib/systemd/system/warmpoold.service"])
    assert unit[("Service", "ExecStart")] == ["/usr/local/sbin/warmpoold -c /etc/warmpool/warmpool.yaml"]
    assert unit[("Service", "ExecReload")][0] == "/usr/local/sbin/warmpoold --check-config -c /etc/warmpool/warmpool.yaml"
    assert "/usr/sbin/" not in "".join(v for vs in unit.values() for v in vs)
    pc = got["usr/local/lib/pkgconfig/warmpool.pc"].read_text()
    assert "libdir=/usr/local/lib\n" in pc and "includedir=/usr/local/include\n" in pc, pc
    assert re.search(r"^Version: \d+\.\d+\.\d+$", pc, re.M), pc


def test_version_lives_in_lib_version_h():
    """lib/version.h holds the version; everything that shows one says the
    same: both programs, the built warmpool.pc, and the two package files
    that must carry it literally (the .deb's changelog, the RPM spec)."""
    m = re.search(r'^#define WARMPOOL_VERSION "(\d+\.\d+\.\d+)"$', (REPO / "lib" / "version.h").read_text(), re.M)
    assert m, "lib/version.h defines no WARMPOOL_VERSION"
    version = m.group(1)
    for prog in ("warmpoold", "warmpoolctl"):
        out = subprocess.run([str(BUILD / prog), "--version"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and out.stdout == f"{prog} {version}\n", out
    pc = (BUILD / "warmpool.pc").read_text()
    assert re.search(rf"^Version: {re.escape(version)}$", pc, re.M), pc
    changelog = (REPO / "packaging" / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"warmpool ({version}-") or changelog.startswith(f"warmpool ({version})"), changelog
    spec = (REPO / "packaging" / "rpm" / "warmpool.spec").read_text()
    assert re.search(rf"^Version:\s+{re.escape(version)}$", spec, re.M), "warmpool.spec: Version differs"
    # No second copy of the version anywhere in the sources.
    for src in [*REPO.glob("daemon/*.[ch]"), *REPO.glob("config/*.[ch]"), *REPO.glob("tools/*.[ch]"), *REPO.glob("lib/*.[ch]")]:
        if src.name != "version.h":
            assert "#define WARMPOOL_VERSION" not in src.read_text(), src


def test_install_prefix_and_dirs(tmp_path):
    dest = tmp_path / "dest"
    make(
        "install",
        f"DESTDIR={dest}",
        "PREFIX=/usr",
        "LIBDIR=/usr/lib/x86_64-linux-gnu",
        "SYSTEMD_UNITDIR=/lib/systemd/system",
        "SYSUSERSDIR=/usr/lib/sysusers.d",
    )
    got = set(installed_files(dest))
    assert "usr/sbin/warmpoold" in got and "usr/bin/warmpoolctl" in got
    assert "usr/lib/x86_64-linux-gnu/libwarmpool.a" in got
    assert "usr/lib/x86_64-linux-gnu/pkgconfig/warmpool.pc" in got
    assert "lib/systemd/system/warmpoold.service" in got
    assert "usr/lib/sysusers.d/warmpool.conf" in got
    assert not any(f.startswith("etc/") for f in got), "make install wrote a configuration"
    # With PREFIX=/usr the installed unit is the packaged one, byte for byte.
    assert (dest / "lib/systemd/system/warmpoold.service").read_text() == UNIT.read_text()


def test_install_never_writes_the_configuration(tmp_path):
    """make install says how to make a configuration when there is none,
    and never touches one the operator made."""
    dest = tmp_path / "dest"
    p = make("install", f"DESTDIR={dest}")
    assert "make install: no configuration installed" in p.stdout
    conf = dest / "etc" / "warmpool" / "warmpool.yaml"
    assert not os.path.lexists(conf)
    conf.parent.mkdir(parents=True)
    mine = "# edited by the administrator\npools:\n  x:\n    listen: /run/warmpool/x.sock\n    backends: 127.0.0.1:1\n"
    conf.write_text(mine)
    p = make("install", f"DESTDIR={dest}")
    assert conf.read_text() == mine
    assert "no configuration installed" not in p.stdout
    # The sample stays available next to the documentation.
    assert (dest / "usr/local/share/doc/warmpool/examples/warmpool.yaml").read_text() == SAMPLE_CONFIG.read_text()
    # A symlinked configuration (e.g. to a config-management checkout) is kept too.
    conf.unlink()
    conf.symlink_to(tmp_path / "elsewhere.yaml")
    make("install", f"DESTDIR={dest}")
    assert conf.is_symlink()


def test_uninstall_removes_all_but_the_configuration(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}")
    conf = dest / "etc" / "warmpool" / "warmpool.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text("# the operator's\n")
    make("uninstall", f"DESTDIR={dest}")
    assert sorted(installed_files(dest)) == ["etc/warmpool/warmpool.yaml"]


def test_installed_library_links(tmp_path):
    """The installed header, library and .pc are enough to build a client."""
    if not (REPO / "lib" / "warmpool.h").exists():
        pytest.skip("lib/warmpool.h (the client library's header) does not exist yet")
    need("pkg-config")
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    env = dict(os.environ, PKG_CONFIG_PATH=str(dest / "usr/lib/pkgconfig"), PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "warmpool"], capture_output=True, text=True, env=env, timeout=30, check=True
    ).stdout.split()
    src = tmp_path / "client.c"
    src.write_text(
        "#include <stdio.h>\n#include <warmpool.h>\n"
        "int main(void) { puts(wp_strerror(-2)); return 0; }\n"
    )
    lib = (dest / "usr/lib/libwarmpool.a").read_bytes()
    san = ["-fsanitize=address,undefined"] if b"__asan_" in lib or b"__ubsan_" in lib else []
    # As pkg-config says (the shared library when there is one), and static.
    builds = {"default": flags, "static": [f for f in flags if not f.startswith("-l")] + ["-l:libwarmpool.a"]}
    for kind, link in builds.items():
        exe = tmp_path / f"client-{kind}"
        subprocess.run(["cc", *san, "-o", str(exe), str(src), *link], check=True, timeout=120)
        run_env = dict(os.environ, LD_LIBRARY_PATH=str(dest / "usr/lib"))
        out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, env=run_env)
        assert out.returncode == 0 and out.stdout.strip(), f"{kind}: {out.stdout}{out.stderr}"


# ---------------------------------------------------------------------------
# the .deb, installed in a throwaway root
#
# `make package` (packaging/build-deb.sh) builds and lints; it installs
# nothing. Installing, upgrading and purging are checked here, never on the
# host: dpkg runs chrooted into an overlay of / whose upper layer is a tmpfs,
# mounted in a mount namespace of its own (unshare --mount --propagation
# private). The maintainer scripts really run (systemd-sysusers,
# deb-systemd-helper) and write only into the overlay. The chroot gets a /run
# of its own (an empty tmpfs: no /run/systemd/system, so the scripts call no
# systemctl and start nothing, as in any chroot) and a /dev holding only null,
# zero and urandom. When the one process holding the namespace exits, its
# mounts and all they hold are gone.

# Sockets of other daemons under /run/warmpool (another warmpoold, or
# systemd's socket units): the package did not create them, so purging it
# must leave them, and the directories holding them, in place.
OTHER_SOCKETS = ("run/warmpool/other.sock", "run/warmpool/second/pool.sock")
# What a run in the root may take: dpkg -i of one package with its scripts
# takes about a second here; cc and the client a few.
ROOT_CMD_TIMEOUT = 300
ROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
            "DEBIAN_FRONTEND": "noninteractive"}


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """The packages of this tree as `make package` builds them (its recipe
    without package-deps, which installs build tools): {package: .deb}."""
    if os.geteuid() != 0:
        pytest.skip("the throwaway root needs root (mount namespaces, overlayfs, chroot)")
    for tool in ("dpkg-buildpackage", "dh", "lintian", "unshare", "nsenter", "chroot"):
        need(tool)
    # `make check` builds them once and names the directory; alone, build them here.
    given = os.environ.get("WARMPOOL_DEB_DIR")
    if given and list(Path(given).glob("warmpool_*.deb")):
        out = Path(given)
    else:
        out = tmp_path_factory.mktemp("deb") / "package"
        p = subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(out)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=900, env=make_env())
        assert p.returncode == 0, f"packaging/build-deb.sh failed:\n{p.stdout}\n{p.stderr}"
    debs = {f.name.split("_")[0]: f for f in out.glob("*.deb")}
    assert {"warmpool", "libwarmpool0", "libwarmpool-dev"} <= set(debs), sorted(debs)
    return debs


class ThrowawayRoot:
    """An overlay of / in a private mount namespace (see above). `path` is
    its / as seen from here, through /proc/PID/root of the process holding
    the namespace; run() runs a command chrooted into it."""

    def __init__(self, tmp):
        self.layers, self.mnt = tmp / "layers", tmp / "root"
        self.layers.mkdir()
        self.mnt.mkdir()
        layers, mnt = shlex.quote(str(self.layers)), shlex.quote(str(self.mnt))
        script = f"""
            mount -t tmpfs -o mode=0755 warmpool-test {layers}
            mkdir {layers}/upper {layers}/work
            mount -t overlay -o lowerdir=/,upperdir={layers}/upper,workdir={layers}/work warmpool-test {mnt}
            mount -t tmpfs -o mode=0755 warmpool-test {mnt}/run
            mount -t tmpfs -o mode=0755 warmpool-test {mnt}/dev
            for d in null zero urandom; do
                touch {mnt}/dev/$d && mount --bind /dev/$d {mnt}/dev/$d
            done
            echo ready
            exec cat
        """
        # cat holds the namespace until stdin closes (close()).
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The script either says ready or exits (EOF); mounting takes milliseconds.
        ready = select.select([self.proc.stdout], [], [], 30)[0]
        if not ready or self.proc.stdout.readline() != "ready\n":
            pytest.fail(f"no throwaway root: {self.close()}")
        self.path = Path(f"/proc/{self.proc.pid}/root{self.mnt}")

    def run(self, *cmd, check=True):
        p = subprocess.run(["nsenter", f"--target={self.proc.pid}", "--mount", "--", "chroot", str(self.mnt), *cmd],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=ROOT_CMD_TIMEOUT,
                           env=ROOT_ENV)
        assert not check or p.returncode == 0, \
            f"in the root: {' '.join(cmd)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def dpkg(self, *args):
        return self.run("dpkg", *args)

    def status(self, package):
        """dpkg's Status and Version of package in the root ("" when unknown)."""
        p = self.run("dpkg-query", "-W", "-f=${Status} ${Version}", package, check=False)
        return p.stdout if p.returncode == 0 else ""

    def copy_in(self, src):
        dest = self.path / "tmp" / "warmpool-test" / Path(src).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
        return f"/tmp/warmpool-test/{dest.name}"

    def close(self):
        """End the namespace, and with it the mounts and all they hold;
        return what the holding process wrote to stderr."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


@pytest.fixture
def throwaway_root(tmp_path):
    root = ThrowawayRoot(tmp_path)
    try:
        yield root
    finally:
        root.close()
    # The mount points, seen from the host: nothing was ever written there.
    assert not any(root.mnt.iterdir()) and not any(root.layers.iterdir())


def host_package_state():
    """What the host's dpkg says of the packages, and whether their files
    exist on the host: none of it may change while they go through a root."""
    state = {}
    for package in ("warmpool", "libwarmpool0", "libwarmpool-dev"):
        p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30)
        state[package] = p.stdout if p.returncode == 0 else "unknown"
    for f in ("/usr/sbin/warmpoold", "/usr/bin/warmpoolctl", "/usr/sbin/warmpoolctl",
              "/lib/systemd/system/warmpoold.service", "/etc/warmpool", "/usr/include/warmpool.h"):
        state[f] = os.path.lexists(f)
    return state


def deb_paths(deb):
    """The paths a .deb ships (files, links and directories), relative."""
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True, timeout=60).stdout
    names = subprocess.run(["tar", "-t"], input=out, capture_output=True, check=True, timeout=60).stdout.decode()
    return [n.removeprefix("./").rstrip("/") for n in names.splitlines() if n.removeprefix("./").rstrip("/")]


def assert_purged(root, deb):
    """Nothing the package shipped is left in the root, except what the
    host (the overlay's lower layer) has itself (/usr, /etc, ...)."""
    left = [p for p in deb_paths(deb) if os.path.lexists(root.path / p) and not os.path.lexists(Path("/") / p)]
    assert not left, f"left behind by {deb.name}: {left}"


def bumped(deb, tmp_path):
    """A copy of deb with a higher version, as the next release would be."""
    tree = tmp_path / "bumped"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=60)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)$", text, re.M).group(1)
    control.write_text(text.replace(f"Version: {version}\n", f"Version: {version}+next1\n"))
    out = tmp_path / deb.name.replace(f"_{version}_", f"_{version}+next1_")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True, timeout=120,
                   capture_output=True)
    return out, f"{version}+next1"


def make_socket(root, rel):
    """A Unix socket file at /rel in the root, bound by a process that then
    exits (the file stays, as a daemon's does while it runs)."""
    root.run("python3", "-c", "import os, socket, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
             "socket.socket(socket.AF_UNIX).bind(sys.argv[1])", f"/{rel}")
    assert is_socket(root.path / rel), rel


def is_socket(path):
    return os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


def test_deb_install_upgrade_purge_in_a_throwaway_root(debs, throwaway_root, tmp_path):
    root, deb = throwaway_root, debs["warmpool"]
    host_before = host_package_state()
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.strip()
    next_deb, next_version = bumped(deb, tmp_path)
    first, second = root.copy_in(deb), root.copy_in(next_deb)
    installed = ["usr/sbin/warmpoold", "usr/bin/warmpoolctl", "lib/systemd/system/warmpoold.service",
                 "usr/lib/sysusers.d/warmpool.conf", "usr/share/man/man8/warmpoold.8.gz",
                 "usr/share/man/man5/warmpool.yaml.5.gz", "usr/share/man/man1/warmpoolctl.1.gz",
                 "usr/share/doc/warmpool/examples/warmpool.yaml", "usr/share/doc/warmpool/examples/warmpoold.socket"]
    enabled = root.path / "etc/systemd/system/multi-user.target.wants/warmpoold.service"
    conf = root.path / "etc/warmpool/warmpool.yaml"

    # Install: the files in place, the user made, the unit enabled, no live
    # configuration (the service stays inactive until the operator writes one).
    root.dpkg("-i", first)
    assert root.status("warmpool") == f"install ok installed {version}"
    missing = [f for f in installed if not (root.path / f).is_file()]
    assert not missing, f"not installed: {missing}"
    for exe in ("usr/sbin/warmpoold", "usr/bin/warmpoolctl"):
        assert os.access(root.path / exe, os.X_OK), exe
    # warmpoolctl is for monitoring users too (the read-only admin socket).
    assert not os.path.lexists(root.path / "usr/sbin/warmpoolctl")
    assert (root.path / "etc/warmpool").is_dir() and not os.path.lexists(conf)
    assert re.search(r"^warmpool:", (root.path / "etc/passwd").read_text(), re.M), "postinst made no warmpool user"
    assert re.search(r"^warmpool:", (root.path / "etc/group").read_text(), re.M), "postinst made no warmpool group"
    assert enabled.is_symlink() and os.readlink(enabled) == "/lib/systemd/system/warmpoold.service"
    unit = unit_settings(root.path / "lib/systemd/system/warmpoold.service")
    assert unit[("Service", "ExecStart")] == ["/usr/sbin/warmpoold -c /etc/warmpool/warmpool.yaml"]
    assert root.run("warmpoold", "--version").stdout == f"warmpoold {version.split('-')[0]}\n"
    assert root.run("warmpoolctl", "--version").stdout == f"warmpoolctl {version.split('-')[0]}\n"
    root.run("warmpoold", "--check-config", "-c", "/usr/share/doc/warmpool/examples/warmpool.yaml")
    assert root.run("systemctl", "is-enabled", "warmpoold.service").stdout == "enabled\n"
    # The installed unit as systemd reads it: ExecStart= and every
    # Documentation=man: page (warmpoolctl(1) included) exist in the root.
    p = root.run("systemd-analyze", "verify", "/lib/systemd/system/warmpoold.service")
    assert not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr
    # Without a configuration systemd skips the start (inactive, not failed).
    p = root.run("systemd-analyze", "condition", "--unit=warmpoold.service", check=False)
    assert p.returncode != 0 and "ConditionPathExists=/etc/warmpool/warmpool.yaml failed" in p.stdout + p.stderr, \
        p.stdout + p.stderr

    # Other daemons' sockets appear under /run/warmpool.
    for rel in OTHER_SOCKETS:
        make_socket(root, rel)

    # The same version again, then the next one over it.
    root.dpkg("-i", first)
    assert root.status("warmpool") == f"install ok installed {version}"
    root.dpkg("-i", second)
    assert root.status("warmpool") == f"install ok installed {next_version}"
    assert enabled.is_symlink() and not os.path.lexists(conf)

    # Remove, then purge: the package's files go, other daemons' sockets stay.
    root.dpkg("-r", "warmpool")
    assert not any(os.path.lexists(root.path / f) for f in installed[:3])
    root.dpkg("-P", "warmpool")
    assert root.status("warmpool") in ("", "unknown ok not-installed ")
    survivors = [rel for rel in OTHER_SOCKETS if is_socket(root.path / rel)]
    assert survivors == list(OTHER_SOCKETS), f"the purge removed other daemons' sockets: only {survivors} left"
    assert not os.path.lexists(enabled) and not os.path.lexists(root.path / "etc/warmpool")
    assert_purged(root, deb)

    # An operator's configuration is theirs: an upgrade and a purge leave it
    # (dpkg keeps /etc/warmpool for it, and says so).
    root.dpkg("-i", first)
    conf.write_text((root.path / "usr/share/doc/warmpool/examples/warmpool.yaml").read_text())
    mine = conf.read_bytes()
    root.run("systemd-analyze", "condition", "--unit=warmpoold.service")  # now it would start
    root.dpkg("-i", second)
    root.dpkg("-P", "warmpool")
    assert conf.read_bytes() == mine
    assert all(is_socket(root.path / rel) for rel in OTHER_SOCKETS)

    # And the host never saw any of it.
    assert host_package_state() == host_before


def test_deb_library_builds_a_client_in_a_throwaway_root(debs, throwaway_root):
    """libwarmpool0 and libwarmpool-dev: a program builds with pkg-config,
    links libwarmpool.so.0 and runs; the purge takes the header along."""
    need("cc")
    root = throwaway_root
    host_before = host_package_state()
    root.dpkg("-i", root.copy_in(debs["libwarmpool0"]), root.copy_in(debs["libwarmpool-dev"]))
    src = root.path / "tmp/warmpool-test/client.c"
    src.write_text(
        "#include <stdio.h>\n#include <warmpool.h>\n"
        "int main(void)\n{\n\tstruct wp_lease lease;\n"
        '\tint r = wp_checkout("/nonexistent/warmpool.sock", 100, &lease);\n'
        '\tprintf("%s\\n", wp_strerror(r));\n\treturn r < 0 ? 0 : 1;\n}\n'
    )
    root.run("sh", "-c", "cc -o /tmp/warmpool-test/client /tmp/warmpool-test/client.c "
             "$(pkg-config --cflags --libs warmpool)")
    assert re.search(r"NEEDED.*libwarmpool\.so\.0\b", root.run("readelf", "-d", "/tmp/warmpool-test/client").stdout)
    assert root.run("/tmp/warmpool-test/client").stdout.strip()
    root.dpkg("-P", "libwarmpool-dev", "libwarmpool0")
    assert_purged(root, debs["libwarmpool-dev"])
    assert_purged(root, debs["libwarmpool0"])
    assert host_package_state() == host_before
