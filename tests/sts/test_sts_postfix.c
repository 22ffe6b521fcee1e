/*
 * test_sts_postfix.c - MTA-STS (RFC 8461) end to end: a real Postfix and
 * dnsmasq (tests/peers/peers.py) serve the sts.test domains - MX records
 * pointing at the Postfix listeners, _mta-sts TXT records, mta-sts.<domain>
 * A records - and tests/peers/sts_https.py serves their policies over
 * HTTPS, from files this program writes into its policy directory
 * (TM_STS_POLICY_DIR) and may rewrite between two deliveries, or from its
 * built-in scenarios (404, redirect, text/html, 70 KiB, bad syntax).  A
 * second dnsmasq (TM_TEST_DNS_ALT) answers the same, except that
 * _mta-sts.vanish.sts.test is gone and newid and blocked have new ids:
 * a context moved to it (its cache saved and loaded, or kept in the
 * host's store) sees the TXT record vanish or change.  The records are
 * listed in peers.py (STS_DOMAINS), the policies in `policies` below.
 *
 * Every delivery is checked four ways: the status (mta_sts, its id, cached,
 * would_refuse, error, and what TLS did), the same fields in its JSON, the
 * maildir (the message is there exactly when the status says delivered,
 * with "using TLS" exactly when tls is 1), and Postfix's log (under
 * enforce, no session sent MAIL without STARTTLS; a deferred message sent
 * no MAIL at all).  sts_https.py's log counts the policy fetches: a policy
 * served from the cache was not fetched.  At the end every mailbox that
 * must stay empty is looked at again.
 *
 * Every case names the bug it catches.  No case depends on timing except
 * max_age_runs_out, which sleeps 2 s once over a max_age of 1 s.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "peers.h"
#include "tally.h"

enum { P_DEFAULT, P_SKIP, P_KEEP, P_REQUIRE_OFF, P_SKIP_KEEP_OFF, P_REQUIRE, P_COUNT };
static const char *const pol_names[] = { "default", "skip_verify", "keep_unverified_tls",
                                         "require_tls=off", "skip+keep, require_tls=off",
                                         "require_tls" };

#define ZONE "sts.test"
#define ANY (-1)

static char tmpdir[512];
static char ca_bundle[700]; /* the peers' CA and sts_https.py's CA */
static unsigned int https_port, dead_port;
static tm_context *ctx_main; /* first dnsmasq, the policy server by its A records */
static long log_start;       /* Postfix log size when the program started */
static time_t t_start;


/* The policies sts_https.py serves from its policy directory, by domain
 * label (mta-sts.<label>.sts.test).  notfound, redirect, html, big and
 * badsyntax have no file: the server's built-in scenarios answer. */
#define ENFORCE(mx) "version: STSv1\r\nmode: enforce\r\n" mx "max_age: 86400\r\n"
#define TESTING(mx) "version: STSv1\r\nmode: testing\r\n" mx "max_age: 86400\r\n"
static const struct {
    const char *label, *text;
} policies[] = {
    { "enforce", ENFORCE("mx: mx-valid.tm.test\r\n") },
    { "skip", ENFORCE("mx: mx-valid.tm.test\r\n") },
    { "wild", ENFORCE("mx: *.wild.tm.test\r\n") },
    { "wildskip", ENFORCE("mx: *.tm.test\r\n") },
    { "badfirst", ENFORCE("mx: mx-selfsigned.tm.test\r\nmx: mx-valid.tm.test\r\n") },
    { "wrongname", ENFORCE("mx: mx-wrongname.tm.test\r\n") },
    { "selfsigned", ENFORCE("mx: mx-selfsigned.tm.test\r\n") },
    { "plain", ENFORCE("mx: mx-plain.tm.test\r\n") },
    { "refused", ENFORCE("mx: mx-refusetls.tm.test\r\n") },
    { "nomatch", ENFORCE("mx: other.tm.test\r\nmx: *.other.test\r\n") },
    { "testing", TESTING("mx: mx-valid.tm.test\r\n") },
    { "twrongname", TESTING("mx: mx-wrongname.tm.test\r\n") },
    { "tplain", TESTING("mx: mx-plain.tm.test\r\n") },
    { "trefused", TESTING("mx: mx-refusetls.tm.test\r\n") },
    { "tnomatch", TESTING("mx: other.tm.test\r\n") },
    { "none", "version: STSv1\nmode: none\nmax_age: 86400\n" },
    { "noaddr", ENFORCE("mx: mx-valid.tm.test\r\n") },
    { "blocked", ENFORCE("mx: mx-selfsigned.tm.test\r\n") },
    { "vanish", ENFORCE("mx: mx-selfsigned.tm.test\r\n") },
    { "newid", ENFORCE("mx: mx-selfsigned.tm.test\r\n") },
    { "shortlived", "version: STSv1\nmode: enforce\nmx: mx-valid.tm.test\nmax_age: 1\n" },
};

/* ---------------------------------------------------------------------- */
/* files */

static void write_file(const char *path, const char *text)
{
    char tmp[1100];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    /* rename: the server reads either the old policy or the new one */
    assert_int_equal(rename(tmp, path), 0);
}

/* The policy sts_https.py serves for mta-sts.<label>.sts.test from now on. */
static void policy_write(const char *label, const char *text)
{
    char path[1024];

    snprintf(path, sizeof path, "%s/mta-sts.%s." ZONE, need_env("TM_STS_POLICY_DIR"), label);
    write_file(path, text);
}

/* GETs of the policy that sts_https.py logged for Host `host` so far (its
 * handler logs each before answering it). */
static int https_gets(const char *host)
{
    FILE *f = fopen(need_env("TM_STS_HTTPS_LOG"), "r");
    char line[2048], want[300];
    int n = 0;

    if (!f)
        return 0;
    snprintf(want, sizeof want, "GET /.well-known/mta-sts.txt Host %s SNI ", host);
    while (fgets(line, sizeof line, f))
        if (strstr(line, want))
            n++;
    fclose(f);
    return n;
}

static int gets_of(const char *label)
{
    char host[256];

    snprintf(host, sizeof host, "mta-sts.%s." ZONE, label);
    return https_gets(host);
}

/* ---------------------------------------------------------------------- */
/* contexts */

typedef struct ctx_spec {
    const char *dns;           /* dns_server */
    unsigned int https_port;   /* sts_https_port */
    const char *https_address; /* sts_https_address; NULL: mta-sts.<domain>'s A record */
    int mta_sts;
    tm_sts_fetch_fn fetch;
    void *fetch_arg;
    tm_sts_store_fn store;
    tm_sts_lookup_fn lookup;
    void *cache_arg;
    unsigned int delivery_timeout_ms;
} ctx_spec;

/* The first dnsmasq, the live policy server found by its A records. */
static ctx_spec spec_main(void)
{
    ctx_spec sp;

    memset(&sp, 0, sizeof sp);
    sp.dns = need_env("TM_TEST_DNS");
    sp.https_port = https_port;
    return sp;
}

/* The second dnsmasq (vanished and changed TXT records). */
static ctx_spec spec_alt(void)
{
    ctx_spec sp = spec_main();

    sp.dns = need_env("TM_TEST_DNS_ALT");
    return sp;
}

static tm_context *make_ctx(const ctx_spec *sp)
{
    tm_context_options o;
    tm_context *ctx = NULL;

    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.ca_file = ca_bundle;
    o.dns_server = sp->dns;
    o.port = (unsigned int)atoi(need_env("TM_TEST_PORT"));
    o.helo_name = "client.tm.test";
    o.command_timeout_ms = 10000;
    o.mta_sts = sp->mta_sts;
    o.sts_fetch = sp->fetch;
    o.sts_fetch_arg = sp->fetch_arg;
    o.sts_store = sp->store;
    o.sts_lookup = sp->lookup;
    o.sts_cache_arg = sp->cache_arg;
    o.sts_timeout_ms = 10000;
    o.delivery_timeout_ms = sp->delivery_timeout_ms;
    o.sts_https_address = sp->https_address;
    o.sts_https_port = sp->https_port;
    assert_int_equal(tm_context_new(&ctx, &o), TM_OK);
    assert_non_null(ctx);
    return ctx;
}

/* A context with nothing but the DNS server: the first (0) or the second
 * dnsmasq (1). */
static tm_context *plain_ctx(int alt)
{
    ctx_spec sp = alt ? spec_alt() : spec_main();

    return make_ctx(&sp);
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static unsigned int free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned int port = 0;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int group_setup(void **state)
{
    const char *t = getenv("TMPDIR");
    char cmd[2200];
    size_t i;
    (void)state;

    t_start = time(NULL);
    snprintf(tmpdir, sizeof tmpdir, "%s/tm-sts.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir))
        return -1;
    /* peers.py and sts_https.py each make their own CA: trust both (the
     * MX hosts' certificates and the policy server's). */
    snprintf(ca_bundle, sizeof ca_bundle, "%s/ca-bundle.pem", tmpdir);
    snprintf(cmd, sizeof cmd, "cat '%s' '%s' > '%s'", need_env("TM_TEST_CA"),
             need_env("TM_STS_CA"), ca_bundle);
    if (system(cmd) != 0)
        return -1;
    https_port = (unsigned int)atoi(need_env("TM_STS_HTTPS_PORT"));
    dead_port = free_port();
    if (!https_port || !dead_port)
        return -1;
    for (i = 0; i < sizeof policies / sizeof policies[0]; i++)
        policy_write(policies[i].label, policies[i].text);
    ctx_main = plain_ctx(0);
    log_start = log_size();
    print_message("Postfix port %s, DNS %s and %s, policies at %s:%u (dead port %u)\n",
                  need_env("TM_TEST_PORT"), need_env("TM_TEST_DNS"), need_env("TM_TEST_DNS_ALT"),
                  need_env("TM_STS_HTTPS_ADDR"), https_port, dead_port);
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[600];
    (void)state;
    tm_context_free(ctx_main);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------- */
/* one delivery, checked against the status, the JSON, the maildir and the
 * log */

typedef struct delivery {
    tm_delivery_status st;
    int rc;
    char local[64];
    char domain[128];
    sessions log;
} delivery;

/* s as tm_status_json writes a string (ASCII text only: the library
 * writes other bytes as UTF-8 or U+FFFD). */
static void json_quote(const char *s, char *out, size_t size)
{
    size_t n = 0;

    for (; *s && n + 8 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, size - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n] = '\0';
}

static void check_json(const tm_delivery_status *st, const tm_rcpt_status *rcpt)
{
    char json[TM_STATUS_JSON_MAX], want[2 * TM_TEXT_MAX + 64], q[2 * TM_TEXT_MAX];
    int n = tm_status_json(st, rcpt, rcpt ? 1 : 0, json, sizeof json);
    const char *p;
    int ascii = 1;

    assert_true(n > 0 && (size_t)n < sizeof json);
    snprintf(want, sizeof want, "\"mta-sts\": \"%s\"", tm_mta_sts_name(st->mta_sts));
    assert_non_null(strstr(json, want));
    snprintf(want, sizeof want, "\"mta-sts-id\": \"%s\"", st->mta_sts_id);
    assert_non_null(strstr(json, want));
    snprintf(want, sizeof want, "\"mta-sts-cached\": %s", st->mta_sts_cached ? "true" : "false");
    assert_non_null(strstr(json, want));
    snprintf(want, sizeof want, "\"mta-sts-would-refuse\": %s",
             st->mta_sts_would_refuse ? "true" : "false");
    assert_non_null(strstr(json, want));
    for (p = st->mta_sts_error; *p; p++)
        if ((unsigned char)*p >= 0x80)
            ascii = 0;
    if (ascii) {
        json_quote(st->mta_sts_error, q, sizeof q);
        snprintf(want, sizeof want, "\"mta-sts-error\": \"%s\"", q);
    } else {
        snprintf(want, sizeof want, "\"mta-sts-error\": \"");
    }
    assert_non_null(strstr(json, want));
    snprintf(want, sizeof want, "\"certificate-verified\": %s",
             st->cert_verified ? "true" : "false");
    assert_non_null(strstr(json, want));
    snprintf(want, sizeof want, "\"tls\": %s", st->tls ? "true" : "false");
    assert_non_null(strstr(json, want));
}

/* Rules that hold for every status. */
static void check_consistent(const tm_delivery_status *st)
{
    int has_policy = st->mta_sts == TM_MTA_STS_NONE || st->mta_sts == TM_MTA_STS_TESTING ||
                     st->mta_sts == TM_MTA_STS_ENFORCE;

    assert_true(st->mta_sts >= TM_MTA_STS_OFF && st->mta_sts <= TM_MTA_STS_FETCH_FAILED);
    assert_non_null(memchr(st->mta_sts_id, '\0', sizeof st->mta_sts_id));
    assert_non_null(memchr(st->mta_sts_error, '\0', sizeof st->mta_sts_error));
    /* An id and "cached" belong to a policy (fetch-failed may name the
     * TXT record's id). */
    if (has_policy)
        assert_true(st->mta_sts_id[0] != '\0');
    else if (st->mta_sts != TM_MTA_STS_FETCH_FAILED)
        assert_string_equal(st->mta_sts_id, "");
    if (!has_policy)
        assert_int_equal(st->mta_sts_cached, 0);
    /* would_refuse only in testing mode, and then with the reason. */
    if (st->mta_sts_would_refuse) {
        assert_int_equal(st->mta_sts_would_refuse, 1);
        assert_int_equal(st->mta_sts, TM_MTA_STS_TESTING);
        assert_true(st->mta_sts_error[0] != '\0');
    }
    if (st->mta_sts == TM_MTA_STS_FETCH_FAILED)
        assert_true(st->mta_sts_error[0] != '\0');
    if (st->mta_sts == TM_MTA_STS_OFF)
        assert_string_equal(st->mta_sts_error, "");
    assert_int_equal(st->cert_verified_by == TM_VERIFIED_BY_NONE, !st->cert_verified);
    /* Enforce delivers only over TLS verified for the MX name. */
    if (st->mta_sts == TM_MTA_STS_ENFORCE && st->result == TM_RESULT_DELIVERED) {
        assert_int_equal(st->tls, 1);
        assert_int_equal(st->cert_verified, 1);
        assert_int_equal(st->cert_verified_by, TM_VERIFIED_BY_PKIX);
    }
}

static void set_policy(tm_policy *p, int pol)
{
    *p = (tm_policy)TM_POLICY_INIT;
    p->skip_verify = pol == P_SKIP || pol == P_SKIP_KEEP_OFF ? TM_ON : 0;
    p->keep_unverified_tls = pol == P_KEEP || pol == P_SKIP_KEEP_OFF ? TM_ON : 0;
    p->require_tls = pol == P_REQUIRE_OFF || pol == P_SKIP_KEEP_OFF ? TM_OFF
                     : pol == P_REQUIRE                             ? TM_ON
                                                                    : 0;
}

/*
 * Delivers a fresh message to local@<label>.sts.test (a unique local part)
 * with ctx, through `host` when not NULL, under the policy pol; prints the
 * outcome, checks what every delivery must satisfy and returns it.
 */
static void deliver(tm_context *ctx, const char *label, const char *host, int pol, delivery *d,
                    const char *what)
{
    char to_addr[256], body[512];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_policy p;
    tm_message m = TM_MESSAGE_INIT;
    tm_rcpt_status rcpt[1];
    long mark = log_size();

    memset(d, 0, sizeof *d);
    snprintf(d->domain, sizeof d->domain, "%s." ZONE, label);
    unique_local(d->local, sizeof d->local, "sts");
    snprintf(to_addr, sizeof to_addr, "%s@%s", d->local, d->domain);
    snprintf(body, sizeof body,
             "From: sender@tm.test\r\nTo: %s\r\nSubject: sts %s\r\n\r\n%s.\r\n", to_addr, what,
             what);
    so.host = host;
    set_policy(&p, pol);
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    m.rcpt_status = rcpt;
    m.rcpt_status_cap = 1;

    PEERS_STATUS(d->st);
    d->rc = tm_deliver(ctx, &m, &p, &so, &d->st);
    print_message("%-40s %s%s%s [%s]: %s (%s) mta-sts=%s id=[%s] cached=%d would-refuse=%d "
                  "tls=%d verified=%d mx=%s attempts=%u sts-error=[%s] tls-error=[%s]\n",
                  what, d->domain, host ? " via " : "", host ? host : "", pol_names[pol],
                  tm_result_name(d->st.result), tm_strerror(d->rc),
                  tm_mta_sts_name(d->st.mta_sts), d->st.mta_sts_id, d->st.mta_sts_cached,
                  d->st.mta_sts_would_refuse, d->st.tls, d->st.cert_verified, d->st.mx_host,
                  d->st.attempt_no, d->st.mta_sts_error, d->st.tls_error);
    /* The log first: a failed check then leaves no session of this
     * delivery to show up in the next one's window.  attempt_no: the
     * connections made (every address here listens). */
    d->log = log_sessions(mark, (int)d->st.attempt_no, d->st.result == TM_RESULT_DELIVERED);
    assert_int_equal(d->st.error, d->rc);
    check_consistent(&d->st);
    check_json(&d->st, rcpt);

    if (d->st.result == TM_RESULT_DELIVERED) {
        /* One transaction, over TLS exactly when the status says so. */
        assert_int_equal(d->log.mail_any, 1);
        assert_int_equal(d->log.mail_tls, d->st.tls);
    } else {
        /* Deferred: MAIL was never sent, in plaintext or otherwise. */
        assert_int_equal(d->log.mail_any, 0);
    }
    /* Under enforce nothing travels in plaintext. */
    if (d->st.mta_sts == TM_MTA_STS_ENFORCE)
        assert_int_equal(d->log.mail_plain, 0);

    /* The maildir: the message there exactly when delivered. */
    if (d->st.result == TM_RESULT_DELIVERED) {
        char *got = maildir_wait(d->domain, d->local, 1, 10000);
        assert_int_equal(d->rc, TM_OK);
        assert_non_null(got);
        assert_non_null(strstr(got, "Subject: sts "));
        /* Postfix's Received header says "using TLSv1.x" over TLS. */
        assert_int_equal(strstr(got, "using TLSv1.") != NULL, d->st.tls);
        free(got);
        tally_note_session(d->st.tls);
    } else {
        assert_int_equal(d->st.rcpt_delivered, 0);
        assert_int_equal(maildir_count(d->domain, d->local), 0);
        tally_note_absent(d->domain, d->local);
    }
}

/* Delivered under enforce: over TLS verified for mx_host. */
static void want_enforced(const delivery *d, const char *id, int cached, const char *mx_host)
{
    assert_int_equal(d->rc, TM_OK);
    assert_int_equal(d->st.result, TM_RESULT_DELIVERED);
    assert_int_equal(d->st.mta_sts, TM_MTA_STS_ENFORCE);
    assert_string_equal(d->st.mta_sts_id, id);
    if (cached != ANY)
        assert_int_equal(d->st.mta_sts_cached, cached);
    assert_int_equal(d->st.mta_sts_would_refuse, 0);
    assert_int_equal(d->st.tls, 1);
    assert_int_equal(d->st.cert_verified, 1);
    assert_int_equal(d->st.cert_verified_by, TM_VERIFIED_BY_PKIX);
    assert_int_equal(d->st.tls_failure, TM_TLS_FAILURE_NONE);
    assert_string_equal(d->st.mx_host, mx_host);
}

/* Deferred by enforce: no host matched and gave verified TLS. */
static void want_enforce_deferred(const delivery *d, const char *id, int cached)
{
    assert_int_equal(d->rc, TM_ETLSREQUIRED);
    assert_int_equal(d->st.result, TM_RESULT_DEFERRED);
    assert_int_equal(d->st.mta_sts, TM_MTA_STS_ENFORCE);
    assert_string_equal(d->st.mta_sts_id, id);
    if (cached != ANY)
        assert_int_equal(d->st.mta_sts_cached, cached);
    assert_int_equal(d->st.mta_sts_would_refuse, 0);
    assert_int_equal(d->st.cert_verified, 0);
    assert_true(d->st.mta_sts_error[0] != '\0');
    assert_int_equal(d->log.mail_any, 0);
}

/* Delivered as without a policy (state: no-policy, none, fetch-failed,
 * off), TLS as the normal policy gave it. */
static void want_normal(const delivery *d, int state, int tls, int verified)
{
    assert_int_equal(d->rc, TM_OK);
    assert_int_equal(d->st.result, TM_RESULT_DELIVERED);
    assert_int_equal(d->st.mta_sts, state);
    assert_int_equal(d->st.mta_sts_would_refuse, 0);
    assert_int_equal(d->st.tls, tls);
    assert_int_equal(d->st.cert_verified, verified);
    if (state == TM_MTA_STS_OFF || state == TM_MTA_STS_NO_POLICY) {
        assert_string_equal(d->st.mta_sts_id, "");
        assert_int_equal(d->st.mta_sts_cached, 0);
    }
}

/* Delivered in testing mode; would_refuse as enforce would have judged. */
static void want_testing(const delivery *d, const char *id, int would_refuse, int tls,
                         int verified)
{
    assert_int_equal(d->rc, TM_OK);
    assert_int_equal(d->st.result, TM_RESULT_DELIVERED);
    assert_int_equal(d->st.mta_sts, TM_MTA_STS_TESTING);
    assert_string_equal(d->st.mta_sts_id, id);
    assert_int_equal(d->st.mta_sts_would_refuse, would_refuse);
    assert_int_equal(d->st.tls, tls);
    assert_int_equal(d->st.cert_verified, verified);
    if (would_refuse)
        assert_true(d->st.mta_sts_error[0] != '\0');
    else
        assert_string_equal(d->st.mta_sts_error, "");
}

/* ---------------------------------------------------------------------- */
/* the cache's text */

typedef struct cache_line {
    char domain[256], id[64], mode[16], mx[1024];
    long long fetched, expires, used, max_age;
} cache_line;

/* The line of `domain` in a tm_sts_cache_list text; 0 if there is none. */
static int cache_find(const char *text, const char *domain, cache_line *out)
{
    char want[300];
    const char *p;

    snprintf(want, sizeof want, "policy %s ", domain);
    for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, want, strlen(want)) != 0)
            continue;
        memset(out, 0, sizeof *out);
        assert_int_equal(sscanf(p, "policy %255s %63s %lld %lld %lld %15s %lld %1023s",
                                out->domain, out->id, &out->fetched, &out->expires, &out->used,
                                out->mode, &out->max_age, out->mx),
                         8);
        return 1;
    }
    return 0;
}

static void cache_text(tm_context *ctx, char *buf, size_t size)
{
    int n = tm_sts_cache_list(ctx, buf, size);

    assert_true(n >= 0 && (size_t)n < size);
}

/* The cache of ctx holds domain's policy as fetched during this run. */
static void want_cached(tm_context *ctx, const char *domain, const char *id, const char *mode,
                        long long max_age, const char *mx)
{
    char text[8192];
    cache_line l;

    cache_text(ctx, text, sizeof text);
    assert_true(cache_find(text, domain, &l));
    assert_string_equal(l.id, id);
    assert_string_equal(l.mode, mode);
    assert_int_equal(l.max_age, max_age);
    assert_string_equal(l.mx, mx);
    assert_true(l.fetched >= (long long)t_start && l.fetched <= (long long)time(NULL));
    assert_int_equal(l.expires, l.fetched + l.max_age);
    assert_true(l.used >= l.fetched);
}

/* ---------------------------------------------------------------------- */
/* 1. enforce */

/*
 * enforce.sts.test: MX mx-valid, policy enforce with mx-valid.tm.test.
 * Delivered over TLS verified for mx-valid.tm.test, with the policy's id,
 * fetched once (cached=0), then from the cache (cached=1, no second GET),
 * under every delivery policy; the cache line says what was fetched.
 * Bug caught: no policy applied, a refetch on every delivery, a cache
 * line that does not say what the policy was.
 */
static void enforce_valid(void **state)
{
    delivery d;
    int pol, gets = gets_of("enforce");
    (void)state;

    deliver(ctx_main, "enforce", NULL, P_DEFAULT, &d, "enforce: matching, valid");
    want_enforced(&d, "e1", 0, "mx-valid.tm.test");
    assert_string_equal(d.st.mta_sts_error, "");
    assert_string_equal(d.st.mx_address, need_env("TM_TEST_MX_VALID_ADDR"));
    assert_int_equal(gets_of("enforce"), gets + 1);
    want_cached(ctx_main, "enforce." ZONE, "e1", "enforce", 86400, "mx-valid.tm.test");
    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        deliver(ctx_main, "enforce", NULL, pol, &d, "enforce: matching, valid, cached");
        want_enforced(&d, "e1", 1, "mx-valid.tm.test");
    }
    assert_int_equal(gets_of("enforce"), gets + 1);
}

/*
 * MX hosts matching no pattern are skipped, not even contacted: skip (MX
 * 10 mx-chain, whose certificate is valid, 20 mx-valid; the policy names
 * mx-valid only) and wildskip (MX 10 mx.wild.tm.test, 20 mx-valid; the
 * policy's *.tm.test stands for one label only) go to mx-valid, and no
 * connection reaches the first host; wild (*.wild.tm.test) matches
 * mx.wild.tm.test.  nomatch (the policy names other hosts only): deferred,
 * no connection at all.
 * Bug caught: the mx patterns not checked, a wildcard matching several
 * labels or none, delivery to the best MX whatever the policy says.
 */
static void enforce_mx_patterns(void **state)
{
    delivery d;
    sessions first;
    long mark;
    int pol;
    (void)state;

    for (pol = P_DEFAULT; pol <= P_SKIP; pol++) {
        mark = log_size();
        deliver(ctx_main, "skip", NULL, pol, &d, "enforce: first mx not in policy");
        want_enforced(&d, "s1", ANY, "mx-valid.tm.test");
        first = log_scan(mark, "mx-chain.tm.test");
        assert_int_equal(first.connects, 0);
        assert_int_equal(d.st.attempt_no, 1);

        mark = log_size();
        deliver(ctx_main, "wildskip", NULL, pol, &d, "enforce: *.tm.test, mx.wild.tm.test");
        want_enforced(&d, "ws1", ANY, "mx-valid.tm.test");
        first = log_scan(mark, "mx.wild.tm.test");
        assert_int_equal(first.connects, 0);

        deliver(ctx_main, "wild", NULL, pol, &d, "enforce: *.wild.tm.test");
        want_enforced(&d, "w1", ANY, "mx.wild.tm.test");
        assert_string_equal(d.st.mx_address, need_env("TM_TEST_MX_WILD_ADDR"));
    }
    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        deliver(ctx_main, "nomatch", NULL, pol, &d, "enforce: no mx matches");
        want_enforce_deferred(&d, "nm1", ANY);
        assert_int_equal(d.log.connects, 0);
        assert_int_equal(d.st.attempt_no, 0);
    }
}

/*
 * A certificate not valid for the MX name (mx-wrongname: another name;
 * mx-selfsigned: no trusted chain) under enforce: deferred with
 * TM_ETLSREQUIRED under every delivery policy - the default (which would
 * retry in plaintext), skip_verify, keep_unverified_tls, require_tls
 * explicitly off and their mix - and no MAIL in Postfix's log, in
 * plaintext or over TLS.
 * Bug caught: the plaintext fallback after a failed certificate, or
 * skip_verify / keep_unverified_tls accepting a certificate that enforce
 * refuses (RFC 8461 4.2).
 */
static void enforce_bad_certificate(void **state)
{
    delivery d;
    int pol;
    (void)state;

    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        deliver(ctx_main, "wrongname", NULL, pol, &d, "enforce: certificate for another name");
        want_enforce_deferred(&d, "wn1", ANY);
        assert_string_equal(d.st.mx_host, "mx-wrongname.tm.test");
        deliver(ctx_main, "selfsigned", NULL, pol, &d, "enforce: self-signed certificate");
        want_enforce_deferred(&d, "ss1", ANY);
        assert_string_equal(d.st.mx_host, "mx-selfsigned.tm.test");
        assert_true(d.log.connects >= 1);
    }
}

/*
 * STARTTLS not offered (mx-plain) or answered 500 (mx-refusetls) under
 * enforce: deferred under every policy, nothing sent in plaintext (the
 * default policy would deliver in plaintext on both).
 * Bug caught: the STARTTLS-stripping downgrade MTA-STS exists to stop.
 */
static void enforce_no_starttls(void **state)
{
    delivery d;
    int pol;
    (void)state;

    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        deliver(ctx_main, "plain", NULL, pol, &d, "enforce: starttls not offered");
        want_enforce_deferred(&d, "p1", ANY);
        assert_int_equal(d.st.tls, 0);
        assert_int_equal(d.st.tls_failure, TM_TLS_FAILURE_NOT_OFFERED);
        deliver(ctx_main, "refused", NULL, pol, &d, "enforce: starttls refused (500)");
        want_enforce_deferred(&d, "r1", ANY);
        assert_int_equal(d.st.tls, 0);
        assert_int_equal(d.st.tls_failure, TM_TLS_FAILURE_REFUSED);
    }
}

/*
 * badfirst: MX 10 mx-selfsigned, 20 mx-valid, both in the policy.  The
 * first fails the certificate check and is left; the message goes to
 * mx-valid, verified - never in plaintext to the first.
 * Bug caught: a failing host ending the walk, or retried in plaintext.
 */
static void enforce_failover(void **state)
{
    delivery d;
    sessions first;
    long mark;
    int pol;
    (void)state;

    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        mark = log_size();
        deliver(ctx_main, "badfirst", NULL, pol, &d, "enforce: bad cert, then valid");
        want_enforced(&d, "bf1", ANY, "mx-valid.tm.test");
        first = log_scan(mark, "mx-selfsigned.tm.test");
        assert_int_equal(first.mail_any, 0);
    }
}

/* ---------------------------------------------------------------------- */
/* 2. testing, none, no record */

/*
 * testing: delivered under the normal policy whatever the host does, and
 * the status says whether enforce would have refused it: no (mx-valid,
 * matching), the name (twrongname: plaintext fallback; with
 * keep_unverified_tls TLS unverified), no STARTTLS (tplain), STARTTLS
 * refused (trefused), no matching pattern (tnomatch, verified TLS).
 * Bug caught: testing enforcing, or would_refuse not set (or set on a
 * host enforce would take).
 */
static void testing_mode(void **state)
{
    delivery d;
    (void)state;

    deliver(ctx_main, "testing", NULL, P_DEFAULT, &d, "testing: all good");
    want_testing(&d, "t1", 0, 1, 1);
    assert_int_equal(d.st.mta_sts_cached, 0);
    deliver(ctx_main, "testing", NULL, P_DEFAULT, &d, "testing: all good, cached");
    want_testing(&d, "t1", 0, 1, 1);
    assert_int_equal(d.st.mta_sts_cached, 1);

    deliver(ctx_main, "twrongname", NULL, P_DEFAULT, &d, "testing: wrong name");
    want_testing(&d, "twn1", 1, 0, 0);
    assert_string_equal(d.st.mx_host, "mx-wrongname.tm.test");
    deliver(ctx_main, "twrongname", NULL, P_KEEP, &d, "testing: wrong name");
    want_testing(&d, "twn1", 1, 1, 0);
    deliver(ctx_main, "twrongname", NULL, P_SKIP, &d, "testing: wrong name");
    want_testing(&d, "twn1", 1, 1, 0);

    deliver(ctx_main, "tplain", NULL, P_DEFAULT, &d, "testing: starttls not offered");
    want_testing(&d, "tp1", 1, 0, 0);
    assert_int_equal(d.st.tls_failure, TM_TLS_FAILURE_NOT_OFFERED);

    deliver(ctx_main, "trefused", NULL, P_DEFAULT, &d, "testing: starttls refused");
    want_testing(&d, "tr1", 1, 0, 0);
    assert_int_equal(d.st.tls_failure, TM_TLS_FAILURE_REFUSED);

    deliver(ctx_main, "tnomatch", NULL, P_DEFAULT, &d, "testing: mx not in policy");
    want_testing(&d, "tnm1", 1, 1, 1);
    assert_string_equal(d.st.mx_host, "mx-valid.tm.test");
}

/*
 * Mode none (none.sts.test, MX mx-selfsigned): as without a policy - the
 * default policy's plaintext fallback delivers - with the id reported.
 * No TXT record (notxt, same host): no-policy, nothing fetched.
 * Bug caught: mode none enforcing or testing, a fetch without a record.
 */
static void none_and_no_record(void **state)
{
    delivery d;
    int gets = gets_of("notxt");
    (void)state;

    deliver(ctx_main, "none", NULL, P_DEFAULT, &d, "mode none");
    want_normal(&d, TM_MTA_STS_NONE, 0, 0);
    assert_string_equal(d.st.mta_sts_id, "n1");
    assert_string_equal(d.st.mta_sts_error, "");
    want_cached(ctx_main, "none." ZONE, "n1", "none", 86400, "-");
    deliver(ctx_main, "none", NULL, P_KEEP, &d, "mode none");
    want_normal(&d, TM_MTA_STS_NONE, 1, 0);
    assert_int_equal(d.st.mta_sts_cached, 1);

    deliver(ctx_main, "notxt", NULL, P_DEFAULT, &d, "no _mta-sts record");
    want_normal(&d, TM_MTA_STS_NO_POLICY, 0, 0);
    assert_int_equal(gets_of("notxt"), gets);
}

/* ---------------------------------------------------------------------- */
/* 3. the fetch fails */

/*
 * A TXT record, and the policy cannot be had: 404, a 301 (to
 * mta-sts.ok.test, whose enforce policy must not be fetched), text/html,
 * 70 KiB, no max_age, a certificate not valid for mta-sts.tlsfail.sts.test
 * (nothing requested), no address for mta-sts.noaddr.sts.test, nothing
 * listening on the port, a server that stalls under a delivery time
 * limit.  fetch-failed with the reason, and delivered as without a
 * policy: MX mx-selfsigned under the default policy, i.e. in plaintext
 * after the failed certificate (mx-valid over TLS for noaddr and slow).
 * Bug caught: a policy taken from an error page, a followed redirect, an
 * oversized or broken policy used, an unverified policy server believed,
 * a failed fetch treated as enforce (RFC 8461 3.3), or a stalled fetch
 * using up the delivery's whole time.
 */
static void fetch_fails(void **state)
{
    static const char *const labels[] = { "notfound", "redirect", "html", "big", "badsyntax" };
    tm_context *ctx;
    ctx_spec sp = spec_main();
    delivery d;
    size_t i;
    int ok_gets = https_gets("mta-sts.ok.test");
    (void)state;

    for (i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        int gets = gets_of(labels[i]);
        deliver(ctx_main, labels[i], NULL, P_DEFAULT, &d, "fetch fails");
        want_normal(&d, TM_MTA_STS_FETCH_FAILED, 0, 0);
        assert_int_equal(d.st.mta_sts_cached, 0);
        assert_int_equal(gets_of(labels[i]), gets + 1);
    }
    assert_int_equal(https_gets("mta-sts.ok.test"), ok_gets);

    deliver(ctx_main, "tlsfail", NULL, P_DEFAULT, &d, "fetch fails: certificate name");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 0, 0);
    assert_int_equal(gets_of("tlsfail"), 0);

    deliver(ctx_main, "noaddr", NULL, P_DEFAULT, &d, "fetch fails: no address");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 1, 1);
    assert_int_equal(gets_of("noaddr"), 0);

    /* sts_https_address: the fetch goes there, the name stays
     * mta-sts.noaddr.sts.test (SNI, Host, certificate). */
    sp.https_address = need_env("TM_STS_HTTPS_ADDR");
    ctx = make_ctx(&sp);
    deliver(ctx, "noaddr", NULL, P_DEFAULT, &d, "sts_https_address");
    want_enforced(&d, "na1", 0, "mx-valid.tm.test");
    assert_int_equal(gets_of("noaddr"), 1);
    tm_context_free(ctx);

    /* A policy server that sends its headers and then nothing for 4 s
     * (sts_https.py's "slow"), under a delivery limit of 3.6 s: the fetch
     * may take half of it, and the message still goes. */
    sp = spec_main();
    sp.delivery_timeout_ms = 3600;
    ctx = make_ctx(&sp);
    deliver(ctx, "slow", NULL, P_DEFAULT, &d, "fetch stalls, delivery limit");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 1, 1);
    assert_non_null(strstr(d.st.mta_sts_error, "timed out"));
    assert_int_equal(gets_of("slow"), 1);
    tm_context_free(ctx);

    /* Nothing listening. */
    sp = spec_main();
    sp.https_port = dead_port;
    ctx = make_ctx(&sp);
    deliver(ctx, "selfsigned", NULL, P_DEFAULT, &d, "fetch fails: nothing listening");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 0, 0);
    tm_context_free(ctx);
}

/* ---------------------------------------------------------------------- */
/* 4. the cache */

/*
 * blocked.sts.test (MX mx-selfsigned, enforce): fetched under id b1 and
 * deferred.  The cache saved to a file (tm_sts_cache_save) and loaded
 * into a context that sees id b2 (the second dnsmasq) and whose policy
 * server is unreachable (a dead port): the new id's fetch fails, the
 * cached b1 policy still holds - enforce, cached=1, deferred - where the
 * default policy would deliver in plaintext.
 * Bug caught: an attacker who blocks the policy fetch (and announces a new
 * id) switching MTA-STS off (RFC 8461 5.1).
 */
static void cache_survives_blocked_fetch(void **state)
{
    char path[700], text[8192];
    tm_context *ctx1, *ctx2;
    ctx_spec sp;
    cache_line l;
    delivery d;
    int line = -1, pol;
    (void)state;

    ctx1 = plain_ctx(0);
    deliver(ctx1, "blocked", NULL, P_DEFAULT, &d, "cache: first fetch");
    want_enforce_deferred(&d, "b1", 0);
    want_cached(ctx1, "blocked." ZONE, "b1", "enforce", 86400, "mx-selfsigned.tm.test");
    snprintf(path, sizeof path, "%s/blocked.cache", tmpdir);
    assert_int_equal(tm_sts_cache_save(ctx1, path), TM_OK);
    tm_context_free(ctx1);

    sp = spec_alt();
    sp.https_port = dead_port;
    ctx2 = make_ctx(&sp);
    assert_int_equal(tm_sts_cache_load(ctx2, path, &line), TM_OK);
    cache_text(ctx2, text, sizeof text);
    assert_true(cache_find(text, "blocked." ZONE, &l));
    assert_string_equal(l.id, "b1");
    for (pol = P_DEFAULT; pol < P_COUNT; pol++) {
        deliver(ctx2, "blocked", NULL, pol, &d, "cache: new id, fetch blocked");
        want_enforce_deferred(&d, "b1", 1);
    }
    /* Without the cache, the same context: fetch-failed, delivered. */
    tm_context_free(ctx2);
    ctx2 = make_ctx(&sp);
    deliver(ctx2, "blocked", NULL, P_DEFAULT, &d, "no cache: new id, fetch blocked");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 0, 0);
    tm_context_free(ctx2);
}

/* The host's cache store (sts_store / sts_lookup): entries by domain. */
typedef struct store {
    int stores, lookups;
    int n;
    char domain[8][256];
    char entry[8][2048];
    char looked_up[256];
} store;

static void store_cb(void *arg, const char *domain, const char *entry)
{
    store *s = arg;
    int i;

    s->stores++;
    assert_null(strchr(entry, '\n'));
    for (i = 0; i < s->n && strcmp(s->domain[i], domain) != 0; i++)
        ;
    if (i == 8)
        return;
    if (i == s->n)
        s->n++;
    snprintf(s->domain[i], sizeof s->domain[i], "%s", domain);
    snprintf(s->entry[i], sizeof s->entry[i], "%s", entry);
}

static int lookup_cb(void *arg, const char *domain, char *buf, size_t size)
{
    store *s = arg;
    int i;

    s->lookups++;
    snprintf(s->looked_up, sizeof s->looked_up, "%s", domain);
    for (i = 0; i < s->n; i++)
        if (strcmp(s->domain[i], domain) == 0 && strlen(s->entry[i]) < size) {
            memcpy(buf, s->entry[i], strlen(s->entry[i]) + 1);
            return TM_OK;
        }
    return TM_ENOTFOUND;
}

static const char *store_get(const store *s, const char *domain)
{
    int i;

    for (i = 0; i < s->n; i++)
        if (strcmp(s->domain[i], domain) == 0)
            return s->entry[i];
    return NULL;
}

/*
 * vanish.sts.test (MX mx-selfsigned, enforce, id v1): the policy fetched
 * with the first dnsmasq; the second has no _mta-sts record any more.  A
 * context on the second with the cache moved over - through
 * tm_sts_cache_list into a file and tm_sts_cache_load, and through the
 * host's store (sts_store called when the policy was fetched, sts_lookup
 * when the new context found nothing) - still enforces: cached=1, id v1,
 * deferred.  Without the cache: no-policy, delivered in plaintext.
 * Bug caught: a removed (or suppressed) TXT record dropping a cached
 * policy before its max_age (RFC 8461 5.1, 10.2), the host's store not
 * written or not asked.
 */
static void cache_survives_vanished_record(void **state)
{
    char path[700], text[8192];
    tm_context *ctx1, *ctx2;
    ctx_spec sp;
    store st1, st2;
    const char *entry;
    delivery d;
    int line = -1;
    (void)state;

    memset(&st1, 0, sizeof st1);
    sp = spec_main();
    sp.store = store_cb;
    sp.lookup = lookup_cb;
    sp.cache_arg = &st1;
    ctx1 = make_ctx(&sp);
    deliver(ctx1, "vanish", NULL, P_DEFAULT, &d, "cache: first fetch");
    want_enforce_deferred(&d, "v1", 0);
    entry = store_get(&st1, "vanish." ZONE);
    print_message("  stored %d time(s): %s\n", st1.stores, entry ? entry : "(nothing)");
    assert_non_null(entry);
#define VANISH_V1 "policy vanish." ZONE " v1 "
    assert_true(strncmp(entry, VANISH_V1, sizeof VANISH_V1 - 1) == 0);
    assert_non_null(strstr(entry, " enforce 86400 mx-selfsigned.tm.test"));
    cache_text(ctx1, text, sizeof text);
    snprintf(path, sizeof path, "%s/vanish.cache", tmpdir);
    write_file(path, text);
    tm_context_free(ctx1);

    /* No record, no cache: no policy. */
    ctx2 = plain_ctx(1);
    deliver(ctx2, "vanish", NULL, P_DEFAULT, &d, "record gone, no cache");
    want_normal(&d, TM_MTA_STS_NO_POLICY, 0, 0);
    /* The cache from tm_sts_cache_list, loaded. */
    assert_int_equal(tm_sts_cache_load(ctx2, path, &line), TM_OK);
    deliver(ctx2, "vanish", NULL, P_DEFAULT, &d, "record gone, cache loaded");
    want_enforce_deferred(&d, "v1", 1);
    deliver(ctx2, "vanish", NULL, P_SKIP_KEEP_OFF, &d, "record gone, cache loaded");
    want_enforce_deferred(&d, "v1", 1);
    tm_context_free(ctx2);

    /* The cache from the host's store. */
    memset(&st2, 0, sizeof st2);
    st2 = st1;
    st2.stores = st2.lookups = 0;
    sp = spec_alt();
    sp.store = store_cb;
    sp.lookup = lookup_cb;
    sp.cache_arg = &st2;
    ctx2 = make_ctx(&sp);
    deliver(ctx2, "vanish", NULL, P_DEFAULT, &d, "record gone, host's store");
    want_enforce_deferred(&d, "v1", 1);
    assert_true(st2.lookups >= 1);
    assert_string_equal(st2.looked_up, "vanish." ZONE);
    tm_context_free(ctx2);
}

/*
 * newid.sts.test (MX mx-selfsigned): enforce under id n1, deferred.  The
 * server's policy then changes to testing: under the same id the cached
 * enforce policy holds (nothing fetched).  The cache moved to a context
 * on the second dnsmasq (id n2): the new policy is fetched - cached=0,
 * id n2, testing - and it is the one in force: delivered (in plaintext
 * after the failed certificate), would_refuse=1; the cache now holds it.
 * Bug caught: a new id not fetched (a changed policy never seen), or the
 * old policy kept after a successful fetch.
 */
static void new_id_fetches(void **state)
{
    char path[700];
    tm_context *ctx1, *ctx2;
    delivery d;
    int line = -1, gets;
    (void)state;

    policy_write("newid", ENFORCE("mx: mx-selfsigned.tm.test\r\n"));
    ctx1 = plain_ctx(0);
    gets = gets_of("newid");
    deliver(ctx1, "newid", NULL, P_DEFAULT, &d, "id n1: enforce");
    want_enforce_deferred(&d, "n1", 0);
    assert_int_equal(gets_of("newid"), gets + 1);

    policy_write("newid", TESTING("mx: mx-selfsigned.tm.test\r\n"));
    deliver(ctx1, "newid", NULL, P_DEFAULT, &d, "id n1 again, policy changed");
    want_enforce_deferred(&d, "n1", 1);
    assert_int_equal(gets_of("newid"), gets + 1);
    snprintf(path, sizeof path, "%s/newid.cache", tmpdir);
    assert_int_equal(tm_sts_cache_save(ctx1, path), TM_OK);
    tm_context_free(ctx1);

    ctx2 = plain_ctx(1);
    assert_int_equal(tm_sts_cache_load(ctx2, path, &line), TM_OK);
    deliver(ctx2, "newid", NULL, P_DEFAULT, &d, "id n2: testing");
    want_testing(&d, "n2", 1, 0, 0);
    assert_int_equal(d.st.mta_sts_cached, 0);
    assert_int_equal(gets_of("newid"), gets + 2);
    want_cached(ctx2, "newid." ZONE, "n2", "testing", 86400, "mx-selfsigned.tm.test");
    deliver(ctx2, "newid", NULL, P_DEFAULT, &d, "id n2 again");
    want_testing(&d, "n2", 1, 0, 0);
    assert_int_equal(d.st.mta_sts_cached, 1);
    assert_int_equal(gets_of("newid"), gets + 2);
    tm_context_free(ctx2);
}

/*
 * expire.sts.test (MX mx-selfsigned, no TXT record): a cache file whose
 * entry expired (EXPIRES in the past) loads, and the entry is dropped -
 * no-policy, delivered; the same entry unexpired holds - enforce,
 * cached=1, deferred.  The host's store answering with the expired entry:
 * ignored.  A file that does not parse changes nothing (TM_ESYNTAX, the
 * line number).
 * Bug caught: a policy used past its max_age (RFC 8461 5.1), an expired
 * entry from the host's store believed.
 */
static void expired_entries(void **state)
{
    char path[700], text[1024], list[8192];
    long long now = (long long)time(NULL);
    tm_context *ctx;
    ctx_spec sp;
    cache_line l;
    store st;
    delivery d;
    int line = -1;
    (void)state;

    snprintf(path, sizeof path, "%s/expire.cache", tmpdir);
    snprintf(text, sizeof text,
             "# an entry that expired 100 s ago\n"
             "policy expire." ZONE " x1 %lld %lld %lld enforce 100 mx-selfsigned.tm.test\n",
             now - 1000, now - 100, now - 1000);
    write_file(path, text);
    ctx = plain_ctx(0);
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_OK);
    cache_text(ctx, list, sizeof list);
    assert_false(cache_find(list, "expire." ZONE, &l));
    deliver(ctx, "expire", NULL, P_DEFAULT, &d, "cache entry expired");
    want_normal(&d, TM_MTA_STS_NO_POLICY, 0, 0);

    snprintf(text, sizeof text,
             "policy expire." ZONE " x1 %lld %lld %lld enforce 86400 mx-selfsigned.tm.test\n",
             now - 10, now - 10 + 86400, now - 10);
    write_file(path, text);
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_OK);
    cache_text(ctx, list, sizeof list);
    assert_true(cache_find(list, "expire." ZONE, &l));
    deliver(ctx, "expire", NULL, P_DEFAULT, &d, "cache entry valid, no record");
    want_enforce_deferred(&d, "x1", 1);

    /* Broken: nothing changes. */
    write_file(path, "# fine\npolicy expire." ZONE " x1 1 2\n");
    assert_int_equal(tm_sts_cache_load(ctx, path, &line), TM_ESYNTAX);
    assert_int_equal(line, 2);
    cache_text(ctx, list, sizeof list);
    assert_true(cache_find(list, "expire." ZONE, &l));
    assert_int_equal(l.max_age, 86400);
    tm_context_free(ctx);

    memset(&st, 0, sizeof st);
    st.n = 1;
    snprintf(st.domain[0], sizeof st.domain[0], "expire." ZONE);
    snprintf(st.entry[0], sizeof st.entry[0],
             "policy expire." ZONE " x1 %lld %lld %lld enforce 100 mx-selfsigned.tm.test",
             now - 1000, now - 100, now - 1000);
    sp = spec_main();
    sp.lookup = lookup_cb;
    sp.cache_arg = &st;
    ctx = make_ctx(&sp);
    deliver(ctx, "expire", NULL, P_DEFAULT, &d, "host's store: expired entry");
    want_normal(&d, TM_MTA_STS_NO_POLICY, 0, 0);
    assert_true(st.lookups >= 1);
    tm_context_free(ctx);
}

/*
 * shortlived.sts.test: max_age 1.  Fetched (cached=0); the cache line
 * says EXPIRES = FETCHED + 1.  Two seconds later the policy has run out:
 * fetched again (cached=0, a second GET), though the id did not change.
 * Bug caught: max_age ignored (a policy kept for ever) or read in the
 * wrong unit.
 */
static void max_age_runs_out(void **state)
{
    tm_context *ctx;
    delivery d;
    int gets = gets_of("shortlived");
    (void)state;

    ctx = plain_ctx(0);
    deliver(ctx, "shortlived", NULL, P_DEFAULT, &d, "max_age 1: fetched");
    want_enforced(&d, "sl1", 0, "mx-valid.tm.test");
    assert_int_equal(gets_of("shortlived"), gets + 1);
    want_cached(ctx, "shortlived." ZONE, "sl1", "enforce", 1, "mx-valid.tm.test");
    sleep_ms(2000);
    deliver(ctx, "shortlived", NULL, P_DEFAULT, &d, "max_age 1: 2 s later");
    want_enforced(&d, "sl1", 0, "mx-valid.tm.test");
    assert_int_equal(gets_of("shortlived"), gets + 2);
    tm_context_free(ctx);
}

/* ---------------------------------------------------------------------- */
/* 5. switches, the host's fetcher, explicit hosts */

/*
 * mta_sts = TM_OFF: wrongname.sts.test (enforce, a certificate for
 * another name) is delivered as today - plaintext after the failed
 * certificate, TLS unverified with skip_verify - status "off", nothing
 * fetched.
 * Bug caught: the switch ignored.
 */
static void switched_off(void **state)
{
    ctx_spec sp = spec_main();
    tm_context *ctx;
    delivery d;
    int gets = gets_of("wrongname");
    (void)state;

    sp.mta_sts = TM_OFF;
    ctx = make_ctx(&sp);
    deliver(ctx, "wrongname", NULL, P_DEFAULT, &d, "mta_sts off");
    want_normal(&d, TM_MTA_STS_OFF, 0, 0);
    deliver(ctx, "wrongname", NULL, P_SKIP, &d, "mta_sts off");
    want_normal(&d, TM_MTA_STS_OFF, 1, 0);
    deliver(ctx, "enforce", NULL, P_DEFAULT, &d, "mta_sts off");
    want_normal(&d, TM_MTA_STS_OFF, 1, 1);
    assert_int_equal(gets_of("wrongname"), gets);
    tm_context_free(ctx);

    /* TM_ON is on. */
    sp.mta_sts = TM_ON;
    ctx = make_ctx(&sp);
    deliver(ctx, "wrongname", NULL, P_DEFAULT, &d, "mta_sts TM_ON");
    want_enforce_deferred(&d, "wn1", 0);
    tm_context_free(ctx);
}

/* The host's fetcher (sts_fetch). */
typedef struct fetcher {
    int calls;
    char domain[256], url[512];
    size_t size;
    const char *answer; /* NULL: fail */
} fetcher;

static int fetch_cb(void *arg, const char *domain, const char *url, char *body, size_t size,
                    size_t *len)
{
    fetcher *f = arg;
    size_t n;

    f->calls++;
    snprintf(f->domain, sizeof f->domain, "%s", domain);
    snprintf(f->url, sizeof f->url, "%s", url);
    f->size = size;
    if (!f->answer)
        return TM_ENOTFOUND;
    n = strlen(f->answer);
    if (n > size)
        return TM_EIO;
    memcpy(body, f->answer, n);
    *len = n;
    return TM_OK;
}

/*
 * sts_fetch: callback.sts.test has a TXT record and no policy on the
 * server (the built-in fetcher would get a 404).  The host's fetcher is
 * asked once with the domain and the well-known URL and its enforce
 * policy applies (delivered to mx-valid, verified); the server sees no
 * request.  A fetcher that fails: fetch-failed, delivered.
 * Bug caught: the callback not used, or the built-in fetcher used too.
 */
static void host_fetcher(void **state)
{
    ctx_spec sp = spec_main();
    tm_context *ctx;
    fetcher f;
    delivery d;
    (void)state;

    memset(&f, 0, sizeof f);
    f.answer = "version: STSv1\nmode: enforce\nmx: mx-valid.tm.test\nmax_age: 3600\n";
    sp.fetch = fetch_cb;
    sp.fetch_arg = &f;
    ctx = make_ctx(&sp);
    deliver(ctx, "callback", NULL, P_DEFAULT, &d, "host's fetcher");
    want_enforced(&d, "cb1", 0, "mx-valid.tm.test");
    assert_int_equal(f.calls, 1);
    assert_string_equal(f.domain, "callback." ZONE);
    assert_string_equal(f.url, "https://mta-sts.callback." ZONE "/.well-known/mta-sts.txt");
    assert_true(f.size >= 65536);
    want_cached(ctx, "callback." ZONE, "cb1", "enforce", 3600, "mx-valid.tm.test");
    deliver(ctx, "callback", NULL, P_DEFAULT, &d, "host's fetcher, cached");
    want_enforced(&d, "cb1", 1, "mx-valid.tm.test");
    assert_int_equal(f.calls, 1);
    tm_context_free(ctx);

    memset(&f, 0, sizeof f);
    ctx = make_ctx(&sp);
    deliver(ctx, "callback", NULL, P_DEFAULT, &d, "host's fetcher fails");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 1, 1);
    assert_int_equal(f.calls, 1);
    /* The host's fetcher for a domain whose server has a policy. */
    deliver(ctx, "wrongname", NULL, P_DEFAULT, &d, "host's fetcher fails");
    want_normal(&d, TM_MTA_STS_FETCH_FAILED, 0, 0);
    assert_int_equal(f.calls, 2);
    tm_context_free(ctx);
    assert_int_equal(gets_of("callback"), 0);
}

/*
 * An explicit host (tm_session_options.host) is not an MX host: MTA-STS
 * does not apply ("off"), the default policy delivers in plaintext to
 * mx-wrongname although wrongname.sts.test enforces.
 * Bug caught: a policy applied to a host the caller chose (RFC 8461
 * covers MX delivery only), or applied by the domain to the wrong host.
 */
static void explicit_host(void **state)
{
    delivery d;
    (void)state;

    deliver(ctx_main, "wrongname", "mx-wrongname.tm.test", P_DEFAULT, &d, "explicit host");
    want_normal(&d, TM_MTA_STS_OFF, 0, 0);
    deliver(ctx_main, "wrongname", "mx-wrongname.tm.test", P_SKIP, &d, "explicit host");
    want_normal(&d, TM_MTA_STS_OFF, 1, 0);
}

/* ---------------------------------------------------------------------- */
/* 6. sessions */

/* One message on an open session. */
static int session_send(tm_session *s, const char *domain, char *local, size_t size,
                        tm_delivery_status *st)
{
    char to_addr[256], body[256];
    const char *to[1] = { to_addr };
    tm_message m = TM_MESSAGE_INIT;
    int rc;

    unique_local(local, size, "stssession");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, domain);
    snprintf(body, sizeof body, "Subject: sts session\r\n\r\nsession.\r\n");
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    PEERS_STATUS(*st);
    rc = tm_send(s, &m, st);
    print_message("session send to %s: %s (%s) mta-sts=%s id=[%s] tls=%d verified=%d mx=%s\n",
                  to_addr, tm_result_name(st->result), tm_strerror(rc),
                  tm_mta_sts_name(st->mta_sts), st->mta_sts_id, st->tls, st->cert_verified,
                  st->mx_host);
    check_consistent(st);
    check_json(st, NULL);
    return rc;
}

/* A session to <label>.sts.test whose tm_starttls under pol must fail:
 * nothing is sent, nothing arrives. */
static void session_refused(const char *label, int pol)
{
    char domain[128], local[64];
    tm_session *s = NULL;
    tm_delivery_status st;
    tm_policy p;
    long mark = log_size();
    sessions log;
    int rc;

    snprintf(domain, sizeof domain, "%s." ZONE, label);
    set_policy(&p, pol);
    PEERS_STATUS(st);
    rc = tm_session_open(&s, ctx_main, domain, NULL, &st);
    print_message("session open %s: %s mta-sts=%s mx=%s\n", domain, tm_strerror(rc),
                  tm_mta_sts_name(st.mta_sts), st.mx_host);
    if (rc == TM_OK) {
        PEERS_STATUS(st);
        rc = tm_starttls(s, &p, &st);
        print_message("starttls [%s]: %s mta-sts=%s tls-error=[%s] sts-error=[%s]\n",
                      pol_names[pol], tm_strerror(rc), tm_mta_sts_name(st.mta_sts), st.tls_error,
                      st.mta_sts_error);
        assert_int_equal(rc, TM_ETLSREQUIRED);
        assert_int_equal(st.mta_sts, TM_MTA_STS_ENFORCE);
        assert_int_equal(st.cert_verified, 0);
        rc = session_send(s, domain, local, sizeof local, &st);
        assert_int_not_equal(rc, TM_OK);
        assert_int_not_equal(st.result, TM_RESULT_DELIVERED);
        tm_session_close(s);
        assert_int_equal(maildir_count(domain, local), 0);
        tally_note_absent(domain, local);
    } else {
        assert_null(s);
        assert_int_not_equal(st.result, TM_RESULT_DELIVERED);
    }
    log = log_sessions(mark, 0, 0);
    assert_int_equal(log.mail_any, 0);
}

/*
 * The session API under enforce: to enforce.sts.test, tm_starttls gives
 * verified TLS and two messages go over the session, mta_sts "enforce"
 * in each status.  To badfirst.sts.test the session opened on
 * mx-selfsigned moves on to mx-valid in tm_starttls.  To wrongname and
 * plain (skip_verify, the default policy): tm_starttls fails with
 * TM_ETLSREQUIRED and tm_send sends nothing; to nomatch nothing is sent
 * either.
 * Bug caught: the session path missing the MTA-STS host policy that
 * tm_deliver applies.
 */
static void sessions_api(void **state)
{
    tm_session *s = NULL;
    tm_delivery_status st;
    char local[64];
    long mark;
    sessions log;
    int i;
    (void)state;

    mark = log_size();
    PEERS_STATUS(st);
    assert_int_equal(tm_session_open(&s, ctx_main, "enforce." ZONE, NULL, &st), TM_OK);
    print_message("session open enforce." ZONE ": mta-sts=%s mx=%s\n", tm_mta_sts_name(st.mta_sts),
                  st.mx_host);
    PEERS_STATUS(st);
    assert_int_equal(tm_starttls(s, NULL, &st), TM_OK);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_int_equal(st.mta_sts, TM_MTA_STS_ENFORCE);
    assert_string_equal(st.mta_sts_id, "e1");
    for (i = 0; i < 2; i++) {
        char *got;
        assert_int_equal(session_send(s, "enforce." ZONE, local, sizeof local, &st), TM_OK);
        assert_int_equal(st.result, TM_RESULT_DELIVERED);
        assert_int_equal(st.tls, 1);
        assert_int_equal(st.mta_sts, TM_MTA_STS_ENFORCE);
        assert_string_equal(st.mta_sts_id, "e1");
        assert_string_equal(st.mx_host, "mx-valid.tm.test");
        got = maildir_wait("enforce." ZONE, local, 1, 10000);
        assert_non_null(got);
        assert_non_null(strstr(got, "using TLSv1."));
        free(got);
    }
    tally_tls++; /* one session, two transactions */
    tm_session_close(s);
    log = log_sessions(mark, 1, 1);
    assert_int_equal(log.mail_plain, 0);
    assert_int_equal(log.mail_tls, 1);

    mark = log_size();
    PEERS_STATUS(st);
    assert_int_equal(tm_session_open(&s, ctx_main, "badfirst." ZONE, NULL, &st), TM_OK);
    print_message("session open badfirst." ZONE ": mta-sts=%s mx=%s\n",
                  tm_mta_sts_name(st.mta_sts), st.mx_host);
    PEERS_STATUS(st);
    assert_int_equal(tm_starttls(s, NULL, &st), TM_OK);
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    assert_string_equal(st.mx_host, "mx-valid.tm.test");
    assert_int_equal(session_send(s, "badfirst." ZONE, local, sizeof local, &st), TM_OK);
    assert_int_equal(st.mta_sts, TM_MTA_STS_ENFORCE);
    tally_tls++;
    tm_session_close(s);
    log = log_sessions(mark, 2, 1);
    assert_int_equal(log.mail_plain, 0);
    assert_int_equal(log.mail_tls, 1);

    session_refused("wrongname", P_SKIP);
    session_refused("wrongname", P_DEFAULT);
    session_refused("plain", P_DEFAULT);
    session_refused("refused", P_REQUIRE_OFF);
    session_refused("nomatch", P_DEFAULT);
}

/* ---------------------------------------------------------------------- */

/*
 * Last: a message the peers surely deliver, waited for (Postfix has then
 * worked through what came before it), then every mailbox that had to stay
 * empty is looked at again, and the log's transactions since the start are
 * counted: as many plaintext and TLS sessions with MAIL as deliveries said.
 * Bug caught: a message deferred in the status but sent all the same.
 */
static void nothing_arrived_late(void **state)
{
    delivery d;
    (void)state;

    deliver(ctx_main, "enforce", NULL, P_DEFAULT, &d, "sentinel");
    want_enforced(&d, "e1", 1, "mx-valid.tm.test");
    tally_check(log_start, 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(enforce_valid),
        cmocka_unit_test(enforce_mx_patterns),
        cmocka_unit_test(enforce_bad_certificate),
        cmocka_unit_test(enforce_no_starttls),
        cmocka_unit_test(enforce_failover),
        cmocka_unit_test(testing_mode),
        cmocka_unit_test(none_and_no_record),
        cmocka_unit_test(fetch_fails),
        cmocka_unit_test(cache_survives_blocked_fetch),
        cmocka_unit_test(cache_survives_vanished_record),
        cmocka_unit_test(new_id_fetches),
        cmocka_unit_test(expired_entries),
        cmocka_unit_test(max_age_runs_out),
        cmocka_unit_test(switched_off),
        cmocka_unit_test(host_fetcher),
        cmocka_unit_test(explicit_host),
        cmocka_unit_test(sessions_api),
        cmocka_unit_test(nothing_arrived_late),
    };
    return cmocka_run_group_tests_name("sts-postfix", tests, group_setup, group_teardown);
}
