"""The packaged unit under a real systemd (`make systemd-check`).

The other tests check the unit with `systemd-analyze` and play systemd's part
themselves (NOTIFY_SOCKET, LISTEN_FDS). Here the real component runs it:
systemd 252 boots as PID 1 of a systemd-nspawn container, the .deb that
`make package` built is installed there with dpkg, and each check asserts
what systemd (systemctl show, the journal) and the daemon (its sockets, its
/proc entries) say.

How the container is made, and why so (found on Debian 12, kernel 6.x, a
host whose PID 1 is not systemd and whose cgroups are v1 plus a v2 "unified"
mount):
  - its root is an overlay of / with a tmpfs upper layer, in a private mount
    namespace: test_packaging.ThrowawayRoot, reused. Nothing the container
    writes (dpkg's database, /etc, the journal) reaches the host's disk.
    nspawn refuses `-D /` with --volatile=overlay and fails with =state.
  - a tmpfs over /run/systemd/nspawn (or its nearest existing parent) in
    that namespace: nspawn's locks and propagation directories go there and
    vanish with it.
  - cgroups of its own under each host hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    gives the container the v2 one): nspawn starts in them (--keep-unit,
    --register=no: no systemd on the host to ask) and teardown kills what is
    left in them and removes them.
  - --private-network: the container's loopback is its own, so its ports
    never clash with the host's.
  - --system-call-filter=bpf and @keyring: without them nspawn's own filter
    refuses the bpf() and keyctl() calls systemd needs to enforce
    DevicePolicy=, IPAddressDeny= and KeyringMode=, and systemd silently
    runs the service without them.
  - it boots to basic.target: the host's multi-user.target services would
    start too otherwise.
Memory, task and CPU limits cannot be checked here (the controllers are
bound to cgroup v1 on such a host).

Commands run in the container with `nsenter --target <its PID 1> --all`;
files are read and written through /proc/<PID 1>/root, and the test
connects to the pool sockets through that path too (a Unix socket path
works across network namespaces).

Teardown, whatever failed: SIGTERM to nspawn (PID 1 powers off), SIGKILL
after POWEROFF_TIMEOUT, then every process left in the cgroups is killed
(cgroup.kill), the cgroups removed and the mount namespace ended. A failed
check's report carries the container's journal (conftest.py).

Every check leaves the service as it found it or says what it needs first,
so each one can also be run alone (-k NAME).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_packaging import ROOT_ENV, ThrowawayRoot, make_env  # noqa: E402  the overlay of / (see its comment)

REPO = Path(__file__).resolve().parents[2]
UNIT = "warmpoold.service"
CONF = "etc/warmpool/warmpool.yaml"
DROPIN = "etc/systemd/system/warmpoold.service.d/systemd-check.conf"
BACKEND_PORT = 7001  # the echo server inside the container (its own loopback)

# Bounds. Booting takes about 0.3 s and a command a few milliseconds on an
# idle machine; these leave room for a loaded one (make check on 2 cores).
BOOT_TIMEOUT = 90.0  # nspawn started -> systemd running
CMD_TIMEOUT = 90.0  # one command in the container (dpkg -i included)
POWEROFF_TIMEOUT = 30.0  # SIGTERM to nspawn -> it exits (PID 1 powers off)
KILL_TIMEOUT = 15.0  # SIGKILL/cgroup.kill -> the processes are gone
WAIT_TIMEOUT = 30.0  # a state we wait for (a restart takes RestartSec=2s + the start)
IO_TIMEOUT = 10.0  # one relayed exchange
WATCHDOG_SEC = 1  # WatchdogSec= of the test's drop-in (the unit ships 30s)
JOURNAL_LINES = 400  # of the container's journal in a failure report

ENV = dict(ROOT_ENV, SYSTEMD_COLORS="0", SYSTEMD_PAGER="")

RUNNING = None  # the container while one runs (journal_for_report)


def journal_for_report():
    """conftest.py: the running container's journal, for a failed check."""
    if RUNNING is None or RUNNING.pid1 is None:
        return None
    p = RUNNING.run("journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", str(JOURNAL_LINES),
                    check=False, timeout=30)
    return p.stdout + p.stderr


def cannot_run():
    """Why the checks cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "not root: the container needs mount namespaces, overlayfs and cgroups"
    if not re.search(r"\toverlay$", Path("/proc/filesystems").read_text(), re.M):
        return "no overlayfs in this kernel (/proc/filesystems)"
    for tool in ("systemd-nspawn", "unshare", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} not found: `make deps` installs systemd-container"
    if not os.access("/usr/lib/systemd/systemd", os.X_OK):
        return "no /usr/lib/systemd/systemd to boot"
    if not cgroup_roots():
        return "no writable cgroup hierarchy under /sys/fs/cgroup"
    return None


def cgroup_roots():
    """The host hierarchies nspawn's cgroups go under: the v1 name=systemd
    one and the v2 unified one of a hybrid host, or the v2 root alone."""
    base = Path("/sys/fs/cgroup")
    if (base / "unified" / "cgroup.procs").exists():
        roots = [base / "unified"] + ([base / "systemd"] if (base / "systemd" / "cgroup.procs").exists() else [])
    elif (base / "cgroup.controllers").exists():
        roots = [base]
    else:
        return []
    return roots if all(os.access(r, os.W_OK) for r in roots) else []


def join_cgroups(dirs):
    """preexec_fn: move the child (nspawn to be) into the test's cgroups."""
    def join():
        for d in dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write("0")
    return join


def until(what, fn, timeout=WAIT_TIMEOUT, interval=0.05):
    """fn() until it returns something true, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {got!r})")
        time.sleep(interval)


class Container:
    """systemd booted in a systemd-nspawn container (see the top of the file)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.nspawn = None
        self.pid1 = None
        self.cgroups = []
        self.console = tmp / "console.log"
        self.root = ThrowawayRoot(tmp)
        try:
            self._boot()
        except BaseException:
            self.close()
            raise

    def _boot(self):
        holder = self.root.proc.pid
        # nspawn makes the container's /dev and /run itself (a populated /dev
        # it refuses): off with the chroot's. Its own state under
        # /run/systemd/nspawn goes on a tmpfs of this namespace.
        subprocess.run(["nsenter", f"--target={holder}", "--mount", "--", "sh", "-euc",
                        'umount -R "$1/dev" "$1/run"; '
                        'd=/run/systemd/nspawn; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
                        'mount -t tmpfs -o mode=0755 warmpool-test "$d"', "sh", str(self.root.mnt)],
                       check=True, timeout=CMD_TIMEOUT, capture_output=True)
        name = f"warmpool-systemd-check-{os.getpid()}"
        for r in cgroup_roots():
            (r / name).mkdir()
            self.cgroups.append(r / name)
        env = {"PATH": ROOT_ENV["PATH"], "LC_ALL": "C.UTF-8", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        with open(self.console, "wb") as log:
            self.nspawn = subprocess.Popen(
                ["nsenter", f"--target={holder}", "--mount", "--",
                 "systemd-nspawn", "-D", str(self.root.mnt), "-M", "warmpool-check", "--register=no",
                 "--keep-unit", "--private-network", "--console=read-only", "--link-journal=no",
                 "--resolv-conf=off", "--timezone=off", "--system-call-filter=bpf",
                 "--system-call-filter=@keyring", "-b", "--", "systemd.unit=basic.target"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=join_cgroups(self.cgroups), start_new_session=True)
        self.pid1 = until("the container's PID 1 (systemd) and its private bus", self._find_pid1, BOOT_TIMEOUT)
        p = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=BOOT_TIMEOUT)
        if p.stdout.strip() not in ("running", "degraded"):
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            pytest.fail(f"the container did not boot: {p.stdout}{p.stderr}\nfailed units: {failed}")

    def _find_pid1(self):
        if self.nspawn.poll() is not None:
            pytest.fail(f"systemd-nspawn exited {self.nspawn.returncode}:\n{self.console.read_text()[-4000:]}")
        try:
            tasks = os.listdir(f"/proc/{self.nspawn.pid}/task")
            children = " ".join(Path(f"/proc/{self.nspawn.pid}/task/{t}/children").read_text() for t in tasks)
        except OSError:
            return None
        for pid in children.split():
            try:
                if (Path(f"/proc/{pid}/comm").read_text().strip() == "systemd"
                        and os.path.exists(f"/proc/{pid}/root/run/systemd/private")):
                    return int(pid)
            except OSError:
                pass
        return None

    def run(self, *cmd, check=True, timeout=CMD_TIMEOUT, **kw):
        p = subprocess.run(["nsenter", f"--target={self.pid1}", "--all", "--", *map(str, cmd)],
                           stdin=kw.pop("stdin", subprocess.DEVNULL), capture_output=True, text=True,
                           timeout=timeout, env=ENV, **kw)
        assert not check or p.returncode == 0, \
            f"in the container: {' '.join(map(str, cmd))}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def path(self, rel):
        """rel (relative to the container's /) as seen from here."""
        return Path(f"/proc/{self.pid1}/root") / rel

    def show(self, unit, *props):
        out = self.run("systemctl", "show", unit, *[f"--property={p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self):
        """The journal's current end: journal(after=) shows what comes later."""
        out = self.run("journalctl", "-n", "0", "--show-cursor", "-q", "--no-pager").stdout
        m = re.search(r"^-- cursor: (\S+)$", out, re.M)
        assert m, out
        return m.group(1)

    def journal(self, unit=UNIT, after=None):
        args = ["journalctl", "-b", "--no-pager", "-o", "cat", "-u", unit]
        if after:
            args.append(f"--after-cursor={after}")
        return self.run(*args).stdout

    def wait_journal(self, pattern, after, unit=UNIT):
        """The unit's journal since the cursor once it matches pattern."""
        return until(f"/{pattern}/ in the journal of {unit}",
                     lambda: (lambda j: j if re.search(pattern, j, re.M) else None)(self.journal(unit, after)),
                     interval=0.2)

    def host_pid(self, pid):
        """The host's PID of the container's process pid."""
        ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                m = re.search(r"^NSpid:.*\s(\d+)$", Path(f"/proc/{entry}/status").read_text(), re.M)
            except OSError:
                continue
            if m and int(m.group(1)) == pid:
                return int(entry)
        pytest.fail(f"no process {pid} in the container")

    def close(self):
        """Stop everything this container started, whatever state it is in."""
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                self.nspawn.send_signal(signal.SIGTERM)  # PID 1 powers off
                try:
                    self.nspawn.wait(POWEROFF_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.nspawn.kill()
                    self.nspawn.wait(KILL_TIMEOUT)
        finally:
            try:
                for cg in self.cgroups:  # what outlived nspawn (all of it, after a SIGKILL)
                    kill_cgroup(cg)
                for cg in self.cgroups:
                    remove_cgroup(cg)
            finally:
                self.pid1 = None
                self.root.close()  # ends the mount namespace: the overlay and tmpfs go with it


def cgroup_pids(cg):
    pids = set()
    for procs in cg.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    return pids


def kill_cgroup(cg):
    """SIGKILL every process left in cg and below it."""
    if not cg.exists():
        return
    if (cg / "cgroup.kill").exists():
        (cg / "cgroup.kill").write_text("1")
    for pid in cgroup_pids(cg):  # v1, or a kernel without cgroup.kill
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_cgroup(cg):
    """rmdir cg and its children, deepest first, once their processes are gone."""
    deadline = time.monotonic() + KILL_TIMEOUT
    while cg.exists():
        try:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [cg]:
                d.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            kill_cgroup(cg)
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def debs(request):
    """{package: .deb}: those `make package` left in WARMPOOL_DEB_DIR (make
    systemd-check), else built here by test_packaging's fixture."""
    why = cannot_run()
    if why:
        pytest.skip(why)
    where = os.environ.get("WARMPOOL_DEB_DIR")
    if not where:  # run alone: build them as `make package` does
        where = request.getfixturevalue("tmp_path_factory").mktemp("deb") / "package"
        p = subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(where)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=900, env=make_env())
        assert p.returncode == 0, f"packaging/build-deb.sh failed:\n{p.stdout}\n{p.stderr}"
    found = {f.name.split("_")[0]: f for f in Path(where).glob("*.deb")}
    assert "warmpool" in found, f"no warmpool_*.deb in {where}: run `make package`"
    return found


@pytest.fixture(scope="module")
def ct(debs, tmp_path_factory):
    """The container, booted, with the warmpool package installed and an
    echo server on 127.0.0.1:BACKEND_PORT inside."""
    global RUNNING
    tmp = tmp_path_factory.mktemp("systemd")
    c = RUNNING = Container(tmp)
    try:
        deb = c.path("var/tmp") / debs["warmpool"].name
        shutil.copy(debs["warmpool"], deb)
        c.run("dpkg", "-i", f"/var/tmp/{deb.name}")
        # The backend: socat echoing every connection, a transient unit.
        c.run("systemd-run", "--unit=wp-echo", "--property=Restart=always", "socat",
              f"TCP-LISTEN:{BACKEND_PORT},bind=127.0.0.1,reuseaddr,fork", "PIPE")
        until("the echo server to listen",
              lambda: c.run("ss", "-Hltn", f"sport = :{BACKEND_PORT}").stdout.strip())
        yield c
    finally:
        RUNNING = None
        c.close()
    # Nothing left on the host: cgroups, mounts (the namespace held them).
    assert not any(cg.exists() for cg in c.cgroups), c.cgroups
    assert not any(c.root.mnt.iterdir()) and not any(c.root.layers.iterdir())


# ---------------------------------------------------------------------------
# helpers of the checks


def pool_config(*pools, extra=""):
    """A configuration with one pool per name, each at /run/warmpool/NAME.sock
    in front of the echo server."""
    text = "daemon:\n  log_level: info\n" + extra + "pools:\n"
    for name in pools:
        text += (f"  {name}:\n    listen: /run/warmpool/{name}.sock\n"
                 f"    backends: 127.0.0.1:{BACKEND_PORT}\n    min_idle: 2\n")
    return text


def write_config(ct, text):
    ct.path(CONF).write_text(text)


def relay(ct, pool, payload=None):
    """One exchange through the pool's socket, from the host through the
    container's root: what is sent comes back from the echo server."""
    payload = payload or f"warmpool-systemd-check {pool} {time.monotonic_ns()}\n".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        s.connect(str(ct.path(f"run/warmpool/{pool}.sock")))
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, f"pool {pool}: the connection closed after {got!r}"
            got += chunk
    assert got == payload


def start_fresh(ct, config):
    """The service stopped, its failure and start-rate counters reset, then
    started on config (restarts of the checks stay under StartLimitBurst=)."""
    ct.run("systemctl", "stop", UNIT)
    ct.run("systemctl", "reset-failed", UNIT, check=False)
    write_config(ct, config)
    ct.run("systemctl", "start", UNIT)


def main_pid(ct):
    pid = int(ct.show(UNIT, "MainPID")["MainPID"])
    assert pid > 0, ct.show(UNIT, "ActiveState", "SubState", "Result")
    return pid


# ---------------------------------------------------------------------------
# the checks


def test_start_without_configuration_is_skipped(ct):
    ct.run("systemctl", "stop", UNIT)
    ct.path(CONF).unlink(missing_ok=True)
    ct.run("systemctl", "reset-failed", UNIT, check=False)
    before = int(ct.show(UNIT, "ConditionTimestampMonotonic")["ConditionTimestampMonotonic"])
    ct.run("systemctl", "start", UNIT)
    s = ct.show(UNIT, "ActiveState", "Result", "ConditionResult", "UnitFileState", "ExecMainPID")
    assert s == {"ActiveState": "inactive", "Result": "success", "ConditionResult": "no",
                 "UnitFileState": "enabled", "ExecMainPID": "0"}, s
    # This start tested the condition (not an old result from the package's postinst).
    assert int(ct.show(UNIT, "ConditionTimestampMonotonic")["ConditionTimestampMonotonic"]) > before
    assert ct.run("systemctl", "is-failed", UNIT, check=False).stdout.strip() == "inactive"
    # systemd says why (once: the start the package's postinst made logged it).
    ct.wait_journal(r"skipped because of an unmet condition check \(ConditionPathExists=/etc/warmpool/warmpool\.yaml\)",
                    after=None)


def test_start_returns_after_ready_and_the_pool_relays(ct):
    start_fresh(ct, pool_config("echo"))
    # No wait: systemctl start returned, so READY=1 came, so the socket is there.
    relay(ct, "echo")
    s = ct.show(UNIT, "ActiveState", "SubState", "Type", "NotifyAccess", "Result")
    assert s == {"ActiveState": "active", "SubState": "running", "Type": "notify", "NotifyAccess": "main",
                 "Result": "success"}, s
    for _ in range(3):
        relay(ct, "echo")


def test_status_text_shows_in_systemctl(ct):
    start_fresh(ct, pool_config("echo"))
    # READY=1 carries the first STATUS=; the pool warms to min_idle after it.
    status = until("StatusText to show the warm pool",
                   lambda: (lambda t: t if t == "echo: 2 idle, 0 active, 0 waiting" else None)(
                       ct.show(UNIT, "StatusText")["StatusText"]))
    out = ct.run("systemctl", "status", "--no-pager", UNIT).stdout
    assert f'Status: "{status}"' in out, out


def test_reload_adds_a_pool_in_place_and_a_broken_file_fails_it(ct):
    start_fresh(ct, pool_config("echo"))
    pid = main_pid(ct)
    write_config(ct, pool_config("echo", "second"))
    ct.run("systemctl", "reload", UNIT)  # returns once the daemon sent READY=1 again
    assert main_pid(ct) == pid
    relay(ct, "second")
    relay(ct, "echo")
    until("STATUS= to name both pools", lambda: "second:" in ct.show(UNIT, "StatusText")["StatusText"])

    # ExecReload= runs --check-config first: a broken file fails the reload
    # and the running configuration keeps serving.
    after = ct.cursor()
    write_config(ct, pool_config("echo", "second") + "  broken:\n    listen: [\n")
    p = ct.run("systemctl", "reload", UNIT, check=False)
    assert p.returncode != 0, p
    s = ct.show(UNIT, "ActiveState", "SubState", "MainPID")
    assert s == {"ActiveState": "active", "SubState": "running", "MainPID": str(pid)}, s
    ct.wait_journal(r"warmpool\.yaml:\d+:\d+", after)
    relay(ct, "echo")
    relay(ct, "second")


def test_watchdog_restarts_a_stopped_daemon(ct):
    dropin = ct.path(DROPIN)
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n")
    try:
        ct.run("systemctl", "daemon-reload")
        start_fresh(ct, pool_config("echo"))  # a manual start: NRestarts=0
        s = ct.show(UNIT, "WatchdogUSec", "NRestarts")
        assert s == {"WatchdogUSec": f"{WATCHDOG_SEC}s", "NRestarts": "0"}, s
        pid = main_pid(ct)
        after = ct.cursor()
        ct.run("kill", "-STOP", pid)
        until("systemd to restart the stopped daemon",
              lambda: (lambda s: s["NRestarts"] == "1" and s["ActiveState"] == "active"
                       and s["SubState"] == "running" and s["MainPID"] not in ("0", str(pid)))(
                  ct.show(UNIT, "NRestarts", "ActiveState", "SubState", "MainPID")))
        ct.wait_journal(r"Watchdog timeout", after)
        relay(ct, "echo")
    finally:
        dropin.unlink()
        ct.run("systemctl", "daemon-reload")


def test_socket_unit_starts_the_service_on_the_first_client(ct):
    ct.run("systemctl", "stop", UNIT)
    ct.run("systemctl", "reset-failed", UNIT, check=False)
    socket_unit = ct.path("etc/systemd/system/warmpoold.socket")
    shutil.copy(ct.path("usr/share/doc/warmpool/examples/warmpoold.socket"), socket_unit)
    try:
        write_config(ct, pool_config("redis"))  # the example's pool name and path
        ct.run("systemctl", "daemon-reload")
        ct.run("systemctl", "start", "warmpoold.socket")
        assert ct.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
        after = ct.cursor()
        sock = ct.path("run/warmpool/redis.sock")
        inode = sock.stat().st_ino
        relay(ct, "redis")  # accepted by systemd, relayed by the daemon it started
        s = ct.show(UNIT, "ActiveState", "SubState", "TriggeredBy")
        assert s == {"ActiveState": "active", "SubState": "running", "TriggeredBy": "warmpoold.socket"}, s
        assert sock.stat().st_ino == inode, "the daemon replaced systemd's socket file"
        ct.wait_journal(r"^pool=redis: listening on /run/warmpool/redis\.sock \(passed by systemd\)$", after)
        relay(ct, "redis")
    finally:
        ct.run("systemctl", "stop", "warmpoold.socket", UNIT, check=False)
        socket_unit.unlink()
        ct.run("systemctl", "daemon-reload", check=False)


PROBE = """
import errno, json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(path)
        out[path] = "writable"
    except OSError as e:
        out[path] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def probe_writes(ct, pid, paths):
    """{path: "writable" or the errno name} for creating each path, in the
    mount namespace of the container's process pid (as root: only the
    mounts can say no)."""
    p = ct.run("nsenter", f"--target={pid}", "--mount", "--", "python3", "-c", PROBE, *paths)
    return json.loads(p.stdout)


def test_hardening_is_applied_to_the_running_daemon(ct):
    start_fresh(ct, pool_config("echo"))
    pid = main_pid(ct)
    status = Path(f"/proc/{ct.host_pid(pid)}/status").read_text()
    field = lambda name: re.search(rf"^{name}:\s*(.*)$", status, re.M).group(1).split()  # noqa: E731
    uid = ct.run("id", "-u", "warmpool").stdout.strip()
    gid = ct.run("id", "-g", "warmpool").stdout.strip()
    assert uid != "0" and field("Uid") == [uid] * 4 and field("Gid") == [gid] * 4, status
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert field(caps) == ["0000000000000000"], status
    assert field("NoNewPrivs") == ["1"] and field("Seccomp") == ["2"], status

    # The daemon's mounts: /usr, /etc and /var read-only (ProtectSystem=strict),
    # its RuntimeDirectory= writable, its /tmp its own (PrivateTmp=).
    marker = ct.path("tmp/warmpool-systemd-check")
    marker.write_text("the container's /tmp\n")
    try:
        got = probe_writes(ct, pid, ["/usr/probe", "/etc/probe", "/var/lib/probe", "/run/warmpool/probe",
                                     "/tmp/probe", "/var/tmp/probe"])
        assert got == {"/usr/probe": "EROFS", "/etc/probe": "EROFS", "/var/lib/probe": "EROFS",
                       "/run/warmpool/probe": "writable", "/tmp/probe": "writable",
                       "/var/tmp/probe": "writable"}, got
        seen = ct.run("nsenter", f"--target={pid}", "--mount", "--", "ls", "-A", "/tmp").stdout.split()
        assert marker.name not in seen, seen
    finally:
        marker.unlink()


def test_run_is_read_only_but_run_warmpool_is_writable(ct):
    """ProtectSystem=strict leaves /run writable in systemd 252 (/run/lock
    is 1777): the unit makes it read-only with ReadOnlyPaths=/run, and its
    RuntimeDirectory= stays writable."""
    start_fresh(ct, pool_config("echo"))
    got = probe_writes(ct, main_pid(ct), ["/run/probe", "/run/lock/probe", "/run/systemd/probe",
                                          "/run/warmpool/probe"])
    assert got == {"/run/probe": "EROFS", "/run/lock/probe": "EROFS", "/run/systemd/probe": "EROFS",
                   "/run/warmpool/probe": "writable"}, got
    relay(ct, "echo")  # and the daemon still works in it


def test_stop_drains_and_exits_cleanly(ct):
    start_fresh(ct, pool_config("echo"))
    relay(ct, "echo")
    pid = main_pid(ct)
    after = ct.cursor()
    # One session open while systemd stops the daemon: it drains it.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(IO_TIMEOUT)
        client.connect(str(ct.path("run/warmpool/echo.sock")))
        client.sendall(b"held\n")
        assert client.recv(16) == b"held\n"
        stop = subprocess.Popen(["nsenter", f"--target={ct.pid1}", "--all", "--", "systemctl", "stop", UNIT],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ENV)
        try:
            ct.wait_journal(r"draining 1 active session", after)
            assert ct.show(UNIT, "ActiveState")["ActiveState"] == "deactivating"
        finally:
            client.close()
            out, err = stop.communicate(timeout=CMD_TIMEOUT)
    assert stop.returncode == 0, out + err
    s = ct.show(UNIT, "ActiveState", "Result", "ExecMainPID", "ExecMainCode", "ExecMainStatus")
    # ExecMainCode 1 is CLD_EXITED: the daemon exited by itself, status 0.
    assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainPID": str(pid), "ExecMainCode": "1",
                 "ExecMainStatus": "0"}, s
    ct.wait_journal(r"^exiting$", after)  # the daemon's stderr and systemd's messages come apart
    journal = ct.wait_journal(r"^Stopped warmpoold\.service", after)
    assert re.search(r"^drained: no active sessions left, exiting$", journal, re.M), journal
    assert not re.search(r"SIGKILL|Killing process|timed out", journal), journal


def warm_connections(ct):
    """The daemon's established connections to the echo server, as
    "local-address:port" (a reconnect would show new ephemeral ports)."""
    out = ct.run("ss", "-Htn", "state", "established", f"dport = :{BACKEND_PORT}").stdout
    return {line.split()[2] for line in out.splitlines() if line.strip()}


def test_restart_keeps_warm_connections_in_the_fd_store(ct):
    start_fresh(ct, pool_config("echo"))
    conns = until("2 warm connections", lambda: (lambda c: c if len(c) == 2 else None)(warm_connections(ct)))
    until("both in the fd store", lambda: ct.show(UNIT, "NFileDescriptorStore")["NFileDescriptorStore"] == "3")
    pid = main_pid(ct)
    after = ct.cursor()
    ct.run("systemctl", "restart", UNIT)
    assert main_pid(ct) != pid
    ct.wait_journal(r"^pool=echo: fd store: 2 warm connections adopted from before the restart$", after)
    ct.wait_journal(r"^pool=echo: listening on /run/warmpool/echo\.sock \(kept in systemd's fd store", after)
    # The same two TCP connections: the echo server saw no reconnect.
    assert warm_connections(ct) == conns
    relay(ct, "echo")
