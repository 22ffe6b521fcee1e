/*
 * session.c - the public session entry points: tm_session_open,
 * tm_starttls, tm_send, tm_session_close and the one-shot tm_deliver; a
 * message's checks and its transactions.
 *
 * The SMTP dialogue is the engine's (client.c), the connection and its
 * STARTTLS under the policy connect.c's, the MX walk mx.c's; the status is
 * written by status.c.  Every buffer is part of the session allocation: a
 * message costs no allocation.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

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
        /* A validating resolver answers SERVFAIL for a bogus MX RRset. */
        if (rc == TM_EDNS && s->ctx->dane)
            tm__status_set_dane(st, TM_DANE_FAILED, 0, TM_VERIFIED_BY_NONE, NULL);
        return rc;
    }
    /* MTA-STS (RFC 8461) speaks for the domain's MX hosts, not for a host
     * the caller chose. */
    if (!s->route.explicit_host) {
        /* Bounded by sts_timeout, and by half of what the delivery has
         * left: a blocked fetch must leave time to deliver. */
        int64_t now = tm__now_ms(), deadline = tm__deadline(s->ctx->sts_timeout);
        if (s->deadline != INT64_MAX)
            deadline = tm__min_deadline(deadline, now + (s->deadline - now) / 2);
        rc = tm__sts_resolve(s->ctx, s->domain, deadline, &s->sts);
    }
    return rc;
}

/* The MTA-STS part of the status. */
static void status_sts(const tm_session *s, tm_delivery_status *st)
{
    tm__status_set_sts(st, tm__session_sts(s), s->sts.entry.id, s->sts.from_cache,
                       s->sts_refused, s->sts_error[0] ? s->sts_error : s->sts.why);
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
    if (s->tls_failure != TM_TLS_FAILURE_NOT_TRIED || s->tls_error[0])
        tm__status_set_tls(st, 0, 0, 0, s->tls_failure, s->tls_error, NULL, NULL);
    tm__status_set_dane(st, s->dane_left, s->route.mx_secure, TM_VERIFIED_BY_NONE, NULL);
    tm__status_set_sts(st, tm__session_sts(s), s->sts.entry.id, s->sts.from_cache, 0,
                       s->sts_error[0] ? s->sts_error : s->sts.why);
    if (rc == TM_ETLSREQUIRED && tm__session_sts(s) == TM_MTA_STS_ENFORCE &&
        s->dane_left != TM_DANE_FAILED && s->resolved.floor != TM_FLOOR_DANE)
        tm__status_describe(st, "the MTA-STS policy of %s (enforce) allows no MX host that "
                                "gave TLS with a certificate valid for its name: %s",
                            s->domain, s->sts_error[0] ? s->sts_error : s->tls_error);
    else if (rc == TM_ETLSREQUIRED && (s->dane_left == TM_DANE_FAILED ||
                                  s->resolved.floor == TM_FLOOR_DANE))
        tm__status_describe(st, "no MX host of %s gave TLS that its TLSA records (DANE) "
                                "authenticate: %s",
                            s->route.explicit_host ? s->route.mx[0].host : s->domain,
                            s->tls_error);
    else if (rc == TM_ETLSREQUIRED)
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
    tm__status_set_tls(st, s->tls_active, s->cert_verified,
                       s->tls_active && tm__tls_resumed(s->tls), s->tls_failure, s->tls_error,
                       s->tls_active ? tm__tls_version(s->tls) : NULL,
                       s->tls_active ? tm__tls_cipher(s->tls) : NULL);
    tm__status_set_dane(st, tm__session_dane(s), s->route.mx_secure,
                        s->route.dane == TM_HD_USABLE ? TM_VERIFIED_BY_DANE : TM_VERIFIED_BY_PKIX,
                        s->dane_tlsa);
    status_sts(s, st);
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
        rc = tm__session_connect(s);
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
    rc = tm__session_apply_policy(s);
    if (rc != TM_OK) {
        tm__session_drop(s);
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

/* Scans in-memory content once: NUL bytes, 8-bit bytes.  The OR of 32
 * bytes at a time in a vector (GCC and clang vector extensions: SSE2
 * registers on x86-64, whatever the target has elsewhere). */
typedef uint64_t tm_v4 __attribute__((vector_size(32)));
static void scan_content(const unsigned char *p, size_t n, int *has_nul, int *has_8bit)
{
    size_t i = 0;
    uint64_t hi = 0;
    tm_v4 acc = { 0, 0, 0, 0 };

    *has_nul = n > 0 && memchr(p, 0, n) != NULL;
    for (; i + 32 <= n; i += 32) {
        tm_v4 w;
        memcpy(&w, p + i, 32);
        acc |= w;
    }
    hi = acc[0] | acc[1] | acc[2] | acc[3];
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
        w = tm__session_run(s);
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
        tm__session_drop(s);
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
        tm__session_quit(s);
    else
        tm__session_drop(s);
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
        rc = tm__session_connect(s);
        if (rc == TM_OK)
            rc = tm__session_apply_policy(s);
        if (rc != TM_OK)
            break;
        rc = do_send(s, &m, st, &out, start, &s->resolved, &unsent);
        /* Another MX only when nothing can have been delivered and the
         * connection, not the message, failed. */
        if (rc == TM_OK || !unsent || st->rcpt_delivered || st->rcpt_uncertain ||
            s->state != S_BROKEN || !tm__route_more_hosts(&s->route))
            break;
        tm__log(ctx, TM_LOG_INFO, "%s failed before the end of data: trying the next MX", s->host);
        tm__session_note_failure(s, rc, st->code ? &s->client.reply : NULL, "transaction failed with");
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
