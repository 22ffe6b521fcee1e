#!/bin/sh
# Every option of tm-send (its long options table in examples/tm-send.c, the
# sendmail letters sendmail_main takes) and every exit status it can return
# (examples/tm-send.h) is described by --help (tm-send's or sendmail
# mode's) and by the tm-send(1) man page.  No peers.
#   test_documented.sh PATH/TO/tm-send SOURCE_ROOT
set -u
tm_send=$1
src=$2
fail=0
help=$(mktemp)
man=$(mktemp)
trap 'rm -f "$help" "$man"' EXIT
{ "$tm_send" --help; "$tm_send" --sendmail --help; } > "$help" 2>&1 || {
    echo "not ok - --help failed"
    exit 1
}
# the man page as text: groff's \- is a plain -
sed 's/\\-/-/g' "$src/docs/tm-send.1" > "$man"

# long options: { "name", ... } lines of tm_longopts
opts=$(sed -n '/^const struct option tm_longopts\[\]/,/^};/s/^ *{ "\([a-z-]*\)".*/\1/p' \
    "$src/examples/tm-send.c")
[ "$(echo "$opts" | wc -w)" -ge 30 ] || { echo "not ok - found only: $opts"; exit 1; }
for o in $opts; do
    grep -q -- "--$o\\b" "$help" || { echo "not ok - --$o not in --help"; fail=1; }
    grep -q -- "--$o\\b" "$man" || { echo "not ok - --$o not in tm-send.1"; fail=1; }
done

# sendmail mode's letters: the getopt string of sendmail_main
letters=$(sed -n 's/.*getopt_long(argc, argv, "\([^"]*\)", tm_longopts + SENDMAIL.*/\1/p' \
    "$src/examples/mta.c" | tr -d ':')
[ -n "$letters" ] || { echo "not ok - sendmail mode's getopt string not found"; exit 1; }
for l in $(echo "$letters" | sed 's/./& /g'); do
    # -o and -b only as the two-letter forms below
    case $l in o | b) continue ;; esac
    grep -q -- "^ *-$l\\b\\|[ ,]-$l\\b" "$help" || { echo "not ok - -$l not in --help"; fail=1; }
    grep -q -- "-$l\\b" "$man" || { echo "not ok - -$l not in tm-send.1"; fail=1; }
done
# the two-letter forms sendmail callers use
for f in -oi -oem -oee -odi -odb -bm -bp; do
    grep -q -- "$f\\b" "$help" || { echo "not ok - $f not in --help"; fail=1; }
    grep -q -- "$f\\b" "$man" || { echo "not ok - $f not in tm-send.1"; fail=1; }
done

# exit statuses: the EX_*_ values of tm-send.h, each in the man page's EXIT
# STATUS section and in an "exit status" line of --help
codes=$(sed -n 's/^#define EX_[A-Z]*_ \([0-9]*\)$/\1/p' "$src/examples/tm-send.h")
section=$(sed -n '/^\.SH EXIT STATUS/,/^\.SH [A-Z]/p' "$src/docs/tm-send.1")
hstatus=$(sed -n '/exit status/,$p' "$help")
for c in $codes; do
    [ "$c" = 0 ] && continue
    printf '%s\n' "$section" | grep -q "^\.B $c\$" || { echo "not ok - exit status $c not in tm-send.1"; fail=1; }
    # 66 (the message file cannot be read) is not a result a caller branches
    # on: the man page is enough
    case $c in 66) continue ;; esac
    printf '%s\n' "$hstatus" | grep -q "\\b$c\\b" || { echo "not ok - exit status $c not in --help"; fail=1; }
done
# every status the code returns is one of them
used=$(grep -ho 'EX_[A-Z]*_' "$src/examples/tm-send.c" "$src/examples/mta.c" | sort -u)
for u in $used; do
    grep -q "^#define $u " "$src/examples/tm-send.h" || { echo "not ok - $u not defined"; fail=1; }
done
if [ $fail -eq 0 ]; then
    echo "ok - $(echo "$opts" | wc -w) long options, sendmail letters $letters, exit statuses $(echo $codes) documented"
fi
exit $fail
