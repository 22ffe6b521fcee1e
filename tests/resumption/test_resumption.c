/*
 * test_resumption.c - TLS session resumption and its safety, against the
 * hostile server.  One server process (Python ssl) resumes the sessions of
 * its own earlier connections and a new process knows none; its record
 * says what each ClientHello offered ("offered_session") and whether the
 * handshake was resumed ("tls_resumed").  A context caches sessions by
 * host, address, port and policy, and two tm_deliver calls with one context
 * to one server must show that a resumed session is never believed more
 * than the full handshake that made it, that a changed server gets a full
 * handshake that is judged again, and that a cached session never costs
 * TLS.  The same against a real Postfix, with trust store reloads and
 * ca_path, is test_resumption_postfix.c.
 *
 * Every case names the bug it catches.  TM_HOSTILE_SELFTEST=1 makes each
 * one fail (HT_EQ on its main expectation).
 */
#include "harness.h"

#define AUTO_TLS_MAX(v)                                                                           \
    "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"], \"max_version\": \"" v "\"}"
/* TLS 1.3 tickets held back until the reply to EHLO, sent with it. */
#define AUTO_TLS_HOLD "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"], \"hold_tickets\": true}"
#define CONN(step) "[" GREET_ONLY step "]"
#define CONN_TLS CONN(AUTO_TLS)
/* Everything the client says over TLS in one delivery of the default
 * message (after STARTTLS): EHLO again, the transaction, QUIT. */
#define TX_TLS EHLO_L TX
#define STARTTLS_L EHLO_L "STARTTLS\r\n"

/* One tm_deliver of the default message to localhost:port with ctx. */
static int deliver(tm_context *ctx, int port, int pol, tm_delivery_status *st, const char *what)
{
    tm_session_options so;
    tm_message m;
    char label[200];
    int rc;

    assert_int_equal(tm_status_init(st, TM_STATUS_VERSION), TM_OK);
    ht_session_opts(&so, "localhost", port);
    ht_msg(&m, NULL, 0, NULL);
    memset(ht_rcpt, 0, sizeof ht_rcpt);
    rc = tm_deliver(ctx, &m, ht_policy(pol), &so, st);
    snprintf(label, sizeof label, "%s [%s]", what, ht_policy_name(pol));
    ht_print(label, rc, st);
    print_message("  tls_resumed=%d tls_version=%s\n", st->tls_resumed, st->tls_version);
    assert_int_equal(st->error, rc);
    return rc;
}

/* The hostile server on listen ("127.0.0.1:0", or a port to take again). */
static void start(hostile *h, const char *listen, const char *script, const char *cert)
{
    assert_int_equal(hostile_start_at(h, listen, script, ht_cert(cert), ht_key(cert), 0), 0);
}

/* Waits for the server's end (its script done) and checks that no
 * connection came beyond the script. */
static char *finish(hostile *h)
{
    char *rec = ht_keep(hostile_finish(h, 10));

    assert_non_null(rec);
    assert_int_equal(hostile_unexpected(rec), 0);
    assert_int_equal(hostile_top_int(rec, "missing_connections"), 0);
    return rec;
}

/* The event of connection conn that starts with prefix (malloc'd), or NULL. */
static char *event_text(const char *rec, int conn, const char *prefix)
{
    int n = hostile_count(rec, conn, "events"), i;

    for (i = 0; i < n; i++) {
        char *e = hostile_item(rec, conn, "events", i, NULL);
        if (e && strncmp(e, prefix, strlen(prefix)) == 0)
            return ht_keep(e);
        free(e);
    }
    return NULL;
}

/* 1 when the ClientHello of connection conn offered a session to resume
 * (a TLS 1.3 PSK or a TLS 1.2 ticket). */
static int offered(const char *rec, int conn)
{
    char *e = event_text(rec, conn, "offered_session ");
    int yes;

    assert_non_null(e); /* a ClientHello was seen */
    yes = strstr(e, "psk") != NULL || strstr(e, "session_ticket") != NULL;
    free(e);
    return yes;
}

/* tls_resumed is the truth: 1 exactly when the server resumed. */
static void resumed_is_truth(const char *rec, int conn, const tm_delivery_status *st)
{
    assert_int_equal(st->tls_resumed, hostile_has_event(rec, conn, "tls_resumed"));
}

/* The version the server chose is the one reported. */
static void version_is_truth(const char *rec, int conn, const tm_delivery_status *st)
{
    assert_true(strcmp(st->tls_version, "TLSv1.2") == 0 || strcmp(st->tls_version, "TLSv1.3") == 0);
    ht_field_eq(rec, conn, "tls_version", st->tls_version);
}

static void json_has(const tm_delivery_status *st, const char *needle)
{
    char buf[TM_STATUS_JSON_MAX + TM_RCPT_JSON_MAX];
    int n = tm_status_json(st, ht_rcpt, 1, buf, sizeof buf);

    assert_true(n > 0 && (size_t)n < sizeof buf);
    if (!strstr(buf, needle)) {
        print_error("JSON lacks %s: %s\n", needle, buf);
        fail();
    }
}

/*
 * Resumption works: two deliveries with one context to one server (a valid
 * certificate); the second offers the session of the first and the server
 * resumes it.  tls_resumed says so (and only then), certificate-verified
 * stays 1, the version is the one the server chose (TLS 1.2 with mbedTLS
 * 2.28, TLS 1.3 with 3.6).
 * Bug caught: no session cache (or one that is never offered), and
 * tls_resumed or tls-resumed that is not the truth.
 */
static void resume_verified(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [" CONN_TLS ", " CONN_TLS "]}";
    tm_delivery_status st1, st2;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char *rec;
    (void)state;

    start(&h, "127.0.0.1:0", script, "good");
    assert_int_equal(deliver(ctx, h.port, POL_DEFAULT, &st1, "valid, first"), TM_OK);
    deliver(ctx, h.port, POL_DEFAULT, &st2, "valid, second");
    tm_context_free(ctx);
    rec = finish(&h);

    assert_int_equal(hostile_count_connections(rec), 2);
    assert_int_equal(st1.result, TM_RESULT_DELIVERED);
    assert_int_equal(st1.tls, 1);
    assert_int_equal(st1.cert_verified, 1);
    assert_int_equal(st1.tls_resumed, 0);
    json_has(&st1, "\"tls-resumed\": false");
    version_is_truth(rec, 0, &st1);
    resumed_is_truth(rec, 0, &st1);

    HT_EQ(st2.tls_resumed, 1);
    assert_int_equal(st2.error, TM_OK);
    assert_int_equal(st2.result, TM_RESULT_DELIVERED);
    assert_int_equal(st2.tls, 1);
    assert_int_equal(st2.cert_verified, 1);
    assert_int_equal(st2.tls_failure, TM_TLS_FAILURE_NONE);
    assert_string_equal(st2.tls_error, "");
    json_has(&st2, "\"tls-resumed\": true");
    json_has(&st2, "\"certificate-verified\": true");
    version_is_truth(rec, 1, &st2);
    assert_true(offered(rec, 1));
    resumed_is_truth(rec, 1, &st2);
    ht_field_eq(rec, 0, "received_tls", TX_TLS);
    ht_field_eq(rec, 1, "received_tls", TX_TLS);
    free(rec);
}

/*
 * An untrusted (self-signed) certificate under require_tls, three times in
 * a row with one context: each try deferred (TM_ETLSREQUIRED), nothing but
 * EHLO, STARTTLS and QUIT ever sent, certificate-verified 0 every time.
 * Bug caught: a resumed session (TLS 1.3 PSK: no certificate in the
 * handshake) reported cert_verified=1, and the second try delivered.
 */
static void require_untrusted_thrice(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [" CONN_TLS ", " CONN_TLS ", " CONN_TLS
                         "]}";
    tm_delivery_status st[3];
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char *rec;
    int i, rc[3];
    (void)state;

    start(&h, "127.0.0.1:0", script, "selfsigned");
    for (i = 0; i < 3; i++)
        rc[i] = deliver(ctx, h.port, POL_REQ, &st[i], "self-signed, require_tls");
    tm_context_free(ctx);
    rec = finish(&h);

    for (i = 0; i < 3; i++) {
        HT_EQ(rc[i], TM_ETLSREQUIRED);
        assert_int_equal(st[i].result, TM_RESULT_DEFERRED);
        assert_int_equal(st[i].tls, 0);
        assert_int_equal(st[i].cert_verified, 0);
        assert_int_equal(st[i].tls_resumed, 0);
        assert_int_equal(st[i].tls_failure, TM_TLS_FAILURE_CERTIFICATE);
        assert_int_equal(st[i].rcpt_delivered, 0);
        assert_true(st[i].tls_error[0] != '\0');
        print_message("  try %d: server %s\n", i + 1,
                      hostile_has_event(rec, i, "tls_resumed") ? "resumed" : "full handshake");
    }
    assert_int_equal(hostile_count_connections(rec), 3);
    ht_no_envelope(rec);
    for (i = 0; i < 3; i++) {
        assert_int_equal(hostile_count(rec, i, "data"), 0);
        ht_field_eq(rec, i, "received_plain", STARTTLS_L);
        assert_true(hostile_has_event(rec, i, "tls_ok"));
    }
    free(rec);
}

/*
 * keep_unverified_tls, then the default policy, one context, one server
 * with an untrusted certificate.  The first goes over TLS unverified; the
 * second (the default: an invalid certificate means plaintext) must judge a
 * full handshake, not resume the first session, report
 * certificate-verified 0 and deliver over a fresh plaintext connection.
 * Bug caught: a session kept by a looser policy resumed under a stricter
 * one (the cache keyed without the policy), reported verified or delivered
 * over it.
 */
static void keep_then_default(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [" CONN_TLS ", " CONN_TLS ", " CONN_TLS
                         "]}";
    tm_delivery_status st1, st2;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char *rec;
    (void)state;

    start(&h, "127.0.0.1:0", script, "selfsigned");
    deliver(ctx, h.port, POL_KEEP, &st1, "self-signed, first");
    deliver(ctx, h.port, POL_DEFAULT, &st2, "self-signed, second");
    tm_context_free(ctx);
    rec = finish(&h);

    assert_int_equal(st1.error, TM_OK);
    assert_int_equal(st1.result, TM_RESULT_DELIVERED);
    assert_int_equal(st1.tls, 1);
    assert_int_equal(st1.cert_verified, 0);
    assert_int_equal(st1.tls_resumed, 0);

    HT_EQ(st2.error, TM_OK);
    assert_int_equal(st2.result, TM_RESULT_DELIVERED);
    assert_int_equal(st2.tls, 0);
    assert_int_equal(st2.cert_verified, 0);
    assert_int_equal(st2.tls_resumed, 0);
    assert_int_equal(st2.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
    assert_int_equal(st2.attempt_no, 2);

    assert_int_equal(hostile_count_connections(rec), 3);
    ht_field_eq(rec, 0, "received_tls", TX_TLS);
    /* The second delivery: a full handshake, judged, left without a word
     * over it; then plaintext on a new connection. */
    assert_true(hostile_has_event(rec, 1, "tls_ok"));
    assert_false(hostile_has_event(rec, 1, "tls_resumed"));
    ht_field_eq(rec, 1, "received_plain", STARTTLS_L);
    ht_field_eq(rec, 1, "received_tls", "");
    ht_field_eq(rec, 2, "received", EHLO_L TX);
    free(rec);
}

/* Two deliveries under one policy that accepts an unverified certificate:
 * the second may be resumed, but certificate-verified stays 0 and the
 * reason stays said. */
static void unverified_twice(int pol)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [" CONN_TLS ", " CONN_TLS "]}";
    tm_delivery_status st1, st2;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char *rec;
    int i;

    start(&h, "127.0.0.1:0", script, "selfsigned");
    deliver(ctx, h.port, pol, &st1, "self-signed, first");
    deliver(ctx, h.port, pol, &st2, "self-signed, second");
    tm_context_free(ctx);
    rec = finish(&h);

    HT_EQ(st2.cert_verified, 0);
    for (i = 0; i < 2; i++) {
        const tm_delivery_status *st = i ? &st2 : &st1;
        assert_int_equal(st->error, TM_OK);
        assert_int_equal(st->result, TM_RESULT_DELIVERED);
        assert_int_equal(st->tls, 1);
        assert_int_equal(st->cert_verified, 0);
        assert_int_equal(st->tls_failure, TM_TLS_FAILURE_NONE);
        assert_true(st->tls_error[0] != '\0');
        resumed_is_truth(rec, i, st);
        ht_field_eq(rec, i, "received_tls", TX_TLS);
    }
    assert_int_equal(st1.tls_resumed, 0);
    json_has(&st2, "\"certificate-verified\": false");
    print_message("  second delivery %s\n", st2.tls_resumed ? "resumed" : "not resumed");
    free(rec);
}

/* keep_unverified_tls twice to a self-signed certificate.
 * Bug caught: a resumed session reported cert_verified=1. */
static void keep_unverified_twice(void **state)
{
    (void)state;
    unverified_twice(POL_KEEP);
}

/* skip_verify twice to a self-signed certificate.
 * Bug caught: a resumed session reported cert_verified=1. */
static void skip_verify_twice(void **state)
{
    (void)state;
    unverified_twice(POL_SKIP);
}

/* require_tls + skip_verify twice to a self-signed certificate.
 * Bug caught: a resumed session reported cert_verified=1. */
static void require_skip_twice(void **state)
{
    (void)state;
    unverified_twice(POL_REQ_SKIP);
}

/*
 * A server that goes from TLS 1.3 to TLS 1.2 only, on the same address and
 * port: the second delivery, with the same context, must still go over TLS
 * (TLS 1.2, certificate verified), never in plaintext.  The client offers
 * the cached session to the new server on its first connection; a failed
 * handshake there may be followed by one new connection, again with TLS.
 * Bug caught: a cached TLS 1.3 session makes mbedTLS offer TLS 1.3 alone,
 * the handshake failed and the message went in plaintext.  With mbedTLS
 * 2.28 (TLS 1.2 only) both servers speak TLS 1.2 and this passes trivially.
 */
static void tls13_then_tls12_only(void **state)
{
    const char *script13 = "{\"linger\": 0.3, \"connections\": [" CONN(AUTO_TLS_MAX("TLSv1.3")) "]}";
    const char *script12 = "{\"linger\": 0.3, \"connections\": [" CONN(AUTO_TLS_MAX("TLSv1.2"))
                           ", {\"optional\": true, \"accept_timeout\": 2, \"steps\": [" GREET_ONLY
                           AUTO_TLS_MAX("TLSv1.2") "]}]}";
    tm_delivery_status st1, st2;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char listen[64], *rec13, *rec12;
    int port, n, last;
    (void)state;

    start(&h, "127.0.0.1:0", script13, "good");
    port = h.port;
    assert_int_equal(deliver(ctx, port, POL_DEFAULT, &st1, "TLS 1.3 server"), TM_OK);
    rec13 = finish(&h);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    start(&h, listen, script12, "good");
    deliver(ctx, port, POL_DEFAULT, &st2, "the same, now TLS 1.2 only");
    tm_context_free(ctx);
    rec12 = finish(&h);

    assert_int_equal(st1.tls, 1);
    assert_int_equal(st1.cert_verified, 1);
    version_is_truth(rec13, 0, &st1);
    print_message("  first server: %s%s\n", st1.tls_version,
                  strcmp(st1.tls_version, "TLSv1.3") ? " (a TLS 1.2 client: nothing to test)" : "");

    HT_EQ(st2.tls, 1);
    assert_int_equal(st2.error, TM_OK);
    assert_int_equal(st2.result, TM_RESULT_DELIVERED);
    assert_int_equal(st2.cert_verified, 1);
    assert_int_equal(st2.tls_resumed, 0);
    assert_string_equal(st2.tls_version, "TLSv1.2");
    ht_no_envelope_in_plain(rec12);
    n = hostile_count_connections(rec12);
    print_message("  the TLS 1.2 server saw %d connection(s), attempts %u\n", n, st2.attempt_no);
    assert_true(n == 1 || n == 2);
    last = n - 1;
    /* The cached session was offered to the new server (else this tested
     * nothing), and TLS 1.2 carried the message. */
    assert_true(offered(rec12, 0));
    ht_field_eq(rec12, last, "tls_version", "TLSv1.2");
    ht_field_eq(rec12, last, "received_tls", TX_TLS);
    assert_false(hostile_has_event(rec12, last, "tls_resumed"));
    if (n == 2) {
        /* A first handshake failed offering TLS 1.3 alone: nothing else
         * went over that connection. */
        assert_int_equal(hostile_count(rec12, 0, "data"), 0);
        ht_field_eq(rec12, 0, "received", STARTTLS_L);
        assert_true(hostile_has_event(rec12, 0, "tls_failed"));
    }
    free(rec13);
    free(rec12);
}

/*
 * TLS 1.3 NewSessionTicket records arriving in the same TCP write as the
 * reply to EHLO: the server holds the tickets OpenSSL wrote after the
 * handshake and sends them in front of the EHLO reply, in one write, then
 * waits.  The client must read the reply that is already there (the
 * command timeout is 5 s: a client that waits on the socket while the
 * reply sits in a buffer times out) and deliver; the next delivery
 * resumes with the ticket.
 * Bug caught: after a ticket record the client waited for the socket to
 * become readable again while the EHLO reply was already buffered.
 */
static void ticket_with_ehlo_reply(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [" CONN(AUTO_TLS_HOLD) ", " CONN_TLS "]}";
    tm_delivery_status st1, st2;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    hostile h;
    char *rec, *held, *sent;
    int bytes = 0, records = 0;
    (void)state;

    start(&h, "127.0.0.1:0", script, "good");
    deliver(ctx, h.port, POL_DEFAULT, &st1, "tickets with the EHLO reply");
    deliver(ctx, h.port, POL_DEFAULT, &st2, "again");
    tm_context_free(ctx);
    rec = finish(&h);

    HT_EQ(st1.error, TM_OK);
    assert_int_equal(st1.result, TM_RESULT_DELIVERED);
    assert_int_equal(st1.tls, 1);
    assert_int_equal(st1.cert_verified, 1);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    ht_field_eq(rec, 0, "received_tls", TX_TLS);
    version_is_truth(rec, 0, &st1);
    if (strcmp(st1.tls_version, "TLSv1.3") == 0) {
        held = event_text(rec, 0, "held_tickets ");
        assert_non_null(held);
        assert_int_equal(sscanf(held, "held_tickets %d bytes %d records", &bytes, &records), 2);
        assert_true(bytes > 0 && records > 0);
        /* ... and they went out with the reply to EHLO, in one write. */
        sent = event_text(rec, 0, "sent held_tickets ");
        assert_non_null(sent);
        assert_non_null(strstr(sent, "in one write: '250-mx-hostile.tm.test'"));
        print_message("  %s; %s\n", held, sent);
        free(held);
        free(sent);
    } else {
        /* TLS 1.2: the ticket is part of the handshake, nothing to hold. */
        assert_true(hostile_has_event(rec, 0, "hold_tickets ignored: TLSv1.2"));
        print_message("  TLS 1.2: no ticket after the handshake to hold\n");
    }

    assert_int_equal(st2.error, TM_OK);
    assert_int_equal(st2.result, TM_RESULT_DELIVERED);
    assert_int_equal(st2.tls, 1);
    assert_int_equal(st2.cert_verified, 1);
    assert_int_equal(st2.tls_resumed, 1);
    resumed_is_truth(rec, 1, &st2);
    free(rec);
}

/*
 * A changed certificate under a cached name: a delivery to a server with a
 * valid certificate for localhost, then a new server on the same address
 * and port with a self-signed one for the same name.  The client offers
 * the old session; the new server cannot resume it, so a full handshake
 * happens and is judged: certificate-verified 0 under each policy, and the
 * policy's outcome for an invalid certificate.
 * Bug caught: the verification result taken from the cached session rather
 * than from the handshake that happened (a session offered counted as a
 * session resumed).
 */
static void changed_certificate(void **state)
{
    static const int pols[] = { POL_DEFAULT, POL_REQ, POL_SKIP, POL_KEEP };
    const char *script1 = "{\"linger\": 0.3, \"connections\": [" CONN_TLS "]}";
    const char *script2 = "{\"linger\": 0.3, \"connections\": [" CONN_TLS ", " CONN_TLS "]}";
    size_t i;
    (void)state;

    for (i = 0; i < sizeof pols / sizeof pols[0]; i++) {
        int pol = pols[i], port, rc;
        tm_delivery_status st1, st2;
        tm_context *ctx = ht_ctx(5000, 0, 0);
        hostile h;
        char listen[64], *rec1, *rec2;

        start(&h, "127.0.0.1:0", script1, "good");
        port = h.port;
        deliver(ctx, port, pol, &st1, "valid certificate");
        rec1 = finish(&h);
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        start(&h, listen, pol == POL_DEFAULT ? script2 : script1, "selfsigned");
        rc = deliver(ctx, port, pol, &st2, "same name, now self-signed");
        tm_context_free(ctx);
        rec2 = finish(&h);

        assert_int_equal(st1.error, TM_OK);
        assert_int_equal(st1.tls, 1);
        assert_int_equal(st1.cert_verified, 1);

        HT_EQ(st2.cert_verified, 0);
        assert_int_equal(st2.tls_resumed, 0);
        assert_true(offered(rec2, 0)); /* the old session was offered */
        assert_true(hostile_has_event(rec2, 0, "tls_ok"));
        assert_false(hostile_has_event(rec2, 0, "tls_resumed"));
        assert_true(st2.tls_error[0] != '\0');
        if (pol == POL_DEFAULT) {
            assert_int_equal(rc, TM_OK);
            assert_int_equal(st2.result, TM_RESULT_DELIVERED);
            assert_int_equal(st2.tls, 0);
            assert_int_equal(st2.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
            assert_int_equal(hostile_count_connections(rec2), 2);
            ht_field_eq(rec2, 0, "received_tls", "");
            ht_field_eq(rec2, 1, "received", EHLO_L TX);
        } else if (pol == POL_REQ) {
            assert_int_equal(rc, TM_ETLSREQUIRED);
            assert_int_equal(st2.result, TM_RESULT_DEFERRED);
            assert_int_equal(st2.tls, 0);
            assert_int_equal(st2.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
            ht_no_envelope(rec2);
        } else {
            assert_int_equal(rc, TM_OK);
            assert_int_equal(st2.result, TM_RESULT_DELIVERED);
            assert_int_equal(st2.tls, 1);
            assert_int_equal(st2.tls_failure, TM_TLS_FAILURE_NONE);
            ht_field_eq(rec2, 0, "received_tls", TX_TLS);
        }
        free(rec1);
        free(rec2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resume_verified),
        cmocka_unit_test(require_untrusted_thrice),
        cmocka_unit_test(keep_then_default),
        cmocka_unit_test(keep_unverified_twice),
        cmocka_unit_test(skip_verify_twice),
        cmocka_unit_test(require_skip_twice),
        cmocka_unit_test(tls13_then_tls12_only),
        cmocka_unit_test(ticket_with_ehlo_reply),
        cmocka_unit_test(changed_certificate),
    };
    return HT_MAIN("resumption", tests);
}
