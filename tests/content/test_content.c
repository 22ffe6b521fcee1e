/*
 * ht_content.c - envelope and content attacks (control characters in
 * addresses, recipients of another domain, no final newline, a 50 MiB
 * streamed message) and the fail-the-Nth-allocation loop.
 */
#include <stdio.h>

#include "harness.h"

/* Addresses with CR, LF, other controls and DEL; NUL cannot be written
 * into a C string address (it ends it), so it is covered by the content
 * test instead. */
static const char *const bad_addrs[] = {
    "a\rb@example.test",
    "a\nb@example.test",
    "rcpt@example.test\r\nRCPT TO:<evil@example.test>",
    "rcpt@example.test>\r\nDATA",
    ("a\x01" "b@example.test"),
    "a\x1b[0m@example.test",
    "a\tb@example.test",
    "a\x7f@example.test",
    "rcpt@exa\rmple.test",
    "rcpt@example.test\n",
};
#define NBAD (sizeof bad_addrs / sizeof bad_addrs[0])

/* tm_deliver refuses each before connecting: the server sees nothing. */
static void addr_controls_refused(void **state)
{
    const char *s = "{\"linger\": 0, \"accept_timeout\": 30, \"connections\": [[" GREET_ONLY
                    AUTO_PLAIN "]]}";
    tm_context *ctx;
    tm_session_options so;
    hostile h;
    size_t i;
    int as_sender;
    char *rec;
    (void)state;

    assert_int_equal(hostile_start(&h, s, NULL, NULL), 0);
    ctx = ht_ctx(3000, 0, 0);
    ht_session_opts(&so, "127.0.0.1", h.port);
    for (as_sender = 0; as_sender < 2; as_sender++) {
        for (i = 0; i < NBAD; i++) {
            const char *to[1] = { as_sender ? "rcpt@example.test" : bad_addrs[i] };
            tm_delivery_status st;
            tm_message m;
            int rc;

            ht_msg(&m, to, 1, NULL);
            assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
            if (as_sender)
                m.from = bad_addrs[i];
            rc = tm_deliver(ctx, &m, NULL, &so, &st);
            print_message("%s #%zu: rc=%d (%s) result=%s\n", as_sender ? "sender" : "recipient", i,
                          rc, tm_strerror(rc), tm_result_name(st.result));
            HT_EQ(rc, TM_EADDRESS);
            assert_int_equal(st.result, TM_RESULT_BOUNCED);
            assert_int_equal(ht_rcpt[0].result, TM_RESULT_BOUNCED);
            assert_int_equal(st.attempt_no, 0);
        }
    }
    /* The EHLO name is checked as well: no context with CR/LF in it. */
    {
        tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
        tm_context *bad = NULL;

        o.ca_file = ht_ca();
        o.helo_name = "client.tm.test\r\nMAIL FROM:<x@y>";
        assert_int_not_equal(tm_context_new(&bad, &o), TM_OK);
        assert_null(bad);
    }
    tm_context_free(ctx);
    rec = ht_keep(hostile_finish(&h, 0)); /* nothing to wait for: stop it */
    assert_non_null(rec);
    assert_int_equal(hostile_count_connections(rec), 0);
    assert_int_equal(hostile_unexpected(rec), 0);
    free(rec);
}

/* On an open session, tm_send refuses each before writing a byte; the
 * session stays usable and carries a good message afterwards. */
static void addr_controls_in_session(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_PLAIN "]]}";
    tm_context *ctx;
    tm_session_options so;
    tm_session *sess = NULL;
    tm_delivery_status st;
    tm_message m;
    hostile h;
    size_t i;
    char *rec;
    int rc;
    (void)state;

    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(hostile_start(&h, s, NULL, NULL), 0);
    ctx = ht_ctx(3000, 0, 0);
    ht_session_opts(&so, "127.0.0.1", h.port);
    assert_int_equal(tm_session_open(&sess, ctx, "example.test", &so, &st), TM_OK);
    assert_int_equal(tm_starttls(sess, NULL, &st), TM_OK);
    for (i = 0; i < NBAD; i++) {
        const char *to[2] = { "rcpt@example.test", bad_addrs[i] };
        ht_msg(&m, to, 2, NULL);
        rc = tm_send(sess, &m, &st);
        HT_EQ(rc, TM_EADDRESS);
        assert_int_equal(st.result, TM_RESULT_BOUNCED);
        ht_msg(&m, NULL, 0, NULL);
        m.from = bad_addrs[i];
        assert_int_equal(tm_send(sess, &m, &st), TM_EADDRESS);
    }
    ht_msg(&m, NULL, 0, NULL);
    rc = tm_send(sess, &m, &st);
    ht_print("good message after the refusals", rc, &st);
    assert_int_equal(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    tm_session_close(sess);
    tm_context_free(ctx);
    rec = ht_keep(hostile_finish(&h, 10));
    assert_non_null(rec);
    ht_field_eq(rec, 0, "received", EHLO_L TX);
    free(rec);
}

/* Recipients of another domain: tm_deliver refuses a mixed list before
 * connecting; a session opened for example.test refuses other.test
 * before writing a byte. */
static void rcpt_other_domain(void **state)
{
    const char *s = "{\"linger\": 0.3, \"accept_timeout\": 30, \"connections\": [[" GREET_ONLY
                    AUTO_PLAIN "]]}";
    const char *mixed[2] = { "rcpt@example.test", "rcpt@other.test" };
    const char *other[1] = { "rcpt@other.test" };
    const char *lookalike[1] = { "rcpt@example.test.other.test" };
    tm_context *ctx;
    tm_session_options so;
    tm_session *sess = NULL;
    tm_delivery_status st;
    tm_message m;
    hostile h;
    char *rec;
    int rc;
    (void)state;

    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(hostile_start(&h, s, NULL, NULL), 0);
    ctx = ht_ctx(3000, 0, 0);
    ht_session_opts(&so, "127.0.0.1", h.port);
    ht_msg(&m, mixed, 2, NULL);
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    ht_print("mixed domains", rc, &st);
    HT_EQ(rc, TM_EADDRESS);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.attempt_no, 0);

    assert_int_equal(tm_session_open(&sess, ctx, "example.test", &so, &st), TM_OK);
    assert_int_equal(tm_starttls(sess, NULL, &st), TM_OK);
    ht_msg(&m, other, 1, NULL);
    rc = tm_send(sess, &m, &st);
    ht_print("other domain on a session", rc, &st);
    HT_EQ(rc, TM_EADDRESS);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    ht_msg(&m, mixed, 2, NULL);
    assert_int_equal(tm_send(sess, &m, &st), TM_EADDRESS);
    ht_msg(&m, lookalike, 1, NULL);
    assert_int_equal(tm_send(sess, &m, &st), TM_EADDRESS);
    tm_session_close(sess);
    tm_context_free(ctx);
    rec = ht_keep(hostile_finish(&h, 10));
    assert_non_null(rec);
    assert_int_equal(hostile_count_connections(rec), 1);
    ht_field_eq(rec, 0, "received", EHLO_L "QUIT\r\n");
    free(rec);
}

/* Content without a final newline (or ending in a bare CR) still ends
 * with CRLF . CRLF. */
static void no_final_newline(void **state)
{
    static const char *const bodies[] = { "Subject: x\r\n\r\nno newline at the end",
                                          "Subject: x\r\n\r\nends in a bare CR\r",
                                          "Subject: x\r\n\r\n." };
    static const char *const wants[] = { "Subject: x\r\n\r\nno newline at the end\r\n.\r\n",
                                         "Subject: x\r\n\r\nends in a bare CR\r\n.\r\n",
                                         "Subject: x\r\n\r\n..\r\n.\r\n" };
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY AUTO_PLAIN "]]}";
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        ht_opts o = { 0 };
        tm_delivery_status st;
        tm_message m;
        size_t len = 0;
        char *rec, *data;
        int rc;

        ht_msg(&m, NULL, 0, bodies[i]);
        o.msg = &m;
        o.host = "127.0.0.1";
        rec = ht_run(s, &o, &rc, &st);
        ht_print("no final newline", rc, &st);
        HT_EQ(rc, TM_OK);
        assert_int_equal(st.result, TM_RESULT_DELIVERED);
        data = ht_keep(hostile_item(rec, 0, "data", 0, &len));
        assert_non_null(data);
        if (strcmp(data, wants[i]) != 0)
            print_error("got [%s]\n", data);
        assert_string_equal(data, wants[i]);
        free(data);
        free(rec);
    }
}

typedef struct gen50 {
    size_t total, done;
} gen50;

static long gen50_read(void *arg, unsigned char *buf, size_t size)
{
    gen50 *g = arg;
    size_t n = g->total - g->done, i;

    if (n > size)
        n = size;
    for (i = 0; i < n; i++) {
        size_t pos = (g->done + i) % 78;
        buf[i] = pos == 76 ? '\r' : pos == 77 ? '\n' : (unsigned char)('A' + pos % 26);
    }
    g->done += n;
    return (long)n;
}

static long status_kib(const char *key)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");

    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            v = strtol(line + strlen(key), NULL, 10);
    fclose(f);
    return v;
}

/* 50 MiB through the hostile auto server, streamed from a read callback:
 * delivered, the server counted every byte, and the client's peak memory
 * did not grow with the message. */
static void big_50mib_streamed(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET_ONLY
                    "{\"auto\": true, \"caps\": [\"PIPELINING\", \"8BITMIME\"], \"timeout\": 30}]]}";
    const size_t total = 50u << 20;
    /* 78-byte CRLF lines; the last one is cut, so the client adds CRLF. */
    const size_t want = total + (total % 78 ? 2 : 0) + 3;
    gen50 g = { total, 0 };
    tm_context *ctx;
    tm_session_options so;
    tm_delivery_status st;
    tm_message m;
    hostile h;
    long hwm0, hwm1;
    double t;
    size_t len = 0;
    char *rec, *data;
    int rc;
    (void)state;

    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(hostile_start(&h, s, NULL, NULL), 0);
    ctx = ht_ctx(30000, 0, 0);
    ht_session_opts(&so, "127.0.0.1", h.port);
    ht_msg(&m, NULL, 0, NULL);
    m.data = NULL;
    m.size = 0;
    m.read = gen50_read;
    m.read_arg = &g;
    hwm0 = status_kib("VmHWM:");
    t = ht_now();
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    t = ht_now() - t;
    hwm1 = status_kib("VmHWM:");
    tm_context_free(ctx);
    ht_print("50 MiB", rc, &st);
    print_message("50 MiB: %.2fs, %.0f MiB/s; client peak RSS %ld -> %ld KiB\n", t, 50.0 / t, hwm0,
                  hwm1);
    HT_EQ(rc, TM_OK);
    assert_int_equal(st.result, TM_RESULT_DELIVERED);
    assert_int_equal(g.done, total);
    /* Streaming: the delivery did not need memory in proportion. */
    if (hwm0 > 0 && hwm1 > 0)
        assert_true(hwm1 - hwm0 < 8 * 1024);
    rec = ht_keep(hostile_finish(&h, 60));
    assert_non_null(rec);
    data = ht_keep(hostile_item(rec, 0, "data", 0, &len));
    assert_non_null(data);
    print_message("server recorded %zu bytes of content (want %zu)\n", len, want);
    assert_int_equal(len, want);
    assert_memory_equal(data + len - 5, "\r\n.\r\n", 5);
    free(data);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(addr_controls_refused),
        cmocka_unit_test(addr_controls_in_session),
        cmocka_unit_test(rcpt_other_domain),
        cmocka_unit_test(no_final_newline),
        cmocka_unit_test(big_50mib_streamed),
    };
    return HT_MAIN("content", tests);
}
