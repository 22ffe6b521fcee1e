/*
 * fuzz_reply.c - the SMTP reply parser fed arbitrary server output the way
 * a session reads it: in chunks, dropping consumed lines, one reply after
 * another; capabilities and the status writer on every complete reply.
 *
 * Input: byte 0 & 7 = n, then n chunk sizes (1..256 each, cycled; none =
 * the whole transcript at once), then the server's bytes.
 *
 * Checks: the chunked parse gives the same replies and errors as parsing
 * each reply from one buffer; parsed replies respect every bound; the JSON
 * of a status holding the reply is valid as far as escaping goes.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

static void check_reply(const tm_reply *r)
{
    size_t i;
    tm_caps caps;

    FUZZ_CHECK(r->code >= 200 && r->code <= 559 && r->code % 100 <= 59);
    FUZZ_CHECK(r->lines >= 1 && r->lines <= TM_REPLY_LINES_MAX);
    FUZZ_CHECK(r->text_len < TM_REPLY_TEXT_MAX);
    FUZZ_CHECK(strlen(r->text) == r->text_len);
    if (r->enhanced[0] != '\0') {
        size_t n = strlen(r->enhanced);
        FUZZ_CHECK(n >= 5 && n <= 9);
        FUZZ_CHECK(r->enhanced[0] - '0' == r->code / 100);
        FUZZ_CHECK(strncmp(r->text, r->enhanced, n) == 0);
        for (i = 0; i < n; i++)
            FUZZ_CHECK((r->enhanced[i] >= '0' && r->enhanced[i] <= '9') || r->enhanced[i] == '.');
    }
    tm__caps_parse(&caps, r);
    FUZZ_CHECK((caps.flags & ~0x7fu) == 0);
    if (r->code != 250)
        FUZZ_CHECK(caps.flags == 0);
    if (!(caps.flags & TM_CAP_SIZE))
        FUZZ_CHECK(caps.size_limit == 0);
}

static void check_json(const tm_reply *r)
{
    static tm_delivery_status st;
    static tm_rcpt_status rcpt[1];
    static char json[TM_STATUS_JSON_MAX];
    tm_outcome o;
    const char *to[1] = {"user@example.com"};
    int n, m;
    size_t i;

    tm_status_init(&st, TM_STATUS_VERSION);
    tm__status_set_reply(&st, r);
    FUZZ_CHECK(st.code == r->code);
    FUZZ_CHECK(strlen(st.message) < sizeof(st.message));
    /* the text in every string field of the status and the recipient */
    tm__strlcpy(st.tls_error, r->text, sizeof(st.tls_error));
    o.st = &st;
    o.rcpt = rcpt;
    o.cap = 1;
    tm__outcome_begin(&o, to, 1);
    tm__outcome_set(&o, 0, tm__result_of_code(r->code), r);
    FUZZ_CHECK(st.rcpt_count == 1);
    FUZZ_CHECK(rcpt[0].code == r->code);
    n = tm_status_json(&st, rcpt, 1, NULL, 0);
    m = tm_status_json(&st, rcpt, 1, json, sizeof(json));
    FUZZ_CHECK(n == m && n > 0 && (size_t)n < sizeof(json));
    FUZZ_CHECK(strlen(json) == (size_t)n);
    for (i = 0; i < (size_t)n; i++)
        FUZZ_CHECK((unsigned char)json[i] >= 0x20 && json[i] != 0x7f);
    FUZZ_CHECK(json[0] == '{' && json[n - 1] == '}');
}

static void check_same(const tm_reply *a, const tm_reply *b)
{
    FUZZ_CHECK(a->code == b->code);
    FUZZ_CHECK(strcmp(a->enhanced, b->enhanced) == 0);
    FUZZ_CHECK(a->text_len == b->text_len);
    FUZZ_CHECK(memcmp(a->text, b->text, a->text_len + 1) == 0);
    FUZZ_CHECK(a->lines == b->lines);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tm_reply r, whole;
    const char *in;
    size_t nchunks, len, start = 0, end = 0, k = 0, reply_start = 0;
    const uint8_t *chunks;

    if (size < 1)
        return 0;
    nchunks = data[0] & 7;
    if (size < 1 + nchunks)
        return 0;
    chunks = data + 1;
    in = (const char *)data + 1 + nchunks;
    len = size - 1 - nchunks;

    tm__reply_reset(&r);
    while (start < len) {
        size_t n = nchunks ? (size_t)chunks[k++ % nchunks] + 1 : len;
        size_t used = 0, wused = 0;
        int rc, wrc;

        end = n > len - end ? len : end + n;
        rc = tm__reply_parse(&r, in + start, end - start, &used);
        FUZZ_CHECK(used <= end - start);
        if (rc == 0 && end < len) {
            FUZZ_CHECK(end - start - used < TM_REPLY_LINE_MAX);
            start += used;
            continue;
        }
        /* The same reply parsed from one buffer holding all the rest. */
        tm__reply_reset(&whole);
        wrc = tm__reply_parse(&whole, in + reply_start, len - reply_start, &wused);
        FUZZ_CHECK(wrc == rc);
        if (rc == 0)
            break;
        if (rc < 0) {
            FUZZ_CHECK(rc == TM_EPROTOCOL);
            break;
        }
        FUZZ_CHECK(rc == 1 && used >= 1);
        FUZZ_CHECK(wused == start + used - reply_start);
        check_same(&r, &whole);
        check_reply(&r);
        check_json(&r);
        start += used;
        end = start;
        reply_start = start;
        tm__reply_reset(&r);
    }
    return 0;
}
