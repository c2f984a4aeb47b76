#!/usr/bin/env bash
# Coverage-guided fuzzing of the byte parsers (issue 19): every target in tests/fuzz/ for
# FUZZ_SECS seconds each, one after the other, with libFuzzer through cargo-fuzz.
#
#   scripts/fuzz.sh [TARGET...]     (default: every target; FUZZ_SECS=300, 60 when CI=true)
#
# Needs the nightly toolchain (cargo-fuzz builds with -Z flags); installs cargo-fuzz under
# target/cargo-fuzz/ when it is not on PATH (a no-op afterwards). The targets are built once,
# without a sanitizer (the crate denies unsafe code; debug assertions and overflow checks stay
# on), into target/fuzz/. Each target starts from its committed seeds (tests/fuzz/seeds/) and
# the corpus earlier runs grew (target/fuzz-corpus/, not committed). A crash is saved in
# target/fuzz-artifacts/<target>/ and fails the run after the other targets ran; reproduce it
# with `cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> <file>`.
# Ends with a table: executions, exec/s, libFuzzer's cov (edges) and ft (features), corpus.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1

CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR=tests/fuzz
secs="${FUZZ_SECS:-$([ "${CI:-}" = true ] && echo 60 || echo 300)}"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: cargo-fuzz needs a nightly toolchain, and rustup lists none." >&2
    echo "fuzz: install one with: rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi

if ! command -v cargo-fuzz >/dev/null; then
    export PATH="$PWD/target/cargo-fuzz/bin:$PATH"
    if ! command -v cargo-fuzz >/dev/null; then
        echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into target/cargo-fuzz" >&2
        cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root target/cargo-fuzz
    fi
fi

fuzz=(cargo +nightly fuzz)
opts=(--fuzz-dir "$FUZZ_DIR" --target-dir target/fuzz --sanitizer none --debug-assertions)
mapfile -t all < <("${fuzz[@]}" list --fuzz-dir "$FUZZ_DIR")
targets=("${@:-${all[@]}}")

"${fuzz[@]}" build "${opts[@]}"

rows=()
failed=0
for t in "${targets[@]}"; do
    corpus="target/fuzz-corpus/$t"
    artifacts="target/fuzz-artifacts/$t"
    log="target/fuzz-logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    echo "=== fuzz $t: ${secs}s"
    rc=0
    # New inputs go to the first directory; the seeds are only read.
    "${fuzz[@]}" run "${opts[@]}" "$t" "$corpus" "$FUZZ_DIR/seeds/$t" -- \
        -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # The last status line: "#N  DONE  cov: C ft: F corp: K/S ...".
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    status=ok
    if [ "$rc" -ne 0 ]; then
        status=FAILED
        failed=$((failed + 1))
        grep -E 'panicked at|^SUMMARY|Test unit written to' "$log" >&2 || tail -20 "$log" >&2
    fi
    rows+=("$(printf '  %-7s %-11s %12s %8s %6s %7s %10s' "$status" "$t" "${execs:-?}" "${speed:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}")")
done

echo
printf '  %-7s %-11s %12s %8s %6s %7s %10s\n' result target execs exec/s cov ft corpus
printf '%s\n' "${rows[@]}"
echo "fuzz: ${#targets[@]} targets, ${secs}s each, $failed failed (logs in target/fuzz-logs/)"
[ "$failed" -eq 0 ]
