/*
 * tls.c - the only file that includes mbedTLS.
 *
 * Builds against mbedTLS 2.28 (Debian 12: TLS 1.2 only) and 3.x (TLS 1.3
 * when the library has it, PSA initialisation).  Every version difference
 * lives here.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
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
#define TM_TLS_RX_SIZE 4096

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
    struct tm_tls_config *cfg;
    mbedtls_ssl_context ssl;
    int fd;
    int ready;      /* mbedtls_ssl_setup done: buffers allocated once */
    int used;       /* a connection used it since the last reset */
    uint32_t flags; /* verification result of the last handshake */
    int offered;    /* a cached session was offered for resumption */
    int saved;      /* this connection's session is in the cache */
    char key[TM_TLS_KEY_MAX]; /* cache key of this connection, "" = none */
    /* Read-ahead for mbedTLS, which asks for a record's 5-byte header and
     * then its body: one recv per arriving packet instead of two per record. */
    size_t rx_pos, rx_len;
    int sent;       /* data went out since the last recv: the reply is not here yet */
    unsigned char rx[TM_TLS_RX_SIZE];
};

#if defined(MBEDTLS_THREADING_C) == 0
#warning "mbedTLS without MBEDTLS_THREADING_C: share a tm_context between threads at your own risk"
#endif

const char *tm_tls_backend_name(void)
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

int tm_tls_config_new(struct tm_tls_config **out, const char *ca_file, char *err, size_t errlen)
{
    static const unsigned char pers[] = "libtlsmail";
    struct tm_tls_config *cfg;
    int ret;

    *out = NULL;
    err[0] = '\0';
#if defined(TM_MBEDTLS3)
    if (psa_crypto_init() != PSA_SUCCESS) {
        tm_strlcpy(err, "psa_crypto_init failed", errlen);
        return TM_ETLS;
    }
#endif
    cfg = tm_calloc(1, sizeof *cfg);
    if (!cfg)
        return TM_ENOMEM;
    mbedtls_entropy_init(&cfg->entropy);
    mbedtls_ctr_drbg_init(&cfg->drbg);
    mbedtls_x509_crt_init(&cfg->ca);
    mbedtls_ssl_config_init(&cfg->conf);
    if (pthread_mutex_init(&cfg->cache_lock, NULL) != 0) {
        tm_tls_config_free(cfg);
        return TM_ENOMEM;
    }
    cfg->cache_ready = 1;

    ret = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy, pers,
                                sizeof pers - 1);
    if (ret != 0) {
        describe(ret, err, errlen);
        tm_tls_config_free(cfg);
        return TM_ETLS;
    }

    if (ca_file) {
        ret = mbedtls_x509_crt_parse_file(&cfg->ca, ca_file);
        if (ret < 0 || cfg->ca.version == 0) {
            if (ret < 0)
                describe(ret, err, errlen);
            else
                snprintf(err, errlen, "no certificate in %s", ca_file);
            tm_tls_config_free(cfg);
            return TM_ECAFILE;
        }
    } else if (load_system_store(&cfg->ca) != 0) {
        tm_strlcpy(err, "no system CA store found", errlen);
        tm_tls_config_free(cfg);
        return TM_ECAFILE;
    }

    ret = mbedtls_ssl_config_defaults(&cfg->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        describe(ret, err, errlen);
        tm_tls_config_free(cfg);
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

void tm_tls_config_free(struct tm_tls_config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++)
        tm_free(cfg->cache[i].data);
    if (cfg->cache_ready)
        pthread_mutex_destroy(&cfg->cache_lock);
    mbedtls_ssl_config_free(&cfg->conf);
    mbedtls_x509_crt_free(&cfg->ca);
    mbedtls_ctr_drbg_free(&cfg->drbg);
    mbedtls_entropy_free(&cfg->entropy);
    tm_free(cfg);
}

int tm_tls_new(struct tm_tls **out, struct tm_tls_config *cfg)
{
    struct tm_tls *t = tm_calloc(1, sizeof *t);

    *out = NULL;
    if (!t)
        return TM_ENOMEM;
    t->cfg = cfg;
    t->fd = -1;
    mbedtls_ssl_init(&t->ssl);
    *out = t;
    return TM_OK;
}

void tm_tls_free(struct tm_tls *t)
{
    if (!t)
        return;
    mbedtls_ssl_free(&t->ssl);
    tm_free(t);
}

/* A new connection (or none) starts with nothing read ahead or sent. */
static void rx_reset(struct tm_tls *t)
{
    t->rx_pos = t->rx_len = 0;
    t->sent = 0;
}

/* Delayed ACKs stall a server that answers in two writes (Postfix: the
 * envelope replies, then the BDAT reply) by ~40 ms; the kernel clears
 * TCP_QUICKACK by itself (our own sends put it back in delayed-ACK mode),
 * so it is re-armed before every wait for data: whatever arrives during
 * the wait is acknowledged at once. */
static void quickack(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

/* BIO over a non-blocking socket: the waiting happens in our loops, where
 * the deadline is known. */
static int bio_send(void *arg, const unsigned char *buf, size_t len)
{
    struct tm_tls *t = arg;
    ssize_t n;

    do
        n = send(t->fd, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_CONN_RESET;
}

static int bio_recv(void *arg, unsigned char *buf, size_t len)
{
    struct tm_tls *t = arg;
    ssize_t n;

    if (len > INT_MAX)
        len = INT_MAX;
    if (t->rx_len > t->rx_pos) {
        size_t k = t->rx_len - t->rx_pos < len ? t->rx_len - t->rx_pos : len;
        memcpy(buf, t->rx + t->rx_pos, k);
        t->rx_pos += k;
        return (int)k;
    }
    t->rx_pos = t->rx_len = 0;
    /* Right after a command was sent its reply cannot have arrived: wait
     * first instead of a recv that would return EAGAIN. */
    if (t->sent) {
        t->sent = 0;
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    /* A large request (a big record's body) goes straight to mbedTLS's
     * buffer; a small one fills the read-ahead with what has arrived. */
    do
        n = len >= sizeof t->rx ? recv(t->fd, buf, len, 0) : recv(t->fd, t->rx, sizeof t->rx, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0 && len < sizeof t->rx) {
        t->rx_len = (size_t)n;
        return bio_recv(arg, buf, len);
    }
    if (n >= 0)
        return (int)n; /* 0: EOF, which mbedTLS reports as CONN_EOF */
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return MBEDTLS_ERR_NET_CONN_RESET;
}

/* Waits for the socket as mbedTLS asked.  TM_OK or TM_ETIMEOUT/TM_EIO. */
static int tls_wait(struct tm_tls *t, int ret, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { t->fd, ret == MBEDTLS_ERR_SSL_WANT_WRITE ? POLLOUT : POLLIN, 0 };
        int64_t left = deadline == INT64_MAX ? -1 : deadline - tm_now_ms();
        int n;

        if (deadline != INT64_MAX && left <= 0)
            return TM_ETIMEOUT;
        if (p.events == POLLIN)
            quickack(t->fd);
        n = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
        if (n > 0)
            return TM_OK;
        if (n == 0)
            return TM_ETIMEOUT;
        if (errno != EINTR)
            return TM_EIO;
    }
}

static int is_want(int ret)
{
    return ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE;
}

/* Offers the cached session for t->key, if any and fresh. */
static void cache_offer(struct tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    int64_t now = tm_now_ms();
    size_t i;

    t->offered = 0;
    if (!t->key[0])
        return;
    mbedtls_ssl_session_init(&sess);
    pthread_mutex_lock(&cfg->cache_lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        tm_tls_cached *c = &cfg->cache[i];
        if (!c->data || strcmp(c->key, t->key) != 0)
            continue;
        if (now - c->stored > TM_TLS_CACHE_TTL_MS) {
            tm_free(c->data);
            c->data = NULL;
            break;
        }
        if (mbedtls_ssl_session_load(&sess, c->data, c->len) == 0)
            t->offered = mbedtls_ssl_set_session(&t->ssl, &sess) == 0;
        break;
    }
    pthread_mutex_unlock(&cfg->cache_lock);
    mbedtls_ssl_session_free(&sess);
}

void tm_tls_cache_drop(struct tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    size_t i;

    if (!t->key[0])
        return;
    pthread_mutex_lock(&cfg->cache_lock);
    for (i = 0; i < TM_TLS_CACHE_SIZE; i++) {
        if (cfg->cache[i].data && strcmp(cfg->cache[i].key, t->key) == 0) {
            tm_free(cfg->cache[i].data);
            cfg->cache[i].data = NULL;
        }
    }
    pthread_mutex_unlock(&cfg->cache_lock);
    t->saved = 0;
}

static void cache_save(struct tm_tls *t)
{
    struct tm_tls_config *cfg = t->cfg;
    mbedtls_ssl_session sess;
    unsigned char *buf = NULL;
    size_t len = 0, i, slot = 0;
    int64_t oldest = INT64_MAX;

    if (!t->key[0] || t->saved)
        return;
    mbedtls_ssl_session_init(&sess);
    if (mbedtls_ssl_get_session(&t->ssl, &sess) == 0 &&
        mbedtls_ssl_session_save(&sess, NULL, 0, &len) == MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL &&
        len > 0 && (buf = tm_calloc(1, len)) != NULL &&
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
        tm_free(cfg->cache[slot].data);
        tm_strlcpy(cfg->cache[slot].key, t->key, sizeof cfg->cache[slot].key);
        cfg->cache[slot].data = buf;
        cfg->cache[slot].len = len;
        cfg->cache[slot].stored = tm_now_ms();
        pthread_mutex_unlock(&cfg->cache_lock);
        buf = NULL;
        t->saved = 1;
    }
    tm_free(buf);
    mbedtls_ssl_session_free(&sess);
}

void tm_tls_cache_save(struct tm_tls *t)
{
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    /* TLS 1.3: the tickets come later; saved at shutdown instead. */
    if (mbedtls_ssl_get_version_number(&t->ssl) == MBEDTLS_SSL_VERSION_TLS1_3)
        return;
#endif
    cache_save(t);
}

int tm_tls_resumed(const struct tm_tls *t)
{
    return t->offered;
}

int tm_tls_handshake(struct tm_tls *t, int fd, const char *hostname, const char *cache_key,
                     int64_t deadline, char *err, size_t errlen)
{
    int ret;

    err[0] = '\0';
    t->flags = (uint32_t)-1;
    if (!t->ready) {
        ret = mbedtls_ssl_setup(&t->ssl, &t->cfg->conf);
        if (ret != 0) {
            describe(ret, err, errlen);
            return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
        }
        t->ready = 1;
    } else if (t->used) {
        ret = mbedtls_ssl_session_reset(&t->ssl);
        if (ret != 0) {
            describe(ret, err, errlen);
            return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
        }
    }
    t->used = 1;
    t->fd = fd;
    rx_reset(t);
    /* SNI and the name the certificate must match: the MX host name. */
    ret = mbedtls_ssl_set_hostname(&t->ssl, hostname);
    if (ret != 0) {
        describe(ret, err, errlen);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? TM_ENOMEM : TM_ETLS;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    t->saved = 0;
    tm_strlcpy(t->key, cache_key ? cache_key : "", sizeof t->key);
    cache_offer(t);

    while ((ret = mbedtls_ssl_handshake(&t->ssl)) != 0) {
        if (is_want(ret)) {
            int rc = tls_wait(t, ret, deadline);
            if (rc != TM_OK) {
                tm_strlcpy(err, rc == TM_ETIMEOUT ? "TLS handshake timed out" : "poll failed",
                           errlen);
                return rc;
            }
            continue;
        }
        describe(ret, err, errlen);
        tm_tls_cache_drop(t); /* a failed handshake forgets the session */
        if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
            return TM_ENOMEM;
        return TM_ETLS;
    }
    t->flags = mbedtls_ssl_get_verify_result(&t->ssl);
    return TM_OK;
}

int tm_tls_verified(const struct tm_tls *t)
{
    return t->flags == 0;
}

void tm_tls_verify_error(const struct tm_tls *t, char *buf, size_t size)
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

const char *tm_tls_version(const struct tm_tls *t)
{
    return mbedtls_ssl_get_version(&t->ssl);
}

const char *tm_tls_cipher(const struct tm_tls *t)
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

long tm_tls_read(struct tm_tls *t, void *buf, size_t size, int64_t deadline)
{
    for (;;) {
        int ret = mbedtls_ssl_read(&t->ssl, buf, size);
        if (ret > 0)
            return ret;
        if (ret == 0)
            return TM_ECLOSED;
        if (is_want(ret)) {
            int rc = tls_wait(t, ret, deadline);
            if (rc != TM_OK)
                return rc;
            continue;
        }
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue; /* TLS 1.3 tickets arrive after the handshake */
#endif
        return map_io_error(ret);
    }
}

int tm_tls_write(struct tm_tls *t, const void *buf, size_t len, int64_t deadline)
{
    const unsigned char *p = buf;

    while (len > 0) {
        int ret = mbedtls_ssl_write(&t->ssl, p, len);
        if (ret > 0) {
            p += ret;
            len -= (size_t)ret;
            t->sent = 1;
            continue;
        }
        if (is_want(ret)) {
            int rc = tls_wait(t, ret, deadline);
            if (rc != TM_OK)
                return rc;
            continue;
        }
#if defined(MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue;
#endif
        return map_io_error(ret);
    }
    return TM_OK;
}

int tm_tls_random(struct tm_tls_config *cfg, void *buf, size_t len)
{
    return mbedtls_ctr_drbg_random(&cfg->drbg, buf, len) == 0 ? TM_OK : TM_EIO;
}

size_t tm_tls_pending(const struct tm_tls *t)
{
    return mbedtls_ssl_get_bytes_avail(&t->ssl);
}

void tm_tls_shutdown(struct tm_tls *t)
{
#if defined(MBEDTLS_SSL_PROTO_TLS1_3)
    /* TLS 1.3 tickets arrive after the handshake: keep the latest. */
    if (t->fd >= 0 && t->key[0] && !t->saved &&
        mbedtls_ssl_get_version_number(&t->ssl) == MBEDTLS_SSL_VERSION_TLS1_3)
        cache_save(t);
#endif
    if (t->fd >= 0)
        (void)mbedtls_ssl_close_notify(&t->ssl); /* one try; never wait */
    t->fd = -1;
    rx_reset(t);
}
