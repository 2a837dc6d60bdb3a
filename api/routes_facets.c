/* routes_facets.c: GET /api/facets — distributions of the cohort a list
 * shows. The request carries the list's own filters (parsed by mdb_query,
 * so a filter means here what it means on /api/studies, /api/series,
 * /api/instances) plus level, fields and the facet options of mdb_facets.
 * The counts come from the database: one aggregation ($match + $facet),
 * two when a numeric histogram needs its range first.
 *
 * A filter on a parent level's field (series?study_date=...) is applied the
 * way the list applies it: the parent documents' _ids are looked up first
 * and the facet's $match gets {study_id|series_id: {$in: ids}}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_private.h"
#include "mdb_facets.h"
#include "mdb_ops.h"
#include "mdb_query.h"

#define FACETS_MAX_PARENT_IDS 200000

/* Which level's documents carry filter `name` (as mdb_query routes it:
 * "study.<field>" / "series.<field>" name a parent explicitly, else own
 * level first, then the parents); -1 when none does. *param receives the
 * name to give that level's query (the prefix removed). */
static int filter_level(mdb_query_level_t level, const char *name, const char **param)
{
    static const char *const prefixes[] = {"study.", "series."};
    *param = name;
    for (int l = 0; l < (int)level; l++) {
        size_t n = strlen(prefixes[l]);
        if (!strncmp(name, prefixes[l], n) && mdb_query_resolve_field((mdb_query_level_t)l, name + n, NULL)) {
            *param = name + n;
            return l;
        }
    }
    if (mdb_query_resolve_field(level, name, NULL))
        return (int)level;
    for (int l = (int)level - 1; l >= 0; l--) {
        const char *path = mdb_query_resolve_field((mdb_query_level_t)l, name, NULL);
        if (path && strcmp(path, "_id") != 0)
            return l;
    }
    return -1;
}

/* Appends each document's _id to an $in array (mdb_ops_find callback). */
typedef struct {
    bson_t *arr;
    uint32_t n;
    const char *level;
} ids_acc_t;

static bool append_id(const bson_t *doc, void *ud, mdb_error_t *err)
{
    ids_acc_t *a = ud;
    bson_iter_t it;
    char key[16];
    const char *k;
    if (!bson_iter_init_find(&it, doc, "_id"))
        return true;
    if (a->n >= FACETS_MAX_PARENT_IDS) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "the %s filter matches more than %d documents; narrow it", a->level,
                      FACETS_MAX_PARENT_IDS);
        return false;
    }
    bson_uint32_to_string(a->n++, &k, key, sizeof key);
    bson_append_iter(a->arr, k, -1, &it);
    return true;
}

/* {$and: [own filter, {study_id: {$in: [...]}}, ...]} into match. */
static bool effective_match(api_ctx_t *ctx, mdb_query_level_t level, mdb_query_t *own, mdb_query_t **parents,
                            bson_t *match, mdb_error_t *err)
{
    bson_t and, c, sub, in;
    uint32_t n = 0;
    char key[16];
    const char *k;
    bson_init(match);
    bson_append_array_begin(match, "$and", 4, &and);
    bson_uint32_to_string(n++, &k, key, sizeof key);
    bson_append_document(&and, k, -1, mdb_query_filter(own));
    for (int l = 0; l < (int)level; l++) {
        if (!parents[l])
            continue;
        bson_t opts = BSON_INITIALIZER, proj;
        bson_append_document_begin(&opts, "projection", -1, &proj);
        BSON_APPEND_INT32(&proj, "_id", 1);
        bson_append_document_end(&opts, &proj);
        if (ctx->query_time_ms > 0)
            BSON_APPEND_INT64(&opts, "maxTimeMS", ctx->query_time_ms);
        bson_uint32_to_string(n++, &k, key, sizeof key);
        bson_append_document_begin(&and, k, -1, &c);
        bson_append_document_begin(&c, l == MDB_QUERY_STUDIES ? "study_id" : "series_id", -1, &sub);
        bson_append_array_begin(&sub, "$in", 3, &in);
        ids_acc_t acc = {.arr = &in, .n = 0, .level = mdb_query_level_name((mdb_query_level_t)l)};
        bool ok = mdb_ops_find(ctx->mongo, acc.level, mdb_query_filter(parents[l]), &opts, append_id, &acc, err);
        bson_append_array_end(&sub, &in);
        bson_append_document_end(&c, &sub);
        bson_append_document_end(&and, &c);
        bson_destroy(&opts);
        if (!ok) {
            bson_append_array_end(match, &and);
            return false;
        }
    }
    bson_append_array_end(match, &and);
    return true;
}

/* Keeps the aggregation's single result document (mdb_ops_aggregate callback). */
static bool keep_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    bson_t **out = ud;
    if (*out)
        return true;
    if (!(*out = bson_copy(doc))) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

static bool aggregate_one(api_ctx_t *ctx, const char *coll, const bson_t *pipeline, bson_t **reply,
                          mdb_error_t *err)
{
    bson_t opts = BSON_INITIALIZER;
    if (ctx->query_time_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", ctx->query_time_ms);
    *reply = NULL;
    bool ok = mdb_ops_aggregate(ctx->mongo, coll, pipeline, &opts, keep_doc, reply, err);
    bson_destroy(&opts);
    if (ok && !*reply) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "the facet aggregation returned no document");
        ok = false;
    }
    return ok;
}

/* Reads level, fields, options and filters; false with res filled (400). */
static bool parse_request(const api_request_t *req, api_response_t *res, mdb_query_level_t *level,
                          mdb_facets_t **facets, mdb_query_t **own, mdb_query_t **parents, int64_t max_limit)
{
    mdb_error_t err = {0};
    const char *lv = api_arg(req, "level");
    const char *fields = api_arg(req, "fields");
    *level = MDB_QUERY_STUDIES;
    if (lv && (!mdb_query_level_parse(lv, level) || strcmp(lv, mdb_query_level_name(*level)) != 0)) {
        api_respond_error(res, 400, "bad_parameter", "'level' must be studies, series or instances, got '%.64s'", lv);
        return false;
    }
    if (!fields) {
        api_respond_error(res, 400, "bad_parameter",
                          "'fields' is required: the fields to count, e.g. fields=modality,study_date");
        return false;
    }
    if (!(*facets = mdb_facets_new(*level)) || !(*own = mdb_query_new(*level, max_limit))) {
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return false;
    }
    if (!mdb_facets_set_fields(*facets, fields, &err)) {
        api_respond_error(res, 400, "bad_parameter", "%s", err.message);
        return false;
    }
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key, *v = req->args[i].value;
        if (!strcmp(k, "level") || !strcmp(k, "fields") || !strcmp(k, "_"))
            continue;
        if (mdb_facets_is_option(k)) {
            if (!mdb_facets_set_option(*facets, k, v, &err)) {
                api_respond_error(res, 400, "bad_parameter", "%s", err.message);
                return false;
            }
            continue;
        }
        if (mdb_query_is_page_param(k) || !strcmp(k, "total") || !strcmp(k, "format")) {
            api_respond_error(res, 400, "bad_parameter", "'%.32s' is a list parameter; facets count every match",
                              k);
            return false;
        }
        if (!mdb_query_add_param(*own, k, v, &err)) {
            api_respond_error(res, 400, "bad_parameter", "%s", err.message);
            return false;
        }
        const char *pk;
        int l = filter_level(*level, k, &pk);
        if (l < 0) {
            api_respond_error(res, 400, "bad_parameter", "filter '%.64s' is not supported by /api/facets", k);
            return false;
        }
        if (l == (int)*level)
            continue;
        if (!parents[l] && !(parents[l] = mdb_query_new((mdb_query_level_t)l, max_limit))) {
            api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
            return false;
        }
        if (!mdb_query_add_param(parents[l], pk, v, &err)) {
            api_respond_error(res, 400, "bad_parameter", "%s", err.message);
            return false;
        }
    }
    return true;
}

void api_h_facets(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    mdb_query_level_t level;
    mdb_facets_t *facets = NULL;
    mdb_query_t *own = NULL, *parents[MDB_QUERY_LEVEL_COUNT] = {0};
    bson_t match = BSON_INITIALIZER, pipeline = BSON_INITIALIZER;
    bson_t *reply = NULL;
    bool second = false;
    json_t *out = NULL;

    if (!parse_request(req, res, &level, &facets, &own, parents, ctx->max_limit))
        goto done;
    bson_destroy(&match);
    if (!effective_match(ctx, level, own, parents, &match, &err))
        goto db_error;
    bson_destroy(&pipeline);
    if (!mdb_facets_pipeline(facets, &match, &pipeline, &err) ||
        !aggregate_one(ctx, mdb_query_level_name(level), &pipeline, &reply, &err) ||
        !mdb_facets_read(facets, reply, &second, &err))
        goto db_error;
    if (second) {
        bson_destroy(reply);
        reply = NULL;
        bson_destroy(&pipeline);
        if (!mdb_facets_bins_pipeline(facets, &match, &pipeline, &err) ||
            !aggregate_one(ctx, mdb_query_level_name(level), &pipeline, &reply, &err) ||
            !mdb_facets_read_bins(facets, reply, &err))
            goto db_error;
    }
    if (!(out = mdb_facets_result(facets))) {
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        goto done;
    }
    char *explain = mdb_query_filter_json(own);
    json_t *ex = explain ? json_loads(explain, 0, NULL) : NULL;
    bson_free(explain);
    if (ex)
        json_object_set_new(out, "explain", json_pack("{s:s, s:o}", "collection", mdb_query_level_name(level), "filter", ex));
    json_object_set_new(out, "aggregations", json_integer(second ? 2 : 1));
    api_respond_json(res, 200, out);
    goto done;
db_error:
    api_respond_mdb_error(res, &err);
done:
    if (reply)
        bson_destroy(reply);
    bson_destroy(&pipeline);
    bson_destroy(&match);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        mdb_query_destroy(parents[l]);
    mdb_query_destroy(own);
    mdb_facets_destroy(facets);
}
