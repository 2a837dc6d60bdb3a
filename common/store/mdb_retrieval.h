/* mdb_retrieval: the PACS part of a job. The retrieve task message (topic
 * metadb.retrieve, producer -> fetcher) and the job document's retrieval
 * fields, which move a job through the state `retrieving`:
 *
 *   producer: a job with retrieve tasks goes resolving -> retrieving with
 *     files_archive (file tasks it published itself), retrieve_total, and
 *     files_total = files_archive (mdb_retrieval_start);
 *   fetcher:  writes retrievals.<selector index> = {selector, source, status,
 *     studies, expected, received, landed, missing[], reason, files, attempts}
 *     as it goes (mdb_retrieval_record; status "retrieving" while working,
 *     then final: "done", "incomplete", "not_found", "failed"; a final record
 *     also sets selectors[index] found/not_found with the files and why);
 *   fetcher:  when every retrieval is final, mdb_retrieval_finish moves the
 *     job retrieving -> running in one conditional update, with files_total =
 *     files_archive + the files of every retrieval, producer_errors +=
 *     problems (selectors not found or failed, each missing instance), and one
 *     error per problem (stage "fetcher"); then counts as the linker does.
 * Every write sets (never increments) what a redelivered task rewrites, and the
 * one increment happens in the transition that only one writer can make. */
#ifndef MDB_RETRIEVAL_H
#define MDB_RETRIEVAL_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* metadb.retrieve, key job_id: one per selector to fetch. */
typedef struct {
    char *job_id;
    int64_t selector_index; /* index in the job's selectors[] */
    char *selector;         /* "accession:A123" (carried into the file tasks) */
    char *kind;             /* accession | patient | study */
    char *value;
    char *source;      /* the PACS name (pacs.sources) */
    char *feature_set; /* may be NULL */
} mdb_retrieve_msg_t;

bool mdb_retrieve_msg_decode(const char *buf, size_t len, size_t max_bytes, mdb_retrieve_msg_t *out, mdb_error_t *err);
char *mdb_retrieve_msg_encode(const mdb_retrieve_msg_t *m); /* malloc'd JSON or NULL on OOM */
void mdb_retrieve_msg_clear(mdb_retrieve_msg_t *m);

/* Status of one retrieval. */
typedef enum {
    MDB_RETR_RETRIEVING = 0,
    MDB_RETR_DONE,       /* every expected instance landed */
    MDB_RETR_INCOMPLETE, /* some expected instances never arrived (listed in missing) */
    MDB_RETR_NOT_FOUND,  /* the PACS has no study for the selector */
    MDB_RETR_FAILED      /* the PACS could not be used (reason) */
} mdb_retrieval_status_t;

const char *mdb_retrieval_status_name(int status);

#define MDB_RETRIEVAL_MAX_MISSING 100 /* missing SOP UIDs kept per selector */

typedef struct {
    int status;
    const char *selector;
    const char *source;
    int64_t studies, expected, received, landed, files, attempts;
    const char *const *missing; /* "SOPUID" strings (at most MDB_RETRIEVAL_MAX_MISSING are stored) */
    size_t n_missing;
    const char *reason; /* may be NULL */
} mdb_retrieval_t;

/* resolving/submitted -> retrieving (conditional). */
bool mdb_retrieval_start(mdb_mongo_t *m, const char *job_id, int64_t files_archive, int64_t retrieve_total,
                         mdb_error_t *err);

/* $set retrievals.<index> (only while the job is retrieving). */
bool mdb_retrieval_record(mdb_mongo_t *m, const char *job_id, int64_t index, const mdb_retrieval_t *r,
                          mdb_error_t *err);

/* If every retrieval is final: retrieving -> running (see above) and the
 * progress refresh. *state_out (may be NULL) gets the job's state. */
bool mdb_retrieval_finish(mdb_mongo_t *m, const char *job_id, int *state_out, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
