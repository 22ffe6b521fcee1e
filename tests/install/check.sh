#!/bin/sh
# check.sh BUILDDIR SRCDIR - prove that an installed libtlsmail is usable
# the way a packager or a downstream project would use it:
#
#  1. `meson install` into a temporary DESTDIR;
#  2. libtlsmail.pc: the right prefix, Libs, and Libs.private /
#     Requires.private complete for static linking with mbedTLS;
#  3. build examples/c/*.c from outside the tree with only
#     `pkg-config --cflags --libs libtlsmail`, with every C compiler found
#     (-Wall -Wextra -Werror), run them (--help, and against the real peers
#     when TM_TEST_PORT is set: run this through tests/peers/peers.py);
#  4. link them fully static with `pkg-config --static` and run them;
#  5. build tests/install/subproject, a tiny meson project that takes
#     libtlsmail as a subproject (dependency() fallback), and run it.
#
# Exit 0 on success, 1 on failure, 77 (skip) when a tool is missing.
# Without TM_TEST_PORT the deliveries are skipped, unless CI=true.
set -eu

BUILD=$(cd "${1:?usage: check.sh BUILDDIR SRCDIR}" && pwd)
SRC=$(cd "${2:?usage: check.sh BUILDDIR SRCDIR}" && pwd)

fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }
note() { echo "check.sh: $*"; }

for t in meson pkg-config ninja; do
    command -v "$t" >/dev/null 2>&1 || { echo "check.sh: $t not found: skipped"; exit 77; }
done

# What the caller's environment says (an mbedTLS outside the default paths,
# say): extended, never replaced.
# meson test puts the build tree on LD_LIBRARY_PATH: that part is dropped,
# so every check below loads the library it means to.
ORIG_PKG_CONFIG_PATH=${PKG_CONFIG_PATH:-}
ORIG_LD_LIBRARY_PATH=$(printf '%s' "${LD_LIBRARY_PATH:-}" | tr ':' '\n' |
    grep -v -x -e "$BUILD" -e "$BUILD/" | paste -s -d: -)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tlsmail-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
DEST=$TMP/dest

# -- 1. install ---------------------------------------------------------------
note "meson install --destdir $DEST"
meson install -C "$BUILD" --no-rebuild --quiet --destdir "$DEST" >"$TMP/install.log" 2>&1 ||
    { cat "$TMP/install.log"; fail "meson install"; }

PC=$(find "$DEST" -name libtlsmail.pc | head -n 1)
[ -n "$PC" ] || fail "no libtlsmail.pc installed"
PCDIR=$(dirname "$PC")
HDR=$(find "$DEST" -name tlsmail.h | head -n 1)
[ -n "$HDR" ] || fail "no tlsmail.h installed"
SO=$(find "$DEST" -name 'libtlsmail.so.1' | head -n 1)
[ -n "$SO" ] || fail "no libtlsmail.so.1 installed"
A=$(find "$DEST" -name 'libtlsmail.a' | head -n 1)
[ -n "$A" ] || fail "no libtlsmail.a installed"
LIBDIR=$(dirname "$SO")
note "installed: $PC $HDR $SO $A"
# Both installed libraries export the header's functions and nothing else
# (the archive's internal tm__ symbols are local).
python3 "$SRC/tests/check_symbols.py" "$HDR" "$SO" --static "$A" ||
    fail "installed libraries export more or less than the header declares"

# -- 2. the .pc file ---------------------------------------------------------
cat "$PC"
# Our .pc, moved into the destdir by its prefix alone (a sysroot would move
# every package's paths, mbedTLS's .pc files too where they exist).
pcprefix=$(sed -n 's/^prefix=//p' "$PC")
case "$pcprefix" in
    /*) [ -d "$DEST$pcprefix" ] || fail "prefix $pcprefix is not under the destdir" ;;
    *) fail "prefix $pcprefix is not absolute" ;;
esac
mkdir "$TMP/pc"
sed "s#^prefix=.*#prefix=$DEST$pcprefix#" "$PC" >"$TMP/pc/libtlsmail.pc"
export PKG_CONFIG_PATH="$TMP/pc${ORIG_PKG_CONFIG_PATH:+:$ORIG_PKG_CONFIG_PATH}"
grep -q '^Libs:.*-ltlsmail' "$PC" || fail "Libs lacks -ltlsmail"
grep '^Libs:' "$PC" | grep -q -e '-lmbed' -e '-lresolv' &&
    fail "Libs must not carry private libraries (overlinking)"
if grep -q '^Requires.private:.*mbedtls' "$PC"; then
    note "mbedTLS via Requires.private (it ships .pc files)"
    for m in mbedtls mbedx509 mbedcrypto; do
        grep -q "^Requires.private:.*$m" "$PC" || fail "Requires.private lacks $m"
    done
else
    for l in -lmbedtls -lmbedx509 -lmbedcrypto -lresolv; do
        grep -q "^Libs.private:.*$l" "$PC" || fail "Libs.private lacks $l"
    done
fi
grep -q '^Libs.private:.*-lresolv' "$PC" || fail "Libs.private lacks -lresolv"
grep -q '^Libs.private:.*-pthread' "$PC" || fail "Libs.private lacks -pthread"
# mbedTLS order matters for static linking: tls before x509 before crypto.
sed -n 's/^Libs.private://p' "$PC" | awk '{
    for (i = 1; i <= NF; i++) pos[$i] = i
    if (("-lmbedtls" in pos) && !(pos["-lmbedtls"] < pos["-lmbedx509"] && pos["-lmbedx509"] < pos["-lmbedcrypto"])) exit 1
}' || fail "Libs.private mbedTLS order must be -lmbedtls -lmbedx509 -lmbedcrypto"

CFLAGS_PC=$(pkg-config --cflags libtlsmail)
LIBS_PC=$(pkg-config --libs libtlsmail)
LIBS_STATIC=$(pkg-config --libs --static libtlsmail)
note "cflags: $CFLAGS_PC"
note "libs: $LIBS_PC"
note "libs --static: $LIBS_STATIC"
echo "$CFLAGS_PC" | grep -q "$DEST" || fail "--cflags does not point into the destdir"

# -- 3. build the examples outside the tree, shared ---------------------------
cd "$TMP"
CCS=""
for cc in gcc clang cc; do
    command -v "$cc" >/dev/null 2>&1 && CCS="$CCS $cc"
done
[ -n "$CCS" ] || { echo "check.sh: no C compiler: skipped"; exit 77; }
for cc in $CCS; do
    for src in "$SRC"/examples/c/*.c; do
        name=$(basename "$src" .c)
        # shellcheck disable=SC2086
        "$cc" -std=c99 -Wall -Wextra -Werror -pedantic $CFLAGS_PC "$src" $LIBS_PC \
            -o "$TMP/$name-$cc" || fail "$cc: $name (shared)"
    done
    note "$cc: built $(ls "$SRC"/examples/c/*.c | wc -l) examples against the installed library"
done
cc1=$(echo $CCS | cut -d' ' -f1)
export LD_LIBRARY_PATH="$LIBDIR${ORIG_LD_LIBRARY_PATH:+:$ORIG_LD_LIBRARY_PATH}"
ldd "$TMP/deliver-$cc1" | grep -q "$LIBDIR/libtlsmail.so.1" ||
    { ldd "$TMP/deliver-$cc1"; fail "deliver does not load the installed libtlsmail.so.1"; }
"$TMP/deliver-$cc1" --help || fail "deliver --help"
set +e
"$TMP/deliver-$cc1" >/dev/null 2>&1
rc=$?
set -e
[ "$rc" = 64 ] || fail "deliver without arguments: exit $rc, expected 64"

# -- 4. fully static ----------------------------------------------------------
for src in "$SRC"/examples/c/*.c; do
    name=$(basename "$src" .c)
    # shellcheck disable=SC2086
    "$cc1" -std=c99 -Wall -Wextra -Werror -static $CFLAGS_PC "$src" $LIBS_STATIC \
        -o "$TMP/$name-static" 2>>"$TMP/static.log" ||
        { cat "$TMP/static.log"; fail "$name: static link with pkg-config --static"; }
done
# glibc warns that getaddrinfo in a static binary needs its NSS modules at
# run time; nothing else may be reported.
grep -v -e 'getaddrinfo' -e 'statically linked applications requires' -e 'in function' \
    "$TMP/static.log" | grep -q . && { cat "$TMP/static.log"; fail "static link warnings"; }
if ldd "$TMP/deliver-static" >/dev/null 2>&1; then
    fail "deliver-static is dynamically linked"
fi
env -u LD_LIBRARY_PATH "$TMP/deliver-static" --help || fail "deliver-static --help"
note "static link with pkg-config --static: ok"

# -- against the real peers ---------------------------------------------------
if [ -n "${TM_TEST_PORT:-}" ]; then
    for bin in "deliver-$cc1" deliver-static; do
        local_part="install-$bin-$$"
        out=$("$TMP/$bin" "$local_part@valid.tm.test") || { echo "$out"; fail "$bin: delivery"; }
        echo "$out"
        echo "$out" | grep -q '"certificate-verified": true' || fail "$bin: not verified"
        echo "$out" | grep -q '"mx-host": "mx-valid.tm.test"' || fail "$bin: wrong MX"
        i=0
        while [ -z "$(ls "$TM_TEST_MAILDIR/valid.tm.test/$local_part/new" 2>/dev/null)" ]; do
            i=$((i + 1))
            [ $i -lt 100 ] || fail "$bin: the message did not arrive"
            sleep 0.1
        done
    done
    set +e
    "$TMP/require_tls-$cc1" "install-$$@plain.tm.test"
    rc=$?
    set -e
    [ "$rc" = 75 ] || fail "require_tls to plain.tm.test: exit $rc, expected 75 (deferred)"
    "$TMP/session-$cc1" "install-session-$$@valid.tm.test" 2 || fail "session"
    note "examples delivered through the real peers"
elif [ "${CI:-}" = true ]; then
    fail "TM_TEST_PORT is not set (CI=true): run check.sh through tests/peers/peers.py"
else
    note "TM_TEST_PORT not set: deliveries skipped (run through tests/peers/peers.py)"
fi

# -- 5. as a meson subproject --------------------------------------------------
PKG_CONFIG_PATH=$ORIG_PKG_CONFIG_PATH
LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH
export PKG_CONFIG_PATH LD_LIBRARY_PATH
SP=$TMP/consumer
cp -R "$SRC/tests/install/subproject" "$SP"
mkdir -p "$SP/subprojects"
# A copy of the source tree without build directories or VCS data.
mkdir "$SP/subprojects/libtlsmail"
(cd "$SRC" && tar cf - --exclude=./build --exclude='./build-*' --exclude=./.git \
    --exclude=./subprojects --exclude='*.pyc' .) | (cd "$SP/subprojects/libtlsmail" && tar xf -)
note "meson setup (libtlsmail as a subproject)"
meson setup --force-fallback-for=libtlsmail "$SP/build" "$SP" >"$TMP/sp-setup.log" 2>&1 ||
    { cat "$TMP/sp-setup.log"; fail "subproject: meson setup"; }
grep -q 'libtlsmail.*subproject\|Executing subproject libtlsmail' "$TMP/sp-setup.log" ||
    { cat "$TMP/sp-setup.log"; fail "subproject: libtlsmail was not taken as a subproject"; }
ninja -C "$SP/build" consumer >"$TMP/sp-build.log" 2>&1 ||
    { cat "$TMP/sp-build.log"; fail "subproject: build"; }
"$SP/build/consumer" || fail "subproject: consumer"
ldd "$SP/build/consumer" | grep -q "$SP/build/subprojects/libtlsmail/libtlsmail.so.1" ||
    { ldd "$SP/build/consumer"; fail "subproject: consumer does not use the subproject's library"; }
note "subproject build: ok"
note "all install checks passed"
