/*
 * test_connection.c - the connection lost at each step of the dialogue,
 * servers that go silent or drip, and a server that says 421, against the
 * hostile server: every wait ends at its deadline, nothing is reported
 * delivered without the final 2xx, and "uncertain" only once the final dot
 * was sent.
 *
 * Cases connect to "127.0.0.1" unless they need a certificate.
 */
#include <time.h>

#include "harness.h"

#define HOST "127.0.0.1"
#define SLOW_MS 1500
/* A correctness bound on the deadline, not a performance figure. */
#define SLOW_BOUND (3.0 * SLOW_MS / 1000.0 + 2.0)

static char *run_host(const char *script, const tm_message *m, unsigned int timeout_ms, int *rc,
                      tm_delivery_status *st, const char *what)
{
    ht_opts o = { 0 };
    char *rec;

    o.host = HOST;
    o.timeout_ms = timeout_ms ? timeout_ms : 3000;
    o.finish_s = timeout_ms == SLOW_MS ? 2 : 10;
    o.msg = m;
    rec = ht_run(script, &o, rc, st);
    ht_print(what, *rc, st);
    print_message("%s: wall %.3fs\n", what, ht_last_wall);
    return rec;
}

/* A streamed message of `total` bytes of 78-byte lines; pauses once for
 * pause_ms after pause_at bytes (0: never). */
typedef struct gen {
    size_t total, done, pause_at;
    long pause_ms;
    int paused;
} gen;

static long gen_read(void *arg, unsigned char *buf, size_t size)
{
    gen *g = arg;
    size_t n = g->total - g->done, i;

    if (g->pause_at && !g->paused && g->done >= g->pause_at) {
        struct timespec ts = { g->pause_ms / 1000, (g->pause_ms % 1000) * 1000000L };
        g->paused = 1;
        nanosleep(&ts, NULL);
    }
    if (n > size)
        n = size;
    for (i = 0; i < n; i++) {
        size_t pos = (g->done + i) % 78;
        buf[i] = pos == 76 ? '\r' : pos == 77 ? '\n' : (unsigned char)('a' + pos % 26);
    }
    g->done += n;
    return (long)n;
}

static void streamed_msg(tm_message *m, gen *g)
{
    ht_msg(m, NULL, 0, NULL);
    m->data = NULL;
    m->size = 0;
    m->read = gen_read;
    m->read_arg = g;
}

/* tls_failure: TM_TLS_FAILURE_NONE when the connection failed before the
 * EHLO reply (TLS was never considered), NOT_OFFERED after it. */
static void expect_deferred(const char *script, const char *recv0, int want_rc, int tls_failure,
                            const char *what)
{
    tm_delivery_status st;
    int rc;
    char *rec = run_host(script, NULL, 0, &rc, &st, what);
    const ht_want w = { want_rc, TM_RESULT_DEFERRED, 0, 0, tls_failure, 1, recv0, NULL, NULL,
                        NULL };

    ht_check(rec, rc, &st, &w);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    free(rec);
}

/* Accepted, then closed (FIN) or reset (RST) before the greeting.  How the
 * client sees it depends on timing - an RST that lands while the connect
 * is still being confirmed is a failed connect (TM_ECONNECT), one that
 * lands after it a closed connection (TM_ECLOSED); valgrind's slowness
 * makes the first likely.  Both are honest deferrals: the test asserts the
 * deferral and accepts either error. */
static void loss_before_greeting(void **state)
{
    static const char *const scripts[] = {
        "{\"linger\": 0.3, \"connections\": [[{\"close\": true}]]}",
        "{\"linger\": 0.3, \"connections\": [[{\"reset\": true}]]}",
    };
    size_t i;
    (void)state;

    for (i = 0; i < 2; i++) {
        tm_delivery_status st;
        int rc;
        char *rec = run_host(scripts[i], NULL, 0, &rc, &st,
                             i ? "RST before the greeting" : "FIN before the greeting");

        assert_true(rc == TM_ECLOSED || rc == TM_ECONNECT);
        assert_int_equal(st.error, rc);
        HT_EQ(st.result, TM_RESULT_DEFERRED);
        assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
        assert_int_equal(st.rcpt_delivered, 0);
        assert_int_equal(st.tls, 0);
        assert_int_equal(st.tls_failure, TM_TLS_FAILURE_NONE);
        assert_int_equal(hostile_count_connections(rec), 1);
        assert_int_equal(hostile_unexpected(rec), 0);
        ht_field_eq(rec, 0, "received", "");
        free(rec);
    }
}

static void loss_after_ehlo(void **state)
{
    (void)state;
    expect_deferred("{\"linger\": 0.3, \"connections\": [[" GREET "{\"close\": true}]]}", EHLO_L,
                    TM_ECLOSED, TM_TLS_FAILURE_NONE, "after EHLO");
}

static void loss_after_mail(void **state)
{
    (void)state;
    expect_deferred("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, {\"close\": true}]]}",
                    EHLO_L FROM_L, TM_ECLOSED, TM_TLS_FAILURE_NOT_OFFERED, "after MAIL");
}

/* After RCPT, before DATA: deferred, nothing sent. */
static void loss_after_rcpt(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250 hostile\\r\\n\"},"
                    "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"},"
                    "{\"expect\": \"RCPT\"}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 0, &rc, &st, "after RCPT");
    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    HT_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_false(ht_field_has(rec, 0, "received", BODY));
    free(rec);
}

static const char before_data[] = GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                                  "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                  "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                  "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, ";

/* 354, then the server closes without reading.  A small message may still
 * fit in the socket buffers (then the missing reply makes it uncertain);
 * a 4 MiB one cannot (deferred: the content was never completely sent).
 * Never delivered. */
static void loss_after_354(void **state)
{
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[%s{\"close\": true, \"drain\": 0}]]}",
                     before_data);
    tm_delivery_status st;
    tm_message m;
    gen g = { 4u << 20, 0, 0, 0, 0 };
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 0, &rc, &st, "354 then close, small message");
    assert_true(rc == TM_EUNCERTAIN || rc == TM_ECLOSED || rc == TM_EIO);
    HT_EQ(st.result, rc == TM_EUNCERTAIN ? TM_RESULT_UNCERTAIN : TM_RESULT_DEFERRED);
    assert_int_not_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
    free(rec);

    streamed_msg(&m, &g);
    rec = run_host(s, &m, 0, &rc, &st, "354 then close, 4 MiB message");
    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    HT_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_true(g.done < g.total);
    free(rec);
    free(s);
}

/* The server reads 768 KiB of a 4 MiB streamed message, then resets; the
 * client pauses for 2 s after 1 MiB, so the reset always lands before the
 * content is complete, however slow either side is (valgrind): deferred,
 * never uncertain or delivered. */
static void loss_mid_content(void **state)
{
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[%s"
                     "{\"read_bytes\": %u, \"timeout\": 60}, {\"reset\": true}]]}",
                     before_data, 768u << 10);
    tm_delivery_status st;
    tm_message m;
    gen g = { 4u << 20, 0, 1u << 20, 2000, 0 };
    size_t len = 0;
    char *rec, *got;
    int rc;
    (void)state;

    streamed_msg(&m, &g);
    rec = run_host(s, &m, 0, &rc, &st, "reset in the middle of the content");
    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    HT_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_non_null(strstr(st.description, "content"));
    assert_true(g.done < g.total);
    got = ht_keep(hostile_field(rec, 0, "received", &len));
    assert_non_null(got);
    print_message("server read %zu bytes of content before the reset\n", len);
    assert_true(len >= (768u << 10) && len < (4u << 20));
    free(got);
    free(rec);
    free(s);
}

/* Closed right after the final dot: uncertain, one connection only (no
 * retry that could duplicate the message). */
static void loss_after_dot(void **state)
{
    char *s = ht_fmt("{\"linger\": 0.5, \"connections\": [[%s{\"expect_data\": true}, "
                     "{\"close\": true}]]}",
                     before_data);
    const ht_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 0, &rc, &st, "close after the dot");
    ht_check(rec, rc, &st, &w);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_int_equal(st.rcpt_uncertain, 1);
    assert_int_equal(st.code, 0);
    free(rec);
    free(s);
}

/* The same inside TLS, with a clean close_notify: still uncertain.  The
 * server offers PIPELINING, so QUIT went with the dot. */
static void loss_after_dot_tls(void **state)
{
    const char *s = "{\"linger\": 0.5, \"connections\": [[" GREET EHLO_TLS
                    "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, {\"starttls\": true}, "
                    "{\"expect\": \"EHLO\"}, {\"send\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"DATA\"}, "
                    "{\"send\": \"250 ok\\r\\n250 ok\\r\\n354 go\\r\\n\"}, {\"expect_data\": true}, "
                    "{\"close\": true, \"notify\": true}]]}";
    int p;
    (void)state;

    for (p = 0; p < POL_N; p++) {
        const ht_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL,
                            NULL, EHLO_L "STARTTLS\r\n",
                            EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\nQUIT\r\n" };
        ht_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(s, &o, &rc, &st);
        ht_print(ht_policy_name(p), rc, &st);
        ht_check(rec, rc, &st, &w);
        free(rec);
    }
}

/* 250 to the dot, then the server closes before QUIT: delivered. */
static void loss_after_final_reply(void **state)
{
    char *s = ht_fmt("{\"linger\": 0.3, \"connections\": [[%s{\"expect_data\": true}, "
                     "{\"send\": \"250 2.0.0 queued\\r\\n\"}, {\"close\": true}]]}",
                     before_data);
    const ht_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 0, &rc, &st, "close after the final reply");
    ht_check(rec, rc, &st, &w);
    assert_string_equal(st.enhanced_code, "2.0.0");
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DELIVERED);
    free(rec);
    free(s);
}

/* BDAT: envelope and content in one write; the connection drops before
 * any reply.  The whole message went out: uncertain, never deferred (a
 * retry could duplicate it) and never delivered. */
static void loss_after_bdat(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 CHUNKING\\r\\n\"},"
                    "{\"expect\": \"MAIL\"}, {\"expect\": \"RCPT\"}, {\"expect\": \"BDAT\"},"
                    "{\"sleep\": 0.2}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 5000, &rc, &st, "close after BDAT");
    HT_EQ(rc, TM_EUNCERTAIN);
    assert_int_equal(st.result, TM_RESULT_UNCERTAIN);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_UNCERTAIN);
    /* One write: envelope, BDAT with its exact length, the raw content and
     * (tm_deliver: the connection's last transaction) QUIT. */
    ht_field_eq(rec, 0, "received", EHLO_L FROM_L RCPT_L "BDAT 27 LAST\r\n" BODY "QUIT\r\n");
    free(rec);
}

/* 421 to MAIL: the server is going away: deferred, with its reply. */
static void closing_421_at_mail(void **state)
{
    const char *s = "{\"linger\": 0.3, \"connections\": [[" GREET
                    "{\"send\": \"250 hostile\\r\\n\"},"
                    "{\"expect\": \"MAIL\"},"
                    "{\"send\": \"421 4.3.2 shutting down\\r\\n\"}, {\"close\": true}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, 2000, &rc, &st, "421 to MAIL");
    HT_EQ(rc, TM_EREJECTED);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_DEFERRED);
    assert_int_equal(st.code, 421);
    assert_string_equal(st.enhanced_code, "4.3.2");
    assert_int_equal(hostile_unexpected(rec), 0);
    free(rec);
}

static void assert_bounded(const tm_delivery_status *st)
{
    assert_true(st->session_seconds < SLOW_BOUND);
    assert_true(ht_last_wall < SLOW_BOUND);
    /* And not given up early either: the deadline was waited for. */
    assert_true(ht_last_wall >= SLOW_MS / 1000.0 - 0.05);
}

/* A greeting dripped one byte a second ends at its deadline. */
static void slow_drip_greeting(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[{\"drip\": \"220 "
                    "sloooooooooooooooow\\r\\n\", \"interval\": 1.0}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, SLOW_MS, &rc, &st, "drip greeting");
    HT_EQ(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_bounded(&st);
    free(rec);
}

/* An EHLO reply dripped one byte a second: the deadline covers the whole
 * reply, not each byte. */
static void slow_drip_ehlo(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[" GREET
                    "{\"drip\": \"250-hostile\\r\\n250 PIPELINING\\r\\n\", \"interval\": 1.0}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, SLOW_MS, &rc, &st, "drip EHLO");
    HT_EQ(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_bounded(&st);
    free(rec);
}

/* A greeting that never comes. */
static void slow_no_greeting(void **state)
{
    const char *s = "{\"linger\": 0, \"connections\": [[{\"read_until_close\": true, \"timeout\": 10}]]}";
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, SLOW_MS, &rc, &st, "no greeting");
    HT_EQ(rc, TM_ETIMEOUT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_bounded(&st);
    ht_field_eq(rec, 0, "received", "");
    free(rec);
}

static const char dot_prefix[] = "{\"linger\": 0, \"connections\": [[" GREET
                                 "{\"send\": \"250 hostile\\r\\n\"}, "
                                 "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                 "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                 "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, "
                                 "{\"expect_data\": true}, ";

static void slow_after_dot(const char *tail, const char *what)
{
    char *s = ht_fmt("%s%s]]}", dot_prefix, tail);
    const ht_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                        EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec = run_host(s, NULL, SLOW_MS, &rc, &st, what);

    ht_check(rec, rc, &st, &w);
    assert_int_equal(ht_rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_bounded(&st);
    free(rec);
    free(s);
}

/* No reply to the final dot: uncertain at the deadline. */
static void slow_no_dot_reply(void **state)
{
    (void)state;
    slow_after_dot("{\"read_until_close\": true, \"timeout\": 10}", "no reply to the dot");
}

/* The reply to the final dot dripped: uncertain at the deadline. */
static void slow_drip_dot_reply(void **state)
{
    (void)state;
    slow_after_dot("{\"drip\": \"250 2.0.0 queued as SLOW\\r\\n\", \"interval\": 1.0}",
                   "drip reply to the dot");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_before_greeting),
        cmocka_unit_test(loss_after_ehlo),
        cmocka_unit_test(loss_after_mail),
        cmocka_unit_test(loss_after_rcpt),
        cmocka_unit_test(loss_after_354),
        cmocka_unit_test(loss_mid_content),
        cmocka_unit_test(loss_after_dot),
        cmocka_unit_test(loss_after_dot_tls),
        cmocka_unit_test(loss_after_final_reply),
        cmocka_unit_test(loss_after_bdat),
        cmocka_unit_test(closing_421_at_mail),
        cmocka_unit_test(slow_drip_greeting),
        cmocka_unit_test(slow_drip_ehlo),
        cmocka_unit_test(slow_no_greeting),
        cmocka_unit_test(slow_no_dot_reply),
        cmocka_unit_test(slow_drip_dot_reply),
    };
    return HT_MAIN("connection", tests);
}
