/*
 * test_dane.c - the DANE check of the verify callback (RFC 7672, RFC 7671,
 * RFC 6698) on canned certificate chains, through tm__dane_check_chain.
 *
 * The chains are PEM files in tests/unit/dane/, made once by gen.sh and
 * committed: a root CA (RSA), an intermediate (ECDSA) under it, leaves
 * for mx.example.test under the intermediate (ECDSA, RSA, CN only, a
 * wildcard, one expired in 2001), an expired self-signed leaf with a
 * wrong name, and a leaf of another CA.  Every certificate that should
 * verify is valid from 2024 to 2124, and the expired ones ended in 2001,
 * so no result depends on today's date.
 *
 * The TLSA data the records carry is computed here from the files, with
 * a DER walker and SHA-256 of this file's own (independent of mbedTLS,
 * which the library uses) and the library's SHA-512; both are checked
 * against digests openssl computed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifndef TM_DANE_DIR
#error "TM_DANE_DIR must name the directory of the canned certificates"
#endif

/* ---- SHA-256 (FIPS 180-4), for matching type 1 ---------------------------- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;

    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (i = 16; i < 64; i++)
        w[i] = (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10)) + w[i - 7] +
               (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 16];
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256(const unsigned char *data, size_t len, unsigned char out[32])
{
    uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    unsigned char tail[128];
    size_t i, rest = len % 64, tlen = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;

    for (i = 0; i + 64 <= len; i += 64)
        sha256_block(h, data + i);
    memset(tail, 0, sizeof tail);
    memcpy(tail, data + len - rest, rest);
    tail[rest] = 0x80;
    for (i = 0; i < 8; i++)
        tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha256_block(h, tail);
    if (tlen == 128)
        sha256_block(h, tail + 64);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

/* ---- the canned files ----------------------------------------------------- */

/* A whole file, NUL-terminated (the caller frees it). */
static char *slurp(const char *name)
{
    char path[512];
    FILE *f;
    long size;
    char *text;

    snprintf(path, sizeof path, "%s/%s", TM_DANE_DIR, name);
    f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size > 0);
    rewind(f);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    return text;
}

/* A chain: the named PEM files one after the other (a list ending in
 * END), as a server would send them. */
#define END ((const char *)NULL)

static char *chain_of(const char *first, ...)
{
    va_list ap;
    const char *name;
    char *all = calloc(1, 1);
    size_t len = 0;

    assert_non_null(all);
    va_start(ap, first);
    for (name = first; name; name = va_arg(ap, const char *)) {
        char *one = slurp(name);
        size_t n = strlen(one);
        all = realloc(all, len + n + 1);
        assert_non_null(all);
        memcpy(all + len, one, n + 1);
        len += n;
        free(one);
    }
    va_end(ap);
    return all;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

typedef struct der {
    unsigned char b[4096];
    size_t len;
} der;

/* The DER of the first certificate of a PEM file. */
static void cert_der(const char *name, der *out)
{
    char *pem = slurp(name);
    const char *p = strstr(pem, "-----BEGIN CERTIFICATE-----");
    const char *end;
    unsigned int acc = 0;
    int bits = 0;

    assert_non_null(p);
    p += strlen("-----BEGIN CERTIFICATE-----");
    end = strstr(p, "-----END CERTIFICATE-----");
    assert_non_null(end);
    out->len = 0;
    for (; p < end; p++) {
        int v = b64val((unsigned char)*p);
        if (v < 0)
            continue; /* line breaks, padding */
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            assert_true(out->len < sizeof out->b);
            out->b[out->len++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    free(pem);
}

/* One DER element at *p (< end): its tag, and the start and end of its
 * contents; *p moves past it. */
static int der_next(const unsigned char **p, const unsigned char *end, const unsigned char **body,
                    const unsigned char **body_end)
{
    const unsigned char *q = *p;
    size_t len = 0;
    int tag;

    assert_true(end - q >= 2);
    tag = *q++;
    if (*q < 0x80) {
        len = *q++;
    } else {
        int n = *q++ & 0x7f;
        assert_true(n >= 1 && n <= 2 && end - q >= n);
        while (n--)
            len = len << 8 | *q++;
    }
    assert_true((size_t)(end - q) >= len);
    *body = q;
    *body_end = q + len;
    *p = q + len;
    return tag;
}

/* The SubjectPublicKeyInfo (the whole element) of a certificate:
 * Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version,
 * serialNumber, signature, issuer, validity, subject,
 * subjectPublicKeyInfo, ... }, ... } (RFC 5280 4.1). */
static void spki_der(const der *cert, der *out)
{
    const unsigned char *p = cert->b, *end = cert->b + cert->len, *body, *bend, *tbs, *tend, *at;
    int i;

    assert_int_equal(der_next(&p, end, &body, &bend), 0x30);
    p = body;
    assert_int_equal(der_next(&p, bend, &tbs, &tend), 0x30);
    p = tbs;
    if (*p == 0xa0)
        der_next(&p, tend, &body, &bend); /* version */
    for (i = 0; i < 5; i++)               /* serial, signature, issuer, validity, subject */
        der_next(&p, tend, &body, &bend);
    at = p;
    assert_int_equal(der_next(&p, tend, &body, &bend), 0x30);
    out->len = (size_t)(p - at);
    memcpy(out->b, at, out->len);
}

/* A usable TLSA record as tm__dns_parse_tlsa stores it, for the
 * certificate in file `name`: matching type 0 keeps the SHA-512 of the
 * full data (full = 1), 1 the SHA-256, 2 the SHA-512. */
static tm_tlsa record(unsigned usage, unsigned selector, unsigned mtype, const char *name)
{
    der cert, spki;
    const der *d = &cert;
    tm_tlsa t;

    memset(&t, 0, sizeof t);
    cert_der(name, &cert);
    if (selector == 1) {
        spki_der(&cert, &spki);
        d = &spki;
    }
    t.usage = (unsigned char)usage;
    t.selector = (unsigned char)selector;
    t.mtype = (unsigned char)mtype;
    t.full = mtype == 0;
    if (mtype == 1) {
        sha256(d->b, d->len, t.data);
        t.len = 32;
    } else {
        assert_int_equal(tm__sha512(d->b, d->len, t.data), TM_OK);
        t.len = 64;
    }
    return t;
}

static void unhex(const char *hex, unsigned char *out, size_t n)
{
    size_t i;
    assert_int_equal(strlen(hex), 2 * n);
    for (i = 0; i < n; i++) {
        unsigned int v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (unsigned char)v;
    }
}

static const char *const mx_name[] = { "mx.example.test" };

/* The check on a chain of files; n records. */
static int check(const tm_tlsa *t, int n, const char *const *names, int nnames, const char *pem)
{
    return tm__dane_check_chain(t, n, names, nnames, pem, strlen(pem));
}

/* ---- the test's own tools, against openssl -------------------------------- */

static void helpers_agree_with_openssl(void **state)
{
    unsigned char want[64], got[32];
    tm_tlsa t;
    der cert, spki;
    (void)state;

    /* FIPS 180-4 examples: one block, two blocks, an empty message. */
    sha256((const unsigned char *)"abc", 3, got);
    unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    assert_memory_equal(got, want, 32);
    sha256((const unsigned char *)"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, got);
    unhex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", want, 32);
    assert_memory_equal(got, want, 32);
    sha256((const unsigned char *)"", 0, got);
    unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, 32);
    assert_memory_equal(got, want, 32);

    /* openssl x509 -in leaf.pem -outform DER | openssl dgst -sha256 */
    t = record(3, 0, 1, "leaf.pem");
    unhex("cfaffde8c73fa80a879f9c9d80743abf24b0686d074649a1c3f7bfceb98e89c4", want, 32);
    assert_memory_equal(t.data, want, 32);
    /* openssl x509 -in leaf.pem -noout -pubkey | openssl pkey -pubin -outform DER |
     *     openssl dgst -sha256 (and -sha512) */
    t = record(3, 1, 1, "leaf.pem");
    unhex("660d82c7d1bf0e324787b787d3ce39dcb76dbb921f0191444411d52a393630d2", want, 32);
    assert_memory_equal(t.data, want, 32);
    t = record(3, 1, 2, "leaf.pem");
    unhex("7f6f2d79ae8eac2ec1a0a85005bdbec37bdd214f06226bd2bc776a7c749248e6"
          "c7d5aa65cdfd9be814a2cd835d91555cf0758dd0ff0cd434eb3d76aec568323c",
          want, 64);
    assert_memory_equal(t.data, want, 64);
    assert_int_equal(t.len, 64);
    assert_int_equal(t.full, 0);
    /* The same for the intermediate (an element with a longer header). */
    t = record(2, 0, 1, "inter.pem");
    unhex("e8c8663b2dd0b1bcad061d0700c32f1272b63c840d94c281a97758aa8db66882", want, 32);
    assert_memory_equal(t.data, want, 32);
    t = record(2, 1, 1, "inter.pem");
    unhex("70e377494a1f76ffbabe5a2fa168ec353fa5a597b4fdcef366dc879ea819c0f6", want, 32);
    assert_memory_equal(t.data, want, 32);
    /* Matching type 0: the SHA-512 of the full data, marked full. */
    cert_der("leaf.pem", &cert);
    spki_der(&cert, &spki);
    t = record(3, 1, 0, "leaf.pem");
    assert_int_equal(t.full, 1);
    assert_int_equal(t.len, 64);
    assert_int_equal(tm__sha512(spki.b, spki.len, want), TM_OK);
    assert_memory_equal(t.data, want, 64);
    t = record(3, 0, 0, "leaf.pem");
    assert_int_equal(tm__sha512(cert.b, cert.len, want), TM_OK);
    assert_memory_equal(t.data, want, 64);
}

/* ---- DANE-EE (3) ---------------------------------------------------------- */

static void ee_every_selector_and_matching_type(void **state)
{
    static const char *const leaves[] = { "leaf.pem", "leaf-rsa.pem" };
    char *pem;
    unsigned sel, mtype;
    size_t i;
    (void)state;

    for (i = 0; i < 2; i++) {
        pem = chain_of(leaves[i], "inter.pem", END);
        for (sel = 0; sel <= 1; sel++)
            for (mtype = 0; mtype <= 2; mtype++) {
                tm_tlsa t = record(3, sel, mtype, leaves[i]);
                int rc = check(&t, 1, mx_name, 1, pem);
                if (rc != 0)
                    fail_msg("%s: DANE-EE %u %u: %d, expected 0", leaves[i], sel, mtype, rc);
            }
        free(pem);
    }
    /* The leaf alone, no chain behind it. */
    pem = chain_of("leaf.pem", END);
    {
        tm_tlsa t = record(3, 1, 1, "leaf.pem");
        assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    }
    free(pem);
}

static void ee_ignores_names_and_dates(void **state)
{
    static const char *const other[] = { "elsewhere.example" };
    char *pem = chain_of("selfsigned.pem", END);
    unsigned sel, mtype;
    (void)state;

    /* Expired in 2001, self-signed, named wrong.invalid: DANE-EE matches
     * it all the same (RFC 7672 3.1.1), with any reference names or
     * none. */
    for (sel = 0; sel <= 1; sel++)
        for (mtype = 0; mtype <= 2; mtype++) {
            tm_tlsa t = record(3, sel, mtype, "selfsigned.pem");
            assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
            assert_int_equal(check(&t, 1, other, 1, pem), 0);
            assert_int_equal(check(&t, 1, NULL, 0, pem), 0);
        }
    free(pem);
    /* An expired leaf under a CA, and a leaf of another CA. */
    pem = chain_of("expired.pem", "inter.pem", END);
    {
        tm_tlsa t = record(3, 0, 1, "expired.pem");
        assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    }
    free(pem);
    pem = chain_of("other-leaf.pem", "other-ca.pem", END);
    {
        tm_tlsa t = record(3, 1, 2, "other-leaf.pem");
        assert_int_equal(check(&t, 1, other, 1, pem), 0);
    }
    free(pem);
}

static void ee_mismatch(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", "root.pem", END);
    tm_tlsa t;
    unsigned sel, mtype;
    size_t i;
    (void)state;

    /* One bit off, in the first, a middle and the last byte. */
    for (sel = 0; sel <= 1; sel++)
        for (mtype = 0; mtype <= 2; mtype++) {
            static const size_t at[] = { 0, 17, 31 };
            for (i = 0; i < 3; i++) {
                t = record(3, sel, mtype, "leaf.pem");
                t.data[mtype == 1 ? at[i] : at[i] * 2 + 1] ^= 0x01;
                assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
            }
        }
    /* The right digest under the wrong selector. */
    t = record(3, 1, 1, "leaf.pem");
    t.selector = 0;
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(3, 0, 2, "leaf.pem");
    t.selector = 1;
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    /* Another certificate of the chain is no end entity. */
    t = record(3, 0, 1, "inter.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(3, 1, 1, "root.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    /* Another leaf with the same name. */
    t = record(3, 1, 1, "leaf-rsa.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    free(pem);
}

/* ---- DANE-TA (2) ---------------------------------------------------------- */

static void ta_intermediate(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", END);
    char *rsa = chain_of("leaf-rsa.pem", "inter.pem", END);
    unsigned sel, mtype;
    (void)state;

    for (sel = 0; sel <= 1; sel++)
        for (mtype = 0; mtype <= 2; mtype++) {
            tm_tlsa t = record(2, sel, mtype, "inter.pem");
            int rc = check(&t, 1, mx_name, 1, pem);
            if (rc != 0)
                fail_msg("DANE-TA %u %u on the intermediate: %d, expected 0", sel, mtype, rc);
            assert_int_equal(check(&t, 1, mx_name, 1, rsa), 0);
        }
    free(pem);
    free(rsa);
}

static void ta_root_in_chain(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", "root.pem", END);
    char *without = chain_of("leaf.pem", "inter.pem", END);
    unsigned sel, mtype;
    (void)state;

    for (sel = 0; sel <= 1; sel++)
        for (mtype = 0; mtype <= 2; mtype++) {
            tm_tlsa t = record(2, sel, mtype, "root.pem");
            int rc = check(&t, 1, mx_name, 1, pem);
            if (rc != 0)
                fail_msg("DANE-TA %u %u on the root: %d, expected 0", sel, mtype, rc);
            /* The server must send the TA (RFC 7672 3.1.2): a root it
             * leaves out anchors nothing. */
            assert_int_equal(check(&t, 1, mx_name, 1, without), TM_ETLS);
        }
    /* The intermediate is a TA too when the root follows it. */
    {
        tm_tlsa t = record(2, 1, 1, "inter.pem");
        assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    }
    free(pem);
    free(without);
}

static void ta_names(void **state)
{
    static const char *const wrong[] = { "mx2.example.test" };
    static const char *const parent[] = { "example.test" };
    static const char *const second[] = { "mail.example.org", "mx.example.test" };
    static const char *const upper[] = { "MX.Example.TEST" };
    static const char *const deeper[] = { "a.mx.example.test" };
    char *pem = chain_of("leaf.pem", "inter.pem", END);
    tm_tlsa t = record(2, 1, 1, "inter.pem");
    (void)state;

    assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    assert_int_equal(check(&t, 1, second, 2, pem), 0);
    assert_int_equal(check(&t, 1, upper, 1, pem), 0); /* DNS names ignore case */
    assert_int_equal(check(&t, 1, wrong, 1, pem), TM_ETLS);
    assert_int_equal(check(&t, 1, parent, 1, pem), TM_ETLS);
    assert_int_equal(check(&t, 1, deeper, 1, pem), TM_ETLS);
    assert_int_equal(check(&t, 1, second, 1, pem), TM_ETLS); /* only the first given */
    assert_int_equal(check(&t, 1, NULL, 0, pem), TM_ETLS);   /* no name to match */
    free(pem);

    /* The CN when there is no subjectAltName. */
    pem = chain_of("leaf-cn.pem", "inter.pem", END);
    assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    assert_int_equal(check(&t, 1, wrong, 1, pem), TM_ETLS);
    free(pem);
}

static void ta_wildcard(void **state)
{
    static const char *const mx2[] = { "mx2.example.test" };
    static const char *const two_labels[] = { "a.b.example.test" };
    static const char *const bare[] = { "example.test" };
    static const char *const other[] = { "mx.example.org" };
    char *pem = chain_of("wildcard.pem", "inter.pem", END);
    tm_tlsa t = record(2, 0, 1, "inter.pem");
    (void)state;

    /* *.example.test covers one label, no more, no less. */
    assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    assert_int_equal(check(&t, 1, mx2, 1, pem), 0);
    assert_int_equal(check(&t, 1, two_labels, 1, pem), TM_ETLS);
    assert_int_equal(check(&t, 1, bare, 1, pem), TM_ETLS);
    assert_int_equal(check(&t, 1, other, 1, pem), TM_ETLS);
    free(pem);
}

static void ta_dates(void **state)
{
    char *pem = chain_of("expired.pem", "inter.pem", END);
    char *ss = chain_of("selfsigned.pem", END);
    tm_tlsa t;
    (void)state;

    /* The right TA, the right name, a leaf that expired in 2001. */
    t = record(2, 1, 1, "inter.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(2, 0, 2, "inter.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    /* The expired self-signed leaf as its own TA: not as DANE-TA. */
    t = record(2, 0, 1, "selfsigned.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, ss), TM_ETLS);
    free(pem);
    free(ss);
}

static void ta_not_on_the_path(void **state)
{
    char *pem;
    tm_tlsa t;
    (void)state;

    /* The TA is not in the chain at all. */
    pem = chain_of("leaf.pem", "inter.pem", END);
    t = record(2, 0, 1, "other-ca.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    free(pem);

    /* The TA is in the chain, but the leaf was not issued under it. */
    pem = chain_of("other-leaf.pem", "inter.pem", "root.pem", END);
    t = record(2, 1, 1, "inter.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(2, 0, 2, "root.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    free(pem);

    /* A CA sent along that the leaf does not chain to. */
    pem = chain_of("leaf.pem", "inter.pem", "other-ca.pem", END);
    t = record(2, 1, 1, "other-ca.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(2, 1, 1, "inter.pem"); /* the same chain does verify to its own TA */
    assert_int_equal(check(&t, 1, mx_name, 1, pem), 0);
    free(pem);

    /* The leaf itself under DANE-TA: a TA is a certificate above it. */
    pem = chain_of("leaf.pem", "inter.pem", END);
    t = record(2, 0, 1, "leaf.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    t = record(2, 1, 2, "leaf.pem");
    assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    free(pem);
}

/* ---- several records, odd records, odd chains ---------------------------- */

static void which_record(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", "root.pem", END);
    tm_tlsa t[4];
    (void)state;

    /* Only the second matches. */
    t[0] = record(3, 1, 1, "leaf-rsa.pem");
    t[1] = record(3, 1, 1, "leaf.pem");
    assert_int_equal(check(t, 2, mx_name, 1, pem), 1);
    /* ... and it is not seen when n stops before it. */
    assert_int_equal(check(t, 1, mx_name, 1, pem), TM_ETLS);
    /* A DANE-TA record after three that do not match. */
    t[0] = record(3, 0, 2, "inter.pem");
    t[1] = record(2, 1, 1, "other-ca.pem");
    t[2] = record(3, 1, 0, "leaf-rsa.pem");
    t[3] = record(2, 0, 0, "inter.pem");
    assert_int_equal(check(t, 4, mx_name, 1, pem), 3);
    /* A DANE-TA record whose name check fails, then a DANE-EE one that
     * matches whatever the name. */
    {
        static const char *const wrong[] = { "wrong.example.test" };
        t[0] = record(2, 1, 1, "inter.pem");
        t[1] = record(3, 0, 1, "leaf.pem");
        assert_int_equal(check(t, 2, wrong, 1, pem), 1);
        assert_int_equal(check(t, 1, wrong, 1, pem), TM_ETLS);
    }
    free(pem);
}

static void unexpected_usage(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", "root.pem", END);
    static const unsigned usages[] = { 0, 1, 4, 255 };
    size_t i;
    (void)state;

    /* Right data, a usage other than DANE-TA or DANE-EE: never a match
     * (PKIX-TA and PKIX-EE are not for SMTP, RFC 7672 3.1.3). */
    for (i = 0; i < sizeof usages / sizeof usages[0]; i++) {
        tm_tlsa t[3];
        t[0] = record(3, 1, 1, "leaf.pem");
        t[0].usage = (unsigned char)usages[i];
        t[1] = record(2, 1, 1, "inter.pem");
        t[1].usage = (unsigned char)usages[i];
        t[2] = record(2, 0, 2, "root.pem");
        t[2].usage = (unsigned char)usages[i];
        assert_int_equal(check(t, 3, mx_name, 1, pem), TM_ETLS);
    }
    /* Likewise an unknown selector or matching type. */
    {
        tm_tlsa t = record(3, 1, 1, "leaf.pem");
        t.selector = 2;
        assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
        t = record(3, 1, 1, "leaf.pem");
        t.mtype = 3;
        assert_int_equal(check(&t, 1, mx_name, 1, pem), TM_ETLS);
    }
    free(pem);
}

static void no_records(void **state)
{
    char *pem = chain_of("leaf.pem", "inter.pem", "root.pem", END);
    tm_tlsa t = record(3, 1, 1, "leaf.pem");
    (void)state;

    assert_int_equal(check(&t, 0, mx_name, 1, pem), TM_ETLS);
    assert_int_equal(check(NULL, 0, mx_name, 1, pem), TM_ETLS);
    free(pem);
}

static void bad_chains(void **state)
{
    static const char garbage[] = "this is not a certificate\n";
    static const char broken[] = "-----BEGIN CERTIFICATE-----\n"
                                 "MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnRl\n"
                                 "-----END CERTIFICATE-----\n";
    tm_tlsa t = record(3, 1, 1, "leaf.pem");
    char *pem, *cut, *exact;
    size_t len;
    (void)state;

    assert_int_equal(check(&t, 1, mx_name, 1, garbage), TM_EINVAL);
    assert_int_equal(check(&t, 1, mx_name, 1, broken), TM_EINVAL);
    assert_int_equal(check(&t, 1, mx_name, 1, ""), TM_EINVAL);
    assert_int_equal(tm__dane_check_chain(&t, 1, mx_name, 1, NULL, 0), TM_EINVAL);

    /* The leaf cut in the middle of its base64. */
    pem = chain_of("leaf.pem", END);
    len = strlen(pem);
    cut = malloc(len);
    assert_non_null(cut);
    memcpy(cut, pem, len / 2);
    strcpy(cut + len / 2, "\n-----END CERTIFICATE-----\n");
    assert_int_equal(check(&t, 1, mx_name, 1, cut), TM_EINVAL);
    free(cut);

    /* len bounds the text: no NUL after it is needed, and none is read
     * (ASan and valgrind see a read past it). */
    exact = malloc(len);
    assert_non_null(exact);
    memcpy(exact, pem, len);
    assert_int_equal(tm__dane_check_chain(&t, 1, mx_name, 1, exact, len), 0);
    /* ... and what lies beyond len is not part of the chain. */
    assert_int_equal(tm__dane_check_chain(&t, 1, mx_name, 1, pem, len / 2), TM_EINVAL);
    free(exact);
    free(pem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(helpers_agree_with_openssl),
        cmocka_unit_test(ee_every_selector_and_matching_type),
        cmocka_unit_test(ee_ignores_names_and_dates),
        cmocka_unit_test(ee_mismatch),
        cmocka_unit_test(ta_intermediate),
        cmocka_unit_test(ta_root_in_chain),
        cmocka_unit_test(ta_names),
        cmocka_unit_test(ta_wildcard),
        cmocka_unit_test(ta_dates),
        cmocka_unit_test(ta_not_on_the_path),
        cmocka_unit_test(which_record),
        cmocka_unit_test(unexpected_usage),
        cmocka_unit_test(no_records),
        cmocka_unit_test(bad_chains),
    };
    return cmocka_run_group_tests_name("dane", tests, NULL, NULL);
}
