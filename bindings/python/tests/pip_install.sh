#!/bin/sh
# pip_install.sh BUILDDIR SRCDIR VERSION - `pip install` of bindings/python
# works offline into a virtual environment, and the installed package loads
# the build's library with no PYTHONPATH:
#
#  1. a venv with the system's site-packages (setuptools and wheel from
#     Debian's python3-setuptools and python3-wheel: there is no PyPI here),
#     `pip install --no-index --no-build-isolation <copy of bindings/python>`;
#  2. a clean venv (only its own pip and setuptools): a wheel built by the
#     system's pip, installed with `pip install --no-index`;
#  3. in each: the version is meson.build's, py.typed is installed,
#     `import tlsmail` from the venv (not the source tree) finds the build's
#     libtlsmail.so.1 through $TLSMAIL_LIBRARY and, without it, through the
#     dynamic loader's search (LD_LIBRARY_PATH), and the unit tests that
#     need no peers (test_async.py) pass against the installed package.
#
# Exit 0 on success, 1 on failure, 77 (skip) when venv, setuptools, wheel or
# pip are missing (under CI=true: 1, a missing tool fails).
set -eu

BUILD=$(cd "${1:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}" && pwd)
SRC=$(cd "${2:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}" && pwd)
VERSION=${3:?usage: pip_install.sh BUILDDIR SRCDIR VERSION}
PY=${PYTHON:-/usr/bin/python3}

fail() { echo "pip_install.sh: FAIL: $*" >&2; exit 1; }
note() { echo "pip_install.sh: $*"; }

if ! "$PY" -c 'import venv, ensurepip, setuptools, wheel, pip' 2>/dev/null; then
    missing="$PY: venv/ensurepip, setuptools, wheel or pip missing (Debian: python3-venv python3-setuptools python3-wheel python3-pip)"
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
cp -R "$SRC/bindings/python/tlsmail" "$TMP/src/"
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

# -- 1. pip install ./bindings/python, setuptools and wheel from the system ---
note "venv --system-site-packages; pip install --no-index --no-build-isolation"
"$PY" -m venv --system-site-packages "$TMP/venv-sys" || fail "python3 -m venv"
"$TMP/venv-sys/bin/pip" install --no-index --no-build-isolation --no-deps "$TMP/src" \
    >"$TMP/pip1.log" 2>&1 || { cat "$TMP/pip1.log"; fail "pip install --no-build-isolation"; }
check "$TMP/venv-sys"

# -- 2. a clean venv: a wheel built by the system's pip ------------------------
note "pip wheel (system); clean venv; pip install --no-index the wheel"
"$PY" -m pip wheel --no-index --no-build-isolation --no-deps -w "$TMP/wheels" "$TMP/src" \
    >"$TMP/wheel.log" 2>&1 || { cat "$TMP/wheel.log"; fail "pip wheel"; }
WHL=$(ls "$TMP"/wheels/tlsmail-"$VERSION"-py3-none-any.whl 2>/dev/null) ||
    { ls "$TMP/wheels"; fail "no pure-Python wheel tlsmail-$VERSION-py3-none-any.whl"; }
"$PY" -m venv "$TMP/venv-clean" || fail "python3 -m venv"
"$TMP/venv-clean/bin/pip" install --no-index --no-deps "$WHL" >"$TMP/pip2.log" 2>&1 ||
    { cat "$TMP/pip2.log"; fail "pip install $WHL"; }
# Standard library only: nothing but the package itself was added.
"$TMP/venv-clean/bin/pip" list --format=freeze >"$TMP/freeze.txt"
grep -v -e '^pip==' -e '^setuptools==' -e '^tlsmail==' "$TMP/freeze.txt" && fail "more than tlsmail was installed"
check "$TMP/venv-clean"
note "all pip install checks passed"
