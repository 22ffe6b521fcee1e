/*
 * tls.c - the TLS transport, wrapped around an inner transport through
 * mbedtls_ssl_set_bio; the only file that includes mbedTLS.
 *
 * Builds against mbedTLS 2.28 (Debian 12: TLS 1.2 only) and 3.x (TLS 1.3
 * when the library has it, PSA initialisation).  Every version difference
 * lives here.  The BIO blocks in the inner transport until the deadline of
 * the call under way, so mbedTLS asks for bytes only when it needs them:
 * no wait happens while a record is already buffered.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/version.h>
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#include <mbedtls/build_info.h>
#include <psa/crypto.h>
#define TM_MBEDTLS3 1
#else
#if !defined(MBEDTLS_CONFIG_FILE)
#include <mbedtls/config.h>
#else
#include MBEDTLS_CONFIG_FILE
#endif
#endif
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/sha256.h>
#include <mbedtls/sha512.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "internal.h"

/*
 * Resumable sessions, keyed by host, address, port and policy (the caller's
 * key), so that a session made for one name or policy is never offered for
 * another.  Each entry keeps beside the session what the full handshake
 * that made it found (its verification flags: TLS 1.3 PSK resumption
 * reports 0, and serialised sessions do not always keep them) and the
 * generation of the trust store that judged it, so a reloaded store never
 * resumes a session the old one verified.  A small table, the oldest
 * evicted first.  An entry's age counts from the full handshake: sessions
 * resumed (and TLS 1.3 tickets received on them) keep that age, so no
 * verification is trusted for longer than TM_TLS_CACHE_TTL_MS.
 */
#define TM_TLS_CACHE_SIZE 64
#define TM_TLS_CACHE_TTL_MS (30 * 60 * 1000)
#define TM_TLS_KEY_MAX 384
#define TM_TLS_PATH_MAX 8

typedef struct tm_tls_cached {
    char key[TM_TLS_KEY_MAX];
    unsigned long gen;   /* trust store generation */
    uint32_t flags;      /* verification result of the full handshake */
    int64_t verified_at; /* when that full handshake was: the entry's age */
    unsigned char *data; /* mbedtls_ssl_session_save() output */
    size_t len;
} tm_tls_cached;

/* A trust store and the TLS configuration that points at it.  Replaced
 * whole by a reload; each tm_tls holds a reference to the one its
 * mbedtls_ssl_context was set up with. */
typedef struct tm_tls_trust {
    unsigned int refs; /* under tm_tls_config.lock */
    unsigned long gen;
    mbedtls_x509_crt ca;
    mbedtls_ssl_config conf;
} tm_tls_trust;

struct tm_tls_config {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg; /* locked internally (MBEDTLS_THREADING_C) */
    char *ca_file, *ca_path;       /* where the store comes from (NULL: system) */
    pthread_mutex_t lock;          /* trust, refs, gen, cache */
    int lock_ready;
    tm_tls_trust *trust;
    unsigned long gen;
    tm_tls_cached cache[TM_TLS_CACHE_SIZE];
};

struct tm_tls {
    tm_transport base;
    struct tm_tls_config *cfg;
    tm_tls_trust *trust; /* the store ssl was set up with (a reference) */
    mbedtls_ssl_context ssl;
    tm_transport *inner; /* NULL when no connection */
    int64_t deadline;    /* of the call under way */
    int io_err;          /* what the inner transport said when the BIO gave up */
    int ready;           /* mbedtls_ssl_setup done: buffers allocated once */
    int used;            /* a connection used it since the last reset */
    uint32_t flags;      /* verification result of the last handshake */
    int offered;         /* a cached session was offered */
    uint32_t offered_flags; /* ... and what its full handshake found */
    int64_t offered_at;  /* ... and when */
    int verified_now;    /* the chain was verified in this handshake */
    int resumed;         /* the handshake resumed the offered session */
    int ticket;          /* a TLS 1.3 ticket arrived on this connection */
    int close_notify;    /* the peer closed with close_notify (not a bare TCP close) */
    int keep;            /* the policy kept this connection: cache it */
    int dropped;         /* the session was dropped: never save it again */
    char key[TM_TLS_KEY_MAX]; /* cache key of this connection, "" = none */
    /* DANE for the next handshake (tm__tls_set_dane): the host's usable
     * TLSA records and the names a DANE-TA chain may match. */
    const tm_tlsa *dane;
    int ndane;
    const char *const *dane_names;
    int ndane_names;
    int dane_match;      /* the record that authenticated the server, -1 */
    /* What mbedTLS's own verification found above the leaf in this
     * handshake: the path's certificates and their flags (DANE-TA reuses
     * a clean path instead of verifying the chain again). */
    uint32_t path_flags;
    const mbedtls_x509_crt *path[TM_TLS_PATH_MAX];
};

#if defined(MBEDTLS_THREADING_C) == 0
#warning "mbedTLS without MBEDTLS_THREADING_C: share a tm_context between threads at your own risk"
#endif

#if defined(TM_MBEDTLS3) && MBEDTLS_VERSION_NUMBER < 0x03060100
#error "mbedTLS 3.0 to 3.6.0 are not supported (3.6.0 ignores VERIFY_OPTIONAL on TLS 1.3): use 2.28 or 3.6.1 and later"
#endif

const char *tm__tls_backend_name(void)
{
    return "mbed TLS " MBEDTLS_VERSION_STRING;
}

static void describe(int ret, char *err, size_t errlen)
{
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    snprintf(err, errlen, "%s (-0x%04x)", buf, (unsigned int)-ret);
}

/*
 * Key exchange groups, cheapest first as measured on each mbedTLS (one
 * client ECDHE, key pair and shared secret, bench --mode crypto-ops under
 * callgrind; docs/performance.md).  3.6: secp256r1 11.2 M instructions,
 * X25519 15.6 M, secp384r1 20.2 M (3.x has precomputed P-256 tables).
 * 2.28: X25519 15.7 M, secp256r1 16.6 M (its tables are rebuilt per
 * handshake), secp384r1 28.7 M.  The server takes the first it supports,
 * in the share we sent: no HelloRetryRequest.
 */
#if defined(TM_MBEDTLS3)
static const uint16_t groups[] = {
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1,
    MBEDTLS_SSL_IANA_TLS_GROUP_NONE,
};
#else
static const mbedtls_ecp_group_id curves[] = {
#if defined(MBEDTLS_ECP_DP_CURVE25519_ENABLED)
    MBEDTLS_ECP_DP_CURVE25519,
#endif
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};
#endif

#if defined(TM_MBEDTLS3) && defined(MBEDTLS_SSL_PROTO_TLS1_3)
/*
 * Signature algorithms, cheapest verification first: an RSA signature
 * (e = 65537) verifies far faster in mbedTLS than an ECDSA one, so a
 * server with both certificates shows the RSA one.  TLS 1.2 picks the
 * certificate by the cipher suite instead (see suite_rank).
 */
static const uint16_t sig_algs[] = {
    MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA256,
    MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA256,
    MBEDTLS_TLS1_3_SIG_ECDSA_SECP256R1_SHA256,
    MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA384,
    MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA384,
    MBEDTLS_TLS1_3_SIG_ECDSA_SECP384R1_SHA384,
    MBEDTLS_TLS1_3_SIG_RSA_PSS_RSAE_SHA512,
    MBEDTLS_TLS1_3_SIG_RSA_PKCS1_SHA512,
    MBEDTLS_TLS1_3_SIG_ECDSA_SECP521R1_SHA512,
    MBEDTLS_TLS1_3_SIG_NONE,
};
#endif

/*
 * Cipher suites, cheapest record protection first: ChaCha20-Poly1305 is
 * cheaper than AES-GCM in mbedTLS on x86-64 even with AES-NI (16 KiB
 * record: 2.28 565 k vs 757 k instructions, 3.6 457 k vs 552 k; its GCM
 * works a block at a time), AES-128 cheaper than AES-256; in TLS 1.2 the
 * RSA suites first (an RSA signature verifies 12 to 33 times faster than
 * an ECDSA one).  Then what any MX still speaks: AES-CBC with ECDHE, DHE
 * and RSA key exchange, so no server loses TLS to the short list.  Not
 * mbedTLS's ~130 suites: each costs a lookup in every ClientHello, and
 * CCM, ARIA, Camellia and PSK suites are offered by no MTA.  Only the
 * suites the linked mbedTLS has are kept.
 */
static const int wanted_suites[] = {
#if defined(TM_MBEDTLS3) && defined(MBEDTLS_SSL_PROTO_TLS1_3)
    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
    MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
#endif
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_256_CBC_SHA256,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_DHE_RSA_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA256,
    MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA,
};

#define TM_TLS_SUITES_MAX (sizeof wanted_suites / sizeof wanted_suites[0] + 1)
static int suites[TM_TLS_SUITES_MAX];
static pthread_once_t suites_once = PTHREAD_ONCE_INIT;

static void suites_init(void)
{
    const int *all = mbedtls_ssl_list_ciphersuites();
    size_t n = 0, i, j;

    for (i = 0; i < TM_TLS_SUITES_MAX - 1; i++) {
        for (j = 0; all[j] != 0 && all[j] != wanted_suites[i]; j++)
            ;
        if (all[j] != 0)
            suites[n++] = wanted_suites[i];
    }
    if (n == 0) { /* a build without any of them: the library's own list */
        for (j = 0; all[j] != 0 && n < TM_TLS_SUITES_MAX - 1; j++)
            suites[n++] = all[j];
    }
    suites[n] = 0;
}

static int load_system_store(mbedtls_x509_crt *ca)
{
    static const char *const bundles[] = {
        "/etc/ssl/certs/ca-certificates.crt", /* Debian, Ubuntu, Alpine */
        "/etc/pki/tls/certs/ca-bundle.crt",   /* Fedora, RHEL */
        "/etc/ssl/ca-bundle.pem",             /* openSUSE */
        "/etc/ssl/cert.pem",                  /* BSDs, macOS */
    };
    size_t i;

    for (i = 0; i < sizeof bundles / sizeof bundles[0]; i++) {
        if (access(bundles[i], R_OK) == 0 && mbedtls_x509_crt_parse_file(ca, bundles[i]) >= 0 &&
            ca->version != 0)
            return 0;
    }
    if (mbedtls_x509_crt_parse_path(ca, "/etc/ssl/certs") >= 0 && ca->version != 0)
        return 0;
    return -1;
}

/* Loads the store: ca_file and/or ca_path, else the system's. */
static int load_store(const struct tm_tls_config *cfg, mbedtls_x509_crt *ca, char *err,
                      size_t errlen)
{
    int ret;

    if (!cfg->ca_file && !cfg->ca_path) {
        if (load_system_store(ca) == 0)
            return TM_OK;
        tm__strlcpy(err, "no system CA store found", errlen);
        return TM_ECAFILE;
    }
    if (cfg->ca_file) {
        ret = mbedtls_x509_crt_parse_file(ca, cfg->ca_file);
        if (ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
            return TM_ENOMEM;
        if (ret < 0) {
            describe(ret, err, errlen);
            return TM_ECAFILE;
        }
    }
    if (cfg->ca_path) {
        /* A positive count is of files that did not parse: skipped. */
        ret = mbedtls_x509_crt_parse_path(ca, cfg->ca_path);
        if (ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
            return TM_ENOMEM;
        if (ret < 0) {
            describe(ret, err, errlen);
            return TM_ECAFILE;
        }
    }
    if (ca->version == 0) {
        snprintf(err, errlen, "no certificate in %s%s%s", cfg->ca_file ? cfg->ca_file : "",
                 cfg->ca_file && cfg->ca_path ? " or " : "", cfg->ca_path ? cfg->ca_path : "");
        return TM_ECAFILE;
    }
    return TM_OK;
}

static void trust_free(tm_tls_trust *tr)
{
    if (!tr)
        return;
    mbedtls_ssl_config_free(&tr->conf);
    mbedtls_x509_crt_free(&tr->ca);
    tm__free(tr);
}

/* Drops one reference (taken under the lock). */
static void trust_release(struct tm_tls_config *cfg, tm_tls_trust *tr)
{
    int last;

    if (!tr)
        return;
    pthread_mutex_lock(&cfg->lock);
    last = --tr->refs == 0;
    pthread_mutex_unlock(&cfg->lock);
    if (last)
        trust_free(tr);
}

/* A new store and the configuration over it, with no reference yet. */
static int trust_new(struct tm_tls_config *cfg, tm_tls_trust **out, char *err, size_t errlen)
{
    tm_tls_trust *tr;
    int ret, rc;

    *out = NULL;
    tr = tm__calloc(1, sizeof *tr);
    if (!tr)
        return TM_ENOMEM;
    mbedtls_x509_crt_init(&tr->ca);
    mbedtls_ssl_config_init(&tr->conf);
    rc = load_store(cfg, &tr->ca, err, errlen);
    if (rc != TM_OK) {
        trust_free(tr);
        return rc;
    }
    ret = mbedtls_ssl_config_defaults(&tr->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        describe(ret, err, errlen);
        trust_free(tr);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
    }
    /* Verify always, enforce never here: the policy decides what a failed
     * verification means, and the status reports the truth. */
    mbedtls_ssl_conf_authmode(&tr->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
    mbedtls_ssl_conf_ca_chain(&tr->conf, &tr->ca, NULL);
    mbedtls_ssl_conf_rng(&tr->conf, mbedtls_ctr_drbg_random, &cfg->drbg);
    mbedtls_ssl_conf_ciphersuites(&tr->conf, suites);
#if defined(TM_MBEDTLS3)
    mbedtls_ssl_conf_min_tls_version(&tr->conf, MBEDTLS_SSL_VERSION_TLS1_2);
    mbedtls_ssl_conf_groups(&tr->conf, groups);
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    mbedtls_ssl_conf_sig_algs(&tr->conf, sig_algs);
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
    /* Since 3.6.1 a client is told of TLS 1.3 tickets only when it asks;
     * without them no TLS 1.3 session ever resumes. */
    mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(
        &tr->conf, MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
#endif
#endif
#else
    mbedtls_ssl_conf_min_version(&tr->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_curves(&tr->conf, curves);
#endif
    *out = tr;
    return TM_OK;
}

static char *dup_or_null(const char *s, int *rc)
{
    char *d;
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    d = tm__calloc(1, n);
    if (!d)
        *rc = TM_ENOMEM;
    else
        memcpy(d, s, n);
    return d;
}

int tm__tls_config_new(struct tm_tls_config **out, const char *ca_file, const char *ca_path,
                       char *err, size_t errlen)
{
    static const unsigned char pers[] = "libtlsmail";
    struct tm_tls_config *cfg;
    int ret, rc = TM_OK;

    *out = NULL;
    err[0] = '\0';
#if defined(TM_MBEDTLS3)
    if (psa_crypto_init() != PSA_SUCCESS) {
        tm__strlcpy(err, "psa_crypto_init failed", errlen);
        return TM_ETLS;
    }
#endif
    if (pthread_once(&suites_once, suites_init) != 0)
        return TM_ETLS;
    cfg = tm__calloc(1, sizeof *cfg);
    if (!cfg)
        return TM_ENOMEM;
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);
    if (pthread_mutex_init(&cfg->lock, NULL) != 0) {
        tm__tls_config_free(cfg);
        return TM_ENOMEM;
    }
    cfg->lock_ready = 1;
    cfg->ca_file = dup_or_null(ca_file, &rc);
    cfg->ca_path = dup_or_null(ca_path, &rc);
    if (rc != TM_OK) {
        tm__tls_config_free(cfg);
        return rc;
    }

    ret = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy, pers,
                                sizeof pers - 1);
    if (ret != 0) {
        describe(ret, err, errlen);
        tm__tls_config_free(cfg);
        return TM_ETLS;
    }
    rc = trust_new(cfg, &cfg->trust, err, errlen);
    if (rc != TM_OK) {
        tm__tls_config_free(cfg);
        return rc;
    }
    cfg->trust->refs = 1; /* the config's own */
    cfg->trust->gen = cfg->gen = 1;
    *out = cfg;
    return TM_OK;
}

int tm__tls_reload_ca(struct tm_tls_config *cfg, char *err, size_t errlen)
{
    tm_tls_trust *tr, *old;
    size_t i;
    int rc;

    err[0] = '\0';
    rc = trust_new(cfg, &tr, err, errlen);
    if (rc != TM_OK)
        return rc;
    pthread_mutex_lock(&cfg->lock);
    old = cfg->trust;
    tr->refs = 1;
    tr->gen = ++cfg->gen;
    cfg->trust = tr;
    /* Sessions judged by the old store are never offered again. */
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        tm__free(cfg->cache[i].data);
        cfg->cache[i].data = NULL;
    }
    pthread_mutex_unlock(&cfg->lock);
    trust_release(cfg, old);
    return TM_OK;
}

void tm__tls_config_free(struct tm_tls_config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++)
        tm__free(cfg->cache[i].data);
    if (cfg->trust && --cfg->trust->refs == 0)
        trust_free(cfg->trust);
    if (cfg->lock_ready)
        pthread_mutex_destroy(&cfg->lock);
    tm__free(cfg->ca_file);
    tm__free(cfg->ca_path);
    mbedtls_ctr_drbg_free(&cfg->drbg);
    mbedtls_entropy_free(&cfg->entropy);
    tm__free(cfg);
}

static long tls_read(tm_transport *tr, void *buf, size_t size, int64_t deadline);
static int tls_write(tm_transport *tr, const void *buf, size_t len, int64_t deadline);
static size_t tls_pending(tm_transport *tr);
static void tls_close(tm_transport *tr);
static const tm_transport_ops tls_ops = { tls_read, tls_write, tls_pending, tls_close };

int tm__tls_new(tm_tls **out, struct tm_tls_config *cfg)
{
    tm_tls *t = tm__calloc(1, sizeof *t);

    *out = NULL;
    if (!t)
        return TM_ENOMEM;
    t->base.ops = &tls_ops;
    t->cfg = cfg;
    mbedtls_ssl_init(&t->ssl);
    *out = t;
    return TM_OK;
}

void tm__tls_free(tm_tls *t)
{
    if (!t)
        return;
    mbedtls_ssl_free(&t->ssl);
    trust_release(t->cfg, t->trust);
    tm__free(t);
}

/* The BIO: whole writes and reads of at least one byte through the inner
 * transport, bounded by the deadline of the call under way.  When the
 * inner transport fails, its error is kept for the caller and mbedTLS is
 * told WANT_*, which leaves its state as it was. */
static int bio_send(void *arg, const unsigned char *buf, size_t len)
{
    tm_tls *t = arg;
    int rc;

    if (len > INT_MAX)
        len = INT_MAX;
    rc = t->inner->ops->write(t->inner, buf, len, t->deadline);
    if (rc == TM_OK)
        return (int)len;
    t->io_err = rc;
    return MBEDTLS_ERR_SSL_WANT_WRITE;
}

static int bio_recv(void *arg, unsigned char *buf, size_t len)
{
    tm_tls *t = arg;
    long n;

    if (len > INT_MAX)
        len = INT_MAX;
    n = t->inner->ops->read(t->inner, buf, len, t->deadline);
    if (n > 0)
        return (int)n;
    if (n == TM_ECLOSED)
        return 0; /* EOF: mbedTLS reports MBEDTLS_ERR_SSL_CONN_EOF */
    t->io_err = (int)n;
    return MBEDTLS_ERR_SSL_WANT_READ;
}

static int is_want(int ret)
{
    return ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE;
}

/*
 * mbedTLS also says WANT_* without asking the BIO for anything: after a
 * TLS 1.3 NewSessionTicket (3.6 switches to a handshake state and asks to
 * be called again), after a warning alert.  Each such return consumed a
 * record, so calling again makes progress; the count only guards against
 * a library that would not.  True when the call should be repeated.
 */
#define TM_TLS_NO_IO_MAX 1024
static int again(tm_tls *t, int ret, unsigned int *spins)
{
    return is_want(ret) && t->io_err == 0 && ++*spins < TM_TLS_NO_IO_MAX;
}

/* Offers the cached session for t->key, if any, fresh, and made under
 * the store this connection uses. */
static void cache_offer(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    int64_t now = tm__now_ms();
    size_t i;

    if (!t->key[0])
        return;
    mbedtls_ssl_session_init(&sess);
    pthread_mutex_lock(&cfg->lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        tm_tls_cached *c = &cfg->cache[i];
        if (!c->data || strcmp(c->key, t->key) != 0)
            continue;
        if (now - c->verified_at > TM_TLS_CACHE_TTL_MS || c->gen != t->trust->gen) {
            tm__free(c->data);
            c->data = NULL;
            break;
        }
        if (mbedtls_ssl_session_load(&sess, c->data, c->len) == 0 &&
            mbedtls_ssl_set_session(&t->ssl, &sess) == 0) {
            t->offered = 1;
            t->offered_flags = c->flags;
            t->offered_at = c->verified_at;
        }
        break;
    }
    pthread_mutex_unlock(&cfg->lock);
    mbedtls_ssl_session_free(&sess);
}

void tm__tls_cache_drop(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    size_t i;

    t->keep = 0;
    t->dropped = 1;
    if (!t->key[0])
        return;
    pthread_mutex_lock(&cfg->lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        if (cfg->cache[i].data && strcmp(cfg->cache[i].key, t->key) == 0) {
            tm__free(cfg->cache[i].data);
            cfg->cache[i].data = NULL;
        }
    }
    pthread_mutex_unlock(&cfg->lock);
}

/* Stores the connection's current session (replacing the key's entry)
 * with the verification outcome of the handshake that made it.  mbedTLS
 * exports each session once: a second call without a new ticket is a
 * no-op. */
static void cache_save(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    unsigned char *buf = NULL;
    size_t len = 0, i, slot = 0;
    int64_t oldest = INT64_MAX;

    if (!t->key[0] || !t->keep || t->dropped)
        return;
    mbedtls_ssl_session_init(&sess);
    if (mbedtls_ssl_get_session(&t->ssl, &sess) == 0 &&
        mbedtls_ssl_session_save(&sess, NULL, 0, &len) == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL &&
        len > 0 && (buf = tm__calloc(1, len)) != NULL &&
        mbedtls_ssl_session_save(&sess, buf, len, &len) == 0) {
        pthread_mutex_lock(&cfg->lock);
        if (t->trust->gen == cfg->gen) { /* not judged by a store since replaced */
            for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
                tm_tls_cached *c = &cfg->cache[i];
                if (c->data && strcmp(c->key, t->key) == 0) {
                    slot = i;
                    break;
                }
                if (!c->data) {
                    slot = i;
                    oldest = INT64_MIN;
                } else if (c->verified_at < oldest) {
                    slot = i;
                    oldest = c->verified_at;
                }
            }
            tm__free(cfg->cache[slot].data);
            tm__strlcpy(cfg->cache[slot].key, t->key, sizeof cfg->cache[slot].key);
            cfg->cache[slot].data = buf;
            cfg->cache[slot].len = len;
            cfg->cache[slot].gen = t->trust->gen;
            cfg->cache[slot].flags = t->flags;
            cfg->cache[slot].verified_at = t->resumed ? t->offered_at : tm__now_ms();
            buf = NULL;
        }
        pthread_mutex_unlock(&cfg->lock);
    }
    tm__free(buf);
    mbedtls_ssl_session_free(&sess);
}

static int is_tls13(const tm_tls *t)
{
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    return mbedtls_ssl_get_version_number(&t->ssl) == MBEDTLS_SSL_VERSION_TLS1_3;
#else
    (void)t;
    return 0;
#endif
}

void tm__tls_cache_save(tm_tls *t)
{
    if (t->dropped)
        return;
    t->keep = 1;
    /* A TLS 1.3 session is worth keeping only with a ticket: without one
     * mbedTLS would still offer TLS 1.3 alone next time.  Tickets arrive
     * after the handshake (tls_read saves each).  A resumed TLS 1.2 session
     * is the cached one already: not exported and parsed again. */
    if (is_tls13(t) ? t->ticket : !t->resumed)
        cache_save(t);
}

int tm__tls_close_notify(const tm_tls *t)
{
    return t && t->close_notify;
}

int tm__tls_resumed(const tm_tls *t)
{
    return t->resumed;
}

int tm__tls_offered(const tm_tls *t)
{
    return t->offered;
}

/* Called by mbedTLS for each certificate of the chain it verifies: only in
 * a full handshake, never on a resumed one. */
/* ---- DANE (RFC 7672 3.1, RFC 6698 2.1) --------------------------------------- */

static int sha256(const unsigned char *p, size_t len, unsigned char out[32])
{
#if defined(TM_MBEDTLS3)
    return mbedtls_sha256(p, len, out, 0);
#else
    return mbedtls_sha256_ret(p, len, out, 0);
#endif
}

/* Whether record r names certificate c: its whole DER (selector 0) or its
 * SubjectPublicKeyInfo (1), in full (kept as a SHA-512, see tm_tlsa),
 * SHA-256 or SHA-512. */
static int tlsa_names_crt(const tm_tlsa *r, const mbedtls_x509_crt *c)
{
    const mbedtls_x509_buf *b = r->selector == 0 ? &c->raw : &c->pk_raw;
    unsigned char d[64];
    size_t dlen;

    if (r->selector > 1 || !b->p || b->len == 0)
        return 0;
    if (r->mtype == 1) {
        dlen = 32;
        if (sha256(b->p, b->len, d) != 0)
            return 0;
    } else if (r->mtype == 0 || r->mtype == 2) {
        dlen = 64;
        if (tm__sha512(b->p, b->len, d) != TM_OK)
            return 0;
    } else {
        return 0;
    }
    return r->len == dlen && memcmp(d, r->data, dlen) == 0;
}

/* DANE-TA: the leaf chains up to ta (a certificate the server sent) with
 * valid dates, and carries one of the reference names (RFC 7672 3.2.2). */
static int chains_to(mbedtls_x509_crt *leaf, const mbedtls_x509_crt *ta, const char *const *names,
                     int nnames)
{
    mbedtls_x509_crt anchor;
    int i, ok = 0;

    mbedtls_x509_crt_init(&anchor);
    if (mbedtls_x509_crt_parse_der(&anchor, ta->raw.p, ta->raw.len) == 0) {
        for (i = 0; i < nnames && !ok; i++) {
            uint32_t vflags = 0;
            if (names[i] && names[i][0] &&
                mbedtls_x509_crt_verify(leaf, &anchor, NULL, names[i], &vflags, NULL, NULL) == 0 &&
                vflags == 0)
                ok = 1;
        }
    }
    mbedtls_x509_crt_free(&anchor);
    return ok;
}

/* Whether c is one of the certificates of a path mbedTLS verified clean. */
static int on_clean_path(const mbedtls_x509_crt *c, const mbedtls_x509_crt *const *path)
{
    int d;

    for (d = 1; path && d < TM_TLS_PATH_MAX && path[d]; d++)
        if (path[d]->raw.len == c->raw.len && memcmp(path[d]->raw.p, c->raw.p, c->raw.len) == 0)
            return 1;
    return 0;
}

/* The first record of tlsa[0..n) that authenticates the chain the server
 * presented (leaf first), or -1.  DANE-EE: the leaf, whatever its names
 * and dates (RFC 7672 3.1.1).  DANE-TA: a certificate above the leaf.
 * path (may be NULL): the certificates above the leaf of a path mbedTLS
 * has just verified without a flag, its name check against names[0]
 * included; a DANE-TA certificate on it needs no second verification. */
static int dane_check(const tm_tlsa *tlsa, int n, const char *const *names, int nnames,
                      mbedtls_x509_crt *leaf, const mbedtls_x509_crt *const *path)
{
    int i;

    for (i = 0; i < n; i++) {
        const tm_tlsa *r = &tlsa[i];
        const mbedtls_x509_crt *c;

        if (r->usage == 3) {
            if (tlsa_names_crt(r, leaf))
                return i;
        } else if (r->usage == 2) {
            for (c = leaf->next; c; c = c->next)
                if (tlsa_names_crt(r, c) &&
                    (on_clean_path(c, path) || chains_to(leaf, c, names, nnames)))
                    return i;
        }
    }
    return -1;
}

int tm__dane_check_chain(const tm_tlsa *tlsa, int n, const char *const *names, int nnames,
                         const char *pem, size_t len)
{
    mbedtls_x509_crt chain;
    unsigned char *buf;
    int rc;

    if (!pem || (n > 0 && !tlsa) || (nnames > 0 && !names))
        return TM_EINVAL;
    buf = tm__calloc(1, len + 1); /* PEM parsing wants the NUL counted */
    if (!buf)
        return TM_ENOMEM;
    memcpy(buf, pem, len);
    mbedtls_x509_crt_init(&chain);
    if (mbedtls_x509_crt_parse(&chain, buf, len + 1) != 0 || !chain.raw.p) {
        rc = TM_EINVAL;
    } else {
        rc = dane_check(tlsa, n, names, nnames, &chain, NULL);
        if (rc < 0)
            rc = TM_ETLS;
    }
    mbedtls_x509_crt_free(&chain);
    tm__free(buf);
    return rc;
}

void tm__tls_set_dane(tm_tls *t, const tm_tlsa *tlsa, int n, const char *const *names, int nnames)
{
    t->dane = n > 0 ? tlsa : NULL;
    t->ndane = t->dane ? n : 0;
    t->dane_names = names;
    t->ndane_names = names ? nnames : 0;
    t->dane_match = -1;
}

int tm__tls_dane_matched(const tm_tls *t)
{
    return t->ndane ? t->dane_match : -1;
}

/* Called by mbedTLS for each certificate of the chain it verifies, from
 * the top down to the leaf (depth 0): only in a full handshake, never on
 * a resumed one.  With TLSA records, mbedTLS's PKIX verdict is replaced:
 * the certificates above the leaf pass, and at the leaf the TLSA records
 * alone decide. */
static int verify_cb(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    tm_tls *t = arg;

    t->verified_now = 1;
    if (t->ndane == 0)
        return 0;
    if (depth > 0) {
        t->path_flags |= *flags;
        if (depth < TM_TLS_PATH_MAX)
            t->path[depth] = crt;
        else
            t->path_flags |= MBEDTLS_X509_BADCERT_OTHER; /* too long to reuse */
        *flags = 0;
        return 0;
    }
    /* The SNI, and so mbedTLS's name check, is names[0]. */
    t->dane_match = dane_check(t->dane, t->ndane, t->dane_names, t->ndane_names, crt,
                               (t->path_flags | *flags) == 0 ? t->path : NULL);
    *flags = t->dane_match >= 0 ? 0 : MBEDTLS_X509_BADCERT_NOT_TRUSTED;
    return 0;
}

static int setup_error(int ret, char *err, size_t errlen)
{
    describe(ret, err, errlen);
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
}

int tm__tls_start(tm_tls *t, tm_transport *inner, const char *hostname, const char *cache_key,
                  int64_t deadline, tm_transport **out, char *err, size_t errlen)
{
    struct tm_tls_config *cfg = t->cfg;
    tm_tls_trust *cur;
    unsigned int spins = 0;
    int ret;

    err[0] = '\0';
    *out = NULL;
    t->flags = (uint32_t)-1;
    t->close_notify = 0;
    /* The current store.  After a reload, set up anew over it. */
    pthread_mutex_lock(&cfg->lock);
    cur = cfg->trust;
    if (cur != t->trust)
        cur->refs++;
    pthread_mutex_unlock(&cfg->lock);
    if (cur != t->trust) {
        if (t->ready) {
            mbedtls_ssl_free(&t->ssl);
            mbedtls_ssl_init(&t->ssl);
            t->ready = t->used = 0;
        }
        trust_release(cfg, t->trust);
        t->trust = cur;
    }
    if (!t->ready) {
        ret = mbedtls_ssl_setup(&t->ssl, &t->trust->conf);
        if (ret != 0)
            return setup_error(ret, err, errlen);
        t->ready = 1;
    } else if (t->used) {
        ret = mbedtls_ssl_session_reset(&t->ssl);
        if (ret != 0)
            return setup_error(ret, err, errlen);
    }
    t->used = 1;
    t->inner = inner;
    t->deadline = deadline;
    t->io_err = 0;
    t->offered = t->verified_now = t->resumed = t->ticket = t->keep = t->dropped = 0;
    t->dane_match = -1;
    t->path_flags = 0;
    memset(t->path, 0, sizeof t->path);
    /* SNI and the name the certificate must match: the MX host name. */
    ret = mbedtls_ssl_set_hostname(&t->ssl, hostname);
    if (ret != 0) {
        t->inner = NULL;
        return setup_error(ret, err, errlen);
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    mbedtls_ssl_set_verify(&t->ssl, verify_cb, t);
    /* DANE: every handshake is a full one, judged by the TLSA records of
     * now; nothing is offered or kept. */
    tm__strlcpy(t->key, cache_key && !t->ndane ? cache_key : "", sizeof t->key);
    cache_offer(t);

    while ((ret = mbedtls_ssl_handshake(&t->ssl)) != 0) {
        int rc;

        if (again(t, ret, &spins))
            continue;
        if (is_want(ret)) {
            rc = t->io_err ? t->io_err : TM_ETLS;
            tm__strlcpy(err, rc == TM_ETIMEOUT ? "TLS handshake timed out"
                             : rc == TM_ECLOSED ? "connection closed during the TLS handshake"
                                                : tm_strerror(rc),
                        errlen);
        } else {
            describe(ret, err, errlen);
            rc = ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
        }
        tm__tls_cache_drop(t); /* a failed handshake forgets the session */
        t->inner = NULL;
        return rc;
    }
    if (t->verified_now) {
        t->flags = mbedtls_ssl_get_verify_result(&t->ssl);
    } else if (t->offered) {
        /* Resumed: what the full handshake behind the session found, never
         * more (TLS 1.3 PSK resumption reports 0). */
        t->resumed = 1;
        t->flags = t->offered_flags;
    } else {
        t->flags = MBEDTLS_X509_BADCERT_MISSING; /* nothing was verified */
    }
    if (t->flags == 0 && mbedtls_ssl_get_verify_result(&t->ssl) != 0)
        t->flags = mbedtls_ssl_get_verify_result(&t->ssl);
    /* With TLSA records only they speak: a match authenticates whatever
     * mbedTLS added after the chain (key usage checks), and no match is a
     * failure whatever PKIX found. */
    if (t->ndane)
        t->flags = t->dane_match >= 0 ? 0 : (t->flags | MBEDTLS_X509_BADCERT_NOT_TRUSTED);
    *out = &t->base;
    return TM_OK;
}

int tm__tls_verified(const tm_tls *t)
{
    return t->flags == 0;
}

void tm__tls_verify_error(const tm_tls *t, char *buf, size_t size)
{
    char info[512];
    char *p;
    int n;

    if (t->flags == 0) {
        buf[0] = '\0';
        return;
    }
    if (t->ndane) {
        snprintf(buf, size, "DANE: no TLSA record of the host (%d usable) matches the "
                            "certificate chain it presented", t->ndane);
        return;
    }
    n = mbedtls_x509_crt_verify_info(info, sizeof info, "", t->flags);
    if (n <= 0) {
        snprintf(buf, size, "certificate verification failed (flags 0x%x)", (unsigned int)t->flags);
        return;
    }
    /* One line per reason: join them with "; ". */
    while (n > 0 && info[n - 1] == '\n')
        info[--n] = '\0';
    snprintf(buf, size, "certificate verification failed: ");
    for (p = info; *p;) {
        char *nl = strchr(p, '\n');
        size_t used = strlen(buf);
        if (nl)
            *nl = '\0';
        snprintf(buf + used, size - used, "%s%s", p, nl ? "; " : "");
        if (!nl)
            break;
        p = nl + 1;
    }
}

const char *tm__tls_version(const tm_tls *t)
{
    return mbedtls_ssl_get_version(&t->ssl);
}

const char *tm__tls_cipher(const tm_tls *t)
{
    return mbedtls_ssl_get_ciphersuite(&t->ssl);
}

static int map_io_error(int ret)
{
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == MBEDTLS_ERR_NET_CONN_RESET ||
        ret == MBEDTLS_ERR_SSL_CONN_EOF)
        return TM_ECLOSED;
    if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        return TM_ENOMEM;
    return TM_ETLS;
}

static long tls_read(tm_transport *tr, void *buf, size_t size, int64_t deadline)
{
    tm_tls *t = (tm_tls *)tr;
    unsigned int spins = 0;

    if (!t->inner)
        return TM_ECLOSED;
    if (size > INT_MAX)
        size = INT_MAX;
    t->deadline = deadline;
    t->io_err = 0;
    for (;;) {
        int ret = mbedtls_ssl_read(&t->ssl, buf, size);
        if (ret > 0)
            return ret;
        if (ret == 0)
            return TM_ECLOSED;
        if (again(t, ret, &spins))
            continue;
        if (is_want(ret))
            return t->io_err ? t->io_err : TM_ETIMEOUT;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            /* TLS 1.3 tickets arrive after the handshake: keep the
             * newest, if the policy kept the connection.  mbedTLS reads
             * on from its buffers first; the BIO waits only when they are
             * empty. */
            t->ticket = 1;
            cache_save(t);
            continue;
        }
#endif
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            t->close_notify = 1;
        return map_io_error(ret);
    }
}

static int tls_write(tm_transport *tr, const void *buf, size_t len, int64_t deadline)
{
    tm_tls *t = (tm_tls *)tr;
    const unsigned char *p = buf;
    unsigned int spins = 0;

    if (!t->inner)
        return TM_ECLOSED;
    t->deadline = deadline;
    t->io_err = 0;
    while (len > 0) {
        int ret = mbedtls_ssl_write(&t->ssl, p, len > INT_MAX ? INT_MAX : len);
        if (ret > 0) {
            p += ret;
            len -= (size_t)ret;
            continue;
        }
        if (again(t, ret, &spins))
            continue;
        if (is_want(ret))
            return t->io_err ? t->io_err : TM_ETIMEOUT;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            t->ticket = 1;
            cache_save(t);
            continue;
        }
#endif
        return map_io_error(ret);
    }
    return TM_OK;
}

static size_t tls_pending(tm_transport *tr)
{
    tm_tls *t = (tm_tls *)tr;

    if (!t->inner)
        return 0;
    return mbedtls_ssl_get_bytes_avail(&t->ssl) + (size_t)(mbedtls_ssl_check_pending(&t->ssl) != 0) +
           t->inner->ops->pending(t->inner);
}

static void tls_close(tm_transport *tr)
{
    tm_tls *t = (tm_tls *)tr;

    if (!t->inner)
        return;
    /* One try, never a wait: the deadline has passed already. */
    t->deadline = tm__now_ms();
    (void)mbedtls_ssl_close_notify(&t->ssl);
    t->inner = NULL;
}

int tm__sha512(const void *data, size_t len, unsigned char out[64])
{
#if defined(TM_MBEDTLS3)
    return mbedtls_sha512(data, len, out, 0) == 0 ? TM_OK : TM_EIO;
#else
    return mbedtls_sha512_ret(data, len, out, 0) == 0 ? TM_OK : TM_EIO;
#endif
}

int tm__tls_random(struct tm_tls_config *cfg, void *buf, size_t len)
{
    return mbedtls_ctr_drbg_random(&cfg->drbg, buf, len) == 0 ? TM_OK : TM_EIO;
}
