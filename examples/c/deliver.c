/*
 * deliver.c - deliver one message with the default policy (opportunistic
 * STARTTLS, plaintext fallback) and print how it travelled.
 *
 *   cc deliver.c $(pkg-config --cflags --libs libtlsmail) -o deliver
 *   ./deliver you@example.org [from@example.com]
 *
 * Against the test peers, from the top of the source tree after
 * `meson setup build && ninja -C build`:
 *
 *   cc examples/c/deliver.c $(PKG_CONFIG_PATH=build/meson-uninstalled \
 *       pkg-config --cflags --libs libtlsmail) -o /tmp/deliver
 *   python3 tests/peers/peers.py run --dir /tmp/peers -- \
 *       env LD_LIBRARY_PATH=build /tmp/deliver you@valid.tm.test
 *
 * Settings from the environment (all optional): TLSMAIL_HOST (deliver to this
 * host instead of the MX hosts), TLSMAIL_PORT, TLSMAIL_CA_FILE, TLSMAIL_DNS;
 * the test peers' TM_TEST_PORT, TM_TEST_CA and TM_TEST_DNS are used when set.
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
    tm_delivery_status st;
    tm_rcpt_status rcpt[1]; /* one outcome per recipient, written by the call */
    tm_context *ctx;
    const char *to[1];
    const char *port = env("TLSMAIL_PORT", "TM_TEST_PORT");
    static char json[TM_STATUS_JSON_MAX];
    static const char body[] = "Subject: hello from libtlsmail\r\n"
                               "\r\n"
                               "Sent by examples/c/deliver.c.\r\n";
    int rc;

    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc == 2 ? stdout : stderr, "usage: %s TO [FROM]  (libtlsmail %s)\n",
                argv[0], tm_version());
        return argc == 2 ? 0 : 64;
    }

    /* One context per program: trust store, resolver, timeouts. */
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

    to[0] = argv[1];
    msg.from = argc > 2 ? argv[2] : "sender@tm.test";
    msg.to = to;
    msg.to_count = 1;
    msg.data = body;
    msg.size = sizeof body - 1;
    msg.rcpt_status = rcpt;
    msg.rcpt_status_cap = 1;
    where.host = getenv("TLSMAIL_HOST");
    /* The version this program was compiled with: the library fills the
     * fields of that version only. */
    tm_status_init(&st, TM_STATUS_VERSION);

    /* NULL policy: the defaults (opportunistic TLS). */
    rc = tm_deliver(ctx, &msg, NULL, &where, &st);

    printf("%s via %s [%s]: tls=%d certificate-verified=%d (%s)\n", tm_result_name(st.result),
           st.mx_host, st.mx_address, st.tls, st.cert_verified, tm_strerror(rc));
    if (st.rcpt_count > 0)
        printf("%s: %s, %d %s\n", rcpt[0].address, tm_result_name(rcpt[0].result), rcpt[0].code,
               rcpt[0].message);
    tm_status_json(&st, rcpt, st.rcpt_count > 0 ? 1 : 0, json, sizeof json);
    printf("%s\n", json);

    tm_context_free(ctx);
    return st.result == TM_RESULT_DELIVERED ? 0 : st.result == TM_RESULT_BOUNCED ? 69 : 75;
}
