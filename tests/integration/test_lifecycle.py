"""Process lifecycle: graceful drain on SIGTERM (sessions streaming on until
their clients end them), prompt SIGINT, sd_notify messages, socket files
created, replaced when stale (also after a SIGKILL), refused when live, and
removed on exit."""

import re
import signal
import socket
import threading
import time

import pytest

from wp import (
    KIB,
    Daemon,
    alive,
    connect_unix,
    echo_once,
    echo_rounds,
    recv_exact,
    recv_until_closed,
    run_threads,
    stats,
    wait_until,
)


def _index(notify, line):
    return next(i for i, m in enumerate(notify) if line in m.split("\n"))


def test_sigterm_shutdown_timeout_closes_lingering_session(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"linger": pool("linger", [be], min_idle=1)}, daemon={"shutdown_timeout": "1s"})
    be.wait_open(1)
    with connect_unix(d.socket_path("linger")) as s:
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"
        d.send_signal(signal.SIGTERM)
        # The client never ends its session: the daemon closes it after
        # shutdown_timeout and still exits 0.
        got, _ = recv_until_closed(s, timeout=10)
        assert got == b""
    assert d.wait_exit(timeout=10) == 0, d.log()


def test_sigint_exits_promptly(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"int": pool("int", [be], min_idle=2)}, daemon={"shutdown_timeout": "30s"})
    be.wait_open(2)
    path = d.socket_path("int")
    with connect_unix(path) as s:
        s.sendall(b"hi")
        assert recv_exact(s, 2) == b"hi"
        t0 = time.monotonic()
        d.send_signal(signal.SIGINT)
        # An active session does not hold SIGINT up (shutdown_timeout is 30 s).
        assert d.wait_exit(timeout=5) == 0, d.log()
        assert time.monotonic() - t0 < 5
        got, _ = recv_until_closed(s, timeout=5)
    assert not path.exists(), "socket file left behind"
    # The backend connections were closed too.
    be.wait_open(0)


def test_notify_ready_then_stopping(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"nfy": pool("nfy", [be], min_idle=2)})
    # READY=1 means the listeners are bound: the socket answers already.
    assert d.socket_path("nfy").exists()
    be.wait_open(2)
    wait_until(lambda: any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in d.collect_notify()),
               what="a STATUS= message")
    assert d.stop(signal.SIGTERM) == 0, d.log()
    notify = d.collect_notify(0.2)
    assert d.notify_has("READY=1") and d.notify_has("STOPPING=1"), notify
    assert _index(notify, "READY=1") < _index(notify, "STOPPING=1"), notify
    assert sum("READY=1" in m.split("\n") for m in notify) == 1, notify


def test_socket_file_removed_on_exit(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"a": pool("a", [be], min_idle=1), "b": pool("b", [be], min_idle=1)})
    paths = [d.socket_path("a"), d.socket_path("b")]
    for p in paths:
        assert p.exists()
    assert d.stop(signal.SIGTERM) == 0, d.log()
    for p in paths:
        assert not p.exists(), f"{p} left behind"


def test_stale_socket_file_replaced(start_backend, start_daemon, pool, sockdir):
    be = start_backend()
    path = sockdir / "stale.sock"
    # A leftover socket file that nobody listens on (a crashed daemon's).
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()
    assert path.exists()

    d = start_daemon(pools={"stale": pool("stale", [be], min_idle=1)})
    be.wait_open(1)
    with connect_unix(path) as s:
        s.sendall(b"fresh")
        assert recv_exact(s, 5) == b"fresh"
    assert d.stop(signal.SIGTERM) == 0, d.log()


def test_live_socket_path_refused(start_backend, start_daemon, pool, sockdir):
    be = start_backend()
    path = sockdir / "taken.sock"
    owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner.bind(str(path))
    owner.listen(4)
    try:
        d = start_daemon(pools={"taken": pool("taken", [be], min_idle=1)}, expect_ready=False)
        rc = d.wait_exit(timeout=10)
        assert rc == 1, f"exit {rc}\n{d.log()}"
        assert str(path) in d.log(), d.log()
        assert not d.notify_has("READY=1")
        # The live owner keeps its socket: the file is still there and answers.
        assert path.exists()
        with connect_unix(path, timeout=2):
            pass
    finally:
        owner.close()


def test_journal_stream_gets_priority_prefixes(start_backend, start_daemon, pool):
    """Under systemd ($JOURNAL_STREAM names stderr) each line carries a <N>
    syslog priority and no timestamp; a $JOURNAL_STREAM naming another
    stream (inherited from a parent) changes nothing."""
    be = start_backend()
    jd = start_daemon(pools={"j": pool("j", [be.addr], min_idle=1)}, journal=True)
    jd.wait_log(r"pool=j: warm")
    assert jd.stop() == 0
    lines = [l for l in jd.log().splitlines() if l]
    assert lines, "no log lines"
    for line in lines:
        assert re.match(r"<[0-7]>\S", line), f"line without a priority prefix: {line!r}"
    assert any(l.startswith("<6>pool=j: listening on ") for l in lines)
    assert not any(re.match(r"<\d>\d{4}-\d\d-\d\d ", l) for l in lines)

    pd = start_daemon(pools={"k": pool("k", [be.addr], min_idle=1)}, journal="1:2")
    pd.wait_log(r"pool=k: warm")
    assert pd.stop() == 0
    lines = [l for l in pd.log().splitlines() if l]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+: ", l) for l in lines), lines


def test_debug_log_traces_every_state_change_births_and_deaths_included(start_backend, start_daemon, pool):
    """Every connection and session changes state in one function, which logs
    `old -> new` at debug with the object's context: one session's
    connection and client can be followed from birth to death, and every
    connection born is seen closed by the time the daemon exits."""
    be = start_backend()
    d = start_daemon(pools={"t": pool("t", [be], min_idle=2, max_connections=8)},
                     daemon={"log_level": "debug"})
    be.wait_open(2)
    assert echo_once(d.socket_path("t"), b"trace") == b"trace"
    start = d.wait_log(r"pool=t backend=\S+ conn=\d+ client=\d+: session start")[0]
    conn, client = re.search(r"conn=(\d+) client=(\d+)", start).groups()
    d.wait_log(rf"pool=t client={client}: relaying -> closed")
    assert d.stop() == 0
    log = d.log()

    def in_order(prefix, steps):
        pos = 0
        for step in steps:
            m = re.compile(rf"{prefix}: {step}$", re.M).search(log, pos)
            assert m, f"no '{prefix}: {step}' after offset {pos}\n{log}"
            pos = m.end()

    in_order(rf"pool=t backend={re.escape(be.addr)} conn={conn}",
             ["new -> connecting", "connecting -> idle", "idle -> active", "active -> closed"])
    in_order(rf"pool=t client={client}", ["new -> waiting", "waiting -> relaying", "relaying -> closed"])
    born = set(re.findall(r"conn=(\d+): new -> connecting$", log, re.M))
    died = set(re.findall(r"conn=(\d+): \w+ -> closed$", log, re.M))
    assert len(born) >= 3 and born == died, (born, died)


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
    """SIGTERM while three sessions stream: the daemon says STOPPING=1 and
    keeps running; each session keeps streaming for a while (exact echo),
    ends by itself, and the daemon then exits 0 before shutdown_timeout,
    removing its socket file; a client arriving meanwhile gets nothing.
    (It absorbed test_sigterm_drains_active_session, which checked the same
    with one session.)"""
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
    wait_until(lambda: d.notify_has("STOPPING=1"), what="STOPPING=1 after SIGTERM")
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
        assert d.proc.poll() is None, f"exited before session {i} ended\n{d.log()[-3000:]}"
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
    assert not path.exists(), "socket file left behind"
    wait_until(lambda: len([c for c in be.closes() if c.bytes_in]) == n, what="the backend connections closed")
    assert sorted((c.bytes_in, c.crc32) for c in be.closes() if c.bytes_in) == sorted(results)
    print(f"drained {n} streaming sessions ({sum(r[0] for r in results)} bytes) in {took:.1f}s")
