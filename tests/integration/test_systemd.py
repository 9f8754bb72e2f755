"""systemd integration without PID 1: the sd_notify messages a test-owned
NOTIFY_SOCKET receives over a lifetime, the watchdog keep-alives, and socket
activation through systemd-socket-activate(1) (which passes LISTEN_FDS,
LISTEN_PID and LISTEN_FDNAMES and execs the daemon in its own process).

systemd-socket-activate execs its command only at the first connection
attempt, and hands on only TERM, PATH, USER, HOME and what -E names: the
tests connect a client first, and pass the daemon's whole environment
(NOTIFY_SOCKET, sanitizer options, ...) with -E. Under `make valgrind` it
execs valgrind, which keeps the pid LISTEN_PID names.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from wp import (
    _SCRUB_ENV,
    START_TIMEOUT,
    STOP_TIMEOUT,
    VALGRIND,
    WARMPOOLD,
    Daemon,
    admin,
    connect_unix,
    echo_once,
    make_config,
    pool_row,
    recv_exact,
    recv_until_closed,
    wait_until,
)

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
KNOWN_KEYS = {"READY", "STATUS", "STOPPING", "WATCHDOG", "RELOADING", "MONOTONIC_USEC"}


def unix_listening():
    """Paths of listening Unix sockets (__SO_ACCEPTCON in /proc/net/unix's Flags)."""
    found = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and int(fields[3], 16) & 0x10000:
                found.add(fields[7])
    return found


def lines(msg):
    return msg.split("\n")


def index_of(notify, line, start=0):
    return next((i for i in range(start, len(notify)) if line in lines(notify[i])), None)


def status_of(msg):
    return next((ln[len("STATUS="):] for ln in lines(msg) if ln.startswith("STATUS=")), None)


class SdDaemon(Daemon):
    """A Daemon started with extra environment, optionally through
    systemd-socket-activate with listen addresses and fd names."""

    def start_sd(self, env=None, listen=(), fdnames=(), datagram=False, expect_ready=True):
        self._nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._nsock.bind(str(self.notify_path))
        full_env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
        full_env["NOTIFY_SOCKET"] = str(self.notify_path)
        full_env.update(env or {})
        argv = [*VALGRIND, WARMPOOLD, "-c", self.config_path]
        if listen:
            pre = [SOCKET_ACTIVATE]
            for addr in listen:
                pre += ["-l", str(addr)]
            if datagram:
                pre.append("--datagram")
            if fdnames:
                pre.append("--fdname=" + ":".join(fdnames))
            for key, val in sorted(full_env.items()):
                pre += ["-E", f"{key}={val}"]
            argv = pre + argv
            # Its own info lines ("Execing valgrind ... --error-markers=...")
            # share the daemon's stderr and would look like a valgrind report.
            full_env = {**full_env, "SYSTEMD_LOG_LEVEL": "warning"}
        self.proc = self.procs.spawn(self.name, argv, self.stderr_path, stdout_path=self.stdout_path, env=full_env)
        if expect_ready:
            self.wait_ready()
        return self

    def wait_listening(self, paths, datagram=False):
        """systemd-socket-activate listens on every Unix path. The file exists
        from bind(), a moment before listen(): a connect in between is refused,
        so wait for the kernel's listening flag in /proc/net/unix (a datagram
        socket has none: it takes datagrams from bind() on)."""

        def bound():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log()}")
            if datagram:
                return all(os.path.exists(p) for p in paths)
            return all(str(p) in unix_listening() for p in paths)

        wait_until(bound, START_TIMEOUT, what=f"systemd-socket-activate to listen on {paths}")


@pytest.fixture
def sd_daemon(procs, tmp_path, sockdir):
    """sd_daemon(pools, daemon=None, **start_sd kwargs) -> SdDaemon. Each
    daemon gets its own admin socket in sockdir, never /run/warmpool's."""
    made = []

    def start(pools, daemon=None, **kw):
        daemon = {"admin_socket": str(sockdir / f"admin{len(made) + 1}.sock"), **(daemon or {})}
        d = SdDaemon(procs, tmp_path, sockdir, make_config(pools, daemon), name=f"sd{len(made) + 1}")
        d.admin_path = Path(daemon["admin_socket"]) if isinstance(daemon["admin_socket"], str) else None
        made.append(d)
        return d.start_sd(**kw)

    yield start
    for d in made:
        d.close()


# ---------------------------------------------------------------------------
# notifications


def test_notify_order_over_a_lifetime(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"life": pool("life", [be], min_idle=2)})
    be.wait_open(2)
    # The status timer reports the warm floor (at most once a second).
    wait_until(lambda: any((status_of(m) or "").startswith("life: 2 idle") for m in d.collect_notify()),
               what="STATUS= with the pool's 2 idle connections")
    assert d.stop(signal.SIGTERM) == 0, d.log()
    notify = d.collect_notify(0.2)

    # Every datagram is KEY=VALUE lines of the protocol.
    for m in notify:
        for ln in lines(m):
            assert ln.split("=", 1)[0] in KNOWN_KEYS and "=" in ln, notify
    # READY=1 comes first, once, carrying the status in the same datagram.
    assert "READY=1" in lines(notify[0]), notify
    assert status_of(notify[0]) is not None and status_of(notify[0]).startswith("life: "), notify
    assert sum("READY=1" in lines(m) for m in notify) == 1, notify
    # Then STATUS= updates, then STOPPING=1 with a "stopping:" status.
    stop = index_of(notify, "STOPPING=1")
    assert stop is not None, notify
    warm = next(i for i, m in enumerate(notify) if (status_of(m) or "").startswith("life: 2 idle"))
    assert 0 < warm < stop, notify
    assert all(status_of(m) is not None for m in notify[1:stop]), notify
    assert (status_of(notify[stop]) or "").startswith("stopping: life: "), notify
    # After STOPPING=1 only status updates may follow; no watchdog without WATCHDOG_USEC.
    assert all(lines(m)[0].startswith("STATUS=") for m in notify[stop + 1:]), notify
    assert not any("WATCHDOG=1" in lines(m) for m in notify), notify


def test_status_line_is_one_line(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"a": pool("a", [be], min_idle=1), "b": pool("b", [be], min_idle=1)})
    be.wait_open(2)
    assert d.stop(signal.SIGTERM) == 0, d.log()
    for m in d.collect_notify(0.2):
        st = status_of(m)
        if st is not None:
            assert "a: " in st and "; b: " in st, m


def _fill_datagram_queue(path, limit=10000):
    """Send junk datagrams to the Unix datagram socket at `path` until its
    receive queue is full (net.unix.max_dgram_qlen); returns how many."""
    junk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        for n in range(limit):
            try:
                junk.sendto(b"JUNK=1", socket.MSG_DONTWAIT, str(path))
            except BlockingIOError:
                return n
        raise AssertionError(f"{path}: the queue took {limit} datagrams without filling")
    finally:
        junk.close()


def test_notify_never_blocks_the_loop(start_backend, sd_daemon, pool):
    """A manager that stops reading NOTIFY_SOCKET (PID 1 busy in a
    daemon-reload) must not freeze the daemon: with the socket's queue full,
    clients are served, admin commands answered and a reload applied; once the
    reader drains the queue, RELOADING=1, READY=1 and WATCHDOG=1 arrive, in
    order, and STATUS= is not repeated stale."""
    be = start_backend()
    # WATCHDOG=1 every 0.1 s: the old daemon blocked at the first one after the queue filled.
    d = sd_daemon({"nb": pool("nb", [be], min_idle=2)}, env={"WATCHDOG_USEC": "200000"})
    d.wait_log(r"watchdog: every 0\.1s")
    d.collect_notify()
    seen = len(d.notify)
    junk = _fill_datagram_queue(d.notify_path)
    assert junk > 0

    # A reload while nobody reads: RELOADING=1 and READY=1 must wait, not block.
    d.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded .*: 1 pool \(")
    # Watchdog pings fall due every 0.1 s while the loop serves.
    for i in range(40):
        assert pool_row(d, "nb")["idle"] >= 0
        assert echo_once(d.socket_path("nb"), b"ping %d" % i) == b"ping %d" % i

    # Now the reader drains: the junk first, then what the daemon kept.
    def drained():
        got = d.collect_notify()
        if sum(m == "JUNK=1" for m in got[seen:]) < junk:
            return None
        last_junk = max(i for i, m in enumerate(got) if m == "JUNK=1")
        kept = got[last_junk + 1:]
        r = index_of(kept, "RELOADING=1")
        if r is None or index_of(kept, "READY=1", r) is None or index_of(kept, "WATCHDOG=1") is None:
            return None
        return kept

    kept = wait_until(drained, what="RELOADING=1, then READY=1, and WATCHDOG=1 once the reader drained")
    reloading = index_of(kept, "RELOADING=1")
    assert sum("RELOADING=1" in lines(m) for m in kept) == 1, kept
    # A STATUS=-only message that waited is superseded by the newer STATUS= of RELOADING=1.
    assert not any(lines(m)[0].startswith("STATUS=") for m in kept[:reloading]), kept
    assert d.stop(signal.SIGTERM) == 0, d.log()
    assert index_of(d.collect_notify(0.2), "STOPPING=1", seen) is not None, d.notify


def test_a_journal_that_stops_reading_never_blocks_the_loop(procs, tmp_path, sockdir, start_backend, pool):
    """stderr is the journal's stream socket (as under systemd) and journald
    stops reading: log lines that do not fit are dropped and counted, never
    waited for; clients and the admin socket are served throughout, and once
    the reader drains, a "lines dropped" line says how many were lost."""
    be = start_backend()
    adm = sockdir / "adminj.sock"
    conf = tmp_path / "journal.yaml"
    conf.write_text(make_config({"j": pool("j", [be], min_idle=2)},
                                {"admin_socket": str(adm), "log_level": "debug"}))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # A small send buffer fills after a few lines (the kernel's minimum is about 4.5 KiB).
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    st = os.fstat(theirs.fileno())
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    saved = tmp_path / "journal.stderr"
    saved.write_bytes(b"")
    p = subprocess.Popen([str(a) for a in (*VALGRIND, WARMPOOLD, "-c", conf)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=theirs.fileno(), env=env, close_fds=True)
    procs.items.append((p, "warmpoold-journal", saved))  # stopped at teardown; its stderr scanned there
    theirs.close()
    got = bytearray()
    try:
        wait_until(lambda: os.path.exists(adm) and _answers(adm), timeout=START_TIMEOUT * 3,
                   what="the admin socket to answer")
        # Every session logs debug lines: far more than the socket holds.
        for i in range(150):
            assert echo_once(sockdir / "j.sock", b"j %03d" % i) == b"j %03d" % i
            if i % 10 == 0:
                assert pool_row(adm, "j")["name"] == "j"
        assert p.poll() is None
        # The reader drains; the next line logged reports the loss.
        ours.settimeout(0.2)

        def reported():
            try:
                while True:
                    chunk = ours.recv(1 << 16)
                    if not chunk:
                        break
                    got.extend(chunk)
            except socket.timeout:
                pass
            echo_once(sockdir / "j.sock", b"again")  # logs again
            return re.search(rb"^<4>log: (\d+) lines dropped: stderr was not being read$", bytes(got), re.M)

        m = wait_until(reported, what="the 'lines dropped' line")
        assert int(m.group(1)) > 0
        # Every line that did arrive is whole: a "<N>" prefix, no line cut into another.
        for ln in bytes(got).split(b"\n")[:-1]:
            assert re.match(rb"^<\d>", ln), ln
        p.send_signal(signal.SIGTERM)
        ours.settimeout(STOP_TIMEOUT)
        while True:
            chunk = ours.recv(1 << 16)
            if not chunk:
                break
            got.extend(chunk)
        assert p.wait(STOP_TIMEOUT) == 0
    finally:
        saved.write_bytes(bytes(got))
        ours.close()


def _answers(adm):
    try:
        return admin(adm, "version")
    except (AssertionError, OSError):
        return None


# ---------------------------------------------------------------------------
# watchdog


def test_watchdog_keepalives_at_half_watchdog_usec(start_backend, sd_daemon, pool):
    be = start_backend()
    d = sd_daemon({"wd": pool("wd", [be], min_idle=1)}, env={"WATCHDOG_USEC": "200000"})
    d.wait_log(r"watchdog: every 0\.1s")
    want = 5
    wait_until(lambda: sum("WATCHDOG=1" in lines(m) for m in d.collect_notify()) >= want,
               what=f"{want} WATCHDOG=1 messages")
    # The loop keeps serving while it pings.
    assert echo_once(d.socket_path("wd"), b"ping") == b"ping"
    assert d.stop(signal.SIGTERM) == 0, d.log()
    notify = d.collect_notify(0.2)
    pings = [i for i, m in enumerate(notify) if "WATCHDOG=1" in lines(m)]
    assert len(pings) >= want, notify
    assert all(notify[i] == "WATCHDOG=1" for i in pings), notify
    assert min(pings) > index_of(notify, "READY=1"), notify


@pytest.mark.parametrize(
    "env,why",
    [
        ({}, None),
        # sd_watchdog_enabled(): the variables are for another process.
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, r"watchdog: invalid \$WATCHDOG_USEC"),
    ],
    ids=["unset", "other-pid", "invalid"],
)
def test_no_watchdog_keepalives_unless_asked(start_backend, sd_daemon, pool, env, why):
    be = start_backend()
    d = sd_daemon({"nowd": pool("nowd", [be], min_idle=2)}, env=env)
    be.wait_open(2)
    # The status timer's report of the warm floor comes ≥ 1 s after READY=1:
    # ten watchdog intervals of 0.1 s had time to pass.
    wait_until(lambda: any((status_of(m) or "").startswith("nowd: 2 idle") for m in d.collect_notify()),
               what="STATUS= with 2 idle connections")
    assert echo_once(d.socket_path("nowd"), b"x") == b"x"
    assert not any("WATCHDOG=1" in lines(m) for m in d.collect_notify()), d.notify
    assert "watchdog: every" not in d.log(), d.log()
    if why:
        d.wait_log(why)
    assert d.stop(signal.SIGTERM) == 0, d.log()


# ---------------------------------------------------------------------------
# socket activation


def test_socket_activation_adopts_the_pools_listen_path(start_backend, sd_daemon, pool, sockdir):
    be = start_backend()
    path = sockdir / "act.sock"
    d = sd_daemon({"act": pool("act", [be], min_idle=1, listen=str(path))},
                  listen=[path], fdnames=["act"], expect_ready=False)
    d.wait_listening([path])
    before = os.stat(path)
    # systemd-socket-activate execs the daemon at the first connection; the
    # daemon accepts this very connection from the socket it was passed.
    with connect_unix(path) as s:
        s.sendall(b"first client")
        d.wait_ready()
        assert recv_exact(s, 12) == b"first client"
    assert echo_once(path, b"second") == b"second"

    log = d.log()
    assert f"pool=act: listening on {path} (passed by systemd)" in log, log
    # Not bound twice: no bind of its own, no stale-file handling, same file,
    # its mode left as the socket's creator set it (not the pool's 0660).
    assert f"listening on {path} (mode" not in log, log
    assert "stale socket" not in log, log
    after = os.stat(path)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    assert d.stop(signal.SIGTERM) == 0, d.log()
    # We did not create the file, so we leave it.
    assert path.exists(), "a passed socket's file was removed"


def test_socket_activation_extra_listener(start_backend, sd_daemon, pool, sockdir):
    """A passed socket named after a pool at a path the pool does not list
    serves that pool as well, next to the path it binds itself."""
    be = start_backend()
    own = sockdir / "own.sock"
    extra = sockdir / "extra.sock"
    d = sd_daemon({"both": pool("both", [be], min_idle=1, listen=str(own))},
                  listen=[extra], fdnames=["both"], expect_ready=False)
    d.wait_listening([extra])
    with connect_unix(extra) as s:
        s.sendall(b"via systemd")
        d.wait_ready()
        assert recv_exact(s, 11) == b"via systemd"
    assert echo_once(own, b"via our bind") == b"via our bind"
    assert echo_once(extra, b"again") == b"again"
    log = d.log()
    assert f"pool=both: listening on {extra} (passed by systemd)" in log, log
    assert f"pool=both: listening on {own} (mode 0660)" in log, log
    assert d.stop(signal.SIGTERM) == 0, d.log()
    assert not own.exists(), "our own socket file left behind"
    assert extra.exists(), "a passed socket's file was removed"


def test_socket_activation_several_pools_and_admin(start_backend, sd_daemon, pool, sockdir):
    be = start_backend()
    p1, p2, adm = sockdir / "p1.sock", sockdir / "p2.sock", sockdir / "ctl.sock"
    d = sd_daemon({"p1": pool("p1", [be], min_idle=1, listen=str(p1)),
                   "p2": pool("p2", [be], min_idle=1, listen=str(p2))},
                  listen=[p1, p2, adm], fdnames=["p1", "p2", "admin"], expect_ready=False)
    d.wait_listening([p1, p2, adm])
    with connect_unix(p2) as s:
        s.sendall(b"two")
        d.wait_ready()  # so "admin" was claimed: an unclaimed fd fails startup
        assert recv_exact(s, 3) == b"two"
    assert echo_once(p1, b"one") == b"one"
    log = d.log()
    for path, name in ((p1, "p1"), (p2, "p2")):
        assert f"pool={name}: listening on {path} (passed by systemd)" in log, log
    # The admin socket answers on the passed socket.
    with connect_unix(adm) as c:
        c.sendall(b"version\n")
        c.settimeout(START_TIMEOUT)
        assert c.recv(4096), "no answer on the passed admin socket"
    assert d.stop(signal.SIGTERM) == 0, d.log()


def _fails_to_start(d, trigger):
    """Trigger the exec, then expect exit 1 without READY=1; returns the log."""
    trigger()
    rc = d.wait_exit()
    assert rc == 1, f"exit {rc}\n{d.log()}"
    assert not any("READY=1" in lines(m) for m in d.collect_notify()), d.notify
    return d.log()


def _connect_and_drop(path):
    def trigger():
        with connect_unix(path) as s:
            s.sendall(b"x")
            try:
                recv_until_closed(s)
            except AssertionError:
                pass

    return trigger


def test_socket_activation_unknown_name_fails(start_backend, sd_daemon, pool, sockdir):
    be = start_backend()
    path = sockdir / "typo.sock"
    d = sd_daemon({"redis": pool("redis", [be], min_idle=1)},
                  listen=[path], fdnames=["redsi"], expect_ready=False)
    d.wait_listening([path])
    log = _fails_to_start(d, _connect_and_drop(path))
    assert f'socket activation: fd 3 named "redsi" ({path}) matches no pool' in log, log
    # The pool's own socket was bound and is removed again on the way out.
    assert not d.socket_path("redis").exists()


def test_socket_activation_pool_path_under_another_name_fails(start_backend, sd_daemon, pool, sockdir):
    """A pool's listen path passed under another pool's name would be served
    by the wrong pool: an error naming both, not a second bind."""
    be = start_backend()
    p1 = sockdir / "one.sock"
    d = sd_daemon({"one": pool("one", [be], min_idle=1, listen=str(p1)),
                   "two": pool("two", [be], min_idle=1)},
                  listen=[p1], fdnames=["two"], expect_ready=False)
    d.wait_listening([p1])
    log = _fails_to_start(d, _connect_and_drop(p1))
    assert f'{p1}: systemd passed this socket as fd 3 named "two", but it is a listen path of pool "one"' in log, log


def test_socket_activation_rejects_a_datagram_socket(start_backend, sd_daemon, pool, sockdir):
    be = start_backend()
    path = sockdir / "dgram.sock"
    d = sd_daemon({"dg": pool("dg", [be], min_idle=1)},
                  listen=[path], fdnames=["dg"], datagram=True, expect_ready=False)
    d.wait_listening([path], datagram=True)

    def trigger():
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"wake up", str(path))

    log = _fails_to_start(d, trigger)
    assert 'socket activation: fd 3 named "dg" is not a listening stream socket' in log, log


def test_socket_activation_rejects_a_tcp_socket_for_a_pool(start_backend, sd_daemon, pool):
    be = start_backend()
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = sd_daemon({"tcp": pool("tcp", [be], min_idle=1)},
                  listen=[f"127.0.0.1:{port}"], fdnames=["tcp"], expect_ready=False)

    def connect():
        if d.proc.poll() is not None:
            raise AssertionError(f"exited with {d.proc.returncode}:\n{d.log()}")
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=START_TIMEOUT)
        except ConnectionRefusedError:
            return None  # systemd-socket-activate does not listen yet

    def trigger():
        with wait_until(connect, START_TIMEOUT, what="systemd-socket-activate to listen") as s:
            try:
                recv_until_closed(s)
            except AssertionError:
                pass

    log = _fails_to_start(d, trigger)
    assert f'socket activation: fd 3 named "tcp" (127.0.0.1:{port}) is not a Unix socket' in log, log


def test_socket_activation_survives_reload(start_backend, sd_daemon, pool, sockdir):
    """Passed sockets stay with their pool across reloads: when its settings
    change in place, and when a changed listen: list makes a new pool object
    take over (a passed socket at no listen path moves to it too)."""
    be = start_backend()
    own, extra, own2 = sockdir / "own.sock", sockdir / "extra.sock", sockdir / "own2.sock"
    pools = {"rl": pool("rl", [be], min_idle=1, listen=str(own))}
    d = sd_daemon(pools, listen=[extra], fdnames=["rl"], expect_ready=False)
    d.wait_listening([extra])
    with connect_unix(extra) as s:
        s.sendall(b"before")
        d.wait_ready()
        assert recv_exact(s, 6) == b"before"

    steps = (
        ("in place", pool("rl", [be], min_idle=2, listen=str(own)), r"pool=rl: settings changed"),
        ("replaced", pool("rl", [be], min_idle=2, listen=[str(own), str(own2)]), r"pool=rl: sockets or backends"),
    )
    for n, (what, cfg, logged) in enumerate(steps, start=1):
        daemon = {"admin_socket": str(sockdir / "admin1.sock")}
        d.config_path.write_text(make_config({"rl": cfg}, daemon))
        d.send_signal(signal.SIGHUP)
        d.wait_log(logged)
        wait_until(lambda: sum("READY=1" in lines(m) for m in d.collect_notify()) == 1 + n,
                   what=f"READY=1 after reload {n} ({what})")
        assert echo_once(extra, f"extra after {what}".encode()) == f"extra after {what}".encode(), d.log()
        assert echo_once(own, b"own") == b"own", d.log()
    assert echo_once(own2, b"own2") == b"own2"
    # Each reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    notify = d.collect_notify()
    starts = [i for i, m in enumerate(notify) if "RELOADING=1" in lines(m)]
    assert len(starts) == 2, notify
    for i in starts:
        assert any(ln.startswith("MONOTONIC_USEC=") and ln[15:].isdigit() for ln in lines(notify[i])), notify
        assert index_of(notify, "READY=1", i + 1) is not None, notify
    assert d.stop(signal.SIGTERM) == 0, d.log()
    assert extra.exists() and not own.exists() and not own2.exists()
