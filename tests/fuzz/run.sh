#!/bin/sh
# Runs every libFuzzer target for SECONDS seconds over its seed corpus.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR was configured with CC=clang and -Dfuzzing=true.  New inputs go
# to BUILD_DIR/fuzz-work/NAME (the seed corpus in the source tree is only
# read); a crash leaves BUILD_DIR/fuzz-artifacts/NAME-crash-* and makes the
# script exit non-zero.  Add such a file to tests/fuzz/corpus/NAME/ once
# the bug is fixed.
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$1
seconds=$2
src=$(cd "$(dirname "$0")" && pwd)
status=0
# fuzz_body_isaN: the encoder's slower paths, fuzzed on the body corpus
names="reply body address dns settings sts body_isa0 body_isa1 body_isa2 client sendmail queue dsn"
for name in $names; do
    if [ ! -x "$build/tests/fuzz/fuzz_$name" ]; then
        echo "$build/tests/fuzz/fuzz_$name: not built (CC=clang meson setup ... -Dfuzzing=true)" >&2
        exit 2
    fi
done

# One target: its log in BUILD_DIR/fuzz-NAME.log, its exit code in
# BUILD_DIR/fuzz-NAME.rc.
fuzz_one() {
    name=$1
    corpus=${name%%_isa*}
    work=$build/fuzz-work/$name
    art=$build/fuzz-artifacts
    mkdir -p "$work" "$art"
    "$build/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$art/$name-" "$work" "$src/corpus/$corpus" \
        >"$build/fuzz-$name.log" 2>&1
    echo $? >"$build/fuzz-$name.rc"
}

# Two targets at a time (one per core of the machines the suite runs on):
# each still gets SECONDS of its own.
set -- $names
while [ $# -gt 0 ]; do
    first=$1
    shift
    second=
    if [ $# -gt 0 ]; then
        second=$1
        shift
    fi
    echo "== fuzz_$first${second:+ and fuzz_$second} for ${seconds}s"
    fuzz_one "$first" &
    [ -n "$second" ] && fuzz_one "$second" &
    wait
    for name in $first $second; do
        if [ "$(cat "$build/fuzz-$name.rc")" = 0 ]; then
            echo "fuzz_$name:"
            grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)|cov:' \
                "$build/fuzz-$name.log" | tail -4
        else
            echo "fuzz_$name FAILED; log: $build/fuzz-$name.log" >&2
            tail -40 "$build/fuzz-$name.log" >&2
            status=1
        fi
    done
done
exit $status
