#!/usr/bin/env bash
# One-command demo: run from the repository root on a fresh clone.
#
#   bench/demo.sh
#
# 1. builds lb and lb-echo in release mode;
# 2. starts one lb-echo listener for every endpoint address:port found in the
#    EndpointSlices of config/manifests (all loopback), each backend named after its
#    address, so every answer says which endpoint served it (header x-backend and the
#    "backend" field of the JSON body);
# 3. runs `lb serve --config config/lb.toml` until Ctrl-C, which stops everything.
#
# LB_DEMO_ECHO_ONLY=1 runs only the backends (no lb), e.g. to try them directly.
set -euo pipefail

cd "$(dirname "$0")/.."

echo_only="${LB_DEMO_ECHO_ONLY:-0}"

if [[ "$echo_only" == 1 ]]; then
    cargo build --release -p bench
else
    cargo build --release -p lb-control -p bench
fi

target_dir="${CARGO_TARGET_DIR:-target}"
lb_bin="$target_dir/release/lb"
echo_bin="$target_dir/release/lb-echo"

echo_pid=""
lb_pid=""
echo_log="$(mktemp "${TMPDIR:-/tmp}/lb-demo-echo.XXXXXX")"

cleanup() {
    trap - INT TERM EXIT
    for pid in $lb_pid $echo_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $lb_pid $echo_pid; do
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$echo_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$echo_bin" --from-manifests config/manifests >"$echo_log" 2>&1 &
echo_pid=$!

# Wait until every listener is bound (lb-echo prints "lb-echo: ready").
for _ in $(seq 1 100); do
    grep -q '^lb-echo: ready' "$echo_log" && break
    if ! kill -0 "$echo_pid" 2>/dev/null; then
        cat "$echo_log" >&2
        echo "demo: lb-echo failed to start" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q '^lb-echo: ready' "$echo_log"; then
    cat "$echo_log" >&2
    echo "demo: lb-echo did not become ready" >&2
    exit 1
fi
cat "$echo_log"

if [[ "$echo_only" == 1 ]]; then
    echo "demo: backends only; try: curl http://127.0.0.1:9376/  (Ctrl-C stops)"
    wait "$echo_pid"
    exit 0
fi

echo "demo: starting lb (admin on http://127.0.0.1:9901/readyz); Ctrl-C stops everything"
echo "try: curl -H 'Host: myapp.example.com' http://127.0.0.1:8080/"

# lb runs in the background so that this script's trap can forward Ctrl-C/SIGTERM to
# it and then stop the backends; `wait` returns when lb exits on its own too.
"$lb_bin" serve --config config/lb.toml &
lb_pid=$!
status=0
wait "$lb_pid" || status=$?
lb_pid=""
exit "$status"
