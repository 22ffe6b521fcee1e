/*
 * settings.c - connection settings per sending domain and TLS floors per
 * recipient domain, kept in the context behind a reader-writer lock, and
 * their text file format.
 *
 * One sorted array holds both tables (recipient flag first, then name), so
 * a lookup is a binary search and a delivery takes the read lock once for
 * both of its lookups: it sees one consistent policy.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Lower case, one trailing dot removed, checked.  TM_OK or TM_EINVAL. */
static int normalise(const char *in, char *out, size_t size)
{
    size_t len, i;

    if (!in)
        return TM_EINVAL;
    len = strlen(in);
    if (len > 0 && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= size)
        return TM_EINVAL;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '@' || c == '[' || c == ']' || c == ':')
            return TM_EINVAL;
        out[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    out[len] = '\0';
    return tm__name_check(out) == TM_OK && out[0] != '.' && !strstr(out, "..") ? TM_OK : TM_EINVAL;
}

static int compare(int recipient, const char *name, const tm_setting *e)
{
    if (recipient != e->recipient)
        return recipient - e->recipient;
    return strcmp(name, e->name);
}

/* Index of the entry, or -(insertion point) - 1. */
static long find(const tm_setting *tab, size_t n, int recipient, const char *name)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = compare(recipient, name, &tab[mid]);
        if (c == 0)
            return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -(long)lo - 1;
}

/* Inserts or replaces in a table that the caller owns (locked or private). */
static int table_put(tm_setting **tab, size_t *n, size_t *cap, const tm_setting *e)
{
    long at = find(*tab, *n, e->recipient, e->name);
    size_t pos;

    if (at >= 0) {
        (*tab)[at] = *e;
        return TM_OK;
    }
    pos = (size_t)(-at - 1);
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        tm_setting *t = tm__calloc(ncap, sizeof *t);
        if (!t)
            return TM_ENOMEM;
        if (*n)
            memcpy(t, *tab, *n * sizeof *t);
        tm__free(*tab);
        *tab = t;
        *cap = ncap;
    }
    memmove(*tab + pos + 1, *tab + pos, (*n - pos) * sizeof **tab);
    (*tab)[pos] = *e;
    (*n)++;
    return TM_OK;
}

static void table_remove(tm_setting *tab, size_t *n, size_t at)
{
    memmove(tab + at, tab + at + 1, (*n - at - 1) * sizeof *tab);
    (*n)--;
}

static int check_policy(const tm_policy *p)
{
    return p && tm__policy_check(p) == TM_OK;
}

static int put_locked(tm_context *ctx, const tm_setting *e)
{
    int rc;

    pthread_rwlock_wrlock(&ctx->settings_lock);
    rc = table_put(&ctx->settings, &ctx->nsettings, &ctx->capsettings, e);
    pthread_rwlock_unlock(&ctx->settings_lock);
    return rc;
}

static int delete_locked(tm_context *ctx, int recipient, const char *name)
{
    long at;
    int rc = TM_ENOTFOUND;

    pthread_rwlock_wrlock(&ctx->settings_lock);
    at = find(ctx->settings, ctx->nsettings, recipient, name);
    if (at >= 0) {
        table_remove(ctx->settings, &ctx->nsettings, (size_t)at);
        rc = TM_OK;
    }
    pthread_rwlock_unlock(&ctx->settings_lock);
    return rc;
}

TM_EXTERN int tm_domain_policy_set(tm_context *ctx, const char *domain, const tm_policy *policy)
{
    tm_setting e;

    memset(&e, 0, sizeof e);
    if (!ctx || !check_policy(policy) || normalise(domain, e.name, sizeof e.name) != TM_OK)
        return TM_EINVAL;
    e.policy = *policy;
    e.policy.version = TM_POLICY_VERSION;
    return put_locked(ctx, &e);
}

TM_EXTERN int tm_domain_policy_get(tm_context *ctx, const char *domain, tm_policy *policy)
{
    char name[TM_HOST_MAX];
    long at;

    if (!ctx || !policy || normalise(domain, name, sizeof name) != TM_OK)
        return TM_EINVAL;
    pthread_rwlock_rdlock(&ctx->settings_lock);
    at = find(ctx->settings, ctx->nsettings, 0, name);
    if (at >= 0)
        *policy = ctx->settings[at].policy;
    pthread_rwlock_unlock(&ctx->settings_lock);
    return at >= 0 ? TM_OK : TM_ENOTFOUND;
}

TM_EXTERN int tm_domain_policy_delete(tm_context *ctx, const char *domain)
{
    char name[TM_HOST_MAX];

    if (!ctx || normalise(domain, name, sizeof name) != TM_OK)
        return TM_EINVAL;
    return delete_locked(ctx, 0, name);
}

TM_EXTERN int tm_recipient_floor_set(tm_context *ctx, const char *domain, int floor)
{
    tm_setting e;

    memset(&e, 0, sizeof e);
    if (!ctx || floor < TM_FLOOR_NONE || floor > TM_FLOOR_DANE ||
        normalise(domain, e.name, sizeof e.name) != TM_OK)
        return TM_EINVAL;
    if (floor == TM_FLOOR_NONE) {
        delete_locked(ctx, 1, e.name);
        return TM_OK;
    }
    e.recipient = 1;
    e.floor = floor;
    return put_locked(ctx, &e);
}

TM_EXTERN int tm_recipient_floor_get(tm_context *ctx, const char *domain, int *floor)
{
    char name[TM_HOST_MAX];
    long at;

    if (!ctx || !floor || normalise(domain, name, sizeof name) != TM_OK)
        return TM_EINVAL;
    pthread_rwlock_rdlock(&ctx->settings_lock);
    at = find(ctx->settings, ctx->nsettings, 1, name);
    *floor = at >= 0 ? ctx->settings[at].floor : TM_FLOOR_NONE;
    pthread_rwlock_unlock(&ctx->settings_lock);
    return TM_OK;
}

void tm__settings_resolve(tm_context *ctx, const tm_policy *message, const char *sending_domain,
                         const char *recipient_domain, tm_resolved *out)
{
    char sname[TM_HOST_MAX], rname[TM_HOST_MAX];
    int have_s = sending_domain && normalise(sending_domain, sname, sizeof sname) == TM_OK;
    int have_r = recipient_domain && normalise(recipient_domain, rname, sizeof rname) == TM_OK;
    tm_policy domain;
    int have_domain = 0, floor = TM_FLOOR_NONE;
    long at;

    pthread_rwlock_rdlock(&ctx->settings_lock);
    if (have_s && (at = find(ctx->settings, ctx->nsettings, 0, sname)) >= 0) {
        domain = ctx->settings[at].policy;
        have_domain = 1;
    }
    if (have_r && (at = find(ctx->settings, ctx->nsettings, 1, rname)) >= 0)
        floor = ctx->settings[at].floor;
    pthread_rwlock_unlock(&ctx->settings_lock);
    tm__policy_resolve(message, have_domain ? &domain : NULL, floor, out);
}

void tm__settings_free(tm_context *ctx)
{
    tm__free(ctx->settings);
    ctx->settings = NULL;
    ctx->nsettings = ctx->capsettings = 0;
}

/* ---- the text format ------------------------------------------------------- */

static const char *flag_word(int v)
{
    return v > 0 ? "yes" : v < 0 ? "no" : "unset";
}

/* Appends with snprintf semantics into (buf, size) at *len. */
static void out(char *buf, size_t size, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len < size) {
        size_t room = size - *len - 1;
        memcpy(buf + *len, s, n < room ? n : room);
        buf[*len + (n < room ? n : room)] = '\0';
    }
    *len += n;
}

static void format_entry(const tm_setting *e, char *line, size_t size)
{
    if (e->recipient) {
        snprintf(line, size, "recipient %s floor=%s\n", e->name, tm_floor_name(e->floor));
        return;
    }
    snprintf(line, size, "sending %s", e->name);
    if (e->policy.require_tls)
        snprintf(line + strlen(line), size - strlen(line), " require_tls=%s",
                 flag_word(e->policy.require_tls));
    if (e->policy.skip_verify)
        snprintf(line + strlen(line), size - strlen(line), " skip_verify=%s",
                 flag_word(e->policy.skip_verify));
    if (e->policy.keep_unverified_tls)
        snprintf(line + strlen(line), size - strlen(line), " keep_unverified_tls=%s",
                 flag_word(e->policy.keep_unverified_tls));
    snprintf(line + strlen(line), size - strlen(line), "\n");
}

TM_EXTERN int tm_settings_list(tm_context *ctx, char *buf, size_t size)
{
    size_t len = 0, i;

    if (!ctx || (!buf && size > 0))
        return TM_EINVAL;
    if (size > 0)
        buf[0] = '\0';
    pthread_rwlock_rdlock(&ctx->settings_lock);
    for (i = 0; i < ctx->nsettings; i++) {
        char line[TM_HOST_MAX + 128];
        format_entry(&ctx->settings[i], line, sizeof line);
        out(buf, size, &len, line);
    }
    pthread_rwlock_unlock(&ctx->settings_lock);
    return len > 0x7fffffff ? 0x7fffffff : (int)len;
}

static int parse_flag(const char *v, int *flag)
{
    if (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0)
        *flag = TM_ON;
    else if (strcmp(v, "no") == 0 || strcmp(v, "false") == 0)
        *flag = TM_OFF;
    else if (strcmp(v, "unset") == 0)
        *flag = TM_UNSET;
    else
        return TM_ESYNTAX;
    return TM_OK;
}

/* Parses one line (NUL-terminated, without newline).  Returns TM_OK with
 * *have set when it holds an entry, TM_ESYNTAX otherwise. */
static int parse_line(char *line, tm_setting *e, int *have)
{
    char *save = NULL, *word, *kind, *domain;
    char *hash = strchr(line, '#');

    *have = 0;
    if (hash)
        *hash = '\0';
    kind = strtok_r(line, " \t\r", &save);
    if (!kind)
        return TM_OK;
    domain = strtok_r(NULL, " \t\r", &save);
    memset(e, 0, sizeof *e);
    memset(&e->policy, 0, sizeof e->policy);
    e->policy.version = TM_POLICY_VERSION;
    if (strcmp(kind, "sending") == 0)
        e->recipient = 0;
    else if (strcmp(kind, "recipient") == 0)
        e->recipient = 1;
    else
        return TM_ESYNTAX;
    if (!domain || normalise(domain, e->name, sizeof e->name) != TM_OK)
        return TM_ESYNTAX;
    while ((word = strtok_r(NULL, " \t\r", &save)) != NULL) {
        char *eq = strchr(word, '=');
        const char *key = word, *val;
        if (!eq)
            return TM_ESYNTAX;
        *eq = '\0';
        val = eq + 1;
        if (!e->recipient && strcmp(key, "require_tls") == 0) {
            if (parse_flag(val, &e->policy.require_tls) != TM_OK)
                return TM_ESYNTAX;
        } else if (!e->recipient && strcmp(key, "skip_verify") == 0) {
            if (parse_flag(val, &e->policy.skip_verify) != TM_OK)
                return TM_ESYNTAX;
        } else if (!e->recipient && strcmp(key, "keep_unverified_tls") == 0) {
            if (parse_flag(val, &e->policy.keep_unverified_tls) != TM_OK)
                return TM_ESYNTAX;
        } else if (e->recipient && strcmp(key, "floor") == 0) {
            if (strcmp(val, "none") == 0)
                e->floor = TM_FLOOR_NONE;
            else if (strcmp(val, "tls") == 0)
                e->floor = TM_FLOOR_TLS;
            else if (strcmp(val, "verified") == 0)
                e->floor = TM_FLOOR_VERIFIED;
            else if (strcmp(val, "dane") == 0)
                e->floor = TM_FLOOR_DANE;
            else
                return TM_ESYNTAX;
        } else {
            return TM_ESYNTAX; /* an unknown key is refused, not ignored */
        }
    }
    *have = 1;
    return TM_OK;
}

int tm__settings_parse(const char *text, size_t len, tm_setting **tab, size_t *n, size_t *cap,
                      int *error_line)
{
    size_t pos = 0;
    int lineno = 0;

    while (pos < len) {
        char line[1024];
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (text + pos)) : len - pos;
        tm_setting e;
        int have, rc;

        lineno++;
        if (l >= sizeof line || memchr(text + pos, '\0', l)) {
            *error_line = lineno;
            return TM_ESYNTAX;
        }
        memcpy(line, text + pos, l);
        line[l] = '\0';
        pos += l + (nl != NULL);
        rc = parse_line(line, &e, &have);
        if (rc != TM_OK) {
            *error_line = lineno;
            return rc;
        }
        if (!have)
            continue;
        if (e.recipient && e.floor == TM_FLOOR_NONE) {
            long at = find(*tab, *n, 1, e.name);
            if (at >= 0)
                table_remove(*tab, n, (size_t)at);
            continue;
        }
        rc = table_put(tab, n, cap, &e);
        if (rc != TM_OK)
            return rc;
    }
    return TM_OK;
}

TM_EXTERN int tm_settings_load(tm_context *ctx, const char *path, int replace, int *error_line)
{
    tm_setting *tab = NULL;
    size_t n = 0, cap = 0, i;
    char *text = NULL;
    size_t len = 0;
    int line = 0, rc;

    if (error_line)
        *error_line = 0;
    if (!ctx || !path)
        return TM_EINVAL;
    /* Settings files are small: read whole, bounded at 16 MiB. */
    rc = tm__file_read(path, 16u << 20, &text, &len);
    if (rc == TM_OK)
        rc = tm__settings_parse(text ? text : "", len, &tab, &n, &cap, &line);
    tm__free(text);
    if (rc != TM_OK) {
        if (error_line)
            *error_line = line;
        tm__free(tab);
        return rc;
    }

    pthread_rwlock_wrlock(&ctx->settings_lock);
    if (replace) {
        tm__free(ctx->settings);
        ctx->settings = tab;
        ctx->nsettings = n;
        ctx->capsettings = cap;
        tab = NULL;
    } else {
        for (i = 0; i < n && rc == TM_OK; i++)
            rc = table_put(&ctx->settings, &ctx->nsettings, &ctx->capsettings, &tab[i]);
    }
    pthread_rwlock_unlock(&ctx->settings_lock);
    tm__free(tab);
    return rc;
}

TM_EXTERN int tm_settings_save(tm_context *ctx, const char *path)
{
    char *text = NULL;
    int need, rc;

    if (!ctx || !path)
        return TM_EINVAL;
    /* Snapshot under the lock, write without it. */
    for (;;) {
        need = tm_settings_list(ctx, NULL, 0);
        tm__free(text);
        text = tm__calloc(1, (size_t)need + 64);
        if (!text)
            return TM_ENOMEM;
        if (tm_settings_list(ctx, text, (size_t)need + 64) < need + 64)
            break;
    }
    rc = tm__file_write_atomic(path, "# libtlsmail connection settings\n", text);
    tm__free(text);
    return rc;
}
