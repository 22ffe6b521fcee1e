/*
 * test_sessions_postfix.c - one session, many messages, against a real
 * Postfix (tests/peers/peers.py): tm_session_open, tm_starttls once (a
 * second call is a state error, not a second handshake), three tm_send over
 * the verified TLS, each message arriving once.  How a connection ends
 * (QUIT with the last data or not) is test_sessions.c.
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

    PEERS_STATUS(st);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(session_reuse),
    };
    return cmocka_run_group_tests_name("sessions-postfix", tests, group_setup, group_teardown);
}
