"""In-place upgrade without systemd (issue 16, part 2): `upgrade [PATH]` on
the admin socket (warmpoolctl upgrade) and SIGUSR2. The running warmpoold
execs the binary again, passing its listening sockets and idle connections
(fds 3.., LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES); the new process adopts them
and says READY=1 through a pipe; only then does the old one stop accepting,
drain and exit 0.

The new process is not a child of the test (the old daemon forked it): it
is stopped by its pid at teardown (the `adopted` fixture), before the procs
fixture scans the shared stderr file for sanitizer reports. Under
WARMPOOL_VALGRIND=1 the old daemon runs under valgrind; the new one is the
plain binary exec'd by it (not under valgrind: conftest wraps only what the
test starts), so its memory is checked only in the ASan runs.
"""

import os
import re
import signal
import socket
import stat
import sys
import threading
import time

import pytest

from wp import (
    IO_TIMEOUT,
    SLOW,
    START_TIMEOUT,
    STOP_TIMEOUT,
    VALGRIND,
    WAIT_TIMEOUT,
    WARMPOOLD,
    AdminConn,
    admin,
    connect_unix,
    echo_once,
    make_config,
    pool_row,
    recv_exact,
    splitmix_bytes,
    wait_until,
    warmpoolctl,
)

UPGRADE_TIMEOUT = 45.0  # > the daemon's own 30 s for the new process to become ready


def pid_alive(pid):
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def adopted(procs):
    """Pids of upgraded daemons (not children of the test): SIGTERM, then
    SIGKILL, each bounded, before `procs` checks the logs."""
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + STOP_TIMEOUT * 2
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def upgrade(d, path=None, conn=None):
    """Run `upgrade [PATH]`; the answer's text."""
    cmd = "upgrade" + (f" {path}" if path else "")
    if conn is not None:
        return "\n".join(conn.command(cmd, UPGRADE_TIMEOUT))
    with AdminConn(d) as c:
        return "\n".join(c.command(cmd, UPGRADE_TIMEOUT))


def new_pid(answer):
    m = re.match(r"upgraded: pid (\d+) serves now; pid (\d+) drains and exits", answer)
    assert m, answer
    return int(m.group(1)), int(m.group(2))


def loop_across_upgrade(d, adopted, one):
    """Run one(i) back to back (an exception is a failure) while `d`
    upgrades, and 50 more times after the old process exited: no failure."""
    stop = threading.Event()
    done = {"ok": 0, "failed": []}

    def loop():
        for i in range(100000):  # bounded; ended by `stop` long before
            if stop.is_set():
                return
            try:
                one(i)
                done["ok"] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                done["failed"].append((i, repr(e)))

    t = threading.Thread(target=loop)
    t.start()
    try:
        wait_until(lambda: done["ok"] >= 20, what="the loop running")
        pid, _ = new_pid(upgrade(d))
        adopted.append(pid)
        at_switch = done["ok"]
        assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
        wait_until(lambda: done["ok"] >= at_switch + 50, what="the loop going on after the old exited")
    finally:
        stop.set()
        t.join(WAIT_TIMEOUT * 3)
    assert not t.is_alive()
    assert done["failed"] == [], done["failed"][:5]


def warm_pool(start_backend, start_daemon, pool, n=8):
    be = start_backend()
    d = start_daemon({"p": pool("p", [be], min_idle=n, max_connections=16)})
    be.wait_open(n)
    d.wait_log(rf"pool=p: warm: {n} idle connections")  # proven: those are passed
    return be, d


def test_upgrade_keeps_warm_connections(start_backend, start_daemon, pool, adopted):
    """min_idle 8: after `upgrade`, the new process serves with the 8 idle
    connections of the old one (the backend sees no new connection), the
    first client gets one of them, a session open across the switch
    finishes byte-exact through the old process, which then exits 0, and
    the admin socket is the new process's."""
    be, d = warm_pool(start_backend, start_daemon, pool)
    # A session that runs across the upgrade (its connection stays with the old process).
    s1 = connect_unix(d.socket_path("p"))
    s1.sendall(b"before\n")
    assert recv_exact(s1, 7) == b"before\n"
    be.wait_open(9)  # its replacement
    wait_until(lambda: pool_row(d, "p")["idle"] == 8, what="8 idle again")
    assert len(be.accepts()) == 9
    before = {a.id for a in be.accepts()}

    ans = upgrade(d)
    pid, old = new_pid(ans)
    adopted.append(pid)
    assert old == d.proc.pid
    assert pid_alive(pid)
    d.wait_log(rf"upgrade: pid {pid} is ready")
    d.wait_log(r"pool=p: fd store: 8 warm connections adopted")
    # The admin socket answers from the new process (the old one closed its copy).
    row = pool_row(d, "p")
    assert row["idle"] == 8 and row["connecting"] == 0, row
    assert len(be.accepts()) == 9, "the backend saw a new connection for an adopted one"

    # The session across the switch: byte-exact, through the old process.
    payload = splitmix_bytes(7, 256 << 10)
    s1.sendall(payload)
    assert recv_exact(s1, len(payload), IO_TIMEOUT * SLOW) == payload

    # The first client after the upgrade gets a connection made before it.
    first = b"first after the upgrade\n"
    assert echo_once(d.socket_path("p"), first) == first
    closed = wait_until(lambda: next((c for c in be.closes() if c.bytes_in == len(first)), None),
                        what="the first client's connection closing")
    assert closed.id in before, f"conn {closed.id} was not warm before the upgrade ({sorted(before)})"

    assert d.proc.poll() is None, "the old process must wait for its session"
    s1.close()
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    assert pid_alive(pid)
    assert admin(d, "version").startswith("warmpoold "), "the new process answers the admin socket"
    assert echo_once(d.socket_path("p"), b"still there\n") == b"still there\n"
    assert d.socket_path("p").exists() and d.admin_path.exists()


def test_connect_loop_across_upgrade_sees_no_failure(start_backend, start_daemon, pool, adopted):
    """Clients connect and exchange one echo each, back to back, while the
    daemon upgrades: not one is refused or cut."""
    be, d = warm_pool(start_backend, start_daemon, pool, n=4)

    def one(i):
        msg = b"loop %d\n" % i
        if echo_once(d.socket_path("p"), msg) != msg:
            raise AssertionError("wrong echo")

    loop_across_upgrade(d, adopted, one)


def test_sigusr2_upgrades(start_backend, start_daemon, pool, adopted):
    """SIGUSR2 does what `upgrade` does: the new process takes over with the
    idle connections, the old one exits 0."""
    be, d = warm_pool(start_backend, start_daemon, pool, n=3)
    d.send_signal(signal.SIGUSR2)
    line = d.wait_log(r"upgrade: pid \d+ is ready", timeout=UPGRADE_TIMEOUT)[0]
    pid = int(re.search(r"pid (\d+) is ready", line).group(1))
    adopted.append(pid)
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    assert pid_alive(pid)
    assert pool_row(d, "p")["idle"] == 3
    assert len(be.accepts()) == 3
    assert echo_once(d.socket_path("p"), b"usr2\n") == b"usr2\n"


def test_failing_new_binary_leaves_the_old_serving(start_backend, start_daemon, pool, tmp_path, adopted):
    """A binary that exits at once, and a file that is not executable: the
    command answers with the error, the old process keeps serving with its
    idle connections (none reopened) and can still upgrade afterwards."""
    be, d = warm_pool(start_backend, start_daemon, pool, n=4)
    script = tmp_path / "broken-warmpoold"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    ans = upgrade(d, script)
    assert re.match(r"error: upgrade failed: the new process \(pid \d+\) exited with status 1", ans), ans
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\nexit 0\n")
    plain.chmod(0o644)
    r = warmpoolctl(d, "upgrade", plain, timeout=UPGRADE_TIMEOUT)
    assert r.returncode == 1 and "not an executable regular file" in r.stdout, (r.returncode, r.stdout, r.stderr)
    r = warmpoolctl(d, "upgrade", tmp_path / "missing", timeout=UPGRADE_TIMEOUT)
    assert r.returncode == 1 and "No such file or directory" in r.stdout, (r.returncode, r.stdout)

    assert d.proc.poll() is None
    wait_until(lambda: pool_row(d, "p")["idle"] == 4, what="the held connections idle again")
    assert len(be.accepts()) == 4, "the old process reconnected instead of taking its connections back"
    assert echo_once(d.socket_path("p"), b"old one\n") == b"old one\n"
    closed = wait_until(lambda: next((c for c in be.closes() if c.bytes_in == 8), None), what="the session's close")
    assert closed.id in {a.id for a in be.accepts()[:4]}

    # And a good binary still takes over afterwards.
    pid, _ = new_pid(upgrade(d, WARMPOOLD))
    adopted.append(pid)
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    assert echo_once(d.socket_path("p"), b"new one\n") == b"new one\n"


def test_sigterm_during_upgrade_abandons_it(start_backend, start_daemon, pool, tmp_path):
    """A new binary that never becomes ready, and SIGTERM meanwhile: the
    upgrade is abandoned (its process killed, the command answered with the
    error) and the daemon stops as SIGTERM says, exit 0."""
    be, d = warm_pool(start_backend, start_daemon, pool, n=2)
    script = tmp_path / "slow-warmpoold"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    with AdminConn(d) as c:
        c.send(f"upgrade {script}\n")
        line = d.wait_log(r"upgrade: started .* as pid \d+")[0]
        pid = int(re.search(r"as pid (\d+)", line).group(1))
        assert pid_alive(pid)
        d.send_signal(signal.SIGTERM)
        ans = "\n".join(c.read_answer(UPGRADE_TIMEOUT))
    assert ans.startswith("error: upgrade failed: the daemon is stopping (SIGTERM)"), ans
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    wait_until(lambda: not pid_alive(pid), what="the abandoned new process gone")


# ---------------------------------------------------------------------------
# Pools with a handoff socket: the listening SOCK_SEQPACKET socket is passed
# too (named "@handoff", taken by path), its file left alone; leases stay
# with the process that handed the socket out.

from test_handoff import handoff_checkin, handoff_checkout, stats  # noqa: E402


def warm_handoff_pool(start_backend, start_daemon, pool, sockdir, n=4):
    """A pool "h" with reuse on and a handoff socket, n proven idle
    connections: (be, d, hpath)."""
    be = start_backend()
    hpath = sockdir / "h.handoff"
    d = start_daemon({"h": pool("h", [be], min_idle=n, max_connections=16, reuse=True,
                                handoff={"listen": str(hpath)})})
    be.wait_open(n)
    d.wait_log(rf"pool=h: warm: {n} idle connections")
    return be, d, hpath


def checkout_echo(hpath, msg):
    """One checkout through the handoff socket and one echo on the socket
    received; the backend connection's local (port) for matching accepts."""
    conn, _ = handoff_checkout(hpath)
    with conn:
        conn.settimeout(IO_TIMEOUT)
        conn.sendall(msg)
        assert recv_exact(conn, len(msg)) == msg
        return conn.getsockname()[1]


def fds_of(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def test_upgrade_passes_the_handoff_socket(start_backend, start_daemon, pool, sockdir, adopted):
    """`upgrade` with a handoff socket: the new process serves checkouts on
    the same socket file (same inode, never unlinked by the old process as
    it exits) with a connection that was warm before the upgrade."""
    be, d, hpath = warm_handoff_pool(start_backend, start_daemon, pool, sockdir)
    ino = os.stat(hpath).st_ino
    before = {a.peer for a in be.accepts()}
    pid, old = new_pid(upgrade(d))
    adopted.append(pid)
    d.wait_log(r"pool=h: handoff socket on .* \(passed by the process upgraded\)")
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    assert pid_alive(pid)
    assert os.stat(hpath).st_ino == ino, "the handoff socket file was re-created"
    port = checkout_echo(hpath, b"after the upgrade\n")
    assert any(p.endswith(f":{port}") for p in before), (port, sorted(before))
    assert stats(d, "h")["handoffs"] == 1, "the admin socket is the new process's: it handed it out"


def test_checkout_loop_across_upgrade_sees_no_failure(start_backend, start_daemon, pool, sockdir, adopted):
    """Checkouts back to back on the handoff socket while the daemon
    upgrades: not one fails, before, during or after the switch."""
    be, d, hpath = warm_handoff_pool(start_backend, start_daemon, pool, sockdir)
    loop_across_upgrade(d, adopted, lambda i: checkout_echo(hpath, b"loop %d\n" % i))
    assert stats(d, "h")["handoffs"] > 0, "the new process served checkouts"


def test_checkin_after_upgrade_of_a_socket_handed_out_before_is_refused(start_backend, start_daemon, pool,
                                                                         sockdir, adopted):
    """A socket checked out from the old process and checked in after the
    switch reaches the new process, which holds no lease for it: refused
    (closed by the daemon, counted), never adopted; the pool goes on
    serving with its own connections."""
    be, d, hpath = warm_handoff_pool(start_backend, start_daemon, pool, sockdir)
    early, _ = handoff_checkout(hpath)
    with early:
        early.settimeout(IO_TIMEOUT)
        early.sendall(b"early\n")
        assert recv_exact(early, 6) == b"early\n"
        pid, _ = new_pid(upgrade(d))
        adopted.append(pid)
        assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
        ino = os.fstat(early.fileno()).st_ino
        assert handoff_checkin(hpath, early)[:4] == b"WPH1"
        d.wait_log(rf"pool=h: {re.escape(str(hpath))}: checkin from uid={os.getuid()} pid={os.getpid()} "
                   r"refused: not a socket handed out here, or already checked in; closed")
        s = stats(d, "h")
        assert s["connections_reuse_refused"] == 1 and s["connections_reused"] == 0, s
        wait_until(lambda: f"socket:[{ino}]" not in fds_of(pid), what="the daemon's copy closed")
        # Never adopted: no checkout gets it, and ours still works (the backend did not lose it).
        ports = {checkout_echo(hpath, b"mine %d\n" % i) for i in range(3)}
        assert early.getsockname()[1] not in ports
        early.sendall(b"still mine\n")
        assert recv_exact(early, 11) == b"still mine\n"
    assert pool_row(d, "h")["idle"] >= 1


def test_new_process_failing_after_taking_the_handoff_socket_leaves_its_file(start_backend, start_daemon, pool,
                                                                            sockdir, adopted):
    """The new process takes the handoff socket, then fails to start (a pool
    added to the config listens at a regular file): the socket file is
    still the old process's, which goes on serving checkouts on it; its
    connections are its own again."""
    be, d, hpath = warm_handoff_pool(start_backend, start_daemon, pool, sockdir)
    ino = os.stat(hpath).st_ino
    plain = sockdir / "not-a-socket"
    plain.write_text("")
    d.config_path.write_text(d.config_path.read_text() + (
        f'  z:\n    listen: "{plain}"\n    backends: ["{be.addr}"]\n    min_idle: 0\n'))
    ans = upgrade(d)
    assert re.match(r"error: upgrade failed: the new process \(pid \d+\) exited with status 1", ans), ans
    d.wait_log(r"pool=h: handoff socket on .* \(passed by the process upgraded\)")
    assert os.stat(hpath).st_ino == ino, "the failed new process removed the handoff socket file"
    wait_until(lambda: pool_row(d, "h")["idle"] == 4, what="the held connections idle again")
    assert checkout_echo(hpath, b"old one\n")
    assert d.proc.poll() is None


# A process that passes one listening socket as fd 3 (LISTEN_FDS=1, its own
# pid as LISTEN_PID, the given name), as the old process of an upgrade does,
# then execs the daemon (argv after the name).
PASS_ONE = r"""
import os, socket, sys
kind, bind, name, *argv = sys.argv[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET if kind == "seqpacket" else socket.SOCK_STREAM)
s.bind(bind)
s.listen(8)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto itself would leave it close-on-exec
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=name)
os.execvp(argv[0], argv)
"""


@pytest.mark.parametrize("kind", ["stream", "symlinked"])
def test_a_passed_handoff_socket_that_is_not_one_fails_the_start(start_backend, pool, sockdir, tmp_path, procs,
                                                                  kind):
    """An fd named "@handoff" must be a listening Unix seqpacket socket bound
    to exactly the pool's handoff path: a stream socket there, or a
    seqpacket socket reached through a symlink at that path, fails the
    start with a message (an upgrade's old process then goes on serving)
    and leaves the socket's file alone."""
    be = start_backend()
    hpath = sockdir / "h.handoff"
    bound = hpath if kind == "stream" else sockdir / "elsewhere.handoff"
    if kind == "symlinked":
        os.symlink(bound, hpath)
    cfg = tmp_path / "pass.yaml"
    cfg.write_text(make_config({"h": pool("h", [be], min_idle=1, handoff={"listen": str(hpath)})},
                               {"admin_socket": str(sockdir / "pass-admin.sock")}))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
                                                             "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")}
    err = tmp_path / "pass.stderr"
    p = procs.spawn("pass-one", [sys.executable, "-I", "-c", PASS_ONE,
                                 "stream" if kind == "stream" else "seqpacket", bound, "@handoff",
                                 *VALGRIND, WARMPOOLD, "-c", cfg], err, env=env)
    assert p.wait(START_TIMEOUT * SLOW) == 1, err.read_text(errors="replace")
    log = err.read_text(errors="replace")
    if kind == "stream":
        assert 'socket activation: fd 3 named "@handoff" is not a listening Unix seqpacket socket' in log, log
    else:
        assert f"pool h: the handoff socket passed for {hpath} is bound to another address" in log, log
    assert stat.S_ISSOCK(os.stat(bound).st_mode), "the passed socket's file was removed"


def test_old_process_keeps_no_floor_while_the_new_one_starts(start_backend, start_daemon, pool, tmp_path, adopted):
    """Between the fork and READY=1 the old process still serves, but opens
    connections only for clients waiting: refilling its warm floor there
    would be the reconnect storm the upgrade exists to avoid (the new
    process has the warm connections). The new binary waits for a gate
    file, so sessions run in that window."""
    be, d = warm_pool(start_backend, start_daemon, pool, n=4)
    gate = tmp_path / "gate"
    script = tmp_path / "slow-start"
    script.write_text("#!/bin/sh\n"
                      f"i=0; while [ ! -e {gate} ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done\n"
                      f"exec {WARMPOOLD} \"$@\"\n")
    script.chmod(0o755)
    answer = {}
    t = threading.Thread(target=lambda: answer.setdefault("a", upgrade(d, str(script))))
    t.start()
    try:
        d.wait_log(r"upgrade: started")
        for i in range(3):  # each waits for a connection of its own: the idle ones were passed
            msg = b"in the window %d\n" % i
            assert echo_once(d.socket_path("p"), msg) == msg
    finally:
        gate.touch()
        t.join(UPGRADE_TIMEOUT)
    assert not t.is_alive()
    pid, _ = new_pid(answer["a"])
    adopted.append(pid)
    assert d.wait_exit(STOP_TIMEOUT * SLOW) == 0
    wait_until(lambda: pool_row(d, "p")["idle"] == 4, what="the new process's floor")
    # 4 warm before, one per client in the window, none for the old floor.
    assert len(be.accepts()) == 4 + 3, [a.id for a in be.accepts()]
