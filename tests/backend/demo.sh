#!/usr/bin/env bash
# tests/backend/demo.sh BUILD_DIR — `make demo`: the demo backend plus warmpoold
# on config/demo.yaml, both in the foreground of this terminal. Ctrl-C stops both.
set -euo pipefail

build=${1:-build}
cd "$(dirname "$0")/../.."

backend_pid=""
daemon_pid=""
# stop PID [SIGNAL]: signal it (unless SIGNAL is "-"), wait up to 10 s, then SIGKILL.
stop() {
	local pid=$1 sig=${2:-TERM}
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
	[[ "$sig" == - ]] || kill -"$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
cleanup() {
	stop "$daemon_pid"
	daemon_pid=""
	stop "$backend_pid"
	backend_pid=""
}
trap cleanup EXIT
# Ctrl-C reaches this script and warmpoold (same process group): warmpoold
# exits 0 on SIGINT by itself, so let it, then stop the backend; exit 0.
trap 'stop "$daemon_pid" -; daemon_pid=""; cleanup; exit 0' INT
# SIGTERM (to the script alone or to the group): a graceful warmpoold stop.
trap 'cleanup; exit 0' TERM

for bin in "$build/wpbackend" "$build/warmpoold"; do
	if [[ ! -x "$bin" ]]; then
		echo "demo: $bin is missing: run make first" >&2
		exit 1
	fi
done

mkdir -p /tmp/warmpool-demo

# Its own session: Ctrl-C reaches warmpoold only, and the trap stops the
# backend after warmpoold has exited (no reconnect noise while it exits).
setsid "$build/wpbackend" --listen 127.0.0.1:7000 --greeting 'hello from the demo backend\r\n' &
backend_pid=$!

# Give the backend a moment to bind (it prints "wpbackend listening on ...").
for _ in $(seq 1 50); do
	if ! kill -0 "$backend_pid" 2>/dev/null; then
		echo "demo: the demo backend failed to start (is port 7000 in use?)" >&2
		backend_pid=""
		exit 1
	fi
	if (exec 3<>/dev/tcp/127.0.0.1/7000) 2>/dev/null; then
		break
	fi
	sleep 0.1
done

# In the background with `wait`, so that a signal to this script runs its
# trap at once (bash defers traps while a foreground command runs).
"$build/warmpoold" -c config/demo.yaml &
daemon_pid=$!

# The banner only once warmpoold answers on its admin socket (it is ready);
# if it exits first (a socket in use, a bad config), its own error says why.
ready=""
for _ in $(seq 1 100); do
	if ! kill -0 "$daemon_pid" 2>/dev/null; then
		break
	fi
	if "$build/warmpoolctl" -s /tmp/warmpool-demo/admin.sock show pools >/dev/null 2>&1; then
		ready=1
		break
	fi
	sleep 0.1
done
if [[ -z "$ready" ]]; then
	status=0
	wait "$daemon_pid" || status=$?
	daemon_pid=""
	echo "demo: warmpoold did not start (exit status $status; its messages are above)" >&2
	exit $((status ? status : 1))
fi

cat <<'EOF'

warmpool demo: pool "echo" keeps 4 warm connections to the echo backend on 127.0.0.1:7000.
Connect from another terminal with either of:
    socat - UNIX-CONNECT:/tmp/warmpool-demo/echo.sock
    nc -U /tmp/warmpool-demo/echo.sock
You get the backend's greeting at once, then every line you type is echoed back.
Watch it work:
    build/warmpoolctl -s /tmp/warmpool-demo/admin.sock show pools
    build/warmpoolctl -s /tmp/warmpool-demo/admin.sock show backends
    build/warmpoolctl -s /tmp/warmpool-demo/admin.sock show metrics
Press Ctrl-C here to stop warmpoold and the demo backend.

EOF

status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
exit "$status"
