/*
 * test_settings.c - connection settings: the resolution rules as a table
 * (every combination of message, sending domain and recipient floor), the
 * tables' set/get/delete/list, the file format, and readers and writers on
 * two threads (run under ThreadSanitizer in CI).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static const int values[3] = { TM_UNSET, TM_ON, TM_OFF };

/* The rule, written independently of the implementation. */
static int expect_flag(int message, int domain, int *source)
{
    if (message) {
        *source = TM_SOURCE_MESSAGE;
        return message > 0;
    }
    if (domain) {
        *source = TM_SOURCE_SENDING_DOMAIN;
        return domain > 0;
    }
    *source = TM_SOURCE_DEFAULT;
    return 0;
}

/* 3^3 message x 3^3 domain x 4 floors. */
static void resolution_table(void **state)
{
    int mr, ms, mk, dr, ds, dk, floor, rows = 0;
    (void)state;

    for (mr = 0; mr < 3; mr++)
    for (ms = 0; ms < 3; ms++)
    for (mk = 0; mk < 3; mk++)
    for (dr = 0; dr < 3; dr++)
    for (ds = 0; ds < 3; ds++)
    for (dk = 0; dk < 3; dk++)
    for (floor = TM_FLOOR_NONE; floor <= TM_FLOOR_DANE; floor++) {
        tm_policy m = TM_POLICY_INIT, d = TM_POLICY_INIT;
        tm_resolved r;
        int src_r, src_s, src_k, want_r, want_s, want_k;

        m.require_tls = values[mr];
        m.skip_verify = values[ms];
        m.keep_unverified_tls = values[mk];
        d.require_tls = values[dr];
        d.skip_verify = values[ds];
        d.keep_unverified_tls = values[dk];
        tm__policy_resolve(&m, &d, floor, &r);

        want_r = expect_flag(m.require_tls, d.require_tls, &src_r);
        want_s = expect_flag(m.skip_verify, d.skip_verify, &src_s);
        want_k = expect_flag(m.keep_unverified_tls, d.keep_unverified_tls, &src_k);
        if (floor >= TM_FLOOR_TLS && !want_r) {
            want_r = 1;
            src_r = TM_SOURCE_RECIPIENT_FLOOR;
        }
        if ((floor == TM_FLOOR_VERIFIED || floor == TM_FLOOR_DANE) && want_s) {
            want_s = 0;
            src_s = TM_SOURCE_RECIPIENT_FLOOR;
        }
        assert_int_equal(r.policy.require_tls, want_r);
        assert_int_equal(r.policy.skip_verify, want_s);
        assert_int_equal(r.policy.keep_unverified_tls, want_k);
        assert_int_equal(r.require_tls_source, src_r);
        assert_int_equal(r.skip_verify_source, src_s);
        assert_int_equal(r.keep_unverified_tls_source, src_k);
        assert_int_equal(r.floor, floor);
        /* Nothing weakens a floor. */
        if (floor >= TM_FLOOR_TLS)
            assert_int_equal(r.policy.require_tls, 1);
        if (floor >= TM_FLOOR_VERIFIED)
            assert_int_equal(r.policy.skip_verify, 0);
        rows++;
    }
    assert_int_equal(rows, 27 * 27 * 4);
}

static void resolution_nulls(void **state)
{
    tm_policy m = TM_POLICY_INIT;
    tm_resolved r;
    (void)state;

    tm__policy_resolve(NULL, NULL, TM_FLOOR_NONE, &r);
    assert_int_equal(r.policy.require_tls, 0);
    assert_int_equal(r.require_tls_source, TM_SOURCE_DEFAULT);
    m.skip_verify = TM_ON;
    tm__policy_resolve(&m, NULL, TM_FLOOR_NONE, &r);
    assert_int_equal(r.policy.skip_verify, 1);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_MESSAGE);
    assert_int_equal(r.policy.require_tls, 0);
}

static tm_context *new_ctx(void)
{
    tm_context *ctx = NULL;
    tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
    /* Any readable PEM bundle serves; the tests do not connect. */
    o.ca_file = getenv("TM_TEST_CA_BUNDLE") ? getenv("TM_TEST_CA_BUNDLE")
                                            : "/etc/ssl/certs/ca-certificates.crt";
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    return ctx;
}

static void tables(void **state)
{
    tm_context *ctx = new_ctx();
    tm_policy p = TM_POLICY_INIT, got;
    tm_resolved r;
    char list[1024];
    int floor;
    (void)state;

    p.require_tls = TM_ON;
    assert_int_equal(tm_domain_policy_set(ctx, "Example.COM.", &p), TM_OK);
    assert_int_equal(tm_domain_policy_get(ctx, "example.com", &got), TM_OK);
    assert_int_equal(got.require_tls, TM_ON);
    assert_int_equal(got.skip_verify, TM_UNSET);
    /* Replace. */
    p.require_tls = TM_OFF;
    p.skip_verify = TM_ON;
    assert_int_equal(tm_domain_policy_set(ctx, "EXAMPLE.com", &p), TM_OK);
    assert_int_equal(tm_domain_policy_get(ctx, "example.com.", &got), TM_OK);
    assert_int_equal(got.require_tls, TM_OFF);
    assert_int_equal(got.skip_verify, TM_ON);
    assert_int_equal(tm_domain_policy_get(ctx, "other.com", &got), TM_ENOTFOUND);

    /* Invalid names and arguments. */
    assert_int_equal(tm_domain_policy_set(ctx, "", &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, "a b.com", &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, "user@example.com", &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, "bad\r\n.com", &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, "a..com", &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, NULL, &p), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(ctx, "x.com", NULL), TM_EINVAL);
    assert_int_equal(tm_domain_policy_set(NULL, "x.com", &p), TM_EINVAL);
    assert_int_equal(tm_recipient_floor_set(ctx, "x.com", 7), TM_EINVAL);
    assert_int_equal(tm_recipient_floor_set(ctx, "x.com", TM_FLOOR_DANE + 1), TM_EINVAL);
    assert_int_equal(tm_recipient_floor_set(ctx, "x.com", -1), TM_EINVAL);
    assert_int_equal(tm_recipient_floor_get(ctx, "x.com", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_NONE);

    assert_int_equal(tm_recipient_floor_set(ctx, "Bank.example", TM_FLOOR_VERIFIED), TM_OK);
    assert_int_equal(tm_recipient_floor_get(ctx, "bank.example.", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_VERIFIED);
    assert_int_equal(tm_recipient_floor_get(ctx, "nobank.example", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_NONE);

    /* Resolution through the tables: the message sets nothing, the domain
     * says skip_verify, the floor takes it back. */
    tm__settings_resolve(ctx, NULL, "example.com", "bank.example", &r);
    assert_int_equal(r.policy.require_tls, 1);
    assert_int_equal(r.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.floor, TM_FLOOR_VERIFIED);
    tm__settings_resolve(ctx, NULL, "EXAMPLE.COM", "elsewhere.example", &r);
    assert_int_equal(r.policy.require_tls, 0);
    assert_int_equal(r.require_tls_source, TM_SOURCE_SENDING_DOMAIN);
    assert_int_equal(r.policy.skip_verify, 1);

    /* The floor dane: kept, read back, and as strict as verified. */
    assert_int_equal(tm_recipient_floor_set(ctx, "D.example", TM_FLOOR_DANE), TM_OK);
    assert_int_equal(tm_recipient_floor_get(ctx, "d.example", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_DANE);
    tm__settings_resolve(ctx, NULL, "example.com", "d.example.", &r);
    assert_int_equal(r.floor, TM_FLOOR_DANE);
    assert_int_equal(r.policy.require_tls, 1);
    assert_int_equal(r.require_tls_source, TM_SOURCE_RECIPIENT_FLOOR);
    assert_int_equal(r.policy.skip_verify, 0);
    assert_int_equal(r.skip_verify_source, TM_SOURCE_RECIPIENT_FLOOR);

    {
        int n = tm_settings_list(ctx, list, sizeof list);
        assert_int_equal(n, (int)strlen(list));
    }
    assert_string_equal(list, "sending example.com require_tls=no skip_verify=yes\n"
                              "recipient bank.example floor=verified\n"
                              "recipient d.example floor=dane\n");
    /* snprintf semantics. */
    assert_int_equal(tm_settings_list(ctx, NULL, 0), (int)strlen(list));
    {
        int full = (int)strlen(list);
        assert_int_equal(tm_settings_list(ctx, list, 10), full);
        assert_int_equal(strlen(list), 9);
    }

    assert_int_equal(tm_domain_policy_delete(ctx, "example.com"), TM_OK);
    assert_int_equal(tm_domain_policy_delete(ctx, "example.com"), TM_ENOTFOUND);
    assert_int_equal(tm_recipient_floor_set(ctx, "bank.example", TM_FLOOR_NONE), TM_OK);
    assert_int_equal(tm_recipient_floor_set(ctx, "d.example", TM_FLOOR_NONE), TM_OK);
    assert_int_equal(tm_settings_list(ctx, list, sizeof list), 0);
    tm_context_free(ctx);
}

static char *write_temp(const char *text)
{
    static char path[64];
    int fd;
    snprintf(path, sizeof path, "/tmp/tm-settings-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (long)strlen(text));
    close(fd);
    return path;
}

static void file_format(void **state)
{
    tm_context *ctx = new_ctx();
    char list[1024];
    tm_policy got;
    int line = -1, floor;
    char *path;
    static const struct {
        const char *text;
        int line;
    } bad[] = {
        { "sending example.com require_tls=maybe\n", 1 },
        { "# ok\n\nsending example.com colour=blue\n", 3 },
        { "recipient example.com require_tls=yes\n", 1 },
        { "sending example.com floor=tls\n", 1 },
        { "sending\n", 1 },
        { "sending bad..name\n", 1 },
        { "mailbox example.com\n", 1 },
        { "sending a.com\nsending b.com require_tls\n", 2 },
        { "recipient a.com floor=strict\n", 1 },
        { "recipient a.com floor=dane-only\n", 1 },
        { "recipient a.com floor=4\n", 1 },
        { "sending a.com floor=dane\n", 1 },
    };
    size_t i;
    (void)state;

    path = write_temp("# settings\n"
                      "sending Example.com require_tls=yes skip_verify=no   # trailing comment\n"
                      "\n"
                      "sending news.example.com keep_unverified_tls=yes\n"
                      "recipient bank.example floor=verified\n"
                      "recipient mail.example floor=tls\n"
                      "recipient d.example floor=dane\n"
                      "recipient gone.example floor=tls\n"
                      "recipient gone.example floor=none\n");
    assert_int_equal(tm_settings_load(ctx, path, 1, &line), TM_OK);
    assert_int_equal(line, 0);
    unlink(path);
    assert_int_equal(tm_domain_policy_get(ctx, "example.com", &got), TM_OK);
    assert_int_equal(got.require_tls, TM_ON);
    assert_int_equal(got.skip_verify, TM_OFF);
    assert_int_equal(tm_recipient_floor_get(ctx, "gone.example", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_NONE);
    assert_int_equal(tm_recipient_floor_get(ctx, "d.example", &floor), TM_OK);
    assert_int_equal(floor, TM_FLOOR_DANE);
    tm_settings_list(ctx, list, sizeof list);
    assert_string_equal(list, "sending example.com require_tls=yes skip_verify=no\n"
                              "sending news.example.com keep_unverified_tls=yes\n"
                              "recipient bank.example floor=verified\n"
                              "recipient d.example floor=dane\n"
                              "recipient mail.example floor=tls\n");

    /* A bad file changes nothing and names the line. */
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char again[1024];
        path = write_temp(bad[i].text);
        assert_int_equal(tm_settings_load(ctx, path, 1, &line), TM_ESYNTAX);
        assert_int_equal(line, bad[i].line);
        unlink(path);
        tm_settings_list(ctx, again, sizeof again);
        assert_string_equal(again, list);
    }
    assert_int_equal(tm_settings_load(ctx, "/nonexistent/settings", 1, &line), TM_EIO);

    /* Save and load round trip, and merge without replace. */
    path = write_temp("");
    assert_int_equal(tm_settings_save(ctx, path), TM_OK);
    {
        tm_context *other = new_ctx();
        char copy[1024];
        char *more = NULL;
        assert_int_equal(tm_settings_load(other, path, 1, &line), TM_OK);
        tm_settings_list(other, copy, sizeof copy);
        assert_string_equal(copy, list);
        more = write_temp("sending extra.example require_tls=yes\n");
        assert_int_equal(tm_settings_load(other, more, 0, &line), TM_OK);
        unlink(more);
        assert_int_equal(tm_domain_policy_get(other, "extra.example", &got), TM_OK);
        assert_int_equal(tm_domain_policy_get(other, "example.com", &got), TM_OK);
        tm_context_free(other);
    }
    unlink(path);
    tm_context_free(ctx);
}

/* Readers and writers at once: every read sees a whole entry. */
struct race {
    tm_context *ctx;
    int stop;
    long reads, writes, torn, failed;
};

static void *writer(void *arg)
{
    struct race *r = arg;
    int i;
    for (i = 0; i < 20000; i++) {
        tm_policy p = TM_POLICY_INIT;
        char name[64];
        /* require_tls and skip_verify always equal: a torn read shows. */
        p.require_tls = p.skip_verify = (i & 1) ? TM_ON : TM_OFF;
        snprintf(name, sizeof name, "d%d.example", i % 50);
        if (tm_domain_policy_set(r->ctx, name, &p) != TM_OK)
            r->failed++; /* cmocka asserts belong to the main thread */
        if (i % 7 == 0)
            tm_domain_policy_delete(r->ctx, name);
        if (i % 11 == 0)
            tm_recipient_floor_set(r->ctx, name, i % 4);
        r->writes++;
    }
    __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *reader(void *arg)
{
    struct race *r = arg;
    int i = 0;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE) && i < 2000000) {
        tm_resolved res;
        char name[64];
        snprintf(name, sizeof name, "d%d.example", i % 50);
        tm__settings_resolve(r->ctx, NULL, name, "elsewhere.example", &res);
        if (res.policy.require_tls != res.policy.skip_verify)
            r->torn++;
        i++;
        r->reads++;
    }
    return NULL;
}

static void threads(void **state)
{
    struct race r;
    pthread_t w, rd;
    char list[8192];
    (void)state;

    memset(&r, 0, sizeof r);
    r.ctx = new_ctx();
    assert_int_equal(pthread_create(&rd, NULL, reader, &r), 0);
    assert_int_equal(pthread_create(&w, NULL, writer, &r), 0);
    pthread_join(w, NULL);
    pthread_join(rd, NULL);
    print_message("reads %ld, writes %ld\n", r.reads, r.writes);
    assert_true(r.reads > 0);
    assert_int_equal(r.torn, 0);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.writes, 20000);
    assert_true(tm_settings_list(r.ctx, list, sizeof list) > 0);
    tm_context_free(r.ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resolution_table),
        cmocka_unit_test(resolution_nulls),
        cmocka_unit_test(tables),
        cmocka_unit_test(file_format),
        cmocka_unit_test(threads),
    };
    return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}
