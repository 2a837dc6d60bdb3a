/* mdb_docs_mongo: the MongoDB side of mdb_docs (part of the mdb_docs
 * module, declared in mdb_docs.h): a store for mdb_docs_apply plus the find,
 * aggregate and chunked-bulk helpers the linker and reconcile share.
 *
 * Written for FerretDB 1.24 (SQLite) as much as for MongoDB: reads are one
 * find/aggregate with $in per collection and batch (FerretDB scans, MongoDB
 * uses the _id/series_id indexes), new instances are one insert command
 * (cheap everywhere; FerretDB's per-statement updates are not), and on
 * FerretDB update commands carry at most MDB_DOCS_UPDATE_CHUNK statements
 * (it hangs the database on an update command of about 100). Every read
 * and write counts its round trip on the mdb_mongo_t. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_docs.h"
#include "mdb_jobs.h"
#include "mdb_log.h"

#define MONGO_DUPLICATE_KEY 11000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void mongo_err(mdb_error_t *err, const bson_error_t *be, const char *what)
{
    mdb_error_set(err, MDB_ERR_MONGO, (int)be->code, "%s: %s", what, be->message);
}

void mdb_docs_append_in(bson_t *filter, const char *key, const char *const *ids, size_t n)
{
    bson_t sub, arr;
    char buf[16];
    bson_append_document_begin(filter, key, -1, &sub);
    bson_append_array_begin(&sub, "$in", -1, &arr);
    for (size_t i = 0; i < n; i++) {
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, buf, sizeof buf);
        bson_append_utf8(&arr, k, -1, ids[i], -1);
    }
    bson_append_array_end(&sub, &arr);
    bson_append_document_end(filter, &sub);
}

/* Drain a cursor into out (JSON objects). */
static bool drain(mongoc_cursor_t *cur, json_t *out, const char *what, mdb_error_t *err)
{
    const bson_t *doc;
    bson_error_t be;
    while (mongoc_cursor_next(cur, &doc)) {
        json_t *j = mdb_docs_bson_to_json(doc);
        if (!j || json_array_append_new(out, j) != 0) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "%s: out of memory", what);
            return false;
        }
    }
    if (mongoc_cursor_error(cur, &be)) {
        mongo_err(err, &be, what);
        return false;
    }
    return true;
}

bool mdb_docs_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *projection,
                   const bson_t *sort, int64_t limit, json_t *out, mdb_error_t *err)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "find in %s: no database client", coll);
        return false;
    }
    mongoc_collection_t *c = mdb_mongo_collection(m, client, coll);
    bson_t opts = BSON_INITIALIZER;
    if (projection)
        BSON_APPEND_DOCUMENT(&opts, "projection", projection);
    if (sort)
        BSON_APPEND_DOCUMENT(&opts, "sort", sort);
    if (limit > 0)
        BSON_APPEND_INT64(&opts, "limit", limit);
    /* One reply for everything that fits: one round trip per find. */
    BSON_APPEND_INT32(&opts, "batchSize", 100000);
    double t0 = now_s();
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, &opts, NULL);
    char what[96];
    snprintf(what, sizeof what, "find in %s", coll);
    mdb_mongo_count_round_trip(m);
    size_t before = json_array_size(out);
    bool ok = drain(cur, out, what, err);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: find in %s: %zu document(s) in %.3f s", coll, json_array_size(out) - before,
            now_s() - t0);
    mongoc_cursor_destroy(cur);
    bson_destroy(&opts);
    mongoc_collection_destroy(c);
    mdb_mongo_push(m, client);
    return ok;
}

bool mdb_docs_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, json_t *out, mdb_error_t *err)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "aggregate on %s: no database client", coll);
        return false;
    }
    mongoc_collection_t *c = mdb_mongo_collection(m, client, coll);
    bson_t *opts = BCON_NEW("batchSize", BCON_INT32(100000));
    double t0 = now_s();
    mongoc_cursor_t *cur = mongoc_collection_aggregate(c, MONGOC_QUERY_NONE, pipeline, opts, NULL);
    char what[96];
    snprintf(what, sizeof what, "aggregate on %s", coll);
    mdb_mongo_count_round_trip(m);
    bool ok = drain(cur, out, what, err);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: aggregate on %s: %zu row(s) in %.3f s", coll, json_array_size(out), now_s() - t0);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(c);
    mdb_mongo_push(m, client);
    return ok;
}

bool mdb_docs_bulk_chunked(mdb_mongo_t *m, const char *coll, const char *wc, size_t chunk, size_t n,
                           mdb_docs_add_op_fn add_fn, void *ud, mdb_error_t *err)
{
    if (chunk == 0)
        chunk = MDB_DOCS_UPDATE_CHUNK;
    for (size_t start = 0; start < n; start += chunk) {
        size_t end = start + chunk < n ? start + chunk : n;
        mongoc_client_t *client = mdb_mongo_pop(m);
        if (!client) {
            mdb_error_set(err, MDB_ERR_MONGO, 0, "write to %s: no database client", coll);
            return false;
        }
        mdb_bulk_t *b = mdb_bulk_new(m, client, coll, wc);
        bool ok = b != NULL;
        double t0 = now_s();
        for (size_t i = start; ok && i < end; i++)
            ok = add_fn(b, i, ud, err);
        if (ok)
            ok = mdb_bulk_execute(b, NULL, err);
        else if (!b)
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "write to %s: out of memory", coll);
        MDB_LOG(MDB_LOG_DEBUG, "mongo: %zu update(s) on %s in %.3f s", end - start, coll, now_s() - t0);
        mdb_bulk_destroy(b);
        mdb_mongo_push(m, client);
        if (!ok)
            return false;
    }
    return true;
}

/* ---- the store ---- */

typedef struct {
    mdb_mongo_t *m;
    char *wc;
    bool ferret; /* FerretDB: replace changed instances through the journal */
    bool journal_empty; /* recover() found no entry: nothing of ours can be left to clear first */
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
            if (code == MONGO_DUPLICATE_KEY && index >= 0 && (size_t)index < json_array_size(docs))
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

/* One pass over the instances of the touched series and jobs:
 * {$match: {$or: [{series_id: {$in}}, {job_ids: {$in}}]}},
 * {$group: {_id: {s: "$series_id", j: "$job_ids"}, n: {$sum: 1}}}
 * then per-series and per-job sums from the (few) groups. */
static bool st_count_instances(void *ud, const char *const *series_ids, size_t n, const char *const *job_ids,
                               size_t njobs, json_t *counts, json_t *job_counts, mdb_error_t *err)
{
    mstore_t *s = ud;
    bson_t pipeline = BSON_INITIALIZER, st0, match, ors, o0, o1, st1, group, gid, sum;
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
    bson_append_document_begin(&pipeline, "1", -1, &st1);
    bson_append_document_begin(&st1, "$group", -1, &group);
    bson_append_document_begin(&group, "_id", -1, &gid);
    BSON_APPEND_UTF8(&gid, "s", "$series_id");
    if (njobs > 0)
        BSON_APPEND_UTF8(&gid, "j", "$job_ids");
    bson_append_document_end(&group, &gid);
    bson_append_document_begin(&group, "n", -1, &sum);
    BSON_APPEND_INT32(&sum, "$sum", 1);
    bson_append_document_end(&group, &sum);
    bson_append_document_end(&st1, &group);
    bson_append_document_end(&pipeline, &st1);
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

/* find {series_id: {$in}} projecting series_id and _ins, counted here (the
 * exclusion of late inserts needs _ins, and FerretDB's $group is limited). */
static bool st_count_series(void *ud, const char *const *series_ids, size_t n, const char *tp, int64_t upto,
                            json_t *counts, mdb_error_t *err)
{
    mstore_t *s = ud;
    json_t *rows = json_array();
    bson_t filter = BSON_INITIALIZER;
    bson_t *proj = BCON_NEW("series_id", BCON_INT32(1), "_ins", BCON_INT32(1));
    mdb_docs_append_in(&filter, "series_id", series_ids, n);
    bool ok = rows && mdb_docs_find(s->m, MDB_DOCS_INSTANCES, &filter, proj, NULL, 0, rows, err);
    for (size_t i = 0; ok && i < n; i++)
        json_object_set_new(counts, series_ids[i], json_integer(0));
    for (size_t i = 0; ok && i < json_array_size(rows); i++) {
        json_t *r = json_array_get(rows, i), *ins = json_object_get(r, "_ins");
        const char *sid = json_string_value(json_object_get(r, "series_id"));
        const char *t = json_string_value(json_object_get(ins, "t"));
        json_t *c = sid ? json_object_get(counts, sid) : NULL;
        if (!c || (tp && t && !strcmp(t, tp) && json_integer_value(json_object_get(ins, "o")) > upto))
            continue;
        json_object_set_new(counts, sid, json_integer(json_integer_value(c) + 1));
    }
    json_decref(rows);
    bson_destroy(proj);
    bson_destroy(&filter);
    return ok;
}

typedef struct {
    const json_t *docs;
    const char *now;
} upsert_ctx_t;

/* {_id} -> {$set: every field but _id/created_at, updated_at: now;
 *           $setOnInsert: {created_at: now}} */
static bool add_upsert(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err)
{
    upsert_ctx_t *c = ud;
    const json_t *doc = json_array_get(c->docs, i);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, soi;
    const char *k;
    json_t *v;
    bool ok = mdb_docs_append_json(&sel, "_id", json_object_get(doc, "_id"));
    bson_append_document_begin(&upd, "$set", -1, &set);
    json_object_foreach((json_t *)doc, k, v)
    {
        if (!strcmp(k, "_id") || !strcmp(k, "created_at") || !strcmp(k, "updated_at"))
            continue;
        ok = ok && mdb_docs_append_json(&set, k, v);
    }
    BSON_APPEND_UTF8(&set, "updated_at", c->now);
    bson_append_document_end(&upd, &set);
    bson_append_document_begin(&upd, "$setOnInsert", -1, &soi);
    BSON_APPEND_UTF8(&soi, "created_at", c->now);
    bson_append_document_end(&upd, &soi);
    ok = ok && mdb_bulk_upsert(b, &sel, &upd, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* deleteMany {_id: {$in: ids}} on coll: one command (FerretDB: one scan). */
static bool delete_ids(mstore_t *s, const char *coll, const char *const *ids, size_t n, mdb_error_t *err)
{
    if (n == 0)
        return true;
    mongoc_client_t *client = mdb_mongo_pop(s->m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "delete from %s: no database client", coll);
        return false;
    }
    mongoc_collection_t *c = mdb_mongo_collection(s->m, client, coll);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    mdb_docs_append_in(&filter, "_id", ids, n);
    mongoc_write_concern_t *wc = NULL;
    if (s->wc && *s->wc) {
        wc = mongoc_write_concern_new();
        if (!strcmp(s->wc, "majority"))
            mongoc_write_concern_set_w(wc, MONGOC_WRITE_CONCERN_W_MAJORITY);
        else
            mongoc_write_concern_set_w(wc, (int32_t)atoi(s->wc));
        mongoc_write_concern_append(wc, &opts);
    }
    bson_error_t be;
    double t0 = now_s();
    mdb_mongo_count_round_trip(s->m);
    bool ok = mongoc_collection_delete_many(c, &filter, &opts, NULL, &be);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: delete of %zu _id(s) from %s in %.3f s", n, coll, now_s() - t0);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "delete from %s: %s", coll, be.message);
    mongoc_write_concern_destroy(wc);
    bson_destroy(&filter);
    bson_destroy(&opts);
    mongoc_collection_destroy(c);
    mdb_mongo_push(s->m, client);
    return ok;
}

/* The _id strings of an array of documents (borrowed). */
static const char **ids_of(const json_t *docs, size_t *n)
{
    *n = 0;
    const char **ids = malloc((json_array_size(docs) + 1) * sizeof *ids);
    for (size_t i = 0; ids && i < json_array_size(docs); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(docs, i), "_id"));
        if (id)
            ids[(*n)++] = id;
    }
    return ids;
}

/* The journal entry _id of a document: its _id for instances (as before
 * other collections were journalled), "<coll>\n<_id>" otherwise. */
static char *journal_id(const char *coll, const char *id)
{
    if (!strcmp(coll, MDB_DOCS_INSTANCES))
        return strdup(id);
    size_t n = strlen(coll) + strlen(id) + 2;
    char *j = malloc(n);
    if (j)
        snprintf(j, n, "%s\n%s", coll, id);
    return j;
}

/* FerretDB: replace documents of coll in four commands whatever their
 * number (see mdb_docs.h): journal the new versions, delete the old ones,
 * insert the new ones, drop the journal entries. */
static bool replace_docs(mstore_t *s, const char *coll, const json_t *docs, const char *now, mdb_error_t *err)
{
    size_t n = 0, nj = 0;
    const char **ids = ids_of(docs, &n);
    const char **jids = calloc(json_array_size(docs) + 1, sizeof *jids);
    json_t *versions = json_array(), *journal = json_array(), *dups = json_array();
    bool ok = ids && jids && versions && journal && dups;
    for (size_t i = 0; ok && i < json_array_size(docs); i++) {
        json_t *d = json_copy(json_array_get(docs, i)); /* timestamps are top-level */
        const char *id = json_string_value(json_object_get(d, "_id"));
        char *jid = id ? journal_id(coll, id) : NULL;
        ok = d && jid;
        if (!ok) {
            json_decref(d);
            free(jid);
            break;
        }
        jids[nj++] = jid;
        if (!json_object_get(d, "created_at"))
            json_object_set_new(d, "created_at", json_string(now));
        json_object_set_new(d, "updated_at", json_string(now));
        json_array_append(versions, d);
        json_array_append_new(journal, json_pack("{s:s, s:s, s:s, s:o}", "_id", jid, "coll", coll, "at", now, "doc", d));
    }
    if (!ok && err && !err->message[0])
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory replacing documents of %s", coll);
    ok = ok && (s->journal_empty || delete_ids(s, MDB_DOCS_JOURNAL, jids, nj, err)) &&
         st_insert(s, MDB_DOCS_JOURNAL, journal, dups, err);
    if (ok && json_array_size(dups) > 0) {
        mdb_error_set(err, MDB_ERR_MONGO, EAGAIN, "document journal: %zu entr%s written concurrently, retrying",
                      json_array_size(dups), json_array_size(dups) == 1 ? "y" : "ies");
        ok = false;
    }
    json_array_clear(dups);
    /* A concurrent recovery may have inserted a journalled version already:
     * the same document, so a duplicate here is success. */
    ok = ok && delete_ids(s, coll, ids, n, err) && st_insert(s, coll, versions, dups, err) &&
         delete_ids(s, MDB_DOCS_JOURNAL, jids, nj, err);
    for (size_t i = 0; jids && i < nj; i++)
        free((char *)jids[i]);
    free(jids);
    free(ids);
    json_decref(versions);
    json_decref(journal);
    json_decref(dups);
    return ok;
}

static bool st_upsert(void *ud, const char *coll, const json_t *docs, const char *now, mdb_error_t *err)
{
    mstore_t *s = ud;
    if (s->ferret && (!strcmp(coll, MDB_DOCS_INSTANCES) || !strcmp(coll, MDB_DOCS_SERIES) ||
                      !strcmp(coll, MDB_DOCS_STUDIES)))
        return replace_docs(s, coll, docs, now, err);
    upsert_ctx_t c = {docs, now};
    return mdb_docs_bulk_chunked(s->m, coll, s->wc, s->ferret ? MDB_DOCS_UPDATE_CHUNK : MDB_DOCS_UPDATE_CHUNK_MONGO,
                                 json_array_size(docs), add_upsert, &c, err);
}

#define JOURNAL_STALE_SECONDS 300

/* Restore the journalled documents of one collection that are missing
 * there; collect the entries to drop. */
static bool recover_coll(mstore_t *s, const char *coll, json_t *entries, json_t *drop, const char *cutoff,
                         size_t *restored, mdb_error_t *err)
{
    json_t *present = json_array(), *restore = json_array(), *dups = json_array(), *have = json_object();
    const char **ids = malloc((json_array_size(entries) + 1) * sizeof *ids);
    size_t n = 0;
    bool ok = present && restore && dups && have && ids;
    for (size_t i = 0; ok && i < json_array_size(entries); i++) {
        const char *id = json_string_value(json_object_get(json_object_get(json_array_get(entries, i), "doc"), "_id"));
        if (id)
            ids[n++] = id;
    }
    if (ok && n > 0) {
        bson_t f = BSON_INITIALIZER;
        bson_t *proj = BCON_NEW("_id", BCON_INT32(1));
        mdb_docs_append_in(&f, "_id", ids, n);
        ok = mdb_docs_find(s->m, coll, &f, proj, NULL, 0, present, err);
        bson_destroy(&f);
        bson_destroy(proj);
    }
    for (size_t i = 0; ok && i < json_array_size(present); i++) {
        const char *id = json_string_value(json_object_get(json_array_get(present, i), "_id"));
        if (id)
            json_object_set_new(have, id, json_true());
    }
    for (size_t i = 0; ok && i < json_array_size(entries); i++) {
        json_t *e = json_array_get(entries, i), *d = json_object_get(e, "doc");
        const char *id = json_string_value(json_object_get(d, "_id"));
        const char *at = json_string_value(json_object_get(e, "at"));
        if (!id || !json_is_object(d))
            continue;
        if (!json_object_get(have, id)) {
            json_array_append(restore, d);
            json_array_append(drop, e);
        } else if (at && strcmp(at, cutoff) < 0) {
            json_array_append(drop, e);
        }
    }
    ok = ok && st_insert(s, coll, restore, dups, err);
    if (ok)
        *restored += json_array_size(restore) - json_array_size(dups);
    free(ids);
    json_decref(present);
    json_decref(restore);
    json_decref(dups);
    json_decref(have);
    return ok;
}

static bool st_recover(void *ud, const char *now, mdb_error_t *err)
{
    mstore_t *s = ud;
    if (!s->ferret)
        return true;
    json_t *entries = json_array(), *drop = json_array(), *by = json_object();
    bson_t filter = BSON_INITIALIZER;
    s->journal_empty = false;
    bool ok = entries && drop && by && mdb_docs_find(s->m, MDB_DOCS_JOURNAL, &filter, NULL, NULL, 0, entries, err);
    bson_destroy(&filter);
    s->journal_empty = ok && json_array_size(entries) == 0;
    if (!ok || json_array_size(entries) == 0)
        goto done;
    /* entries older than this whose document exists are leftovers */
    time_t t = time(NULL) - JOURNAL_STALE_SECONDS;
    struct tm tm;
    char cutoff[40];
    gmtime_r(&t, &tm);
    strftime(cutoff, sizeof cutoff, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *e = json_array_get(entries, i);
        const char *coll = json_string_value(json_object_get(e, "coll"));
        if (!coll)
            coll = MDB_DOCS_INSTANCES;
        if (strcmp(coll, MDB_DOCS_INSTANCES) && strcmp(coll, MDB_DOCS_SERIES) && strcmp(coll, MDB_DOCS_STUDIES))
            continue;
        json_t *arr = json_object_get(by, coll);
        if (!arr) {
            arr = json_array();
            json_object_set_new(by, coll, arr);
        }
        json_array_append(arr, e);
    }
    size_t restored = 0;
    const char *coll;
    json_t *arr;
    json_object_foreach(by, coll, arr)
    {
        if (ok)
            ok = recover_coll(s, coll, arr, drop, cutoff, &restored, err);
    }
    size_t nd = 0;
    const char **dids = ok ? ids_of(drop, &nd) : NULL;
    ok = ok && dids && delete_ids(s, MDB_DOCS_JOURNAL, dids, nd, err);
    free(dids);
    if (ok && restored > 0)
        MDB_LOG(MDB_LOG_WARN, "document journal: restored %zu document(s) an interrupted writer had removed (%s)",
                restored, now);
done:
    json_decref(entries);
    json_decref(drop);
    json_decref(by);
    return ok;
}

/* buildInfo names FerretDB with a "ferretdbVersion" field. */
static bool detect_ferret(mdb_mongo_t *m)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client)
        return false;
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    bson_t reply;
    bson_error_t be;
    mdb_mongo_count_round_trip(m);
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &be);
    bson_iter_t it;
    bool ferret = ok && bson_iter_init_find(&it, &reply, "ferretdbVersion");
    bson_destroy(&reply);
    bson_destroy(cmd);
    mdb_mongo_push(m, client);
    return ferret;
}

bool mdb_docs_mongo_store_journaled(const mdb_docs_store_t *st)
{
    return st && ((const mstore_t *)st->ud)->ferret;
}

size_t mdb_docs_mongo_store_update_chunk(const mdb_docs_store_t *st)
{
    return mdb_docs_mongo_store_journaled(st) ? MDB_DOCS_UPDATE_CHUNK : MDB_DOCS_UPDATE_CHUNK_MONGO;
}

mdb_docs_store_t *mdb_docs_mongo_store_new(mdb_mongo_t *m, const char *wc)
{
    mdb_docs_store_t *st = calloc(1, sizeof *st);
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
    st->recover = st_recover;
    s->ferret = detect_ferret(m);
    return st;
}

void mdb_docs_mongo_store_destroy(mdb_docs_store_t *st)
{
    if (!st)
        return;
    mstore_t *s = st->ud;
    if (s)
        free(s->wc);
    free(s);
    free(st);
}

bool mdb_docs_ensure_indexes(mdb_mongo_t *m, mdb_error_t *err)
{
    static const struct {
        const char *coll, *key;
    } idx[] = {
        {MDB_DOCS_STUDIES, "accession_number"},  {MDB_DOCS_STUDIES, "patient_id"},
        {MDB_DOCS_STUDIES, "study_date"},        {MDB_DOCS_STUDIES, "modality"},
        {MDB_DOCS_STUDIES, "modalities"},        {MDB_DOCS_STUDIES, "study_description"},
        {MDB_DOCS_STUDIES, "collection_ids"},    {MDB_DOCS_STUDIES, "job_ids"},
        {MDB_DOCS_SERIES, "study_id"},           {MDB_DOCS_SERIES, "series_number"},
        {MDB_DOCS_SERIES, "modality"},           {MDB_DOCS_SERIES, "body_part_examined"},
        {MDB_DOCS_SERIES, "manufacturer"},       {MDB_DOCS_SERIES, "slice_thickness"},
        {MDB_DOCS_SERIES, "kvp"},                {MDB_DOCS_SERIES, "series_date"},
        {MDB_DOCS_SERIES, "collection_ids"},     {MDB_DOCS_INSTANCES, "series_id"},
        {MDB_DOCS_INSTANCES, "study_id"},        {MDB_DOCS_INSTANCES, "sop_class_uid"},
        {MDB_DOCS_INSTANCES, "job_ids"},         {MDB_DOCS_CONFLICTS, "uid"},
        {MDB_DOCS_CONFLICTS, "kind"},
    };
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++)
        if (!mdb_jobs_ensure_index(m, idx[i].coll, idx[i].key, err))
            return false;
    return mdb_jobs_ensure_indexes(m, err);
}
