/*
 * atk_conn.c - the connection lost at each step of the dialogue, and TLS
 * faults (alert, garbage, FIN instead of a ServerHello) under each policy.
 */
#include <time.h>

#include "attacks.h"

#define HOST "127.0.0.1"

static char *run_host(const char *script, const tm_message *m, int *rc, tm_delivery_status *st,
                      const char *what)
{
    atk_opts o = { 0 };
    char *rec;

    o.host = HOST;
    o.timeout_ms = 3000;
    o.msg = m;
    rec = atk_run(script, &o, rc, st);
    atk_print(what, *rc, st);
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

/* tls_failure: TM_TLS_FAILURE_NONE when the connection failed before the
 * EHLO reply (TLS was never considered), NOT_OFFERED after it. */
static void expect_deferred(const char *script, const char *recv0, int want_rc, int tls_failure,
                            const char *what)
{
    tm_delivery_status st;
    int rc;
    char *rec = run_host(script, NULL, &rc, &st, what);
    const atk_want w = { want_rc, TM_RESULT_DEFERRED, 0, 0, tls_failure, 1, recv0, NULL, NULL,
                         NULL };

    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    free(rec);
}

/* Accepted, then closed before the greeting. */
void loss_before_greeting(void **state)
{
    (void)state;
    expect_deferred("{\"linger\": 0.3, \"connections\": [[{\"close\": true}]]}", "", TM_ECLOSED,
                    TM_TLS_FAILURE_NONE, "before the greeting");
    /* And with an RST instead of a FIN. */
    expect_deferred("{\"linger\": 0.3, \"connections\": [[{\"reset\": true}]]}", "", TM_ECLOSED,
                    TM_TLS_FAILURE_NONE, "RST before the greeting");
}

void loss_after_ehlo(void **state)
{
    (void)state;
    expect_deferred("{\"linger\": 0.3, \"connections\": [[" GREET "{\"close\": true}]]}", EHLO_L,
                    TM_ECLOSED, TM_TLS_FAILURE_NONE, "after EHLO");
}

void loss_after_mail(void **state)
{
    (void)state;
    expect_deferred("{\"linger\": 0.3, \"connections\": [[" GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                    "{\"expect\": \"MAIL\"}, {\"close\": true}]]}",
                    EHLO_L FROM_L, TM_ECLOSED, TM_TLS_FAILURE_NOT_OFFERED, "after MAIL");
}

static const char before_data[] = GREET "{\"send\": \"250 hostile\\r\\n\"}, "
                                  "{\"expect\": \"MAIL\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                  "{\"expect\": \"RCPT\"}, {\"send\": \"250 ok\\r\\n\"}, "
                                  "{\"expect\": \"DATA\"}, {\"send\": \"354 go\\r\\n\"}, ";

/* 354, then the server closes without reading.  A small message may still
 * fit in the socket buffers (then the missing reply makes it uncertain);
 * a 4 MiB one cannot (deferred: the content was never completely sent).
 * Never delivered. */
void loss_after_354(void **state)
{
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[%s{\"close\": true, \"drain\": 0}]]}",
                      before_data);
    tm_delivery_status st;
    tm_message m;
    gen g = { 4u << 20, 0, 0, 0, 0 };
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, &rc, &st, "354 then close, small message");
    assert_true(rc == TM_EUNCERTAIN || rc == TM_ECLOSED || rc == TM_EIO);
    ATK_EQ(st.result, rc == TM_EUNCERTAIN ? TM_RESULT_UNCERTAIN : TM_RESULT_DEFERRED);
    assert_int_not_equal(st.rcpt[0].result, TM_RESULT_DELIVERED);
    free(rec);

    atk_msg(&m, NULL, 0, NULL);
    m.data = NULL;
    m.size = 0;
    m.read = gen_read;
    m.read_arg = &g;
    rec = run_host(s, &m, &rc, &st, "354 then close, 4 MiB message");
    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    ATK_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    assert_true(g.done < g.total);
    free(rec);
    free(s);
}

/* The server reads part of the content (the client pauses after 1 MiB of
 * a 4 MiB message), then resets: deferred, never uncertain or delivered. */
void loss_mid_content(void **state)
{
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[%s"
                      "{\"read_until_close\": true, \"timeout\": 0.3}, {\"reset\": true}]]}",
                      before_data);
    tm_delivery_status st;
    tm_message m;
    gen g = { 4u << 20, 0, 1u << 20, 700, 0 };
    size_t len = 0;
    char *rec, *got;
    int rc;
    (void)state;

    atk_msg(&m, NULL, 0, NULL);
    m.data = NULL;
    m.size = 0;
    m.read = gen_read;
    m.read_arg = &g;
    rec = run_host(s, &m, &rc, &st, "reset in the middle of the content");
    assert_true(rc == TM_ECLOSED || rc == TM_EIO);
    ATK_EQ(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DEFERRED);
    assert_non_null(strstr(st.description, "content"));
    got = atk_keep(hostile_field(rec, 0, "received", &len));
    assert_non_null(got);
    print_message("server read %zu bytes of content before the reset\n", len);
    assert_true(len > (1u << 20) / 2 && len < (4u << 20));
    free(got);
    free(rec);
    free(s);
}

/* Closed right after the final dot: uncertain, one connection only (no
 * retry that could duplicate the message). */
void loss_after_dot(void **state)
{
    char *s = atk_fmt("{\"linger\": 0.5, \"connections\": [[%s{\"expect_data\": true}, "
                      "{\"close\": true}]]}",
                      before_data);
    const atk_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\n", NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, &rc, &st, "close after the dot");
    atk_check(rec, rc, &st, &w);
    assert_int_equal(st.rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_int_equal(st.code, 0);
    free(rec);
    free(s);
}

/* The same inside TLS, with a clean close_notify: still uncertain.  The
 * server offers PIPELINING, so QUIT went with the dot. */
void loss_after_dot_tls(void **state)
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
        const atk_want w = { TM_EUNCERTAIN, TM_RESULT_UNCERTAIN, 1, 1, TM_TLS_FAILURE_NONE, 1, NULL,
                             NULL, EHLO_L "STARTTLS\r\n",
                             EHLO_L FROM_L RCPT_L "DATA\r\n" BODY ".\r\nQUIT\r\n" };
        atk_opts o = { 0 };
        tm_delivery_status st;
        char *rec;
        int rc;

        o.policy = atk_policy(p);
        rec = atk_run(s, &o, &rc, &st);
        atk_print(atk_policy_name(p), rc, &st);
        atk_check(rec, rc, &st, &w);
        free(rec);
    }
}

/* 250 to the dot, then the server closes before QUIT: delivered. */
void loss_after_final_reply(void **state)
{
    char *s = atk_fmt("{\"linger\": 0.3, \"connections\": [[%s{\"expect_data\": true}, "
                      "{\"send\": \"250 2.0.0 queued\\r\\n\"}, {\"close\": true}]]}",
                      before_data);
    const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_NOT_OFFERED, 1,
                         EHLO_L TX, NULL, NULL, NULL };
    tm_delivery_status st;
    int rc;
    char *rec;
    (void)state;

    rec = run_host(s, NULL, &rc, &st, "close after the final reply");
    atk_check(rec, rc, &st, &w);
    assert_string_equal(st.enhanced_code, "2.0.0");
    assert_int_equal(st.rcpt[0].result, TM_RESULT_DELIVERED);
    free(rec);
    free(s);
}

/* A TLS fault after the 220 to STARTTLS, under each policy: a new
 * plaintext connection carries the message, or (require_tls) nothing.
 * On the failed connection only TLS records follow STARTTLS: no plaintext
 * QUIT, no envelope. */
static void tls_fault(const char *fault, const char *what)
{
    char *c0 = atk_fmt("[" GREET EHLO_TLS "{\"expect\": \"STARTTLS\"}, {\"send\": \"220 go\\r\\n\"}, %s]",
                       fault);
    char *two = atk_fmt("{\"linger\": 0.3, \"connections\": [%s, [{\"send\": \"220 second\\r\\n\"}, "
                        AUTO_TLS "]]}", c0);
    char *one = atk_fmt("{\"linger\": 0.3, \"connections\": [%s]}", c0);
    const size_t pre = strlen(EHLO_L "STARTTLS\r\n");
    int p;

    for (p = 0; p < POL_N; p++) {
        atk_opts o = { 0 };
        tm_delivery_status st;
        char label[120];
        size_t len = 0;
        char *rec, *c;
        int rc;

        o.policy = atk_policy(p);
        rec = atk_run(POL_REQUIRES(p) ? one : two, &o, &rc, &st);
        snprintf(label, sizeof label, "%s [%s]", what, atk_policy_name(p));
        atk_print(label, rc, &st);
        if (POL_REQUIRES(p)) {
            const atk_want w = { TM_ETLSREQUIRED, TM_RESULT_DEFERRED, 0, 0,
                                 TM_TLS_FAILURE_HANDSHAKE, 1, NULL, NULL, NULL, NULL };
            atk_check(rec, rc, &st, &w);
            atk_no_envelope_in_plain(rec);
        } else {
            const atk_want w = { TM_OK, TM_RESULT_DELIVERED, 0, 0, TM_TLS_FAILURE_HANDSHAKE, 2,
                                 NULL, EHLO_L TX, NULL, NULL };
            atk_check(rec, rc, &st, &w);
            assert_int_equal(st.attempt_no, 2);
        }
        assert_true(st.tls_error[0] != '\0');
        c = atk_keep(hostile_field(rec, 0, "received", &len));
        assert_non_null(c);
        assert_true(len >= pre);
        assert_memory_equal(c, EHLO_L "STARTTLS\r\n", pre);
        if (len > pre && c[pre] != 0x16 && c[pre] != 0x15) {
            print_error("plaintext after the failed handshake: [%.*s]\n", (int)(len - pre), c + pre);
            fail();
        }
        free(c);
        assert_false(atk_field_has(rec, 0, "received", "QUIT"));
        free(rec);
    }
    free(c0);
    free(two);
    free(one);
}

void tls_alert(void **state)
{
    (void)state;
    tls_fault("{\"tls_alert\": true}", "alert");
}

void tls_garbage(void **state)
{
    (void)state;
    tls_fault("{\"tls_garbage\": \"HTTP/1.0 400 Bad Request\\r\\n\\r\\n\"}", "garbage");
}

void tls_fin_after_220(void **state)
{
    (void)state;
    tls_fault("{\"close\": true}", "FIN after 220");
}
