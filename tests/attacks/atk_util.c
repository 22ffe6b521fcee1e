/*
 * atk_util.c - helpers of the attack suite: certificates, the suite's own
 * dnsmasq (names that the system resolver does not know: wildcard and
 * domain-vs-MX certificate cases), one delivery against a scripted hostile
 * server, and the checks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attacks.h"

int atk_selftest;
double atk_last_wall;
char atk_certdir[256];
char atk_dns[64];
static pid_t dnsmasq_pid;
/* Global and volatile: the stores must not be optimised away. */
void *volatile atk_kept[8192];
static unsigned kept_i;

void *atk_keep(void *p)
{
    atk_kept[kept_i++ % (sizeof atk_kept / sizeof atk_kept[0])] = p;
    return p;
}

static const tm_policy policies[POL_N] = {
    { TM_POLICY_VERSION, 0, 0, 0 },
    { TM_POLICY_VERSION, TM_ON, 0, 0 },
    { TM_POLICY_VERSION, 0, TM_ON, 0 },
    { TM_POLICY_VERSION, TM_ON, TM_ON, 0 },
    { TM_POLICY_VERSION, 0, 0, TM_ON },
};
static const char *const policy_names[POL_N] = { "default", "require_tls", "skip_verify",
                                                 "require_tls+skip_verify",
                                                 "keep_unverified_tls" };

const tm_policy *atk_policy(int which)
{
    return which == POL_DEFAULT ? NULL : &policies[which];
}

const char *atk_policy_name(int which)
{
    return policy_names[which];
}

const char *atk_cert(const char *name)
{
    static char buf[2][400];
    static int slot;
    slot ^= 1;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s.pem", atk_certdir, name);
    return buf[slot];
}

const char *atk_key(const char *name)
{
    static char buf[2][400];
    static int slot;
    slot ^= 1;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s.key", atk_certdir, name);
    return buf[slot];
}

const char *atk_ca(void)
{
    static char buf[400];
    snprintf(buf, sizeof buf, "%s/ca.pem", atk_certdir);
    return buf;
}

double atk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A UDP port on 127.0.0.1 nobody uses right now (0 on failure). */
static int free_udp_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), port = 0;

    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* 1 when something is bound to UDP 127.0.0.1:port. */
static int udp_port_taken(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), taken;

    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    taken = bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno == EADDRINUSE;
    close(fd);
    return taken;
}

static const char *find_dnsmasq(void)
{
    static const char *const cands[] = { "/usr/sbin/dnsmasq", "/sbin/dnsmasq",
                                         "/usr/local/sbin/dnsmasq" };
    size_t i;
    for (i = 0; i < sizeof cands / sizeof cands[0]; i++)
        if (access(cands[i], X_OK) == 0)
            return cands[i];
    return NULL;
}

/* The suite's zone: names that must resolve to 127.0.0.1 for the name
 * cases.  Runs in the foreground as our child; bounded start (5 tries,
 * 2 s each). */
static void start_dnsmasq(void)
{
    const char *prog = find_dnsmasq();
    int attempt;

    atk_dns[0] = '\0';
    if (!prog)
        return;
    for (attempt = 0; attempt < 5; attempt++) {
        char port_opt[32];
        int port = free_udp_port(), waited;
        pid_t pid;

        if (port <= 0 || port == 53)
            continue;
        snprintf(port_opt, sizeof port_opt, "--port=%d", port);
        fflush(NULL);
        pid = fork();
        if (pid < 0)
            return;
        if (pid == 0) {
            const char *argv[] = { prog, "--keep-in-foreground", port_opt,
                                   "--listen-address=127.0.0.1", "--bind-interfaces",
                                   "--no-resolv", "--no-hosts", "--no-poll", "--no-negcache",
                                   "--pid-file=", "--log-facility=/dev/null",
                                   "--local=/atk.test/",
                                   "--host-record=mx.wild.atk.test,127.0.0.1",
                                   "--host-record=a.b.wild.atk.test,127.0.0.1",
                                   "--host-record=mx1.atk.test,127.0.0.1",
                                   "--host-record=mx.atk.test,127.0.0.1",
                                   "--host-record=atk.test,127.0.0.1",
                                   "--mx-host=atk.test,mx.atk.test,10", NULL };
            int fd = open("/dev/null", O_RDWR);
            if (fd >= 0) {
                dup2(fd, 0);
                dup2(fd, 1);
                dup2(fd, 2);
            }
            execv(prog, (char *const *)argv);
            _exit(127);
        }
        for (waited = 0; waited < 2000; waited += 20) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                pid = 0;
                break;
            }
            if (udp_port_taken(port)) {
                dnsmasq_pid = pid;
                snprintf(atk_dns, sizeof atk_dns, "127.0.0.1:%d", port);
                return;
            }
            nap_ms(20);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
}

static void stop_dnsmasq(void)
{
    int waited;
    if (dnsmasq_pid <= 0)
        return;
    kill(dnsmasq_pid, SIGTERM);
    for (waited = 0; waited < 3000; waited += 20) {
        if (waitpid(dnsmasq_pid, NULL, WNOHANG) == dnsmasq_pid) {
            dnsmasq_pid = 0;
            return;
        }
        nap_ms(20);
    }
    kill(dnsmasq_pid, SIGKILL);
    waitpid(dnsmasq_pid, NULL, 0);
    dnsmasq_pid = 0;
}

int atk_group_setup(void **state)
{
    char cmd[800];
    const char *tmp = getenv("TMPDIR");
    const char *st = getenv("TM_ATK_SELFTEST");
    (void)state;

    atk_selftest = st && *st && strcmp(st, "0") != 0;
    snprintf(atk_certdir, sizeof atk_certdir, "%s/tm-attacks-%ld", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    snprintf(cmd, sizeof cmd, "sh '%s' '%s'", MAKE_CERTS, atk_certdir);
    if (system(cmd) != 0)
        return -1;
    start_dnsmasq();
    if (!atk_dns[0])
        fprintf(stderr, "attacks: dnsmasq unavailable: the wildcard and domain-name cases "
                        "will be skipped\n");
    return 0;
}

int atk_group_teardown(void **state)
{
    char cmd[400];
    (void)state;
    stop_dnsmasq();
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", atk_certdir);
    return system(cmd) == 0 ? 0 : -1;
}

tm_context *atk_ctx(unsigned int timeout_ms, unsigned int port, int dns)
{
    tm_context_options o = TM_CONTEXT_OPTIONS_INIT;
    tm_context *ctx = NULL;

    o.ca_file = atk_ca();
    o.helo_name = HELO;
    o.command_timeout_ms = timeout_ms;
    o.port = port;
    if (dns)
        o.dns_server = atk_dns;
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    return ctx;
}

void atk_session_opts(tm_session_options *so, const char *host, int port)
{
    tm_session_options_init(so);
    so->host = host && *host ? host : NULL;
    so->port = (unsigned int)port;
}

static const char *const default_to[1] = { "rcpt@example.test" };

void atk_msg(tm_message *m, const char *const *to, size_t n, const char *body)
{
    tm_message_init(m);
    m->from = "sender@tm.test";
    m->to = to ? to : default_to;
    m->to_count = to ? n : 1;
    m->data = body ? body : BODY;
    m->size = strlen(body ? body : BODY);
}

void atk_print(const char *what, int rc, const tm_delivery_status *st)
{
    print_message("%s: rc=%d (%s) result=%s code=%d tls=%d verified=%d tls_failure=%d "
                  "attempts=%u %.3fs tls-error=[%s] desc=[%s]\n",
                  what, rc, tm_strerror(rc), tm_result_name(st->result), st->code, st->tls,
                  st->cert_verified, st->tls_failure, st->attempt_no, st->session_seconds,
                  st->tls_error, st->description);
}

char *atk_run(const char *script, const atk_opts *o, int *rc, tm_delivery_status *st)
{
    static const atk_opts none;
    const char *cert = "good";
    tm_context *ctx;
    tm_session_options so;
    tm_message m;
    char to_buf[300];
    const char *to[1];
    hostile h;
    char *rec;

    if (!o)
        o = &none;
    if (o->cert)
        cert = o->cert;
    if (o->dns && !atk_dns[0])
        skip();
    assert_int_equal(hostile_start(&h, script, atk_cert(cert), atk_key(cert)), 0);
    ctx = atk_ctx(o->timeout_ms ? o->timeout_ms : 5000, o->host && !*o->host ? (unsigned)h.port : 0,
                  o->dns);
    atk_session_opts(&so, o->host ? o->host : "localhost", h.port);
    if (o->msg) {
        m = *o->msg;
    } else {
        atk_msg(&m, NULL, 0, NULL);
        if (o->domain) {
            snprintf(to_buf, sizeof to_buf, "rcpt@%s", o->domain);
            to[0] = to_buf;
            m.to = to;
        }
    }
    atk_last_wall = atk_now();
    *rc = tm_deliver(ctx, &m, o->policy, o->host && !*o->host ? NULL : &so, st);
    atk_last_wall = atk_now() - atk_last_wall;
    tm_context_free(ctx);
    rec = atk_keep(hostile_finish(&h, o->finish_s ? o->finish_s : 10));
    assert_non_null(rec);
    return rec;
}

void atk_field_eq(const char *rec, int conn, const char *field, const char *want)
{
    size_t len = 0;
    char *got = hostile_field(rec, conn, field, &len);

    assert_non_null(got);
    if (len != strlen(want) || memcmp(got, want, len) != 0) {
        print_error("connection %d %s:\n  got  [%.*s]\n  want [%s]\n", conn, field,
                    (int)(len > 2000 ? 2000 : len), got, want);
        free(got);
        fail();
    }
    free(got);
}

int atk_field_has(const char *rec, int conn, const char *field, const char *needle)
{
    size_t len = 0, nl = strlen(needle), i;
    char *got = hostile_field(rec, conn, field, &len);
    int found = 0;

    if (!got)
        return 0;
    for (i = 0; !found && nl <= len && i <= len - nl; i++)
        found = memcmp(got + i, needle, nl) == 0;
    free(got);
    return found;
}

void atk_no_envelope_in_plain(const char *rec)
{
    int n = hostile_count_connections(rec), c;

    for (c = 0; c < n; c++) {
        if (atk_field_has(rec, c, "received_plain", "MAIL") ||
            atk_field_has(rec, c, "received_plain", "RCPT") ||
            atk_field_has(rec, c, "received_plain", "DATA") ||
            atk_field_has(rec, c, "received_after_tls_failure", "MAIL")) {
            print_error("connection %d: envelope sent before TLS\n", c);
            fail();
        }
    }
}

void atk_check(const char *rec, int rc, const tm_delivery_status *st, const atk_want *w)
{
    ATK_EQ(rc, w->rc);
    assert_int_equal(st->error, rc);
    assert_int_equal(st->result, w->result);
    assert_int_equal(st->tls, w->tls);
    assert_int_equal(st->cert_verified, w->verified);
    assert_int_equal(st->tls_failure, w->tls_failure);
    if (w->result == TM_RESULT_DELIVERED)
        assert_int_equal(st->code / 100, 2);
    if (w->conns >= 0)
        assert_int_equal(hostile_count_connections(rec), w->conns);
    assert_int_equal(hostile_unexpected(rec), 0);
    if (w->recv0)
        atk_field_eq(rec, 0, "received", w->recv0);
    if (w->recv1)
        atk_field_eq(rec, 1, "received", w->recv1);
    if (w->plain0)
        atk_field_eq(rec, 0, "received_plain", w->plain0);
    if (w->tls0)
        atk_field_eq(rec, 0, "received_tls", w->tls0);
}

/* GCC with -fsanitize=undefined warns "null format string" here
 * (-Wformat-truncation false positive on a forwarded format). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
char *atk_fmt(const char *fmt, ...)
{
    va_list ap;
    char probe[2];
    int n;
    char *s;

    assert_non_null(fmt);
    va_start(ap, fmt);
    n = vsnprintf(probe, sizeof probe, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    s = atk_keep(malloc((size_t)n + 1));
    assert_non_null(s);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *atk_repeat(char c, size_t n)
{
    char *s = atk_keep(malloc(n + 1));
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

char *atk_b64(const void *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char *out = atk_keep(malloc((len + 2) / 3 * 4 + 1)), *o;
    size_t i;

    assert_non_null(out);
    o = out;
    for (i = 0; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

void atk_matrix(const char *name, const atk_row rows[POL_N], const atk_opts *base)
{
    static const atk_opts none;
    int p;

    for (p = 0; p < POL_N; p++) {
        atk_opts o = base ? *base : none;
        tm_delivery_status st;
        char what[160];
        char *rec;
        int rc;

        o.policy = atk_policy(p);
        rec = atk_run(rows[p].script, &o, &rc, &st);
        snprintf(what, sizeof what, "%s [%s]", name, atk_policy_name(p));
        atk_print(what, rc, &st);
        atk_check(rec, rc, &st, &rows[p].want);
        if (POL_REQUIRES(p))
            atk_no_envelope_in_plain(rec);
        free(rec);
    }
}
