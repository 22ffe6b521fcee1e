/*
 * session.c - drives the SMTP dialogue over the transport.
 *
 * The session walks a list of MX hosts (or one explicit host), each with a
 * few addresses, and keeps its position so that tm_starttls can move on
 * under require_tls and tm_deliver can fail over.  All buffers are part of
 * the session allocation; a message costs no allocation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { S_IDLE, S_READY, S_BROKEN };

#define TM_WBUF_SIZE 16384
#define TM_IBUF_SIZE 16384

struct tm_session {
    tm_context *ctx;
    tm_conn conn;
    int state;

    char domain[TM_HOST_MAX];
    unsigned int port;
    int explicit_host;
    tm_mx mx[TM_MX_MAX];
    int nmx, mx_i;
    tm_addr addr[TM_ADDR_MAX];
    int naddr, addr_i, addr_resolved;
    int all_permanent;    /* every host tried so far failed permanently */
    unsigned int attempts;
    int64_t deadline;     /* overall deadline of the walk (INT64_MAX: none) */

    /* Where we are connected. */
    char host[TM_HOST_MAX];
    char address[TM_IPADDR_MAX];
    tm_caps caps;
    int esmtp;

    /* Policy and TLS outcome.  policy is what the connection was made
     * under (resolved); msg_policy the message-level policy given to
     * tm_starttls, resolved again for each message's sending domain. */
    tm_policy policy;
    tm_policy msg_policy;
    tm_resolved resolved;
    int policy_applied;
    struct tm_tls *tls;
    int tls_failure;
    int cert_verified;
    char tls_error[TM_TEXT_MAX];

    /* Set by tm_send: the failure happened before the end of data was sent
     * and left the connection unusable, so another MX may be tried. */
    int failover_ok;

    /* Set by tm_deliver: the next transaction is the connection's last, so
     * with PIPELINING its QUIT rides in the same write as the end of the
     * content (RFC 2920 3.1: QUIT may end a group).  quit_sent: it went. */
    int quit_last, quit_sent;

    tm_reply reply;
    size_t rpos, rlen;
    size_t wlen;
    unsigned char rbuf[2 * TM_REPLY_LINE_MAX];
    unsigned char wbuf[TM_WBUF_SIZE];
    unsigned char ibuf[TM_IBUF_SIZE];
};

static int64_t cmd_deadline(const tm_session *s, unsigned int ms)
{
    int64_t d = tm_deadline(ms);
    return d < s->deadline ? d : s->deadline;
}

/* ---- reading and writing ------------------------------------------------ */

static int read_reply(tm_session *s, unsigned int timeout_ms)
{
    int64_t deadline = cmd_deadline(s, timeout_ms);

    tm_reply_reset(&s->reply);
    for (;;) {
        long n;

        if (s->rlen > s->rpos) {
            size_t used = 0;
            int rc = tm_reply_parse(&s->reply, (const char *)s->rbuf + s->rpos, s->rlen - s->rpos,
                                    &used);
            s->rpos += used;
            if (rc == 1) {
                tm_log(s->ctx, TM_LOG_DEBUG, "S: %d %.200s", s->reply.code, s->reply.text);
                return TM_OK;
            }
            if (rc < 0) {
                tm_log(s->ctx, TM_LOG_INFO, "%s: malformed reply", s->host);
                return TM_EPROTOCOL;
            }
        }
        if (s->rpos > 0) {
            memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
            s->rlen -= s->rpos;
            s->rpos = 0;
        }
        if (s->rlen == sizeof s->rbuf)
            return TM_EPROTOCOL; /* cannot happen: the parser bounds a line */
        n = tm_conn_read(&s->conn, s->rbuf + s->rlen, sizeof s->rbuf - s->rlen, deadline);
        if (n < 0)
            return (int)n;
        s->rlen += (size_t)n;
    }
}

/* Appends a command line (without CRLF) to the write buffer. */
static int queue_cmd(tm_session *s, const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0, lc = c ? strlen(c) : 0;

    if (s->wlen + la + lb + lc + 2 > sizeof s->wbuf)
        return TM_EINVAL;
    memcpy(s->wbuf + s->wlen, a, la);
    if (lb)
        memcpy(s->wbuf + s->wlen + la, b, lb);
    if (lc)
        memcpy(s->wbuf + s->wlen + la + lb, c, lc);
    s->wlen += la + lb + lc;
    tm_log(s->ctx, TM_LOG_DEBUG, "C: %s%s%s", a, b ? b : "", c ? c : "");
    s->wbuf[s->wlen++] = '\r';
    s->wbuf[s->wlen++] = '\n';
    return TM_OK;
}

static int flush(tm_session *s, unsigned int timeout_ms)
{
    int rc;

    if (s->wlen == 0)
        return TM_OK;
    rc = tm_conn_write(&s->conn, s->wbuf, s->wlen, cmd_deadline(s, timeout_ms));
    s->wlen = 0;
    return rc;
}

/* Sends one command and reads its reply.  A reply may only answer a
 * command: bytes already waiting before it is sent were not asked for
 * (injection, or a server out of step), and end the conversation. */
static int command(tm_session *s, const char *a, const char *b, unsigned int timeout_ms)
{
    int rc;

    if (s->rlen > s->rpos) {
        tm_log(s->ctx, TM_LOG_INFO, "%s: unsolicited data before %s", s->host, a);
        return TM_EPROTOCOL;
    }
    rc = queue_cmd(s, a, b, NULL);
    if (rc == TM_OK)
        rc = flush(s, timeout_ms);
    if (rc == TM_OK)
        rc = read_reply(s, timeout_ms);
    return rc;
}

static void drop_connection(tm_session *s)
{
    tm_conn_close(&s->conn);
    s->rpos = s->rlen = s->wlen = 0;
    s->caps.flags = 0;
    s->caps.size_limit = 0;
    s->quit_sent = 0;
    s->state = S_IDLE;
}

static void quit_and_drop(tm_session *s)
{
    if (s->conn.fd >= 0 && command(s, "QUIT", NULL, s->ctx->to.quit) != TM_OK)
        tm_log(s->ctx, TM_LOG_DEBUG, "%s: no reply to QUIT", s->host);
    drop_connection(s);
}

/* The QUIT went with the last command group: its reply follows the one
 * just read (RFC 5321 4.1.1.10: wait for it), then the connection ends. */
static void finish_pipelined_quit(tm_session *s)
{
    if (read_reply(s, s->ctx->to.quit) != TM_OK)
        tm_log(s->ctx, TM_LOG_DEBUG, "%s: no reply to QUIT", s->host);
    drop_connection(s);
}

/* ---- connecting ----------------------------------------------------------- */

static int ehlo(tm_session *s)
{
    int rc = command(s, "EHLO ", s->ctx->helo_name, s->ctx->to.ehlo);

    s->caps.flags = 0;
    s->caps.size_limit = 0;
    s->esmtp = 0;
    if (rc != TM_OK)
        return rc;
    if (s->reply.code == 250) {
        tm_caps_parse(&s->caps, &s->reply);
        s->esmtp = 1;
        return TM_OK;
    }
    if (s->reply.code / 100 != 5 || s->reply.code == 521 || s->reply.code == 554)
        return TM_EREJECTED;
    /* An old server that knows no EHLO. */
    rc = command(s, "HELO ", s->ctx->helo_name, s->ctx->to.ehlo);
    if (rc != TM_OK)
        return rc;
    return s->reply.code == 250 ? TM_OK : TM_EREJECTED;
}

static void note_failure(tm_session *s, tm_delivery_status *st, int rc, int permanent,
                         const char *what)
{
    if (!permanent)
        s->all_permanent = 0;
    if (!st)
        return;
    st->error = rc;
    if (s->reply.code) {
        tm_status_set_reply(st, &s->reply);
    } else {
        st->code = 0;
        st->enhanced_code[0] = '\0';
        st->message[0] = '\0';
    }
    tm_strlcpy(st->mx_host, s->host, sizeof st->mx_host);
    tm_strlcpy(st->mx_address, s->address, sizeof st->mx_address);
    tm_status_describe(st, "%s %s[%s]: %s", what, s->host, s->address, tm_strerror(rc));
    tm_log(s->ctx, TM_LOG_INFO, "%s", st->description);
}

/* Connects to the current address, reads the greeting, says EHLO.  Returns
 * TM_OK, or an error with *next_mx set when the whole host should be left
 * (a 5xx greeting). */
static int open_current(tm_session *s, tm_delivery_status *st, int *next_mx)
{
    tm_addr *a = &s->addr[s->addr_i];
    int fd, rc;

    *next_mx = 0;
    tm_net_ntop((struct sockaddr *)&a->sa, s->address, sizeof s->address);
    tm_reply_reset(&s->reply);
    s->attempts++;
    tm_log(s->ctx, TM_LOG_INFO, "connecting to %s[%s]", s->host, s->address);
    rc = tm_net_connect((struct sockaddr *)&a->sa, a->len, cmd_deadline(s, s->ctx->to.connect),
                        &fd);
    if (rc != TM_OK) {
        note_failure(s, st, rc == TM_ENOMEM ? TM_ENOMEM : rc, 0, "connect to");
        return rc;
    }
    s->conn.fd = fd;
    s->conn.tls_active = 0;
    s->rpos = s->rlen = s->wlen = 0;

    rc = read_reply(s, s->ctx->to.greeting);
    if (rc == TM_OK && s->reply.code != 220) {
        /* RFC 5321 3.1: 554 greeting, say QUIT; any 5xx leaves this host. */
        int permanent = s->reply.code / 100 == 5;
        *next_mx = permanent;
        note_failure(s, st, TM_EREJECTED, permanent, "greeting from");
        quit_and_drop(s);
        return TM_EREJECTED;
    }
    if (rc == TM_OK && (s->rlen > s->rpos || tm_net_pending(s->conn.fd)))
        rc = TM_EPROTOCOL; /* more than a greeting before EHLO: injection */
    if (rc == TM_OK)
        rc = ehlo(s);
    if (rc != TM_OK) {
        note_failure(s, st, rc, 0, rc == TM_EREJECTED ? "EHLO refused by" : "greeting or EHLO from");
        if (rc == TM_EREJECTED)
            quit_and_drop(s);
        else
            drop_connection(s);
        return rc;
    }
    s->state = S_READY;
    return TM_OK;
}

static int resolve_current(tm_session *s, tm_delivery_status *st)
{
    int n;

    tm_strlcpy(s->host, s->mx[s->mx_i].host, sizeof s->host);
    s->address[0] = '\0';
    n = tm_dns_host(s->ctx, s->host, s->port, s->addr, (int)s->ctx->max_addresses,
                    cmd_deadline(s, s->ctx->to.connect));
    s->addr_resolved = 1;
    s->addr_i = 0;
    if (n <= 0) {
        s->naddr = 0;
        tm_reply_reset(&s->reply);
        note_failure(s, st, n < 0 ? n : TM_ECONNECT, 0, "no usable address for");
        return n < 0 ? n : TM_ECONNECT;
    }
    s->naddr = n;
    return TM_OK;
}

/*
 * Walks from the current position (s->mx_i, s->addr_i) to the first host
 * that greets and answers EHLO.  Returns TM_OK, or the last failure when
 * every remaining address failed.
 */
static int connect_walk(tm_session *s, tm_delivery_status *st)
{
    int last = TM_ECONNECT;

    while (s->mx_i < s->nmx) {
        int next_mx = 0, rc;

        if (s->deadline != INT64_MAX && tm_now_ms() >= s->deadline)
            return TM_ETIMEOUT;
        if (!s->addr_resolved) {
            rc = resolve_current(s, st);
            if (rc == TM_ENOMEM)
                return rc;
        }
        if (s->addr_i < s->naddr) {
            rc = open_current(s, st, &next_mx);
            if (rc == TM_OK)
                return TM_OK;
            if (rc == TM_ENOMEM)
                return rc;
            last = rc;
            if (!next_mx && ++s->addr_i < s->naddr)
                continue;
        }
        s->mx_i++;
        s->addr_resolved = 0;
        s->naddr = 0;
        s->addr_i = 0;
    }
    return last;
}

/* Leaves the current MX host and connects to the next one. */
static int next_mx(tm_session *s, tm_delivery_status *st)
{
    if (s->mx_i < s->nmx)
        s->mx_i++;
    s->addr_resolved = 0;
    s->naddr = 0;
    s->addr_i = 0;
    return connect_walk(s, st);
}

static void fill_connection(const tm_session *s, tm_delivery_status *st)
{
    tm_strlcpy(st->mx_host, s->host, sizeof st->mx_host);
    tm_strlcpy(st->mx_address, s->address, sizeof st->mx_address);
    st->mx_port = (int)s->port;
    st->attempt_no = s->attempts;
    st->tls = s->conn.tls_active;
    st->cert_verified = s->cert_verified;
    st->tls_failure = s->conn.tls_active ? TM_TLS_FAILURE_NONE : s->tls_failure;
    tm_strlcpy(st->tls_error, s->tls_error, sizeof st->tls_error);
    st->tls_version[0] = st->tls_cipher[0] = '\0';
    if (s->conn.tls_active) {
        tm_strlcpy(st->tls_version, tm_tls_version(s->tls), sizeof st->tls_version);
        tm_strlcpy(st->tls_cipher, tm_tls_cipher(s->tls), sizeof st->tls_cipher);
    }
}

static void set_policy_status(tm_delivery_status *st, const tm_resolved *r)
{
    st->policy = r->policy;
    st->require_tls_source = r->require_tls_source;
    st->skip_verify_source = r->skip_verify_source;
    st->keep_unverified_tls_source = r->keep_unverified_tls_source;
    st->floor = r->floor;
}

/* The sending domain of a message: explicit, else the sender's domain. */
static const char *sending_domain(const tm_message *m)
{
    if (m->sending_domain)
        return m->sending_domain;
    return m->from ? tm_address_domain(m->from) : NULL;
}

static void finish_status(tm_delivery_status *st, int64_t start, int rc)
{
    st->error = rc;
    st->session_seconds = (double)(tm_now_ms() - start) / 1000.0;
    if (st->description[0] == '\0' && rc != TM_OK)
        tm_status_describe(st, "%s", tm_strerror(rc));
}

/* The class of a failure to reach any host: bounced only when every host
 * said no for good. */
static void fail_status(tm_session *s, tm_delivery_status *st, int rc)
{
    if (!st)
        return;
    if (rc == TM_EINVAL || rc == TM_ENODOMAIN || rc == TM_ENULLMX)
        st->result = TM_RESULT_BOUNCED;
    else if (rc == TM_EREJECTED && s->all_permanent)
        st->result = TM_RESULT_BOUNCED;
    else
        st->result = TM_RESULT_DEFERRED;
    st->attempt_no = s->attempts;
    st->mx_port = (int)s->port;
    if (st->mx_host[0] == '\0') { /* the last host tried */
        tm_strlcpy(st->mx_host, s->host, sizeof st->mx_host);
        tm_strlcpy(st->mx_address, s->address, sizeof st->mx_address);
    }
}

static int session_new(tm_session **out, tm_context *ctx, const char *domain,
                       const tm_session_options *o, tm_delivery_status *st)
{
    tm_session *s;
    int rc;

    *out = NULL;
    if (o && o->version > TM_SESSION_OPTIONS_VERSION)
        return TM_EINVAL;
    if (o && o->port > 65535)
        return TM_EINVAL;
    if ((!domain || !*domain) && !(o && o->host))
        return TM_EINVAL;
    if (domain && tm_name_check(domain) != TM_OK)
        return TM_EINVAL;
    if (o && o->host && tm_name_check(o->host) != TM_OK)
        return TM_EINVAL;

    s = tm_calloc(1, sizeof *s);
    if (!s)
        return TM_ENOMEM;
    s->ctx = ctx;
    s->conn.fd = -1;
    s->state = S_IDLE;
    s->all_permanent = 1;
    s->tls_failure = TM_TLS_FAILURE_NOT_TRIED;
    s->port = (o && o->port) ? o->port : ctx->port;
    s->deadline = tm_deadline(ctx->to.delivery);
    if (domain)
        tm_strlcpy(s->domain, domain, sizeof s->domain);
    tm_policy_init(&s->policy);

    if (o && o->host) {
        s->explicit_host = 1;
        tm_strlcpy(s->mx[0].host, o->host, sizeof s->mx[0].host);
        s->nmx = 1;
    } else {
        rc = tm_dns_mx(ctx, s->domain, s->mx, (int)ctx->max_mx, s->deadline, st);
        if (rc < 0) {
            tm_free(s);
            return rc;
        }
        s->nmx = rc;
    }
    *out = s;
    return TM_OK;
}

TM_EXTERN int tm_session_open(tm_session **out, tm_context *ctx, const char *domain,
                              const tm_session_options *o, tm_delivery_status *st)
{
    int64_t start = tm_now_ms();
    tm_session *s = NULL;
    int rc;

    if (st)
        tm_status_init(st);
    if (!out || !ctx) {
        if (out)
            *out = NULL;
        if (st) {
            st->result = TM_RESULT_BOUNCED;
            finish_status(st, start, TM_EINVAL);
        }
        return TM_EINVAL;
    }
    rc = session_new(&s, ctx, domain, o, st);
    if (rc == TM_OK) {
        rc = connect_walk(s, st);
        if (rc != TM_OK) {
            fail_status(s, st, rc);
            tm_session_close(s);
            s = NULL;
        }
    } else if (st) {
        st->result = (rc == TM_EINVAL || rc == TM_ENODOMAIN || rc == TM_ENULLMX)
                         ? TM_RESULT_BOUNCED
                         : TM_RESULT_DEFERRED;
    }
    if (st) {
        if (rc == TM_OK) {
            tm_status_set_reply(st, &s->reply);
            fill_connection(s, st);
            st->description[0] = '\0';
        }
        finish_status(st, start, rc);
    }
    *out = s;
    return rc;
}

/* ---- STARTTLS under the policy ------------------------------------------ */

static void set_tls_error(tm_session *s, const char *fmt, ...) TM_PRINTF(2, 3);
static void set_tls_error(tm_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->tls_error, sizeof s->tls_error, fmt, ap);
    va_end(ap);
}

static tm_tls_event try_tls(tm_session *s, int *fatal)
{
    char err[TM_TEXT_MAX];
    int rc;

    *fatal = TM_OK;
    s->cert_verified = 0;
    if (!(s->caps.flags & TM_CAP_STARTTLS)) {
        s->tls_failure = TM_TLS_FAILURE_NOT_OFFERED;
        set_tls_error(s, "STARTTLS not offered by %s", s->host);
        return TM_EV_NOT_OFFERED;
    }
    /* Nothing is pipelined with STARTTLS: the buffer is empty here. */
    rc = command(s, "STARTTLS", NULL, s->ctx->to.ehlo);
    if (rc != TM_OK) {
        s->tls_failure = TM_TLS_FAILURE_HANDSHAKE;
        set_tls_error(s, "STARTTLS to %s failed: %s", s->host,
                 tm_strerror(rc));
        return TM_EV_HANDSHAKE;
    }
    if (s->reply.code != 220) {
        s->tls_failure = TM_TLS_FAILURE_REFUSED;
        set_tls_error(s, "STARTTLS refused by %s: %d %.300s", s->host,
                 s->reply.code, s->reply.text);
        return TM_EV_REFUSED;
    }
    /* Bytes after the 220 were not sent by a TLS server: response
     * injection (CVE-2011-0411 class).  Never feed them to TLS. */
    if (s->rlen > s->rpos || tm_net_pending(s->conn.fd)) {
        s->tls_failure = TM_TLS_FAILURE_HANDSHAKE;
        snprintf(s->tls_error, sizeof s->tls_error,
                 "unexpected data after the 220 reply to STARTTLS from %s", s->host);
        return TM_EV_HANDSHAKE;
    }
    s->rpos = s->rlen = 0;
    if (!s->tls) {
        rc = tm_tls_new(&s->tls, s->ctx->tls);
        if (rc != TM_OK) {
            *fatal = rc;
            return TM_EV_HANDSHAKE;
        }
        s->conn.tls = s->tls;
    }
    {
        char key[TM_HOST_MAX + TM_IPADDR_MAX + 32];
        snprintf(key, sizeof key, "%s|%s|%u|%d%d", s->host, s->address, s->port,
                 s->policy.require_tls, s->policy.skip_verify);
        rc = tm_tls_handshake(s->tls, s->conn.fd, s->host, key, cmd_deadline(s, s->ctx->to.tls),
                              err, sizeof err);
    }
    if (rc != TM_OK) {
        if (rc == TM_ENOMEM)
            *fatal = rc;
        s->tls_failure = TM_TLS_FAILURE_HANDSHAKE;
        set_tls_error(s, "TLS handshake with %s failed: %s", s->host, err);
        return TM_EV_HANDSHAKE;
    }
    s->conn.tls_active = 1;
    /* Forget everything learnt in plaintext. */
    s->caps.flags = 0;
    s->caps.size_limit = 0;
    if (tm_tls_verified(s->tls)) {
        s->cert_verified = 1;
        s->tls_failure = TM_TLS_FAILURE_NONE;
        s->tls_error[0] = '\0';
        return TM_EV_CERT_VALID;
    }
    s->tls_failure = TM_TLS_FAILURE_CERTIFICATE;
    tm_tls_verify_error(s->tls, err, sizeof err);
    set_tls_error(s, "%s: %s", s->host, err);
    return TM_EV_CERT_INVALID;
}

/* A fresh plaintext connection to the same address, without STARTTLS. */
static int reconnect_plain(tm_session *s, tm_delivery_status *st)
{
    int next = 0;
    int rc;

    drop_connection(s);
    rc = open_current(s, st, &next);
    if (rc == TM_OK)
        return TM_OK;
    if (rc == TM_ENOMEM)
        return rc;
    /* The same address failed now: go on walking (with STARTTLS again). */
    if (next)
        return next_mx(s, st) == TM_OK ? 1 : TM_ECONNECT;
    s->addr_i++;
    return connect_walk(s, st) == TM_OK ? 1 : TM_ECONNECT;
}

static int apply_policy(tm_session *s, tm_delivery_status *st)
{
    for (;;) {
        int fatal, rc;
        tm_tls_event ev = try_tls(s, &fatal);
        tm_tls_action act;

        if (fatal != TM_OK)
            return fatal;
        act = tm_policy_decide(&s->policy, ev);
        if (act == TM_ACT_USE_TLS) {
            rc = ehlo(s);
            if (rc == TM_ENOMEM)
                return rc;
            if (rc != TM_OK) {
                s->tls_failure = TM_TLS_FAILURE_HANDSHAKE;
                set_tls_error(s, "EHLO over TLS to %s failed: %s",
                         s->host, tm_strerror(rc));
                s->cert_verified = 0;
                act = tm_policy_decide(&s->policy, TM_EV_HANDSHAKE);
            }
        }
        if (act != TM_ACT_USE_TLS && s->tls)
            tm_tls_cache_drop(s->tls);
        switch (act) {
        case TM_ACT_USE_TLS:
            tm_tls_cache_save(s->tls);
            if (!s->cert_verified)
                tm_log(s->ctx, TM_LOG_WARNING, "TLS to %s not verified: %s", s->host, s->tls_error);
            return TM_OK;
        case TM_ACT_PLAIN_SAME:
            tm_log(s->ctx, TM_LOG_INFO, "plaintext: %s", s->tls_error);
            return TM_OK;
        case TM_ACT_PLAIN_NEW:
            tm_log(s->ctx, TM_LOG_INFO, "new plaintext connection: %s", s->tls_error);
            rc = reconnect_plain(s, st);
            if (rc == TM_OK)
                return TM_OK; /* same address, plaintext, no STARTTLS */
            if (rc < 0)
                return rc;
            continue; /* moved on to another address: try TLS there */
        case TM_ACT_NEXT_MX:
            tm_log(s->ctx, TM_LOG_INFO, "TLS required, leaving %s: %s", s->host, s->tls_error);
            s->all_permanent = 0;
            /* After a failed handshake the connection is unusable: not even
             * a QUIT goes over it, nor is anything read from it. */
            if (ev == TM_EV_HANDSHAKE)
                drop_connection(s);
            else
                quit_and_drop(s);
            rc = next_mx(s, st);
            if (rc != TM_OK)
                return TM_ETLSREQUIRED;
            continue;
        }
    }
}

TM_EXTERN int tm_starttls(tm_session *s, const tm_policy *policy, tm_delivery_status *st)
{
    int64_t start = tm_now_ms();
    char tls_error[TM_TEXT_MAX];
    int tls_failure;
    int rc;

    if (st)
        tm_status_init(st);
    if (!s || (policy && policy->version > TM_POLICY_VERSION))
        rc = TM_EINVAL;
    else if (s->policy_applied || s->state != S_READY)
        rc = TM_ESTATE;
    else
        rc = TM_OK;
    if (rc != TM_OK) {
        if (st) {
            st->result = TM_RESULT_DEFERRED;
            finish_status(st, start, rc);
        }
        return rc;
    }
    if (policy)
        s->msg_policy = *policy;
    tm_settings_resolve(s->ctx, policy, NULL, s->domain[0] ? s->domain : NULL, &s->resolved);
    s->policy = s->resolved.policy;
    s->policy_applied = 1;
    if (st)
        set_policy_status(st, &s->resolved);
    rc = apply_policy(s, st);
    if (rc != TM_OK) {
        /* Keep the TLS reason of the last MX: it is why we failed. */
        tm_strlcpy(tls_error, s->tls_error, sizeof tls_error);
        tls_failure = s->tls_failure;
        drop_connection(s);
        s->state = S_BROKEN;
        if (st) {
            fail_status(s, st, rc);
            st->tls = 0;
            st->tls_failure = tls_failure;
            tm_strlcpy(st->tls_error, tls_error, sizeof st->tls_error);
            if (rc == TM_ETLSREQUIRED)
                tm_status_describe(st, "TLS required, but no MX host of %s gave %s: %s",
                                   s->explicit_host ? s->mx[0].host : s->domain,
                                   TM_FLAG(s->policy.skip_verify) ? "TLS" : "verified TLS",
                                   tls_error);
            finish_status(st, start, rc);
        }
        return rc;
    }
    if (st) {
        tm_status_set_reply(st, &s->reply);
        fill_connection(s, st);
        set_policy_status(st, &s->resolved);
        finish_status(st, start, TM_OK);
    }
    return TM_OK;
}

/* ---- sending --------------------------------------------------------------- */

/* Scans in-memory content once: NUL bytes, 8-bit bytes. */
static void scan_content(const unsigned char *p, size_t n, int *has_nul, int *has_8bit)
{
    size_t i = 0;
    uint64_t hi = 0;

    *has_nul = memchr(p, 0, n) != NULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        hi |= w;
    }
    for (; i < n; i++)
        hi |= p[i];
    *has_8bit = (hi & 0x8080808080808080ull) != 0;
}

static void rcpt_set(tm_rcpt_status *r, int result, const tm_reply *reply)
{
    r->result = result;
    if (reply && reply->code) {
        const char *nl = strchr(reply->text, '\n');
        size_t len = nl ? (size_t)(nl - reply->text) : reply->text_len;
        r->code = reply->code;
        tm_strlcpy(r->enhanced_code, reply->enhanced, sizeof r->enhanced_code);
        tm_strlcpyn(r->message, sizeof r->message, reply->text, len);
    }
}

/* Sets every recipient still pending (result NONE) or accepted (accepted[i])
 * to result. */
static void rcpt_set_pending(tm_delivery_status *st, const unsigned char *accepted, int result,
                             const tm_reply *reply, int only_accepted)
{
    unsigned int i;
    for (i = 0; i < st->rcpt_count; i++) {
        if (only_accepted ? accepted[i] : st->rcpt[i].result == TM_RESULT_NONE)
            rcpt_set(&st->rcpt[i], result, reply);
    }
}

/* Streams the content through the encoder.  TM_OK once the end of data has
 * been written completely. */
static int send_content(tm_session *s, const tm_message *m, int quit)
{
    int64_t block = s->ctx->to.data_block;
    const unsigned char *in = m->data;
    size_t left = m->read ? 0 : m->size;
    int eof = m->read == NULL;
    tm_body body;
    int rc;

    tm_body_init(&body);
    for (;;) {
        size_t consumed, produced;

        if (left == 0 && !eof) {
            long n = m->read(m->read_arg, s->ibuf, sizeof s->ibuf);
            if (n < 0)
                return TM_EREAD;
            if (n == 0)
                eof = 1;
            in = s->ibuf;
            left = (size_t)(n > (long)sizeof s->ibuf ? (long)sizeof s->ibuf : n);
        }
        if (left == 0 && eof)
            break;
        rc = tm_body_encode(&body, in, left, &consumed, s->wbuf + s->wlen, sizeof s->wbuf - s->wlen,
                            &produced);
        s->wlen += produced;
        in += consumed;
        left -= consumed;
        if (rc != TM_OK)
            return rc;
        /* Room kept for the end of data and a pipelined QUIT. */
        if (sizeof s->wbuf - s->wlen < 4 + TM_BODY_FINISH_MAX + sizeof "QUIT\r\n") {
            rc = flush(s, (unsigned int)block);
            if (rc != TM_OK)
                return rc;
        }
    }
    s->wlen += tm_body_finish(&body, s->wbuf + s->wlen);
    if (quit && queue_cmd(s, "QUIT", NULL, NULL) == TM_OK)
        s->quit_sent = 1;
    return flush(s, (unsigned int)block);
}

static int check_message(const tm_session *s, const tm_message *m, int *utf8)
{
    size_t i;
    int non_ascii = 0;

    *utf8 = 0;
    if (m->version > TM_MESSAGE_VERSION || !m->from || !m->to || m->to_count == 0)
        return TM_EINVAL;
    if (m->to_count > TM_MAX_RECIPIENTS)
        return TM_ETOOMANY;
    if (!m->read && !m->data && m->size > 0)
        return TM_EINVAL;
    if (tm_address_check(m->from, 1, &non_ascii) != TM_OK)
        return TM_EADDRESS;
    *utf8 |= non_ascii;
    for (i = 0; i < m->to_count; i++) {
        if (!m->to[i] || tm_address_check(m->to[i], 0, &non_ascii) != TM_OK)
            return TM_EADDRESS;
        *utf8 |= non_ascii;
        if (s && s->domain[0] && !tm_domain_equal(tm_address_domain(m->to[i]), s->domain))
            return TM_EADDRESS;
    }
    return TM_OK;
}

static int reset_transaction(tm_session *s)
{
    int rc = command(s, "RSET", NULL, s->ctx->to.ehlo);
    if (rc != TM_OK || s->reply.code / 100 != 2) {
        drop_connection(s);
        s->state = S_BROKEN;
        return rc != TM_OK ? rc : TM_EPROTOCOL;
    }
    return TM_OK;
}

/* A connection-level failure inside a transaction. */
static int broken(tm_session *s, int rc)
{
    drop_connection(s);
    s->state = S_BROKEN;
    return rc;
}

/* Fills st for a message that the session cannot take at all. */
static int refuse(tm_delivery_status *st, const tm_message *m, int rc, int result, int64_t start,
                  const char *why)
{
    size_t i;

    if (m && m->to && m->to_count <= TM_MAX_RECIPIENTS) {
        st->rcpt_count = (unsigned int)m->to_count;
        for (i = 0; i < m->to_count; i++) {
            if (m->to[i])
                tm_strlcpy(st->rcpt[i].address, m->to[i], sizeof st->rcpt[i].address);
            st->rcpt[i].result = result;
        }
    }
    st->result = result;
    if (why)
        tm_status_describe(st, "%s", why);
    finish_status(st, start, rc);
    return rc;
}

/*
 * BDAT (RFC 3030) behind the pipelined envelope: MAIL, RCPT... and
 * "BDAT n LAST" with the content go in one write, so a message costs one
 * round trip.  Used when the whole encoded message fits in the write buffer
 * after the queued commands; returns 1 when staged, 0 to use DATA.
 */
static int stage_bdat(tm_session *s, const tm_message *m)
{
    const size_t reserve = 32;
    size_t cmd_len = s->wlen, data_pos = cmd_len + reserve, consumed = 0, produced = 0;
    char hdr[32];
    tm_body body;
    int hl;

    if (data_pos + 64 >= sizeof s->wbuf || m->size > sizeof s->wbuf)
        return 0;
    tm_body_init(&body);
    body.raw = 1;
    if (tm_body_encode(&body, m->data, m->size, &consumed, s->wbuf + data_pos,
                       sizeof s->wbuf - data_pos - TM_BODY_FINISH_MAX, &produced) != TM_OK ||
        consumed != m->size)
        return 0;
    produced += tm_body_finish(&body, s->wbuf + data_pos + produced);
    hl = snprintf(hdr, sizeof hdr, "BDAT %zu LAST\r\n", produced);
    memcpy(s->wbuf + cmd_len, hdr, (size_t)hl);
    memmove(s->wbuf + cmd_len + hl, s->wbuf + data_pos, produced);
    s->wlen = cmd_len + (size_t)hl + produced;
    tm_log(s->ctx, TM_LOG_DEBUG, "C: BDAT %zu LAST (+ content)", produced);
    return 1;
}

static int send_message(tm_session *s, const tm_message *m, tm_delivery_status *st, int utf8)
{
    char params[96];
    unsigned char accepted[TM_MAX_RECIPIENTS];
    int pipelining = (s->caps.flags & TM_CAP_PIPELINING) != 0;
    int has_nul = 0, has_8bit = 0, naccepted = 0, bdat = 0, rc;
    size_t i;
    char size_s[32] = "";

    memset(accepted, 0, sizeof accepted);
    s->failover_ok = 0;
    if (!m->read)
        scan_content(m->data, m->size, &has_nul, &has_8bit);
    if (has_nul) {
        tm_status_describe(st, "message content contains a NUL byte");
        return TM_ECONTENT;
    }
    if (utf8 && !(s->caps.flags & TM_CAP_SMTPUTF8)) {
        tm_strlcpy(st->enhanced_code, "5.6.7", sizeof st->enhanced_code);
        tm_status_describe(st, "non-ASCII address, but %s does not offer SMTPUTF8", s->host);
        return TM_EUTF8;
    }
    if ((s->caps.flags & TM_CAP_SIZE) && !m->read) {
        if (s->caps.size_limit && m->size > s->caps.size_limit) {
            tm_strlcpy(st->enhanced_code, "5.3.4", sizeof st->enhanced_code);
            tm_status_describe(st, "message of %zu bytes exceeds the %lu byte limit of %s", m->size,
                               s->caps.size_limit, s->host);
            return TM_EREJECTED;
        }
        snprintf(size_s, sizeof size_s, " SIZE=%zu", m->size);
    }
    snprintf(params, sizeof params, ">%s%s%s", size_s,
             (has_8bit || m->read) && (s->caps.flags & TM_CAP_8BITMIME) ? " BODY=8BITMIME" : "",
             utf8 ? " SMTPUTF8" : "");
    st->utf8 = utf8;

    /* The envelope: with PIPELINING in one write (RFC 2920), else one by one. */
    rc = queue_cmd(s, "MAIL FROM:<", m->from, params);
    if (rc == TM_OK && !pipelining)
        rc = flush(s, s->ctx->to.mail);
    if (rc == TM_OK && !pipelining)
        rc = read_reply(s, s->ctx->to.mail);
    if (rc != TM_OK)
        goto conn_failed;
    if (!pipelining && s->reply.code / 100 != 2)
        goto mail_refused;
    for (i = 0; i < m->to_count; i++) {
        rc = queue_cmd(s, "RCPT TO:<", m->to[i], ">");
        if (rc == TM_OK && !pipelining)
            rc = flush(s, s->ctx->to.rcpt);
        if (rc == TM_OK && !pipelining)
            rc = read_reply(s, s->ctx->to.rcpt);
        if (rc != TM_OK)
            goto conn_failed;
        if (!pipelining) {
            if (s->reply.code == 421)
                goto closing;
            if (s->reply.code / 100 == 2) {
                accepted[i] = 1;
                naccepted++;
            }
            rcpt_set(&st->rcpt[i], s->reply.code / 100 == 2 ? TM_RESULT_NONE
                                                           : tm_result_of_code(s->reply.code),
                     &s->reply);
        }
    }
    if (!pipelining && naccepted == 0) {
        tm_status_set_reply(st, &s->reply);
        rc = reset_transaction(s);
        return rc == TM_OK ? TM_EREJECTED : rc;
    }
    if (pipelining && (s->caps.flags & TM_CAP_CHUNKING) && !m->read)
        bdat = stage_bdat(s, m);
    if (bdat && s->quit_last && queue_cmd(s, "QUIT", NULL, NULL) == TM_OK)
        s->quit_sent = 1;
    rc = bdat ? TM_OK : queue_cmd(s, "DATA", NULL, NULL);
    if (rc == TM_OK)
        rc = flush(s, bdat ? s->ctx->to.data_block : pipelining ? s->ctx->to.mail : s->ctx->to.data);
    if (rc != TM_OK)
        goto conn_failed;

    if (pipelining) {
        int mail_ok;
        rc = read_reply(s, s->ctx->to.mail);
        if (rc != TM_OK)
            {
            if (bdat)
                goto content_sent;
            goto conn_failed;
        }
        if (s->reply.code == 421)
            goto closing;
        mail_ok = s->reply.code / 100 == 2;
        if (!mail_ok) {
            rcpt_set_pending(st, accepted, tm_result_of_code(s->reply.code), &s->reply, 0);
            tm_status_set_reply(st, &s->reply);
        }
        for (i = 0; i < m->to_count; i++) {
            rc = read_reply(s, s->ctx->to.rcpt);
            if (rc != TM_OK && bdat)
                goto content_sent;
            if (rc != TM_OK)
                goto conn_failed;
            if (s->reply.code == 421)
                goto closing;
            if (!mail_ok)
                continue;
            if (s->reply.code / 100 == 2) {
                accepted[i] = 1;
                naccepted++;
            } else {
                rcpt_set(&st->rcpt[i], tm_result_of_code(s->reply.code), &s->reply);
            }
        }
        if (mail_ok && naccepted == 0)
            tm_status_set_reply(st, &s->reply);
    }
    if (bdat) {
        rc = read_reply(s, s->ctx->to.data_end);
        if (rc != TM_OK)
            goto content_sent;
        if (s->reply.code == 421)
            goto closing;
        if (naccepted > 0) {
            tm_status_set_reply(st, &s->reply);
            rcpt_set_pending(st, accepted, tm_result_of_code(s->reply.code), &s->reply, 1);
        }
        if (s->quit_sent) {
            int code = s->reply.code;
            finish_pipelined_quit(s);
            return naccepted > 0 && code / 100 == 2 ? TM_OK : TM_EREJECTED;
        }
        if (naccepted > 0 && s->reply.code / 100 == 2)
            return TM_OK;
        rc = reset_transaction(s);
        return rc == TM_OK ? TM_EREJECTED : rc;
    }
    rc = read_reply(s, s->ctx->to.data);
    if (rc != TM_OK)
        goto conn_failed;
    if (s->reply.code == 421)
        goto closing;
    if (s->reply.code != 354) {
        int cls = s->reply.code / 100;
        if (naccepted > 0) {
            /* Only 4xx/5xx refuse DATA; anything else (a 2xx) is a server
             * out of step: nothing was sent, nothing delivered. */
            rcpt_set_pending(st, accepted, cls == 5 ? TM_RESULT_BOUNCED : TM_RESULT_DEFERRED,
                             &s->reply, 1);
            tm_status_set_reply(st, &s->reply);
        }
        if (cls != 4 && cls != 5) {
            tm_status_describe(st, "unexpected reply %d to DATA from %s", s->reply.code, s->host);
            return broken(s, TM_EPROTOCOL);
        }
        rc = reset_transaction(s);
        return rc == TM_OK ? TM_EREJECTED : rc;
    }
    if (naccepted == 0) {
        /* 354 with no recipient (RFC 2920 3.1): end the empty transaction. */
        rc = queue_cmd(s, ".", NULL, NULL);
        if (rc == TM_OK)
            rc = flush(s, s->ctx->to.data_block);
        if (rc == TM_OK)
            rc = read_reply(s, s->ctx->to.data_end);
        if (rc != TM_OK)
            return broken(s, rc);
        return TM_EREJECTED;
    }

    rc = send_content(s, m, s->quit_last && pipelining);
    if (rc != TM_OK) {
        const char *why = rc == TM_ECONTENT ? "message content contains a NUL byte"
                          : rc == TM_EREAD  ? "reading the message failed"
                                            : "connection lost while sending the content";
        /* There is no way to abort DATA but to drop the connection: the
         * server then discards the partial message. */
        int res = rc == TM_ECONTENT ? TM_RESULT_BOUNCED : TM_RESULT_DEFERRED;
        rcpt_set_pending(st, accepted, res, NULL, 1);
        tm_status_describe(st, "%s", why);
        return broken(s, rc);
    }
    rc = read_reply(s, s->ctx->to.data_end);
    if (rc != TM_OK) {
content_sent:
        /* The whole message went out: whoever was (or may have been)
         * accepted may have it. */
        rcpt_set_pending(st, accepted, TM_RESULT_UNCERTAIN, NULL, 0);
        rcpt_set_pending(st, accepted, TM_RESULT_UNCERTAIN, NULL, 1);
        tm_status_describe(st, "no reply to the end of data from %s (%s): the message may have "
                               "been delivered",
                           s->host, tm_strerror(rc));
        broken(s, rc);
        return TM_EUNCERTAIN;
    }
    tm_status_set_reply(st, &s->reply);
    rcpt_set_pending(st, accepted, tm_result_of_code(s->reply.code), &s->reply, 1);
    rc = s->reply.code / 100 == 2 ? TM_OK : TM_EREJECTED;
    if (s->reply.code == 421)
        broken(s, TM_ECLOSED);
    else if (s->quit_sent)
        finish_pipelined_quit(s);
    return rc;

mail_refused:
    tm_status_set_reply(st, &s->reply);
    rcpt_set_pending(st, accepted, tm_result_of_code(s->reply.code), &s->reply, 0);
    if (s->reply.code == 421)
        return broken(s, TM_EREJECTED);
    rc = reset_transaction(s);
    return rc == TM_OK ? TM_EREJECTED : rc;

closing:
    /* 421: the server is going away; nothing was delivered. */
    tm_status_set_reply(st, &s->reply);
    rcpt_set_pending(st, accepted, TM_RESULT_DEFERRED, &s->reply, 0);
    rcpt_set_pending(st, accepted, TM_RESULT_DEFERRED, &s->reply, 1);
    s->failover_ok = 1;
    return broken(s, TM_EREJECTED);

conn_failed:
    rcpt_set_pending(st, accepted, TM_RESULT_DEFERRED, NULL, 0);
    rcpt_set_pending(st, accepted, TM_RESULT_DEFERRED, NULL, 1);
    tm_status_describe(st, "%s during the envelope with %s", tm_strerror(rc), s->host);
    s->failover_ok = rc != TM_ENOMEM;
    return broken(s, rc);
}

/* The whole message's class from the recipients' (see the header). */
static int overall(tm_delivery_status *st, int rc)
{
    unsigned int i, delivered = 0, deferred = 0, uncertain = 0;

    for (i = 0; i < st->rcpt_count; i++) {
        if (st->rcpt[i].result == TM_RESULT_NONE)
            st->rcpt[i].result = TM_RESULT_DEFERRED;
        delivered += st->rcpt[i].result == TM_RESULT_DELIVERED;
        deferred += st->rcpt[i].result == TM_RESULT_DEFERRED;
        uncertain += st->rcpt[i].result == TM_RESULT_UNCERTAIN;
    }
    if (delivered == st->rcpt_count && rc == TM_OK) {
        st->result = TM_RESULT_DELIVERED;
        return TM_OK;
    }
    if (delivered == st->rcpt_count) {
        /* Cannot happen: never claim more than we know, never bounce. */
        st->result = TM_RESULT_DEFERRED;
        return rc == TM_OK ? TM_EPROTOCOL : rc;
    }
    st->result = uncertain ? TM_RESULT_UNCERTAIN : deferred ? TM_RESULT_DEFERRED : TM_RESULT_BOUNCED;
    if (delivered > 0)
        return TM_EPARTIAL;
    return rc == TM_OK ? TM_EREJECTED : rc;
}

static int do_send(tm_session *s, const tm_message *m, tm_delivery_status *st, int64_t start,
                   const tm_resolved *pre)
{
    tm_resolved r;
    int utf8, rc;
    size_t i;

    rc = check_message(s, m, &utf8);
    if (rc != TM_OK)
        return refuse(st, m, rc, TM_RESULT_BOUNCED, start,
                      rc == TM_EADDRESS ? "invalid envelope address, or a recipient outside "
                                          "the session's domain"
                                        : NULL);
    if (s->state != S_READY) {
        fill_connection(s, st);
        return refuse(st, m, TM_ESTATE, TM_RESULT_DEFERRED, start,
                      "the session has no usable connection");
    }
    fill_connection(s, st);
    /* One resolution per message: its sending domain may ask for more than
     * the session was opened with. */
    if (!pre) {
        tm_settings_resolve(s->ctx, &s->msg_policy, sending_domain(m),
                            s->domain[0] ? s->domain : NULL, &r);
        pre = &r;
    }
    set_policy_status(st, pre);
    if (pre->policy.require_tls &&
        (!s->conn.tls_active || (!s->cert_verified && !pre->policy.skip_verify)))
        return refuse(st, m, TM_ETLSREQUIRED, TM_RESULT_DEFERRED, start,
                      s->conn.tls_active ? "verified TLS required, but the session's certificate "
                                           "did not verify"
                                         : "TLS required, but the session is not over TLS");

    st->rcpt_count = (unsigned int)m->to_count;
    for (i = 0; i < m->to_count; i++)
        tm_strlcpy(st->rcpt[i].address, m->to[i], sizeof st->rcpt[i].address);
    rc = send_message(s, m, st, utf8);
    if (rc == TM_ECONTENT || rc == TM_EUTF8 ||
        (rc == TM_EREJECTED && st->enhanced_code[0] == '5' && !st->code)) {
        for (i = 0; i < m->to_count; i++)
            if (st->rcpt[i].result == TM_RESULT_NONE)
                st->rcpt[i].result = TM_RESULT_BOUNCED;
    }
    rc = overall(st, rc);
    finish_status(st, start, rc);
    return rc;
}

TM_EXTERN int tm_send(tm_session *s, const tm_message *m, tm_delivery_status *st)
{
    int64_t start = tm_now_ms();

    if (!st)
        return TM_EINVAL;
    tm_status_init(st);
    if (!s || !m)
        return refuse(st, NULL, TM_EINVAL, TM_RESULT_BOUNCED, start, NULL);
    return do_send(s, m, st, start, NULL);
}

TM_EXTERN void tm_session_close(tm_session *s)
{
    if (!s)
        return;
    if (s->state == S_READY)
        quit_and_drop(s);
    else
        drop_connection(s);
    tm_tls_free(s->tls);
    tm_free(s);
}

/* ---- one-shot ------------------------------------------------------------- */

TM_EXTERN int tm_deliver(tm_context *ctx, const tm_message *m, const tm_policy *policy,
                         const tm_session_options *o, tm_delivery_status *st)
{
    int64_t start = tm_now_ms();
    tm_session *s = NULL;
    const char *domain;
    int utf8, rc;
    size_t i;

    if (!st)
        return TM_EINVAL;
    tm_status_init(st);
    if (!ctx || !m || (policy && policy->version > TM_POLICY_VERSION))
        return refuse(st, m, TM_EINVAL, TM_RESULT_BOUNCED, start, NULL);
    rc = check_message(NULL, m, &utf8);
    if (rc != TM_OK)
        return refuse(st, m, rc, TM_RESULT_BOUNCED, start, "invalid envelope address");
    domain = tm_address_domain(m->to[0]);
    for (i = 1; i < m->to_count; i++) {
        if (!tm_domain_equal(tm_address_domain(m->to[i]), domain))
            return refuse(st, m, TM_EADDRESS, TM_RESULT_BOUNCED, start,
                          "all recipients of one delivery must share a domain");
    }

    rc = session_new(&s, ctx, domain, o, st);
    if (rc == TM_OK) {
        s->policy_applied = 1;
        if (policy)
            s->msg_policy = *policy;
        tm_settings_resolve(ctx, policy, sending_domain(m), domain, &s->resolved);
        s->policy = s->resolved.policy;
        set_policy_status(st, &s->resolved);
        rc = connect_walk(s, st);
    }
    while (rc == TM_OK) {
        rc = apply_policy(s, st);
        if (rc != TM_OK)
            break;
        s->quit_last = 1;
        rc = do_send(s, m, st, start, &s->resolved);
        /* Another MX only when nothing can have been delivered. */
        if (rc == TM_OK || !s->failover_ok || s->mx_i + 1 >= s->nmx)
            break;
        rc = next_mx(s, st);
    }
    if (rc != TM_OK && st->result == TM_RESULT_NONE) {
        /* No transaction was attempted: the status holds the last failure. */
        char tls_error[TM_TEXT_MAX] = "";
        int tls_failure = TM_TLS_FAILURE_NONE;
        if (s) {
            tm_strlcpy(tls_error, s->tls_error, sizeof tls_error);
            tls_failure = s->tls_failure;
        }
        if (s)
            fail_status(s, st, rc);
        else
            st->result = (rc == TM_EINVAL || rc == TM_ENODOMAIN || rc == TM_ENULLMX)
                             ? TM_RESULT_BOUNCED
                             : TM_RESULT_DEFERRED;
        if (rc == TM_ETLSREQUIRED) {
            st->tls_failure = tls_failure;
            tm_strlcpy(st->tls_error, tls_error, sizeof st->tls_error);
            tm_status_describe(st, "TLS required, but no MX host of %s gave %s: %s", domain,
                               s->policy.skip_verify ? "TLS" : "verified TLS", tls_error);
        }
        st->rcpt_count = (unsigned int)m->to_count;
        for (i = 0; i < m->to_count; i++) {
            tm_strlcpy(st->rcpt[i].address, m->to[i], sizeof st->rcpt[i].address);
            st->rcpt[i].result = st->result;
        }
        finish_status(st, start, rc);
    }
    if (s)
        st->attempt_no = s->attempts;
    st->session_seconds = (double)(tm_now_ms() - start) / 1000.0;
    tm_session_close(s);
    return rc;
}
