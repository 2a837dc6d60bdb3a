/* metadb-linker: the aggregator that turns instance events into linked
 * study -> series -> instance documents. Consumes topic.instances and
 * topic.dlq in group linker.group, gathers records into batches
 * (linker.batch_size records or linker.batch_ms milliseconds, whichever
 * comes first) and flushes each batch as bulk, unordered, idempotent writes
 * (batch.c, mdb_docs, jobs.c) on a writer thread while the next batch is
 * consumed (writer.c; one write at a time, in order). Offsets are stored
 * only after every write of the batch was acknowledged with
 * mongo.write_concern; auto-commit then commits stored offsets only.
 *
 * Rebalances: before partitions are revoked the batch is flushed (and the
 * consumer wrapper commits synchronously); when the assignment was lost the
 * batch is dropped uncommitted, its records come again to the new owner. A
 * flush that fails (database down) keeps the batch, pauses consumption and
 * retries with backoff; nothing is stored meanwhile (flow.c).
 *
 * This file is the config, the signals and the loop; lifecycle.c opens and
 * closes everything. At exit the linker prints what it did: events,
 * batches, database round trips per linked instance and instances per
 * second. */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

#include "linker.h"
#include "mdb_daemon.h"
#include "mdb_log.h"
#include "mdb_signal.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-linker [--config FILE] [--key=value ...]\n"
                 "  consumes instance events (topic.instances) and DLQ records (topic.dlq) in group linker.group\n"
                 "  and builds the study/series/instance documents, job progress and conflicts in MongoDB\n\n");
}

/* 0: run; otherwise the exit code (help printed, or a bad argument/config). */
static int parse_args(mdb_config_t *cfg, int argc, char **argv, linker_t *L)
{
    int rc = mdb_daemon_start(cfg, "metadb-linker", "linker", usage, argc, argv);
    if (rc != MDB_DAEMON_RUN)
        return rc == 0 ? -1 : rc;
    L->batch_size = mdb_config_get_int(cfg, "linker.batch_size");
    L->batch_ms = mdb_config_get_int(cfg, "linker.batch_ms");
    if (L->batch_size < 1 || L->batch_ms < 0) {
        MDB_LOG(MDB_LOG_ERROR, "linker.batch_size must be >= 1 and linker.batch_ms >= 0");
        return 2;
    }
    return 0;
}

/* Consume, batch and flush until a stop is requested. 0, or 1 on a fatal
 * consumer error or OOM. */
static int run(linker_t *L)
{
    mdb_error_t err = {0};
    while (!mdb_signal_stop_requested()) {
        bool fatal = false;
        int timeout = linker_poll_timeout(L, linker_now_ms());
        rd_kafka_message_t *msg = mdb_kafka_consumer_poll(L->consumer, timeout, &fatal, &err);
        if (fatal) {
            MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
            return 1;
        }
        if (msg) {
            bool ok = linker_batch_add(L, msg, &err);
            rd_kafka_message_destroy(msg);
            if (!ok) {
                MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
                return 1;
            }
        }
        mdb_kafka_producer_poll(L->dlq_producer, 0);
        linker_flush_when_due(L, linker_now_ms());
    }
    return 0;
}

/* Flush what is left, commit. false if the last batch stays uncommitted. */
static bool finish(linker_t *L)
{
    mdb_error_t err = {0};
    bool ok = true;
    size_t n = linker_batch_count(L);
    if (n > 0) {
        MDB_LOG(MDB_LOG_INFO, "stopping: flushing the last %zu record(s)", n);
        if (!linker_batch_flush(L, &err)) {
            MDB_LOG(MDB_LOG_ERROR, "final flush failed, %zu record(s) stay uncommitted (consumed again later): %s",
                    L->batch.nitems, err.message);
            linker_batch_drop(L);
            ok = false;
        }
    }
    if (!mdb_kafka_consumer_commit(L->consumer, true, &err) && !strstr(err.message, "No offset"))
        MDB_LOG(MDB_LOG_WARN, "final commit: %s", err.message);
    linker_report(L);
    return ok;
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    linker_t L;
    memset(&L, 0, sizeof L);
    mdb_config_t *cfg = mdb_config_new();
    if (!cfg) {
        fprintf(stderr, "metadb-linker: out of memory\n");
        return 1;
    }
    int rc = parse_args(cfg, argc, argv, &L);
    if (rc != 0) {
        mdb_config_destroy(cfg);
        return rc < 0 ? 0 : rc;
    }
    mdb_daemon_init_runtime(NULL);
    if (linker_open(&L, cfg, &err)) {
        rc = run(&L);
        if (!finish(&L))
            rc = 1;
    } else {
        MDB_LOG(MDB_LOG_ERROR, "%s", err.message);
        rc = 1;
    }
    if (!linker_close(&L))
        rc = 1;
    mongoc_cleanup();
    mdb_config_destroy(cfg);
    return rc;
}
