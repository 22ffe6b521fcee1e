/*
 * test_mx_hostile.c - hosts that will not talk, against the hostile server
 * (its own dnsmasq serves the names): a greeting of 5xx, 421 or another 4xx
 * is the host's word on itself, not on the message - the next MX is tried,
 * and with none left the message is deferred, never bounced.  After such a
 * host, a delivered status carries no trace of its refusal.  The MX walk
 * against real Postfix listeners is test_mx.c.
 */
#include "harness.h"

static const char *const greetings[] = { "554 5.3.2 mx-a will not talk to you",
                                         "421 4.3.2 mx-a going down",
                                         "450 4.3.0 mx-a busy" };
#define NGREET (sizeof greetings / sizeof greetings[0])

static char *refusing(const char *greeting)
{
    return ht_fmt("{\"linger\": 0.5, \"connections\": [[{\"send\": \"%s\\r\\n\"}, "
                  "{\"read_until_close\": true, \"timeout\": 3}]]}",
                  greeting);
}

static void check_refused(const char *rec, int rc, const tm_delivery_status *st, const char *what)
{
    ht_print(what, rc, st);
    HT_EQ(st->result, TM_RESULT_DEFERRED);
    assert_int_not_equal(rc, TM_OK);
    assert_int_equal(st->error, rc);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_equal(st->rcpt_bounced, 0);
    /* One connection: no second try at a host that said no. */
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    ht_no_envelope(rec);
}

/* The only host (an explicit host, then the only MX of atk.test) refuses
 * in its greeting: deferred. */
static void greeting_refused_only_mx(void **state)
{
    size_t i;
    (void)state;

    for (i = 0; i < NGREET; i++) {
        char *s = refusing(greetings[i]);
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.host = "127.0.0.1";
        rec = ht_run(s, &o, &rc, &st);
        check_refused(rec, rc, &st, greetings[i]);
        if (greetings[i][0] == '5')
            assert_int_equal(rc, TM_EREJECTED);
        free(rec);

        o.host = HT_MX;
        o.dns = 1;
        o.domain = "atk.test";
        rec = ht_run(s, &o, &rc, &st);
        check_refused(rec, rc, &st, greetings[i]);
        assert_string_equal(st.mx_host, "mx.atk.test");
        free(rec);
        free(s);
    }
}

/* The first MX refuses in its greeting, the second delivers: delivered by
 * the second, over TLS, and nothing in the status speaks of the refusal. */
static void greeting_refused_next_mx(void **state)
{
    const char *b = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_TLS "]]}";
    size_t i;
    (void)state;

    for (i = 0; i < NGREET; i++) {
        char *a = refusing(greetings[i]);
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec_a, *rec_b;
        int rc;

        rec_a = ht_run_two(a, b, &o, &rc, &st, &rec_b);
        ht_print(greetings[i], rc, &st);
        HT_EQ(rc, TM_OK);
        assert_int_equal(st.error, TM_OK);
        assert_int_equal(st.result, TM_RESULT_DELIVERED);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
        assert_string_equal(st.mx_host, "mx-b.atk.test");
        assert_string_equal(st.mx_address, HT_MX_B);
        assert_int_equal(st.attempt_no, 2);
        assert_int_equal(st.code, 250);
        assert_int_equal(st.tls, 1);
        assert_int_equal(st.cert_verified, 1);
        /* No trace of the first host's refusal (each greeting names mx-a;
         * the reply code alone could match a port number). */
        assert_null(strstr(st.description, greetings[i] + 4));
        assert_null(strstr(st.description, "mx-a"));
        assert_null(strstr(st.message, "mx-a"));
        assert_null(strstr(st.tls_error, "mx-a"));
        assert_null(strstr(ht_rcpt[0].message, "mx-a"));
        assert_int_equal(hostile_count_connections(rec_a), 1);
        assert_int_equal(hostile_unexpected(rec_a), 0);
        ht_no_envelope(rec_a);
        assert_int_equal(hostile_count(rec_b, 0, "data"), 1);
        free(rec_a);
        free(rec_b);
        free(a);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greeting_refused_only_mx),
        cmocka_unit_test(greeting_refused_next_mx),
    };
    return HT_MAIN("mx-hostile", tests);
}
