/*
 * test_replies.c - what servers answer, against the hostile server:
 * malformed, oversized and endless replies, codes that are not codes, a
 * bare LF, EOF in the middle of a line, DATA not answered 354, and replies
 * that arrive before the command they would answer (a protocol violation:
 * never delivered, never bounced on their word).
 *
 * Plaintext cases connect to "127.0.0.1" (no certificate name needed, and
 * no second address to fall back to whatever "localhost" resolves to).
 * Slow and silent servers are tests/connection.
 */
#include "harness.h"

#define HOST "127.0.0.1"

static char *run_plain(const char *script, unsigned int timeout_ms, int *rc, tm_delivery_status *st,
                       const char *what)
{
    ht_opts o = { 0 };
    char *rec;

    o.host = HOST;
    o.timeout_ms = timeout_ms;
    rec = ht_run(script, &o, rc, st);
    ht_print(what, *rc, st);
    print_message("%s: wall %.3fs\n", what, ht_last_wall);
    return rec;
}

/* Expect a protocol error before any transaction: deferred, nothing but
 * EHLO (or nothing) was sent. */
static void expect_protocol(const char *script, const char *recv0, const char *what)
{
    tm_delivery_status st;
    int rc;
    char *rec = run_plain(script, 3000, &rc, &st, what);

    HT_EQ(rc, TM_EPROTOCOL);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    if (recv0)
        ht_field_eq(rec, 0, "received", recv0);
    /* A protocol error is found at once, not at a deadline (3 s). */
    assert_true(ht_last_wall < 3.0);
    free(rec);
}

/* "250\r\n": a reply with a code and no text at all, at every step. */
static void reply_code_only(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220\\r\\n\"}, "
                    "{\"expect\": \"EHLO\"}, {\"send\": \"250\\r\\n\"}, "
                    "{\"auto\": true, \"caps\": [], \"replies\": {\"MAIL\": \"250\", \"RCPT\": \"250\", "
                    "\"DATA\": \"354\", \"DOT\": \"250\", \"QUIT\": \"221\"}}]]}";
    const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "code only");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(st.code, 250);
    assert_string_equal(st.message, "");
    assert_string_equal(st.enhanced_code, "");
    free(rec);
}

/* 250- then 251 (or 550) on the continuation line of the EHLO reply. */
static void reply_mixed_codes_ehlo(void **state)
{
    (void)state;
    expect_protocol("{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n251 PIPELINING\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}",
                    EHLO_L, "mixed codes at EHLO");
    expect_protocol("{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n550 PIPELINING\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}",
                    EHLO_L, "250 and 550 at EHLO");
}

/* Mixed codes in the reply to the final dot: no complete valid reply came
 * back, so the message is uncertain, never delivered. */
static void reply_mixed_codes_dot(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"auto\": true, \"caps\": [], \"replies\": {\"DOT\": "
                    "\"250-2.0.0 queued\\r\\n550 5.0.0 or not\\r\\n\"}}]]}";
    const ht_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "mixed codes at the dot");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_UNCERTAIN);
    free(rec);
}

/* A 513-byte reply line (one more than RFC 5321's 512): accepted. */
static void reply_513_line(void **state)
{
    char *x = ht_repeat('X', 507); /* "250 " + 507 + CRLF = 513 bytes */
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET
                     "{\"send\": \"250-hostile\\r\\n250 %s\\r\\n\"}, "
                     "{\"auto\": true, \"caps\": [], \"replies\": {\"DOT\": \"250 %s\"}}]]}",
                     x, x);
    const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "513-byte line");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(strlen(st.message), 507);
    assert_string_equal(st.message, x);
    free(rec);
    free(s);
    free(x);
}

/* A 4 KiB+ line: longer than the parser's bound, a protocol error. */
static void reply_4k_line(void **state)
{
    char *x = ht_repeat('X', 4200);
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET
                     "{\"send\": \"250-hostile\\r\\n250 %s\\r\\n\"}, "
                     "{\"read_until_close\": true, \"timeout\": 3}]]}",
                     x);
    (void)state;
    expect_protocol(s, EHLO_L, "4 KiB line");
    free(s);
    free(x);
}

/* A 1 MiB greeting line: a protocol error as soon as the bound is passed,
 * no crash, nothing sent. */
static void reply_1m_line(void **state)
{
    char *x = ht_repeat('X', 1024 * 1024);
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 %s\\r\\n\"}, "
                     "{\"read_until_close\": true, \"timeout\": 3}]]}",
                     x);
    (void)state;
    expect_protocol(s, "", "1 MiB line");
    free(s);
    free(x);
}

/* 20000 continuation lines: the client stops at its line bound. */
static void reply_endless_continuation(void **state)
{
    size_t n = 20000, i;
    char *lines = ht_keep(malloc(n * 9 + 1)), *s;
    (void)state;

    assert_non_null(lines);
    for (i = 0; i < n; i++)
        memcpy(lines + i * 9, "250-x\\r\\n", 9);
    lines[n * 9] = '\0';
    s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"%s\"}, "
               "{\"read_until_close\": true, \"timeout\": 3}]]}",
               lines);
    expect_protocol(s, EHLO_L, "endless continuation");
    free(s);
    free(lines);
}

/* Codes that are not three digits 200-599 followed by SP, '-' or EOL. */
static void reply_non_digit(void **state)
{
    static const char *const bad[] = { "2x0 hostile", "abc hostile", "25", "2", "600 hostile",
                                       "199 hostile", "2500 hostile", "220hostile", " 220 hostile",
                                       "-220 hostile", "\\u00b2\\u00b2\\u00b2 hostile" };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[{\"send\": \"%s\\r\\n\"}, "
                         "{\"read_until_close\": true, \"timeout\": 3}]]}",
                         bad[i]);
        expect_protocol(s, "", bad[i]);
        free(s);
    }
    /* The same in a continuation line of the EHLO reply. */
    expect_protocol("{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n25x PIPELINING\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}",
                    EHLO_L, "non-digit continuation");
}

/* A NUL byte inside a reply line. */
static void reply_nul(void **state)
{
    static const char ehlo[] = "250-hos\0tile\r\n250 PIPELINING\r\n";
    char *b = ht_b64(ehlo, sizeof ehlo - 1);
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send_b64\": \"%s\"}, "
                     "{\"read_until_close\": true, \"timeout\": 3}]]}",
                     b);
    (void)state;
    expect_protocol(s, EHLO_L, "NUL in reply");
    free(s);
    free(b);
}

/* Every reply ends in a bare LF: accepted (the client still sends CRLF). */
static void reply_bare_lf(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 hostile\\n\"}, "
                    "{\"expect\": \"EHLO\"}, {\"send\": \"250-hostile\\n250 PIPELINING\\n\"}, "
                    "{\"auto\": true, \"caps\": [\"PIPELINING\"], \"replies\": {"
                    "\"MAIL\": \"250 ok\\n\", \"RCPT\": \"250 ok\\n\", \"DATA\": \"354 go\\n\", "
                    "\"DOT\": \"250-2.0.0 queued\\n250 as LF\\n\", \"QUIT\": \"221 bye\\n\"}}]]}";
    const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "bare LF");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(st.code, 250);
    assert_false(hostile_has_event(rec, 0, "bare_lf_line"));
    free(rec);
}

/* EOF in the middle of the greeting line. */
static void reply_eof_mid_line(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 hostile ES\"}, "
                    "{\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "EOF mid-line");
    HT_EQ(rc, TM_ECLOSED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    ht_field_eq(rec, 0, "received", "");
    free(rec);
}

/* EOF in the middle of the reply to the final dot: uncertain. */
static void reply_eof_mid_line_dot(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                    "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                    "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, {\"expect_data\": true}, "
                    "{\"send\": \"250 2.0.0 que\"}, {\"close\": true}]]}";
    const ht_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "EOF mid-line after the dot");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_UNCERTAIN);
    free(rec);
}

/* DATA answered 250 instead of 354 (a shifted or lying dialogue): no
 * content was sent, so no recipient may be reported delivered, and the
 * message is not bounced for good either: a protocol error, deferred. */
static void reply_data_not_354(void **state)
{
    static const char *const replies[] = { "250 2.0.0 Ok", "221 2.0.0 Bye", "354-go\\r\\n250 ok" };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof replies / sizeof replies[0]; i++) {
        char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET_ONLY
                         "{\"auto\": true, \"caps\": [\"PIPELINING\"], \"replies\": "
                         "{\"DATA\": \"%s\"}}]]}",
                         replies[i]);
        tm_delivery_status st;
        int rc;
        char *rec = run_plain(s, 3000, &rc, &st, replies[i]);

        assert_false(ht_field_has(rec, 0, "received", BODY));
        assert_int_not_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
        HT_EQ(st.result, TM_RESULT_DEFERRED);
        assert_true(rc == TM_EPROTOCOL || rc == TM_EREJECTED);
        free(rec);
        free(s);
    }
}

/* Extra replies in the same packet as the greeting: a server (or a man in
 * the middle) answering EHLO before it was sent.  Taking "250 injected" as
 * the EHLO reply would hide STARTTLS; the client must notice the bytes
 * (a protocol error: deferred) and never deliver on a shifted dialogue. */
static void early_reply_after_greeting(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [["
                    "{\"send\": \"220 hostile ESMTP\\r\\n250 injected\\r\\n\"}, {\"expect\": \"EHLO\"}, "
                    EHLO_TLS AUTO_TLS "]]}";
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(s, &o, &rc, &st);
        ht_print(ht_policy_name(p), rc, &st);
        /* Never a recipient "delivered" (no content was sent), never a
         * permanent "bounced" for a shifted dialogue. */
        assert_int_not_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
        HT_EQ(rc, TM_EPROTOCOL);
        assert_int_equal(st.result, TM_RESULT_DEFERRED);
        assert_false(ht_field_has(rec, 0, "received", "MAIL"));
        assert_int_equal(hostile_unexpected(rec), 0);
        free(rec);
    }
}

/* DATA answered "354" and, in the same write, "250" - before the client
 * has sent the content, let alone the final dot - then the server closes.
 * That 250 answers nothing: the message is deferred, never delivered (nor
 * uncertain: no reply to a dot was ever awaited on its word).  Without and
 * with PIPELINING. */
static void early_reply_after_354(void **state)
{
    static const char *const scripts[] = {
        "{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
        "{\"expect\": \"MAIL\"}, {\"send\": \"250 2.1.0 ok\\r\\n\"}, "
        "{\"expect\": \"RCPT\"}, {\"send\": \"250 2.1.5 ok\\r\\n\"}, "
        "{\"expect\": \"DATA\"}, {\"send\": \"354 go ahead\\r\\n250 2.0.0 queued as EARLY\\r\\n\"}, "
        "{\"close\": true}]]}",
        "{\"linger\": 0.3, \"connections\": [[" GREET
        "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"}, "
        "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"DATA\"}, "
        "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n354 go ahead\\r\\n"
        "250 2.0.0 queued as EARLY\\r\\n\"}, {\"close\": true}]]}",
    };
    size_t i;
    (void)state;

    for (i = 0; i < 2; i++) {
        tm_delivery_status st;
        int rc;
        char *rec = run_plain(scripts[i], 3000, &rc, &st,
                              i ? "354 and 250 at once, pipelined" : "354 and 250 at once");

        HT_EQ(st.result, TM_RESULT_DEFERRED);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
        assert_int_not_equal(rc, TM_OK);
        assert_int_equal(st.error, rc);
        assert_int_equal(st.rcpt_delivered, 0);
        assert_int_equal(hostile_count_connections(rec), 1);
        assert_int_equal(hostile_unexpected(rec), 0);
        free(rec);
    }
}

/* Without PIPELINING, MAIL answered "250 ok" and, in the same write, a
 * "550" nobody asked for yet.  Taking the 550 as the RCPT reply would bounce
 * the recipient on a reply to no command: a protocol error, deferred. */
static void early_reply_after_mail(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, "
                    "{\"send\": \"250 2.1.0 ok\\r\\n550 5.1.1 no such user\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "extra line after the MAIL reply");
    HT_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_not_equal(ht_rcpt[0].code, 550);
    assert_int_equal(st.rcpt_bounced, 0);
    assert_int_not_equal(rc, TM_OK);
    assert_int_equal(st.error, rc);
    assert_false(ht_field_has(rec, 0, "received", "DATA"));
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    free(rec);
}

/* BDAT with a refused recipient: bounced with the recipient's reply, and
 * nothing delivered. */
static void bdat_recipient_refused(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 CHUNKING\\r\\n\"},"
                    "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"BDAT\"},"
                    "{\"expect\": null}, {\"expect\": null}, {\"expect\": null},"
                    "{\"send\": \"250 2.1.0 ok\\r\\n550 5.1.1 no such user\\r\\n"
                    "554 5.5.1 no valid recipients\\r\\n\"},"
                    "{\"auto\": true, \"caps\": []}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    ht_opts o = { 0 };
    (void)state;

    rec = ht_run(s, &o, &rc, &st);
    ht_print("BDAT, recipient refused", rc, &st);
    HT_EQ(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_BOUNCED);
    assert_int_equal(ht_rcpt[0].code, 550);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reply_code_only),
        cmocka_unit_test(reply_mixed_codes_ehlo),
        cmocka_unit_test(reply_mixed_codes_dot),
        cmocka_unit_test(reply_513_line),
        cmocka_unit_test(reply_4k_line),
        cmocka_unit_test(reply_1m_line),
        cmocka_unit_test(reply_endless_continuation),
        cmocka_unit_test(reply_non_digit),
        cmocka_unit_test(reply_nul),
        cmocka_unit_test(reply_bare_lf),
        cmocka_unit_test(reply_eof_mid_line),
        cmocka_unit_test(reply_eof_mid_line_dot),
        cmocka_unit_test(reply_data_not_354),
        cmocka_unit_test(early_reply_after_greeting),
        cmocka_unit_test(early_reply_after_354),
        cmocka_unit_test(early_reply_after_mail),
        cmocka_unit_test(bdat_recipient_refused),
    };
    return HT_MAIN("replies", tests);
}
