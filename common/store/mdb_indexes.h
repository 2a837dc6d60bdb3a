/* mdb_indexes: the indexes of the catalogue collections (studies, series,
 * instances, conflicts), in one table, and the one function that creates
 * the missing ones.
 *
 * Every filter parameter of the API/CLI (mdb_query's field tables) and
 * every QIDO-RS matching key (api/qido.c) is backed by one of these
 * indexes, so the database answers filters without reading whole
 * collections; tests/integration/test_indexes.py reads the table below
 * from mdb_indexes.c and checks it against explain.
 *
 * Cost model (DocumentDB): every createIndexes command costs about 2 s, a
 * listIndexes a few milliseconds. So the existing indexes are listed
 * first and a collection gets at most ONE createIndexes command, naming
 * all of its missing indexes, and none when nothing is missing. */
#ifndef MDB_INDEXES_H
#define MDB_INDEXES_H

#include <stdbool.h>
#include <stddef.h>

#include "mdb_error.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_INDEX_MAX_KEYS 3

/* One ascending index: collection and its key paths (in order; NULL
 * after the last). */
typedef struct {
    const char *collection;
    const char *keys[MDB_INDEX_MAX_KEYS];
} mdb_index_spec_t;

/* The catalogue's index table (static storage); *n receives the count. */
const mdb_index_spec_t *mdb_indexes_table(size_t *n);

/* Index name of spec: "<key>_1[_<key>_1...]" with dots turned into '_'
 * (the names mdb_jobs_ensure_index has always used). out has cap bytes. */
void mdb_indexes_name(const mdb_index_spec_t *spec, char *out, size_t cap);

/* Create every index of specs[0..n) that the database does not have yet
 * (compared by key pattern, whatever its name): per collection one
 * listIndexes, then one createIndexes naming all missing ones, or none.
 * *created (may be NULL) receives how many were created. false with err
 * (MDB_ERR_MONGO, the server's message and the collection) on failure;
 * collections before the failing one keep what was created. */
bool mdb_indexes_ensure_specs(mdb_mongo_t *m, const mdb_index_spec_t *specs, size_t n, size_t *created,
                              mdb_error_t *err);

/* Indexes on jobs (state, submitted_at, researcher_id, collection),
 * job_files (job_id, status) and job_progress (job_id), through
 * mdb_indexes_ensure_specs: only missing ones are created, one command per
 * collection. Idempotent. */
bool mdb_indexes_ensure_jobs(mdb_mongo_t *m, mdb_error_t *err);

/* Ensure the whole table (mdb_indexes_table), then the job collections'
 * indexes (mdb_indexes_ensure_jobs). Needs a user allowed to create
 * indexes (the linker's); idempotent; cheap when nothing is missing. */
bool mdb_indexes_ensure(mdb_mongo_t *m, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
