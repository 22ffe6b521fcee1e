/*
 * harness.h - what every hostile-server test program shares: run one
 * delivery against a scripted tests/hostile/hostile_smtp.py (or two, as the
 * MX hosts of one domain) and check the result, tls, cert_verified, the
 * error code and the exact bytes the client sent, under each of the five
 * policies that matter.
 *
 * The programs that use it are grouped by behaviour (tests/starttls,
 * tests/replies, tests/connection, tests/certificates, tests/content,
 * tests/recipients, tests/sessions, tests/resumption, tests/mx, tests/load);
 * see tests/README.md.
 *
 * Environment:
 *   TM_HOSTILE_FILTER=glob   run only the matching tests (cmocka filter)
 *   TM_HOSTILE_SELFTEST=1    turn each test's main expectation (HT_EQ) wrong:
 *                            every test must then fail (proves each can fail)
 *
 * Test-only code.
 */
#ifndef TM_TESTS_HARNESS_H
#define TM_TESTS_HARNESS_H

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
/* The default message: 27 octets. */
#define BODY "Subject: hostile\r\n\r\nhello\r\n"
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
const tm_policy *ht_policy(int which);
const char *ht_policy_name(int which);
/* Row helpers of the truth table. */
#define POL_REQUIRES(p) ((p) == POL_REQ || (p) == POL_REQ_SKIP)
#define POL_SKIPS(p) ((p) == POL_SKIP || (p) == POL_REQ_SKIP)

/* TM_HOSTILE_SELFTEST=1 turns every HT_EQ into a wrong expectation, so that
 * each test proves it can fail (all must fail in that mode). */
extern int ht_selftest;
#define HT_EQ(got, want) assert_int_equal((got), ht_selftest ? ((want) ^ 0x4000) : (want))

/* Runs a test program: the filter, then the tests with ht_setup and
 * ht_teardown around them.  main() is `return HT_MAIN("name", tests);`. */
#define HT_MAIN(name, tests)                                                                      \
    (ht_filter(), cmocka_run_group_tests_name(name, tests, ht_setup, ht_teardown))
void ht_filter(void);
/* The certificates (tests/peers/certs.py --set hostile) in a temp dir. */
int ht_setup(void **state);
/* Stops the suite's dnsmasq (when it was started) and removes the certs. */
int ht_teardown(void **state);

/* DIR/name.pem and DIR/name.key (static buffers, two slots each); the CA. */
const char *ht_cert(const char *name);
const char *ht_key(const char *name);
const char *ht_ca(void);
/* "127.0.0.1:PORT" of the suite's dnsmasq, started on first use; NULL when
 * dnsmasq is missing (the caller skips).  It serves atk.test:
 *   mx.wild.atk.test, a.b.wild.atk.test, mx1.atk.test, mx.atk.test,
 *   atk.test -> 127.0.0.1; atk.test MX 10 mx.atk.test;
 *   two.atk.test MX 10 mx-a.atk.test (HT_MX_A), MX 20 mx-b.atk.test (HT_MX_B). */
const char *ht_dns(void);
#define HT_MX_A "127.0.0.51"
#define HT_MX_B "127.0.0.52"

#define HT_MX "" /* ht_opts.host: no explicit host, MX lookup */

typedef struct ht_opts {
    const char *cert;       /* leaf base name (default "good") */
    const tm_policy *policy;
    unsigned int timeout_ms;/* command_timeout_ms (default 5000) */
    const char *host;       /* explicit host (default "localhost"); HT_MX */
    const tm_message *msg;  /* default: BODY to rcpt@example.test */
    int dns;                /* use the suite's dnsmasq (context port = server's) */
    int finish_s;           /* wait for the server to end (default 10 s) */
    const char *domain;     /* with HT_MX: the default message goes to rcpt@domain */
} ht_opts;

/* The recipients' outcomes of the last ht_run / ht_run_two whose message
 * had no rcpt_status array of its own (the default message included). */
#define HT_MAX_RCPT 256
extern tm_rcpt_status ht_rcpt[HT_MAX_RCPT];

/* Starts the server with script, delivers with tm_deliver, stops the
 * server; returns the record (caller frees), rc and st filled. */
char *ht_run(const char *script, const ht_opts *o, int *rc, tm_delivery_status *st);
/* The same with two servers, the MX hosts of two.atk.test (HT_MX_A at
 * preference 10, then HT_MX_B, one port): the message goes to
 * rcpt@two.atk.test unless o->msg says otherwise; both serve o->cert
 * (default "mxpair": mx-a.atk.test and mx-b.atk.test).  Returns the first
 * server's record, the second's in *rec_b (caller frees both).  Skips the
 * test without dnsmasq. */
char *ht_run_two(const char *script_a, const char *script_b, const ht_opts *o, int *rc,
                 tm_delivery_status *st, char **rec_b);
/* Wall-clock seconds of the last ht_run's tm_deliver. */
extern double ht_last_wall;
double ht_now(void);

/* A context for the hostile server (ca_file = the suite's CA); dns: use the
 * suite's dnsmasq. */
tm_context *ht_ctx(unsigned int timeout_ms, unsigned int port, int dns);
/* Session options for host:port. */
void ht_session_opts(tm_session_options *so, const char *host, int port);
/* The default message (to: NULL = rcpt@example.test; body NULL = BODY),
 * its outcomes going to ht_rcpt. */
void ht_msg(tm_message *m, const char *const *to, size_t n, const char *body);

/* What a case must show.  Strings NULL are not checked. */
typedef struct ht_want {
    int rc, result, tls, verified, tls_failure;
    int conns;           /* recorded connections, -1 not checked */
    const char *recv0;   /* connections[0].received exactly */
    const char *recv1;   /* connections[1].received exactly */
    const char *plain0;  /* connections[0].received_plain exactly */
    const char *tls0;    /* connections[0].received_tls exactly */
} ht_want;
void ht_check(const char *rec, int rc, const tm_delivery_status *st, const ht_want *w);

/* One script and expectation per policy (POL_*): runs all five. */
typedef struct ht_row {
    const char *script;
    ht_want want;
} ht_row;
void ht_matrix(const char *name, const ht_row rows[POL_N], const ht_opts *base);

/* Field checks on the record. */
void ht_field_eq(const char *rec, int conn, const char *field, const char *want);
/* True when connections[conn].field contains needle (bytes, may hold NUL). */
int ht_field_has(const char *rec, int conn, const char *field, const char *needle);
/* How many times needle occurs in connections[conn].field. */
int ht_field_count(const char *rec, int conn, const char *field, const char *needle);
/* No MAIL, RCPT or DATA anywhere in the plaintext of any connection. */
void ht_no_envelope_in_plain(const char *rec);
/* No MAIL, RCPT or DATA anywhere on any connection of the record. */
void ht_no_envelope(const char *rec);

/* Returns p, remembered in a global table: a buffer abandoned when a
 * failed assertion longjmps out of a test stays "reachable" for valgrind
 * and LeakSanitizer, so that their leak reports only show the library's
 * leaks.  Free such buffers with free() as usual. */
void *ht_keep(void *p);

/* malloc'd printf (aborts the test on failure). */
char *ht_fmt(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* malloc'd: n copies of c (NUL-terminated). */
char *ht_repeat(char c, size_t n);
/* malloc'd base64 of bytes. */
char *ht_b64(const void *data, size_t len);

void ht_print(const char *what, int rc, const tm_delivery_status *st);

#endif
