/* The linker's internal interface: the batch (linker/batch.c) gathers
 * instance events and DLQ records with their offsets and flushes them as
 * one unit of durable work, written by a writer thread (linker/writer.c)
 * while the next batch is consumed; the jobs step (linker/jobs.c) records per-file
 * outcomes in job_files and derives each touched job's counters and final
 * state from them; flow.c decides when to flush and pauses consumption
 * while flushes fail; lifecycle.c opens and closes everything. main.c is
 * the config, the signals and the loop. */
#ifndef LINKER_H
#define LINKER_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_config.h"
#include "mdb_docs.h"
#include "mdb_kafka.h"
#include "mdb_lag.h"
#include "mdb_metrics.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"
#include "mdb_store.h"

/* One consumed record. */
typedef enum { ITEM_EVENT = 0, ITEM_DLQ, ITEM_SKIP } item_kind_t;

typedef struct {
    int kind; /* item_kind_t */
    char *topic;
    int32_t partition;
    int64_t offset;
    mdb_instance_msg_t ev; /* ITEM_EVENT */
    json_t *dicom;         /* ITEM_EVENT: the event's "dicom" object (may be NULL) */
    char *feature_set;     /* ITEM_EVENT (may be NULL) */
    json_t *integrity;     /* ITEM_EVENT: the event's "integrity" object, NULL for a whole file */
    mdb_dlq_msg_t dlq;     /* ITEM_DLQ */
} linker_item_t;

/* Records consumed and not yet written, in consumption order (per
 * partition, offsets ascend). */
typedef struct {
    linker_item_t *items;
    size_t nitems, capitems;
    size_t dlq_pending; /* DLQ records these records produced (written only once they are delivered) */
    int64_t started_ms; /* when the first record came */
} linker_batch_t;

/* What writing one batch did (filled by the thread that wrote it). */
typedef struct {
    bool ok;
    mdb_error_t err;
    mdb_docs_stats_t stats;
    double seconds;
    uint64_t round_trips;
} linker_write_result_t;

typedef struct {
    mdb_metric_t *events, *dlq_records, *invalid, *instances_linked, *instances_existing, *conflicts, *batches,
        *flush_failures, *round_trips, *batch_size, *write_seconds;
} linker_metrics_t;

#define LINKER_BACKOFF_MIN_MS 500

typedef struct {
    const mdb_config_t *cfg;
    mdb_mongo_t *mongo;
    mdb_store_t *store;
    const char *wc;
    mdb_kafka_consumer_t *consumer;
    mdb_kafka_producer_t *dlq_producer;
    mdb_metrics_t *metrics;
    mdb_lag_gauge_t *lag;
    const char *topic_instances, *topic_dlq, *group;
    int64_t batch_size, batch_ms; /* linker.batch_size, linker.batch_ms */
    size_t max_message_bytes;
    char **roots; /* archive.roots as configured and canonical: event paths must lie below one (none = any) */
    size_t nroots;
    linker_metrics_t mx;

    linker_batch_t batch; /* being filled by the main thread */

    /* The writer (writer.c): a thread that writes wbatch while the main
     * thread consumes and decodes the next batch. Only the writer touches
     * wbatch, wres, mongo and store while `writing` and not `written`; the
     * main thread reads them after joining it. */
    linker_batch_t wbatch;
    linker_write_result_t wres;
    pthread_t writer;
    bool writing;        /* a write was started and its result not collected yet */
    bool joinable;       /* ... on a thread (false: it ran on the main thread) */
    atomic_bool written; /* set by the writer thread as its last action */
    bool broken;         /* records were dropped unwritten (OOM): store no offset any more, stop */

    /* flush failures: consumption paused, next retry at retry_at_ms */
    bool paused;
    int64_t retry_at_ms, backoff_ms;

    /* totals for the exit report */
    uint64_t total_events, total_instances_new, total_batches;
    uint64_t round_trips_at_start; /* index creation etc., not part of linking */
    double total_flush_seconds;
    int64_t first_event_ms, last_flush_ms;
} linker_t;

/* ---- batch.c ---- */

/* Decode msg into L->batch (invalid instance events become DLQ records of
 * stage "linker"; the message's offset is kept either way). False only on
 * OOM or when the DLQ record cannot be enqueued (err set). */
bool linker_batch_add(linker_t *L, const rd_kafka_message_t *msg, mdb_error_t *err);

/* Everything not yet written: wait for the writer (a write that failed goes
 * back in front of L->batch), then write L->batch on this thread and store
 * every offset of it. On failure nothing is stored and the batch is kept. */
bool linker_batch_flush(linker_t *L, mdb_error_t *err);

/* Before B is written (main thread): wait until the DLQ records its
 * records produced are delivered. */
bool linker_batch_ready(linker_t *L, linker_batch_t *B, mdb_error_t *err);

/* Write B (documents, job files, job counters) and nothing else: no
 * offsets, no metrics, no consumer. Runs on the writer thread, or on the
 * main thread while no writer runs; uses L->mongo and L->store. */
void linker_batch_write(linker_t *L, const linker_batch_t *B, linker_write_result_t *res);

/* After B's write succeeded (main thread): store every offset of B, count
 * it in the metrics and totals, empty B. False (B kept) if an offset could
 * not be stored. */
bool linker_batch_done(linker_t *L, linker_batch_t *B, const linker_write_result_t *res, mdb_error_t *err);

/* Put src's records in front of dst's (src: the older records) and empty
 * src. False only on OOM, when both are emptied (nothing of either may be
 * stored then: the caller stops the linker). */
bool linker_batch_prepend(linker_batch_t *dst, linker_batch_t *src);

/* Forget B's records without storing offsets; free frees its array too. */
void linker_batch_clear(linker_batch_t *B);
void linker_batch_free(linker_batch_t *B);

/* Forget L->batch without storing offsets (lost assignment). The writer
 * must not be running. */
void linker_batch_drop(linker_t *L);

/* Records consumed and not stored yet (L->batch plus the one being written). */
size_t linker_batch_count(const linker_t *L);

/* Load archive.roots into L->roots (false only on OOM); free them. */
bool linker_roots_load(linker_t *L, mdb_error_t *err);
void linker_roots_free(linker_t *L);

/* ---- writer.c ---- */

/* Hand L->batch to a writer thread (it becomes L->wbatch; L->batch starts
 * empty). The writer must be idle and the batch ready (linker_batch_ready).
 * Without a thread (pthread_create failed) the write runs here. */
void linker_write_start(linker_t *L);

/* Collect the writer's result. Returns 0 when no write finished (or none
 * runs; block waits for a running one), 1 when a write succeeded and its
 * offsets were stored, -1 when it failed (err set): its records went back in
 * front of L->batch, to be written again. lost: the assignment was lost, so
 * the records go back even after a successful write (nothing is stored). */
int linker_write_collect(linker_t *L, bool block, bool lost, mdb_error_t *err);

/* ---- lifecycle.c ---- */

/* Open everything from cfg (L zeroed, batch_size/batch_ms set): archive
 * roots, database (waits up to 30 s), indexes, store, topics, metrics, DLQ
 * producer, consumer, lag gauge. False with err on the first failure;
 * linker_close releases what was opened either way. mongoc_init is main's. */
bool linker_open(linker_t *L, const mdb_config_t *cfg, mdb_error_t *err);
/* Release everything linker_open opened, in reverse, flushing the DLQ
 * producer (false if records stayed undelivered). Leaves L zeroed. */
bool linker_close(linker_t *L);
/* Log the exit summary: events, batches, round trips per event, rates. */
void linker_report(const linker_t *L);

/* ---- flow.c ---- */

/* The consumer's rebalance callback (ud is the linker_t): wait for the
 * write in flight, then flush before a revoke; when the assignment was lost
 * or the flush fails, seek the kept partitions back and drop the batch (and
 * the write's records, unless they were stored) uncommitted. */
void linker_on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts);
/* Poll timeout for this turn (ms): 10 while a write runs, else what is left
 * of batch_ms, at most 100. Resumes consumption when a rebalance dropped
 * the batch that failed. */
int linker_poll_timeout(linker_t *L, int64_t now);
/* Collect a finished write (a failed one pauses every partition and is
 * retried with backoff: 0.5 s doubling to 30 s; a success resumes), then
 * hand the batch to the writer if it is free and the batch is due. */
void linker_flush_when_due(linker_t *L, int64_t now);
/* Pause (or resume) every assigned partition. */
void linker_pause(linker_t *L, bool pause);

/* ---- jobs.c ---- */

/* Collection names of the jobs in ids (job_id -> {collection, producer_errors,
 * nerrors}); jobs without a document are absent. */
bool linker_jobs_load(linker_t *L, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);

/* applied["job\ntp"] = the offset counted so far by the progress document of
 * each (job, partition) pair of B's records (absent: none yet). */
bool linker_jobs_load_applied(linker_t *L, const linker_batch_t *B, json_t *applied, mdb_error_t *err);

/* B's file outcomes as job_files documents (_id -> document, done wins
 * within the batch) and the origin tags of B's records per _id: new objects
 * that share nothing with B. */
bool linker_jobs_file_docs(const linker_batch_t *B, const char *now, json_t **files, json_t **origins,
                           mdb_error_t *err);

/* Write them (inserted, or failed -> done) and set *deltas (the caller's
 * reference; left NULL when there are none) to what changed per (job,
 * partition) pair. It does not depend on the documents, so it runs beside
 * mdb_docs_apply (on its own thread and database connection). applied is
 * what linker_jobs_load_applied gave. */
bool linker_jobs_write_files(linker_t *L, json_t *files, const json_t *origins, const json_t *applied, const char *now,
                             json_t **deltas, mdb_error_t *err);

/* Then add deltas and link_deltas (mdb_docs_model_link_deltas, may be NULL)
 * to the progress of each (job, partition) pair and refresh the touched jobs
 * from the sums. jobs is what linker_jobs_load returned. */
bool linker_jobs_apply(linker_t *L, const linker_batch_t *B, json_t *jobs, const json_t *link_deltas, json_t *deltas,
                       const char *now, mdb_error_t *err);

/* "topic:partition" of a record. */
static inline void linker_item_tp(const linker_item_t *it, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s:%d", it->topic, (int)it->partition);
}

int64_t linker_now_ms(void);

#endif
