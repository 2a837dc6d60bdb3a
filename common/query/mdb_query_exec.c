/* mdb_query_exec: running a query. Parent clauses are resolved first into
 * {study_id|series_id: {$in: ids}}; then the page is read (mdb_query_rows.c)
 * and the matches counted. */
#include "mdb_query_private.h"
#include "mdb_ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARENT_IDS 200000

/* Appends each document's _id to ids_arr (mdb_ops_find callback). */
typedef struct {
    bson_t *arr;
    size_t n;
    const char *level;
} ids_acc_t;

static bool append_id(const bson_t *doc, void *ud, mdb_error_t *err)
{
    ids_acc_t *a = ud;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id"))
        return true;
    if (a->n >= MAX_PARENT_IDS) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "the %s filter matches more than %d documents; narrow it or query %s directly", a->level,
                      MAX_PARENT_IDS, a->level);
        return false;
    }
    char key[16];
    const char *k;
    bson_uint32_to_string((uint32_t)a->n, &k, key, sizeof key);
    bson_append_iter(a->arr, k, -1, &it);
    a->n++;
    return true;
}

/* Resolve a parent filter into the list of matching _ids. */
static bool parent_ids(mdb_mongo_t *m, mdb_query_level_t level, const mdb_query_clauses_t *cl, int64_t time_ms,
                       bson_t *ids_arr, size_t *n, mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, proj;
    mdb_query_build_and(cl, &filter);
    bson_append_document_begin(&opts, "projection", -1, &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    bson_append_document_end(&opts, &proj);
    if (time_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", time_ms);
    ids_acc_t acc = {.arr = ids_arr, .n = 0, .level = mdb_query_level_name(level)};
    bool ok = mdb_ops_find(m, mdb_query_level_name(level), &filter, &opts, append_id, &acc, err);
    *n = acc.n;
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

/* The effective filter: own clauses plus {study_id|series_id: {$in: ids}}
 * for each parent level with clauses. *empty is set when a parent matched
 * nothing (the answer is then known to be empty). */
static bool effective_filter(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, bson_t *out, bool *empty,
                             mdb_error_t *err)
{
    *empty = false;
    bson_init(out);
    bool parents = false;
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        parents = parents || q->parent[l].n > 0;
    if (!parents) {
        bson_concat(out, mdb_query_filter(q));
        return true;
    }
    mdb_query_clauses_t all = {0};
    bool ok = false;
    if (q->raw && !bson_empty(&q->filter) && !mdb_query_clauses_push(&all, bson_copy(&q->filter)))
        goto oom;
    for (size_t i = 0; !q->raw && i < q->clauses.n; i++)
        if (!mdb_query_clauses_push(&all, bson_copy(q->clauses.v[i])))
            goto oom;
    for (int l = 0; l < (int)q->level; l++) {
        if (!q->parent[l].n)
            continue;
        bson_t *c = bson_new(), sub, arr;
        size_t n = 0;
        bson_append_document_begin(c, l == MDB_QUERY_STUDIES ? "study_id" : "series_id", -1, &sub);
        bson_append_array_begin(&sub, "$in", 3, &arr);
        if (!parent_ids(m, (mdb_query_level_t)l, &q->parent[l], time_ms, &arr, &n, err)) {
            bson_destroy(c);
            goto done;
        }
        bson_append_array_end(&sub, &arr);
        bson_append_document_end(c, &sub);
        if (n == 0)
            *empty = true;
        if (!mdb_query_clauses_push(&all, c))
            goto oom;
    }
    mdb_query_build_and(&all, out);
    ok = true;
    goto done;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
done:
    mdb_query_clauses_clear(&all);
    return ok;
}

/* Appends each row to the array ud. */
static bool append_row(json_t *row, void *ud, mdb_error_t *err)
{
    if (json_array_append(ud, row) != 0) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

json_t *mdb_query_run(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, bool skip_total, mdb_error_t *err)
{
    json_t *result = NULL, *items = json_array();
    bson_t filter = BSON_INITIALIZER, count_opts = BSON_INITIALIZER;
    bool empty = false;
    int64_t total = -1;

    if (!items) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    bson_destroy(&filter);
    if (!effective_filter(m, q, time_ms, &filter, &empty, err))
        goto done;
    if (empty) {
        total = 0;
        goto answer;
    }
    if (time_ms > 0)
        BSON_APPEND_INT64(&count_opts, "maxTimeMS", time_ms);
    /* limit 0: the count alone (a sorted first page of a large match costs
     * more than the indexed count itself). */
    if (q->limit > 0 &&
        !mdb_query_read_rows(m, q, &filter, q->offset, q->limit, time_ms, time_ms, append_row, items, err))
        goto done;
    if (!skip_total || q->limit == 0) {
        /* A short first page already tells the total. */
        size_t got = json_array_size(items);
        if (q->limit > 0 && q->offset == 0 && (int64_t)got < q->limit)
            total = (int64_t)got;
        else if (!mdb_ops_count(m, q->collection, &filter, &count_opts, &total, err))
            goto done;
    }
answer:
    result = json_object();
    if (!result) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    if (total >= 0)
        json_object_set_new(result, "total", json_integer(total));
    json_object_set_new(result, "limit", json_integer(q->limit));
    json_object_set_new(result, "offset", json_integer(q->offset));
    json_object_set_new(result, "items", items);
    items = NULL;
done:
    json_decref(items);
    bson_destroy(&filter);
    bson_destroy(&count_opts);
    return result;
}

bool mdb_query_foreach(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, int64_t max_rows, mdb_query_row_fn fn,
                       void *ud, mdb_error_t *err)
{
    bson_t filter;
    bool empty = false;
    if (!effective_filter(m, q, time_ms, &filter, &empty, err)) {
        bson_destroy(&filter);
        return false;
    }
    bool ok =
        empty || mdb_query_read_rows(m, q, &filter, q->offset, max_rows > 0 ? max_rows : 0, 0, time_ms, fn, ud, err);
    bson_destroy(&filter);
    return ok;
}

bool mdb_query_count(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, int64_t *n, mdb_error_t *err)
{
    bson_t filter, opts = BSON_INITIALIZER;
    bool empty = false, ok = false;
    *n = 0;
    if (!effective_filter(m, q, time_ms, &filter, &empty, err))
        goto done;
    if (empty) {
        ok = true;
        goto done;
    }
    if (time_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", time_ms);
    ok = mdb_ops_count(m, q->collection, &filter, &opts, n, err);
done:
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

bool mdb_query_effective_filter(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, bson_t *out, bool *empty,
                                mdb_error_t *err)
{
    return effective_filter(m, q, time_ms, out, empty, err);
}
