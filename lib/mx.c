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
 */
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
    n = tm__dns_mx(ctx, domain, r->mx, (int)ctx->max_mx, deadline, why, whylen, enhanced);
    if (n < 0)
        return n;
    r->nmx = n;
    return TM_OK;
}

const tm_addr *tm__route_current(tm_route *r, const tm_context *ctx, int64_t deadline, int *rc)
{
    *rc = TM_OK;
    while (r->mx_i < r->nmx) {
        if (!r->resolved) {
            int n = tm__dns_host(ctx, r->mx[r->mx_i].host, r->port, r->addr,
                                 (int)ctx->max_addresses, deadline);
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
