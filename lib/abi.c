/*
 * abi.c - the public structs as an ABI: the library's version, the struct
 * version rules, initialisers and sizes, and tm_abi_layout(), their layout
 * as compiled.
 *
 * Each struct grows only at its end; the size of each version is what a
 * caller compiled against it has.  A struct of an older version is copied
 * into a current one (the rest zero) before it is read.
 *
 * For the layout: offsets are not preprocessor constants, so the text cannot be one string
 * literal; it is formatted once from a constant table into a static buffer
 * (pthread_once: thread-safe, no allocation).  The buffer's size is a
 * compile-time bound derived from the table, so the text is never cut.
 * tests/abi/ checks the text against the header's struct bodies (a field
 * added to the header and not to the table fails there).
 */
#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"

/* ---- versions ------------------------------------------------------------ */

TM_EXTERN const char *tm_version(void)
{
    return TM_VERSION_STRING;
}

TM_EXTERN unsigned int tm_version_number(void)
{
    return TM_VERSION_NUMBER;
}

int tm__version_ok(unsigned int version, unsigned int current)
{
    return version > 0 && version <= current ? TM_OK : TM_EINVAL;
}

int tm__policy_check(const tm_policy *p)
{
    /* The design's first rule: an all-zero policy is the default one, so
     * version 0 reads as version 1 (never as "current"). */
    if (p == NULL || p->version == 0)
        return TM_OK;
    return tm__version_ok(p->version, TM_POLICY_VERSION);
}

static size_t message_size(unsigned int version)
{
    return version == 1 ? offsetof(tm_message, rcpt_status) : sizeof(tm_message);
}

int tm__message_copy(tm_message *dst, const tm_message *src)
{
    if (src == NULL || tm__version_ok(src->version, TM_MESSAGE_VERSION) != TM_OK)
        return TM_EINVAL;
    memset(dst, 0, sizeof(*dst));
    memcpy(dst, src, message_size(src->version));
    return TM_OK;
}

TM_EXTERN int tm_policy_init(tm_policy *policy, unsigned int version)
{
    if (policy == NULL || tm__version_ok(version, TM_POLICY_VERSION) != TM_OK)
        return TM_EINVAL;
    memset(policy, 0, sizeof(*policy)); /* padding too: bindings may compare bytes */
    policy->version = version;
    return TM_OK;
}

TM_EXTERN int tm_status_init(tm_delivery_status *status, unsigned int version)
{
    /* Version 1 was the 0.1 layout, with the recipients inside: gone. */
    if (status == NULL || version != TM_STATUS_VERSION)
        return TM_EINVAL;
    status->version = version;
    return tm__status_reset(status);
}

TM_EXTERN int tm_message_init(tm_message *message, unsigned int version)
{
    if (message == NULL || tm__version_ok(version, TM_MESSAGE_VERSION) != TM_OK)
        return TM_EINVAL;
    memset(message, 0, message_size(version));
    message->version = version;
    return TM_OK;
}

TM_EXTERN int tm_session_options_init(tm_session_options *options, unsigned int version)
{
    if (options == NULL || tm__version_ok(version, TM_SESSION_OPTIONS_VERSION) != TM_OK)
        return TM_EINVAL;
    memset(options, 0, sizeof(*options));
    options->version = version;
    return TM_OK;
}

TM_EXTERN int tm_context_options_init(tm_context_options *options, unsigned int version)
{
    if (options == NULL || tm__version_ok(version, TM_CONTEXT_OPTIONS_VERSION) != TM_OK)
        return TM_EINVAL;
    /* Version 1 ends before ca_path. */
    memset(options, 0, version == 1 ? offsetof(tm_context_options, ca_path) : sizeof(*options));
    options->version = version;
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

/* ---- the layout ---------------------------------------------------------- */

/* Longest struct or field name, NUL included: a longer name does not
 * compile (a char array initialised from a longer literal). */
#define ABI_NAME_MAX 32

typedef struct abi_entry {
    char name[ABI_NAME_MAX];
    int is_struct; /* 1: starts a line (name size); 0: a field (offset, size) */
    size_t offset;
    size_t size;
} abi_entry;

#define STRUCT(T) { #T, 1, 0, sizeof(T) }
#define FIELD(T, f) { #f, 0, offsetof(T, f), sizeof(((T *)0)->f) }

static const abi_entry abi_table[] = {
    STRUCT(tm_policy),
    FIELD(tm_policy, version),
    FIELD(tm_policy, require_tls),
    FIELD(tm_policy, skip_verify),
    FIELD(tm_policy, keep_unverified_tls),

    STRUCT(tm_rcpt_status),
    FIELD(tm_rcpt_status, address),
    FIELD(tm_rcpt_status, result),
    FIELD(tm_rcpt_status, code),
    FIELD(tm_rcpt_status, enhanced_code),
    FIELD(tm_rcpt_status, message),

    STRUCT(tm_delivery_status),
    FIELD(tm_delivery_status, version),
    FIELD(tm_delivery_status, result),
    FIELD(tm_delivery_status, error),
    FIELD(tm_delivery_status, code),
    FIELD(tm_delivery_status, enhanced_code),
    FIELD(tm_delivery_status, message),
    FIELD(tm_delivery_status, description),
    FIELD(tm_delivery_status, tls),
    FIELD(tm_delivery_status, cert_verified),
    FIELD(tm_delivery_status, tls_failure),
    FIELD(tm_delivery_status, tls_version),
    FIELD(tm_delivery_status, tls_cipher),
    FIELD(tm_delivery_status, tls_error),
    FIELD(tm_delivery_status, mx_host),
    FIELD(tm_delivery_status, mx_address),
    FIELD(tm_delivery_status, mx_port),
    FIELD(tm_delivery_status, attempt_no),
    FIELD(tm_delivery_status, session_seconds),
    FIELD(tm_delivery_status, utf8),
    FIELD(tm_delivery_status, policy),
    FIELD(tm_delivery_status, require_tls_source),
    FIELD(tm_delivery_status, skip_verify_source),
    FIELD(tm_delivery_status, keep_unverified_tls_source),
    FIELD(tm_delivery_status, floor),
    FIELD(tm_delivery_status, rcpt_count),
    FIELD(tm_delivery_status, rcpt_delivered),
    FIELD(tm_delivery_status, rcpt_deferred),
    FIELD(tm_delivery_status, rcpt_uncertain),
    FIELD(tm_delivery_status, rcpt_bounced),
    FIELD(tm_delivery_status, transactions),
    FIELD(tm_delivery_status, tls_resumed),
    FIELD(tm_delivery_status, dane),
    FIELD(tm_delivery_status, mx_dnssec),
    FIELD(tm_delivery_status, cert_verified_by),
    FIELD(tm_delivery_status, dane_tlsa),
    FIELD(tm_delivery_status, mta_sts),
    FIELD(tm_delivery_status, mta_sts_id),
    FIELD(tm_delivery_status, mta_sts_cached),
    FIELD(tm_delivery_status, mta_sts_would_refuse),
    FIELD(tm_delivery_status, mta_sts_error),

    STRUCT(tm_context_options),
    FIELD(tm_context_options, version),
    FIELD(tm_context_options, ca_file),
    FIELD(tm_context_options, helo_name),
    FIELD(tm_context_options, dns_server),
    FIELD(tm_context_options, port),
    FIELD(tm_context_options, command_timeout_ms),
    FIELD(tm_context_options, connect_timeout_ms),
    FIELD(tm_context_options, greeting_timeout_ms),
    FIELD(tm_context_options, ehlo_timeout_ms),
    FIELD(tm_context_options, tls_timeout_ms),
    FIELD(tm_context_options, mail_timeout_ms),
    FIELD(tm_context_options, rcpt_timeout_ms),
    FIELD(tm_context_options, data_timeout_ms),
    FIELD(tm_context_options, data_block_timeout_ms),
    FIELD(tm_context_options, data_end_timeout_ms),
    FIELD(tm_context_options, quit_timeout_ms),
    FIELD(tm_context_options, delivery_timeout_ms),
    FIELD(tm_context_options, max_mx),
    FIELD(tm_context_options, max_addresses),
    FIELD(tm_context_options, log),
    FIELD(tm_context_options, log_arg),
    FIELD(tm_context_options, log_level),
    FIELD(tm_context_options, ca_path),
    FIELD(tm_context_options, dnssec_resolver),
    FIELD(tm_context_options, dnssec_trust_resolver),
    FIELD(tm_context_options, dane),
    FIELD(tm_context_options, mta_sts),
    FIELD(tm_context_options, sts_fetch),
    FIELD(tm_context_options, sts_fetch_arg),
    FIELD(tm_context_options, sts_store),
    FIELD(tm_context_options, sts_lookup),
    FIELD(tm_context_options, sts_cache_arg),
    FIELD(tm_context_options, sts_cache_max),
    FIELD(tm_context_options, sts_timeout_ms),
    FIELD(tm_context_options, sts_https_address),
    FIELD(tm_context_options, sts_https_port),

    STRUCT(tm_message),
    FIELD(tm_message, version),
    FIELD(tm_message, from),
    FIELD(tm_message, to),
    FIELD(tm_message, to_count),
    FIELD(tm_message, data),
    FIELD(tm_message, size),
    FIELD(tm_message, read),
    FIELD(tm_message, read_arg),
    FIELD(tm_message, sending_domain),
    FIELD(tm_message, rcpt_status),
    FIELD(tm_message, rcpt_status_cap),

    STRUCT(tm_session_options),
    FIELD(tm_session_options, version),
    FIELD(tm_session_options, host),
    FIELD(tm_session_options, port),
};

#define ABI_ENTRIES (sizeof(abi_table) / sizeof(abi_table[0]))
/* Per entry at most: the name, two numbers of at most 20 digits, '@', ':'
 * and a separator (' ' or '\n'); plus the final NUL. */
#define ABI_TEXT_MAX (ABI_ENTRIES * (ABI_NAME_MAX + 2 * 20 + 3) + 1)

static char abi_text[ABI_TEXT_MAX];
static pthread_once_t abi_once = PTHREAD_ONCE_INIT;

static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_num(char *p, size_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* Does entry a come before entry b (by offset, then by table order)? */
static int before(size_t a, size_t b)
{
    return abi_table[a].offset < abi_table[b].offset ||
           (abi_table[a].offset == abi_table[b].offset && a < b);
}

/* Fields go out by increasing offset, which C makes the declaration order:
 * a field moved in the header moves in the text without an edit here. */
static char *put_fields(char *p, size_t first, size_t end)
{
    size_t done, i, last = 0;
    for (done = 0; done < end - first; done++) {
        size_t next = end;
        for (i = first; i < end; i++)
            if ((done == 0 || before(last, i)) && (next == end || before(i, next)))
                next = i;
        last = next;
        *p++ = ' ';
        p = put_str(p, abi_table[next].name);
        *p++ = '@';
        p = put_num(p, abi_table[next].offset);
        *p++ = ':';
        p = put_num(p, abi_table[next].size);
    }
    return p;
}

static void abi_build(void)
{
    char *p = abi_text;
    size_t i = 0;
    while (i < ABI_ENTRIES) {
        size_t end = i + 1;
        while (end < ABI_ENTRIES && !abi_table[end].is_struct)
            end++;
        p = put_str(p, abi_table[i].name);
        *p++ = ' ';
        p = put_num(p, abi_table[i].size);
        p = put_fields(p, i + 1, end);
        *p++ = '\n';
        i = end;
    }
    *p = '\0';
}

TM_EXTERN const char *tm_abi_layout(void)
{
    /* pthread_once cannot fail with a valid once object; should it ever,
     * the buffer is still a valid (empty) string. */
    (void)pthread_once(&abi_once, abi_build);
    return abi_text;
}
