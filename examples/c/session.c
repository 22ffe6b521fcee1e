/*
 * session.c - send several messages over one SMTP session: open it, apply
 * the policy once (STARTTLS), send each message, close.
 *
 *   cc session.c $(pkg-config --cflags --libs libtlsmail) -o session
 *   ./session you@example.org [COUNT]
 *
 * Against the test peers, from the top of the source tree after
 * `meson setup build && ninja -C build`:
 *
 *   cc examples/c/session.c $(PKG_CONFIG_PATH=build/meson-uninstalled \
 *       pkg-config --cflags --libs libtlsmail) -o /tmp/session
 *   python3 tests/peers/peers.py run --dir /tmp/peers -- \
 *       env LD_LIBRARY_PATH=build /tmp/session you@valid.tm.test 3
 *
 * Environment as in deliver.c: TLSMAIL_HOST, TLSMAIL_PORT, TLSMAIL_CA_FILE,
 * TLSMAIL_DNS (or the peers' TM_TEST_*).
 * Exit status: 0 all delivered, 75 otherwise, 64 usage.
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
    tm_delivery_status st;
    tm_context *ctx;
    tm_session *s = NULL;
    const char *port = env("TLSMAIL_PORT", "TM_TEST_PORT");
    const char *domain;
    int count, i, rc, failed = 0;

    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0 ||
        (domain = strchr(argv[1], '@')) == NULL) {
        fprintf(argc == 2 ? stdout : stderr, "usage: %s TO [COUNT]\n", argv[0]);
        return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 64;
    }
    domain++;
    count = argc > 2 ? atoi(argv[2]) : 3;

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
    where.host = getenv("TLSMAIL_HOST");
    /* Set the status's version once (the one compiled against); every call
     * that takes the status resets the rest. */
    tm_status_init(&st, TM_STATUS_VERSION);

    /* Connect to the domain's first reachable MX and say EHLO. */
    rc = tm_session_open(&s, ctx, domain, &where, &st);
    printf("open:     %s, %s [%s]\n", tm_strerror(rc), st.mx_host, st.mx_address);
    if (rc == TM_OK) {
        /* Default policy (NULL): STARTTLS when offered, plaintext otherwise. */
        rc = tm_starttls(s, NULL, &st);
        printf("starttls: %s, tls=%d certificate-verified=%d %s %s\n", tm_strerror(rc), st.tls,
               st.cert_verified, st.tls_version, st.tls_error);
    }
    for (i = 1; rc == TM_OK && i <= count; i++) {
        char body[128];
        const char *to[1] = { argv[1] };
        tm_rcpt_status rcpt[1];
        tm_message msg = TM_MESSAGE_INIT;

        snprintf(body, sizeof body, "Subject: message %d of %d\r\n\r\nOne session.\r\n", i, count);
        msg.from = "sender@tm.test";
        msg.to = to;
        msg.to_count = 1;
        msg.data = body;
        msg.size = strlen(body);
        msg.rcpt_status = rcpt; /* receives the recipient's own outcome */
        msg.rcpt_status_cap = 1;
        /* Each message gets its own status; a refused message leaves the
         * session usable, a broken connection does not (TM_ESTATE). */
        if (tm_send(s, &msg, &st) != TM_OK)
            failed++;
        printf("message %d: %s, %d %s, tls=%d, %.3f s\n", i, tm_result_name(st.result), st.code,
               st.message, st.tls, st.session_seconds);
        if (st.error == TM_ESTATE || st.error == TM_ECLOSED || st.error == TM_ETIMEOUT)
            break;
    }
    tm_session_close(s); /* QUIT; NULL is fine */
    tm_context_free(ctx);
    return rc == TM_OK && failed == 0 ? 0 : 75;
}
