/* mdb_ops: the generic single-collection operations behind the storage door
 * (find, count, aggregate, update-one, command) over an mdb_mongo_t, so that
 * commands and daemons never hold a mongoc client, collection or cursor.
 *
 * Every call pops a client from the pool and pushes it back before
 * returning, destroys every reply and cursor (also on failure), and counts
 * its round trip (mdb_mongo_count_round_trip; a find or aggregate counts one
 * however many batches it reads).
 *
 * Errors: false and err filled from the driver's bson_error_t, with the
 * server's own message and its error CODE in err->code, so that callers match
 * a condition by code (MDB_OPS_DUPLICATE_KEY), never by message text (the
 * text differs between MongoDB and DocumentDB). err->domain:
 *   - reads (find, count, aggregate, read commands): MDB_ERR_QUERY when the
 *     server refused the request itself (unknown operator, bad regex, time
 *     limit exceeded), MDB_ERR_MONGO when the database could not be reached
 *     or refused the credentials (codes 13 Unauthorized, 18 AuthFailed);
 *   - writes and write commands: always MDB_ERR_MONGO.
 * A database error is never turned into an empty result. */
#ifndef MDB_OPS_H
#define MDB_OPS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Server error codes callers may test err->code against. */
#define MDB_OPS_DUPLICATE_KEY 11000

/* Called once per document in server order. doc is only valid during the
 * call (bson_copy to keep it). Return false to stop: the operation then
 * fails, with err as the callback filled it. */
typedef bool (*mdb_ops_doc_fn)(const bson_t *doc, void *ud, mdb_error_t *err);

/* find(filter) on coll with opts (projection, sort, skip, limit, maxTimeMS,
 * ...; NULL = none), fn called per document. filter NULL = every document. */
bool mdb_ops_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, mdb_ops_doc_fn fn,
                  void *ud, mdb_error_t *err);

/* First document matching filter (opts as for mdb_ops_find; limit 1 is
 * added). true with *out = NULL when none matches; *out is the caller's
 * (bson_destroy). On failure *out is NULL. */
bool mdb_ops_find_one(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, bson_t **out,
                      mdb_error_t *err);

/* countDocuments(filter) into *n; opts may carry maxTimeMS, limit, skip. */
bool mdb_ops_count(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, int64_t *n,
                   mdb_error_t *err);

/* aggregate; pipeline is a document {"pipeline": [stages...]} or an array of
 * stages; fn called per result document as for mdb_ops_find. */
bool mdb_ops_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, const bson_t *opts, mdb_ops_doc_fn fn,
                       void *ud, mdb_error_t *err);

/* What a single-document write did. */
typedef struct {
    int64_t matched;  /* matchedCount */
    int64_t modified; /* modifiedCount */
    int64_t upserted; /* upsertedCount: 1 when the upsert inserted */
} mdb_ops_result_t;

/* updateOne(selector, update) with upsert as given; update must consist of
 * $-operators. res (may be NULL) receives the counts. */
bool mdb_ops_update_one(mdb_mongo_t *m, const char *coll, const bson_t *selector, const bson_t *update, bool upsert,
                        mdb_ops_result_t *res, mdb_error_t *err);

/* Run cmd on the database (e.g. {distinct: coll, key: ...} with read = true,
 * {createIndexes: ...} with read = false). reply may be NULL; if given it is
 * always initialized and the caller destroys it, also on failure. */
bool mdb_ops_command(mdb_mongo_t *m, const bson_t *cmd, bool read, bson_t *reply, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
