/* mdb_query_rows: reading a query's rows, each with the parent fields it
 * asks for (the join of "study.<field>" / "series.<field>" in fields= and
 * sort=). */
#include "mdb_query_private.h"
#include "mdb_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a query's rows are read. Parent fields ("study.patient_id" in the
 * projection or the sort) are joined by _id: for a plain find, the rows
 * come in batches and each batch's parents are read with one $in find per
 * parent level (indexed by _id); a sort on a parent field needs the parent
 * before the sort, so the database joins with $lookup in an aggregation. */
typedef struct {
    bson_t own_proj;                     /* projection of the level's own documents (empty: whole) */
    bson_t pproj[MDB_QUERY_LEVEL_COUNT]; /* fields wanted from each parent level */
    bool join[MDB_QUERY_LEVEL_COUNT];    /* that parent level is joined */
    bool any_join;
    bool psort; /* the sort names a parent field */
} plan_t;

static void plan_destroy(plan_t *p)
{
    bson_destroy(&p->own_proj);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        bson_destroy(&p->pproj[l]);
}

static void plan_init(const mdb_query_t *q, plan_t *p)
{
    memset(p, 0, sizeof *p);
    bson_init(&p->own_proj);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        bson_init(&p->pproj[l]);
    bson_iter_t it;
    mdb_query_level_t pl;
    if (bson_iter_init(&it, &q->projection)) {
        while (bson_iter_next(&it)) {
            const char *rest = mdb_query_parent_prefix(q->level, bson_iter_key(&it), &pl);
            if (!rest) {
                bson_append_iter(&p->own_proj, NULL, 0, &it);
                continue;
            }
            if (!mdb_query_has_key(&p->pproj[pl], rest))
                BSON_APPEND_INT32(&p->pproj[pl], rest, 1);
            p->join[pl] = true;
        }
    }
    if (bson_iter_init(&it, &q->sort)) {
        while (bson_iter_next(&it)) {
            const char *rest = mdb_query_parent_prefix(q->level, bson_iter_key(&it), &pl);
            if (!rest)
                continue;
            if (!mdb_query_has_key(&p->pproj[pl], rest))
                BSON_APPEND_INT32(&p->pproj[pl], rest, 1);
            p->join[pl] = true;
            p->psort = true;
        }
    }
    /* fields= naming only parent fields still projects the own documents
     * (to their join keys), not whole documents */
    bool projected = !bson_empty(&q->projection);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        if (!p->join[l])
            continue;
        p->any_join = true;
        /* an inclusion projection must keep the key the join follows */
        if (projected && !mdb_query_has_key(&p->own_proj, mdb_query_parent_keys[l]))
            BSON_APPEND_INT32(&p->own_proj, mdb_query_parent_keys[l], 1);
    }
}

#define JOIN_BATCH 500

typedef struct {
    mdb_mongo_t *m;
    const mdb_query_t *q;
    const plan_t *plan;
    int64_t time_ms;
    mdb_query_row_fn fn;
    void *ud;
    bson_t **docs; /* the batch waiting for its parents */
    size_t n, cap;
} rows_t;

/* Collects the documents of one parent level by _id into a JSON map. */
static bool put_parent(const bson_t *doc, void *ud, mdb_error_t *err)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_UTF8(&it))
        return true;
    json_t *j = mdb_query_bson_to_json(doc);
    if (!j) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    json_object_del(j, "_id");
    json_object_set_new(ud, bson_iter_utf8(&it, NULL), j);
    return true;
}

/* Read the parents (level l) of the batch's documents into map. */
static bool fetch_parents(rows_t *r, int l, json_t *map, mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, sub, arr, opts = BSON_INITIALIZER;
    json_t *seen = json_object();
    size_t n = 0;
    bool ok = seen != NULL;
    bson_append_document_begin(&filter, "_id", 3, &sub);
    bson_append_array_begin(&sub, "$in", 3, &arr);
    for (size_t i = 0; ok && i < r->n; i++) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, r->docs[i], mdb_query_parent_keys[l]) || !BSON_ITER_HOLDS_UTF8(&it))
            continue;
        const char *id = bson_iter_utf8(&it, NULL);
        if (json_object_get(seen, id))
            continue;
        json_object_set_new(seen, id, json_true());
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)n++, &k, key, sizeof key);
        BSON_APPEND_UTF8(&arr, k, id);
    }
    bson_append_array_end(&sub, &arr);
    bson_append_document_end(&filter, &sub);
    BSON_APPEND_DOCUMENT(&opts, "projection", &r->plan->pproj[l]);
    if (r->time_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", r->time_ms);
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    else if (n > 0)
        ok = mdb_ops_find(r->m, mdb_query_level_name(l), &filter, &opts, put_parent, map, err);
    json_decref(seen);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return ok;
}

/* Join the waiting batch with its parents and hand every row to fn. */
static bool flush_rows(rows_t *r, mdb_error_t *err)
{
    json_t *maps[MDB_QUERY_LEVEL_COUNT] = {0};
    bool ok = true;
    for (int l = 0; ok && l < MDB_QUERY_LEVEL_COUNT; l++) {
        if (!r->plan->join[l])
            continue;
        maps[l] = json_object();
        ok = maps[l] && fetch_parents(r, l, maps[l], err);
        if (!maps[l])
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < r->n; i++) {
        if (ok) {
            json_t *row = mdb_query_bson_to_json(r->docs[i]);
            if (!row) {
                mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
                ok = false;
            }
            for (int l = 0; ok && l < MDB_QUERY_LEVEL_COUNT; l++) {
                const char *id = maps[l] ? json_string_value(json_object_get(row, mdb_query_parent_keys[l])) : NULL;
                json_t *p = id ? json_object_get(maps[l], id) : NULL;
                if (p)
                    json_object_set(row, mdb_query_parent_names[l], p);
            }
            if (ok)
                ok = r->fn(row, r->ud, err);
            json_decref(row);
        }
        bson_destroy(r->docs[i]);
    }
    r->n = 0;
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        json_decref(maps[l]);
    return ok;
}

/* mdb_ops callback: a row straight to fn, or into the batch when parents
 * are joined (the batch is joined when the next document finds it full, so
 * a page that fits in one batch is joined after its cursor is closed). */
static bool take_row(const bson_t *doc, void *ud, mdb_error_t *err)
{
    rows_t *r = ud;
    if (!r->plan->any_join || r->plan->psort) {
        json_t *row = mdb_query_bson_to_json(doc);
        if (!row) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
        bool ok = r->fn(row, r->ud, err);
        json_decref(row);
        return ok;
    }
    if (r->n == r->cap && !flush_rows(r, err))
        return false;
    if (!(r->docs[r->n] = bson_copy(doc))) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    r->n++;
    return true;
}

/* The aggregation for a sort on a parent field: match, join each parent
 * level (only the fields wanted), sort, page, project. */
static void lookup_pipeline(const mdb_query_t *q, const plan_t *p, const bson_t *filter, int64_t skip, int64_t limit,
                            bson_t *pipeline)
{
    bson_t arr, st, sub, inner, pr;
    int n = 0;
    char key[16];
    const char *k;
    bson_init(pipeline);
    bson_append_array_begin(pipeline, "pipeline", -1, &arr);
#define NEXT_STAGE() (bson_uint32_to_string((uint32_t)n++, &k, key, sizeof key), k)
    bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
    BSON_APPEND_DOCUMENT(&st, "$match", filter);
    bson_append_document_end(&arr, &st);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        if (!p->join[l])
            continue;
        char path[32];
        snprintf(path, sizeof path, "$%s", mdb_query_parent_names[l]);
        bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
        bson_append_document_begin(&st, "$lookup", -1, &sub);
        BSON_APPEND_UTF8(&sub, "from", mdb_query_level_name(l));
        BSON_APPEND_UTF8(&sub, "localField", mdb_query_parent_keys[l]);
        BSON_APPEND_UTF8(&sub, "foreignField", "_id");
        BSON_APPEND_UTF8(&sub, "as", mdb_query_parent_names[l]);
        bson_append_array_begin(&sub, "pipeline", -1, &inner);
        bson_append_document_begin(&inner, "0", 1, &pr);
        bson_t proj;
        bson_append_document_begin(&pr, "$project", -1, &proj);
        bson_concat(&proj, &p->pproj[l]);
        BSON_APPEND_INT32(&proj, "_id", 0);
        bson_append_document_end(&pr, &proj);
        bson_append_document_end(&inner, &pr);
        bson_append_array_end(&sub, &inner);
        bson_append_document_end(&st, &sub);
        bson_append_document_end(&arr, &st);
        bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
        bson_append_document_begin(&st, "$unwind", -1, &sub);
        BSON_APPEND_UTF8(&sub, "path", path);
        BSON_APPEND_BOOL(&sub, "preserveNullAndEmptyArrays", true);
        bson_append_document_end(&st, &sub);
        bson_append_document_end(&arr, &st);
    }
    bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
    BSON_APPEND_DOCUMENT(&st, "$sort", &q->sort);
    bson_append_document_end(&arr, &st);
    if (skip > 0) {
        bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
        BSON_APPEND_INT64(&st, "$skip", skip);
        bson_append_document_end(&arr, &st);
    }
    if (limit > 0) {
        bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
        BSON_APPEND_INT64(&st, "$limit", limit);
        bson_append_document_end(&arr, &st);
    }
    if (!bson_empty(&p->own_proj)) {
        bson_append_document_begin(&arr, NEXT_STAGE(), -1, &st);
        bson_append_document_begin(&st, "$project", -1, &sub);
        bson_concat(&sub, &p->own_proj);
        for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
            if (p->join[l])
                BSON_APPEND_INT32(&sub, mdb_query_parent_names[l], 1);
        bson_append_document_end(&st, &sub);
        bson_append_document_end(&arr, &st);
    }
#undef NEXT_STAGE
    bson_append_array_end(pipeline, &arr);
}

/* Read the rows of filter (skip, limit <= 0: all) in q's sort order into fn.
 * cursor_ms is the main cursor's maxTimeMS (<= 0: none), time_ms that of
 * the parent look-ups. */
bool mdb_query_read_rows(mdb_mongo_t *m, const mdb_query_t *q, const bson_t *filter, int64_t skip, int64_t limit,
                         int64_t cursor_ms, int64_t time_ms, mdb_query_row_fn fn, void *ud, mdb_error_t *err)
{
    plan_t plan;
    plan_init(q, &plan);
    rows_t r = {.m = m, .q = q, .plan = &plan, .time_ms = time_ms, .fn = fn, .ud = ud};
    bson_t opts = BSON_INITIALIZER;
    bool ok = false;
    r.cap = limit > 0 && limit <= 10000 ? (size_t)limit : JOIN_BATCH;
    if (plan.any_join && !plan.psort && !(r.docs = calloc(r.cap, sizeof *r.docs))) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    if (cursor_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", cursor_ms);
    if (plan.psort) {
        bson_t pipeline, narrowed;
        bool usable = false;
        if (limit > 0 && !mdb_query_page_candidates(m, q, filter, skip + limit, time_ms, &narrowed, &usable, err))
            goto done;
        lookup_pipeline(q, &plan, usable ? &narrowed : filter, skip, limit, &pipeline);
        if (usable)
            bson_destroy(&narrowed);
        BSON_APPEND_INT32(&opts, "batchSize", 1000);
        ok = mdb_ops_aggregate(m, q->collection, &pipeline, &opts, take_row, &r, err);
        bson_destroy(&pipeline);
        goto done;
    }
    BSON_APPEND_DOCUMENT(&opts, "sort", &q->sort);
    if (!bson_empty(&plan.own_proj))
        BSON_APPEND_DOCUMENT(&opts, "projection", &plan.own_proj);
    if (skip > 0)
        BSON_APPEND_INT64(&opts, "skip", skip);
    if (limit > 0)
        BSON_APPEND_INT64(&opts, "limit", limit);
    if (limit <= 0 || limit > 1000) /* bounded driver batches: an export's memory stays flat */
        BSON_APPEND_INT32(&opts, "batchSize", 1000);
    ok = mdb_ops_find(m, q->collection, filter, &opts, take_row, &r, err) && (r.n == 0 || flush_rows(&r, err));
done:
    for (size_t i = 0; i < r.n; i++)
        bson_destroy(r.docs[i]);
    free(r.docs);
    bson_destroy(&opts);
    plan_destroy(&plan);
    return ok;
}
