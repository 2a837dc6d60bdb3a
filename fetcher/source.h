/* source: the interface every source of studies (a PACS) implements.
 *
 * The fetcher daemon knows nothing of DIMSE or DICOMweb: it asks a source to
 * find studies for a selector, to list what a study holds (so it knows what to
 * expect before moving anything), and to retrieve a study, a series or some
 * instances; every received instance is handed to a sink callback that lands it
 * (temp file, fsync, rename) and checks it. Gentleness (concurrency cap, pause
 * between retrievals, allowed hours, retries with backoff) is the fetcher's
 * job, around these calls; a source only makes one attempt per call and says
 * whether a failure is worth retrying (mdb_source_errc_t in err->code).
 *
 * Implementations: source_dimse.cpp (C-ECHO, C-FIND, C-MOVE to its own storage
 * SCP, DCMTK's dcmnet) and source_dicomweb.c (QIDO-RS, WADO-RS, libcurl). Each
 * exports one `const mdb_source_ops_t` (mdb_source_dimse_ops,
 * mdb_source_dicomweb_ops); mdb_source_open() picks it from cfg->kind.
 *
 * Threads: one mdb_source_t is used by one thread at a time (the fetcher opens
 * one per task). A source may call the sink from another thread (the DIMSE
 * storage SCP does) but never concurrently with itself, and never after the
 * call that was given the sink has returned. */
#ifndef MDB_SOURCE_H
#define MDB_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_UID_MAX 65 /* 64 characters + NUL */
#define MDB_AE_MAX 17  /* 16 characters + NUL */
#define MDB_SOURCE_NAME_MAX 64

typedef enum { MDB_SOURCE_DIMSE = 1, MDB_SOURCE_DICOMWEB = 2 } mdb_source_kind_t;

/* err->code of a failed source call (err->domain is MDB_ERR_IO). The fetcher
 * retries NETWORK and REFUSED with backoff, and not the others. */
typedef enum {
    MDB_SOURCE_E_NETWORK = 1, /* connect/read/write failed, timeout, peer went away */
    MDB_SOURCE_E_REFUSED,     /* association rejected, HTTP 429/503, peer busy */
    MDB_SOURCE_E_PROTOCOL,    /* the peer answered something invalid or an error status */
    MDB_SOURCE_E_NOTFOUND,    /* the peer says the object does not exist (HTTP 404) */
    MDB_SOURCE_E_CONFIG,      /* bad source configuration (no such host, token file unreadable) */
    MDB_SOURCE_E_SINK         /* the sink failed in a way that stops the retrieval (disk full) */
} mdb_source_errc_t;

/* One configured source: an entry of `pacs.sources` merged with the pacs.*
 * defaults (source_config.c parses it). Plain data, no pointers to free. */
typedef struct {
    char name[MDB_SOURCE_NAME_MAX]; /* "orthanc": jobs say "source": "pacs:orthanc" */
    int kind;                       /* mdb_source_kind_t */
    /* DIMSE */
    char host[256];
    int port;
    char called_ae[MDB_AE_MAX];  /* the PACS's AE title */
    char calling_ae[MDB_AE_MAX]; /* ours (pacs.ae_title or ae=), also the C-MOVE destination */
    int scp_port;                /* our storage SCP port for C-MOVE (pacs.scp_port or scp_port=) */
    /* DICOMweb */
    char url[1024];        /* base URL of the DICOMweb service, no trailing '/' */
    char token_file[1024]; /* bearer token read from this file at open; "" = none */
    /* Limits, enforced by the fetcher (sources only read timeout_s) */
    int max_associations; /* concurrent associations/HTTP retrievals to this source per fetcher */
    int pause_ms;         /* pause between two retrievals from this source */
    int hours_from;       /* allowed hours [from, to) local time, wrapping midnight; -1 = always */
    int hours_to;
    int retries;    /* attempts after the first on NETWORK/REFUSED */
    int backoff_ms; /* first backoff, doubled per attempt, capped at 60 s */
    int timeout_s;  /* network timeout of one call (DIMSE ACSE/DIMSE timeout, curl timeout) */
    /* Test switch (storage side), pacs.test_drop: off in production. When
     * test_drop_every = N > 0, a received instance whose SOP UID hashes to 0
     * modulo N is dropped: not handed to the sink, yet answered "success" to
     * the peer (a silent loss), so the fetcher's checks are exercised. With
     * test_drop_always false only whole-study retrievals drop (a re-request
     * gets everything); with true every retrieval drops the same instances. */
    int test_drop_every;
    bool test_drop_always;
    /* DIMSE: retrieve with C-GET on the same association instead of C-MOVE
     * (option retrieve=get): for a peer that does not know our AE. */
    bool dimse_cget;
} mdb_source_config_t;

/* What to look for. Exactly one of accession / patient_id / study_uid is set
 * (non-empty); date_from/date_to (YYYYMMDD, "" = open) narrow any of them and
 * may also be used alone with patient_id = "*" by `metadb pacs find`. */
typedef struct {
    const char *accession;
    const char *patient_id;
    const char *study_uid;
    const char *date_from;
    const char *date_to;
} mdb_source_selector_t;

/* One study found by find_studies. n_instances/n_series are -1 when the peer
 * did not say (NumberOfStudyRelatedInstances is optional). */
typedef struct {
    char study_uid[MDB_UID_MAX];
    char accession[MDB_UID_MAX];
    char patient_id[MDB_UID_MAX];
    char date[9];        /* YYYYMMDD or "" */
    char modalities[64]; /* "CT,SR" (ModalitiesInStudy joined with ',') or "" */
    char description[128];
    int n_series;
    int n_instances;
} mdb_source_study_t;

/* One instance a study holds (IMAGE-level C-FIND, QIDO /studies/{uid}/instances). */
typedef struct {
    char sop_uid[MDB_UID_MAX];
    char series_uid[MDB_UID_MAX];
} mdb_source_instance_t;

/* Growable arrays; init with {0}, free with the _free functions (accept NULL). */
typedef struct {
    mdb_source_study_t *items;
    size_t n, cap;
} mdb_source_studies_t;
typedef struct {
    mdb_source_instance_t *items;
    size_t n, cap;
} mdb_source_instances_t;

/* Append a copy; false on OOM (list unchanged). */
bool mdb_source_studies_push(mdb_source_studies_t *l, const mdb_source_study_t *s);
bool mdb_source_instances_push(mdb_source_instances_t *l, const mdb_source_instance_t *i);
void mdb_source_studies_free(mdb_source_studies_t *l);
void mdb_source_instances_free(mdb_source_instances_t *l);

/* What to retrieve: a study, or one series of it, or some instances of one
 * series (sop_uids, n_sop_uids > 0; series_uid then required). A source that
 * cannot retrieve at the asked level falls back to a coarser one (the sink
 * de-duplicates). */
typedef struct {
    const char *study_uid;
    const char *series_uid; /* NULL/"" = whole study */
    const char *const *sop_uids;
    size_t n_sop_uids;
} mdb_source_retrieve_t;

/* One received instance handed to the sink: either a complete DICOM file
 * (Part 10, with meta header) at `path` — a temp file the source wrote in
 * spool_dir, which the sink may rename away; the source unlinks it afterwards
 * if it still exists — or `data`/`len` bytes in memory (a multipart part, Part
 * 10 as WADO-RS sends application/dicom). sop_uid is a hint ("" if unknown);
 * the sink reads the UIDs from the object itself. */
typedef struct {
    const char *path;
    const void *data;
    size_t len;
    const char *sop_uid;
} mdb_source_item_t;

/* Lands one item. Returns true when it is durably landed (or was already
 * there: idempotent). false with err: the instance counts as failed; if
 * err->code is MDB_SOURCE_E_SINK the source should stop the retrieval and
 * return false with that error, otherwise go on with the other instances. */
typedef bool (*mdb_source_sink_fn)(void *ctx, const mdb_source_item_t *item, mdb_error_t *err);

/* The peer's own account of a retrieval (C-MOVE final response's counts, or
 * the parts WADO-RS sent), and what reached the sink. */
typedef struct {
    int completed;  /* sub-operations the peer reports completed (-1 unknown) */
    int failed;     /* ... failed (-1 unknown) */
    int warning;    /* ... completed with warning (-1 unknown) */
    int received;   /* items handed to the sink */
    int landed;     /* items the sink accepted */
    int dropped;    /* items dropped by the test switch */
    uint64_t bytes; /* bytes received */
} mdb_source_counts_t;

/* The vtable. Every function returns false and fills err on failure. */
typedef struct {
    const char *kind_name; /* "dimse", "dicomweb" */
    /* Allocate the source's state for cfg (copied; spool_dir is where temp
     * files go, on the same file system as the landing area). No network. */
    bool (*open)(const mdb_source_config_t *cfg, const char *spool_dir, void **state, mdb_error_t *err);
    void (*close)(void *state); /* accepts NULL */
    /* C-ECHO / a cheap GET (e.g. QIDO /studies?limit=1). */
    bool (*echo)(void *state, mdb_error_t *err);
    /* Study-level search; no match is success with out->n == 0. */
    bool (*find_studies)(void *state, const mdb_source_selector_t *sel, mdb_source_studies_t *out, mdb_error_t *err);
    /* Every instance of a study (what a complete retrieval must deliver). */
    bool (*list_instances)(void *state, const char *study_uid, mdb_source_instances_t *out, mdb_error_t *err);
    /* Retrieve; each received instance goes to sink(sink_ctx, ...). Returns
     * true if the exchange itself completed (even if the peer reported failed
     * sub-operations: counts says so); the fetcher then checks what landed. */
    bool (*retrieve)(void *state, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                     mdb_source_counts_t *counts, mdb_error_t *err);
} mdb_source_ops_t;

extern const mdb_source_ops_t mdb_source_dimse_ops;
extern const mdb_source_ops_t mdb_source_dicomweb_ops;

/* An opened source: ops + state + its config. */
typedef struct mdb_source mdb_source_t;

/* Open a source of cfg->kind; NULL + err on failure. Destroy with mdb_source_close. */
mdb_source_t *mdb_source_open(const mdb_source_config_t *cfg, const char *spool_dir, mdb_error_t *err);
void mdb_source_close(mdb_source_t *src);
const mdb_source_config_t *mdb_source_config(const mdb_source_t *src);
bool mdb_source_echo(mdb_source_t *src, mdb_error_t *err);
bool mdb_source_find_studies(mdb_source_t *src, const mdb_source_selector_t *sel, mdb_source_studies_t *out,
                             mdb_error_t *err);
bool mdb_source_list_instances(mdb_source_t *src, const char *study_uid, mdb_source_instances_t *out, mdb_error_t *err);
bool mdb_source_retrieve(mdb_source_t *src, const mdb_source_retrieve_t *req, mdb_source_sink_fn sink, void *sink_ctx,
                         mdb_source_counts_t *counts, mdb_error_t *err);

/* true if err->code is worth retrying (NETWORK, REFUSED). */
bool mdb_source_error_retryable(const mdb_error_t *err);
/* Stable short name of an mdb_source_errc_t ("network", "refused", ...), used
 * as the failure reason in jobs and metrics; never NULL. */
const char *mdb_source_errc_name(int code);

/* The test switch: should this received instance of this retrieval be
 * dropped? Pure; sources call it once per received item (with its SOP UID). */
bool mdb_source_test_should_drop(const mdb_source_config_t *cfg, const mdb_source_retrieve_t *req, const char *sop_uid);

#ifdef __cplusplus
}
#endif
#endif
