/* mdb_find: the database helpers the store, the linker's jobs step,
 * reconcile and dump share: find and aggregate into JSON arrays, the $in
 * filter builder, and one bulk write of n operations built by a callback.
 * Every call pops a client from the pool, counts its round trip on the
 * mdb_mongo_t and pushes the client back. */
#ifndef MDB_FIND_H
#define MDB_FIND_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_bson_json.h"
#include "mdb_bulk.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_mongo mdb_mongo_t; /* mdb_mongo.h */

/* Find the documents of coll matching filter and append them to out (array
 * of JSON objects). projection and sort may be NULL; limit 0 = all. One
 * round trip for everything that fits in one reply. */
bool mdb_docs_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *projection, const bson_t *sort,
                   int64_t limit, json_t *out, mdb_error_t *err);
/* Run an aggregation pipeline (BSON array document) on coll; append the rows to out. */
bool mdb_docs_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, json_t *out, mdb_error_t *err);
/* Append {key: {$in: [ids[0..n)]}} to filter. */
void mdb_docs_append_in(bson_t *filter, const char *key, const char *const *ids, size_t n);

/* Adds operation i (of n) to the bulk b; false with err set on failure. */
typedef bool (*mdb_docs_add_op_fn)(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err);
/* One unordered bulk write of n operations on coll with write concern wc:
 * add_fn(b, i, ud, err) is called for i in [0, n). n = 0 writes nothing. */
bool mdb_docs_bulk_write(mdb_mongo_t *m, const char *coll, const char *wc, size_t n, mdb_docs_add_op_fn add_fn,
                         void *ud, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
