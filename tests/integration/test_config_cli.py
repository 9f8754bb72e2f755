"""The command line: --check-config on good and bad files (each error named
by file:line:col and key path), --version, --help."""

import re
import subprocess

import pytest

from wp import SANITIZER_MARKERS, WARMPOOLD, at

ERROR_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^:\s]+): (?P<msg>.+)$")


def run(*args, timeout=30):
    p = subprocess.run(
        [str(WARMPOOLD), *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for marker in SANITIZER_MARKERS:
        assert marker not in p.stderr, p.stderr
    return p



def good_config(sock_a, sock_b):
    return f"""\
daemon:
  log_level: info
  shutdown_timeout: 5s
defaults:
  connect_timeout: 2s
pools:
  redis:
    listen: {sock_a}
    backends: ["127.0.0.1:6379", "[::1]:6380", "localhost:6381"]
    min_idle: 2
    max_connections: 8
    max_clients: 100
    connect_timeout: 1500ms
    queue_timeout: 5s
    backoff: {{initial: 500ms, max: 30s, multiplier: 1.6, jitter: 0.2}}
  cache.v2:
    listen:
      - {{path: {sock_b}, mode: "0600"}}
    backends:
      - 127.0.0.1:11211
    min_idle: 0
"""


POOL_HEAD = """\
pools:
  redis:
    listen: /tmp/wp-never-created.sock
"""

# name -> (yaml, expected key path, [acceptable positions], word the message
# must contain). A position is given as a needle (text, occurrence) whose
# start it is. The convention (DESIGN.md's example): an error about a value
# points at the value, one about a key (unknown, duplicate) at the key, a
# missing key at the key of the mapping that lacks it. min_idle >
# max_connections may point at either number.
CASES = {
    "unknown_key": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    bogus_key: 1\n',
        "pools.redis.bogus_key",
        [("bogus_key", 1)],
        None,
    ),
    "wrong_type": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    min_idle: many\n',
        "pools.redis.min_idle",
        [("many", 1)],
        None,
    ),
    "duration_without_unit": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    connect_timeout: 5\n',
        "pools.redis.connect_timeout",
        [("5\n", 1)],
        None,
    ),
    "duration_garbage": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    queue_timeout: soon\n',
        "pools.redis.queue_timeout",
        [("soon", 1)],
        None,
    ),
    "nested_bad_duration": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    backoff:\n      initial: 500\n      max: 30s\n',
        "pools.redis.backoff.initial",
        [("500", 1)],
        None,
    ),
    "missing_backends": (
        POOL_HEAD + "    min_idle: 1\n",
        "pools.redis",
        [("redis", 1)],
        "backends",
    ),
    "duplicate_pool": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n  redis:\n    listen: /tmp/wp-other.sock\n'
        '    backends: ["127.0.0.1:6380"]\n',
        "pools.redis",
        [("redis", 2)],
        None,
    ),
    "min_idle_over_max_connections": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    min_idle: 10\n    max_connections: 5\n',
        ("pools.redis.min_idle", "pools.redis.max_connections"),
        [("10", 1), ("5\n", 1)],
        None,
    ),
    "unresolvable_host": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379", "no-such-host.invalid:1"]\n',
        "pools.redis.backends",
        [('"no-such-host.invalid:1"', 1)],
        None,
    ),
    "rise_zero": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    health_check: {type: connect, rise: 0}\n',
        "pools.redis.health_check.rise",
        [("0}", 1)],
        None,
    ),
    "unknown_preset": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    health_check: {type: redsi}\n',
        "pools.redis.health_check.type",
        [("redsi", 1)],
        "redis",
    ),
    "send_expect_without_send": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    health_check:\n      type: send_expect\n'
        "      expect: '+PONG'\n",
        "pools.redis.health_check",
        [("type", 1), ("send_expect", 1), ("health_check", 1)],
        "send",
    ),
    "backup_on_the_only_backend": (
        POOL_HEAD + '    backends:\n      - {address: "127.0.0.1:6379", backup: true}\n',
        "pools.redis.backends",
        [("backup", 1), ("true", 1)],
        "without backup",
    ),
    "bad_balance": (
        POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    balance: random\n',
        "pools.redis.balance",
        [("random", 1)],
        "least_connections",
    ),
    "bad_log_level": (
        'daemon:\n  log_level: loud\n' + POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n',
        "daemon.log_level",
        [("loud", 1)],
        None,
    ),
}


def _path_matches(found, expected):
    expected = (expected,) if isinstance(expected, str) else expected
    for e in expected:
        # pools.redis.backends[1] / pools.redis.backends.1 also name the list
        if found == e or found.startswith(e + "[") or found.startswith(e + "."):
            return True
    return False


def test_check_config_ok(tmp_path, sockdir):
    cfg = tmp_path / "good.yaml"
    sock_a, sock_b = sockdir / "a.sock", sockdir / "b.sock"
    cfg.write_text(good_config(sock_a, sock_b))
    p = run("--check-config", "-c", cfg)
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout
    # It starts nothing: no socket was created.
    assert not sock_a.exists() and not sock_b.exists()
    # The long option spelling works too.
    p = run("--check-config", "--config", cfg)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_config_rejects(tmp_path, case):
    text, key_path, needles, msg_word = CASES[case]
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(text)
    p = run("--check-config", "-c", cfg)
    assert p.returncode == 1, f"exit {p.returncode}\nstdout={p.stdout}\nstderr={p.stderr}"
    assert "configuration OK" not in p.stdout

    wanted = {at(text, n, k) for n, k in needles}
    errors = [m for m in map(ERROR_LINE.match, p.stderr.splitlines()) if m]
    assert errors, f"no FILE:LINE:COL: key: message line on stderr:\n{p.stderr}"
    for m in errors:
        assert m["file"] == str(cfg), m.group(0)
    hits = [
        m for m in errors
        if (int(m["line"]), int(m["col"])) in wanted and _path_matches(m["path"], key_path)
    ]
    assert hits, (
        f"expected an error for {key_path} at one of {sorted(wanted)}; got:\n{p.stderr}"
    )
    if msg_word:
        assert any(msg_word in m.group(0) for m in hits), p.stderr


def test_check_config_reports_every_error(tmp_path):
    text = POOL_HEAD + '    backends: ["127.0.0.1:6379"]\n    bogus_key: 1\n    min_idle: many\n' \
        "  other:\n    listen: /tmp/wp-never-2.sock\n"
    cfg = tmp_path / "many.yaml"
    cfg.write_text(text)
    p = run("--check-config", "-c", cfg)
    assert p.returncode == 1
    paths = [m["path"] for m in map(ERROR_LINE.match, p.stderr.splitlines()) if m]
    assert "pools.redis.bogus_key" in paths, p.stderr
    assert "pools.redis.min_idle" in paths, p.stderr
    assert any(x.startswith("pools.other") for x in paths), p.stderr  # its missing backends


def test_check_config_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    p = run("--check-config", "-c", missing)
    assert p.returncode == 1
    assert str(missing) in p.stderr


def test_version():
    p = run("--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip(), "--version printed nothing"


def test_help():
    p = run("--help")
    assert p.returncode == 0, p.stderr
    assert "--config" in p.stdout and "--check-config" in p.stdout, p.stdout


# ---------------------------------------------------------------------------
# review 2.8: a handoff socket without the ACL its listeners have; host names
# that never resolve

HANDOFF_ACL_CONFIG = """\
daemon:
  admin_socket: false
pools:
  p:
    listen:
      - {{path: {sock}, allow: {{uids: [0]}}}}
    handoff: {{listen: {handoff}}}
    backends: ["127.0.0.1:6379"]
{pool_allow}"""


def test_check_config_warns_when_only_a_listen_item_has_allow(tmp_path):
    """allow: on a listen item covers that socket only: the handoff socket
    takes the pool's allow:, here none, so anyone who can reach its file may
    take connections. Valid, but --check-config says so, and where."""
    cfg = tmp_path / "w.yaml"
    text = HANDOFF_ACL_CONFIG.format(sock=tmp_path / "p.sock", handoff=tmp_path / "p.handoff", pool_allow="")
    cfg.write_text(text)
    p = run("--check-config", "-c", cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "configuration OK\n"
    line, col = at(text, str(tmp_path / "p.handoff"))
    assert p.stderr == (
        f"{cfg}:{line}:{col}: pools.p.handoff: warning: the handoff socket {tmp_path / 'p.handoff'} has no "
        "allow: while listen[0] has one: any user who can reach the socket file can take connections; put "
        "allow: on the pool itself, which covers the handoff socket and every listen item\n"
    )

    # allow: on the pool covers the handoff socket: nothing to say.
    cfg.write_text(HANDOFF_ACL_CONFIG.format(sock=tmp_path / "p.sock", handoff=tmp_path / "p.handoff",
                                             pool_allow="    allow: {uids: [0]}\n"))
    p = run("--check-config", "-c", cfg)
    assert p.returncode == 0 and p.stdout == "configuration OK\n", p.stderr
    assert p.stderr == ""


RESOLVE_BOUND = 2.0  # CFG_RESOLVE_TIMEOUT_MS (config.h), in seconds
RESOLVE_SLACK = 6.0  # start-up and sanitizer overhead on a loaded machine
NEVER_ANSWERS = 60.0  # what the old blocking getaddrinfo() waited: resolv.conf timeout 30 x 2 attempts

# Runs as root inside `unshare -mn` (its own mount and network namespaces):
# resolv.conf names 127.0.0.1, where a UDP socket takes the queries and never
# answers, like a DNS server that hangs. The host's resolver is untouched.
BLACKHOLE = r"""
import json, os, socket, subprocess, sys, time
resolv, warmpoold, cfg, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.bind(("127.0.0.1", 53))
t = time.monotonic()
try:
    p = subprocess.run([warmpoold, "--check-config", "-c", cfg], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=limit)
    out = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
except subprocess.TimeoutExpired:
    out = {"rc": None, "stdout": "", "stderr": ""}
out["secs"] = time.monotonic() - t
print(json.dumps(out))
"""


def test_host_name_resolution_is_bounded(tmp_path):
    """A reload resolves host names inside the event loop: a DNS server that
    never answers must cost at most CFG_RESOLVE_TIMEOUT_MS for the whole
    load, and the error names the backend (review 2.8)."""
    import json
    import os
    import shutil
    import sys

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare(1) and ip(8) for a private resolv.conf")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:2\n")
    script = tmp_path / "blackhole.py"
    script.write_text(BLACKHOLE)
    cfg = tmp_path / "dns.yaml"
    text = f"""\
daemon:
  admin_socket: false
pools:
  p:
    listen: {tmp_path / 'p.sock'}
    backends: ["localhost:6379", "db.hangs.example:6379", "127.0.0.1:6380"]
"""
    cfg.write_text(text)
    limit = RESOLVE_BOUND + RESOLVE_SLACK + 10.0
    assert limit < NEVER_ANSWERS
    p = subprocess.run(["unshare", "-mn", sys.executable, "-I", str(script), str(resolv), str(WARMPOOLD),
                        str(cfg), str(limit)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=limit + 30)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["rc"] is not None, f"--check-config still resolving after {out['secs']:.1f}s"
    assert out["secs"] < RESOLVE_BOUND + RESOLVE_SLACK, out
    for marker in SANITIZER_MARKERS:
        assert marker not in out["stderr"], out["stderr"]
    line, col = at(text, '"db.hangs.example:6379"')
    assert out["rc"] == 1, out
    assert out["stderr"].splitlines()[0] == (
        f'{cfg}:{line}:{col}: pools.p.backends[1]: name resolution of "db.hangs.example:6379" timed out '
        "(2000 ms for all host names)"
    ), out["stderr"]
    assert "configuration is invalid (1 errors)" in out["stderr"], out["stderr"]
