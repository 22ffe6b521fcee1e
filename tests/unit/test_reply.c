/*
 * test_reply.c - the SMTP reply parser and the EHLO capability table on
 * server transcripts, whole and cut at every byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* Parses one reply from the whole buffer at once. */
static int parse_all(tm_reply *r, const char *buf, size_t len, size_t *used)
{
    tm__reply_reset(r);
    return tm__reply_parse(r, buf, len, used);
}

static int parse_str(tm_reply *r, const char *s, size_t *used)
{
    return parse_all(r, s, strlen(s), used);
}

/* A tiny deterministic generator (xorshift), so failures reproduce. */
static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/*
 * Feeds buf to the parser the way a session does: a window of the bytes
 * received so far, from which the consumed complete lines are dropped.
 * chunk(k) gives the size of the k-th read (>= 1).  Returns the parser's
 * final answer and the total consumed in *used.
 */
static int parse_chunked(tm_reply *r, const char *buf, size_t len, size_t (*chunk)(size_t),
                         size_t *used)
{
    size_t start = 0, end = 0, k = 0;
    int rc = 0;

    tm__reply_reset(r);
    while (end < len) {
        size_t n = chunk(k++), u = 0;
        if (n > len - end)
            n = len - end;
        end += n;
        rc = tm__reply_parse(r, buf + start, end - start, &u);
        assert_true(u <= end - start);
        if (rc != 0) {
            *used = start + u;
            return rc;
        }
        start += u;
    }
    *used = start;
    return rc;
}

static size_t chunk_one(size_t k)
{
    (void)k;
    return 1;
}

static size_t chunk_random(size_t k)
{
    (void)k;
    return 1 + rnd() % 23;
}

static size_t split_at;
static size_t chunk_split(size_t k)
{
    return k == 0 ? split_at : (size_t)-1 / 2;
}

static void assert_same_reply(const tm_reply *a, const tm_reply *b)
{
    assert_int_equal(a->code, b->code);
    assert_string_equal(a->enhanced, b->enhanced);
    assert_int_equal(a->text_len, b->text_len);
    assert_memory_equal(a->text, b->text, a->text_len + 1);
    assert_int_equal(a->lines, b->lines);
}

/* The result of a one-shot parse equals that of any chunking. */
static void check_chunkings(const char *buf, size_t len)
{
    tm_reply whole, part;
    size_t used_whole, used_part;
    int rc_whole = parse_all(&whole, buf, len, &used_whole);
    int rc;
    unsigned int t;

    rc = parse_chunked(&part, buf, len, chunk_one, &used_part);
    assert_int_equal(rc, rc_whole);
    if (rc == 1) {
        assert_int_equal(used_part, used_whole);
        assert_same_reply(&whole, &part);
    }
    for (split_at = 1; split_at < len; split_at++) {
        rc = parse_chunked(&part, buf, len, chunk_split, &used_part);
        assert_int_equal(rc, rc_whole);
        if (rc == 1) {
            assert_int_equal(used_part, used_whole);
            assert_same_reply(&whole, &part);
        }
    }
    for (t = 0; t < 50; t++) {
        rc = parse_chunked(&part, buf, len, chunk_random, &used_part);
        assert_int_equal(rc, rc_whole);
        if (rc == 1) {
            assert_int_equal(used_part, used_whole);
            assert_same_reply(&whole, &part);
        }
    }
}

static const char ehlo_postfix[] = "250-mx1.example.com\r\n"
                                   "250-PIPELINING\r\n"
                                   "250-SIZE 10240000\r\n"
                                   "250-VRFY\r\n"
                                   "250-ETRN\r\n"
                                   "250-STARTTLS\r\n"
                                   "250-ENHANCEDSTATUSCODES\r\n"
                                   "250-8BITMIME\r\n"
                                   "250-DSN\r\n"
                                   "250-SMTPUTF8\r\n"
                                   "250 CHUNKING\r\n";

static void test_single_line(void **state)
{
    tm_reply r;
    size_t used;
    (void)state;

    assert_int_equal(parse_str(&r, "220 mx.example.com ESMTP Postfix\r\n", &used), 1);
    assert_int_equal(r.code, 220);
    assert_string_equal(r.text, "mx.example.com ESMTP Postfix");
    assert_int_equal(r.text_len, strlen(r.text));
    assert_int_equal(r.lines, 1);
    assert_string_equal(r.enhanced, "");
    assert_int_equal(used, 34);
}

static void test_multi_line(void **state)
{
    tm_reply r;
    size_t used;
    (void)state;

    assert_int_equal(parse_str(&r, ehlo_postfix, &used), 1);
    assert_int_equal(used, strlen(ehlo_postfix));
    assert_int_equal(r.code, 250);
    assert_int_equal(r.lines, 11);
    assert_string_equal(r.text, "mx1.example.com\nPIPELINING\nSIZE 10240000\nVRFY\nETRN\n"
                                "STARTTLS\nENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING");
    check_chunkings(ehlo_postfix, strlen(ehlo_postfix));
}

static void test_code_only(void **state)
{
    tm_reply r;
    size_t used;
    (void)state;

    assert_int_equal(parse_str(&r, "250\r\n", &used), 1);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.text, "");
    assert_int_equal(used, 5);
    assert_int_equal(parse_str(&r, "250 \r\n", &used), 1);
    assert_int_equal(r.code, 250);
    assert_string_equal(r.text, "");
    assert_int_equal(parse_str(&r, "354\n", &used), 1);
    assert_int_equal(r.code, 354);
    /* A code-only line ends the reply, also after continuation lines. */
    assert_int_equal(parse_str(&r, "250-a\r\n250\r\n", &used), 1);
    assert_int_equal(r.lines, 2);
    assert_string_equal(r.text, "a\n");
    assert_int_equal(parse_str(&r, "250-\r\n250 x\r\n", &used), 1);
    assert_string_equal(r.text, "\nx");
}

static void test_bare_lf(void **state)
{
    tm_reply r;
    size_t used;
    const char *s = "250-mx.example.com\n250-STARTTLS\r\n250 SIZE\n";
    (void)state;

    assert_int_equal(parse_str(&r, s, &used), 1);
    assert_int_equal(used, strlen(s));
    assert_string_equal(r.text, "mx.example.com\nSTARTTLS\nSIZE");
    check_chunkings(s, strlen(s));
    /* A CR inside a line is text, only the one before LF ends it. */
    assert_int_equal(parse_str(&r, "250 a\rb\r\r\n", &used), 1);
    assert_string_equal(r.text, "a\rb\r");
}

static void test_split_everywhere(void **state)
{
    static const char *const transcripts[] = {
        "220 mx.example.com ESMTP\r\n",
        "250-mx.example.com\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
        "550-5.1.1 Please try double-checking the recipient's email\r\n"
        "550 5.1.1 address for typos.\r\n",
        "250 2.0.0 Ok: queued as 4Q1Xyz\r\n",
        "250-a\r\n251 b\r\n", /* error on the second line */
        "25x ok\r\n",
        "250-x\n250-y\r\n250 z\n",
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(transcripts) / sizeof(transcripts[0]); i++)
        check_chunkings(transcripts[i], strlen(transcripts[i]));
    check_chunkings(ehlo_postfix, strlen(ehlo_postfix));
}

static void test_enhanced(void **state)
{
    static const struct {
        const char *in;
        const char *enhanced;
    } cases[] = {
        {"250 2.0.0 Ok\r\n", "2.0.0"},
        {"250 2.1.5\r\n", "2.1.5"},
        {"550 5.7.1 Relaying denied\r\n", "5.7.1"},
        {"451 4.3.0 Try again\r\n", "4.3.0"},
        {"550 5.999.999 x\r\n", "5.999.999"},
        {"250-2.0.0 first\r\n250 2.1.0 second\r\n", "2.0.0"},
        {"250-first\r\n250 2.1.0 second\r\n", ""}, /* first line only */
        {"550 2.0.0 mismatched class\r\n", ""},
        {"250 5.0.0 mismatched class\r\n", ""},
        {"354 3.0.0 class 3 does not exist\r\n", ""},
        {"250 2.0.0.0 too many parts\r\n", ""},
        {"250 2.0000.0 subject too long\r\n", ""},
        {"250 2.0.0000 detail too long\r\n", ""},
        {"250 2..0 empty subject\r\n", ""},
        {"250 2.0. empty detail\r\n", ""},
        {"250 2.0.0Ok glued\r\n", ""},
        {"250 x2.0.0 leading junk\r\n", ""},
        {"250  2.0.0 two spaces\r\n", ""},
        {"250 2.0\r\n", ""},
        {"250 2.a.0 letter\r\n", ""},
        {"250 2.0.0\tTab\r\n", ""},
    };
    size_t i, used;
    tm_reply r;
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(parse_str(&r, cases[i].in, &used), 1);
        assert_string_equal(r.enhanced, cases[i].enhanced);
    }
    /* The text keeps the code as sent. */
    assert_int_equal(parse_str(&r, "250 2.0.0 Ok: queued\r\n", &used), 1);
    assert_string_equal(r.text, "2.0.0 Ok: queued");
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "2x0 bad\r\n",
        "25\r\n",
        "2\r\n",
        "\r\n",
        "\n",
        "600 no\r\n",
        "100 no\r\n",
        "199 no\r\n",
        "099 no\r\n",
        "260 no\r\n",
        "290 no\r\n",
        "250?what\r\n",
        "250_x\r\n",
        "250\tx\r\n",
        "250-a\r\n251 b\r\n",
        "250-a\r\n550 b\r\n",
        "250-a\r\n25\r\n",
        " 250 leading space\r\n",
        "abc\r\n",
    };
    size_t i, used;
    tm_reply r;
    (void)state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse_str(&r, bad[i], &used);
        if (rc != TM_EPROTOCOL)
            fail_msg("case %zu \"%s\": %d", i, bad[i], rc);
    }
    /* Edges of the accepted range. */
    assert_int_equal(parse_str(&r, "200 x\r\n", &used), 1);
    assert_int_equal(parse_str(&r, "559 x\r\n", &used), 1);
    assert_int_equal(parse_str(&r, "599 x\r\n", &used), TM_EPROTOCOL);
}

static void test_nul(void **state)
{
    tm_reply r;
    size_t used;
    static const char a[] = "250 a\0b\r\n";
    static const char b[] = "250-ok\r\n250 \0\r\n";
    static const char c[] = "\0";
    (void)state;

    assert_int_equal(parse_all(&r, a, sizeof(a) - 1, &used), TM_EPROTOCOL);
    assert_int_equal(parse_all(&r, b, sizeof(b) - 1, &used), TM_EPROTOCOL);
    assert_int_equal(parse_all(&r, c, 1, &used), 0); /* not a line yet */
    check_chunkings(a, sizeof(a) - 1);
}

/* A line of `total` bytes including its CRLF (or LF). */
static char *make_line(size_t total, int crlf, int last)
{
    char *s = malloc(total + 1);
    assert_non_null(s);
    memset(s, 'x', total);
    memcpy(s, last ? "250 " : "250-", 4);
    if (crlf)
        s[total - 2] = '\r';
    s[total - 1] = '\n';
    s[total] = '\0';
    return s;
}

static void test_line_length(void **state)
{
    tm_reply r;
    size_t used;
    char *s;
    (void)state;

    /* TM_REPLY_LINE_MAX bytes with the CRLF: accepted, text cut to fit. */
    s = make_line(TM_REPLY_LINE_MAX, 1, 1);
    assert_int_equal(parse_str(&r, s, &used), 1);
    assert_int_equal(used, TM_REPLY_LINE_MAX);
    assert_int_equal(r.text_len, TM_REPLY_LINE_MAX - 6);
    free(s);
    s = make_line(TM_REPLY_LINE_MAX, 0, 1);
    assert_int_equal(parse_str(&r, s, &used), 1);
    free(s);
    s = make_line(TM_REPLY_LINE_MAX - 1, 1, 1);
    assert_int_equal(parse_str(&r, s, &used), 1);
    free(s);
    /* One more byte: refused, with or without the LF in the buffer. */
    s = make_line(TM_REPLY_LINE_MAX + 1, 1, 1);
    assert_int_equal(parse_str(&r, s, &used), TM_EPROTOCOL);
    assert_int_equal(parse_all(&r, s, TM_REPLY_LINE_MAX, &used), TM_EPROTOCOL);
    assert_int_equal(parse_all(&r, s, TM_REPLY_LINE_MAX - 1, &used), 0);
    assert_int_equal(used, 0);
    free(s);
    s = make_line(TM_REPLY_LINE_MAX + 1, 0, 1);
    assert_int_equal(parse_str(&r, s, &used), TM_EPROTOCOL);
    free(s);
    /* Endless garbage without LF is refused as soon as it is too long. */
    s = malloc(3 * TM_REPLY_LINE_MAX);
    assert_non_null(s);
    memset(s, 'A', 3 * TM_REPLY_LINE_MAX);
    assert_int_equal(parse_all(&r, s, 3 * TM_REPLY_LINE_MAX, &used), TM_EPROTOCOL);
    free(s);
}

static void test_text_truncation(void **state)
{
    tm_reply r;
    size_t used, i, len = 0;
    /* 40 lines of 200 bytes: more text than TM_REPLY_TEXT_MAX. */
    char *s = malloc(40 * 210);
    (void)state;

    assert_non_null(s);
    for (i = 0; i < 40; i++) {
        memcpy(s + len, i == 39 ? "250 " : "250-", 4);
        memset(s + len + 4, 'a' + (int)(i % 26), 200);
        memcpy(s + len + 204, "\r\n", 2);
        len += 206;
    }
    assert_int_equal(parse_all(&r, s, len, &used), 1);
    assert_int_equal(used, len);
    assert_int_equal(r.lines, 40);
    assert_int_equal(r.text_len, TM_REPLY_TEXT_MAX - 1);
    assert_int_equal(strlen(r.text), TM_REPLY_TEXT_MAX - 1);
    assert_int_equal(r.text[200], '\n');
    free(s);
}

static void test_line_count(void **state)
{
    tm_reply r;
    size_t used, i, len;
    char *s = malloc(200 * 8);
    (void)state;

    assert_non_null(s);
    for (len = 0, i = 0; i < TM_REPLY_LINES_MAX; i++) {
        memcpy(s + len, i == TM_REPLY_LINES_MAX - 1 ? "250 x\r\n" : "250-x\r\n", 7);
        len += 7;
    }
    assert_int_equal(parse_all(&r, s, len, &used), 1);
    assert_int_equal(r.lines, TM_REPLY_LINES_MAX);
    /* 129 lines */
    for (len = 0, i = 0; i <= TM_REPLY_LINES_MAX; i++) {
        memcpy(s + len, i == TM_REPLY_LINES_MAX ? "250 x\r\n" : "250-x\r\n", 7);
        len += 7;
    }
    assert_int_equal(parse_all(&r, s, len, &used), TM_EPROTOCOL);
    /* Also when fed line by line. */
    split_at = 7;
    assert_int_equal(parse_chunked(&r, s, len, chunk_split, &used), TM_EPROTOCOL);
    assert_int_equal(parse_chunked(&r, s, len, chunk_one, &used), TM_EPROTOCOL);
    free(s);
}

static void test_incomplete(void **state)
{
    tm_reply r;
    size_t used = 99;
    const char *s = "250-mx.example.com\r\n250-STARTTLS\r\n250 SIZE 100";
    (void)state;

    /* Complete lines are consumed, the partial one is left. */
    assert_int_equal(parse_str(&r, s, &used), 0);
    assert_int_equal(used, 34);
    assert_int_equal(r.lines, 2);
    /* The caller drops the consumed bytes and brings more. */
    assert_int_equal(tm__reply_parse(&r, "250 SIZE 100\r", 13, &used), 0);
    assert_int_equal(used, 0);
    assert_int_equal(tm__reply_parse(&r, "250 SIZE 100\r\n", 14, &used), 1);
    assert_int_equal(used, 14);
    assert_string_equal(r.text, "mx.example.com\nSTARTTLS\nSIZE 100");
    /* Nothing at all. */
    tm__reply_reset(&r);
    assert_int_equal(tm__reply_parse(&r, "", 0, &used), 0);
    assert_int_equal(used, 0);
    assert_int_equal(r.code, 0);
    assert_int_equal(parse_str(&r, "250", &used), 0);
    assert_int_equal(parse_str(&r, "250 ok\r", &used), 0);
    assert_int_equal(r.code, 0);
}

static void test_two_replies(void **state)
{
    tm_reply r;
    size_t used;
    const char *s = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n";
    (void)state;

    assert_int_equal(parse_str(&r, s, &used), 1);
    assert_int_equal(used, 14);
    assert_string_equal(r.enhanced, "2.1.0");
    assert_int_equal(parse_str(&r, s + used, &used), 1);
    assert_int_equal(used, 14);
    assert_string_equal(r.enhanced, "2.1.5");
    /* Garbage after a complete reply is not looked at. */
    assert_int_equal(parse_str(&r, "220 Go ahead\r\n\x16\x03\x01garbage\0", &used), 1);
    assert_int_equal(used, 14);
}

static void test_invalid_args(void **state)
{
    tm_reply r;
    size_t used;
    (void)state;

    tm__reply_reset(&r);
    assert_int_equal(tm__reply_parse(NULL, "250\r\n", 5, &used), TM_EINVAL);
    assert_int_equal(tm__reply_parse(&r, NULL, 5, &used), TM_EINVAL);
    assert_int_equal(tm__reply_parse(&r, "250\r\n", 5, NULL), TM_EINVAL);
    tm__reply_reset(NULL);
}

/* ---- capabilities ---- */

static tm_caps caps_of(const char *transcript)
{
    tm_reply r;
    tm_caps c;
    size_t used;

    assert_int_equal(parse_str(&r, transcript, &used), 1);
    tm__caps_parse(&c, &r);
    return c;
}

static void test_caps_postfix(void **state)
{
    tm_caps c = caps_of(ehlo_postfix);
    (void)state;

    assert_int_equal(c.flags, TM_CAP_STARTTLS | TM_CAP_PIPELINING | TM_CAP_SIZE |
                                  TM_CAP_8BITMIME | TM_CAP_SMTPUTF8 | TM_CAP_CHUNKING |
                                  TM_CAP_ENHANCEDSTATUSCODES);
    assert_int_equal(c.size_limit, 10240000);
}

static void test_caps_each(void **state)
{
    static const struct {
        const char *line;
        unsigned int flag;
    } cases[] = {
        {"STARTTLS", TM_CAP_STARTTLS},
        {"starttls", TM_CAP_STARTTLS},
        {"StartTls", TM_CAP_STARTTLS},
        {"STARTTLS ", TM_CAP_STARTTLS},
        {"PIPELINING", TM_CAP_PIPELINING},
        {"SIZE", TM_CAP_SIZE},
        {"8BITMIME", TM_CAP_8BITMIME},
        {"SMTPUTF8", TM_CAP_SMTPUTF8},
        {"smtputf8", TM_CAP_SMTPUTF8},
        {"CHUNKING", TM_CAP_CHUNKING},
        {"ENHANCEDSTATUSCODES", TM_CAP_ENHANCEDSTATUSCODES},
        {"STARTTLSX", 0},
        {"X-STARTTLS", 0},
        {"XSTARTTLS", 0},
        {"STARTTL", 0},
        {" STARTTLS", 0},
        {"STARTTLS\tX", 0},
        {"PIPELINING2", 0},
        {"SIZEX 100", 0},
        {"8BITMIMEX", 0},
        {"AUTH STARTTLS PIPELINING", 0},
        {"", 0},
    };
    size_t i;
    char buf[128];
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tm_caps c;
        snprintf(buf, sizeof(buf), "250-mx.example.com\r\n250 %s\r\n", cases[i].line);
        c = caps_of(buf);
        if (c.flags != cases[i].flag)
            fail_msg("\"%s\": flags %#x, expected %#x", cases[i].line, c.flags, cases[i].flag);
    }
}

static void test_caps_greeting_skipped(void **state)
{
    tm_caps c;
    tm_reply r;
    size_t used;
    (void)state;

    /* The first line is the server's name, even when it looks like one. */
    c = caps_of("250 STARTTLS\r\n");
    assert_int_equal(c.flags, 0);
    c = caps_of("250-STARTTLS\r\n250 SIZE\r\n");
    assert_int_equal(c.flags, TM_CAP_SIZE);
    /* Only a 250 reply has capabilities. */
    c = caps_of("550-no\r\n550 STARTTLS\r\n");
    assert_int_equal(c.flags, 0);
    tm__caps_parse(&c, NULL);
    assert_int_equal(c.flags, 0);
    tm__reply_reset(&r);
    assert_int_equal(tm__reply_parse(&r, "250-x\r\n", 7, &used), 0);
    tm__caps_parse(&c, &r); /* not yet complete: nothing but the name */
    assert_int_equal(c.flags, 0);
    tm__caps_parse(NULL, &r);
}

static void test_caps_size(void **state)
{
    static const struct {
        const char *line;
        unsigned long limit;
    } cases[] = {
        {"SIZE", 0},
        {"SIZE ", 0},
        {"SIZE 0", 0},
        {"SIZE 52428800", 52428800},
        {"size 1000", 1000},
        {"SIZE  1000", 1000},
        {"SIZE 1000 ", 1000},
        {"SIZE 10k", 0},
        {"SIZE -5", 0},
        {"SIZE 0x100", 0},
        {"SIZE 99999999999999999999999999", 0},
        {"SIZE abc", 0},
    };
    size_t i;
    char buf[128];
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tm_caps c;
        snprintf(buf, sizeof(buf), "250-mx\r\n250-%s\r\n250 PIPELINING\r\n", cases[i].line);
        c = caps_of(buf);
        assert_int_equal(c.flags, TM_CAP_SIZE | TM_CAP_PIPELINING);
        if (c.size_limit != cases[i].limit)
            fail_msg("\"%s\": %lu, expected %lu", cases[i].line, c.size_limit, cases[i].limit);
    }
}

static void test_caps_truncated(void **state)
{
    tm_reply r;
    tm_caps c;
    size_t used, len;
    static char s[2 * TM_REPLY_TEXT_MAX];
    static const char head[] = "250-mx\r\n250-STARTTLS\r\n250-";
    static const char tail[] = "\r\n250 PIPELININGX\r\n";
    (void)state;

    /* Fill the text so that it is cut inside "PIPELININGX". */
    memcpy(s, head, sizeof(head) - 1);
    len = sizeof(head) - 1;
    /* text: "mx\nSTARTTLS\n" (12) + A... + "\n" + the cut keyword (10) */
    memset(s + len, 'A', TM_REPLY_TEXT_MAX - 1 - 13 - 10);
    len += TM_REPLY_TEXT_MAX - 1 - 13 - 10;
    memcpy(s + len, tail, sizeof(tail) - 1);
    len += sizeof(tail) - 1;
    assert_int_equal(parse_all(&r, s, len, &used), 1);
    assert_int_equal(r.text_len, TM_REPLY_TEXT_MAX - 1);
    assert_string_equal(r.text + r.text_len - 10, "PIPELINING");
    tm__caps_parse(&c, &r);
    assert_int_equal(c.flags, TM_CAP_STARTTLS);
}

/* ---- addresses and names ---- */

static void test_addresses(void **state)
{
    static const struct {
        const char *addr;
        int sender_ok, rcpt_ok, non_ascii;
    } cases[] = {
        {"user@example.com", 1, 1, 0},
        {"first.last+tag@sub.example.co.uk", 1, 1, 0},
        {"a@b", 1, 1, 0},
        {"x@[192.0.2.1]", 1, 1, 0},
        {"x@[IPv6:2001:db8::1]", 1, 1, 0},
        {"\"a b\"@example.com", 1, 1, 0},
        {"\"a\\\"b\"@example.com", 1, 1, 0},
        {"\"a@b\"@example.com", 1, 1, 0},
        {"j\xc3\xb6rg@example.com", 1, 1, 1},
        {"user@b\xc3\xbc" "cher.example", 1, 1, 1},
        {"o'brien@example.com", 1, 1, 0},
        {"x@xn--bcher-kva.example", 1, 1, 0},
        {"x@a-b.example", 1, 1, 0},
        {"", 1, 0, 0},
        {"user", 0, 0, 0},
        {"@example.com", 0, 0, 0},
        {"user@", 0, 0, 0},
        {"a b@example.com", 0, 0, 0},
        {"user@exa mple.com", 0, 0, 0},
        {"user@example.com\r\nRCPT TO:<x@y>", 0, 0, 0},
        {"user@example.com\n", 0, 0, 0},
        {"user\r@example.com", 0, 0, 0},
        {"us\ter@example.com", 0, 0, 0},
        {"user@example.com\x7f", 0, 0, 0},
        {"<user@example.com>", 0, 0, 0},
        {"a<b@example.com", 0, 0, 0},
        {"\"a>b\"@example.com", 0, 0, 0},
        {"user@example.com> SIZE=1", 0, 0, 0},
        {"a@b@example.com", 0, 0, 0},
        {"user@-example.com", 0, 0, 0},
        {"user@example-.com", 0, 0, 0},
        {"user@example..com", 0, 0, 0},
        {"user@.example.com", 0, 0, 0},
        {"user@example.com.", 0, 0, 0},
        {"user@exa_mple.com", 0, 0, 0},
        {"user@[192.0.2.1", 0, 0, 0},
        {"user@[300.0.2.1]", 0, 0, 0},
        {"user@[IPv6:zz::1]", 0, 0, 0},
        {"user@[]", 0, 0, 0},
        {"\"a b@example.com", 0, 0, 0},
        {"\"a\"b\"@example.com", 0, 0, 0},
        {"\"a\\\"@example.com", 0, 0, 0},
        {"a\"b@example.com", 0, 0, 0},
        {"a(b)@example.com", 0, 0, 0},
        {"j\xc3@example.com", 0, 0, 0},         /* truncated UTF-8 */
        {"j\xc0\xaf@example.com", 0, 0, 0},     /* overlong */
        {"j\xed\xa0\x80@example.com", 0, 0, 0}, /* surrogate */
        {"x@\xff.example", 0, 0, 0},
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int na = -1;
        int rc_s = tm__address_check(cases[i].addr, 1, &na);
        int rc_r;
        if (rc_s != (cases[i].sender_ok ? TM_OK : TM_EADDRESS))
            fail_msg("sender \"%s\": %d", cases[i].addr, rc_s);
        assert_int_equal(na, rc_s == TM_OK ? cases[i].non_ascii : 0);
        rc_r = tm__address_check(cases[i].addr, 0, NULL);
        if (rc_r != (cases[i].rcpt_ok ? TM_OK : TM_EADDRESS))
            fail_msg("recipient \"%s\": %d", cases[i].addr, rc_r);
    }
    assert_int_equal(tm__address_check(NULL, 1, NULL), TM_EADDRESS);
}

static void test_address_length(void **state)
{
    char a[TM_ADDRESS_MAX + 8];
    (void)state;

    memset(a, 'a', sizeof(a));
    memcpy(a + TM_ADDRESS_MAX - 1 - 12, "@example.com", 13); /* 255 bytes */
    assert_int_equal(strlen(a), TM_ADDRESS_MAX - 1);
    assert_int_equal(tm__address_check(a, 0, NULL), TM_OK);
    memset(a, 'a', sizeof(a));
    memcpy(a + TM_ADDRESS_MAX - 12, "@example.com", 13); /* 256 bytes */
    assert_int_equal(tm__address_check(a, 0, NULL), TM_EADDRESS);
    assert_int_equal(tm__address_check(a, 1, NULL), TM_EADDRESS);
}

static void test_address_domain(void **state)
{
    (void)state;
    assert_string_equal(tm__address_domain("a@example.com"), "example.com");
    assert_string_equal(tm__address_domain("\"a@b\"@example.com"), "example.com");
    assert_string_equal(tm__address_domain("a@"), "");
    assert_null(tm__address_domain("nobody"));
    assert_null(tm__address_domain(""));
    assert_null(tm__address_domain(NULL));
}

static void test_domain_equal(void **state)
{
    (void)state;
    assert_true(tm__domain_equal("example.com", "example.com"));
    assert_true(tm__domain_equal("Example.COM", "example.com"));
    assert_true(tm__domain_equal("example.com.", "example.com"));
    assert_true(tm__domain_equal("example.com", "EXAMPLE.com."));
    assert_true(tm__domain_equal("example.com.", "example.com."));
    assert_false(tm__domain_equal("example.com..", "example.com"));
    assert_false(tm__domain_equal("example.com", "example.org"));
    assert_false(tm__domain_equal("example.com", "sub.example.com"));
    assert_false(tm__domain_equal("xample.com", "example.com"));
    assert_false(tm__domain_equal("b\xc3\xbc" "cher.example", "b\xc3\x9c" "cher.example"));
    assert_false(tm__domain_equal("", ""));
    assert_false(tm__domain_equal(".", ""));
    assert_false(tm__domain_equal(NULL, "a"));
    assert_false(tm__domain_equal("a", NULL));
}

static void test_name_check(void **state)
{
    static const char *const good[] = {
        "mx1.example.com", "localhost", "mail-out_1.example.com", "mx.example.com.",
        "192.0.2.1", "[192.0.2.1]", "[IPv6:::1]", "::1", "2001:db8::25", "a",
    };
    static const char *const bad[] = {
        "", "mx .example.com", "mx\r\n.example.com", "mx\n", "mx\x7f", "-mx.example.com",
        "mx-.example.com", "mx..example.com", ".", "m\xc3\xa4il.example", "[192.0.2.1",
        "[zz]", ":::::", "mx.example.com..", "mx@example.com", "mx/x",
    };
    char big[300];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (tm__name_check(good[i]) != TM_OK)
            fail_msg("\"%s\" refused", good[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tm__name_check(bad[i]) != TM_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
    assert_int_equal(tm__name_check(NULL), TM_EINVAL);
    /* 63-octet labels are fine, 64 are not; 253 octets in all at most. */
    memset(big, 'a', 63);
    strcpy(big + 63, ".example");
    assert_int_equal(tm__name_check(big), TM_OK);
    memset(big, 'a', 64);
    strcpy(big + 64, ".example");
    assert_int_equal(tm__name_check(big), TM_EINVAL);
    for (i = 0; i < 4; i++) {
        memset(big + i * 64, 'a', 63);
        big[i * 64 + 63] = '.';
    }
    big[253] = '\0'; /* 253 octets */
    assert_int_equal(tm__name_check(big), TM_OK);
    big[253] = 'a';
    big[254] = '\0';
    assert_int_equal(tm__name_check(big), TM_EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(tm__name_check(big), TM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_line),
        cmocka_unit_test(test_multi_line),
        cmocka_unit_test(test_code_only),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_enhanced),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_text_truncation),
        cmocka_unit_test(test_line_count),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_two_replies),
        cmocka_unit_test(test_invalid_args),
        cmocka_unit_test(test_caps_postfix),
        cmocka_unit_test(test_caps_each),
        cmocka_unit_test(test_caps_greeting_skipped),
        cmocka_unit_test(test_caps_size),
        cmocka_unit_test(test_caps_truncated),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_address_length),
        cmocka_unit_test(test_address_domain),
        cmocka_unit_test(test_domain_equal),
        cmocka_unit_test(test_name_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
