/* mdb_catalog: the archive index (MongoDB collection `catalog`) and the
 * resolvers that turn job selectors into file paths.
 *
 * One catalog document per archive directory that holds files:
 *   {_id: <canonical dir>, root, dir, mtime: <dir mtime, ns>, sig: <hash of
 *    the files' names, sizes and mtimes>, files: N DICOM files, nondicom: K,
 *    series: [{study_uid, series_uid, accession_number, patient_id, modality,
 *              files: [file names, sorted]}], indexed_at}
 * A directory mixing several series or studies has one series entry per
 * (study, series) pair. Indexes: series.accession_number, series.patient_id,
 * series.study_uid, series.series_uid, root.
 *
 * The crawl reads only the five tags above (mdb_dicom_read_tags), never
 * follows directory symlinks, checks file symlinks with mdb_archive_resolve
 * (those escaping the roots are refused and counted), and is incremental: a
 * directory whose mtime (and, with verify, file signature) is unchanged is
 * not read again; catalog documents of directories that vanished (or hold no
 * files any more) are removed at the end of a complete crawl.
 *
 * Resolvers: mdb_resolver_t is a small interface (resolve one selector to a
 * list of paths) with the catalog as its first implementation; a PACS
 * resolver (DICOMweb QIDO-RS or C-FIND) can implement the same operations. */
#ifndef MDB_CATALOG_H
#define MDB_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_archive.h"
#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_CATALOG_COLL "catalog"

typedef struct mdb_catalog mdb_catalog_t;

/* A catalog over database m, checking paths with archive a (neither owned;
 * both must outlive the catalog). NULL on OOM. */
mdb_catalog_t *mdb_catalog_new(mdb_mongo_t *m, const mdb_archive_t *a, mdb_error_t *err);
void mdb_catalog_destroy(mdb_catalog_t *c); /* accepts NULL */

/* Create the catalog indexes (idempotent). */
bool mdb_catalog_ensure_indexes(mdb_catalog_t *c, mdb_error_t *err);

/* ---- indexing ---- */
typedef struct {
    uint64_t dirs_visited;     /* every directory walked */
    uint64_t dirs_scanned;     /* directories whose files were read */
    uint64_t dirs_unchanged;   /* skipped: mtime (and signature) unchanged */
    uint64_t dirs_removed;     /* catalog documents deleted (dir gone or emptied) */
    uint64_t dirs_failed;      /* directories that could not be read (kept as they were) */
    uint64_t files_indexed;    /* DICOM files read in scanned directories */
    uint64_t files_cataloged;  /* DICOM files in the catalog for this root after the run */
    uint64_t nondicom;         /* files skipped as not DICOM (or without UIDs) in scanned dirs */
    uint64_t symlinks_refused; /* symlinks pointing outside every archive root */
    uint64_t symlinks_skipped; /* symlinks to directories (not followed) or dangling */
    uint64_t series;           /* series entries written */
    double elapsed_s;
} mdb_catalog_stats_t;

typedef struct {
    bool full;   /* re-read every directory regardless of mtime */
    bool verify; /* also re-read directories whose files changed size/mtime in place */
    /* Called about every 200 ms (and never from another thread). May be NULL. */
    void (*progress)(const mdb_catalog_stats_t *st, const char *dir, void *ud);
    void *progress_ud;
    /* Polled between directories; true stops the crawl (nothing is removed). May be NULL. */
    bool (*should_stop)(void *ud);
    void *stop_ud;
    /* Called for each problem worth telling the operator (unreadable dir,
     * refused symlink); may be NULL. */
    void (*warn)(const char *path, const char *what, void *ud);
    void *warn_ud;
} mdb_catalog_index_opts_t;

/* Crawl root (must be one of the archive's roots, given as configured or
 * canonical) into the catalog. stats is zeroed first. False on a database
 * error, an unreadable root or an interrupted crawl (stats hold what was done). */
bool mdb_catalog_index_root(mdb_catalog_t *c, const char *root, const mdb_catalog_index_opts_t *opts,
                            mdb_catalog_stats_t *stats, mdb_error_t *err);

/* ---- resolution ---- */

/* Receives one resolved path; return false to abort the resolution (OOM). */
typedef bool (*mdb_resolver_file_fn)(const char *path, void *ud);

typedef struct {
    const char *name; /* "catalog", "dicomweb", ... */
    /* Resolve one selector (kind: MDB_SEL_ACCESSION/PATIENT/STUDY/SERIES of
     * mdb_jobs.h) to paths, each reported once through fn, sorted. *nfiles
     * receives the count. False only on errors (nothing found is success
     * with *nfiles == 0). */
    bool (*resolve)(void *self, int kind, const char *value, mdb_resolver_file_fn fn, void *ud, size_t *nfiles,
                    mdb_error_t *err);
    void (*destroy)(void *self); /* may be NULL */
    /* Optional: resolve many values of one kind in few round trips. out[i]
     * receives the sorted, unique paths of values[i] (out has n cleared
     * entries on entry). NULL: mdb_resolver_resolve_many loops over resolve. */
    bool (*resolve_many)(void *self, int kind, const char *const *values, size_t n, mdb_strv_t *out, mdb_error_t *err);
} mdb_resolver_ops_t;

typedef struct mdb_resolver mdb_resolver_t;

/* Wrap an implementation; takes ownership of self (destroyed with ops->destroy). */
mdb_resolver_t *mdb_resolver_new(const mdb_resolver_ops_t *ops, void *self);
bool mdb_resolver_resolve(mdb_resolver_t *r, int kind, const char *value, mdb_resolver_file_fn fn, void *ud,
                          size_t *nfiles, mdb_error_t *err);
/* Resolve values[0..n) of one kind; out (n entries, caller clears each with
 * mdb_strv_clear) receives each value's sorted, unique paths. */
bool mdb_resolver_resolve_many(mdb_resolver_t *r, int kind, const char *const *values, size_t n, mdb_strv_t *out,
                               mdb_error_t *err);
const char *mdb_resolver_name(const mdb_resolver_t *r);
void mdb_resolver_destroy(mdb_resolver_t *r); /* accepts NULL */

/* The catalog resolver (c not owned, must outlive the resolver). */
mdb_resolver_t *mdb_catalog_resolver_new(mdb_catalog_t *c);

/* Catalog field queried for a selector kind ("series.accession_number", ...)
 * and the series-entry key ("accession_number"); NULL for kinds the catalog
 * cannot resolve. */
const char *mdb_catalog_field_for_kind(int kind, const char **entry_key);

#ifdef __cplusplus
}
#endif
#endif
