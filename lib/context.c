/*
 * context.c - the shared context: settings read once, trust store, random
 * generator and TLS session cache, shared read-only by sessions and
 * threads.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <stddef.h>

#include "internal.h"

static unsigned int pick(unsigned int value, unsigned int fallback, unsigned int dflt)
{
    if (value)
        return value;
    return fallback ? fallback : dflt;
}

TM_EXTERN int tm_context_new(tm_context **out, const tm_context_options *given)
{
    static const tm_context_options defaults = TM_CONTEXT_OPTIONS_INIT;
    tm_context_options copy;
    const tm_context_options *o = given ? given : &defaults;
    tm_context *ctx;
    char err[256];
    unsigned int cmd;
    int rc;

    if (!out)
        return TM_EINVAL;
    *out = NULL;
    if (tm__version_ok(o->version, TM_CONTEXT_OPTIONS_VERSION) != TM_OK)
        return TM_EINVAL;
    if (o->version == 1) { /* ends before ca_path */
        memset(&copy, 0, sizeof copy);
        memcpy(&copy, o, offsetof(tm_context_options, ca_path));
        o = &copy;
    }
    if (o->helo_name && (tm__name_check(o->helo_name) != TM_OK))
        return TM_EINVAL;
    if (o->port > 65535 || o->sts_https_port > 65535)
        return TM_EINVAL;
    if (o->sts_https_address) {
        /* An IP address only: the name checked is always mta-sts.<domain>. */
        struct sockaddr_storage ss;
        socklen_t sl;
        if (strlen(o->sts_https_address) >= TM_IPADDR_MAX ||
            tm__net_parse_addr(o->sts_https_address, 443, &ss, &sl) != TM_OK)
            return TM_EINVAL;
    }

    ctx = tm__calloc(1, sizeof *ctx);
    if (!ctx)
        return TM_ENOMEM;

    if (o->helo_name) {
        tm__strlcpy(ctx->helo_name, o->helo_name, sizeof ctx->helo_name);
    } else {
        char host[TM_HOST_MAX];
        if (gethostname(host, sizeof host) != 0 || tm__name_check(host) != TM_OK)
            tm__strlcpy(host, "localhost", sizeof host);
        host[sizeof host - 1] = '\0';
        tm__strlcpy(ctx->helo_name, host, sizeof ctx->helo_name);
    }
    ctx->port = o->port ? o->port : 25;

    /* RFC 5321 section 4.5.3.2 defaults; command_timeout_ms replaces them. */
    cmd = o->command_timeout_ms;
    ctx->to.connect = pick(o->connect_timeout_ms, cmd, 30000);
    ctx->to.greeting = pick(o->greeting_timeout_ms, cmd, 300000);
    ctx->to.ehlo = pick(o->ehlo_timeout_ms, cmd, 300000);
    ctx->to.tls = pick(o->tls_timeout_ms, cmd, 60000);
    ctx->to.mail = pick(o->mail_timeout_ms, cmd, 300000);
    ctx->to.rcpt = pick(o->rcpt_timeout_ms, cmd, 300000);
    ctx->to.data = pick(o->data_timeout_ms, cmd, 120000);
    ctx->to.data_block = pick(o->data_block_timeout_ms, cmd, 180000);
    ctx->to.data_end = pick(o->data_end_timeout_ms, cmd, 600000);
    ctx->to.quit = pick(o->quit_timeout_ms, cmd, 5000);
    ctx->to.delivery = o->delivery_timeout_ms;
    ctx->max_mx = o->max_mx ? o->max_mx : 5;
    if (ctx->max_mx > TM_MX_MAX)
        ctx->max_mx = TM_MX_MAX;
    ctx->max_addresses = o->max_addresses ? o->max_addresses : 4;
    if (ctx->max_addresses > TM_ADDR_MAX)
        ctx->max_addresses = TM_ADDR_MAX;
    ctx->log = o->log;
    ctx->log_arg = o->log_arg;
    ctx->log_level = o->log_level;

    if (o->dns_server) {
        if (tm__net_parse_addr(o->dns_server, 53, &ctx->dns_server, &ctx->dns_server_len) != TM_OK) {
            tm__free(ctx);
            return TM_EINVAL;
        }
        ctx->have_dns_server = 1;
    }

    /* DANE only with a resolver the host trusts to validate (its AD bit). */
    if (o->dnssec_resolver) {
        if (tm__net_parse_addr(o->dnssec_resolver, 53, &ctx->dns_server, &ctx->dns_server_len) !=
                TM_OK ||
            ctx->dns_server.ss_family != AF_INET) {
            tm__free(ctx);
            return TM_EINVAL;
        }
        ctx->have_dns_server = 1;
    }
    ctx->dane = (o->dnssec_resolver || TM_FLAG(o->dnssec_trust_resolver)) && o->dane >= 0;

    if (pthread_rwlock_init(&ctx->settings_lock, NULL) != 0) {
        tm__free(ctx);
        return TM_ENOMEM;
    }
    if (pthread_mutex_init(&ctx->sts_lock, NULL) != 0) {
        pthread_rwlock_destroy(&ctx->settings_lock);
        tm__free(ctx);
        return TM_ENOMEM;
    }
    /* MTA-STS (RFC 8461): on unless switched off. */
    tm__sts_cache_init(&ctx->sts, o->sts_cache_max);
    ctx->sts_on = o->mta_sts >= 0;
    ctx->sts_timeout = o->sts_timeout_ms ? o->sts_timeout_ms : 10000;
    ctx->sts_fetch = o->sts_fetch;
    ctx->sts_fetch_arg = o->sts_fetch_arg;
    ctx->sts_store = o->sts_store;
    ctx->sts_lookup = o->sts_lookup;
    ctx->sts_cache_arg = o->sts_cache_arg;
    ctx->sts_https_port = o->sts_https_port;
    if (o->sts_https_address)
        tm__strlcpy(ctx->sts_https_address, o->sts_https_address, sizeof ctx->sts_https_address);
    rc = tm__tls_config_new(&ctx->tls, o->ca_file, o->ca_path, err, sizeof err);
    if (rc != TM_OK) {
        tm__log(ctx, TM_LOG_ERROR, "TLS setup failed: %s", err);
        pthread_rwlock_destroy(&ctx->settings_lock);
        pthread_mutex_destroy(&ctx->sts_lock);
        tm__free(ctx);
        return rc;
    }
    *out = ctx;
    return TM_OK;
}

TM_EXTERN void tm_context_free(tm_context *ctx)
{
    if (!ctx)
        return;
    tm__tls_config_free(ctx->tls);
    tm__settings_free(ctx);
    pthread_rwlock_destroy(&ctx->settings_lock);
    tm__sts_cache_free(&ctx->sts);
    pthread_mutex_destroy(&ctx->sts_lock);
    tm__free(ctx);
}

TM_EXTERN int tm_context_reload_ca(tm_context *ctx)
{
    char err[256];
    int rc;

    if (!ctx)
        return TM_EINVAL;
    rc = tm__tls_reload_ca(ctx->tls, err, sizeof err);
    if (rc != TM_OK)
        tm__log(ctx, TM_LOG_ERROR, "trust store not reloaded (the old one stays): %s",
                err[0] ? err : tm_strerror(rc));
    else
        tm__log(ctx, TM_LOG_INFO, "trust store reloaded");
    return rc;
}

TM_EXTERN const char *tm_tls_backend(void)
{
    return tm__tls_backend_name();
}
