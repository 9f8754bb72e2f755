"""Handoff: a pool's handoff socket gives libwarmpool clients the warm
backend socket itself (SCM_RIGHTS) with the greeting already read; the
library falls back to the proxy socket; `warmpoolctl connect` bridges stdio
to either. A sample client is built with pkg-config like a user's would be."""

import array
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from wp import BUILD, REPO, WARMPOOLCTL, Procs, admin, recv_exact, wait_until


CHECKOUT = b"WPQ1O\0\0\0"
CHECKIN = b"WPQ1I\0\0\0"


def handoff_checkin(path, conn):
    """Send the socket back; returns the daemon's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendmsg([CHECKIN], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
        return s.recv(100)


def handoff_checkout(path):
    """The raw protocol: one SEQPACKET message with the fd attached."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.send(CHECKOUT)
        msg, anc, flags, _ = s.recvmsg(65536, socket.CMSG_SPACE(4))
    assert flags == 0 and msg[:4] == b"WPH1" and msg[4] == 0, msg
    fds = [array.array("i", data)[0] for level, kind, data in anc
           if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS]
    assert len(fds) == 1, anc
    glen = int.from_bytes(msg[8:12], "big")
    assert len(msg) == 12 + glen
    return socket.socket(fileno=fds[0]), msg[12:]


def stats(d, pool):
    table = admin(d, "show stats")
    lines = table.split("\n")
    start = lines.index(f"pool {pool}")
    out = {}
    for ln in lines[start + 1:]:
        if not ln.startswith("  "):
            break
        k, v = ln.split()
        out[k] = int(v)
    return out



def start_reuse_handoff(start_backend, start_daemon, pool, sockdir, name, mode=None):
    """A backend and a daemon with one pool NAME (reuse on, a handoff socket
    at sockdir/NAME.handoff, min_idle 1) whose floor is open: (be, d, hpath)."""
    be = start_backend()
    hpath = sockdir / f"{name}.handoff"
    handoff = {"listen": str(hpath), **({"mode": mode} if mode else {})}
    d = start_daemon(pools={name: pool(name, [be], min_idle=1, max_connections=8, reuse=True, handoff=handoff)})
    be.wait_open(1)
    return be, d, hpath

def test_handoff_gives_the_backend_socket_with_its_greeting(start_backend, start_daemon, pool, sockdir):
    be = start_backend(greeting=r"+OK hello\r\n")
    hpath = sockdir / "h.handoff"
    d = start_daemon(pools={"h": pool("h", [be], min_idle=2, handoff={"listen": str(hpath)})})
    be.wait_open(2)
    wait_until(lambda: stats(d, "h")["connections_opened"] == 2, what="2 connections opened")
    conn, greeting = handoff_checkout(hpath)
    with conn:
        assert greeting == b"+OK hello\r\n"
        assert conn.getpeername() == ("127.0.0.1", be.port)  # the backend itself, not the daemon
        conn.setblocking(True)
        conn.settimeout(10)
        for i in range(200):  # round trips the daemon never sees
            conn.sendall(b"m%04d" % i)
            assert recv_exact(conn, 5) == b"m%04d" % i
    st = stats(d, "h")
    assert st["handoffs"] == 1 and st["clients_served"] == 1
    assert st["bytes_to_backend"] == 0 and st["bytes_to_client"] == 0, st
    # The backend saw one connection carry all of it, accepted before the checkout.
    used = wait_until(lambda: next((c for c in be.closes() if c.bytes_in == 1000), None),
                      what="the handed-off connection closing")
    assert used.id in (1, 2)
    be.wait_open(2)  # the floor is refilled
    assert int(admin(d, "show metrics").split("warmpool_pool_handoffs_total{pool=\"h\"} ")[1].split()[0]) == 1


def test_handoff_client_waits_and_times_out_like_any_client(start_daemon, pool, sockdir):
    """No connection to be had (nothing listens at the backend address):
    the handoff client queues, then is closed with no message."""
    hpath = sockdir / "q.handoff"
    d = start_daemon(pools={"q": pool("q", ["127.0.0.1:1"], min_idle=1, queue_timeout="300ms",
                                      handoff={"listen": str(hpath)})})
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(str(hpath))
        s.send(CHECKOUT)
        assert s.recv(100) == b""
    d.wait_log(r"pool=q client=\d+: no backend connection within queue_timeout")
    assert stats(d, "q")["clients_timed_out"] == 1 and stats(d, "q")["handoffs"] == 0


def test_proxy_socket_refuses_seqpacket_so_the_library_can_tell(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)})
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        with pytest.raises(OSError) as e:
            s.connect(str(d.socket_path("p")))
    assert e.value.errno == 91  # EPROTOTYPE


@pytest.fixture(scope="module")
def sample_client(tmp_path_factory):
    """tests/client/sample.c built with pkg-config against the build tree."""
    if not shutil.which("pkg-config"):
        pytest.skip("pkg-config is not installed (make deps)")
    out = tmp_path_factory.mktemp("client") / "sample"
    env = dict(os.environ, PKG_CONFIG_PATH=str(BUILD))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "warmpool"], env=env, capture_output=True,
                           text=True, check=True, timeout=30).stdout.split()
    assert any(f.startswith("-lwarmpool") for f in flags), flags
    # A sanitizer build's library needs its runtime first in the program too.
    deps = subprocess.run(["ldd", str(BUILD / "libwarmpool.so")], capture_output=True, text=True,
                          timeout=30).stdout
    san = ["-fsanitize=address,undefined"] if "libasan" in deps else []
    subprocess.run(["cc", *san, "-o", str(out), str(REPO / "tests/client/sample.c"), *flags,
                    f"-Wl,-rpath,{BUILD}"], check=True, timeout=60)
    return out


def test_sample_client_built_with_pkg_config_uses_handoff_and_proxy(sample_client, start_backend, start_daemon,
                                                                     pool, sockdir):
    be = start_backend()
    hpath = sockdir / "s.handoff"
    d = start_daemon(pools={"s": pool("s", [be], min_idle=2, handoff={"listen": str(hpath)})})
    be.wait_open(2)
    r = subprocess.run([sample_client, hpath, "via-handoff"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "direct=1 greeting=0\nvia-handoff\n"
    r = subprocess.run([sample_client, d.socket_path("s"), "via-proxy"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "direct=0 greeting=0\nvia-proxy\n"
    st = stats(d, "s")
    assert st["handoffs"] == 1 and st["bytes_to_backend"] == len("via-proxy")


def test_warmpoolctl_connect_bridges_stdio(start_backend, start_daemon, pool, sockdir):
    be = start_backend(greeting=r"hi\r\n")
    hpath = sockdir / "c.handoff"
    d = start_daemon(pools={"c": pool("c", [be], min_idle=1, handoff={"listen": str(hpath)}),
                            "n": pool("n", [be], min_idle=1)})
    for name in ("c", "n"):
        r = subprocess.run([WARMPOOLCTL, "-s", d.admin_path, "connect", name], input=b"echo me\n",
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"hi\r\necho me\n", (name, r.stdout)
    assert stats(d, "c")["handoffs"] == 1 and stats(d, "n")["handoffs"] == 0
    r = subprocess.run([WARMPOOLCTL, "-s", d.admin_path, "connect", "nope"], capture_output=True, timeout=30)
    assert r.returncode == 1 and b'no pool named "nope"' in r.stdout


def test_checkin_returns_the_socket_to_the_pool(start_backend, start_daemon, pool, sockdir):
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "r")
    conn, _ = handoff_checkout(hpath)
    conn.settimeout(10)
    conn.sendall(b"one")
    assert recv_exact(conn, 3) == b"one"
    local = conn.getsockname()
    assert handoff_checkin(hpath, conn)[:4] == b"WPH1"
    conn.close()
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1, what="the socket reused")
    # The next checkouts get it back (LIFO): the same TCP connection.
    ports = set()
    for _ in range(2):
        c2, _ = handoff_checkout(hpath)
        ports.add(c2.getsockname())
        c2.close()
    assert local in ports
    accepted = len(be.accepts())
    assert accepted <= 3, be.events()  # the floor's refills only; the returned socket was not re-opened


def test_checkin_with_unread_bytes_is_closed_not_leaked(start_backend, start_daemon, pool, sockdir):
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "l")
    conn, _ = handoff_checkout(hpath)
    conn.settimeout(10)
    conn.sendall(b"SECRET")
    # The echo is back, unread, in the socket we hand back.
    wait_until(lambda: conn.recv(6, socket.MSG_PEEK) == b"SECRET", what="the echo, unread")
    handoff_checkin(hpath, conn)
    conn.close()
    wait_until(lambda: stats(d, "l")["connections_reuse_refused"] == 1, what="refused")
    for _ in range(3):
        c2, _ = handoff_checkout(hpath)
        with c2:
            c2.settimeout(10)
            c2.sendall(b"mine")
            assert recv_exact(c2, 4) == b"mine"  # never SECRET


def test_checkin_of_a_foreign_socket_is_refused(start_backend, start_daemon, pool, sockdir):
    be, other = start_backend(), start_backend()
    hpath = sockdir / "f.handoff"
    d = start_daemon(pools={"f": pool("f", [be], min_idle=1, reuse=True, handoff={"listen": str(hpath)})})
    be.wait_open(1)
    with socket.create_connection(("127.0.0.1", other.port), timeout=10) as foreign:
        handoff_checkin(hpath, foreign)
    wait_until(lambda: stats(d, "f")["connections_reuse_refused"] == 1, what="refused")
    assert stats(d, "f")["connections_reused"] == 0


# ---------------------------------------------------------------------------
# Checkin trusts only sockets the daemon handed out (no forged or repeated
# checkin), handed out sockets leave the daemon's epoll set, and one uid's
# silent connections cannot lock the others out of the handoff socket.

NOBODY = 65534

# Run as another uid: checks out `n` connections (raw protocol, holding all
# of them) or makes `n` relayed echo exchanges; prints what it got as JSON.
OTHER_UID_CLIENT = r"""
import array, json, socket, sys
mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
out, held = [], []
for _ in range(n):
    if mode == "handoff":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(10)
        s.connect(path)
        s.send(b"WPQ1O\0\0\0")
        msg, anc, flags, _ = s.recvmsg(65536, socket.CMSG_SPACE(4))
        fds = [array.array("i", data)[0] for level, kind, data in anc]
        if not fds:
            out.append(None)
            continue
        c = socket.socket(fileno=fds[0])
        held.append(c)
        out.append(c.getsockname()[1])
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"ping")
        got = b""
        while len(got) < 4:
            b = s.recv(4 - len(got))
            if not b:
                break
            got += b
        held.append(s)
        out.append(got.decode())
print(json.dumps(out))
"""


def as_other_uid(mode, path, n=1, uid=NOBODY):
    r = subprocess.run([sys.executable, "-I", "-c", OTHER_UID_CLIENT, mode, str(path), str(n)],
                       stdin=subprocess.DEVNULL, capture_output=True, user=uid, group=uid, extra_groups=[],
                       cwd="/", env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def refused_re(pool, path, why, uid=0, pid=None):
    return (rf"pool={pool}: {re.escape(str(path))}: checkin from uid={uid} pid={pid or os.getpid()} "
            rf"refused: {re.escape(why)}; closed")


def test_checkin_of_a_socket_never_handed_out_is_refused(start_backend, start_daemon, pool, sockdir):
    """A client connects to the backend itself and checks that socket in:
    its peer is the backend, but the daemon never handed it out. Refused;
    the next client gets one of the daemon's own connections."""
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "n")
    with socket.create_connection(("127.0.0.1", be.port), timeout=10) as forged:
        be.wait_open(2)
        assert handoff_checkin(hpath, forged)[:4] == b"WPH1"
        d.wait_log(refused_re("n", hpath, "not a socket handed out here, or already checked in"))
        wait_until(lambda: stats(d, "n")["connections_reuse_refused"] == 1, what="refused")
        assert stats(d, "n")["connections_reused"] == 0
        conn, _ = handoff_checkout(hpath)
        with conn:
            assert conn.getpeername() == ("127.0.0.1", be.port)
            assert conn.getsockname() != forged.getsockname()  # the daemon's own connection
            conn.settimeout(10)
            conn.sendall(b"mine")
            assert recv_exact(conn, 4) == b"mine"


def test_the_same_socket_checked_in_twice_is_taken_once(start_backend, start_daemon, pool, sockdir):
    """A checkin, then a second one of a copy (dup) of the same socket: the
    lease is gone after the first, so two clients never share a connection."""
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "t")
    conn, _ = handoff_checkout(hpath)
    copy = conn.dup()
    with conn, copy:
        assert handoff_checkin(hpath, conn)[:4] == b"WPH1"
        wait_until(lambda: stats(d, "t")["connections_reused"] == 1, what="the first checkin reused")
        assert handoff_checkin(hpath, copy)[:4] == b"WPH1"
        d.wait_log(refused_re("t", hpath, "not a socket handed out here, or already checked in"))
        wait_until(lambda: stats(d, "t")["connections_reuse_refused"] == 1, what="the second refused")
        assert stats(d, "t")["connections_reused"] == 1
        c1, _ = handoff_checkout(hpath)
        c2, _ = handoff_checkout(hpath)
        with c1, c2:
            assert c1.getsockname() != c2.getsockname()


def test_a_checked_in_connection_never_goes_to_another_uid(start_backend, start_daemon, pool, sockdir):
    """uid 0 checks a connection in and keeps a copy (nothing can stop
    that). A client of another uid checking out must never get it: that
    copy could read and write inside its session."""
    os.chmod(sockdir, 0o755)
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "u", mode="0666")
    conn, _ = handoff_checkout(hpath)
    spy = conn.dup()
    with spy:
        be.wait_open(2)  # the floor refilled: two idle connections once it is back
        assert handoff_checkin(hpath, conn)[:4] == b"WPH1"
        conn.close()
        wait_until(lambda: stats(d, "u")["connections_reused"] == 1, what="the checkin reused")
        # Both idle connections taken at once by uid 65534: neither is the spy's.
        ports = as_other_uid("handoff", hpath, 2)
        assert None not in ports and len(set(ports)) == 2, ports
        assert spy.getsockname()[1] not in ports, (spy.getsockname(), ports)
        d.wait_log(r"pool=u backend=\S+ conn=\d+ client=\d+: closed: checked in by uid 0, not for the waiting "
                   rf"client \(uid {NOBODY}\)")
        # Its owner may still have it back: uid 0 is who checked it in. (Closed
        # here, as the other uid's wait needed the room; a fresh one comes.)
        c, _ = handoff_checkout(hpath)
        c.close()


def test_a_checked_in_connection_is_not_relayed_to_another_uid(start_backend, start_daemon, pool, sockdir):
    """The same for a relayed client of another uid: no idle connection but
    the one uid 0 checked in (and may still hold), so the daemon opens a new
    one for it rather than pair them."""
    os.chmod(sockdir, 0o755)
    be = start_backend()
    hpath = sockdir / "v.handoff"
    lpath = sockdir / "v.sock"
    d = start_daemon(pools={"v": pool("v", [be], min_idle=0, max_connections=8, reuse=True,
                                      listen=[{"path": str(lpath), "mode": "0666"}],
                                      handoff={"listen": str(hpath), "mode": "0666"})})
    conn, _ = handoff_checkout(hpath)
    spy = conn.dup()
    with spy:
        assert handoff_checkin(hpath, conn)[:4] == b"WPH1"
        conn.close()
        wait_until(lambda: stats(d, "v")["connections_reused"] == 1, what="the checkin reused")
        assert len(be.accepts()) == 1
        assert as_other_uid("relay", lpath, 1) == ["ping"]
        # Served on a connection of its own: the backend accepted a second one.
        assert len(be.accepts()) == 2, be.events()
        d.wait_log(r"pool=v backend=\S+ conn=\d+ client=\d+: closed: checked in by uid 0, not for the waiting "
                   rf"client \(uid {NOBODY}\)")
        st = stats(d, "v")
        assert st["bytes_to_backend"] == 4 and st["connections_reuse_refused"] == 1, st


NS_ATTACKER = r"""
import array, os, socket, sys, time
port, hpath, done = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lst = socket.socket()
lst.bind(("127.0.0.1", port))
lst.listen(1)
c = socket.create_connection(("127.0.0.1", port), timeout=10)
peer, _ = lst.accept()
h = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
h.settimeout(10)
h.connect(hpath)
h.sendmsg([b"WPQ1I\0\0\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [c.fileno()]))])
print(h.recv(100).hex(), c.getsockname()[1], flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(done) and time.monotonic() < deadline:  # keep our end open till judged
    time.sleep(0.02)
"""


@pytest.mark.skipif(not shutil.which("unshare"), reason="unshare(1) is not installed")
def test_checkin_of_a_socket_made_in_a_network_namespace_is_refused(start_backend, start_daemon, pool, sockdir,
                                                                    procs, tmp_path):
    """The attack itself: an unprivileged user makes a network namespace of
    its own (unshare -Urn), listens on 127.0.0.1:<backend port> there,
    connects to itself and checks that socket in. Its peer address is the
    backend's; it was never handed out. Refused."""
    os.chmod(sockdir, 0o755)
    be, d, hpath = start_reuse_handoff(start_backend, start_daemon, pool, sockdir, "x", mode="0666")
    done = sockdir / "done"
    out = tmp_path / "attacker.out"
    os.chmod(tmp_path, 0o777)
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "unshare", "-Urn", "sh", "-c",
            'ip link set lo up && exec "$0" -I -c "$1" "$2" "$3" "$4"', sys.executable, NS_ATTACKER, be.port,
            hpath, done]
    p = procs.spawn("ns-attacker", argv, tmp_path / "attacker.err", stdout_path=out)
    try:
        answer = wait_until(lambda: out.read_text().split() or (p.poll() is not None and
                                                                 pytest.fail((tmp_path / "attacker.err").read_text())),
                            what="the attacker's checkin answer")
        assert answer[0].startswith(b"WPH1".hex()), answer
        d.wait_log(refused_re("x", hpath, "not a socket handed out here, or already checked in", uid=NOBODY,
                              pid=r"\d+"))
        wait_until(lambda: stats(d, "x")["connections_reuse_refused"] == 1, what="refused")
        assert stats(d, "x")["connections_reused"] == 0
        conn, _ = handoff_checkout(hpath)
        with conn:
            conn.settimeout(10)
            conn.sendall(b"AUTH secret")
            assert recv_exact(conn, 11) == b"AUTH secret"  # the backend's echo, not the attacker's
        assert any(a.id for a in be.accepts())
    finally:
        done.touch()
        Procs.stop(p)


def epoll_watched_inodes(pid):
    """The inodes of every file in the epoll sets of process `pid`."""
    inos = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    m = re.match(r"tfd:\s*\d+\s.*\bino:([0-9a-f]+)", line)
                    if m:
                        inos.add(int(m.group(1), 16))
        except FileNotFoundError:
            continue
    return inos


def test_a_handed_out_socket_leaves_the_daemons_epoll_set(start_backend, start_daemon, pool, sockdir):
    """Closing the daemon's copy does not take a socket out of epoll while
    the client holds it (epoll keys on the open file); libev then sees its
    events as strays and rebuilds its whole set, every time. The
    registration must be gone when the socket leaves."""
    be = start_backend()
    hpath = sockdir / "e.handoff"
    n = 8
    d = start_daemon(pools={"e": pool("e", [be], min_idle=n, max_connections=2 * n + 4,
                                      handoff={"listen": str(hpath)})})
    be.wait_open(n)
    wait_until(lambda: stats(d, "e")["connections_opened"] >= n, what="the floor warm")
    watched_before = epoll_watched_inodes(d.proc.pid)
    held = [handoff_checkout(hpath)[0] for _ in range(n)]
    try:
        inos = {os.fstat(c.fileno()).st_ino for c in held}
        # (later checkouts may get connections the refill opened since)
        assert inos & watched_before, "the idle connections were watched through epoll"
        still = inos & epoll_watched_inodes(d.proc.pid)
        assert not still, f"{len(still)} of {n} handed-out sockets still in the daemon's epoll set"
        for c in held:  # their traffic never reaches the daemon
            c.settimeout(10)
            c.sendall(b"hey")
            assert recv_exact(c, 3) == b"hey"
        assert stats(d, "e")["handoffs"] == n
    finally:
        for c in held:
            c.close()


def test_silent_clients_of_one_uid_leave_room_for_another(start_backend, start_daemon, pool, sockdir):
    """80 connections from uid 0 that never speak: only a few are kept
    waiting (per-uid budget), the rest closed at once with one log line, and
    a checkout by another uid still gets its connection."""
    os.chmod(sockdir, 0o755)
    be = start_backend()
    hpath = sockdir / "s.handoff"
    d = start_daemon(pools={"s": pool("s", [be], min_idle=1, handoff={"listen": str(hpath), "mode": "0666"})})
    be.wait_open(1)
    silent, closed = [], set()
    try:
        for _ in range(80):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(10)
            s.connect(str(hpath))
            s.setblocking(False)  # a recv below must never wait
            silent.append(s)

        def n_closed():
            for i, s in enumerate(silent):
                if i not in closed:
                    try:
                        if s.recv(1, socket.MSG_DONTWAIT) == b"":
                            closed.add(i)
                    except BlockingIOError:
                        pass
            return len(closed) >= 16  # the last ones over any budget: all 80 were accepted by then
        wait_until(n_closed, what="the connections over the budget closed")
        assert len(closed) < 80, "none may have waited out HANDOFF_REQ_TIMEOUT yet"
        assert as_other_uid("handoff", hpath, 1) != [None]
        lines = d.wait_log(r"pool=s: .*s\.handoff: too many requests pending")
        assert len(lines) <= 2, lines  # rate-limited: not one line per connection
    finally:
        for s in silent:
            s.close()
