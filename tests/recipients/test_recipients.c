/*
 * test_recipients.c - recipients beyond one transaction, against the
 * hostile server: a 452 "too many recipients" (RFC 5321 4.5.3.1.10) sends
 * the rest in a further transaction on the same connection, with and
 * without PIPELINING; more than 100 recipients take two transactions.
 * Each recipient is reported once, in the order given.  Mixed outcomes and
 * 120 recipients against a real Postfix are test_recipients_postfix.c.
 */
#include "harness.h"

#define N5 5
#define N120 120

static char addrs[N120][64];
static const char *to[N120];

static void make_recipients(size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        snprintf(addrs[i], sizeof addrs[i], "r%zu@example.test", i + 1);
        to[i] = addrs[i];
    }
}

/* Every recipient delivered and reported once, in order. */
static void all_delivered(const tm_delivery_status *st, size_t n)
{
    size_t i;

    assert_int_equal(st->rcpt_count, n);
    assert_int_equal(st->rcpt_delivered, n);
    assert_int_equal(st->rcpt_deferred + st->rcpt_uncertain + st->rcpt_bounced, 0);
    for (i = 0; i < n; i++) {
        assert_string_equal(ht_rcpt[i].address, to[i]);
        assert_int_equal(ht_rcpt[i].result, TM_RESULT_DELIVERED);
        assert_int_equal(ht_rcpt[i].code / 100, 2);
    }
    /* Nothing written past the recipients. */
    assert_string_equal(ht_rcpt[n].address, "");
    assert_int_equal(ht_rcpt[n].result, TM_RESULT_NONE);
}

/* 452 to the 3rd RCPT of 5 in the first transaction: the first carries
 * two recipients, a second one on the same connection the other three. */
static void rcpt_452_split(const char *caps, const char *what)
{
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[" GREET_ONLY
                     "{\"auto\": true, \"caps\": [%s], \"rcpt_limits\": [2]}]]}",
                     caps);
    ht_opts o = { 0 };
    tm_delivery_status st;
    tm_message m;
    char rcpt_line[100];
    size_t i;
    int rc;
    char *rec, *data;

    make_recipients(N5);
    ht_msg(&m, to, N5, NULL);
    o.msg = &m;
    o.host = "127.0.0.1";
    rec = ht_run(s, &o, &rc, &st);
    ht_print(what, rc, &st);
    HT_EQ(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.transactions, 2);
    all_delivered(&st, N5);

    /* One connection, two transactions, each recipient accepted once:
     * r1 and r2 in the first; r3..r5 refused there (or not tried, without
     * PIPELINING) and accepted in the second. */
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(hostile_unexpected(rec), 0);
    assert_int_equal(ht_field_count(rec, 0, "received", "MAIL FROM:"), 2);
    assert_int_equal(hostile_count(rec, 0, "data"), 2);
    for (i = 0; i < N5; i++) {
        int n;
        snprintf(rcpt_line, sizeof rcpt_line, "RCPT TO:<%s>\r\n", to[i]);
        n = ht_field_count(rec, 0, "received", rcpt_line);
        if (i < 2)
            assert_int_equal(n, 1);
        else
            assert_true(n == 1 || n == 2);
    }
    /* The second transaction carries exactly r3, r4 and r5. */
    {
        int n = hostile_count(rec, 0, "lines"), mails = 0, got = 0;
        for (i = 0; i < (size_t)n; i++) {
            char *line = ht_keep(hostile_item(rec, 0, "lines", (int)i, NULL));
            assert_non_null(line);
            if (!strncmp(line, "MAIL FROM:", 10))
                mails++;
            if (mails == 2 && !strncmp(line, "RCPT TO:", 8)) {
                assert_true(2 + got < N5);
                snprintf(rcpt_line, sizeof rcpt_line, "RCPT TO:<%s>", to[2 + got]);
                assert_string_equal(line, rcpt_line);
                got++;
            }
            free(line);
        }
        assert_int_equal(got, N5 - 2);
    }
    /* The same content twice. */
    for (i = 0; i < 2; i++) {
        data = ht_keep(hostile_item(rec, 0, "data", (int)i, NULL));
        assert_non_null(data);
        assert_string_equal(data, BODY ".\r\n");
        free(data);
    }
    free(rec);
    free(s);
}

static void rcpt_452_pipelined(void **state)
{
    (void)state;
    rcpt_452_split("\"PIPELINING\"", "452 to the 3rd RCPT, pipelined");
}

static void rcpt_452_not_pipelined(void **state)
{
    (void)state;
    rcpt_452_split("", "452 to the 3rd RCPT, not pipelined");
}

/* 120 recipients and no limit from the server: at most 100 go in one
 * transaction, the other 20 in a second one on the same connection. */
static void rcpt_120_two_transactions(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_PLAIN "]]}";
    ht_opts o = { 0 };
    tm_delivery_status st;
    tm_message m;
    int rc;
    char *rec;
    (void)state;

    make_recipients(N120);
    ht_msg(&m, to, N120, NULL);
    o.msg = &m;
    o.host = "127.0.0.1";
    rec = ht_run(s, &o, &rc, &st);
    ht_print("120 recipients", rc, &st);
    HT_EQ(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(st.transactions, 2);
    all_delivered(&st, N120);
    assert_int_equal(hostile_count_connections(rec), 1);
    assert_int_equal(ht_field_count(rec, 0, "received", "MAIL FROM:"), 2);
    assert_int_equal(ht_field_count(rec, 0, "received", "RCPT TO:"), N120);
    assert_int_equal(hostile_count(rec, 0, "data"), 2);
    free(rec);
}

/* A caller's array shorter than the recipients: the entries past its
 * capacity are not written, the counts still cover every recipient. */
static void rcpt_status_short_array(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_PLAIN "]]}";
    tm_rcpt_status mine[3];
    ht_opts o = { 0 };
    tm_delivery_status st;
    tm_message m;
    int rc, i;
    char *rec;
    (void)state;

    memset(mine, 0x5a, sizeof mine);
    make_recipients(N5);
    ht_msg(&m, to, N5, NULL);
    m.rcpt_status = mine;
    m.rcpt_status_cap = 2;
    o.msg = &m;
    o.host = "127.0.0.1";
    rec = ht_run(s, &o, &rc, &st);
    ht_print("5 recipients, room for 2", rc, &st);
    HT_EQ(rc, TM_OK);
    assert_int_equal(st.rcpt_count, N5);
    assert_int_equal(st.rcpt_delivered, N5);
    for (i = 0; i < 2; i++) {
        assert_string_equal(mine[i].address, to[i]);
        assert_int_equal(mine[i].result, TM_RESULT_DELIVERED);
    }
    for (i = 0; i < (int)sizeof mine[2]; i++)
        assert_int_equal(((unsigned char *)&mine[2])[i], 0x5a);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rcpt_452_pipelined),
        cmocka_unit_test(rcpt_452_not_pipelined),
        cmocka_unit_test(rcpt_120_two_transactions),
        cmocka_unit_test(rcpt_status_short_array),
    };
    return HT_MAIN("recipients", tests);
}
