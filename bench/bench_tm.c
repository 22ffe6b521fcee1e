/*
 * bench_tm.c - libtlsmail side of the benchmark (see bench/README.md).
 *
 * Linked against the STATIC libtlsmail.a and the static mbedTLS archives
 * with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free, so every
 * allocation made by libtlsmail or mbedTLS code passes through the counters
 * below (glibc-internal allocations, e.g. inside fopen or res_ninit, are
 * not seen).  Counting is on only with --allocs (and in mode memory): the
 * atomic counters cost ~10% of the CPU of a handshake, which makes ~24000
 * allocations, so CPU figures come from runs without it.  Two mbedTLS entry points are wrapped as well:
 *   mbedtls_x509_crt_verify_restartable  called once per FULL handshake
 *                                         (a resumed one verifies nothing);
 *   mbedtls_ssl_set_session              how a client asks for resumption;
 *                                         mode "new" suppresses it so that
 *                                         every handshake is a full one even
 *                                         if the library resumes sessions.
 *
 * Modes (the client modes take the same arguments as bench_smtplib.py and
 * bench_netsmtp, and all print one JSON line):
 *   reused   one session (open + STARTTLS outside the measurement), then
 *            --count tm_send calls; CPU = getrusage around the loop
 *   new      --count tm_deliver calls: new connection + full handshake each
 *   resume   like new, but resumption is left to the library
 *   plain    like reused, without STARTTLS (for comparison)
 *   memory   context size, heap per session with and without TLS
 *   encode   tm__body_encode GB/s vs memcpy GB/s on a --mib MiB buffer
 *   crypto   the mbedTLS operations a full TLS 1.2 ECDHE-ECDSA handshake
 *            cannot avoid, timed alone (the CPU floor of mode "new")
 *   crypto-ops  every key exchange group, signature, certificate and record
 *            cipher one by one, to choose orders by (--ec-dir, --rsa-dir;
 *            --op NAME --iters N for callgrind)
 * --threads T runs reused/new/resume in T threads sharing one tm_context,
 * each with its own sessions, --count messages in total.  With --threads
 * (even --threads 1) every worker is a created thread; without it the loop
 * runs in the main thread.  glibc's malloc skips its locks while a process
 * has one thread, and a handshake makes ~24000 allocations: 1 and 2 threads
 * (case 7) compare like with like only if both run in created threads.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <mbedtls/version.h>
#include <mbedtls/cipher.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#include <psa/crypto.h>
#endif

#include "internal.h"
#include "tlsmail.h"

/* ---- allocation counters (-Wl,--wrap) ----------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static int counting;           /* --allocs: the wrappers cost ~10% of a handshake */
static unsigned long a_count;  /* allocations (malloc, calloc, realloc of NULL) */
static unsigned long a_bytes;  /* bytes requested by them */
static long a_live;            /* usable bytes currently allocated */
static long a_peak;            /* highest a_live since the last reset */

static void note_alloc(void *p, size_t req)
{
    long sz;

    if (!p || !counting)
        return;
    sz = (long)malloc_usable_size(p);
    __atomic_add_fetch(&a_count, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&a_bytes, req, __ATOMIC_RELAXED);
    {
        long live = __atomic_add_fetch(&a_live, sz, __ATOMIC_RELAXED);
        long peak = __atomic_load_n(&a_peak, __ATOMIC_RELAXED);
        while (live > peak &&
               !__atomic_compare_exchange_n(&a_peak, &peak, live, 1, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
            ;
    }
}

void *__wrap_malloc(size_t n)
{
    void *p = __real_malloc(n);
    note_alloc(p, n);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    void *p = __real_calloc(n, size);
    note_alloc(p, n * size);
    return p;
}

void __wrap_free(void *p)
{
    if (p && counting)
        __atomic_sub_fetch(&a_live, (long)malloc_usable_size(p), __ATOMIC_RELAXED);
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n)
{
    long old = p && counting ? (long)malloc_usable_size(p) : 0;
    void *q = __real_realloc(p, n);
    if (q && counting) {
        __atomic_sub_fetch(&a_live, old, __ATOMIC_RELAXED);
        note_alloc(q, n);
    }
    return q;
}

static void alloc_mark(unsigned long *count, unsigned long *bytes, long *live)
{
    *count = __atomic_load_n(&a_count, __ATOMIC_RELAXED);
    *bytes = __atomic_load_n(&a_bytes, __ATOMIC_RELAXED);
    *live = __atomic_load_n(&a_live, __ATOMIC_RELAXED);
}

static void peak_reset(void)
{
    __atomic_store_n(&a_peak, __atomic_load_n(&a_live, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

/* ---- mbedTLS hooks --------------------------------------------------------- */

struct mbedtls_ssl_context;
struct mbedtls_ssl_session;
struct mbedtls_x509_crt;
struct mbedtls_x509_crl;
struct mbedtls_x509_crt_profile;
struct mbedtls_x509_crt_restart_ctx;

int __real_mbedtls_x509_crt_verify_restartable(struct mbedtls_x509_crt *crt,
                                               struct mbedtls_x509_crt *trust_ca,
                                               struct mbedtls_x509_crl *ca_crl,
                                               const struct mbedtls_x509_crt_profile *profile,
                                               const char *cn, uint32_t *flags,
                                               int (*f_vrfy)(void *, struct mbedtls_x509_crt *,
                                                             int, uint32_t *),
                                               void *p_vrfy,
                                               struct mbedtls_x509_crt_restart_ctx *rs_ctx);
int __real_mbedtls_ssl_set_session(struct mbedtls_ssl_context *ssl,
                                   const struct mbedtls_ssl_session *session);

static unsigned long full_handshakes;
static unsigned long set_session_calls;
static int suppress_resumption;

int __wrap_mbedtls_x509_crt_verify_restartable(struct mbedtls_x509_crt *crt,
                                               struct mbedtls_x509_crt *trust_ca,
                                               struct mbedtls_x509_crl *ca_crl,
                                               const struct mbedtls_x509_crt_profile *profile,
                                               const char *cn, uint32_t *flags,
                                               int (*f_vrfy)(void *, struct mbedtls_x509_crt *,
                                                             int, uint32_t *),
                                               void *p_vrfy,
                                               struct mbedtls_x509_crt_restart_ctx *rs_ctx)
{
    __atomic_add_fetch(&full_handshakes, 1, __ATOMIC_RELAXED);
    return __real_mbedtls_x509_crt_verify_restartable(crt, trust_ca, ca_crl, profile, cn, flags,
                                                      f_vrfy, p_vrfy, rs_ctx);
}

int __wrap_mbedtls_ssl_set_session(struct mbedtls_ssl_context *ssl,
                                   const struct mbedtls_ssl_session *session)
{
    __atomic_add_fetch(&set_session_calls, 1, __ATOMIC_RELAXED);
    if (suppress_resumption)
        return 0; /* as if no session were cached: a full handshake follows */
    return __real_mbedtls_ssl_set_session(ssl, session);
}

/* ---- helpers ----------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + sys) of the process or thread, from the scheduler's
 * own clock (CLOCK_*_CPUTIME_ID: getrusage's user/sys split is sampled and
 * came out in 4 ms steps for a busy thread here); *sys gets getrusage's
 * system time alone, for the split. */
static double cpu_s2(int who, double *sys)
{
    struct rusage ru;
    struct timespec ts;

    getrusage(who, &ru);
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    clock_gettime(who == RUSAGE_THREAD ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
    size_t k;
    if (n == 0)
        return 0;
    k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

/*
 * The benchmark message, identical in the three clients: a small header,
 * then lines of 76 characters + CRLF cycling through [a-z0-9], cut to
 * exactly `size` bytes ending in CRLF.
 */
static unsigned char *make_message(size_t size, size_t *len)
{
    static const char hdr[] = "From: <bench@bench.tm.test>\r\nTo: <rcpt@bench.tm.test>\r\n"
                              "Subject: libtlsmail benchmark\r\n\r\n";
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    unsigned char *m = malloc(size + 80 + sizeof hdr);
    size_t o = sizeof hdr - 1, k = 0;

    if (!m)
        return NULL;
    memcpy(m, hdr, o);
    while (o < size) {
        int j;
        for (j = 0; j < 76; j++)
            m[o++] = (unsigned char)alpha[(k + (size_t)j) % 36];
        m[o++] = '\r';
        m[o++] = '\n';
        k++;
    }
    if (size >= sizeof hdr + 2) {
        o = size;
        m[o - 2] = '\r';
        m[o - 1] = '\n';
    }
    *len = o;
    return m;
}

/* Replaces characters that would need escaping in JSON (in place). */
static const char *json_safe(char *s)
{
    char *p;
    for (p = s; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '\'';
    return s;
}

/* ---- arguments ------------------------------------------------------------- */

typedef struct args {
    const char *host, *addr, *ca, *dns, *mode, *helo, *leaf;
    const char *ec_dir, *rsa_dir, *op; /* crypto-ops */
    unsigned int port;
    long count, size, threads, mib, reps, iters;
    int threads_given; /* --threads on the command line: workers are created threads */
    double max_seconds; /* the loop stops early after this long */
} args;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_tm --host NAME --port N --ca FILE --dns IP:PORT [--addr IP]\n"
            "                --count N --mode reused|new|resume|plain|memory|encode|crypto\n"
            "                [--size BYTES] [--threads T] [--mib M] [--reps R]\n"
            "       bench_tm --mode crypto-ops [--ec-dir DIR] [--rsa-dir DIR] [--reps R]\n"
            "                [--op NAME [--iters N]]\n");
    exit(64);
}

static void parse_args(args *a, int argc, char **argv)
{
    int i;

    memset(a, 0, sizeof *a);
    a->host = "mx-valid.tm.test";
    a->helo = "bench.tm.test";
    a->mode = "reused";
    a->count = 100;
    a->size = 10240;
    a->threads = 1;
    a->mib = 64;
    a->reps = 5;
    a->max_seconds = 30;
    for (i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--tls12"))
            continue; /* peers only: mbedTLS 2.28 speaks TLS 1.2 anyway */
        if (!strcmp(k, "--allocs")) {
            counting = 1; /* count allocations (costs CPU: not for CPU figures) */
            continue;
        }
        if (!v)
            usage();
        if (!strcmp(k, "--host"))
            a->host = v;
        else if (!strcmp(k, "--addr"))
            a->addr = v;
        else if (!strcmp(k, "--port"))
            a->port = (unsigned int)atoi(v);
        else if (!strcmp(k, "--ca"))
            a->ca = v;
        else if (!strcmp(k, "--dns"))
            a->dns = v;
        else if (!strcmp(k, "--mode"))
            a->mode = v;
        else if (!strcmp(k, "--count"))
            a->count = atol(v);
        else if (!strcmp(k, "--size"))
            a->size = atol(v);
        else if (!strcmp(k, "--threads")) {
            a->threads = atol(v);
            a->threads_given = 1;
        }
        else if (!strcmp(k, "--leaf"))
            a->leaf = v;
        else if (!strcmp(k, "--mib"))
            a->mib = atol(v);
        else if (!strcmp(k, "--reps"))
            a->reps = atol(v);
        else if (!strcmp(k, "--max-seconds"))
            a->max_seconds = atof(v);
        else if (!strcmp(k, "--ec-dir"))
            a->ec_dir = v;
        else if (!strcmp(k, "--rsa-dir"))
            a->rsa_dir = v;
        else if (!strcmp(k, "--op"))
            a->op = v;
        else if (!strcmp(k, "--iters"))
            a->iters = atol(v);
        else
            usage();
        i++;
    }
    if (a->count < 1 || a->size < 0 || a->threads < 1 || a->threads > 64 || a->mib < 1 ||
        a->reps < 1 || a->iters < 0 || (a->iters > 0 && !a->op))
        usage();
}

static tm_context *make_context(const args *a, const char *ca)
{
    tm_context_options o;
    tm_context *ctx = NULL;
    int rc;

    tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION);
    o.ca_file = ca;
    o.dns_server = a->dns;
    o.helo_name = a->helo;
    o.port = a->port;
    o.command_timeout_ms = 20000;
    o.connect_timeout_ms = 10000;
    rc = tm_context_new(&ctx, &o);
    if (rc != TM_OK) {
        fprintf(stderr, "bench_tm: tm_context_new: %s\n", tm_strerror(rc));
        exit(1);
    }
    return ctx;
}

/* ---- client modes -------------------------------------------------------- */

typedef struct worker {
    const args *a;
    tm_context *ctx;
    long count;
    const unsigned char *msg;
    size_t msglen;
    double *lat;       /* seconds per message */
    long ok;
    double cpu, sys;   /* thread CPU around the loop, and its sys part */
    double t0, t1;     /* wall clock of the loop */
    unsigned long allocs, alloc_bytes; /* counted around the loop */
    char tls_version[16], cipher[64], error[256];
    int tls, verified;
} worker;

static const char *const rcpt_list[] = {"rcpt@bench.tm.test"};

static void fill_message(tm_message *m, const worker *w)
{
    tm_message_init(m, TM_MESSAGE_VERSION);
    m->from = "bench@bench.tm.test";
    m->to = rcpt_list;
    m->to_count = 1;
    m->data = w->msg;
    m->size = w->msglen;
}

static void note_status(worker *w, const tm_delivery_status *st, int rc)
{
    w->tls = st->tls;
    w->verified = st->cert_verified;
    snprintf(w->tls_version, sizeof w->tls_version, "%s", st->tls_version);
    snprintf(w->cipher, sizeof w->cipher, "%s", st->tls_cipher);
    if (rc != TM_OK && w->error[0] == '\0')
        snprintf(w->error, sizeof w->error, "%s: %d %.180s", tm_strerror(rc), st->code,
                 st->message);
}

/* The measured loop: w->count messages over session s (tm_send), or, when s
 * is NULL, as many tm_deliver calls; CPU, wall time, latencies and
 * allocations of this thread around it. */
static void measure(worker *w, tm_session *s, const tm_message *m, const tm_session_options *so)
{
    const args *a = w->a;
    tm_delivery_status st;
    unsigned long c0, b0, c1, b1;
    long l0, l1, i;
    double sys;
    int rc;

    tm_status_init(&st, TM_STATUS_VERSION);
    alloc_mark(&c0, &b0, &l0);
    w->cpu = cpu_s2(RUSAGE_THREAD, &w->sys);
    w->t0 = now_s();
    for (i = 0; i < w->count; i++) {
        double t = now_s();
        rc = s ? tm_send(s, m, &st) : tm_deliver(w->ctx, m, NULL, so, &st);
        w->lat[i] = now_s() - t;
        note_status(w, &st, rc);
        if (rc != TM_OK)
            break;
        w->ok++;
        if (now_s() - w->t0 > a->max_seconds)
            break;
    }
    w->t1 = now_s();
    w->cpu = cpu_s2(RUSAGE_THREAD, &sys) - w->cpu;
    w->sys = sys - w->sys;
    alloc_mark(&c1, &b1, &l1);
    w->allocs = c1 - c0;
    w->alloc_bytes = b1 - b0;
}

static void *run_session(void *arg)
{
    worker *w = arg;
    const args *a = w->a;
    int tls = strcmp(a->mode, "plain") != 0;
    tm_session_options so;
    tm_session *s = NULL;
    tm_delivery_status st;
    tm_message m;
    int rc;

    tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION);
    so.host = a->host;
    so.port = a->port;
    fill_message(&m, w);
    tm_status_init(&st, TM_STATUS_VERSION);
    rc = tm_session_open(&s, w->ctx, "bench.tm.test", &so, &st);
    if (rc == TM_OK && tls)
        rc = tm_starttls(s, NULL, &st);
    if (rc != TM_OK) {
        note_status(w, &st, rc);
        tm_session_close(s);
        return NULL;
    }
    measure(w, s, &m, &so);
    tm_session_close(s);
    return NULL;
}

static void *run_deliver(void *arg)
{
    worker *w = arg;
    tm_session_options so;
    tm_message m;

    tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION);
    so.host = w->a->host;
    so.port = w->a->port;
    fill_message(&m, w);
    measure(w, NULL, &m, &so);
    return NULL;
}

static int client(const args *a)
{
    int deliver = !strcmp(a->mode, "new") || !strcmp(a->mode, "resume");
    size_t msglen;
    unsigned char *msg = make_message((size_t)a->size, &msglen);
    tm_context *ctx = make_context(a, a->ca);
    worker *w = calloc((size_t)a->threads, sizeof *w);
    pthread_t *th = calloc((size_t)a->threads, sizeof *th);
    double *lat = calloc((size_t)a->count, sizeof *lat);
    unsigned long fh0, ss0;
    long t, ok = 0, done = 0;
    double cpu = 0, sys = 0, t0 = 1e300, t1 = 0, allocs_per_msg = -1, bytes_per_msg = -1;
    char err[256] = "";

    if (!msg || !w || !th || !lat)
        return 1;
    suppress_resumption = !strcmp(a->mode, "new");
    for (t = 0; t < a->threads; t++) {
        w[t].a = a;
        w[t].ctx = ctx;
        w[t].count = a->count / a->threads + (t < a->count % a->threads);
        w[t].msg = msg;
        w[t].msglen = msglen;
        w[t].lat = lat + done;
        done += w[t].count;
    }
    fh0 = full_handshakes;
    ss0 = set_session_calls;
    if (a->threads == 1 && !a->threads_given) {
        (deliver ? run_deliver : run_session)(&w[0]);
    } else {
        for (t = 0; t < a->threads; t++)
            pthread_create(&th[t], NULL, deliver ? run_deliver : run_session, &w[t]);
        for (t = 0; t < a->threads; t++)
            pthread_join(th[t], NULL);
    }
    /* Latencies of the threads lie one after the other in lat[]: compact
     * them when a thread stopped early. */
    for (done = 0, t = 0; t < a->threads; t++) {
        memmove(lat + ok, w[t].lat, (size_t)w[t].ok * sizeof *lat);
        ok += w[t].ok;
        cpu += w[t].cpu;
        sys += w[t].sys;
        if (w[t].t0 > 0 && w[t].t0 < t0)
            t0 = w[t].t0;
        if (w[t].t1 > t1)
            t1 = w[t].t1;
        if (!err[0] && w[t].error[0])
            snprintf(err, sizeof err, "%s", w[t].error);
    }
    if (t1 < t0)
        t0 = t1 = 0;
    qsort(lat, (size_t)ok, sizeof *lat, cmp_double);
    /* The counters are process-wide: per message only with one thread. */
    if (counting && a->threads == 1 && ok > 0) {
        allocs_per_msg = (double)w[0].allocs / (double)ok;
        bytes_per_msg = (double)w[0].alloc_bytes / (double)ok;
    }
    printf("{\"client\": \"libtlsmail\", \"mode\": \"%s\", \"threads\": %ld, \"count\": %ld, "
           "\"ok\": %ld, \"size\": %zu, \"cpu_s\": %.6f, \"sys_s\": %.6f, \"cpu_per_msg_us\": %.2f, "
           "\"wall_s\": %.6f, \"msgs_per_s\": %.1f, "
           "\"lat_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"max\": %.3f}, "
           "\"allocs_per_msg\": %.2f, \"alloc_bytes_per_msg\": %.1f, "
           "\"full_handshakes\": %lu, \"set_session_calls\": %lu, "
           "\"tls\": %s, \"verified\": %s, \"tls_version\": \"%s\", \"cipher\": \"%s\", "
           "\"error\": \"%s\"}\n",
           a->mode, a->threads, a->count, ok, msglen, cpu, sys, ok ? cpu / (double)ok * 1e6 : 0.0,
           t1 - t0, t1 > t0 ? (double)ok / (t1 - t0) : 0.0, pct(lat, (size_t)ok, 50) * 1e3,
           pct(lat, (size_t)ok, 90) * 1e3, ok ? lat[ok - 1] * 1e3 : 0.0, allocs_per_msg,
           bytes_per_msg, full_handshakes - fh0, set_session_calls - ss0,
           w[0].tls ? "true" : "false", w[0].verified ? "true" : "false", w[0].tls_version,
           w[0].cipher, json_safe(err));
    tm_context_free(ctx);
    free(msg);
    free(w);
    free(th);
    free(lat);
    return ok > 0 && !err[0] ? 0 : 1;
}

/* ---- memory ------------------------------------------------------------------ */

/* Allocation count and live bytes of a context; peak while creating it. */
static void context_size(const args *a, const char *ca, unsigned long *count, long *live,
                         long *peak, double *ms)
{
    unsigned long c0, c1, b0, b1;
    long l0, l1;
    tm_context *ctx;
    double t;

    alloc_mark(&c0, &b0, &l0);
    peak_reset();
    t = now_s();
    ctx = make_context(a, ca);
    *ms = (now_s() - t) * 1e3;
    alloc_mark(&c1, &b1, &l1);
    *count = c1 - c0;
    *live = l1 - l0;
    *peak = a_peak - l0;
    tm_context_free(ctx);
}

typedef struct session_mem {
    unsigned long open_allocs;   /* allocations: open (+ STARTTLS) */
    long open_live;              /* heap held by the open session */
    long peak;                   /* highest heap over the baseline: open..send..close */
    unsigned long send_allocs;   /* allocations during the sends */
    long leak;                   /* live after close minus before open */
    int ok;
} session_mem;

static void session_memory(const args *a, tm_context *ctx, int tls, const unsigned char *msg,
                           size_t msglen, long sends, session_mem *r)
{
    unsigned long c0, c1, c2, b;
    long l0, l1, l2;
    tm_session_options so;
    tm_session *s = NULL;
    tm_delivery_status st;
    tm_message m;
    worker w;
    long i;
    int rc;

    memset(r, 0, sizeof *r);
    memset(&w, 0, sizeof w);
    w.msg = msg;
    w.msglen = msglen;
    fill_message(&m, &w);
    tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION);
    so.host = a->host;
    so.port = a->port;
    tm_status_init(&st, TM_STATUS_VERSION);
    alloc_mark(&c0, &b, &l0);
    peak_reset();
    rc = tm_session_open(&s, ctx, "bench.tm.test", &so, &st);
    if (rc == TM_OK && tls)
        rc = tm_starttls(s, NULL, &st);
    alloc_mark(&c1, &b, &l1);
    r->open_allocs = c1 - c0;
    r->open_live = l1 - l0;
    for (i = 0; rc == TM_OK && i < sends; i++)
        rc = tm_send(s, &m, &st);
    alloc_mark(&c2, &b, &l2);
    r->send_allocs = c2 - c1;
    tm_session_close(s);
    r->peak = a_peak - l0;
    alloc_mark(&c2, &b, &l2);
    r->leak = l2 - l0;
    r->ok = rc == TM_OK && (!tls || st.tls);
    if (rc != TM_OK)
        fprintf(stderr, "bench_tm: memory session: %s: %s\n", tm_strerror(rc), st.description);
}

static int memory(const args *a)
{
    unsigned long cc, sc;
    long clive, cpeak, slive, speak;
    double cms, sms;
    size_t msglen;
    unsigned char *msg = make_message((size_t)a->size, &msglen);
    session_mem tls, plain;
    tm_context *ctx;
    const char *sys = "/etc/ssl/certs/ca-certificates.crt";
    FILE *f = fopen(sys, "r");

    context_size(a, a->ca, &cc, &clive, &cpeak, &cms);
    if (f) {
        fclose(f);
        context_size(a, NULL, &sc, &slive, &speak, &sms);
    } else {
        sc = 0;
        slive = speak = 0;
        sms = 0;
    }
    ctx = make_context(a, a->ca);
    /* A first session warms whatever is lazily set up, then measure. */
    session_memory(a, ctx, 1, msg, msglen, 1, &tls);
    session_memory(a, ctx, 1, msg, msglen, 10, &tls);
    session_memory(a, ctx, 0, msg, msglen, 10, &plain);
    printf("{\"client\": \"libtlsmail\", \"mode\": \"memory\", "
           "\"ctx_test_ca\": {\"allocs\": %lu, \"live_bytes\": %ld, \"peak_bytes\": %ld, "
           "\"ms\": %.2f}, "
           "\"ctx_system_store\": {\"allocs\": %lu, \"live_bytes\": %ld, \"peak_bytes\": %ld, "
           "\"ms\": %.2f}, "
           "\"session_tls\": {\"open_allocs\": %lu, \"open_live_bytes\": %ld, \"peak_bytes\": %ld, "
           "\"allocs_in_10_sends\": %lu, \"leak_bytes\": %ld, \"ok\": %s}, "
           "\"session_plain\": {\"open_allocs\": %lu, \"open_live_bytes\": %ld, "
           "\"peak_bytes\": %ld, \"allocs_in_10_sends\": %lu, \"leak_bytes\": %ld, \"ok\": %s}}\n",
           cc, clive, cpeak, cms, sc, slive, speak, sms, tls.open_allocs, tls.open_live, tls.peak,
           tls.send_allocs, tls.leak, tls.ok ? "true" : "false", plain.open_allocs,
           plain.open_live, plain.peak, plain.send_allocs, plain.leak,
           plain.ok ? "true" : "false");
    tm_context_free(ctx);
    free(msg);
    return tls.ok && plain.ok ? 0 : 1;
}

/* ---- content path -------------------------------------------------------------- */

/* 76-character lines + CRLF (crlf) or LF, like a MIME-encoded body. */
static unsigned char *make_body(size_t size, int crlf)
{
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char *p = malloc(size);
    size_t o = 0, k = 0;

    if (!p)
        return NULL;
    while (o < size) {
        int j;
        for (j = 0; j < 76 && o < size; j++)
            p[o++] = (unsigned char)alpha[(k * 7 + (size_t)j * 13) % 64];
        if (crlf && o < size)
            p[o++] = '\r';
        if (o < size)
            p[o++] = '\n';
        k++;
    }
    return p;
}

static volatile unsigned char sink;

/* Encodes in[0..n) into a cap-byte buffer, as send_content does with the
 * session's 16 KiB write buffer.  Returns the bytes produced. */
static size_t encode_all(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    tm_body b;
    size_t total = 0;

    tm__body_init(&b);
    while (n > 0) {
        size_t used, made;
        if (tm__body_encode(&b, in, n, &used, out, cap, &made) != TM_OK)
            abort();
        in += used;
        n -= used;
        total += made;
        sink ^= out[0];
    }
    return total + tm__body_finish(&b, out);
}

static size_t copy_all(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t total = 0;

    while (n > 0) {
        size_t k = n < cap ? n : cap;
        memcpy(out, in, k);
        sink ^= out[0];
        in += k;
        n -= k;
        total += k;
    }
    return total;
}

static int encode(const args *a)
{
    size_t n = (size_t)a->mib << 20;
    const size_t chunk = 16384; /* the session's write buffer */
    unsigned char *crlf = make_body(n, 1), *lf = make_body(n, 0);
    unsigned char *small = malloc(chunk), *big = malloc(n + n / 38 + 64);
    double *t_enc = calloc((size_t)a->reps, sizeof(double));
    double *t_enc_lf = calloc((size_t)a->reps, sizeof(double));
    double *t_cpy = calloc((size_t)a->reps, sizeof(double));
    double *t_enc_big = calloc((size_t)a->reps, sizeof(double));
    double *t_cpy_big = calloc((size_t)a->reps, sizeof(double));
    size_t out_crlf = 0, out_lf = 0, out_big;
    long r;

    if (!crlf || !lf || !small || !big || !t_enc || !t_cpy || !t_enc_big || !t_cpy_big ||
        !t_enc_lf)
        return 1;
    memset(big, 1, n + n / 38 + 64); /* fault the pages in */
    /* Warm up both paths once. */
    encode_all(crlf, n, small, chunk);
    copy_all(crlf, n, small, chunk);
    for (r = 0; r < a->reps; r++) {
        double t = now_s();
        out_crlf = encode_all(crlf, n, small, chunk);
        t_enc[r] = now_s() - t;
        t = now_s();
        copy_all(crlf, n, small, chunk);
        t_cpy[r] = now_s() - t;
        t = now_s();
        out_lf = encode_all(lf, n, small, chunk);
        t_enc_lf[r] = now_s() - t;
        t = now_s();
        out_big = encode_all(crlf, n, big, n + n / 38 + 64);
        t_enc_big[r] = now_s() - t;
        /* In 16 KiB pieces or at once, the encoder must produce the same. */
        if (out_big != out_crlf) {
            fprintf(stderr, "bench_tm: encode: %zu bytes in pieces, %zu at once\n", out_crlf,
                    out_big);
            return 1;
        }
        t = now_s();
        copy_all(crlf, n, big, n);
        t_cpy_big[r] = now_s() - t;
    }
    qsort(t_enc, (size_t)a->reps, sizeof(double), cmp_double);
    qsort(t_enc_lf, (size_t)a->reps, sizeof(double), cmp_double);
    qsort(t_cpy, (size_t)a->reps, sizeof(double), cmp_double);
    qsort(t_enc_big, (size_t)a->reps, sizeof(double), cmp_double);
    qsort(t_cpy_big, (size_t)a->reps, sizeof(double), cmp_double);
    /* The fastest repetition of each: the one least disturbed by the rest
     * of the machine (both paths are deterministic). */
#define GBS(tv) ((double)n / (tv)[0] / 1e9)
    printf("{\"client\": \"libtlsmail\", \"mode\": \"encode\", \"bytes\": %zu, \"reps\": %ld, "
           "\"out_bytes_crlf\": %zu, \"out_bytes_lf\": %zu, "
           "\"encode_gbs\": %.3f, \"memcpy_gbs\": %.3f, \"encode_lf_gbs\": %.3f, "
           "\"encode_flat_gbs\": %.3f, \"memcpy_flat_gbs\": %.3f, "
           "\"avx512bw\": %s, \"avx2\": %s}\n",
           n, a->reps, out_crlf, out_lf, GBS(t_enc), GBS(t_cpy), GBS(t_enc_lf), GBS(t_enc_big),
           GBS(t_cpy_big), __builtin_cpu_supports("avx512bw") ? "true" : "false",
           __builtin_cpu_supports("avx2") ? "true" : "false");
#undef GBS
    free(crlf);
    free(lf);
    free(small);
    free(big);
    free(t_enc);
    free(t_enc_lf);
    free(t_cpy);
    free(t_enc_big);
    free(t_cpy_big);
    return 0;
}

/* ---- crypto floor ------------------------------------------------------------ */

/* Median over --reps rounds of 20 calls: thread CPU microseconds per call. */
typedef int (*crypto_fn)(void *arg);

static double crypto_time(crypto_fn fn, void *arg, long reps)
{
    double *t = calloc((size_t)reps, sizeof *t), med;
    long r;
    int i;

    if (!t)
        return -1.0;
    for (r = 0; r < reps; r++) {
        double sys, t0 = cpu_s2(RUSAGE_THREAD, &sys);
        for (i = 0; i < 20; i++)
            if (fn(arg) != 0) {
                free(t);
                return -1.0;
            }
        t[r] = (cpu_s2(RUSAGE_THREAD, &sys) - t0) / 20 * 1e6;
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    med = t[reps / 2];
    free(t);
    return med;
}

typedef struct crypto_ctx {
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ecp_group grp;
    mbedtls_ecp_group_id id;     /* the group of grp and peer */
    mbedtls_ecp_point peer;      /* the server's ephemeral public point */
    mbedtls_pk_context key;      /* a P-256 key, as in the server's certificate */
    unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sig_len;
    mbedtls_x509_crt ca, chain;  /* --ca and --leaf: the server's real chain */
    const char *name;
} crypto_ctx;

/* The client's half of ECDHE: a key pair, then the shared secret, in a
 * group loaded for the call as each handshake loads it: 2.28 has no static
 * tables for P-256 and caches the fixed-base precomputation in the group,
 * so a group reused across calls made P-256 look ~15% cheaper than what a
 * handshake pays (and cheaper than X25519, which it is not on 2.28). */
static int ecdhe_client(void *arg)
{
    crypto_ctx *c = arg;
    mbedtls_ecp_group grp;
    mbedtls_mpi d, z;
    mbedtls_ecp_point q;
    int rc;

    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_mpi_init(&z);
    mbedtls_ecp_point_init(&q);
    rc = mbedtls_ecp_group_load(&grp, c->id);
    if (rc == 0)
        rc = mbedtls_ecdh_gen_public(&grp, &d, &q, mbedtls_ctr_drbg_random, &c->drbg);
    if (rc == 0)
        rc = mbedtls_ecdh_compute_shared(&grp, &z, &c->peer, &d, mbedtls_ctr_drbg_random,
                                         &c->drbg);
    mbedtls_mpi_free(&d);
    mbedtls_mpi_free(&z);
    mbedtls_ecp_point_free(&q);
    mbedtls_ecp_group_free(&grp);
    return rc;
}

/* The ServerKeyExchange check: mbedtls_pk_verify with the server's key. */
static int ecdsa_verify(void *arg)
{
    crypto_ctx *c = arg;
    return mbedtls_pk_verify(&c->key, MBEDTLS_MD_SHA256, c->hash, sizeof c->hash, c->sig,
                             c->sig_len);
}

/* The certificate check: the chain against the CA and the name. */
static int chain_verify(void *arg)
{
    crypto_ctx *c = arg;
    uint32_t flags = 0;
    return mbedtls_x509_crt_verify(&c->chain, &c->ca, NULL, c->name, &flags, NULL, NULL);
}

static int crypto_group(crypto_ctx *c, mbedtls_ecp_group_id id)
{
    mbedtls_mpi d;
    int rc;

    mbedtls_ecp_group_free(&c->grp);
    mbedtls_ecp_point_free(&c->peer);
    mbedtls_ecp_group_init(&c->grp);
    mbedtls_ecp_point_init(&c->peer);
    mbedtls_mpi_init(&d);
    c->id = id;
    rc = mbedtls_ecp_group_load(&c->grp, id);
    if (rc == 0)
        rc = mbedtls_ecdh_gen_public(&c->grp, &d, &c->peer, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_mpi_free(&d);
    return rc;
}

/* What a full TLS 1.2 handshake with an ECDSA P-256 server costs in calls
 * to mbedTLS alone: ECDHE (the negotiated X25519, and P-256 for
 * comparison), mbedtls_pk_verify of the ServerKeyExchange and
 * mbedtls_x509_crt_verify of the server's chain (--leaf and --ca; without
 * them a second pk_verify stands in for it). */
static int crypto(const args *a)
{
    static const unsigned char pers[] = "bench_tm crypto";
    mbedtls_entropy_context ent;
    crypto_ctx c;
    double x25519 = -1, p256 = -1, verify = -1, chain = -1;
    int rc, failed;

    memset(&c, 0, sizeof c);
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&c.drbg);
    mbedtls_ecp_group_init(&c.grp);
    mbedtls_ecp_point_init(&c.peer);
    mbedtls_pk_init(&c.key);
    mbedtls_x509_crt_init(&c.ca);
    mbedtls_x509_crt_init(&c.chain);
    c.name = a->host;
    memset(c.hash, 0x5a, sizeof c.hash);
    rc = mbedtls_ctr_drbg_seed(&c.drbg, mbedtls_entropy_func, &ent, pers, sizeof pers - 1);
    if (rc == 0 && crypto_group(&c, MBEDTLS_ECP_DP_CURVE25519) == 0)
        x25519 = crypto_time(ecdhe_client, &c, a->reps);
    if (rc == 0 && crypto_group(&c, MBEDTLS_ECP_DP_SECP256R1) == 0)
        p256 = crypto_time(ecdhe_client, &c, a->reps);
    if (rc == 0)
        rc = mbedtls_pk_setup(&c.key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (rc == 0)
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(c.key),
                                 mbedtls_ctr_drbg_random, &c.drbg);
    if (rc == 0)
        rc = mbedtls_pk_sign(&c.key, MBEDTLS_MD_SHA256, c.hash, sizeof c.hash, c.sig,
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
                             sizeof c.sig, /* 3.x: the output's size */
#endif
                             &c.sig_len, mbedtls_ctr_drbg_random, &c.drbg);
    if (rc == 0)
        verify = crypto_time(ecdsa_verify, &c, a->reps);
    if (rc == 0 && a->leaf && a->ca && c.name &&
        mbedtls_x509_crt_parse_file(&c.ca, a->ca) == 0 &&
        mbedtls_x509_crt_parse_file(&c.chain, a->leaf) == 0)
        chain = crypto_time(chain_verify, &c, a->reps);
    else
        chain = verify;
    failed = x25519 < 0 || p256 < 0 || verify < 0 || chain < 0;
    printf("{\"client\": \"libtlsmail\", \"mode\": \"crypto\", \"backend\": \"%s\", "
           "\"ecdhe_x25519_us\": %.1f, \"ecdhe_p256_us\": %.1f, \"pk_verify_us\": %.1f, "
           "\"x509_verify_us\": %.1f, \"floor_us\": %.1f, \"error\": \"%s\"}\n",
           tm_tls_backend(), x25519, p256, verify, chain,
           /* The group lib/tls.c offers first: P-256 on 3.x, X25519 on 2.28. */
           (MBEDTLS_VERSION_NUMBER >= 0x03000000 ? p256 : x25519) + verify + chain,
           failed ? "an mbedTLS call failed (or the chain did not verify)" : "");
    mbedtls_x509_crt_free(&c.chain);
    mbedtls_x509_crt_free(&c.ca);
    mbedtls_pk_free(&c.key);
    mbedtls_ecp_point_free(&c.peer);
    mbedtls_ecp_group_free(&c.grp);
    mbedtls_ctr_drbg_free(&c.drbg);
    mbedtls_entropy_free(&ent);
    return failed;
}

/* ---- crypto operations one by one (mode crypto-ops) -------------------------- */

/*
 * Each mbedTLS operation a TLS client pays for, alone, on the linked
 * version: the client's ECDHE per group (the TLS 1.2 path, mbedtls_ecdh_*
 * with the server's ServerECDHParams; on 3.x also the TLS 1.3 path, PSA
 * generate + export + raw agreement + destroy), signature verification
 * (ECDSA P-256, RSA-2048 PKCS#1 v1.5 and PSS; SHA-256), certificate parse
 * and chain verification (leaf + CA, EC and RSA: --ec-dir / --rsa-dir, each
 * a tests/peers/certs.py directory with ca.pem, valid.pem, valid.key), and
 * AEAD encryption of 16 KiB records (mbedtls_cipher_auth_encrypt_ext, what
 * the record layer calls without MBEDTLS_USE_PSA_CRYPTO; on 3.x also
 * psa_aead_encrypt).  Timing: thread CPU, median of --reps x 20 calls.
 * With --op NAME --iters N the one operation runs N times inside
 * crypto_op_loop() and nothing is timed: for
 *   valgrind --tool=callgrind --toggle-collect=crypto_op_loop bench_tm ...
 * whose total Ir / N is the instruction count of one call.
 */
#define OPS_RECORD 16384

typedef struct ecdh_op {
    mbedtls_ecp_group_id id;
    mbedtls_ctr_drbg_context *drbg;
    unsigned char params[160]; /* the server's ServerECDHParams */
    size_t params_len;
} ecdh_op;

/* What a TLS 1.2 client does with the ServerKeyExchange's ECDHE part:
 * read the params (group, point), make its key pair, compute the secret. */
static int op_ecdh_legacy(void *arg)
{
    ecdh_op *e = arg;
    mbedtls_ecdh_context ctx;
    const unsigned char *p = e->params;
    unsigned char pub[160], z[80];
    size_t olen;
    int rc;

    mbedtls_ecdh_init(&ctx);
    rc = mbedtls_ecdh_read_params(&ctx, &p, e->params + e->params_len);
    if (rc == 0)
        rc = mbedtls_ecdh_make_public(&ctx, &olen, pub, sizeof pub, mbedtls_ctr_drbg_random,
                                      e->drbg);
    if (rc == 0)
        rc = mbedtls_ecdh_calc_secret(&ctx, &olen, z, sizeof z, mbedtls_ctr_drbg_random, e->drbg);
    mbedtls_ecdh_free(&ctx);
    return rc;
}

static int ecdh_op_setup(ecdh_op *e, mbedtls_ecp_group_id id, mbedtls_ctr_drbg_context *drbg)
{
    mbedtls_ecdh_context srv;
    int rc;

    e->id = id;
    e->drbg = drbg;
    mbedtls_ecdh_init(&srv);
    rc = mbedtls_ecdh_setup(&srv, id);
    if (rc == 0)
        rc = mbedtls_ecdh_make_params(&srv, &e->params_len, e->params, sizeof e->params,
                                      mbedtls_ctr_drbg_random, drbg);
    mbedtls_ecdh_free(&srv);
    return rc;
}

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
typedef struct psa_ecdh_op {
    psa_key_type_t type;
    size_t bits;
    unsigned char peer[PSA_EXPORT_PUBLIC_KEY_MAX_SIZE];
    size_t peer_len;
} psa_ecdh_op;

static psa_status_t psa_ecdh_key(const psa_ecdh_op *e, psa_key_id_t *key)
{
    psa_key_attributes_t at = PSA_KEY_ATTRIBUTES_INIT;

    psa_set_key_usage_flags(&at, PSA_KEY_USAGE_DERIVE);
    psa_set_key_algorithm(&at, PSA_ALG_ECDH);
    psa_set_key_type(&at, e->type);
    psa_set_key_bits(&at, e->bits);
    return psa_generate_key(&at, key);
}

/* What a TLS 1.3 client does (ssl_tls13_generic.c, ssl_tls13_keys.c):
 * psa_generate_key + psa_export_public_key for the key share, then
 * psa_raw_key_agreement with the server's share and psa_destroy_key. */
static int op_ecdh_psa(void *arg)
{
    psa_ecdh_op *e = arg;
    psa_key_id_t key;
    unsigned char pub[PSA_EXPORT_PUBLIC_KEY_MAX_SIZE], z[PSA_RAW_KEY_AGREEMENT_OUTPUT_MAX_SIZE];
    size_t olen;
    psa_status_t st = psa_ecdh_key(e, &key);

    if (st != PSA_SUCCESS)
        return -1;
    st = psa_export_public_key(key, pub, sizeof pub, &olen);
    if (st == PSA_SUCCESS)
        st = psa_raw_key_agreement(PSA_ALG_ECDH, key, e->peer, e->peer_len, z, sizeof z, &olen);
    psa_destroy_key(key);
    return st == PSA_SUCCESS ? 0 : -1;
}

static int psa_ecdh_setup(psa_ecdh_op *e, psa_key_type_t type, size_t bits)
{
    psa_key_id_t key;
    psa_status_t st;

    e->type = type;
    e->bits = bits;
    st = psa_ecdh_key(e, &key);
    if (st != PSA_SUCCESS)
        return -1;
    st = psa_export_public_key(key, e->peer, sizeof e->peer, &e->peer_len);
    psa_destroy_key(key);
    return st == PSA_SUCCESS ? 0 : -1;
}

typedef struct psa_aead_op {
    psa_key_id_t key;
    psa_algorithm_t alg;
    unsigned char *in, *out;
    unsigned char nonce[12], ad[13];
} psa_aead_op;

static int op_aead_psa(void *arg)
{
    psa_aead_op *a = arg;
    size_t olen;

    return psa_aead_encrypt(a->key, a->alg, a->nonce, sizeof a->nonce, a->ad, sizeof a->ad, a->in,
                            OPS_RECORD, a->out, OPS_RECORD + 16, &olen) == PSA_SUCCESS
               ? 0
               : -1;
}

static void psa_aead_free(psa_aead_op *a)
{
    psa_destroy_key(a->key);
    free(a->in);
    free(a->out);
}

static int psa_aead_setup(psa_aead_op *a, psa_key_type_t type, size_t bits, psa_algorithm_t alg)
{
    psa_key_attributes_t at = PSA_KEY_ATTRIBUTES_INIT;
    unsigned char key[32];

    memset(key, 0x3c, sizeof key);
    memset(a->nonce, 0x11, sizeof a->nonce);
    memset(a->ad, 0x17, sizeof a->ad);
    a->alg = alg;
    a->in = calloc(1, OPS_RECORD);
    a->out = calloc(1, OPS_RECORD + 16);
    if (!a->in || !a->out)
        return -1;
    psa_set_key_usage_flags(&at, PSA_KEY_USAGE_ENCRYPT);
    psa_set_key_algorithm(&at, alg);
    psa_set_key_type(&at, type);
    psa_set_key_bits(&at, bits);
    return psa_import_key(&at, key, bits / 8, &a->key) == PSA_SUCCESS ? 0 : -1;
}
#endif

typedef struct sig_op {
    mbedtls_pk_context pk;
    int pss;
    unsigned char hash[32];
    unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sig_len;
} sig_op;

/* The CertificateVerify / ServerKeyExchange check (and the check of a
 * certificate's signature): mbedtls_pk_verify, or _ext for PSS with the
 * options TLS 1.3 passes (MGF1 = the hash, salt = the hash's length). */
static int op_verify(void *arg)
{
    sig_op *s = arg;

    if (s->pss) {
        const mbedtls_pk_rsassa_pss_options o = { MBEDTLS_MD_SHA256, 32 };
        return mbedtls_pk_verify_ext(MBEDTLS_PK_RSASSA_PSS, &o, &s->pk, MBEDTLS_MD_SHA256, s->hash,
                                     sizeof s->hash, s->sig, s->sig_len);
    }
    return mbedtls_pk_verify(&s->pk, MBEDTLS_MD_SHA256, s->hash, sizeof s->hash, s->sig,
                             s->sig_len);
}

/* A key from key_file, else (EC only) a fresh P-256 key; then a signature
 * over a fixed hash to verify. */
static int sig_setup(sig_op *s, const char *key_file, int rsa, int pss,
                     mbedtls_ctr_drbg_context *drbg)
{
    int rc;

    mbedtls_pk_init(&s->pk);
    s->pss = pss;
    memset(s->hash, 0x5a, sizeof s->hash);
    if (key_file)
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        rc = mbedtls_pk_parse_keyfile(&s->pk, key_file, NULL, mbedtls_ctr_drbg_random, drbg);
#else
        rc = mbedtls_pk_parse_keyfile(&s->pk, key_file, NULL);
#endif
    else if (rsa)
        return -1; /* no RSA key generation here: it takes seconds */
    else {
        rc = mbedtls_pk_setup(&s->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
        if (rc == 0)
            rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(s->pk),
                                     mbedtls_ctr_drbg_random, drbg);
    }
    if (rc != 0)
        return rc;
    if (mbedtls_pk_get_type(&s->pk) != (rsa ? MBEDTLS_PK_RSA : MBEDTLS_PK_ECKEY))
        return -1;
    if (pss) {
        mbedtls_rsa_context *r = mbedtls_pk_rsa(s->pk);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        rc = mbedtls_rsa_set_padding(r, MBEDTLS_RSA_PKCS_V21, MBEDTLS_MD_SHA256);
        if (rc == 0)
            rc = mbedtls_rsa_rsassa_pss_sign(r, mbedtls_ctr_drbg_random, drbg, MBEDTLS_MD_SHA256,
                                             32, s->hash, s->sig);
#else
        mbedtls_rsa_set_padding(r, MBEDTLS_RSA_PKCS_V21, MBEDTLS_MD_SHA256);
        rc = mbedtls_rsa_rsassa_pss_sign(r, mbedtls_ctr_drbg_random, drbg, MBEDTLS_RSA_PRIVATE,
                                         MBEDTLS_MD_SHA256, 32, s->hash, s->sig);
#endif
        s->sig_len = mbedtls_pk_get_len(&s->pk);
        return rc;
    }
    return mbedtls_pk_sign(&s->pk, MBEDTLS_MD_SHA256, s->hash, sizeof s->hash, s->sig,
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
                           sizeof s->sig,
#endif
                           &s->sig_len, mbedtls_ctr_drbg_random, drbg);
}

typedef struct chain_op {
    mbedtls_x509_crt ca, leaf;
    const char *name;
} chain_op;

static int op_chain(void *arg)
{
    chain_op *c = arg;
    uint32_t flags = 0;
    int rc = mbedtls_x509_crt_verify(&c->leaf, &c->ca, NULL, c->name, &flags, NULL, NULL);
    return rc == 0 && flags == 0 ? 0 : -1;
}

/* What the client does with the server's Certificate message: parse the
 * leaf's DER (copied, as mbedTLS does) and free it. */
static int op_parse(void *arg)
{
    chain_op *c = arg;
    mbedtls_x509_crt crt;
    int rc;

    mbedtls_x509_crt_init(&crt);
    rc = mbedtls_x509_crt_parse_der(&crt, c->leaf.raw.p, c->leaf.raw.len);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

static int chain_setup(chain_op *c, const char *dir, const char *name)
{
    char path[4096];

    mbedtls_x509_crt_init(&c->ca);
    mbedtls_x509_crt_init(&c->leaf);
    c->name = name;
    if (!dir)
        return -1;
    snprintf(path, sizeof path, "%s/ca.pem", dir);
    if (mbedtls_x509_crt_parse_file(&c->ca, path) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/valid.pem", dir);
    if (mbedtls_x509_crt_parse_file(&c->leaf, path) != 0)
        return -1;
    return op_chain(c);
}

typedef struct aead_op {
    mbedtls_cipher_context_t ctx;
    unsigned char *buf; /* OPS_RECORD + the tag, encrypted in place as the record layer does */
    unsigned char iv[12], ad[13];
} aead_op;

static int op_aead(void *arg)
{
    aead_op *a = arg;
    size_t olen;

    return mbedtls_cipher_auth_encrypt_ext(&a->ctx, a->iv, sizeof a->iv, a->ad, sizeof a->ad,
                                           a->buf, OPS_RECORD, a->buf, OPS_RECORD + 16, &olen, 16);
}

static int aead_setup(aead_op *a, mbedtls_cipher_type_t type, int bits)
{
    unsigned char key[32];
    int rc;

    memset(key, 0x3c, sizeof key);
    memset(a->iv, 0x11, sizeof a->iv);
    memset(a->ad, 0x17, sizeof a->ad);
    mbedtls_cipher_init(&a->ctx);
    a->buf = calloc(1, OPS_RECORD + 16);
    if (!a->buf)
        return -1;
    rc = mbedtls_cipher_setup(&a->ctx, mbedtls_cipher_info_from_type(type));
    if (rc == 0)
        rc = mbedtls_cipher_setkey(&a->ctx, key, bits, MBEDTLS_ENCRYPT);
    return rc;
}

typedef struct crypto_op {
    const char *name;
    int (*fn)(void *);
    void *arg;
    int bytes; /* a record op: MB/s too */
    int ready; /* set up without error */
} crypto_op;

/* The measured loop for callgrind (--toggle-collect=crypto_op_loop). */
__attribute__((noinline)) int crypto_op_loop(const crypto_op *op, long n);
__attribute__((noinline)) int crypto_op_loop(const crypto_op *op, long n)
{
    long i;

    for (i = 0; i < n; i++)
        if (op->fn(op->arg) != 0)
            return -1;
    return 0;
}

/* Times the operations (--op: that one only); 1 if one failed that was set
 * up, or that needs no --ec-dir / --rsa-dir (those rows are null without). */
static int crypto_ops_time(const args *a, const crypto_op *ops, size_t n)
{
    size_t i;
    int failed = 0, first = 1;

    printf("{\"client\": \"libtlsmail\", \"mode\": \"crypto-ops\", \"backend\": \"%s\", "
           "\"reps\": %ld, \"us_per_call\": {",
           tm_tls_backend(), a->reps);
    for (i = 0; i < n; i++) {
        double us;
        if (a->op && strcmp(ops[i].name, a->op))
            continue;
        us = ops[i].ready ? crypto_time(ops[i].fn, ops[i].arg, a->reps) : -1.0;
        if (us < 0 && (ops[i].ready || (strncmp(ops[i].name, "x509", 4) &&
                                        !strstr(ops[i].name, "rsa"))))
            failed = 1;
        if (us < 0)
            printf("%s\"%s\": null", first ? "" : ", ", ops[i].name);
        else if (ops[i].bytes)
            printf("%s\"%s\": %.2f, \"%s_mbs\": %.1f", first ? "" : ", ", ops[i].name, us,
                   ops[i].name, (double)OPS_RECORD / us);
        else
            printf("%s\"%s\": %.2f", first ? "" : ", ", ops[i].name, us);
        first = 0;
    }
    printf("}, \"error\": \"%s\"}\n", failed ? "an mbedTLS call failed" : "");
    return failed;
}

static int crypto_ops(const args *a)
{
    static const unsigned char pers[] = "bench_tm crypto-ops";
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    ecdh_op e_x25519, e_p256, e_p384;
    sig_op sg[3];   /* ECDSA P-256, RSA PKCS#1 v1.5, RSA PSS */
    chain_op ch[2]; /* EC, RSA */
    aead_op ae[3];  /* AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 */
    char ec_key[4096], rsa_key[4096];
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    psa_ecdh_op p_x25519, p_p256, p_p384;
    psa_aead_op pa[3];
#endif
    crypto_op ops[24];
    size_t n = 0, i;
    int failed = 0, found = 0;

    memset(ae, 0, sizeof ae);
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    memset(pa, 0, sizeof pa);
    if (psa_crypto_init() != PSA_SUCCESS)
        return 1;
#endif
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, pers, sizeof pers - 1) != 0)
        return 1;
    snprintf(ec_key, sizeof ec_key, "%s/valid.key", a->ec_dir ? a->ec_dir : "");
    snprintf(rsa_key, sizeof rsa_key, "%s/valid.key", a->rsa_dir ? a->rsa_dir : "");
#define OP(nm, f, ar, by, setup) \
    do { \
        ops[n].name = nm; \
        ops[n].fn = f; \
        ops[n].arg = ar; \
        ops[n].bytes = by; \
        ops[n].ready = (setup) == 0; \
        n++; \
    } while (0)
    OP("ecdhe_x25519", op_ecdh_legacy, &e_x25519, 0,
       ecdh_op_setup(&e_x25519, MBEDTLS_ECP_DP_CURVE25519, &drbg));
    OP("ecdhe_p256", op_ecdh_legacy, &e_p256, 0,
       ecdh_op_setup(&e_p256, MBEDTLS_ECP_DP_SECP256R1, &drbg));
    OP("ecdhe_p384", op_ecdh_legacy, &e_p384, 0,
       ecdh_op_setup(&e_p384, MBEDTLS_ECP_DP_SECP384R1, &drbg));
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    OP("psa_ecdhe_x25519", op_ecdh_psa, &p_x25519, 0,
       psa_ecdh_setup(&p_x25519, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_MONTGOMERY), 255));
    OP("psa_ecdhe_p256", op_ecdh_psa, &p_p256, 0,
       psa_ecdh_setup(&p_p256, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1), 256));
    OP("psa_ecdhe_p384", op_ecdh_psa, &p_p384, 0,
       psa_ecdh_setup(&p_p384, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1), 384));
#endif
    OP("verify_ecdsa_p256", op_verify, &sg[0], 0,
       sig_setup(&sg[0], a->ec_dir ? ec_key : NULL, 0, 0, &drbg));
    OP("verify_rsa2048_pkcs1", op_verify, &sg[1], 0,
       sig_setup(&sg[1], a->rsa_dir ? rsa_key : NULL, 1, 0, &drbg));
    OP("verify_rsa2048_pss", op_verify, &sg[2], 0,
       sig_setup(&sg[2], a->rsa_dir ? rsa_key : NULL, 1, 1, &drbg));
    OP("x509_parse_ec", op_parse, &ch[0], 0, chain_setup(&ch[0], a->ec_dir, a->host));
    OP("x509_chain_ec", op_chain, &ch[0], 0, ch[0].leaf.raw.p ? 0 : -1);
    OP("x509_parse_rsa", op_parse, &ch[1], 0, chain_setup(&ch[1], a->rsa_dir, a->host));
    OP("x509_chain_rsa", op_chain, &ch[1], 0, ch[1].leaf.raw.p ? 0 : -1);
    OP("aead_aes128gcm_16k", op_aead, &ae[0], 1, aead_setup(&ae[0], MBEDTLS_CIPHER_AES_128_GCM, 128));
    OP("aead_aes256gcm_16k", op_aead, &ae[1], 1, aead_setup(&ae[1], MBEDTLS_CIPHER_AES_256_GCM, 256));
    OP("aead_chachapoly_16k", op_aead, &ae[2], 1,
       aead_setup(&ae[2], MBEDTLS_CIPHER_CHACHA20_POLY1305, 256));
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    OP("psa_aead_aes128gcm_16k", op_aead_psa, &pa[0], 1,
       psa_aead_setup(&pa[0], PSA_KEY_TYPE_AES, 128, PSA_ALG_GCM));
    OP("psa_aead_aes256gcm_16k", op_aead_psa, &pa[1], 1,
       psa_aead_setup(&pa[1], PSA_KEY_TYPE_AES, 256, PSA_ALG_GCM));
    OP("psa_aead_chachapoly_16k", op_aead_psa, &pa[2], 1,
       psa_aead_setup(&pa[2], PSA_KEY_TYPE_CHACHA20, 256, PSA_ALG_CHACHA20_POLY1305));
#endif
#undef OP
    if (a->iters > 0) {
        /* One operation, untimed, for callgrind. */
        for (i = 0; i < n; i++)
            if (a->op && !strcmp(ops[i].name, a->op)) {
                found = 1;
                failed = !ops[i].ready || crypto_op_loop(&ops[i], a->iters) != 0;
            }
        printf("{\"client\": \"libtlsmail\", \"mode\": \"crypto-ops\", \"backend\": \"%s\", "
               "\"op\": \"%s\", \"iters\": %ld, \"ok\": %s}\n",
               tm_tls_backend(), a->op ? a->op : "", a->iters, found && !failed ? "true" : "false");
        failed = !found || failed;
    } else {
        failed = crypto_ops_time(a, ops, n);
    }
    for (i = 0; i < 3; i++) {
        mbedtls_cipher_free(&ae[i].ctx);
        free(ae[i].buf);
        mbedtls_pk_free(&sg[i].pk);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        psa_aead_free(&pa[i]);
#endif
    }
    for (i = 0; i < 2; i++) {
        mbedtls_x509_crt_free(&ch[i].ca);
        mbedtls_x509_crt_free(&ch[i].leaf);
    }
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_psa_crypto_free();
#endif
    return failed;
}

int main(int argc, char **argv)
{
    args a;

    parse_args(&a, argc, argv);
    if (!strcmp(a.mode, "encode"))
        return encode(&a);
    if (!strcmp(a.mode, "crypto"))
        return crypto(&a);
    if (!strcmp(a.mode, "crypto-ops"))
        return crypto_ops(&a);
    if (!a.ca || !a.dns || !a.port)
        usage();
    if (!strcmp(a.mode, "memory")) {
        counting = 1;
        return memory(&a);
    }
    if (strcmp(a.mode, "reused") && strcmp(a.mode, "new") && strcmp(a.mode, "resume") &&
        strcmp(a.mode, "plain"))
        usage();
    return client(&a);
}
