/*
 * test_sts.c - the MTA-STS parsers (lib/sts.c): the TXT record of RFC 8461
 * 3.1, the policy text of 3.2, and MX pattern matching of 4.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

static int txt(const char *s, char id[TM_STS_ID_MAX])
{
    return tm__sts_parse_txt(s, strlen(s), id);
}

static void txt_records(void **state)
{
    static const struct {
        const char *text;
        const char *id; /* NULL: refused */
    } cases[] = {
        { "v=STSv1; id=20160831085700Z;", "20160831085700Z" },
        { "v=STSv1; id=20160831085700Z", "20160831085700Z" },
        { "v=STSv1;id=abc", "abc" },
        { "v=STSv1 ; id=abc ;", "abc" },
        { "v = STSv1; id=abc", NULL },  /* no blanks around "=" */
        { "v=STSv1; id = abc", NULL },
        { "v=STSv1; id=abc; x-y.z_1=\x21:<>~", "abc" },
        { "v=STSv1; id=abc; a234567890123456789012345678901234=x", NULL }, /* name > 32 */
        { "v=STSv1; ext=1; id=x9; other=y", "x9" },
        { "v=STSv1;\tid=T", "T" },
        { "v=STSv1; id=12345678901234567890123456789012", "12345678901234567890123456789012" },
        { "v=STSv1; id=123456789012345678901234567890123", NULL }, /* 33 characters */
        { "v=STSv1; id=ab-c", NULL },   /* not ALPHA / DIGIT */
        { "v=STSv1; id=", NULL },
        { "v=STSv1; id=a; id=b", NULL }, /* twice */
        { "v=STSv1", NULL },            /* no id */
        { "v=STSv1;", NULL },
        { "id=abc; v=STSv1", NULL },    /* the version comes first */
        { "v=STSv2; id=abc", NULL },
        { "v=stsv1; id=abc", NULL },    /* case-sensitive */
        { " v=STSv1; id=abc", NULL },
        { "v=STSv1 id=abc", NULL },     /* no separator */
        { "v=STSv1; id=abc;; x=1", NULL },
        { "v=STSv1; =abc", NULL },
        { "v=STSv1; id abc", NULL },
        { "", NULL },
        { "v=spf1 -all", NULL },
    };
    char id[TM_STS_ID_MAX];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = txt(cases[i].text, id);
        if (cases[i].id) {
            assert_int_equal(rc, TM_OK);
            assert_string_equal(id, cases[i].id);
        } else {
            if (rc != TM_ESYNTAX)
                print_error("accepted: %s\n", cases[i].text);
            assert_int_equal(rc, TM_ESYNTAX);
            assert_string_equal(id, "");
        }
    }
    /* Bytes past len are not read; NULL is refused. */
    assert_int_equal(tm__sts_parse_txt("v=STSv1; id=abcXYZ", 15, id), TM_OK);
    assert_string_equal(id, "abc");
    assert_int_equal(tm__sts_parse_txt(NULL, 0, id), TM_ESYNTAX);
}

static int policy(const char *s, tm_sts_policy *p)
{
    return tm__sts_parse_policy(s, strlen(s), p);
}

static void policy_rfc_example(void **state)
{
    tm_sts_policy p;
    (void)state;

    assert_int_equal(policy("version: STSv1\r\n"
                            "mode: enforce\r\n"
                            "mx: mail.example.com\r\n"
                            "mx: *.example.net\r\n"
                            "mx: backupmx.example.com\r\n"
                            "max_age: 604800\r\n",
                            &p),
                     TM_OK);
    assert_int_equal(p.mode, TM_STS_ENFORCE);
    assert_int_equal(p.max_age, 604800);
    assert_int_equal(p.nmx, 3);
    assert_string_equal(p.mx[0].name, "mail.example.com");
    assert_int_equal(p.mx[0].wildcard, 0);
    assert_string_equal(p.mx[1].name, "example.net");
    assert_int_equal(p.mx[1].wildcard, 1);
    assert_string_equal(p.mx[2].name, "backupmx.example.com");
}

static void policy_forms(void **state)
{
    tm_sts_policy p;
    (void)state;

    /* LF only, keys in any order, no final line end, blanks around ":". */
    assert_int_equal(policy("mode:testing\nmax_age : 86400\nmx:\t mx.example.org \nversion: STSv1",
                            &p),
                     TM_OK);
    assert_int_equal(p.mode, TM_STS_TESTING);
    assert_int_equal(p.max_age, 86400);
    assert_int_equal(p.nmx, 1);
    assert_string_equal(p.mx[0].name, "mx.example.org");
    /* mode none needs no mx. */
    assert_int_equal(policy("version: STSv1\nmode: none\nmax_age: 0\n", &p), TM_OK);
    assert_int_equal(p.mode, TM_STS_NONE);
    assert_int_equal(p.nmx, 0);
    /* Unknown keys are ignored. */
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 5\n"
                            "report_uri: https://x/\nfoo: bar baz\n",
                            &p),
                     TM_OK);
    /* max_age is capped at one year; ten digits at most. */
    assert_int_equal(policy("version: STSv1\nmode: none\nmax_age: 9999999999\n", &p), TM_OK);
    assert_int_equal(p.max_age, TM_STS_MAX_AGE_MAX);
    assert_int_equal(policy("version: STSv1\nmode: none\nmax_age: 31557600\n", &p), TM_OK);
    assert_int_equal(p.max_age, 31557600);
    /* More patterns than kept: counted. */
    {
        char text[4096];
        int i, n = 0;
        n += snprintf(text + n, sizeof text - (size_t)n, "version: STSv1\nmode: enforce\n");
        for (i = 0; i < TM_STS_MX_MAX + 3; i++)
            n += snprintf(text + n, sizeof text - (size_t)n, "mx: mx%d.example.com\n", i);
        snprintf(text + n, sizeof text - (size_t)n, "max_age: 60\n");
        assert_int_equal(policy(text, &p), TM_OK);
        assert_int_equal(p.nmx, TM_STS_MX_MAX);
        assert_int_equal(p.mx_dropped, 3);
    }
}

static void policy_refused(void **state)
{
    static const char *const bad[] = {
        "mode: enforce\nmx: a.example\nmax_age: 5\n",                       /* no version */
        "version: STSv1\nmx: a.example\nmax_age: 5\n",                      /* no mode */
        "version: STSv1\nmode: enforce\nmx: a.example\n",                   /* no max_age */
        "version: STSv1\nmode: enforce\nmax_age: 5\n",                      /* enforce, no mx */
        "version: STSv1\nmode: testing\nmax_age: 5\n",                      /* testing, no mx */
        "version: STSv2\nmode: none\nmax_age: 5\n",
        "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 5\n",       /* case */
        "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 5\n",
        "version: STSv1\nmode: none\nmax_age: -5\n",
        "version: STSv1\nmode: none\nmax_age: 12345678901\n",               /* 11 digits */
        "version: STSv1\nmode: none\nmax_age: 5s\n",
        "version: STSv1\nmode: none\nmax_age:\n",
        "version: STSv1\nmode: none\nmode: enforce\nmax_age: 5\n",          /* twice */
        "version: STSv1\nversion: STSv1\nmode: none\nmax_age: 5\n",
        "version: STSv1\nmode: none\nmax_age: 5\nmax_age: 6\n",
        "version: STSv1\nmode: enforce\nmx: *\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: *.\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: .example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a.example.\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx: a example\nmax_age: 5\n",
        "version: STSv1\nmode: enforce\nmx:\nmax_age: 5\n",
        "version: STSv1\nmode none\nmax_age: 5\n",                          /* no colon */
        "version: STSv1\r\rmode: none\nmax_age: 5\n",                        /* a bare CR */
        "<html>404</html>",
        "",
    };
    tm_sts_policy p;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (policy(bad[i], &p) != TM_ESYNTAX)
            print_error("accepted: %s\n", bad[i]);
        assert_int_equal(policy(bad[i], &p), TM_ESYNTAX);
    }
    /* A NUL inside the text. */
    assert_int_equal(tm__sts_parse_policy("version: STSv1\nmode: none\0\nmax_age: 5\n", 36, &p),
                     TM_ESYNTAX);
    /* A label of 64 octets. */
    {
        char text[256], label[65];
        memset(label, 'a', 64);
        label[64] = '\0';
        snprintf(text, sizeof text, "version: STSv1\nmode: enforce\nmx: %s.example\nmax_age: 5\n",
                 label);
        assert_int_equal(policy(text, &p), TM_ESYNTAX);
        label[63] = '\0';
        snprintf(text, sizeof text, "version: STSv1\nmode: enforce\nmx: %s.example\nmax_age: 5\n",
                 label);
        assert_int_equal(policy(text, &p), TM_OK);
    }
}

static void mx_matching(void **state)
{
    tm_sts_policy p;
    (void)state;

    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: mail.example.com\n"
                            "mx: *.example.net\nmax_age: 5\n",
                            &p),
                     TM_OK);
    assert_true(tm__sts_mx_match(&p, "mail.example.com"));
    assert_true(tm__sts_mx_match(&p, "MAIL.Example.COM"));
    assert_true(tm__sts_mx_match(&p, "mail.example.com."));
    assert_false(tm__sts_mx_match(&p, "mail.example.com.."));
    assert_false(tm__sts_mx_match(&p, "xmail.example.com"));
    assert_false(tm__sts_mx_match(&p, "a.mail.example.com"));
    assert_false(tm__sts_mx_match(&p, "example.com"));
    /* The wildcard stands for exactly one label (RFC 8461 4.1). */
    assert_true(tm__sts_mx_match(&p, "mx1.example.net"));
    assert_true(tm__sts_mx_match(&p, "MX1.EXAMPLE.NET."));
    assert_false(tm__sts_mx_match(&p, "example.net"));
    assert_false(tm__sts_mx_match(&p, ".example.net"));
    assert_false(tm__sts_mx_match(&p, "a.b.example.net"));
    assert_false(tm__sts_mx_match(&p, "mx1xexample.net"));
    assert_false(tm__sts_mx_match(&p, "mx1.example.network"));
    assert_false(tm__sts_mx_match(&p, ""));
    assert_false(tm__sts_mx_match(&p, NULL));
}

/* ---- the HTTP response of the fetch ------------------------------------ */

static char body[TM_STS_BODY_MAX];

static int http(const char *s, int eof, tm_http_response *r)
{
    return tm__http_parse_response(s, strlen(s), eof, body, sizeof body, r);
}

static void http_bodies(void **state)
{
    tm_http_response r;
    (void)state;

    /* Content-Length: complete only with every byte. */
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Length: 5\r\n\r\nabcde", 0, &r), 1);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.text_plain, 1);
    assert_int_equal(r.body_len, 5);
    assert_memory_equal(body, "abcde", 5);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 0, &r), 0);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", 1, &r),
                     TM_EPROTOCOL);
    /* Chunked, with an extension and a trailer; LF-only lines. */
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Type: text/plain\r\n\r\n"
                          "4;ext=1\r\nvers\r\n6\r\nion: S\r\n0\r\nX-Trailer: 1\r\n\r\n", 0, &r), 1);
    assert_int_equal(r.body_len, 10);
    assert_memory_equal(body, "version: S", 10);
    assert_int_equal(http("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n", 0, &r), 1);
    assert_int_equal(r.body_len, 3);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 0, &r),
                     0);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", 1, &r),
                     TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, &r),
                     TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
                          0, &r),
                     TM_EPROTOCOL);
    /* Delimited by the close. */
    assert_int_equal(http("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nmode: none\n", 0, &r),
                     0);
    assert_int_equal(http("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nmode: none\n", 1, &r),
                     1);
    assert_int_equal(r.body_len, 11);
}

static void http_refused(void **state)
{
    static char big[TM_STS_BODY_MAX + 200];
    tm_http_response r;
    (void)state;

    /* Not 200: complete at the head, nothing read. */
    assert_int_equal(http("HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\n", 0, &r), 1);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(http("HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\n\r\n", 0, &r), 1);
    assert_int_equal(r.status, 301);
    /* The content type is read, not judged here. */
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n",
                          0, &r), 1);
    assert_int_equal(r.text_plain, 0);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Type: text/plainer\r\nContent-Length: 0\r\n\r\n",
                          0, &r), 1);
    assert_int_equal(r.text_plain, 0);
    /* Malformed. */
    assert_int_equal(http("HTTP/2 200\r\n\r\n", 0, &r), TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 2000 OK\r\n\r\n", 0, &r), TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 20 OK\r\n\r\n", 0, &r), TM_EPROTOCOL);
    assert_int_equal(http("SMTP 220 hello\r\n\r\n", 0, &r), TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 0, &r),
                     TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, &r), TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, &r),
                     TM_EPROTOCOL);
    assert_int_equal(http("HTTP/1.1 200 OK\r\n", 1, &r), TM_EPROTOCOL); /* closed in the head */
    assert_int_equal(http("HTTP/1.1 200 OK\r\n", 0, &r), 0);
    /* Too big: the body cap, the head cap. */
    assert_int_equal(http("HTTP/1.1 200 OK\r\nContent-Length: 65537\r\n\r\n", 0, &r), TM_EPROTOCOL);
    memset(big, 'a', sizeof big - 1);
    memcpy(big, "HTTP/1.1 200 OK\r\n\r\n", 19);
    assert_int_equal(http(big, 1, &r), TM_EPROTOCOL);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    assert_int_equal(http(big, 0, &r), TM_EPROTOCOL);
}

/* ---- the cache ------------------------------------------------------------ */

static tm_sts_entry entry(const char *domain, const char *id, int64_t fetched, const char *text)
{
    tm_sts_entry e;

    memset(&e, 0, sizeof e);
    snprintf(e.domain, sizeof e.domain, "%s", domain);
    snprintf(e.id, sizeof e.id, "%s", id);
    assert_int_equal(tm__sts_parse_policy(text, strlen(text), &e.policy), TM_OK);
    e.fetched = fetched;
    e.expires = fetched + (int64_t)e.policy.max_age;
    e.used = fetched;
    return e;
}

static void cache_get_put_expire_evict(void **state)
{
    static const char *const enforce =
        "version: STSv1\nmode: enforce\nmx: mx.a.example\nmx: *.b.example\nmax_age: 100\n";
    tm_sts_cache c;
    tm_sts_entry e;
    const tm_sts_entry *got;
    char name[64];
    int i;
    (void)state;

    tm__sts_cache_init(&c, 3);
    assert_null(tm__sts_cache_get(&c, "a.example", 0));
    e = entry("a.example", "id1", 1000, enforce);
    assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    got = tm__sts_cache_get(&c, "A.EXAMPLE.", 1050);
    assert_non_null(got);
    assert_string_equal(got->id, "id1");
    assert_int_equal(got->policy.mode, TM_STS_ENFORCE);
    /* A new id replaces the entry. */
    e = entry("a.example", "id2", 1060, enforce);
    assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(tm__sts_cache_get(&c, "a.example", 1100)->id, "id2");
    /* max_age runs out: gone. */
    assert_null(tm__sts_cache_get(&c, "a.example", 1160));
    assert_int_equal(c.n, 0);
    /* Full: the least recently used goes. */
    for (i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "d%d.example", i);
        e = entry(name, "x", 2000 + i, enforce);
        assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    }
    assert_non_null(tm__sts_cache_get(&c, "d0.example", 2010)); /* d1 is now the oldest use */
    e = entry("d3.example", "x", 2011, enforce);
    assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    assert_int_equal(c.n, 3);
    assert_null(tm__sts_cache_get(&c, "d1.example", 2012));
    assert_non_null(tm__sts_cache_get(&c, "d0.example", 2012));
    assert_non_null(tm__sts_cache_get(&c, "d2.example", 2012));
    assert_non_null(tm__sts_cache_get(&c, "d3.example", 2012));
    tm__sts_cache_free(&c);
}

static void cache_text_round_trip(void **state)
{
    tm_sts_cache c, d;
    tm_sts_entry e;
    char buf[8192], buf2[8192];
    int n, line = -1;
    (void)state;

    tm__sts_cache_init(&c, 10);
    e = entry("a.example", "20240101", 1000,
              "version: STSv1\nmode: testing\nmx: mx.a.example\nmx: *.b.example\nmax_age: 604800\n");
    assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    e = entry("none.example", "n1", 5, "version: STSv1\nmode: none\nmax_age: 60\n");
    assert_int_equal(tm__sts_cache_put(&c, &e), TM_OK);
    n = tm__sts_cache_format(&c, buf, sizeof buf);
    assert_true(n > 0 && (size_t)n < sizeof buf);
    assert_non_null(strstr(buf, "policy a.example 20240101 1000 605800 1000 testing 604800 "
                                "mx.a.example,*.b.example\n"));
    assert_non_null(strstr(buf, "policy none.example n1 5 65 5 none 60 -\n"));
    assert_int_equal(tm__sts_cache_format(&c, NULL, 0), n);

    tm__sts_cache_init(&d, 10);
    assert_int_equal(tm__sts_cache_parse(buf, (size_t)n, &d, &line), TM_OK);
    assert_int_equal(d.n, 2);
    assert_int_equal(tm__sts_cache_format(&d, buf2, sizeof buf2), n);
    assert_string_equal(buf, buf2);
    assert_true(tm__sts_mx_match(&tm__sts_cache_get(&d, "a.example", 2000)->policy,
                                 "mx1.b.example"));

    /* All or nothing: a bad line keeps the old table and names the line. */
    {
        static const char *const bad[] = {
            "policy a.example id 1 2 3 enforce 60\n",                  /* 8 fields */
            "policy a.example id 1 2 3 enforce 60 mx.a.example extra\n",
            "pol a.example id 1 2 3 enforce 60 mx.a.example\n",
            "policy a..example id 1 2 3 enforce 60 mx.a.example\n",
            "policy a.example bad-id 1 2 3 enforce 60 mx.a.example\n",
            "policy a.example id x 2 3 enforce 60 mx.a.example\n",
            "policy a.example id 1 2 3 strict 60 mx.a.example\n",
            "policy a.example id 1 2 3 enforce 60 -\n",                 /* enforce, no mx */
            "policy a.example id 1 2 3 enforce 60 *.*.a.example\n",
        };
        size_t k;
        for (k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            char text[512];
            snprintf(text, sizeof text, "# saved\n\npolicy ok.example i 1 2 3 none 9 -\n%s",
                     bad[k]);
            line = 0;
            assert_int_equal(tm__sts_cache_parse(text, strlen(text), &d, &line), TM_ESYNTAX);
            assert_int_equal(line, 4);
            assert_int_equal(d.n, 2);
        }
    }
    tm__sts_cache_free(&c);
    tm__sts_cache_free(&d);
}

/* ---- the public cache file functions ---------------------------------------------- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/*
 * tm_sts_cache_load / _list / _save: a valid file loads (expired lines
 * dropped), a file with one bad line changes nothing and names the line,
 * save writes what list says and loads back the same, NULLs are refused.
 * Bug caught: a half-applied load, an expired policy resurrected from a
 * file, a save that loses entries.
 */
static void cache_file_functions(void **state)
{
    char dir[] = "/tmp/tm-sts-unit.XXXXXX", path[128], path2[128], buf[4096], buf2[4096];
    long long future = (long long)tm__now_unix() + 86400;
    tm_context_options o;
    tm_context *ctx = NULL, *ctx2 = NULL;
    char text[1024];
    int line = -1;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cache", dir);
    snprintf(path2, sizeof path2, "%s/saved", dir);
    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.helo_name = "client.example";
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    assert_int_equal(tm_context_new(&ctx2, &o), TM_OK);

    /* Empty to begin with. */
    assert_int_equal(tm_sts_cache_list(ctx, NULL, 0), 0);
    /* Valid: two live entries, one expired (dropped on load). */
    snprintf(text, sizeof text,
             "# comment\n\n"
             "policy example.com abc123 1000 %lld 1000 enforce 86400 mx1.example.com,*.example.net\n"
             "policy old.example id1 1000 2000 1000 enforce 1000 mx.old.example\n"
             "policy none.example n1 1000 %lld 1000 none 86400 -\n",
             future, future);
    write_file(path, text);
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_OK);
    assert_int_equal(line, 0);
    assert_true(tm_sts_cache_list(ctx, buf, sizeof buf) > 0);
    assert_non_null(strstr(buf, "policy example.com abc123 1000 "));
    assert_non_null(strstr(buf, " enforce 86400 mx1.example.com,*.example.net\n"));
    assert_non_null(strstr(buf, "policy none.example n1 "));
    assert_null(strstr(buf, "old.example"));

    /* One bad line: nothing changes, its number reported. */
    snprintf(text, sizeof text,
             "policy fresh.example f1 1000 %lld 1000 testing 600 mx.fresh.example\n"
             "policy bad.example id-with-dash 1000 %lld 1000 enforce 600 mx.bad.example\n",
             future, future);
    write_file(path, text);
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_ESYNTAX);
    assert_int_equal(line, 2);
    assert_true(tm_sts_cache_list(ctx, buf2, sizeof buf2) > 0);
    assert_string_equal(buf, buf2);
    write_file(path, "policy x.example a 1 2 3 sometimes 5 mx.x.example\n");
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_ESYNTAX);
    assert_int_equal(line, 1);

    /* Save, load into another context: the same list. */
    assert_int_equal(tm_sts_cache_save(ctx, path2), TM_OK);
    assert_int_equal(tm_sts_cache_load(ctx2, path2, NULL), TM_OK);
    assert_true(tm_sts_cache_list(ctx2, buf2, sizeof buf2) > 0);
    assert_string_equal(buf, buf2);
    /* snprintf semantics: the whole length, cut to fit. */
    assert_int_equal(tm_sts_cache_list(ctx, buf2, 10), (int)strlen(buf));
    assert_true(strlen(buf2) < 10); /* whole lines only */

    /* Refusals. */
    assert_int_equal(tm_sts_cache_load(NULL, path, NULL), TM_EINVAL);
    assert_int_equal(tm_sts_cache_load(ctx, NULL, NULL), TM_EINVAL);
    assert_int_equal(tm_sts_cache_save(ctx, NULL), TM_EINVAL);
    assert_int_equal(tm_sts_cache_list(NULL, buf, sizeof buf), TM_EINVAL);
    assert_int_equal(tm_sts_cache_list(ctx, NULL, 5), TM_EINVAL);
    snprintf(path, sizeof path, "%s/missing", dir);
    assert_int_equal(tm_sts_cache_load(ctx, path, NULL), TM_EIO);
    snprintf(path, sizeof path, "%s/no/such/dir/file", dir);
    assert_int_equal(tm_sts_cache_save(ctx, path), TM_EIO);

    tm_context_free(ctx);
    tm_context_free(ctx2);
    snprintf(text, sizeof text, "rm -rf '%s'", dir);
    assert_int_equal(system(text), 0);
}

/*
 * Out of memory at every allocation of tm_sts_cache_load, _list and _save:
 * an error, never a crash, and a failed load leaves the cache as it was.
 * Bug caught: a load applied in part when memory ran out halfway.
 */
static void cache_file_out_of_memory(void **state)
{
    char dir[] = "/tmp/tm-sts-oom.XXXXXX", path[128], path2[128], before[4096], after[4096];
    long long future = (long long)tm__now_unix() + 86400;
    tm_context_options o;
    tm_context *ctx = NULL;
    char text[2048];
    unsigned long n;
    int rc, i, failed = 0;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cache", dir);
    snprintf(path2, sizeof path2, "%s/saved", dir);
    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.helo_name = "client.example";
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    /* Eight entries already (the table grows past its first 8 slots). */
    text[0] = '\0';
    for (i = 0; i < 8; i++) {
        size_t len = strlen(text);
        snprintf(text + len, sizeof text - len,
                 "policy d%d.example id%d 1000 %lld 1000 enforce 86400 mx.d%d.example\n", i, i,
                 future, i);
    }
    write_file(path, text);
    assert_int_equal(tm_sts_cache_load(ctx, path, NULL), TM_OK);
    assert_true(tm_sts_cache_list(ctx, before, sizeof before) > 0);
    snprintf(text, sizeof text,
             "policy d0.example other 1000 %lld 1000 none 600 -\n"
             "policy new.example n1 1000 %lld 1000 testing 600 mx.new.example\n",
             future, future);
    write_file(path, text);
    for (n = 1; n < 64; n++) {
        tm__test_alloc_fail_at(n);
        rc = tm_sts_cache_load(ctx, path, NULL);
        tm__test_alloc_fail_at(0);
        if (rc == TM_OK)
            break;
        assert_int_equal(rc, TM_ENOMEM);
        failed++;
        assert_true(tm_sts_cache_list(ctx, after, sizeof after) > 0);
        assert_string_equal(before, after);
    }
    assert_true(failed > 0 && n < 64);
    assert_true(tm_sts_cache_list(ctx, after, sizeof after) > 0);
    assert_non_null(strstr(after, "policy new.example n1 "));
    assert_non_null(strstr(after, "policy d0.example other "));
    for (n = 1; n < 16; n++) {
        tm__test_alloc_fail_at(n);
        rc = tm_sts_cache_save(ctx, path2);
        tm__test_alloc_fail_at(0);
        if (rc == TM_OK)
            break;
        assert_int_equal(rc, TM_ENOMEM);
    }
    assert_int_equal(rc, TM_OK);
    tm_context_free(ctx);
    snprintf(text, sizeof text, "rm -rf '%s'", dir);
    assert_int_equal(system(text), 0);
}

/* An invalid test address for the HTTPS fetch is refused at creation. */
static void context_sts_options(void **state)
{
    tm_context_options o;
    tm_context *ctx = NULL;
    (void)state;

    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.helo_name = "client.example";
    o.sts_https_address = "mta-sts.example.com";
    assert_int_equal(tm_context_new(&ctx, &o), TM_EINVAL);
    assert_null(ctx);
    o.sts_https_address = "127.0.0.1";
    o.sts_https_port = 70000;
    assert_int_equal(tm_context_new(&ctx, &o), TM_EINVAL);
    o.sts_https_port = 8443;
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    tm_context_free(ctx);
    o.sts_https_address = "::1";
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    tm_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(txt_records),
        cmocka_unit_test(policy_rfc_example),
        cmocka_unit_test(policy_forms),
        cmocka_unit_test(policy_refused),
        cmocka_unit_test(mx_matching),
        cmocka_unit_test(http_bodies),
        cmocka_unit_test(http_refused),
        cmocka_unit_test(cache_get_put_expire_evict),
        cmocka_unit_test(cache_text_round_trip),
        cmocka_unit_test(cache_file_functions),
        cmocka_unit_test(cache_file_out_of_memory),
        cmocka_unit_test(context_sts_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
