"""Client limits and queueing: max_clients closes the extra client at once,
and clients that connect and send nothing, up to max_clients, tie up neither
the daemon nor other pools; clients waiting for a connection are served
first come, first served."""

import select
import time

from wp import (
    SLOW,
    admin_json,
    alive,
    connect_unix,
    echo_once,
    pool_row,
    recv_exact,
    recv_until_closed,
    stats,
    wait_until,
)


def _readable(sock, wait=0.05):
    r, _, _ = select.select([sock], [], [], wait)
    return bool(r)


def test_waiting_clients_served_fifo(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"f": pool("f", [be], min_idle=0, max_connections=1, queue_timeout="10s")})
    path = d.socket_path("f")
    holder = connect_unix(path)
    holder.sendall(b"a")
    assert recv_exact(holder, 1) == b"a"  # holds the pool's only connection
    waiters = []
    for name in (b"bb", b"ccc", b"dddd"):
        s = connect_unix(path)
        s.sendall(name)  # waits in the queue; its bytes wait in its socket
        waiters.append((s, name))
        time.sleep(0.05)  # a clear arrival order
    for s, _ in waiters:
        assert not _readable(s), "served while the only connection was taken"
    holder.close()
    for i, (s, name) in enumerate(waiters):
        assert recv_exact(s, len(name)) == name, f"waiter {i} not served in turn"
        for later, _ in waiters[i + 1:]:
            assert not _readable(later), "a later client was served before an earlier one"
        s.close()


def test_max_clients_closes_the_extra_client_at_once(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"m": pool("m", [be], min_idle=1, max_connections=4, max_clients=2)})
    path = d.socket_path("m")
    a, b = connect_unix(path), connect_unix(path)
    for s, msg in ((a, b"x"), (b, b"y")):
        s.sendall(msg)
        assert recv_exact(s, 1) == msg
    with connect_unix(path) as c:
        assert recv_until_closed(c) == (b"", "eof")
    d.wait_log(r"pool=m: max_clients \(2\) reached, closing new client")
    a.close()

    def served():
        """A new client gets its echo (False while the freed slot is not yet seen)."""
        with connect_unix(path) as e:
            try:
                e.sendall(b"z")
                return recv_exact(e, 1, timeout=2.0) == b"z"
            except (AssertionError, OSError):
                return False

    wait_until(served, what="a new client served once a slot is free")
    b.close()


# ---------------------------------------------------------------------------
# clients that connect and send nothing, up to max_clients


def test_silent_clients_up_to_max_clients(start_backend, start_daemon, pool):
    """200 clients connect to a pool with max_clients 200 and send nothing:
    the admin socket answers, another pool serves, the 201st client of that
    pool is closed at once, and the 200 are still held (each still echoes)."""
    n = 200
    be, other_be = start_backend(), start_backend()
    d = start_daemon(pools={
        "slow": pool("slow", [be], min_idle=4, max_connections=n + 16, max_clients=n, queue_timeout="30s"),
        "other": pool("other", [other_be], min_idle=2),
    })
    d.wait_log(r"pool=slow: warm:")
    d.wait_log(r"pool=other: warm:")
    path = d.socket_path("slow")
    silent = []
    try:
        for _ in range(n):
            silent.append(connect_unix(path))
        wait_until(lambda: pool_row(d, "slow")["active"] == n, timeout=30,
                   what=f"{n} silent clients paired (show pools)")
        # The daemon is not tied up by them.
        alive(d)
        assert admin_json(d, "show pools")["pools"]
        for i in range(20):
            assert echo_once(d.socket_path("other"), b"other %02d" % i) == b"other %02d" % i
        # One more: closed at once, counted, logged.
        t0 = time.monotonic()
        with connect_unix(path) as extra:
            got, how = recv_until_closed(extra, timeout=5)
        assert got == b"", got
        closed_after = time.monotonic() - t0
        d.wait_log(rf"pool=slow: max_clients \({n}\) reached, closing new client")
        st = stats(d, "slow")
        assert st["clients_refused"] == 1 and st["clients_accepted"] == n + 1, st
        # The silent ones were held, not dropped: each still gets its echo.
        for i, s in enumerate(silent):
            s.sendall(b"late %03d" % i)
        for i, s in enumerate(silent):
            assert recv_exact(s, 8) == b"late %03d" % i
    finally:
        for s in silent:
            s.close()
    print(f"the {n + 1}st client was closed {closed_after * 1000:.0f} ms after connecting ({how})")
    assert closed_after < 2.0 * SLOW
