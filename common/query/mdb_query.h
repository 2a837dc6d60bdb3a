/* mdb_query: the one query builder behind every way of asking the catalogue
 * (HTTP API, `metadb query`, dashboard, natural-language front end).
 *
 * Two inputs, one output:
 *  1. Filter parameters (name=value strings, as in a URL query or CLI flags)
 *     on a level (studies, series, instances) are turned into a MongoDB
 *     filter, sort, projection and page. Field names are the promoted fields
 *     of DESIGN.md (with a few aliases such as patient → patient_id), the
 *     collection and job filters, and metadata.<Keyword>. Value forms:
 *       CT                      equality
 *       CT,MR                   any of (a "\," is a literal comma)
 *       20000101-20011231       inclusive range (dates: YYYY, YYYYMM,
 *       2000-2001               YYYYMMDD or YYYY-MM-DD on either side,
 *       20000101- / -20011231   either side may be open; numbers: a-b)
 *       lt:2.5 lte: gt: gte: ne: eq:   comparison; exists:true|false
 *       LIDC-IDRI-00* / ?       DICOM wildcards → anchored regex
 *     Repeating a field ANDs the conditions. Series and instances also
 *     take their parents' fields: `study.<field>` (and `series.<field>` on
 *     instances) names one explicitly; a bare name the level does not have
 *     falls back to its parents (series?study_date=...). Studies carry
 *     series_count and instance_count as number fields.
 *     fields= and sort= accept the same parent names: each row then carries
 *     a "study" / "series" object with the fields asked for.
 *  2. A raw query ({collection, filter, parents, sort, projection, limit,
 *     skip} as JSON; parents = {"studies": {filter}, "series": {filter}}
 *     for conditions on the parent documents, and "study.<field>" in sort
 *     and projection) is validated against an operator whitelist: $where, $function,
 *     $accumulator, $expr with JavaScript, $out, $merge and any operator not
 *     on the list are refused with the reason; only catalogue collections
 *     may be named.
 * Both produce an mdb_query_t, which mdb_query_run executes (with a server
 * time limit) into {total, limit, offset, items}.
 *
 * Pure logic except mdb_query_run/mdb_query_count; no global state;
 * thread-safe for distinct mdb_query_t objects. */
#ifndef MDB_QUERY_H
#define MDB_QUERY_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MDB_QUERY_STUDIES = 0, MDB_QUERY_SERIES, MDB_QUERY_INSTANCES, MDB_QUERY_LEVEL_COUNT } mdb_query_level_t;

/* Type of a filterable field; decides how values are parsed. */
typedef enum {
    MDB_QFIELD_STRING = 0, /* equality, lists, wildcards, lt/gt as strings */
    MDB_QFIELD_DATE,       /* DICOM DA stored as "YYYYMMDD": ranges, years */
    MDB_QFIELD_NUMBER,     /* numbers: comparisons, a-b ranges */
    MDB_QFIELD_ANY         /* metadata.<Keyword>: numeric-looking values match numbers and strings */
} mdb_qfield_type_t;

/* One promoted (filterable, sortable) field of a level. */
typedef struct {
    const char *name; /* document field, e.g. "patient_id" */
    mdb_qfield_type_t type;
    const char *aliases; /* space-separated accepted parameter names, or NULL */
    const char *help;
} mdb_qfield_t;

typedef struct mdb_query mdb_query_t;

/* Collection name of a level ("studies", "series", "instances"). */
const char *mdb_query_level_name(mdb_query_level_t level);
/* Parse "studies"/"series"/"instances" (also "study", "instance"). */
bool mdb_query_level_parse(const char *name, mdb_query_level_t *out);

/* The promoted fields of a level; *n receives the count. Static storage. */
const mdb_qfield_t *mdb_query_fields(mdb_query_level_t level, size_t *n);
/* Resolve a parameter name (field, alias, "collection", "job",
 * "metadata.<Keyword>") to the document path; NULL when unknown. type may be NULL. */
const char *mdb_query_resolve_field(mdb_query_level_t level, const char *param, mdb_qfield_type_t *type);

/* ---- filter-parameter builder ---- */
/* New empty query on a level: filter {}, sort by _id, default limit 50,
 * offset 0, no projection. max_limit caps limit (<= 0: 1000). NULL on OOM. */
mdb_query_t *mdb_query_new(mdb_query_level_t level, int64_t max_limit);
void mdb_query_destroy(mdb_query_t *q); /* accepts NULL */

/* Add one name=value parameter. Names "limit", "offset", "sort", "fields"
 * are routed to the page/sort/projection setters; every other name must be
 * a filter field of the level. false with err (MDB_ERR_QUERY, a sentence
 * naming the parameter and what was expected) on an unknown field or a
 * malformed value; q is then unchanged. */
bool mdb_query_add_param(mdb_query_t *q, const char *name, const char *value, mdb_error_t *err);
/* Is name one of the non-filter parameters (limit, offset, sort, fields)? */
bool mdb_query_is_page_param(const char *name);

/* limit in [0, max_limit] (0: mdb_query_run counts and returns no items);
 * offset >= 0 (at most 10,000,000). */
bool mdb_query_set_limit(mdb_query_t *q, int64_t limit, mdb_error_t *err);
bool mdb_query_set_offset(mdb_query_t *q, int64_t offset, mdb_error_t *err);
/* "study_date,-patient_id": comma-separated fields, '-' = descending, '+'
 * or nothing = ascending. Fields must be known to the level. _id is always
 * appended as a tie-breaker so pages are stable. */
bool mdb_query_set_sort(mdb_query_t *q, const char *spec, mdb_error_t *err);
/* "patient_id,study_date,metadata.PatientAge": include-projection (_id is
 * always returned). Fields must be known to the level or metadata.*. */
bool mdb_query_set_fields(mdb_query_t *q, const char *spec, mdb_error_t *err);

/* Add a document path to the projection as it is (no field-table check):
 * for builders that need stored sub-fields, e.g. file.size for a manifest. */
bool mdb_query_project_path(mdb_query_t *q, const char *path, mdb_error_t *err);

/* ---- raw queries ---- */
/* Validate and adopt a raw query object {collection?, filter?, sort?,
 * projection?, limit?, skip?}. collection defaults to default_collection
 * (when NULL: "studies"); allowed collections are studies, series,
 * instances, jobs, collections, conflicts. NULL with err (MDB_ERR_QUERY,
 * the reason: which operator, where, why) on refusal. */
mdb_query_t *mdb_query_new_raw(const json_t *request, const char *default_collection, int64_t max_limit,
                               mdb_error_t *err);
/* Validate one filter object alone and convert it to BSON (out initialized
 * by the callee on success; caller destroys). */
bool mdb_query_filter_from_json(const json_t *filter, bson_t *out, mdb_error_t *err);
/* Check a filter operator name (with '$'): true if whitelisted; else false
 * with the reason (e.g. "$where runs JavaScript on the server"). */
bool mdb_query_operator_allowed(const char *op, mdb_error_t *err);

/* ---- accessors ---- */
const char *mdb_query_collection(const mdb_query_t *q);
const bson_t *mdb_query_filter(const mdb_query_t *q);
const bson_t *mdb_query_sort(const mdb_query_t *q);
const bson_t *mdb_query_projection(const mdb_query_t *q); /* empty = whole documents */
int64_t mdb_query_limit(const mdb_query_t *q);
int64_t mdb_query_offset(const mdb_query_t *q);
/* Relaxed extended JSON of the filter (for logs, --explain, the dashboard). Caller frees with bson_free. */
char *mdb_query_filter_json(const mdb_query_t *q);

/* ---- execution ---- */
/* Run q on m: count the matches and fetch one page, each with maxTimeMS
 * time_ms (<= 0: none). Returns {"total", "limit", "offset", "items": [...]}
 * (new reference) or NULL with err: MDB_ERR_QUERY when the server refused
 * the query (code = server code; 50 = time limit exceeded), MDB_ERR_MONGO
 * when the database could not be reached. skip_total=true leaves total
 * out (faster; used by cursor-less exports). */
json_t *mdb_query_run(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, bool skip_total, mdb_error_t *err);

/* One row of mdb_query_foreach: a JSON object, borrowed (valid during the
 * call; json_incref to keep it). Return false (err filled) to stop. */
typedef bool (*mdb_query_row_fn)(json_t *row, void *ud, mdb_error_t *err);

/* Call fn for every row q matches, in q's sort order, from q's offset on,
 * at most max_rows (<= 0: all; q's limit is ignored): the streaming form of
 * mdb_query_run for exports. Rows are read through one cursor in batches
 * (memory does not grow with the number of rows); parent fields are joined
 * per batch. time_ms bounds the parent-filter resolution and the parent
 * look-ups; the main cursor has no time limit (a slow reader must not turn
 * into a server-side timeout). false with err as for mdb_query_run, or as
 * fn filled it. */
bool mdb_query_foreach(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, int64_t max_rows, mdb_query_row_fn fn,
                       void *ud, mdb_error_t *err);
/* The number of rows q matches (parent filters resolved), in *n. */
bool mdb_query_count(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, int64_t *n, mdb_error_t *err);

/* The raw-query form of q ({collection, filter, parents?, sort,
 * projection?, limit, skip?}) that mdb_query_new_raw accepts and that
 * matches exactly the same rows: what "Open as raw query" shows. NULL with
 * err (MDB_ERR_QUERY, the reason) when a condition has no JSON form (a
 * wildcard inside an eq:/ne: list). New reference. */
json_t *mdb_query_raw_json(const mdb_query_t *q, mdb_error_t *err);

/* The filter q runs (parent conditions resolved to {study_id|series_id:
 * {$in: ids}}) into out (initialized by the callee, also on failure; caller
 * destroys); *empty when a parent condition matched nothing. */
bool mdb_query_effective_filter(mdb_mongo_t *m, const mdb_query_t *q, int64_t time_ms, bson_t *out, bool *empty,
                                mdb_error_t *err);
/* A new query on level child (q's level or below) matching the rows of
 * child that belong to q's rows: q's conditions become parent conditions
 * (the instances of a series cohort, for a file manifest). Default sort,
 * page and projection. NULL with err (MDB_ERR_QUERY) when child is above
 * q's level or q is a raw query on another collection. */
mdb_query_t *mdb_query_descend(const mdb_query_t *q, mdb_query_level_t child, mdb_error_t *err);

/* BSON document → JSON object (strings, numbers, bools, null, arrays,
 * objects; dates as ISO 8601 strings, ObjectIds as hex, binary omitted).
 * New reference; NULL on OOM. */
json_t *mdb_query_bson_to_json(const bson_t *doc);

#ifdef __cplusplus
}
#endif
#endif
