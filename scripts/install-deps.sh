#!/usr/bin/env bash
# Installs Debian packages that are missing, quietly and idempotently.
#
#   scripts/install-deps.sh cmake nginx haproxy curl chromium-driver:chromedriver
#
# Each argument is PACKAGE or PACKAGE:COMMAND. A package counts as present when its
# command is on PATH (`command -v`; the command defaults to the package name, with a
# few known exceptions below), or, for packages without a command, when dpkg has it
# installed. Nothing present -> nothing run, no network. Otherwise one
# `apt-get install -y` for all missing packages, after one `apt-get update` only if
# the package lists are empty or the install fails on stale lists.
set -euo pipefail

# Debian installs daemons' binaries in sbin, which a non-login shell may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

command_for() {
    case "$1" in
        *:*) echo "${1#*:}" ;;
        chromium-driver) echo chromedriver ;;
        linux-perf) echo perf ;;
        *) echo "$1" ;;
    esac
}

missing=()
for arg in "$@"; do
    pkg="${arg%%:*}"
    cmd="$(command_for "$arg")"
    if command -v "$cmd" >/dev/null 2>&1; then
        continue
    fi
    if [ "$cmd" = "$pkg" ] && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        continue # a library or data package: no command to look for
    fi
    missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-deps: missing ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-deps: installing ${missing[*]}"
log="$(mktemp -t install-deps.XXXXXX.log)"

# Package scripts must not start daemons here (nginx would take port 80, for
# example): the tests start their own instances. 101 = "action not allowed".
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    own_policy=1
fi
cleanup() {
    if [ -n "$own_policy" ]; then "${SUDO[@]}" rm -f "$policy"; fi
    rm -f "$log"
}
trap cleanup EXIT

apt_get() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0 "$@" >>"$log" 2>&1
}
install() {
    apt_get install -y --no-install-recommends "${missing[@]}"
}

if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt_get update || { cat "$log" >&2; exit 1; }
    install || { cat "$log" >&2; exit 1; }
elif ! install; then
    # Stale lists are the usual cause (a package version no longer on the mirror).
    if ! { apt_get update && install; }; then
        cat "$log" >&2
        exit 1
    fi
fi
echo "install-deps: installed ${missing[*]}"
