/*
 * fuzz_settings.c - the settings file parser on arbitrary text: it either
 * refuses the text with a line number, or returns a sorted table of valid,
 * normalised names with values in range.
 */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_setting *tab = NULL;
    size_t n = 0, cap = 0, i;
    int line = 0, rc;

    rc = tm__settings_parse((const char *)data, size, &tab, &n, &cap, &line);
    FUZZ_CHECK(rc == TM_OK || rc == TM_ESYNTAX || rc == TM_ENOMEM);
    if (rc == TM_ESYNTAX)
        FUZZ_CHECK(line >= 1);
    for (i = 0; rc == TM_OK && i < n; i++) {
        const tm_setting *e = &tab[i];
        FUZZ_CHECK(memchr(e->name, 0, sizeof e->name) != NULL);
        FUZZ_CHECK(tm__name_check(e->name) == TM_OK);
        FUZZ_CHECK(e->recipient == 0 || e->recipient == 1);
        FUZZ_CHECK(e->floor >= TM_FLOOR_NONE && e->floor <= TM_FLOOR_DANE);
        FUZZ_CHECK(e->policy.require_tls >= -1 && e->policy.require_tls <= 1);
        if (i > 0) {
            const tm_setting *p = &tab[i - 1];
            FUZZ_CHECK(p->recipient < e->recipient ||
                       (p->recipient == e->recipient && strcmp(p->name, e->name) < 0));
        }
    }
    tm__free(tab);
    return 0;
}
