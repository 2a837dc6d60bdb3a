/* Unit tests of mdb_progress: the progress line's formatting (bar,
 * percentage, grouped counts, rate, ETA, unknown totals, cutting to the
 * terminal width) and that nothing is drawn on a file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_progress.h"

static void test_group(void **state)
{
    (void)state;
    char b[32];
    assert_string_equal(mdb_progress_group(b, sizeof b, 0), "0");
    assert_string_equal(mdb_progress_group(b, sizeof b, 999), "999");
    assert_string_equal(mdb_progress_group(b, sizeof b, 1000), "1,000");
    assert_string_equal(mdb_progress_group(b, sizeof b, 12345678), "12,345,678");
    assert_string_equal(mdb_progress_group(b, sizeof b, -1234), "-1,234");
}

static void test_format_known_total(void **state)
{
    (void)state;
    char b[256];
    mdb_progress_format(b, sizeof b, "dump", 0, 200, "docs", 0.0, NULL, 0);
    assert_string_equal(b, "dump       [------------------------]   0%  0/200 docs  0.0 s");
    mdb_progress_format(b, sizeof b, "dump", 50, 200, "docs", 2.0, NULL, 0);
    assert_string_equal(b, "dump       [######------------------]  25%  50/200 docs  2.0 s  25/s  ETA 6.0 s");
    mdb_progress_format(b, sizeof b, "query", 250000, 250000, "rows", 12.5, NULL, 0);
    assert_string_equal(b, "query      [########################] 100%  250,000/250,000 rows  13 s  20,000/s");
    /* more done than the total (the catalogue grew): capped at 100 % */
    mdb_progress_format(b, sizeof b, "x", 300, 200, NULL, 1.0, NULL, 0);
    assert_non_null(strstr(b, "100%  300/200"));
    /* a total of 0 is complete */
    mdb_progress_format(b, sizeof b, "x", 0, 0, NULL, 0.0, NULL, 0);
    assert_non_null(strstr(b, "[########################] 100%"));
    /* long durations */
    mdb_progress_format(b, sizeof b, "x", 10, 20, NULL, 125.0, NULL, 0);
    assert_non_null(strstr(b, "2 min 05 s"));
    mdb_progress_format(b, sizeof b, "x", 1, 2, NULL, 3725.0, NULL, 0);
    assert_non_null(strstr(b, "1 h 02 min"));
}

static void test_format_unknown_total(void **state)
{
    (void)state;
    char b[256];
    mdb_progress_format(b, sizeof b, "index", 12345, -1, "files", 3.0, "LIDC-IDRI-0042", 0);
    assert_string_equal(b, "index      12,345 files  3.0 s  4,115/s  LIDC-IDRI-0042");
    assert_null(strchr(b, '['));
    assert_null(strchr(b, '%'));
}

static void test_format_width_and_cap(void **state)
{
    (void)state;
    char b[256];
    size_t n = mdb_progress_format(b, sizeof b, "index", 5, -1, "files", 1.0, "dir/é/é/é/é/é/é/é/é/é/é/é", 30);
    assert_int_equal(n, strlen(b));
    /* 30 columns: count code points, not bytes */
    size_t cols = 0;
    for (const char *p = b; *p; p++)
        cols += ((unsigned char)*p & 0xC0) != 0x80;
    assert_int_equal(cols, 30);
    char small[12];
    n = mdb_progress_format(small, sizeof small, "verylonglabel", 1, 2, NULL, 0, NULL, 0);
    assert_int_equal(n, 11);
    assert_int_equal(strlen(small), 11);
    /* a cut never leaves half a UTF-8 character */
    char tiny[20];
    mdb_progress_format(tiny, sizeof tiny, "ééééééééé", 1, -1, NULL, 0, NULL, 0);
    for (const char *p = tiny; *p; p++)
        if (((unsigned char)*p & 0xE0) == 0xC0)
            assert_true((((unsigned char)p[1]) & 0xC0) == 0x80);
}

static void test_nothing_on_a_file(void **state)
{
    (void)state;
    unsetenv("MDB_PROGRESS");
    FILE *f = tmpfile();
    assert_non_null(f);
    mdb_progress_t *p = mdb_progress_new(f, "dump", "docs", 10);
    assert_non_null(p);
    assert_false(mdb_progress_active(p));
    for (int i = 0; i <= 10; i++)
        mdb_progress_update(p, i, NULL);
    mdb_progress_destroy(p);
    assert_int_equal(ftell(f), 0);
    /* forced on (what a test driving a pseudo-terminal relies on) */
    setenv("MDB_PROGRESS", "always", 1);
    p = mdb_progress_new(f, "dump", "docs", 10);
    assert_true(mdb_progress_active(p));
    mdb_progress_update(p, 10, NULL);
    mdb_progress_destroy(p);
    assert_true(ftell(f) > 0);
    rewind(f);
    char line[256] = "";
    size_t n = fread(line, 1, sizeof line - 1, f);
    line[n] = '\0';
    assert_non_null(strstr(line, "100%"));
    assert_non_null(strstr(line, "\r\033[K")); /* drawn, then cleared */
    fclose(f);
    unsetenv("MDB_PROGRESS");
    mdb_progress_destroy(NULL);
    mdb_progress_update(NULL, 1, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group),
        cmocka_unit_test(test_format_known_total),
        cmocka_unit_test(test_format_unknown_total),
        cmocka_unit_test(test_format_width_and_cap),
        cmocka_unit_test(test_nothing_on_a_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
