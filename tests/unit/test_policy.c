/*
 * test_policy.c - the policy truth table of DESIGN.md, every row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "internal.h"

#define NO TM_OFF
#define YES TM_ON

/* Every combination: require_tls x skip_verify x keep_unverified_tls x
 * event, written out so that the table reads like DESIGN.md. */
static const struct row {
    int require_tls, skip_verify, keep_unverified;
    tm_tls_event event;
    tm_tls_action action;
} table[] = {
    /* no STARTTLS in EHLO: plaintext, unless TLS is required */
    {NO, NO, NO, TM_EV_NOT_OFFERED, TM_ACT_PLAIN_SAME},
    {NO, NO, YES, TM_EV_NOT_OFFERED, TM_ACT_PLAIN_SAME},
    {NO, YES, NO, TM_EV_NOT_OFFERED, TM_ACT_PLAIN_SAME},
    {NO, YES, YES, TM_EV_NOT_OFFERED, TM_ACT_PLAIN_SAME},
    {YES, NO, NO, TM_EV_NOT_OFFERED, TM_ACT_NEXT_MX},
    {YES, NO, YES, TM_EV_NOT_OFFERED, TM_ACT_NEXT_MX},
    {YES, YES, NO, TM_EV_NOT_OFFERED, TM_ACT_NEXT_MX},
    {YES, YES, YES, TM_EV_NOT_OFFERED, TM_ACT_NEXT_MX},
    /* STARTTLS answered 4xx/5xx: same connection in plaintext */
    {NO, NO, NO, TM_EV_REFUSED, TM_ACT_PLAIN_SAME},
    {NO, NO, YES, TM_EV_REFUSED, TM_ACT_PLAIN_SAME},
    {NO, YES, NO, TM_EV_REFUSED, TM_ACT_PLAIN_SAME},
    {NO, YES, YES, TM_EV_REFUSED, TM_ACT_PLAIN_SAME},
    {YES, NO, NO, TM_EV_REFUSED, TM_ACT_NEXT_MX},
    {YES, NO, YES, TM_EV_REFUSED, TM_ACT_NEXT_MX},
    {YES, YES, NO, TM_EV_REFUSED, TM_ACT_NEXT_MX},
    {YES, YES, YES, TM_EV_REFUSED, TM_ACT_NEXT_MX},
    /* STARTTLS answered 421: the host is leaving, whatever the policy */
    {NO, NO, NO, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {NO, NO, YES, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {NO, YES, NO, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {NO, YES, YES, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {YES, NO, NO, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {YES, NO, YES, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {YES, YES, NO, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    {YES, YES, YES, TM_EV_CLOSING, TM_ACT_NEXT_MX},
    /* handshake failed (or a reply to STARTTLS that answers nothing, or
     * bytes after its 220): a new plaintext connection */
    {NO, NO, NO, TM_EV_HANDSHAKE, TM_ACT_PLAIN_NEW},
    {NO, NO, YES, TM_EV_HANDSHAKE, TM_ACT_PLAIN_NEW},
    {NO, YES, NO, TM_EV_HANDSHAKE, TM_ACT_PLAIN_NEW},
    {NO, YES, YES, TM_EV_HANDSHAKE, TM_ACT_PLAIN_NEW},
    {YES, NO, NO, TM_EV_HANDSHAKE, TM_ACT_NEXT_MX},
    {YES, NO, YES, TM_EV_HANDSHAKE, TM_ACT_NEXT_MX},
    {YES, YES, NO, TM_EV_HANDSHAKE, TM_ACT_NEXT_MX},
    {YES, YES, YES, TM_EV_HANDSHAKE, TM_ACT_NEXT_MX},
    /* certificate invalid */
    {NO, NO, NO, TM_EV_CERT_INVALID, TM_ACT_PLAIN_NEW},
    {NO, NO, YES, TM_EV_CERT_INVALID, TM_ACT_USE_TLS},
    {NO, YES, NO, TM_EV_CERT_INVALID, TM_ACT_USE_TLS},
    {NO, YES, YES, TM_EV_CERT_INVALID, TM_ACT_USE_TLS},
    {YES, NO, NO, TM_EV_CERT_INVALID, TM_ACT_NEXT_MX},
    {YES, NO, YES, TM_EV_CERT_INVALID, TM_ACT_NEXT_MX},
    {YES, YES, NO, TM_EV_CERT_INVALID, TM_ACT_USE_TLS},
    {YES, YES, YES, TM_EV_CERT_INVALID, TM_ACT_USE_TLS},
    /* certificate valid: TLS, whatever the policy */
    {NO, NO, NO, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {NO, NO, YES, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {NO, YES, NO, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {NO, YES, YES, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {YES, NO, NO, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {YES, NO, YES, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {YES, YES, NO, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
    {YES, YES, YES, TM_EV_CERT_VALID, TM_ACT_USE_TLS},
};

static const char *action_name(tm_tls_action a)
{
    switch (a) {
    case TM_ACT_USE_TLS:
        return "USE_TLS";
    case TM_ACT_PLAIN_SAME:
        return "PLAIN_SAME";
    case TM_ACT_PLAIN_NEW:
        return "PLAIN_NEW";
    case TM_ACT_NEXT_MX:
        return "NEXT_MX";
    }
    return "?";
}

static void check_row(const struct row *r, const tm_policy *p)
{
    tm_tls_action got = tm__policy_decide(p, r->event);
    if (got != r->action)
        fail_msg("require_tls=%d skip_verify=%d keep_unverified_tls=%d event=%d: %s, expected %s",
                 p->require_tls, p->skip_verify, p->keep_unverified_tls, (int)r->event,
                 action_name(got), action_name(r->action));
}

static void test_table(void **state)
{
    size_t i;
    int seen[2][2][2][6] = {{{{0}}}};
    (void)state;

    assert_int_equal(sizeof(table) / sizeof(table[0]), 48);
    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const struct row *r = &table[i];
        tm_policy p = TM_POLICY_INIT;
        p.require_tls = r->require_tls;
        p.skip_verify = r->skip_verify;
        p.keep_unverified_tls = r->keep_unverified;
        check_row(r, &p);
        /* TM_UNSET (0) means off as TM_OFF does in this release, and any
         * positive value is on. */
        p.require_tls = r->require_tls > 0 ? 7 : TM_UNSET;
        p.skip_verify = r->skip_verify > 0 ? 2 : TM_UNSET;
        p.keep_unverified_tls = r->keep_unverified > 0 ? 1000 : TM_UNSET;
        check_row(r, &p);
        p.require_tls = r->require_tls > 0 ? 1 : -1000;
        p.skip_verify = r->skip_verify > 0 ? 1 : -2;
        p.keep_unverified_tls = r->keep_unverified > 0 ? 1 : -1;
        check_row(r, &p);
        seen[r->require_tls > 0][r->skip_verify > 0][r->keep_unverified > 0][r->event]++;
    }
    /* each combination exactly once */
    for (i = 0; i < 48; i++)
        assert_int_equal(seen[i / 24][i / 12 % 2][i / 6 % 2][i % 6], 1);
}

static void test_null_policy(void **state)
{
    tm_policy zero = {0, 0, 0, 0};
    (void)state;

    assert_int_equal(tm__policy_decide(NULL, TM_EV_NOT_OFFERED), TM_ACT_PLAIN_SAME);
    assert_int_equal(tm__policy_decide(NULL, TM_EV_REFUSED), TM_ACT_PLAIN_SAME);
    assert_int_equal(tm__policy_decide(NULL, TM_EV_HANDSHAKE), TM_ACT_PLAIN_NEW);
    assert_int_equal(tm__policy_decide(NULL, TM_EV_CERT_INVALID), TM_ACT_PLAIN_NEW);
    assert_int_equal(tm__policy_decide(NULL, TM_EV_CERT_VALID), TM_ACT_USE_TLS);
    /* all-zero is the default too */
    assert_int_equal(tm__policy_decide(&zero, TM_EV_CERT_INVALID), TM_ACT_PLAIN_NEW);
    assert_int_equal(tm__policy_decide(&zero, TM_EV_NOT_OFFERED), TM_ACT_PLAIN_SAME);
}

static void test_policy_init(void **state)
{
    tm_policy p;
    (void)state;

    p.version = 99;
    p.require_tls = p.skip_verify = p.keep_unverified_tls = 5;
    assert_int_equal(tm_policy_init(&p, TM_POLICY_VERSION), TM_OK);
    assert_int_equal(p.version, TM_POLICY_VERSION);
    assert_int_equal(p.require_tls, 0);
    assert_int_equal(p.skip_verify, 0);
    assert_int_equal(p.keep_unverified_tls, 0);
    assert_int_equal(tm_policy_init(NULL, TM_POLICY_VERSION), TM_EINVAL);
    assert_int_equal(tm_policy_size(), sizeof(tm_policy));
}

/* tm__policy_resolve: message over sending domain over default, then the
 * recipient floor. */
static void test_resolve(void **state)
{
    static const struct {
        int msg, dom, floor;
        int require, require_src;
    } rows[] = {
        {TM_UNSET, TM_UNSET, TM_FLOOR_NONE, 0, TM_SOURCE_DEFAULT},
        {TM_ON, TM_UNSET, TM_FLOOR_NONE, 1, TM_SOURCE_MESSAGE},
        {TM_OFF, TM_UNSET, TM_FLOOR_NONE, 0, TM_SOURCE_MESSAGE},
        {TM_UNSET, TM_ON, TM_FLOOR_NONE, 1, TM_SOURCE_SENDING_DOMAIN},
        {TM_UNSET, TM_OFF, TM_FLOOR_NONE, 0, TM_SOURCE_SENDING_DOMAIN},
        {TM_OFF, TM_ON, TM_FLOOR_NONE, 0, TM_SOURCE_MESSAGE},
        {TM_ON, TM_OFF, TM_FLOOR_NONE, 1, TM_SOURCE_MESSAGE},
        {5, TM_UNSET, TM_FLOOR_NONE, 1, TM_SOURCE_MESSAGE},
        {TM_OFF, TM_OFF, TM_FLOOR_TLS, 1, TM_SOURCE_RECIPIENT_FLOOR},
        {TM_UNSET, TM_UNSET, TM_FLOOR_VERIFIED, 1, TM_SOURCE_RECIPIENT_FLOOR},
        {TM_ON, TM_UNSET, TM_FLOOR_TLS, 1, TM_SOURCE_MESSAGE},
        {TM_UNSET, TM_ON, TM_FLOOR_VERIFIED, 1, TM_SOURCE_SENDING_DOMAIN},
        {TM_OFF, TM_OFF, TM_FLOOR_DANE, 1, TM_SOURCE_RECIPIENT_FLOOR},
        {TM_UNSET, TM_UNSET, TM_FLOOR_DANE, 1, TM_SOURCE_RECIPIENT_FLOOR},
        {TM_ON, TM_OFF, TM_FLOOR_DANE, 1, TM_SOURCE_MESSAGE},
        {TM_UNSET, TM_ON, TM_FLOOR_DANE, 1, TM_SOURCE_SENDING_DOMAIN},
        {TM_OFF, TM_UNSET, 7, 0, TM_SOURCE_MESSAGE}, /* unknown floor: none */
        {TM_OFF, TM_UNSET, 4, 0, TM_SOURCE_MESSAGE},
        {TM_UNSET, TM_OFF, -1, 0, TM_SOURCE_SENDING_DOMAIN},
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        tm_policy m = TM_POLICY_INIT, d = TM_POLICY_INIT;
        tm_resolved r;
        m.require_tls = rows[i].msg;
        d.require_tls = rows[i].dom;
        tm__policy_resolve(&m, &d, rows[i].floor, &r);
        if (r.policy.require_tls != rows[i].require || r.require_tls_source != rows[i].require_src)
            fail_msg("row %zu: require_tls %d from %d", i, r.policy.require_tls, r.require_tls_source);
        assert_int_equal(r.policy.version, TM_POLICY_VERSION);
        assert_int_equal(r.floor, rows[i].floor == TM_FLOOR_TLS || rows[i].floor == TM_FLOOR_VERIFIED ||
                                          rows[i].floor == TM_FLOOR_DANE
                                      ? rows[i].floor
                                      : TM_FLOOR_NONE);
    }
}

static void test_resolve_floor_verified(void **state)
{
    tm_policy m = TM_POLICY_INIT, d = TM_POLICY_INIT;
    tm_resolved r;
    (void)state;

    /* skip_verify from the message is overridden by a "verified" floor,
     * kept under a "tls" floor. */
    m.skip_verify = TM_ON;
    m.keep_unverified_tls = TM_ON;
    tm__policy_resolve(&m, &d, TM_FLOOR_VERIFIED, &r);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.keep_unverified_tls, 1);
    assert_int_equal(r.keep_unverified_tls_source, TM_SOURCE_MESSAGE);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_CERT_INVALID), TM_ACT_NEXT_MX);
    tm__policy_resolve(&m, &d, TM_FLOOR_TLS, &r);
    assert_int_equal(r.policy.skip_verify, 1);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_MESSAGE);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_CERT_INVALID), TM_ACT_USE_TLS);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_NOT_OFFERED), TM_ACT_NEXT_MX);
    /* NULL levels are "not set" */
    tm__policy_resolve(NULL, NULL, TM_FLOOR_NONE, &r);
    assert_int_equal(r.policy.require_tls, 0);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.policy.keep_unverified_tls, 0);
    assert_int_equal(r.require_tls_source, TM_SOURCE_DEFAULT);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_DEFAULT);
    assert_int_equal(r.keep_unverified_tls_source, TM_SOURCE_DEFAULT);
    d.skip_verify = TM_ON;
    tm__policy_resolve(NULL, &d, TM_FLOOR_NONE, &r);
    assert_int_equal(r.policy.skip_verify, 1);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_SENDING_DOMAIN);
}

/* The floor "dane" is at least "verified": require_tls on, skip_verify
 * off, both from the recipient floor; keep_unverified_tls untouched. */
static void test_resolve_floor_dane(void **state)
{
    tm_policy m = TM_POLICY_INIT, d = TM_POLICY_INIT;
    tm_resolved r;
    (void)state;

    m.require_tls = TM_OFF;
    m.skip_verify = TM_ON;
    m.keep_unverified_tls = TM_ON;
    tm__policy_resolve(&m, &d, TM_FLOOR_DANE, &r);
    assert_int_equal(r.floor, TM_FLOOR_DANE);
    assert_int_equal(r.policy.require_tls, 1);
    assert_int_equal(r.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.keep_unverified_tls, 1);
    assert_int_equal(r.keep_unverified_tls_source, TM_SOURCE_MESSAGE);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_CERT_INVALID), TM_ACT_NEXT_MX);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_NOT_OFFERED), TM_ACT_NEXT_MX);
    assert_int_equal(tm__policy_decide(&r.policy, TM_EV_HANDSHAKE), TM_ACT_NEXT_MX);

    /* From the sending domain, and with nothing set anywhere. */
    m = d;
    d.require_tls = TM_OFF;
    d.skip_verify = TM_ON;
    tm__policy_resolve(&m, &d, TM_FLOOR_DANE, &r);
    assert_int_equal(r.policy.require_tls, 1);
    assert_int_equal(r.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);
    tm__policy_resolve(NULL, NULL, TM_FLOOR_DANE, &r);
    assert_int_equal(r.floor, TM_FLOOR_DANE);
    assert_int_equal(r.policy.require_tls, 1);
    assert_int_equal(r.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    /* skip_verify was off already: the floor did not have to force it. */
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_DEFAULT);

    /* Settings that already comply keep their sources. */
    m.require_tls = TM_ON;
    m.skip_verify = TM_OFF;
    tm__policy_resolve(&m, NULL, TM_FLOOR_DANE, &r);
    assert_int_equal(r.require_tls_source, TM_SOURCE_MESSAGE);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_MESSAGE);
    assert_int_equal(r.policy.skip_verify, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_null_policy),
        cmocka_unit_test(test_policy_init),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_resolve_floor_verified),
        cmocka_unit_test(test_resolve_floor_dane),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
