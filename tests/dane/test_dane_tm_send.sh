#!/bin/sh
# tm-send's DANE options end to end: --dnssec-resolver, --dnssec-trust-resolver,
# --no-dane, --floor; exit codes, JSON and summary output, and what Postfix's
# maildir got (the message there when tm-send says delivered, with "using
# TLS" exactly when it says TLS; nothing there when it says deferred).
#   test_dane_tm_send.sh PATH/TO/tm-send
# Run through tests/peers/peers.py run ... -- tests/peers/dnssec.py run ... --
# (the zones are in dnssec.py's docstring).
set -u
# shellcheck source-path=SCRIPTDIR source=../tm-send/lib.sh
. "$(dirname "$0")/../tm-send/lib.sh"
tm_send_init "$1" 'tm-send dane test'
check_prefix=danesend

common="--from a@tm.test --ca-file $TM_TEST_CA --port $TM_TEST_PORT --helo client.tm.test"
common="$common --timeout 10"
dane="$common --dnssec-resolver $TM_DNSSEC_RESOLVER"

check "--help lists the DANE options" 0 none valid.dane.test \
    '--dnssec-resolver' '--dnssec-trust-resolver' '--no-dane' '--floor' -- --help

# shellcheck disable=SC2086
check "--dnssec-resolver: DANE-EE verified, JSON" 0 tls valid.dane.test \
    '"result": "delivered"' '"dane": "verified"' '"dane-tlsa": "3 1 1"' '"mx-dnssec": true' \
    '"certificate-verified": true' '"certificate-verified-by": "dane"' -- \
    $dane --json "$msg"
# shellcheck disable=SC2086
check "--dnssec-resolver: DANE-EE verified, summary" 0 tls selfsigned.dane.test \
    'dane: verified 3 1 1' 'mx-dnssec: true' -- $dane "$msg"
# shellcheck disable=SC2086
check "--dnssec-resolver: DANE-TA verified" 0 tls ta.dane.test \
    '"dane": "verified"' '"dane-tlsa": "2 0 1"' '"mx-host": "mx-ta.dane.test"' -- \
    $dane --json "$msg"
# shellcheck disable=SC2086
check "TLSA mismatch: deferred" 75 none mismatch.dane.test \
    '"result": "deferred"' '"dane": "failed"' '"certificate-verified": false' -- \
    $dane --json "$msg"
# shellcheck disable=SC2086
check "TLSA mismatch, --skip-verify --keep-unverified-tls: deferred" 75 none mismatch.dane.test \
    '"result": "deferred"' '"dane": "failed"' -- \
    $dane --skip-verify --keep-unverified-tls --json "$msg"
# shellcheck disable=SC2086
check "TLSA, no STARTTLS: deferred, not in plaintext" 75 none plain.dane.test \
    '"result": "deferred"' '"dane": "failed"' '"tls": false' -- $dane --json "$msg"
# shellcheck disable=SC2086
check "bogus TLSA signature: deferred" 75 none bogus.dane.test \
    '"result": "deferred"' '"dane": "failed"' -- $dane --json "$msg"
# shellcheck disable=SC2086
check "secure, no TLSA: the normal policy" 0 plain notlsa.dane.test \
    '"dane": "no-tlsa"' '"mx-dnssec": true' '"tls": false' -- $dane --json "$msg"
# shellcheck disable=SC2086
check "insecure MX: the normal policy" 0 plain mismatch.insecure.test \
    '"dane": "insecure"' '"mx-dnssec": false' -- $dane --json "$msg"
# shellcheck disable=SC2086
check "unusable TLSA only: TLS, not authenticated" 0 tls unusable.dane.test \
    '"dane": "tlsa-unusable"' '"certificate-verified": false' '"certificate-verified-by": ""' -- \
    $dane --json "$msg"
# shellcheck disable=SC2086
check "--mx a DANE host" 0 tls example.test \
    '"dane": "verified"' '"mx-host": "mx-valid.dane.test"' -- \
    $dane --mx "mx-valid.dane.test" --json "$msg"

# Whose AD bit: --dns alone is not trusted; --dnssec-trust-resolver trusts it.
# shellcheck disable=SC2086
check "--dns a validating resolver, untrusted: DANE off" 0 plain mismatch.dane.test \
    '"dane": "off"' '"mx-dnssec": false' -- \
    $common --dns "$TM_DNSSEC_RESOLVER" --json "$msg"
# shellcheck disable=SC2086
check "--dns + --dnssec-trust-resolver: mismatch deferred" 75 none mismatch.dane.test \
    '"dane": "failed"' -- \
    $common --dns "$TM_DNSSEC_RESOLVER" --dnssec-trust-resolver --json "$msg"
# shellcheck disable=SC2086
check "--dns + --dnssec-trust-resolver: verified" 0 tls valid.dane.test \
    '"dane": "verified"' -- \
    $common --dns "$TM_DNSSEC_RESOLVER" --dnssec-trust-resolver --json "$msg"
# shellcheck disable=SC2086
check "--no-dane: off" 0 plain mismatch.dane.test \
    '"dane": "off"' -- $dane --no-dane --json "$msg"
# shellcheck disable=SC2086
check "DANE off: no dane line in the summary" 0 tls valid.tm.test \
    'certificate-verified: true' -- $common --dns "$TM_TEST_DNS" "$msg"
if grep -q '^dane:' "$out"; then
    fail=$((fail + 1))
    echo "not ok - DANE off: the summary has a dane line"
else
    pass=$((pass + 1))
    echo "ok - DANE off: the summary has no dane line"
fi

# --floor dane (the recipient domain's floor for this run)
# shellcheck disable=SC2086
check "--floor dane on a DANE host" 0 tls valid.dane.test \
    '"dane": "verified"' '"recipient-floor": "dane"' -- $dane --floor dane --json "$msg"
# shellcheck disable=SC2086
check "--floor dane on a secure domain without TLSA: deferred" 75 none notlsa.dane.test \
    '"result": "deferred"' '"recipient-floor": "dane"' -- $dane --floor dane --json "$msg"
# shellcheck disable=SC2086
check "--floor dane on an insecure domain: deferred" 75 none mismatch.insecure.test \
    '"result": "deferred"' '"dane": "insecure"' -- $dane --floor dane --json "$msg"
# shellcheck disable=SC2086
check "--floor dane with DANE off: deferred" 75 none valid.tm.test \
    '"result": "deferred"' '"dane": "off"' -- \
    $common --dns "$TM_TEST_DNS" --floor dane --json "$msg"
# shellcheck disable=SC2086
check "--floor tls on a secure domain without TLSA: the floor" 0 tls pkix.dane.test \
    '"dane": "no-tlsa"' '"certificate-verified-by": "pkix"' '"recipient-floor": "tls"' -- \
    $dane --floor tls --json "$msg"
# shellcheck disable=SC2086
check "usage: --floor maybe" 64 none valid.dane.test 'dane' -- $dane --floor maybe "$msg"
# shellcheck disable=SC2086
check "usage: --dnssec-resolver ::1" 64 none valid.dane.test -- \
    $common --dnssec-resolver ::1 "$msg"

# floor=dane from --settings
cat > "$settings" <<EOF
recipient notlsa.dane.test floor=dane
EOF
# shellcheck disable=SC2086
check "--settings floor=dane: deferred" 75 none notlsa.dane.test \
    '"recipient-floor": "dane"' -- $dane --settings "$settings" --json "$msg"

# Postfix's log: one SMTP session with MAIL per message that arrived, after
# STARTTLS exactly for those that arrived over TLS - no other transaction
# (a deferred message sent all the same, a plaintext MAIL on a DANE host).
check_sessions

finish
