#!/bin/sh
# Runs the unit tests, every hostile-server test program (suite 'hostile':
# starttls, replies, connection, certificates, content, recipients,
# sessions, resumption, mx-hostile, alloc-failure), (scaled down) the load test
# the MTA-STS policy fetch (against tests/peers/sts_https.py) and tm-send's
# sendmail mode (tests/tm-send/test_sendmail.sh) under valgrind memcheck:
#
#   tests/valgrind.sh BUILD_DIR
#
# BUILD_DIR must be a build without sanitizers (valgrind and ASan do not
# mix).  valgrind exits 99 when memcheck found an error or a definite leak,
# so that its verdict is told apart from test failures (cmocka exits with
# the number of failed tests).  The script prints both and exits 1 if
# either happened.
#
# The unit and hostile programs run through "meson test --wrapper".  The
# load test cannot: meson would wrap peers.py (Python), not the program,
# so peers.py is run directly with valgrind inside its command.  Only the
# C programs are checked: the hostile server and peers are Python/Postfix
# (valgrind does not follow their exec: --trace-children=no).
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 64
fi
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "$0: valgrind not installed (apt-get install valgrind)" >&2; exit 77; }

vg="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-fds=no --trace-children=no --quiet"
status=0
memcheck=clean

ninja -C "$build" >/dev/null

# verdict NAME RC: 99 is memcheck's, anything else non-zero the tests'.
verdict() {
	if [ "$2" -eq 99 ]; then
		echo "$1: MEMCHECK ERRORS (see above)"
		memcheck=dirty
		status=1
	elif [ "$2" -ne 0 ]; then
		echo "$1: test failures (exit $2), no memcheck error"
		status=1
	else
		echo "$1: ok"
	fi
}

# meson_suite SUITE MULTIPLIER: one suite under the wrapper.  meson itself
# exits 1 on any failure: its log tells memcheck's exit code apart.
meson_suite() {
	rc=0
	meson test -C "$build" --suite "$1" --wrapper "$vg" --timeout-multiplier "$2" \
		--print-errorlogs || rc=$?
	if grep -q "exit status 99" "$build/meson-logs/testlog-valgrind.txt" 2>/dev/null; then rc=99; fi
	verdict "$1" $rc
}

echo "== unit tests under valgrind"
meson_suite unit 20

echo "== hostile-server tests under valgrind"
meson_suite hostile 10

echo "== load test (TM_LOAD_SCALE=20) under valgrind, through peers.py"
rc=0
TM_LOAD_SCALE=${TM_LOAD_SCALE:-20} timeout 1200 python3 "$src/tests/peers/peers.py" run \
	--dir "$build/tests/peers-valgrind" -- \
	$vg "$build/tests/load/test_load" || rc=$?
verdict load $rc

echo "== MTA-STS policy fetch under valgrind, through sts_https.py"
rc=0
timeout 600 python3 "$src/tests/peers/sts_https.py" run --dir "$build/tests/peers-sts-valgrind" -- \
	$vg "$build/tests/sts/test_sts_fetch" || rc=$?
verdict sts-fetch $rc

echo "== tm-send's sendmail mode (queue, flushes, configuration, bounces) under valgrind, through peers.py"
rc=0
TM_SEND_VALGRIND="$vg" timeout 900 python3 "$src/tests/peers/peers.py" run \
	--dir "$build/tests/peers-sendmail-valgrind" -- \
	/bin/sh "$src/tests/tm-send/test_sendmail.sh" "$build/examples/tm-send" || rc=$?
verdict sendmail $rc

echo "valgrind memcheck: $memcheck"
exit $status
