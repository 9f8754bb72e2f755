"""Failing backends: exponential backoff, clients bounded by queue_timeout,
and the floor restored when the backend returns."""

import re
import socket
import time

from wp import connect_unix, echo_once, free_port, recv_until_closed, wait_until

BACKOFF = {"initial": "100ms", "max": "2s", "multiplier": 2.0, "jitter": 0.1}


def test_resetting_backend_sees_growing_gaps(start_backend, start_daemon, pool):
    """Every connection is reset at once, so each counts as a failed attempt;
    the accepts at the backend are spaced by growing delays up to the cap."""
    be = start_backend(mode="reset")
    d = start_daemon(pools={"rst": pool("rst", [be], min_idle=1, max_connections=4, backoff=BACKOFF)})

    # Delays ~0.1, 0.2, 0.4, 0.8, 1.6, 2.0 s: 7 accepts in about 5 s.
    wait_until(lambda: len(be.accepts()) >= 7, timeout=30, interval=0.05, what="7 connection attempts")
    times = [a.usec / 1e6 for a in be.accepts()[:7]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    desc = ", ".join(f"{g:.3f}" for g in gaps)

    # Past the first gap, each is larger than ~0.8x the one before (jitter
    # 0.1 and the cap allow 2.0*0.9/(2.0*1.1) = 0.82 at worst) ...
    for prev, cur in zip(gaps[1:], gaps[2:]):
        assert cur > 0.8 * prev, f"gaps did not grow: {desc}"
    # ... they grow overall (expected ~8x from the second to the sixth) ...
    assert gaps[5] > 3 * gaps[1], f"gaps did not grow enough: {desc}"
    # ... and never beyond max + jitter (plus scheduling slack).
    assert max(gaps) < 2.0 * 1.1 + 0.5, f"gap beyond backoff.max: {desc}"
    # Each attempt was logged with its number.
    d.wait_log(r"\(attempt \d+, next in", count=3)


def test_closed_port_logs_connect_failed(start_daemon, pool):
    port = free_port()  # nothing listens there
    addr = f"127.0.0.1:{port}"
    d = start_daemon(pools={"nobody": pool("nobody", [addr], min_idle=1, backoff=BACKOFF)})

    lines = d.wait_log(r"connect failed.*\(attempt \d+, next in", count=3)
    for ln in lines:
        assert "pool=nobody" in ln, ln
        assert f"backend={addr}" in ln, ln
    attempts = [int(re.search(r"\(attempt (\d+), next in", ln).group(1)) for ln in lines]
    assert attempts == sorted(attempts) and len(set(attempts)) == len(attempts), attempts
    assert d.proc.poll() is None, "a dead backend must not stop the daemon"


def _stop_backend_and_wait_down(be, d):
    be.stop()
    # The daemon noticed: its idle connections are gone and reconnecting fails.
    d.wait_log(r"(?=.*connect failed)(?=.*backend=" + re.escape(be.addr) + ")")
    wait_until(lambda: be.established() == 0, what="no ESTABLISHED socket on the backend port")


def test_backend_stopped_clients_closed_within_queue_timeout(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(
        pools={
            "down": pool(
                "down",
                [be],
                min_idle=2,
                queue_timeout="1s",
                backoff={"initial": "100ms", "max": "500ms", "multiplier": 2.0, "jitter": 0.1},
            )
        }
    )
    be.wait_open(2)
    _stop_backend_and_wait_down(be, d)

    # Three clients at once: each is closed (EOF or reset), without a byte,
    # well within the generous bound (queue_timeout is 1 s).
    socks = [connect_unix(d.socket_path("down")) for _ in range(3)]
    try:
        t0 = time.monotonic()
        for s in socks:
            try:
                s.sendall(b"anyone there?")
            except (BrokenPipeError, ConnectionResetError):
                pass
        for s in socks:
            got, how = recv_until_closed(s, timeout=10)
            assert got == b"", got
        assert time.monotonic() - t0 < 10
    finally:
        for s in socks:
            s.close()
    d.wait_log(r"queue_timeout")
    assert d.proc.poll() is None


def test_backend_restarted_floor_restored(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(
        pools={
            "back": pool(
                "back",
                [be],
                min_idle=3,
                max_connections=8,
                backoff={"initial": "100ms", "max": "1s", "multiplier": 2.0, "jitter": 0.1},
            )
        }
    )
    be.wait_open(3)
    _stop_backend_and_wait_down(be, d)

    be.restart()  # same port, fresh events file
    be.wait_open(3, timeout=15)
    wait_until(lambda: be.established() == 3, what="3 ESTABLISHED sockets after the restart")
    time.sleep(0.3)
    assert be.open_count() == 3, "more than the floor after the restart"
    assert echo_once(d.socket_path("back"), b"welcome back") == b"welcome back"


def test_connect_timeout_then_queue_timeout(start_daemon, pool):
    """A backend address that accepts nothing in time (a listening socket
    whose accept queue is full) still gets the client closed, not hung."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)  # never accepted: the kernel queue fills, later SYNs wait
    addr = f"127.0.0.1:{ls.getsockname()[1]}"
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue ourselves
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            try:
                f.connect(ls.getsockname())
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)  # let the fillers' handshakes complete
        d = start_daemon(
            pools={"slow": pool("slow", [addr], min_idle=0, connect_timeout="500ms", queue_timeout="1s")}
        )
        with connect_unix(d.socket_path("slow")) as s:
            t0 = time.monotonic()
            got, _ = recv_until_closed(s, timeout=10)
            assert got == b""
            assert time.monotonic() - t0 < 10
        d.wait_log(r"queue_timeout")
    finally:
        for f in fillers:
            f.close()
        ls.close()
