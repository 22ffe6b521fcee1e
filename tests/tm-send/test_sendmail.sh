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
ln -s "$(cd "$(dirname "$tm_send")" && pwd)/$(basename "$tm_send")" "$dir/sendmail"
sendmail="$dir/sendmail"
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
"$sendmail" --flush "$q" $common > "$out" 2>&1
got=$?
grep -q 'next try in' "$out" && grep -q '^attempts 1$' "$entry" && why= || why=" tried too early;"
expect "--flush: an entry not due is left alone" 0 "$got" "$why"

# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 400)) "$sendmail" --flush "$q" $common > "$out" 2>&1
got=$?
why=
grep -q '^attempts 2$' "$entry" && grep -q '^state deferred$' "$entry" || why=" not rescheduled;"
grep -q "^next $((now + 400 + 600))\$" "$entry" || why="$why next not +600 s: $(grep '^next' "$entry");"
expect "--flush: still down: rescheduled, back-off doubled" 0 "$got" "$why"

# The domain "comes back": the flush goes to mx-valid (which takes any domain).
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 1100)) "$sendmail" --flush "$q" $common --mx "mx-valid.tm.test:$TM_TEST_PORT" \
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
expect "--flush: delivered, removed, not sent again" 0 "$got" "$why"

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

# given up after 5 days: kept as f-*, exit 69, not delivered
# shellcheck disable=SC2086
"$sendmail" --queue "$q" -f a@tm.test $common "qe$id@mx-dead.tm.test" < "$dir/o.eml" > "$out" 2>&1
# shellcheck disable=SC2086
TM_QUEUE_NOW=$((now + 6 * 86400)) "$sendmail" --flush "$q" $common \
    --mx "mx-valid.tm.test:$TM_TEST_PORT" > "$out" 2>&1
got=$?
why=
[ "$(entries | wc -l)" -eq 0 ] && [ "$(find "$q" -name 'f-*' | wc -l)" -eq 1 ] || why=" not moved to f-*;"
grep -q 'expired' "$out" || why="$why no 'expired' line;"
[ "$(mailbox mx-dead.tm.test "qe$id")" -eq 0 ] || why="$why delivered;"
expect "--flush: expired after 5 days" 69 "$got" "$why"

# one flush at a time
# shellcheck disable=SC2086
flock "$q/.lock" "$sendmail" --flush "$q" $common > "$out" 2>&1
got=$?
grep -q 'another flush' "$out" && why= || why=" no 'another flush';"
expect "--flush while another runs: 75" 75 "$got" "$why"

finish
