/*
 * test_old_caller.c - struct versions (libgit2's rule: 0 < version <=
 * CURRENT, anything else TM_EINVAL), seen from a caller compiled against an
 * older header: a version-1 tm_message (the 0.1 layout, declared here under
 * another name) in a heap block of exactly its size, so that ASan reports
 * any read or write past it.  Deliveries go to a loopback port held bound
 * but not listening by this test: the connection is refused, the result is
 * an honest TM_ECONNECT deferral - proof that the version was accepted.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tlsmail.h"

/* tm_message as libtlsmail 0.1 declared it (TM_MESSAGE_VERSION 1). */
typedef struct old_message_v1 {
    unsigned int version;
    const char *from;
    const char *const *to;
    size_t to_count;
    const void *data;
    size_t size;
    tm_read_fn read;
    void *read_arg;
    const char *sending_domain;
} old_message_v1;

/* Version 2 grew at the end only: the common prefix is the same (C99's
 * static assertion: a negative array size does not compile). */
typedef char v2_extends_v1_at_its_end[sizeof(old_message_v1) == offsetof(tm_message, rcpt_status)
                                          ? 1
                                          : -1];

/* tm_context_options version 1 (0.2.0 before ca_path): ends at log_level. */
#define OPTIONS_V1_SIZE offsetof(tm_context_options, ca_path)

static tm_context *ctx;
static int refusing_fd = -1;
static unsigned int refusing_port_num;

static const char *const rcpts[] = { "someone@abi.tm.test" };
static const char body[] = "Subject: abi\r\n\r\nold caller\r\n";

/* A TCP port on 127.0.0.1 that refuses connections for the whole run: a
 * socket bound to it and never listening (the kernel answers RST), so no
 * other process can be listening there. */
static int hold_refusing_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;

    refusing_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (refusing_fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(refusing_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(refusing_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    refusing_port_num = ntohs(a.sin_port);
    return 0;
}

static int group_setup(void **state)
{
    tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
    (void)state;
    if (hold_refusing_port() != 0)
        return -1;
    o.connect_timeout_ms = 5000;
    o.command_timeout_ms = 5000;
    o.helo_name = "client.tm.test";
    return tm_context_new(&ctx, &o) == TM_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tm_context_free(ctx);
    if (refusing_fd >= 0)
        close(refusing_fd);
    return 0;
}

/* A status of the current version.  (TM_STATUS_INIT is { version } only,
 * which -Wextra's -Wmissing-field-initializers rejects under -Werror.) */
static tm_delivery_status current_status(void)
{
    tm_delivery_status st;
    memset(&st, 0, sizeof st);
    st.version = TM_STATUS_VERSION;
    return st;
}

static tm_session_options refusing_host(void)
{
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    so.host = "127.0.0.1";
    so.port = refusing_port_num;
    return so;
}

/* A version-1 message in a heap block of exactly sizeof(old_message_v1). */
static old_message_v1 *new_v1_message(void)
{
    old_message_v1 *m = malloc(sizeof *m);
    assert_non_null(m);
    m->version = 1;
    m->from = "sender@tm.test";
    m->to = rcpts;
    m->to_count = 1;
    m->data = body;
    m->size = sizeof body - 1;
    m->read = NULL;
    m->read_arg = NULL;
    m->sending_domain = NULL;
    return m;
}

static void v1_message_is_accepted(void **state)
{
    old_message_v1 *m = new_v1_message();
    tm_session_options so = refusing_host();
    tm_delivery_status st = current_status();
    int rc;
    (void)state;

    rc = tm_deliver(ctx, (const tm_message *)m, NULL, &so, &st);
    print_message("v1 message: rc=%d (%s) result=%s desc=%s\n", rc, tm_strerror(rc),
                  tm_result_name(st.result), st.description);
    assert_int_equal(rc, TM_ECONNECT);
    assert_int_equal(st.error, TM_ECONNECT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.version, TM_STATUS_VERSION);
    free(m);
}

static void v2_message_with_rcpt_array_is_accepted(void **state)
{
    tm_rcpt_status *out = calloc(1, sizeof *out); /* exactly rcpt_status_cap entries */
    tm_session_options so = refusing_host();
    tm_delivery_status st = current_status();
    tm_message m = TM_MESSAGE_INIT;
    int rc;
    (void)state;

    assert_non_null(out);
    m.from = "sender@tm.test";
    m.to = rcpts;
    m.to_count = 1;
    m.data = body;
    m.size = sizeof body - 1;
    m.rcpt_status = out;
    m.rcpt_status_cap = 1;
    rc = tm_deliver(ctx, &m, NULL, &so, &st);
    assert_int_equal(rc, TM_ECONNECT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    free(out);
}

static void message_versions_out_of_range_are_refused(void **state)
{
    old_message_v1 *m = new_v1_message();
    tm_message cur = TM_MESSAGE_INIT;
    tm_session_options so = refusing_host();
    tm_delivery_status st = current_status();
    (void)state;

    m->version = 0;
    assert_int_equal(tm_deliver(ctx, (const tm_message *)m, NULL, &so, &st), TM_EINVAL);
    assert_int_equal(st.error, TM_EINVAL);
    free(m);

    cur.from = "sender@tm.test";
    cur.to = rcpts;
    cur.to_count = 1;
    cur.data = body;
    cur.size = sizeof body - 1;
    cur.version = TM_MESSAGE_VERSION + 1;
    assert_int_equal(tm_deliver(ctx, &cur, NULL, &so, &st), TM_EINVAL);
    cur.version = 0;
    assert_int_equal(tm_deliver(ctx, &cur, NULL, &so, &st), TM_EINVAL);
    cur.version = TM_MESSAGE_VERSION;
    assert_int_equal(tm_deliver(ctx, &cur, NULL, &so, &st), TM_ECONNECT);
}

static void status_versions_out_of_range_are_refused(void **state)
{
    tm_message m = TM_MESSAGE_INIT;
    tm_session_options so = refusing_host();
    tm_delivery_status st;
    char json[64];
    unsigned int bad[] = { 0, 1, TM_STATUS_VERSION + 1 };
    size_t i;
    (void)state;

    m.from = "sender@tm.test";
    m.to = rcpts;
    m.to_count = 1;
    m.data = body;
    m.size = sizeof body - 1;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&st, 0, sizeof st);
        st.version = bad[i];
        assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EINVAL);
        assert_int_equal(tm_status_json(&st, NULL, 0, json, sizeof json), TM_EINVAL);
        assert_int_equal(tm_status_init(&st, bad[i]), TM_EINVAL);
    }
}

static void zero_policy_is_the_default(void **state)
{
    tm_message m = TM_MESSAGE_INIT;
    tm_session_options so = refusing_host();
    tm_delivery_status st = current_status();
    tm_policy zero;
    tm_policy p;
    (void)state;

    memset(&zero, 0, sizeof zero);
    m.from = "sender@tm.test";
    m.to = rcpts;
    m.to_count = 1;
    m.data = body;
    m.size = sizeof body - 1;
    assert_int_equal(tm_deliver(ctx, &m, &zero, &so, &st), TM_ECONNECT);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
    assert_int_equal(st.policy.require_tls, 0);
    assert_int_equal(st.policy.skip_verify, 0);
    assert_int_equal(st.policy.keep_unverified_tls, 0);

    assert_int_equal(tm_domain_policy_set(ctx, "zero.tm.test", &zero), TM_OK);
    assert_int_equal(tm_domain_policy_delete(ctx, "zero.tm.test"), TM_OK);

    memset(&p, 0xff, sizeof p);
    assert_int_equal(tm_policy_init(&p, TM_POLICY_VERSION), TM_OK);
    assert_int_equal(p.version, TM_POLICY_VERSION);
    assert_int_equal(p.require_tls, 0);
    assert_int_equal(p.skip_verify, 0);
    assert_int_equal(p.keep_unverified_tls, 0);

    p.version = TM_POLICY_VERSION + 1;
    assert_int_equal(tm_deliver(ctx, &m, &p, &so, &st), TM_EINVAL);
}

/* A buffer of n bytes followed by a guard zone that init must not touch
 * (caught without ASan too). */
#define GUARD 64
static unsigned char *guarded(size_t n)
{
    unsigned char *b = malloc(n + GUARD);
    assert_non_null(b);
    memset(b, 0xa5, n + GUARD);
    return b;
}

static void guard_intact(const unsigned char *b, size_t n)
{
    size_t i;
    for (i = n; i < n + GUARD; i++)
        assert_int_equal(b[i], 0xa5);
}

static void init_functions_honour_the_version(void **state)
{
    unsigned char *b;
    tm_policy p;
    tm_delivery_status st;
    tm_message m;
    tm_context_options co;
    tm_session_options so;
    (void)state;

    /* A v1 caller's init writes the v1 struct and nothing past it. */
    b = guarded(sizeof(old_message_v1));
    assert_int_equal(tm_message_init((tm_message *)b, 1), TM_OK);
    guard_intact(b, sizeof(old_message_v1));
    assert_int_equal(((old_message_v1 *)b)->version, 1);
    assert_null(((old_message_v1 *)b)->from);
    assert_int_equal(((old_message_v1 *)b)->to_count, 0);
    free(b);

    assert_int_equal(tm_message_init(&m, TM_MESSAGE_VERSION), TM_OK);
    assert_int_equal(m.version, TM_MESSAGE_VERSION);
    assert_null(m.rcpt_status);
    assert_int_equal(m.rcpt_status_cap, 0);
    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(st.version, TM_STATUS_VERSION);
    assert_int_equal(st.result, TM_RESULT_NONE);
    assert_int_equal(tm_context_options_init(&co, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    assert_int_equal(co.version, TM_CONTEXT_OPTIONS_VERSION);
    assert_int_equal(tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION), TM_OK);
    assert_int_equal(so.version, TM_SESSION_OPTIONS_VERSION);

    /* Unknown versions: refused. */
    assert_int_equal(tm_policy_init(&p, TM_POLICY_VERSION + 1), TM_EINVAL);
    assert_int_equal(tm_message_init(&m, 0), TM_EINVAL);
    assert_int_equal(tm_message_init(&m, TM_MESSAGE_VERSION + 1), TM_EINVAL);
    assert_int_equal(tm_status_init(&st, 0), TM_EINVAL);
    assert_int_equal(tm_status_init(&st, 1), TM_EINVAL);
    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION + 1), TM_EINVAL);
    assert_int_equal(tm_context_options_init(&co, 0), TM_EINVAL);
    assert_int_equal(tm_context_options_init(&co, TM_CONTEXT_OPTIONS_VERSION + 1), TM_EINVAL);
    assert_int_equal(tm_session_options_init(&so, 0), TM_EINVAL);
    assert_int_equal(tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION + 1), TM_EINVAL);

    /* NULL: refused. */
    assert_int_equal(tm_policy_init(NULL, TM_POLICY_VERSION), TM_EINVAL);
    assert_int_equal(tm_message_init(NULL, TM_MESSAGE_VERSION), TM_EINVAL);
    assert_int_equal(tm_status_init(NULL, TM_STATUS_VERSION), TM_EINVAL);
    assert_int_equal(tm_context_options_init(NULL, TM_CONTEXT_OPTIONS_VERSION), TM_EINVAL);
    assert_int_equal(tm_session_options_init(NULL, TM_SESSION_OPTIONS_VERSION), TM_EINVAL);
}

/* A v1 caller's options: init writes nothing past them, and
 * tm_context_new reads nothing past them (a ca_path-shaped pointer to
 * garbage right behind would otherwise make it fail with TM_ECAFILE). */
static void v1_context_options_are_accepted(void **state)
{
    unsigned char *b;
    tm_context_options *o;
    tm_context *c = NULL;
    (void)state;

    b = guarded(OPTIONS_V1_SIZE);
    assert_int_equal(tm_context_options_init((tm_context_options *)b, 1), TM_OK);
    guard_intact(b, OPTIONS_V1_SIZE);
    free(b);

    /* The block is sized for the current version so that the bytes behind
     * v1's end can hold what a ca_path would be: a path that does not exist. */
    o = calloc(1, sizeof *o);
    assert_non_null(o);
    assert_int_equal(tm_context_options_init(o, 1), TM_OK);
    o->helo_name = "client.tm.test";
    o->ca_path = "/nonexistent/ca/path";
    assert_int_equal(tm_context_new(&c, o), TM_OK);
    tm_context_free(c);
    /* As version 2 the same options name that directory: refused. */
    o->version = 2;
    assert_int_equal(tm_context_new(&c, o), TM_ECAFILE);
    assert_null(c);
    free(o);
}

static void option_versions_out_of_range_are_refused(void **state)
{
    tm_context_options co = TM_CONTEXT_OPTIONS_INIT;
    tm_session_options so = refusing_host();
    tm_delivery_status st = current_status();
    tm_context *c = NULL;
    tm_session *s = NULL;
    tm_message m = TM_MESSAGE_INIT;
    (void)state;

    co.version = 0;
    assert_int_equal(tm_context_new(&c, &co), TM_EINVAL);
    assert_null(c);
    co.version = TM_CONTEXT_OPTIONS_VERSION + 1;
    assert_int_equal(tm_context_new(&c, &co), TM_EINVAL);
    assert_null(c);

    so.version = 0;
    assert_int_equal(tm_session_open(&s, ctx, "abi.tm.test", &so, &st), TM_EINVAL);
    assert_null(s);
    so.version = TM_SESSION_OPTIONS_VERSION + 1;
    assert_int_equal(tm_session_open(&s, ctx, "abi.tm.test", &so, &st), TM_EINVAL);
    assert_null(s);

    m.from = "sender@tm.test";
    m.to = rcpts;
    m.to_count = 1;
    m.data = body;
    m.size = sizeof body - 1;
    assert_int_equal(tm_deliver(ctx, &m, NULL, &so, &st), TM_EINVAL);

    /* The current versions reach the network (and are refused there). */
    so.version = TM_SESSION_OPTIONS_VERSION;
    assert_int_equal(tm_session_open(&s, ctx, "abi.tm.test", &so, &st), TM_ECONNECT);
    assert_null(s);
    assert_int_equal(st.result, TM_RESULT_DEFERRED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_message_is_accepted),
        cmocka_unit_test(v2_message_with_rcpt_array_is_accepted),
        cmocka_unit_test(message_versions_out_of_range_are_refused),
        cmocka_unit_test(status_versions_out_of_range_are_refused),
        cmocka_unit_test(zero_policy_is_the_default),
        cmocka_unit_test(init_functions_honour_the_version),
        cmocka_unit_test(option_versions_out_of_range_are_refused),
        cmocka_unit_test(v1_context_options_are_accepted),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
