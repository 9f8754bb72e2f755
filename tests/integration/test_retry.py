"""A client whose backend connection dies before any byte was exchanged (in
either direction) is silently paired with another; once a byte has crossed,
the client is closed instead. The backend closes every connection on SIGUSR1,
so the moment of death is the test's choice."""

import signal

from wp import connect_unix, recv_exact, recv_until_closed, wait_until


def _usr1_closes(be):
    return sum(c.reason == "usr1" for c in be.closes())


def _kill_all_connections(be, n):
    be.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: _usr1_closes(be) >= n, what=f"{n} connections closed by SIGUSR1")


def test_silent_client_repaired_when_its_connection_dies(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=2, max_connections=8)})
    be.wait_open(2)
    with connect_unix(d.socket_path("r")) as s:
        be.wait_open(3)  # paired at once; the floor of 2 idle refilled beside it
        _kill_all_connections(be, 3)
        be.wait_open(3)  # the floor again, plus the client's new connection
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
    d.wait_log(r"pool=r .*before any byte was exchanged, pairing the client with another \(retry 1\)")
    # The bytes went over a connection accepted after the SIGUSR1.
    used = be.wait_close_where(lambda c: c.bytes_in == 4, what="the session's connection closing")
    assert used.id > 3 and used.reason == "eof", be.closes()


def test_client_closed_when_connection_dies_after_a_byte(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=8)})
    be.wait_open(1)
    with connect_unix(d.socket_path("r")) as s:
        s.sendall(b"ping")
        assert recv_exact(s, 4) == b"ping"
        _kill_all_connections(be, 1)
        assert recv_until_closed(s) == (b"", "eof")  # not re-paired
    assert "before any byte was exchanged" not in d.log()


def test_client_closed_when_connection_dies_after_its_greeting(start_backend, start_daemon, pool):
    be = start_backend(greeting=r"hi\r\n")
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=8)})
    be.wait_open(1)
    with connect_unix(d.socket_path("r")) as s:
        assert recv_exact(s, 4) == b"hi\r\n"  # a byte crossed: the greeting
        _kill_all_connections(be, 1)
        assert recv_until_closed(s) == (b"", "eof")  # a second greeting would corrupt the stream
    assert "before any byte was exchanged" not in d.log()
