/*
 * test_mx.c - delivery to domains, not hosts: MX lookup through dnsmasq on
 * loopback, RFC 5321/7505 rules, fail-over under each policy, against the
 * real Postfix listeners (each MX host on its own 127.0.0.x, one port;
 * tests/peers/peers.py).  Hosts that refuse in their greeting are
 * test_mx_hostile.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "peers.h"

static tm_context *ctx;
/* The recipient's outcome of the last send_to. */
static tm_rcpt_status last_rcpt[1];

static tm_context *make_ctx(const char *dns_env, unsigned int max_mx)
{
    tm_context_options o;
    tm_context *c = NULL;
    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.ca_file = need_env("TM_TEST_CA");
    o.dns_server = need_env(dns_env);
    o.port = (unsigned int)atoi(need_env("TM_TEST_PORT"));
    o.helo_name = "client.tm.test";
    o.command_timeout_ms = 5000;
    o.max_mx = max_mx;
    assert_int_equal(tm_context_new(&c, &o), TM_OK);
    return c;
}

static int group_setup(void **state)
{
    (void)state;
    ctx = make_ctx("TM_TEST_DNS", 0);
    return ctx ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tm_context_free(ctx);
    return 0;
}

/* Delivers to a fresh local part at domain; returns tm_deliver's code and
 * leaves the local part in local. */
static int send_to(tm_context *c, const char *domain, const tm_policy *p, tm_delivery_status *st,
                   char *local, size_t local_size)
{
    char to_addr[256], body[256];
    const char *to[1] = { to_addr };
    tm_message m = TM_MESSAGE_INIT;
    int rc;

    PEERS_STATUS(*st);
    unique_local(local, local_size, "mx");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, domain);
    snprintf(body, sizeof body, "Subject: to %s\r\n\r\nvia MX\r\n", domain);
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    m.rcpt_status = last_rcpt;
    m.rcpt_status_cap = 1;
    rc = tm_deliver(c, &m, p, NULL, st);
    print_message("%s: rc=%d result=%s mx=%s[%s] attempts=%u tls=%d verified=%d tls-error=%s "
                  "desc=%s\n",
                  domain, rc, tm_result_name(st->result), st->mx_host, st->mx_address,
                  st->attempt_no, st->tls, st->cert_verified, st->tls_error, st->description);
    return rc;
}

static void arrived(const char *domain, const char *local)
{
    char *got = maildir_wait(domain, local, 1, 10000);
    assert_non_null(got);
    free(got);
}

static void not_arrived(const char *domain, const char *local)
{
    sleep_ms(200);
    assert_int_equal(maildir_count(domain, local), 0);
}

/* dead (5) -> valid (10) -> plain (20): the dead one is skipped. */
static void multi_failover(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "multi.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_string_equal(st.mx_address, "127.0.0.2");
    assert_int_equal(st.attempt_no, 2);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    arrived("multi.tm.test", local);
}

/* max_mx bounds the walk: only the dead host is tried. */
static void max_mx_bound(void **state)
{
    tm_context *c = make_ctx("TM_TEST_DNS", 1);
    tm_delivery_status st;
    char local[64];
    int rc;
    (void)state;

    rc = send_to(c, "multi.tm.test", NULL, &st, local, sizeof local);
    assert_int_equal(rc, TM_ECONNECT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.attempt_no, 1);
    tm_context_free(c);
    not_arrived("multi.tm.test", local);
}

/* plain (10) -> valid (20): opportunistic takes the first, require_tls
 * leaves it for the second. */
static void plainfirst_policies(void **state)
{
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "plainfirst.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-plain.tm.test");
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_NOT_OFFERED);
    arrived("plainfirst.tm.test", local);

    p.require_tls = TM_ON;
    assert_int_equal(send_to(ctx, "plainfirst.tm.test", &p, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.attempt_no, 2);
    arrived("plainfirst.tm.test", local);
}

/* selfsigned (10) -> valid (20) under each policy. */
static void badcert_policies(void **state)
{
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    char local[64];
    (void)state;

    /* Default: plaintext on a fresh connection to the first MX. */
    assert_int_equal(send_to(ctx, "badcert.tm.test", &p, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-selfsigned.tm.test");
    assert_int_equal(st.tls, 0);
    assert_int_equal(st.cert_verified, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
    arrived("badcert.tm.test", local);

    /* require_tls: the first MX is left for the verified second. */
    p.require_tls = TM_ON;
    assert_int_equal(send_to(ctx, "badcert.tm.test", &p, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    arrived("badcert.tm.test", local);

    /* require_tls + skip_verify: the first MX over unverified TLS. */
    p.skip_verify = TM_ON;
    assert_int_equal(send_to(ctx, "badcert.tm.test", &p, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-selfsigned.tm.test");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 0);
    arrived("badcert.tm.test", local);
}

/* require_tls and no MX with TLS at all: deferred, nothing arrives. */
static void plain_only_required(void **state)
{
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    char local[64];
    (void)state;

    p.require_tls = TM_ON;
    assert_int_equal(send_to(ctx, "plain.tm.test", &p, &st, local, sizeof local), TM_ETLSREQUIRED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(last_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_NOT_OFFERED);
    not_arrived("plain.tm.test", local);
}

static void null_mx(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "nullmx.tm.test", NULL, &st, local, sizeof local), TM_ENULLMX);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_string_equal(st.enhanced_code, "5.1.10");
    assert_int_equal(st.attempt_no, 0);
    assert_int_equal(last_rcpt[0].result, TM_RESULT_BOUNCED);
}

static void nxdomain(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "nosuch.tm.test", NULL, &st, local, sizeof local),
                     TM_ENODOMAIN);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.attempt_no, 0);
}

/* No MX: the domain's own address (implicit MX).  The certificate is for
 * mx-valid.tm.test, not the domain, so it does not verify. */
static void implicit_mx(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "implicit.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "implicit.tm.test");
    assert_string_equal(st.mx_address, "127.0.0.2");
    assert_int_equal(st.cert_verified, 0);
    arrived("implicit.tm.test", local);
}

/* An MX target that is a CNAME: followed for the address, but the name
 * checked against the certificate stays the one in the MX record. */
static void cname_target(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "cname.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "alias.tm.test");
    assert_string_equal(st.mx_address, "127.0.0.2");
    assert_int_equal(st.cert_verified, 0);
    assert_int_equal(st.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
    arrived("cname.tm.test", local);
}

/* MX hosts without a usable address are skipped. */
static void unusable_hosts(void **state)
{
    tm_delivery_status st;
    char local[64];
    (void)state;

    assert_int_equal(send_to(ctx, "noaddr.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.attempt_no, 1);
    arrived("noaddr.tm.test", local);

    assert_int_equal(send_to(ctx, "zero.tm.test", NULL, &st, local, sizeof local), TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.attempt_no, 1);
    arrived("zero.tm.test", local);
}

/* Equal preferences: both hosts take mail over many deliveries. */
static void equal_preference(void **state)
{
    tm_delivery_status st;
    char local[64];
    int valid = 0, wild = 0, i;
    (void)state;

    for (i = 0; i < 24 && (valid == 0 || wild == 0 || i < 8); i++) {
        assert_int_equal(send_to(ctx, "equal.tm.test", NULL, &st, local, sizeof local), TM_OK);
        assert_int_equal(st.cert_verified, 1);
        valid += strcmp(st.mx_host, "mx-valid.tm.test") == 0;
        wild += strcmp(st.mx_host, "mx.wild.tm.test") == 0;
    }
    print_message("equal preference: mx-valid %d, mx.wild %d\n", valid, wild);
    assert_true(valid > 0);
    assert_true(wild > 0);
}

/* SERVFAIL and a server that never answers defer, with no connection and
 * no fallback to A records. */
static void dns_failures(void **state)
{
    static const char *const envs[] = { "TM_TEST_DNS_SERVFAIL", "TM_TEST_DNS_TIMEOUT" };
    size_t i;
    (void)state;

    for (i = 0; i < 2; i++) {
        tm_context *c = make_ctx(envs[i], 0);
        tm_delivery_status st;
        char local[64];

        assert_int_equal(send_to(c, "valid.tm.test", NULL, &st, local, sizeof local), TM_EDNS);
        assert_int_equal(st.result, TM_RESULT_DEFERRED);
        assert_int_equal(st.attempt_no, 0);
        assert_true(st.session_seconds < 30);
        tm_context_free(c);
        not_arrived("valid.tm.test", local);
    }
}

/* tm_session_open by domain, then tm_starttls walks on under require_tls. */
static void session_walks_mx(void **state)
{
    tm_policy p = TM_POLICY_INIT;
    tm_delivery_status st;
    tm_session *s = NULL;
    (void)state;

    PEERS_STATUS(st);
    assert_int_equal(tm_session_open(&s, ctx, "plainfirst.tm.test", NULL, &st), TM_OK);
    assert_string_equal(st.mx_host, "mx-plain.tm.test");
    p.require_tls = TM_ON;
    assert_int_equal(tm_starttls(s, &p, &st), TM_OK);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    tm_session_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(multi_failover),
        cmocka_unit_test(max_mx_bound),
        cmocka_unit_test(plainfirst_policies),
        cmocka_unit_test(badcert_policies),
        cmocka_unit_test(plain_only_required),
        cmocka_unit_test(null_mx),
        cmocka_unit_test(nxdomain),
        cmocka_unit_test(implicit_mx),
        cmocka_unit_test(cname_target),
        cmocka_unit_test(unusable_hosts),
        cmocka_unit_test(equal_preference),
        cmocka_unit_test(dns_failures),
        cmocka_unit_test(session_walks_mx),
    };
    return cmocka_run_group_tests_name("mx", tests, group_setup, group_teardown);
}
