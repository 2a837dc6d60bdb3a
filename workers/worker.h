/* metadb-worker internals: the file task, the per-partition offset tracker,
 * the extraction pool and the processing of one task. main.c wires them to
 * Kafka; nothing here is used outside workers/. */
#ifndef MDB_WORKER_H
#define MDB_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_archive.h"
#include "mdb_extract.h"
#include "mdb_features.h"
#include "mdb_kafka.h"
#include "mdb_lag.h"
#include "mdb_metrics.h"

/* One consumed file task, from consumption to the delivery report of what
 * it produced (its event, or its DLQ record). */
typedef struct worker_task {
    int32_t partition;
    int64_t offset;
    uint64_t epoch; /* assignment epoch of its partition when consumed */
    char *payload;  /* the metadb.files message value (copy) */
    size_t payload_len;
    char *key; /* its key (the path), may be NULL */
    size_t key_len;
    /* result, filled by the pool thread */
    const char *out_topic; /* topic.instances or topic.dlq */
    char *out_key;
    char *out_value;
    size_t out_len;
    bool is_dlq;
    char reason[40];   /* DLQ reason, "" for an event */
    bool delivered_ok; /* set from the delivery report */
    char dr_error[MDB_ERROR_MSG_MAX];
    struct worker_task *next;
} worker_task_t;

void worker_task_free(worker_task_t *t); /* accepts NULL */

/* ---- offset tracking (main thread only) ----
 * Per partition, the offsets handed out in consumption order and whether
 * each is done. The committable offset is the last of the leading run of
 * done offsets, so a stored offset never passes an undelivered message. */
typedef struct worker_tracker worker_tracker_t;

worker_tracker_t *worker_tracker_new(void);
void worker_tracker_destroy(worker_tracker_t *t);
/* Start (or restart) tracking a partition; returns its new epoch. */
uint64_t worker_tracker_reset(worker_tracker_t *t, int32_t partition);
/* Current epoch of a partition (0 if never assigned). */
uint64_t worker_tracker_epoch(const worker_tracker_t *t, int32_t partition);
bool worker_tracker_add(worker_tracker_t *t, int32_t partition, int64_t offset);
/* Mark done; false if the offset is not tracked (partition reset since). */
bool worker_tracker_done(worker_tracker_t *t, int32_t partition, int64_t offset);
/* Pop the leading done run; returns its last offset or -1 if none. */
int64_t worker_tracker_advance(worker_tracker_t *t, int32_t partition);
/* Number of offsets tracked but not yet popped, over all partitions. */
size_t worker_tracker_pending(const worker_tracker_t *t);
/* Partitions known to the tracker, for iteration. */
size_t worker_tracker_partitions(const worker_tracker_t *t, int32_t *out, size_t max);

/* ---- shared state of the extraction threads ---- */
typedef struct {
    const mdb_config_t *cfg;
    mdb_archive_t *archive;
    mdb_featuresets_t *sets;
    mdb_kafka_producer_t *kp;
    mdb_metrics_t *metrics;
    const char *topic_instances;
    const char *topic_dlq;
    size_t max_message_bytes;
    size_t max_header_bytes;
    /* metrics */
    mdb_metric_t *m_extracted;
    mdb_metric_t *m_extract_seconds;
    mdb_metric_t *m_consumed;
    mdb_metric_t *m_produced_events;
    mdb_metric_t *m_produced_dlq;
    mdb_metric_t *m_inflight;
    /* the work queue (pool threads pop, main pushes) */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    worker_task_t *qhead, *qtail;
    size_t qlen;
    bool stopping;
    /* completions (delivery reports, produce errors), drained by main */
    pthread_mutex_t clock;
    worker_task_t *chead;
    size_t busy; /* tasks taken by a pool thread and not yet handed to Kafka (under qlock) */
} worker_shared_t;

/* Process one task in a pool thread: decode, resolve, extract, build the
 * event or DLQ record, produce it with the task as opaque. A produce that
 * fails at once is reported as a failed completion. */
void worker_process(worker_shared_t *ws, mdb_extract_ctx_t *ctx, worker_task_t *t);

/* Push a task to the completion list (thread-safe). */
void worker_complete(worker_shared_t *ws, worker_task_t *t);

/* Count a failure under its reason (registers the labelled series on first use). */
void worker_count_failure(worker_shared_t *ws, const char *reason);

/* ---- the daemon (worker_pool.c, worker_lifecycle.c) ---- */
#define WORKER_QUEUE_PER_THREAD 64
#define WORKER_DRAIN_TIMEOUT_MS 60000

typedef struct worker {
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

/* Lifecycle (worker_lifecycle.c). worker_init before anything; worker_start
 * validates the worker.* keys and builds archive, feature sets, topics,
 * metrics, producer, consumer and the extraction threads: 0, or the exit
 * code (2 for a bad key, 1 otherwise). worker_stop drains what can be
 * drained, commits only delivered work and frees everything but the
 * configuration; it returns rc, or 1 when the final producer flush fails. */
void worker_init(worker_t *w);
int worker_start(worker_t *w, mdb_config_t *cfg, mdb_lag_gauge_t **lag);
int worker_stop(worker_t *w, mdb_lag_gauge_t *lag, int rc);

/* The extraction pool and the main thread's bookkeeping (worker_pool.c). */
void *worker_pool_thread(void *arg); /* arg: the worker_t */
size_t worker_queue_len(worker_shared_t *ws);
/* Delivery report callback of the producer (ud: the worker_t). */
void worker_on_delivery(void *opaque, bool ok, const char *errstr, void *ud);
/* Rebalance callback of the consumer (ud: the worker_t). */
void worker_on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts);
/* Hand one consumed message to the pool; false on OOM. */
bool worker_dispatch(worker_t *w, const rd_kafka_message_t *msg);
/* Main thread: settle completions, store the offsets they allow. */
void worker_drain_completions(worker_t *w);
void worker_store_progress(worker_t *w);
/* Wait until nothing is in flight (or timeout_ms): true when drained. */
bool worker_drain_all(worker_t *w, int timeout_ms);
void worker_register_metrics(worker_shared_t *ws);

#endif
