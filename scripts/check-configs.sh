#!/usr/bin/env bash
# Checks every configuration file the repository ships, the way a user would:
#   - conf/*.yaml with `sse-sidecar check` (exit 0, or every problem and exit 2);
#   - the sse-sidecar.yaml inside examples/kubernetes/configmap.yaml, likewise;
#   - examples/nginx-equivalent.conf with `nginx -t`, included in a minimal http {}.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

BIN="${SSE_SIDECAR_BIN:-${CARGO_TARGET_DIR:-target}/release/sse-sidecar}"
if [ ! -x "$BIN" ]; then
    echo "check-configs: $BIN not built (cargo build --release)" >&2
    exit 1
fi

shopt -s nullglob
confs=(conf/*.yaml)
if [ "${#confs[@]}" -eq 0 ]; then
    echo "check-configs: no conf/*.yaml to check" >&2
    exit 1
fi
for f in "${confs[@]}"; do
    "$BIN" check --config "$f"
    echo "check-configs: $f ok"
done

SSE_SIDECAR_BIN="$BIN" scripts/validate-k8s.sh --config-only

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/nginx.conf" <<EOF
pid $tmp/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    include $PWD/examples/nginx-equivalent.conf;
}
EOF
nginx -t -q -p "$tmp" -c "$tmp/nginx.conf" -e stderr
echo "check-configs: examples/nginx-equivalent.conf passes nginx -t"
