/* mdb_jobs: the job document (collection `jobs`, _id = job_id) and the
 * selectors of a job request. Shared by the producer (creates the document,
 * records selector resolution, publishes), the CLI (`metadb submit --wait`,
 * `status`, `retry`) and the linker (progress and final state).
 *
 * Document shape (DESIGN.md): {state, researcher_id, collection, feature_set,
 * retry_of?, selectors:[{selector, kind, value, files, status, reason?}],
 * files_total, files_done, files_failed, files_flagged, instances_linked, producer_errors,
 * errors:[{path, stage, error, message}] (at most MDB_JOBS_MAX_ERRORS),
 * submitted_at, updated_at, completed_at}; timestamps are ISO 8601 UTC
 * strings ("2026-11-25T08:52:12.123Z"), which sort as text. files_flagged
 * is the part of files_done whose file was catalogued with an "integrity"
 * flag (e.g. Pixel Data cut short; job_files {status: done, flagged: true}).
 * It does not make a job "with errors": the metadata was catalogued.
 *
 * State machine: submitted -> resolving -> running -> completed |
 * completed_with_errors | failed. Every transition is a conditional update
 * ({_id, state: <allowed previous>}), so concurrent writers (producer,
 * linker, redelivered messages) cannot move a job backwards. A job is
 * "with errors" when any file failed, or the producer recorded a problem
 * (a refused selector, a file that vanished): producer_errors > 0. */
#ifndef MDB_JOBS_H
#define MDB_JOBS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_JOBS_COLL "jobs"
#define MDB_JOB_FILES_COLL "job_files"
/* Per (job, "topic:partition") counters the linker owning that partition
 * adds to: {_id: job "\n" tp, job_id, tp, files_done, files_failed,
 * files_flagged, instances_linked, o (highest offset counted)}; a job's counters are their
 * sums (linker/jobs.c). */
#define MDB_JOB_PROGRESS_COLL "job_progress"
#define MDB_RESEARCHERS_COLL "researchers"
#define MDB_COLLECTIONS_COLL "collections"
#define MDB_JOBS_MAX_ERRORS 100

typedef enum {
    MDB_JOB_SUBMITTED = 0,
    MDB_JOB_RESOLVING,
    MDB_JOB_RUNNING,
    MDB_JOB_COMPLETED,
    MDB_JOB_COMPLETED_WITH_ERRORS,
    MDB_JOB_FAILED,
    MDB_JOB_RETRIEVING, /* waiting for retrieve tasks (PACS) before running; see mdb_jobs_retrieve.h */
    MDB_JOB_NSTATES
} mdb_job_state_t;

/* "submitted", "resolving", ...; "unknown" for out-of-range values. */
const char *mdb_job_state_name(int state);
/* Parse a state name; false if unknown. */
bool mdb_job_state_parse(const char *name, int *state);
/* completed, completed_with_errors or failed. */
bool mdb_job_state_final(int state);

/* ---- selectors ---- */
typedef enum {
    MDB_SEL_ACCESSION = 0,
    MDB_SEL_PATIENT,
    MDB_SEL_STUDY,
    MDB_SEL_SERIES,
    MDB_SEL_CASE, /* one case of the job's collection (all_cases) */
    MDB_SEL_PATH, /* an explicit file path (retry) */
    MDB_SEL_NKINDS
} mdb_selector_kind_t;

typedef enum { MDB_SEL_PENDING = 0, MDB_SEL_FOUND, MDB_SEL_NOT_FOUND, MDB_SEL_REFUSED } mdb_selector_status_t;

typedef struct {
    int kind;     /* mdb_selector_kind_t */
    char *value;  /* accession number, patient id, UID, case id or path */
    char *text;   /* "accession:<value>", carried in file tasks */
    int status;   /* mdb_selector_status_t */
    size_t files; /* files matched */
    char *reason; /* why not found / refused (may be NULL) */
    /* MDB_SEL_CASE only: what the case resolves through. */
    char *case_patient_id;
    mdb_strv_t case_accessions;
} mdb_selector_t;

typedef struct {
    mdb_selector_t *v;
    size_t n, cap;
} mdb_selectors_t;

/* "accession", "patient", "study", "series", "case", "path". */
const char *mdb_selector_kind_name(int kind);
/* "pending", "found", "not_found", "refused". */
const char *mdb_selector_status_name(int status);

/* Append a selector (copies value; text becomes "<kind>:<value>"). A
 * selector equal to one already present (same kind and value) is not added
 * twice; *index_out (if given) receives the position either way. False on OOM. */
bool mdb_selectors_add(mdb_selectors_t *s, int kind, const char *value, size_t *index_out);

/* Build the selector list of a job request, in a fixed order: accession
 * numbers, patient ids, study UIDs, series UIDs, paths (all_cases is expanded
 * later with the collection's cases, see mdb_selectors_add_case). Every value
 * is checked with mdb_cases_value_valid (paths: non-empty, < 4096 bytes, no
 * NUL); invalid ones fail the whole request with a message naming the
 * selector. Duplicates collapse. Pure: no I/O. */
bool mdb_selectors_from_job(const mdb_job_msg_t *m, mdb_selectors_t *out, mdb_error_t *err);

/* Add a case selector: resolves through its accessions when it has any,
 * else its patient id. Copies everything. False on OOM. */
bool mdb_selectors_add_case(mdb_selectors_t *s, const char *case_id, const char *patient_id,
                            const char *const *accessions, size_t naccessions);

/* Set status/reason of selector i (reason copied, may be NULL). */
void mdb_selector_set(mdb_selector_t *sel, int status, size_t files, const char *reason);

void mdb_selectors_clear(mdb_selectors_t *s);

/* Append {selector, kind, value, files, status, reason?} documents as an
 * array under key in doc. */
bool mdb_selectors_append_bson(const mdb_selectors_t *s, bson_t *doc, const char *key);

/* ---- job documents ---- */

/* Create the job document if it does not exist (state submitted, counters 0,
 * fields from msg; submitted_at from msg or now), else leave it as it is.
 * *state_out receives the document's state after the call, *created_out
 * whether this call created it. Either out pointer may be NULL. */
bool mdb_jobs_create(mdb_mongo_t *m, const char *job_id, const mdb_job_msg_t *msg, int *state_out, bool *created_out,
                     mdb_error_t *err);

/* Move the job to `to` if its state is one of from[0..nfrom) (nfrom 0: any
 * non-final state). *changed (may be NULL) says whether it moved. Final
 * states also set completed_at. A missing job is MDB_ERR_NOTFOUND. */
bool mdb_jobs_set_state(mdb_mongo_t *m, const char *job_id, int to, const int *from, size_t nfrom, bool *changed,
                        mdb_error_t *err);

/* Mark the job failed (from any non-final state) and record why as an error
 * with stage "producer". */
bool mdb_jobs_fail(mdb_mongo_t *m, const char *job_id, const char *error, const char *message, mdb_error_t *err);

/* Replace the job's selectors array with the resolution outcome and set
 * producer_errors to the number of problems the producer found (refused or
 * vanished files). Setting (not incrementing) keeps a re-resolved job exact. */
bool mdb_jobs_record_selectors(mdb_mongo_t *m, const char *job_id, const mdb_selectors_t *s, int64_t producer_errors,
                               mdb_error_t *err);

/* Append {path, stage, error, message} to errors unless MDB_JOBS_MAX_ERRORS
 * are recorded already (one update, $push with $slice). When
 * count_as_problem, producer_errors is incremented too (so the job ends
 * completed_with_errors), also when the list is full. path/message may be
 * NULL. */
bool mdb_jobs_add_error(mdb_mongo_t *m, const char *job_id, const char *path, const char *stage, const char *error,
                        const char *message, bool count_as_problem, mdb_error_t *err);

/* Called by the producer once every file task was delivered: sets
 * files_total and moves resolving -> running, then calls
 * mdb_jobs_refresh_progress (the linker may have finished every file
 * already, or there are zero files). *state_out (may be NULL) receives the
 * resulting state. */
bool mdb_jobs_start_running(mdb_mongo_t *m, const char *job_id, int64_t files_total, int *state_out, mdb_error_t *err);

/* Recount files_done / files_failed / files_flagged from job_files {job_id,
 * status: done|failed, flagged?}, store them, and if the job is running and done + failed >=
 * files_total move it to completed (or completed_with_errors when anything
 * failed or producer_errors > 0). Idempotent; safe to call from any process
 * at any time. *state_out may be NULL. */
bool mdb_jobs_refresh_progress(mdb_mongo_t *m, const char *job_id, int *state_out, mdb_error_t *err);

/* The job document (caller bson_destroy's *doc), or false with
 * MDB_ERR_NOTFOUND if there is none. */
bool mdb_jobs_get(mdb_mongo_t *m, const char *job_id, bson_t **doc, mdb_error_t *err);

/* Job ids may be abbreviated to a unique prefix of at least
 * MDB_JOBS_MIN_PREFIX characters (the dashboard shows 8). */
#define MDB_JOBS_MIN_PREFIX 6
#define MDB_JOBS_MAX_CANDIDATES 10
/* Is prefix usable as an abbreviation: MDB_JOBS_MIN_PREFIX..64 letters,
 * digits, '-' or '_'? Pure. */
bool mdb_jobs_prefix_valid(const char *prefix);
/* The full id of the job id_or_prefix names: itself when a job has that
 * id, else the one job whose id starts with it. *job_id is malloc'd (caller
 * frees). false with MDB_ERR_NOTFOUND when no job matches (or the prefix is
 * shorter than MDB_JOBS_MIN_PREFIX), MDB_ERR_QUERY when several do (the
 * message lists up to MDB_JOBS_MAX_CANDIDATES of them), MDB_ERR_MONGO when
 * the database cannot be read. */
bool mdb_jobs_resolve(mdb_mongo_t *m, const char *id_or_prefix, char **job_id, mdb_error_t *err);

/* Current state of a job (false + MDB_ERR_NOTFOUND if none). */
bool mdb_jobs_get_state(mdb_mongo_t *m, const char *job_id, int *state, mdb_error_t *err);

/* Visit the most recent `limit` jobs (by submitted_at, newest first). */
typedef bool (*mdb_jobs_visit_fn)(const bson_t *doc, void *ud);
bool mdb_jobs_list_recent(mdb_mongo_t *m, int64_t limit, mdb_jobs_visit_fn fn, void *ud, mdb_error_t *err);

/* Paths of the job's failed files: job_files with status failed, plus any
 * path in errors[] from stage worker or linker that is not done. Sorted,
 * unique. out is cleared first. */
bool mdb_jobs_failed_paths(mdb_mongo_t *m, const char *job_id, mdb_strv_t *out, mdb_error_t *err);

/* $addToSet job_id to researchers[_id=researcher_id].job_ids and
 * collections[_id=collection].job_ids. *researcher_found / *collection_found
 * (may be NULL) say whether the documents exist (nothing is created). */
bool mdb_jobs_link(mdb_mongo_t *m, const char *job_id, const char *researcher_id, const char *collection,
                   bool *researcher_found, bool *collection_found, mdb_error_t *err);

/* Record on job `original` that `retry_job` retries it ($addToSet retries). */
bool mdb_jobs_note_retry(mdb_mongo_t *m, const char *original, const char *retry_job, mdb_error_t *err);

/* Helpers for readers of job documents: integer field (int32/int64/double),
 * 0 if absent; string field or NULL (points into doc). */
int64_t mdb_jobs_doc_int(const bson_t *doc, const char *key);
const char *mdb_jobs_doc_str(const bson_t *doc, const char *key);

#ifdef __cplusplus
}
#endif
#endif
