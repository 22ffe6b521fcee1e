#!/bin/sh
# cmake.sh BUILDDIR SRCDIR - the installed CMake package works:
#
#  1. `meson install` into a temporary DESTDIR;
#  2. <libdir>/cmake/libtlsmail/ holds libtlsmail-config.cmake and
#     libtlsmail-config-version.cmake;
#  3. tests/install/cmake, a tiny CMake project, finds the package through
#     CMAKE_PREFIX_PATH alone (find_package(libtlsmail 0.N CONFIG)), builds
#     tests/install/subproject/consumer.c against libtlsmail::tlsmail and
#     libtlsmail::tlsmail_static, and runs both: the shared one must load
#     the installed libtlsmail.so.1, the static one no libtlsmail at all;
#  4. asking for a version the package cannot satisfy (the next major)
#     fails at configure time.
#
# Exit 0 on success, 1 on failure, 77 (skip) when cmake is missing (under
# CI=true: 1, a missing tool fails).
set -eu

BUILD=$(cd "${1:?usage: cmake.sh BUILDDIR SRCDIR}" && pwd)
SRC=$(cd "${2:?usage: cmake.sh BUILDDIR SRCDIR}" && pwd)

fail() { echo "cmake.sh: FAIL: $*" >&2; exit 1; }
note() { echo "cmake.sh: $*"; }

for t in cmake meson; do
    command -v "$t" >/dev/null 2>&1 && continue
    [ "${CI:-}" = true ] && fail "$t not found (CI=true: not skipped; tests/deps.sh installs it)"
    echo "cmake.sh: $t not found: skipped"
    exit 77
done
# meson test puts the build tree on LD_LIBRARY_PATH: drop it, so that the
# consumer can only find the installed library (what else is there, e.g. an
# mbedTLS outside the loader's search path, stays).
keep=
if [ -n "${LD_LIBRARY_PATH:-}" ]; then
    build_real=$(cd "$BUILD" && pwd -P)
    old_ifs=$IFS
    IFS=:
    for d in $LD_LIBRARY_PATH; do
        case "$(cd "$d" 2>/dev/null && pwd -P)" in
        "$build_real" | "$build_real"/*) ;;
        *) keep="${keep:+$keep:}$d" ;;
        esac
    done
    IFS=$old_ifs
fi
if [ -n "$keep" ]; then
    export LD_LIBRARY_PATH="$keep"
else
    unset LD_LIBRARY_PATH
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tlsmail-cmake.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
DEST=$TMP/dest

note "meson install --destdir $DEST"
meson install -C "$BUILD" --no-rebuild --quiet --destdir "$DEST" >"$TMP/install.log" 2>&1 ||
    { cat "$TMP/install.log"; fail "meson install"; }

CFG=$(find "$DEST" -path '*/cmake/libtlsmail/libtlsmail-config.cmake' | head -n 1)
[ -n "$CFG" ] || fail "no cmake/libtlsmail/libtlsmail-config.cmake installed"
[ -f "$(dirname "$CFG")/libtlsmail-config-version.cmake" ] ||
    fail "no libtlsmail-config-version.cmake next to $CFG"
SO=$(find "$DEST" -name 'libtlsmail.so.1' | head -n 1)
[ -n "$SO" ] || fail "no libtlsmail.so.1 installed"
LIBDIR=$(dirname "$SO")
[ "$(dirname "$(dirname "$(dirname "$CFG")")")" = "$LIBDIR" ] ||
    fail "$CFG is not in $LIBDIR/cmake/libtlsmail"
note "installed: $CFG"

# The install prefix inside the destdir: the directory that holds include/.
HDR=$(find "$DEST" -name tlsmail.h | head -n 1)
[ -n "$HDR" ] || fail "no tlsmail.h installed"
PREFIX=$(dirname "$(dirname "$HDR")")

version=$(sed -n 's/^set(PACKAGE_VERSION "\([0-9.]*\)")/\1/p' "$(dirname "$CFG")/libtlsmail-config-version.cmake")
[ -n "$version" ] || fail "no PACKAGE_VERSION in libtlsmail-config-version.cmake"
major=${version%%.*}
rest=${version#*.}
minor=${rest%%.*}

cp "$SRC/tests/install/cmake/CMakeLists.txt" "$SRC/tests/install/subproject/consumer.c" "$TMP/"
note "cmake: find_package(libtlsmail $major.$minor CONFIG) with CMAKE_PREFIX_PATH=$PREFIX"
cmake -S "$TMP" -B "$TMP/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DTM_WANT_VERSION="$major.$minor" >"$TMP/configure.log" 2>&1 ||
    { cat "$TMP/configure.log"; fail "cmake configure"; }
grep "libtlsmail $version from" "$TMP/configure.log" ||
    { cat "$TMP/configure.log"; fail "find_package did not report version $version"; }
cmake --build "$TMP/build" -j 2 >"$TMP/build.log" 2>&1 ||
    { cat "$TMP/build.log"; fail "cmake --build"; }

"$TMP/build/consumer" || fail "consumer (shared)"
ldd "$TMP/build/consumer" | grep -q "$LIBDIR/libtlsmail.so.1" ||
    { ldd "$TMP/build/consumer"; fail "consumer does not load the installed libtlsmail.so.1"; }
readelf -d "$TMP/build/consumer" | grep -q 'NEEDED.*\[libtlsmail.so.1\]' ||
    fail "consumer does not need libtlsmail.so.1 by its soname"
note "shared consumer: ok (loads $LIBDIR/libtlsmail.so.1)"

[ -x "$TMP/build/consumer_static" ] || fail "libtlsmail::tlsmail_static was not defined"
"$TMP/build/consumer_static" || fail "consumer_static"
ldd "$TMP/build/consumer_static" | grep -q libtlsmail &&
    fail "consumer_static loads a shared libtlsmail"
note "static consumer: ok"

# The next major version is not this one.
next=$((major + 1))
if cmake -S "$TMP" -B "$TMP/build-next" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DTM_WANT_VERSION="$next.0" >"$TMP/next.log" 2>&1; then
    cat "$TMP/next.log"
    fail "find_package(libtlsmail $next.0) accepted version $version"
fi
grep -q 'version' "$TMP/next.log" || { cat "$TMP/next.log"; fail "no version message"; }
note "find_package(libtlsmail $next.0): refused, as it should be"
note "all cmake package checks passed"
