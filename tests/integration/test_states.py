"""Backend states that tell the truth and clients that hang up while queued
(issue 18, section 3): a backend nothing has proved yet is `unknown`, not
`up` (show backends, BACKENDS_UP, the state metric); `enable` brings a
backend back through `rise` like any down one, so a dead primary never takes
traffic from a backup; a client that hangs up while waiting is dropped at
once and counted as clients_gone, never served, never timed out."""

import re
import socket

from wp import (
    admin,
    admin_json,
    backend_row,
    connect_unix,
    echo_once,
    pool_row,
    recv_exact,
    stats,
    wait_until,
)

CHECK = {"type": "connect", "interval": "100ms", "fast_interval": "50ms", "down_interval": "100ms",
         "timeout": "200ms", "fall": 2, "rise": 2}
PASSIVE = {"type": "none", "fall": 2, "rise": 2}


def state_metric(d, pool, addr):
    """{state label: value} of warmpool_backend_state for one backend."""
    rx = re.compile(rf'^warmpool_backend_state\{{pool="{re.escape(pool)}",backend="{re.escape(addr)}",'
                    r'state="(\w+)"\} (\d+)$')
    return {m.group(1): int(m.group(2)) for m in map(rx.match, admin(d, "show metrics").splitlines()) if m}


def served(be, payload_len):
    return sum(1 for c in be.closes() if c.bytes_in == payload_len)


# ---------------------------------------------------------------------------
# unknown


def test_an_untried_backend_is_unknown_not_up(start_backend, start_daemon, pool):
    """A backup is not warmed while its primary is up: nothing ever tried it,
    so it is `unknown` everywhere, and BACKENDS_UP counts only the primary
    once one of its connections was established."""
    prim, bk = start_backend(), start_backend()
    d = start_daemon(pools={"u": pool("u", [prim, {"address": bk.addr, "backup": True}], min_idle=2,
                                      health_check=PASSIVE)})
    prim.wait_open(2)
    d.wait_log(rf"pool=u backend={re.escape(prim.addr)}: backend unknown -> up: connected")
    assert bk.accepts() == []
    assert backend_row(d, "u", prim)["state"] == "up"
    assert backend_row(d, "u", bk)["state"] == "unknown"
    assert pool_row(d, "u")["backends_up"] == 1
    rows = [ln.split() for ln in admin(d, "show backends u").splitlines()[1:]]
    assert [r[2] for r in rows if r[1] in (prim.addr, bk.addr)] == ["up", "unknown"]
    assert state_metric(d, "u", bk.addr) == {"unknown": 1, "up": 0, "down": 0, "draining": 0, "disabled": 0}
    assert state_metric(d, "u", prim.addr) == {"unknown": 0, "up": 1, "down": 0, "draining": 0, "disabled": 0}
    # Proving a new backend is no recovery: no transition to up is counted.
    assert re.search(rf'^warmpool_backend_transitions_total\{{pool="u",backend="{re.escape(prim.addr)}",'
                     r'to="up"\} 0$', admin(d, "show metrics"), re.M)


def test_unknown_backends_are_still_tried_and_fail_into_down(start_daemon, pool):
    """An unknown backend is tried (the only way to learn); one that fails
    `fall` times goes unknown -> down and was never counted as up."""
    dead = "127.0.0.1:1"  # nothing listens on port 1
    d = start_daemon(pools={"x": pool("x", [dead], min_idle=1, health_check=PASSIVE)})
    d.wait_log(r"pool=x backend=127\.0\.0\.1:1: backend unknown -> down")
    assert pool_row(d, "x")["backends_up"] == 0
    row = admin_json(d, "show backends x")["backends"][0]
    assert row["state"] == "down" and row["last_error"] == "connect failed: connection refused", row
    assert ": backend up ->" not in d.log() and " -> up:" not in d.log()


# ---------------------------------------------------------------------------
# enable goes through rise


def test_enable_does_not_take_traffic_from_the_backup_until_rise(start_backend, start_daemon, pool):
    """A disabled primary whose server is dead: `enable` answers `down`, the
    backup keeps every client, and the primary takes over only once `rise`
    checks passed after its server came back."""
    prim, bk = start_backend(), start_backend()
    d = start_daemon(pools={"e": pool("e", [prim, {"address": bk.addr, "backup": True}], min_idle=2,
                                      health_check=CHECK)})
    prim.wait_open(2)
    wait_until(lambda: backend_row(d, "e", prim)["state"] == "up", what="the primary proven up")
    assert admin(d, f"disable e/{prim.addr}") == f"e/{prim.addr}: disabled\n"
    d.wait_log(r"pool=e: no primary backend up, using 1 backup\(s\)")
    bk.wait_open(2)
    prim.stop()
    assert admin(d, f"enable e/{prim.addr}") == f"e/{prim.addr}: down\n"
    row = backend_row(d, "e", prim)
    assert (row["state"], row["consecutive_failures"]) == ("down", 0), row
    # Its checks resume and fail; meanwhile every client is served by the backup.
    d.wait_log(rf"pool=e backend={re.escape(prim.addr)}: check failed")
    for i in range(5):
        assert echo_once(d.socket_path("e"), b"bk-%d" % i) == b"bk-%d" % i
    wait_until(lambda: served(bk, 4) == 5, what="5 sessions on the backup")
    assert "a primary backend is up again" not in d.log()
    assert backend_row(d, "e", prim)["state"] == "down"
    # Its server back: up after `rise` passed checks, and the backup hands back.
    prim.restart()
    d.wait_log(rf"pool=e backend={re.escape(prim.addr)}: backend down -> up: check passed \(2 in a row\)")
    d.wait_log(r"pool=e: a primary backend is up again, backups hand back")
    prim.wait_open(2)
    bk.wait_open(0)


def test_enable_without_checks_comes_back_through_proven_connections(start_backend, start_daemon, pool):
    """No active check: after `enable`, the pool's own probes prove the
    backend `rise` times before it is up again."""
    be = start_backend()
    d = start_daemon(pools={"n": pool("n", [be], min_idle=1, health_check=PASSIVE)})
    be.wait_open(1)
    assert admin(d, f"drain n/{be.addr}") == f"n/{be.addr}: draining\n"
    be.wait_open(0)
    assert admin(d, f"enable n/{be.addr}") == f"n/{be.addr}: down\n"
    d.wait_log(rf"pool=n backend={re.escape(be.addr)}: backend draining -> down: enabled by admin")
    d.wait_log(rf"pool=n backend={re.escape(be.addr)}: backend down -> up: connection proven \(2 in a row\)")
    assert echo_once(d.socket_path("n"), b"back") == b"back"
    # enable on a backend already in service changes nothing.
    assert admin(d, f"enable n/{be.addr}") == f"n/{be.addr}: up\n"


# ---------------------------------------------------------------------------
# clients that hang up while queued


def test_a_queued_client_that_hangs_up_is_dropped_and_counted_gone(start_backend, start_daemon, pool):
    """max_connections 1, held by a session: the next client queues, hangs
    up, and is dropped at once (clients_gone 1, WAITING 0). When the
    connection frees up nothing is spent on it: no handout, no served, no
    timeout."""
    be = start_backend()
    d = start_daemon(pools={"g": pool("g", [be], min_idle=1, max_connections=1, queue_timeout="30s")})
    be.wait_open(1)
    path = d.socket_path("g")
    with connect_unix(path) as first:
        first.sendall(b"first")
        assert recv_exact(first, 5) == b"first"
        gone = connect_unix(path)
        wait_until(lambda: pool_row(d, "g")["waiting"] == 1, what="one waiting client")
        gone.close()
        wait_until(lambda: stats(d, "g")["clients_gone"] == 1, what="clients_gone 1")
        assert pool_row(d, "g")["waiting"] == 0
        d.wait_log(r"pool=g client=\d+: client hung up after waiting [0-9.]+s, dropped from the queue")
    # The first session's connection closed and replaced (as the backend logged them).
    wait_until(lambda: len(be.closes()) == 1 and len(be.accepts()) == 2 and pool_row(d, "g")["idle"] == 1,
               what="the first connection replaced, the floor back")
    st = stats(d, "g")
    assert (st["clients_accepted"], st["clients_served"], st["handouts"]) == (2, 1, 1), st
    assert (st["clients_timed_out"], st["clients_gone"]) == (0, 1), st
    assert len(be.accepts()) == 2  # the first connection and its replacement: none for the gone client
    fams = admin(d, "show metrics")
    assert 'warmpool_pool_clients_gone_total{pool="g"} 1' in fams.splitlines()


def test_a_queued_client_that_spoke_first_is_not_gone(start_backend, start_daemon, pool):
    """Bytes sent before the connection came are a request, not a hang-up:
    the client stays queued (the daemon does not spin on its readable
    socket) and is served; one that sends and closes at once still has its
    request delivered."""
    be = start_backend()
    d = start_daemon(pools={"s": pool("s", [be], min_idle=1, max_connections=1, queue_timeout="30s")})
    be.wait_open(1)
    path = d.socket_path("s")
    first = connect_unix(path)
    first.sendall(b"x")
    assert recv_exact(first, 1) == b"x"
    early = connect_unix(path)
    early.sendall(b"early")
    wait_until(lambda: pool_row(d, "s")["waiting"] == 1, what="one waiting client")
    fire = connect_unix(path)
    fire.sendall(b"fire-and-forget")
    fire.shutdown(socket.SHUT_WR)
    fire.close()
    wait_until(lambda: pool_row(d, "s")["waiting"] == 2, what="two waiting clients")
    first.close()
    assert recv_exact(early, 5, timeout=10) == b"early"
    early.close()
    wait_until(lambda: served(be, len(b"fire-and-forget")) == 1, what="the request of the closed client delivered")
    st = stats(d, "s")
    assert (st["clients_served"], st["clients_gone"], st["clients_timed_out"]) == (3, 0, 0), st
