/* routes_export.c: cohort export over HTTP, through mdb_export (the builder
 * `metadb export` uses, so both give the same bytes).
 *
 *   GET /api/{studies,series,instances}?format=csv|json|ndjson&<filters>&fields=&sort=[&limit=N]
 *       every matching row (not a page), streamed, with a Content-Disposition
 *       file name; limit, when given, caps the rows (no upper bound).
 *   GET /api/export/manifest?level=studies|series|instances&<filters>[&format=csv|ndjson|json]
 *       the cohort's file list: one line per file (path, SOP/series/study UID, size).
 *   GET /api/export/sidecar?level=...&<filters>   (also /api/export/manifest.json)
 *       JSON describing the cohort: the query, counts, the catalogue's state,
 *       metadb's version and the time, for a training run to cite.
 *
 * A stream is produced by a thread of its own: it runs the export and hands
 * each chunk (at most MDB_EXPORT_CHUNK bytes plus one row) to the server's
 * read callback through a one-chunk hand-over, so a slow client slows the
 * cursor instead of filling memory. The handler waits for the first chunk
 * (or the end) before answering: a filter the server refuses, a database
 * that cannot be reached or a parent filter that matches too much is a
 * normal 4xx/5xx error, not a cut download. A failure after the first bytes
 * aborts the connection (the client sees an incomplete body, never a
 * silently short file). The request's database slot stays taken until the
 * stream ends (api_respond_stream); the export itself reads over two
 * connections of its own (own_pool), never two of the shared pool. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_private.h"
#include "mdb_export.h"
#include "mdb_log.h"
#include "mdb_query.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *chunk; /* the chunk in transit: [off, len) not yet read */
    size_t len, off, cap;
    bool started;  /* a first chunk was handed over */
    bool finished; /* the producer ended (ok or failed) */
    bool failed;
    bool cancelled; /* the client went away or the response was replaced */
    mdb_error_t err;
    /* the job */
    api_ctx_t *ctx;
    mdb_query_t *q;
    bool manifest;
    mdb_export_format_t format;
    int64_t max_rows;
    int64_t rows;
    int64_t t0;
    pthread_t th;
} xstream_t;

static void xstream_free(xstream_t *x)
{
    if (!x)
        return;
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cv);
    mdb_query_destroy(x->q);
    free(x->chunk);
    free(x);
}

/* Producer side: wait until the previous chunk was read, then hand this one over. */
static bool hand_over(const char *data, size_t len, void *ud, mdb_error_t *err)
{
    xstream_t *x = ud;
    pthread_mutex_lock(&x->mu);
    while (x->off < x->len && !x->cancelled)
        pthread_cond_wait(&x->cv, &x->mu);
    if (x->cancelled) {
        pthread_mutex_unlock(&x->mu);
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "the client went away");
        return false;
    }
    if (len > x->cap) {
        char *n = realloc(x->chunk, len);
        if (!n) {
            pthread_mutex_unlock(&x->mu);
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
            return false;
        }
        x->chunk = n;
        x->cap = len;
    }
    memcpy(x->chunk, data, len);
    x->len = len;
    x->off = 0;
    x->started = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    return true;
}

/* The export's own two connections (the read pool's URI and database): its
 * cursor stays open for the whole stream while each batch's parents are read
 * beside it, and taking both from the shared pool could leave every pooled
 * client held by an open cursor waiting for a second one. */
static mdb_mongo_t *own_pool(api_ctx_t *ctx, mdb_error_t *err)
{
    const mdb_config_t *cfg = api_ctx_config(ctx);
    const char *uri = mdb_config_get(cfg, "api.mongo_uri");
    if (!uri || !*uri)
        uri = mdb_config_get(cfg, "mongo.uri");
    return mdb_mongo_new(uri, mdb_config_get(cfg, "mongo.db"), 2, err);
}

static void *produce(void *arg)
{
    xstream_t *x = arg;
    mdb_error_t err = {0};
    int64_t files = 0, bytes = 0;
    mdb_mongo_t *m = own_pool(x->ctx, &err);
    bool ok =
        m &&
        (x->manifest
             ? mdb_export_manifest_run(m, x->q, x->format, x->ctx->query_time_ms, hand_over, x, &files, &bytes, &err)
             : mdb_export_run(m, x->q, x->format, x->ctx->query_time_ms, x->max_rows, hand_over, x, &x->rows, &err));
    mdb_mongo_destroy(m);
    pthread_mutex_lock(&x->mu);
    x->finished = true;
    x->failed = !ok;
    x->err = err;
    pthread_cond_broadcast(&x->cv);
    bool cancelled = x->cancelled;
    pthread_mutex_unlock(&x->mu);
    if (!ok && !cancelled)
        MDB_LOG(MDB_LOG_WARN, "export of %s failed: %s", mdb_query_collection(x->q), err.message);
    else if (ok)
        MDB_LOG(MDB_LOG_INFO, "export of %s: %lld %s in %lld ms", mdb_query_collection(x->q),
                (long long)(x->manifest ? files : x->rows), x->manifest ? "files" : "rows",
                (long long)(api_now_ms() - x->t0));
    return NULL;
}

/* Server side (the connection's thread). */
static ssize_t xstream_read(void *cls, char *buf, size_t max)
{
    xstream_t *x = cls;
    pthread_mutex_lock(&x->mu);
    while (x->off >= x->len && !x->finished)
        pthread_cond_wait(&x->cv, &x->mu);
    ssize_t n;
    if (x->off < x->len) {
        size_t k = x->len - x->off < max ? x->len - x->off : max;
        memcpy(buf, x->chunk + x->off, k);
        x->off += k;
        if (x->off >= x->len)
            pthread_cond_broadcast(&x->cv);
        n = (ssize_t)k;
    } else {
        n = x->failed ? -1 : 0; /* a failed export aborts the connection */
    }
    pthread_mutex_unlock(&x->mu);
    return n;
}

static void xstream_done(void *cls)
{
    xstream_t *x = cls;
    pthread_mutex_lock(&x->mu);
    x->cancelled = true;
    pthread_cond_broadcast(&x->cv);
    pthread_mutex_unlock(&x->mu);
    pthread_join(x->th, NULL);
    xstream_free(x);
}

/* Start the export of q (ownership taken) and answer: the stream once the
 * first chunk is there, or the error when it failed before. */
static void start_stream(api_ctx_t *ctx, api_response_t *res, mdb_query_t *q, bool manifest, mdb_export_format_t f,
                         int64_t max_rows, const char *name)
{
    xstream_t *x = calloc(1, sizeof *x);
    if (!x) {
        mdb_query_destroy(q);
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    x->ctx = ctx;
    x->q = q;
    x->manifest = manifest;
    x->format = f;
    x->max_rows = max_rows;
    x->t0 = api_now_ms();
    if (pthread_create(&x->th, NULL, produce, x) != 0) {
        xstream_free(x);
        api_respond_error(res, 503, "unavailable", "cannot start the export");
        return;
    }
    pthread_mutex_lock(&x->mu);
    while (!x->started && !x->finished)
        pthread_cond_wait(&x->cv, &x->mu);
    bool failed_early = !x->started && x->failed;
    pthread_mutex_unlock(&x->mu);
    if (failed_early) {
        pthread_join(x->th, NULL);
        mdb_error_t err = x->err;
        xstream_free(x);
        api_respond_mdb_error(res, &err);
        return;
    }
    char disp[200], stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(disp, sizeof disp, "attachment; filename=\"metadb-%s-%s.%s\"", name, stamp, mdb_export_format_name(f));
    api_respond_stream(res, 200, mdb_export_content_type(f), -1, xstream_read, xstream_done, x);
    api_response_header(res, "Content-Disposition", disp);
    api_response_header(res, "Cache-Control", "no-store");
}

/* Arguments that are not filters in an export request. */
static bool skip_arg(const char *k, bool manifest)
{
    return !strcmp(k, "format") || !strcmp(k, "_") || !strcmp(k, "total") || !strcmp(k, "limit") ||
           (manifest && !strcmp(k, "level"));
}

/* A query from the request's filter arguments; NULL (res filled) on a bad one. */
static mdb_query_t *query_from_args(api_ctx_t *ctx, const api_request_t *req, api_response_t *res,
                                    mdb_query_level_t level, bool manifest)
{
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new(level, ctx->max_limit);
    if (!q) {
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return NULL;
    }
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key;
        if (skip_arg(k, manifest))
            continue;
        if (manifest && (!strcmp(k, "fields") || !strcmp(k, "offset"))) {
            api_respond_error(res, 400, "bad_parameter",
                              "'%s' does not apply to a manifest (its columns are fixed: path, sop_instance_uid, "
                              "series_instance_uid, study_instance_uid, size)",
                              k);
            goto fail;
        }
        if (!mdb_query_add_param(q, k, req->args[i].value, &err)) {
            api_respond_error(res, 400, "bad_parameter", "%s", err.message);
            goto fail;
        }
    }
    return q;
fail:
    mdb_query_destroy(q);
    return NULL;
}

static bool parse_format(const api_request_t *req, api_response_t *res, mdb_export_format_t *f)
{
    const char *s = api_arg(req, "format");
    *f = MDB_EXPORT_CSV;
    if (!s || mdb_export_format_parse(s, f))
        return true;
    api_respond_error(res, 400, "bad_parameter", "'format' must be csv, json or ndjson, got '%.32s'", s);
    return false;
}

void api_h_export_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level)
{
    mdb_export_format_t f;
    int64_t max_rows;
    if (!parse_format(req, res, &f) || !api_arg_int(req, "limit", 0, 1, INT64_MAX, &max_rows, res))
        return;
    mdb_query_t *q = query_from_args(ctx, req, res, (mdb_query_level_t)level, false);
    if (!q)
        return;
    start_stream(ctx, res, q, false, f, max_rows, mdb_query_level_name((mdb_query_level_t)level));
}

/* level= of a manifest or sidecar request. */
static bool manifest_level(const api_request_t *req, api_response_t *res, mdb_query_level_t *level)
{
    const char *l = api_arg(req, "level");
    if (!l) {
        api_respond_error(res, 400, "bad_parameter", "'level' is required: studies, series or instances");
        return false;
    }
    if (!mdb_query_level_parse(l, level)) {
        api_respond_error(res, 400, "bad_parameter", "'level' must be studies, series or instances, got '%.32s'", l);
        return false;
    }
    return true;
}

void api_h_export_manifest(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    mdb_query_level_t level;
    mdb_export_format_t f;
    if (!manifest_level(req, res, &level) || !parse_format(req, res, &f))
        return;
    if (api_arg(req, "limit")) {
        api_respond_error(res, 400, "bad_parameter", "a manifest lists every file of the cohort: no 'limit'");
        return;
    }
    mdb_query_t *q = query_from_args(ctx, req, res, level, true);
    if (!q)
        return;
    mdb_query_t *iq = mdb_export_manifest_query(q, &err);
    mdb_query_destroy(q);
    if (!iq) {
        api_respond_mdb_error(res, &err);
        return;
    }
    char name[48];
    snprintf(name, sizeof name, "manifest-%s", mdb_query_level_name(level));
    start_stream(ctx, res, iq, true, f, 0, name);
}

void api_h_export_sidecar(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    mdb_query_level_t level;
    if (!manifest_level(req, res, &level))
        return;
    if (api_arg(req, "format") || api_arg(req, "limit")) {
        api_respond_error(res, 400, "bad_parameter",
                          "the sidecar is JSON and describes the whole cohort: no "
                          "'format' or 'limit'");
        return;
    }
    mdb_query_t *q = query_from_args(ctx, req, res, level, true);
    if (!q)
        return;
    json_t *params = json_array();
    for (size_t i = 0; params && i < req->nargs; i++)
        if (!skip_arg(req->args[i].key, true))
            json_array_append_new(params, json_pack("[s, s]", req->args[i].key, req->args[i].value));
    json_t *out = mdb_export_sidecar(api_ctx_mongo(ctx), q, params, ctx->query_time_ms, &err);
    json_decref(params);
    mdb_query_destroy(q);
    if (!out) {
        api_respond_mdb_error(res, &err);
        return;
    }
    api_respond_json(res, 200, out);
}
