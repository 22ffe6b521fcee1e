/*
 * test_starttls.c - STARTTLS against the hostile server: not offered,
 * refused (4xx/5xx), 421 (leave the host), answered with anything else (a
 * failed handshake), response injection, a failed or stalled handshake,
 * capabilities that must not survive the upgrade, an EHLO reply too long
 * for a 4 KB buffer, a large TLS record, and "nothing before TLS" under
 * require_tls; most under each of the five policies.
 *
 * The policy truth table against a real Postfix is
 * tests/certificates/test_certificates_postfix.c.
 */
#include "harness.h"

#define W_PLAIN(fail, recv) { TM_OK, TM_RESULT_DELIVERED, 0, 0, fail, 1, recv, NULL, NULL, NULL }
#define W_REQ(fail, recv) { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0, fail, 1, recv, NULL, NULL, NULL }
#define W_TLS_OK(plain, tls) { TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL, NULL, plain, tls }

#define SLOW_MS 1500
/* A correctness bound on the deadline, not a performance figure. */
#define SLOW_BOUND (3.0 * SLOW_MS / 1000.0 + 2.0)

/* Connection 0 of `rec` received EHLO and STARTTLS first, and after them at
 * most TLS records (a ClientHello, an alert) or `also` (NULL: nothing
 * else): no SMTP command in plaintext. */
static void only_starttls(const char *rec, int conn, const char *also)
{
    const size_t pre = strlen(EHLO_L "STARTTLS\r\n");
    size_t len = 0;
    char *c = ht_keep(hostile_field(rec, conn, "received", &len));

    assert_non_null(c);
    assert_true(len >= pre);
    assert_memory_equal(c, EHLO_L "STARTTLS\r\n", pre);
    if (len > pre && c[pre] != 0x16 && c[pre] != 0x15 &&
        !(also && len - pre == strlen(also) && !memcmp(c + pre, also, len - pre))) {
        print_error("connection %d: plaintext after STARTTLS: [%.*s]\n", conn, (int)(len - pre),
                    c + pre);
        fail();
    }
    free(c);
}

/* STARTTLS not offered: plaintext, or under require_tls EHLO and QUIT only. */
static void strip_not_offered(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"}, " AUTO_PLAIN "]]}";
    const ht_row rows[POL_N] = {
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
        { s, W_REQ(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L "QUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
        { s, W_REQ(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L "QUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_NOT_OFFERED, EHLO_L TX) },
    };
    (void)state;
    ht_matrix("not offered", rows, NULL);
}

static void refused(const char *code, const char *reply)
{
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                     "{\"expect\": \"STARTTLS\"}, {\"send\": \"%s %s\\r\\n\"}, " AUTO_PLAIN "]]}",
                     code, reply);
    const ht_row rows[POL_N] = {
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
        { s, W_REQ(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\nQUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
        { s, W_REQ(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\nQUIT\r\n") },
        { s, W_PLAIN(TM_TLS_FAILURE_REFUSED, EHLO_L "STARTTLS\r\n" TX) },
    };
    tm_delivery_status st;
    int rc;
    char *rec;

    ht_matrix(code, rows, NULL);
    /* tls-error names the server's reply. */
    rec = ht_run(s, NULL, &rc, &st);
    assert_int_equal(rc, TM_OK);
    assert_non_null(strstr(st.tls_error, code));
    free(rec);
    free(s);
}

/* Offered, then refused: plaintext on the same connection (not under
 * require_tls: QUIT). */
static void strip_refused_454(void **state)
{
    (void)state;
    refused("454", "4.7.0 TLS not available due to local problem");
}

static void strip_refused_502(void **state)
{
    (void)state;
    refused("502", "5.5.1 Error: command not implemented");
}

/* 421 to STARTTLS: the host is leaving.  Nothing more on that connection
 * (QUIT at most), no fresh connection to it, and with no other MX the
 * message is deferred - whatever the policy. */
static void starttls_421(void **state)
{
    const char *s = "{\"linger\": 0.5, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, "
                    "{\"send\": \"421 4.3.2 Service shutting down\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}";
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char what[100];
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        o.host = "127.0.0.1";
        rec = ht_run(s, &o, &rc, &st);
        snprintf(what, sizeof what, "421 to STARTTLS [%s]", ht_policy_name(p));
        ht_print(what, rc, &st);
        HT_EQ(st.result, TM_RESULT_DEFERRED);
        assert_int_not_equal(rc, TM_OK);
        assert_int_equal(st.error, rc);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
        assert_int_equal(st.tls, 0);
        assert_int_equal(hostile_count_connections(rec), 1);
        assert_int_equal(hostile_unexpected(rec), 0);
        only_starttls(rec, 0, "QUIT\r\n");
        ht_no_envelope(rec);
        free(rec);
    }
}

/* 421 to STARTTLS from the first of two MX hosts: the second one, over TLS,
 * takes the message; the first sees no envelope and no second connection. */
static void starttls_421_next_mx(void **state)
{
    const char *a = "{\"linger\": 0.5, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, "
                    "{\"send\": \"421 4.3.2 Service shutting down\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}";
    const char *b = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "]]}";
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char what[100];
        char *rec_a, *rec_b;
        int rc;

        o.policy = ht_policy(p);
        rec_a = ht_run_two(a, b, &o, &rc, &st, &rec_b);
        snprintf(what, sizeof what, "421 to STARTTLS, next MX [%s]", ht_policy_name(p));
        ht_print(what, rc, &st);
        HT_EQ(rc, TM_OK);
        assert_int_equal(st.result, TM_RESULT_DELIVERED);
        assert_string_equal(st.mx_host, "mx-b.atk.test");
        assert_int_equal(st.tls, 1);
        assert_int_equal(st.cert_verified, 1);
        assert_int_equal(hostile_count_connections(rec_a), 1);
        assert_int_equal(hostile_unexpected(rec_a), 0);
        only_starttls(rec_a, 0, "QUIT\r\n");
        ht_no_envelope(rec_a);
        assert_int_equal(hostile_count_connections(rec_b), 1);
        assert_int_equal(hostile_unexpected(rec_b), 0);
        ht_field_eq(rec_b, 0, "received_plain", EHLO_L "STARTTLS\r\n");
        ht_field_eq(rec_b, 0, "received_tls",
                    EHLO_L FROM_L "RCPT TO:<rcpt@two.atk.test>\r\nDATA\r\n" BODY ".\r\nQUIT\r\n");
        free(rec_a);
        free(rec_b);
    }
}

/* What a failed handshake (or what counts as one) ends in under policy p:
 * with require_tls, deferred and no envelope in plaintext; else delivered
 * over a second, plaintext connection that does not try STARTTLS again. */
static void expect_failed_handshake(const char *rec, int rc, const tm_delivery_status *st, int p)
{
    if (POL_REQUIRES(p)) {
        const ht_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                            TM_TLS_FAILURE_HANDSHAKE, 1, NULL, NULL, NULL, NULL };
        ht_check(rec, rc, st, &w);
        ht_no_envelope_in_plain(rec);
    } else {
        const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                            NULL, EHLO_L TX, NULL, NULL };
        ht_check(rec, rc, st, &w);
        assert_int_equal(st->attempt_no, 2);
    }
}

/* STARTTLS answered with a 2xx other than 220, a 3xx or garbage: a
 * protocol violation, handled as a failed handshake - a fresh plaintext
 * connection without STARTTLS where the policy allows it, nothing under
 * require_tls; never the envelope on the connection that got the reply. */
static void starttls_odd_reply(const char *reply)
{
    char *c0 = ht_fmt("[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"}, {\"send\": \"%s\\r\\n\"}, "
                      "{\"read_until_close\": true, \"timeout\": 3}]",
                      reply);
    char *two = ht_fmt("{\"linger\": 0.3, \"connections\": [%s, [" GREET_ONLY AUTO_TLS "]]}", c0);
    char *one = ht_fmt("{\"linger\": 0.5, \"connections\": [%s]}", c0);
    int p;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char what[160];
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        snprintf(what, sizeof what, "STARTTLS answered \"%s\" [%s]", reply, ht_policy_name(p));
        ht_print(what, rc, &st);
        expect_failed_handshake(rec, rc, &st, p);
        only_starttls(rec, 0, "QUIT\r\n");
        assert_false(ht_field_has(rec, 0, "received", "MAIL"));
        free(rec);
    }
    free(c0);
    free(two);
    free(one);
}

static void starttls_answered_200(void **state)
{
    (void)state;
    starttls_odd_reply("200 2.0.0 fine");
}

static void starttls_answered_221(void **state)
{
    (void)state;
    starttls_odd_reply("221 2.0.0 Bye");
}

static void starttls_answered_354(void **state)
{
    (void)state;
    starttls_odd_reply("354 go ahead");
}

static void starttls_answered_garbage(void **state)
{
    (void)state;
    starttls_odd_reply("hello there");
}

/* Offered in plaintext, not listed any more inside TLS: nothing to do,
 * the message goes over TLS. */
static void strip_missing_after_tls(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    AUTO_PLAIN "]]}";
    const ht_row r = { s, W_TLS_OK(EHLO_L "STARTTLS\r\n", EHLO_L TX) };
    const ht_row rows[POL_N] = { r, r, r, r, r };
    (void)state;
    ht_matrix("missing after TLS", rows, NULL);
}

/* A second STARTTLS advertised inside TLS is never sent. */
static void strip_second_starttls_not_sent(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    "{\"expect\": \"EHLO\"}, "
                    "{\"send\": \"250-x\\r\\n250-STARTTLS\\r\\n250 PIPELINING\\r\\n\"}, "
                    AUTO_PLAIN "]]}";
    const ht_row r = { s, W_TLS_OK(EHLO_L "STARTTLS\r\n", EHLO_L TX) };
    const ht_row rows[POL_N] = { r, r, r, r, r };
    (void)state;
    ht_matrix("second STARTTLS", rows, NULL);
}

/* An EHLO reply of 95 lines of 66 octets (6 KB: within the reply parser's
 * line and length bounds, past a 4 KB buffer) with STARTTLS listed last:
 * every keyword counts, so the message goes over TLS under every policy. */
static void ehlo_long_starttls_last(void **state)
{
    char lines[95 * 70], *s;
    size_t len = 0;
    int i;
    (void)state;

    /* "250-" + 60 octets + CRLF = 66 octets a line. */
    len += (size_t)snprintf(lines + len, sizeof lines - len, "250-hostile.tm.test %-40s\\r\\n",
                            "says hello");
    for (i = 1; i < 94; i++)
        len += (size_t)snprintf(lines + len, sizeof lines - len, "250-X-FILLER-%02d %-44d\\r\\n",
                                i, i);
    snprintf(lines + len, sizeof lines - len, "250 STARTTLS\\r\\n");
    s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"%s\"}, "
               "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
               AUTO_PLAIN "]]}",
               lines);
    {
        const ht_row r = { s, W_TLS_OK(EHLO_L "STARTTLS\r\n", EHLO_L TX) };
        const ht_row rows[POL_N] = { r, r, r, r, r };
        ht_matrix("STARTTLS last in a 6 KB EHLO reply", rows, NULL);
    }
    free(s);
}

/* Replies injected in the same packet as the 220 to STARTTLS: a failed
 * handshake.  Nothing at all follows STARTTLS on that connection (no
 * ClientHello, no plaintext QUIT: the connection is unusable); without
 * require_tls a fresh plaintext connection carries the message. */
static void inject_after_220(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"},"
                     "{\"send\": \"220 go ahead\\r\\n250-injected\\r\\n250 PIPELINING\\r\\n\"},"
                     "{\"read_until_close\": true, \"timeout\": 3}]";
    char *two = ht_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                       AUTO_TLS "]]}", c0);
    char *one = ht_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    const ht_want fb = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                         EHLO_L "STARTTLS\r\n", EHLO_L TX, NULL, NULL };
    const ht_want rq = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 1,
                         EHLO_L "STARTTLS\r\n", NULL, NULL, NULL };
    const ht_row rows[POL_N] = { { two, fb }, { one, rq }, { two, fb }, { one, rq }, { two, fb } };
    tm_delivery_status st;
    char *rec;
    int rc;
    (void)state;

    ht_matrix("injection after 220", rows, NULL);
    /* The status says why, and that the message took a second attempt. */
    rec = ht_run(two, NULL, &rc, &st);
    assert_int_equal(rc, TM_OK);
    assert_non_null(strstr(st.tls_error, "after the 220"));
    assert_int_equal(st.attempt_no, 2);
    free(rec);
    free(two);
    free(one);
}

/* The injected reply 50 ms after the 220: the client is already in the
 * handshake, the bytes break it; they never reach the SMTP parser. */
static void inject_split(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"},"
                     "{\"send_split\": [\"220 go ahead\\r\\n\", \"250-injected\\r\\n250 PIPELINING\\r\\n\"], "
                     "\"gap\": 0.05}, {\"read_until_close\": true, \"timeout\": 3}]";
    char *two = ht_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                       AUTO_TLS "]]}", c0);
    char *one = ht_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        ht_print(ht_policy_name(p), rc, &st);
        if (POL_REQUIRES(p)) {
            HT_EQ(rc, TM_ETLSREQUIRED);
            assert_int_equal(st.result, TM_RESULT_DEFERRED);
            assert_int_equal(hostile_count_connections(rec), 1);
        } else {
            HT_EQ(rc, TM_OK);
            assert_int_equal(st.result, TM_RESULT_DELIVERED);
            assert_int_equal(hostile_count_connections(rec), 2);
            ht_field_eq(rec, 1, "received", EHLO_L TX);
        }
        assert_int_equal(st.tls, 0);
        assert_int_equal(st.cert_verified, 0);
        assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
        assert_int_equal(hostile_unexpected(rec), 0);
        /* Connection 0: EHLO, STARTTLS, then at most TLS records (a
         * ClientHello, an alert): no SMTP command, no plaintext QUIT. */
        only_starttls(rec, 0, NULL);
        assert_false(ht_field_has(rec, 0, "received", "QUIT"));
        assert_false(ht_field_has(rec, 0, "received", "MAIL"));
        free(rec);
    }
    free(two);
    free(one);
}

/* SMTPUTF8, SIZE 100, 8BITMIME and PIPELINING offered in plaintext only:
 * inside TLS the MAIL line carries none of their parameters, a 300-byte
 * message is not refused for SIZE, nothing was pipelined with STARTTLS,
 * and a non-ASCII sender is refused locally (no SMTPUTF8 inside TLS). */
static void caps_forgotten_after_tls(void **state)
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
    want = ht_fmt(EHLO_L FROM_L RCPT_L "DATA\r\n%s.\r\nQUIT\r\n", body);
    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        ht_msg(&m, NULL, 0, body);
        o.policy = ht_policy(p);
        o.msg = &m;
        rec = ht_run(s, &o, &rc, &st);
        ht_print(ht_policy_name(p), rc, &st);
        {
            const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL,
                                NULL, EHLO_L "STARTTLS\r\n", want };
            ht_check(rec, rc, &st, &w);
        }
        assert_int_equal(st.utf8, 0);
        assert_string_equal(st.tls_error, "");
        free(rec);
    }
    free(want);

    /* Non-ASCII sender: SMTPUTF8 was only offered in plaintext. */
    {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;
        const ht_want w = { TM_EUTF8, TM_RESULT_BOUNCED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL, NULL,
                            EHLO_L "STARTTLS\r\n", EHLO_L "QUIT\r\n" };

        ht_msg(&m, NULL, 0, NULL);
        m.from = "s\xc3\xa9nder@tm.test";
        o.msg = &m;
        rec = ht_run(s, &o, &rc, &st);
        ht_print("utf8 sender", rc, &st);
        ht_check(rec, rc, &st, &w);
        free(rec);
    }
}

/* Under require_tls no MAIL, RCPT or DATA before TLS is up and verified:
 * each invalid certificate leaves EHLO, STARTTLS (and QUIT inside TLS);
 * with skip_verify the message goes over the unverified TLS. */
static void require_no_envelope_before_tls(void **state)
{
    static const char *const certs[] = { "selfsigned", "wrongname", "expired", "untrusted" };
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "]]}";
    size_t i;
    int q;
    (void)state;

    for (i = 0; i < sizeof certs / sizeof certs[0]; i++) {
        for (q = 0; q < 2; q++) {
            ht_opts o = { 0 };
            tm_delivery_status st;
            char what[100];
            char *rec;
            int rc;

            o.cert = certs[i];
            o.policy = ht_policy(q ? POL_REQ_SKIP : POL_REQ);
            rec = ht_run(s, &o, &rc, &st);
            snprintf(what, sizeof what, "%s [%s]", certs[i], ht_policy_name(q ? POL_REQ_SKIP : POL_REQ));
            ht_print(what, rc, &st);
            ht_no_envelope_in_plain(rec);
            ht_field_eq(rec, 0, "received_plain", EHLO_L "STARTTLS\r\n");
            if (q) {
                const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE, 1, NULL,
                                    NULL, EHLO_L "STARTTLS\r\n", EHLO_L TX };
                ht_check(rec, rc, &st, &w);
            } else {
                /* The TLS stream may hold the QUIT; nothing else. */
                const ht_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                    TM_TLS_FAILURE_CERTIFICATE, 1, NULL, NULL,
                                    EHLO_L "STARTTLS\r\n", "QUIT\r\n" };
                ht_check(rec, rc, &st, &w);
                assert_true(st.tls_error[0] != '\0');
            }
            free(rec);
        }
    }
}

/* A TLS fault after the 220 to STARTTLS, under each policy: a new
 * plaintext connection carries the message, or (require_tls) nothing.
 * On the failed connection only TLS records follow STARTTLS: no plaintext
 * QUIT, no envelope.  tls-error says why (must contain `why` when not NULL). */
static void tls_fault(const char *fault, const char *what, const char *why)
{
    char *c0 = ht_fmt("[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, %s]",
                      fault);
    char *two = ht_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                       AUTO_TLS "]]}", c0);
    char *one = ht_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    int p;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char label[120];
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        snprintf(label, sizeof label, "%s [%s]", what, ht_policy_name(p));
        ht_print(label, rc, &st);
        expect_failed_handshake(rec, rc, &st, p);
        assert_true(st.tls_error[0] != '\0');
        if (why)
            assert_non_null(strstr(st.tls_error, why));
        only_starttls(rec, 0, NULL);
        assert_false(ht_field_has(rec, 0, "received", "QUIT"));
        free(rec);
    }
    free(c0);
    free(two);
    free(one);
}

static void tls_alert(void **state)
{
    (void)state;
    tls_fault("{\"tls_alert\": true}", "alert", "handshake");
}

static void tls_garbage(void **state)
{
    (void)state;
    tls_fault("{\"tls_garbage\": \"HTTP/1.0 400 Bad Request\\r\\n\\r\\n\"}", "garbage", NULL);
}

static void tls_fin_after_220(void **state)
{
    (void)state;
    tls_fault("{\"close\": true}", "FIN after 220", NULL);
}

/* 220 to STARTTLS, then no ServerHello: the handshake deadline ends it;
 * a fresh plaintext connection, or under require_tls nothing. */
static void tls_stall(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, "
                     "{\"read_until_close\": true, \"timeout\": 10}]";
    char *two = ht_fmt("{\"linger\": 0, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                       AUTO_TLS "]]}", c0);
    char *one = ht_fmt("{\"linger\": 0, \"connections\": [%s]}", c0);
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        o.timeout_ms = SLOW_MS;
        o.finish_s = 3;
        rec = ht_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        ht_print(ht_policy_name(p), rc, &st);
        if (POL_REQUIRES(p)) {
            const ht_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                TM_TLS_FAILURE_HANDSHAKE, 1, NULL, NULL, NULL, NULL };
            ht_check(rec, rc, &st, &w);
        } else {
            const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                                NULL, EHLO_L TX, NULL, NULL };
            ht_check(rec, rc, &st, &w);
        }
        assert_false(ht_field_has(rec, 0, "received", "QUIT"));
        assert_true(st.session_seconds < SLOW_BOUND);
        assert_true(ht_last_wall < SLOW_BOUND);
        /* And not given up early either: the deadline was waited for. */
        assert_true(ht_last_wall >= SLOW_MS / 1000.0 - 0.05);
        free(rec);
    }
    free(two);
    free(one);
}

/*
 * Inside TLS, a 10 KB EHLO reply written at once arrives as one large
 * record, bigger than the TLS layer's 4 KB read-ahead: its body is read
 * straight into mbedTLS's buffer, the small records around it through the
 * read-ahead.  Every capability line must come through.
 */
static void tls_large_record(void **state)
{
    static const char head[] = "{\"linger\": 0, \"connections\": [[" GREET
                               "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
                               "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"},"
                               "{\"starttls\": true}, {\"expect\": \"EHLO\"}, "
                               "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250-SIZE 1000\\r\\n";
    static const char tail[] = "250 X-LAST\\r\\n\"},"
                               "{\"auto\": true, \"caps\": [\"PIPELINING\"]}]]}";
    size_t cap = sizeof head + sizeof tail + 100 * 120, len;
    char *script = ht_keep(malloc(cap));
    tm_delivery_status st;
    int rc, i;
    char *rec;
    (void)state;

    assert_non_null(script);
    memcpy(script, head, sizeof head - 1);
    len = sizeof head - 1;
    for (i = 0; i < 100; i++)
        len += (size_t)snprintf(script + len, cap - len, "250-X-FILLER-%03d %090d\\r\\n", i, i);
    memcpy(script + len, tail, sizeof tail);
    rec = ht_run(script, NULL, &rc, &st);
    free(script);
    ht_print("10 KB EHLO reply inside TLS", rc, &st);

    HT_EQ(rc, TM_OK);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    /* The capabilities before the 10 KB of filler were understood (SIZE,
     * PIPELINING: QUIT went with the dot), and the reply was consumed
     * exactly: the next replies matched their commands. */
    ht_field_eq(rec, 0, "received_tls",
                EHLO_L "MAIL FROM:<sender@tm.test> SIZE=27\r\n" RCPT_L "DATA\r\n" BODY
                       ".\r\nQUIT\r\n");
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strip_not_offered),
        cmocka_unit_test(strip_refused_454),
        cmocka_unit_test(strip_refused_502),
        cmocka_unit_test(starttls_421),
        cmocka_unit_test(starttls_421_next_mx),
        cmocka_unit_test(starttls_answered_200),
        cmocka_unit_test(starttls_answered_221),
        cmocka_unit_test(starttls_answered_354),
        cmocka_unit_test(starttls_answered_garbage),
        cmocka_unit_test(strip_missing_after_tls),
        cmocka_unit_test(strip_second_starttls_not_sent),
        cmocka_unit_test(ehlo_long_starttls_last),
        cmocka_unit_test(inject_after_220),
        cmocka_unit_test(inject_split),
        cmocka_unit_test(caps_forgotten_after_tls),
        cmocka_unit_test(require_no_envelope_before_tls),
        cmocka_unit_test(tls_alert),
        cmocka_unit_test(tls_garbage),
        cmocka_unit_test(tls_fin_after_220),
        cmocka_unit_test(tls_stall),
        cmocka_unit_test(tls_large_record),
    };
    return HT_MAIN("starttls", tests);
}
