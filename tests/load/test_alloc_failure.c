/*
 * test_alloc_failure.c - the fail-the-Nth-allocation loop (hiredis's
 * allocator injection) over a whole life: context, recipient floor,
 * session to the hostile server's TLS, STARTTLS, two messages of three
 * recipients on the one session, close, then a one-shot tm_deliver (a new
 * connection, a resumed TLS session).  For every N, the Nth allocation of
 * the library and every later one fail: each failure is an error
 * (TM_ENOMEM), never a crash, a leak (ASan, valgrind) or a false
 * "delivered".  The loop ends when a run needs fewer than N allocations.
 */
#include "harness.h"

/* lib/internal.h: the nth allocation from now on and every later one fail
 * (0: none); returns the number counted since the last call. */
unsigned long tm__test_alloc_fail_at(unsigned long n);

#define MAX_POINTS 1000

static void alloc_fail_everywhere(void **state)
{
    const char *s = "{\"linger\": 0, \"accept_timeout\": 5, \"connections\": [[" GREET_ONLY
                    "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"], \"timeout\": 5}], "
                    "[" GREET_ONLY
                    "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"], \"timeout\": 5}]]}";
    const char *to[3] = { "a@example.test", "b@example.test", "c@example.test" };
    unsigned long n, covered = 0;
    (void)state;

    for (n = 1; n < MAX_POINTS && !covered; n++) {
        tm_context_options o;
        tm_context *ctx = NULL;
        tm_session *sess = NULL;
        tm_session_options so;
        tm_delivery_status st;
        tm_message m;
        unsigned long counted;
        int rc, msg, failed = 0, delivered = 0;
        hostile h;
        char *rec;

        assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
        assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
        assert_int_equal(hostile_start(&h, s, ht_cert("good"), ht_key("good")), 0);
        ht_session_opts(&so, "localhost", h.port);
        o.ca_file = ht_ca();
        o.helo_name = HELO;
        o.command_timeout_ms = 5000;
        tm__test_alloc_fail_at(n);
        rc = tm_context_new(&ctx, &o);
        if (rc != TM_OK) {
            assert_int_equal(rc, TM_ENOMEM);
            assert_null(ctx);
            failed = 1;
        }
        if (!failed) {
            rc = tm_recipient_floor_set(ctx, "example.test", TM_FLOOR_VERIFIED);
            if (rc != TM_OK)
                assert_int_equal(rc, TM_ENOMEM);
            rc = tm_session_open(&sess, ctx, "example.test", &so, &st);
            if (rc != TM_OK) {
                if (rc != TM_ENOMEM)
                    fail_msg("allocation %lu: open: %s (%s)", n, tm_strerror(rc), st.description);
                assert_null(sess);
                assert_int_not_equal(st.result, TM_RESULT_DELIVERED);
                failed = 1;
            }
        }
        if (!failed) {
            rc = tm_starttls(sess, NULL, &st);
            if (rc != TM_OK) {
                if (rc != TM_ENOMEM)
                    fail_msg("allocation %lu: starttls: %s (%s)", n, tm_strerror(rc), st.description);
                failed = 1;
            } else {
                assert_int_equal(st.tls, 1);
                assert_int_equal(st.cert_verified, 1);
            }
        }
        for (msg = 0; msg < 2 && !failed; msg++) {
            unsigned int i;
            ht_msg(&m, to, 3, NULL);
            rc = tm_send(sess, &m, &st);
            if (rc != TM_OK) {
                /* Sending allocates nothing: a failure here is a bug. */
                fail_msg("allocation %lu: message %d: %s (%s)", n, msg, tm_strerror(rc),
                         st.description);
            }
            assert_int_equal(st.result, TM_RESULT_DELIVERED);
            assert_int_equal(st.tls, 1);
            assert_int_equal(st.rcpt_delivered, 3);
            for (i = 0; i < 3; i++)
                assert_int_equal(ht_rcpt[i].result, TM_RESULT_DELIVERED);
            delivered++;
        }
        tm_session_close(sess);
        if (!failed) {
            /* One shot on the same context: a second connection. */
            ht_msg(&m, to, 3, NULL);
            rc = tm_deliver(ctx, &m, NULL, &so, &st);
            if (rc != TM_OK) {
                if (rc != TM_ENOMEM)
                    fail_msg("allocation %lu: deliver: %s (%s)", n, tm_strerror(rc),
                             st.description);
                assert_int_not_equal(st.result, TM_RESULT_DELIVERED);
                assert_int_not_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
                failed = 1;
            } else {
                assert_int_equal(st.result, TM_RESULT_DELIVERED);
                assert_int_equal(st.tls, 1);
                assert_int_equal(st.cert_verified, 1);
                delivered++;
            }
        }
        tm_context_free(ctx);
        counted = tm__test_alloc_fail_at(0);
        rec = ht_keep(hostile_finish(&h, failed ? 0 : 10));
        if (delivered == 3 && rec) {
            /* Both messages over one session, the third on its own. */
            assert_int_equal(hostile_count(rec, 0, "data"), 2);
            assert_int_equal(hostile_count(rec, 1, "data"), 1);
        }
        free(rec);
        if (counted < n) {
            /* This run reached its end without a failure: all covered. */
            assert_false(failed);
            covered = n - 1;
        }
    }
    print_message("allocation points covered: %lu\n", covered);
    if (!covered)
        fail_msg("more than %d allocations: raise MAX_POINTS", MAX_POINTS);
    HT_EQ(covered > 0, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alloc_fail_everywhere),
    };
    return HT_MAIN("alloc-failure", tests);
}
