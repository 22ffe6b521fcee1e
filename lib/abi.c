/*
 * abi.c - tm_abi_layout(): the layout of the public structs as compiled.
 *
 * Offsets are not preprocessor constants, so the text cannot be one string
 * literal; it is formatted once from a constant table into a static buffer
 * (pthread_once: thread-safe, no allocation).  The buffer's size is a
 * compile-time bound derived from the table, so the text is never cut.
 * tests/abi/ checks the text against the header's struct bodies (a field
 * added to the header and not to the table fails there).
 */
#include <pthread.h>
#include <stddef.h>

#include "internal.h"

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
