/*
 * test_content_postfix.c - the content as a real Postfix stores it
 * (tests/peers/peers.py, checked in its maildir): SMTP smuggling
 * end-of-data variants arrive as one normalised message, long lines are
 * broken, a message without a final newline still ends, streamed 8-bit
 * content arrives whole, and bad input (CR/LF in addresses, NUL in content)
 * is refused before anything is sent.  The same against the hostile server
 * is test_content.c.
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

/* SMTP smuggling end-of-data variants arrive normalised, in one message. */
static void smuggling_variants(void **state)
{
    static const char *const variants[] = { "\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n",
                                            "\r\n.\r", "\r\n.\r\r\n" };
    char local[64], to_addr[128], body[2048];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    size_t i, len;
    char *got;
    (void)state;

    PEERS_STATUS(st);
    unique_local(local, sizeof local, "smuggle");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    len = (size_t)snprintf(body, sizeof body, "Subject: smuggling\r\n\r\nstart");
    for (i = 0; i < sizeof variants / sizeof variants[0]; i++)
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "%sMAIL FROM:<evil@tm.test>\r\nRCPT TO:<victim%zu@" DOMAIN
                                ">\r\nDATA\r\nsmuggled %zu\r\n",
                                variants[i], i, i);
    len += (size_t)snprintf(body + len, sizeof body - len, "end");
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = len;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_non_null(strstr(got, "smuggled 6"));
    assert_true(ends_with(got, "end\n"));
    free(got);
    sleep_ms(300);
    assert_int_equal(maildir_count(DOMAIN, local), 1);
    for (i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char victim[32];
        snprintf(victim, sizeof victim, "victim%zu", i);
        assert_int_equal(maildir_count(DOMAIN, victim), 0);
    }
}

/* A long line and a message without a final newline. */
static void long_line_no_newline(void **state)
{
    char local[64], to_addr[128];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    char *body, *got, *p;
    size_t i;
    (void)state;

    PEERS_STATUS(st);
    unique_local(local, sizeof local, "long");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    body = malloc(4096);
    assert_non_null(body);
    strcpy(body, "Subject: long\r\n\r\n");
    p = body + strlen(body);
    for (i = 0; i < 2500; i++)
        *p++ = (char)('a' + i % 26);
    strcpy(p, "\r\nno newline at the end");
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_true(ends_with(got, "\nno newline at the end\n"));
    /* No stored line is longer than 998 octets. */
    for (p = got; *p;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        assert_true(l <= 998);
        p += l + (nl != NULL);
    }
    free(got);
    free(body);
}

/* Streaming content from a read callback, 8-bit text. */
struct src {
    const char *p;
    size_t left;
};

static long read_src(void *arg, unsigned char *buf, size_t size)
{
    struct src *s = arg;
    size_t n = s->left < 7 ? s->left : 7; /* small pieces: exercise the seams */
    (void)size;
    memcpy(buf, s->p, n);
    s->p += n;
    s->left -= n;
    return (long)n;
}

static void streamed(void **state)
{
    static const char body[] = "Subject: streamed\r\n\r\nGr\xc3\xbc\xc3\x9f"
                               "e\r\n.dot\r\nend\r\n";
    char local[64], to_addr[128];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    struct src src = { body, sizeof body - 1 };
    char *got;
    (void)state;

    PEERS_STATUS(st);
    unique_local(local, sizeof local, "stream");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.read = read_src;
    m.read_arg = &src;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_OK);
    got = maildir_wait(DOMAIN, local, 1, 10000);
    assert_non_null(got);
    assert_true(ends_with(got, "\n\nGr\xc3\xbc\xc3\x9f"
                               "e\n.dot\nend\n"));
    free(got);
}

/* Bad input is refused before anything is sent. */
static void bad_input(void **state)
{
    const char *to[1] = { "a\r\nRCPT TO:<x@" DOMAIN ">@" DOMAIN };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_delivery_status st;
    (void)state;

    PEERS_STATUS(st);
    so.host = need_env("TM_TEST_MX_VALID");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = "x";
    m.size = 1;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EADDRESS);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(st.attempt_no, 0);
    to[0] = "ok@" DOMAIN;
    m.from = "bad\nsender@tm.test";
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EADDRESS);
    m.from = "sender@tm.test";
    m.data = "nul\0byte";
    m.size = 8;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_ECONTENT);
    assert_int_equal(st.result, TM_RESULT_BOUNCED);
    assert_int_equal(tm_deliver(NULL, &m, NULL, &so, &st), TM_EINVAL);
    assert_int_equal(tm_deliver(ctx, NULL, NULL, &so, &st), TM_EINVAL);
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, NULL), TM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(smuggling_variants),
        cmocka_unit_test(long_line_no_newline),
        cmocka_unit_test(streamed),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests_name("content-postfix", tests, group_setup, group_teardown);
}
