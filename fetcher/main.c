/* metadb-fetcher: consumes retrieve tasks (topic.retrieve, group
 * fetcher.group), fetches the studies from the PACS the task names
 * (pacs.sources) into fetcher.root, catalogues them and publishes their file
 * tasks (topic.files) for the job (fetcher_task.c). A task's offset is stored
 * only after its outcome is recorded on the job; a transient failure
 * (database, Kafka) is retried on the same message with back-off, and a stop
 * mid-task leaves the offset unstored (the next fetcher redoes the task, which
 * moves nothing twice). One task at a time per process. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fetcher.h"
#include "mdb_daemon.h"
#include "mdb_indexes.h"
#include "mdb_jobs.h"
#include "mdb_lag.h"
#include "mdb_log.h"
#include "mdb_signal.h"
#include "source_config.h"

#define RETRY_BUDGET_S 300

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-fetcher [--config FILE] [--key=value ...]\n"
                 "  consumes topic.retrieve in group fetcher.group, retrieves studies from the PACS of\n"
                 "  pacs.sources into fetcher.root and publishes their file tasks to topic.files\n\n");
}

static fetcher_result_t handle_with_retry(fetcher_t *f, const rd_kafka_message_t *msg)
{
    long backoff_ms = 500;
    time_t start = time(NULL);
    for (int attempt = 1;; attempt++) {
        mdb_error_t err = {0};
        fetcher_result_t r = fetcher_handle(f, msg, &err);
        if (r != FETCHER_RETRY)
            return r;
        MDB_LOG(MDB_LOG_ERROR, "retrieve task %s[%d]@%lld: attempt %d failed: %s", rd_kafka_topic_name(msg->rkt),
                (int)msg->partition, (long long)msg->offset, attempt, err.message);
        if (mdb_signal_stop_requested() || time(NULL) - start > RETRY_BUDGET_S)
            return FETCHER_STOP;
        mdb_kafka_producer_wait(f->kp, backoff_ms);
        if (backoff_ms < 16000)
            backoff_ms *= 2;
    }
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    int rc = 1;
    mdb_config_t *cfg = mdb_config_new();
    mdb_mongo_t *mongo = NULL;
    mdb_archive_t *archive = NULL;
    mdb_catalog_t *catalog = NULL;
    mdb_kafka_producer_t *kp = NULL;
    mdb_kafka_consumer_t *consumer = NULL;
    mdb_metrics_t *metrics = NULL;
    mdb_lag_gauge_t *lag = NULL;
    char *root = NULL;
    bool driver_ready = false;
    fetcher_t f = {0};

    if ((rc = mdb_daemon_start(cfg, "metadb-fetcher", "fetcher", usage, argc, argv)) != MDB_DAEMON_RUN)
        goto done;
    rc = 1;
    f.cfg = cfg;
    if (!mdb_source_load(cfg, &f.sources, &f.n_sources, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        rc = 2;
        goto done;
    }
    if (f.n_sources == 0)
        MDB_LOG(MDB_LOG_WARN, "pacs.sources is empty: every retrieve task will fail");
    f.last_retrieve_ms = calloc(f.n_sources + 1, sizeof *f.last_retrieve_ms);
    mongoc_init();
    driver_ready = true;
    mdb_log_route_mongoc();
    mdb_signal_install();

    archive = mdb_archive_new_from_config(cfg, &err);
    if (!archive || !fetcher_setup_root(&f, archive, &root, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        rc = 2;
        goto done;
    }
    mongo = mdb_mongo_new_from_config(cfg, &err);
    if (!mongo || !mdb_mongo_wait_ready(mongo, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "database: %s", err.message);
        goto done;
    }
    catalog = mdb_catalog_new(mongo, archive, &err);
    if (!catalog || !mdb_catalog_ensure_indexes(catalog, &err) || !mdb_indexes_ensure_jobs(mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "catalog/jobs set-up: %s", err.message[0] ? err.message : "out of memory");
        goto done;
    }
    const char *topics[] = {mdb_config_get(cfg, "topic.retrieve"), mdb_config_get(cfg, "topic.files"),
                            mdb_config_get(cfg, "topic.dlq")};
    if (!mdb_kafka_ensure_topics(cfg, topics, 3, (int)mdb_config_get_int(cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        goto done;
    }
    kp = mdb_kafka_producer_new(cfg, fetcher_delivery_report, NULL, &err);
    const char *group = mdb_config_get(cfg, "fetcher.group");
    consumer = kp ? mdb_kafka_consumer_new(cfg, group, topics, 1, NULL, NULL, &err) : NULL;
    if (!consumer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka: %s", err.message);
        goto done;
    }
    if (!fetcher_slots_init(mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    metrics = mdb_metrics_new("fetcher");
    if (!metrics) {
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
        goto done;
    }
    f.mongo = mongo;
    f.catalog = catalog;
    f.kp = kp;
    f.topic_files = topics[1];
    f.topic_dlq = topics[2];
    f.max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    fetcher_metrics_init(&f, metrics);
    int port = (int)mdb_config_get_int(cfg, "fetcher.metrics_port");
    const char *bind = mdb_config_get(cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(metrics, bind && *bind ? bind : NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        goto done;
    }
    lag = mdb_lag_gauge_start(metrics, mdb_kafka_consumer_handle(consumer), group, 0, &err);
    if (!lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);

    MDB_LOG(MDB_LOG_INFO, "fetcher started: %s -> %s (group %s), %zu source(s), landing in %s", topics[0], topics[1],
            group, f.n_sources, f.root);
    rc = 0;
    while (!mdb_signal_stop_requested()) {
        bool fatal = false;
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(consumer, 500, &fatal, &err);
        mdb_kafka_producer_poll(kp, 0);
        if (fatal) {
            MDB_LOG(MDB_LOG_ERROR, "kafka consumer: fatal: %s", err.message);
            rc = 1;
            break;
        }
        if (!msg)
            continue;
        if (msg->err) {
            MDB_LOG(MDB_LOG_WARN, "kafka consumer: %s", rd_kafka_message_errstr(msg));
            rd_kafka_message_destroy(msg);
            continue;
        }
        fetcher_result_t r = handle_with_retry(&f, msg);
        if (r != FETCHER_DONE) {
            if (!mdb_signal_stop_requested()) {
                MDB_LOG(MDB_LOG_ERROR, "giving up on %s[%d]@%lld for now: exiting without storing its offset",
                        rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset);
                rc = 1;
            }
            rd_kafka_message_destroy(msg);
            break;
        }
        if (!mdb_kafka_consumer_store(consumer, rd_kafka_topic_name(msg->rkt), msg->partition, msg->offset, &err))
            MDB_LOG(MDB_LOG_WARN, "store offset: %s", err.message);
        rd_kafka_message_destroy(msg);
    }
    MDB_LOG(MDB_LOG_INFO, "fetcher stopping");
done:
    fetcher_slots_shutdown();
    mdb_lag_gauge_stop(lag);
    mdb_kafka_consumer_destroy(consumer);
    if (kp && !mdb_kafka_producer_flush(kp, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "undelivered messages at shutdown: %s", err.message);
        rc = 1;
    }
    mdb_kafka_producer_destroy(kp);
    mdb_metrics_destroy(metrics);
    mdb_catalog_destroy(catalog);
    mdb_mongo_destroy(mongo);
    if (archive)
        mdb_archive_destroy(archive);
    if (driver_ready)
        mongoc_cleanup();
    free(f.sources);
    free(f.last_retrieve_ms);
    free(root);
    mdb_config_destroy(cfg);
    return rc;
}
