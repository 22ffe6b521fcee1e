#!/bin/sh
# Every test: installs what is missing, builds with gcc and with clang
# (-Werror), runs the whole suite (unit, real Postfix + dnsmasq, hostile
# server, header and symbol checks), then again under ASan+UBSan, and runs
# each fuzzer briefly.  Under CI=true a missing peer fails instead of
# skipping.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh tests/deps.sh

run_suite() {
    dir=$1
    shift
    echo "== $dir: meson setup $*"
    rm -rf "$dir"
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
    ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log"; exit 1; }
    meson test -C "$dir" --print-errorlogs --num-processes 2
}

run_suite build-gcc
CC=clang run_suite build-clang
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    CC=clang run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false

if [ -f tests/fuzz/run.sh ]; then
    echo "== fuzzers"
    rm -rf build-fuzz
    CC=clang meson setup build-fuzz -Dfuzzing=true >build-fuzz.setup.log 2>&1 || { cat build-fuzz.setup.log; exit 1; }
    ninja -C build-fuzz >build-fuzz.build.log 2>&1 || { cat build-fuzz.build.log; exit 1; }
    sh tests/fuzz/run.sh build-fuzz "${TM_FUZZ_SECONDS:-15}"
fi
echo "== all tests passed"
