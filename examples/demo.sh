#!/bin/sh
# The quick start: install what is missing, build, start a private Postfix
# (STARTTLS, a certificate from a throwaway CA) and dnsmasq on loopback, and
# deliver one message with tm-send, showing the delivery status.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh tests/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
msg=$(mktemp)
trap 'rm -f "$msg"' EXIT
printf 'From: demo@tm.test\r\nTo: you@valid.tm.test\r\nSubject: hello from libtlsmail\r\n\r\nDelivered by tm-send over STARTTLS.\r\n' > "$msg"
cat > build/demo.sh <<'EOS'
#!/bin/sh
set -eu
echo "== tm-send --to you@valid.tm.test (MX mx-valid.tm.test, via dnsmasq on $TM_TEST_DNS)"
"$1" --from demo@tm.test --to you@valid.tm.test \
    --dns "$TM_TEST_DNS" --port "$TM_TEST_PORT" --ca-file "$TM_TEST_CA" "$2"
rc=$?
echo "== what arrived in Postfix's maildir:"
f=$(/usr/bin/python3 "$3" wait-mail --dir "$TM_PEERS_DIR" --to you@valid.tm.test --timeout 10 | tail -n 1)
cat "$f"
exit $rc
EOS
/usr/bin/python3 tests/peers/peers.py run --dir build/demo-peers -- \
    sh build/demo.sh "$top/build/examples/tm-send" "$msg" "$top/tests/peers/peers.py"
