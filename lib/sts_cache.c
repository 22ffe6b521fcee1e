/*
 * sts_cache.c - the MTA-STS policy cache (RFC 8461 5.1): policies by
 * policy domain until their max_age runs out, the least recently used
 * evicted when full, and a text form for saving and loading (all or
 * nothing, as the settings file).  Pure: the caller gives the time, the
 * lock and the file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void tm__sts_cache_init(tm_sts_cache *c, size_t max)
{
    memset(c, 0, sizeof *c);
    c->max = max ? max : TM_STS_CACHE_DEFAULT;
}

void tm__sts_cache_free(tm_sts_cache *c)
{
    tm__free(c->e);
    c->e = NULL;
    c->n = c->cap = 0;
}

static long find(const tm_sts_cache *c, const char *domain)
{
    size_t i;

    for (i = 0; i < c->n; i++)
        if (tm__domain_equal(c->e[i].domain, domain))
            return (long)i;
    return -1;
}

static void remove_at(tm_sts_cache *c, size_t i)
{
    c->e[i] = c->e[--c->n];
}

const tm_sts_entry *tm__sts_cache_get(tm_sts_cache *c, const char *domain, int64_t now)
{
    long i = find(c, domain);

    if (i < 0)
        return NULL;
    if (now >= c->e[i].expires) {
        remove_at(c, (size_t)i); /* max_age ran out: as if never seen */
        return NULL;
    }
    c->e[i].used = now;
    return &c->e[i];
}

int tm__sts_cache_put(tm_sts_cache *c, const tm_sts_entry *entry)
{
    long i = find(c, entry->domain);

    if (i < 0 && c->n >= c->max) {
        size_t k, lru = 0;
        for (k = 1; k < c->n; k++)
            if (c->e[k].used < c->e[lru].used)
                lru = k;
        i = (long)lru;
    }
    if (i < 0) {
        if (c->n == c->cap) {
            size_t ncap = c->cap ? c->cap * 2 : 8;
            tm_sts_entry *ne;
            if (ncap > c->max)
                ncap = c->max;
            ne = tm__calloc(ncap, sizeof *ne);
            if (!ne)
                return TM_ENOMEM;
            if (c->n)
                memcpy(ne, c->e, c->n * sizeof *ne);
            tm__free(c->e);
            c->e = ne;
            c->cap = ncap;
        }
        i = (long)c->n++;
    }
    c->e[i] = *entry;
    return TM_OK;
}

static const char *mode_name(int mode)
{
    return mode == TM_STS_ENFORCE ? "enforce" : mode == TM_STS_TESTING ? "testing" : "none";
}

/* One entry as a line: "policy DOMAIN ID FETCHED EXPIRES USED MODE MAX_AGE MX,MX,...". */
int tm__sts_cache_format(const tm_sts_cache *c, char *buf, size_t size)
{
    size_t len = 0, i;
    int k;

    if (size)
        buf[0] = '\0';
    for (i = 0; i < c->n; i++) {
        const tm_sts_entry *e = &c->e[i];
        char line[TM_HOST_MAX * (TM_STS_MX_MAX + 2) + 200];
        int n = snprintf(line, sizeof line, "policy %s %s %lld %lld %lld %s %lu ", e->domain,
                         e->id, (long long)e->fetched, (long long)e->expires,
                         (long long)e->used, mode_name(e->policy.mode), e->policy.max_age);
        for (k = 0; k < e->policy.nmx && n > 0 && (size_t)n < sizeof line; k++)
            n += snprintf(line + n, sizeof line - (size_t)n, "%s%s%s", k ? "," : "",
                          e->policy.mx[k].wildcard ? "*." : "", e->policy.mx[k].name);
        if (n > 0 && (size_t)n < sizeof line - 1) {
            if (e->policy.nmx == 0)
                line[n++] = '-';
            line[n++] = '\n';
            line[n] = '\0';
        }
        if (len + (size_t)n < size)
            memcpy(buf + len, line, (size_t)n + 1);
        len += (size_t)n;
    }
    return len > 0x7fffffff ? 0x7fffffff : (int)len;
}

/* A whole number of at most 19 digits. */
static int number(const char *s, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (!*s || strlen(s) > 18)
        return TM_ESYNTAX;
    for (i = 0; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TM_ESYNTAX;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return TM_OK;
}

/* One line into e, its policy checked by the policy parser itself. */
static int parse_line(char *line, tm_sts_entry *e)
{
    char *f[9], *save = NULL, *tok, text[TM_HOST_MAX * (TM_STS_MX_MAX + 2) + 200];
    int nf = 0, n;
    int64_t v;

    memset(e, 0, sizeof *e);
    for (tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (nf == 9)
            return TM_ESYNTAX;
        f[nf++] = tok;
    }
    if (nf != 9 || strcmp(f[0], "policy") != 0 || strlen(f[1]) >= sizeof e->domain ||
        tm__name_check(f[1]) != TM_OK || strlen(f[2]) >= sizeof e->id)
        return TM_ESYNTAX;
    tm__strlcpy(e->domain, f[1], sizeof e->domain);
    /* The id and the policy go through the parsers that took them first. */
    n = snprintf(text, sizeof text, "v=STSv1; id=%s", f[2]);
    if (n < 0 || (size_t)n >= sizeof text || tm__sts_parse_txt(text, (size_t)n, e->id) != TM_OK)
        return TM_ESYNTAX;
    if (number(f[3], &e->fetched) != TM_OK || number(f[4], &e->expires) != TM_OK ||
        number(f[5], &e->used) != TM_OK || number(f[7], &v) != TM_OK)
        return TM_ESYNTAX;
    n = snprintf(text, sizeof text, "version: STSv1\nmode: %s\nmax_age: %s\n", f[6], f[7]);
    if (strcmp(f[8], "-") != 0) {
        char *mx, *s2 = NULL;
        for (mx = strtok_r(f[8], ",", &s2); mx && n > 0 && (size_t)n < sizeof text;
             mx = strtok_r(NULL, ",", &s2))
            n += snprintf(text + n, sizeof text - (size_t)n, "mx: %s\n", mx);
    }
    if (n < 0 || (size_t)n >= sizeof text ||
        tm__sts_parse_policy(text, (size_t)n, &e->policy) != TM_OK)
        return TM_ESYNTAX;
    return TM_OK;
}

int tm__sts_cache_parse(const char *text, size_t len, tm_sts_cache *out, int *error_line)
{
    tm_sts_cache c;
    size_t start = 0, i;
    int line_no = 0, rc = TM_OK;

    if (error_line)
        *error_line = 0;
    tm__sts_cache_init(&c, out->max);
    for (i = 0; i <= len && rc == TM_OK; i++) {
        char line[TM_HOST_MAX * (TM_STS_MX_MAX + 2) + 200];
        tm_sts_entry e;
        size_t n;

        if (i < len && text[i] != '\n')
            continue;
        line_no++;
        n = i - start;
        if (n >= sizeof line || memchr(text + start, '\0', n)) {
            rc = TM_ESYNTAX;
            break;
        }
        memcpy(line, text + start, n);
        line[n] = '\0';
        start = i + 1;
        if (n == 0 || line[0] == '#')
            continue;
        rc = parse_line(line, &e);
        if (rc == TM_OK)
            rc = tm__sts_cache_put(&c, &e);
    }
    if (rc != TM_OK) {
        if (error_line && rc == TM_ESYNTAX)
            *error_line = line_no;
        tm__sts_cache_free(&c);
        return rc;
    }
    tm__sts_cache_free(out);
    *out = c;
    return TM_OK;
}
