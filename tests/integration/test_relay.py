"""The relay: byte-exact in each direction, half-close, independent sessions."""

import os
import socket
import threading
import time
import zlib

from conftest import (
    connect_unix,
    exchange,
    pool_row,
    recv_exact,
    recv_until_closed,
    run_threads,
    splitmix_bytes,
    wait_until,
)

MIB = 1 << 20


def test_1mib_round_trip_byte_exact(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"relay": pool("relay", [be], min_idle=1)})
    be.wait_open(1)
    data = os.urandom(MIB)

    with connect_unix(d.socket_path("relay")) as s:
        got = exchange(s, data, timeout=120)
    assert len(got) == len(data)
    assert got == data, f"first difference at byte {next(i for i in range(len(data)) if got[i] != data[i])}"
    # The backend itself received exactly these bytes.
    c = be.wait_close_where(lambda c: c.bytes_in == MIB, what="the 1 MiB connection to close")
    assert c.crc32 == zlib.crc32(data)
    assert c.bytes_out == MIB


def test_1mib_client_to_backend(start_backend, start_daemon, pool):
    """Client -> backend only: a sink backend checksums what it received."""
    be = start_backend(mode="sink")
    d = start_daemon(pools={"up": pool("up", [be], min_idle=1)})
    be.wait_open(1)
    data = os.urandom(MIB)

    with connect_unix(d.socket_path("up"), timeout=60) as s:
        s.sendall(data)
    # The client closed after its last byte; the daemon must still deliver
    # everything before closing the backend connection.
    c = be.wait_close_where(lambda c: c.bytes_in > 0, timeout=60, what="the sink connection to close")
    assert c.bytes_in == MIB
    assert c.crc32 == zlib.crc32(data)
    assert c.bytes_out == 0


def test_1mib_backend_to_client(start_backend, start_daemon, pool):
    """Backend -> client only: a source backend streams a known sequence
    after the client's first byte."""
    seed = 20261124
    be = start_backend(mode="source", source_bytes=MIB, seed=seed)
    d = start_daemon(pools={"down": pool("down", [be], min_idle=1)})
    be.wait_open(1)

    with connect_unix(d.socket_path("down"), timeout=60) as s:
        s.sendall(b"G")
        got = recv_exact(s, MIB, timeout=120)
    expected = splitmix_bytes(seed, MIB)
    assert got == expected, f"first difference at byte {next(i for i in range(MIB) if got[i] != expected[i])}"
    c = be.wait_close_where(lambda c: c.bytes_out > 0, what="the source connection to close")
    assert c.bytes_out == MIB
    assert c.bytes_in == 1


def test_client_half_close(start_backend, start_daemon, pool):
    """Client shutdown(SHUT_WR) -> the backend sees EOF, and its remaining
    reply still reaches the client, followed by EOF."""
    be = start_backend()
    d = start_daemon(pools={"half": pool("half", [be], min_idle=1)})
    be.wait_open(1)
    data = os.urandom(200 * 1024)

    with connect_unix(d.socket_path("half")) as s:
        got = exchange(s, data, shut_wr=True, until_eof=True, timeout=60)
    assert len(got) == len(data)
    assert got == data
    # The echo backend closes only after reading EOF: the half-close got through.
    c = be.wait_close_where(lambda c: c.bytes_in > 0, what="the backend connection to close")
    assert c.reason == "eof"
    assert c.bytes_in == len(data) and c.bytes_out == len(data)


def test_client_half_close_before_reply(start_backend, start_daemon, pool):
    """A request sent, the write side shut, then the reply read: the
    classic half-close client (e.g. `nc -N`)."""
    be = start_backend()
    d = start_daemon(pools={"half": pool("half", [be], min_idle=1)})
    be.wait_open(1)

    with connect_unix(d.socket_path("half")) as s:
        s.sendall(b"request-then-shutdown")
        s.shutdown(socket.SHUT_WR)
        got, how = recv_until_closed(s)
    assert got == b"request-then-shutdown"
    assert how == "eof"


def test_backend_half_close_reaches_client(start_backend, start_daemon, pool):
    """The backend finishes its stream with shutdown(SHUT_WR): the client
    gets every byte and then EOF, while it may still write."""
    be = start_backend(mode="source", source_bytes=100000, seed=7)
    d = start_daemon(pools={"bhalf": pool("bhalf", [be], min_idle=1)})
    be.wait_open(1)

    with connect_unix(d.socket_path("bhalf")) as s:
        s.sendall(b"go")
        got, how = recv_until_closed(s, timeout=30)
        assert got == splitmix_bytes(7, 100000)
        assert how == "eof"


def test_concurrent_sessions_are_independent(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"conc": pool("conc", [be], min_idle=4, max_connections=16)})
    be.wait_open(4)
    path = d.socket_path("conc")

    # Eight sessions open at once, written in interleaved rounds: each gets
    # only its own bytes back.
    socks = [connect_unix(path) for _ in range(8)]
    try:
        sent = [bytearray() for _ in socks]
        got = [bytearray() for _ in socks]
        live = list(range(8))
        for rnd in range(10):
            for i in live:
                chunk = f"[s{i} r{rnd}]".encode() + os.urandom(2000)
                socks[i].sendall(chunk)
                sent[i] += chunk
            for i in live:
                got[i] += recv_exact(socks[i], len(sent[i]) - len(got[i]))
            if rnd == 4:
                socks[0].close()  # one session ending must not disturb the others
                live.remove(0)
        for i in range(1, 8):
            assert got[i] == sent[i], f"session {i}"
    finally:
        for s in socks:
            s.close()

    # And eight bulk sessions in parallel threads.
    def bulk(i):
        data = os.urandom(256 * 1024)
        with connect_unix(path, timeout=60) as s:
            return exchange(s, data, timeout=120) == data

    results = run_threads(bulk, [(i,) for i in range(8)], timeout=180)
    assert results == [True] * 8, results


class LingeringBackend:
    """A TCP backend that reads each connection to EOF and then keeps it
    open, answering nothing, until the test ends: it shows whether the
    daemon itself ends a session whose client has gone."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.got = {}  # connection index -> bytes read before EOF (at EOF)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            i = len(self.conns)
            self.conns.append(c)
            t = threading.Thread(target=self._read, args=(i, c), daemon=True)
            self.threads.append(t)
            t.start()

    def _read(self, i, c):
        c.settimeout(0.2)
        data = bytearray()
        while not self.stop.is_set():
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                self.got[i] = bytes(data)
                return  # EOF: keep the socket open, say nothing
            data += chunk

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        for c in self.conns:
            c.close()
        self.lsock.close()


def test_client_closing_outright_ends_the_session(start_daemon, pool):
    """A client that close()s (rather than half-closes) can read no answer:
    the session ends at once and the backend gets the bytes and a FIN, even
    when the backend itself never closes. A half-closing client keeps its
    session (it may still read the answer) until the backend answers or
    closes, or an idle timeout ends it."""
    be = LingeringBackend()
    try:
        d = start_daemon(pools={"gone": pool("gone", [f"127.0.0.1:{be.port}"], min_idle=1)})
        wait_until(lambda: len(be.conns) >= 1, what="the warm connection")
        payload = b"fire and forget " + os.urandom(3000)

        with connect_unix(d.socket_path("gone")) as s:
            s.sendall(payload)
            wait_until(lambda: pool_row(d, "gone")["active"] == 1, what="the session to start")
        wait_until(lambda: payload in be.got.values(), what="the backend to read the bytes and EOF")
        wait_until(lambda: pool_row(d, "gone")["active"] == 0, what="the session to end with the backend still open")

        s = connect_unix(d.socket_path("gone"))
        try:
            s.sendall(b"half")
            s.shutdown(socket.SHUT_WR)
            wait_until(lambda: b"half" in be.got.values(), what="the half-closed session's EOF")
            time.sleep(0.3)  # the daemon has passed the EOF on; the session must still be there
            assert pool_row(d, "gone")["active"] == 1
        finally:
            s.close()
    finally:
        be.close()


def test_small_reads_pending_behind_a_stalled_client_keep_their_bytes(start_backend, start_daemon, pool):
    """Small reads are copied through one buffer that every session shares;
    bytes a stalled client cannot take yet must get a buffer of their own
    before another session's read reuses it. Session A's client stops
    reading while its echo keeps coming in small pieces; session B runs
    meanwhile; then A reads everything and must get exactly its own bytes."""
    be = start_backend()
    d = start_daemon(pools={"stall": pool("stall", [be], min_idle=2, max_connections=4)})
    be.wait_open(2)
    path = d.socket_path("stall")
    a = connect_unix(path, timeout=60)
    b = connect_unix(path, timeout=60)
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent_a = bytearray()
        # 100-byte messages, one round trip of B's between each, so the
        # backend echoes A's in small separate pieces; A's receive queue and
        # the daemon's send queue to it fill after a few hundred.
        for i in range(1500):
            msg = (b"A%05d:" % i) + os.urandom(93)
            a.sendall(msg)
            sent_a += msg
            bmsg = (b"B%05d:" % i) + os.urandom(57)
            b.sendall(bmsg)
            assert recv_exact(b, len(bmsg)) == bmsg, f"session B, message {i}"
        got_a = recv_exact(a, len(sent_a), timeout=60)
        assert got_a == sent_a, f"first difference at byte {next(i for i in range(len(sent_a)) if got_a[i] != sent_a[i])}"
    finally:
        a.close()
        b.close()
