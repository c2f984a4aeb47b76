#!/usr/bin/env bash
# Installs what tests/browser.rs needs, idempotently (nothing to do -> no network):
#   - Debian's `chromium` (the browser under test; playwright's own download does not work here),
#   - the node packages of tests/browser/ (playwright-core, eventsource for tests/browser.rs;
#     express, compression for tests/learned_routes.rs) from its lockfile.
#
#   scripts/install-browser-deps.sh
#
# Needs node >= 18 and npm on PATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

"$root/scripts/install-deps.sh" chromium

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install-browser-deps: $tool not found; install Node.js 18 or newer (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
done

dir="$root/tests/browser"
stamp="$dir/node_modules/.package-lock.json"
# npm ci rewrites node_modules/.package-lock.json; skip when it is newer than the lockfile.
if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
    exit 0
fi
echo "install-browser-deps: npm ci in tests/browser"
(cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
