/*
 * sts_fetch.c - the MTA-STS policy fetch (RFC 8461 3.3): HTTPS GET of
 * https://mta-sts.<domain>/.well-known/mta-sts.txt over the library's own
 * transports, with a certificate that must verify for mta-sts.<domain>
 * (PKIX, whatever any delivery policy says), status 200 only, no
 * redirects, text/plain, a size cap and one deadline for the whole fetch.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define TM_STS_FETCH_BUF (TM_HTTP_HEAD_MAX + TM_STS_BODY_MAX + 16384)

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
        snprintf(why, whylen, "connect to %s failed: %s", host, tm_strerror(rc));
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
            snprintf(why, whylen, "sending the request to %s failed: %s", host, tm_strerror(rc));
    }
    while (rc == TM_OK && !done) {
        long got = len < TM_STS_FETCH_BUF ? tr->ops->read(tr, buf + len, TM_STS_FETCH_BUF - len,
                                                         deadline)
                                          : TM_EPROTOCOL;
        int eof = got == TM_ECLOSED;

        if (got < 0 && !eof) {
            rc = (int)got;
            snprintf(why, whylen, "reading the policy from %s failed: %s", host,
                     tm_strerror(rc));
            break;
        }
        if (got > 0)
            len += (size_t)got;
        n = tm__http_parse_response(buf, len, eof, body, TM_STS_BODY_MAX, &r);
        if (n < 0) {
            rc = TM_EPROTOCOL;
            snprintf(why, whylen, "the HTTP response of %s is malformed, too large or cut", host);
        } else if (n == 1) {
            done = 1;
        } else if (eof) {
            rc = TM_EPROTOCOL;
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

int tm__sts_resolve(tm_context *ctx, const char *domain, int64_t deadline, tm_sts_result *out)
{
    char id[TM_STS_ID_MAX], why[TM_TEXT_MAX];
    const tm_sts_entry *hit;
    tm_sts_entry fresh, cached;
    int have_cached = 0, several = 0, txt, rc;
    int64_t now = tm__now_unix();

    memset(out, 0, sizeof *out);
    if (!ctx->sts_on) {
        out->state = TM_STS_R_OFF;
        return TM_OK;
    }
    txt = tm__dns_sts(ctx, domain, deadline, id, &several);

    pthread_mutex_lock(&ctx->sts_lock);
    hit = tm__sts_cache_get(&ctx->sts, domain, now);
    if (hit) {
        cached = *hit;
        have_cached = 1;
    }
    pthread_mutex_unlock(&ctx->sts_lock);

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
        if (have_cached) {
            out->state = TM_STS_R_POLICY;
            out->from_cache = 1;
            out->entry = cached;
        } else {
            out->state = TM_STS_R_NONE;
            snprintf(out->why, sizeof out->why, "%s",
                     txt < 0 ? "_mta-sts TXT lookup failed"
                     : several ? "several MTA-STS TXT records" : "no MTA-STS TXT record");
        }
        return TM_OK;
    }
    /* A new id, or nothing cached: fetch. */
    memset(&fresh, 0, sizeof fresh);
    rc = tm__sts_fetch(ctx, domain, ctx->sts_https_address[0] ? ctx->sts_https_address : NULL,
                       ctx->sts_https_port, deadline, &fresh.policy, why, sizeof why);
    if (rc == TM_ENOMEM)
        return rc;
    if (rc != TM_OK) {
        /* The fetch failed: a cached policy (even under an older id)
         * still holds; none: no policy, and the status says why. */
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
    pthread_mutex_lock(&ctx->sts_lock);
    rc = tm__sts_cache_put(&ctx->sts, &fresh);
    pthread_mutex_unlock(&ctx->sts_lock);
    if (rc != TM_OK)
        return rc;
    out->state = TM_STS_R_POLICY;
    out->entry = fresh;
    return TM_OK;
}
