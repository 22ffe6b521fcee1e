/*
 * test_recipients_postfix.c - recipients against a real Postfix
 * (tests/peers/peers.py, checked in its maildir): accepted, refused (550)
 * and deferred (450) recipients in one message, each with its own outcome;
 * and 120 recipients in one tm_deliver (no cap in the ABI; at most 100 per
 * transaction, so two), all delivered and each arriving once.  The 452
 * split is test_recipients.c.
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

static void recipients_mixed(void **state)
{
    char ok1[128], ok2[128], rej[128], def[128], l1[64], l2[64], lr[64], ld[64];
    const char *to[4] = { ok1, rej, def, ok2 };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    tm_rcpt_status rcpt[4];
    const char *body = "Subject: mixed\r\n\r\nto four\r\n";
    char *got;
    int rc;
    (void)state;

    PEERS_STATUS(st);
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
    m.rcpt_status = rcpt;
    m.rcpt_status_cap = 4;
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    assert_int_equal(rc, TM_EPARTIAL);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt_count, 4);
    assert_int_equal(st.rcpt_delivered, 2);
    assert_int_equal(st.rcpt_bounced, 1);
    assert_int_equal(st.rcpt_deferred, 1);
    assert_int_equal(st.rcpt_uncertain, 0);
    assert_int_equal(st.transactions, 1);
    assert_int_equal(rcpt[0].result, TM_RESULT_DELIVERED);
    assert_int_equal(rcpt[1].result, TM_RESULT_BOUNCED);
    assert_int_equal(rcpt[1].code, 550);
    assert_string_equal(rcpt[1].enhanced_code, "5.1.1");
    assert_int_equal(rcpt[2].result, TM_RESULT_DEFERRED);
    assert_int_equal(rcpt[2].code, 450);
    assert_int_equal(rcpt[3].result, TM_RESULT_DELIVERED);
    got = maildir_wait(DOMAIN, l1, 1, 10000);
    assert_non_null(got);
    free(got);
    got = maildir_wait(DOMAIN, l2, 1, 10000);
    assert_non_null(got);
    free(got);
    assert_int_equal(maildir_count(DOMAIN, lr), 0);
    assert_int_equal(maildir_count(DOMAIN, ld), 0);

    /* Every recipient refused: bounced, nothing sent. */
    to[0] = rej;
    m.to_count = 1;
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    assert_int_equal(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(rcpt[0].result, TM_RESULT_BOUNCED);
}

#define MANY 120

/* 120 recipients in one call (more than the 0.1 ABI's 50): two
 * transactions on one connection, every recipient delivered, reported once
 * in order, and arriving once. */
static void many_recipients(void **state)
{
    static char addr[MANY][128], local[MANY][64];
    static const char *to[MANY];
    static tm_rcpt_status rcpt[MANY];
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    const char *body = "Subject: many\r\n\r\nto 120\r\n";
    int rc, i;
    (void)state;

    PEERS_STATUS(st);
    for (i = 0; i < MANY; i++) {
        unique_local(local[i], sizeof local[i], "many");
        snprintf(addr[i], sizeof addr[i], "%.63s@" DOMAIN, local[i]);
        to[i] = addr[i];
    }
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = MANY;
    m.data = body;
    m.size = strlen(body);
    m.rcpt_status = rcpt;
    m.rcpt_status_cap = MANY;
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    print_message("120 recipients: rc=%d (%s) result=%s transactions=%u delivered=%u desc=%s\n",
                  rc, tm_strerror(rc), tm_result_name(st.result), st.transactions,
                  st.rcpt_delivered, st.description);
    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.rcpt_count, MANY);
    assert_int_equal(st.rcpt_delivered, MANY);
    assert_int_equal(st.transactions, 2);
    for (i = 0; i < MANY; i++) {
        assert_string_equal(rcpt[i].address, to[i]);
        assert_int_equal(rcpt[i].result, TM_RESULT_DELIVERED);
        assert_int_equal(rcpt[i].code / 100, 2);
    }
    for (i = 0; i < MANY; i++) {
        char *got = maildir_wait(DOMAIN, local[i], 1, 20000);
        assert_non_null(got);
        free(got);
    }
    sleep_ms(300);
    for (i = 0; i < MANY; i++)
        assert_int_equal(maildir_count(DOMAIN, local[i]), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(recipients_mixed),
        cmocka_unit_test(many_recipients),
    };
    return cmocka_run_group_tests_name("recipients-postfix", tests, group_setup, group_teardown);
}
