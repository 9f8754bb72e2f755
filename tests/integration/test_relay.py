"""The relay: byte-exact in each direction, half-close, independent sessions;
a backend that dies mid-stream (reset, close, stopped) costs only its own
session; a side that stops reading stalls the other (backpressure) without
the daemon's memory growing."""

import os
import random
import signal
import socket
import threading
import time
import zlib

import pytest

from wp import (
    HEAVY,
    IO_TIMEOUT,
    KIB,
    MIB,
    RSS_CEILING,
    SourceChecker,
    alive,
    connect_unix,
    echo_rounds,
    exchange,
    other_pool_serves,
    pool_row,
    recv_exact,
    recv_until_closed,
    rss_bytes,
    run_threads,
    seeded_chunks,
    splitmix_bytes,
    stats,
    try_session,
    wait_until,
)


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


# ---------------------------------------------------------------------------
# the backend dies while a session streams


def _victim_echo(sock, progress, deadline_s):
    """Stream to an echo backend that is about to die: each chunk's echo
    must be exact; when the session ends, what came of the last chunk must
    be a prefix of it. Returns (bytes verified, how it ended)."""
    rng = random.Random(99)
    verified = 0
    end = time.monotonic() + deadline_s
    while True:
        assert time.monotonic() < end, f"victim session still alive after {deadline_s}s ({verified} bytes)"
        data = rng.randbytes(64 * KIB)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            return verified, "send: " + type(e).__name__
        got = bytearray()
        while len(got) < len(data):
            try:
                c = sock.recv(len(data) - len(got))
            except ConnectionResetError:
                c = None
            except socket.timeout:
                raise AssertionError(f"victim: no data and no close within {IO_TIMEOUT}s") from None
            if not c:
                assert data.startswith(bytes(got)), f"victim: wrong bytes before the close, after {verified}"
                return verified + len(got), "eof" if c is not None else "reset"
            got += c
        assert got == data, f"victim: echo differs after {verified} bytes"
        verified += len(data)
        progress[0] = verified


def _victim_source(sock, seed, progress, deadline_s):
    """Read an endless source stream until the backend's death ends it."""
    sock.sendall(b"G")
    chk = SourceChecker(seed)
    end = time.monotonic() + deadline_s
    while True:
        assert time.monotonic() < end, f"victim session still alive after {deadline_s}s ({chk.offset} bytes)"
        try:
            c = sock.recv(MIB)
        except ConnectionResetError:
            return chk.offset, "reset"
        except socket.timeout:
            raise AssertionError(f"victim: no data and no close within {IO_TIMEOUT}s") from None
        if not c:
            return chk.offset, "eof"
        chk.feed(c)
        progress[0] = chk.offset


@pytest.mark.parametrize(
    "how,mode",
    [("usr1", "echo"), ("usr1", "source"), ("sigterm", "echo"), ("sigkill", "source")],
    ids=["reset-usr1-echo", "close-usr1-source", "close-sigterm-echo", "close-sigkill-source"],
)
def test_backend_dies_mid_stream(start_backend, start_daemon, pool, how, mode):
    """A session streams through backend V when V's connections die
    (SIGUSR1: wpbackend closes them all, an RST when input is unread; SIGTERM:
    it closes them and exits; SIGKILL: the kernel closes them). Meanwhile
    six sessions of another pool stream through backend S."""
    seed = 4242
    victim_be = start_backend(mode=mode, seed=seed, source_bytes=0) if mode == "source" else start_backend()
    steady_be = start_backend()
    d = start_daemon(pools={
        "v": pool("v", [victim_be], min_idle=2),
        "s": pool("s", [steady_be], min_idle=6, max_connections=16),
    })
    d.wait_log(r"pool=v: warm:")
    d.wait_log(r"pool=s: warm:")
    time.sleep(0.3)  # every floor connection proven (200 ms): the victim's is not counted as a failed attempt
    n_steady = 6
    stop = threading.Event()
    progress = [0] * n_steady
    vprog = [0]
    victim_result = {}

    def victim():
        with connect_unix(d.socket_path("v")) as s:
            if mode == "echo":
                victim_result["r"] = _victim_echo(s, vprog, 60)
            else:
                victim_result["r"] = _victim_source(s, seed, vprog, 60)

    def steady(i):
        with connect_unix(d.socket_path("s")) as s:
            return echo_rounds(s, 1000 + i, stop, progress, i)

    vt = threading.Thread(target=victim, daemon=True)
    runner = threading.Thread(
        target=lambda: victim_result.setdefault("steady", run_threads(steady, [(i,) for i in range(n_steady)])),
        daemon=True)
    runner.start()
    vt.start()
    wait_until(lambda: vprog[0] >= MIB and all(p > 0 for p in progress), timeout=30,
               what="the victim and every steady session to be streaming")
    at_signal = list(progress)
    if how == "usr1":
        victim_be.proc.send_signal(signal.SIGUSR1)
    elif how == "sigterm":
        victim_be.stop(signal.SIGTERM)
    else:
        victim_be.proc.kill()
        victim_be.proc.wait(10)
    vt.join(70)
    assert not vt.is_alive(), "the victim session did not end"
    assert "r" in victim_result, "the victim thread failed (see the exception above)"
    got, ended = victim_result["r"]
    # The steady sessions go on after the death: each moves more bytes.
    wait_until(lambda: all(p >= a + 4 * 64 * KIB for p, a in zip(progress, at_signal)), timeout=30,
               what="each steady session to stream on after the backend died")
    stop.set()
    runner.join(130)
    results = victim_result["steady"]
    bad = [r for r in results if isinstance(r, BaseException)]
    assert not bad, f"steady sessions failed: {bad}"
    alive(d)

    # The steady pool: every byte of every session went to its backend and back.
    sent = sum(r[0] for r in results)
    st = stats(d, "s")
    assert st["clients_accepted"] == st["clients_served"] == n_steady, st
    assert st["bytes_to_backend"] == st["bytes_to_client"] == sent, (st, sent)
    assert st["clients_retried"] == st["clients_timed_out"] == st["connections_lost"] == 0, st
    wait_until(lambda: len([c for c in steady_be.closes() if c.bytes_in]) == n_steady,
               what="the steady sessions' backend connections to close")
    assert sorted((c.bytes_in, c.crc32) for c in steady_be.closes() if c.bytes_in) == sorted(results)

    # The victim pool: one client, served once, not re-paired (bytes had crossed).
    vst = stats(d, "v")
    assert vst["clients_served"] == 1 and vst["clients_retried"] == 0, vst
    assert vst["bytes_to_client"] >= got, (vst, got)
    if how == "usr1":
        # Every connection wpbackend closed was the session's or an idle one;
        # the idle ones are counted lost (proven) or failed (younger than 200 ms).
        usr1 = len([c for c in victim_be.closes() if c.reason == "usr1"])
        wait_until(lambda: stats(d, "v")["connections_lost"] + stats(d, "v")["connections_failed"] == usr1 - 1,
                   what=f"{usr1 - 1} idle connections counted lost or failed (show stats: {stats(d, 'v')})")
    else:
        victim_be.restart()
    # The pool serves again once its backend is back (re-warmed after backoff).
    wait_until(lambda: try_session(d.socket_path("v"), mode, seed), timeout=15, interval=0.2,
               what="pool v to serve again")
    alive(d)
    print(f"{how}/{mode}: victim got {got} bytes then {ended}; steady sessions moved {sent} bytes")


# ---------------------------------------------------------------------------
# one side stops reading: backpressure keeps the daemon's memory bounded


def _stalled(counter, quiet=1.0, timeout=30.0, what="the stream to stall"):
    """Wait until counter() stops changing for `quiet` seconds; return its value."""
    last, since = counter(), time.monotonic()
    end = time.monotonic() + timeout
    while True:
        time.sleep(0.05)
        now = counter()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        assert time.monotonic() < end, f"timed out after {timeout:.0f}s waiting for {what} (at {now})"


def _next_to_other(start_daemon, pool, name, be, echo):
    """A daemon with pool `name` on backend `be` and pool "other" on `echo`,
    both warm; returns it and its RSS then."""
    d = start_daemon(pools={name: pool(name, [be], min_idle=1), "other": pool("other", [echo], min_idle=2)})
    d.wait_log(rf"pool={name}: warm:")
    d.wait_log(r"pool=other: warm:")
    return d, rss_bytes(d.proc.pid)


def test_backend_stops_reading_memory_bounded(start_backend, start_daemon, pool):
    """A client pushes HEAVY['push_bytes'] to a sink backend that is frozen
    (SIGSTOP) a quarter of the way: the push stalls, the daemon's RSS does not
    grow with it, another pool serves; after SIGCONT every byte arrives."""
    total = HEAVY["push_bytes"]
    sink = start_backend(mode="sink")
    echo = start_backend()
    d, rss0 = _next_to_other(start_daemon, pool, "bulk", sink, echo)
    pid = d.proc.pid
    sent = [0]
    res = {}

    def push():
        crc = 0
        with connect_unix(d.socket_path("bulk"), timeout=120) as s:
            for chunk in seeded_chunks(7, total):
                view = memoryview(chunk)
                while view:
                    n = s.send(view)
                    view = view[n:]
                    sent[0] += n
                crc = zlib.crc32(chunk, crc)
        res["crc"] = crc

    t = threading.Thread(target=push, daemon=True)
    t.start()
    frozen = False
    try:
        wait_until(lambda: sent[0] >= total // 4 or not t.is_alive(), timeout=120, what="a quarter pushed")
        assert t.is_alive(), "the push ended before the freeze"
        sink.proc.send_signal(signal.SIGSTOP)
        frozen = True
        stalled_at = _stalled(lambda: sent[0], what="the push to stall behind the frozen backend")
        rss1 = rss_bytes(pid)
        other_pool_serves(d, "other")
        alive(d)
        rss2 = rss_bytes(pid)
        assert stalled_at < total, "the whole stream was accepted while the backend was frozen"
    finally:
        if frozen:
            sink.proc.send_signal(signal.SIGCONT)
    t.join(300)
    assert not t.is_alive() and "crc" in res, "the push did not finish after SIGCONT"
    c = sink.wait_close_where(lambda c: c.bytes_in > 0, timeout=120, what="the sink connection to close")
    assert c.bytes_in == total and c.crc32 == res["crc"], (c, total)
    st = stats(d, "bulk")
    assert st["bytes_to_backend"] == total, st
    rss3 = rss_bytes(pid)
    print(f"pushed {total >> 20} MiB; stalled at {stalled_at >> 20} MiB; daemon RSS "
          f"{rss0 >> 10} -> {rss1 >> 10} (stalled) -> {rss2 >> 10} -> {rss3 >> 10} KiB (end)")
    for r in (rss1, rss2, rss3):
        assert r - rss0 < RSS_CEILING, f"daemon RSS grew by {(r - rss0) >> 20} MiB"


def test_client_stops_reading_memory_bounded(start_backend, start_daemon, pool):
    """A source backend pushes HEAVY['push_bytes'] to a client that stops
    reading a quarter of the way: the stream stalls (bytes_to_client stops),
    the daemon's RSS does not grow, another pool serves; when the client reads
    again the whole stream arrives, exact."""
    total, seed = HEAVY["push_bytes"], 31337
    src = start_backend(mode="source", source_bytes=total, seed=seed)
    echo = start_backend()
    d, rss0 = _next_to_other(start_daemon, pool, "down", src, echo)
    pid = d.proc.pid
    chk = SourceChecker(seed)
    with connect_unix(d.socket_path("down"), timeout=60) as s:
        s.sendall(b"G")
        while chk.offset < total // 4:
            c = s.recv(MIB)
            assert c, f"EOF after {chk.offset} bytes"
            chk.feed(c)
        # Stop reading: the daemon must stop reading the backend too.
        stalled_at = _stalled(lambda: stats(d, "down")["bytes_to_client"],
                              what="bytes_to_client to stop growing")
        rss1 = rss_bytes(pid)
        other_pool_serves(d, "other")
        alive(d)
        in_flight = stalled_at - chk.offset  # in the client's socket buffer
        # Read the rest.
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, f"stream not finished: {chk.offset} of {total}"
            c = s.recv(MIB)
            if not c:
                break
            chk.feed(c)
    assert chk.offset == total, (chk.offset, total)
    c = src.wait_close_where(lambda c: c.bytes_out > 0, timeout=60, what="the source connection to close")
    assert c.bytes_out == total and c.bytes_in == 1, c
    assert stats(d, "down")["bytes_to_client"] == total
    rss2 = rss_bytes(pid)
    print(f"streamed {total >> 20} MiB; stalled with {in_flight >> 10} KiB in the client's buffer; daemon RSS "
          f"{rss0 >> 10} -> {rss1 >> 10} (stalled) -> {rss2 >> 10} KiB (end)")
    assert stalled_at < total
    for r in (rss1, rss2):
        assert r - rss0 < RSS_CEILING, f"daemon RSS grew by {(r - rss0) >> 20} MiB"
