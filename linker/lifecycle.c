/* The linker's start and stop: linker_open connects everything a running
 * linker needs, in order (archive roots, database and its indexes, the
 * document store, topics, metrics, DLQ producer, consumer, lag gauge), and
 * fails with the first thing that is missing; linker_close releases
 * whatever was opened, in reverse; linker_report logs the exit summary the
 * efficiency goals are about. */
#include <stdlib.h>
#include <string.h>

#include "linker.h"
#include "mdb_indexes.h"
#include "mdb_log.h"

static void register_metrics(linker_t *L, mdb_metrics_t *mx)
{
    static const double sizes[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000};
    static const double secs[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    L->mx.events = mdb_metrics_counter(mx, "metadb_linker_events_total", "instance events consumed", "");
    L->mx.dlq_records = mdb_metrics_counter(mx, "metadb_linker_dlq_records_total", "DLQ records consumed", "");
    L->mx.invalid = mdb_metrics_counter(mx, "metadb_linker_invalid_events_total",
                                        "instance events that failed validation (sent to the DLQ)", "");
    L->mx.instances_linked =
        mdb_metrics_counter(mx, "metadb_linker_instances_linked_total", "instance documents created", "");
    L->mx.instances_existing = mdb_metrics_counter(mx, "metadb_linker_instances_existing_total",
                                                   "events for instances that existed already (replays, copies)", "");
    L->mx.conflicts =
        mdb_metrics_counter(mx, "metadb_linker_conflicts_written_total", "conflict documents created or extended", "");
    L->mx.batches = mdb_metrics_counter(mx, "metadb_linker_batches_total", "batches flushed", "");
    L->mx.flush_failures =
        mdb_metrics_counter(mx, "metadb_linker_flush_failures_total", "batch flushes that failed (retried)", "");
    L->mx.round_trips = mdb_metrics_gauge(mx, "metadb_linker_db_round_trips", "database round trips so far", "");
    L->mx.batch_size = mdb_metrics_histogram(mx, "metadb_linker_batch_size", "records per flushed batch", "", sizes,
                                             sizeof sizes / sizeof sizes[0]);
    L->mx.write_seconds = mdb_metrics_histogram(mx, "metadb_linker_write_seconds", "time to flush one batch", "", secs,
                                                sizeof secs / sizeof secs[0]);
}

/* The database: reachable, indexed, and the store over it. */
static bool open_database(linker_t *L, mdb_error_t *err)
{
    L->mongo = mdb_mongo_new_from_config(L->cfg, err);
    if (!L->mongo || !mdb_mongo_wait_ready(L->mongo, 30000, err)) {
        mdb_error_prefix(err, "database");
        return false;
    }
    if (!mdb_indexes_ensure(L->mongo, err)) {
        mdb_error_prefix(err, "indexes");
        return false;
    }
    L->round_trips_at_start = mdb_mongo_round_trips(L->mongo);
    L->store = mdb_store_mongo_new(L->mongo, L->wc);
    if (!L->store) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return false;
    }
    return true;
}

static bool open_metrics(linker_t *L, mdb_error_t *err)
{
    L->metrics = mdb_metrics_new("linker");
    if (!L->metrics) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "metrics: out of memory");
        return false;
    }
    register_metrics(L, L->metrics);
    int port = (int)mdb_config_get_int(L->cfg, "linker.metrics_port");
    const char *bind = mdb_config_get(L->cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(L->metrics, bind && *bind ? bind : NULL, port, err)) {
        mdb_error_prefix(err, "metrics on port %d", port);
        return false;
    }
    return true;
}

static bool open_kafka(linker_t *L, mdb_error_t *err)
{
    const char *topics[] = {L->topic_instances, L->topic_dlq};
    if (!mdb_kafka_ensure_topics(L->cfg, topics, 2, (int)mdb_config_get_int(L->cfg, "topic.partitions"), err)) {
        mdb_error_prefix(err, "topics");
        return false;
    }
    L->dlq_producer = mdb_kafka_producer_new(L->cfg, NULL, NULL, err);
    if (!L->dlq_producer) {
        mdb_error_prefix(err, "kafka producer");
        return false;
    }
    L->consumer = mdb_kafka_consumer_new(L->cfg, L->group, topics, 2, linker_on_rebalance, L, err);
    if (!L->consumer) {
        mdb_error_prefix(err, "kafka consumer");
        return false;
    }
    mdb_error_t lerr = {0};
    L->lag = mdb_lag_gauge_start(L->metrics, mdb_kafka_consumer_handle(L->consumer), L->group, 0, &lerr);
    if (!L->lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", lerr.message);
    return true;
}

bool linker_open(linker_t *L, const mdb_config_t *cfg, mdb_error_t *err)
{
    L->cfg = cfg;
    L->topic_instances = mdb_config_get(cfg, "topic.instances");
    L->topic_dlq = mdb_config_get(cfg, "topic.dlq");
    L->group = mdb_config_get(cfg, "linker.group");
    L->wc = mdb_config_get(cfg, "mongo.write_concern");
    L->max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    L->backoff_ms = LINKER_BACKOFF_MIN_MS;
    if (!linker_roots_load(L, err) || !open_database(L, err) || !open_metrics(L, err) || !open_kafka(L, err))
        return false;
    char *masked = mdb_log_mask_uri(mdb_config_get(cfg, "mongo.uri"));
    MDB_LOG(MDB_LOG_INFO,
            "linker started: %s + %s (group %s) -> %s/%s, batches of %lld record(s) or %lld ms, write concern %s",
            L->topic_instances, L->topic_dlq, L->group, masked ? masked : "?", mdb_mongo_db_name(L->mongo),
            (long long)L->batch_size, (long long)L->batch_ms, L->wc);
    free(masked);
    return true;
}

bool linker_close(linker_t *L)
{
    bool ok = true;
    mdb_error_t err = {0};
    linker_write_collect(L, true, true, &err); /* normally collected by finish() already; stores nothing */
    if (L->lag)
        mdb_lag_gauge_stop(L->lag);
    mdb_kafka_consumer_destroy(L->consumer);
    if (L->dlq_producer && !mdb_kafka_producer_flush(L->dlq_producer, 10000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "DLQ producer: %s", err.message);
        ok = false;
    }
    mdb_kafka_producer_destroy(L->dlq_producer);
    linker_batch_free(&L->batch);
    linker_batch_free(&L->wbatch);
    linker_roots_free(L);
    mdb_store_mongo_destroy(L->store);
    mdb_metrics_destroy(L->metrics);
    mdb_mongo_destroy(L->mongo);
    memset(L, 0, sizeof *L);
    return ok;
}

void linker_report(const linker_t *L)
{
    uint64_t rt = mdb_mongo_round_trips(L->mongo) - L->round_trips_at_start;
    double wall = L->first_event_ms && L->last_flush_ms > L->first_event_ms
                      ? (double)(L->last_flush_ms - L->first_event_ms) / 1000.0
                      : 0.0;
    double per = L->total_events ? (double)rt / (double)L->total_events : 0.0;
    MDB_LOG(
        MDB_LOG_INFO,
        "linker done: %llu event(s), %llu new instance(s), %llu batch(es), %llu database round trip(s) "
        "while linking (%.4f per event), %.0f events/s while flushing (%.2f s), %.0f events/s first event to last flush",
        (unsigned long long)L->total_events, (unsigned long long)L->total_instances_new,
        (unsigned long long)L->total_batches, (unsigned long long)rt, per,
        L->total_flush_seconds > 0 ? (double)L->total_events / L->total_flush_seconds : 0.0, L->total_flush_seconds,
        wall > 0 ? (double)L->total_events / wall : 0.0);
}
