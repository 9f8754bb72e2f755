"""A socket that came back through checkin shares its open file description
with any copy the client kept (a hostile client holds it): O_NONBLOCK and
SO_LINGER set on that copy are the daemon's too. Neither may stop the
event loop: every recv/send says MSG_DONTWAIT, a foreign connection is never
spliced (splice waits by the file's O_NONBLOCK), and SO_LINGER is switched
off before the daemon closes one."""

import fcntl
import os
import signal
import socket
import struct
import time

from wp import admin, connect_unix, echo_once, recv_exact, wait_until
from test_handoff import handoff_checkin, handoff_checkout, stats

SESSION_BUF = 16384  # daemon/engine.h: a read this long makes a direction bulk (spliced before the fix)
RESPONSIVE = 3.0  # seconds the admin socket has to answer while a peer tries to freeze the loop
WATCH = 1.0  # seconds the daemon is watched serving after the attack
LINGER_S = 30  # the kept copy's SO_LINGER: the old daemon's close() waited this long


def checked_in_copy(d, hpath, pool):
    """Check out a connection, keep a dup of it, check it in, and wait for
    the daemon to put it back on the idle list. Returns the kept fd."""
    conn, _ = handoff_checkout(hpath)
    kept = os.dup(conn.fileno())
    assert handoff_checkin(hpath, conn)[:4] == b"WPH1"
    conn.close()
    wait_until(lambda: stats(d, pool)["connections_reused"] == 1, what="the checked-in socket back in the pool")
    return kept


def assert_serving(d, other_pool, seconds):
    """The admin socket answers, and another pool relays, for `seconds`."""
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline or rounds < 3:
        assert "pool" in admin(d, "show stats", timeout=RESPONSIVE)
        assert echo_once(d.socket_path(other_pool), b"ping%d" % rounds, timeout=RESPONSIVE) == b"ping%d" % rounds
        rounds += 1


def test_kept_copy_without_o_nonblock_cannot_freeze_the_daemon(start_backend, start_daemon, pool, sockdir):
    be, be2 = start_backend(), start_backend()
    hpath = sockdir / "fz.handoff"
    # min_idle 0: the one connection the pool ever has is the one checked in,
    # so the relayed client below is sure to get it.
    d = start_daemon(pools={"fz": pool("fz", [be], min_idle=0, max_connections=4, reuse=True,
                                       handoff={"listen": str(hpath)}),
                            "o": pool("o", [be2], min_idle=1)})
    kept = checked_in_copy(d, hpath, "fz")
    try:
        # The attack: blocking I/O for every holder of the description.
        fl = fcntl.fcntl(kept, fcntl.F_GETFL)
        fcntl.fcntl(kept, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        with connect_unix(d.socket_path("fz")) as c:
            # A full SESSION_BUF echo makes the daemon read the backend again
            # at once, on an empty socket: that read blocked (splice) before.
            for i in range(5):
                payload = bytes([65 + i]) * SESSION_BUF
                c.sendall(payload)
                assert recv_exact(c, SESSION_BUF, timeout=RESPONSIVE) == payload
                assert "pool fz" in admin(d, "show stats", timeout=RESPONSIVE)
            st = stats(d, "fz")
            assert st["connections_opened"] == 1 and st["clients_served"] == 2, st  # it was the kept one
            assert_serving(d, "o", WATCH)
    finally:
        os.close(kept)
    assert d.stop(signal.SIGINT) == 0


def test_kept_copy_with_so_linger_cannot_freeze_the_daemon(start_backend, start_daemon, pool, sockdir):
    be, be2 = start_backend(), start_backend()
    hpath = sockdir / "lg.handoff"
    d = start_daemon(pools={"lg": pool("lg", [be], min_idle=0, max_connections=4, reuse=True,
                                       server_idle_timeout="500ms", handoff={"listen": str(hpath)}),
                            "o": pool("o", [be2], min_idle=1)})
    kept = checked_in_copy(d, hpath, "lg")
    # The attack: a long linger on the shared socket, then let the daemon
    # hold its last reference.
    ks = socket.socket(fileno=kept)
    ks.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, LINGER_S))
    ks.close()
    # A backend that stops reading leaves the daemon's bytes unsent in the
    # socket: its close() then lingers (up to LINGER_S) unless told not to.
    be.proc.send_signal(signal.SIGSTOP)
    try:
        with connect_unix(d.socket_path("lg")) as c:
            c.settimeout(0.5)
            sent = 0
            try:
                for _ in range(256):  # up to 64 MiB: the windows fill long before
                    c.sendall(b"x" * (256 << 10))
                    sent += 256 << 10
            except (socket.timeout, BrokenPipeError, ConnectionResetError):
                pass  # full, or the session already ended (server_idle_timeout)
            assert sent < 64 << 20, "the daemon never stopped reading: the backend did not fill up"
            # server_idle_timeout ends the session: the daemon closes the
            # connection with its bytes still queued.
            d.wait_log(r"pool=lg client=\d+: nothing moved on the backend side for server_idle_timeout")
            assert_serving(d, "o", WATCH)
    finally:
        be.proc.send_signal(signal.SIGCONT)
    assert d.stop(signal.SIGINT) == 0
