/*
 * atk_replies.c - malformed, oversized and endless replies, and slow
 * servers: every wait ends at its deadline.
 *
 * Plaintext cases connect to "127.0.0.1" (no certificate name needed, and
 * no second address to fall back to whatever "localhost" resolves to).
 */
#include "attacks.h"

#define HOST "127.0.0.1"
#define SLOW_MS 1500
/* A correctness bound on the deadline, not a performance figure. */
#define SLOW_BOUND (3.0 * SLOW_MS / 1000.0 + 2.0)

static char *run_plain(const char *script, unsigned int timeout_ms, int *rc, tm_delivery_status *st,
                       const char *what)
{
    atk_opts o = { 0 };
    char *rec;

    o.host = HOST;
    o.timeout_ms = timeout_ms;
    o.finish_s = timeout_ms == SLOW_MS ? 2 : 10;
    rec = atk_run(script, &o, rc, st);
    atk_print(what, *rc, st);
    print_message("%s: wall %.3fs\n", what, atk_last_wall);
    return rec;
}

/* Expect a protocol error before any transaction: deferred, nothing but
 * EHLO (or nothing) was sent. */
static void expect_protocol(const char *script, const char *recv0, const char *what)
{
    tm_delivery_status st;
    int rc;
    char *rec = run_plain(script, 3000, &rc, &st, what);

    ATK_EQ(rc, TM_EPROTOCOL);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    if (recv0)
        atk_field_eq(rec, 0, "received", recv0);
    assert_true(atk_last_wall < 3.0);
    free(rec);
}

/* "250\r\n": a reply with a code and no text at all, at every step. */
void reply_code_only(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220\\r\\n\"}, "
                    "{\"expect\": \"EHLO\"}, {\"send\": \"250\\r\\n\"}, "
                    "{\"auto\": true, \"caps\": [], \"replies\": {\"MAIL\": \"250\", \"RCPT\": \"250\", "
                    "\"DATA\": \"354\", \"DOT\": \"250\", \"QUIT\": \"221\"}}]]}";
    const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "code only");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.code, 250);
    assert_string_equal(st.message, "");
    assert_string_equal(st.enhanced_code, "");
    free(rec);
}

/* 250- then 251 on the continuation line of the EHLO reply. */
void reply_mixed_codes_ehlo(void **state)
{
    (void)state;
    expect_protocol("{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n251 PIPELINING\\r\\n\"}, "
                    "{\"read_until_close\": true, \"timeout\": 3}]]}",
                    EHLO_L, "mixed codes at EHLO");
}

/* Mixed codes in the reply to the final dot: no complete valid reply came
 * back, so the message is uncertain, never delivered. */
void reply_mixed_codes_dot(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"auto\": true, \"caps\": [], \"replies\": {\"DOT\": "
                    "\"250-2.0.0 queued\\r\\n550 5.0.0 or not\\r\\n\"}}]]}";
    const atk_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "mixed codes at the dot");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    free(rec);
}

/* A 513-byte reply line (one more than RFC 5321's 512): accepted. */
void reply_513_line(void **state)
{
    char *x = atk_repeat('X', 507); /* "250 " + 507 + CRLF = 513 bytes */
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET
                      "{\"send\": \"250-hostile\\r\\n250 %s\\r\\n\"}, "
                      "{\"auto\": true, \"caps\": [], \"replies\": {\"DOT\": \"250 %s\"}}]]}",
                      x, x);
    const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "513-byte line");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(strlen(st.message), 507);
    assert_string_equal(st.message, x);
    free(rec);
    free(s);
    free(x);
}

/* A 4 KiB+ line: longer than the parser's bound, a protocol error. */
void reply_4k_line(void **state)
{
    char *x = atk_repeat('X', 4200);
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET
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
void reply_1m_line(void **state)
{
    char *x = atk_repeat('X', 1024 * 1024);
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 %s\\r\\n\"}, "
                      "{\"read_until_close\": true, \"timeout\": 3}]]}",
                      x);
    (void)state;
    expect_protocol(s, "", "1 MiB line");
    free(s);
    free(x);
}

/* 20000 continuation lines: the client stops at its line bound. */
void reply_endless_continuation(void **state)
{
    size_t n = 20000, i;
    char *lines = atk_keep(malloc(n * 9 + 1)), *s;
    (void)state;

    assert_non_null(lines);
    for (i = 0; i < n; i++)
        memcpy(lines + i * 9, "250-x\\r\\n", 9);
    lines[n * 9] = '\0';
    s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"%s\"}, "
                "{\"read_until_close\": true, \"timeout\": 3}]]}",
                lines);
    expect_protocol(s, EHLO_L, "endless continuation");
    free(s);
    free(lines);
}

/* Codes that are not three digits 200-599 followed by SP, '-' or EOL. */
void reply_non_digit(void **state)
{
    static const char *const bad[] = { "2x0 hostile", "abc hostile", "25", "2", "600 hostile",
                                       "199 hostile", "2500 hostile", "220hostile", " 220 hostile",
                                       "-220 hostile", "\\u00b2\\u00b2\\u00b2 hostile" };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[{\"send\": \"%s\\r\\n\"}, "
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
void reply_nul(void **state)
{
    static const char ehlo[] = "250-hos\0tile\r\n250 PIPELINING\r\n";
    char *b = atk_b64(ehlo, sizeof ehlo - 1);
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send_b64\": \"%s\"}, "
                      "{\"read_until_close\": true, \"timeout\": 3}]]}",
                      b);
    (void)state;
    expect_protocol(s, EHLO_L, "NUL in reply");
    free(s);
    free(b);
}

/* Every reply ends in a bare LF: accepted (the client still sends CRLF). */
void reply_bare_lf(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 hostile\\n\"}, "
                    "{\"expect\": \"EHLO\"}, {\"send\": \"250-hostile\\n250 PIPELINING\\n\"}, "
                    "{\"auto\": true, \"caps\": [\"PIPELINING\"], \"replies\": {"
                    "\"MAIL\": \"250 ok\\n\", \"RCPT\": \"250 ok\\n\", \"DATA\": \"354 go\\n\", "
                    "\"DOT\": \"250-2.0.0 queued\\n250 as LF\\n\", \"QUIT\": \"221 bye\\n\"}}]]}";
    const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "bare LF");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.code, 250);
    assert_false(hostile_has_event(rec, 0, "bare_lf_line"));
    free(rec);
}

/* EOF in the middle of the greeting line. */
void reply_eof_mid_line(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[{\"send\": \"220 hostile ES\"}, "
                    "{\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "EOF mid-line");
    ATK_EQ(rc, TM_ECLOSED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    atk_field_eq(rec, 0, "received", "");
    free(rec);
}

/* EOF in the middle of the reply to the final dot: uncertain. */
void reply_eof_mid_line_dot(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                    "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                    "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, {\"expect_data\": true}, "
                    "{\"send\": \"250 2.0.0 que\"}, {\"close\": true}]]}";
    const atk_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, 3000, &rc, &st, "EOF mid-line after the dot");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    free(rec);
}

static void assert_bounded(const tm_delivery_status *st)
{
    assert_true(st->session_seconds < SLOW_BOUND);
    assert_true(atk_last_wall < SLOW_BOUND);
    /* And not given up early either: the deadline was waited for. */
    assert_true(atk_last_wall >= SLOW_MS / 1000.0 - 0.05);
}

/* An EHLO reply dripped one byte a second: the deadline covers the whole
 * reply, not each byte. */
void slow_drip_ehlo(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[" GREET
                    "{\"drip\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\", \"interval\": 1.0}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, SLOW_MS, &rc, &st, "drip EHLO");
    ATK_EQ(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_bounded(&st);
    free(rec);
}

/* A greeting that never comes. */
void slow_no_greeting(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[{\"read_until_close\": true, \"timeout\": 10}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_plain(s, SLOW_MS, &rc, &st, "no greeting");
    ATK_EQ(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_bounded(&st);
    atk_field_eq(rec, 0, "received", "");
    free(rec);
}

static const char dot_prefix[] = "{\"linger\": 0, \"connections\": [[" GREET
                                 "{\"send\": \"250 hostile\\r\\n\"}, "
                                 "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                 "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                 "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, "
                                 "{\"expect_data\": true}, ";

static void slow_after_dot(const char *tail, const char *what)
{
    char *s = atk_fmt("%s%s]]}", dot_prefix, tail);
    const atk_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec = run_plain(s, SLOW_MS, &rc, &st, what);

    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_bounded(&st);
    free(rec);
    free(s);
}

/* No reply to the final dot: uncertain at the deadline. */
void slow_no_dot_reply(void **state)
{
    (void)state;
    slow_after_dot("{\"read_until_close\": true, \"timeout\": 10}", "no reply to the dot");
}

/* The reply to the final dot dripped: uncertain at the deadline. */
void slow_drip_dot_reply(void **state)
{
    (void)state;
    slow_after_dot("{\"drip\": \"250 2.0.0 queued as SLOW\\r\\n\", \"interval\": 1.0}",
                   "drip reply to the dot");
}

/* 220 to STARTTLS, then no ServerHello: the handshake deadline ends it;
 * a fresh plaintext connection, or under require_tls nothing. */
void slow_tls_stall(void **state)
{
    const char *c0 = "[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, "
                     "{\"read_until_close\": true, \"timeout\": 10}]";
    char *two = atk_fmt("{\"linger\": 0, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                        AUTO_TLS "]]}", c0);
    char *one = atk_fmt("{\"linger\": 0, \"connections\": [%s]}", c0);
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = atk_policy(p);
        o.timeout_ms = SLOW_MS;
        o.finish_s = 3;
        rec = atk_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        atk_print(atk_policy_name(p), rc, &st);
        if (POL_REQUIRES(p)) {
            const atk_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                 TM_TLS_FAILURE_HANDSHAKE, 1, NULL, NULL, NULL, NULL };
            atk_check(rec, rc, &st, &w);
        } else {
            const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                                 NULL, EHLO_L TX, NULL, NULL };
            atk_check(rec, rc, &st, &w);
        }
        assert_false(atk_field_has(rec, 0, "received", "QUIT"));
        assert_bounded(&st);
        free(rec);
    }
    free(two);
    free(one);
}

/* DATA answered 250 instead of 354 (a shifted or lying dialogue): no
 * content was sent, so no recipient may be reported delivered, and the
 * message is not bounced for good either: a protocol error, deferred. */
void reply_data_not_354(void **state)
{
    static const char *const replies[] = { "250 2.0.0 Ok", "221 2.0.0 Bye", "354-go\\r\\n250 ok" };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof replies / sizeof replies[0]; i++) {
        char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[" GREET_ONLY
                          "{\"auto\": true, \"caps\": [\"PIPELINING\"], \"replies\": "
                          "{\"DATA\": \"%s\"}}]]}",
                          replies[i]);
        tm_delivery_status st;
        int rc;
        char *rec = run_plain(s, 3000, &rc, &st, replies[i]);

        assert_false(atk_field_has(rec, 0, "received", BODY));
        assert_int_not_equal(st.rcpt[0].result, TM_RESULT_DELIVERED);
        assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
        ATK_EQ(st.result, TM_RESULT_DEFERRED);
        assert_true(rc == TM_EPROTOCOL || rc == TM_EREJECTED);
        free(rec);
        free(s);
    }
}
