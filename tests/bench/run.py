#!/usr/bin/python3
"""tests/bench/run.py — warmpool side by side with HAProxy, nginx, socat, stunnel and twemproxy.

Run by `make bench` (never by `make check`):

    /usr/bin/python3 tests/bench/run.py --build /abs/build [--quick] [--repeats N]
        [--targets direct,warmpool,...] [--workloads setup,rtt,bulk,hold,plain,tls,redis] [--keep]
        [--tls-versions 1.2,1.3] [--tls-setup-sessions N]

Every target is started by this script, with a minimal configuration in a
temporary directory, fresh for every run of every workload, on 127.0.0.1 and
Unix sockets only; the backend is build/wpbackend and the client is
build/wpload (tests/bench/wpload.c), which checks every byte it receives.

  direct    wpload -> wpbackend over TCP (the physical limit)
  warmpool  wpload -> Unix socket -> build/warmpoold -> wpbackend
  warmpool-handoff  the same warmpoold with a handoff socket: wpload gets
            each connection with libwarmpool's wp_checkout() and talks to
            wpbackend on the handed-over TCP socket itself (rtt and bulk only;
            setup and hold need many connections at once and are n/a)
  haproxy   mode tcp, bind unix@, nbthread 1, option splice-auto
  haproxy-splice  the same, always splicing (rtt and bulk only)
  nginx     stream module, listen unix:, one worker
  socat     UNIX-LISTEN:...,fork TCP:127.0.0.1:PORT

TLS to the backend (a second table, against `wpbackend --tls-cert ...`, one
backend per TLS version pinned with --tls-version; the certificates, a CA and
a server certificate for localhost and 127.0.0.1 (RSA 2048), are made by this
script with the openssl CLI in its temporary directory):

  direct-tls    wpload -> wpbackend, wpload itself the TLS client (verifying the
                chain and the name; a full handshake per session)
  warmpool-tls  wpload -> Unix socket -> warmpoold (a pool with tls: {ca_file,
                server_name: localhost}) -> wpbackend; warm before measuring
  haproxy-ssl   mode tcp, bind unix@, nbthread 1, `server ... ssl verify required
                ca-file CA sni str(localhost) verifyhost localhost`
  stunnel       stunnel4 client mode, accept on a Unix socket, verifyChain and
                checkHost localhost

Real clients (a third table, family "redis"): Debian's redis-benchmark
(`-t get -c 16`, keep-alive, and `-k 0`, a new connection per request)
against a real redis-server (TCP on 127.0.0.1 and a Unix socket):

  redis-tcp       redis-benchmark -> redis-server over TCP (direct)
  redis-unix      redis-benchmark -> redis-server's Unix socket (direct)
  warmpool-redis  redis-benchmark -> Unix socket -> warmpoold (a plain pool) -> TCP
  warmpool-redis-reuse  the same with `reuse: {reset_send: 'RESET\r\nECHO {nonce}\r\n',
                  reset_expect: '+RESET\r\n$32\r\n{nonce}\r\n'}`: a cleanly ended session's
                  connection goes back to the pool after Redis's RESET
  haproxy-redis   mode tcp, bind unix@, nbthread 1, option splice-auto
  twemproxy       nutcracker (Debian), `redis: true`, one server connection,
                  listening on a Unix socket

redis-server counts the GETs it served (INFO commandstats): a run whose count
is not exactly the requests made is a FAIL.

Restarts and upgrades (a fourth table, family "restart"): RESTART_CLIENTS
clients run setup sessions in a closed loop (wpload --trace: each session's
start, end and outcome on CLOCK_MONOTONIC) against a backend that greets after
1 ms, and RESTART_AT seconds in the proxy is switched:

  warmpool-upgrade  `warmpoolctl upgrade` (the same binary re-executed; listeners
                    and idle connections passed to the new process)
  warmpool-restart  SIGTERM, wait for the exit, start warmpoold again (what users
                    get without upgrade)
  haproxy-reload    HAProxy's seamless reload: `stats socket ... expose-fd
                    listeners`, then a new `haproxy -x STATS -sf OLDPID`
  warmpool-steady   no switch: the same measurement on an undisturbed pool (the
                    noise floor of the ratio on this machine)

Per run: the failed sessions (the whole run), the worst session across the
switch (sessions overlapping [command, old process gone + RESTART_AFTER]),
the p99 before it, their ratio, the longest time without a completed session
in that window, and from the backend's --events the accepts in that window,
those beyond the sessions served there, and the connections it saw closed
without ever carrying a byte from a client (a warm connection thrown away).
A failed session is a figure, not a FAIL; a switch that does not happen, a
wrong byte or a proxy that dies is a FAIL.

Each figure is the median of --repeats runs (min-max shown); the order of the
targets rotates from one repeat to the next. The table (one row per figure,
one column per target, each with its ratio to direct and to haproxy) is
printed and written to BUILD/bench/results.md and results.tsv; every run's
raw wpload output goes to BUILD/bench/raw.jsonl and the generated configs to
BUILD/bench/configs/. A wrong byte, a failed session or a proxy that fails
to start or dies marks the cell FAIL and makes the script exit 1.

Units: MB = 10^6 bytes, GB = 10^9 bytes, KiB = 1024 bytes, latency in µs.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time

TARGETS = ["direct", "warmpool", "warmpool-handoff", "haproxy", "haproxy-splice", "nginx", "socat"]
# For exploring HAProxy's splice settings (not run by default).
EXTRA_TARGETS = ["haproxy-nosplice"]
# HAProxy's best splice setting depends on the workload: splice-auto (its own
# heuristic) gives the best 64-byte round trips, forced splicing both ways the
# best bulk throughput and CPU. Both run where it matters; elsewhere (setup,
# hold: 64-byte messages) only `haproxy` does. ×h compares with the better one.
HAPROXY_TARGETS = ("haproxy", "haproxy-splice", "haproxy-nosplice")
ONLY_GROUPS = {"haproxy-splice": ("rtt", "bulk"), "haproxy-nosplice": ("rtt", "bulk")}
# Workloads a target cannot run at all: their cells read n/a (ONLY_GROUPS' read
# "not run"). wpload's --handoff drives blocking connections only.
NA_GROUPS = {"warmpool-handoff": ("setup", "hold")}
WARMPOOL_TARGETS = ("warmpool", "warmpool-handoff")
HAPROXY_SPLICE = {
    "haproxy": "    option splice-auto\n",
    "haproxy-nosplice": "",
    "haproxy-splice": "    option splice-request\n    option splice-response\n",
    "haproxy-redis": "    option splice-auto\n",
    "haproxy-reload": "    option splice-auto\n",
}
# TLS targets: their workloads (family "tls") run against a TLS backend, the
# others' (family "plain") against a plain one; each family is its own table.
TLS_TARGETS = ["direct-tls", "warmpool-tls", "haproxy-ssl", "stunnel"]
WARMPOOL_TARGETS_ALL = ("warmpool", "warmpool-handoff", "warmpool-tls", "warmpool-redis", "warmpool-redis-reuse",
                        "warmpool-upgrade", "warmpool-restart", "warmpool-steady")
# Real clients (family "redis"): redis-benchmark against redis-server.
REDIS_TARGETS = ["redis-tcp", "redis-unix", "warmpool-redis", "warmpool-redis-reuse", "haproxy-redis", "twemproxy"]
REDIS_DIRECT = ("redis-tcp", "redis-unix")
# Redis answers RESET with +RESET (and drops the connection's state: selected
# database, MULTI, subscriptions, client name): the pool's reset exchange.
REDIS_REUSE = "{reset_send: 'RESET\\r\\nECHO {nonce}\\r\\n', reset_expect: '+RESET\\r\\n$32\\r\\n{nonce}\\r\\n'}"
REDIS_KEY = "key:__rand_int__"  # the key redis-benchmark's GET asks for (no -r)
REDIS_CLIENTS = 16  # redis-benchmark -c
# per family: the direct target (×d), HAProxy's targets (×h), the second peer (×s)
# Restarts (family "restart"): clients in a setup loop while the proxy is switched.
RESTART_TARGETS = ["warmpool-upgrade", "warmpool-restart", "haproxy-reload", "warmpool-steady"]
RESTART_CLIENTS = 4     # wpload -c: closed-loop clients (2 per core: not a saturated machine)
RESTART_AT = 2.0        # seconds of load before the switch
RESTART_LOAD = 5.0      # seconds of load in all
RESTART_WARM = 0.5      # seconds at the start left out of the p99 before the switch
RESTART_AFTER = 0.5     # the switch window goes on this long after the old process is gone
RESTART_FAIL_PAUSE_MS = 1  # a client whose session failed tries again after this long
FAMILY_REFS = {"plain": ("direct", HAPROXY_TARGETS, None),
               "tls": ("direct-tls", ("haproxy-ssl",), "stunnel"),
               "redis": ("redis-tcp", ("haproxy-redis",), "twemproxy"),
               "restart": (None, (), None)}  # the figures are their own comparison
TLS_NAME = "localhost"  # the name in the server certificate, sent as SNI and verified
HOLD_TLS_SESSIONS = 2000
GREETING = "220 wpbackend ready\\r\\n"  # wpbackend/wpload escape syntax
HOLD_SESSIONS = 9000
PROXY_MAXCONN = 9500  # > HOLD_SESSIONS; 2 fds each must fit the hard limit of 20000
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def family(target):
    if target in RESTART_TARGETS:
        return "restart"
    return "tls" if target in TLS_TARGETS else "redis" if target in REDIS_TARGETS else "plain"


class BenchError(Exception):
    """A run failed: the message says why (it becomes the cell's note)."""


# ---------------------------------------------------------------- processes

LIVE = []  # every Proc started and not yet stopped


def _child_setup():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


class Proc:
    """A process in its own process group, so stopping it stops its children."""

    def __init__(self, name, argv, log_path, pin=False, stdout=None):
        self.name = name
        if pin:
            argv = ["taskset", "-c", "0"] + argv
        self.argv = argv
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self.log,
            stderr=self.log,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
        self.pid = self.p.pid  # taskset execs the program: same pid
        LIVE.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal the group, wait (bounded), then SIGKILL the group."""
        try:
            if self.alive():
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.p.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # children (socat's forks, nginx's worker) may outlive the leader
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        finally:
            self.log.close()
            if self in LIVE:
                LIVE.remove(self)

    def log_tail(self, n=8):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return " | ".join(lines[-n:])
        except OSError:
            return ""


class PidProc:
    """A process this script did not start (the one warmpoold's upgrade forks
    and execs): watched and stopped by its pid. Its output goes to the log of
    the process that forked it."""

    def __init__(self, name, pid, log_path):
        self.name = name
        self.pid = pid
        self.log_path = log_path
        LIVE.append(self)

    def alive(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                st = f.read()
        except OSError:
            return False
        return st[st.rindex(")") + 2] != "Z"  # reparented: a zombie until init reaps it

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        try:
            for s, t in ((sig, timeout), (signal.SIGKILL, 5)):
                if not self.alive():
                    break
                try:
                    os.kill(self.pid, s)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + t
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            if self in LIVE:
                LIVE.remove(self)

    log_tail = Proc.log_tail


def stop_all():
    for p in list(reversed(LIVE)):
        p.stop(signal.SIGKILL, 2)


def wait_for(pred, timeout, what, proc=None, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited (status {proc.p.returncode}) while waiting for {what}: "
                             f"{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- /proc readings


def read_stat(pid):
    """(ppid, utime+stime+cutime+cstime in ticks) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def tree(root):
    """The live (and zombie) processes of root's tree."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_stat(d)
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_ticks(root):
    """CPU ticks of root's tree: each live process's own and reaped children's times."""
    total = 0
    for p in tree(root):
        st = read_stat(p)
        if st:
            total += st[1]
    return total


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root):
    """(sum of VmRSS, sum of Pss, process count) over root's tree, KiB."""
    pids = tree(root)
    return sum(status_kib(p, "VmRSS") for p in pids), sum(pss_kib(p) for p in pids), len(pids)


def established_on_port(port):
    """TCP connections in ESTABLISHED whose local port is `port` (server side)."""
    n = 0
    hexport = f":{port:04X}"
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split(None, 4)
                    if parts[1].endswith(hexport) and parts[3] == "01":
                        n += 1
        except OSError:
            pass
    return n


def unix_listening(path):
    """Is a Unix stream socket listening on `path`? Read from /proc/net/unix, so
    no connection is made. HAProxy binds `path.PID.tmp` and renames it, and
    /proc/net/unix keeps the bound name: the socket file must exist too."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if (len(parts) >= 8 and (parts[7] == path or parts[7].startswith(path + "."))
                        and int(parts[3], 16) & 0x10000):
                    return True
    except OSError:
        pass
    return False


def pool_idle(admin_path):
    """The idle connections of warmpoold's pool (show pools over its admin
    socket), or -1 while it does not answer."""
    import socket as so
    try:
        with so.socket(so.AF_UNIX, so.SOCK_STREAM) as c:
            c.settimeout(2)
            c.connect(admin_path)
            c.sendall(b"show pools --json\n")
            buf = b""
            while not buf.endswith(b"\n\n") and len(buf) < 1 << 20:
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return sum(p["idle"] for p in json.loads(buf.decode().strip())["pools"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def free_tcp_port():
    """A loopback TCP port that was free a moment ago (for a listener the
    bench cannot ask to pick its own: twemproxy's stats)."""
    import socket as so
    with so.socket(so.AF_INET, so.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_call(port, *args):
    """One command to redis-server on 127.0.0.1:port (RESP); the reply's
    first line and, for a bulk string, its payload, as text."""
    import socket as so
    req = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    with so.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(req)
        buf = b""
        while len(buf) < 1 << 20:
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n")
            if not sep:
                continue
            if head[:1] != b"$":
                return head.decode(errors="replace")
            if len(rest) >= int(head[1:]) + 2:
                return rest[:int(head[1:])].decode(errors="replace")
    raise BenchError(f"redis-server on port {port}: no whole reply to {args[0]}")


def redis_calls(port, command):
    """How many times redis-server ran `command` since CONFIG RESETSTAT."""
    info = redis_call(port, "INFO", "commandstats")
    m = re.search(r"^cmdstat_%s:calls=(\d+)" % re.escape(command), info, re.M)
    return int(m.group(1)) if m else 0


def make_certificates(d):
    """A CA and a server certificate for localhost and 127.0.0.1 (RSA 2048,
    30 days), made with the openssl CLI. Returns the paths."""
    os.makedirs(d, mode=0o700)
    p = {k: os.path.join(d, f) for k, f in (("ca", "ca.pem"), ("ca_key", "ca.key"), ("key", "server.key"),
                                              ("csr", "server.csr"), ("cert", "server.pem"),
                                              ("ext", "server.ext"))}
    with open(p["ext"], "w") as f:
        f.write(f"subjectAltName=DNS:{TLS_NAME},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    steps = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["ca_key"], "-out", p["ca"],
         "-days", "30", "-subj", "/CN=warmpool bench CA"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p["key"], "-out", p["csr"],
         "-subj", f"/CN={TLS_NAME}"],
        ["openssl", "x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
         "-out", p["cert"], "-days", "30", "-extfile", p["ext"]],
    ]
    for argv in steps:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv[:3])} failed: {r.stderr.strip()}")
    return p


# ---------------------------------------------------------------- targets


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = os.path.abspath(args.build)
        self.out = os.path.join(self.build, "bench")
        self.tmp = tempfile.mkdtemp(prefix="wpbench-", dir="/tmp")
        self.cfgdir = os.path.join(self.out, "configs")
        shutil.rmtree(self.cfgdir, ignore_errors=True)
        os.makedirs(self.cfgdir)
        self.raw = open(os.path.join(self.out, "raw.jsonl"), "w")
        self.seq = 0
        self.saved_configs = set()
        # a run's restart workload: the process serving after the switch, and
        # the processes it started (stopped with the run's own)
        self.current = None
        self.extra = []
        self.pki = None
        if (any(family(t) == "tls" for t in args.targets.split(","))
                and any(w["family"] == "tls" for w in workloads(args))):
            self.pki = make_certificates(os.path.join(self.tmp, "pki"))

    def bin(self, name):
        return os.path.join(self.build, name)

    def rundir(self, tag):
        self.seq += 1
        d = os.path.join(self.tmp, f"{self.seq:03d}-{tag}")
        os.makedirs(d)
        return d

    def save_config(self, kind, text, workload):
        key = (kind, workload)
        if key in self.saved_configs:
            return
        self.saved_configs.add(key)
        # the paths and port differ per run; keep one example per workload
        with open(os.path.join(self.cfgdir, f"{workload}.{kind}"), "w") as f:
            f.write(text)

    def start_backend(self, d, backend_args, pin, tls_version=None):
        port_file = os.path.join(d, "backend.port")
        argv = [self.bin("wpbackend"), "--listen", "127.0.0.1:0", "--port-file", port_file,
                "--max-conns", "20000"] + backend_args
        if tls_version:
            argv += ["--tls-cert", self.pki["cert"], "--tls-key", self.pki["key"], "--tls-version", tls_version]
        be = Proc("wpbackend", argv, os.path.join(d, "backend.log"), pin=pin)
        wait_for(lambda: os.path.exists(port_file), 10, "wpbackend's port file", be)
        with open(port_file) as f:
            return be, int(f.read().strip())

    def start_redis(self, d, pin):
        """redis-server on a free 127.0.0.1 port and a Unix socket, nothing
        saved to disk; REDIS_KEY set (a 3-byte value, so each GET answers a
        bulk string). Returns (Proc, port, Unix socket path)."""
        usock = os.path.join(d, "redis.sock")
        for _ in range(5):  # the free port may be taken between the probe and redis's bind
            port = free_tcp_port()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", usock,
                    "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", d, "--maxclients", "10000", "--loglevel", "warning"]
            be = Proc("redis-server", argv, os.path.join(d, "redis.log"), pin=pin)
            try:
                wait_for(lambda: unix_listening(usock), 10, "redis-server's Unix socket", be)
            except BenchError:
                be.stop(signal.SIGKILL, 2)
                continue
            if redis_call(port, "SET", REDIS_KEY, "xxx") != "+OK":
                raise BenchError("redis-server did not take the SET")
            return be, port, usock
        raise BenchError("redis-server did not start on a free port")

    def start_proxy(self, target, d, port, pin, workload, min_idle=None):
        """Start a proxy to 127.0.0.1:port; returns (Proc, socket path). For
        warmpool-handoff the path is the pool's handoff socket."""
        sock = os.path.join(d, f"{target}.sock")
        listen = sock
        admin = os.path.join(d, "admin.sock")
        min_idle = self.a.min_idle if min_idle is None else min_idle
        if target in WARMPOOL_TARGETS_ALL:
            cfg = os.path.join(d, "warmpool.yaml")
            handoff = tls = ""
            if target == "warmpool-handoff":
                listen = os.path.join(d, "warmpool.sock")
                handoff = f"    handoff: {{listen: {sock}}}\n"
            if target == "warmpool-tls":
                tls = f"    tls: {{ca_file: {self.pki['ca']}, server_name: {TLS_NAME}}}\n"
            if target == "warmpool-redis-reuse":
                tls = f"    reuse: {REDIS_REUSE}\n"
            text = (
                "daemon:\n"
                "  log_level: warning\n"
                "  shutdown_timeout: 1s\n"
                # its own admin socket: the default path may be another daemon's
                f"  admin_socket: {admin}\n"
                "pools:\n"
                "  bench:\n"
                f"    listen: {listen}\n"
                + handoff +
                f"    backends: [\"127.0.0.1:{port}\"]\n"
                + tls +
                f"    min_idle: {min_idle}\n"
                f"    max_connections: {PROXY_MAXCONN + min_idle}\n"
                "    max_clients: 10000\n"
                "    connect_timeout: 2s\n"
                "    queue_timeout: 10s\n"
            )
            argv = [self.bin("warmpoold"), "-c", cfg]
        elif target == "twemproxy":
            cfg = os.path.join(d, "nutcracker.yml")
            text = (
                "bench:\n"
                # an absolute path: a Unix socket (mode 0600), like the others'
                f"  listen: {sock} 0600\n"
                "  redis: true\n"
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  auto_eject_hosts: false\n"
                "  preconnect: true\n"
                "  server_connections: 1\n"
                "  timeout: 5000\n"
                "  servers:\n"
                f"    - 127.0.0.1:{port}:1\n"
            )
            # its stats listener (TCP, 0.0.0.0:22222 by default) on a free loopback port
            argv = ["nutcracker", "-c", cfg, "-o", os.path.join(d, "nutcracker.out"), "-v", "4",
                    "-a", "127.0.0.1", "-s", str(free_tcp_port()), "-p", os.path.join(d, "nutcracker.pid")]
        elif target == "haproxy-ssl":
            cfg = os.path.join(d, "haproxy.cfg")
            text = (
                "global\n"
                "    nbthread 1\n"
                f"    maxconn {PROXY_MAXCONN}\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 120s\n"
                "    timeout server 120s\n"
                "frontend fe\n"
                f"    bind unix@{sock}\n"
                f"    maxconn {PROXY_MAXCONN}\n"
                "    default_backend be\n"
                "backend be\n"
                # TLS session reuse towards the server is HAProxy's default
                f"    server s1 127.0.0.1:{port} ssl verify required ca-file {self.pki['ca']} "
                f"sni str({TLS_NAME}) verifyhost {TLS_NAME}\n"
            )
            argv = ["haproxy", "-db", "-f", cfg]
        elif target == "stunnel":
            cfg = os.path.join(d, "stunnel.conf")
            text = (
                "foreground = yes\n"
                "pid =\n"
                "syslog = no\n"
                "debug = warning\n"
                "[bench]\n"
                "client = yes\n"
                f"accept = {sock}\n"
                f"connect = 127.0.0.1:{port}\n"
                "socket = r:TCP_NODELAY=1\n"
                f"CAfile = {self.pki['ca']}\n"
                "verifyChain = yes\n"
                f"checkHost = {TLS_NAME}\n"
                f"sni = {TLS_NAME}\n"
            )
            argv = ["stunnel4", cfg]
        elif target.startswith("haproxy"):
            cfg = os.path.join(d, "haproxy.cfg")
            text = (
                "global\n"
                "    nbthread 1\n"
                f"    maxconn {PROXY_MAXCONN}\n"
                # splice pipes are pooled and taken only while data is in flight;
                # 2 * maxconn + 2 * maxpipes must fit the 20000-fd hard limit
                "    maxpipes 128\n"
                # haproxy-reload: the new process takes the listeners from the old one here (-x)
                + (f"    stats socket {d}/stats.sock mode 600 level admin expose-fd listeners\n"
                   if target == "haproxy-reload" else "") +
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 120s\n"
                "    timeout server 120s\n"
                + HAPROXY_SPLICE[target] +
                "frontend fe\n"
                f"    bind unix@{sock}\n"
                f"    maxconn {PROXY_MAXCONN}\n"
                "    default_backend be\n"
                "backend be\n"
                f"    server s1 127.0.0.1:{port}\n"
            )
            argv = ["haproxy", "-db", "-f", cfg]
        elif target == "nginx":
            cfg = os.path.join(d, "nginx.conf")
            text = (
                f"load_module {NGINX_MODULE};\n"
                "daemon off;\n"
                "worker_processes 1;\n"
                "worker_rlimit_nofile 20000;\n"
                f"pid {d}/nginx.pid;\n"
                f"error_log {d}/nginx-error.log warn;\n"
                "events {\n"
                "    worker_connections 19500;\n"  # counts client and upstream connections
                "}\n"
                "stream {\n"
                "    server {\n"
                f"        listen unix:{sock};\n"
                f"        proxy_pass 127.0.0.1:{port};\n"
                # off by default: a client's shutdown(SHUT_WR) would end the
                # whole session before the reply (bulk-up's verdict) arrives
                "        proxy_half_close on;\n"
                "    }\n"
                "}\n"
            )
            argv = ["nginx", "-c", cfg, "-p", d + "/", "-e", f"{d}/nginx-error.log"]
        elif target == "socat":
            cfg = None
            text = f"socat UNIX-LISTEN:{sock},fork TCP:127.0.0.1:{port}\n"
            argv = ["socat", f"UNIX-LISTEN:{sock},fork", f"TCP:127.0.0.1:{port}"]
        else:
            raise ValueError(target)
        if cfg:
            with open(cfg, "w") as f:
                f.write(text)
        self.save_config(target.replace("-", "_") + (".yaml" if target in WARMPOOL_TARGETS_ALL else
                                                     ".yml" if target == "twemproxy" else
                                                     ".cfg" if cfg else ".cmd"), text, workload)
        proc = Proc(target, argv, os.path.join(d, f"{target}.log"), pin=pin)
        wait_for(lambda: unix_listening(sock), 10, f"{target} to listen on {sock}", proc)
        if listen != sock:
            wait_for(lambda: unix_listening(listen), 10, f"{target} to listen on {listen}", proc)
        if target == "warmpool-tls" and min_idle:
            # idle counts only handshaken, verified connections: ask the daemon
            wait_for(lambda: pool_idle(admin) >= min_idle, 120,
                     f"warmpool's warm floor of {min_idle} TLS connections", proc, 0.05)
        elif (target in WARMPOOL_TARGETS_ALL) and min_idle:
            wait_for(lambda: established_on_port(port) >= min_idle, 10,
                     f"warmpool's warm floor of {min_idle} connections", proc)
        elif target == "twemproxy":
            wait_for(lambda: established_on_port(port) >= 1, 10, "twemproxy's server connection", proc)
        return proc, sock

    def wpload(self, d, target_args, mode_args, pin, timeout, hold=None):
        argv = [self.bin("wpload")] + target_args + mode_args
        out_path = os.path.join(d, "wpload.out")
        with open(out_path, "wb") as out:
            cl = Proc("wpload", argv, os.path.join(d, "wpload.err"), pin=pin, stdout=out)
            try:
                if hold:
                    hold(cl)
                try:
                    cl.p.wait(timeout)
                except subprocess.TimeoutExpired:
                    raise BenchError(f"wpload did not finish within {timeout} s")
            finally:
                cl.stop(signal.SIGKILL, 2)
        with open(out_path) as f:
            text = f.read().strip()
        err = cl.log_tail(6)
        try:
            res = json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"wpload exited {cl.p.returncode} with no result: {err}")
        res["_rc"] = cl.p.returncode
        res["_stderr"] = err
        return res

    # one run of one workload against one target -----------------------------

    def run(self, wl, target, rep):
        d = self.rundir(f"{wl['name']}-{target}")
        pin = wl.get("pin", False)
        procs = []
        rec = {"workload": wl["name"], "target": target, "repeat": rep}
        try:
            if wl["family"] == "redis":
                be, port, usock = self.start_redis(d, pin)
                rec["redis_port"] = port
            else:
                be, port = self.start_backend(d, [x.replace("{rundir}", d) for x in wl["backend"]], pin,
                                              wl.get("tls_version"))
            procs.append(be)
            if target == "redis-tcp":
                proxy, target_args = None, ["-h", "127.0.0.1", "-p", str(port)]
            elif target == "redis-unix":
                proxy, target_args = None, ["-s", usock]
            elif wl["family"] == "redis":
                proxy, sock = self.start_proxy(target, d, port, pin, wl["name"], wl.get("min_idle"))
                procs.append(proxy)
                target_args = ["-s", sock]
            elif target == "direct":
                proxy, target_args = None, ["--tcp", f"127.0.0.1:{port}"]
            elif target == "direct-tls":
                proxy, target_args = None, ["--tcp", f"127.0.0.1:{port}", "--tls-ca", self.pki["ca"],
                                            "--tls-name", TLS_NAME]
            else:
                proxy, sock = self.start_proxy(target, d, port, pin, wl["name"], wl.get("min_idle"))
                procs.append(proxy)
                target_args = ["--handoff" if target == "warmpool-handoff" else "--unix", sock]
            metrics = wl["measure"](self, d, target_args, proxy, pin, rec)
            serving = self.current or proxy  # restart: the process that took over
            if serving is not None and not serving.alive():
                raise BenchError(f"{target} died during the run: {serving.log_tail()}")
            if not be.alive():
                raise BenchError(f"{be.name} died during the run: {be.log_tail()}")
            rec["metrics"] = metrics
            return metrics, None
        except BenchError as e:
            rec["error"] = str(e)
            return rec.get("partial", {}), str(e)
        finally:
            for p in reversed(procs + self.extra):
                if p.name in WARMPOOL_TARGETS_ALL:
                    p.stop(signal.SIGINT, 10)
                else:
                    p.stop(signal.SIGTERM, 10)
            self.current, self.extra = None, []
            self.raw.write(json.dumps(rec) + "\n")
            self.raw.flush()
            if not self.a.keep:
                shutil.rmtree(d, ignore_errors=True)


def check_result(res, rec, what):
    rec.setdefault("wpload", []).append({k: v for k, v in res.items()})
    if res["_rc"] != 0 or res.get("errors"):
        raise BenchError(f"{what}: wpload exit {res['_rc']}, errors {res.get('error_kinds')}: {res['_stderr']}")


# ---------------------------------------------------------------- workloads


def measure_setup(conc, duration, sessions=None):
    """sessions: that many sessions (TLS: within the pool's warm floor), else
    as many as start within `duration` seconds."""
    def m(b, d, target_args, proxy, pin, rec):
        span = ["-n", str(sessions)] if sessions else ["-n", "10000000", "--duration", str(duration)]
        res = b.wpload(d, target_args, ["--mode", "setup"] + span +
                       ["-c", str(conc), "--greeting", GREETING], pin, duration + 120 if not sessions else 300)
        rec["partial"] = {"rate": res.get("sessions_per_s"), "p50": res.get("p50_us"), "p99": res.get("p99_us")}
        check_result(res, rec, "setup")
        return {"rate": res["sessions_per_s"], "p50": res["p50_us"], "p99": res["p99_us"]}
    return m


def measure_rtt(count):
    def m(b, d, target_args, proxy, pin, rec):
        res = b.wpload(d, target_args, ["--mode", "rtt", "--count", str(count)], pin, 120)
        check_result(res, rec, "rtt")
        return {"p50": res["p50_us"], "p99": res["p99_us"], "p999": res["p999_us"]}
    return m


def measure_bulk(direction, nbytes, seed):
    def m(b, d, target_args, proxy, pin, rec):
        cpu0 = tree_cpu_ticks(proxy.pid) if proxy else None
        res = b.wpload(d, target_args, ["--mode", direction, "--bytes", str(nbytes), "--seed", str(seed)],
                       pin, 600)
        check_result(res, rec, direction)
        out = {"MBps": res["MBps"]}
        if proxy:
            # let per-session children (socat) exit and be reaped into cutime
            me = proxy.pid
            try:
                # stunnel is one process with a thread per session: tree() sees processes only
                wait_for(lambda: len(tree(me)) <= (2 if proxy.name == "nginx" else 1), 5,
                         "the proxy's per-session processes to exit")
            except BenchError:
                pass
            cpu1 = tree_cpu_ticks(proxy.pid)
            out["cpu"] = (cpu1 - cpu0) / CLK_TCK / (nbytes / 1e9)
        return out
    return m


def measure_hold(sessions, hold_max):
    def m(b, d, target_args, proxy, pin, rec):
        ready = os.path.join(d, "ready")
        mem = {}

        def during(cl):
            wait_for(lambda: os.path.exists(ready), 240, f"wpload to open {sessions} sessions", cl, 0.05)
            with open(ready) as f:
                ok, failed, _ = (int(x) for x in f.read().split())
            mem["opened"] = ok
            if proxy:
                time.sleep(0.5)  # let the proxy settle
                samples = []
                for _ in range(3):
                    samples.append(tree_memory(proxy.pid))
                    time.sleep(0.2)
                mem["during"] = max(s[0] for s in samples), max(s[1] for s in samples), max(s[2] for s in samples)
            if cl.alive():
                os.kill(cl.pid, signal.SIGUSR1)

        before = tree_memory(proxy.pid) if proxy else None
        res = b.wpload(d, target_args, ["--mode", "hold", "-n", str(sessions), "-c", "64", "--timeout", "30",
                                        "--hold-seconds", str(hold_max), "--ready-file", ready],
                       False, 600 + hold_max, hold=during)
        out = {"ok": res.get("ok", 0), "open": res.get("open_seconds"), "trip2": res.get("trip2_seconds")}
        opened = mem.get("opened", 0)
        if proxy and "during" in mem and opened:
            out["rss"] = (mem["during"][0] - before[0]) / opened
            out["pss"] = (mem["during"][1] - before[1]) / opened
            rec["memory"] = {"before_rss_kib": before[0], "before_pss_kib": before[1],
                             "during_rss_kib": mem["during"][0], "during_pss_kib": mem["during"][1],
                             "processes": mem["during"][2], "opened": opened}
        rec["partial"] = out
        check_result(res, rec, "hold")
        return out
    return m


def measure_redis(n, keepalive):
    """redis-benchmark -t get -c REDIS_CLIENTS -n n (with -k 0 unless
    keepalive): its rate and latency, and the proxy's CPU per request.
    redis-server must have served exactly n GETs."""
    def m(b, d, target_args, proxy, pin, rec):
        port = rec["redis_port"]
        if redis_call(port, "CONFIG", "RESETSTAT") != "+OK":
            raise BenchError("redis-server refused CONFIG RESETSTAT")
        argv = (["redis-benchmark"] + target_args +
                ["-t", "get", "-c", str(REDIS_CLIENTS), "-n", str(n), "--csv"] + ([] if keepalive else ["-k", "0"]))
        out_path = os.path.join(d, "redis-benchmark.out")
        cpu0 = tree_cpu_ticks(proxy.pid) if proxy else None
        with open(out_path, "wb") as out:
            cl = Proc("redis-benchmark", argv, os.path.join(d, "redis-benchmark.err"), pin=pin, stdout=out)
            try:
                try:
                    cl.p.wait(300)
                except subprocess.TimeoutExpired:
                    raise BenchError("redis-benchmark did not finish within 300 s")
            finally:
                cl.stop(signal.SIGKILL, 2)
        cpu1 = tree_cpu_ticks(proxy.pid) if proxy else None
        with open(out_path) as f:
            row = next((ln for ln in f.read().splitlines() if ln.startswith('"GET"')), None)
        gets = redis_calls(port, "get")
        rec["redis"] = {"gets": gets, "resets": redis_calls(port, "reset"), "argv": argv[1:]}
        if cl.p.returncode != 0 or row is None:
            raise BenchError(f"redis-benchmark exited {cl.p.returncode}: {cl.log_tail(4)}")
        if gets != n:
            raise BenchError(f"redis-server served {gets} GETs for {n} requests")
        f = [float(x.strip('"')) for x in row.split(",")[1:]]
        res = {"rps": f[0], "p50": f[3] * 1000, "p99": f[5] * 1000}
        if proxy:
            res["cpu"] = (cpu1 - cpu0) / CLK_TCK / n * 1e6
        return res
    return m


def switch_proxy(b, d, target, proxy, sock):
    """Switch the proxy as `target` says; returns once the old process is gone
    and the new one listens. Sets b.current (the process serving now) and
    b.extra (what this started)."""
    if target == "warmpool-upgrade":
        r = subprocess.run([b.bin("warmpoolctl"), "-s", os.path.join(d, "admin.sock"), "upgrade"],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"upgraded: pid (\d+) serves now", r.stdout)
        if r.returncode != 0 or not m:
            raise BenchError(f"warmpoolctl upgrade exited {r.returncode}: {(r.stdout + r.stderr).strip()[:300]}")
        b.current = PidProc(target, int(m.group(1)), proxy.log_path)
        b.extra.append(b.current)
        try:
            proxy.p.wait(30)  # drains its sessions (shutdown_timeout 1s), then exits
        except subprocess.TimeoutExpired:
            raise BenchError("the old warmpoold did not exit within 30 s of the upgrade")
    elif target == "warmpool-restart":
        os.kill(proxy.pid, signal.SIGTERM)
        try:
            proxy.p.wait(30)
        except subprocess.TimeoutExpired:
            raise BenchError("warmpoold did not exit within 30 s of SIGTERM")
        b.current = Proc(target, proxy.argv, os.path.join(d, f"{target}-2.log"))
        b.extra.append(b.current)
        wait_for(lambda: unix_listening(sock), 10, f"the new {target} to listen on {sock}", b.current, 0.001)
    elif target == "haproxy-reload":
        # the seamless way: the new process takes the listening sockets from
        # the old one over its stats socket (-x), then tells it to finish (-sf)
        b.current = Proc(target, proxy.argv + ["-x", os.path.join(d, "stats.sock"), "-sf", str(proxy.pid)],
                         os.path.join(d, f"{target}-2.log"))
        b.extra.append(b.current)
        try:
            proxy.p.wait(30)
        except subprocess.TimeoutExpired:
            raise BenchError("the old HAProxy did not exit within 30 s of the reload")
        if proxy.p.returncode != 0:
            raise BenchError(f"the old HAProxy exited {proxy.p.returncode}: {proxy.log_tail()}")
        wait_for(lambda: unix_listening(sock), 10, f"the new {target} to listen on {sock}", b.current, 0.001)
    elif target != "warmpool-steady":
        raise ValueError(target)


def read_events(path):
    """wpbackend --events: (accept times in µs, close lines as (time µs, bytes_in))."""
    accepts, closes = [], []
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) >= 3 and w[0] == "accept":
                    accepts.append(int(w[2]))
                elif len(w) >= 5 and w[0] == "close":
                    closes.append((int(w[2]), int(w[3])))
    except OSError as e:
        raise BenchError(f"the backend's events: {e}")
    return accepts, closes


def measure_restart():
    """RESTART_CLIENTS clients in a setup loop for RESTART_LOAD s; the proxy
    is switched RESTART_AT s in (the run's target says how). The figures come
    from wpload's per-session trace and the backend's event lines, all on
    CLOCK_MONOTONIC."""
    def m(b, d, target_args, proxy, pin, rec):
        target = rec["target"]
        trace = os.path.join(d, "trace")
        sw = {}

        def during(cl):
            sw["load"] = time.monotonic_ns()
            time.sleep(RESTART_AT)  # the schedule of the run, not a wait for an event
            if not cl.alive():
                raise BenchError(f"wpload ended before the switch: {cl.log_tail()}")
            sw["start"] = time.monotonic_ns()
            switch_proxy(b, d, target, proxy, target_args[1])
            sw["done"] = time.monotonic_ns()

        res = b.wpload(d, target_args, ["--mode", "setup", "-n", "10000000", "--duration", str(RESTART_LOAD),
                                        "-c", str(RESTART_CLIENTS), "--greeting", GREETING, "--timeout", "10",
                                        "--trace", trace, "--fail-pause-ms", str(RESTART_FAIL_PAUSE_MS)],
                       pin, RESTART_LOAD + 60, hold=during)
        load_end = time.monotonic_ns()
        rec.setdefault("wpload", []).append(dict(res))
        kinds = res.get("error_kinds", {})
        if res["_rc"] not in (0, 1) or kinds.get("mismatch"):
            raise BenchError(f"wpload exit {res['_rc']}, errors {kinds}: {res['_stderr']}")
        sessions = []
        with open(trace) as f:
            for line in f:
                t0, t1, what = line.split()
                sessions.append((int(t0), int(t1), what))
        if len(sessions) != res["sessions"]:
            raise BenchError(f"wpload traced {len(sessions)} sessions of {res['sessions']}")
        lo, hi = sw["start"], sw["done"] + int(RESTART_AFTER * 1e9)
        if hi > sessions_end(sessions):
            raise BenchError(f"the switch took {(sw['done'] - sw['start']) / 1e9:.1f} s: the load ended "
                             f"within {RESTART_AFTER} s of it")
        before = sorted(t1 - t0 for t0, t1, w in sessions
                        if w == "ok" and t0 >= sw["load"] + RESTART_WARM * 1e9 and t1 < lo)
        across = [(t0, t1, w) for t0, t1, w in sessions if t1 >= lo and t0 <= hi]
        ok_ends = sorted(t1 for t0, t1, w in across if w == "ok" and t1 <= hi)
        gaps, prev = [], lo
        for t in ok_ends + [hi]:
            gaps.append(t - prev)
            prev = max(prev, t)
        accepts, closes = read_events(os.path.join(d, "backend.events"))
        if not before:
            raise BenchError("no session completed before the switch")
        p99 = before[max(0, -(-99 * len(before) // 100) - 1)] / 1e3  # nearest rank, as wpload's
        worst = max((t1 - t0 for t0, t1, w in across if w == "ok"), default=None)
        out = {
            "failed": sum(1 for s_ in sessions if s_[2] != "ok"),
            "worst": worst / 1e3 if worst is not None else None,
            "p99": p99,
            "ratio": worst / 1e3 / p99 if worst is not None else None,
            "gap": max(gaps) / 1e6,
            "accepts": sum(1 for t in accepts if lo // 1000 <= t <= hi // 1000),
            # each session served takes one backend connection (a pool refills
            # what it hands out): what is left over is connects for nothing
            "extra": (sum(1 for t in accepts if lo // 1000 <= t <= hi // 1000)
                      - sum(1 for s_ in across if s_[2] == "ok")),
            "dropped": sum(1 for t, n_in in closes if n_in == 0 and sw["load"] // 1000 <= t <= load_end // 1000),
        }
        rec["restart"] = {"switch_s": (sw["done"] - sw["start"]) / 1e9, "sessions": len(sessions),
                          "load_ns": sw["load"], "switch_ns": sw["start"], "done_ns": sw["done"],
                          "across": len(across), "before": len(before), "error_kinds": kinds,
                          "failed_in_window": sum(1 for s_ in across if s_[2] != "ok")}
        rec["partial"] = out
        return out
    return m


def sessions_end(sessions):
    return max(t1 for _, t1, _ in sessions) if sessions else 0


def restart_workloads(a):
    """The restart table: one workload, the switch itself differs per target."""
    metrics = [("failed", "failed sessions", "", -1),
               ("worst", "worst session across the switch", "µs", -1),
               ("p99", "p99 before the switch", "µs", -1),
               ("ratio", "worst / p99 before (goal ≤ 2)", "", -1),
               ("gap", "longest time without a completed session", "ms", -1),
               ("accepts", "backend accepts during the switch", "", -1),
               ("extra", "of which beyond the sessions served", "", -1),
               ("dropped", "backend connections closed unused", "", -1)]
    return [dict(name="restart", family="restart", group="restart",
                 backend=["--greeting", GREETING, "--greeting-delay-ms", "1", "--events", "{rundir}/backend.events"],
                 title=f"setup loop, {RESTART_CLIENTS} clients, 1 ms greeting, switched {RESTART_AT:g} s in",
                 measure=measure_restart(), metrics=metrics)]


def redis_workloads(a):
    """The real-client table: redis-benchmark GETs, keep-alive and a new
    connection per request."""
    n = 20000 if a.quick else a.redis_requests
    n_k0 = n // 4  # connect-per-request is 2-10x slower: a run of similar length
    metrics = [("rps", "requests/s", "1/s", +1), ("p50", "p50", "µs", -1), ("p99", "p99", "µs", -1),
               ("cpu", "proxy CPU", "µs/request", -1)]
    common = {"family": "redis", "group": "redis", "backend": []}
    return [
        dict(common, name="redis-get", measure=measure_redis(n, True), metrics=metrics,
             title=f"redis-benchmark -t get -c {REDIS_CLIENTS} -n {n} (keep-alive)"),
        dict(common, name="redis-get-k0", measure=measure_redis(n_k0, False), metrics=metrics,
             title=f"redis-benchmark -t get -c {REDIS_CLIENTS} -n {n_k0} -k 0 (a connection per request)"),
    ]


def workloads(a):
    q = a.quick
    dur = 0.5 if q else 2.0      # seconds of sessions per setup run
    C = a.setup_concurrency
    k = 2000 if q else 20000
    nb = (128 << 20) if q else a.bulk_bytes
    lat = [("p50", "p50", "µs", -1), ("p99", "p99", "µs", -1)]
    setup_metrics = [("rate", "sessions/s", "1/s", +1)] + lat
    wl = []
    for delay in (0, 1):
        be = ["--greeting", GREETING] + (["--greeting-delay-ms", str(delay)] if delay else [])
        for conc in (1, C):
            wl.append({"name": f"setup-g{delay}-c{conc}", "group": "setup", "backend": be,
                       "title": f"setup, {delay} ms greeting, {conc} client{'s' if conc > 1 else ''}",
                       "measure": measure_setup(conc, dur), "metrics": setup_metrics})
    rtt_metrics = [("p50", "p50", "µs", -1), ("p99", "p99", "µs", -1), ("p999", "p99.9", "µs", -1)]
    wl.append({"name": "rtt", "group": "rtt", "backend": [], "title": "64 B round trip, unpinned",
               "measure": measure_rtt(k), "metrics": rtt_metrics})
    wl.append({"name": "rtt-pinned", "group": "rtt", "backend": [], "pin": True,
               "title": "64 B round trip, all on CPU 0", "measure": measure_rtt(k), "metrics": rtt_metrics})
    wl.append({"name": "bulk-up", "group": "bulk", "backend": ["--mode", "sink", "--sink-verify", "11"],
               "title": f"bulk client->backend, {nb / 2**20:.0f} MiB", "measure": measure_bulk("bulk-up", nb, 11),
               "metrics": [("MBps", "MB/s", "MB/s", +1), ("cpu", "proxy CPU", "s/GB", -1)]})
    wl.append({"name": "bulk-down", "group": "bulk",
               "backend": ["--mode", "source", "--source-bytes", str(nb), "--seed", "12"],
               "title": f"bulk backend->client, {nb / 2**20:.0f} MiB", "measure": measure_bulk("bulk-down", nb, 12),
               "metrics": [("MBps", "MB/s", "MB/s", +1), ("cpu", "proxy CPU", "s/GB", -1)]})
    wl.append({"name": "hold", "group": "hold", "backend": [],
               "title": f"{HOLD_SESSIONS} held sessions", "measure": measure_hold(HOLD_SESSIONS, 60),
               "metrics": [("ok", "sessions ok", "", +1), ("rss", "proxy RSS/session", "KiB", -1),
                           ("pss", "proxy PSS/session", "KiB", -1), ("open", "time to open all", "s", -1),
                           ("trip2", "a round trip on every held session", "s", -1)]})
    for w in wl:
        w["family"] = "plain"
    wl += tls_workloads(a, setup_metrics, rtt_metrics, nb, k)
    wl += redis_workloads(a)
    wl += restart_workloads(a)
    if a.workloads:
        keep = set(a.workloads.split(","))
        wl = [w for w in wl if w["group"] in keep or w["name"] in keep or w["family"] in keep]
    return wl


def tls_workloads(a, setup_metrics, rtt_metrics, nb, k):
    """The TLS table's workloads, for each TLS version: setup (a fixed number of
    sessions, the pool's warm floor as large), pinned round trips, bulk both
    ways and held sessions."""
    n = 200 if a.quick else a.tls_setup_sessions
    hold = 200 if a.quick else HOLD_TLS_SESSIONS
    wl = []
    for v in a.tls_versions.split(","):
        tag = "tls" + v.replace(".", "")
        be = ["--greeting", GREETING]
        common = {"family": "tls", "tls_version": v}
        for conc in (1, a.setup_concurrency):
            wl.append(dict(common, name=f"{tag}-setup-c{conc}", group="setup", backend=be, min_idle=n,
                           title=f"TLS {v}: setup, {n} sessions, {conc} client{'s' if conc > 1 else ''}",
                           measure=measure_setup(conc, 0, n), metrics=setup_metrics))
        wl.append(dict(common, name=f"{tag}-rtt-pinned", group="rtt", backend=[], pin=True,
                       title=f"TLS {v}: 64 B round trip, all on CPU 0", measure=measure_rtt(k),
                       metrics=rtt_metrics))
        wl.append(dict(common, name=f"{tag}-bulk-up", group="bulk", backend=["--mode", "sink", "--sink-verify", "11"],
                       title=f"TLS {v}: bulk client->backend, {nb / 2**20:.0f} MiB",
                       measure=measure_bulk("bulk-up", nb, 11),
                       metrics=[("MBps", "MB/s", "MB/s", +1), ("cpu", "proxy CPU", "s/GB", -1)]))
        wl.append(dict(common, name=f"{tag}-bulk-down", group="bulk",
                       backend=["--mode", "source", "--source-bytes", str(nb), "--seed", "12"],
                       title=f"TLS {v}: bulk backend->client, {nb / 2**20:.0f} MiB",
                       measure=measure_bulk("bulk-down", nb, 12),
                       metrics=[("MBps", "MB/s", "MB/s", +1), ("cpu", "proxy CPU", "s/GB", -1)]))
        # the pool's floor stays --min-idle here: a floor of `hold` would add as many
        # refilled idle connections to the memory measured per held session
        wl.append(dict(common, name=f"{tag}-hold", group="hold", backend=[],
                       title=f"TLS {v}: {hold} held sessions", measure=measure_hold(hold, 60),
                       metrics=[("ok", "sessions ok", "", +1), ("rss", "proxy RSS/session", "KiB", -1),
                                ("pss", "proxy PSS/session", "KiB", -1), ("open", "time to open all", "s", -1),
                                ("trip2", "a round trip on every held session", "s", -1)]))
    return wl


# ---------------------------------------------------------------- reporting


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, int):
        return str(v)  # a count (restart's failed sessions, accepts): no decimals
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def machine_info(build):
    def cmd(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = 0
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    git = cmd(["git", "-C", src, "describe", "--always", "--dirty"])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory": f"{mem:.1f} GiB",
        "kernel": platform.release(),
        "nofile": " / ".join(str(x) for x in __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)),
        "warmpoold": cmd([os.path.join(build, "warmpoold"), "--version"]) + f" (tree {git})",
        "haproxy": cmd(["haproxy", "-v"]),
        "nginx": cmd(["nginx", "-v"]),
        "socat": next((l for l in subprocess.run(["socat", "-V"], capture_output=True, text=True,
                                                  timeout=10).stdout.splitlines() if "version" in l), "?").strip(),
        "stunnel": (next((l for l in cmd_all(["stunnel4", "-version"]) if l.startswith("stunnel ")), "stunnel ?")
                    .split(" on ")[0]),
        "openssl": cmd(["openssl", "version"]),
        "redis": cmd(["redis-server", "--version"]),
        "nutcracker": cmd(["nutcracker", "--version"]),
    }


def cmd_all(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []


def summarize(wls, targets, results, repeats):
    """rows: (workload, metric key, label, unit, better, {target: cell})."""
    rows = []
    for wl in wls:
        for key, label, unit, better in wl["metrics"]:
            cells = {}
            for t in targets:
                if family(t) != wl["family"]:
                    continue
                runs = results.get((wl["name"], t), [])
                if not runs and wl["group"] in NA_GROUPS.get(t, ()):
                    cells[t] = {"na": True}
                    continue
                if not runs and wl["group"] not in ONLY_GROUPS.get(t, (wl["group"],)):
                    cells[t] = {"na": True, "not_run": True}
                    continue
                vals = [m[key] for m, err in runs if err is None and m.get(key) is not None]
                errs = [err for m, err in runs if err is not None]
                if (wl["group"] in ("hold", "bulk", "redis") and key in ("rss", "pss", "cpu")
                        and t in ("direct", "direct-tls") + REDIS_DIRECT):
                    cells[t] = {"na": True}
                    continue
                c = {"n": len(vals), "runs": len(runs), "errors": errs}
                if not vals and errs and key in ("ok", "rss", "pss", "open", "trip2"):
                    # a failed hold still says how many sessions made it
                    vals = [m[key] for m, err in runs if m.get(key) is not None]
                if vals:
                    c["med"] = statistics.median(vals)
                    c["min"] = min(vals)
                    c["max"] = max(vals)
                cells[t] = c
            rows.append((wl, key, label, unit, better, cells))
    return rows


def ratio(c, ref):
    if not c or c.get("na") or "med" not in c or not ref or ref.get("na") or "med" not in ref or not ref["med"]:
        return None
    return c["med"] / ref["med"]


def haproxy_ref(cells, better, fam="plain"):
    """The cell of HAProxy's best configuration for this figure."""
    hs = [cells[t] for t in FAMILY_REFS[fam][1] if t in cells and not cells[t].get("na") and "med" in cells[t]]
    if not hs:
        return None
    return (max if better > 0 else min)(hs, key=lambda c: c["med"])


def cell_text(c, rd, rh, show_d, show_h, markdown, rs=None):
    if c.get("not_run"):
        return "—"
    if c.get("na"):
        return "n/a"
    fail = bool(c["errors"])
    if "med" not in c:
        return "**FAIL**" if markdown else "FAIL"
    s = fmt(c["med"])
    if c["n"] > 1 or c["min"] != c["max"]:
        s += f" ({fmt(c['min'])}–{fmt(c['max'])})"
    r = []
    if show_d and rd is not None:
        r.append(f"{rd:.2f}×d")
    if show_h and rh is not None:
        r.append(f"{rh:.2f}×h")
    if rs is not None:
        r.append(f"{rs:.2f}×s")
    if r:
        s += " · " + " ".join(r)
    if fail:
        tag = f"FAIL {len(c['errors'])}/{c['runs']}"
        s = (f"**{tag}** " if markdown else f"{tag} ") + s
    return s


def render(rows, targets, info, args, elapsed, notes):
    md, tsv = [], []
    for fam in ("plain", "tls", "redis", "restart"):
        fam_targets = [t for t in targets if family(t) == fam]
        fam_rows = [r for r in rows if r[0]["family"] == fam]
        if not fam_targets or not fam_rows:
            continue
        if fam == "tls":
            md += ["", "TLS to the backend (×d: to direct-tls, ×h: to haproxy-ssl, ×s: to stunnel):", ""]
        if fam == "redis":
            md += ["", "Real clients: redis-benchmark against redis-server (×d: to redis-tcp, ×h: to "
                   "haproxy-redis, ×s: to twemproxy):", ""]
        if fam == "restart":
            md += ["", f"Restarts and upgrades: {RESTART_CLIENTS} clients in a setup loop while the proxy is "
                   "switched (no ratios: the worst/p99 row is the comparison):", ""]
        md += render_table(fam, fam_rows, fam_targets, tsv)
    return render_report(md, tsv, rows, targets, info, args, elapsed, notes)


def render_table(fam, rows, targets, tsv):
    direct, _, second = FAMILY_REFS[fam]
    hdr = ["workload", "figure"] + targets
    md_rows = []
    for wl, key, label, unit, better, cells in rows:
        arrow = "↑" if better > 0 else "↓"
        fig = f"{label}{' (' + unit + ')' if unit else ''} {arrow}"
        line = [wl["title"], fig]
        for t in targets:
            c = cells[t]
            rd = ratio(c, cells.get(direct))
            rh = ratio(c, haproxy_ref(cells, better, fam))
            rs = ratio(c, cells.get(second)) if second and t != second else None
            line.append(cell_text(c, rd, rh, t != direct, True, True, rs))
            tsv.append([wl["name"], key, unit, "higher" if better > 0 else "lower", t,
                        "not run" if c.get("not_run") else "n/a" if c.get("na") else fmt(c.get("med")) if "med" in c else "",
                        "" if c.get("na") or "min" not in c else fmt(c["min"]),
                        "" if c.get("na") or "max" not in c else fmt(c["max"]),
                        "" if rd is None else f"{rd:.3f}", "" if rh is None else f"{rh:.3f}",
                        "n/a" if c.get("na") else ("FAIL" if c["errors"] else "ok"),
                        "" if c.get("na") else f"{c['n']}/{c['runs']}",
                        "" if c.get("na") else " / ".join(c["errors"])[:500],
                        "" if rs is None else f"{rs:.3f}"])
        md_rows.append(line)
    md = []
    md.append("| " + " | ".join(hdr) + " |")
    md.append("|" + "|".join(["---"] * 2 + ["---:"] * len(targets)) + "|")
    for line in md_rows:
        md.append("| " + " | ".join(line) + " |")
    return md


def render_report(md, tsv, rows, targets, info, args, elapsed, notes):
    head = [
        f"# warmpool benchmark ({'quick' if args.quick else 'full'} run, {args.repeats} repeat"
        f"{'s' if args.repeats > 1 else ''}, {elapsed / 60:.1f} min)",
        "",
        "Machine: " + f"{info['nproc']} CPUs, {info['cpu']}, {info['memory']}, Linux {info['kernel']}, "
        f"RLIMIT_NOFILE {info['nofile']}",
        "",
        f"Versions: {info['warmpoold']}; {info['haproxy']}; {info['nginx']}; {info['socat']}; "
        f"{info['stunnel']}; {info['openssl']}; {info['redis']}; {info['nutcracker']}",
        "",
        "Command: `make bench" + (f" BENCH_ARGS='{' '.join(args.argv)}'" if args.argv else "") + "`",
        "",
        "Each cell: median (min–max) of the repeats · ratio of the median to direct (×d) and to HAProxy's "
        "best configuration for that figure (×h: the better of `haproxy` and `haproxy-splice`). "
        "↑ higher is better, ↓ lower is better; — not run; n/a does not apply. "
        "MB = 10^6 bytes, GB = 10^9 bytes.",
        "",
    ]
    tail = ["", "Notes:", ""] + [f"- {n}" for n in notes]
    failures = []
    for wl, key, label, unit, better, cells in rows:
        for t in cells:
            for e in cells[t].get("errors", []) if not cells[t].get("na") else []:
                msg = f"{wl['name']} / {t}: {e}"
                if msg not in failures:
                    failures.append(msg)
    if failures:
        tail += ["", "FAILURES:", ""] + [f"- {f}" for f in failures]
    return "\n".join(head + md + tail) + "\n", tsv, failures


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="absolute build directory (warmpoold, wpbackend, wpload)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and 1 repeat, for iterating")
    ap.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3, --quick 1)")
    ap.add_argument("--targets", default=",".join(TARGETS + TLS_TARGETS + REDIS_TARGETS + RESTART_TARGETS),
                    help="comma-separated, from "
                    f"{','.join(TARGETS + EXTRA_TARGETS + TLS_TARGETS + REDIS_TARGETS + RESTART_TARGETS)}")
    ap.add_argument("--workloads", default="",
                    help="comma-separated groups (setup,rtt,bulk,hold), families (plain,tls,redis,restart) or names")
    ap.add_argument("--redis-requests", type=int, default=200000,
                    help="requests per keep-alive redis-benchmark run (a quarter of that with -k 0; default 200000)")
    ap.add_argument("--tls-versions", default="1.2,1.3", help="TLS versions of the TLS table (default 1.2,1.3)")
    ap.add_argument("--tls-setup-sessions", type=int, default=2000,
                    help="sessions per TLS setup run, and warmpool-tls's warm floor for it (default 2000)")
    ap.add_argument("--setup-concurrency", type=int, default=16, help="clients in the concurrent setup runs")
    ap.add_argument("--min-idle", type=int, default=64, help="warmpool's min_idle (default 64)")
    ap.add_argument("--bulk-bytes", type=int, default=1 << 30, help="bytes per bulk run (default 1 GiB)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    args.argv = [x for i, x in enumerate(args.argv) if x != "--build" and (i == 0 or args.argv[i - 1] != "--build")]
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    targets = args.targets.split(",")
    for t in targets:
        if t not in TARGETS + EXTRA_TARGETS + TLS_TARGETS + REDIS_TARGETS + RESTART_TARGETS:
            ap.error(f"unknown target {t}")
    for v in args.tls_versions.split(","):
        if v not in ("1.2", "1.3"):
            ap.error(f"--tls-versions: {v} is not 1.2 or 1.3")
    build = os.path.abspath(args.build)
    for b in ("warmpoold", "warmpoolctl", "wpbackend", "wpload"):
        if not os.access(os.path.join(build, b), os.X_OK):
            ap.error(f"{build}/{b} is missing: run make bench")
    for tool in ("haproxy", "nginx", "socat", "taskset", "stunnel4", "openssl"):
        if (any(t.startswith(tool.rstrip("4")) for t in targets) or tool == "taskset"
                or (tool == "openssl" and any(family(t) == "tls" for t in targets))):
            if not shutil.which(tool):
                ap.error(f"{tool} is not installed: make bench-deps")
    if any(w["family"] == "redis" for w in workloads(args)) and any(family(t) == "redis" for t in targets):
        for tool in ("redis-server", "redis-benchmark") + (("nutcracker",) if "twemproxy" in targets else ()):
            if not shutil.which(tool):
                ap.error(f"{tool} is not installed: make bench-deps")
    if "nginx" in targets and not os.path.exists(NGINX_MODULE):
        ap.error(f"{NGINX_MODULE} is missing: apt-get install libnginx-mod-stream")

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    t_start = time.monotonic()
    info = machine_info(build)
    bench = Bench(args)
    wls = workloads(args)
    results = {}
    families = {w["family"] for w in wls}
    print(f"warmpool bench: {'quick' if args.quick else 'full'} run, {args.repeats} repeat(s), "
          f"targets {', '.join(t for t in targets if family(t) in families)}", flush=True)
    print(f"  machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}", flush=True)
    print(f"  {info['warmpoold']}; {info['haproxy']}; {info['nginx']}; {info['socat']}; {info['stunnel']}; "
          f"{info['openssl']}", flush=True)
    interrupted = False
    try:
        for wl in wls:
            t_wl = time.monotonic()
            for rep in range(args.repeats):
                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                for t in order:
                    if family(t) != wl["family"]:
                        continue
                    if (wl["group"] not in ONLY_GROUPS.get(t, (wl["group"],))
                            or wl["group"] in NA_GROUPS.get(t, ())):
                        continue
                    prev = results.get((wl["name"], t), [])
                    if wl["group"] == "hold" and any(err for _, err in prev):
                        # a failed hold is established; repeating it costs minutes (socat)
                        continue
                    m, err = bench.run(wl, t, rep)
                    results.setdefault((wl["name"], t), []).append((m, err))
                    if err:
                        print(f"  !! FAIL {wl['name']} {t} (repeat {rep + 1}): {err}", flush=True)
            print(f"  {wl['name']}: done in {time.monotonic() - t_wl:.1f} s", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping everything", file=sys.stderr)
    finally:
        stop_all()
        bench.raw.close()
        if not args.keep:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        else:
            print(f"run directories kept in {bench.tmp}")
    if interrupted:
        return 130

    elapsed = time.monotonic() - t_start
    dur = 0.5 if args.quick else 2.0
    notes = [
        "Every run starts a fresh backend and a fresh proxy from a minimal config (one example of each in "
        f"{bench.cfgdir}); warmpool is measured once its warm floor (min_idle {args.min_idle}) is established. "
        "The order of the targets rotates from one repeat to the next.",
        f"setup: for {dur:g} s, sessions of: connect, read the 21-byte greeting (checked), one checked 64-byte "
        "round trip, close; latency is the whole session. The greeting comes 0 or 1 ms after the backend "
        "accepts (`wpbackend --greeting-delay-ms`). With 1 client it is a latency test; with "
        f"{args.setup_concurrency} clients a closed-loop throughput test whose p50/p99 include queueing.",
        "rtt: one session, 20,000 timed 64-byte round trips after 200 untimed, each echo checked; "
        "`all on CPU 0` runs client, proxy and backend under `taskset -c 0`.",
        "bulk: a splitmix64 byte stream; bulk-up is checked byte by byte by the sink (`wpbackend --sink-verify`), "
        "bulk-down by wpload; timed from connect to EOF. proxy CPU = utime+stime of the proxy's process tree "
        "(socat's forked children and nginx's worker included, read from /proc) over the run, per GB moved.",
        f"hold: {HOLD_SESSIONS} sessions opened 64 at a time with one round trip each, held, then a second "
        "round trip on each, again 64 at a time (30 s limit per step); RSS/session = (VmRSS of the proxy's process tree while held − "
        "before) / sessions open. PSS is the same with the proportional set size: socat forks one process per "
        "session and the VmRSS sum counts every shared page once per child, so PSS is its fairer figure. "
        "A target that fails the hold is not repeated.",
        "haproxy: nbthread 1, option splice-auto, maxconn 9500, maxpipes 128 (2 fds per pipe must fit the "
        "20,000-fd hard limit). haproxy-splice: the same with option splice-request and splice-response "
        "(always splice), run for rtt and bulk only. nginx: one worker, worker_connections 19500, "
        "proxy_half_close on (without it a client's shutdown(SHUT_WR) ends the session before the reply), "
        "stream defaults otherwise (16 KiB buffer). socat: `UNIX-LISTEN:PATH,fork TCP:127.0.0.1:PORT`, its "
        "defaults (listen backlog 5: wpload retries a refused Unix connect after 50 µs doubling to 6.4 ms, "
        "as a blocking client would wait).",
        "warmpool-handoff: the warmpool config plus `handoff: {listen: PATH}`; wpload --handoff gets its "
        "connection with libwarmpool's wp_checkout() (timed with the run, as a connect is), then runs the "
        "workload on the handed-over backend TCP socket itself, consuming the greeting bytes the daemon "
        "passed along first. proxy CPU is warmpoold's over the run. setup and hold are n/a: wpload drives "
        "handoffs only on blocking connections.",
        "direct is wpload → wpbackend over TCP loopback. It is not always an upper bound on this machine: "
        "through a proxy the client writes to a Unix socket, which costs it less CPU than TCP.",
    ]
    if any(w["family"] == "tls" for w in wls) and any(family(t) == "tls" for t in targets):
        notes += [
            "TLS table: wpbackend speaks TLS (OpenSSL, RSA 2048 server key signed by a CA the bench makes), one "
            "backend per TLS version (`--tls-version` pins it); every client verifies the chain and the name "
            f"`{TLS_NAME}`. direct-tls: wpload is the TLS client and handshakes in full every session "
            "(no session cache). warmpool-tls: `tls: {ca_file: CA, server_name: localhost}` (session resumption "
            "on, its default). haproxy-ssl: nbthread 1, `server s1 ... ssl verify required ca-file CA "
            "sni str(localhost) verifyhost localhost` (its server-side TLS session reuse is on by default; no "
            "splice with TLS). stunnel: stunnel4 `client = yes`, `accept` a Unix socket, `verifyChain = yes`, "
            "`checkHost = localhost`, `sni = localhost`, `socket = r:TCP_NODELAY=1` (one thread per session; "
            "client session reuse is its default).",
            f"TLS setup: {args.tls_setup_sessions if not args.quick else 200} sessions per run (connect, greeting, "
            "one round trip, close), 1 and "
            f"{args.setup_concurrency} clients; warmpool-tls's min_idle is that many, so every session takes a "
            "connection handshaken before the run (waited for with `show pools`), while the pool refills in the "
            "background during the run. TLS hold: min_idle stays "
            f"{args.min_idle}, so the memory measured per held session is the session's, not a refilled "
            "idle connection's; sessions beyond the floor wait for a new handshake.",
        ]
    if any(w["family"] == "redis" for w in wls) and any(family(t) == "redis" for t in targets):
        n = 20000 if args.quick else args.redis_requests
        notes += [
            f"Real clients: redis-benchmark (Debian's redis-tools) `-t get -c {REDIS_CLIENTS} -n {n} --csv` "
            f"(keep-alive) and `-n {n // 4} -k 0` (it opens a new connection for every request), against "
            "redis-server (`--save '' --appendonly no`, TCP on 127.0.0.1 and a Unix socket), every run fresh; "
            "a run passes only when redis-server counted exactly that many GETs (INFO commandstats). "
            "redis-tcp and redis-unix: straight to redis-server. warmpool-redis: a pool (min_idle "
            f"{args.min_idle}) on a Unix socket; warmpool-redis-reuse: the same with `reuse: {REDIS_REUSE}`. "
            "haproxy-redis: mode tcp, bind unix@, nbthread 1, option splice-auto. twemproxy: nutcracker, "
            "`redis: true`, `server_connections: 1`, `preconnect: true`, listening on a Unix socket. "
            "proxy CPU = utime+stime of the proxy per request (10 ms ticks).",
        ]
    if any(w["family"] == "restart" for w in wls) and any(family(t) == "restart" for t in targets):
        notes += [
            f"Restarts and upgrades: {RESTART_CLIENTS} clients run setup sessions (connect, the 21-byte greeting, "
            "one checked 64-byte round trip, close) in a closed loop for "
            f"{RESTART_LOAD:g} s against a backend that greets 1 ms after accepting; {RESTART_AT:g} s in, the "
            "proxy is switched. wpload traces every session (start, end, outcome; CLOCK_MONOTONIC) and "
            "wpbackend every accept and close (`--events`), on the clock the bench takes the switch's times "
            "with. A client whose session failed starts its next one 1 ms later (`wpload --fail-pause-ms 1`); "
            "a connect that finds the backlog full waits and retries, as a blocking client would (counted as "
            "latency, not a failure). Switch window: from the command until the old process has exited and "
            f"the new one listens, plus {RESTART_AFTER:g} s. failed sessions: the whole run's (a refused or "
            "reset connect, an EOF, a timeout). worst session: the slowest successful session that overlaps "
            f"the window; p99 before: of the sessions that ended before the switch (the first {RESTART_WARM:g} s "
            "left out); worst / p99 before is the issue's goal (≤ 2). longest time without a completed "
            "session: within the window. backend accepts during the switch: in the window; every session "
            "served takes a backend connection of its own (through warmpool the pool refills what it hands "
            "out), so the next row, the accepts minus the successful sessions overlapping the window, is the "
            "connects made for nothing: a reconnect storm (a few below 0 is the window's edge: sessions that "
            "took a connection accepted before it). "
            "backend connections closed unused: over the run, connections the backend saw close without a "
            "byte from a client (a warm connection thrown away, or a session that failed after the proxy "
            "connected).",
            f"warmpool-upgrade: `warmpoolctl upgrade` (the same binary; min_idle {args.min_idle}, as the other "
            "warmpool targets, shutdown_timeout 1s). warmpool-restart: SIGTERM, wait for the exit, then start "
            "warmpoold again with the same config (without the systemd fd store: the bench runs no systemd). "
            "haproxy-reload: the `haproxy` config plus `stats socket PATH mode 600 level admin expose-fd "
            "listeners` in global; the reload starts `haproxy -db -f CFG -x PATH -sf OLDPID`: the new process "
            "takes the listening Unix socket from the old one, then the old one stops accepting and exits when "
            "its sessions are done. warmpool-steady: no switch, the same figures over the same window (how far "
            "the worst of a second's sessions stands above a p99 on this machine without any switch).",
        ]
    rows = summarize(wls, targets, results, args.repeats)
    md, tsv, failures = render(rows, targets, info, args, elapsed, notes)
    md_path = os.path.join(bench.out, "results.md")
    tsv_path = os.path.join(bench.out, "results.tsv")
    with open(md_path, "w") as f:
        f.write(md)
    with open(tsv_path, "w") as f:
        f.write("\t".join(["workload", "metric", "unit", "better", "target", "median", "min", "max",
                           "ratio_direct", "ratio_haproxy", "status", "runs_ok", "errors", "ratio_stunnel"]) + "\n")
        for r in tsv:
            f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in r) + "\n")
    print()
    print(md)
    print(f"results: {md_path}")
    print(f"         {tsv_path}")
    print(f"raw:     {os.path.join(bench.out, 'raw.jsonl')}")
    print(f"took {elapsed / 60:.1f} min")
    if failures:
        print(f"\n*** {len(failures)} FAILURE(S): see FAILURES above ***", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
