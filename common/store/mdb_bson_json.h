/* mdb_bson_json: JSON (jansson) <-> BSON, exactly (see mdb_bson_json.c).
 * The names keep their mdb_docs_ prefix: every module that reads or writes
 * documents uses them. */
#ifndef MDB_BSON_JSON_H
#define MDB_BSON_JSON_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Append every member of the JSON object obj to b. False on a value BSON
 * cannot hold (never for decoded JSON), a non-object, or OOM. */
bool mdb_docs_json_to_bson(const json_t *obj, bson_t *b);
/* Append JSON value v under key to b. */
bool mdb_docs_append_json(bson_t *b, const char *key, const json_t *v);
/* New JSON object from a BSON document (new reference, NULL on OOM or on a
 * BSON type without JSON form, which metadb never writes). Dates become ISO
 * strings, ObjectIds hex strings, decimals strings, other types null. */
json_t *mdb_docs_bson_to_json(const bson_t *b);
/* A BSON date (ms since 1970, negative before) as "YYYY-MM-DDTHH:MM:SS.mmmZ"
 * (new reference); the number itself when no calendar date fits (NULL on OOM). */
json_t *mdb_docs_date_json(int64_t ms);

#ifdef __cplusplus
}
#endif
#endif
