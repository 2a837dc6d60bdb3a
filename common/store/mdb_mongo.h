/* mdb_mongo: a client pool for one database plus a bulk-upsert helper.
 * mongoc_init/mongoc_cleanup are the caller's (main). Error API version 2.
 * Every failure carries the server's message. */
#ifndef MDB_MONGO_H
#define MDB_MONGO_H

#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "mdb_config.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_mongo mdb_mongo_t;

/* Pool over uri for database db. Does not connect yet; see mdb_mongo_ping. */
mdb_mongo_t *mdb_mongo_new(const char *uri, const char *db, int pool_size, mdb_error_t *err);
/* Same from cfg: mongo.uri, mongo.db, mongo.pool_size. */
mdb_mongo_t *mdb_mongo_new_from_config(const mdb_config_t *cfg, mdb_error_t *err);
void mdb_mongo_destroy(mdb_mongo_t *m); /* accepts NULL */

const char *mdb_mongo_db_name(const mdb_mongo_t *m);

/* Pop/push a client (blocking pop). Threaded code pops one per batch. */
mongoc_client_t *mdb_mongo_pop(mdb_mongo_t *m);
void mdb_mongo_push(mdb_mongo_t *m, mongoc_client_t *client);

/* Collection handle on client; caller destroys with mongoc_collection_destroy. */
mongoc_collection_t *mdb_mongo_collection(mdb_mongo_t *m, mongoc_client_t *client, const char *name);

/* Round trip "ping"; false with the server's message. */
bool mdb_mongo_ping(mdb_mongo_t *m, mdb_error_t *err);

/* Wait until ping succeeds or timeout_ms passes. Bounded even when the
 * server accepts connections but does not answer (uses private short
 * timeouts, not the pool's); on failure err says why and for how long. */
bool mdb_mongo_wait_ready(mdb_mongo_t *m, int timeout_ms, mdb_error_t *err);

/* ---- bulk upserts ---- */
typedef struct mdb_bulk mdb_bulk_t;

/* Unordered bulk on collection `coll` using client (not owned). wc: "1",
 * "majority" or NULL (default). */
mdb_bulk_t *mdb_bulk_new(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, const char *wc);

/* Add update-one {selector} {update} with upsert:true. Copies both. */
bool mdb_bulk_upsert(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, mdb_error_t *err);
/* Add update-many / delete-one / insert-one (for completeness). */
bool mdb_bulk_update_many(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert,
                          mdb_error_t *err);
bool mdb_bulk_delete_one(mdb_bulk_t *b, const bson_t *selector, mdb_error_t *err);
/* update-one with an explicit upsert flag (mdb_bulk_upsert = upsert:true). */
bool mdb_bulk_update_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert, mdb_error_t *err);
/* insert-one of doc / replace-one of the document matching selector by doc. Copy their arguments. */
bool mdb_bulk_insert_one(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err);
bool mdb_bulk_replace_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *doc, bool upsert, mdb_error_t *err);

/* Number of operations added. */
size_t mdb_bulk_count(const mdb_bulk_t *b);

/* Update/replace/delete statements per command by default (see mdb_bulk_execute). */
#define MDB_BULK_DEFAULT_MAX_UPDATES 50
/* Override the per-command cap (mongo.max_batch_updates); 0 = unlimited. */
void mdb_mongo_set_max_batch_updates(mdb_mongo_t *m, size_t n);

/* Execute in chunks of at most mongo.max_batch_updates update/delete statements
 * (inserts unlimited): one round trip per chunk. reply may be NULL; if
 * given it is initialized and the caller destroys it, also on failure.
 * Duplicate-key races on concurrent upserts (E11000) are retried once. */
bool mdb_bulk_execute(mdb_bulk_t *b, bson_t *reply, mdb_error_t *err);
void mdb_bulk_destroy(mdb_bulk_t *b); /* accepts NULL */

/* Count of round trips issued through this mdb_mongo_t (bulk executes, finds,
 * commands issued through helpers), for efficiency reports. */
uint64_t mdb_mongo_round_trips(const mdb_mongo_t *m);
void mdb_mongo_count_round_trip(mdb_mongo_t *m);

#ifdef __cplusplus
}
#endif
#endif
