#!/usr/bin/env bash
# Build every fuzz target and run each for a bounded time; fails on the
# first crash, hang, leak or out-of-memory (see docs/fuzzing.md).
#
#   fuzz/run.sh                 # every target, 60 s each
#   SECONDS_PER_TARGET=10 fuzz/run.sh pack tree_order
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes
# (-Zsanitizer=address); the stable sysroot ships the ASan runtime.
# Working corpora grow in fuzz/corpus/<target> (not committed), seeded from
# fuzz/seeds/<target>; crashes land in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
N="${SECONDS_PER_TARGET:-60}"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --target-dir "$TARGET_DIR"
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "=== $t: ${N}s"
    log="$(mktemp)"
    if cargo fuzz run --target-dir "$TARGET_DIR" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$N" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$log" 2>&1; then
        grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$log" || true
        echo "=== $t: ok"
    else
        tail -40 "$log"
        echo "=== $t: FAILED (artifact in fuzz/artifacts/$t)"
        failed+=("$t")
    fi
    rm -f "$log"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${N}s each without a finding"
