/*
 * atk_starttls.c - STARTTLS stripping, response injection, capabilities
 * that must not survive the upgrade, and "nothing before TLS" under
 * require_tls; each under the five policies.
 */
#include "attacks.h"

#define W_PLAIN(fail, recv) { TM_OK, TM_RESULT_DELIVERED, 0, 0, fail, 1, recv, NULL, NULL, NULL }
#define W_REQ(fail, recv) { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0, fail, 1, recv, NULL, NULL, NULL }
#define W_TLS_OK(plain, tls) { TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL, NULL, plain, tls }

/* STARTTLS not offered: plaintext, or under require_tls EHLO and QUIT only. */
void strip_not_offered(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"}, " AUTO_PLAIN "]]}";
    const atk_row rows[POL_N] = {
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
        { s, W_REQ(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L "QUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
        { s, W_REQ(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L "QUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
    };
    (void)state;
    atk_matrix("not offered", rows, NULL);
}

static void refused(const char *reply)
{
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                      "{\"expect\": \"STARTTLS\"}, {\"send\": \"%s\\r\\n\"}, " AUTO_PLAIN "]]}",
                      reply);
    const atk_row rows[POL_N] = {
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
        { s, W_REQ(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\nQUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
        { s, W_REQ(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\nQUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
    };
    atk_matrix(reply, rows, NULL);
    free(s);
}

/* Offered, then refused: plaintext on the same connection (not under
 * require_tls: QUIT). */
void strip_refused_454(void **state)
{
    (void)state;
    refused("454 4.7.0 TLS not available due to local problem");
}

void strip_refused_502(void **state)
{
    (void)state;
    refused("502 5.5.1 Error: command not implemented");
}

/* Offered in plaintext, not listed any more inside TLS: nothing to do,
 * the message goes over TLS. */
void strip_missing_after_tls(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    AUTO_PLAIN "]]}";
    const atk_row r = { s, W_TLS_OK(EHLO_L "STARTTLS\r\n", EHLO_L TX) };
    const atk_row rows[POL_N] = { r, r, r, r, r };
    (void)state;
    atk_matrix("missing after TLS", rows, NULL);
}

/* A second STARTTLS advertised inside TLS is never sent. */
void strip_second_starttls_not_sent(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    "{\"expect\": \"EHLO\"}, "
                    "{\"send\": \"250-x\\r\\n250-STARTTLS\\r\\n250 PIPELINING\\r\\n\"}, "
                    AUTO_PLAIN "]]}";
    const atk_row r = { s, W_TLS_OK(EHLO_L "STARTTLS\r\n", EHLO_L TX) };
    const atk_row rows[POL_N] = { r, r, r, r, r };
    (void)state;
    atk_matrix("second STARTTLS", rows, NULL);
}

/* Replies injected in the same packet as the 220 to STARTTLS: a failed
 * handshake.  Nothing at all follows STARTTLS on that connection (no
 * ClientHello, no plaintext QUIT: the connection is unusable); without
 * require_tls a fresh plaintext connection carries the message. */
void inject_after_220(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"},"
                     "{\"send\": \"220 go ahead\\r\\n250-injected\\r\\n250 PIPELINING\\r\\n\"},"
                     "{\"read_until_close\": true, \"timeout\": 3}]";
    char *two = atk_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                        AUTO_TLS "]]}", c0);
    char *one = atk_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    const atk_want fb = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                          EHLO_L "STARTTLS\r\n", EHLO_L TX, NULL, NULL };
    const atk_want rq = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 1,
                          EHLO_L "STARTTLS\r\n", NULL, NULL, NULL };
    const atk_row rows[POL_N] = { { two, fb }, { one, rq }, { two, fb }, { one, rq }, { two, fb } };
    (void)state;
    atk_matrix("injection after 220", rows, NULL);
    free(two);
    free(one);
}

/* The injected reply 50 ms after the 220: the client is already in the
 * handshake, the bytes break it; they never reach the SMTP parser. */
void inject_split(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"},"
                     "{\"send_split\": [\"220 go ahead\\r\\n\", \"250-injected\\r\\n250 PIPELINING\\r\\n\"], "
                     "\"gap\": 0.05}, {\"read_until_close\": true, \"timeout\": 3}]";
    char *two = atk_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                        AUTO_TLS "]]}", c0);
    char *one = atk_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec, *c;
        size_t len = 0;
        int rc;

        o.policy = atk_policy(p);
        rec = atk_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        atk_print(atk_policy_name(p), rc, &st);
        if (POL_REQUIRES(p)) {
            ATK_EQ(rc, TM_ETLSREQUIRED);
            assert_int_equal(st.result, TM_RESULT_DEFERRED);
            assert_int_equal(hostile_count_connections(rec), 1);
        } else {
            ATK_EQ(rc, TM_OK);
            assert_int_equal(st.result, TM_RESULT_DELIVERED);
            assert_int_equal(hostile_count_connections(rec), 2);
            atk_field_eq(rec, 1, "received", EHLO_L TX);
        }
        assert_int_equal(st.tls, 0);
        assert_int_equal(st.cert_verified, 0);
        assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
        assert_int_equal(hostile_unexpected(rec), 0);
        /* Connection 0: EHLO, STARTTLS, then at most TLS records (a
         * ClientHello, an alert): no SMTP command, no plaintext QUIT. */
        c = atk_keep(hostile_field(rec, 0, "received", &len));
        assert_non_null(c);
        assert_true(len >= strlen(EHLO_L "STARTTLS\r\n"));
        assert_memory_equal(c, EHLO_L "STARTTLS\r\n", strlen(EHLO_L "STARTTLS\r\n"));
        if (len > strlen(EHLO_L "STARTTLS\r\n"))
            assert_int_equal((unsigned char)c[strlen(EHLO_L "STARTTLS\r\n")], 0x16);
        free(c);
        assert_false(atk_field_has(rec, 0, "received", "QUIT"));
        assert_false(atk_field_has(rec, 0, "received", "MAIL"));
        free(rec);
    }
    free(two);
    free(one);
}

/* Extra replies in the same packet as the greeting: a server (or a man in
 * the middle) answering EHLO before it was sent.  Taking "250 injected" as
 * the EHLO reply would hide STARTTLS; the client must notice the bytes
 * (a protocol error: deferred) and never deliver on a shifted dialogue. */
void inject_greeting(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [["
                    "{\"send\": \"220 hostile ESMTP\\r\\n250 injected\\r\\n\"}, {\"expect\": \"EHLO\"}, "
                    EHLO_TLS AUTO_TLS "]]}";
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = atk_policy(p);
        rec = atk_run(s, &o, &rc, &st);
        atk_print(atk_policy_name(p), rc, &st);
        /* Never a recipient "delivered" (no content was sent), never a
         * permanent "bounced" for a shifted dialogue. */
        assert_int_not_equal(st.rcpt[0].result, TM_RESULT_DELIVERED);
        assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
        ATK_EQ(rc, TM_EPROTOCOL);
        assert_int_equal(st.result, TM_RESULT_DEFERRED);
        assert_false(atk_field_has(rec, 0, "received", "MAIL"));
        assert_int_equal(hostile_unexpected(rec), 0);
        free(rec);
    }
}

/* SMTPUTF8, SIZE 100, 8BITMIME and PIPELINING offered in plaintext only:
 * inside TLS the MAIL line carries none of their parameters, a 300-byte
 * message is not refused for SIZE, and a non-ASCII sender is refused
 * locally (no SMTPUTF8 inside TLS). */
void caps_forgotten_after_tls(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n250-SMTPUTF8\\r\\n250-SIZE 100\\r\\n"
                    "250-8BITMIME\\r\\n250-PIPELINING\\r\\n250 STARTTLS\\r\\n\"}, "
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    "{\"auto\": true, \"caps\": []}]]}";
    char body[400];
    char *want;
    tm_message m;
    int p;
    (void)state;

    memset(body, 'x', sizeof body);
    memcpy(body, "Subject: caf\xe9\r\n\r\n", 17);
    memcpy(body + 300, "\r\n", 3);
    want = atk_fmt(EHLO_L FROM_L RCPT_L "DATA\r\n%s.\r\nQUIT\r\n", body);
    for (p = 0; p < POL_N; p++) {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        atk_msg(&m, NULL, 0, body);
        o.policy = atk_policy(p);
        o.msg = &m;
        rec = atk_run(s, &o, &rc, &st);
        atk_print(atk_policy_name(p), rc, &st);
        {
            const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL,
                                 NULL, EHLO_L "STARTTLS\r\n", want };
            atk_check(rec, rc, &st, &w);
        }
        assert_int_equal(st.utf8, 0);
        free(rec);
    }
    free(want);

    /* Non-ASCII sender: SMTPUTF8 was only offered in plaintext. */
    {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;
        const atk_want w = { TM_EUTF8, TM_RESULT_BOUNCED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL, NULL,
                             EHLO_L "STARTTLS\r\n", EHLO_L "QUIT\r\n" };

        atk_msg(&m, NULL, 0, NULL);
        m.from = "s\xc3\xa9nder@tm.test";
        o.msg = &m;
        rec = atk_run(s, &o, &rc, &st);
        atk_print("utf8 sender", rc, &st);
        atk_check(rec, rc, &st, &w);
        free(rec);
    }
}

/* Under require_tls no MAIL, RCPT or DATA before TLS is up and verified:
 * each invalid certificate leaves EHLO, STARTTLS (and QUIT inside TLS);
 * with skip_verify the message goes over the unverified TLS. */
void require_no_envelope_before_tls(void **state)
{
    static const char *const certs[] = { "selfsigned", "wrongname", "expired", "untrusted" };
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "]]}";
    size_t i;
    int q;
    (void)state;

    for (i = 0; i < sizeof certs / sizeof certs[0]; i++) {
        for (q = 0; q < 2; q++) {
            atk_opts o = { 0 };
            tm_delivery_status st;
            char what[100];
            char *rec;
            int rc;

            o.cert = certs[i];
            o.policy = atk_policy(q ? POL_REQ_SKIP : POL_REQ);
            rec = atk_run(s, &o, &rc, &st);
            snprintf(what, sizeof what, "%s [%s]", certs[i], atk_policy_name(q ? POL_REQ_SKIP : POL_REQ));
            atk_print(what, rc, &st);
            atk_no_envelope_in_plain(rec);
            atk_field_eq(rec, 0, "received_plain", EHLO_L "STARTTLS\r\n");
            if (q) {
                const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE, 1, NULL,
                                     NULL, EHLO_L "STARTTLS\r\n", EHLO_L TX };
                atk_check(rec, rc, &st, &w);
            } else {
                /* The TLS stream may hold the QUIT; nothing else. */
                const atk_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                     TM_TLS_FAILURE_CERTIFICATE, 1, NULL, NULL,
                                     EHLO_L "STARTTLS\r\n", "QUIT\r\n" };
                atk_check(rec, rc, &st, &w);
                assert_true(st.tls_error[0] != '\0');
            }
            free(rec);
        }
    }
}
