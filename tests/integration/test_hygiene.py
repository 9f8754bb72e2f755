"""Connection hygiene: idle connections a backend (or a middlebox) drops
after a while never reach a client, max_lifetime recycles connections spread
out in time and never cuts a session, and backend sockets carry TCP
keepalive."""

import re
import signal
import subprocess
import time

import pytest

from conftest import connect_unix, echo_once, recv_exact, wait_until


def _spread_sessions(path, n, seconds):
    """n sequential sessions paced over `seconds`; returns the failures."""
    failures = []
    start = time.monotonic()
    for i in range(n):
        payload = b"s%04d" % i
        try:
            if echo_once(path, payload) != payload:
                failures.append((i, "wrong bytes"))
        except (AssertionError, OSError) as e:
            failures.append((i, repr(e)))
        pause = start + seconds * (i + 1) / n - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return failures


@pytest.mark.parametrize("max_idle_time", ["800ms", None], ids=["max_idle_time-800ms", "unset"])
def test_backend_that_drops_idle_connections_after_1s(start_backend, start_daemon, pool, max_idle_time):
    """A floor larger than 1 s of traffic, so every idle connection gets old
    enough for the backend's 1 s idle close."""
    be = start_backend(idle_close_ms=1000)
    extra = {"max_idle_time": max_idle_time} if max_idle_time else {}
    d = start_daemon(pools={"i": pool("i", [be], min_idle=80, max_connections=100, **extra)})
    be.wait_open(80)
    failures = _spread_sessions(d.socket_path("i"), 300, 5.0)
    assert failures == [], f"{len(failures)} of 300 sessions failed: {failures[:5]}"
    idle_closed = sum(c.reason == "idle" for c in be.closes())
    if max_idle_time:
        # Replaced before the backend's timeout, every time.
        assert idle_closed == 0, f"the backend closed {idle_closed} idle connections first"
        assert "max_idle_time reached" not in d.log()  # logged at debug only
    else:
        assert idle_closed > 0  # the scenario happened: the pool replaced what the backend dropped


def test_max_lifetime_recycles_spread_out(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"m": pool("m", [be], min_idle=8, max_connections=16, max_lifetime="1s")})
    be.wait_open(8)
    with connect_unix(d.socket_path("m")) as held:
        held.sendall(b"long")
        assert recv_exact(held, 4) == b"long"
        # Two and a half lifetimes: every floor connection is recycled at least twice.
        wait_until(lambda: len([c for c in be.closes() if c.bytes_in == 0]) >= 16, timeout=15.0,
                   what="16 recycled connections")
        # The session outlived max_lifetime and is intact.
        held.sendall(b"still")
        assert recv_exact(held, 5) == b"still"
    recycled = sorted(c.usec for c in be.closes() if c.bytes_in == 0)
    gaps_ms = [(b - a) / 1000 for a, b in zip(recycled, recycled[1:])]
    assert min(gaps_ms) >= 5.0, f"two recycles {min(gaps_ms):.2f} ms apart: {gaps_ms}"
    # Each lived no longer than max_lifetime plus the spacing of the others.
    accepts = {a.id: a.usec for a in be.accepts()}
    lives = [(c.usec - accepts[c.id]) / 1e6 for c in be.closes() if c.bytes_in == 0]
    assert all(0.75 <= t <= 1.5 for t in lives), lives
    be.wait_open(8)  # the floor is back
    assert echo_once(d.socket_path("m"), b"after") == b"after"


def _keepalive_timers(port):
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return [ln for ln in out.splitlines() if ln.strip()], out


def test_backend_sockets_have_keepalive(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"ka": pool("ka", [be], min_idle=2, keepalive={"idle": "7s", "interval": "3s",
                                                                           "count": 2})})
    be.wait_open(2)
    lines, out = _keepalive_timers(be.port)
    assert len(lines) == 2, out
    for ln in lines:
        # e.g. "timer:(keepalive,6.968ms,0)" (ss prints the time left oddly)
        # or "timer:(keepalive,6sec,0)"; the kernel default would be 2 hours.
        m = re.search(r"timer:\(keepalive,([0-9.]+)(ms|sec|min)", ln)
        assert m, out
        assert m.group(2) != "min" and float(m.group(1)) <= 7.0, out
    d.stop()


def test_keepalive_off(start_backend, start_daemon, pool):
    be = start_backend()
    start_daemon(pools={"nk": pool("nk", [be], min_idle=2, keepalive=False)})
    be.wait_open(2)
    lines, out = _keepalive_timers(be.port)
    assert len(lines) == 2 and all("keepalive" not in ln for ln in lines), out


def test_client_idle_timeout_closes_a_silent_session(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"ci": pool("ci", [be], min_idle=1, client_idle_timeout="300ms")})
    be.wait_open(1)
    with connect_unix(d.socket_path("ci")) as active, connect_unix(d.socket_path("ci")) as silent:
        for i in range(8):  # the active one keeps moving bytes for longer than the timeout
            active.sendall(b"k%d" % i)
            assert recv_exact(active, 2) == b"k%d" % i
            time.sleep(0.1)
        assert silent.recv(10) == b""  # closed by the daemon
        active.sendall(b"ok")
        assert recv_exact(active, 2) == b"ok"
    line = d.wait_log(r"pool=ci client=\d+: nothing moved on the client side for client_idle_timeout")[0]
    assert "closing the session" in line


def test_server_idle_timeout_closes_a_session_whose_backend_froze(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"si": pool("si", [be], min_idle=1, server_idle_timeout="300ms")})
    be.wait_open(1)
    with connect_unix(d.socket_path("si")) as c:
        c.sendall(b"a")
        assert recv_exact(c, 1) == b"a"
        be.proc.send_signal(signal.SIGSTOP)
        try:
            c.sendall(b"b")  # lands in the frozen backend's socket buffer: then nothing moves
            assert c.recv(10) == b""
        finally:
            be.proc.send_signal(signal.SIGCONT)
    d.wait_log(r"pool=si client=\d+: nothing moved on the backend side for server_idle_timeout")
