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
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

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
    unsigned int port;
    long count, size, threads, mib, reps;
    int threads_given; /* --threads on the command line: workers are created threads */
    double max_seconds; /* the loop stops early after this long */
} args;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_tm --host NAME --port N --ca FILE --dns IP:PORT [--addr IP]\n"
            "                --count N --mode reused|new|resume|plain|memory|encode|crypto\n"
            "                [--size BYTES] [--threads T] [--mib M] [--reps R]\n");
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
        else
            usage();
        i++;
    }
    if (a->count < 1 || a->size < 0 || a->threads < 1 || a->threads > 64 || a->mib < 1 ||
        a->reps < 1)
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
    mbedtls_ecp_point peer;      /* the server's ephemeral public point */
    mbedtls_pk_context key;      /* a P-256 key, as in the server's certificate */
    unsigned char hash[32], sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sig_len;
    mbedtls_x509_crt ca, chain;  /* --ca and --leaf: the server's real chain */
    const char *name;
} crypto_ctx;

/* The client's half of ECDHE: a key pair, then the shared secret. */
static int ecdhe_client(void *arg)
{
    crypto_ctx *c = arg;
    mbedtls_mpi d, z;
    mbedtls_ecp_point q;
    int rc;

    mbedtls_mpi_init(&d);
    mbedtls_mpi_init(&z);
    mbedtls_ecp_point_init(&q);
    rc = mbedtls_ecdh_gen_public(&c->grp, &d, &q, mbedtls_ctr_drbg_random, &c->drbg);
    if (rc == 0)
        rc = mbedtls_ecdh_compute_shared(&c->grp, &z, &c->peer, &d, mbedtls_ctr_drbg_random,
                                         &c->drbg);
    mbedtls_mpi_free(&d);
    mbedtls_mpi_free(&z);
    mbedtls_ecp_point_free(&q);
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
           tm_tls_backend(), x25519, p256, verify, chain, x25519 + verify + chain,
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

int main(int argc, char **argv)
{
    args a;

    parse_args(&a, argc, argv);
    if (!strcmp(a.mode, "encode"))
        return encode(&a);
    if (!strcmp(a.mode, "crypto"))
        return crypto(&a);
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
