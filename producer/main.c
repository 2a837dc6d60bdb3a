/* metadb-producer: consumes job requests (topic.jobs, group producer.group),
 * resolves them through the archive catalog and publishes one file task per
 * file (topic.files). A message's offset is stored only after its job was
 * fully handled: every task delivered, or the message sent to the DLQ. A
 * transient failure (Kafka or MongoDB down) is retried with back-off on the
 * same message; if that does not recover within producer.retry_budget the
 * daemon exits non-zero without storing, so a restart gets the message again. */
#include <stdio.h>

#include "mdb_daemon.h"
#include "mdb_log.h"
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
    const struct {
        mdb_metric_t **slot;
        const char *name, *help;
    } counters[] = {
        {&p->m_jobs_received, "metadb_producer_jobs_received_total", "job requests consumed"},
        {&p->m_jobs_invalid, "metadb_producer_jobs_invalid_total", "job requests rejected to the DLQ"},
        {&p->m_jobs_duplicate, "metadb_producer_jobs_duplicate_total",
         "redelivered job requests of jobs already published"},
        {&p->m_jobs_failed, "metadb_producer_jobs_failed_total",
         "jobs failed by the producer (unknown researcher/collection, no cases)"},
        {&p->m_jobs_published, "metadb_producer_jobs_published_total", "jobs whose file tasks were all delivered"},
        {&p->m_files_published, "metadb_producer_files_published_total", "file tasks delivered"},
        {&p->m_files_refused, "metadb_producer_files_refused_total",
         "paths refused because they lie outside the archive roots"},
        {&p->m_selectors_not_found, "metadb_producer_selectors_not_found_total", "selectors that matched no file"},
        {&p->m_publish_failures, "metadb_producer_publish_failures_total", "file task deliveries that failed"},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        *counters[i].slot = mdb_metrics_counter(m, counters[i].name, counters[i].help, "");
    p->m_job_seconds = mdb_metrics_histogram(m, "metadb_producer_job_seconds",
                                             "time from consuming a job request to all tasks delivered", "", secs,
                                             sizeof secs / sizeof secs[0]);
}

static mdb_daemon_result_t handle(void *p, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    return producer_handle(p, msg, err) == PRODUCER_DONE ? MDB_DAEMON_DONE : MDB_DAEMON_RETRY;
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    mdb_daemon_t d = {.cfg = mdb_config_new()};
    mdb_resolver_t *resolver = NULL;
    producer_t p = {0};
    int rc = mdb_daemon_start(d.cfg, "metadb-producer", "producer", usage, argc, argv);
    if (rc != MDB_DAEMON_RUN)
        goto done;
    rc = 1;
    mdb_daemon_init_runtime(&d);
    d.archive = mdb_archive_new_from_config(d.cfg, &err);
    if (!d.archive) {
        MDB_LOG(MDB_LOG_ERROR, "archive.roots: %s", err.message);
        goto done;
    }
    if (mdb_archive_root_count(d.archive) == 0)
        MDB_LOG(MDB_LOG_WARN, "archive.roots is empty: every selector will resolve to nothing and paths are refused");
    if (!mdb_daemon_open_database(&d))
        goto done;
    if (!(resolver = mdb_catalog_resolver_new(d.catalog))) {
        MDB_LOG(MDB_LOG_ERROR, "catalog/jobs set-up: out of memory");
        goto done;
    }
    const char *topics[] = {mdb_config_get(d.cfg, "topic.jobs"), mdb_config_get(d.cfg, "topic.files"),
                            mdb_config_get(d.cfg, "topic.dlq"), mdb_config_get(d.cfg, "topic.retrieve")};
    if (!mdb_daemon_open_kafka(&d, topics, 4, "producer.group", mdb_daemon_delivery_report, NULL) ||
        !mdb_daemon_open_metrics(&d, "producer"))
        goto done;
    register_metrics(&p, d.metrics);
    if (!mdb_daemon_serve_metrics(&d, "producer.metrics_port"))
        goto done;

    p.cfg = d.cfg;
    p.mongo = d.mongo;
    p.archive = d.archive;
    p.resolver = resolver;
    p.kp = d.kp;
    p.topic_files = topics[1];
    p.topic_dlq = topics[2];
    p.topic_retrieve = topics[3];
    p.max_message_bytes = (size_t)mdb_config_get_int(d.cfg, "kafka.max_message_bytes");
    p.delivery_timeout_ms = 330000; /* librdkafka's message.timeout.ms (300 s) plus a margin */
    if (!producer_pacs_names(d.cfg, &p.pacs_names, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "pacs.sources: %s", err.message);
        goto done;
    }

    MDB_LOG(MDB_LOG_INFO, "producer started: %s -> %s (group %s), %zu archive root(s)", topics[0], topics[1], d.group,
            mdb_archive_root_count(d.archive));
    rc = mdb_daemon_consume(&d, &(mdb_daemon_handler_t){"job request", RETRY_BUDGET_S, handle, &p});
    MDB_LOG(MDB_LOG_INFO, "producer stopping");
done:
    mdb_strv_clear(&p.pacs_names);
    mdb_resolver_destroy(resolver);
    if (!mdb_daemon_close(&d))
        rc = 1;
    return rc;
}
