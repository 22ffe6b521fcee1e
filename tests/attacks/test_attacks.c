/*
 * test_attacks.c - the reliability and security suite: hostile servers,
 * faults and bad input against tests/hostile/hostile_smtp.py.
 *
 * The cases live in atk_*.c by theme (see attacks.h and docs/attacks.md).
 * Environment:
 *   TM_ATK_FILTER=glob   run only the matching tests (cmocka filter)
 *   TM_ATK_SELFTEST=1    turn each test's main expectation wrong: every
 *                        test must then fail (proves each can fail)
 */
#include "attacks.h"

int main(void)
{
#define ATK_ENTRY(name) cmocka_unit_test(name),
    const struct CMUnitTest tests[] = { ATK_TESTS(ATK_ENTRY) };
#undef ATK_ENTRY
    const char *filter = getenv("TM_ATK_FILTER");

    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests_name("attacks", tests, atk_group_setup, atk_group_teardown);
}
