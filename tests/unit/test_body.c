/*
 * test_body.c - the content encoder: line ends, dot-stuffing, long lines,
 * SMTP smuggling, chunking, and a random-input property test against a
 * plain reference implementation of the same rules.
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

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static void buf_put(buf *b, const void *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_putc(buf *b, unsigned char c)
{
    buf_put(b, &c, 1);
}

static void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/*
 * The encoder under test: in, fed in chunks of `chunk` bytes (0 = all at
 * once), into an output window of `outcap` bytes, then tm__body_finish.
 * Returns the encoder's last return value; *out gets everything produced.
 */
static int encode(const unsigned char *in, size_t len, size_t chunk, size_t outcap, buf *out,
                  int finish, size_t *err_at)
{
    tm_body b;
    unsigned char *o = malloc(outcap);
    size_t pos = 0;
    int rc = TM_OK;

    assert_non_null(o);
    tm__body_init(&b);
    while (pos < len) {
        size_t n = chunk == 0 || chunk > len - pos ? len - pos : chunk;
        size_t done = 0;
        while (done < n) {
            size_t used = 99, made = 99;
            rc = tm__body_encode(&b, in + pos + done, n - done, &used, o, outcap, &made);
            assert_true(used <= n - done);
            assert_true(made <= outcap);
            buf_put(out, o, made);
            done += used;
            if (rc != TM_OK) {
                *err_at = pos + done;
                free(o);
                return rc;
            }
            /* progress is guaranteed with 4 bytes of room */
            assert_true(used > 0 || made > 0 || n - done == 0);
        }
        pos += n;
    }
    if (finish) {
        unsigned char f[TM_BODY_FINISH_MAX];
        size_t fn = tm__body_finish(&b, f);
        assert_true(fn <= TM_BODY_FINISH_MAX);
        buf_put(out, f, fn);
    }
    free(o);
    return rc;
}

/* ---- the reference: the rules of internal.h, written the slow way ---- */

static void reference(const unsigned char *in, size_t len, buf *out)
{
    buf line = {0};
    size_t i = 0;
    int open = 0;

    buf_put(&line, "", 0);
    while (i <= len) {
        int end = i == len;
        int eol = !end && (in[i] == '\r' || in[i] == '\n');

        if (!end && !eol) {
            buf_putc(&line, in[i]);
            open = 1;
            i++;
            continue;
        }
        if (eol || open) {
            /* one logical line: stuff, then cut into 998 + 997 + ... */
            buf l = {0};
            size_t k = 0, lim = TM_BODY_LINE_MAX;
            buf_put(&l, "", 0);
            if (line.len > 0 && line.p[0] == '.')
                buf_putc(&l, '.');
            buf_put(&l, line.p, line.len);
            while (l.len - k > lim) {
                buf_put(out, l.p + k, lim);
                buf_put(out, "\r\n ", 3);
                k += lim;
                lim = TM_BODY_LINE_MAX - 1;
            }
            buf_put(out, l.p + k, l.len - k);
            buf_put(out, "\r\n", 2); /* the finish adds it to an open last line */
            buf_free(&l);
        }
        line.len = 0;
        open = 0;
        if (end)
            break;
        if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
            i++;
        i++;
    }
    buf_put(out, ".\r\n", 3);
    buf_free(&line);
}

/* The invariants any output must hold. */
static void check_invariants(const unsigned char *p, size_t len)
{
    size_t i, line = 0;

    for (i = 0; i < len; i++) {
        assert_int_not_equal(p[i], 0);
        if (p[i] == '\r') {
            if (i + 1 >= len || p[i + 1] != '\n')
                fail_msg("bare CR at %zu", i);
            i++;
            line = 0;
            continue;
        }
        if (p[i] == '\n')
            fail_msg("bare LF at %zu", i);
        if (++line > TM_BODY_LINE_MAX)
            fail_msg("line over %d octets at %zu", TM_BODY_LINE_MAX, i);
    }
}

/* No end of data before the real one: "\r\n.\r\n" does not occur in
 * "\r\n" + content (DATA's own CRLF precedes it), except as the finish. */
static void check_no_early_end(const unsigned char *p, size_t len, int finished)
{
    buf b = {0};
    size_t i;

    buf_put(&b, "\r\n", 2);
    buf_put(&b, p, len);
    for (i = 0; i + 5 <= b.len; i++)
        if (memcmp(b.p + i, "\r\n.\r\n", 5) == 0 && !(finished && i + 5 == b.len))
            fail_msg("end of data at %zu", i);
    if (finished)
        assert_memory_equal(b.p + b.len - 5, "\r\n.\r\n", 5);
    buf_free(&b);
}

/* Undoes the encoding of a finished output: removes CRLF SP breaks after
 * 998-octet lines, un-stuffs dots, drops the final ".\r\n".  Only exact for
 * content without spaces (a space after a 998-octet line is ambiguous). */
static void decode(const unsigned char *p, size_t len, buf *out)
{
    size_t i = 0, prev_len = (size_t)-1;

    assert_true(len >= 3);
    assert_memory_equal(p + len - 3, ".\r\n", 3);
    len -= 3;
    while (i < len) {
        const unsigned char *crlf = NULL;
        size_t k, n;

        for (k = i; k + 1 < len; k++)
            if (p[k] == '\r' && p[k + 1] == '\n') {
                crlf = p + k;
                break;
            }
        assert_non_null(crlf);
        n = (size_t)(crlf - (p + i));
        if (prev_len == TM_BODY_LINE_MAX && n > 0 && p[i] == ' ') {
            /* continuation: join with the previous line */
            assert_true(out->len >= 2);
            out->len -= 2;
            buf_put(out, p + i + 1, n - 1);
        } else if (n > 0 && p[i] == '.') {
            assert_true(n >= 2 && p[i + 1] == '.');
            buf_put(out, p + i + 1, n - 1);
        } else {
            buf_put(out, p + i, n);
        }
        buf_put(out, "\r\n", 2);
        prev_len = n;
        i += n + 2;
    }
}

/* Normalised input: every line end CRLF, a final CRLF added. */
static void normalise(const unsigned char *in, size_t len, buf *out)
{
    size_t i;

    buf_put(out, "", 0);
    for (i = 0; i < len; i++) {
        if (in[i] == '\r') {
            buf_put(out, "\r\n", 2);
            if (i + 1 < len && in[i + 1] == '\n')
                i++;
        } else if (in[i] == '\n') {
            buf_put(out, "\r\n", 2);
        } else {
            buf_putc(out, in[i]);
        }
    }
    if (len > 0 && in[len - 1] != '\r' && in[len - 1] != '\n')
        buf_put(out, "\r\n", 2);
}

static void check_encoding(const unsigned char *in, size_t len, const char *expected,
                           size_t expected_len)
{
    buf out = {0}, ref = {0};
    size_t err = 0;

    assert_int_equal(encode(in, len, 0, 65536, &out, 1, &err), TM_OK);
    buf_put(&out, "", 0);
    if (expected != NULL) {
        if (out.len != expected_len || memcmp(out.p, expected, expected_len) != 0)
            fail_msg("encoding differs (got %zu bytes, expected %zu)", out.len, expected_len);
    }
    reference(in, len, &ref);
    assert_int_equal(out.len, ref.len);
    assert_memory_equal(out.p, ref.p, ref.len);
    check_invariants(out.p, out.len);
    check_no_early_end(out.p, out.len, 1);
    buf_free(&out);
    buf_free(&ref);
}

#define CASE(in, out) check_encoding((const unsigned char *)(in), sizeof(in) - 1, out, sizeof(out) - 1)

static void test_line_ends(void **state)
{
    (void)state;
    CASE("", ".\r\n");
    CASE("a", "a\r\n.\r\n");
    CASE("a\r\n", "a\r\n.\r\n");
    CASE("a\n", "a\r\n.\r\n");
    CASE("a\r", "a\r\n.\r\n");
    CASE("a\rb", "a\r\nb\r\n.\r\n");
    CASE("a\nb", "a\r\nb\r\n.\r\n");
    CASE("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
    CASE("a\r\rb", "a\r\n\r\nb\r\n.\r\n");
    CASE("a\r\r\nb", "a\r\n\r\nb\r\n.\r\n");
    CASE("a\n\rb", "a\r\n\r\nb\r\n.\r\n");
    CASE("a\n\nb", "a\r\n\r\nb\r\n.\r\n");
    CASE("a\r\n\r\n", "a\r\n\r\n.\r\n");
    CASE("\n", "\r\n.\r\n");
    CASE("\r", "\r\n.\r\n");
    CASE("\r\n", "\r\n.\r\n");
    CASE("\r\r", "\r\n\r\n.\r\n");
    CASE("\n\r", "\r\n\r\n.\r\n");
    CASE("\r\n\r\n", "\r\n\r\n.\r\n");
    CASE("Subject: x\r\n\r\nbody", "Subject: x\r\n\r\nbody\r\n.\r\n");
    CASE("a\x80\xff\x01\x7f b", "a\x80\xff\x01\x7f b\r\n.\r\n");
}

static void test_dots(void **state)
{
    (void)state;
    CASE(".", "..\r\n.\r\n");
    CASE("..", "...\r\n.\r\n");
    CASE(".\r\n", "..\r\n.\r\n");
    CASE(".a\r\n", "..a\r\n.\r\n");
    CASE("a.\r\n.b", "a.\r\n..b\r\n.\r\n");
    CASE("a\n.b", "a\r\n..b\r\n.\r\n");
    CASE("a\r.b", "a\r\n..b\r\n.\r\n");
    CASE("a\r\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n");
    CASE(" .", " .\r\n.\r\n");
    CASE("a.b", "a.b\r\n.\r\n");
    CASE("\r\n.\r\n", "\r\n..\r\n.\r\n");
    CASE(".\n.\r.", "..\r\n..\r\n..\r\n.\r\n");
}

static void test_smuggling(void **state)
{
    static const char *const variants[] = {
        "\n.\n",     "\r.\r",     "\r\n.\n",     "\n.\r\n",     "\r.\r\n",
        "\r\n.\r",   "\n.\r",     "\r.\n",       "\r\n.\r\r\n", "\r\n.\n\r\n",
        "\r\r\n.\r", ".\r\n",     ".\n",         ".\r",         "\r\n\r\n.\r\n",
        "\n\n.\n\n", "\r\n..\r\n", "\r\n.\x00\r\n",
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        /* Each variant between two pieces of text, as an attacker would. */
        buf in = {0}, out = {0};
        size_t err = 0, vlen = strlen(variants[i]);
        int rc;

        if (i == sizeof(variants) / sizeof(variants[0]) - 1)
            vlen = 6; /* the one with a NUL */
        buf_put(&in, "DATA-before", 11);
        buf_put(&in, variants[i], vlen);
        buf_put(&in, "MAIL FROM:<evil@example.com>\r\n", 30);
        rc = encode(in.p, in.len, 0, 4096, &out, 0, &err);
        if (memchr(in.p, 0, in.len) != NULL) {
            assert_int_equal(rc, TM_ECONTENT);
        } else {
            assert_int_equal(rc, TM_OK);
            check_encoding(in.p, in.len, NULL, 0);
        }
        check_invariants(out.p, out.len);
        check_no_early_end(out.p, out.len, 0);
        buf_free(&in);
        buf_free(&out);
    }
    /* Exact forms of the classic ones. */
    CASE("a\n.\nb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\r.\rb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\r\n.\nb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\n.\r\nb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\r.\r\nb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\r\n.\rb", "a\r\n..\r\nb\r\n.\r\n");
    CASE("a\r\n.\r\r\nb", "a\r\n..\r\n\r\nb\r\n.\r\n");
}

static void test_nul(void **state)
{
    static const unsigned char a[] = "abc\0def";
    static const unsigned char b[] = "a\r\0";
    static const unsigned char c[] = "\0";
    static const unsigned char d[] = "line\r\n.\0";
    buf out = {0};
    size_t err = 0, chunk;
    (void)state;

    for (chunk = 0; chunk < 5; chunk++) {
        out.len = 0;
        assert_int_equal(encode(a, 7, chunk, 16, &out, 0, &err), TM_ECONTENT);
        assert_int_equal(err, 3);
        assert_int_equal(out.len, 3);
        assert_memory_equal(out.p, "abc", 3);
        out.len = 0;
        assert_int_equal(encode(b, 3, chunk, 16, &out, 0, &err), TM_ECONTENT);
        assert_int_equal(err, 2);
        out.len = 0;
        assert_int_equal(encode(c, 1, chunk, 4, &out, 0, &err), TM_ECONTENT);
        assert_int_equal(err, 0);
        assert_int_equal(out.len, 0);
        out.len = 0;
        assert_int_equal(encode(d, 8, chunk, 4, &out, 0, &err), TM_ECONTENT);
        assert_int_equal(err, 7);
        assert_memory_equal(out.p, "line\r\n..", 8);
    }
    buf_free(&out);
}

/* A line of n octets of 'x' (first byte `first`), then LF. */
static void long_line(buf *in, size_t n, unsigned char first)
{
    size_t i;
    in->len = 0;
    buf_putc(in, first);
    for (i = 1; i < n; i++)
        buf_putc(in, 'x');
    buf_putc(in, '\n');
}

static void test_long_lines(void **state)
{
    buf in = {0}, want = {0};
    size_t i, k;
    (void)state;

    /* 997 and 998 octets go through unchanged. */
    for (k = 997; k <= 998; k++) {
        long_line(&in, k, 'x');
        want.len = 0;
        buf_put(&want, in.p, k);
        buf_put(&want, "\r\n.\r\n", 5);
        check_encoding(in.p, in.len, (const char *)want.p, want.len);
    }
    /* 999: 998, CRLF SP, the last one. */
    long_line(&in, 999, 'x');
    want.len = 0;
    buf_put(&want, in.p, 998);
    buf_put(&want, "\r\n x\r\n.\r\n", 9);
    check_encoding(in.p, in.len, (const char *)want.p, want.len);
    /* 5000: 998 + 4 x (SP + 997) + SP + 14. */
    long_line(&in, 5000, 'y');
    want.len = 0;
    buf_putc(&want, 'y');
    for (i = 1; i < 998; i++)
        buf_putc(&want, 'x');
    for (k = 0; k < 4; k++) {
        buf_put(&want, "\r\n ", 3);
        for (i = 0; i < 997; i++)
            buf_putc(&want, 'x');
    }
    buf_put(&want, "\r\n ", 3);
    for (i = 0; i < 14; i++)
        buf_putc(&want, 'x');
    buf_put(&want, "\r\n.\r\n", 5);
    check_encoding(in.p, in.len, (const char *)want.p, want.len);
    /* A leading dot counts: 998 octets with the dot become 999 when
     * stuffed, and are broken. */
    long_line(&in, 998, '.');
    want.len = 0;
    buf_put(&want, "..", 2);
    for (i = 0; i < 996; i++)
        buf_putc(&want, 'x');
    buf_put(&want, "\r\n x\r\n.\r\n", 9);
    check_encoding(in.p, in.len, (const char *)want.p, want.len);
    /* 997 octets with the dot: 998 stuffed, unchanged otherwise. */
    long_line(&in, 997, '.');
    want.len = 0;
    buf_putc(&want, '.');
    buf_put(&want, in.p, 997);
    buf_put(&want, "\r\n.\r\n", 5);
    check_encoding(in.p, in.len, (const char *)want.p, want.len);
    /* 998 octets and no line end: the finish adds the CRLF. */
    long_line(&in, 998, 'x');
    want.len = 0;
    buf_put(&want, in.p, 998);
    buf_put(&want, "\r\n.\r\n", 5);
    check_encoding(in.p, 998, (const char *)want.p, want.len);
    /* A break never puts a '.' at the start of a line: the SP comes first. */
    long_line(&in, 1500, 'x');
    memset(in.p + 998, '.', 5);
    check_encoding(in.p, in.len, NULL, 0);
    buf_free(&in);
    buf_free(&want);
}

/* A mix of everything, used for the chunking tests. */
static void tricky_input(buf *in)
{
    static const char *const parts[] = {
        "From: a@example.com\r\n", "\r\n", ".", "\n", "..x\r", "\r\n", ".\r\n", "\r\r\n",
        "\n.\n", "\r.\r", "\r\n.\r\r\n", "plain text line with some words in it\n",
        "\xc3\xa9t\xc3\xa9\r\n",
    };
    size_t i, k;

    for (k = 0; k < 3; k++) {
        for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
            buf_put(in, parts[i], strlen(parts[i]));
        for (i = 0; i < 997 + k; i++)
            buf_putc(in, (unsigned char)('a' + i % 26));
        buf_putc(in, k == 1 ? '\r' : '\n');
        buf_putc(in, '.');
        for (i = 0; i < 2100; i++)
            buf_putc(in, (unsigned char)('A' + i % 26));
    }
    buf_put(in, "\r\nlast line without CRLF", 24);
}

static void test_chunking(void **state)
{
    buf in = {0}, whole = {0}, part = {0};
    size_t chunk, cap, err = 0;
    static const size_t caps[] = {4, 5, 6, 7, 8, 15, 16, 17, 33, 1000, 70000};
    (void)state;

    tricky_input(&in);
    assert_int_equal(encode(in.p, in.len, 0, 70000, &whole, 1, &err), TM_OK);
    check_encoding(in.p, in.len, (const char *)whole.p, whole.len);
    for (chunk = 1; chunk <= 17; chunk++) {
        for (cap = 0; cap < sizeof(caps) / sizeof(caps[0]); cap++) {
            part.len = 0;
            assert_int_equal(encode(in.p, in.len, chunk, caps[cap], &part, 1, &err), TM_OK);
            if (part.len != whole.len || memcmp(part.p, whole.p, whole.len) != 0)
                fail_msg("chunk %zu outcap %zu differs", chunk, caps[cap]);
        }
    }
    buf_free(&in);
    buf_free(&whole);
    buf_free(&part);
}

static void test_small_outcap(void **state)
{
    tm_body b;
    unsigned char out[8];
    size_t used, made;
    (void)state;

    /* With 4 bytes of room, the worst cases still make progress. */
    tm__body_init(&b);
    assert_int_equal(tm__body_encode(&b, (const unsigned char *)"\r.", 2, &used, out, 4, &made),
                     TM_OK);
    assert_int_equal(used, 2);
    assert_int_equal(made, 4);
    assert_memory_equal(out, "\r\n..", 4);
    /* Fewer than 4 bytes of room is an error, not a silent stall. */
    assert_int_equal(tm__body_encode(&b, (const unsigned char *)"a", 1, &used, out, 3, &made),
                     TM_EINVAL);
    assert_int_equal(used, 0);
    assert_int_equal(made, 0);
    assert_int_equal(tm__body_encode(NULL, (const unsigned char *)"a", 1, &used, out, 8, &made),
                     TM_EINVAL);
    assert_int_equal(tm__body_encode(&b, NULL, 1, &used, out, 8, &made), TM_EINVAL);
    /* Empty input is fine, even without a buffer. */
    assert_int_equal(tm__body_encode(&b, NULL, 0, &used, out, 8, &made), TM_OK);
    assert_int_equal(used, 0);
    assert_int_equal(made, 0);
}

static void test_finish(void **state)
{
    tm_body b;
    unsigned char out[TM_BODY_FINISH_MAX + 1];
    size_t used, made, n;
    unsigned char o[16];
    (void)state;

    tm__body_init(&b);
    n = tm__body_finish(&b, out);
    assert_int_equal(n, 3);
    assert_memory_equal(out, ".\r\n", 3);
    tm__body_init(&b);
    assert_int_equal(tm__body_encode(&b, (const unsigned char *)"x", 1, &used, o, 16, &made), TM_OK);
    n = tm__body_finish(&b, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "\r\n.\r\n", 5);
    /* The encoder is ready for the next message after the finish. */
    assert_int_equal(tm__body_encode(&b, (const unsigned char *)".", 1, &used, o, 16, &made), TM_OK);
    assert_int_equal(made, 2);
    tm__body_init(&b);
    assert_int_equal(tm__body_encode(&b, (const unsigned char *)"x\r", 2, &used, o, 16, &made),
                     TM_OK);
    assert_int_equal(made, 1);
    n = tm__body_finish(&b, out);
    assert_int_equal(n, 5);
    assert_memory_equal(out, "\r\n.\r\n", 5);
    assert_int_equal(tm__body_finish(NULL, out), 0);
}

/* ---- random inputs ---- */

static uint32_t rng_state = 0x9e3779b9u;
static uint32_t rnd(void)
{
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

static unsigned char random_byte(int with_space)
{
    uint32_t r = rnd() % 100;
    if (r < 10)
        return '\r';
    if (r < 20)
        return '\n';
    if (r < 30)
        return '.';
    if (r < 35)
        return (unsigned char)(0x80 + rnd() % 128);
    if (r < 40 && with_space)
        return ' ';
    return (unsigned char)('a' + rnd() % 26);
}

static void test_property(void **state)
{
    buf in = {0}, out = {0}, ref = {0}, dec = {0}, norm = {0};
    unsigned int t;
    (void)state;

    for (t = 0; t < 2000; t++) {
        size_t len = rnd() % (t % 10 == 0 ? 5000 : 300), i, err = 0;
        int with_space = t % 2;
        size_t chunk = rnd() % 40, cap = 4 + rnd() % 2000;

        in.len = 0;
        buf_put(&in, "", 0);
        for (i = 0; i < len; i++) {
            /* sometimes long runs without line ends, to reach the limit */
            if (t % 7 == 0 && rnd() % 2000 != 0)
                buf_putc(&in, (unsigned char)('a' + i % 26));
            else
                buf_putc(&in, random_byte(with_space));
        }
        out.len = 0;
        assert_int_equal(encode(in.p, in.len, chunk, cap, &out, 1, &err), TM_OK);
        buf_put(&out, "", 0);
        check_invariants(out.p, out.len);
        check_no_early_end(out.p, out.len, 1);
        ref.len = 0;
        reference(in.p, in.len, &ref);
        if (ref.len != out.len || memcmp(ref.p, out.p, out.len) != 0)
            fail_msg("case %u differs from the reference", t);
        if (!with_space) {
            dec.len = 0;
            norm.len = 0;
            buf_put(&dec, "", 0);
            decode(out.p, out.len, &dec);
            normalise(in.p, in.len, &norm);
            if (dec.len != norm.len || memcmp(dec.p, norm.p, norm.len) != 0)
                fail_msg("case %u does not decode to its normalised input", t);
        }
    }
    buf_free(&in);
    buf_free(&out);
    buf_free(&ref);
    buf_free(&dec);
    buf_free(&norm);
}

/* Mail-like content: lines of typical length with CRLF or LF ends (as the
 * fast paths expect), now and then a dot, a bare CR, a long line, a NUL. */
static void realistic(buf *in, int crlf)
{
    size_t lines = 1 + rnd() % 200, l, i;

    in->len = 0;
    buf_put(in, "", 0);
    for (l = 0; l < lines; l++) {
        uint32_t r = rnd() % 1000;
        size_t len = r < 5 ? 900 + rnd() % 300 : r < 100 ? 0 : rnd() % 100;
        for (i = 0; i < len; i++)
            buf_putc(in, (unsigned char)(i == 0 && rnd() % 40 == 0 ? '.' : 'A' + rnd() % 58));
        r = rnd() % 1000;
        if (r < 10)
            buf_putc(in, '\r');
        else if (r < 20)
            buf_put(in, crlf ? "\n" : "\r\n", crlf ? 1 : 2);
        else
            buf_put(in, crlf ? "\r\n" : "\n", crlf ? 2 : 1);
    }
}

static void test_property_realistic(void **state)
{
    buf in = {0}, out = {0}, ref = {0}, dec = {0}, norm = {0};
    unsigned int t;
    (void)state;

    for (t = 0; t < 1000; t++) {
        size_t err = 0, chunk = rnd() % 4 == 0 ? 0 : 1 + rnd() % 700;
        size_t cap = rnd() % 2 ? 4 + rnd() % 300 : 4096;
        int nul = t % 50 == 49;

        realistic(&in, t % 2);
        if (nul && in.len > 0)
            in.p[rnd() % in.len] = '\0';
        out.len = 0;
        if (nul && memchr(in.p, 0, in.len) != NULL) {
            size_t at = (size_t)((unsigned char *)memchr(in.p, 0, in.len) - in.p);
            assert_int_equal(encode(in.p, in.len, chunk, cap, &out, 0, &err), TM_ECONTENT);
            assert_int_equal(err, at);
            ref.len = 0;
            reference(in.p, at, &ref);
            /* what was produced is the encoding of what came before */
            assert_true(out.len <= ref.len);
            assert_memory_equal(out.p, ref.p, out.len);
            continue;
        }
        assert_int_equal(encode(in.p, in.len, chunk, cap, &out, 1, &err), TM_OK);
        buf_put(&out, "", 0);
        check_invariants(out.p, out.len);
        check_no_early_end(out.p, out.len, 1);
        ref.len = 0;
        reference(in.p, in.len, &ref);
        if (ref.len != out.len || memcmp(ref.p, out.p, out.len) != 0)
            fail_msg("realistic case %u differs from the reference", t);
        dec.len = 0;
        norm.len = 0;
        buf_put(&dec, "", 0);
        decode(out.p, out.len, &dec);
        normalise(in.p, in.len, &norm);
        if (dec.len != norm.len || memcmp(dec.p, norm.p, norm.len) != 0)
            fail_msg("realistic case %u does not decode to its normalised input", t);
    }
    buf_free(&in);
    buf_free(&out);
    buf_free(&ref);
    buf_free(&dec);
    buf_free(&norm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_ends),   cmocka_unit_test(test_dots),
        cmocka_unit_test(test_smuggling),   cmocka_unit_test(test_nul),
        cmocka_unit_test(test_long_lines),  cmocka_unit_test(test_chunking),
        cmocka_unit_test(test_small_outcap), cmocka_unit_test(test_finish),
        cmocka_unit_test(test_property),   cmocka_unit_test(test_property_realistic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
