/*
 * tm-send - deliver one message with libtlsmail.
 *
 *   tm-send --from ADDR --to ADDR [--to ADDR ...] [options] [FILE | -]
 *
 * Each policy flag can be switched on (--require-tls, --require-tls=yes) or
 * off (--require-tls=no, --no-require-tls) for this one message; off is
 * TM_OFF, which overrides a sending domain's "on" from --settings (a
 * recipient domain's floor still wins).  Not given: the sending domain's
 * setting, else off.
 *
 * Exit status: 0 delivered, 75 deferred or uncertain, 69 bounced, 64 usage
 * (sysexits.h: EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE).
 *
 * Called "sendmail" (or with --sendmail first) it is a sendmail drop-in:
 * sendmail_main() below, the message side in sendmail.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <pwd.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tlsmail.h>

#include "queue.h"
#include "sendmail.h"

#define EX_OK_ 0
#define EX_USAGE_ 64
#define EX_UNAVAILABLE_ 69
#define EX_SOFTWARE_ 70
#define EX_TEMPFAIL_ 75
#define EX_NOINPUT_ 66

static void usage(FILE *f)
{
    fputs("usage: tm-send --from ADDR --to ADDR [--to ADDR ...] [options] [FILE | -]\n"
          "  --mx HOST[:PORT]       deliver to this host instead of the domain's MX hosts\n"
          "  --port N               SMTP port used for MX hosts (default 25)\n"
          "  --dns IP[:PORT]        ask this DNS server instead of the system resolver\n"
          "  --require-tls[=yes|no] never deliver without TLS\n"
          "  --skip-verify[=yes|no] accept any certificate and host name\n"
          "  --keep-unverified-tls[=yes|no]\n"
          "                         keep TLS when verification fails (not with --require-tls)\n"
          "  --no-require-tls, --no-skip-verify, --no-keep-unverified-tls\n"
          "                         switch the flag off for this message, whatever the\n"
          "                         sending domain's setting (a recipient floor still wins)\n"
          "  --dnssec-resolver IP[:PORT]\n"
          "                         a DNSSEC-validating resolver you trust: every lookup goes\n"
          "                         to it and DANE (RFC 7672) is on\n"
          "  --dnssec-trust-resolver  trust the AD bit of the resolver in use (--dns, else\n"
          "                         the system's): DANE is on\n"
          "  --no-dane              DANE off, even with a trusted resolver\n"
          "  --floor none|tls|verified|dane\n"
          "                         the least TLS for the recipient domain in this run (as a\n"
          "                         `recipient` line of --settings; dane: only DANE-authenticated\n"
          "                         TLS)\n"
          "  --no-mta-sts           MTA-STS (RFC 8461) off: the domain's published policy is\n"
          "                         not looked up\n"
          "  --sts-cache FILE       MTA-STS policy cache: loaded before (if it exists), saved\n"
          "                         after the delivery\n"
          "  --sts-https-address IP, --sts-https-port N\n"
          "                         fetch MTA-STS policies from this address and port instead\n"
          "                         of mta-sts.DOMAIN:443 (tests and private deployments only;\n"
          "                         the certificate must still be valid for mta-sts.DOMAIN)\n"
          "  --ca-file FILE         trust these CA certificates instead of the system store\n"
          "  --helo NAME            name announced in EHLO (default: this host's name)\n"
          "  --timeout SECONDS      per-command timeout (defaults follow RFC 5321)\n"
          "  --json                 print the delivery status as one JSON object\n"
          "  --settings FILE        connection settings per sending / recipient domain\n"
          "  --sending-domain NAME  whose settings apply (default: the --from domain)\n"
          "  --verbose              print the SMTP dialogue on standard error\n"
          "  --version              print the library version\n"
          "tm-send --sendmail ..., or called sendmail: the sendmail command line\n"
          "                         (-t, -i, -f ADDR, -F NAME, recipients; see --sendmail --help)\n"
          "exit status: 0 delivered, 75 deferred or uncertain, 69 bounced, 64 usage\n",
          f);
}

static void log_stderr(void *arg, int level, const char *msg)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };
    (void)arg;
    fprintf(stderr, "tm-send: %s: %s\n", names[level & 3], msg);
}

/* Streams standard input (or a pipe) without reading it all first. */
static long read_fd(void *arg, unsigned char *buf, size_t size)
{
    int fd = *(int *)arg;
    for (;;) {
        ssize_t n = read(fd, buf, size);
        if (n >= 0)
            return (long)n;
        if (errno != EINTR)
            return -1;
    }
}

/* "host:port", "[v6]:port" or "host". */
static int split_host_port(char *arg, unsigned int *port)
{
    char *colon;
    char *end;
    unsigned long p;

    if (arg[0] == '[') {
        char *close = strchr(arg, ']');
        if (!close)
            return -1;
        colon = close[1] == ':' ? close + 1 : NULL;
        if (!colon && close[1] != '\0')
            return -1;
        if (colon)
            *colon = '\0';
        if (colon) {
            memmove(arg, arg + 1, (size_t)(close - arg - 1));
            arg[close - arg - 1] = '\0';
        }
    } else {
        colon = strrchr(arg, ':');
        if (colon && strchr(arg, ':') != colon)
            colon = NULL; /* bare IPv6 */
        if (colon)
            *colon = '\0';
    }
    if (!colon)
        return 0;
    errno = 0;
    p = strtoul(colon + 1, &end, 10);
    if (errno || *end || p == 0 || p > 65535)
        return -1;
    *port = (unsigned int)p;
    return 0;
}

static int exit_code(int result)
{
    switch (result) {
    case TM_RESULT_DELIVERED:
        return EX_OK_;
    case TM_RESULT_BOUNCED:
        return EX_UNAVAILABLE_;
    default:
        return EX_TEMPFAIL_;
    }
}

/* --FLAG, --FLAG=yes|no, --no-FLAG: TM_ON or TM_OFF; 0 for a bad value. */
static int flag_value(const char *arg, int negated)
{
    static const char *const on[] = { "yes", "true", "on", "1" };
    static const char *const off[] = { "no", "false", "off", "0" };
    size_t i;

    if (negated)
        return arg ? 0 : TM_OFF;
    if (!arg)
        return TM_ON;
    for (i = 0; i < sizeof on / sizeof on[0]; i++) {
        if (strcmp(arg, on[i]) == 0)
            return TM_ON;
        if (strcmp(arg, off[i]) == 0)
            return TM_OFF;
    }
    return 0;
}

static void print_summary(const tm_delivery_status *st, const tm_rcpt_status *rcpt, size_t n)
{
    size_t i;

    printf("result: %s\n", tm_result_name(st->result));
    if (st->code)
        printf("reply: %d %s\n", st->code, st->message);
    if (st->description[0])
        printf("description: %s\n", st->description);
    printf("mx-host: %s\n", st->mx_host[0] ? st->mx_host : "-");
    printf("mx-address: %s\n", st->mx_address[0] ? st->mx_address : "-");
    printf("tls: %s\n", st->tls ? "true" : "false");
    printf("certificate-verified: %s\n", st->cert_verified ? "true" : "false");
    if (st->tls)
        printf("tls-version: %s\ntls-cipher: %s\n", st->tls_version, st->tls_cipher);
    if (st->tls_error[0])
        printf("tls-error: %s\n", st->tls_error);
    if (st->dane != TM_DANE_OFF)
        printf("dane: %s%s%s\nmx-dnssec: %s\n", tm_dane_name(st->dane), st->dane_tlsa[0] ? " " : "",
               st->dane_tlsa, st->mx_dnssec ? "true" : "false");
    if (st->cert_verified)
        printf("certificate-verified-by: %s\n", tm_verified_by_name(st->cert_verified_by));
    printf("mta-sts: %s%s%s%s\n", tm_mta_sts_name(st->mta_sts), st->mta_sts_id[0] ? " id=" : "",
           st->mta_sts_id, st->mta_sts_cached ? " (cached)" : "");
    if (st->mta_sts_would_refuse)
        printf("mta-sts-would-refuse: true\n");
    if (st->mta_sts_error[0])
        printf("mta-sts-error: %s\n", st->mta_sts_error);
    printf("policy: require-tls=%s (%s) skip-verify=%s (%s) keep-unverified-tls=%s (%s) "
           "recipient-floor=%s\n",
           st->policy.require_tls ? "yes" : "no", tm_policy_source_name(st->require_tls_source),
           st->policy.skip_verify ? "yes" : "no", tm_policy_source_name(st->skip_verify_source),
           st->policy.keep_unverified_tls ? "yes" : "no",
           tm_policy_source_name(st->keep_unverified_tls_source), tm_floor_name(st->floor));
    printf("attempt-no: %u\nsession-seconds: %.3f\n", st->attempt_no, st->session_seconds);
    if (st->transactions > 1)
        printf("transactions: %u\n", st->transactions);
    for (i = 0; i < n && i < st->rcpt_count; i++)
        printf("recipient: %s %s %d %s\n", rcpt[i].address, tm_result_name(rcpt[i].result),
               rcpt[i].code, rcpt[i].message);
}

enum { O_MX = 256, O_PORT, O_DNS, O_REQ, O_SKIP, O_KEEP, O_NO_REQ, O_NO_SKIP, O_NO_KEEP, O_CA,
       O_HELO, O_TIMEOUT, O_JSON, O_VERBOSE, O_VERSION, O_HELP, O_SETTINGS, O_SENDING,
       O_DNSSEC, O_TRUST, O_NO_DANE, O_FLOOR, O_NO_STS, O_STS_CACHE, O_STS_ADDR,
       O_STS_PORT, O_QUEUE, O_FLUSH };
static const struct option longopts[] = {
    { "from", required_argument, NULL, 'f' },
    { "to", required_argument, NULL, 't' },
    { "mx", required_argument, NULL, O_MX },
    { "port", required_argument, NULL, O_PORT },
    { "dns", required_argument, NULL, O_DNS },
    { "require-tls", optional_argument, NULL, O_REQ },
    { "skip-verify", optional_argument, NULL, O_SKIP },
    { "keep-unverified-tls", optional_argument, NULL, O_KEEP },
    { "no-require-tls", no_argument, NULL, O_NO_REQ },
    { "no-skip-verify", no_argument, NULL, O_NO_SKIP },
    { "no-keep-unverified-tls", no_argument, NULL, O_NO_KEEP },
    { "ca-file", required_argument, NULL, O_CA },
    { "helo", required_argument, NULL, O_HELO },
    { "timeout", required_argument, NULL, O_TIMEOUT },
    { "json", no_argument, NULL, O_JSON },
    { "verbose", no_argument, NULL, O_VERBOSE },
    { "version", no_argument, NULL, O_VERSION },
    { "help", no_argument, NULL, O_HELP },
    { "settings", required_argument, NULL, O_SETTINGS },
    { "sending-domain", required_argument, NULL, O_SENDING },
    { "dnssec-resolver", required_argument, NULL, O_DNSSEC },
    { "dnssec-trust-resolver", no_argument, NULL, O_TRUST },
    { "no-dane", no_argument, NULL, O_NO_DANE },
    { "floor", required_argument, NULL, O_FLOOR },
    { "no-mta-sts", no_argument, NULL, O_NO_STS },
    { "sts-cache", required_argument, NULL, O_STS_CACHE },
    { "sts-https-address", required_argument, NULL, O_STS_ADDR },
    { "sts-https-port", required_argument, NULL, O_STS_PORT },
    /* sendmail mode only */
    { "queue", required_argument, NULL, O_QUEUE },
    { "flush", required_argument, NULL, O_FLUSH },
    { NULL, 0, NULL, 0 },
};

/* What tm-send's and sendmail mode's common options set. */
struct conf {
    tm_context_options co;
    tm_session_options so;
    tm_policy policy;
    int floor, json;
    const char *settings, *sending, *sts_cache;
    char *mx;
};

/* A common option: 0 taken, 1 not one of them, -1 a bad value (said). */
static int common_option(int opt, struct conf *c)
{
    int flag;

    switch (opt) {
    case O_MX:
        c->mx = optarg;
        if (split_host_port(c->mx, &c->so.port) != 0 || !*c->mx) {
            fprintf(stderr, "tm-send: bad --mx %s\n", optarg);
            return -1;
        }
        c->so.host = c->mx;
        return 0;
    case O_PORT: {
        char *end;
        unsigned long p = strtoul(optarg, &end, 10);
        if (*end || p == 0 || p > 65535) {
            fprintf(stderr, "tm-send: bad --port %s\n", optarg);
            return -1;
        }
        c->co.port = (unsigned int)p;
        return 0;
    }
    case O_DNS:
        c->co.dns_server = optarg;
        return 0;
    case O_REQ:
    case O_NO_REQ:
    case O_SKIP:
    case O_NO_SKIP:
    case O_KEEP:
    case O_NO_KEEP:
        flag = flag_value(optarg, opt == O_NO_REQ || opt == O_NO_SKIP || opt == O_NO_KEEP);
        if (!flag) {
            fprintf(stderr, "tm-send: bad value %s (yes or no)\n", optarg);
            return -1;
        }
        if (opt == O_REQ || opt == O_NO_REQ)
            c->policy.require_tls = flag;
        else if (opt == O_SKIP || opt == O_NO_SKIP)
            c->policy.skip_verify = flag;
        else
            c->policy.keep_unverified_tls = flag;
        return 0;
    case O_CA:
        c->co.ca_file = optarg;
        return 0;
    case O_HELO:
        c->co.helo_name = optarg;
        return 0;
    case O_TIMEOUT: {
        char *end;
        double s = strtod(optarg, &end);
        if (*end || !(s > 0) || s > 86400) {
            fprintf(stderr, "tm-send: bad --timeout %s\n", optarg);
            return -1;
        }
        c->co.command_timeout_ms = (unsigned int)(s * 1000);
        if (c->co.command_timeout_ms == 0)
            c->co.command_timeout_ms = 1;
        return 0;
    }
    case O_JSON:
        c->json = 1;
        return 0;
    case O_SETTINGS:
        c->settings = optarg;
        return 0;
    case O_SENDING:
        c->sending = optarg;
        return 0;
    case O_DNSSEC:
        c->co.dnssec_resolver = optarg;
        return 0;
    case O_TRUST:
        c->co.dnssec_trust_resolver = TM_ON;
        return 0;
    case O_NO_DANE:
        c->co.dane = TM_OFF;
        return 0;
    case O_NO_STS:
        c->co.mta_sts = TM_OFF;
        return 0;
    case O_STS_CACHE:
        c->sts_cache = optarg;
        return 0;
    case O_STS_ADDR:
        c->co.sts_https_address = optarg;
        return 0;
    case O_STS_PORT: {
        char *end;
        unsigned long v = strtoul(optarg, &end, 10);
        if (*optarg == '\0' || *end != '\0' || v == 0 || v > 65535) {
            fprintf(stderr, "tm-send: bad --sts-https-port %s\n", optarg);
            return -1;
        }
        c->co.sts_https_port = (unsigned int)v;
        return 0;
    }
    case O_FLOOR:
        if (strcmp(optarg, "none") == 0)
            c->floor = TM_FLOOR_NONE;
        else if (strcmp(optarg, "tls") == 0)
            c->floor = TM_FLOOR_TLS;
        else if (strcmp(optarg, "verified") == 0)
            c->floor = TM_FLOOR_VERIFIED;
        else if (strcmp(optarg, "dane") == 0)
            c->floor = TM_FLOOR_DANE;
        else {
            fprintf(stderr, "tm-send: bad --floor %s (none, tls, verified or dane)\n", optarg);
            return -1;
        }
        return 0;
    case O_VERBOSE:
        c->co.log = log_stderr;
        c->co.log_level = TM_LOG_DEBUG;
        return 0;
    default:
        return 1;
    }
}

static void conf_init(struct conf *c)
{
    tm_context_options co = TM_CONTEXT_OPTIONS_INIT;
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_policy policy = TM_POLICY_INIT;

    memset(c, 0, sizeof *c);
    c->co = co;
    c->so = so;
    c->policy = policy;
    c->floor = -1;
}

/* The context with --settings and the MTA-STS cache loaded: EX_OK_ or the
 * exit status (said). */
static int open_context(struct conf *c, tm_context **ctx)
{
    int rc;

    if (!c->co.log) {
        c->co.log = log_stderr;
        c->co.log_level = TM_LOG_ERROR;
    }
    rc = tm_context_new(ctx, &c->co);
    if (rc != TM_OK) {
        fprintf(stderr, "tm-send: %s\n", tm_strerror(rc));
        return rc == TM_EINVAL ? EX_USAGE_ : EX_SOFTWARE_;
    }
    if (c->settings) {
        int line = 0;
        rc = tm_settings_load(*ctx, c->settings, 1, &line);
        if (rc != TM_OK) {
            if (line)
                fprintf(stderr, "tm-send: %s:%d: %s\n", c->settings, line, tm_strerror(rc));
            else
                fprintf(stderr, "tm-send: %s: %s\n", c->settings, tm_strerror(rc));
            return EX_USAGE_;
        }
    }
    if (c->sts_cache && access(c->sts_cache, F_OK) == 0) {
        int line = 0;
        rc = tm_sts_cache_load(*ctx, c->sts_cache, &line);
        if (rc != TM_OK) {
            fprintf(stderr, "tm-send: %s:%d: %s\n", c->sts_cache, line, tm_strerror(rc));
            return EX_USAGE_;
        }
    }
    return EX_OK_;
}

/* --floor for the domain of addr. */
static int set_floor(tm_context *ctx, int floor, const char *addr)
{
    const char *domain = strrchr(addr, '@');
    int rc = domain ? tm_recipient_floor_set(ctx, domain + 1, floor) : TM_EADDRESS;

    if (rc != TM_OK) {
        fprintf(stderr, "tm-send: --floor for %s: %s\n", addr, tm_strerror(rc));
        return EX_USAGE_;
    }
    return EX_OK_;
}

static void save_sts_cache(tm_context *ctx, const struct conf *c)
{
    if (c->sts_cache && tm_sts_cache_save(ctx, c->sts_cache) != TM_OK)
        fprintf(stderr, "tm-send: could not save the MTA-STS cache to %s\n", c->sts_cache);
}

/* ---- sendmail mode ---------------------------------------------------- */

static int is_sendmail(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');

    base = base ? base + 1 : argv[0];
    return strcmp(base, "sendmail") == 0 || (argc > 1 && strcmp(argv[1], "--sendmail") == 0);
}

static void sendmail_usage(FILE *f)
{
    fputs("usage: sendmail [-t] [-i] [-f ADDR] [-F NAME] [options] [ADDR ...] < MESSAGE\n"
          "       tm-send --sendmail ...   (the same, under any name)\n"
          "  ADDR ...       recipients (an operand may be a comma-separated list)\n"
          "  -t             also the recipients of the To, Cc and Bcc headers; Bcc is\n"
          "                 removed from the copy that is sent\n"
          "  -f ADDR        envelope sender (default: $TM_SENDMAIL_FROM, else\n"
          "                 USER@HOST, HOST the --helo name or this host's name)\n"
          "  -F NAME        full name, for the From header added when the message has none\n"
          "  -i, -oi        accepted: input always ends at end of file, never at a lone dot\n"
          "  -v             print the SMTP dialogue on standard error (as --verbose)\n"
          "  -oem -oee -odi -odb -bm -B 8BITMIME|7BIT -N DSN\n"
          "                 accepted and ignored (delivery is always immediate, in the\n"
          "                 foreground; no DSN is requested)\n"
          "  --queue DIR    a domain deferred is written to DIR (one file per domain)\n"
          "                 and counts as accepted; an uncertain one is held there\n"
          "  --flush DIR    retry the due entries of DIR (5 min, doubling, at most 4 h;\n"
          "                 given up after 5 days), no message read; entries whose outcome\n"
          "                 is unknown are held, never retried\n"
          "  and tm-send's long options (--dns, --port, --mx, --ca-file, --helo, --json, ...)\n"
          "One delivery per recipient domain, in turn; a line per domain on standard error\n"
          "(--json: one JSON object per domain, a line each, on standard output).\n"
          "exit status: the first that applies: 70 internal error, 64 usage, 75 a domain\n"
          "deferred or uncertain, 69 a domain bounced, 0 all delivered\n",
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
    case EX_USAGE_:
        return 3;
    default:
        return 4;
    }
}

static int worse(int a, int b)
{
    return exit_rank(b) > exit_rank(a) ? b : a;
}

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

/* ---- the queue (--queue DIR, --flush DIR) ------------------------------ */

/* The current time; TM_QUEUE_NOW (Unix seconds) stands in for it in tests. */
static long long queue_now(void)
{
    const char *s = getenv("TM_QUEUE_NOW");

    return s && *s ? strtoll(s, NULL, 10) : (long long)time(NULL);
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

/* Writes the recipients of group whose outcome is want into an entry:
 * dir/name when *name is set (rewritten), else a new one.  1 written, 0
 * none had that outcome, -1 failed (said). */
static int queue_some(const char *dir, char *name, size_t cap, const char *state, int want,
                      const q_entry *base, const char **group, size_t n,
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

/*
 * Tries every due entry once.  Exactly once: before a delivery the entry is
 * rewritten (durably) as "attempting"; an entry found "attempting" was being
 * delivered when a flush stopped, its outcome is unknown, and it is held,
 * never tried again, as are "uncertain" results (held: an operator decides).
 * An entry is removed only after its delivery returned delivered or bounced.
 */
static int flush_queue(const char *dir, struct conf *c)
{
    char lockpath[4096], **names = NULL;
    size_t nnames = 0, cap = 0, i, j;
    tm_context *ctx = NULL;
    long long now = queue_now();
    int lock, ret = EX_OK_;
    DIR *d;
    struct dirent *de;

    snprintf(lockpath, sizeof lockpath, "%s/.lock", dir);
    lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0) {
        fprintf(stderr, "tm-send: %s: %s\n", lockpath, strerror(errno));
        return EX_TEMPFAIL_;
    }
    if (flock(lock, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "tm-send: another flush of %s is running\n", dir);
        close(lock);
        return EX_TEMPFAIL_;
    }
    d = opendir(dir);
    if (!d) {
        fprintf(stderr, "tm-send: %s: %s\n", dir, strerror(errno));
        close(lock);
        return EX_TEMPFAIL_;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "q-", 2) != 0)
            continue;
        if (nnames == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = realloc(names, ncap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
            cap = ncap;
        }
        if (!(names[nnames] = strdup(de->d_name)))
            break;
        nnames++;
    }
    closedir(d);
    if (nnames)
        qsort(names, nnames, sizeof *names, by_name);

    for (i = 0; i < nnames; i++) {
        char *name = names[i], other[256] = "", ncopy[256];
        q_entry e;
        tm_delivery_status st;
        tm_rcpt_status *rs;
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
        domain = strrchr(e.rcpts.v[0], '@') ? strrchr(e.rcpts.v[0], '@') + 1 : "?";
        if (strcmp(e.state, "attempting") == 0) {
            snprintf(e.state, sizeof e.state, "held");
            snprintf(e.last, sizeof e.last,
                     "a flush stopped during this delivery: it may have arrived");
            if (q_write(dir, ncopy, sizeof ncopy, &e) != 0)
                fprintf(stderr, "tm-send: %s/%s: %s\n", dir, name, strerror(errno));
        }
        if (strcmp(e.state, "held") == 0) {
            fprintf(stderr, "tm-send: queue %s: %s: held (%s), not retried\n", name, domain,
                    e.last);
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
            if (rename(path, failed) != 0)
                fprintf(stderr, "tm-send: %s: %s\n", path, strerror(errno));
            ret = worse(ret, EX_UNAVAILABLE_);
            q_free(&e);
            continue;
        }
        if (e.next > now) {
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
        {
            tm_message msg = TM_MESSAGE_INIT;
            tm_status_init(&st, TM_STATUS_VERSION);
            msg.from = e.from;
            msg.sending_domain = c->sending;
            msg.to = (const char **)e.rcpts.v;
            msg.to_count = e.rcpts.n;
            msg.data = e.data;
            msg.size = e.size;
            msg.rcpt_status = rs;
            msg.rcpt_status_cap = e.rcpts.n;
            e.attempts++;
            rc = tm_deliver(ctx, &msg, &c->policy, &c->so, &st);
        }
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
                        (const char **)e.rcpts.v, e.rcpts.n, &st, rs, rc);
        nd = queue_some(dir, ncopy, sizeof ncopy, "deferred", TM_RESULT_DEFERRED, &e,
                        (const char **)e.rcpts.v, e.rcpts.n, &st, rs, rc);
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
        if (nb)
            ret = worse(ret, EX_UNAVAILABLE_);
        if (nu)
            ret = worse(ret, EX_TEMPFAIL_);
        free(rs);
        q_free(&e);
    }
    save_sts_cache(ctx, c);
    tm_context_free(ctx);
    for (i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    close(lock); /* releases the lock */
    return ret;
}

static int sendmail_main(int argc, char **argv, struct conf *c)
{
    sm_list rcpts = { 0 };
    char *raw = NULL, *copy = NULL, *from_line = NULL, *dflt_from = NULL;
    const char *from = NULL, *fullname = NULL, *queue = NULL, *flush = NULL;
    const char **group = NULL;
    tm_rcpt_status *rs = NULL;
    unsigned char *done = NULL;
    size_t raw_len = 0, copy_len = 0, i, j;
    tm_context *ctx = NULL;
    int opt, rc, extract = 0, ret = EX_OK_;

    if (argc > 1 && strcmp(argv[1], "--sendmail") == 0) {
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    while ((opt = getopt_long(argc, argv, "f:F:tivo:b:B:N:", longopts + 2, NULL)) != -1) {
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
        case 'o':
            if (strcmp(optarg, "i") && strcmp(optarg, "em") && strcmp(optarg, "ee") &&
                strcmp(optarg, "di") && strcmp(optarg, "db")) {
                fprintf(stderr, "tm-send: -o%s is not supported\n", optarg);
                sendmail_usage(stderr);
                return EX_USAGE_;
            }
            break;
        case 'b':
            if (strcmp(optarg, "m") != 0) {
                fprintf(stderr, "tm-send: -b%s is not supported (only -bm)\n", optarg);
                return EX_USAGE_;
            }
            break;
        case 'B':
        case 'N':
            break;
        case O_QUEUE:
            queue = optarg;
            break;
        case O_FLUSH:
            flush = optarg;
            break;
        case O_VERSION:
            printf("tm-send (libtlsmail %s, %s)\n", tm_version(), tm_tls_backend());
            return EX_OK_;
        case O_HELP:
            sendmail_usage(stdout);
            return EX_OK_;
        default:
            rc = common_option(opt, c);
            if (rc == 0)
                break;
            if (rc == 1)
                sendmail_usage(stderr);
            return EX_USAGE_;
        }
    }

    if (flush) {
        if (optind < argc || queue || extract) {
            fprintf(stderr, "tm-send: --flush takes no recipients, -t or --queue\n");
            return EX_USAGE_;
        }
        return flush_queue(flush, c);
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
        from = getenv("TM_SENDMAIL_FROM");
    if (!from) {
        struct passwd *pw = getpwuid(getuid());
        char host[256] = "localhost";
        const char *h = c->co.helo_name;
        if (!h) {
            if (gethostname(host, sizeof host - 1) != 0)
                strcpy(host, "localhost");
            host[sizeof host - 1] = '\0';
            h = host;
        }
        dflt_from = malloc(strlen(pw ? pw->pw_name : "nobody") + strlen(h) + 2);
        if (!dflt_from)
            goto oom;
        sprintf(dflt_from, "%s@%s", pw ? pw->pw_name : "nobody", h);
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
    if (sm_message_copy(raw, raw_len, from_line, &copy, &copy_len) != 0)
        goto oom;

    ret = open_context(c, &ctx);
    if (ret != EX_OK_)
        goto out;
    group = calloc(rcpts.n, sizeof *group);
    rs = calloc(rcpts.n, sizeof *rs);
    done = calloc(rcpts.n, 1);
    if (!group || !rs || !done)
        goto oom;

    /* One delivery per domain (case-insensitive), in the order the domains
     * first appear. */
    for (i = 0; i < rcpts.n; i++) {
        const char *domain = strrchr(rcpts.v[i], '@') + 1;
        tm_message msg = TM_MESSAGE_INIT;
        tm_delivery_status st;
        char qname[256], hname[256];
        size_t n = 0;
        int ex;

        if (done[i])
            continue;
        for (j = i; j < rcpts.n; j++) {
            if (!done[j] && strcasecmp(strrchr(rcpts.v[j], '@') + 1, domain) == 0) {
                group[n++] = rcpts.v[j];
                done[j] = 1;
            }
        }
        if (c->floor >= 0 && (ex = set_floor(ctx, c->floor, group[0])) != EX_OK_) {
            ret = worse(ret, ex);
            continue;
        }
        tm_status_init(&st, TM_STATUS_VERSION);
        memset(rs, 0, rcpts.n * sizeof *rs);
        msg.from = from;
        msg.sending_domain = c->sending;
        msg.to = group;
        msg.to_count = n;
        msg.data = copy;
        msg.size = copy_len;
        msg.rcpt_status = rs;
        msg.rcpt_status_cap = n;
        rc = tm_deliver(ctx, &msg, &c->policy, &c->so, &st);
        ex = exit_code(st.result);
        if (rc == TM_EINVAL || rc == TM_EADDRESS || rc == TM_ETOOMANY)
            ex = EX_USAGE_;
        qname[0] = hname[0] = '\0';
        if (queue && (st.result == TM_RESULT_DEFERRED || st.result == TM_RESULT_UNCERTAIN)) {
            /* In the queue's custody now: 0, unless writing it failed. */
            q_entry e;
            int nd, nu;
            memset(&e, 0, sizeof e);
            e.from = (char *)from;
            e.attempts = 1;
            e.first = queue_now();
            e.next = e.first + q_backoff(1);
            e.data = copy;
            e.size = copy_len;
            nd = queue_some(queue, qname, sizeof qname, "deferred", TM_RESULT_DEFERRED, &e,
                            group, n, &st, rs, rc);
            nu = queue_some(queue, hname, sizeof hname, "held", TM_RESULT_UNCERTAIN, &e,
                            group, n, &st, rs, rc);
            if (nd >= 0 && nu >= 0) {
                ex = EX_OK_;
                for (j = 0; j < n; j++)
                    if (rcpt_result(&st, rs, j) == TM_RESULT_BOUNCED)
                        ex = EX_UNAVAILABLE_;
            }
        }
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
            fprintf(stderr, "tm-send: %s: queued as %s/%s\n", domain, queue, qname);
        if (hname[0])
            fprintf(stderr, "tm-send: %s: uncertain, held (not retried) as %s/%s\n", domain,
                    queue, hname);
        else if (st.result == TM_RESULT_UNCERTAIN)
            fprintf(stderr, "tm-send: %s: the message may have been delivered; sending it "
                    "again may deliver it twice\n", domain);
    }
    save_sts_cache(ctx, c);
    goto out;
oom:
    fprintf(stderr, "tm-send: out of memory\n");
    ret = EX_SOFTWARE_;
out:
    tm_context_free(ctx);
    sm_list_free(&rcpts);
    free(raw);
    free(copy);
    free(from_line);
    free(dflt_from);
    free(group);
    free(rs);
    free(done);
    return ret;
}

int main(int argc, char **argv)
{
    const char **to = NULL;
    tm_rcpt_status *rcpt = NULL;
    size_t nto = 0, cap = 0;
    struct conf c;
    tm_message msg = TM_MESSAGE_INIT;
    tm_delivery_status st;
    tm_context *ctx = NULL;
    const char *from = NULL, *file = NULL;
    int opt, rc, fd = -1, ret = EX_SOFTWARE_;
    void *map = NULL;
    size_t map_len = 0;
    char *jbuf;

    if (tm_status_init(&st, TM_STATUS_VERSION) != TM_OK) {
        fprintf(stderr, "tm-send: this libtlsmail does not know status version %d\n",
                TM_STATUS_VERSION);
        return EX_SOFTWARE_;
    }
    conf_init(&c);
    if (argc > 0 && is_sendmail(argc, argv))
        return sendmail_main(argc, argv, &c);

    while ((opt = getopt_long(argc, argv, "f:t:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f':
            from = optarg;
            break;
        case 't':
            if (nto == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                const char **nt = realloc(to, ncap * sizeof *to);
                if (!nt) {
                    fprintf(stderr, "tm-send: out of memory\n");
                    ret = EX_SOFTWARE_;
                    goto out;
                }
                to = nt;
                cap = ncap;
            }
            to[nto++] = optarg;
            break;
        case O_VERSION:
            printf("tm-send (libtlsmail %s, %s)\n", tm_version(), tm_tls_backend());
            ret = EX_OK_;
            goto out;
        case O_HELP:
        case 'h':
            usage(stdout);
            ret = EX_OK_;
            goto out;
        default:
            rc = common_option(opt, &c);
            if (rc == 0)
                break;
            if (rc == 1)
                usage(stderr);
            ret = EX_USAGE_;
            goto out;
        }
    }
    if (!from || nto == 0 || argc - optind > 1) {
        usage(stderr);
        ret = EX_USAGE_;
        goto out;
    }
    if (optind < argc && strcmp(argv[optind], "-") != 0)
        file = argv[optind];
    if (!c.co.log) {
        c.co.log = log_stderr;
        c.co.log_level = TM_LOG_ERROR;
    }

    /* A regular file is mapped and sent from memory (SIZE, 8BITMIME known
     * in advance); anything else is streamed. */
    fd = file ? open(file, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0) {
        fprintf(stderr, "tm-send: %s: %s\n", file, strerror(errno));
        ret = EX_NOINPUT_;
        goto out;
    }
    {
        struct stat sb;
        if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0) {
            map_len = (size_t)sb.st_size;
            map = mmap(NULL, map_len, PROT_READ, MAP_PRIVATE, fd, 0);
            if (map == MAP_FAILED)
                map = NULL;
        }
    }
    msg.from = from;
    msg.sending_domain = c.sending;
    msg.to = to;
    msg.to_count = nto;
    /* Every recipient's outcome, in the order of --to. */
    rcpt = calloc(nto, sizeof *rcpt);
    if (!rcpt) {
        fprintf(stderr, "tm-send: out of memory\n");
        ret = EX_SOFTWARE_;
        goto out;
    }
    msg.rcpt_status = rcpt;
    msg.rcpt_status_cap = nto;
    if (map) {
        msg.data = map;
        msg.size = map_len;
    } else {
        msg.read = read_fd;
        msg.read_arg = &fd;
    }

    ret = open_context(&c, &ctx);
    if (ret != EX_OK_)
        goto out;
    if (c.floor >= 0 && (ret = set_floor(ctx, c.floor, to[0])) != EX_OK_)
        goto out;
    rc = tm_deliver(ctx, &msg, &c.policy, &c.so, &st);
    save_sts_cache(ctx, &c);
    if (rc == TM_EINVAL && st.result == TM_RESULT_BOUNCED && st.mx_host[0] == '\0' &&
        st.attempt_no == 0) {
        fprintf(stderr, "tm-send: %s\n", tm_strerror(rc));
    }
    if (c.json) {
        /* The recipients the library got to (none when the input was
         * refused before a recipient was looked at). */
        size_t n = st.rcpt_count < nto ? st.rcpt_count : nto;
        int need = tm_status_json(&st, rcpt, n, NULL, 0);
        jbuf = need >= 0 ? malloc((size_t)need + 1) : NULL;
        if (jbuf && tm_status_json(&st, rcpt, n, jbuf, (size_t)need + 1) == need)
            printf("%s\n", jbuf);
        free(jbuf);
    } else {
        print_summary(&st, rcpt, nto);
    }
    ret = exit_code(st.result);
    if (rc == TM_EINVAL || rc == TM_EADDRESS || rc == TM_ETOOMANY)
        ret = EX_USAGE_;
out:
    tm_context_free(ctx);
    free(rcpt);
    free(to);
    if (map)
        munmap(map, map_len);
    if (file && fd >= 0)
        close(fd);
    return ret;
}
