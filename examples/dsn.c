/* See dsn.h.  RFC 3464 (the report's fields), RFC 6522 (the
 * multipart/report around it), RFC 3463 (status codes), RFC 3834
 * (Auto-Submitted). */
#include "dsn.h"
#include "sendmail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ADDR_MAX 256         /* RFC 5321's longest path */
#define TEXT_MAX 400         /* a server's text; keeps every line far below 998 */
#define FOLD_AT 990          /* returned header lines are folded here */
#define HEADERS_MAX 65536    /* the returned header section */

/* A growing output buffer; the first failure sticks, so the builders need
 * not check every append. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} obuf;

static void put(obuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->cap - b->len < n + 1) {
        size_t ncap = b->cap ? b->cap : 1024;
        char *np;
        while (ncap - b->len < n + 1) {
            if (ncap > (size_t)-1 / 2) {
                b->failed = 1;
                return;
            }
            ncap *= 2;
        }
        np = realloc(b->p, ncap);
        if (!np) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(obuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putc_(obuf *b, char c)
{
    put(b, &c, 1);
}

/* An address or host name: printable ASCII, no space, no angle bracket. */
static void put_addr(obuf *b, const char *s)
{
    size_t i;

    for (i = 0; s && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == ADDR_MAX) {
            puts_(b, "...");
            return;
        }
        putc_(b, c <= ' ' || c >= 127 || c == '<' || c == '>' ? '?' : (char)c);
    }
}

/* A server's text or a local reason, on one line. */
static void put_text(obuf *b, const char *s)
{
    size_t i;

    for (i = 0; s && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == TEXT_MAX) {
            puts_(b, "...");
            return;
        }
        if (c == '\r' || c == '\n' || c == '\t')
            c = ' ';
        putc_(b, c < ' ' || c >= 127 ? '?' : (char)c);
    }
}

/* This host's name where it becomes part of an address or a Message-ID:
 * letters, digits and ".-_" only. */
static void put_host(obuf *b, const char *s)
{
    size_t i;

    for (i = 0; s[i] && i < ADDR_MAX; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == '_';
        putc_(b, ok ? c : '-');
    }
}

static struct tm utc(long long t)
{
    struct tm tm;
    time_t tt = t < 0 ? 0 : (time_t)t;

    if ((long long)tt != t || !gmtime_r(&tt, &tm)) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    return tm;
}

static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 5322 date-time, in English whatever the locale. */
static void put_date(obuf *b, long long t)
{
    struct tm tm = utc(t);
    char s[64];

    snprintf(s, sizeof s, "%s, %02d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    puts_(b, s);
}

/* Hex of 16 random bytes.  Without /dev/urandom the clock, the process and
 * salt stand in: the boundary is checked against the content anyway, and a
 * Message-ID needs to be unique, not secret. */
static void random_hex(char out[33], unsigned salt)
{
    unsigned char r[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC), ok = 0;
    size_t i;

    if (fd >= 0) {
        ok = read(fd, r, sizeof r) == (ssize_t)sizeof r;
        close(fd);
    }
    if (!ok) {
        struct timespec ts;
        unsigned long long x;
        clock_gettime(CLOCK_REALTIME, &ts);
        x = (unsigned long long)ts.tv_sec * 1000000007ULL + (unsigned long long)ts.tv_nsec +
            ((unsigned long long)getpid() << 32) + salt;
        for (i = 0; i < sizeof r; i++) {
            /* splitmix64 steps: spread the few changing bits */
            unsigned long long z = (x += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            r[i] = (unsigned char)(z ^ (z >> 31));
        }
    }
    for (i = 0; i < sizeof r; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

/* "class.subject.detail", class 4 or 5, one to three digits each. */
static int valid_enhanced(const char *s)
{
    int part, n;

    if (!s || (s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    s += 2;
    for (part = 0; part < 2; part++) {
        for (n = 0; n < 3 && s[n] >= '0' && s[n] <= '9'; n++)
            ;
        if (n == 0)
            return 0;
        s += n;
        if (*s != (part == 0 ? '.' : '\0'))
            return 0;
        s++;
    }
    return 1;
}

void dsn_status(const dsn_rcpt *r, char *out, size_t cap)
{
    const char *s;

    if (valid_enhanced(r->enhanced))
        s = r->enhanced;
    else if (r->expired)
        s = "4.4.7"; /* delivery time expired */
    else if (r->code >= 400 && r->code < 500)
        s = "4.0.0";
    else
        s = "5.0.0";
    snprintf(out, cap, "%s", s);
}

/* Lines end at CRLF, LF or a bare CR, as the library's content encoder
 * will end them on the wire.  The line at *pos: its length, and *pos moved
 * past its end.  -1 at the end of the message. */
static long next_line(const char *m, size_t len, size_t *pos, size_t *line_len)
{
    size_t s = *pos, i = s;

    if (s >= len)
        return -1;
    while (i < len && m[i] != '\r' && m[i] != '\n')
        i++;
    *line_len = i - s;
    if (i < len && m[i] == '\r' && i + 1 < len && m[i + 1] == '\n')
        i += 2;
    else if (i < len)
        i++;
    *pos = i;
    return (long)s;
}

/* A header field's first line ("Name:", RFC 5322 ftext, or the obsolete
 * form with white space before the colon) or a continuation line. */
static int field_or_continuation(const char *l, size_t n, int first)
{
    size_t i = 0;

    if (n && (l[0] == ' ' || l[0] == '\t'))
        return !first;
    while (i < n && (unsigned char)l[i] > ' ' && (unsigned char)l[i] < 127 && l[i] != ':')
        i++;
    if (i == 0)
        return 0;
    while (i < n && (l[i] == ' ' || l[i] == '\t'))
        i++;
    return i < n && l[i] == ':';
}

/* Where the header section ends: at the first empty line; without one,
 * at the first line that is neither a field nor a continuation. */
static size_t header_end(const char *m, size_t len)
{
    size_t pos = 0, n, stop = len;
    long s;
    int first = 1;

    while ((s = next_line(m, len, &pos, &n)) >= 0) {
        if (n == 0)
            return (size_t)s;
        if (stop == len && !field_or_continuation(m + s, n, first))
            stop = (size_t)s;
        first = 0;
    }
    return stop;
}

/* The header section, CRLF, 7-bit, lines folded before 998 octets, at
 * most HEADERS_MAX octets (cut at a line or fold). */
static void put_headers(obuf *b, const char *m, size_t len)
{
    size_t end = header_end(m, len), pos = 0, n, start = b->len;
    long s;

    while ((s = next_line(m, end, &pos, &n)) >= 0) {
        const char *l = m + s;
        size_t done = 0;
        do {
            size_t k = n - done > FOLD_AT ? FOLD_AT : n - done, i;
            if (b->len - start + k + 3 > HEADERS_MAX)
                return;
            if (done)
                putc_(b, ' ');
            for (i = 0; i < k; i++) {
                unsigned char c = (unsigned char)l[done + i];
                putc_(b, (c < ' ' && c != '\t') || c >= 127 ? '?' : (char)c);
            }
            puts_(b, "\r\n");
            done += k;
        } while (done < n);
    }
}

/* The human-readable reason for one recipient, one line. */
static void put_reason(obuf *b, const dsn_rcpt *r)
{
    int has_host = r->remote_mta && r->remote_mta[0];
    char code[16];

    puts_(b, "<");
    put_addr(b, r->address);
    puts_(b, ">\r\n    ");
    if (r->expired)
        puts_(b, "given up after the queue's lifetime; last attempt: ");
    if (r->code) {
        if (has_host) {
            puts_(b, "host ");
            put_addr(b, r->remote_mta);
            puts_(b, " said: ");
        } else {
            puts_(b, "the server said: ");
        }
        snprintf(code, sizeof code, "%d ", r->code);
        puts_(b, code);
        put_text(b, r->text);
    } else if (r->text && r->text[0]) {
        put_text(b, r->text);
    } else {
        puts_(b, "not delivered");
    }
    puts_(b, "\r\n\r\n");
}

static void put_report(obuf *b, const dsn_info *info, const dsn_rcpt *r, size_t n)
{
    size_t i;

    puts_(b, "Reporting-MTA: dns; ");
    put_host(b, info->reporting_mta);
    puts_(b, "\r\n");
    if (info->arrival) {
        puts_(b, "Arrival-Date: ");
        put_date(b, info->arrival);
        puts_(b, "\r\n");
    }
    for (i = 0; i < n; i++) {
        char st[16];
        dsn_status(&r[i], st, sizeof st);
        puts_(b, "\r\nFinal-Recipient: rfc822; ");
        put_addr(b, r[i].address);
        puts_(b, "\r\nAction: failed\r\nStatus: ");
        puts_(b, st);
        puts_(b, "\r\n");
        if (r[i].remote_mta && r[i].remote_mta[0]) {
            puts_(b, "Remote-MTA: dns; ");
            put_addr(b, r[i].remote_mta);
            puts_(b, "\r\n");
        }
        if (r[i].code) {
            char code[16];
            snprintf(code, sizeof code, "%d", r[i].code);
            puts_(b, "Diagnostic-Code: smtp; ");
            puts_(b, code);
            if (r[i].text && r[i].text[0]) {
                puts_(b, " ");
                put_text(b, r[i].text);
            }
            puts_(b, "\r\n");
        } else if (r[i].text && r[i].text[0]) {
            puts_(b, "Diagnostic-Code: X-tlsmail; ");
            put_text(b, r[i].text);
            puts_(b, "\r\n");
        }
    }
}

static int contains(const obuf *b, const char *s)
{
    return b->len && memmem(b->p, b->len, s, strlen(s)) != NULL;
}

int dsn_build(const dsn_info *info, const dsn_rcpt *r, size_t n, char **out, size_t *out_len)
{
    obuf human = {0}, report = {0}, headers = {0}, m = {0};
    char boundary[64], id[33];
    unsigned tries;
    size_t i;
    int err = ENOMEM;

    if (!info || !r || n == 0 || !out || !out_len || !info->reporting_mta ||
        !info->reporting_mta[0] || !info->sender || !info->sender[0] ||
        strcmp(info->sender, "<>") == 0 || (!info->msg && info->len)) {
        errno = EINVAL;
        return -1;
    }
    puts_(&human, "This is the mail system at host ");
    put_host(&human, info->reporting_mta);
    puts_(&human, ".\r\n\r\nYour message could not be delivered to one or more recipients.\r\n"
                  "Its header section is attached below.\r\n\r\n");
    for (i = 0; i < n; i++)
        put_reason(&human, &r[i]);
    put_report(&report, info, r, n);
    if (info->len)
        put_headers(&headers, info->msg, info->len);
    if (human.failed || report.failed || headers.failed)
        goto done;

    /* A boundary that none of the parts contains: random, so that takes
     * one try unless the content was made to match. */
    for (tries = 0;; tries++) {
        if (tries == 16) {
            err = EAGAIN;
            goto done;
        }
        random_hex(id, tries);
        snprintf(boundary, sizeof boundary, "=_tlsmail_%s", id);
        if (!contains(&human, boundary) && !contains(&report, boundary) &&
            !contains(&headers, boundary))
            break;
    }
    random_hex(id, ~0u);

    puts_(&m, "From: Mail Delivery System <MAILER-DAEMON@");
    put_host(&m, info->reporting_mta);
    puts_(&m, ">\r\nTo: <");
    put_addr(&m, info->sender);
    puts_(&m, ">\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: ");
    put_date(&m, info->now);
    {
        char t[32];
        snprintf(t, sizeof t, "%lld", info->now);
        puts_(&m, "\r\nMessage-ID: <");
        puts_(&m, t);
        puts_(&m, ".");
    }
    put(&m, id, 16);
    puts_(&m, "@");
    put_host(&m, info->reporting_mta);
    puts_(&m, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
              "Content-Type: multipart/report; report-type=delivery-status; boundary=\"");
    puts_(&m, boundary);
    puts_(&m, "\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
              "This is a MIME-encapsulated message.\r\n\r\n--");
    puts_(&m, boundary);
    puts_(&m, "\r\nContent-Type: text/plain; charset=us-ascii\r\n"
              "Content-Description: Notification\r\n\r\n");
    put(&m, human.p, human.len);
    puts_(&m, "\r\n--");
    puts_(&m, boundary);
    puts_(&m, "\r\nContent-Type: message/delivery-status\r\n"
              "Content-Description: Delivery report\r\n\r\n");
    put(&m, report.p, report.len);
    puts_(&m, "\r\n--");
    puts_(&m, boundary);
    puts_(&m, "\r\nContent-Type: text/rfc822-headers\r\n"
              "Content-Description: Undelivered message headers\r\n\r\n");
    if (headers.len)
        put(&m, headers.p, headers.len);
    puts_(&m, "\r\n--");
    puts_(&m, boundary);
    puts_(&m, "--\r\n");
    if (m.failed)
        goto done;
    *out = m.p;
    *out_len = m.len;
    m.p = NULL;
    err = 0;
done:
    free(human.p);
    free(report.p);
    free(headers.p);
    free(m.p);
    if (err)
        errno = err;
    return err ? -1 : 0;
}

int dsn_mbox_append(const char *path, const char *msg, size_t len, long long now)
{
    obuf b = {0};
    struct tm tm = utc(now);
    struct stat sb;
    struct flock fl;
    char from[80];
    size_t pos = 0;
    unsigned tries;
    int fd, flags, e2;

    /* The whole entry first: nothing is locked while it is built. */
    snprintf(from, sizeof from, "From MAILER-DAEMON %s %s %2d %02d:%02d:%02d %d\n",
             days[tm.tm_wday], months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             tm.tm_year + 1900);
    puts_(&b, from);
    while (pos < len) {
        const char *l = msg + pos, *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos, q = 0;
        pos += n + (nl != NULL);
        if (n && l[n - 1] == '\r' && nl)
            n--;
        while (q < n && l[q] == '>')
            q++;
        if (n - q >= 5 && memcmp(l + q, "From ", 5) == 0)
            putc_(&b, '>');
        put(&b, l, n);
        putc_(&b, '\n');
    }
    putc_(&b, '\n');
    if (b.failed) {
        free(b.p);
        errno = ENOMEM;
        return -1;
    }

    for (tries = 0;; tries++) {
        struct stat now_at_path;
        /* O_NONBLOCK: a FIFO in its place must not hang the open. */
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK,
                  0600);
        if (fd < 0) {
            e2 = errno;
            free(b.p);
            errno = e2;
            return -1;
        }
        /* A hard link to another file (made by whoever could write the
         * directory) would have the entry written where it does not
         * belong. */
        if (fstat(fd, &sb) != 0) {
            e2 = errno;
            goto fail;
        }
        if (!S_ISREG(sb.st_mode) || sb.st_nlink != 1) {
            e2 = EINVAL;
            goto fail;
        }
        if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
            e2 = errno;
            goto fail;
        }
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        while (fcntl(fd, F_SETLKW, &fl) != 0) {
            if (errno != EINTR) {
                e2 = errno;
                goto fail;
            }
        }
        /* The size now, under the lock (where a failed write is cut back
         * to), and whether the file is still the one at path: a mail
         * reader holding the lock may have replaced or removed it, and an
         * entry appended to the old one would be lost. */
        if (fstat(fd, &sb) != 0) {
            e2 = errno;
            goto fail;
        }
        if (lstat(path, &now_at_path) == 0 && now_at_path.st_dev == sb.st_dev &&
            now_at_path.st_ino == sb.st_ino && sb.st_nlink == 1)
            break;
        close(fd);
        if (tries == 8) {
            free(b.p);
            errno = EAGAIN;
            return -1;
        }
    }
    if (sm_write_all(fd, b.p, b.len) != 0 || fsync(fd) != 0) {
        e2 = errno;
        if (ftruncate(fd, sb.st_size) == 0)
            fsync(fd);
        goto fail;
    }
    free(b.p);
    if (close(fd) != 0) /* releases the lock */
        return -1;
    return 0;
fail:
    close(fd);
    free(b.p);
    errno = e2;
    return -1;
}
