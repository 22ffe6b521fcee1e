/*
 * fuzz_dns.c - the DNS answer parsers on arbitrary messages: MX records,
 * A/AAAA records, TLSA records with the AD bit (CNAME chains), and the
 * header's RCODE and AD bit.  Every name stored must be a valid host name
 * within bounds; every TLSA record kept must be one DANE can use for SMTP;
 * nothing may read past the message.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_mx mx[8];
    tm_addr addr[8];
    tm_tlsa tlsa[4];
    int null_mx = 0, n, i, unusable = -1, ad = -1, rcode = -1, hdr_ad = -1, rc, max, several;
    char sts_id[TM_STS_ID_MAX];

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

    /* The header: any 12 bytes are one; RCODE and AD are those bits. */
    rc = tm__dns_header(data, (int)size, &rcode, &hdr_ad);
    if (size < 12) {
        FUZZ_CHECK(rc == TM_EDNS);
    } else {
        FUZZ_CHECK(rc == TM_OK);
        FUZZ_CHECK(rcode == (data[3] & 0x0f));
        FUZZ_CHECK(hdr_ad == ((data[3] & 0x20) != 0));
    }

    /* TLSA, with an output array of 1 to 4 records (the input's last byte
     * picks), so that a full array is exercised too. */
    max = size > 0 ? 1 + data[size - 1] % 4 : 4;
    n = tm__dns_parse_tlsa(data, (int)size, tlsa, max, &unusable, &ad);
    FUZZ_CHECK(n == TM_EDNS || (n >= 0 && n <= max));
    FUZZ_CHECK(unusable >= 0 && (ad == 0 || ad == 1));
    if (n >= 0) {
        /* A message the parser took has a header, and the same AD bit. */
        FUZZ_CHECK(rc == TM_OK && ad == hdr_ad);
        /* Each answer is one record at most: 12 bytes of RR header and
         * 3 of RDATA at the least. */
        FUZZ_CHECK((size_t)(n + unusable) * 15 <= size);
    }
    for (i = 0; i < n; i++) {
        FUZZ_CHECK(tlsa[i].usage == 2 || tlsa[i].usage == 3);
        FUZZ_CHECK(tlsa[i].selector <= 1 && tlsa[i].mtype <= 2);
        FUZZ_CHECK(tlsa[i].len == (tlsa[i].mtype == 1 ? 32 : 64));
        FUZZ_CHECK(tlsa[i].len <= TM_TLSA_DATA_MAX);
        FUZZ_CHECK(tlsa[i].full == (tlsa[i].mtype == 0));
    }

    /* MTA-STS TXT: an id of 1 to 32 letters and digits, or none. */
    n = tm__dns_parse_sts(data, (int)size, sts_id, &several);
    FUZZ_CHECK(n == TM_EDNS || n == 0 || n == 1);
    FUZZ_CHECK(n == 1 ? strlen(sts_id) >= 1 && strlen(sts_id) <= 32 && !several
                      : sts_id[0] == '\0');
    return 0;
}
