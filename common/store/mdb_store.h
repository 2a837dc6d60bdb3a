/* mdb_store: the one door through which the merge model (mdb_docs) reads
 * and writes study, series, instance and conflict documents. A store is a
 * table of callbacks over an implementation's state (ud):
 *  - the MongoDB store (mdb_store_mongo.c), used by the linker, reconcile
 *    and the benchmarks: one find / aggregate / bulk write per call;
 *  - the in-memory store (mdb_store_mem.c), used by the unit tests, with an
 *    injectable failure that writes part of a call and then fails, as a
 *    process killed in the middle of a bulk write would.
 * Both keep MongoDB semantics: documents are keyed by _id, an upsert sets
 * (and unsets) the fields it is given in place, inserts of an existing _id
 * are reported as duplicates, never overwrite.
 *
 * Every callback returns false and fills err on failure; what it wrote
 * before failing stays written (the model is built to be re-run). Documents
 * passed in and out are JSON objects with "_id"; arrays are borrowed,
 * documents appended to out are new references owned by out. */
#ifndef MDB_STORE_H
#define MDB_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    void *ud; /* the implementation's state */

    /* Append to out (a JSON array) the studies whose _id is in ids[0..n). */
    bool (*load_studies)(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);

    /* Append the series whose _id is in ids[0..n) OR whose study_id is in
     * study_ids[0..nstudies) (each document once). */
    bool (*load_series)(void *ud, const char *const *ids, size_t n, const char *const *study_ids, size_t nstudies,
                        json_t *out, mdb_error_t *err);

    /* Append the conflict documents whose uid is in uids[0..n). */
    bool (*load_conflicts)(void *ud, const char *const *uids, size_t n, json_t *out, mdb_error_t *err);

    /* Append the instances whose _id is in ids[0..n). */
    bool (*load_instances)(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err);

    /* Insert docs (array of full documents) into collection coll. A
     * document whose _id exists already is left as it is and its _id
     * string appended to dups (array); that is not a failure. */
    bool (*insert)(void *ud, const char *coll, const json_t *docs, json_t *dups, mdb_error_t *err);

    /* Recount (the model without origins): counts[series_id] = number of
     * instances whose series_id is that id, for each of the n ids (0
     * included), and job_counts[job_id] = number of instances whose job_ids
     * contains it, for each of the njobs ids (0 included). Counted with a
     * filter on the indexed series_id / job_ids, never a collection scan. */
    bool (*count_instances)(void *ud, const char *const *series_ids, size_t n, const char *const *job_ids, size_t njobs,
                            json_t *counts, json_t *job_counts, mdb_error_t *err);

    /* Recount (the incremental model): counts[series_id] = number of
     * instances with that series_id, leaving out those whose _ins is
     * {t: tp, o > upto} (inserted by records after the batch: their own
     * batch counts them). Same index rule as count_instances. */
    bool (*count_series)(void *ud, const char *const *series_ids, size_t n, const char *tp, int64_t upto,
                         json_t *counts, mdb_error_t *err);

    /* Write docs (array of full documents) to coll, in place by _id: create
     * a missing one (created_at = now), else $set every top-level field it
     * has (created_at kept) and remove the top-level fields named in
     * unset[i]; updated_at = now either way. unset is NULL or an array
     * parallel to docs whose entries are arrays of field names or null.
     * A doc carrying MDB_STORE_IF_UPDATED_AT (a string; never stored) is
     * written only if the stored document's updated_at still equals it, else
     * the call fails: another writer changed the document since it was read
     * (a linker that lost its partitions in a network partition and comes
     * back with a write computed from what it read before), and the caller's
     * retry reads it again. */
    bool (*upsert)(void *ud, const char *coll, const json_t *docs, const json_t *unset, const char *now,
                   mdb_error_t *err);
} mdb_store_t;

#define MDB_STORE_IF_UPDATED_AT "_if_updated_at"

/* ---- the MongoDB store (mdb_store_mongo.c) ---- */

typedef struct mdb_mongo mdb_mongo_t;

/* A store over m (not owned; a client is popped per call) writing with
 * write concern wc ("1", "majority" or NULL; copied). NULL on OOM. */
mdb_store_t *mdb_store_mongo_new(mdb_mongo_t *m, const char *wc);
void mdb_store_mongo_destroy(mdb_store_t *st); /* accepts NULL */

/* ---- the in-memory store (mdb_store_mem.c) ---- */

/* An empty store holding the collections studies, series, instances and
 * conflicts. NULL on OOM. */
mdb_store_t *mdb_store_mem_new(void);
void mdb_store_mem_destroy(mdb_store_t *st); /* accepts NULL */

/* The documents of coll as a JSON object _id -> document (borrowed; the
 * store's own copies: changing them changes the store). NULL for a
 * collection the store does not hold. */
json_t *mdb_store_mem_collection(mdb_store_t *st, const char *coll);

/* Documents inserted or upserted so far (duplicates not counted). */
size_t mdb_store_mem_writes(const mdb_store_t *st);

/* Make the n-th insert or upsert call from now write the first half of its
 * documents and fail with "injected failure" (n = 0: never). */
void mdb_store_mem_fail_at(mdb_store_t *st, int n);

#ifdef __cplusplus
}
#endif
#endif
