/* Unit tests of mdb_bson_json's dates: one converter for the exact store
 * form and the API's rows, right before 1970 (the store's copy printed -1 ms
 * as 1970-01-01T00:00:00.999Z) and a number where no calendar date fits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mdb_bson_json.h"
#include "mdb_query.h"

static void expect_date(int64_t ms, const char *want)
{
    json_t *j = mdb_docs_date_json(ms);
    assert_non_null(j);
    assert_true(json_is_string(j));
    assert_string_equal(json_string_value(j), want);
    json_decref(j);
}

static void test_dates(void **state)
{
    (void)state;
    expect_date(0, "1970-01-01T00:00:00.000Z");
    expect_date(-1, "1969-12-31T23:59:59.999Z");
    expect_date(-1000, "1969-12-31T23:59:59.000Z");
    expect_date(-1001, "1969-12-31T23:59:58.999Z");
    expect_date(1733481600123, "2024-12-06T10:40:00.123Z");
    expect_date(-2208988800000, "1900-01-01T00:00:00.000Z");
    json_t *j = mdb_docs_date_json(INT64_MAX); /* year far beyond 9999 */
    assert_true(json_is_integer(j) && json_integer_value(j) == INT64_MAX);
    json_decref(j);
}

/* The store's exact converter and the API's row converter agree on dates. */
static void test_both_converters(void **state)
{
    (void)state;
    bson_t *b = BCON_NEW("d", BCON_DATE_TIME(-1));
    json_t *exact = mdb_docs_bson_to_json(b);
    json_t *row = mdb_query_bson_to_json(b);
    assert_non_null(exact);
    assert_non_null(row);
    assert_string_equal(json_string_value(json_object_get(exact, "d")), "1969-12-31T23:59:59.999Z");
    assert_true(json_equal(json_object_get(exact, "d"), json_object_get(row, "d")));
    json_decref(exact);
    json_decref(row);
    bson_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_both_converters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
