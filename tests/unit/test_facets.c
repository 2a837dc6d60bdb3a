/* Unit tests of mdb_facets: the pipeline builder (kinds from the field
 * table, $facet keys, top/bins/interval options, the filter passed through
 * as the $match stage, explicit boundaries), nice bins, refusal of bad
 * fields and options, and reading replies (shaped as the database returns
 * them) into the answer JSON. Pure logic: no database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_facets.h"
#include "mdb_query.h"

static json_t *bson_json(const bson_t *b)
{
    char *s = bson_as_relaxed_extended_json(b, NULL);
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    bson_free(s);
    assert_non_null(j);
    return j;
}

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad JSON %s: %s", text, e.text);
    return j;
}

static mdb_facets_t *facets(mdb_query_level_t level, const char *fields)
{
    mdb_error_t err = {0};
    mdb_facets_t *f = mdb_facets_new(level);
    assert_non_null(f);
    if (!mdb_facets_set_fields(f, fields, &err))
        fail_msg("fields %s refused: %s", fields, err.message);
    return f;
}

static void option(mdb_facets_t *f, const char *name, const char *value)
{
    mdb_error_t err = {0};
    assert_true(mdb_facets_is_option(name));
    if (!mdb_facets_set_option(f, name, value, &err))
        fail_msg("option %s=%s refused: %s", name, value, err.message);
}

/* The pipeline of f on match (JSON text) as JSON. */
static json_t *pipeline_json(const mdb_facets_t *f, const char *match, bool second)
{
    mdb_error_t err = {0};
    bson_error_t be;
    bson_t *m = match ? bson_new_from_json((const uint8_t *)match, -1, &be) : NULL;
    bson_t p;
    bool ok = second ? mdb_facets_bins_pipeline(f, m, &p, &err) : mdb_facets_pipeline(f, m, &p, &err);
    if (!ok)
        fail_msg("pipeline: %s", err.message);
    json_t *doc = bson_json(&p), *j = json_array(); /* {"0": stage, "1": stage} as an array */
    bson_destroy(&p);
    for (size_t i = 0; i < json_object_size(doc); i++) {
        char k[24];
        snprintf(k, sizeof k, "%u", (unsigned)i);
        assert_non_null(json_object_get(doc, k));
        json_array_append(j, json_object_get(doc, k));
    }
    json_decref(doc);
    if (m)
        bson_destroy(m);
    return j;
}

static json_t *facet_of(json_t *pipeline, const char *key)
{
    return json_object_get(json_object_get(json_array_get(pipeline, 2), "$facet"), key);
}

static void test_kinds_from_field_table(void **state)
{
    (void)state;
    mdb_facets_t *f = facets(MDB_QUERY_SERIES,
                             "modality,slice_thickness,series_date,model,metadata.PatientAge,metadata.AcquisitionDate");
    assert_int_equal(mdb_facets_count(f), 6);
    assert_int_equal(mdb_facets_kind(f, 0), MDB_FACET_VALUES);
    assert_int_equal(mdb_facets_kind(f, 1), MDB_FACET_HISTOGRAM);
    assert_int_equal(mdb_facets_kind(f, 2), MDB_FACET_DATES);
    assert_string_equal(mdb_facets_field(f, 3), "manufacturer_model_name"); /* alias resolved */
    assert_int_equal(mdb_facets_kind(f, 3), MDB_FACET_VALUES);
    assert_int_equal(mdb_facets_kind(f, 4), MDB_FACET_VALUES);
    assert_int_equal(mdb_facets_kind(f, 5), MDB_FACET_DATES);
    /* every numeric field of the table is a histogram, every date a date facet */
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        size_t n;
        const mdb_qfield_t *t = mdb_query_fields((mdb_query_level_t)l, &n);
        for (size_t i = 0; i < n; i++) {
            if (!strcmp(t[i].name, "_id"))
                continue;
            mdb_facets_t *g = facets((mdb_query_level_t)l, t[i].name);
            mdb_facet_kind_t want = t[i].type == MDB_QFIELD_NUMBER ? MDB_FACET_HISTOGRAM
                                    : t[i].type == MDB_QFIELD_DATE ? MDB_FACET_DATES
                                                                   : MDB_FACET_VALUES;
            assert_int_equal(mdb_facets_kind(g, 0), want);
            mdb_facets_destroy(g);
        }
    }
    mdb_facets_destroy(f);
}

static void test_pipeline_shape(void **state)
{
    (void)state;
    mdb_facets_t *f = facets(MDB_QUERY_SERIES, "modality,slice_thickness,series_date");
    json_t *p = pipeline_json(f, "{\"modality\": \"CT\", \"kvp\": {\"$gte\": 100}}", false);
    assert_int_equal(json_array_size(p), 3);
    /* the list's filter is passed through unchanged as the $match stage */
    json_t *want = load("{\"$match\": {\"modality\": \"CT\", \"kvp\": {\"$gte\": 100}}}");
    assert_true(json_equal(json_array_get(p, 0), want));
    json_decref(want);
    /* only the counted fields go on to $facet */
    want = load("{\"$project\": {\"_id\": 0, \"modality\": 1, \"slice_thickness\": 1, \"series_date\": 1}}");
    assert_true(json_equal(json_array_get(p, 1), want));
    json_decref(want);
    json_t *facet = json_object_get(json_array_get(p, 2), "$facet");
    assert_int_equal(json_object_size(facet), 4); /* t, v0, n1, d2: one pass per field */
    want = load("[{\"$group\": {\"_id\": null, \"n\": {\"$sum\": 1}}}]");
    assert_true(json_equal(json_object_get(facet, "t"), want));
    json_decref(want);
    want = load(
        "[{\"$project\": {\"_id\": 0, \"v\": \"$modality\"}},"
        " {\"$unwind\": {\"path\": \"$v\", \"preserveNullAndEmptyArrays\": true}},"
        " {\"$group\": {\"_id\": \"$v\", \"n\": {\"$sum\": 1}}},"
        " {\"$group\": {\"_id\": null,"
        "   \"top\": {\"$topN\": {\"n\": 11, \"sortBy\": {\"n\": -1, \"_id\": 1}, \"output\": {\"v\": \"$_id\", \"n\": \"$n\"}}},"
        "   \"present\": {\"$sum\": {\"$cond\": [{\"$eq\": [\"$_id\", null]}, 0, \"$n\"]}},"
        "   \"missing\": {\"$sum\": {\"$cond\": [{\"$eq\": [\"$_id\", null]}, \"$n\", 0]}},"
        "   \"d\": {\"$sum\": {\"$cond\": [{\"$eq\": [\"$_id\", null]}, 0, 1]}}}}]");
    if (!json_equal(json_object_get(facet, "v0"), want))
        fail_msg("v0: %s", json_dumps(json_object_get(facet, "v0"), JSON_SORT_KEYS));
    json_decref(want);
    want = load("[{\"$project\": {\"_id\": 0, \"v\": \"$slice_thickness\"}},"
                " {\"$unwind\": {\"path\": \"$v\", \"preserveNullAndEmptyArrays\": false}},"
                " {\"$match\": {\"v\": {\"$type\": \"number\"}}},"
                " {\"$group\": {\"_id\": \"$v\", \"n\": {\"$sum\": 1}}},"
                " {\"$group\": {\"_id\": null, \"min\": {\"$min\": \"$_id\"}, \"max\": {\"$max\": \"$_id\"},"
                "   \"n\": {\"$sum\": \"$n\"}, \"d\": {\"$sum\": 1},"
                "   \"vals\": {\"$firstN\": {\"n\": 1001, \"input\": {\"v\": \"$_id\", \"n\": \"$n\"}}}}}]");
    if (!json_equal(json_object_get(facet, "n1"), want))
        fail_msg("n1: %s", json_dumps(json_object_get(facet, "n1"), JSON_SORT_KEYS));
    json_decref(want);
    json_t *d = json_object_get(facet, "d2");
    want =
        load("[{\"$project\": {\"_id\": 0, \"v\": {\"$cond\": [{\"$eq\": [{\"$type\": \"$series_date\"}, \"string\"]},"
             " \"$series_date\", null]}}},"
             " {\"$project\": {\"v\": {\"$substrBytes\": [\"$v\", 0, 4]}, \"w\": {\"$substrBytes\": [\"$v\", 7, 1]}}},"
             " {\"$project\": {\"v\": {\"$cond\": [{\"$eq\": [\"$w\", \"\"]}, null, \"$v\"]}}}]");
    json_array_remove(d, 5);
    json_array_remove(d, 4);
    json_array_remove(d, 3);
    assert_true(json_equal(d, want));
    json_decref(want);
    json_decref(p);

    /* no filter: an empty $match */
    p = pipeline_json(f, NULL, false);
    want = load("{\"$match\": {}}");
    assert_true(json_equal(json_array_get(p, 0), want));
    json_decref(want);
    json_decref(p);
    mdb_facets_destroy(f);
}

static void test_projection(void **state)
{
    (void)state;
    mdb_facets_t *f = facets(MDB_QUERY_STUDIES, "metadata.Seq.Code,modality,metadata.Seq");
    json_t *p = pipeline_json(f, NULL, false);
    json_t *want = load("{\"$project\": {\"_id\": 0, \"modality\": 1, \"modalities\": 1, \"metadata.Seq\": 1}}");
    if (!json_equal(json_array_get(p, 1), want))
        fail_msg("projection: %s", json_dumps(json_array_get(p, 1), JSON_SORT_KEYS));
    json_decref(want);
    json_decref(p);
    mdb_facets_destroy(f);
}

static void test_options(void **state)
{
    (void)state;
    mdb_facets_t *f = facets(MDB_QUERY_STUDIES, "modality,study_date,collection");
    option(f, "top", "3");
    option(f, "interval", "month");
    json_t *p = pipeline_json(f, "{}", false);
    json_t *v0 = facet_of(p, "v0");
    json_t *topn = json_object_get(json_object_get(json_object_get(json_array_get(v0, 3), "$group"), "top"), "$topN");
    assert_int_equal(json_integer_value(json_object_get(topn, "n")), 4); /* top + 1: the null group may rank */
    /* a study's modality counts its series' modalities when it has them */
    json_t *want = load("{\"$project\": {\"_id\": 0, \"v\": {\"$ifNull\": [\"$modalities\", \"$modality\"]}}}");
    assert_true(json_equal(json_array_get(v0, 0), want));
    json_decref(want);
    json_t *sub = json_object_get(
        json_object_get(json_object_get(json_array_get(facet_of(p, "d1"), 1), "$project"), "v"), "$substrBytes");
    assert_int_equal(json_integer_value(json_array_get(sub, 2)), 6);
    /* the collection alias is a values facet of collection_ids */
    assert_string_equal(mdb_facets_field(f, 2), "collection_ids");
    json_decref(p);
    mdb_facets_destroy(f);

    /* per-field interval */
    f = facets(MDB_QUERY_SERIES, "series_date");
    option(f, "interval.series_date", "year");
    p = pipeline_json(f, "{}", false);
    sub = json_object_get(json_object_get(json_object_get(json_array_get(facet_of(p, "d0"), 1), "$project"), "v"),
                          "$substrBytes");
    assert_int_equal(json_integer_value(json_array_get(sub, 2)), 4);
    json_decref(p);
    mdb_facets_destroy(f);
}

static void test_explicit_bins_one_aggregation(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_facets_t *f = facets(MDB_QUERY_SERIES, "slice_thickness");
    option(f, "bins.slice_thickness", "0,1,2.5,5");
    json_t *p = pipeline_json(f, "{}", false);
    json_t *h = facet_of(p, "h0");
    assert_non_null(h);
    json_t *want =
        load("{\"$bucket\": {\"groupBy\": \"$v\", \"boundaries\": [0.0, 1.0, 2.5, 5.0], \"default\": \"other\","
             " \"output\": {\"n\": {\"$sum\": 1}}}}");
    assert_true(json_equal(json_array_get(h, 3), want));
    json_decref(want);
    json_decref(p);

    bson_error_t be;
    bson_t *reply = bson_new_from_json(
        (const uint8_t
             *)"{\"t\": [{\"_id\": null, \"n\": 9}], \"n0\": [{\"_id\": null, \"min\": 0.625, \"max\": 7.0, \"n\": 8}],"
               " \"h0\": [{\"_id\": 0.0, \"n\": 3}, {\"_id\": 2.5, \"n\": 4}, {\"_id\": \"other\", \"n\": 1}]}",
        -1, &be);
    assert_non_null(reply);
    bool second = true;
    assert_true(mdb_facets_read(f, reply, &second, &err));
    assert_false(second);
    json_t *r = mdb_facets_result(f);
    want = load("{\"level\": \"series\", \"total\": 9, \"facets\": {\"slice_thickness\": {\"kind\": \"histogram\","
                " \"count\": 8, \"missing\": 1, \"min\": 0.625, \"max\": 7.0, \"other\": 1, \"bins\": ["
                " {\"lo\": 0.0, \"hi\": 1.0, \"count\": 3, \"filter\": [\"gte:0\", \"lt:1\"]},"
                " {\"lo\": 1.0, \"hi\": 2.5, \"count\": 0, \"filter\": [\"gte:1\", \"lt:2.5\"]},"
                " {\"lo\": 2.5, \"hi\": 5.0, \"count\": 4, \"filter\": [\"gte:2.5\", \"lt:5\"]}]}}}");
    if (!json_equal(r, want)) {
        char *s = json_dumps(r, JSON_SORT_KEYS);
        fail_msg("got %s", s);
    }
    json_decref(want);
    json_decref(r);
    bson_destroy(reply);
    mdb_facets_destroy(f);
}

static void test_nice_bounds(void **state)
{
    (void)state;
    double b[101];
    size_t n = mdb_facets_nice_bounds(0.625, 2.5, 10, b, 101);
    assert_int_equal(n, 11);
    assert_true(b[0] == 0.6 && b[1] == 0.8 && b[2] == 1.0 && b[10] == 2.6);
    n = mdb_facets_nice_bounds(0, 100, 10, b, 101);
    assert_int_equal(n, 12); /* 100 falls in [100, 110) */
    assert_true(b[0] == 0 && b[1] == 10 && b[11] == 110);
    n = mdb_facets_nice_bounds(-3, 7, 5, b, 101);
    assert_int_equal(n, 7);
    assert_true(b[0] == -4 && b[1] == -2 && b[6] == 8);
    n = mdb_facets_nice_bounds(80, 140, 4, b, 101); /* step 15 is not nice: 20 */
    assert_true(b[1] - b[0] == 20 && b[0] == 80 && b[n - 1] > 140);
    n = mdb_facets_nice_bounds(0, 1, 4, b, 101); /* step 0.25 */
    assert_int_equal(n, 6);
    assert_true(b[1] == 0.25 && b[4] == 1.0 && b[5] == 1.25);
    n = mdb_facets_nice_bounds(5, 5, 10, b, 101);
    assert_int_equal(n, 2);
    assert_true(b[0] == 5 && b[1] == 6);
    n = mdb_facets_nice_bounds(0.3, 0.7, 4, b, 101); /* 0.1 steps print as 0.3, not 0.30000000000000004 */
    assert_true(b[0] == 0.3 && b[1] == 0.4);
    for (size_t i = 0; i + 1 < n; i++)
        assert_true(b[i] < b[i + 1]);
    assert_int_equal(mdb_facets_nice_bounds(NAN, 1, 10, b, 101), 0);
    assert_int_equal(mdb_facets_nice_bounds(2, 1, 10, b, 101), 0);
    /* spans beyond the doubles or below any step: no bins, no overflow */
    assert_int_equal(mdb_facets_nice_bounds(-1e308, 1e308, 10, b, 101), 0);
    assert_int_equal(mdb_facets_nice_bounds(0, 1e-320, 10, b, 101), 0);
    assert_int_equal(mdb_facets_nice_bounds(0, INFINITY, 10, b, 101), 0);
    /* every bound count stays within the capacity */
    n = mdb_facets_nice_bounds(1, 1e9, 100, b, 101);
    assert_true(n >= 2 && n <= 101);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *const bad_fields[] = {
        "",          "nope",      "modality,modality", "modality,",
        ",modality", "metadata.", "metadata.1x",       "model,manufacturer_model_name",
        "$where"};
    for (size_t i = 0; i < sizeof bad_fields / sizeof bad_fields[0]; i++) {
        mdb_error_t err = {0};
        mdb_facets_t *f = mdb_facets_new(MDB_QUERY_SERIES);
        if (mdb_facets_set_fields(f, bad_fields[i], &err))
            fail_msg("fields '%s' accepted", bad_fields[i]);
        assert_int_equal(err.domain, MDB_ERR_QUERY);
        assert_true(err.message[0] != '\0');
        mdb_facets_destroy(f);
    }
    /* more than MDB_FACETS_MAX_FIELDS */
    {
        mdb_error_t err = {0};
        mdb_facets_t *f = mdb_facets_new(MDB_QUERY_SERIES);
        char spec[2048] = "";
        for (int i = 0; i <= MDB_FACETS_MAX_FIELDS; i++) {
            char k[64];
            snprintf(k, sizeof k, "%smetadata.K%d", i ? "," : "", i);
            strcat(spec, k);
        }
        assert_false(mdb_facets_set_fields(f, spec, &err));
        assert_non_null(strstr(err.message, "at most"));
        mdb_facets_destroy(f);
    }
    /* a study-level field is not a series facet */
    {
        mdb_error_t err = {0};
        mdb_facets_t *f = mdb_facets_new(MDB_QUERY_SERIES);
        assert_false(mdb_facets_set_fields(f, "patient_id", &err));
        assert_non_null(strstr(err.message, "patient_id"));
        mdb_facets_destroy(f);
    }
    static const char *const bad_opts[][2] = {{"top", "0"},
                                              {"top", "101"},
                                              {"top", "x"},
                                              {"bins", "0"},
                                              {"bins", "1000"},
                                              {"bins", "3.5"},
                                              {"interval", "week"},
                                              {"interval", ""},
                                              {"interval.modality", "year"},
                                              {"bins.modality", "1,2"},
                                              {"bins.kvp", "1,2"},
                                              {"bins.slice_thickness", "2,1"},
                                              {"bins.slice_thickness", "1"},
                                              {"bins.slice_thickness", "1,,2"},
                                              {"bins.slice_thickness", "1,nan"},
                                              {"interval.series_date", "day"},
                                              {"bins.nope", "1,2"}};
    for (size_t i = 0; i < sizeof bad_opts / sizeof bad_opts[0]; i++) {
        mdb_error_t err = {0};
        mdb_facets_t *f = facets(MDB_QUERY_SERIES, "modality,slice_thickness,series_date");
        if (mdb_facets_set_option(f, bad_opts[i][0], bad_opts[i][1], &err))
            fail_msg("option %s=%s accepted", bad_opts[i][0], bad_opts[i][1]);
        assert_true(err.message[0] != '\0');
        mdb_facets_destroy(f);
    }
    assert_false(mdb_facets_is_option("modality"));
    assert_false(mdb_facets_is_option("limit"));
}

static void test_read_values_and_dates(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    bson_error_t be;
    mdb_facets_t *f = facets(MDB_QUERY_SERIES, "manufacturer,series_date,kvp");
    bson_t *reply = bson_new_from_json(
        (const uint8_t
             *)"{\"t\": [{\"_id\": null, \"n\": 10}],"
               " \"v0\": [{\"_id\": null, \"top\": [{\"v\": \"GE\", \"n\": 4}, {\"v\": null, \"n\": 2},"
               " {\"v\": \"A,B\", \"n\": 2}, {\"n\": 1}], \"present\": 8, \"missing\": 2, \"d\": 4}],"
               " \"d1\": [{\"_id\": null, \"n\": 1}, {\"_id\": \"1998\", \"n\": 3}, {\"_id\": \"2001\", \"n\": 5},"
               " {\"_id\": \"20\", \"n\": 1}],"
               " \"n2\": [{\"_id\": null, \"min\": 100, \"max\": 140, \"n\": 7}]}",
        -1, &be);
    assert_non_null(reply);
    bool second = false;
    assert_true(mdb_facets_read(f, reply, &second, &err));
    assert_true(second); /* kvp needs its bins counted */
    json_t *p = pipeline_json(f, "{\"modality\": \"CT\"}", true);
    json_t *want = load("{\"$match\": {\"modality\": \"CT\"}}");
    assert_true(json_equal(json_array_get(p, 0), want)); /* the second aggregation filters the same way */
    json_decref(want);
    json_t *h = facet_of(p, "h2");
    json_t *bounds = json_object_get(json_object_get(json_array_get(h, 3), "$bucket"), "boundaries");
    assert_true(json_array_size(bounds) >= 2);
    assert_true(json_number_value(json_array_get(bounds, 0)) <= 100);
    assert_true(json_number_value(json_array_get(bounds, json_array_size(bounds) - 1)) > 140);
    assert_null(facet_of(p, "t"));
    json_decref(p);
    bson_destroy(reply);
    reply = bson_new_from_json((const uint8_t *)"{\"h2\": [{\"_id\": 100.0, \"n\": 5}, {\"_id\": 140.0, \"n\": 2}]}",
                               -1, &be);
    assert_true(mdb_facets_read_bins(f, reply, &err));
    bson_destroy(reply);

    json_t *r = mdb_facets_result(f);
    json_t *fc = json_object_get(r, "facets");
    want = load(
        "{\"kind\": \"values\", \"values\": [{\"value\": \"GE\", \"count\": 4, \"filter\": \"GE\"},"
        " {\"value\": \"A,B\", \"count\": 2, \"filter\": \"A\\\\,B\"}], \"other\": 2, \"distinct\": 4, \"missing\": 2}");
    if (!json_equal(json_object_get(fc, "manufacturer"), want))
        fail_msg("manufacturer: %s", json_dumps(json_object_get(fc, "manufacturer"), JSON_SORT_KEYS));
    json_decref(want);
    /* gaps filled with zero bins; "20" (malformed) and null count as missing */
    want = load(
        "{\"kind\": \"dates\", \"interval\": \"year\", \"missing\": 2, \"truncated\": false, \"bins\": ["
        " {\"value\": \"1998\", \"count\": 3, \"filter\": \"1998\"}, {\"value\": \"1999\", \"count\": 0, \"filter\": \"1999\"},"
        " {\"value\": \"2000\", \"count\": 0, \"filter\": \"2000\"}, {\"value\": \"2001\", \"count\": 5, \"filter\": \"2001\"}]}");
    if (!json_equal(json_object_get(fc, "series_date"), want))
        fail_msg("series_date: %s", json_dumps(json_object_get(fc, "series_date"), JSON_SORT_KEYS));
    json_decref(want);
    json_t *kvp = json_object_get(fc, "kvp");
    assert_string_equal(json_string_value(json_object_get(kvp, "kind")), "histogram");
    assert_int_equal(json_integer_value(json_object_get(kvp, "missing")), 3);
    json_int_t sum = 0;
    size_t i;
    json_t *bin;
    json_array_foreach(json_object_get(kvp, "bins"), i, bin) sum += json_integer_value(json_object_get(bin, "count"));
    assert_int_equal(sum, 7);
    json_decref(r);
    mdb_facets_destroy(f);
}

/* Few distinct numbers: the bins are counted from the first reply, no second aggregation. */
static void test_exact_values_one_aggregation(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    bson_error_t be;
    mdb_facets_t *f = facets(MDB_QUERY_SERIES, "slice_thickness");
    option(f, "bins", "4");
    bson_t *reply = bson_new_from_json(
        (const uint8_t *)"{\"t\": [{\"_id\": null, \"n\": 12}], \"n0\": [{\"_id\": null, \"min\": 0.625, \"max\": 2.5,"
                         " \"n\": 10, \"d\": 4, \"vals\": [{\"v\": 2.5, \"n\": 1}, {\"v\": 0.625, \"n\": 4},"
                         " {\"v\": 1.25, \"n\": 3}, {\"v\": 1.0, \"n\": 2}]}]}",
        -1, &be);
    assert_non_null(reply);
    bool second = true;
    assert_true(mdb_facets_read(f, reply, &second, &err));
    assert_false(second);
    json_t *p = pipeline_json(f, NULL, true);
    assert_null(facet_of(p, "h0")); /* nothing left for a second pass */
    json_decref(p);
    json_t *r = mdb_facets_result(f);
    json_t *h = json_object_get(json_object_get(r, "facets"), "slice_thickness");
    /* step 0.5 from 0.5: [0.5,1) 4, [1,1.5) 5, [1.5,2) 0, [2,2.5) 0, [2.5,3) 1 */
    json_t *want = load("[[0.5, 1.0, 4], [1.0, 1.5, 5], [1.5, 2.0, 0], [2.0, 2.5, 0], [2.5, 3.0, 1]]");
    json_t *got = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(h, "bins"), i, b) json_array_append_new(
        got, json_pack("[O, O, O]", json_object_get(b, "lo"), json_object_get(b, "hi"), json_object_get(b, "count")));
    if (!json_equal(got, want))
        fail_msg("bins: %s", json_dumps(got, 0));
    assert_int_equal(json_integer_value(json_object_get(h, "missing")), 2);
    assert_int_equal(json_integer_value(json_object_get(h, "other")), 0);
    json_decref(got);
    json_decref(want);
    json_decref(r);
    bson_destroy(reply);

    /* more distinct values than the reply carries: a second aggregation counts them */
    reply = bson_new_from_json(
        (const uint8_t *)"{\"t\": [{\"_id\": null, \"n\": 5000}], \"n0\": [{\"_id\": null, \"min\": 0, \"max\": 4999,"
                         " \"n\": 5000, \"d\": 5000, \"vals\": [{\"v\": 0, \"n\": 1}]}]}",
        -1, &be);
    assert_true(mdb_facets_read(f, reply, &second, &err));
    assert_true(second);
    p = pipeline_json(f, NULL, true);
    assert_non_null(facet_of(p, "h0"));
    json_decref(p);
    bson_destroy(reply);
    mdb_facets_destroy(f);
}

/* Counts a database should never send (NaN, 1e300, -5, 2.5) are not
 * counts: skipped, never cast into an integer (CI's fuzzer found 1e300). */
static void test_read_hostile_counts(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    bson_error_t be;
    mdb_facets_t *f = facets(MDB_QUERY_SERIES, "slice_thickness,modality,series_date");
    bson_t *reply = bson_new_from_json(
        (const uint8_t
             *)"{\"t\": [{\"_id\": null, \"n\": 1e300}], \"n0\": [{\"_id\": null, \"min\": 0, \"max\": 3,"
               " \"n\": 1e300, \"d\": 2, \"vals\": [{\"v\": 1, \"n\": 1e300}, {\"v\": 2, \"n\": 2}]}],"
               " \"v1\": [{\"present\": -5, \"missing\": 2.5, \"d\": 1e300, \"top\": [{\"v\": \"CT\", \"n\": 1e19},"
               " {\"v\": \"MR\", \"n\": 4}]}], \"d2\": [{\"_id\": \"2001\", \"n\": -1}, {\"_id\": \"2002\", \"n\": 3}]}",
        -1, &be);
    assert_non_null(reply);
    bool second = false;
    assert_true(mdb_facets_read(f, reply, &second, &err));
    bson_destroy(reply);
    json_t *r = mdb_facets_result(f);
    assert_int_equal(json_integer_value(json_object_get(r, "total")), 0);
    json_t *fs = json_object_get(r, "facets");
    json_t *h = json_object_get(fs, "slice_thickness");
    assert_int_equal(json_integer_value(json_object_get(h, "count")), 0); /* no stats without a count */
    json_t *v = json_object_get(fs, "modality");
    assert_int_equal(json_array_size(json_object_get(v, "values")), 1); /* MR only */
    assert_int_equal(json_integer_value(json_object_get(v, "missing")), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "other")), 0);
    json_t *d = json_object_get(fs, "series_date");
    assert_int_equal(json_array_size(json_object_get(d, "bins")), 1);
    json_decref(r);
    mdb_facets_destroy(f);
}

static void test_read_months_and_empty(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    bson_error_t be;
    mdb_facets_t *f = facets(MDB_QUERY_STUDIES, "study_date,patient_id,instance_count");
    option(f, "interval", "month");
    bson_t *reply = bson_new_from_json(
        (const uint8_t *)"{\"t\": [], \"d0\": [{\"_id\": \"199811\", \"n\": 1}, {\"_id\": \"199902\", \"n\": 2},"
                         " {\"_id\": \"199913\", \"n\": 1}], \"v1\": [], \"n2\": []}",
        -1, &be);
    bool second = true;
    assert_true(mdb_facets_read(f, reply, &second, &err));
    assert_false(second); /* no numbers: nothing to bin */
    bson_destroy(reply);
    json_t *r = mdb_facets_result(f);
    assert_int_equal(json_integer_value(json_object_get(r, "total")), 0);
    json_t *d = json_object_get(json_object_get(r, "facets"), "study_date");
    json_t *bins = json_object_get(d, "bins");
    assert_int_equal(json_array_size(bins), 4); /* 199811, 199812, 199901, 199902 */
    assert_string_equal(json_string_value(json_object_get(json_array_get(bins, 1), "value")), "199812");
    assert_string_equal(json_string_value(json_object_get(json_array_get(bins, 2), "value")), "199901");
    assert_int_equal(json_integer_value(json_object_get(d, "missing")), 1); /* month 13 */
    json_t *ic = json_object_get(json_object_get(r, "facets"), "instance_count");
    assert_int_equal(json_array_size(json_object_get(ic, "bins")), 0);
    assert_null(json_object_get(ic, "min"));
    json_decref(r);

    /* a reply without the total is refused, not read as zeros */
    reply = bson_new_from_json((const uint8_t *)"{\"x\": 1}", -1, &be);
    assert_false(mdb_facets_read(f, reply, &second, &err));
    bson_destroy(reply);
    mdb_facets_destroy(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds_from_field_table),
        cmocka_unit_test(test_pipeline_shape),
        cmocka_unit_test(test_projection),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_explicit_bins_one_aggregation),
        cmocka_unit_test(test_nice_bounds),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_read_values_and_dates),
        cmocka_unit_test(test_exact_values_one_aggregation),
        cmocka_unit_test(test_read_months_and_empty),
        cmocka_unit_test(test_read_hostile_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
