/* mdb_daemon_open.c: what a consuming daemon (producer, fetcher) holds:
 * the driver runtime, database and catalogue, Kafka clients, metrics and
 * the lag gauge, opened step by step and closed in one call (mdb_daemon.h). */
#include "mdb_daemon.h"

#include <mongoc/mongoc.h>
#include <string.h>

#include "mdb_error.h"
#include "mdb_indexes.h"
#include "mdb_log.h"
#include "mdb_signal.h"

void mdb_daemon_init_runtime(mdb_daemon_t *d)
{
    mongoc_init();
    if (d)
        d->driver_ready = true;
    mdb_log_route_mongoc();
    mdb_signal_install();
}

bool mdb_daemon_open_database(mdb_daemon_t *d)
{
    mdb_error_t err = {0};
    d->mongo = mdb_mongo_new_from_config(d->cfg, &err);
    if (!d->mongo || !mdb_mongo_wait_ready(d->mongo, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "database: %s", err.message);
        return false;
    }
    d->catalog = mdb_catalog_new(d->mongo, d->archive, &err);
    if (!d->catalog || !mdb_catalog_ensure_indexes(d->catalog, &err) || !mdb_indexes_ensure_jobs(d->mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "catalog/jobs set-up: %s", err.message[0] ? err.message : "out of memory");
        return false;
    }
    return true;
}

bool mdb_daemon_open_kafka(mdb_daemon_t *d, const char *const *topics, size_t ntopics, const char *group_key,
                           mdb_kafka_dr_fn dr, const char *label)
{
    mdb_error_t err = {0};
    if (!mdb_kafka_ensure_topics(d->cfg, topics, ntopics, (int)mdb_config_get_int(d->cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        return false;
    }
    d->kp = mdb_kafka_producer_new(d->cfg, dr, NULL, &err);
    if (!d->kp) {
        MDB_LOG(MDB_LOG_ERROR, "%s: %s", label ? label : "kafka producer", err.message);
        return false;
    }
    d->group = mdb_config_get(d->cfg, group_key);
    d->consumer = mdb_kafka_consumer_new(d->cfg, d->group, topics, 1, NULL, NULL, &err);
    if (!d->consumer) {
        MDB_LOG(MDB_LOG_ERROR, "%s: %s", label ? label : "kafka consumer", err.message);
        return false;
    }
    return true;
}

bool mdb_daemon_open_metrics(mdb_daemon_t *d, const char *name)
{
    d->metrics = mdb_metrics_new(name);
    if (!d->metrics)
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
    return d->metrics != NULL;
}

bool mdb_daemon_serve_metrics(mdb_daemon_t *d, const char *port_key)
{
    mdb_error_t err = {0};
    int port = (int)mdb_config_get_int(d->cfg, port_key);
    const char *bind = mdb_config_get(d->cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(d->metrics, bind && *bind ? bind : NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        return false;
    }
    d->lag = mdb_lag_gauge_start(d->metrics, mdb_kafka_consumer_handle(d->consumer), d->group, 0, &err);
    if (!d->lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);
    return true;
}

bool mdb_daemon_close(mdb_daemon_t *d)
{
    mdb_error_t err = {0};
    mdb_lag_gauge_stop(d->lag);
    mdb_kafka_consumer_destroy(d->consumer);
    bool ok = !d->kp || mdb_kafka_producer_flush(d->kp, 30000, &err);
    if (!ok)
        MDB_LOG(MDB_LOG_ERROR, "undelivered messages at shutdown: %s", err.message);
    mdb_kafka_producer_destroy(d->kp);
    mdb_metrics_destroy(d->metrics);
    mdb_catalog_destroy(d->catalog);
    mdb_mongo_destroy(d->mongo);
    mdb_archive_destroy(d->archive);
    if (d->driver_ready)
        mongoc_cleanup();
    mdb_config_destroy(d->cfg);
    memset(d, 0, sizeof *d);
    return ok;
}
