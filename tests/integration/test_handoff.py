"""Handoff: a pool's handoff socket gives libwarmpool clients the warm
backend socket itself (SCM_RIGHTS) with the greeting already read; the
library falls back to the proxy socket; `warmpoolctl connect` bridges stdio
to either. A sample client is built with pkg-config like a user's would be."""

import array
import os
import shutil
import socket
import subprocess

import pytest

from conftest import BUILD, REPO, WARMPOOLCTL, admin, recv_exact, wait_until


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
    be = start_backend()
    hpath = sockdir / "r.handoff"
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=8, reuse=True,
                                      handoff={"listen": str(hpath)})})
    be.wait_open(1)
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
    be = start_backend()
    hpath = sockdir / "l.handoff"
    d = start_daemon(pools={"l": pool("l", [be], min_idle=1, max_connections=8, reuse=True,
                                      handoff={"listen": str(hpath)})})
    be.wait_open(1)
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
