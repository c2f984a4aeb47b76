#!/usr/bin/env bash
# `make run`: the demo SSE origin on 127.0.0.1:3000 and sse-sidecar on :8080 in front
# of it, until Ctrl-C (or SIGTERM), which stops both. Expects the release build:
#   cargo build --release --bin sse-sidecar --example demo_origin
# Addresses can be changed with RUN_ORIGIN, RUN_LISTEN and RUN_METRICS.
set -euo pipefail
cd "$(dirname "$0")/.."

ORIGIN="${RUN_ORIGIN:-127.0.0.1:3000}"
LISTEN="${RUN_LISTEN:-0.0.0.0:8080}"
METRICS="${RUN_METRICS:-0.0.0.0:9090}"
BIN="${CARGO_TARGET_DIR:-target}/release/sse-sidecar"
DEMO="${CARGO_TARGET_DIR:-target}/release/examples/demo_origin"
port() { echo "${1##*:}"; }

pids=()
# shellcheck disable=SC2329 # invoked by the traps
stop() {
    trap - INT TERM EXIT
    echo
    echo "run: stopping the sidecar and the demo origin"
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    # The sidecar drains open streams over shutdown.drain_window (10 s) on SIGTERM.
    for _ in $(seq 120); do
        local alive=
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

wait_for() { # URL WHAT PID
    for _ in $(seq 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "run: $2 exited; see its output above" >&2; return 1; }
        sleep 0.1
    done
    echo "run: $2 did not answer $1 within 10 s" >&2
    return 1
}

# Output is prefixed by a process substitution, so that $! is the program itself.
"$DEMO" --listen "$ORIGIN" > >(sed -u 's/^/[origin]  /') 2>&1 &
pids+=("$!")
wait_for "http://$ORIGIN/healthz" "the demo origin" "${pids[0]}"

"$BIN" --upstream "http://$ORIGIN" --listen "$LISTEN" --metrics-listen "$METRICS" \
    > >(sed -u 's/^/[sidecar] /') 2>&1 &
pids+=("$!")
wait_for "http://127.0.0.1:$(port "$LISTEN")/healthz" "the sidecar" "${pids[1]}"

cat <<MSG

  demo origin  http://$ORIGIN      (direct, for comparison)
  sse-sidecar  http://127.0.0.1:$(port "$LISTEN")   metrics http://127.0.0.1:$(port "$METRICS")/metrics

  Try it through the sidecar:
    curl -N -H 'Accept: text/event-stream' http://127.0.0.1:$(port "$LISTEN")/events
    curl -N -H 'Content-Type: application/json' -H 'Accept: text/event-stream' \\
         -d '{"messages":[{"role":"user","content":"hi"}]}' http://127.0.0.1:$(port "$LISTEN")/v1/chat/completions
  Or open http://127.0.0.1:$(port "$LISTEN")/ in a browser.

  Ctrl-C stops both.

MSG

# Either process exiting ends the demo.
wait -n "${pids[@]}"
echo "run: a process exited" >&2
exit 1
