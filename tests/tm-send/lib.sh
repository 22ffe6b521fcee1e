# shellcheck shell=sh
# What tests/tm-send/test_tm_send.sh and tests/dane/test_dane_tm_send.sh
# share.  Sourced, not run:
#   . "$(dirname "$0")/lib.sh"              (tests/tm-send)
#   . "$(dirname "$0")/../tm-send/lib.sh"   (tests/dane)
# Defines functions only.  POSIX sh.

# tm_send_init PATH/TO/tm-send SUBJECT: sets tm_send, pass=0, fail=0, and
# the temporary files (removed on exit) msg (a short message with SUBJECT),
# out (check's tm-send output) and settings.
tm_send_init() {
    # shellcheck disable=SC2034 # used by the scripts
    tm_send=$1
    pass=0
    fail=0
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
