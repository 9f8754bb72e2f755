"""Access control on the pools' sockets (`allow:`): a client's SO_PEERCRED
uid, or its primary gid, must be listed; others are closed at accept,
logged (at most one line a second per socket, counting the ones left out)
and counted in clients_denied.

The tests run as root: a module fixture creates two system users (each with
its own group) and one extra group with useradd/groupadd, under names unique
to this run, and removes them at the end. Clients run as those users in a
child python3 (Popen user=, group=, extra_groups=), connecting to sockets of
mode 0666 in a directory everyone may search, so file permissions never
decide: only allow: does. Root itself (this process) is never implicitly
allowed.
"""

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import uuid
from collections import namedtuple

import pytest

from wp import (
    IO_TIMEOUT,
    WARMPOOLD,
    admin_json,
    connect_unix,
    echo_once,
    make_config,
    recv_until_closed,
    wait_until,
    warmpoolctl,
)

USERADD = shutil.which("useradd") or "/usr/sbin/useradd"
USERDEL = shutil.which("userdel") or "/usr/sbin/userdel"
GROUPADD = shutil.which("groupadd") or "/usr/sbin/groupadd"
GROUPDEL = shutil.which("groupdel") or "/usr/sbin/groupdel"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(USERADD) or not os.path.exists(GROUPADD),
    reason="needs root and useradd/groupadd to create the test users",
)

Account = namedtuple("Account", "name uid gid")

# Runs as the test user: connect, then either send the payload and read its
# echo ("echo"), or send nothing and wait for the daemon to close ("eof").
# Prints "DATA <hex>", "EOF <hex>", "RESET <hex>" or "TIMEOUT <hex>".
CLIENT = r"""
import socket, sys
path, mode, payload = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[4]))
s.connect(path)
if mode == "echo":
    s.sendall(payload)
buf = b""
while mode == "eof" or len(buf) < len(payload):
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        print("RESET", buf.hex()); sys.exit(0)
    except socket.timeout:
        print("TIMEOUT", buf.hex()); sys.exit(0)
    if not chunk:
        print("EOF", buf.hex()); sys.exit(0)
    buf += chunk
print("DATA", buf.hex())
"""


def _run(argv):
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def accounts():
    """Two users (alice, bob: each with its own primary group) and a group
    `staff` neither belongs to, all new; removed at the end."""
    tag = uuid.uuid4().hex[:8]
    users = {"alice": f"wpa-{tag}", "bob": f"wpb-{tag}"}
    group = f"wpg-{tag}"
    made_users, made_groups = [], []
    try:
        for name in users.values():
            _run([USERADD, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                  "--shell", "/usr/sbin/nologin", name])
            made_users.append(name)
        _run([GROUPADD, "--system", group])
        made_groups.append(group)
        out = {}
        for key, name in users.items():
            pw = pwd.getpwnam(name)
            out[key] = Account(name, pw.pw_uid, pw.pw_gid)
        gr = grp.getgrnam(group)
        out["staff"] = Account(group, None, gr.gr_gid)
        yield out
    finally:
        for name in made_users:
            subprocess.run([USERDEL, name], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            # the user's own group, when userdel left it (USERGROUPS_ENAB no)
            subprocess.run([GROUPDEL, name], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        for name in made_groups:
            subprocess.run([GROUPDEL, name], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)


@pytest.fixture
def opendir(sockdir):
    """sockdir, searchable by the test users (mkdtemp makes it 0700)."""
    os.chmod(sockdir, 0o755)
    return sockdir


ClientResult = namedtuple("ClientResult", "how data pid")


def as_user(acct, path, mode, payload=b"", group=None, extra_groups=(), timeout=IO_TIMEOUT):
    """Run CLIENT as `acct` (uid, primary gid = `group` or the account's own,
    exactly `extra_groups` as supplementary groups); returns how the session
    ended, the bytes received and the client's pid (the one SO_PEERCRED
    reports)."""
    p = subprocess.Popen(
        [sys.executable, "-I", "-c", CLIENT, str(path), mode, payload.hex(), str(timeout)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        user=acct.uid,
        group=acct.gid if group is None else group,
        extra_groups=list(extra_groups),
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
    )
    try:
        out, err = p.communicate(timeout=timeout + 20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"client as {acct.name} did not finish") from None
    assert p.returncode == 0, f"client as {acct.name} failed ({p.returncode}): {err.decode(errors='replace')}"
    how, _, hexdata = out.decode().strip().partition(" ")
    return ClientResult(how, bytes.fromhex(hexdata), p.pid)


def assert_served(res, payload):
    assert (res.how, res.data) == ("DATA", payload), res


def assert_denied(res):
    assert (res.how, res.data) == ("EOF", b""), res


def root_denied(path):
    """This process (uid 0) connects: closed at once, nothing received."""
    with connect_unix(path) as s:
        assert recv_until_closed(s) == (b"", "eof")


def stats(d, name):
    return admin_json(d, "show stats")["pools"][name]


def denied_metric(d, name):
    """warmpool_pool_clients_denied_total of pool `name`, as warmpoolctl prints it."""
    r = warmpoolctl(d, "show", "metrics")
    assert r.returncode == 0, r.stderr
    m = re.search(rf'^warmpool_pool_clients_denied_total\{{pool="{re.escape(name)}"\}} (\d+)$', r.stdout, re.M)
    assert m, r.stdout
    return int(m.group(1))


def denial_re(pool, path, uid, gid, pid=None):
    return (rf"pool={re.escape(pool)}: {re.escape(str(path))}: client uid={uid} gid={gid} "
            rf"pid={pid if pid is not None else r'[0-9]+'} not allowed, closed")


def listen(path, **extra):
    return {"path": str(path), "mode": "0666", **extra}


def test_allowed_user_is_served_others_are_closed_at_once(start_backend, start_daemon, pool, opendir,
                                                           accounts):
    alice, bob = accounts["alice"], accounts["bob"]
    be = start_backend()
    path = opendir / "acl.sock"
    d = start_daemon(pools={"acl": pool("acl", [be], listen=[listen(path)], allow={"users": [alice.name]})})
    d.wait_log(rf"pool=acl: listening on {re.escape(str(path))} \(mode 0666; allow uids {alice.uid}\)")

    assert_served(as_user(alice, path, "echo", b"hello from alice"), b"hello from alice")

    res = as_user(bob, path, "eof")
    assert_denied(res)
    d.wait_log(denial_re("acl", path, bob.uid, bob.gid, res.pid))
    st = stats(d, "acl")
    assert (st["clients_denied"], st["clients_accepted"], st["clients_served"]) == (1, 1, 1)
    assert denied_metric(d, "acl") == 1

    # root is not allowed because it is root: only a listed uid or gid is.
    root_denied(path)
    wait_until(lambda: stats(d, "acl")["clients_denied"] == 2, what="the second denial counted")
    assert denied_metric(d, "acl") == 2
    # Denied clients never reached the pool: one client accepted and served.
    st = stats(d, "acl")
    assert (st["clients_accepted"], st["clients_served"], st["handouts"]) == (1, 1, 1)
    assert_served(as_user(alice, path, "echo", b"again"), b"again")


def test_allowed_by_primary_group_only(start_backend, start_daemon, pool, opendir, accounts):
    bob, staff = accounts["bob"], accounts["staff"]
    be = start_backend()
    path = opendir / "grp.sock"
    d = start_daemon(pools={"grp": pool("grp", [be], listen=[listen(path)], allow={"groups": [staff.name]})})

    # bob's uid is not listed; with staff as his primary group he is allowed.
    assert_served(as_user(bob, path, "echo", b"by group", group=staff.gid), b"by group")
    # staff only as a supplementary group does not count (SO_PEERCRED has
    # the primary gid only).
    res = as_user(bob, path, "eof", extra_groups=[staff.gid])
    assert_denied(res)
    d.wait_log(denial_re("grp", path, bob.uid, bob.gid, res.pid))
    assert stats(d, "grp")["clients_denied"] == 1
    assert denied_metric(d, "grp") == 1


def test_ids_and_a_listen_items_own_rule(start_backend, start_daemon, pool, opendir, accounts):
    alice, bob, staff = accounts["alice"], accounts["bob"], accounts["staff"]
    be = start_backend()
    shared, own = opendir / "shared.sock", opendir / "own.sock"
    d = start_daemon(pools={"ids": pool(
        "ids", [be],
        listen=[listen(shared), listen(own, allow={"uids": bob.uid})],
        allow={"uids": [alice.uid], "gids": [staff.gid]},
    )})
    # The pool's rule on the first socket: alice (uid) and staff (gid).
    assert_served(as_user(alice, shared, "echo", b"a1"), b"a1")
    assert_served(as_user(bob, shared, "echo", b"b-staff", group=staff.gid), b"b-staff")
    assert_denied(as_user(bob, shared, "eof"))
    # The second socket's own rule replaces the pool's: bob only.
    assert_served(as_user(bob, own, "echo", b"b2"), b"b2")
    assert_denied(as_user(alice, own, "eof"))
    assert_denied(as_user(alice, own, "eof", group=staff.gid))
    root_denied(own)
    wait_until(lambda: stats(d, "ids")["clients_denied"] == 4, what="4 denials counted")
    st = stats(d, "ids")
    assert (st["clients_accepted"], st["clients_served"]) == (3, 3)
    assert denied_metric(d, "ids") == 4


def test_defaults_allow_and_a_pools_own_block(start_backend, start_daemon, pool, opendir, accounts):
    alice = accounts["alice"]
    be = start_backend()
    inherit, owner = opendir / "inherit.sock", opendir / "owner.sock"
    adm = opendir / "admin-def.sock"
    text = make_config(
        {"inherit": pool("inherit", [be], listen=[listen(inherit)]),
         "owner": pool("owner", [be], listen=[listen(owner)], allow={"users": [alice.name]})},
        {"admin_socket": str(adm)},
    )
    text = text.replace("pools:\n", "defaults:\n  allow:\n    uids: [0]\n    gids: [0]\npools:\n", 1)
    d = start_daemon(config_text=text)
    d.admin_path = adm
    # `inherit` takes the defaults' block: root in, alice out.
    assert echo_once(inherit, b"root ok") == b"root ok"
    assert_denied(as_user(alice, inherit, "eof"))
    # `owner`'s own block replaces it as a whole: alice in, root out.
    assert_served(as_user(alice, owner, "echo", b"alice ok"), b"alice ok")
    root_denied(owner)
    wait_until(lambda: stats(d, "owner")["clients_denied"] == 1, what="owner's denial counted")
    assert stats(d, "inherit")["clients_denied"] == 1
    assert (denied_metric(d, "inherit"), denied_metric(d, "owner")) == (1, 1)


def test_without_allow_anyone_who_can_open_the_socket_is_served(start_backend, start_daemon, pool, opendir,
                                                                accounts):
    bob = accounts["bob"]
    be = start_backend()
    path = opendir / "open.sock"
    d = start_daemon(pools={"open": pool("open", [be], listen=[listen(path)])})
    d.wait_log(rf"pool=open: listening on {re.escape(str(path))} \(mode 0666\)$")
    assert_served(as_user(bob, path, "echo", b"anyone"), b"anyone")
    assert echo_once(path, b"root too") == b"root too"
    st = stats(d, "open")
    assert (st["clients_denied"], st["clients_served"]) == (0, 2)
    assert denied_metric(d, "open") == 0


def test_denials_are_logged_at_most_once_a_second_and_all_counted(start_backend, start_daemon, pool, opendir,
                                                                  accounts):
    alice = accounts["alice"]
    be = start_backend()
    path = opendir / "flood.sock"
    d = start_daemon(pools={"flood": pool("flood", [be], listen=[listen(path)], allow={"uids": [alice.uid]})})
    line_re = re.compile(
        denial_re("flood", path, 0, 0) + r"(?: \((\d+) more denied since the last such line\))?$")

    def lines():
        return [m for m in (line_re.search(ln) for ln in d.log().splitlines()) if m]

    def reported(ms):
        """Denials the log lines account for: each line's own, plus the ones it says were left out."""
        return sum(1 + int(m.group(1) or 0) for m in ms)

    burst = 20
    for _ in range(burst):
        root_denied(path)
    wait_until(lambda: stats(d, "flood")["clients_denied"] == burst, what=f"{burst} denials counted")
    first = lines()
    assert 1 <= len(first) < burst, [m.group(0) for m in first]  # 20 lines would take 19 s
    assert reported(first) <= burst

    # Keep being denied until a new line appears: it accounts for every
    # denial the earlier lines left out. (Look before connecting again: the
    # daemon closes the client first and logs after.)
    def new_line():
        if len(lines()) > len(first):
            return True
        root_denied(path)
        return False

    wait_until(new_line, timeout=10.0, interval=0.2, what="a new denial line after the rate window")
    total = stats(d, "flood")["clients_denied"]
    ms = lines()
    assert reported(ms) == total, ([m.group(0) for m in ms], total)
    assert int(ms[-1].group(1) or 0) >= 1 or reported(first) == burst
    assert denied_metric(d, "flood") == total
    assert stats(d, "flood")["clients_accepted"] == 0


def test_reload_applies_a_new_allow_to_the_open_socket(start_backend, start_daemon, pool, opendir, accounts):
    alice, bob = accounts["alice"], accounts["bob"]
    be = start_backend()
    path = opendir / "rl.sock"

    def cfg(user):
        return {"rl": pool("rl", [be], listen=[listen(path)], allow={"users": [user]})}

    d = start_daemon(pools=cfg(alice.name))
    assert_served(as_user(alice, path, "echo", b"before"), b"before")
    assert_denied(as_user(bob, path, "eof"))

    tmp = d.config_path.with_suffix(".tmp")
    tmp.write_text(make_config(cfg(bob.name), {"admin_socket": str(d.admin_path)}))
    os.replace(tmp, d.config_path)
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0, r.stdout + r.stderr

    # The same socket, now with bob's rule.
    assert_served(as_user(bob, path, "echo", b"after"), b"after")
    assert_denied(as_user(alice, path, "eof"))
    assert stats(d, "rl")["clients_denied"] == 2

    # An allow: naming a user that does not exist fails the reload and
    # keeps the running rule.
    tmp.write_text(make_config(cfg("wp-no-such-user-7f3a"), {"admin_socket": str(d.admin_path)}))
    os.replace(tmp, d.config_path)
    r = warmpoolctl(d, "reload")
    assert r.returncode == 1
    assert re.search(rf'^{re.escape(str(d.config_path))}:\d+:\d+: pools\.rl\.allow\.users\[0\]: expected an '
                     r'existing user name, got "wp-no-such-user-7f3a"$', r.stdout, re.M), r.stdout
    assert_served(as_user(bob, path, "echo", b"kept"), b"kept")


def test_check_config_reports_an_unknown_user_with_its_position(tmp_path, accounts):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "pools:\n"
        "  p:\n"
        "    listen: /tmp/wp-acl-never.sock\n"
        "    backends: 127.0.0.1:1\n"
        "    allow:\n"
        f"      users: [{accounts['alice'].name}, wp-no-such-user-7f3a]\n"
        "      groups: []\n"
    )
    r = subprocess.run([str(WARMPOOLD), "--check-config", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert r.stderr.splitlines()[:2] == [
        f'{cfg}:6:{17 + len(accounts["alice"].name)}: pools.p.allow.users[1]: expected an existing user name, '
        f'got "wp-no-such-user-7f3a"',
        f"{cfg}:7:15: pools.p.allow.groups: expected at least one group name, got an empty list",
    ], r.stderr


def test_handoff_socket_without_the_listeners_acl_is_warned_at_start_and_reload(start_backend, start_daemon, pool,
                                                                                  opendir):
    """allow: on a listen item guards that socket only; the handoff socket
    takes the pool's allow:. A pool whose listener has a rule and whose
    handoff socket has none hands warm connections to anyone who can reach
    the handoff file: the daemon says so at start and at each reload, in the
    log and in the reload's answer (review 2.8)."""
    be = start_backend()
    handoff = opendir / "h.handoff"
    cfg = {"h": pool("h", [be], listen=[{"path": str(opendir / "h.sock"), "allow": {"uids": 0}}],
                     handoff={"listen": str(handoff)})}
    d = start_daemon(pools=cfg)
    warning = (rf"warning: .*pools\.h\.handoff: warning: the handoff socket {re.escape(str(handoff))} has no "
               r"allow: while listen\[0\] has one")
    d.wait_log(warning)
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(warning.split("warning: ", 1)[1], r.stdout), r.stdout
    d.wait_log(warning, count=2)

    # With allow: on the pool, the handoff socket is covered: no warning.
    cfg["h"]["allow"] = {"uids": 0}
    tmp = d.config_path.with_suffix(".tmp")
    tmp.write_text(make_config(cfg, {"admin_socket": str(d.admin_path)}))
    os.replace(tmp, d.config_path)
    r = warmpoolctl(d, "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stdout, r.stdout
    assert len([ln for ln in d.log().splitlines() if "has no allow:" in ln]) == 2, d.log()
