#!/bin/sh
# tm-send's sendmail mode end to end against the real peers: the command
# line that cron, PHP's mail(), git send-email and mutt use, -t with
# To/Cc/Bcc across two domains (Bcc not in what arrives), -f, -F, -i/-oi,
# an unknown option, and the exit status when one domain is down.
#   test_sendmail.sh PATH/TO/tm-send   (run through tests/peers/peers.py)
set -u
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
tm_send_init "$1" 'sendmail test'
dir=$(mktemp -d)
trap 'rm -f "$msg" "$out" "$settings"; rm -rf "$dir"' EXIT
# invoked by the name "sendmail" (argv[0]), as /usr/sbin/sendmail would be
real="$(cd "$(dirname "$tm_send")" && pwd)/$(basename "$tm_send")"
mkdir "$dir/bin"
ln -s "$real" "$dir/bin/sendmail"
sendmail="$dir/bin/sendmail"
# TM_SEND_VALGRIND="valgrind ...": from the queue's checks on (the queue,
# flushes, the configuration file, bounces; the header handling before them
# is fuzzed and runs under ASan), every run of tm-send under it
# (tests/valgrind.sh), its reports in $dir/vg/PID, which must stay empty.
valgrind_from_here() {
    [ -n "${TM_SEND_VALGRIND:-}" ] || return 0
    mkdir "$dir/vg"
    for name in sendmail tm-send; do
        printf '#!/bin/sh\nexec %s --log-file=%s/vg/%%p "%s" "$@"\n' "$TM_SEND_VALGRIND" "$dir" \
            "$dir/bin/$name" > "$dir/$name"
        chmod +x "$dir/$name"
    done
    ln -s "$real" "$dir/bin/tm-send"
    sendmail="$dir/sendmail"
    tm_send="$dir/tm-send"
}
# No queue unless a case asks for one: the default spool is not the tests'.
printf '# the tests: no default queue\nno-queue\n' > "$dir/none.conf"
export TM_SENDMAIL_CONF="$dir/none.conf"
common="--ca-file $TM_TEST_CA --dns $TM_TEST_DNS --port $TM_TEST_PORT --helo client.tm.test --timeout 10"
id=$$

# wait_box DOMAIN LOCAL: the one message delivered there (path in $box), or
# empty after 10 s
wait_box() {
    i=0
    while [ "$(mailbox "$1" "$2")" -eq 0 ] && [ $i -lt 200 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    box=$(find "$TM_TEST_MAILDIR/$1/$2/new" -type f 2>/dev/null)
}

# expect NAME WANT_EXIT GOT_EXIT CONDITION-FAILURES: one result line
expect() {
    ok=1
    why="$4"
    [ "$3" -eq "$2" ] || why="$why exit $3, want $2;"
    [ -z "$why" ] || ok=0
    result "$1" "$ok" "$why"
}

# --- -t: To, Cc (folded, a group), Bcc across valid.tm.test and plain.tm.test
cat > "$dir/t.eml" <<MSG
From: Sender <a@tm.test>
To: "Doe, Jane" <to$id@valid.tm.test>, other$id@Valid.TM.test (comment)
Cc: friends: cc$id@plain.tm.test,
 <to$id@valid.tm.test>;
Bcc: hidden$id@valid.tm.test,
	hidden$id@plain.tm.test
Subject: -t test

body line
.
after a lone dot
MSG
# shellcheck disable=SC2086
"$sendmail" -t -i -f "envelope$id@tm.test" $common < "$dir/t.eml" > "$out" 2>&1
got=$?
why=
for r in valid.tm.test:to$id valid.tm.test:other$id plain.tm.test:cc$id \
    valid.tm.test:hidden$id plain.tm.test:hidden$id; do
    wait_box "${r%%:*}" "${r#*:}"
    if [ -z "$box" ] || [ "$(mailbox "${r%%:*}" "${r#*:}")" -ne 1 ]; then
        why="$why no single message for ${r#*:}@${r%%:*};"
        continue
    fi
    grep -qi '^Bcc:' "$box" && why="$why Bcc header in ${r#*:}@${r%%:*}'s copy;"
    # (Postfix's Delivered-To names the Bcc recipient in its own copy)
    grep -v '^Delivered-To:' "$box" | grep -q "hidden$id" &&
        why="$why Bcc address in ${r#*:}@${r%%:*}'s copy;"
    grep -q "^Return-Path: <envelope$id@tm.test>" "$box" || why="$why envelope sender not -f;"
    grep -q '^after a lone dot' "$box" || why="$why the text after a lone dot is missing;"
done
grep -q 'valid.tm.test: delivered, 3 recipients' "$out" || why="$why no status line for valid.tm.test;"
grep -q 'plain.tm.test: delivered, 2 recipients' "$out" || why="$why no status line for plain.tm.test;"
expect "-t: To, Cc, group, Bcc over two domains, Bcc removed, -f, -i" 0 "$got" "$why"

# --- recipients as operands, -fADDR, -oi -oem -odi -bm (cron, git send-email)
printf 'From: a@tm.test\nSubject: operands\n\nhello\n' > "$dir/o.eml"
# shellcheck disable=SC2086
"$sendmail" -oi -oem -odi -bm "-fjoined$id@tm.test" $common "op$id@valid.tm.test" \
    "op2$id@plain.tm.test, op3$id@plain.tm.test" < "$dir/o.eml" > "$out" 2>&1
got=$?
why=
for r in valid.tm.test:op$id plain.tm.test:op2$id plain.tm.test:op3$id; do
    wait_box "${r%%:*}" "${r#*:}"
    [ -n "$box" ] || { why="$why nothing for ${r#*:}@${r%%:*};"; continue; }
    grep -q "^Return-Path: <joined$id@tm.test>" "$box" || why="$why envelope sender not -fADDR;"
done
expect "operands, -fADDR, -oi -oem -odi -bm" 0 "$got" "$why"

# --- -F NAME and the sender from TM_SENDMAIL_FROM, no From header; --sendmail
printf 'Subject: no from\n\nhello\n' > "$dir/f.eml"
# shellcheck disable=SC2086
TM_SENDMAIL_FROM="cron$id@tm.test" "$tm_send" --sendmail -FCronDaemon -i -B8BITMIME -oem \
    $common "cron$id@valid.tm.test" < "$dir/f.eml" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "cron$id"
if [ -z "$box" ]; then
    why=" not delivered;"
else
    grep -q "^From: CronDaemon <cron$id@tm.test>" "$box" || why="$why no From header from -F;"
    grep -q "^Return-Path: <cron$id@tm.test>" "$box" || why="$why envelope sender not \$TM_SENDMAIL_FROM;"
fi
expect "--sendmail, -F NAME, TM_SENDMAIL_FROM" 0 "$got" "$why"

# --- a From header of the message is kept, -F or not
printf 'From: Real <real@tm.test>\nSubject: keep\n\nhello\n' > "$dir/k.eml"
# shellcheck disable=SC2086
"$sendmail" -F Other -f "<angle$id@tm.test>" $common "keep$id@valid.tm.test" < "$dir/k.eml" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "keep$id"
[ -n "$box" ] && [ "$(grep -c '^From:' "$box")" -eq 1 ] && grep -q '^From: Real <real@tm.test>' "$box" ||
    why=" the message's From header not kept alone;"
[ -n "$box" ] && grep -q "^Return-Path: <angle$id@tm.test>\$" "$box" || why="$why -f '<addr>' not unwrapped;"
expect "-F with a From header: unchanged; -f '<addr>'" 0 "$got" "$why"

# --- usage errors: nothing is read or sent
# shellcheck disable=SC2086
"$sendmail" -X -f a@tm.test $common "usage$id@valid.tm.test" < "$dir/o.eml" > "$out" 2>&1
got=$?
why=
[ "$(mailbox valid.tm.test "usage$id")" -eq 0 ] || why=" a message arrived;"
grep -q 'usage: sendmail' "$out" || why="$why no usage;"
expect "unknown option -X: usage error" 64 "$got" "$why"
# shellcheck disable=SC2086
"$sendmail" -odq -f a@tm.test $common "usage$id@valid.tm.test" < "$dir/o.eml" > "$out" 2>&1
expect "unsupported -odq: usage error" 64 "$?" ""
# shellcheck disable=SC2086
"$sendmail" -t -f a@tm.test $common < "$dir/f.eml" > "$out" 2>&1
got=$?
grep -q 'no recipients' "$out" && why= || why=" no 'no recipients';"
expect "-t and no recipient: usage error" 64 "$got" "$why"
# shellcheck disable=SC2086
"$sendmail" -f a@tm.test $common root < "$dir/o.eml" > "$out" 2>&1
expect "a local name (no domain): usage error" 64 "$?" ""

# --- one domain down: the other is delivered, the exit status says deferred.
# mx-dead.tm.test has no MX, so its A record (127.0.0.20, nothing listens)
# is the implicit MX.
# shellcheck disable=SC2086
"$sendmail" -f a@tm.test $common "up$id@valid.tm.test" "down$id@mx-dead.tm.test" \
    < "$dir/o.eml" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "up$id"
[ -n "$box" ] || why=" not delivered to the domain that is up;"
grep -q 'mx-dead.tm.test: deferred' "$out" || why="$why no deferred line for mx-dead.tm.test;"
grep -q 'valid.tm.test: delivered' "$out" || why="$why no delivered line for valid.tm.test;"
expect "one domain down: 75, the other delivered" 75 "$got" "$why"

# --- bounced and deferred together: 75 (a retry can still help); bounced alone: 69
# shellcheck disable=SC2086
"$sendmail" -f a@tm.test $common "b$id@nullmx.tm.test" "down$id@mx-dead.tm.test" \
    < "$dir/o.eml" > "$out" 2>&1
got=$?
grep -q 'nullmx.tm.test: bounced' "$out" && why= || why=" no bounced line;"
expect "bounced + deferred: 75" 75 "$got" "$why"
# shellcheck disable=SC2086
"$sendmail" -f a@tm.test $common "b$id@nullmx.tm.test" "ok$id@plain.tm.test" \
    < "$dir/o.eml" > "$out" 2>&1
expect "bounced + delivered: 69" 69 "$?" ""

# --- --json: one object per domain, one a line
# shellcheck disable=SC2086
"$sendmail" -f a@tm.test $common --json "j$id@valid.tm.test" "j$id@plain.tm.test" \
    < "$dir/o.eml" > "$out" 2>/dev/null
got=$?
why=
[ "$(grep -c '^{.*"result": "delivered"' "$out")" -eq 2 ] || why=" not two delivered JSON lines;"
expect "--json: a line per domain" 0 "$got" "$why"

# --- --queue DIR and --flush DIR ---------------------------------------------
valgrind_from_here
q="$dir/queue"
mkdir "$q"
now=$(date +%s)
# entries: the q-* files of the queue, one a line
entries() { find "$q" -maxdepth 1 -name 'q-*' -type f | sort; }
# shellcheck disable=SC2086
"$sendmail" --queue "$q" -f a@tm.test $common "qu$id@valid.tm.test" "qd$id@mx-dead.tm.test" \
    < "$dir/o.eml" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "qu$id"
[ -n "$box" ] || why=" not delivered to the domain that is up;"
[ "$(entries | wc -l)" -eq 1 ] || why="$why not one queue entry;"
entry=$(entries)
grep -q "^rcpt qd$id@mx-dead.tm.test\$" "$entry" && grep -q '^state deferred$' "$entry" &&
    grep -q '^attempts 1$' "$entry" && ! grep -q "qu$id" "$entry" || why="$why entry: $(head -c 400 "$entry");"
grep -q 'queued as' "$out" || why="$why no 'queued as';"
expect "--queue: deferred domain queued, exit 0" 0 "$got" "$why"

# shellcheck disable=SC2086
"$tm_send" --flush-due "$q" $common > "$out" 2>&1
got=$?
grep -q 'next try in' "$out" && grep -q '^attempts 1$' "$entry" && why= || why=" tried too early;"
expect "tm-send --flush-due (no --sendmail needed): an entry not due is left alone" 0 "$got" "$why"

# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 400)) "$sendmail" --flush-due "$q" $common > "$out" 2>&1
got=$?
why=
grep -q '^attempts 2$' "$entry" && grep -q '^state deferred$' "$entry" || why=" not rescheduled;"
grep -q "^next $((now + 400 + 600))\$" "$entry" || why="$why next not +600 s: $(grep '^next' "$entry");"
expect "--flush-due: still down: rescheduled, back-off doubled" 0 "$got" "$why"

# The domain "comes back": the flush goes to mx-valid (which takes any domain).
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 1100)) "$sendmail" --flush-due "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" \
    > "$out" 2>&1
got=$?
why=
wait_box mx-dead.tm.test "qd$id"
[ -n "$box" ] || why=" not delivered;"
[ "$(entries | wc -l)" -eq 0 ] || why="$why entry not removed;"
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 90000)) "$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" \
    >> "$out" 2>&1
sleep 0.5
[ "$(mailbox mx-dead.tm.test "qd$id")" -eq 1 ] || why="$why delivered twice;"
expect "--flush-due: delivered, removed, not sent again" 0 "$got" "$why"

# A flush that stopped during a delivery leaves the entry "attempting": the
# outcome is unknown, so it is held, never sent again.
# shellcheck disable=SC2086
"$sendmail" --queue "$q" -f a@tm.test $common "qi$id@mx-dead.tm.test" < "$dir/o.eml" > "$out" 2>&1
entry=$(entries)
sed 's/^state deferred$/state attempting/' "$entry" > "$dir/edit" && cat "$dir/edit" > "$entry"
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 1000)) "$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" \
    > "$out" 2>&1
got=$?
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 90000)) "$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" \
    >> "$out" 2>&1
why=
sleep 0.5
[ "$(mailbox mx-dead.tm.test "qi$id")" -eq 0 ] || why=" delivered;"
grep -q '^state held$' "$entry" || why="$why not held;"
grep -q 'held' "$out" || why="$why no 'held' line;"
expect "--flush after an interrupted flush: held, not delivered" 75 "$got" "$why"
rm -f "$entry"

# given up after 5 days: kept as f-*, exit 69, not delivered, bounced (4.4.7)
# shellcheck disable=SC2086
"$sendmail" --queue "$q" -f "exp$id@tm.test" $common "qe$id@mx-dead.tm.test" < "$dir/o.eml" > "$out" 2>&1
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 6 * 86400)) "$sendmail" --flush "$q" $common \
    --bounce "mbox:$dir/expired.mbox" --mx "mx-valid.tm.test:$TM_TEST_PORT" > "$out" 2>&1
got=$?
why=
[ "$(entries | wc -l)" -eq 0 ] && [ "$(find "$q" -name 'f-*' | wc -l)" -eq 1 ] || why=" not moved to f-*;"
grep -q 'expired' "$out" || why="$why no 'expired' line;"
[ "$(mailbox mx-dead.tm.test "qe$id")" -eq 0 ] || why="$why delivered;"
grep -q "^To: <exp$id@tm.test>" "$dir/expired.mbox" 2>/dev/null &&
    grep -q "^Final-Recipient: rfc822; *qe$id@mx-dead.tm.test" "$dir/expired.mbox" &&
    grep -q '^Status: 4\.4\.7' "$dir/expired.mbox" && grep -q '^Action: failed' "$dir/expired.mbox" ||
    why="$why no 4.4.7 bounce to the sender: $(head -c 300 "$dir/expired.mbox" 2>/dev/null);"
expect "--flush: expired after 5 days, bounced to the sender" 69 "$got" "$why"

# one flush at a time
# shellcheck disable=SC2086
flock "$q/.lock" "$sendmail" --flush "$q" $common > "$out" 2>&1
got=$?
grep -q 'another flush' "$out" && why= || why=" no 'another flush';"
expect "--flush while another runs: 75" 75 "$got" "$why"

# a queue that cannot be written: the caller keeps the message (75)
# shellcheck disable=SC2086
"$sendmail" --queue "$dir/o.eml/q" -f a@tm.test $common "nq$id@mx-dead.tm.test" < "$dir/o.eml" > "$out" 2>&1
got=$?
grep -q "queue $dir/o.eml/q" "$out" && why= || why=" the queue's error not said;"
expect "a queue that cannot be written: 75" 75 "$got" "$why"

# --- configuration only, as cron calls it: echo ... | sendmail -t ----------
q2="$dir/spool"
mbox="$dir/bounces.mbox"
cat > "$dir/sendmail.conf" <<CONF
# what /etc/tlsmail/sendmail.conf would say
ca-file $TM_TEST_CA
dns $TM_TEST_DNS
port $TM_TEST_PORT
helo client.tm.test
timeout 10
from cron$id@tm.test
queue $q2
bounce mbox:$mbox
CONF
printf 'To: c1%s@valid.tm.test, c2%s@plain.tm.test\nSubject: cron output\n\nit ran\n' "$id" "$id" |
    TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -t > "$out" 2>&1
got=$?
why=
for r in valid.tm.test:c1$id plain.tm.test:c2$id; do
    wait_box "${r%%:*}" "${r#*:}"
    [ -n "$box" ] || { why="$why nothing for ${r#*:}@${r%%:*};"; continue; }
    grep -q "^Return-Path: <cron$id@tm.test>" "$box" || why="$why sender not the configuration's;"
    grep -q "^From: cron$id@tm.test" "$box" || why="$why no From added;"
    grep -q '^Date: [A-Z][a-z][a-z], [0-9]* [A-Z][a-z][a-z] 20[0-9][0-9] ' "$box" || why="$why no Date added;"
    grep -q '^Message-ID: <.*@client.tm.test>' "$box" || why="$why no Message-ID added;"
done
[ ! -e "$q2" ] || [ "$(find "$q2" -name 'q-*' | wc -l)" -eq 0 ] || why="$why something queued;"
expect "configuration file only (cron): -t, Date and Message-ID added" 0 "$got" "$why"

# A Date and a Message-ID of the message are kept (and not doubled).
printf 'Date: Mon, 2 Nov 2026 10:00:00 +0000\nMessage-ID: <keep%s@tm.test>\nSubject: x\n\nx\n' "$id" |
    TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" "dk$id@valid.tm.test" > "$out" 2>&1
got=$?
wait_box valid.tm.test "dk$id"
why=
[ -n "$box" ] && [ "$(grep -c '^Date:' "$box")" -eq 1 ] && [ "$(grep -ci '^Message-ID:' "$box")" -eq 1 ] &&
    grep -q "^Message-ID: <keep$id@tm.test>" "$box" || why=" Date/Message-ID not kept alone;"
expect "the message's Date and Message-ID kept" 0 "$got" "$why"

# --- PHP's mail(): sendmail -t -i, a Bcc, one domain down: queued by the
# configuration's queue, delivered by the next -q (not waiting for the
# back-off), exactly once.
cat > "$dir/php.eml" <<MSG
To: p1$id@valid.tm.test
Cc: p2$id@mx-dead.tm.test
Bcc: p3$id@plain.tm.test
Subject: from PHP

order confirmed
MSG
TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -t -i < "$dir/php.eml" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "p1$id"
[ -n "$box" ] || why=" not delivered to valid.tm.test;"
wait_box plain.tm.test "p3$id"
[ -n "$box" ] || why="$why not delivered to the Bcc;"
pe=$(find "$q2" -maxdepth 1 -name 'q-*' -type f 2>/dev/null)
[ -n "$pe" ] && [ "$(echo "$pe" | wc -l)" -eq 1 ] && grep -q "^rcpt p2$id@mx-dead.tm.test\$" "$pe" ||
    why="$why not one entry for mx-dead.tm.test in the configuration's queue;"
expect "PHP -t -i, Bcc, a domain down: queued, 0" 0 "$got" "$why"
TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -bp > "$out" 2>&1
got=$?
grep -q "to <p2$id@mx-dead.tm.test>" "$out" && grep -q 'next try in' "$out" && why= ||
    why=" -bp: $(head -c 300 "$out");"
expect "-bp lists the entry" 0 "$got" "$why"
# the domain is back (its MX: mx-valid); -q tries now, whatever the back-off
TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -q --mx "mx-valid.tm.test:$TM_TEST_PORT" > "$out" 2>&1
got=$?
TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -q --mx "mx-valid.tm.test:$TM_TEST_PORT" >> "$out" 2>&1
why=
wait_box mx-dead.tm.test "p2$id"
[ -n "$box" ] || why=" not delivered by -q;"
sleep 0.5
[ "$(mailbox mx-dead.tm.test "p2$id")" -eq 1 ] || why="$why not exactly once;"
[ -n "$box" ] && grep -qi '^Bcc:' "$box" && why="$why Bcc header in the queued copy;"
[ "$(find "$q2" -name 'q-*' | wc -l)" -eq 0 ] || why="$why entry left;"
expect "-q delivers the queued domain now, exactly once" 0 "$got" "$why"

# --- a recipient refused (550 5.1.1): 69 and a bounce (RFC 3464) to the sender
printf 'Subject: will bounce\nX-Tag: bounce%s\n\nx\n' "$id" |
    TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -f "s$id@tm.test" \
    "reject$id@valid.tm.test" "fine$id@valid.tm.test" > "$out" 2>&1
got=$?
why=
wait_box valid.tm.test "fine$id"
[ -n "$box" ] || why=" the other recipient not delivered;"
b=$(cat "$mbox" 2>/dev/null)
case "$b" in
*"To: <s$id@tm.test>"*) ;;
*) why="$why no bounce to the sender in the mbox;" ;;
esac
for want in '^From MAILER-DAEMON ' '^Content-Type: multipart/report; *report-type=delivery-status' \
    '^Content-Type: message/delivery-status' '^Reporting-MTA: dns; *client.tm.test' \
    "^Final-Recipient: rfc822; *reject$id@valid.tm.test" '^Action: failed' '^Status: 5\.1\.1' \
    '^Diagnostic-Code: smtp; *550 5\.1\.1' '^Content-Type: text/rfc822-headers' "^X-Tag: bounce$id" \
    '^Auto-Submitted: auto-replied'; do
    grep -q "$want" "$mbox" 2>/dev/null || why="$why no /$want/ in the bounce;"
done
grep -q "^Final-Recipient: rfc822; *fine$id@" "$mbox" 2>/dev/null && why="$why the delivered one bounced;"
expect "550 5.1.1: 69, a bounce to the sender" 69 "$got" "$why"
# the null sender is never bounced to
size=$(wc -c < "$mbox")
printf 'Subject: null\n\nx\n' | TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" -f '<>' \
    "reject$id@valid.tm.test" > "$out" 2>&1
got=$?
why=
[ "$(wc -c < "$mbox")" -eq "$size" ] || why=" a bounce for the null sender;"
grep -q 'null sender' "$out" || why="$why not said;"
expect "the null sender: no bounce" 69 "$got" "$why"
# --bounce stderr: the report on standard error
printf 'Subject: b\n\nx\n' | TM_SENDMAIL_CONF="$dir/sendmail.conf" "$sendmail" --bounce stderr \
    -f "e$id@tm.test" "reject$id@valid.tm.test" > "$out" 2>&1
got=$?
grep -q "^Final-Recipient: rfc822; *reject$id@valid.tm.test" "$out" && why= || why=" no report on stderr;"
expect "--bounce stderr" 69 "$got" "$why"

# --- a held entry released goes with the next flush
"$sendmail" --queue "$q" -f a@tm.test $common "qr$id@mx-dead.tm.test" < "$dir/o.eml" > "$out" 2>&1
entry=$(entries)
sed 's/^state deferred$/state held/' "$entry" > "$dir/edit" && cat "$dir/edit" > "$entry"
# shellcheck disable=SC2086
"$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" > "$out" 2>&1
why=
[ "$(mailbox mx-dead.tm.test "qr$id")" -eq 0 ] || why=" a held entry was sent;"
"$tm_send" --release "$entry" > "$out" 2>&1 || why="$why --release failed: $(cat "$out");"
grep -q '^state deferred$' "$entry" || why="$why not deferred after --release;"
# shellcheck disable=SC2086
"$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" > "$out" 2>&1
got=$?
wait_box mx-dead.tm.test "qr$id"
[ -n "$box" ] || why="$why not delivered after --release;"
"$sendmail" --release "$q/q-nothing" > "$out" 2>&1 && why="$why --release of nothing: 0;"
expect "--release: held -> deferred, sent by the next flush" 0 "$got" "$why"

# --- a configuration error: 78, nothing read or sent
printf 'dns 127.0.0.1\nflush %s\n' "$q" > "$dir/bad.conf"
TM_SENDMAIL_CONF="$dir/bad.conf" "$sendmail" "bad$id@valid.tm.test" < "$dir/o.eml" > "$out" 2>&1
got=$?
grep -q 'bad.conf:2: flush is not a configuration option' "$out" && why= || why=" $(cat "$out");"
expect "a bad configuration line: 78, named" 78 "$got" "$why"
TM_SENDMAIL_CONF="$dir/missing.conf" "$sendmail" "bad$id@valid.tm.test" < "$dir/o.eml" > "$out" 2>&1
expect "\$TM_SENDMAIL_CONF names a missing file: 78" 78 "$?" ""

if [ -n "${TM_SEND_VALGRIND:-}" ]; then
    why=
    runs=$(find "$dir/vg" -type f | wc -l)
    [ "$runs" -ge 25 ] || why=" only $runs runs under valgrind;"
    for f in "$dir"/vg/*; do
        [ -s "$f" ] && why="$why $(head -c 2000 "$f");"
    done
    result "valgrind: no error or leak in $runs runs" "$([ -z "$why" ] && echo 1 || echo 0)" "$why"
fi
finish
