/* Unit tests of mdb_export's writers (CSV quoting, JSON and NDJSON rows
 * with nested parent columns, chunked hand-over to the sink) and of the
 * mdb_query parts the export relies on: study-level count filters, parent
 * fields in filters, fields= and sort= ("study.patient_id",
 * "series.modality"), raw queries with parents, the raw form of a query
 * (what "Open as raw query" shows) and the descent to a cohort's instances.
 * Pure logic: no database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_export.h"
#include "mdb_query.h"

/* ---- a sink that collects everything ---- */
typedef struct {
    char *buf;
    size_t len;
    int calls;
    size_t biggest;
} collect_t;

static bool collect(const char *data, size_t len, void *ud, mdb_error_t *err)
{
    (void)err;
    collect_t *c = ud;
    c->buf = realloc(c->buf, c->len + len + 1);
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    c->buf[c->len] = '\0';
    c->calls++;
    if (len > c->biggest)
        c->biggest = len;
    return true;
}

static char *write_rows(mdb_export_format_t f, const char *const *cols, size_t ncols, const char *rows_json)
{
    mdb_error_t err = {0};
    collect_t c = {0};
    json_t *rows = json_loads(rows_json, 0, NULL);
    assert_non_null(rows);
    mdb_export_t *e = mdb_export_new(f, cols, ncols, collect, &c, &err);
    assert_non_null(e);
    assert_true(mdb_export_begin(e, &err));
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) assert_true(mdb_export_row(e, row, &err));
    assert_true(mdb_export_end(e, &err));
    assert_int_equal(mdb_export_rows(e), json_array_size(rows));
    mdb_export_destroy(e);
    json_decref(rows);
    return c.buf ? c.buf : strdup("");
}

static void cell_is(const char *json_value, const char *want)
{
    json_t *v = json_value ? json_loads(json_value, JSON_DECODE_ANY, NULL) : NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    assert_true(mdb_export_csv_cell(v, &buf, &len, &cap));
    if (strcmp(buf ? buf : "", want) != 0)
        fail_msg("cell of %s: got [%s] want [%s]", json_value ? json_value : "(missing)", buf ? buf : "", want);
    assert_int_equal(len, strlen(want));
    free(buf);
    json_decref(v);
}

static void test_csv_cells(void **state)
{
    (void)state;
    cell_is("\"plain\"", "plain");
    cell_is("\"a,b\"", "\"a,b\"");
    cell_is("\"say \\\"hi\\\"\"", "\"say \"\"hi\"\"\"");
    cell_is("\"\\\"\"", "\"\"\"\"");
    cell_is("\"line\\nbreak\"", "\"line\nbreak\"");
    cell_is("\"cr\\rhere\"", "\"cr\rhere\"");
    cell_is("12", "12");
    cell_is("2.5", "2.5");
    cell_is("0.625", "0.625");
    cell_is("true", "true");
    cell_is("null", "");
    cell_is(NULL, "");
    cell_is("[\"ORIGINAL\",\"PRIMARY\",\"AXIAL\"]", "ORIGINAL;PRIMARY;AXIAL");
    cell_is("[\"a,b\",\"c\"]", "\"a,b;c\"");
    cell_is("{\"k\":1}", "\"{\"\"k\"\":1}\""); /* quotes inside: quoted, doubled */
    cell_is("{\"k\":1,\"l\":2}", "\"{\"\"k\"\":1,\"\"l\"\":2}\"");
    cell_is("\"Ünïcödé 中文\"", "Ünïcödé 中文");
}

static void test_csv_writer(void **state)
{
    (void)state;
    const char *cols[] = {"_id", "modality", "study.patient_id", "metadata.Rows"};
    char *out = write_rows(MDB_EXPORT_CSV, cols, 4,
                           "[{\"_id\":\"1.2\",\"modality\":\"CT\",\"study\":{\"patient_id\":\"P,1\"},"
                           "\"metadata\":{\"Rows\":512}},"
                           "{\"_id\":\"1.3\",\"study\":{}}]");
    assert_string_equal(out, "_id,modality,study.patient_id,metadata.Rows\r\n"
                             "1.2,CT,\"P,1\",512\r\n"
                             "1.3,,,\r\n");
    free(out);
    out = write_rows(MDB_EXPORT_CSV, cols, 4, "[]");
    assert_string_equal(out, "_id,modality,study.patient_id,metadata.Rows\r\n");
    free(out);
}

static void test_json_writers(void **state)
{
    (void)state;
    const char *cols[] = {"_id", "study.patient_id", "study.study_date", "instance_count"};
    const char *rows = "[{\"_id\":\"1\",\"instance_count\":3,\"other\":1,\"study\":{\"patient_id\":\"P\","
                       "\"study_date\":\"20000101\",\"x\":2}},{\"_id\":\"2\"}]";
    char *out = write_rows(MDB_EXPORT_NDJSON, cols, 4, rows);
    assert_string_equal(out, "{\"_id\":\"1\",\"study\":{\"patient_id\":\"P\",\"study_date\":\"20000101\"},"
                             "\"instance_count\":3}\n{\"_id\":\"2\"}\n");
    free(out);
    out = write_rows(MDB_EXPORT_JSON, cols, 4, rows);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (!j)
        fail_msg("JSON export does not parse: %s\n%s", jerr.text, out);
    assert_int_equal(json_array_size(j), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(j, 0), "study"), "study_date")), "20000101");
    assert_null(json_object_get(json_array_get(j, 0), "other"));
    json_decref(j);
    free(out);
    out = write_rows(MDB_EXPORT_JSON, cols, 4, "[]");
    assert_string_equal(out, "[]\n");
    free(out);
    /* no columns: whole rows */
    out = write_rows(MDB_EXPORT_NDJSON, NULL, 0, "[{\"a\":1,\"b\":[1,2]}]");
    assert_string_equal(out, "{\"a\":1,\"b\":[1,2]}\n");
    free(out);
}

/* Many rows: the sink gets chunks of about MDB_EXPORT_CHUNK, never the whole. */
static void test_chunks(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    collect_t c = {0};
    const char *cols[] = {"_id", "path"};
    mdb_export_t *e = mdb_export_new(MDB_EXPORT_CSV, cols, 2, collect, &c, &err);
    assert_non_null(e);
    assert_true(mdb_export_begin(e, &err));
    size_t expect = strlen("_id,path\r\n");
    for (int i = 0; i < 20000; i++) {
        char id[32], path[64];
        snprintf(id, sizeof id, "1.2.3.%d", i);
        snprintf(path, sizeof path, "/archive/x/%d.dcm", i);
        json_t *row = json_pack("{s:s, s:s}", "_id", id, "path", path);
        assert_true(mdb_export_row(e, row, &err));
        json_decref(row);
        expect += strlen(id) + 1 + strlen(path) + 2;
    }
    assert_true(mdb_export_end(e, &err));
    mdb_export_destroy(e);
    assert_int_equal(c.len, expect);
    assert_true(c.calls > 5);
    assert_true(c.biggest < MDB_EXPORT_CHUNK + 200);
    assert_non_null(strstr(c.buf, "\r\n1.2.3.19999,/archive/x/19999.dcm\r\n"));
    free(c.buf);
}

static void test_formats(void **state)
{
    (void)state;
    mdb_export_format_t f;
    assert_true(mdb_export_format_parse("csv", &f) && f == MDB_EXPORT_CSV);
    assert_true(mdb_export_format_parse("json", &f) && f == MDB_EXPORT_JSON);
    assert_true(mdb_export_format_parse("ndjson", &f) && f == MDB_EXPORT_NDJSON);
    assert_false(mdb_export_format_parse("xlsx", &f));
    assert_false(mdb_export_format_parse(NULL, &f));
    mdb_error_t err = {0};
    collect_t c = {0};
    assert_null(mdb_export_new(MDB_EXPORT_CSV, NULL, 0, collect, &c, &err)); /* CSV needs columns */
    assert_non_null(strstr(err.message, "columns"));
}

/* ---- mdb_query: counts and parents ---- */

static json_t *raw_of(mdb_query_level_t level, const char *const *params, size_t n)
{
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(level, 1000);
    for (size_t i = 0; i < n; i++) {
        char *copy = strdup(params[i]);
        char *eq = strchr(copy, '=');
        *eq = '\0';
        if (!mdb_query_add_param(q, copy, eq + 1, &err))
            fail_msg("param %s rejected: %s", params[i], err.message);
        free(copy);
    }
    json_t *raw = mdb_query_raw_json(q, &err);
    if (!raw)
        fail_msg("no raw form: %s", err.message);
    mdb_query_destroy(q);
    return raw;
}

static void json_is(const json_t *got, const char *want)
{
    json_t *w = json_loads(want, JSON_DECODE_ANY, NULL);
    assert_non_null(w);
    if (!json_equal((json_t *)got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        fail_msg("got  %s\nwant %s", g ? g : "(null)", want);
    }
    json_decref(w);
}

#define RAW(level, ...)                                                                                                \
    ({                                                                                                                 \
        const char *const p_[] = {__VA_ARGS__};                                                                        \
        raw_of(level, p_, sizeof p_ / sizeof p_[0]);                                                                   \
    })

static void test_count_filters(void **state)
{
    (void)state;
    json_t *r = RAW(MDB_QUERY_STUDIES, "instance_count=gt:50", "series_count=2-4", "sort=-instance_count");
    json_is(json_object_get(r, "filter"),
            "{\"$and\":[{\"instance_count\":{\"$gt\":50}},{\"series_count\":{\"$gte\":2,\"$lte\":4}}]}");
    json_is(json_object_get(r, "sort"), "{\"instance_count\":-1,\"_id\":1}");
    json_decref(r);
    r = RAW(MDB_QUERY_STUDIES, "instance_count=eq:100", "fields=series_count,instance_count");
    json_is(json_object_get(r, "filter"), "{\"instance_count\":{\"$in\":[100]}}");
    json_is(json_object_get(r, "projection"), "{\"series_count\":1,\"instance_count\":1}");
    json_decref(r);
    r = RAW(MDB_QUERY_STUDIES, "instance_count=lt:10");
    json_is(json_object_get(r, "filter"), "{\"instance_count\":{\"$lt\":10}}");
    json_decref(r);
    /* bad values are refused */
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_STUDIES, 1000);
    assert_false(mdb_query_add_param(q, "instance_count", "gt:many", &err));
    assert_non_null(strstr(err.message, "instance_count"));
    assert_false(mdb_query_add_param(q, "series_count", "CT*", &err));
    mdb_query_destroy(q);
}

static void test_parent_filters(void **state)
{
    (void)state;
    json_t *r = RAW(MDB_QUERY_SERIES, "modality=CT", "study.study_date=2000-2002", "study.patient_id=LIDC-*");
    json_is(json_object_get(r, "filter"), "{\"modality\":\"CT\"}");
    json_is(json_object_get(r, "parents"),
            "{\"studies\":{\"$and\":[{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20021231\"}},"
            "{\"patient_id\":{\"$regex\":\"^LIDC-.*$\"}}]}}");
    json_decref(r);
    /* the bare name falls back to the parent, the same clause */
    r = RAW(MDB_QUERY_SERIES, "study_date=2000-2002");
    json_is(json_object_get(r, "parents"),
            "{\"studies\":{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20021231\"}}}");
    json_decref(r);
    /* instances: both parents, and a parent's count */
    r = RAW(MDB_QUERY_INSTANCES, "series.modality=CT", "study.instance_count=gt:100", "instance_number=1");
    json_is(json_object_get(r, "filter"), "{\"instance_number\":1}");
    json_is(json_object_get(r, "parents"),
            "{\"studies\":{\"instance_count\":{\"$gt\":100}},\"series\":{\"modality\":\"CT\"}}");
    json_decref(r);
    /* a study's modality also matches its series' modalities, through the parent too */
    r = RAW(MDB_QUERY_SERIES, "study.modality=CT");
    json_is(json_object_get(r, "parents"), "{\"studies\":{\"$or\":[{\"modality\":\"CT\"},{\"modalities\":\"CT\"}]}}");
    json_decref(r);
    /* metadata of a parent */
    r = RAW(MDB_QUERY_SERIES, "study.metadata.PatientSex=F");
    json_is(json_object_get(r, "parents"), "{\"studies\":{\"metadata.PatientSex\":\"F\"}}");
    json_decref(r);

    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_false(mdb_query_add_param(q, "study.nonsense", "1", &err));
    assert_non_null(strstr(err.message, "study.nonsense"));
    assert_false(mdb_query_add_param(q, "series.modality", "CT", &err)); /* series is not a parent of series */
    assert_false(mdb_query_add_param(q, "patient_idx", "1", &err));
    assert_non_null(strstr(err.message, "study.<field>"));
    mdb_query_destroy(q);
    q = mdb_query_new(MDB_QUERY_STUDIES, 1000);
    assert_false(mdb_query_add_param(q, "study.patient_id", "P", &err)); /* studies have no parent */
    mdb_query_destroy(q);
}

static void test_parent_fields_and_sort(void **state)
{
    (void)state;
    json_t *r = RAW(MDB_QUERY_SERIES, "fields=modality,study.patient_id,study.date,study.metadata.PatientSex",
                    "sort=-study.study_date,series_number");
    json_is(json_object_get(r, "projection"),
            "{\"modality\":1,\"study.patient_id\":1,\"study.study_date\":1,\"study.metadata.PatientSex\":1}");
    json_is(json_object_get(r, "sort"), "{\"study.study_date\":-1,\"series_number\":1,\"_id\":1}");
    json_decref(r);
    r = RAW(MDB_QUERY_INSTANCES, "fields=paths,series.modality,study.patient", "sort=series.series_number");
    json_is(json_object_get(r, "projection"), "{\"paths\":1,\"series.modality\":1,\"study.patient_id\":1}");
    json_is(json_object_get(r, "sort"), "{\"series.series_number\":1,\"_id\":1}");
    json_decref(r);

    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_false(mdb_query_set_fields(q, "study.bogus", &err));
    assert_non_null(strstr(err.message, "study.bogus"));
    assert_false(mdb_query_set_sort(q, "study.study_date,-study.study_date", &err));
    assert_non_null(strstr(err.message, "twice"));
    assert_false(mdb_query_set_sort(q, "series.modality", &err));
    mdb_query_destroy(q);
}

static mdb_query_t *raw_query(const char *text, mdb_error_t *err)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    mdb_query_t *q = mdb_query_new_raw(j, "studies", 1000, err);
    json_decref(j);
    return q;
}

static void test_raw_parents(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_query_t *q = raw_query("{\"collection\":\"series\",\"filter\":{\"modality\":\"CT\"},"
                               "\"parents\":{\"studies\":{\"study_date\":{\"$gte\":\"20000101\"}}},"
                               "\"sort\":{\"study.study_date\":-1},\"projection\":{\"study.patient_id\":1}}",
                               &err);
    if (!q)
        fail_msg("refused: %s", err.message);
    json_t *r = mdb_query_raw_json(q, &err);
    json_is(json_object_get(r, "parents"), "{\"studies\":{\"study_date\":{\"$gte\":\"20000101\"}}}");
    json_is(json_object_get(r, "filter"), "{\"modality\":\"CT\"}");
    json_decref(r);
    mdb_query_destroy(q);

    /* refused: a parent that is not one, operators off the whitelist inside parents */
    assert_null(raw_query("{\"collection\":\"studies\",\"parents\":{\"studies\":{}}}", &err));
    assert_non_null(strstr(err.message, "parents"));
    assert_null(raw_query("{\"collection\":\"series\",\"parents\":{\"series\":{}}}", &err));
    assert_null(raw_query("{\"collection\":\"jobs\",\"parents\":{\"studies\":{}}}", &err));
    assert_null(raw_query("{\"collection\":\"series\",\"parents\":{\"studies\":{\"$where\":\"1\"}}}", &err));
    assert_non_null(strstr(err.message, "$where"));
    assert_null(raw_query("{\"collection\":\"series\",\"parents\":[1]}", &err));
    /* instances may name both */
    q = raw_query("{\"collection\":\"instances\",\"parents\":{\"studies\":{\"patient_id\":\"P\"},"
                  "\"series\":{\"modality\":\"CT\"}}}",
                  &err);
    assert_non_null(q);
    mdb_query_destroy(q);
}

/* The raw form of a list query builds a query with the same raw form. */
static void test_raw_round_trip(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    json_t *r = RAW(MDB_QUERY_SERIES, "modality=CT,MR", "slice_thickness=lt:2.5", "study.study_date=2000-2002",
                    "fields=modality,study.patient_id", "sort=-study.study_date", "limit=25", "offset=50");
    assert_int_equal(json_integer_value(json_object_get(r, "limit")), 25);
    assert_int_equal(json_integer_value(json_object_get(r, "skip")), 50);
    mdb_query_t *q = mdb_query_new_raw(r, NULL, 1000, &err);
    if (!q)
        fail_msg("raw form refused: %s", err.message);
    json_t *again = mdb_query_raw_json(q, &err);
    assert_true(json_equal(r, again));
    json_decref(again);
    mdb_query_destroy(q);
    json_decref(r);

    /* a wildcard inside an eq: list has no JSON form: refused with the reason */
    q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_true(mdb_query_add_param(q, "series_description", "ne:Scout*,Topo", &err));
    assert_null(mdb_query_raw_json(q, &err));
    assert_non_null(strstr(err.message, "wildcard"));
    mdb_query_destroy(q);
}

/* A cohort's instances: the cohort's conditions become parent conditions. */
static void test_descend_and_manifest(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_true(mdb_query_add_param(q, "modality", "CT", &err));
    assert_true(mdb_query_add_param(q, "study_date", "2001", &err));
    mdb_query_t *iq = mdb_export_manifest_query(q, &err);
    assert_non_null(iq);
    assert_string_equal(mdb_query_collection(iq), "instances");
    json_t *r = mdb_query_raw_json(iq, &err);
    json_is(json_object_get(r, "filter"), "{}");
    json_is(json_object_get(r, "parents"),
            "{\"studies\":{\"study_date\":{\"$gte\":\"20010101\",\"$lte\":\"20011231\"}},"
            "\"series\":{\"modality\":\"CT\"}}");
    json_is(json_object_get(r, "projection"), "{\"paths\":1,\"series_id\":1,\"study_id\":1,\"file.size\":1}");
    json_decref(r);
    mdb_query_destroy(iq);
    assert_null(mdb_query_descend(q, MDB_QUERY_STUDIES, &err)); /* not upwards */
    mdb_query_destroy(q);
    assert_string_equal(mdb_export_manifest_columns[0], "path");
    assert_string_equal(mdb_export_manifest_columns[4], "size");
}

/* Default export columns: _id first, the level's defaults, projection set. */
static void test_columns_for(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    char **cols = NULL;
    size_t n = 0;
    mdb_query_t *q = mdb_query_new(MDB_QUERY_SERIES, 1000);
    assert_true(mdb_export_columns_for(q, &cols, &n, &err));
    assert_true(n > 3);
    assert_string_equal(cols[0], "_id");
    assert_string_equal(cols[1], "study_id");
    assert_null(cols[n]);
    mdb_export_columns_free(cols);
    assert_true(mdb_query_set_fields(q, "study.patient_id,modality", &err));
    assert_true(mdb_export_columns_for(q, &cols, &n, &err));
    assert_int_equal(n, 3);
    assert_string_equal(cols[1], "study.patient_id");
    assert_string_equal(cols[2], "modality");
    mdb_export_columns_free(cols);
    mdb_query_destroy(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_cells),
        cmocka_unit_test(test_csv_writer),
        cmocka_unit_test(test_json_writers),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_count_filters),
        cmocka_unit_test(test_parent_filters),
        cmocka_unit_test(test_parent_fields_and_sort),
        cmocka_unit_test(test_raw_parents),
        cmocka_unit_test(test_raw_round_trip),
        cmocka_unit_test(test_descend_and_manifest),
        cmocka_unit_test(test_columns_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
