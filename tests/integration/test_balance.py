"""Several backends per pool: weighted round robin, least connections,
ordered failover (first), backups, and fail_fast. Which backend served a
client is read from the backend's own event log (bytes per connection)."""

import re

from wp import connect_unix, echo_once, recv_exact, recv_until_closed, wait_until

CHECK = {"type": "connect", "interval": "100ms", "fast_interval": "50ms", "down_interval": "100ms",
         "timeout": "200ms", "fall": 2, "rise": 2}
# No active check: every connection a backend sees is one of the pool's.
PASSIVE = {"type": "none", "fall": 2, "rise": 2}


def served(be, payload_len):
    """Connections of `be` that carried one session of payload_len bytes."""
    return sum(1 for c in be.closes() if c.bytes_in == payload_len)


def test_weighted_round_robin_places_and_hands_out_by_weight(start_backend, start_daemon, pool):
    heavy, light = start_backend(), start_backend()
    d = start_daemon(pools={"w": pool("w", [{"address": heavy.addr, "weight": 3},
                                            {"address": light.addr, "weight": 1}],
                                      min_idle=8, max_connections=32)})
    heavy.wait_open(6)  # the floor is spread 3:1
    light.wait_open(2)
    for i in range(40):
        assert echo_once(d.socket_path("w"), b"w%05d" % i) == b"w%05d" % i
    wait_until(lambda: served(heavy, 6) + served(light, 6) == 40, what="40 sessions closed")
    assert (served(heavy, 6), served(light, 6)) == (30, 10)


def test_least_connections_avoids_the_busy_backend(start_backend, start_daemon, pool):
    """One long session holds a backend; every short one then goes to the
    other (round robin would alternate)."""
    a, b = start_backend(), start_backend()
    d = start_daemon(pools={"l": pool("l", [a, b], min_idle=6, max_connections=32,
                                      balance="least_connections")}, daemon={"log_level": "debug"})
    a.wait_open(3)
    b.wait_open(3)
    with connect_unix(d.socket_path("l")) as held:
        held.sendall(b"held!")
        assert recv_exact(held, 5) == b"held!"
        for i in range(4):
            assert echo_once(d.socket_path("l"), b"short%d" % i) == b"short%d" % i
            # Each short session ends in the daemon before the next starts.
            d.wait_log(r"pool=l conn=\d+ client=\d+: session end", count=i + 1)
    wait_until(lambda: served(a, 5) + served(b, 5) == 1, what="the long session closed")
    busy, other = (a, b) if served(a, 5) else (b, a)
    wait_until(lambda: served(other, 6) == 4, what="4 short sessions on the other backend")
    assert served(busy, 6) == 0


def test_first_is_ordered_failover_and_hands_back(start_backend, start_daemon, pool):
    one, two = start_backend(), start_backend()
    d = start_daemon(pools={"f": pool("f", [one, two], min_idle=3, max_connections=16, balance="first",
                                      health_check=PASSIVE)})
    one.wait_open(3)
    assert two.accepts() == []  # nothing goes to the second while the first is usable
    for i in range(5):
        assert echo_once(d.socket_path("f"), b"one%d" % i) == b"one%d" % i
    wait_until(lambda: served(one, 4) == 5, what="5 sessions on the first backend")
    assert served(two, 4) == 0
    one.stop()
    d.wait_log(rf"backend={re.escape(one.addr)}: backend up -> down")
    two.wait_open(3)
    for i in range(5):
        assert echo_once(d.socket_path("f"), b"two%d" % i) == b"two%d" % i
    wait_until(lambda: served(two, 4) == 5, what="5 sessions on the second backend")
    one.restart()
    d.wait_log(rf"backend={re.escape(one.addr)}: backend down -> up")
    one.wait_open(3)
    two.wait_open(0)  # handed back once the first is warm again
    for i in range(5):
        assert echo_once(d.socket_path("f"), b"bck%d" % i) == b"bck%d" % i
    wait_until(lambda: served(one, 4) == 5, what="5 sessions on the first backend again")


def test_backup_only_while_no_primary_is_up(start_backend, start_daemon, pool):
    p1, p2, bk = start_backend(), start_backend(), start_backend()
    d = start_daemon(pools={"b": pool("b", [p1, p2, {"address": bk.addr, "backup": True}],
                                      min_idle=4, max_connections=16, health_check=PASSIVE)})
    p1.wait_open(2)
    p2.wait_open(2)
    assert bk.accepts() == []  # a backup is not warmed while a primary is up
    p1.stop()
    d.wait_log(rf"backend={re.escape(p1.addr)}: backend up -> down")
    for i in range(4):  # one primary left: still no backup
        assert echo_once(d.socket_path("b"), b"p2-%d" % i) == b"p2-%d" % i
    assert bk.accepts() == []
    p2.stop()
    d.wait_log(r"pool=b: no primary backend up, using 1 backup\(s\)")
    bk.wait_open(4)
    for i in range(4):
        assert echo_once(d.socket_path("b"), b"bk-%d" % i) == b"bk-%d" % i
    wait_until(lambda: served(bk, 4) == 4, what="4 sessions on the backup")
    p2.restart()
    d.wait_log(r"pool=b: a primary backend is up again, backups hand back")
    p2.wait_open(4)
    bk.wait_open(0)  # the backup's idle connections are closed once the primary is warm
    for i in range(4):
        assert echo_once(d.socket_path("b"), b"hb-%d" % i) == b"hb-%d" % i
    assert served(bk, 4) == 4  # nothing more went to the backup
    wait_until(lambda: served(p2, 4) == 4, what="sessions back on the primary (its new events file)")


def test_fail_fast_closes_waiting_and_new_clients(start_daemon, pool):
    dead = "127.0.0.1:1"  # nothing listens on port 1
    d = start_daemon(pools={"ff": pool("ff", [dead], min_idle=1, fail_fast=True, queue_timeout="30s",
                                       backoff={"initial": "500ms", "max": "1s", "multiplier": 2.0,
                                                "jitter": 0.1},
                                       health_check={"type": "connect", "interval": "400ms", "fall": 3})})
    with connect_unix(d.socket_path("ff")) as waiting:
        d.wait_log(r"pool=ff: no backend up")
        # It was waiting (the backend was not down yet when it came): closed
        # when the last backend went down, not after queue_timeout.
        assert recv_until_closed(waiting, timeout=10.0) == (b"", "eof")
    if "fail_fast: closing 1 waiting clients" not in d.log():
        # The client arrived after the backend was already down: closed on arrival.
        assert "closing new client (fail_fast)" in d.log(), d.log()
    with connect_unix(d.socket_path("ff")) as late:
        assert recv_until_closed(late, timeout=10.0) == (b"", "eof")
    d.wait_log(r"pool=ff: no backend up, closing new client \(fail_fast\)")


def test_without_fail_fast_a_client_waits_for_the_backend(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"nf": pool("nf", [be], min_idle=1, queue_timeout="20s",
                                       health_check=CHECK)})
    be.wait_open(1)
    be.stop()
    d.wait_log(r"pool=nf: no backend up")
    with connect_unix(d.socket_path("nf")) as c:
        c.sendall(b"later")
        be.restart()
        assert recv_exact(c, 5, timeout=15.0) == b"later"
