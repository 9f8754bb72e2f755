"""Warm connections across a restart through systemd's fd store (issue 16,
part 1), with the test playing systemd's part: it reads NOTIFY_SOCKET with
recvmsg, keeps every fd sent with FDSTORE=1 under its FDNAME=, closes the one
an FDSTOREREMOVE=1 names, and starts the next daemon with the fds it holds
as systemd would pass them (fds 3.., LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).
$INVOCATION_ID is set as systemd sets it for a service: with daemon.fd_store
at its default (auto) the store is used only then.
"""

import array
import os
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from dnsutil import Dnsmasq
from tlsutil import Pki, TLSServer
from wp import (
    _SCRUB_ENV,
    START_TIMEOUT,
    VALGRIND,
    WAIT_TIMEOUT,
    WARMPOOLD,
    Daemon,
    admin,
    connect_unix,
    make_config,
    pool_config,
    pool_row,
    recv_exact,
    wait_until,
)

TCP_INFO = 11
TCP_ESTABLISHED = 1
MAX_FDS_PER_MSG = 16


def tcp_state(fd):
    """The kernel's TCP state of a socket fd (first byte of struct tcp_info)."""
    s = socket.socket(fileno=os.dup(fd))
    try:
        return s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 8)[0]
    finally:
        s.close()


class StoreDaemon(Daemon):
    """A warmpoold whose notify socket is read the way systemd reads it, with
    an fd store (self.store: name -> fd) that survives the process."""

    def __init__(self, *a, store=None, **kw):
        super().__init__(*a, **kw)
        self.store = store if store is not None else {}
        self.stored_names = []  # every FDSTORE name, in order
        self.removed = []  # every FDSTOREREMOVE name, in order

    def collect_notify(self, wait=0.0):
        if self._nsock is None:
            return self.notify
        r, _, _ = select.select([self._nsock], [], [], wait)
        while r:
            fds = array.array("i")
            try:
                data, anc, _, _ = self._nsock.recvmsg(
                    4096, socket.CMSG_SPACE(MAX_FDS_PER_MSG * fds.itemsize), socket.MSG_DONTWAIT
                )
            except BlockingIOError:
                break
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
            for fd in fds:  # as systemd's: never inherited by the next daemon but as fds 3..
                os.set_inheritable(fd, False)
            text = data.decode(errors="replace")
            lines = text.split("\n")
            name = next((ln[len("FDNAME="):] for ln in lines if ln.startswith("FDNAME=")), None)
            if "FDSTORE=1" in lines:
                assert name and len(fds) == 1, f"FDSTORE without a name or with {len(fds)} fds: {text!r}"
                assert name not in self.store, f"FDNAME {name!r} stored twice"
                self.store[name] = fds[0]
                self.stored_names.append(name)
            elif "FDSTOREREMOVE=1" in lines:
                assert not fds
                self.removed.append(name)
                fd = self.store.pop(name, None)
                if fd is not None:
                    os.close(fd)
            else:
                for fd in fds:
                    os.close(fd)
                self.notify.append(text)
            r, _, _ = select.select([self._nsock], [], [], 0)
        return self.notify

    def start_with_store(self, env=None, expect_ready=True, timeout=START_TIMEOUT, invocation=True):
        """Start with every fd of self.store passed as systemd passes the store."""
        self._nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._nsock.bind(str(self.notify_path))
        full_env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV and k not in ("INVOCATION_ID", "FDSTORE")}
        full_env["NOTIFY_SOCKET"] = str(self.notify_path)
        if invocation:
            full_env["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
        full_env.update(env or {})
        names = list(self.store)
        src = [self.store[n] for n in names]
        if names:
            full_env["LISTEN_FDS"] = str(len(names))
            full_env["LISTEN_FDNAMES"] = ":".join(names)
        # Far above 3 + n, so renumbering never overwrites a source fd.
        high = [os.dup2(fd, 200 + i, inheritable=False) for i, fd in enumerate(src)]

        def renumber():
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i, inheritable=True)

        argv = [*VALGRIND, str(WARMPOOLD), "-c", str(self.config_path)]
        if names:  # LISTEN_PID must be the daemon's pid: exec keeps the shell's
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *argv]
        stderr = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=full_env,
                close_fds=False, preexec_fn=renumber,
            )
        finally:
            stderr.close()
            for fd in high:
                os.close(fd)
        self.procs.items.append((self.proc, self.name, Path(self.stderr_path)))
        if expect_ready:
            self.wait_ready(timeout)
        return self

    def restart_fresh(self):
        """A new process on the same config: the old notify socket goes, the store stays."""
        self.close()
        try:
            os.unlink(self.notify_path)
        except FileNotFoundError:
            pass
        self.notify = []

    def drop_store(self):
        for fd in self.store.values():
            os.close(fd)
        self.store.clear()


@pytest.fixture
def store_daemon(procs, tmp_path, sockdir):
    made = []

    def make(pools, daemon=None, store=None, name="warmpoold"):
        adm = str(Path(sockdir) / f"admin{len(made) + 1}.sock")
        text = make_config(pools, {"admin_socket": adm, **(daemon or {})})
        d = StoreDaemon(procs, tmp_path, sockdir, text, name=f"{name}{len(made) + 1}", store=store)
        d.admin_path = Path(adm)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
        d.drop_store()


def wait_store(d, pred, what):
    return wait_until(lambda: (d.collect_notify(), pred(d.store))[1], WAIT_TIMEOUT, what=what)


def conn_names(store, pool):
    return [n for n in store if n.startswith(f"wp1,{pool},")]


def test_restart_keeps_warm_connections(store_daemon, start_backend, sockdir):
    """min_idle 8: every idle connection is stored; after a restart with the
    store passed back, the new daemon starts with those 8, the backend sees
    no new connection, and the first client is paired with one of them.
    Closing connections removes them from the store: it never holds one the
    daemon dropped."""
    be = start_backend()
    pools = {"p": pool_config(sockdir, "p", [be], min_idle=8, max_connections=16)}
    d1 = store_daemon(pools)
    d1.start_with_store()
    be.wait_open(8)
    wait_store(d1, lambda s: len(conn_names(s, "p")) == 8, "8 idle connections in the store")
    first_ids = {a.id for a in be.accepts()}
    assert len(first_ids) == 8
    for name in conn_names(d1.store, "p"):
        assert name.startswith(f"wp1,p,127.0.0.1_{be.port},"), name
        assert ":" not in name and len(name) <= 255
    assert d1.stop() == 0
    d1.collect_notify()
    assert len(conn_names(d1.store, "p")) == 8, f"a stopping daemon must leave them stored: {d1.removed}"
    for name in conn_names(d1.store, "p"):
        assert tcp_state(d1.store[name]) == TCP_ESTABLISHED
    assert be.open_count() == 8, "the store keeps the connections open while no daemon runs"

    d1.restart_fresh()
    d1.start_with_store()
    d1.wait_log(r"pool=p: fd store: 8 warm connections adopted from before the restart")
    row = pool_row(d1, "p")
    assert row["idle"] == 8 and row["connecting"] == 0, row
    assert len(be.accepts()) == 8, "the backend saw a new connection after the restart"

    # The first client is paired with a connection made before the restart.
    s = connect_unix(d1.socket_path("p"))
    s.sendall(b"after restart\n")
    assert recv_exact(s, 14) == b"after restart\n"
    s.close()
    # (The store's copy goes when the harness reads the FDSTOREREMOVE, as systemd's would.)
    closed = wait_until(lambda: (d1.collect_notify(), next((c for c in be.closes() if c.bytes_in > 0), None))[1],
                        what="the first session's connection closing")
    assert closed.id in first_ids, f"the first client got conn {closed.id}, not one of {sorted(first_ids)}"

    # Its connection left the store at checkout; the refill's replacement
    # came in. Every fd the store holds is an idle, established connection.
    wait_store(d1, lambda s: len(conn_names(s, "p")) == 8 and len(be.accepts()) == 9,
               "the replacement stored, the used one removed")
    assert len(d1.removed) >= 1
    # The backend restarts: every idle connection is closed; each must
    # leave the store, and their replacements come in.
    removed_before = len(d1.removed)
    old = set(conn_names(d1.store, "p"))
    be.stop()
    be.restart()
    be.wait_open(8)
    wait_store(d1, lambda s: len(conn_names(s, "p")) == 8 and not (old & set(s)),
               "the closed connections removed, their replacements stored")
    assert len(d1.removed) >= removed_before + 8
    wait_until(lambda: pool_row(d1, "p")["idle"] == 8, what="8 idle")
    for name in conn_names(d1.store, "p"):
        assert tcp_state(d1.store[name]) == TCP_ESTABLISHED, "the store holds a connection the daemon dropped"
    assert d1.stop() == 0


def client_sockets_to(port, state):
    """TCP sockets whose remote port is `port` in `state` (hex, as in /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp", "rb") as f:  # every page of it (one read() returns one)
        text = f.read().decode()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[3] == state and int(fields[2].rsplit(":", 1)[1], 16) == port:
            n += 1
    return n


def test_queued_stores_hold_their_fd_and_a_remove_cancels_them(store_daemon, start_backend, sockdir):
    """A manager that does not read: FDSTOREs wait in the daemon's queue,
    each holding a dup of its fd. When the connections close before they
    are sent, each queued FDSTORE is dropped with its dup (the manager never
    sees it, and no copy keeps the TCP connection half-open); the rest are
    sent once the manager reads again, and the store ends up holding
    exactly the live connections."""
    be = start_backend()
    be.stop()  # down at the start: no connection is made before READY=1
    pools = {"q": pool_config(sockdir, "q", [be], min_idle=16, max_connections=32)}
    d = store_daemon(pools)
    d.start_with_store()  # reads until READY=1, then nothing more for now
    be.restart()
    be.wait_open(16)
    port = be.port
    be.stop()  # every connection closes: the daemon closes its side
    # No socket of the daemon's is left in CLOSE_WAIT: neither its own fd
    # nor a dup held for an FDSTORE it never sent (those hold the only
    # reference left but the harness's, which has not read them yet).
    be.restart()
    be.wait_open(16)
    wait_store(d, lambda s: len(conn_names(s, "q")) == 16 and client_sockets_to(port, "08") == 0,
               "16 live connections in the store, nothing half-closed left")
    for name in conn_names(d.store, "q"):
        assert tcp_state(d.store[name]) == TCP_ESTABLISHED, name
    # 32 connections were idle, but the socket took at most 10 datagrams
    # while unread: the first ones' queued FDSTOREs were cancelled, never
    # sent; and no FDSTOREREMOVE names an fd the manager never got.
    sent = [n for n in d.stored_names if n.startswith("wp1,q,")]
    assert 16 < len(sent) < 32, len(sent)
    assert d.removed and set(d.removed) <= set(d.stored_names)
    assert d.stop() == 0


def test_listening_socket_survives_restart(store_daemon, start_backend, sockdir):
    """A pool's listening socket is stored too and adopted at the next start:
    a client that connects while no daemon runs waits in its backlog and is
    served after the restart, instead of finding no socket."""
    be = start_backend()
    pools = {"l": pool_config(sockdir, "l", [be], min_idle=1)}
    d = store_daemon(pools)
    d.start_with_store()
    path = str(d.socket_path("l"))
    wait_store(d, lambda s: any(n.startswith("wp1L,") and n.endswith("," + path) for n in s),
               "the listening socket in the store")
    assert d.stop() == 0
    d.collect_notify()
    assert os.path.exists(path), "the socket file of a stored listener must stay for the next start"
    c = connect_unix(path)  # no daemon runs: the stored socket's backlog takes it
    c.sendall(b"queued\n")
    d.restart_fresh()
    d.start_with_store()
    d.wait_log(r"pool=l: listening on " + path + r" \(kept in systemd's fd store across the restart")
    assert recv_exact(c, 7) == b"queued\n"
    c.close()
    assert d.stop() == 0


def test_greeting_survives_restart(store_daemon, start_backend, sockdir):
    """A greeting the daemon read before the restart is gone from the socket:
    the stored name carries it, and the first client after the restart gets
    it first."""
    be = start_backend(greeting="HELLO from, the: backend 100%\\r\\n")
    pools = {"g": pool_config(sockdir, "g", [be], min_idle=2)}
    d = store_daemon(pools)
    d.start_with_store()
    greeting = b"HELLO from, the: backend 100%\r\n"
    wait_store(d, lambda s: len(conn_names(s, "g")) == 2 and all(n.endswith("%0D%0A") for n in conn_names(s, "g")),
               "2 stored names carrying the greeting")
    assert d.stop() == 0
    d.restart_fresh()
    d.start_with_store()
    d.wait_log(r"pool=g: fd store: 2 warm connections adopted")
    assert len(be.accepts()) == 2
    s = connect_unix(d.socket_path("g"))
    assert recv_exact(s, len(greeting)) == greeting
    s.sendall(b"ping\n")
    assert recv_exact(s, 5) == b"ping\n"
    s.close()
    assert d.stop() == 0


class FakeBackend:
    """A listening socket the test accepts on itself, to hold both ends."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]

    def pair(self):
        c = socket.create_connection(self.lsock.getsockname())
        a, _ = self.lsock.accept()
        return c, a

    def close(self):
        self.lsock.close()


def test_refused_fds_are_closed_counted_and_removed(store_daemon, sockdir):
    """Fds the store passes back that must not become connections: each is
    closed, removed from the store and counted (one log line per reason);
    a good one next to them is adopted and serves the first client."""
    fb, gone = FakeBackend(), FakeBackend()
    held = []
    try:
        now_ms = int(time.time() * 1000)
        store = {}

        def put(name, sock_or_fd):
            fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.detach()
            store[name] = fd

        good_c, good_a = fb.pair()
        held.append(good_a)
        put(f"wp1,r,x,1,{now_ms},", good_c)
        # A backend no longer configured.
        c, a = gone.pair()
        held.append(a)
        put(f"wp1,r,x,2,{now_ms},", c)
        # The backend closed it while no daemon ran.
        c, a = fb.pair()
        a.close()
        put(f"wp1,r,x,3,{now_ms},", c)
        # Not a socket.
        rd, wr = os.pipe()
        held.append(wr)
        put(f"wp1,r,x,4,{now_ms},", rd)
        # A listening socket where a connection belongs.
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        put(f"wp1,r,x,5,{now_ms},", ls)
        # Bytes nobody read while the daemon was down.
        c, a = fb.pair()
        held.append(a)
        a.sendall(b"late reply\n")
        put(f"wp1,r,x,6,{now_ms},", c)
        # Past max_lifetime (1h): connected two hours ago.
        c, a = fb.pair()
        held.append(a)
        put(f"wp1,r,x,7,{now_ms - 7200 * 1000},", c)
        # A pool that no longer exists, and a name we never write.
        c, a = fb.pair()
        held.append(a)
        put(f"wp1,gone,x,8,{now_ms},", c)
        c, a = fb.pair()
        held.append(a)
        put("wp1,garbage", c)

        # A connection stored as a listening socket.
        c, a = fb.pair()
        held.append(a)
        put("wp1L,1,2,3,%2Ftmp%2Fx.sock", c)
        # A listening socket whose path now names another file.
        lpath = str(sockdir / "r.sock")
        us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        us.bind(lpath)
        us.listen(1)
        st = os.stat(lpath)
        os.unlink(lpath)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(lpath)  # then removed: the daemon binds the path itself
        other.close()
        os.unlink(lpath)
        lname = "wp1L,%x,%x,9,%s" % (st.st_dev, st.st_ino, lpath.replace("/", "%2F"))
        put(lname, us)

        pools = {"r": pool_config(sockdir, "r", [fb.addr], min_idle=0, max_lifetime="1h")}
        d = store_daemon(pools, store=store)
        d.start_with_store()
        for reason in ("not connected to a backend of the pool", "not established", "not a socket",
                       "a listening socket", "unread bytes", "past max_lifetime", "no pool of that name",
                       "not a name warmpoold writes", "not a listening Unix stream socket",
                       "no pool listens at its path now"):
            lines = d.wait_log(r"fd store: 1 passed fd closed, not used: " + reason)
            assert len(lines) == 1, lines
        d.wait_log(r"pool=r: fd store: 1 warm connection adopted")
        d.collect_notify()
        refused = {f"wp1,r,x,{i},{now_ms}," for i in (2, 3, 4, 5, 6)} | {
            f"wp1,r,x,7,{now_ms - 7200 * 1000},", f"wp1,gone,x,8,{now_ms},", "wp1,garbage",
            "wp1L,1,2,3,%2Ftmp%2Fx.sock", lname}
        assert refused <= set(d.removed), f"not removed from the store: {refused - set(d.removed)}"
        # The good connection, and the listening socket the daemon bound anew.
        assert sorted(d.store) == sorted([f"wp1,r,x,1,{now_ms},", next(n for n in d.store if n.startswith("wp1L,"))])
        assert next(n for n in d.store if n.startswith("wp1L,")) != lname
        assert pool_row(d, "r")["idle"] == 1

        # Closed for real: with the store's copies gone too, the peers see EOF.
        for a in held:
            if isinstance(a, socket.socket):
                a.settimeout(WAIT_TIMEOUT)
        gone_peer = held[1]
        assert gone_peer.recv(16) == b"", "the connection to a removed backend is still open"
        with pytest.raises(BrokenPipeError):
            os.write(held[2], b"x")  # the pipe's read end is closed everywhere

        # The adopted one serves the first client (no backend connect: min_idle 0).
        s = connect_unix(d.socket_path("r"))
        s.sendall(b"hi\n")
        assert recv_exact(good_a, 3) == b"hi\n"
        good_a.sendall(b"yo\n")
        assert recv_exact(s, 3) == b"yo\n"
        s.close()
        assert d.stop() == 0
    finally:
        for h in held:
            if isinstance(h, int):
                os.close(h)
            else:
                h.close()
        fb.close()
        gone.close()


def test_store_off(store_daemon, start_backend, sockdir):
    """daemon.fd_store: off, or no $INVOCATION_ID (not a systemd service):
    nothing is stored, and fds passed back anyway are closed and removed."""
    be = start_backend()
    pools = {"o": pool_config(sockdir, "o", [be], min_idle=2)}
    d = store_daemon(pools)
    d.start_with_store(invocation=False)
    be.wait_open(2)
    wait_until(lambda: pool_row(d, "o")["idle"] == 2, what="2 idle")
    d.collect_notify()
    assert not d.stored_names, "stored fds outside a systemd service"
    assert d.stop() == 0

    fb = FakeBackend()
    c, a = fb.pair()
    try:
        d2 = store_daemon({"o": pool_config(sockdir, "o", [fb.addr], min_idle=0)}, daemon={"fd_store": "off"},
                          store={"wp1,o,x,1,%d," % int(time.time() * 1000): c.detach()})
        d2.start_with_store()
        d2.wait_log(r"fd store: 1 passed fd closed, not used: fd_store is off")
        d2.collect_notify()
        assert not d2.store and not d2.stored_names
        a.settimeout(WAIT_TIMEOUT)
        assert a.recv(16) == b""
        assert d2.stop() == 0
    finally:
        a.close()
        fb.close()


def test_tls_connections_are_never_stored(store_daemon, start_backend, procs, tmp_path, sockdir):
    """A TLS connection's state lives in the process: it is never stored,
    while the plain pool next to it is."""
    pki = Pki(tmp_path / "pki")
    srv = TLSServer(procs, tmp_path, "tls1", pki.server_cert, pki.server_key).start()
    be = start_backend()
    pools = {
        "plain": pool_config(sockdir, "plain", [be], min_idle=1),
        "t": pool_config(sockdir, "t", [srv.addr], min_idle=2, connect_timeout="5s", tls={"ca_file": pki.ca}),
    }
    d = store_daemon(pools)
    d.start_with_store()
    wait_until(lambda: pool_row(d, "t")["idle"] == 2, what="2 idle TLS connections")
    wait_store(d, lambda s: len(conn_names(s, "plain")) == 1, "the plain connection in the store")
    d.collect_notify()
    assert not conn_names(d.store, "t"), d.stored_names
    assert not any(n.startswith("wp1,t,") for n in d.stored_names)
    assert d.stop() == 0


def test_named_backend_is_not_known_at_start(store_daemon, procs, tmp_path, sockdir):
    """A backend given by a host name has no address before its name's first
    answer, which comes from the loop after READY=1: a connection to it is
    refused and counted, never adopted unchecked (the pool reconnects once
    the name resolves)."""
    fb = FakeBackend()
    c, a = fb.pair()
    dns = Dnsmasq(procs, tmp_path, hosts={"db.test": ["127.0.0.1"]}).start()
    try:
        port = fb.lsock.getsockname()[1]
        name = "wp1,n,db.test_%d,1,%d," % (port, int(time.time() * 1000))
        d = store_daemon({"n": pool_config(sockdir, "n", [f"db.test:{port}"], min_idle=0,
                                           dns={"servers": [dns.server]})},
                         store={name: c.detach()})
        d.start_with_store()
        d.wait_log(r"fd store: 1 passed fd closed, not used: not connected to a backend of the pool")
        d.collect_notify()
        assert name in d.removed and not conn_names(d.store, "n")
        a.settimeout(WAIT_TIMEOUT)
        assert a.recv(16) == b""
        assert d.stop() == 0
    finally:
        a.close()
        fb.close()
