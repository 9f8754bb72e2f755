"""Packaging: the systemd unit (systemd-analyze security and verify), the man
pages (man --warnings, every configuration key documented) and `make install`
(layout, PREFIX/DESTDIR, an existing configuration never overwritten,
uninstall).

Fast checks only. The .deb is built, linted and installed by `make package`
(packaging/build-deb.sh), which needs root and takes longer.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from wp import BUILD, REPO

UNIT = REPO / "packaging" / "systemd" / "warmpoold.service"
SOCKET_UNIT = REPO / "packaging" / "systemd" / "warmpoold.socket"
SYSUSERS = REPO / "packaging" / "sysusers.d" / "warmpool.conf"
SAMPLE_CONFIG = REPO / "config" / "warmpool.yaml"
MAN_PAGES = ("warmpoold.8", "warmpoolctl.8", "warmpool.yaml.5", "warmpool.3")
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


def make(*args, timeout=120):
    """`make` in the repository against the build under test (already built:
    install only copies)."""
    p = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), f"BUILD={BUILD}", "POST_INSTALL=no", *args],
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


def test_warmpoolctl_8_documents_every_command():
    need("man")
    text = rendered("warmpoolctl.8")
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
        assert re.search(rf"^ {{7}}{cmd}\b", text, re.M), f"warmpoolctl(8): no entry for `{cmd}`"
    for opt in ("-s, --socket", "--json", "-T, --timeout"):
        assert opt in text, f"warmpoolctl(8): option {opt} undocumented"


# ---------------------------------------------------------------------------
# make install


def expected_layout(prefix="usr/local", etc="etc"):
    files = {
        f"{prefix}/sbin/warmpoold": 0o755,
        f"{prefix}/sbin/warmpoolctl": 0o755,
        f"{prefix}/lib/libwarmpool.a": 0o644,
        f"{prefix}/lib/pkgconfig/warmpool.pc": 0o644,
        f"{prefix}/lib/systemd/system/warmpoold.service": 0o644,
        f"{prefix}/lib/sysusers.d/warmpool.conf": 0o644,
        f"{prefix}/share/man/man3/warmpool.3": 0o644,
        f"{prefix}/share/man/man5/warmpool.yaml.5": 0o644,
        f"{prefix}/share/man/man8/warmpoold.8": 0o644,
        f"{prefix}/share/man/man8/warmpoolctl.8": 0o644,
        f"{prefix}/share/doc/warmpool/examples/warmpool.yaml": 0o644,
        f"{prefix}/share/doc/warmpool/examples/warmpoold.socket": 0o644,
        f"{etc}/warmpool/warmpool.yaml": 0o644,
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
    assert got["etc/warmpool/warmpool.yaml"].read_text() == SAMPLE_CONFIG.read_text()
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
        "INSTALL_CONFIG=no",
    )
    got = set(installed_files(dest))
    assert "usr/sbin/warmpoold" in got and "usr/sbin/warmpoolctl" in got
    assert "usr/lib/x86_64-linux-gnu/libwarmpool.a" in got
    assert "usr/lib/x86_64-linux-gnu/pkgconfig/warmpool.pc" in got
    assert "lib/systemd/system/warmpoold.service" in got
    assert "usr/lib/sysusers.d/warmpool.conf" in got
    assert not any(f.startswith("etc/") for f in got), "INSTALL_CONFIG=no installed a configuration"
    # With PREFIX=/usr the installed unit is the packaged one, byte for byte.
    assert (dest / "lib/systemd/system/warmpoold.service").read_text() == UNIT.read_text()


def test_install_never_overwrites_the_configuration(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}")
    conf = dest / "etc" / "warmpool" / "warmpool.yaml"
    mine = "# edited by the administrator\npools:\n  x:\n    listen: /run/warmpool/x.sock\n    backends: 127.0.0.1:1\n"
    conf.write_text(mine)
    p = make("install", f"DESTDIR={dest}")
    assert conf.read_text() == mine
    assert "keeping the existing" in p.stdout
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
    make("uninstall", f"DESTDIR={dest}")
    assert sorted(installed_files(dest)) == ["etc/warmpool/warmpool.yaml"]


def test_installed_library_links(tmp_path):
    """The installed header, library and .pc are enough to build a client."""
    if not (REPO / "lib" / "warmpool.h").exists():
        pytest.skip("lib/warmpool.h (the client library's header) does not exist yet")
    need("pkg-config")
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr", "INSTALL_CONFIG=no")
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
