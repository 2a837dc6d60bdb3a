/* routes_facets.c: GET /api/facets — distributions of the cohort a list
 * shows. The request carries the list's own filters (parsed by mdb_query,
 * so a filter means here what it means on /api/studies, /api/series,
 * /api/instances) plus level, fields and the facet options of mdb_facets.
 * The counts come from the database: one aggregation ($match + $facet),
 * two when a numeric field has more distinct values than the first one
 * lists (mdb_facets.h).
 *
 * A filter on a parent level's field (series?study_date=..., study.<field>)
 * is applied the way the list applies it: mdb_query_effective_filter looks
 * the parent documents' _ids up first, and the facet's $match gets
 * {study_id|series_id: {$in: ids}}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_private.h"
#include "mdb_facets.h"
#include "mdb_ops.h"
#include "mdb_query.h"

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

static bool aggregate_one(api_ctx_t *ctx, const char *coll, const bson_t *pipeline, bson_t **reply, mdb_error_t *err)
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
                          mdb_facets_t **facets, mdb_query_t **own, int64_t max_limit)
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
            api_respond_error(res, 400, "bad_parameter", "'%.32s' is a list parameter; facets count every match", k);
            return false;
        }
        if (!mdb_query_add_param(*own, k, v, &err)) {
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
    mdb_query_t *own = NULL;
    bson_t match = BSON_INITIALIZER, pipeline = BSON_INITIALIZER;
    bson_t *reply = NULL;
    bool second = false, empty = false;
    json_t *out = NULL;

    if (!parse_request(req, res, &level, &facets, &own, ctx->max_limit))
        goto done;
    bson_destroy(&match);
    if (!mdb_query_effective_filter(ctx->mongo, own, ctx->query_time_ms, &match, &empty, &err))
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
        json_object_set_new(out, "explain",
                            json_pack("{s:s, s:o}", "collection", mdb_query_level_name(level), "filter", ex));
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
    mdb_query_destroy(own);
    mdb_facets_destroy(facets);
}
