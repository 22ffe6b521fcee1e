#!/bin/sh
# pip_install.sh BUILDDIR SRCDIR VERSION - `pip install` of bindings/python
# works offline into a virtual environment, and the installed package loads
# the build's library with no PYTHONPATH:
#
#  1. a fresh venv (only its own pip), `pip install <copy of bindings/python>`
#     with no index and pip's default build isolation: the in-tree backend
#     (build_backend/tlsmail_build.py) needs nothing installed;
#  2. the same with the pip on PATH (another interpreter, where there is one);
#  3. `pip wheel` and `pip download`-free sdist: the wheel installed into a
#     clean venv; the sdist holds what a rebuild needs and builds the same
#     wheel;
#  4. `pip install -e` (PEP 660): the venv imports the source copy;
#  5. in each: the version is meson.build's, py.typed is installed,
#     `import tlsmail` from the venv (not the source tree) finds the build's
#     libtlsmail.so.1 through $TLSMAIL_LIBRARY and, without it, through the
#     dynamic loader's search (LD_LIBRARY_PATH), and the unit tests that
#     need no peers (test_async.py) pass against the installed package;
#  6. the backend's own TOML reader (for Python < 3.11) reads pyproject.toml
#     as tomllib does.
#
# Exit 0 on success, 1 on failure, 77 (skip) when venv or ensurepip is
# missing (under CI=true: 1, a missing tool fails).
set -eu

BUILD=$(cd "${1:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}" && pwd)
SRC=$(cd "${2:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}" && pwd)
VERSION=${3:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}
PY=${PYTHON:-/usr/bin/python3}

fail() { echo "pip_install.sh: FAIL: $*" >&2; exit 1; }
note() { echo "pip_install.sh: $*"; }

if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    missing="$PY: venv or ensurepip missing (Debian: python3-venv)"
    [ "${CI:-}" = true ] && fail "$missing (CI=true: not skipped; tests/deps.sh installs them)"
    note "$missing: skipped"
    exit 77
fi

# Only what this script chooses: no PYTHONPATH, no build tree on the loader
# path (meson test puts it there), no user site, no network.
unset PYTHONPATH LD_LIBRARY_PATH TLSMAIL_LIBRARY TLSMAIL_BUILD_DIR PIP_FIND_LINKS PIP_INDEX_URL
export PYTHONNOUSERSITE=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONDONTWRITEBYTECODE=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tlsmail-pip.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
# pip builds in the tree it is given: a copy, so the source stays clean.
mkdir "$TMP/src"
cp "$SRC/bindings/python/pyproject.toml" "$TMP/src/"
cp -R "$SRC/bindings/python/tlsmail" "$SRC/bindings/python/build_backend" "$TMP/src/"
cd "$TMP"

SO=$BUILD/libtlsmail.so.1
[ -e "$SO" ] || fail "$SO not built"
SO_REAL=$(readlink -f "$SO")

# check VENV: the installed package, its version, the library it loads.
check() {
    venv=$1
    vpy=$venv/bin/python
    got=$("$vpy" -c 'import importlib.metadata as m; print(m.version("tlsmail"))') ||
        fail "$venv: no tlsmail distribution"
    [ "$got" = "$VERSION" ] || fail "$venv: tlsmail $got installed, meson.build says $VERSION"
    # Where the files are, without importing (which needs the library).
    where=$("$vpy" -c 'import importlib.util as u; print(u.find_spec("tlsmail").submodule_search_locations[0])')
    case "$where" in
        "$venv"/*) ;;
        *) fail "$venv: tlsmail imports from $where, not from the venv" ;;
    esac
    [ -f "$where/py.typed" ] || fail "$venv: py.typed not installed"

    # 1. $TLSMAIL_LIBRARY (what the meson tests use).
    TLSMAIL_LIBRARY=$SO "$vpy" -c 'import tlsmail; print("tlsmail", tlsmail.version(), tlsmail.tls_backend(), tlsmail._ffi.library_path)' ||
        fail "$venv: import tlsmail with TLSMAIL_LIBRARY"
    # 2. The dynamic loader's search, as for an installed library (here
    #    LD_LIBRARY_PATH stands in for ld.so.cache): check the file mapped.
    mapped=$(LD_LIBRARY_PATH=$BUILD "$vpy" -c '
import tlsmail
for line in open("/proc/self/maps"):
    if "libtlsmail.so" in line:
        print(line.split()[-1]); break
') || fail "$venv: import tlsmail through the loader search"
    [ "$(readlink -f "$mapped")" = "$SO_REAL" ] ||
        fail "$venv: loaded $mapped, not the build's $SO_REAL"
    # 3. The unit tests that need no peers, against the installed package.
    TLSMAIL_LIBRARY=$SO "$vpy" -m unittest discover -s "$SRC/bindings/python/tests" \
        -p 'test_async.py' >"$TMP/unittest.log" 2>&1 ||
        { cat "$TMP/unittest.log"; fail "$venv: test_async.py"; }
    tail -n 1 "$TMP/unittest.log"
    note "$venv: tlsmail $got from $where, library $mapped: ok"
}

# only_tlsmail VENV: nothing but pip (and setuptools, if the venv came with
# it) and tlsmail in VENV: standard library only at run time
only_tlsmail() {
    "$1/bin/pip" list --format=freeze >"$TMP/freeze.txt"
    if grep -v -e '^pip==' -e '^setuptools==' -e '^tlsmail==' "$TMP/freeze.txt"; then
        fail "$1: more than tlsmail was installed"
    fi
    grep -q "^tlsmail==$VERSION\$" "$TMP/freeze.txt" || fail "$1: tlsmail==$VERSION not listed"
}

# -- 1. a fresh venv, plain pip install, build isolation, no index ------------
note "fresh venv; pip install ./bindings/python (no index, isolated build)"
"$PY" -m venv "$TMP/venv1" || fail "python3 -m venv"
"$TMP/venv1/bin/pip" install "$TMP/src" >"$TMP/pip1.log" 2>&1 ||
    { cat "$TMP/pip1.log"; fail "pip install ./bindings/python"; }
only_tlsmail "$TMP/venv1"
check "$TMP/venv1"

# -- 2. the pip of another interpreter on PATH, if there is one ---------------
other=$(command -v python3 || true)
if [ -n "$other" ] && [ "$(readlink -f "$other")" != "$(readlink -f "$PY")" ] &&
    "$other" -c 'import venv, ensurepip' 2>/dev/null; then
    note "fresh venv of $other ($("$other" -V 2>&1)); pip install"
    "$other" -m venv "$TMP/venv2" || fail "$other -m venv"
    "$TMP/venv2/bin/pip" install "$TMP/src" >"$TMP/pip2.log" 2>&1 ||
        { cat "$TMP/pip2.log"; fail "$other: pip install ./bindings/python"; }
    check "$TMP/venv2"
fi

# -- 3. a wheel and an sdist; the wheel into a clean venv ---------------------
note "pip wheel; clean venv; pip install the wheel; the sdist rebuilds the same wheel"
"$TMP/venv1/bin/pip" wheel --no-deps -w "$TMP/wheels" "$TMP/src" >"$TMP/wheel.log" 2>&1 ||
    { cat "$TMP/wheel.log"; fail "pip wheel"; }
WHL=$(ls "$TMP"/wheels/tlsmail-"$VERSION"-py3-none-any.whl 2>/dev/null) ||
    { ls "$TMP/wheels"; fail "no pure-Python wheel tlsmail-$VERSION-py3-none-any.whl"; }
"$PY" -m venv "$TMP/venv3" || fail "python3 -m venv"
"$TMP/venv3/bin/pip" install --no-deps "$WHL" >"$TMP/pip3.log" 2>&1 ||
    { cat "$TMP/pip3.log"; fail "pip install $WHL"; }
only_tlsmail "$TMP/venv3"
check "$TMP/venv3"
# the sdist, through the backend's hook (pip has no sdist command)
(cd "$TMP/src" && "$PY" -c '
import sys
sys.path.insert(0, "build_backend")
import tlsmail_build as b
print(b.build_sdist(sys.argv[1]))' "$TMP") >"$TMP/sdist.name" || fail "build_sdist"
SDIST=$TMP/$(cat "$TMP/sdist.name")
[ "$(basename "$SDIST")" = "tlsmail-$VERSION.tar.gz" ] || fail "sdist named $(basename "$SDIST")"
mkdir "$TMP/unpacked" && tar -xzf "$SDIST" -C "$TMP/unpacked" || fail "sdist unpack"
"$TMP/venv1/bin/pip" wheel --no-deps -w "$TMP/wheels2" "$TMP/unpacked/tlsmail-$VERSION" \
    >"$TMP/wheel2.log" 2>&1 || { cat "$TMP/wheel2.log"; fail "pip wheel of the sdist"; }
cmp "$WHL" "$TMP/wheels2/$(basename "$WHL")" || fail "the sdist builds another wheel"

# -- 4. editable ---------------------------------------------------------------
note "pip install -e: the venv imports the source"
"$PY" -m venv "$TMP/venv4" || fail "python3 -m venv"
"$TMP/venv4/bin/pip" install -e "$TMP/src" >"$TMP/pip4.log" 2>&1 ||
    { cat "$TMP/pip4.log"; fail "pip install -e"; }
where=$("$TMP/venv4/bin/python" -c 'import importlib.util as u; print(u.find_spec("tlsmail").submodule_search_locations[0])')
[ "$where" = "$TMP/src/tlsmail" ] || fail "editable: tlsmail from $where"
TLSMAIL_LIBRARY=$SO "$TMP/venv4/bin/python" -c 'import tlsmail; tlsmail.version()' ||
    fail "editable: import tlsmail"

# -- 6. the backend's TOML reader ---------------------------------------------
"$PY" -c '
import sys, tomllib
sys.path.insert(0, sys.argv[1] + "/build_backend")
import tlsmail_build as b
text = open(sys.argv[1] + "/pyproject.toml").read()
mine, theirs = b._read_toml(text), tomllib.loads(text)
assert mine == theirs, (mine, theirs)
' "$TMP/src" || fail "the backend reads pyproject.toml otherwise than tomllib"
note "all pip install checks passed"
