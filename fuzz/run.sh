#!/usr/bin/env bash
# Fuzzes the pure SCIM core with cargo-fuzz (libFuzzer), one target after the
# other, each for SECONDS seconds: `filter` (filter parser/evaluator, PATCH
# paths, sortBy), `patch` (PATCH engine, POST/PUT normalisation, projection)
# and `sizes` (a few bytes grown into 10^5-term chains and deep nesting).
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     # `make fuzz` = 600 s each
#
# Seeds (fuzz/seeds/<target>, committed) are copied into the working corpus
# (fuzz/corpus/<target>, not committed), which grows across runs. libFuzzer's
# whole output goes to fuzz/artifacts/<target>.log; the script prints its
# final status line and stats. A crash, panic or timeout leaves its input in
# fuzz/artifacts/<target>/ and makes the script exit non-zero after the
# remaining targets have run. Replay one with
#   cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
#
# Environment: FUZZ_SANITIZER (none | address, default none: the code under
# test is safe Rust, so a panic is what we look for, and `none` runs 3-5x
# faster here; `address` needs RUSTC_BOOTSTRAP=1, which the script sets),
# FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(filter patch sizes)
sanitizer=${FUZZ_SANITIZER:-none}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# With `--sanitizer none` cargo-fuzz passes only stable rustc flags (coverage
# instrumentation through -Cllvm-args). A sanitizer needs -Zsanitizer, which
# the machine's stable Rust accepts with RUSTC_BOOTSTRAP=1.
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

failed=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    # Not inside artifacts/$t: cargo-fuzz replays the newest file there after a crash.
    log=fuzz/artifacts/$t.log
    echo "== fuzzing $t for ${seconds}s (sanitizer: $sanitizer, corpus: $corpus, $(ls "$corpus" | wc -l) inputs)"
    if ! cargo fuzz build --sanitizer "$sanitizer" "$t" >"$log" 2>&1; then
        echo "!! $t: the fuzz target does not build; the end of $log:"
        tail -n 30 "$log" | cut -c1-300
        failed+=("$t (build)")
        continue
    fi
    status=0
    # One in-process fuzzer (no -jobs/-fork: those move the output into
    # fuzz-N.log files and restart after a crash).
    # shellcheck disable=SC2086
    cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=25 -max_len=8192 \
        -dict="fuzz/dict/$t.dict" -print_final_stats=1 \
        ${FUZZ_ARGS:-} >>"$log" 2>&1 || status=$?
    # The final libFuzzer status line (executions, coverage, corpus) and stats.
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | tail -n 2 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" |
        awk '!seen[$0]++' || true
    if [ "$status" -ne 0 ]; then
        echo "!! $t FAILED (exit $status); from $log:"
        grep -E -A1 'panicked at|^SUMMARY|Test unit written to' "$log" | cut -c1-300 | head -n 20 || true
        failed+=("$t")
    else
        echo "== $t: no crash in ${seconds}s"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed for: ${failed[*]} (crashing inputs in fuzz/artifacts/<target>/)"
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
