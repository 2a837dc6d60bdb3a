/* api/nl.c: GET /api/nl?q=<sentence> - natural-language search over HTTP.
 *
 * Answers {query, level, filter, joins, explanation, backend, message?,
 * ignored, total, limit, offset, items}: the translation is always shown
 * with the results, so the user can check how the sentence was read.
 * Parameters: q (required), limit, offset, reference_date (YYYY-MM-DD or
 * YYYYMMDD; default today, for "last 5 years"), backend=offline (skip a
 * configured LLM), explain=1 (translate only, run nothing).
 *
 * The vocabulary (fields and names present in the catalogue) is read from
 * the database and cached for NL_VOCAB_TTL_MS; threads share one read-only
 * copy through a reference count. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "mdb_log.h"
#include "mdb_nl.h"

#define NL_VOCAB_TTL_MS 30000
#define NL_VOCAB_SAMPLE 200

typedef struct {
    mdb_nl_vocab_t *vocab;
    int refs;
    int64_t built_ms;
    const mdb_mongo_t *owner;
} vocab_ref_t;

static pthread_mutex_t vocab_lock = PTHREAD_MUTEX_INITIALIZER;
static vocab_ref_t *vocab_current;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void vocab_release(vocab_ref_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&vocab_lock);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&vocab_lock);
    if (last) {
        mdb_nl_vocab_destroy(r->vocab);
        free(r);
    }
}

/* Drop the cached vocabulary at exit (keeps leak checkers quiet). */
__attribute__((destructor)) static void vocab_cleanup(void)
{
    pthread_mutex_lock(&vocab_lock);
    vocab_ref_t *cur = vocab_current;
    vocab_current = NULL;
    pthread_mutex_unlock(&vocab_lock);
    vocab_release(cur);
}

/* A fresh-enough vocabulary for m (reference held by the caller). */
static vocab_ref_t *vocab_acquire(mdb_mongo_t *m, mdb_error_t *err)
{
    int64_t now = now_ms();
    pthread_mutex_lock(&vocab_lock);
    vocab_ref_t *cur = vocab_current;
    if (cur && cur->owner == m && now - cur->built_ms < NL_VOCAB_TTL_MS) {
        cur->refs++;
        pthread_mutex_unlock(&vocab_lock);
        return cur;
    }
    pthread_mutex_unlock(&vocab_lock);
    /* build outside the lock; two threads may build at once, the last one wins */
    vocab_ref_t *fresh = calloc(1, sizeof *fresh);
    if (!fresh || !(fresh->vocab = mdb_nl_vocab_new())) {
        free(fresh);
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    if (!mdb_nl_vocab_load(fresh->vocab, m, NL_VOCAB_SAMPLE, err)) {
        mdb_nl_vocab_destroy(fresh->vocab);
        free(fresh);
        return NULL;
    }
    fresh->refs = 2; /* the cache and the caller */
    fresh->built_ms = now;
    fresh->owner = m;
    pthread_mutex_lock(&vocab_lock);
    vocab_ref_t *old = vocab_current;
    vocab_current = fresh;
    pthread_mutex_unlock(&vocab_lock);
    vocab_release(old);
    return fresh;
}

static void handle_nl(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    static const char *const known[] = {"q", "limit", "offset", "reference_date", "backend", "explain", "_", NULL};
    for (size_t i = 0; i < req->nargs; i++) {
        bool ok = false;
        for (int k = 0; known[k]; k++)
            ok = ok || !strcmp(req->args[i].key, known[k]);
        if (!ok) {
            api_respond_error(res, 400, "bad_parameter",
                              "unknown parameter '%.64s' (q, limit, offset, reference_date, backend, explain)",
                              req->args[i].key);
            return;
        }
    }
    const char *q = api_arg(req, "q");
    if (!q || !*q) {
        api_respond_error(res, 400, "bad_parameter",
                          "q is required: a sentence such as \"chest CT series from 2000 to 2001\"");
        return;
    }
    const mdb_config_t *cfg = api_ctx_config(ctx);
    int64_t max_limit = mdb_config_get_int(cfg, "api.max_limit");
    int64_t limit, offset;
    if (!api_arg_int(req, "limit", 50 < max_limit ? 50 : max_limit, 1, max_limit, &limit, res) ||
        !api_arg_int(req, "offset", 0, 0, 10000000, &offset, res))
        return;
    const char *backend = api_arg(req, "backend");
    if (backend && strcmp(backend, "offline") && strcmp(backend, "auto")) {
        api_respond_error(res, 400, "bad_parameter", "backend must be 'offline' or 'auto'");
        return;
    }
    const char *explain = api_arg(req, "explain");
    bool only_translate = explain && (!strcmp(explain, "1") || !strcmp(explain, "true") || !*explain);

    mdb_error_t err = {0};
    mdb_mongo_t *m = api_ctx_mongo(ctx);
    vocab_ref_t *vr = vocab_acquire(m, &err);
    if (!vr) {
        api_respond_mdb_error(res, &err);
        return;
    }
    mdb_nl_options_t opt = {api_arg(req, "reference_date")};
    mdb_nl_result_t *r = backend && !strcmp(backend, "offline")
                             ? mdb_nl_translate(vr->vocab, q, &opt, &err)
                             : mdb_nl_translate_config(cfg, vr->vocab, q, &opt, &err);
    vocab_release(vr);
    if (!r) {
        api_respond_mdb_error(res, &err);
        return;
    }
    if (mdb_nl_result_message(r))
        MDB_LOG(MDB_LOG_WARN, "nl: %s", mdb_nl_result_message(r));
    json_t *out = mdb_nl_result_to_json(r);
    if (!out) {
        mdb_nl_result_destroy(r);
        api_respond_error(res, 500, "internal", "out of memory");
        return;
    }
    json_object_set_new(out, "query", json_string(q));
    if (!only_translate) {
        json_t *page = mdb_nl_run(m, r, limit, offset, max_limit, mdb_config_get_int(cfg, "api.query_time_ms"), &err);
        if (!page) {
            mdb_nl_result_destroy(r);
            /* the translation is still useful to the user: show it with the error */
            json_t *body =
                json_pack("{s:s, s:s, s:O}", "error", err.domain == MDB_ERR_QUERY ? "bad_query" : "backend_unavailable",
                          "detail", err.message, "translation", out);
            json_decref(out);
            api_respond_json(res, err.domain == MDB_ERR_QUERY ? 400 : 503, body);
            return;
        }
        json_object_update(out, page);
        json_decref(page);
    }
    mdb_nl_result_destroy(r);
    api_respond_json(res, 200, out);
}

bool api_route_nl(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    if (strcmp(req->path, "/api/nl") && strcmp(req->path, "/api/nl/"))
        return false;
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        api_response_header(res, "Allow", "GET, HEAD");
        api_respond_error(res, 405, "method_not_allowed", "/api/nl answers GET only");
        return true;
    }
    handle_nl(ctx, req, res);
    return true;
}
