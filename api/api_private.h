/* api_private.h: what metadb-api's own modules share beyond api.h: the
 * context struct and the handler functions the router dispatches to. Not for
 * the optional handlers (nl.c, qido.c): they use api.h only. */
#ifndef METADB_API_PRIVATE_H
#define METADB_API_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>

#include "api.h"
#include "limits.h"

/* Largest request body accepted (bytes); larger uploads answer 413. */
#define API_MAX_BODY (1024 * 1024)

struct api_ctx {
    const mdb_config_t *cfg;
    mdb_mongo_t *mongo;             /* read pool (api.mongo_uri or mongo.uri) */
    mdb_kafka_producer_t *producer; /* job submission; NULL if Kafka was unavailable at start */
    mdb_metrics_t *metrics;
    char web_root[4096];    /* realpath of api.web_dir, "" when it does not exist */
    char viewer_root[4096]; /* realpath of api.viewer_dir (the OHIF build), "" when absent */
    char **tokens;          /* api.tokens (NULL-terminated, may be NULL) */
    char **read_tokens;     /* api.read_tokens */
    api_limits_t *limits;   /* per-client and database concurrency, failed tokens */
    /* /healthz: one ping at a time; requests that arrive while it runs share
     * its answer, so a flood of health checks holds one pool connection, the
     * one api.query_concurrency leaves free. */
    pthread_mutex_t health_lock;
    int64_t health_at_ms; /* when the last ping finished (monotonic) */
    bool health_ok;
    char health_err[MDB_ERROR_MSG_MAX];
    int64_t query_time_ms;
    int64_t max_limit;
    pthread_mutex_t produce_lock; /* one submit at a time produces+polls */
    /* /api/fields cache */
    pthread_mutex_t fields_lock;
    struct {
        json_t *value;
        int64_t at_ms;
    } fields_cache[3];
    /* /api/lag samples kept for the operations page (ring of API_LAG_HISTORY) */
    pthread_mutex_t lag_lock;
    json_t *lag_history; /* array of {t, time, groups: {"group|topic": {...}}} */
    json_t *lag_last;    /* last full answer, reused within API_LAG_CACHE_MS */
    int64_t lag_last_ms;
    char lag_last_key[512];
    int64_t lag_wanted_ms; /* last /api/lag request for the default groups */
    pthread_t lag_thread;
    bool lag_thread_started;
    atomic_bool lag_stop;
};

#define API_LAG_SAMPLE_MS 5000
#define API_LAG_WATCH_MS (10 * 60 * 1000)

/* Background lag sampling for the operations page (routes_ops.c). */
bool api_lag_sampler_start(api_ctx_t *ctx);
void api_lag_sampler_stop(api_ctx_t *ctx);

#define API_LAG_HISTORY 720
#define API_LAG_CACHE_MS 1000

/* Shortest token accepted in api.tokens and api.read_tokens. */
#define API_MIN_TOKEN_LEN 16

/* true when the request carries a valid token (read or write); a wrong one
 * counts against the client's api.auth_failures. Never fills a response:
 * for answers that only show more detail to a token holder (/healthz). */
bool api_auth_has_token(api_ctx_t *ctx, const api_request_t *req);

/* Monotonic milliseconds. */
int64_t api_now_ms(void);

/* ---- handlers (routes_*.c, static.c) ---- */
void api_h_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level);
void api_h_get_one(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level, const char *uid);
void api_h_query(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
/* routes_export.c: /api/<level>?format=..., /api/export/manifest, /api/export/sidecar */
void api_h_export_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, int level);
void api_h_export_manifest(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_export_sidecar(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_fields(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_facets(api_ctx_t *ctx, const api_request_t *req, api_response_t *res); /* routes_facets.c */
void api_h_jobs_submit(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_jobs_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_job_get(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *id);
void api_h_lag(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_metrics(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_health(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
void api_h_static(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
/* /viewer/...: the OHIF build from api.viewer_dir (static.c) */
void api_h_viewer(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);

/* ---- server (server.c) ---- */
typedef struct api_server api_server_t;
/* Bind api.listen ("host:port", "[v6]:port"; port 0 = any free port) and
 * start serving on internal threads. NULL with err on failure. */
api_server_t *api_server_start(api_ctx_t *ctx, const char *listen, mdb_error_t *err);
/* The bound port (useful with port 0). */
int api_server_port(const api_server_t *s);
void api_server_stop(api_server_t *s); /* accepts NULL */

#endif
