/*
 * attacks.h - shared helpers of the attack suite (tests/attacks/): run one
 * delivery against a scripted tests/hostile/hostile_smtp.py, and check the
 * result, tls, cert_verified, error code and the exact bytes the client
 * sent, under each of the five policies that matter.
 *
 * Test-only code.
 */
#ifndef TM_ATTACKS_H
#define TM_ATTACKS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hostile.h"
#include "tlsmail.h"

#define HELO "client.tm.test"
#define EHLO_L "EHLO " HELO "\r\n"
#define FROM_L "MAIL FROM:<sender@tm.test>\r\n"
#define RCPT_L "RCPT TO:<rcpt@example.test>\r\n"
#define BODY "Subject: attack\r\n\r\nhello\r\n"
/* The whole plaintext transaction of the default message, through QUIT. */
#define TX FROM_L RCPT_L "DATA\r\n" BODY ".\r\nQUIT\r\n"
/* Script pieces (JSON inside C strings). */
#define GREET "{\"send\": \"220 hostile ESMTP\\r\\n\"}, {\"expect\": \"EHLO\"}, "
#define GREET_ONLY "{\"send\": \"220 hostile ESMTP\\r\\n\"}, "
#define EHLO_TLS "{\"send\": \"250-hostile\\r\\n250-PIPELINING\\r\\n250 STARTTLS\\r\\n\"}, "
#define AUTO_TLS "{\"auto\": true, \"caps\": [\"STARTTLS\", \"PIPELINING\"]}"
#define AUTO_PLAIN "{\"auto\": true, \"caps\": [\"PIPELINING\"]}"

/* The five policies where the truth table differs. */
enum { POL_DEFAULT, POL_REQ, POL_SKIP, POL_REQ_SKIP, POL_KEEP, POL_N };
const tm_policy *atk_policy(int which);
const char *atk_policy_name(int which);
/* Row helpers of the truth table. */
#define POL_REQUIRES(p) ((p) == POL_REQ || (p) == POL_REQ_SKIP)
#define POL_SKIPS(p) ((p) == POL_SKIP || (p) == POL_REQ_SKIP)

/* TM_ATK_SELFTEST=1 turns every ATK_EQ into a wrong expectation, so that
 * each test proves it can fail (all must fail in that mode). */
extern int atk_selftest;
#define ATK_EQ(got, want) assert_int_equal((got), atk_selftest ? ((want) ^ 0x4000) : (want))

/* Temp dir with the certificates of make_certs.sh; CA file; DNS server
 * ("127.0.0.1:PORT" of the suite's dnsmasq, "" when dnsmasq is missing). */
extern char atk_certdir[256];
extern char atk_dns[64];
/* DIR/name.pem and DIR/name.key (static buffers, two slots each). */
const char *atk_cert(const char *name);
const char *atk_key(const char *name);
const char *atk_ca(void);

int atk_group_setup(void **state);
int atk_group_teardown(void **state);

#define ATK_MX "" /* atk_opts.host: no explicit host, MX lookup */

typedef struct atk_opts {
    const char *cert;       /* leaf base name (default "good") */
    const tm_policy *policy;
    unsigned int timeout_ms;/* command_timeout_ms (default 5000) */
    const char *host;       /* explicit host (default "localhost"); ATK_MX */
    const tm_message *msg;  /* default: BODY to rcpt@example.test */
    int dns;                /* use the suite's dnsmasq (context port = server's) */
    int finish_s;           /* wait for the server to end (default 10 s) */
    const char *domain;     /* with ATK_MX: the default message goes to rcpt@domain */
} atk_opts;

/* Starts the server with script, delivers with tm_deliver, stops the
 * server; returns the record (caller frees), rc and st filled. */
char *atk_run(const char *script, const atk_opts *o, int *rc, tm_delivery_status *st);
/* Wall-clock seconds of the last atk_run's tm_deliver. */
extern double atk_last_wall;
double atk_now(void);

/* A context for the hostile server (ca_file = the suite's CA). */
tm_context *atk_ctx(unsigned int timeout_ms, unsigned int port, int dns);
/* Session options for host:port. */
void atk_session_opts(tm_session_options *so, const char *host, int port);
/* The default message. */
void atk_msg(tm_message *m, const char *const *to, size_t n, const char *body);

/* What a case must show.  Strings NULL are not checked. */
typedef struct atk_want {
    int rc, result, tls, verified, tls_failure;
    int conns;           /* recorded connections, -1 not checked */
    const char *recv0;   /* connections[0].received exactly */
    const char *recv1;   /* connections[1].received exactly */
    const char *plain0;  /* connections[0].received_plain exactly */
    const char *tls0;    /* connections[0].received_tls exactly */
} atk_want;
void atk_check(const char *rec, int rc, const tm_delivery_status *st, const atk_want *w);

/* One script and expectation per policy (POL_*): runs all five. */
typedef struct atk_row {
    const char *script;
    atk_want want;
} atk_row;
void atk_matrix(const char *name, const atk_row rows[POL_N], const atk_opts *base);

/* Field checks on the record. */
void atk_field_eq(const char *rec, int conn, const char *field, const char *want);
/* True when connections[conn].field contains needle (bytes, may hold NUL). */
int atk_field_has(const char *rec, int conn, const char *field, const char *needle);
/* No MAIL, RCPT or DATA anywhere in the plaintext of any connection. */
void atk_no_envelope_in_plain(const char *rec);

/* Returns p, remembered in a global table: a buffer abandoned when a
 * failed assertion longjmps out of a test stays "reachable" for valgrind
 * and LeakSanitizer, so that their leak reports only show the library's
 * leaks.  Free such buffers with free() as usual. */
void *atk_keep(void *p);

/* malloc'd printf (aborts the test on failure). */
char *atk_fmt(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* malloc'd: n copies of c (NUL-terminated). */
char *atk_repeat(char c, size_t n);
/* malloc'd base64 of bytes. */
char *atk_b64(const void *data, size_t len);

void atk_print(const char *what, int rc, const tm_delivery_status *st);

/* The tests, by file. */
#define ATK_TESTS(X)                                                                              \
    /* atk_starttls.c */                                                                          \
    X(strip_not_offered) X(strip_refused_454) X(strip_refused_502) X(strip_missing_after_tls)    \
    X(strip_second_starttls_not_sent) X(inject_after_220) X(inject_split) X(inject_greeting)      \
    X(caps_forgotten_after_tls) X(require_no_envelope_before_tls)                                 \
    /* atk_replies.c */                                                                           \
    X(reply_code_only) X(reply_mixed_codes_ehlo) X(reply_mixed_codes_dot) X(reply_513_line)       \
    X(reply_4k_line) X(reply_1m_line) X(reply_endless_continuation) X(reply_non_digit)            \
    X(reply_nul) X(reply_data_not_354) X(reply_bare_lf) X(reply_eof_mid_line) X(reply_eof_mid_line_dot)                 \
    X(slow_drip_ehlo) X(slow_no_greeting) X(slow_no_dot_reply) X(slow_drip_dot_reply)             \
    X(slow_tls_stall)                                                                             \
    /* atk_conn.c */                                                                              \
    X(loss_before_greeting) X(loss_after_ehlo) X(loss_after_mail) X(loss_after_354)              \
    X(loss_mid_content) X(loss_after_dot) X(loss_after_dot_tls) X(loss_after_final_reply)        \
    X(tls_alert) X(tls_garbage) X(tls_fin_after_220)                                             \
    /* atk_certs.c */                                                                             \
    X(cert_good) X(cert_expired) X(cert_notyet) X(cert_selfsigned) X(cert_untrusted_ca)           \
    X(cert_wrongname) X(cert_chain_sent) X(cert_chain_not_sent) X(cert_wildcard)                  \
    X(cert_wildcard_two_labels) X(cert_partial_wildcard) X(cert_domain_not_mx)                   \
    /* atk_content.c */                                                                           \
    X(addr_controls_refused) X(addr_controls_in_session) X(rcpt_other_domain)                    \
    X(no_final_newline) X(big_50mib_streamed) X(alloc_fail_sessions)

#define ATK_DECL(name) void name(void **state);
ATK_TESTS(ATK_DECL)
#undef ATK_DECL

#endif
