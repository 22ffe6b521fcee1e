/*
 * driver.c - the thin blocking loop between the SMTP engine (client.c) and
 * a transport (net.c, tls.c, or a test's in-memory one).  It decides
 * nothing: it asks the engine what it wants and moves bytes, every wait
 * bounded by the deadline of the engine's kind of timeout.
 */
#include <string.h>

#include "internal.h"

static unsigned int timeout_ms(const tm_drive *d, tm_timeout_kind k)
{
    const tm_timeouts *to;

    if (!d->ctx)
        return 0;
    to = &d->ctx->to;
    switch (k) {
    case TM_TO_GREETING:
        return to->greeting;
    case TM_TO_MAIL:
        return to->mail;
    case TM_TO_RCPT:
        return to->rcpt;
    case TM_TO_DATA:
        return to->data;
    case TM_TO_DATA_BLOCK:
        return to->data_block;
    case TM_TO_DATA_END:
        return to->data_end;
    case TM_TO_QUIT:
        return to->quit;
    default:
        return to->ehlo;
    }
}

/* The dialogue at debug level: commands and replies, never the content. */
static void log_lines(const tm_drive *d, const char *dir, const unsigned char *p, size_t n)
{
    size_t i = 0;

    if (!d->ctx || !d->ctx->log || d->ctx->log_level < TM_LOG_DEBUG)
        return;
    while (i < n) {
        const unsigned char *lf = memchr(p + i, '\n', n - i);
        size_t len = lf ? (size_t)(lf - (p + i)) : n - i;
        size_t line = len;

        if (line > 0 && p[i + line - 1] == '\r')
            line--;
        tm__log(d->ctx, TM_LOG_DEBUG, "%s%.*s%s", dir, (int)(line > 200 ? 200 : line),
                (const char *)p + i, line >= 5 && !memcmp(p + i, "BDAT ", 5) ? " (+ content)" : "");
        if (line >= 5 && !memcmp(p + i, "BDAT ", 5))
            break; /* the content follows: never logged */
        i += lf ? len + 1 : len;
    }
}

/* Bytes already waiting while no reply is awaited answer nothing: take a
 * look (no wait) and give them to the engine, which ends the conversation. */
static void look(tm_drive *d)
{
    unsigned char *p;
    size_t room = tm__client_inbuf(d->c, &p);
    long n = d->tr->ops->read(d->tr, p, room, tm__now_ms());

    if (n > 0) {
        log_lines(d, "S: ", p, (size_t)n);
        tm__client_received(d->c, (size_t)n);
    } else if (n != TM_ETIMEOUT) {
        tm__client_io_error(d->c, (int)n);
    }
}

static void give_content(tm_drive *d)
{
    tm_source *src = d->src;
    size_t used = 0;

    if (!src) {
        tm__client_content_error(d->c, TM_EREAD);
        return;
    }
    if (!src->read) {
        tm__client_content(d->c, src->data ? src->data + src->off : NULL, src->size - src->off,
                           &used);
        src->off += used;
        return;
    }
    if (src->ipos == src->ilen && !src->eof) {
        long n = src->read(src->arg, d->ibuf, d->ibuf_size);
        if (n < 0) {
            tm__client_content_error(d->c, TM_EREAD);
            return;
        }
        src->ipos = 0;
        src->ilen = (size_t)n > d->ibuf_size ? d->ibuf_size : (size_t)n;
        src->eof = n == 0;
    }
    tm__client_content(d->c, d->ibuf + src->ipos, src->ilen - src->ipos, &used);
    src->ipos += used;
}

tm_want tm__drive(tm_drive *d)
{
    tm_client *c = d->c;
    uint64_t waiting_for = UINT64_MAX; /* the reply the read deadline is for */
    int64_t read_deadline = 0;

    for (;;) {
        tm_want w = tm__client_want(c);
        tm_timeout_kind kind;
        int64_t deadline;

        if (w == TM_WANT_TLS || w == TM_WANT_DONE || w == TM_WANT_FAILED)
            return w;
        if (w == TM_WANT_CONTENT) {
            give_content(d);
            continue;
        }
        kind = tm__client_timeout(c);
        deadline = tm__min_deadline(tm__deadline(timeout_ms(d, kind)), d->deadline);
        /* One deadline per reply awaited, set when the wait for it begins;
         * each write of a block gets its own. */
        if (w == TM_WANT_RECV) {
            if (waiting_for != tm__client_replies(c)) {
                waiting_for = tm__client_replies(c);
                read_deadline = deadline;
            }
            deadline = read_deadline;
        } else {
            waiting_for = UINT64_MAX;
        }
        if (w == TM_WANT_SEND) {
            const unsigned char *p;
            size_t n;
            int rc;

            if (tm__client_quiet(c) && d->tr->ops->pending(d->tr) > 0) {
                look(d);
                continue;
            }
            n = tm__client_output(c, &p);
            if (kind != TM_TO_DATA_BLOCK || (n > 5 && !memcmp(p, "MAIL ", 5)))
                log_lines(d, "C: ", p, n);
            rc = d->tr->ops->write(d->tr, p, n, deadline);
            if (rc != TM_OK)
                tm__client_io_error(c, rc);
            else
                tm__client_sent(c, n);
        } else {
            unsigned char *p;
            size_t room = tm__client_inbuf(c, &p);
            long n = d->tr->ops->read(d->tr, p, room, deadline);

            if (n < 0) {
                tm__client_io_error(c, (int)n);
            } else {
                log_lines(d, "S: ", p, (size_t)n);
                tm__client_received(c, (size_t)n);
            }
        }
    }
}
