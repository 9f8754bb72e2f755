"""Client limits and queueing: max_clients closes the extra client at once;
clients waiting for a connection are served first come, first served."""

import select
import time

from conftest import connect_unix, recv_exact, recv_until_closed, wait_until


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
