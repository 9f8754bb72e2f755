"""Certificates and TLS servers for the warm TLS tests (issue 14,
test_tls.py).

Pki makes a small public key infrastructure in a directory: a CA, a second,
unrelated CA, server certificates (SAN IP:127.0.0.1 and DNS:localhost), one
for a wrong host, an expired one, and a client certificate for mTLS, with
exact notBefore/notAfter (python3-cryptography). EC P-256 keys: quick to
make, and every server here (Python's ssl, redis-server, PostgreSQL) takes
them.

TLSServer runs this file as a program (`python3 tlsutil.py serve ...`), a
subprocess the Procs registry stops by PID at teardown: a threaded `ssl`
echo server whose behaviours are options (a greeting on accept, a required
client certificate, close_notify on a connection idle for N ms, TLS 1.2 or
1.3 only, stateful single-use TLS 1.3 tickets, bytes sent after the peer's
close_notify, a close without close_notify, a KeyUpdate while idle) and which writes one line per
event to a file the test reads, as wpbackend does:

  listen PORT
  accept ID
  handshake ID resumed=0|1 version=TLSv1.3 gen=G peer=CN|- hits=H misses=M t=UNIX_TIME
  handshake_failed ID reason=...
  close ID BYTES_IN BYTES_OUT REASON crc32=XXXXXXXX t=UNIX_TIME
    (REASON: eof = the peer's close_notify, ragged = an EOF without one,
     idle = ours sent after idle_close_ms, truncated, error)
  key_update ID ok=0|1 t=UNIX_TIME
  reloaded gen=G

hits/misses are the server session cache's counters (SSL_CTX_sess_hits and
_misses) after that handshake: with stateful single-use TLS 1.3 tickets, a
ticket presented a second time is a miss (and a full handshake). SIGHUP
re-reads the certificate and key files (a new context, generation G+1) for
the connections accepted after it; connections already open keep theirs.

Stdlib and python3-cryptography only. Every wait is bounded.
"""

import datetime
import ipaddress
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import zlib
from collections import namedtuple
from pathlib import Path

# ---------------------------------------------------------------------------
# certificates


class Pki:
    """Files of a test PKI in `directory` (each a PEM path, str):
    ca, ca2                     the trusted CA and an unrelated one
    server_cert/_key            CA-signed, SAN IP:127.0.0.1 + DNS:localhost
    server2_cert/_key           CA2-signed, same names (the reload test)
    wrong_cert/_key             CA-signed, SAN DNS:wrong.example only
    expired_cert/_key           CA-signed, right names, notAfter a day ago
    untrusted_cert/_key         CA2-signed, right names
    client_cert/_key            CA-signed, CN=warmpool-client, clientAuth
    and self.expiry: {file: notAfter as unix seconds}."""

    NAMES = ("IP:127.0.0.1", "DNS:localhost")

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.expiry = {}
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        day = datetime.timedelta(days=1)
        self.ca, ca = self._ca("ca", "warmpool test CA", now)
        self.ca2, ca2 = self._ca("ca2", "warmpool other CA", now)
        self.server_cert, self.server_key = self._leaf("server", ca, "server", self.NAMES, now - day, now + 30 * day)
        self.server2_cert, self.server2_key = self._leaf("server2", ca2, "server2", self.NAMES, now - day,
                                                         now + 60 * day)
        self.wrong_cert, self.wrong_key = self._leaf("wrong", ca, "wrong.example", ("DNS:wrong.example",),
                                                     now - day, now + 30 * day)
        self.expired_cert, self.expired_key = self._leaf("expired", ca, "expired", self.NAMES, now - 30 * day,
                                                         now - day)
        self.untrusted_cert, self.untrusted_key = self._leaf("untrusted", ca2, "untrusted", self.NAMES,
                                                             now - day, now + 30 * day)
        self.client_cert, self.client_key = self._leaf("client", ca, "warmpool-client", (), now - day,
                                                       now + 30 * day, client=True)

    @staticmethod
    def _key():
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.generate_private_key(ec.SECP256R1())

    def _write(self, name, cert, key):
        from cryptography.hazmat.primitives import serialization

        cert_path = self.dir / f"{name}.pem"
        key_path = self.dir / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        self.expiry[str(cert_path)] = int(cert.not_valid_after_utc.timestamp()) \
            if hasattr(cert, "not_valid_after_utc") else \
            int(cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())
        return str(cert_path), str(key_path)

    def _ca(self, name, cn, now):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        key = self._key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        path, _ = self._write(name, cert, key)
        return path, (cert, key)

    def _leaf(self, name, ca, cn, names, not_before, not_after, client=False):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_cert, ca_key = ca
        key = self._key()
        sans = []
        for n in names:
            kind, value = n.split(":", 1)
            sans.append(x509.IPAddress(ipaddress.ip_address(value)) if kind == "IP" else x509.DNSName(value))
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(ca_key, hashes.SHA256())
        return self._write(name, cert, key)


# ---------------------------------------------------------------------------
# the server, as seen by a test

Handshake = namedtuple("Handshake", "id resumed version gen peer hits misses")
Closed = namedtuple("Closed", "id bytes_in bytes_out reason crc32")

START_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {got!r})")
        time.sleep(0.02)


class TLSServer:
    """One `tlsutil.py serve` process. Options (keywords): cert, key
    (paths, re-read on reload()), version ("1.2"|"1.3"|None: both),
    greeting (bytes), client_ca (path: a client certificate is required and
    verified against it), idle_close_ms (close_notify after that long with
    nothing received), single_use_tickets (TLS 1.3 single-use tickets),
    trailer_on_eof (after the peer's close_notify, send "BYE <bytes in>\\n"
    before its own: TLS 1.3 lets a side keep sending after the other's
    close_notify), truncate_on (bytes: a chunk containing them is echoed,
    then the TCP connection is closed without a close_notify),
    burst_close_on (bytes: a chunk containing them is answered with
    "part N\n" for N in 1..3, one record each, and the server's close_notify,
    all in one TCP segment (TCP_CORK); the TCP connection then stays open
    until the peer closes it, so no FIN announces the end),
    key_update_after_ms (a TLS 1.3 KeyUpdate, a record with no data in it,
    on a connection quiet that long, once per quiet period)."""

    def __init__(self, procs, workdir, name, cert, key, version=None, greeting=None, client_ca=None,
                 idle_close_ms=None, single_use_tickets=False, trailer_on_eof=False, truncate_on=None,
                 key_update_after_ms=None, burst_close_on=None):
        self.procs = procs
        self.workdir = Path(workdir)
        self.name = name
        self.cert, self.key = cert, key
        self.version = version
        self.greeting = greeting
        self.client_ca = client_ca
        self.idle_close_ms = idle_close_ms
        self.single_use_tickets = single_use_tickets
        self.trailer_on_eof = trailer_on_eof
        self.truncate_on = truncate_on
        self.burst_close_on = burst_close_on
        self.key_update_after_ms = key_update_after_ms
        self.port = 0
        self.proc = None
        self.events_path = self.workdir / f"{name}.events"
        self.stderr_path = self.workdir / f"{name}.stderr"

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.events_path.write_text("")
        argv = ["/usr/bin/python3", Path(__file__).resolve(), "serve", "--port", str(self.port),
                "--events", self.events_path, "--cert", self.cert, "--key", self.key]
        if self.version:
            argv += ["--version", self.version]
        if self.greeting is not None:
            argv += ["--greeting", self.greeting.hex()]
        if self.client_ca:
            argv += ["--client-ca", self.client_ca]
        if self.idle_close_ms:
            argv += ["--idle-close-ms", str(self.idle_close_ms)]
        if self.single_use_tickets:
            argv += ["--single-use-tickets"]
        if self.trailer_on_eof:
            argv += ["--trailer-on-eof"]
        if self.truncate_on:
            argv += ["--truncate-on", self.truncate_on.hex()]
        if self.burst_close_on:
            argv += ["--burst-close-on", self.burst_close_on.hex()]
        if self.key_update_after_ms:
            argv += ["--key-update-after-ms", str(self.key_update_after_ms)]
        self.proc = self.procs.spawn(f"tlsserver {self.name}", argv, self.stderr_path,
                                     stdout_path=self.workdir / f"{self.name}.stdout")

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"tls server {self.name} exited with {self.proc.returncode}: "
                                     f"{self.stderr_path.read_text(errors='replace')}")
            return next((ln for ln in self.lines() if ln.startswith("listen ")), None)

        self.port = int(_wait(listening, START_TIMEOUT, f"tls server {self.name} to listen").split()[1])
        return self

    def stop(self):
        from wp import Procs

        return Procs.stop(self.proc)

    def reload(self, cert, key):
        """Serve `cert`/`key` to the connections accepted from now on (copied
        over the files the server was started with, then SIGHUP)."""
        gen = self.generation()
        Path(self.cert).write_bytes(Path(cert).read_bytes())
        Path(self.key).write_bytes(Path(key).read_bytes())
        self.proc.send_signal(signal.SIGHUP)
        _wait(lambda: self.generation() == gen + 1, WAIT_TIMEOUT, f"tls server {self.name} to reload")
        return gen + 1

    # -- events --
    def lines(self):
        text = self.events_path.read_text(errors="replace")
        return [ln for ln in text.splitlines(keepends=True) if ln.endswith("\n")]

    def generation(self):
        gens = [int(ln.split("=", 1)[1]) for ln in self.lines() if ln.startswith("reloaded ")]
        return gens[-1] if gens else 1

    def accepts(self):
        return [int(ln.split()[1]) for ln in self.lines() if ln.startswith("accept ")]

    def key_updates(self):
        """(id, sent) of each KeyUpdate."""
        return [(int(ln.split()[1]), ln.split()[2] == "ok=1") for ln in self.lines() if ln.startswith("key_update ")]

    def handshakes(self):
        out = []
        for ln in self.lines():
            if ln.startswith("handshake "):
                f = ln.split()
                kv = dict(x.split("=", 1) for x in f[2:])
                out.append(Handshake(int(f[1]), kv["resumed"] == "1", kv["version"], int(kv["gen"]), kv["peer"],
                                     int(kv["hits"]), int(kv["misses"])))
        return out

    def failures(self):
        """(id, reason) of each failed handshake."""
        out = []
        for ln in self.lines():
            if ln.startswith("handshake_failed "):
                f = ln.rstrip("\n").split(" ", 2)
                out.append((int(f[1]), f[2].split("=", 1)[1] if len(f) > 2 else ""))
        return out

    def closes(self):
        out = []
        for ln in self.lines():
            if ln.startswith("close "):
                f = ln.split()
                out.append(Closed(int(f[1]), int(f[2]), int(f[3]), f[4], int(f[5].split("=", 1)[1], 16)))
        return out

    def open_count(self):
        """Handshaken connections not yet closed."""
        done = {c.id for c in self.closes()}
        return sum(h.id not in done for h in self.handshakes())

    def wait_open(self, n, timeout=WAIT_TIMEOUT):
        _wait(lambda: self.open_count() == n, timeout,
              f"{n} handshaken connections open at {self.name} (have {self.open_count()})")

    def counts(self):
        """{"full": N, "resumed": N, "failed": N, "misses": the session
        cache's misses after the last handshake}."""
        hs = self.handshakes()
        return {"full": sum(not h.resumed for h in hs), "resumed": sum(h.resumed for h in hs),
                "failed": len(self.failures()), "misses": max((h.misses for h in hs), default=0)}


# ---------------------------------------------------------------------------
# the server program

MAX_CONNS = 4096  # threads at once: far more than any test opens
HANDSHAKE_TIMEOUT_S = 10.0  # a peer that stalls mid-handshake
SESSION_LIMIT_S = 600.0  # a connection with no idle close still ends, eventually
RECV_CHUNK = 64 << 10


def _set_max_early_data(ctx, n):
    """SSL_CTX_set_max_early_data on a Python SSLContext (Python's ssl does
    not expose it). A server that accepts early data turns OpenSSL's replay
    protection on, and with it single-use tickets: each TLS 1.3 ticket is
    kept in the session cache and removed on its first use, so one presented
    again is a cache miss and a full handshake (SSL_read_early_data(3),
    "Replay Protection"; OP_NO_TICKET alone makes tickets stateful but lets
    them be used again). The SSL_CTX pointer is the first field after
    PyObject_HEAD of CPython's PySSLContext."""
    import ctypes

    lib = ctypes.CDLL("libssl.so.3")  # the one _ssl already loaded
    lib.SSL_CTX_set_max_early_data.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.SSL_CTX_set_max_early_data.restype = ctypes.c_int
    lib.SSL_CTX_get_max_early_data.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_max_early_data.restype = ctypes.c_uint32
    ptr = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    assert lib.SSL_CTX_set_max_early_data(ptr, n) == 1
    assert lib.SSL_CTX_get_max_early_data(ptr) == n, "not the SSL_CTX of this context"


def _key_update(sslsock):
    """Send a TLS 1.3 KeyUpdate now (SSL_key_update, then SSL_do_handshake
    to write it): a record that carries no application data. Python's ssl
    has no call for it; the SSL pointer is the field after PyObject_HEAD
    and the weak reference to the socket in CPython's PySSLSocket (checked:
    SSL_version must say TLS 1.3). Returns True when it was sent."""
    import ctypes

    lib = ctypes.CDLL("libssl.so.3")
    for fn in ("SSL_key_update", "SSL_do_handshake", "SSL_version"):
        getattr(lib, fn).restype = ctypes.c_int
    lib.SSL_key_update.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.SSL_do_handshake.argtypes = [ctypes.c_void_p]
    lib.SSL_version.argtypes = [ctypes.c_void_p]
    ptr = ctypes.c_void_p.from_address(id(sslsock._sslobj) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    if lib.SSL_version(ptr) != 0x0304:  # TLS1_3_VERSION
        return False
    return lib.SSL_key_update(ptr, 0) == 1 and lib.SSL_do_handshake(ptr) == 1  # 0: SSL_KEY_UPDATE_NOT_REQUESTED


class _Server:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.events = open(args["events"], "a", buffering=1)
        self.gen = 1
        self.ctx = self._context()
        self.next_id = 0
        self.reload_wanted = False
        self.sem = threading.BoundedSemaphore(MAX_CONNS)

    def log(self, line):
        with self.lock:
            self.events.write(line + "\n")
            self.events.flush()

    def _context(self):
        a = self.args
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a["cert"], a["key"])
        if a.get("version"):
            v = ssl.TLSVersion.TLSv1_3 if a["version"] == "1.3" else ssl.TLSVersion.TLSv1_2
            ctx.minimum_version = ctx.maximum_version = v
        if a.get("client_ca"):
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a["client_ca"])
        if a.get("single_use_tickets"):
            # Stateful TLS 1.3 tickets (OP_NO_TICKET), single use (the replay
            # protection that accepting early data turns on): a ticket
            # presented twice is a cache miss and a full handshake.
            ctx.options |= ssl.OP_NO_TICKET
            _set_max_early_data(ctx, 16384)
        return ctx

    def serve(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", int(self.args.get("port") or 0)))
        ls.listen(1024)
        self.log(f"listen {ls.getsockname()[1]}")
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            if self.reload_wanted:
                self.reload_wanted = False
                ctx = self._context()
                with self.lock:
                    self.ctx = ctx
                    self.gen += 1
                self.log(f"reloaded gen={self.gen}")
            r, _, _ = select.select([ls], [], [], 0.1)
            if not r:
                continue
            try:
                conn, _ = ls.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue
            self.next_id += 1
            cid = self.next_id
            self.log(f"accept {cid}")
            if not self.sem.acquire(timeout=HANDSHAKE_TIMEOUT_S):
                conn.close()
                self.log(f"close {cid} 0 0 error crc32=00000000")
                continue
            with self.lock:
                ctx, gen = self.ctx, self.gen
            threading.Thread(target=self._conn, args=(cid, conn, ctx, gen), daemon=True).start()

    def _on_hup(self, *_):
        self.reload_wanted = True

    def _conn(self, cid, raw, ctx, gen):
        try:
            self._session(cid, raw, ctx, gen)
        finally:
            self.sem.release()

    def _session(self, cid, raw, ctx, gen):
        a = self.args
        raw.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            # A bare EOF raises (SSLEOFError) instead of reading as b"": "eof"
            # below means a close_notify came.
            s = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False)
            s.do_handshake()
        except (OSError, ValueError) as e:
            reason = re.sub(r"\s+", " ", str(e))
            self.log(f"handshake_failed {cid} reason={reason}")
            raw.close()
            return
        peer = "-"
        pc = s.getpeercert()
        if pc:
            peer = dict(x[0] for x in pc.get("subject", ())).get("commonName", "?")
        st = ctx.session_stats()
        self.log(f"handshake {cid} resumed={int(s.session_reused)} version={s.version()} gen={gen} peer={peer} "
                 f"hits={st['hits']} misses={st['misses']} t={time.time():.3f}")
        bytes_in = bytes_out = 0
        crc = 0
        reason = "error"
        idle = a.get("idle_close_ms")
        end = time.monotonic() + SESSION_LIMIT_S
        try:
            if a.get("greeting"):
                g = bytes.fromhex(a["greeting"])
                s.sendall(g)
                bytes_out += len(g)
            ku = a.get("key_update_after_ms")
            ku_due = bool(ku)  # one KeyUpdate per quiet period
            while time.monotonic() < end:
                s.settimeout(ku / 1000.0 if ku_due else idle / 1000.0 if idle else 1.0)
                try:
                    data = s.recv(RECV_CHUNK)
                except ssl.SSLEOFError:
                    reason = "ragged"  # EOF without close_notify
                    break
                except (socket.timeout, TimeoutError):
                    if ku_due:
                        ku_due = False
                        self.log(f"key_update {cid} ok={int(_key_update(s))} t={time.time():.3f}")
                        continue
                    if not idle:
                        continue
                    reason = "idle"
                    # close_notify, without waiting for the peer's.
                    s.setblocking(False)
                    try:
                        s.unwrap()
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, OSError, ValueError):
                        pass
                    break
                if not data:
                    reason = "eof"  # close_notify: answer with ours
                    if a.get("trailer_on_eof"):
                        t = b"BYE %d\n" % bytes_in
                        s.settimeout(HANDSHAKE_TIMEOUT_S)
                        s.sendall(t)
                        bytes_out += len(t)
                    s.setblocking(False)
                    try:
                        s.unwrap()
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, OSError, ValueError):
                        pass
                    break
                bytes_in += len(data)
                ku_due = bool(ku)
                crc = zlib.crc32(data, crc)
                if a.get("burst_close_on") and bytes.fromhex(a["burst_close_on"]) in data:
                    bytes_out += _burst_close(s)
                    reason = "burst"
                    break
                s.settimeout(HANDSHAKE_TIMEOUT_S)
                s.sendall(data)
                bytes_out += len(data)
                if a.get("truncate_on") and bytes.fromhex(a["truncate_on"]) in data:
                    reason = "truncated"  # close() sends no close_notify
                    break
        except (OSError, ValueError):
            reason = "error"
        finally:
            try:
                raw.close()
                s.close()
            except OSError:
                pass
            self.log(f"close {cid} {bytes_in} {bytes_out} {reason} crc32={crc:08x} t={time.time():.3f}")


def _burst_close(s):
    """Three records and a close_notify in one TCP segment, then wait (up to
    SESSION_LIMIT_S) for the peer to close TCP. Returns the bytes sent."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    sent = 0
    for n in (1, 2, 3):
        part = b"part %d\n" % n
        s.sendall(part)
        sent += len(part)
    s.setblocking(False)
    try:
        s.unwrap()  # writes the close_notify, then wants the peer's
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, OSError, ValueError):
        pass
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    tcp = socket.fromfd(s.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # the bare TCP stream (a dup)
    tcp.settimeout(SESSION_LIMIT_S)
    try:
        while tcp.recv(4096):
            pass
    except OSError:
        pass
    finally:
        tcp.close()
    return sent


def _main(argv):
    assert argv and argv[0] == "serve", "usage: tlsutil.py serve --events F --cert C --key K [options]"
    args = {}
    i = 1
    flags = {"--single-use-tickets", "--trailer-on-eof"}
    while i < len(argv):
        k = argv[i]
        if k in flags:
            args[k[2:].replace("-", "_")] = True
            i += 1
            continue
        args[k[2:].replace("-", "_")] = argv[i + 1]
        i += 2
    for k in ("idle_close_ms", "key_update_after_ms"):
        if k in args:
            args[k] = int(args[k])
    _Server(args).serve()


if __name__ == "__main__":
    _main(sys.argv[1:])
