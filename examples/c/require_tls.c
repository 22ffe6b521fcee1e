/*
 * require_tls.c - deliver one message only over TLS with a verified
 * certificate (require_tls on); a domain whose MX hosts cannot give it is
 * deferred, never sent in plaintext.
 *
 *   cc require_tls.c $(pkg-config --cflags --libs libtlsmail) -o require_tls
 *   ./require_tls you@example.org [--skip-verify]
 *
 * Against the test peers, from the top of the source tree after
 * `meson setup build && ninja -C build`:
 *
 *   cc examples/c/require_tls.c $(PKG_CONFIG_PATH=build/meson-uninstalled \
 *       pkg-config --cflags --libs libtlsmail) -o /tmp/require_tls
 *   python3 tests/peers/peers.py run --dir /tmp/peers -- sh -c \
 *       'LD_LIBRARY_PATH=build /tmp/require_tls you@valid.tm.test;
 *        LD_LIBRARY_PATH=build /tmp/require_tls you@plain.tm.test'
 *
 * The first is delivered over verified TLS, the second deferred (mx-plain
 * offers no STARTTLS).  Environment as in deliver.c: TLSMAIL_HOST,
 * TLSMAIL_PORT, TLSMAIL_CA_FILE, TLSMAIL_DNS (or the peers' TM_TEST_*).
 * Exit status: 0 delivered, 75 deferred or uncertain, 69 bounced, 64 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tlsmail.h>

static const char *env(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : getenv(fallback);
}

int main(int argc, char **argv)
{
    tm_context_options opts = TM_CONTEXT_OPTIONS_INIT;
    tm_session_options where = TM_SESSION_OPTIONS_INIT;
    tm_message msg = TM_MESSAGE_INIT;
    tm_policy policy = TM_POLICY_INIT;
    tm_delivery_status st;
    tm_rcpt_status rcpt[1];
    tm_context *ctx;
    const char *to[1];
    const char *port = env("TLSMAIL_PORT", "TM_TEST_PORT");
    static const char body[] = "Subject: only over TLS\r\n"
                               "\r\n"
                               "Sent by examples/c/require_tls.c.\r\n";
    int rc;

    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0 ||
        (argc == 3 && strcmp(argv[2], "--skip-verify") != 0)) {
        fprintf(argc == 2 ? stdout : stderr, "usage: %s TO [--skip-verify]\n", argv[0]);
        return argc == 2 ? 0 : 64;
    }

    opts.ca_file = env("TLSMAIL_CA_FILE", "TM_TEST_CA");
    opts.dns_server = env("TLSMAIL_DNS", "TM_TEST_DNS");
    opts.port = port ? (unsigned int)atoi(port) : 0;
    opts.helo_name = "client.tm.test";
    opts.command_timeout_ms = 30000;
    rc = tm_context_new(&ctx, &opts);
    if (rc != TM_OK) {
        fprintf(stderr, "tm_context_new: %s\n", tm_strerror(rc));
        return 70;
    }

    /* TM_ON sets a flag; TM_OFF forces it off; TM_UNSET (0) leaves it to
     * the sending domain's settings.  skip_verify accepts any certificate
     * but the status still says whether it verified. */
    policy.require_tls = TM_ON;
    if (argc == 3)
        policy.skip_verify = TM_ON;

    to[0] = argv[1];
    msg.from = "sender@tm.test";
    msg.to = to;
    msg.to_count = 1;
    msg.data = body;
    msg.size = sizeof body - 1;
    msg.rcpt_status = rcpt;
    msg.rcpt_status_cap = 1;
    where.host = getenv("TLSMAIL_HOST");
    tm_status_init(&st, TM_STATUS_VERSION);

    rc = tm_deliver(ctx, &msg, &policy, &where, &st);

    printf("%s: %s\n", argv[1], tm_result_name(st.result));
    printf("  error                %s\n", tm_strerror(rc));
    printf("  mx-host              %s [%s]:%d\n", st.mx_host, st.mx_address, st.mx_port);
    printf("  tls                  %s %s %s\n", st.tls ? "true" : "false", st.tls_version,
           st.tls_cipher);
    printf("  certificate-verified %s\n", st.cert_verified ? "true" : "false");
    printf("  tls-error            %s\n", st.tls_error);
    printf("  reply                %d %s %s\n", st.code, st.enhanced_code, st.message);
    printf("  description          %s\n", st.description);
    if (st.rcpt_count > 0)
        printf("  recipient            %s %s %d %s\n", rcpt[0].address,
               tm_result_name(rcpt[0].result), rcpt[0].code, rcpt[0].message);

    tm_context_free(ctx);
    return st.result == TM_RESULT_DELIVERED ? 0 : st.result == TM_RESULT_BOUNCED ? 69 : 75;
}
