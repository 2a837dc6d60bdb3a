/* mdb_mongo: one client pool per process and database, a bounded readiness
 * wait, and the round-trip counter every database helper (mdb_bulk,
 * mdb_find) feeds for efficiency reports. */
#include "mdb_mongo.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_log.h"

struct mdb_mongo {
    mongoc_client_pool_t *pool;
    mongoc_uri_t *uri;
    char *db;
    atomic_uint_fast64_t round_trips;
};

mdb_mongo_t *mdb_mongo_new(const char *uri, const char *db, int pool_size, mdb_error_t *err)
{
    bson_error_t be;
    mdb_mongo_t *m = calloc(1, sizeof *m);
    if (!m) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    if (!db || !*db) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "mongo: empty database name");
        goto fail;
    }
    m->db = strdup(db);
    m->uri = mongoc_uri_new_with_error(uri ? uri : "", &be);
    if (!m->uri) {
        char *masked = mdb_log_mask_uri(uri ? uri : "");
        mdb_error_set(err, MDB_ERR_CONFIG, (int)be.code, "invalid mongo.uri '%s': %s", masked ? masked : "",
                      be.message);
        free(masked);
        goto fail;
    }
    if (!mongoc_uri_has_option(m->uri, MONGOC_URI_APPNAME))
        mongoc_uri_set_appname(m->uri, "metadb");
    m->pool = mongoc_client_pool_new_with_error(m->uri, &be);
    if (!m->pool || !m->db) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "cannot create mongo client pool: %s", be.message);
        goto fail;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    if (pool_size > 0)
        mongoc_client_pool_max_size(m->pool, (uint32_t)pool_size);
    return m;
fail:
    mdb_mongo_destroy(m);
    return NULL;
}

mdb_mongo_t *mdb_mongo_new_from_config(const mdb_config_t *cfg, mdb_error_t *err)
{
    return mdb_mongo_new(mdb_config_get(cfg, "mongo.uri"), mdb_config_get(cfg, "mongo.db"),
                         (int)mdb_config_get_int(cfg, "mongo.pool_size"), err);
}

void mdb_mongo_destroy(mdb_mongo_t *m)
{
    if (!m)
        return;
    if (m->pool)
        mongoc_client_pool_destroy(m->pool);
    if (m->uri)
        mongoc_uri_destroy(m->uri);
    free(m->db);
    free(m);
}

const char *mdb_mongo_db_name(const mdb_mongo_t *m)
{
    return m->db;
}

mongoc_client_t *mdb_mongo_pop(mdb_mongo_t *m)
{
    return mongoc_client_pool_pop(m->pool);
}

void mdb_mongo_push(mdb_mongo_t *m, mongoc_client_t *client)
{
    if (client)
        mongoc_client_pool_push(m->pool, client);
}

mongoc_collection_t *mdb_mongo_collection(mdb_mongo_t *m, mongoc_client_t *client, const char *name)
{
    return mongoc_client_get_collection(client, m->db, name);
}

uint64_t mdb_mongo_round_trips(const mdb_mongo_t *m)
{
    return atomic_load(&((mdb_mongo_t *)m)->round_trips);
}

void mdb_mongo_count_round_trip(mdb_mongo_t *m)
{
    atomic_fetch_add(&m->round_trips, 1);
}

bool mdb_mongo_ping(mdb_mongo_t *m, mdb_error_t *err)
{
    bson_error_t be;
    bson_t reply;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mongoc_client_t *client = mdb_mongo_pop(m);
    mdb_mongo_count_round_trip(m);
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &be);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo ping failed: %s", be.message);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mdb_mongo_push(m, client);
    return ok;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One ping on a private, non-pooled client whose every timeout is bounded
 * by budget_ms: a database that accepts connections but never answers must
 * not hold the caller for the driver's default 5-minute socket timeout. */
static bool ping_bounded(mdb_mongo_t *m, int budget_ms, mdb_error_t *err)
{
    bson_error_t be;
    bson_t reply;
    bool ok = false;
    if (budget_ms < 100)
        budget_ms = 100;
    mongoc_uri_t *uri = mongoc_uri_copy(m->uri);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, budget_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, budget_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, budget_ms);
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(uri, &be);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo client: %s", be.message);
        mongoc_uri_destroy(uri);
        return false;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mdb_mongo_count_round_trip(m);
    ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &be);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo ping failed: %s", be.message);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_destroy(client);
    mongoc_uri_destroy(uri);
    return ok;
}

bool mdb_mongo_wait_ready(mdb_mongo_t *m, int timeout_ms, mdb_error_t *err)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (ping_bounded(m, (int)(left < 5000 ? left : 5000), err))
            return true;
        if (now_ms() >= deadline) {
            mdb_error_prefix(err, "database not ready after %d ms", timeout_ms);
            return false;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}
