/* worker_pool.c: metadb-worker's extraction pool (threads popping file tasks
 * from the queue) and the main thread's bookkeeping: dispatching consumed
 * messages, settling completions (delivery reports), storing offsets in
 * consumption order through the tracker, and the rebalance callback, which
 * drains and stores before a revoke is committed. See workers/main.c for the
 * delivery rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_log.h"
#include "mdb_msg.h"
#include "mdb_signal.h"
#include "worker.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the extraction pool ---- */

void *worker_pool_thread(void *arg)
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

size_t worker_queue_len(worker_shared_t *ws)
{
    pthread_mutex_lock(&ws->qlock);
    size_t n = ws->qlen;
    pthread_mutex_unlock(&ws->qlock);
    return n;
}

/* Delivery report (runs on whichever thread polls the producer). */
void worker_on_delivery(void *opaque, bool ok, const char *errstr, void *ud)
{
    worker_t *w = ud;
    worker_task_t *t = opaque;
    t->delivered_ok = ok;
    if (!ok)
        snprintf(t->dr_error, sizeof t->dr_error, "%s", errstr ? errstr : "delivery failed");
    worker_complete(&w->ws, t);
}

/* ---- main-thread bookkeeping ---- */

void worker_store_progress(worker_t *w)
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
void worker_drain_completions(worker_t *w)
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
            mdb_dlq_msg_t d = {
                .job_id = fm.job_id, .path = fm.path, .stage = "worker", .error = "event_too_large", .message = msg};
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
bool worker_drain_all(worker_t *w, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (w->inflight > 0 && now_ms() < deadline && !w->fatal) {
        mdb_kafka_producer_poll(w->ws.kp, 20);
        worker_drain_completions(w);
        worker_store_progress(w);
    }
    worker_drain_completions(w);
    worker_store_progress(w);
    return w->inflight == 0;
}

void worker_on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts)
{
    worker_t *w = ud;
    if (assigned) {
        for (int i = 0; i < parts->cnt; i++)
            if (!strcmp(parts->elems[i].topic, w->topic_files))
                worker_tracker_reset(w->tracker, parts->elems[i].partition);
        return;
    }
    if (w->closing) {
        worker_drain_completions(w);
        worker_store_progress(w);
        return;
    }
    if (lost) {
        /* someone else owns these now: forget them, store nothing */
        for (int i = 0; i < parts->cnt; i++)
            if (!strcmp(parts->elems[i].topic, w->topic_files))
                worker_tracker_reset(w->tracker, parts->elems[i].partition);
        return;
    }
    if (!worker_drain_all(w, WORKER_DRAIN_TIMEOUT_MS))
        MDB_LOG(MDB_LOG_WARN, "revoke: %zu task(s) still in flight after %d ms; their offsets stay uncommitted",
                w->inflight, WORKER_DRAIN_TIMEOUT_MS);
    for (int i = 0; i < parts->cnt; i++)
        if (!strcmp(parts->elems[i].topic, w->topic_files))
            worker_tracker_reset(w->tracker, parts->elems[i].partition);
}

bool worker_dispatch(worker_t *w, const rd_kafka_message_t *msg)
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

void worker_register_metrics(worker_shared_t *ws)
{
    static const double secs[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1};
    ws->m_extracted = mdb_metrics_counter(ws->metrics, "metadb_worker_files_extracted_total",
                                          "files whose event was delivered to the instances topic", "");
    ws->m_extract_seconds =
        mdb_metrics_histogram(ws->metrics, "metadb_worker_extract_seconds", "header read + extraction time per file",
                              "", secs, sizeof secs / sizeof secs[0]);
    ws->m_consumed =
        mdb_metrics_counter(ws->metrics, "metadb_worker_messages_consumed_total", "file tasks consumed", "");
    ws->m_produced_events = mdb_metrics_counter(ws->metrics, "metadb_worker_messages_produced_total",
                                                "records delivered, by topic", "topic=\"instances\"");
    ws->m_produced_dlq = mdb_metrics_counter(ws->metrics, "metadb_worker_messages_produced_total",
                                             "records delivered, by topic", "topic=\"dlq\"");
    ws->m_inflight =
        mdb_metrics_gauge(ws->metrics, "metadb_worker_inflight", "file tasks consumed, not yet delivered", "");
}
