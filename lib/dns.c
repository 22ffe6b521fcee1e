/*
 * dns.c - MX and address resolution with libresolv.
 *
 * Each lookup uses its own resolver state (res_ninit), never the global
 * _res, so lookups on several threads do not share anything.  Answers are
 * parsed with the ns_* functions, which bound every length and pointer.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define TM_DNS_ANSWER_MAX 8192 /* DNSSEC answers carry signatures */

static int usable_v4(const unsigned char *a)
{
    uint32_t v = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
    if (v == 0 || v == 0xffffffffu)
        return 0;
    if ((a[0] & 0xf0) == 0xe0) /* multicast */
        return 0;
    return 1;
}

static int usable_v6(const unsigned char *a)
{
    static const unsigned char zero[16];
    if (memcmp(a, zero, 16) == 0)
        return 0;
    if (a[0] == 0xff) /* multicast */
        return 0;
    return 1;
}

static void set_addr(tm_addr *out, int family, const unsigned char *raw, unsigned int port)
{
    memset(out, 0, sizeof *out);
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&out->sa;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        memcpy(&s4->sin_addr, raw, 4);
        out->len = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&out->sa;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        memcpy(&s6->sin6_addr, raw, 16);
        out->len = sizeof *s6;
    }
}

int tm__dns_parse_mx(const unsigned char *msg, int len, tm_mx *out, int max, int *null_mx)
{
    ns_msg h;
    int i, n = 0, count;

    *null_mx = 0;
    if (!msg || len <= 0 || ns_initparse(msg, len, &h) < 0)
        return TM_EDNS;
    count = ns_msg_count(h, ns_s_an);
    for (i = 0; i < count; i++) {
        char name[NS_MAXDNAME];
        const unsigned char *rd;
        ns_rr rr;

        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            return TM_EDNS;
        if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in)
            continue;
        rd = ns_rr_rdata(rr);
        if (ns_rr_rdlen(rr) < 3)
            return TM_EDNS;
        if (ns_name_uncompress(ns_msg_base(h), ns_msg_end(h), rd + 2, name, sizeof name) < 0)
            return TM_EDNS;
        if (name[0] == '\0' || strcmp(name, ".") == 0) {
            *null_mx = 1;
            continue;
        }
        if (strlen(name) >= TM_HOST_MAX || tm__name_check(name) != TM_OK)
            continue;
        if (n < max) {
            tm__strlcpy(out[n].host, name, sizeof out[n].host);
            out[n].pref = ((unsigned int)rd[0] << 8) | rd[1];
            n++;
        }
    }
    return n;
}

int tm__dns_parse_addr(const unsigned char *msg, int len, int type, unsigned int port, tm_addr *out,
                      int max)
{
    ns_msg h;
    int i, n = 0, count;

    if (!msg || len <= 0 || ns_initparse(msg, len, &h) < 0)
        return TM_EDNS;
    count = ns_msg_count(h, ns_s_an);
    for (i = 0; i < count && n < max; i++) {
        ns_rr rr;

        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            return TM_EDNS;
        if ((int)ns_rr_type(rr) != type || ns_rr_class(rr) != ns_c_in)
            continue; /* CNAMEs on the way are followed by the server */
        if (type == ns_t_a && ns_rr_rdlen(rr) == 4 && usable_v4(ns_rr_rdata(rr)))
            set_addr(&out[n++], AF_INET, ns_rr_rdata(rr), port);
        else if (type == ns_t_aaaa && ns_rr_rdlen(rr) == 16 && usable_v6(ns_rr_rdata(rr)))
            set_addr(&out[n++], AF_INET6, ns_rr_rdata(rr), port);
        else if (ns_rr_rdlen(rr) != (type == ns_t_a ? 4 : 16))
            return TM_EDNS;
    }
    return n;
}

/* The name at the end of the CNAME chain the answer gives for `name`
 * (followed at most 8 links, in any order), into name itself. */
static int follow_cnames(ns_msg *h, char *name, size_t size)
{
    int count = ns_msg_count(*h, ns_s_an), links, i, moved;

    for (links = 0; links <= 8; links++) /* 8 links, then one more look */ {
        moved = 0;
        for (i = 0; i < count; i++) {
            char target[NS_MAXDNAME];
            ns_rr rr;

            if (ns_parserr(h, ns_s_an, i, &rr) < 0)
                return TM_EDNS;
            if (ns_rr_type(rr) != ns_t_cname || ns_rr_class(rr) != ns_c_in ||
                !tm__domain_equal(ns_rr_name(rr), name))
                continue;
            if (ns_name_uncompress(ns_msg_base(*h), ns_msg_end(*h), ns_rr_rdata(rr), target,
                                   sizeof target) < 0 ||
                strlen(target) >= size)
                return TM_EDNS;
            tm__strlcpy(name, target, size);
            moved = 1;
            break;
        }
        if (!moved)
            return TM_OK;
    }
    return TM_EDNS; /* a longer chain, or a loop */
}

int tm__dns_parse_tlsa(const unsigned char *msg, int len, tm_tlsa *out, int max, int *unusable,
                       int *ad)
{
    char name[NS_MAXDNAME];
    ns_msg h;
    ns_rr q;
    int i, n = 0, count;

    *unusable = 0;
    *ad = 0;
    if (!msg || len <= 0 || ns_initparse(msg, len, &h) < 0 || ns_msg_count(h, ns_s_qd) != 1 ||
        ns_parserr(&h, ns_s_qd, 0, &q) < 0)
        return TM_EDNS;
    *ad = ns_msg_getflag(h, ns_f_ad) != 0;
    tm__strlcpy(name, ns_rr_name(q), sizeof name);
    if (follow_cnames(&h, name, sizeof name) != TM_OK)
        return TM_EDNS;
    count = ns_msg_count(h, ns_s_an);
    for (i = 0; i < count; i++) {
        const unsigned char *rd;
        size_t rdlen, dlen;
        ns_rr rr;

        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            return TM_EDNS;
        if (ns_rr_type(rr) != ns_t_tlsa || ns_rr_class(rr) != ns_c_in ||
            !tm__domain_equal(ns_rr_name(rr), name))
            continue;
        rd = ns_rr_rdata(rr);
        rdlen = ns_rr_rdlen(rr);
        if (rdlen < 3)
            return TM_EDNS;
        dlen = rdlen - 3;
        if ((rd[0] != 2 && rd[0] != 3) || rd[1] > 1 || rd[2] > 2 || dlen == 0 ||
            (rd[2] == 1 && dlen != 32) || (rd[2] == 2 && dlen != 64)) {
            ++*unusable;
            continue;
        }
        if (n >= max)
            continue;
        out[n].usage = rd[0];
        out[n].selector = rd[1];
        out[n].mtype = rd[2];
        out[n].full = rd[2] == 0;
        if (rd[2] == 0) {
            if (tm__sha512(rd + 3, dlen, out[n].data) != TM_OK)
                return TM_EDNS;
            out[n].len = 64;
        } else {
            memcpy(out[n].data, rd + 3, dlen);
            out[n].len = (unsigned char)dlen;
        }
        n++;
    }
    return n;
}

int tm__dns_header(const unsigned char *msg, int len, int *rcode, int *ad)
{
    *rcode = 0;
    *ad = 0;
    if (!msg || len < NS_HFIXEDSZ)
        return TM_EDNS;
    *rcode = msg[3] & 0x0f;
    *ad = (msg[3] & 0x20) != 0;
    return TM_OK;
}

#define TM_STS_TXT_MAX 1024 /* longer TXT records are not MTA-STS ones */

int tm__dns_parse_sts(const unsigned char *msg, int len, char id[TM_STS_ID_MAX], int *several)
{
    char name[NS_MAXDNAME], text[TM_STS_TXT_MAX], found[TM_STS_TXT_MAX];
    size_t found_len = 0;
    ns_msg h;
    ns_rr q;
    int i, count, nsts = 0;

    id[0] = '\0';
    *several = 0;
    if (!msg || len <= 0 || ns_initparse(msg, len, &h) < 0 || ns_msg_count(h, ns_s_qd) != 1 ||
        ns_parserr(&h, ns_s_qd, 0, &q) < 0)
        return TM_EDNS;
    tm__strlcpy(name, ns_rr_name(q), sizeof name);
    if (follow_cnames(&h, name, sizeof name) != TM_OK)
        return TM_EDNS;
    count = ns_msg_count(h, ns_s_an);
    for (i = 0; i < count; i++) {
        const unsigned char *rd, *end;
        size_t tlen = 0;
        int too_long = 0;
        ns_rr rr;

        if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
            return TM_EDNS;
        if (ns_rr_type(rr) != ns_t_txt || ns_rr_class(rr) != ns_c_in ||
            !tm__domain_equal(ns_rr_name(rr), name))
            continue;
        /* character-strings: a length octet, then that many octets. */
        rd = ns_rr_rdata(rr);
        end = rd + ns_rr_rdlen(rr);
        while (rd < end) {
            size_t n = *rd++;
            if (n > (size_t)(end - rd))
                return TM_EDNS;
            if (tlen + n >= sizeof text)
                too_long = 1;
            else
                memcpy(text + tlen, rd, n);
            tlen += too_long ? 0 : n;
            rd += n;
        }
        if (tlen < 7 || memcmp(text, "v=STSv1", 7) != 0)
            continue; /* not an MTA-STS record: discarded */
        if (++nsts == 1 && !too_long) {
            memcpy(found, text, tlen);
            found_len = tlen;
        } else if (nsts == 1) {
            found_len = 0; /* too long to be valid */
        }
    }
    if (nsts > 1)
        *several = 1;
    if (nsts != 1 || found_len == 0 || tm__sts_parse_txt(found, found_len, id) != TM_OK)
        return 0;
    return 1;
}

/* A private resolver state pointed at the context's server, if any; with
 * DANE on, asking for DNSSEC (EDNS0 with the DO bit) and keeping the AD
 * bit of answers (glibc 2.31 and later clear it without RES_TRUSTAD). */
static int resolver_open(const tm_context *ctx, res_state rs, int64_t deadline)
{
    int64_t left;

    memset(rs, 0, sizeof *rs);
    if (res_ninit(rs) != 0)
        return TM_EDNS;
    if (ctx->have_dns_server) {
        if (ctx->dns_server.ss_family != AF_INET) {
            res_nclose(rs);
            return TM_EDNS; /* nsaddr_list holds IPv4 servers only */
        }
        memcpy(&rs->nsaddr_list[0], &ctx->dns_server, sizeof(struct sockaddr_in));
        rs->nscount = 1;
    }
    if (ctx->dane) {
        rs->options |= RES_USE_EDNS0 | RES_USE_DNSSEC;
#ifdef RES_TRUSTAD
        rs->options |= RES_TRUSTAD;
#endif
    }
    /* Bound the resolver's own retries by what is left of the deadline. */
    rs->retry = 2;
    rs->retrans = 2;
    left = deadline == INT64_MAX ? 10000 : deadline - tm__now_ms();
    if (left < 1000) {
        rs->retry = 1;
        rs->retrans = 1;
    } else if (left < 8000) {
        rs->retrans = (int)(left / 2000);
        if (rs->retrans < 1)
            rs->retrans = 1;
    }
    return TM_OK;
}

/* Queries name/type.  Returns the answer length, 0 for "no such record"
 * (NODATA), TM_ENODOMAIN, or TM_EDNS.  *ad (may be NULL): the answer's AD
 * bit, for an answer, a NODATA or an NXDOMAIN (0 for anything else). */
static int query(res_state rs, const char *name, int type, unsigned char *ans, int anslen, int *ad)
{
    int n, rcode, bit = 0;

    memset(ans, 0, NS_HFIXEDSZ); /* no answer leaves no AD bit behind */
    n = res_nquery(rs, name, ns_c_in, type, ans, anslen);
    if (n >= 0)
        n = n > anslen ? anslen : n;
    else if (rs->res_h_errno == HOST_NOT_FOUND)
        n = TM_ENODOMAIN;
    else if (rs->res_h_errno == NO_DATA)
        n = 0;
    else /* TRY_AGAIN (SERVFAIL, timeout), NO_RECOVERY */
        n = TM_EDNS;
    if (n != TM_EDNS)
        tm__dns_header(ans, anslen, &rcode, &bit);
    if (ad)
        *ad = bit;
    return n;
}

static int literal(const char *host, unsigned int port, tm_addr *out)
{
    unsigned char raw[16];
    char buf[TM_HOST_MAX];
    size_t len = strlen(host);

    /* [1.2.3.4] and [IPv6:...] address literals, and bare addresses. */
    if (host[0] == '[' && len > 2 && host[len - 1] == ']') {
        tm__strlcpyn(buf, sizeof buf, host + 1, len - 2);
        if (strncasecmp(buf, "IPv6:", 5) == 0)
            memmove(buf, buf + 5, strlen(buf + 5) + 1);
    } else {
        tm__strlcpy(buf, host, sizeof buf);
    }
    if (inet_pton(AF_INET, buf, raw) == 1) {
        set_addr(out, AF_INET, raw, port);
        return usable_v4(raw) ? 1 : 0;
    }
    if (inet_pton(AF_INET6, buf, raw) == 1) {
        set_addr(out, AF_INET6, raw, port);
        return usable_v6(raw) ? 1 : 0;
    }
    return -1;
}

static int host_getaddrinfo(const char *host, unsigned int port, tm_addr *out, int max)
{
    struct addrinfo hints, *res = NULL, *ai;
    int n = 0, pass, rc;

    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc == EAI_NONAME || rc == EAI_NODATA)
        return 0;
    if (rc == EAI_MEMORY)
        return TM_ENOMEM;
    if (rc != 0)
        return TM_EDNS;
    for (pass = 0; pass < 2; pass++) {
        for (ai = res; ai && n < max; ai = ai->ai_next) {
            if (pass == 0 && ai->ai_family == AF_INET) {
                const unsigned char *raw =
                    (const unsigned char *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr;
                if (usable_v4(raw))
                    set_addr(&out[n++], AF_INET, raw, port);
            } else if (pass == 1 && ai->ai_family == AF_INET6) {
                const unsigned char *raw =
                    (const unsigned char *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;
                if (usable_v6(raw))
                    set_addr(&out[n++], AF_INET6, raw, port);
            }
        }
    }
    freeaddrinfo(res);
    return n;
}

/* The name at the end of the CNAME chain an answer gives for its
 * question, into name (the question's name when there is none). */
static void answer_target(const unsigned char *msg, int len, char *name, size_t size)
{
    ns_msg h;
    ns_rr q;

    if (ns_initparse(msg, len, &h) < 0 || ns_msg_count(h, ns_s_qd) != 1 ||
        ns_parserr(&h, ns_s_qd, 0, &q) < 0 || strlen(ns_rr_name(q)) >= size)
        return;
    tm__strlcpy(name, ns_rr_name(q), size);
    if (follow_cnames(&h, name, size) != TM_OK)
        tm__strlcpy(name, ns_rr_name(q), size);
}

int tm__dns_host(const tm_context *ctx, const char *host, unsigned int port, tm_addr *out, int max,
                int64_t deadline, int *secure, char *target, size_t targetlen)
{
    struct __res_state rs;
    unsigned char ans[TM_DNS_ANSWER_MAX];
    int n, types[2] = { ns_t_a, ns_t_aaaa }, i, total = 0, failed = 0, all_ad = 1, ad;

    *secure = 0;
    if (target)
        tm__strlcpy(target, host, targetlen);
    if (max <= 0)
        return 0;
    n = literal(host, port, out);
    if (n >= 0)
        return n;
    if (!ctx->have_dns_server && !ctx->dane)
        return host_getaddrinfo(host, port, out, max);

    if (resolver_open(ctx, &rs, deadline) != TM_OK)
        return TM_EDNS;
    /* With DANE both families are asked (their DNSSEC state counts even
     * when the first filled the table). */
    for (i = 0; i < 2 && (total < max || ctx->dane); i++) {
        int len = query(&rs, host, types[i], ans, sizeof ans, &ad);
        /* With the table full, an answer only counts for its AD bit. */
        n = len > 0 ? 0 : len;
        if (len > 0 && i == 0 && target)
            answer_target(ans, len, target, targetlen);
        if (len > 0 && total < max)
            n = tm__dns_parse_addr(ans, len, types[i], port, out + total, max - total);
        if (n == TM_EDNS || len == TM_EDNS)
            failed = 1;
        if (len >= 0 && !ad)
            all_ad = 0;
        if (n > 0)
            total += n;
    }
    res_nclose(&rs);
    if (total == 0 && failed)
        return TM_EDNS;
    /* A failed lookup is indeterminate, never "unsigned": with DANE on,
     * an attacker who can make AAAA fail must not turn a host insecure. */
    if (ctx->dane)
        *secure = failed ? -1 : (all_ad && total > 0);
    return total;
}

int tm__dns_cname_secure(const tm_context *ctx, const char *host, int64_t deadline)
{
    struct __res_state rs;
    unsigned char ans[TM_DNS_ANSWER_MAX];
    char target[NS_MAXDNAME];
    int n, ad = 0;

    if (!ctx->dane || resolver_open(ctx, &rs, deadline) != TM_OK)
        return 0;
    n = query(&rs, host, ns_t_cname, ans, sizeof ans, &ad);
    res_nclose(&rs);
    if (n <= 0 || !ad)
        return 0;
    target[0] = '\0';
    answer_target(ans, n, target, sizeof target);
    return target[0] != '\0' && !tm__domain_equal(target, host);
}

int tm__dns_tlsa(const tm_context *ctx, const char *host, unsigned int port, tm_tlsa *out, int max,
                 int64_t deadline, int *unusable, int *secure)
{
    struct __res_state rs;
    unsigned char ans[TM_DNS_ANSWER_MAX];
    char name[TM_HOST_MAX + 16];
    int n, ad = 0, msg_ad;

    *unusable = 0;
    *secure = 0;
    if (snprintf(name, sizeof name, "_%u._tcp.%s", port, host) >= (int)sizeof name)
        return TM_EDNS;
    if (resolver_open(ctx, &rs, deadline) != TM_OK)
        return TM_EDNS;
    n = query(&rs, name, ns_t_tlsa, ans, sizeof ans, &ad);
    res_nclose(&rs);
    if (n == TM_ENODOMAIN || n == 0) {
        *secure = ctx->dane && ad;
        return 0;
    }
    if (n < 0)
        return TM_EDNS;
    n = tm__dns_parse_tlsa(ans, n, out, max, unusable, &msg_ad);
    if (n < 0)
        return TM_EDNS;
    *secure = ctx->dane && ad;
    return n;
}

int tm__dns_sts(const tm_context *ctx, const char *domain, int64_t deadline,
                char id[TM_STS_ID_MAX], int *several)
{
    struct __res_state rs;
    unsigned char ans[TM_DNS_ANSWER_MAX];
    char name[TM_HOST_MAX + 16];
    int n;

    id[0] = '\0';
    *several = 0;
    if (snprintf(name, sizeof name, "_mta-sts.%s", domain) >= (int)sizeof name)
        return TM_EDNS;
    if (resolver_open(ctx, &rs, deadline) != TM_OK)
        return TM_EDNS;
    n = query(&rs, name, ns_t_txt, ans, sizeof ans, NULL);
    res_nclose(&rs);
    if (n == TM_ENODOMAIN || n == 0)
        return 0;
    if (n < 0)
        return TM_EDNS;
    return tm__dns_parse_sts(ans, n, id, several);
}

/* Shuffles runs of equal preference (RFC 5321 5.1: spread the load). */
static void sort_mx(const tm_context *ctx, tm_mx *mx, int n)
{
    uint64_t x = 0;
    int i, j;

    if (tm__tls_random(ctx->tls, &x, sizeof x) != TM_OK) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    }
    for (i = n - 1; i > 0; i--) { /* Fisher-Yates (splitmix64 steps), then a stable sort */
        uint64_t z;
        tm_mx t;
        x += 0x9e3779b97f4a7c15ull;
        z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        j = (int)(z % (uint64_t)(i + 1));
        t = mx[i];
        mx[i] = mx[j];
        mx[j] = t;
    }
    for (i = 1; i < n; i++) { /* insertion sort: stable */
        tm_mx t = mx[i];
        for (j = i; j > 0 && mx[j - 1].pref > t.pref; j--)
            mx[j] = mx[j - 1];
        mx[j] = t;
    }
}

int tm__dns_mx(const tm_context *ctx, const char *domain, tm_mx *out, int max, int64_t deadline,
               char *why, size_t whylen, char enhanced[TM_ENHANCED_MAX], int *secure)
{
    struct __res_state rs;
    unsigned char ans[TM_DNS_ANSWER_MAX];
    tm_mx found[TM_MX_MAX * 2];
    int n, null_mx = 0, i, j, kept = 0, ad = 0;

    *secure = 0;
    why[0] = '\0';
    enhanced[0] = '\0';
    if (max <= 0)
        return TM_EINVAL;
    if (resolver_open(ctx, &rs, deadline) != TM_OK) {
        tm__strlcpy(enhanced, "4.4.3", TM_ENHANCED_MAX);
        snprintf(why, whylen, "resolver initialisation failed");
        return TM_EDNS;
    }
    n = query(&rs, domain, ns_t_mx, ans, sizeof ans, &ad);
    res_nclose(&rs);
    *secure = ctx->dane && ad;
    if (n > 0)
        n = tm__dns_parse_mx(ans, n, found, TM_MX_MAX * 2, &null_mx);
    if (n == TM_ENODOMAIN) {
        tm__strlcpy(enhanced, "5.1.2", TM_ENHANCED_MAX);
        snprintf(why, whylen, "domain %s does not exist (NXDOMAIN)", domain);
        return TM_ENODOMAIN;
    }
    if (n < 0) {
        tm__strlcpy(enhanced, "4.4.3", TM_ENHANCED_MAX);
        snprintf(why, whylen, "MX lookup for %s failed (SERVFAIL, timeout or bad answer)", domain);
        return TM_EDNS;
    }
    if (n == 0 && null_mx) {
        tm__strlcpy(enhanced, "5.1.10", TM_ENHANCED_MAX);
        snprintf(why, whylen, "domain %s accepts no mail (null MX)", domain);
        return TM_ENULLMX;
    }
    if (n == 0) {
        /* No MX: the domain is its own implicit MX (RFC 5321 5.1). */
        tm__strlcpy(out[0].host, domain, sizeof out[0].host);
        out[0].pref = 0;
        return 1;
    }
    sort_mx(ctx, found, n);
    for (i = 0; i < n && kept < max; i++) {
        for (j = 0; j < kept; j++)
            if (tm__domain_equal(out[j].host, found[i].host))
                break;
        if (j == kept)
            out[kept++] = found[i];
    }
    return kept;
}
