/* metadb-fetcher's modules: landing received instances (fetcher_land.c) and
 * handling one retrieve task (fetcher_task.c). main.c owns the Kafka loop. */
#ifndef MDB_FETCHER_H
#define MDB_FETCHER_H

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
#include "source.h"

/* ---- landing: <root>/<source>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm ---- */

/* Is s a DICOM UID usable as a path component (1..64 of [0-9.], not "." or "..")? Pure. */
bool fetcher_uid_valid(const char *s);

/* The landed path of an instance into buf; false if it does not fit or a UID is invalid. Pure. */
bool fetcher_land_path(char *buf, size_t cap, const char *root, const char *source, const char *study,
                       const char *series, const char *sop);

/* The sink context of one retrieval (fetcher_land_sink is its mdb_source_sink_fn). */
typedef struct {
    const char *root;   /* landing root (fetcher.root) */
    const char *source; /* source name (a path component) */
    const char *spool;  /* <root>/.spool: temp files, same file system */
    const char *study;  /* the study being retrieved: other studies are refused */
    int64_t landed_new; /* files renamed into place by this retrieval */
    int64_t landed_dup; /* files already there (nothing moved twice) */
    uint64_t bytes;
} fetcher_land_t;

bool fetcher_land_sink(void *ctx, const mdb_source_item_t *item, mdb_error_t *err);

/* ---- one retrieve task ---- */

/* Delivery bookkeeping of one publishing round (the msg_opaque of each task;
 * main gives the producer mdb_daemon_delivery_report). */
typedef mdb_daemon_delivery_t fetcher_delivery_t;

typedef struct {
    const mdb_config_t *cfg;
    mdb_mongo_t *mongo;
    mdb_catalog_t *catalog;
    mdb_kafka_producer_t *kp;
    const char *topic_files;
    const char *topic_dlq;
    const char *root; /* fetcher.root (canonical) */
    char spool[4096]; /* <root>/.spool */
    mdb_source_config_t *sources;
    size_t n_sources;
    size_t max_message_bytes;
    int64_t *last_retrieve_ms; /* per source: end of the last retrieval (pause_ms) */
    /* metrics (may be NULL) */
    mdb_metrics_t *metrics;
} fetcher_t;

/* fetcher.root must be one of archive.roots (so the archive gate accepts the
 * landed files): its canonical form goes into f->root and *root_out (caller
 * frees), the spool <root>/.spool is created and its temp files older than
 * an hour (a killed fetcher's) removed. */
bool fetcher_setup_root(fetcher_t *f, const mdb_archive_t *a, char **root_out, mdb_error_t *err);

typedef enum { FETCHER_DONE = 0, FETCHER_RETRY, FETCHER_STOP } fetcher_result_t;

/* Handle one message of topic.retrieve. DONE: store the offset; RETRY: a
 * transient failure (database, Kafka) — try the same message again; STOP: a
 * stop was requested mid-way (do not store). */
fetcher_result_t fetcher_handle(fetcher_t *f, const rd_kafka_message_t *msg, mdb_error_t *err);

/* ---- pacs.max_associations across fetcher processes (fetcher_slots.c) ---- */

/* Start the slot heartbeat (extends the leases of held slots). */
bool fetcher_slots_init(mdb_mongo_t *m, mdb_error_t *err);
void fetcher_slots_shutdown(void);
/* Wait for and take one of sc's slots (its id into slot); false on a database error or stop. */
bool fetcher_slot_acquire(fetcher_t *f, const mdb_source_config_t *sc, char *slot, size_t cap, mdb_error_t *err);
void fetcher_slot_release(fetcher_t *f, const char *slot);

/* Register the fetcher's metrics on m (per source labels are added lazily). */
void fetcher_metrics_init(fetcher_t *f, mdb_metrics_t *m);

#endif
