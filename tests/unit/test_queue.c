/*
 * test_queue.c - tm-send's queue entries (examples/queue.c): written and
 * read back with and without a user, an entry written before "user"
 * existed, the parser on damaged entries, what q_read refuses to open,
 * the user names accepted, and the retry schedule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue.h"

static char dir[64];

static int mk_tmp(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_queue.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int rm_tmp(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *name)
{
    char path[256];
    FILE *f;
    char *b = malloc(65536);
    size_t n;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_non_null(b);
    n = fread(b, 1, 65535, f);
    fclose(f);
    b[n] = '\0';
    return b;
}

static void put_file(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static const char message[] = "From: alice@example.org\r\nTo: bob@example.net\r\n\r\nhello\r\n";

static void round_trip(void **state)
{
    q_entry e, r;
    char name[256] = "", *text;
    struct stat sb;
    char path[512];
    (void)state;

    memset(&e, 0, sizeof e);
    snprintf(e.state, sizeof e.state, "deferred");
    e.from = (char *)"alice@example.org";
    snprintf(e.user, sizeof e.user, "alice");
    assert_int_equal(sm_list_add(&e.rcpts, "bob@example.net"), 0);
    assert_int_equal(sm_list_add(&e.rcpts, "carol@example.net"), 0);
    e.attempts = 3;
    e.first = 1700000000;
    e.next = 1700001200;
    snprintf(e.last, sizeof e.last, "deferred mx.example.net: 451 4.7.1 try\r\nlater");
    e.data = message;
    e.size = sizeof message - 1;

    assert_int_equal(q_write(dir, name, sizeof name, &e), 0);
    assert_memory_equal(name, "q-", 2);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    text = slurp(name);
    assert_string_equal(text, "tm-queue 1\n"
                              "state deferred\n"
                              "from alice@example.org\n"
                              "user alice\n"
                              "rcpt bob@example.net\n"
                              "rcpt carol@example.net\n"
                              "attempts 3\n"
                              "first 1700000000\n"
                              "next 1700001200\n"
                              "last deferred mx.example.net: 451 4.7.1 try  later\n"
                              "\n"
                              "From: alice@example.org\r\nTo: bob@example.net\r\n\r\nhello\r\n");
    free(text);

    assert_int_equal(q_read(dir, name, &r), 0);
    assert_string_equal(r.state, "deferred");
    assert_string_equal(r.from, "alice@example.org");
    assert_string_equal(r.user, "alice");
    assert_int_equal(r.rcpts.n, 2);
    assert_string_equal(r.rcpts.v[0], "bob@example.net");
    assert_string_equal(r.rcpts.v[1], "carol@example.net");
    assert_int_equal(r.attempts, 3);
    assert_true(r.first == 1700000000 && r.next == 1700001200);
    assert_string_equal(r.last, "deferred mx.example.net: 451 4.7.1 try  later");
    assert_int_equal(r.size, sizeof message - 1);
    assert_memory_equal(r.data, message, r.size);

    /* rewritten in place without a user: no user line, and none read */
    r.user[0] = '\0';
    snprintf(r.state, sizeof r.state, "held");
    assert_int_equal(q_write(dir, name, sizeof name, &r), 0);
    q_free(&r);
    text = slurp(name);
    assert_null(strstr(text, "\nuser"));
    assert_non_null(strstr(text, "\nstate held\n"));
    free(text);
    assert_int_equal(q_read(dir, name, &r), 0);
    assert_string_equal(r.user, "");
    assert_string_equal(r.state, "held");
    assert_int_equal(r.rcpts.n, 2);
    assert_memory_equal(r.data, message, r.size);
    q_free(&r);
    assert_null(r.buf);

    /* the null sender */
    e.from = (char *)"";
    name[0] = '\0';
    assert_int_equal(q_write(dir, name, sizeof name, &e), 0);
    assert_int_equal(q_read(dir, name, &r), 0);
    assert_string_equal(r.from, "");
    q_free(&r);
    assert_int_equal(q_remove(dir, name), 0);
    assert_int_equal(q_read(dir, name, &r), -1);
    assert_int_equal(errno, ENOENT);

    /* what would not read back is not written */
    e.from = (char *)"alice@example.org\nrcpt evil@example.com";
    name[0] = '\0';
    errno = 0;
    assert_int_equal(q_write(dir, name, sizeof name, &e), -1);
    assert_int_equal(errno, EINVAL);
    e.from = (char *)"alice@example.org";
    snprintf(e.user, sizeof e.user, "../root");
    name[0] = '\0';
    errno = 0;
    assert_int_equal(q_write(dir, name, sizeof name, &e), -1);
    assert_int_equal(errno, EINVAL);
    memset(e.user, 'u', sizeof e.user); /* no NUL in it */
    name[0] = '\0';
    errno = 0;
    assert_int_equal(q_write(dir, name, sizeof name, &e), -1);
    assert_int_equal(errno, EINVAL);
    sm_list_free(&e.rcpts);
}

/* An entry as tm-send wrote it before the user line existed. */
static void old_entry(void **state)
{
    q_entry r;
    (void)state;

    put_file("q-old", "tm-queue 1\n"
                      "state deferred\n"
                      "from a@example.org\n"
                      "rcpt b@example.net\n"
                      "attempts 1\n"
                      "first 1690000000\n"
                      "next 1690000300\n"
                      "last deferred -: no MX answered\n"
                      "\n"
                      "Subject: old\n\nbody\n");
    assert_int_equal(q_read(dir, "q-old", &r), 0);
    assert_string_equal(r.state, "deferred");
    assert_string_equal(r.from, "a@example.org");
    assert_string_equal(r.user, "");
    assert_int_equal(r.rcpts.n, 1);
    assert_string_equal(r.rcpts.v[0], "b@example.net");
    assert_int_equal(r.attempts, 1);
    assert_true(r.first == 1690000000 && r.next == 1690000300);
    assert_string_equal(r.last, "deferred -: no MX answered");
    assert_int_equal(r.size, 19);
    assert_memory_equal(r.data, "Subject: old\n\nbody\n", 19);
    q_free(&r);
}

static int parse_text(const char *text, size_t len, q_entry *e)
{
    char *buf = malloc(len ? len : 1);

    assert_non_null(buf);
    memcpy(buf, text, len);
    return q_parse(buf, len, e); /* buf is the entry's now, or freed */
}

static void parse_garbage(void **state)
{
#define GOOD_TAIL "from a@x\nrcpt b@y\nattempts 1\nfirst 1\nnext 2\n"
    static const char *const bad[] = {
        "",
        "tm-queue 1",
        "tm-queue 1\n",
        "tm-queue 2\nstate deferred\n" GOOD_TAIL "\n",
        "TM-QUEUE 1\nstate deferred\n" GOOD_TAIL "\n",
        "Subject: not an entry\n\nbody\n",
        /* no empty line */
        "tm-queue 1\nstate deferred\n" GOOD_TAIL,
        /* a key without a value */
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "last\n\n",
        /* a field missing */
        "tm-queue 1\n" GOOD_TAIL "\n",
        "tm-queue 1\nstate deferred\nrcpt b@y\nattempts 1\nfirst 1\nnext 2\n\n",
        "tm-queue 1\nstate deferred\nfrom a@x\nattempts 1\nfirst 1\nnext 2\n\n",
        "tm-queue 1\nstate deferred\nfrom a@x\nrcpt b@y\nattempts 1\nnext 2\n\n",
        "tm-queue 1\nstate deferred\nfrom a@x\nrcpt b@y\nattempts 1\nfirst 1\n\n",
        /* values that are not */
        "tm-queue 1\nstate sending\n" GOOD_TAIL "\n",
        "tm-queue 1\nstate deferred\r\n" GOOD_TAIL "\n",
        "tm-queue 1\nstate \n" GOOD_TAIL "\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "attempts many\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "attempts -1\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "attempts 4294967296\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "first 12x\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "next 99999999999999999999\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "next \n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "rcpt \n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "user ../etc\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "user a b\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL "user -rf\n\n",
        "tm-queue 1\nstate deferred\n" GOOD_TAIL
        "user aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\n",
    };
    q_entry e;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse_text(bad[i], strlen(bad[i]), &e);
        if (rc != -2)
            fail_msg("entry %zu parsed (%d): %s", i, rc, bad[i]);
        assert_null(e.buf);
        assert_null(e.from);
        assert_int_equal(e.rcpts.n, 0);
    }

    /* the smallest good entry, a newer tm-send's key, a user of 63 */
    {
        static const char good[] =
            "tm-queue 1\nstate attempting\n" GOOD_TAIL "priority high\n"
            "user aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\n";
        assert_int_equal(parse_text(good, sizeof good - 1, &e), 0);
        assert_string_equal(e.state, "attempting");
        assert_int_equal(strlen(e.user), 63);
        assert_int_equal(e.size, 0);
        assert_int_equal(e.first, 1);
        assert_int_equal(e.next, 2);
        q_free(&e);
    }
    /* not NUL-terminated: the parser stays inside len */
    {
        static const char good[] = "tm-queue 1\nstate held\n" GOOD_TAIL "user bob\n\nX";
        assert_int_equal(parse_text(good, sizeof good - 1, &e), 0);
        assert_string_equal(e.user, "bob");
        assert_int_equal(e.size, 1);
        assert_int_equal(e.data[0], 'X');
        q_free(&e);
    }
#undef GOOD_TAIL
}

static void read_refusals(void **state)
{
    static const char entry[] = "tm-queue 1\nstate deferred\nfrom a@x\nrcpt b@y\nattempts 1\n"
                                "first 1\nnext 2\n\nbody\n";
    char target[256], lnk[256];
    q_entry e;
    (void)state;

    put_file("q-real", entry);
    assert_int_equal(q_read(dir, "q-real", &e), 0);
    q_free(&e);
    /* a symbolic link to a good entry is not followed */
    snprintf(target, sizeof target, "%s/q-real", dir);
    snprintf(lnk, sizeof lnk, "%s/q-link", dir);
    assert_int_equal(symlink(target, lnk), 0);
    assert_int_equal(q_read(dir, "q-link", &e), -2);
    assert_null(e.buf);
    /* nor is a FIFO opened (it would block) or a directory read */
    snprintf(target, sizeof target, "%s/q-fifo", dir);
    assert_int_equal(mkfifo(target, 0600), 0);
    alarm(10);
    assert_int_equal(q_read(dir, "q-fifo", &e), -2);
    alarm(0);
    snprintf(target, sizeof target, "%s/q-dir", dir);
    assert_int_equal(mkdir(target, 0700), 0);
    assert_int_equal(q_read(dir, "q-dir", &e), -2);
    /* and a file that is no entry */
    put_file("q-junk", "hello\n");
    assert_int_equal(q_read(dir, "q-junk", &e), -2);
    errno = 0;
    assert_int_equal(q_read(dir, "q-missing", &e), -1);
    assert_int_equal(errno, ENOENT);
}

static void user_names(void **state)
{
    static const char *const ok[] = {"alice", "www-data", "a", "user.name", "svc_1",
                                     "MACHINE$", "first.last@corp"};
    static const char *const no[] = {"", ".", "..", "-x", "a/b", "a b", "a\tb", "caf\xc3\xa9",
                                     "a\x7f",
                                     "0123456789012345678901234567890123456789012345678901234567890123"};
    size_t i;
    (void)state;

    for (i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!q_user_ok(ok[i]))
            fail_msg("refused: %s", ok[i]);
    for (i = 0; i < sizeof no / sizeof *no; i++)
        if (q_user_ok(no[i]))
            fail_msg("accepted: %s", no[i]);
    assert_true(q_user_ok("012345678901234567890123456789012345678901234567890123456789012"));
}

static void backoff(void **state)
{
    (void)state;
    assert_int_equal(q_backoff(1), 300);
    assert_int_equal(q_backoff(2), 600);
    assert_int_equal(q_backoff(3), 1200);
    assert_int_equal(q_backoff(6), 9600);
    assert_int_equal(q_backoff(7), 14400);
    assert_int_equal(q_backoff(100), 14400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip, mk_tmp, rm_tmp),
        cmocka_unit_test_setup_teardown(old_entry, mk_tmp, rm_tmp),
        cmocka_unit_test(parse_garbage),
        cmocka_unit_test_setup_teardown(read_refusals, mk_tmp, rm_tmp),
        cmocka_unit_test(user_names),
        cmocka_unit_test(backoff),
    };
    return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
