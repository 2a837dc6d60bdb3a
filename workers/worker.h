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
#include "mdb_metrics.h"

/* One consumed file task, from consumption to the delivery report of what
 * it produced (its event, or its DLQ record). */
typedef struct worker_task {
    int32_t partition;
    int64_t offset;
    uint64_t epoch;    /* assignment epoch of its partition when consumed */
    char *payload;     /* the metadb.files message value (copy) */
    size_t payload_len;
    char *key;         /* its key (the path), may be NULL */
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

#endif
