#!/usr/bin/python3
"""Deliver one message only over TLS with a verified certificate; a domain
whose MX hosts cannot give it is deferred, never sent in plaintext.

    python3 examples/python/require_tls.py you@example.org [--skip-verify]

Against the test peers, from the top of the source tree after
`meson setup build && ninja -C build` (the first is delivered over
verified TLS, the second deferred: mx-plain offers no STARTTLS):

    python3 tests/peers/peers.py run --dir /tmp/peers -- sh -c '
        export TLSMAIL_LIBRARY=build/libtlsmail.so.1 PYTHONPATH=bindings/python
        python3 examples/python/require_tls.py you@valid.tm.test
        python3 examples/python/require_tls.py you@plain.tm.test'

Environment as in deliver.py.
"""
import os
import sys

import tlsmail


def env(name, fallback):
    return os.environ.get(name) or os.environ.get(fallback)


if len(sys.argv) not in (2, 3) or sys.argv[1] == "--help" or sys.argv[2:] not in ([], ["--skip-verify"]):
    sys.exit("usage: require_tls.py TO [--skip-verify]")

# True sets a flag, False forces it off, None leaves it to the sending
# domain's settings.  skip_verify accepts any certificate, but the status
# still says whether it verified.
policy = tlsmail.Policy(require_tls=True, skip_verify=True if sys.argv[2:] else None)

port = env("TLSMAIL_PORT", "TM_TEST_PORT")
with tlsmail.Context(ca_file=env("TLSMAIL_CA_FILE", "TM_TEST_CA"),
                     dns_server=env("TLSMAIL_DNS", "TM_TEST_DNS"),
                     port=int(port) if port else None,
                     helo_name="client.tm.test", timeout=30) as ctx:
    st = ctx.deliver("sender@tm.test", sys.argv[1],
                     b"Subject: only over TLS\r\n\r\nSent by examples/python/require_tls.py.\r\n",
                     policy=policy, host=os.environ.get("TLSMAIL_HOST"))

print("%s: %s (%s)" % (sys.argv[1], st.result, st.error_name))
print("  mx-host              %s [%s]:%d" % (st.mx_host, st.mx_address, st.mx_port))
print("  tls                  %s %s %s" % (st.tls, st.tls_version, st.tls_cipher))
print("  certificate-verified %s" % st.cert_verified)
print("  tls-error            %s" % st.tls_error)
print("  reply                %d %s %s" % (st.code, st.enhanced_code, st.message))
print("  description          %s" % st.description)
sys.exit(0 if st.delivered else 69 if st.result == tlsmail.Result.BOUNCED else 75)
