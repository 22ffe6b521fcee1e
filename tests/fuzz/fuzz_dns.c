/*
 * fuzz_dns.c - the DNS answer parsers on arbitrary messages: MX records,
 * A/AAAA records, and TLSA records with the AD bit (CNAME chains).  Every name stored must be a valid host name within
 * bounds; nothing may read past the message.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_mx mx[8];
    tm_addr addr[8];
    tm_tlsa tlsa[4];
    int null_mx = 0, n, i, unusable = -1, ad = -1;

    if (size > 65535)
        return 0;
    n = tm__dns_parse_mx(data, (int)size, mx, 8, &null_mx);
    FUZZ_CHECK(n == TM_EDNS || (n >= 0 && n <= 8));
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(memchr(mx[i].host, 0, sizeof mx[i].host) != NULL);
        FUZZ_CHECK(tm__name_check(mx[i].host) == TM_OK);
        FUZZ_CHECK(mx[i].pref <= 65535);
    }
    n = tm__dns_parse_addr(data, (int)size, 1, 25, addr, 8);
    FUZZ_CHECK(n == TM_EDNS || (n >= 0 && n <= 8));
    n = tm__dns_parse_addr(data, (int)size, 28, 25, addr, 8);
    FUZZ_CHECK(n == TM_EDNS || (n >= 0 && n <= 8));
    n = tm__dns_parse_tlsa(data, (int)size, tlsa, 4, &unusable, &ad);
    FUZZ_CHECK(n == TM_EDNS || (n >= 0 && n <= 4));
    FUZZ_CHECK(unusable >= 0 && (ad == 0 || ad == 1));
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(tlsa[i].usage == 2 || tlsa[i].usage == 3);
        FUZZ_CHECK(tlsa[i].selector <= 1 && tlsa[i].mtype <= 2);
        FUZZ_CHECK(tlsa[i].len == (tlsa[i].mtype == 1 ? 32 : 64));
        FUZZ_CHECK(tlsa[i].full == (tlsa[i].mtype == 0));
    }
    return 0;
}
