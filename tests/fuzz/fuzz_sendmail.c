/*
 * fuzz_sendmail.c - tm-send's sendmail mode on an arbitrary message: the
 * recipients of its To/Cc/Bcc fields (-t), an address list parsed whole,
 * the header lookup, and the copy that is sent, with and without a From
 * line put in front.  The copy must hold no Bcc field in its header
 * section as a receiver sees it: lines ended by CRLF, LF or a bare CR (the
 * library's content encoder turns each into CRLF), the section ended by
 * the first empty line.
 */
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "sendmail.h"

static void check_list(const sm_list *l)
{
    size_t i, j;

    FUZZ_CHECK(l->n <= l->cap);
    for (i = 0; i < l->n; i++) {
        const char *a = l->v[i];
        FUZZ_CHECK(a != NULL && a[0] != '\0');
        /* no line end may get into an RCPT TO */
        FUZZ_CHECK(strpbrk(a, "\r\n") == NULL);
        for (j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(l->v[j], a) != 0);
    }
}

/* "Bcc" then optional white space then ':', at the start of a line. */
static int is_bcc_line(const char *l, size_t n)
{
    size_t i = 3;

    if (n < 4 || strncasecmp(l, "bcc", 3) != 0)
        return 0;
    while (i < n && (l[i] == ' ' || l[i] == '\t'))
        i++;
    return i < n && l[i] == ':';
}

static void check_copy(const char *c, size_t len)
{
    size_t pos = 0;

    while (pos < len) {
        size_t s = pos;
        while (pos < len && c[pos] != '\r' && c[pos] != '\n')
            pos++;
        if (pos == s)
            return; /* the empty line: the body follows */
        FUZZ_CHECK(!is_bcc_line(c + s, pos - s));
        if (pos < len && c[pos] == '\r' && pos + 1 < len && c[pos + 1] == '\n')
            pos++;
        pos++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    static const char *names[] = {"to", "cc", "bcc", "from", "subject", "x"};
    sm_list l = {0};
    char *copy = NULL;
    size_t copy_len = 0, i;

    if (sm_header_recipients(msg, size, &l) == 0)
        check_list(&l);
    sm_list_free(&l);
    if (sm_parse_addresses(msg, size, &l) == 0)
        check_list(&l);
    sm_list_free(&l);
    for (i = 0; i < sizeof names / sizeof *names; i++) {
        int h = sm_has_header(msg, size, names[i]);
        FUZZ_CHECK(h == 0 || h == 1);
    }

    if (sm_message_copy(msg, size, NULL, &copy, &copy_len) == 0) {
        FUZZ_CHECK(copy[copy_len] == '\0');
        check_copy(copy, copy_len);
        FUZZ_CHECK(!sm_has_header(copy, copy_len, "bcc"));
        /* removing Bcc fields never adds recipients */
        if (sm_header_recipients(copy, copy_len, &l) == 0)
            check_list(&l);
        sm_list_free(&l);
        free(copy);
    }
    if (sm_message_copy(msg, size, "Fuzz <fuzz@example.org>", &copy, &copy_len) == 0) {
        static const char from[] = "From: Fuzz <fuzz@example.org>\r\n";
        FUZZ_CHECK(copy_len >= sizeof from - 1 && memcmp(copy, from, sizeof from - 1) == 0);
        FUZZ_CHECK(copy[copy_len] == '\0');
        check_copy(copy, copy_len);
        FUZZ_CHECK(sm_has_header(copy, copy_len, "from"));
        free(copy);
    }
    return 0;
}
