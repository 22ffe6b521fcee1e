/*
 * test_hostile.c - the rows a real Postfix cannot play, against the
 * scriptable server tests/hostile/hostile_smtp.py: STARTTLS refused, bytes
 * injected after the 220, aborted and garbage handshakes, drops after the
 * final dot, dripping servers, capabilities that must not survive TLS, and
 * a fail-the-Nth-allocation loop over a whole TLS delivery.
 *
 * Each case asserts the result, tls, cert_verified and the exact bytes the
 * client sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "hostile.h"
#include "internal.h"
#include "tlsmail.h"

static char certdir[256];
static char cert[300], key[300], ca[300];

#define HELO "client.tm.test"
#define EHLO_LINE "EHLO " HELO "\r\n"
#define GREET "{\"send\": \"220 hostile ESMTP\\r\\n\"}, {\"expect\": \"EHLO\"}, "
/* The default message's envelope, as the client sends it. */
#define ENVELOPE "MAIL FROM:<sender@tm.test>\r\nRCPT TO:<rcpt@example.test>\r\n"
/* PIPELINING and CHUNKING offered; the envelope, "BDAT 27 LAST" and the
 * three lines of content read, no reply yet. */
#define BDAT_READ                                                                 \
    "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 CHUNKING\\r\\n\"},"    \
    "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"BDAT\"},"     \
    "{\"expect\": null}, {\"expect\": null}, {\"expect\": null},"
/* What tm_deliver writes for the default message behind BDAT: one write. */
#define BDAT_SENT EHLO_LINE ENVELOPE "BDAT 27 LAST\r\nSubject: hostile\r\n\r\nhello\r\nQUIT\r\n"

static int group_setup(void **state)
{
    char cmd[700];
    (void)state;
    snprintf(certdir, sizeof certdir, "/tmp/tm-hostile-certs-%ld", (long)getpid());
    snprintf(cmd, sizeof cmd, "sh '%s' '%s' localhost", MAKE_TEST_CERT, certdir);
    if (system(cmd) != 0)
        return -1;
    snprintf(cert, sizeof cert, "%s/leaf.pem", certdir);
    snprintf(key, sizeof key, "%s/leaf.key", certdir);
    snprintf(ca, sizeof ca, "%s/ca.pem", certdir);
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static tm_context *new_ctx(unsigned int timeout_ms)
{
    tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
    tm_context *ctx = NULL;
    o.ca_file = ca;
    o.helo_name = HELO;
    o.command_timeout_ms = timeout_ms;
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    return ctx;
}

static const char msg_body[] = "Subject: hostile\r\n\r\nhello\r\n";

/* Delivers one message to the hostile server h under policy p. */
static int deliver(tm_context *ctx, const hostile *h, const tm_policy *p, tm_delivery_status *st)
{
    const char *to[1] = { "rcpt@example.test" };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;

    so.host = "localhost"; /* the certificate's name; resolves to 127.0.0.1 */
    so.port = (unsigned int)h->port;
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = msg_body;
    m.size = sizeof msg_body - 1;
    return tm_deliver(ctx, &m, p, &so, st);
}

static char *run(const char *script, const tm_policy *p, unsigned int timeout_ms, int *rc,
                 tm_delivery_status *st)
{
    tm_context *ctx = new_ctx(timeout_ms);
    hostile h;
    char *rec;

    assert_int_equal(hostile_start(&h, script, cert, key), 0);
    *rc = deliver(ctx, &h, p, st);
    print_message("rc=%d (%s) result=%s tls=%d verified=%d tls-error=%s desc=%s\n", *rc,
                  tm_strerror(*rc), tm_result_name(st->result), st->tls, st->cert_verified,
                  st->tls_error, st->description);
    tm_context_free(ctx);
    rec = hostile_finish(&h, 10);
    assert_non_null(rec);
    return rec;
}

static void assert_field(const char *rec, int conn, const char *field, const char *want)
{
    size_t len = 0;
    char *got = hostile_field(rec, conn, field, &len);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        print_error("conn %d %s: got [%s] want [%s]\n", conn, field, got, want);
    assert_string_equal(got, want);
    free(got);
}

/* A server answers STARTTLS with 454: plaintext on the same connection. */
static void starttls_refused(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
                         "{\"expect\": \"STARTTLS\"},"
                         "{\"send\": \"454 4.7.0 TLS not available\\r\\n\"},"
                         "{\"auto\": true, \"caps\": []}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.cert_verified, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_REFUSED);
    assert_non_null(strstr(st.tls_error, "454"));
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_field(rec, 0, "received",
                 EHLO_LINE "STARTTLS\r\n" ENVELOPE
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* Under require_tls a refused STARTTLS means QUIT: no envelope is sent. */
static void starttls_refused_required(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
                         "{\"expect\": \"STARTTLS\"},"
                         "{\"send\": \"454 4.7.0 TLS not available\\r\\n\"},"
                         "{\"auto\": true, \"caps\": []}]]}";
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    p.require_tls = TM_ON;
    rec = run(script, &p, 5000, &rc, &st);
    assert_int_equal(rc, TM_ETLSREQUIRED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_REFUSED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    assert_field(rec, 0, "received", EHLO_LINE "STARTTLS\r\nQUIT\r\n");
    free(rec);
}

/* Not offered under require_tls: EHLO, QUIT, nothing else. */
static void not_offered_required(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"},"
                         "{\"auto\": true, \"caps\": [\"PIPELINING\"]}]]}";
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    p.require_tls = TM_ON;
    p.skip_verify = TM_ON;
    rec = run(script, &p, 5000, &rc, &st);
    assert_int_equal(rc, TM_ETLSREQUIRED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_NOT_OFFERED);
    assert_field(rec, 0, "received", EHLO_LINE "QUIT\r\n");
    free(rec);
}

/* Bytes after the 220 to STARTTLS (response injection): the connection is
 * treated as a failed handshake, and a new plaintext connection without
 * STARTTLS carries the message. */
static void injection_after_220(void **state)
{
    const char *script =
        "{\"linger\": 0, \"connections\": [[" GREET
        "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
        "{\"expect\": \"STARTTLS\"},"
        "{\"send\": \"220 go ahead\\r\\n250-injected\\r\\n250 PIPELINING\\r\\n\"},"
        "{\"read_until_close\": true, \"timeout\": 5}],"
        "[{\"send\": \"220 second ESMTP\\r\\n\"}, {\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"]}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
    assert_non_null(strstr(st.tls_error, "after the 220"));
    assert_int_equal(st.attempt_no, 2);
    assert_int_equal(hostile_count_connections(rec), 2);
    /* Not one byte (no ClientHello either) after STARTTLS on the first. */
    assert_field(rec, 0, "received", EHLO_LINE "STARTTLS\r\n");
    /* The fresh connection: no STARTTLS although offered; pipelined. */
    assert_field(rec, 1, "received",
                 EHLO_LINE ENVELOPE
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* The same injection split across two packets still never reaches the
 * SMTP parser as a reply: either it is seen at once, or it breaks TLS. */
static void injection_split(void **state)
{
    const char *script =
        "{\"linger\": 0, \"connections\": [[" GREET
        "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
        "{\"expect\": \"STARTTLS\"},"
        "{\"send_split\": [\"220 go ahead\\r\\n\", \"250 injected\\r\\n\"], \"gap\": 0.05},"
        "{\"read_until_close\": true, \"timeout\": 5}],"
        "[{\"send\": \"220 second ESMTP\\r\\n\"}, {\"auto\": true, \"caps\": [\"STARTTLS\"]}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    size_t len = 0;
    char *c0;
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
    c0 = hostile_field(rec, 0, "received", &len);
    assert_non_null(c0);
    /* Nothing but (at most) a ClientHello followed STARTTLS. */
    assert_true(strncmp(c0, EHLO_LINE "STARTTLS\r\n", strlen(EHLO_LINE "STARTTLS\r\n")) == 0);
    assert_null(strstr(c0, "MAIL"));
    free(c0);
    free(rec);
}

/* A fatal alert instead of a ServerHello: new plaintext connection. */
static void handshake_alert(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
                         "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"},"
                         "{\"tls_alert\": true}],"
                         "[{\"send\": \"220 second ESMTP\\r\\n\"}, {\"auto\": true, \"caps\": [\"STARTTLS\"]}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.cert_verified, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
    assert_non_null(strstr(st.tls_error, "handshake"));
    assert_int_equal(hostile_count_connections(rec), 2);
    assert_field(rec, 1, "received",
                 EHLO_LINE ENVELOPE
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* Garbage instead of a ServerHello, under require_tls: nothing delivered,
 * no second connection (there is no other MX). */
static void handshake_garbage_required(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 STARTTLS\\r\\n\"},"
                         "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"},"
                         "{\"tls_garbage\": \"HTTP/1.0 400 Bad\\r\\n\\r\\n\"}]]}";
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    p.require_tls = TM_ON;
    rec = run(script, &p, 5000, &rc, &st);
    assert_int_equal(rc, TM_ETLSREQUIRED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_HANDSHAKE);
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    free(rec);
}

/* Plaintext capabilities do not survive the upgrade: SIZE 10 and
 * PIPELINING announced in plaintext only must not be used after TLS. */
static void caps_forgotten(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250-SIZE 10\\r\\n250-PIPELINING\\r\\n"
                         "250 STARTTLS\\r\\n\"},"
                         "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"},"
                         "{\"starttls\": true},"
                         "{\"auto\": true, \"caps\": []}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_NONE);
    assert_string_equal(st.tls_error, "");
    /* Nothing was pipelined with STARTTLS. */
    assert_field(rec, 0, "received_plain", EHLO_LINE "STARTTLS\r\n");
    /* EHLO again inside TLS, and no SIZE parameter. */
    assert_field(rec, 0, "received_tls",
                 EHLO_LINE ENVELOPE
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* The connection drops right after the final dot: uncertain, never
 * delivered, and no retry on another connection (it may have arrived). */
static void drop_after_dot(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [[" GREET
                         "{\"send\": \"250 hostile\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"},"
                         "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"},"
                         "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"},"
                         "{\"expect_data\": true}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EUNCERTAIN);
    assert_int_equal(st.result, TM_RESULT_UNCERTAIN);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    free(rec);
}

/* BDAT: envelope and content in one write; the connection drops before
 * any reply.  The whole message went out: uncertain, never deferred (a
 * retry could duplicate it) and never delivered. */
static void bdat_drop_after_content(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 CHUNKING\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"BDAT\"},"
                         "{\"sleep\": 0.2}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EUNCERTAIN);
    assert_int_equal(st.result, TM_RESULT_UNCERTAIN);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    /* One write: envelope, BDAT with its exact length, the raw content and
     * (tm_deliver: the connection's last transaction) QUIT. */
    assert_field(rec, 0, "received", BDAT_SENT);
    free(rec);
}

/* BDAT with a refused recipient: bounced, RSET, and nothing delivered. */
static void bdat_recipient_refused(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"send\": \"250 2.1.0 ok\\r\\n550 5.1.1 no such user\\r\\n"
                         "554 5.5.1 no valid recipients\\r\\n\"},"
                         "{\"auto\": true, \"caps\": []}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_BOUNCED);
    assert_int_equal(st.rcpt[0].code, 550);
    free(rec);
}

/*
 * tm_deliver's one transaction is the connection's last: with PIPELINING the
 * QUIT goes in the same write as the end of the content, so the server sees
 * it before it has answered anything ("expect QUIT" would time out if the
 * client waited for a reply first).  BDAT: the whole delivery is one write.
 */
static void quit_pipelined_bdat(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n250 2.0.0 queued\\r\\n"
                         "221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.code, 250);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    assert_true(hostile_has_event(rec, 0, "client_closed"));
    assert_field(rec, 0, "received", BDAT_SENT);
    free(rec);
}

/* The same without CHUNKING: QUIT follows the final dot in its write. */
static void quit_pipelined_data(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"DATA\"},"
                         "{\"send\": \"250 ok\\r\\n250 ok\\r\\n354 go\\r\\n\"},"
                         "{\"expect_data\": true}, {\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.0.0 queued\\r\\n221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    assert_field(rec, 0, "received",
                 EHLO_LINE ENVELOPE
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* Refused at the end of the content with QUIT already sent: bounced, no
 * RSET after the QUIT, and the 221 is still read before the close. */
static void quit_pipelined_refused(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n"
                         "554 5.7.1 content refused\\r\\n\"}, {\"sleep\": 0.3},"
                         "{\"send\": \"221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.rcpt[0].code, 554);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    /* The client waited for the 221, sent 0.3 s after the 554, before it
     * closed (a lower bound on time: cannot fail on a slow machine). */
    assert_true(st.session_seconds >= 0.29);
    assert_true(hostile_has_event(rec, 0, "client_closed"));
    assert_field(rec, 0, "received", BDAT_SENT);
    free(rec);
}

/* A session the caller keeps open never pipelines QUIT: tm_send waits for
 * the replies (the server's read for more times out), and QUIT comes from
 * tm_session_close. */
static void quit_not_pipelined_in_session(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": null, \"timeout\": 0.5},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n250 2.0.0 queued\\r\\n\"},"
                         "{\"expect\": \"QUIT\"}, {\"send\": \"221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    const char *to[1] = { "rcpt@example.test" };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    tm_session *s = NULL;
    tm_context *ctx = new_ctx(5000);
    tm_policy p = TM_POLICY_INIT;
    hostile h;
    char *rec;
    (void)state;

    assert_int_equal(hostile_start(&h, script, cert, key), 0);
    so.host = "localhost";
    so.port = (unsigned int)h.port;
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = msg_body;
    m.size = sizeof msg_body - 1;
    assert_int_equal(tm_session_open(&s, ctx, "example.test", &so, &st), TM_OK);
    assert_int_equal(tm_starttls(s, &p, &st), TM_OK);
    assert_int_equal(tm_send(s, &m, &st), TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    tm_session_close(s);
    tm_context_free(ctx);
    rec = hostile_finish(&h, 10);
    assert_non_null(rec);
    assert_true(hostile_has_event(rec, 0, "timeout"));
    assert_field(rec, 0, "received", BDAT_SENT);
    free(rec);
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
    char *script = malloc(cap);
    tm_delivery_status st;
    int rc, i;
    char *rec;
    (void)state;

    assert_non_null(script);
    memcpy(script, head, sizeof head - 1);
    len = sizeof head - 1;
    for (i = 0; i < 100; i++)
        len += (size_t)snprintf(script + len, cap - len,
                                "250-X-FILLER-%03d %090d\\r\\n", i, i);
    memcpy(script + len, tail, sizeof tail);
    rec = run(script, NULL, 5000, &rc, &st);
    free(script);

    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    /* The capabilities before the 10 KB of filler were understood (SIZE,
     * PIPELINING: QUIT went with the dot), and the reply was consumed
     * exactly: the next replies matched their commands. */
    assert_field(rec, 0, "received_tls",
                 EHLO_LINE "MAIL FROM:<sender@tm.test> SIZE=27\r\nRCPT TO:<rcpt@example.test>\r\n"
                           "DATA\r\nSubject: hostile\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    free(rec);
}

/* No reply to the final dot within the deadline: uncertain too. */
static void silent_after_dot(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250 hostile\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"},"
                         "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"},"
                         "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"},"
                         "{\"expect_data\": true}, {\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 1000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EUNCERTAIN);
    assert_int_equal(st.result, TM_RESULT_UNCERTAIN);
    free(rec);
}

/* The connection drops after RCPT, before DATA: deferred, nothing sent. */
static void drop_before_data(void **state)
{
    const char *script = "{\"linger\": 0.3, \"connections\": [[" GREET
                         "{\"send\": \"250 hostile\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"},"
                         "{\"expect\": \"RCPT\"}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 5000, &rc, &st);
    (void)state;

    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    free(rec);
}

/* A greeting dripped one byte a second ends at its deadline. */
static void drip_greeting(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[{\"drip\": \"220 "
                         "sloooooooooooooooow\\r\\n\", \"interval\": 1.0}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 1500, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    /* Bounded by the 1.5 s deadline, far below the 20 s of dripping. */
    assert_true(st.session_seconds < 10.0);
    free(rec);
}

/* Multi-line reply with inconsistent codes: a protocol error, deferred. */
static void mixed_codes(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n550 PIPELINING\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 3}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 2000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EPROTOCOL);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    free(rec);
}

/* 421 at MAIL: deferred, the server is going away. */
static void closing_421(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250 hostile\\r\\n\"},"
                         "{\"expect\": \"MAIL\"},"
                         "{\"send\": \"421 4.3.2 shutting down\\r\\n\"}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, NULL, 2000, &rc, &st);
    (void)state;

    assert_int_equal(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.code, 421);
    assert_string_equal(st.enhanced_code, "4.3.2");
    free(rec);
}

/* Every allocation failure in a whole TLS delivery gives an error, never a
 * crash, a leak or a false "delivered". */
static void alloc_failures(void **state)
{
    const char *script = "{\"linger\": 0, \"accept_timeout\": 3, \"connections\": [["
                         "{\"send\": \"220 hostile ESMTP\\r\\n\"}, "
                         "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"], "
                         "\"timeout\": 3}]]}";
    unsigned long n;
    (void)state;

    for (n = 1; n < 64; n++) {
        tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
        tm_context *ctx = NULL;
        tm_delivery_status st;
        unsigned long counted;
        hostile h;
        char *rec;
        int rc;

        assert_int_equal(hostile_start(&h, script, cert, key), 0);
        o.ca_file = ca;
        o.helo_name = HELO;
        o.command_timeout_ms = 3000;
        tm_test_alloc_fail_at(n);
        rc = tm_context_new(&ctx, &o);
        if (rc == TM_OK) {
            rc = deliver(ctx, &h, NULL, &st);
            if (rc != TM_OK && rc != TM_ENOMEM)
                fail_msg("allocation %lu: %s (%s)", n, tm_strerror(rc), st.description);
            if (rc != TM_OK)
                assert_int_not_equal(st.result, TM_RESULT_DELIVERED);
            else
                assert_int_equal(st.tls, 1);
        } else {
            assert_int_equal(rc, TM_ENOMEM);
            assert_null(ctx);
        }
        tm_context_free(ctx);
        counted = tm_test_alloc_fail_at(0);
        rec = hostile_finish(&h, rc == TM_OK ? 5 : 0);
        free(rec);
        if (counted < n) {
            /* This run reached its end without a failure: all covered. */
            assert_int_equal(rc, TM_OK);
            print_message("allocation points covered: %lu\n", n - 1);
            return;
        }
    }
    fail_msg("more allocations than expected");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starttls_refused),
        cmocka_unit_test(starttls_refused_required),
        cmocka_unit_test(not_offered_required),
        cmocka_unit_test(injection_after_220),
        cmocka_unit_test(injection_split),
        cmocka_unit_test(handshake_alert),
        cmocka_unit_test(handshake_garbage_required),
        cmocka_unit_test(caps_forgotten),
        cmocka_unit_test(drop_after_dot),
        cmocka_unit_test(silent_after_dot),
        cmocka_unit_test(bdat_drop_after_content),
        cmocka_unit_test(bdat_recipient_refused),
        cmocka_unit_test(quit_pipelined_bdat),
        cmocka_unit_test(quit_pipelined_data),
        cmocka_unit_test(quit_pipelined_refused),
        cmocka_unit_test(quit_not_pipelined_in_session),
        cmocka_unit_test(tls_large_record),
        cmocka_unit_test(drop_before_data),
        cmocka_unit_test(drip_greeting),
        cmocka_unit_test(mixed_codes),
        cmocka_unit_test(closing_421),
        cmocka_unit_test(alloc_failures),
    };
    return cmocka_run_group_tests_name("hostile", tests, group_setup, group_teardown);
}
