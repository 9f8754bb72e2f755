"""Helpers for the warmpool integration tests: processes (Procs, Backend,
Daemon), configs, client sockets, the admin socket and warmpoolctl, and the
byte-stream, /proc and statistics helpers of the heavier relay, health,
lifecycle and load tests. conftest.py holds the fixtures built on them; test
files import what they use from here (`from wp import ...`).

Stdlib only (Debian's python3-pytest 7.2). Every wait is bounded; every
process a test starts is stopped at teardown (SIGTERM, then SIGKILL), and a
sanitizer report in any of their stderr files fails the test.

WARMPOOL_BUILD names the build directory (default: the repo's build/).
"""

import json
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import namedtuple
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("WARMPOOL_BUILD") or (REPO / "build")).resolve()
WARMPOOLD = BUILD / "warmpoold"
WPBACKEND = BUILD / "wpbackend"
WARMPOOLCTL = BUILD / "warmpoolctl"

# Generous bounds: the suite also runs against the ASan+UBSan build.
# a process becomes ready; under valgrind its start alone (reading every
# library's debug info) takes seconds of CPU, more than 10 s on a busy machine
START_TIMEOUT = 30.0 if os.environ.get("WARMPOOL_VALGRIND") else 10.0
STOP_TIMEOUT = 10.0  # a process exits after SIGTERM
WAIT_TIMEOUT = 10.0  # a state we wait for (floor reached, log line, ...)
IO_TIMEOUT = 10.0  # one client exchange of a few bytes
TEARDOWN_STOP_TIMEOUT = 20.0  # > the default shutdown_timeout in make_config()

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "VALGRIND-ERROR-BEGIN",
)

# WARMPOOL_VALGRIND=1 (make valgrind) runs every daemon a test starts under
# valgrind: memory errors and definite/indirect leaks at exit are reported
# between markers on its stderr (failing the test at teardown) and make it
# exit 99 instead of 0 (failing the tests that check the exit code).
VALGRIND = (
    [
        "valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
        "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
        "--error-markers=VALGRIND-ERROR-BEGIN,VALGRIND-ERROR-END",
        f"--suppressions={REPO / 'tests' / 'valgrind.supp'}",  # glibc internals only, each explained
    ]
    if os.environ.get("WARMPOOL_VALGRIND")
    else []
)

# Environment variables of a service manager that must not leak from the
# test runner into the daemon (the fixture sets NOTIFY_SOCKET itself).
_SCRUB_ENV = (
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


# ---------------------------------------------------------------------------
# small helpers


def wait_until(pred, timeout=WAIT_TIMEOUT, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; return it. Bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def splitmix_bytes(seed, n):
    """The byte stream of `wpbackend --mode source --seed SEED`."""
    mask = (1 << 64) - 1
    state = seed & mask
    words = []
    for _ in range((n + 7) // 8):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        words.append(z ^ (z >> 31))
    return struct.pack(f"<{len(words)}Q", *words)[:n]


def _proc_net_addr(host):
    """host (an IPv4 or IPv6 literal) as /proc/net/tcp{,6} print it: each
    32-bit word of the address in host byte order, %08X."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.inet_pton(family, host)
    return "".join(f"{w:08X}" for w in struct.unpack(f"={len(raw) // 4}I", raw))


def established_on_port(port, host=None):
    """ESTABLISHED TCP sockets whose local port is `port` (the server side),
    and whose local address is `host` when given (another process may listen
    on the same port at another address, e.g. 127.0.0.2 or ::1),
    from /proc/net/tcp and /proc/net/tcp6. Each table is taken in one read:
    read in small pieces while other processes open and close thousands of
    sockets, the kernel's walk can skip an entry between two pieces."""
    want = _proc_net_addr(host) if host is not None else None
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb", buffering=0) as f:
                text = bytearray()
                while True:  # bounded: each read returns at least one line, and the table ends
                    chunk = f.read(64 << 20)
                    if not chunk:
                        break
                    text += chunk
        except FileNotFoundError:
            continue
        for line in text.decode().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4:
                continue
            local, state = fields[1], fields[3]
            addr, _, lport = local.rpartition(":")
            if state == "01" and int(lport, 16) == port and (want is None or addr == want):
                count += 1
    return count


# ---------------------------------------------------------------------------
# clients


def connect_unix(path, timeout=IO_TIMEOUT):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except BaseException:
        s.close()
        raise
    return s


def recv_exact(sock, n, timeout=IO_TIMEOUT):
    """Exactly n bytes, or AssertionError on EOF/timeout (with what came)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out: received {len(buf)} of {n} bytes: {bytes(buf[:80])!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} bytes: {bytes(buf[:80])!r}")
        buf += chunk
    return bytes(buf)


def recv_until_closed(sock, timeout=IO_TIMEOUT, limit=64 << 20):
    """Read until EOF or reset. Returns (data, how) with how in
    {"eof", "reset"}; AssertionError if neither happens within timeout."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not closed within {timeout:.1f}s; received {len(buf)} bytes: {bytes(buf[:80])!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk
        if len(buf) > limit:
            raise AssertionError(f"more than {limit} bytes before close")


def exchange(sock, data, expect_len=None, shut_wr=False, until_eof=False, timeout=60.0):
    """Send `data` while reading concurrently (select loop, so neither side
    can deadlock on full buffers). Reads until `expect_len` bytes arrived
    (default len(data)), or until EOF when until_eof. After the last byte is
    sent, shutdown(SHUT_WR) if shut_wr. Returns the bytes received."""
    if expect_len is None and not until_eof:
        expect_len = len(data)
    view = memoryview(data)
    sent = 0
    got = bytearray()
    shut_done = False
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if shut_wr and sent == len(view) and not shut_done:
                sock.shutdown(socket.SHUT_WR)
                shut_done = True
            if not until_eof and len(got) >= expect_len and sent == len(view):
                return bytes(got)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"exchange timed out after {timeout:.0f}s: sent {sent}/{len(view)}, "
                    f"received {len(got)}/{expect_len if expect_len is not None else 'EOF'}"
                )
            wlist = [sock] if sent < len(view) else []
            r, w, _ = select.select([sock], wlist, [], min(left, 0.5))
            if r:
                try:
                    chunk = sock.recv(1 << 18)
                except BlockingIOError:
                    chunk = None
                if chunk is not None:
                    if not chunk:
                        if until_eof:
                            return bytes(got)
                        raise AssertionError(
                            f"EOF after {len(got)}/{expect_len} bytes (sent {sent}/{len(view)})"
                        )
                    got += chunk
            if w:
                try:
                    sent += sock.send(view[sent : sent + (1 << 16)])
                except BlockingIOError:
                    pass
    finally:
        sock.setblocking(True)


def echo_once(path, payload, timeout=IO_TIMEOUT):
    """One whole session: connect, send, read the exact echo, close."""
    with connect_unix(path, timeout) as s:
        s.sendall(payload)
        return recv_exact(s, len(payload), timeout)


# ---------------------------------------------------------------------------
# process bookkeeping


class Procs:
    """Every process a test starts, stopped at teardown whatever happened."""

    def __init__(self):
        self.items = []  # (Popen, name, stderr path)

    def spawn(self, name, argv, stderr_path, stdout_path=None, env=None):
        stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        stderr = open(stderr_path, "wb")
        try:
            p = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                close_fds=True,
            )
        finally:
            if stdout is not subprocess.DEVNULL:
                stdout.close()
            stderr.close()
        self.items.append((p, name, Path(stderr_path)))
        return p

    @staticmethod
    def stop(p, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Signal, wait bounded, then SIGKILL. Returns the exit status
        (negative for a signal), or None if even SIGKILL did not reap it in
        time (a machine under extreme load)."""
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                return p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    return p.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    return None
        return p.returncode

    def teardown(self):
        """Stop what is still running; return the sanitizer reports found.
        Never raises: a slow exit here is not what any test asserts on (the
        lifecycle tests check exits explicitly)."""
        problems = []
        for p, name, _ in reversed(self.items):
            if p.poll() is None:
                # Longer than the configs' shutdown_timeout (10 s), so a
                # draining daemon can finish by itself.
                self.stop(p, timeout=TEARDOWN_STOP_TIMEOUT)
        for p, name, err in self.items:
            try:
                text = err.read_text(errors="replace")
            except FileNotFoundError:
                continue
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    idx = text.index(marker)
                    problems.append(f"{name} ({err}): {marker}\n{text[max(0, idx - 200): idx + 3000]}")
                    break
        return problems


# ---------------------------------------------------------------------------
# the test backend

Accept = namedtuple("Accept", "id usec peer")
Close = namedtuple("Close", "id usec bytes_in bytes_out reason crc32")


class Backend:
    """One wpbackend process (restartable on the same port)."""

    def __init__(self, procs, workdir, name, host="127.0.0.1", **opts):
        self.procs = procs
        self.workdir = Path(workdir)
        self.name = name
        self.host = host
        self.opts = opts
        self.port = 0
        self.proc = None
        self.generation = 0
        self.events_path = None

    @property
    def addr(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _argv(self, port):
        argv = [WPBACKEND, "--listen", f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"]
        argv += ["--port-file", self.port_file, "--events", self.events_path]
        for key, val in self.opts.items():
            if val is None:
                continue
            argv += ["--" + key.replace("_", "-"), str(val)]
        return argv

    def start(self, port=None):
        """Start (again), on `port` or the previous port or an ephemeral one;
        returns once it listens."""
        assert self.proc is None or self.proc.poll() is not None, "backend already running"
        self.generation += 1
        tag = f"{self.name}.{self.generation}"
        self.port_file = self.workdir / f"{tag}.port"
        self.events_path = self.workdir / f"{tag}.events"
        self.stderr_path = self.workdir / f"{tag}.stderr"
        self.events_path.touch()
        if port is None:
            port = self.port
        self.proc = self.procs.spawn(
            f"wpbackend {tag}",
            self._argv(port),
            self.stderr_path,
            stdout_path=self.workdir / f"{tag}.stdout",
        )

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"wpbackend exited with {self.proc.returncode}: {self.stderr_path.read_text(errors='replace')}"
                )
            return self.port_file.exists()

        wait_until(ready, START_TIMEOUT, what=f"wpbackend {tag} to listen")
        self.port = int(self.port_file.read_text().strip())
        return self

    def stop(self, sig=signal.SIGTERM):
        rc = Procs.stop(self.proc, sig)
        assert rc == 0, f"wpbackend exited with {rc}: {self.stderr_path.read_text(errors='replace')}"
        return rc

    def restart(self):
        """Start again on the same port (after stop())."""
        return self.start(self.port)

    # -- events of the current generation --
    def events(self):
        out = []
        text = self.events_path.read_text()
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a line being written
            f = line.split()
            if not f:
                continue
            if f[0] == "accept":
                out.append(Accept(int(f[1]), int(f[2]), f[3]))
            elif f[0] == "close":
                crc = int(f[6].split("=", 1)[1], 16) if len(f) > 6 else None
                out.append(Close(int(f[1]), int(f[2]), int(f[3]), int(f[4]), f[5], crc))
        return out

    def accepts(self):
        return [e for e in self.events() if isinstance(e, Accept)]

    def closes(self):
        return [e for e in self.events() if isinstance(e, Close)]

    def open_count(self):
        """Connections accepted and not yet closed by this backend."""
        ev = self.events()
        return sum(isinstance(e, Accept) for e in ev) - sum(isinstance(e, Close) for e in ev)

    def established(self):
        return established_on_port(self.port, self.host)

    def wait_open(self, n, timeout=WAIT_TIMEOUT):
        wait_until(lambda: self.open_count() == n, timeout, what=f"{n} open connections at {self.addr}"
                   f" (have {self.open_count()})")

    def wait_close_where(self, pred, timeout=WAIT_TIMEOUT, what="a close event"):
        return wait_until(lambda: next((c for c in self.closes() if pred(c)), None), timeout, what=what)


# ---------------------------------------------------------------------------
# the daemon


def _yaml_scalar(v):
    if isinstance(v, dict):  # a flow mapping, e.g. a backend {address, weight, backup}
        return "{" + ", ".join(f"{k}: {_yaml_scalar(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a YAML double-quoted scalar


def _yaml_lines(obj, indent):
    pad = " " * indent
    lines = []
    for key, val in obj.items():
        if isinstance(val, dict):
            lines.append(f"{pad}{key}:")
            lines += _yaml_lines(val, indent + 2)
        elif isinstance(val, (list, tuple)):
            lines.append(f"{pad}{key}: [{', '.join(_yaml_scalar(x) for x in val)}]")
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(val)}")
    return lines


def make_config(pools, daemon=None):
    doc = {}
    doc["daemon"] = {"log_level": "info", "shutdown_timeout": "10s", **(daemon or {})}
    doc["pools"] = pools
    return "\n".join(_yaml_lines(doc, 0)) + "\n"


class Daemon:
    """One warmpoold process with its config, stderr log and notify socket."""

    admin_path = None  # its admin socket, when start_daemon made the config

    def __init__(self, procs, workdir, sockdir, config_text, name="warmpoold"):
        self.procs = procs
        self.workdir = Path(workdir)
        self.sockdir = Path(sockdir)
        self.name = name
        self.config_path = self.workdir / f"{name}.yaml"
        self.config_path.write_text(config_text)
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.notify_path = self.sockdir / f"{name}.notify"
        self.notify = []  # every datagram received, decoded, in order
        self.proc = None
        self._nsock = None

    def start(self, expect_ready=True, timeout=START_TIMEOUT, args=(), journal=None):
        """journal: None (no $JOURNAL_STREAM), True (it names the daemon's
        stderr file, as systemd would), or a literal "DEV:INO" string."""
        self._nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._nsock.bind(str(self.notify_path))
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        if journal is True:
            self.stderr_path.write_bytes(b"")  # spawn truncates this same inode
            st = os.stat(self.stderr_path)
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal:
            env["JOURNAL_STREAM"] = journal
        self.proc = self.procs.spawn(
            self.name,
            [*VALGRIND, WARMPOOLD, "-c", self.config_path, *args],
            self.stderr_path,
            stdout_path=self.stdout_path,
            env=env,
        )
        if expect_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not any("READY=1" in m.split("\n") for m in self.notify):
            if self.proc.poll() is not None:
                self.collect_notify()
                if any("READY=1" in m.split("\n") for m in self.notify):
                    break
                raise AssertionError(
                    f"warmpoold exited with {self.proc.returncode} before READY=1:\n{self.log()}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no READY=1 within {timeout:.0f}s; notify={self.notify}\n{self.log()}")
            self.collect_notify(min(left, 0.1))

    def collect_notify(self, wait=0.0):
        """Read every pending datagram (waiting up to `wait` s for the first)."""
        if self._nsock is None:
            return self.notify
        r, _, _ = select.select([self._nsock], [], [], wait)
        while r:
            try:
                data = self._nsock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            self.notify.append(data.decode(errors="replace"))
            r, _, _ = select.select([self._nsock], [], [], 0)
        return self.notify

    def notify_has(self, line):
        return any(line in m.split("\n") for m in self.collect_notify())

    def socket_path(self, pool):
        return self.sockdir / f"{pool}.sock"

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=WAIT_TIMEOUT, count=1):
        """Wait until `pattern` (a regex) matches at least `count` log lines;
        return the matching lines."""
        rx = re.compile(pattern)

        def found():
            lines = [ln for ln in self.log().splitlines() if rx.search(ln)]
            return lines if len(lines) >= count else None

        try:
            return wait_until(found, timeout, interval=0.05, what=f"log line /{pattern}/ x{count}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- warmpoold stderr ---\n{self.log()}") from None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"warmpoold still running {timeout:.0f}s later\n{self.log()}") from None
        self.collect_notify()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def close(self):
        if self._nsock is not None:
            self._nsock.close()
            self._nsock = None


def pool_config(sockdir, name, backends, **overrides):
    """A pool with test-friendly defaults (short timeouts, fast backoff)."""
    cfg = {
        "listen": str(Path(sockdir) / f"{name}.sock"),
        "backends": [b.addr if isinstance(b, Backend) else b for b in backends],
        "min_idle": 2,
        "max_connections": 16,
        "connect_timeout": "1s",
        "queue_timeout": "2s",
        "backoff": {"initial": "100ms", "max": "1s", "multiplier": 2.0, "jitter": 0.1},
    }
    cfg.update(overrides)
    return cfg


def run_threads(fn, args_list, timeout=120.0):
    """Run fn(*args) in one thread each; return results in order. Any
    exception is returned in place of a result. Bounded."""
    results = [None] * len(args_list)

    def runner(i, args):
        try:
            results[i] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            results[i] = e

    threads = [threading.Thread(target=runner, args=(i, a), daemon=True) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(t.is_alive() for t in threads)
    assert hung == 0, f"{hung} client threads still running after {timeout:.0f}s"
    return results


# ---------------------------------------------------------------------------
# the admin socket (daemon/admin.c) and warmpoolctl


def _admin_path(target):
    path = getattr(target, "admin_path", target)
    assert path is not None, "this daemon has no admin socket"
    return path


class AdminConn:
    """One connection to an admin socket. The protocol: one command per
    line; each answer is zero or more lines and then one empty line."""

    def __init__(self, target, timeout=IO_TIMEOUT):
        self.sock = connect_unix(_admin_path(target), timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_answer(self, timeout=IO_TIMEOUT):
        """The next answer's lines (str, without newlines). AssertionError
        on EOF or timeout before the empty line that ends it."""
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line == b"":
                    return lines
                lines.append(line.decode(errors="replace"))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"admin: no complete answer within {timeout:.0f}s; have {lines!r} {self.buf[:200]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError(f"admin: EOF inside an answer; have {lines!r} {self.buf[:200]!r}")
            self.buf += chunk

    def command(self, cmd, timeout=IO_TIMEOUT):
        self.send(cmd + "\n")
        return self.read_answer(timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def admin(target, cmd, timeout=IO_TIMEOUT):
    """Send one command on a new connection to a Daemon's admin socket (or
    a socket path); return the answer as warmpoolctl prints it: its lines,
    each ending in a newline (an error answer is "error: ...\n")."""
    with AdminConn(target, timeout) as c:
        lines = c.command(cmd, timeout)
    return "".join(ln + "\n" for ln in lines)


def admin_json(target, cmd, timeout=IO_TIMEOUT):
    """The parsed JSON answer of `cmd --json`."""
    text = admin(target, cmd + " --json", timeout)
    assert not text.startswith("error: "), text
    return json.loads(text)


def pool_row(target, name):
    """The pool's row of `show pools --json` (idle, active, waiting, ...)."""
    rows = [p for p in admin_json(target, "show pools")["pools"] if p["name"] == name]
    assert len(rows) == 1, rows
    return rows[0]


def at(text, needle, occurrence=1):
    """1-based (line, col) where the `occurrence`-th `needle` starts (col in characters)."""
    idx = -1
    for _ in range(occurrence):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


def warmpoolctl(target, *args, timeout=30.0):
    """Run build/warmpoolctl -s SOCKET ARGS...; returns the CompletedProcess
    (text stdout/stderr). `target` is a Daemon, a socket path, or None for
    no -s option."""
    argv = [str(WARMPOOLCTL)]
    if target is not None:
        argv += ["-s", str(_admin_path(target))]
    argv += [str(a) for a in args]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------
# sizes, /proc readers, statistics and byte streams of the heavier tests
# (backends that die or stop reading, flapping, fd exhaustion, churn)

KIB = 1 << 10
MIB = 1 << 20

UNDER_VALGRIND = bool(VALGRIND)
# The ASan build's allocator keeps freed memory in a quarantine (256 MiB by
# default) and valgrind's shadow memory grows with use: RSS ceilings are for
# the plain build, looser under either tool.
try:
    UNDER_ASAN = b"__asan_init" in WARMPOOLD.read_bytes()
except OSError:  # not built yet: the tests fail on their own, collection must not
    UNDER_ASAN = False

# Sizes of the heavy tests: the plain and ASan builds, or valgrind.
HEAVY = {
    "push_bytes": 128 * MIB if UNDER_VALGRIND else 1024 * MIB,  # backend/client stops reading
    "churn_clients": 500 if UNDER_VALGRIND else 5000,
    "churn_seconds": 10.0 if UNDER_VALGRIND else 30.0,
}
# Growth of the daemon's RSS allowed while a session is stuck with a full pipe.
RSS_CEILING = (256 if (UNDER_VALGRIND or UNDER_ASAN) else 64) * MIB
# The slower builds need longer for a process to answer.
SLOW = 5.0 if UNDER_VALGRIND else (2.0 if UNDER_ASAN else 1.0)


# ---------------------------------------------------------------------------
# /proc readers


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(d, pool_name):
    return admin_json(d, "show stats")["pools"][pool_name]


def backend_row(d, pool_name, be):
    rows = [b for b in admin_json(d, f"show backends {pool_name}")["backends"] if b["backend"] == be.addr]
    assert len(rows) == 1, rows
    return rows[0]


def backend_metric(d, name, pool_name, be):
    """A warmpool_backend_* series of `show metrics` for one backend."""
    rx = re.compile(rf'^warmpool_backend_{name}\{{pool="{re.escape(pool_name)}",backend="{re.escape(be.addr)}"\}} (\S+)$')
    for line in admin(d, "show metrics").splitlines():
        m = rx.match(line)
        if m:
            return float(m.group(1))
    raise AssertionError(f"no warmpool_backend_{name} for {pool_name}/{be.addr}")


def all_events(be):
    """Every generation's events of a Backend (restart() starts a new file)."""
    out = []
    for gen in range(1, be.generation + 1):
        path = be.workdir / f"{be.name}.{gen}.events"
        for line in path.read_text().splitlines():
            f = line.split()
            if f:
                out.append(f)
    return out


def alive(d):
    """The daemon runs and its admin socket answers."""
    assert d.proc.poll() is None, f"warmpoold exited with {d.proc.returncode}\n{d.log()[-3000:]}"
    assert admin(d, "version").startswith("warmpoold "), "admin socket does not answer"


# ---------------------------------------------------------------------------
# byte streams


def splitmix_word(seed, i):
    """Word i (0-based) of `wpbackend --mode source --seed SEED`, computed
    directly: the generator's state after i+1 steps is seed + (i+1)*gamma."""
    mask = (1 << 64) - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)).to_bytes(8, "little")


class SourceChecker:
    """Checks a source backend's stream as it arrives, without holding it:
    every word of the first MiB, then one word in every 4 KiB (a lost,
    repeated or reordered chunk shifts everything after it, so sampling
    finds it)."""

    SAMPLE = 512  # words

    def __init__(self, seed):
        self.seed = seed
        self.offset = 0
        self.tail = b""  # bytes of a word split across chunks

    def feed(self, chunk):
        data = self.tail + bytes(chunk)
        first = (self.offset - len(self.tail)) // 8  # stream word index of data[0]
        nwords = len(data) // 8
        dense_end = min(nwords, max(0, MIB // 8 - first))
        sparse_start = -(-(first + dense_end) // self.SAMPLE) * self.SAMPLE - first
        for w in [*range(dense_end), *range(max(dense_end, sparse_start), nwords, self.SAMPLE)]:
            want = splitmix_word(self.seed, first + w)
            got = data[w * 8 : w * 8 + 8]
            assert got == want, f"source stream differs at byte {(first + w) * 8}: {got.hex()} != {want.hex()}"
        self.tail = data[nwords * 8 :]
        self.offset += len(chunk)


def seeded_chunks(seed, total, chunk=MIB):
    """A reproducible byte stream in chunks (random.randbytes is fast)."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def echo_rounds(sock, seed, stop, progress, idx, chunk=64 * KIB, deadline_s=60.0):
    """Send a chunk, read its echo back exactly; again until `stop` is set.
    progress[idx] is the bytes verified so far. Returns (bytes, crc32)."""
    rng = random.Random(seed)
    total, crc = 0, 0
    end = time.monotonic() + deadline_s
    while not stop.is_set():
        assert time.monotonic() < end, "echo_rounds: not stopped in time"
        data = rng.randbytes(chunk)
        sock.sendall(data)
        got = recv_exact(sock, len(data))
        assert got == data, f"session {idx}: echo differs after {total} bytes"
        crc = zlib.crc32(data, crc)
        total += len(data)
        progress[idx] = total
    return total, crc


def try_session(path, mode, seed=None):
    """One short session (echo, or the first 4 KiB of a source stream); False
    if it fails."""
    try:
        if mode == "echo":
            return echo_once(path, b"after the fault", timeout=3) == b"after the fault"
        with connect_unix(path, timeout=3) as s:
            s.sendall(b"G")
            return recv_exact(s, 4096, timeout=3) == b"".join(splitmix_word(seed, i) for i in range(512))
    except (AssertionError, OSError):
        return False


def other_pool_serves(d, name, n=20):
    """n echo sessions of 64 KiB on another pool, byte-exact."""
    for i in range(n):
        data = random.Random(i).randbytes(64 * KIB)
        with connect_unix(d.socket_path(name)) as s:
            s.sendall(data)
            assert recv_exact(s, len(data)) == data, f"other pool: session {i} differs"
