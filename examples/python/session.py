#!/usr/bin/python3
"""Send several messages over one SMTP session: open it, apply the policy
once (STARTTLS), send each message, close.

    python3 examples/python/session.py you@example.org [COUNT]

Against the test peers, from the top of the source tree after
`meson setup build && ninja -C build`:

    python3 tests/peers/peers.py run --dir /tmp/peers -- \\
        env TLSMAIL_LIBRARY=build/libtlsmail.so.1 PYTHONPATH=bindings/python \\
        python3 examples/python/session.py you@valid.tm.test 3

Environment as in deliver.py.
"""
import os
import sys

import tlsmail


def env(name, fallback):
    return os.environ.get(name) or os.environ.get(fallback)


if len(sys.argv) not in (2, 3) or "@" not in sys.argv[1]:
    sys.exit("usage: session.py TO [COUNT]")
to = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 3

port = env("TLSMAIL_PORT", "TM_TEST_PORT")
ctx = tlsmail.Context(ca_file=env("TLSMAIL_CA_FILE", "TM_TEST_CA"),
                      dns_server=env("TLSMAIL_DNS", "TM_TEST_DNS"),
                      port=int(port) if port else None, helo_name="client.tm.test", timeout=30)
failed = 0
try:
    # Opening connects to the first reachable MX; it raises DeliveryError
    # (with .status) when none can be reached.
    with tlsmail.Session(ctx, to.split("@", 1)[1], host=os.environ.get("TLSMAIL_HOST")) as s:
        print("open:     %s [%s]" % (s.open_status.mx_host, s.open_status.mx_address))
        tls = s.starttls(tlsmail.Policy())  # default policy; raises TLSRequired under require_tls
        print("starttls: tls=%s certificate-verified=%s %s %s"
              % (tls.tls, tls.cert_verified, tls.tls_version, tls.tls_error))
        for i in range(1, count + 1):
            st = s.send("sender@tm.test", to,
                        b"Subject: message %d of %d\r\n\r\nOne session.\r\n" % (i, count))
            print("message %d: %s, %d %s, tls=%s, %.3f s"
                  % (i, st.result, st.code, st.message, st.tls, st.session_seconds))
            failed += not st.delivered
except tlsmail.TlsmailError as e:  # DeliveryError, TLSRequired, SessionStateError...
    print("failed: %s" % e)
    failed = 1
finally:
    ctx.close()
sys.exit(0 if failed == 0 else 75)
