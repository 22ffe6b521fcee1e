#!/bin/sh
# Every test: installs what is missing, then
#   1. gcc (-Werror): the whole suite - unit, every behaviour folder
#      (starttls, replies, connection, certificates, content, recipients,
#      sessions, resumption, mx, settings, load, tm-send, dane) against the hostile
#      server and real Postfix + dnsmasq (+ a validating unbound for DANE), ABI,
#      Python, Go, install check;
#   1b. Debian: the packages built from the clean checkout (HEAD), lintian,
#      installed with apt, debian/tests/smoke, purged (tests/package/debian.sh);
#   2. clang (-Werror): builds everything, runs the unit tests;
#   3. clang ASan+UBSan: the whole C suite again;
#   4. clang TSan: the unit tests (settings readers and writers on threads);
#   5. valgrind memcheck: unit, hostile-server and load tests
#      (tests/valgrind.sh);
#   6. each libFuzzer target briefly.
# Under CI=true a missing peer fails instead of skipping.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh tests/deps.sh
start=$(date +%s)
passed=0

# setup_build DIR [meson options...]
setup_build() {
    dir=$1
    shift
    echo "== $dir: meson setup $*"
    rm -rf "$dir"
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
    ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log"; exit 1; }
}

# run_tests DIR [meson test options...]
run_tests() {
    dir=$1
    shift
    if meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" >"$dir.test.log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    cat "$dir.test.log"
    [ "$rc" -eq 0 ] || { echo "== $dir: meson test failed ($rc)"; exit "$rc"; }
    ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$dir.test.log")
    passed=$((passed + ${ok:-0}))
    echo "== $dir: done at $(( $(date +%s) - start )) s"
}

setup_build build-gcc
run_tests build-gcc

# 4 checks: built with its build-time tests, lintian without errors,
# installed, smoke test; always purged afterwards.  77: skipped (not CI).
echo "== debian: tests/package/debian.sh"
if sh tests/package/debian.sh; then
    passed=$((passed + 4))
else
    rc=$?
    [ "$rc" -eq 77 ] || { echo "== debian: failed ($rc)"; exit "$rc"; }
fi
echo "== debian: done at $(( $(date +%s) - start )) s"

CC=clang setup_build build-clang
run_tests build-clang --suite unit --suite fuzz

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
CC=clang setup_build build-asan -Db_sanitize=address,undefined -Db_lundef=false
run_tests build-asan
unset ASAN_OPTIONS UBSAN_OPTIONS

CC=clang setup_build build-tsan -Db_sanitize=thread -Db_lundef=false
TSAN_OPTIONS=halt_on_error=1 run_tests build-tsan --suite unit

echo "== valgrind"
sh tests/valgrind.sh build-gcc
echo "== valgrind: done at $(( $(date +%s) - start )) s"

echo "== fuzzers"
CC=clang setup_build build-fuzz -Dfuzzing=true
sh tests/fuzz/run.sh build-fuzz "${TM_FUZZ_SECONDS:-5}"
echo "== all tests passed in $(( $(date +%s) - start )) s"
echo "tests: $passed passed, 0 failed"
