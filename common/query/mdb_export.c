/* mdb_export: rows of a query → CSV, JSON or NDJSON bytes, streamed to a
 * sink in bounded chunks; the file manifest of a cohort and its sidecar.
 * See mdb_export.h for the formats. The writer keeps one output buffer of
 * MDB_EXPORT_CHUNK bytes (a single row larger than that is handed over as
 * it is), and the rows come from mdb_query_foreach, so an export of any
 * size holds one database batch and one chunk at a time. */
#include "mdb_export.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_ops.h"

#ifndef MDB_VERSION
#define MDB_VERSION "unknown"
#endif

struct mdb_export {
    mdb_export_format_t format;
    char **cols;
    size_t ncols;
    mdb_export_sink_fn sink;
    void *ud;
    char *buf;
    size_t len, cap;
    int64_t rows;
};

bool mdb_export_format_parse(const char *s, mdb_export_format_t *out)
{
    if (!s)
        return false;
    if (!strcmp(s, "csv"))
        *out = MDB_EXPORT_CSV;
    else if (!strcmp(s, "json"))
        *out = MDB_EXPORT_JSON;
    else if (!strcmp(s, "ndjson") || !strcmp(s, "jsonl"))
        *out = MDB_EXPORT_NDJSON;
    else
        return false;
    return true;
}

const char *mdb_export_format_name(mdb_export_format_t f)
{
    return f == MDB_EXPORT_CSV ? "csv" : f == MDB_EXPORT_JSON ? "json" : "ndjson";
}

const char *mdb_export_content_type(mdb_export_format_t f)
{
    return f == MDB_EXPORT_CSV    ? "text/csv; charset=utf-8"
           : f == MDB_EXPORT_JSON ? "application/json"
                                  : "application/x-ndjson";
}

/* ------------------------------------------------------------------------ */
/* buffer                                                                    */

static bool grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *n = realloc(*buf, c);
    if (!n)
        return false;
    *buf = n;
    *cap = c;
    return true;
}

static bool put(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (!grow(buf, cap, *len + n + 1))
        return false;
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

static bool flush_out(mdb_export_t *e, mdb_error_t *err)
{
    if (!e->len)
        return true;
    bool ok = e->sink(e->buf, e->len, e->ud, err);
    e->len = 0;
    return ok;
}

/* Hand the buffer to the sink once it holds a chunk. */
static bool maybe_flush(mdb_export_t *e, mdb_error_t *err)
{
    return e->len < MDB_EXPORT_CHUNK || flush_out(e, err);
}

static bool oom(mdb_error_t *err)
{
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return false;
}

/* ------------------------------------------------------------------------ */
/* cells                                                                     */

const json_t *mdb_export_get(const json_t *row, const char *path)
{
    const json_t *cur = row;
    const char *p = path;
    while (cur && p && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (!json_is_object(cur))
            return NULL;
        cur = json_object_getn(cur, p, n);
        p = dot ? dot + 1 : NULL;
    }
    return cur;
}

/* Plain text of a value: strings as they are, arrays joined with ';',
 * numbers and objects as compact JSON, null/missing empty. */
static bool terminate(char **buf, size_t *len, size_t *cap)
{
    if (!grow(buf, cap, *len + 1))
        return false;
    (*buf)[*len] = '\0';
    return true;
}

static bool cell_text(const json_t *v, char **buf, size_t *len, size_t *cap)
{
    if (!v || json_is_null(v))
        return terminate(buf, len, cap);
    if (json_is_string(v))
        return put(buf, len, cap, json_string_value(v), json_string_length(v));
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if ((i && !put(buf, len, cap, ";", 1)) || !cell_text(e, buf, len, cap))
                return false;
        }
        return terminate(buf, len, cap);
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s)
        return false;
    bool ok = put(buf, len, cap, s, strlen(s));
    free(s);
    return ok;
}

bool mdb_export_csv_cell(const json_t *v, char **buf, size_t *len, size_t *cap)
{
    size_t start = *len;
    if (!cell_text(v, buf, len, cap))
        return false;
    size_t n = *len - start;
    const char *s = *buf ? *buf + start : "";
    bool quote = false;
    size_t quotes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ',' || c == '"' || c == '\r' || c == '\n')
            quote = true;
        if (c == '"')
            quotes++;
    }
    if (!quote)
        return true;
    /* shift right by 1 + quotes, doubling quotes from the end */
    size_t extra = 2 + quotes;
    if (!grow(buf, cap, *len + extra + 1))
        return false;
    char *b = *buf + start;
    size_t w = n + extra;
    b[w] = '\0';
    b[--w] = '"';
    for (size_t i = n; i-- > 0;) {
        b[--w] = b[i];
        if (b[i] == '"')
            b[--w] = '"';
    }
    b[0] = '"';
    *len += extra;
    return true;
}

/* ------------------------------------------------------------------------ */
/* writer                                                                    */

mdb_export_t *mdb_export_new(mdb_export_format_t f, const char *const *columns, size_t ncols, mdb_export_sink_fn sink,
                             void *ud, mdb_error_t *err)
{
    if (f == MDB_EXPORT_CSV && ncols == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "a CSV export needs its columns");
        return NULL;
    }
    if (ncols > MDB_EXPORT_MAX_COLUMNS) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "at most %d columns", MDB_EXPORT_MAX_COLUMNS);
        return NULL;
    }
    mdb_export_t *e = calloc(1, sizeof *e);
    if (!e || (ncols && !(e->cols = calloc(ncols, sizeof *e->cols))))
        goto fail;
    for (size_t i = 0; i < ncols; i++) {
        if (!columns[i] || !*columns[i]) {
            mdb_export_destroy(e);
            mdb_error_set(err, MDB_ERR_QUERY, 0, "empty column name");
            return NULL;
        }
        if (!(e->cols[i] = strdup(columns[i])))
            goto fail;
        e->ncols = i + 1;
    }
    e->format = f;
    e->sink = sink;
    e->ud = ud;
    if (!grow(&e->buf, &e->cap, MDB_EXPORT_CHUNK + 4096))
        goto fail;
    return e;
fail:
    mdb_export_destroy(e);
    oom(err);
    return NULL;
}

void mdb_export_destroy(mdb_export_t *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->ncols; i++)
        free(e->cols[i]);
    free(e->cols);
    free(e->buf);
    free(e);
}

int64_t mdb_export_rows(const mdb_export_t *e)
{
    return e->rows;
}

bool mdb_export_begin(mdb_export_t *e, mdb_error_t *err)
{
    if (e->format == MDB_EXPORT_JSON)
        return put(&e->buf, &e->len, &e->cap, "[", 1) || oom(err);
    if (e->format != MDB_EXPORT_CSV)
        return true;
    for (size_t i = 0; i < e->ncols; i++) {
        json_t *name = json_string(e->cols[i]);
        bool ok = name && (!i || put(&e->buf, &e->len, &e->cap, ",", 1)) &&
                  mdb_export_csv_cell(name, &e->buf, &e->len, &e->cap);
        json_decref(name);
        if (!ok)
            return oom(err);
    }
    return put(&e->buf, &e->len, &e->cap, "\r\n", 2) || oom(err);
}

/* Set path (dotted) in obj to v (new reference stolen), creating the
 * objects on the way. */
static bool set_path(json_t *obj, const char *path, json_t *v)
{
    const char *dot = strchr(path, '.');
    if (!dot)
        return json_object_set_new(obj, path, v) == 0;
    json_t *sub = json_object_getn(obj, path, (size_t)(dot - path));
    if (!sub) {
        sub = json_object();
        if (!sub || json_object_setn_new(obj, path, (size_t)(dot - path), sub) != 0) {
            json_decref(v);
            return false;
        }
    }
    if (!json_is_object(sub)) {
        json_decref(v);
        return true; /* a value already holds this path: keep it */
    }
    return set_path(sub, dot + 1, v);
}

/* The row restricted to the columns (nested as in the document). */
static json_t *select_columns(const mdb_export_t *e, const json_t *row)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < e->ncols; i++) {
        const json_t *v = mdb_export_get(row, e->cols[i]);
        if (v && !set_path(out, e->cols[i], json_deep_copy(v))) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static bool put_json(mdb_export_t *e, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s)
        return false;
    bool ok = put(&e->buf, &e->len, &e->cap, s, strlen(s));
    free(s);
    return ok;
}

bool mdb_export_row(mdb_export_t *e, const json_t *row, mdb_error_t *err)
{
    if (e->format == MDB_EXPORT_CSV) {
        for (size_t i = 0; i < e->ncols; i++) {
            if ((i && !put(&e->buf, &e->len, &e->cap, ",", 1)) ||
                !mdb_export_csv_cell(mdb_export_get(row, e->cols[i]), &e->buf, &e->len, &e->cap))
                return oom(err);
        }
        if (!put(&e->buf, &e->len, &e->cap, "\r\n", 2))
            return oom(err);
    } else {
        json_t *sel = e->ncols ? select_columns(e, row) : json_incref((json_t *)row);
        bool ok = sel && (e->format != MDB_EXPORT_JSON || !e->rows || put(&e->buf, &e->len, &e->cap, ",", 1)) &&
                  (e->format != MDB_EXPORT_JSON || put(&e->buf, &e->len, &e->cap, "\n", 1)) && put_json(e, sel) &&
                  (e->format != MDB_EXPORT_NDJSON || put(&e->buf, &e->len, &e->cap, "\n", 1));
        json_decref(sel);
        if (!ok)
            return oom(err);
    }
    e->rows++;
    return maybe_flush(e, err);
}

bool mdb_export_end(mdb_export_t *e, mdb_error_t *err)
{
    if (e->format == MDB_EXPORT_JSON && !put(&e->buf, &e->len, &e->cap, e->rows ? "\n]\n" : "]\n", e->rows ? 3 : 2))
        return oom(err);
    return flush_out(e, err);
}

/* ------------------------------------------------------------------------ */
/* columns                                                                   */

static const char *const default_columns[MDB_QUERY_LEVEL_COUNT] = {
    "patient_id,study_date,accession_number,modalities,study_description,series_count,instance_count,collection_ids",
    ("study_id,series_number,modality,body_part_examined,slice_thickness,series_description,manufacturer,"
     "instance_count"),
    "series_id,study_id,instance_number,sop_class_uid,paths",
};

void mdb_export_columns_free(char **cols)
{
    for (size_t i = 0; cols && cols[i]; i++)
        free(cols[i]);
    free(cols);
}

bool mdb_export_columns_for(mdb_query_t *q, char ***out, size_t *n, mdb_error_t *err)
{
    *out = NULL;
    *n = 0;
    mdb_query_level_t level;
    bool is_level = mdb_query_level_parse(mdb_query_collection(q), &level);
    if (bson_empty(mdb_query_projection(q))) {
        if (!is_level) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "a CSV export of %s needs a projection naming its columns",
                          mdb_query_collection(q));
            return false;
        }
        if (!mdb_query_set_fields(q, default_columns[level], err))
            return false;
    }
    const bson_t *proj = mdb_query_projection(q);
    size_t cap = (size_t)bson_count_keys(proj) + 2;
    char **cols = calloc(cap, sizeof *cols);
    bson_iter_t it;
    if (!cols)
        return oom(err);
    cols[(*n)++] = strdup("_id");
    if (bson_iter_init(&it, proj)) {
        while (bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (!strcmp(k, "_id") || !bson_iter_as_bool(&it))
                continue;
            cols[(*n)++] = strdup(k);
        }
    }
    for (size_t i = 0; i < *n; i++) {
        if (!cols[i]) {
            mdb_export_columns_free(cols);
            *n = 0;
            return oom(err);
        }
    }
    *out = cols;
    return true;
}

/* ------------------------------------------------------------------------ */
/* running                                                                   */

static bool write_row(json_t *row, void *ud, mdb_error_t *err)
{
    return mdb_export_row(ud, row, err);
}

bool mdb_export_run(mdb_mongo_t *m, mdb_query_t *q, mdb_export_format_t f, int64_t time_ms, int64_t max_rows,
                    mdb_export_sink_fn sink, void *ud, int64_t *rows, mdb_error_t *err)
{
    char **cols = NULL;
    size_t ncols = 0;
    mdb_export_t *e = NULL;
    bool ok = false;
    if (rows)
        *rows = 0;
    if ((f == MDB_EXPORT_CSV || !bson_empty(mdb_query_projection(q))) && !mdb_export_columns_for(q, &cols, &ncols, err))
        return false;
    e = mdb_export_new(f, (const char *const *)cols, ncols, sink, ud, err);
    if (!e)
        goto done;
    ok = mdb_export_begin(e, err) && mdb_query_foreach(m, q, time_ms, max_rows, write_row, e, err) &&
         mdb_export_end(e, err);
    if (rows)
        *rows = mdb_export_rows(e);
done:
    mdb_export_destroy(e);
    mdb_export_columns_free(cols);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* the manifest                                                              */

const char *const mdb_export_manifest_columns[5] = {"path", "sop_instance_uid", "series_instance_uid",
                                                    "study_instance_uid", "size"};

mdb_query_t *mdb_export_manifest_query(const mdb_query_t *q, mdb_error_t *err)
{
    mdb_query_t *iq = mdb_query_descend(q, MDB_QUERY_INSTANCES, err);
    if (!iq)
        return NULL;
    if (!mdb_query_set_fields(iq, "paths,series_id,study_id", err) || !mdb_query_project_path(iq, "file.size", err)) {
        mdb_query_destroy(iq);
        return NULL;
    }
    return iq;
}

typedef struct {
    mdb_export_t *e;
    int64_t files, bytes;
} manifest_acc_t;

/* One instance → one manifest line per path. */
static bool manifest_row(json_t *row, void *ud, mdb_error_t *err)
{
    manifest_acc_t *a = ud;
    const json_t *paths = json_object_get(row, "paths");
    const json_t *size = mdb_export_get(row, "file.size");
    size_t i;
    json_t *p;
    json_array_foreach(paths, i, p)
    {
        if (!json_is_string(p))
            continue;
        json_t *line = json_pack(
            "{s:O, s:O, s:O, s:O, s:O}", "path", p, "sop_instance_uid", json_object_get(row, "_id"),
            "series_instance_uid", json_object_get(row, "series_id") ? json_object_get(row, "series_id") : json_null(),
            "study_instance_uid", json_object_get(row, "study_id") ? json_object_get(row, "study_id") : json_null(),
            "size", json_is_integer(size) ? (json_t *)size : json_null());
        if (!line)
            return oom(err);
        bool ok = mdb_export_row(a->e, line, err);
        json_decref(line);
        if (!ok)
            return false;
        a->files++;
        if (json_is_integer(size))
            a->bytes += json_integer_value(size);
    }
    return true;
}

bool mdb_export_manifest_run(mdb_mongo_t *m, const mdb_query_t *iq, mdb_export_format_t f, int64_t time_ms,
                             mdb_export_sink_fn sink, void *ud, int64_t *files, int64_t *bytes, mdb_error_t *err)
{
    manifest_acc_t acc = {0};
    acc.e = mdb_export_new(f, mdb_export_manifest_columns, 5, sink, ud, err);
    if (!acc.e)
        return false;
    bool ok = mdb_export_begin(acc.e, err) && mdb_query_foreach(m, iq, time_ms, 0, manifest_row, &acc, err) &&
              mdb_export_end(acc.e, err);
    if (files)
        *files = acc.files;
    if (bytes)
        *bytes = acc.bytes;
    mdb_export_destroy(acc.e);
    return ok;
}

/* ---- sidecar ---- */

static bool keep_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    (void)err;
    json_t **out = ud;
    if (!*out)
        *out = mdb_query_bson_to_json(doc);
    return true;
}

/* files, bytes, distinct studies and series of the instances matching
 * filter: one aggregation. */
static json_t *cohort_totals(mdb_mongo_t *m, const bson_t *filter, int64_t time_ms, mdb_error_t *err)
{
    json_t *out = NULL;
    bson_t *pipeline = BCON_NEW(
        "pipeline", "[", "{", "$match", BCON_DOCUMENT(filter), "}", "{", "$group", "{", "_id", BCON_NULL, "instances",
        "{", "$sum", BCON_INT32(1), "}", "files", "{", "$sum", "{", "$size", "{", "$ifNull", "[", "$paths", "[", "]",
        "]", "}", "}", "}", "bytes", "{", "$sum", "{", "$multiply", "[", "{", "$ifNull", "[", "$file.size",
        BCON_INT32(0), "]", "}", "{", "$size", "{", "$ifNull", "[", "$paths", "[", "]", "]", "}", "}", "]", "}", "}",
        "studies", "{", "$addToSet", "$study_id", "}", "series", "{", "$addToSet", "$series_id", "}", "}", "}", "{",
        "$project", "{", "_id", BCON_INT32(0), "instances", BCON_INT32(1), "files", BCON_INT32(1), "bytes",
        BCON_INT32(1), "studies", "{", "$size", "$studies", "}", "series", "{", "$size", "$series", "}", "}", "}", "]");
    bson_t *opts = time_ms > 0 ? BCON_NEW("maxTimeMS", BCON_INT64(time_ms)) : bson_new();
    bool ok = mdb_ops_aggregate(m, "instances", pipeline, opts, keep_doc, &out, err);
    bson_destroy(pipeline);
    bson_destroy(opts);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    if (!out)
        out = json_pack("{s:i, s:i, s:i, s:i, s:i}", "instances", 0, "files", 0, "bytes", 0, "studies", 0, "series", 0);
    return out;
}

/* The catalogue's size and last change, for the sidecar. */
static json_t *catalogue_state(mdb_mongo_t *m, int64_t time_ms, mdb_error_t *err)
{
    static const char *const colls[] = {"studies", "series", "instances"};
    json_t *out = json_object();
    bson_t *opts = time_ms > 0 ? BCON_NEW("maxTimeMS", BCON_INT64(time_ms)) : bson_new();
    bool ok = out != NULL;
    for (size_t i = 0; ok && i < 3; i++) {
        int64_t n = 0;
        ok = mdb_ops_count(m, colls[i], NULL, opts, &n, err);
        if (ok)
            json_object_set_new(out, colls[i], json_integer(n));
    }
    if (ok) {
        bson_t *fo = BCON_NEW("sort", "{", "updated_at", BCON_INT32(-1), "}", "projection", "{", "updated_at",
                              BCON_INT32(1), "}", "limit", BCON_INT64(1));
        if (time_ms > 0)
            BSON_APPEND_INT64(fo, "maxTimeMS", time_ms);
        json_t *last = NULL;
        for (size_t i = 0; ok && i < 3; i++) {
            json_t *doc = NULL;
            ok = mdb_ops_find(m, colls[i], NULL, fo, keep_doc, &doc, err);
            const char *t = doc ? json_string_value(json_object_get(doc, "updated_at")) : NULL;
            if (t && (!last || strcmp(t, json_string_value(last)) > 0)) {
                json_decref(last);
                last = json_string(t);
            }
            json_decref(doc);
        }
        json_object_set_new(out, "last_update", last ? last : json_null());
        bson_destroy(fo);
    }
    bson_destroy(opts);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *mdb_export_sidecar(mdb_mongo_t *m, const mdb_query_t *q, const json_t *parameters, int64_t time_ms,
                           mdb_error_t *err)
{
    json_t *out = NULL, *raw = NULL, *totals = NULL, *cat = NULL;
    mdb_query_t *iq = NULL;
    bson_t filter = BSON_INITIALIZER;
    bool empty = false;
    int64_t rows = 0;
    char now[40];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);

    if (!(raw = mdb_query_raw_json(q, err)))
        goto done;
    json_object_del(raw, "limit");
    json_object_del(raw, "skip");
    if (!mdb_query_count(m, q, time_ms, &rows, err))
        goto done;
    if (!(iq = mdb_query_descend(q, MDB_QUERY_INSTANCES, err)))
        goto done;
    bson_destroy(&filter);
    if (!mdb_query_effective_filter(m, iq, time_ms, &filter, &empty, err))
        goto done;
    totals = empty ? json_pack("{s:i, s:i, s:i, s:i, s:i}", "instances", 0, "files", 0, "bytes", 0, "studies", 0,
                               "series", 0)
                   : cohort_totals(m, &filter, time_ms, err);
    if (!totals || !(cat = catalogue_state(m, time_ms, err)))
        goto done;
    json_object_set_new(totals, "rows", json_integer(rows));
    out = json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:O, s:O}", "kind", "metadb cohort", "metadb_version", MDB_VERSION,
                    "generated_at", now, "level", mdb_query_collection(q), "parameters",
                    parameters ? (json_t *)parameters : json_null(), "query", raw, "counts", totals, "catalogue", cat);
    if (!out)
        oom(err);
done:
    bson_destroy(&filter);
    mdb_query_destroy(iq);
    json_decref(raw);
    json_decref(totals);
    json_decref(cat);
    return out;
}
