#!/bin/sh
# tm-send end to end against the real peers: exit codes, JSON, options, and
# each policy flag switched on or off for one message against a sending
# domain's setting (--settings) and a recipient floor.
#   test_tm_send.sh PATH/TO/tm-send   (run through tests/peers/peers.py)
set -u
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
tm_send_init "$1" 'tm-send test'

# check NAME WANT_EXIT PATTERN [PATTERN ...] -- tm-send arguments...
# Every PATTERN (grep, fixed strings) must be in the output.
check() {
    name=$1 want=$2
    shift 2
    take_patterns "$@"
    shift "$npatterns"
    "$tm_send" "$@" > "$out" 2>&1
    got=$?
    ok=1
    [ "$got" -eq "$want" ] || ok=0
    missing_patterns " '%s'"
    [ -z "$missing" ] || ok=0
    result "$name" "$ok" "exit $got, want $want; missing:$missing"
}

common="--ca-file $TM_TEST_CA --dns $TM_TEST_DNS --port $TM_TEST_PORT --helo client.tm.test --timeout 10"
# shellcheck disable=SC2086
check "verified TLS, JSON" 0 '"certificate-verified": true' '"address": "user@valid.tm.test"' -- \
    --from a@tm.test --to user@valid.tm.test $common --json "$msg"
# shellcheck disable=SC2086
check "summary output" 0 'tls: true' 'recipient: user@valid.tm.test delivered 250' -- \
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
check "--require-tls=yes, no STARTTLS: deferred" 75 '"result": "deferred"' -- \
    --from a@tm.test --to user@plain.tm.test --require-tls=yes $common --json "$msg"
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
check "usage: CR in an address" 64 -- \
    --from a@tm.test --to "$(printf 'a\rb@valid.tm.test')" $common "$msg"
# shellcheck disable=SC2086
check "unreadable CA file" 70 'CA' -- \
    --from a@tm.test --to user@valid.tm.test $common --ca-file /nonexistent "$msg"

# More recipients than the 0.1 ABI's 50, each reported.
many=
i=1
while [ $i -le 60 ]; do
    many="$many --to many$i@valid.tm.test"
    i=$((i + 1))
done
# shellcheck disable=SC2086
check "60 recipients" 0 '"delivered": 60' '"address": "many60@valid.tm.test"' -- \
    --from a@tm.test $many $common --json "$msg"

# --- a flag switched off for one message ---------------------------------------
check "--help lists the off switches" 0 '--require-tls[=yes|no]' '--no-require-tls' -- --help
# shellcheck disable=SC2086
check "usage: --require-tls=maybe" 64 'yes or no' -- \
    --from a@tm.test --to user@valid.tm.test --require-tls=maybe $common "$msg"

# The sending domain strict.tm.test requires TLS: mx-plain gets nothing...
cat > "$settings" <<EOF
sending strict.tm.test require_tls=yes
EOF
# shellcheck disable=SC2086
check "sending domain require_tls=yes, no STARTTLS: deferred" 75 \
    '"result": "deferred"' '"require-tls-from": "sending-domain"' -- \
    --from a@strict.tm.test --to user@plain.tm.test --settings "$settings" $common --json "$msg"
# ...unless this one message says no: plaintext.
# shellcheck disable=SC2086
check "--require-tls=no overrides the sending domain" 0 \
    '"result": "delivered"' '"tls": false' '"require-tls": false' '"require-tls-from": "message"' -- \
    --from a@strict.tm.test --to user@plain.tm.test --require-tls=no --settings "$settings" \
    $common --json "$msg"
# shellcheck disable=SC2086
check "--no-require-tls overrides the sending domain" 0 \
    '"result": "delivered"' '"tls": false' '"require-tls-from": "message"' -- \
    --from a@strict.tm.test --to user@plain.tm.test --no-require-tls --settings "$settings" \
    $common --json "$msg"
# A recipient floor still wins over the message's "no".
cat > "$settings" <<EOF
sending strict.tm.test require_tls=yes
recipient plain.tm.test floor=tls
EOF
# shellcheck disable=SC2086
check "--require-tls=no under a recipient floor tls: deferred" 75 \
    '"result": "deferred"' '"require-tls": true' '"require-tls-from": "recipient-floor"' -- \
    --from a@strict.tm.test --to user@plain.tm.test --require-tls=no --settings "$settings" \
    $common --json "$msg"

# The sending domain skips verification (and requires TLS): the self-signed
# first MX of badcert.tm.test takes the message...
cat > "$settings" <<EOF
sending lax.tm.test require_tls=yes skip_verify=yes
EOF
# shellcheck disable=SC2086
check "sending domain skip_verify=yes: the self-signed MX" 0 \
    '"mx-host": "mx-selfsigned.tm.test"' '"certificate-verified": false' -- \
    --from a@lax.tm.test --to user@badcert.tm.test --settings "$settings" $common --json "$msg"
# ...unless this message says no: the verified second MX.
# shellcheck disable=SC2086
check "--skip-verify=no overrides the sending domain" 0 \
    '"mx-host": "mx-valid.tm.test"' '"certificate-verified": true' '"skip-verify-from": "message"' -- \
    --from a@lax.tm.test --to user@badcert.tm.test --skip-verify=no --settings "$settings" \
    $common --json "$msg"
# shellcheck disable=SC2086
check "--no-skip-verify overrides the sending domain" 0 \
    '"mx-host": "mx-valid.tm.test"' '"certificate-verified": true' -- \
    --from a@lax.tm.test --to user@badcert.tm.test --no-skip-verify --settings "$settings" \
    $common --json "$msg"

# The sending domain keeps unverified TLS: TLS at the self-signed MX...
cat > "$settings" <<EOF
sending keep.tm.test keep_unverified_tls=yes
EOF
# shellcheck disable=SC2086
check "sending domain keep_unverified_tls=yes: unverified TLS" 0 \
    '"mx-host": "mx-selfsigned.tm.test"' '"tls": true' '"certificate-verified": false' -- \
    --from a@keep.tm.test --to user@badcert.tm.test --settings "$settings" $common --json "$msg"
# ...unless this message says no: a fresh plaintext connection.
# shellcheck disable=SC2086
check "--keep-unverified-tls=no overrides the sending domain" 0 \
    '"mx-host": "mx-selfsigned.tm.test"' '"tls": false' '"keep-unverified-tls-from": "message"' -- \
    --from a@keep.tm.test --to user@badcert.tm.test --keep-unverified-tls=no \
    --settings "$settings" $common --json "$msg"
# shellcheck disable=SC2086
check "--no-keep-unverified-tls overrides the sending domain" 0 \
    '"mx-host": "mx-selfsigned.tm.test"' '"tls": false' -- \
    --from a@keep.tm.test --to user@badcert.tm.test --no-keep-unverified-tls \
    --settings "$settings" $common --json "$msg"

finish
