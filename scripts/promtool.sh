#!/usr/bin/env bash
# Puts Prometheus's `promtool` at target/tools/bin/promtool, for the alert-rule and
# dashboard checks in tests/observability.rs.
#
#   scripts/promtool.sh            # fetch it if missing; prints nothing when present
#
# promtool comes from Debian's `prometheus` package, unpacked rather than installed:
# installing it would bring a server, its web assets and node-exporter, and register a
# service. The package is downloaded with apt (the package registry, no other network) and
# only its promtool binary kept; repeated runs cost nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=target/tools/bin/promtool
[ -x "$dest" ] && exit 0

tmp=$(mktemp -d -t promtool.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "promtool: unpacking Debian's prometheus package into target/tools" >&2
if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
    # Empty or stale package lists: refresh them once (as root, or with sudo).
    SUDO=()
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=(sudo)
    "${SUDO[@]}" apt-get update -q >/dev/null
    (cd "$tmp" && apt-get download -q prometheus >/dev/null)
fi
dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
mkdir -p "$(dirname "$dest")"
install -m 755 "$tmp/root/usr/bin/promtool" "$dest"
"$dest" --version 2>&1 | head -1 >&2
