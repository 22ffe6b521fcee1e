/*
 * fuzz_dsn.c - a bounce built around an arbitrary original message, with
 * recipients whose address, server text, enhanced code and host also come
 * from the input: the result must be 7-bit, with CRLF line ends only, no
 * line of 998 octets or more, and its boundary only where it belongs.
 */
#include <string.h>

#include "dsn.h"
#include "fuzz.h"

/* The next NUL-terminated piece of the input's first bytes, at most max. */
static char *piece(const uint8_t **p, size_t *left, size_t max)
{
    size_t n = 0;
    char *s;

    while (n < *left && n < max && (*p)[n] != 0)
        n++;
    s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += n < *left ? n + 1 : n;
    *left -= n < *left ? n + 1 : n;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size, out_len = 0, i, line;
    char *addr = piece(&p, &left, 600), *text = piece(&p, &left, 2000),
         *enh = piece(&p, &left, 16), *host = piece(&p, &left, 600);
    const char *b, *bend;
    dsn_rcpt r[3];
    dsn_info info;
    char *out = NULL;
    int rc, parts = 0;

    memset(r, 0, sizeof r);
    r[0].address = addr;
    r[0].code = size ? 400 + data[0] % 200 : 550;
    r[0].enhanced = enh;
    r[0].text = text;
    r[0].remote_mta = host;
    r[1].address = "plain@example.org";
    r[1].text = text;
    r[1].expired = 1;
    r[2].address = host;
    r[2].code = 0;
    r[2].enhanced = NULL;
    r[2].text = addr;
    memset(&info, 0, sizeof info);
    info.reporting_mta = "mx.example.net";
    info.sender = "sender@example.org";
    info.arrival = 1700000000;
    info.now = 1700003600;
    /* the whole input as the original message, not only what is left */
    info.msg = (const char *)data;
    info.len = size;

    rc = dsn_build(&info, r, 3, &out, &out_len);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(out[out_len] == '\0' && strlen(out) == out_len);
    for (i = 0, line = 0; i < out_len; i++) {
        unsigned char c = (unsigned char)out[i];
        FUZZ_CHECK(c != 0 && c < 128);
        if (c == '\r') {
            FUZZ_CHECK(i + 1 < out_len && out[i + 1] == '\n');
            FUZZ_CHECK(line < 998);
            line = 0;
            i++;
            continue;
        }
        FUZZ_CHECK(c != '\n');
        line++;
    }
    FUZZ_CHECK(line == 0 && out_len >= 2); /* ends with CRLF */

    /* the boundary: "--B" lines exactly where the three parts begin and
     * "--B--" at the end, nowhere else */
    b = strstr(out, "boundary=\"");
    FUZZ_CHECK(b != NULL);
    b += 10;
    bend = strchr(b, '"');
    FUZZ_CHECK(bend != NULL && bend > b);
    {
        size_t bl = (size_t)(bend - b);
        const char *s = bend;
        while ((s = memmem(s, out_len - (size_t)(s - out), b, bl)) != NULL) {
            FUZZ_CHECK(s[-1] == '-' && s[-2] == '-' && s[-3] == '\n');
            parts++;
            s += bl;
            if (s[0] == '-')
                FUZZ_CHECK(strcmp(s, "--\r\n") == 0);
            else
                FUZZ_CHECK(s[0] == '\r' && s[1] == '\n');
        }
        FUZZ_CHECK(parts == 4);
    }
    free(out);
    free(addr);
    free(text);
    free(enh);
    free(host);
    return 0;
}
