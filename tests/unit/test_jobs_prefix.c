/* Unit test of mdb_jobs_prefix_valid: which abbreviations of a job id the
 * CLI may look up by prefix (the lookup itself runs against the database in
 * tests/integration/test_cli_usability.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mdb_jobs.h"

static void test_prefix_valid(void **state)
{
    (void)state;
    assert_true(mdb_jobs_prefix_valid("9eb167cc"));
    assert_true(mdb_jobs_prefix_valid("9eb167"));
    assert_true(mdb_jobs_prefix_valid("job-42_a"));
    assert_true(mdb_jobs_prefix_valid("9eb167cc-1f2e-4c3d-8e9f-0123456789ab"));
    assert_false(mdb_jobs_prefix_valid("9eb16")); /* too short */
    assert_false(mdb_jobs_prefix_valid(""));
    assert_false(mdb_jobs_prefix_valid(NULL));
    assert_false(mdb_jobs_prefix_valid("9eb1.*")); /* never a pattern */
    assert_false(mdb_jobs_prefix_valid("abc def"));
    assert_false(mdb_jobs_prefix_valid("^9eb167"));
    char longp[80];
    for (int i = 0; i < 79; i++)
        longp[i] = 'a';
    longp[79] = '\0';
    assert_false(mdb_jobs_prefix_valid(longp));
    assert_int_equal(MDB_JOBS_MIN_PREFIX, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prefix_valid)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
