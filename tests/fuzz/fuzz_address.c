/*
 * fuzz_address.c - envelope address and host name checks on arbitrary
 * strings.  What is accepted must be safe to put on a command line: no CR,
 * LF, NUL or other control byte, no angle bracket, within the size limits.
 *
 * Input: byte 0 selects sender (odd) or recipient (even); the rest, cut at
 * the first NUL, is the string.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[1024];
    char dotted[1030];
    size_t len, i;
    int is_sender, na = -1, high = 0;
    const char *dom;

    if (size < 1)
        return 0;
    is_sender = data[0] & 1;
    len = size - 1 < sizeof(s) - 1 ? size - 1 : sizeof(s) - 1;
    memcpy(s, data + 1, len);
    s[len] = '\0';
    len = strlen(s);
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            high = 1;

    if (tm__address_check(s, is_sender, &na) == TM_OK) {
        FUZZ_CHECK(len < TM_ADDRESS_MAX);
        FUZZ_CHECK(na == high);
        for (i = 0; i < len; i++) {
            unsigned char c = (unsigned char)s[i];
            FUZZ_CHECK(c >= 0x20 && c != 0x7f && c != '<' && c != '>');
        }
        if (len > 0) {
            dom = tm__address_domain(s);
            FUZZ_CHECK(dom != NULL && dom[0] != '\0' && dom > s + 1);
            FUZZ_CHECK(tm__domain_equal(dom, dom));
            FUZZ_CHECK(strchr(dom, ' ') == NULL);
        } else {
            FUZZ_CHECK(is_sender);
        }
        /* with or without the null-path allowance, a real address is the same */
        if (len > 0)
            FUZZ_CHECK(tm__address_check(s, !is_sender, NULL) == TM_OK);
    } else {
        FUZZ_CHECK(na == 0);
    }

    if (tm__name_check(s) == TM_OK) {
        FUZZ_CHECK(len >= 1 && len <= 255);
        for (i = 0; i < len; i++)
            FUZZ_CHECK((unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f);
        FUZZ_CHECK(tm__domain_equal(s, s));
    }

    /* a trailing dot is ignored, case is ignored */
    memcpy(dotted, s, len);
    dotted[len] = '.';
    dotted[len + 1] = '\0';
    if (len > 0 && s[len - 1] != '.')
        FUZZ_CHECK(tm__domain_equal(s, dotted));
    for (i = 0; i < len; i++)
        if (dotted[i] >= 'a' && dotted[i] <= 'z')
            dotted[i] = (char)(dotted[i] - 32);
    if (len > 0 && s[len - 1] != '.')
        FUZZ_CHECK(tm__domain_equal(dotted, s));
    dom = tm__address_domain(s);
    FUZZ_CHECK(dom == NULL || (dom > s && dom[-1] == '@' && strchr(dom, '@') == NULL));
    return 0;
}
