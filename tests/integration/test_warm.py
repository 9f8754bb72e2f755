"""The warm floor: connections exist before clients, are refilled after
sessions, carry the backend's greeting, and are never handed out dead."""

import os
import time

from wp import connect_unix, echo_once, recv_exact, run_threads, wait_until


def _stays(pred, duration=0.5, interval=0.05):
    """pred() holds at every sample over `duration` seconds. A sample that
    fails is taken again at once before it counts: /proc/net/tcp can miss an
    entry while other processes churn sockets (the tests also count the
    backend's accepts, which a real extra connection would show)."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if not pred() and not pred():
            return False
        time.sleep(interval)
    return pred()


def test_floor_exists_before_first_client(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"warm": pool("warm", [be], min_idle=3, max_connections=8)})

    # No client has connected: whatever the backend sees was opened ahead.
    be.wait_open(3)
    wait_until(lambda: be.established() == 3, what="3 ESTABLISHED sockets on the backend port")
    # Exactly the floor, not more, and it stays there while nobody connects.
    assert _stays(lambda: be.open_count() == 3 and be.established() == 3), (
        f"open={be.open_count()} established={be.established()}"
    )
    assert len(be.accepts()) == 3
    assert d.proc.poll() is None


def test_refill_after_session(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"warm": pool("warm", [be], min_idle=3, max_connections=8)})
    be.wait_open(3)
    accepts_before = len(be.accepts())

    assert echo_once(d.socket_path("warm"), b"refill-ping") == b"refill-ping"

    # The session's backend connection is closed (not reused) ...
    used = be.wait_close_where(lambda c: c.bytes_in == len(b"refill-ping"), what="the session's connection to close")
    assert used.bytes_out == len(b"refill-ping")
    # ... and the pool opened a replacement: back at the floor, more accepts.
    be.wait_open(3)
    wait_until(lambda: len(be.accepts()) > accepts_before, what="a new accept after the session")
    assert _stays(lambda: be.open_count() == 3)


def test_greeting_delivered_first(start_backend, start_daemon, pool):
    greeting = b"220 warm.example ESMTP ready\r\n"
    be = start_backend(greeting=r"220 warm.example ESMTP ready\r\n")
    d = start_daemon(pools={"greet": pool("greet", [be], min_idle=2, max_connections=8)})
    be.wait_open(2)
    time.sleep(0.2)  # let the greetings reach the daemon's idle connections

    # Sessions on the pre-warmed connections and on refilled ones alike.
    for i in range(4):
        with connect_unix(d.socket_path("greet")) as s:
            assert recv_exact(s, len(greeting)) == greeting, f"session {i}"
            cmd = f"EHLO client{i}\r\n".encode()
            s.sendall(cmd)
            assert recv_exact(s, len(cmd)) == cmd, f"session {i}"
        be.wait_open(2)


def test_greeted_connection_handed_out_before_fresh_one(start_backend, start_daemon, pool):
    """A connection whose greeting has arrived goes to the next client before
    one just opened whose greeting has not, so the client does not wait for
    the backend's handshake while a ready connection is idle."""
    greeting = b"+READY\r\n"
    be = start_backend(greeting=r"+READY\r\n", greeting_delay_ms=1500)
    d = start_daemon(pools={"g": pool("g", [be], min_idle=2, max_connections=8)})
    be.wait_open(2)
    warm_ids = {a.id for a in be.accepts()}
    time.sleep(1.8)  # both warm connections have received their greeting
    for i in range(2):
        with connect_unix(d.socket_path("g")) as s:
            assert recv_exact(s, len(greeting)) == greeting, f"session {i}"
            msg = f"session {i}\n".encode()
            s.sendall(msg)
            assert recv_exact(s, len(msg)) == msg, f"session {i}"
        # The session's connection closed and a fresh one (not greeted for
        # another 1.5 s) replaced it before the next client arrives.
        # (The backend logs the session's close and the replacement's accept
        # a moment after the client's exchange: wait for both.)
        wait_until(lambda: len(be.accepts()) >= 3 + i and be.open_count() == 2,
                   what=f"the replacement connection {3 + i} open at the backend")
        assert len(be.accepts()) == 3 + i
    used = {c.id for c in be.closes() if c.bytes_in > 0}
    assert used == warm_ids, f"sessions used {used}, the greeted connections were {warm_ids}"


def test_idle_closing_backend_never_gives_dead_connections(start_backend, start_daemon, pool):
    """The backend closes connections idle for 300 ms; 200 sessions spread
    over ~2 s (several close cycles) must all get their exact echo."""
    be = start_backend(idle_close_ms=300)
    d = start_daemon(
        pools={"idle": pool("idle", [be], min_idle=4, max_connections=32, queue_timeout="5s")}
    )
    be.wait_open(4)
    # The cycle is running before the first client: idle connections were
    # closed by the backend and replaced by the daemon.
    wait_until(lambda: sum(c.reason == "idle" for c in be.closes()) >= 4, what="idle closes at the backend")
    be.wait_open(4)

    path = d.socket_path("idle")
    n_threads, per_thread, span = 4, 50, 2.0
    start = time.monotonic() + 0.1

    def client(t):
        failures = []
        for k in range(per_thread):
            slot = k * n_threads + t  # sessions evenly spread over `span`
            delay = start + slot * span / (n_threads * per_thread) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = f"t{t}-s{k}:".encode() + os.urandom(16 + slot % 200)
            try:
                got = echo_once(path, payload, timeout=10)
                if got != payload:
                    failures.append((t, k, "mismatch", got[:40]))
            except Exception as e:  # noqa: BLE001 - counted as a failure
                failures.append((t, k, type(e).__name__, str(e)[:200]))
        return failures

    results = run_threads(client, [(t,) for t in range(n_threads)], timeout=120)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    failures = [f for r in results for f in r]
    assert failures == [], f"{len(failures)} of 200 sessions failed: {failures[:10]}\n{d.log()[-3000:]}"
    # The sessions overlapped the backend's close cycle.
    assert sum(c.reason == "idle" for c in be.closes()) >= 4
    # Each session used exactly one backend connection that saw its bytes.
    wait_until(lambda: sum(c.bytes_in > 0 for c in be.closes()) >= 200, what="200 used connections closed")
    assert sum(c.bytes_in > 0 for c in be.closes()) == 200
