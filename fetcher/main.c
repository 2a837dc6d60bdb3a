/* metadb-fetcher: consumes retrieve tasks (topic.retrieve, group
 * fetcher.group), fetches the studies from the PACS the task names
 * (pacs.sources) into fetcher.root, catalogues them and publishes their file
 * tasks (topic.files) for the job (fetcher_task.c). A task's offset is stored
 * only after its outcome is recorded on the job; a transient failure
 * (database, Kafka) is retried on the same message with back-off, and a stop
 * mid-task leaves the offset unstored (the next fetcher redoes the task, which
 * moves nothing twice). One task at a time per process. */
#include <stdio.h>
#include <stdlib.h>

#include "fetcher.h"
#include "mdb_daemon.h"
#include "mdb_log.h"
#include "source_config.h"

#define RETRY_BUDGET_S 300

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-fetcher [--config FILE] [--key=value ...]\n"
                 "  consumes topic.retrieve in group fetcher.group, retrieves studies from the PACS of\n"
                 "  pacs.sources into fetcher.root and publishes their file tasks to topic.files\n\n");
}

static mdb_daemon_result_t handle(void *f, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    fetcher_result_t r = fetcher_handle(f, msg, err);
    return r == FETCHER_DONE ? MDB_DAEMON_DONE : r == FETCHER_RETRY ? MDB_DAEMON_RETRY : MDB_DAEMON_STOP;
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    mdb_daemon_t d = {.cfg = mdb_config_new()};
    char *root = NULL;
    fetcher_t f = {0};
    int rc = mdb_daemon_start(d.cfg, "metadb-fetcher", "fetcher", usage, argc, argv);
    if (rc != MDB_DAEMON_RUN)
        goto done;
    rc = 2; /* a bad pacs.sources or fetcher.root */
    f.cfg = d.cfg;
    if (!mdb_source_load(d.cfg, &f.sources, &f.n_sources, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (f.n_sources == 0)
        MDB_LOG(MDB_LOG_WARN, "pacs.sources is empty: every retrieve task will fail");
    f.last_retrieve_ms = calloc(f.n_sources + 1, sizeof *f.last_retrieve_ms);
    mdb_daemon_init_runtime(&d);
    d.archive = mdb_archive_new_from_config(d.cfg, &err);
    if (!d.archive || !fetcher_setup_root(&f, d.archive, &root, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    rc = 1;
    const char *topics[] = {mdb_config_get(d.cfg, "topic.retrieve"), mdb_config_get(d.cfg, "topic.files"),
                            mdb_config_get(d.cfg, "topic.dlq")};
    if (!mdb_daemon_open_database(&d) ||
        !mdb_daemon_open_kafka(&d, topics, 3, "fetcher.group", mdb_daemon_delivery_report, "kafka"))
        goto done;
    if (!fetcher_slots_init(d.mongo, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        goto done;
    }
    if (!mdb_daemon_open_metrics(&d, "fetcher"))
        goto done;
    f.mongo = d.mongo;
    f.catalog = d.catalog;
    f.kp = d.kp;
    f.topic_files = topics[1];
    f.topic_dlq = topics[2];
    f.max_message_bytes = (size_t)mdb_config_get_int(d.cfg, "kafka.max_message_bytes");
    fetcher_metrics_init(&f, d.metrics);
    if (!mdb_daemon_serve_metrics(&d, "fetcher.metrics_port"))
        goto done;

    MDB_LOG(MDB_LOG_INFO, "fetcher started: %s -> %s (group %s), %zu source(s), landing in %s", topics[0], topics[1],
            d.group, f.n_sources, f.root);
    rc = mdb_daemon_consume(&d, &(mdb_daemon_handler_t){"retrieve task", RETRY_BUDGET_S, handle, &f});
    MDB_LOG(MDB_LOG_INFO, "fetcher stopping");
done:
    fetcher_slots_shutdown();
    if (!mdb_daemon_close(&d))
        rc = 1;
    free(f.sources);
    free(f.last_retrieve_ms);
    free(root);
    return rc;
}
