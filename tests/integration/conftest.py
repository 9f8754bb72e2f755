"""Fixtures for the warmpool integration tests: real warmpoold and wpbackend
processes on loopback TCP and Unix sockets.

The fixtures only: the classes and helpers they are built on (Procs, Backend,
Daemon, make_config, pool_config, the socket and admin helpers) live in
wp.py, which the test files import from. Every process a test starts is
stopped at teardown (SIGTERM, then SIGKILL), and a sanitizer report in any
of their stderr files fails the test.

WARMPOOL_BUILD names the build directory (default: the repo's build/).

`make check` runs the suite with pytest-xdist (-n 2 --dist loadgroup): every
test makes its own temporary directories, socket paths and ports (bind to
port 0, or free_port()), so tests run side by side; the few that use a
fixed place on the machine are grouped in SERIAL_FILES below and run one
after another on one worker.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from wp import Backend, Daemon, Procs, make_config, pool_config

# Test files whose tests share a fixed place on the machine, so two of them
# must never run at once: under pytest-xdist each file's tests form one
# xdist_group (one worker, one after another); without xdist the mark is
# inert. test_demo.py: the demo's own 127.0.0.1:7000 and /tmp/warmpool-demo.
SERIAL_FILES = ("test_demo.py",)


def pytest_configure(config):
    # Registered here too, so that the mark is known when xdist is not installed.
    config.addinivalue_line("markers", "xdist_group(name): run these tests on one pytest-xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


@pytest.fixture
def procs():
    reg = Procs()
    yield reg
    problems = reg.teardown()
    if problems:
        pytest.fail("sanitizer report in a process's stderr:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def sockdir():
    """A short directory for Unix socket paths (sun_path is 108 bytes and
    pytest's tmp_path can be long)."""
    d = tempfile.mkdtemp(prefix="wp", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_backend(procs, tmp_path):
    """start_backend(mode="echo", greeting=..., greeting_delay_ms=...,
    idle_close_ms=..., source_bytes=..., seed=..., slow=MAX_MS, host="127.0.0.1")
    Every keyword but host becomes wpbackend's --key-with-dashes option;
    slow= lets an echo request "SLOW <ms> <text>\n" be answered <ms> later."""
    counter = [0]

    def start(**opts):
        counter[0] += 1
        return Backend(procs, tmp_path, f"backend{counter[0]}", **opts).start()

    return start


@pytest.fixture
def start_daemon(procs, tmp_path, sockdir):
    """start_daemon(pools={name: pool_config(...)}, daemon={...},
    expect_ready=True, config_text=None) -> Daemon"""
    made = []

    def start(pools=None, daemon=None, expect_ready=True, config_text=None, args=(), journal=None):
        adm = None
        if config_text is None:
            # Each daemon its own admin socket, never the system's /run/warmpool.
            daemon = {"admin_socket": str(Path(sockdir) / f"admin{len(made) + 1}.sock"), **(daemon or {})}
            config_text = make_config(pools, daemon)
            adm = daemon["admin_socket"]
        d = Daemon(procs, tmp_path, sockdir, config_text, name=f"warmpoold{len(made) + 1}")
        # The admin socket path the config names (None when disabled or the
        # test wrote the config itself); admin(d, ...) and warmpoolctl(d, ...) use it.
        d.admin_path = Path(adm) if isinstance(adm, str) else None
        made.append(d)
        return d.start(expect_ready=expect_ready, args=args, journal=journal)

    yield start
    for d in made:
        d.close()


@pytest.fixture
def pool(sockdir):
    """pool(name, backends, **overrides) -> pool config dict"""

    def make(name, backends, **overrides):
        return pool_config(sockdir, name, backends, **overrides)

    return make

