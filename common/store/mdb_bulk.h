/* mdb_bulk: unordered bulk writes on one collection (see mdb_bulk.c). One
 * mdb_bulk_execute is one bulk write however many operations it holds:
 * mongo-c-driver splits it at the server's maxWriteBatchSize. */
#ifndef MDB_BULK_H
#define MDB_BULK_H

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_mongo mdb_mongo_t; /* mdb_mongo.h */

typedef struct mdb_bulk mdb_bulk_t;

/* Unordered bulk on collection `coll` using client (not owned; it must
 * outlive the bulk). wc: "1", "majority", a tag, or NULL (default). NULL on
 * OOM. Free with mdb_bulk_destroy. */
mdb_bulk_t *mdb_bulk_new(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, const char *wc);

/* Add update-one {selector} {update} with upsert:true. Copies both. False
 * (err set) on OOM or when update is not made of $-operators. */
bool mdb_bulk_upsert(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, mdb_error_t *err);
/* update-one with an explicit upsert flag (mdb_bulk_upsert = upsert:true). */
bool mdb_bulk_update_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert, mdb_error_t *err);
/* update-many / delete-one. Copy their arguments. */
bool mdb_bulk_update_many(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert, mdb_error_t *err);
bool mdb_bulk_delete_one(mdb_bulk_t *b, const bson_t *selector, mdb_error_t *err);
/* insert-one of doc / replace-one of the document matching selector by doc. Copy their arguments. */
bool mdb_bulk_insert_one(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err);
bool mdb_bulk_replace_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *doc, bool upsert, mdb_error_t *err);

/* Number of operations added. */
size_t mdb_bulk_count(const mdb_bulk_t *b);

/* Execute every operation as one unordered bulk write: one round trip (an
 * empty bulk makes none), plus one when upserts that lost a duplicate-key
 * race are retried (once). reply may be NULL; if given it is initialized
 * with the counts (nInserted, nMatched, nModified, nRemoved, nUpserted) and
 * the server's writeErrors / writeConcernErrors, and the caller destroys
 * it, also on failure. On failure err->code is the server's code
 * (MDB_OPS_DUPLICATE_KEY for a duplicate key, mdb_ops.h). */
bool mdb_bulk_execute(mdb_bulk_t *b, bson_t *reply, mdb_error_t *err);
void mdb_bulk_destroy(mdb_bulk_t *b); /* accepts NULL */

#ifdef __cplusplus
}
#endif
#endif
