#!/bin/sh
# tm-send end to end against the real peers: exit codes, JSON, options.
#   test_tm_send.sh PATH/TO/tm-send   (run through tests/peers/peers.py)
set -u
tm_send=$1
pass=0
fail=0
msg=$(mktemp)
out=$(mktemp)
trap 'rm -f "$msg" "$out"' EXIT
printf 'Subject: tm-send test\r\n\r\nhello\r\n' > "$msg"

# check NAME WANT_EXIT GREP_PATTERN -- tm-send arguments...
check() {
    name=$1 want=$2 pattern=$3
    shift 4
    "$tm_send" "$@" > "$out" 2>&1
    got=$?
    if [ "$got" -eq "$want" ] && grep -q -- "$pattern" "$out"; then
        pass=$((pass + 1))
        echo "ok - $name"
    else
        fail=$((fail + 1))
        echo "not ok - $name (exit $got, want $want; pattern '$pattern')"
        sed 's/^/#   /' "$out"
    fi
}

common="--ca-file $TM_TEST_CA --dns $TM_TEST_DNS --port $TM_TEST_PORT --helo client.tm.test --timeout 10"
# shellcheck disable=SC2086
check "verified TLS, JSON" 0 '"certificate-verified": true' -- \
    --from a@tm.test --to user@valid.tm.test $common --json "$msg"
# shellcheck disable=SC2086
check "summary output" 0 'tls: true' -- \
    --from a@tm.test --to user@valid.tm.test $common "$msg"
# shellcheck disable=SC2086
check "message from standard input" 0 '"result": "delivered"' -- \
    --from a@tm.test --to user@valid.tm.test $common --json - < "$msg"
# shellcheck disable=SC2086
check "explicit --mx host:port" 0 '"mx-host": "mx-valid.tm.test"' -- \
    --from a@tm.test --to user@example.test --mx "mx-valid.tm.test:$TM_TEST_PORT" $common --json "$msg"
# shellcheck disable=SC2086
check "require-tls, no STARTTLS: deferred" 75 '"result": "deferred"' -- \
    --from a@tm.test --to user@plain.tm.test --require-tls $common --json "$msg"
# shellcheck disable=SC2086
check "skip-verify on a self-signed MX" 0 '"certificate-verified": false' -- \
    --from a@tm.test --to user@badcert.tm.test --require-tls --skip-verify $common --json "$msg"
# shellcheck disable=SC2086
check "null MX bounces" 69 '"enhanced-code": "5.1.10"' -- \
    --from a@tm.test --to user@nullmx.tm.test $common --json "$msg"
# shellcheck disable=SC2086
check "rejected recipient bounces" 69 '"code": 550' -- \
    --from a@tm.test --to reject-me@valid.tm.test $common --json "$msg"
# shellcheck disable=SC2086
check "deferred recipient" 75 '"code": 450' -- \
    --from a@tm.test --to defer-me@valid.tm.test $common --json "$msg"
check "usage: no recipient" 64 'usage' -- --from a@tm.test "$msg"
# shellcheck disable=SC2086
check "usage: CR in an address" 64 '' -- \
    --from a@tm.test --to "$(printf 'a\rb@valid.tm.test')" $common "$msg"
# shellcheck disable=SC2086
check "unreadable CA file" 70 'CA' -- \
    --from a@tm.test --to user@valid.tm.test $common --ca-file /nonexistent "$msg"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
