/*
 * test_resumption_postfix.c - TLS session resumption against a real Postfix
 * on loopback (tests/peers/peers.py): two deliveries with one context to
 * mx-valid resume, an untrusted certificate (mx-selfsigned) is never
 * believed because a session was resumed, a reloaded trust store never
 * resumes a session the old store verified, and ca_path (a directory of
 * CA certificates) trusts what it holds.  What arrived is checked in
 * Postfix's maildir.  The hostile-server cases (what the ClientHello
 * offered, tickets with the EHLO reply, a server that changed) are
 * test_resumption.c.
 *
 * Every case names the bug it catches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "peers.h"

#define DOMAIN "example.test"

enum { P_DEFAULT, P_REQUIRE, P_SKIP, P_KEEP };
static const char *const pol_names[] = { "default", "require_tls", "skip_verify",
                                         "keep_unverified_tls" };

static char tmpdir[512];

static int group_setup(void **state)
{
    const char *t = getenv("TMPDIR");
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/tm-resumption.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    char cmd[600];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tmpdir/name (static buffers, sixteen slots: enough for one test). */
static const char *tmp_path(const char *name)
{
    static char buf[16][700];
    static int slot;
    slot = (slot + 1) % 16;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", tmpdir, name);
    return buf[slot];
}

/* A context for the peers with the trust store given (ca_file and/or
 * ca_path; both NULL is the system store): what tm_context_new says. */
static int context_new(tm_context **out, const char *ca_file, const char *ca_path)
{
    tm_context_options o;

    *out = NULL;
    assert_int_equal(tm_context_options_init(&o, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    o.ca_file = ca_file;
    o.ca_path = ca_path;
    o.dns_server = need_env("TM_TEST_DNS");
    o.port = (unsigned int)atoi(need_env("TM_TEST_PORT"));
    o.helo_name = "client.tm.test";
    o.command_timeout_ms = 10000;
    return tm_context_new(out, &o);
}

/* Writes text to path through a rename, as a rotation would. */
static void write_text(const char *path, const char *text)
{
    char tmp[800];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s.new", path);
    f = fopen(tmp, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

/* The file's content (malloc'd). */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long len;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len > 0);
    rewind(f);
    buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void copy_file(const char *from, const char *to)
{
    char *text = read_text(from);
    write_text(to, text);
    free(text);
}

static void run(const char *cmd)
{
    if (system(cmd) != 0) {
        print_error("failed: %s\n", cmd);
        fail();
    }
}

/* A CA that has nothing to do with the peers' (PEM, made with openssl). */
static void make_unrelated_ca(const char *pem)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout '%s.key' -out '%s' -subj '/CN=unrelated test CA' -days 30 "
             ">/dev/null 2>&1",
             pem, pem);
    run(cmd);
}

/* One delivery of a fresh message to host_env under a policy; the status
 * is checked against the maildir: delivered means it arrived (over TLS
 * exactly when tls says so), anything else that nothing arrived. */
static int deliver(tm_context *ctx, const char *host_env, int pol, tm_delivery_status *st,
                   const char *what)
{
    char local[64], to_addr[128], body[512];
    const char *to[1] = { to_addr };
    tm_session_options so = TM_SESSION_OPTIONS_INIT;
    tm_policy p = TM_POLICY_INIT;
    tm_message m = TM_MESSAGE_INIT;
    tm_rcpt_status rcpt[1];
    int rc;

    unique_local(local, sizeof local, "resume");
    snprintf(to_addr, sizeof to_addr, "%s@%s", local, DOMAIN);
    snprintf(body, sizeof body,
             "From: sender@tm.test\r\nTo: %s\r\nSubject: resumption %s\r\n\r\n%s.\r\n", to_addr,
             what, what);
    so.host = need_env(host_env);
    p.require_tls = pol == P_REQUIRE;
    p.skip_verify = pol == P_SKIP;
    p.keep_unverified_tls = pol == P_KEEP;
    m.from = "sender@tm.test";
    m.to = to;
    m.to_count = 1;
    m.data = body;
    m.size = strlen(body);
    m.rcpt_status = rcpt;
    m.rcpt_status_cap = 1;

    PEERS_STATUS(*st);
    rc = tm_deliver(ctx, &m, &p, &so, st);
    print_message("%s to %s [%s]: rc=%d result=%s tls=%d verified=%d resumed=%d %s "
                  "tls-error=[%s]\n",
                  what, so.host, pol_names[pol], rc, tm_result_name(st->result), st->tls,
                  st->cert_verified, st->tls_resumed, st->tls_version, st->tls_error);
    assert_int_equal(st->error, rc);
    if (st->tls)
        assert_true(strcmp(st->tls_version, "TLSv1.2") == 0 ||
                    strcmp(st->tls_version, "TLSv1.3") == 0);
    else
        assert_int_equal(st->tls_resumed, 0);
    if (st->result == TM_RESULT_DELIVERED) {
        char *got = maildir_wait(DOMAIN, local, 1, 10000);
        assert_non_null(got);
        assert_non_null(strstr(got, "Subject: resumption "));
        /* Postfix's Received header says "using TLSv1.x" over TLS. */
        assert_int_equal(strstr(got, "using TLSv1.") != NULL, st->tls);
        free(got);
    } else {
        sleep_ms(300);
        assert_int_equal(maildir_count(DOMAIN, local), 0);
    }
    return rc;
}

/* Delivered over TLS, verified as said, resumed as said. */
static void want_tls(const tm_delivery_status *st, int verified, int resumed)
{
    assert_int_equal(st->error, TM_OK);
    assert_int_equal(st->result, TM_RESULT_DELIVERED);
    assert_int_equal(st->tls, 1);
    assert_int_equal(st->cert_verified, verified);
    assert_int_equal(st->tls_resumed, resumed);
    assert_int_equal(st->tls_failure, TM_TLS_FAILURE_NONE);
    if (verified)
        assert_string_equal(st->tls_error, "");
    else
        assert_true(st->tls_error[0] != '\0');
}

/* The default policy's answer to an invalid certificate: delivered over a
 * fresh plaintext connection, never resumed, never verified. */
static void want_plain_fallback(const tm_delivery_status *st)
{
    assert_int_equal(st->error, TM_OK);
    assert_int_equal(st->result, TM_RESULT_DELIVERED);
    assert_int_equal(st->tls, 0);
    assert_int_equal(st->cert_verified, 0);
    assert_int_equal(st->tls_resumed, 0);
    assert_int_equal(st->tls_failure, TM_TLS_FAILURE_CERTIFICATE);
    assert_int_equal(st->attempt_no, 2);
}

/*
 * Resumption works: two deliveries to mx-valid (the test CA) with one
 * context.  The first is a full handshake (tls_resumed 0), the second
 * resumes it (tls_resumed 1), both over TLS with the certificate verified,
 * in the version Postfix chose (TLS 1.2 with mbedTLS 2.28, TLS 1.3 with
 * 3.6), and both messages arrive over TLS.
 * Bug caught: no session cache, a cache never offered, a session Postfix
 * does not accept, or tls_resumed that does not say so.
 */
static void resume_valid(void **state)
{
    tm_context *ctx;
    tm_delivery_status st1, st2;
    (void)state;

    assert_int_equal(context_new(&ctx, need_env("TM_TEST_CA"), NULL), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st1, "first");
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st2, "second");
    tm_context_free(ctx);
    want_tls(&st1, 1, 0);
    want_tls(&st2, 1, 1);
    assert_string_equal(st2.tls_version, st1.tls_version);
    assert_string_equal(st2.mx_host, need_env("TM_TEST_MX_VALID"));
}

/*
 * An untrusted certificate (mx-selfsigned) under require_tls, three times
 * in a row with one context: every try deferred with TM_ETLSREQUIRED,
 * certificate-verified 0 each time, nothing delivered.
 * Bug caught: a resumed TLS 1.3 PSK session (no certificate in that
 * handshake) reported cert_verified=1 and the second try delivered.
 */
static void require_selfsigned_thrice(void **state)
{
    tm_context *ctx;
    tm_delivery_status st;
    int i;
    (void)state;

    assert_int_equal(context_new(&ctx, need_env("TM_TEST_CA"), NULL), TM_OK);
    for (i = 0; i < 3; i++) {
        int rc = deliver(ctx, "TM_TEST_MX_SELFSIGNED", P_REQUIRE, &st, "untrusted, required");
        assert_int_equal(rc, TM_ETLSREQUIRED);
        assert_int_equal(st.result, TM_RESULT_DEFERRED);
        assert_int_equal(st.tls, 0);
        assert_int_equal(st.cert_verified, 0);
        assert_int_equal(st.tls_resumed, 0);
        assert_int_equal(st.tls_failure, TM_TLS_FAILURE_CERTIFICATE);
        assert_int_equal(st.rcpt_delivered, 0);
    }
    tm_context_free(ctx);
}

/*
 * keep_unverified_tls, then the default policy, one context, mx-selfsigned:
 * the first over TLS unverified; the second neither resumes that session
 * nor reports it verified, and does what the default says of an invalid
 * certificate: a fresh plaintext connection.
 * Bug caught: a session kept by a looser policy resumed (and believed)
 * under a stricter one.
 */
static void keep_then_default(void **state)
{
    tm_context *ctx;
    tm_delivery_status st1, st2;
    (void)state;

    assert_int_equal(context_new(&ctx, need_env("TM_TEST_CA"), NULL), TM_OK);
    deliver(ctx, "TM_TEST_MX_SELFSIGNED", P_KEEP, &st1, "kept unverified");
    deliver(ctx, "TM_TEST_MX_SELFSIGNED", P_DEFAULT, &st2, "then the default");
    tm_context_free(ctx);
    want_tls(&st1, 0, 0);
    want_plain_fallback(&st2);
}

/* Twice to mx-selfsigned under one policy that accepts it: the second may
 * be resumed, certificate-verified stays 0. */
static void unverified_twice(int pol)
{
    tm_context *ctx;
    tm_delivery_status st1, st2;

    assert_int_equal(context_new(&ctx, need_env("TM_TEST_CA"), NULL), TM_OK);
    deliver(ctx, "TM_TEST_MX_SELFSIGNED", pol, &st1, "unverified, first");
    deliver(ctx, "TM_TEST_MX_SELFSIGNED", pol, &st2, "unverified, second");
    tm_context_free(ctx);
    want_tls(&st1, 0, 0);
    want_tls(&st2, 0, st2.tls_resumed);
    print_message("  second delivery %s\n", st2.tls_resumed ? "resumed" : "not resumed");
}

/* keep_unverified_tls twice.  Bug caught: the resumed session reported
 * cert_verified=1. */
static void keep_twice(void **state)
{
    (void)state;
    unverified_twice(P_KEEP);
}

/* skip_verify twice.  Bug caught: the resumed session reported
 * cert_verified=1. */
static void skip_twice(void **state)
{
    (void)state;
    unverified_twice(P_SKIP);
}

/*
 * The trust store reloaded (tm_context_reload_ca), ca_file a copy of the
 * test CA in a temp file.  Verified and resumable before (under the
 * default policy and under skip_verify); the file replaced by an unrelated
 * CA and reloaded: nothing verified under the old store is resumed, the
 * certificate is judged again and fails (default: a new plaintext
 * connection; skip_verify: TLS, unverified).  The test CA back, reloaded:
 * verified again, and the session made under the unrelated store is not
 * resumed either.  A reload from a file without a certificate, or from no
 * file, fails with TM_ECAFILE and the store in use stays.
 * Bug caught: sessions outliving the store that verified them (a resumed
 * session reported verified after its CA was removed), a reload that did
 * not re-read the file, a failed reload that emptied the store.
 */
static void reload_ca(void **state)
{
    const char *ca = tmp_path("reload-ca.pem"), *other = tmp_path("unrelated-ca.pem");
    tm_context *ctx;
    tm_delivery_status st;
    (void)state;

    copy_file(need_env("TM_TEST_CA"), ca);
    make_unrelated_ca(other);
    assert_int_equal(context_new(&ctx, ca, NULL), TM_OK);
    assert_int_equal(tm_context_reload_ca(NULL), TM_EINVAL);

    /* Verified, and sessions cached and resumed under both policies. */
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "test CA");
    want_tls(&st, 1, 0);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "test CA, again");
    want_tls(&st, 1, 1);
    deliver(ctx, "TM_TEST_MX_VALID", P_SKIP, &st, "test CA");
    want_tls(&st, 1, 0);
    deliver(ctx, "TM_TEST_MX_VALID", P_SKIP, &st, "test CA, again");
    want_tls(&st, 1, 1);

    /* An unrelated CA: the sessions verified under the test CA are gone. */
    copy_file(other, ca);
    assert_int_equal(tm_context_reload_ca(ctx), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "unrelated CA");
    want_plain_fallback(&st);
    deliver(ctx, "TM_TEST_MX_VALID", P_SKIP, &st, "unrelated CA");
    want_tls(&st, 0, 0);

    /* The test CA back: verified again; the session the unrelated store
     * judged (skip_verify, unverified) is not resumed. */
    copy_file(need_env("TM_TEST_CA"), ca);
    assert_int_equal(tm_context_reload_ca(ctx), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "test CA back");
    want_tls(&st, 1, 0);
    deliver(ctx, "TM_TEST_MX_VALID", P_SKIP, &st, "test CA back");
    want_tls(&st, 1, 0);

    /* No certificate in the file: TM_ECAFILE, the test CA stays in use. */
    write_text(ca, "no certificate here\n");
    assert_int_equal(tm_context_reload_ca(ctx), TM_ECAFILE);
    deliver(ctx, "TM_TEST_MX_VALID", P_REQUIRE, &st, "after a failed reload");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    /* No file at all: the same. */
    assert_int_equal(unlink(ca), 0);
    assert_int_equal(tm_context_reload_ca(ctx), TM_ECAFILE);
    deliver(ctx, "TM_TEST_MX_VALID", P_REQUIRE, &st, "after a reload from no file");
    assert_int_equal(st.tls, 1);
    assert_int_equal(st.cert_verified, 1);
    tm_context_free(ctx);
}

/*
 * ca_path: a directory of CA certificates, ca_file NULL.  With the test CA
 * in it as PEM (and a file that does not parse next to it), and again as
 * DER alone, mx-valid verifies.  A directory without any CA (empty, only
 * junk, or missing) is TM_ECAFILE at tm_context_new.  ca_file and ca_path
 * together trust both.  A CA added to the directory counts after
 * tm_context_reload_ca.
 * Bug caught: ca_path ignored (the system store used instead), one file
 * that does not parse failing the whole directory, an empty store accepted.
 */
static void ca_path(void **state)
{
    const char *pem_dir = tmp_path("capath-pem"), *der_dir = tmp_path("capath-der");
    const char *empty_dir = tmp_path("capath-empty"), *junk_dir = tmp_path("capath-junk");
    const char *grow_dir = tmp_path("capath-grow"), *other = tmp_path("unrelated-ca-2.pem");
    char cmd[2048], path[800];
    tm_context *ctx;
    tm_delivery_status st;
    (void)state;

    assert_int_equal(mkdir(pem_dir, 0700), 0);
    assert_int_equal(mkdir(der_dir, 0700), 0);
    assert_int_equal(mkdir(empty_dir, 0700), 0);
    assert_int_equal(mkdir(junk_dir, 0700), 0);
    assert_int_equal(mkdir(grow_dir, 0700), 0);
    snprintf(path, sizeof path, "%s/tlsmail-test-ca.pem", pem_dir);
    copy_file(need_env("TM_TEST_CA"), path);
    snprintf(path, sizeof path, "%s/junk.pem", pem_dir);
    write_text(path, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                     "-----END CERTIFICATE-----\n");
    snprintf(path, sizeof path, "%s/junk.pem", junk_dir);
    write_text(path, "not a certificate\n");
    snprintf(cmd, sizeof cmd, "openssl x509 -in '%s' -outform der -out '%s/tlsmail-test-ca.der'",
             need_env("TM_TEST_CA"), der_dir);
    run(cmd);
    make_unrelated_ca(other);

    /* PEM with junk beside it. */
    assert_int_equal(context_new(&ctx, NULL, pem_dir), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_REQUIRE, &st, "ca_path, PEM");
    want_tls(&st, 1, 0);
    tm_context_free(ctx);

    /* DER. */
    assert_int_equal(context_new(&ctx, NULL, der_dir), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_REQUIRE, &st, "ca_path, DER");
    want_tls(&st, 1, 0);
    tm_context_free(ctx);

    /* ca_file and ca_path: both trusted. */
    assert_int_equal(context_new(&ctx, other, pem_dir), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_REQUIRE, &st, "ca_file unrelated, ca_path the test CA");
    want_tls(&st, 1, 0);
    tm_context_free(ctx);

    /* No CA in the directory. */
    assert_int_equal(context_new(&ctx, NULL, empty_dir), TM_ECAFILE);
    assert_null(ctx);
    assert_int_equal(context_new(&ctx, NULL, junk_dir), TM_ECAFILE);
    assert_null(ctx);
    assert_int_equal(context_new(&ctx, NULL, tmp_path("capath-missing")), TM_ECAFILE);
    assert_null(ctx);

    /* A directory that grows: the unrelated CA only, then the test CA too
     * and a reload. */
    snprintf(path, sizeof path, "%s/unrelated.pem", grow_dir);
    copy_file(other, path);
    assert_int_equal(context_new(&ctx, NULL, grow_dir), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "ca_path, unrelated CA only");
    want_plain_fallback(&st);
    snprintf(path, sizeof path, "%s/tlsmail-test-ca.pem", grow_dir);
    copy_file(need_env("TM_TEST_CA"), path);
    assert_int_equal(tm_context_reload_ca(ctx), TM_OK);
    deliver(ctx, "TM_TEST_MX_VALID", P_DEFAULT, &st, "ca_path, test CA added");
    want_tls(&st, 1, 0);
    tm_context_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resume_valid),
        cmocka_unit_test(require_selfsigned_thrice),
        cmocka_unit_test(keep_then_default),
        cmocka_unit_test(keep_twice),
        cmocka_unit_test(skip_twice),
        cmocka_unit_test(reload_ca),
        cmocka_unit_test(ca_path),
    };
    return cmocka_run_group_tests_name("resumption-postfix", tests, group_setup, group_teardown);
}
