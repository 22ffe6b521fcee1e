/*
 * status.c - the one writer of the public status structs (tm_delivery_status
 * and the caller's tm_rcpt_status array), its JSON form, and the names of
 * errors, results, policy sources and floors it speaks in.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * Errors and results
 * ---------------------------------------------------------------------- */

/* Indexed by -error; append only, like the enum. */
static const char *const error_strings[] = {
    "success",
    "invalid argument",
    "out of memory",
    "invalid envelope address",
    "could not connect to any mail exchanger",
    "timed out waiting for the server",
    "connection closed by the server",
    "SMTP protocol violation by the server",
    "TLS could not be established",
    "TLS required but no mail exchanger could provide it",
    "message rejected by the server",
    "message delivered to some recipients only",
    "end of data sent but no reply received: the message may have been delivered",
    "unusable message content (NUL byte)",
    "reading the message content failed",
    "the session cannot be used for this call",
    "CA certificate file could not be read or parsed",
    "temporary DNS failure looking up the mail exchangers",
    "the recipient domain does not exist",
    "the domain accepts no mail (null MX)",
    "too many recipients",
    "local I/O or system error",
    "non-ASCII address but the server does not support SMTPUTF8",
    "no setting for that domain",
    "malformed line in the settings",
};

TM_EXTERN const char *tm_strerror(int error)
{
    if (error > 0 || error < -(int)(sizeof(error_strings) / sizeof(error_strings[0]) - 1))
        return "unknown error";
    return error_strings[-error];
}

TM_EXTERN const char *tm_result_name(int result)
{
    switch (result) {
    case TM_RESULT_DELIVERED:
        return "delivered";
    case TM_RESULT_DEFERRED:
        return "deferred";
    case TM_RESULT_UNCERTAIN:
        return "uncertain";
    case TM_RESULT_BOUNCED:
        return "bounced";
    default:
        return "none";
    }
}

TM_EXTERN const char *tm_policy_source_name(int source)
{
    switch (source) {
    case TM_SOURCE_MESSAGE:
        return "message";
    case TM_SOURCE_SENDING_DOMAIN:
        return "sending-domain";
    case TM_SOURCE_RECIPIENT_FLOOR:
        return "recipient-floor";
    default:
        return "default";
    }
}

TM_EXTERN const char *tm_floor_name(int floor)
{
    switch (floor) {
    case TM_FLOOR_TLS:
        return "tls";
    case TM_FLOOR_VERIFIED:
        return "verified";
    case TM_FLOOR_DANE:
        return "dane";
    default:
        return "none";
    }
}

TM_EXTERN const char *tm_dane_name(int dane)
{
    switch (dane) {
    case TM_DANE_INSECURE:
        return "insecure";
    case TM_DANE_NO_TLSA:
        return "no-tlsa";
    case TM_DANE_VERIFIED:
        return "verified";
    case TM_DANE_TLSA_UNUSABLE:
        return "tlsa-unusable";
    case TM_DANE_FAILED:
        return "failed";
    case TM_DANE_PENDING:
        return "pending";
    default:
        return "off";
    }
}

TM_EXTERN const char *tm_verified_by_name(int by)
{
    switch (by) {
    case TM_VERIFIED_BY_PKIX:
        return "pkix";
    case TM_VERIFIED_BY_DANE:
        return "dane";
    default:
        return "";
    }
}

TM_EXTERN const char *tm_mta_sts_name(int mode)
{
    switch (mode) {
    case TM_MTA_STS_NO_POLICY:
        return "no-policy";
    case TM_MTA_STS_NONE:
        return "none";
    case TM_MTA_STS_TESTING:
        return "testing";
    case TM_MTA_STS_ENFORCE:
        return "enforce";
    case TM_MTA_STS_FETCH_FAILED:
        return "fetch-failed";
    default:
        return "off";
    }
}

int tm__result_of_code(int code)
{
    if (code >= 200 && code <= 299)
        return TM_RESULT_DELIVERED;
    if (code >= 500 && code <= 599)
        return TM_RESULT_BOUNCED;
    return TM_RESULT_DEFERRED;
}

/* ------------------------------------------------------------------------
 * The delivery status
 * ---------------------------------------------------------------------- */

int tm__status_reset(tm_delivery_status *st)
{
    unsigned int version;

    if (st == NULL || st->version != TM_STATUS_VERSION)
        return TM_EINVAL;
    version = st->version;
    /* 3 KB since the recipients moved out: cheaper to clear whole than to
     * track which fields a call will write. */
    memset(st, 0, sizeof(*st));
    st->version = version;
    st->result = TM_RESULT_NONE;
    st->policy.version = TM_POLICY_VERSION;
    return TM_OK;
}

/* The lines of a multi-line reply joined with " / ": one line of text for
 * logs and JSON, their boundaries still visible. */
static void join_reply(char *dst, size_t size, const tm_reply *r, int first_line_only)
{
    size_t i, o = 0;

    for (i = 0; i < r->text_len && i < sizeof(r->text) && r->text[i] != '\0'; i++) {
        if (r->text[i] == '\n') {
            if (first_line_only || o + 3 >= size)
                break;
            memcpy(dst + o, " / ", 3);
            o += 3;
        } else {
            if (o + 1 >= size)
                break;
            dst[o++] = r->text[i];
        }
    }
    dst[o] = '\0';
}

void tm__status_set_reply(tm_delivery_status *st, const tm_reply *r)
{
    if (st == NULL)
        return;
    st->code = 0;
    st->enhanced_code[0] = '\0';
    st->message[0] = '\0';
    if (r == NULL || r->code == 0)
        return;
    st->code = r->code;
    tm__strlcpy(st->enhanced_code, r->enhanced, sizeof(st->enhanced_code));
    join_reply(st->message, sizeof(st->message), r, 0);
}

void tm__status_set_enhanced(tm_delivery_status *st, const char *enhanced)
{
    if (st == NULL)
        return;
    st->code = 0;
    st->message[0] = '\0';
    tm__strlcpy(st->enhanced_code, enhanced, sizeof(st->enhanced_code));
}

void tm__status_describe(tm_delivery_status *st, const char *fmt, ...)
{
    va_list ap;

    if (st == NULL)
        return;
    st->description[0] = '\0';
    if (fmt == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(st->description, sizeof(st->description), fmt, ap);
    va_end(ap);
}

void tm__status_set_result(tm_delivery_status *st, int result)
{
    if (st != NULL)
        st->result = result;
}

void tm__status_set_code(tm_delivery_status *st, int code, const char *enhanced,
                         const char *message)
{
    if (st == NULL)
        return;
    st->code = code;
    tm__strlcpy(st->enhanced_code, enhanced, sizeof(st->enhanced_code));
    tm__strlcpy(st->message, code ? message : NULL, sizeof(st->message));
}

void tm__status_set_host(tm_delivery_status *st, const char *host, const char *address,
                         unsigned int port, unsigned int attempts)
{
    if (st == NULL)
        return;
    tm__strlcpy(st->mx_host, host, sizeof(st->mx_host));
    tm__strlcpy(st->mx_address, address, sizeof(st->mx_address));
    st->mx_port = (int)port;
    st->attempt_no = attempts;
}

void tm__status_set_tls(tm_delivery_status *st, int tls, int verified, int resumed, int failure,
                        const char *error, const char *version, const char *cipher)
{
    if (st == NULL)
        return;
    st->tls = tls;
    st->cert_verified = tls && verified;
    st->tls_resumed = tls && resumed;
    st->tls_failure = tls ? TM_TLS_FAILURE_NONE : failure;
    tm__strlcpy(st->tls_error, error, sizeof(st->tls_error));
    tm__strlcpy(st->tls_version, tls ? version : NULL, sizeof(st->tls_version));
    tm__strlcpy(st->tls_cipher, tls ? cipher : NULL, sizeof(st->tls_cipher));
}

void tm__status_set_dane(tm_delivery_status *st, int dane, int mx_dnssec, int verified_by,
                         const char *tlsa)
{
    if (st == NULL)
        return;
    st->dane = dane;
    st->mx_dnssec = mx_dnssec;
    st->cert_verified_by = st->cert_verified ? verified_by : TM_VERIFIED_BY_NONE;
    tm__strlcpy(st->dane_tlsa, dane == TM_DANE_VERIFIED ? tlsa : NULL, sizeof(st->dane_tlsa));
}

void tm__status_set_sts(tm_delivery_status *st, int mode, const char *id, int cached,
                        int would_refuse, const char *error)
{
    if (st == NULL)
        return;
    st->mta_sts = mode;
    tm__strlcpy(st->mta_sts_id, id, sizeof(st->mta_sts_id));
    st->mta_sts_cached = cached;
    st->mta_sts_would_refuse = mode == TM_MTA_STS_TESTING && would_refuse;
    tm__strlcpy(st->mta_sts_error, error, sizeof(st->mta_sts_error));
}

void tm__status_set_policy(tm_delivery_status *st, const tm_resolved *r)
{
    if (st == NULL)
        return;
    st->policy = r->policy;
    st->require_tls_source = r->require_tls_source;
    st->skip_verify_source = r->skip_verify_source;
    st->keep_unverified_tls_source = r->keep_unverified_tls_source;
    st->floor = r->floor;
}

void tm__status_set_utf8(tm_delivery_status *st, int utf8)
{
    if (st != NULL)
        st->utf8 = utf8;
}

void tm__status_finish(tm_delivery_status *st, int error, int64_t start_ms)
{
    if (st == NULL)
        return;
    st->error = error;
    if (st->result == TM_RESULT_NONE && error != TM_OK)
        st->result = (error == TM_EINVAL || error == TM_EADDRESS || error == TM_ENODOMAIN ||
                      error == TM_ENULLMX || error == TM_ECONTENT || error == TM_EUTF8)
                         ? TM_RESULT_BOUNCED
                         : TM_RESULT_DEFERRED;
    if (st->description[0] == '\0' && error != TM_OK)
        tm__status_describe(st, "%s", tm_strerror(error));
    st->session_seconds = (double)(tm__now_ms() - start_ms) / 1000.0;
}

/* ------------------------------------------------------------------------
 * Per-recipient outcomes
 * ---------------------------------------------------------------------- */

void tm__outcome_begin(tm_outcome *o, const char *const *to, size_t n)
{
    size_t i, k = n < o->cap ? n : o->cap;

    if (o->st) {
        o->st->rcpt_count = (unsigned int)n;
        o->st->rcpt_delivered = o->st->rcpt_deferred = 0;
        o->st->rcpt_uncertain = o->st->rcpt_bounced = 0;
        o->st->transactions = 0;
    }
    for (i = 0; o->rcpt && i < k; i++) {
        tm_rcpt_status *r = &o->rcpt[i];
        tm__strlcpy(r->address, to ? to[i] : NULL, sizeof(r->address));
        r->result = TM_RESULT_NONE;
        r->code = 0;
        r->enhanced_code[0] = '\0';
        r->message[0] = '\0';
    }
}

void tm__outcome_set(tm_outcome *o, size_t i, int result, const tm_reply *reply)
{
    if (o->st) {
        switch (result) {
        case TM_RESULT_DELIVERED:
            o->st->rcpt_delivered++;
            break;
        case TM_RESULT_UNCERTAIN:
            o->st->rcpt_uncertain++;
            break;
        case TM_RESULT_BOUNCED:
            o->st->rcpt_bounced++;
            break;
        default:
            o->st->rcpt_deferred++;
            break;
        }
    }
    if (o->rcpt && i < o->cap) {
        tm_rcpt_status *r = &o->rcpt[i];
        r->result = result;
        if (reply && reply->code) {
            r->code = reply->code;
            tm__strlcpy(r->enhanced_code, reply->enhanced, sizeof(r->enhanced_code));
            join_reply(r->message, sizeof(r->message), reply, 1);
        }
    }
}

void tm__outcome_txn(tm_outcome *o)
{
    if (o->st)
        o->st->transactions++;
}

int tm__outcome_result(tm_outcome *o, int rc)
{
    tm_delivery_status *st = o->st;
    unsigned int recorded, missing;
    size_t i, k;

    if (st == NULL)
        return rc;
    /* Whoever was not recorded was not delivered: never claim more. */
    recorded = st->rcpt_delivered + st->rcpt_deferred + st->rcpt_uncertain + st->rcpt_bounced;
    missing = st->rcpt_count > recorded ? st->rcpt_count - recorded : 0;
    st->rcpt_deferred += missing;
    k = st->rcpt_count < o->cap ? st->rcpt_count : o->cap;
    for (i = 0; missing && o->rcpt && i < k; i++)
        if (o->rcpt[i].result == TM_RESULT_NONE)
            o->rcpt[i].result = TM_RESULT_DEFERRED;

    if (st->rcpt_count > 0 && st->rcpt_delivered == st->rcpt_count && rc == TM_OK) {
        st->result = TM_RESULT_DELIVERED;
        return TM_OK;
    }
    if (rc == TM_OK && st->rcpt_delivered == st->rcpt_count)
        rc = TM_EPROTOCOL; /* cannot happen: an empty message */
    st->result = st->rcpt_uncertain  ? TM_RESULT_UNCERTAIN
                 : st->rcpt_deferred ? TM_RESULT_DEFERRED
                 : st->rcpt_bounced  ? TM_RESULT_BOUNCED
                                     : TM_RESULT_DEFERRED;
    if (st->rcpt_delivered > 0)
        return TM_EPARTIAL;
    return rc == TM_OK ? TM_EREJECTED : rc;
}

/* ------------------------------------------------------------------------
 * JSON
 * ---------------------------------------------------------------------- */

/* snprintf-like sink: counts everything, stores what fits. */
typedef struct json_out {
    char *buf;
    size_t size;
    size_t len;
} json_out;

static void put(json_out *j, const char *s, size_t n)
{
    if (j->len < j->size) {
        size_t room = j->size - j->len;
        memcpy(j->buf + j->len, s, n < room ? n : room);
    }
    j->len += n;
}

static void puts_(json_out *j, const char *s)
{
    put(j, s, strlen(s));
}

static void put_uint(json_out *j, unsigned long long v)
{
    char tmp[24];
    size_t n = sizeof(tmp);

    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(j, tmp + n, sizeof(tmp) - n);
}

static void put_int(json_out *j, long long v)
{
    if (v < 0) {
        put(j, "-", 1);
        put_uint(j, 0ULL - (unsigned long long)v);
    } else {
        put_uint(j, (unsigned long long)v);
    }
}

/* A JSON string from a fixed-size field that may lack its NUL. */
static void put_string(json_out *j, const char *field, size_t fieldsize)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)field;
    size_t len = 0, i = 0, run = 0;

    while (len < fieldsize && s[len] != '\0')
        len++;
    put(j, "\"", 1);
    while (i < len) {
        unsigned char c = s[i];
        size_t n;

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            run++;
            continue;
        }
        put(j, (const char *)s + i - run, run);
        run = 0;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(j, esc, 2);
            i++;
        } else if (c < 0x80) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(j, esc, 6);
            i++;
        } else if ((n = tm__utf8_seq(s + i, len - i)) != 0) {
            put(j, (const char *)s + i, n);
            i += n;
        } else {
            put(j, "\\ufffd", 6);
            i++;
        }
    }
    put(j, (const char *)s + i - run, run);
    put(j, "\"", 1);
}

#define PUT_FIELD(j, name, field) \
    do { \
        puts_((j), name); \
        put_string((j), (field), sizeof(field)); \
    } while (0)

TM_EXTERN int tm_status_json(const tm_delivery_status *status, const tm_rcpt_status *rcpts,
                             size_t nrcpts, char *buf, size_t size)
{
    json_out j;
    size_t i;
    double secs;
    unsigned long long ms;

    if (status == NULL || status->version != TM_STATUS_VERSION || (buf == NULL && size > 0) ||
        (rcpts == NULL && nrcpts > 0))
        return TM_EINVAL;
    j.buf = buf;
    j.size = size;
    j.len = 0;

    puts_(&j, "{\"result\": \"");
    puts_(&j, tm_result_name(status->result));
    puts_(&j, "\", \"code\": ");
    put_int(&j, status->code);
    PUT_FIELD(&j, ", \"enhanced-code\": ", status->enhanced_code);
    PUT_FIELD(&j, ", \"message\": ", status->message);
    PUT_FIELD(&j, ", \"description\": ", status->description);
    puts_(&j, status->tls ? ", \"tls\": true" : ", \"tls\": false");
    puts_(&j, status->cert_verified ? ", \"certificate-verified\": true"
                                    : ", \"certificate-verified\": false");
    PUT_FIELD(&j, ", \"mx-host\": ", status->mx_host);
    PUT_FIELD(&j, ", \"mx-address\": ", status->mx_address);
    puts_(&j, ", \"mx-port\": ");
    put_int(&j, status->mx_port);
    PUT_FIELD(&j, ", \"tls-version\": ", status->tls_version);
    PUT_FIELD(&j, ", \"tls-cipher\": ", status->tls_cipher);
    PUT_FIELD(&j, ", \"tls-error\": ", status->tls_error);
    puts_(&j, status->tls_resumed ? ", \"tls-resumed\": true" : ", \"tls-resumed\": false");
    puts_(&j, ", \"dane\": \"");
    puts_(&j, tm_dane_name(status->dane));
    puts_(&j, "\"");
    PUT_FIELD(&j, ", \"dane-tlsa\": ", status->dane_tlsa);
    puts_(&j, status->mx_dnssec ? ", \"mx-dnssec\": true" : ", \"mx-dnssec\": false");
    puts_(&j, ", \"certificate-verified-by\": \"");
    puts_(&j, tm_verified_by_name(status->cert_verified_by));
    puts_(&j, "\", \"mta-sts\": \"");
    puts_(&j, tm_mta_sts_name(status->mta_sts));
    puts_(&j, "\"");
    PUT_FIELD(&j, ", \"mta-sts-id\": ", status->mta_sts_id);
    puts_(&j, status->mta_sts_cached ? ", \"mta-sts-cached\": true"
                                     : ", \"mta-sts-cached\": false");
    puts_(&j, status->mta_sts_would_refuse ? ", \"mta-sts-would-refuse\": true"
                                           : ", \"mta-sts-would-refuse\": false");
    PUT_FIELD(&j, ", \"mta-sts-error\": ", status->mta_sts_error);
    puts_(&j, ", \"attempt-no\": ");
    put_uint(&j, status->attempt_no);

    /* Integer arithmetic, not "%.3f": printf follows LC_NUMERIC, which the
     * host may have set to a decimal comma.  NaN, negative and absurd
     * values are clamped so the output stays JSON. */
    secs = status->session_seconds;
    if (!(secs >= 0.0))
        secs = 0.0;
    if (secs > 1e12)
        secs = 1e12;
    ms = (unsigned long long)(secs * 1000.0 + 0.5);
    puts_(&j, ", \"session-seconds\": ");
    put_uint(&j, ms / 1000);
    {
        char frac[4] = {'.', (char)('0' + ms % 1000 / 100), (char)('0' + ms % 100 / 10),
                        (char)('0' + ms % 10)};
        put(&j, frac, 4);
    }
    puts_(&j, status->utf8 ? ", \"utf8\": true" : ", \"utf8\": false");

    puts_(&j, TM_FLAG(status->policy.require_tls) ? ", \"policy\": {\"require-tls\": true"
                                                  : ", \"policy\": {\"require-tls\": false");
    puts_(&j, ", \"require-tls-from\": \"");
    puts_(&j, tm_policy_source_name(status->require_tls_source));
    puts_(&j, TM_FLAG(status->policy.skip_verify) ? "\", \"skip-verify\": true"
                                                  : "\", \"skip-verify\": false");
    puts_(&j, ", \"skip-verify-from\": \"");
    puts_(&j, tm_policy_source_name(status->skip_verify_source));
    puts_(&j, TM_FLAG(status->policy.keep_unverified_tls) ? "\", \"keep-unverified-tls\": true"
                                                          : "\", \"keep-unverified-tls\": false");
    puts_(&j, ", \"keep-unverified-tls-from\": \"");
    puts_(&j, tm_policy_source_name(status->keep_unverified_tls_source));
    puts_(&j, "\", \"recipient-floor\": \"");
    puts_(&j, tm_floor_name(status->floor));
    puts_(&j, "\"}");

    puts_(&j, ", \"recipient-counts\": {\"total\": ");
    put_uint(&j, status->rcpt_count);
    puts_(&j, ", \"delivered\": ");
    put_uint(&j, status->rcpt_delivered);
    puts_(&j, ", \"deferred\": ");
    put_uint(&j, status->rcpt_deferred);
    puts_(&j, ", \"uncertain\": ");
    put_uint(&j, status->rcpt_uncertain);
    puts_(&j, ", \"bounced\": ");
    put_uint(&j, status->rcpt_bounced);
    puts_(&j, "}, \"transactions\": ");
    put_uint(&j, status->transactions);

    puts_(&j, ", \"recipients\": [");
    for (i = 0; i < nrcpts; i++) {
        const tm_rcpt_status *r = &rcpts[i];

        PUT_FIELD(&j, i == 0 ? "{\"address\": " : ", {\"address\": ", r->address);
        puts_(&j, ", \"result\": \"");
        puts_(&j, tm_result_name(r->result));
        puts_(&j, "\", \"code\": ");
        put_int(&j, r->code);
        PUT_FIELD(&j, ", \"enhanced-code\": ", r->enhanced_code);
        PUT_FIELD(&j, ", \"message\": ", r->message);
        puts_(&j, "}");
    }
    puts_(&j, "]}");

    if (size > 0)
        buf[j.len < size ? j.len : size - 1] = '\0';
    return j.len > 0x7fffffff ? 0x7fffffff : (int)j.len;
}
