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
import threading
import time

import pytest

from wp import (
    IO_TIMEOUT,
    SLOW,
    STOP_TIMEOUT,
    WAIT_TIMEOUT,
    WARMPOOLD,
    AdminConn,
    admin,
    connect_unix,
    echo_once,
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
    stop = threading.Event()
    done = {"ok": 0, "failed": []}

    def loop():
        for i in range(100000):  # bounded; ended by `stop` long before
            if stop.is_set():
                return
            msg = b"loop %d\n" % i
            try:
                if echo_once(d.socket_path("p"), msg) != msg:
                    done["failed"].append((i, "wrong echo"))
                else:
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
