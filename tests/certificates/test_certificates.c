/*
 * ht_certs.c - certificates served by the hostile server's TLS (Python
 * ssl), each under the five policies: the outcome follows the truth table
 * and certificate-verified is the truth.
 *
 * Host names: "localhost" resolves through the system resolver; the
 * wildcard and domain-vs-MX cases need names of their own (mx.wild.atk.test,
 * a.b.wild.atk.test, mx1.atk.test, atk.test MX mx.atk.test), served by the
 * suite's dnsmasq (ht_util.c); without dnsmasq those cases are skipped.
 */
#include "harness.h"

/* One certificate, five policies.  host: explicit host (NULL: localhost;
 * HT_MX: MX lookup of `domain`).  verified: what certificate-verified
 * must say. */
static void cert_case(const char *cert, const char *host, const char *domain, int verified)
{
    const char *s1 = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "]]}";
    const char *s2 = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "], [" GREET_ONLY
                     AUTO_TLS "]]}";
    char *tx = ht_fmt(EHLO_L FROM_L "RCPT TO:<rcpt@%s>\r\nDATA\r\n" BODY ".\r\nQUIT\r\n",
                       domain ? domain : "example.test");
    const char *sni = host && *host ? host : host ? "" : "localhost";
    int p;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        char label[160];
        char *rec;
        int rc, two = !verified && p == POL_DEFAULT;

        o.cert = cert;
        o.policy = ht_policy(p);
        o.host = host;
        o.dns = host != NULL;
        o.domain = domain;
        rec = ht_run(two ? s2 : s1, &o, &rc, &st);
        snprintf(label, sizeof label, "%s at %s [%s]", cert, host ? (*host ? host : domain) : "localhost",
                 ht_policy_name(p));
        ht_print(label, rc, &st);
        if (verified) {
            const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL, NULL,
                                 EHLO_L "STARTTLS\r\n", tx };
            ht_check(rec, rc, &st, &w);
            assert_string_equal(st.tls_error, "");
        } else if (p == POL_DEFAULT) {
            /* As a failed handshake: a new plaintext connection. */
            const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_CERTIFICATE, 2,
                                 NULL, tx, EHLO_L "STARTTLS\r\n", "" };
            ht_check(rec, rc, &st, &w);
            assert_int_equal(st.attempt_no, 2);
        } else if (p == POL_REQ) {
            const ht_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                 TM_TLS_FAILURE_CERTIFICATE, 1, NULL, NULL, EHLO_L "STARTTLS\r\n",
                                 "QUIT\r\n" };
            ht_check(rec, rc, &st, &w);
        } else {
            /* skip_verify, require+skip, keep_unverified: over TLS, and
             * the truth about the certificate. */
            const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 1, 0, TM_TLS_FAILURE_NONE, 1, NULL, NULL,
                                 EHLO_L "STARTTLS\r\n", tx };
            ht_check(rec, rc, &st, &w);
        }
        if (!verified) {
            assert_true(st.tls_error[0] != '\0');
            print_message("  why not verified: %s\n", st.tls_error);
        }
        /* The name sent (SNI) and checked is the MX host's. */
        if (*sni)
            ht_field_eq(rec, 0, "sni", sni);
        else
            ht_field_eq(rec, 0, "sni", "mx.atk.test");
        if (host && !*host)
            assert_string_equal(st.mx_host, "mx.atk.test");
        free(rec);
    }
    free(tx);
}

static void cert_good(void **state)
{
    (void)state;
    cert_case("good", NULL, NULL, 1);
}

static void cert_expired(void **state)
{
    (void)state;
    cert_case("expired", NULL, NULL, 0);
}

static void cert_notyet(void **state)
{
    (void)state;
    cert_case("notyet", NULL, NULL, 0);
}

static void cert_selfsigned(void **state)
{
    (void)state;
    cert_case("selfsigned", NULL, NULL, 0);
}

static void cert_untrusted_ca(void **state)
{
    (void)state;
    cert_case("untrusted", NULL, NULL, 0);
}

static void cert_wrongname(void **state)
{
    (void)state;
    cert_case("wrongname", NULL, NULL, 0);
}

/* Leaf from the intermediate CA, intermediate sent: verifies. */
static void cert_chain_sent(void **state)
{
    (void)state;
    cert_case("chain", NULL, NULL, 1);
}

/* Same leaf, intermediate not sent: the client does not fetch it. */
static void cert_chain_not_sent(void **state)
{
    (void)state;
    cert_case("chainleaf", NULL, NULL, 0);
}

/* *.wild.atk.test for mx.wild.atk.test: one wildcard label matches. */
static void cert_wildcard(void **state)
{
    (void)state;
    cert_case("wild", "mx.wild.atk.test", NULL, 1);
}

/* *.wild.atk.test for a.b.wild.atk.test: a wildcard covers one label. */
static void cert_wildcard_two_labels(void **state)
{
    (void)state;
    cert_case("wild", "a.b.wild.atk.test", NULL, 0);
}

/* mx*.atk.test for mx1.atk.test: only a whole-label wildcard counts. */
static void cert_partial_wildcard(void **state)
{
    (void)state;
    cert_case("partialwild", "mx1.atk.test", NULL, 0);
}

/* atk.test has MX mx.atk.test: a certificate for the domain does not
 * verify (the name checked is the MX host's); one for mx.atk.test does. */
static void cert_domain_not_mx(void **state)
{
    (void)state;
    cert_case("domain", HT_MX, "atk.test", 0);
    cert_case("mxhost", HT_MX, "atk.test", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cert_good),
        cmocka_unit_test(cert_expired),
        cmocka_unit_test(cert_notyet),
        cmocka_unit_test(cert_selfsigned),
        cmocka_unit_test(cert_untrusted_ca),
        cmocka_unit_test(cert_wrongname),
        cmocka_unit_test(cert_chain_sent),
        cmocka_unit_test(cert_chain_not_sent),
        cmocka_unit_test(cert_wildcard),
        cmocka_unit_test(cert_wildcard_two_labels),
        cmocka_unit_test(cert_partial_wildcard),
        cmocka_unit_test(cert_domain_not_mx),
    };
    return HT_MAIN("certificates", tests);
}
