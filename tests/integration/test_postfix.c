/*
 * test_postfix.c - the policy truth table end to end against a real
 * Postfix on loopback, one listener per certificate case, checked with what
 * actually arrived in Postfix's maildir.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"

#define DOMAIN "example.test"

static tm_context *ctx;

static int group_setup(void **state)
{
    tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
    (void)state;
    o.ca_file = need_env("TM_TEST_CA");
    o.dns_server = need_env("TM_TEST_DNS");
    o.port = (unsigned int)atoi(need_env("TM_TEST_PORT"));
    o.helo_name = "client.tm.test";
    o.command_timeout_ms = 10000;
    return tm_context_new(&ctx, &o) == TM_OK ? 0 : -1;
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
    assert_int_equal(st.rcpt[0].result, e->result);
    assert_string_equal(st.rcpt[0].address, to_addr);

    if (e->result == TM_RESULT_DELIVERED) {
        assert_string_equal(st.mx_host, host);
        assert_int_equal(st.code, 250);
        assert_true(st.enhanced_code[0] == '2');
        if (st.tls) {
            assert_string_equal(st.tls_version, "TLSv1.2");
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

/* -- sessions ---------------------------------------------------------------- */

static void session_reuse(void **state)
{
    char local[64], to_addr[128], body[256];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    tm_session *s = NULL;
    int i;
    (void)state;

    unique_local(local, sizeof local, "reuse");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    so.host = need_env("TM_TEST_MX_VALID");
    assert_int_equal(tm_session_open(&s, ctx, DOMAIN, &so, &st), TM_OK);
    assert_non_null(s);
    assert_string_equal(st.mx_host, so.host);
    assert_int_equal(st.tls, 0);
    assert_int_equal(tm_starttls(s, NULL, &st), TM_OK);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    /* A second tm_starttls is a state error, not a second handshake. */
    assert_int_equal(tm_starttls(s, NULL, NULL), TM_ESTATE);

    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    for (i = 0; i < 3; i++) {
        snprintf(body, sizeof body, "Subject: reuse %d\r\n\r\nmessage %d\r\n", i, i);
        m.data = body;
        m.size = strlen(body);
        assert_int_equal(tm_send(s, &m, &st), TM_OK);
        assert_int_equal(st.result, TM_RESULT_DELIVERED);
        assert_int_equal(st.tls, 1);
        assert_int_equal(st.cert_verified, 1);
    }
    tm_session_close(s);
    for (i = 1; i <= 3; i++) {
        char *got = maildir_wait(DOMAIN, local, i, 10000);
        assert_non_null(got);
        free(got);
    }
    assert_int_equal(maildir_count(DOMAIN, local), 3);
}

static void recipients_mixed(void **state)
{
    char ok1[128], ok2[128], rej[128], def[128], l1[64], l2[64], lr[64], ld[64];
    const char *to[4] = { ok1, rej, def, ok2 };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    const char *body = "Subject: mixed\r\n\r\nto four\r\n";
    char *got;
    int rc;
    (void)state;

    unique_local(l1, sizeof l1, "ok");
    unique_local(l2, sizeof l2, "ok");
    unique_local(lr, sizeof lr, "reject");
    unique_local(ld, sizeof ld, "defer");
    snprintf(ok1, sizeof ok1, "%s@" DOMAIN, l1);
    snprintf(ok2, sizeof ok2, "%s@" DOMAIN, l2);
    snprintf(rej, sizeof rej, "%s@" DOMAIN, lr);
    snprintf(def, sizeof def, "%s@" DOMAIN, ld);
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 4;
    m.data = body;
    m.size = strlen(body);
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    assert_int_equal(rc, TM_EPARTIAL);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt_count, 4);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DELIVERED);
    assert_int_equal(st.rcpt[1].result, TM_RESULT_BOUNCED);
    assert_int_equal(st.rcpt[1].code, 550);
    assert_string_equal(st.rcpt[1].enhanced_code, "5.1.1");
    assert_int_equal(st.rcpt[2].result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt[2].code, 450);
    assert_int_equal(st.rcpt[3].result, TM_RESULT_DELIVERED);
    got = maildir_wait(DOMAIN, l1, 1, 10000);
    assert_non_null(got);
    free(got);
    got = maildir_wait(DOMAIN, l2, 1, 10000);
    assert_non_null(got);
    free(got);
    assert_int_equal(maildir_count(DOMAIN, lr), 0);
    assert_int_equal(maildir_count(DOMAIN, ld), 0);

    /* Every recipient refused: bounced, nothing sent, session still fine. */
    to[0] = rej;
    m.to_count = 1;
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    assert_int_equal(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_BOUNCED);
}

/* SMTP smuggling end-of-data variants arrive normalised, in one message. */
static void smuggling_variants(void **state)
{
    static const char *const variants[] = { "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n",
                                            "\r\n.\r", "\r\n.\r\r\n" };
    char local[64], to_addr[128], body[2048];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    size_t i, len;
    char *got;
    (void)state;

    unique_local(local, sizeof local, "smuggle");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    len = (size_t)snprintf(body, sizeof body, "Subject: smuggling\r\n\r\nstart");
    for (i = 0; i < sizeof variants / sizeof variants[0]; i++)
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "%sMAIL FROM:<evil@tm.test>\r\nRCPT TO:<victim%zu@" DOMAIN
                                ">\r\nDATA\r\nsmuggled %zu\r\n",
                                variants[i], i, i);
    len += (size_t)snprintf(body + len, sizeof body - len, "end");
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = len;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_non_null(strstr(got, "smuggled 6"));
    assert_true(ends_with(got, "end\n"));
    free(got);
    sleep_ms(300);
    assert_int_equal(maildir_count(DOMAIN, local), 1);
    for (i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char victim[32];
        snprintf(victim, sizeof victim, "victim%zu", i);
        assert_int_equal(maildir_count(DOMAIN, victim), 0);
    }
}

/* A long line and a message without a final newline. */
static void long_line_no_newline(void **state)
{
    char local[64], to_addr[128];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    char *body, *got, *p;
    size_t i;
    (void)state;

    unique_local(local, sizeof local, "long");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    body = malloc(4096);
    assert_non_null(body);
    strcpy(body, "Subject: long\r\n\r\n");
    p = body + strlen(body);
    for (i = 0; i < 2500; i++)
        *p++ = (char)('a' + i % 26);
    strcpy(p, "\r\nno newline at the end");
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_true(ends_with(got, "\nno newline at the end\n"));
    /* No stored line is longer than 998 octets. */
    for (p = got; *p;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        assert_true(l <= 998);
        p += l + (nl != NULL);
    }
    free(got);
    free(body);
}

/* Streaming content from a read callback, 8-bit text. */
struct src {
    const char *p;
    size_t left;
};

static long read_src(void *arg, unsigned char *buf, size_t size)
{
    struct src *s = arg;
    size_t n = s->left < 7 ? s->left : 7; /* small pieces: exercise the seams */
    (void)size;
    memcpy(buf, s->p, n);
    s->p += n;
    s->left -= n;
    return (long)n;
}

static void streamed(void **state)
{
    static const char body[] = "Subject: streamed\r\n\r\nGr\xc3\xbc\xc3\x9f"
                               "e\r\n.dot\r\nend\r\n";
    char local[64], to_addr[128];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    struct src src = { body, sizeof body - 1 };
    char *got;
    (void)state;

    unique_local(local, sizeof local, "stream");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.read = read_src;
    m.read_arg = &src;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_true(ends_with(got, "\n\nGr\xc3\xbc\xc3\x9f"
                               "e\n.dot\nend\n"));
    free(got);
}

/* Bad input is refused before anything is sent. */
static void bad_input(void **state)
{
    const char *to[1] = { "a\r\nRCPT TO:<x@" DOMAIN ">@" DOMAIN };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    (void)state;

    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = "x";
    m.size = 1;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EADDRESS);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.attempt_no, 0);
    to[0] = "ok@" DOMAIN;
    m.from = "bad\nsender@tm.test";
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EADDRESS);
    m.from = "sender@tm.test";
    m.data = "nul\0byte";
    m.size = 8;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_ECONTENT);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(tm_deliver(NULL, &m, NULL, &so, &st), TM_EINVAL);
    assert_int_equal(tm_deliver(ctx, NULL, NULL, &so, &st), TM_EINVAL);
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, NULL), TM_EINVAL);
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
        cmocka_unit_test(session_reuse),
        cmocka_unit_test(recipients_mixed),
        cmocka_unit_test(smuggling_variants),
        cmocka_unit_test(long_line_no_newline),
        cmocka_unit_test(streamed),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests_name("postfix", tests, group_setup, group_teardown);
}
