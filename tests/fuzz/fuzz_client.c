/*
 * fuzz_client.c - the SMTP client engine fed arbitrary server bytes, split
 * at fuzzer-chosen points, through a whole session: greeting, EHLO,
 * STARTTLS (when offered), transactions with DATA or BDAT, pipelined or not
 * (the fuzzer can turn PIPELINING off for one), recipients carried over by
 * 452 into further transactions, QUIT.
 *
 * Input: byte 0 = flags (below); byte 1 & 15 = n chunk bytes follow,
 * cycled over the reads (none: one line per read); byte 1 & 16 = every
 * write goes in two halves; d = byte 1 >> 5.  A chunk byte b gives a read
 * of b & 127 bytes (0: through the next LF); b & 128 makes it arrive early,
 * before the client's (d+1)-th write after the previous read: fed at once
 * when the engine looks there (tm__client_quiet), as the driver does, else
 * at the next read.  Then the server's bytes; when they run out the
 * connection is closed (or times out).
 *
 * Checks: the engine always makes progress and never asks for the
 * impossible; a recipient is delivered only with a 2xx reply line whose
 * first byte arrived after the end of data (final dot, BDAT LAST chunk) was
 * written; uncertain only once it was written; bounced only on a 5xx or a
 * refusal made before writing; by the end every recipient's outcome is
 * recorded exactly once.
 *
 * FUZZ_CLIENT_TRACE=1 prints the dialogue (standalone build).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "internal.h"

enum {
    F_TLS_FAIL = 1,       /* the handshake fails */
    F_TIMEOUT = 2,        /* the end of input is a timeout, not a close */
    F_STREAM2 = 4,        /* later transactions stream their content */
    F_NOPIPE2 = 8,        /* later transactions without PIPELINING */
    F_NOPIPE1 = 16,       /* the first transaction without PIPELINING */
    F_QUIT_AFTER = 32,    /* the last transaction says quit_after */
    F_UTF8 = 64,          /* addresses need SMTPUTF8, content is 8-bit */
    F_NO_STARTTLS = 128   /* do not try STARTTLS */
};

#define NRCPT 5
#define OUT_MAX 65536
#define FED_MAX 65536

static const char message[] = "Subject: fuzz\r\nFrom: s@x.example\r\n\r\n"
                              ".leading dot\nbare LF\rbare CR\r\n\r\nend";

typedef struct h {
    const uint8_t *in;
    size_t len, pos;
    const uint8_t *chunks;
    size_t nchunks, k;
    int flags, halves, trace;
    size_t delay;
    size_t sends;                 /* writes since the last read */
    size_t held;                  /* an early read arrived, not fed yet */
    int held_before_end;          /* ... before the end of data was written */
    tm_client c;
    /* the transaction under way */
    int in_txn, bdat_end_known;
    tm_txn txn;
    size_t moff, chunk;
    unsigned char out[OUT_MAX];   /* written in this transaction */
    size_t outlen;
    size_t end_at;                /* output position past the end of data, 0: unknown */
    int end_sent;
    size_t end_fed;               /* server bytes fed when the end was written */
    unsigned char fed[FED_MAX];   /* server bytes fed in this transaction */
    size_t fedlen;
    int fed_overflow, out_overflow;
    /* the message */
    tm_delivery_status st;
    tm_rcpt_status rcpt[NRCPT];
    tm_outcome o;
    int recorded[NRCPT];
} h;

static h H;
static const char *const to_ascii[NRCPT] = {"a@y.example", "b@y.example", "c@y.example",
                                            "d@y.example", "e@y.example"};
static const char *const to_utf8[NRCPT] = {"\xc3\xa4@y.example", "b@y.example", "c@y.example",
                                           "d@y.example", "e@y.example"};

static void trace(const h *x, const char *dir, const unsigned char *p, size_t n)
{
    if (x->trace)
        fprintf(stderr, "%s%.*s%s", dir, (int)n, (const char *)p,
                n && p[n - 1] == '\n' ? "" : "|\n");
}

/* The next read: its size, and whether it arrives early. */
static size_t next_chunk(h *x, int *early)
{
    size_t n = 0;

    *early = 0;
    if (x->nchunks) {
        uint8_t b = x->chunks[x->k % x->nchunks];
        n = (size_t)(b & 127);
        *early = (b & 128) != 0;
    }
    if (n == 0) {
        const uint8_t *lf = memchr(x->in + x->pos, '\n', x->len - x->pos);
        n = lf ? (size_t)(lf + 1 - (x->in + x->pos)) : x->len - x->pos;
    }
    if (n > x->len - x->pos)
        n = x->len - x->pos;
    return n;
}

static void feed(h *x, size_t n)
{
    while (n > 0) {
        unsigned char *p;
        size_t room = tm__client_inbuf(&x->c, &p), k = n < room ? n : room;

        FUZZ_CHECK(room > 0);
        memcpy(p, x->in + x->pos, k);
        trace(x, "S: ", p, k);
        if (x->in_txn) {
            if (x->fedlen + k <= FED_MAX) {
                memcpy(x->fed + x->fedlen, p, k);
                x->fedlen += k;
            } else {
                x->fed_overflow = 1;
            }
        }
        x->pos += k;
        n -= k;
        tm__client_received(&x->c, k);
    }
    x->k++;
    x->sends = 0;
}

/* The early read that arrived: bytes that came before the end of data
 * was written answer nothing after it. */
static void feed_held(h *x)
{
    size_t n = x->held;

    x->held = 0;
    feed(x, n);
    if (x->in_txn && x->held_before_end && x->end_sent)
        x->end_fed = x->fedlen;
}

/* Where the end of data lies in what this transaction wrote, once known:
 * past "BDAT n LAST\r\n" and its n octets, or past the first CRLF.CRLF
 * (dot-stuffing keeps it out of the content; the message has no lone dot
 * line, so not even BDAT's raw content holds one). */
static void find_end(h *x)
{
    const unsigned char *p;
    size_t i;

    if (x->end_at || x->out_overflow)
        return;
    for (i = 0; i + 5 <= x->outlen; i++) {
        p = x->out + i;
        if (i >= 2 && p[-2] == '\r' && p[-1] == '\n' && memcmp(p, "BDAT ", 5) == 0) {
            unsigned long n = strtoul((const char *)p + 5, NULL, 10);
            const unsigned char *crlf = memchr(p, '\n', x->outlen - i);
            if (crlf)
                x->end_at = (size_t)(crlf + 1 - x->out) + n;
            return;
        }
        if (memcmp(p, "\r\n.\r\n", 5) == 0) {
            x->end_at = i + 5;
            return;
        }
    }
}

static void do_send(h *x)
{
    const unsigned char *p;
    size_t n;
    int early, quiet = tm__client_quiet(&x->c);

    /* Writes in halves: arrivals only where the engine looks, as a write
     * in progress cannot look. */
    if (!x->held && x->pos < x->len && (!x->halves || quiet) && x->sends == x->delay) {
        size_t k = next_chunk(x, &early);
        if (early) {
            x->held = k;
            x->held_before_end = !x->end_sent;
        }
    }
    if (x->held && quiet) {
        feed_held(x);
        return;
    }
    x->sends++;
    n = tm__client_output(&x->c, &p);
    FUZZ_CHECK(n > 0);
    if (x->halves && n > 1)
        n /= 2;
    trace(x, "C: ", p, n);
    if (x->in_txn) {
        if (x->outlen + n <= OUT_MAX) {
            memcpy(x->out + x->outlen, p, n);
            x->outlen += n;
        } else {
            x->out_overflow = 1;
        }
        find_end(x);
        if (x->end_at && !x->end_sent && x->outlen >= x->end_at) {
            x->end_sent = 1;
            x->end_fed = x->fedlen;
        }
    }
    tm__client_sent(&x->c, n);
}

static void do_recv(h *x)
{
    int early;

    if (x->held) {
        feed_held(x);
        return;
    }
    if (x->pos < x->len) {
        feed(x, next_chunk(x, &early));
        return;
    }
    trace(x, "-- ", (const unsigned char *)"end of input\n", 13);
    tm__client_io_error(&x->c, (x->flags & F_TIMEOUT) ? TM_ETIMEOUT : TM_ECLOSED);
}

static void do_content(h *x)
{
    size_t k = sizeof message - 1 - x->moff, used = 0;
    int rc;

    if (x->chunk && k > x->chunk)
        k = x->chunk;
    rc = tm__client_content(&x->c, k ? (const unsigned char *)message + x->moff : NULL, k,
                            &used);
    FUZZ_CHECK(rc == TM_OK);
    FUZZ_CHECK(used <= k);
    x->moff += used;
}

static tm_want run(h *x)
{
    unsigned long iter;

    for (iter = 0; iter < 1000000; iter++) {
        tm_want w = tm__client_want(&x->c);

        switch (w) {
        case TM_WANT_SEND:
            do_send(x);
            break;
        case TM_WANT_RECV:
            do_recv(x);
            break;
        case TM_WANT_CONTENT:
            FUZZ_CHECK(x->in_txn);
            do_content(x);
            break;
        case TM_WANT_TLS:
            if (x->flags & F_TLS_FAIL) {
                tm__client_tls_failed(&x->c);
            } else {
                trace(x, "-- ", (const unsigned char *)"TLS\n", 4);
                tm__client_tls_done(&x->c);
            }
            break;
        case TM_WANT_DONE:
            return w;
        case TM_WANT_FAILED:
            FUZZ_CHECK(!tm__client_usable(&x->c));
            return w;
        default:
            FUZZ_CHECK(0);
        }
    }
    FUZZ_CHECK(0); /* no progress */
    return TM_WANT_FAILED;
}

/* A reply line of code `code` ending after the end of data was written,
 * and beginning no earlier. */
static int final_reply_after_end(const h *x, int code)
{
    size_t i;

    if (x->fed_overflow)
        return 1;
    for (i = x->end_fed; i + 3 <= x->fedlen; i++) {
        const unsigned char *p = x->fed + i;
        int c;

        if (i > 0 && x->fed[i - 1] != '\n')
            continue;
        c = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        if (c != code || p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] < '0' ||
            p[2] > '9')
            continue;
        if (i + 3 == x->fedlen)
            continue; /* no LF: incomplete */
        if ((p[3] == ' ' || p[3] == '\r' || p[3] == '\n') &&
            memchr(p, '\n', x->fedlen - i) != NULL)
            return 1;
    }
    return 0;
}

/* One transaction over recipients idx[0..n): returns whether the
 * connection can go on, and the recipients carried. */
static int transaction(h *x, const size_t *idx, size_t n, const char *const *to, int streamed,
                       int nopipe, int quit, size_t *carry, size_t *ncarry)
{
    tm_txn *t = &x->txn;
    unsigned int pipe = x->c.caps.flags & TM_CAP_PIPELINING;
    tm_want w;
    size_t i;
    int rc;

    memset(t, 0, sizeof *t);
    t->from = (x->flags & F_UTF8) ? "s\xc3\xa9@x.example" : "s@x.example";
    for (i = 0; i < n; i++) {
        t->to[i] = to[idx[i]];
        t->idx[i] = idx[i];
    }
    t->nto = n;
    t->data = streamed ? NULL : (const unsigned char *)message;
    t->size = streamed ? 0 : sizeof message - 1;
    t->has_8bit = (x->flags & F_UTF8) != 0;
    t->utf8 = (x->flags & F_UTF8) != 0;
    t->quit_after = quit;
    t->out = &x->o;
    x->moff = 0;
    x->chunk = streamed ? 7 : 0;
    x->in_txn = 1;
    x->outlen = x->fedlen = x->end_at = x->end_fed = 0;
    x->end_sent = x->fed_overflow = x->out_overflow = 0;
    x->held_before_end = 1; /* anything already arrived came before */
    if (nopipe)
        x->c.caps.flags &= ~(unsigned int)TM_CAP_PIPELINING;

    rc = tm__client_mail(&x->c, t);
    FUZZ_CHECK(rc == TM_OK);
    tm__outcome_txn(&x->o);
    w = run(x);
    x->c.caps.flags |= pipe;
    x->in_txn = 0;

    *ncarry = 0;
    for (i = 0; i < n; i++) {
        tm_rcpt_status *r = &x->rcpt[idx[i]];

        if (t->state[i] == TM_R_CARRY) {
            FUZZ_CHECK(r->result == TM_RESULT_NONE);
            carry[(*ncarry)++] = idx[i];
            continue;
        }
        /* Every recipient has its outcome when the transaction ends. */
        FUZZ_CHECK(t->state[i] == TM_R_DONE);
        FUZZ_CHECK(r->result != TM_RESULT_NONE);
        FUZZ_CHECK(x->recorded[idx[i]] == 0);
        x->recorded[idx[i]] = 1;
        switch (r->result) {
        case TM_RESULT_DELIVERED:
            FUZZ_CHECK(x->end_sent);
            FUZZ_CHECK(r->code >= 200 && r->code <= 299);
            FUZZ_CHECK(final_reply_after_end(x, r->code));
            break;
        case TM_RESULT_UNCERTAIN:
            FUZZ_CHECK(x->end_sent);
            break;
        case TM_RESULT_BOUNCED:
            FUZZ_CHECK((r->code >= 500 && r->code <= 599) ||
                       (r->code == 0 && x->st.enhanced_code[0] == '5'));
            break;
        case TM_RESULT_DEFERRED:
            break;
        default:
            FUZZ_CHECK(0);
        }
    }
    FUZZ_CHECK(t->carried == *ncarry);
    if (w == TM_WANT_FAILED || !tm__client_usable(&x->c)) {
        FUZZ_CHECK(tm__client_mail(&x->c, t) == TM_ESTATE);
        return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    h *x = &H;
    const char *const *to;
    size_t next = 0, carry[NRCPT], ncarry = 0, i, ntxn;
    unsigned int sum;
    int usable;

    if (size < 2)
        return 0;
    memset(x, 0, sizeof *x);
    x->trace = getenv("FUZZ_CLIENT_TRACE") != NULL;
    x->flags = data[0];
    x->halves = (data[1] & 16) != 0;
    x->delay = (size_t)(data[1] >> 5);
    x->nchunks = data[1] & 15;
    if (size < 2 + x->nchunks)
        return 0;
    x->chunks = data + 2;
    x->in = data + 2 + x->nchunks;
    x->len = size - 2 - x->nchunks;
    to = (x->flags & F_UTF8) ? to_utf8 : to_ascii;

    tm__client_init(&x->c, "client.example");
    x->c.host = "mx.example";
    x->st.version = TM_STATUS_VERSION;
    FUZZ_CHECK(tm__status_reset(&x->st) == TM_OK);
    x->o.st = &x->st;
    x->o.rcpt = x->rcpt;
    x->o.cap = NRCPT;
    tm__outcome_begin(&x->o, to, NRCPT);

    /* Greeting, EHLO. */
    FUZZ_CHECK(tm__client_open(&x->c) == TM_OK);
    usable = run(x) == TM_WANT_DONE && tm__client_op_result(&x->c) == TM_OP_OK;
    /* STARTTLS when offered. */
    if (usable && (x->c.caps.flags & TM_CAP_STARTTLS) && !(x->flags & F_NO_STARTTLS)) {
        FUZZ_CHECK(tm__client_starttls(&x->c) == TM_OK);
        usable = run(x) == TM_WANT_DONE;
        if (usable) {
            int op = tm__client_op_result(&x->c);
            FUZZ_CHECK(op == TM_OP_OK || op == TM_OP_TLS_REFUSED || op == TM_OP_TLS_VIOLATION ||
                       op == TM_OP_CLOSING || op == TM_OP_REJECTED);
            if (op == TM_OP_TLS_VIOLATION || op == TM_OP_CLOSING)
                FUZZ_CHECK(!tm__client_usable(&x->c));
            usable = (op == TM_OP_OK || op == TM_OP_TLS_REFUSED) && tm__client_usable(&x->c);
        }
    }
    /* Transactions: three recipients, then the carried ones and two more,
     * then whatever is still carried. */
    for (ntxn = 0; usable && (next < NRCPT || ncarry > 0) && ntxn < 4; ntxn++) {
        size_t idx[NRCPT], n = 0, newcarry[NRCPT], nnew = 0;
        int last;

        for (i = 0; i < ncarry; i++)
            idx[n++] = carry[i];
        for (; next < NRCPT && n < (ntxn == 0 ? 3u : NRCPT); next++)
            idx[n++] = next;
        last = next == NRCPT;
        usable = transaction(x, idx, n, to, ntxn > 0 && (x->flags & F_STREAM2),
                             ntxn == 0 ? (x->flags & F_NOPIPE1) : (x->flags & F_NOPIPE2),
                             last && (x->flags & F_QUIT_AFTER), newcarry, &nnew);
        memcpy(carry, newcarry, nnew * sizeof carry[0]);
        ncarry = nnew;
    }
    if (usable) {
        FUZZ_CHECK(tm__client_quit(&x->c) == TM_OK);
        run(x);
        FUZZ_CHECK(!tm__client_usable(&x->c) || tm__client_op_result(&x->c) != TM_OP_OK);
    }
    /* Recipients no transaction took are not delivered (as the session
     * records them). */
    for (i = 0; i < ncarry; i++) {
        FUZZ_CHECK(!x->recorded[carry[i]]);
        tm__outcome_set(&x->o, carry[i], TM_RESULT_DEFERRED, NULL);
        x->recorded[carry[i]] = 1;
    }
    for (; next < NRCPT; next++) {
        tm__outcome_set(&x->o, next, TM_RESULT_DEFERRED, NULL);
        x->recorded[next] = 1;
    }
    /* Each recorded exactly once. */
    sum = x->st.rcpt_delivered + x->st.rcpt_deferred + x->st.rcpt_uncertain + x->st.rcpt_bounced;
    FUZZ_CHECK(sum == NRCPT);
    for (i = 0; i < NRCPT; i++) {
        FUZZ_CHECK(x->recorded[i]);
        FUZZ_CHECK(x->rcpt[i].result != TM_RESULT_NONE);
    }
    if (x->trace)
        fprintf(stderr, "== %u delivered, %u deferred, %u uncertain, %u bounced\n",
                x->st.rcpt_delivered, x->st.rcpt_deferred, x->st.rcpt_uncertain,
                x->st.rcpt_bounced);
    return 0;
}
