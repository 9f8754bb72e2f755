"""A DNS server the tests control, for the backends-by-name tests (issue 15,
test_dns.py): Debian's dnsmasq on 127.0.0.1 and a port of its own, answering
only from a hosts file the test rewrites, and logging every query to a file
the test reads.

Dnsmasq runs in the foreground (`--keep-in-foreground`, no PID file) as a
subprocess of the Procs registry, so teardown stops it by PID. Its options:
  --no-resolv --no-hosts      nothing but what the test gives it
  --addn-hosts=FILE           the names; re-read on SIGHUP (set_hosts())
  --local=/test/              names under .test it does not know are NXDOMAIN
                              (without it an unknown name is REFUSED: there
                              is no upstream), and a known name's other family
                              is NODATA
  --cname=ALIAS,TARGET        CNAME records (the chain test)
  --local-ttl=N               the TTL of its answers
  --log-queries=extra --log-facility=FILE
                              one line per query, with its source address:
  "dnsmasq[PID]: 7 127.0.0.1/41234 query[A] db.test from 127.0.0.1"

The test's own queries (query(), and the probes that wait for dnsmasq to
answer or to have re-read its file) are sent from 127.0.0.9, so queries()
counts those of warmpoold (from 127.0.0.1) only. SIGSTOP/SIGCONT (pause(),
resume()) make a server that stops answering: the queries queue in its
socket unanswered.

A small DNS client in stdlib `socket` + `struct` (query()) is all the test
side needs: one question, the answer's rcode and A/AAAA addresses.

Backends of a name must share its port on distinct addresses: same_port()
starts wpbackend processes on 127.0.0.2, 127.0.0.3, ... (127/8 is all local on
Linux) or ::1, all on one port. Every wait is bounded.
"""

import os
import random
import re
import signal
import socket
import struct
import time
from pathlib import Path

from wp import START_TIMEOUT, WAIT_TIMEOUT, Backend, Procs, wait_until

DNSMASQ = "/usr/sbin/dnsmasq"
PROBE_SOURCE = "127.0.0.9"  # the test's own queries come from here, never warmpoold's
QUERY_TIMEOUT = 1.0  # one probe query (dnsmasq answers from memory in microseconds)
START_ATTEMPTS = 5  # a port chosen free can be taken before dnsmasq binds it

TYPE_A, TYPE_AAAA, TYPE_CNAME = 1, 28, 5
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}


def _free_udp_tcp_port(host="127.0.0.1"):
    """A port free for both UDP and TCP on host (dnsmasq binds both)."""
    for _ in range(50):  # bounded: a collision on TCP is rare
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, 0))
            port = u.getsockname()[1]
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind((host, port))
                return port
            except OSError:
                continue
            finally:
                t.close()
        finally:
            u.close()
    raise AssertionError("no port free for both UDP and TCP")


def _encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        assert 0 < len(raw) < 64, name
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _skip_name(msg, off):
    """Offset just past the (possibly compressed) name at off. Bounded by
    the message length: every step moves forward or ends."""
    for _ in range(len(msg)):
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n
    raise AssertionError("malformed name")


def query(server, name, qtype=TYPE_A, source=PROBE_SOURCE, timeout=QUERY_TIMEOUT):
    """One UDP query to server "ip:port" for name/qtype. Returns (rcode
    name, sorted list of the A/AAAA addresses in the answer), or (None, [])
    when nothing came back in time (a stopped server)."""
    host, port = server.rsplit(":", 1)
    tid = random.randrange(1 << 16)
    pkt = struct.pack(">HHHHHH", tid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(pkt, (host, int(port)))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, []
            s.settimeout(left)
            try:
                msg = s.recv(4096)
            except socket.timeout:
                return None, []
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == tid:
                break
    flags, qd, an = struct.unpack(">HHH", msg[2:8])
    off = 12
    for _ in range(qd):
        off = _skip_name(msg, off) + 4
    addrs = []
    for _ in range(an):
        off = _skip_name(msg, off)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[off: off + 10])
        off += 10
        rdata = msg[off: off + rdlen]
        off += rdlen
        if rtype == TYPE_A:
            addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == TYPE_AAAA:
            addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
    rcode = flags & 0xF
    return RCODES.get(rcode, str(rcode)), sorted(addrs)


class Dnsmasq:
    """One dnsmasq process. hosts: {name: [address, ...]}; cnames: [(alias,
    target), ...]; ttl: the TTL of every answer."""

    def __init__(self, procs, workdir, name="dnsmasq", hosts=None, cnames=(), ttl=1):
        self.procs = procs
        self.workdir = Path(workdir)
        self.name = name
        self.hosts = dict(hosts or {})
        self.cnames = list(cnames)
        self.ttl = ttl
        self.hosts_path = self.workdir / f"{name}.hosts"
        self.log_path = self.workdir / f"{name}.queries"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.port = None
        self.proc = None

    @property
    def server(self):
        """The "ip:port" to put in dns.servers."""
        return f"127.0.0.1:{self.port}"

    def _write_hosts(self):
        lines = [f"{a} {n}\n" for n, addrs in self.hosts.items() for a in addrs]
        tmp = self.hosts_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.hosts_path)

    def start(self):
        """Start on a free port; returns once it answers a query."""
        self._write_hosts()
        self.log_path.write_text("")
        last = ""
        for _ in range(START_ATTEMPTS):
            self.port = _free_udp_tcp_port()
            argv = [DNSMASQ, "--user=root", "--keep-in-foreground", f"--port={self.port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                    f"--addn-hosts={self.hosts_path}", "--local=/test/", f"--local-ttl={self.ttl}",
                    "--log-queries=extra", f"--log-facility={self.log_path}", "--pid-file=",
                    "--cache-size=0"]  # answers come from the hosts file each time: nothing stale
            argv += [f"--cname={alias},{target}" for alias, target in self.cnames]
            self.proc = self.procs.spawn(self.name, argv, self.stderr_path)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                rcode, _ = query(self.server, "probe.test", timeout=0.2)
                if rcode is not None:
                    return self
            last = self.stderr_path.read_text(errors="replace")
            Procs.stop(self.proc)
        raise AssertionError(f"dnsmasq did not start in {START_ATTEMPTS} attempts: {last}")

    def set_hosts(self, hosts):
        """Replace the names (a new hosts file and SIGHUP); returns once
        dnsmasq answers every name of `hosts` as written (a name with no
        address is NXDOMAIN)."""
        old = set(self.hosts)
        self.hosts = dict(hosts)
        self._write_hosts()
        self.proc.send_signal(signal.SIGHUP)
        for n in set(self.hosts) | old:
            want = sorted(self.hosts.get(n, []))
            v4 = sorted(a for a in want if ":" not in a)
            v6 = sorted(a for a in want if ":" in a)

            def answered(n=n, v4=v4, v6=v6):
                r4 = query(self.server, n, TYPE_A)
                r6 = query(self.server, n, TYPE_AAAA)
                if not v4 and not v6:
                    return r4[0] == "NXDOMAIN"
                return r4[1] == v4 and r6[1] == v6

            wait_until(answered, WAIT_TIMEOUT, what=f"dnsmasq to answer {n} with {want}")

    def pause(self):
        """SIGSTOP: the server stops answering (queries queue unanswered)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.resume()  # a stopped process would only die of SIGKILL
        return Procs.stop(self.proc)

    _QUERY_RX = re.compile(r"query\[(\w+)\] (\S+) from (\S+)$")

    def queries(self, name=None, source="127.0.0.1"):
        """The queries warmpoold sent (from `source`), as (type, name) in
        order; only those for `name` when given."""
        out = []
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            m = self._QUERY_RX.search(line)
            if m and m.group(3) == source and (name is None or m.group(2) == name):
                out.append((m.group(1), m.group(2)))
        return out

    def wait_queries(self, n, name=None, timeout=WAIT_TIMEOUT):
        """Wait until warmpoold has sent at least n queries (for name)."""
        return wait_until(lambda: len(self.queries(name)) >= n and self.queries(name), timeout,
                          what=f"{n} queries for {name or 'any name'} in dnsmasq's log")


def same_port(procs, workdir, hosts, prefix="named", **opts):
    """wpbackend processes, one per address in `hosts`, all on one port (a
    name's addresses share the name's port). Returns the list of Backends;
    retries with another port when one is taken on some address."""
    last = None
    for attempt in range(START_ATTEMPTS):
        started = []
        try:
            port = None
            for i, host in enumerate(hosts):
                be = Backend(procs, workdir, f"{prefix}{attempt}_{i}", host=host, **opts)
                be.start(port=port or 0)
                port = be.port
                started.append(be)
            return started
        except AssertionError as e:  # EADDRINUSE on a later address: start over
            last = e
            for be in started:
                Procs.stop(be.proc)
    raise AssertionError(f"no port free on every one of {hosts}: {last}")
