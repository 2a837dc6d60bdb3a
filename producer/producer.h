/* The producer's job handler: one job request message in, its file tasks out.
 * main.c owns the Kafka consumer loop; producer_job.c validates a message,
 * creates the job document, resolves the selectors through a resolver,
 * publishes one metadb.files task per file and waits for every delivery
 * report before telling main that the message's offset may be stored. */
#ifndef MDB_PRODUCER_H
#define MDB_PRODUCER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdb_archive.h"
#include "mdb_catalog.h"
#include "mdb_config.h"
#include "mdb_daemon.h"
#include "mdb_kafka.h"
#include "mdb_metrics.h"
#include "mdb_mongo.h"

/* Delivery bookkeeping of one publishing round (the msg_opaque of each task;
 * main gives the producer mdb_daemon_delivery_report). */
typedef mdb_daemon_delivery_t producer_delivery_t;

typedef struct {
    const mdb_config_t *cfg;
    mdb_mongo_t *mongo;
    const mdb_archive_t *archive;
    mdb_resolver_t *resolver;
    mdb_kafka_producer_t *kp;
    const char *topic_files;
    const char *topic_dlq;
    const char *topic_retrieve; /* retrieve tasks for the fetcher (jobs with a PACS source) */
    mdb_strv_t pacs_names;      /* names of pacs.sources entries, in order ("auto" uses the first) */
    size_t max_message_bytes;
    int delivery_timeout_ms; /* longest wait for all delivery reports of one job */

    /* metrics (may be NULL) */
    mdb_metric_t *m_jobs_received;
    mdb_metric_t *m_jobs_invalid;
    mdb_metric_t *m_jobs_duplicate;
    mdb_metric_t *m_jobs_failed;
    mdb_metric_t *m_jobs_published;
    mdb_metric_t *m_files_published;
    mdb_metric_t *m_files_refused;
    mdb_metric_t *m_selectors_not_found;
    mdb_metric_t *m_publish_failures;
    mdb_metric_t *m_job_seconds;
} producer_t;

typedef enum {
    PRODUCER_DONE = 0, /* handled (processed, duplicate, or sent to the DLQ): store the offset */
    PRODUCER_RETRY     /* transient failure (Kafka or MongoDB): do not store; try again later */
} producer_result_t;

/* ---- PACS sources (producer_retrieve.c) ---- */

typedef enum { PRODUCER_SRC_ARCHIVE = 0, PRODUCER_SRC_AUTO, PRODUCER_SRC_PACS } producer_src_mode_t;

/* The names of pacs.sources entries (text before each entry's first ':'). */
bool producer_pacs_names(const mdb_config_t *cfg, mdb_strv_t *out, mdb_error_t *err);

/* A job's "source": NULL/"archive", "auto" (needs a configured PACS) or
 * "pacs:NAME" (NAME configured). *pacs receives the PACS name (points into p
 * or jm). false + a message for the job's failure otherwise. */
bool producer_source_mode(const producer_t *p, const char *source, int *mode, const char **pacs, char *why,
                          size_t why_len);

/* Can this selector kind be fetched from a PACS (accession, patient, study)? */
bool producer_kind_retrievable(int kind);

/* Publish one retrieve task per selector index in idx (n of them) and wait
 * for every delivery report. */
bool producer_publish_retrieves(producer_t *p, const char *job_id, const char *feature_set, const char *pacs,
                                const void *sels /* mdb_selectors_t* */, const size_t *idx, size_t n, mdb_error_t *err);

/* Handle one message of topic.jobs. err says what went wrong on RETRY. */
producer_result_t producer_handle(producer_t *p, const rd_kafka_message_t *msg, mdb_error_t *err);

#endif
