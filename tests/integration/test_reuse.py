"""reuse: a connection whose client ended cleanly goes back to the pool
(after the reset exchange or a quiet period), and anything doubtful closes
it instead: one client's bytes must never reach another."""

import select
import socket
import time

import pytest

from wp import connect_unix, echo_once, recv_exact, wait_until
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


LATE_MS = 400  # the backend's late reply: well after the reset exchange or the quiet period (100ms)


@pytest.mark.parametrize("reuse", [
    pytest.param({"reset_send": r"RESET\r\n", "reset_expect": r"RESET\r\n"}, id="reset"),
    pytest.param(True, id="quiet_period"),
])
def test_late_reply_never_reaches_the_next_client(start_backend, start_daemon, pool, reuse):
    """A reply that arrives after the connection went back to the idle list
    (after the reset's answer, or after the quiet period) is not a greeting:
    the connection is closed, and the next client sees only its own bytes.
    With a reset, this is how one client would forge the next one's replies."""
    be = start_backend(slow=5000)
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4, reuse=reuse)})
    be.wait_open(1)
    with connect_unix(d.socket_path("r")) as c:
        c.sendall(b"SLOW %d FORGED\n" % LATE_MS)
        c.shutdown(socket.SHUT_WR)  # a clean end: the connection goes to its reset / quiet period
        assert c.recv(100) == b""
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1, what="the connection reused")
    late = wait_until(lambda: next((ln for ln in be.events_path.read_text().splitlines()
                                    if ln.startswith("late ")), None), what="the late reply sent")
    conn_id = int(late.split()[1])
    for i in range(3):
        with connect_unix(d.socket_path("r")) as c:
            c.sendall(b"mine%d" % i)
            assert recv_exact(c, 5) == b"mine%d" % i
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b""  # and nothing else, ever
    # Closed by the daemon and counted (connections_reuse_refused; found at
    # checkout instead, if it came in the same loop iteration: stale_discarded).
    be.wait_close_where(lambda e: e.id == conn_id, what="the connection with the late reply closed")
    st = stats(d, "r")
    assert st["connections_reuse_refused"] + st["stale_discarded"] == 1, st


LATE_IN_SESSION_MS = 1500  # long enough for the next client to have the connection when it comes


def test_late_reply_inside_the_next_session_is_not_passed_on(start_backend, start_daemon, pool):
    """The late reply comes once the next client already has the connection
    but has not spoken: it is not that client's either. The connection is
    closed and the client paired with another, having lost nothing."""
    be = start_backend(slow=5000)
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4,
                                      reuse={"reset_send": r"RESET\r\n", "reset_expect": r"RESET\r\n"})})
    be.wait_open(1)
    with connect_unix(d.socket_path("r")) as c:
        c.sendall(b"SLOW %d FORGED\n" % LATE_IN_SESSION_MS)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(100) == b""
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1, what="the connection reused")
    with connect_unix(d.socket_path("r")) as c:
        # It has the reused connection (the idle list's front) before the reply comes.
        wait_until(lambda: stats(d, "r")["clients_served"] == 2, what="the second client paired")
        assert not any(ln.startswith("late ") for ln in be.events_path.read_text().splitlines()), \
            "the late reply came before the second client had the connection: nothing was tested"
        late = wait_until(lambda: next((ln for ln in be.events_path.read_text().splitlines()
                                        if ln.startswith("late ")), None), what="the late reply sent")
        conn_id = int(late.split()[1])

        def pending():  # what the client could read now
            return c.recv(100, socket.MSG_PEEK) if select.select([c], [], [], 0)[0] else b""

        # Either the daemon closes that connection, or (before the fix) the
        # reply reaches this client.
        wait_until(lambda: pending() or any(e.id == conn_id for e in be.closes()),
                   what="the late reply closing its connection or reaching the client")
        assert pending() == b""
        c.sendall(b"mine")
        assert recv_exact(c, 4) == b"mine"
        c.shutdown(socket.SHUT_WR)
        assert c.recv(100) == b""
    st = stats(d, "r")
    assert st["connections_reuse_refused"] == 1 and st["clients_retried"] == 1, st


NONCE_RESET = {"reset_send": r"RESET\r\nECHO {nonce}\r\n", "reset_expect": r"+RESET\r\n$32\r\n{nonce}\r\n"}
# Client A pipelines its own RESET, answered 50 ms late (its replies are off
# while BLPOP blocks), then, behind a 0.5 s BLPOP, a reply of its choosing:
# without a nonce the daemon took A's +RESET for the answer to its own reset
# and handed the connection to B, whose GET then got "forged" first.
FORGER = (b"CLIENT REPLY OFF\r\nBLPOP y 0.05\r\nRESET\r\nCLIENT REPLY OFF\r\nBLPOP z 0.5\r\n"
          b"CLIENT REPLY ON\r\nECHO forged\r\n")


def test_a_client_cannot_forge_the_reset_answer(procs, start_daemon, pool, tmp_path):
    from test_health_roles import redis_cmd, start_redis
    port = start_redis(procs, tmp_path, "redis")
    assert redis_cmd(port, "SET", "k", "real") == "+OK"
    d = start_daemon(pools={"r": pool("r", [f"127.0.0.1:{port}"], min_idle=1, max_connections=1, reuse=NONCE_RESET)})
    path = d.socket_path("r")
    # An honest session first: the nonce exchange itself reuses the connection.
    c = connect_unix(path)
    c.sendall(b"GET k\r\n")
    assert recv_exact(c, 10) == b"$4\r\nreal\r\n"
    c.close()
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1, what="the honest session's connection reused")
    a = connect_unix(path)
    a.sendall(FORGER)
    a.close()
    # The daemon decides on A's connection: with a nonce, A's early +RESET is
    # not the answer (it must end with this reset's nonce), so what follows
    # mismatches and the connection is refused.
    decided = lambda: stats(d, "r")["connections_reused"] + stats(d, "r")["connections_reuse_refused"] == 2
    wait_until(decided, 10.0, what="A's connection reused or refused")
    b = connect_unix(path)
    b.settimeout(5)
    b.sendall(b"GET k\r\n")
    got = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not got.endswith(b"$4\r\nreal\r\n") and b"forged" not in got:
        chunk = b.recv(4096)
        if not chunk:
            break
        got += chunk
    b.close()
    assert stats(d, "r")["connections_reuse_refused"] == 1
    assert got == b"$4\r\nreal\r\n", got
