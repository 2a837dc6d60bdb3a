/* mdb_facets: distributions of a cohort (GET /api/facets), computed by the
 * database. For a level and a list of fields it builds one aggregation:
 *   $match <the list's filter>, then $facet with, per field,
 *   - categorical (string fields, metadata.<Keyword>): the top N values with
 *     their counts, the count of the other values, of distinct values and of
 *     documents where the field is missing;
 *   - numeric (number fields): min/max/count, and a histogram ($bucket);
 *   - dates (DICOM DA strings "YYYYMMDD"): counts per year or per month.
 * The kind of a field comes from mdb_query's field table (the promoted
 * fields), never from a list of its own.
 *
 * Numeric bins need the range first. Without explicit boundaries
 * (bins.<field>=b0,b1,...) the bins are "nice" steps (1, 2, 2.5, 5 x 10^k)
 * covering [min, max]; the first aggregation returns min/max with the
 * distinct values and their counts when there are at most
 * MDB_FACETS_EXACT_VALUES of them (slice thickness, kVp, instance numbers),
 * and the bins are counted from those. Only a field with more distinct
 * values needs a second aggregation ($match + $facet of $bucket stages). So
 * a request costs one aggregation, two in that case.
 *
 * Pure logic (builds BSON, reads BSON replies, writes JSON); no I/O, no
 * global state; thread-safe for distinct objects. */
#ifndef MDB_FACETS_H
#define MDB_FACETS_H

#include <bson/bson.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "mdb_error.h"
#include "mdb_query.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_FACETS_MAX_FIELDS 16
#define MDB_FACETS_DEFAULT_TOP 10
#define MDB_FACETS_MAX_TOP 100
#define MDB_FACETS_DEFAULT_BINS 10
#define MDB_FACETS_MAX_BINS 100
#define MDB_FACETS_MAX_DATE_BUCKETS 2000
#define MDB_FACETS_EXACT_VALUES 1000 /* distinct numbers binned without a second pass */

typedef enum {
    MDB_FACET_VALUES = 0, /* categorical: top values */
    MDB_FACET_HISTOGRAM,  /* numbers: bins */
    MDB_FACET_DATES       /* DICOM dates: per year or month */
} mdb_facet_kind_t;

typedef struct mdb_facets mdb_facets_t;

/* New empty facet request on a level. NULL on OOM. */
mdb_facets_t *mdb_facets_new(mdb_query_level_t level);
void mdb_facets_destroy(mdb_facets_t *f); /* accepts NULL */

/* "modality,slice_thickness,study_date": each name resolved with
 * mdb_query_resolve_field on the level (aliases and metadata.<Keyword>
 * accepted), its kind from the field's type. false with err (MDB_ERR_QUERY,
 * naming the field) on an unknown field, a duplicate, an empty list or more
 * than MDB_FACETS_MAX_FIELDS. */
bool mdb_facets_set_fields(mdb_facets_t *f, const char *spec, mdb_error_t *err);

/* Is name one of the facet options (top, bins, interval, bins.<field>,
 * interval.<field>) rather than a filter? */
bool mdb_facets_is_option(const char *name);
/* Apply one option (call after mdb_facets_set_fields for the per-field ones):
 *   top=N                categorical: values listed (1..MDB_FACETS_MAX_TOP)
 *   bins=N               numeric: number of bins wanted (1..MDB_FACETS_MAX_BINS)
 *   bins.<field>=a,b,c   numeric: explicit ascending boundaries (>= 2)
 *   interval=year|month  dates; interval.<field>=year|month for one field
 * false with err (MDB_ERR_QUERY) on a malformed value or a field that is not
 * requested or not of the right kind. */
bool mdb_facets_set_option(mdb_facets_t *f, const char *name, const char *value, mdb_error_t *err);

/* Requested fields in order; kind and document path of field i. */
size_t mdb_facets_count(const mdb_facets_t *f);
const char *mdb_facets_field(const mdb_facets_t *f, size_t i);
mdb_facet_kind_t mdb_facets_kind(const mdb_facets_t *f, size_t i);

/* The first aggregation pipeline (an array document [ {$match}, {$facet} ])
 * into out (initialized by the callee). match may be NULL (= {}). */
bool mdb_facets_pipeline(const mdb_facets_t *f, const bson_t *match, bson_t *out, mdb_error_t *err);

/* Read the first aggregation's single result document: stores the stats of
 * numeric fields and chooses their boundaries. Returns true and sets
 * *need_second when some histogram still has to be counted by
 * mdb_facets_bins_pipeline. false with err on a reply of the wrong shape. */
bool mdb_facets_read(mdb_facets_t *f, const bson_t *reply, bool *need_second, mdb_error_t *err);

/* The second pipeline ($match + $facet of $bucket per numeric field whose
 * boundaries were chosen from min/max) into out (initialized). */
bool mdb_facets_bins_pipeline(const mdb_facets_t *f, const bson_t *match, bson_t *out, mdb_error_t *err);
/* Read the second aggregation's result document. */
bool mdb_facets_read_bins(mdb_facets_t *f, const bson_t *reply, mdb_error_t *err);

/* The answer (new reference; NULL on OOM):
 * {"level", "total", "facets": {field: {...}}}; see docs/api.md. */
json_t *mdb_facets_result(const mdb_facets_t *f);

/* Nice boundaries covering [min, max] with about want bins (step 1, 2, 2.5
 * or 5 x 10^k; the last boundary is > max so max falls in the last bin).
 * Writes at most cap values to out and returns the count (>= 2), or 0 when
 * min/max are not finite or min > max. */
size_t mdb_facets_nice_bounds(double min, double max, int want, double *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
