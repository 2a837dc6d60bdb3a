/* mdb_query_raw_form: the raw form of a query ({collection, filter,
 * parents, sort, projection, limit, skip} as JSON): reading one into a
 * query, and writing a query out in it. */
#include "mdb_query_private.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define LIST(a) (a), (sizeof(a) / sizeof((a)[0]))

static const char *const raw_collections[] = {"studies", "series", "instances", "jobs", "collections", "conflicts"};

static bool raw_sort(mdb_query_t *q, const json_t *sort, mdb_error_t *err)
{
    if (!json_is_object(sort)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort must be an object like {\"study_date\": -1}");
        return false;
    }
    if (json_object_size(sort) > 8) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort on at most 8 fields");
        return false;
    }
    bson_t b = BSON_INITIALIZER;
    const char *k;
    const json_t *v;
    bool id_seen = false;
    json_object_foreach((json_t *)sort, k, v)
    {
        if (!mdb_query_check_field_name(k, err))
            goto fail;
        if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != -1)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort direction of '%s' must be 1 or -1", k);
            goto fail;
        }
        id_seen = id_seen || !strcmp(k, "_id");
        BSON_APPEND_INT32(&b, k, (int32_t)json_integer_value(v));
    }
    if (!id_seen)
        BSON_APPEND_INT32(&b, "_id", 1);
    bson_destroy(&q->sort);
    bson_steal(&q->sort, &b);
    return true;
fail:
    bson_destroy(&b);
    return false;
}

static bool raw_projection(mdb_query_t *q, const json_t *proj, mdb_error_t *err)
{
    if (!json_is_object(proj)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "projection must be an object like {\"patient_id\": 1}");
        return false;
    }
    if (json_object_size(proj) > 100) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "projection names at most 100 fields");
        return false;
    }
    bson_t b = BSON_INITIALIZER;
    const char *k;
    const json_t *v;
    int include = -1; /* mode of non-_id fields */
    json_object_foreach((json_t *)proj, k, v)
    {
        if (k[0] == '$' || (json_is_object(v) && mdb_query_is_operator_object(v))) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "projection operators are not supported ('%s')", k);
            goto fail;
        }
        if (!mdb_query_check_field_name(k, err))
            goto fail;
        int on;
        if (json_is_boolean(v))
            on = json_is_true(v);
        else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            on = (int)json_integer_value(v);
        else {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "projection of '%s' must be 0, 1, true or false", k);
            goto fail;
        }
        if (strcmp(k, "_id") != 0) {
            if (include >= 0 && include != on) {
                mdb_error_set(err, MDB_ERR_QUERY, 0,
                              "projection mixes inclusion and exclusion ('%s'); only _id may differ", k);
                goto fail;
            }
            include = on;
        }
        BSON_APPEND_INT32(&b, k, on);
    }
    bson_destroy(&q->projection);
    bson_steal(&q->projection, &b);
    return true;
fail:
    bson_destroy(&b);
    return false;
}

/* "parents": {"studies": {filter}, "series": {filter}}: conditions on the
 * parent documents (a row matches when its parent does), the raw form of
 * the parent clauses of filter parameters. */
static bool raw_parents(mdb_query_t *q, const json_t *parents, mdb_error_t *err)
{
    if (!json_is_object(parents)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "parents must be an object like {\"studies\": {\"study_date\": ...}}");
        return false;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)parents, k, v)
    {
        mdb_query_level_t l;
        if (!mdb_query_level_parse(k, &l) || strcmp(k, mdb_query_level_name(l)) != 0 ||
            q->level >= MDB_QUERY_LEVEL_COUNT || l >= q->level) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "parents of %s can only name %s, got '%.64s'", q->collection,
                          q->level == MDB_QUERY_INSTANCES ? "studies and series"
                          : q->level == MDB_QUERY_SERIES  ? "studies"
                                                          : "nothing (this collection has no parents)",
                          k);
            return false;
        }
        bson_t b;
        if (!json_is_object(v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "parents.%s must be a filter object", k);
            return false;
        }
        if (!mdb_query_filter_from_json(v, &b, err)) {
            mdb_error_prefix(err, "parents.%s", k);
            return false;
        }
        if (bson_empty(&b)) {
            bson_destroy(&b);
            continue;
        }
        bson_t *c = bson_copy(&b);
        bson_destroy(&b);
        if (!c || !mdb_query_clauses_push(&q->parent[l], c)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
    }
    return true;
}

static bool raw_int(const json_t *v, const char *name, int64_t min, int64_t max, int64_t *out, mdb_error_t *err)
{
    if (!json_is_integer(v)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s must be an integer", name);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s must be between %lld and %lld, got %lld", name, (long long)min,
                      (long long)max, (long long)n);
        return false;
    }
    *out = n;
    return true;
}

mdb_query_t *mdb_query_new_raw(const json_t *request, const char *default_collection, int64_t max_limit,
                               mdb_error_t *err)
{
    mdb_query_t *q = NULL;
    if (!json_is_object(request)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "a raw query must be a JSON object {collection, filter, ...}");
        return NULL;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)request, k, v)
    {
        static const char *const keys[] = {"collection", "filter", "parents", "sort", "projection", "limit", "skip"};
        if (mdb_query_in_list(k, LIST(keys)))
            continue;
        if (!strcmp(k, "pipeline"))
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "aggregation pipelines are not accepted (they can write with $out/$merge); send a filter");
        else if (k[0] == '$' && mdb_query_refused_reason(k, err))
            ;
        else
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "unknown key '%s' (a raw query has collection, filter, parents, sort, projection, limit, "
                          "skip)",
                          k);
        return NULL;
    }
    const json_t *coll = json_object_get(request, "collection");
    const char *cname = default_collection ? default_collection : "studies";
    if (coll) {
        if (!json_is_string(coll)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "collection must be a string");
            return NULL;
        }
        cname = json_string_value(coll);
    }
    if (!mdb_query_in_list(cname, LIST(raw_collections))) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "collection '%.64s' is not queryable (allowed: studies, series, instances, jobs, collections, "
                      "conflicts)",
                      cname);
        return NULL;
    }
    mdb_query_level_t level;
    bool is_level = mdb_query_level_parse(cname, &level) && !strcmp(cname, mdb_query_level_name(level));
    q = mdb_query_new(is_level ? level : MDB_QUERY_STUDIES, max_limit);
    if (!q) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    if (!is_level)
        q->level = MDB_QUERY_LEVEL_COUNT;
    snprintf(q->collection, sizeof q->collection, "%s", cname);
    q->raw = true;

    const json_t *filter = json_object_get(request, "filter");
    if (filter && !json_is_null(filter)) {
        bson_t b;
        if (!json_is_object(filter)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "filter must be a JSON object");
            goto fail;
        }
        if (!mdb_query_filter_from_json(filter, &b, err))
            goto fail;
        bson_destroy(&q->filter);
        bson_steal(&q->filter, &b);
    }
    const json_t *parents = json_object_get(request, "parents");
    if (parents && !json_is_null(parents) && !raw_parents(q, parents, err))
        goto fail;
    const json_t *sort = json_object_get(request, "sort");
    if (sort && !json_is_null(sort) && !raw_sort(q, sort, err))
        goto fail;
    const json_t *proj = json_object_get(request, "projection");
    if (proj && !json_is_null(proj) && !raw_projection(q, proj, err))
        goto fail;
    const json_t *lim = json_object_get(request, "limit");
    if (lim && !json_is_null(lim) && !raw_int(lim, "limit", 1, q->max_limit, &q->limit, err))
        goto fail;
    const json_t *skip = json_object_get(request, "skip");
    if (skip && !json_is_null(skip) && !raw_int(skip, "skip", 0, MDB_QUERY_MAX_OFFSET, &q->offset, err))
        goto fail;
    return q;
fail:
    mdb_query_destroy(q);
    return NULL;
}

/* Does b hold a value JSON cannot carry as a raw query (a BSON regex from a
 * wildcard inside an eq:/ne: list, or any other typed value)? */
static bool has_untyped(const bson_t *b)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, b))
        return false;
    while (bson_iter_next(&it)) {
        bson_type_t t = bson_iter_type(&it);
        if (t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY) {
            bson_t sub;
            uint32_t len;
            const uint8_t *data;
            if (t == BSON_TYPE_DOCUMENT)
                bson_iter_document(&it, &len, &data);
            else
                bson_iter_array(&it, &len, &data);
            if (bson_init_static(&sub, data, len) && has_untyped(&sub))
                return true;
            continue;
        }
        if (t != BSON_TYPE_UTF8 && t != BSON_TYPE_INT32 && t != BSON_TYPE_INT64 && t != BSON_TYPE_DOUBLE &&
            t != BSON_TYPE_BOOL && t != BSON_TYPE_NULL)
            return true;
    }
    return false;
}

json_t *mdb_query_raw_json(const mdb_query_t *q, mdb_error_t *err)
{
    const bson_t *f = mdb_query_filter(q);
    bool untyped = has_untyped(f);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        for (size_t i = 0; i < q->parent[l].n; i++)
            untyped = untyped || has_untyped(q->parent[l].v[i]);
    if (untyped) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "a wildcard inside an eq:/ne: list becomes a regular expression inside $in/$nin, which a JSON "
                      "raw query cannot write; use a wildcard on its own (field=A*) or $regex");
        return NULL;
    }
    json_t *out = json_object(), *parents = json_object();
    bson_t tmp = BSON_INITIALIZER;
    if (!out || !parents)
        goto oom;
    json_object_set_new(out, "collection", json_string(q->collection));
    json_object_set_new(out, "filter", mdb_query_bson_to_json(f));
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        if (!q->parent[l].n)
            continue;
        mdb_query_build_and(&q->parent[l], &tmp);
        json_object_set_new(parents, mdb_query_level_name(l), mdb_query_bson_to_json(&tmp));
    }
    if (json_object_size(parents))
        json_object_set(out, "parents", parents);
    json_object_set_new(out, "sort", mdb_query_bson_to_json(&q->sort));
    if (!bson_empty(&q->projection))
        json_object_set_new(out, "projection", mdb_query_bson_to_json(&q->projection));
    json_object_set_new(out, "limit", json_integer(q->limit > 0 ? q->limit : 1));
    if (q->offset > 0)
        json_object_set_new(out, "skip", json_integer(q->offset));
    json_decref(parents);
    bson_destroy(&tmp);
    return out;
oom:
    json_decref(out);
    json_decref(parents);
    bson_destroy(&tmp);
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return NULL;
}
