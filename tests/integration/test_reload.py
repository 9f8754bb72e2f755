"""Live reload (SIGHUP and `warmpoolctl reload`): a new configuration
applied as a diff. An unchanged pool keeps its warm connections (counted at
its backend) and a session streaming through it; a changed pool applies its
new floor in place, keeping its connections; a removed pool stops listening;
an added one warms and serves; a replaced pool (new backend list) keeps its
socket path answering throughout while its old sessions finish; a broken
file changes nothing and is reported. systemd hears RELOADING=1 (with
MONOTONIC_USEC=) and then READY=1."""

import os
import random
import re
import select
import signal
import threading
import time
import zlib

import pytest

from wp import (
    IO_TIMEOUT,
    admin,
    admin_json,
    connect_unix,
    echo_once,
    make_config,
    pool_row,
    recv_exact,
    wait_until,
    warmpoolctl,
)


class Streamer(threading.Thread):
    """One client streaming pseudo-random chunks through a pool and reading
    the echo concurrently, until stop() (then it sends nothing more and
    reads the rest). At most `window` bytes are in flight, so the stream
    keeps going for as long as the test wants without filling buffers."""

    def __init__(self, path, seed=7, chunk=4096, window=256 << 10, pause=0.002, limit=120.0):
        super().__init__(daemon=True)
        self.path = path
        self.rng = random.Random(seed)
        self.chunk = chunk
        self.window = window
        self.pause = pause
        self.limit = limit
        self.sent = bytearray()
        self.got = bytearray()
        self.error = None
        self.started_ev = threading.Event()
        self._stop_ev = threading.Event()

    def run(self):
        try:
            self._run()
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e
        finally:
            self.started_ev.set()

    def _run(self):
        deadline = time.monotonic() + self.limit
        with connect_unix(self.path) as s:
            s.setblocking(False)
            pending = b""
            while True:
                if time.monotonic() > deadline:
                    raise AssertionError(f"stream still running after {self.limit:.0f}s "
                                         f"(sent {len(self.sent)}, got {len(self.got)})")
                stopping = self._stop_ev.is_set()
                if stopping and not pending and len(self.got) == len(self.sent):
                    return
                want_write = not stopping and len(self.sent) - len(self.got) < self.window
                if want_write and not pending:
                    pending = self.rng.randbytes(self.chunk)
                r, w, _ = select.select([s], [s] if pending else [], [], 0.2)
                if r:
                    try:
                        data = s.recv(1 << 16)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        raise AssertionError(f"EOF from the pool after {len(self.got)} of {len(self.sent)} bytes")
                    if data:
                        self.got += data
                        if len(self.got) >= 4 * self.chunk:
                            self.started_ev.set()
                if w and pending:
                    try:
                        n = s.send(pending)
                    except BlockingIOError:
                        n = 0
                    self.sent += pending[:n]
                    pending = pending[n:]
                    if not pending and self.pause:
                        time.sleep(self.pause)

    def wait_started(self, timeout=IO_TIMEOUT):
        assert self.started_ev.wait(timeout), "the stream did not get going"
        assert self.error is None, self.error

    def finish(self, timeout=60.0):
        """Stop sending, read the rest; returns (sent, got)."""
        self._stop_ev.set()
        self.join(timeout)
        assert not self.is_alive(), f"stream did not finish within {timeout:.0f}s"
        if self.error is not None:
            raise self.error
        return bytes(self.sent), bytes(self.got)


def notify_lines(msg):
    return msg.split("\n")


def reload_notifications(d, start, timeout=IO_TIMEOUT):
    """Wait for the READY=1 that ends the reload after index `start`; returns
    (index of RELOADING=1, index of READY=1, the datagrams)."""

    def done():
        msgs = d.collect_notify()
        i = next((k for k in range(start, len(msgs)) if "RELOADING=1" in notify_lines(msgs[k])), None)
        if i is None:
            return None
        j = next((k for k in range(i + 1, len(msgs)) if "READY=1" in notify_lines(msgs[k])), None)
        return (i, j, list(msgs)) if j is not None else None

    return wait_until(done, timeout, what="RELOADING=1 and then READY=1")


def pools_of(d):
    return [p["name"] for p in admin_json(d, "show pools")["pools"]]


def rewrite(d, pools, daemon=None):
    """Write a new config for daemon d (keeping its admin socket)."""
    tmp = d.config_path.with_suffix(".tmp")
    tmp.write_text(make_config(pools, {"admin_socket": str(d.admin_path), **(daemon or {})}))
    os.replace(tmp, d.config_path)


def open_ids(be):
    closed = {c.id for c in be.closes()}
    return {a.id for a in be.accepts() if a.id not in closed}


@pytest.mark.parametrize("how", ["sighup", "warmpoolctl"])
def test_reload_unchanged_changed_removed_added_while_streaming(start_backend, start_daemon, pool, how):
    ba, bb, bc, bd = start_backend(), start_backend(), start_backend(), start_backend()
    pa = pool("A", [ba], min_idle=2)
    pb = pool("B", [bb], min_idle=2, queue_timeout="2s")
    pc = pool("C", [bc], min_idle=2)
    d = start_daemon(pools={"A": pa, "B": pb, "C": pc})
    for be in (ba, bb, bc):
        be.wait_open(2)
    wait_until(lambda: all(pool_row(d, n)["idle"] == 2 for n in "ABC"), what="every pool warm")

    stream = Streamer(d.socket_path("A"))
    stream.start()
    try:
        stream.wait_started()
        # The stream took one warm connection; the refill replaced it.
        ba.wait_open(3)
        wait_until(lambda: pool_row(d, "A")["idle"] == 2 and pool_row(d, "A")["active"] == 1,
                   what="A: 2 idle and the stream active")
        a_accepts = len(ba.accepts())
        a_open = open_ids(ba)
        b_accepts = len(bb.accepts())
        b_open = open_ids(bb)
        assert len(b_open) == 2
        n_before = len(d.collect_notify())
        sent_before = len(stream.sent)

        pb_new = dict(pb, min_idle=4, queue_timeout="3s")
        pd = pool("D", [bd], min_idle=2)
        rewrite(d, {"A": pa, "B": pb_new, "D": pd})
        summary = "3 pools (1 unchanged, 1 changed in place, 0 replaced, 1 added, 1 removed)"
        if how == "sighup":
            d.send_signal(signal.SIGHUP)
            d.wait_log(r"SIGHUP: reloading")
        else:
            r = warmpoolctl(d, "reload")
            assert r.returncode == 0, r
            assert r.stdout == f"reloaded {d.config_path}: {summary}\n", r.stdout
        d.wait_log(rf"reloaded {re.escape(str(d.config_path))}: {re.escape(summary)}")
        i, j, msgs = reload_notifications(d, n_before)
        assert i < j
        reloading = notify_lines(msgs[i])
        usec = [ln for ln in reloading if ln.startswith("MONOTONIC_USEC=")]
        assert len(usec) == 1, msgs[i]
        # CLOCK_MONOTONIC, in microseconds, taken during this test.
        assert abs(int(usec[0].split("=", 1)[1]) - time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6) < 120e6
        assert not any("READY=1" in notify_lines(m) for m in msgs[n_before:i]), msgs[n_before:]

        d.wait_log(r"pool=B: settings changed, applied in place")
        d.wait_log(r"pool=D: added")
        d.wait_log(r"pool=C: removed by reload; draining 0 sessions")

        # B: the new floor, reached by adding exactly 2; its old 2 kept.
        bb.wait_open(4)
        wait_until(lambda: pool_row(d, "B")["idle"] == 4, what="B: 4 idle")
        assert len(bb.accepts()) == b_accepts + 2
        assert b_open <= open_ids(bb), "B's warm connections were re-opened"
        row = pool_row(d, "B")
        assert (row["min_idle"], row["idle"]) == (4, 4)
        # C: no socket file, no listener, its connections closed.
        wait_until(lambda: not os.path.exists(d.socket_path("C")), what="C's socket file removed")
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            connect_unix(d.socket_path("C")).close()
        bc.wait_open(0)
        # D: warm and serving.
        bd.wait_open(2)
        assert echo_once(d.socket_path("D"), b"hello D") == b"hello D"
        assert pools_of(d) == ["A", "B", "D"]

        # A: left alone, not one new connection; its warm ones are the same ones.
        assert not re.search(r"pool=A: (settings changed|sockets or backends changed|removed|added)", d.log())
        assert len(ba.accepts()) == a_accepts, f"A's backend saw {len(ba.accepts()) - a_accepts} new accepts"
        assert open_ids(ba) == a_open
        assert ba.closes() == []
        row = pool_row(d, "A")
        assert (row["idle"], row["active"]) == (2, 1)
        # The stream kept flowing after the reload.
        wait_until(lambda: len(stream.sent) > sent_before + (64 << 10) and stream.error is None,
                   what="the stream to go on after the reload")
    finally:
        sent, got = stream.finish()
    assert len(sent) > 0 and got == sent, f"stream: sent {len(sent)}, got {len(got)} (first diff at " \
        f"{next((k for k in range(min(len(sent), len(got))) if sent[k] != got[k]), None)})"
    # At A's backend: the stream's connection carried every byte, in order.
    close = ba.wait_close_where(lambda c: c.bytes_in == len(sent), what="the stream's close at A's backend")
    assert close.bytes_out == len(sent) and close.crc32 == zlib.crc32(sent)
    assert len(ba.accepts()) == a_accepts  # and nothing refilled beyond the floor
    assert d.notify_has("READY=1")
    fams = admin(d, "show metrics")
    assert 'warmpool_reloads_total{result="ok"} 1\n' in fams
    assert d.proc.poll() is None


def test_reload_replaced_pool_keeps_its_socket_answering(start_backend, start_daemon, pool):
    r1, r2 = start_backend(), start_backend()
    pr = pool("R", [r1], min_idle=2)
    d = start_daemon(pools={"R": pr}, daemon={"log_level": "debug"})
    r1.wait_open(2)
    path = d.socket_path("R")
    inode = os.stat(path).st_ino

    held = connect_unix(path)
    held.sendall(b"old-session")
    assert recv_exact(held, 11) == b"old-session"

    stop = threading.Event()
    results = []

    def loop():
        k = 0
        while not stop.is_set() and k < 5000:
            payload = b"loop-%05d" % k
            try:
                results.append(echo_once(path, payload, timeout=5.0) == payload)
            except (AssertionError, OSError) as e:
                results.append(repr(e))
            k += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        wait_until(lambda: len(results) >= 20, what="20 clients before the reload")
        before = len(results)
        rewrite(d, {"R": pool("R", [r1, r2], min_idle=2)}, {"log_level": "debug"})
        r = warmpoolctl(d, "reload")
        assert r.returncode == 0, r
        assert r.stdout == f"reloaded {d.config_path}: 1 pool (0 unchanged, 0 changed in place, 1 replaced, " \
                           f"0 added, 0 removed)\n", r.stdout
        d.wait_log(r"pool=R: sockets or backends changed: a new pool takes over, "
                   r"the old one drains [1-9][0-9]* sessions")
        wait_until(lambda: len(results) >= before + 50, what="50 clients after the reload")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    failed = [x for x in results if x is not True]
    assert failed == [], f"{len(failed)} of {len(results)} clients failed across the reload: {failed[:5]}"
    assert os.stat(path).st_ino == inode, "the socket file was re-created"
    # The new pool uses the new backend too.
    wait_until(lambda: len(r2.accepts()) > 0, what="a connection to the added backend")
    assert [b["backend"] for b in admin_json(d, "show backends R")["backends"]] == [r1.addr, r2.addr]

    # The session on the old pool object goes on, intact.
    more = bytes(range(256)) * 256
    try:
        held.sendall(more)
        assert recv_exact(held, len(more)) == more
    finally:
        held.close()
    r1.wait_close_where(lambda c: c.bytes_in == 11 + len(more) and c.bytes_out == 11 + len(more),
                        what="the old session's close with all its bytes")
    d.wait_log(r"pool=R: retired pool drained and freed")
    # What is left open at the backends is the new pool's floor.
    wait_until(lambda: r1.open_count() + r2.open_count() == 2, what="only the new pool's 2 idle connections")
    assert echo_once(path, b"after") == b"after"


def broken_yaml():
    return "daemon:\n  log_level: info\npools:\n  A: [\n", 5, 1  # at the end of the file


def invalid_value(d, pools):
    text = make_config(pools, {"admin_socket": str(d.admin_path)})
    lines = text.split("\n")
    k = next(n for n, ln in enumerate(lines) if ln.strip().startswith("min_idle:"))
    col = lines[k].index("min_idle:") + len("min_idle: ") + 1
    lines[k] = lines[k].split("min_idle:")[0] + 'min_idle: "many"'
    return "\n".join(lines), k + 1, col


def test_reload_broken_file_keeps_the_old_config(start_backend, start_daemon, pool):
    be = start_backend()
    pa = pool("A", [be], min_idle=2)
    d = start_daemon(pools={"A": pa})
    be.wait_open(2)

    # 1. A YAML syntax error.
    text, line, col = broken_yaml()
    d.config_path.write_text(text)
    n0 = len(d.collect_notify())
    r = warmpoolctl(d, "reload")
    assert r.returncode == 1, r
    out = r.stdout.splitlines()
    assert out[0] == (f"error: reload failed: {d.config_path}: configuration is invalid (1 error); "
                      f"still running the previous configuration"), out
    assert out[1].startswith(f"{d.config_path}:{line}:{col}: syntax error: "), out
    d.wait_log(re.escape(out[1]))
    d.wait_log(r"reload failed: .*still running the previous configuration")

    # Still serving the old config, untouched.
    assert echo_once(d.socket_path("A"), b"still A") == b"still A"
    assert pools_of(d) == ["A"]
    # systemd hears that the reload ended, and that it failed.
    i, j, msgs = reload_notifications(d, n0)
    status = [ln for ln in notify_lines(msgs[j]) if ln.startswith("STATUS=")]
    assert status and "last reload failed" in status[0], msgs[j]

    # 2. A valid YAML file with an invalid value, by SIGHUP.
    text, line, col = invalid_value(d, {"A": pool("A", [be], min_idle=3)})
    d.config_path.write_text(text)
    n1 = len(d.collect_notify())
    d.send_signal(signal.SIGHUP)
    d.wait_log(re.escape(f'{d.config_path}:{line}:{col}: pools.A.min_idle: expected an integer >= 0, got "many"'))
    i, j, msgs = reload_notifications(d, n1)
    assert any("last reload failed" in ln for ln in notify_lines(msgs[j]) if ln.startswith("STATUS=")), msgs[j]
    # The same file by warmpoolctl: the error lines in its answer.
    r = warmpoolctl(d, "reload")
    assert r.returncode == 1, r
    assert f'{d.config_path}:{line}:{col}: pools.A.min_idle: expected an integer >= 0, got "many"' in \
        r.stdout.splitlines(), r.stdout
    assert echo_once(d.socket_path("A"), b"still A") == b"still A"
    assert pool_row(d, "A")["min_idle"] == 2
    assert 'warmpool_reloads_total{result="failed"} 3\n' in admin(d, "show metrics")
    # The status timer keeps saying so while nothing else changes.
    d.collect_notify()
    assert "last reload failed" in [m for m in d.notify if "STATUS=" in m][-1]

    # 3. Fixed: it reloads, applies the new floor, and the failure is forgotten.
    # Settled: the sessions above ended, and every connection the pool
    # opened is in the backend's log (a connect completes at the daemon
    # before the backend process logs its accept).
    wait_until(lambda: (pool_row(d, "A")["idle"], pool_row(d, "A")["active"], pool_row(d, "A")["connecting"])
               == (2, 0, 0) and admin_json(d, "show stats")["pools"]["A"]["connections_opened"]
               == len(be.accepts()), what="A settled at 2 idle")
    be.wait_open(2)
    accepts = len(be.accepts())
    rewrite(d, {"A": pool("A", [be], min_idle=3)})
    n2 = len(d.collect_notify())
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0, r
    assert "1 changed in place" in r.stdout
    be.wait_open(3)
    assert len(be.accepts()) == accepts + 1  # 2 kept, 1 added
    i, j, msgs = reload_notifications(d, n2)
    status = [ln for ln in notify_lines(msgs[j]) if ln.startswith("STATUS=")]
    assert status and "last reload failed" not in status[0], msgs[j]
    assert pool_row(d, "A")["min_idle"] == 3


def test_reload_while_stopping_is_refused(start_backend, start_daemon, pool):
    """A reload that arrives while the daemon drains on SIGTERM fails
    cleanly (nothing applied) and the drain still finishes."""
    be = start_backend()
    d = start_daemon(pools={"A": pool("A", [be], min_idle=1)})
    be.wait_open(1)
    held = connect_unix(d.socket_path("A"))
    try:
        held.sendall(b"x")
        assert recv_exact(held, 1) == b"x"
        d.send_signal(signal.SIGTERM)
        d.wait_log(r"SIGTERM: shutting down")
        r = warmpoolctl(d, "reload")
        assert r.returncode == 1 and "reload failed: shutting down" in r.stdout, r
        held.sendall(b"y")
        assert recv_exact(held, 1) == b"y"
    finally:
        held.close()
    assert d.wait_exit() == 0, d.log()
    # Once STOPPING=1 is out, nothing says READY=1 (or RELOADING=1) again.
    msgs = d.collect_notify()
    k = next(i for i, m in enumerate(msgs) if "STOPPING=1" in notify_lines(m))
    after = [m for m in msgs[k + 1:] if {"READY=1", "RELOADING=1"} & set(notify_lines(m))]
    assert after == [], f"after STOPPING=1: {after}"


def test_socket_files_removed_at_exit_after_a_reload(start_backend, start_daemon, pool, sockdir):
    """The pools kept by a reload (unchanged, changed in place) and the
    admin sockets still remove their socket files at exit: the paths they
    remove are the live config's, not the one the reload freed."""
    be = start_backend()
    ro = sockdir / "ro.sock"
    pu = pool("U", [be], min_idle=1)
    pc = pool("Ch", [be], min_idle=1)
    d = start_daemon(pools={"U": pu, "Ch": pc}, daemon={"admin_socket_readonly": str(ro)})
    be.wait_open(2)
    text = make_config({"U": pu, "Ch": dict(pc, min_idle=2)},
                       {"admin_socket": str(d.admin_path), "admin_socket_readonly": str(ro)})
    d.config_path.write_text(text)
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0 and "1 unchanged, 1 changed in place" in r.stdout, r
    be.wait_open(3)
    # A second reload frees the config the first one replaced, too.
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0 and "2 unchanged" in r.stdout, r
    assert echo_once(d.socket_path("U"), b"u") == b"u"
    assert echo_once(d.socket_path("Ch"), b"c") == b"c"
    assert d.stop() == 0, d.log()
    left = sorted(p.name for p in sockdir.iterdir() if p.suffix == ".sock")
    assert left == [], f"socket files left after exit: {left}"


def test_reload_reuse_and_idle_timeouts_change_in_place(start_backend, start_daemon, pool):
    """Turning on reuse: and setting client_idle_timeout and
    server_idle_timeout is a change in place: the summary says so (it used
    to say "1 unchanged": reload compared a hand copy of the keys that
    lacked these three) and the running pool applies the new values."""
    from test_handoff import stats

    be = start_backend()
    d = start_daemon(pools={"A": pool("A", [be], min_idle=1)})
    be.wait_open(1)
    assert echo_once(d.socket_path("A"), b"before") == b"before"
    assert stats(d, "A")["connections_reused"] == 0  # reuse is off: the connection was closed
    rewrite(d, {"A": pool("A", [be], min_idle=1, reuse=True, client_idle_timeout="300ms",
                          server_idle_timeout="20s")})
    r = warmpoolctl(d, "reload")
    summary = "1 pool (0 unchanged, 1 changed in place, 0 replaced, 0 added, 0 removed)"
    assert r.returncode == 0 and r.stdout == f"reloaded {d.config_path}: {summary}\n", r
    d.wait_log(rf"reloaded {re.escape(str(d.config_path))}: {re.escape(summary)}")
    d.wait_log(r"pool=A: settings changed, applied in place")
    # reuse: a clean session's connection goes back to idle.
    assert echo_once(d.socket_path("A"), b"after") == b"after"
    wait_until(lambda: stats(d, "A")["connections_reused"] == 1, what="the connection reused")
    # client_idle_timeout: a session with nothing moving is closed.
    with connect_unix(d.socket_path("A")) as s:
        s.sendall(b"x")
        assert recv_exact(s, 1) == b"x"
        d.wait_log(r"pool=A client=\d+: nothing moved on the client side for client_idle_timeout")
        s.settimeout(IO_TIMEOUT)
        assert s.recv(1) == b""
    assert stats(d, "A")["sessions_idle_closed"] == 1
    # The same file again: now nothing differs.
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0 and "1 pool (1 unchanged, 0 changed in place" in r.stdout, r
