/*
 * status.c - error and result names, struct initialisers and sizes, the
 * delivery-status helpers and its JSON writer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

TM_EXTERN const char *tm_version(void)
{
    return TM_VERSION_STRING;
}

TM_EXTERN unsigned int tm_version_number(void)
{
    return TM_VERSION_NUMBER;
}

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

int tm_result_of_code(int code)
{
    if (code >= 200 && code <= 299)
        return TM_RESULT_DELIVERED;
    if (code >= 500 && code <= 599)
        return TM_RESULT_BOUNCED;
    return TM_RESULT_DEFERRED;
}

/* ------------------------------------------------------------------------
 * Initialisers and sizes (for callers that cannot expand the macros)
 * ---------------------------------------------------------------------- */

TM_EXTERN int tm_policy_init(tm_policy *policy)
{
    const tm_policy init = TM_POLICY_INIT;

    if (policy == NULL)
        return TM_EINVAL;
    memset(policy, 0, sizeof(*policy)); /* padding too: bindings may compare bytes */
    *policy = init;
    return TM_OK;
}

TM_EXTERN int tm_status_init(tm_delivery_status *status)
{
    if (status == NULL)
        return TM_EINVAL;
    memset(status, 0, sizeof(*status));
    status->version = TM_STATUS_VERSION;
    status->result = TM_RESULT_NONE;
    status->policy.version = TM_POLICY_VERSION;
    return TM_OK;
}

TM_EXTERN int tm_message_init(tm_message *message)
{
    const tm_message init = TM_MESSAGE_INIT;

    if (message == NULL)
        return TM_EINVAL;
    memset(message, 0, sizeof(*message)); /* padding too: bindings may compare bytes */
    *message = init;
    return TM_OK;
}

TM_EXTERN int tm_session_options_init(tm_session_options *options)
{
    const tm_session_options init = TM_SESSION_OPTIONS_INIT;

    if (options == NULL)
        return TM_EINVAL;
    memset(options, 0, sizeof(*options)); /* padding too: bindings may compare bytes */
    *options = init;
    return TM_OK;
}

TM_EXTERN int tm_context_options_init(tm_context_options *options)
{
    const tm_context_options init = TM_CONTEXT_OPTIONS_INIT;

    if (options == NULL)
        return TM_EINVAL;
    memset(options, 0, sizeof(*options)); /* padding too: bindings may compare bytes */
    *options = init;
    return TM_OK;
}

TM_EXTERN size_t tm_status_size(void)
{
    return sizeof(tm_delivery_status);
}

TM_EXTERN size_t tm_policy_size(void)
{
    return sizeof(tm_policy);
}

TM_EXTERN size_t tm_message_size(void)
{
    return sizeof(tm_message);
}

TM_EXTERN size_t tm_context_options_size(void)
{
    return sizeof(tm_context_options);
}

TM_EXTERN size_t tm_session_options_size(void)
{
    return sizeof(tm_session_options);
}

/* ------------------------------------------------------------------------
 * Strings
 * ---------------------------------------------------------------------- */

void tm_strlcpyn(char *dst, size_t size, const char *src, size_t len)
{
    if (dst == NULL || size == 0)
        return;
    if (src == NULL)
        len = 0;
    if (len > size - 1)
        len = size - 1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

void tm_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = 0;

    if (src != NULL)
        while (len < size && src[len] != '\0')
            len++;
    tm_strlcpyn(dst, size, src, len);
}

/* ------------------------------------------------------------------------
 * Status helpers
 * ---------------------------------------------------------------------- */

void tm_status_set_reply(tm_delivery_status *st, const tm_reply *r)
{
    size_t i, o = 0;

    if (st == NULL)
        return;
    st->code = 0;
    st->enhanced_code[0] = '\0';
    st->message[0] = '\0';
    if (r == NULL)
        return;
    st->code = r->code;
    tm_strlcpy(st->enhanced_code, r->enhanced, sizeof(st->enhanced_code));
    /* The lines of a multi-line reply joined with " / ": one line of text
     * for logs and JSON, their boundaries still visible. */
    for (i = 0; i < r->text_len && i < sizeof(r->text) && r->text[i] != '\0'; i++) {
        if (r->text[i] == '\n') {
            if (o + 3 >= sizeof(st->message))
                break;
            memcpy(st->message + o, " / ", 3);
            o += 3;
        } else {
            if (o + 1 >= sizeof(st->message))
                break;
            st->message[o++] = r->text[i];
        }
    }
    st->message[o] = '\0';
}

void tm_status_describe(tm_delivery_status *st, const char *fmt, ...)
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
        } else if ((n = tm_utf8_seq(s + i, len - i)) != 0) {
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

TM_EXTERN int tm_status_json(const tm_delivery_status *status, char *buf, size_t size)
{
    json_out j;
    unsigned int n, i;
    double secs;
    unsigned long long ms;

    if (status == NULL || (buf == NULL && size > 0))
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

    puts_(&j, ", \"recipients\": [");
    n = status->rcpt_count < TM_MAX_RECIPIENTS ? status->rcpt_count : TM_MAX_RECIPIENTS;
    for (i = 0; i < n; i++) {
        const tm_rcpt_status *r = &status->rcpt[i];

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
