/* Unit tests of mdb_uuid: generated ids are canonical lowercase v4 UUIDs,
 * unique across many draws, and the validator accepts exactly the 8-4-4-4-12
 * hex form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_uuid.h"

static int cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_new_format(void **state)
{
    (void)state;
    char u[MDB_UUID_STR_LEN];
    for (int i = 0; i < 100; i++) {
        mdb_uuid_new(u);
        assert_int_equal(strlen(u), 36);
        assert_true(mdb_uuid_valid(u));
        assert_int_equal(u[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", u[19])); /* RFC 4122 variant */
        for (int k = 0; k < 36; k++)
            assert_true(u[k] == '-' || (u[k] >= '0' && u[k] <= '9') || (u[k] >= 'a' && u[k] <= 'f'));
    }
}

static void test_unique(void **state)
{
    (void)state;
    enum { N = 10000 };
    char(*ids)[MDB_UUID_STR_LEN] = malloc(N * sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        mdb_uuid_new(ids[i]);
    qsort(ids, N, sizeof *ids, cmp);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

static void test_valid(void **state)
{
    (void)state;
    assert_true(mdb_uuid_valid("123e4567-e89b-12d3-a456-426614174000"));
    assert_true(mdb_uuid_valid("123E4567-E89B-12D3-A456-426614174000"));
    assert_false(mdb_uuid_valid(NULL));
    assert_false(mdb_uuid_valid(""));
    assert_false(mdb_uuid_valid("123e4567e89b12d3a456426614174000"));
    assert_false(mdb_uuid_valid("123e4567-e89b-12d3-a456-42661417400"));
    assert_false(mdb_uuid_valid("123e4567-e89b-12d3-a456-4266141740000"));
    assert_false(mdb_uuid_valid("123e4567-e89b-12d3-a456_426614174000"));
    assert_false(mdb_uuid_valid("g23e4567-e89b-12d3-a456-426614174000"));
    assert_false(mdb_uuid_valid("{23e4567-e89b-12d3-a456-426614174000}"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_format),
        cmocka_unit_test(test_unique),
        cmocka_unit_test(test_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
