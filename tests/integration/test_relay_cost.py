"""What a relayed session costs the daemon in system calls (issue 17).

Timings on a shared machine are noise; counts are not. strace counts the
daemon's recvfrom and epoll_ctl calls over sessions of a known shape, and
each count per session is held to what the design needs, so an extra peek
or a watcher that makes libev register a socket anew shows up here first.

A reused connection (reuse: with the reset exchange), one client per
session that sends a request, reads its answer and closes (redis-benchmark
-k 0, a PHP or CGI program): per session the daemon reads the request, the
answer, the client's EOF and the reset's answer, and peeks once at checkout
(bconn_alive: the one look for a late reply that came in the same loop
iteration); it registers the new client socket, re-arms the connection's
idle watcher (libev's EEXIST round trip, bconn_become_idle) and masks the
client's EPOLLHUP (libev's epoll backend does that itself). No peek before
the reset is sent (a byte already waiting then fails the answer's match)
and none after the answer (its read asks for more than the answer's length,
so bytes after it come with it); the watcher keeps its fd (ev_io_modify).
A reset with a {nonce} draws its random bytes from OpenSSL in batches, so
it costs no getpid() (OpenSSL's fork check) per session.
"""

import os
import re
import shutil
import signal

import pytest

from test_handoff import stats
from wp import connect_unix, recv_exact, wait_until

SESSIONS = 40
WARMUP = 3  # sessions before counting: the floor's refill and first allocations
# Per reused session (see the module comment); a fraction over for a stray
# wake-up on a loaded machine, well under one more call per session.
MAX_RECVFROM = 5.25
MAX_EPOLL_CTL = 3.25

REDIS_LIKE_RESET = {"reset_send": r"RESET\r\n", "reset_expect": r"RESET\r\n"}  # wpbackend echoes it
NONCE_RESET = {"reset_send": r"RESET {nonce}\r\n", "reset_expect": r"RESET {nonce}\r\n"}
# Reset nonces come from OpenSSL NONCE_BATCH (32) at a time; each RAND_bytes
# call costs a getpid() (OpenSSL's fork check), one per session before.
MAX_GETPID = 0.25


def tracer_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return 0


def count_syscalls(procs, tmp_path, pid, action, calls="recvfrom,epoll_ctl"):
    """Run action() while strace counts pid's `calls` (comma-separated)."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (make deps installs it)")
    out = tmp_path / "strace.txt"
    st = procs.spawn("strace", ["strace", "-f", "-c", "-e", f"trace={calls}", "-o", out, "-p", pid],
                     tmp_path / "strace.err")
    try:
        wait_until(lambda: tracer_pid(pid) == st.pid or st.poll() is not None, what="strace attached")
        assert st.poll() is None, (tmp_path / "strace.err").read_text()
        action()
    finally:
        procs.stop(st, signal.SIGINT)
    counts = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            counts[m.group(2)] = int(m.group(1))
    return counts


def one_session(path, i):
    with connect_unix(path) as c:
        c.sendall(b"req%03d" % i)
        assert recv_exact(c, 6) == b"req%03d" % i


@pytest.mark.skipif(bool(os.environ.get("WARMPOOL_VALGRIND")), reason="counts the daemon's own calls, not valgrind's")
def test_reused_session_syscalls(procs, tmp_path, start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4, reuse=REDIS_LIKE_RESET)})
    be.wait_open(1)
    path = d.socket_path("r")
    for i in range(WARMUP):
        one_session(path, i)
        wait_until(lambda: stats(d, "r")["connections_reused"] == i + 1, what=f"reuse #{i + 1}")

    def sessions():
        # No admin command while counting (it costs calls of its own): the
        # last reset may end after strace stops, at most one call short.
        for i in range(SESSIONS):
            one_session(path, WARMUP + i)

    counts = count_syscalls(procs, tmp_path, d.proc.pid, sessions)
    wait_until(lambda: stats(d, "r")["connections_reused"] == WARMUP + SESSIONS, what="every session reused")
    assert stats(d, "r")["connections_reuse_refused"] == 0
    per = {k: v / SESSIONS for k, v in counts.items()}
    assert per.get("recvfrom", 0) <= MAX_RECVFROM, per
    assert per.get("epoll_ctl", 0) <= MAX_EPOLL_CTL, per
    assert per.get("recvfrom", 0) >= 4, per  # request, answer, EOF, reset: strace saw the sessions


@pytest.mark.skipif(bool(os.environ.get("WARMPOOL_VALGRIND")), reason="counts the daemon's own calls, not valgrind's")
def test_reset_nonces_cost_no_system_call_per_session(procs, tmp_path, start_backend, start_daemon, pool):
    """With a {nonce} in the reset, every session's reset carries a fresh
    nonce (each answer matched: no refusal), yet the daemon does not pay a
    system call per nonce: they are drawn from OpenSSL in batches."""
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1, max_connections=4, reuse=NONCE_RESET)})
    be.wait_open(1)
    path = d.socket_path("r")
    one_session(path, 0)
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1, what="the first reuse")

    def sessions():
        for i in range(SESSIONS):
            one_session(path, 1 + i)

    counts = count_syscalls(procs, tmp_path, d.proc.pid, sessions, calls="getpid,recvfrom")
    wait_until(lambda: stats(d, "r")["connections_reused"] == 1 + SESSIONS, what="every session reused")
    assert stats(d, "r")["connections_reuse_refused"] == 0
    per = {k: v / SESSIONS for k, v in counts.items()}
    assert per.get("recvfrom", 0) >= 4, per  # strace saw the sessions
    assert per.get("getpid", 0) <= MAX_GETPID, per
