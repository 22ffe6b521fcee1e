/*
 * test_client.c - the SMTP client engine (lib/client.c) replayed against
 * server transcripts written the way RFC examples are, and the blocking
 * driver (lib/driver.c) over an in-memory transport.  No socket, no clock.
 *
 * A transcript is a list of entries, each a prefix, a space and a text:
 *
 *   > open | starttls | rset | quit       begin an operation
 *   > mail FROM TO[,TO...] [quit] [stream=N] [utf8] [8bit]
 *                          a transaction (FROM "<>" is the null sender;
 *                          quit: the connection's last one; stream=N: the
 *                          content is given N bytes at a time and not in
 *                          memory, so no SIZE and no BDAT)
 *   > OP -> ESTATE         the call must return that error (nothing runs)
 *   M: text | M/ text      the next message's content: a line (CRLF added)
 *                          or raw bytes; default "Subject: test" / "" /
 *                          "Hello." (the BODY macro's lines)
 *   C: line                the client writes this line (CRLF added)
 *   C& line                ... in the same write as the line before
 *   C| line                ... at the start of a write
 *   S: line                the server's next read (CRLF added)
 *   S+ line                glued to the read before (same packet)
 *   S/ bytes | S+/ bytes   a read (or glued bytes) without CRLF: a line
 *                          split across reads
 *   S! line                bytes that arrive before the client's next
 *                          write: fed when the engine is about to send,
 *                          where the driver takes its look
 *                          (tm__client_quiet); the engine must ask for it
 *   -- closed | timeout    the transport fails at this point (read or write)
 *   -- tls | tls failed    the handshake the engine asked for
 *   -- read error          the content source fails
 *   T: kind                the engine's timeout kind here (greeting, ehlo,
 *                          mail, rcpt, data, data-block, data-end, quit)
 *   = RESULT [tokens]      the operation ended: ok, rejected, closing,
 *                          tls-refused, tls-violation, failed (want FAILED
 *                          unless "done"); usable|unusable, leave|stay,
 *                          err=NAME, caps=A,B (exact), size=N, code=N and
 *                          enh=X (the status' reply)
 *   R: OUTCOME ...         each recipient: delivered|deferred|uncertain|
 *                          bounced[:code] or carry (left for a further
 *                          transaction, nothing recorded)
 *
 * Texts take the escapes \r \n \t \\ \xHH.  After every transaction the
 * runner checks that each recipient was recorded exactly once or carried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* ========================================================================
 * The transcript runner
 * ====================================================================== */

typedef enum kind {
    K_END = 0,
    K_C, K_CSAME, K_CNEW,
    K_S, K_SGLUE, K_SEARLY, K_SFRAG, K_SGLUEFRAG,
    K_OP, K_CHECK, K_RCPT, K_EVENT, K_TIMEOUT, K_MSG, K_MSGRAW
} kind;

static const struct {
    const char *prefix;
    kind k;
} prefixes[] = {
    {"C:", K_C},      {"C&", K_CSAME},   {"C|", K_CNEW},      {"S:", K_S},
    {"S+", K_SGLUE},  {"S!", K_SEARLY},  {"S/", K_SFRAG},     {"S+/", K_SGLUEFRAG},
    {">", K_OP},      {"=", K_CHECK},    {"R:", K_RCPT},      {"--", K_EVENT},
    {"T:", K_TIMEOUT}, {"M:", K_MSG},    {"M/", K_MSGRAW},
};

#define LINE_MAX_ 8192
#define READ_MAX 16384
#define MSG_MAX 16384

typedef struct runner {
    const char *name;
    const char *const *lines;
    size_t n, i;
    int bytewise;               /* every read one byte at a time */
    tm_client *c;
    /* the transaction */
    int txn_op;
    tm_txn txn;
    char from[TM_ADDRESS_MAX];
    char to[TM_TXN_RCPT_MAX][TM_ADDRESS_MAX];
    const char *top[TM_TXN_RCPT_MAX];
    tm_delivery_status st;
    tm_rcpt_status rcpt[TM_TXN_RCPT_MAX];
    tm_outcome out;
    /* the message */
    unsigned char msg[MSG_MAX];
    size_t msglen, moff, chunk;
    int msg_given;
    /* the C: line being matched */
    unsigned char exp[LINE_MAX_];
    size_t explen, expoff;
    int in_line;
} runner;

static runner R;
static tm_client C;

static void show(char *out, size_t size, const unsigned char *p, size_t n)
{
    size_t o = 0, i;

    for (i = 0; i < n && o + 5 < size; i++) {
        if (p[i] == '\r') {
            o += (size_t)snprintf(out + o, size - o, "\\r");
        } else if (p[i] == '\n') {
            o += (size_t)snprintf(out + o, size - o, "\\n");
            if (i + 1 < n && o + 5 < size && i > 40) {
                o += (size_t)snprintf(out + o, size - o, "...");
                break;
            }
        } else if (p[i] < 0x20 || p[i] >= 0x7f) {
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", p[i]);
        } else {
            out[o++] = (char)p[i];
        }
    }
    out[o] = '\0';
}

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
static void die(const runner *r, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    print_error("transcript %s, entry %zu \"%s\":\n  %s\n", r->name, r->i,
                r->i < r->n ? r->lines[r->i] : "(end)", buf);
    fail();
    abort();
}

static kind kind_of(const runner *r, const char *line, const char **text)
{
    size_t p = strcspn(line, " "), k;

    for (k = 0; k < sizeof prefixes / sizeof prefixes[0]; k++) {
        if (strlen(prefixes[k].prefix) == p && memcmp(line, prefixes[k].prefix, p) == 0) {
            *text = line[p] ? line + p + 1 : line + p;
            return prefixes[k].k;
        }
    }
    die(r, "unknown entry");
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static size_t unescape(const runner *r, const char *s, unsigned char *out, size_t cap)
{
    size_t o = 0;

    while (*s) {
        unsigned char ch = (unsigned char)*s++;
        if (ch == '\\') {
            char e = *s++;
            if (e == 'r')
                ch = '\r';
            else if (e == 'n')
                ch = '\n';
            else if (e == 't')
                ch = '\t';
            else if (e == '\\')
                ch = '\\';
            else if (e == 'x' && hexval(s[0]) >= 0 && hexval(s[1]) >= 0) {
                ch = (unsigned char)(hexval(s[0]) * 16 + hexval(s[1]));
                s += 2;
            } else
                die(r, "bad escape");
        }
        if (o >= cap)
            die(r, "entry too long");
        out[o++] = ch;
    }
    return o;
}

static const struct {
    const char *name;
    int v;
} timeout_names[] = {
    {"greeting", TM_TO_GREETING}, {"ehlo", TM_TO_EHLO},         {"mail", TM_TO_MAIL},
    {"rcpt", TM_TO_RCPT},         {"data", TM_TO_DATA},         {"data-block", TM_TO_DATA_BLOCK},
    {"data-end", TM_TO_DATA_END}, {"quit", TM_TO_QUIT},
};

/* The next entry that is not a T: check (those are checked on the way). */
static kind peek(runner *r, const char **text)
{
    while (r->i < r->n) {
        kind k = kind_of(r, r->lines[r->i], text);
        size_t j;
        int want = -1, got;

        if (k != K_TIMEOUT)
            return k;
        for (j = 0; j < sizeof timeout_names / sizeof timeout_names[0]; j++)
            if (strcmp(*text, timeout_names[j].name) == 0)
                want = timeout_names[j].v;
        if (want < 0)
            die(r, "unknown timeout kind");
        got = (int)tm__client_timeout(r->c);
        if (got != want)
            die(r, "the engine's timeout kind is %d, expected %d", got, want);
        r->i++;
    }
    *text = "";
    return K_END;
}

static const char *entry(const runner *r)
{
    return r->i < r->n ? r->lines[r->i] : "the end of the transcript";
}

/* ---- server bytes ---- */

/* One read: an S:, S/ or S! entry and the S+ entries glued to it. */
static size_t take_read(runner *r, unsigned char *buf, size_t cap)
{
    size_t len = 0;
    int first = 1;

    while (r->i < r->n) {
        const char *text;
        kind k = kind_of(r, r->lines[r->i], &text);

        if (first ? (k != K_S && k != K_SFRAG && k != K_SEARLY)
                  : (k != K_SGLUE && k != K_SGLUEFRAG))
            break;
        len += unescape(r, text, buf + len, cap - len - 2);
        if (k == K_S || k == K_SGLUE || k == K_SEARLY) {
            buf[len++] = '\r';
            buf[len++] = '\n';
        }
        r->i++;
        first = 0;
    }
    return len;
}

static void feed(runner *r, const unsigned char *p, size_t n)
{
    size_t off = 0;

    while (off < n) {
        unsigned char *in;
        size_t room = tm__client_inbuf(r->c, &in), k = n - off;

        if (r->bytewise)
            k = 1;
        if (k > room)
            k = room;
        if (k == 0)
            die(r, "the engine has no room for input");
        memcpy(in, p + off, k);
        tm__client_received(r->c, k);
        off += k;
    }
}

static void feed_read(runner *r)
{
    static unsigned char buf[READ_MAX];
    size_t n = take_read(r, buf, sizeof buf);

    feed(r, buf, n);
}

static int event_error(const char *text)
{
    if (strcmp(text, "closed") == 0)
        return TM_ECLOSED;
    if (strcmp(text, "timeout") == 0)
        return TM_ETIMEOUT;
    return 0;
}

/* ---- client bytes ---- */

static void match_output(runner *r, const unsigned char *p, size_t n)
{
    size_t k = 0;
    int line_done = 0; /* a line ended inside this write */
    char a[512], b[512];

    while (k < n) {
        size_t m;

        if (!r->in_line) {
            const char *text;
            kind kd = peek(r, &text);

            if (kd != K_C && kd != K_CSAME && kd != K_CNEW) {
                show(a, sizeof a, p + k, n - k);
                die(r, "the client writes \"%s\", the transcript expects %s", a, entry(r));
            }
            if (kd == K_CSAME && !line_done) {
                show(a, sizeof a, p + k, n - k);
                die(r, "expected in the same write as the line before; the write begins \"%s\"",
                    a);
            }
            if (kd == K_CNEW && k != 0)
                die(r, "expected at the start of a write");
            r->explen = unescape(r, text, r->exp, sizeof r->exp - 2);
            r->exp[r->explen++] = '\r';
            r->exp[r->explen++] = '\n';
            r->expoff = 0;
            r->in_line = 1;
        }
        m = r->explen - r->expoff;
        if (m > n - k)
            m = n - k;
        if (memcmp(r->exp + r->expoff, p + k, m) != 0) {
            show(a, sizeof a, p + k, n - k);
            show(b, sizeof b, r->exp + r->expoff, r->explen - r->expoff);
            die(r, "the client writes \"%s\", expected \"%s\"", a, b);
        }
        r->expoff += m;
        k += m;
        if (r->expoff == r->explen) {
            r->in_line = 0;
            r->i++;
            line_done = 1;
        }
    }
}

/* ---- the loop ---- */

static void do_send(runner *r)
{
    const char *text;
    const unsigned char *p;
    size_t n;
    int quiet = tm__client_quiet(r->c); /* as the driver: asked at every write */
    kind k = r->in_line ? K_C : peek(r, &text);

    if (k == K_SEARLY) {
        if (!quiet)
            die(r, "bytes wait before this write, but the engine asks for no look "
                   "(tm__client_quiet is false)");
        feed_read(r);
        return;
    }
    if (k == K_EVENT && event_error(text)) {
        r->i++;
        tm__client_io_error(r->c, event_error(text)); /* the write fails */
        return;
    }
    n = tm__client_output(r->c, &p);
    match_output(r, p, n);
    tm__client_sent(r->c, n);
}

static void do_recv(runner *r)
{
    const char *text;
    kind k;

    if (r->in_line)
        die(r, "the engine waits for a reply in the middle of a line");
    k = peek(r, &text);
    if (k == K_S || k == K_SFRAG) {
        feed_read(r);
    } else if (k == K_EVENT && event_error(text)) {
        r->i++;
        tm__client_io_error(r->c, event_error(text));
    } else if (k == K_SEARLY) {
        die(r, "S! marks bytes that arrive before a write, but the engine waits for a reply");
    } else {
        die(r, "the engine waits for a reply (timeout kind %d), the transcript expects %s",
            (int)tm__client_timeout(r->c), entry(r));
    }
}

static void do_content(runner *r)
{
    const char *text;
    size_t used = 0, k;
    kind kd = r->in_line ? K_C : peek(r, &text);

    if (kd == K_EVENT && strcmp(text, "read error") == 0) {
        r->i++;
        tm__client_content_error(r->c, TM_EREAD);
        return;
    }
    k = r->msglen - r->moff;
    if (r->chunk && k > r->chunk)
        k = r->chunk;
    tm__client_content(r->c, k ? r->msg + r->moff : NULL, k, &used);
    r->moff += used;
}

static void do_tls(runner *r)
{
    const char *text;
    kind k = peek(r, &text);

    if (k == K_EVENT && strcmp(text, "tls") == 0) {
        r->i++;
        tm__client_tls_done(r->c);
    } else if (k == K_EVENT && strcmp(text, "tls failed") == 0) {
        r->i++;
        tm__client_tls_failed(r->c);
    } else {
        die(r, "the engine wants the TLS handshake, the transcript expects %s", entry(r));
    }
}

static tm_want drive(runner *r)
{
    int iter;

    for (iter = 0; iter < 100000; iter++) {
        tm_want w = tm__client_want(r->c);

        switch (w) {
        case TM_WANT_SEND:
            do_send(r);
            break;
        case TM_WANT_RECV:
            do_recv(r);
            break;
        case TM_WANT_CONTENT:
            do_content(r);
            break;
        case TM_WANT_TLS:
            do_tls(r);
            break;
        case TM_WANT_DONE:
        case TM_WANT_FAILED:
            if (r->in_line)
                die(r, "the operation ended in the middle of a line");
            return w;
        }
    }
    die(r, "the engine makes no progress");
}

/* ---- checks ---- */

static const struct {
    const char *name;
    int v;
} error_names[] = {
    {"OK", TM_OK},           {"EINVAL", TM_EINVAL},       {"EPROTOCOL", TM_EPROTOCOL},
    {"ECLOSED", TM_ECLOSED}, {"ETIMEOUT", TM_ETIMEOUT},   {"EREJECTED", TM_EREJECTED},
    {"EUNCERTAIN", TM_EUNCERTAIN}, {"ECONTENT", TM_ECONTENT}, {"EREAD", TM_EREAD},
    {"EUTF8", TM_EUTF8},     {"ESTATE", TM_ESTATE},
};

static int error_value(const runner *r, const char *name)
{
    size_t j;

    for (j = 0; j < sizeof error_names / sizeof error_names[0]; j++)
        if (strcmp(name, error_names[j].name) == 0)
            return error_names[j].v;
    die(r, "unknown error name %s", name);
}

static const struct {
    const char *name;
    int v;
} op_names[] = {
    {"ok", TM_OP_OK},
    {"rejected", TM_OP_REJECTED},
    {"closing", TM_OP_CLOSING},
    {"tls-refused", TM_OP_TLS_REFUSED},
    {"tls-violation", TM_OP_TLS_VIOLATION},
    {"failed", TM_OP_FAILED},
};

static const char *op_name(int v)
{
    size_t j;

    for (j = 0; j < sizeof op_names / sizeof op_names[0]; j++)
        if (op_names[j].v == v)
            return op_names[j].name;
    return "?";
}

static const struct {
    const char *name;
    unsigned int flag;
} cap_names[] = {
    {"STARTTLS", TM_CAP_STARTTLS}, {"PIPELINING", TM_CAP_PIPELINING},
    {"SIZE", TM_CAP_SIZE},         {"8BITMIME", TM_CAP_8BITMIME},
    {"SMTPUTF8", TM_CAP_SMTPUTF8}, {"CHUNKING", TM_CAP_CHUNKING},
    {"ENHANCEDSTATUSCODES", TM_CAP_ENHANCEDSTATUSCODES},
};

static unsigned int caps_value(const runner *r, const char *list)
{
    unsigned int flags = 0;
    char buf[256], *tok, *save = NULL;

    tm__strlcpy(buf, list, sizeof buf);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t j, found = 0;
        for (j = 0; j < sizeof cap_names / sizeof cap_names[0]; j++)
            if (strcmp(tok, cap_names[j].name) == 0) {
                flags |= cap_names[j].flag;
                found = 1;
            }
        if (!found)
            die(r, "unknown capability %s", tok);
    }
    return flags;
}

/* Each recipient recorded exactly once, or carried. */
static void check_outcomes(runner *r)
{
    const tm_txn *t = &r->txn;
    unsigned int done = 0, carried = 0, sum;
    size_t i;

    for (i = 0; i < t->nto; i++) {
        if (t->state[i] == TM_R_DONE) {
            done++;
            if (r->rcpt[i].result == TM_RESULT_NONE)
                die(r, "recipient %zu is done but nothing was recorded", i);
        } else if (t->state[i] == TM_R_CARRY) {
            carried++;
            if (r->rcpt[i].result != TM_RESULT_NONE)
                die(r, "recipient %zu is carried but has a result", i);
        } else {
            die(r, "recipient %zu left in state %d when the transaction ended", i, t->state[i]);
        }
    }
    sum = r->st.rcpt_delivered + r->st.rcpt_deferred + r->st.rcpt_uncertain + r->st.rcpt_bounced;
    if (sum != done)
        die(r, "%u outcomes recorded for %u recipients done", sum, done);
    if (t->carried != carried)
        die(r, "txn.carried is %zu, %u recipients carried", t->carried, carried);
}

static void check_op(runner *r, tm_want w, const char *spec)
{
    char buf[512], *tok, *save = NULL;
    tm_client *c = r->c;
    int first = 1, expect_failed_want = 0, done_override = 0;

    tm__strlcpy(buf, spec, sizeof buf);
    for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save), first = 0) {
        if (first) {
            size_t j;
            int v = -1;
            for (j = 0; j < sizeof op_names / sizeof op_names[0]; j++)
                if (strcmp(tok, op_names[j].name) == 0)
                    v = op_names[j].v;
            if (v < 0)
                die(r, "unknown result %s", tok);
            if (tm__client_op_result(c) != v)
                die(r, "the operation ended %s (error %s), expected %s",
                    op_name(tm__client_op_result(c)), tm_strerror(c->error), tok);
            expect_failed_want = v == TM_OP_FAILED;
        } else if (strcmp(tok, "done") == 0) {
            done_override = 1;
        } else if (strcmp(tok, "usable") == 0 || strcmp(tok, "unusable") == 0) {
            if (tm__client_usable(c) != (tok[0] == 'u' && tok[1] == 's'))
                die(r, "the connection is %s", tm__client_usable(c) ? "usable" : "unusable");
        } else if (strcmp(tok, "leave") == 0 || strcmp(tok, "stay") == 0) {
            if (c->leave_host != (tok[0] == 'l'))
                die(r, "leave_host is %d", c->leave_host);
        } else if (strncmp(tok, "err=", 4) == 0) {
            if (c->error != error_value(r, tok + 4))
                die(r, "the error is %d (%s)", c->error, tm_strerror(c->error));
        } else if (strncmp(tok, "caps=", 5) == 0) {
            if (c->caps.flags != caps_value(r, tok + 5))
                die(r, "the capabilities are 0x%x, expected 0x%x", c->caps.flags,
                    caps_value(r, tok + 5));
        } else if (strncmp(tok, "size=", 5) == 0) {
            if (c->caps.size_limit != strtoul(tok + 5, NULL, 10))
                die(r, "the size limit is %lu", c->caps.size_limit);
        } else if (strncmp(tok, "code=", 5) == 0) {
            if (r->st.code != atoi(tok + 5))
                die(r, "the status code is %d", r->st.code);
        } else if (strncmp(tok, "enh=", 4) == 0) {
            if (strcmp(r->st.enhanced_code, tok + 4) != 0)
                die(r, "the enhanced code is \"%s\"", r->st.enhanced_code);
        } else {
            die(r, "unknown check %s", tok);
        }
    }
    if (w != ((expect_failed_want && !done_override) ? TM_WANT_FAILED : TM_WANT_DONE))
        die(r, "the engine wants %s", w == TM_WANT_FAILED ? "FAILED" : "DONE");
    if (r->txn_op)
        check_outcomes(r);
}

static const struct {
    const char *name;
    int v;
} result_names[] = {
    {"delivered", TM_RESULT_DELIVERED},
    {"deferred", TM_RESULT_DEFERRED},
    {"uncertain", TM_RESULT_UNCERTAIN},
    {"bounced", TM_RESULT_BOUNCED},
};

static void check_rcpts(runner *r, const char *spec)
{
    char buf[1024], *tok, *save = NULL;
    size_t i = 0;

    if (!r->txn_op)
        die(r, "R: after an operation that was no transaction");
    tm__strlcpy(buf, spec, sizeof buf);
    for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save), i++) {
        char *colon = strchr(tok, ':');
        size_t j;
        int v = -1;

        if (i >= r->txn.nto)
            die(r, "more outcomes than recipients");
        if (colon)
            *colon = '\0';
        if (strcmp(tok, "carry") == 0) {
            if (r->txn.state[i] != TM_R_CARRY)
                die(r, "recipient %zu is not carried (state %d, result %s)", i, r->txn.state[i],
                    tm_result_name(r->rcpt[i].result));
            continue;
        }
        for (j = 0; j < sizeof result_names / sizeof result_names[0]; j++)
            if (strcmp(tok, result_names[j].name) == 0)
                v = result_names[j].v;
        if (v < 0)
            die(r, "unknown outcome %s", tok);
        if (r->txn.state[i] != TM_R_DONE || r->rcpt[i].result != v)
            die(r, "recipient %zu (%s): %s (state %d, code %d), expected %s", i, r->to[i],
                tm_result_name(r->rcpt[i].result), r->txn.state[i], r->rcpt[i].code, tok);
        if (colon && r->rcpt[i].code != atoi(colon + 1))
            die(r, "recipient %zu (%s): code %d, expected %s", i, r->to[i], r->rcpt[i].code,
                colon + 1);
    }
    if (i != r->txn.nto)
        die(r, "%zu outcomes for %zu recipients", i, r->txn.nto);
}

/* ---- operations ---- */

static const char default_msg[] = "Subject: test\r\n\r\nHello.\r\n";

static int begin_mail(runner *r, char *args)
{
    tm_txn *t = &r->txn;
    char *tok, *save = NULL, *to, *save2 = NULL;
    size_t n = 0;

    memset(t, 0, sizeof *t);
    tok = strtok_r(args, " ", &save);
    to = strtok_r(NULL, " ", &save);
    if (!tok || !to)
        die(r, "> mail FROM TO[,TO...]");
    tm__strlcpy(r->from, strcmp(tok, "<>") == 0 ? "" : tok, sizeof r->from);
    for (tok = strtok_r(to, ",", &save2); tok; tok = strtok_r(NULL, ",", &save2), n++) {
        if (n >= TM_TXN_RCPT_MAX)
            die(r, "too many recipients");
        tm__strlcpy(r->to[n], tok, sizeof r->to[n]);
        r->top[n] = r->to[n];
        t->to[n] = r->to[n];
        t->idx[n] = n;
    }
    t->nto = n;
    t->from = r->from;
    if (!r->msg_given) {
        memcpy(r->msg, default_msg, sizeof default_msg - 1);
        r->msglen = sizeof default_msg - 1;
    }
    r->msg_given = 0;
    r->moff = 0;
    r->chunk = 0;
    t->data = r->msg;
    t->size = r->msglen;
    while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
        if (strcmp(tok, "quit") == 0)
            t->quit_after = 1;
        else if (strcmp(tok, "utf8") == 0)
            t->utf8 = 1;
        else if (strcmp(tok, "8bit") == 0)
            t->has_8bit = 1;
        else if (strncmp(tok, "stream=", 7) == 0) {
            r->chunk = strtoul(tok + 7, NULL, 10);
            t->data = NULL;
            t->size = 0;
        } else
            die(r, "unknown mail option %s", tok);
    }
    memset(&r->st, 0, sizeof r->st);
    r->st.version = TM_STATUS_VERSION;
    assert_int_equal(tm__status_reset(&r->st), TM_OK);
    memset(r->rcpt, 0, sizeof r->rcpt);
    r->out.st = &r->st;
    r->out.rcpt = r->rcpt;
    r->out.cap = TM_TXN_RCPT_MAX;
    tm__outcome_begin(&r->out, r->top, n);
    t->out = &r->out;
    r->txn_op = 1;
    return tm__client_mail(r->c, t);
}

static void begin_op(runner *r, const char *spec)
{
    char buf[1024], *arrow, *args;
    const char *text;
    int rc, want_rc = TM_OK;
    tm_want w;

    tm__strlcpy(buf, spec, sizeof buf);
    if ((arrow = strstr(buf, " -> ")) != NULL) {
        want_rc = error_value(r, arrow + 4);
        *arrow = '\0';
    }
    args = strchr(buf, ' ');
    if (args)
        *args++ = '\0';
    r->txn_op = 0;
    if (strcmp(buf, "open") == 0)
        rc = tm__client_open(r->c);
    else if (strcmp(buf, "starttls") == 0)
        rc = tm__client_starttls(r->c);
    else if (strcmp(buf, "rset") == 0)
        rc = tm__client_rset(r->c);
    else if (strcmp(buf, "quit") == 0)
        rc = tm__client_quit(r->c);
    else if (strcmp(buf, "mail") == 0 && args)
        rc = begin_mail(r, args);
    else
        die(r, "unknown operation");
    r->i++;
    if (rc != want_rc)
        die(r, "the call returned %d (%s), expected %d", rc, tm_strerror(rc), want_rc);
    if (rc != TM_OK)
        return;
    w = drive(r);
    if (peek(r, &text) != K_CHECK)
        die(r, "the operation ended (%s, %s, %s), the transcript expects %s",
            w == TM_WANT_FAILED ? "FAILED" : "DONE", op_name(tm__client_op_result(r->c)),
            tm_strerror(r->c->error), entry(r));
    check_op(r, w, text);
    r->i++;
}

static void run_transcript(const char *name, const char *const *lines, size_t n, int bytewise)
{
    runner *r = &R;

    memset(r, 0, sizeof *r);
    memset(&C, 0, sizeof C);
    r->name = name;
    r->lines = lines;
    r->n = n;
    r->bytewise = bytewise;
    r->c = &C;
    tm__client_init(r->c, "client.example");
    r->c->host = "mx.example";
    for (;;) {
        const char *text;
        kind k = peek(r, &text);

        switch (k) {
        case K_END:
            return;
        case K_MSG:
        case K_MSGRAW:
            if (!r->msg_given)
                r->msglen = 0;
            r->msg_given = 1;
            r->msglen += unescape(r, text, r->msg + r->msglen, sizeof r->msg - r->msglen - 2);
            if (k == K_MSG) {
                r->msg[r->msglen++] = '\r';
                r->msg[r->msglen++] = '\n';
            }
            r->i++;
            break;
        case K_OP:
            begin_op(r, text);
            break;
        case K_RCPT:
            check_rcpts(r, text);
            r->i++;
            break;
        default:
            die(r, "no operation is under way");
        }
    }
}

#define NLINES(a) (sizeof(a) / sizeof((a)[0]))

/* A transcript and its test. */
#define TRANSCRIPT(name, ...) \
    static const char *const name##_lines[] = {__VA_ARGS__}; \
    static void name(void **state) \
    { \
        (void)state; \
        run_transcript(#name, name##_lines, NLINES(name##_lines), 0); \
    }
/* The same transcript with every read cut into single bytes. */
#define BYTEWISE(name) \
    static void name##_bytewise(void **state) \
    { \
        (void)state; \
        run_transcript(#name " (bytewise)", name##_lines, NLINES(name##_lines), 1); \
    }

/* ========================================================================
 * Transcripts
 * ====================================================================== */

#define GREETING "S: 220 mx.example ESMTP"
#define EHLO "C: EHLO client.example"
#define OPEN_PLAIN "> open", GREETING, EHLO, "S: 250 mx.example", "= ok usable caps="
#define OPEN_PIPELINING \
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-PIPELINING", \
        "S+ 250 ENHANCEDSTATUSCODES", "= ok usable caps=PIPELINING,ENHANCEDSTATUSCODES"
#define OPEN_CHUNKING \
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-PIPELINING", "S+ 250 CHUNKING", \
        "= ok usable caps=PIPELINING,CHUNKING"
#define OPEN_STARTTLS \
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-PIPELINING", "S+ 250 STARTTLS", \
        "= ok usable caps=PIPELINING,STARTTLS", "> starttls", "C: STARTTLS"
/* The default message, as written by DATA (the final dot apart) or BDAT
 * (25 octets). */
#define BODY "C: Subject: test", "C: ", "C: Hello."
#define MAIL_S "C: MAIL FROM:<s@x.example>"
#define RCPT_A "C: RCPT TO:<a@y.example>"
#define RCPT_B "C: RCPT TO:<b@y.example>"
#define RCPT_C "C: RCPT TO:<c@y.example>"

/* ---- greeting and EHLO ---- */

TRANSCRIPT(open_postfix_caps,
    "> open", "T: greeting", GREETING, EHLO, "T: ehlo",
    "S: 250-mx.example", "S+ 250-PIPELINING", "S+ 250-SIZE 10240000", "S+ 250-VRFY",
    "S+ 250-ETRN", "S+ 250-STARTTLS", "S+ 250-ENHANCEDSTATUSCODES", "S+ 250-8BITMIME",
    "S+ 250-DSN", "S+ 250-SMTPUTF8", "S+ 250 CHUNKING",
    "= ok usable stay err=OK size=10240000 "
    "caps=PIPELINING,SIZE,STARTTLS,ENHANCEDSTATUSCODES,8BITMIME,SMTPUTF8,CHUNKING")
BYTEWISE(open_postfix_caps)

TRANSCRIPT(open_multiline_greeting,
    "> open", "S: 220-mx.example ESMTP", "S+ 220-no UCE", "S/ 220 rea", "S: dy", EHLO,
    "S: 250 mx.example", "= ok usable caps=")

/* One line cut across reads, several lines in one read, a bare LF. */
TRANSCRIPT(open_split_and_merged_reads,
    "> open", "S/ 22", "S/ 0 mx.exa", "S: mple ESMTP", EHLO,
    "S/ 250-mx.example\\r\\n250-PIPEL", "S/ INING\\n250-SIZE 1000", "S/ \\r",
    "S/ \\n250 STARTTLS\\r", "S/ \\n",
    "= ok usable caps=PIPELINING,SIZE,STARTTLS size=1000")

/* The first line of the EHLO reply is the server's name, not a keyword. */
TRANSCRIPT(open_keyword_in_first_line_is_not_a_capability,
    "> open", GREETING, EHLO, "S: 250 PIPELINING", "= ok usable caps=")

TRANSCRIPT(greeting_554_leaves_host,
    "> open", "S: 554 5.3.2 mx.example has no service for you",
    "= rejected leave usable err=EREJECTED")

TRANSCRIPT(greeting_450_stays_with_host,
    "> open", "S: 450 4.3.2 try again later", "= rejected stay usable err=EREJECTED")

TRANSCRIPT(greeting_421,
    "> open", "S: 421 4.3.2 mx.example closing", "= rejected leave unusable err=EREJECTED")

TRANSCRIPT(greeting_2xx_other_than_220,
    "> open", "S: 250 mx.example", "= rejected stay unusable err=EPROTOCOL")

TRANSCRIPT(greeting_malformed,
    "> open", "S: hello there", "= failed unusable err=EPROTOCOL")

TRANSCRIPT(greeting_closed,
    "> open", "-- closed", "= failed unusable err=ECLOSED")

TRANSCRIPT(greeting_timeout,
    "> open", "S/ 220 mx.exa", "-- timeout", "= failed unusable err=ETIMEOUT")

/* A second reply in the greeting's packet answers nothing. */
TRANSCRIPT(greeting_extra_line_same_read,
    "> open", "S: 220 mx.example ESMTP", "S+ 250 mx.example", "= failed unusable err=EPROTOCOL")

/* ... and neither does one that arrives before EHLO went. */
TRANSCRIPT(greeting_then_early_bytes_before_ehlo,
    "> open", GREETING, "S! 250-mx.example", "= failed unusable err=EPROTOCOL")

TRANSCRIPT(ehlo_500_falls_back_to_helo,
    "> open", GREETING, EHLO, "S: 500 5.5.1 command unrecognized", "C: HELO client.example",
    "S: 250 mx.example", "= ok usable caps=")

TRANSCRIPT(ehlo_554_no_helo,
    "> open", GREETING, EHLO, "S: 554 5.7.1 go away", "= rejected leave usable err=EREJECTED")

TRANSCRIPT(ehlo_421,
    "> open", GREETING, EHLO, "S: 421 4.3.2 shutting down",
    "= rejected leave unusable err=EREJECTED")

TRANSCRIPT(ehlo_451,
    "> open", GREETING, EHLO, "S: 451 4.3.0 later", "= rejected stay usable err=EREJECTED")

TRANSCRIPT(helo_550_after_ehlo_502,
    "> open", GREETING, EHLO, "S: 502 5.5.2 no", "C: HELO client.example",
    "S: 550 5.7.1 no", "= rejected leave usable err=EREJECTED")

TRANSCRIPT(ehlo_codes_differ_across_lines,
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 251 PIPELINING",
    "= failed unusable err=EPROTOCOL")

TRANSCRIPT(ehlo_closed,
    "> open", GREETING, EHLO, "S: 250-mx.example", "-- closed", "= failed unusable err=ECLOSED")

/* An EHLO reply of 95 lines of 66 octets (6 KB, within the parser's limits
 * but past its 4 KB of text) with STARTTLS last: no keyword is lost. */
static void ehlo_95_lines(void **state)
{
    static char pool[95][80];
    static const char *lines[120];
    int bytewise;

    (void)state;
    for (bytewise = 0; bytewise <= 1; bytewise++) {
        size_t n = 0, k;

        lines[n++] = "> open";
        lines[n++] = GREETING;
        lines[n++] = EHLO;
        for (k = 0; k < 94; k++) {
            /* "250-" and 60 more octets, CRLF: 66 */
            char *l = pool[k];
            if (k == 0)
                snprintf(l, sizeof pool[k], "S: 250-mx.example ");
            else if (k == 50)
                snprintf(l, sizeof pool[k], "S+ 250-PIPELINING ");
            else
                snprintf(l, sizeof pool[k], "S+ 250-X-EXTENSION-%02zu ", k);
            while (strlen(strchr(l, ' ') + 1) < 64)
                strcat(l, "x");
            assert_int_equal(strlen(strchr(l, ' ') + 1) + 2, 66);
            lines[n++] = l;
        }
        lines[n++] = "S+ 250 STARTTLS";
        lines[n++] = "= ok usable caps=PIPELINING,STARTTLS";
        run_transcript(bytewise ? "ehlo_95_lines (bytewise)" : "ehlo_95_lines", lines, n,
                       bytewise);
    }
}

/* ---- STARTTLS ---- */

/* After TLS every capability learnt in plaintext is forgotten. */
TRANSCRIPT(starttls_220_then_ehlo_again,
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-PIPELINING", "S+ 250-CHUNKING",
    "S+ 250 STARTTLS", "= ok usable caps=PIPELINING,CHUNKING,STARTTLS",
    "> starttls", "C: STARTTLS", "T: ehlo", "S: 220 2.0.0 ready", "-- tls", EHLO,
    "S: 250-mx.example", "S+ 250 8BITMIME", "= ok usable caps=8BITMIME",
    "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok", "C: DATA",
    "S: 354 go", BODY, "C: .", "S: 250 queued", "= ok usable", "R: delivered:250")

TRANSCRIPT(starttls_220_split_across_reads,
    OPEN_STARTTLS, "S/ 22", "S: 0 ready", "-- tls", EHLO, "S: 250 mx.example",
    "= ok usable caps=")

/* Response injection: bytes behind the 220 never reach TLS. */
TRANSCRIPT(starttls_220_then_one_byte,
    OPEN_STARTTLS, "S: 220 ready", "S+/ X", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_220_then_injected_line,
    OPEN_STARTTLS, "S: 220 ready", "S+ 250-PIPELINING", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_421_closing,
    OPEN_STARTTLS, "S: 421 4.3.2 going away", "= closing unusable err=EREJECTED")

/* Refused: the dialogue may go on in plaintext on the same connection. */
TRANSCRIPT(starttls_454_refused,
    OPEN_STARTTLS, "S: 454 4.7.0 TLS not available", "= tls-refused usable err=EREJECTED",
    "> mail s@x.example a@y.example", MAIL_S, "C& RCPT TO:<a@y.example>", "C& DATA",
    "S: 250 ok", "S+ 250 ok", "S+ 354 go", BODY, "C: .", "S: 250 queued", "= ok usable",
    "R: delivered:250")

TRANSCRIPT(starttls_554_refused,
    OPEN_STARTTLS, "S: 554 5.7.3 no TLS for you", "= tls-refused usable err=EREJECTED")

TRANSCRIPT(starttls_200_violation,
    OPEN_STARTTLS, "S: 200 whatever", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_221_violation,
    OPEN_STARTTLS, "S: 221 bye", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_354_violation,
    OPEN_STARTTLS, "S: 354 go ahead", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_handshake_failed,
    OPEN_STARTTLS, "S: 220 ready", "-- tls failed", "= tls-violation unusable err=EPROTOCOL")

TRANSCRIPT(starttls_closed,
    OPEN_STARTTLS, "-- closed", "= failed unusable err=ECLOSED")

/* Over TLS there is no HELO fallback; the refusal speaks for the host. */
TRANSCRIPT(starttls_ehlo_refused_over_tls,
    OPEN_STARTTLS, "S: 220 ready", "-- tls", EHLO, "S: 554 5.7.1 no",
    "= rejected leave usable err=EREJECTED")

/* ---- one transaction, no PIPELINING, DATA ---- */

TRANSCRIPT(plain_delivery,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "T: mail", "S: 250 2.1.0 ok", RCPT_A,
    "T: rcpt", "S: 250 2.1.5 ok", "C: DATA", "T: data", "S: 354 go ahead", "T: data-block",
    BODY, "C: .", "T: data-end", "S: 250 2.0.0 queued as 1234",
    "= ok usable err=OK code=250 enh=2.0.0", "R: delivered:250")
BYTEWISE(plain_delivery)

TRANSCRIPT(plain_mixed_rcpt_replies,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example,c@y.example", MAIL_S,
    "S: 250 ok", RCPT_A, "S: 250 ok", RCPT_B, "S: 550 5.1.1 no such user", RCPT_C,
    "S: 451 4.3.0 try later", "C: DATA", "S: 354 go", BODY, "C: .", "S: 250 queued",
    "= ok usable err=OK", "R: delivered:250 bounced:550 deferred:451")

TRANSCRIPT(plain_mail_550_then_rset,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S,
    "S: 550 5.7.1 sender refused", "C: RSET", "S: 250 ok",
    "= ok usable err=EREJECTED code=550", "R: bounced:550 bounced:550")

TRANSCRIPT(plain_mail_451_then_rset,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 451 4.7.1 greylisted",
    "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED code=451", "R: deferred:451")

TRANSCRIPT(plain_all_rcpts_refused_then_rset,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 550 5.1.1 no", RCPT_B, "S: 550 5.1.1 no", "C: RSET", "S: 250 ok",
    "= ok usable err=EREJECTED", "R: bounced:550 bounced:550")

TRANSCRIPT(plain_data_554_then_rset,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 554 5.5.1 no valid recipients", "C: RSET", "S: 250 ok",
    "= ok usable err=EREJECTED code=554", "R: bounced:554")

TRANSCRIPT(plain_data_451_then_rset,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 451 4.3.0 later", "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED",
    "R: deferred:451")

/* The reply to the end of data ends the transaction: no RSET. */
TRANSCRIPT(plain_end_554_bounced,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 250 ok", RCPT_B, "S: 250 ok", "C: DATA", "S: 354 go", BODY, "C: .",
    "S: 554 5.7.1 spam", "= ok usable err=EREJECTED code=554", "R: bounced:554 bounced:554")

TRANSCRIPT(plain_end_451_deferred,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S: 451 4.3.0 later",
    "= ok usable err=EREJECTED code=451", "R: deferred:451")

/* A 3xx to the end of data answers nothing: the message went, no answer
 * came back. */
TRANSCRIPT(plain_end_3xx_uncertain,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S: 354 more?", "= failed unusable err=EUNCERTAIN",
    "R: uncertain")

TRANSCRIPT(plain_end_malformed_uncertain,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S: 2x0 ok", "= failed unusable err=EUNCERTAIN",
    "R: uncertain")

/* Without PIPELINING a second line after the MAIL reply answers nothing:
 * never bounced on its word. */
TRANSCRIPT(plain_mail_reply_then_550_same_read,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", "S+ 550 5.1.1 no",
    "= failed unusable err=EPROTOCOL", "R: deferred:0")

TRANSCRIPT(plain_mail_reply_then_550_before_rcpt,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", "S! 550 5.1.1 no",
    "= failed unusable err=EPROTOCOL", "R: deferred:0")

TRANSCRIPT(plain_rcpt_reply_then_354_same_read,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "S+ 354 go", "= failed unusable err=EPROTOCOL", "R: deferred:0")

TRANSCRIPT(plain_2xx_to_data_violation,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 250 ok", "= failed unusable err=EPROTOCOL code=250", "R: deferred:0")

/* A 354 and, in the same write, a 250 before the final dot was sent. */
TRANSCRIPT(data_354_and_250_same_read,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 250 ok", RCPT_B, "S: 250 ok", "C: DATA", "S: 354 go ahead", "S+ 250 2.0.0 queued",
    "= failed unusable err=EPROTOCOL", "R: deferred deferred")

TRANSCRIPT(data_354_and_250_same_read_pipelined,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA",
    "S: 250 ok", "S+ 250 ok", "S+ 354 go ahead", "S+ 250 2.0.0 queued",
    "= failed unusable err=EPROTOCOL", "R: deferred")

/* The same 250 in a packet of its own, waiting before the content. */
TRANSCRIPT(data_early_250_before_content,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go ahead", "S! 250 2.0.0 queued", "= failed unusable err=EPROTOCOL",
    "R: deferred")

/* ... or arriving while the content is written, before the final dot. */
TRANSCRIPT(data_early_250_before_final_dot,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go ahead", BODY, "S! 250 2.0.0 queued", "= failed unusable err=EPROTOCOL",
    "R: deferred")

/* 452 (too many recipients) to the 3rd of 5: the 4th and 5th are never
 * sent; the 3rd to 5th wait for a further transaction. */
TRANSCRIPT(plain_452_third_of_five,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example,c@y.example,d@y.example,e@y.example",
    MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok", RCPT_B, "S: 250 ok", RCPT_C,
    "S: 452 4.5.3 too many recipients", "C: DATA", "S: 354 go", BODY, "C: .", "S: 250 queued",
    "= ok usable err=OK", "R: delivered:250 delivered:250 carry carry carry",
    /* the further transaction on the same connection */
    "> mail s@x.example c@y.example,d@y.example,e@y.example", MAIL_S, "S: 250 ok", RCPT_C,
    "S: 250 ok", "C: RCPT TO:<d@y.example>", "S: 250 ok", "C: RCPT TO:<e@y.example>",
    "S: 250 ok", "C: DATA", "S: 354 go", BODY, "C: .", "S: 250 queued", "= ok usable",
    "R: delivered delivered delivered")

/* A 452 next to nobody accepted is no "later": a plain deferral. */
TRANSCRIPT(plain_452_first_rcpt_deferred,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 452 4.5.3 too many recipients", "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED",
    "R: deferred:452")

/* ---- 421 at every step, without PIPELINING ---- */

TRANSCRIPT(plain_421_to_mail,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 421 4.3.2 closing",
    "= closing unusable err=EREJECTED code=421", "R: deferred:421", "> rset -> ESTATE")

TRANSCRIPT(plain_421_to_rcpt,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 250 ok", RCPT_B, "S: 421 4.3.2 closing", "= closing unusable err=EREJECTED",
    "R: deferred:421 deferred:421")

TRANSCRIPT(plain_421_to_data,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 421 4.3.2 closing", "= closing unusable err=EREJECTED", "R: deferred:421")

TRANSCRIPT(plain_421_to_end_of_data,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S: 421 4.3.2 closing",
    "= ok unusable err=EREJECTED code=421", "R: deferred:421", "> quit -> ESTATE")

/* ---- connection loss: the uncertain window ---- */

TRANSCRIPT(closed_waiting_for_354_deferred,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "-- closed", "= failed unusable err=ECLOSED", "R: deferred")

TRANSCRIPT(closed_writing_the_final_dot_deferred,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "-- closed", "= failed unusable err=ECLOSED", "R: deferred")

TRANSCRIPT(closed_after_final_dot_uncertain,
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 250 ok", RCPT_B, "S: 550 no", "C: DATA", "S: 354 go", BODY, "C: .", "-- closed",
    "= failed unusable err=EUNCERTAIN", "R: uncertain bounced:550")

TRANSCRIPT(timeout_after_final_dot_uncertain,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S/ 250 2.0.0 que", "-- timeout",
    "= failed unusable err=EUNCERTAIN", "R: uncertain")

/* The outcome stands when only the reply to RSET is lost. */
TRANSCRIPT(closed_waiting_for_rset_after_refusal,
    OPEN_PLAIN, "> mail s@x.example a@y.example", MAIL_S, "S: 550 5.7.1 no", "C: RSET",
    "-- closed", "= ok unusable err=EREJECTED", "R: bounced:550")

/* ---- PIPELINING, DATA ---- */

TRANSCRIPT(pipelined_delivery,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "C& RCPT TO:<a@y.example>",
    "C& RCPT TO:<b@y.example>", "C& DATA", "T: mail", "S: 250 2.1.0 ok", "S+ 250 2.1.5 ok",
    "S+ 250 2.1.5 ok", "S+ 354 go ahead", BODY, "C: .", "S: 250 2.0.0 queued",
    "= ok usable err=OK", "R: delivered:250 delivered:250")
BYTEWISE(pipelined_delivery)

TRANSCRIPT(pipelined_replies_one_per_read,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "T: rcpt", "S: 250 ok", "S/ 550 5.1.1 n", "S: o such user",
    "T: data", "S: 354 go ahead", BODY, "C: .", "S: 250 queued", "= ok usable err=OK",
    "R: delivered:250 bounced:550")

/* MAIL refused: the RCPT and DATA replies answer commands, nothing more. */
TRANSCRIPT(pipelined_mail_550_then_rset,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 550 5.7.1 sender refused", "S+ 503 5.5.1 no valid sender",
    "S+ 250 2.1.5 ok", "S+ 503 5.5.1 no valid recipients", "C: RSET", "S: 250 ok",
    "= ok usable err=EREJECTED code=550", "R: bounced:550 bounced:550")

TRANSCRIPT(pipelined_all_rcpts_550_data_554_then_rset,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "S+ 550 5.1.1 no", "S+ 550 5.1.1 no",
    "S+ 554 5.5.1 no valid recipients", "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED",
    "R: bounced:550 bounced:550")

/* RFC 2920 3.1: a 354 with nobody accepted gets the bare final dot. */
TRANSCRIPT(pipelined_all_rcpts_550_data_354,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA", "S: 250 ok",
    "S+ 550 5.1.1 no", "S+ 354 go ahead", "C: .", "S: 554 5.5.1 no valid recipients",
    "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED", "R: bounced:550")

/* A third reply where two were awaited before the 354: the server is out
 * of step, and its 250 to DATA answers nothing. */
TRANSCRIPT(pipelined_2xx_to_data_violation,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA", "S: 250 ok",
    "S+ 250 ok", "S+ 250 ok", "S+ 354 go", "= failed unusable err=EPROTOCOL", "R: deferred:0")

TRANSCRIPT(pipelined_452_third_of_five,
    OPEN_PIPELINING,
    "> mail s@x.example a@y.example,b@y.example,c@y.example,d@y.example,e@y.example",
    MAIL_S, RCPT_A, RCPT_B, RCPT_C, "C: RCPT TO:<d@y.example>", "C: RCPT TO:<e@y.example>",
    "C: DATA", "S: 250 ok", "S+ 250 ok", "S+ 250 ok", "S+ 452 4.5.3 too many recipients",
    "S+ 452 4.5.3 too many recipients", "S+ 452 4.5.3 too many recipients", "S+ 354 go",
    BODY, "C: .", "S: 250 queued", "= ok usable err=OK",
    "R: delivered:250 delivered:250 carry carry carry")

/* With recipients still to send, no QUIT rides with the final dot. */
TRANSCRIPT(pipelined_452_no_quit_with_the_dot,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example quit", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "S+ 250 ok", "S+ 452 4.5.3 too many recipients", "S+ 354 go",
    BODY, "C: .", "S: 250 queued", "= ok usable", "R: delivered:250 carry")

TRANSCRIPT(pipelined_452_to_everyone_deferred,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "S+ 452 4.5.3 too many", "S+ 452 4.5.3 too many",
    "S+ 554 5.5.1 no valid recipients", "C: RSET", "S: 250 ok", "= ok usable err=EREJECTED",
    "R: deferred:452 deferred:452")

/* The connection's last transaction: QUIT goes with the final dot. */
TRANSCRIPT(pipelined_quit_with_the_final_dot,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example quit", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "S+ 250 ok", "S+ 250 ok", "S+ 354 go", BODY, "C: .", "C& QUIT",
    "S: 250 2.0.0 queued", "S+ 221 2.0.0 bye", "= ok unusable err=OK",
    "R: delivered:250 delivered:250", "> rset -> ESTATE")

/* The reply to the pipelined QUIT lost: the delivery stands. */
TRANSCRIPT(pipelined_quit_reply_lost,
    OPEN_PIPELINING, "> mail s@x.example a@y.example quit", MAIL_S, RCPT_A, "C: DATA",
    "S: 250 ok", "S+ 250 ok", "S+ 354 go", BODY, "C: .", "C& QUIT", "S: 250 2.0.0 queued",
    "-- closed", "= ok unusable err=OK", "R: delivered:250")

/* Without PIPELINING QUIT waits for the end of the transaction. */
TRANSCRIPT(plain_quit_after_is_a_separate_operation,
    OPEN_PLAIN, "> mail s@x.example a@y.example quit", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", BODY, "C: .", "S: 250 queued", "= ok usable", "R: delivered:250",
    "> quit", "C: QUIT", "T: quit", "S: 221 bye", "= ok unusable")

TRANSCRIPT(pipelined_421_to_mail,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA",
    "S: 421 4.3.2 closing", "= closing unusable err=EREJECTED", "R: deferred:421")

TRANSCRIPT(pipelined_421_to_rcpt,
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: DATA", "S: 250 ok", "S+ 250 ok", "S+ 421 4.3.2 closing",
    "= closing unusable err=EREJECTED", "R: deferred:421 deferred:421")

TRANSCRIPT(pipelined_421_to_data,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA", "S: 250 ok",
    "S+ 250 ok", "S+ 421 4.3.2 closing", "= closing unusable err=EREJECTED", "R: deferred:421")

TRANSCRIPT(pipelined_421_to_end_of_data_with_quit,
    OPEN_PIPELINING, "> mail s@x.example a@y.example quit", MAIL_S, RCPT_A, "C: DATA",
    "S: 250 ok", "S+ 250 ok", "S+ 354 go", BODY, "C: .", "C& QUIT", "S: 421 4.3.2 closing",
    "-- closed", "= ok unusable err=EREJECTED", "R: deferred:421")

/* A line after the reply to the end of data: the delivery stands, the
 * connection not. */
TRANSCRIPT(extra_line_after_end_of_data_reply,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA", "S: 250 ok",
    "S+ 250 ok", "S+ 354 go", BODY, "C: .", "S: 250 queued", "S+ 250 and again",
    "= ok unusable err=OK", "R: delivered:250")

/* Bytes waiting before the next transaction's first command. */
TRANSCRIPT(early_bytes_before_mail,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", "S! 250 ok",
    "= failed unusable err=EPROTOCOL", "R: deferred:0")

/* A session sends several messages. */
TRANSCRIPT(pipelined_two_messages_and_rset,
    OPEN_PIPELINING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: DATA", "S: 250 ok",
    "S+ 250 ok", "S+ 354 go", BODY, "C: .", "S: 250 queued", "= ok usable", "R: delivered",
    "> rset", "C: RSET", "S: 250 ok", "= ok usable",
    "> mail <> b@y.example", "C: MAIL FROM:<>", RCPT_B, "C: DATA", "S: 250 ok", "S+ 250 ok",
    "S+ 354 go", BODY, "C: .", "S: 250 queued", "= ok usable", "R: delivered",
    "> quit", "C: QUIT", "S: 221 bye", "= ok unusable")

TRANSCRIPT(rset_refused,
    OPEN_PLAIN, "> rset", "C: RSET", "S: 500 what", "= failed done unusable err=EPROTOCOL")

/* ---- BDAT (RFC 3030): the envelope and the content in one write ---- */

TRANSCRIPT(bdat_delivery,
    OPEN_CHUNKING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, "C& RCPT TO:<a@y.example>",
    "C& RCPT TO:<b@y.example>", "C& BDAT 25 LAST", "C& Subject: test", "C& ", "C& Hello.",
    "T: mail", "S: 250 ok", "S+ 250 ok", "S+ 250 ok", "T: data-end", "S: 250 2.0.0 queued",
    "= ok usable err=OK", "R: delivered:250 delivered:250")
BYTEWISE(bdat_delivery)

/* One recipient, the connection's last message: QUIT in the same write. */
TRANSCRIPT(bdat_one_rcpt_quit_in_the_same_write,
    OPEN_CHUNKING, "> mail s@x.example a@y.example quit", MAIL_S, "C& RCPT TO:<a@y.example>",
    "C& BDAT 25 LAST", "C& Subject: test", "C& ", "C& Hello.", "C& QUIT", "S: 250 ok",
    "S+ 250 ok", "S+ 250 2.0.0 queued", "S+ 221 bye", "= ok unusable err=OK",
    "R: delivered:250")

/* Two recipients: a 452 could ask for a further transaction, no QUIT. */
TRANSCRIPT(bdat_two_rcpts_no_quit,
    OPEN_CHUNKING, "> mail s@x.example a@y.example,b@y.example quit", MAIL_S, RCPT_A, RCPT_B,
    "C: BDAT 25 LAST", BODY, "S: 250 ok", "S+ 250 ok", "S+ 452 4.5.3 too many",
    "S+ 250 2.0.0 queued", "= ok usable err=OK", "R: delivered:250 carry")

TRANSCRIPT(bdat_closed_after_the_write_uncertain,
    OPEN_CHUNKING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: BDAT 25 LAST", BODY, "-- closed", "= failed unusable err=EUNCERTAIN",
    "R: uncertain uncertain")

TRANSCRIPT(bdat_closed_after_rcpt_replies_uncertain,
    OPEN_CHUNKING, "> mail s@x.example a@y.example,b@y.example", MAIL_S, RCPT_A, RCPT_B,
    "C: BDAT 25 LAST", BODY, "S: 250 ok", "S+ 250 ok", "S+ 550 5.1.1 no", "-- closed",
    "= failed unusable err=EUNCERTAIN", "R: uncertain bounced:550")

TRANSCRIPT(bdat_write_failed_deferred,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", "-- closed",
    "= failed unusable err=ECLOSED", "R: deferred")

TRANSCRIPT(bdat_mail_550_then_rset,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: BDAT 25 LAST", BODY,
    "S: 550 5.7.1 no", "S+ 503 5.5.1 no sender", "S+ 503 5.5.1 no recipients", "C: RSET",
    "S: 250 ok", "= ok usable err=EREJECTED code=550", "R: bounced:550")

/* The QUIT went with the envelope: no RSET behind it. */
TRANSCRIPT(bdat_rcpt_550_no_rset_after_quit,
    OPEN_CHUNKING, "> mail s@x.example a@y.example quit", MAIL_S, RCPT_A, "C: BDAT 25 LAST",
    BODY, "C& QUIT", "S: 250 ok", "S+ 550 5.1.1 no", "S+ 554 5.5.1 no valid recipients",
    "S+ 221 bye", "= ok unusable err=EREJECTED", "R: bounced:550", "> rset -> ESTATE")

TRANSCRIPT(bdat_end_554_bounced,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: BDAT 25 LAST", BODY,
    "S: 250 ok", "S+ 250 ok", "S+ 554 5.7.1 spam", "= ok usable err=EREJECTED code=554",
    "R: bounced:554")

TRANSCRIPT(bdat_end_451_deferred,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: BDAT 25 LAST", BODY,
    "S: 250 ok", "S+ 250 ok", "S+ 451 4.3.0 later", "= ok usable err=EREJECTED",
    "R: deferred:451")

TRANSCRIPT(bdat_end_421_deferred,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: BDAT 25 LAST", BODY,
    "S: 250 ok", "S+ 250 ok", "S+ 421 4.3.2 closing", "= ok unusable err=EREJECTED",
    "R: deferred:421")

TRANSCRIPT(bdat_354_is_no_answer,
    OPEN_CHUNKING, "> mail s@x.example a@y.example", MAIL_S, RCPT_A, "C: BDAT 25 LAST", BODY,
    "S: 250 ok", "S+ 250 ok", "S+ 354 go", "= failed unusable err=EUNCERTAIN", "R: uncertain")

/* BDAT content is not dot-stuffed; its size counts the CRLFs added. */
TRANSCRIPT(bdat_content_raw,
    OPEN_CHUNKING, "M/ .leading\\nbare\\rend", "> mail s@x.example a@y.example", MAIL_S, RCPT_A,
    "C: BDAT 21 LAST", "C: .leading", "C: bare", "C: end", "S: 250 ok", "S+ 250 ok",
    "S+ 250 queued", "= ok usable", "R: delivered")

/* Streamed content (no size known) goes with DATA even with CHUNKING. */
TRANSCRIPT(bdat_not_for_streamed_content,
    OPEN_CHUNKING, "> mail s@x.example a@y.example stream=4", MAIL_S, RCPT_A, "C: DATA",
    "S: 250 ok", "S+ 250 ok", "S+ 354 go", BODY, "C: .", "S: 250 queued", "= ok usable",
    "R: delivered")

/* ---- content and MAIL parameters ---- */

TRANSCRIPT(content_crlf_and_dot_stuffing,
    OPEN_PLAIN, "M/ Subject: x\\n\\n.hidden\\r\\n..two\\rlast line",
    "> mail s@x.example a@y.example stream=3", MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok",
    "C: DATA", "S: 354 go", "C: Subject: x", "C: ", "C: ..hidden", "C: ...two",
    "C: last line", "C: .", "S: 250 ok", "= ok usable", "R: delivered")

TRANSCRIPT(content_nul_refused,
    OPEN_PLAIN, "M/ Subject: x\\r\\n\\r\\nA\\x00B\\r\\n", "> mail s@x.example a@y.example",
    MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok", "C: DATA", "S: 354 go",
    "= failed unusable err=ECONTENT", "R: bounced")

TRANSCRIPT(content_read_error,
    OPEN_PLAIN, "> mail s@x.example a@y.example stream=8", MAIL_S, "S: 250 ok", RCPT_A,
    "S: 250 ok", "C: DATA", "S: 354 go", "-- read error", "= failed unusable err=EREAD",
    "R: deferred")

TRANSCRIPT(mail_params_size_and_body,
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-SIZE 1000", "S+ 250-8BITMIME",
    "S+ 250 SMTPUTF8", "= ok usable caps=SIZE,8BITMIME,SMTPUTF8 size=1000",
    "> mail s@x.example a@y.example 8bit", "C: MAIL FROM:<s@x.example> SIZE=25 BODY=8BITMIME",
    "S: 250 ok", RCPT_A, "S: 250 ok", "C: DATA", "S: 354 go", BODY, "C: .", "S: 250 ok",
    "= ok usable", "R: delivered",
    "> mail s\xc3\xa9@x.example j\xc3\xb6@y.example utf8",
    "C: MAIL FROM:<s\xc3\xa9@x.example> SIZE=25 SMTPUTF8", "S: 250 ok",
    "C: RCPT TO:<j\xc3\xb6@y.example>", "S: 250 ok", "C: DATA", "S: 354 go", BODY, "C: .",
    "S: 250 ok", "= ok usable", "R: delivered")

/* Refusals known before a byte is written. */
TRANSCRIPT(size_limit_exceeded_refused_before_writing,
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250 SIZE 20",
    "= ok usable caps=SIZE size=20", "> mail s@x.example a@y.example,b@y.example",
    "= ok usable err=EREJECTED enh=5.3.4", "R: bounced:0 bounced:0",
    "M: small", "> mail s@x.example a@y.example", "C: MAIL FROM:<s@x.example> SIZE=7",
    "S: 250 ok", RCPT_A, "S: 250 ok", "C: DATA", "S: 354 go", "C: small", "C: .",
    "S: 250 ok", "= ok usable", "R: delivered")

TRANSCRIPT(smtputf8_missing_refused_before_writing,
    OPEN_PIPELINING, "> mail s@x.example j\xc3\xb6@y.example utf8",
    "= ok usable err=EUTF8 enh=5.6.7", "R: bounced:0")

/* ========================================================================
 * Generated transcripts: every reply class at every step, and the
 * connection lost at every point of a delivery
 * ====================================================================== */

typedef struct tb {
    const char *v[256];
    size_t n;
    char pool[16384];
    size_t used;
} tb;

static void add(tb *b, const char *s)
{
    assert_true(b->n < sizeof b->v / sizeof b->v[0]);
    b->v[b->n++] = s;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void addf(tb *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(b->pool + b->used, sizeof b->pool - b->used, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof b->pool - b->used);
    add(b, b->pool + b->used);
    b->used += (size_t)n + 1;
}

static void addv(tb *b, const char *const *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        add(b, v[i]);
}

static const char *const open_plain[] = {OPEN_PLAIN};
static const char *const open_pipelining[] = {OPEN_PIPELINING};
static const char *const body[] = {BODY};

enum { STEP_MAIL, STEP_RCPT, STEP_DATA, STEP_END };
static const char *const step_names[] = {"MAIL", "RCPT", "DATA", "end of data"};
static const int codes[] = {211, 220, 221, 250, 251, 252, 334, 354, 421, 450, 451, 452,
                            500, 503, 550, 552, 554};

/*
 * One transaction (two recipients: the first accepted, the second's reply
 * the one under test when the step is RCPT), with `code` at `step` and
 * ordinary replies elsewhere.  What must follow, by RFC 5321 and the
 * design:
 *   MAIL:  2xx goes on; 421 closing; 4xx/5xx refuses everyone (RSET);
 *          anything else is out of step (deferred).
 *   RCPT:  2xx accepted; 421 closing; 452 waits for a further transaction
 *          (someone was accepted); 4xx/5xx that recipient alone.
 *   DATA:  354 content; 421 closing; 4xx/5xx refuse the accepted (RSET);
 *          anything else (a 2xx, another 3xx) out of step.
 *   end:   2xx delivered; 421 deferred, connection gone; 4xx deferred;
 *          5xx bounced; anything else: uncertain (the dot went).
 */
static void reply_class_at_step(int pipelined, int step, int code)
{
    tb *b = calloc(1, sizeof *b);
    char name[96], mail_r[32], rcpt_r[32], data_r[32], end_r[32];
    int c2 = code / 100 == 2, c45 = code / 100 == 4 || code / 100 == 5;
    const char *res_a, *res_b, *opcheck;
    char ra[32], rb[32];
    int content = 1, rset = 0;

    snprintf(name, sizeof name, "%s: %d to %s", pipelined ? "pipelined" : "plain", code,
             step_names[step]);
    snprintf(mail_r, sizeof mail_r, "S: %d reply", step == STEP_MAIL ? code : 250);
    snprintf(rcpt_r, sizeof rcpt_r, "S: %d reply", step == STEP_RCPT ? code : 250);
    snprintf(data_r, sizeof data_r, "S: %d reply", step == STEP_DATA ? code : 354);
    snprintf(end_r, sizeof end_r, "S: %d reply", step == STEP_END ? code : 250);

    if (pipelined)
        addv(b, open_pipelining, NLINES(open_pipelining));
    else
        addv(b, open_plain, NLINES(open_plain));
    add(b, "> mail s@x.example a@y.example,b@y.example");
    add(b, MAIL_S);
    if (pipelined) {
        add(b, RCPT_A);
        add(b, RCPT_B);
        add(b, "C: DATA");
    }

    /* Expected outcome. */
    res_a = res_b = "delivered:250";
    opcheck = "= ok usable";
    if (step == STEP_MAIL) {
        if (code == 421) {
            res_a = res_b = "deferred:421";
            opcheck = "= closing unusable";
            content = 0;
        } else if (c45) {
            snprintf(ra, sizeof ra, "%s:%d", code / 100 == 5 ? "bounced" : "deferred", code);
            res_a = res_b = ra;
            rset = 1;
            content = 0;
        } else if (!c2) {
            res_a = res_b = "deferred:0";
            opcheck = "= failed unusable err=EPROTOCOL";
            content = 0;
        }
    } else if (step == STEP_RCPT) {
        if (code == 421) {
            res_a = res_b = "deferred:421";
            opcheck = "= closing unusable";
            content = 0;
        } else if (code == 452) {
            res_b = "carry";
        } else if (c45) {
            snprintf(rb, sizeof rb, "%s:%d", code / 100 == 5 ? "bounced" : "deferred", code);
            res_b = rb;
        } else if (!c2) {
            res_a = res_b = "deferred:0";
            opcheck = "= failed unusable err=EPROTOCOL";
            content = 0;
        }
    } else if (step == STEP_DATA) {
        if (code == 421) {
            res_a = res_b = "deferred:421";
            opcheck = "= closing unusable";
            content = 0;
        } else if (c45) {
            snprintf(ra, sizeof ra, "%s:%d", code / 100 == 5 ? "bounced" : "deferred", code);
            res_a = res_b = ra;
            rset = 1;
            content = 0;
        } else if (code != 354) {
            res_a = res_b = "deferred:0";
            opcheck = "= failed unusable err=EPROTOCOL";
            content = 0;
        }
    } else {
        if (code == 421) {
            res_a = res_b = "deferred:421";
            opcheck = "= ok unusable";
        } else if (c2) {
            snprintf(ra, sizeof ra, "delivered:%d", code);
            res_a = res_b = ra;
        } else if (c45) {
            snprintf(ra, sizeof ra, "%s:%d", code / 100 == 5 ? "bounced" : "deferred", code);
            res_a = res_b = ra;
        } else if (!c2) {
            res_a = res_b = "uncertain:0";
            opcheck = "= failed unusable err=EUNCERTAIN";
        }
    }

    /* The dialogue. */
    if (pipelined) {
        add(b, mail_r);
        if (step == STEP_MAIL) {
            if (c2) {
                add(b, "S+ 250 ok");
                add(b, "S+ 250 ok");
                add(b, "S+ 354 go");
            } else if (c45 && code != 421) {
                /* After a refused MAIL the server answers the rest 503. */
                add(b, "S+ 503 5.5.1 no sender");
                add(b, "S+ 503 5.5.1 no sender");
                add(b, "S+ 503 5.5.1 no recipients");
            }
        } else {
            add(b, "S+ 250 ok");
            addf(b, "S+%s", rcpt_r + 2);
            if (!(step == STEP_RCPT && (code == 421 || (!c2 && !c45))))
                addf(b, "S+%s", data_r + 2);
        }
    } else {
        add(b, mail_r);
        if (!(step == STEP_MAIL && !c2)) {
            add(b, RCPT_A);
            add(b, "S: 250 ok");
            add(b, RCPT_B);
            add(b, rcpt_r);
            if (!(step == STEP_RCPT && (code == 421 || (!c2 && !c45)))) {
                add(b, "C: DATA");
                add(b, data_r);
            }
        }
    }
    if (content) {
        addv(b, body, NLINES(body));
        add(b, "C: .");
        add(b, end_r);
    }
    if (rset) {
        add(b, "C: RSET");
        add(b, "S: 250 ok");
    }
    add(b, opcheck);
    addf(b, "R: %s %s", res_a, res_b);
    run_transcript(name, b->v, b->n, 0);
    free(b);
}

static void every_reply_class_at_every_step(void **state)
{
    int pipelined, step;
    size_t k;

    (void)state;
    for (pipelined = 0; pipelined <= 1; pipelined++)
        for (step = STEP_MAIL; step <= STEP_END; step++)
            for (k = 0; k < sizeof codes / sizeof codes[0]; k++)
                reply_class_at_step(pipelined, step, codes[k]);
}

/*
 * A delivery cut at every read (closed or timed out): before the end of
 * data was written every recipient is deferred; once written, uncertain
 * until the reply to it; after that reply, delivered.
 */
static void cut_everywhere(const char *name, const char *const *lines, size_t n, size_t mail_at,
                           size_t end_written_at, size_t end_reply_at, int error,
                           const char *final_check)
{
    size_t k;

    for (k = mail_at + 1; k < n; k++) {
        tb *b;
        const char *text;
        kind kd = kind_of(&R, lines[k], &text), prev = kind_of(&R, lines[k - 1], &text);
        char nm[128];

        if (kd == K_CHECK)
            break;
        /* Cut between reads and writes, never inside one: at the start of
         * a read, or of a write (a C| line, or a C: line after no C line). */
        if (!(kd == K_S || kd == K_SFRAG || kd == K_CNEW ||
              (kd == K_C && prev != K_C && prev != K_CSAME && prev != K_CNEW)))
            continue;
        b = calloc(1, sizeof *b);
        addv(b, lines, k);
        add(b, error == TM_ECLOSED ? "-- closed" : "-- timeout");
        if (k > end_reply_at) {
            add(b, final_check);
            add(b, "R: delivered delivered");
        } else if (k > end_written_at) {
            add(b, "= failed unusable err=EUNCERTAIN");
            add(b, "R: uncertain uncertain");
        } else {
            addf(b, "= failed unusable err=%s", error == TM_ECLOSED ? "ECLOSED" : "ETIMEOUT");
            add(b, "R: deferred deferred");
        }
        snprintf(nm, sizeof nm, "%s cut at entry %zu", name, k);
        run_transcript(nm, b->v, b->n, 0);
        free(b);
    }
}

static const char *const cut_plain[] = {
    OPEN_PLAIN, "> mail s@x.example a@y.example,b@y.example",
    MAIL_S, "S: 250 ok", RCPT_A, "S: 250 ok", RCPT_B, "S: 250 ok", "C: DATA", "S: 354 go",
    BODY, "C| .", "S: 250 queued", "= ok usable", "R: delivered delivered"};

static const char *const cut_pipelined[] = {
    OPEN_PIPELINING, "> mail s@x.example a@y.example,b@y.example quit",
    MAIL_S, RCPT_A, RCPT_B, "C: DATA", "S: 250 ok", "S: 250 ok", "S: 250 ok", "S: 354 go",
    BODY, "C| .", "C& QUIT", "S: 250 queued", "S: 221 bye", "= ok unusable",
    "R: delivered delivered"};

static const char *const cut_bdat[] = {
    "> open", GREETING, EHLO, "S: 250-mx.example", "S+ 250-PIPELINING", "S+ 250 CHUNKING",
    "= ok usable", "> mail s@x.example a@y.example,b@y.example",
    MAIL_S, RCPT_A, RCPT_B, "C: BDAT 25 LAST", BODY, "S: 250 ok", "S: 250 ok", "S: 250 ok",
    "S: 250 queued", "= ok usable", "R: delivered delivered"};

static size_t index_of(const char *const *lines, size_t n, const char *s, size_t from)
{
    size_t i;

    for (i = from; i < n; i++)
        if (strcmp(lines[i], s) == 0)
            return i;
    fail();
    return n;
}

static void connection_lost_everywhere(void **state)
{
    int e;

    (void)state;
    /* The base transcripts pass as they are. */
    run_transcript("cut_plain", cut_plain, NLINES(cut_plain), 0);
    run_transcript("cut_pipelined", cut_pipelined, NLINES(cut_pipelined), 0);
    run_transcript("cut_bdat", cut_bdat, NLINES(cut_bdat), 0);
    for (e = 0; e < 2; e++) {
        int err = e ? TM_ETIMEOUT : TM_ECLOSED;
        size_t m, dot;

        m = index_of(cut_plain, NLINES(cut_plain), "> mail s@x.example a@y.example,b@y.example", 0);
        dot = index_of(cut_plain, NLINES(cut_plain), "C| .", m);
        cut_everywhere("plain", cut_plain, NLINES(cut_plain), m, dot, dot + 1, err,
                       "= ok usable");
        m = index_of(cut_pipelined, NLINES(cut_pipelined),
                     "> mail s@x.example a@y.example,b@y.example quit", 0);
        dot = index_of(cut_pipelined, NLINES(cut_pipelined), "C& QUIT", m);
        /* the reply to QUIT lost: the delivery stands */
        cut_everywhere("pipelined", cut_pipelined, NLINES(cut_pipelined), m, dot, dot + 1, err,
                       "= ok unusable");
        m = index_of(cut_bdat, NLINES(cut_bdat), "> mail s@x.example a@y.example,b@y.example", 0);
        dot = index_of(cut_bdat, NLINES(cut_bdat), "C: Hello.", m);
        cut_everywhere("bdat", cut_bdat, NLINES(cut_bdat), m, dot,
                       index_of(cut_bdat, NLINES(cut_bdat), "S: 250 queued", m), err,
                       "= ok usable");
    }
}

/* ========================================================================
 * The driver over an in-memory transport
 * ====================================================================== */

/* The server's bytes, each chunk available once the client has written
 * `after` (NULL: at once); a read before then times out, as the server
 * waits for the client. */
typedef struct chunk {
    const char *bytes;
    const char *after;
} chunk;

typedef struct mem_tr {
    tm_transport base;
    const chunk *chunks;
    size_t nchunks, next, off;
    int writes;
    char out[65536];                /* what the client wrote */
    size_t outlen;
    int closed;
} mem_tr;

static long mem_read(tm_transport *t, void *buf, size_t size, int64_t deadline)
{
    mem_tr *m = (mem_tr *)t;
    const chunk *ch;
    size_t n;

    (void)deadline;
    if (m->next == m->nchunks)
        return TM_ECLOSED;
    ch = &m->chunks[m->next];
    if (ch->after && !strstr(m->out, ch->after))
        return TM_ETIMEOUT;
    n = strlen(ch->bytes) - m->off;
    if (n > size)
        n = size;
    memcpy(buf, ch->bytes + m->off, n);
    m->off += n;
    if (m->off == strlen(ch->bytes)) {
        m->next++;
        m->off = 0;
    }
    return (long)n;
}

static int mem_write(tm_transport *t, const void *buf, size_t len, int64_t deadline)
{
    mem_tr *m = (mem_tr *)t;

    (void)deadline;
    assert_true(m->outlen + len < sizeof m->out);
    memcpy(m->out + m->outlen, buf, len);
    m->outlen += len;
    m->out[m->outlen] = '\0';
    m->writes++;
    return TM_OK;
}

static size_t mem_pending(tm_transport *t)
{
    mem_tr *m = (mem_tr *)t;

    if (m->next == m->nchunks ||
        (m->chunks[m->next].after && !strstr(m->out, m->chunks[m->next].after)))
        return 0;
    return strlen(m->chunks[m->next].bytes) - m->off;
}

static void mem_close(tm_transport *t)
{
    ((mem_tr *)t)->closed = 1;
}

static const tm_transport_ops mem_ops = {mem_read, mem_write, mem_pending, mem_close};

typedef struct drv {
    mem_tr tr;
    tm_client c;
    tm_drive d;
    tm_source src;
    unsigned char ibuf[64];
    tm_txn txn;
    tm_delivery_status st;
    tm_rcpt_status rcpt[4];
    tm_outcome out;
} drv;

static drv *drv_new(const chunk *chunks, size_t n)
{
    drv *x = calloc(1, sizeof *x);

    assert_non_null(x);
    x->tr.base.ops = &mem_ops;
    x->tr.chunks = chunks;
    x->tr.nchunks = n;
    tm__client_init(&x->c, "client.example");
    x->c.host = "mx.example";
    x->d.c = &x->c;
    x->d.tr = &x->tr.base;
    x->d.ctx = NULL;
    x->d.deadline = INT64_MAX;
    x->d.ibuf = x->ibuf;
    x->d.ibuf_size = sizeof x->ibuf;
    return x;
}

static void drv_txn(drv *x, const char *const *to, size_t n, const char *data, int quit)
{
    size_t i;

    memset(&x->txn, 0, sizeof x->txn);
    x->txn.from = "s@x.example";
    for (i = 0; i < n; i++) {
        x->txn.to[i] = to[i];
        x->txn.idx[i] = i;
    }
    x->txn.nto = n;
    x->txn.data = (const unsigned char *)data;
    x->txn.size = data ? strlen(data) : 0;
    x->txn.quit_after = quit;
    x->st.version = TM_STATUS_VERSION;
    assert_int_equal(tm__status_reset(&x->st), TM_OK);
    x->out.st = &x->st;
    x->out.rcpt = x->rcpt;
    x->out.cap = 4;
    tm__outcome_begin(&x->out, to, n);
    x->txn.out = &x->out;
    memset(&x->src, 0, sizeof x->src);
    x->src.data = x->txn.data;
    x->src.size = x->txn.size;
    x->d.src = &x->src;
}

static void driver_full_delivery(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", "EHLO"},
        {"250 ok\r\n250 ok\r\n", "DATA\r\n"},
        {"250 ok\r\n354 go\r\n", "DATA\r\n"},
        {"250 2.0.0 queued\r\n", "\r\n.\r\n"},
        {"221 bye\r\n", "QUIT\r\n"},
    };
    static const char *const to[] = {"a@y.example", "b@y.example"};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    assert_int_equal(tm__client_open(&x->c), TM_OK);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    assert_int_equal(tm__client_op_result(&x->c), TM_OP_OK);
    drv_txn(x, to, 2, "Subject: hi\r\n\r\n.dot\r\n", 1);
    assert_int_equal(tm__client_mail(&x->c, &x->txn), TM_OK);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    assert_int_equal(tm__client_op_result(&x->c), TM_OP_OK);
    assert_int_equal(x->c.error, TM_OK);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DELIVERED);
    assert_int_equal(x->rcpt[1].result, TM_RESULT_DELIVERED);
    assert_int_equal(x->st.rcpt_delivered, 2);
    assert_int_equal(x->st.code, 250);
    assert_string_equal(x->tr.out, "EHLO client.example\r\n"
                                   "MAIL FROM:<s@x.example> SIZE=21\r\n"
                                   "RCPT TO:<a@y.example>\r\n"
                                   "RCPT TO:<b@y.example>\r\n"
                                   "DATA\r\n"
                                   "Subject: hi\r\n\r\n..dot\r\n"
                                   ".\r\nQUIT\r\n");
    assert_int_equal(x->tr.writes, 4);
    assert_false(tm__client_usable(&x->c));
    free(x);
}

/* tm_source.read: content streamed a few bytes at a time. */
typedef struct reader {
    const char *text;
    size_t off, step;
    int fail_at; /* call number that fails (0: none) */
    int calls;
} reader;

static long read_some(void *arg, unsigned char *buf, size_t size)
{
    reader *rd = arg;
    size_t n = strlen(rd->text) - rd->off;

    if (++rd->calls == rd->fail_at)
        return -1;
    if (n > rd->step)
        n = rd->step;
    if (n > size)
        n = size;
    memcpy(buf, rd->text + rd->off, n);
    rd->off += n;
    return (long)n;
}

static void driver_streamed_content(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n", "EHLO"},
        {"250 ok\r\n250 ok\r\n354 go\r\n", "DATA\r\n"},
        {"250 queued\r\n", "\r\n.\r\n"},
    };
    static const char *const to[] = {"a@y.example"};
    reader rd = {"Subject: streamed\n\n.line one\r\nline two\rcaf\xc3\xa9\n..\nno newline", 0,
                 5, 0, 0};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    drv_txn(x, to, 1, NULL, 0);
    x->src.read = read_some;
    x->src.arg = &rd;
    x->txn.has_8bit = 1;
    assert_int_equal(tm__client_mail(&x->c, &x->txn), TM_OK);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DELIVERED);
    assert_true(tm__client_usable(&x->c));
    assert_string_equal(x->tr.out, "EHLO client.example\r\n"
                                   "MAIL FROM:<s@x.example> BODY=8BITMIME\r\n"
                                   "RCPT TO:<a@y.example>\r\n"
                                   "DATA\r\n"
                                   "Subject: streamed\r\n\r\n..line one\r\nline two\r\n"
                                   "caf\xc3\xa9\r\n...\r\nno newline\r\n"
                                   ".\r\n");
    assert_true(rd.calls > 10);
    free(x);
}

static void driver_read_callback_fails(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250 mx.example\r\n", "EHLO"},
        {"250 ok\r\n", "MAIL"},
        {"250 ok\r\n", "RCPT"},
        {"354 go\r\n", "DATA\r\n"},
    };
    static const char *const to[] = {"a@y.example"};
    reader rd = {"Subject: x\r\n\r\nbody\r\n", 0, 4, 3, 0};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    drv_txn(x, to, 1, NULL, 0);
    x->src.read = read_some;
    x->src.arg = &rd;
    tm__client_mail(&x->c, &x->txn);
    assert_int_equal(tm__drive(&x->d), TM_WANT_FAILED);
    assert_int_equal(x->c.error, TM_EREAD);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DEFERRED);
    assert_null(strstr(x->tr.out, "\r\n.\r\n"));
    free(x);
}

/* Bytes waiting before a command answer nothing: the driver looks, and
 * the command is never written. */
static void driver_looks_for_unsolicited_bytes(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250 PIPELINING\r\n", "EHLO"},
        {"250 2.0.0 ok\r\n", "EHLO"}, /* waiting when MAIL is about to go */
    };
    static const char *const to[] = {"a@y.example"};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    assert_int_equal(tm__client_op_result(&x->c), TM_OP_OK);
    drv_txn(x, to, 1, "Subject: x\r\n\r\nbody\r\n", 0);
    tm__client_mail(&x->c, &x->txn);
    assert_int_equal(tm__drive(&x->d), TM_WANT_FAILED);
    assert_int_equal(x->c.error, TM_EPROTOCOL);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DEFERRED);
    assert_string_equal(x->tr.out, "EHLO client.example\r\n");
    free(x);
}

/* A 250 in a packet of its own right behind the 354: no content goes. */
static void driver_looks_before_content(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250 PIPELINING\r\n", "EHLO"},
        {"250 ok\r\n250 ok\r\n354 go\r\n", "DATA\r\n"},
        {"250 2.0.0 queued\r\n", "DATA\r\n"},
    };
    static const char *const to[] = {"a@y.example"};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    drv_txn(x, to, 1, "Subject: x\r\n\r\nbody\r\n", 0);
    tm__client_mail(&x->c, &x->txn);
    assert_int_equal(tm__drive(&x->d), TM_WANT_FAILED);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DEFERRED);
    assert_null(strstr(x->tr.out, "Subject"));
    free(x);
}

/* The early 250 arrives while the content is written (a large message,
 * or a slow source), before the final dot: it must not be taken as the
 * reply to the dot. */
static void driver_looks_before_final_dot(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250 PIPELINING\r\n", "EHLO"},
        {"250 ok\r\n250 ok\r\n354 go\r\n", "DATA\r\n"},
        {"250 2.0.0 queued\r\n", "body\r\n"}, /* after the content, before the dot */
    };
    static const char *const to[] = {"a@y.example"};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    drv_txn(x, to, 1, "Subject: x\r\n\r\nbody\r\n", 0);
    tm__client_mail(&x->c, &x->txn);
    tm__drive(&x->d);
    assert_int_not_equal(x->rcpt[0].result, TM_RESULT_DELIVERED);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_DEFERRED);
    free(x);
}

static void driver_closed_after_dot_uncertain(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250 mx.example\r\n", "EHLO"},
        {"250 ok\r\n", "MAIL"},
        {"250 ok\r\n", "RCPT"},
        {"354 go\r\n", "DATA\r\n"},
    };
    static const char *const to[] = {"a@y.example"};
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    drv_txn(x, to, 1, "Subject: x\r\n\r\nbody\r\n", 0);
    tm__client_mail(&x->c, &x->txn);
    assert_int_equal(tm__drive(&x->d), TM_WANT_FAILED);
    assert_int_equal(x->c.error, TM_EUNCERTAIN);
    assert_int_equal(x->rcpt[0].result, TM_RESULT_UNCERTAIN);
    assert_non_null(strstr(x->tr.out, "body\r\n.\r\n"));
    free(x);
}

static void driver_stops_for_tls(void **state)
{
    static const chunk server[] = {
        {"220 mx.example ESMTP\r\n", NULL},
        {"250-mx.example\r\n250 STARTTLS\r\n", "EHLO"},
        {"220 ready\r\n", "STARTTLS"},
    };
    drv *x = drv_new(server, NLINES(server));

    (void)state;
    tm__client_open(&x->c);
    assert_int_equal(tm__drive(&x->d), TM_WANT_DONE);
    assert_int_equal(tm__client_starttls(&x->c), TM_OK);
    assert_int_equal(tm__drive(&x->d), TM_WANT_TLS);
    assert_string_equal(x->tr.out, "EHLO client.example\r\nSTARTTLS\r\n");
    free(x);
}

/* ======================================================================== */

#define T(name) cmocka_unit_test(name)

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* greeting and EHLO */
        T(open_postfix_caps),
        T(open_postfix_caps_bytewise),
        T(open_multiline_greeting),
        T(open_split_and_merged_reads),
        T(open_keyword_in_first_line_is_not_a_capability),
        T(greeting_554_leaves_host),
        T(greeting_450_stays_with_host),
        T(greeting_421),
        T(greeting_2xx_other_than_220),
        T(greeting_malformed),
        T(greeting_closed),
        T(greeting_timeout),
        T(greeting_extra_line_same_read),
        T(greeting_then_early_bytes_before_ehlo),
        T(ehlo_500_falls_back_to_helo),
        T(ehlo_554_no_helo),
        T(ehlo_421),
        T(ehlo_451),
        T(helo_550_after_ehlo_502),
        T(ehlo_codes_differ_across_lines),
        T(ehlo_closed),
        T(ehlo_95_lines),
        /* STARTTLS */
        T(starttls_220_then_ehlo_again),
        T(starttls_220_split_across_reads),
        T(starttls_220_then_one_byte),
        T(starttls_220_then_injected_line),
        T(starttls_421_closing),
        T(starttls_454_refused),
        T(starttls_554_refused),
        T(starttls_200_violation),
        T(starttls_221_violation),
        T(starttls_354_violation),
        T(starttls_handshake_failed),
        T(starttls_closed),
        T(starttls_ehlo_refused_over_tls),
        /* transactions without PIPELINING */
        T(plain_delivery),
        T(plain_delivery_bytewise),
        T(plain_mixed_rcpt_replies),
        T(plain_mail_550_then_rset),
        T(plain_mail_451_then_rset),
        T(plain_all_rcpts_refused_then_rset),
        T(plain_data_554_then_rset),
        T(plain_data_451_then_rset),
        T(plain_end_554_bounced),
        T(plain_end_451_deferred),
        T(plain_end_3xx_uncertain),
        T(plain_end_malformed_uncertain),
        T(plain_mail_reply_then_550_same_read),
        T(plain_mail_reply_then_550_before_rcpt),
        T(plain_rcpt_reply_then_354_same_read),
        T(plain_2xx_to_data_violation),
        T(data_354_and_250_same_read),
        T(data_354_and_250_same_read_pipelined),
        T(data_early_250_before_content),
        T(data_early_250_before_final_dot),
        T(plain_452_third_of_five),
        T(plain_452_first_rcpt_deferred),
        T(plain_421_to_mail),
        T(plain_421_to_rcpt),
        T(plain_421_to_data),
        T(plain_421_to_end_of_data),
        T(closed_waiting_for_354_deferred),
        T(closed_writing_the_final_dot_deferred),
        T(closed_after_final_dot_uncertain),
        T(timeout_after_final_dot_uncertain),
        T(closed_waiting_for_rset_after_refusal),
        T(plain_quit_after_is_a_separate_operation),
        T(rset_refused),
        /* PIPELINING */
        T(pipelined_delivery),
        T(pipelined_delivery_bytewise),
        T(pipelined_replies_one_per_read),
        T(pipelined_mail_550_then_rset),
        T(pipelined_all_rcpts_550_data_554_then_rset),
        T(pipelined_all_rcpts_550_data_354),
        T(pipelined_2xx_to_data_violation),
        T(pipelined_452_third_of_five),
        T(pipelined_452_no_quit_with_the_dot),
        T(pipelined_452_to_everyone_deferred),
        T(pipelined_quit_with_the_final_dot),
        T(pipelined_quit_reply_lost),
        T(pipelined_421_to_mail),
        T(pipelined_421_to_rcpt),
        T(pipelined_421_to_data),
        T(pipelined_421_to_end_of_data_with_quit),
        T(extra_line_after_end_of_data_reply),
        T(early_bytes_before_mail),
        T(pipelined_two_messages_and_rset),
        /* BDAT */
        T(bdat_delivery),
        T(bdat_delivery_bytewise),
        T(bdat_one_rcpt_quit_in_the_same_write),
        T(bdat_two_rcpts_no_quit),
        T(bdat_closed_after_the_write_uncertain),
        T(bdat_closed_after_rcpt_replies_uncertain),
        T(bdat_write_failed_deferred),
        T(bdat_mail_550_then_rset),
        T(bdat_rcpt_550_no_rset_after_quit),
        T(bdat_end_554_bounced),
        T(bdat_end_451_deferred),
        T(bdat_end_421_deferred),
        T(bdat_354_is_no_answer),
        T(bdat_content_raw),
        T(bdat_not_for_streamed_content),
        /* content and parameters */
        T(content_crlf_and_dot_stuffing),
        T(content_nul_refused),
        T(content_read_error),
        T(mail_params_size_and_body),
        T(size_limit_exceeded_refused_before_writing),
        T(smtputf8_missing_refused_before_writing),
        /* generated */
        T(every_reply_class_at_every_step),
        T(connection_lost_everywhere),
        /* the driver */
        T(driver_full_delivery),
        T(driver_streamed_content),
        T(driver_read_callback_fails),
        T(driver_looks_for_unsolicited_bytes),
        T(driver_looks_before_content),
        T(driver_looks_before_final_dot),
        T(driver_closed_after_dot_uncertain),
        T(driver_stops_for_tls),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
