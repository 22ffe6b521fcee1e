/* See queue.h. */
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* One line of the envelope: no CR or LF may get into it. */
static int put_line(FILE *f, const char *key, const char *value)
{
    if (strpbrk(value, "\r\n")) {
        errno = EINVAL;
        return -1;
    }
    return fprintf(f, "%s %s\n", key, value) < 0 ? -1 : 0;
}

int q_write(const char *dir, char *name, size_t cap, const q_entry *e)
{
    char *head = NULL, path[4096], tmp[4096], last[sizeof e->last];
    size_t head_len = 0, i;
    FILE *f;
    int fd, rc = -1, e2;

    if (!*name) {
        struct timespec ts;
        unsigned r;
        int urnd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (urnd < 0 || read(urnd, &r, sizeof r) != (ssize_t)sizeof r)
            r = (unsigned)rand();
        if (urnd >= 0)
            close(urnd);
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(name, cap, "q-%lld.%09ld.%d.%08x", (long long)ts.tv_sec, ts.tv_nsec,
                 (int)getpid(), r);
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.tmp-%s", dir, name);
    f = open_memstream(&head, &head_len);
    if (!f)
        return -1;
    /* the last outcome is the server's text: keep it to one line */
    snprintf(last, sizeof last, "%s", e->last);
    for (i = 0; last[i]; i++)
        if (last[i] == '\r' || last[i] == '\n')
            last[i] = ' ';
    if (fprintf(f, "tm-queue 1\n") < 0 || put_line(f, "state", e->state) ||
        put_line(f, "from", e->from))
        goto done;
    for (i = 0; i < e->rcpts.n; i++)
        if (put_line(f, "rcpt", e->rcpts.v[i]))
            goto done;
    if (fprintf(f, "attempts %u\nfirst %lld\nnext %lld\n", e->attempts, e->first, e->next) < 0 ||
        put_line(f, "last", last) || fputs("\n", f) == EOF)
        goto done;
    if (fflush(f) != 0)
        goto done;
    unlink(tmp); /* left by a writer that stopped; names are unique otherwise */
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto done;
    if (write_all(fd, head, head_len) || write_all(fd, e->data, e->size) || fsync(fd)) {
        e2 = errno;
        close(fd);
        unlink(tmp);
        errno = e2;
        goto done;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        e2 = errno;
        unlink(tmp);
        errno = e2;
        goto done;
    }
    rc = sync_dir(dir);
done:
    e2 = errno;
    fclose(f);
    free(head);
    errno = e2;
    return rc;
}

void q_free(q_entry *e)
{
    free(e->from);
    sm_list_free(&e->rcpts);
    free(e->buf);
    memset(e, 0, sizeof *e);
}

int q_read(const char *dir, const char *name, q_entry *e)
{
    char path[4096], *p, *end;
    size_t len;
    int fd, rc, seen = 0;

    memset(e, 0, sizeof *e);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = sm_read_all(fd, &e->buf, &len);
    close(fd);
    if (rc != 0)
        return -1;
    p = e->buf;
    end = e->buf + len;
    if (strncmp(p, "tm-queue 1\n", 11) != 0)
        goto bad;
    p += 11;
    for (;;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *val;
        if (!nl)
            goto bad;
        *nl = '\0';
        if (p == nl) { /* the empty line: the message follows */
            e->data = nl + 1;
            e->size = (size_t)(end - nl - 1);
            break;
        }
        val = strchr(p, ' ');
        if (!val)
            goto bad;
        *val++ = '\0';
        if (strcmp(p, "state") == 0) {
            snprintf(e->state, sizeof e->state, "%s", val);
            seen |= 1;
        } else if (strcmp(p, "from") == 0) {
            free(e->from);
            if (!(e->from = strdup(val)))
                goto bad;
            seen |= 2;
        } else if (strcmp(p, "rcpt") == 0) {
            if (sm_list_add(&e->rcpts, val) != 0)
                goto bad;
        } else if (strcmp(p, "attempts") == 0) {
            e->attempts = (unsigned)strtoul(val, NULL, 10);
        } else if (strcmp(p, "first") == 0) {
            e->first = strtoll(val, NULL, 10);
            seen |= 4;
        } else if (strcmp(p, "next") == 0) {
            e->next = strtoll(val, NULL, 10);
            seen |= 8;
        } else if (strcmp(p, "last") == 0) {
            snprintf(e->last, sizeof e->last, "%s", val);
        } /* unknown keys: from a newer tm-send, ignored */
        p = nl + 1;
    }
    if (seen != 15 || e->rcpts.n == 0)
        goto bad;
    return 0;
bad:
    q_free(e);
    return -2;
}

int q_remove(const char *dir, const char *name)
{
    char path[4096];

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (unlink(path) != 0)
        return -1;
    return sync_dir(dir);
}

long long q_backoff(unsigned n)
{
    long long s = 300;

    while (n-- > 1 && s < 4 * 3600)
        s *= 2;
    return s < 4 * 3600 ? s : 4 * 3600;
}
