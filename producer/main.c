/* metadb-producer: consumes job requests (topic.jobs, group producer.group),
 * resolves them through the archive catalog and publishes one file task per
 * file (topic.files). A message's offset is stored only after its job was
 * fully handled: every task delivered, or the message sent to the DLQ. A
 * transient failure (Kafka or MongoDB down) is retried with back-off on the
 * same message; if that does not recover within producer.retry_budget the
 * daemon exits non-zero without storing, so a restart gets the message again. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdb_archive.h"
#include "mdb_catalog.h"
#include "mdb_config.h"
#include "mdb_daemon.h"
#include "mdb_indexes.h"
#include "mdb_jobs.h"
#include "mdb_kafka.h"
#include "mdb_lag.h"
#include "mdb_log.h"
#include "mdb_metrics.h"
#include "mdb_mongo.h"
#include "mdb_signal.h"
#include "producer.h"

#define RETRY_BUDGET_S 120

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-producer [--config FILE] [--key=value ...]\n"
                 "  consumes topic.jobs in group producer.group, resolves selectors through the catalog\n"
                 "  of archive.roots and publishes file tasks to topic.files (failures to topic.dlq)\n\n");
}

static void register_metrics(producer_t *p, mdb_metrics_t *m)
{
    static const double secs[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300};
    p->m_jobs_received = mdb_metrics_counter(m, "metadb_producer_jobs_received_total", "job requests consumed", "");
    p->m_jobs_invalid = mdb_metrics_counter(m, "metadb_producer_jobs_invalid_total",
                                            "job requests rejected to the DLQ", "");
    p->m_jobs_duplicate = mdb_metrics_counter(m, "metadb_producer_jobs_duplicate_total",
                                              "redelivered job requests of jobs already published", "");
    p->m_jobs_failed = mdb_metrics_counter(m, "metadb_producer_jobs_failed_total",
                                           "jobs failed by the producer (unknown researcher/collection, no cases)", "");
    p->m_jobs_published = mdb_metrics_counter(m, "metadb_producer_jobs_published_total",
                                              "jobs whose file tasks were all delivered", "");
    p->m_files_published = mdb_metrics_counter(m, "metadb_producer_files_published_total", "file tasks delivered", "");
    p->m_files_refused = mdb_metrics_counter(m, "metadb_producer_files_refused_total",
                                             "paths refused because they lie outside the archive roots", "");
    p->m_selectors_not_found = mdb_metrics_counter(m, "metadb_producer_selectors_not_found_total",
                                                   "selectors that matched no file", "");
    p->m_publish_failures = mdb_metrics_counter(m, "metadb_producer_publish_failures_total",
                                                "file task deliveries that failed", "");
    p->m_job_seconds = mdb_metrics_histogram(m, "metadb_producer_job_seconds",
                                             "time from consuming a job request to all tasks delivered", "", secs,
                                             sizeof secs / sizeof secs[0]);
}

/* Handle msg until it is done, retrying transient failures with back-off.
 * False when the budget ran out or a stop was requested (offset not stored). */
static bool handle_with_retry(producer_t *p, const rd_kafka_message_t *msg)
{
    long backoff_ms = 500;
    time_t start = time(NULL);
    for (int attempt = 1;; attempt++) {
        mdb_error_t err = {0};
        if (producer_handle(p, msg, &err) == PRODUCER_DONE)
            return true;
        MDB_LOG(MDB_LOG_ERROR, "job request %s[%d]@%lld: attempt %d failed: %s",
                rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset, attempt, err.message);
        if (mdb_signal_stop_requested() || time(NULL) - start > RETRY_BUDGET_S)
            return false;
        mdb_kafka_producer_wait(p->kp, backoff_ms);
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
    mdb_resolver_t *resolver = NULL;
    mdb_kafka_producer_t *kp = NULL;
    mdb_kafka_consumer_t *consumer = NULL;
    mdb_metrics_t *metrics = NULL;
    mdb_lag_gauge_t *lag = NULL;
    bool driver_ready = false;
    producer_t p = {0};

    if ((rc = mdb_daemon_start(cfg, "metadb-producer", "producer", usage, argc, argv)) != MDB_DAEMON_RUN)
        goto done;
    rc = 1;
    mongoc_init();
    driver_ready = true;
    mdb_log_route_mongoc();
    mdb_signal_install();

    archive = mdb_archive_new_from_config(cfg, &err);
    if (!archive) {
        MDB_LOG(MDB_LOG_ERROR, "archive.roots: %s", err.message);
        goto done;
    }
    if (mdb_archive_root_count(archive) == 0)
        MDB_LOG(MDB_LOG_WARN, "archive.roots is empty: every selector will resolve to nothing and paths are refused");
    mongo = mdb_mongo_new_from_config(cfg, &err);
    if (!mongo || !mdb_mongo_wait_ready(mongo, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "database: %s", err.message);
        goto done;
    }
    catalog = mdb_catalog_new(mongo, archive, &err);
    resolver = catalog ? mdb_catalog_resolver_new(catalog) : NULL;
    if (!resolver || !mdb_catalog_ensure_indexes(catalog, &err) || !mdb_indexes_ensure_jobs(mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "catalog/jobs set-up: %s", err.message[0] ? err.message : "out of memory");
        goto done;
    }
    const char *topics[] = {mdb_config_get(cfg, "topic.jobs"), mdb_config_get(cfg, "topic.files"),
                            mdb_config_get(cfg, "topic.dlq"), mdb_config_get(cfg, "topic.retrieve")};
    if (!mdb_kafka_ensure_topics(cfg, topics, 4, (int)mdb_config_get_int(cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        goto done;
    }
    kp = mdb_kafka_producer_new(cfg, producer_delivery_report, NULL, &err);
    if (!kp) {
        MDB_LOG(MDB_LOG_ERROR, "kafka producer: %s", err.message);
        goto done;
    }
    const char *group = mdb_config_get(cfg, "producer.group");
    consumer = mdb_kafka_consumer_new(cfg, group, topics, 1, NULL, NULL, &err);
    if (!consumer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
        goto done;
    }
    metrics = mdb_metrics_new("producer");
    if (!metrics) {
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
        goto done;
    }
    register_metrics(&p, metrics);
    int port = (int)mdb_config_get_int(cfg, "producer.metrics_port");
    const char *bind = mdb_config_get(cfg, "metrics.bind");
    if (port > 0 && !mdb_metrics_serve(metrics, bind && *bind ? bind : NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        goto done;
    }
    lag = mdb_lag_gauge_start(metrics, mdb_kafka_consumer_handle(consumer), group, 0, &err);
    if (!lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);

    p.cfg = cfg;
    p.mongo = mongo;
    p.archive = archive;
    p.resolver = resolver;
    p.kp = kp;
    p.topic_files = topics[1];
    p.topic_dlq = topics[2];
    p.topic_retrieve = topics[3];
    if (!producer_pacs_names(cfg, &p.pacs_names, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "pacs.sources: %s", err.message);
        rc = 1;
        goto done;
    }
    p.max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    p.delivery_timeout_ms = 330000; /* librdkafka's message.timeout.ms (300 s) plus a margin */

    MDB_LOG(MDB_LOG_INFO, "producer started: %s -> %s (group %s), %zu archive root(s)", topics[0], topics[1], group,
            mdb_archive_root_count(archive));
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
        if (!handle_with_retry(&p, msg)) {
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
    MDB_LOG(MDB_LOG_INFO, "producer stopping");
done:
    mdb_lag_gauge_stop(lag);
    mdb_kafka_consumer_destroy(consumer);
    if (kp && !mdb_kafka_producer_flush(kp, 30000, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "undelivered messages at shutdown: %s", err.message);
        rc = 1;
    }
    mdb_kafka_producer_destroy(kp);
    mdb_metrics_destroy(metrics);
    mdb_strv_clear(&p.pacs_names);
    mdb_resolver_destroy(resolver);
    mdb_catalog_destroy(catalog);
    mdb_mongo_destroy(mongo);
    if (archive)
        mdb_archive_destroy(archive);
    if (driver_ready)
        mongoc_cleanup();
    mdb_config_destroy(cfg);
    return rc;
}
