"""reuse: a connection whose client ended cleanly goes back to the pool
(after the reset exchange or a quiet period), and anything doubtful closes
it instead: one client's bytes must never reach another."""


from conftest import connect_unix, echo_once, recv_exact, wait_until
from test_handoff import stats


def session_bytes(be):
    return sorted(c.bytes_in for c in be.closes())


def test_clean_sessions_reuse_one_connection(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4, reuse=True)})
    be.wait_open(1)
    for i in range(5):
        assert echo_once(d.socket_path("r"), b"req%d" % i) == b"req%d" % i
        wait_until(lambda: stats(d, "r")["connections_reused"] == i + 1, what=f"reuse #{i + 1}")
    # The floor was refilled once while the first session held the only
    # connection; after that, returned connections carried every session.
    assert len(be.accepts()) == 2, be.events()
    assert stats(d, "r")["connections_reuse_refused"] == 0


def test_unread_reply_is_never_handed_to_the_next_client(start_backend, start_daemon, pool):
    """The first client sends and leaves without reading its echo: the echo
    is still coming when its session ends, so the connection is closed."""
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4, reuse=True)})
    be.wait_open(1)
    for i in range(20):
        with connect_unix(d.socket_path("r")) as c:
            c.sendall(b"A" * 65536)
        # The next client must see only its own bytes.
        with connect_unix(d.socket_path("r")) as c:
            c.sendall(b"B%02d" % i)
            assert recv_exact(c, 3) == b"B%02d" % i
    st = stats(d, "r")
    # Refused when its echo was still coming (reused only when every byte had
    # gone to it; a session may also end on a client error, under valgrind's
    # pace, and then its connection is simply closed).
    assert st["connections_reuse_refused"] >= 1, st


def test_reset_exchange_must_match(start_backend, start_daemon, pool):
    be = start_backend()  # echo: answers the reset with the reset itself
    d = start_daemon(pools={
        "ok": pool("ok", [be], min_idle=1, reuse={"reset_send": r"RESET\r\n", "reset_expect": r"RESET\r\n"}),
        "ko": pool("ko", [be], min_idle=1, reuse={"reset_send": r"RESET\r\n", "reset_expect": r"+RESET\r\n"}),
    })
    be.wait_open(2)
    for name, reused in (("ok", 1), ("ko", 0)):
        assert echo_once(d.socket_path(name), b"x") == b"x"
        wait_until(lambda: stats(d, name)["connections_reused"] + stats(d, name)["connections_reuse_refused"] == 1,
                   what=f"pool {name}: reuse decided")
        assert stats(d, name)["connections_reused"] == reused
    # The reused connection carries no reset leftovers to the next client.
    assert echo_once(d.socket_path("ok"), b"next") == b"next"


def test_greeting_connections_are_not_reused(start_backend, start_daemon, pool):
    be = start_backend(greeting=r"hello\r\n")
    d = start_daemon(pools={"g": pool("g", [be], min_idle=1, reuse=True)})
    be.wait_open(1)
    with connect_unix(d.socket_path("g")) as c:
        assert recv_exact(c, 7) == b"hello\r\n"
        c.sendall(b"x")
        assert recv_exact(c, 1) == b"x"
    wait_until(lambda: stats(d, "g")["connections_reuse_refused"] == 1, what="refused")
    with connect_unix(d.socket_path("g")) as c:  # a fresh connection, with its greeting
        assert recv_exact(c, 7) == b"hello\r\n"
