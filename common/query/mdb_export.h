/* mdb_export: the one cohort-export builder behind GET /api/<level>?format=,
 * GET /api/export/manifest, `metadb export` and the dashboard's Export
 * button, so a downloaded table and the CLI's file are byte for byte the
 * same for the same filter.
 *
 * A query (mdb_query, filter parameters or raw) is streamed row by row
 * (mdb_query_foreach: one cursor, parents joined per batch) through a
 * writer that formats each row and hands the bytes to a sink callback in
 * chunks of at most MDB_EXPORT_CHUNK bytes, so memory does not grow with
 * the number of rows:
 *   csv     RFC 4180: a header line of the column names, CRLF line ends,
 *           a cell quoted ("", doubled quotes) when it holds a comma, quote,
 *           CR or LF; arrays joined with ';', objects as compact JSON,
 *           missing values empty.
 *   json    one JSON array of row objects (only the chosen columns, nested
 *           as in the documents: {"_id":..., "study": {"patient_id": ...}}).
 *   ndjson  one row object per line (LF).
 * Columns are document paths ("patient_id", "metadata.Rows",
 * "study.study_date"); a CSV needs them (mdb_export_columns_for picks a
 * level's defaults), JSON without columns gives whole documents.
 *
 * The manifest is an export with fixed columns: one line per file (every
 * path of every matching instance) with path, sop_instance_uid,
 * series_instance_uid, study_instance_uid and size, and its sidecar
 * describes the cohort (mdb_export_sidecar). Pure formatting except
 * mdb_export_run / mdb_export_manifest_run / mdb_export_sidecar. */
#ifndef MDB_EXPORT_H
#define MDB_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_query.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_EXPORT_CHUNK 65536
#define MDB_EXPORT_MAX_COLUMNS 100

typedef enum { MDB_EXPORT_CSV = 0, MDB_EXPORT_JSON, MDB_EXPORT_NDJSON } mdb_export_format_t;

/* "csv" / "json" / "ndjson" (also "jsonl"). */
bool mdb_export_format_parse(const char *s, mdb_export_format_t *out);
const char *mdb_export_format_name(mdb_export_format_t f);
/* "text/csv; charset=utf-8", "application/json", "application/x-ndjson". */
const char *mdb_export_content_type(mdb_export_format_t f);

/* Receives formatted bytes in order. Return false (err filled) to stop. */
typedef bool (*mdb_export_sink_fn)(const char *data, size_t len, void *ud, mdb_error_t *err);

typedef struct mdb_export mdb_export_t;

/* A writer of format f over columns[0..ncols) (copied; ncols 0 = whole
 * rows, refused for CSV). NULL with err on OOM or bad columns. */
mdb_export_t *mdb_export_new(mdb_export_format_t f, const char *const *columns, size_t ncols, mdb_export_sink_fn sink,
                             void *ud, mdb_error_t *err);
void mdb_export_destroy(mdb_export_t *e); /* accepts NULL; does not flush */
/* Header (CSV) or '[' (JSON). Call once before the first row. */
bool mdb_export_begin(mdb_export_t *e, mdb_error_t *err);
/* Format one row (a JSON object as mdb_query returns it). */
bool mdb_export_row(mdb_export_t *e, const json_t *row, mdb_error_t *err);
/* Close the JSON array and hand every buffered byte to the sink. */
bool mdb_export_end(mdb_export_t *e, mdb_error_t *err);
int64_t mdb_export_rows(const mdb_export_t *e);

/* Value at a dotted path of a row ("study.patient_id"); NULL when absent. */
const json_t *mdb_export_get(const json_t *row, const char *path);
/* Append the CSV text of one cell (quoted as needed) to buf; false on OOM. */
bool mdb_export_csv_cell(const json_t *v, char **buf, size_t *len, size_t *cap);

/* The columns of an export of q: "_id" then the projection's fields in
 * order; when q has no projection, the level's default columns (and q's
 * projection is set to them, so only they are read). *out is a
 * NULL-terminated array the caller frees with mdb_export_columns_free. */
bool mdb_export_columns_for(mdb_query_t *q, char ***out, size_t *n, mdb_error_t *err);
void mdb_export_columns_free(char **cols);

/* Stream every row of q (from its offset, at most max_rows, <= 0: all) in
 * format f through sink. columns NULL: mdb_export_columns_for(q) for CSV,
 * whole rows for JSON/NDJSON when q has no projection. time_ms as for
 * mdb_query_foreach. *rows (may be NULL) receives the rows written. */
bool mdb_export_run(mdb_mongo_t *m, mdb_query_t *q, mdb_export_format_t f, int64_t time_ms, int64_t max_rows,
                    mdb_export_sink_fn sink, void *ud, int64_t *rows, mdb_error_t *err);

/* ---- the file manifest of a cohort ---- */
/* The instance query behind a manifest of cohort q (any level): instances
 * of the matching studies / series, or q's own instances, projected to
 * paths, file.size and the parent ids. New query (caller destroys) or NULL
 * with err. */
mdb_query_t *mdb_export_manifest_query(const mdb_query_t *q, mdb_error_t *err);
/* The manifest's columns: path, sop_instance_uid, series_instance_uid,
 * study_instance_uid, size. */
extern const char *const mdb_export_manifest_columns[5];
/* Stream the manifest of instance query iq (from mdb_export_manifest_query):
 * one line per path (an instance held in two files gives two lines). f:
 * csv (header + lines), ndjson, json. *files and *bytes (may be NULL)
 * receive the totals. */
bool mdb_export_manifest_run(mdb_mongo_t *m, const mdb_query_t *iq, mdb_export_format_t f, int64_t time_ms,
                             mdb_export_sink_fn sink, void *ud, int64_t *files, int64_t *bytes, mdb_error_t *err);
/* The sidecar describing cohort q: {metadb_version, generated_at, level,
 * parameters (as given, name/value pairs, may be NULL), query (the raw form,
 * mdb_query_raw_json), counts {matching rows, studies, series, instances,
 * files, bytes of the cohort}, catalogue {studies, series, instances,
 * last_update}}. Counts of the cohort's files and bytes are computed by
 * the database (an aggregation over the cohort's instances). New reference
 * or NULL with err. */
json_t *mdb_export_sidecar(mdb_mongo_t *m, const mdb_query_t *q, const json_t *parameters, int64_t time_ms,
                           mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
