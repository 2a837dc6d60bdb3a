/* mdb_msg: the four message codecs of DESIGN.md (jansson, UTF-8, "v": 1).
 * Decoders validate fully and say what is wrong ("field 'path': expected
 * string, got integer"); unknown fields are ignored; "v" other than 1,
 * non-UTF-8, or a value larger than max_bytes are rejected. A decoder that
 * fails leaves *out zeroed (nothing to free). Encoders return a malloc'd
 * NUL-terminated compact JSON string (caller frees) or NULL on OOM or when a
 * string field is not valid UTF-8 (JSON cannot carry it: send a DLQ record
 * instead). NULL string fields and empty arrays are omitted. The DLQ encoder
 * never fails on bad text: invalid UTF-8 bytes become U+FFFD.
 * Errors have domain MDB_ERR_MSG and read e.g. "file message: missing field
 * 'path'", "... invalid UTF-8 at byte 29", "... unsupported version v=2 ...",
 * "... malformed JSON at line 1 column 5: ...", "... 2000000 bytes exceeds the
 * limit of 1048576 bytes". max_bytes 0 = no limit. Required fields: files
 * {job_id, path}; instances {job_id, path, study.StudyInstanceUID,
 * series.SeriesInstanceUID, instance.SOPInstanceUID, file.size, file.mtime};
 * dlq {stage in producer|worker|linker|api, error}; jobs only {v} (check
 * mdb_msg_job_has_selector). job_id: 1..128 chars, no control characters. */
#ifndef MDB_MSG_H
#define MDB_MSG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_MSG_VERSION 1

/* A NULL-terminated array of owned strings plus its length. */
typedef struct {
    char **v;
    size_t n;
} mdb_strv_t;

/* metadb.jobs, key job_id */
typedef struct {
    char *job_id; /* may be NULL: producer assigns a UUID */
    char *researcher_id;
    char *collection;
    mdb_strv_t accession_numbers;
    mdb_strv_t patient_ids;
    mdb_strv_t study_uids;
    mdb_strv_t series_uids;
    bool all_cases;
    char *feature_set;  /* may be NULL = default */
    char *submitted_at; /* ISO 8601, may be NULL */
    char *retry_of;     /* set by `metadb retry`: the job whose failed files are re-published */
    mdb_strv_t paths;   /* explicit file paths (retry), each must be under an archive root */
    char *source;       /* NULL/"archive" = the catalogue; "pacs:NAME" = that PACS; "auto" = catalogue, then the PACS */
} mdb_job_msg_t;

/* metadb.files, key path */
typedef struct {
    char *job_id;
    char *path;
    char *selector;    /* e.g. "accession:1234" */
    char *feature_set; /* may be NULL */
} mdb_file_msg_t;

/* metadb.instances, key StudyInstanceUID */
typedef struct {
    char *job_id;
    char *path;
    json_t *study; /* objects (owned references) */
    json_t *series;
    json_t *instance;
    int64_t file_size;
    int64_t file_mtime; /* seconds since epoch */
} mdb_instance_msg_t;

/* metadb.dlq, key job_id */
typedef struct {
    char *job_id;  /* may be NULL if unknown (e.g. undecodable message) */
    char *path;    /* may be NULL */
    char *stage;   /* producer|worker|linker|api */
    char *error;   /* short machine-readable reason, e.g. "not_dicom" */
    char *message; /* human detail, may be NULL */
} mdb_dlq_msg_t;

bool mdb_msg_job_decode(const char *buf, size_t len, size_t max_bytes, mdb_job_msg_t *out, mdb_error_t *err);
char *mdb_msg_job_encode(const mdb_job_msg_t *m);
void mdb_msg_job_clear(mdb_job_msg_t *m);
/* true if at least one selector is present (accessions, patients, studies, series, all_cases, paths). */
bool mdb_msg_job_has_selector(const mdb_job_msg_t *m);

bool mdb_msg_file_decode(const char *buf, size_t len, size_t max_bytes, mdb_file_msg_t *out, mdb_error_t *err);
char *mdb_msg_file_encode(const mdb_file_msg_t *m);
void mdb_msg_file_clear(mdb_file_msg_t *m);

bool mdb_msg_instance_decode(const char *buf, size_t len, size_t max_bytes, mdb_instance_msg_t *out, mdb_error_t *err);
/* As mdb_msg_instance_decode; on success *root (if root is not NULL) gets the
 * whole parsed message (new reference, caller decrefs) for the fields the
 * struct does not carry ("dicom", "feature_set"), so a consumer needing them
 * parses the event once (JSON parsing is most of the linker's CPU time).
 * On failure *root is NULL. */
bool mdb_msg_instance_decode_root(const char *buf, size_t len, size_t max_bytes, mdb_instance_msg_t *out, json_t **root,
                                  mdb_error_t *err);
char *mdb_msg_instance_encode(const mdb_instance_msg_t *m);
void mdb_msg_instance_clear(mdb_instance_msg_t *m);
/* The event's StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID: read from
 * study.StudyInstanceUID etc. (the decoder requires them to be non-empty strings). */
const char *mdb_msg_instance_study_uid(const mdb_instance_msg_t *m);
const char *mdb_msg_instance_series_uid(const mdb_instance_msg_t *m);
const char *mdb_msg_instance_sop_uid(const mdb_instance_msg_t *m);

bool mdb_msg_dlq_decode(const char *buf, size_t len, size_t max_bytes, mdb_dlq_msg_t *out, mdb_error_t *err);
char *mdb_msg_dlq_encode(const mdb_dlq_msg_t *m);
void mdb_msg_dlq_clear(mdb_dlq_msg_t *m);

/* mdb_strv helpers */
bool mdb_strv_push(mdb_strv_t *v, const char *s); /* copies s */
void mdb_strv_clear(mdb_strv_t *v);

/* Current UTC time as ISO 8601 "2026-11-25T08:52:12.123Z" into buf (>= 32 bytes). */
void mdb_msg_now_iso(char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
