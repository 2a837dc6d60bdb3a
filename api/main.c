/* metadb-api: the HTTP query API, job submission and status, consumer lag,
 * Prometheus metrics and the static research dashboard, in one process.
 * main loads configuration, opens the read pool (api.mongo_uri, a read-only
 * user, when set) and the job producer, starts the server on api.listen
 * (127.0.0.1:8080 by default) and serves until SIGINT/SIGTERM. */
#include <limits.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api_private.h"
#include "mdb_daemon.h"
#include "mdb_log.h"
#include "mdb_signal.h"

void api_jobs_delivery_cb(void *msg_opaque, bool ok, const char *errstr, void *ud);

/* Every token of key must have API_MIN_TOKEN_LEN characters: a short token
 * is guessed quickly even with api.auth_failures. The message names the key
 * and the token's position and length, never the token. */
static bool tokens_long_enough(char **tokens, const char *key)
{
    size_t n = 0;
    while (tokens && tokens[n])
        n++;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(tokens[i]);
        if (len >= API_MIN_TOKEN_LEN)
            continue;
        MDB_LOG(MDB_LOG_ERROR,
                "%s: token %zu of %zu has %zu characters; tokens must have at least %d (make one with "
                "'openssl rand -hex 16')",
                key, i + 1, n, len, API_MIN_TOKEN_LEN);
        return false;
    }
    return true;
}

static void resolve_web_root(api_ctx_t *ctx)
{
    const char *dir = mdb_config_get(ctx->cfg, "api.web_dir");
    char buf[PATH_MAX];
    ctx->web_root[0] = '\0';
    if (dir && *dir && realpath(dir, ctx->web_root))
        return;
    /* The default is relative to the source tree: also find it from elsewhere. */
    if (mdb_config_source(ctx->cfg, "api.web_dir") == MDB_CONFIG_SRC_DEFAULT) {
        snprintf(buf, sizeof buf, "%s/%s", MDB_SOURCE_DIR, dir);
        if (realpath(buf, ctx->web_root))
            return;
    }
    ctx->web_root[0] = '\0';
    MDB_LOG(MDB_LOG_WARN, "dashboard folder '%s' not found; only the API is served", dir ? dir : "");
}

/* api.viewer_dir; empty = $METADB_HOME/cache/ohif/viewer (where deploy/install.sh
 * puts the OHIF build), METADB_HOME defaulting to ~/.metadb. */
static void resolve_viewer_root(api_ctx_t *ctx)
{
    const char *dir = mdb_config_get(ctx->cfg, "api.viewer_dir");
    char buf[PATH_MAX];
    ctx->viewer_root[0] = '\0';
    if (!dir || !*dir) {
        const char *home = getenv("METADB_HOME"), *user = getenv("HOME");
        if (home && *home)
            snprintf(buf, sizeof buf, "%s/cache/ohif/viewer", home);
        else
            snprintf(buf, sizeof buf, "%s/.metadb/cache/ohif/viewer", user && *user ? user : "/root");
        dir = buf;
    }
    if (realpath(dir, ctx->viewer_root))
        return;
    ctx->viewer_root[0] = '\0';
    MDB_LOG(MDB_LOG_INFO, "OHIF viewer folder '%s' not found; /viewer/ is off (deploy/install.sh installs it)", dir);
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    int rc = 1;
    api_ctx_t ctx;
    api_server_t *server = NULL;
    memset(&ctx, 0, sizeof ctx);
    pthread_mutex_init(&ctx.produce_lock, NULL);
    pthread_mutex_init(&ctx.fields_lock, NULL);
    pthread_mutex_init(&ctx.lag_lock, NULL);
    pthread_mutex_init(&ctx.health_lock, NULL);
    mdb_config_t *cfg = mdb_config_new();

    int start = mdb_daemon_start(cfg, "metadb-api", "metadb-api", NULL, argc, argv);
    if (start != MDB_DAEMON_RUN) {
        mdb_config_destroy(cfg);
        return start;
    }
    /* one line per malformed request would let any client flood the log */
    mdb_log_set_rate_limit(20, 10000);
    mdb_daemon_init_runtime(NULL);

    ctx.cfg = cfg;
    ctx.query_time_ms = mdb_config_get_int(cfg, "api.query_time_ms");
    ctx.max_limit = mdb_config_get_int(cfg, "api.max_limit");
    if (ctx.max_limit < 1 || ctx.query_time_ms < 0) {
        MDB_LOG(MDB_LOG_ERROR, "api.max_limit must be >= 1 and api.query_time_ms >= 0");
        goto done;
    }
    ctx.tokens = mdb_config_get_list(cfg, "api.tokens", NULL);
    ctx.read_tokens = mdb_config_get_list(cfg, "api.read_tokens", NULL);
    if (!tokens_long_enough(ctx.tokens, "api.tokens") || !tokens_long_enough(ctx.read_tokens, "api.read_tokens"))
        goto done;
    {
        int64_t per_client = mdb_config_get_int(cfg, "api.client_concurrency");
        int64_t queries = mdb_config_get_int(cfg, "api.query_concurrency");
        int64_t pool = mdb_config_get_int(cfg, "mongo.pool_size");
        int64_t auth = mdb_config_get_int(cfg, "api.auth_failures");
        if (queries == 0)
            queries = pool > 1 ? pool - 1 : 1;
        if (per_client < 0 || per_client > 10000 || queries < 1 || queries > 10000 || auth < 0 || auth > 1000000) {
            MDB_LOG(MDB_LOG_ERROR, "api.client_concurrency must be 0..10000, api.query_concurrency 0..10000 and "
                                   "api.auth_failures 0..1000000");
            goto done;
        }
        ctx.limits = api_limits_new((int)per_client, (int)queries, (int)auth);
    }
    ctx.lag_history = json_array();
    ctx.metrics = mdb_metrics_new("api");
    if (!ctx.metrics || !ctx.lag_history || !ctx.limits) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        goto done;
    }
    const char *uri = mdb_config_get(cfg, "api.mongo_uri");
    if (!uri || !*uri)
        uri = mdb_config_get(cfg, "mongo.uri");
    ctx.mongo =
        mdb_mongo_new(uri, mdb_config_get(cfg, "mongo.db"), (int)mdb_config_get_int(cfg, "mongo.pool_size"), &err);
    if (!ctx.mongo) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    ctx.producer = mdb_kafka_producer_new(cfg, api_jobs_delivery_cb, &ctx, &err);
    if (!ctx.producer)
        MDB_LOG(MDB_LOG_WARN, "job submission unavailable: %s", err.message);
    resolve_web_root(&ctx);
    resolve_viewer_root(&ctx);

    if (!api_lag_sampler_start(&ctx))
        MDB_LOG(MDB_LOG_WARN, "cannot start the lag sampler; lag history follows requests only");
    server = api_server_start(&ctx, mdb_config_get(cfg, "api.listen"), &err);
    if (!server) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    {
        char *masked = mdb_log_mask_uri(uri);
        const char *listen = mdb_config_get(cfg, "api.listen");
        const char *colon = strrchr(listen, ':');
        MDB_LOG(MDB_LOG_INFO, "listening on http://%.*s:%d/ (database %s at %s, dashboard %s, submission %s)",
                colon ? (int)(colon - listen) : 0, listen, api_server_port(server), mdb_config_get(cfg, "mongo.db"),
                masked ? masked : "?", ctx.web_root[0] ? ctx.web_root : "off",
                ctx.tokens && ctx.tokens[0] ? "token required" : "disabled");
        free(masked);
    }
    while (!mdb_signal_stop_requested())
        usleep(100 * 1000);
    MDB_LOG(MDB_LOG_INFO, "stopping");
    rc = 0;
done:
    api_server_stop(server);
    api_lag_sampler_stop(&ctx);
    if (ctx.producer) {
        if (!mdb_kafka_producer_flush(ctx.producer, 5000, &err))
            MDB_LOG(MDB_LOG_WARN, "%s", err.message);
        mdb_kafka_producer_destroy(ctx.producer);
    }
    mdb_mongo_destroy(ctx.mongo);
    for (int i = 0; i < 3; i++)
        json_decref(ctx.fields_cache[i].value);
    json_decref(ctx.lag_history);
    json_decref(ctx.lag_last);
    mdb_metrics_destroy(ctx.metrics);
    mdb_config_strv_free(ctx.tokens);
    mdb_config_strv_free(ctx.read_tokens);
    api_limits_destroy(ctx.limits);
    mdb_config_destroy(cfg);
    mongoc_cleanup();
    return rc;
}
