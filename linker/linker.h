/* The linker's internal interface: the batch (linker/batch.c) gathers
 * instance events and DLQ records with their offsets and flushes them as
 * one unit of durable work; the jobs step (linker/jobs.c) records per-file
 * outcomes in job_files and derives each touched job's counters and final
 * state from them; flow.c decides when to flush and pauses consumption
 * while flushes fail; lifecycle.c opens and closes everything. main.c is
 * the config, the signals and the loop. */
#ifndef LINKER_H
#define LINKER_H

#include <jansson.h>
#include <stdbool.h>
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

    linker_item_t *items;
    size_t nitems, capitems;
    size_t dlq_pending; /* DLQ records this batch produced (flush waits for them) */
    int64_t batch_started_ms;

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

/* Decode msg into the batch (invalid instance events become DLQ records of
 * stage "linker"; the message's offset is kept either way). False only on
 * OOM or when the DLQ record cannot be enqueued (err set). */
bool linker_batch_add(linker_t *L, const rd_kafka_message_t *msg, mdb_error_t *err);

/* Write the batch (documents, job files, job counters), then store every
 * offset of it. On failure nothing is stored and the batch is kept. */
bool linker_batch_flush(linker_t *L, mdb_error_t *err);

/* Forget the batch without storing offsets (lost assignment). */
void linker_batch_drop(linker_t *L);

size_t linker_batch_count(const linker_t *L);

/* Load archive.roots into L->roots (false only on OOM); free them. */
bool linker_roots_load(linker_t *L, mdb_error_t *err);
void linker_roots_free(linker_t *L);

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

/* The consumer's rebalance callback (ud is the linker_t): flush before a
 * revoke; when the assignment was lost or the flush fails, seek the kept
 * partitions back and drop the batch uncommitted. */
void linker_on_rebalance(void *ud, bool assigned, bool lost, const rd_kafka_topic_partition_list_t *parts);
/* Poll timeout for this turn (ms): what is left of batch_ms, at most 100.
 * Resumes consumption when a rebalance dropped the batch that failed. */
int linker_poll_timeout(linker_t *L, int64_t now);
/* Flush the batch if it is due; on failure pause every partition and retry
 * with backoff (0.5 s doubling to 30 s), on success resume. */
void linker_flush_when_due(linker_t *L, int64_t now);
/* Pause (or resume) every assigned partition. */
void linker_pause(linker_t *L, bool pause);
/* Records already fetched or waiting in the assigned partitions, from the
 * watermarks librdkafka caches with each fetch (no network round trip). */
int64_t linker_local_backlog(linker_t *L);

/* ---- jobs.c ---- */

/* Collection names of the jobs in ids (job_id -> {collection, producer_errors,
 * nerrors}); jobs without a document are absent. */
bool linker_jobs_load(linker_t *L, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);

/* applied["job\ntp"] = the offset counted so far by the progress document of
 * each (job, partition) pair of the batch's records (absent: none yet). */
bool linker_jobs_load_applied(linker_t *L, json_t *applied, mdb_error_t *err);

/* Record the batch's file outcomes, add what changed to the progress of each
 * (job, partition) pair and refresh the touched jobs from the sums. jobs is
 * what linker_jobs_load returned; link_deltas (may be NULL) is
 * mdb_docs_model_link_deltas; applied what linker_jobs_load_applied gave. */
bool linker_jobs_apply(linker_t *L, json_t *jobs, const json_t *link_deltas, const json_t *applied, const char *now,
                       mdb_error_t *err);

/* "topic:partition" of a record. */
void linker_item_tp(const linker_item_t *it, char *buf, size_t cap);

int64_t linker_now_ms(void);

#endif
