/*
 * fuzz_sts.c - the MTA-STS parsers on arbitrary bytes: the TXT record
 * (an id of 1 to 32 letters and digits, or a refusal), the policy text
 * (modes, max_age and patterns in range, or a refusal), and MX matching
 * of the input's own words against the parsed patterns.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char id[TM_STS_ID_MAX], host[TM_HOST_MAX];
    tm_sts_policy p;
    size_t i, n;
    int rc;

    rc = tm__sts_parse_txt((const char *)data, size, id);
    FUZZ_CHECK(rc == TM_OK || rc == TM_ESYNTAX);
    if (rc == TM_OK) {
        n = strlen(id);
        FUZZ_CHECK(n >= 1 && n <= 32);
        for (i = 0; i < n; i++)
            FUZZ_CHECK((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z') ||
                       (id[i] >= 'A' && id[i] <= 'Z'));
    } else {
        FUZZ_CHECK(id[0] == '\0');
    }

    /* The fetch's HTTP response, as received so far and at the close. */
    {
        static char body[TM_STS_BODY_MAX];
        tm_http_response r;
        int eof;
        for (eof = 0; eof <= 1; eof++) {
            rc = tm__http_parse_response((const char *)data, size, eof, body, sizeof body, &r);
            FUZZ_CHECK(rc == 1 || rc == 0 || rc == TM_EPROTOCOL);
            FUZZ_CHECK(!(eof && rc == 0));
            if (rc == 1) {
                FUZZ_CHECK(r.status >= 100 && r.status <= 599);
                FUZZ_CHECK(r.body_len <= sizeof body && r.body_len <= size);
                FUZZ_CHECK(r.status == 200 || r.body_len == 0);
            }
        }
    }

    /* The cache's text form: what parses formats back to what parses to
     * the same text. */
    {
        static char text[1 << 20], again[1 << 20];
        tm_sts_cache c, d;
        int len, len2, line = 0;

        tm__sts_cache_init(&c, 64);
        tm__sts_cache_init(&d, 64);
        rc = tm__sts_cache_parse((const char *)data, size, &c, &line);
        FUZZ_CHECK(rc == TM_OK || rc == TM_ESYNTAX || rc == TM_ENOMEM);
        FUZZ_CHECK(rc != TM_ESYNTAX || line >= 1);
        if (rc == TM_OK) {
            FUZZ_CHECK(c.n <= 64);
            len = tm__sts_cache_format(&c, text, sizeof text);
            FUZZ_CHECK(len >= 0 && (size_t)len < sizeof text);
            FUZZ_CHECK(tm__sts_cache_parse(text, (size_t)len, &d, &line) == TM_OK);
            len2 = tm__sts_cache_format(&d, again, sizeof again);
            FUZZ_CHECK(len2 == len && memcmp(text, again, (size_t)len) == 0);
        }
        tm__sts_cache_free(&c);
        tm__sts_cache_free(&d);
    }

    rc = tm__sts_parse_policy((const char *)data, size, &p);
    FUZZ_CHECK(rc == TM_OK || rc == TM_ESYNTAX);
    if (rc != TM_OK)
        return 0;
    FUZZ_CHECK(p.mode == TM_STS_NONE || p.mode == TM_STS_TESTING || p.mode == TM_STS_ENFORCE);
    FUZZ_CHECK(p.max_age <= TM_STS_MAX_AGE_MAX);
    FUZZ_CHECK(p.nmx >= 0 && p.nmx <= TM_STS_MX_MAX);
    FUZZ_CHECK(p.mode == TM_STS_NONE || p.nmx > 0);
    for (i = 0; i < (size_t)p.nmx; i++) {
        const tm_sts_mx *m = &p.mx[i];
        n = strlen(m->name);
        FUZZ_CHECK(n > 0 && n < TM_HOST_MAX);
        FUZZ_CHECK(m->name[0] != '.' && m->name[n - 1] != '.' && !strchr(m->name, '*'));
        /* A pattern's own name matches it exactly; under a wildcard, one
         * label more does and the name alone does not. */
        if (!m->wildcard) {
            FUZZ_CHECK(tm__sts_mx_match(&p, m->name));
        } else if (n + 3 < sizeof host) {
            memcpy(host, "x.", 2);
            memcpy(host + 2, m->name, n + 1);
            FUZZ_CHECK(tm__sts_mx_match(&p, host));
        }
    }
    /* Every line of the input as a host name: no crash, a boolean. */
    for (i = 0; i < size; i += n + 1) {
        const char *nl = memchr(data + i, '\n', size - i);
        n = nl ? (size_t)(nl - (const char *)data) - i : size - i;
        if (n < sizeof host) {
            memcpy(host, data + i, n);
            host[n] = '\0';
            rc = tm__sts_mx_match(&p, host);
            FUZZ_CHECK(rc == 0 || rc == 1);
        }
    }
    return 0;
}
