/*
 * util.c - the ground floor: the allocation hook, the monotonic clock,
 * bounded string copies, the log call, and whole small files read and
 * written atomically (the settings and the MTA-STS cache).  Calls nothing
 * else in lib/.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

int tm__file_read(const char *path, size_t max, char **text, size_t *len)
{
    char *t = NULL;
    size_t n = 0, cap = 0;
    FILE *f;
    int rc = TM_OK;

    *text = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (!f)
        return TM_EIO;
    for (;;) {
        char chunk[4096];
        size_t got = fread(chunk, 1, sizeof chunk, f);

        if (got == 0)
            break;
        if (n + got > max) {
            rc = TM_EIO;
            break;
        }
        if (n + got + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nt;

            while (ncap < n + got + 1)
                ncap *= 2;
            nt = tm__calloc(1, ncap);
            if (!nt) {
                rc = TM_ENOMEM;
                break;
            }
            if (n)
                memcpy(nt, t, n);
            tm__free(t);
            t = nt;
            cap = ncap;
        }
        memcpy(t + n, chunk, got);
        n += got;
    }
    if (rc == TM_OK && ferror(f))
        rc = TM_EIO;
    fclose(f);
    if (rc != TM_OK) {
        tm__free(t);
        return rc;
    }
    *text = t;
    *len = n;
    return TM_OK;
}

int tm__file_write_atomic(const char *path, const char *header, const char *text)
{
    char tmp[4096];
    int fd, rc = TM_OK;
    FILE *f;

    if (strlen(path) + 16 > sizeof tmp)
        return TM_EINVAL;
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0)
        return TM_EIO;
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return TM_EIO;
    }
    if (fputs(header, f) < 0 || fputs(text, f) < 0)
        rc = TM_EIO;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = TM_EIO;
    if (fclose(f) != 0)
        rc = TM_EIO;
    if (rc == TM_OK && rename(tmp, path) != 0)
        rc = TM_EIO;
    if (rc != TM_OK)
        unlink(tmp);
    return rc;
}
