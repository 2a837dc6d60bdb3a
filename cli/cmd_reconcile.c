/* metadb reconcile [--repair] [--json] [--examples N]: post-hoc validation
 * of the catalogue's links, and repair of what the data itself determines.
 *
 * Checks (problem types, each with a count and the first examples):
 *   instance_without_series   an instance's series_id has no series document
 *   instance_without_study    an instance's study_id has no study document
 *   series_without_study      a series' study_id has no study document
 *   instance_count_mismatch   series.instance_count != its instances
 *   summary_mismatch          study series[]/series_count/instance_count/
 *                             modalities != what its series documents say
 *   job_link_missing          a study lacks a job id one of its instances has
 *   collection_link_missing   a study/series lacks the collection of a job
 *                             that loaded its instances
 *   collection_link_without_case  a study linked to a collection none of
 *                             whose cases (patient id, accession) it matches
 *   collection_missing        collection_ids names a collection that does not exist
 *   empty_series              a series without instances that no recorded
 *                             conflict explains
 *   instance_parent_mismatch  an instance's study differs from its series'
 *                             and no conflict records why
 *   series_incomplete         fewer instances than ImagesInAcquisition says
 *   instance_number_gap       InstanceNumbers of a series skip values
 * Conflicts already recorded are reported as information, not problems.
 *
 * --repair: missing study/series documents are rebuilt by re-reading the
 * files of the affected studies (every path of their instances, archive
 * roots enforced) through the same merge the linker uses (mdb_docs), so the
 * rebuilt documents are exactly what the linker would have written; counts,
 * summaries and links are then recomputed from the documents. Completeness,
 * cases and unexplained parents cannot be derived and are only reported. A
 * second run finds nothing to repair and changes nothing.
 *
 * Exit status: 0 no problems (or all repaired), 3 problems remain, 1 the
 * check itself failed, 2 usage. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_find.h"
#include "mdb_archive.h"
#include "mdb_cli.h"
#include "mdb_docs.h"
#include "mdb_extract.h"
#include "mdb_features.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"
#include "mdb_ops.h"
#include "mdb_progress.h"
#include "mdb_store.h"

#define REPLAY_CHUNK 500

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb [--mongo.db=DB] [--archive.roots=...] reconcile [--repair] [--json] [--examples N]\n"
                 "  checks completeness and every study/series/instance/collection link of the catalogue;\n"
                 "  --repair rebuilds missing documents from the files and fixes counts, summaries and links\n"
                 "  exit: 0 clean, 3 problems remain, 1 error\n");
}

/* ---- the state read from the database ---- */

typedef struct {
    json_t *studies;     /* _id -> doc */
    json_t *series;      /* _id -> doc */
    json_t *instances;   /* array of projected docs */
    json_t *conflicts;   /* array */
    json_t *jobs;        /* _id -> collection (string or null) */
    json_t *collections; /* _id -> doc */
} db_t;

static void db_clear(db_t *d)
{
    json_decref(d->studies);
    json_decref(d->series);
    json_decref(d->instances);
    json_decref(d->conflicts);
    json_decref(d->jobs);
    json_decref(d->collections);
    memset(d, 0, sizeof *d);
}

static json_t *by_id(json_t *arr)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < json_array_size(arr); i++) {
        json_t *d = json_array_get(arr, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (id)
            json_object_set(o, id, d);
    }
    return o;
}

static bool find_all(mdb_mongo_t *m, const char *coll, const bson_t *proj, json_t *out, mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    bool ok = mdb_docs_find(m, coll, &filter, proj, NULL, 0, out, err);
    bson_destroy(&filter);
    return ok;
}

static bool db_load(mdb_mongo_t *m, db_t *d, mdb_error_t *err)
{
    json_t *st = json_array(), *se = json_array(), *jobs = json_array(), *cols = json_array();
    bson_t *iproj = BCON_NEW("series_id", BCON_INT32(1), "study_id", BCON_INT32(1), "job_ids", BCON_INT32(1), "paths",
                             BCON_INT32(1), "feature_set", BCON_INT32(1), "instance_number", BCON_INT32(1),
                             "metadata.InstanceNumber", BCON_INT32(1), "metadata.ImagesInAcquisition", BCON_INT32(1),
                             "metadata.AcquisitionNumber", BCON_INT32(1));
    bson_t *jproj = BCON_NEW("collection", BCON_INT32(1));
    memset(d, 0, sizeof *d);
    d->instances = json_array();
    d->conflicts = json_array();
    const struct {
        const char *coll;
        const bson_t *proj;
        json_t *out;
    } steps[] = {{MDB_DOCS_STUDIES, NULL, st},
                 {MDB_DOCS_SERIES, NULL, se},
                 {MDB_DOCS_INSTANCES, iproj, d->instances},
                 {MDB_DOCS_CONFLICTS, NULL, d->conflicts},
                 {MDB_JOBS_COLL, jproj, jobs},
                 {MDB_COLLECTIONS_COLL, NULL, cols}};
    bool ok = st && se && jobs && cols && d->instances && d->conflicts;
    /* a progress bar on a terminal (per collection read), nothing on a pipe */
    mdb_progress_t *bar = mdb_progress_new(stderr, "reconcile", "docs", -1);
    int64_t total = 0, loaded = 0;
    for (size_t i = 0; ok && mdb_progress_active(bar) && i < sizeof steps / sizeof steps[0]; i++) {
        int64_t n = 0;
        mdb_error_t cerr = {0};
        total = total >= 0 && mdb_ops_count(m, steps[i].coll, NULL, NULL, &n, &cerr) ? total + n : -1;
    }
    mdb_progress_set_total(bar, total);
    for (size_t i = 0; ok && i < sizeof steps / sizeof steps[0]; i++) {
        char note[64];
        snprintf(note, sizeof note, "reading %s", steps[i].coll);
        mdb_progress_update(bar, loaded, note);
        ok = find_all(m, steps[i].coll, steps[i].proj, steps[i].out, err);
        loaded += (int64_t)json_array_size(steps[i].out);
    }
    mdb_progress_update(bar, loaded, NULL);
    mdb_progress_destroy(bar);
    if (ok) {
        d->studies = by_id(st);
        d->series = by_id(se);
        d->collections = by_id(cols);
        d->jobs = json_object();
        for (size_t i = 0; i < json_array_size(jobs); i++) {
            json_t *j = json_array_get(jobs, i);
            const char *id = json_string_value(json_object_get(j, "_id"));
            json_t *c = json_object_get(j, "collection");
            if (id)
                json_object_set_new(d->jobs, id,
                                    json_is_string(c) && json_string_length(c) ? json_incref(c) : json_null());
        }
        ok = d->studies && d->series && d->collections && d->jobs;
    }
    json_decref(st);
    json_decref(se);
    json_decref(jobs);
    json_decref(cols);
    bson_destroy(iproj);
    bson_destroy(jproj);
    return ok;
}

/* ---- problems ---- */

typedef struct {
    json_t *problems; /* type -> {count, examples[]} */
    size_t total;
    size_t max_examples;
    json_t *replay;      /* study ids whose files must be re-read */
    json_t *fix_count;   /* series id -> count */
    json_t *fix_summary; /* study id -> derived fields object */
    json_t *fix_links;   /* "studies"/"series" -> id -> {job_ids?, collection_ids?} */
    size_t explained_empty;
} report_t;

static void report_init(report_t *r, size_t max_examples)
{
    memset(r, 0, sizeof *r);
    r->problems = json_object();
    r->replay = json_object();
    r->fix_count = json_object();
    r->fix_summary = json_object();
    r->fix_links = json_pack("{s:{}, s:{}}", "studies", "series");
    r->max_examples = max_examples;
}

static void report_clear(report_t *r)
{
    json_decref(r->problems);
    json_decref(r->replay);
    json_decref(r->fix_count);
    json_decref(r->fix_summary);
    json_decref(r->fix_links);
    memset(r, 0, sizeof *r);
}

static void problem(report_t *r, const char *type, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void problem(report_t *r, const char *type, const char *fmt, ...)
{
    json_t *p = json_object_get(r->problems, type);
    if (!p) {
        p = json_pack("{s:I, s:[]}", "count", (json_int_t)0, "examples");
        json_object_set_new(r->problems, type, p);
    }
    json_object_set_new(p, "count", json_integer(json_integer_value(json_object_get(p, "count")) + 1));
    r->total++;
    json_t *ex = json_object_get(p, "examples");
    if (json_array_size(ex) >= r->max_examples)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    json_array_append_new(ex, json_string(buf));
}

/* Aggregates of the instances per series and per study. */
typedef struct {
    json_t *series; /* id -> {n, numbers: [..], acq: {acqno: {n, expected}}, jobs: {}, study_ids: {}} */
    json_t *study;  /* id -> {n, jobs: {}} */
} agg_t;

static json_t *agg_get(json_t *map, const char *id)
{
    json_t *a = json_object_get(map, id);
    if (!a) {
        a = json_pack("{s:I, s:[], s:{}, s:{}}", "n", (json_int_t)0, "numbers", "acq", "jobs");
        json_object_set_new(map, id, a);
    }
    return a;
}

static void agg_jobs(json_t *a, const json_t *job_ids)
{
    json_t *jobs = json_object_get(a, "jobs");
    for (size_t i = 0; i < json_array_size(job_ids); i++)
        if (json_is_string(json_array_get(job_ids, i)))
            json_object_set_new(jobs, json_string_value(json_array_get(job_ids, i)), json_true());
}

static void aggregate(const db_t *d, agg_t *g)
{
    g->series = json_object();
    g->study = json_object();
    for (size_t i = 0; i < json_array_size(d->instances); i++) {
        json_t *in = json_array_get(d->instances, i);
        const char *se = json_string_value(json_object_get(in, "series_id"));
        const char *st = json_string_value(json_object_get(in, "study_id"));
        json_t *meta = json_object_get(in, "metadata");
        if (se) {
            json_t *a = agg_get(g->series, se);
            json_object_set_new(a, "n", json_integer(json_integer_value(json_object_get(a, "n")) + 1));
            json_t *num = json_object_get(in, "instance_number");
            if (!json_is_number(num))
                num = json_object_get(meta, "InstanceNumber");
            if (json_is_number(num))
                json_array_append(json_object_get(a, "numbers"), num);
            json_t *exp = json_object_get(meta, "ImagesInAcquisition");
            if (json_is_integer(exp)) {
                json_t *acqno = json_object_get(meta, "AcquisitionNumber");
                char key[64];
                snprintf(key, sizeof key, "%lld", json_is_integer(acqno) ? (long long)json_integer_value(acqno) : -1LL);
                json_t *acq = json_object_get(json_object_get(a, "acq"), key);
                if (!acq) {
                    acq = json_pack("{s:I, s:I}", "n", (json_int_t)0, "expected", (json_int_t)0);
                    json_object_set_new(json_object_get(a, "acq"), key, acq);
                }
                json_object_set_new(acq, "n", json_integer(json_integer_value(json_object_get(acq, "n")) + 1));
                if (json_integer_value(exp) > json_integer_value(json_object_get(acq, "expected")))
                    json_object_set(acq, "expected", exp);
            }
            agg_jobs(a, json_object_get(in, "job_ids"));
        }
        if (st) {
            json_t *a = agg_get(g->study, st);
            json_object_set_new(a, "n", json_integer(json_integer_value(json_object_get(a, "n")) + 1));
            agg_jobs(a, json_object_get(in, "job_ids"));
        }
    }
}

/* Is there a conflict of `kind` with uid, or whose values name `value`? */
static bool conflict_names(const db_t *d, const char *kind, const char *uid, const char *value)
{
    for (size_t i = 0; i < json_array_size(d->conflicts); i++) {
        json_t *c = json_array_get(d->conflicts, i);
        if (strcmp(json_string_value(json_object_get(c, "kind")) ? json_string_value(json_object_get(c, "kind")) : "",
                   kind))
            continue;
        if (uid &&
            !strcmp(json_string_value(json_object_get(c, "uid")) ? json_string_value(json_object_get(c, "uid")) : "",
                    uid))
            return true;
        json_t *vals = json_object_get(c, "values");
        for (size_t k = 0; value && k < json_array_size(vals); k++) {
            const char *v = json_string_value(json_object_get(json_array_get(vals, k), "value"));
            if (v && !strcmp(v, value))
                return true;
        }
    }
    return false;
}

static int cmp_num(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void check_completeness(report_t *r, const char *sid, json_t *a)
{
    json_t *nums = json_object_get(a, "numbers");
    size_t n = json_array_size(nums);
    if (n >= 2) {
        double *v = malloc(n * sizeof *v);
        if (v) {
            for (size_t i = 0; i < n; i++)
                v[i] = json_number_value(json_array_get(nums, i));
            qsort(v, n, sizeof *v, cmp_num);
            long long missing = 0, first = 0;
            for (size_t i = 1; i < n; i++)
                if (v[i] - v[i - 1] > 1) {
                    if (!missing)
                        first = (long long)v[i - 1] + 1;
                    missing += (long long)(v[i] - v[i - 1] - 1);
                }
            if (missing)
                problem(r, "instance_number_gap",
                        "series %s: %lld InstanceNumber(s) missing between %g and %g, first %lld", sid, missing, v[0],
                        v[n - 1], first);
            free(v);
        }
    }
    const char *k;
    json_t *acq;
    json_object_foreach(json_object_get(a, "acq"), k, acq)
    {
        json_int_t seen = json_integer_value(json_object_get(acq, "n"));
        json_int_t expected = json_integer_value(json_object_get(acq, "expected"));
        if (expected > seen)
            problem(r, "series_incomplete", "series %s acquisition %s: %lld of %lld instances (ImagesInAcquisition)",
                    sid, k, (long long)seen, (long long)expected);
    }
}

/* The expected collection ids of an aggregate: its jobs' collections. */
static json_t *expected_collections(const db_t *d, json_t *a)
{
    json_t *out = json_array();
    const char *j;
    json_t *unused;
    json_object_foreach(json_object_get(a, "jobs"), j, unused)
    {
        json_t *c = json_object_get(d->jobs, j);
        if (json_is_string(c))
            json_array_append(out, c);
    }
    mdb_docs_sort_strings(out);
    return out;
}

/* Union of `have` and `want` if want adds anything, else NULL. */
static json_t *missing_union(const json_t *have, const json_t *want)
{
    json_t *u = json_array();
    bool added = false;
    for (size_t i = 0; i < json_array_size(have); i++)
        json_array_append(u, json_array_get(have, i));
    for (size_t i = 0; i < json_array_size(want); i++) {
        const char *w = json_string_value(json_array_get(want, i));
        bool found = false;
        for (size_t k = 0; w && k < json_array_size(have) && !found; k++)
            found =
                json_string_value(json_array_get(have, k)) && !strcmp(json_string_value(json_array_get(have, k)), w);
        if (w && !found) {
            json_array_append(u, json_array_get(want, i));
            added = true;
        }
    }
    if (!added) {
        json_decref(u);
        return NULL;
    }
    mdb_docs_sort_strings(u);
    return u;
}

static void fix_link(report_t *r, const char *level, const char *id, const char *key, json_t *value)
{
    json_t *l = json_object_get(json_object_get(r->fix_links, level), id);
    if (!l) {
        l = json_object();
        json_object_set_new(json_object_get(r->fix_links, level), id, l);
    }
    json_object_set_new(l, key, value);
}

static bool case_matches(const json_t *study, const json_t *cases)
{
    const char *pid = json_string_value(json_object_get(study, "patient_id"));
    if (!pid)
        pid = json_string_value(json_object_get(json_object_get(study, "metadata"), "PatientID"));
    const char *acc = json_string_value(json_object_get(study, "accession_number"));
    if (!acc)
        acc = json_string_value(json_object_get(json_object_get(study, "metadata"), "AccessionNumber"));
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        const char *cp = json_string_value(json_object_get(c, "patient_id"));
        json_t *accs = json_object_get(c, "accession_numbers");
        if (json_array_size(accs) > 0) {
            for (size_t k = 0; acc && *acc && k < json_array_size(accs); k++)
                if (json_string_value(json_array_get(accs, k)) &&
                    !strcmp(json_string_value(json_array_get(accs, k)), acc))
                    return true;
        } else if (cp && *cp && pid && !strcmp(cp, pid)) {
            return true;
        }
    }
    return false;
}

static void check_collections(report_t *r, const db_t *d, const char *id, const json_t *doc, bool study)
{
    json_t *cids = json_object_get(doc, "collection_ids");
    for (size_t i = 0; i < json_array_size(cids); i++) {
        const char *c = json_string_value(json_array_get(cids, i));
        if (!c)
            continue;
        json_t *col = json_object_get(d->collections, c);
        if (!col) {
            problem(r, "collection_missing", "%s %s names collection '%s', which does not exist",
                    study ? "study" : "series", id, c);
            continue;
        }
        json_t *cases = json_object_get(col, "cases");
        if (study && json_array_size(cases) > 0 && !case_matches(doc, cases))
            problem(r, "collection_link_without_case",
                    "study %s is in collection '%s' but matches none of its %zu case(s)", id, c,
                    json_array_size(cases));
    }
}

static void analyse(const db_t *d, report_t *r)
{
    agg_t g;
    aggregate(d, &g);
    const char *id;
    json_t *a, *doc;

    /* instances pointing at missing parents */
    json_object_foreach(g.series, id, a)
    {
        if (json_object_get(d->series, id))
            continue;
        problem(r, "instance_without_series", "series %s (%lld instance(s)) has no document", id,
                (long long)json_integer_value(json_object_get(a, "n")));
        for (size_t i = 0; i < json_array_size(d->instances); i++) {
            json_t *in = json_array_get(d->instances, i);
            const char *se = json_string_value(json_object_get(in, "series_id"));
            const char *st = json_string_value(json_object_get(in, "study_id"));
            if (se && st && !strcmp(se, id))
                json_object_set_new(r->replay, st, json_true());
        }
    }
    json_object_foreach(g.study, id, a)
    {
        if (json_object_get(d->studies, id))
            continue;
        problem(r, "instance_without_study", "study %s (%lld instance(s)) has no document", id,
                (long long)json_integer_value(json_object_get(a, "n")));
        json_object_set_new(r->replay, id, json_true());
    }

    /* series */
    json_object_foreach(d->series, id, doc)
    {
        const char *st = json_string_value(json_object_get(doc, "study_id"));
        if (st && !json_object_get(d->studies, st)) {
            problem(r, "series_without_study", "series %s: study %s has no document", id, st);
            json_object_set_new(r->replay, st, json_true());
        }
        a = json_object_get(g.series, id);
        json_int_t n = a ? json_integer_value(json_object_get(a, "n")) : 0;
        json_t *have = json_object_get(doc, "instance_count");
        if (!json_is_integer(have) || json_integer_value(have) != n) {
            char hv[32];
            snprintf(hv, sizeof hv, "%lld", (long long)json_integer_value(have));
            problem(r, "instance_count_mismatch", "series %s: instance_count %s, %lld instance(s) found", id,
                    json_is_integer(have) ? hv : "missing", (long long)n);
            json_object_set_new(r->fix_count, id, json_integer(n));
        }
        if (n == 0) {
            if (conflict_names(d, "instance_parent", NULL, id) || conflict_names(d, "series_parent", id, NULL))
                r->explained_empty++;
            else
                problem(r, "empty_series", "series %s has no instances", id);
            continue;
        }
        check_completeness(r, id, a);
        json_t *want = expected_collections(d, a);
        json_t *u = missing_union(json_object_get(doc, "collection_ids"), want);
        if (u) {
            problem(r, "collection_link_missing", "series %s lacks a collection of the jobs that loaded it", id);
            fix_link(r, "series", id, "collection_ids", u);
        }
        json_decref(want);
        check_collections(r, d, id, doc, false);
    }

    /* studies: derived fields and links */
    json_t *by_study = json_object();
    json_object_foreach(d->series, id, doc)
    {
        const char *st = json_string_value(json_object_get(doc, "study_id"));
        if (!st)
            continue;
        json_t *arr = json_object_get(by_study, st);
        if (!arr) {
            arr = json_array();
            json_object_set_new(by_study, st, arr);
        }
        json_array_append(arr, doc);
    }
    json_object_foreach(d->studies, id, doc)
    {
        json_t *derived = json_object();
        json_t *arr = json_object_get(by_study, id);
        json_t *empty = json_array();
        mdb_docs_study_set_derived(derived, arr ? arr : empty);
        json_decref(empty);
        static const char *const keys[] = {"series", "series_count", "instance_count", "modalities"};
        for (size_t k = 0; k < 4; k++)
            if (!mdb_docs_value_equal(json_object_get(derived, keys[k]), json_object_get(doc, keys[k]))) {
                problem(r, "summary_mismatch", "study %s: %s does not match its series documents", id, keys[k]);
                json_object_set(r->fix_summary, id, derived);
                break;
            }
        json_decref(derived);
        a = json_object_get(g.study, id);
        if (a) {
            json_t *want = json_array();
            const char *j;
            json_t *unused;
            json_object_foreach(json_object_get(a, "jobs"), j, unused) json_array_append_new(want, json_string(j));
            json_t *u = missing_union(json_object_get(doc, "job_ids"), want);
            if (u) {
                problem(r, "job_link_missing", "study %s lacks a job id of its instances", id);
                fix_link(r, "studies", id, "job_ids", u);
            }
            json_decref(want);
            want = expected_collections(d, a);
            u = missing_union(json_object_get(doc, "collection_ids"), want);
            if (u) {
                problem(r, "collection_link_missing", "study %s lacks a collection of the jobs that loaded it", id);
                fix_link(r, "studies", id, "collection_ids", u);
            }
            json_decref(want);
        }
        check_collections(r, d, id, doc, true);
    }
    json_decref(by_study);

    /* an instance whose study differs from its series' study */
    for (size_t i = 0; i < json_array_size(d->instances); i++) {
        json_t *in = json_array_get(d->instances, i);
        const char *iid = json_string_value(json_object_get(in, "_id"));
        const char *se = json_string_value(json_object_get(in, "series_id"));
        const char *st = json_string_value(json_object_get(in, "study_id"));
        json_t *sdoc = se ? json_object_get(d->series, se) : NULL;
        const char *sst = json_string_value(json_object_get(sdoc, "study_id"));
        if (!sdoc || !st || !sst || !strcmp(st, sst))
            continue;
        if (conflict_names(d, "instance_parent", iid, NULL) || conflict_names(d, "series_parent", se, NULL))
            continue;
        problem(r, "instance_parent_mismatch", "instance %s: study %s, but its series %s is in study %s", iid, st, se,
                sst);
    }
    json_decref(g.series);
    json_decref(g.study);
}

/* ---- repair ---- */

typedef struct {
    mdb_mongo_t *m;
    const mdb_config_t *cfg;
    mdb_store_t *store;
    mdb_archive_t *archive;
    mdb_featuresets_t *sets;
    mdb_extract_ctx_t *ctx;
    size_t files_read, files_failed, events;
} repair_t;

/* Re-read one file and add one event per job that loaded it. */
static bool replay_file(repair_t *rp, mdb_docs_model_t *model, const db_t *d, const json_t *inst, const char *path,
                        mdb_error_t *err)
{
    const char *fsname = json_string_value(json_object_get(inst, "feature_set"));
    mdb_error_t e = {0};
    const mdb_features_t *fs = mdb_featuresets_get(rp->sets, fsname, NULL, &e);
    char *canonical = NULL;
    const char *root = NULL;
    int fd = fs ? mdb_archive_open_ex(rp->archive, path, &canonical, &root, &e) : -1;
    if (fd < 0) {
        MDB_LOGX(MDB_LOG_WARN, NULL, path, "reconcile: cannot re-read: %s", e.message);
        rp->files_failed++;
        return true;
    }
    const char *text = NULL, *key = NULL;
    size_t len = 0;
    bool ok = mdb_extract_fd_event(rp->ctx, fs, fd, mdb_archive_charset_for(rp->archive, canonical), "reconcile", path,
                                   mdb_features_name(fs), &text, &len, &key, &e);
    close(fd);
    free(canonical);
    if (!ok) {
        MDB_LOGX(MDB_LOG_WARN, NULL, path, "reconcile: cannot extract: %s", e.message);
        rp->files_failed++;
        return true;
    }
    rp->files_read++;
    mdb_instance_msg_t ev;
    if (!mdb_msg_instance_decode(text, len, 0, &ev, &e)) {
        MDB_LOGX(MDB_LOG_WARN, NULL, path, "reconcile: extracted event does not decode: %s", e.message);
        rp->files_failed++;
        return true;
    }
    json_t *root_json = json_loadb(text, len, 0, NULL);
    json_t *file = json_pack("{s:I, s:I}", "size", (json_int_t)ev.file_size, "mtime", (json_int_t)ev.file_mtime);
    json_t *jobs = json_object_get(inst, "job_ids");
    ok = true;
    for (size_t i = 0; ok && i < json_array_size(jobs); i++) {
        const char *job = json_string_value(json_array_get(jobs, i));
        if (!job)
            continue;
        mdb_docs_event_t de = {.job_id = job,
                               .path = path,
                               .collection = json_string_value(json_object_get(d->jobs, job)),
                               .feature_set = json_string_value(json_object_get(root_json, "feature_set")),
                               .study = ev.study,
                               .series = ev.series,
                               .instance = ev.instance,
                               .file = file,
                               .dicom = json_object_get(root_json, "dicom"),
                               .integrity = json_object_get(root_json, "integrity")};
        ok = mdb_docs_model_add_event(model, &de, err);
        rp->events++;
    }
    json_decref(file);
    json_decref(root_json);
    mdb_msg_instance_clear(&ev);
    return ok;
}

static bool flush_model(repair_t *rp, mdb_docs_model_t **model, mdb_error_t *err)
{
    if (mdb_docs_model_event_count(*model) == 0)
        return true;
    char now[40];
    mdb_msg_now_iso(now, sizeof now);
    bool ok = mdb_docs_apply(*model, rp->store, now, NULL, err);
    mdb_docs_model_destroy(*model);
    *model = mdb_docs_model_new();
    if (ok && !*model) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        ok = false;
    }
    return ok;
}

/* Replay the files of every study in r->replay. */
static bool repair_replay(repair_t *rp, const db_t *d, const report_t *r, mdb_error_t *err)
{
    if (json_object_size(r->replay) == 0)
        return true;
    mdb_docs_model_t *model = mdb_docs_model_new();
    bool ok = model != NULL;
    mdb_progress_t *bar = mdb_progress_new(stderr, "repair", "instances", (int64_t)json_array_size(d->instances));
    for (size_t i = 0; ok && i < json_array_size(d->instances); i++) {
        mdb_progress_update(bar, (int64_t)i, NULL);
        json_t *in = json_array_get(d->instances, i);
        const char *st = json_string_value(json_object_get(in, "study_id"));
        if (!st || !json_object_get(r->replay, st))
            continue;
        json_t *paths = json_object_get(in, "paths");
        for (size_t k = 0; ok && k < json_array_size(paths); k++) {
            const char *p = json_string_value(json_array_get(paths, k));
            if (p)
                ok = replay_file(rp, model, d, in, p, err);
        }
        if (ok && mdb_docs_model_event_count(model) >= REPLAY_CHUNK)
            ok = flush_model(rp, &model, err);
    }
    ok = ok && flush_model(rp, &model, err);
    mdb_progress_destroy(bar);
    mdb_docs_model_destroy(model);
    return ok;
}

typedef struct {
    json_t *ops; /* [{sel, set}] */
} set_ops_t;

static bool add_set_op(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err)
{
    set_ops_t *o = ud;
    json_t *op = json_array_get(o->ops, i);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    bool ok = mdb_docs_append_json(&sel, "_id", json_object_get(op, "id"));
    bson_append_document_begin(&upd, "$set", -1, &set);
    ok = ok && mdb_docs_json_to_bson(json_object_get(op, "set"), &set);
    bson_append_document_end(&upd, &set);
    ok = ok && mdb_bulk_update_one(b, &sel, &upd, false, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

static bool write_sets(repair_t *rp, const char *coll, json_t *ops, mdb_error_t *err)
{
    set_ops_t o = {ops};
    return mdb_docs_bulk_write(rp->m, coll, mdb_config_get(rp->cfg, "mongo.write_concern"), json_array_size(ops),
                               add_set_op, &o, err);
}

/* Counts first, then links, then summaries (which read the counts). */
static bool repair_derived(repair_t *rp, const report_t *r, const char *now, size_t *fixed, mdb_error_t *err)
{
    json_t *series_ops = json_array(), *study_ops = json_array();
    const char *id;
    json_t *v;
    json_object_foreach(r->fix_count, id, v)
    {
        json_array_append_new(
            series_ops, json_pack("{s:s, s:{s:O, s:s}}", "id", id, "set", "instance_count", v, "updated_at", now));
    }
    json_object_foreach(json_object_get(r->fix_links, "series"), id, v)
    {
        json_t *set = json_deep_copy(v);
        json_object_set_new(set, "updated_at", json_string(now));
        json_array_append_new(series_ops, json_pack("{s:s, s:o}", "id", id, "set", set));
    }
    json_object_foreach(json_object_get(r->fix_links, "studies"), id, v)
    {
        json_t *set = json_deep_copy(v);
        json_object_set_new(set, "updated_at", json_string(now));
        json_array_append_new(study_ops, json_pack("{s:s, s:o}", "id", id, "set", set));
    }
    bool ok = write_sets(rp, MDB_DOCS_SERIES, series_ops, err) && write_sets(rp, MDB_DOCS_STUDIES, study_ops, err);
    *fixed += json_array_size(series_ops) + json_array_size(study_ops);
    json_decref(series_ops);
    json_decref(study_ops);
    return ok;
}

static bool repair_summaries(repair_t *rp, const report_t *r, const char *now, size_t *fixed, mdb_error_t *err)
{
    json_t *ops = json_array();
    const char *id;
    json_t *v;
    json_object_foreach(r->fix_summary, id, v)
    {
        json_t *set = json_deep_copy(v);
        json_object_set_new(set, "updated_at", json_string(now));
        json_array_append_new(ops, json_pack("{s:s, s:o}", "id", id, "set", set));
    }
    bool ok = write_sets(rp, MDB_DOCS_STUDIES, ops, err);
    *fixed += json_array_size(ops);
    json_decref(ops);
    return ok;
}

/* ---- output ---- */

static void print_text(const char *db, const db_t *d, const report_t *r, const char *title)
{
    printf("%s %s: %zu studies, %zu series, %zu instances, %zu conflict(s) recorded\n", title, db,
           json_object_size(d->studies), json_object_size(d->series), json_array_size(d->instances),
           json_array_size(d->conflicts));
    if (r->explained_empty)
        printf("  %zu series without instances explained by recorded conflicts\n", r->explained_empty);
    printf("problems: %zu\n", r->total);
    const char *type;
    json_t *p;
    json_object_foreach(r->problems, type, p)
    {
        printf("  %-30s %6lld\n", type, (long long)json_integer_value(json_object_get(p, "count")));
        json_t *ex = json_object_get(p, "examples");
        for (size_t i = 0; i < json_array_size(ex); i++)
            printf("      %s\n", json_string_value(json_array_get(ex, i)));
    }
}

static json_t *json_report(const db_t *d, const report_t *r)
{
    return json_pack("{s:{s:I, s:I, s:I, s:I}, s:I, s:O, s:I}", "counts", "studies",
                     (json_int_t)json_object_size(d->studies), "series", (json_int_t)json_object_size(d->series),
                     "instances", (json_int_t)json_array_size(d->instances), "conflicts",
                     (json_int_t)json_array_size(d->conflicts), "total_problems", (json_int_t)r->total, "problems",
                     r->problems, "explained_empty_series", (json_int_t)r->explained_empty);
}

static bool run_check(mdb_mongo_t *m, db_t *d, report_t *r, size_t examples, mdb_error_t *err)
{
    db_clear(d);
    report_clear(r);
    report_init(r, examples);
    if (!db_load(m, d, err))
        return false;
    analyse(d, r);
    return true;
}

static bool setup_repair(repair_t *rp, mdb_config_t *cfg, mdb_mongo_t *m, mdb_error_t *err)
{
    memset(rp, 0, sizeof *rp);
    rp->m = m;
    rp->cfg = cfg;
    rp->store = mdb_store_mongo_new(m, mdb_config_get(cfg, "mongo.write_concern"));
    if (!rp->store) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

static bool setup_extraction(repair_t *rp, mdb_error_t *err)
{
    if (rp->ctx)
        return true;
    rp->archive = mdb_archive_new_from_config(rp->cfg, err);
    if (!rp->archive)
        return false;
    if (mdb_archive_root_count(rp->archive) == 0) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL,
                      "rebuilding documents re-reads their files: set archive.roots (only files below them are read)");
        return false;
    }
    rp->sets =
        mdb_featuresets_new(mdb_config_get(rp->cfg, "features.dir"), mdb_config_get(rp->cfg, "features.default"), err);
    if (!rp->sets)
        return false;
    rp->ctx = mdb_extract_ctx_new((size_t)mdb_config_get_int(rp->cfg, "worker.max_header_bytes"));
    if (!rp->ctx) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

static void teardown_repair(repair_t *rp)
{
    mdb_extract_ctx_destroy(rp->ctx);
    mdb_featuresets_destroy(rp->sets);
    mdb_archive_destroy(rp->archive);
    mdb_store_mongo_destroy(rp->store);
}

int mdb_cmd_reconcile(mdb_config_t *cfg, int argc, char **argv)
{
    bool repair = false, as_json = false;
    size_t examples = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repair"))
            repair = true;
        else if (!strcmp(argv[i], "--json"))
            as_json = true;
        else if (!strcmp(argv[i], "--examples") && i + 1 < argc) {
            char *end = NULL;
            long v = strtol(argv[++i], &end, 10);
            if (!end || *end || v < 0 || v > 1000) {
                fprintf(stderr, "metadb reconcile: --examples takes 0..1000\n");
                return 2;
            }
            examples = (size_t)v;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "metadb reconcile: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    mdb_error_t err = {0};
    int rc = 1;
    db_t d = {0};
    report_t r;
    report_init(&r, examples);
    repair_t rp;
    memset(&rp, 0, sizeof rp);
    json_t *out = NULL;
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    if (!m || !mdb_mongo_wait_ready(m, 15000, &err))
        goto fail;
    if (!run_check(m, &d, &r, examples, &err))
        goto fail;
    size_t found = r.total;
    out = json_object();
    json_object_set_new(out, "found", json_report(&d, &r));
    if (!as_json)
        print_text(mdb_mongo_db_name(m), &d, &r, "reconcile");
    if (repair && r.total > 0) {
        char now[40];
        mdb_msg_now_iso(now, sizeof now);
        size_t fixed = 0, replayed_studies = json_object_size(r.replay);
        if (!setup_repair(&rp, cfg, m, &err))
            goto fail;
        if (replayed_studies > 0) {
            if (!setup_extraction(&rp, &err) || !repair_replay(&rp, &d, &r, &err))
                goto fail;
            /* counts and links as they are after the rebuild */
            if (!run_check(m, &d, &r, examples, &err))
                goto fail;
        }
        if (!repair_derived(&rp, &r, now, &fixed, &err) || !run_check(m, &d, &r, examples, &err) ||
            !repair_summaries(&rp, &r, now, &fixed, &err) || !run_check(m, &d, &r, examples, &err))
            goto fail;
        json_object_set_new(out, "repaired",
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "studies_rebuilt", (json_int_t)replayed_studies,
                                      "files_read", (json_int_t)rp.files_read, "files_unreadable",
                                      (json_int_t)rp.files_failed, "events", (json_int_t)rp.events, "fields_set",
                                      (json_int_t)fixed));
        json_object_set_new(out, "after", json_report(&d, &r));
        if (!as_json) {
            printf("repair: rebuilt %zu stud%s from %zu file(s) (%zu unreadable), set %zu derived field group(s)\n",
                   replayed_studies, replayed_studies == 1 ? "y" : "ies", rp.files_read, rp.files_failed, fixed);
            print_text(mdb_mongo_db_name(m), &d, &r, "after repair");
        }
    }
    (void)found;
    if (as_json) {
        char *s = json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
    }
    rc = r.total > 0 ? 3 : 0;
    goto done;
fail:
    fprintf(stderr, "metadb reconcile: %s\n", err.message[0] ? err.message : "failed");
    rc = 1;
done:
    json_decref(out);
    teardown_repair(&rp);
    report_clear(&r);
    db_clear(&d);
    mdb_mongo_destroy(m);
    return rc;
}
