/* mdb_query_private.h: internals shared by the files of the query module
 * (mdb_query.c: levels and the query object; mdb_query_fields.c: field
 * tables and parent names; mdb_query_value.c: numbers, dates, lists;
 * mdb_query_clause.c: one parameter's clause; mdb_query_params.c: filter,
 * page, sort and fields parameters; mdb_query_raw.c: the raw-filter
 * whitelist; mdb_query_raw_form.c: raw queries in and out;
 * mdb_query_json.c: BSON → JSON; mdb_query_exec.c: execution;
 * mdb_query_rows.c: rows and the parent join; mdb_query_page.c: pages
 * sorted by a parent field). Not for use outside mdb_query*.c. */
#ifndef MDB_QUERY_PRIVATE_H
#define MDB_QUERY_PRIVATE_H

#include "mdb_query.h"

#define MDB_QUERY_MAX_OFFSET 10000000

/* ---- the query object (mdb_query.c) ---- */

/* Clauses that are ANDed; each bson_t is owned by the list. */
typedef struct {
    bson_t **v;
    size_t n, cap;
} mdb_query_clauses_t;

struct mdb_query {
    mdb_query_level_t level; /* MDB_QUERY_LEVEL_COUNT for raw queries on other collections */
    char collection[32];
    mdb_query_clauses_t clauses;
    mdb_query_clauses_t parent[MDB_QUERY_LEVEL_COUNT]; /* clauses on studies / series */
    bson_t filter;                                     /* built from clauses (or the raw filter) */
    bool filter_dirty;
    bool raw;
    bson_t sort;
    bson_t projection;
    int64_t limit, offset, max_limit;
};

/* Destroy every clause; l is empty (and reusable) after. */
void mdb_query_clauses_clear(mdb_query_clauses_t *l);
/* Append c. Takes ownership of c (destroys it on failure). false on OOM. */
bool mdb_query_clauses_push(mdb_query_clauses_t *l, bson_t *c);
/* out (reinitialized) = the clauses ANDed: {} for none, the clause itself
 * for one, {$and: [...]} for more. */
void mdb_query_build_and(const mdb_query_clauses_t *l, bson_t *out);
/* Is key a top-level key of b (dotted keys compared whole, not as paths)? */
bool mdb_query_has_key(const bson_t *b, const char *key);

/* ---- fields (mdb_query_fields.c) ---- */

/* How a child names each parent level ("study", "series") and the key it
 * carries the parent's _id in ("study_id", "series_id"); NULL for instances. */
extern const char *const mdb_query_parent_names[MDB_QUERY_LEVEL_COUNT];
extern const char *const mdb_query_parent_keys[MDB_QUERY_LEVEL_COUNT];

/* The field entry for param on level (name or alias) or NULL. For
 * metadata.<Keyword> returns a static entry and sets *meta. */
const mdb_qfield_t *mdb_query_find_field(mdb_query_level_t level, const char *param, bool *meta);
/* When name is "study.<rest>" or "series.<rest>" naming a parent of level,
 * set *parent and return rest; else NULL. */
const char *mdb_query_parent_prefix(mdb_query_level_t level, const char *name, mdb_query_level_t *parent);
/* The level's field names as "unknown field" errors list them, into buf. */
void mdb_query_known_fields(mdb_query_level_t level, char *buf, size_t size);

/* ---- values (mdb_query_value.c) ---- */

/* One item of a parameter's value list. */
typedef struct {
    char *text;    /* unescaped value */
    char *pattern; /* anchored regex when the item has unescaped * or ?, else NULL */
} mdb_query_item_t;

/* Whole-string decimal integer. */
bool mdb_query_parse_int64(const char *s, int64_t *out);
/* Decimal number (no hex, no inf/nan, no leading/trailing space). */
bool mdb_query_parse_number(const char *s, double *out);
/* Append v as int64 when it is integral, else as double. */
void mdb_query_append_number(bson_t *b, const char *key, double v);
/* A (possibly partial) date of len bytes: YYYY, YYYYMM, YYYYMMDD, YYYY-MM,
 * YYYY-MM-DD, YYYY.MM.DD. Writes the first and last YYYYMMDD it covers. */
bool mdb_query_parse_date(const char *s, size_t len, char lo[9], char hi[9]);
/* Split value on unescaped commas (split=false: one item), unescape, build
 * wildcard patterns. *out is the caller's (mdb_query_items_free). false
 * with err on too many items or OOM. */
bool mdb_query_split_items(const char *value, bool split, mdb_query_item_t **out, size_t *nout, mdb_error_t *err);
void mdb_query_items_free(mdb_query_item_t *items, size_t n);

/* ---- clauses (mdb_query_clause.c) ---- */

/* The clause for param=value on path (a new document, caller destroys), or
 * NULL with err naming param. */
bson_t *mdb_query_param_clause(const char *param, const char *path, mdb_qfield_type_t type, const char *value,
                               mdb_error_t *err);
/* {$or: [a, b]} ({$and: ...} when negation). Takes ownership of a and b. */
bson_t *mdb_query_either_clause(bson_t *a, bson_t *b, bool negation);

/* ---- raw filters (mdb_query_raw.c) ---- */

/* When op is a refused operator, fill err with why and return true. */
bool mdb_query_refused_reason(const char *op, mdb_error_t *err);
bool mdb_query_in_list(const char *s, const char *const *list, size_t n);
/* A non-empty object whose first key starts with '$'. */
bool mdb_query_is_operator_object(const json_t *v);
/* A raw field name (sort or projection key): non-empty, no empty segment,
 * no segment starting with '$'. false with err. */
bool mdb_query_check_field_name(const char *key, mdb_error_t *err);

/* ---- rows (mdb_query_rows.c, mdb_query_page.c) ---- */

/* Read the rows of filter (skip, limit <= 0: all) in q's sort order into fn.
 * cursor_ms is the main cursor's maxTimeMS (<= 0: none), time_ms that of
 * the parent look-ups. */
bool mdb_query_read_rows(mdb_mongo_t *m, const mdb_query_t *q, const bson_t *filter, int64_t skip, int64_t limit,
                         int64_t cursor_ms, int64_t time_ms, mdb_query_row_fn fn, void *ud, mdb_error_t *err);
/* For a sort led by parent fields: on success with *usable, narrowed holds
 * filter restricted to the rows of the first parents that can fill the
 * first need rows (caller destroys it); else the caller joins every row. */
bool mdb_query_page_candidates(mdb_mongo_t *m, const mdb_query_t *q, const bson_t *filter, int64_t need,
                               int64_t time_ms, bson_t *narrowed, bool *usable, mdb_error_t *err);

#endif
