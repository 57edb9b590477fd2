#!/usr/bin/env bash
# The fuzz targets under libFuzzer, briefly: what CI runs after the tests (see README.md here).
#
#   fuzz/smoke.sh                 # every target: replay seeds + regressions, then fuzz 20 s each
#   METARAG_FUZZ_SECONDS=600 fuzz/smoke.sh load_pdf   # a longer run of one target
#
# Installs cargo-fuzz (pinned, --locked) into <models>/tools once. cargo fuzz passes -Z flags
# (AddressSanitizer); the machine's stable rustc accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
CARGO_FUZZ_VERSION=0.13.2
SECS=${METARAG_FUZZ_SECONDS:-20}
TOOLS="${METARAG_MODELS:-$(cd .. && pwd)/models}/tools"
export PATH="$TOOLS/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS"
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build
run() { # run TARGET LOG ARGS...: cargo fuzz run, failing with the log's tail if libFuzzer does
    local t=$1 log=$2
    shift 2
    if ! cargo fuzz run "$t" "$@" > "$log" 2>&1; then
        # the report (panic message or sanitizer summary), then cargo-fuzz's own tail
        grep -m1 -A 30 -E "panicked at|ERROR: |==[0-9]+==ERROR|deadly signal|Timeout|out-of-memory" "$log" || true
        echo "..."
        tail -n 25 "$log"
        echo "fuzz target $t FAILED; the input is in fuzz/artifacts/$t (log: fuzz/$log)" >&2
        exit 1
    fi
}
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    replay=("seeds/$t")
    [ -d "regressions/$t" ] && replay+=("regressions/$t")
    run "$t" "artifacts/$t/replay.log" "${replay[@]}" -- -runs=0
    echo "== $t: replayed ${replay[*]}"
    # corpus/$t grows across runs (not committed); a crash, hang (-timeout) or leak fails the run
    run "$t" "artifacts/$t/fuzz.log" "corpus/$t" "seeds/$t" -- -max_total_time="$SECS" -timeout=30 \
        -rss_limit_mb=4096 -print_final_stats=1
    echo "== $t: fuzzed ${SECS} s: $(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "artifacts/$t/fuzz.log" | tr -s ' ' | tr '\n' ' ')"
done
