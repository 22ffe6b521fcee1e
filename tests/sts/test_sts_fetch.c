/*
 * test_sts_fetch.c - the MTA-STS policy fetch (tm__sts_fetch, lib/sts_fetch.c)
 * against a real HTTPS server on loopback: tests/peers/sts_https.py, which
 * runs this program with its ports and CA in the environment (TM_STS_*).
 * The Host header picks the server's answer, so each case fetches the
 * policy of <scenario>.test at the server's fixed address.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

static const char *addr;
static unsigned int port, badname_port, untrusted_port;
static tm_context *ctx;       /* trusts the test CA */
static tm_context *other_ctx; /* trusts only an unrelated CA */

static const char *need_env(const char *name)
{
    const char *v = getenv(name);

    if (!v || !*v) {
        fprintf(stderr, "environment variable %s is not set: run through "
                        "tests/peers/sts_https.py run --dir DIR -- %s\n", name, "test_sts_fetch");
        exit(1);
    }
    return v;
}

static tm_context *context_with_ca(const char *ca_file)
{
    tm_context_options o;
    tm_context *c = NULL;

    if (tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION) != TM_OK)
        return NULL;
    o.ca_file = ca_file;
    return tm_context_new(&c, &o) == TM_OK ? c : NULL;
}

/* Fetches the policy of domain at (addr, p) within ms; the result code.  The
 * reason is printed, and must be set exactly when the fetch failed. */
static int fetch(const tm_context *c, const char *domain, unsigned int p, unsigned int ms,
                 tm_sts_policy *pol)
{
    char why[512];
    int64_t t0 = tm__now_ms();
    int rc;

    memset(why, 'x', sizeof why);
    rc = tm__sts_fetch(c, domain, addr, p, tm__deadline(ms), pol, why, sizeof why);
    fprintf(stderr, "  %-16s port %-5u -> %-14s %lld ms  %s\n", domain, p, tm_strerror(rc),
            (long long)(tm__now_ms() - t0), why);
    assert_non_null(memchr(why, '\0', sizeof why));
    if (rc == TM_OK)
        assert_string_equal(why, "");
    else
        assert_true(why[0] != '\0');
    return rc;
}

static void ok_content_length(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "ok.test", port, 5000, &p), TM_OK);
    assert_int_equal(p.mode, TM_STS_ENFORCE);
    assert_int_equal(p.max_age, 86400);
    assert_int_equal(p.nmx, 2);
    assert_string_equal(p.mx[0].name, "mail.ok.test");
    assert_int_equal(p.mx[0].wildcard, 0);
    assert_string_equal(p.mx[1].name, "mx.ok.test");
    assert_int_equal(p.mx[1].wildcard, 1);
    assert_int_equal(p.mx_dropped, 0);
    assert_true(tm__sts_mx_match(&p, "a.mx.ok.test"));
    assert_false(tm__sts_mx_match(&p, "other.ok.test"));
}

static void ok_chunked(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "chunked.test", port, 5000, &p), TM_OK);
    assert_int_equal(p.mode, TM_STS_TESTING);
    assert_int_equal(p.max_age, 604800);
    assert_int_equal(p.nmx, 3);
    assert_string_equal(p.mx[0].name, "mx1.chunked.test");
    assert_string_equal(p.mx[1].name, "mx2.chunked.test");
    assert_string_equal(p.mx[2].name, "chunked.test");
    assert_int_equal(p.mx[2].wildcard, 1);
}

static void ok_close_delimited(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "close.test", port, 5000, &p), TM_OK);
    assert_int_equal(p.mode, TM_STS_ENFORCE);
    assert_int_equal(p.max_age, 1234567);
    assert_int_equal(p.nmx, 1);
    assert_string_equal(p.mx[0].name, "mx.close.test");
}

/*
 * The same close-delimited policy, but the connection ends with a bare TCP
 * close, no TLS close_notify: what arrived parses, and must not count.
 * Bug caught: a policy truncated by someone on the path (who can cut the
 * TCP connection but not forge a close_notify) accepted as complete.
 */
static void cut_without_close_notify(void **state)
{
    tm_sts_policy p;
    char why[TM_TEXT_MAX];

    (void)state;
    assert_int_equal(fetch(ctx, "cut.test", port, 5000, &p), TM_EPROTOCOL);
    assert_int_equal(tm__sts_fetch(ctx, "cut.test", addr, port, tm__deadline(5000), &p, why,
                                   sizeof why),
                     TM_EPROTOCOL);
    assert_non_null(strstr(why, "close_notify"));
}

/* Answers that are no policy: the domain has none (TM_ENOTFOUND). */
static void refused_answers(void **state)
{
    static const char *const domains[] = { "notfound.test", "redirect.test", "html.test",
                                           "badsyntax.test", "unknown.test" };
    tm_sts_policy p;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof domains / sizeof *domains; i++) {
        /* unknown.test: the certificate does not name mta-sts.unknown.test */
        int want = strcmp(domains[i], "unknown.test") == 0 ? TM_ETLS : TM_ENOTFOUND;
        assert_int_equal(fetch(ctx, domains[i], port, 5000, &p), want);
        assert_int_equal(p.mode, 0);
        assert_int_equal(p.nmx, 0);
    }
}

static void oversize_body(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "big.test", port, 5000, &p), TM_EPROTOCOL);
}

static void stalled_server(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "slow.test", port, 1500, &p), TM_ETIMEOUT);
}

static void name_mismatch(void **state)
{
    tm_sts_policy p;

    (void)state;
    assert_int_equal(fetch(ctx, "ok.test", badname_port, 5000, &p), TM_ETLS);
}

static void untrusted_issuer(void **state)
{
    tm_sts_policy p;

    (void)state;
    /* The right name from a CA outside the store ... */
    assert_int_equal(fetch(ctx, "ok.test", untrusted_port, 5000, &p), TM_ETLS);
    /* ... and the server's certificate with a store holding another CA. */
    assert_int_equal(fetch(other_ctx, "ok.test", port, 5000, &p), TM_ETLS);
}

static void nothing_listens(void **state)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    tm_sts_policy p;
    int fd;

    (void)state;
    /* A port bound and not listening: refused, and no one else takes it. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, addr, &sa.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    assert_int_equal(fetch(ctx, "ok.test", ntohs(sa.sin_port), 5000, &p), TM_ECONNECT);
    close(fd);
}

/* The server still answers after all that. */
static void ok_again(void **state)
{
    ok_content_length(state);
}

/*
 * Out of memory at each of the fetch's allocations in turn: an error, no
 * crash and no leak (under ASan and valgrind), then a fetch that works.
 * Bug caught: a path that leaks the socket, the TLS state or the buffer
 * when an allocation fails.
 */
static void out_of_memory(void **state)
{
    tm_sts_policy p;
    char why[TM_TEXT_MAX];
    unsigned long n;
    int rc = TM_ENOMEM;

    (void)state;
    for (n = 1; n < 32 && rc != TM_OK; n++) {
        tm__test_alloc_fail_at(n);
        rc = tm__sts_fetch(ctx, "ok.test", addr, port, tm__deadline(5000), &p, why, sizeof why);
        tm__test_alloc_fail_at(0);
        assert_true(rc == TM_OK || rc == TM_ENOMEM || rc == TM_ETLS);
    }
    assert_int_equal(rc, TM_OK);
    assert_true(n > 2); /* at least one allocation failed first */
    ok_content_length(state);
}

static unsigned int port_env(const char *name)
{
    long v = strtol(need_env(name), NULL, 10);

    if (v <= 0 || v > 65535) {
        fprintf(stderr, "%s is not a port\n", name);
        exit(1);
    }
    return (unsigned int)v;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ok_content_length),
        cmocka_unit_test(ok_chunked),
        cmocka_unit_test(ok_close_delimited),
        cmocka_unit_test(cut_without_close_notify),
        cmocka_unit_test(refused_answers),
        cmocka_unit_test(oversize_body),
        cmocka_unit_test(stalled_server),
        cmocka_unit_test(name_mismatch),
        cmocka_unit_test(untrusted_issuer),
        cmocka_unit_test(nothing_listens),
        cmocka_unit_test(ok_again),
        cmocka_unit_test(out_of_memory),
    };
    int rc;

    addr = need_env("TM_STS_HTTPS_ADDR");
    port = port_env("TM_STS_HTTPS_PORT");
    badname_port = port_env("TM_STS_HTTPS_BADNAME_PORT");
    untrusted_port = port_env("TM_STS_HTTPS_UNTRUSTED_PORT");
    ctx = context_with_ca(need_env("TM_STS_CA"));
    other_ctx = context_with_ca(need_env("TM_STS_OTHER_CA"));
    if (!ctx || !other_ctx) {
        fprintf(stderr, "tm_context_new failed\n");
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    tm_context_free(other_ctx);
    tm_context_free(ctx);
    return rc;
}
