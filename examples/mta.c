/*
 * tm-send as a sendmail drop-in (called "sendmail", or "tm-send --sendmail"):
 * the sendmail command line, one delivery per recipient domain, the queue
 * of deferred mail (queue.c), bounces to the sender (dsn.c).  The message
 * side (headers, the copy sent) is in sendmail.c.
 *
 * Configuration, first that exists: --config FILE, $TM_SENDMAIL_CONF,
 * TM_SENDMAIL_CONF_PATH (/etc/tlsmail/sendmail.conf).  One option a line,
 * a long option's name without the dashes and its value ("dns 127.0.0.1",
 * "require-tls", "queue /var/spool/tlsmail", "from cron@example.org",
 * "bounce mailbox"); '#' starts a comment.  The command line wins.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dsn.h"
#include "queue.h"
#include "sendmail.h"
#include "tm-send.h"

#ifndef TM_SPOOL_DIR
#define TM_SPOOL_DIR "/var/spool/tlsmail"
#endif
#ifndef TM_SENDMAIL_CONF_PATH
#define TM_SENDMAIL_CONF_PATH "/etc/tlsmail/sendmail.conf"
#endif
#ifndef TM_MAIL_DIR
#define TM_MAIL_DIR "/var/mail"
#endif

/* Where bounces go (--bounce). */
enum { B_STDERR, B_MAILBOX, B_MBOX, B_NONE };

/* sendmail mode's own settings, beside the common ones in struct conf. */
struct mta {
    struct conf *c;
    const char *queue;      /* the queue directory, NULL: none */
    const char *from;       /* default sender ("from" in the configuration) */
    int bounce;             /* B_* */
    const char *bounce_path;
    char *conf_buf;         /* the configuration file; values point into it */
    char host[256];         /* this host's name: --helo, else gethostname() */
    char user[64];          /* the submitting account's login name */
};

int is_sendmail(int argc, char **argv)
{
    static const char *const queue_cmds[] = { "--flush", "--flush-due", "--list", "--release" };
    const char *base = strrchr(argv[0], '/');
    size_t i;

    base = base ? base + 1 : argv[0];
    if (strcmp(base, "sendmail") == 0 || (argc > 1 && strcmp(argv[1], "--sendmail") == 0))
        return 1;
    /* "tm-send --flush DIR ...": the queue's commands need no --sendmail */
    for (i = 0; argc > 1 && i < sizeof queue_cmds / sizeof queue_cmds[0]; i++) {
        size_t n = strlen(queue_cmds[i]);
        if (strncmp(argv[1], queue_cmds[i], n) == 0 && (argv[1][n] == '\0' || argv[1][n] == '='))
            return 1;
    }
    return 0;
}

static void sendmail_usage(FILE *f)
{
    fputs("usage: sendmail [-t] [-i] [-f ADDR] [-F NAME] [options] [ADDR ...] < MESSAGE\n"
          "       sendmail -q | -bp          (flush, list the queue)\n"
          "       tm-send --sendmail ...     (the same, under any name)\n"
          "  ADDR ...       recipients (an operand may be a comma-separated list)\n"
          "  -t             also the recipients of the To, Cc and Bcc headers; Bcc is\n"
          "                 removed from the copy that is sent\n"
          "  -f ADDR        envelope sender (default: \"from\" in the configuration, else\n"
          "                 $TM_SENDMAIL_FROM, else USER@HOST, HOST the --helo name or this\n"
          "                 host's name); -f '<>' is the null sender (never bounced to)\n"
          "  -F NAME        full name, for the From header added when the message has none\n"
          "  -i, -oi        accepted: input always ends at end of file, never at a lone dot\n"
          "  -v             print the SMTP dialogue on standard error (as --verbose)\n"
          "  -q             try every deferred entry of the queue now (no message read)\n"
          "  -bp            list the queue (as mailq)\n"
          "  -oem -oee -odi -odb -bm -B 8BITMIME|7BIT -N DSN\n"
          "                 accepted and ignored (delivery is always immediate, in the\n"
          "                 foreground; no DSN is requested from the receiving server)\n"
          "  --queue DIR    the queue: a domain deferred is written to DIR (one file per\n"
          "                 domain) and counts as accepted; an uncertain one is held there\n"
          "                 (default: " TM_SPOOL_DIR ")\n"
          "  --no-queue     no queue: a deferred domain makes the exit status 75\n"
          "  --flush DIR    try every deferred entry of DIR now (as -q), no message read\n"
          "  --flush-due DIR\n"
          "                 try only the entries whose back-off has passed (5 min, doubling,\n"
          "                 at most 4 h): what a timer or cron job runs; entries older than\n"
          "                 5 days are given up (kept as f-*, bounced to the sender)\n"
          "  --list DIR     list the entries of DIR (state, attempts, next try, recipients)\n"
          "  --release FILE a held entry (uncertain outcome, never retried by itself) is\n"
          "                 made deferred again, to go with the next flush\n"
          "  --bounce stderr|mailbox|mbox:PATH|none\n"
          "                 where bounces (RFC 3464 reports) for bounced or expired\n"
          "                 recipients go: standard error (default), the submitting\n"
          "                 user's mailbox " TM_MAIL_DIR "/USER, an mbox file, nowhere\n"
          "  --config FILE  read options from FILE (default: $TM_SENDMAIL_CONF, else\n"
          "                 " TM_SENDMAIL_CONF_PATH " if it exists): one a line, a long\n"
          "                 option's name without -- and its value, e.g. \"dns 127.0.0.1\",\n"
          "                 \"from cron@example.org\"; the command line wins\n"
          "  and tm-send's long options (--dns, --port, --mx, --ca-file, --helo, --json, ...)\n"
          "One delivery per recipient domain, in turn; a line per domain on standard error\n"
          "(--json: one JSON object per domain, a line each, on standard output).\n"
          "A Date and a Message-ID header are added when the message has none.\n"
          "exit status: the first that applies: 70 internal error, 64 usage, 78 bad\n"
          "configuration, 75 a domain deferred (not queued) or uncertain, 69 a domain\n"
          "bounced, 0 all delivered or queued\n",
          f);
}

/* Worst first: the exit status a caller must act on. */
static int exit_rank(int ex)
{
    switch (ex) {
    case EX_OK_:
        return 0;
    case EX_UNAVAILABLE_:
        return 1;
    case EX_TEMPFAIL_:
        return 2;
    case EX_CONFIG_:
        return 3;
    case EX_USAGE_:
        return 4;
    default:
        return 5;
    }
}

static int worse(int a, int b)
{
    return exit_rank(b) > exit_rank(a) ? b : a;
}

/* ---- configuration ------------------------------------------------------ */

static int bounce_option(struct mta *m, const char *v)
{
    if (strcmp(v, "stderr") == 0)
        m->bounce = B_STDERR;
    else if (strcmp(v, "mailbox") == 0)
        m->bounce = B_MAILBOX;
    else if (strcmp(v, "none") == 0)
        m->bounce = B_NONE;
    else if (strncmp(v, "mbox:", 5) == 0 && v[5] == '/') {
        m->bounce = B_MBOX;
        m->bounce_path = v + 5;
    } else {
        fprintf(stderr, "tm-send: bad --bounce %s (stderr, mailbox, mbox:/PATH or none)\n", v);
        return -1;
    }
    return 0;
}

/* Reads the configuration file: EX_OK_, or EX_CONFIG_ (said).  path NULL:
 * the default one, which may be absent. */
static int read_config(struct mta *m, const char *path)
{
    const char *env = getenv("TM_SENDMAIL_CONF");
    int must = path != NULL || (env && *env), lineno = 0, fd;
    char *p, *line, *next;
    size_t len;

    if (!path)
        path = env && *env ? env : TM_SENDMAIL_CONF_PATH;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (!must && errno == ENOENT)
            return EX_OK_;
        fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
        return EX_CONFIG_;
    }
    if (sm_read_all(fd, &m->conf_buf, &len) != 0) {
        fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
        close(fd);
        return EX_CONFIG_;
    }
    close(fd);
    if (strlen(m->conf_buf) != len) {
        fprintf(stderr, "tm-send: %s: a NUL byte\n", path);
        return EX_CONFIG_;
    }
    for (line = m->conf_buf; line; line = next) {
        const struct option *o;
        char *name, *value = NULL, *end;

        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if ((p = strchr(line, '#')) != NULL)
            *p = '\0';
        name = line + strspn(line, " \t\r");
        end = name + strlen(name);
        while (end > name && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            *--end = '\0';
        if (!*name)
            continue;
        p = name + strcspn(name, " \t");
        if (*p) {
            *p++ = '\0';
            value = p + strspn(p, " \t");
        }
        if (strcmp(name, "from") == 0 && value) {
            m->from = value;
            continue;
        }
        for (o = tm_longopts + SENDMAIL_OPTS_FROM; o->name; o++)
            if (strcmp(o->name, name) == 0)
                break;
        if (!o->name || o->val == O_FLUSH || o->val == O_FLUSH_DUE || o->val == O_LIST ||
            o->val == O_RELEASE || o->val == O_CONFIG || o->val == O_SENDMAIL ||
            o->val == O_VERSION || o->val == O_HELP) {
            fprintf(stderr, "tm-send: %s:%d: %s is not a configuration option\n", path, lineno,
                    name);
            return EX_CONFIG_;
        }
        if ((o->has_arg == required_argument && !value) ||
            (o->has_arg == no_argument && value)) {
            fprintf(stderr, "tm-send: %s:%d: %s %s\n", path, lineno, name,
                    value ? "takes no value" : "needs a value");
            return EX_CONFIG_;
        }
        if (o->val == O_QUEUE) {
            m->queue = value;
        } else if (o->val == O_NO_QUEUE) {
            m->queue = NULL;
        } else if (o->val == O_BOUNCE) {
            if (bounce_option(m, value) != 0)
                goto bad;
        } else if (common_option(o->val, value, m->c) != 0) {
            goto bad;
        }
    }
    return EX_OK_;
bad:
    fprintf(stderr, "tm-send: (in %s, line %d)\n", path, lineno);
    return EX_CONFIG_;
}

/* ---- small helpers ----------------------------------------------------- */

/* "Name <addr>" with the name quoted when it has to be. */
static char *from_header(const char *name, const char *sender)
{
    size_t n = (name ? 2 * strlen(name) : 0) + strlen(sender) + 8, i;
    char *b = malloc(n), *p = b;

    if (!b)
        return NULL;
    if (!name || !*name) {
        snprintf(b, n, "%s", sender);
        return b;
    }
    if (strpbrk(name, "()<>[]:;@\\,.\"")) {
        *p++ = '"';
        for (i = 0; name[i]; i++) {
            if (name[i] == '"' || name[i] == '\\')
                *p++ = '\\';
            *p++ = name[i];
        }
        *p++ = '"';
    } else {
        memcpy(p, name, strlen(name));
        p += strlen(name);
    }
    snprintf(p, n - (size_t)(p - b), " <%s>", sender);
    return b;
}

/* The current time; TM_QUEUE_NOW (Unix seconds) stands in for it in tests. */
static long long queue_now(void)
{
    const char *s = getenv("TM_QUEUE_NOW");

    return s && *s ? strtoll(s, NULL, 10) : (long long)time(NULL);
}

static unsigned random32(void)
{
    unsigned r = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd < 0 || read(fd, &r, sizeof r) != (ssize_t)sizeof r)
        r = (unsigned)rand() ^ (unsigned)getpid();
    if (fd >= 0)
        close(fd);
    return r;
}

/* The copy with "Date:" and "Message-ID:" in front when the message has
 * none (RFC 5322 3.6: both expected; a local submission gets them from its
 * MTA).  0, or -1 (out of memory); *copy replaced. */
static int add_date_id(const struct mta *m, const char *raw, size_t raw_len, char **copy,
                       size_t *copy_len)
{
    char head[512], date[64];
    size_t k = 0;
    char *n;
    time_t t = (time_t)queue_now();
    struct tm tmv;

    if (!sm_has_header(raw, raw_len, "date") && localtime_r(&t, &tmv) &&
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tmv) > 0)
        k += (size_t)snprintf(head + k, sizeof head - k, "Date: %s\r\n", date);
    if (!sm_has_header(raw, raw_len, "message-id"))
        k += (size_t)snprintf(head + k, sizeof head - k, "Message-ID: <%lld.%08x.%d@%s>\r\n",
                              (long long)t, random32(), (int)getpid(), m->host);
    if (k == 0)
        return 0;
    n = malloc(k + *copy_len + 1);
    if (!n)
        return -1;
    memcpy(n, head, k);
    memcpy(n + k, *copy, *copy_len);
    n[k + *copy_len] = '\0';
    free(*copy);
    *copy = n;
    *copy_len += k;
    return 0;
}

/* A recipient's outcome: its own, else (not reached) the message's. */
static int rcpt_result(const tm_delivery_status *st, const tm_rcpt_status *rs, size_t j)
{
    if (j < st->rcpt_count && rs[j].result != TM_RESULT_NONE)
        return rs[j].result;
    return st->result;
}

/* The text kept as an entry's "last". */
static void outcome_text(char *buf, size_t cap, const tm_delivery_status *st, int rc)
{
    const char *text = st->code ? st->message
                                : st->description[0] ? st->description : tm_strerror(rc);
    int k = snprintf(buf, cap, "%s %s: ", tm_result_name(st->result),
                     st->mx_host[0] ? st->mx_host : "-");
    size_t i = k > 0 ? (size_t)k : 0;

    if (st->code && i < cap) {
        k = snprintf(buf + i, cap - i, "%d ", st->code);
        i += k > 0 ? (size_t)k : 0;
    }
    /* the server's text, cut to fit */
    for (; i + 1 < cap && *text; text++)
        buf[i++] = *text;
    if (i < cap)
        buf[i] = '\0';
}

/* ---- bounces ------------------------------------------------------------ */

/* The bounced recipients of a message, their texts owned. */
typedef struct {
    dsn_rcpt *v;
    size_t n, cap;
} bounce_list;

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static int bounce_add(bounce_list *b, const char *addr, int code, const char *enhanced,
                      const char *text, const char *mta, int expired)
{
    dsn_rcpt r;

    if (b->n == b->cap) {
        size_t ncap = b->cap ? 2 * b->cap : 4;
        dsn_rcpt *nv = realloc(b->v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        b->v = nv;
        b->cap = ncap;
    }
    memset(&r, 0, sizeof r);
    r.code = code;
    r.expired = expired;
    r.address = dup_or_empty(addr);
    r.enhanced = dup_or_empty(enhanced);
    r.text = dup_or_empty(text);
    r.remote_mta = dup_or_empty(mta);
    if (!r.address || !r.enhanced || !r.text || !r.remote_mta) {
        free((char *)r.address);
        free((char *)r.enhanced);
        free((char *)r.text);
        free((char *)r.remote_mta);
        return -1;
    }
    b->v[b->n++] = r;
    return 0;
}

static void bounce_free(bounce_list *b)
{
    size_t i;

    for (i = 0; i < b->n; i++) {
        free((char *)b->v[i].address);
        free((char *)b->v[i].enhanced);
        free((char *)b->v[i].text);
        free((char *)b->v[i].remote_mta);
    }
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* Adds the recipients of a delivery that bounced. */
static int bounce_collect(bounce_list *b, const tm_delivery_status *st,
                          const tm_rcpt_status *rs, const char *const *group, size_t n, int rc)
{
    size_t j;

    for (j = 0; j < n; j++) {
        int own = j < st->rcpt_count && rs[j].result != TM_RESULT_NONE;
        const char *text;

        if (rcpt_result(st, rs, j) != TM_RESULT_BOUNCED)
            continue;
        text = own && rs[j].code ? rs[j].message
             : st->code ? st->message
             : st->description[0] ? st->description : tm_strerror(rc);
        if (bounce_add(b, group[j], own && rs[j].code ? rs[j].code : st->code,
                       own && rs[j].code ? rs[j].enhanced_code : st->enhanced_code, text,
                       st->mx_host, 0) != 0)
            return -1;
    }
    return 0;
}

/* The mailbox file of a local account, NULL when there is none. */
static const struct passwd *mailbox_owner(const char *user, char *path, size_t cap)
{
    const struct passwd *pw = *user ? getpwnam(user) : NULL;

    if (!pw || strchr(user, '/') || user[0] == '.')
        return NULL;
    snprintf(path, cap, "%s/%s", TM_MAIL_DIR, user);
    return pw;
}

/*
 * Sends the report on b's recipients where --bounce says.  user: the
 * account that submitted the message (for "mailbox").  A report that cannot
 * be written goes to standard error, so it is never lost unsaid.  0, or -1.
 */
static int send_bounce(const struct mta *m, const char *user, const char *sender,
                       long long arrival, const char *msg, size_t len, const bounce_list *b)
{
    dsn_info info;
    char *out = NULL, path[4096];
    size_t out_len = 0;
    const struct passwd *pw;
    int rc = 0;

    if (b->n == 0 || m->bounce == B_NONE)
        return 0;
    if (!sender || !*sender) {
        fprintf(stderr, "tm-send: no bounce: the message has the null sender\n");
        return 0;
    }
    memset(&info, 0, sizeof info);
    info.reporting_mta = m->host;
    info.sender = sender;
    info.arrival = arrival;
    info.now = queue_now();
    info.msg = msg;
    info.len = len;
    if (dsn_build(&info, b->v, b->n, &out, &out_len) != 0) {
        fprintf(stderr, "tm-send: the bounce to %s could not be made: %s\n", sender,
                strerror(errno));
        return -1;
    }
    if (m->bounce == B_MBOX || m->bounce == B_MAILBOX) {
        struct stat sb;
        int existed;

        if (m->bounce == B_MBOX) {
            snprintf(path, sizeof path, "%s", m->bounce_path);
            pw = NULL;
        } else if (!(pw = mailbox_owner(user, path, sizeof path))) {
            fprintf(stderr, "tm-send: no local mailbox for the user \"%s\"; the bounce "
                    "follows\n", user);
            goto to_stderr;
        }
        existed = lstat(path, &sb) == 0;
        if (dsn_mbox_append(path, out, out_len, info.now) != 0) {
            fprintf(stderr, "tm-send: %s: %s; the bounce follows\n", path, strerror(errno));
            goto to_stderr;
        }
        /* a mailbox made by root for a user must be the user's */
        if (pw && !existed && geteuid() == 0 && pw->pw_uid != 0) {
            int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 || fchown(fd, pw->pw_uid, (gid_t)-1) != 0)
                fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
            if (fd >= 0)
                close(fd);
        }
        fprintf(stderr, "tm-send: bounce for %zu recipient%s to %s in %s\n", b->n,
                b->n == 1 ? "" : "s", sender, path);
        free(out);
        return 0;
    }
to_stderr:
    fprintf(stderr, "tm-send: bounce for %zu recipient%s to %s:\n", b->n, b->n == 1 ? "" : "s",
            sender);
    if (fwrite(out, 1, out_len, stderr) != out_len)
        rc = -1;
    free(out);
    return rc;
}

/* One transaction: data from from to the n addresses of to (one domain),
 * each one's outcome in rs[0..n), the message's in *st.  tm_deliver's
 * return. */
static int deliver_one(tm_context *ctx, struct conf *c, const char *from,
                       const char *const *to, size_t n, const char *data, size_t size,
                       tm_rcpt_status *rs, tm_delivery_status *st)
{
    tm_message msg = TM_MESSAGE_INIT;

    tm_status_init(st, TM_STATUS_VERSION);
    memset(rs, 0, n * sizeof *rs);
    msg.from = from;
    msg.sending_domain = c->sending;
    msg.to = (const char **)to;
    msg.to_count = n;
    msg.data = data;
    msg.size = size;
    msg.rcpt_status = rs;
    msg.rcpt_status_cap = n;
    return tm_deliver(ctx, &msg, &c->policy, &c->so, st);
}

/* ---- the queue (--queue DIR, --flush DIR) ------------------------------ */

/* Writes the recipients of group whose outcome is want into an entry:
 * dir/name when *name is set (rewritten), else a new one.  1 written, 0
 * none had that outcome, -1 failed (said). */
static int queue_some(const char *dir, char *name, size_t cap, const char *state, int want,
                      const q_entry *base, const char *const *group, size_t n,
                      const tm_delivery_status *st, const tm_rcpt_status *rs, int rc)
{
    q_entry e = *base;
    size_t j;
    int ret = 0;

    memset(&e.rcpts, 0, sizeof e.rcpts);
    snprintf(e.state, sizeof e.state, "%s", state);
    outcome_text(e.last, sizeof e.last, st, rc);
    for (j = 0; j < n; j++)
        if (rcpt_result(st, rs, j) == want && sm_list_add(&e.rcpts, group[j]) != 0)
            ret = -1;
    errno = 0;
    if (ret == 0 && e.rcpts.n > 0)
        ret = q_write(dir, name, cap, &e) == 0 ? 1 : -1;
    if (ret < 0)
        fprintf(stderr, "tm-send: queue %s: %s\n", dir, strerror(errno ? errno : ENOMEM));
    sm_list_free(&e.rcpts);
    return ret;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of dir's entries (q-*), sorted; NULL and *n 0 when there are
 * none; -1 (said) when dir cannot be read. */
static int queue_names(const char *dir, char ***out, size_t *n)
{
    char **names = NULL;
    size_t cap = 0;
    DIR *d = opendir(dir);
    struct dirent *de;

    *out = NULL;
    *n = 0;
    if (!d) {
        fprintf(stderr, "tm-send: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "q-", 2) != 0)
            continue;
        if (*n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
            cap = ncap;
        }
        if (!(names[*n] = strdup(de->d_name)))
            break;
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(names, *n, sizeof *names, by_name);
    *out = names;
    return 0;
}

static void names_free(char **names, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static const char *entry_domain(const q_entry *e)
{
    const char *at = e->rcpts.n ? strrchr(e->rcpts.v[0], '@') : NULL;

    return at ? at + 1 : "?";
}

/*
 * Tries the deferred entries once: every one (all), or those whose back-off
 * has passed.  Exactly once: before a delivery the entry is rewritten
 * (durably) as "attempting"; an entry found "attempting" was being
 * delivered when a flush stopped, its outcome is unknown, and it is held,
 * never tried again, as are "uncertain" results (held: an operator
 * decides).  An entry is removed only after its delivery returned
 * delivered or bounced.
 */
static int flush_queue(struct mta *m, const char *dir, int all)
{
    struct conf *c = m->c;
    char lockpath[4096], **names = NULL;
    size_t nnames = 0, i, j;
    tm_context *ctx = NULL;
    long long now = queue_now();
    int lock, ret = EX_OK_;

    snprintf(lockpath, sizeof lockpath, "%s/.lock", dir);
    lock = open(lockpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lock < 0) {
        fprintf(stderr, "tm-send: %s: %s\n", lockpath, strerror(errno));
        return EX_TEMPFAIL_;
    }
    if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "tm-send: another flush of %s is running\n", dir);
        close(lock);
        return EX_TEMPFAIL_;
    }
    if (queue_names(dir, &names, &nnames) != 0) {
        close(lock);
        return EX_TEMPFAIL_;
    }

    for (i = 0; i < nnames; i++) {
        char *name = names[i], other[256] = "", ncopy[256];
        q_entry e;
        tm_delivery_status st;
        tm_rcpt_status *rs;
        bounce_list bl = { 0 };
        const char *domain;
        int rc, r, nd, nu, nb = 0, ndel = 0;

        rc = q_read(dir, name, &e);
        if (rc == -2) {
            fprintf(stderr, "tm-send: %s/%s: not a queue entry, left alone\n", dir, name);
            ret = worse(ret, EX_TEMPFAIL_);
            continue;
        }
        if (rc != 0)
            continue; /* gone meanwhile */
        snprintf(ncopy, sizeof ncopy, "%s", name);
        domain = entry_domain(&e);
        if (strcmp(e.state, "attempting") == 0) {
            snprintf(e.state, sizeof e.state, "held");
            snprintf(e.last, sizeof e.last,
                     "a flush stopped during this delivery: it may have arrived");
            if (q_write(dir, ncopy, sizeof ncopy, &e) != 0)
                fprintf(stderr, "tm-send: %s/%s: %s\n", dir, name, strerror(errno));
        }
        if (strcmp(e.state, "held") == 0) {
            fprintf(stderr, "tm-send: queue %s: %s: held (%s), not retried (--release)\n",
                    name, domain, e.last);
            ret = worse(ret, EX_TEMPFAIL_);
            q_free(&e);
            continue;
        }
        if (now - e.first > Q_MAX_AGE) {
            char failed[4096], path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, name);
            snprintf(failed, sizeof failed, "%s/f-%s", dir, name + 2);
            fprintf(stderr, "tm-send: queue %s: %s: expired after %u attempts (%s), kept as "
                    "f-%s\n", name, domain, e.attempts, e.last, name + 2);
            for (j = 0; j < e.rcpts.n; j++)
                if (bounce_add(&bl, e.rcpts.v[j], 0, "", e.last, "", 1) != 0)
                    break;
            /* renamed first: a crash after it cannot bounce twice */
            if (rename(path, failed) != 0)
                fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
            else
                send_bounce(m, e.user, e.from, e.first, e.data, e.size, &bl);
            bounce_free(&bl);
            ret = worse(ret, EX_UNAVAILABLE_);
            q_free(&e);
            continue;
        }
        if (!all && e.next > now) {
            fprintf(stderr, "tm-send: queue %s: %s: next try in %lld s\n", name, domain,
                    e.next - now);
            q_free(&e);
            continue;
        }
        if (!ctx && (r = open_context(c, &ctx)) != EX_OK_) {
            q_free(&e);
            ret = worse(ret, r);
            break;
        }
        /* durably "attempting" before a byte goes out */
        snprintf(e.state, sizeof e.state, "attempting");
        if (q_write(dir, ncopy, sizeof ncopy, &e) != 0) {
            fprintf(stderr, "tm-send: %s/%s: %s; not tried\n", dir, name, strerror(errno));
            ret = worse(ret, EX_TEMPFAIL_);
            q_free(&e);
            continue;
        }
        rs = calloc(e.rcpts.n, sizeof *rs);
        if (!rs) {
            q_free(&e);
            ret = worse(ret, EX_SOFTWARE_);
            break; /* left "attempting": held by the next flush, never sent twice */
        }
        e.attempts++;
        rc = deliver_one(ctx, c, e.from, (const char *const *)e.rcpts.v, e.rcpts.n, e.data,
                         e.size, rs, &st);
        for (j = 0; j < e.rcpts.n; j++) {
            int res = rcpt_result(&st, rs, j);
            if (res == TM_RESULT_BOUNCED) {
                fprintf(stderr, "tm-send: queue %s: %s bounced: %d %s\n", name,
                        e.rcpts.v[j], rs[j].code, rs[j].message);
                nb++;
            } else if (res == TM_RESULT_DELIVERED) {
                ndel++;
            }
        }
        /* Write what stays first, then remove: a crash in between leaves
         * the entry "attempting", which the next flush holds. */
        e.next = now + q_backoff(e.attempts);
        nu = queue_some(dir, other, sizeof other, "held", TM_RESULT_UNCERTAIN, &e,
                        (const char *const *)e.rcpts.v, e.rcpts.n, &st, rs, rc);
        nd = queue_some(dir, ncopy, sizeof ncopy, "deferred", TM_RESULT_DEFERRED, &e,
                        (const char *const *)e.rcpts.v, e.rcpts.n, &st, rs, rc);
        if (nu < 0 || nd < 0) {
            ret = worse(ret, EX_TEMPFAIL_);
        } else if (nd == 0 && q_remove(dir, name) != 0) {
            fprintf(stderr, "tm-send: %s/%s: %s\n", dir, name, strerror(errno));
            ret = worse(ret, EX_TEMPFAIL_);
        }
        fprintf(stderr, "tm-send: queue %s: %s: %s (attempt %u): %d delivered, %d bounced",
                name, domain, tm_result_name(st.result), e.attempts, ndel, nb);
        if (nd > 0)
            fprintf(stderr, ", deferred, next try in %lld s", e.next - now);
        if (nu > 0)
            fprintf(stderr, ", uncertain: held as %s", other);
        fputc('\n', stderr);
        if (nb) {
            if (bounce_collect(&bl, &st, rs, (const char *const *)e.rcpts.v, e.rcpts.n, rc) !=
                0)
                fprintf(stderr, "tm-send: out of memory for the bounce\n");
            else
                send_bounce(m, e.user, e.from, e.first, e.data, e.size, &bl);
            bounce_free(&bl);
            ret = worse(ret, EX_UNAVAILABLE_);
        }
        if (nu)
            ret = worse(ret, EX_TEMPFAIL_);
        free(rs);
        q_free(&e);
    }
    save_sts_cache(ctx, c);
    tm_context_free(ctx);
    names_free(names, nnames);
    close(lock); /* releases the lock */
    return ret;
}

/* --list DIR, -bp: one paragraph per entry. */
static int list_queue(const char *dir)
{
    char **names;
    size_t n, i, j;
    long long now = queue_now();

    if (access(dir, F_OK) != 0 && errno == ENOENT) {
        printf("%s: the queue is empty (not made yet)\n", dir);
        return EX_OK_;
    }
    if (queue_names(dir, &names, &n) != 0)
        return EX_TEMPFAIL_;
    if (n == 0)
        printf("%s: the queue is empty\n", dir);
    for (i = 0; i < n; i++) {
        q_entry e;
        int rc = q_read(dir, names[i], &e);

        if (rc == -2)
            printf("%s  (not a queue entry)\n\n", names[i]);
        if (rc != 0)
            continue;
        printf("%s  %s  %zu bytes  attempts %u  ", names[i], e.state, e.size, e.attempts);
        if (strcmp(e.state, "deferred") != 0)
            printf("not retried (--release)\n");
        else if (e.next > now)
            printf("next try in %lld s\n", e.next - now);
        else
            printf("due\n");
        printf("  from <%s>%s%s\n", e.from, e.user[0] ? " by " : "", e.user);
        for (j = 0; j < e.rcpts.n; j++)
            printf("  to <%s>\n", e.rcpts.v[j]);
        printf("  last: %s\n\n", e.last);
        q_free(&e);
    }
    names_free(names, n);
    return EX_OK_;
}

/* --release DIR/q-NAME: a held entry becomes deferred and due now. */
static int release_entry(const char *path)
{
    char dir[4096], name[256];
    const char *slash = strrchr(path, '/');
    q_entry e;
    int rc;

    if (!slash) {
        snprintf(dir, sizeof dir, ".");
        snprintf(name, sizeof name, "%s", path);
    } else {
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        snprintf(name, sizeof name, "%s", slash + 1);
    }
    if (strncmp(name, "q-", 2) != 0 || (rc = q_read(dir, name, &e)) == -2) {
        fprintf(stderr, "tm-send: %s: not a queue entry\n", path);
        return EX_USAGE_;
    }
    if (rc != 0) {
        fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
        return EX_USAGE_;
    }
    if (strcmp(e.state, "held") != 0) {
        fprintf(stderr, "tm-send: %s: %s, not held\n", path, e.state);
        q_free(&e);
        return EX_USAGE_;
    }
    snprintf(e.state, sizeof e.state, "deferred");
    e.next = queue_now();
    rc = q_write(dir, name, sizeof name, &e);
    if (rc != 0)
        fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
    else
        fprintf(stderr, "tm-send: %s released: the next flush tries it (a copy may arrive "
                "twice if the last attempt got through)\n", path);
    q_free(&e);
    return rc == 0 ? EX_OK_ : EX_TEMPFAIL_;
}

/* The queue directory, made (0700, the last component only) if missing. */
static int queue_ready(const char *dir)
{
    struct stat sb;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "tm-send: queue %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "tm-send: queue %s: not a directory\n", dir);
        return -1;
    }
    return 0;
}

/* ---- sendmail mode ------------------------------------------------------ */

/* The delivery of a message to every domain of rcpts; the exit status. */
static int deliver_all(struct mta *m, const sm_list *rcpts, const char *from, const char *copy,
                       size_t copy_len)
{
    struct conf *c = m->c;
    const char **group = calloc(rcpts->n, sizeof *group);
    tm_rcpt_status *rs = calloc(rcpts->n, sizeof *rs);
    unsigned char *done = calloc(rcpts->n, 1);
    bounce_list bl = { 0 };
    tm_context *ctx = NULL;
    long long arrival = queue_now();
    int ret = EX_OK_, rc, queue_ok = -1; /* -1: not looked at yet */
    size_t i, j;

    if (!group || !rs || !done) {
        fprintf(stderr, "tm-send: out of memory\n");
        ret = EX_SOFTWARE_;
        goto out;
    }
    ret = open_context(c, &ctx);
    if (ret != EX_OK_)
        goto out;

    /* One delivery per domain (case-insensitive), in the order the domains
     * first appear. */
    for (i = 0; i < rcpts->n; i++) {
        const char *domain = strrchr(rcpts->v[i], '@') + 1;
        tm_delivery_status st;
        char qname[256], hname[256];
        size_t n = 0;
        int ex;

        if (done[i])
            continue;
        for (j = i; j < rcpts->n; j++) {
            if (!done[j] && strcasecmp(strrchr(rcpts->v[j], '@') + 1, domain) == 0) {
                group[n++] = rcpts->v[j];
                done[j] = 1;
            }
        }
        if (c->floor >= 0 && (ex = set_floor(ctx, c->floor, group[0])) != EX_OK_) {
            ret = worse(ret, ex);
            continue;
        }
        rc = deliver_one(ctx, c, from, group, n, copy, copy_len, rs, &st);
        ex = exit_code(st.result);
        if (rc == TM_EINVAL || rc == TM_EADDRESS || rc == TM_ETOOMANY)
            ex = EX_USAGE_;
        qname[0] = hname[0] = '\0';
        if (m->queue && queue_ok < 0 &&
            (st.result == TM_RESULT_DEFERRED || st.result == TM_RESULT_UNCERTAIN))
            queue_ok = queue_ready(m->queue) == 0; /* not usable: 75 */
        if (m->queue && queue_ok > 0 &&
            (st.result == TM_RESULT_DEFERRED || st.result == TM_RESULT_UNCERTAIN)) {
            /* In the queue's custody now: 0, unless writing it failed. */
            q_entry e;
            int nd, nu;
            memset(&e, 0, sizeof e);
            e.from = (char *)from;
            snprintf(e.user, sizeof e.user, "%s", m->user);
            e.attempts = 1;
            e.first = arrival;
            e.next = e.first + q_backoff(1);
            e.data = copy;
            e.size = copy_len;
            nd = queue_some(m->queue, qname, sizeof qname, "deferred", TM_RESULT_DEFERRED, &e,
                            group, n, &st, rs, rc);
            nu = queue_some(m->queue, hname, sizeof hname, "held", TM_RESULT_UNCERTAIN, &e,
                            group, n, &st, rs, rc);
            if (nd >= 0 && nu >= 0) {
                ex = EX_OK_;
                for (j = 0; j < n; j++)
                    if (rcpt_result(&st, rs, j) == TM_RESULT_BOUNCED)
                        ex = EX_UNAVAILABLE_;
            }
        }
        if (ex != EX_USAGE_ && bounce_collect(&bl, &st, rs, group, n, rc) != 0)
            fprintf(stderr, "tm-send: out of memory for the bounce\n");
        ret = worse(ret, ex);
        if (c->json) {
            size_t k = st.rcpt_count < n ? st.rcpt_count : n;
            int need = tm_status_json(&st, rs, k, NULL, 0);
            char *jbuf = need >= 0 ? malloc((size_t)need + 1) : NULL;
            if (jbuf && tm_status_json(&st, rs, k, jbuf, (size_t)need + 1) == need)
                printf("%s\n", jbuf);
            free(jbuf);
        } else {
            fprintf(stderr, "tm-send: %s: %s, %zu recipient%s, mx %s%s", domain,
                    tm_result_name(st.result), n, n == 1 ? "" : "s",
                    st.mx_host[0] ? st.mx_host : "-", st.tls ? " (TLS)" : "");
            if (rc != TM_OK && st.code == 0)
                fprintf(stderr, ": %s", st.description[0] ? st.description : tm_strerror(rc));
            else if (st.code)
                fprintf(stderr, ": %d %s", st.code, st.message);
            fputc('\n', stderr);
            for (j = 0; j < n && j < st.rcpt_count; j++)
                if (rs[j].result != TM_RESULT_DELIVERED)
                    fprintf(stderr, "tm-send:   %s: %s %d %s\n", rs[j].address,
                            tm_result_name(rs[j].result), rs[j].code, rs[j].message);
        }
        if (qname[0])
            fprintf(stderr, "tm-send: %s: queued as %s/%s\n", domain, m->queue, qname);
        if (hname[0])
            fprintf(stderr, "tm-send: %s: uncertain, held (not retried) as %s/%s\n", domain,
                    m->queue, hname);
        else if (st.result == TM_RESULT_UNCERTAIN)
            fprintf(stderr, "tm-send: %s: the message may have been delivered; sending it "
                    "again may deliver it twice\n", domain);
    }
    save_sts_cache(ctx, c);
    send_bounce(m, m->user, from, arrival, copy, copy_len, &bl);
out:
    bounce_free(&bl);
    tm_context_free(ctx);
    free(group);
    free(rs);
    free(done);
    return ret;
}

/* The configuration file's name on the command line (--config FILE,
 * --config=FILE), found before the options are parsed so that they win
 * over it; NULL when not given. */
static const char *config_arg(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0)
            return argv[i] + 9;
    }
    return NULL;
}

int sendmail_main(int argc, char **argv, struct conf *c)
{
    struct mta m;
    sm_list rcpts = { 0 };
    char *raw = NULL, *copy = NULL, *from_line = NULL, *dflt_from = NULL;
    const char *from = NULL, *fullname = NULL, *flush = NULL, *list = NULL, *release = NULL;
    size_t raw_len = 0, copy_len = 0, i;
    int opt, rc, extract = 0, flush_all = 0, ret = EX_OK_;
    const struct passwd *pw;

    memset(&m, 0, sizeof m);
    m.c = c;
    m.queue = TM_SPOOL_DIR;
    if (argc > 1 && strcmp(argv[1], "--sendmail") == 0) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    pw = getpwuid(getuid());
    snprintf(m.user, sizeof m.user, "%s", pw ? pw->pw_name : "");
    ret = read_config(&m, config_arg(argc, argv));
    if (ret != EX_OK_)
        goto out;

    while ((opt = getopt_long(argc, argv, "f:F:tivo:b:B:N:q::", tm_longopts + SENDMAIL_OPTS_FROM,
                              NULL)) != -1) {
        switch (opt) {
        case 'f':
            from = optarg;
            break;
        case 'F':
            fullname = optarg;
            break;
        case 't':
            extract = 1;
            break;
        case 'i':
            break;
        case 'v':
            c->co.log = log_stderr;
            c->co.log_level = TM_LOG_DEBUG;
            break;
        case 'q':
            if (optarg) {
                fprintf(stderr, "tm-send: -q%s: no queue daemon; run -q (or --flush-due) "
                        "from a timer or cron job\n", optarg);
                ret = EX_USAGE_;
                goto out;
            }
            flush = "";
            flush_all = 1;
            break;
        case 'o':
            if (strcmp(optarg, "i") && strcmp(optarg, "em") && strcmp(optarg, "ee") &&
                strcmp(optarg, "di") && strcmp(optarg, "db")) {
                fprintf(stderr, "tm-send: -o%s is not supported\n", optarg);
                sendmail_usage(stderr);
                ret = EX_USAGE_;
                goto out;
            }
            break;
        case 'b':
            if (strcmp(optarg, "p") == 0) {
                list = "";
            } else if (strcmp(optarg, "m") != 0) {
                fprintf(stderr, "tm-send: -b%s is not supported (only -bm, -bp)\n", optarg);
                ret = EX_USAGE_;
                goto out;
            }
            break;
        case 'B':
        case 'N':
            break;
        case O_QUEUE:
            m.queue = optarg;
            break;
        case O_NO_QUEUE:
            m.queue = NULL;
            break;
        case O_FLUSH:
            flush = optarg;
            flush_all = 1;
            break;
        case O_FLUSH_DUE:
            flush = optarg;
            flush_all = 0;
            break;
        case O_LIST:
            list = optarg;
            break;
        case O_RELEASE:
            release = optarg;
            break;
        case O_BOUNCE:
            if (bounce_option(&m, optarg) != 0) {
                ret = EX_USAGE_;
                goto out;
            }
            break;
        case O_CONFIG:
            break; /* read above */
        case O_VERSION:
            printf("tm-send (libtlsmail %s, %s)\nconfiguration: %s\nqueue: %s\n",
                   tm_version(), tm_tls_backend(), TM_SENDMAIL_CONF_PATH, TM_SPOOL_DIR);
            goto out;
        case O_HELP:
            sendmail_usage(stdout);
            goto out;
        default:
            rc = common_option(opt, optarg, c);
            if (rc == 0)
                break;
            if (rc == 1)
                sendmail_usage(stderr);
            ret = EX_USAGE_;
            goto out;
        }
    }
    if (c->co.helo_name) {
        snprintf(m.host, sizeof m.host, "%s", c->co.helo_name);
    } else if (gethostname(m.host, sizeof m.host - 1) != 0 || !m.host[0]) {
        snprintf(m.host, sizeof m.host, "localhost");
    }

    /* the queue's commands: no message read ("": the queue of --queue or
     * the configuration) */
    if (flush || list || release) {
        if (flush && !*flush)
            flush = m.queue;
        if (list && !*list)
            list = m.queue;
        if (optind < argc || extract || (!!flush + !!list + !!release) > 1) {
            fprintf(stderr, "tm-send: -q, -bp, --flush, --flush-due, --list and --release "
                    "take no recipients, no -t, and one at a time\n");
            ret = EX_USAGE_;
        } else if (release) {
            ret = release_entry(release);
        } else if (!flush && !list) {
            fprintf(stderr, "tm-send: no queue (--no-queue)\n");
            ret = EX_USAGE_;
        } else if (list) {
            ret = list_queue(list);
        } else {
            ret = flush_queue(&m, flush, flush_all);
        }
        goto out;
    }

    if (sm_read_all(STDIN_FILENO, &raw, &raw_len) != 0) {
        fprintf(stderr, "tm-send: reading the message: %s\n", strerror(errno));
        ret = EX_NOINPUT_;
        goto out;
    }
    for (i = (size_t)optind; i < (size_t)argc; i++)
        if (sm_parse_addresses(argv[i], strlen(argv[i]), &rcpts) != 0)
            goto oom;
    if (extract && sm_header_recipients(raw, raw_len, &rcpts) != 0)
        goto oom;
    if (rcpts.n == 0) {
        fprintf(stderr, "tm-send: no recipients\n");
        ret = EX_USAGE_;
        goto out;
    }
    for (i = 0; i < rcpts.n; i++) {
        const char *at = strrchr(rcpts.v[i], '@');
        if (!at || at == rcpts.v[i] || !at[1]) {
            fprintf(stderr, "tm-send: %s: not an address with a domain (no local delivery)\n",
                    rcpts.v[i]);
            ret = EX_USAGE_;
            goto out;
        }
    }

    if (!from)
        from = m.from;
    if (!from)
        from = getenv("TM_SENDMAIL_FROM");
    if (!from) {
        dflt_from = malloc(strlen(m.user[0] ? m.user : "nobody") + strlen(m.host) + 2);
        if (!dflt_from)
            goto oom;
        sprintf(dflt_from, "%s@%s", m.user[0] ? m.user : "nobody", m.host);
        from = dflt_from;
    }
    if (from[0] == '<' && from[strlen(from) - 1] == '>') {
        /* -f '<>' (null sender) or -f '<addr>' */
        char *bare = strdup(from + 1);
        if (!bare)
            goto oom;
        bare[strlen(bare) - 1] = '\0';
        free(dflt_from);
        from = dflt_from = bare;
    }
    if (!sm_has_header(raw, raw_len, "from") && !(from_line = from_header(fullname, from)))
        goto oom;
    if (sm_message_copy(raw, raw_len, from_line, &copy, &copy_len) != 0 ||
        add_date_id(&m, raw, raw_len, &copy, &copy_len) != 0)
        goto oom;
    ret = deliver_all(&m, &rcpts, from, copy, copy_len);
    goto out;
oom:
    fprintf(stderr, "tm-send: out of memory\n");
    ret = EX_SOFTWARE_;
out:
    sm_list_free(&rcpts);
    free(raw);
    free(copy);
    free(from_line);
    free(dflt_from);
    free(m.conf_buf);
    return ret;
}
