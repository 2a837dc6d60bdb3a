/* mdb_find: the JSON face of mdb_ops (find and aggregate into JSON arrays)
 * and one-bulk writes over mdb_bulk (see mdb_find.h). Reads ask for one
 * reply of up to 100,000 documents, so a batch's read is one round trip;
 * the filters they are given use the collections' indexes (_id, series_id,
 * study_id, job_ids, uid). */
#include "mdb_find.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

/* mdb_ops callback: append doc to the JSON array ud. */
static bool append_json(const bson_t *doc, void *ud, mdb_error_t *err)
{
    json_t *j = mdb_docs_bson_to_json(doc);
    if (!j || json_array_append_new(ud, j) != 0) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory reading documents");
        return false;
    }
    return true;
}

bool mdb_docs_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *projection, const bson_t *sort,
                   int64_t limit, json_t *out, mdb_error_t *err)
{
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
    size_t before = json_array_size(out);
    bool ok = mdb_ops_find(m, coll, filter, &opts, append_json, out, err);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: find in %s: %zu document(s) in %.3f s", coll, json_array_size(out) - before,
            now_s() - t0);
    bson_destroy(&opts);
    return ok;
}

bool mdb_docs_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, json_t *out, mdb_error_t *err)
{
    bson_t *opts = BCON_NEW("batchSize", BCON_INT32(100000));
    double t0 = now_s();
    size_t before = json_array_size(out);
    bool ok = mdb_ops_aggregate(m, coll, pipeline, opts, append_json, out, err);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: aggregate on %s: %zu row(s) in %.3f s", coll, json_array_size(out) - before,
            now_s() - t0);
    bson_destroy(opts);
    return ok;
}

bool mdb_docs_bulk_write(mdb_mongo_t *m, const char *coll, const char *wc, size_t n, mdb_docs_add_op_fn add_fn,
                         void *ud, mdb_error_t *err)
{
    if (n == 0)
        return true;
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "write to %s: no database client", coll);
        return false;
    }
    mdb_bulk_t *b = mdb_bulk_new(m, client, coll, wc);
    bool ok = b != NULL;
    if (!b)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "write to %s: out of memory", coll);
    double t0 = now_s();
    for (size_t i = 0; ok && i < n; i++)
        ok = add_fn(b, i, ud, err);
    ok = ok && mdb_bulk_execute(b, NULL, err);
    MDB_LOG(MDB_LOG_DEBUG, "mongo: %zu write(s) on %s in %.3f s", n, coll, now_s() - t0);
    mdb_bulk_destroy(b);
    mdb_mongo_push(m, client);
    return ok;
}
