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
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_config.h"
#include "mdb_daemon.h"
#include "mdb_lag.h"
#include "mdb_log.h"
#include "mdb_msg.h"
#include "mdb_signal.h"
#include "worker.h"

#define QUEUE_PER_THREAD 64
#define DRAIN_TIMEOUT_MS 60000

typedef struct {
    worker_shared_t ws;
    worker_tracker_t *tracker;
    mdb_kafka_consumer_t *consumer;
    const char *topic_files;
    size_t inflight; /* tasks consumed and not yet completed (main thread) */
    size_t max_queue;
    bool fatal;
    bool closing; /* consumer close in progress: the revoke must not wait */
    pthread_t *threads;
    size_t nthreads;
} worker_t;

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb-worker [--config FILE] [--key=value ...]\n"
                 "  consumes file tasks from topic.files (group worker.group), extracts DICOM headers with\n"
                 "  worker.threads threads and produces events to topic.instances (failures to topic.dlq)\n\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the extraction pool ---- */

static void *pool_main(void *arg)
{
    worker_t *w = arg;
    worker_shared_t *ws = &w->ws;
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(ws->max_header_bytes);
    if (!ctx) {
        MDB_LOG(MDB_LOG_ERROR, "extraction thread: out of memory");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&ws->qlock);
        while (!ws->qhead && !ws->stopping)
            pthread_cond_wait(&ws->qcond, &ws->qlock);
        if (!ws->qhead && ws->stopping) {
            pthread_mutex_unlock(&ws->qlock);
            break;
        }
        worker_task_t *t = ws->qhead;
        ws->qhead = t->next;
        if (!ws->qhead)
            ws->qtail = NULL;
        ws->qlen--;
        ws->busy++;
        pthread_mutex_unlock(&ws->qlock);
        t->next = NULL;
        worker_process(ws, ctx, t);
        pthread_mutex_lock(&ws->qlock);
        ws->busy--;
        pthread_mutex_unlock(&ws->qlock);
    }
    mdb_extract_ctx_destroy(ctx);
    return NULL;
}

static void enqueue(worker_shared_t *ws, worker_task_t *t)
{
    pthread_mutex_lock(&ws->qlock);
    t->next = NULL;
    if (ws->qtail)
        ws->qtail->next = t;
    else
        ws->qhead = t;
    ws->qtail = t;
    ws->qlen++;
    pthread_cond_signal(&ws->qcond);
    pthread_mutex_unlock(&ws->qlock);
}

static size_t queue_len(worker_shared_t *ws)
{
    pthread_mutex_lock(&ws->qlock);
    size_t n = ws->qlen;
    pthread_mutex_unlock(&ws->qlock);
    return n;
}

/* Delivery report (runs on whichever thread polls the producer). */
static void on_delivery(void *opaque, bool ok, const char *errstr, void *ud)
{
    worker_t *w = ud;
    worker_task_t *t = opaque;
    t->delivered_ok = ok;
    if (!ok)
        snprintf(t->dr_error, sizeof t->dr_error, "%s", errstr ? errstr : "delivery failed");
    worker_complete(&w->ws, t);
}

/* ---- main-thread bookkeeping ---- */

static void store_progress(worker_t *w)
{
    int32_t parts[1024];
    size_t n = worker_tracker_partitions(w->tracker, parts, 1024);
    for (size_t i = 0; i < n; i++) {
        int64_t off = worker_tracker_advance(w->tracker, parts[i]);
        if (off < 0)
            continue;
        mdb_error_t err = {0};
        if (!mdb_kafka_consumer_store(w->consumer, w->topic_files, parts[i], off, &err))
            MDB_LOG(MDB_LOG_WARN, "%s", err.message);
    }
}

/* Delivered events/DLQ records mark their offsets done; a failed delivery
 * of an event too large becomes a DLQ record; any other failure is fatal. */
static void drain_completions(worker_t *w)
{
    worker_shared_t *ws = &w->ws;
    pthread_mutex_lock(&ws->clock);
    worker_task_t *list = ws->chead;
    ws->chead = NULL;
    pthread_mutex_unlock(&ws->clock);
    while (list) {
        worker_task_t *t = list;
        list = t->next;
        t->next = NULL;
        if (!t->delivered_ok && !t->is_dlq && strstr(t->dr_error, "too large")) {
            /* requeue as a DLQ record: the task stays in flight */
            char msg[MDB_ERROR_MSG_MAX + 64];
            snprintf(msg, sizeof msg, "event not accepted by Kafka: %s", t->dr_error);
            mdb_file_msg_t fm = {0};
            mdb_error_t derr = {0};
            mdb_msg_file_decode(t->payload, t->payload_len, 0, &fm, &derr);
            mdb_dlq_msg_t d = {.job_id = fm.job_id, .path = fm.path, .stage = "worker", .error = "event_too_large",
                               .message = msg};
            free(t->out_value);
            t->out_value = mdb_msg_dlq_encode(&d);
            free(t->out_key);
            t->out_key = fm.job_id ? strdup(fm.job_id) : NULL;
            mdb_msg_file_clear(&fm);
            t->out_len = t->out_value ? strlen(t->out_value) : 0;
            t->out_topic = ws->topic_dlq;
            t->is_dlq = true;
            worker_count_failure(ws, "event_too_large");
            mdb_error_t err = {0};
            if (t->out_value && mdb_kafka_produce(ws->kp, t->out_topic, t->out_key, t->out_key ? strlen(t->out_key) : 0,
                                                  t->out_value, t->out_len, t, &err))
                continue;
            snprintf(t->dr_error, sizeof t->dr_error, "%s", t->out_value ? err.message : "out of memory");
        }
        if (!t->delivered_ok) {
            MDB_LOG(MDB_LOG_ERROR, "delivery of %s for %s[%d]@%lld failed: %s; stopping without storing the offset",
                    t->is_dlq ? "a DLQ record" : "an event", w->topic_files, (int)t->partition, (long long)t->offset,
                    t->dr_error);
            w->fatal = true;
            mdb_signal_request_stop();
        } else {
            if (t->is_dlq)
                mdb_metric_inc(ws->m_produced_dlq, 1);
            else {
                mdb_metric_inc(ws->m_produced_events, 1);
                mdb_metric_inc(ws->m_extracted, 1);
            }
            if (worker_tracker_epoch(w->tracker, t->partition) == t->epoch)
                worker_tracker_done(w->tracker, t->partition, t->offset);
        }
        w->inflight--;
        worker_task_free(t);
    }
    mdb_metric_set(ws->m_inflight, (double)w->inflight);
}

/* Wait until every consumed task completed (delivery reports in), storing
 * progress as it goes. False on timeout. */
static bool drain_all(worker_t *w, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (w->inflight > 0 && now_ms() < deadline && !w->fatal) {
        mdb_kafka_producer_poll(w->ws.kp, 20);
        drain_completions(w);
        store_progress(w);
    }
    drain_completions(w);
    store_progress(w);
    return w->inflight == 0;
}

static void on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    worker_t *w = ud;
    if (assigned) {
        for (int i = 0; i < parts->cnt; i++)
            if (!strcmp(parts->elems[i].topic, w->topic_files))
                worker_tracker_reset(w->tracker, parts->elems[i].partition);
        return;
    }
    if (w->closing) {
        drain_completions(w);
        store_progress(w);
        return;
    }
    if (lost) {
        /* someone else owns these now: forget them, store nothing */
        for (int i = 0; i < parts->cnt; i++)
            if (!strcmp(parts->elems[i].topic, w->topic_files))
                worker_tracker_reset(w->tracker, parts->elems[i].partition);
        return;
    }
    if (!drain_all(w, DRAIN_TIMEOUT_MS))
        MDB_LOG(MDB_LOG_WARN, "revoke: %zu task(s) still in flight after %d ms; their offsets stay uncommitted",
                w->inflight, DRAIN_TIMEOUT_MS);
    for (int i = 0; i < parts->cnt; i++)
        if (!strcmp(parts->elems[i].topic, w->topic_files))
            worker_tracker_reset(w->tracker, parts->elems[i].partition);
}

static bool dispatch(worker_t *w, const rd_kafka_message_t *msg)
{
    worker_task_t *t = calloc(1, sizeof *t);
    if (!t)
        return false;
    t->partition = msg->partition;
    t->offset = msg->offset;
    t->payload_len = msg->len;
    t->payload = malloc(msg->len + 1);
    if (msg->key_len) {
        t->key = malloc(msg->key_len);
        t->key_len = msg->key_len;
    }
    if (!t->payload || (msg->key_len && !t->key)) {
        worker_task_free(t);
        return false;
    }
    if (msg->len)
        memcpy(t->payload, msg->payload, msg->len);
    t->payload[msg->len] = '\0';
    if (msg->key_len)
        memcpy(t->key, msg->key, msg->key_len);
    if (!worker_tracker_add(w->tracker, t->partition, t->offset)) {
        /* a rewind (seek/redelivery after an error): restart the partition's bookkeeping */
        worker_tracker_reset(w->tracker, t->partition);
        if (!worker_tracker_add(w->tracker, t->partition, t->offset)) {
            worker_task_free(t);
            return false;
        }
    }
    t->epoch = worker_tracker_epoch(w->tracker, t->partition);
    w->inflight++;
    mdb_metric_inc(w->ws.m_consumed, 1);
    enqueue(&w->ws, t);
    return true;
}

static void register_metrics(worker_shared_t *ws)
{
    static const double secs[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1};
    ws->m_extracted = mdb_metrics_counter(ws->metrics, "metadb_worker_files_extracted_total",
                                          "files whose event was delivered to the instances topic", "");
    ws->m_extract_seconds = mdb_metrics_histogram(ws->metrics, "metadb_worker_extract_seconds",
                                                  "header read + extraction time per file", "", secs,
                                                  sizeof secs / sizeof secs[0]);
    ws->m_consumed = mdb_metrics_counter(ws->metrics, "metadb_worker_messages_consumed_total",
                                         "file tasks consumed", "");
    ws->m_produced_events = mdb_metrics_counter(ws->metrics, "metadb_worker_messages_produced_total",
                                                "records delivered, by topic", "topic=\"instances\"");
    ws->m_produced_dlq = mdb_metrics_counter(ws->metrics, "metadb_worker_messages_produced_total",
                                             "records delivered, by topic", "topic=\"dlq\"");
    ws->m_inflight = mdb_metrics_gauge(ws->metrics, "metadb_worker_inflight", "file tasks consumed, not yet delivered",
                                       "");
}

int main(int argc, char **argv)
{
    mdb_error_t err = {0};
    int rc = 1;
    mdb_config_t *cfg = mdb_config_new();
    mdb_lag_gauge_t *lag = NULL;
    worker_t w;
    memset(&w, 0, sizeof w);
    worker_shared_t *ws = &w.ws;
    pthread_mutex_init(&ws->qlock, NULL);
    pthread_cond_init(&ws->qcond, NULL);
    pthread_mutex_init(&ws->clock, NULL);

    if ((rc = mdb_daemon_start(cfg, "metadb-worker", "worker", usage, argc, argv)) != MDB_DAEMON_RUN)
        goto done;
    rc = 1;
    mdb_signal_install();
    int64_t nthreads = mdb_config_get_int(cfg, "worker.threads");
    int64_t max_header = mdb_config_get_int(cfg, "worker.max_header_bytes");
    if (nthreads < 1 || nthreads > 256) {
        MDB_LOG(MDB_LOG_ERROR, "worker.threads must be 1..256, got %lld", (long long)nthreads);
        rc = 2;
        goto done;
    }
    if (max_header < 1024) {
        MDB_LOG(MDB_LOG_ERROR, "worker.max_header_bytes must be >= 1024, got %lld", (long long)max_header);
        rc = 2;
        goto done;
    }
    ws->cfg = cfg;
    ws->max_header_bytes = (size_t)max_header;
    ws->max_message_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    ws->archive = mdb_archive_new_from_config(cfg, &err);
    if (!ws->archive) {
        MDB_LOG(MDB_LOG_ERROR, "archive: %s", err.message);
        goto done;
    }
    if (mdb_archive_root_count(ws->archive) == 0)
        MDB_LOG(MDB_LOG_WARN, "archive.roots is empty: every file task will be refused (outside_archive)");
    ws->sets = mdb_featuresets_new(mdb_config_get(cfg, "features.dir"), mdb_config_get(cfg, "features.default"),
                                   &err);
    if (!ws->sets) {
        MDB_LOG(MDB_LOG_ERROR, "feature sets: %s", err.message);
        goto done;
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
    w.topic_files = mdb_config_get(cfg, "topic.files");
    ws->topic_instances = mdb_config_get(cfg, "topic.instances");
    ws->topic_dlq = mdb_config_get(cfg, "topic.dlq");
    const char *topics[] = {w.topic_files, ws->topic_instances, ws->topic_dlq};
    if (!mdb_kafka_ensure_topics(cfg, topics, 3, (int)mdb_config_get_int(cfg, "topic.partitions"), &err)) {
        MDB_LOG(MDB_LOG_ERROR, "topics: %s", err.message);
        goto done;
    }
    ws->metrics = mdb_metrics_new("worker");
    if (!ws->metrics) {
        MDB_LOG(MDB_LOG_ERROR, "metrics: out of memory");
        goto done;
    }
    register_metrics(ws);
    int port = (int)mdb_config_get_int(cfg, "worker.metrics_port");
    if (port > 0 && !mdb_metrics_serve(ws->metrics, NULL, port, &err)) {
        MDB_LOG(MDB_LOG_ERROR, "metrics on port %d: %s", port, err.message);
        goto done;
    }
    if (!(w.tracker = worker_tracker_new())) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        goto done;
    }
    ws->kp = mdb_kafka_producer_new(cfg, on_delivery, &w, &err);
    if (!ws->kp) {
        MDB_LOG(MDB_LOG_ERROR, "kafka producer: %s", err.message);
        goto done;
    }
    const char *group = mdb_config_get(cfg, "worker.group");
    w.consumer = mdb_kafka_consumer_new(cfg, group, topics, 1, on_rebalance, &w, &err);
    if (!w.consumer) {
        MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
        goto done;
    }
    lag = mdb_lag_gauge_start(ws->metrics, mdb_kafka_consumer_handle(w.consumer), group, 0, &err);
    if (!lag)
        MDB_LOG(MDB_LOG_WARN, "consumer lag gauge not started: %s", err.message);

    w.nthreads = (size_t)nthreads;
    w.max_queue = w.nthreads * QUEUE_PER_THREAD;
    w.threads = calloc(w.nthreads, sizeof *w.threads);
    if (!w.threads) {
        MDB_LOG(MDB_LOG_ERROR, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < w.nthreads; i++)
        if (pthread_create(&w.threads[i], NULL, pool_main, &w) != 0) {
            MDB_LOG(MDB_LOG_ERROR, "cannot start extraction thread %zu", i);
            w.nthreads = i;
            mdb_signal_request_stop();
            break;
        }
    MDB_LOG(MDB_LOG_INFO, "worker started: %s -> %s (group %s), %zu thread(s), %zu archive root(s)", w.topic_files,
            ws->topic_instances, group, w.nthreads, mdb_archive_root_count(ws->archive));

    rc = 0;
    while (!mdb_signal_stop_requested()) {
        if (queue_len(ws) < w.max_queue) {
            bool fatal = false;
            rd_kafka_message_t *msg = mdb_kafka_consumer_poll(w.consumer, 50, &fatal, &err);
            if (fatal) {
                MDB_LOG(MDB_LOG_ERROR, "kafka consumer: %s", err.message);
                w.fatal = true;
                break;
            }
            if (msg) {
                if (!dispatch(&w, msg)) {
                    MDB_LOG(MDB_LOG_ERROR, "out of memory dispatching %s[%d]@%lld", w.topic_files,
                            (int)msg->partition, (long long)msg->offset);
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
        drain_completions(&w);
        store_progress(&w);
    }
    MDB_LOG(MDB_LOG_INFO, "stopping: draining %zu in-flight task(s)", w.inflight);
    if (!w.fatal && !drain_all(&w, DRAIN_TIMEOUT_MS))
        MDB_LOG(MDB_LOG_WARN, "%zu task(s) still in flight at shutdown; they will be consumed again", w.inflight);
    if (w.fatal)
        rc = 1;
done:
    pthread_mutex_lock(&ws->qlock);
    ws->stopping = true;
    pthread_cond_broadcast(&ws->qcond);
    pthread_mutex_unlock(&ws->qlock);
    for (size_t i = 0; i < w.nthreads; i++)
        pthread_join(w.threads[i], NULL);
    free(w.threads);
    if (lag)
        mdb_lag_gauge_stop(lag);
    /* Close commits the stored offsets (only ever delivered work, even
     * after a fatal error) and runs the revoke callback, which must not
     * wait any more. */
    w.closing = true;
    mdb_kafka_consumer_destroy(w.consumer);
    if (ws->kp) {
        mdb_error_t ferr = {0};
        if (!mdb_kafka_producer_flush(ws->kp, 10000, &ferr)) {
            MDB_LOG(MDB_LOG_ERROR, "producer: %s", ferr.message);
            rc = rc ? rc : 1;
        }
        drain_completions(&w);
        mdb_kafka_producer_destroy(ws->kp);
    }
    /* tasks never handed out */
    while (ws->qhead) {
        worker_task_t *t = ws->qhead;
        ws->qhead = t->next;
        worker_task_free(t);
    }
    worker_tracker_destroy(w.tracker);
    mdb_featuresets_destroy(ws->sets);
    mdb_archive_destroy(ws->archive);
    mdb_metrics_destroy(ws->metrics);
    mdb_config_destroy(cfg);
    pthread_mutex_destroy(&ws->qlock);
    pthread_cond_destroy(&ws->qcond);
    pthread_mutex_destroy(&ws->clock);
    MDB_LOG(MDB_LOG_INFO, "worker stopped (rc=%d)", rc);
    return rc;
}
