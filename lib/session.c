/*
 * session.c - the blocking driver, and the public session entry points.
 *
 * The SMTP dialogue is the engine's (client.c); the MX walk is mx.c's; the
 * status is written by status.c.  What is left here moves bytes between
 * the engine and the transport (run), applies the policy truth table to
 * the STARTTLS outcome, and strings the steps together for tm_session_open,
 * tm_starttls, tm_send and tm_deliver.  Every buffer is part of the session
 * allocation: a message costs no allocation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

enum { S_IDLE, S_READY, S_BROKEN };

/* The last failure met on the walk: reported only if nothing succeeds. */
typedef struct tm_failure {
    int error;
    int code;
    char enhanced[TM_ENHANCED_MAX];
    char message[TM_TEXT_MAX];
    char why[TM_TEXT_MAX];
    char host[TM_HOST_MAX];
    char address[TM_IPADDR_MAX];
} tm_failure;

struct tm_session {
    tm_context *ctx;
    int state;
    char domain[TM_HOST_MAX];
    tm_route route;
    int64_t deadline;          /* of the whole walk (INT64_MAX: none) */

    /* The connection. */
    char host[TM_HOST_MAX];
    char address[TM_IPADDR_MAX];
    tm_sock sock;
    tm_tls *tls;               /* allocated at the first STARTTLS, reused */
    tm_transport *tr;          /* &sock.base, or the TLS transport over it */
    int tls_active, cert_verified, tls_failure;
    char tls_error[TM_TEXT_MAX];

    /* Policy: msg_policy as given to tm_starttls (the message level, resolved
     * again per message); resolved, what the connection was made under. */
    tm_policy msg_policy;
    tm_resolved resolved;
    int policy_applied;
    int quit_last;             /* tm_deliver: the connection's last transaction */

    tm_failure fail;
    tm_drive drive;
    tm_txn txn;
    tm_client client;
    unsigned char ibuf[16384]; /* streamed content */
};

static int64_t deadline_of(const tm_session *s, unsigned int ms)
{
    return tm__min_deadline(tm__deadline(ms), s->deadline);
}

/* The engine over the connection until it wants TLS, is done or failed. */
static tm_want run(tm_session *s)
{
    s->drive.tr = s->tr;
    return tm__drive(&s->drive);
}

/* ---- connections ------------------------------------------------------------- */

static void drop_connection(tm_session *s)
{
    if (s->tls_active && s->tr)
        s->tr->ops->close(s->tr);
    s->sock.base.ops->close(&s->sock.base);
    s->tr = NULL;
    s->tls_active = 0;
    s->state = S_IDLE;
}

static void quit_and_drop(tm_session *s)
{
    if (s->tr && tm__client_quit(&s->client) == TM_OK && run(s) != TM_WANT_DONE)
        tm__log(s->ctx, TM_LOG_DEBUG, "%s: no reply to QUIT", s->host);
    drop_connection(s);
}

/* Records a failure of the walk; the reply it came with, if any. */
static void note_failure(tm_session *s, int error, const tm_reply *r, const char *what)
{
    tm_failure *f = &s->fail;

    f->error = error;
    f->code = r && r->code ? r->code : 0;
    f->enhanced[0] = f->message[0] = '\0';
    if (f->code) {
        const char *nl = memchr(r->text, '\n', r->text_len);
        tm__strlcpy(f->enhanced, r->enhanced, sizeof f->enhanced);
        tm__strlcpyn(f->message, sizeof f->message, r->text,
                     nl ? (size_t)(nl - r->text) : r->text_len);
    }
    tm__strlcpy(f->host, s->host, sizeof f->host);
    tm__strlcpy(f->address, s->address, sizeof f->address);
    snprintf(f->why, sizeof f->why, "%s %s[%s]: %s", what, s->host, s->address,
             tm_strerror(error));
    tm__log(s->ctx, TM_LOG_INFO, "%s", f->why);
}

/*
 * Connects from the walk's current position to the first address that
 * greets and answers EHLO (HELO).  TM_OK, or the last failure when none is
 * left.  A 421 or 5xx greeting leaves the whole host, any other failure
 * the address.
 */
static int connect_walk(tm_session *s)
{
    tm_client *c = &s->client;
    int last = s->fail.error != TM_OK ? s->fail.error : TM_ECONNECT;

    for (;;) {
        const tm_addr *a;
        int rc;

        if (s->deadline != INT64_MAX && tm__now_ms() >= s->deadline) {
            if (s->fail.error == TM_OK)
                note_failure(s, TM_ETIMEOUT, NULL, "delivery time limit reached before");
            return TM_ETIMEOUT;
        }
        a = tm__route_current(&s->route, s->ctx, deadline_of(s, s->ctx->to.connect), &rc);
        if (rc == TM_ENOMEM)
            return rc;
        if (rc != TM_OK) {
            tm__strlcpy(s->host, tm__route_host(&s->route), sizeof s->host);
            s->address[0] = '\0';
            note_failure(s, rc, NULL, "no usable address for");
            last = rc;
            if (!a)
                continue; /* the walk moved on by itself */
        }
        if (!a)
            return last;
        tm__strlcpy(s->host, tm__route_host(&s->route), sizeof s->host);
        tm__strlcpy(s->address, s->route.address, sizeof s->address);
        s->route.attempts++;
        tm__log(s->ctx, TM_LOG_INFO, "connecting to %s[%s]", s->host, s->address);
        rc = tm__sock_connect(&s->sock, (const struct sockaddr *)&a->sa, a->len,
                              deadline_of(s, s->ctx->to.connect));
        if (rc != TM_OK) {
            note_failure(s, rc, NULL, "connect to");
            if (rc == TM_ENOMEM)
                return rc;
            last = rc;
            tm__route_next_address(&s->route);
            continue;
        }
        s->tr = &s->sock.base;
        s->tls_active = 0;
        c->host = s->host;
        tm__client_open(c);
        if (run(s) == TM_WANT_DONE && tm__client_op_result(c) == TM_OP_OK) {
            s->state = S_READY;
            return TM_OK;
        }
        last = c->error != TM_OK ? c->error : TM_EPROTOCOL;
        note_failure(s, last, c->reply.code ? &c->reply : NULL,
                     tm__client_op_result(c) == TM_OP_REJECTED ? "refused by" : "greeting or EHLO from");
        if (tm__client_usable(c))
            quit_and_drop(s); /* RFC 5321 3.1: say QUIT after a refusal */
        else
            drop_connection(s);
        if (c->leave_host)
            tm__route_next_host(&s->route);
        else
            tm__route_next_address(&s->route);
    }
}

/* ---- STARTTLS under the policy ------------------------------------------------- */

/* Why TLS is not in use, in words (cut to fit: a reason, not a record). */
static void set_tls_error(tm_session *s, int failure, const char *fmt, ...) TM_PRINTF(3, 4);
static void set_tls_error(tm_session *s, int failure, const char *fmt, ...)
{
    va_list ap;

    s->tls_failure = failure;
    va_start(ap, fmt);
    vsnprintf(s->tls_error, sizeof s->tls_error, fmt, ap);
    va_end(ap);
}

/* One attempt at TLS on the current connection: what happened. */
static tm_tls_event try_tls(tm_session *s, int *fatal)
{
    tm_client *c = &s->client;
    char err[TM_TEXT_MAX], key[TM_HOST_MAX + TM_IPADDR_MAX + 32], reply[TM_TEXT_MAX];
    tm_transport *tls_tr;
    tm_want w;
    int rc;

    *fatal = TM_OK;
    s->cert_verified = 0;
    if (!(c->caps.flags & TM_CAP_STARTTLS)) {
        set_tls_error(s, TM_TLS_FAILURE_NOT_OFFERED, "STARTTLS not offered by %s", s->host);
        return TM_EV_NOT_OFFERED;
    }
    /* Nothing is pipelined with STARTTLS. */
    tm__client_starttls(c);
    w = run(s);
    snprintf(reply, sizeof reply, "%d %.300s", c->reply.code, c->reply.text);
    if (w == TM_WANT_FAILED) {
        set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE, "STARTTLS to %s failed: %s", s->host,
                      tm_strerror(c->error));
        return TM_EV_HANDSHAKE;
    }
    if (w == TM_WANT_DONE) {
        switch (tm__client_op_result(c)) {
        case TM_OP_TLS_REFUSED:
            set_tls_error(s, TM_TLS_FAILURE_REFUSED, "STARTTLS refused by %s: %s", s->host, reply);
            return TM_EV_REFUSED;
        case TM_OP_CLOSING:
            set_tls_error(s, TM_TLS_FAILURE_REFUSED, "%s is closing the connection: %s", s->host,
                          reply);
            return TM_EV_CLOSING;
        default:
            if (c->reply.code == 220)
                set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE,
                              "unexpected data after the 220 reply to STARTTLS from %s", s->host);
            else
                set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE,
                              "reply to STARTTLS from %s is no answer to it: %s", s->host, reply);
            return TM_EV_HANDSHAKE;
        }
    }
    /* 220.  Bytes after it were not sent by a TLS server: response
     * injection (CVE-2011-0411 class), never fed to TLS. */
    if (s->sock.base.ops->pending(&s->sock.base) > 0) {
        tm__client_tls_failed(c);
        set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE,
                      "unexpected data after the 220 reply to STARTTLS from %s", s->host);
        return TM_EV_HANDSHAKE;
    }
    if (!s->tls && (rc = tm__tls_new(&s->tls, s->ctx->tls)) != TM_OK) {
        *fatal = rc;
        return TM_EV_HANDSHAKE;
    }
    snprintf(key, sizeof key, "%s|%s|%u|%d%d%d", s->host, s->address, s->route.port,
             s->resolved.policy.require_tls, s->resolved.policy.skip_verify,
             s->resolved.policy.keep_unverified_tls);
    rc = tm__tls_start(s->tls, &s->sock.base, s->host, key, deadline_of(s, s->ctx->to.tls),
                       &tls_tr, err, sizeof err);
    if (rc != TM_OK) {
        if (rc == TM_ENOMEM)
            *fatal = rc;
        set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE, "TLS handshake with %s failed: %s", s->host,
                      err);
        return TM_EV_HANDSHAKE;
    }
    s->tr = tls_tr;
    s->tls_active = 1;
    /* Capabilities learnt in plaintext are forgotten.  Nothing is said over
     * this TLS until the policy has judged its certificate. */
    tm__client_tls_up(c);
    if (tm__tls_verified(s->tls)) {
        s->cert_verified = 1;
        s->tls_failure = TM_TLS_FAILURE_NONE;
        s->tls_error[0] = '\0';
        return TM_EV_CERT_VALID;
    }
    tm__tls_verify_error(s->tls, err, sizeof err);
    set_tls_error(s, TM_TLS_FAILURE_CERTIFICATE, "%s: %s", s->host, err);
    return TM_EV_CERT_INVALID;
}

/* EHLO again over the TLS the policy accepted: every capability anew. */
static int ehlo_over_tls(tm_session *s)
{
    tm_client *c = &s->client;

    if (tm__client_ehlo(c) == TM_OK && run(s) == TM_WANT_DONE &&
        tm__client_op_result(c) == TM_OP_OK)
        return TM_OK;
    s->cert_verified = 0;
    set_tls_error(s, TM_TLS_FAILURE_HANDSHAKE, "EHLO over TLS to %s failed: %s", s->host,
                  tm_strerror(c->error != TM_OK ? c->error : TM_EPROTOCOL));
    return TM_EPROTOCOL;
}

/* A fresh plaintext connection to the same address, without STARTTLS. */
static int reconnect_plain(tm_session *s)
{
    tm_client *c = &s->client;
    const tm_addr *a = &s->route.addr[s->route.addr_i];
    int rc;

    drop_connection(s);
    s->route.attempts++;
    rc = tm__sock_connect(&s->sock, (const struct sockaddr *)&a->sa, a->len,
                          deadline_of(s, s->ctx->to.connect));
    if (rc != TM_OK) {
        note_failure(s, rc, NULL, "plaintext reconnection to");
        return rc;
    }
    s->tr = &s->sock.base;
    tm__client_open(c);
    if (run(s) == TM_WANT_DONE && tm__client_op_result(c) == TM_OP_OK) {
        s->state = S_READY;
        return TM_OK;
    }
    rc = c->error != TM_OK ? c->error : TM_EPROTOCOL;
    note_failure(s, rc, c->reply.code ? &c->reply : NULL, "plaintext reconnection to");
    if (tm__client_usable(c))
        quit_and_drop(s);
    else
        drop_connection(s);
    return rc;
}

/* Applies the truth table to the current connection until one satisfies
 * the policy: TM_OK, TM_ETLSREQUIRED, or the walk's last failure. */
static int apply_policy(tm_session *s)
{
    const tm_policy *p = &s->resolved.policy;

    for (;;) {
        int fatal, rc;
        tm_tls_event ev = try_tls(s, &fatal);
        tm_tls_action act = tm__policy_decide(p, ev);

        if (fatal != TM_OK)
            return fatal;
        if (act == TM_ACT_USE_TLS && ehlo_over_tls(s) != TM_OK) {
            ev = TM_EV_HANDSHAKE;
            act = tm__policy_decide(p, ev);
        }
        if (act != TM_ACT_USE_TLS && s->tls)
            tm__tls_cache_drop(s->tls);
        switch (act) {
        case TM_ACT_USE_TLS:
            tm__tls_cache_save(s->tls);
            if (!s->cert_verified)
                tm__log(s->ctx, TM_LOG_WARNING, "TLS to %s not verified: %s", s->host,
                        s->tls_error);
            return TM_OK;
        case TM_ACT_PLAIN_SAME:
            tm__log(s->ctx, TM_LOG_INFO, "plaintext: %s", s->tls_error);
            if (tm__client_usable(&s->client))
                return TM_OK;
            rc = reconnect_plain(s);
            if (rc == TM_OK || rc == TM_ENOMEM)
                return rc;
            tm__route_next_address(&s->route);
            break;
        case TM_ACT_PLAIN_NEW:
            tm__log(s->ctx, TM_LOG_INFO, "new plaintext connection: %s", s->tls_error);
            rc = reconnect_plain(s);
            if (rc == TM_OK || rc == TM_ENOMEM)
                return rc;
            /* That address failed now: walk on, with STARTTLS again. */
            tm__route_next_address(&s->route);
            break;
        case TM_ACT_NEXT_MX:
            tm__log(s->ctx, TM_LOG_INFO, "leaving %s: %s", s->host, s->tls_error);
            /* After a failed handshake the connection is unusable: not even
             * a QUIT goes over it.  Under require_tls nothing but EHLO,
             * STARTTLS and QUIT is ever sent in plaintext. */
            if (tm__client_usable(&s->client) && ev != TM_EV_HANDSHAKE)
                quit_and_drop(s);
            else
                drop_connection(s);
            if (ev == TM_EV_CLOSING)
                note_failure(s, TM_EREJECTED, &s->client.reply, "421 to STARTTLS from");
            else
                note_failure(s, TM_ETLSREQUIRED, NULL, "TLS not available from");
            tm__route_next_host(&s->route);
            break;
        }
        rc = connect_walk(s);
        if (rc != TM_OK)
            return TM_FLAG(p->require_tls) ? TM_ETLSREQUIRED : rc;
    }
}

/* ---- sessions ------------------------------------------------------------------ */

static int session_new(tm_session **out, tm_context *ctx, const char *domain,
                       const tm_session_options *o, int64_t deadline)
{
    tm_session *s;

    *out = NULL;
    if (o && (tm__version_ok(o->version, TM_SESSION_OPTIONS_VERSION) != TM_OK || o->port > 65535))
        return TM_EINVAL;
    if ((!domain || !*domain) && !(o && o->host))
        return TM_EINVAL;
    if (domain && tm__name_check(domain) != TM_OK)
        return TM_EINVAL;
    if (o && o->host && tm__name_check(o->host) != TM_OK)
        return TM_EINVAL;
    s = tm__calloc(1, sizeof *s);
    if (!s)
        return TM_ENOMEM;
    s->ctx = ctx;
    s->state = S_IDLE;
    s->deadline = deadline;
    s->tls_failure = TM_TLS_FAILURE_NOT_TRIED;
    if (domain)
        tm__strlcpy(s->domain, domain, sizeof s->domain);
    tm__sock_init(&s->sock);
    tm__client_init(&s->client, ctx->helo_name);
    s->drive.c = &s->client;
    s->drive.ctx = ctx;
    s->drive.deadline = deadline;
    s->drive.ibuf = s->ibuf;
    s->drive.ibuf_size = sizeof s->ibuf;
    s->msg_policy.version = TM_POLICY_VERSION;
    *out = s;
    return TM_OK;
}

/* Finds the hosts: TM_OK, or a DNS failure written to the status. */
static int session_route(tm_session *s, const tm_session_options *o, tm_delivery_status *st)
{
    char why[TM_TEXT_MAX], enhanced[TM_ENHANCED_MAX];
    unsigned int port = (o && o->port) ? o->port : s->ctx->port;
    int rc = tm__route_init(&s->route, s->ctx, s->domain, o ? o->host : NULL, port, s->deadline,
                            why, sizeof why, enhanced);

    if (rc != TM_OK) {
        tm__status_set_enhanced(st, enhanced);
        tm__status_describe(st, "%s", why);
    }
    return rc;
}

/* The status of a walk that reached no usable host: its last failure. */
static void status_failure(tm_session *s, tm_delivery_status *st, int rc)
{
    tm_failure *f = &s->fail;

    if (!st)
        return;
    tm__status_set_host(st, f->host[0] ? f->host : s->host, f->host[0] ? f->address : s->address,
                        s->route.port, s->route.attempts);
    tm__status_set_code(st, f->code, f->enhanced, f->message); /* the failure's own reply */
    if (s->tls_failure != TM_TLS_FAILURE_NOT_TRIED)
        tm__status_set_tls(st, 0, 0, s->tls_failure, s->tls_error, NULL, NULL);
    if (rc == TM_ETLSREQUIRED)
        tm__status_describe(st, "TLS required, but no MX host of %s gave %s: %s",
                            s->route.explicit_host ? s->route.mx[0].host : s->domain,
                            TM_FLAG(s->resolved.policy.skip_verify) ? "TLS" : "verified TLS",
                            s->tls_error);
    else
        tm__status_describe(st, "%s", f->why[0] ? f->why : tm_strerror(rc));
}

static void status_connection(const tm_session *s, tm_delivery_status *st)
{
    tm__status_set_host(st, s->host, s->address, s->route.port, s->route.attempts);
    tm__status_set_tls(st, s->tls_active, s->cert_verified, s->tls_failure, s->tls_error,
                       s->tls_active ? tm__tls_version(s->tls) : NULL,
                       s->tls_active ? tm__tls_cipher(s->tls) : NULL);
}

/* The status of a session ready to send: the server's last word (EHLO),
 * the connection and its TLS. */
static int status_ready(const tm_session *s, tm_delivery_status *st, int64_t start)
{
    if (st) {
        tm__status_set_reply(st, &s->client.reply);
        status_connection(s, st);
    }
    tm__status_finish(st, TM_OK, start);
    return TM_OK;
}

TM_EXTERN int tm_session_open(tm_session **out, tm_context *ctx, const char *domain,
                              const tm_session_options *o, tm_delivery_status *st)
{
    int64_t start = tm__now_ms();
    tm_session *s = NULL;
    int rc;

    if (out)
        *out = NULL;
    if (st && tm__status_reset(st) != TM_OK)
        return TM_EINVAL;
    if (!out || !ctx) {
        tm__status_finish(st, TM_EINVAL, start);
        return TM_EINVAL;
    }
    rc = session_new(&s, ctx, domain, o, tm__deadline(ctx->to.delivery));
    if (rc == TM_OK)
        rc = session_route(s, o, st);
    if (rc == TM_OK) {
        rc = connect_walk(s);
        if (rc != TM_OK)
            status_failure(s, st, rc);
    }
    if (rc != TM_OK) {
        tm_session_close(s);
        tm__status_finish(st, rc, start);
        return rc;
    }
    *out = s;
    return status_ready(s, st, start);
}

TM_EXTERN int tm_starttls(tm_session *s, const tm_policy *policy, tm_delivery_status *st)
{
    int64_t start = tm__now_ms();
    int rc;

    if (st && tm__status_reset(st) != TM_OK)
        return TM_EINVAL;
    if (!s || tm__policy_check(policy) != TM_OK)
        rc = TM_EINVAL;
    else if (s->policy_applied || s->state != S_READY)
        rc = TM_ESTATE;
    else
        rc = TM_OK;
    if (rc != TM_OK) {
        tm__status_set_result(st, TM_RESULT_DEFERRED);
        tm__status_finish(st, rc, start);
        return rc;
    }
    if (policy)
        s->msg_policy = *policy;
    tm__settings_resolve(s->ctx, policy, NULL, s->domain[0] ? s->domain : NULL, &s->resolved);
    s->policy_applied = 1;
    tm__status_set_policy(st, &s->resolved);
    rc = apply_policy(s);
    if (rc != TM_OK) {
        drop_connection(s);
        s->state = S_BROKEN;
        tm__status_set_result(st, TM_RESULT_DEFERRED);
        status_failure(s, st, rc);
        tm__status_finish(st, rc, start);
        return rc;
    }
    return status_ready(s, st, start);
}

/* ---- messages ------------------------------------------------------------------ */

/* Addresses and content, checked before a byte is written. */
static int check_message(const tm_message *m, const char *domain, int *utf8)
{
    size_t i;
    int non_ascii = 0;

    *utf8 = 0;
    if (!m->from || !m->to || m->to_count == 0 || (!m->read && !m->data && m->size > 0))
        return TM_EINVAL;
    if (m->rcpt_status_cap > 0 && !m->rcpt_status)
        return TM_EINVAL;
    if (tm__address_check(m->from, 1, &non_ascii) != TM_OK)
        return TM_EADDRESS;
    *utf8 |= non_ascii;
    for (i = 0; i < m->to_count; i++) {
        if (!m->to[i] || tm__address_check(m->to[i], 0, &non_ascii) != TM_OK)
            return TM_EADDRESS;
        *utf8 |= non_ascii;
        if (domain && *domain && !tm__domain_equal(tm__address_domain(m->to[i]), domain))
            return TM_EADDRESS;
    }
    return TM_OK;
}

/* Scans in-memory content once: NUL bytes, 8-bit bytes. */
static void scan_content(const unsigned char *p, size_t n, int *has_nul, int *has_8bit)
{
    size_t i = 0;
    uint64_t hi = 0;

    *has_nul = n > 0 && memchr(p, 0, n) != NULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        hi |= w;
    }
    for (; i < n; i++)
        hi |= p[i];
    *has_8bit = (hi & 0x8080808080808080ull) != 0;
}

/*
 * Sends the message over the ready connection in as many transactions as
 * it takes: at most TM_TXN_RCPT_MAX recipients each, and the recipients a
 * server put off with 452 in the next.  Returns the error of the last
 * transaction that failed (TM_OK if none); *unsent says whether nothing
 * can have reached the server (another MX may then be tried).
 */
static int send_transactions(tm_session *s, const tm_message *m, int utf8, int has_8bit,
                             tm_outcome *o, int *unsent)
{
    tm_client *c = &s->client;
    tm_txn *t = &s->txn;
    size_t next = 0, ncarry = 0, i, carry[TM_TXN_RCPT_MAX];
    int rc = TM_OK;

    *unsent = 1;
    while (next < m->to_count || ncarry > 0) {
        tm_source src;
        tm_want w;
        int op;

        t->nto = 0;
        for (i = 0; i < ncarry; i++, t->nto++) {
            t->idx[t->nto] = carry[i];
            t->to[t->nto] = m->to[carry[i]];
        }
        for (; next < m->to_count && t->nto < TM_TXN_RCPT_MAX; next++, t->nto++) {
            t->idx[t->nto] = next;
            t->to[t->nto] = m->to[next];
        }
        ncarry = 0;
        t->from = m->from;
        t->data = m->read ? NULL : m->data;
        t->size = m->read ? 0 : m->size;
        t->has_8bit = has_8bit;
        t->utf8 = utf8;
        t->quit_after = s->quit_last && next == m->to_count;
        t->out = o;
        memset(&src, 0, sizeof src);
        src.data = t->data;
        src.size = t->size;
        src.read = m->read;
        src.arg = m->read_arg;
        s->drive.src = &src;

        if (tm__client_mail(c, t) != TM_OK) {
            rc = TM_ESTATE; /* the connection went unusable behind us */
            break;
        }
        tm__outcome_txn(o);
        w = run(s);
        s->drive.src = NULL;
        op = tm__client_op_result(c);
        if (c->error != TM_OK)
            rc = c->error;
        if (c->content_mark)
            *unsent = 0;
        /* The engine recorded everyone but the recipients put off. */
        for (i = 0; i < t->nto; i++)
            if (t->state[i] == TM_R_CARRY)
                carry[ncarry++] = t->idx[i];
        if (w == TM_WANT_FAILED || op == TM_OP_CLOSING || !tm__client_usable(c)) {
            if (op == TM_OP_CLOSING && rc == TM_OK)
                rc = TM_EREJECTED;
            if (w == TM_WANT_FAILED && (c->error == TM_EUNCERTAIN || c->error == TM_ECONTENT ||
                                        c->error == TM_EREAD))
                *unsent = 0;
            break;
        }
        /* A streamed message cannot be read twice. */
        if (m->read && (ncarry > 0 || next < m->to_count))
            break;
    }
    /* Recipients that no transaction took: not delivered. */
    for (i = 0; i < ncarry; i++)
        tm__outcome_set(o, carry[i], TM_RESULT_DEFERRED, NULL);
    for (; next < m->to_count; next++)
        tm__outcome_set(o, next, TM_RESULT_DEFERRED, NULL);
    if (!tm__client_usable(c)) {
        drop_connection(s);
        s->state = S_BROKEN;
    }
    return rc;
}

/* The sending domain of a message: explicit, else the sender's domain. */
static const char *sending_domain(const tm_message *m)
{
    if (m->sending_domain)
        return m->sending_domain;
    return m->from ? tm__address_domain(m->from) : NULL;
}

/* A message refused before anything was sent: every recipient gets
 * `result`.  Returns rc. */
static int refuse(tm_delivery_status *st, tm_outcome *o, const tm_message *m, int rc, int result,
                  int64_t start, const char *why)
{
    size_t i;

    if (m && m->to && o) {
        tm__outcome_begin(o, m->to, m->to_count);
        for (i = 0; i < m->to_count; i++)
            tm__outcome_set(o, i, result, NULL);
    }
    tm__status_set_result(st, result);
    if (why)
        tm__status_describe(st, "%s", why);
    tm__status_finish(st, rc, start);
    return rc;
}

/* One message over a ready session.  pre: the policy already resolved
 * (tm_deliver), or NULL to resolve it for this message's sending domain. */
static int do_send(tm_session *s, const tm_message *m, tm_delivery_status *st, tm_outcome *o,
                   int64_t start, const tm_resolved *pre, int *unsent)
{
    tm_resolved r;
    int utf8, has_nul = 0, has_8bit = 0, rc;

    *unsent = 1;
    rc = check_message(m, s->domain, &utf8);
    if (rc != TM_OK)
        return refuse(st, o, m, rc, TM_RESULT_BOUNCED, start,
                      rc == TM_EADDRESS ? "invalid envelope address, or a recipient outside "
                                          "the session's domain"
                                        : NULL);
    status_connection(s, st);
    if (s->state != S_READY)
        return refuse(st, o, m, TM_ESTATE, TM_RESULT_DEFERRED, start,
                      "the session has no usable connection");
    /* One resolution per message: its sending domain may ask for more than
     * the session was opened with. */
    if (!pre) {
        tm__settings_resolve(s->ctx, &s->msg_policy, sending_domain(m),
                             s->domain[0] ? s->domain : NULL, &r);
        pre = &r;
    }
    tm__status_set_policy(st, pre);
    if (pre->policy.require_tls &&
        (!s->tls_active || (!s->cert_verified && !pre->policy.skip_verify)))
        return refuse(st, o, m, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, start,
                      s->tls_active ? "verified TLS required, but the session's certificate "
                                      "did not verify"
                                    : "TLS required, but the session is not over TLS");
    if (!m->read)
        scan_content(m->data, m->size, &has_nul, &has_8bit);
    if (has_nul)
        return refuse(st, o, m, TM_ECONTENT, TM_RESULT_BOUNCED, start,
                      "message content contains a NUL byte");

    /* Nothing of an earlier attempt (another MX) stays in the status. */
    tm__status_set_reply(st, NULL);
    tm__status_describe(st, NULL);
    tm__outcome_begin(o, m->to, m->to_count);
    rc = send_transactions(s, m, utf8, has_8bit, o, unsent);
    rc = tm__outcome_result(o, rc);
    tm__status_finish(st, rc, start);
    return rc;
}

static void outcome_of(tm_outcome *o, tm_delivery_status *st, const tm_message *m)
{
    o->st = st;
    o->rcpt = m->rcpt_status;
    o->cap = m->rcpt_status_cap;
}

TM_EXTERN int tm_send(tm_session *s, const tm_message *msg, tm_delivery_status *st)
{
    int64_t start = tm__now_ms();
    tm_message m;
    tm_outcome o;
    int unsent;

    if (!st || tm__status_reset(st) != TM_OK)
        return TM_EINVAL;
    if (!s || tm__message_copy(&m, msg) != TM_OK)
        return refuse(st, NULL, NULL, TM_EINVAL, TM_RESULT_BOUNCED, start, NULL);
    outcome_of(&o, st, &m);
    return do_send(s, &m, st, &o, start, NULL, &unsent);
}

TM_EXTERN void tm_session_close(tm_session *s)
{
    if (!s)
        return;
    if (s->state == S_READY && tm__client_usable(&s->client))
        quit_and_drop(s);
    else
        drop_connection(s);
    tm__tls_free(s->tls);
    tm__free(s);
}

/* ---- one-shot ------------------------------------------------------------------ */

TM_EXTERN int tm_deliver(tm_context *ctx, const tm_message *msg, const tm_policy *policy,
                         const tm_session_options *o, tm_delivery_status *st)
{
    int64_t start = tm__now_ms();
    tm_session *s = NULL;
    tm_message m;
    tm_outcome out;
    const char *domain;
    int utf8, rc, unsent = 1;
    size_t i;

    if (!st || tm__status_reset(st) != TM_OK)
        return TM_EINVAL;
    if (!ctx || tm__message_copy(&m, msg) != TM_OK || tm__policy_check(policy) != TM_OK)
        return refuse(st, NULL, NULL, TM_EINVAL, TM_RESULT_BOUNCED, start, NULL);
    outcome_of(&out, st, &m);
    rc = check_message(&m, NULL, &utf8);
    if (rc != TM_OK)
        return refuse(st, &out, &m, rc, TM_RESULT_BOUNCED, start,
                      rc == TM_EADDRESS ? "invalid envelope address" : NULL);
    domain = tm__address_domain(m.to[0]);
    for (i = 1; i < m.to_count; i++)
        if (!tm__domain_equal(tm__address_domain(m.to[i]), domain))
            return refuse(st, &out, &m, TM_EADDRESS, TM_RESULT_BOUNCED, start,
                          "all recipients of one delivery must share a domain");

    rc = session_new(&s, ctx, domain, o, tm__deadline(ctx->to.delivery));
    if (rc != TM_OK)
        return refuse(st, &out, &m, rc, rc == TM_EINVAL ? TM_RESULT_BOUNCED : TM_RESULT_DEFERRED,
                      start, NULL);
    s->policy_applied = 1;
    if (policy)
        s->msg_policy = *policy;
    tm__settings_resolve(ctx, policy, sending_domain(&m), domain, &s->resolved);
    tm__status_set_policy(st, &s->resolved);
    rc = session_route(s, o, st);
    if (rc != TM_OK) {
        int result = rc == TM_ENODOMAIN || rc == TM_ENULLMX ? TM_RESULT_BOUNCED
                                                              : TM_RESULT_DEFERRED;
        tm_session_close(s);
        tm__outcome_begin(&out, m.to, m.to_count);
        for (i = 0; i < m.to_count; i++)
            tm__outcome_set(&out, i, result, NULL);
        tm__status_set_result(st, result);
        tm__status_finish(st, rc, start);
        return rc;
    }
    s->quit_last = 1;
    for (;;) {
        rc = connect_walk(s);
        if (rc == TM_OK)
            rc = apply_policy(s);
        if (rc != TM_OK)
            break;
        rc = do_send(s, &m, st, &out, start, &s->resolved, &unsent);
        /* Another MX only when nothing can have been delivered and the
         * connection, not the message, failed. */
        if (rc == TM_OK || !unsent || st->rcpt_delivered || st->rcpt_uncertain ||
            s->state != S_BROKEN || !tm__route_more_hosts(&s->route))
            break;
        tm__log(ctx, TM_LOG_INFO, "%s failed before the end of data: trying the next MX", s->host);
        note_failure(s, rc, st->code ? &s->client.reply : NULL, "transaction failed with");
        tm__route_next_host(&s->route);
    }
    if (rc != TM_OK && st->rcpt_count == 0) {
        /* No transaction was attempted: the status holds the walk's last
         * failure, and nobody got the message. */
        status_failure(s, st, rc);
        tm__outcome_begin(&out, m.to, m.to_count);
        for (i = 0; i < m.to_count; i++)
            tm__outcome_set(&out, i, TM_RESULT_DEFERRED, NULL);
        tm__status_set_result(st, TM_RESULT_DEFERRED);
    } else {
        tm__status_set_host(st, s->host, s->address, s->route.port, s->route.attempts);
    }
    tm_session_close(s);
    tm__status_finish(st, rc, start);
    return rc;
}
