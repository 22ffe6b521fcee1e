#!/bin/sh
# tm-send and MTA-STS end to end: the policy followed by default, the
# summary and JSON lines, --no-mta-sts, --sts-cache (a cached enforce
# policy surviving a vanished TXT record across runs), --sts-https-address
# and --sts-https-port; exit codes, and what Postfix's maildir got.
#   test_sts_tm_send.sh PATH/TO/tm-send
# Run through tests/peers/peers.py run ... -- tests/peers/sts_https.py run ...
# -- (the sts.test zone is peers.py's STS_DOMAINS; this script writes the
# policies into sts_https.py's policy directory).
set -u
# shellcheck source-path=SCRIPTDIR source=../tm-send/lib.sh
. "$(dirname "$0")/../tm-send/lib.sh"
tm_send_init "$1" 'tm-send mta-sts test'
check_prefix=stssend
cache=$(mktemp -u)
ca=$(mktemp)
trap 'rm -f "$msg" "$out" "$settings" "$cache" "$ca"' EXIT
# The Postfix listeners' CA and the policy server's.
cat "$TM_TEST_CA" "$TM_STS_CA" > "$ca"

# policy NAME MODE MX...: the policy of NAME.sts.test
policy() {
    f="$TM_STS_POLICY_DIR/mta-sts.$1.sts.test"
    mode=$2
    shift 2
    {
        printf 'version: STSv1\r\nmode: %s\r\n' "$mode"
        for mx in "$@"; do printf 'mx: %s\r\n' "$mx"; done
        printf 'max_age: 86400\r\n'
    } > "$f.tmp" && mv "$f.tmp" "$f"
}
policy enforce enforce mx-valid.tm.test
policy selfsigned enforce mx-selfsigned.tm.test
policy nomatch enforce mx-elsewhere.tm.test
policy plain enforce mx-plain.tm.test
policy twrongname testing mx-wrongname.tm.test
policy vanish enforce mx-selfsigned.tm.test
policy noaddr enforce mx-valid.tm.test

common="--from a@tm.test --ca-file $ca --port $TM_TEST_PORT --helo client.tm.test --timeout 10"
common="$common --sts-https-port $TM_STS_HTTPS_PORT"
main="$common --dns $TM_TEST_DNS"
alt="$common --dns $TM_TEST_DNS_ALT"

check "--help lists the MTA-STS options" 0 none enforce.sts.test \
    '--no-mta-sts' '--sts-cache' '--sts-https-address' '--sts-https-port' -- --help

# shellcheck disable=SC2086
check "enforce, matching MX: delivered, JSON" 0 tls enforce.sts.test \
    '"result": "delivered"' '"mta-sts": "enforce"' '"mta-sts-id": "e1"' \
    '"mta-sts-cached": false' '"certificate-verified": true' -- $main --json "$msg"
# shellcheck disable=SC2086
check "enforce, matching MX: summary" 0 tls enforce.sts.test \
    'mta-sts: enforce id=e1' -- $main "$msg"
# shellcheck disable=SC2086
check "enforce, self-signed MX, --skip-verify: deferred" 75 none selfsigned.sts.test \
    '"result": "deferred"' '"mta-sts": "enforce"' '"tls": false' -- \
    $main --skip-verify --keep-unverified-tls --no-require-tls --json "$msg"
# shellcheck disable=SC2086
check "enforce, MX not in the policy: deferred" 75 none nomatch.sts.test \
    'result: deferred' 'mta-sts: enforce id=nm1' 'mta-sts-error: MTA-STS (enforce)' -- \
    $main "$msg"
# shellcheck disable=SC2086
check "enforce, no STARTTLS: deferred" 75 none plain.sts.test \
    '"result": "deferred"' '"mta-sts": "enforce"' -- $main --json "$msg"
# shellcheck disable=SC2086
check "--no-mta-sts: off, the normal policy" 0 tls selfsigned.sts.test \
    '"mta-sts": "off"' '"certificate-verified": false' -- \
    $main --no-mta-sts --skip-verify --json "$msg"
# shellcheck disable=SC2086
check "testing, wrong name: delivered, would refuse" 0 plain twrongname.sts.test \
    '"mta-sts": "testing"' '"mta-sts-would-refuse": true' -- $main --json "$msg"
# shellcheck disable=SC2086
check "testing, wrong name: summary" 0 plain twrongname.sts.test \
    'mta-sts: testing id=twn1' 'mta-sts-would-refuse: true' 'mta-sts-error: ' -- $main "$msg"
# shellcheck disable=SC2086
check "no TXT record: no-policy" 0 tls notxt.sts.test \
    '"mta-sts": "no-policy"' -- $main --skip-verify --json "$msg"
# shellcheck disable=SC2086
check "policy 404: fetch-failed, delivered" 0 tls notfound.sts.test \
    '"mta-sts": "fetch-failed"' '"mta-sts-error": "mta-sts.notfound.sts.test answered HTTP 404' -- \
    $main --skip-verify --json "$msg"

# The cache across runs: fetched and saved with the record present, then
# the record vanishes (the second dnsmasq): the saved policy still holds.
# shellcheck disable=SC2086
check "--sts-cache: fetched and saved" 75 none vanish.sts.test \
    '"mta-sts": "enforce"' '"mta-sts-cached": false' -- \
    $main --sts-cache "$cache" --skip-verify --json "$msg"
if grep -q '^policy vanish\.sts\.test v1 .* enforce 86400 mx-selfsigned\.tm\.test$' "$cache"; then
    pass=$((pass + 1))
    echo "ok - --sts-cache: the file holds the policy"
else
    fail=$((fail + 1))
    echo "not ok - --sts-cache: the file holds the policy"
    sed 's/^/#   /' "$cache"
fi
# shellcheck disable=SC2086
check "--sts-cache, TXT vanished: the cached enforce policy holds" 75 none vanish.sts.test \
    '"mta-sts": "enforce"' '"mta-sts-id": "v1"' '"mta-sts-cached": true' -- \
    $alt --sts-cache "$cache" --skip-verify --json "$msg"
# shellcheck disable=SC2086
check "no cache, TXT vanished: no policy" 0 tls vanish.sts.test \
    '"mta-sts": "no-policy"' -- $alt --skip-verify --json "$msg"
printf 'policy bad.example x 1 2 3 sometimes 5 -\n' > "$cache"
# shellcheck disable=SC2086
check "--sts-cache, a bad file: usage" 64 none enforce.sts.test \
    ":1: " -- $main --sts-cache "$cache" "$msg"

# No address for mta-sts.noaddr.sts.test: the fetch fails, unless
# --sts-https-address says where the policy server is.
# shellcheck disable=SC2086
check "no address for the policy host: fetch-failed" 0 tls noaddr.sts.test \
    '"mta-sts": "fetch-failed"' -- $main --json "$msg"
# shellcheck disable=SC2086
check "--sts-https-address: enforce" 0 tls noaddr.sts.test \
    '"mta-sts": "enforce"' '"mta-sts-id": "na1"' -- \
    $main --sts-https-address "$TM_STS_HTTPS_ADDR" --json "$msg"
# shellcheck disable=SC2086
check "usage: --sts-https-port 0" 64 none enforce.sts.test -- $main --sts-https-port 0 "$msg"
# shellcheck disable=SC2086
check "usage: --sts-https-address a name" 64 none enforce.sts.test -- \
    $main --sts-https-address mta-sts.enforce.sts.test "$msg"

check_sessions
finish
