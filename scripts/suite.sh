#!/usr/bin/env bash
# `make test`'s runner: each step is a Makefile target, run in order with a time
# limit, and the suite goes on after a failure so that one run shows every problem.
# It ends with a table of steps and durations and one closing line,
#   suite: N passed, N failed, N skipped
# where N counts cargo's tests (from its "test result:" lines) plus the other steps.
# Exit status: 0 only if nothing failed.
#
#   scripts/suite.sh [STEP...]     (default: every step below)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# name:time-limit. Cheap static checks first, then the one release build everything shares.
DEFAULT_STEPS=(
    fmt-check:5m
    shellcheck:5m
    hadolint:5m
    clippy:30m
    cargo-test:45m
    check-config:5m
    k8s-validate:5m
    docker-check:20m
    bench-smoke:15m
    soak-smoke:6m
    fuzz-smoke:25m
)
steps=("${@:-${DEFAULT_STEPS[@]}}")

logs="target/suite"
mkdir -p "$logs"
export SUITE_NOTE="$logs/note"
passed=0 failed=0 skipped=0
rows=()
start_all=$SECONDS

for entry in "${steps[@]}"; do
    step="${entry%%:*}"
    limit="${entry#*:}"
    [ "$limit" = "$entry" ] && limit=30m
    echo
    echo "=== $step"
    rm -f "$SUITE_NOTE"
    t0=$SECONDS
    timeout --kill-after=30s "$limit" make --no-print-directory "$step" 2>&1 | tee "$logs/$step.log"
    rc=${PIPESTATUS[0]}
    dt=$((SECONDS - t0))
    note=""
    [ "$rc" -eq 124 ] && note="timed out after $limit"
    if [ "$step" = cargo-test ]; then
        # Sum cargo's own per-binary summaries.
        read -r p f i < <(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' \
            "$logs/$step.log" | awk '{ p += $1; f += $2; i += $3 } END { print p + 0, f + 0, i + 0 }')
        passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + i))
        note="${note:+$note; }$p passed, $f failed, $i ignored"
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi # a build error
    elif [ "$rc" -eq 0 ] && [ -s "$SUITE_NOTE" ]; then
        skipped=$((skipped + 1))
        note="$(cat "$SUITE_NOTE")"
        rc=skip
    elif [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
    case "$rc" in
        0) status=ok ;;
        skip) status=skipped ;;
        *) status=FAILED ;;
    esac
    rows+=("$(printf '  %-8s %-14s %5ss  %s' "$status" "$step" "$dt" "$note")")
done

echo
echo "=== make test: $((SECONDS - start_all)) s (logs in $logs/)"
printf '%s\n' "${rows[@]}"
echo "suite: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
