/*
 * mx.c - the walk over a domain's MX hosts and their addresses, and the
 * rules for moving on.
 *
 * Hosts come in preference order (equal preferences shuffled by dns.c);
 * each host's addresses are resolved when the walk reaches it.  A failure
 * of one connection (refused, timed out, a 4xx greeting) moves to the next
 * address of the same host; a host that as a whole will not serve (421, a
 * 5xx greeting, TLS the policy requires and the host cannot give) is left
 * for the next host.
 *
 * With DANE on (RFC 7672 2.2), a host reached is also looked up for TLSA
 * records when its name came from a DNSSEC-secure MX RRset (or is the
 * domain itself on an implicit MX, or the explicit host) and its address
 * records are secure: at _port._tcp.<name at the end of its CNAME chain>,
 * then, when that has none, at _port._tcp.<name>.  A lookup that fails
 * validation leaves the host unused.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int tm__route_init(tm_route *r, const tm_context *ctx, const char *domain, const char *host,
                   unsigned int port, int64_t deadline, char *why, size_t whylen,
                   char enhanced[TM_ENHANCED_MAX])
{
    int n;

    memset(r, 0, sizeof *r);
    r->port = port;
    why[0] = '\0';
    enhanced[0] = '\0';
    if (host) {
        r->explicit_host = 1;
        tm__strlcpy(r->mx[0].host, host, sizeof r->mx[0].host);
        r->nmx = 1;
        return TM_OK;
    }
    n = tm__dns_mx(ctx, domain, r->mx, (int)ctx->max_mx, deadline, why, whylen, enhanced,
                   &r->mx_secure);
    if (n < 0)
        return n;
    r->nmx = n;
    return TM_OK;
}

/* The TLSA records of the current host, whose addresses are secure:
 * sets r->dane, r->tlsa, r->tlsa_base. */
static void find_tlsa(tm_route *r, const tm_context *ctx, const char *host, const char *target,
                      int64_t deadline)
{
    const char *names[2];
    int i, n, unusable = 0, secure = 0, nnames = 0;

    /* RFC 7672 2.2.2: the end of a chain signed end to end first, then
     * the MX name; the first secure TLSA RRset decides, a failed lookup
     * stops. */
    if (target)
        names[nnames++] = target;
    names[nnames++] = host;
    for (i = 0; i < nnames; i++) {
        n = tm__dns_tlsa(ctx, names[i], r->port, r->tlsa, TM_TLSA_MAX, deadline, &unusable,
                         &secure);
        if (n < 0) {
            r->dane = TM_HD_BOGUS;
            snprintf(r->why, sizeof r->why,
                     "TLSA lookup of _%u._tcp.%.200s failed (DNSSEC validation failure, "
                     "SERVFAIL or timeout): host %.200s not used",
                     r->port, names[i], host);
            return;
        }
        if (!secure)
            continue; /* an unsigned name says nothing: the next one */
        if (n > 0 || unusable > 0) {
            r->ntlsa = n;
            r->dane = n > 0 ? TM_HD_USABLE : TM_HD_UNUSABLE;
            tm__strlcpy(r->tlsa_base, names[i], sizeof r->tlsa_base);
            return;
        }
        r->dane = TM_HD_NO_TLSA; /* a secure denial, unless the next has some */
    }
    if (r->dane != TM_HD_NO_TLSA)
        r->dane = TM_HD_INSECURE;
}

/* Resolves the current host: its addresses and what DANE asks of it. */
static int resolve(tm_route *r, const tm_context *ctx, int64_t deadline)
{
    const char *host = r->mx[r->mx_i].host;
    char target[TM_HOST_MAX];
    int n, secure = 0;

    r->dane = TM_HD_OFF;
    r->ntlsa = 0;
    r->tlsa_base[0] = '\0';
    n = tm__dns_host(ctx, host, r->port, r->addr, (int)ctx->max_addresses, deadline, &secure,
                     target, sizeof target);
    if (n <= 0 || !ctx->dane)
        return n;
    /* The explicit host, and the domain on an implicit MX, stand for
     * themselves: their address records are what must be secure. */
    if (r->explicit_host)
        r->mx_secure = secure != 0; /* indeterminate is not unsigned */
    if (!r->mx_secure) {
        r->dane = TM_HD_INSECURE;
    } else if (secure < 0) {
        /* Secure MX, address lookup failed: indeterminate, not unsigned. */
        r->dane = TM_HD_BOGUS;
        snprintf(r->why, sizeof r->why,
                 "address lookup of %.200s failed (DNSSEC validation failure, SERVFAIL or "
                 "timeout): host not used", host);
    } else if (secure > 0) {
        find_tlsa(r, ctx, host, tm__domain_equal(target, host) ? NULL : target, deadline);
    } else if (!tm__domain_equal(target, host) && tm__dns_cname_secure(ctx, host, deadline)) {
        /* A signed CNAME into an unsigned zone: the MX name is still
         * signed, and its TLSA records count (RFC 7672 2.2.2). */
        find_tlsa(r, ctx, host, NULL, deadline);
    } else {
        r->dane = TM_HD_INSECURE;
    }
    if (r->dane == TM_HD_BOGUS) {
        r->skipped_bogus = 1;
        tm__strlcpy(r->why_host, host, sizeof r->why_host);
        return TM_EDNS;
    }
    return n;
}

const tm_addr *tm__route_current(tm_route *r, const tm_context *ctx, int64_t deadline, int *rc)
{
    *rc = TM_OK;
    while (r->mx_i < r->nmx) {
        if (!r->resolved) {
            int n = resolve(r, ctx, deadline);
            r->resolved = 1;
            r->addr_i = 0;
            r->naddr = n > 0 ? n : 0;
            if (n <= 0) {
                *rc = n < 0 ? n : TM_ECONNECT;
                if (n == TM_ENOMEM)
                    return NULL;
            }
        }
        if (r->addr_i < r->naddr) {
            tm__net_ntop((const struct sockaddr *)&r->addr[r->addr_i].sa, r->address,
                         sizeof r->address);
            return &r->addr[r->addr_i];
        }
        tm__route_next_host(r);
    }
    return NULL;
}

const char *tm__route_host(const tm_route *r)
{
    return r->mx_i < r->nmx ? r->mx[r->mx_i].host : (r->nmx ? r->mx[r->nmx - 1].host : "");
}

void tm__route_next_address(tm_route *r)
{
    if (++r->addr_i >= r->naddr && r->resolved)
        tm__route_next_host(r);
}

void tm__route_next_host(tm_route *r)
{
    if (r->mx_i < r->nmx)
        r->mx_i++;
    r->resolved = 0;
    r->naddr = 0;
    r->addr_i = 0;
}

int tm__route_more_hosts(const tm_route *r)
{
    return r->mx_i + 1 < r->nmx;
}
