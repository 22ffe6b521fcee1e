/*
 * test_certificates_postfix.c - the policy truth table end to end against
 * a real Postfix on loopback (tests/peers/peers.py): one listener per
 * certificate case (valid, wrong name, expired, not yet valid, self-signed,
 * wildcard, chain with an intermediate) and one without STARTTLS, under the
 * policies, checked with what actually arrived in Postfix's maildir.  The
 * same certificate cases against the hostile server's TLS, with the SNI
 * checked, are test_certificates.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "peers.h"

#define DOMAIN "example.test"

static tm_context *ctx;

static int group_setup(void **state)
{
    (void)state;
    return peers_context_new(&ctx, 10000);
}

static int group_teardown(void **state)
{
    (void)state;
    tm_context_free(ctx);
    return 0;
}

typedef struct expect {
    int policy_require, policy_skip, policy_keep;
    int rc, result, tls, verified, tls_failure;
    const char *tls_error_has; /* substring of tls-error, or NULL */
} expect;

static const char body_template[] = "From: sender@tm.test\r\n"
                                    "To: %s@" DOMAIN "\r\n"
                                    "Subject: policy case %s\r\n"
                                    "\r\n"
                                    "Hello over %s.\r\n"
                                    ".leading dot\r\n"
                                    "..two dots\r\n"
                                    "last line\r\n";

/* Delivers one message to host under a policy and checks the status and
 * the maildir. */
static void deliver_case(const char *host_env, const expect *e)
{
    char local[64], to_addr[128], body[1024], expected[1024];
    const char *to[1] = { to_addr };
    const char *host = need_env(host_env);
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_policy p = TM_POLICY_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    tm_rcpt_status rcpt[1];
    char *got;
    int rc, i, j;

    unique_local(local, sizeof local, "case");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    snprintf(body, sizeof body, body_template, local, host_env, host);
    so.host = host;
    p.require_tls = e->policy_require;
    p.skip_verify = e->policy_skip;
    p.keep_unverified_tls = e->policy_keep;
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    m.rcpt_status = rcpt;
    m.rcpt_status_cap = 1;

    PEERS_STATUS(st);
    rc = tm_deliver(ctx, &m, &p, &so, &st);
    print_message("%s: rc=%d result=%s tls=%d verified=%d tls-error=%s desc=%s\n", host_env, rc,
                  tm_result_name(st.result), st.tls, st.cert_verified, st.tls_error,
                  st.description);
    assert_int_equal(rc, e->rc);
    assert_int_equal(st.error, e->rc);
    assert_int_equal(st.result, e->result);
    assert_int_equal(st.tls, e->tls);
    assert_int_equal(st.cert_verified, e->verified);
    assert_int_equal(st.tls_failure, e->tls_failure);
    if (e->tls_error_has)
        assert_non_null(strstr(st.tls_error, e->tls_error_has));
    else
        assert_string_equal(st.tls_error, "");
    assert_int_equal(st.rcpt_count, 1);
    assert_int_equal(rcpt[0].result, e->result);
    assert_string_equal(rcpt[0].address, to_addr);

    if (e->result == TM_RESULT_DELIVERED) {
        assert_int_equal(st.transactions, 1);
        assert_int_equal(st.rcpt_delivered, 1);
        assert_string_equal(st.mx_host, host);
        assert_int_equal(st.code, 250);
        assert_true(st.enhanced_code[0] == '2');
        if (st.tls) {
            /* The server chooses: 1.2 with mbedTLS 2.28, 1.3 with 3.6. */
            assert_true(strcmp(st.tls_version, "TLSv1.2") == 0 ||
                        strcmp(st.tls_version, "TLSv1.3") == 0);
            assert_true(st.tls_cipher[0] != '\0');
        }
        got = maildir_wait(DOMAIN, local, 1, 10000);
        assert_non_null(got);
        /* The body, byte for byte (Postfix stores LF line ends, removes
         * the dot-stuffing, and adds Date and Message-Id to the header). */
        for (i = j = 0; body[i]; i++)
            if (body[i] != '\r')
                expected[j++] = body[i];
        expected[j] = '\0';
        assert_non_null(strstr(got, "\nSubject: policy case "));
        assert_true(ends_with(got, strstr(expected, "\n\n")));
        free(got);
    } else {
        sleep_ms(300);
        assert_int_equal(maildir_count(DOMAIN, local), 0);
    }
}

/* -- rows of the truth table ---------------------------------------------- */

static void valid_default(void **s)
{
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, NULL };
    (void)s;
    deliver_case("TM_TEST_MX_VALID", &e);
}

static void valid_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, NULL };
    (void)s;
    deliver_case("TM_TEST_MX_VALID", &e);
}

static void valid_skip(void **s)
{
    static const expect e = { 0, 1, 0, TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, NULL };
    (void)s;
    deliver_case("TM_TEST_MX_VALID", &e);
}

static void plain_default(void **s)
{
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_NOT_OFFERED, "not offered" };
    (void)s;
    deliver_case("TM_TEST_MX_PLAIN", &e);
}

static void plain_skip(void **s)
{
    static const expect e = { 0, 1, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_NOT_OFFERED, "not offered" };
    (void)s;
    deliver_case("TM_TEST_MX_PLAIN", &e);
}

static void plain_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_NOT_OFFERED, "not offered" };
    (void)s;
    deliver_case("TM_TEST_MX_PLAIN", &e);
}

static void plain_require_skip(void **s)
{
    static const expect e = { 1, 1, 0, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_NOT_OFFERED, "not offered" };
    (void)s;
    deliver_case("TM_TEST_MX_PLAIN", &e);
}

static void wrongname_default(void **s)
{
    /* Falls back to a fresh plaintext connection; the reason is kept. */
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void wrongname_skip(void **s)
{
    static const expect e = { 0, 1, 0, TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE,
                              "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void wrongname_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void wrongname_require_skip(void **s)
{
    static const expect e = { 1, 1, 0, TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE,
                              "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void wrongname_keep(void **s)
{
    static const expect e = { 0, 0, 1, TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE,
                              "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void wrongname_keep_require(void **s)
{
    /* keep_unverified_tls does not weaken require_tls. */
    static const expect e = { 1, 0, 1, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "CN" };
    (void)s;
    deliver_case("TM_TEST_MX_WRONGNAME", &e);
}

static void expired_default(void **s)
{
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "expired" };
    (void)s;
    deliver_case("TM_TEST_MX_EXPIRED", &e);
}

static void expired_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "expired" };
    (void)s;
    deliver_case("TM_TEST_MX_EXPIRED", &e);
}

static void expired_skip(void **s)
{
    static const expect e = { 1, 1, 0, TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE,
                              "expired" };
    (void)s;
    deliver_case("TM_TEST_MX_EXPIRED", &e);
}

static void selfsigned_default(void **s)
{
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "not correctly signed" };
    (void)s;
    deliver_case("TM_TEST_MX_SELFSIGNED", &e);
}

static void selfsigned_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "not correctly signed" };
    (void)s;
    deliver_case("TM_TEST_MX_SELFSIGNED", &e);
}

static void selfsigned_keep(void **s)
{
    static const expect e = { 0, 0, 1, TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE,
                              "not correctly signed" };
    (void)s;
    deliver_case("TM_TEST_MX_SELFSIGNED", &e);
}

static void notyet_default(void **s)
{
    static const expect e = { 0, 0, 0, TM_OK, TM_RESULT_DELIVERED, 0, 0,
                              TM_TLS_FAILURE_CERTIFICATE, "future" };
    (void)s;
    deliver_case("TM_TEST_MX_NOTYET", &e);
}

static void wildcard_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, NULL };
    (void)s;
    deliver_case("TM_TEST_MX_WILD", &e);
}

static void chain_require(void **s)
{
    static const expect e = { 1, 0, 0, TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, NULL };
    (void)s;
    deliver_case("TM_TEST_MX_CHAIN", &e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_default),
        cmocka_unit_test(valid_require),
        cmocka_unit_test(valid_skip),
        cmocka_unit_test(plain_default),
        cmocka_unit_test(plain_skip),
        cmocka_unit_test(plain_require),
        cmocka_unit_test(plain_require_skip),
        cmocka_unit_test(wrongname_default),
        cmocka_unit_test(wrongname_skip),
        cmocka_unit_test(wrongname_require),
        cmocka_unit_test(wrongname_require_skip),
        cmocka_unit_test(wrongname_keep),
        cmocka_unit_test(wrongname_keep_require),
        cmocka_unit_test(expired_default),
        cmocka_unit_test(expired_require),
        cmocka_unit_test(expired_skip),
        cmocka_unit_test(selfsigned_default),
        cmocka_unit_test(selfsigned_require),
        cmocka_unit_test(selfsigned_keep),
        cmocka_unit_test(notyet_default),
        cmocka_unit_test(wildcard_require),
        cmocka_unit_test(chain_require),
    };
    return cmocka_run_group_tests_name("certificates-postfix", tests, group_setup, group_teardown);
}
