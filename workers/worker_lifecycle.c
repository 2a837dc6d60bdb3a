/* worker_lifecycle.c: metadb-worker's start (validate the worker.* keys,
 * build the archive gate, feature sets, topics, metrics, producer, consumer,
 * lag gauge and the extraction threads) and stop (wake and join the threads,
 * close the consumer, which commits only delivered work, flush the producer,
 * free everything). The consume loop is in main.c. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_log.h"
#include "mdb_signal.h"
#include "worker.h"

void worker_init(worker_t *w)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->ws.qlock, NULL);
    pthread_cond_init(&w->ws.qcond, NULL);
    pthread_mutex_init(&w->ws.clock, NULL);
}

int worker_start(worker_t *w, mdb_config_t *cfg, mdb_lag_gauge_t **lag)
{
    mdb_error_t err = {0};
    worker_shared_t *ws = &w->ws;
    int64_t nthreads = mdb_config_get_int(cfg, "worker.threads");
    int64_t max_header = mdb_config_get_int(cfg, "worker.max_header_bytes");
    if (nthreads < 1 || nthreads > 256) {
        MDB_LOG(MDB_LOG_ERROR, "worker.threads must be 1..256, got %lld", (long long)nthreads);
        return 2;
    }
    if (max_header < 1024) {
        MDB_LOG(MDB_LOG_ERROR, "worker.max_header_bytes must be >= 1024, got %lld", (long long)max_header);
        return 2;
    }
    ws->cfg = cfg;
    ws->max_header_bytes = (size_t)max_header;
    ws->max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    ws->archive = mdb_archive_new_from_config(cfg, &err);
    if (!ws->archive) {
        MDB_LOG(MDB_LOG_ERROR, "archive: %s", err.message);
        return 1;
    }
    if (mdb_archive_root_count(ws->archive) == 0)
        MDB_LOG(MDB_LOG_WARN, "archive.roots is empty: every file task will be refused (outside_archive)");
    ws->sets = mdb_featuresets_new(mdb_config_get(cfg, "features.dir"), mdb_config_get(cfg, "features.default"), &err);
    if (!ws->sets) {
        MDB_LOG(MDB_LOG_ERROR, "feature sets: %s", err.message);
        return 1;
    }
    {
        const mdb_features_t *fs = mdb_featuresets_get(ws->sets, NULL, NULL, &err);
        for (size_t i = 0; i < mdb_features_warning_count(fs); i++)
            MDB_LOG(MDB_LOG_WARN, "feature set '%s': %s", mdb_features_name(fs), mdb_features_warning(fs, i));
        MDB_LOG(MDB_LOG_INFO, "feature set '%s': %zu study, %zu series, %zu instance attributes, %zu promoted fields",
                mdb_features_name(fs), mdb_features_count(fs, MDB_LEVEL_STUDY),
                mdb_features_count(fs, MDB_LEVEL_SERIES), mdb_features_count(fs, MDB_LEVEL_INSTANCE),
                mdb_features_promoted_count(fs));
    }
    w->topic_files = mdb_config_get(cfg, "topic.files");
    ws->topic_instances = mdb_config_get(cfg, "topic.instances");
    ws->topic_dlq = mdb_config_get(cfg, "topic.dlq");
    const char *topics[] = {w->topic_files, ws->topic_instances, ws->topic_dlq};
    if (!mdb_kafka_ensure_topics(cfg, topics, 3, (int)mdb_config_get_int(cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        return 1;
    }
    ws->metrics = mdb_metrics_new("worker");
    if (!ws->metrics) {
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
        return 1;
    }
    worker_register_metrics(ws);
    int port = (int)mdb_config_get_int(cfg, "worker.metrics_port");
    if (port > 0 && !mdb_metrics_serve(ws->metrics, NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        return 1;
    }
    if (!(w->tracker = worker_tracker_new())) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        return 1;
    }
    ws->kp = mdb_kafka_producer_new(cfg, worker_on_delivery, w, &err);
    if (!ws->kp) {
        MDB_LOG(MDB_LOG_ERROR, "kafka producer: %s", err.message);
        return 1;
    }
    const char *group = mdb_config_get(cfg, "worker.group");
    w->consumer = mdb_kafka_consumer_new(cfg, group, topics, 1, worker_on_rebalance, w, &err);
    if (!w->consumer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
        return 1;
    }
    *lag = mdb_lag_gauge_start(ws->metrics, mdb_kafka_consumer_handle(w->consumer), group, 0, &err);
    if (!*lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);

    w->nthreads = (size_t)nthreads;
    w->max_queue = w->nthreads * WORKER_QUEUE_PER_THREAD;
    w->threads = calloc(w->nthreads, sizeof *w->threads);
    if (!w->threads) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < w->nthreads; i++)
        if (pthread_create(&w->threads[i], NULL, worker_pool_thread, w) != 0) {
            MDB_LOG(MDB_LOG_ERROR, "cannot start extraction thread %zu", i);
            w->nthreads = i;
            mdb_signal_request_stop();
            break;
        }
    MDB_LOG(MDB_LOG_INFO, "worker started: %s -> %s (group %s), %zu thread(s), %zu archive root(s)", w->topic_files,
            ws->topic_instances, group, w->nthreads, mdb_archive_root_count(ws->archive));

    return 0;
}

int worker_stop(worker_t *w, mdb_lag_gauge_t *lag, int rc)
{
    worker_shared_t *ws = &w->ws;
    pthread_mutex_lock(&ws->qlock);
    ws->stopping = true;
    pthread_cond_broadcast(&ws->qcond);
    pthread_mutex_unlock(&ws->qlock);
    for (size_t i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    free(w->threads);
    if (lag)
        mdb_lag_gauge_stop(lag);
    /* Close commits the stored offsets (only ever delivered work, even
     * after a fatal error) and runs the revoke callback, which must not
     * wait any more. */
    w->closing = true;
    mdb_kafka_consumer_destroy(w->consumer);
    if (ws->kp) {
        mdb_error_t ferr = {0};
        if (!mdb_kafka_producer_flush(ws->kp, 10000, &ferr)) {
            MDB_LOG(MDB_LOG_ERROR, "producer: %s", ferr.message);
            rc = rc ? rc : 1;
        }
        worker_drain_completions(w);
        mdb_kafka_producer_destroy(ws->kp);
    }
    /* tasks never handed out */
    while (ws->qhead) {
        worker_task_t *t = ws->qhead;
        ws->qhead = t->next;
        worker_task_free(t);
    }
    worker_tracker_destroy(w->tracker);
    mdb_featuresets_destroy(ws->sets);
    mdb_archive_destroy(ws->archive);
    mdb_metrics_destroy(ws->metrics);
    pthread_mutex_destroy(&ws->qlock);
    pthread_cond_destroy(&ws->qcond);
    pthread_mutex_destroy(&ws->clock);
    return rc;
}
