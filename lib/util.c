/*
 * util.c - the ground floor: the allocation hook, the monotonic clock,
 * bounded string copies and the log call.  Calls nothing else in lib/.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/*
 * Fail-the-Nth-allocation hook for the tests.  A process-wide counter is
 * the one piece of global state: it exists only to be driven by a
 * single-threaded test, and costs one branch per allocation otherwise.
 */
static unsigned long alloc_count;
static unsigned long alloc_fail_at;

unsigned long tm__test_alloc_fail_at(unsigned long n)
{
    unsigned long counted = alloc_count;
    alloc_count = 0;
    alloc_fail_at = n;
    return counted;
}

void *tm__calloc(size_t n, size_t size)
{
    if (alloc_fail_at) {
        if (++alloc_count >= alloc_fail_at)
            return NULL;
    }
    return calloc(n, size);
}

void tm__free(void *p)
{
    free(p);
}

int64_t tm__now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t tm__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tm__deadline(unsigned int ms)
{
    if (ms == 0)
        return INT64_MAX;
    return tm__now_ms() + ms;
}

int64_t tm__min_deadline(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

void tm__strlcpyn(char *dst, size_t size, const char *src, size_t len)
{
    if (dst == NULL || size == 0)
        return;
    if (src == NULL)
        len = 0;
    if (len > size - 1)
        len = size - 1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

void tm__strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = 0;

    if (src != NULL)
        while (len < size && src[len] != '\0')
            len++;
    tm__strlcpyn(dst, size, src, len);
}

void tm__log(const tm_context *ctx, int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!ctx || !ctx->log || level > ctx->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_arg, level, line);
}
