/* mdb_mongo: a client pool for one database. mongoc_init/mongoc_cleanup
 * are the caller's (main). Error API version 2. Every failure carries the
 * server's message. The bulk writer is mdb_bulk.h, the read helpers
 * mdb_find.h; both are included at the end, so a module that includes
 * this header keeps every database helper in reach. */
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

/* Count of round trips issued through this mdb_mongo_t (bulk executes, finds,
 * commands issued through helpers), for efficiency reports. */
uint64_t mdb_mongo_round_trips(const mdb_mongo_t *m);
void mdb_mongo_count_round_trip(mdb_mongo_t *m);

#ifdef __cplusplus
}
#endif

#endif
