#!/usr/bin/python3
"""Deliver one message with the default policy (opportunistic STARTTLS,
plaintext fallback) and print how it travelled.

    python3 examples/python/deliver.py you@example.org [from@example.com]

Against the test peers, from the top of the source tree after
`meson setup build && ninja -C build`:

    python3 tests/peers/peers.py run --dir /tmp/peers -- \\
        env TLSMAIL_LIBRARY=build/libtlsmail.so.1 PYTHONPATH=bindings/python \\
        python3 examples/python/deliver.py you@valid.tm.test

Environment (optional): TLSMAIL_HOST (deliver to this host instead of the
MX hosts), TLSMAIL_PORT, TLSMAIL_CA_FILE, TLSMAIL_DNS; the test peers'
TM_TEST_PORT, TM_TEST_CA, TM_TEST_DNS are used when those are not set.
"""
import os
import sys

import tlsmail


def env(name, fallback):
    return os.environ.get(name) or os.environ.get(fallback)


if len(sys.argv) not in (2, 3) or sys.argv[1] == "--help":
    sys.exit("usage: deliver.py TO [FROM]")

port = env("TLSMAIL_PORT", "TM_TEST_PORT")
with tlsmail.Context(ca_file=env("TLSMAIL_CA_FILE", "TM_TEST_CA"),
                     dns_server=env("TLSMAIL_DNS", "TM_TEST_DNS"),
                     port=int(port) if port else None,
                     helo_name="client.tm.test", timeout=30) as ctx:
    status = tlsmail.deliver(
        sys.argv[2] if len(sys.argv) > 2 else "sender@tm.test", sys.argv[1],
        b"Subject: hello from libtlsmail\r\n\r\nSent by examples/python/deliver.py.\r\n",
        host=os.environ.get("TLSMAIL_HOST"), context=ctx)

# deliver() returns a status for every SMTP outcome; it raises only for misuse.
print("%s via %s [%s]: tls=%s certificate-verified=%s"
      % (status.result, status.mx_host, status.mx_address, status.tls, status.cert_verified))
for r in status.recipients:  # one entry per recipient, in the order given
    print("%s: %s, %d %s" % (r.address, r.result, r.code, r.message))
print(status.to_json())
sys.exit(0 if status.delivered else 69 if status.result == tlsmail.Result.BOUNCED else 75)
