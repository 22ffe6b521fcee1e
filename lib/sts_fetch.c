/*
 * sts_fetch.c - the MTA-STS policy of a domain (RFC 8461): the fetch
 * (3.3: HTTPS GET of https://mta-sts.<domain>/.well-known/mta-sts.txt over
 * the library's own transports, with a certificate that must verify for
 * mta-sts.<domain> (PKIX, whatever any delivery policy says), status 200
 * only, no redirects, text/plain, a size cap and one deadline for the
 * whole fetch) or the host's fetcher; the context's cache and the host's
 * store (5.1); the public cache file functions.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TM_STS_FETCH_BUF (TM_HTTP_HEAD_MAX + TM_STS_BODY_MAX + 16384)
#define TM_STS_LINE_MAX (TM_HOST_MAX * (TM_STS_MX_MAX + 2) + 200) /* one cache entry */

/* A transport failure in words of its own (tm_strerror speaks of SMTP). */
static const char *io_words(int rc)
{
    switch (rc) {
    case TM_ECONNECT:
        return "connection refused or unreachable";
    case TM_ETIMEOUT:
        return "timed out";
    case TM_ECLOSED:
        return "connection closed";
    case TM_ETLS:
        return "TLS error";
    default:
        return tm_strerror(rc);
    }
}

/* One fetch over one address.  TM_OK with *p set, or an error with why. */
static int fetch_one(const tm_context *ctx, const char *host, const tm_addr *a, int64_t deadline,
                     char *buf, char *body, tm_sts_policy *p, char *why, size_t whylen)
{
    char req[TM_HOST_MAX + 160], err[TM_TEXT_MAX];
    tm_transport *tr = NULL;
    tm_http_response r;
    tm_tls *tls = NULL;
    tm_sock sock;
    size_t len = 0;
    int rc, n, done = 0;

    tm__sock_init(&sock);
    rc = tm__sock_connect(&sock, (const struct sockaddr *)&a->sa, a->len, deadline);
    if (rc != TM_OK) {
        snprintf(why, whylen, "connect to %s failed: %s", host, io_words(rc));
        return rc;
    }
    rc = tm__tls_new(&tls, ctx->tls);
    if (rc == TM_OK) {
        tm__tls_set_dane(tls, NULL, 0, NULL, 0);
        rc = tm__tls_start(tls, &sock.base, host, NULL, deadline, &tr, err, sizeof err);
        if (rc != TM_OK)
            snprintf(why, whylen, "TLS with %s failed: %s", host, err);
    }
    if (rc == TM_OK && !tm__tls_verified(tls)) {
        /* RFC 8461 3.3: the certificate must be valid for the policy host. */
        tm__tls_verify_error(tls, err, sizeof err);
        snprintf(why, whylen, "%s: %s", host, err);
        rc = TM_ETLS;
    }
    if (rc == TM_OK) {
        n = snprintf(req, sizeof req,
                     "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: %s\r\n"
                     "User-Agent: libtlsmail/%s\r\nAccept: text/plain\r\n"
                     "Connection: close\r\n\r\n",
                     host, TM_VERSION_STRING);
        rc = tr->ops->write(tr, req, (size_t)n, deadline);
        if (rc != TM_OK)
            snprintf(why, whylen, "sending the request to %s failed: %s", host, io_words(rc));
    }
    while (rc == TM_OK && !done) {
        long got = len < TM_STS_FETCH_BUF ? tr->ops->read(tr, buf + len, TM_STS_FETCH_BUF - len,
                                                         deadline)
                                          : TM_EPROTOCOL;
        int eof = got == TM_ECLOSED;

        if (got < 0 && !eof) {
            rc = (int)got;
            snprintf(why, whylen, "reading the policy from %s failed: %s", host, io_words(rc));
            break;
        }
        if (got > 0)
            len += (size_t)got;
        /* A body that ends with the connection ends only with a TLS
         * close_notify: a bare TCP close may be an attacker cutting it. */
        n = tm__http_parse_response(buf, len, eof && tm__tls_close_notify(tls), body,
                                    TM_STS_BODY_MAX, &r);
        if (n < 0) {
            rc = TM_EPROTOCOL;
            snprintf(why, whylen, "the HTTP response of %s is malformed or too large", host);
        } else if (n == 1) {
            done = 1;
        } else if (eof) {
            rc = TM_EPROTOCOL;
            snprintf(why, whylen, "the HTTP response of %s was cut short%s", host,
                     tm__tls_close_notify(tls) ? "" : " (the connection closed without "
                                                      "a TLS close_notify)");
        }
    }
    if (rc == TM_OK) {
        if (r.status != 200) {
            rc = TM_ENOTFOUND;
            snprintf(why, whylen, "%s answered HTTP %d (only 200 counts, no redirects)", host,
                     r.status);
        } else if (!r.text_plain) {
            rc = TM_ENOTFOUND;
            snprintf(why, whylen, "%s served the policy without Content-Type text/plain", host);
        } else if (tm__sts_parse_policy(body, r.body_len, p) != TM_OK) {
            rc = TM_ENOTFOUND;
            snprintf(why, whylen, "the policy of %s does not parse (RFC 8461 3.2)", host);
        }
    }
    if (tr)
        tr->ops->close(tr);
    sock.base.ops->close(&sock.base);
    tm__tls_free(tls);
    return rc;
}

int tm__sts_fetch(const tm_context *ctx, const char *domain, const char *address,
                  unsigned int port, int64_t deadline, tm_sts_policy *p, char *why,
                  size_t whylen)
{
    char host[TM_HOST_MAX];
    tm_addr addrs[TM_ADDR_MAX];
    char *buf;
    int n, i, secure = 0, rc = TM_ECONNECT;

    memset(p, 0, sizeof *p);
    why[0] = '\0';
    if (snprintf(host, sizeof host, "mta-sts.%s", domain) >= (int)sizeof host)
        return TM_EINVAL;
    if (!port)
        port = 443;
    if (address) {
        /* Tests and private deployments: a fixed address, the name still
         * the one the certificate must carry. */
        memset(&addrs[0], 0, sizeof addrs[0]);
        if (tm__net_parse_addr(address, port, &addrs[0].sa, &addrs[0].len) != TM_OK)
            return TM_EINVAL;
        n = 1;
    } else {
        n = tm__dns_host(ctx, host, port, addrs, TM_ADDR_MAX, deadline, &secure, NULL, 0);
        if (n <= 0) {
            snprintf(why, whylen, "%s has no usable address%s", host,
                     n < 0 ? " (lookup failed)" : "");
            return n < 0 ? n : TM_EDNS;
        }
    }
    buf = tm__calloc(1, TM_STS_FETCH_BUF + TM_STS_BODY_MAX);
    if (!buf)
        return TM_ENOMEM;
    for (i = 0; i < n; i++) {
        rc = fetch_one(ctx, host, &addrs[i], deadline, buf, buf + TM_STS_FETCH_BUF, p, why,
                       whylen);
        /* An answer (a policy, or a refusal by the server) ends the walk;
         * a connection that failed tries the next address. */
        if (rc == TM_OK || rc == TM_ENOTFOUND || rc == TM_ENOMEM || tm__now_ms() >= deadline)
            break;
    }
    tm__free(buf);
    return rc;
}

/* ---- the policy of a domain: TXT, cache, fetch (RFC 8461 3, 5.1) ---------- */

/* The policy through the host's fetcher, or the built-in one. */
static int fetch_policy(const tm_context *ctx, const char *domain, int64_t deadline,
                        tm_sts_policy *p, char *why, size_t whylen)
{
    char url[TM_HOST_MAX + 64], *body;
    size_t len = 0;
    int rc;

    if (!ctx->sts_fetch)
        return tm__sts_fetch(ctx, domain,
                             ctx->sts_https_address[0] ? ctx->sts_https_address : NULL,
                             ctx->sts_https_port, deadline, p, why, whylen);
    memset(p, 0, sizeof *p);
    snprintf(url, sizeof url, "https://mta-sts.%s/.well-known/mta-sts.txt", domain);
    body = tm__calloc(1, TM_STS_BODY_MAX + 1);
    if (!body)
        return TM_ENOMEM;
    rc = ctx->sts_fetch(ctx->sts_fetch_arg, domain, url, body, TM_STS_BODY_MAX, &len);
    if (rc != TM_OK) {
        snprintf(why, whylen, "the host's fetcher got no policy from %s (%d)", url, rc);
        rc = TM_ENOTFOUND;
    } else if (len > TM_STS_BODY_MAX) {
        snprintf(why, whylen, "the host's fetcher returned %zu bytes for %s (at most %d)", len,
                 url, TM_STS_BODY_MAX);
        rc = TM_ENOTFOUND;
    } else if (tm__sts_parse_policy(body, len, p) != TM_OK) {
        snprintf(why, whylen, "the policy of mta-sts.%s does not parse (RFC 8461 3.2)", domain);
        rc = TM_ENOTFOUND;
    }
    tm__free(body);
    return rc;
}

/* One entry as a line of the cache file format, without the newline. */
static void entry_line(const tm_sts_entry *e, char *buf, size_t size)
{
    tm_sts_cache one;
    size_t n;

    memset(&one, 0, sizeof one);
    one.e = (tm_sts_entry *)e;
    one.n = one.cap = one.max = 1;
    tm__sts_cache_format(&one, buf, size);
    n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[n - 1] = '\0';
}

/* The host's stored entry for domain, when it parses and holds at now. */
static int host_lookup(tm_context *ctx, const char *domain, int64_t now, tm_sts_entry *out)
{
    tm_sts_cache tmp;
    char *line;
    int found = 0;

    line = tm__calloc(1, TM_STS_LINE_MAX);
    if (!line)
        return TM_ENOMEM;
    tm__sts_cache_init(&tmp, 1);
    if (ctx->sts_lookup(ctx->sts_cache_arg, domain, line, TM_STS_LINE_MAX) == TM_OK) {
        line[TM_STS_LINE_MAX - 1] = '\0';
        if (tm__sts_cache_parse(line, strlen(line), &tmp, NULL) == TM_OK && tmp.n == 1 &&
            tm__domain_equal(tmp.e[0].domain, domain) && tmp.e[0].expires > now) {
            *out = tmp.e[0];
            out->used = now;
            found = 1;
        } else {
            tm__log(ctx, TM_LOG_WARNING, "MTA-STS: the stored policy of %s is ignored "
                                         "(malformed, another domain, or expired)", domain);
        }
    }
    tm__sts_cache_free(&tmp);
    tm__free(line);
    return found;
}

/* Puts an entry in the context's cache; store: hand it to the host too. */
static int cache_put(tm_context *ctx, const tm_sts_entry *e, int store)
{
    int rc;

    pthread_mutex_lock(&ctx->sts_lock);
    rc = tm__sts_cache_put(&ctx->sts, e);
    pthread_mutex_unlock(&ctx->sts_lock);
    if (rc == TM_OK && store && ctx->sts_store) {
        char *line = tm__calloc(1, TM_STS_LINE_MAX);
        if (!line)
            return TM_ENOMEM;
        entry_line(e, line, TM_STS_LINE_MAX);
        ctx->sts_store(ctx->sts_cache_arg, e->domain, line);
        tm__free(line);
    }
    return rc;
}

int tm__sts_resolve(tm_context *ctx, const char *name, int64_t deadline, tm_sts_result *out)
{
    char id[TM_STS_ID_MAX], why[TM_TEXT_MAX], domain[TM_HOST_MAX];
    const tm_sts_entry *hit;
    tm_sts_entry fresh, cached;
    int have_cached = 0, several = 0, txt, rc;
    int64_t now = tm__now_unix();
    size_t n;

    memset(out, 0, sizeof *out);
    if (!ctx->sts_on) {
        out->state = TM_STS_R_OFF;
        return TM_OK;
    }
    /* The policy domain, without a trailing dot. */
    tm__strlcpy(domain, name, sizeof domain);
    n = strlen(domain);
    if (n > 1 && domain[n - 1] == '.')
        domain[n - 1] = '\0';
    txt = tm__dns_sts(ctx, domain, deadline, id, &several);

    pthread_mutex_lock(&ctx->sts_lock);
    hit = tm__sts_cache_get(&ctx->sts, domain, now);
    if (hit) {
        cached = *hit;
        have_cached = 1;
    }
    pthread_mutex_unlock(&ctx->sts_lock);
    if (!have_cached && ctx->sts_lookup) {
        /* The host's own store, e.g. after a restart. */
        rc = host_lookup(ctx, domain, now, &cached);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            have_cached = 1;
            rc = cache_put(ctx, &cached, 0);
            if (rc != TM_OK)
                return rc;
        }
    }

    /* The TXT record says the cached policy is current: no fetch. */
    if (have_cached && txt == 1 && strcmp(cached.id, id) == 0) {
        out->state = TM_STS_R_POLICY;
        out->from_cache = 1;
        out->entry = cached;
        return TM_OK;
    }
    if (txt != 1) {
        /* No record, or the lookup failed (an attacker can do both): a
         * cached policy still holds until it expires. */
        snprintf(out->why, sizeof out->why, "%s",
                 txt < 0 ? "the _mta-sts TXT lookup failed"
                 : several ? "several MTA-STS TXT records (RFC 8461 3.1: none counts)"
                           : "no MTA-STS TXT record");
        if (have_cached) {
            out->state = TM_STS_R_POLICY;
            out->from_cache = 1;
            out->entry = cached;
        } else {
            out->state = TM_STS_R_NONE;
        }
        return TM_OK;
    }
    /* A new id, or nothing cached: fetch. */
    memset(&fresh, 0, sizeof fresh);
    rc = fetch_policy(ctx, domain, deadline, &fresh.policy, why, sizeof why);
    if (rc == TM_ENOMEM)
        return rc;
    if (rc != TM_OK) {
        /* The fetch failed: a cached policy (even under an older id)
         * still holds; none: no policy, and the status says why. */
        tm__log(ctx, TM_LOG_WARNING, "MTA-STS policy of %s not fetched: %s%s", domain, why,
                have_cached ? " (the cached policy holds)" : "");
        if (have_cached) {
            out->state = TM_STS_R_POLICY;
            out->from_cache = 1;
            out->entry = cached;
        } else {
            out->state = TM_STS_R_FETCH_FAILED;
        }
        tm__strlcpy(out->why, why, sizeof out->why);
        return TM_OK;
    }
    tm__strlcpy(fresh.domain, domain, sizeof fresh.domain);
    tm__strlcpy(fresh.id, id, sizeof fresh.id);
    fresh.fetched = fresh.used = now;
    fresh.expires = now + (int64_t)fresh.policy.max_age;
    tm__log(ctx, TM_LOG_INFO, "MTA-STS policy of %s fetched: id %s, max_age %lu", domain, id,
            fresh.policy.max_age);
    rc = cache_put(ctx, &fresh, 1);
    if (rc != TM_OK)
        return rc;
    out->state = TM_STS_R_POLICY;
    out->entry = fresh;
    return TM_OK;
}

/* ---- the cache file (public) ------------------------------------------------------ */

TM_EXTERN int tm_sts_cache_list(tm_context *ctx, char *buf, size_t size)
{
    int n;

    if (!ctx || (!buf && size))
        return TM_EINVAL;
    pthread_mutex_lock(&ctx->sts_lock);
    n = tm__sts_cache_format(&ctx->sts, buf, size);
    pthread_mutex_unlock(&ctx->sts_lock);
    return n;
}

TM_EXTERN int tm_sts_cache_load(tm_context *ctx, const char *path, int *error_line)
{
    tm_sts_cache tab, merged;
    int64_t now = tm__now_unix();
    char *text = NULL;
    size_t len = 0, i;
    int rc;

    if (error_line)
        *error_line = 0;
    if (!ctx || !path)
        return TM_EINVAL;
    rc = tm__file_read(path, 64u << 20, &text, &len);
    if (rc != TM_OK)
        return rc;
    /* All of it parses, or nothing changes. */
    tm__sts_cache_init(&tab, (size_t)-1);
    rc = tm__sts_cache_parse(text ? text : "", len, &tab, error_line);
    tm__free(text);
    if (rc != TM_OK)
        return rc;
    /* The cache and the file merged into a new table that replaces the
     * cache only when complete: out of memory changes nothing either. */
    pthread_mutex_lock(&ctx->sts_lock);
    tm__sts_cache_init(&merged, ctx->sts.max);
    for (i = 0; i < ctx->sts.n && rc == TM_OK; i++)
        rc = tm__sts_cache_put(&merged, &ctx->sts.e[i]);
    for (i = 0; i < tab.n && rc == TM_OK; i++)
        if (tab.e[i].expires > now)
            rc = tm__sts_cache_put(&merged, &tab.e[i]);
    if (rc == TM_OK) {
        tm__sts_cache_free(&ctx->sts);
        ctx->sts = merged;
    } else {
        tm__sts_cache_free(&merged);
    }
    pthread_mutex_unlock(&ctx->sts_lock);
    tm__sts_cache_free(&tab);
    return rc;
}

TM_EXTERN int tm_sts_cache_save(tm_context *ctx, const char *path)
{
    char *text = NULL;
    int need, rc;

    if (!ctx || !path)
        return TM_EINVAL;
    for (;;) {
        need = tm_sts_cache_list(ctx, NULL, 0);
        tm__free(text);
        text = tm__calloc(1, (size_t)need + 4096);
        if (!text)
            return TM_ENOMEM;
        if (tm_sts_cache_list(ctx, text, (size_t)need + 4096) < need + 4096)
            break;
    }
    rc = tm__file_write_atomic(path,
                               "# libtlsmail MTA-STS policy cache: policy DOMAIN ID FETCHED "
                               "EXPIRES USED MODE MAX_AGE MX,...\n",
                               text);
    tm__free(text);
    return rc;
}
