/*
 * client.c - the SMTP client engine: fed the bytes received, asked for the
 * bytes to send, told when content is wanted.  It never calls the network,
 * the clock or mbedTLS (see internal.h for how a driver runs it).
 *
 * Every reply awaited is tied to the output position where its command
 * ends.  A reply may only answer a command whose bytes have been sent: a
 * byte that arrives while nothing sent is unanswered (a second reply after
 * a non-pipelined MAIL's, a 250 in the same write as the 354 before the
 * final dot, anything after a greeting) answers nothing, and ends the
 * conversation as a protocol violation.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Operations (c->state). */
enum {
    ST_IDLE = 0, /* no operation yet */
    ST_OPEN,     /* greeting, EHLO, HELO */
    ST_STARTTLS, /* STARTTLS sent */
    ST_TLS,      /* 220 to STARTTLS: the driver runs the handshake */
    ST_EHLO,     /* EHLO again (over TLS) */
    ST_TXN,      /* a transaction: envelope, content, end of data */
    ST_RSET,
    ST_QUIT,
    ST_DONE,
    ST_FAILED
};

/* What a transaction may write next (c->emit). */
enum { E_NONE = 0, E_MAIL, E_RCPT, E_BODY_CMD, E_CONTENT, E_WAIT };

/* Room kept behind content for the end of data and a pipelined QUIT. */
#define END_RESERVE (TM_BODY_FINISH_MAX + sizeof "QUIT\r\n")

static int cls(int code)
{
    return code / 100;
}

/* ---- output ------------------------------------------------------------ */

static size_t room(const tm_client *c)
{
    return sizeof c->wbuf - c->wlen;
}

static void expect(tm_client *c, tm_expect what, size_t rcpt)
{
    size_t at = (c->qhead + c->qlen) % TM_CLIENT_QUEUE;

    c->queue[at] = what;
    c->qrcpt[at] = rcpt;
    c->qmark[at] = c->queued_total;
    c->qlen++;
}

static size_t command_len(const char *a, const char *b, const char *d)
{
    return strlen(a) + (b ? strlen(b) : 0) + (d ? strlen(d) : 0) + 2;
}

static void put_bytes(tm_client *c, const void *p, size_t n)
{
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
    c->queued_total += n;
}

/* Appends "a b d CRLF" and the reply it awaits; the caller checked room. */
static void put_command(tm_client *c, tm_expect what, size_t rcpt, const char *a, const char *b,
                        const char *d)
{
    put_bytes(c, a, strlen(a));
    if (b)
        put_bytes(c, b, strlen(b));
    if (d)
        put_bytes(c, d, strlen(d));
    put_bytes(c, "\r\n", 2);
    expect(c, what, rcpt);
}

/* ---- recipients ----------------------------------------------------------- */

static tm_delivery_status *status_of(const tm_client *c)
{
    return c->txn && c->txn->out ? c->txn->out->st : NULL;
}

static void rcpt_final(tm_client *c, size_t i, int result, const tm_reply *reply)
{
    tm_txn *t = c->txn;

    if (t->state[i] == TM_R_DONE)
        return;
    if (t->state[i] == TM_R_CARRY)
        t->carried--;
    t->state[i] = TM_R_DONE;
    tm__outcome_set(t->out, t->idx[i], result, reply);
}

/* Every recipient still open (only_accepted: the accepted ones). */
static void rcpt_all(tm_client *c, int result, const tm_reply *reply, int only_accepted)
{
    size_t i;

    for (i = 0; i < c->txn->nto; i++) {
        int s = c->txn->state[i];
        if (s == TM_R_DONE || s == TM_R_CARRY || (only_accepted && s != TM_R_ACCEPTED))
            continue;
        rcpt_final(c, i, result, reply);
    }
}

/* Every recipient has its outcome, or waits for a further transaction. */
static int outcome_complete(const tm_client *c)
{
    size_t i;

    for (i = 0; i < c->txn->nto; i++)
        if (c->txn->state[i] != TM_R_DONE && c->txn->state[i] != TM_R_CARRY)
            return 0;
    return 1;
}

/* ---- ending operations ------------------------------------------------------- */

static void op_done(tm_client *c, int result, int error)
{
    c->op_result = result;
    c->error = error;
    c->state = ST_DONE;
}

/*
 * The connection cannot go on: a protocol violation or an I/O failure.
 * Inside a transaction, whoever may have the message once its end was sent
 * is uncertain (RFC 1047), everyone else deferred: never delivered, never
 * bounced on a word nobody asked for.
 */
static void fail(tm_client *c, int error, const char *why)
{
    tm_delivery_status *st = status_of(c);
    size_t i, uncertain = 0;

    c->usable = 0;
    c->qlen = 0;
    if (c->state == ST_TXN) {
        int maybe = c->content_sent && c->mail_state >= 0;

        for (i = 0; i < c->txn->nto; i++) {
            int s = c->txn->state[i];
            if (s == TM_R_DONE)
                continue;
            if (maybe && (s == TM_R_SENT || s == TM_R_ACCEPTED)) {
                rcpt_final(c, i, TM_RESULT_UNCERTAIN, NULL);
                uncertain++;
            } else {
                rcpt_final(c, i, TM_RESULT_DEFERRED, NULL);
            }
        }
        if (uncertain) {
            error = TM_EUNCERTAIN;
            tm__status_describe(st, "no reply to the end of data from %s (%s): the message may "
                                    "have been delivered",
                                c->host, why);
        } else if (!c->described) {
            tm__status_describe(st, "%s with %s, before the end of data: nothing delivered", why,
                                c->host);
        }
    }
    c->op_result = TM_OP_FAILED;
    c->error = error;
    c->state = ST_FAILED;
}

/* A transaction ends once no reply is awaited and nothing more may be
 * written: with RSET first when it was refused (so the session stays
 * usable), and never after a QUIT went. */
static void txn_check_end(tm_client *c)
{
    if (c->state != ST_TXN || c->qlen > 0 || c->emit != E_NONE)
        return;
    if (c->quit_sent) {
        c->usable = 0;
        op_done(c, TM_OP_OK, c->txn_error);
        return;
    }
    if (c->need_rset && c->usable) {
        c->need_rset = 0;
        put_command(c, TM_X_RSET, 0, "RSET", NULL, NULL);
        return;
    }
    op_done(c, TM_OP_OK, c->txn_error);
}

/* ---- transactions: what may be written next ----------------------------------- */

/* Decimal digits of n at the end of buf[0..20), returning where they start
 * (no formatting machinery on the per-message path). */
static char *decimal(char buf[20], size_t n)
{
    char *p = buf + 20;

    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    return p;
}

static char *append(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    return dst + n;
}

/* The MAIL FROM parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531);
 * out has room for 64. */
static void mail_params(const tm_client *c, char *out)
{
    const tm_txn *t = c->txn;
    char digits[20], *p = out, *d;

    *p++ = '>';
    if ((c->caps.flags & TM_CAP_SIZE) && t->data) {
        d = decimal(digits, t->size);
        p = append(p, " SIZE=", 6);
        p = append(p, d, (size_t)(digits + sizeof digits - d));
    }
    if ((t->has_8bit || !t->data) && (c->caps.flags & TM_CAP_8BITMIME))
        p = append(p, " BODY=8BITMIME", 14);
    if (t->utf8)
        p = append(p, " SMTPUTF8", 9);
    *p = '\0';
}

/*
 * BDAT (RFC 3030) behind the pipelined envelope: "BDAT n LAST" and the
 * whole content go in the same write as MAIL and RCPT, so a message costs
 * one round trip.  Only when the whole envelope is still in the buffer and
 * the encoded content fits after it; returns 0 to use DATA instead.
 *
 * The content is encoded once, in its final place, leaving room for the
 * longest header before it; the header then goes right before it and the
 * envelope (a few dozen bytes) moves up to meet it, so the output starts a
 * little into the buffer (wpos) and the content is never moved.
 */
#define BDAT_HEADER_MAX (sizeof "BDAT  LAST\r\n" - 1 + 20)
static int stage_bdat(tm_client *c)
{
    tm_txn *t = c->txn;
    const size_t reserve = BDAT_HEADER_MAX;
    size_t cmd_end = c->wlen, data_pos = cmd_end + reserve, consumed = 0, produced = 0, hl, shift;
    char hdr[BDAT_HEADER_MAX], digits[20], *d, *h;
    tm_body body;

    if (c->wpos != 0 || data_pos + 64 >= sizeof c->wbuf || t->size > sizeof c->wbuf)
        return 0;
    tm__body_init(&body);
    body.raw = 1;
    if (tm__body_encode(&body, t->data, t->size, &consumed, c->wbuf + data_pos,
                        sizeof c->wbuf - data_pos - END_RESERVE, &produced) != TM_OK ||
        consumed != t->size)
        return 0;
    produced += tm__body_finish(&body, c->wbuf + data_pos + produced);
    d = decimal(digits, produced);
    h = append(hdr, "BDAT ", 5);
    h = append(h, d, (size_t)(digits + sizeof digits - d));
    h = append(h, " LAST\r\n", 7);
    hl = (size_t)(h - hdr);
    shift = reserve - hl;
    memmove(c->wbuf + shift, c->wbuf, cmd_end);
    memcpy(c->wbuf + data_pos - hl, hdr, hl);
    c->wpos = shift;
    c->wlen = data_pos + produced;
    c->queued_total += hl + produced;
    expect(c, TM_X_BDAT, 0);
    c->content_mark = c->queued_total;
    /* With one recipient no 452 can ask for a further transaction, so the
     * connection's last one may end with QUIT in the same write. */
    if (t->quit_after && t->nto == 1) {
        put_command(c, TM_X_QUIT, 0, "QUIT", NULL, NULL);
        c->quit_sent = 1;
    }
    return 1;
}

/* Writes every command the transaction may write now. */
static void fill_txn(tm_client *c)
{
    tm_txn *t = c->txn;

    for (;;) {
        if (c->emit == E_MAIL) {
            char params[64];
            mail_params(c, params);
            if (room(c) < command_len("MAIL FROM:<", t->from, params))
                return;
            put_command(c, TM_X_MAIL, 0, "MAIL FROM:<", t->from, params);
            c->emit = c->pipelining ? E_RCPT : E_WAIT;
        } else if (c->emit == E_RCPT) {
            size_t i = c->next_rcpt;
            if (room(c) < command_len("RCPT TO:<", t->to[i], ">"))
                return;
            put_command(c, TM_X_RCPT, i, "RCPT TO:<", t->to[i], ">");
            t->state[i] = TM_R_SENT;
            c->next_rcpt++;
            if (!c->pipelining)
                c->emit = E_WAIT;
            else if (c->next_rcpt == t->nto)
                c->emit = E_BODY_CMD;
        } else if (c->emit == E_BODY_CMD) {
            if (c->pipelining && t->data && (c->caps.flags & TM_CAP_CHUNKING) && stage_bdat(c)) {
                c->emit = E_NONE;
                return;
            }
            if (room(c) < sizeof "DATA\r\n")
                return;
            put_command(c, TM_X_DATA, 0, "DATA", NULL, NULL);
            c->emit = E_WAIT;
        } else {
            return;
        }
    }
}

/* ---- replies, per command ---------------------------------------------------- */

/* The transaction was refused before any content: nothing more but RSET. */
static void refused(tm_client *c, const tm_reply *r)
{
    tm__status_set_reply(status_of(c), r);
    c->txn_error = TM_EREJECTED;
    c->emit = E_NONE;
    c->need_rset = 1;
}

/* 421 (RFC 5321 3.8): the server is going away; nothing was delivered. */
static void closing(tm_client *c)
{
    tm__status_set_reply(status_of(c), &c->reply);
    tm__status_describe(status_of(c), "%s is closing the connection (421)", c->host);
    rcpt_all(c, TM_RESULT_DEFERRED, &c->reply, 0);
    c->usable = 0;
    c->qlen = 0;
    op_done(c, TM_OP_CLOSING, TM_EREJECTED);
}

/* A reply that answers nothing it could answer. */
static void violation(tm_client *c, const char *what)
{
    tm__status_set_reply(status_of(c), &c->reply);
    if (c->state == ST_TXN && !c->content_sent) {
        tm__status_describe(status_of(c), "unexpected reply %d to %s from %s", c->reply.code, what,
                            c->host);
        c->described = 1;
    }
    fail(c, TM_EPROTOCOL, "unexpected reply");
}

static void on_mail(tm_client *c)
{
    const tm_reply *r = &c->reply;

    if (r->code == 421) {
        closing(c);
    } else if (cls(r->code) == 2) {
        c->mail_state = 1;
        if (!c->pipelining)
            c->emit = E_RCPT;
    } else if (cls(r->code) == 4 || cls(r->code) == 5) {
        c->mail_state = -1;
        rcpt_all(c, tm__result_of_code(r->code), r, 0);
        refused(c, r);
    } else {
        violation(c, "MAIL");
    }
}

/* Every RCPT has its reply: with nobody accepted, the transaction is over. */
static void rcpts_answered(tm_client *c)
{
    size_t i;

    if (c->naccepted > 0 || c->mail_state <= 0)
        return;
    /* A 452 next to nobody accepted is no "later": the server takes none. */
    for (i = 0; i < c->txn->nto; i++)
        if (c->txn->state[i] == TM_R_CARRY)
            rcpt_final(c, i, TM_RESULT_DEFERRED, &c->reply);
    refused(c, &c->reply);
}

static void on_rcpt(tm_client *c, size_t i)
{
    tm_txn *t = c->txn;
    const tm_reply *r = &c->reply;

    if (r->code == 421) {
        closing(c);
        return;
    }
    if (cls(r->code) != 2 && cls(r->code) != 4 && cls(r->code) != 5) {
        violation(c, "RCPT");
        return;
    }
    if (c->mail_state < 0)
        return; /* MAIL was refused: these replies answer commands, no more */
    if (cls(r->code) == 2) {
        t->state[i] = TM_R_ACCEPTED;
        c->naccepted++;
    } else if (r->code == 452 && c->naccepted > 0) {
        /* Too many recipients (RFC 5321 4.5.3.1.10): this one and, without
         * pipelining, those not sent yet go in a further transaction. */
        t->state[i] = TM_R_CARRY;
        t->carried++;
        for (; !c->pipelining && c->next_rcpt < t->nto; c->next_rcpt++) {
            t->state[c->next_rcpt] = TM_R_CARRY;
            t->carried++;
        }
    } else {
        rcpt_final(c, i, tm__result_of_code(r->code), r);
    }
    if (c->pipelining) {
        if (i + 1 == t->nto)
            rcpts_answered(c);
        return;
    }
    if (c->next_rcpt < t->nto) {
        c->emit = E_RCPT;
        return;
    }
    rcpts_answered(c);
    if (!c->need_rset)
        c->emit = E_BODY_CMD;
}

static void on_data(tm_client *c)
{
    const tm_reply *r = &c->reply;

    if (r->code == 421) {
        closing(c);
    } else if (r->code == 354 && c->naccepted > 0 && c->mail_state > 0) {
        tm__body_init(&c->body);
        c->emit = E_CONTENT;
        c->quiet_check = 1;
    } else if (r->code == 354) {
        /* 354 with nobody accepted (RFC 2920 3.1): end the empty
         * transaction at once. */
        put_command(c, TM_X_DOT, 0, ".", NULL, NULL);
        c->empty_dot = 1;
    } else if (cls(r->code) == 4 || cls(r->code) == 5) {
        if (c->naccepted > 0 && c->mail_state > 0) {
            rcpt_all(c, tm__result_of_code(r->code), r, 1);
            refused(c, r);
        }
        c->need_rset = 1;
    } else {
        /* A 2xx (or other 3xx) to DATA: a server out of step.  Nothing
         * was sent, nothing is delivered. */
        violation(c, "DATA");
    }
}

/* The reply to the end of data: the final dot, or BDAT ... LAST. */
static void on_end(tm_client *c)
{
    const tm_reply *r = &c->reply;

    if (c->empty_dot) {
        c->empty_dot = 0;
        return;
    }
    c->end_seen = 1;
    if (c->mail_state < 0 || c->naccepted == 0) {
        /* BDAT content that went with an envelope the server refused. */
        if (r->code == 421)
            c->usable = 0;
        return;
    }
    if (cls(r->code) != 2 && cls(r->code) != 4 && cls(r->code) != 5) {
        fail(c, TM_EPROTOCOL, "an unexpected reply");
        return;
    }
    tm__status_set_reply(status_of(c), r);
    rcpt_all(c, r->code == 421 ? TM_RESULT_DEFERRED : tm__result_of_code(r->code), r, 1);
    if (cls(r->code) != 2)
        c->txn_error = TM_EREJECTED;
    if (r->code == 421)
        c->usable = 0;
}

/* Greeting, EHLO, HELO: anything but success says the host will not serve. */
static void host_refused(tm_client *c)
{
    int code = c->reply.code;

    /* A 5xx or 421 speaks for the host, a 4xx for this connection; any
     * other reply is out of step. */
    c->leave_host = code == 421 || cls(code) == 5;
    c->usable = code != 421 && (cls(code) == 4 || cls(code) == 5);
    op_done(c, TM_OP_REJECTED, cls(code) == 4 || cls(code) == 5 ? TM_EREJECTED : TM_EPROTOCOL);
}

static void on_reply(tm_client *c, tm_expect what, size_t rcpt)
{
    const tm_reply *r = &c->reply;

    switch (what) {
    case TM_X_GREETING:
        if (r->code == 220)
            put_command(c, TM_X_EHLO, 0, "EHLO ", c->helo, NULL);
        else
            host_refused(c);
        return;
    case TM_X_EHLO:
        if (r->code == 250) {
            tm__caps_parse(&c->caps, r);
            op_done(c, TM_OP_OK, TM_OK);
        } else if (cls(r->code) == 5 && r->code != 521 && r->code != 554 && c->state == ST_OPEN) {
            /* An old server that knows no EHLO. */
            put_command(c, TM_X_HELO, 0, "HELO ", c->helo, NULL);
        } else {
            host_refused(c);
        }
        return;
    case TM_X_HELO:
        if (r->code == 250)
            op_done(c, TM_OP_OK, TM_OK);
        else
            host_refused(c);
        return;
    case TM_X_STARTTLS:
        if (r->code == 220 && c->rlen > c->rpos) {
            /* Bytes after the 220 were not sent by a TLS server: response
             * injection (CVE-2011-0411 class).  Never fed to TLS. */
            c->usable = 0;
            op_done(c, TM_OP_TLS_VIOLATION, TM_EPROTOCOL);
        } else if (r->code == 220) {
            c->state = ST_TLS;
        } else if (r->code == 421) {
            c->usable = 0;
            op_done(c, TM_OP_CLOSING, TM_EREJECTED);
        } else if (cls(r->code) == 4 || cls(r->code) == 5) {
            op_done(c, TM_OP_TLS_REFUSED, TM_EREJECTED);
        } else {
            /* A 2xx other than 220, a 3xx: no answer to STARTTLS. */
            c->usable = 0;
            op_done(c, TM_OP_TLS_VIOLATION, TM_EPROTOCOL);
        }
        return;
    case TM_X_MAIL:
        on_mail(c);
        break;
    case TM_X_RCPT:
        on_rcpt(c, rcpt);
        break;
    case TM_X_DATA:
        on_data(c);
        break;
    case TM_X_DOT:
    case TM_X_BDAT:
        on_end(c);
        break;
    case TM_X_RSET:
        if (cls(r->code) != 2)
            c->usable = 0;
        if (c->state != ST_TXN)
            op_done(c, cls(r->code) == 2 ? TM_OP_OK : TM_OP_FAILED,
                    cls(r->code) == 2 ? TM_OK : TM_EPROTOCOL);
        break;
    case TM_X_QUIT:
        c->usable = 0;
        if (c->state != ST_TXN)
            op_done(c, TM_OP_OK, TM_OK);
        break;
    }
    txn_check_end(c);
}

/* ---- input ---------------------------------------------------------------- */

/* Bytes that answer nothing sent: the connection is done for.  An
 * operation that already ended keeps its own result (a transaction its
 * outcome, a refusal its reply), except that a success or a refused
 * STARTTLS - after which the conversation would go on - turns into the
 * protocol violation it is. */
static void unsolicited(tm_client *c)
{
    c->rpos = c->rlen = 0;
    if (c->state != ST_DONE) {
        fail(c, TM_EPROTOCOL, "unsolicited data");
        return;
    }
    c->usable = 0;
    if (c->op_result == TM_OP_TLS_REFUSED) {
        op_done(c, TM_OP_TLS_VIOLATION, TM_EPROTOCOL);
    } else if (c->op_result == TM_OP_OK && !(c->txn && outcome_complete(c))) {
        c->op_result = TM_OP_FAILED;
        c->error = TM_EPROTOCOL;
        c->state = ST_FAILED;
    }
}

static void process(tm_client *c)
{
    while (c->rpos < c->rlen) {
        size_t used = 0, at;
        int rc;

        if (c->state == ST_FAILED) {
            c->rpos = c->rlen = 0;
            return;
        }
        if (c->state == ST_TLS)
            return; /* the driver looks at what is left (see tm__client_tls_done) */
        if (c->qlen == 0 || c->qmark[c->qhead] > c->sent_total) {
            unsolicited(c);
            return;
        }
        if (!c->in_reply) {
            tm__reply_reset(&c->reply);
            c->in_reply = 1;
        }
        rc = tm__reply_parse(&c->reply, (const char *)c->rbuf + c->rpos, c->rlen - c->rpos, &used);
        c->rpos += used;
        if (rc < 0) {
            c->reply.code = 0;
            fail(c, TM_EPROTOCOL, "a malformed reply");
            return;
        }
        if (rc == 0)
            break;
        c->in_reply = 0;
        c->replies++;
        at = c->qhead;
        c->qhead = (c->qhead + 1) % TM_CLIENT_QUEUE;
        c->qlen--;
        c->quiet_check = 1;
        on_reply(c, c->queue[at], c->qrcpt[at]);
    }
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
}

/* ---- the interface ---------------------------------------------------------- */

void tm__client_init(tm_client *c, const char *helo)
{
    memset(c, 0, offsetof(tm_client, rbuf));
    c->helo = helo;
    c->host = "";
}

void tm__client_reset(tm_client *c)
{
    const char *helo = c->helo, *host = c->host;

    memset(c, 0, offsetof(tm_client, rbuf));
    c->helo = helo;
    c->host = host;
}

static int can_begin(const tm_client *c)
{
    return (c->state == ST_DONE || c->state == ST_IDLE) && c->usable;
}

int tm__client_open(tm_client *c)
{
    tm__client_reset(c);
    c->state = ST_OPEN;
    c->usable = 1;
    expect(c, TM_X_GREETING, 0); /* answerable at once: position 0 */
    return TM_OK;
}

/* An operation of one command and its reply. */
static int one_command(tm_client *c, int state, tm_expect what, const char *cmd, const char *arg)
{
    if (!can_begin(c))
        return TM_ESTATE;
    c->txn = NULL;
    c->state = state;
    put_command(c, what, 0, cmd, arg, NULL);
    return TM_OK;
}

int tm__client_starttls(tm_client *c)
{
    return one_command(c, ST_STARTTLS, TM_X_STARTTLS, "STARTTLS", NULL);
}

void tm__client_tls_up(tm_client *c)
{
    if (c->state != ST_TLS)
        return;
    /* Forget everything learnt in plaintext. */
    c->caps.flags = 0;
    c->caps.size_limit = 0;
    c->rpos = c->rlen = 0;
    op_done(c, TM_OP_OK, TM_OK);
}

int tm__client_ehlo(tm_client *c)
{
    return one_command(c, ST_EHLO, TM_X_EHLO, "EHLO ", c->helo);
}

void tm__client_tls_done(tm_client *c)
{
    if (c->state != ST_TLS)
        return;
    tm__client_tls_up(c);
    tm__client_ehlo(c);
}

void tm__client_tls_failed(tm_client *c)
{
    if (c->state != ST_TLS)
        return;
    c->usable = 0;
    op_done(c, TM_OP_TLS_VIOLATION, TM_EPROTOCOL);
}

int tm__client_mail(tm_client *c, tm_txn *t)
{
    tm_delivery_status *st = t && t->out ? t->out->st : NULL;
    size_t i;

    if (!can_begin(c))
        return TM_ESTATE;
    if (!t || !t->from || t->nto == 0 || t->nto > TM_TXN_RCPT_MAX)
        return TM_EINVAL;
    memset(t->state, TM_R_UNSENT, t->nto);
    t->carried = 0;
    c->txn = t;
    c->state = ST_TXN;
    c->emit = E_MAIL;
    c->pipelining = (c->caps.flags & TM_CAP_PIPELINING) != 0;
    c->quit_sent = c->need_rset = c->empty_dot = c->end_seen = 0;
    c->mail_state = 0;
    c->txn_error = TM_OK;
    c->described = 0;
    c->naccepted = c->next_rcpt = 0;
    c->content_mark = 0;
    c->content_sent = 0;
    tm__status_set_utf8(st, t->utf8);

    /* Refusals known before a byte is written. */
    if (t->utf8 && !(c->caps.flags & TM_CAP_SMTPUTF8)) {
        tm__status_set_enhanced(st, "5.6.7");
        tm__status_describe(st, "non-ASCII address, but %s does not offer SMTPUTF8", c->host);
        for (i = 0; i < t->nto; i++)
            rcpt_final(c, i, TM_RESULT_BOUNCED, NULL);
        op_done(c, TM_OP_OK, TM_EUTF8);
        return TM_OK;
    }
    if ((c->caps.flags & TM_CAP_SIZE) && c->caps.size_limit && t->data &&
        t->size > c->caps.size_limit) {
        tm__status_set_enhanced(st, "5.3.4");
        tm__status_describe(st, "message of %zu bytes exceeds the %lu byte limit of %s", t->size,
                            c->caps.size_limit, c->host);
        for (i = 0; i < t->nto; i++)
            rcpt_final(c, i, TM_RESULT_BOUNCED, NULL);
        op_done(c, TM_OP_OK, TM_EREJECTED);
        return TM_OK;
    }
    return TM_OK;
}

int tm__client_rset(tm_client *c)
{
    return one_command(c, ST_RSET, TM_X_RSET, "RSET", NULL);
}

int tm__client_quit(tm_client *c)
{
    return one_command(c, ST_QUIT, TM_X_QUIT, "QUIT", NULL);
}

tm_want tm__client_want(tm_client *c)
{
    if (c->state == ST_TXN)
        fill_txn(c);
    if (c->state == ST_FAILED)
        return TM_WANT_FAILED;
    if (c->wlen > c->wpos)
        return TM_WANT_SEND;
    switch (c->state) {
    case ST_TLS:
        return TM_WANT_TLS;
    case ST_IDLE:
    case ST_DONE:
        return TM_WANT_DONE;
    default:
        break;
    }
    if (c->state == ST_TXN && c->emit == E_CONTENT)
        return TM_WANT_CONTENT;
    if (c->qlen > 0)
        return TM_WANT_RECV;
    /* Nothing to write, nothing awaited: cannot happen; never hang. */
    fail(c, TM_EPROTOCOL, "an internal error");
    return TM_WANT_FAILED;
}

tm_timeout_kind tm__client_timeout(const tm_client *c)
{
    tm_expect head;

    if (c->state == ST_TXN && (c->emit == E_CONTENT || c->wlen > c->wpos))
        return c->emit == E_CONTENT || c->content_mark ? TM_TO_DATA_BLOCK : TM_TO_MAIL;
    if (c->qlen == 0)
        return TM_TO_EHLO;
    head = c->queue[c->qhead];
    switch (head) {
    case TM_X_GREETING:
        return TM_TO_GREETING;
    case TM_X_MAIL:
        return TM_TO_MAIL;
    case TM_X_RCPT:
        return TM_TO_RCPT;
    case TM_X_DATA:
        return TM_TO_DATA;
    case TM_X_DOT:
    case TM_X_BDAT:
        return TM_TO_DATA_END;
    case TM_X_QUIT:
        return TM_TO_QUIT;
    default:
        return TM_TO_EHLO;
    }
}

int tm__client_quiet(tm_client *c)
{
    int quiet = c->quiet_check && (c->qlen == 0 || c->qmark[c->qhead] > c->sent_total);

    c->quiet_check = 0;
    return quiet;
}

size_t tm__client_output(const tm_client *c, const unsigned char **p)
{
    *p = c->wbuf + c->wpos;
    return c->wlen - c->wpos;
}

void tm__client_sent(tm_client *c, size_t n)
{
    if (n > c->wlen - c->wpos)
        n = c->wlen - c->wpos;
    c->wpos += n;
    c->sent_total += n;
    if (c->wpos == c->wlen)
        c->wpos = c->wlen = 0;
    if (c->content_mark && c->sent_total >= c->content_mark)
        c->content_sent = 1;
}

size_t tm__client_inbuf(tm_client *c, unsigned char **p)
{
    *p = c->rbuf + c->rlen;
    return sizeof c->rbuf - c->rlen;
}

void tm__client_received(tm_client *c, size_t n)
{
    if (n > sizeof c->rbuf - c->rlen)
        n = sizeof c->rbuf - c->rlen;
    c->rlen += n;
    process(c);
}

int tm__client_content(tm_client *c, const unsigned char *p, size_t n, size_t *consumed)
{
    tm_txn *t = c->txn;
    size_t produced = 0;
    int rc;

    *consumed = 0;
    if (c->state != ST_TXN || c->emit != E_CONTENT)
        return TM_ESTATE;
    if (n == 0) {
        if (room(c) < END_RESERVE)
            return TM_OK; /* after the next send */
        produced = tm__body_finish(&c->body, c->wbuf + c->wlen);
        c->wlen += produced;
        c->queued_total += produced;
        expect(c, TM_X_DOT, 0);
        c->content_mark = c->queued_total;
        c->emit = E_NONE;
        /* Anything waiting now came before the end of data: a reply to
         * nothing.  Look before it goes. */
        c->quiet_check = 1;
        /* The connection's last transaction, the recipients all known:
         * QUIT rides in the same write (RFC 2920 3.1). */
        if (t->quit_after && c->pipelining && t->carried == 0) {
            put_command(c, TM_X_QUIT, 0, "QUIT", NULL, NULL);
            c->quit_sent = 1;
        }
        return TM_OK;
    }
    if (room(c) < END_RESERVE + 4)
        return TM_OK;
    rc = tm__body_encode(&c->body, p, n, consumed, c->wbuf + c->wlen, room(c) - END_RESERVE,
                         &produced);
    c->wlen += produced;
    c->queued_total += produced;
    if (rc != TM_OK) {
        /* There is no way to abort DATA but to drop the connection: the
         * server then discards the partial message. */
        tm__status_describe(status_of(c), "message content contains a NUL byte");
        rcpt_all(c, TM_RESULT_BOUNCED, NULL, 0);
        fail(c, rc, "unusable content");
        return rc;
    }
    return TM_OK;
}

void tm__client_content_error(tm_client *c, int error)
{
    if (c->state != ST_TXN)
        return;
    tm__status_describe(status_of(c), "reading the message failed");
    c->described = 1;
    fail(c, error, "reading the message failed");
}

void tm__client_io_error(tm_client *c, int error)
{
    if (c->state == ST_TXN && !c->content_sent && (c->emit == E_CONTENT || c->content_mark)) {
        /* There is no way to abort DATA but to drop the connection: the
         * server then discards the partial message. */
        tm__status_describe(status_of(c), "connection lost while sending the content to %s (%s): "
                                          "nothing delivered",
                            c->host, tm_strerror(error));
        c->described = 1;
    }
    if (c->state == ST_TXN && outcome_complete(c) && (c->end_seen || !c->content_mark)) {
        /* Every recipient has its outcome (a lost reply to RSET or a
         * pipelined QUIT): the transaction stands, the connection not. */
        c->usable = 0;
        c->qlen = 0;
        op_done(c, TM_OP_OK, c->txn_error);
        return;
    }
    fail(c, error, tm_strerror(error));
}

uint64_t tm__client_replies(const tm_client *c)
{
    return c->replies;
}

int tm__client_op_result(const tm_client *c)
{
    return c->op_result;
}

int tm__client_usable(const tm_client *c)
{
    return c->usable;
}
