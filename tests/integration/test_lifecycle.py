"""Process lifecycle: graceful drain on SIGTERM, prompt SIGINT, sd_notify
messages, socket files created, replaced when stale, refused when live, and
removed on exit."""

import re
import signal
import socket
import time

from conftest import connect_unix, echo_once, recv_exact, recv_until_closed, wait_until


def _index(notify, line):
    return next(i for i, m in enumerate(notify) if line in m.split("\n"))


def test_sigterm_drains_active_session(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"drain": pool("drain", [be], min_idle=2)}, daemon={"shutdown_timeout": "10s"})
    be.wait_open(2)
    path = d.socket_path("drain")

    with connect_unix(path) as s:
        s.sendall(b"before")
        assert recv_exact(s, 6) == b"before"

        d.send_signal(signal.SIGTERM)
        wait_until(lambda: d.notify_has("STOPPING=1"), what="STOPPING=1 after SIGTERM")
        # Draining: the session in progress still works ...
        s.sendall(b"during the drain")
        assert recv_exact(s, 16) == b"during the drain"
        assert d.proc.poll() is None, "exited before the active session ended"

        # ... while a new client gets no session.
        try:
            late = connect_unix(path, timeout=2)
        except (ConnectionRefusedError, FileNotFoundError):
            late = None
        if late is not None:
            with late:
                try:
                    late.sendall(b"late")
                    late.settimeout(1.0)
                    data = late.recv(100)
                except (socket.timeout, ConnectionResetError, BrokenPipeError):
                    data = b""
                assert data == b"", "a new client was served during the drain"

        s.sendall(b"last")
        assert recv_exact(s, 4) == b"last"
    # The client ended the session: the daemon finishes well before
    # shutdown_timeout (10 s), exits 0 and says it drained.
    assert d.wait_exit(timeout=8) == 0, d.log()
    assert "drain" in d.log().lower(), d.log()
    assert not path.exists(), "socket file left behind"


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
