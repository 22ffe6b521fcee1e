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

#include "tm-send.h"


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
          "tm-send --flush DIR | --flush-due DIR | --list DIR | --release DIR/q-NAME [options]\n"
          "                         sendmail mode's queue commands (see --sendmail --help)\n"
          "exit status: 0 delivered, 75 deferred or uncertain, 69 bounced, 64 usage,\n"
          "  66 the message file cannot be read, 70 internal error\n",
          f);
}

void log_stderr(void *arg, int level, const char *msg)
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

int exit_code(int result)
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

const struct option tm_longopts[] = {
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
    { "no-queue", no_argument, NULL, O_NO_QUEUE },
    { "flush", required_argument, NULL, O_FLUSH },
    { "flush-due", required_argument, NULL, O_FLUSH_DUE },
    { "list", required_argument, NULL, O_LIST },
    { "release", required_argument, NULL, O_RELEASE },
    { "bounce", required_argument, NULL, O_BOUNCE },
    { "config", required_argument, NULL, O_CONFIG },
    { "sendmail", no_argument, NULL, O_SENDMAIL },
    { NULL, 0, NULL, 0 },
};

/* See tm-send.h. */
int common_option(int opt, char *arg, struct conf *c)
{
    int flag;

    switch (opt) {
    case O_MX:
        c->mx = arg;
        if (split_host_port(c->mx, &c->so.port) != 0 || !*c->mx) {
            fprintf(stderr, "tm-send: bad --mx %s\n", arg);
            return -1;
        }
        c->so.host = c->mx;
        return 0;
    case O_PORT: {
        char *end;
        unsigned long p = strtoul(arg, &end, 10);
        if (*end || p == 0 || p > 65535) {
            fprintf(stderr, "tm-send: bad --port %s\n", arg);
            return -1;
        }
        c->co.port = (unsigned int)p;
        return 0;
    }
    case O_DNS:
        c->co.dns_server = arg;
        return 0;
    case O_REQ:
    case O_NO_REQ:
    case O_SKIP:
    case O_NO_SKIP:
    case O_KEEP:
    case O_NO_KEEP:
        flag = flag_value(arg, opt == O_NO_REQ || opt == O_NO_SKIP || opt == O_NO_KEEP);
        if (!flag) {
            fprintf(stderr, "tm-send: bad value %s (yes or no)\n", arg);
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
        c->co.ca_file = arg;
        return 0;
    case O_HELO:
        c->co.helo_name = arg;
        return 0;
    case O_TIMEOUT: {
        char *end;
        double s = strtod(arg, &end);
        if (*end || !(s > 0) || s > 86400) {
            fprintf(stderr, "tm-send: bad --timeout %s\n", arg);
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
        c->settings = arg;
        return 0;
    case O_SENDING:
        c->sending = arg;
        return 0;
    case O_DNSSEC:
        c->co.dnssec_resolver = arg;
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
        c->sts_cache = arg;
        return 0;
    case O_STS_ADDR:
        c->co.sts_https_address = arg;
        return 0;
    case O_STS_PORT: {
        char *end;
        unsigned long v = strtoul(arg, &end, 10);
        if (*arg == '\0' || *end != '\0' || v == 0 || v > 65535) {
            fprintf(stderr, "tm-send: bad --sts-https-port %s\n", arg);
            return -1;
        }
        c->co.sts_https_port = (unsigned int)v;
        return 0;
    }
    case O_FLOOR:
        if (strcmp(arg, "none") == 0)
            c->floor = TM_FLOOR_NONE;
        else if (strcmp(arg, "tls") == 0)
            c->floor = TM_FLOOR_TLS;
        else if (strcmp(arg, "verified") == 0)
            c->floor = TM_FLOOR_VERIFIED;
        else if (strcmp(arg, "dane") == 0)
            c->floor = TM_FLOOR_DANE;
        else {
            fprintf(stderr, "tm-send: bad --floor %s (none, tls, verified or dane)\n", arg);
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

void conf_init(struct conf *c)
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
int open_context(struct conf *c, tm_context **ctx)
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
int set_floor(tm_context *ctx, int floor, const char *addr)
{
    const char *domain = strrchr(addr, '@');
    int rc = domain ? tm_recipient_floor_set(ctx, domain + 1, floor) : TM_EADDRESS;

    if (rc != TM_OK) {
        fprintf(stderr, "tm-send: --floor for %s: %s\n", addr, tm_strerror(rc));
        return EX_USAGE_;
    }
    return EX_OK_;
}

void save_sts_cache(tm_context *ctx, const struct conf *c)
{
    if (c->sts_cache && tm_sts_cache_save(ctx, c->sts_cache) != TM_OK)
        fprintf(stderr, "tm-send: could not save the MTA-STS cache to %s\n", c->sts_cache);
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

    while ((opt = getopt_long(argc, argv, "f:t:h", tm_longopts, NULL)) != -1) {
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
            rc = common_option(opt, optarg, &c);
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
