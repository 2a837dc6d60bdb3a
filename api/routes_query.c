/* routes_query.c: the catalogue read endpoints. Lists (GET /api/studies,
 * /api/series, /api/instances) and the raw query (POST /api/query) are thin
 * layers over mdb_query, the same builder the CLI uses, so a filter means the
 * same thing in every front end. Detail routes add the children a researcher
 * looks at next: a study's series, a page of a series' instances.
 * /api/fields describes what can be filtered: promoted fields and the
 * metadata keywords present, with counts and the commonest values.
 * Everything is read from the database: a database error answers 4xx/5xx
 * with the JSON error body, never an empty page. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_private.h"
#include "mdb_ops.h"
#include "mdb_query.h"

#define FIELDS_SAMPLE 10000          /* studies, series */
#define FIELDS_SAMPLE_INSTANCES 2000 /* instance documents are the largest and most numerous */
#define FIELDS_CACHE_MS 30000
#define FIELDS_TOP_VALUES 20

/* Non-filter arguments every list route accepts besides limit/offset/sort/fields. */
static bool is_meta_arg(const char *key)
{
    return !strcmp(key, "total") || !strcmp(key, "_");
}

static bool want_total(const api_request_t *req, api_response_t *res, bool *out)
{
    const char *t = api_arg(req, "total");
    *out = true;
    if (!t)
        return true;
    if (!strcmp(t, "false") || !strcmp(t, "0")) {
        *out = false;
        return true;
    }
    if (!strcmp(t, "true") || !strcmp(t, "1"))
        return true;
    api_respond_error(res, 400, "bad_parameter", "'total' expects true or false, got '%.32s'", t);
    return false;
}

/* Attach the filter the server actually ran, and the raw query that
 * matches the same rows ("Open as raw query"; raw_refused says why there
 * is none). */
static void add_explain(json_t *out, const mdb_query_t *q)
{
    mdb_error_t err = {0};
    json_t *raw = mdb_query_raw_json(q, &err);
    if (raw)
        json_object_set_new(out, "raw", raw);
    else
        json_object_set_new(out, "raw_refused", json_string(err.message));
    char *s = mdb_query_filter_json(q);
    if (!s)
        return;
    json_t *f = json_loads(s, 0, NULL);
    bson_free(s);
    if (f)
        json_object_set_new(out, "explain",
                            json_pack("{s:s, s:o}", "collection", mdb_query_collection(q), "filter", f));
}

/* Every answer comes from the database; a database error is a 4xx/5xx
 * with the error body, never an empty page. */
static void run_and_respond(api_ctx_t *ctx, api_response_t *res, mdb_query_t *q, bool total)
{
    mdb_error_t err = {0};
    json_t *out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, !total, &err);
    if (!out) {
        api_respond_mdb_error(res, &err);
        return;
    }
    add_explain(out, q);
    api_respond_json(res, 200, out);
}

void api_h_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level)
{
    mdb_error_t err = {0};
    bool total;
    if (api_arg(req, "format")) { /* every matching row as a file: routes_export.c */
        api_h_export_list(ctx, req, res, level);
        return;
    }
    if (!want_total(req, res, &total))
        return;
    mdb_query_t *q = mdb_query_new((mdb_query_level_t)level, ctx->max_limit);
    if (!q) {
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key;
        if (is_meta_arg(k))
            continue;
        if (!mdb_query_add_param(q, k, req->args[i].value, &err)) {
            api_respond_error(res, 400, "bad_parameter", "%s", err.message);
            goto done;
        }
    }
    run_and_respond(ctx, res, q, total);
done:
    mdb_query_destroy(q);
}

/* Find one document of a level by _id; NULL (res filled) when missing or on error. */
static json_t *find_one(api_ctx_t *ctx, api_response_t *res, mdb_query_level_t level, const char *uid)
{
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(level, ctx->max_limit);
    json_t *out = NULL, *doc = NULL;
    if (!q || !mdb_query_add_param(q, "uid", uid, &err) || !mdb_query_set_limit(q, 1, &err)) {
        api_respond_error(res, 400, "bad_uid", "%s", err.message[0] ? err.message : "out of memory");
        goto done;
    }
    if (!(out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, true, &err))) {
        api_respond_mdb_error(res, &err);
        goto done;
    }
    doc = json_array_get(json_object_get(out, "items"), 0);
    if (!doc) {
        api_respond_error(res, 404, "not_found", "no %s with UID %s", mdb_query_level_name(level), uid);
        goto done;
    }
    json_incref(doc);
done:
    json_decref(out);
    mdb_query_destroy(q);
    return doc;
}

/* A child list through mdb_query: parent field = uid, plus paging args. */
static json_t *children(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, mdb_query_level_t level,
                        const char *parent_field, const char *uid, const char *sort, const char *fields,
                        int64_t def_limit)
{
    mdb_error_t err = {0};
    json_t *out = NULL;
    mdb_query_t *q = mdb_query_new(level, ctx->max_limit);
    if (!q) {
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return NULL;
    }
    bool ok = mdb_query_add_param(q, parent_field, uid, &err) && mdb_query_set_sort(q, sort, &err) &&
              mdb_query_set_limit(q, def_limit < ctx->max_limit ? def_limit : ctx->max_limit, &err) &&
              (!fields || mdb_query_set_fields(q, fields, &err));
    for (size_t i = 0; ok && i < req->nargs; i++) {
        const char *k = req->args[i].key;
        if (mdb_query_is_page_param(k))
            ok = mdb_query_add_param(q, k, req->args[i].value, &err);
    }
    if (!ok) {
        api_respond_error(res, 400, "bad_parameter", "%s", err.message);
        goto done;
    }
    if (!(out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, false, &err)))
        api_respond_mdb_error(res, &err);
done:
    mdb_query_destroy(q);
    return out;
}

void api_h_get_one(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level, const char *uid)
{
    json_t *doc = find_one(ctx, res, (mdb_query_level_t)level, uid);
    if (!doc)
        return;
    json_t *kids = NULL;
    if (level == MDB_QUERY_STUDIES) {
        /* The series summary from the series documents themselves (exact counts). */
        kids = children(ctx, req, res, MDB_QUERY_SERIES, "study_id", uid, "series_number",
                        "series_number,series_description,modality,body_part_examined,slice_thickness,"
                        "instance_count,series_date,manufacturer,collection_ids",
                        1000);
        if (!kids)
            goto fail;
        json_object_set(doc, "series", json_object_get(kids, "items"));
        json_object_set(doc, "series_total", json_object_get(kids, "total"));
    } else if (level == MDB_QUERY_SERIES) {
        /* The series is worth showing even when its instance page cannot be
         * read in time (a database without usable indexes): the page then
         * carries the error instead of failing the whole answer. */
        api_response_t sub;
        memset(&sub, 0, sizeof sub);
        kids = children(ctx, req, &sub, MDB_QUERY_INSTANCES, "series_id", uid, "instance_number",
                        "instance_number,sop_class_uid,acquisition_datetime,paths,study_id,series_id", 100);
        if (!kids && sub.status == 400) {
            res->status = 0;
            api_respond_bytes(res, sub.status, sub.content_type, sub.body, sub.body_len);
            free(sub.body);
            goto fail;
        }
        if (kids)
            json_object_set_new(doc, "instances",
                                json_pack("{s:O, s:O, s:O, s:O}", "total", json_object_get(kids, "total"), "limit",
                                          json_object_get(kids, "limit"), "offset", json_object_get(kids, "offset"),
                                          "items", json_object_get(kids, "items")));
        else
            json_object_set_new(doc, "instances", json_loadb(sub.body ? sub.body : "{}", sub.body_len, 0, NULL));
        free(sub.body);
    }
    json_decref(kids);
    api_respond_json(res, 200, doc);
    return;
fail:
    json_decref(doc);
}

void api_h_query(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    json_t *body = api_request_json(req, res);
    if (!body)
        return;
    mdb_query_t *q = mdb_query_new_raw(body, "studies", ctx->max_limit, &err);
    json_decref(body);
    if (!q) {
        api_respond_error(res, 400, "bad_query", "%s", err.message);
        return;
    }
    json_t *out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, false, &err);
    if (!out) {
        api_respond_mdb_error(res, &err);
    } else {
        json_object_set_new(out, "collection", json_string(mdb_query_collection(q)));
        api_respond_json(res, 200, out);
    }
    mdb_query_destroy(q);
}

/* ---- /api/fields ---- */

static void count_key(json_t *map, const char *key)
{
    json_t *c = json_object_get(map, key);
    if (c)
        json_integer_set(c, json_integer_value(c) + 1);
    else
        json_object_set_new(map, key, json_integer(1));
}

/* Count a scalar value (strings and numbers) of a promoted field, stopping
 * once a field shows too many distinct values to be a useful list. */
static void count_value(json_t *values, const char *field, const bson_iter_t *it)
{
    char buf[128];
    const char *v = NULL;
    if (BSON_ITER_HOLDS_UTF8(it)) {
        uint32_t len;
        v = bson_iter_utf8(it, &len);
        if (len > 64)
            return;
    } else if (BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_DOUBLE(it)) {
        snprintf(buf, sizeof buf, "%g", bson_iter_as_double(it));
        v = buf;
    } else {
        return;
    }
    json_t *m = json_object_get(values, field);
    if (!m) {
        m = json_object();
        json_object_set_new(values, field, m);
    }
    if (json_is_null(m))
        return;
    if (!json_object_get(m, v) && json_object_size(m) >= 200) {
        json_object_set_new(values, field, json_null()); /* high cardinality: no list */
        return;
    }
    count_key(m, v);
}

static int cmp_count_desc(const void *a, const void *b)
{
    json_int_t ca = json_integer_value(json_object_get(*(json_t *const *)a, "count"));
    json_int_t cb = json_integer_value(json_object_get(*(json_t *const *)b, "count"));
    if (ca != cb)
        return ca < cb ? 1 : -1;
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "value")),
                  json_string_value(json_object_get(*(json_t *const *)b, "value")));
}

/* {value: count} → [{value, count}] sorted by count, at most n. */
static json_t *top_values(json_t *m, size_t n)
{
    size_t total = json_object_size(m), i = 0;
    json_t **v = calloc(total ? total : 1, sizeof *v);
    json_t *arr = json_array();
    const char *k;
    json_t *c;
    if (!v || !arr) {
        free(v);
        return arr;
    }
    json_object_foreach(m, k, c) v[i++] = json_pack("{s:s, s:O}", "value", k, "count", c);
    qsort(v, total, sizeof *v, cmp_count_desc);
    for (i = 0; i < total; i++) {
        if (i < n)
            json_array_append(arr, v[i]);
        json_decref(v[i]);
    }
    free(v);
    return arr;
}

/* Count the top-level fields, metadata keywords and scalar values of one document. */
static void tally(const bson_t *doc, json_t *top, json_t *meta, json_t *values)
{
    bson_iter_t it, sub;
    if (!bson_iter_init(&it, doc))
        return;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        if (!strcmp(key, "metadata") && BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &sub)) {
            while (bson_iter_next(&sub))
                count_key(meta, bson_iter_key(&sub));
            continue;
        }
        count_key(top, key);
        if (BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &sub)) {
            while (bson_iter_next(&sub))
                count_value(values, key, &sub);
        } else {
            count_value(values, key, &it);
        }
    }
}

/* Tallies one sampled document (mdb_ops_find callback). */
typedef struct {
    json_t *top, *meta, *values;
    int64_t scanned;
} tally_acc_t;

static bool tally_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    (void)err;
    tally_acc_t *a = ud;
    a->scanned++;
    tally(doc, a->top, a->meta, a->values);
    return true;
}

/* A sample of the level's documents from the database (the first
 * FIELDS_SAMPLE_* in natural order, one find with the query time limit),
 * tallied; the total is the exact count (countDocuments; the server's
 * estimate is not used: DocumentDB's comes from PostgreSQL statistics and
 * lags behind loads). When the collection is not larger than the sample
 * (studies and series of most catalogues) every count is exact and
 * "sampled" is false. */
static json_t *compute_fields(api_ctx_t *ctx, mdb_query_level_t level, mdb_error_t *err)
{
    json_t *out = NULL, *top = json_object(), *meta = json_object(), *values = json_object();
    int64_t sample = level == MDB_QUERY_INSTANCES ? FIELDS_SAMPLE_INSTANCES : FIELDS_SAMPLE;
    bson_t *opts = BCON_NEW("limit", BCON_INT64(sample), "maxTimeMS", BCON_INT64(ctx->query_time_ms));
    bson_t *count_opts = BCON_NEW("maxTimeMS", BCON_INT64(ctx->query_time_ms));
    const char *coll = mdb_query_level_name(level);
    int64_t total = 0;
    size_t nf;
    const mdb_qfield_t *fields = mdb_query_fields(level, &nf);
    tally_acc_t acc = {.top = top, .meta = meta, .values = values, .scanned = 0};

    if (!top || !meta || !values) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        goto done;
    }
    if (!mdb_ops_count(ctx->mongo, coll, NULL, count_opts, &total, err) ||
        !mdb_ops_find(ctx->mongo, coll, NULL, opts, tally_doc, &acc, err))
        goto done;
    int64_t scanned = acc.scanned;
    if (total < scanned) /* documents added between the count and the sample */
        total = scanned;

    json_t *promoted = json_array(), *metadata = json_array();
    for (size_t i = 0; i < nf; i++) {
        const char *name = fields[i].name;
        static const char *const type_names[] = {"string", "date", "number", "any"};
        json_t *f = json_pack("{s:s, s:s, s:s, s:I}", "name", name, "type", type_names[fields[i].type], "help",
                              fields[i].help ? fields[i].help : "", "count",
                              (json_int_t)json_integer_value(json_object_get(top, name)));
        json_object_set_new(f, "aliases", json_string(fields[i].aliases ? fields[i].aliases : ""));
        json_t *vals = json_object_get(values, name);
        /* Studies list their series' modalities under `modalities`. */
        if (level == MDB_QUERY_STUDIES && !strcmp(name, "modality") && json_object_get(values, "modalities"))
            vals = json_object_get(values, "modalities");
        if (json_is_object(vals) && fields[i].type != MDB_QFIELD_DATE && strcmp(name, "_id") != 0)
            json_object_set_new(f, "values", top_values(vals, FIELDS_TOP_VALUES));
        json_array_append_new(promoted, f);
    }
    const char *k;
    json_t *c;
    void *tmp;
    json_object_foreach_safe(meta, tmp, k, c)
    {
        json_array_append_new(metadata, json_pack("{s:s, s:O}", "keyword", k, "count", c));
    }
    out = json_pack("{s:s, s:o, s:o, s:I, s:I, s:b}", "collection", mdb_query_level_name(level), "promoted", promoted,
                    "metadata", metadata, "scanned", (json_int_t)scanned, "total", (json_int_t)total, "sampled",
                    scanned < total);
    if (!out)
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    bson_destroy(opts);
    bson_destroy(count_opts);
    json_decref(top);
    json_decref(meta);
    json_decref(values);
    return out;
}

void api_h_fields(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    const char *c = api_arg(req, "collection");
    mdb_query_level_t level = MDB_QUERY_STUDIES;
    if (c && (!mdb_query_level_parse(c, &level) || strcmp(c, mdb_query_level_name(level)) != 0)) {
        api_respond_error(res, 400, "bad_parameter", "collection must be studies, series or instances, got '%.64s'", c);
        return;
    }
    for (size_t i = 0; i < req->nargs; i++) {
        if (strcmp(req->args[i].key, "collection") != 0 && strcmp(req->args[i].key, "_") != 0) {
            api_respond_error(res, 400, "bad_parameter", "unknown parameter '%.64s' (only 'collection')",
                              req->args[i].key);
            return;
        }
    }
    int64_t now = api_now_ms();
    pthread_mutex_lock(&ctx->fields_lock);
    json_t *cached = ctx->fields_cache[level].value;
    if (cached && now - ctx->fields_cache[level].at_ms < FIELDS_CACHE_MS) {
        json_incref(cached);
        pthread_mutex_unlock(&ctx->fields_lock);
        api_respond_json(res, 200, cached);
        return;
    }
    pthread_mutex_unlock(&ctx->fields_lock);
    json_t *out = compute_fields(ctx, level, &err);
    if (!out) {
        api_respond_mdb_error(res, &err);
        return;
    }
    pthread_mutex_lock(&ctx->fields_lock);
    json_decref(ctx->fields_cache[level].value);
    ctx->fields_cache[level].value = json_incref(out);
    ctx->fields_cache[level].at_ms = now;
    pthread_mutex_unlock(&ctx->fields_lock);
    api_respond_json(res, 200, out);
}
