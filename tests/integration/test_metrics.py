"""Prometheus metrics: the whole `show metrics` text parsed by a small parser
of the text exposition format 0.0.4 written here, every family the issue
lists checked for its TYPE, labels and naming, histograms checked for their
shape, and values compared with what the backends saw after known traffic;
then the HTTP endpoint (daemon.metrics_listen): GET /metrics, 404, 405,
431, HEAD, 400."""

import math
import re
import select
import shutil
import socket
import subprocess
import time

import pytest

from wp import (
    IO_TIMEOUT,
    SLOW,
    admin,
    admin_json,
    connect_unix,
    echo_once,
    free_port,
    recv_until_closed,
    wait_until,
    warmpoolctl,
)

# ---------------------------------------------------------------------------
# a parser for the text format 0.0.4

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE_RE = re.compile(rf"^({METRIC_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
LABEL_RE = re.compile(rf'[ \t]*({LABEL_NAME})[ \t]*=[ \t]*"((?:[^"\\\n]|\\[\\"n])*)"[ \t]*(,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, f"bad label set at {text[pos:]!r}"
        name, value = m.group(1), unescape(m.group(2))
        assert name not in labels, f"label {name} twice in {{{text}}}"
        labels[name] = value
        pos = m.end()
        if m.group(3) == "":
            assert pos == len(text), text
    return labels


def parse_value(v):
    if v in ("+Inf", "Inf"):
        return math.inf
    if v == "-Inf":
        return -math.inf
    if v == "NaN":
        return math.nan
    assert re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", v), f"bad value {v!r}"
    return float(v)


class Family:
    def __init__(self, name):
        self.name = name
        self.type = None
        self.help = None
        self.samples = []  # (sample name, labels dict, value)

    def series(self, suffix="", **match):
        """Samples of name+suffix whose labels include `match`."""
        return [(lb, v) for n, lb, v in self.samples
                if n == self.name + suffix and all(lb.get(k) == str(x) for k, x in match.items())]

    def value(self, suffix="", **match):
        got = self.series(suffix, **match)
        assert len(got) == 1, f"{self.name}{suffix} {match}: {len(got)} samples: {got}"
        return got[0][1]


def family_of(sample, families, current):
    """The family a sample name belongs to (the current one, by the format's rules)."""
    if current is not None:
        f = families[current]
        if f.type == "histogram":
            if sample in (current + "_bucket", current + "_sum", current + "_count"):
                return current
        elif f.type == "summary":
            if sample in (current, current + "_sum", current + "_count"):
                return current
        elif sample == current:
            return current
    return None


def parse_metrics(text):
    """{family name: Family}. Asserts the format's rules: lines end in \\n,
    at most one HELP and TYPE per family, TYPE before the family's samples,
    a family's samples together, no series twice."""
    assert text.endswith("\n"), text[-100:]
    families = {}
    order = []
    current = None
    seen = set()
    closed = set()  # families whose block has ended
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {lineno}: {line!r}"
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(METRIC_NAME, name), where
                if name not in families:
                    assert name not in closed, f"{where}: family {name} appears in two blocks"
                    families[name] = Family(name)
                    order.append(name)
                    if current and current != name:
                        closed.add(current)
                f = families[name]
                if parts[1] == "HELP":
                    assert f.help is None, f"{where}: second HELP"
                    f.help = parts[3] if len(parts) > 3 else ""
                else:
                    assert f.type is None, f"{where}: second TYPE"
                    assert not f.samples, f"{where}: TYPE after samples"
                    assert len(parts) == 4 and parts[3] in TYPES, where
                    f.type = parts[3]
                current = name
            continue  # other comments are allowed
        assert line.strip(), f"{where}: empty line"
        m = SAMPLE_RE.match(line)
        assert m, f"{where}: not a sample"
        name, labels_text, value = m.group(1), m.group(2), m.group(3)
        labels = parse_labels(labels_text) if labels_text else {}
        fam = family_of(name, families, current)
        assert fam is not None, f"{where}: sample outside its family's block (current {current})"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"{where}: series twice"
        seen.add(key)
        families[fam].samples.append((name, labels, parse_value(value)))
    return families


def scrape(d):
    text = admin(d, "show metrics")
    assert not text.startswith("error"), text
    return parse_metrics(text)


# ---------------------------------------------------------------------------
# what the issue lists (section 2), with each family's type and labels

POOL, BACKEND = ("pool",), ("pool", "backend")
EXPECTED = {
    # per pool
    "warmpool_pool_idle_connections": ("gauge", POOL),
    "warmpool_pool_active_connections": ("gauge", POOL),
    "warmpool_pool_connecting_connections": ("gauge", POOL),
    "warmpool_pool_waiting_clients": ("gauge", POOL),
    "warmpool_pool_clients_served_total": ("counter", POOL),
    "warmpool_pool_clients_refused_total": ("counter", POOL),
    "warmpool_pool_clients_timed_out_total": ("counter", POOL),
    "warmpool_pool_clients_gone_total": ("counter", POOL),
    "warmpool_pool_handouts_total": ("counter", POOL),
    "warmpool_pool_stale_discarded_total": ("counter", POOL),
    "warmpool_pool_connections_opened_total": ("counter", POOL),
    "warmpool_pool_connections_failed_total": ("counter", POOL),
    "warmpool_pool_connections_recycled_total": ("counter", POOL),
    "warmpool_pool_relayed_bytes_total": ("counter", POOL + ("direction",)),
    # per backend
    "warmpool_backend_up": ("gauge", BACKEND),
    "warmpool_backend_state": ("gauge", BACKEND + ("state",)),
    "warmpool_backend_consecutive_failures": ("gauge", BACKEND),
    "warmpool_backend_backoff_seconds": ("gauge", BACKEND),
    "warmpool_backend_next_attempt_timestamp_seconds": ("gauge", BACKEND),
    "warmpool_backend_checks_total": ("counter", BACKEND + ("result",)),
    # histograms
    "warmpool_pool_client_wait_seconds": ("histogram", POOL),
    "warmpool_pool_backend_connect_seconds": ("histogram", POOL),
    "warmpool_pool_session_duration_seconds": ("histogram", POOL),
}
STATES = {"unknown", "up", "down", "draining", "disabled"}  # unknown: not proven yet (issue 18)
RESULTS = {"ok", "refused", "timeout", "reset", "closed", "unreachable", "bad_reply", "tls", "error"}


def check_conventions(fams):
    for name, f in fams.items():
        assert name.startswith("warmpool_"), name
        assert f.type is not None and f.help, f"{name}: TYPE and HELP"
        assert f.samples, f"{name}: no samples"
        if f.type == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
        else:
            assert not name.endswith("_total"), f"{f.type} {name} should not end in _total"
        for _, _, v in f.samples:
            assert not math.isnan(v), name
            if f.type in ("counter", "histogram"):
                assert v >= 0, name
        if f.type == "histogram":
            check_histogram(f)


def check_histogram(f):
    by_series = {}
    for n, lb, v in f.samples:
        key = tuple(sorted((k, x) for k, x in lb.items() if k != "le"))
        by_series.setdefault(key, {"bucket": [], "sum": None, "count": None})
        suffix = n[len(f.name) + 1:]
        if suffix == "bucket":
            by_series[key]["bucket"].append((parse_value(lb["le"]), v))
        else:
            assert "le" not in lb, (n, lb)
            by_series[key][suffix] = v
    assert by_series, f.name
    for key, s in by_series.items():
        les = [le for le, _ in s["bucket"]]
        assert len(les) >= 2, (f.name, key)
        assert les == sorted(les) and len(set(les)) == len(les), f"{f.name}{key}: le not increasing: {les}"
        assert les[-1] == math.inf, f"{f.name}{key}: no +Inf bucket"
        counts = [c for _, c in s["bucket"]]
        assert all(a <= b for a, b in zip(counts, counts[1:])), f"{f.name}{key}: buckets not cumulative {counts}"
        assert s["count"] is not None and s["sum"] is not None, f"{f.name}{key}: _sum/_count missing"
        assert counts[-1] == s["count"], f"{f.name}{key}: +Inf bucket {counts[-1]} != _count {s['count']}"
        assert s["count"] == int(s["count"])
        if s["count"] == 0:
            assert s["sum"] == 0


def check_expected(fams, pools):
    """pools: {pool name: [backend names]}"""
    for name, (typ, labels) in EXPECTED.items():
        assert name in fams, f"family {name} missing"
        f = fams[name]
        assert f.type == typ, f"{name}: TYPE {f.type}, expected {typ}"
        per_backend = labels[:2] == BACKEND
        extra = labels[2:] if per_backend else labels[1:]
        for n, lb, _ in f.samples:
            keys = set(lb) - ({"le"} if n.endswith("_bucket") else set())
            assert keys == set(labels), f"{n}: labels {sorted(lb)}, expected {labels}"
        # Every pool (or backend) has its series.
        want = {(p,) for p in pools} if not per_backend else {(p, b) for p, bs in pools.items() for b in bs}
        have = {(lb["pool"],) if not per_backend else (lb["pool"], lb["backend"]) for _, lb, _ in f.samples}
        assert have == want, f"{name}: series for {sorted(have)}, expected {sorted(want)}"
        if extra == ("state",):
            for key in want:
                assert {lb["state"] for _, lb, _ in f.samples if (lb["pool"], lb["backend"]) == key} == STATES
                # exactly one state is 1
                assert sum(v for _, lb, v in f.samples if (lb["pool"], lb["backend"]) == key) == 1
        if extra == ("result",):
            for key in want:
                assert {lb["result"] for _, lb, _ in f.samples if (lb["pool"], lb["backend"]) == key} == RESULTS
        if extra == ("direction",):
            assert {lb["direction"] for _, lb, _ in f.samples} == {"to_backend", "to_client"}


def session_ends(d, pool):
    return scrape(d)["warmpool_pool_session_duration_seconds"].value("_count", pool=pool)


CHECK = {"type": "connect", "interval": "100ms", "fast_interval": "50ms", "down_interval": "100ms",
         "timeout": "300ms", "fall": 2, "rise": 2}


def test_every_family_parsed_and_values_match_traffic(start_backend, start_daemon, pool):
    be, hb = start_backend(), start_backend()
    d = start_daemon(pools={"m": pool("m", [be], min_idle=2),
                            "hc": pool("hc", [hb], min_idle=1, health_check=CHECK)})
    be.wait_open(2)
    hb.wait_open(1)
    pools = {"m": [be.addr], "hc": [hb.addr]}

    text = admin(d, "show metrics")
    fams = parse_metrics(text)
    check_conventions(fams)
    check_expected(fams, pools)

    for i in range(5):
        assert echo_once(d.socket_path("m"), b"metric-%03d" % i) == b"metric-%03d" % i
    wait_until(lambda: session_ends(d, "m") == 5, what="5 sessions ended (session_duration_seconds_count)")
    wait_until(lambda: len([c for c in be.closes() if c.bytes_in == 10]) == 5, what="5 closes at the backend")

    def floor_again():
        f = scrape(d)
        return (f["warmpool_pool_idle_connections"].value(pool="m") == 2
                and f["warmpool_pool_connecting_connections"].value(pool="m") == 0)

    wait_until(floor_again, what="the pool refilled to its floor")
    be.wait_open(2)
    fams = scrape(d)
    check_conventions(fams)
    check_expected(fams, pools)

    def v(name, suffix="", **kw):  # of the latest scrape
        return fams[name].value(suffix, **kw)

    assert v("warmpool_pool_clients_served_total", pool="m") == 5
    assert v("warmpool_pool_clients_accepted_total", pool="m") == 5
    assert v("warmpool_pool_handouts_total", pool="m") == 5
    assert v("warmpool_pool_relayed_bytes_total", pool="m", direction="to_backend") == 50
    assert v("warmpool_pool_relayed_bytes_total", pool="m", direction="to_client") == 50
    assert v("warmpool_pool_session_duration_seconds", "_count", pool="m") == 5
    assert v("warmpool_pool_client_wait_seconds", "_count", pool="m") == 5
    assert 0 < v("warmpool_pool_session_duration_seconds", "_sum", pool="m") < 60
    assert v("warmpool_pool_idle_connections", pool="m") == 2 == v("warmpool_pool_min_idle", pool="m")
    assert v("warmpool_pool_active_connections", pool="m") == 0
    assert v("warmpool_pool_waiting_clients", pool="m") == 0
    for name in ("clients_refused", "clients_timed_out", "stale_discarded", "connections_failed",
                 "connections_recycled"):
        assert v(f"warmpool_pool_{name}_total", pool="m") == 0, name
    # Each session's connection is closed after it and replaced: 2 + 5, as the backend saw.
    opened = len(be.accepts())
    assert opened == 7
    assert v("warmpool_pool_connections_opened_total", pool="m") == opened
    assert v("warmpool_pool_backend_connect_seconds", "_count", pool="m") == opened
    assert v("warmpool_backend_connections", pool="m", backend=be.addr, state="idle") == 2
    assert v("warmpool_backend_up", pool="m", backend=be.addr) == 1
    assert v("warmpool_backend_state", pool="m", backend=be.addr, state="up") == 1
    assert v("warmpool_backend_consecutive_failures", pool="m", backend=be.addr) == 0
    assert v("warmpool_backend_backoff_seconds", pool="m", backend=be.addr) == 0
    assert v("warmpool_backend_next_attempt_timestamp_seconds", pool="m", backend=be.addr) == 0
    assert v("warmpool_pool_clients_served_total", pool="hc") == 0
    # The wait of a warm handout is small: all 5 in the 2.5 s bucket.
    assert v("warmpool_pool_client_wait_seconds", "_bucket", pool="m", le="2.5") == 5
    # The same numbers as `show stats`.
    st = admin_json(d, "show stats")["pools"]["m"]
    assert (st["clients_served"], st["bytes_to_backend"], st["connections_opened"]) == (5, 50, opened)

    # Health checks of the checked pool: passes counted, no failures yet.
    wait_until(lambda: scrape(d)["warmpool_backend_checks_total"].value(pool="hc", backend=hb.addr,
                                                                         result="ok") >= 3,
               what="3 passed checks")
    fams = scrape(d)
    for r in RESULTS - {"ok"}:
        assert fams["warmpool_backend_checks_total"].value(pool="hc", backend=hb.addr, result=r) == 0, r
    # The passive pool makes no checks.
    assert sum(x for _, x in fams["warmpool_backend_checks_total"].series(pool="m")) == 0

    # Both backends stop: both go down.
    be.stop()
    hb.stop()
    d.wait_log(rf"pool=m backend={re.escape(be.addr)}: backend up -> down")
    d.wait_log(rf"pool=hc backend={re.escape(hb.addr)}: backend up -> down")
    fams = scrape(d)
    check_conventions(fams)
    check_expected(fams, pools)
    now = time.time()
    for p, b in (("m", be), ("hc", hb)):
        assert v("warmpool_backend_up", pool=p, backend=b.addr) == 0
        assert v("warmpool_backend_state", pool=p, backend=b.addr, state="down") == 1
        assert v("warmpool_backend_state", pool=p, backend=b.addr, state="up") == 0
        assert v("warmpool_backend_transitions_total", pool=p, backend=b.addr, to="down") == 1
        assert v("warmpool_backend_consecutive_failures", pool=p, backend=b.addr) >= 2
    assert v("warmpool_pool_connections_failed_total", pool="m") >= 3
    assert v("warmpool_backend_connect_failures_total", pool="m", backend=be.addr) >= 3
    assert v("warmpool_backend_backoff_seconds", pool="m", backend=be.addr) > 0
    nxt = v("warmpool_backend_next_attempt_timestamp_seconds", pool="m", backend=be.addr)
    assert now - 60 < nxt < now + 60, (nxt, now)
    # The checked pool: its failed checks counted as refused, at least `fall` of them.
    assert v("warmpool_backend_checks_total", pool="hc", backend=hb.addr, result="refused") >= 2
    ok_then = v("warmpool_backend_checks_total", pool="hc", backend=hb.addr, result="ok")
    assert ok_then >= 3
    js = {b["backend"]: b for b in admin_json(d, "show backends hc")["backends"]}
    assert js[hb.addr]["checks_ok"] == ok_then  # nothing passes while it is stopped
    assert js[hb.addr]["state"] == "down"


def test_backend_connects_total_counts_every_established_connection(start_backend, start_daemon, pool):
    """warmpool_backend_connects_total ("Connections established.") agrees
    with the backend's accepts and the pool's connections_opened_total, also
    for connections handed to a client within their first 200 ms."""
    be = start_backend()
    d = start_daemon(pools={"c": pool("c", [be], min_idle=2)})
    be.wait_open(2)
    for i in range(5):
        assert echo_once(d.socket_path("c"), b"conn-%03d" % i) == b"conn-%03d" % i
    wait_until(lambda: session_ends(d, "c") == 5, what="5 sessions ended")
    wait_until(lambda: len([c for c in be.closes() if c.bytes_in == 8]) == 5, what="5 closes at the backend")
    be.wait_open(2)
    opened = len(be.accepts())
    assert opened == 7
    got = []

    def agree():
        f = scrape(d)
        got.append((f["warmpool_backend_connects_total"].value(pool="c", backend=be.addr),
                     f["warmpool_pool_connections_opened_total"].value(pool="c")))
        return got[-1] == (opened, opened)

    try:
        wait_until(agree, timeout=3.0, what="the counts to agree")
    except AssertionError:
        pass
    assert got[-1] == (opened, opened), (
        f"(warmpool_backend_connects_total, warmpool_pool_connections_opened_total) = {got[-1]}; "
        f"the backend accepted {opened}")


def test_timed_out_and_refused_clients_are_counted(start_daemon, pool):
    dead = "127.0.0.1:1"  # nothing listens on port 1
    # The refused client must come while the first one still waits: room for
    # a scrape and a connect on a busy machine (valgrind: 1.5 s).
    d = start_daemon(pools={"t": pool("t", [dead], min_idle=1, queue_timeout=f"{int(300 * SLOW)}ms",
                                      max_clients=1)})
    with connect_unix(d.socket_path("t")) as waiting:
        wait_until(lambda: scrape(d)["warmpool_pool_waiting_clients"].value(pool="t") == 1,
                   what="one waiting client")
        # max_clients 1: the next one is refused at once.
        with connect_unix(d.socket_path("t")) as refused:
            assert recv_until_closed(refused) == (b"", "eof")
        assert recv_until_closed(waiting)[0] == b""
    wait_until(lambda: scrape(d)["warmpool_pool_clients_timed_out_total"].value(pool="t") == 1,
               what="clients_timed_out_total 1")
    fams = scrape(d)
    check_conventions(fams)
    check_expected(fams, {"t": [dead]})
    assert fams["warmpool_pool_clients_refused_total"].value(pool="t") == 1
    assert fams["warmpool_pool_clients_accepted_total"].value(pool="t") == 2
    assert fams["warmpool_pool_clients_served_total"].value(pool="t") == 0
    assert fams["warmpool_pool_waiting_clients"].value(pool="t") == 0
    assert fams["warmpool_pool_client_wait_seconds"].value("_count", pool="t") == 0
    assert fams["warmpool_pool_connections_failed_total"].value(pool="t") >= 1
    assert fams["warmpool_pool_connections_opened_total"].value(pool="t") == 0


def test_admin_states_in_metrics(start_backend, start_daemon, pool):
    a, b = start_backend(), start_backend()
    d = start_daemon(pools={"s": pool("s", [a, b], min_idle=2)})
    a.wait_open(1)
    b.wait_open(1)
    assert admin(d, f"drain s/{a.addr}") == f"s/{a.addr}: draining\n"
    assert admin(d, f"disable s/{b.addr}") == f"s/{b.addr}: disabled\n"
    fams = scrape(d)
    st = fams["warmpool_backend_state"]
    assert {lb["state"]: v for lb, v in st.series(pool="s", backend=a.addr)} == {
        "unknown": 0, "up": 0, "down": 0, "draining": 1, "disabled": 0}
    assert {lb["state"]: v for lb, v in st.series(pool="s", backend=b.addr)} == {
        "unknown": 0, "up": 0, "down": 0, "draining": 0, "disabled": 1}
    assert fams["warmpool_backend_up"].value(pool="s", backend=a.addr) == 0
    a.wait_open(0)
    b.wait_open(0)
    assert scrape(d)["warmpool_pool_idle_connections"].value(pool="s") == 0


def test_reload_counter(start_backend, start_daemon, pool):
    be = start_backend()
    d = start_daemon(pools={"r": pool("r", [be], min_idle=1)})
    fams = scrape(d)
    assert fams["warmpool_reloads_total"].type == "counter"
    assert fams["warmpool_reloads_total"].value(result="ok") == 0
    assert admin(d, "reload").startswith("reloaded ")
    good = d.config_path.read_text()
    d.config_path.write_text("pools: [\n")
    assert admin(d, "reload").startswith("error: reload failed")
    d.config_path.write_text(good)
    fams = scrape(d)
    assert fams["warmpool_reloads_total"].value(result="ok") == 1
    assert fams["warmpool_reloads_total"].value(result="failed") == 1
    assert fams["warmpool_build_info"].type == "gauge"
    assert admin(d, "version").split()[1] == fams["warmpool_build_info"].samples[0][1]["version"]
    assert abs(fams["warmpool_start_time_seconds"].value() - time.time()) < 3600


def test_backend_label_is_the_name_as_configured(start_backend, start_daemon, pool):
    """A backend given by host name is labelled with that name, and a pool
    name with . and - is a valid label value."""
    be = start_backend()
    name = f"localhost:{be.port}"
    d = start_daemon(pools={"e.x-1": pool("e.x-1", [name], min_idle=1)})
    be.wait_open(1)
    fams = scrape(d)
    assert fams["warmpool_backend_up"].value(pool="e.x-1", backend=name) in (0, 1)


def test_promtool_check_metrics(start_backend, start_daemon, pool):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian: prometheus package); the text format is checked "
                    "by this file's own parser")
    be = start_backend()
    d = start_daemon(pools={"p": pool("p", [be], min_idle=2)})
    be.wait_open(2)
    assert echo_once(d.socket_path("p"), b"x" * 10) == b"x" * 10
    text = admin(d, "show metrics")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# the HTTP endpoint


def http(port, request, timeout=IO_TIMEOUT):
    """Send raw bytes; read until the server closes. Returns (status code,
    headers {lower name: value}, body bytes, raw bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        raw, _how = recv_until_closed(s, timeout)
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of headers in {raw[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .+", lines[0])
    assert m, lines[0]
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, body, raw


def metrics_daemon(start_backend, start_daemon, pool):
    be = start_backend()
    port = free_port()
    d = start_daemon(pools={"h": pool("h", [be], min_idle=2)}, daemon={"metrics_listen": f"127.0.0.1:{port}"})
    be.wait_open(2)
    d.wait_log(rf"metrics endpoint: listening on http://127\.0\.0\.1:{port}/metrics")
    wait_until(lambda: scrape(d)["warmpool_pool_idle_connections"].value(pool="h") == 2, what="2 idle")
    return d, be, port


def test_http_get_metrics(start_backend, start_daemon, pool):
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    code, headers, body, _ = http(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
    assert code == 200
    assert headers["content-type"].split(";")[0] == "text/plain"
    assert "version=0.0.4" in [p.strip() for p in headers["content-type"].split(";")], headers
    assert int(headers["content-length"]) == len(body)
    fams = parse_metrics(body.decode())
    check_conventions(fams)
    check_expected(fams, {"h": [be.addr]})
    over_admin = scrape(d)
    assert {n: f.type for n, f in fams.items()} == {n: f.type for n, f in over_admin.items()}
    assert fams["warmpool_pool_idle_connections"].value(pool="h") == 2
    # A query string is allowed; HTTP/1.0 too; the request may come in pieces.
    assert http(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")[0] == 200
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHo")
        time.sleep(0.1)
        s.sendall(b"st: x\r\n")
        time.sleep(0.1)
        s.sendall(b"\r\n")
        raw, _ = recv_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:200]


def test_http_errors(start_backend, start_daemon, pool):
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    code, headers, body, _ = http(port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 404 and body == b"404 Not Found\n" and int(headers["content-length"]) == len(body)
    assert http(port, b"GET / HTTP/1.1\r\n\r\n")[0] == 404
    assert http(port, b"GET /metricsx HTTP/1.1\r\n\r\n")[0] == 404
    code, _, body, _ = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert code == 405 and body == b"405 Method Not Allowed\n"
    assert http(port, b"DELETE /metrics HTTP/1.1\r\n\r\n")[0] == 405
    assert http(port, b"hello\r\n\r\n")[0] == 400
    # An oversized request head: more than 4 KiB and no blank line.
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 5000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = recv_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:200]
    # Still serving after all of that.
    assert http(port, b"GET /metrics HTTP/1.1\r\n\r\n")[0] == 200
    assert d.proc.poll() is None
    assert echo_once(d.socket_path("h"), b"alive") == b"alive"


def test_http_head(start_backend, start_daemon, pool):
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    code, headers, body, _ = http(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 200 and body == b"", body[:100]
    assert "version=0.0.4" in headers["content-type"]
    assert int(headers["content-length"]) > 1000  # the length the GET body would have


# ---------------------------------------------------------------------------
# the endpoint under attack (a peer that trickles or floods): it has its own budget of
# connections, a deadline for the whole request, and a bounded log


HTTP_CONNS = 16  # CTL_CONNS_HTTP in daemon/admin.c
HTTP_DEADLINE = 10.0  # CTL_HTTP_DEADLINE in daemon/admin.c: accept to answer, however the request trickles
TRICKLERS = 40  # more than the 32 control connections all listeners used to share
TRICKLE_EVERY = 0.5  # seconds between two bytes of a trickling client
REFUSED_RE = r"metrics endpoint \S+: too many connections, (?:closing a new connection|closed (\d+) more)"


def open_tricklers(port, n):
    """n connections that each start a request head and never finish it."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        socks.append(s)
    return socks


def trickle(socks):
    """One more header byte on each connection (errors ignored: the daemon
    may have refused or closed some)."""
    for s in socks:
        try:
            s.send(b"x", socket.MSG_DONTWAIT)
        except OSError:
            pass


def refused_counts(d):
    """How many refusals the daemon's "too many connections" lines account
    for, and how many such lines there are."""
    total = lines = 0
    for ln in d.log().splitlines():
        m = re.search(REFUSED_RE, ln)
        if m:
            lines += 1
            total += int(m.group(1)) if m.group(1) else 1
    return total, lines


def test_trickling_metrics_clients_do_not_lock_out_the_operator(start_backend, start_daemon, pool):
    """40 connections to the metrics port, each sending a byte every half
    second: the endpoint keeps them within its own budget, and the admin
    socket answers warmpoolctl all the while."""
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    socks = open_tricklers(port, TRICKLERS)
    try:
        d.wait_log(REFUSED_RE)  # the endpoint's budget is full: the rest were refused
        for _ in range(6):  # 3 s of trickling
            trickle(socks)
            r = warmpoolctl(d, "show", "pools")
            assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
            assert r.stdout.splitlines()[1].split()[0] == "h", r.stdout
            time.sleep(TRICKLE_EVERY)
        assert admin(d, "version").startswith("warmpoold ")
    finally:
        for s in socks:
            s.close()

    def served():
        try:  # refused while the daemon has not yet seen the crowd leave
            return http(port, b"GET /metrics HTTP/1.1\r\n\r\n")[0] == 200
        except (AssertionError, OSError):
            return False

    wait_until(served, what="the endpoint serving again after the crowd left")


def test_trickled_request_is_closed_at_its_deadline(start_backend, start_daemon, pool):
    """A request head that keeps coming, a byte every half second, is cut
    off HTTP_DEADLINE after accept (the bytes do not push the deadline back),
    with a 408 when the daemon gets it out."""
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    t0 = time.monotonic()
    [s] = open_tricklers(port, 1)
    got = None
    with s:
        while got is None and time.monotonic() - t0 < HTTP_DEADLINE + 4.0:
            try:
                s.send(b"x", socket.MSG_DONTWAIT)
            except OSError:
                got = b""
                break
            if select.select([s], [], [], TRICKLE_EVERY)[0]:
                try:
                    got = s.recv(4096)
                except OSError:
                    got = b""
        elapsed = time.monotonic() - t0
    assert got is not None, f"still open after {elapsed:.1f}s of trickling"
    assert elapsed >= HTTP_DEADLINE - 0.5, f"closed after {elapsed:.1f}s, before the deadline"
    assert got == b"" or got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got[:200]
    # A request sent at once is still answered.
    assert http(port, b"GET /metrics HTTP/1.1\r\n\r\n")[0] == 200


FLOOD = 1500  # connections opened and closed at once while the endpoint is full
FLOOD_TIME_MAX = 5.0  # seconds the flood may take (well within HTTP_DEADLINE: the full budget stays full)


def test_connection_flood_logs_a_bounded_number_of_lines(start_backend, start_daemon, pool):
    """With the endpoint's budget full, a flood of connections is refused
    and logged at most once a second, the lines adding up to every refusal."""
    d, be, port = metrics_daemon(start_backend, start_daemon, pool)
    t0 = time.monotonic()
    held = open_tricklers(port, TRICKLERS)
    try:
        d.wait_log(REFUSED_RE)
        flood = failed = 0
        while flood < FLOOD and time.monotonic() - t0 < FLOOD_TIME_MAX:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    flood += 1
            except OSError:
                # Given up by the client, but the kernel may have completed it
                # into the backlog: the daemon may still accept and refuse it.
                failed += 1
        assert flood >= 100, flood
        expected = flood + TRICKLERS - HTTP_CONNS

        def accounted():  # or clearly too many lines already (the old code: one a refusal)
            total, lines = refused_counts(d)
            return total >= expected or lines > time.monotonic() - t0 + 2

        wait_until(accounted, timeout=10.0, what=f"log lines accounting for {expected} refusals")
        elapsed = time.monotonic() - t0
    finally:
        for s in held:
            s.close()
    total, lines = refused_counts(d)
    assert lines <= elapsed + 2, f"{lines} lines in {elapsed:.1f}s for {total} refusals"
    assert expected <= total <= expected + failed, (total, expected, failed)
