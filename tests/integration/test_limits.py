"""Config limits (hostile input): huge files, deep nesting, absurd
numbers, thousands of pools, long names, invalid UTF-8 and NUL bytes. Each
is a clear error from `warmpoold --check-config` (exit 1, a FILE:LINE:COL
line naming the key) or, at the limit itself, a file that loads (exit 0);
never a crash, a sanitizer report or a hang (every run has a timeout)."""

import json
import os
import re
import resource
import subprocess
import time

import pytest

from wp import SANITIZER_MARKERS, WARMPOOLD, at

ERROR_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?:(?P<path>[^:\s]+): )?(?P<msg>.+)$")
RUN_TIMEOUT = 60  # seconds: a hang fails the test (ASan build included)


def dump_schema():
    """The key table and the limits of config/config.h, as the daemon prints them."""
    p = subprocess.run([str(WARMPOOLD), "--dump-schema"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=RUN_TIMEOUT, check=True)
    return json.loads(p.stdout)


SCHEMA = dump_schema()
LIMITS = SCHEMA["limits"]
MAX_FILE = LIMITS["file_size"]
MAX_DEPTH = LIMITS["depth"]
MAX_POOLS = LIMITS["pools"]
MAX_BACKENDS = LIMITS["backends"]
MAX_LISTEN = LIMITS["listen"]
MAX_NAME = LIMITS["name"]
MAX_ERRORS = LIMITS["errors"]

NEVER = "/tmp/wp-limits-never-created"  # listen paths: --check-config binds nothing


MEMORY_CAP_MB = 1024  # no config may make the loader use more
_ASAN = b"__asan_init" in WARMPOOLD.read_bytes()


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP_MB << 20, MEMORY_CAP_MB << 20))


def check(path, timeout=RUN_TIMEOUT):
    """Run --check-config on path with its memory capped (so a runaway cannot
    take the machine down); the CompletedProcess (bytes-safe text)."""
    env = dict(os.environ)
    if _ASAN:  # ASan reserves terabytes of address space: cap its RSS instead
        env["ASAN_OPTIONS"] = ":".join(
            x for x in (env.get("ASAN_OPTIONS"), f"hard_rss_limit_mb={MEMORY_CAP_MB}") if x)
    t0 = time.monotonic()
    p = subprocess.run(
        [str(WARMPOOLD), "--check-config", "-c", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        env=env,
        preexec_fn=None if _ASAN else _cap_memory,
    )
    p.elapsed = time.monotonic() - t0
    p.stdout = p.stdout.decode("utf-8", "backslashreplace")
    p.stderr = p.stderr.decode("utf-8", "backslashreplace")
    for marker in SANITIZER_MARKERS + ("hard rss limit exhausted",):
        assert marker not in p.stderr, p.stderr[:5000]
    assert p.returncode in (0, 1), f"exit {p.returncode} (a crash?)\n{p.stderr[-5000:]}"
    return p


def write(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data.encode() if isinstance(data, str) else data)
    return f


def errors_of(p, cfg):
    """The FILE:LINE:COL error lines, each checked to name cfg."""
    errs = [m for m in map(ERROR_LINE.match, p.stderr.splitlines()) if m]
    for m in errs:
        assert m["file"] == str(cfg), m.group(0)
    return errs


def assert_ok(p):
    assert p.returncode == 0, f"expected the file to load:\n{p.stderr[-5000:]}"
    assert "configuration OK" in p.stdout


def assert_error(p, cfg, *, line=None, col=None, path=None, words=()):
    """Exit 1 and an error line at (line, col) for key path, with words in it."""
    assert p.returncode == 1, f"exit {p.returncode}\nstdout={p.stdout}\nstderr={p.stderr[-5000:]}"
    assert "configuration OK" not in p.stdout
    errs = errors_of(p, cfg)
    assert errs, f"no FILE:LINE:COL: message line on stderr:\n{p.stderr[-5000:]}"
    hits = [
        m for m in errs
        if (line is None or int(m["line"]) == line)
        and (col is None or int(m["col"]) == col)
        and (path is None or (m["path"] or "") == path or (m["path"] or "").startswith(path + "["))
        and all(w in m.group(0) for w in words)
    ]
    assert hits, f"no error at {line}:{col} for {path} with {words}; got:\n{p.stderr[-5000:]}"
    return hits


def pool(name, i, extra=""):
    return f"  {name}:\n    listen: {NEVER}/p{i}.sock\n    backends: 127.0.0.1:{1000 + i % 60000}\n{extra}"


def one_pool(extra=""):
    return "pools:\n" + pool("p", 0, extra)



# ---------------------------------------------------------------------------
# file size


def padded(size):
    """A valid config padded with a comment to exactly size bytes."""
    head = one_pool()
    pad = size - len(head) - 2  # "#" and the final "\n"
    return head + "#" + "x" * pad + "\n"


def test_file_at_the_size_limit_loads(tmp_path):
    text = padded(MAX_FILE)
    assert len(text) == MAX_FILE
    assert_ok(check(write(tmp_path, "max.yaml", text)))


@pytest.mark.parametrize("size", [MAX_FILE + 1, 8 * MAX_FILE])
def test_file_over_the_size_limit(tmp_path, size):
    cfg = write(tmp_path, "huge.yaml", padded(size))
    p = check(cfg)
    assert p.returncode == 1, p.stderr[-2000:]
    # A whole-file error: "FILE: file too large, expected at most 1048576 bytes"
    # (config.c gives it no line:col), or FILE:1:1: ... .
    assert re.search(rf"^{re.escape(str(cfg))}:(1:1:)? .*too large.*{MAX_FILE}", p.stderr, re.M), p.stderr
    assert len(p.stderr) < 2000, "the error quotes the file"


def test_one_huge_scalar_under_the_limit(tmp_path):
    """A 1 MiB - 100 byte value is read, then reported with a bounded quote."""
    head = "pools:\n  p:\n    listen: "
    tail = "\n    backends: 127.0.0.1:1\n"
    text = head + "/" + "a" * (MAX_FILE - 100 - len(head) - len(tail)) + tail
    cfg = write(tmp_path, "bigscalar.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, line=3, col=13, path="pools.p.listen")
    assert len(p.stderr) < 4000, f"the error quotes the whole value ({len(p.stderr)} bytes)"


def test_many_errors_are_capped(tmp_path):
    """40,000 unknown keys: at most 100 lines, then a count of the rest."""
    text = one_pool("".join(f"    bogus{i}: 1\n" for i in range(40000)))
    assert len(text) < MAX_FILE
    cfg = write(tmp_path, "errors.yaml", text)
    p = check(cfg)
    errs = assert_error(p, cfg, line=5, col=5, path="pools.p.bogus0", words=("unknown key",))
    assert len(errors_of(p, cfg)) <= MAX_ERRORS, len(errs)
    assert "more errors" in p.stderr, p.stderr[-500:]


# ---------------------------------------------------------------------------
# nesting


def nested_seq(depth):
    return "[" * depth + "]" * depth


def nested_map(depth):
    return "{a: " * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10000])
@pytest.mark.parametrize("kind", ["seq", "map", "block", "unclosed"])
def test_nesting_too_deep(tmp_path, depth, kind):
    # The document's own mapping is level 1, pools: 2, so the value below
    # starts at level 3 (block: at level 2).
    if kind == "seq":
        text = "pools: " + nested_seq(depth - 1) + "\n"
        where = (1, 8 + (MAX_DEPTH - 1))  # the bracket that opens level 33
    elif kind == "map":
        text = "pools: " + nested_map(depth - 1) + "\n"
        where = (1, 8 + 4 * (MAX_DEPTH - 1))
    elif kind == "unclosed":
        text = "pools: " + "[" * (depth - 1) + "\n"
        where = (1, 8 + (MAX_DEPTH - 1))
    else:  # block mappings, one level per line (10,000 would be 50 MB: cap it)
        depth = min(depth, 600)
        text = "".join(" " * i + f"k{i}:\n" for i in range(depth))
        where = (MAX_DEPTH + 1, MAX_DEPTH + 1)  # k32, whose line opens the 33rd mapping
    cfg = write(tmp_path, "deep.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, line=where[0], col=where[1], words=("nesting deeper than 32",))
    assert p.elapsed < RUN_TIMEOUT


def test_nesting_at_the_limit_is_not_a_nesting_error(tmp_path):
    """32 levels parse (the value is then simply of the wrong type)."""
    text = "pools: " + nested_seq(MAX_DEPTH - 1) + "\n"
    cfg = write(tmp_path, "deep32.yaml", text)
    p = check(cfg)
    assert p.returncode == 1
    assert "nesting deeper" not in p.stderr, p.stderr
    assert_error(p, cfg, line=1, col=8, path="pools")


# ---------------------------------------------------------------------------
# absurd numbers, for each kind of numeric key

ABSURD = ["1e400", "99999999999999999999999", "-1"]

# The numeric keys come from the key table (warmpoold --dump-schema): each
# is (where, the snippet with VALUE, the error's key path). The snippet is
# placed in a pool (P), under daemon: (D), defaults: (F), as a listen item (L)
# or as a backend item (B).
KIND_OF_TYPE = {"integer": "int", "ids": "id", "duration": "duration", "duration_or_0": "duration",
                "seconds": "duration", "number": "float", "mode": "mode", "address": "port"}
# Keys a block needs beside the one under test, so that the file differs
# from a valid one only in VALUE.
BLOCK_NEEDS = {"handoff": f"      listen: {NEVER}/h.sock\n"}
ITEM_SNIPPETS = {  # keys of list items: their snippets and the list's key path
    "listen[].mode": ("L", "      - path: " + NEVER + "/m.sock\n        mode: VALUE\n", "pools.p.listen"),
    "backends[].weight": ("B", "      - address: 127.0.0.1:2\n        weight: VALUE\n", "pools.p.backends"),
    # An address is one value: the error points at its start.
    "backends[].address": ("B", "      - VALUE\n", "pools.p.backends"),
}


def pool_snippet(key):
    """A pool's snippet for a key path "a" or "a.b" (a list of ids for type ids)."""
    path = key["path"]
    if path in ITEM_SNIPPETS:
        return ITEM_SNIPPETS[path]
    value = "\n        - VALUE\n" if key["type"] == "ids" else " VALUE\n"
    if "." not in path:
        return ("P", f"    {path}:{value}", f"pools.p.{path}")
    block, name = path.split(".")
    return ("P", f"    {block}:\n" + BLOCK_NEEDS.get(block, "") + f"      {name}:{value}", f"pools.p.{path}")


def numeric_keys():
    """{kind: [(where, snippet, key path)]} for every numeric key of the table."""
    kinds = {}
    for key in SCHEMA["keys"]:
        kind = KIND_OF_TYPE.get(key["type"])
        if kind is None:
            continue
        if "daemon" in key["where"]:
            kinds.setdefault(kind, []).append(("D", f"  {key['path']}: VALUE\n", f"daemon.{key['path']}"))
            continue
        kinds.setdefault(kind, []).append(pool_snippet(key))
        if "defaults" in key["where"] and kind == "int" and "." not in key["path"]:
            kinds[kind].append(("F", f"  {key['path']}: VALUE\n", f"defaults.{key['path']}"))
    return kinds


NUMERIC_KEYS = numeric_keys()

DURATION_ABSURD = ABSURD + [f"{v}{u}" for v in ABSURD for u in ("ms", "s", "h")] + [
    "18446744073709551615ms", "18446744073709551616ms", "5124095576030432h", "18446744073709551615h",
    "0.0000000001ms", "1e-400s", "nans", "infs", "1.5e3s",
]
INT_ABSURD = ABSURD + ["4294967296", "18446744073709551616", "1.0", "0x10", "+1", "1_000", "nan", ".inf"]
FLOAT_ABSURD = ABSURD + ["-1e400", "nan", ".nan", "inf", ".inf", "-.inf", "1e308", "0x10"]
MODE_ABSURD = ABSURD + ['"77777777777777777777777"', '"-1"', '"1e400"', '"01000"', '"0o777"', '"0x1ff"']
ID_ABSURD = ABSURD + ["4294967295", "4294967296", "18446744073709551616"]
PORT_ABSURD = ["127.0.0.1:" + v for v in ABSURD + ["0", "65536", "4294967297", "18446744073709551617"]] + [
    '"[::1]:99999999999999999999999"', '"[::1]:-1"']


def build(where, snippet, value):
    """A file with snippet (VALUE replaced) placed where, and the value's (line, col)."""
    s = snippet.replace("VALUE", value)
    if where == "D":
        text = "daemon:\n" + s + one_pool()
    elif where == "F":
        text = "defaults:\n" + s + one_pool()
    elif where == "L":
        text = "pools:\n  p:\n    listen:\n" + s + "    backends: 127.0.0.1:1\n"
    elif where == "B":
        text = f"pools:\n  p:\n    listen: {NEVER}/p.sock\n    backends:\n      - 127.0.0.1:1\n" + s
    else:
        text = one_pool(s)
    marker = snippet.split("VALUE")[0].rsplit("\n", 1)[-1]  # the text just before VALUE on its line
    line, col = at(text, marker + value, 1)
    col += len(marker)
    return text, line, col


ABSURD_OF_KIND = {"int": INT_ABSURD, "id": ID_ABSURD, "duration": DURATION_ABSURD, "float": FLOAT_ABSURD,
                  "mode": MODE_ABSURD, "port": PORT_ABSURD}
CASES = []
for kind, values in ABSURD_OF_KIND.items():
    for where, snippet, key_path in NUMERIC_KEYS.get(kind, []):
        for v in values:
            CASES.append(pytest.param(where, snippet, key_path, v, id=f"{kind}-{key_path}={v}"))


def test_every_kind_of_number_has_keys():
    """The table's numeric keys cover every kind of absurd value above (a
    type renamed in the table must not silently drop its cases)."""
    assert sorted(NUMERIC_KEYS) == sorted(ABSURD_OF_KIND), sorted(NUMERIC_KEYS)
    assert {k["type"] for k in SCHEMA["keys"]} >= set(KIND_OF_TYPE), "a type of KIND_OF_TYPE left the table"


@pytest.mark.parametrize("where,snippet,key_path,value", CASES)
def test_absurd_number(tmp_path, where, snippet, key_path, value):
    text, line, col = build(where, snippet, value)
    cfg = write(tmp_path, "absurd.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, line=line, col=col, path=key_path)


# ---------------------------------------------------------------------------
# many pools, backends, listen paths; long names


def pools_text(n):
    return "pools:\n" + "".join(pool(f"pool{i}", i) for i in range(n))


def test_pools_at_the_limit_load(tmp_path):
    assert_ok(check(write(tmp_path, "pools1024.yaml", pools_text(MAX_POOLS))))


@pytest.mark.parametrize("n", [MAX_POOLS + 1, 10000])
def test_too_many_pools(tmp_path, n):
    text = pools_text(n)
    assert len(text) < MAX_FILE
    cfg = write(tmp_path, "pools.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, path="pools", words=(str(MAX_POOLS),))


def backends_text(n):
    return (f"pools:\n  p:\n    listen: {NEVER}/p.sock\n    backends:\n"
            + "".join(f"      - 127.0.0.1:{1 + i}\n" for i in range(n)))


def test_backends_at_the_limit_load(tmp_path):
    assert_ok(check(write(tmp_path, "b256.yaml", backends_text(MAX_BACKENDS))))


@pytest.mark.parametrize("n", [MAX_BACKENDS + 1, 40000])
def test_too_many_backends(tmp_path, n):
    text = backends_text(n)
    assert len(text) < MAX_FILE
    cfg = write(tmp_path, "backends.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, line=5, col=7, path="pools.p.backends", words=(str(MAX_BACKENDS),))


def listen_text(n):
    return ("pools:\n  p:\n    listen:\n" + "".join(f"      - {NEVER}/l{i}.sock\n" for i in range(n))
            + "    backends: 127.0.0.1:1\n")


def test_listen_paths_at_the_limit_load(tmp_path):
    assert_ok(check(write(tmp_path, "l16.yaml", listen_text(MAX_LISTEN))))


@pytest.mark.parametrize("n", [MAX_LISTEN + 1, 20000])
def test_too_many_listen_paths(tmp_path, n):
    cfg = write(tmp_path, "listen.yaml", listen_text(n))
    p = check(cfg)
    assert_error(p, cfg, line=4, col=7, path="pools.p.listen", words=(str(MAX_LISTEN),))


def test_pool_name_at_the_limit_loads(tmp_path):
    assert_ok(check(write(tmp_path, "n64.yaml", "pools:\n" + pool("n" * MAX_NAME, 0))))


@pytest.mark.parametrize("length", [MAX_NAME + 1, 1024, 5000, 900000])
@pytest.mark.parametrize("style", ["plain", "explicit"])
def test_pool_name_too_long(tmp_path, length, style):
    name = "n" * length
    if style == "plain":
        # YAML limits an implicit key to 1024 characters: a longer one is a
        # syntax error (at the ':' after it), a shorter one the loader's.
        text = "pools:\n" + pool(name, 0)
    else:
        # "? KEY" has no such limit: the loader's own check must catch it.
        text = f"pools:\n  ? {name}\n  : listen: {NEVER}/p.sock\n    backends: 127.0.0.1:1\n"
    cfg = write(tmp_path, "name.yaml", text)
    p = check(cfg)
    if style == "plain" and length > 1024:
        hits = assert_error(p, cfg, line=2, words=("syntax error",))
    else:
        hits = assert_error(p, cfg, line=2, col=3 if style == "plain" else 5, words=(str(MAX_NAME),))
    # The name is quoted shortened, so the message stays readable.
    assert all(len(m.group(0)) < 1000 for m in hits), hits[0].group(0)[:2000]
    assert len(p.stderr) < 10000


def test_many_allow_entries(tmp_path):
    text = one_pool("    allow:\n      uids:\n" + "".join(f"        - {i}\n" for i in range(5000)))
    cfg = write(tmp_path, "allow.yaml", text)
    p = check(cfg)
    assert_error(p, cfg, path="pools.p.allow.uids", words=("256",))


# ---------------------------------------------------------------------------
# bytes that are not text


UTF8_CASES = {
    # name: (bytes of the file, the bad byte's offset or None to accept any line:col)
    "lone_ff_in_value": b"pools:\n  p:\n    listen: /tmp/\xff.sock\n    backends: 127.0.0.1:1\n",
    "lone_continuation": b"pools:\n  p\x80:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n",
    "overlong_slash": b"pools:\n  p:\n    listen: /tmp/\xc0\xaf.sock\n    backends: 127.0.0.1:1\n",
    "surrogate": b"pools:\n  p:\n    listen: /tmp/\xed\xa0\x80.sock\n    backends: 127.0.0.1:1\n",
    "beyond_unicode": b"pools:\n  p:\n    listen: /tmp/\xf4\x90\x80\x80.sock\n    backends: 127.0.0.1:1\n",
    "truncated_at_eof": b"pools:\n  p:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n# \xe2\x82",
    "in_comment": b"# caf\xe9\npools:\n  p:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n",
    "latin1_key": b"pools:\n  caf\xe9:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n",
    "utf16_bom": b"\xff\xfep\x00o\x00o\x00l\x00s\x00:\x00\n\x00",
}

NUL_CASES = {
    "nul_in_value": b"pools:\n  p:\n    listen: /tmp/a\x00b.sock\n    backends: 127.0.0.1:1\n",
    "nul_in_quoted_value": b"pools:\n  p:\n    listen: \"/tmp/a\x00b.sock\"\n    backends: 127.0.0.1:1\n",
    "nul_in_comment": b"# \x00\npools:\n  p:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n",
    "nul_first": b"\x00pools:\n  p:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n",
    "nul_last": b"pools:\n  p:\n    listen: /tmp/a.sock\n    backends: 127.0.0.1:1\n\x00",
    "only_nuls": b"\x00" * 4096,
    "escaped_nul_in_path": b"pools:\n  p:\n    listen: \"/tmp/a\\0b.sock\"\n    backends: 127.0.0.1:1\n",
}


def expected_pos(data, offset):
    """1-based line and column (in characters) of a byte offset, as libyaml counts."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    col = 1 + sum(1 for b in data[start:offset] if (b & 0xC0) != 0x80)
    return line, col


@pytest.mark.parametrize("case", sorted(UTF8_CASES))
def test_invalid_utf8(tmp_path, case):
    data = UTF8_CASES[case]
    cfg = write(tmp_path, f"{case}.yaml", data)
    p = check(cfg)
    bad = next(i for i, b in enumerate(data) if b >= 0x80)
    line, _ = expected_pos(data, bad)
    if case == "utf16_bom":
        # A UTF-16 file is decoded by libyaml: pools: is then an empty value.
        assert p.returncode == 1
        assert errors_of(p, cfg), p.stderr
        return
    assert_error(p, cfg, line=line)
    assert "\ufffd" not in p.stderr  # bytes are not passed through


@pytest.mark.parametrize("case", sorted(NUL_CASES))
def test_nul_bytes(tmp_path, case):
    data = NUL_CASES[case]
    cfg = write(tmp_path, f"{case}.yaml", data)
    p = check(cfg)
    if case == "escaped_nul_in_path":
        # "\0" is a YAML escape: the path then holds a NUL, which a socket path cannot.
        assert_error(p, cfg, line=3, col=13, path="pools.p.listen")
        return
    nul = data.index(b"\x00")
    line, col = expected_pos(data, nul)
    assert_error(p, cfg, line=line, col=col)


# ---------------------------------------------------------------------------
# regular expressions whose compiled form is huge (glibc regcomp expands
# counted repetitions: 'a{1,32767}' alone takes 38 s and 8.4 GB, and the
# loader compiles it twice)

PATHOLOGICAL_REGEX = [
    "a{1,32767}",
    "((a{1,100}){1,100}){1,100}",
    "(((a{0,32767}){0,32767}){0,32767})",
]


@pytest.mark.parametrize("regex", PATHOLOGICAL_REGEX)
def test_pathological_regex(tmp_path, regex):
    """Rejected by a rule of the loader, quickly and in bounded memory (not
    by running out of it: the daemon would compile it with no cap)."""
    text = one_pool(f"    health_check:\n      type: send_expect\n      send: 'x'\n      expect_regex: '{regex}'\n")
    cfg = write(tmp_path, "regex.yaml", text)
    p = check(cfg)
    assert p.elapsed < 10, f"took {p.elapsed:.1f}s"
    line, col = at(text, "'" + regex)
    hits = assert_error(p, cfg, line=line, col=col, path="pools.p.health_check.expect_regex")
    assert not any("Memory exhausted" in m.group(0) for m in hits), hits[0].group(0)
