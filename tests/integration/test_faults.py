"""Fault injection (issue 7): backends that reset, close, freeze or flap,
clients that stall, fd exhaustion, thousands of churning clients, a killed
and a drained daemon, and clients that hold every max_clients slot.

Real processes, bounded in time and size; assertions on bytes, counts,
states and log lines, never on speed. docs/RELIABILITY.md lists each test
with its expected behaviour and result.

The heaviest tests shrink when WARMPOOL_VALGRIND is set (every daemon then
runs under valgrind, about 20x slower): see HEAVY below.
"""

import asyncio
import os
import random
import re
import signal
import socket
import threading
import time
import zlib

import pytest

import conftest
from conftest import (
    IO_TIMEOUT,
    VALGRIND,
    WARMPOOLD,
    Daemon,
    admin,
    admin_json,
    connect_unix,
    echo_once,
    make_config,
    pool_row,
    recv_exact,
    recv_until_closed,
    run_threads,
    wait_until,
)

KIB = 1 << 10
MIB = 1 << 20

UNDER_VALGRIND = bool(VALGRIND)
# The ASan build's allocator keeps freed memory in a quarantine (256 MiB by
# default) and valgrind's shadow memory grows with use: RSS ceilings are for
# the plain build, looser under either tool.
try:
    UNDER_ASAN = b"__asan_init" in WARMPOOLD.read_bytes()
except OSError:  # not built yet: the tests fail on their own, collection must not
    UNDER_ASAN = False

# Sizes of the heavy tests: the plain and ASan builds, or valgrind.
HEAVY = {
    "push_bytes": 128 * MIB if UNDER_VALGRIND else 1024 * MIB,  # backend/client stops reading
    "churn_clients": 500 if UNDER_VALGRIND else 5000,
    "churn_seconds": 10.0 if UNDER_VALGRIND else 30.0,
}
# Growth of the daemon's RSS allowed while a session is stuck with a full pipe.
RSS_CEILING = (256 if (UNDER_VALGRIND or UNDER_ASAN) else 64) * MIB
# The slower builds need longer for a process to answer.
SLOW = 5.0 if UNDER_VALGRIND else (2.0 if UNDER_ASAN else 1.0)


# ---------------------------------------------------------------------------
# /proc readers


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(d, pool_name):
    return admin_json(d, "show stats")["pools"][pool_name]


def backend_row(d, pool_name, be):
    rows = [b for b in admin_json(d, f"show backends {pool_name}")["backends"] if b["backend"] == be.addr]
    assert len(rows) == 1, rows
    return rows[0]


def backend_metric(d, name, pool_name, be):
    """A warmpool_backend_* series of `show metrics` for one backend."""
    rx = re.compile(rf'^warmpool_backend_{name}\{{pool="{re.escape(pool_name)}",backend="{re.escape(be.addr)}"\}} (\S+)$')
    for line in admin(d, "show metrics").splitlines():
        m = rx.match(line)
        if m:
            return float(m.group(1))
    raise AssertionError(f"no warmpool_backend_{name} for {pool_name}/{be.addr}")


def all_events(be):
    """Every generation's events of a Backend (restart() starts a new file)."""
    out = []
    for gen in range(1, be.generation + 1):
        path = be.workdir / f"{be.name}.{gen}.events"
        for line in path.read_text().splitlines():
            f = line.split()
            if f:
                out.append(f)
    return out


def alive(d):
    """The daemon runs and its admin socket answers."""
    assert d.proc.poll() is None, f"warmpoold exited with {d.proc.returncode}\n{d.log()[-3000:]}"
    assert admin(d, "version").startswith("warmpoold "), "admin socket does not answer"


# ---------------------------------------------------------------------------
# byte streams


def splitmix_word(seed, i):
    """Word i (0-based) of `wpbackend --mode source --seed SEED`, computed
    directly: the generator's state after i+1 steps is seed + (i+1)*gamma."""
    mask = (1 << 64) - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)).to_bytes(8, "little")


class SourceChecker:
    """Checks a source backend's stream as it arrives, without holding it:
    every word of the first MiB, then one word in every 4 KiB (a lost,
    repeated or reordered chunk shifts everything after it, so sampling
    finds it)."""

    SAMPLE = 512  # words

    def __init__(self, seed):
        self.seed = seed
        self.offset = 0
        self.tail = b""  # bytes of a word split across chunks

    def feed(self, chunk):
        data = self.tail + bytes(chunk)
        first = (self.offset - len(self.tail)) // 8  # stream word index of data[0]
        nwords = len(data) // 8
        dense_end = min(nwords, max(0, MIB // 8 - first))
        sparse_start = -(-(first + dense_end) // self.SAMPLE) * self.SAMPLE - first
        for w in [*range(dense_end), *range(max(dense_end, sparse_start), nwords, self.SAMPLE)]:
            want = splitmix_word(self.seed, first + w)
            got = data[w * 8 : w * 8 + 8]
            assert got == want, f"source stream differs at byte {(first + w) * 8}: {got.hex()} != {want.hex()}"
        self.tail = data[nwords * 8 :]
        self.offset += len(chunk)


def seeded_chunks(seed, total, chunk=MIB):
    """A reproducible byte stream in chunks (random.randbytes is fast)."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def echo_rounds(sock, seed, stop, progress, idx, chunk=64 * KIB, deadline_s=60.0):
    """Send a chunk, read its echo back exactly; again until `stop` is set.
    progress[idx] is the bytes verified so far. Returns (bytes, crc32)."""
    rng = random.Random(seed)
    total, crc = 0, 0
    end = time.monotonic() + deadline_s
    while not stop.is_set():
        assert time.monotonic() < end, "echo_rounds: not stopped in time"
        data = rng.randbytes(chunk)
        sock.sendall(data)
        got = recv_exact(sock, len(data))
        assert got == data, f"session {idx}: echo differs after {total} bytes"
        crc = zlib.crc32(data, crc)
        total += len(data)
        progress[idx] = total
    return total, crc


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
    wait_until(lambda: _try_session(d.socket_path("v"), mode, seed), timeout=15, interval=0.2,
               what="pool v to serve again")
    alive(d)
    print(f"{how}/{mode}: victim got {got} bytes then {ended}; steady sessions moved {sent} bytes")


def _try_session(path, mode, seed=None):
    """One short session (echo, or the first 4 KiB of a source stream); False
    if it fails."""
    try:
        if mode == "echo":
            return echo_once(path, b"after the fault", timeout=3) == b"after the fault"
        with connect_unix(path, timeout=3) as s:
            s.sendall(b"G")
            return recv_exact(s, 4096, timeout=3) == b"".join(splitmix_word(seed, i) for i in range(512))
    except (AssertionError, OSError):
        return False


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


def _other_pool_serves(d, name, n=20):
    """n echo sessions of 64 KiB on another pool, byte-exact."""
    for i in range(n):
        data = random.Random(i).randbytes(64 * KIB)
        with connect_unix(d.socket_path(name)) as s:
            s.sendall(data)
            assert recv_exact(s, len(data)) == data, f"other pool: session {i} differs"


def test_backend_stops_reading_memory_bounded(start_backend, start_daemon, pool):
    """A client pushes HEAVY['push_bytes'] to a sink backend that is frozen
    (SIGSTOP) a quarter of the way: the push stalls, the daemon's RSS does not
    grow with it, another pool serves; after SIGCONT every byte arrives."""
    total = HEAVY["push_bytes"]
    sink = start_backend(mode="sink")
    echo = start_backend()
    d = start_daemon(pools={"bulk": pool("bulk", [sink], min_idle=1), "other": pool("other", [echo], min_idle=2)})
    d.wait_log(r"pool=bulk: warm:")
    d.wait_log(r"pool=other: warm:")
    pid = d.proc.pid
    rss0 = rss_bytes(pid)
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
        _other_pool_serves(d, "other")
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
    d = start_daemon(pools={"down": pool("down", [src], min_idle=1), "other": pool("other", [echo], min_idle=2)})
    d.wait_log(r"pool=down: warm:")
    d.wait_log(r"pool=other: warm:")
    pid = d.proc.pid
    rss0 = rss_bytes(pid)
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
        _other_pool_serves(d, "other")
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


def test_frozen_backend_session_ends_by_server_idle_timeout(start_backend, start_daemon, pool):
    """A session pushing to a frozen backend is closed by server_idle_timeout;
    the pool's other backend's sessions are not."""
    sink = start_backend(mode="sink")
    echo = start_backend()
    d = start_daemon(pools={"si": pool("si", [sink], min_idle=1, server_idle_timeout="1s"),
                            "other": pool("other", [echo], min_idle=2, server_idle_timeout="1s")})
    d.wait_log(r"pool=si: warm:")
    d.wait_log(r"pool=other: warm:")
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
                _other_pool_serves(d, "other", n=1)
        finally:
            sink.proc.send_signal(signal.SIGCONT)
    line = d.wait_log(r"pool=si client=\d+: nothing moved on the backend side for server_idle_timeout")[0]
    assert "closing the session" in line
    assert stats(d, "si")["sessions_idle_closed"] == 1
    assert stats(d, "other")["sessions_idle_closed"] == 0
    alive(d)
    assert echo_once(d.socket_path("other"), b"still here") == b"still here"


def test_stalled_client_session_ends_by_client_idle_timeout(start_backend, start_daemon, pool):
    """A client that stops reading an endless stream is closed by
    client_idle_timeout; the bytes it got before are exact."""
    seed = 5
    src = start_backend(mode="source", source_bytes=0, seed=seed)
    d = start_daemon(pools={"ci": pool("ci", [src], min_idle=1, client_idle_timeout="1s")})
    d.wait_log(r"pool=ci: warm:")
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


# ---------------------------------------------------------------------------
# a flapping backend next to a healthy one

FAIL_RE = re.compile(
    r"^(\S+ \S+) \S+ pool=(\S+) backend=(\S+) conn=\d+: connect failed: (.*?) "
    r"\((?:attempt (\d+), next in ([\d.]+)s|same round as attempt \d+)\)$")


def _log_time(stamp):
    """Seconds of the day of a log line's "YYYY-mm-dd HH:MM:SS.mmm" stamp."""
    hms = stamp.split()[1]
    h, m, s = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.mark.parametrize("up_s,down_s", [(0.2, 0.2), (1.0, 0.2)], ids=["200ms-200ms", "up1s-down200ms"])
def test_flapping_backend_next_to_a_healthy_one(start_backend, start_daemon, pool, up_s, down_s):
    """Backend F stops and starts every 200 ms for 10 s (same port) while
    backend H stays up, under one session every 20 ms. No session may fail:
    a client whose connection dies before any byte is re-paired, and H is
    always there. F's failed attempts are counted and spaced by the backoff."""
    flap = start_backend()
    healthy = start_backend()
    backoff = {"initial": "100ms", "max": "1s", "multiplier": 2.0, "jitter": 0.1}
    d = start_daemon(pools={"fl": pool("fl", [flap, healthy], min_idle=4, max_connections=32,
                                       queue_timeout="5s", backoff=backoff)})
    d.wait_log(r"pool=fl: warm:")
    path = d.socket_path("fl")
    duration, every = 10.0, 0.02
    stop = threading.Event()
    flips = [0]
    stops = []  # (monotonic before SIGTERM, after F exited)

    def flapper():
        while not stop.is_set():
            time.sleep(up_s if flap.proc.poll() is None else down_s)
            if flap.proc.poll() is None:
                t = time.monotonic()
                flap.stop()
                stops.append((t, time.monotonic()))
            else:
                flap.restart()
            flips[0] += 1

    ft = threading.Thread(target=flapper, daemon=True)
    failures, n = [], 0
    t0 = time.monotonic()
    ft.start()
    try:
        while time.monotonic() - t0 < duration:
            payload = b"flap %05d " % n + random.Random(n).randbytes(1000)
            began = time.monotonic()
            try:
                got = echo_once(path, payload)
                if got != payload:
                    failures.append((n, began, time.monotonic(), "wrong bytes"))
            except (AssertionError, OSError) as e:
                failures.append((n, began, time.monotonic(), repr(e)))
            n += 1
            pause = t0 + n * every - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        stop.set()
        ft.join(30)
    if flap.proc.poll() is not None:
        flap.restart()
    alive(d)
    log = d.log()
    fails = [m for m in (FAIL_RE.match(ln) for ln in log.splitlines()) if m and m.group(2) == "fl"]
    f_fails = [m for m in fails if m.group(3) == flap.addr]
    h_fails = [m for m in fails if m.group(3) == healthy.addr]
    f_accepts = sum(1 for e in all_events(flap) if e[0] == "accept")
    h_accepts = sum(1 for e in all_events(healthy) if e[0] == "accept")
    f_sessions = sum(1 for e in all_events(flap) if e[0] == "close" and int(e[3]) > 0)
    st = stats(d, "fl")
    print(f"{n} sessions, {len(failures)} failed, {flips[0]} flips; F: {f_accepts} accepts, {len(f_fails)} "
          f"failed attempts, {f_sessions} sessions; H: {h_accepts} accepts; retried {st['clients_retried']}; stats {st}")
    # A request already delivered to F when F is stopped cannot be re-sent
    # elsewhere (bytes crossed: the daemon cannot know whether F acted on
    # it), so that client sees EOF before its echo. Such a failure is
    # inherent, not the daemon's: it is one whose session overlapped a stop
    # of F and that got no byte back. Any other failure is a bug.
    inherent = [f for f in failures if "EOF after 0 of" in f[3]
                and any(a <= f[2] and f[1] <= b for a, b in stops)]
    other = [f for f in failures if f not in inherent]
    print(f"  failures: {len(inherent)} inherent (request in flight on F as it stopped), {len(other)} other: "
          f"{[(i, round(a - t0, 3), why) for i, a, _, why in failures][:10]}")
    assert other == [], f"{len(other)} of {n} sessions failed: {other[:10]}\n{log[-4000:]}"
    assert len(inherent) <= len(stops)
    assert flips[0] >= duration / (up_s + down_s), flips  # it really flapped

    # Counters: every failed attempt was logged once, all of them on F.
    wait_until(lambda: stats(d, "fl")["connections_failed"] == len(
        [m for m in (FAIL_RE.match(ln) for ln in d.log().splitlines()) if m and m.group(2) == "fl"]),
        what="connections_failed to match the logged failures")
    assert h_fails == [], [m.group(0) for m in h_fails[:5]]
    fst = stats(d, "fl")
    assert backend_row(d, "fl", healthy)["state"] == "up"
    assert backend_metric(d, "connect_failures_total", "fl", healthy) == 0
    assert backend_metric(d, "connect_failures_total", "fl", flap) == fst["connections_failed"] == len(f_fails)
    # Every connection F accepted was one the daemon counted as established
    # (the rest of its attempts were refused).
    # A connect the kernel completed into the backlog of a backend stopped
    # before accept() counts for the daemon but was never logged by F.
    connects = backend_metric(d, "connects_total", "fl", flap)
    assert f_accepts <= connects <= f_accepts + flips[0], (connects, f_accepts, flips[0])
    assert fst["clients_accepted"] == fst["clients_served"] == n, fst
    assert fst["clients_timed_out"] == fst["clients_refused"] == 0, fst

    # Backoff: a new round of failures waits for the delay the previous one
    # announced ("next in X s", X printed to 0.1 s, the log to 1 ms), and
    # there are at most as many rounds as the backoff's floor allows, where
    # retrying at once would make thousands of refused connects.
    rounds = [m for m in f_fails if m.group(5)]
    assert rounds, "F never failed an attempt"
    for a, b in zip(rounds, rounds[1:]):
        if int(b.group(5)) == int(a.group(5)) + 1:
            gap = _log_time(b.group(1)) - _log_time(a.group(1))
            assert gap >= float(a.group(6)) - 0.06, (
                f"attempt {b.group(5)} came {gap:.3f}s after attempt {a.group(5)} announced 'next in "
                f"{a.group(6)}s': a connection already in flight when attempt {a.group(5)} was counted grew "
                f"the backoff again (README: such connections do not)\n{a.group(0)}\n{b.group(0)}")
    assert len(rounds) <= duration / 0.09 + 5, len(rounds)
    assert f_accepts + len(f_fails) <= 2 * duration / 0.09, (f_accepts, len(f_fails))
    # Once flapping stops, F is used again.
    wait_until(lambda: _try_session(path, "echo") and backend_row(d, "fl", flap)["state"] == "up",
               timeout=15, interval=0.2, what="F back up")


# ---------------------------------------------------------------------------
# out of file descriptors

# Valgrind keeps the top of the descriptor table for itself and shows the
# daemon a lower limit; a socket the kernel accepts into valgrind's range is
# closed by valgrind and reported as EMFILE: the client is reset and the
# backlog drained, so these tests would test valgrind, not the daemon.
no_valgrind_fd_limit = pytest.mark.skipif(
    UNDER_VALGRIND, reason="valgrind closes sockets accepted above the limit it shows the daemon (reset, EMFILE)")


@no_valgrind_fd_limit
def test_fd_exhaustion_pauses_accept_without_spinning(procs, tmp_path, sockdir, start_backend, pool, monkeypatch):
    """warmpoold under RLIMIT_NOFILE 64 (prlimit): clients are opened until
    one is not served. The sessions already open keep echoing, the log says
    accepting is paused, the daemon does not spin while the listening socket
    stays readable, and once clients leave the waiting ones are served."""
    nofile = 64
    be = start_backend()
    adm = sockdir / "admin-fd.sock"
    text = make_config({"fd": pool("fd", [be], min_idle=2, max_connections=64, queue_timeout="30s")},
                       {"admin_socket": str(adm)})
    d = Daemon(procs, tmp_path, sockdir, text, name="warmpoold-fd")
    d.admin_path = adm
    monkeypatch.setattr(conftest, "VALGRIND", ["prlimit", f"--nofile={nofile}:{nofile}", *VALGRIND])
    try:
        d.start()
        monkeypatch.undo()
        d.wait_log(rf"open-file limit: {nofile}$")  # prlimit took, and the daemon cannot raise it
        d.wait_log(r"pool=fd: warm:")
        path = d.socket_path("fd")
        served, stuck = [], []
        try:
            for i in range(nofile):
                s = connect_unix(path)
                msg = b"client %03d" % i
                s.sendall(msg)
                try:
                    assert recv_exact(s, len(msg), timeout=SLOW) == msg
                except AssertionError:
                    stuck.append((s, msg))
                    break
                served.append((s, msg))
            assert stuck, f"{len(served)} clients all served under RLIMIT_NOFILE={nofile}"
            for i in range(4):  # a few more behind it, in the listen backlog
                s = connect_unix(path)
                msg = b"late %d" % i
                s.sendall(msg)
                stuck.append((s, msg))
            line = d.wait_log(r"pool=fd: accept on \S+: Too many open files; pausing accepts for \d+ms")[0]
            # Out of descriptors: the open sessions still relay.
            for s, msg in served:
                s.sendall(msg[::-1])
                assert recv_exact(s, len(msg)) == msg[::-1]
            # No busy loop while the listening socket stays readable.
            pid = d.proc.pid
            c0, t0 = cpu_seconds(pid), time.monotonic()
            time.sleep(2.0)
            cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
            assert d.proc.poll() is None, d.log()[-3000:]
            nlines = len(d.log().splitlines())
            # Free some: the waiting clients are served, in order, then new ones.
            for s, _ in served[:10]:
                s.close()
            del served[:10]
            for s, msg in stuck:
                assert recv_exact(s, len(msg), timeout=10) == msg, msg
            served += stuck
            stuck = []
            assert echo_once(path, b"after") == b"after"
        finally:
            for s, _ in served + stuck:
                s.close()
        pauses = len(re.findall(r"pausing accepts", d.log()))
        log_errors = [ln for ln in d.log().splitlines() if " error: " in ln]
        print(f"{len(served)} sessions at the limit; {pauses} 'pausing accepts' lines ({nlines} log lines "
              f"after the 2 s); CPU {cpu:.3f}s in {wall:.1f}s; first: {line}; errors logged: {log_errors[:3]}")
        # Everything still works, including the admin socket.
        wait_until(lambda: pool_row(d, "fd")["idle"] >= 2, what="the floor back")
        alive(d)
        # Paused means paused: ACCEPT_PAUSE (100 ms) between tries, not a spin.
        assert cpu < 0.5 * SLOW, f"{cpu:.2f}s of CPU in {wall:.1f}s while out of descriptors ({pauses} " \
                                 f"'pausing accepts' lines)"
        assert d.stop() == 0, d.log()[-3000:]
    finally:
        d.close()


def _handoff_checkout(path, timeout):
    """libwarmpool's checkout, raw (lib/handoff_proto.h): the backend socket."""
    import array

    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.send(b"WPQ1O\0\0\0")
        msg, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(4))
    assert msg[:4] == b"WPH1" and msg[4] == 0, msg
    fds = [array.array("i", data)[0] for level, kind, data in anc
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS]
    assert len(fds) == 1, anc
    return socket.socket(fileno=fds[0])


@no_valgrind_fd_limit
@pytest.mark.parametrize("kind", ["admin", "handoff"])
def test_fd_exhaustion_admin_and_handoff_sockets_do_not_spin(procs, tmp_path, sockdir, start_backend, pool,
                                                            monkeypatch, kind):
    """Descriptors exhausted by a pool whose floor cannot fit (min_idle 200
    under RLIMIT_NOFILE 64), then one client of the admin or handoff socket
    waits in its listen backlog: the daemon must not spin on that readable
    socket, and serves the client once descriptors are free again."""
    nofile = 64
    hog_be, svc_be = start_backend(), start_backend()
    adm = sockdir / "admin-fd.sock"
    hpath = sockdir / "svc.handoff"
    text = make_config({
        "svc": pool("svc", [svc_be], min_idle=1, handoff={"listen": str(hpath)}, queue_timeout="30s"),
        "hog": pool("hog", [hog_be], min_idle=200, max_connections=200),
    }, {"admin_socket": str(adm)})
    d = Daemon(procs, tmp_path, sockdir, text, name="warmpoold-fd")
    d.admin_path = adm
    monkeypatch.setattr(conftest, "VALGRIND", ["prlimit", f"--nofile={nofile}:{nofile}", *VALGRIND])
    try:
        d.start()
        monkeypatch.undo()
        d.wait_log(r"pool=hog backend=\S+: socket: Too many open files")
        pid = d.proc.pid
        c0 = cpu_seconds(pid)
        time.sleep(1.0)
        baseline = cpu_seconds(pid) - c0
        # One client waits in the backlog of a socket the daemon cannot accept from.
        if kind == "admin":
            client = connect_unix(adm, timeout=30)
            client.sendall(b"version\n")
        else:
            res = {}
            t = threading.Thread(target=lambda: res.setdefault("conn", _handoff_checkout(hpath, 30)), daemon=True)
            t.start()
        time.sleep(0.2)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu, wall = cpu_seconds(pid) - c0, time.monotonic() - t0
        nlines = len(d.log().splitlines())
        print(f"{kind}: CPU {baseline:.3f}s in 1s before the client, {cpu:.3f}s in {wall:.1f}s with it waiting; "
              f"{nlines} log lines")
        # Free descriptors: the hog's backend goes away, its connections close.
        hog_be.stop()
        if kind == "admin":
            ans = recv_exact(client, len("warmpoold "), timeout=30)
            client.close()
            assert ans == b"warmpoold "
        else:
            t.join(30)
            assert "conn" in res, "the handoff client got no connection"
            with res["conn"] as conn:
                conn.sendall(b"handed off")
                assert recv_exact(conn, 10) == b"handed off"
        assert d.proc.poll() is None
        assert cpu < 0.5 * SLOW, f"{cpu:.2f}s of CPU in {wall:.1f}s with one {kind} client waiting\n" \
                                 f"{d.log()[-1500:]}"
        assert d.stop() == 0, d.log()[-3000:]
    finally:
        d.close()


# ---------------------------------------------------------------------------
# thousands of clients churning


async def _unix_connect(path, counters):
    """A non-blocking AF_UNIX connect: EAGAIN means the listen backlog is
    full (not an error of the daemon's); retry after a moment, counted."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    deadline = loop.time() + 30
    while True:
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:
            counters["backlog_full"] += 1
            if loop.time() > deadline:
                s.close()
                raise
            await asyncio.sleep(0.01)
        except BaseException:
            s.close()
            raise


async def _session(path, rng, counters, sessions, hold=None):
    """One session: connect, send 1..16 KiB in up to 3 writes, shut the
    write side, read the exact echo and then EOF (the daemon closes the
    client only once the whole session is over, so a client never has more
    than one session in the daemon). With `hold` (an asyncio.Event), wait
    for it after the echo, before shutting the write side."""
    loop = asyncio.get_running_loop()
    payload = rng.randbytes(rng.randint(1, 16 * KIB))
    s = await _unix_connect(path, counters)
    try:
        cuts = sorted(rng.randint(0, len(payload)) for _ in range(2))
        for a, b in zip([0, *cuts], [*cuts, len(payload)]):
            if b > a:
                await loop.sock_sendall(s, payload[a:b])
        got = bytearray()

        async def read_some():
            chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 60)
            got.extend(chunk)
            return chunk

        while len(got) < len(payload):
            if not await read_some():
                raise AssertionError(f"EOF after {len(got)} of {len(payload)} bytes")
        if hold is not None:
            counters["holding"] += 1
            await hold.wait()
        s.shutdown(socket.SHUT_WR)
        while await read_some():
            pass
        if got != payload:
            raise AssertionError(f"echo differs ({len(got)} bytes for {len(payload)})")
    finally:
        s.close()
    sessions.append((len(payload), zlib.crc32(payload)))


async def _churn(path, n_clients, seconds, at_peak):
    """n_clients tasks; each first holds one session open until all hold one
    (at_peak() runs then), then runs sessions back to back for `seconds`."""
    counters = {"backlog_full": 0, "holding": 0}
    sessions, errors = [], []
    hold = asyncio.Event()
    ramp = asyncio.Semaphore(500)  # clients connecting and not yet echoed, during the ramp

    async def client(i):
        rng = random.Random(i)
        try:
            async with ramp:
                first = asyncio.ensure_future(_session(path, rng, counters, sessions, hold))
                while counters["holding"] <= i and not first.done():  # released once echoed
                    await asyncio.sleep(0.01)
            await first
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"client {i} first session: {e!r}")
            return
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            try:
                await _session(path, rng, counters, sessions)
            except Exception as e:  # noqa: BLE001
                errors.append(f"client {i}: {e!r}")
                return

    async def conductor():
        t0 = asyncio.get_running_loop().time()
        while counters["holding"] < n_clients and not (errors and len(errors) + counters["holding"] >= n_clients):
            if asyncio.get_running_loop().time() - t0 > 300:
                errors.append(f"only {counters['holding']} of {n_clients} clients connected after 300 s")
                break
            await asyncio.sleep(0.05)
        peak = await asyncio.get_running_loop().run_in_executor(None, at_peak)
        hold.set()
        return peak

    tasks = [asyncio.ensure_future(client(i)) for i in range(n_clients)]
    peak = await conductor()
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 300)
    return sessions, errors, counters, peak


def test_5000_clients_churning(start_backend, start_daemon, pool):
    """HEAVY['churn_clients'] clients hold a session each at once, then churn
    (connect, send 1..16 KiB, read the echo, close) for HEAVY['churn_seconds'].
    Every session's bytes come back exact and reach the backend with the
    same CRC; the daemon's counters add up; its descriptors and RSS come
    back near where they started."""
    n, seconds = HEAVY["churn_clients"], HEAVY["churn_seconds"]
    # Each client has at most one session in the daemon (it waits for the
    # session's EOF before the next): max_clients n is exactly enough.
    be = start_backend(max_conns=n + 100)
    d = start_daemon(pools={"churn": pool(
        "churn", [be], min_idle=32, max_connections=n + 64, max_clients=n, max_connecting=256,
        queue_timeout="60s", connect_timeout="10s", idle_timeout="1s")})
    d.wait_log(r"pool=churn: warm:")
    pid = d.proc.pid
    path = d.socket_path("churn")

    def settled():
        row = pool_row(d, "churn")
        return row["active"] == 0 and row["waiting"] == 0 and row["connecting"] == 0 and row["idle"] == 32

    # Warm up the allocator, the pipe cache and libev's fd tables a little first.
    _s, errs, _c, _p = asyncio.run(_churn(path, 200, 0.5, lambda: None))
    assert errs == [], errs[:5]
    wait_until(settled, timeout=30, what="the pool to settle after the warm-up")
    fds0, rss0 = fd_count(pid), rss_bytes(pid)
    st0 = stats(d, "churn")
    closes0 = len(be.closes())

    def at_peak():
        row = pool_row(d, "churn")
        return row, fd_count(pid), rss_bytes(pid)

    sampling = threading.Event()
    most = {"sessions": 0, "fds": 0}

    def sampler():  # the most sessions and descriptors the daemon held while churning
        while not sampling.wait(0.5):
            row = pool_row(d, "churn")
            most["sessions"] = max(most["sessions"], row["active"] + row["waiting"])
            most["fds"] = max(most["fds"], fd_count(pid))

    st = threading.Thread(target=sampler, daemon=True)
    t0 = time.monotonic()
    st.start()
    try:
        sessions, errors, counters, peak = asyncio.run(_churn(path, n, seconds, at_peak))
    finally:
        sampling.set()
        st.join(10)
    took = time.monotonic() - t0
    wait_until(settled, timeout=60, what="the pool to settle (active 0, idle back to min_idle)")
    fds1, rss1 = fd_count(pid), rss_bytes(pid)
    st1 = stats(d, "churn")
    row, fds_peak, rss_peak = peak
    print(f"{n} clients, {len(sessions)} sessions in {took:.1f}s ({len(errors)} errors, {counters['backlog_full']} "
          f"connects retried on a full backlog); at the peak: active {row['active']} waiting {row['waiting']}, "
          f"{fds_peak} fds, RSS {rss_peak >> 10} KiB; while churning at most {most['sessions']} sessions and "
          f"{most['fds']} fds; fds {fds0} -> {fds1}, RSS {rss0 >> 10} -> {rss1 >> 10} KiB")
    assert errors == [], f"{len(errors)} errors: {errors[:10]}"
    assert row["active"] + row["waiting"] == n, row  # every client held a session at once
    assert most["sessions"] <= n, most
    alive(d)

    # Counters add up: every session accepted, served once, every byte both ways.
    delta = {k: st1[k] - st0[k] for k in st1}
    sent = sum(b for b, _ in sessions)
    assert delta["clients_accepted"] == delta["clients_served"] == len(sessions), delta
    assert delta["bytes_to_backend"] == delta["bytes_to_client"] == sent, (delta, sent)
    for k in ("clients_refused", "clients_timed_out", "clients_retried", "connections_failed",
              "connections_lost", "stale_discarded"):
        assert delta[k] == 0, delta
    # The backend got each session's bytes intact (its CRC per connection).
    wait_until(lambda: len([c for c in be.closes()[closes0:] if c.bytes_in]) >= len(sessions), timeout=60,
               what="the backend to log every session's close")
    got = sorted((c.bytes_in, c.crc32) for c in be.closes()[closes0:] if c.bytes_in)
    assert got == sorted(sessions), "the backend's (bytes, crc32) per connection differ from the clients'"

    # Nothing leaked: descriptors back (the pipe cache holds at most 64
    # pipes), RSS near where it was.
    assert fds1 <= fds0 + 2 * 64, (fds0, fds1)
    rss_margin = (512 if (UNDER_ASAN or UNDER_VALGRIND) else 32) * MIB
    assert rss1 - rss0 < rss_margin, f"RSS {rss0 >> 10} -> {rss1 >> 10} KiB"


# ---------------------------------------------------------------------------
# the daemon itself killed, or stopped while sessions run


def test_sigkill_and_restart_with_the_same_config(procs, tmp_path, sockdir, start_backend, start_daemon, pool):
    """SIGKILL leaves the socket files behind; a new daemon on the same
    config replaces them (nothing answers there), warms again and serves."""
    be = start_backend()
    d1 = start_daemon(pools={"r": pool("r", [be], min_idle=3)})
    d1.wait_log(r"pool=r: warm:")
    path = d1.socket_path("r")
    assert echo_once(path, b"first life") == b"first life"
    d1.proc.kill()
    assert d1.wait_exit() == -signal.SIGKILL
    assert path.exists() and d1.admin_path.exists(), "the killed daemon's socket files are gone?"
    be.wait_open(0)  # the kernel closed its connections
    with pytest.raises(ConnectionRefusedError):
        connect_unix(path, timeout=2)

    d2 = Daemon(procs, tmp_path, sockdir, d1.config_path.read_text(), name="warmpoold-again")
    d2.admin_path = d1.admin_path
    try:
        d2.start()
        log = d2.log()
        for p in (path, d1.admin_path):
            assert f"{p}: removed stale socket file" in log, log
        d2.wait_log(r"pool=r: warm: 3 idle connections")
        be.wait_open(3)
        assert echo_once(path, b"second life") == b"second life"
        alive(d2)
        assert stats(d2, "r")["clients_served"] == 1
        assert d2.stop() == 0, d2.log()
        assert not path.exists()
    finally:
        d2.close()


def test_sigterm_drains_streaming_sessions_within_shutdown_timeout(start_backend, start_daemon, pool):
    """SIGTERM while three sessions stream: each keeps streaming for a while
    (exact echo), ends by itself, and the daemon then exits 0 before
    shutdown_timeout; a client arriving meanwhile gets nothing."""
    be = start_backend()
    timeout_s = 8.0
    d = start_daemon(pools={"dr": pool("dr", [be], min_idle=4)}, daemon={"shutdown_timeout": f"{timeout_s:g}s"})
    d.wait_log(r"pool=dr: warm:")
    path = d.socket_path("dr")
    n = 3
    stop = [threading.Event() for _ in range(n)]
    progress = [0] * n

    def stream(i):
        with connect_unix(path) as s:
            total, crc = echo_rounds(s, 50 + i, stop[i], progress, i)
            s.shutdown(socket.SHUT_WR)
            rest, how = recv_until_closed(s)
            assert rest == b"" and how == "eof", (rest[:20], how)
            return total, crc

    res = {}
    runner = threading.Thread(target=lambda: res.setdefault("r", run_threads(stream, [(i,) for i in range(n)])),
                              daemon=True)
    runner.start()
    wait_until(lambda: all(progress), what="every session streaming")
    at_term = list(progress)
    t_term = time.monotonic()
    d.send_signal(signal.SIGTERM)
    d.wait_log(r"SIGTERM: shutting down: no new clients, draining 3 active sessions")
    # A client arriving now is not served.
    try:
        with connect_unix(path, timeout=2) as late:
            late.sendall(b"late")
            got, _ = recv_until_closed(late, timeout=5)
            assert got == b"", "a new client was served during the drain"
    except (ConnectionRefusedError, FileNotFoundError):
        pass
    # The sessions stream on, then end one after the other.
    for i in range(n):
        wait_until(lambda: progress[i] >= at_term[i] + 16 * 64 * KIB, what=f"session {i} to stream on")
        stop[i].set()
        time.sleep(0.3)
    runner.join(60)
    results = res["r"]
    assert not [r for r in results if isinstance(r, BaseException)], results
    rc = d.wait_exit(timeout=timeout_s + 5)
    took = time.monotonic() - t_term
    assert rc == 0, d.log()[-3000:]
    assert took < timeout_s, f"exited {took:.1f}s after SIGTERM: the drain waited for shutdown_timeout"
    assert "drained: no active sessions left, exiting" in d.log()
    assert "shutdown_timeout: closing" not in d.log()
    wait_until(lambda: len([c for c in be.closes() if c.bytes_in]) == n, what="the backend connections closed")
    assert sorted((c.bytes_in, c.crc32) for c in be.closes() if c.bytes_in) == sorted(results)
    print(f"drained {n} streaming sessions ({sum(r[0] for r in results)} bytes) in {took:.1f}s")


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
