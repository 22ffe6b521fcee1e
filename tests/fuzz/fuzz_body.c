/*
 * fuzz_body.c - the content encoder on arbitrary content, arbitrarily
 * chunked, into small and large output windows.
 *
 * Input: byte 0 = chunk size (0 = all at once), byte 1 = extra output room
 * (outcap = 4 + byte 1), then the content.
 *
 * Checks: every chunking and window gives the same bytes as one call; the
 * output equals a slow reference of the rules; no bare CR or LF, no line
 * over 998 octets, no "CRLF . CRLF" before the finish; decoding recovers the
 * normalised content; a NUL stops the encoder exactly at the NUL.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

typedef struct obuf {
    unsigned char *p;
    size_t len, cap;
} obuf;

static void put(obuf *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p != NULL);
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static int same(const obuf *x, const obuf *y)
{
    return x->len == y->len && (x->len == 0 || memcmp(x->p, y->p, x->len) == 0);
}

/* Encodes with the given chunking and window; returns the encoder's last
 * result, *nul_at the consumed position on error. */
static int encode(const unsigned char *in, size_t len, size_t chunk, size_t outcap, obuf *out,
                  int finish, size_t *nul_at)
{
    tm_body b;
    unsigned char win[4 + 256];
    size_t pos = 0;

    tm__body_init(&b);
    out->len = 0;
    while (pos < len) {
        size_t n = chunk == 0 || chunk > len - pos ? len - pos : chunk;
        size_t done = 0;
        while (done < n) {
            size_t used, made;
            int rc = tm__body_encode(&b, in + pos + done, n - done, &used, win, outcap, &made);
            FUZZ_CHECK(used <= n - done && made <= outcap);
            put(out, win, made);
            done += used;
            if (rc != TM_OK) {
                FUZZ_CHECK(rc == TM_ECONTENT);
                *nul_at = pos + done;
                return rc;
            }
            FUZZ_CHECK(used > 0 || done == n);
        }
        pos += n;
    }
    if (finish) {
        unsigned char f[TM_BODY_FINISH_MAX];
        size_t fn = tm__body_finish(&b, f);
        FUZZ_CHECK(fn == 3 || fn == 5);
        put(out, f, fn);
    }
    return TM_OK;
}

/* The rules, the slow way: split into lines, stuff, cut, join. */
static void reference(const unsigned char *in, size_t len, obuf *out)
{
    size_t s = 0;

    out->len = 0;
    while (s < len) {
        size_t e = s, seglen, k = 0, lim = TM_BODY_LINE_MAX;
        int stuffed;

        while (e < len && in[e] != '\r' && in[e] != '\n')
            e++;
        stuffed = e > s && in[s] == '.';
        seglen = e - s + (size_t)stuffed;
        /* emit the stuffed line in pieces of 998, then 997 after CRLF SP */
        while (seglen - k > lim) {
            size_t j;
            for (j = 0; j < lim; j++) {
                size_t at = k + j;
                unsigned char c = stuffed ? (at == 0 ? '.' : in[s + at - 1]) : in[s + at];
                put(out, &c, 1);
            }
            put(out, "\r\n ", 3);
            k += lim;
            lim = TM_BODY_LINE_MAX - 1;
        }
        for (; k < seglen; k++) {
            unsigned char c = stuffed ? (k == 0 ? '.' : in[s + k - 1]) : in[s + k];
            put(out, &c, 1);
        }
        put(out, "\r\n", 2);
        if (e < len && in[e] == '\r' && e + 1 < len && in[e + 1] == '\n')
            e++;
        s = e + 1;
    }
    put(out, ".\r\n", 3);
}

static void check_invariants(const unsigned char *p, size_t len, int finished)
{
    size_t i, line = 0;

    for (i = 0; i < len; i++) {
        FUZZ_CHECK(p[i] != 0);
        if (p[i] == '\r') {
            FUZZ_CHECK(i + 1 < len && p[i + 1] == '\n');
            i++;
            line = 0;
            continue;
        }
        FUZZ_CHECK(p[i] != '\n');
        FUZZ_CHECK(++line <= TM_BODY_LINE_MAX);
    }
    /* "\r\n" (from DATA) + content: the end of data only at the end */
    if (len >= 3 && memcmp(p, ".\r\n", 3) == 0)
        FUZZ_CHECK(finished && len == 3);
    for (i = 0; i + 5 <= len; i++)
        if (memcmp(p + i, "\r\n.\r\n", 5) == 0)
            FUZZ_CHECK(finished && i + 5 == len);
}

/* Undoes the encoding; exact for content without spaces. */
static void decode(const unsigned char *p, size_t len, obuf *out)
{
    size_t i = 0, prev = (size_t)-1;

    out->len = 0;
    FUZZ_CHECK(len >= 3 && memcmp(p + len - 3, ".\r\n", 3) == 0);
    len -= 3;
    while (i < len) {
        size_t n = 0;
        while (i + n + 1 < len && !(p[i + n] == '\r' && p[i + n + 1] == '\n'))
            n++;
        FUZZ_CHECK(i + n + 1 < len);
        if (prev == TM_BODY_LINE_MAX && n > 0 && p[i] == ' ') {
            out->len -= 2;
            put(out, p + i + 1, n - 1);
        } else if (n > 0 && p[i] == '.') {
            FUZZ_CHECK(n >= 2 && p[i + 1] == '.');
            put(out, p + i + 1, n - 1);
        } else {
            put(out, p + i, n);
        }
        put(out, "\r\n", 2);
        prev = n;
        i += n + 2;
    }
}

static void normalise(const unsigned char *in, size_t len, obuf *out)
{
    size_t i;

    out->len = 0;
    for (i = 0; i < len; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            put(out, "\r\n", 2);
            if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
                i++;
        } else {
            put(out, in + i, 1);
        }
    }
    if (len > 0 && in[len - 1] != '\r' && in[len - 1] != '\n')
        put(out, "\r\n", 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static obuf a, b, c, d;
    const unsigned char *in, *nul;
    size_t len, chunk, outcap, nul_a = 0, nul_b = 0, i;
    unsigned char *nospace;
    int rc;

    if (size < 2)
        return 0;
    chunk = data[0];
    outcap = 4 + data[1];
    in = data + 2;
    len = size - 2;

    nul = memchr(in, 0, len);
    rc = encode(in, len, chunk, outcap, &a, 1, &nul_a);
    if (nul != NULL) {
        /* stops exactly at the first NUL, whatever the chunking */
        FUZZ_CHECK(rc == TM_ECONTENT && nul_a == (size_t)(nul - in));
        FUZZ_CHECK(encode(in, len, 0, 4 + 256, &b, 0, &nul_b) == TM_ECONTENT);
        FUZZ_CHECK(nul_b == nul_a && same(&a, &b));
        check_invariants(a.p, a.len, 0);
        return 0;
    }
    FUZZ_CHECK(rc == TM_OK);
    check_invariants(a.p, a.len, 1);
    /* one call, largest window */
    FUZZ_CHECK(encode(in, len, 0, 4 + 256, &b, 1, &nul_b) == TM_OK);
    FUZZ_CHECK(same(&a, &b));
    /* the reference */
    reference(in, len, &c);
    FUZZ_CHECK(same(&a, &c));

    /* round trip, with spaces made ordinary letters (a space after a
     * 998-octet line is ambiguous by design) */
    nospace = malloc(len ? len : 1);
    FUZZ_CHECK(nospace != NULL);
    for (i = 0; i < len; i++)
        nospace[i] = in[i] == ' ' ? '_' : in[i];
    FUZZ_CHECK(encode(nospace, len, chunk, outcap, &a, 1, &nul_a) == TM_OK);
    decode(a.p, a.len, &c);
    normalise(nospace, len, &d);
    FUZZ_CHECK(same(&c, &d));
    free(nospace);
    return 0;
}
