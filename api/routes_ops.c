/* routes_ops.c: operations endpoints. GET /api/lag asks mdb_lag for consumer
 * lag per group and partition and keeps a short history of those samples
 * (lag and committed offsets per group/topic) so the dashboard can draw lag
 * over time and throughput (committed offsets per second) the moment the
 * page opens. GET /metrics renders the Prometheus registry; GET /healthz
 * says whether the database answers (one ping at a time, shared by the
 * requests that wait for it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "api_private.h"
#include "mdb_lag.h"
#include "mdb_log.h"

#define MAX_GROUPS 16

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static bool valid_group(const char *g)
{
    size_t n = strlen(g);
    return n > 0 && n <= 249 && strspn(g, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

/* A compact sample of one mdb_lag answer: per "group|topic" the total lag,
 * the sum of committed offsets, and lag per partition. */
static json_t *make_sample(const json_t *lag, int64_t t)
{
    json_t *groups = json_object();
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(lag, "groups"), i, g)
    {
        const char *group = json_string_value(json_object_get(g, "group"));
        const char *topic = json_string_value(json_object_get(g, "topic"));
        if (!group)
            continue;
        char key[600];
        snprintf(key, sizeof key, "%s|%s", group, topic ? topic : "");
        json_int_t committed = 0;
        json_t *parts = json_object();
        size_t j;
        json_t *p;
        json_array_foreach(json_object_get(g, "partitions"), j, p)
        {
            char pk[16];
            snprintf(pk, sizeof pk, "%lld", (long long)json_integer_value(json_object_get(p, "partition")));
            json_t *l = json_object_get(p, "lag");
            json_object_set_new(parts, pk, json_is_integer(l) ? json_integer(json_integer_value(l)) : json_null());
            committed += json_integer_value(json_object_get(p, "committed"));
        }
        json_object_set_new(groups, key,
                            json_pack("{s:O, s:I, s:o}", "lag", json_object_get(g, "total_lag"), "committed", committed,
                                      "partitions", parts));
    }
    return json_pack("{s:I, s:o}", "t", (json_int_t)t, "groups", groups);
}

/* Ask Kafka, remember the answer for API_LAG_CACHE_MS, and (for the
 * default groups) append a sample to the history. New reference or NULL. */
static json_t *collect(api_ctx_t *ctx, const char *const *groups, size_t ngroups, const char *key, mdb_error_t *err)
{
    json_t *lag = mdb_lag_collect(ctx->cfg, groups, ngroups, err);
    if (!lag)
        return NULL;
    json_t *sample = make_sample(lag, wall_ms());
    pthread_mutex_lock(&ctx->lag_lock);
    json_decref(ctx->lag_last);
    ctx->lag_last = json_deep_copy(lag);
    ctx->lag_last_ms = api_now_ms();
    snprintf(ctx->lag_last_key, sizeof ctx->lag_last_key, "%s", key);
    if (sample && !ngroups) {
        json_array_append_new(ctx->lag_history, sample);
        sample = NULL;
        while (json_array_size(ctx->lag_history) > API_LAG_HISTORY)
            json_array_remove(ctx->lag_history, 0);
    }
    pthread_mutex_unlock(&ctx->lag_lock);
    json_decref(sample);
    return lag;
}

/* Background sampler: while someone has looked at /api/lag in the last
 * API_LAG_WATCH_MS, sample the default groups every API_LAG_SAMPLE_MS so the
 * operations page has a history to draw even between its own polls. */
static void *lag_sampler(void *arg)
{
    api_ctx_t *ctx = arg;
    while (!ctx->lag_stop) {
        usleep(250 * 1000);
        int64_t now = api_now_ms();
        pthread_mutex_lock(&ctx->lag_lock);
        bool due = ctx->lag_wanted_ms && now - ctx->lag_wanted_ms < API_LAG_WATCH_MS &&
                   (!ctx->lag_last || now - ctx->lag_last_ms >= API_LAG_SAMPLE_MS || ctx->lag_last_key[0]);
        pthread_mutex_unlock(&ctx->lag_lock);
        if (!due)
            continue;
        mdb_error_t err = {0};
        json_t *lag = collect(ctx, NULL, 0, "", &err);
        if (!lag)
            MDB_LOG(MDB_LOG_DEBUG, "lag sampler: %s", err.message);
        json_decref(lag);
        /* wait a full period even after a failure */
        for (int i = 0; i < API_LAG_SAMPLE_MS / 250 && !ctx->lag_stop; i++)
            usleep(250 * 1000);
    }
    return NULL;
}

bool api_lag_sampler_start(api_ctx_t *ctx)
{
    ctx->lag_stop = false;
    if (pthread_create(&ctx->lag_thread, NULL, lag_sampler, ctx) != 0)
        return false;
    ctx->lag_thread_started = true;
    return true;
}

void api_lag_sampler_stop(api_ctx_t *ctx)
{
    if (!ctx->lag_thread_started)
        return;
    ctx->lag_stop = true;
    pthread_join(ctx->lag_thread, NULL);
    ctx->lag_thread_started = false;
}

void api_h_lag(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *groups[MAX_GROUPS];
    size_t ngroups = 0;
    char key[512] = "";
    bool history = false;
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key, *v = req->args[i].value;
        if (!strcmp(k, "_"))
            continue;
        if (!strcmp(k, "history")) {
            if (strcmp(v, "true") && strcmp(v, "1") && strcmp(v, "false") && strcmp(v, "0")) {
                api_respond_error(res, 400, "bad_parameter", "'history' expects true or false");
                return;
            }
            history = !strcmp(v, "true") || !strcmp(v, "1");
            continue;
        }
        if (strcmp(k, "group") != 0) {
            api_respond_error(res, 400, "bad_parameter", "unknown parameter '%.64s' (lag takes group and history)", k);
            return;
        }
        if (!valid_group(v)) {
            api_respond_error(res, 400, "bad_parameter", "'%.64s' is not a valid consumer group name", v);
            return;
        }
        if (ngroups == MAX_GROUPS) {
            api_respond_error(res, 400, "bad_parameter", "at most %d groups per request", MAX_GROUPS);
            return;
        }
        groups[ngroups++] = v;
        size_t kl = strlen(key);
        snprintf(key + kl, sizeof key - kl, "%s,", v);
    }

    int64_t now = api_now_ms();
    json_t *lag = NULL;
    pthread_mutex_lock(&ctx->lag_lock);
    if (!ngroups)
        ctx->lag_wanted_ms = now; /* keeps the background sampler going */
    if (ctx->lag_last && now - ctx->lag_last_ms < API_LAG_CACHE_MS && !strcmp(key, ctx->lag_last_key))
        lag = json_deep_copy(ctx->lag_last);
    pthread_mutex_unlock(&ctx->lag_lock);

    if (!lag) {
        mdb_error_t err = {0};
        lag = collect(ctx, ngroups ? groups : NULL, ngroups, key, &err);
        if (!lag) {
            api_respond_error(res, 503, "backend_unavailable", "cannot read consumer lag: %s", err.message);
            return;
        }
    }
    if (history) {
        pthread_mutex_lock(&ctx->lag_lock);
        json_object_set_new(lag, "history", json_deep_copy(ctx->lag_history));
        pthread_mutex_unlock(&ctx->lag_lock);
    }
    api_respond_json(res, 200, lag);
}

void api_h_metrics(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    (void)req;
    char *text = mdb_metrics_render(ctx->metrics);
    if (!text) {
        api_respond_error(res, 503, "out_of_memory", "cannot render metrics");
        return;
    }
    api_respond_bytes(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

/* The database's address and the driver's error are for operators: with
 * read tokens configured they are shown only to a request carrying a token;
 * anyone may see whether the service is up. */
void api_h_health(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    int64_t arrived = api_now_ms();
    char why[sizeof ctx->health_err];
    pthread_mutex_lock(&ctx->health_lock);
    if (ctx->health_at_ms < arrived || !ctx->health_at_ms) { /* no ping finished since this request came */
        ctx->health_ok = mdb_mongo_ping(ctx->mongo, &err);
        snprintf(ctx->health_err, sizeof ctx->health_err, "%s", ctx->health_ok ? "" : err.message);
        ctx->health_at_ms = api_now_ms();
    }
    bool mongo_ok = ctx->health_ok;
    snprintf(why, sizeof why, "%s", ctx->health_err);
    pthread_mutex_unlock(&ctx->health_lock);
    bool detail = !ctx->read_tokens || !ctx->read_tokens[0] || api_auth_has_token(ctx, req);
    json_t *out = json_pack("{s:s, s:s, s:s}", "status", mongo_ok ? "ok" : "degraded", "mongo",
                            mongo_ok ? "ok"
                            : detail ? why
                                     : "unavailable",
                            "kafka_producer", ctx->producer ? "ok" : "unavailable");
    json_object_set_new(out, "database", json_string(mdb_mongo_db_name(ctx->mongo)));
    api_respond_json(res, mongo_ok ? 200 : 503, out);
}
