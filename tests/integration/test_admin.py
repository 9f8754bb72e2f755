"""The admin socket (daemon/admin.c) and warmpoolctl against a live daemon:
every `show` command in table and JSON form checked against what the
backends see, the line protocol (several commands per connection, split and
pipelined commands, garbage and over-long lines), the read-only socket, the
socket files' modes, warmpoolctl's exit codes, and drain/disable/enable
with their effect on idle connections, new clients and running sessions."""

import functools
import json
import os
import re
import select
import socket
import stat
import subprocess
import time

from wp import (
    IO_TIMEOUT,
    WARMPOOLCTL,
    WARMPOOLD,
    AdminConn,
    admin,
    admin_json,
    connect_unix,
    echo_once,
    pool_row,
    recv_exact,
    recv_until_closed,
    wait_until,
    warmpoolctl,
)


def backend_rows(d, pool):
    return {b["backend"]: b for b in admin_json(d, f"show backends {pool}")["backends"]}


def wait_idle(d, pool, n):
    wait_until(lambda: pool_row(d, pool)["idle"] == n and pool_row(d, pool)["connecting"] == 0,
               what=f"pool {pool} to hold {n} idle connections (show pools)")


def wait_settled(d, pool, bes, idle):
    """The pool holds `idle` connections, none connecting, and every
    connection it opened has been logged by its backends (a connect completes
    at the daemon before the backend process logs its accept)."""

    def settled():
        row = pool_row(d, pool)
        opened = admin_json(d, "show stats")["pools"][pool]["connections_opened"]
        return row["idle"] == idle and row["connecting"] == 0 and opened == sum(len(b.accepts()) for b in bes)

    wait_until(settled, what=f"pool {pool} settled at {idle} idle, its backends' accept logs caught up")


def table(text):
    """A whitespace table: (header, [row fields])."""
    lines = text.splitlines()
    return lines[0].split(), [ln.split() for ln in lines[1:]]


def served(be, payload_len):
    return sum(1 for c in be.closes() if c.bytes_in == payload_len)


@functools.lru_cache(maxsize=None)
def daemon_version():
    out = subprocess.run([str(WARMPOOLD), "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


# ---------------------------------------------------------------------------
# show commands


def two_pools(start_backend, start_daemon, pool, **daemon):
    a, b1, b2 = start_backend(), start_backend(), start_backend()
    d = start_daemon(pools={"alpha": pool("alpha", [a], min_idle=2),
                            "beta": pool("beta", [b1, b2], min_idle=4, max_connections=20)},
                     daemon=daemon or None)
    a.wait_open(2)
    b1.wait_open(2)
    b2.wait_open(2)
    wait_idle(d, "alpha", 2)
    wait_idle(d, "beta", 4)
    # A backend is `unknown` until a connection lived 200 ms (issue 18).
    wait_until(lambda: all(b["state"] == "up" for b in admin_json(d, "show backends")["backends"]),
               what="every backend proven up")
    return d, a, b1, b2


def test_show_pools_table_and_json(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    for i in range(3):
        assert echo_once(d.socket_path("alpha"), b"hello %d" % i) == b"hello %d" % i
    wait_until(lambda: served(a, 7) == 3, what="3 sessions closed at alpha's backend")
    wait_settled(d, "alpha", [a], 2)

    js = admin_json(d, "show pools")
    assert [p["name"] for p in js["pools"]] == ["alpha", "beta"]
    alpha, beta = js["pools"]
    assert alpha == {"name": "alpha", "idle": 2, "active": 0, "connecting": 0, "waiting": 0, "min_idle": 2,
                     "max_connections": 16, "served": 3, "refused": 0, "timed_out": 0, "backends": 1,
                     "backends_up": 1, "max_clients": 4096, "maxwait": 0.0, "gone": 0}
    assert beta == {"name": "beta", "idle": 4, "active": 0, "connecting": 0, "waiting": 0, "min_idle": 4,
                    "max_connections": 20, "served": 0, "refused": 0, "timed_out": 0, "backends": 2,
                    "backends_up": 2, "max_clients": 4096, "maxwait": 0.0, "gone": 0}
    # What the pool says it holds is what the backends have open.
    assert a.open_count() == alpha["idle"]
    assert b1.open_count() + b2.open_count() == beta["idle"]

    header, rows = table(admin(d, "show pools"))
    assert header == ["POOL", "IDLE", "ACTIVE", "CONNECTING", "WAITING", "MAXWAIT", "SERVED", "GONE", "REFUSED",
                      "TIMED_OUT", "MIN_IDLE", "MAX_CONN", "MAX_CLIENTS", "BACKENDS_UP"]
    assert rows == [["alpha", "2", "0", "0", "0", "0.0s", "3", "0", "0", "0", "2", "16", "4096", "1/1"],
                    ["beta", "4", "0", "0", "0", "0.0s", "0", "0", "0", "0", "4", "20", "4096", "2/2"]]


def test_show_pools_counts_an_active_session(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=2)})
    be.wait_open(2)
    wait_idle(d, "p", 2)
    with connect_unix(d.socket_path("p")) as c:
        c.sendall(b"ping")
        assert recv_exact(c, 4) == b"ping"
        be.wait_open(3)  # the refill replaced the one handed out
        wait_idle(d, "p", 2)
        row = pool_row(d, "p")
        assert (row["idle"], row["active"], row["served"]) == (2, 1, 1)
        b = backend_rows(d, "p")[be.addr]
        assert (b["idle"], b["active"]) == (2, 1)


def test_show_backends_table_and_json(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    js = admin_json(d, "show backends")
    assert [(b["pool"], b["backend"]) for b in js["backends"]] == [
        ("alpha", a.addr), ("beta", b1.addr), ("beta", b2.addr)]
    for b, be in zip(js["backends"], (a, b1, b2)):
        assert b["state"] == "up", b
        assert b["idle"] == be.open_count() == 2, b
        assert (b["active"], b["connecting"], b["consecutive_failures"], b["failed_attempts"]) == (0, 0, 0, 0)
        assert (b["weight"], b["backup"], b["backoff_ms"], b["retry_in_s"], b["last_error"]) == (1, False, 0, 0.0, "")

    only = admin_json(d, "show backends beta")["backends"]
    assert [b["backend"] for b in only] == [b1.addr, b2.addr]

    header, rows = table(admin(d, "show backends"))
    assert header == ["POOL", "BACKEND", "STATE", "WEIGHT", "BACKUP", "IDLE", "ACTIVE", "CONNECTING", "FAILS",
                      "RETRY_IN", "LASTCHG", "CHECK", "CHECK_MS", "CHECKED", "LAST_ERROR"]
    # LASTCHG: seconds since the backend was proven up; no checks in these pools.
    for r in rows:
        assert re.fullmatch(r"\d+\.\ds", r[10]), r
    assert [r[:10] + r[11:] for r in rows] == [
        ["alpha", a.addr, "up", "1", "no", "2", "0", "0", "0", "0.0s", "-", "-", "-", "-"],
        ["beta", b1.addr, "up", "1", "no", "2", "0", "0", "0", "0.0s", "-", "-", "-", "-"],
        ["beta", b2.addr, "up", "1", "no", "2", "0", "0", "0", "0.0s", "-", "-", "-", "-"]]
    _, rows = table(admin(d, "show backends alpha"))
    assert [r[:3] for r in rows] == [["alpha", a.addr, "up"]]

    assert admin(d, "show backends nosuch") == 'error: no pool named "nosuch"\n'


def test_show_backends_reports_a_dead_backend(start_backend, start_daemon, pool):
    dead = "127.0.0.1:1"  # nothing listens on port 1
    d = start_daemon(pools={"x": pool("x", [dead], min_idle=1)})
    # Never proven: it goes down from unknown, never having been up (issue 18).
    d.wait_log(r"pool=x backend=127\.0\.0\.1:1: backend unknown -> down")
    b = backend_rows(d, "x")[dead]
    assert b["state"] == "down"
    assert b["consecutive_failures"] >= 3 and b["failed_attempts"] >= 1, b
    assert b["backoff_ms"] > 0 and b["last_error"] == "connect failed: connection refused", b
    _, rows = table(admin(d, "show backends x"))
    assert rows[0][:3] == ["x", dead, "down"]
    # The last error carries its age (after a recovery it is visibly old).
    assert re.fullmatch(r"connect failed: connection refused \(\d+\.\ds ago\)", " ".join(rows[0][14:])), rows[0]
    assert b["last_error_age_s"] >= 0 and b["last_change_s"] >= 0 and b["last_check"] is None, b


def test_show_stats_table_and_json(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    for i in range(4):
        assert echo_once(d.socket_path("beta"), b"0123456789") == b"0123456789"
    wait_until(lambda: served(b1, 10) + served(b2, 10) == 4, what="4 sessions closed at beta's backends")
    wait_settled(d, "beta", [b1, b2], 4)

    js = admin_json(d, "show stats")["pools"]
    assert list(js) == ["alpha", "beta"]
    beta = js["beta"]
    assert (beta["clients_accepted"], beta["clients_served"], beta["handouts"]) == (4, 4, 4)
    assert (beta["bytes_to_backend"], beta["bytes_to_client"]) == (40, 40)
    assert (beta["clients_refused"], beta["clients_timed_out"], beta["connections_failed"]) == (0, 0, 0)
    # Every connection the backends accepted, the pool counts as opened.
    assert beta["connections_opened"] == len(b1.accepts()) + len(b2.accepts()) == 8
    assert js["alpha"]["clients_served"] == 0 and js["alpha"]["connections_opened"] == len(a.accepts()) == 2

    text = admin(d, "show stats")
    sections = {}
    cur = None
    for ln in text.splitlines():
        if ln.startswith("pool "):
            cur = sections.setdefault(ln.split()[1], {})
        elif ln.strip():
            k, v = ln.split()
            cur[k] = int(v)
    # (An empty line inside an answer would end it early: a client of the
    # protocol would see only the first pool.)
    assert list(sections) == ["alpha", "beta"], f"show stats answer as the protocol delimits it:\n{text}"
    assert sections == js


def test_show_metrics_and_version_and_help(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    text = admin(d, "show metrics")
    assert text.startswith("# HELP ")
    assert 'warmpool_pool_idle_connections{pool="alpha"} 2\n' in text
    assert 'warmpool_pool_idle_connections{pool="beta"} 4\n' in text
    assert f'warmpool_backend_up{{pool="beta",backend="{b2.addr}"}} 1\n' in text

    version = daemon_version()
    assert version.startswith("warmpoold ")
    assert admin(d, "version") == version + "\n"

    helptext = admin(d, "help")
    for cmd in ("show pools", "show backends", "show stats", "show metrics", "version", "drain POOL/BACKEND",
                "disable POOL/BACKEND [--kill]", "enable POOL/BACKEND", "reload"):
        assert cmd in helptext, helptext


def test_every_table_answer_ends_at_its_empty_line(start_backend, start_daemon, pool):
    """An answer is lines and then ONE empty line: a client that reads up to
    the first empty line must find the next answer right after it, for every
    command, with more than one pool (so multi-pool layouts are covered)."""
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    for cmd in ("show pools", "show pools --json", "show backends", "show backends --json", "show stats",
                "show stats --json", "show metrics", "help", "version"):
        with AdminConn(d) as c:
            c.send(f"{cmd}\nversion\n")
            first = c.read_answer()
            assert first, cmd
            second = c.read_answer()
            assert second == [version], (
                f"after the answer to {cmd!r} the next answer should be the version; got {second[:5]!r}; "
                f"the first answer was {first!r}")


# ---------------------------------------------------------------------------
# the line protocol


def test_several_commands_on_one_connection_in_order(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    with AdminConn(d) as c:
        assert c.command("version") == [version]
        pools = c.command("show pools --json")
        assert [p["name"] for p in json.loads(pools[0])["pools"]] == ["alpha", "beta"]
        assert c.command("frobnicate") == ['error: unknown command "frobnicate"; try: help']
        assert c.command("show backends alpha --json")[0].startswith('{"backends":[{"pool":"alpha"')
        assert c.command("version") == [version]


def test_command_split_across_two_sends(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    with AdminConn(d) as c:
        c.send("vers")
        # Nothing is answered before the line is complete.
        c.sock.settimeout(0.3)
        try:
            early = c.sock.recv(100)
        except OSError:
            early = None
        assert early is None, early
        c.send("ion\n")
        assert c.read_answer() == [version]
        # A line broken in the middle of a word and at its newline.
        c.send("show po")
        c.send("ols --json")
        c.send("\n")
        assert '"name":"alpha"' in c.read_answer()[0]


def test_pipelined_commands_in_one_send(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    with AdminConn(d) as c:
        c.send("version\nshow pools --json\nnosuch\nshow backends beta --json\n\nversion\r\nversion\n")
        assert c.read_answer() == [version]
        assert '"name":"beta"' in c.read_answer()[0]
        assert c.read_answer() == ['error: unknown command "nosuch"; try: help']
        beta = json.loads(c.read_answer()[0])["backends"]
        assert [b["backend"] for b in beta] == [b1.addr, b2.addr]
        assert c.read_answer() == ["error: empty command; try: help"]
        assert c.read_answer() == [version]  # CRLF line ends are accepted
        assert c.read_answer() == [version]
    # Many answers at once, bigger than one socket buffer: none lost.
    with AdminConn(d) as c:
        c.send("show metrics\n" * 50 + "version\n")
        first = c.read_answer()
        for _ in range(49):
            assert c.read_answer() == first
        assert c.read_answer() == [version]


def assert_still_serving(d, version):
    assert d.proc.poll() is None, f"warmpoold exited with {d.proc.returncode}\n{d.log()}"
    assert admin(d, "version") == version + "\n"
    assert echo_once(d.socket_path("alpha"), b"still here") == b"still here"


def test_garbage_gets_errors_and_the_daemon_stays_up(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    cases = [
        (b"frobnicate", 'error: unknown command "frobnicate"; try: help'),
        (b"\x01\x02\xff\xfe\x7f", 'error: unknown command "?????"; try: help'),
        (b"\x00", "error: empty command; try: help"),
        (b"\x00version", "error: empty command; try: help"),
        (b"ver\x00sion", 'error: unknown command "ver"; try: help'),
        (b"", "error: empty command; try: help"),
        (b"  \t \r", "error: empty command; try: help"),
        (b"x" * 100, 'error: unknown command "' + "x" * 40 + '..."; try: help'),
        (b"show", "error: show what? pools, backends, clients, dns, stats or metrics"),
        (b"show nothing", "error: unknown show command; try: show pools|backends [POOL]|clients [POOL]|dns [POOL]|stats|metrics"),
        (b"show pools extra", "error: unknown show command; try: show pools|backends [POOL]|clients [POOL]|dns [POOL]|stats|metrics"),
        (b"show a b c d e f g h i", "error: too many arguments"),
        (b"drain", "error: usage: drain POOL/BACKEND"),
        (b"drain alpha", "error: expected POOL/BACKEND, e.g. redis/127.0.0.1:6379"),
        (b"drain a/b c/d", "error: usage: drain POOL/BACKEND"),
        (b"enable alpha/x --kill", "error: usage: enable POOL/BACKEND"),
        (b"disable", "error: usage: disable POOL/BACKEND [--kill]"),
        (b"reload now", "error: reload takes no arguments"),
        (b"SHOW POOLS", 'error: unknown command "SHOW"; try: help'),
    ]
    with AdminConn(d) as c:
        for line, want in cases:
            c.send(line + b"\n")
            assert c.read_answer() == [want], line
        # The connection still works after all of them.
        assert c.command("version") == [version]
    # Each again on its own connection, closed right after sending.
    for line, _ in cases:
        with connect_unix(d.admin_path) as s:
            s.sendall(line + b"\n")
    # A connection closed in the middle of a line.
    with connect_unix(d.admin_path) as s:
        s.sendall(b"show po")
    assert_still_serving(d, version)
    # Nothing changed: every backend is still up.
    assert {b["state"] for b in admin_json(d, "show backends")["backends"]} == {"up"}


def test_over_long_line_gets_an_error_and_the_connection_closes(start_backend, start_daemon, pool):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    too_long = "error: line too long (at most 4096 bytes); closing"
    with AdminConn(d) as c:
        assert c.command("version") == [version]
        c.send(b"A" * 5000 + b"\n")
        assert c.read_answer() == [too_long]
        rest, how = recv_until_closed(c.sock)
        assert rest == b"", rest
    # Without a newline at all: the same once 4096 bytes are in.
    with AdminConn(d) as c:
        c.send(b"show " + b"B" * 4200)
        assert c.read_answer() == [too_long]
        assert recv_until_closed(c.sock)[0] == b""
    # The boundary: 4095 bytes and the newline fit; 4096 and the newline do not.
    with AdminConn(d) as c:
        assert c.command("C" * 4095) == ['error: unknown command "' + "C" * 40 + '..."; try: help']
        assert c.command("version") == [version]
        c.send(b"D" * 4096 + b"\n")
        assert c.read_answer() == [too_long]
        assert recv_until_closed(c.sock)[0] == b""
    # Commands pipelined before the long line are answered first.
    with AdminConn(d) as c:
        c.send(b"version\nversion\n" + b"E" * 5000)
        assert c.read_answer() == [version]
        assert c.read_answer() == [version]
        assert c.read_answer() == [too_long]
        assert recv_until_closed(c.sock)[0] == b""
    assert_still_serving(d, version)


def test_many_admin_connections_at_once(start_backend, start_daemon, pool):
    """More connections than the daemon keeps (32): the extra ones are
    closed, the daemon stays up, and a new one is answered once they go."""
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()
    conns = [connect_unix(d.admin_path) for _ in range(40)]
    try:
        answered = 0
        for s in conns:
            try:
                s.sendall(b"version\n")
                if recv_exact(s, len(version) + 2, timeout=5.0) == (version + "\n\n").encode():
                    answered += 1
            except (AssertionError, OSError):
                pass
        # At most 32 at once; a connection of an earlier admin() whose close
        # the daemon has not yet processed may still hold a slot.
        assert 28 <= answered <= 32, answered
    finally:
        for s in conns:
            s.close()

    def answered_again():
        try:  # refused while the daemon has not yet seen the crowd leave
            return admin(d, "version", timeout=2.0) == version + "\n"
        except (AssertionError, OSError):
            return False

    wait_until(answered_again, what="an answer after the crowd left")
    d.wait_log(r"admin socket .*: too many connections, closing a new connection")
    assert_still_serving(d, version)


# ---------------------------------------------------------------------------
# access: the read-only socket, modes, no socket


def mode_of(path):
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode), path
    return stat.S_IMODE(st.st_mode)


def test_read_only_socket_answers_only_show(start_backend, start_daemon, pool, sockdir):
    ro = sockdir / "ro.sock"
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool, admin_socket_readonly=str(ro))
    version = daemon_version()
    assert mode_of(d.admin_path) == 0o600
    assert mode_of(ro) == 0o660
    d.wait_log(rf"read-only admin socket: listening on {re.escape(str(ro))}")

    assert [p["name"] for p in admin_json(ro, "show pools")["pools"]] == ["alpha", "beta"]
    assert admin(ro, "show backends alpha").splitlines()[1].split()[:3] == ["alpha", a.addr, "up"]
    assert "pool alpha" in admin(ro, "show stats")
    assert 'warmpool_pool_idle_connections{pool="alpha"} 2' in admin(ro, "show metrics")
    assert admin(ro, "version") == version + "\n"
    helptext = admin(ro, "help")
    assert "show pools" in helptext and "drain" not in helptext and "reload" not in helptext

    denied = "error: permission denied: this socket is read-only\n"
    for cmd in (f"drain alpha/{a.addr}", f"disable alpha/{a.addr}", f"disable alpha/{a.addr} --kill",
                f"enable alpha/{a.addr}", "reload", "drain nosuch/x"):
        assert admin(ro, cmd) == denied, cmd
        r = warmpoolctl(ro, *cmd.split())
        assert (r.returncode, r.stdout) == (1, denied), (cmd, r)
    # None of it happened.
    assert [b["state"] for b in admin_json(d, "show backends")["backends"]] == ["up", "up", "up"]
    assert a.open_count() == 2
    assert "reloading" not in d.log() and "admin: " not in d.log()
    # The read-write socket still may.
    assert admin(d, f"drain alpha/{a.addr}") == f"alpha/{a.addr}: draining\n"


def test_admin_socket_mode_is_honoured(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)}, daemon={"admin_socket_mode": "0640"})
    assert mode_of(d.admin_path) == 0o640
    assert admin(d, "version").startswith("warmpoold ")


def test_admin_socket_false_means_no_socket(start_backend, start_daemon, pool, sockdir):
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)}, daemon={"admin_socket": False})
    be.wait_open(1)
    assert sorted(os.listdir(sockdir)) == ["p.sock", "warmpoold1.notify"]
    assert "admin socket" not in d.log()
    assert echo_once(d.socket_path("p"), b"works") == b"works"


def test_admin_socket_removed_at_exit(start_backend, start_daemon, pool, sockdir):
    be = start_backend()
    ro = sockdir / "ro.sock"
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)}, daemon={"admin_socket_readonly": str(ro)})
    assert os.path.exists(d.admin_path) and os.path.exists(ro)
    assert d.stop() == 0, d.log()
    assert not os.path.exists(d.admin_path) and not os.path.exists(ro)


# ---------------------------------------------------------------------------
# warmpoolctl


def test_warmpoolctl_exit_codes_and_output(start_backend, start_daemon, pool, sockdir):
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool)
    version = daemon_version()

    r = warmpoolctl(d, "version")
    assert (r.returncode, r.stdout, r.stderr) == (0, version + "\n", "")
    r = warmpoolctl(d, "show", "pools")
    assert r.returncode == 0 and r.stdout == admin(d, "show pools"), r
    assert r.stdout.splitlines()[1].split()[:2] == ["alpha", "2"]

    # --json before the command, or as an argument of it.
    for args in (["--json", "show", "pools"], ["show", "pools", "--json"]):
        r = warmpoolctl(d, *args)
        assert r.returncode == 0, r
        assert [(p["name"], p["idle"]) for p in json.loads(r.stdout)["pools"]] == [
            ("alpha", 2), ("beta", 4)]
    r = warmpoolctl(d, "--json", "show", "backends", "beta")
    assert [b["backend"] for b in json.loads(r.stdout)["backends"]] == [b1.addr, b2.addr]
    r = warmpoolctl(d, "--json", "show", "stats")
    assert json.loads(r.stdout)["pools"]["alpha"]["connections_opened"] == 2

    # An error answer: exit 1, the answer on stdout.
    r = warmpoolctl(d, "frobnicate")
    assert (r.returncode, r.stdout) == (1, 'error: unknown command "frobnicate"; try: help\n'), r
    r = warmpoolctl(d, "drain", "nosuch/1.2.3.4:5")
    assert (r.returncode, r.stdout) == (1, 'error: no pool named "nosuch"\n'), r

    # The daemon cannot be reached: exit 2, a message on stderr.
    r = warmpoolctl(sockdir / "nothing.sock", "version")
    assert r.returncode == 2 and r.stdout == "", r
    assert "cannot connect to" in r.stderr and "No such file or directory" in r.stderr, r.stderr
    # Usage errors: exit 2.
    assert warmpoolctl(d).returncode == 2
    assert warmpoolctl(d, "--bogus", "version").returncode == 2
    assert warmpoolctl(d, "show", "").returncode == 2
    assert warmpoolctl(d, "-T", "0", "version").returncode == 2
    r = warmpoolctl(d, "x" * 5000)
    assert r.returncode == 2 and "longer than 4096 bytes" in r.stderr, r
    # --help and --version need no daemon.
    r = warmpoolctl(None, "--help")
    assert r.returncode == 0 and "usage: warmpoolctl" in r.stdout
    r = warmpoolctl(None, "--version")
    assert r.returncode == 0 and r.stdout.startswith("warmpoolctl ")
    assert_still_serving(d, version)


def test_warmpoolctl_when_the_daemon_does_not_answer(sockdir):
    """A socket that accepts but never answers: exit 2 after -T."""
    path = sockdir / "mute.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        srv.bind(str(path))
        srv.listen(4)
        r = warmpoolctl(None, "-s", path, "-T", "0.5", "version")
        assert r.returncode == 2 and "no answer in time" in r.stderr, r
    finally:
        srv.close()


def test_warmpoolctl_waits_for_room_in_a_full_backlog(sockdir):
    """An admin socket whose backlog is full (a daemon busy elsewhere):
    warmpoolctl waits for room until -T, as libwarmpool does (both use
    sock_unix_connect in lib/sock.c), rather than failing at once with
    "Resource temporarily unavailable"; once the daemon takes connections
    again it is answered."""
    path = sockdir / "busy.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fillers, proc = [], None
    try:
        srv.bind(str(path))
        srv.listen(0)
        for _ in range(64):
            try:
                fillers.append(connect_unix(path, timeout=0))  # non-blocking: refused once full
            except BlockingIOError:
                break
        assert 0 < len(fillers) < 64, "the backlog did not fill"
        proc = subprocess.Popen([str(WARMPOOLCTL), "-s", str(path), "-T", "30", "version"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Waiting, not failed (the exit it would make comes within milliseconds).
        try:
            proc.wait(timeout=1.0)
            raise AssertionError(f"warmpoolctl gave up on a full backlog: {proc.communicate()}")
        except subprocess.TimeoutExpired:
            pass
        # Make room: take the fillers (first in the queue), then warmpoolctl's connection.
        srv.settimeout(IO_TIMEOUT)
        taken = [srv.accept()[0] for _ in fillers]
        conn = srv.accept()[0]
        taken.append(conn)
        conn.settimeout(IO_TIMEOUT)
        got = b""
        while not got.endswith(b"\n"):
            chunk = conn.recv(100)
            assert chunk, got
            got += chunk
        assert got == b"version\n", got
        conn.sendall(b"warmpoold 9.9.9\n\n")
        out, err = proc.communicate(timeout=IO_TIMEOUT)
        assert (proc.returncode, out) == (0, "warmpoold 9.9.9\n"), (proc.returncode, out, err)
        for c in taken:
            c.close()
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        for c in fillers:
            c.close()
        srv.close()


# ---------------------------------------------------------------------------
# drain, disable, enable


def held_session(path, payload=b"held-0"):
    c = connect_unix(path)
    c.sendall(payload)
    assert recv_exact(c, len(payload)) == payload
    return c


def active_backend(d, pool, bes):
    """The backend of `bes` whose active count is 1 (show backends)."""
    rows = backend_rows(d, pool)
    hot = [be for be in bes if rows[be.addr]["active"] == 1]
    assert len(hot) == 1, rows
    return hot[0]


def test_drain_then_enable(start_backend, start_daemon, pool):
    one, two = start_backend(), start_backend()
    d = start_daemon(pools={"d": pool("d", [one, two], min_idle=4)}, daemon={"log_level": "debug"})
    one.wait_open(2)
    two.wait_open(2)
    wait_idle(d, "d", 4)
    held = held_session(d.socket_path("d"))
    try:
        victim = active_backend(d, "d", [one, two])
        other = two if victim is one else one
        wait_settled(d, "d", [one, two], 4)
        victim_accepts = len(victim.accepts())

        assert admin(d, f"drain d/{victim.addr}") == f"d/{victim.addr}: draining\n"
        d.wait_log(rf"admin: drain d/{re.escape(victim.addr)}")
        # Its idle connections are closed; only the running session stays.
        victim.wait_open(1)
        # The floor is rebuilt on the other backend.
        other.wait_open(4)
        wait_idle(d, "d", 4)
        rows = backend_rows(d, "d")
        assert (rows[victim.addr]["state"], rows[victim.addr]["idle"], rows[victim.addr]["active"]) == (
            "draining", 0, 1)
        assert (rows[other.addr]["state"], rows[other.addr]["idle"]) == ("up", 4)
        assert pool_row(d, "d")["backends_up"] == 1

        # No new client lands on it.
        for i in range(10):
            assert echo_once(d.socket_path("d"), b"new-%02d" % i) == b"new-%02d" % i
        wait_until(lambda: served(other, 6) == 10, what="10 sessions on the other backend")
        assert served(victim, 6) == 0
        assert len(victim.accepts()) == victim_accepts

        # The running session continues, and its bytes arrive.
        more = bytes(range(256)) * 64
        held.sendall(more)
        assert recv_exact(held, len(more)) == more
    finally:
        held.close()
    closed = victim.wait_close_where(lambda c: c.bytes_in == 6 + 16384, what="the held session's close")
    assert closed.bytes_out == 6 + 16384
    victim.wait_open(0)
    assert len(victim.accepts()) == victim_accepts

    # Enable: back through rise (issue 18: down until proven), then up again
    # and it gets connections again.
    assert admin(d, f"enable d/{victim.addr}") == f"d/{victim.addr}: down\n"
    wait_until(lambda: backend_rows(d, "d")[victim.addr]["state"] == "up", what="the enabled backend up")
    for i in range(12):
        assert echo_once(d.socket_path("d"), b"back-%02d" % i) == b"back-%02d" % i
    wait_until(lambda: len(victim.accepts()) > victim_accepts, what="a new connection to the enabled backend")
    wait_until(lambda: served(victim, 7) > 0, what="a session on the enabled backend")


def test_disable_keeps_sessions_unless_kill(start_backend, start_daemon, pool):
    one, two = start_backend(), start_backend()
    d = start_daemon(pools={"k": pool("k", [one, two], min_idle=2)}, daemon={"log_level": "debug"})
    one.wait_open(1)
    two.wait_open(1)
    wait_idle(d, "k", 2)
    c1 = held_session(d.socket_path("k"), b"first")
    c2 = held_session(d.socket_path("k"), b"second")
    try:
        rows = backend_rows(d, "k")
        assert (rows[one.addr]["active"], rows[two.addr]["active"]) == (1, 1), rows

        # Without --kill: down now, the session keeps running.
        assert admin(d, f"disable k/{one.addr}") == f"k/{one.addr}: disabled\n"
        wait_until(lambda: backend_rows(d, "k")[one.addr]["idle"] == 0, what="its idle connections closed")
        one.wait_open(1)
        for c, tag in ((c1, b"first"), (c2, b"second")):
            c.sendall(tag)
            assert recv_exact(c, len(tag)) == tag
        for i in range(4):
            assert echo_once(d.socket_path("k"), b"d%d" % i) == b"d%d" % i
        assert served(one, 2) == 0

        # --kill: its active session is closed now, the other's is not.
        r = warmpoolctl(d, "disable", f"k/{one.addr}", "--kill")
        assert (r.returncode, r.stdout) == (0, f"k/{one.addr}: disabled (1 sessions closed)\n"), r
        d.wait_log(rf"pool=k backend={re.escape(one.addr)}: 1 session closed by admin")
        # Exactly one client sees its connection end (EOF), with nothing
        # more sent to it; the other still echoes.
        r, _, _ = select.select([c1, c2], [], [], 5.0)
        assert len(r) == 1, f"{len(r)} of the 2 clients saw their connection end"
        dead = r[0]
        alive, tag = (c2, b"second") if dead is c1 else (c1, b"first")
        assert recv_until_closed(dead) == (b"", "eof")
        alive.sendall(tag)
        assert recv_exact(alive, len(tag)) == tag
        one.wait_open(0)
        assert backend_rows(d, "k")[one.addr]["active"] == 0
        # A second --kill finds nothing left.
        assert admin(d, f"disable k/{one.addr} --kill") == f"k/{one.addr}: disabled (0 sessions closed)\n"
    finally:
        c1.close()
        c2.close()
    # enable returns it to the rise logic (issue 18): down until proven again.
    assert admin(d, f"enable k/{one.addr}") == f"k/{one.addr}: down\n"
    d.wait_log(rf"pool=k backend={re.escape(one.addr)}: backend disabled -> down: enabled by admin")
    d.wait_log(rf"pool=k backend={re.escape(one.addr)}: backend down -> up: ")


def test_enable_without_checks_at_max_connections_comes_back(start_backend, start_daemon, pool):
    """No active check, and the floor fills max_connections (min_idle 4 =
    max_connections 4): while `one` is disabled, `two` holds all four. After
    `enable`, the pool's probe of `one` must still get a connection: one idle
    connection of `two` is closed to make room (the cap holds), and `one` is
    up after `rise` (2) proven connections, then serves clients. Old code:
    the probe waited for a free slot that never came, and `one` stayed down
    for good although it accepted connections."""
    one, two = start_backend(), start_backend()
    d = start_daemon(pools={"f": pool("f", [one, two], min_idle=4, max_connections=4)})
    wait_idle(d, "f", 4)
    wait_until(lambda: {r["state"] for r in backend_rows(d, "f").values()} == {"up"}, what="both backends up")
    r = warmpoolctl(d, "disable", f"f/{one.addr}")
    assert (r.returncode, r.stdout) == (0, f"f/{one.addr}: disabled\n"), r
    one.wait_open(0)
    two.wait_open(4)  # the floor, all of max_connections, on the other backend
    wait_idle(d, "f", 4)
    r = warmpoolctl(d, "enable", f"f/{one.addr}")
    assert (r.returncode, r.stdout) == (0, f"f/{one.addr}: down\n"), r
    # Rise still counts: two connections that held, not the first accept.
    d.wait_log(rf"pool=f backend={re.escape(one.addr)}: backend down -> up: connection proven \(2 in a row\)")
    d.wait_log(rf"pool=f backend={re.escape(two.addr)} conn=\d+: closed: max_connections \(4\) reached, "
               rf"room for a probe \(pool=f backend={re.escape(one.addr)}\)")
    assert "backend disabled -> up" not in d.log()
    wait_until(lambda: backend_rows(d, "f")[one.addr]["state"] == "up", what="the enabled backend up (show backends)")
    assert pool_row(d, "f")["backends_up"] == 2
    for i in range(8):
        assert echo_once(d.socket_path("f"), b"max-%d" % i) == b"max-%d" % i
    wait_until(lambda: served(one, 5) + served(two, 5) == 8, what="8 sessions seen by the backends")
    assert served(one, 5) > 0, "no client was served by the enabled backend"
    row = pool_row(d, "f")
    assert row["idle"] + row["active"] + row["connecting"] <= 4, row


def test_enable_right_after_disable_without_checks(start_backend, start_daemon, pool):
    """No active check, max_connections 1 (below rise, 2), one idle
    connection: `disable` and `enable` in one write. The probe that proved
    itself stays idle on the still-down backend; the next probe must not wait
    for its slot. Old code: one probe, then nothing; the backend stayed down
    and every client timed out in the queue."""
    be = start_backend()
    d = start_daemon(pools={"s": pool("s", [be], min_idle=1, max_connections=1)}, daemon={"log_level": "debug"})
    wait_idle(d, "s", 1)
    wait_until(lambda: backend_rows(d, "s")[be.addr]["state"] == "up", what="the backend up")
    first = be.accepts()[0]
    with AdminConn(d) as a:
        a.send(f"disable s/{be.addr}\nenable s/{be.addr}\n")
        assert a.read_answer() == [f"s/{be.addr}: disabled"]
        assert a.read_answer() == [f"s/{be.addr}: down"]
    d.wait_log(rf"pool=s backend={re.escape(be.addr)}: backend down -> up: connection proven \(2 in a row\)")
    # The first probe, proven and idle on the down backend, made way for the second.
    d.wait_log(rf"pool=s backend={re.escape(be.addr)} conn=\d+: closed: max_connections \(1\) reached, "
               rf"room for a probe")
    wait_until(lambda: backend_rows(d, "s")[be.addr]["state"] == "up", what="the enabled backend up (show backends)")
    assert echo_once(d.socket_path("s"), b"right-after") == b"right-after"
    wait_until(lambda: served(be, 11) == 1, what="the session seen by the backend")
    be.wait_close_where(lambda c: c.id == first.id, what="the idle connection closed by disable")


def test_drain_disable_enable_unknown_targets(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)})
    be.wait_open(1)
    for verb in ("drain", "disable", "enable"):
        assert admin(d, f"{verb} nosuch/{be.addr}") == 'error: no pool named "nosuch"\n'
        assert admin(d, f"{verb} p/127.0.0.1:1") == 'error: pool p has no backend "127.0.0.1:1"\n'
        assert admin(d, f"{verb} p/") == 'error: pool p has no backend ""\n'
        assert admin(d, f"{verb} p") == "error: expected POOL/BACKEND, e.g. redis/127.0.0.1:6379\n"
        r = warmpoolctl(d, verb, "p/nope")
        assert (r.returncode, r.stdout) == (1, 'error: pool p has no backend "nope"\n'), r
    assert backend_rows(d, "p")[be.addr]["state"] == "up"
    assert be.open_count() == 1


# ---------------------------------------------------------------------------
# one command at a time (a pipelining peer cannot flood the daemon): a single write of many commands
# runs one command per loop iteration, nothing more is run or read while an
# answer waits for the peer, and no answer is lost to a later one's size


PIPELINED = 300  # commands in one write: 300 * len("show metrics\n") fits the 4096-byte line buffer
CROWD = 30  # read-only connections doing the same at once
RSS_GROWTH_MAX = 48 << 20  # generous: one answer per connection is held, not 300 (old code: ~30 * 300 answers)


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def read_answers(sock, count, timeout=60.0):
    """`count` answers from sock (each ends at an empty line; show metrics has
    none inside), as bytes, without the quadratic cost of AdminConn on many MB."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    answers, start, scan = [], 0, 0
    while len(answers) < count:
        end = buf.find(b"\n\n", scan)
        if end >= 0:
            answers.append(bytes(buf[start:end + 1]))
            start = scan = end + 2
            continue
        scan = max(start, len(buf) - 1)
        left = deadline - time.monotonic()
        assert left > 0, f"{len(answers)} of {count} answers within {timeout:.0f}s"
        sock.settimeout(left)
        chunk = sock.recv(1 << 20)
        assert chunk, f"EOF after {len(answers)} of {count} answers"
        buf += chunk
    assert start == len(buf), f"{len(buf) - start} bytes after the last answer"
    return answers


def backend_state(metrics_text, pool, backend):
    """The state warmpool_backend_state gives a backend in one metrics answer."""
    states = re.findall(rf'^warmpool_backend_state\{{pool="{pool}",backend="{re.escape(backend)}",'
                        rf'state="(\w+)"\}} 1$', metrics_text, re.M)
    assert len(states) == 1, metrics_text[:2000]
    return states[0]


def test_pipelined_commands_run_one_at_a_time(start_backend, start_daemon, pool, sockdir):
    """300 `show metrics` in one write on each of 30 read-only connections
    whose clients read nothing: the daemon runs each connection's commands
    only as its answers are taken, so it answers the operator meanwhile
    (the backend disabled then shows in the later answers of the first
    connection: they were produced after it), all 300 answers arrive
    complete and in order, and its memory holds one answer per connection,
    not 300."""
    ro = sockdir / "ro.sock"
    d, a, b1, b2 = two_pools(start_backend, start_daemon, pool, admin_socket_readonly=str(ro))
    one = admin(ro, "show metrics").encode()
    # Far more than a socket buffer holds, so backpressure must stop the runs.
    assert PIPELINED * len(one) > 2 << 20, len(one)
    rss_before = vm_rss(d.proc.pid)
    crowd = [connect_unix(ro) for _ in range(CROWD)]
    try:
        for s in crowd:
            s.sendall(b"show metrics\n" * PIPELINED)
        # Each connection's first answer is there (unread): its commands started.
        for s in crowd:
            assert select.select([s], [], [], IO_TIMEOUT)[0], "no answer started on a crowd connection"
        assert admin(d, "version") == daemon_version() + "\n"
        growth = vm_rss(d.proc.pid) - rss_before
        assert growth < RSS_GROWTH_MAX, f"VmRSS grew by {growth >> 20} MiB with {CROWD} readers that do not read"
        # The operator is answered while the first connection's answers wait.
        assert admin(d, f"disable beta/{b1.addr}") == f"beta/{b1.addr}: disabled\n"
        answers = read_answers(crowd[0], PIPELINED)
    finally:
        for s in crowd:
            s.close()
    states = [backend_state(ans.decode(), "beta", b1.addr) for ans in answers]
    assert states[0] == "up", states[:3]
    assert states[-1] == "disabled", "the 300th answer was produced before the operator's command"
    flips = sum(1 for x, y in zip(states, states[1:]) if x != y)
    assert flips == 1, states  # in order: up, ..., up, disabled, ..., disabled
    families = [ln for ln in one.decode().splitlines() if ln.startswith("# TYPE")]
    for ans in answers:
        assert [ln for ln in ans.decode().splitlines() if ln.startswith("# TYPE")] == families
    assert admin(d, "version") == daemon_version() + "\n"
    assert echo_once(d.socket_path("alpha"), b"still here") == b"still here"


MANY_POOLS = 40  # enough pools that 300 metrics answers together exceed the 16 MiB answer cap


def test_a_large_answer_never_drops_earlier_ones(start_backend, start_daemon, pool, sockdir):
    """Answers that together pass the 16 MiB cap on one answer: each is its
    own, so all arrive complete and none is replaced by "answer too large"
    (the old code reset the whole pending output, earlier answers with it)."""
    be = start_backend()
    ro = sockdir / "ro.sock"
    pools = {f"p{i:02d}": pool(f"p{i:02d}", [be], min_idle=0) for i in range(MANY_POOLS)}
    d = start_daemon(pools=pools, daemon={"admin_socket_readonly": str(ro)})
    one = admin(ro, "show metrics")
    assert PIPELINED // 2 * len(one) > 16 << 20, len(one)
    with connect_unix(ro) as s:
        s.sendall(b"show metrics\nversion\n" * (PIPELINED // 2))
        answers = read_answers(s, PIPELINED, timeout=120.0)
    version = (daemon_version() + "\n").encode()
    for i, ans in enumerate(answers):
        if i % 2:
            assert ans == version, (i, ans[:200])
        else:
            assert not ans.startswith(b"error"), (i, ans[:200])
            assert ans.count(b"# TYPE ") == one.count("# TYPE "), i
    assert admin(d, "version") == daemon_version() + "\n"


def test_backend_command_arguments_are_escaped_in_the_log(start_backend, start_daemon, pool):
    """drain/disable/enable log their argument: the peer's bytes, so control
    bytes (ESC, BEL) and invalid UTF-8 appear as \\xHH, never raw, where
    they could rewrite a terminal showing the log or forge a line (review
    2.8)."""
    be = start_backend()
    d = start_daemon(pools={"alpha": pool("alpha", [be])})
    raw = b"\x1b[2J\x1b]0;owned\x07alpha/\xff\xfe"
    for verb in (b"drain", b"disable", b"enable"):
        with AdminConn(d) as c:
            c.send(verb + b" " + raw + b"\n")
            lines = c.read_answer()
        assert lines and lines[0].startswith("error: "), lines
    shown = r"\x1b[2J\x1b]0;owned\x07alpha/\xff\xfe"
    for verb in ("drain", "disable", "enable"):
        d.wait_log(re.escape(f"admin: {verb} {shown}"))
    log = d.stderr_path.read_bytes()
    for bad in (b"\x1b", b"\x07", b"\xff"):
        assert bad not in log, (bad, log[-600:])


# ---------------------------------------------------------------------------
# issue 18: JSON errors, options anywhere, show clients, maxwait, alignment


def test_json_errors_are_json_objects(start_backend, start_daemon, pool, sockdir):
    """With --json every error is a JSON object {"error": ...}: the
    daemon's answers and warmpoolctl's own (no daemon), on stdout."""
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)})
    assert json.loads(admin(d, "show backends nosuch --json")) == {
        "error": 'no pool named "nosuch"', "details": []}
    assert json.loads(admin(d, "frobnicate --json"))["error"] == 'unknown command "frobnicate"; try: help'
    # Without --json the answer stays text.
    assert admin(d, "show backends nosuch") == 'error: no pool named "nosuch"\n'
    r = warmpoolctl(d, "--json", "drain", "nosuch/1.2.3.4:5")
    assert r.returncode == 1 and json.loads(r.stdout) == {"error": 'no pool named "nosuch"', "details": []}, r
    r = warmpoolctl(sockdir / "nothing.sock", "--json", "version")
    assert r.returncode == 2 and r.stderr == "", r
    assert json.loads(r.stdout)["error"].startswith("cannot connect to "), r
    # A refused reload: its file errors are the details.
    d.config_path.write_text("pools: [\n")
    r = warmpoolctl(d, "reload", "--json")
    js = json.loads(r.stdout)
    assert r.returncode == 1 and js["error"].startswith("reload failed: "), r
    assert js["details"] and all(str(d.config_path) in ln for ln in js["details"]), js


def test_warmpoolctl_options_anywhere(start_backend, start_daemon, pool):
    """Options may follow the command (the man page said they must come
    first, and they were sent to the daemon as arguments)."""
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=1)})
    be.wait_open(1)
    r = warmpoolctl(None, "show", "pools", "-s", str(d.admin_path), "--json")
    assert r.returncode == 0, r
    assert [p["name"] for p in json.loads(r.stdout)["pools"]] == ["p"]
    r = warmpoolctl(None, "show", "backends", "p", "--socket", str(d.admin_path), "-T", "5")
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[:2] == ["p", be.addr], r
    r = warmpoolctl(None, "disable", f"p/{be.addr}", "-s", str(d.admin_path), "--kill")
    assert (r.returncode, r.stdout) == (0, f"p/{be.addr}: disabled (0 sessions closed)\n"), r


def test_show_clients_and_maxwait(start_backend, start_daemon, pool):
    """show clients: one row per client, relaying and waiting, with its
    backend, age, bytes each way and peer uid/pid; show pools: MAXWAIT, the
    age of the oldest waiting client."""
    be = start_backend()
    d = start_daemon(pools={"c": pool("c", [be], min_idle=1, max_connections=1, queue_timeout="30s")})
    be.wait_open(1)
    path = d.socket_path("c")
    assert json.loads(admin(d, "show clients --json")) == {"clients": [], "more": 0}
    held = held_session(path, b"0123456789")
    waiting = connect_unix(path)
    try:
        wait_until(lambda: pool_row(d, "c")["waiting"] == 1, what="one waiting client")
        wait_until(lambda: pool_row(d, "c")["maxwait"] >= 0.2, what="maxwait to grow")
        js = json.loads(admin(d, "show clients c --json"))
        assert js["more"] == 0
        rel, wai = js["clients"]
        assert (rel["pool"], rel["state"], rel["backend"], rel["bytes_up"], rel["bytes_down"]) == (
            "c", "relaying", be.addr, 10, 10), rel
        assert (wai["pool"], wai["state"], wai["backend"], wai["bytes_up"], wai["bytes_down"]) == (
            "c", "waiting", None, 0, 0), wai
        for row in (rel, wai):
            assert (row["uid"], row["pid"]) == (os.getuid(), os.getpid()), row
        assert rel["id"] < wai["id"] and wai["age_s"] >= 0.2 and rel["age_s"] >= wai["age_s"], js
        header, rows = table(admin(d, "show clients"))
        assert header == ["POOL", "ID", "STATE", "BACKEND", "AGE", "BYTES_UP", "BYTES_DOWN", "UID", "PID"]
        assert [r[:4] + r[5:] for r in rows] == [
            ["c", str(rel["id"]), "relaying", be.addr, "10", "10", str(os.getuid()), str(os.getpid())],
            ["c", str(wai["id"]), "waiting", "-", "0", "0", str(os.getuid()), str(os.getpid())]]
        _, prow = table(admin(d, "show pools"))
        assert float(prow[0][5].rstrip("s")) >= 0.2, prow
        assert admin(d, "show clients nosuch") == 'error: no pool named "nosuch"\n'
    finally:
        held.close()
        waiting.close()


def test_show_clients_is_bounded(start_daemon, pool):
    """show clients lists at most SHOW_CLIENTS_MAX (1000) rows and counts
    the rest, in the table and in JSON."""
    dead = "127.0.0.1:1"  # nothing listens: every client waits
    d = start_daemon(pools={"w": pool("w", [dead], min_idle=1, queue_timeout="60s")})
    clients = []
    try:
        for _ in range(1003):
            clients.append(connect_unix(d.socket_path("w")))
        wait_until(lambda: pool_row(d, "w")["waiting"] == 1003, what="1003 waiting clients")
        lines = admin(d, "show clients").splitlines()
        assert len(lines) == 1 + 1000 + 1, len(lines)
        assert lines[-1] == "... 3 more clients (at most 1000 are listed)", lines[-1]
        js = json.loads(admin(d, "show clients --json"))
        assert (len(js["clients"]), js["more"]) == (1000, 3)
    finally:
        for c in clients:
            c.close()


def aligned(text, fixed):
    """Every row's first `fixed` columns line up with the header's: each
    value starts where its header starts (left-aligned) or ends where it
    ends (right-aligned)."""
    lines = text.splitlines()
    spans = [[m.span() for m in re.finditer(r"\S+", ln)][:fixed] for ln in lines]
    for ln, sp in zip(lines[1:], spans[1:]):
        for (hs, he), (vs, ve) in zip(spans[0], sp):
            assert hs == vs or he == ve, f"misaligned:\n{lines[0]}\n{ln}"


def test_tables_align_with_64_character_pool_names(start_backend, start_daemon, pool):
    """Pool names may be 64 characters: every table stays aligned, and no
    line of any answer ends in a space."""
    long_name = "p" * 64
    be, dead = start_backend(), "127.0.0.1:1"
    d = start_daemon(pools={"a": pool("a", [be, dead], min_idle=2),
                            long_name: pool(long_name, [be], min_idle=1, max_connections=1,
                                            queue_timeout="30s")})
    be.wait_open(3)
    held = held_session(d.socket_path(long_name), b"held")
    waiting = connect_unix(d.socket_path(long_name))
    try:
        wait_until(lambda: pool_row(d, long_name)["waiting"] == 1, what="one waiting client")
        d.wait_log(r"backend=127\.0\.0\.1:1 conn=\d+: connect failed")
        pools = admin(d, "show pools")
        aligned(pools, 14)
        backends = admin(d, "show backends")
        aligned(backends, 14)
        clients = admin(d, "show clients")
        aligned(clients, 9)
        assert len(clients.splitlines()) == 3
        for cmd in ("show pools", "show backends", "show clients", "show stats", "help"):
            for ln in admin(d, cmd).splitlines():
                assert ln == ln.rstrip(), f"{cmd}: trailing space in {ln!r}"
    finally:
        held.close()
        waiting.close()
