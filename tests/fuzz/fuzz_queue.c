/*
 * fuzz_queue.c - a queue entry's parser on arbitrary bytes, given (as
 * q_read gives it) a heap buffer it takes over: it refuses them, or
 * returns an entry whose fields are what the flush relies on.
 */
#include <string.h>

#include "fuzz.h"
#include "queue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, not NUL-terminated: reads past it are caught */
    char *buf = malloc(size ? size : 1);
    q_entry e;
    size_t i;
    int rc;

    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);
    rc = q_parse(buf, size, &e);
    FUZZ_CHECK(rc == 0 || rc == -1 || rc == -2);
    if (rc != 0) {
        FUZZ_CHECK(e.buf == NULL && e.from == NULL && e.rcpts.n == 0);
        return 0;
    }
    FUZZ_CHECK(e.buf == buf);
    FUZZ_CHECK(strcmp(e.state, "deferred") == 0 || strcmp(e.state, "attempting") == 0 ||
               strcmp(e.state, "held") == 0);
    FUZZ_CHECK(e.from != NULL && strpbrk(e.from, "\n") == NULL);
    FUZZ_CHECK(e.user[0] == '\0' || q_user_ok(e.user));
    FUZZ_CHECK(memchr(e.last, '\0', sizeof e.last) != NULL && strchr(e.last, '\n') == NULL);
    FUZZ_CHECK(e.rcpts.n > 0);
    for (i = 0; i < e.rcpts.n; i++)
        FUZZ_CHECK(e.rcpts.v[i][0] != '\0' && strchr(e.rcpts.v[i], '\n') == NULL);
    FUZZ_CHECK(e.data >= buf && e.data + e.size == buf + size);
    q_free(&e);
    return 0;
}
