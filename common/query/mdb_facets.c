/* mdb_facets: builds the aggregation behind GET /api/facets and turns its
 * reply into JSON (see mdb_facets.h for the contract).
 *
 * Every sub-pipeline starts with {$project: {_id: 0, v: <field>}} so that
 * array fields (collection_ids, a study's modalities) are unwound and
 * counted per value like scalars, and the $facet keys are positional
 * ("t", "v0", "n1", "h1", "d2") because field paths carry dots that a
 * $facet output name may not. Each sub-pipeline is a pass over the matched
 * documents (on DocumentDB ~0.7 s per 250,000 instances), so each field
 * costs one: values take their top N and totals from one $group ($topN). Missing, null and empty-array values form the
 * "missing" count; DocumentDB's $min/$max do not skip missing values, so
 * numeric stats first keep numbers only ($type: "number"). */
#include "mdb_facets.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 256

typedef struct {
    char path[PATH_MAX_LEN]; /* document path, also the key of the answer */
    mdb_facet_kind_t kind;
    int date_len; /* 4 = per year, 6 = per month */
    double bounds[MDB_FACETS_MAX_BINS + 1];
    size_t nbounds;
    bool explicit_bounds;
    bool have_stats;
    double min, max;
    int64_t numeric; /* values that are numbers */
    bool binned;     /* bins counted from the first reply's exact values */
    json_t *answer;  /* the field's part of the result, filled by the readers */
} facet_t;

struct mdb_facets {
    mdb_query_level_t level;
    facet_t fields[MDB_FACETS_MAX_FIELDS];
    size_t n;
    int top, bins;
    int64_t total;
    bool have_total;
};

mdb_facets_t *mdb_facets_new(mdb_query_level_t level)
{
    if (level >= MDB_QUERY_LEVEL_COUNT)
        return NULL;
    mdb_facets_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->level = level;
    f->top = MDB_FACETS_DEFAULT_TOP;
    f->bins = MDB_FACETS_DEFAULT_BINS;
    return f;
}

void mdb_facets_destroy(mdb_facets_t *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        json_decref(f->fields[i].answer);
    free(f);
}

size_t mdb_facets_count(const mdb_facets_t *f)
{
    return f->n;
}

const char *mdb_facets_field(const mdb_facets_t *f, size_t i)
{
    return i < f->n ? f->fields[i].path : NULL;
}

mdb_facet_kind_t mdb_facets_kind(const mdb_facets_t *f, size_t i)
{
    return i < f->n ? f->fields[i].kind : MDB_FACET_VALUES;
}

static mdb_facet_kind_t kind_of(mdb_qfield_type_t t)
{
    switch (t) {
    case MDB_QFIELD_NUMBER: return MDB_FACET_HISTOGRAM;
    case MDB_QFIELD_DATE: return MDB_FACET_DATES;
    default: return MDB_FACET_VALUES;
    }
}

static facet_t *find_facet(mdb_facets_t *f, const char *path)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->fields[i].path, path))
            return &f->fields[i];
    return NULL;
}

static bool add_field(mdb_facets_t *f, const char *name, mdb_error_t *err)
{
    mdb_qfield_type_t type;
    const char *path = mdb_query_resolve_field(f->level, name, &type);
    if (!path) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown facet field '%.64s' for %s (see /api/fields)", name,
                      mdb_query_level_name(f->level));
        return false;
    }
    if (strlen(path) >= PATH_MAX_LEN) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "facet field '%.64s...' is too long", name);
        return false;
    }
    if (find_facet(f, path)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "facet field '%.64s' is asked for twice", name);
        return false;
    }
    if (f->n >= MDB_FACETS_MAX_FIELDS) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "at most %d facet fields per request", MDB_FACETS_MAX_FIELDS);
        return false;
    }
    facet_t *x = &f->fields[f->n];
    memset(x, 0, sizeof *x);
    snprintf(x->path, sizeof x->path, "%s", path);
    x->kind = kind_of(type);
    x->date_len = 4;
    f->n++;
    return true;
}

bool mdb_facets_set_fields(mdb_facets_t *f, const char *spec, mdb_error_t *err)
{
    char name[PATH_MAX_LEN];
    if (!spec || !*spec) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'fields' names the facet fields, e.g. fields=modality,study_date");
        return false;
    }
    for (const char *p = spec; p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len >= sizeof name) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'fields': empty or too long field name in '%.64s'", spec);
            return false;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        if (!add_field(f, name, err))
            return false;
        p = end ? end + 1 : NULL;
    }
    return true;
}

bool mdb_facets_is_option(const char *name)
{
    return !strcmp(name, "top") || !strcmp(name, "bins") || !strcmp(name, "interval") || !strncmp(name, "bins.", 5) ||
           !strncmp(name, "interval.", 9);
}

static bool parse_int_in(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_interval(const char *s, int *len)
{
    if (!strcmp(s, "year")) {
        *len = 4;
        return true;
    }
    if (!strcmp(s, "month")) {
        *len = 6;
        return true;
    }
    return false;
}

/* "0,1,2.5,5": ascending finite numbers, 2..MDB_FACETS_MAX_BINS+1 of them. */
static bool parse_bounds(facet_t *x, const char *s, mdb_error_t *err)
{
    size_t n = 0;
    for (const char *p = s; p;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || (*end && *end != ',') || n > MDB_FACETS_MAX_BINS ||
            (n > 0 && v <= x->bounds[n - 1])) {
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "'bins.%s' expects 2 to %d ascending numbers separated by commas, got '%.64s'", x->path,
                          MDB_FACETS_MAX_BINS + 1, s);
            return false;
        }
        x->bounds[n++] = v;
        p = *end ? end + 1 : NULL;
    }
    if (n < 2) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'bins.%s' needs at least two boundaries, got '%.64s'", x->path, s);
        return false;
    }
    x->nbounds = n;
    x->explicit_bounds = true;
    return true;
}

/* The facet named by the suffix of a per-field option, of the wanted kind. */
static facet_t *option_facet(mdb_facets_t *f, const char *opt, const char *field, mdb_facet_kind_t kind,
                             mdb_error_t *err)
{
    const char *path = mdb_query_resolve_field(f->level, field, NULL);
    facet_t *x = path ? find_facet(f, path) : NULL;
    if (!x) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s.%.64s': that field is not in 'fields'", opt, field);
        return NULL;
    }
    if (x->kind != kind) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s.%.64s': %s is not a %s field", opt, field, x->path,
                      kind == MDB_FACET_DATES ? "date" : "number");
        return NULL;
    }
    return x;
}

bool mdb_facets_set_option(mdb_facets_t *f, const char *name, const char *value, mdb_error_t *err)
{
    int v;
    if (!name || !value) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "option without a name or value");
        return false;
    }
    if (!strcmp(name, "top")) {
        if (parse_int_in(value, 1, MDB_FACETS_MAX_TOP, &f->top))
            return true;
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'top' expects 1 to %d, got '%.32s'", MDB_FACETS_MAX_TOP, value);
        return false;
    }
    if (!strcmp(name, "bins")) {
        if (parse_int_in(value, 1, MDB_FACETS_MAX_BINS, &f->bins))
            return true;
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'bins' expects a number of bins from 1 to %d, got '%.32s'",
                      MDB_FACETS_MAX_BINS, value);
        return false;
    }
    if (!strcmp(name, "interval")) {
        if (!parse_interval(value, &v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'interval' expects year or month, got '%.32s'", value);
            return false;
        }
        for (size_t i = 0; i < f->n; i++)
            f->fields[i].date_len = v;
        return true;
    }
    if (!strncmp(name, "interval.", 9)) {
        facet_t *x = option_facet(f, "interval", name + 9, MDB_FACET_DATES, err);
        if (!x)
            return false;
        if (!parse_interval(value, &x->date_len)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%.64s' expects year or month, got '%.32s'", name, value);
            return false;
        }
        return true;
    }
    if (!strncmp(name, "bins.", 5)) {
        facet_t *x = option_facet(f, "bins", name + 5, MDB_FACET_HISTOGRAM, err);
        return x && parse_bounds(x, value, err);
    }
    mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown facet option '%.64s'", name);
    return false;
}

/* ------------------------------------------------------------------------ */
/* nice bins                                                                 */

/* mant x 10^exp, computed so that 0.1-steps print as 0.3, not 0.30000000000000004. */
static double scaled(double mant, int exp)
{
    return exp >= 0 ? mant * pow(10, exp) : mant / pow(10, -exp);
}

/* Boundaries for about want bins, or 0 when they need more than cap. */
static size_t nice_try(double min, double max, int want, double *out, size_t cap)
{
    double raw = (max - min) / want;
    int exp = (int)floor(log10(raw));
    /* step = m x 10^e with m in {1, 2, 2.5, 5}; 2.5 kept integral as 25 x 10^(e-1). */
    static const int mants[] = {1, 2, 25, 5, 10};
    static const int shift[] = {0, 0, -1, 0, 0};
    int m = 10, e = exp;
    for (size_t i = 0; i < sizeof mants / sizeof mants[0]; i++) {
        if (scaled(mants[i], exp + shift[i]) >= raw * (1 - 1e-9)) {
            m = mants[i];
            e = exp + shift[i];
            break;
        }
    }
    double k0 = floor(min / scaled(m, e) + 1e-9);
    size_t n = 0;
    for (double k = k0; n < cap; k += 1) {
        out[n++] = scaled(k * m, e);
        if (out[n - 1] > max && n >= 2)
            return n;
    }
    return 0;
}

size_t mdb_facets_nice_bounds(double min, double max, int want, double *out, size_t cap)
{
    if (!isfinite(min) || !isfinite(max) || min > max || cap < 2)
        return 0;
    if (min == max) { /* one value: one bin of width 1 around it */
        out[0] = floor(min);
        out[1] = out[0] + 1;
        return 2;
    }
    if (want < 1)
        want = 1;
    if ((size_t)want > cap - 1)
        want = (int)(cap - 1);
    /* a span beyond the doubles (1e308 - -1e308) or too small to divide
     * into steps (denormals) has no nice bins */
    if (!isfinite(max - min) || (max - min) / want < 1e-300)
        return 0;
    /* rounding the ends out to whole steps can add a bin or two */
    for (int w = want; w >= 1; w--) {
        size_t n = nice_try(min, max, w, out, cap);
        if (n)
            return n;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* pipelines                                                                 */

static void facet_key(char *buf, size_t size, char tag, size_t i)
{
    snprintf(buf, size, "%c%zu", tag, i);
}

/* "$path", or for a study's modality its series' modalities when present. */
static void append_value_expr(const mdb_facets_t *f, const facet_t *x, bson_t *proj)
{
    char ref[PATH_MAX_LEN + 1];
    snprintf(ref, sizeof ref, "$%s", x->path);
    if (f->level == MDB_QUERY_STUDIES && !strcmp(x->path, "modality")) {
        bson_t e, arr;
        bson_append_document_begin(proj, "v", 1, &e);
        bson_append_array_begin(&e, "$ifNull", 7, &arr);
        BSON_APPEND_UTF8(&arr, "0", "$modalities");
        BSON_APPEND_UTF8(&arr, "1", ref);
        bson_append_array_end(&e, &arr);
        bson_append_document_end(proj, &e);
        return;
    }
    BSON_APPEND_UTF8(proj, "v", ref);
}

/* Stage {$project: {_id: 0, v: <value>}} then $unwind of v (keeping
 * documents without a value when keep_missing). Returns the next index. */
static uint32_t append_project_unwind(const mdb_facets_t *f, const facet_t *x, bson_t *arr, uint32_t i,
                                      bool keep_missing)
{
    char key[24];
    const char *k;
    bson_t st, proj, uw;
    bson_uint32_to_string(i++, &k, key, sizeof key);
    bson_append_document_begin(arr, k, -1, &st);
    bson_append_document_begin(&st, "$project", -1, &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    append_value_expr(f, x, &proj);
    bson_append_document_end(&st, &proj);
    bson_append_document_end(arr, &st);

    bson_uint32_to_string(i++, &k, key, sizeof key);
    bson_append_document_begin(arr, k, -1, &st);
    bson_append_document_begin(&st, "$unwind", -1, &uw);
    BSON_APPEND_UTF8(&uw, "path", "$v");
    BSON_APPEND_BOOL(&uw, "preserveNullAndEmptyArrays", keep_missing);
    bson_append_document_end(&st, &uw);
    bson_append_document_end(arr, &st);
    return i;
}

static void append_stage(bson_t *arr, uint32_t i, const bson_t *stage)
{
    char key[24];
    const char *k;
    bson_uint32_to_string(i, &k, key, sizeof key);
    bson_append_document(arr, k, -1, stage);
}

/* v0, one sub-pipeline (each costs a pass over the matched documents):
 * group by value (documents without one under _id null), then one $group
 * that keeps the top+1 largest groups ($topN: the null group may be among
 * them) and sums present and missing counts and the distinct values. */
static void append_values_facets(const mdb_facets_t *f, const facet_t *x, size_t idx, bson_t *facet)
{
    char name[24];
    bson_t arr;
    facet_key(name, sizeof name, 'v', idx);
    bson_append_array_begin(facet, name, -1, &arr);
    uint32_t i = append_project_unwind(f, x, &arr, 0, true);
    bson_t *st = BCON_NEW("$group", "{", "_id", BCON_UTF8("$v"), "n", "{", "$sum", BCON_INT32(1), "}", "}");
    append_stage(&arr, i++, st);
    bson_destroy(st);
    st = BCON_NEW("$group", "{", "_id", BCON_NULL, "top", "{", "$topN", "{", "n", BCON_INT32(f->top + 1), "sortBy", "{",
                  "n", BCON_INT32(-1), "_id", BCON_INT32(1), "}", "output", "{", "v", BCON_UTF8("$_id"), "n",
                  BCON_UTF8("$n"), "}", "}", "}", "present", "{", "$sum", "{", "$cond", "[", "{", "$eq", "[",
                  BCON_UTF8("$_id"), BCON_NULL, "]", "}", BCON_INT32(0), BCON_UTF8("$n"), "]", "}", "}", "missing", "{",
                  "$sum", "{", "$cond", "[", "{", "$eq", "[", BCON_UTF8("$_id"), BCON_NULL, "]", "}", BCON_UTF8("$n"),
                  BCON_INT32(0), "]", "}", "}", "d", "{", "$sum", "{", "$cond", "[", "{", "$eq", "[", BCON_UTF8("$_id"),
                  BCON_NULL, "]", "}", BCON_INT32(0), BCON_INT32(1), "]", "}", "}", "}");
    append_stage(&arr, i++, st);
    bson_destroy(st);
    bson_append_array_end(facet, &arr);
}

/* n0: min/max/count of the numbers, and the number of distinct values
 * with up to MDB_FACETS_EXACT_VALUES+1 of them and their counts: when that
 * is all of them the bins are counted from these, without a second pass. */
static void append_stats_facet(const mdb_facets_t *f, const facet_t *x, size_t idx, bson_t *facet)
{
    char name[24];
    bson_t arr;
    facet_key(name, sizeof name, 'n', idx);
    bson_append_array_begin(facet, name, -1, &arr);
    uint32_t i = append_project_unwind(f, x, &arr, 0, false);
    bson_t *st = BCON_NEW("$match", "{", "v", "{", "$type", BCON_UTF8("number"), "}", "}");
    append_stage(&arr, i++, st);
    bson_destroy(st);
    st = BCON_NEW("$group", "{", "_id", BCON_UTF8("$v"), "n", "{", "$sum", BCON_INT32(1), "}", "}");
    append_stage(&arr, i++, st);
    bson_destroy(st);
    st = BCON_NEW("$group", "{", "_id", BCON_NULL, "min", "{", "$min", BCON_UTF8("$_id"), "}", "max", "{", "$max",
                  BCON_UTF8("$_id"), "}", "n", "{", "$sum", BCON_UTF8("$n"), "}", "d", "{", "$sum", BCON_INT32(1), "}",
                  "vals", "{", "$firstN", "{", "n", BCON_INT32(MDB_FACETS_EXACT_VALUES + 1), "input", "{", "v",
                  BCON_UTF8("$_id"), "n", BCON_UTF8("$n"), "}", "}", "}", "}");
    append_stage(&arr, i++, st);
    bson_destroy(st);
    bson_append_array_end(facet, &arr);
}

/* h0: $bucket over the boundaries; values outside them go to "other". */
static void append_bucket_facet(const mdb_facets_t *f, const facet_t *x, size_t idx, bson_t *facet)
{
    char name[24], key[16];
    const char *k;
    bson_t arr, st, b, bounds, out, sum;
    facet_key(name, sizeof name, 'h', idx);
    bson_append_array_begin(facet, name, -1, &arr);
    uint32_t i = append_project_unwind(f, x, &arr, 0, false);
    bson_t *m = BCON_NEW("$match", "{", "v", "{", "$type", BCON_UTF8("number"), "}", "}");
    append_stage(&arr, i++, m);
    bson_destroy(m);
    bson_uint32_to_string(i++, &k, key, sizeof key);
    bson_append_document_begin(&arr, k, -1, &st);
    bson_append_document_begin(&st, "$bucket", -1, &b);
    BSON_APPEND_UTF8(&b, "groupBy", "$v");
    bson_append_array_begin(&b, "boundaries", -1, &bounds);
    for (size_t j = 0; j < x->nbounds; j++) {
        bson_uint32_to_string((uint32_t)j, &k, key, sizeof key);
        BSON_APPEND_DOUBLE(&bounds, k, x->bounds[j]);
    }
    bson_append_array_end(&b, &bounds);
    BSON_APPEND_UTF8(&b, "default", "other");
    bson_append_document_begin(&b, "output", -1, &out);
    bson_append_document_begin(&out, "n", -1, &sum);
    BSON_APPEND_INT32(&sum, "$sum", 1);
    bson_append_document_end(&out, &sum);
    bson_append_document_end(&b, &out);
    bson_append_document_end(&st, &b);
    bson_append_document_end(&arr, &st);
    bson_append_array_end(facet, &arr);
}

/* d0: counts per date prefix (YYYY or YYYYMM) of date strings; null = none or malformed. */
static void append_dates_facet(const mdb_facets_t *f, const facet_t *x, size_t idx, bson_t *facet)
{
    char name[24], ref[PATH_MAX_LEN + 1];
    bson_t arr;
    (void)f;
    snprintf(ref, sizeof ref, "$%s", x->path);
    facet_key(name, sizeof name, 'd', idx);
    bson_append_array_begin(facet, name, -1, &arr);
    /* strings of at least 8 bytes (a whole YYYYMMDD, what the list's date
     * filters can select), in three steps: DocumentDB evaluates both
     * branches of a $cond, so $strLenBytes cannot be guarded by a type test. */
    bson_t *st = BCON_NEW("$project", "{", "_id", BCON_INT32(0), "v", "{", "$cond", "[", "{", "$eq", "[", "{", "$type",
                          BCON_UTF8(ref), "}", BCON_UTF8("string"), "]", "}", BCON_UTF8(ref), BCON_NULL, "]", "}", "}");
    append_stage(&arr, 0, st);
    bson_destroy(st);
    st = BCON_NEW("$project", "{", "v", "{", "$substrBytes", "[", BCON_UTF8("$v"), BCON_INT32(0),
                  BCON_INT32(x->date_len), "]", "}", "w", "{", "$substrBytes", "[", BCON_UTF8("$v"), BCON_INT32(7),
                  BCON_INT32(1), "]", "}", "}");
    append_stage(&arr, 1, st);
    bson_destroy(st);
    st = BCON_NEW("$project", "{", "v", "{", "$cond", "[", "{", "$eq", "[", BCON_UTF8("$w"), BCON_UTF8(""), "]", "}",
                  BCON_NULL, BCON_UTF8("$v"), "]", "}", "}");
    append_stage(&arr, 2, st);
    bson_destroy(st);
    st = BCON_NEW("$group", "{", "_id", BCON_UTF8("$v"), "n", "{", "$sum", BCON_INT32(1), "}", "}");
    append_stage(&arr, 3, st);
    bson_destroy(st);
    st = BCON_NEW("$sort", "{", "_id", BCON_INT32(1), "}");
    append_stage(&arr, 4, st);
    bson_destroy(st);
    st = BCON_NEW("$limit", BCON_INT32(MDB_FACETS_MAX_DATE_BUCKETS + 1));
    append_stage(&arr, 5, st);
    bson_destroy(st);
    bson_append_array_end(facet, &arr);
}

/* Is a an ancestor path of b ("metadata.A" of "metadata.A.B")? */
static bool path_within(const char *a, const char *b)
{
    size_t n = strlen(a);
    return !strncmp(a, b, n) && b[n] == '.';
}

/* Stage "1": {$project: {_id: 0, <each field>: 1}}. $facet hands every
 * matched document to each sub-pipeline; keeping only the counted fields
 * makes that a few bytes per document instead of the whole document with
 * its metadata (instances carry dozens of attributes). */
static void append_projection(const mdb_facets_t *f, bson_t *out)
{
    bson_t st, proj;
    bson_append_document_begin(out, "1", 1, &st);
    bson_append_document_begin(&st, "$project", -1, &proj);
    BSON_APPEND_INT32(&proj, "_id", 0);
    for (size_t i = 0; i < f->n; i++) {
        const char *p = f->fields[i].path;
        bool covered = false;
        for (size_t j = 0; j < f->n && !covered; j++)
            covered = j != i && path_within(f->fields[j].path, p);
        if (!covered)
            BSON_APPEND_INT32(&proj, p, 1);
        if (f->level == MDB_QUERY_STUDIES && !strcmp(p, "modality"))
            BSON_APPEND_INT32(&proj, "modalities", 1);
    }
    bson_append_document_end(&st, &proj);
    bson_append_document_end(out, &st);
}

/* [ {$match: match}, {$project: the fields}, {$facet: {...}} ] with the
 * facets chosen by second. */
static bool build(const mdb_facets_t *f, const bson_t *match, bool second, bson_t *out, mdb_error_t *err)
{
    bson_t st, facet, arr;
    bson_init(out);
    if (f->n == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "no facet fields");
        return false;
    }
    bson_t empty = BSON_INITIALIZER;
    bson_append_document_begin(out, "0", 1, &st);
    BSON_APPEND_DOCUMENT(&st, "$match", match ? match : &empty);
    bson_append_document_end(out, &st);
    append_projection(f, out);
    bson_append_document_begin(out, "2", 1, &st);
    bson_append_document_begin(&st, "$facet", -1, &facet);
    if (!second) {
        bson_append_array_begin(&facet, "t", 1, &arr);
        bson_t *g = BCON_NEW("$group", "{", "_id", BCON_NULL, "n", "{", "$sum", BCON_INT32(1), "}", "}");
        append_stage(&arr, 0, g);
        bson_destroy(g);
        bson_append_array_end(&facet, &arr);
    }
    for (size_t i = 0; i < f->n; i++) {
        const facet_t *x = &f->fields[i];
        if (second) {
            if (x->kind == MDB_FACET_HISTOGRAM && !x->explicit_bounds && !x->binned && x->nbounds >= 2)
                append_bucket_facet(f, x, i, &facet);
            continue;
        }
        switch (x->kind) {
        case MDB_FACET_VALUES: append_values_facets(f, x, i, &facet); break;
        case MDB_FACET_HISTOGRAM:
            append_stats_facet(f, x, i, &facet);
            if (x->explicit_bounds)
                append_bucket_facet(f, x, i, &facet);
            break;
        case MDB_FACET_DATES: append_dates_facet(f, x, i, &facet); break;
        }
    }
    bson_append_document_end(&st, &facet);
    bson_append_document_end(out, &st);
    bson_destroy(&empty);
    return true;
}

bool mdb_facets_pipeline(const mdb_facets_t *f, const bson_t *match, bson_t *out, mdb_error_t *err)
{
    return build(f, match, false, out, err);
}

bool mdb_facets_bins_pipeline(const mdb_facets_t *f, const bson_t *match, bson_t *out, mdb_error_t *err)
{
    return build(f, match, true, out, err);
}

/* ------------------------------------------------------------------------ */
/* reading replies                                                           */

static bool bad_reply(mdb_error_t *err, const char *what)
{
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "unexpected facet reply from the database (%s)", what);
    return false;
}

/* The array under key in reply (an iterator over its elements). */
static bool facet_array(const bson_t *reply, const char *key, bson_iter_t *elems)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, elems);
}

static bool is_number(const bson_iter_t *it)
{
    return BSON_ITER_HOLDS_INT32(it) || BSON_ITER_HOLDS_INT64(it) || BSON_ITER_HOLDS_DOUBLE(it) ||
           BSON_ITER_HOLDS_DECIMAL128(it);
}

/* Field key of the current array element (a document) as int64 / double. */
static bool doc_number(const bson_iter_t *elem, const char *key, double *out)
{
    bson_iter_t d, v;
    if (!BSON_ITER_HOLDS_DOCUMENT(elem) || !bson_iter_recurse(elem, &d) || !bson_iter_find(&d, key))
        return false;
    v = d;
    if (!is_number(&v))
        return false;
    *out = bson_iter_as_double(&v);
    return true;
}

/* A count from the reply: only a whole number in [0, 2^53] is one (a
 * database answering NaN, 1e300 or -5 for a count gets "not there"). */
static bool doc_count(const bson_iter_t *elem, const char *key, int64_t *out)
{
    double v;
    if (!doc_number(elem, key, &v) || !(v >= 0 && v <= 9007199254740992.0) || v != floor(v))
        return false;
    *out = (int64_t)v;
    return true;
}

static bool doc_id(const bson_iter_t *elem, bson_iter_t *id)
{
    bson_iter_t d;
    if (!BSON_ITER_HOLDS_DOCUMENT(elem) || !bson_iter_recurse(elem, &d) || !bson_iter_find(&d, "_id"))
        return false;
    *id = d;
    return true;
}

/* A bson value as JSON (strings, numbers, booleans), or NULL for other types. */
static json_t *scalar_json(const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_UTF8(it)) {
        uint32_t len;
        const char *s = bson_iter_utf8(it, &len);
        return json_stringn_nocheck(s, len);
    }
    if (BSON_ITER_HOLDS_INT32(it))
        return json_integer(bson_iter_int32(it));
    if (BSON_ITER_HOLDS_INT64(it))
        return json_integer(bson_iter_int64(it));
    if (BSON_ITER_HOLDS_DOUBLE(it))
        return json_real(bson_iter_double(it));
    if (BSON_ITER_HOLDS_BOOL(it))
        return json_boolean(bson_iter_bool(it));
    return NULL;
}

/* The filter value that selects exactly v (a "\," keeps a comma literal). */
static json_t *filter_for(const json_t *v)
{
    char buf[64];
    if (json_is_integer(v)) {
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return json_string(buf);
    }
    if (json_is_real(v)) {
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        return json_string(buf);
    }
    if (json_is_boolean(v))
        return json_string(json_is_true(v) ? "true" : "false");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v), extra = 0;
    for (size_t i = 0; i < len; i++)
        extra += s[i] == ',' || s[i] == '\\';
    char *e = malloc(len + extra + 1);
    if (!e)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ',' || s[i] == '\\')
            e[o++] = '\\';
        e[o++] = s[i];
    }
    json_t *r = json_stringn_nocheck(e, o);
    free(e);
    return r;
}

/* acc += n for counts of at most 2^53 each, saturating instead of wrapping. */
static void add_count(int64_t *acc, int64_t n)
{
    *acc = *acc > INT64_MAX - n ? INT64_MAX : *acc + n;
}

static bool read_values(mdb_facets_t *f, facet_t *x, size_t idx, const bson_t *reply, mdb_error_t *err)
{
    char key[24];
    bson_iter_t el, doc, top, item, v;
    int64_t n, present = 0, missing = 0, distinct = 0, listed = 0;
    json_t *values = json_array();
    if (!values)
        return bad_reply(err, "out of memory");
    facet_key(key, sizeof key, 'v', idx);
    if (!facet_array(reply, key, &el)) {
        json_decref(values);
        return bad_reply(err, key);
    }
    if (bson_iter_next(&el)) { /* no document: nothing matched */
        doc_count(&el, "present", &present);
        doc_count(&el, "missing", &missing);
        doc_count(&el, "d", &distinct);
        if (BSON_ITER_HOLDS_DOCUMENT(&el) && bson_iter_recurse(&el, &doc) && bson_iter_find(&doc, "top") &&
            BSON_ITER_HOLDS_ARRAY(&doc) && bson_iter_recurse(&doc, &top)) {
            while (bson_iter_next(&top) && json_array_size(values) < (size_t)f->top) {
                json_t *j;
                if (!BSON_ITER_HOLDS_DOCUMENT(&top) || !bson_iter_recurse(&top, &item) || !bson_iter_find(&item, "v"))
                    continue; /* the group of documents without a value */
                v = item;
                if (!doc_count(&top, "n", &n) || !(j = scalar_json(&v)))
                    continue; /* null, or a value of another type (documents, arrays): counted in "other" */
                json_array_append_new(
                    values, json_pack("{s:o, s:I, s:o*}", "value", j, "count", (json_int_t)n, "filter", filter_for(j)));
                add_count(&listed, n);
            }
        }
    }
    x->answer = json_pack("{s:s, s:o, s:I, s:I, s:I}", "kind", "values", "values", values, "other",
                          (json_int_t)(present > listed ? present - listed : 0), "distinct", (json_int_t)distinct,
                          "missing", (json_int_t)missing);
    return x->answer != NULL || bad_reply(err, "out of memory");
}

/* Count the exact (value, count) pairs of the stats reply into the bins;
 * false when the reply does not carry every distinct value. */
static bool bin_exact_values(facet_t *x, const bson_iter_t *doc_el, int64_t *counts, int64_t *other)
{
    bson_iter_t d, vals, item, v;
    int64_t distinct = 0, n;
    int64_t seen = 0;
    if (!doc_count(doc_el, "d", &distinct) || distinct > MDB_FACETS_EXACT_VALUES || !BSON_ITER_HOLDS_DOCUMENT(doc_el) ||
        !bson_iter_recurse(doc_el, &d) || !bson_iter_find(&d, "vals") || !BSON_ITER_HOLDS_ARRAY(&d) ||
        !bson_iter_recurse(&d, &vals))
        return false;
    while (bson_iter_next(&vals)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&vals) || !bson_iter_recurse(&vals, &item) || !bson_iter_find(&item, "v"))
            return false;
        v = item;
        if (!is_number(&v) || !doc_count(&vals, "n", &n))
            return false;
        double val = bson_iter_as_double(&v);
        size_t j = 0;
        while (j + 1 < x->nbounds && !(x->bounds[j] <= val && val < x->bounds[j + 1]))
            j++;
        add_count(j + 1 < x->nbounds ? &counts[j] : other, n);
        seen++;
    }
    return seen == distinct;
}

static bool read_stats(mdb_facets_t *f, facet_t *x, size_t idx, const bson_t *reply, int64_t *counts, int64_t *other,
                       mdb_error_t *err)
{
    char key[24];
    bson_iter_t el;
    int64_t n = 0;
    facet_key(key, sizeof key, 'n', idx);
    if (!facet_array(reply, key, &el))
        return bad_reply(err, key);
    x->have_stats = false;
    x->binned = false;
    x->numeric = 0;
    if (bson_iter_next(&el) && doc_count(&el, "n", &n) && doc_number(&el, "min", &x->min) &&
        doc_number(&el, "max", &x->max)) {
        x->have_stats = true;
        x->numeric = n;
    }
    if (!x->explicit_bounds) {
        x->nbounds =
            x->have_stats ? mdb_facets_nice_bounds(x->min, x->max, f->bins, x->bounds, MDB_FACETS_MAX_BINS + 1) : 0;
        if (x->nbounds >= 2)
            x->binned = bin_exact_values(x, &el, counts, other);
    }
    return true;
}

/* x->answer["bins"] and "other" from per-bin counts. */
static bool set_bins(facet_t *x, const int64_t *counts, int64_t other, mdb_error_t *err)
{
    char buf[2][40];
    json_t *bins = json_array();
    for (size_t j = 0; bins && j + 1 < x->nbounds; j++) {
        snprintf(buf[0], sizeof buf[0], "gte:%.15g", x->bounds[j]);
        snprintf(buf[1], sizeof buf[1], "lt:%.15g", x->bounds[j + 1]);
        json_array_append_new(bins, json_pack("{s:f, s:f, s:I, s:[s,s]}", "lo", x->bounds[j], "hi", x->bounds[j + 1],
                                              "count", (json_int_t)counts[j], "filter", buf[0], buf[1]));
    }
    if (!bins || json_object_set_new(x->answer, "bins", bins) != 0 ||
        json_object_set_new(x->answer, "other", json_integer((json_int_t)other)) != 0)
        return bad_reply(err, "out of memory");
    return true;
}

/* Bins of the $bucket facet into x->answer["bins"] and "other". */
static bool read_buckets(facet_t *x, size_t idx, const bson_t *reply, mdb_error_t *err)
{
    char key[24];
    bson_iter_t el, id;
    int64_t n, other = 0;
    int64_t counts[MDB_FACETS_MAX_BINS + 1] = {0};
    facet_key(key, sizeof key, 'h', idx);
    if (!facet_array(reply, key, &el))
        return bad_reply(err, key);
    while (bson_iter_next(&el)) {
        if (!doc_id(&el, &id) || !doc_count(&el, "n", &n))
            continue;
        if (!is_number(&id)) {
            add_count(&other, n);
            continue;
        }
        double lo = bson_iter_as_double(&id);
        for (size_t j = 0; j + 1 < x->nbounds; j++)
            if (x->bounds[j] == lo)
                add_count(&counts[j], n);
    }
    return set_bins(x, counts, other, err);
}

static bool histogram_answer(mdb_facets_t *f, facet_t *x, mdb_error_t *err)
{
    json_decref(x->answer);
    x->answer = json_pack("{s:s, s:I, s:I, s:[]}", "kind", "histogram", "count", (json_int_t)x->numeric, "missing",
                          (json_int_t)(f->total > x->numeric ? f->total - x->numeric : 0), "bins");
    if (!x->answer)
        return bad_reply(err, "out of memory");
    if (x->have_stats) {
        json_object_set_new(x->answer, "min", json_real(x->min));
        json_object_set_new(x->answer, "max", json_real(x->max));
    }
    return true;
}

/* Per-period counts with empty periods in between filled in; keys that are
 * not YYYY / YYYYMM digits (malformed dates) count as missing. */
static bool read_dates(mdb_facets_t *f, facet_t *x, size_t idx, const bson_t *reply, mdb_error_t *err)
{
    char key[24];
    bson_iter_t el, id;
    int64_t n, missing = 0;
    json_t *bins = json_array();
    long prev = -1;
    (void)f;
    facet_key(key, sizeof key, 'd', idx);
    if (!bins || !facet_array(reply, key, &el)) {
        json_decref(bins);
        return bad_reply(err, key);
    }
    bool truncated = false;
    while (bson_iter_next(&el)) {
        uint32_t len = 0;
        const char *s = NULL;
        if (!doc_id(&el, &id) || !doc_count(&el, "n", &n))
            continue;
        if (BSON_ITER_HOLDS_UTF8(&id))
            s = bson_iter_utf8(&id, &len);
        if (!s || (int)len != x->date_len || strspn(s, "0123456789") != len) {
            add_count(&missing, n);
            continue;
        }
        long period = strtol(s, NULL, 10);
        if (x->date_len == 6 && (period % 100 < 1 || period % 100 > 12)) {
            add_count(&missing, n);
            continue;
        }
        /* fill the gap since the previous period with zero bins */
        while (prev >= 0 && json_array_size(bins) < MDB_FACETS_MAX_DATE_BUCKETS) {
            long next = x->date_len == 4 ? prev + 1 : (prev % 100 == 12 ? (prev / 100 + 1) * 100 + 1 : prev + 1);
            if (next >= period)
                break;
            char p[24];
            snprintf(p, sizeof p, "%ld", next);
            json_array_append_new(bins, json_pack("{s:s, s:I, s:s}", "value", p, "count", (json_int_t)0, "filter", p));
            prev = next;
        }
        if (json_array_size(bins) >= MDB_FACETS_MAX_DATE_BUCKETS) {
            truncated = true;
            break;
        }
        json_array_append_new(bins, json_pack("{s:s%, s:I, s:s%}", "value", s, (size_t)len, "count", (json_int_t)n,
                                              "filter", s, (size_t)len));
        prev = period;
    }
    x->answer = json_pack("{s:s, s:s, s:o, s:I, s:b}", "kind", "dates", "interval", x->date_len == 4 ? "year" : "month",
                          "bins", bins, "missing", (json_int_t)missing, "truncated", truncated);
    return x->answer != NULL || bad_reply(err, "out of memory");
}

bool mdb_facets_read(mdb_facets_t *f, const bson_t *reply, bool *need_second, mdb_error_t *err)
{
    bson_iter_t el;
    int64_t n = 0;
    *need_second = false;
    if (!reply || !facet_array(reply, "t", &el))
        return bad_reply(err, "no total");
    f->total = bson_iter_next(&el) && doc_count(&el, "n", &n) ? n : 0;
    f->have_total = true;
    for (size_t i = 0; i < f->n; i++) {
        facet_t *x = &f->fields[i];
        json_decref(x->answer);
        x->answer = NULL;
        bool ok = true;
        switch (x->kind) {
        case MDB_FACET_VALUES: ok = read_values(f, x, i, reply, err); break;
        case MDB_FACET_HISTOGRAM: {
            int64_t counts[MDB_FACETS_MAX_BINS + 1] = {0};
            int64_t other = 0;
            ok = read_stats(f, x, i, reply, counts, &other, err) && histogram_answer(f, x, err);
            if (ok && x->explicit_bounds)
                ok = read_buckets(x, i, reply, err);
            else if (ok && x->binned)
                ok = set_bins(x, counts, other, err);
            else if (ok && x->nbounds >= 2)
                *need_second = true;
            break;
        }
        case MDB_FACET_DATES: ok = read_dates(f, x, i, reply, err); break;
        }
        if (!ok)
            return false;
    }
    return true;
}

bool mdb_facets_read_bins(mdb_facets_t *f, const bson_t *reply, mdb_error_t *err)
{
    for (size_t i = 0; i < f->n; i++) {
        facet_t *x = &f->fields[i];
        if (x->kind != MDB_FACET_HISTOGRAM || x->explicit_bounds || x->binned || x->nbounds < 2 || !x->answer)
            continue;
        if (!read_buckets(x, i, reply, err))
            return false;
    }
    return true;
}

json_t *mdb_facets_result(const mdb_facets_t *f)
{
    json_t *facets = json_object();
    if (!facets)
        return NULL;
    for (size_t i = 0; i < f->n; i++) {
        const facet_t *x = &f->fields[i];
        if (x->answer)
            json_object_set(facets, x->path, x->answer);
    }
    return json_pack("{s:s, s:I, s:o}", "level", mdb_query_level_name(f->level), "total", (json_int_t)f->total,
                     "facets", facets);
}
