/*
 * internal.h - private declarations shared by the files of lib/.
 *
 * Files by concern; a file calls files of its own floor or below, never above,
 * and no two files call each other (no cycles):
 *
 *   0  util.c      allocation hook, monotonic clock, bounded string copies,
 *                  the log call, small files read whole and written atomically
 *   1  smtp.c      reply parser, capabilities, address and name checks
 *      body.c      content encoder: CRLF normalisation, dot-stuffing
 *      policy.c    the policy truth table and flag resolution, pure
 *      sts.c       MTA-STS TXT record, policy text, MX patterns, pure
 *      sts_cache.c MTA-STS policies by domain, their text form, pure
 *   2  status.c    the one writer of the public tm_delivery_status and
 *                  tm_rcpt_status, its JSON form; names of results, errors,
 *                  sources, floors
 *      net.c       the socket transport: the only poll/recv/send
 *      tls.c       the TLS transport over an inner transport: the only file
 *                  that includes mbedTLS
 *   3  client.c    the SMTP client engine: bytes in, bytes out, no I/O
 *      driver.c    the blocking loop that moves bytes between the engine
 *                  and a transport
 *      dns.c       MX and address resolution (libresolv)
 *      settings.c  per-domain settings tables and their file format
 *      abi.c       the library's version; struct versions, initialisers,
 *                  sizes; tm_abi_layout, the structs' layout for bindings
 *   4  mx.c        the MX and address walk, and the fail-over rules
 *      sts_fetch.c the MTA-STS policy fetch over HTTPS
 *      context.c   the shared context
 *   5  connect.c   a session's connection: the walk, STARTTLS under the policy
 *      session.c   the public entry points: open, STARTTLS, send, deliver
 *
 * Every internal function is named tm__*: the installed libraries export
 * only the public tm_* API, and no internal name can meet a user's.
 */
#ifndef TM_INTERNAL_H
#define TM_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsmail.h"

#if defined(__GNUC__)
#define TM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TM_PRINTF(a, b)
#endif

/* ======================================================================
 * Floor 0: util.c
 * ==================================================================== */

/* Every allocation of the library goes through these, so that tests can
 * fail the Nth one.  tm__test_alloc_fail_at(n): the nth allocation from
 * now on (1-based) and every later one fail; 0 disables.  Returns the
 * number of allocations counted since the last call. */
void *tm__calloc(size_t n, size_t size);
void tm__free(void *p);
unsigned long tm__test_alloc_fail_at(unsigned long n);

/* A whole file into *text (tm__free it; NUL-terminated when not empty),
 * at most max bytes: TM_OK, TM_EIO (unreadable, or larger than max),
 * TM_ENOMEM. */
int tm__file_read(const char *path, size_t max, char **text, size_t *len);
/* header then text into path, atomically: a temporary file beside it,
 * fsync, rename.  TM_OK, TM_EIO, TM_EINVAL (path too long). */
int tm__file_write_atomic(const char *path, const char *header, const char *text);

/* Monotonic milliseconds; now + ms, or INT64_MAX for ms == 0 (no limit). */
int64_t tm__now_ms(void);
/* Wall-clock seconds since the epoch (what outlives the process: cache
 * expiry). */
int64_t tm__now_unix(void);
int64_t tm__deadline(unsigned int ms);
/* The earlier of two deadlines. */
int64_t tm__min_deadline(int64_t a, int64_t b);

/* Bounded string copies that always terminate (dst size > 0). */
void tm__strlcpy(char *dst, const char *src, size_t size);
void tm__strlcpyn(char *dst, size_t size, const char *src, size_t len);

/* The host's log callback, when set and level is within its level. */
void tm__log(const tm_context *ctx, int level, const char *fmt, ...) TM_PRINTF(3, 4);

/* ======================================================================
 * Floor 1: smtp.c - replies, capabilities, addresses (pure)
 * ==================================================================== */

#define TM_REPLY_LINE_MAX 4096  /* longest reply line accepted, CRLF included */
#define TM_REPLY_LINES_MAX 128  /* most lines in one multi-line reply */
#define TM_REPLY_TEXT_MAX 4096  /* text kept, lines joined with '\n' */

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

typedef struct tm_reply {
    int code;                          /* 0 until the first line is parsed */
    char enhanced[TM_ENHANCED_MAX];    /* from the first line, if valid */
    char text[TM_REPLY_TEXT_MAX];      /* line texts (after "250-"), '\n'-joined,
                                          cut at TM_REPLY_TEXT_MAX - 1 */
    size_t text_len;
    unsigned int lines;
    /* Keywords of every line after the first, gathered line by line as
     * the lines arrive, so a reply longer than text[] loses none. */
    tm_caps caps;
} tm_reply;

void tm__reply_reset(tm_reply *r);

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
 * tm__reply_reset() before each new reply.
 */
int tm__reply_parse(tm_reply *r, const char *buf, size_t len, size_t *used);

/* The capabilities of a parsed EHLO reply: those gathered while parsing
 * when its code is 250, none otherwise. */
void tm__caps_parse(tm_caps *caps, const tm_reply *ehlo);

/* Length of one well-formed UTF-8 sequence of 2 to 4 bytes at s (RFC 3629:
 * no overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
size_t tm__utf8_seq(const unsigned char *s, size_t len);

/* Address checks, before anything is written.  Returns TM_OK or
 * TM_EADDRESS.  is_sender allows "" (null reverse-path).  Sets *non_ascii
 * when the address needs SMTPUTF8. */
int tm__address_check(const char *addr, int is_sender, int *non_ascii);
/* The domain part of an address (after the last '@'), or NULL. */
const char *tm__address_domain(const char *addr);
/* Case-insensitive domain comparison, a trailing dot ignored. */
int tm__domain_equal(const char *a, const char *b);
/* A host name announced in EHLO, or used as MX name: printable, no space. */
int tm__name_check(const char *name);

/* ======================================================================
 * Floor 1: body.c - content encoder (pure)
 * ==================================================================== */

#define TM_BODY_LINE_MAX 998

typedef struct tm_body {
    size_t line_len; /* octets already written on the current line */
    int at_bol;      /* at the beginning of a line */
    int pending_cr;  /* last input byte was a CR not yet written */
    int raw;         /* BDAT (RFC 3030): no dot-stuffing, no final dot */
} tm_body;

void tm__body_init(tm_body *b);

/*
 * Encodes in[0..inlen) into out[0..outcap): bare CR and bare LF become
 * CRLF, a '.' at the start of a line is doubled, a line reaching
 * TM_BODY_LINE_MAX octets is broken with CRLF SP.  Stops when all input is
 * consumed or out has fewer than 4 bytes left.  Sets *consumed and
 * *produced.  Returns TM_OK, or TM_ECONTENT at a NUL byte (*consumed
 * then points at it).  outcap must be at least 4.
 */
int tm__body_encode(tm_body *b, const unsigned char *in, size_t inlen, size_t *consumed,
                    unsigned char *out, size_t outcap, size_t *produced);

/* Writes the end of data: CRLF if the last line is open, then ".\r\n"
 * (in raw mode only the CRLF).  Keeps the mode, resets the rest.
 * Returns the bytes written; out needs TM_BODY_FINISH_MAX bytes. */
#define TM_BODY_FINISH_MAX 5
size_t tm__body_finish(tm_body *b, unsigned char *out);

/* ======================================================================
 * Floor 1: sts.c - MTA-STS (RFC 8461) parsers (pure)
 * ==================================================================== */

#define TM_STS_ID_MAX 33             /* 1*32(ALPHA / DIGIT), NUL included */
#define TM_STS_MX_MAX 16             /* mx patterns kept per policy */
#define TM_STS_MAX_AGE_MAX 31557600ul /* one year: max_age is capped to it */

enum { TM_STS_NONE = 0, TM_STS_TESTING = 1, TM_STS_ENFORCE = 2 };

typedef struct tm_sts_mx {
    int wildcard;            /* "*." + name: one more label, any */
    char name[TM_HOST_MAX];  /* as written (compared case-insensitively) */
} tm_sts_mx;

typedef struct tm_sts_policy {
    int mode;                /* TM_STS_* */
    unsigned long max_age;   /* seconds, at most TM_STS_MAX_AGE_MAX */
    int nmx;
    int mx_dropped;          /* patterns past TM_STS_MX_MAX, not kept */
    tm_sts_mx mx[TM_STS_MX_MAX];
} tm_sts_policy;

/* The TXT record of _mta-sts.<domain> (RFC 8461 3.1): "v=STSv1" first,
 * then ";"-separated fields, one of them id (1 to 32 letters and digits)
 * into id.  TM_OK, or TM_ESYNTAX (not an STS record, or a bad one). */
int tm__sts_parse_txt(const char *txt, size_t len, char id[TM_STS_ID_MAX]);
/* The policy text (RFC 8461 3.2): "key: value" lines ended by LF or CRLF;
 * version STSv1, mode, max_age (capped at one year) required, mx patterns
 * required unless mode is none; unknown keys ignored, a known key twice
 * (mx aside) or a bad value refused.  TM_OK, or TM_ESYNTAX. */
int tm__sts_parse_policy(const char *text, size_t len, tm_sts_policy *p);
/* Whether host matches one of the policy's mx patterns (RFC 8461 4.1):
 * exactly, or "*.d" with one label in place of the "*"; case-insensitive,
 * a trailing dot ignored. */
int tm__sts_mx_match(const tm_sts_policy *p, const char *host);

/* ---- sts_cache.c: policies by domain (RFC 8461 5.1) ---- */

#define TM_STS_CACHE_DEFAULT 1000 /* policies kept by default */

typedef struct tm_sts_entry {
    char domain[TM_HOST_MAX];   /* the policy domain */
    char id[TM_STS_ID_MAX];     /* the TXT record's id it was fetched under */
    int64_t fetched, expires;   /* seconds since the epoch */
    int64_t used;               /* last use, for eviction */
    tm_sts_policy policy;
} tm_sts_entry;

typedef struct tm_sts_cache {
    tm_sts_entry *e;
    size_t n, cap, max;
} tm_sts_cache;

void tm__sts_cache_init(tm_sts_cache *c, size_t max); /* max 0: the default */
void tm__sts_cache_free(tm_sts_cache *c);
/* The policy of domain while it has not expired at now (an expired one
 * is dropped), marked used; NULL when none. */
const tm_sts_entry *tm__sts_cache_get(tm_sts_cache *c, const char *domain, int64_t now);
/* Stores (replaces) the entry of its domain; when full, the least
 * recently used goes.  TM_OK or TM_ENOMEM. */
int tm__sts_cache_put(tm_sts_cache *c, const tm_sts_entry *entry);
/* Every entry as one line, "policy DOMAIN ID FETCHED EXPIRES USED MODE
 * MAX_AGE MX,MX,..." ("-" for no mx); snprintf semantics. */
int tm__sts_cache_format(const tm_sts_cache *c, char *buf, size_t size);
/* Parses that text ('#' comments, blank lines) into a new table that
 * replaces *out only when all of it is valid (ids and policies checked by
 * their parsers); TM_ESYNTAX with *error_line, TM_ENOMEM. */
int tm__sts_cache_parse(const char *text, size_t len, tm_sts_cache *out, int *error_line);

/* The HTTP/1.1 response of the policy fetch (RFC 8461 3.3). */
#define TM_HTTP_HEAD_MAX 8192   /* status line and headers */
#define TM_STS_BODY_MAX 65536   /* the policy body */
typedef struct tm_http_response {
    int status;         /* 100..599 */
    int text_plain;     /* Content-Type is text/plain (parameters allowed) */
    size_t body_len;    /* the body, decoded, in the caller's buffer */
} tm_http_response;

/*
 * Parses the bytes of a response received so far, buf[0..len); eof: the
 * server closed the connection.  Returns 1 when complete (for a status
 * other than 200 at the end of the head: nothing more is read), 0 when
 * more bytes are needed, TM_EPROTOCOL for a malformed response, a head
 * over TM_HTTP_HEAD_MAX, a body over cap, a coding other than chunked, or
 * a close before the end.  The body (Content-Length, chunked, or up to the
 * close) is copied, decoded, to body[0..cap).
 */
int tm__http_parse_response(const char *buf, size_t len, int eof, char *body, size_t cap,
                            tm_http_response *r);

/* ======================================================================
 * Floor 3: abi.c - struct versions (and tm_abi_layout, public)
 * ==================================================================== */

/* The accepted range of struct versions (libgit2's rule, 0 < v <= current;
 * tm_policy also takes 0 for 1).  TM_OK or TM_EINVAL. */
int tm__version_ok(unsigned int version, unsigned int current);
int tm__policy_check(const tm_policy *p);
/* Copies a caller's message of any accepted version into a current one
 * (fields the caller's version lacks are zero).  TM_OK or TM_EINVAL. */
int tm__message_copy(tm_message *dst, const tm_message *src);

/* ======================================================================
 * Floor 1: policy.c - the truth table (pure)
 * ==================================================================== */

/* What happened when TLS was attempted on one connection. */
typedef enum tm_tls_event {
    TM_EV_NOT_OFFERED,   /* no STARTTLS in EHLO */
    TM_EV_REFUSED,       /* STARTTLS answered 4xx/5xx other than 421 */
    TM_EV_HANDSHAKE,     /* handshake failed, bytes followed the 220, or
                            STARTTLS got a reply that is no answer to it */
    TM_EV_CERT_INVALID,  /* handshake done, verification failed */
    TM_EV_CERT_VALID,    /* handshake done, verified */
    TM_EV_CLOSING        /* STARTTLS answered 421: the host is leaving */
} tm_tls_event;

/* What the session does next. */
typedef enum tm_tls_action {
    TM_ACT_USE_TLS,        /* send over this TLS connection */
    TM_ACT_PLAIN_SAME,     /* continue in plaintext on this connection */
    TM_ACT_PLAIN_NEW,      /* close; new plaintext connection, same address, no STARTTLS */
    TM_ACT_NEXT_MX         /* this MX does not satisfy the policy, or is leaving */
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
void tm__policy_resolve(const tm_policy *message, const tm_policy *domain, int floor,
                        tm_resolved *out);

/* The truth table of DESIGN.md.  policy may be NULL (defaults). */
tm_tls_action tm__policy_decide(const tm_policy *policy, tm_tls_event event);
/* Flag value helper: > 0 is on. */
#define TM_FLAG(x) ((x) > 0)


/* ======================================================================
 * Floor 2: status.c - the one writer of the public status
 * ==================================================================== */

/* Result class of an SMTP reply code: 2xx delivered, 5xx bounced,
 * anything else deferred. */
int tm__result_of_code(int code);

/* Checks status->version and resets every other field of that version:
 * result NONE, strings empty.  TM_OK or TM_EINVAL. */
int tm__status_reset(tm_delivery_status *st);
/* Copies a reply into code / enhanced_code / message (NULL clears them). */
void tm__status_set_reply(tm_delivery_status *st, const tm_reply *r);
void tm__status_describe(tm_delivery_status *st, const char *fmt, ...) TM_PRINTF(2, 3);
/* A reply the library makes up (no server said it): code 0, an enhanced
 * code, no message. */
void tm__status_set_enhanced(tm_delivery_status *st, const char *enhanced);
/* The class of the whole message, when the outcome does not set it. */
void tm__status_set_result(tm_delivery_status *st, int result);
/* A reply remembered as its parts (code 0: none). */
void tm__status_set_code(tm_delivery_status *st, int code, const char *enhanced,
                         const char *message);
/* The connection a status speaks of. */
void tm__status_set_host(tm_delivery_status *st, const char *host, const char *address,
                         unsigned int port, unsigned int attempts);
/* The TLS outcome: tls 0/1, verified 0/1, resumed 0/1, failure
 * (tm_tls_failure), the error text, version and cipher names (NULL: none). */
void tm__status_set_tls(tm_delivery_status *st, int tls, int verified, int resumed, int failure,
                        const char *error, const char *version, const char *cipher);
void tm__status_set_policy(tm_delivery_status *st, const tm_resolved *r);
/* The DANE outcome (tm_dane), whether the MX RRset was secure, what
 * authenticated the server (kept only when cert_verified, so set the TLS
 * outcome first) and the matching TLSA record as "u s m". */
void tm__status_set_dane(tm_delivery_status *st, int dane, int mx_dnssec, int verified_by,
                         const char *tlsa);
/* MTA-STS: the mode (tm_mta_sts), policy id, whether cached, and in
 * testing mode whether enforce would have refused the host; why in words. */
void tm__status_set_sts(tm_delivery_status *st, int mode, const char *id, int cached,
                        int would_refuse, const char *error);
void tm__status_set_utf8(tm_delivery_status *st, int utf8);
/* The whole message ends as `result` with `error`, and how long it took. */
void tm__status_finish(tm_delivery_status *st, int error, int64_t start_ms);

/*
 * Per-recipient outcomes of one message.  The engine and the driver record
 * each recipient's final result exactly once through tm__outcome_set; the
 * counts land in the status, the details in the caller's array (entries
 * past its capacity are counted only).
 */
typedef struct tm_outcome {
    tm_delivery_status *st;     /* may be NULL (counts not kept) */
    tm_rcpt_status *rcpt;       /* the caller's array, may be NULL */
    size_t cap;                 /* its capacity */
} tm_outcome;

/* Prepares the outcome of a message of n recipients: counts zero, the
 * array's first min(n, cap) entries get their address and result NONE. */
void tm__outcome_begin(tm_outcome *o, const char *const *to, size_t n);
/* Records recipient i's final result and the reply it came with (NULL:
 * none, the entry's reply fields stay empty). */
void tm__outcome_set(tm_outcome *o, size_t i, int result, const tm_reply *reply);
/* One more SMTP transaction for this message. */
void tm__outcome_txn(tm_outcome *o);
/* The class of the whole message from the counts (see tm_delivery_status)
 * and the value the call returns: TM_OK when all were delivered,
 * TM_EPARTIAL when some were, else rc (TM_EREJECTED when rc is TM_OK). */
int tm__outcome_result(tm_outcome *o, int rc);

/* ======================================================================
 * Floor 2: the transport - net.c (sockets), tls.c (TLS over a transport)
 * ==================================================================== */

/*
 * One byte stream with deadlines.  read returns at least one byte (up to
 * size) or TM_ECLOSED (EOF or reset), TM_ETIMEOUT, TM_EIO, TM_ETLS,
 * TM_ENOMEM; a deadline already passed still takes what is there without
 * waiting.  write sends everything or fails likewise.  pending says how
 * many bytes can be read without waiting (buffered or already arrived;
 * for TLS, any record bytes).  close ends the stream (for TLS: a
 * close_notify, best effort; the inner stream stays open).
 */
typedef struct tm_transport tm_transport;
typedef struct tm_transport_ops {
    long (*read)(tm_transport *t, void *buf, size_t size, int64_t deadline);
    int (*write)(tm_transport *t, const void *buf, size_t len, int64_t deadline);
    size_t (*pending)(tm_transport *t);
    void (*close)(tm_transport *t);
} tm_transport_ops;
struct tm_transport {
    const tm_transport_ops *ops;
};

/* The socket transport, embedded in its owner (no allocation). */
#define TM_SOCK_RX 4096
typedef struct tm_sock {
    tm_transport base;
    int fd;               /* -1 when closed */
    int sent;             /* written since the last read: wait before recv */
    size_t rx_pos, rx_len;
    unsigned char rx[TM_SOCK_RX]; /* read-ahead: one recv per arriving packet */
} tm_sock;

void tm__sock_init(tm_sock *s);
/* Connects a non-blocking TCP socket with TCP_NODELAY before deadline.
 * TM_OK, or TM_ECONNECT / TM_ETIMEOUT / TM_ENOMEM. */
int tm__sock_connect(tm_sock *s, const struct sockaddr *sa, socklen_t salen, int64_t deadline);
/* Formats an address as text (no port). */
void tm__net_ntop(const struct sockaddr *sa, char *buf, size_t size);
/* Parses "IP", "IP:PORT", "[IPv6]:PORT"; default_port when absent. */
int tm__net_parse_addr(const char *text, unsigned int default_port, struct sockaddr_storage *ss,
                       socklen_t *len);

/* A TLSA record (RFC 6698) usable for SMTP (RFC 7672 3.1): usage DANE-TA
 * (2) or DANE-EE (3), selector 0 (certificate) or 1 (SubjectPublicKeyInfo),
 * matching type 0 (full), 1 (SHA-256) or 2 (SHA-512).  For matching type 0
 * the data kept is the SHA-512 of the full association data (len 64,
 * full = 1): matching then compares digests, which keeps the record a
 * fixed size whatever the certificate's. */
#define TM_TLSA_DATA_MAX 64
typedef struct tm_tlsa {
    unsigned char usage, selector, mtype, full;
    unsigned char len;
    unsigned char data[TM_TLSA_DATA_MAX];
} tm_tlsa;

/* The TLS transport (tls.c).  The configuration (trust store, RNG,
 * session cache) lives in the context; a tm_tls per session is set up
 * once and reused for each connection. */
struct tm_tls_config;
typedef struct tm_tls tm_tls;

int tm__tls_config_new(struct tm_tls_config **out, const char *ca_file, const char *ca_path,
                       char *err, size_t errlen);
/* Reads the store again from where it came; the old one stays on error.
 * Handshakes begun keep the store they began with; cached sessions are
 * forgotten. */
int tm__tls_reload_ca(struct tm_tls_config *cfg, char *err, size_t errlen);
void tm__tls_config_free(struct tm_tls_config *cfg);
const char *tm__tls_backend_name(void);
/* SHA-512 of data (TLSA matching type 0 and 2). */
int tm__sha512(const void *data, size_t len, unsigned char out[64]);
/* Fills buf from the context's random generator (thread-safe). */
int tm__tls_random(struct tm_tls_config *cfg, void *buf, size_t len);

int tm__tls_new(tm_tls **out, struct tm_tls_config *cfg);
void tm__tls_free(tm_tls *t);
/*
 * Runs the handshake over `inner` with SNI and name check against hostname.
 * cache_key (host, address, port, policy) selects a cached session to offer.
 * Returns TM_OK when the handshake completed (whatever the certificate), and
 * the TLS transport in *out; else TM_ETLS / TM_ETIMEOUT / TM_ECLOSED /
 * TM_ENOMEM with err set, and the cached session for the key is dropped.
 */
int tm__tls_start(tm_tls *t, tm_transport *inner, const char *hostname, const char *cache_key,
                  int64_t deadline, tm_transport **out, char *err, size_t errlen);
/* After TM_OK: whether the certificate verified (for a resumed session:
 * what the full handshake behind it found), and why not in words. */
int tm__tls_verified(const tm_tls *t);
/* Whether the last handshake resumed a cached session; whether one was
 * offered (a failed handshake that offered one may be retried without). */
int tm__tls_resumed(const tm_tls *t);
/* 1 if the peer ended the connection with a TLS close_notify; a bare TCP
 * close (which anyone on the path can forge) leaves it 0.  A read that
 * returned TM_ECLOSED tells the two apart through this. */
int tm__tls_close_notify(const tm_tls *t);
int tm__tls_offered(const tm_tls *t);
void tm__tls_verify_error(const tm_tls *t, char *buf, size_t size);
const char *tm__tls_version(const tm_tls *t);
const char *tm__tls_cipher(const tm_tls *t);
/* The session decided to keep this connection: store its session for
 * resumption (TLS 1.2 now; TLS 1.3 with each ticket as it arrives, never
 * without one), with its verification outcome.  cache_drop forgets the
 * key after any failure, and the connection is never saved again. */
void tm__tls_cache_save(tm_tls *t);
void tm__tls_cache_drop(tm_tls *t);

/*
 * DANE (RFC 7672) for the next handshake of t: tlsa[0..n) are the host's
 * usable TLSA records, names[0..nnames) the reference identifiers a
 * DANE-TA chain must match (RFC 7672 3.2.2).  n == 0 (or tlsa NULL): PKIX
 * as usual.  The arrays must live until the handshake is over.  With
 * records, only they can authenticate the server: the verify callback
 * clears mbedTLS's verdict when one matches and sets
 * MBEDTLS_X509_BADCERT_NOT_TRUSTED when none does, so that
 * tm__tls_verified() speaks for DANE alone.  Such handshakes never resume
 * or cache a session.
 */
void tm__tls_set_dane(tm_tls *t, const tm_tlsa *tlsa, int n, const char *const *names,
                      int nnames);
/* After the handshake: the index of the TLSA record that authenticated the
 * server, or -1. */
int tm__tls_dane_matched(const tm_tls *t);

/*
 * The DANE check of the verify callback, on a chain given as PEM text
 * (leaf first, then the certificates as a server sends them), for the
 * unit tests.  DANE-EE (3): the leaf's certificate (selector 0) or public
 * key (1), whatever its names and dates.  DANE-TA (2): a certificate of
 * the chain (or its key) that the leaf chains up to, valid dates, and a
 * leaf name matching one of names[].  Returns the index of the record
 * that matched, TM_ETLS when none did, TM_EINVAL when the chain does not
 * parse, TM_ENOMEM.
 */
int tm__dane_check_chain(const tm_tlsa *tlsa, int n, const char *const *names, int nnames,
                         const char *pem, size_t len);

/* ======================================================================
 * Floor 3: client.c - the SMTP client engine
 * ==================================================================== */

/*
 * The engine holds the SMTP dialogue of one connection as a state machine
 * that is fed the bytes received and asked for the bytes to send; it never
 * calls the network, the clock, or mbedTLS.  Its caller (connect.c,
 * session.c) begins an operation; the driver (driver.c) then loops on
 * tm__client_want():
 *
 *   SEND     send tm__client_output() bytes, then tm__client_sent(n).
 *            When tm__client_quiet() is true, no reply is awaited: bytes
 *            already waiting on the transport are unsolicited, and the
 *            driver feeds them first (the engine then fails the operation).
 *   RECV     read into tm__client_inbuf() and call tm__client_received().
 *   CONTENT  give message bytes to tm__client_content().
 *   TLS      the server said 220 to STARTTLS and nothing followed: run the
 *            handshake, then tm__client_tls_done() (or _tls_failed()).
 *   DONE     the operation ended: tm__client_op_result() says how; the
 *            connection is usable when tm__client_usable().
 *   FAILED   the connection is unusable (protocol violation, I/O error):
 *            the driver closes it.
 *
 * Every wait the driver makes is bounded by tm__client_timeout()'s kind.
 */

typedef enum tm_want {
    TM_WANT_SEND = 1,
    TM_WANT_RECV,
    TM_WANT_CONTENT,
    TM_WANT_TLS,
    TM_WANT_DONE,
    TM_WANT_FAILED
} tm_want;

/* Which RFC 5321 4.5.3.2 timeout applies to the current wait. */
typedef enum tm_timeout_kind {
    TM_TO_GREETING,
    TM_TO_EHLO,       /* EHLO, HELO, STARTTLS, RSET, NOOP */
    TM_TO_MAIL,
    TM_TO_RCPT,
    TM_TO_DATA,
    TM_TO_DATA_BLOCK, /* each write of content */
    TM_TO_DATA_END,
    TM_TO_QUIT
} tm_timeout_kind;

/* How an operation ended (tm__client_op_result). */
typedef enum tm_op_result {
    TM_OP_OK = 0,        /* greeted / EHLO done / transaction ended / RSET / QUIT */
    TM_OP_REJECTED,      /* the server refused (greeting, EHLO and HELO) */
    TM_OP_CLOSING,       /* 421: the server is leaving */
    TM_OP_TLS_REFUSED,   /* STARTTLS answered 4xx/5xx other than 421 */
    TM_OP_TLS_VIOLATION, /* STARTTLS got a non-answer, or bytes after its 220 */
    TM_OP_FAILED         /* protocol violation or I/O failure (see error) */
} tm_op_result;

#define TM_TXN_RCPT_MAX 100   /* recipients per transaction (RFC 5321 4.5.3.1.8) */
#define TM_CLIENT_WBUF 16384
#define TM_CLIENT_RBUF (2 * TM_REPLY_LINE_MAX)
#define TM_CLIENT_QUEUE (TM_TXN_RCPT_MAX + 8)

/* A recipient's state inside the current transaction. */
enum {
    TM_R_UNSENT = 0,  /* RCPT not sent yet */
    TM_R_SENT,        /* RCPT sent, reply awaited */
    TM_R_ACCEPTED,    /* 2xx to RCPT, outcome awaits the end of data */
    TM_R_DONE,        /* final result recorded */
    TM_R_CARRY        /* 452 too many recipients: for a further transaction */
};

/* One transaction, set by the driver, read by the engine. */
typedef struct tm_txn {
    const char *from;
    const char *to[TM_TXN_RCPT_MAX];  /* this transaction's recipients */
    size_t idx[TM_TXN_RCPT_MAX];      /* ... and their places in the message */
    size_t nto;                       /* 1..TM_TXN_RCPT_MAX */
    const unsigned char *data;    /* content in memory, or NULL: streamed */
    size_t size;                  /* its size (in memory) */
    int has_8bit, utf8;           /* content has 8-bit bytes; addresses need SMTPUTF8 */
    int quit_after;               /* the connection's last transaction */
    tm_outcome *out;              /* where outcomes are recorded */
    /* Filled by the engine. */
    unsigned char state[TM_TXN_RCPT_MAX]; /* TM_R_* */
    size_t carried;               /* recipients left in TM_R_CARRY */
} tm_txn;

/* Reply expectations, in the order the commands were sent. */
typedef enum tm_expect {
    TM_X_GREETING = 1, TM_X_EHLO, TM_X_HELO, TM_X_STARTTLS, TM_X_MAIL, TM_X_RCPT,
    TM_X_DATA, TM_X_DOT, TM_X_BDAT, TM_X_RSET, TM_X_QUIT
} tm_expect;

typedef struct tm_client {
    const char *helo;             /* EHLO name (not copied: outlives the client) */
    const char *host;             /* for descriptions (set by the driver) */
    int state;                    /* the operation under way */
    int op_result;                /* tm_op_result of the last operation */
    int error;                    /* tm_error behind it */
    int usable;                   /* the connection can take another command */
    int leave_host;               /* a refusal speaks for the whole host */
    tm_caps caps;
    tm_reply reply;               /* the reply being parsed, then the last one */
    int in_reply;
    int quiet_check;              /* see tm__client_quiet */
    /* The transaction under way. */
    tm_txn *txn;
    tm_body body;
    int emit;                     /* what may be written next */
    int pipelining, quit_sent, need_rset, empty_dot, end_seen;
    int mail_state;               /* 0 unknown, 1 accepted, -1 refused */
    int txn_error;
    int described;                /* a description of the failure is written */
    size_t naccepted, next_rcpt;
    uint64_t content_mark;        /* output position just past the end of data */
    int content_sent;             /* ... and it has been sent */
    /* Replies awaited, oldest first, each with the output position where
     * its command ends: it may be answered only once that much was sent. */
    tm_expect queue[TM_CLIENT_QUEUE];
    size_t qrcpt[TM_CLIENT_QUEUE];
    uint64_t qmark[TM_CLIENT_QUEUE];
    size_t qhead, qlen;
    uint64_t queued_total, sent_total;
    uint64_t replies;
    size_t rpos, rlen, wpos, wlen;
    unsigned char rbuf[TM_CLIENT_RBUF];
    unsigned char wbuf[TM_CLIENT_WBUF];
} tm_client;

void tm__client_init(tm_client *c, const char *helo);
/* A new connection: forget everything but the EHLO name. */
void tm__client_reset(tm_client *c);

/* Operations.  Each returns TM_OK when begun, TM_ESTATE when the client is
 * busy or the connection unusable, TM_EINVAL for bad input. */
int tm__client_open(tm_client *c);            /* greeting, EHLO (HELO) */
int tm__client_starttls(tm_client *c);        /* STARTTLS; WANT_TLS on 220 */
int tm__client_mail(tm_client *c, tm_txn *t); /* one transaction */
int tm__client_rset(tm_client *c);
int tm__client_quit(tm_client *c);

tm_want tm__client_want(tm_client *c);
tm_timeout_kind tm__client_timeout(const tm_client *c);
int tm__client_quiet(tm_client *c);           /* see SEND above; clears itself */

size_t tm__client_output(const tm_client *c, const unsigned char **p);
void tm__client_sent(tm_client *c, size_t n);
size_t tm__client_inbuf(tm_client *c, unsigned char **p);
void tm__client_received(tm_client *c, size_t n);
/* Content: n bytes at p; n == 0 ends the content.  Sets *consumed.
 * TM_OK, or TM_ECONTENT at a NUL byte (the operation then fails). */
int tm__client_content(tm_client *c, const unsigned char *p, size_t n, size_t *consumed);
/* The content source failed (TM_EREAD): the operation fails, nothing is
 * reported delivered. */
void tm__client_content_error(tm_client *c, int error);
/* The transport failed (error): the engine decides what it means. */
void tm__client_io_error(tm_client *c, int error);
/* After the handshake: tls_up forgets every capability and leaves the
 * connection ready for a command (EHLO to go on, QUIT to leave); ehlo says
 * EHLO again.  tls_done is both. */
void tm__client_tls_up(tm_client *c);
int tm__client_ehlo(tm_client *c);
void tm__client_tls_done(tm_client *c);
void tm__client_tls_failed(tm_client *c);

/* Replies completed so far: a wait for one reply is bounded by one
 * deadline, however the reply arrives (a server dripping one byte a second
 * does not stretch it). */
uint64_t tm__client_replies(const tm_client *c);
int tm__client_op_result(const tm_client *c);
int tm__client_usable(const tm_client *c);

/* ======================================================================
 * Floor 3: driver.c - the blocking loop between engine and transport
 * ==================================================================== */

/* Where the content of the message under way comes from. */
typedef struct tm_source {
    const unsigned char *data; /* in memory, or NULL when read is used */
    size_t size, off;
    tm_read_fn read;
    void *arg;
    size_t ipos, ilen;         /* what read() gave, in the driver's ibuf */
    int eof;
} tm_source;

typedef struct tm_drive {
    tm_client *c;
    tm_transport *tr;
    const tm_context *ctx;     /* timeouts and log; NULL: no limits, no log */
    int64_t deadline;          /* overall (INT64_MAX: none) */
    tm_source *src;            /* content of the transaction under way */
    unsigned char *ibuf;       /* for streamed content */
    size_t ibuf_size;
} tm_drive;

/* Runs the engine over the transport until it wants TLS, is done, or
 * failed: every wait bounded by the engine's kind of timeout (and the
 * overall deadline).  Returns TM_WANT_TLS, TM_WANT_DONE or TM_WANT_FAILED. */
tm_want tm__drive(tm_drive *d);

/* ======================================================================
 * Floor 3: dns.c, settings.c
 * ==================================================================== */

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
 * with the given port.  Uses the context's DNS server when it names one
 * (or DANE is on), else the system resolver (getaddrinfo).  Returns the
 * count (> 0), 0 when the name has no usable address, or TM_EDNS /
 * TM_ENOMEM.  *secure, with DANE on: 1 when every address answer was
 * DNSSEC-secure, -1 when a lookup failed (indeterminate: SERVFAIL, as a
 * validating resolver answers bogus data, or a timeout), else 0; always
 * 0 with DANE off.  target (may be NULL): the name at the end of the
 * CNAME chain of the A answer (host itself when there is none). */
int tm__dns_host(const tm_context *ctx, const char *host, unsigned int port, tm_addr *out, int max,
                 int64_t deadline, int *secure, char *target, size_t targetlen);
/* With DANE on: whether host is a CNAME whose own record (the first link
 * of its chain) is DNSSEC-secure. */
int tm__dns_cname_secure(const tm_context *ctx, const char *host, int64_t deadline);

/* The TLSA records at _port._tcp.host (RFC 7672 2.2): usable ones to out
 * (at most max), the others counted in *unusable.  Returns the count (0
 * for none, NXDOMAIN or NODATA), or TM_EDNS when the lookup failed
 * (SERVFAIL, which a validating resolver gives for a bogus answer,
 * timeout, malformed answer).  *secure: DANE is on and the answer (or the
 * denial) was DNSSEC-secure. */
int tm__dns_tlsa(const tm_context *ctx, const char *host, unsigned int port, tm_tlsa *out, int max,
                 int64_t deadline, int *unusable, int *secure);

/*
 * Finds the MX hosts of domain (RFC 5321 section 5.1): sorted by
 * preference, equal preferences shuffled, at most max.  No MX records: the
 * domain itself (implicit MX).  Returns the count (> 0), or TM_ENULLMX (null
 * MX, RFC 7505), TM_ENODOMAIN (NXDOMAIN), TM_EDNS (SERVFAIL, timeout,
 * malformed answer: never an A-record fallback), TM_ENOMEM; on failure why
 * gets a description and enhanced an RFC 3463 code.  *secure: DANE is on
 * and the MX RRset (or, for an implicit MX, the denial) was DNSSEC-secure.
 */
int tm__dns_mx(const tm_context *ctx, const char *domain, tm_mx *out, int max, int64_t deadline,
               char *why, size_t whylen, char enhanced[TM_ENHANCED_MAX], int *secure);

/*
 * Pure parsers of DNS answers (no I/O), used by the above and by the tests.
 * tm__dns_parse_mx: the MX records in the answer section of msg[0..len).
 * Returns how many were stored (at most max, unsorted), sets *null_mx when
 * a null MX ("MX 0 .") was seen (it is not stored), or TM_EDNS when the
 * message is malformed (bad lengths, compression loops, names too long).
 * tm__dns_parse_addr: the A (type 1) or AAAA (type 28) records, with port;
 * unusable addresses skipped.  Same returns.
 */
int tm__dns_parse_mx(const unsigned char *msg, int len, tm_mx *out, int max, int *null_mx);


/*
 * tm__dns_parse_tlsa: the TLSA records of msg[0..len) at the question's
 * name or at the end of the CNAME chain the answer section gives for it
 * (RFC 7671 7).  Usable records go to out (at most max); *unusable counts
 * the others (PKIX usages, unknown selector or matching type, a digest of
 * the wrong length, empty data).  *ad is the header's AD bit, to be
 * believed only from a trusted validating resolver.  Returns how many
 * were stored, or TM_EDNS for a malformed message.
 */
int tm__dns_parse_tlsa(const unsigned char *msg, int len, tm_tlsa *out, int max, int *unusable,
                       int *ad);
int tm__dns_parse_addr(const unsigned char *msg, int len, int type, unsigned int port,
                       tm_addr *out, int max);

/*
 * tm__dns_parse_sts: the MTA-STS record among the TXT records of msg
 * (RFC 8461 3.1), at the question's name or the end of its CNAME chain:
 * each record's strings joined, those not beginning with "v=STSv1"
 * discarded.  Exactly one must remain and parse (tm__sts_parse_txt):
 * returns 1 with its id; 0 when none remains, several do (*several set)
 * or the one left is invalid - no policy; TM_EDNS for a malformed message.
 */
int tm__dns_parse_sts(const unsigned char *msg, int len, char id[TM_STS_ID_MAX], int *several);
/* The lookup itself: TXT _mta-sts.<domain> through the context's
 * resolver.  1 with id, 0 for no (valid, single) record, TM_EDNS when the
 * lookup failed. */
int tm__dns_sts(const tm_context *ctx, const char *domain, int64_t deadline,
                char id[TM_STS_ID_MAX], int *several);

/* The header of a DNS answer: its RCODE and AD bit (believed only from a
 * trusted validating resolver).  TM_OK, or TM_EDNS when len < 12. */
int tm__dns_header(const unsigned char *msg, int len, int *rcode, int *ad);

/* DNSSEC state of a lookup with DANE on. */
enum { TM_DNSSEC_INSECURE = 0, TM_DNSSEC_SECURE = 1 };

/* Most TLSA records kept per host (more are ignored). */
#define TM_TLSA_MAX 8

/* One entry of the settings tables (settings.c). */
typedef struct tm_setting {
    char name[TM_HOST_MAX]; /* normalised: lower case, no trailing dot */
    int recipient;          /* 0: sending-domain policy, 1: recipient floor */
    tm_policy policy;
    int floor;
} tm_setting;

/* Looks up, under one read lock, the sending domain's policy and the
 * recipient domain's floor, and resolves them with the message policy.
 * sending_domain / recipient_domain may be NULL. */
void tm__settings_resolve(tm_context *ctx, const tm_policy *message, const char *sending_domain,
                          const char *recipient_domain, tm_resolved *out);
void tm__settings_free(tm_context *ctx);
/* Parses the settings file format into a private table (tm__free(*tab)
 * after use).  TM_OK, TM_ESYNTAX with *error_line set, TM_ENOMEM. */
int tm__settings_parse(const char *text, size_t len, tm_setting **tab, size_t *n, size_t *cap,
                       int *error_line);

/* ======================================================================
 * Floor 4: context.c, mx.c
 * ==================================================================== */

typedef struct tm_timeouts {
    unsigned int connect, greeting, ehlo, tls, mail, rcpt, data, data_block, data_end, quit,
        delivery;
} tm_timeouts;

struct tm_context {
    char helo_name[TM_HOST_MAX];
    unsigned int port;
    tm_timeouts to;
    unsigned int max_mx, max_addresses;
    int have_dns_server;
    int dane;            /* DANE on: a trusted validating resolver (AD believed) */
    struct sockaddr_storage dns_server; /* with port */
    socklen_t dns_server_len;
    tm_log_fn log;
    void *log_arg;
    int log_level;
    struct tm_tls_config *tls;
    /* MTA-STS: policies by domain (RFC 8461 5.1), guarded by sts_lock;
     * the HTTPS address and port of the fetch, for tests (0: DNS, 443). */
    int sts_on;
    pthread_mutex_t sts_lock;
    tm_sts_cache sts;
    char sts_https_address[TM_IPADDR_MAX + 8];
    unsigned int sts_https_port;
    unsigned int sts_timeout;          /* ms: TXT lookup and fetch together */
    tm_sts_fetch_fn sts_fetch;         /* the host's fetcher, or NULL */
    void *sts_fetch_arg;
    tm_sts_store_fn sts_store;         /* the host's cache store, or NULL */
    tm_sts_lookup_fn sts_lookup;
    void *sts_cache_arg;
    /* Settings tables: sorted by (recipient, name), guarded by the lock. */
    pthread_rwlock_t settings_lock;
    tm_setting *settings;
    size_t nsettings, capsettings;
};

/*
 * The walk over a domain's MX hosts and their addresses, in order, and the
 * rules for moving on: tm__route_next_address after a connection that
 * failed on its own (refused, timed out, a 4xx greeting), tm__route_next_host
 * when the host as a whole will not serve (421, a 5xx greeting, TLS that
 * the policy requires and the host cannot give).
 */
/* What DANE asks of the current host (tm_route.dane). */
enum {
    TM_HD_OFF = 0,     /* DANE off */
    TM_HD_INSECURE,    /* MX, address or TLSA records not DNSSEC-secure */
    TM_HD_NO_TLSA,     /* secure, no TLSA records */
    TM_HD_UNUSABLE,    /* secure TLSA records, none usable: TLS, not authenticated */
    TM_HD_USABLE,      /* usable TLSA records: TLS they authenticate, or nothing */
    TM_HD_BOGUS        /* a lookup failed validation: the host is not used */
};

typedef struct tm_route {
    tm_mx mx[TM_MX_MAX];
    int nmx, mx_i;
    tm_addr addr[TM_ADDR_MAX];
    int naddr, addr_i, resolved;
    unsigned int port;
    unsigned int attempts;
    int explicit_host;
    char address[TM_IPADDR_MAX];   /* the current address as text */
    /* DANE (RFC 7672 2.2), found when the walk reaches a host. */
    int mx_secure;                 /* the MX RRset was DNSSEC-secure */
    int dane;                      /* TM_HD_* of the current host */
    tm_tlsa tlsa[TM_TLSA_MAX];     /* its usable TLSA records */
    int ntlsa;
    char tlsa_base[TM_HOST_MAX];   /* the name they were found at (SNI) */
    int skipped_bogus;             /* tm__route_current left a host: why says why */
    char why[TM_TEXT_MAX];
    char why_host[TM_HOST_MAX];    /* ... and which host */
} tm_route;

/*
 * Fetches the MTA-STS policy of domain from https://mta-sts.<domain>/
 * .well-known/mta-sts.txt (RFC 8461 3.3) before deadline: the certificate
 * must verify (PKIX) for mta-sts.<domain>; only 200 with text/plain and a
 * policy that parses counts.  address (tests and private deployments)
 * replaces the name's addresses; port 0 is 443.  TM_OK with *p; else
 * TM_ENOTFOUND (the server answered, and it is no policy), TM_ETLS,
 * TM_ECONNECT, TM_ETIMEOUT, TM_EPROTOCOL, TM_EDNS, TM_ENOMEM, TM_EINVAL,
 * with why in words.
 */
int tm__sts_fetch(const tm_context *ctx, const char *domain, const char *address,
                  unsigned int port, int64_t deadline, tm_sts_policy *p, char *why,
                  size_t whylen);

/* The MTA-STS policy a delivery to domain follows. */
enum { TM_STS_R_OFF = 0, TM_STS_R_NONE, TM_STS_R_FETCH_FAILED, TM_STS_R_POLICY };
typedef struct tm_sts_result {
    int state;            /* TM_STS_R_* */
    int from_cache;       /* the policy came from the cache */
    tm_sts_entry entry;   /* with TM_STS_R_POLICY: id and policy */
    char why[TM_TEXT_MAX];
} tm_sts_result;

/*
 * RFC 8461 3 and 5.1: the TXT record of _mta-sts.<domain>; the cached
 * policy when its id is current; else a fetch, cached on success.  When
 * the record is missing, its lookup fails, or the fetch fails, a cached
 * policy that has not expired still holds (an attacker can block both).
 * TM_OK with *out, or TM_ENOMEM.
 */
int tm__sts_resolve(tm_context *ctx, const char *domain, int64_t deadline, tm_sts_result *out);

/* Fills the route from the domain's MX records (or the explicit host).
 * TM_OK or the tm__dns_mx errors, with why/enhanced set. */
int tm__route_init(tm_route *r, const tm_context *ctx, const char *domain, const char *host,
                   unsigned int port, int64_t deadline, char *why, size_t whylen,
                   char enhanced[TM_ENHANCED_MAX]);
/* The address to try now, resolving the current host when needed; NULL
 * when the walk is over.  *rc gets TM_EDNS/TM_ENOMEM/TM_ECONNECT when a
 * host had no usable address (the walk moves on by itself). */
const tm_addr *tm__route_current(tm_route *r, const tm_context *ctx, int64_t deadline, int *rc);
const char *tm__route_host(const tm_route *r);
void tm__route_next_address(tm_route *r);
void tm__route_next_host(tm_route *r);
/* True when another host follows the current one. */
int tm__route_more_hosts(const tm_route *r);

/* ======================================================================
 * Floor 5: connect.c, session.c - a session
 * ==================================================================== */

/* A session's state (tm_session.state). */
enum { S_IDLE, S_READY, S_BROKEN };

/* The last failure met on the walk: reported only if nothing succeeds. */
typedef struct tm_failure {
    int error;
    int code;
    char enhanced[TM_ENHANCED_MAX];
    char message[TM_TEXT_MAX];
    char why[TM_TEXT_MAX];
    char host[TM_HOST_MAX];
    char address[TM_IPADDR_MAX];
} tm_failure;

struct tm_session {
    tm_context *ctx;
    int state;
    char domain[TM_HOST_MAX];
    tm_route route;
    int64_t deadline;          /* of the whole walk (INT64_MAX: none) */

    /* The connection. */
    char host[TM_HOST_MAX];
    char address[TM_IPADDR_MAX];
    tm_sock sock;
    tm_tls *tls;               /* allocated at the first STARTTLS, reused */
    tm_transport *tr;          /* &sock.base, or the TLS transport over it */
    int tls_active, cert_verified, tls_failure;
    char tls_error[TM_TEXT_MAX];

    /* Policy: msg_policy as given to tm_starttls (the message level, resolved
     * again per message); resolved, what the connection was made under. */
    tm_policy msg_policy;
    tm_resolved resolved;
    int policy_applied;
    int quit_last;             /* tm_deliver: the connection's last transaction */

    /* DANE: the outcome for the last host left, the record that
     * authenticated the current connection ("u s m"), the reference
     * identifiers handed to the TLS layer. */
    int dane_left;
    char dane_tlsa[16];
    const char *dane_names[2];

    /* MTA-STS (RFC 8461): the domain's policy (state TM_STS_R_OFF when it
     * does not apply), what enforce refused or, in testing mode, would
     * have refused (sts_error), and whether the current host is one of
     * those (sts_refused). */
    tm_sts_result sts;
    int sts_refused;
    char sts_error[TM_TEXT_MAX];

    tm_failure fail;
    tm_drive drive;
    tm_txn txn;
    tm_client client;
    unsigned char ibuf[16384]; /* streamed content */
};

/* The engine over the connection until it wants TLS, is done or failed. */
tm_want tm__session_run(tm_session *s);
/* Closes the connection (a TLS close_notify first); QUIT before it when
 * the connection can still take a command. */
void tm__session_drop(tm_session *s);
void tm__session_quit(tm_session *s);
/* Records a failure of the walk (with the reply it came with, if any). */
void tm__session_note_failure(tm_session *s, int error, const tm_reply *r, const char *what);
/* From the walk's current position, the first address that greets and
 * answers EHLO: TM_OK, or the last failure when none is left. */
int tm__session_connect(tm_session *s);
/* STARTTLS and the truth table until a connection satisfies the policy:
 * TM_OK, TM_ETLSREQUIRED, or the walk's last failure. */
int tm__session_apply_policy(tm_session *s);
/* The tm_dane outcome of the current host and connection. */
int tm__session_dane(const tm_session *s);
/* The tm_mta_sts mode of the session's domain. */
int tm__session_sts(const tm_session *s);


#endif
