/*
 * test_status.c - error strings, result names, initialisers, the status
 * helpers and the JSON writer (exact output, escaping, snprintf semantics,
 * worst case, validity checked by a strict parser and by Python's).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* ---- a strict JSON validator (RFC 8259, UTF-8 checked) ---- */

typedef struct jp {
    const unsigned char *p, *end;
    int depth;
} jp;

static void ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int lit(jp *j, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, s, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int hexd(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int str(jp *j)
{
    if (j->p >= j->end || *j->p != '"')
        return 0;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = *j->p;
        if (c == '"') {
            j->p++;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            j->p++;
            if (j->p >= j->end)
                return 0;
            c = *j->p++;
            if (c == 'u') {
                int i;
                for (i = 0; i < 4; i++)
                    if (j->p >= j->end || !hexd(*j->p++))
                        return 0;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
            continue;
        }
        if (c < 0x80) {
            j->p++;
            continue;
        }
        {
            /* UTF-8: lead byte, continuation bytes, no overlongs,
             * surrogates or values above U+10FFFF */
            int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
            unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
            unsigned char hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
            int i;
            if (n == 0 || j->end - j->p < n || j->p[1] < lo || j->p[1] > hi)
                return 0;
            for (i = 2; i < n; i++)
                if (j->p[i] < 0x80 || j->p[i] > 0xbf)
                    return 0;
            j->p += n;
        }
    }
    return 0;
}

static int num(jp *j)
{
    const unsigned char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end)
        return 0;
    if (*j->p == '0')
        j->p++;
    else if (*j->p >= '1' && *j->p <= '9')
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    else
        return 0;
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return 0;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    return j->p > s;
}

static int value(jp *j);

static int object(jp *j)
{
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return 1;
    }
    for (;;) {
        ws(j);
        if (!str(j))
            return 0;
        ws(j);
        if (!lit(j, ":"))
            return 0;
        if (!value(j))
            return 0;
        ws(j);
        if (lit(j, "}"))
            return 1;
        if (!lit(j, ","))
            return 0;
    }
}

static int array(jp *j)
{
    j->p++;
    ws(j);
    if (lit(j, "]"))
        return 1;
    for (;;) {
        if (!value(j))
            return 0;
        ws(j);
        if (lit(j, "]"))
            return 1;
        if (!lit(j, ","))
            return 0;
    }
}

static int value(jp *j)
{
    int ok;
    ws(j);
    if (j->p >= j->end || ++j->depth > 64)
        return 0;
    switch (*j->p) {
    case '{':
        ok = object(j);
        break;
    case '[':
        ok = array(j);
        break;
    case '"':
        ok = str(j);
        break;
    case 't':
        ok = lit(j, "true");
        break;
    case 'f':
        ok = lit(j, "false");
        break;
    case 'n':
        ok = lit(j, "null");
        break;
    default:
        ok = num(j);
        break;
    }
    j->depth--;
    return ok;
}

static int json_valid(const char *s, size_t len)
{
    jp j;
    j.p = (const unsigned char *)s;
    j.end = j.p + len;
    j.depth = 0;
    if (!value(&j))
        return 0;
    ws(&j);
    return j.p == j.end;
}

/* Python's json module agrees, when Python is there. */
static void python_validates(const char *s, size_t len)
{
    char path[] = "/tmp/tm_json_XXXXXX";
    char cmd[256];
    int fd, rc;
    FILE *f;

    if (access("/usr/bin/python3", X_OK) != 0)
        return;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, len, f), len);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1], encoding=\"utf-8\"))' %s",
             path);
    rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);
}

/* ---- fixtures ---- */

/* The caller's recipient array that tm_status_json lists. */
static tm_rcpt_status rcpt[64];
static size_t nrcpt;

static void delivered(tm_delivery_status *st)
{
    tm_status_init(st, TM_STATUS_VERSION);
    st->result = TM_RESULT_DELIVERED;
    st->error = TM_OK;
    st->code = 250;
    strcpy(st->enhanced_code, "2.0.0");
    strcpy(st->message, "2.0.0 Ok: queued as 4Q1XyZ");
    strcpy(st->description, "delivered over TLS");
    st->tls = 1;
    st->cert_verified = 1;
    strcpy(st->tls_version, "TLSv1.2");
    strcpy(st->tls_cipher, "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384");
    strcpy(st->mx_host, "mx1.example.com");
    strcpy(st->mx_address, "192.0.2.10");
    st->mx_port = 25;
    st->attempt_no = 1;
    st->session_seconds = 0.0123;
    st->policy.require_tls = 1;
    st->require_tls_source = TM_SOURCE_MESSAGE;
    st->rcpt_count = 1;
    st->rcpt_delivered = 1;
    st->transactions = 1;
    nrcpt = 1;
    memset(rcpt, 0, sizeof(rcpt));
    strcpy(rcpt[0].address, "user@example.com");
    rcpt[0].result = TM_RESULT_DELIVERED;
    rcpt[0].code = 250;
    strcpy(rcpt[0].enhanced_code, "2.1.5");
    strcpy(rcpt[0].message, "2.1.5 Ok");
}

static const char delivered_json[] =
    "{\"result\": \"delivered\", \"code\": 250, \"enhanced-code\": \"2.0.0\", "
    "\"message\": \"2.0.0 Ok: queued as 4Q1XyZ\", \"description\": \"delivered over TLS\", "
    "\"tls\": true, \"certificate-verified\": true, \"mx-host\": \"mx1.example.com\", "
    "\"mx-address\": \"192.0.2.10\", \"mx-port\": 25, \"tls-version\": \"TLSv1.2\", "
    "\"tls-cipher\": \"TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384\", \"tls-error\": \"\", "
    "\"tls-resumed\": false, \"dane\": \"off\", \"dane-tlsa\": \"\", \"mx-dnssec\": false, "
    "\"certificate-verified-by\": \"\", \"mta-sts\": \"off\", \"mta-sts-id\": \"\", "
    "\"mta-sts-cached\": false, \"mta-sts-would-refuse\": false, \"mta-sts-error\": \"\", "
    "\"attempt-no\": 1, \"session-seconds\": 0.012, \"utf8\": false, "
    "\"policy\": {\"require-tls\": true, \"require-tls-from\": \"message\", "
    "\"skip-verify\": false, \"skip-verify-from\": \"default\", "
    "\"keep-unverified-tls\": false, \"keep-unverified-tls-from\": \"default\", "
    "\"recipient-floor\": \"none\"}, "
    "\"recipient-counts\": {\"total\": 1, \"delivered\": 1, \"deferred\": 0, "
    "\"uncertain\": 0, \"bounced\": 0}, \"transactions\": 1, "
    "\"recipients\": [{\"address\": \"user@example.com\", \"result\": \"delivered\", "
    "\"code\": 250, \"enhanced-code\": \"2.1.5\", \"message\": \"2.1.5 Ok\"}]}";

static void test_json_exact(void **state)
{
    tm_delivery_status st;
    char buf[4096];
    int n;
    (void)state;

    delivered(&st);
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_int_equal(n, (int)strlen(delivered_json));
    assert_string_equal(buf, delivered_json);
    assert_true(json_valid(buf, (size_t)n));
    python_validates(buf, (size_t)n);

    /* A fresh status, and two recipients. */
    tm_status_init(&st, TM_STATUS_VERSION);
    nrcpt = 0;
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_string_equal(buf,
                        "{\"result\": \"none\", \"code\": 0, \"enhanced-code\": \"\", \"message\": \"\", "
                        "\"description\": \"\", \"tls\": false, \"certificate-verified\": false, "
                        "\"mx-host\": \"\", \"mx-address\": \"\", \"mx-port\": 0, \"tls-version\": \"\", "
                        "\"tls-cipher\": \"\", \"tls-error\": \"\", \"tls-resumed\": false, "
                        "\"dane\": \"off\", \"dane-tlsa\": \"\", \"mx-dnssec\": false, "
                        "\"certificate-verified-by\": \"\", \"mta-sts\": \"off\", \"mta-sts-id\": \"\", "
                        "\"mta-sts-cached\": false, \"mta-sts-would-refuse\": false, \"mta-sts-error\": \"\", "
                        "\"attempt-no\": 0, "
                        "\"session-seconds\": 0.000, \"utf8\": false, "
                        "\"policy\": {\"require-tls\": false, \"require-tls-from\": \"default\", "
                        "\"skip-verify\": false, \"skip-verify-from\": \"default\", "
                        "\"keep-unverified-tls\": false, \"keep-unverified-tls-from\": \"default\", "
                        "\"recipient-floor\": \"none\"}, \"recipient-counts\": {\"total\": 0, "
                        "\"delivered\": 0, \"deferred\": 0, \"uncertain\": 0, \"bounced\": 0}, "
                        "\"transactions\": 0, \"recipients\": []}");
    delivered(&st);
    st.rcpt_count = 2;
    nrcpt = 2;
    strcpy(rcpt[1].address, "other@example.com");
    rcpt[1].result = TM_RESULT_BOUNCED;
    rcpt[1].code = 550;
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"code\": 250, \"enhanced-code\": \"2.1.5\", \"message\": "
                                "\"2.1.5 Ok\"}, {\"address\": \"other@example.com\", \"result\": "
                                "\"bounced\", \"code\": 550, \"enhanced-code\": \"\", "
                                "\"message\": \"\"}]}"));
    assert_true(json_valid(buf, (size_t)n));
}

static void test_json_numbers(void **state)
{
    static const struct {
        double secs;
        const char *text;
    } cases[] = {
        {0.0, "0.000"},   {0.0004, "0.000"},     {0.0006, "0.001"}, {1.5, "1.500"},
        {12.3456, "12.346"}, {-3.0, "0.000"},    {1e300, "1000000000000.000"},
    };
    tm_delivery_status st;
    char buf[4096], want[64];
    size_t i;
    double zero = 0.0;
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        delivered(&st);
        st.session_seconds = cases[i].secs;
        tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
        snprintf(want, sizeof(want), "\"session-seconds\": %s,", cases[i].text);
        if (strstr(buf, want) == NULL)
            fail_msg("%g: %s", cases[i].secs, buf);
    }
    st.session_seconds = zero / zero; /* NaN */
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"session-seconds\": 0.000,"));
    delivered(&st);
    st.code = -1;
    st.mx_port = 65535;
    st.attempt_no = 4000000000u;
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"code\": -1,"));
    assert_non_null(strstr(buf, "\"mx-port\": 65535,"));
    assert_non_null(strstr(buf, "\"attempt-no\": 4000000000,"));
    assert_true(json_valid(buf, strlen(buf)));
}

static void test_json_policy(void **state)
{
    tm_delivery_status st;
    char buf[4096];
    int n;
    (void)state;

    delivered(&st);
    st.policy.require_tls = 1;
    st.policy.skip_verify = 0;
    st.policy.keep_unverified_tls = 1;
    st.require_tls_source = TM_SOURCE_RECIPIENT_FLOOR;
    st.skip_verify_source = TM_SOURCE_RECIPIENT_FLOOR;
    st.keep_unverified_tls_source = TM_SOURCE_SENDING_DOMAIN;
    st.floor = TM_FLOOR_VERIFIED;
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"utf8\": false, \"policy\": {\"require-tls\": true, "
                                "\"require-tls-from\": \"recipient-floor\", \"skip-verify\": false, "
                                "\"skip-verify-from\": \"recipient-floor\", "
                                "\"keep-unverified-tls\": true, "
                                "\"keep-unverified-tls-from\": \"sending-domain\", "
                                "\"recipient-floor\": \"verified\"}, \"recipient-counts\": {"));
    assert_true(json_valid(buf, (size_t)n));
    /* out-of-range values still give names */
    st.policy.skip_verify = 1;
    st.skip_verify_source = 99;
    st.floor = TM_FLOOR_TLS;
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"skip-verify\": true, \"skip-verify-from\": \"default\""));
    assert_non_null(strstr(buf, "\"recipient-floor\": \"tls\"}"));
    st.floor = -5;
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"recipient-floor\": \"none\"}"));
}

static void test_json_dane(void **state)
{
    static const struct {
        int dane;
        const char *name;
    } danes[] = {
        { TM_DANE_OFF, "off" },         { TM_DANE_INSECURE, "insecure" },
        { TM_DANE_NO_TLSA, "no-tlsa" }, { TM_DANE_VERIFIED, "verified" },
        { TM_DANE_TLSA_UNUSABLE, "tlsa-unusable" }, { TM_DANE_FAILED, "failed" },
        { TM_DANE_PENDING, "pending" }, { -1, "off" },
        { 7, "off" },                   { 1000, "off" },
    };
    static const struct {
        int by;
        const char *name;
    } bys[] = {
        { TM_VERIFIED_BY_NONE, "" }, { TM_VERIFIED_BY_PKIX, "pkix" }, { TM_VERIFIED_BY_DANE, "dane" },
        { 3, "" },                   { -1, "" },
    };
    tm_delivery_status st;
    char buf[4096], want[256];
    size_t i;
    int n;
    (void)state;

    /* A server DANE authenticated, every field set. */
    delivered(&st);
    st.dane = TM_DANE_VERIFIED;
    strcpy(st.dane_tlsa, "3 1 1");
    st.mx_dnssec = 1;
    st.cert_verified_by = TM_VERIFIED_BY_DANE;
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"tls-error\": \"\", \"tls-resumed\": false, \"dane\": \"verified\", "
                                "\"dane-tlsa\": \"3 1 1\", \"mx-dnssec\": true, "
                                "\"certificate-verified-by\": \"dane\", \"mta-sts\": \"off\", "));
    assert_true(json_valid(buf, (size_t)n));
    python_validates(buf, (size_t)n);

    /* Each value by its name; values out of range by the default's. */
    for (i = 0; i < sizeof(danes) / sizeof(danes[0]); i++) {
        delivered(&st);
        st.dane = danes[i].dane;
        tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
        snprintf(want, sizeof(want), "\"tls-resumed\": false, \"dane\": \"%s\", \"dane-tlsa\": ",
                 danes[i].name);
        if (strstr(buf, want) == NULL)
            fail_msg("dane %d: %s", danes[i].dane, buf);
    }
    for (i = 0; i < sizeof(bys) / sizeof(bys[0]); i++) {
        delivered(&st);
        st.cert_verified_by = bys[i].by;
        tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
        snprintf(want, sizeof(want),
                 "\"mx-dnssec\": false, \"certificate-verified-by\": \"%s\", \"mta-sts\": ",
                 bys[i].name);
        if (strstr(buf, want) == NULL)
            fail_msg("cert_verified_by %d: %s", bys[i].by, buf);
    }
    /* mx_dnssec is a boolean: any non-zero value is true. */
    delivered(&st);
    st.mx_dnssec = 7;
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"mx-dnssec\": true, "));
    /* The record text is escaped like any other field. */
    delivered(&st);
    strcpy(st.dane_tlsa, "2\"0\\\n1");
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"dane-tlsa\": \"2\\\"0\\\\\\u000a1\", "));
    assert_true(json_valid(buf, (size_t)n));
    /* The floor dane by its name. */
    delivered(&st);
    st.floor = TM_FLOOR_DANE;
    tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"recipient-floor\": \"dane\"}"));
}

static void test_dane_names(void **state)
{
    (void)state;
    assert_string_equal(tm_dane_name(TM_DANE_OFF), "off");
    assert_string_equal(tm_dane_name(TM_DANE_INSECURE), "insecure");
    assert_string_equal(tm_dane_name(TM_DANE_NO_TLSA), "no-tlsa");
    assert_string_equal(tm_dane_name(TM_DANE_VERIFIED), "verified");
    assert_string_equal(tm_dane_name(TM_DANE_TLSA_UNUSABLE), "tlsa-unusable");
    assert_string_equal(tm_dane_name(TM_DANE_FAILED), "failed");
    assert_string_equal(tm_dane_name(TM_DANE_PENDING), "pending");
    assert_string_equal(tm_dane_name(7), "off");
    assert_string_equal(tm_dane_name(-1), "off");
    assert_string_equal(tm_dane_name(-2147483647 - 1), "off");
    assert_string_equal(tm_verified_by_name(TM_VERIFIED_BY_NONE), "");
    assert_string_equal(tm_verified_by_name(TM_VERIFIED_BY_PKIX), "pkix");
    assert_string_equal(tm_verified_by_name(TM_VERIFIED_BY_DANE), "dane");
    assert_string_equal(tm_verified_by_name(3), "");
    assert_string_equal(tm_verified_by_name(-1), "");
    assert_string_equal(tm_verified_by_name(2147483647), "");
    assert_string_equal(tm_floor_name(TM_FLOOR_NONE), "none");
    assert_string_equal(tm_floor_name(TM_FLOOR_TLS), "tls");
    assert_string_equal(tm_floor_name(TM_FLOOR_VERIFIED), "verified");
    assert_string_equal(tm_floor_name(TM_FLOOR_DANE), "dane");
    assert_string_equal(tm_floor_name(4), "none");
}

static void test_set_dane(void **state)
{
    tm_delivery_status st;
    (void)state;

    /* What authenticated the server is kept only when it verified; the
     * record only when DANE verified it. */
    tm_status_init(&st, TM_STATUS_VERSION);
    tm__status_set_tls(&st, 1, 1, 0, TM_TLS_FAILURE_NONE, NULL, "TLSv1.3", "X");
    tm__status_set_dane(&st, TM_DANE_VERIFIED, 1, TM_VERIFIED_BY_DANE, "3 1 1");
    assert_int_equal(st.dane, TM_DANE_VERIFIED);
    assert_int_equal(st.mx_dnssec, 1);
    assert_int_equal(st.cert_verified_by, TM_VERIFIED_BY_DANE);
    assert_string_equal(st.dane_tlsa, "3 1 1");

    tm__status_set_dane(&st, TM_DANE_NO_TLSA, 1, TM_VERIFIED_BY_PKIX, "3 1 1");
    assert_int_equal(st.dane, TM_DANE_NO_TLSA);
    assert_int_equal(st.cert_verified_by, TM_VERIFIED_BY_PKIX);
    assert_string_equal(st.dane_tlsa, "");

    tm__status_set_tls(&st, 1, 0, 0, TM_TLS_FAILURE_NONE, NULL, "TLSv1.3", "X");
    tm__status_set_dane(&st, TM_DANE_INSECURE, 0, TM_VERIFIED_BY_PKIX, NULL);
    assert_int_equal(st.dane, TM_DANE_INSECURE);
    assert_int_equal(st.mx_dnssec, 0);
    assert_int_equal(st.cert_verified_by, TM_VERIFIED_BY_NONE);
    assert_string_equal(st.dane_tlsa, "");

    /* A record text longer than the field is cut, terminated. */
    tm__status_set_tls(&st, 1, 1, 0, TM_TLS_FAILURE_NONE, NULL, "TLSv1.3", "X");
    tm__status_set_dane(&st, TM_DANE_VERIFIED, 1, TM_VERIFIED_BY_DANE, "255 255 255 and more text");
    assert_int_equal(strlen(st.dane_tlsa), sizeof(st.dane_tlsa) - 1);
    tm__status_set_dane(NULL, TM_DANE_VERIFIED, 1, TM_VERIFIED_BY_DANE, "3 1 1");

    /* A fresh status says nothing of DANE. */
    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(st.dane, TM_DANE_OFF);
    assert_int_equal(st.mx_dnssec, 0);
    assert_int_equal(st.cert_verified_by, TM_VERIFIED_BY_NONE);
    assert_string_equal(st.dane_tlsa, "");
}

static void check_message_escapes(const char *message, const char *expected)
{
    tm_delivery_status st;
    char buf[8192], want[2048];
    int n;

    delivered(&st);
    tm__strlcpy(st.message, message, sizeof(st.message));
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    snprintf(want, sizeof(want), "\"message\": \"%s\", \"description\"", expected);
    if (strstr(buf, want) == NULL)
        fail_msg("message \"%s\": got %s", message, buf);
    assert_true(json_valid(buf, (size_t)n));
}

static void test_json_escaping(void **state)
{
    (void)state;
    check_message_escapes("say \"hi\"", "say \\\"hi\\\"");
    check_message_escapes("back\\slash", "back\\\\slash");
    check_message_escapes("a\nb\rc\td", "a\\u000ab\\u000dc\\u0009d");
    check_message_escapes("\x01\x1f\x7f", "\\u0001\\u001f\\u007f");
    check_message_escapes("/ stays", "/ stays");
    /* valid UTF-8 passes through */
    check_message_escapes("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7");
    check_message_escapes("\xef\xbf\xbf \xf4\x8f\xbf\xbf", "\xef\xbf\xbf \xf4\x8f\xbf\xbf");
    /* invalid UTF-8: one U+FFFD per byte */
    check_message_escapes("a\xff" "b", "a\\ufffdb");
    check_message_escapes("\x80", "\\ufffd");
    check_message_escapes("\xc3", "\\ufffd");               /* truncated at the end */
    check_message_escapes("\xc3(", "\\ufffd(");             /* bad continuation */
    check_message_escapes("\xc0\xaf", "\\ufffd\\ufffd");     /* overlong */
    check_message_escapes("\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd");
    check_message_escapes("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"); /* surrogate */
    check_message_escapes("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"); /* > U+10FFFF */
    check_message_escapes("\xf8\x88\x80\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd");
    check_message_escapes("\xe2\x82", "\\ufffd\\ufffd");
}

static void test_json_unterminated_fields(void **state)
{
    tm_delivery_status st;
    char buf[16384];
    int n;
    (void)state;

    /* Fields without their NUL are cut at their size, not read beyond. */
    delivered(&st);
    memset(st.message, 'm', sizeof(st.message));
    memset(st.mx_host, 'h', sizeof(st.mx_host));
    memset(st.dane_tlsa, 't', sizeof(st.dane_tlsa));
    memset(st.mta_sts_id, 'i', sizeof(st.mta_sts_id));
    memset(st.mta_sts_error, 'e', sizeof(st.mta_sts_error));
    memset(rcpt[0].address, 'a', sizeof(rcpt[0].address));
    st.rcpt_count = 1000; /* a count, not the array's length */
    nrcpt = 1;
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    assert_true(json_valid(buf, (size_t)n));
    assert_non_null(strstr(buf, "\"dane-tlsa\": \"tttttttttttttttt\", \"mx-dnssec\""));
}

/* MTA-STS: every mode by its name, the fields in their place, the
 * testing-only flag. */
static void test_json_sts(void **state)
{
    static const struct {
        int mode;
        const char *name;
    } modes[] = {
        { TM_MTA_STS_OFF, "off" },         { TM_MTA_STS_NO_POLICY, "no-policy" },
        { TM_MTA_STS_NONE, "none" },       { TM_MTA_STS_TESTING, "testing" },
        { TM_MTA_STS_ENFORCE, "enforce" }, { TM_MTA_STS_FETCH_FAILED, "fetch-failed" },
        { 6, "off" },                      { -1, "off" },
    };
    tm_delivery_status st;
    char buf[4096], want[256];
    size_t i;
    int n;
    (void)state;

    delivered(&st);
    tm__status_set_sts(&st, TM_MTA_STS_TESTING, "20261201T1", 1, 1,
                       "MTA-STS (testing): enforce would refuse mx: \"no TLS\"");
    assert_int_equal(st.mta_sts_would_refuse, 1);
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_non_null(strstr(buf, "\"certificate-verified-by\": \"\", \"mta-sts\": \"testing\", "
                                "\"mta-sts-id\": \"20261201T1\", \"mta-sts-cached\": true, "
                                "\"mta-sts-would-refuse\": true, \"mta-sts-error\": "
                                "\"MTA-STS (testing): enforce would refuse mx: \\\"no TLS\\\"\", "
                                "\"attempt-no\": 1, "));
    assert_true(json_valid(buf, (size_t)n));
    python_validates(buf, (size_t)n);
    /* would_refuse belongs to testing mode only. */
    tm__status_set_sts(&st, TM_MTA_STS_ENFORCE, "a", 0, 1, NULL);
    assert_int_equal(st.mta_sts_would_refuse, 0);
    assert_string_equal(st.mta_sts_error, "");
    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        assert_string_equal(tm_mta_sts_name(modes[i].mode), modes[i].name);
        st.mta_sts = modes[i].mode;
        n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
        snprintf(want, sizeof(want), "\"mta-sts\": \"%s\", ", modes[i].name);
        assert_non_null(strstr(buf, want));
        assert_true(json_valid(buf, (size_t)n));
    }
}

static void test_json_snprintf(void **state)
{
    tm_delivery_status st;
    char buf[4096];
    int n, m;
    size_t len = strlen(delivered_json);
    (void)state;

    delivered(&st);
    n = tm_status_json(&st, rcpt, nrcpt, NULL, 0);
    assert_int_equal(n, (int)len);
    /* exact fit */
    memset(buf, 'Z', sizeof(buf));
    m = tm_status_json(&st, rcpt, nrcpt, buf, len + 1);
    assert_int_equal(m, (int)len);
    assert_string_equal(buf, delivered_json);
    assert_int_equal(buf[len + 1], 'Z');
    /* one byte short: cut, terminated, and the length says so */
    memset(buf, 'Z', sizeof(buf));
    m = tm_status_json(&st, rcpt, nrcpt, buf, len);
    assert_int_equal(m, (int)len);
    assert_int_equal(buf[len - 1], '\0');
    assert_memory_equal(buf, delivered_json, len - 1);
    assert_int_equal(buf[len], 'Z');
    /* a single byte: just the NUL */
    memset(buf, 'Z', sizeof(buf));
    m = tm_status_json(&st, rcpt, nrcpt, buf, 1);
    assert_int_equal(m, (int)len);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'Z');
    /* size 0 with a buffer: nothing written */
    memset(buf, 'Z', sizeof(buf));
    m = tm_status_json(&st, rcpt, nrcpt, buf, 0);
    assert_int_equal(m, (int)len);
    assert_int_equal(buf[0], 'Z');
    /* errors */
    assert_int_equal(tm_status_json(NULL, rcpt, nrcpt, buf, sizeof(buf)), TM_EINVAL);
    assert_int_equal(tm_status_json(&st, rcpt, nrcpt, NULL, 10), TM_EINVAL);
}

static void fill(char *field, size_t size, char c)
{
    memset(field, c, size - 1);
    field[size - 1] = '\0';
}

static void test_json_worst_case(void **state)
{
    tm_delivery_status st;
    const size_t cap = TM_STATUS_JSON_MAX + 63 * TM_RCPT_JSON_MAX;
    char *buf = malloc(cap);
    unsigned int i;
    int n;
    (void)state;

    assert_non_null(buf);
    tm_status_init(&st, TM_STATUS_VERSION);
    st.result = TM_RESULT_UNCERTAIN;
    st.code = -2147483647 - 1;
    st.mx_port = -2147483647 - 1;
    st.attempt_no = 4294967295u;
    st.session_seconds = 1e300;
    st.tls = st.cert_verified = st.utf8 = 1;
    fill(st.enhanced_code, sizeof(st.enhanced_code), 1);
    fill(st.message, sizeof(st.message), 1);
    fill(st.description, sizeof(st.description), 1);
    fill(st.tls_version, sizeof(st.tls_version), 1);
    fill(st.tls_cipher, sizeof(st.tls_cipher), 1);
    fill(st.tls_error, sizeof(st.tls_error), 1);
    fill(st.mx_host, sizeof(st.mx_host), 1);
    fill(st.mx_address, sizeof(st.mx_address), 1);
    fill(st.dane_tlsa, sizeof(st.dane_tlsa), 1);
    fill(st.mta_sts_id, sizeof(st.mta_sts_id), 1);
    fill(st.mta_sts_error, sizeof(st.mta_sts_error), 1);
    st.mta_sts = TM_MTA_STS_FETCH_FAILED; /* the longest name */
    st.mta_sts_cached = 1;
    st.dane = TM_DANE_TLSA_UNUSABLE; /* the longest name */
    st.mx_dnssec = 1;
    st.cert_verified_by = TM_VERIFIED_BY_PKIX;
    st.tls_resumed = 1;
    st.floor = TM_FLOOR_VERIFIED;
    st.rcpt_count = 64;
    nrcpt = 64;
    for (i = 0; i < 64; i++) {
        fill(rcpt[i].address, sizeof(rcpt[i].address), 1);
        fill(rcpt[i].enhanced_code, sizeof(rcpt[i].enhanced_code), 1);
        fill(rcpt[i].message, sizeof(rcpt[i].message), 1);
        rcpt[i].code = -2147483647 - 1;
        rcpt[i].result = 12345;
    }
    /* The documented bounds hold: one recipient, and each further one. */
    n = tm_status_json(&st, rcpt, 1, NULL, 0);
    assert_true(n > 0 && n < TM_STATUS_JSON_MAX);
    n = tm_status_json(&st, rcpt, nrcpt, NULL, 0);
    assert_true(n > 0);
    assert_true((size_t)n < cap);
    assert_int_equal(tm_status_json(&st, rcpt, nrcpt, buf, cap), n);
    assert_int_equal(strlen(buf), (size_t)n);
    assert_true(json_valid(buf, (size_t)n));
    python_validates(buf, (size_t)n);
    /* invalid UTF-8 costs as much as a control character */
    for (i = 0; i < 64; i++)
        fill(rcpt[i].message, sizeof(rcpt[i].message), (char)0xff);
    assert_int_equal(tm_status_json(&st, rcpt, nrcpt, buf, cap), n);
    assert_true(json_valid(buf, (size_t)n));
    free(buf);
}

static void test_json_one_recipient_4096(void **state)
{
    tm_delivery_status st;
    char buf[4096];
    int n;
    (void)state;

    /* The header promises 4096 bytes for any one-recipient status whose
     * text is printable ASCII; escapes may need more. */
    delivered(&st);
    fill(st.message, sizeof(st.message), 'm');
    fill(st.description, sizeof(st.description), 'd');
    fill(st.tls_error, sizeof(st.tls_error), 'e');
    fill(st.mx_host, sizeof(st.mx_host), 'h');
    fill(st.mx_address, sizeof(st.mx_address), 'a');
    fill(st.tls_version, sizeof(st.tls_version), 'v');
    fill(st.tls_cipher, sizeof(st.tls_cipher), 'c');
    fill(st.enhanced_code, sizeof(st.enhanced_code), '5');
    fill(st.dane_tlsa, sizeof(st.dane_tlsa), 't');
    st.dane = TM_DANE_TLSA_UNUSABLE;
    st.cert_verified_by = TM_VERIFIED_BY_PKIX;
    fill(rcpt[0].address, sizeof(rcpt[0].address), 'r');
    fill(rcpt[0].message, sizeof(rcpt[0].message), 'm');
    fill(rcpt[0].enhanced_code, sizeof(rcpt[0].enhanced_code), '5');
    n = tm_status_json(&st, rcpt, nrcpt, buf, sizeof(buf));
    assert_true(n < (int)sizeof(buf));
    assert_true(json_valid(buf, (size_t)n));
}

#define V(s) json_valid(s, sizeof(s) - 1)

static void test_validator_rejects(void **state)
{
    (void)state;
    /* The validator itself must be able to say no. */
    assert_true(V("{\"a\": [1, 2.5, -0, true, null, \"x\\u0001\"], \"b\": {}}"));
    assert_false(V("{\"a\": \"\x01\"}"));
    assert_false(V("{\"a\": \"\xff\"}"));
    assert_false(V("{\"a\": \"\xed\xa0\x80\"}"));
    assert_false(V("{\"a\": 1,}"));
    assert_false(V("{\"a\": \"x}"));
    assert_false(V("{\"a\": 0,5}"));
    assert_false(V("{\"a\": 0.}"));
    assert_false(V("{\"a\": nan}"));
    assert_false(V("{\"a\": \"\\x\"}"));
    assert_false(V("{} {}"));
}

/* ---- errors, results, initialisers ---- */

static void test_strerror(void **state)
{
    int e, f;
    (void)state;

    for (e = TM_OK; e >= TM_ESYNTAX; e--) {
        const char *s = tm_strerror(e);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, "unknown error");
        for (f = TM_OK; f > e; f--)
            assert_string_not_equal(s, tm_strerror(f));
    }
    assert_string_equal(tm_strerror(TM_ESYNTAX - 1), "unknown error");
    assert_string_equal(tm_strerror(1), "unknown error");
    assert_string_equal(tm_strerror(-1000), "unknown error");
    assert_string_equal(tm_strerror(-2147483647 - 1), "unknown error");
    assert_string_equal(tm_strerror(2147483647), "unknown error");
    assert_string_equal(tm_strerror(TM_OK), "success");
}

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(tm_result_name(TM_RESULT_NONE), "none");
    assert_string_equal(tm_result_name(TM_RESULT_DELIVERED), "delivered");
    assert_string_equal(tm_result_name(TM_RESULT_DEFERRED), "deferred");
    assert_string_equal(tm_result_name(TM_RESULT_UNCERTAIN), "uncertain");
    assert_string_equal(tm_result_name(TM_RESULT_BOUNCED), "bounced");
    assert_string_equal(tm_result_name(5), "none");
    assert_string_equal(tm_result_name(-1), "none");

    assert_int_equal(tm__result_of_code(250), TM_RESULT_DELIVERED);
    assert_int_equal(tm__result_of_code(200), TM_RESULT_DELIVERED);
    assert_int_equal(tm__result_of_code(299), TM_RESULT_DELIVERED);
    assert_int_equal(tm__result_of_code(421), TM_RESULT_DEFERRED);
    assert_int_equal(tm__result_of_code(451), TM_RESULT_DEFERRED);
    assert_int_equal(tm__result_of_code(550), TM_RESULT_BOUNCED);
    assert_int_equal(tm__result_of_code(554), TM_RESULT_BOUNCED);
    assert_int_equal(tm__result_of_code(0), TM_RESULT_DEFERRED);
    assert_int_equal(tm__result_of_code(354), TM_RESULT_DEFERRED);
    assert_int_equal(tm__result_of_code(600), TM_RESULT_DEFERRED);
    assert_int_equal(tm__result_of_code(-550), TM_RESULT_DEFERRED);
}

static void test_inits(void **state)
{
    tm_delivery_status st;
    tm_message m;
    tm_session_options so;
    tm_context_options co;
    const tm_message m0 = TM_MESSAGE_INIT;
    const tm_session_options so0 = TM_SESSION_OPTIONS_INIT;
    const tm_context_options co0 = TM_CONTEXT_OPTIONS_INIT;
    (void)state;

    memset(&st, 0x5a, sizeof(st));
    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION), TM_OK);
    assert_int_equal(st.version, TM_STATUS_VERSION);
    assert_int_equal(st.result, TM_RESULT_NONE);
    assert_int_equal(st.policy.version, TM_POLICY_VERSION);
    assert_int_equal(st.policy.require_tls, 0);
    assert_int_equal(st.floor, TM_FLOOR_NONE);
    assert_int_equal(st.rcpt_count, 0);
    assert_string_equal(st.message, "");
    assert_int_equal(st.rcpt_delivered + st.rcpt_deferred + st.rcpt_bounced + st.rcpt_uncertain, 0);
    assert_int_equal(st.transactions, 0);
    /* A status of the 0.1 layout (version 1) or none is refused. */
    st.version = 0;
    assert_int_equal(tm_status_json(&st, NULL, 0, NULL, 0), TM_EINVAL);
    assert_int_equal(tm_status_init(&st, 1), TM_EINVAL);
    assert_int_equal(tm_status_init(&st, TM_STATUS_VERSION + 1), TM_EINVAL);
    assert_true(st.session_seconds == 0.0);

    memset(&m, 0x5a, sizeof(m));
    assert_int_equal(tm_message_init(&m, TM_MESSAGE_VERSION), TM_OK);
    assert_int_equal(m.version, TM_MESSAGE_VERSION);
    assert_null(m.from);
    assert_null(m.to);
    assert_int_equal(m.to_count, 0);
    assert_null(m.data);
    assert_int_equal(m.size, 0);
    assert_null(m.read);
    assert_null(m.read_arg);
    assert_null(m.rcpt_status);
    assert_int_equal(m.rcpt_status_cap, 0);
    assert_int_equal(m0.version, m.version);
    /* A version-1 message is the 0.1 layout: only that much is written. */
    memset(&m, 0x5a, sizeof(m));
    assert_int_equal(tm_message_init(&m, 1), TM_OK);
    assert_int_equal(m.version, 1);
    assert_null(m.sending_domain);
    assert_int_equal(((const unsigned char *)&m.rcpt_status)[0], 0x5a);
    assert_int_equal(tm_message_init(&m, 0), TM_EINVAL);
    assert_int_equal(tm_message_init(&m, TM_MESSAGE_VERSION + 1), TM_EINVAL);
    memset(&so, 0x5a, sizeof(so));
    assert_int_equal(tm_session_options_init(&so, TM_SESSION_OPTIONS_VERSION), TM_OK);
    assert_int_equal(so.version, TM_SESSION_OPTIONS_VERSION);
    assert_null(so.host);
    assert_int_equal(so.port, 0);
    (void)so0;
    memset(&co, 0x5a, sizeof(co));
    assert_int_equal(tm_context_options_init(&co, TM_CONTEXT_OPTIONS_VERSION), TM_OK);
    assert_int_equal(co.version, TM_CONTEXT_OPTIONS_VERSION);
    assert_null(co.ca_file);
    assert_null(co.log);
    assert_int_equal(co.max_mx, co0.max_mx);
    assert_int_equal(co.quit_timeout_ms, 0);
    assert_int_equal(co.log_level, 0);

    assert_int_equal(tm_status_init(NULL, TM_STATUS_VERSION), TM_EINVAL);
    assert_int_equal(tm_message_init(NULL, TM_MESSAGE_VERSION), TM_EINVAL);
    assert_int_equal(tm_session_options_init(NULL, TM_SESSION_OPTIONS_VERSION), TM_EINVAL);
    assert_int_equal(tm_context_options_init(NULL, TM_CONTEXT_OPTIONS_VERSION), TM_EINVAL);
    assert_int_equal(tm_session_options_init(&so, 0), TM_EINVAL);
    assert_int_equal(tm_context_options_init(&co, TM_CONTEXT_OPTIONS_VERSION + 1), TM_EINVAL);

    assert_int_equal(tm_status_size(), sizeof(tm_delivery_status));
    assert_int_equal(tm_message_size(), sizeof(tm_message));
    assert_int_equal(tm_context_options_size(), sizeof(tm_context_options));
    assert_int_equal(tm_session_options_size(), sizeof(tm_session_options));
    assert_int_equal(tm_policy_size(), sizeof(tm_policy));

    assert_string_equal(tm_version(), TM_VERSION_STRING);
    assert_int_equal(tm_version_number(), TM_VERSION_NUMBER);
    assert_int_equal(tm_version_number(), 0x000200);
}

static void test_strlcpy(void **state)
{
    char d[8];
    (void)state;

    tm__strlcpy(d, "hello", sizeof(d));
    assert_string_equal(d, "hello");
    tm__strlcpy(d, "hello world", sizeof(d));
    assert_string_equal(d, "hello w");
    tm__strlcpy(d, NULL, sizeof(d));
    assert_string_equal(d, "");
    d[0] = 'x';
    tm__strlcpy(d, "abc", 0); /* nothing written */
    assert_int_equal(d[0], 'x');
    tm__strlcpyn(d, sizeof(d), "abcdef", 3);
    assert_string_equal(d, "abc");
    tm__strlcpyn(d, 3, "abcdef", 6);
    assert_string_equal(d, "ab");
    tm__strlcpyn(d, sizeof(d), "a\0b", 3); /* length counted, NUL kept */
    assert_memory_equal(d, "a\0b", 4);
}

static void test_set_reply(void **state)
{
    tm_delivery_status st;
    tm_reply r;
    size_t used, i;
    static const char multi[] = "550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                                "550-5.1.1 Please try double-checking the recipient's email\r\n"
                                "550 5.1.1 address for typos.\r\n";
    char *big;
    (void)state;

    tm_status_init(&st, TM_STATUS_VERSION);
    tm__reply_reset(&r);
    assert_int_equal(tm__reply_parse(&r, multi, sizeof(multi) - 1, &used), 1);
    tm__status_set_reply(&st, &r);
    assert_int_equal(st.code, 550);
    assert_string_equal(st.enhanced_code, "5.1.1");
    assert_string_equal(st.message,
                        "5.1.1 The email account that you tried to reach does not exist. / "
                        "5.1.1 Please try double-checking the recipient's email / "
                        "5.1.1 address for typos.");
    /* a long reply is cut to the message size */
    big = malloc(3000);
    assert_non_null(big);
    memcpy(big, "250-", 4);
    for (i = 4; i < 1000; i++)
        big[i] = 'a';
    memcpy(big + 1000, "\r\n250 end\r\n", 11);
    tm__reply_reset(&r);
    assert_int_equal(tm__reply_parse(&r, big, 1011, &used), 1);
    tm__status_set_reply(&st, &r);
    assert_int_equal(strlen(st.message), sizeof(st.message) - 1);
    free(big);
    /* a NULL reply clears */
    tm__status_set_reply(&st, NULL);
    assert_int_equal(st.code, 0);
    assert_string_equal(st.message, "");
    assert_string_equal(st.enhanced_code, "");
    tm__status_set_reply(NULL, &r);

    tm__status_describe(&st, "connected to %s port %d", "mx.example.com", 25);
    assert_string_equal(st.description, "connected to mx.example.com port 25");
    big = malloc(2000);
    assert_non_null(big);
    memset(big, 'x', 1999);
    big[1999] = '\0';
    tm__status_describe(&st, "%s", big);
    assert_int_equal(strlen(st.description), sizeof(st.description) - 1);
    free(big);
    tm__status_describe(NULL, "x");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_exact),
        cmocka_unit_test(test_json_numbers),
        cmocka_unit_test(test_json_policy),
        cmocka_unit_test(test_json_dane),
        cmocka_unit_test(test_dane_names),
        cmocka_unit_test(test_set_dane),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_unterminated_fields),
        cmocka_unit_test(test_json_sts),
        cmocka_unit_test(test_json_snprintf),
        cmocka_unit_test(test_json_worst_case),
        cmocka_unit_test(test_json_one_recipient_4096),
        cmocka_unit_test(test_validator_rejects),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_inits),
        cmocka_unit_test(test_strlcpy),
        cmocka_unit_test(test_set_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
