/* Unit tests of mdb_cases: the CSV case manifest (quoting, CRLF, BOM, column
 * order, ';'-separated accessions), every problem reported with its line
 * number and nothing returned when any row is bad, plus the e-mail,
 * identifier and value validators used by researchers and collections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mdb_cases.h"
#include "mdb_cases_doc.h"

static bool parse(const char *text, mdb_cases_t *out, mdb_cases_problems_t *pr)
{
    mdb_error_t err = {0};
    memset(pr, 0, sizeof *pr);
    bool ok = mdb_cases_parse_csv(text, strlen(text), out, pr, &err);
    if (!ok)
        assert_true(err.message[0] != '\0');
    return ok;
}

/* True if some problem message contains needle. */
static bool has_problem(const mdb_cases_problems_t *pr, const char *needle)
{
    for (size_t i = 0; i < pr->messages.n; i++)
        if (strstr(pr->messages.v[i], needle))
            return true;
    return false;
}

static void test_basic_manifest(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    assert_true(parse("case_id,patient_id,accession_numbers\n"
                      "C1,LIDC-IDRI-0001,A1;A2\n"
                      "C2,LIDC-IDRI-0002,\n"
                      "C3,,A3\n",
                      &c, &pr));
    assert_int_equal(c.n, 3);
    assert_string_equal(c.v[0].case_id, "C1");
    assert_string_equal(c.v[0].patient_id, "LIDC-IDRI-0001");
    assert_int_equal(c.v[0].accession_numbers.n, 2);
    assert_string_equal(c.v[0].accession_numbers.v[0], "A1");
    assert_string_equal(c.v[0].accession_numbers.v[1], "A2");
    assert_int_equal(c.v[0].line, 2);
    assert_int_equal(c.v[1].accession_numbers.n, 0);
    assert_string_equal(c.v[2].patient_id, "");
    assert_int_equal(c.v[2].line, 4);
    assert_int_equal(pr.total, 0);
    mdb_cases_clear(&c);
}

static void test_quoting_crlf_bom_and_column_order(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    const char *text = "\xEF\xBB\xBF"
                       "patient_id , accession_numbers,CASE_ID\r\n"
                       "\"P, with comma\",\" A1 ; A2;A1;; \",c-1\r\n"
                       "\r\n"
                       "\"P \"\"quoted\"\"\",,c-2\r\n";
    assert_true(parse(text, &c, &pr));
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0].case_id, "c-1");
    assert_string_equal(c.v[0].patient_id, "P, with comma");
    /* trimmed, empty parts dropped, duplicates within a row collapsed */
    assert_int_equal(c.v[0].accession_numbers.n, 2);
    assert_string_equal(c.v[0].accession_numbers.v[0], "A1");
    assert_string_equal(c.v[0].accession_numbers.v[1], "A2");
    assert_string_equal(c.v[1].patient_id, "P \"quoted\"");
    assert_int_equal(c.v[1].line, 4); /* the blank line 3 counts */
    mdb_cases_clear(&c);
}

static void test_two_columns_without_accessions(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    assert_true(parse("case_id,patient_id\nA,P1\nB,P2", &c, &pr)); /* no final newline */
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[1].patient_id, "P2");
    mdb_cases_clear(&c);
}

static void test_multiline_quoted_field_keeps_line_numbers(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    /* A quoted field spanning two lines: the next record starts on line 4. */
    assert_false(parse("case_id,patient_id,accession_numbers\n"
                       "C1,\"P1\nstill P1\",A1\n"
                       "C1,P2,A2\n",
                       &c, &pr));
    assert_int_equal(c.n, 0);
    assert_true(has_problem(&pr, "line 2: patient_id")); /* newline inside the id is not printable */
    assert_true(has_problem(&pr, "line 4: duplicate case_id 'C1' (first on line 2)"));
    mdb_cases_problems_clear(&pr);
}

static void test_every_bad_row_reported_and_nothing_returned(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    const char *text = "case_id,patient_id,accession_numbers\n" /* 1 */
                       "C1,P1,A1\n"                             /* 2 ok */
                       "C2,P2\n"                                /* 3 too few fields */
                       "C1,P3,A3\n"                             /* 4 duplicate case */
                       ",P4,A4\n"                               /* 5 empty case id */
                       "C5,P5,A1\n"                             /* 6 accession of C1 */
                       "C6,,\n"                                 /* 7 no patient, no accession */
                       "bad id!,P7,A7\n"                        /* 8 invalid id */
                       "C8,P8,A8,extra\n"                       /* 9 too many fields */
                       "C9,P\"9,A9\n"                           /* 10 stray quote */
                       "C10,P10,A10\n";                         /* 11 ok */
    assert_false(parse(text, &c, &pr));
    assert_int_equal(c.n, 0);
    assert_null(c.v);
    assert_int_equal(pr.total, 8);
    assert_true(has_problem(&pr, "line 3: expected 3 fields, got 2"));
    assert_true(has_problem(&pr, "line 4: duplicate case_id 'C1' (first on line 2)"));
    assert_true(has_problem(&pr, "line 5: empty case_id"));
    assert_true(has_problem(&pr, "line 6: accession number 'A1' already belongs to another case (line 2)"));
    assert_true(has_problem(&pr, "line 7: case 'C6' has neither a patient_id nor an accession number"));
    assert_true(has_problem(&pr, "line 8: case_id 'bad id!' is not a valid identifier"));
    assert_true(has_problem(&pr, "line 9: expected 3 fields, got 4"));
    assert_true(has_problem(&pr, "line 10: stray '\"'"));
    mdb_cases_problems_clear(&pr);
}

static void test_header_problems(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    assert_false(parse("", &c, &pr));
    assert_true(has_problem(&pr, "empty"));
    mdb_cases_problems_clear(&pr);

    assert_false(parse("case_id,patient_id,accession_numbers\n\n", &c, &pr));
    assert_true(has_problem(&pr, "no cases"));
    mdb_cases_problems_clear(&pr);

    assert_false(parse("case,patient_id\nC1,P1\n", &c, &pr));
    assert_true(has_problem(&pr, "line 1: unknown column 'case'"));
    assert_true(has_problem(&pr, "line 1: header must name"));
    mdb_cases_problems_clear(&pr);

    assert_false(parse("case_id,patient_id,case_id\nC1,P1,C1\n", &c, &pr));
    assert_true(has_problem(&pr, "line 1: column 'case_id' appears twice"));
    mdb_cases_problems_clear(&pr);

    /* Data without a header: the first row is taken as the header and rejected. */
    assert_false(parse("C1,P1,A1\n", &c, &pr));
    assert_true(has_problem(&pr, "line 1:"));
    assert_int_equal(c.n, 0);
    mdb_cases_problems_clear(&pr);
}

static void test_unterminated_quote_and_bad_utf8(void **state)
{
    (void)state;
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    assert_false(parse("case_id,patient_id\nC1,\"P1\nC2,P2\n", &c, &pr));
    assert_true(has_problem(&pr, "line 2: unterminated quoted field"));
    mdb_cases_problems_clear(&pr);

    assert_false(parse("case_id,patient_id\nC1,P\xC3\x28\nC2,P2\n", &c, &pr));
    assert_true(has_problem(&pr, "line 2: not valid UTF-8"));
    assert_int_equal(pr.total, 1);
    mdb_cases_problems_clear(&pr);

    /* A NUL byte inside the text is refused, not silently truncated. */
    const char nul[] = "case_id,patient_id\nC1,P\0x\n";
    mdb_error_t err = {0};
    memset(&pr, 0, sizeof pr);
    assert_false(mdb_cases_parse_csv(nul, sizeof nul - 1, &c, &pr, &err));
    assert_true(has_problem(&pr, "line 2:"));
    mdb_cases_problems_clear(&pr);
}

static void test_problem_list_is_capped_but_counted(void **state)
{
    (void)state;
    size_t rows = MDB_CASES_MAX_PROBLEMS + 50;
    size_t cap = 64 + rows * 16;
    char *text = malloc(cap);
    size_t n = (size_t)snprintf(text, cap, "case_id,patient_id\n");
    for (size_t i = 0; i < rows; i++)
        n += (size_t)snprintf(text + n, cap - n, "C%zu\n", i); /* one field instead of two */
    mdb_cases_t c;
    mdb_cases_problems_t pr;
    assert_false(parse(text, &c, &pr));
    assert_int_equal(pr.total, rows);
    assert_int_equal(pr.messages.n, MDB_CASES_MAX_PROBLEMS);
    mdb_cases_problems_clear(&pr);
    free(text);
}

static void test_load_csv_file(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/test_csv_%d.csv", (int)getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("case_id,patient_id,accession_numbers\nK1,P1,A1;A2\n", f);
    fclose(f);
    mdb_cases_t c;
    mdb_cases_problems_t pr = {0};
    mdb_error_t err = {0};
    assert_true(mdb_cases_load_csv(path, &c, &pr, &err));
    assert_int_equal(c.n, 1);
    mdb_cases_clear(&c);
    unlink(path);
    assert_false(mdb_cases_load_csv(path, &c, &pr, &err));
    assert_int_equal(err.domain, MDB_ERR_IO);
    assert_non_null(strstr(err.message, path));
    assert_int_equal(pr.total, 0);
}

static void test_case_equal_ignores_accession_order(void **state)
{
    (void)state;
    mdb_case_t a = {.case_id = "C", .patient_id = "P"}, b = {.case_id = "C", .patient_id = "P"};
    mdb_strv_push(&a.accession_numbers, "A1");
    mdb_strv_push(&a.accession_numbers, "A2");
    mdb_strv_push(&b.accession_numbers, "A2");
    mdb_strv_push(&b.accession_numbers, "A1");
    assert_true(mdb_case_equal(&a, &b));
    mdb_strv_push(&b.accession_numbers, "A3");
    assert_false(mdb_case_equal(&a, &b));
    mdb_strv_clear(&a.accession_numbers);
    mdb_strv_clear(&b.accession_numbers);
}

static void test_email_validation(void **state)
{
    (void)state;
    const char *good[] = {"alice@example.org", "a.b+tag@sub.example.co.uk", "x_y-z@a-b.io", "1@2.3a"};
    const char *bad[] = {"",
                         "alice",
                         "alice@",
                         "@example.org",
                         "alice@example",
                         "alice@@example.org",
                         "al ice@example.org",
                         "alice@exa mple.org",
                         "alice@-example.org",
                         "alice@example-.org",
                         "alice@example..org",
                         ".alice@example.org",
                         "alice.@example.org",
                         "al..ice@example.org",
                         "alice@example.org.",
                         "\"alice\"@example.org",
                         "alice@ex_ample.org",
                         "alicé@example.org",
                         "alice@example.org\n"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(mdb_cases_email_valid(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (mdb_cases_email_valid(bad[i]))
            fail_msg("accepted bad e-mail '%s'", bad[i]);
    }
    assert_false(mdb_cases_email_valid(NULL));
    char longlocal[80];
    memset(longlocal, 'a', 65);
    strcpy(longlocal + 65, "@x.org");
    assert_false(mdb_cases_email_valid(longlocal));
}

static void test_id_value_and_text_validation(void **state)
{
    (void)state;
    assert_true(mdb_cases_id_valid("alice"));
    assert_true(mdb_cases_id_valid("LIDC-IDRI"));
    assert_true(mdb_cases_id_valid("job:2024.11_a+b@x"));
    assert_false(mdb_cases_id_valid(""));
    assert_false(mdb_cases_id_valid("-x"));
    assert_false(mdb_cases_id_valid(".hidden"));
    assert_false(mdb_cases_id_valid("a/b"));
    assert_false(mdb_cases_id_valid("a b"));
    assert_false(mdb_cases_id_valid("a$b"));
    char big[200];
    memset(big, 'a', 129);
    big[129] = '\0';
    assert_false(mdb_cases_id_valid(big));
    big[128] = '\0';
    assert_true(mdb_cases_id_valid(big));

    assert_true(mdb_cases_value_valid("1.3.6.1.4.1.14519.5.2.1.6279.6001.1"));
    assert_true(mdb_cases_value_valid("Müller^Hans"));
    assert_false(mdb_cases_value_valid(""));
    assert_false(mdb_cases_value_valid("   "));
    assert_false(mdb_cases_value_valid("a\tb"));
    assert_false(mdb_cases_value_valid("\xff\xfe"));
    memset(big, 'x', 65);
    big[65] = '\0';
    assert_false(mdb_cases_value_valid(big));

    assert_true(mdb_cases_text_valid("A researcher's cohort", 100, false));
    assert_false(mdb_cases_text_valid("two\nlines", 100, false));
    assert_true(mdb_cases_text_valid("two\nlines", 100, true));
    assert_false(mdb_cases_text_valid(" \n ", 100, true));
    assert_false(mdb_cases_text_valid("abc", 2, false));
}

/* A collection document's cases (mdb_cases_doc): entries without a case_id
 * and non-string accessions passed over, no array = no cases. */
static void test_cases_from_doc(void **state)
{
    (void)state;
    bson_error_t be;
    bson_t *doc = bson_new_from_json(
        (const uint8_t *)"{\"_id\": \"LIDC\", \"cases\": [{\"case_id\": \"C1\", \"patient_id\": \"P1\","
                         " \"accession_numbers\": [\"A1\", 7, \"A2\"]}, {\"patient_id\": \"P9\"}, 5,"
                         " {\"case_id\": \"C2\"}]}",
        -1, &be);
    assert_non_null(doc);
    mdb_cases_t cases;
    assert_true(mdb_cases_from_doc(doc, &cases));
    assert_int_equal(cases.n, 2);
    assert_string_equal(cases.v[0].case_id, "C1");
    assert_string_equal(cases.v[0].patient_id, "P1");
    assert_int_equal(cases.v[0].accession_numbers.n, 2);
    assert_string_equal(cases.v[0].accession_numbers.v[1], "A2");
    assert_string_equal(cases.v[1].case_id, "C2");
    assert_string_equal(cases.v[1].patient_id, "");
    assert_int_equal(cases.v[1].accession_numbers.n, 0);
    mdb_cases_clear(&cases);
    bson_destroy(doc);
    doc = bson_new_from_json((const uint8_t *)"{\"_id\": \"X\"}", -1, &be);
    assert_true(mdb_cases_from_doc(doc, &cases));
    assert_int_equal(cases.n, 0);
    bson_destroy(doc);
    assert_true(mdb_cases_from_doc(NULL, &cases));
    assert_int_equal(cases.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_manifest),
        cmocka_unit_test(test_quoting_crlf_bom_and_column_order),
        cmocka_unit_test(test_two_columns_without_accessions),
        cmocka_unit_test(test_multiline_quoted_field_keeps_line_numbers),
        cmocka_unit_test(test_every_bad_row_reported_and_nothing_returned),
        cmocka_unit_test(test_header_problems),
        cmocka_unit_test(test_unterminated_quote_and_bad_utf8),
        cmocka_unit_test(test_problem_list_is_capped_but_counted),
        cmocka_unit_test(test_load_csv_file),
        cmocka_unit_test(test_case_equal_ignores_accession_order),
        cmocka_unit_test(test_email_validation),
        cmocka_unit_test(test_id_value_and_text_validation),
        cmocka_unit_test(test_cases_from_doc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
