/* mdb_store_mongo: the MongoDB implementation of mdb_store_t (contract in
 * mdb_store.h). Per call one command: reads are one find (or aggregate)
 * with $in on an indexed field (_id, study_id, uid, series_id, job_ids),
 * new documents one insert bulk whose duplicate-key errors (code 11000,
 * matched by code, never by message) report the _ids that exist already,
 * and existing documents one bulk of update-one {$set, $unset} upserts by
 * _id, so documents change in place. Counting groups on the server: the rows that
 * come back are one per series (and job), not one per instance. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_docs.h"
#include "mdb_find.h"
#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"
#include "mdb_store.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct {
    mdb_mongo_t *m;
    char *wc;
} mstore_t;

static bool find_in(mstore_t *s, const char *coll, const char *key, const char *const *ids, size_t n, json_t *out,
                    mdb_error_t *err)
{
    if (n == 0)
        return true;
    bson_t filter = BSON_INITIALIZER;
    mdb_docs_append_in(&filter, key, ids, n);
    bool ok = mdb_docs_find(s->m, coll, &filter, NULL, NULL, 0, out, err);
    bson_destroy(&filter);
    return ok;
}

static bool st_load_studies(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    return find_in(ud, MDB_DOCS_STUDIES, "_id", ids, n, out, err);
}

static bool st_load_series(void *ud, const char *const *ids, size_t n, const char *const *study_ids, size_t nstudies,
                           json_t *out, mdb_error_t *err)
{
    mstore_t *s = ud;
    if (nstudies == 0)
        return find_in(s, MDB_DOCS_SERIES, "_id", ids, n, out, err);
    if (n == 0)
        return find_in(s, MDB_DOCS_SERIES, "study_id", study_ids, nstudies, out, err);
    bson_t filter = BSON_INITIALIZER, arr, a, b;
    bson_append_array_begin(&filter, "$or", -1, &arr);
    bson_append_document_begin(&arr, "0", -1, &a);
    mdb_docs_append_in(&a, "_id", ids, n);
    bson_append_document_end(&arr, &a);
    bson_append_document_begin(&arr, "1", -1, &b);
    mdb_docs_append_in(&b, "study_id", study_ids, nstudies);
    bson_append_document_end(&arr, &b);
    bson_append_array_end(&filter, &arr);
    bool ok = mdb_docs_find(s->m, MDB_DOCS_SERIES, &filter, NULL, NULL, 0, out, err);
    bson_destroy(&filter);
    return ok;
}

static bool st_load_conflicts(void *ud, const char *const *uids, size_t n, json_t *out, mdb_error_t *err)
{
    return find_in(ud, MDB_DOCS_CONFLICTS, "uid", uids, n, out, err);
}

static bool st_load_instances(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    return find_in(ud, MDB_DOCS_INSTANCES, "_id", ids, n, out, err);
}

/* Collect the _ids of duplicate-key write errors; false if any other error. */
static bool collect_dups(const bson_t *reply, const json_t *docs, json_t *dups, mdb_error_t *err)
{
    bson_iter_t it, arr;
    bool other = false, any = false;
    if (bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr) && bson_iter_next(&arr))
        other = true;
    if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr)) {
            bson_iter_t e;
            int64_t code = 0, index = -1;
            if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &e))
                continue;
            while (bson_iter_next(&e)) {
                if (!strcmp(bson_iter_key(&e), "code"))
                    code = bson_iter_as_int64(&e);
                else if (!strcmp(bson_iter_key(&e), "index"))
                    index = bson_iter_as_int64(&e);
            }
            any = true;
            if (code == MDB_OPS_DUPLICATE_KEY && index >= 0 && (size_t)index < json_array_size(docs))
                json_array_append(dups, json_object_get(json_array_get(docs, (size_t)index), "_id"));
            else
                other = true;
        }
    (void)err;
    return any && !other; /* a failure without write errors is a failed command */
}

static bool st_insert(void *ud, const char *coll, const json_t *docs, json_t *dups, mdb_error_t *err)
{
    mstore_t *s = ud;
    size_t n = json_array_size(docs);
    if (n == 0)
        return true;
    mongoc_client_t *client = mdb_mongo_pop(s->m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "insert into %s: no database client", coll);
        return false;
    }
    mdb_bulk_t *b = mdb_bulk_new(s->m, client, coll, s->wc);
    bool ok = b != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        bson_t doc = BSON_INITIALIZER;
        ok = mdb_docs_json_to_bson(json_array_get(docs, i), &doc) && mdb_bulk_insert_one(b, &doc, err);
        bson_destroy(&doc);
    }
    if (ok) {
        bson_t reply;
        mdb_error_t e2 = {0};
        double t0 = now_s();
        bool done = mdb_bulk_execute(b, &reply, &e2);
        MDB_LOG(MDB_LOG_DEBUG, "mongo: insert of %zu document(s) into %s in %.3f s", n, coll, now_s() - t0);
        if (!done) {
            ok = collect_dups(&reply, docs, dups, err);
            if (!ok)
                *err = e2;
        }
        bson_destroy(&reply);
    } else if (err && !err->message[0]) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "insert into %s: out of memory", coll);
    }
    mdb_bulk_destroy(b);
    mdb_mongo_push(s->m, client);
    return ok;
}

/* Appends stage "1" to pipeline: {$group: {_id: gid, n: {$sum: 1}}}, where
 * gid is a compound key document, or "$series_id" when gid is NULL. */
static void append_count_stage(bson_t *pipeline, const bson_t *gid)
{
    bson_t st, group, sum;
    bson_append_document_begin(pipeline, "1", -1, &st);
    bson_append_document_begin(&st, "$group", -1, &group);
    if (gid)
        BSON_APPEND_DOCUMENT(&group, "_id", gid);
    else
        BSON_APPEND_UTF8(&group, "_id", "$series_id");
    bson_append_document_begin(&group, "n", -1, &sum);
    BSON_APPEND_INT32(&sum, "$sum", 1);
    bson_append_document_end(&group, &sum);
    bson_append_document_end(&st, &group);
    bson_append_document_end(pipeline, &st);
}

/* One pass over the instances of the touched series and jobs:
 * {$match: {$or: [{series_id: {$in}}, {job_ids: {$in}}]}},
 * {$group: {_id: {s: "$series_id", j: "$job_ids"}, n: {$sum: 1}}}
 * then per-series and per-job sums from the (few) groups. */
static bool st_count_instances(void *ud, const char *const *series_ids, size_t n, const char *const *job_ids,
                               size_t njobs, json_t *counts, json_t *job_counts, mdb_error_t *err)
{
    mstore_t *s = ud;
    bson_t pipeline = BSON_INITIALIZER, st0, match, ors, o0, o1;
    bson_append_document_begin(&pipeline, "0", -1, &st0);
    bson_append_document_begin(&st0, "$match", -1, &match);
    if (njobs == 0) {
        mdb_docs_append_in(&match, "series_id", series_ids, n);
    } else if (n == 0) {
        mdb_docs_append_in(&match, "job_ids", job_ids, njobs);
    } else {
        bson_append_array_begin(&match, "$or", -1, &ors);
        bson_append_document_begin(&ors, "0", -1, &o0);
        mdb_docs_append_in(&o0, "series_id", series_ids, n);
        bson_append_document_end(&ors, &o0);
        bson_append_document_begin(&ors, "1", -1, &o1);
        mdb_docs_append_in(&o1, "job_ids", job_ids, njobs);
        bson_append_document_end(&ors, &o1);
        bson_append_array_end(&match, &ors);
    }
    bson_append_document_end(&st0, &match);
    bson_append_document_end(&pipeline, &st0);
    bson_t gid = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&gid, "s", "$series_id");
    if (njobs > 0)
        BSON_APPEND_UTF8(&gid, "j", "$job_ids");
    append_count_stage(&pipeline, &gid);
    bson_destroy(&gid);
    json_t *rows = json_array();
    bool ok = rows && mdb_docs_aggregate(s->m, MDB_DOCS_INSTANCES, &pipeline, rows, err);
    for (size_t i = 0; ok && i < n; i++)
        json_object_set_new(counts, series_ids[i], json_integer(0));
    for (size_t i = 0; ok && job_counts && i < njobs; i++)
        json_object_set_new(job_counts, job_ids[i], json_integer(0));
    for (size_t i = 0; ok && i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i), *id = json_object_get(r, "_id");
        json_int_t cnt = json_integer_value(json_object_get(r, "n"));
        const char *sid = json_string_value(json_object_get(id, "s"));
        json_t *c = sid ? json_object_get(counts, sid) : NULL;
        if (c)
            json_object_set_new(counts, sid, json_integer(json_integer_value(c) + cnt));
        json_t *jobs = json_object_get(id, "j");
        for (size_t k = 0; job_counts && k < json_array_size(jobs); k++) {
            const char *j = json_string_value(json_array_get(jobs, k));
            json_t *jc = j ? json_object_get(job_counts, j) : NULL;
            if (jc)
                json_object_set_new(job_counts, j, json_integer(json_integer_value(jc) + cnt));
        }
    }
    json_decref(rows);
    bson_destroy(&pipeline);
    return ok;
}

/* One aggregate on the series_id index, grouped on the server:
 * {$match: {series_id: {$in}, $nor: [{"_ins.t": tp, "_ins.o": {$gt: upto}}]}},
 * {$group: {_id: "$series_id", n: {$sum: 1}}}: one row per series. */
static bool st_count_series(void *ud, const char *const *series_ids, size_t n, const char *tp, int64_t upto,
                            json_t *counts, mdb_error_t *err)
{
    mstore_t *s = ud;
    bson_t pipeline = BSON_INITIALIZER, st0, match, nor, late, gt;
    bson_append_document_begin(&pipeline, "0", -1, &st0);
    bson_append_document_begin(&st0, "$match", -1, &match);
    mdb_docs_append_in(&match, "series_id", series_ids, n);
    if (tp) {
        bson_append_array_begin(&match, "$nor", -1, &nor);
        bson_append_document_begin(&nor, "0", -1, &late);
        BSON_APPEND_UTF8(&late, "_ins.t", tp);
        bson_append_document_begin(&late, "_ins.o", -1, &gt);
        BSON_APPEND_INT64(&gt, "$gt", upto);
        bson_append_document_end(&late, &gt);
        bson_append_document_end(&nor, &late);
        bson_append_array_end(&match, &nor);
    }
    bson_append_document_end(&st0, &match);
    bson_append_document_end(&pipeline, &st0);
    append_count_stage(&pipeline, NULL);
    json_t *rows = json_array();
    bool ok = rows && mdb_docs_aggregate(s->m, MDB_DOCS_INSTANCES, &pipeline, rows, err);
    for (size_t i = 0; ok && i < n; i++)
        json_object_set_new(counts, series_ids[i], json_integer(0));
    for (size_t i = 0; ok && i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i);
        const char *sid = json_string_value(json_object_get(r, "_id"));
        if (sid && json_object_get(counts, sid))
            json_object_set_new(counts, sid, json_integer(json_integer_value(json_object_get(r, "n"))));
    }
    json_decref(rows);
    bson_destroy(&pipeline);
    return ok;
}

typedef struct {
    const json_t *docs, *unset;
    const char *now;
} upsert_ctx_t;

/* {_id} -> {$set: every field but _id/created_at, updated_at: now;
 *           $unset: {each field unset[i] names: ""};
 *           $setOnInsert: {created_at: now}} */
static bool add_upsert(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err)
{
    upsert_ctx_t *c = ud;
    const json_t *doc = json_array_get(c->docs, i), *drop = json_array_get(c->unset, i);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, uns, soi;
    const char *k;
    json_t *v;
    size_t j;
    bool ok = mdb_docs_append_json(&sel, "_id", json_object_get(doc, "_id"));
    /* Optimistic concurrency: {_id, updated_at: as read}. When another writer
     * changed the document meanwhile, nothing matches, the upsert's insert
     * hits the existing _id (duplicate key, also on mdb_bulk's one retry) and
     * the bulk fails; the linker retries the batch from a fresh read. */
    const char *if_ts = json_string_value(json_object_get(doc, MDB_STORE_IF_UPDATED_AT));
    if (if_ts)
        BSON_APPEND_UTF8(&sel, "updated_at", if_ts);
    bson_append_document_begin(&upd, "$set", -1, &set);
    json_object_foreach((json_t *)doc, k, v)
    {
        if (!strcmp(k, "_id") || !strcmp(k, "created_at") || !strcmp(k, "updated_at") ||
            !strcmp(k, MDB_STORE_IF_UPDATED_AT))
            continue;
        ok = ok && mdb_docs_append_json(&set, k, v);
    }
    BSON_APPEND_UTF8(&set, "updated_at", c->now);
    bson_append_document_end(&upd, &set);
    if (json_array_size(drop) > 0) {
        bson_append_document_begin(&upd, "$unset", -1, &uns);
        json_array_foreach(drop, j, v) BSON_APPEND_UTF8(&uns, json_string_value(v), "");
        bson_append_document_end(&upd, &uns);
    }
    bson_append_document_begin(&upd, "$setOnInsert", -1, &soi);
    BSON_APPEND_UTF8(&soi, "created_at", c->now);
    bson_append_document_end(&upd, &soi);
    ok = ok && mdb_bulk_upsert(b, &sel, &upd, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* One bulk of update-one upserts by _id: documents change in place. */
static bool st_upsert(void *ud, const char *coll, const json_t *docs, const json_t *unset, const char *now,
                      mdb_error_t *err)
{
    mstore_t *s = ud;
    upsert_ctx_t c = {docs, unset, now};
    return mdb_docs_bulk_write(s->m, coll, s->wc, json_array_size(docs), add_upsert, &c, err);
}

mdb_store_t *mdb_store_mongo_new(mdb_mongo_t *m, const char *wc)
{
    mdb_store_t *st = calloc(1, sizeof *st);
    mstore_t *s = calloc(1, sizeof *s);
    if (!st || !s || (wc && !(s->wc = strdup(wc)))) {
        free(st);
        if (s)
            free(s->wc);
        free(s);
        return NULL;
    }
    s->m = m;
    st->ud = s;
    st->load_studies = st_load_studies;
    st->load_series = st_load_series;
    st->load_conflicts = st_load_conflicts;
    st->load_instances = st_load_instances;
    st->insert = st_insert;
    st->count_instances = st_count_instances;
    st->count_series = st_count_series;
    st->upsert = st_upsert;
    return st;
}

void mdb_store_mongo_destroy(mdb_store_t *st)
{
    if (!st)
        return;
    mstore_t *s = st->ud;
    if (s)
        free(s->wc);
    free(s);
    free(st);
}
