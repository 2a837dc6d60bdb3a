/* metadb-linker: the aggregator that turns instance events into linked
 * study -> series -> instance documents. Consumes topic.instances and
 * topic.dlq in group linker.group, gathers records into batches
 * (linker.batch_size records or linker.batch_ms milliseconds, whichever
 * comes first; while records are still waiting in the assigned partitions
 * the batch keeps filling, up to 10 x batch_ms) and flushes each batch as bulk, unordered, idempotent writes
 * (batch.c, mdb_docs, jobs.c). Offsets are stored only after every write of
 * the batch was acknowledged with mongo.write_concern; auto-commit then
 * commits stored offsets only.
 *
 * Rebalances: before partitions are revoked the batch is flushed (and the
 * consumer wrapper commits synchronously); when the assignment was lost the
 * batch is dropped uncommitted, its records come again to the new owner. A
 * flush that fails (database down) keeps the batch, pauses consumption and
 * retries with backoff; nothing is stored meanwhile.
 *
 * At exit the linker prints what it did: events, batches, database round
 * trips per linked instance and instances per second. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "linker.h"
#include "mdb_indexes.h"
#include "mdb_lag.h"
#include "mdb_log.h"
#include "mdb_signal.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-linker [--config FILE] [--key=value ...]\n"
                 "  consumes instance events (topic.instances) and DLQ records (topic.dlq) in group linker.group\n"
                 "  and builds the study/series/instance documents, job progress and conflicts in MongoDB\n\n");
}

static void register_metrics(linker_t *L, mdb_metrics_t *mx)
{
    static const double sizes[] = {1, 10, 50, 100, 250, 500, 1000, 2500, 5000};
    static const double secs[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    L->mx.events = mdb_metrics_counter(mx, "metadb_linker_events_total", "instance events consumed", "");
    L->mx.dlq_records = mdb_metrics_counter(mx, "metadb_linker_dlq_records_total", "DLQ records consumed", "");
    L->mx.invalid = mdb_metrics_counter(mx, "metadb_linker_invalid_events_total",
                                        "instance events that failed validation (sent to the DLQ)", "");
    L->mx.instances_linked = mdb_metrics_counter(mx, "metadb_linker_instances_linked_total",
                                                 "instance documents created", "");
    L->mx.instances_existing = mdb_metrics_counter(mx, "metadb_linker_instances_existing_total",
                                                   "events for instances that existed already (replays, copies)", "");
    L->mx.conflicts = mdb_metrics_counter(mx, "metadb_linker_conflicts_written_total",
                                          "conflict documents created or extended", "");
    L->mx.batches = mdb_metrics_counter(mx, "metadb_linker_batches_total", "batches flushed", "");
    L->mx.flush_failures = mdb_metrics_counter(mx, "metadb_linker_flush_failures_total",
                                               "batch flushes that failed (retried)", "");
    L->mx.round_trips = mdb_metrics_gauge(mx, "metadb_linker_db_round_trips", "database round trips so far", "");
    L->mx.batch_size = mdb_metrics_histogram(mx, "metadb_linker_batch_size", "records per flushed batch", "", sizes,
                                             sizeof sizes / sizeof sizes[0]);
    L->mx.write_seconds = mdb_metrics_histogram(mx, "metadb_linker_write_seconds", "time to flush one batch", "",
                                                secs, sizeof secs / sizeof secs[0]);
}

/* Partitions of the batch that stay assigned after `revoked` go: seek them
 * back to their first record in the batch, so dropping the batch loses
 * nothing (the records are consumed again). */
static void rewind_kept(linker_t *L, const rd_kafka_topic_partition_list_t *revoked)
{
    rd_kafka_topic_partition_list_t *seek = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < L->nitems; i++) {
        const linker_item_t *it = &L->items[i];
        if (revoked && rd_kafka_topic_partition_list_find(revoked, it->topic, it->partition))
            continue;
        if (rd_kafka_topic_partition_list_find(seek, it->topic, it->partition))
            continue; /* the first record per partition is the smallest offset */
        rd_kafka_topic_partition_list_add(seek, it->topic, it->partition)->offset = it->offset;
    }
    if (seek->cnt > 0) {
        rd_kafka_error_t *e = rd_kafka_seek_partitions(mdb_kafka_consumer_handle(L->consumer), seek, 5000);
        if (e) {
            MDB_LOG(MDB_LOG_ERROR, "seeking back %d partition(s) after dropping a batch failed: %s", seek->cnt,
                    rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            mdb_signal_request_stop(); /* never store past records we dropped */
        }
    }
    rd_kafka_topic_partition_list_destroy(seek);
}

static void on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    linker_t *L = ud;
    if (assigned || L->nitems == 0)
        return;
    if (lost) {
        MDB_LOG(MDB_LOG_WARN, "assignment lost: dropping a batch of %zu record(s) uncommitted", L->nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
        return;
    }
    mdb_error_t err = {0};
    if (!linker_batch_flush(L, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "flush before revoke failed (%s): the batch of %zu record(s) stays uncommitted",
                err.message, L->nitems);
        rewind_kept(L, parts);
        linker_batch_drop(L);
    }
}

/* Records already fetched or waiting in the assigned partitions, from the
 * watermarks librdkafka caches with each fetch (no network round trip). */
static int64_t local_backlog(linker_t *L)
{
    rd_kafka_t *rk = mdb_kafka_consumer_handle(L->consumer);
    rd_kafka_topic_partition_list_t *a = NULL;
    int64_t lag = 0;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return 0;
    if (a->cnt > 0 && rd_kafka_position(rk, a) == RD_KAFKA_RESP_ERR_NO_ERROR)
        for (int i = 0; i < a->cnt; i++) {
            int64_t lo = 0, hi = 0;
            if (a->elems[i].offset < 0 ||
                rd_kafka_get_watermark_offsets(rk, a->elems[i].topic, a->elems[i].partition, &lo, &hi) !=
                    RD_KAFKA_RESP_ERR_NO_ERROR)
                continue;
            if (hi > a->elems[i].offset)
                lag += hi - a->elems[i].offset;
        }
    rd_kafka_topic_partition_list_destroy(a);
    return lag;
}

static void pause_all(linker_t *L, bool pause)
{
    rd_kafka_t *rk = mdb_kafka_consumer_handle(L->consumer);
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR || !a)
        return;
    if (a->cnt > 0)
        (pause ? rd_kafka_pause_partitions : rd_kafka_resume_partitions)(rk, a);
    rd_kafka_topic_partition_list_destroy(a);
}

/* Exit report: the numbers the efficiency goals are about. */
static void report(linker_t *L)
{
    uint64_t rt = mdb_mongo_round_trips(L->mongo) - L->round_trips_at_start;
    double wall = L->first_event_ms && L->last_flush_ms > L->first_event_ms
                      ? (double)(L->last_flush_ms - L->first_event_ms) / 1000.0
                      : 0.0;
    double per = L->total_events ? (double)rt / (double)L->total_events : 0.0;
    MDB_LOG(MDB_LOG_INFO,
            "linker done: %llu event(s), %llu new instance(s), %llu batch(es), %llu database round trip(s) "
            "while linking (%.4f per event), %.0f events/s while flushing (%.2f s), %.0f events/s first event to last flush",
            (unsigned long long)L->total_events, (unsigned long long)L->total_instances_new,
            (unsigned long long)L->total_batches, (unsigned long long)rt, per,
            L->total_flush_seconds > 0 ? (double)L->total_events / L->total_flush_seconds : 0.0,
            L->total_flush_seconds, wall > 0 ? (double)L->total_events / wall : 0.0);
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    int rest = argc, rc = 1;
    mdb_config_t *cfg = mdb_config_new();
    mdb_metrics_t *metrics = NULL;
    mdb_lag_gauge_t *lag = NULL;
    linker_t L;
    memset(&L, 0, sizeof L);
    bool mongo_inited = false;

    if (!cfg || !mdb_config_load_all(cfg, argc, argv, &rest, &err)) {
        fprintf(stderr, "metadb-linker: %s\n", cfg ? err.message : "out of memory");
        goto done;
    }
    if (rest < argc) {
        if (!strcmp(argv[rest], "--help") || !strcmp(argv[rest], "-h")) {
            usage(stdout);
            mdb_config_print_help(cfg, stdout);
            rc = 0;
        } else {
            fprintf(stderr, "metadb-linker: unknown argument '%s'\n", argv[rest]);
            usage(stderr);
            rc = 2;
        }
        goto done;
    }
    if (!mdb_log_init("linker", mdb_config_get(cfg, "log.level"), mdb_config_get(cfg, "log.format"))) {
        fprintf(stderr, "metadb-linker: bad log.level or log.format\n");
        goto done;
    }
    mongoc_init();
    mongo_inited = true;
    mdb_log_route_mongoc();
    mdb_signal_install();

    L.cfg = cfg;
    L.topic_instances = mdb_config_get(cfg, "topic.instances");
    L.topic_dlq = mdb_config_get(cfg, "topic.dlq");
    L.wc = mdb_config_get(cfg, "mongo.write_concern");
    L.max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    if (!linker_roots_load(&L, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    int64_t batch_size = mdb_config_get_int(cfg, "linker.batch_size");
    int64_t batch_ms = mdb_config_get_int(cfg, "linker.batch_ms");
    if (batch_size < 1 || batch_ms < 0) {
        MDB_LOG(MDB_LOG_ERROR, "linker.batch_size must be >= 1 and linker.batch_ms >= 0");
        rc = 2;
        goto done;
    }

    L.mongo = mdb_mongo_new_from_config(cfg, &err);
    if (!L.mongo || !mdb_mongo_wait_ready(L.mongo, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "database: %s", err.message);
        goto done;
    }
    if (!mdb_indexes_ensure(L.mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "indexes: %s", err.message);
        goto done;
    }
    L.round_trips_at_start = mdb_mongo_round_trips(L.mongo);
    L.store = mdb_docs_mongo_store_new(L.mongo, L.wc);
    if (!L.store) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        goto done;
    }
    L.update_chunk = mdb_docs_mongo_store_update_chunk(L.store);
    if (mdb_docs_mongo_store_journaled(L.store))
        MDB_LOG(MDB_LOG_INFO, "FerretDB: instances, series and studies that change are replaced through %s (a few "
                              "commands per batch instead of one scan per document)", MDB_DOCS_JOURNAL);
    const char *topics[] = {L.topic_instances, L.topic_dlq};
    if (!mdb_kafka_ensure_topics(cfg, topics, 2, (int)mdb_config_get_int(cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        goto done;
    }
    metrics = mdb_metrics_new("linker");
    if (!metrics) {
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
        goto done;
    }
    register_metrics(&L, metrics);
    int port = (int)mdb_config_get_int(cfg, "linker.metrics_port");
    const char *bind = mdb_config_get(cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(metrics, bind && *bind ? bind : NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        goto done;
    }
    L.dlq_producer = mdb_kafka_producer_new(cfg, NULL, NULL, &err);
    if (!L.dlq_producer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka producer: %s", err.message);
        goto done;
    }
    const char *group = mdb_config_get(cfg, "linker.group");
    L.consumer = mdb_kafka_consumer_new(cfg, group, topics, 2, on_rebalance, &L, &err);
    if (!L.consumer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
        goto done;
    }
    lag = mdb_lag_gauge_start(metrics, mdb_kafka_consumer_handle(L.consumer), group, 0, &err);
    if (!lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);
    char *masked = mdb_log_mask_uri(mdb_config_get(cfg, "mongo.uri"));
    MDB_LOG(MDB_LOG_INFO, "linker started: %s + %s (group %s) -> %s/%s, batches of %lld record(s) or %lld ms, "
                          "write concern %s",
            L.topic_instances, L.topic_dlq, group, masked ? masked : "?", mdb_mongo_db_name(L.mongo),
            (long long)batch_size, (long long)batch_ms, L.wc);
    free(masked);

    rc = 0;
    bool paused = false;
    int64_t retry_at = 0, backoff = 500;
    while (!mdb_signal_stop_requested()) {
        if (paused && L.nitems == 0) {
            /* the failing batch was dropped by a rebalance: consume again */
            pause_all(&L, false);
            paused = false;
            backoff = 500;
        }
        int64_t now = linker_now_ms();
        int timeout = 100;
        if (L.nitems > 0 && !paused) {
            int64_t left = L.batch_started_ms + batch_ms - now;
            timeout = left < 0 ? 0 : left < 100 ? (int)left : 100;
        }
        bool fatal = false;
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(L.consumer, timeout, &fatal, &err);
        if (fatal) {
            MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
            rc = 1;
            break;
        }
        if (msg) {
            bool ok = linker_batch_add(&L, msg, &err);
            rd_kafka_message_destroy(msg);
            if (!ok) {
                MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
                rc = 1;
                break;
            }
        }
        mdb_kafka_producer_poll(L.dlq_producer, 0);
        now = linker_now_ms();
        bool due = L.nitems > 0 && ((int64_t)L.nitems >= batch_size || now - L.batch_started_ms >= batch_ms);
        /* batch_ms bounds the wait for records that are not there yet; while
         * a backlog is waiting, filling the batch costs no latency and saves
         * round trips (bounded at 10 x batch_ms all the same). */
        if (due && !paused && (int64_t)L.nitems < batch_size && now - L.batch_started_ms < 10 * batch_ms &&
            local_backlog(&L) > 0)
            due = false;
        if (!due || (paused && now < retry_at))
            continue;
        if (linker_batch_flush(&L, &err)) {
            if (paused) {
                MDB_LOG(MDB_LOG_INFO, "database writes succeed again: resuming consumption");
                pause_all(&L, false);
                paused = false;
                backoff = 500;
            }
            continue;
        }
        MDB_LOG(MDB_LOG_ERROR, "flush of %zu record(s) failed, retrying in %lld ms: %s", L.nitems,
                (long long)backoff, err.message);
        if (!paused) {
            pause_all(&L, true);
            paused = true;
        }
        retry_at = now + backoff;
        backoff = backoff < 16000 ? backoff * 2 : 30000;
    }
    if (L.nitems > 0) {
        MDB_LOG(MDB_LOG_INFO, "stopping: flushing the last batch of %zu record(s)", L.nitems);
        if (!linker_batch_flush(&L, &err)) {
            MDB_LOG(MDB_LOG_ERROR, "final flush failed, %zu record(s) stay uncommitted (consumed again later): %s",
                    L.nitems, err.message);
            linker_batch_drop(&L);
            rc = 1;
        }
    }
    if (!mdb_kafka_consumer_commit(L.consumer, true, &err) && !strstr(err.message, "No offset"))
        MDB_LOG(MDB_LOG_WARN, "final commit: %s", err.message);
    report(&L);
done:
    if (lag)
        mdb_lag_gauge_stop(lag);
    mdb_kafka_consumer_destroy(L.consumer);
    if (L.dlq_producer && !mdb_kafka_producer_flush(L.dlq_producer, 10000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "DLQ producer: %s", err.message);
        rc = 1;
    }
    mdb_kafka_producer_destroy(L.dlq_producer);
    linker_batch_drop(&L);
    free(L.items);
    linker_roots_free(&L);
    mdb_docs_mongo_store_destroy(L.store);
    mdb_metrics_destroy(metrics);
    mdb_mongo_destroy(L.mongo);
    if (mongo_inited)
        mongoc_cleanup();
    mdb_config_destroy(cfg);
    return rc;
}
