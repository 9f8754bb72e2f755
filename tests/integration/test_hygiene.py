"""Connection hygiene: idle connections a backend (or a middlebox) drops
after a while never reach a client, max_lifetime recycles connections spread
out in time and never cuts a session, backend sockets carry TCP keepalive,
and a session where nothing moves on one side for client_idle_timeout or
server_idle_timeout is closed."""

import re
import signal
import subprocess
import time

import pytest

from wp import (
    KIB,
    MIB,
    SourceChecker,
    alive,
    connect_unix,
    echo_once,
    other_pool_serves,
    recv_exact,
    recv_until_closed,
    stats,
    wait_until,
)


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


# ---------------------------------------------------------------------------
# session idle timeouts: a session where nothing moves on one side is closed


def test_frozen_backend_session_ends_by_server_idle_timeout(start_backend, start_daemon, pool):
    """A session whose backend froze is closed by server_idle_timeout: both
    a quiet echo session (300 ms: the client sees a clean EOF) and one pushing
    to a frozen sink (1 s: the push ends in an error); a pool with the same
    timeout whose sessions keep moving is not affected. (It absorbed
    test_server_idle_timeout_closes_a_session_whose_backend_froze.)"""
    sink = start_backend(mode="sink")
    echo = start_backend()
    frozen_echo = start_backend()
    d = start_daemon(pools={"si": pool("si", [sink], min_idle=1, server_idle_timeout="1s"),
                            "other": pool("other", [echo], min_idle=2, server_idle_timeout="1s"),
                            "frozen": pool("frozen", [frozen_echo], min_idle=1, server_idle_timeout="300ms")})
    d.wait_log(r"pool=si: warm:")
    d.wait_log(r"pool=other: warm:")
    frozen_echo.wait_open(1)

    # A quiet session whose echo backend froze: the client gets EOF.
    with connect_unix(d.socket_path("frozen")) as c:
        c.sendall(b"a")
        assert recv_exact(c, 1) == b"a"
        frozen_echo.proc.send_signal(signal.SIGSTOP)
        try:
            c.sendall(b"b")  # lands in the frozen backend's socket buffer: then nothing moves
            assert c.recv(10) == b""
        finally:
            frozen_echo.proc.send_signal(signal.SIGCONT)
    d.wait_log(r"pool=frozen client=\d+: nothing moved on the backend side for server_idle_timeout")

    # A session pushing to a frozen sink, next to a pool that keeps moving.
    with connect_unix(d.socket_path("si"), timeout=30) as s:
        s.sendall(b"x" * MIB)
        sink.proc.send_signal(signal.SIGSTOP)
        try:
            s.setblocking(False)
            pushed = MIB
            end = time.monotonic() + 30
            closed_by = None
            while closed_by is None:  # push until the daemon closes the session
                assert time.monotonic() < end, f"the session was not closed ({pushed} bytes pushed)"
                try:
                    pushed += s.send(b"y" * (64 * KIB))
                except BlockingIOError:
                    time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError) as e:
                    closed_by = type(e).__name__
                # An echo session of the other pool keeps moving meanwhile.
                other_pool_serves(d, "other", n=1)
        finally:
            sink.proc.send_signal(signal.SIGCONT)
    line = d.wait_log(r"pool=si client=\d+: nothing moved on the backend side for server_idle_timeout")[0]
    assert "closing the session" in line
    assert stats(d, "si")["sessions_idle_closed"] == 1
    assert stats(d, "other")["sessions_idle_closed"] == 0
    alive(d)
    assert echo_once(d.socket_path("other"), b"still here") == b"still here"


def test_stalled_client_session_ends_by_client_idle_timeout(start_backend, start_daemon, pool):
    """A session whose client moves nothing is closed by client_idle_timeout:
    a client that connects and stays silent (300 ms) while an active client
    of the same pool keeps its session, and a client that stops reading an
    endless stream (1 s), whose bytes got before are exact. (It absorbed
    test_client_idle_timeout_closes_a_silent_session.)"""
    seed = 5
    be = start_backend()
    src = start_backend(mode="source", source_bytes=0, seed=seed)
    d = start_daemon(pools={"silent": pool("silent", [be], min_idle=1, client_idle_timeout="300ms"),
                            "ci": pool("ci", [src], min_idle=1, client_idle_timeout="1s")})
    be.wait_open(1)
    d.wait_log(r"pool=ci: warm:")

    # A silent client is closed; an active one of the same pool is not.
    with connect_unix(d.socket_path("silent")) as active, connect_unix(d.socket_path("silent")) as silent:
        for i in range(8):  # the active one keeps moving bytes for longer than the timeout
            active.sendall(b"k%d" % i)
            assert recv_exact(active, 2) == b"k%d" % i
            time.sleep(0.1)
        assert silent.recv(10) == b""  # closed by the daemon
        active.sendall(b"ok")
        assert recv_exact(active, 2) == b"ok"
    line = d.wait_log(r"pool=silent client=\d+: nothing moved on the client side for client_idle_timeout")[0]
    assert "closing the session" in line

    # A client that stops reading an endless stream.
    chk = SourceChecker(seed)
    with connect_unix(d.socket_path("ci"), timeout=30) as s:
        s.sendall(b"G")
        while chk.offset < 4 * MIB:
            chk.feed(recv_exact(s, 64 * KIB))
        line = d.wait_log(r"pool=ci client=\d+: nothing moved on the client side for client_idle_timeout",
                          timeout=30)[0]
        assert "closing the session" in line
        # What was in flight is still exact, then the stream ends.
        rest, how = recv_until_closed(s, timeout=30, limit=1 << 30)
        chk.feed(rest)
    assert stats(d, "ci")["sessions_idle_closed"] == 1
    src.wait_close_where(lambda c: c.bytes_in == 1, what="the source connection to close")
    alive(d)
