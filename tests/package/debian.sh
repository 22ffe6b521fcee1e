#!/bin/sh
# tests/package/debian.sh [REPO] - the Debian packages, from the clean
# checkout to the installed files (REPO: this checkout by default):
#
#  1. build: `git archive HEAD` into a fresh temporary directory (exactly the
#     commit: no build directory, no uncommitted change of the working tree),
#     `dpkg-buildpackage -b -us -uc` there with DEB_BUILD_OPTIONS=parallel=2
#     (no nocheck: dh_auto_test runs the unit suite and the header, symbol
#     and docs checks); the .debs land in the directory's parent;
#  2. lintian --fail-on error on the .changes: no error (its output printed);
#  3. install: `apt-get install` of the .debs of the packages debian/control
#     defines (not the -dbgsym ones), each listed in the .changes;
#  4. smoke: debian/tests/smoke of the exported tree, against the installed
#     files only (pkg-config and CMake consumers, `import tlsmail` with no
#     PYTHONPATH, tm-send, its sendmail mode and python3-tlsmail delivering
#     to a private Postfix, checked in its maildir);
#  5. purge, always, success or failure: the packages and whatever apt
#     installed with them (and nothing else needs), so that the machine is
#     as before and no build tree's test finds an installed copy.
#
# It installs into the system, so it needs root (or sudo).  Steps 3 to 5
# hold /tmp/tm-peers.lock, the lock of peer runs on a shared machine, which
# also keeps two runs of this script from installing over each other.
# Packages of these names already installed from elsewhere are not replaced
# (that would purge them afterwards): it fails, unless CI=true (a fresh
# machine) or TM_DEBIAN_REPLACE=1.
#
# Exit 0 when all passed, 1 on failure, 77 (skip) when not root and no sudo
# or a tool is missing; under CI=true those fail.  Build and install logs are
# kept in files, printed on failure.
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
REPO=$(cd "${1:-$top}" && pwd)
LOCK=/tmp/tm-peers.lock
# A package build sees the system's tools, as in a build chroot (not a
# pyenv or venv python3 first on PATH), and nothing of the developer's.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset PYTHONPATH LD_LIBRARY_PATH PKG_CONFIG_PATH TLSMAIL_LIBRARY TLSMAIL_BUILD_DIR \
    CMAKE_PREFIX_PATH DEB_BUILD_OPTIONS DEB_BUILD_PROFILES MAKEFLAGS CC CXX CFLAGS LDFLAGS

note() { echo "debian: $*"; }
fail() { echo "debian: FAIL: $*" >&2; exit 1; }
# skip WHY: 77, or a failure under CI=true
skip() {
    [ "${CI:-}" = true ] && fail "$* (CI=true: not skipped)"
    note "$*: skipped"
    exit 77
}
now() { date +%s; }

# -- what it needs -------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
else
    skip "needs root (apt-get install, the private Postfix of the smoke test), and there is no sudo"
fi
for t in git tar dpkg-buildpackage dpkg-checkbuilddeps lintian apt-get dpkg-query flock; do
    command -v "$t" >/dev/null 2>&1 || skip "$t not found (tests/deps.sh installs it)"
done
git -C "$REPO" rev-parse --verify -q HEAD >/dev/null || fail "$REPO: not a git checkout with a commit"
# The packages, from debian/control as committed.
pkgs=$(git -C "$REPO" show HEAD:debian/control | sed -n 's/^Package:[[:space:]]*//p' | tr '\n' ' ')
pkgs=${pkgs% }
[ -n "$pkgs" ] || fail "no Package in debian/control"

# -- cleanup: purge what was installed, remove the temporary tree -----------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tlsmail-deb.XXXXXX")
before=          # dpkg's installed list before step 3; set: purge at exit
cleanup() {
    rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$before" ]; then
        t0=$(now)
        # Our packages, then what apt installed with them: new since step 3
        # and now autoremovable (needed by nothing else, so that a package
        # someone else installed meanwhile is never taken away).
        # shellcheck disable=SC2086
        purge_known $pkgs
        installed_list >"$TMP/after.txt"
        new=$(LC_ALL=C comm -13 "$TMP/before.txt" "$TMP/after.txt" | sed "s/:$ARCH\$//")
        orphans=$(apt-get -s autoremove 2>/dev/null | sed -n 's/^Remv \([^ ]*\).*/\1/p' | tr '\n' ' ')
        deps=
        for p in $new; do
            case " $orphans " in *" $p "*) deps="$deps $p" ;; esac
        done
        # shellcheck disable=SC2086
        [ -z "$deps" ] || purge_known $deps
        for p in $pkgs; do
            ! known "$p" || { echo "debian: FAIL: $p is still known to dpkg after the purge" >&2; rc=1; }
        done
        for f in /usr/lib/"$MULTIARCH"/libtlsmail.so.1 /usr/include/tlsmail.h /usr/bin/tm-send \
            /usr/lib/python3/dist-packages/tlsmail; do
            [ ! -e "$f" ] || { echo "debian: FAIL: $f is left after the purge" >&2; rc=1; }
        done
        note "purge: $(($(now) - t0)) s"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# purge_known PACKAGE...: apt-get purge of those dpkg knows (apt-get fails
# on a name it cannot find); rc=1 when it fails
purge_known() {
    purge=
    for p in "$@"; do
        if known "$p"; then purge="$purge $p"; fi
    done
    [ -n "$purge" ] || return 0
    note "purge:$purge"
    # shellcheck disable=SC2086
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get purge -y $purge \
        >"$TMP/purge.log" 2>&1 9<&-; then
        cat "$TMP/purge.log"
        echo "debian: FAIL: apt-get purge$purge" >&2
        rc=1
    fi
}
# installed_list: "package:arch" of every package dpkg has (not merely
# knows of), sorted
installed_list() {
    dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' |
        awk '$1 ~ /^.[^n]/ { print $2 }' | LC_ALL=C sort -u
}
# known PACKAGE: dpkg has it installed, half-installed or its config files
known() {
    case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" in
        "" | ?n*) return 1 ;;
    esac
}

# check_present: packages of our names installed from elsewhere are refused,
# unless CI=true or TM_DEBIAN_REPLACE=1
check_present() {
    present=
    for p in $pkgs; do
        if known "$p"; then
            present="$present $p($(dpkg-query -W -f='${Version}' "$p"))"
        fi
    done
    [ -n "$present" ] || return 0
    if [ "${CI:-}" = true ] || [ "${TM_DEBIAN_REPLACE:-}" = 1 ]; then
        note "already installed:$present: replaced, then purged"
    else
        fail "already installed:$present; this step would replace them and purge them afterwards.
  Purge them first (apt-get purge $pkgs) or set TM_DEBIAN_REPLACE=1 (CI=true does)."
    fi
}
# Early, so as not to build for nothing; again under the lock, before installing.
check_present

# -- 1. build from the committed tree -----------------------------------------------
t_start=$(now)
SRC=$TMP/libtlsmail
mkdir "$SRC"
head=$(git -C "$REPO" rev-parse --short HEAD)
if [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    note "the working tree has uncommitted changes: they are not in the packages (HEAD $head is built)"
fi
git -C "$REPO" archive --format=tar HEAD | tar -x -C "$SRC" || fail "git archive HEAD"
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
ARCH=$(dpkg --print-architecture)
version=$(cd "$SRC" && dpkg-parsechangelog -S Version)
note "build: dpkg-buildpackage -b -us -uc of $head ($version) in $SRC"
if ! (cd "$SRC" && DEB_BUILD_OPTIONS=parallel=2 dpkg-buildpackage -b -us -uc) \
    >"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log"
    fail "dpkg-buildpackage -b -us -uc"
fi
# The build's own test run must have happened and passed.
grep -Eq '^Ok: +[1-9]' "$TMP/build.log" ||
    { cat "$TMP/build.log"; fail "dh_auto_test ran no test"; }
grep -E '^(Ok|Fail|Skipped|Timeout): ' "$TMP/build.log" | tr -s ' ' | paste -sd ' ' |
    sed 's/^/debian: build-time tests: /'
changes=$(ls "$TMP"/libtlsmail_*.changes 2>/dev/null) || fail "no .changes in $TMP"
debs=
for p in $pkgs; do
    deb=$(ls "$TMP/${p}_"*.deb 2>/dev/null) || fail "no .deb for $p (debian/control) in $TMP"
    [ "$(echo "$deb" | wc -l)" -eq 1 ] || fail "more than one .deb for $p: $deb"
    grep -q " $(basename "$deb")\$" "$changes" || fail "$(basename "$deb") is not in $(basename "$changes")"
    debs="$debs $deb"
done
t_build=$(($(now) - t_start))
for d in $debs; do note "built $(basename "$d") ($(wc -c <"$d") bytes)"; done
note "build: ${t_build} s"

# -- 2. lintian ------------------------------------------------------------------------
t0=$(now)
note "lintian --fail-on error $(basename "$changes")"
if lintian --fail-on error "$changes" >"$TMP/lintian.log" 2>&1; then
    rc=0
else
    rc=$?
fi
cat "$TMP/lintian.log"
[ "$rc" -eq 0 ] || fail "lintian: errors (exit $rc)"
grep -q '^E: ' "$TMP/lintian.log" && fail "lintian printed errors"
note "lintian: no error, $(grep -c '^W: ' "$TMP/lintian.log" || true) warnings"
t_lintian=$(($(now) - t0))
note "lintian: ${t_lintian} s"

# -- 3. install, under the lock --------------------------------------------------------
# fd 9 holds the lock; every command started with it open gets 9<&- (a
# daemon of the smoke test must not keep the lock).
[ -e "$LOCK" ] || : >"$LOCK"
exec 9<"$LOCK"
t0=$(now)
flock -w 1800 9 || fail "waited 30 min for $LOCK"
[ "$(now)" -eq "$t0" ] || note "waited $(($(now) - t0)) s for $LOCK"
check_present
t0=$(now)
installed_list >"$TMP/before.txt"
before=1
args=
for d in $debs; do args="$args ./$(basename "$d")"; done
note "install:$args"
# --no-remove: installing them must not take anything away.
# shellcheck disable=SC2086
if ! (cd "$TMP" && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-remove \
    $args >"$TMP/install.log" 2>&1 9<&-); then
    cat "$TMP/install.log"
    fail "apt-get install of the .debs"
fi
for p in $pkgs; do
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$p" 2>/dev/null)" = "ii $version" ] ||
        { cat "$TMP/install.log"; fail "$p $version is not installed"; }
done
t_install=$(($(now) - t0))
note "install: ${t_install} s"

# -- 4. smoke test against the installed files --------------------------------------------
t0=$(now)
note "smoke: debian/tests/smoke"
$SUDO env CI="${CI:-}" PATH="$PATH" sh "$SRC/debian/tests/smoke" 9<&- ||
    fail "debian/tests/smoke"
t_smoke=$(($(now) - t0))
note "smoke: ${t_smoke} s"
note "build ${t_build} s, lintian ${t_lintian} s, install ${t_install} s, smoke ${t_smoke} s; purge follows"
note "4 checks passed (build with its tests, lintian, install, smoke)"
