/* metadb-worker: the stateless extractor. Consumes file tasks (topic.files,
 * group worker.group), extracts each file's header on worker.threads
 * extraction threads, and produces one event per file to topic.instances
 * (key StudyInstanceUID) or one record to topic.dlq (stage "worker").
 *
 * Delivery: a task's offset is stored only after the delivery report of
 * what it produced succeeded, and per partition in consumption order (the
 * tracker), so a committed offset never passes an undelivered message;
 * kill -9 at any moment loses nothing (tasks after the last stored offset
 * are consumed again, and the linker's upserts absorb the duplicates). A
 * delivery that fails permanently stops the daemon without storing
 * (exit 1); an event too large for Kafka becomes a DLQ record instead.
 * On revoke the in-flight work is drained and stored before the commit; a
 * lost assignment is dropped uncommitted. */
#include <stdio.h>

#include "mdb_config.h"
#include "mdb_daemon.h"
#include "mdb_lag.h"
#include "mdb_log.h"
#include "mdb_signal.h"
#include "worker.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-worker [--config FILE] [--key=value ...]\n"
                 "  consumes file tasks from topic.files (group worker.group), extracts DICOM headers with\n"
                 "  worker.threads threads and produces events to topic.instances (failures to topic.dlq)\n\n");
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    mdb_config_t *cfg = mdb_config_new();
    mdb_lag_gauge_t *lag = NULL;
    worker_t w;
    worker_init(&w);
    worker_shared_t *ws = &w.ws;

    int rc = mdb_daemon_start(cfg, "metadb-worker", "worker", usage, argc, argv);
    if (rc != MDB_DAEMON_RUN) {
        rc = worker_stop(&w, NULL, rc);
        mdb_config_destroy(cfg);
        return rc;
    }
    mdb_signal_install();
    rc = worker_start(&w, cfg, &lag);
    if (rc != 0)
        goto done;
    while (!mdb_signal_stop_requested()) {
        if (worker_queue_len(ws) < w.max_queue) {
            bool fatal = false;
            rd_kafka_message_t *msg = mdb_kafka_consumer_poll(w.consumer, 50, &fatal, &err);
            if (fatal) {
                MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
                w.fatal = true;
                break;
            }
            if (msg) {
                if (!worker_dispatch(&w, msg)) {
                    MDB_LOG(MDB_LOG_ERROR, "out of memory dispatching %s[%d]@%lld", w.topic_files, (int)msg->partition,
                            (long long)msg->offset);
                    w.fatal = true;
                    rd_kafka_message_destroy(msg);
                    break;
                }
                rd_kafka_message_destroy(msg);
            }
            mdb_kafka_producer_poll(ws->kp, 0);
        } else {
            mdb_kafka_producer_poll(ws->kp, 10);
        }
        worker_drain_completions(&w);
        worker_store_progress(&w);
    }
    MDB_LOG(MDB_LOG_INFO, "stopping: draining %zu in-flight task(s)", w.inflight);
    if (!w.fatal && !worker_drain_all(&w, WORKER_DRAIN_TIMEOUT_MS))
        MDB_LOG(MDB_LOG_WARN, "%zu task(s) still in flight at shutdown; they will be consumed again", w.inflight);
    if (w.fatal)
        rc = 1;
done:
    rc = worker_stop(&w, lag, rc);
    mdb_config_destroy(cfg);
    MDB_LOG(MDB_LOG_INFO, "worker stopped (rc=%d)", rc);
    return rc;
}
