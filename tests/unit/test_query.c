/* Unit tests of mdb_query: every filter-parameter form (equality, lists,
 * date and number ranges, comparisons, wildcards, collection/job filters,
 * metadata keywords, parent-level filters), paging/sort/projection, and the
 * raw-query whitelist (what is accepted, what is refused and why). Pure
 * logic: no database. Filters are compared as JSON values, so key order and
 * number types (integer vs real) are part of the assertion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_indexes.h"
#include "mdb_query.h"

/* Build a query on level from "name=value" strings and compare its filter
 * with the expected JSON. */
static void expect_filter(mdb_query_level_t level, const char *expected, const char *const *params, size_t n)
{
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(level, 1000);
    assert_non_null(q);
    for (size_t i = 0; i < n; i++) {
        char *copy = strdup(params[i]);
        char *eq = strchr(copy, '=');
        assert_non_null(eq);
        *eq = '\0';
        if (!mdb_query_add_param(q, copy, eq + 1, &err))
            fail_msg("param %s rejected: %s", params[i], err.message);
        free(copy);
    }
    json_t *got = mdb_query_bson_to_json(mdb_query_filter(q));
    json_error_t jerr;
    json_t *want = json_loads(expected, 0, &jerr);
    if (!want)
        fail_msg("bad expected JSON %s: %s", expected, jerr.text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("filter for %s:\n got  %s\n want %s", params[0], g, expected);
    }
    json_decref(got);
    json_decref(want);
    mdb_query_destroy(q);
}

#define EXPECT(level, expected, ...)                                                                                   \
    do {                                                                                                               \
        const char *const p_[] = {__VA_ARGS__};                                                                        \
        expect_filter(level, expected, p_, sizeof p_ / sizeof p_[0]);                                                  \
    } while (0)

/* A parameter that must be refused; the message must contain `needle`. */
static void expect_refused(mdb_query_level_t level, const char *name, const char *value, const char *needle)
{
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(level, 1000);
    assert_non_null(q);
    if (mdb_query_add_param(q, name, value, &err))
        fail_msg("%s=%s was accepted", name, value);
    assert_int_equal(err.domain, MDB_ERR_QUERY);
    if (!strstr(err.message, needle))
        fail_msg("%s=%s: message '%s' lacks '%s'", name, value, err.message, needle);
    /* a refused parameter leaves the query unchanged */
    assert_true(bson_empty(mdb_query_filter(q)));
    mdb_query_destroy(q);
}

static void test_equality_and_lists(void **state)
{
    (void)state;
    EXPECT(MDB_QUERY_SERIES, "{\"modality\":\"CT\"}", "modality=CT");
    EXPECT(MDB_QUERY_SERIES, "{\"modality\":{\"$in\":[\"CT\",\"MR\"]}}", "modality=CT,MR");
    EXPECT(MDB_QUERY_STUDIES, "{\"$or\":[{\"modality\":\"CT\"},{\"modalities\":\"CT\"}]}", "modality=CT");
    EXPECT(MDB_QUERY_STUDIES, "{\"accession_number\":\"A123\"}", "accession=A123");
    EXPECT(MDB_QUERY_STUDIES, "{\"patient_id\":\"LIDC-IDRI-0001\"}", "patient=LIDC-IDRI-0001");
    EXPECT(MDB_QUERY_STUDIES, "{\"_id\":\"1.2.3\"}", "study_instance_uid=1.2.3");
    EXPECT(MDB_QUERY_SERIES, "{\"study_id\":\"1.2.3\"}", "study=1.2.3");
    EXPECT(MDB_QUERY_SERIES, "{\"body_part_examined\":\"CHEST\"}", "body_part=CHEST");
    EXPECT(MDB_QUERY_INSTANCES, "{\"series_id\":\"1.2.3.4\"}", "series_uid=1.2.3.4");
    /* escaped comma is a literal comma, not a list */
    EXPECT(MDB_QUERY_SERIES, "{\"series_description\":\"a,b\"}", "series_description=a\\,b");
    /* a patient ID with dashes is not a range on a string field */
    EXPECT(MDB_QUERY_STUDIES, "{\"patient_id\":\"0001-0002\"}", "patient_id=0001-0002");
    /* numbers: integral values are integers, others reals */
    EXPECT(MDB_QUERY_SERIES, "{\"series_number\":3}", "series_number=3");
    EXPECT(MDB_QUERY_SERIES, "{\"$or\":[{\"series_number\":1},{\"series_number\":3}]}", "series_number=1,3");
}

static void test_dates(void **state)
{
    (void)state;
    const char *y2000_2001 = "{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20011231\"}}";
    EXPECT(MDB_QUERY_STUDIES, y2000_2001, "study_date=20000101-20011231");
    EXPECT(MDB_QUERY_STUDIES, y2000_2001, "study_date=2000-2001");
    EXPECT(MDB_QUERY_STUDIES, y2000_2001, "study_date=2000-01-01-2001-12-31");
    EXPECT(MDB_QUERY_STUDIES, y2000_2001, "date=200001-200112");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20001231\"}}", "study_date=2000");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gte\":\"20000201\",\"$lte\":\"20000229\"}}", "study_date=200002");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gte\":\"19000201\",\"$lte\":\"19000228\"}}", "study_date=1900-02");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":\"20000315\"}", "study_date=20000315");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":\"20000315\"}", "study_date=2000-03-15");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gte\":\"20000101\"}}", "study_date=20000101-");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$lte\":\"20011231\"}}", "study_date=-2001");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$lt\":\"20000101\"}}", "study_date=lt:2000");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$lte\":\"20001231\"}}", "study_date=lte:2000");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gt\":\"20001231\"}}", "study_date=gt:2000");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$gte\":\"20000101\"}}", "study_date=gte:2000");
    EXPECT(MDB_QUERY_STUDIES,
           "{\"$or\":[{\"study_date\":{\"$gte\":\"19990101\",\"$lte\":\"19991231\"}},{\"study_date\":\"20010704\"}]}",
           "study_date=1999,20010704");
    EXPECT(MDB_QUERY_STUDIES, "{\"study_date\":{\"$regex\":\"^2000.*$\"}}", "study_date=2000*");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "2000-13", "expects a date");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "20000230", "expects a date");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "yesterday", "expects a date");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "2001-2000", "ends before it starts");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "-", "expects a date");
    expect_refused(MDB_QUERY_STUDIES, "study_date", "lt:soon", "expects a date");
}

static void test_numbers_and_comparisons(void **state)
{
    (void)state;
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$lt\":2.5}}", "slice_thickness=lt:2.5");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$lte\":2.5}}", "slice_thickness=lte:2.5");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$gt\":1}}", "slice_thickness=gt:1");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$gte\":1.25}}", "slice_thickness=gte:1.25");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$nin\":[5]}}", "slice_thickness=ne:5");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$in\":[1.25]}}", "slice_thickness=eq:1.25");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$gte\":1,\"$lte\":2.5}}", "slice_thickness=1-2.5");
    EXPECT(MDB_QUERY_SERIES, "{\"slice_thickness\":{\"$gte\":1}}", "slice_thickness=1-");
    EXPECT(MDB_QUERY_SERIES, "{\"kvp\":-5}", "kvp=-5");
    EXPECT(MDB_QUERY_SERIES, "{\"kvp\":{\"$gte\":-5,\"$lte\":-1}}", "kvp=-5--1");
    EXPECT(MDB_QUERY_SERIES, "{\"kvp\":{\"$lt\":0.001}}", "kvp=lt:1e-3");
    EXPECT(MDB_QUERY_SERIES, "{\"modality\":{\"$nin\":[\"CT\",\"MR\"]}}", "modality=ne:CT,MR");
    EXPECT(MDB_QUERY_SERIES, "{\"modality\":{\"$lt\":\"M\"}}", "modality=lt:M");
    EXPECT(MDB_QUERY_SERIES, "{\"body_part_examined\":{\"$exists\":true}}", "body_part=exists:true");
    EXPECT(MDB_QUERY_SERIES, "{\"body_part_examined\":{\"$exists\":false}}", "body_part=exists:no");
    /* repeating a field ANDs the conditions */
    EXPECT(MDB_QUERY_SERIES, "{\"$and\":[{\"slice_thickness\":{\"$gt\":1}},{\"slice_thickness\":{\"$lt\":2.5}}]}",
           "slice_thickness=gt:1", "slice_thickness=lt:2.5");
    EXPECT(MDB_QUERY_SERIES,
           "{\"$and\":[{\"modality\":\"CT\"},{\"body_part_examined\":\"CHEST\"},{\"slice_thickness\":{\"$lt\":2.5}}]}",
           "modality=CT", "body_part_examined=CHEST", "slice_thickness=lt:2.5");
    /* negation on studies must hold for modality and modalities */
    EXPECT(MDB_QUERY_STUDIES, "{\"$and\":[{\"modality\":{\"$nin\":[\"CT\"]}},{\"modalities\":{\"$nin\":[\"CT\"]}}]}",
           "modality=ne:CT");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "thin", "expects a number");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "lt:thin", "expects a number");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "lt:", "needs a value");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "3-1", "ends before it starts");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "1*", "wildcards are not allowed");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "inf", "expects a number");
    expect_refused(MDB_QUERY_SERIES, "slice_thickness", "0x10", "expects a number");
    expect_refused(MDB_QUERY_SERIES, "body_part", "exists:maybe", "exists: expects true or false");
    /* integrity (damaged files) is an object: only its presence is asked */
    EXPECT(MDB_QUERY_INSTANCES, "{\"integrity\":{\"$exists\":true}}", "integrity=exists:true");
    EXPECT(MDB_QUERY_INSTANCES, "{\"integrity\":{\"$exists\":false}}", "integrity=exists:false");
    expect_refused(MDB_QUERY_INSTANCES, "integrity", "true", "takes exists:true or exists:false");
    expect_refused(MDB_QUERY_INSTANCES, "integrity", "exists:maybe", "exists: expects true or false");
}

static void test_wildcards(void **state)
{
    (void)state;
    EXPECT(MDB_QUERY_STUDIES, "{\"patient_id\":{\"$regex\":\"^LIDC-IDRI-00.*$\"}}", "patient_id=LIDC-IDRI-00*");
    EXPECT(MDB_QUERY_STUDIES, "{\"patient_id\":{\"$regex\":\"^LIDC-IDRI-000.$\"}}", "patient=LIDC-IDRI-000?");
    /* regex metacharacters in the value are literal */
    EXPECT(MDB_QUERY_SERIES, "{\"series_description\":{\"$regex\":\"^a\\\\.b\\\\(c\\\\)\\\\[d\\\\]\\\\+.*$\"}}",
           "series_description=a.b(c)[d]+*");
    /* escaped wildcard characters are literal, so no regex at all */
    EXPECT(MDB_QUERY_SERIES, "{\"series_description\":\"50*\"}", "series_description=50\\*");
    EXPECT(MDB_QUERY_SERIES, "{\"series_description\":{\"$regex\":\"^50\\\\*.*$\"}}", "series_description=50\\**");
    /* lists with wildcards */
    EXPECT(MDB_QUERY_STUDIES, "{\"$or\":[{\"patient_id\":{\"$regex\":\"^A.*$\"}},{\"patient_id\":\"B\"}]}",
           "patient_id=A*,B");
}

static void test_collection_job_metadata(void **state)
{
    (void)state;
    EXPECT(MDB_QUERY_STUDIES, "{\"collection_ids\":\"LIDC-IDRI\"}", "collection=LIDC-IDRI");
    EXPECT(MDB_QUERY_STUDIES, "{\"job_ids\":\"j1\"}", "job=j1");
    EXPECT(MDB_QUERY_SERIES, "{\"collection_ids\":{\"$in\":[\"A\",\"B\"]}}", "collection=A,B");
    EXPECT(MDB_QUERY_INSTANCES, "{\"job_ids\":\"j1\"}", "job=j1");
    EXPECT(MDB_QUERY_STUDIES, "{\"metadata.PatientAge\":\"065Y\"}", "metadata.PatientAge=065Y");
    EXPECT(MDB_QUERY_INSTANCES, "{\"metadata.Rows\":{\"$in\":[512,\"512\"]}}", "metadata.Rows=512");
    EXPECT(MDB_QUERY_INSTANCES, "{\"metadata.Rows\":{\"$gte\":256}}", "metadata.Rows=gte:256");
    EXPECT(MDB_QUERY_INSTANCES, "{\"metadata.Rows\":{\"$gte\":100,\"$lte\":600}}", "metadata.Rows=100-600");
    EXPECT(MDB_QUERY_STUDIES, "{\"metadata.PatientBirthDate\":{\"$gte\":\"19500101\",\"$lte\":\"19591231\"}}",
           "metadata.PatientBirthDate=1950-1959");
    EXPECT(MDB_QUERY_STUDIES, "{\"metadata.PatientName\":{\"$regex\":\"^Doe\\\\^.*$\"}}", "metadata.PatientName=Doe^*");
    EXPECT(MDB_QUERY_INSTANCES, "{\"metadata.AnatomicRegionSequence.CodeValue\":\"T-D3000\"}",
           "metadata.AnatomicRegionSequence.CodeValue=T-D3000");
    expect_refused(MDB_QUERY_STUDIES, "metadata.bad-key", "x", "not a valid metadata keyword");
    expect_refused(MDB_QUERY_STUDIES, "metadata.", "x", "not a valid metadata keyword");
    expect_refused(MDB_QUERY_STUDIES, "metadata.$where", "x", "not a valid metadata keyword");
    expect_refused(MDB_QUERY_STUDIES, "metadata.A..B", "x", "not a valid metadata keyword");
}

static void test_unknown_and_bad_values(void **state)
{
    (void)state;
    expect_refused(MDB_QUERY_STUDIES, "colour", "red", "unknown filter field 'colour' for studies");
    expect_refused(MDB_QUERY_STUDIES, "$where", "1", "unknown filter field");
    expect_refused(MDB_QUERY_SERIES, "modality", "", "needs a value");
    expect_refused(MDB_QUERY_SERIES, "modality", "CT,,MR", "empty value in list");
    expect_refused(MDB_QUERY_SERIES, "modality", "\xff\xfe", "not valid UTF-8");
    char *big = malloc(10000);
    memset(big, 'A', 9999);
    big[9999] = '\0';
    expect_refused(MDB_QUERY_SERIES, "modality", big, "too long");
    free(big);
    /* too many list items */
    char *many = malloc(4000);
    size_t o = 0;
    for (int i = 0; i < 1500; i++)
        o += (size_t)snprintf(many + o, 4000 - o, "%s%c", i ? "," : "", 'A');
    expect_refused(MDB_QUERY_SERIES, "modality", many, "too many values");
    free(many);
}

static void test_parent_levels(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_true(mdb_query_add_param(q, "modality", "CT", &err));
    assert_true(mdb_query_add_param(q, "study_date", "2000-2001", &err));
    assert_true(mdb_query_add_param(q, "patient", "LIDC-IDRI-00*", &err));
    /* own filter has only the series clause */
    json_t *own = mdb_query_bson_to_json(mdb_query_filter(q));
    json_t *want = json_loads("{\"modality\":\"CT\"}", 0, NULL);
    assert_true(json_equal(own, want));
    json_decref(own);
    json_decref(want);
    /* the explanation shows the study-level part */
    char *s = mdb_query_filter_json(q);
    assert_non_null(strstr(s, "\"studies\""));
    assert_non_null(strstr(s, "study_date"));
    assert_non_null(strstr(s, "^LIDC-IDRI-00.*$"));
    bson_free(s);
    mdb_query_destroy(q);

    /* instances: series-level and study-level parents */
    q = mdb_query_new(MDB_QUERY_INSTANCES, 1000);
    assert_true(mdb_query_add_param(q, "slice_thickness", "lt:2.5", &err));
    assert_true(mdb_query_add_param(q, "accession", "A1", &err));
    assert_true(bson_empty(mdb_query_filter(q)));
    s = mdb_query_filter_json(q);
    assert_non_null(strstr(s, "\"series\""));
    assert_non_null(strstr(s, "\"studies\""));
    bson_free(s);
    mdb_query_destroy(q);
}

static void test_paging_sort_fields(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_STUDIES, 200);
    assert_int_equal(mdb_query_limit(q), 50);
    assert_int_equal(mdb_query_offset(q), 0);
    assert_true(mdb_query_add_param(q, "limit", "200", &err));
    assert_int_equal(mdb_query_limit(q), 200);
    assert_false(mdb_query_add_param(q, "limit", "201", &err));
    assert_non_null(strstr(err.message, "and 200"));
    assert_false(mdb_query_add_param(q, "limit", "-1", &err));
    assert_true(mdb_query_add_param(q, "limit", "0", &err)); /* the count alone */
    assert_int_equal(mdb_query_limit(q), 0);
    assert_true(mdb_query_add_param(q, "limit", "200", &err));
    assert_false(mdb_query_add_param(q, "limit", "ten", &err));
    assert_non_null(strstr(err.message, "expects an integer"));
    assert_false(mdb_query_add_param(q, "limit", "99999999999999999999999", &err));
    assert_false(mdb_query_add_param(q, "offset", "-1", &err));
    assert_true(mdb_query_add_param(q, "offset", "40", &err));
    assert_int_equal(mdb_query_offset(q), 40);
    assert_int_equal(mdb_query_limit(q), 200);

    assert_true(mdb_query_add_param(q, "sort", "-study_date,patient", &err));
    json_t *sort = mdb_query_bson_to_json(mdb_query_sort(q));
    char *s = json_dumps(sort, JSON_COMPACT);
    assert_string_equal(s, "{\"study_date\":-1,\"patient_id\":1,\"_id\":1}");
    free(s);
    json_decref(sort);
    assert_false(mdb_query_add_param(q, "sort", "shoe_size", &err));
    assert_non_null(strstr(err.message, "unknown field 'shoe_size'"));
    assert_false(mdb_query_add_param(q, "sort", "study_date,-study_date", &err));
    assert_false(mdb_query_add_param(q, "sort", ",", &err));

    assert_true(mdb_query_add_param(q, "fields", "patient_id,study_date,metadata.PatientAge", &err));
    json_t *proj = mdb_query_bson_to_json(mdb_query_projection(q));
    s = json_dumps(proj, JSON_COMPACT);
    assert_string_equal(s, "{\"patient_id\":1,\"study_date\":1,\"metadata.PatientAge\":1}");
    free(s);
    json_decref(proj);
    assert_true(mdb_query_add_param(q, "fields", "metadata,metadata.PatientAge", &err));
    proj = mdb_query_bson_to_json(mdb_query_projection(q));
    s = json_dumps(proj, JSON_COMPACT);
    assert_string_equal(s, "{\"metadata\":1}");
    free(s);
    json_decref(proj);
    assert_false(mdb_query_add_param(q, "fields", "password", &err));
    mdb_query_destroy(q);
    assert_true(mdb_query_is_page_param("limit"));
    assert_false(mdb_query_is_page_param("modality"));
}

/* ---- raw queries ---- */

static mdb_query_t *raw(const char *text, mdb_error_t *err)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    mdb_query_t *q = mdb_query_new_raw(j, "series", 1000, err);
    json_decref(j);
    return q;
}

static void expect_raw_refused(const char *text, const char *needle)
{
    mdb_error_t err = {0};
    mdb_query_t *q = raw(text, &err);
    if (q)
        fail_msg("raw query accepted: %s", text);
    assert_int_equal(err.domain, MDB_ERR_QUERY);
    if (!strstr(err.message, needle))
        fail_msg("raw %s: message '%s' lacks '%s'", text, err.message, needle);
}

static void test_raw_accepted(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *text = "{\"collection\":\"series\",\"filter\":{\"modality\":\"CT\",\"body_part_examined\":\"CHEST\","
                       "\"slice_thickness\":{\"$lt\":2.5},\"$or\":[{\"series_date\":{\"$gte\":\"20000101\"}},"
                       "{\"metadata.Rows\":{\"$in\":[512,\"512\"]}}],\"series_description\":{\"$regex\":\"^ax\","
                       "\"$options\":\"i\"},\"x\":{\"$not\":{\"$gt\":3}},\"arr\":{\"$elemMatch\":{\"$gt\":1}},"
                       "\"big\":12345678901,\"n\":null,\"b\":true},"
                       "\"sort\":{\"series_number\":-1},\"projection\":{\"modality\":1,\"_id\":0},"
                       "\"limit\":20,\"skip\":5}";
    mdb_query_t *q = raw(text, &err);
    if (!q)
        fail_msg("refused: %s", err.message);
    assert_string_equal(mdb_query_collection(q), "series");
    assert_int_equal(mdb_query_limit(q), 20);
    assert_int_equal(mdb_query_offset(q), 5);
    json_t *f = mdb_query_bson_to_json(mdb_query_filter(q));
    json_t *whole = json_loads(text, 0, NULL);
    assert_true(json_equal(f, json_object_get(whole, "filter"))); /* passed through unchanged */
    json_decref(whole);
    json_decref(f);
    json_t *s = mdb_query_bson_to_json(mdb_query_sort(q));
    char *d = json_dumps(s, JSON_COMPACT);
    assert_string_equal(d, "{\"series_number\":-1,\"_id\":1}");
    free(d);
    json_decref(s);
    mdb_query_destroy(q);

    /* defaults: collection from the caller, empty filter */
    q = raw("{}", &err);
    assert_non_null(q);
    assert_string_equal(mdb_query_collection(q), "series");
    assert_true(bson_empty(mdb_query_filter(q)));
    mdb_query_destroy(q);

    /* $expr with whitelisted aggregation operators */
    q = raw("{\"filter\":{\"$expr\":{\"$gt\":[\"$instance_count\",{\"$multiply\":[2,\"$series_number\"]}]}}}", &err);
    if (!q)
        fail_msg("refused: %s", err.message);
    mdb_query_destroy(q);
    q = raw("{\"collection\":\"jobs\",\"filter\":{\"state\":\"running\"}}", &err);
    assert_non_null(q);
    mdb_query_destroy(q);
}

static void test_raw_refused(void **state)
{
    (void)state;
    expect_raw_refused("{\"filter\":{\"$where\":\"this.a > 1\"}}", "$where runs JavaScript");
    expect_raw_refused("{\"filter\":{\"$expr\":{\"$function\":{\"body\":\"function(){return true}\",\"args\":[],"
                       "\"lang\":\"js\"}}}}",
                       "$function runs JavaScript");
    expect_raw_refused("{\"filter\":{\"$expr\":{\"$eq\":[{\"$accumulator\":{}},1]}}}", "$accumulator runs JavaScript");
    expect_raw_refused("{\"filter\":{\"a\":{\"$where\":\"1\"}}}", "$where runs JavaScript");
    expect_raw_refused("{\"filter\":{\"$and\":[{\"$or\":[{\"$where\":\"1\"}]}]}}", "$where runs JavaScript");
    expect_raw_refused("{\"$out\":\"stolen\"}", "$out writes");
    expect_raw_refused("{\"filter\":{\"a\":{\"$in\":[{\"$merge\":\"x\"}]}}}", "$merge writes");
    expect_raw_refused("{\"pipeline\":[{\"$out\":\"x\"}]}", "aggregation pipelines are not accepted");
    expect_raw_refused("{\"filter\":{\"a\":{\"$foo\":1}}}", "operator $foo is not allowed");
    expect_raw_refused("{\"filter\":{\"$foo\":1}}", "operator $foo is not allowed");
    expect_raw_refused("{\"filter\":{\"$expr\":{\"$objectToArray\":\"$metadata\"}}}",
                       "expression operator $objectToArray is not allowed");
    expect_raw_refused("{\"filter\":{\"$expr\":{\"$eq\":[\"$$NOW\",1]}}}", "variable $$NOW");
    expect_raw_refused("{\"filter\":{\"$gt\":1}}", "must be applied to a field");
    expect_raw_refused("{\"filter\":{\"a\":{\"$and\":[]}}}", "belongs at document level");
    expect_raw_refused("{\"filter\":{\"$or\":[]}}", "non-empty array");
    expect_raw_refused("{\"filter\":{\"$or\":{\"a\":1}}}", "non-empty array");
    expect_raw_refused("{\"filter\":{\"$and\":[1]}}", "must be a query object");
    expect_raw_refused("{\"filter\":{\"a\":{\"$gt\":1,\"b\":2}}}", "mixes operators and field names");
    expect_raw_refused("{\"filter\":{\"a\":{\"$in\":5}}}", "needs an array");
    expect_raw_refused("{\"filter\":{\"a\":{\"$regex\":5}}}", "needs a string");
    expect_raw_refused("{\"filter\":{\"a\":{\"$options\":\"i\"}}}", "$options on field 'a' needs $regex");
    expect_raw_refused("{\"filter\":{\"a\":{\"$regex\":\"x\",\"$options\":\"e\"}}}", "flags i, m, s, x");
    expect_raw_refused("{\"filter\":{\"a\":{\"$mod\":[0,1]}}}", "divisor");
    expect_raw_refused("{\"filter\":{\"a\":{\"$size\":-1}}}", "non-negative");
    expect_raw_refused("{\"filter\":{\"a\":{\"$not\":5}}}", "needs an operator object");
    expect_raw_refused("{\"filter\":{\"d\":{\"$date\":\"2000-01-01T00:00:00Z\"}}}", "operator $date is not allowed");
    expect_raw_refused("{\"filter\":{\"d\":{\"$in\":[{\"$oid\":\"0\"}]}}}", "not allowed inside a literal");
    expect_raw_refused("{\"filter\":{\"a.$b\":1}}", "segment starting with '$'");
    expect_raw_refused("{\"filter\":{\"a..b\":1}}", "empty path segment");
    expect_raw_refused("{\"filter\":{\"\":1}}", "empty field name");
    expect_raw_refused("{\"filter\":[1]}", "filter must be a JSON object");
    expect_raw_refused("{\"collection\":\"researchers\"}", "is not queryable");
    expect_raw_refused("{\"collection\":\"system.users\"}", "is not queryable");
    expect_raw_refused("{\"collection\":5}", "collection must be a string");
    expect_raw_refused("{\"limit\":100000}", "limit must be between 1 and 1000");
    expect_raw_refused("{\"limit\":0}", "limit must be between");
    expect_raw_refused("{\"limit\":\"10\"}", "limit must be an integer");
    expect_raw_refused("{\"skip\":-1}", "skip must be between");
    expect_raw_refused("{\"sort\":{\"a\":2}}", "must be 1 or -1");
    expect_raw_refused("{\"sort\":[\"a\"]}", "sort must be an object");
    expect_raw_refused("{\"projection\":{\"a\":1,\"b\":0}}", "mixes inclusion and exclusion");
    expect_raw_refused("{\"projection\":{\"a\":{\"$slice\":1}}}", "projection operators are not supported");
    expect_raw_refused("{\"projection\":{\"a\":\"yes\"}}", "must be 0, 1, true or false");
    expect_raw_refused("{\"filters\":{}}", "unknown key 'filters'");

    /* a nesting bomb is refused, not a stack overflow */
    char *deep = malloc(40000);
    size_t o = (size_t)sprintf(deep, "{\"filter\":");
    for (int i = 0; i < 200; i++)
        o += (size_t)sprintf(deep + o, "{\"$and\":[");
    o += (size_t)sprintf(deep + o, "{\"a\":1}");
    for (int i = 0; i < 200; i++)
        o += (size_t)sprintf(deep + o, "]}");
    sprintf(deep + o, "}");
    json_t *j = json_loads(deep, 0, NULL);
    assert_non_null(j);
    mdb_error_t err = {0};
    assert_null(mdb_query_new_raw(j, NULL, 1000, &err));
    assert_non_null(strstr(err.message, "nested too deeply"));
    json_decref(j);
    free(deep);
}

static void test_operator_allowed(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    assert_true(mdb_query_operator_allowed("$in", &err));
    assert_true(mdb_query_operator_allowed("$and", &err));
    assert_true(mdb_query_operator_allowed("$regex", &err));
    assert_false(mdb_query_operator_allowed("$where", &err));
    assert_non_null(strstr(err.message, "JavaScript"));
    assert_false(mdb_query_operator_allowed("$out", &err));
    assert_non_null(strstr(err.message, "writes"));
    assert_false(mdb_query_operator_allowed("$lookup", &err));
    assert_false(mdb_query_operator_allowed("$zzz", &err));
    assert_non_null(strstr(err.message, "not allowed"));
    assert_false(mdb_query_operator_allowed("in", &err));
}

static void test_fields_and_levels(void **state)
{
    (void)state;
    mdb_query_level_t l;
    assert_true(mdb_query_level_parse("series", &l));
    assert_int_equal(l, MDB_QUERY_SERIES);
    assert_true(mdb_query_level_parse("study", &l));
    assert_int_equal(l, MDB_QUERY_STUDIES);
    assert_false(mdb_query_level_parse("patients", &l));
    assert_string_equal(mdb_query_level_name(MDB_QUERY_INSTANCES), "instances");
    mdb_qfield_type_t t;
    assert_string_equal(mdb_query_resolve_field(MDB_QUERY_SERIES, "body_part", &t), "body_part_examined");
    assert_int_equal(t, MDB_QFIELD_STRING);
    assert_string_equal(mdb_query_resolve_field(MDB_QUERY_SERIES, "slice_thickness", &t), "slice_thickness");
    assert_int_equal(t, MDB_QFIELD_NUMBER);
    assert_string_equal(mdb_query_resolve_field(MDB_QUERY_STUDIES, "uid", NULL), "_id");
    assert_string_equal(mdb_query_resolve_field(MDB_QUERY_STUDIES, "metadata.PatientSex", &t), "metadata.PatientSex");
    assert_int_equal(t, MDB_QFIELD_ANY);
    assert_null(mdb_query_resolve_field(MDB_QUERY_STUDIES, "nope", NULL));
    size_t n;
    const mdb_qfield_t *f = mdb_query_fields(MDB_QUERY_SERIES, &n);
    assert_true(n > 10);
    assert_string_equal(f[0].name, "_id");
}

static void test_bson_to_json(void **state)
{
    (void)state;
    bson_t *b = BCON_NEW("s", BCON_UTF8("x"), "i", BCON_INT32(3), "l", BCON_INT64(1LL << 40), "d", BCON_DOUBLE(2.5),
                         "t", BCON_BOOL(true), "n", BCON_NULL, "dt", BCON_DATE_TIME(946684800123LL), "a", "[",
                         BCON_INT32(1), BCON_UTF8("two"), "]", "o", "{", "k", BCON_UTF8("v"), "}", "bin",
                         BCON_BIN(BSON_SUBTYPE_BINARY, (const uint8_t *)"ab", 2));
    json_t *j = mdb_query_bson_to_json(b);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "{\"s\":\"x\",\"i\":3,\"l\":1099511627776,\"d\":2.5,\"t\":true,\"n\":null,"
                           "\"dt\":\"2000-01-01T00:00:00.123Z\",\"a\":[1,\"two\"],\"o\":{\"k\":\"v\"}}");
    free(s);
    json_decref(j);
    bson_destroy(b);
}

/* Every filterable field of every level has an index (mdb_indexes.c),
 * named as mdb_jobs_ensure_index always named them; the table holds no
 * entry twice. tests/integration/test_indexes.py checks the plans. */
static void test_every_field_indexed(void **state)
{
    (void)state;
    size_t ni;
    const mdb_index_spec_t *idx = mdb_indexes_table(&ni);
    assert_true(ni > 0);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        size_t nf;
        const mdb_qfield_t *f = mdb_query_fields((mdb_query_level_t)l, &nf);
        for (size_t i = 0; i < nf; i++) {
            bool found = !strcmp(f[i].name, "_id");
            for (size_t k = 0; k < ni && !found; k++)
                found = !strcmp(idx[k].collection, mdb_query_level_name((mdb_query_level_t)l)) &&
                        !strcmp(idx[k].keys[0], f[i].name);
            if (!found)
                fail_msg("%s.%s has no index in mdb_indexes.c", mdb_query_level_name((mdb_query_level_t)l), f[i].name);
        }
    }
    for (size_t a = 0; a < ni; a++)
        for (size_t b = a + 1; b < ni; b++)
            if (!strcmp(idx[a].collection, idx[b].collection) && !strcmp(idx[a].keys[0], idx[b].keys[0]) &&
                !idx[a].keys[1] && !idx[b].keys[1])
                fail_msg("index %s.%s listed twice", idx[a].collection, idx[a].keys[0]);
    char name[128];
    mdb_index_spec_t one = {"studies", {"metadata.PatientName"}};
    mdb_indexes_name(&one, name, sizeof name);
    assert_string_equal(name, "metadata_PatientName_1");
    mdb_index_spec_t two = {"instances", {"series_id", "instance_number"}};
    mdb_indexes_name(&two, name, sizeof name);
    assert_string_equal(name, "series_id_1_instance_number_1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equality_and_lists),
        cmocka_unit_test(test_every_field_indexed),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_numbers_and_comparisons),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_collection_job_metadata),
        cmocka_unit_test(test_unknown_and_bad_values),
        cmocka_unit_test(test_parent_levels),
        cmocka_unit_test(test_paging_sort_fields),
        cmocka_unit_test(test_raw_accepted),
        cmocka_unit_test(test_raw_refused),
        cmocka_unit_test(test_operator_allowed),
        cmocka_unit_test(test_fields_and_levels),
        cmocka_unit_test(test_bson_to_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
