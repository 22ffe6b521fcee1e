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
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "internal.h"

/*
 * Resumable sessions, keyed by host, address, port and policy, so that a
 * session verified for one name is never offered for another.  A small
 * table with least-recently-stored eviction; entries expire.
 */
#define TM_TLS_CACHE_SIZE 64
#define TM_TLS_CACHE_TTL_MS (30 * 60 * 1000)
#define TM_TLS_KEY_MAX 384

typedef struct tm_tls_cached {
    char key[TM_TLS_KEY_MAX];
    int64_t stored;
    unsigned char *data; /* mbedtls_ssl_session_save() output */
    size_t len;
} tm_tls_cached;

struct tm_tls_config {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg; /* locked internally (MBEDTLS_THREADING_C) */
    mbedtls_x509_crt ca;
    mbedtls_ssl_config conf;
    pthread_mutex_t cache_lock;
    int cache_ready;
    tm_tls_cached cache[TM_TLS_CACHE_SIZE];
};

struct tm_tls {
    tm_transport base;
    struct tm_tls_config *cfg;
    mbedtls_ssl_context ssl;
    tm_transport *inner; /* NULL when no connection */
    int64_t deadline;    /* of the call under way */
    int io_err;          /* what the inner transport said when the BIO gave up */
    int ready;           /* mbedtls_ssl_setup done: buffers allocated once */
    int used;            /* a connection used it since the last reset */
    uint32_t flags;      /* verification result of the last handshake */
    int saved;           /* this connection's session is in the cache */
    int dropped;         /* the session was dropped: never save it again */
    char key[TM_TLS_KEY_MAX]; /* cache key of this connection, "" = none */
};

#if defined(MBEDTLS_THREADING_C) == 0
#warning "mbedTLS without MBEDTLS_THREADING_C: share a tm_context between threads at your own risk"
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

/* Curve order: x25519 first (P-521 first costs 3x the CPU on 2.28). */
#if defined(TM_MBEDTLS3)
static const uint16_t groups[] = {
    MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
    MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
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

int tm__tls_config_new(struct tm_tls_config **out, const char *ca_file, char *err, size_t errlen)
{
    static const unsigned char pers[] = "libtlsmail";
    struct tm_tls_config *cfg;
    int ret;

    *out = NULL;
    err[0] = '\0';
#if defined(TM_MBEDTLS3)
    if (psa_crypto_init() != PSA_SUCCESS) {
        tm__strlcpy(err, "psa_crypto_init failed", errlen);
        return TM_ETLS;
    }
#endif
    cfg = tm__calloc(1, sizeof *cfg);
    if (!cfg)
        return TM_ENOMEM;
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);
    mbedtls_x509_crt_init(&cfg->ca);
    mbedtls_ssl_config_init(&cfg->conf);
    if (pthread_mutex_init(&cfg->cache_lock, NULL) != 0) {
        tm__tls_config_free(cfg);
        return TM_ENOMEM;
    }
    cfg->cache_ready = 1;

    ret = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy, pers,
                                sizeof pers - 1);
    if (ret != 0) {
        describe(ret, err, errlen);
        tm__tls_config_free(cfg);
        return TM_ETLS;
    }

    if (ca_file) {
        ret = mbedtls_x509_crt_parse_file(&cfg->ca, ca_file);
        if (ret < 0 || cfg->ca.version == 0) {
            if (ret < 0)
                describe(ret, err, errlen);
            else
                snprintf(err, errlen, "no certificate in %s", ca_file);
            tm__tls_config_free(cfg);
            return TM_ECAFILE;
        }
    } else if (load_system_store(&cfg->ca) != 0) {
        tm__strlcpy(err, "no system CA store found", errlen);
        tm__tls_config_free(cfg);
        return TM_ECAFILE;
    }

    ret = mbedtls_ssl_config_defaults(&cfg->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        describe(ret, err, errlen);
        tm__tls_config_free(cfg);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
    }
    /* Verify always, enforce never here: the policy decides what a failed
     * verification means, and the status reports the truth. */
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
    mbedtls_ssl_conf_rng(&cfg->conf, mbedtls_ctr_drbg_random, &cfg->drbg);
#if defined(TM_MBEDTLS3)
    mbedtls_ssl_conf_min_tls_version(&cfg->conf, MBEDTLS_SSL_VERSION_TLS1_2);
    mbedtls_ssl_conf_groups(&cfg->conf, groups);
#else
    mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_curves(&cfg->conf, curves);
#endif
    *out = cfg;
    return TM_OK;
}

void tm__tls_config_free(struct tm_tls_config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++)
        tm__free(cfg->cache[i].data);
    if (cfg->cache_ready)
        pthread_mutex_destroy(&cfg->cache_lock);
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->ca);
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

/* Offers the cached session for t->key, if any and fresh. */
static void cache_offer(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    int64_t now = tm__now_ms();
    size_t i;

    if (!t->key[0])
        return;
    mbedtls_ssl_session_init(&sess);
    pthread_mutex_lock(&cfg->cache_lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        tm_tls_cached *c = &cfg->cache[i];
        if (!c->data || strcmp(c->key, t->key) != 0)
            continue;
        if (now - c->stored > TM_TLS_CACHE_TTL_MS) {
            tm__free(c->data);
            c->data = NULL;
            break;
        }
        if (mbedtls_ssl_session_load(&sess, c->data, c->len) == 0)
            (void)mbedtls_ssl_set_session(&t->ssl, &sess);
        break;
    }
    pthread_mutex_unlock(&cfg->cache_lock);
    mbedtls_ssl_session_free(&sess);
}

void tm__tls_cache_drop(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    size_t i;

    if (!t->key[0])
        return;
    pthread_mutex_lock(&cfg->cache_lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        if (cfg->cache[i].data && strcmp(cfg->cache[i].key, t->key) == 0) {
            tm__free(cfg->cache[i].data);
            cfg->cache[i].data = NULL;
        }
    }
    pthread_mutex_unlock(&cfg->cache_lock);
    t->saved = 0;
    t->dropped = 1;
}

static void cache_save(tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    unsigned char *buf = NULL;
    size_t len = 0, i, slot = 0;
    int64_t oldest = INT64_MAX;

    if (!t->key[0] || t->saved || t->dropped)
        return;
    mbedtls_ssl_session_init(&sess);
    if (mbedtls_ssl_get_session(&t->ssl, &sess) == 0 &&
        mbedtls_ssl_session_save(&sess, NULL, 0, &len) == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL &&
        len > 0 && (buf = tm__calloc(1, len)) != NULL &&
        mbedtls_ssl_session_save(&sess, buf, len, &len) == 0) {
        pthread_mutex_lock(&cfg->cache_lock);
        for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
            tm_tls_cached *c = &cfg->cache[i];
            if (c->data && strcmp(c->key, t->key) == 0) {
                slot = i;
                break;
            }
            if (!c->data) {
                slot = i;
                oldest = INT64_MIN;
            } else if (c->stored < oldest) {
                slot = i;
                oldest = c->stored;
            }
        }
        tm__free(cfg->cache[slot].data);
        tm__strlcpy(cfg->cache[slot].key, t->key, sizeof cfg->cache[slot].key);
        cfg->cache[slot].data = buf;
        cfg->cache[slot].len = len;
        cfg->cache[slot].stored = tm__now_ms();
        pthread_mutex_unlock(&cfg->cache_lock);
        buf = NULL;
        t->saved = 1;
    }
    tm__free(buf);
    mbedtls_ssl_session_free(&sess);
}

void tm__tls_cache_save(tm_tls *t)
{
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    /* TLS 1.3: the tickets come later; saved at shutdown instead. */
    if (mbedtls_ssl_get_version_number(&t->ssl) == MBEDTLS_SSL_VERSION_TLS1_3)
        return;
#endif
    cache_save(t);
}

static int setup_error(int ret, char *err, size_t errlen)
{
    describe(ret, err, errlen);
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
}

int tm__tls_start(tm_tls *t, tm_transport *inner, const char *hostname, const char *cache_key,
                  int64_t deadline, tm_transport **out, char *err, size_t errlen)
{
    int ret;

    err[0] = '\0';
    *out = NULL;
    t->flags = (uint32_t)-1;
    if (!t->ready) {
        ret = mbedtls_ssl_setup(&t->ssl, &t->cfg->conf);
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
    t->saved = 0;
    t->dropped = 0;
    /* SNI and the name the certificate must match: the MX host name. */
    ret = mbedtls_ssl_set_hostname(&t->ssl, hostname);
    if (ret != 0) {
        t->inner = NULL;
        return setup_error(ret, err, errlen);
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    tm__strlcpy(t->key, cache_key ? cache_key : "", sizeof t->key);
    cache_offer(t);

    while ((ret = mbedtls_ssl_handshake(&t->ssl)) != 0) {
        int rc;

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
    t->flags = mbedtls_ssl_get_verify_result(&t->ssl);
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
        if (is_want(ret))
            return t->io_err ? t->io_err : TM_ETIMEOUT;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue; /* TLS 1.3 tickets arrive after the handshake */
#endif
        return map_io_error(ret);
    }
}

static int tls_write(tm_transport *tr, const void *buf, size_t len, int64_t deadline)
{
    tm_tls *t = (tm_tls *)tr;
    const unsigned char *p = buf;

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
        if (is_want(ret))
            return t->io_err ? t->io_err : TM_ETIMEOUT;
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue;
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
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    /* TLS 1.3 tickets arrive after the handshake: keep the latest. */
    if (t->key[0] && mbedtls_ssl_get_version_number(&t->ssl) == MBEDTLS_SSL_VERSION_TLS1_3)
        cache_save(t);
#endif
    /* One try, never a wait: the deadline has passed already. */
    t->deadline = tm__now_ms();
    (void)mbedtls_ssl_close_notify(&t->ssl);
    t->inner = NULL;
}

int tm__tls_random(struct tm_tls_config *cfg, void *buf, size_t len)
{
    return mbedtls_ctr_drbg_random(&cfg->drbg, buf, len) == 0 ? TM_OK : TM_EIO;
}
