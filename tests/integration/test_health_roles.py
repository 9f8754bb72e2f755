"""Role-aware health checks (issue 15, "Also"): `postgres_primary` logs in
as a configured user (trust, cleartext, md5 or SCRAM-SHA-256 with the
server's signature verified) and asks `SELECT pg_is_in_recovery()`;
`redis_master` sends [AUTH and] ROLE. After a failover the demoted node still
accepts connections, and these checks are what takes it down.

Against real servers: a PostgreSQL 15 primary made with initdb (run as the
postgres user with setpriv, in a directory under /tmp that user can enter),
a standby made from it with pg_basebackup -R, promoted with pg_promote();
two redis-server, one REPLICAOF the other, then REPLICAOF NO ONE. Every wait
is on an event (a log line of the daemon or of the server, a psql answer),
every process is stopped by PID at teardown.
"""

import base64
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tlsutil import Pki
from wp import (
    SLOW,
    WARMPOOLD,
    WAIT_TIMEOUT,
    Procs,
    at,
    free_port,
    wait_until,
    warmpoolctl,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
LONG = WAIT_TIMEOUT * SLOW * 3  # a standby's promotion, a SCRAM login under valgrind
CHECK = {"interval": "200ms", "fast_interval": "100ms", "down_interval": "200ms", "timeout": "3s",
         "rise": 2, "fall": 1}


def _need(exe, package):
    path = shutil.which(exe) or (exe if os.access(exe, os.X_OK) else None)
    if not path:
        pytest.fail(f"{exe} is not installed (Debian package {package}; `make deps` installs it)")
    return path


def down_re(pool, addr, why=""):
    return rf"pool={pool} backend={re.escape(addr)}: backend (?:up|unknown) -> down: .*{why}"


def up_re(pool, addr):
    return rf"pool={pool} backend={re.escape(addr)}: backend (?:down|unknown) -> up"


def role_pool(sockdir, name, backends, **check):
    # min_idle 0: the pool's own warm connections are not what is tested here.
    if check.get("type") == "postgres_primary":
        check = {"database": "postgres", **check}  # the default is the user's name
    return {"listen": str(Path(sockdir) / f"{name}.sock"), "backends": backends, "min_idle": 0,
            "max_connections": 4, "connect_timeout": "3s",
            "health_check": {**CHECK, **check}}


def secret(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


# ---------------------------------------------------------------------------
# PostgreSQL

HBA = """\
host all postgres 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all md5_user 127.0.0.1/32 md5
host all clear_user 127.0.0.1/32 password
host all scram_user 127.0.0.1/32 scram-sha-256
hostssl all tls_user 127.0.0.1/32 scram-sha-256
"""

ROLES = """\
SET password_encryption = 'scram-sha-256';
CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
CREATE ROLE clear_user LOGIN PASSWORD 'clear-secret';
CREATE ROLE tls_user LOGIN PASSWORD 'tls-secret';
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
CREATE ROLE trust_user LOGIN;
"""


class Pg:
    """One postgres server (primary or standby) of a throwaway cluster."""

    def __init__(self, procs, top, name, ssl=None):
        self.procs, self.top, self.name, self.ssl = procs, top, name, ssl
        self.data = top / name
        self.port = free_port()
        self.logfile = top / f"{name}.log"
        self.proc = None

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def start(self, ready_words):
        argv = [*ASUSER(), str(PG_BIN / "postgres"), "-D", self.data, "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off",
                "-c", f"hba_file={self.top / 'pg_hba.conf'}"]
        if self.ssl:
            argv += ["-c", "ssl=on", "-c", f"ssl_cert_file={self.ssl[0]}", "-c", f"ssl_key_file={self.ssl[1]}"]
        self.proc = self.procs.spawn(f"postgres-{self.name}", argv, self.logfile)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres {self.name} exited with {self.proc.returncode}: {self.log()}")
            return ready_words in self.log()

        wait_until(ready, 60.0, what=f"postgres {self.name} to accept connections")
        return self

    def psql(self, sql):
        psql = _need("psql", "postgresql-client")
        r = subprocess.run([psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                            "postgres", "-d", "postgres", "-Atc", sql],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PGSSLMODE": "disable"})
        assert r.returncode == 0, f"psql {sql!r}: {r.stdout}\n{r.stderr}"
        return r.stdout.strip()


def ASUSER():
    return [_need("setpriv", "util-linux"), "--reuid=postgres", "--regid=postgres", "--init-groups"]


@pytest.fixture
def pg(procs):
    """pg(ssl=None) -> the primary (Pg) of a new cluster with the roles of
    ROLES and the rules of HBA; pg.standby(primary) -> a standby of it made
    with pg_basebackup -R. Stopped with SIGINT (a fast shutdown) before the
    registry's SIGTERM; their directories removed."""
    servers, dirs = [], []

    def primary(ssl=None):
        initdb = _need(str(PG_BIN / "initdb"), "postgresql")
        top = Path(tempfile.mkdtemp(prefix="wppgr", dir="/tmp"))
        dirs.append(top)
        shutil.chown(top, "postgres", "postgres")
        r = subprocess.run([*ASUSER(), initdb, "-D", top / "primary", "--auth=trust", "-U", "postgres", "-N"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"initdb failed: {r.stdout}\n{r.stderr}"
        (top / "pg_hba.conf").write_text(HBA)
        if ssl:
            for src, dst in ((ssl[0], "server.crt"), (ssl[1], "server.key")):
                (top / dst).write_bytes(Path(src).read_bytes())
                shutil.chown(top / dst, "postgres", "postgres")
                os.chmod(top / dst, 0o600)
            ssl = (top / "server.crt", top / "server.key")
        p = Pg(procs, top, "primary", ssl).start("database system is ready to accept connections")
        servers.append(p)
        p.psql(ROLES)
        return p

    def standby(of):
        s = Pg(procs, of.top, "standby", of.ssl)
        r = subprocess.run([*ASUSER(), _need(str(PG_BIN / "pg_basebackup"), "postgresql"), "-D", s.data,
                            "-h", "127.0.0.1", "-p", str(of.port), "-U", "postgres", "-R", "-X", "stream",
                            "-c", "fast"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"pg_basebackup failed: {r.stdout}\n{r.stderr}"
        s.start("database system is ready to accept read-only connections")
        servers.append(s)
        return s

    primary.standby = standby
    yield primary
    for s in servers:
        if s.proc:
            Procs.stop(s.proc, signal.SIGINT)
    for top in dirs:
        shutil.rmtree(top, ignore_errors=True)


def test_postgres_standby_is_down_until_promoted(pg, start_daemon, sockdir, tmp_path):
    """A primary and its standby behind one pool, checked as scram_user
    (SCRAM-SHA-256; pg_hba demands it): the standby accepts connections and
    logins but is down, with the reason; the primary is up. Promoted, the
    standby comes up."""
    primary = pg()
    standby = pg.standby(primary)
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    pw = secret(tmp_path, "scram.pw", "scram-secret\n")
    d = start_daemon(pools={"pg": role_pool(sockdir, "pg", [primary.addr, standby.addr], type="postgres_primary",
                                            user="scram_user", password_file=pw)})
    line = d.wait_log(down_re("pg", standby.addr), timeout=LONG)[0]
    assert "check failed: postgres_primary: the server is a standby (in recovery)" in line, line
    d.wait_log(up_re("pg", primary.addr), timeout=LONG)
    # The checks logged in every time (no failed authentication on either server).
    assert "authentication failed" not in primary.log() + standby.log()

    assert standby.psql("SELECT pg_promote()") == "t"
    d.wait_log(up_re("pg", standby.addr), timeout=LONG)
    assert not re.search(down_re("pg", primary.addr), d.log())


def test_postgres_md5_cleartext_trust_and_a_wrong_password(pg, start_daemon, sockdir, tmp_path):
    """One pool per way of logging in, each against the same primary: md5
    (md5_user's stored password is md5, pg_hba says md5), cleartext
    (password), trust (no password_file at all) and SCRAM with a wrong
    password, which is down with the server's own error; the password file
    corrected and the config reloaded, it comes up."""
    primary = pg()
    wrong = secret(tmp_path, "wrong.pw", "not-the-password\n")
    pools = {
        "md5": role_pool(sockdir, "md5", [primary.addr], type="postgres_primary", user="md5_user",
                         password_file=secret(tmp_path, "md5.pw", "md5-secret\n")),
        "clear": role_pool(sockdir, "clear", [primary.addr], type="postgres_primary", user="clear_user",
                           database="postgres", password_file=secret(tmp_path, "clear.pw", "clear-secret")),
        "trust": role_pool(sockdir, "trust", [primary.addr], type="postgres_primary", user="trust_user",
                           database="template1"),
        "wrong": role_pool(sockdir, "wrong", [primary.addr], type="postgres_primary", user="scram_user",
                           password_file=wrong),
    }
    d = start_daemon(pools=pools)
    for name in ("md5", "clear", "trust"):
        d.wait_log(up_re(name, primary.addr), timeout=LONG)
    line = d.wait_log(down_re("wrong", primary.addr), timeout=LONG)[0]
    assert 'postgres_primary: FATAL 28P01: password authentication failed for user "scram_user"' in line, line
    assert "not-the-password" not in d.log()
    # The server saw each method (its own log says which pg_hba line).
    log = primary.log()
    assert 'password authentication failed for user "scram_user"' in log
    for user in ("md5_user", "clear_user", "trust_user"):
        assert f'authentication failed for user "{user}"' not in log, log[-3000:]

    Path(wrong).write_text("scram-secret\n")
    r = warmpoolctl(d, "reload")  # the same config, a new password in the same file
    assert r.returncode == 0 and "1 changed in place" in r.stdout, r
    d.wait_log(up_re("wrong", primary.addr), timeout=LONG)


def test_postgres_primary_over_tls(pg, start_daemon, sockdir, tmp_path):
    """A pool with tls: {starttls: postgres}: the check does the SSLRequest,
    a verified handshake and then logs in through TLS (tls_user may log in
    only over TLS: pg_hba rejects it in plain text), picking SCRAM-SHA-256
    out of the SCRAM-SHA-256-PLUS and SCRAM-SHA-256 a TLS server offers."""
    pki = Pki(tmp_path / "pki")
    primary = pg(ssl=(pki.server_cert, pki.server_key))
    pools = {
        "tls": role_pool(sockdir, "tls", [primary.addr], type="postgres_primary", user="tls_user",
                         password_file=secret(tmp_path, "tls.pw", "tls-secret\n")),
        "plain": role_pool(sockdir, "plain", [primary.addr], type="postgres_primary", user="tls_user",
                           password_file=secret(tmp_path, "tls2.pw", "tls-secret\n")),
    }
    pools["tls"]["tls"] = {"ca_file": pki.ca, "starttls": "postgres"}
    d = start_daemon(pools=pools)
    d.wait_log(up_re("tls", primary.addr), timeout=LONG)
    line = d.wait_log(down_re("plain", primary.addr), timeout=LONG)[0]
    assert 'FATAL 28000: no pg_hba.conf entry for host "127.0.0.1", user "tls_user"' in line, line


# ---------------------------------------------------------------------------
# A PostgreSQL server of our own, for what a real one never does: sign SCRAM
# without knowing the password (an impostor at the primary's address), send
# a length of 2 GiB, stall, or offer only channel binding. Which it does is
# chosen by the user name of the StartupMessage.


def _b64(b):
    return base64.b64encode(b).decode()


class FakePg:
    PASSWORD = "fake-secret"

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.ls.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.ls.getsockname()[1]}"
        self.events = []  # (user, what)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.ls.close()

    def seen(self, user, what):
        return (user, what) in self.events

    def _serve(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    @staticmethod
    def _recv(c, n):
        data = b""
        while len(data) < n:
            chunk = c.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _msg(self, c):
        t = self._recv(c, 1)
        n = struct.unpack("!I", self._recv(c, 4))[0]
        return t, self._recv(c, n - 4)

    @staticmethod
    def _send(c, t, body=b""):
        c.sendall(t + struct.pack("!I", len(body) + 4) + body)

    def _conn(self, c):
        c.settimeout(10)
        with c:
            try:
                n = struct.unpack("!I", self._recv(c, 4))[0]
                body = self._recv(c, n - 4)
                assert body[:4] == struct.pack("!I", 196608), body
                kv = body[4:].split(b"\0")
                user = dict(zip(kv[0::2], kv[1::2]))[b"user"].decode()
                self.events.append((user, "startup"))
                getattr(self, "_" + user)(c, user)
            except (EOFError, OSError):
                pass

    def _stall(self, c, user):
        c.recv(1)  # until the check gives up and closes

    def _huge(self, c, user):
        c.sendall(b"R" + struct.pack("!I", 0x7FFFFFFF) + b"\0" * 64)
        c.recv(1)

    def _plus_only(self, c, user):
        self._send(c, b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256-PLUS\0\0")
        c.recv(1)

    def _scram(self, c, user, knows):
        self._send(c, b"R", struct.pack("!I", 10) + b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
        t, body = self._msg(c)
        mech, rest = body.split(b"\0", 1)
        assert t == b"p" and mech == b"SCRAM-SHA-256", body
        first = rest[4 : 4 + struct.unpack("!I", rest[:4])[0]].decode()
        assert first.startswith("n,,"), first
        bare = first[3:]
        cnonce = dict(kv.split("=", 1) for kv in bare.split(","))["r"]
        salt = os.urandom(16)
        server_first = f"r={cnonce}{_b64(os.urandom(18))},s={_b64(salt)},i=4096"
        self._send(c, b"R", struct.pack("!I", 11) + server_first.encode())
        t, body = self._msg(c)
        final = body.decode()
        without_proof, proof = final.split(",p=")
        auth = f"{bare},{server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac("sha256", self.PASSWORD.encode(), salt, 4096)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        sig = hmac.new(hashlib.sha256(client_key).digest(), auth, "sha256").digest()
        if _b64(bytes(a ^ b for a, b in zip(client_key, sig))) == proof:
            self.events.append((user, "proof ok"))
        if knows:
            server_sig = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), auth, "sha256").digest()
        else:  # an impostor cannot compute it: it does not have the password (nor its stored keys)
            server_sig = os.urandom(32)
        self._send(c, b"R", struct.pack("!I", 12) + b"v=" + _b64(server_sig).encode())
        self._send(c, b"R", struct.pack("!I", 0))
        self._send(c, b"S", b"server_version\x0015.0\0")
        self._send(c, b"K", struct.pack("!II", 1, 2))
        self._send(c, b"Z", b"I")
        t, body = self._msg(c)
        if t != b"Q":
            self.events.append((user, "no query: " + t.decode(errors="replace")))
            return
        self.events.append((user, "query"))
        self._send(c, b"T", b"\0\x01pg_is_in_recovery\0" + b"\0" * 6 + struct.pack("!IhIh", 16, 1, 0xFFFFFFFF, 0))
        self._send(c, b"D", struct.pack("!hI", 1, 1) + b"f")
        self._send(c, b"C", b"SELECT 1\0")
        self._send(c, b"Z", b"I")
        t, _ = self._msg(c)
        self.events.append((user, "terminate" if t == b"X" else "other: " + t.decode(errors="replace")))

    def _honest(self, c, user):
        self._scram(c, user, knows=True)

    def _impostor(self, c, user):
        self._scram(c, user, knows=False)


@pytest.fixture
def fake_pg():
    f = FakePg()
    yield f
    f.close()


def test_postgres_primary_against_a_hostile_server(fake_pg, start_daemon, sockdir, tmp_path):
    """The check's side of each attack: an impostor that runs SCRAM without
    the password (it accepts any proof and signs at random) is down, its
    signature refused, and no query is ever sent to it; the honest server,
    the same code with the password, is up and gets a clean Terminate; a 2
    GiB length is refused at once (no buffer grows); a server that stalls
    is bounded by `timeout`; a server that offers only SCRAM-SHA-256-PLUS
    is refused by name."""
    pw = secret(tmp_path, "fake.pw", FakePg.PASSWORD + "\n")
    addr = fake_pg.addr
    users = ("honest", "impostor", "huge", "stall", "plus_only")
    pools = {u: role_pool(sockdir, u, [addr], type="postgres_primary", user=u, password_file=pw,
                          timeout=f"{int(500 * SLOW)}ms" if u == "stall" else CHECK["timeout"]) for u in users}
    d = start_daemon(pools=pools)
    d.wait_log(up_re("honest", addr), timeout=LONG)
    wait_until(lambda: fake_pg.seen("honest", "terminate"), LONG, what="the honest server's Terminate")
    assert fake_pg.seen("honest", "proof ok")
    line = d.wait_log(down_re("impostor", addr), timeout=LONG)[0]
    assert ("postgres_primary: SCRAM: the server's SCRAM signature does not verify (it does not know the "
            "password)") in line, line
    assert fake_pg.seen("impostor", "proof ok")  # the same client: only the server's signature differs
    assert not fake_pg.seen("impostor", "query")
    line = d.wait_log(down_re("huge", addr), timeout=LONG)[0]
    assert "postgres_primary: message 'R' of 2147483647 bytes (more than 8191, or malformed)" in line, line
    line = d.wait_log(down_re("stall", addr), timeout=LONG)[0]
    assert "timeout waiting for the authentication request (postgres_primary)" in line, line
    line = d.wait_log(down_re("plus_only", addr), timeout=LONG)[0]
    assert "the server offers no SASL mechanism the check speaks" in line, line
    assert FakePg.PASSWORD not in d.log()


# ---------------------------------------------------------------------------
# Redis


def start_redis(procs, tmp_path, name, *extra):
    exe = _need("redis-server", "redis-server")
    port = free_port()
    out = tmp_path / f"{name}.stdout"
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path), "--dbfilename", f"{name}.rdb", *extra]
    p = procs.spawn(name, argv, tmp_path / f"{name}.stderr", stdout_path=out)

    def ready():
        if p.poll() is not None:
            raise AssertionError(f"redis-server exited with {p.returncode}: {out.read_text(errors='replace')}")
        return "Ready to accept connections" in out.read_text(errors="replace")

    wait_until(ready, 10.0, what="redis-server to accept connections")
    return port


def redis_cmd(port, *args, password=None):
    """One command (after AUTH when `password`) in RESP; its first reply line."""
    def enc(parts):
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)

    cmds = ([enc([b"AUTH", password.encode()])] if password else []) + [enc([a.encode() for a in args])]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(cmds))
        data = b""
        while data.count(b"\r\n") < len(cmds):
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    return data.split(b"\r\n")[len(cmds) - 1].decode()


def test_redis_replica_is_down_until_promoted(procs, start_daemon, sockdir, tmp_path):
    a = start_redis(procs, tmp_path, "redis-a")
    b = start_redis(procs, tmp_path, "redis-b")
    assert redis_cmd(b, "REPLICAOF", "127.0.0.1", str(a)) == "+OK"
    addr_a, addr_b = f"127.0.0.1:{a}", f"127.0.0.1:{b}"
    d = start_daemon(pools={"r": role_pool(sockdir, "r", [addr_a, addr_b], type="redis_master")})
    line = d.wait_log(down_re("r", addr_b), timeout=LONG)[0]
    assert "check failed: redis_master: the server is a replica" in line, line
    d.wait_log(up_re("r", addr_a), timeout=LONG)

    assert redis_cmd(b, "REPLICAOF", "NO", "ONE") == "+OK"
    d.wait_log(up_re("r", addr_b), timeout=LONG)
    assert not re.search(down_re("r", addr_a), d.log())
    # And the other way round: the old master demoted.
    assert redis_cmd(a, "REPLICAOF", "127.0.0.1", str(b)) == "+OK"
    d.wait_log(down_re("r", addr_a, "the server is a replica"), timeout=LONG)


def test_redis_master_with_auth(procs, start_daemon, sockdir, tmp_path):
    """AUTH before ROLE: with the password (default user, and a named ACL
    user) the master is up; with a wrong one it is down with the server's
    words, and the password is in no log line."""
    port = start_redis(procs, tmp_path, "redis-auth", "--requirepass", "pw-default",
                       "--user", "checker", "on", ">pw-checker", "+role", "+auth")
    addr = f"127.0.0.1:{port}"
    pools = {
        "ok": role_pool(sockdir, "ok", [addr], type="redis_master",
                        password_file=secret(tmp_path, "r.pw", "pw-default\n")),
        "acl": role_pool(sockdir, "acl", [addr], type="redis_master", user="checker",
                         password_file=secret(tmp_path, "c.pw", "pw-checker")),
        "bad": role_pool(sockdir, "bad", [addr], type="redis_master",
                         password_file=secret(tmp_path, "b.pw", "wrong-one\n")),
        "none": role_pool(sockdir, "none", [addr], type="redis_master"),
    }
    d = start_daemon(pools=pools)
    d.wait_log(up_re("ok", addr), timeout=LONG)
    d.wait_log(up_re("acl", addr), timeout=LONG)
    line = d.wait_log(down_re("bad", addr), timeout=LONG)[0]
    assert "redis_master: AUTH failed: WRONGPASS" in line, line
    line = d.wait_log(down_re("none", addr), timeout=LONG)[0]
    assert "redis_master: ROLE failed: NOAUTH" in line, line
    assert "wrong-one" not in d.log() and "pw-default" not in d.log()


# ---------------------------------------------------------------------------
# the configuration


def check_config(tmp_path, text):
    cfg = tmp_path / "roles.yaml"
    cfg.write_text(text)
    p = subprocess.run([str(WARMPOOLD), "--check-config", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    return cfg, p


def test_check_config_role_errors(tmp_path, sockdir):
    missing = tmp_path / "no-such.pw"
    text = f"""\
pools:
  nouser:
    listen: {sockdir}/a.sock
    backends: 127.0.0.1:5432
    health_check:
      type: postgres_primary
  nofile:
    listen: {sockdir}/b.sock
    backends: 127.0.0.1:5432
    health_check:
      type: postgres_primary
      user: app
      password_file: {missing}
  dir:
    listen: {sockdir}/c.sock
    backends: 127.0.0.1:6379
    health_check:
      type: redis_master
      password_file: {tmp_path}
  stray:
    listen: {sockdir}/d.sock
    backends: 127.0.0.1:6379
    health_check:
      type: redis
      user: app
"""
    cfg, p = check_config(tmp_path, text)
    assert p.returncode == 1, p
    line, col = at(text, "type: postgres_primary")
    assert (f"{cfg}:{line}:{col + 6}: pools.nouser.health_check.type: expected user for type postgres_primary"
            in p.stderr), p.stderr
    line, col = at(text, str(missing))
    assert (f"{cfg}:{line}:{col}: pools.nofile.health_check.password_file: expected a readable file "
            f"(No such file or directory), got \"/tmp/" in p.stderr), p.stderr
    line, col = at(text, f"password_file: {tmp_path}\n")
    assert (f"{cfg}:{line}:{col + 15}: pools.dir.health_check.password_file: expected a readable file "
            f"(not a regular file)" in p.stderr), p.stderr
    line, col = at(text, "user: app", 2)
    assert (f"{cfg}:{line}:{col + 6}: pools.stray.health_check.user: expected only with type: postgres_primary "
            f"or redis_master (type is redis)" in p.stderr), p.stderr

    # An empty password file, and a good one that loads.
    empty = tmp_path / "empty.pw"
    empty.write_text("\n")
    good = tmp_path / "good.pw"
    good.write_text("s3cret\n")
    ok = f"""\
pools:
  p:
    listen: {sockdir}/e.sock
    backends: 127.0.0.1:5432
    health_check: {{type: postgres_primary, user: app, database: db, password_file: "{good}"}}
"""
    cfg, p = check_config(tmp_path, ok)
    assert p.returncode == 0, p
    cfg, p = check_config(tmp_path, ok.replace(str(good), str(empty)))
    assert p.returncode == 1 and "expected a file holding a password of 1 to 1024 bytes" in p.stderr, p
    assert "s3cret" not in p.stderr
