/* mdb_dump: canonical, byte-comparable text of the catalogue documents
 * (format in mdb_dump.h). Streams each collection sorted by _id from one
 * cursor, canonicalises each document and writes it as one line. */
#include "mdb_dump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_docs.h"

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
        static const char *const keep[] = {"state",           "collection",    "feature_set",
                                           "files_total",     "files_done",    "files_failed",
                                           "instances_linked", "producer_errors"};
        for (size_t i = 0; out && i < sizeof keep / sizeof keep[0]; i++) {
            json_t *v = json_object_get(doc, keep[i]);
            if (v)
                json_object_set(out, keep[i], v);
        }
        if (out)
            json_object_set_new(out, "errors", json_integer((json_int_t)json_array_size(json_object_get(doc, "errors"))));
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

static bool count_docs(mdb_mongo_t *m, const char *coll, int64_t *n, mdb_error_t *err)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "count %s: no database client", coll);
        return false;
    }
    mongoc_collection_t *c = mdb_mongo_collection(m, client, coll);
    bson_t filter = BSON_INITIALIZER;
    bson_error_t be;
    *n = mongoc_collection_count_documents(c, &filter, NULL, NULL, NULL, &be);
    mdb_mongo_count_round_trip(m);
    bool ok = *n >= 0;
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "count %s: %s", coll, be.message);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    mdb_mongo_push(m, client);
    return ok;
}

/* Write one collection sorted by _id, streaming from one cursor. */
static bool dump_sorted(mdb_mongo_t *m, FILE *out, const char *coll, size_t *ndocs, mdb_error_t *err)
{
    int64_t total = 0;
    if (!count_docs(m, coll, &total, err))
        return false;
    json_t *hdr = json_pack("{s:s, s:I}", "section", coll, "count", (json_int_t)total);
    bool ok = hdr && write_line(out, hdr);
    json_decref(hdr);
    if (!ok) {
        mdb_error_set(err, MDB_ERR_IO, errno, "dump %s: write failed", coll);
        return false;
    }
    mongoc_client_t *client = mdb_mongo_pop(m);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "dump %s: no database client", coll);
        return false;
    }
    mongoc_collection_t *c = mdb_mongo_collection(m, client, coll);
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    mdb_mongo_count_round_trip(m);
    const bson_t *doc;
    bson_error_t be;
    int64_t written = 0;
    while (ok && mongoc_cursor_next(cur, &doc)) {
        json_t *j = mdb_docs_bson_to_json(doc);
        json_t *canon = j ? mdb_dump_canonical(coll, j) : NULL;
        ok = canon && write_line(out, canon);
        if (!ok)
            mdb_error_set(err, MDB_ERR_IO, errno, "dump %s: write failed", coll);
        json_decref(canon);
        json_decref(j);
        written++;
    }
    if (ok && mongoc_cursor_error(cur, &be)) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "dump %s: %s", coll, be.message);
        ok = false;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(c);
    mdb_mongo_push(m, client);
    if (ok && written != total) {
        mdb_error_set(err, MDB_ERR_MONGO, EAGAIN, "dump %s: counted %lld documents but read %lld (changed meanwhile?)",
                      coll, (long long)total, (long long)written);
        ok = false;
    }
    if (ndocs)
        *ndocs += (size_t)written;
    return ok;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Jobs: canonical lines sorted as text (their _ids differ between runs). */
static bool dump_jobs(mdb_mongo_t *m, FILE *out, size_t *ndocs, mdb_error_t *err)
{
    json_t *docs = json_array();
    bson_t filter = BSON_INITIALIZER;
    bool ok = docs && mdb_docs_find(m, "jobs", &filter, NULL, NULL, 0, docs, err);
    bson_destroy(&filter);
    size_t n = json_array_size(docs);
    char **lines = ok ? calloc(n + 1, sizeof *lines) : NULL;
    ok = ok && lines;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *c = mdb_dump_canonical("jobs", json_array_get(docs, i));
        lines[i] = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(c);
        ok = lines[i] != NULL;
    }
    if (ok) {
        qsort(lines, n, sizeof *lines, cmp_lines);
        json_t *hdr = json_pack("{s:s, s:I}", "section", "jobs", "count", (json_int_t)n);
        ok = hdr && write_line(out, hdr);
        json_decref(hdr);
        for (size_t i = 0; ok && i < n; i++)
            ok = fputs(lines[i], out) >= 0 && fputc('\n', out) != EOF;
        if (ndocs)
            *ndocs += n;
    }
    for (size_t i = 0; lines && i < n; i++)
        free(lines[i]);
    free(lines);
    json_decref(docs);
    if (!ok && err && !err->message[0])
        mdb_error_set(err, MDB_ERR_IO, errno, "dump jobs: write failed");
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
