/* mdb_query: turns filter parameters and raw JSON queries into MongoDB
 * filters, and runs them. The HTTP API, the CLI and the dashboard all go
 * through here, so a filter means the same thing everywhere.
 *
 * Filter parameters become a list of clauses that are ANDed. A clause on a
 * field that the level's documents do not carry but a parent level does
 * (series?study_date=..., instances?modality=...) is kept as a parent clause:
 * mdb_query_run first resolves the parent documents' _ids and then filters on
 * study_id/series_id with $in. That keeps documents free of copied fields
 * while letting researchers ask series questions with study attributes.
 *
 * Raw queries are validated by walking the JSON: every key that starts with
 * '$' must be on a whitelist for its position (query document, field
 * operator, aggregation expression inside $expr); everything else is a field
 * name and may not contain a '$'-segment. The JSON is converted to BSON by
 * hand so nothing like extended-JSON type wrappers sneaks in. */
#include "mdb_find.h"
#include "mdb_query_private.h"
#include "mdb_ops.h"
#include "mdb_docs.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT 50
#define DEFAULT_MAX_LIMIT 1000
#define MAX_DEPTH 24
#define MAX_NODES 20000
#define MAX_PARAM_VALUE 8192
#define MAX_LIST_ITEMS 1000

/* ------------------------------------------------------------------------ */
/* field tables                                                              */

static const mdb_qfield_t study_fields[] = {
    {"_id", MDB_QFIELD_STRING, "study_instance_uid study_uid uid", "StudyInstanceUID"},
    {"accession_number", MDB_QFIELD_STRING, "accession", "AccessionNumber"},
    {"patient_id", MDB_QFIELD_STRING, "patient", "PatientID"},
    {"study_date", MDB_QFIELD_DATE, "date", "StudyDate (YYYYMMDD)"},
    {"study_description", MDB_QFIELD_STRING, "description", "StudyDescription"},
    {"modality", MDB_QFIELD_STRING, "modalities", "Modality, or any modality of the study's series"},
    {"acquisition_datetime", MDB_QFIELD_STRING, NULL, "AcquisitionDateTime"},
    {"collection_ids", MDB_QFIELD_STRING, "collection", "collection the study belongs to"},
    {"job_ids", MDB_QFIELD_STRING, "job", "job that loaded the study"},
    {"series_count", MDB_QFIELD_NUMBER, NULL, "number of series of the study"},
    {"instance_count", MDB_QFIELD_NUMBER, NULL, "number of instances of the study"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

static const mdb_qfield_t series_fields[] = {
    {"_id", MDB_QFIELD_STRING, "series_instance_uid series_uid uid", "SeriesInstanceUID"},
    {"study_id", MDB_QFIELD_STRING, "study study_uid study_instance_uid", "parent StudyInstanceUID"},
    {"series_number", MDB_QFIELD_NUMBER, NULL, "SeriesNumber"},
    {"series_description", MDB_QFIELD_STRING, "description", "SeriesDescription"},
    {"modality", MDB_QFIELD_STRING, NULL, "Modality"},
    {"body_part_examined", MDB_QFIELD_STRING, "body_part", "BodyPartExamined"},
    {"series_date", MDB_QFIELD_DATE, NULL, "SeriesDate (YYYYMMDD)"},
    {"series_time", MDB_QFIELD_STRING, NULL, "SeriesTime"},
    {"manufacturer", MDB_QFIELD_STRING, NULL, "Manufacturer"},
    {"manufacturer_model_name", MDB_QFIELD_STRING, "model", "ManufacturerModelName"},
    {"protocol_name", MDB_QFIELD_STRING, "protocol", "ProtocolName"},
    {"kvp", MDB_QFIELD_NUMBER, NULL, "KVP"},
    {"slice_thickness", MDB_QFIELD_NUMBER, NULL, "SliceThickness (mm)"},
    {"instance_count", MDB_QFIELD_NUMBER, NULL, "number of instances"},
    {"collection_ids", MDB_QFIELD_STRING, "collection", "collection the series belongs to"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

static const mdb_qfield_t instance_fields[] = {
    {"_id", MDB_QFIELD_STRING, "sop_instance_uid sop_uid uid", "SOPInstanceUID"},
    {"series_id", MDB_QFIELD_STRING, "series_uid series_instance_uid", "parent SeriesInstanceUID"},
    {"study_id", MDB_QFIELD_STRING, "study study_uid study_instance_uid", "StudyInstanceUID"},
    {"sop_class_uid", MDB_QFIELD_STRING, "sop_class", "SOPClassUID"},
    {"instance_number", MDB_QFIELD_NUMBER, NULL, "InstanceNumber"},
    {"acquisition_datetime", MDB_QFIELD_STRING, NULL, "AcquisitionDateTime"},
    {"paths", MDB_QFIELD_STRING, "path", "archive path of the file"},
    {"job_ids", MDB_QFIELD_STRING, "job", "job that loaded the instance"},
    {"integrity", MDB_QFIELD_STRING, NULL,
     "present when the file is damaged (Pixel Data cut short): integrity=exists:true or exists:false"},
    {"created_at", MDB_QFIELD_STRING, NULL, "first load time (ISO 8601)"},
    {"updated_at", MDB_QFIELD_STRING, NULL, "last update time (ISO 8601)"},
};

static const char *const level_names[MDB_QUERY_LEVEL_COUNT] = {"studies", "series", "instances"};

const char *mdb_query_level_name(mdb_query_level_t level)
{
    return level < MDB_QUERY_LEVEL_COUNT ? level_names[level] : "?";
}

bool mdb_query_level_parse(const char *name, mdb_query_level_t *out)
{
    static const struct {
        const char *name;
        mdb_query_level_t level;
    } names[] = {{"studies", MDB_QUERY_STUDIES},     {"study", MDB_QUERY_STUDIES},
                 {"series", MDB_QUERY_SERIES},       {"instances", MDB_QUERY_INSTANCES},
                 {"instance", MDB_QUERY_INSTANCES}};
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!strcmp(names[i].name, name)) {
            *out = names[i].level;
            return true;
        }
    }
    return false;
}

const mdb_qfield_t *mdb_query_fields(mdb_query_level_t level, size_t *n)
{
    switch (level) {
    case MDB_QUERY_STUDIES:
        *n = sizeof study_fields / sizeof study_fields[0];
        return study_fields;
    case MDB_QUERY_SERIES:
        *n = sizeof series_fields / sizeof series_fields[0];
        return series_fields;
    case MDB_QUERY_INSTANCES:
        *n = sizeof instance_fields / sizeof instance_fields[0];
        return instance_fields;
    default:
        *n = 0;
        return NULL;
    }
}

static bool alias_match(const char *aliases, const char *param)
{
    size_t plen = strlen(param);
    for (const char *p = aliases; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == plen && !strncmp(p, param, len))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* A metadata keyword path: letters, digits, '_' segments separated by '.'
 * (nested sequence items), each segment non-empty, first char a letter. */
static bool valid_keyword_path(const char *s)
{
    if (!*s || strlen(s) > 200)
        return false;
    bool seg_start = true;
    for (const char *p = s; *p; p++) {
        if (*p == '.') {
            if (seg_start)
                return false;
            seg_start = true;
            continue;
        }
        if (seg_start ? !isalpha((unsigned char)*p) : !(isalnum((unsigned char)*p) || *p == '_'))
            return false;
        seg_start = false;
    }
    return !seg_start;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Returns the field entry for param on this level or NULL. For
 * metadata.<Keyword> returns a pointer to a static entry and sets *meta. */
const mdb_qfield_t *mdb_query_find_field(mdb_query_level_t level, const char *param, bool *meta)
{
    static const mdb_qfield_t meta_any = {"metadata", MDB_QFIELD_ANY, NULL, NULL};
    static const mdb_qfield_t meta_date = {"metadata", MDB_QFIELD_DATE, NULL, NULL};
    size_t n;
    const mdb_qfield_t *f = mdb_query_fields(level, &n);
    *meta = false;
    if (!strncmp(param, "metadata.", 9)) {
        if (!valid_keyword_path(param + 9))
            return NULL;
        *meta = true;
        return ends_with(param, "Date") ? &meta_date : &meta_any;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, param) && strcmp(param, "_id") != 0)
            return &f[i];
    for (size_t i = 0; i < n; i++)
        if (!strcmp(f[i].name, param) || alias_match(f[i].aliases, param))
            return &f[i];
    return NULL;
}

/* The parents of a level and how a child names them: a series or an
 * instance carries its study's _id in study_id and shows the study's fields
 * under "study."; an instance carries series_id and shows "series.". */
const char *const mdb_query_parent_names[MDB_QUERY_LEVEL_COUNT] = {"study", "series", NULL};
const char *const mdb_query_parent_keys[MDB_QUERY_LEVEL_COUNT] = {"study_id", "series_id", NULL};

/* When name is "study.<rest>" or "series.<rest>" naming a parent of level,
 * set *parent and return rest; else NULL. */
const char *mdb_query_parent_prefix(mdb_query_level_t level, const char *name, mdb_query_level_t *parent)
{
    if (level >= MDB_QUERY_LEVEL_COUNT) /* raw queries on jobs, collections, conflicts */
        return NULL;
    for (int l = 0; l < (int)level; l++) {
        size_t n = strlen(mdb_query_parent_names[l]);
        if (!strncmp(name, mdb_query_parent_names[l], n) && name[n] == '.' && name[n + 1]) {
            *parent = (mdb_query_level_t)l;
            return name + n + 1;
        }
    }
    return NULL;
}

const char *mdb_query_resolve_field(mdb_query_level_t level, const char *param, mdb_qfield_type_t *type)
{
    bool meta;
    if (!param || level >= MDB_QUERY_LEVEL_COUNT)
        return NULL;
    const mdb_qfield_t *f = mdb_query_find_field(level, param, &meta);
    if (!f)
        return NULL;
    if (type)
        *type = f->type;
    return meta ? param : f->name;
}

/* ------------------------------------------------------------------------ */
/* the query object                                                          */

void mdb_query_clauses_clear(mdb_query_clauses_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        bson_destroy(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Takes ownership of c (destroys it on failure). */
bool mdb_query_clauses_push(mdb_query_clauses_t *l, bson_t *c)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        bson_t **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            bson_destroy(c);
            return false;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = c;
    return true;
}

void mdb_query_build_and(const mdb_query_clauses_t *l, bson_t *out)
{
    bson_reinit(out);
    if (l->n == 1) {
        bson_concat(out, l->v[0]);
        return;
    }
    if (l->n == 0)
        return;
    bson_t arr;
    bson_append_array_begin(out, "$and", 4, &arr);
    for (size_t i = 0; i < l->n; i++) {
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_document(&arr, k, -1, l->v[i]);
    }
    bson_append_array_end(out, &arr);
}

mdb_query_t *mdb_query_new(mdb_query_level_t level, int64_t max_limit)
{
    if (level >= MDB_QUERY_LEVEL_COUNT)
        return NULL;
    mdb_query_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->level = level;
    snprintf(q->collection, sizeof q->collection, "%s", level_names[level]);
    bson_init(&q->filter);
    bson_init(&q->sort);
    bson_init(&q->projection);
    BSON_APPEND_INT32(&q->sort, "_id", 1);
    q->max_limit = max_limit > 0 ? max_limit : DEFAULT_MAX_LIMIT;
    q->limit = DEFAULT_LIMIT < q->max_limit ? DEFAULT_LIMIT : q->max_limit;
    return q;
}

void mdb_query_destroy(mdb_query_t *q)
{
    if (!q)
        return;
    mdb_query_clauses_clear(&q->clauses);
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++)
        mdb_query_clauses_clear(&q->parent[i]);
    bson_destroy(&q->filter);
    bson_destroy(&q->sort);
    bson_destroy(&q->projection);
    free(q);
}

const char *mdb_query_collection(const mdb_query_t *q)
{
    return q->collection;
}

const bson_t *mdb_query_filter(const mdb_query_t *q)
{
    mdb_query_t *mq = (mdb_query_t *)q; /* the cache is logically const */
    if (mq->filter_dirty && !mq->raw) {
        mdb_query_build_and(&mq->clauses, &mq->filter);
        mq->filter_dirty = false;
    }
    return &q->filter;
}

const bson_t *mdb_query_sort(const mdb_query_t *q)
{
    return &q->sort;
}

const bson_t *mdb_query_projection(const mdb_query_t *q)
{
    return &q->projection;
}

int64_t mdb_query_limit(const mdb_query_t *q)
{
    return q->limit;
}

int64_t mdb_query_offset(const mdb_query_t *q)
{
    return q->offset;
}

char *mdb_query_filter_json(const mdb_query_t *q)
{
    const bson_t *f = mdb_query_filter(q);
    bool parents = false;
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++)
        parents = parents || q->parent[i].n > 0;
    if (!parents)
        return bson_as_relaxed_extended_json(f, NULL);
    /* Show parent clauses the way mdb_query_run applies them. */
    bson_t all = BSON_INITIALIZER, tmp = BSON_INITIALIZER;
    bson_append_document(&all, q->collection, -1, f);
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++) {
        if (!q->parent[i].n)
            continue;
        mdb_query_build_and(&q->parent[i], &tmp);
        bson_append_document(&all, level_names[i], -1, &tmp);
    }
    char *s = bson_as_relaxed_extended_json(&all, NULL);
    bson_destroy(&all);
    bson_destroy(&tmp);
    return s;
}

bool mdb_query_set_limit(mdb_query_t *q, int64_t limit, mdb_error_t *err)
{
    if (limit < 0 || limit > q->max_limit) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "limit must be between 0 (the count alone) and %lld, got %lld",
                      (long long)q->max_limit, (long long)limit);
        return false;
    }
    q->limit = limit;
    return true;
}

bool mdb_query_set_offset(mdb_query_t *q, int64_t offset, mdb_error_t *err)
{
    if (offset < 0 || offset > MDB_QUERY_MAX_OFFSET) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "offset must be between 0 and %d, got %lld", MDB_QUERY_MAX_OFFSET,
                      (long long)offset);
        return false;
    }
    q->offset = offset;
    return true;
}

/* Is key a top-level key of b (dotted keys compared whole, not as paths)? */
bool mdb_query_has_key(const bson_t *b, const char *key)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, b))
        return false;
    while (bson_iter_next(&it))
        if (!strcmp(bson_iter_key(&it), key))
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* scalar parsing                                                            */

bool mdb_query_parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Decimal number (no hex, no inf/nan, no leading/trailing space). */
bool mdb_query_parse_number(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return false;
    for (const char *p = s; *p; p++)
        if (!(isdigit((unsigned char)*p) || *p == '.' || *p == '-' || *p == '+' || *p == 'e' || *p == 'E'))
            return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno == ERANGE || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Append a number as int64 when it is integral (so equality on integer
 * fields behaves), else double. */
void mdb_query_append_number(bson_t *b, const char *key, double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        BSON_APPEND_INT64(b, key, (int64_t)v);
    else
        BSON_APPEND_DOUBLE(b, key, v);
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

/* "YYYYMMDD" into out[9]; y is 0..9999 (four digits by construction). */
static void format_ymd(char out[9], int y, int m, int d)
{
    int v[3] = {y, m, d}, w[3] = {4, 2, 2};
    size_t o = 0;
    for (int i = 0; i < 3; i++)
        for (int k = w[i] - 1; k >= 0; k--) {
            int p = 1;
            for (int e = 0; e < k; e++)
                p *= 10;
            out[o++] = (char)('0' + (v[i] / p) % 10);
        }
    out[8] = '\0';
}

/* Parse a (possibly partial) date: YYYY, YYYYMM, YYYYMMDD, YYYY-MM,
 * YYYY-MM-DD, YYYY.MM.DD. Writes the first and last YYYYMMDD it covers. */
bool mdb_query_parse_date(const char *s, size_t len, char lo[9], char hi[9])
{
    char d[9];
    size_t n = 0;
    if (len == 7 || len == 10) { /* YYYY-MM or YYYY-MM-DD */
        char sep = s[4];
        if (sep != '-' && sep != '.')
            return false;
        if (len == 10 && s[7] != sep)
            return false;
        for (size_t i = 0; i < len; i++) {
            if (i == 4 || i == 7)
                continue;
            if (!isdigit((unsigned char)s[i]))
                return false;
            d[n++] = s[i];
        }
    } else if (len == 4 || len == 6 || len == 8) {
        if (!all_digits(s, len))
            return false;
        memcpy(d, s, len);
        n = len;
    } else {
        return false;
    }
    d[n] = '\0';
    int y = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    int m1 = 1, m2 = 12, d1 = 1, d2;
    if (n >= 6) {
        m1 = m2 = (d[4] - '0') * 10 + (d[5] - '0');
        if (m1 < 1 || m1 > 12)
            return false;
    }
    d2 = days_in_month(y, m2);
    if (n == 8) {
        d1 = d2 = (d[6] - '0') * 10 + (d[7] - '0');
        if (d1 < 1 || d1 > days_in_month(y, m1))
            return false;
    }
    format_ymd(lo, y, m1, d1);
    format_ymd(hi, y, m2, d2);
    return true;
}

/* ------------------------------------------------------------------------ */
/* value items: splitting lists and recognising wildcards                    */

void mdb_query_items_free(mdb_query_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].text);
        free(items[i].pattern);
    }
    free(items);
}

static bool is_regex_meta(char c)
{
    return strchr("\\^$.|?*+()[]{}/", c) != NULL;
}

/* Split value on unescaped commas (split=false: one item), unescape "\,"
 * "\*" "\?" "\\", and build a regex for items with wildcards. */
bool mdb_query_split_items(const char *value, bool split, mdb_query_item_t **out, size_t *nout, mdb_error_t *err)
{
    size_t len = strlen(value);
    mdb_query_item_t *items = NULL;
    size_t n = 0, cap = 0;
    char *text = malloc(len + 1), *pat = malloc(len * 2 + 3);
    if (!text || !pat)
        goto oom;
    size_t tl = 0, pl = 0;
    bool wild = false;
    pat[pl++] = '^';
    for (size_t i = 0; i <= len; i++) {
        char c = value[i];
        if (c == '\0' || (split && c == ',')) {
            if (n == MAX_LIST_ITEMS) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "too many values in one list (at most %d)", MAX_LIST_ITEMS);
                goto fail;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 4;
                mdb_query_item_t *v = realloc(items, cap * sizeof *v);
                if (!v)
                    goto oom;
                items = v;
            }
            text[tl] = '\0';
            pat[pl++] = '$';
            pat[pl] = '\0';
            items[n].text = strdup(text);
            items[n].pattern = wild ? strdup(pat) : NULL;
            n++;
            if (!items[n - 1].text || (wild && !items[n - 1].pattern))
                goto oom;
            tl = 0;
            pl = 1;
            wild = false;
            continue;
        }
        if (c == '\\' && value[i + 1] && strchr(",*?\\", value[i + 1])) {
            c = value[++i];
            text[tl++] = c;
            if (is_regex_meta(c))
                pat[pl++] = '\\';
            pat[pl++] = c;
            continue;
        }
        if (c == '*' || c == '?') {
            wild = true;
            text[tl++] = c;
            if (c == '*') {
                pat[pl++] = '.';
                pat[pl++] = '*';
            } else {
                pat[pl++] = '.';
            }
            continue;
        }
        text[tl++] = c;
        if (is_regex_meta(c))
            pat[pl++] = '\\';
        pat[pl++] = c;
    }
    free(text);
    free(pat);
    *out = items;
    *nout = n;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
fail:
    free(text);
    free(pat);
    mdb_query_items_free(items, n);
    return false;
}

/* ------------------------------------------------------------------------ */
/* building one parameter's clause                                           */

typedef enum { OP_EQ, OP_NE, OP_LT, OP_LTE, OP_GT, OP_GTE, OP_EXISTS } op_t;

static const struct {
    const char *prefix;
    op_t op;
    const char *mongo;
} op_prefixes[] = {
    {"lte:", OP_LTE, "$lte"}, {"lt:", OP_LT, "$lt"},     {"gte:", OP_GTE, "$gte"}, {"gt:", OP_GT, "$gt"},
    {"ne:", OP_NE, "$ne"},    {"eq:", OP_EQ, "$eq"},     {"exists:", OP_EXISTS, "$exists"},
};

/* Append the condition for one scalar item to `cond` under key `key` (a
 * field path for equality inside $or documents, or an operator). Used by
 * helpers below; they produce {path: <something>} documents. */

/* {path: {$regex: pattern}} */
static void clause_regex(bson_t *c, const char *path, const char *pattern)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    BSON_APPEND_UTF8(&sub, "$regex", pattern);
    bson_append_document_end(c, &sub);
}

/* {path: {$gte: lo, $lte: hi}} with string or number bounds (either may be absent). */
static void clause_range_str(bson_t *c, const char *path, const char *lo, const char *hi)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    if (lo)
        BSON_APPEND_UTF8(&sub, "$gte", lo);
    if (hi)
        BSON_APPEND_UTF8(&sub, "$lte", hi);
    bson_append_document_end(c, &sub);
}

static void clause_range_num(bson_t *c, const char *path, const double *lo, const double *hi)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    if (lo)
        mdb_query_append_number(&sub, "$gte", *lo);
    if (hi)
        mdb_query_append_number(&sub, "$lte", *hi);
    bson_append_document_end(c, &sub);
}

/* Try to read item as a numeric range "a-b", "a-" (open end). Leading '-'
 * belongs to a negative number, so "-5" is not a range. */
static bool parse_num_range(const char *s, bool *has_lo, double *lo, bool *has_hi, double *hi)
{
    size_t len = strlen(s);
    for (size_t i = 1; i < len; i++) {
        if (s[i] != '-' || s[i - 1] == 'e' || s[i - 1] == 'E')
            continue;
        char left[64];
        if (i >= sizeof left)
            return false;
        memcpy(left, s, i);
        left[i] = '\0';
        const char *right = s + i + 1;
        if (!mdb_query_parse_number(left, lo))
            continue;
        if (!*right) {
            *has_lo = true;
            *has_hi = false;
            return true;
        }
        if (mdb_query_parse_number(right, hi)) {
            *has_lo = *has_hi = true;
            return true;
        }
    }
    return false;
}

/* Try to read item as a date range: "A-B", "A-", "-B" where A and B are
 * dates in any mdb_query_parse_date form. */
static bool parse_date_range(const char *s, char lo[9], char hi[9], bool *has_lo, bool *has_hi)
{
    size_t len = strlen(s);
    char a[9], b[9];
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '-')
            continue;
        bool lo_ok = i == 0 || mdb_query_parse_date(s, i, lo, a);
        bool hi_ok = i + 1 == len || mdb_query_parse_date(s + i + 1, len - i - 1, b, hi);
        if (!lo_ok || !hi_ok || (i == 0 && i + 1 == len))
            continue;
        *has_lo = i != 0;
        *has_hi = i + 1 != len;
        (void)a;
        (void)b;
        return true;
    }
    return false;
}

/* Build {path: cond} for one list item on a field of the given type.
 * Returns a new document or NULL with err. */
static bson_t *item_clause(const char *param, const char *path, mdb_qfield_type_t type, const mdb_query_item_t *it,
                           mdb_error_t *err)
{
    bson_t *c = bson_new();
    const char *s = it->text;
    if (it->pattern) {
        if (type == MDB_QFIELD_NUMBER) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is a number field: wildcards are not allowed ('%s')", param,
                          s);
            goto fail;
        }
        clause_regex(c, path, it->pattern);
        return c;
    }
    switch (type) {
    case MDB_QFIELD_STRING:
        BSON_APPEND_UTF8(c, path, s);
        return c;
    case MDB_QFIELD_DATE: {
        char lo[9], hi[9];
        bool has_lo, has_hi;
        if (mdb_query_parse_date(s, strlen(s), lo, hi)) {
            if (!strcmp(lo, hi))
                BSON_APPEND_UTF8(c, path, lo);
            else
                clause_range_str(c, path, lo, hi);
            return c;
        }
        if (parse_date_range(s, lo, hi, &has_lo, &has_hi)) {
            if (has_lo && has_hi && strcmp(lo, hi) > 0) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': range '%s' ends before it starts", param, s);
                goto fail;
            }
            clause_range_str(c, path, has_lo ? lo : NULL, has_hi ? hi : NULL);
            return c;
        }
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "'%s' expects a date (YYYY, YYYYMM, YYYYMMDD or YYYY-MM-DD) or a range A-B, got '%s'", param, s);
        goto fail;
    }
    case MDB_QFIELD_NUMBER:
    case MDB_QFIELD_ANY: {
        double v, lo, hi;
        bool has_lo, has_hi;
        if (mdb_query_parse_number(s, &v)) {
            if (type == MDB_QFIELD_NUMBER) {
                mdb_query_append_number(c, path, v);
            } else { /* metadata: match the number or the string as stored */
                bson_t sub, arr;
                bson_append_document_begin(c, path, -1, &sub);
                bson_append_array_begin(&sub, "$in", 3, &arr);
                mdb_query_append_number(&arr, "0", v);
                BSON_APPEND_UTF8(&arr, "1", s);
                bson_append_array_end(&sub, &arr);
                bson_append_document_end(c, &sub);
            }
            return c;
        }
        if (parse_num_range(s, &has_lo, &lo, &has_hi, &hi)) {
            if (has_lo && has_hi && lo > hi) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': range '%s' ends before it starts", param, s);
                goto fail;
            }
            clause_range_num(c, path, has_lo ? &lo : NULL, has_hi ? &hi : NULL);
            return c;
        }
        if (type == MDB_QFIELD_ANY) {
            BSON_APPEND_UTF8(c, path, s);
            return c;
        }
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a number or a range A-B, got '%s'", param, s);
        goto fail;
    }
    }
    mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': unsupported field type", param);
fail:
    bson_destroy(c);
    return NULL;
}

/* Append a typed comparison value for op on a field. */
static bool append_cmp_value(bson_t *sub, const char *opname, op_t op, const char *param, mdb_qfield_type_t type,
                             const char *s, mdb_error_t *err)
{
    double v;
    if (type == MDB_QFIELD_DATE) {
        char lo[9], hi[9];
        if (!mdb_query_parse_date(s, strlen(s), lo, hi)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a date (YYYY, YYYYMM, YYYYMMDD or YYYY-MM-DD), got '%s'",
                          param, s);
            return false;
        }
        /* A partial date compares by the whole period it names. */
        const char *bound = (op == OP_LT || op == OP_GTE) ? lo : hi;
        if (op == OP_NE || op == OP_EQ)
            bound = lo;
        BSON_APPEND_UTF8(sub, opname, bound);
        return true;
    }
    if (type == MDB_QFIELD_NUMBER) {
        if (!mdb_query_parse_number(s, &v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a number, got '%s'", param, s);
            return false;
        }
        mdb_query_append_number(sub, opname, v);
        return true;
    }
    if (type == MDB_QFIELD_ANY && mdb_query_parse_number(s, &v)) {
        mdb_query_append_number(sub, opname, v);
        return true;
    }
    BSON_APPEND_UTF8(sub, opname, s);
    return true;
}

/* name=op:value forms. */
static bson_t *op_clause(const char *param, const char *path, mdb_qfield_type_t type, op_t op, const char *mongo,
                         const char *s, mdb_error_t *err)
{
    bson_t *c = bson_new();
    bson_t sub;
    if (op == OP_EXISTS) {
        bool want;
        if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes"))
            want = true;
        else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no"))
            want = false;
        else {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': exists: expects true or false, got '%s'", param, s);
            goto fail;
        }
        bson_append_document_begin(c, path, -1, &sub);
        BSON_APPEND_BOOL(&sub, "$exists", want);
        bson_append_document_end(c, &sub);
        return c;
    }
    if (!*s) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': '%s' needs a value", param, mongo + 1);
        goto fail;
    }
    if (op == OP_NE || op == OP_EQ) {
        /* ne:/eq: take a list too: ne:CT,MR = none of them. */
        mdb_query_item_t *items = NULL;
        size_t n = 0;
        if (!mdb_query_split_items(s, true, &items, &n, err))
            goto fail;
        bson_t arr;
        bson_append_document_begin(c, path, -1, &sub);
        bson_append_array_begin(&sub, op == OP_NE ? "$nin" : "$in", -1, &arr);
        for (size_t i = 0; i < n; i++) {
            char key[16];
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
            if (items[i].pattern) {
                bson_append_regex(&arr, k, -1, items[i].pattern, "");
            } else if (!append_cmp_value(&arr, k, op, param, type, items[i].text, err)) {
                mdb_query_items_free(items, n);
                goto fail;
            }
        }
        bson_append_array_end(&sub, &arr);
        bson_append_document_end(c, &sub);
        mdb_query_items_free(items, n);
        return c;
    }
    bson_append_document_begin(c, path, -1, &sub);
    if (!append_cmp_value(&sub, mongo, op, param, type, s, err))
        goto fail;
    bson_append_document_end(c, &sub);
    return c;
fail:
    bson_destroy(c);
    return NULL;
}

/* Build the clause for param=value on path. */
bson_t *mdb_query_param_clause(const char *param, const char *path, mdb_qfield_type_t type, const char *value,
                               mdb_error_t *err)
{
    for (size_t i = 0; i < sizeof op_prefixes / sizeof op_prefixes[0]; i++) {
        size_t pl = strlen(op_prefixes[i].prefix);
        if (!strncmp(value, op_prefixes[i].prefix, pl))
            return op_clause(param, path, type, op_prefixes[i].op, op_prefixes[i].mongo, value + pl, err);
    }
    if (!*value) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' needs a value", param);
        return NULL;
    }
    mdb_query_item_t *items = NULL;
    size_t n = 0;
    if (!mdb_query_split_items(value, true, &items, &n, err))
        return NULL;
    bson_t *c = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].text[0]) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': empty value in list '%s'", param, value);
            goto done;
        }
    }
    if (n == 1) {
        c = item_clause(param, path, type, &items[0], err);
        goto done;
    }
    /* Several values: plain scalars of string/number fields become $in;
     * anything else (ranges, wildcards, metadata) becomes $or. */
    bool simple = type == MDB_QFIELD_STRING;
    for (size_t i = 0; simple && i < n; i++)
        simple = !items[i].pattern;
    c = bson_new();
    bson_t arr;
    if (simple) {
        bson_t sub;
        bson_append_document_begin(c, path, -1, &sub);
        bson_append_array_begin(&sub, "$in", 3, &arr);
        for (size_t i = 0; i < n; i++) {
            char key[16];
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
            BSON_APPEND_UTF8(&arr, k, items[i].text);
        }
        bson_append_array_end(&sub, &arr);
        bson_append_document_end(c, &sub);
        goto done;
    }
    bson_append_array_begin(c, "$or", 3, &arr);
    for (size_t i = 0; i < n; i++) {
        bson_t *one = item_clause(param, path, type, &items[i], err);
        if (!one) {
            bson_destroy(c);
            c = NULL;
            goto done;
        }
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_document(&arr, k, -1, one);
        bson_destroy(one);
    }
    bson_append_array_end(c, &arr);
done:
    mdb_query_items_free(items, n);
    return c;
}

/* Studies carry both `modality` and the `modalities` of their series: a
 * modality filter on studies matches either (both must hold for negations:
 * ne: and exists:false). Takes ownership of a and b. */
bson_t *mdb_query_either_clause(bson_t *a, bson_t *b, bool negation)
{
    bson_t *out = bson_new();
    bson_t arr;
    bson_append_array_begin(out, negation ? "$and" : "$or", -1, &arr);
    bson_append_document(&arr, "0", 1, a);
    bson_append_document(&arr, "1", 1, b);
    bson_append_array_end(out, &arr);
    bson_destroy(a);
    bson_destroy(b);
    return out;
}

bool mdb_query_is_page_param(const char *name)
{
    return name && (!strcmp(name, "limit") || !strcmp(name, "offset") || !strcmp(name, "sort") ||
                    !strcmp(name, "fields"));
}

static bool check_value(const char *name, const char *value, mdb_error_t *err)
{
    size_t len = strlen(value);
    if (len > MAX_PARAM_VALUE) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "value of '%s' is too long (%zu bytes, at most %d)", name, len,
                      MAX_PARAM_VALUE);
        return false;
    }
    if (!bson_utf8_validate(value, len, false)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "value of '%s' is not valid UTF-8", name);
        return false;
    }
    return true;
}

/* Field names printed in "unknown field" errors. */
void mdb_query_known_fields(mdb_query_level_t level, char *buf, size_t size)
{
    size_t n, off = 0;
    const mdb_qfield_t *f = mdb_query_fields(level, &n);
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < size; i++) {
        const char *name = f[i].name;
        if (!strcmp(name, "_id")) /* the first alias is the readable name */
            name = level == MDB_QUERY_STUDIES ? "study_instance_uid"
                   : level == MDB_QUERY_SERIES ? "series_instance_uid"
                                               : "sop_instance_uid";
        else if (!strcmp(name, "collection_ids"))
            name = "collection";
        else if (!strcmp(name, "job_ids"))
            name = "job";
        int w = snprintf(buf + off, size - off, "%s%s", off ? ", " : "", name);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (off < size)
        snprintf(buf + off, size - off, ", metadata.<Keyword>");
}

bool mdb_query_add_param(mdb_query_t *q, const char *name, const char *value, mdb_error_t *err)
{
    if (!name || !value) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "parameter without a name or value");
        return false;
    }
    if (q->raw) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "filter parameters cannot be added to a raw query");
        return false;
    }
    if (!check_value(name, value, err))
        return false;
    if (!strcmp(name, "limit") || !strcmp(name, "offset")) {
        int64_t v;
        if (!mdb_query_parse_int64(value, &v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects an integer, got '%s'", name, value);
            return false;
        }
        return name[0] == 'l' ? mdb_query_set_limit(q, v, err) : mdb_query_set_offset(q, v, err);
    }
    if (!strcmp(name, "sort"))
        return mdb_query_set_sort(q, value, err);
    if (!strcmp(name, "fields"))
        return mdb_query_set_fields(q, value, err);

    /* "study.<field>" / "series.<field>" name a parent's field explicitly;
     * else own level first, then the parents (series → studies; instances →
     * series, studies). */
    mdb_query_level_t level = q->level;
    bool meta = false;
    const char *display = name;
    const char *rest = mdb_query_parent_prefix(q->level, name, &level);
    const mdb_qfield_t *f = NULL;
    if (rest) {
        name = rest;
        f = mdb_query_find_field(level, name, &meta);
    } else {
        f = mdb_query_find_field(level, name, &meta);
    }
    if (!f && !meta && !rest) {
        for (int l = (int)q->level - 1; l >= 0 && !f; l--) {
            if ((f = mdb_query_find_field((mdb_query_level_t)l, name, &meta)) != NULL && strcmp(f->name, "_id") != 0)
                level = (mdb_query_level_t)l;
            else
                f = NULL;
        }
    }
    if (!f) {
        char known[768];
        mdb_query_known_fields(level, known, sizeof known);
        if (!strncmp(name, "metadata.", 9))
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "'%s' is not a valid metadata keyword path (letters, digits, '_', dots between levels)",
                          display);
        else
            mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown filter field '%s' for %s (known: %s%s)", display,
                          level_names[level], known,
                          rest || q->level == MDB_QUERY_STUDIES ? ""
                          : q->level == MDB_QUERY_SERIES        ? "; and study.<field>"
                                                                : "; and series.<field>, study.<field>");
        return false;
    }
    const char *path = meta ? name : f->name;
    if (!meta && !strcmp(f->name, "integrity") && strncmp(value, "exists:", 7)) {
        /* an object, not a value: only its presence is a question */
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' takes exists:true or exists:false, got '%s'", name, value);
        return false;
    }
    bson_t *c = mdb_query_param_clause(name, path, f->type, value, err);
    if (!c)
        return false;
    if (level == MDB_QUERY_STUDIES && !meta && !strcmp(f->name, "modality")) {
        bson_t *alt = mdb_query_param_clause(name, "modalities", f->type, value, err);
        if (!alt) {
            bson_destroy(c);
            return false;
        }
        bool negation = !strncmp(value, "ne:", 3) || !strcmp(value, "exists:false") || !strcmp(value, "exists:0") ||
                        !strcmp(value, "exists:no");
        c = mdb_query_either_clause(c, alt, negation);
    }
    mdb_query_clauses_t *list = level == q->level ? &q->clauses : &q->parent[level];
    if (!mdb_query_clauses_push(list, c)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    q->filter_dirty = true;
    return true;
}

/* A sortable/projectable field spec item: own-level field, alias or
 * metadata.*, or a parent's field as "study.<field>" / "series.<field>"
 * (written "study.<document path>"). The path is written to out (cap bytes). */
static const char *spec_field(mdb_query_t *q, const char *name, char *out, size_t cap, mdb_error_t *err)
{
    bool meta;
    mdb_query_level_t level = q->level;
    const char *rest = q->level < MDB_QUERY_LEVEL_COUNT ? mdb_query_parent_prefix(q->level, name, &level) : NULL;
    const mdb_qfield_t *f = mdb_query_find_field(level, rest ? rest : name, &meta);
    if (!f) {
        char known[768];
        mdb_query_known_fields(level, known, sizeof known);
        mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown field '%s' for %s (known: %s%s)", name, level_names[level],
                      known,
                      rest || q->level == MDB_QUERY_STUDIES ? ""
                      : q->level == MDB_QUERY_SERIES        ? "; and study.<field>"
                                                            : "; and series.<field>, study.<field>");
        return NULL;
    }
    const char *path = meta ? (rest ? rest : name) : f->name;
    int w = rest ? snprintf(out, cap, "%s.%s", mdb_query_parent_names[level], path) : snprintf(out, cap, "%s", path);
    if (w < 0 || (size_t)w >= cap) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "field name '%.64s...' is too long", name);
        return NULL;
    }
    return out;
}

bool mdb_query_set_sort(mdb_query_t *q, const char *spec, mdb_error_t *err)
{
    if (!check_value("sort", spec, err))
        return false;
    bson_t sort = BSON_INITIALIZER;
    bool id_seen = false;
    char *copy = strdup(spec), *save = NULL;
    if (!copy) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        bson_destroy(&sort);
        return false;
    }
    int count = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        int dir = 1;
        if (*tok == '-' || *tok == '+') {
            dir = *tok == '-' ? -1 : 1;
            tok++;
        }
        char pbuf[256];
        const char *path = spec_field(q, tok, pbuf, sizeof pbuf, err);
        if (!path)
            goto fail;
        if (mdb_query_has_key(&sort, path)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort names '%s' twice", tok);
            goto fail;
        }
        if (++count > 8) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort on at most 8 fields");
            goto fail;
        }
        id_seen = id_seen || !strcmp(path, "_id");
        BSON_APPEND_INT32(&sort, path, dir);
    }
    if (count == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort needs at least one field");
        goto fail;
    }
    if (!id_seen)
        BSON_APPEND_INT32(&sort, "_id", 1);
    free(copy);
    bson_destroy(&q->sort);
    bson_steal(&q->sort, &sort);
    return true;
fail:
    free(copy);
    bson_destroy(&sort);
    return false;
}

bool mdb_query_set_fields(mdb_query_t *q, const char *spec, mdb_error_t *err)
{
    if (!check_value("fields", spec, err))
        return false;
    bson_t proj = BSON_INITIALIZER;
    char *copy = strdup(spec), *save = NULL;
    if (!copy) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        bson_destroy(&proj);
        return false;
    }
    int count = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char pbuf[256];
        const char *path = !strcmp(tok, "metadata") ? "metadata" : spec_field(q, tok, pbuf, sizeof pbuf, err);
        if (!path)
            goto fail;
        if (mdb_query_has_key(&proj, path))
            continue;
        if (++count > 100) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "fields lists at most 100 fields");
            goto fail;
        }
        BSON_APPEND_INT32(&proj, path, 1);
    }
    if (count == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "fields needs at least one field");
        goto fail;
    }
    /* metadata and metadata.X together is a path collision for the server. */
    if (bson_has_field(&proj, "metadata")) {
        bson_t clean = BSON_INITIALIZER;
        bson_iter_t it;
        bson_iter_init(&it, &proj);
        while (bson_iter_next(&it))
            if (strncmp(bson_iter_key(&it), "metadata.", 9) != 0)
                bson_append_iter(&clean, NULL, 0, &it);
        bson_destroy(&proj);
        bson_steal(&proj, &clean);
    }
    free(copy);
    bson_destroy(&q->projection);
    bson_steal(&q->projection, &proj);
    return true;
fail:
    free(copy);
    bson_destroy(&proj);
    return false;
}

/* ------------------------------------------------------------------------ */
/* raw queries: whitelist validation and JSON → BSON                         */

typedef struct {
    const char *name;
    const char *reason; /* NULL = allowed */
} op_rule_t;

/* Refused operators with the reason, checked before the whitelist so the
 * answer says why rather than just "unknown". */
static const op_rule_t refused_ops[] = {
    {"$where", "$where runs JavaScript on the server"},
    {"$function", "$function runs JavaScript on the server"},
    {"$accumulator", "$accumulator runs JavaScript on the server"},
    {"$out", "$out writes query results into a collection"},
    {"$merge", "$merge writes query results into a collection"},
    {"$text", "$text needs a text index, which the catalogue does not have"},
    {"$near", "geospatial operators are not supported"},
    {"$nearSphere", "geospatial operators are not supported"},
    {"$geoWithin", "geospatial operators are not supported"},
    {"$geoIntersects", "geospatial operators are not supported"},
    {"$jsonSchema", "$jsonSchema is not supported"},
    {"$lookup", "$lookup reads other collections"},
    {"$unionWith", "$unionWith reads other collections"},
};

/* Field-level query operators. */
static const char *const field_ops[] = {"$eq",   "$ne",  "$gt",   "$gte",       "$lt",   "$lte",
                                        "$in",   "$nin", "$exists", "$type",    "$regex", "$options",
                                        "$not",  "$all", "$elemMatch", "$size", "$mod"};

/* Document-level operators. */
static const char *const doc_ops[] = {"$and", "$or", "$nor", "$expr", "$comment"};

/* Aggregation expression operators accepted inside $expr. */
static const char *const expr_ops[] = {
    "$eq",  "$ne",     "$gt",     "$gte",     "$lt",      "$lte",      "$cmp",     "$and",    "$or",
    "$not", "$in",     "$size",   "$add",     "$subtract", "$multiply", "$divide", "$mod",    "$abs",
    "$cond", "$ifNull", "$toLower", "$toUpper", "$concat",  "$substrCP", "$strLenCP", "$literal", "$type",
    "$arrayElemAt", "$min", "$max", "$isArray", "$toString", "$toInt", "$toDouble"};

bool mdb_query_in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i]))
            return true;
    return false;
}

#define LIST(a) (a), (sizeof(a) / sizeof((a)[0]))

bool mdb_query_refused_reason(const char *op, mdb_error_t *err)
{
    for (size_t i = 0; i < sizeof refused_ops / sizeof refused_ops[0]; i++) {
        if (!strcmp(op, refused_ops[i].name)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "operator %s is refused: %s", op, refused_ops[i].reason);
            return true;
        }
    }
    return false;
}

bool mdb_query_operator_allowed(const char *op, mdb_error_t *err)
{
    if (!op || op[0] != '$') {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is not an operator", op ? op : "(null)");
        return false;
    }
    if (mdb_query_refused_reason(op, err))
        return false;
    if (mdb_query_in_list(op, LIST(field_ops)) || mdb_query_in_list(op, LIST(doc_ops)))
        return true;
    mdb_error_set(err, MDB_ERR_QUERY, 0, "operator %s is not allowed (allowed: $and $or $nor $expr $eq $ne $gt $gte "
                                         "$lt $lte $in $nin $exists $type $regex $options $not $all $elemMatch $size "
                                         "$mod)", op);
    return false;
}

typedef struct {
    mdb_error_t *err;
    size_t nodes;
    char where[160]; /* path of the node being checked, for messages */
} walk_t;

static bool walk_budget(walk_t *w, int depth)
{
    if (depth > MAX_DEPTH) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "query is nested too deeply (more than %d levels)", MAX_DEPTH);
        return false;
    }
    if (++w->nodes > MAX_NODES) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "query is too large (more than %d values)", MAX_NODES);
        return false;
    }
    return true;
}

/* Field names: non-empty, valid UTF-8 (jansson guarantees), no NUL, no
 * segment starting with '$', no empty segments. */
static bool check_field_name(walk_t *w, const char *key)
{
    if (!*key) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "empty field name");
        return false;
    }
    if (strlen(key) > 512) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name too long");
        return false;
    }
    bool seg_start = true;
    for (const char *p = key; *p; p++) {
        if (*p == '.') {
            if (seg_start) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' has an empty path segment", key);
                return false;
            }
            seg_start = true;
            continue;
        }
        if (seg_start && *p == '$') {
            const char *dot = strchr(p, '.');
            int n = dot ? (int)(dot - p) : (int)strlen(p);
            char op[64];
            snprintf(op, sizeof op, "%.*s", n < 60 ? n : 60, p);
            if (p == key) {
                if (!mdb_query_refused_reason(op, w->err))
                    mdb_error_set(w->err, MDB_ERR_QUERY, 0, "operator %s is not allowed here (%s)", op,
                                  w->where[0] ? w->where : "top level");
            } else {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' has a segment starting with '$'", key);
            }
            return false;
        }
        seg_start = false;
    }
    if (seg_start) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' ends with '.'", key);
        return false;
    }
    return true;
}

bool mdb_query_check_field_name(const char *key, mdb_error_t *err)
{
    walk_t w = {.err = err};
    return check_field_name(&w, key);
}

static bool walk_query_doc(walk_t *w, const json_t *doc, int depth);
static bool walk_field_value(walk_t *w, const char *field, const json_t *v, int depth);
static bool walk_expr(walk_t *w, const json_t *v, int depth);

/* Literal values (equality operands, $in members): no key may start with '$'. */
static bool walk_literal(walk_t *w, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (!walk_literal(w, e, depth + 1)) return false;
        return true;
    }
    if (json_is_object(v)) {
        const char *k;
        const json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            if (k[0] == '$') {
                if (!mdb_query_refused_reason(k, w->err))
                    mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                                  "operator %s is not allowed inside a literal value (%s); MongoDB extended JSON "
                                  "type wrappers are not accepted",
                                  k, w->where);
                return false;
            }
            if (!walk_literal(w, e, depth + 1))
                return false;
        }
    }
    return true;
}

bool mdb_query_is_operator_object(const json_t *v)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return false;
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e)
    {
        (void)e;
        return k[0] == '$';
    }
    return false;
}

static bool walk_operator_object(walk_t *w, const char *field, const json_t *v, int depth)
{
    const char *op;
    const json_t *arg;
    bool has_regex = json_object_get(v, "$regex") != NULL;
    json_object_foreach((json_t *)v, op, arg)
    {
        if (op[0] != '$') {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                          "field '%s' mixes operators and field names ('%s'); use one or the other", field, op);
            return false;
        }
        if (mdb_query_refused_reason(op, w->err))
            return false;
        if (!mdb_query_in_list(op, LIST(field_ops))) {
            if (mdb_query_in_list(op, LIST(doc_ops)))
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "operator %s belongs at document level, not on field '%s'",
                              op, field);
            else
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s is not allowed (field '%s'; allowed: $eq $ne $gt $gte $lt $lte $in $nin "
                              "$exists $type $regex $options $not $all $elemMatch $size $mod)",
                              op, field);
            return false;
        }
        if (!strcmp(op, "$in") || !strcmp(op, "$nin") || !strcmp(op, "$all")) {
            if (!json_is_array(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s on field '%s' needs an array", op, field);
                return false;
            }
            if (!walk_literal(w, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$regex")) {
            if (!json_is_string(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$regex on field '%s' needs a string", field);
                return false;
            }
        } else if (!strcmp(op, "$options")) {
            const char *o = json_string_value(arg);
            if (!has_regex || !o || strspn(o, "imsx") != strlen(o)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "$options on field '%s' needs $regex and a string of the flags i, m, s, x", field);
                return false;
            }
        } else if (!strcmp(op, "$exists")) {
            if (!json_is_boolean(arg) && !json_is_number(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$exists on field '%s' needs true or false", field);
                return false;
            }
        } else if (!strcmp(op, "$size")) {
            if (!json_is_integer(arg) || json_integer_value(arg) < 0) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$size on field '%s' needs a non-negative integer", field);
                return false;
            }
        } else if (!strcmp(op, "$mod")) {
            if (!json_is_array(arg) || json_array_size(arg) != 2 || !json_is_number(json_array_get(arg, 0)) ||
                !json_is_number(json_array_get(arg, 1)) || json_number_value(json_array_get(arg, 0)) == 0) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$mod on field '%s' needs [divisor, remainder], divisor != 0",
                              field);
                return false;
            }
        } else if (!strcmp(op, "$type")) {
            if (!json_is_string(arg) && !json_is_integer(arg) && !json_is_array(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$type on field '%s' needs a type name or number", field);
                return false;
            }
            if (!walk_literal(w, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$not")) {
            if (!mdb_query_is_operator_object(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$not on field '%s' needs an operator object", field);
                return false;
            }
            if (!walk_operator_object(w, field, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$elemMatch")) {
            if (!json_is_object(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$elemMatch on field '%s' needs an object", field);
                return false;
            }
            if (!(mdb_query_is_operator_object(arg) ? walk_operator_object(w, field, arg, depth + 1)
                                          : walk_query_doc(w, arg, depth + 1)))
                return false;
        } else { /* comparison: any literal */
            if (!walk_literal(w, arg, depth + 1))
                return false;
        }
    }
    return true;
}

static bool walk_field_value(walk_t *w, const char *field, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    snprintf(w->where, sizeof w->where, "field '%.120s'", field);
    if (mdb_query_is_operator_object(v))
        return walk_operator_object(w, field, v, depth);
    return walk_literal(w, v, depth);
}

static bool walk_expr(walk_t *w, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strncmp(s, "$$", 2) && strcmp(s, "$$ROOT") != 0 && strncmp(s, "$$ROOT.", 7) != 0 &&
            strcmp(s, "$$CURRENT") != 0 && strncmp(s, "$$CURRENT.", 10) != 0) {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0, "variable %s is not allowed in $expr", s);
            return false;
        }
        return true;
    }
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (!walk_expr(w, e, depth + 1)) return false;
        return true;
    }
    if (!json_is_object(v))
        return true;
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e)
    {
        if (k[0] == '$') {
            if (mdb_query_refused_reason(k, w->err)) {
                mdb_error_prefix(w->err, "in $expr");
                return false;
            }
            if (!mdb_query_in_list(k, LIST(expr_ops))) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "expression operator %s is not allowed in $expr", k);
                return false;
            }
            if (!strcmp(k, "$literal")) {
                if (!walk_literal(w, e, depth + 1))
                    return false;
                continue;
            }
        } else if (!check_field_name(w, k)) {
            return false;
        }
        if (!walk_expr(w, e, depth + 1))
            return false;
    }
    return true;
}

static bool walk_query_doc(walk_t *w, const json_t *doc, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (!json_is_object(doc)) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "a query must be a JSON object");
        return false;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)doc, k, v)
    {
        if (k[0] != '$') {
            if (!check_field_name(w, k) || !walk_field_value(w, k, v, depth + 1))
                return false;
            continue;
        }
        if (mdb_query_refused_reason(k, w->err))
            return false;
        if (!mdb_query_in_list(k, LIST(doc_ops))) {
            if (mdb_query_in_list(k, LIST(field_ops)))
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s must be applied to a field, e.g. {\"field\": {\"%s\": ...}}", k, k);
            else
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s is not allowed (allowed at document level: $and $or $nor $expr $comment)",
                              k);
            return false;
        }
        if (!strcmp(k, "$comment")) {
            if (!json_is_string(v)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$comment needs a string");
                return false;
            }
            continue;
        }
        if (!strcmp(k, "$expr")) {
            snprintf(w->where, sizeof w->where, "$expr");
            if (!walk_expr(w, v, depth + 1))
                return false;
            continue;
        }
        /* $and / $or / $nor */
        if (!json_is_array(v) || json_array_size(v) == 0) {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s needs a non-empty array of query objects", k);
            return false;
        }
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_object(e)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s[%zu] must be a query object", k, i);
                return false;
            }
            if (!walk_query_doc(w, e, depth + 1))
                return false;
        }
    }
    return true;
}

/* JSON → BSON, after validation. Integers become int32 when they fit. */
bool mdb_query_filter_from_json(const json_t *filter, bson_t *out, mdb_error_t *err)
{
    walk_t w = {.err = err};
    if (!walk_query_doc(&w, filter, 0))
        return false;
    bson_init(out);
    /* walk_query_doc has bounded the nesting; the one JSON->BSON converter serves. */
    if (!mdb_docs_json_to_bson(filter, out)) {
        bson_destroy(out);
        mdb_error_set(err, MDB_ERR_QUERY, 0, "filter cannot be represented as BSON (too large or too deep)");
        return false;
    }
    return true;
}

static const char *const raw_collections[] = {"studies", "series", "instances", "jobs", "collections",
                                              "conflicts"};

static bool raw_sort(mdb_query_t *q, const json_t *sort, mdb_error_t *err)
{
    if (!json_is_object(sort)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort must be an object like {\"study_date\": -1}");
        return false;
    }
    if (json_object_size(sort) > 8) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort on at most 8 fields");
        return false;
    }
    bson_t b = BSON_INITIALIZER;
    const char *k;
    const json_t *v;
    bool id_seen = false;
    json_object_foreach((json_t *)sort, k, v)
    {
        if (!mdb_query_check_field_name(k, err))
            goto fail;
        if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != -1)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort direction of '%s' must be 1 or -1", k);
            goto fail;
        }
        id_seen = id_seen || !strcmp(k, "_id");
        BSON_APPEND_INT32(&b, k, (int32_t)json_integer_value(v));
    }
    if (!id_seen)
        BSON_APPEND_INT32(&b, "_id", 1);
    bson_destroy(&q->sort);
    bson_steal(&q->sort, &b);
    return true;
fail:
    bson_destroy(&b);
    return false;
}

static bool raw_projection(mdb_query_t *q, const json_t *proj, mdb_error_t *err)
{
    if (!json_is_object(proj)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "projection must be an object like {\"patient_id\": 1}");
        return false;
    }
    if (json_object_size(proj) > 100) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "projection names at most 100 fields");
        return false;
    }
    bson_t b = BSON_INITIALIZER;
    const char *k;
    const json_t *v;
    int include = -1; /* mode of non-_id fields */
    json_object_foreach((json_t *)proj, k, v)
    {
        if (k[0] == '$' || (json_is_object(v) && mdb_query_is_operator_object(v))) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "projection operators are not supported ('%s')", k);
            goto fail;
        }
        if (!mdb_query_check_field_name(k, err))
            goto fail;
        int on;
        if (json_is_boolean(v))
            on = json_is_true(v);
        else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            on = (int)json_integer_value(v);
        else {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "projection of '%s' must be 0, 1, true or false", k);
            goto fail;
        }
        if (strcmp(k, "_id") != 0) {
            if (include >= 0 && include != on) {
                mdb_error_set(err, MDB_ERR_QUERY, 0,
                              "projection mixes inclusion and exclusion ('%s'); only _id may differ", k);
                goto fail;
            }
            include = on;
        }
        BSON_APPEND_INT32(&b, k, on);
    }
    bson_destroy(&q->projection);
    bson_steal(&q->projection, &b);
    return true;
fail:
    bson_destroy(&b);
    return false;
}

/* "parents": {"studies": {filter}, "series": {filter}}: conditions on the
 * parent documents (a row matches when its parent does), the raw form of
 * the parent clauses of filter parameters. */
static bool raw_parents(mdb_query_t *q, const json_t *parents, mdb_error_t *err)
{
    if (!json_is_object(parents)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "parents must be an object like {\"studies\": {\"study_date\": ...}}");
        return false;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)parents, k, v)
    {
        mdb_query_level_t l;
        if (!mdb_query_level_parse(k, &l) || strcmp(k, level_names[l]) != 0 || q->level >= MDB_QUERY_LEVEL_COUNT ||
            l >= q->level) {
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "parents of %s can only name %s, got '%.64s'", q->collection,
                          q->level == MDB_QUERY_INSTANCES ? "studies and series"
                          : q->level == MDB_QUERY_SERIES  ? "studies"
                                                          : "nothing (this collection has no parents)",
                          k);
            return false;
        }
        bson_t b;
        if (!json_is_object(v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "parents.%s must be a filter object", k);
            return false;
        }
        if (!mdb_query_filter_from_json(v, &b, err)) {
            mdb_error_prefix(err, "parents.%s", k);
            return false;
        }
        if (bson_empty(&b)) {
            bson_destroy(&b);
            continue;
        }
        bson_t *c = bson_copy(&b);
        bson_destroy(&b);
        if (!c || !mdb_query_clauses_push(&q->parent[l], c)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
    }
    return true;
}

static bool raw_int(const json_t *v, const char *name, int64_t min, int64_t max, int64_t *out, mdb_error_t *err)
{
    if (!json_is_integer(v)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s must be an integer", name);
        return false;
    }
    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s must be between %lld and %lld, got %lld", name, (long long)min,
                      (long long)max, (long long)n);
        return false;
    }
    *out = n;
    return true;
}

mdb_query_t *mdb_query_new_raw(const json_t *request, const char *default_collection, int64_t max_limit,
                               mdb_error_t *err)
{
    mdb_query_t *q = NULL;
    if (!json_is_object(request)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "a raw query must be a JSON object {collection, filter, ...}");
        return NULL;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)request, k, v)
    {
        static const char *const keys[] = {"collection", "filter", "parents", "sort", "projection", "limit", "skip"};
        if (mdb_query_in_list(k, LIST(keys)))
            continue;
        if (!strcmp(k, "pipeline"))
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "aggregation pipelines are not accepted (they can write with $out/$merge); send a filter");
        else if (k[0] == '$' && mdb_query_refused_reason(k, err))
            ;
        else
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "unknown key '%s' (a raw query has collection, filter, parents, sort, projection, limit, "
                          "skip)",
                          k);
        return NULL;
    }
    const json_t *coll = json_object_get(request, "collection");
    const char *cname = default_collection ? default_collection : "studies";
    if (coll) {
        if (!json_is_string(coll)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "collection must be a string");
            return NULL;
        }
        cname = json_string_value(coll);
    }
    if (!mdb_query_in_list(cname, LIST(raw_collections))) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "collection '%.64s' is not queryable (allowed: studies, series, instances, jobs, collections, "
                      "conflicts)",
                      cname);
        return NULL;
    }
    mdb_query_level_t level;
    bool is_level = mdb_query_level_parse(cname, &level) && !strcmp(cname, level_names[level]);
    q = mdb_query_new(is_level ? level : MDB_QUERY_STUDIES, max_limit);
    if (!q) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    if (!is_level)
        q->level = MDB_QUERY_LEVEL_COUNT;
    snprintf(q->collection, sizeof q->collection, "%s", cname);
    q->raw = true;

    const json_t *filter = json_object_get(request, "filter");
    if (filter && !json_is_null(filter)) {
        bson_t b;
        if (!json_is_object(filter)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "filter must be a JSON object");
            goto fail;
        }
        if (!mdb_query_filter_from_json(filter, &b, err))
            goto fail;
        bson_destroy(&q->filter);
        bson_steal(&q->filter, &b);
    }
    const json_t *parents = json_object_get(request, "parents");
    if (parents && !json_is_null(parents) && !raw_parents(q, parents, err))
        goto fail;
    const json_t *sort = json_object_get(request, "sort");
    if (sort && !json_is_null(sort) && !raw_sort(q, sort, err))
        goto fail;
    const json_t *proj = json_object_get(request, "projection");
    if (proj && !json_is_null(proj) && !raw_projection(q, proj, err))
        goto fail;
    const json_t *lim = json_object_get(request, "limit");
    if (lim && !json_is_null(lim) && !raw_int(lim, "limit", 1, q->max_limit, &q->limit, err))
        goto fail;
    const json_t *skip = json_object_get(request, "skip");
    if (skip && !json_is_null(skip) && !raw_int(skip, "skip", 0, MDB_QUERY_MAX_OFFSET, &q->offset, err))
        goto fail;
    return q;
fail:
    mdb_query_destroy(q);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* the raw form of a query                                                   */

/* Does b hold a value JSON cannot carry as a raw query (a BSON regex from a
 * wildcard inside an eq:/ne: list, or any other typed value)? */
static bool has_untyped(const bson_t *b)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, b))
        return false;
    while (bson_iter_next(&it)) {
        bson_type_t t = bson_iter_type(&it);
        if (t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY) {
            bson_t sub;
            uint32_t len;
            const uint8_t *data;
            if (t == BSON_TYPE_DOCUMENT)
                bson_iter_document(&it, &len, &data);
            else
                bson_iter_array(&it, &len, &data);
            if (bson_init_static(&sub, data, len) && has_untyped(&sub))
                return true;
            continue;
        }
        if (t != BSON_TYPE_UTF8 && t != BSON_TYPE_INT32 && t != BSON_TYPE_INT64 && t != BSON_TYPE_DOUBLE &&
            t != BSON_TYPE_BOOL && t != BSON_TYPE_NULL)
            return true;
    }
    return false;
}

json_t *mdb_query_raw_json(const mdb_query_t *q, mdb_error_t *err)
{
    const bson_t *f = mdb_query_filter(q);
    bool untyped = has_untyped(f);
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        for (size_t i = 0; i < q->parent[l].n; i++)
            untyped = untyped || has_untyped(q->parent[l].v[i]);
    if (untyped) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "a wildcard inside an eq:/ne: list becomes a regular expression inside $in/$nin, which a JSON "
                      "raw query cannot write; use a wildcard on its own (field=A*) or $regex");
        return NULL;
    }
    json_t *out = json_object(), *parents = json_object();
    bson_t tmp = BSON_INITIALIZER;
    if (!out || !parents)
        goto oom;
    json_object_set_new(out, "collection", json_string(q->collection));
    json_object_set_new(out, "filter", mdb_query_bson_to_json(f));
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++) {
        if (!q->parent[l].n)
            continue;
        mdb_query_build_and(&q->parent[l], &tmp);
        json_object_set_new(parents, level_names[l], mdb_query_bson_to_json(&tmp));
    }
    if (json_object_size(parents))
        json_object_set(out, "parents", parents);
    json_object_set_new(out, "sort", mdb_query_bson_to_json(&q->sort));
    if (!bson_empty(&q->projection))
        json_object_set_new(out, "projection", mdb_query_bson_to_json(&q->projection));
    json_object_set_new(out, "limit", json_integer(q->limit > 0 ? q->limit : 1));
    if (q->offset > 0)
        json_object_set_new(out, "skip", json_integer(q->offset));
    json_decref(parents);
    bson_destroy(&tmp);
    return out;
oom:
    json_decref(out);
    json_decref(parents);
    bson_destroy(&tmp);
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return NULL;
}

mdb_query_t *mdb_query_descend(const mdb_query_t *q, mdb_query_level_t child, mdb_error_t *err)
{
    if (q->level >= MDB_QUERY_LEVEL_COUNT || child >= MDB_QUERY_LEVEL_COUNT || child < q->level) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s has no %s below it", q->collection,
                      child < MDB_QUERY_LEVEL_COUNT ? level_names[child] : "?");
        return NULL;
    }
    mdb_query_t *d = mdb_query_new(child, q->max_limit);
    if (!d)
        goto oom;
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        for (size_t i = 0; i < q->parent[l].n; i++)
            if (!mdb_query_clauses_push(l == (int)child ? &d->clauses : &d->parent[l], bson_copy(q->parent[l].v[i])))
                goto oom;
    mdb_query_clauses_t *own = child == q->level ? &d->clauses : &d->parent[q->level];
    if (q->raw) {
        if (!bson_empty(&q->filter) && !mdb_query_clauses_push(own, bson_copy(&q->filter)))
            goto oom;
    } else {
        for (size_t i = 0; i < q->clauses.n; i++)
            if (!mdb_query_clauses_push(own, bson_copy(q->clauses.v[i])))
                goto oom;
    }
    d->filter_dirty = true;
    return d;
oom:
    mdb_query_destroy(d);
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return NULL;
}

bool mdb_query_project_path(mdb_query_t *q, const char *path, mdb_error_t *err)
{
    if (!path || !*path || path[0] == '$' || strstr(path, ".$") || strstr(path, "..")) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is not a document path", path ? path : "(null)");
        return false;
    }
    if (!mdb_query_has_key(&q->projection, path))
        BSON_APPEND_INT32(&q->projection, path, 1);
    return true;
}
