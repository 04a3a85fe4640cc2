#!/usr/bin/env bash
# Bounded fuzzing of every target in fuzz/fuzz_targets: installs cargo-fuzz
# if missing (pinned), builds all targets once (release, no sanitizer: lb's
# crates forbid unsafe code), then runs each for SECONDS (default 30) from
# the committed seed corpus, one after the other. Exits non-zero on the
# first crash, leak, timeout or out-of-memory; the input that did it is in
# fuzz/artifacts/<target>/. New inputs the fuzzer finds go to
# fuzz/work/<target>/ (not committed).
#
#   fuzz/run.sh [SECONDS]
set -euo pipefail

SECONDS_PER_TARGET="${1:-30}"
CARGO_FUZZ_VERSION="0.13.2"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

dict_for() {
    case "$1" in
        h1_head | h1_rewrite | chunked) echo "-dict=$here/dict/http1.dict" ;;
        manifest) echo "-dict=$here/dict/manifest.dict" ;;
    esac
}

start=$(date +%s)
cargo "+$TOOLCHAIN" fuzz build -O -s none
echo "fuzz: built all targets in $(($(date +%s) - start)) s"

status=0
for target in $(cargo "+$TOOLCHAIN" fuzz list); do
    mkdir -p "work/$target" "corpus/$target" "artifacts/$target"
    log="work/$target.log"
    # shellcheck disable=SC2046
    if cargo "+$TOOLCHAIN" fuzz run -O -s none "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 $(dict_for "$target") \
        >"$log" 2>&1; then
        execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "fuzz: $target: ${execs:-?} executions in ${SECONDS_PER_TARGET} s, no crash"
    else
        echo "fuzz: $target: FAILED (log: fuzz/$log, input in fuzz/artifacts/$target/)"
        tail -n 40 "$log"
        status=1
    fi
done
exit $status
