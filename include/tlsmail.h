/*
 * tlsmail.h - libtlsmail public interface.
 *
 * libtlsmail delivers email to a recipient domain's mail exchangers (MX) over
 * SMTP with opportunistic TLS, under a per-message policy, and reports for
 * every delivery how the message travelled: whether TLS was used, whether the
 * certificate was verified, and which MX host took the message.
 *
 * This header is the specification.  Every public symbol starts with tm_
 * (TM_ for macros and enumeration constants).
 *
 * Conventions that hold for every function unless its comment says otherwise:
 *
 *  - Return value: TM_OK (0) on success, a negative tm_error on failure.
 *    tm_strerror() turns any value into a static string.  Error codes are
 *    append-only: they are never renumbered or removed.
 *  - Ownership: the library copies every string and buffer it keeps; it
 *    writes results into storage the caller provides and never returns heap
 *    memory the caller must free.  Objects the library allocates (contexts,
 *    sessions) are released with their own _free/_close function, which
 *    accept NULL.
 *  - Threads: there is no global mutable state.  A tm_context is immutable
 *    once created and may be shared by any number of threads and sessions.
 *    A tm_session must be used by one thread at a time.
 *  - Nothing is printed.  Diagnostics reach the host only through the log
 *    callback of the context, called synchronously on the calling thread.
 *  - The library never calls exit() or abort() and ignores SIGPIPE on its
 *    own sockets (MSG_NOSIGNAL).
 *
 * Plain structs at the boundary (tm_policy, tm_message, tm_delivery_status,
 * the option structs) start with a `version` field: the version of the
 * struct the caller was compiled with.  Initialise them with their TM_*_INIT
 * macro or their tm_*_init(ptr, TM_*_VERSION) function (for FFI callers
 * that cannot expand macros).  The library accepts 0 < version <= the
 * version it was built with, reads and writes only the fields that version
 * has, and refuses any other value with TM_EINVAL (as libgit2 does).  A
 * struct grows only at its end, and its version goes up when it does.  One
 * exception, kept from the design's first day: an all-zero tm_policy is the
 * default policy (version 0 reads as version 1).
 */
#ifndef TLSMAIL_H
#define TLSMAIL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TM_BUILDING_LIBRARY) && defined(__GNUC__)
#define TM_EXTERN __attribute__((visibility("default")))
#else
#define TM_EXTERN
#endif

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

#define TM_VERSION_MAJOR 0
#define TM_VERSION_MINOR 2
#define TM_VERSION_PATCH 0
#define TM_VERSION_STRING "0.2.0"
/* Encoded as 0xMMmmpp. */
#define TM_VERSION_NUMBER ((TM_VERSION_MAJOR << 16) | (TM_VERSION_MINOR << 8) | TM_VERSION_PATCH)

/* The version of the library actually linked, as "MAJOR.MINOR.PATCH". */
TM_EXTERN const char *tm_version(void);
/* The same as a number, encoded like TM_VERSION_NUMBER. */
TM_EXTERN unsigned int tm_version_number(void);
/* The TLS library the code was built against, e.g. "mbed TLS 2.28.3". */
TM_EXTERN const char *tm_tls_backend(void);

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

typedef enum tm_error {
    TM_OK = 0,
    TM_EINVAL = -1,        /* an argument is NULL, out of range or malformed */
    TM_ENOMEM = -2,        /* out of memory; nothing was sent */
    TM_EADDRESS = -3,      /* an envelope address is invalid (CR, LF, NUL...) */
    TM_ECONNECT = -4,      /* no MX host could be connected to */
    TM_ETIMEOUT = -5,      /* a deadline passed waiting for the server */
    TM_ECLOSED = -6,       /* the server closed the connection */
    TM_EPROTOCOL = -7,     /* the server broke the SMTP protocol */
    TM_ETLS = -8,          /* TLS could not be established */
    TM_ETLSREQUIRED = -9,  /* the policy requires TLS and no MX offered it */
    TM_EREJECTED = -10,    /* the server refused the message (see status) */
    TM_EPARTIAL = -11,     /* delivered to some recipients only (see status) */
    TM_EUNCERTAIN = -12,   /* end of data sent, no reply: may have arrived */
    TM_ECONTENT = -13,     /* the message content is unusable (NUL byte) */
    TM_EREAD = -14,        /* the message read callback failed */
    TM_ESTATE = -15,       /* the session cannot be used for this call */
    TM_ECAFILE = -16,      /* the CA file could not be read or parsed */
    TM_EDNS = -17,         /* the MX lookup failed temporarily */
    TM_ENODOMAIN = -18,    /* the recipient domain does not exist */
    TM_ENULLMX = -19,      /* the domain accepts no mail (null MX, RFC 7505) */
    TM_ETOOMANY = -20,     /* unused since 0.2 (recipients are not capped) */
    TM_EIO = -21,          /* a local I/O or system error */
    TM_EUTF8 = -22,        /* non-ASCII address, server lacks SMTPUTF8 */
    TM_ENOTFOUND = -23,    /* no setting for that domain */
    TM_ESYNTAX = -24       /* a settings file line is malformed (see line) */
} tm_error;

/* A static, NUL-terminated English description of `error`.  Never NULL;
 * unknown values give "unknown error". */
TM_EXTERN const char *tm_strerror(int error);

/* ------------------------------------------------------------------------
 * Results
 * ---------------------------------------------------------------------- */

typedef enum tm_result {
    TM_RESULT_NONE = 0,      /* nothing attempted yet */
    TM_RESULT_DELIVERED = 1, /* a 2xx reply to the end of data was received */
    TM_RESULT_DEFERRED = 2,  /* temporary failure: retry later */
    TM_RESULT_UNCERTAIN = 3, /* end of data sent, no complete reply: the
                                message may have arrived (RFC 1047); do not
                                treat as delivered, a retry may duplicate */
    TM_RESULT_BOUNCED = 4    /* permanent failure: do not retry */
} tm_result;

/* "delivered", "deferred", "uncertain", "bounced" or "none". */
TM_EXTERN const char *tm_result_name(int result);

/* Why TLS was not used (tm_delivery_status.tls_failure). */
typedef enum tm_tls_failure {
    TM_TLS_FAILURE_NONE = 0,        /* TLS was used, or not attempted */
    TM_TLS_FAILURE_NOT_OFFERED = 1, /* the server did not offer STARTTLS */
    TM_TLS_FAILURE_REFUSED = 2,     /* STARTTLS was answered with 4xx/5xx */
    TM_TLS_FAILURE_HANDSHAKE = 3,   /* handshake failed or bytes followed 220 */
    TM_TLS_FAILURE_CERTIFICATE = 4, /* the certificate failed verification */
    TM_TLS_FAILURE_NOT_TRIED = 5    /* tm_starttls was not called */
} tm_tls_failure;

/* ------------------------------------------------------------------------
 * Policy
 * ---------------------------------------------------------------------- */

/*
 * Flag values.  A flag is "on" when > 0.  0 means "not set": the flag takes
 * the value of the next, less specific level (message, then sending domain,
 * then the default: off); a negative value means "set to off", which
 * overrides a less specific "on".  A recipient-domain floor (below) can
 * still force require_tls on and skip_verify off.
 */
#define TM_ON 1
#define TM_UNSET 0
#define TM_OFF (-1)

#define TM_POLICY_VERSION 1

/*
 * The TLS policy of one delivery.  All-zero is the default: opportunistic
 * STARTTLS, certificate verified and reported, plaintext fallback.
 *
 * require_tls         never deliver without TLS: an MX that cannot give TLS
 *                     (verified TLS unless skip_verify) is left for the next;
 *                     nothing but EHLO, STARTTLS and QUIT is sent before.
 * skip_verify         accept any certificate and host name.  The status still
 *                     says truthfully whether the certificate verified.
 * keep_unverified_tls when verification fails and TLS is not required, keep
 *                     the encrypted session (cert_verified = 0) instead of
 *                     reconnecting in plaintext.
 */
typedef struct tm_policy {
    unsigned int version;
    int require_tls;
    int skip_verify;
    int keep_unverified_tls;
} tm_policy;

#define TM_POLICY_INIT { TM_POLICY_VERSION, 0, 0, 0 }
/* Sets *policy to the defaults of struct version `version` (pass
 * TM_POLICY_VERSION).  TM_EINVAL for NULL or an unknown version. */
TM_EXTERN int tm_policy_init(tm_policy *policy, unsigned int version);

/* Where a flag of the applied policy came from (tm_delivery_status). */
typedef enum tm_policy_source {
    TM_SOURCE_DEFAULT = 0,         /* no level set it: off */
    TM_SOURCE_MESSAGE = 1,         /* the per-message (or per-session) policy */
    TM_SOURCE_SENDING_DOMAIN = 2,  /* the sending domain's setting */
    TM_SOURCE_RECIPIENT_FLOOR = 3  /* forced by the recipient domain's floor */
} tm_policy_source;

/* "default", "message", "sending-domain", "recipient-floor". */
TM_EXTERN const char *tm_policy_source_name(int source);

/* The least TLS that mail to a recipient domain must travel with. */
typedef enum tm_floor {
    TM_FLOOR_NONE = 0,     /* no floor */
    TM_FLOOR_TLS = 1,      /* require_tls forced on */
    TM_FLOOR_VERIFIED = 2, /* require_tls on and skip_verify off */
    TM_FLOOR_DANE = 3      /* only over TLS that TLSA records authenticated
                              (DANE, RFC 7672; Postfix's "dane-only"): MX
                              hosts without usable TLSA records are not
                              used, and with DANE off nothing is delivered */
} tm_floor;

/* "none", "tls", "verified", "dane". */
TM_EXTERN const char *tm_floor_name(int floor);

/* What DANE (RFC 7672) made of the MX host (tm_delivery_status.dane). */
typedef enum tm_dane {
    TM_DANE_OFF = 0,           /* DANE is off: no trusted DNSSEC resolver */
    TM_DANE_INSECURE = 1,      /* the MX, address or TLSA records are not
                                  DNSSEC-signed: the normal policy applied */
    TM_DANE_NO_TLSA = 2,       /* signed, and the host publishes no TLSA */
    TM_DANE_VERIFIED = 3,      /* a TLSA record authenticated the server */
    TM_DANE_TLSA_UNUSABLE = 4, /* signed TLSA records, none usable for SMTP:
                                  TLS was mandatory, not authenticated */
    TM_DANE_FAILED = 5,        /* usable TLSA records and no TLS they
                                  authenticate (missing, refused, failed,
                                  mismatch), or the lookup failed DNSSEC
                                  validation: the host was not used */
    TM_DANE_PENDING = 6        /* usable TLSA records, TLS not tried yet
                                  (the status of tm_session_open) */
} tm_dane;

/* "off", "insecure", "no-tlsa", "verified", "tlsa-unusable", "failed",
 * "pending". */
TM_EXTERN const char *tm_dane_name(int dane);

/* What authenticated the server (tm_delivery_status.cert_verified_by). */
typedef enum tm_verified_by {
    TM_VERIFIED_BY_NONE = 0, /* nothing: cert_verified is 0 */
    TM_VERIFIED_BY_PKIX = 1, /* a chain to a trusted CA, and the host name */
    TM_VERIFIED_BY_DANE = 2  /* a TLSA record (dane_tlsa says which) */
} tm_verified_by;

/* "", "pkix", "dane". */
TM_EXTERN const char *tm_verified_by_name(int by);

/* What MTA-STS (RFC 8461) made of the recipient domain
 * (tm_delivery_status.mta_sts).  See docs/mta-sts.md. */
typedef enum tm_mta_sts {
    TM_MTA_STS_OFF = 0,          /* off in the context, or the host was given
                                    explicitly (tm_session_options.host) */
    TM_MTA_STS_NO_POLICY = 1,    /* no usable _mta-sts TXT record (none, several,
                                    malformed, or the lookup failed) and no
                                    cached policy: delivered as without one */
    TM_MTA_STS_NONE = 2,         /* a policy in mode "none": as without one */
    TM_MTA_STS_TESTING = 3,      /* mode "testing": delivered under the normal
                                    policy; mta_sts_would_refuse says whether
                                    enforce would have refused the host */
    TM_MTA_STS_ENFORCE = 4,      /* mode "enforce": only MX hosts matching the
                                    policy, over TLS with a certificate valid
                                    for the MX name (PKIX), or deferred */
    TM_MTA_STS_FETCH_FAILED = 5  /* a TXT record, but no policy could be fetched
                                    (HTTP error, redirect, wrong type, too
                                    large, bad syntax, TLS or connection
                                    failure; mta_sts_error says which) and
                                    none is cached: delivered as without one */
} tm_mta_sts;

/* "off", "no-policy", "none", "testing", "enforce", "fetch-failed". */
TM_EXTERN const char *tm_mta_sts_name(int mode);

/* ------------------------------------------------------------------------
 * Delivery status
 * ---------------------------------------------------------------------- */

#define TM_ADDRESS_MAX 256    /* RFC 5321 path limit, NUL included */
#define TM_HOST_MAX 256       /* a DNS name, NUL included */
#define TM_IPADDR_MAX 48      /* an IPv6 address in text, NUL included */
#define TM_TEXT_MAX 512       /* the server's reply text */
#define TM_RCPT_TEXT_MAX 256  /* a recipient's reply text */
#define TM_ENHANCED_MAX 16    /* "x.yyy.zzz" */
#define TM_TLSA_TEXT_MAX 16   /* "3 1 1": a TLSA record's parameters */
#define TM_STS_ID_TEXT_MAX 33 /* an MTA-STS policy id (1 to 32 letters and digits) */

/*
 * The outcome for one recipient, written into the caller's array named in
 * tm_message (rcpt_status, rcpt_status_cap), in the order of tm_message.to.
 */
typedef struct tm_rcpt_status {
    char address[TM_ADDRESS_MAX];
    int result;                          /* tm_result */
    int code;                            /* SMTP reply code, 0 if none */
    char enhanced_code[TM_ENHANCED_MAX]; /* "2.1.5" or "" */
    char message[TM_RCPT_TEXT_MAX];      /* reply text, truncated */
} tm_rcpt_status;

/* Version 1 was the 0.1 layout (a fixed rcpt[50] array inside); it is no
 * longer accepted. */
#define TM_STATUS_VERSION 2

/*
 * How a delivery went.  Caller-owned, fixed size, no pointers.  Set
 * `version` (TM_STATUS_INIT or tm_status_init) once; every function that
 * takes a status resets the rest first and always leaves it consistent,
 * also on error.  All strings are NUL-terminated and truncated to fit.
 *
 * result         tm_result of the whole message: TM_RESULT_DELIVERED only if
 *                every recipient was delivered.  With a partial delivery the
 *                function returns TM_EPARTIAL and result is the class of the
 *                failed recipients (uncertain if any is, else deferred if any
 *                is, else bounced); each recipient's own result goes into the
 *                message's rcpt_status array.
 * error          the tm_error the call returned.
 * code, enhanced_code, message
 *                the last meaningful SMTP reply (for a delivery: the reply to
 *                the end of data, or the reply that failed it); 0/"" if the
 *                server said nothing.  description is the library's own
 *                explanation in words.
 * tls            1 if the message (or the session) travelled over TLS.
 * cert_verified  1 if the server was authenticated: its certificate chain
 *                reached a trusted CA, its dates were valid and it matched
 *                the MX host name (PKIX), also when skip_verify meant it
 *                was not enforced; or, on a host with usable TLSA records,
 *                a TLSA record matched (DANE), and then only that counts.
 *                cert_verified_by says which.
 * tls_failure    tm_tls_failure: why TLS is not in use, when it is not.
 * tls_error      that reason in words (certificate verification failure
 *                details, the STARTTLS reply, the handshake error).
 * mx_host        the host name connected to (the MX name from DNS or the
 *                explicit host); mx_address its IP address; mx_port its port.
 * attempt_no     connection attempts made (1 on the first success).
 * session_seconds seconds from the start of the call to its end.
 * utf8           1 if SMTPUTF8 was used.
 * policy         the policy in force, after resolving message overrides,
 *                sending-domain settings, recipient-domain floors and
 *                defaults (each flag 0 or 1); *_source says where each flag
 *                came from (tm_policy_source) and floor which floor applied.
 * rcpt_count     recipients of the message; rcpt_delivered, rcpt_deferred,
 *                rcpt_uncertain, rcpt_bounced how many ended each way (they
 *                add up to rcpt_count once a message was taken).
 * transactions   SMTP transactions (MAIL FROM) the message took: more than
 *                one when the server limited recipients per transaction (a
 *                452 to RCPT, RFC 5321 4.5.3.1.10) or the message has more
 *                recipients than one transaction carries (100).
 * tls_resumed    1 if the TLS session was resumed (TLS 1.2 session ticket or
 *                ID, TLS 1.3 PSK from a ticket) rather than fully handshaken.
 *                cert_verified is then what the full handshake that made
 *                the session found, never more.
 * dane           tm_dane: what DANE made of the host in mx_host (when the
 *                delivery failed, of the last host tried).
 * mx_dnssec      1 if DANE is on and the MX RRset was DNSSEC-secure (for an
 *                implicit MX: the secure denial of MX records; for an
 *                explicit host: its address records).
 * cert_verified_by  tm_verified_by: PKIX or DANE when cert_verified is 1,
 *                else TM_VERIFIED_BY_NONE.
 * dane_tlsa      the TLSA record that authenticated the server as
 *                "usage selector matching-type" (e.g. "3 1 1"), or "".
 * mta_sts        tm_mta_sts: the MTA-STS policy the recipient domain's
 *                delivery followed (RFC 8461; docs/mta-sts.md).  On a host
 *                with usable TLSA records DANE applies instead (RFC 8461 2).
 * mta_sts_id     the id of that policy (from its TXT record), or "".
 * mta_sts_cached 1 if the policy came from the cache (its TXT id unchanged,
 *                or the TXT record or the fetch failed while a cached policy
 *                still held).
 * mta_sts_would_refuse  in testing mode, 1 if enforce would have refused
 *                the host the session or message went to: an MX name
 *                matching no pattern, no TLS, or a certificate not valid
 *                for the MX name.
 * mta_sts_error  in words: what enforce refused or would have refused,
 *                why no policy could be fetched, or why the domain has
 *                none (no TXT record, its lookup failed); "" otherwise.
 */
typedef struct tm_delivery_status {
    unsigned int version;
    int result;
    int error;
    int code;
    char enhanced_code[TM_ENHANCED_MAX];
    char message[TM_TEXT_MAX];
    char description[TM_TEXT_MAX];
    int tls;
    int cert_verified;
    int tls_failure;
    char tls_version[16];
    char tls_cipher[64];
    char tls_error[TM_TEXT_MAX];
    char mx_host[TM_HOST_MAX];
    char mx_address[TM_IPADDR_MAX];
    int mx_port;
    unsigned int attempt_no;
    double session_seconds;
    int utf8;
    tm_policy policy;          /* the policy applied, resolved (flags 0/1) */
    int require_tls_source;    /* tm_policy_source of each flag */
    int skip_verify_source;
    int keep_unverified_tls_source;
    int floor;                 /* tm_floor of the recipient domain */
    unsigned int rcpt_count;
    unsigned int rcpt_delivered;
    unsigned int rcpt_deferred;
    unsigned int rcpt_uncertain;
    unsigned int rcpt_bounced;
    unsigned int transactions;
    int tls_resumed;
    int dane;                  /* tm_dane */
    int mx_dnssec;
    int cert_verified_by;      /* tm_verified_by */
    char dane_tlsa[TM_TLSA_TEXT_MAX];
    int mta_sts;               /* tm_mta_sts */
    char mta_sts_id[TM_STS_ID_TEXT_MAX];
    int mta_sts_cached;
    int mta_sts_would_refuse;
    char mta_sts_error[TM_TEXT_MAX];
} tm_delivery_status;

#define TM_STATUS_INIT                                                                      \
    { TM_STATUS_VERSION, 0, 0, 0, "", "", "", 0, 0, 0, "", "", "", "", "", 0, 0, 0.0, 0,     \
      TM_POLICY_INIT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, "", 0, "", 0, 0, "" }
/* Sets *status to an empty status of struct version `version` (pass
 * TM_STATUS_VERSION): result TM_RESULT_NONE.  TM_EINVAL for NULL or an
 * unknown version. */
TM_EXTERN int tm_status_init(tm_delivery_status *status, unsigned int version);

/* sizeof(tm_delivery_status) as compiled into the library, so bindings can
 * check their layout at load time.  Likewise for the other public structs. */
TM_EXTERN size_t tm_status_size(void);

/*
 * The layout of every public struct as compiled into the library, as one
 * static NUL-terminated text, one struct per line:
 *     "tm_policy 16 version@0:4 require_tls@4:4 ...\n"
 * (name, size, then each field as name@offset:size, in declaration order).
 * Bindings that cannot read this header (Python ctypes) compare their own
 * declarations against it field by field when they load the library.
 */
TM_EXTERN const char *tm_abi_layout(void);

/*
 * Writes the status as one JSON object (UTF-8, NUL-terminated) into buf:
 *   {"result": "...", "code": 250, "enhanced-code": "2.0.0", "message": "...",
 *    "description": "...", "tls": true, "certificate-verified": true,
 *    "mx-host": "...", "mx-address": "...", "mx-port": 25,
 *    "tls-version": "TLSv1.2", "tls-cipher": "...", "tls-error": "",
 *    "tls-resumed": false, "dane": "verified", "dane-tlsa": "3 1 1",
 *    "mx-dnssec": true, "certificate-verified-by": "dane",
 *    "mta-sts": "enforce", "mta-sts-id": "20261201", "mta-sts-cached": false,
 *    "mta-sts-would-refuse": false, "mta-sts-error": "",
 *    "attempt-no": 1, "session-seconds": 0.012, "utf8": false,
 *    "policy": {"require-tls": true, "require-tls-from": "message",
 *               "skip-verify": false, "skip-verify-from": "default",
 *               "keep-unverified-tls": false,
 *               "keep-unverified-tls-from": "default",
 *               "recipient-floor": "none"},
 *    "recipient-counts": {"total": 1, "delivered": 1, "deferred": 0,
 *                         "uncertain": 0, "bounced": 0},
 *    "transactions": 1,
 *    "recipients": [{"address": "...", "result": "...", "code": 250,
 *                    "enhanced-code": "2.1.5", "message": "..."}]}
 * "recipients" lists rcpts[0..nrcpts) - the array the message's rcpt_status
 * pointed at, or NULL/0 for an empty list.  Control characters and invalid
 * UTF-8 in server text are escaped, so the output is always valid JSON.
 *
 * Like snprintf: returns the length of the whole object (without the NUL)
 * and writes at most size bytes, NUL included.  A return value >= size means
 * buf was too small (its content is then cut and not valid JSON); buf may be
 * NULL when size is 0 to learn the length.  TM_STATUS_JSON_MAX holds any
 * status with one recipient; each further recipient needs at most
 * TM_RCPT_JSON_MAX more.  Returns TM_EINVAL if status is NULL or of an
 * unknown version, buf is NULL with size > 0, or rcpts is NULL with
 * nrcpts > 0.
 */
#define TM_STATUS_JSON_MAX 20480
#define TM_RCPT_JSON_MAX 3328
TM_EXTERN int tm_status_json(const tm_delivery_status *status, const tm_rcpt_status *rcpts,
                             size_t nrcpts, char *buf, size_t size);

/* ------------------------------------------------------------------------
 * Shared context
 * ---------------------------------------------------------------------- */

typedef struct tm_context tm_context;

/* Log levels for the log callback. */
typedef enum tm_log_level {
    TM_LOG_ERROR = 0,
    TM_LOG_WARNING = 1,
    TM_LOG_INFO = 2,
    TM_LOG_DEBUG = 3 /* includes the SMTP dialogue, commands and replies */
} tm_log_level;

/* Called synchronously on the thread that runs a tm_ call; `message` is a
 * NUL-terminated line without a newline, valid only during the call. */
typedef void (*tm_log_fn)(void *arg, int level, const char *message);

#define TM_CONTEXT_OPTIONS_VERSION 2

/*
 * MTA-STS policy fetch by the host (tm_context_options.sts_fetch), for a
 * host that wants its own HTTP client or proxy.  Called on the delivering
 * thread with the policy domain and the URL to fetch
 * ("https://mta-sts.<domain>/.well-known/mta-sts.txt").  The callback must
 * do what RFC 8461 3.3 asks: HTTPS with a certificate valid for
 * mta-sts.<domain> (PKIX), a GET, no redirects followed, status 200 and
 * Content-Type text/plain only, a timeout.  On success it copies the body
 * into body (at most size bytes, 65536: a larger body is a failure), sets
 * *len and returns TM_OK; anything else means no policy could be fetched
 * (why, in words, may go to the log).  The library parses the body.
 */
typedef int (*tm_sts_fetch_fn)(void *arg, const char *domain, const char *url, char *body,
                               size_t size, size_t *len);
/*
 * MTA-STS cache in the host's own store (tm_context_options.sts_store and
 * sts_lookup), keyed by policy domain; `entry` is one line of the cache
 * file format (tm_sts_cache_save), without the newline.  sts_store is
 * called when a fetched policy enters the context's cache; sts_lookup when
 * a delivery finds nothing cached for the domain: it copies a stored entry
 * (NUL-terminated) into buf and returns TM_OK, or returns TM_ENOTFOUND.
 * An entry that does not parse, or has expired, is ignored.
 */
typedef void (*tm_sts_store_fn)(void *arg, const char *domain, const char *entry);
typedef int (*tm_sts_lookup_fn)(void *arg, const char *domain, char *buf, size_t size);

/*
 * Options of a context.  Every field 0/NULL means the default shown.
 * Timeouts are in milliseconds; the per-command defaults are RFC 5321
 * §4.5.3.2's.  command_timeout_ms, when set, replaces the default of every
 * per-command timeout that is left 0.
 *
 * ca_file          PEM bundle of trusted CAs (default: the system store,
 *                  /etc/ssl/certs/ca-certificates.crt and similar).
 * ca_path          directory of PEM or DER CA certificates, one per file
 *                  (as OpenSSL's -CApath; files that do not parse are
 *                  skipped).  With ca_file, both are trusted.  (Version 2.)
 * helo_name        name announced in EHLO/HELO (default: this host's name).
 * port             SMTP port of MX hosts (default 25).
 * dns_server       "IP" or "IP:PORT" of the DNS server to ask instead of
 *                  the system resolver's (MX lookup).
 *
 * DNSSEC and DANE (RFC 7672; see docs/dane.md).  (Version 2.)
 * dnssec_resolver  "IP" or "IP:PORT" (IPv4; anything else is TM_EINVAL)
 *                  of a DNSSEC-validating resolver
 *                  the host trusts (on this machine or over a path no one
 *                  can tamper with).  Every lookup then goes to it
 *                  (dns_server is not used), asking for DNSSEC (the DO bit),
 *                  and its AD bit is believed: DANE is on.
 * dnssec_trust_resolver  TM_ON: the resolver the context asks anyway
 *                  (dns_server, else the system's, /etc/resolv.conf)
 *                  validates and is trusted: DANE is on with it (Postfix's
 *                  smtp_dns_support_level = dnssec).
 * dane             TM_OFF: DANE off even with a trusted resolver (0 and
 *                  TM_ON: on when a resolver is trusted).  Without
 *                  a trusted resolver DANE is off, the AD bit of answers is
 *                  never believed, and delivery is exactly as without DANE.
 *
 * With DANE on, an MX host taken from a DNSSEC-secure MX RRset (or the
 * domain itself, or the explicit host, when its address records are
 * secure) that publishes usable TLSA records (DANE-TA or DANE-EE) gets
 * TLS that those records authenticate, or nothing: no plaintext, no
 * skip_verify, whatever the policy; the host is skipped otherwise, and
 * with no host left the message is deferred.  A TLSA lookup that fails
 * validation leaves the host unused.  Unsigned zones get the normal policy.
 *
 * MTA-STS (RFC 8461; see docs/mta-sts.md).  (Version 2.)
 * mta_sts          TM_OFF: MTA-STS off (0 and TM_ON: on).  On, a delivery
 *                  to a domain's MX hosts (not to an explicit host) looks up
 *                  TXT _mta-sts.<domain> and follows the domain's policy,
 *                  fetched over HTTPS and cached; enforce means only MX
 *                  hosts matching the policy, over TLS verified for the MX
 *                  name, whatever require_tls and skip_verify say, or the
 *                  message is deferred.  DANE wins on hosts with usable TLSA.
 * sts_fetch, sts_fetch_arg  the host's own fetcher (tm_sts_fetch_fn) in
 *                  place of the built-in one.
 * sts_store, sts_lookup, sts_cache_arg  the host's own cache store
 *                  (tm_sts_store_fn, tm_sts_lookup_fn), beside the
 *                  context's in-memory cache.
 * sts_cache_max    policies kept in memory (default 1000; the least
 *                  recently used goes first).
 * sts_timeout_ms   the TXT lookup and the policy fetch together (default
 *                  10000), and at most half of what delivery_timeout_ms
 *                  leaves, so that a blocked fetch leaves time to deliver.
 * sts_https_address, sts_https_port  FOR TESTS AND PRIVATE DEPLOYMENTS
 *                  ONLY: the built-in fetcher connects to this IP address
 *                  (instead of the addresses of mta-sts.<domain>) and port
 *                  (instead of 443).  The certificate must still be valid
 *                  for mta-sts.<domain>.
 *
 * connect_timeout_ms   TCP connect (default 30000)
 * greeting_timeout_ms  initial 220 (default 300000)
 * ehlo_timeout_ms      EHLO/HELO, STARTTLS, RSET, NOOP (default 300000)
 * tls_timeout_ms       TLS handshake (default 60000)
 * mail_timeout_ms      MAIL (default 300000)
 * rcpt_timeout_ms      RCPT (default 300000)
 * data_timeout_ms      DATA initiation (default 120000)
 * data_block_timeout_ms  each write of content (default 180000)
 * data_end_timeout_ms  reply to the final dot (default 600000)
 * quit_timeout_ms      QUIT (default 5000)
 * delivery_timeout_ms  whole tm_deliver / tm_session_open walk (default 0 =
 *                      no overall limit beyond the per-command ones)
 * max_mx           MX hosts tried per delivery (default 5)
 * max_addresses    addresses tried per MX host (default 4)
 */
typedef struct tm_context_options {
    unsigned int version;
    const char *ca_file;
    const char *helo_name;
    const char *dns_server;
    unsigned int port;
    unsigned int command_timeout_ms;
    unsigned int connect_timeout_ms;
    unsigned int greeting_timeout_ms;
    unsigned int ehlo_timeout_ms;
    unsigned int tls_timeout_ms;
    unsigned int mail_timeout_ms;
    unsigned int rcpt_timeout_ms;
    unsigned int data_timeout_ms;
    unsigned int data_block_timeout_ms;
    unsigned int data_end_timeout_ms;
    unsigned int quit_timeout_ms;
    unsigned int delivery_timeout_ms;
    unsigned int max_mx;
    unsigned int max_addresses;
    tm_log_fn log;
    void *log_arg;
    int log_level; /* highest tm_log_level passed to log (default ERROR) */
    const char *ca_path; /* version 2 */
    const char *dnssec_resolver; /* version 2 */
    int dnssec_trust_resolver;   /* version 2 */
    int dane;                    /* version 2 */
    int mta_sts;                 /* version 2 */
    tm_sts_fetch_fn sts_fetch;   /* version 2 */
    void *sts_fetch_arg;         /* version 2 */
    tm_sts_store_fn sts_store;   /* version 2 */
    tm_sts_lookup_fn sts_lookup; /* version 2 */
    void *sts_cache_arg;         /* version 2 */
    unsigned int sts_cache_max;  /* version 2 */
    unsigned int sts_timeout_ms; /* version 2 */
    const char *sts_https_address; /* version 2: tests and private deployments */
    unsigned int sts_https_port;   /* version 2: tests and private deployments */
} tm_context_options;

#define TM_CONTEXT_OPTIONS_INIT { TM_CONTEXT_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, 0 }
/* Sets *options to the defaults of struct version `version` (pass
 * TM_CONTEXT_OPTIONS_VERSION).  TM_EINVAL for NULL or an unknown version. */
TM_EXTERN int tm_context_options_init(tm_context_options *options, unsigned int version);

/*
 * Creates a context: parses the trust store once, seeds the random
 * generator, prepares the TLS configuration.  options may be NULL for all
 * defaults; the strings in it are copied.  On success *out owns a context
 * to release with tm_context_free() after every session using it is closed.
 * Errors: TM_EINVAL, TM_ENOMEM, TM_ECAFILE (unreadable or empty CA file or
 * system store), TM_EIO.  On error *out is set to NULL.
 */
TM_EXTERN int tm_context_new(tm_context **out, const tm_context_options *options);

/* Releases a context.  NULL is a no-op. */
TM_EXTERN void tm_context_free(tm_context *ctx);

/*
 * Reads the trust store again from where the context's options named it
 * (ca_file, ca_path, or the system store), for when certificates rotate.
 * Safe while other threads deliver with the context: a handshake under
 * way finishes with the store it began with, every later one uses the new
 * store, and no TLS session verified under the old store is resumed.  On
 * error the old store stays in use.  Errors: TM_EINVAL (NULL), TM_ENOMEM,
 * TM_ECAFILE (nothing readable, or no certificate found).
 */
TM_EXTERN int tm_context_reload_ca(tm_context *ctx);

/* ------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------- */

/*
 * Content source for streaming: fills buf with up to size bytes and returns
 * how many (0 = end of message), or a negative value on error (the delivery
 * then fails with TM_EREAD, never reported delivered).  Called on the
 * calling thread during tm_send/tm_deliver only.
 */
typedef long (*tm_read_fn)(void *arg, unsigned char *buf, size_t size);

/* Version 1 is the 0.1 layout (no rcpt_status); still accepted. */
#define TM_MESSAGE_VERSION 2

/*
 * One message.  The library reads these during the call only and keeps
 * nothing.
 *
 * from        envelope sender (MAIL FROM), "" for the null reverse-path.
 * to, to_count  envelope recipients, at least one, all of the domain the
 *             session was opened for.  There is no limit in the ABI: the
 *             library sends at most 100 per transaction, and when a server
 *             answers 452 to a RCPT (too many recipients) the rest go in a
 *             further transaction on the same connection.
 * data, size  the RFC 5322 content in memory; or, when read is set, the
 *             content is streamed from read(read_arg, ...) instead (a
 *             streamed message goes in one transaction only: recipients a
 *             server defers with 452 are then reported deferred).
 * sending_domain  the domain whose connection settings apply (see
 *             tm_domain_policy_set); NULL: the domain of `from`.
 * rcpt_status, rcpt_status_cap  (version 2) an array of the caller's that
 *             receives each recipient's outcome, in the order of `to`;
 *             entries past rcpt_status_cap are not written (the counts in
 *             tm_delivery_status still cover every recipient).  NULL/0:
 *             counts only.  Written during the call only.
 *
 * The content is sent with every bare CR or LF turned into CRLF, lines
 * starting with "." dot-stuffed, lines longer than 998 octets broken with
 * CRLF SP (as Postfix does), and a final CRLF added when missing.  A NUL
 * byte fails the delivery with TM_ECONTENT before the end of data is sent.
 */
typedef struct tm_message {
    unsigned int version;
    const char *from;
    const char *const *to;
    size_t to_count;
    const void *data;
    size_t size;
    tm_read_fn read;
    void *read_arg;
    const char *sending_domain;
    tm_rcpt_status *rcpt_status;
    size_t rcpt_status_cap;
} tm_message;

#define TM_MESSAGE_INIT { TM_MESSAGE_VERSION, NULL, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL, 0 }
/* Sets *message to an empty message of struct version `version` (pass
 * TM_MESSAGE_VERSION).  TM_EINVAL for NULL or an unknown version. */
TM_EXTERN int tm_message_init(tm_message *message, unsigned int version);

/* ------------------------------------------------------------------------
 * Sessions
 * ---------------------------------------------------------------------- */

typedef struct tm_session tm_session;

#define TM_SESSION_OPTIONS_VERSION 1

/*
 * Options of one session.  NULL: deliver to the domain's MX hosts on the
 * context's port (as TM_SESSION_OPTIONS_INIT does).
 *
 * host   deliver to this host (name or IP address) instead of the domain's
 *        MX hosts; its name is the one the certificate must match.
 * port   port for host or the MX hosts (default: the context's port).
 */
typedef struct tm_session_options {
    unsigned int version;
    const char *host;
    unsigned int port;
} tm_session_options;

#define TM_SESSION_OPTIONS_INIT { TM_SESSION_OPTIONS_VERSION, NULL, 0 }
/* Sets *options to the defaults of struct version `version` (pass
 * TM_SESSION_OPTIONS_VERSION).  TM_EINVAL for NULL or an unknown version. */
TM_EXTERN int tm_session_options_init(tm_session_options *options, unsigned int version);

/*
 * Opens a session to `domain`: finds its MX hosts (or uses options->host),
 * connects to the first reachable address in order, reads the greeting and
 * says EHLO (HELO if EHLO is refused).  The session remembers the remaining
 * hosts so that tm_starttls can move on under require_tls.
 *
 * ctx must outlive the session.  domain is copied.  status may be NULL; when
 * given it is reset and receives the host connected to or, on failure, the
 * most meaningful failure (result deferred or bounced).
 *
 * A host that greets with 421, 4xx or 5xx, or answers EHLO and HELO with
 * an error, will not serve now: the next host is tried, and with none left
 * the status is deferred (a greeting is the host's word on itself, not on
 * the message).
 *
 * Errors: TM_EINVAL, TM_ENOMEM, TM_ECONNECT, TM_ETIMEOUT, TM_EREJECTED (every
 * host refused to talk), TM_EDNS, TM_ENODOMAIN, TM_ENULLMX.  On error *out
 * is NULL.  Blocks for at most the context's timeouts.
 */
TM_EXTERN int tm_session_open(tm_session **out, tm_context *ctx, const char *domain,
                              const tm_session_options *options, tm_delivery_status *status);

/*
 * Applies `policy` (NULL = nothing set) resolved against the recipient
 * domain's floor (sending-domain settings apply per message in tm_send)
 * to the open session, following the
 * policy truth table: STARTTLS when offered, certificate verification, EHLO
 * again over TLS.  When TLS fails and is not required, the session falls
 * back to plaintext (on the same connection after a 4xx/5xx other than 421
 * to STARTTLS, on a fresh connection to the same address after a failed
 * handshake or certificate, or after any other reply to STARTTLS - a 2xx
 * other than 220, a 3xx: a protocol violation).  A 421 to STARTTLS means
 * the host is leaving: the session moves on to the next MX whatever the
 * policy.  When TLS is required and this MX cannot give it, the session
 * says QUIT and moves on to the next MX.  The policy is kept for
 * the session's later tm_send calls.  status may be NULL; it receives the
 * TLS outcome (tls, cert_verified, tls_failure, tls_error, mx_host).
 *
 * Returns TM_OK when the session is ready to send under the policy (over
 * TLS or, when allowed, in plaintext).  Errors: TM_ETLSREQUIRED (no MX
 * gave TLS; the session is then closed for sending: only tm_session_close
 * remains), TM_ECONNECT/TM_ETIMEOUT/TM_ECLOSED/TM_EPROTOCOL when the
 * plaintext fallback connection failed, TM_ESTATE if already applied.
 */
TM_EXTERN int tm_starttls(tm_session *session, const tm_policy *policy, tm_delivery_status *status);

/*
 * Sends one message over the session and fills status (required).  Uses
 * PIPELINING when offered.  After a failure that leaves the connection in
 * sync (a refused MAIL or every RCPT refused) it sends RSET so the session
 * stays usable for the next message; after a connection failure the
 * session is unusable (TM_ESTATE on the next call).
 *
 * The message's policy is resolved from the session's policy (as the
 * message level), the message's sending-domain settings and the recipient
 * floor; if it requires TLS (verified unless skip_verify) and the session
 * does not have it, nothing is sent and TM_ETLSREQUIRED is returned.
 *
 * Returns TM_OK only when every recipient was delivered.  Errors:
 * TM_EINVAL, TM_EADDRESS (before a byte is written), TM_EREJECTED, TM_EPARTIAL, TM_EUNCERTAIN, TM_ETIMEOUT, TM_ECLOSED,
 * TM_EPROTOCOL, TM_ECONTENT, TM_EREAD, TM_ESTATE, TM_ETLSREQUIRED, TM_EUTF8.
 */
TM_EXTERN int tm_send(tm_session *session, const tm_message *message, tm_delivery_status *status);

/* Says QUIT (bounded by quit_timeout_ms), closes and frees.  NULL is a
 * no-op. */
TM_EXTERN void tm_session_close(tm_session *session);

/*
 * One-shot delivery: open a session to the recipients' domain (or
 * options->host), apply the policy - `policy` is the per-message override,
 * resolved against the sending domain's settings and the recipient domain's
 * floor (see "Connection settings") - send, close; with fail-over to the next
 * MX host when a connection fails, the server says 421 or 4xx/5xx at the
 * greeting, or TLS is required and unavailable - never after the end of
 * data was sent.  All recipients must share one domain.  When the server
 * offers PIPELINING, QUIT goes in the same write as the end of the content
 * (the transaction is the connection's last), saving a round trip; the 221
 * is still awaited, bounded by quit_timeout_ms.  Returns as tm_send; status
 * is required.
 */
TM_EXTERN int tm_deliver(tm_context *ctx, const tm_message *message, const tm_policy *policy,
                         const tm_session_options *options, tm_delivery_status *status);

/* ------------------------------------------------------------------------
 * Connection settings per sending domain, floors per recipient domain
 * ---------------------------------------------------------------------- */

/*
 * A sending service sets TLS behaviour for a whole sending domain (the
 * domain a customer sends from), overrides it per message, and an operator
 * can demand TLS for mail *to* a recipient domain.  The policy of one
 * delivery is resolved flag by flag:
 *
 *     message policy (tm_deliver's `policy`, tm_starttls's `policy`) if the
 *     flag is set (!= 0), else the sending domain's setting if set, else off;
 *     then the recipient domain's floor: TM_FLOOR_TLS forces require_tls on,
 *     TM_FLOOR_VERIFIED and TM_FLOOR_DANE force require_tls on and
 *     skip_verify off, and TM_FLOOR_DANE uses only hosts with usable TLSA
 *     records.  Nothing weakens a floor.  DANE, where a host publishes
 *     usable TLSA records, is stronger than any of these and applies
 *     whatever they say.
 *
 * The tables live in the context.  Every function below is thread-safe and
 * may run while deliveries run on other threads: readers do not block each
 * other, and a delivery reads its settings once, so it sees one consistent
 * policy.  Domain names are compared case-insensitively, a trailing dot
 * ignored; an invalid name gives TM_EINVAL.
 */

/* Sets (replaces) the settings of a sending domain; flags left 0 are "not
 * set" and fall through to the default.  Errors: TM_EINVAL, TM_ENOMEM. */
TM_EXTERN int tm_domain_policy_set(tm_context *ctx, const char *sending_domain,
                                   const tm_policy *policy);
/* Copies the settings of a sending domain into *policy, or TM_ENOTFOUND. */
TM_EXTERN int tm_domain_policy_get(tm_context *ctx, const char *sending_domain, tm_policy *policy);
/* Removes them; TM_ENOTFOUND if there were none. */
TM_EXTERN int tm_domain_policy_delete(tm_context *ctx, const char *sending_domain);

/* Sets the floor of a recipient domain (TM_FLOOR_NONE removes it). */
TM_EXTERN int tm_recipient_floor_set(tm_context *ctx, const char *recipient_domain, int floor);
/* Writes the floor of a recipient domain (TM_FLOOR_NONE when unset). */
TM_EXTERN int tm_recipient_floor_get(tm_context *ctx, const char *recipient_domain, int *floor);

/*
 * Writes every setting into buf in the settings file format (below), sorted
 * by domain, NUL-terminated: that is the "list" of both tables.  snprintf
 * semantics: returns the full length, >= size means cut; buf may be NULL
 * when size is 0.  TM_EINVAL for a NULL ctx.
 */
TM_EXTERN int tm_settings_list(tm_context *ctx, char *buf, size_t size);

/*
 * The settings file: one line per domain, '#' starts a comment, blank lines
 * are ignored:
 *
 *     sending example.com require_tls=yes skip_verify=no
 *     sending news.example.com keep_unverified_tls=yes
 *     recipient bank.example floor=verified
 *
 * Keys: require_tls, skip_verify, keep_unverified_tls (yes/no/unset) for
 * `sending`; floor (none/tls/verified/dane) for `recipient`.  A later line for
 * the same domain replaces the earlier one.
 *
 * tm_settings_load parses the whole file first and applies it only when it
 * is valid: on TM_ESYNTAX (unknown key or word, bad value, bad domain)
 * nothing changes and *error_line (may be NULL) gets the 1-based line.
 * replace != 0 clears both tables first.  Errors: TM_EINVAL, TM_EIO (file
 * unreadable), TM_ESYNTAX, TM_ENOMEM.
 * tm_settings_save writes the tables (atomically: temp file + rename).
 */
TM_EXTERN int tm_settings_load(tm_context *ctx, const char *path, int replace, int *error_line);
TM_EXTERN int tm_settings_save(tm_context *ctx, const char *path);

/* ------------------------------------------------------------------------
 * MTA-STS policy cache (RFC 8461 5.1)
 * ---------------------------------------------------------------------- */

/*
 * The context keeps fetched MTA-STS policies in memory until their max_age
 * runs out (at most one year), and uses a cached policy when the TXT record
 * is gone or its lookup or the fetch fails - the point of MTA-STS, since an
 * attacker can block both.  A sending service that restarts should save and
 * load the cache, one line per policy domain:
 *
 *     policy DOMAIN ID FETCHED EXPIRES USED MODE MAX_AGE MX,MX,...
 *
 * (times in seconds since the epoch; "-" for no mx pattern; '#' starts a
 * comment).  tm_sts_cache_load parses the whole file first and changes
 * nothing unless all of it is valid (TM_ESYNTAX with *error_line); then
 * each entry replaces the cached one of its domain, expired entries are
 * dropped.  tm_sts_cache_save writes atomically (temporary file, rename).
 * tm_sts_cache_list writes the same text into buf (snprintf semantics).
 * Errors: TM_EINVAL, TM_EIO, TM_ESYNTAX, TM_ENOMEM.  Thread-safe.
 */
TM_EXTERN int tm_sts_cache_load(tm_context *ctx, const char *path, int *error_line);
TM_EXTERN int tm_sts_cache_save(tm_context *ctx, const char *path);
TM_EXTERN int tm_sts_cache_list(tm_context *ctx, char *buf, size_t size);

/* sizeof of the public structs as compiled into the library (for bindings). */
TM_EXTERN size_t tm_policy_size(void);
TM_EXTERN size_t tm_message_size(void);
TM_EXTERN size_t tm_context_options_size(void);
TM_EXTERN size_t tm_session_options_size(void);

#ifdef __cplusplus
}
#endif

#endif /* TLSMAIL_H */
