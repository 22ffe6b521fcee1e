/*
 * internal.h - private declarations shared by the files of lib/.
 *
 * Layout by concern:
 *   smtp.c    reply parser, capability table, command writer, addresses (no I/O)
 *   body.c    content encoder: CRLF normalisation, dot-stuffing (no I/O)
 *   policy.c  the policy truth table as a pure decision function
 *   status.c  status helpers, JSON writer, error and result names
 *   net.c     TCP connect/read/write with deadlines, the transport
 *   tls.c     everything mbedTLS (the only file that includes it)
 *   dns.c     host and MX resolution
 *   context.c the shared context, allocation hooks, logging
 *   session.c drives the dialogue over the transport
 */
#ifndef TM_INTERNAL_H
#define TM_INTERNAL_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsmail.h"

#if defined(__GNUC__)
#define TM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TM_PRINTF(a, b)
#endif

/* ---- allocation (context.c) -------------------------------------------
 * Every allocation of the library goes through these, so that tests can
 * fail the Nth one.  tm_test_alloc_fail_at(n): the nth allocation from now
 * on (1-based) and every later one fail; 0 disables.  Returns the number of
 * allocations counted since the last call. */
void *tm_calloc(size_t n, size_t size);
void tm_free(void *p);
char *tm_strdup(const char *s);
unsigned long tm_test_alloc_fail_at(unsigned long n);

/* ---- time ------------------------------------------------------------ */
/* Monotonic milliseconds. */
int64_t tm_now_ms(void);
/* now + ms, or INT64_MAX for ms == 0 ("no limit"). */
int64_t tm_deadline(unsigned int ms);

/* Bounded string copy that always terminates (dst size > 0). */
void tm_strlcpy(char *dst, const char *src, size_t size);
/* Same for a (ptr, len) source. */
void tm_strlcpyn(char *dst, size_t size, const char *src, size_t len);

/* ---- SMTP replies (smtp.c) ------------------------------------------- */

#define TM_REPLY_LINE_MAX 4096  /* longest reply line accepted, CRLF included */
#define TM_REPLY_LINES_MAX 128  /* most lines in one multi-line reply */
#define TM_REPLY_TEXT_MAX 4096  /* text kept, lines joined with '\n' */

typedef struct tm_reply {
    int code;                          /* 0 until the first line is parsed */
    char enhanced[TM_ENHANCED_MAX];    /* from the first line, if valid */
    char text[TM_REPLY_TEXT_MAX];      /* line texts (after "250-"), '\n'-joined */
    size_t text_len;
    unsigned int lines;
} tm_reply;

void tm_reply_reset(tm_reply *r);

/*
 * Parses reply lines from buf[0..len).  Lines end in CRLF or a bare LF.
 * Returns 1 when a whole reply has been parsed (*used = bytes consumed,
 * through the end of its last line; the rest of buf is not touched),
 * 0 when more bytes are needed (*used = bytes of the complete lines
 * consumed; the caller drops them and calls again with more), or
 * TM_EPROTOCOL for a malformed reply: a line of TM_REPLY_LINE_MAX bytes or
 * more without LF, fewer than 3 digits, a code outside 200-599 (first digit
 * 2-5, second 0-5), a 4th character other than ' ', '-' or end of line,
 * a code differing from the first line's, a NUL byte, more than
 * TM_REPLY_LINES_MAX lines.  r keeps its state across calls; reset it with
 * tm_reply_reset() before each new reply.
 */
int tm_reply_parse(tm_reply *r, const char *buf, size_t len, size_t *used);

/* Capabilities from an EHLO reply. */
enum {
    TM_CAP_STARTTLS = 1u << 0,
    TM_CAP_PIPELINING = 1u << 1,
    TM_CAP_SIZE = 1u << 2,
    TM_CAP_8BITMIME = 1u << 3,
    TM_CAP_SMTPUTF8 = 1u << 4,
    TM_CAP_CHUNKING = 1u << 5,
    TM_CAP_ENHANCEDSTATUSCODES = 1u << 6
};

typedef struct tm_caps {
    unsigned int flags;
    unsigned long size_limit; /* SIZE argument, 0 = none or unlimited */
} tm_caps;

/* Fills caps from a parsed 250 EHLO reply (the first line is the greeting
 * name and is skipped).  Keywords are matched case-insensitively. */
void tm_caps_parse(tm_caps *caps, const tm_reply *ehlo);

/* Length of one well-formed UTF-8 sequence of 2 to 4 bytes at s (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
size_t tm_utf8_seq(const unsigned char *s, size_t len);

/* Address checks, before anything is written.  Returns TM_OK or
 * TM_EADDRESS.  is_sender allows "" (null reverse-path).  Sets *non_ascii
 * when the address needs SMTPUTF8. */
int tm_address_check(const char *addr, int is_sender, int *non_ascii);
/* The domain part of an address (after the last '@'), or NULL. */
const char *tm_address_domain(const char *addr);
/* Case-insensitive domain comparison, a trailing dot ignored. */
int tm_domain_equal(const char *a, const char *b);
/* A host name announced in EHLO, or used as MX name: printable, no space. */
int tm_name_check(const char *name);

/* ---- content encoder (body.c) ---------------------------------------- */

#define TM_BODY_LINE_MAX 998

typedef struct tm_body {
    size_t line_len; /* octets already written on the current line */
    int at_bol;      /* at the beginning of a line */
    int pending_cr;  /* last input byte was a CR not yet written */
    int raw;         /* BDAT (RFC 3030): no dot-stuffing, no final dot */
} tm_body;

void tm_body_init(tm_body *b);

/*
 * Encodes in[0..inlen) into out[0..outcap): bare CR and bare LF become
 * CRLF, a '.' at the start of a line is doubled, a line reaching
 * TM_BODY_LINE_MAX octets is broken with CRLF SP.  Stops when all input is
 * consumed or out has fewer than 4 bytes left.  Sets *consumed and
 * *produced.  Returns TM_OK, or TM_ECONTENT at a NUL byte (*consumed
 * then points at it).  outcap must be at least 4.
 */
int tm_body_encode(tm_body *b, const unsigned char *in, size_t inlen, size_t *consumed,
                   unsigned char *out, size_t outcap, size_t *produced);

/* Writes the end of data: CRLF if the last line is open, then ".\r\n"
 * (in raw mode only the CRLF).  Keeps the mode, resets the rest.
 * Returns the bytes written; out needs TM_BODY_FINISH_MAX bytes. */
#define TM_BODY_FINISH_MAX 5
size_t tm_body_finish(tm_body *b, unsigned char *out);

/* ---- policy (policy.c) ----------------------------------------------- */

/* What happened when TLS was attempted on one connection. */
typedef enum tm_tls_event {
    TM_EV_NOT_OFFERED,   /* no STARTTLS in EHLO */
    TM_EV_REFUSED,       /* STARTTLS answered other than 220 */
    TM_EV_HANDSHAKE,     /* handshake failed, or bytes followed the 220 */
    TM_EV_CERT_INVALID,  /* handshake done, verification failed */
    TM_EV_CERT_VALID     /* handshake done, verified */
} tm_tls_event;

/* What the session does next. */
typedef enum tm_tls_action {
    TM_ACT_USE_TLS,        /* send over this TLS connection */
    TM_ACT_PLAIN_SAME,     /* continue in plaintext on this connection */
    TM_ACT_PLAIN_NEW,      /* close; new plaintext connection, same address, no STARTTLS */
    TM_ACT_NEXT_MX         /* QUIT; this MX does not satisfy the policy */
} tm_tls_action;

/* A policy resolved for one delivery: flags 0/1, where each came from
 * (tm_policy_source), and the recipient floor that applied. */
typedef struct tm_resolved {
    tm_policy policy;
    int require_tls_source, skip_verify_source, keep_unverified_tls_source;
    int floor;
} tm_resolved;

/* Resolves flag by flag: message if set (!= 0), else domain if set, else
 * off; then the floor forces require_tls on (TM_FLOOR_TLS, VERIFIED) and
 * skip_verify off (VERIFIED).  message and domain may be NULL. */
void tm_policy_resolve(const tm_policy *message, const tm_policy *domain, int floor,
                       tm_resolved *out);

/* The truth table of DESIGN.md.  policy may be NULL (defaults). */
tm_tls_action tm_policy_decide(const tm_policy *policy, tm_tls_event event);
/* Flag value helper: > 0 is on. */
#define TM_FLAG(x) ((x) > 0)

/* ---- status (status.c) ----------------------------------------------- */

/* Result class of an SMTP reply code: 2xx delivered, 4xx deferred, 5xx
 * bounced, anything else deferred. */
int tm_result_of_code(int code);
/* Copies a reply into status code / enhanced_code / message. */
void tm_status_set_reply(tm_delivery_status *st, const tm_reply *r);
void tm_status_describe(tm_delivery_status *st, const char *fmt, ...) TM_PRINTF(2, 3);

/* ---- context (context.c) --------------------------------------------- */

struct tm_tls_config;

typedef struct tm_timeouts {
    unsigned int connect, greeting, ehlo, tls, mail, rcpt, data, data_block, data_end, quit,
        delivery;
} tm_timeouts;

/* One entry of the settings tables (settings.c). */
typedef struct tm_setting {
    char name[TM_HOST_MAX]; /* normalised: lower case, no trailing dot */
    int recipient;          /* 0: sending-domain policy, 1: recipient floor */
    tm_policy policy;
    int floor;
} tm_setting;

struct tm_context {
    char helo_name[TM_HOST_MAX];
    unsigned int port;
    tm_timeouts to;
    unsigned int max_mx, max_addresses;
    int have_dns_server;
    struct sockaddr_storage dns_server; /* with port */
    socklen_t dns_server_len;
    tm_log_fn log;
    void *log_arg;
    int log_level;
    struct tm_tls_config *tls;
    /* Settings tables: sorted by (recipient, name), guarded by the lock. */
    pthread_rwlock_t settings_lock;
    tm_setting *settings;
    size_t nsettings, capsettings;
};

/* Looks up, under one read lock, the sending domain's policy (sets
 * *have_domain) and the recipient domain's floor, and resolves them with
 * the message policy.  sending_domain / recipient_domain may be NULL. */
void tm_settings_resolve(tm_context *ctx, const tm_policy *message, const char *sending_domain,
                         const char *recipient_domain, tm_resolved *out);
void tm_settings_free(tm_context *ctx);
/* Parses the settings file format into a private table (tm_free(*tab)
 * after use).  TM_OK, TM_ESYNTAX with *error_line set, TM_ENOMEM. */
int tm_settings_parse(const char *text, size_t len, tm_setting **tab, size_t *n, size_t *cap,
                      int *error_line);

void tm_log(const tm_context *ctx, int level, const char *fmt, ...) TM_PRINTF(3, 4);

/* ---- transport (net.c) ----------------------------------------------- */

struct tm_tls;

/* One connection: a socket, optionally wrapped in TLS. */
typedef struct tm_conn {
    int fd;               /* -1 when closed */
    struct tm_tls *tls;   /* the session's TLS state, reused across connections */
    int tls_active;       /* reads and writes go through TLS */
} tm_conn;

/* Connects a non-blocking TCP socket with TCP_NODELAY before deadline.
 * Returns TM_OK and *fd, or TM_ECONNECT / TM_ETIMEOUT / TM_ENOMEM. */
int tm_net_connect(const struct sockaddr *sa, socklen_t salen, int64_t deadline, int *fd);
/* Reads at least one byte (up to size).  Returns the count, or TM_ECLOSED
 * at EOF, TM_ETIMEOUT, TM_EIO, TM_ETLS. */
long tm_conn_read(tm_conn *c, void *buf, size_t size, int64_t deadline);
/* Writes everything before deadline.  TM_OK, TM_ETIMEOUT, TM_ECLOSED,
 * TM_EIO, TM_ETLS. */
int tm_conn_write(tm_conn *c, const void *buf, size_t len, int64_t deadline);
/* True when bytes are already waiting on the socket (not yet read). */
int tm_net_pending(int fd);
/* Closes the socket (TLS close_notify first when active, best effort). */
void tm_conn_close(tm_conn *c);
/* Formats an address as text (no port). */
void tm_net_ntop(const struct sockaddr *sa, char *buf, size_t size);
/* Parses "IP", "IP:PORT", "[IPv6]:PORT"; default_port when absent. */
int tm_net_parse_addr(const char *text, unsigned int default_port, struct sockaddr_storage *ss,
                      socklen_t *len);

/* ---- TLS (tls.c) ----------------------------------------------------- */

/* Parses the trust store and prepares one shared client configuration. */
int tm_tls_config_new(struct tm_tls_config **out, const char *ca_file, char *err, size_t errlen);
void tm_tls_config_free(struct tm_tls_config *cfg);

/* Per-session TLS state; allocated once, reused for each connection. */
int tm_tls_new(struct tm_tls **out, struct tm_tls_config *cfg);
void tm_tls_free(struct tm_tls *t);

/*
 * Runs the handshake over the connected socket fd, with SNI and name check
 * against hostname (NULL: none).  Returns TM_OK when the handshake
 * completed (whatever the certificate), TM_ETLS / TM_ETIMEOUT / TM_ECLOSED
 * otherwise with err set.  After TM_OK, tm_tls_verified() says whether the
 * certificate verified and tm_tls_verify_error() why not.
 */
int tm_tls_handshake(struct tm_tls *t, int fd, const char *hostname, const char *cache_key,
                     int64_t deadline, char *err, size_t errlen);
/* Session resumption: cache_key (host, address, port, policy) selects a
 * cached session to offer; tm_tls_cache_save() stores this connection's
 * session once the session decided to keep it (TLS 1.2; TLS 1.3 stores at
 * shutdown, when its tickets have arrived); tm_tls_cache_drop() forgets the
 * key after a failure.  tm_tls_resumed(): a cached session was offered. */
void tm_tls_cache_save(struct tm_tls *t);
void tm_tls_cache_drop(struct tm_tls *t);
int tm_tls_resumed(const struct tm_tls *t);
int tm_tls_verified(const struct tm_tls *t);
void tm_tls_verify_error(const struct tm_tls *t, char *buf, size_t size);
const char *tm_tls_version(const struct tm_tls *t);
const char *tm_tls_cipher(const struct tm_tls *t);
long tm_tls_read(struct tm_tls *t, void *buf, size_t size, int64_t deadline);
int tm_tls_write(struct tm_tls *t, const void *buf, size_t len, int64_t deadline);
/* Sends close_notify without waiting (best effort) and forgets the
 * connection so the state can serve the next one. */
void tm_tls_shutdown(struct tm_tls *t);
/* Bytes already decrypted and buffered inside the TLS engine. */
size_t tm_tls_pending(const struct tm_tls *t);
const char *tm_tls_backend_name(void);
/* Fills buf from the context's random generator (thread-safe). */
int tm_tls_random(struct tm_tls_config *cfg, void *buf, size_t len);

/* ---- DNS (dns.c) ----------------------------------------------------- */

#define TM_MX_MAX 16
#define TM_ADDR_MAX 8

typedef struct tm_mx {
    char host[TM_HOST_MAX];
    unsigned int pref;
} tm_mx;

typedef struct tm_addr {
    struct sockaddr_storage sa;
    socklen_t len;
} tm_addr;

/* Resolves host (a name or an IP literal) to at most max usable addresses
 * (IPv4 first, then IPv6; 0.0.0.0, ::, broadcast and multicast skipped),
 * with the given port.  Uses the context's DNS server when it names one,
 * else the system resolver (getaddrinfo).  Returns the count (> 0), 0 when
 * the name has no usable address, or TM_EDNS / TM_ENOMEM. */
int tm_dns_host(const tm_context *ctx, const char *host, unsigned int port, tm_addr *out, int max,
                int64_t deadline);

/*
 * Finds the MX hosts of domain (RFC 5321 section 5.1): sorted by
 * preference, equal preferences shuffled, at most max.  No MX records: the
 * domain itself (implicit MX).  Returns the count (> 0), or TM_ENULLMX (null
 * MX, RFC 7505; st gets 5.1.10), TM_ENODOMAIN (NXDOMAIN), TM_EDNS (SERVFAIL,
 * timeout, malformed answer: never an A-record fallback), TM_ENOMEM.
 * st may be NULL; on failure it gets a description.
 */
int tm_dns_mx(const tm_context *ctx, const char *domain, tm_mx *out, int max, int64_t deadline,
              tm_delivery_status *st);

/*
 * Pure parsers of DNS answers (no I/O), used by the above and by the tests.
 * tm_dns_parse_mx: the MX records in the answer section of msg[0..len).
 * Returns how many were stored (at most max, unsorted), sets *null_mx when
 * a null MX ("MX 0 .") was seen (it is not stored), or TM_EDNS when the
 * message is malformed (bad lengths, compression loops, names too long).
 * tm_dns_parse_addr: the A (type 1) or AAAA (type 28) records, with port;
 * unusable addresses skipped.  Same returns.
 */
int tm_dns_parse_mx(const unsigned char *msg, int len, tm_mx *out, int max, int *null_mx);
int tm_dns_parse_addr(const unsigned char *msg, int len, int type, unsigned int port, tm_addr *out,
                      int max);

#endif
