/*
 * fuzz_dns.c - the DNS answer parsers on arbitrary messages: MX records
 * and A/AAAA records.  Every name stored must be a valid host name within
 * bounds; nothing may read past the message.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_mx mx[8];
    tm_addr addr[8];
    int null_mx = 0, n, i;

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
    return 0;
}
