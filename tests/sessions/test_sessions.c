/*
 * test_sessions.c - how a connection ends, against the hostile server:
 * tm_deliver's one transaction is the connection's last, so with
 * PIPELINING its QUIT goes in the same write as the end of the content;
 * a session the caller keeps open never pipelines QUIT.  Many messages on
 * one session against a real Postfix are test_sessions_postfix.c.
 */
#include "harness.h"

/* PIPELINING and CHUNKING offered; the envelope, "BDAT 27 LAST" and the
 * three lines of content read, no reply yet. */
#define BDAT_READ                                                                 \
    "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 CHUNKING\\r\\n\"},"    \
    "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"BDAT\"},"     \
    "{\"expect\": null}, {\"expect\": null}, {\"expect\": null},"
/* What tm_deliver writes for the default message behind BDAT: one write. */
#define BDAT_SENT EHLO_L FROM_L RCPT_L "BDAT 27 LAST\r\n" BODY "QUIT\r\n"

static char *run(const char *script, int *rc, tm_delivery_status *st, const char *what)
{
    char *rec = ht_run(script, NULL, rc, st);
    ht_print(what, *rc, st);
    return rec;
}

/* BDAT: the whole delivery is one write, QUIT included ("expect QUIT"
 * would time out if the client waited for a reply first). */
static void quit_pipelined_bdat(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n250 2.0.0 queued\\r\\n"
                         "221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, &rc, &st, "QUIT with BDAT");
    (void)state;

    HT_EQ(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.code, 250);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    assert_true(hostile_has_event(rec, 0, "client_closed"));
    ht_field_eq(rec, 0, "received", BDAT_SENT);
    free(rec);
}

/* The same without CHUNKING: QUIT follows the final dot in its write. */
static void quit_pipelined_data(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET
                         "{\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"},"
                         "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"DATA\"},"
                         "{\"send\": \"250 ok\\r\\n250 ok\\r\\n354 go\\r\\n\"},"
                         "{\"expect_data\": true}, {\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.0.0 queued\\r\\n221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, &rc, &st, "QUIT with the dot");
    (void)state;

    HT_EQ(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    ht_field_eq(rec, 0, "received", EHLO_L TX);
    free(rec);
}

/* Refused at the end of the content with QUIT already sent: bounced, no
 * RSET after the QUIT, and the 221 is still read before the close. */
static void quit_pipelined_refused(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": \"QUIT\", \"timeout\": 2},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n"
                         "554 5.7.1 content refused\\r\\n\"}, {\"sleep\": 0.3},"
                         "{\"send\": \"221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_delivery_status st;
    int rc;
    char *rec = run(script, &rc, &st, "refused, QUIT sent");
    (void)state;

    HT_EQ(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(ht_rcpt[0].code, 554);
    assert_false(hostile_has_event(rec, 0, "timeout"));
    /* The client waited for the 221, sent 0.3 s after the 554, before it
     * closed (a lower bound on time: cannot fail on a slow machine). */
    assert_true(st.session_seconds >= 0.29);
    assert_true(hostile_has_event(rec, 0, "client_closed"));
    ht_field_eq(rec, 0, "received", BDAT_SENT);
    free(rec);
}

/* A session the caller keeps open never pipelines QUIT: tm_send waits for
 * the replies (the server's read for more times out), and QUIT comes from
 * tm_session_close. */
static void quit_not_pipelined_in_session(void **state)
{
    const char *script = "{\"linger\": 0, \"connections\": [[" GREET BDAT_READ
                         "{\"expect\": null, \"timeout\": 0.5},"
                         "{\"send\": \"250 2.1.0 ok\\r\\n250 2.1.5 ok\\r\\n250 2.0.0 queued\\r\\n\"},"
                         "{\"expect\": \"QUIT\"}, {\"send\": \"221 2.0.0 bye\\r\\n\"},"
                         "{\"read_until_close\": true, \"timeout\": 5}]]}";
    tm_session_options so;
    tm_delivery_status st;
    tm_message m;
    tm_session *s = NULL;
    tm_context *ctx = ht_ctx(5000, 0, 0);
    tm_policy p = TM_POLICY_INIT;
    hostile h;
    char *rec;
    (void)state;

    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(hostile_start(&h, script, ht_cert("good"), ht_key("good")), 0);
    ht_session_opts(&so, "localhost", h.port);
    ht_msg(&m, NULL, 0, NULL);
    assert_int_equal(tm_session_open(&s, ctx, "example.test", &so, &st), TM_OK);
    assert_int_equal(tm_starttls(s, &p, &st), TM_OK);
    HT_EQ(tm_send(s, &m, &st), TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    tm_session_close(s);
    tm_context_free(ctx);
    rec = ht_keep(hostile_finish(&h, 10));
    assert_non_null(rec);
    assert_true(hostile_has_event(rec, 0, "timeout"));
    ht_field_eq(rec, 0, "received", BDAT_SENT);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quit_pipelined_bdat),
        cmocka_unit_test(quit_pipelined_data),
        cmocka_unit_test(quit_pipelined_refused),
        cmocka_unit_test(quit_not_pipelined_in_session),
    };
    return HT_MAIN("sessions", tests);
}
