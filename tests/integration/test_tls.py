"""Warm TLS to the backends (issue 14), against real TLS servers: a Python
`ssl` server (tlsutil.TLSServer), Debian's redis-server with --tls-port, and
PostgreSQL with ssl=on behind `starttls: postgres`. Certificates are made by
the test (tlsutil.Pki): a CA the pool trusts, an unrelated one, a wrong
host, an expired certificate, a client certificate.

What is asserted, each against what the server itself saw: bytes cross
byte-exact both ways and the greeting comes first; a client's half-close is
a close_notify after its last byte and the backend may still answer; a
truncated stream is logged; a stalled handshake is a timeout; a backend whose
certificate cannot be verified (unknown CA, wrong name, expired) or that
refuses the handshake (mTLS without a client certificate) is down with
OpenSSL's reason in its log line and in `show backends`, and no byte of it
ever reaches a client; close_notify on idle connections costs no client
anything; sessions are resumed (and a TLS 1.3 ticket is never presented
twice); reuse over TLS leaks nothing between clients and saves handshakes;
health checks handshake and verify; a reload with a new CA applies to new
connections without cutting a session.

Every wait is on an event (a log line, a counter, a server's event line),
never on a sleep; every process is stopped by PID at teardown.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest

from tlsutil import Pki, TLSServer
from wp import (
    MIB,
    SLOW,
    UNDER_VALGRIND,
    WAIT_TIMEOUT,
    Procs,
    admin,
    admin_json,
    connect_unix,
    echo_once,
    exchange,
    free_port,
    pool_config,
    recv_exact,
    recv_until_closed,
    run_threads,
    stats,
    wait_until,
    warmpoolctl,
)

LONG = WAIT_TIMEOUT * SLOW  # a state that takes several handshakes (valgrind: 5x)
# connect_timeout bounds TCP connect + starttls + handshake: a handshake
# under valgrind takes far longer than the tests' usual 1 s.
CONNECT_TIMEOUT = "5s" if UNDER_VALGRIND else "1s"


# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture
def pool(sockdir):
    """conftest's pool(), with a connect_timeout a TLS handshake fits in."""

    def make(name, backends, **overrides):
        return pool_config(sockdir, name, backends, **{"connect_timeout": CONNECT_TIMEOUT, **overrides})

    return make


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_server(procs, tmp_path, pki):
    """tls_server(cert="server"|"untrusted"|..., **TLSServer options). The
    certificate and key are copied to the server's own files (reload()
    overwrites those)."""
    n = [0]

    def start(cert="server", **opts):
        n[0] += 1
        name = f"tls{n[0]}"
        c, k = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        c.write_bytes(Path(getattr(pki, f"{cert}_cert")).read_bytes())
        k.write_bytes(Path(getattr(pki, f"{cert}_key")).read_bytes())
        return TLSServer(procs, tmp_path, name, str(c), str(k), **opts).start()

    return start


def _need(exe, package):
    path = shutil.which(exe) or (exe if os.access(exe, os.X_OK) else None)
    if not path:
        pytest.fail(f"{exe} is not installed (Debian package {package}; `make deps` installs it)")
    return path


@pytest.fixture
def redis_tls(procs, tmp_path, pki):
    """redis_tls() -> "127.0.0.1:PORT" of a redis-server speaking only TLS
    (port 0, --tls-port), with the CA-signed server certificate."""

    def start():
        exe = _need("redis-server", "redis-server")
        port = free_port()
        out = tmp_path / "redis.stdout"
        argv = [exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                "--tls-cert-file", pki.server_cert, "--tls-key-file", pki.server_key,
                "--tls-ca-cert-file", pki.ca, "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        p = procs.spawn("redis-tls", argv, tmp_path / "redis.stderr", stdout_path=out)

        def ready():
            if p.poll() is not None:
                raise AssertionError(f"redis-server exited with {p.returncode}: {out.read_text(errors='replace')}")
            return "Ready to accept connections" in out.read_text(errors="replace")

        wait_until(ready, 10.0, what="redis-server to accept TLS connections")
        return f"127.0.0.1:{port}"

    return start


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres_ssl(procs, pki):
    """postgres_ssl() -> "127.0.0.1:PORT": a throwaway cluster (initdb as
    the postgres user, trust authentication) with ssl=on and the test's
    CA-signed certificate, no Unix socket of its own. Its directory is under
    /tmp, not tmp_path (pytest's tree is root's, mode 0700: the postgres
    user could not enter it). Stopped with SIGINT (a fast shutdown: the
    pool's warm connections would hold a smart one) before the registry's
    SIGTERM."""
    started = []
    dirs = []

    def start():
        initdb = _need(str(PG_BIN / "initdb"), "postgresql")
        postgres = _need(str(PG_BIN / "postgres"), "postgresql")
        setpriv = _need("setpriv", "util-linux")
        top = Path(tempfile.mkdtemp(prefix="wppg", dir="/tmp"))
        dirs.append(top)
        shutil.chown(top, "postgres", "postgres")
        asuser = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups"]
        r = subprocess.run([*asuser, initdb, "-D", top / "data", "--auth=trust", "-U", "postgres", "-N"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"initdb failed: {r.stdout}\n{r.stderr}"
        for src, dst in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key")):
            (top / dst).write_bytes(Path(src).read_bytes())
            shutil.chown(top / dst, "postgres", "postgres")
            os.chmod(top / dst, 0o600)
        port = free_port()
        log = top / "postgres.log"
        p = procs.spawn("postgres", [*asuser, postgres, "-D", top / "data", "-p", str(port),
                                     "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                                     "-c", "ssl=on", "-c", f"ssl_cert_file={top / 'server.crt'}",
                                     "-c", f"ssl_key_file={top / 'server.key'}", "-c", "fsync=off"],
                        log)
        started.append(p)

        def ready():
            if p.poll() is not None:
                raise AssertionError(f"postgres exited with {p.returncode}: {log.read_text(errors='replace')}")
            return "database system is ready to accept connections" in log.read_text(errors="replace")

        wait_until(ready, 30.0, what="postgres to accept connections")
        return f"127.0.0.1:{port}"

    yield start
    for p in started:
        Procs.stop(p, signal.SIGINT)
    for top in dirs:
        shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------------------
# helpers

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(d, name, **labels):
    """The sum of the `show metrics` samples of `name` whose labels include
    `labels`; None when there is none."""
    total = None
    for line in admin(d, "show metrics").splitlines():
        m = SAMPLE_RE.match(line)
        if not m or m.group(1) != name:
            continue
        lb = dict(LABEL_RE.findall(m.group(2) or ""))
        if all(lb.get(k) == str(v) for k, v in labels.items()):
            total = (total or 0) + float(m.group(3))
    return total


def handshakes(d, pool, addr, result):
    """warmpool_backend_tls_handshakes_total{result=...}; 0 when absent."""
    return metric(d, "warmpool_backend_tls_handshakes_total", pool=pool, backend=addr, result=result) or 0


def handouts(d, pool):
    return metric(d, "warmpool_pool_handouts_total", pool=pool)


def backend_json(d, pool, addr):
    rows = [b for b in admin_json(d, f"show backends {pool}")["backends"] if b["backend"] == addr]
    assert len(rows) == 1, rows
    return rows[0]


def down_re(pool, addr):
    return rf"pool={pool} backend={re.escape(addr)}: backend \w+ -> down: "


def up_re(pool, addr):
    return rf"pool={pool} backend={re.escape(addr)}: backend \w+ -> up: "


def tls(pki, **kw):
    return {"ca_file": pki.ca, **kw}


def nothing_reaches_a_client(d, pool):
    """A client of the pool gets no byte: it is closed (queue_timeout, or
    fail_fast) having received nothing, though it spoke first."""
    with connect_unix(d.socket_path(pool), timeout=30) as c:
        c.sendall(b"secret\r\n")
        data, how = recv_until_closed(c, timeout=30)
    assert data == b"", f"a client received {data!r} from an unverified backend"


# ---------------------------------------------------------------------------
# bytes


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_1mib_both_ways_byte_exact(tls_server, start_daemon, pool, pki, version):
    srv = tls_server(version=version)
    d = start_daemon(pools={"t": pool("t", [srv.addr], min_idle=1, tls=tls(pki))})
    srv.wait_open(1)
    data = os.urandom(MIB)
    with connect_unix(d.socket_path("t"), timeout=60) as s:
        got = exchange(s, data, timeout=120)
    assert got == data, f"first difference at byte {next(i for i in range(len(data)) if got[i] != data[i])}"
    # The server received exactly these bytes, over the TLS version asked for.
    c = wait_until(lambda: next((c for c in srv.closes() if c.bytes_in > 0), None), LONG,
                   what="the 1 MiB connection to close at the server")
    assert (c.bytes_in, c.bytes_out, c.crc32) == (MIB, MIB, zlib.crc32(data))
    assert c.reason == "eof", c  # ended by a close_notify, not a cut
    assert {h.version for h in srv.handshakes()} == {f"TLSv{version}"}
    # show backends and the metrics tell the same.
    row = backend_json(d, "t", srv.addr)
    assert row["tls"]["version"] == f"TLSv{version}", row
    assert row["tls"]["cert_expiry"] == pki.expiry[pki.server_cert], row
    assert metric(d, "warmpool_backend_tls_cert_expiry_timestamp_seconds", pool="t",
                  backend=srv.addr) == pki.expiry[pki.server_cert]
    # Every handshake the server completed, the daemon counted (and timed).
    wait_until(lambda: handshakes(d, "t", srv.addr, "full") + handshakes(d, "t", srv.addr, "resumed")
               == len(srv.handshakes()) == metric(d, "warmpool_backend_tls_handshake_seconds_count", pool="t",
                                                  backend=srv.addr),
               LONG, what="the daemon's handshake counts to match the server's")


def test_greeting_arrives_first(tls_server, start_daemon, pool, pki):
    greeting = b"220 tls.test ESMTP ready\r\n"
    srv = tls_server(greeting=greeting)
    d = start_daemon(pools={"g": pool("g", [srv.addr], min_idle=2, tls=tls(pki))})
    srv.wait_open(2)
    for i in range(3):
        with connect_unix(d.socket_path("g")) as c:
            # Before the client says anything: the greeting the server sent
            # right after the handshake, while the connection was idle.
            assert recv_exact(c, len(greeting)) == greeting
            c.sendall(b"EHLO %d\r\n" % i)
            assert recv_exact(c, 8) == b"EHLO %d\r\n" % i


def test_client_half_close_is_a_close_notify_and_the_backend_may_still_send(tls_server, start_daemon, pool, pki):
    """The client shuts its write side after 200 KiB: the server gets every
    byte and then a close_notify (not a cut), and what it sends after that
    (TLS 1.3 allows it) still reaches the client, followed by EOF when the
    server's own close_notify comes."""
    srv = tls_server(version="1.3", trailer_on_eof=True)
    d = start_daemon(pools={"h": pool("h", [srv.addr], min_idle=1, tls=tls(pki))})
    srv.wait_open(1)
    data = os.urandom(200 * 1024)
    with connect_unix(d.socket_path("h"), timeout=60) as s:
        got = exchange(s, data, shut_wr=True, until_eof=True, timeout=60)
    trailer = b"BYE %d\n" % len(data)
    assert got[: len(data)] == data and got[len(data):] == trailer, (len(got), got[len(data):][:80])
    c = wait_until(lambda: next((c for c in srv.closes() if c.bytes_in > 0), None), LONG, what="the server's close")
    assert (c.bytes_in, c.crc32, c.reason) == (len(data), zlib.crc32(data), "eof"), c
    assert "truncated" not in d.log()


def test_truncated_stream_is_logged_and_closes_the_client(tls_server, start_daemon, pool, pki):
    """The server echoes, then closes TCP without a close_notify: the client
    gets the echo and then its connection closed; the daemon says why."""
    srv = tls_server(truncate_on=b"CUT")
    d = start_daemon(pools={"x": pool("x", [srv.addr], min_idle=1, tls=tls(pki))})
    srv.wait_open(1)
    with connect_unix(d.socket_path("x")) as c:
        c.sendall(b"before the CUT\n")
        data, how = recv_until_closed(c)
    assert data == b"before the CUT\n", data
    d.wait_log(rf"pool=x backend={re.escape(srv.addr)} conn=\d+ client=\d+: "
               r"TLS stream truncated by the backend \(no close_notify\)")
    assert [c.reason for c in srv.closes()] == ["truncated"]


def test_records_and_close_notify_in_one_segment_all_reach_the_client(tls_server, start_daemon, pool, pki):
    """The server answers with three records and its close_notify in one TCP
    segment and then keeps the TCP connection open: the daemon reads them
    all at once (read-ahead), and the client still gets every byte and then
    its EOF, though no socket event follows to announce the end."""
    srv = tls_server(burst_close_on=b"BURST")
    d = start_daemon(pools={"x": pool("x", [srv.addr], min_idle=1, tls=tls(pki))})
    srv.wait_open(1)
    for _ in range(3):
        with connect_unix(d.socket_path("x")) as c:
            c.sendall(b"BURST\n")
            data, how = recv_until_closed(c, timeout=LONG)
        assert (data, how) == (b"part 1\npart 2\npart 3\n", "eof"), (data, how)
    closes = wait_until(lambda: [c for c in srv.closes() if c.reason == "burst"] if
                        len([c for c in srv.closes() if c.reason == "burst"]) == 3 else None, LONG,
                        what="the server's three closes")
    assert all(c.bytes_out == 21 for c in closes), closes
    assert "truncated" not in d.log()


def test_keyupdate_on_an_idle_reused_connection_is_neither_a_reply_nor_its_end(tls_server, start_daemon, pool,
                                                                               pki):
    """A connection back in the idle list after a session (reuse: quiet
    period) gets a TLS 1.3 KeyUpdate: bytes at the TCP level that decrypt
    to no data. Taken for a late reply, the connection would be closed; for
    a greeting, passed to the next client. It is neither: the next client
    gets the same connection and only its own echo."""
    ku_ms = int(300 * SLOW)  # after the daemon's 100 ms quiet period, with room
    srv = tls_server(version="1.3", key_update_after_ms=ku_ms)
    d = start_daemon(pools={"k": pool("k", [srv.addr], min_idle=1, max_connections=1, reuse=True, tls=tls(pki))})
    srv.wait_open(1)
    path = d.socket_path("k")
    for i in range(3):
        n_ku = len(srv.key_updates())
        with connect_unix(path) as c:
            c.sendall(b"ku%d" % i)
            assert recv_exact(c, 3) == b"ku%d" % i
            c.shutdown(socket.SHUT_WR)
            assert recv_until_closed(c)[0] == b""
        wait_until(lambda: stats(d, "k")["connections_reused"] == i + 1, LONG, what=f"reuse #{i + 1}")
        wait_until(lambda: len(srv.key_updates()) > n_ku, LONG, what="a KeyUpdate on the idle connection")
    assert all(ok for _, ok in srv.key_updates()), srv.lines()
    assert echo_once(path, b"last") == b"last"
    # One connection, one handshake, carried every session.
    assert len(srv.handshakes()) == 1 and srv.open_count() == 1, srv.lines()
    st = stats(d, "k")
    assert st["connections_reuse_refused"] == 0 and st["stale_discarded"] == 0, st


# ---------------------------------------------------------------------------
# verification: an unverified connection is never handed to a client

VERIFY_CASES = [
    # (id, server certificate, extra tls keys, the reason OpenSSL gives)
    ("untrusted_ca", "untrusted", {}, "tls: certificate verify failed: unable to get local issuer certificate"),
    ("wrong_host", "wrong", {"server_name": "localhost"}, "tls: certificate verify failed: hostname mismatch"),
    ("wrong_ip", "wrong", {}, "tls: certificate verify failed: IP address mismatch"),
    ("expired", "expired", {}, "tls: certificate verify failed: certificate has expired"),
]


@pytest.mark.parametrize("cert,extra,reason", [c[1:] for c in VERIFY_CASES], ids=[c[0] for c in VERIFY_CASES])
def test_unverifiable_backend_is_down_and_never_handed_out(tls_server, start_daemon, pool, pki, cert, extra,
                                                            reason):
    """The server greets at once and echoes: had the daemon skipped
    verification, its bytes would reach the client."""
    srv = tls_server(cert=cert, greeting=b"+OK unverified server speaking\r\n")
    d = start_daemon(pools={"v": pool("v", [srv.addr], min_idle=2, queue_timeout="1s", tls=tls(pki, **extra))})
    # A client from the start, while the first handshakes fail: it waits
    # its queue_timeout and is closed, having received nothing.
    nothing_reaches_a_client(d, "v")
    line = d.wait_log(down_re("v", srv.addr), timeout=LONG)[0]
    assert reason in line, line
    # Each failed attempt says why, with its connection's context.
    d.wait_log(rf"pool=v backend={re.escape(srv.addr)} conn=\d+: connect failed: {re.escape(reason)} \(attempt 1, ")
    row = backend_json(d, "v", srv.addr)
    assert row["state"] == "down" and reason in row["last_error"], row
    nothing_reaches_a_client(d, "v")  # and once it is down
    assert handouts(d, "v") == 0
    assert handshakes(d, "v", srv.addr, "verify_failed") >= 1
    assert handshakes(d, "v", srv.addr, "full") + handshakes(d, "v", srv.addr, "resumed") == 0
    # The server never completed a handshake (the daemon aborted each one
    # with an alert), so it never sent its greeting to anyone.
    assert srv.handshakes() == [], srv.lines()
    assert len(srv.failures()) >= 1


def test_stalled_handshake_is_a_timeout(start_daemon, pool, pki):
    """A listener that never answers: the kernel completes the TCP
    handshake, nothing answers the ClientHello. connect_timeout bounds the
    whole: a failed attempt, "timeout", and no client served."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(128)
        addr = f"127.0.0.1:{ls.getsockname()[1]}"
        d = start_daemon(pools={"s": pool("s", [addr], min_idle=1, connect_timeout="300ms", queue_timeout="1s",
                                          tls=tls(pki))})
        line = d.wait_log(down_re("s", addr), timeout=LONG)[0]
        assert "timeout" in line, line
        assert handshakes(d, "s", addr, "timeout") >= 1
        nothing_reaches_a_client(d, "s")
        assert handouts(d, "s") == 0


# ---------------------------------------------------------------------------
# mTLS


def test_mtls_with_client_certificate(tls_server, start_daemon, pool, pki):
    srv = tls_server(client_ca=pki.ca)
    d = start_daemon(pools={"m": pool("m", [srv.addr], min_idle=2, tls=tls(
        pki, cert_file=pki.client_cert, key_file=pki.client_key))})
    srv.wait_open(2)
    assert echo_once(d.socket_path("m"), b"mutual") == b"mutual"
    assert {h.peer for h in srv.handshakes()} == {"warmpool-client"}, srv.lines()
    assert srv.failures() == []


@pytest.mark.parametrize("version,alert", [("1.3", "certificate required"), ("1.2", "handshake failure")])
def test_mtls_without_client_certificate(tls_server, start_daemon, pool, pki, version, alert):
    srv = tls_server(client_ca=pki.ca, version=version, greeting=b"+OK\r\n")
    d = start_daemon(pools={"m": pool("m", [srv.addr], min_idle=2, queue_timeout="1s", tls=tls(pki))})
    line = d.wait_log(down_re("m", srv.addr), timeout=LONG)[0]
    assert re.search(rf"tls: handshake failed: [^()]*{alert}", line), line
    assert alert in backend_json(d, "m", srv.addr)["last_error"]
    nothing_reaches_a_client(d, "m")
    assert handouts(d, "m") == 0
    assert handshakes(d, "m", srv.addr, "failed") >= 1
    assert srv.handshakes() == [] and len(srv.failures()) >= 1, srv.lines()


# ---------------------------------------------------------------------------
# idle connections closed by the server


def test_close_notify_on_idle_connections_costs_no_client(tls_server, start_daemon, pool, pki):
    """The server sends close_notify on connections idle 300 ms; 200
    sessions spread over ~2 s (several close cycles) all get their echo."""
    srv = tls_server(idle_close_ms=300)
    d = start_daemon(pools={"i": pool("i", [srv.addr], min_idle=4, max_connections=32, queue_timeout="5s",
                                      tls=tls(pki))})
    # The cycle runs before the first client: idle connections closed by the
    # server and replaced by the daemon.
    wait_until(lambda: sum(c.reason == "idle" for c in srv.closes()) >= 4, LONG, what="idle closes at the server")
    srv.wait_open(4, timeout=LONG)

    path = d.socket_path("i")
    n_threads, per_thread, span = 4, 50, 2.0 * SLOW
    start = time.monotonic() + 0.1

    def client(t):
        failures = []
        for k in range(per_thread):
            slot = k * n_threads + t  # sessions evenly spread over `span`
            delay = start + slot * span / (n_threads * per_thread) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = f"t{t}-s{k}:".encode() + os.urandom(16 + slot % 200)
            try:
                got = echo_once(path, payload, timeout=10 * SLOW)
                if got != payload:
                    failures.append((t, k, "mismatch", got[:40]))
            except Exception as e:  # noqa: BLE001 - counted as a failure
                failures.append((t, k, type(e).__name__, str(e)[:200]))
        return failures

    results = run_threads(client, [(t,) for t in range(n_threads)], timeout=120 * SLOW)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    failures = [f for r in results for f in r]
    assert failures == [], f"{len(failures)} of 200 sessions failed: {failures[:10]}\n{stats(d, 'i')}\n" \
                           f"{d.log()[-3000:]}"
    assert sum(c.reason == "idle" for c in srv.closes()) >= 4
    # Each session had one connection of its own, which saw its bytes.
    wait_until(lambda: sum(c.bytes_in > 0 for c in srv.closes()) >= 200, LONG, what="200 used connections closed")
    assert sum(c.bytes_in > 0 for c in srv.closes()) == 200
    # Every connection ended with a close_notify, one way or the other; and
    # the server's were never taken for truncations.
    assert {c.reason for c in srv.closes()} <= {"eof", "idle"}, [c for c in srv.closes() if c.reason != "eof"]
    assert "truncated" not in d.log()


# ---------------------------------------------------------------------------
# resumption


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_sessions_are_resumed(tls_server, start_daemon, pool, pki, version):
    """One connection at a time: the first handshake is full, every
    replacement resumes the session of one before it."""
    srv = tls_server(version=version)
    d = start_daemon(pools={"r": pool("r", [srv.addr], min_idle=1, max_connections=4, tls=tls(pki))})
    srv.wait_open(1)
    n = 10
    for i in range(n):
        assert echo_once(d.socket_path("r"), b"resume%d" % i) == b"resume%d" % i
        # The replacement, handshaken, before the next session.
        wait_until(lambda: len(srv.handshakes()) == i + 2 and srv.open_count() == 1, LONG,
                   what=f"replacement {i + 1} handshaken ({srv.lines()[-3:]})")
    c = srv.counts()
    # (A TLS 1.2 server looks the session id up in its cache before it reads
    # the ticket: its cache misses say nothing here.)
    assert (c["full"], c["resumed"], c["failed"]) == (1, n, 0), (c, srv.lines())
    wait_until(lambda: handshakes(d, "r", srv.addr, "resumed") == n, what="the daemon to count the resumptions")
    assert handshakes(d, "r", srv.addr, "full") == 1
    assert metric(d, "warmpool_backend_tls_handshake_seconds_count", pool="r", backend=srv.addr) == n + 1
    tl = backend_json(d, "r", srv.addr)["tls"]
    assert (tl["handshakes_full"], tl["handshakes_resumed"], tl["handshakes_failed"]) == (1, n, 0), tl
    assert tl["version"] == f"TLSv{version}"


def test_tls13_ticket_is_never_used_twice(tls_server, start_daemon, pool, pki):
    """Single-use TLS 1.3 tickets (the server's replay protection keeps each
    in its cache until its first use): a ticket offered a second time is a
    cache miss at the server and falls back to a full handshake. Sequential
    sessions first (every replacement must resume: the full count stays
    what the floor's first connections cost), then bursts of concurrent
    ones (replacements connect at once: none may share a ticket)."""
    srv = tls_server(version="1.3", single_use_tickets=True)
    d = start_daemon(pools={"s": pool("s", [srv.addr], min_idle=3, max_connections=12, tls=tls(pki))})
    srv.wait_open(3)
    full0, h0 = srv.counts()["full"], len(srv.handshakes())
    assert 1 <= full0 <= 3
    for i in range(6):
        assert echo_once(d.socket_path("s"), b"seq%d" % i) == b"seq%d" % i
        wait_until(lambda: len(srv.handshakes()) == h0 + i + 1 and srv.open_count() == 3, LONG,
                   what=f"replacement {i + 1} handshaken")
    c = srv.counts()
    assert c["misses"] == 0 and c["full"] == full0 and c["resumed"] == h0 - full0 + 6, (c, srv.lines())

    for burst in range(4):
        res = run_threads(lambda k: echo_once(d.socket_path("s"), b"burst%d-%d" % (burst, k)),
                          [(k,) for k in range(6)], timeout=60 * SLOW)
        assert res == [b"burst%d-%d" % (burst, k) for k in range(6)], res
    wait_until(lambda: len(srv.handshakes()) >= h0 + 6 + 24 and srv.open_count() >= 3, LONG,
               what="the bursts' replacements handshaken")
    c = srv.counts()
    assert c["misses"] == 0, f"a ticket was offered twice: {c}\n{''.join(srv.lines())}"
    assert c["resumed"] > 6, c
    wait_until(lambda: handshakes(d, "s", srv.addr, "resumed") == srv.counts()["resumed"],
               what="the daemon's resumed count to match the server's")
    assert handshakes(d, "s", srv.addr, "full") == srv.counts()["full"]


# ---------------------------------------------------------------------------
# reuse over TLS (redis-server --tls-port)

RESET = {"reset_send": r"RESET\r\n", "reset_expect": r"+RESET\r\n"}


def read_line(sock, limit=4096):
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += recv_exact(sock, 1)
        assert len(buf) < limit, buf
    return buf


def command(sock, cmd, expect=None):
    sock.sendall(cmd)
    line = read_line(sock)
    if line.startswith(b"$") and line != b"$-1\r\n":
        line += recv_exact(sock, int(line[1:-2]) + 2)
    if expect is not None:
        assert line == expect, (cmd, line)
    return line


def reuse_decided(d, pool, n):
    wait_until(lambda: stats(d, pool)["connections_reused"] + stats(d, pool)["connections_reuse_refused"] >= n,
               LONG, what=f"reuse decision #{n}")


def sessions_ended(d, pool, n):
    """n sessions of the pool have ended, however (a client that left with
    replies still coming may end its session on a send error: its
    connection is then closed without a reuse decision)."""
    wait_until(lambda: (metric(d, "warmpool_pool_session_duration_seconds_count", pool=pool) or 0) >= n, LONG,
               what=f"{n} sessions ended")


def test_redis_tls_reuse_never_leaks_between_clients(redis_tls, start_daemon, pool, pki):
    """One backend connection at most: the next client gets the very
    connection the last one used, when it was reused."""
    addr = redis_tls()
    d = start_daemon(pools={"r": pool("r", [addr], min_idle=1, max_connections=1, reuse=RESET, tls=tls(pki))})
    wait_until(lambda: handshakes(d, "r", addr, "full") + handshakes(d, "r", addr, "resumed") >= 1, LONG,
               what="a handshaken connection")
    path = d.socket_path("r")
    with connect_unix(path) as c:
        command(c, b"SET mark zero\r\n", b"+OK\r\n")
    clean = 1  # sessions that ended cleanly: each one's connection reset and reused
    reuse_decided(d, "r", clean)
    same = 0
    rounds = 10
    for i in range(rounds):
        # A leaves state behind on a connection that ends cleanly: another
        # database selected, a transaction open.
        with connect_unix(path) as a:
            id_a = command(a, b"CLIENT ID\r\n")
            command(a, b"SELECT 3\r\n", b"+OK\r\n")
            command(a, b"SET mark three\r\n", b"+OK\r\n")
            command(a, b"MULTI\r\n", b"+OK\r\n")
            command(a, b"SET mark queued\r\n", b"+QUEUED\r\n")
        clean += 1
        reuse_decided(d, "r", clean)
        with connect_unix(path) as b:
            same += command(b, b"CLIENT ID\r\n") == id_a
            command(b, b"GET mark\r\n", b"$4\r\nzero\r\n")  # database 0, no transaction
            command(b, b"PING\r\n", b"+PONG\r\n")
        clean += 1
        reuse_decided(d, "r", clean)
        # A floods and leaves without reading the replies.
        with connect_unix(path) as a:
            a.sendall(b"PING\r\n" * 2000)
        sessions_ended(d, "r", clean + i + 1)
        with connect_unix(path) as b:
            command(b, b"ECHO mine%d\r\n" % i, b"$5\r\nmine%d\r\n" % i)
            command(b, b"PING\r\n", b"+PONG\r\n")
            b.shutdown(socket.SHUT_WR)
            assert recv_until_closed(b)[0] == b""  # and nothing else, ever
        clean += 1
        reuse_decided(d, "r", clean)
    # The scenario happened: B had A's very connection (the same redis
    # client), reset through TLS; every clean session's connection was
    # reused and no flooded one ever was.
    assert same == rounds, same
    sessions_ended(d, "r", clean + rounds)
    st = stats(d, "r")
    assert st["connections_reused"] == clean, st


def test_redis_tls_connection_per_request_reuses_handshaken_connections(redis_tls, start_daemon, pool, pki):
    addr = redis_tls()
    d = start_daemon(pools={"r": pool("r", [addr], min_idle=1, max_connections=4, reuse=RESET, tls=tls(pki))})
    wait_until(lambda: handshakes(d, "r", addr, "full") >= 1, LONG, what="a handshaken connection")
    n = 100
    for i in range(n):
        with connect_unix(d.socket_path("r")) as c:
            command(c, b"INCR hits\r\n", b":%d\r\n" % (i + 1))
        wait_until(lambda: stats(d, "r")["connections_reused"] == i + 1, LONG, what=f"reuse #{i + 1}")
    # Two handshakes (the floor, and its refill while the first session held
    # it) carried 100 sessions; redis itself saw only those connections.
    total = handshakes(d, "r", addr, "full") + handshakes(d, "r", addr, "resumed")
    assert total == 2, total
    with connect_unix(d.socket_path("r")) as c:
        info = command(c, b"INFO stats\r\n").decode()
    got = int(re.search(r"total_connections_received:(\d+)", info).group(1))
    assert got == total, info
    assert stats(d, "r")["connections_reuse_refused"] == 0


def test_redis_cli_through_the_pool(redis_tls, start_daemon, pool, pki):
    addr = redis_tls()
    d = start_daemon(pools={"r": pool("r", [addr], min_idle=1, tls=tls(pki))})
    cli = _need("redis-cli", "redis-tools")

    def run(*args):
        r = subprocess.run([cli, "-s", str(d.socket_path("r")), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r
        return r.stdout.strip()

    assert run("SET", "tls-key", "warm value") == "OK"
    assert run("GET", "tls-key") == "warm value"
    assert handshakes(d, "r", addr, "full") >= 1


# ---------------------------------------------------------------------------
# health checks over TLS


def test_redis_preset_check_over_tls_keeps_backend_up(redis_tls, start_daemon, pool, pki):
    addr = redis_tls()
    d = start_daemon(pools={"h": pool("h", [addr], min_idle=1, tls=tls(pki), health_check={
        "type": "redis", "interval": "100ms", "fast_interval": "50ms", "down_interval": "100ms",
        "timeout": CONNECT_TIMEOUT, "fall": 2, "rise": 2})}, daemon={"log_level": "debug"})
    d.wait_log(rf"backend={re.escape(addr)}: check passed", count=5, timeout=LONG)
    assert not re.search(down_re("h", addr), d.log()), d.log()[-3000:]
    with connect_unix(d.socket_path("h")) as c:
        command(c, b"PING\r\n", b"+PONG\r\n")


def test_connect_check_against_untrusted_server_keeps_it_down(tls_server, start_daemon, pool, pki):
    srv = tls_server(cert="untrusted", greeting=b"+OK\r\n")
    d = start_daemon(pools={"h": pool("h", [srv.addr], min_idle=1, queue_timeout="1s", tls=tls(pki),
                                      health_check={"type": "connect", "interval": "100ms", "timeout": CONNECT_TIMEOUT,
                                                    "down_interval": "100ms", "fall": 2, "rise": 2})})
    line = d.wait_log(down_re("h", srv.addr), timeout=LONG)[0]
    assert "unable to get local issuer certificate" in line, line
    # Checks go on failing while it is down (each one a handshake the
    # server saw fail), and it never comes up.
    n0 = len(srv.failures())
    wait_until(lambda: len(srv.failures()) >= n0 + 5, LONG, what="5 more failed handshakes (checks)")
    assert not re.search(up_re("h", srv.addr), d.log()), d.log()[-3000:]
    assert backend_json(d, "h", srv.addr)["state"] == "down"
    nothing_reaches_a_client(d, "h")
    assert handouts(d, "h") == 0
    assert srv.handshakes() == []


# ---------------------------------------------------------------------------
# reload


@pytest.mark.parametrize("how", ["ca_file_path", "ca_file_contents"])
def test_reload_with_a_new_ca(tls_server, start_daemon, pool, pki, tmp_path, how):
    """The server switches to a certificate from CA2; the pool's CA becomes
    CA2 (a new ca_file path in the config and SIGHUP, or the same path with
    new contents and `warmpoolctl reload`). New connections verify against
    CA2; the session open across the switch is not cut."""
    trust = tmp_path / "trust.pem"
    trust.write_bytes(Path(pki.ca).read_bytes())
    srv = tls_server()
    cfg = pool("rl", [srv.addr], min_idle=2, max_connections=8, tls={"ca_file": str(trust)})
    d = start_daemon(pools={"rl": cfg})
    srv.wait_open(2)
    path = d.socket_path("rl")
    with connect_unix(path) as held:
        held.sendall(b"before")
        assert recv_exact(held, 6) == b"before"
        srv.wait_open(3)  # the floor refilled behind the held session
        srv.reload(pki.server2_cert, pki.server2_key)
        if how == "ca_file_path":
            text = d.config_path.read_text()
            assert str(trust) in text
            d.config_path.write_text(text.replace(str(trust), pki.ca2))
            d.send_signal(signal.SIGHUP)
        else:
            trust.write_bytes(Path(pki.ca2).read_bytes())
            r = warmpoolctl(d, "reload")
            assert r.returncode == 0, r
        d.wait_log(rf"reloaded {re.escape(str(d.config_path))}: ")
        # New connections: each session takes a warm one and its replacement
        # is made with the new CA, against the new certificate.
        for i in range(6):
            assert echo_once(path, b"after%d" % i) == b"after%d" % i
        wait_until(lambda: sum(h.gen == 2 for h in srv.handshakes()) >= 2, LONG,
                   what="connections to the new certificate, verified")
        assert srv.failures() == [], srv.lines()
        assert handshakes(d, "rl", srv.addr, "verify_failed") == 0
        assert not re.search(down_re("rl", srv.addr), d.log())
        # The session open across it all still carries bytes.
        held.sendall(b"still here")
        assert recv_exact(held, 10) == b"still here"
    held_conn = wait_until(lambda: next((c for c in srv.closes() if c.bytes_in == 16), None), what="the held close")
    assert held_conn.reason == "eof", held_conn


# ---------------------------------------------------------------------------
# PostgreSQL: starttls


def test_postgres_starttls(postgres_ssl, start_daemon, pool, pki, sockdir):
    addr = postgres_ssl()
    port = int(addr.rsplit(":", 1)[1])
    listen = Path(sockdir) / f".s.PGSQL.{port}"  # the name libpq looks for in host=DIR
    d = start_daemon(pools={"pg": pool("pg", [addr], min_idle=2, listen=str(listen),
                                       tls=tls(pki, starttls="postgres"))})
    wait_until(lambda: handshakes(d, "pg", addr, "full") + handshakes(d, "pg", addr, "resumed") >= 2, LONG,
               what="2 connections handshaken after SSLRequest")
    psql = _need("psql", "postgresql-client")
    r = subprocess.run([psql, f"host={sockdir} port={port} user=postgres dbname=postgres sslmode=disable", "-Atc",
                        "select ssl, version from pg_stat_ssl where pid = pg_backend_pid()"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "t|TLSv1.3", r.stdout
    assert handouts(d, "pg") == 1


def test_reload_replaces_old_tls_connections_one_at_a_time(tls_server, start_daemon, pool, pki):
    """A reload that changes the TLS settings (here: ciphersuites) keeps the
    pool (an in-place change) and replaces its warm connections made with the
    old settings one at a time, spaced apart by the janitor, never all at
    once; the session open across it is not cut, and its connection is not
    returned to the pool afterwards (reuse) since it was made the old way."""
    srv = tls_server()
    cfg = pool("g", [srv.addr], min_idle=6, max_connections=16, tls=tls(pki),
               reuse={"reset_timeout": "50ms"})
    d = start_daemon(pools={"g": cfg}, daemon={"log_level": "debug"})
    srv.wait_open(6)
    path = d.socket_path("g")
    with connect_unix(path) as held:
        held.sendall(b"old")
        assert recv_exact(held, 3) == b"old"
        srv.wait_open(7)
        text = d.config_path.read_text()
        assert f'      ca_file: "{pki.ca}"\n' in text
        d.config_path.write_text(text.replace(f'      ca_file: "{pki.ca}"\n',
                                              f'      ca_file: "{pki.ca}"\n      ciphersuites: "TLS_AES_128_GCM_SHA256"\n'))
        r = warmpoolctl(d, "reload")
        assert r.returncode == 0 and "1 changed in place" in r.stdout, r
        # Every old idle connection is replaced, each by the janitor's own line.
        recycled = r"conn=(\d+): made with TLS settings a reload replaced, recycling"
        lines = d.wait_log(recycled, count=6, timeout=LONG)
        stamps = [time.mktime(time.strptime(l[:19], "%Y-%m-%d %H:%M:%S")) + float(l[19:23]) for l in lines]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert min(gaps) >= 0.04, f"replaced together: {gaps}"  # TLS_RECYCLE_GAP is 0.05 s
        # The new connections use the new suite, and stay.
        wait_until(lambda: backend_json(d, "g", srv.addr)["tls"]["cipher"] == "TLS_AES_128_GCM_SHA256", LONG,
                   what="a connection with the new suite")
        held.sendall(b"still")
        assert recv_exact(held, 5) == b"still"
    # The held session's connection was made the old way: not reused.
    d.wait_log(r"not reused: made with TLS settings a reload replaced", timeout=LONG)
    assert len(re.findall(recycled, d.log())) == 6, d.log()[-2000:]
