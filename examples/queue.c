/* See queue.h. */
#include "queue.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    if (e->user[0] && (memchr(e->user, '\0', sizeof e->user) == NULL || !q_user_ok(e->user))) {
        errno = EINVAL;
        goto done;
    }
    if (fprintf(f, "tm-queue 1\n") < 0 || put_line(f, "state", e->state) ||
        put_line(f, "from", e->from ? e->from : "") ||
        (e->user[0] && put_line(f, "user", e->user)))
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
    if (sm_write_all(fd, head, head_len) || sm_write_all(fd, e->data, e->size) || fsync(fd)) {
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

int q_user_ok(const char *s)
{
    size_t i;

    if (!s[0] || s[0] == '-' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (i = 0; s[i]; i++)
        if (i >= 63 || (unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 127 || s[i] == '/')
            return 0;
    return 1;
}

/* A decimal number as q_write prints it (a sign only where allowed);
 * anything else, or one out of range, is a damaged entry. */
static int parse_num(const char *s, int sign_ok, long long *out)
{
    char *end;

    if (!((s[0] >= '0' && s[0] <= '9') || (sign_ok && s[0] == '-' && s[1] >= '0' && s[1] <= '9')))
        return -1;
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno || *end ? -1 : 0;
}

int q_parse(char *buf, size_t len, q_entry *e)
{
    char *p = buf, *end = buf + len;
    long long num;
    int seen = 0, rc = -2;

    memset(e, 0, sizeof *e);
    e->buf = buf;
    if (len < 11 || memcmp(p, "tm-queue 1\n", 11) != 0)
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
            if (strcmp(val, "deferred") != 0 && strcmp(val, "attempting") != 0 &&
                strcmp(val, "held") != 0)
                goto bad; /* an entry that the flush would not know how to treat */
            snprintf(e->state, sizeof e->state, "%s", val);
            seen |= 1;
        } else if (strcmp(p, "from") == 0) {
            free(e->from);
            if (!(e->from = strdup(val)))
                goto nomem;
            seen |= 2;
        } else if (strcmp(p, "user") == 0) {
            if (*val && !q_user_ok(val))
                goto bad;
            snprintf(e->user, sizeof e->user, "%s", val);
        } else if (strcmp(p, "rcpt") == 0) {
            if (!*val)
                goto bad;
            if (sm_list_add(&e->rcpts, val) != 0)
                goto nomem;
        } else if (strcmp(p, "attempts") == 0) {
            if (parse_num(val, 0, &num) || num > (long long)UINT_MAX)
                goto bad;
            e->attempts = (unsigned)num;
        } else if (strcmp(p, "first") == 0) {
            if (parse_num(val, 1, &e->first))
                goto bad;
            seen |= 4;
        } else if (strcmp(p, "next") == 0) {
            if (parse_num(val, 1, &e->next))
                goto bad;
            seen |= 8;
        } else if (strcmp(p, "last") == 0) {
            snprintf(e->last, sizeof e->last, "%s", val);
        } /* unknown keys: from a newer tm-send, ignored */
        p = nl + 1;
    }
    if (seen != 15 || e->rcpts.n == 0)
        goto bad;
    return 0;
nomem:
    rc = -1;
    errno = ENOMEM;
bad:
    q_free(e);
    return rc;
}

int q_read(const char *dir, const char *name, q_entry *e)
{
    char path[4096], *buf;
    size_t len;
    struct stat sb;
    int fd, rc, e2;

    memset(e, 0, sizeof *e);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    /* O_NONBLOCK: a FIFO put there must not hang the flush before fstat
     * refuses it. */
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ELOOP ? -2 : -1;
    if (fstat(fd, &sb) != 0) {
        e2 = errno;
        close(fd);
        errno = e2;
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return -2;
    }
    rc = sm_read_all(fd, &buf, &len);
    e2 = errno;
    close(fd);
    if (rc != 0) {
        errno = e2;
        return -1;
    }
    return q_parse(buf, len, e);
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
