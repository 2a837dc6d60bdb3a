/* Unit tests of the pure parts behind the producer: building a job's
 * selector list from a request (order, de-duplication, validation, the
 * "selects nothing" error), case selectors, their BSON form, job state
 * names, the catalog field used per selector kind, and mdb_strmap (the hash
 * map the crawl and the manifest checks rely on). No broker, no database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_catalog.h"
#include "mdb_jobs.h"
#include "mdb_strmap.h"

static void push(mdb_strv_t *v, const char *s)
{
    assert_true(mdb_strv_push(v, s));
}

static void test_selectors_order_and_dedup(void **state)
{
    (void)state;
    mdb_job_msg_t m = {0};
    push(&m.accession_numbers, "A1");
    push(&m.accession_numbers, "A2");
    push(&m.accession_numbers, "A1");
    push(&m.patient_ids, "LIDC-IDRI-0001");
    push(&m.study_uids, "1.2.3");
    push(&m.series_uids, "1.2.3.4");
    push(&m.paths, "/archive/a/1.dcm");
    mdb_selectors_t s;
    mdb_error_t err = {0};
    assert_true(mdb_selectors_from_job(&m, &s, &err));
    assert_int_equal(s.n, 6);
    const char *want[] = {"accession:A1", "accession:A2",   "patient:LIDC-IDRI-0001",
                          "study:1.2.3",  "series:1.2.3.4", "path:/archive/a/1.dcm"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(s.v[i].text, want[i]);
        assert_int_equal(s.v[i].status, MDB_SEL_PENDING);
        assert_int_equal(s.v[i].files, 0);
    }
    assert_int_equal(s.v[2].kind, MDB_SEL_PATIENT);
    assert_string_equal(s.v[2].value, "LIDC-IDRI-0001");
    /* The same value under another kind is a different selector. */
    size_t idx = 99;
    assert_true(mdb_selectors_add(&s, MDB_SEL_PATIENT, "A1", &idx));
    assert_int_equal(idx, 6);
    assert_true(mdb_selectors_add(&s, MDB_SEL_ACCESSION, "A2", &idx));
    assert_int_equal(idx, 1);
    assert_int_equal(s.n, 7);
    mdb_selectors_clear(&s);
    assert_int_equal(s.n, 0);
    mdb_msg_job_clear(&m);
}

static void test_selectors_validation(void **state)
{
    (void)state;
    mdb_job_msg_t m = {0};
    mdb_selectors_t s;
    mdb_error_t err = {0};

    /* Nothing selected. */
    assert_false(mdb_selectors_from_job(&m, &s, &err));
    assert_non_null(strstr(err.message, "selects nothing"));

    /* all_cases alone is a valid request (expanded later by the producer). */
    m.all_cases = true;
    assert_true(mdb_selectors_from_job(&m, &s, &err));
    assert_int_equal(s.n, 0);
    mdb_selectors_clear(&s);
    m.all_cases = false;

    push(&m.accession_numbers, "ok");
    push(&m.accession_numbers, "bad\x01value");
    assert_false(mdb_selectors_from_job(&m, &s, &err));
    assert_non_null(strstr(err.message, "accession"));
    assert_int_equal(s.n, 0);
    mdb_msg_job_clear(&m);

    push(&m.study_uids, "   ");
    assert_false(mdb_selectors_from_job(&m, &s, &err));
    assert_non_null(strstr(err.message, "study"));
    mdb_msg_job_clear(&m);

    char big[5000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    push(&m.paths, big);
    assert_false(mdb_selectors_from_job(&m, &s, &err));
    assert_non_null(strstr(err.message, "path"));
    mdb_msg_job_clear(&m);

    /* Paths are not judged here (the archive gate does that): '..' passes this stage. */
    push(&m.paths, "/archive/../etc/passwd");
    assert_true(mdb_selectors_from_job(&m, &s, &err));
    assert_int_equal(s.v[0].kind, MDB_SEL_PATH);
    mdb_selectors_clear(&s);
    mdb_msg_job_clear(&m);
}

static void test_case_selectors_and_status(void **state)
{
    (void)state;
    mdb_selectors_t s = {0};
    const char *accs[] = {"A1", "A2"};
    assert_true(mdb_selectors_add_case(&s, "case-1", "P1", accs, 2));
    assert_true(mdb_selectors_add_case(&s, "case-2", "P2", NULL, 0));
    assert_true(mdb_selectors_add_case(&s, "case-1", "other", NULL, 0)); /* duplicate: first wins */
    assert_int_equal(s.n, 2);
    assert_string_equal(s.v[0].text, "case:case-1");
    assert_string_equal(s.v[0].case_patient_id, "P1");
    assert_int_equal(s.v[0].case_accessions.n, 2);
    assert_string_equal(s.v[0].case_accessions.v[1], "A2");
    assert_int_equal(s.v[1].case_accessions.n, 0);

    mdb_selector_set(&s.v[0], MDB_SEL_FOUND, 42, NULL);
    mdb_selector_set(&s.v[1], MDB_SEL_NOT_FOUND, 0, "no catalog entry");
    bson_t doc = BSON_INITIALIZER;
    assert_true(mdb_selectors_append_bson(&s, &doc, "selectors"));
    char *json = bson_as_relaxed_extended_json(&doc, NULL);
    assert_non_null(strstr(json, "\"selector\" : \"case:case-1\""));
    assert_non_null(strstr(json, "\"kind\" : \"case\""));
    assert_non_null(strstr(json, "\"files\" : 42"));
    assert_non_null(strstr(json, "\"status\" : \"found\""));
    assert_non_null(strstr(json, "\"status\" : \"not_found\""));
    assert_non_null(strstr(json, "\"reason\" : \"no catalog entry\""));
    bson_free(json);
    bson_destroy(&doc);
    mdb_selectors_clear(&s);
}

static void test_state_and_kind_names(void **state)
{
    (void)state;
    const char *names[] = {"submitted", "resolving", "running", "completed", "completed_with_errors",
                           "failed",    "retrieving"};
    for (int i = 0; i < MDB_JOB_NSTATES; i++) {
        int back = -1;
        assert_string_equal(mdb_job_state_name(i), names[i]);
        assert_true(mdb_job_state_parse(names[i], &back));
        assert_int_equal(back, i);
        assert_int_equal(mdb_job_state_final(i), i >= MDB_JOB_COMPLETED && i <= MDB_JOB_FAILED);
    }
    int x;
    assert_false(mdb_job_state_parse("done", &x));
    assert_false(mdb_job_state_parse(NULL, &x));
    assert_string_equal(mdb_job_state_name(99), "unknown");
    assert_string_equal(mdb_selector_kind_name(MDB_SEL_SERIES), "series");
    assert_string_equal(mdb_selector_status_name(MDB_SEL_REFUSED), "refused");

    const char *key = NULL;
    assert_string_equal(mdb_catalog_field_for_kind(MDB_SEL_ACCESSION, &key), "series.accession_number");
    assert_string_equal(key, "accession_number");
    assert_string_equal(mdb_catalog_field_for_kind(MDB_SEL_PATIENT, &key), "series.patient_id");
    assert_string_equal(mdb_catalog_field_for_kind(MDB_SEL_STUDY, &key), "series.study_uid");
    assert_string_equal(mdb_catalog_field_for_kind(MDB_SEL_SERIES, &key), "series.series_uid");
    assert_string_equal(key, "series_uid");
    assert_null(mdb_catalog_field_for_kind(MDB_SEL_PATH, &key));
    assert_null(mdb_catalog_field_for_kind(MDB_SEL_CASE, NULL));
}

static void test_doc_helpers(void **state)
{
    (void)state;
    bson_t *d = BCON_NEW("a", BCON_INT32(3), "b", BCON_INT64(1LL << 40), "c", BCON_DOUBLE(2.0), "s", BCON_UTF8("x"));
    assert_int_equal(mdb_jobs_doc_int(d, "a"), 3);
    assert_int_equal(mdb_jobs_doc_int(d, "b"), 1LL << 40);
    assert_int_equal(mdb_jobs_doc_int(d, "c"), 2);
    assert_int_equal(mdb_jobs_doc_int(d, "s"), 0);
    assert_int_equal(mdb_jobs_doc_int(d, "missing"), 0);
    assert_string_equal(mdb_jobs_doc_str(d, "s"), "x");
    assert_null(mdb_jobs_doc_str(d, "a"));
    assert_null(mdb_jobs_doc_str(NULL, "a"));
    bson_destroy(d);
}

typedef struct {
    size_t seen, marked;
} visit_t;

static bool visit(mdb_strmap_entry_t *e, void *ud)
{
    visit_t *v = ud;
    v->seen++;
    v->marked += e->mark;
    return true;
}

static void test_strmap(void **state)
{
    (void)state;
    mdb_strmap_t *m = mdb_strmap_new();
    assert_non_null(m);
    char key[64];
    for (int i = 0; i < 5000; i++) {
        bool created = false;
        snprintf(key, sizeof key, "/archive/dir-%d", i);
        mdb_strmap_entry_t *e = mdb_strmap_put(m, key, &created);
        assert_non_null(e);
        assert_true(created);
        e->value = i;
        e->value2 = -i;
        e->mark = (i % 3) == 0;
    }
    assert_int_equal(mdb_strmap_count(m), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "/archive/dir-%d", i);
        mdb_strmap_entry_t *e = mdb_strmap_get(m, key);
        assert_non_null(e);
        assert_int_equal(e->value, i);
        assert_int_equal(e->value2, -i);
        assert_string_equal(e->key, key);
    }
    bool created = true;
    mdb_strmap_entry_t *e = mdb_strmap_put(m, "/archive/dir-7", &created);
    assert_false(created);
    assert_int_equal(e->value, 7);
    assert_null(mdb_strmap_get(m, "/archive/dir-5000"));
    assert_null(mdb_strmap_get(m, ""));
    visit_t v = {0};
    mdb_strmap_foreach(m, visit, &v);
    assert_int_equal(v.seen, 5000);
    assert_int_equal(v.marked, 1667);
    mdb_strmap_destroy(m);
    mdb_strmap_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selectors_order_and_dedup),
        cmocka_unit_test(test_selectors_validation),
        cmocka_unit_test(test_case_selectors_and_status),
        cmocka_unit_test(test_state_and_kind_names),
        cmocka_unit_test(test_doc_helpers),
        cmocka_unit_test(test_strmap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
