/*
 * connect.c - a session's connection: the walk to the first MX address that
 * greets and answers EHLO, STARTTLS and the policy truth table applied to
 * what came of it (plaintext on the same connection, a fresh plaintext
 * one, the next MX), and the failures met on the way, kept aside for the
 * status.  The engine (client.c) speaks; the driver (driver.c) moves the
 * bytes; mx.c says which address is next.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static int64_t deadline_of(const tm_session *s, unsigned int ms)
{
    return tm__min_deadline(tm__deadline(ms), s->deadline);
}

static void set_tls_error(tm_session *s, int failure, const char *fmt, ...) TM_PRINTF(3, 4);

/* What MTA-STS refused or would have refused, in words (cut to fit). */
static void sts_note(tm_session *s, const char *fmt, ...) TM_PRINTF(2, 3);
static void sts_note(tm_session *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s->sts_error, sizeof s->sts_error, fmt, ap);
    va_end(ap);
}

/* The mode of the domain's MTA-STS policy (TM_STS_*), or -1 for none. */
static int sts_mode(const tm_session *s)
{
    return s->sts.state == TM_STS_R_POLICY ? s->sts.entry.policy.mode : -1;
}

/* MTA-STS speaks for the current host: a policy in enforce or testing
 * mode, and no usable TLSA records (DANE wins, RFC 8461 2). */
static int sts_applies(const tm_session *s, int mode)
{
    return sts_mode(s) == mode && s->route.dane != TM_HD_USABLE;
}

tm_want tm__session_run(tm_session *s)
{
    s->drive.tr = s->tr;
    return tm__drive(&s->drive);
}

void tm__session_drop(tm_session *s)
{
    if (s->tls_active && s->tr)
        s->tr->ops->close(s->tr);
    s->sock.base.ops->close(&s->sock.base);
    s->tr = NULL;
    s->tls_active = 0;
    s->state = S_IDLE;
}

void tm__session_quit(tm_session *s)
{
    if (s->tr && tm__client_quit(&s->client) == TM_OK && tm__session_run(s) != TM_WANT_DONE)
        tm__log(s->ctx, TM_LOG_DEBUG, "%s: no reply to QUIT", s->host);
    tm__session_drop(s);
}

/* Records a failure of the walk; the reply it came with, if any. */
void tm__session_note_failure(tm_session *s, int error, const tm_reply *r, const char *what)
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
int tm__session_connect(tm_session *s)
{
    tm_client *c = &s->client;
    int last = s->fail.error != TM_OK ? s->fail.error : TM_ECONNECT;

    for (;;) {
        const tm_addr *a;
        int rc;

        if (s->deadline != INT64_MAX && tm__now_ms() >= s->deadline) {
            if (s->fail.error == TM_OK)
                tm__session_note_failure(s, TM_ETIMEOUT, NULL, "delivery time limit reached before");
            return TM_ETIMEOUT;
        }
        a = tm__route_current(&s->route, s->ctx, deadline_of(s, s->ctx->to.connect), &rc);
        if (rc == TM_ENOMEM)
            return rc;
        if (s->route.skipped_bogus) {
            /* A TLSA lookup failed validation: that host is not used, and
             * nothing but another host can take the message. */
            s->route.skipped_bogus = 0;
            s->fail.error = TM_EDNS;
            s->fail.code = 0;
            s->fail.message[0] = s->fail.address[0] = '\0';
            tm__strlcpy(s->fail.enhanced, "4.7.5", sizeof s->fail.enhanced);
            tm__strlcpy(s->fail.why, s->route.why, sizeof s->fail.why);
            tm__strlcpy(s->fail.host, s->route.why_host, sizeof s->fail.host);
            tm__log(s->ctx, TM_LOG_WARNING, "%s", s->fail.why);
            s->dane_left = TM_DANE_FAILED;
            last = TM_EDNS;
            if (!a)
                continue;
            rc = TM_OK;
        }
        if (rc != TM_OK) {
            tm__strlcpy(s->host, tm__route_host(&s->route), sizeof s->host);
            s->address[0] = '\0';
            tm__session_note_failure(s, rc, NULL, "no usable address for");
            last = rc;
            if (!a)
                continue; /* the walk moved on by itself */
        }
        if (!a)
            return last;
        tm__strlcpy(s->host, tm__route_host(&s->route), sizeof s->host);
        tm__strlcpy(s->address, s->route.address, sizeof s->address);
        if (sts_applies(s, TM_STS_ENFORCE) && !tm__sts_mx_match(&s->sts.entry.policy, s->host)) {
            /* RFC 8461 4.1, 5: an MX host the policy does not name is
             * not used at all. */
            sts_note(s, "MTA-STS (enforce): %s matches no mx pattern of the policy of %s", s->host,
                     s->domain);
            set_tls_error(s, TM_TLS_FAILURE_NOT_TRIED, "%s", s->sts_error);
            s->fail.error = TM_ETLSREQUIRED;
            s->fail.code = 0;
            s->fail.message[0] = '\0';
            tm__strlcpy(s->fail.enhanced, "4.7.5", sizeof s->fail.enhanced);
            tm__strlcpy(s->fail.why, s->sts_error, sizeof s->fail.why);
            tm__strlcpy(s->fail.host, s->host, sizeof s->fail.host);
            tm__strlcpy(s->fail.address, s->address, sizeof s->fail.address);
            tm__log(s->ctx, TM_LOG_WARNING, "%s", s->sts_error);
            s->dane_left = tm__session_dane(s);
            last = TM_ETLSREQUIRED;
            tm__route_next_host(&s->route);
            continue;
        }
        s->route.attempts++;
        s->dane_left = tm__session_dane(s); /* what a failure here reports */
        tm__log(s->ctx, TM_LOG_INFO, "connecting to %s[%s]", s->host, s->address);
        rc = tm__sock_connect(&s->sock, (const struct sockaddr *)&a->sa, a->len,
                              deadline_of(s, s->ctx->to.connect));
        if (rc != TM_OK) {
            tm__session_note_failure(s, rc, NULL, "connect to");
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
        if (tm__session_run(s) == TM_WANT_DONE && tm__client_op_result(c) == TM_OP_OK) {
            s->state = S_READY;
            return TM_OK;
        }
        last = c->error != TM_OK ? c->error : TM_EPROTOCOL;
        tm__session_note_failure(s, last, c->reply.code ? &c->reply : NULL,
                     tm__client_op_result(c) == TM_OP_REJECTED ? "refused by" : "greeting or EHLO from");
        if (tm__client_usable(c))
            tm__session_quit(s); /* RFC 5321 3.1: say QUIT after a refusal */
        else
            tm__session_drop(s);
        if (c->leave_host)
            tm__route_next_host(&s->route);
        else
            tm__route_next_address(&s->route);
    }
}

/* ---- STARTTLS under the policy ------------------------------------------------- */

/* Why TLS is not in use, in words (cut to fit: a reason, not a record). */
static void set_tls_error(tm_session *s, int failure, const char *fmt, ...)
{
    va_list ap;

    s->tls_failure = failure;
    va_start(ap, fmt);
    vsnprintf(s->tls_error, sizeof s->tls_error, fmt, ap);
    va_end(ap);
}

/* One attempt at TLS on the current connection: what happened.
 * *resume_failed: the handshake failed while offering a cached session. */
static tm_tls_event try_tls(tm_session *s, const tm_policy *p, int *fatal, int *resume_failed)
{
    const char *sni = s->host;
    tm_client *c = &s->client;
    char err[TM_TEXT_MAX], key[TM_HOST_MAX + TM_IPADDR_MAX + 32], reply[TM_TEXT_MAX];
    tm_transport *tls_tr;
    tm_want w;
    int rc;

    *fatal = TM_OK;
    *resume_failed = 0;
    s->cert_verified = 0;
    if (!(c->caps.flags & TM_CAP_STARTTLS)) {
        set_tls_error(s, TM_TLS_FAILURE_NOT_OFFERED, "STARTTLS not offered by %s", s->host);
        return TM_EV_NOT_OFFERED;
    }
    /* Nothing is pipelined with STARTTLS. */
    tm__client_starttls(c);
    w = tm__session_run(s);
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
             p->require_tls, p->skip_verify, p->keep_unverified_tls);
    s->dane_tlsa[0] = '\0';
    if (s->route.dane == TM_HD_USABLE) {
        /* RFC 7672 3.2.2, 8.1: the TLSA base domain is the SNI and the
         * first reference identifier, the MX host name the second. */
        s->dane_names[0] = s->route.tlsa_base;
        s->dane_names[1] = s->host;
        tm__tls_set_dane(s->tls, s->route.tlsa, s->route.ntlsa, s->dane_names, 2);
        sni = s->route.tlsa_base;
    } else {
        tm__tls_set_dane(s->tls, NULL, 0, NULL, 0);
    }
    rc = tm__tls_start(s->tls, &s->sock.base, sni, key, deadline_of(s, s->ctx->to.tls), &tls_tr,
                       err, sizeof err);
    if (rc != TM_OK) {
        if (rc == TM_ENOMEM)
            *fatal = rc;
        *resume_failed = tm__tls_offered(s->tls);
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
        int m = tm__tls_dane_matched(s->tls);
        if (m >= 0 && m < s->route.ntlsa)
            snprintf(s->dane_tlsa, sizeof s->dane_tlsa, "%u %u %u", s->route.tlsa[m].usage,
                     s->route.tlsa[m].selector, s->route.tlsa[m].mtype);
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

    if (tm__client_ehlo(c) == TM_OK && tm__session_run(s) == TM_WANT_DONE &&
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

    tm__session_drop(s);
    s->route.attempts++;
    rc = tm__sock_connect(&s->sock, (const struct sockaddr *)&a->sa, a->len,
                          deadline_of(s, s->ctx->to.connect));
    if (rc != TM_OK) {
        tm__session_note_failure(s, rc, NULL, "plaintext reconnection to");
        return rc;
    }
    s->tr = &s->sock.base;
    tm__client_open(c);
    if (tm__session_run(s) == TM_WANT_DONE && tm__client_op_result(c) == TM_OP_OK) {
        s->state = S_READY;
        return TM_OK;
    }
    rc = c->error != TM_OK ? c->error : TM_EPROTOCOL;
    tm__session_note_failure(s, rc, c->reply.code ? &c->reply : NULL, "plaintext reconnection to");
    if (tm__client_usable(c))
        tm__session_quit(s);
    else
        tm__session_drop(s);
    return rc;
}

/*
 * The policy for the current host: the resolved one, raised by what DANE
 * asks of the host (RFC 7672 2.2): usable TLSA records make TLS mandatory
 * and authenticated by them alone, whatever the policy says; TLSA records
 * none of which is usable make TLS mandatory, authenticated only when the
 * policy asked for verified TLS.  Without usable TLSA records, an MTA-STS
 * policy in enforce mode makes TLS mandatory and verified (PKIX, the MX
 * name).
 */
static void host_policy(const tm_session *s, tm_policy *p)
{
    *p = s->resolved.policy;
    if (s->route.dane == TM_HD_USABLE || sts_applies(s, TM_STS_ENFORCE)) {
        /* DANE: TLS the TLSA records authenticate.  MTA-STS enforce (RFC
         * 8461 5): TLS with a certificate valid for the MX name.  Either
         * way, whatever the policy says. */
        p->require_tls = 1;
        p->skip_verify = 0;
        p->keep_unverified_tls = 0;
    } else if (s->route.dane == TM_HD_UNUSABLE) {
        if (!p->require_tls)
            p->skip_verify = 1;
        p->require_tls = 1;
    }
}

/* What DANE made of the current host, once its connection is settled. */
int tm__session_dane(const tm_session *s)
{
    switch (s->route.dane) {
    case TM_HD_INSECURE:
        return TM_DANE_INSECURE;
    case TM_HD_NO_TLSA:
        return TM_DANE_NO_TLSA;
    case TM_HD_UNUSABLE:
        return TM_DANE_TLSA_UNUSABLE;
    case TM_HD_USABLE:
        if (!s->policy_applied)
            return TM_DANE_PENDING;
        return s->tls_active && s->cert_verified ? TM_DANE_VERIFIED : TM_DANE_FAILED;
    case TM_HD_BOGUS:
        return TM_DANE_FAILED;
    default:
        return TM_DANE_OFF;
    }
}

int tm__session_sts(const tm_session *s)
{
    switch (s->sts.state) {
    case TM_STS_R_NONE:
        return TM_MTA_STS_NO_POLICY;
    case TM_STS_R_FETCH_FAILED:
        return TM_MTA_STS_FETCH_FAILED;
    case TM_STS_R_POLICY:
        return sts_mode(s) == TM_STS_ENFORCE   ? TM_MTA_STS_ENFORCE
               : sts_mode(s) == TM_STS_TESTING ? TM_MTA_STS_TESTING
                                                : TM_MTA_STS_NONE;
    default:
        return TM_MTA_STS_OFF;
    }
}

/* Testing mode: 1 if enforce would refuse the current host and its
 * connection, why in s->sts_error. */
static int sts_would_refuse(tm_session *s)
{
    const char *pre = "MTA-STS (testing): enforce would refuse";

    if (!sts_applies(s, TM_STS_TESTING) || !s->policy_applied || !s->host[0])
        return 0;
    if (!tm__sts_mx_match(&s->sts.entry.policy, s->host))
        sts_note(s, "%s %s: it matches no mx pattern of the policy of %s", pre, s->host,
                 s->domain);
    else if (!s->tls_active)
        sts_note(s, "%s %s: no TLS (%s)", pre, s->host, s->tls_error);
    else if (!s->cert_verified)
        sts_note(s, "%s %s: its certificate is not valid for the MX name (%s)", pre, s->host,
                 s->tls_error);
    else
        return 0;
    tm__log(s->ctx, TM_LOG_WARNING, "%s", s->sts_error);
    return 1;
}

/* The connection satisfies the policy: what testing mode makes of it. */
static int settled(tm_session *s)
{
    s->sts_refused = sts_would_refuse(s);
    return TM_OK;
}

/* Applies the truth table to the current connection until one satisfies
 * the policy: TM_OK, TM_ETLSREQUIRED, or the walk's last failure. */
int tm__session_apply_policy(tm_session *s)
{
    tm_policy host;
    const tm_policy *p = &host;
    int retried = 0;

    for (;;) {
        int fatal, resume_failed, rc;
        tm_tls_event ev;
        tm_tls_action act;

        host_policy(s, &host);
        if (s->resolved.floor == TM_FLOOR_DANE && s->route.dane != TM_HD_USABLE) {
            /* Floor dane: only hosts whose TLSA records can authenticate
             * them.  Nothing but EHLO and QUIT was said. */
            set_tls_error(s, TM_TLS_FAILURE_NOT_TRIED,
                          "recipient floor dane: %s has no usable TLSA records (DANE %s)",
                          s->host, s->ctx->dane ? tm_dane_name(tm__session_dane(s)) : "off");
            s->dane_left = tm__session_dane(s);
            tm__session_quit(s);
            tm__session_note_failure(s, TM_ETLSREQUIRED, NULL, "DANE not available from");
            tm__route_next_host(&s->route);
            rc = tm__session_connect(s);
            if (rc != TM_OK)
                return TM_ETLSREQUIRED;
            continue;
        }
        ev = try_tls(s, p, &fatal, &resume_failed);
        act = tm__policy_decide(p, ev);

        if (fatal != TM_OK)
            return fatal;
        if (resume_failed && !retried) {
            /* The handshake failed offering a cached session (the session
             * is now forgotten).  The server may have changed: a TLS 1.3
             * session makes mbedTLS offer TLS 1.3 alone, which a server
             * now limited to TLS 1.2 refuses.  One fresh try on a new
             * connection to the same address, before the policy speaks;
             * an attacker forcing this only gets a full handshake. */
            retried = 1;
            tm__log(s->ctx, TM_LOG_INFO, "%s; again without resuming", s->tls_error);
            tm__session_drop(s);
            rc = tm__session_connect(s);
            if (rc != TM_OK)
                return TM_FLAG(p->require_tls) ? TM_ETLSREQUIRED : rc;
            continue;
        }
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
            return settled(s);
        case TM_ACT_PLAIN_SAME:
            /* Not offered, or refused with nothing after the refusal (the
             * engine makes trailing bytes a violation): the connection
             * goes on as it is. */
            tm__log(s->ctx, TM_LOG_INFO, "plaintext: %s", s->tls_error);
            return settled(s);
        case TM_ACT_PLAIN_NEW:
            tm__log(s->ctx, TM_LOG_INFO, "new plaintext connection: %s", s->tls_error);
            rc = reconnect_plain(s);
            if (rc == TM_OK)
                return settled(s);
            if (rc == TM_ENOMEM)
                return rc;
            /* That address failed now: walk on, with STARTTLS again. */
            tm__route_next_address(&s->route);
            break;
        case TM_ACT_NEXT_MX:
            tm__log(s->ctx, TM_LOG_INFO, "leaving %s: %s", s->host, s->tls_error);
            if (sts_applies(s, TM_STS_ENFORCE))
                sts_note(s, "MTA-STS (enforce): left %s: %s", s->host, s->tls_error);
            s->dane_left = s->route.dane == TM_HD_USABLE ? TM_DANE_FAILED : tm__session_dane(s);
            /* After a failed handshake the connection is unusable: not even
             * a QUIT goes over it.  Under require_tls nothing but EHLO,
             * STARTTLS and QUIT is ever sent in plaintext. */
            if (tm__client_usable(&s->client) && ev != TM_EV_HANDSHAKE)
                tm__session_quit(s);
            else
                tm__session_drop(s);
            if (ev == TM_EV_CLOSING)
                tm__session_note_failure(s, TM_EREJECTED, &s->client.reply, "421 to STARTTLS from");
            else
                tm__session_note_failure(s, TM_ETLSREQUIRED, NULL, "TLS not available from");
            tm__route_next_host(&s->route);
            break;
        }
        rc = tm__session_connect(s);
        if (rc != TM_OK)
            return TM_FLAG(p->require_tls) ? TM_ETLSREQUIRED : rc;
    }
}
