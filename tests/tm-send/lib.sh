# shellcheck shell=sh
# What tests/tm-send/test_tm_send.sh, tests/dane/test_dane_tm_send.sh and
# tests/sts/test_sts_tm_send.sh share.  Sourced, not run:
#   . "$(dirname "$0")/lib.sh"              (tests/tm-send)
#   . "$(dirname "$0")/../tm-send/lib.sh"   (tests/dane, tests/sts)
# Defines functions only.  POSIX sh.

# tm_send_init PATH/TO/tm-send SUBJECT: sets tm_send, pass=0, fail=0, and
# the temporary files (removed on exit) msg (a short message with SUBJECT),
# out (check's tm-send output) and settings.
tm_send_init() {
    # shellcheck disable=SC2034 # used by the scripts
    tm_send=$1
    pass=0
    fail=0
    n=0        # check's deliveries
    n_tls=0    # messages that arrived over TLS
    n_plain=0  # ... in plaintext
    msg=$(mktemp)
    out=$(mktemp)
    settings=$(mktemp)
    trap 'rm -f "$msg" "$out" "$settings"' EXIT
    printf 'Subject: %s\r\n\r\nhello\r\n' "$2" > "$msg"
}

# take_patterns PATTERN... -- ...: patterns gets the arguments before "--",
# one a line; npatterns how many arguments to shift (those and the "--").
take_patterns() {
    patterns=
    npatterns=1
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        patterns="$patterns$1
"
        npatterns=$((npatterns + 1))
        shift
    done
}

# missing_patterns FORMAT: missing gets, for each line of $patterns that is
# not in $out (grep, fixed strings), printf FORMAT with that line; empty if
# they all are.
missing_patterns() {
    missing=
    while IFS= read -r p; do
        [ -n "$p" ] || continue
        if ! grep -q -F -- "$p" "$out"; then
            # shellcheck disable=SC2059 # FORMAT is the caller's
            missing="$missing$(printf "$1" "$p")"
        fi
    done <<EOF
$patterns
EOF
}

# result NAME OK WHY: counts and prints "ok - NAME", or (OK not 1) "not ok -
# NAME (WHY)" and $out indented.
result() {
    if [ "$2" -eq 1 ]; then
        pass=$((pass + 1))
        echo "ok - $1"
    else
        fail=$((fail + 1))
        echo "not ok - $1 ($3)"
        sed 's/^/#   /' "$out"
    fi
}

# finish: the totals; the exit status (last command of the script) says
# whether all passed.
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

# mailbox DOMAIN LOCAL: how many messages Postfix stored there
mailbox() {
    find "$TM_TEST_MAILDIR/$1/$2/new" -type f 2>/dev/null | wc -l
}

# check NAME WANT_EXIT ARRIVES DOMAIN PATTERN... -- tm-send arguments...
# Sends to a fresh recipient of DOMAIN (local part $check_prefix$$-N).
# Every PATTERN (fixed strings) must be in the output.  ARRIVES: tls (the
# message is in the maildir, received over TLS), plain (received in
# plaintext), none (not there).
check() {
    name=$1 want=$2 arrives=$3 domain=$4
    shift 4
    take_patterns "$@"
    shift "$npatterns"
    n=$((n + 1))
    local_part="${check_prefix:-send}$$-$n"
    "$tm_send" --to "$local_part@$domain" "$@" > "$out" 2>&1
    got=$?
    ok=1
    why=
    [ "$got" -eq "$want" ] || { ok=0; why="$why exit $got, want $want;"; }
    missing_patterns " missing '%s';"
    [ -z "$missing" ] || { ok=0; why="$why$missing"; }
    box="$TM_TEST_MAILDIR/$domain/$local_part/new"
    if [ "$arrives" = none ]; then
        # tm-send has returned: a message it did not deliver is not coming
        [ "$(mailbox "$domain" "$local_part")" -eq 0 ] || { ok=0; why="$why a message arrived;"; }
    else
        i=0
        while [ "$(mailbox "$domain" "$local_part")" -eq 0 ] && [ $i -lt 200 ]; do
            sleep 0.05
            i=$((i + 1))
        done
        if [ "$(mailbox "$domain" "$local_part")" -ne 1 ]; then
            ok=0
            why="$why not in $box;"
        elif [ "$arrives" = tls ] && ! grep -q "using TLSv1\." "$box"/*; then
            ok=0
            why="$why arrived without TLS;"
        elif [ "$arrives" = plain ] && grep -q "using TLSv1\." "$box"/*; then
            ok=0
            why="$why arrived over TLS;"
        fi
        if [ "$arrives" = tls ]; then n_tls=$((n_tls + 1)); else n_plain=$((n_plain + 1)); fi
    fi
    result "$name" "$ok" "$why"
}

# sessions tls|plain: Postfix's sessions with MAIL, after STARTTLS or not
# (Postfix logs "disconnect from ... starttls=1 mail=1 ..." per session).
sessions() {
    pattern='/smtpd\[.*\]: disconnect from .* mail='
    if [ "$1" = tls ]; then
        grep "$pattern" "$TM_TEST_POSTFIX_LOG" | grep -c ' starttls=1'
    else
        grep "$pattern" "$TM_TEST_POSTFIX_LOG" | grep -vc ' starttls=1'
    fi
}

# check_sessions: Postfix's log has one SMTP session with MAIL per message
# check saw arrive, after STARTTLS exactly for those that arrived over TLS,
# and no other (waits up to 10 s for the log to settle).
check_sessions() {
    i=0
    while :; do
        tls_sessions=$(sessions tls)
        plain_sessions=$(sessions plain)
        if [ "$tls_sessions" -ge "$n_tls" ] && [ "$plain_sessions" -ge "$n_plain" ]; then
            sleep 0.2
            if [ "$(sessions tls)" -eq "$tls_sessions" ] &&
                [ "$(sessions plain)" -eq "$plain_sessions" ]; then
                break
            fi
        fi
        [ $i -ge 200 ] && break
        sleep 0.05
        i=$((i + 1))
    done
    if [ "$tls_sessions" -eq "$n_tls" ] && [ "$plain_sessions" -eq "$n_plain" ]; then
        pass=$((pass + 1))
        echo "ok - Postfix's log: $n_tls transactions over TLS, $n_plain in plaintext, no other"
    else
        fail=$((fail + 1))
        echo "not ok - Postfix's log: $tls_sessions transactions over TLS (want $n_tls)," \
            "$plain_sessions in plaintext (want $n_plain)"
    fi
}
