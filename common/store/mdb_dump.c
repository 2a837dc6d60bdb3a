/* mdb_dump: canonical, byte-comparable text of the catalogue documents
 * (format in mdb_dump.h). Streams each collection sorted by _id from one
 * find (mdb_ops), canonicalises each document and writes it as one line. */
#include "mdb_dump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_bson_json.h"
#include "mdb_docs.h"
#include "mdb_msg.h"
#include "mdb_ops.h"

static const char *const TIME_KEYS[] = {"created_at", "updated_at", "completed_at", "submitted_at", "running_at"};

static void strip_times(json_t *doc)
{
    for (size_t i = 0; i < sizeof TIME_KEYS / sizeof TIME_KEYS[0]; i++)
        json_object_del(doc, TIME_KEYS[i]);
}

static void sort_set(json_t *doc, const char *key)
{
    json_t *a = json_object_get(doc, key);
    if (json_is_array(a))
        mdb_docs_sort_strings(a);
}

json_t *mdb_dump_canonical(const char *coll, const json_t *doc)
{
    if (!strcmp(coll, "jobs")) {
        json_t *out = json_object();
        static const char *const keep[] = {"state",         "collection",       "feature_set",
                                           "files_total",   "files_done",       "files_failed",
                                           "files_flagged", "instances_linked", "producer_errors"};
        for (size_t i = 0; out && i < sizeof keep / sizeof keep[0]; i++) {
            json_t *v = json_object_get(doc, keep[i]);
            if (v)
                json_object_set(out, keep[i], v);
        }
        if (out)
            json_object_set_new(out, "errors",
                                json_integer((json_int_t)json_array_size(json_object_get(doc, "errors"))));
        return out;
    }
    json_t *out = json_deep_copy(doc);
    if (!out)
        return NULL;
    strip_times(out);
    json_object_del(out, "job_ids");
    /* the linker's counting tags name Kafka offsets, which differ between runs */
    json_object_del(out, "_ins");
    json_object_del(out, "_jl");
    json_object_del(out, "_lo");
    json_object_del(out, "_prev_series"); /* whether an instance moved depends on the arrival order */
    json_object_del(out, "_prev_study");
    sort_set(out, "paths");
    sort_set(out, "collection_ids");
    sort_set(out, "modalities");
    return out;
}

static bool write_line(FILE *out, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!s)
        return false;
    bool ok = fputs(s, out) >= 0 && fputc('\n', out) != EOF;
    free(s);
    return ok;
}

typedef struct {
    FILE *out;
    const char *coll;
    int64_t written;
} dump_ctx_t;

static bool dump_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    dump_ctx_t *dc = ud;
    json_t *j = mdb_docs_bson_to_json(doc);
    json_t *canon = j ? mdb_dump_canonical(dc->coll, j) : NULL;
    bool ok = canon && write_line(dc->out, canon);
    if (!ok)
        mdb_error_set(err, MDB_ERR_IO, errno, "dump %s: write failed", dc->coll);
    json_decref(canon);
    json_decref(j);
    dc->written++;
    return ok;
}

/* The collection's documents are the system's own: a refusal by the server
 * is a database error here, not a bad query. */
static void as_db_error(mdb_error_t *err)
{
    if (err && err->domain == MDB_ERR_QUERY)
        err->domain = MDB_ERR_MONGO;
}

/* Write one collection sorted by _id, streaming from one cursor. */
static bool dump_sorted(mdb_mongo_t *m, FILE *out, const char *coll, size_t *ndocs, mdb_error_t *err)
{
    int64_t total = 0;
    if (!mdb_ops_count(m, coll, NULL, NULL, &total, err)) {
        as_db_error(err);
        mdb_error_prefix(err, "dump");
        return false;
    }
    json_t *hdr = json_pack("{s:s, s:I}", "section", coll, "count", (json_int_t)total);
    bool ok = hdr && write_line(out, hdr);
    json_decref(hdr);
    if (!ok) {
        mdb_error_set(err, MDB_ERR_IO, errno, "dump %s: write failed", coll);
        return false;
    }
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    dump_ctx_t dc = {out, coll, 0};
    ok = mdb_ops_find(m, coll, NULL, opts, dump_doc, &dc, err);
    bson_destroy(opts);
    if (!ok && err && err->domain != MDB_ERR_IO) {
        as_db_error(err);
        mdb_error_prefix(err, "dump");
    }
    if (ok && dc.written != total) {
        mdb_error_set(err, MDB_ERR_MONGO, EAGAIN, "dump %s: counted %lld documents but read %lld (changed meanwhile?)",
                      coll, (long long)total, (long long)dc.written);
        ok = false;
    }
    if (ndocs)
        *ndocs += (size_t)dc.written;
    return ok;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Canonical text of one job document onto lines (a strv). */
static bool job_line(const bson_t *doc, void *ud, mdb_error_t *err)
{
    json_t *j = mdb_docs_bson_to_json(doc);
    json_t *c = j ? mdb_dump_canonical("jobs", j) : NULL;
    char *line = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    bool ok = line && mdb_strv_push((mdb_strv_t *)ud, line);
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "dump jobs: out of memory");
    free(line);
    json_decref(c);
    json_decref(j);
    return ok;
}

/* Jobs: canonical lines sorted as text (their _ids differ between runs). */
static bool dump_jobs(mdb_mongo_t *m, FILE *out, size_t *ndocs, mdb_error_t *err)
{
    mdb_strv_t lines = {0};
    bool ok = mdb_ops_find(m, "jobs", NULL, NULL, job_line, &lines, err);
    if (!ok && err && err->domain != MDB_ERR_SYSTEM) {
        as_db_error(err);
        mdb_error_prefix(err, "dump");
    }
    if (ok) {
        if (lines.n > 1)
            qsort(lines.v, lines.n, sizeof *lines.v, cmp_lines);
        json_t *hdr = json_pack("{s:s, s:I}", "section", "jobs", "count", (json_int_t)lines.n);
        ok = hdr && write_line(out, hdr);
        json_decref(hdr);
        for (size_t i = 0; ok && i < lines.n; i++)
            ok = fputs(lines.v[i], out) >= 0 && fputc('\n', out) != EOF;
        if (!ok)
            mdb_error_set(err, MDB_ERR_IO, errno, "dump jobs: write failed");
        if (ndocs)
            *ndocs += lines.n;
    }
    mdb_strv_clear(&lines);
    return ok;
}

bool mdb_dump_write(mdb_mongo_t *m, FILE *out, size_t *ndocs, mdb_error_t *err)
{
    static const char *const colls[] = {MDB_DOCS_STUDIES, MDB_DOCS_SERIES, MDB_DOCS_INSTANCES, MDB_DOCS_CONFLICTS};
    if (ndocs)
        *ndocs = 0;
    for (size_t i = 0; i < sizeof colls / sizeof colls[0]; i++)
        if (!dump_sorted(m, out, colls[i], ndocs, err))
            return false;
    if (!dump_jobs(m, out, ndocs, err))
        return false;
    if (fflush(out) != 0) {
        mdb_error_set(err, MDB_ERR_IO, errno, "dump: write failed: %s", strerror(errno));
        return false;
    }
    return true;
}
