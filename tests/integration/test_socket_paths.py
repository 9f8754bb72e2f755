"""Where socket files go, and with which mode (review 2.4).

A socket file is created with its exact mode at bind and never chmod'ed by
path: a reload that changes a mode checks first that the path still names
the very file the daemon bound, so a symlink renamed over the socket does
not lend the daemon's privileges to its target. The directory a socket goes
into must be owned by root or the daemon's euid and writable by neither
group nor others; otherwise whoever owns or may write it can swap the
socket, and the daemon refuses to start, naming the directory, its owner
and its mode. Directories the daemon creates are 0755 whatever its umask.

The tests run as root (the daemon's euid is 0), so "another owner" is uid
65534 (nobody).
"""

import os
import stat

import pytest

from wp import admin, make_config, pool_config

NOBODY = 65534


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_config(d, pools, sockdir):
    d.config_path.write_text(make_config(pools, {"admin_socket": str(d.admin_path)}))


def test_reload_mode_change_never_follows_a_symlink(start_daemon, start_backend, sockdir):
    be = start_backend()
    sock = sockdir / "p.sock"
    victim = sockdir / "victim"  # stands for a root-owned file such as /etc/shadow
    victim.write_bytes(b"secret\n")
    os.chmod(victim, 0o600)

    def pools(mode):
        return {"p": pool_config(sockdir, "p", [be], listen=[{"path": str(sock), "mode": mode}])}

    d = start_daemon(pools=pools("0600"))
    assert mode_of(sock) == 0o600
    # An honest mode change is applied to the socket file itself.
    write_config(d, pools("0640"), sockdir)
    assert "reloaded" in admin(d, "reload")
    assert mode_of(sock) == 0o640

    # The attack: a symlink renamed over the socket, then a reload that
    # widens the mode. chmod(path) would follow it to the victim.
    link = sockdir / "link.tmp"
    os.symlink(victim, link)
    os.rename(link, sock)
    write_config(d, pools("0666"), sockdir)
    answer = admin(d, "reload")
    assert "reloaded" in answer, answer
    assert mode_of(victim) == 0o600, f"the victim's mode became {mode_of(victim):04o}\n{d.log()}"
    assert os.path.islink(sock)
    d.wait_log(rf"pool=p: cannot apply mode 0666: {sock}: is no longer the socket file this process created")


def refused(start_daemon, cfg, pattern, daemon=None):
    """Pool p with cfg must not start: exit status not 0, a log line matching pattern."""
    d = start_daemon(pools={"p": cfg}, daemon=daemon, expect_ready=False)
    rc = d.wait_exit()
    assert rc != 0, d.log()
    d.wait_log(pattern)


@pytest.mark.parametrize("where", ["listen", "admin", "handoff"])
def test_parent_directory_of_another_owner_is_refused(start_daemon, start_backend, sockdir, where):
    be = start_backend()
    other = sockdir / "theirs"
    other.mkdir(mode=0o755)
    os.chown(other, NOBODY, NOBODY)
    os.chmod(other, 0o755)
    cfg = pool_config(sockdir, "p", [be])
    daemon = {"admin_socket": str(sockdir / "admin.sock")}
    if where == "listen":
        cfg["listen"] = str(other / "p.sock")
    elif where == "handoff":
        cfg["handoff"] = {"listen": str(other / "p.handoff")}
    else:
        daemon["admin_socket"] = str(other / "admin.sock")
    refused(start_daemon, cfg, rf"refusing to create a socket in directory '{other}' \(owner uid {NOBODY}, "
            r"mode 0755\): it must be owned by root or uid 0 and not writable by group or others", daemon)
    assert not any(other.iterdir()), list(other.iterdir())


@pytest.mark.parametrize("sub_exists", [True, False])
def test_a_directory_above_owned_by_another_user_is_refused(start_daemon, start_backend, sockdir, sub_exists):
    """The socket's own directory is root's, but the one above is not: its
    owner could rename ours away and put theirs in its place. Also when the
    daemon would create the root-owned directory itself."""
    be = start_backend()
    other = sockdir / "theirs"
    other.mkdir()
    os.chmod(other, 0o755)
    os.chown(other, NOBODY, NOBODY)
    sub = other / "sub"
    if sub_exists:
        sub.mkdir()
        os.chmod(sub, 0o755)
    cfg = pool_config(sockdir, "p", [be], listen=str(sub / "p.sock"))
    refused(start_daemon, cfg, rf"refusing to create a socket below directory '{other}' \(owner uid {NOBODY}, mode 0755\)")
    assert not (sub / "p.sock").exists()


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_parent_directory_writable_by_others_is_refused(start_daemon, start_backend, sockdir, mode):
    be = start_backend()
    shared = sockdir / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    cfg = pool_config(sockdir, "p", [be], listen=str(shared / "p.sock"))
    refused(start_daemon, cfg, rf"refusing to create a socket in directory '{shared}' \(owner uid 0, mode {mode:04o}\)")
    assert not (shared / "p.sock").exists()


def test_created_directories_are_0755_and_sockets_exact_under_umask_0077(start_daemon, start_backend, sockdir):
    be = start_backend()
    top = sockdir / "made"
    sock = top / "sub" / "p.sock"
    adm = sockdir / "adm" / "admin.sock"
    cfg = pool_config(sockdir, "p", [be], listen=[{"path": str(sock), "mode": "0666"}],
                      handoff={"listen": str(top / "sub" / "p.handoff"), "mode": "0660"})
    old = os.umask(0o077)  # inherited by the daemon, as systemd's UMask=0077 would set it
    try:
        d = start_daemon(pools={"p": cfg}, daemon={"admin_socket": str(adm), "admin_socket_mode": "0640"})
    finally:
        os.umask(old)
    for path in (top, top / "sub", adm.parent):
        assert mode_of(path) == 0o755, f"{path}: {mode_of(path):04o}"
    assert mode_of(sock) == 0o666
    assert mode_of(top / "sub" / "p.handoff") == 0o660
    assert mode_of(adm) == 0o640
    assert "reloaded" in admin(d, "reload")  # the daemon is healthy
