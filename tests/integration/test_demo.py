"""`make demo` (tests/backend/demo.sh): the "how to connect" banner comes only
once warmpoold is ready, and never when it fails to start. The demo uses its
fixed places (127.0.0.1:7000, /tmp/warmpool-demo), as a user's would."""

import os
import signal
import socket
import subprocess

from wp import BUILD, REPO, WAIT_TIMEOUT, connect_unix, recv_exact, wait_until

DEMO = REPO / "tests" / "backend" / "demo.sh"
DEMO_DIR = "/tmp/warmpool-demo"
BANNER = 'warmpool demo: pool "echo" keeps 4 warm connections'


def start_demo(out):
    # Its own process group: the test stops the script and what it started.
    return subprocess.Popen(["bash", str(DEMO), str(BUILD)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop_demo(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=WAIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=WAIT_TIMEOUT)


def test_banner_after_ready(tmp_path):
    log = tmp_path / "demo.out"
    with open(log, "w") as out:
        p = start_demo(out)
        try:
            wait_until(lambda: BANNER in log.read_text() or p.poll() is not None, WAIT_TIMEOUT, what="the banner")
            text = log.read_text()
            assert BANNER in text, text
            # The daemon said ready before the banner was printed.
            assert 0 <= text.index("info: ready: 1 pool") < text.index(BANNER), text
            greeting = b"hello from the demo backend\r\n"
            with connect_unix(f"{DEMO_DIR}/echo.sock") as c:
                assert recv_exact(c, len(greeting)) == greeting
                c.sendall(b"ping\n")
                assert recv_exact(c, 5) == b"ping\n"
        finally:
            stop_demo(p)


def test_no_banner_when_warmpoold_fails(tmp_path):
    """A live socket already at the demo's pool path (another demo running):
    warmpoold refuses to start, and the script says so instead of the banner."""
    os.makedirs(DEMO_DIR, exist_ok=True)
    path = f"{DEMO_DIR}/echo.sock"
    if os.path.exists(path):
        os.unlink(path)
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(path)
    holder.listen(1)
    log = tmp_path / "demo.out"
    try:
        with open(log, "w") as out:
            p = start_demo(out)
            try:
                p.wait(timeout=WAIT_TIMEOUT)
            finally:
                stop_demo(p)
        text = log.read_text()
        assert p.returncode != 0, text
        assert BANNER not in text, text
        assert "demo: warmpoold did not start" in text, text
    finally:
        holder.close()
        if os.path.exists(path):
            os.unlink(path)
