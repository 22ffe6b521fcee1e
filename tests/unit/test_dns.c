/*
 * test_dns.c - the DNS answer parsers on canned answers, including
 * truncated and malicious ones (compression loops, lengths past the end,
 * wrong types, unusable addresses); TLSA records (usable ones, the AD
 * bit, CNAME chains); the header's RCODE and AD bit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <string.h>

#include "internal.h"

typedef struct msg {
    unsigned char b[1024];
    int len;
} msg;

static void put8(msg *m, unsigned v)
{
    m->b[m->len++] = (unsigned char)v;
}

static void put16(msg *m, unsigned v)
{
    put8(m, v >> 8);
    put8(m, v & 0xff);
}

static void put_name(msg *m, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        put8(m, (unsigned)n);
        memcpy(m->b + m->len, name, n);
        m->len += (int)n;
        name += n + (dot != NULL);
    }
    put8(m, 0);
}

/* Header and question; `an` answers follow. */
static void begin(msg *m, const char *qname, unsigned qtype, unsigned an)
{
    m->len = 0;
    put16(m, 0x1234);
    put16(m, 0x8180);
    put16(m, 1);
    put16(m, an);
    put16(m, 0);
    put16(m, 0);
    put_name(m, qname);
    put16(m, qtype);
    put16(m, 1);
}

/* RR header with the owner as a pointer to the question name (offset 12). */
static void rr(msg *m, unsigned type, unsigned rdlen)
{
    put16(m, 0xc00c);
    put16(m, type);
    put16(m, 1);
    put16(m, 0);
    put16(m, 300);
    put16(m, rdlen);
}

static void mx(msg *m, unsigned pref, const char *target)
{
    msg t = { { 0 }, 0 };
    put_name(&t, target);
    rr(m, 15, (unsigned)t.len + 2);
    put16(m, pref);
    memcpy(m->b + m->len, t.b, (size_t)t.len);
    m->len += t.len;
}

static void mx_records(void **state)
{
    msg m;
    tm_mx out[4];
    int null_mx;
    (void)state;

    begin(&m, "example.org", 15, 2);
    mx(&m, 20, "mx2.example.org");
    mx(&m, 10, "mx1.example.org");
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 4, &null_mx), 2);
    assert_int_equal(null_mx, 0);
    assert_string_equal(out[0].host, "mx2.example.org");
    assert_int_equal(out[0].pref, 20);
    assert_string_equal(out[1].host, "mx1.example.org");
    assert_int_equal(out[1].pref, 10);
    /* max bounds the output. */
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 1, &null_mx), 1);
}

static void mx_compressed_target(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx;
    (void)state;

    /* Target "mx" + pointer to the question name. */
    begin(&m, "example.org", 15, 1);
    rr(&m, 15, 2 + 3 + 2);
    put16(&m, 5);
    put8(&m, 2);
    put8(&m, 'm');
    put8(&m, 'x');
    put16(&m, 0xc00c);
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), 1);
    assert_string_equal(out[0].host, "mx.example.org");
}

static void null_mx_record(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx;
    (void)state;

    begin(&m, "example.org", 15, 1);
    mx(&m, 0, "");
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), 0);
    assert_int_equal(null_mx, 1);
}

static void compression_loop(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx, at;
    (void)state;

    begin(&m, "example.org", 15, 1);
    rr(&m, 15, 4);
    put16(&m, 10);
    at = m.len;
    put16(&m, 0xc000 | (unsigned)at); /* points at itself */
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), TM_EDNS);
}

static void pointer_past_end(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx;
    (void)state;

    begin(&m, "example.org", 15, 1);
    rr(&m, 15, 4);
    put16(&m, 10);
    put16(&m, 0xc000 | 0x3ff);
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), TM_EDNS);
}

static void truncated(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx, cut;
    (void)state;

    begin(&m, "example.org", 15, 1);
    mx(&m, 10, "mx1.example.org");
    /* Every strict prefix of the message is refused or yields nothing. */
    for (cut = 0; cut < m.len; cut++) {
        int n = tm__dns_parse_mx(m.b, cut, out, 2, &null_mx);
        assert_true(n == TM_EDNS || n == 0);
    }
    /* rdlength past the end. */
    m.b[m.len - 21] = 0x01; /* rdlength 0x01ff: 2 + 17 bytes are there */
    m.b[m.len - 20] = 0xff;
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), TM_EDNS);
    assert_int_equal(tm__dns_parse_mx(NULL, 0, out, 2, &null_mx), TM_EDNS);
}

static void short_mx_rdata(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx;
    (void)state;

    begin(&m, "example.org", 15, 1);
    rr(&m, 15, 2);
    put16(&m, 10);
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), TM_EDNS);
}

static void wrong_types_ignored(void **state)
{
    msg m;
    tm_mx out[2];
    int null_mx;
    (void)state;

    begin(&m, "example.org", 15, 2);
    rr(&m, 16, 4); /* TXT */
    put8(&m, 3);
    put8(&m, 'a');
    put8(&m, 'b');
    put8(&m, 'c');
    mx(&m, 5, "mx.example.org");
    assert_int_equal(tm__dns_parse_mx(m.b, m.len, out, 2, &null_mx), 1);
    assert_string_equal(out[0].host, "mx.example.org");
}

static void a_records(void **state)
{
    msg m;
    tm_addr out[4];
    static const unsigned char addrs[][4] = {
        { 127, 0, 0, 2 }, { 0, 0, 0, 0 }, { 224, 0, 0, 1 }, { 255, 255, 255, 255 }, { 192, 0, 2, 7 }
    };
    size_t i;
    char text[64];
    (void)state;

    begin(&m, "mx.example.org", 1, 5);
    for (i = 0; i < 5; i++) {
        rr(&m, 1, 4);
        memcpy(m.b + m.len, addrs[i], 4);
        m.len += 4;
    }
    assert_int_equal(tm__dns_parse_addr(m.b, m.len, 1, 2525, out, 4), 2);
    tm__net_ntop((struct sockaddr *)&out[0].sa, text, sizeof text);
    assert_string_equal(text, "127.0.0.2");
    assert_int_equal(ntohs(((struct sockaddr_in *)&out[0].sa)->sin_port), 2525);
    tm__net_ntop((struct sockaddr *)&out[1].sa, text, sizeof text);
    assert_string_equal(text, "192.0.2.7");
}

static void aaaa_records(void **state)
{
    msg m;
    tm_addr out[4];
    unsigned char any[16] = { 0 }, one[16] = { 0 };
    char text[64];
    (void)state;

    one[15] = 1;
    begin(&m, "mx.example.org", 28, 2);
    rr(&m, 28, 16);
    memcpy(m.b + m.len, any, 16);
    m.len += 16;
    rr(&m, 28, 16);
    memcpy(m.b + m.len, one, 16);
    m.len += 16;
    assert_int_equal(tm__dns_parse_addr(m.b, m.len, 28, 25, out, 4), 1);
    tm__net_ntop((struct sockaddr *)&out[0].sa, text, sizeof text);
    assert_string_equal(text, "::1");
}

static void bad_a_length(void **state)
{
    msg m;
    tm_addr out[2];
    (void)state;

    begin(&m, "mx.example.org", 1, 1);
    rr(&m, 1, 5);
    put16(&m, 0x7f00);
    put16(&m, 0x0002);
    put8(&m, 9);
    assert_int_equal(tm__dns_parse_addr(m.b, m.len, 1, 25, out, 2), TM_EDNS);
}

static void cname_then_a(void **state)
{
    msg m;
    tm_addr out[2];
    msg t = { { 0 }, 0 };
    (void)state;

    put_name(&t, "real.example.org");
    begin(&m, "alias.example.org", 1, 2);
    rr(&m, 5, (unsigned)t.len);
    memcpy(m.b + m.len, t.b, (size_t)t.len);
    m.len += t.len;
    rr(&m, 1, 4);
    put16(&m, 0x7f00);
    put16(&m, 0x0002);
    assert_int_equal(tm__dns_parse_addr(m.b, m.len, 1, 25, out, 2), 1);
}

/* ---- TLSA (RFC 6698, usable for SMTP per RFC 7672) ----------------------- */

/* A TLSA record at the question's name: usage selector mtype + data. */
static void tlsa(msg *m, unsigned usage, unsigned sel, unsigned mtype, const unsigned char *d,
                 size_t n)
{
    rr(m, 52, (unsigned)(3 + n));
    put8(m, usage);
    put8(m, sel);
    put8(m, mtype);
    memcpy(m->b + m->len, d, n);
    m->len += (int)n;
}

static void set_ad(msg *m)
{
    m->b[3] |= 0x20;
}

static void tlsa_usable_and_unusable(void **state)
{
    unsigned char d32[32], d64[64], full[300];
    tm_tlsa out[8];
    msg m;
    int unusable, ad;
    (void)state;

    memset(d32, 0xab, sizeof d32);
    memset(d64, 0xcd, sizeof d64);
    memset(full, 0x30, sizeof full);
    begin(&m, "_25._tcp.mx.example.org", 52, 9);
    tlsa(&m, 3, 1, 1, d32, 32);    /* DANE-EE SPKI SHA-256: usable */
    tlsa(&m, 2, 0, 2, d64, 64);    /* DANE-TA cert SHA-512: usable */
    tlsa(&m, 3, 0, 0, full, 300);  /* DANE-EE full certificate: usable, kept as SHA-512 */
    tlsa(&m, 1, 1, 1, d32, 32);    /* PKIX-EE: unusable for SMTP */
    tlsa(&m, 0, 0, 1, d32, 32);    /* PKIX-TA: unusable */
    tlsa(&m, 3, 2, 1, d32, 32);    /* unknown selector */
    tlsa(&m, 3, 1, 3, d32, 32);    /* unknown matching type */
    tlsa(&m, 3, 1, 1, d32, 31);    /* SHA-256 of the wrong length */
    tlsa(&m, 3, 1, 2, d32, 32);    /* SHA-512 of the wrong length */
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 8, &unusable, &ad), 3);
    assert_int_equal(unusable, 6);
    assert_int_equal(ad, 0);
    assert_int_equal(out[0].usage, 3);
    assert_int_equal(out[0].selector, 1);
    assert_int_equal(out[0].mtype, 1);
    assert_int_equal(out[0].full, 0);
    assert_int_equal(out[0].len, 32);
    assert_memory_equal(out[0].data, d32, 32);
    assert_int_equal(out[1].usage, 2);
    assert_int_equal(out[1].len, 64);
    assert_memory_equal(out[1].data, d64, 64);
    assert_int_equal(out[2].mtype, 0);
    assert_int_equal(out[2].full, 1);
    assert_int_equal(out[2].len, 64);
    {
        unsigned char h[64];
        assert_int_equal(tm__sha512(full, sizeof full, h), TM_OK);
        assert_memory_equal(out[2].data, h, 64);
    }
    /* max bounds what is stored; the count of unusable ones is the same. */
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 1, &unusable, &ad), 1);
    assert_int_equal(unusable, 6);
}

static void tlsa_ad_bit(void **state)
{
    unsigned char d32[32] = { 1 };
    tm_tlsa out[2];
    msg m;
    int unusable, ad;
    (void)state;

    begin(&m, "_25._tcp.mx.example.org", 52, 1);
    tlsa(&m, 3, 1, 1, d32, 32);
    set_ad(&m);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), 1);
    assert_int_equal(ad, 1);
    /* No answer (NODATA), AD set: 0 records, ad 1. */
    begin(&m, "_25._tcp.mx.example.org", 52, 0);
    set_ad(&m);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), 0);
    assert_int_equal(ad, 1);
    assert_int_equal(unusable, 0);
}

/* A CNAME record from the name at `owner_at` (an offset) to `target`. */
static int cname_at(msg *m, unsigned owner_at, const char *target)
{
    msg t = { { 0 }, 0 };
    int at;

    put_name(&t, target);
    put16(m, 0xc000 | owner_at);
    put16(m, 5);
    put16(m, 1);
    put16(m, 0);
    put16(m, 300);
    put16(m, (unsigned)t.len);
    at = m->len;
    memcpy(m->b + m->len, t.b, (size_t)t.len);
    m->len += t.len;
    return at;
}

/* A TLSA record whose owner is the name at `owner_at`. */
/* A 3 1 1 TLSA record after its owner: type, class, TTL, RDATA. */
static void tlsa_rest(msg *m, const unsigned char *d32)
{
    put16(m, 52);
    put16(m, 1);
    put16(m, 0);
    put16(m, 300);
    put16(m, 35);
    put8(m, 3);
    put8(m, 1);
    put8(m, 1);
    memcpy(m->b + m->len, d32, 32);
    m->len += 32;
}

/* ... its owner a pointer to owner_at, or a name written out. */
static void tlsa_at(msg *m, unsigned owner_at, const unsigned char *d32)
{
    put16(m, 0xc000 | owner_at);
    tlsa_rest(m, d32);
}

static void tlsa_named(msg *m, const char *owner, const unsigned char *d32)
{
    put_name(m, owner);
    tlsa_rest(m, d32);
}

static void tlsa_after_cname_chain(void **state)
{
    unsigned char a[32], b[32];
    tm_tlsa out[4];
    msg m;
    int unusable, ad, t1, t2;
    (void)state;

    memset(a, 0xaa, sizeof a);
    memset(b, 0xbb, sizeof b);
    /* _25._tcp.alias -> _25._tcp.mid -> _25._tcp.mx; records at the end of
     * the chain count, a record at the question's own name does not (it
     * cannot coexist with a CNAME), nor one at an intermediate name. */
    begin(&m, "_25._tcp.alias.example.org", 52, 5);
    t1 = cname_at(&m, 12, "_25._tcp.mid.example.org");
    t2 = cname_at(&m, (unsigned)t1, "_25._tcp.mx.example.org");
    tlsa_at(&m, (unsigned)t2, a);
    tlsa_at(&m, (unsigned)t1, b);
    tlsa_at(&m, 12, b);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 1);
    assert_memory_equal(out[0].data, a, 32);

    /* Out of order: the TLSA first, then the CNAMEs. */
    begin(&m, "_25._tcp.alias.example.org", 52, 2);
    tlsa_at(&m, 12, b); /* at the alias: not the end of the chain */
    cname_at(&m, 12, "_25._tcp.mx.example.org");
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 0);
}

static void tlsa_cname_loop_and_malformed(void **state)
{
    tm_tlsa out[2];
    msg m;
    int unusable, ad, t1;
    (void)state;

    /* a -> b -> a: a loop is malformed. */
    begin(&m, "_25._tcp.a.example.org", 52, 2);
    t1 = cname_at(&m, 12, "_25._tcp.b.example.org");
    cname_at(&m, (unsigned)t1, "_25._tcp.a.example.org");
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), TM_EDNS);

    /* RDATA shorter than usage, selector and matching type. */
    begin(&m, "_25._tcp.mx.example.org", 52, 1);
    rr(&m, 52, 2);
    put16(&m, 0x0301);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), TM_EDNS);

    /* RDATA length past the end of the message. */
    begin(&m, "_25._tcp.mx.example.org", 52, 1);
    rr(&m, 52, 200);
    put8(&m, 3);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), TM_EDNS);

    /* No question: malformed for this parser. */
    m.len = 0;
    put16(&m, 0x1234);
    put16(&m, 0x8180);
    put16(&m, 0);
    put16(&m, 0);
    put16(&m, 0);
    put16(&m, 0);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 2, &unusable, &ad), TM_EDNS);
    assert_int_equal(tm__dns_parse_tlsa(NULL, 0, out, 2, &unusable, &ad), TM_EDNS);
}

static void tlsa_full_data_long(void **state)
{
    static unsigned char spki[600];
    unsigned char h[64], d32[32];
    tm_tlsa out[4];
    msg m;
    int unusable, ad;
    size_t i;
    (void)state;

    /* Matching type 0 with data longer than 255 bytes (a two-byte
     * rdlength), and with data exactly as long as a digest: kept as the
     * SHA-512 of the data, never as the data itself. */
    for (i = 0; i < sizeof spki; i++)
        spki[i] = (unsigned char)(i * 7 + 1);
    memset(d32, 0x5a, sizeof d32);
    begin(&m, "_25._tcp.mx.example.org", 52, 3);
    tlsa(&m, 2, 1, 0, spki, sizeof spki);
    tlsa(&m, 3, 1, 0, d32, 32);
    tlsa(&m, 3, 0, 0, spki, 64);
    set_ad(&m);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 3);
    assert_int_equal(unusable, 0);
    assert_int_equal(ad, 1);
    assert_int_equal(out[0].usage, 2);
    assert_int_equal(out[0].selector, 1);
    assert_int_equal(out[0].mtype, 0);
    assert_int_equal(out[0].full, 1);
    assert_int_equal(out[0].len, 64);
    assert_int_equal(tm__sha512(spki, sizeof spki, h), TM_OK);
    assert_memory_equal(out[0].data, h, 64);
    assert_int_equal(out[1].full, 1);
    assert_int_equal(out[1].len, 64);
    assert_int_equal(tm__sha512(d32, 32, h), TM_OK);
    assert_memory_equal(out[1].data, h, 64);
    assert_int_equal(out[2].len, 64);
    assert_int_equal(tm__sha512(spki, 64, h), TM_OK);
    assert_memory_equal(out[2].data, h, 64);
    assert_memory_not_equal(out[2].data, spki, 64);

    /* Matching type 0 with no data at all is unusable. */
    begin(&m, "_25._tcp.mx.example.org", 52, 1);
    tlsa(&m, 3, 1, 0, d32, 0);
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 0);
    assert_int_equal(unusable, 1);
}

static void tlsa_owner_rules(void **state)
{
    unsigned char a[32], b[32];
    tm_tlsa out[4];
    msg m;
    int unusable, ad, owner;
    (void)state;

    memset(a, 0xaa, sizeof a);
    memset(b, 0xbb, sizeof b);
    /* The owner compared without regard to case, written out in full
     * (no compression pointer); records at other names, and of another
     * class, are not the host's. */
    begin(&m, "_25._tcp.mx.example.org", 52, 4);
    tlsa_named(&m, "_25._TCP.MX.Example.ORG", a);
    owner = m.len;
    tlsa_named(&m, "_25._tcp.mx2.example.org", b);
    tlsa_at(&m, (unsigned)owner, b); /* mx2 again, through a pointer */
    tlsa(&m, 3, 1, 1, b, 32);
    m.b[m.len - 35 - 8] = 0x00; /* ... its class: 3 (CH), not IN */
    m.b[m.len - 35 - 7] = 0x03;
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 1);
    assert_memory_equal(out[0].data, a, 32);
    assert_int_equal(unusable, 0);

    /* After a CNAME: the target's records, whatever the case of either. */
    begin(&m, "_25._tcp.alias.example.org", 52, 2);
    cname_at(&m, 12, "_25._tcp.MX.example.org");
    put_name(&m, "_25._tcp.mx.EXAMPLE.org");
    put16(&m, 52);
    put16(&m, 1);
    put16(&m, 0);
    put16(&m, 300);
    put16(&m, 35);
    put8(&m, 2);
    put8(&m, 0);
    put8(&m, 1);
    memcpy(m.b + m.len, b, 32);
    m.len += 32;
    assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 1);
    assert_int_equal(out[0].usage, 2);
    assert_memory_equal(out[0].data, b, 32);

    /* A long chain is followed; a longer one is refused (the bound is the
     * parser's: seven links are well within it, nine past it). */
    {
        static const char *const hop[] = {
            "_25._tcp.h1.example.org", "_25._tcp.h2.example.org", "_25._tcp.h3.example.org",
            "_25._tcp.h4.example.org", "_25._tcp.h5.example.org", "_25._tcp.h6.example.org",
            "_25._tcp.h7.example.org", "_25._tcp.h8.example.org", "_25._tcp.h9.example.org",
        };
        int links, at, i;
        for (links = 7; links <= 9; links += 2) {
            begin(&m, "_25._tcp.h0.example.org", 52, (unsigned)links + 1);
            at = 12;
            for (i = 0; i < links; i++)
                at = cname_at(&m, (unsigned)at, hop[i]);
            tlsa_at(&m, (unsigned)at, a);
            if (links == 7) {
                assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), 1);
                assert_memory_equal(out[0].data, a, 32);
            } else {
                assert_int_equal(tm__dns_parse_tlsa(m.b, m.len, out, 4, &unusable, &ad), TM_EDNS);
            }
        }
    }
}

/* ---- the header: RCODE and AD ------------------------------------------- */

static void header_rcode_and_ad(void **state)
{
    static const struct {
        unsigned char flags2; /* the second flags byte: RA Z AD CD RCODE */
        int rcode, ad;
    } rows[] = {
        { 0x80, 0, 0 },  /* NOERROR, RA */
        { 0xa0, 0, 1 },  /* NOERROR, AD */
        { 0x82, 2, 0 },  /* SERVFAIL */
        { 0xa3, 3, 1 },  /* NXDOMAIN, signed denial */
        { 0x83, 3, 0 },  /* NXDOMAIN, insecure */
        { 0x85, 5, 0 },  /* REFUSED */
        { 0x90, 0, 0 },  /* CD is not AD */
        { 0x5f, 15, 0 }, /* every bit but AD and RA */
        { 0xff, 15, 1 },
        { 0x20, 0, 1 },
        { 0x00, 0, 0 },
    };
    msg m;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int rcode = -1, ad = -1;
        begin(&m, "_25._tcp.mx.example.org", 52, 0);
        m.b[3] = rows[i].flags2;
        assert_int_equal(tm__dns_header(m.b, m.len, &rcode, &ad), TM_OK);
        if (rcode != rows[i].rcode || ad != rows[i].ad)
            fail_msg("flags %02x: rcode %d ad %d, expected %d %d", rows[i].flags2, rcode, ad,
                     rows[i].rcode, rows[i].ad);
        /* The first flags byte (QR, opcode, AA, TC, RD) does not leak in. */
        m.b[2] = 0xff;
        assert_int_equal(tm__dns_header(m.b, m.len, &rcode, &ad), TM_OK);
        assert_int_equal(rcode, rows[i].rcode);
        assert_int_equal(ad, rows[i].ad);
    }
}

static void header_short(void **state)
{
    unsigned char b[12];
    int rcode, ad, len;
    (void)state;

    memset(b, 0, sizeof b);
    b[2] = 0x81;
    b[3] = 0xa2; /* SERVFAIL with AD */
    /* Exactly a header is enough; anything shorter is malformed. */
    assert_int_equal(tm__dns_header(b, 12, &rcode, &ad), TM_OK);
    assert_int_equal(rcode, 2);
    assert_int_equal(ad, 1);
    for (len = 0; len < 12; len++)
        assert_int_equal(tm__dns_header(b, len, &rcode, &ad), TM_EDNS);
    assert_int_equal(tm__dns_header(b, -1, &rcode, &ad), TM_EDNS);
    assert_int_equal(tm__dns_header(NULL, 0, &rcode, &ad), TM_EDNS);
}

/* ---- MTA-STS TXT records (RFC 8461 3.1) ---------------------------------- */

/* A TXT record at the question's name made of the given strings. */
static void txt(msg *m, const char *const *strs, size_t n)
{
    size_t i, rdlen = 0;

    for (i = 0; i < n; i++)
        rdlen += 1 + strlen(strs[i]);
    rr(m, 16, (unsigned)rdlen);
    for (i = 0; i < n; i++) {
        size_t l = strlen(strs[i]);
        put8(m, (unsigned)l);
        memcpy(m->b + m->len, strs[i], l);
        m->len += (int)l;
    }
}

static void sts_txt_records(void **state)
{
    static const char *const spf[] = { "v=spf1 -all" };
    static const char *const sts[] = { "v=STSv1; id=20190429T010101;" };
    static const char *const split[] = { "v=STSv1; ", "id=abc" };
    static const char *const other[] = { "v=STSv1; id=def" };
    static const char *const bad[] = { "v=STSv1; id=not-valid" };
    char id[TM_STS_ID_MAX];
    int several;
    msg m;
    (void)state;

    /* One STS record among others. */
    begin(&m, "_mta-sts.example.com", 16, 2);
    txt(&m, spf, 1);
    txt(&m, sts, 1);
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), 1);
    assert_string_equal(id, "20190429T010101");
    assert_int_equal(several, 0);
    /* Strings of one record are joined. */
    begin(&m, "_mta-sts.example.com", 16, 1);
    txt(&m, split, 2);
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), 1);
    assert_string_equal(id, "abc");
    /* Two STS records: no policy. */
    begin(&m, "_mta-sts.example.com", 16, 2);
    txt(&m, sts, 1);
    txt(&m, other, 1);
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), 0);
    assert_int_equal(several, 1);
    assert_string_equal(id, "");
    /* None, or an invalid one: no policy. */
    begin(&m, "_mta-sts.example.com", 16, 1);
    txt(&m, spf, 1);
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), 0);
    assert_int_equal(several, 0);
    begin(&m, "_mta-sts.example.com", 16, 1);
    txt(&m, bad, 1);
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), 0);
    /* A string length past the record: malformed. */
    begin(&m, "_mta-sts.example.com", 16, 1);
    rr(&m, 16, 4);
    put8(&m, 10);
    put8(&m, 'v');
    put8(&m, '=');
    put8(&m, 'S');
    assert_int_equal(tm__dns_parse_sts(m.b, m.len, id, &several), TM_EDNS);
    assert_int_equal(tm__dns_parse_sts(NULL, 0, id, &several), TM_EDNS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mx_records),
        cmocka_unit_test(mx_compressed_target),
        cmocka_unit_test(null_mx_record),
        cmocka_unit_test(compression_loop),
        cmocka_unit_test(pointer_past_end),
        cmocka_unit_test(truncated),
        cmocka_unit_test(short_mx_rdata),
        cmocka_unit_test(wrong_types_ignored),
        cmocka_unit_test(a_records),
        cmocka_unit_test(aaaa_records),
        cmocka_unit_test(bad_a_length),
        cmocka_unit_test(cname_then_a),
        cmocka_unit_test(tlsa_usable_and_unusable),
        cmocka_unit_test(tlsa_ad_bit),
        cmocka_unit_test(tlsa_after_cname_chain),
        cmocka_unit_test(tlsa_cname_loop_and_malformed),
        cmocka_unit_test(tlsa_full_data_long),
        cmocka_unit_test(tlsa_owner_rules),
        cmocka_unit_test(header_rcode_and_ad),
        cmocka_unit_test(header_short),
        cmocka_unit_test(sts_txt_records),
    };
    return cmocka_run_group_tests_name("dns", tests, NULL, NULL);
}
