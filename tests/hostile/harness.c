/*
 * harness.c - the shared part of the hostile-server test programs:
 * certificates (tests/peers/certs.py), the suite's own dnsmasq (names that
 * the system resolver does not know: the wildcard and domain-vs-MX
 * certificate cases, a domain with two MX hosts), one delivery against one
 * or two scripted hostile servers, and the checks.
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

#include "harness.h"

#ifndef CERTS_PY
#define CERTS_PY "tests/peers/certs.py"
#endif

int ht_selftest;
double ht_last_wall;
tm_rcpt_status ht_rcpt[HT_MAX_RCPT];
static char certdir[256];
static char dns_addr[64];
static int dns_tried;
static pid_t dnsmasq_pid;
/* Global and volatile: the stores must not be optimised away. */
void *volatile ht_kept[8192];
static unsigned kept_i;

void *ht_keep(void *p)
{
    ht_kept[kept_i++ % (sizeof ht_kept / sizeof ht_kept[0])] = p;
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

const tm_policy *ht_policy(int which)
{
    return which == POL_DEFAULT ? NULL : &policies[which];
}

const char *ht_policy_name(int which)
{
    return policy_names[which];
}

const char *ht_cert(const char *name)
{
    static char buf[2][400];
    static int slot;
    slot ^= 1;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s.pem", certdir, name);
    return buf[slot];
}

const char *ht_key(const char *name)
{
    static char buf[2][400];
    static int slot;
    slot ^= 1;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s.key", certdir, name);
    return buf[slot];
}

const char *ht_ca(void)
{
    static char buf[400];
    snprintf(buf, sizeof buf, "%s/ca.pem", certdir);
    return buf;
}

double ht_now(void)
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

/* ---- dnsmasq ------------------------------------------------------------- */

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

/* The suite's zone.  Runs in the foreground as our child; bounded start
 * (5 tries, 2 s each). */
static void start_dnsmasq(void)
{
    const char *prog = find_dnsmasq();
    int attempt;

    dns_addr[0] = '\0';
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
                                   "--mx-host=atk.test,mx.atk.test,10",
                                   "--host-record=mx-a.atk.test," HT_MX_A,
                                   "--host-record=mx-b.atk.test," HT_MX_B,
                                   "--mx-host=two.atk.test,mx-a.atk.test,10",
                                   "--mx-host=two.atk.test,mx-b.atk.test,20", NULL };
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
                snprintf(dns_addr, sizeof dns_addr, "127.0.0.1:%d", port);
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

const char *ht_dns(void)
{
    if (!dns_tried) {
        dns_tried = 1;
        start_dnsmasq();
        if (!dns_addr[0])
            fprintf(stderr, "hostile: dnsmasq unavailable: the cases that need DNS names "
                            "are skipped\n");
    }
    return dns_addr[0] ? dns_addr : NULL;
}

/* ---- set-up ------------------------------------------------------------- */

void ht_filter(void)
{
    const char *filter = getenv("TM_HOSTILE_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
}

int ht_setup(void **state)
{
    char cmd[800];
    const char *tmp = getenv("TMPDIR");
    const char *st = getenv("TM_HOSTILE_SELFTEST");
    (void)state;

    ht_selftest = st && *st && strcmp(st, "0") != 0;
    snprintf(certdir, sizeof certdir, "%s/tm-hostile-%ld", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && /usr/bin/python3 '%s' --set hostile '%s'", certdir,
             CERTS_PY, certdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "hostile: %s failed\n", cmd);
        return -1;
    }
    return 0;
}

int ht_teardown(void **state)
{
    char cmd[400];
    (void)state;
    stop_dnsmasq();
    dns_tried = 0;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- one delivery --------------------------------------------------------- */

tm_context *ht_ctx(unsigned int timeout_ms, unsigned int port, int dns)
{
    tm_context_options o;
    tm_context *ctx = NULL;

    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.ca_file = ht_ca();
    o.helo_name = HELO;
    o.command_timeout_ms = timeout_ms;
    o.port = port;
    if (dns) {
        o.dns_server = ht_dns();
        if (!o.dns_server)
            skip();
    }
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    return ctx;
}

void ht_session_opts(tm_session_options *so, const char *host, int port)
{
    assert_int_equal(tm_session_options_init(so, TM_SESSION_OPTIONS_VERSION), TM_OK);
    so->host = host && *host ? host : NULL;
    so->port = (unsigned int)port;
}

static const char *const default_to[1] = { "rcpt@example.test" };

void ht_msg(tm_message *m, const char *const *to, size_t n, const char *body)
{
    assert_int_equal(tm_message_init(m, TM_MESSAGE_VERSION), TM_OK);
    m->from = "sender@tm.test";
    m->to = to ? to : default_to;
    m->to_count = to ? n : 1;
    m->data = body ? body : BODY;
    m->size = strlen(body ? body : BODY);
    m->rcpt_status = ht_rcpt;
    m->rcpt_status_cap = HT_MAX_RCPT;
}

void ht_print(const char *what, int rc, const tm_delivery_status *st)
{
    print_message("%s: rc=%d (%s) result=%s code=%d tls=%d verified=%d tls_failure=%d "
                  "attempts=%u transactions=%u %.3fs mx=%s tls-error=[%s] desc=[%s]\n",
                  what, rc, tm_strerror(rc), tm_result_name(st->result), st->code, st->tls,
                  st->cert_verified, st->tls_failure, st->attempt_no, st->transactions,
                  st->session_seconds, st->mx_host, st->tls_error, st->description);
}

/* The message of a run: o->msg, or the default one (to rcpt@domain when a
 * domain is given); outcomes to ht_rcpt unless the message has its own. */
static void run_msg(tm_message *m, const ht_opts *o, const char *domain, char *to_buf,
                    size_t to_size, const char **to)
{
    if (o->msg) {
        *m = *o->msg;
        if (!m->rcpt_status) {
            m->rcpt_status = ht_rcpt;
            m->rcpt_status_cap = HT_MAX_RCPT;
        }
    } else {
        ht_msg(m, NULL, 0, NULL);
        if (domain) {
            snprintf(to_buf, to_size, "rcpt@%s", domain);
            to[0] = to_buf;
            m->to = to;
        }
    }
    memset(ht_rcpt, 0, sizeof ht_rcpt);
}

char *ht_run(const char *script, const ht_opts *o, int *rc, tm_delivery_status *st)
{
    static const ht_opts none;
    const char *cert = "good";
    tm_context *ctx;
    tm_session_options so;
    tm_message m;
    char to_buf[300];
    const char *to[1];
    int mx;
    hostile h;
    char *rec;

    if (!o)
        o = &none;
    if (o->cert)
        cert = o->cert;
    mx = o->host && !*o->host;
    if (o->dns && !ht_dns())
        skip();
    assert_int_equal(tm_status_init(st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(hostile_start(&h, script, ht_cert(cert), ht_key(cert)), 0);
    ctx = ht_ctx(o->timeout_ms ? o->timeout_ms : 5000, mx ? (unsigned)h.port : 0, o->dns);
    ht_session_opts(&so, o->host ? o->host : "localhost", h.port);
    run_msg(&m, o, o->domain, to_buf, sizeof to_buf, to);
    ht_last_wall = ht_now();
    *rc = tm_deliver(ctx, &m, o->policy, mx ? NULL : &so, st);
    ht_last_wall = ht_now() - ht_last_wall;
    tm_context_free(ctx);
    rec = ht_keep(hostile_finish(&h, o->finish_s ? o->finish_s : 10));
    assert_non_null(rec);
    return rec;
}

char *ht_run_two(const char *script_a, const char *script_b, const ht_opts *o, int *rc,
                 tm_delivery_status *st, char **rec_b)
{
    static const ht_opts none;
    const char *cert = "mxpair";
    tm_context *ctx;
    tm_message m;
    char to_buf[300], listen[64];
    const char *to[1];
    hostile a, b;
    int attempt, started = 0;
    char *rec;

    if (!o)
        o = &none;
    if (o->cert)
        cert = o->cert;
    if (!ht_dns())
        skip();
    assert_int_equal(tm_status_init(st, TM_STATUS_VERSION), TM_OK);
    /* DNS cannot carry ports: both servers on one port, the second one
     * taken if it happens to be busy on HT_MX_B. */
    for (attempt = 0; attempt < 5 && !started; attempt++) {
        assert_int_equal(hostile_start_at(&a, HT_MX_A ":0", script_a, ht_cert(cert),
                                          ht_key(cert), 0),
                         0);
        snprintf(listen, sizeof listen, HT_MX_B ":%d", a.port);
        if (hostile_start_at(&b, listen, script_b, ht_cert(cert), ht_key(cert), 0) == 0)
            started = 1;
        else
            free(hostile_finish(&a, 0));
    }
    assert_true(started);
    ctx = ht_ctx(o->timeout_ms ? o->timeout_ms : 5000, (unsigned)a.port, 1);
    run_msg(&m, o, "two.atk.test", to_buf, sizeof to_buf, to);
    ht_last_wall = ht_now();
    *rc = tm_deliver(ctx, &m, o->policy, NULL, st);
    ht_last_wall = ht_now() - ht_last_wall;
    tm_context_free(ctx);
    /* Both at once: neither server then waits for the other's finish. */
    hostile_client_done(&a);
    hostile_client_done(&b);
    rec = ht_keep(hostile_finish(&a, o->finish_s ? o->finish_s : 10));
    *rec_b = ht_keep(hostile_finish(&b, o->finish_s ? o->finish_s : 10));
    assert_non_null(rec);
    assert_non_null(*rec_b);
    return rec;
}

/* ---- checks --------------------------------------------------------------- */

void ht_field_eq(const char *rec, int conn, const char *field, const char *want)
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

int ht_field_count(const char *rec, int conn, const char *field, const char *needle)
{
    size_t len = 0, nl = strlen(needle), i;
    char *got = hostile_field(rec, conn, field, &len);
    int n = 0;

    if (!got)
        return 0;
    for (i = 0; nl && nl <= len && i <= len - nl; i++)
        if (memcmp(got + i, needle, nl) == 0)
            n++;
    free(got);
    return n;
}

int ht_field_has(const char *rec, int conn, const char *field, const char *needle)
{
    return ht_field_count(rec, conn, field, needle) > 0;
}

void ht_no_envelope_in_plain(const char *rec)
{
    int n = hostile_count_connections(rec), c;

    for (c = 0; c < n; c++) {
        if (ht_field_has(rec, c, "received_plain", "MAIL") ||
            ht_field_has(rec, c, "received_plain", "RCPT") ||
            ht_field_has(rec, c, "received_plain", "DATA") ||
            ht_field_has(rec, c, "received_after_tls_failure", "MAIL")) {
            print_error("connection %d: envelope sent before TLS\n", c);
            fail();
        }
    }
}

void ht_no_envelope(const char *rec)
{
    int n = hostile_count_connections(rec), c;

    for (c = 0; c < n; c++) {
        if (ht_field_has(rec, c, "received", "MAIL") || ht_field_has(rec, c, "received", "RCPT") ||
            ht_field_has(rec, c, "received", "DATA")) {
            print_error("connection %d: envelope sent\n", c);
            fail();
        }
    }
}

void ht_check(const char *rec, int rc, const tm_delivery_status *st, const ht_want *w)
{
    HT_EQ(rc, w->rc);
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
        ht_field_eq(rec, 0, "received", w->recv0);
    if (w->recv1)
        ht_field_eq(rec, 1, "received", w->recv1);
    if (w->plain0)
        ht_field_eq(rec, 0, "received_plain", w->plain0);
    if (w->tls0)
        ht_field_eq(rec, 0, "received_tls", w->tls0);
}

/* GCC with -fsanitize=undefined warns "null format string" here
 * (-Wformat-truncation false positive on a forwarded format). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
char *ht_fmt(const char *fmt, ...)
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
    s = ht_keep(malloc((size_t)n + 1));
    assert_non_null(s);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

char *ht_repeat(char c, size_t n)
{
    char *s = ht_keep(malloc(n + 1));
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

char *ht_b64(const void *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char *out = ht_keep(malloc((len + 2) / 3 * 4 + 1)), *o;
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

void ht_matrix(const char *name, const ht_row rows[POL_N], const ht_opts *base)
{
    static const ht_opts none;
    int p;

    for (p = 0; p < POL_N; p++) {
        ht_opts o = base ? *base : none;
        tm_delivery_status st;
        char what[160];
        char *rec;
        int rc;

        o.policy = ht_policy(p);
        rec = ht_run(rows[p].script, &o, &rc, &st);
        snprintf(what, sizeof what, "%s [%s]", name, ht_policy_name(p));
        ht_print(what, rc, &st);
        ht_check(rec, rc, &st, &rows[p].want);
        if (POL_REQUIRES(p))
            ht_no_envelope_in_plain(rec);
        free(rec);
    }
}
