/* Unit tests of the linker's merge model (mdb_docs) against the in-memory
 * store (mdb_store_mem): documents built from a set of instance events are
 * byte-identical whatever the event order, the batch boundaries and the redeliveries;
 * applying events again writes nothing; disagreements land in conflicts;
 * counts and study summaries are exact; an instance whose smallest path
 * moves to another series changes both counts. Also the JSON<->BSON
 * conversion and value comparison the model relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_bson_json.h"
#include "mdb_docs.h"
#include "mdb_store.h"

/* ------------------------------------------------------------------ */
/* the in-memory store (mdb_store_mem)                                 */

static const char *const COLLS[] = {MDB_DOCS_STUDIES, MDB_DOCS_SERIES, MDB_DOCS_INSTANCES, MDB_DOCS_CONFLICTS};

/* Collection c (0 studies, 1 series, 2 instances, 3 conflicts): _id -> doc. */
static json_t *coll(mdb_store_t *st, int c)
{
    return mdb_store_mem_collection(st, COLLS[c]);
}

static mdb_store_t *mem_new(void)
{
    mdb_store_t *st = mdb_store_mem_new();
    assert_non_null(st);
    return st;
}

/* Canonical text of the whole store without timestamps. */
static char *mem_dump(mdb_store_t *st)
{
    json_t *all = json_object();
    static const char *const names[] = {"studies", "series", "instances", "conflicts"};
    for (int i = 0; i < 4; i++) {
        json_t *c = json_deep_copy(coll(st, i));
        const char *k;
        json_t *d;
        json_object_foreach(c, k, d)
        {
            json_object_del(d, "created_at");
            json_object_del(d, "updated_at");
            json_object_del(d, "_ins"); /* counting tags name offsets, which depend on the order */
            json_object_del(d, "_jl");
            json_object_del(d, "_lo");
            json_object_del(d, "_prev_series");
            json_object_del(d, "_prev_study");
        }
        json_object_set_new(all, names[i], c);
    }
    char *s = json_dumps(all, JSON_SORT_KEYS | JSON_INDENT(1));
    json_decref(all);
    return s;
}

/* ------------------------------------------------------------------ */
/* events                                                              */

typedef struct {
    const char *job, *path, *study, *series, *sop, *coll;
    const char *series_desc; /* NULL = attribute absent */
    const char *modality;
    int series_number;
    double pos; /* ImagePositionPatient z: varies per instance */
    const char *accession;
} ev_spec_t;

static json_t *make_event_json(const ev_spec_t *s, json_t **study, json_t **series, json_t **inst, json_t **file)
{
    *study = json_pack("{s:s, s:s, s:s, s:{s:s, s:s, s:s}}", "StudyInstanceUID", s->study, "AccessionNumber",
                       s->accession ? s->accession : "", "Modality", s->modality, "promoted", "study_instance_uid",
                       s->study, "accession_number", s->accession ? s->accession : "", "modality", s->modality);
    *series = json_pack("{s:s, s:s, s:i, s:[f,f,f], s:{s:s, s:i}}", "SeriesInstanceUID", s->series, "StudyInstanceUID",
                        s->study, "SeriesNumber", s->series_number, "ImagePositionPatient", -10.0, 20.5, s->pos,
                        "promoted", "series_instance_uid", s->series, "series_number", s->series_number);
    if (s->series_desc) {
        json_object_set_new(*series, "SeriesDescription", json_string(s->series_desc));
        json_object_set_new(json_object_get(*series, "promoted"), "series_description", json_string(s->series_desc));
    }
    *inst = json_pack("{s:s, s:f, s:{s:s}}", "SOPInstanceUID", s->sop, "SliceLocation", s->pos, "promoted",
                      "sop_instance_uid", s->sop);
    *file = json_pack("{s:i, s:i}", "size", 1000, "mtime", 1700000000);
    return *study;
}

/* origin NULL: events without an origin (the recounting model); else
 * event i has offset first_offset + i. */
static void add_events_at(mdb_docs_model_t *m, const ev_spec_t *specs, const size_t *idx, size_t n, const char *origin,
                          int64_t first_offset)
{
    for (size_t i = 0; i < n; i++) {
        const ev_spec_t *s = &specs[idx[i]];
        json_t *study, *series, *inst, *file;
        make_event_json(s, &study, &series, &inst, &file);
        /* some copies are damaged (cut in their pixels): content like any other */
        size_t plen = strlen(s->path);
        json_t *integ = plen && s->path[plen - 1] == '3'
                            ? json_pack("{s:b, s:i, s:i}", "pixel_data_truncated", 1, "pixel_data_bytes_expected", 512,
                                        "pixel_data_bytes_present", 100)
                            : NULL;
        mdb_docs_event_t ev = {.job_id = s->job,
                               .path = s->path,
                               .collection = s->coll,
                               .feature_set = "default",
                               .study = study,
                               .series = series,
                               .instance = inst,
                               .file = file,
                               .integrity = integ,
                               .origin = origin,
                               .offset = origin ? first_offset + (int64_t)i : -1};
        mdb_error_t err = {0};
        assert_true(mdb_docs_model_add_event(m, &ev, &err));
        json_decref(study);
        json_decref(series);
        json_decref(inst);
        json_decref(file);
        json_decref(integ);
    }
}

static void add_events(mdb_docs_model_t *m, const ev_spec_t *specs, const size_t *idx, size_t n)
{
    add_events_at(m, specs, idx, n, NULL, -1);
}

static void apply_batch(mdb_store_t *st, const ev_spec_t *specs, const size_t *idx, size_t n, mdb_docs_stats_t *stats)
{
    mdb_docs_model_t *m = mdb_docs_model_new();
    assert_non_null(m);
    add_events(m, specs, idx, n);
    mdb_error_t err = {0};
    bool ok = mdb_docs_apply(m, st, "2026-01-01T00:00:00.000Z", stats, &err);
    if (!ok)
        fail_msg("apply: %s", err.message);
    mdb_docs_model_destroy(m);
}

/* Two studies, three series; SOP "x" is under series S1 at /a/x and S3 at
 * /z/x (a conflict); S1's description disagrees between two files and is
 * missing on a third; one study has an empty accession on some files. */
static const ev_spec_t SPECS[] = {
    {"J1", "/arch/a/1", "ST1", "S1", "i1", "LIDC", "AXIAL", "CT", 2, 1.0, "ACC1"},
    {"J1", "/arch/a/2", "ST1", "S1", "i2", "LIDC", "AXIAL", "CT", 2, 2.0, "ACC1"},
    {"J1", "/arch/a/3", "ST1", "S1", "i3", "LIDC", NULL, "CT", 2, 3.0, NULL},
    {"J1", "/arch/a/4", "ST1", "S1", "i4", "LIDC", "AXIAL LUNG", "CT", 2, 4.0, "ACC1"},
    {"J1", "/arch/a/x", "ST1", "S1", "x", "LIDC", "AXIAL", "CT", 2, 5.0, "ACC1"},
    {"J1", "/arch/b/1", "ST1", "S2", "j1", "LIDC", "SCOUT", "CT", 1, 0.0, "ACC1"},
    {"J1", "/arch/c/1", "ST2", "S3", "k1", "LIDC", "PA", "CR", 1, 0.0, "ACC2"},
    {"J1", "/arch/c/2", "ST2", "S3", "k2", "LIDC", "PA", "CR", 1, 0.0, "ACC2"},
    {"J1", "/arch/z/x", "ST2", "S3", "x", "LIDC", "PA", "CR", 1, 0.0, "ACC2"},
    {"J2", "/arch/a/1", "ST1", "S1", "i1", "OTHER", "AXIAL", "CT", 2, 1.0, "ACC1"}, /* same file, second job */
    {"J1", "/arch/a/2", "ST1", "S1", "i2", "LIDC", "AXIAL", "CT", 2, 2.0, "ACC1"},  /* redelivery */
    {"J1", "/arch/d/2", "ST1", "S1", "i2", "LIDC", "AXIAL", "CT", 2, 2.0, "ACC1"},  /* copy of i2 */
};
#define NSPECS (sizeof SPECS / sizeof SPECS[0])

static char *run_order(const size_t *order, size_t n, unsigned seed, mdb_store_t **keep)
{
    mdb_store_t *st = mem_new();
    srand(seed);
    size_t i = 0;
    while (i < n) {
        size_t len = 1 + (size_t)rand() % 5;
        if (i + len > n)
            len = n - i;
        apply_batch(st, SPECS, order + i, len, NULL);
        i += len;
    }
    char *dump = mem_dump(st);
    if (keep)
        *keep = st;
    else
        mdb_store_mem_destroy(st);
    return dump;
}

static void shuffle(size_t *v, size_t n, unsigned *seed)
{
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)rand_r(seed) % (i + 1);
        size_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static json_t *doc(mdb_store_t *st, int c, const char *id)
{
    return json_object_get(coll(st, c), id);
}

static void test_documents(void **state)
{
    (void)state;
    size_t order[NSPECS];
    for (size_t i = 0; i < NSPECS; i++)
        order[i] = i;
    mdb_store_t *st = NULL;
    char *dump = run_order(order, NSPECS, 1, &st);
    free(dump);

    /* instances: 8 distinct SOPs */
    assert_int_equal(json_object_size(coll(st, 2)), 8);
    json_t *x = doc(st, 2, "x");
    assert_string_equal(json_string_value(json_object_get(x, "series_id")), "S1"); /* /arch/a/x < /arch/z/x */
    assert_string_equal(json_string_value(json_object_get(x, "study_id")), "ST1");
    assert_int_equal(json_array_size(json_object_get(x, "paths")), 2);
    json_t *i2 = doc(st, 2, "i2");
    assert_int_equal(json_array_size(json_object_get(i2, "paths")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(i2, "paths"), 0)), "/arch/a/2");
    json_t *i1 = doc(st, 2, "i1");
    assert_int_equal(json_array_size(json_object_get(i1, "job_ids")), 2);
    assert_string_equal(json_string_value(json_object_get(i1, "sop_instance_uid")), "i1");
    assert_true(json_is_number(json_object_get(json_object_get(i1, "metadata"), "SliceLocation")));

    /* series: exact counts (x counts for S1 only) */
    json_t *s1 = doc(st, 1, "S1"), *s3 = doc(st, 1, "S3");
    assert_int_equal(json_integer_value(json_object_get(s1, "instance_count")), 5);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 1, "S2"), "instance_count")), 1);
    assert_int_equal(json_integer_value(json_object_get(s3, "instance_count")), 2);
    /* smallest path wins: /arch/a/1 says AXIAL */
    assert_string_equal(json_string_value(json_object_get(json_object_get(s1, "metadata"), "SeriesDescription")),
                        "AXIAL");
    assert_string_equal(json_string_value(json_object_get(s1, "series_description")), "AXIAL");
    assert_string_equal(json_string_value(json_object_get(s1, "modality")), "CT"); /* lifted from study level */
    assert_string_equal(json_string_value(json_object_get(s1, "study_id")), "ST1");
    json_t *cids = json_object_get(s1, "collection_ids");
    assert_int_equal(json_array_size(cids), 2);
    assert_string_equal(json_string_value(json_array_get(cids, 0)), "LIDC");
    assert_string_equal(json_string_value(json_array_get(cids, 1)), "OTHER");

    /* study: summary sorted by series number, totals, modalities, job ids */
    json_t *st1 = doc(st, 0, "ST1");
    json_t *sum = json_object_get(st1, "series");
    assert_int_equal(json_array_size(sum), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(sum, 0), "series_instance_uid")), "S2");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(sum, 1), "instance_count")), 5);
    assert_int_equal(json_integer_value(json_object_get(st1, "instance_count")), 6);
    assert_int_equal(json_integer_value(json_object_get(st1, "series_count")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(st1, "modalities"), 0)), "CT");
    assert_int_equal(json_array_size(json_object_get(st1, "job_ids")), 2);
    /* the empty accession on /arch/a/3 does not beat ACC1 nor conflict */
    assert_string_equal(json_string_value(json_object_get(st1, "accession_number")), "ACC1");
    json_t *st2sum = json_array_get(json_object_get(doc(st, 0, "ST2"), "series"), 0);
    assert_string_equal(json_string_value(json_object_get(st2sum, "series_instance_uid")), "S3");
    assert_string_equal(json_string_value(json_object_get(st2sum, "modality")), "CR");
    assert_int_equal(json_integer_value(json_object_get(st2sum, "instance_count")), 2);

    /* conflicts: description of S1 (2 values), parent of x (S1 vs S3, ST1 vs ST2), nothing for positions */
    json_t *c = doc(st, 3, "series_attribute:S1:SeriesDescription");
    assert_non_null(c);
    json_t *vals = json_object_get(c, "values");
    assert_int_equal(json_array_size(vals), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(vals, 0), "value")), "AXIAL");
    assert_string_equal(json_string_value(json_object_get(json_array_get(vals, 0), "path")), "/arch/a/1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(vals, 1), "value")), "AXIAL LUNG");
    json_t *cx = doc(st, 3, "instance_parent:x:series_id");
    assert_non_null(cx);
    assert_string_equal(json_string_value(json_object_get(cx, "kind")), "instance_parent");
    assert_string_equal(json_string_value(json_object_get(cx, "uid")), "x");
    vals = json_object_get(cx, "values");
    assert_int_equal(json_array_size(vals), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(vals, 1), "path")), "/arch/z/x");
    assert_non_null(doc(st, 3, "instance_parent:x:study_id"));
    assert_null(doc(st, 3, "series_attribute:S1:ImagePositionPatient"));
    assert_null(doc(st, 3, "study_attribute:ST1:AccessionNumber"));
    assert_int_equal(json_object_size(coll(st, 3)), 3);
    mdb_store_mem_destroy(st);
}

static void test_order_independent(void **state)
{
    (void)state;
    size_t order[NSPECS];
    for (size_t i = 0; i < NSPECS; i++)
        order[i] = i;
    char *ref = run_order(order, NSPECS, 7, NULL);
    unsigned seed = 12345;
    for (int round = 0; round < 60; round++) {
        shuffle(order, NSPECS, &seed);
        char *d = run_order(order, NSPECS, (unsigned)round, NULL);
        if (strcmp(ref, d) != 0) {
            fprintf(stderr, "reference:\n%s\ngot:\n%s\n", ref, d);
            fail_msg("order %d gives different documents", round);
        }
        free(d);
    }
    /* one batch with everything, and every event twice */
    size_t twice[2 * NSPECS];
    for (size_t i = 0; i < 2 * NSPECS; i++)
        twice[i] = i % NSPECS;
    mdb_store_t *st = mem_new();
    apply_batch(st, SPECS, twice, 2 * NSPECS, NULL);
    char *d = mem_dump(st);
    assert_string_equal(ref, d);
    free(d);
    mdb_store_mem_destroy(st);
    free(ref);
}

static void test_idempotent(void **state)
{
    (void)state;
    size_t order[NSPECS];
    for (size_t i = 0; i < NSPECS; i++)
        order[i] = i;
    mdb_store_t *st = mem_new();
    apply_batch(st, SPECS, order, NSPECS, NULL);
    char *before = mem_dump(st);
    size_t writes = mdb_store_mem_writes(st);
    /* replay everything, in two batches */
    mdb_docs_stats_t s1, s2;
    apply_batch(st, SPECS, order, 5, &s1);
    apply_batch(st, SPECS, order + 5, NSPECS - 5, &s2);
    assert_int_equal(mdb_store_mem_writes(st), writes);
    assert_int_equal(s1.instances_new + s2.instances_new, 0);
    assert_int_equal(s1.series_written + s2.series_written + s1.studies_written + s2.studies_written, 0);
    assert_int_equal(s1.conflicts_written + s2.conflicts_written, 0);
    char *after = mem_dump(st);
    assert_string_equal(before, after);
    free(before);
    free(after);
    mdb_store_mem_destroy(st);
}

/* An instance first seen under S3 (/arch/z/x) moves to S1 when the smaller
 * path /arch/a/x arrives later: both counts and both summaries follow. */
static void test_parent_moves(void **state)
{
    (void)state;
    mdb_store_t *st = mem_new();
    size_t first[] = {0, 6, 8};
    apply_batch(st, SPECS, first, 3, NULL);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 1, "S3"), "instance_count")), 2);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 0, "ST2"), "instance_count")), 2);
    size_t second[] = {4};
    apply_batch(st, SPECS, second, 1, NULL);
    assert_string_equal(json_string_value(json_object_get(doc(st, 2, "x"), "series_id")), "S1");
    assert_int_equal(json_integer_value(json_object_get(doc(st, 1, "S3"), "instance_count")), 1);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 1, "S1"), "instance_count")), 2);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 0, "ST2"), "instance_count")), 1);
    assert_int_equal(json_integer_value(json_object_get(doc(st, 0, "ST1"), "instance_count")), 2);
    assert_non_null(doc(st, 3, "instance_parent:x:series_id"));
    mdb_store_mem_destroy(st);
}

/* A series reported under two studies: one parent wins, the other is a conflict. */
static void test_series_two_studies(void **state)
{
    (void)state;
    static const ev_spec_t specs[] = {
        {"J1", "/p/2", "STB", "SX", "q2", NULL, "D", "MR", 1, 0.0, "A"},
        {"J1", "/p/1", "STA", "SX", "q1", NULL, "D", "MR", 1, 0.0, "A"},
    };
    mdb_store_t *st = mem_new();
    size_t a[] = {0}, b[] = {1};
    apply_batch(st, specs, a, 1, NULL);
    apply_batch(st, specs, b, 1, NULL);
    json_t *sx = doc(st, 1, "SX");
    assert_string_equal(json_string_value(json_object_get(sx, "study_id")), "STA");
    json_t *c = doc(st, 3, "series_parent:SX:study_id");
    assert_non_null(c);
    assert_int_equal(json_array_size(json_object_get(c, "values")), 2);
    /* STB no longer lists SX; STA does */
    assert_int_equal(json_array_size(json_object_get(doc(st, 0, "STB"), "series")), 0);
    assert_int_equal(json_array_size(json_object_get(doc(st, 0, "STA"), "series")), 1);
    mdb_store_mem_destroy(st);
}

/* A copy at a smaller path becomes the instance's source: a field only the
 * former source had (here its "dicom" and "integrity" objects) leaves the stored document,
 * so the result is the same whichever copy came first. */
static void apply_copy(mdb_store_t *st, const char *path, bool with_dicom)
{
    static const ev_spec_t spec = {"J1", NULL, "STC", "SC", "c1", NULL, "D", "CT", 1, 0.0, "A"};
    json_t *study, *series, *inst, *file;
    make_event_json(&spec, &study, &series, &inst, &file);
    json_t *dicom = with_dicom ? json_pack("{s:s}", "TransferSyntaxUID", "1.2.840.10008.1.2.1") : NULL;
    json_t *integ = with_dicom ? json_pack("{s:b, s:i, s:i}", "pixel_data_truncated", 1, "pixel_data_bytes_expected",
                                           524288, "pixel_data_bytes_present", 4096)
                               : NULL;
    mdb_docs_event_t ev = {.job_id = "J1",
                           .path = path,
                           .study = study,
                           .series = series,
                           .instance = inst,
                           .file = file,
                           .dicom = dicom,
                           .integrity = integ};
    mdb_docs_model_t *m = mdb_docs_model_new();
    mdb_error_t err = {0};
    assert_true(mdb_docs_model_add_event(m, &ev, &err));
    if (!mdb_docs_apply(m, st, "2026-01-01T00:00:00.000Z", NULL, &err))
        fail_msg("apply: %s", err.message);
    mdb_docs_model_destroy(m);
    json_decref(study);
    json_decref(series);
    json_decref(inst);
    json_decref(file);
    json_decref(dicom);
    json_decref(integ);
}

static void test_smaller_path_drops_fields(void **state)
{
    (void)state;
    mdb_store_t *a = mem_new(), *b = mem_new();
    apply_copy(a, "/arch/b/c1", true);
    assert_non_null(json_object_get(doc(a, 2, "c1"), "dicom"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(doc(a, 2, "c1"), "integrity"), "pixel_data_bytes_present")),
        4096);
    apply_copy(a, "/arch/a/c1", false);
    apply_copy(b, "/arch/a/c1", false);
    apply_copy(b, "/arch/b/c1", true);
    assert_null(json_object_get(doc(a, 2, "c1"), "dicom"));
    assert_null(json_object_get(doc(a, 2, "c1"), "integrity"));
    char *da = mem_dump(a), *db = mem_dump(b);
    assert_string_equal(da, db);
    free(da);
    free(db);
    mdb_store_mem_destroy(a);
    mdb_store_mem_destroy(b);
}

/* instances_linked per job: instance documents whose job_ids contain the job. */
static void test_job_counts(void **state)
{
    (void)state;
    mdb_store_t *st = mem_new();
    size_t first[] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    apply_batch(st, SPECS, first, 9, NULL);
    mdb_docs_model_t *m = mdb_docs_model_new();
    size_t second[] = {9, 10, 11}; /* J2 links i1; J1 redelivers i2 and a copy of it */
    add_events(m, SPECS, second, 3);
    mdb_error_t err = {0};
    assert_true(mdb_docs_apply(m, st, "2026-01-01T00:00:00.000Z", NULL, &err));
    const json_t *jc = mdb_docs_model_job_counts(m);
    assert_int_equal(json_integer_value(json_object_get(jc, "J1")), 8);
    assert_int_equal(json_integer_value(json_object_get(jc, "J2")), 1);
    mdb_docs_model_destroy(m);
    mdb_store_mem_destroy(st);
}

/* Incremental counting (events with origins): a stream of records with
 * offsets goes through random batches, and batches die at a random write
 * (half of that command written) and are redelivered from their first
 * record, as the linker does. The documents equal the recounting run's,
 * and the link deltas of the successful batches, counted against the
 * applied offsets those batches leave, sum to the exact instances_linked. */
static void run_incremental(unsigned seed, const size_t *stream, size_t n, mdb_store_t *st, json_t *linked)
{
    json_t *applied = json_object();
    size_t pos = 0;
    int crashes = 0;
    while (pos < n) {
        size_t len = 1 + (size_t)rand_r(&seed) % 4;
        if (pos + len > n)
            len = n - pos;
        mdb_docs_model_t *m = mdb_docs_model_new();
        add_events_at(m, SPECS, stream + pos, len, "metadb.instances:0", (int64_t)pos);
        mdb_docs_model_set_applied(m, applied);
        mdb_store_mem_fail_at(st, crashes < 10 && rand_r(&seed) % 2 == 0 ? 1 + (int)(rand_r(&seed) % 9) : 0);
        mdb_error_t err = {0};
        bool ok = mdb_docs_apply(m, st, "2026-01-01T00:00:00.000Z", NULL, &err);
        mdb_store_mem_fail_at(st, 0); /* a batch that needed fewer writes did not die */
        if (!ok) {
            assert_string_equal(err.message, "injected failure");
            crashes++;
            mdb_docs_model_destroy(m); /* nothing counted; redelivered from pos */
            continue;
        }
        const json_t *deltas = mdb_docs_model_link_deltas(m);
        assert_non_null(deltas);
        const char *job;
        json_t *per;
        json_object_foreach((json_t *)deltas, job, per)
        {
            json_int_t d = json_integer_value(json_object_get(per, "metadb.instances:0"));
            json_object_set_new(linked, job, json_integer(json_integer_value(json_object_get(linked, job)) + d));
        }
        for (size_t i = 0; i < len; i++) {
            char key[64];
            snprintf(key, sizeof key, "%s\nmetadb.instances:0", SPECS[stream[pos + i]].job);
            json_object_set_new(applied, key, json_integer((json_int_t)(pos + len - 1)));
        }
        mdb_docs_model_destroy(m);
        pos += len;
    }
    json_decref(applied);
}

static void test_incremental_crashes(void **state)
{
    (void)state;
    size_t stream[NSPECS];
    for (size_t i = 0; i < NSPECS; i++)
        stream[i] = i;
    char *reference = run_order(stream, NSPECS, 1, NULL);
    for (unsigned seed = 1; seed <= 1500; seed++) {
        unsigned s2 = seed;
        shuffle(stream, NSPECS, &s2);
        mdb_store_t *st = mem_new();
        json_t *linked = json_object();
        run_incremental(seed, stream, NSPECS, st, linked);
        char *dump = mem_dump(st);
        if (strcmp(dump, reference)) {
            FILE *f1 = fopen("/tmp/linker_merge_incremental.json", "w"),
                 *f2 = fopen("/tmp/linker_merge_recount.json", "w");
            if (f1 && f2) {
                fputs(dump, f1);
                fputs(reference, f2);
            }
            if (f1)
                fclose(f1);
            if (f2)
                fclose(f2);
            fail_msg("seed %u: documents differ from the recounting run (/tmp/linker_merge_{incremental,recount}.json)",
                     seed);
        }
        free(dump);
        /* exact instances_linked: instance documents whose job_ids hold the job */
        const char *k;
        json_t *d;
        json_int_t j1 = 0, j2 = 0;
        json_object_foreach(coll(st, 2), k, d)
        {
            json_t *jl = json_object_get(d, "job_ids");
            for (size_t i = 0; i < json_array_size(jl); i++) {
                j1 += !strcmp(json_string_value(json_array_get(jl, i)), "J1");
                j2 += !strcmp(json_string_value(json_array_get(jl, i)), "J2");
            }
        }
        if (json_integer_value(json_object_get(linked, "J1")) != j1 ||
            json_integer_value(json_object_get(linked, "J2")) != j2)
            fail_msg("seed %u: linked J1 %lld (exact %lld), J2 %lld (exact %lld)", seed,
                     (long long)json_integer_value(json_object_get(linked, "J1")), (long long)j1,
                     (long long)json_integer_value(json_object_get(linked, "J2")), (long long)j2);
        json_decref(linked);
        mdb_store_mem_destroy(st);
    }
    free(reference);
}

static void test_values(void **state)
{
    (void)state;
    json_t *a = json_loads("{\"x\":1,\"y\":[1.5,\"s\",{\"b\":2,\"a\":null}],\"z\":true,\"big\":5000000000}", 0, NULL);
    json_t *b =
        json_loads("{\"y\":[1.5,\"s\",{\"a\":null,\"b\":2.0}],\"z\":true,\"x\":1.0,\"big\":5000000000}", 0, NULL);
    assert_true(mdb_docs_value_equal(a, b));
    char *ka = mdb_docs_value_key(a), *kb = mdb_docs_value_key(b);
    assert_string_equal(ka, kb);
    free(ka);
    free(kb);
    json_t *c = json_loads("{\"x\":2}", 0, NULL);
    assert_false(mdb_docs_value_equal(a, c));
    assert_true(mdb_docs_value_empty(json_null()));
    assert_true(mdb_docs_value_empty(NULL));
    json_t *e = json_string("");
    assert_true(mdb_docs_value_empty(e));
    json_decref(e);
    assert_true(mdb_docs_keyword_varies(MDB_DOCS_LEVEL_SERIES, "ImagePositionPatient"));
    assert_true(mdb_docs_keyword_varies(MDB_DOCS_LEVEL_STUDY, "Modality"));
    assert_false(mdb_docs_keyword_varies(MDB_DOCS_LEVEL_SERIES, "Modality"));
    assert_false(mdb_docs_keyword_varies(MDB_DOCS_LEVEL_SERIES, "SeriesDescription"));

    /* JSON -> BSON -> JSON keeps types exactly */
    bson_t bs = BSON_INITIALIZER;
    assert_true(mdb_docs_json_to_bson(a, &bs));
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &bs, "big"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_INT64);
    assert_true(bson_iter_init_find(&it, &bs, "x"));
    assert_int_equal(bson_iter_type(&it), BSON_TYPE_INT32);
    json_t *back = mdb_docs_bson_to_json(&bs);
    assert_true(json_equal(a, back));
    json_decref(back);
    bson_destroy(&bs);
    json_decref(a);
    json_decref(b);
    json_decref(c);

    json_t *arr = json_pack("[s,s,s,s]", "b", "a", "b", "c");
    mdb_docs_sort_strings(arr);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(json_string_value(json_array_get(arr, 0)), "a");
    json_decref(arr);
}

static void test_bad_event(void **state)
{
    (void)state;
    mdb_docs_model_t *m = mdb_docs_model_new();
    json_t *study = json_pack("{s:s}", "StudyInstanceUID", "1");
    json_t *series = json_pack("{s:s}", "SeriesInstanceUID", "");
    json_t *inst = json_pack("{s:s}", "SOPInstanceUID", "3");
    mdb_docs_event_t ev = {.job_id = "J", .path = "/p", .study = study, .series = series, .instance = inst};
    mdb_error_t err = {0};
    assert_false(mdb_docs_model_add_event(m, &ev, &err));
    assert_non_null(strstr(err.message, "SeriesInstanceUID"));
    assert_int_equal(mdb_docs_model_event_count(m), 0);
    json_decref(study);
    json_decref(series);
    json_decref(inst);
    mdb_docs_model_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documents),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_parent_moves),
        cmocka_unit_test(test_series_two_studies),
        cmocka_unit_test(test_smaller_path_drops_fields),
        cmocka_unit_test(test_job_counts),
        cmocka_unit_test(test_incremental_crashes),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_bad_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
