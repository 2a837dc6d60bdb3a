/* bench_dbload: the two database baselines of bench/run.sh, measured on the
 * documents metadb itself would write for a list of DICOM files.
 *
 *   bench_dbload ceiling LIST [options]    the database's own ceiling: the
 *       final study/series/instance/job_files documents the linker writes,
 *       pre-built in memory, written with bulk commands (no Kafka, no
 *       extraction, no reads). --mode upsert (default): one update-with-upsert
 *       statement per document ($set + $setOnInsert created_at, exactly the
 *       linker's statement shape, one bulk write per --batch documents),
 *       new instances and job files inserted as the linker does; --mode insert: every
 *       document in plain insert commands of --batch documents.
 *   bench_dbload refshape LIST [options]   the reference pipeline's shape: per
 *       instance, in file order, an existence check (find by _id) of its
 *       study and of its series, a synchronous insert of each parent not
 *       found, then a synchronous insert of the instance document: one
 *       request per document, as the reference HTTP API did.
 *
 * The documents are the linker's: each file is extracted with the worker's
 * code (mdb_extract_fd_event), its event decoded as the linker decodes it,
 * and whole studies at a time (the instances topic is keyed by study) are
 * merged with mdb_docs_apply into a recording store, which yields exactly the
 * documents mdb_docs would write on an empty database. Only the database
 * writes are timed. Before each repeat the database is dropped and the
 * linker's indexes are created (untimed), so every repeat writes into the
 * same state the linker starts from.
 *
 * Options: --features DIR (conf), --uri URI, --db NAME (required; dropped at
 * the end unless --keep), --batch N (events per linker-like batch, 1000),
 * --repeats R (1), --limit N (first N files only), --mode upsert|insert,
 * --job-id ID, --collection NAME, --no-indexes (write without the linker's secondary
 * indexes: what they cost). Prints one JSON object: per-repeat seconds, the median,
 * instances/s at the median, round trips, document counts. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <mongoc/mongoc.h>

#include "mdb_find.h"
#include "mdb_docs.h"
#include "mdb_extract.h"
#include "mdb_features.h"
#include "mdb_indexes.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_msg.h"

#define MAX_REPEATS 32

typedef struct {
    const char *cmd, *list, *features, *uri, *db, *mode, *job_id, *collection;
    size_t batch, limit;
    int repeats;
    bool keep, no_indexes;
} opts_t;

/* One decoded instance event, as the linker holds it. */
typedef struct {
    mdb_instance_msg_t ev;
    json_t *dicom;
    char *feature_set;
    size_t order; /* position in LIST */
} item_t;

/* The documents of one linker-like batch (whole studies), as BSON. */
typedef struct {
    bson_t **v;
    size_t n, cap;
} docs_t;

typedef struct {
    docs_t instances, job_files, series, studies, conflicts;
    size_t events;
} group_t;

/* The recording store: what mdb_docs_apply writes into an empty database. */
typedef struct {
    json_t *inserted; /* instance documents of the current apply */
    json_t *written;  /* coll -> array of upserted documents */
    const char *now;
} recorder_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_dbload: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---- the recording store ---- */

static bool rec_load_none(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    (void)ud, (void)ids, (void)n, (void)out, (void)err;
    return true;
}

static bool rec_load_series(void *ud, const char *const *ids, size_t n, const char *const *study_ids, size_t ns,
                            json_t *out, mdb_error_t *err)
{
    (void)ud, (void)ids, (void)n, (void)study_ids, (void)ns, (void)out, (void)err;
    return true;
}

static bool rec_upsert(void *ud, const char *coll, const json_t *docs, const json_t *unset, const char *now,
                       mdb_error_t *err);

/* Instances are kept apart (they are the inserts); new series and studies,
 * which mdb_docs_apply inserts too, are written documents like upserted
 * ones (they carry their timestamps already). */
static bool rec_insert(void *ud, const char *coll, const json_t *docs, json_t *dups, mdb_error_t *err)
{
    recorder_t *r = ud;
    (void)dups;
    if (strcmp(coll, MDB_DOCS_INSTANCES)) {
        const char *now = json_string_value(json_object_get(json_array_get(docs, 0), "created_at"));
        return rec_upsert(ud, coll, docs, NULL, now ? now : "1970-01-01T00:00:00.000Z", err);
    }
    return json_array_extend(r->inserted, (json_t *)docs) == 0;
}

/* Counts over the instances inserted by this apply: a group holds whole
 * studies, so they are every instance of its series. */
static bool rec_count(void *ud, const char *const *series_ids, size_t n, const char *const *job_ids, size_t njobs,
                      json_t *counts, json_t *job_counts, mdb_error_t *err)
{
    recorder_t *r = ud;
    (void)err;
    for (size_t i = 0; i < n; i++)
        json_object_set_new(counts, series_ids[i], json_integer(0));
    for (size_t i = 0; job_counts && i < njobs; i++)
        json_object_set_new(job_counts, job_ids[i], json_integer(0));
    size_t i;
    json_t *d;
    json_array_foreach(r->inserted, i, d)
    {
        const char *sid = json_string_value(json_object_get(d, "series_id"));
        json_t *c = sid ? json_object_get(counts, sid) : NULL;
        if (c)
            json_integer_set(c, json_integer_value(c) + 1);
        size_t k;
        json_t *j;
        json_array_foreach(json_object_get(d, "job_ids"), k, j)
        {
            json_t *jc = job_counts ? json_object_get(job_counts, json_string_value(j)) : NULL;
            if (jc)
                json_integer_set(jc, json_integer_value(jc) + 1);
        }
    }
    return true;
}

/* Every document written is new on the empty database: nothing to unset. */
static bool rec_upsert(void *ud, const char *coll, const json_t *docs, const json_t *unset, const char *now,
                       mdb_error_t *err)
{
    recorder_t *r = ud;
    (void)err, (void)unset;
    json_t *arr = json_object_get(r->written, coll);
    if (!arr) {
        arr = json_array();
        json_object_set_new(r->written, coll, arr);
    }
    size_t i;
    json_t *d;
    json_array_foreach(docs, i, d)
    {
        /* what the linker's upsert leaves in a new document */
        json_t *c = json_deep_copy(d);
        json_object_set_new(c, "created_at", json_string(now));
        json_object_set_new(c, "updated_at", json_string(now));
        json_array_append_new(arr, c);
    }
    return true;
}

/* ---- preparing the documents ---- */

static char **read_list(const char *path, size_t limit, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die("%s: %s", path, strerror(errno));
    char **v = NULL, *line = NULL;
    size_t cap = 0, lcap = 0;
    ssize_t len;
    *n = 0;
    while ((len = getline(&line, &lcap, f)) > 0 && (!limit || *n < limit)) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!len)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            v = realloc(v, cap * sizeof *v);
            if (!v)
                die("out of memory");
        }
        v[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return v;
}

/* Extract every file as the worker does and decode the event as the linker
 * does. Files that fail are reported and skipped (the count says so). */
static item_t *extract_all(char **paths, size_t n, const opts_t *o, size_t *nitems, size_t *failed)
{
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_load(o->features, "default", NULL, &err);
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    if (!fs || !ctx)
        die("features %s: %s", o->features, err.message);
    item_t *items = calloc(n ? n : 1, sizeof *items);
    *nitems = *failed = 0;
    for (size_t i = 0; i < n; i++) {
        const char *event = NULL, *key = NULL;
        size_t len = 0;
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        item_t *it = &items[*nitems];
        bool ok = fd >= 0 &&
                  mdb_extract_fd_event(ctx, fs, fd, NULL, o->job_id, paths[i], mdb_features_name(fs), &event, &len,
                                       &key, &err) &&
                  mdb_msg_instance_decode(event, len, 64u << 20, &it->ev, &err);
        if (fd >= 0)
            close(fd);
        if (!ok) {
            fprintf(stderr, "bench_dbload: %s: %s\n", paths[i], fd < 0 ? strerror(errno) : err.message);
            (*failed)++;
            continue;
        }
        json_t *root = json_loadb(event, len, 0, NULL);
        json_t *d = json_object_get(root, "dicom");
        it->dicom = json_is_object(d) ? json_incref(d) : NULL;
        const char *fsn = json_string_value(json_object_get(root, "feature_set"));
        it->feature_set = fsn ? strdup(fsn) : NULL;
        it->order = i;
        json_decref(root);
        (*nitems)++;
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
    return items;
}

static int cmp_study(const void *a, const void *b)
{
    const item_t *x = a, *y = b;
    int c = strcmp(mdb_msg_instance_study_uid(&x->ev), mdb_msg_instance_study_uid(&y->ev));
    return c ? c : (x->order > y->order) - (x->order < y->order);
}

static void docs_push_json(docs_t *d, const json_t *doc)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->v = realloc(d->v, d->cap * sizeof *d->v);
        if (!d->v)
            die("out of memory");
    }
    bson_t *b = bson_new();
    if (!mdb_docs_json_to_bson(doc, b))
        die("a document has no BSON form");
    d->v[d->n++] = b;
}

static void docs_push_all(docs_t *d, const json_t *arr)
{
    size_t i;
    json_t *doc;
    json_array_foreach(arr, i, doc) docs_push_json(d, doc);
}

static void docs_clear(docs_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        bson_destroy(d->v[i]);
    free(d->v);
    memset(d, 0, sizeof *d);
}

/* The documents of items[0..n) (whole studies) as the linker writes them. */
static void build_group(item_t *items, size_t n, const opts_t *o, const char *now, group_t *g)
{
    recorder_t rec = {json_array(), json_object(), now};
    mdb_store_t st = {.ud = &rec,
                      .load_studies = rec_load_none,
                      .load_series = rec_load_series,
                      .load_conflicts = rec_load_none,
                      .load_instances = rec_load_none,
                      .insert = rec_insert,
                      .count_instances = rec_count,
                      .upsert = rec_upsert};
    mdb_docs_model_t *model = mdb_docs_model_new();
    mdb_error_t err = {0};
    for (size_t i = 0; i < n; i++) {
        item_t *it = &items[i];
        json_t *file =
            json_pack("{s:I, s:I}", "size", (json_int_t)it->ev.file_size, "mtime", (json_int_t)it->ev.file_mtime);
        mdb_docs_event_t ev = {.job_id = it->ev.job_id,
                               .path = it->ev.path,
                               .collection = o->collection,
                               .feature_set = it->feature_set,
                               .study = it->ev.study,
                               .series = it->ev.series,
                               .instance = it->ev.instance,
                               .file = file,
                               .dicom = it->dicom};
        if (!mdb_docs_model_add_event(model, &ev, &err))
            die("%s: %s", it->ev.path, err.message);
        json_decref(file);
        /* the linker's job_files document of this file */
        size_t len = strlen(it->ev.job_id) + strlen(it->ev.path) + 2;
        char *id = malloc(len);
        snprintf(id, len, "%s\n%s", it->ev.job_id, it->ev.path);
        json_t *jf =
            json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s}", "_id", id, "job_id", it->ev.job_id, "path", it->ev.path,
                      "status", "done", "sop_instance_uid", mdb_msg_instance_sop_uid(&it->ev), "updated_at", now);
        docs_push_json(&g->job_files, jf);
        json_decref(jf);
        free(id);
    }
    if (!mdb_docs_apply(model, &st, now, NULL, &err))
        die("merging documents: %s", err.message);
    docs_push_all(&g->instances, rec.inserted);
    docs_push_all(&g->series, json_object_get(rec.written, MDB_DOCS_SERIES));
    docs_push_all(&g->studies, json_object_get(rec.written, MDB_DOCS_STUDIES));
    docs_push_all(&g->conflicts, json_object_get(rec.written, MDB_DOCS_CONFLICTS));
    g->events = n;
    mdb_docs_model_destroy(model);
    json_decref(rec.inserted);
    json_decref(rec.written);
}

/* Groups of whole studies of about o->batch events each (a larger study is
 * a group of its own), as the linker's batches are on a study-keyed topic. */
static group_t *build_groups(item_t *items, size_t n, const opts_t *o, size_t *ngroups)
{
    char now[40];
    mdb_msg_now_iso(now, sizeof now);
    qsort(items, n, sizeof *items, cmp_study);
    group_t *groups = calloc(n ? n : 1, sizeof *groups);
    *ngroups = 0;
    size_t start = 0;
    while (start < n) {
        size_t end = start;
        while (end < n) {
            size_t s = end;
            const char *uid = mdb_msg_instance_study_uid(&items[s].ev);
            while (end < n && !strcmp(mdb_msg_instance_study_uid(&items[end].ev), uid))
                end++;
            if (end - start >= o->batch)
                break;
        }
        build_group(items + start, end - start, o, now, &groups[(*ngroups)++]);
        start = end;
    }
    return groups;
}

/* ---- writing ---- */

typedef bool (*add_fn)(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err);

static bool add_insert(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err)
{
    return mdb_bulk_insert_one(b, doc, err);
}

/* The linker's statement: {_id} {$set: every field but _id/created_at,
 * $setOnInsert: {created_at}}. */
static bool add_upsert(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, soi;
    bson_iter_t it;
    bool ok = true;
    bson_append_document_begin(&upd, "$set", -1, &set);
    if (bson_iter_init(&it, doc))
        while (bson_iter_next(&it)) {
            const char *k = bson_iter_key(&it);
            if (!strcmp(k, "_id"))
                ok = ok && bson_append_iter(&sel, "_id", -1, &it);
            else if (strcmp(k, "created_at"))
                ok = ok && bson_append_iter(&set, k, -1, &it);
        }
    bson_append_document_end(&upd, &set);
    bson_append_document_begin(&upd, "$setOnInsert", -1, &soi);
    if (bson_iter_init_find(&it, doc, "created_at"))
        ok = ok && bson_append_iter(&soi, "created_at", -1, &it);
    bson_append_document_end(&upd, &soi);
    ok = ok && mdb_bulk_upsert(b, &sel, &upd, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* Write docs to coll in bulk writes of at most batch documents. */
static bool write_docs(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, const docs_t *d, size_t batch,
                       add_fn add, mdb_error_t *err)
{
    for (size_t start = 0; start < d->n; start += batch) {
        size_t end = start + batch < d->n ? start + batch : d->n;
        mdb_bulk_t *b = mdb_bulk_new(m, client, coll, "1");
        bool ok = b != NULL;
        for (size_t i = start; ok && i < end; i++)
            ok = add(b, d->v[i], err);
        ok = ok && mdb_bulk_execute(b, NULL, err);
        mdb_bulk_destroy(b);
        if (!ok)
            return false;
    }
    return true;
}

/* The job's counters, as the linker sets them after each batch. */
static bool write_job(mdb_mongo_t *m, mongoc_client_t *client, const opts_t *o, size_t done, mdb_error_t *err)
{
    mdb_bulk_t *b = mdb_bulk_new(m, client, MDB_JOBS_COLL, "1");
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(o->job_id));
    bson_t *upd = BCON_NEW("$set", "{", "files_done", BCON_INT64((int64_t)done), "instances_linked",
                           BCON_INT64((int64_t)done), "state", BCON_UTF8("running"), "}");
    bool ok = b && mdb_bulk_upsert(b, sel, upd, err) && mdb_bulk_execute(b, NULL, err);
    bson_destroy(sel);
    bson_destroy(upd);
    mdb_bulk_destroy(b);
    return ok;
}

static bool reset_db(mdb_mongo_t *m, bool indexes, mdb_error_t *err)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    mongoc_database_t *db = mongoc_client_get_database(client, mdb_mongo_db_name(m));
    bson_error_t be;
    bool ok = mongoc_database_drop(db, &be) || be.code == 26 /* NamespaceNotFound */;
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "dropping %s: %s", mdb_mongo_db_name(m), be.message);
    mongoc_database_destroy(db);
    mdb_mongo_push(m, client);
    return ok && (!indexes || mdb_indexes_ensure(m, err));
}

static bool run_ceiling(mdb_mongo_t *m, const group_t *g, size_t ng, const opts_t *o, mdb_error_t *err)
{
    bool upsert = !strcmp(o->mode, "upsert");
    add_fn parent = upsert ? add_upsert : add_insert;
    mongoc_client_t *client = mdb_mongo_pop(m);
    bool ok = true;
    size_t done = 0;
    for (size_t i = 0; ok && i < ng; i++) {
        /* new instances and job files are inserts for the linker too */
        ok = write_docs(m, client, MDB_DOCS_INSTANCES, &g[i].instances, o->batch, add_insert, err) &&
             write_docs(m, client, MDB_JOB_FILES_COLL, &g[i].job_files, o->batch, add_insert, err) &&
             write_docs(m, client, MDB_DOCS_SERIES, &g[i].series, o->batch, parent, err) &&
             write_docs(m, client, MDB_DOCS_STUDIES, &g[i].studies, o->batch, parent, err) &&
             write_docs(m, client, MDB_DOCS_CONFLICTS, &g[i].conflicts, o->batch, parent, err);
        done += g[i].events;
        ok = ok && write_job(m, client, o, done, err);
    }
    mdb_mongo_push(m, client);
    return ok;
}

/* ---- the reference shape ---- */

static bool exists(mongoc_collection_t *c, const char *id, mdb_mongo_t *m, bool *found, mdb_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1), "projection", "{", "_id", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t be;
    mdb_mongo_count_round_trip(m);
    *found = false;
    while (mongoc_cursor_next(cur, &doc)) /* read to the end: the cursor is closed, not left to time out */
        *found = true;
    bool ok = !mongoc_cursor_error(cur, &be);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "find %s: %s", id, be.message);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    bson_destroy(opts);
    return ok;
}

static bool insert_one(mongoc_collection_t *c, const bson_t *doc, mdb_mongo_t *m, mdb_error_t *err)
{
    bson_error_t be;
    mdb_mongo_count_round_trip(m);
    if (mongoc_collection_insert_one(c, doc, NULL, NULL, &be))
        return true;
    mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "insert: %s", be.message);
    return false;
}

static const char *doc_id(const bson_t *d)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, d, "_id") && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
}

static const char *doc_str(const bson_t *d, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : "";
}

/* instances in LIST order: (group, index) pairs */
typedef struct {
    size_t order, g, i;
} slot_t;

static int cmp_slot(const void *a, const void *b)
{
    const slot_t *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

static bool run_refshape(mdb_mongo_t *m, const group_t *g, size_t ng, const slot_t *slots, size_t nslots,
                         mdb_error_t *err)
{
    json_t *studies = json_object(), *series = json_object(); /* uid -> "g i" of its document */
    for (size_t k = 0; k < ng; k++) {
        for (size_t i = 0; i < g[k].studies.n; i++)
            json_object_set_new(studies, doc_id(g[k].studies.v[i]), json_pack("[I,I]", (json_int_t)k, (json_int_t)i));
        for (size_t i = 0; i < g[k].series.n; i++)
            json_object_set_new(series, doc_id(g[k].series.v[i]), json_pack("[I,I]", (json_int_t)k, (json_int_t)i));
    }
    mongoc_client_t *client = mdb_mongo_pop(m);
    mongoc_collection_t *cst = mdb_mongo_collection(m, client, MDB_DOCS_STUDIES);
    mongoc_collection_t *cse = mdb_mongo_collection(m, client, MDB_DOCS_SERIES);
    mongoc_collection_t *cin = mdb_mongo_collection(m, client, MDB_DOCS_INSTANCES);
    bool ok = true;
    for (size_t s = 0; ok && s < nslots; s++) {
        const bson_t *inst = g[slots[s].g].instances.v[slots[s].i];
        const char *parents[2] = {doc_str(inst, "study_id"), doc_str(inst, "series_id")};
        json_t *maps[2] = {studies, series};
        mongoc_collection_t *colls[2] = {cst, cse};
        for (int p = 0; ok && p < 2; p++) {
            bool found = false;
            json_t *where = json_object_get(maps[p], parents[p]);
            ok = exists(colls[p], parents[p], m, &found, err);
            if (ok && !found && where) {
                const group_t *gg = &g[json_integer_value(json_array_get(where, 0))];
                const docs_t *d = p == 0 ? &gg->studies : &gg->series;
                ok = insert_one(colls[p], d->v[json_integer_value(json_array_get(where, 1))], m, err);
            }
        }
        ok = ok && insert_one(cin, inst, m, err);
    }
    mongoc_collection_destroy(cst);
    mongoc_collection_destroy(cse);
    mongoc_collection_destroy(cin);
    mdb_mongo_push(m, client);
    json_decref(studies);
    json_decref(series);
    return ok;
}

/* ---- main ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void parse_opts(int argc, char **argv, opts_t *o)
{
    *o = (opts_t){.features = "conf",
                  .uri = "mongodb://127.0.0.1:27017",
                  .mode = "upsert",
                  .job_id = "bench-job",
                  .collection = "BENCH",
                  .batch = 1000,
                  .repeats = 1};
    if (argc < 3 || (strcmp(argv[1], "ceiling") && strcmp(argv[1], "refshape")))
        die("usage: bench_dbload ceiling|refshape LIST --db NAME [--features DIR] [--uri URI] [--batch N] "
            "[--repeats R] [--limit N] [--mode upsert|insert] [--job-id ID] [--collection C] "
            "[--keep] [--no-indexes]");
    o->cmd = argv[1];
    o->list = argv[2];
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--keep") || !strcmp(a, "--no-indexes")) {
            *(!strcmp(a, "--keep") ? &o->keep : &o->no_indexes) = true;
            continue;
        }
        if (!v)
            die("%s needs a value", a);
        i++;
        if (!strcmp(a, "--features"))
            o->features = v;
        else if (!strcmp(a, "--uri"))
            o->uri = v;
        else if (!strcmp(a, "--db"))
            o->db = v;
        else if (!strcmp(a, "--mode") && (!strcmp(v, "upsert") || !strcmp(v, "insert")))
            o->mode = v;
        else if (!strcmp(a, "--job-id"))
            o->job_id = v;
        else if (!strcmp(a, "--collection"))
            o->collection = v;
        else if (!strcmp(a, "--batch") && atol(v) > 0)
            o->batch = (size_t)atol(v);
        else if (!strcmp(a, "--limit") && atol(v) >= 0)
            o->limit = (size_t)atol(v);
        else if (!strcmp(a, "--repeats") && atoi(v) > 0 && atoi(v) <= MAX_REPEATS)
            o->repeats = atoi(v);
        else
            die("bad option %s %s", a, v);
    }
    if (!o->db || !*o->db)
        die("--db NAME is required (a private database: it is dropped)");
}

int main(int argc, char **argv)
{
    opts_t o;
    parse_opts(argc, argv, &o);
    mdb_log_init("bench", "warn", "plain");
    mongoc_init();
    mdb_log_route_mongoc();
    size_t npaths = 0, nitems = 0, failed = 0, ngroups = 0;
    char **paths = read_list(o.list, o.limit, &npaths);
    double t0 = now_s();
    item_t *items = extract_all(paths, npaths, &o, &nitems, &failed);
    group_t *groups = build_groups(items, nitems, &o, &ngroups);
    double prep = now_s() - t0;
    size_t ninst = 0, nseries = 0, nstudies = 0, nconf = 0;
    slot_t *slots = malloc((nitems + 1) * sizeof *slots);
    size_t nslots = 0;
    for (size_t k = 0; k < ngroups; k++) {
        ninst += groups[k].instances.n;
        nseries += groups[k].series.n;
        nstudies += groups[k].studies.n;
        nconf += groups[k].conflicts.n;
    }
    /* the linker's documents, all of them: a baseline without its series and
     * studies would be cheaper than what the linker writes */
    if (ninst > 0 && (nseries == 0 || nstudies == 0))
        die("recorded %zu instance(s) but %zu series and %zu studies: the recording store misses writes", ninst,
            nseries, nstudies);
    /* instance documents back in LIST order for the reference shape (a
     * group's instance docs follow its events' study-sorted order only
     * loosely, so match them by path) */
    json_t *by_path = json_object();
    for (size_t i = 0; i < nitems; i++)
        json_object_set_new(by_path, items[i].ev.path, json_integer((json_int_t)items[i].order));
    for (size_t k = 0; k < ngroups; k++)
        for (size_t i = 0; i < groups[k].instances.n; i++) {
            bson_iter_t it, sub;
            json_int_t order = 0;
            if (bson_iter_init_find(&it, groups[k].instances.v[i], "paths") && BSON_ITER_HOLDS_ARRAY(&it) &&
                bson_iter_recurse(&it, &sub) && bson_iter_next(&sub) && BSON_ITER_HOLDS_UTF8(&sub))
                order = json_integer_value(json_object_get(by_path, bson_iter_utf8(&sub, NULL)));
            slots[nslots++] = (slot_t){(size_t)order, k, i};
        }
    qsort(slots, nslots, sizeof *slots, cmp_slot);
    json_decref(by_path);

    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(o.uri, o.db, 2, &err);
    if (!m || !mdb_mongo_wait_ready(m, 10000, &err))
        die("database: %s", err.message);
    double secs[MAX_REPEATS];
    uint64_t rts = 0;
    bool refshape = !strcmp(o.cmd, "refshape");
    for (int r = 0; r < o.repeats; r++) {
        if (!reset_db(m, !o.no_indexes, &err))
            die("preparing the database: %s", err.message);
        uint64_t rt0 = mdb_mongo_round_trips(m);
        double w0 = now_s();
        bool ok = refshape ? run_refshape(m, groups, ngroups, slots, nslots, &err)
                           : run_ceiling(m, groups, ngroups, &o, &err);
        secs[r] = now_s() - w0;
        rts = mdb_mongo_round_trips(m) - rt0;
        if (!ok)
            die("writing: %s", err.message);
    }
    double sorted[MAX_REPEATS];
    memcpy(sorted, secs, sizeof secs);
    qsort(sorted, (size_t)o.repeats, sizeof *sorted, cmp_double);
    double median = o.repeats % 2 ? sorted[o.repeats / 2] : (sorted[o.repeats / 2 - 1] + sorted[o.repeats / 2]) / 2;
    json_t *out =
        json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:I, s:f}", "bench", o.cmd, "mode",
                  refshape ? "per-document" : o.mode, "files", (json_int_t)npaths, "failed", (json_int_t)failed,
                  "instances", (json_int_t)ninst, "series", (json_int_t)nseries, "studies", (json_int_t)nstudies,
                  "conflicts", (json_int_t)nconf, "batch", (json_int_t)o.batch, "prepare_seconds", prep,
                  "median_seconds", median, "instances_per_s", median > 0 ? (double)ninst / median : 0.0, "round_trips",
                  (json_int_t)rts, "round_trips_per_instance", ninst ? (double)rts / (double)ninst : 0.0);
    json_t *arr = json_array();
    for (int r = 0; r < o.repeats; r++)
        json_array_append_new(arr, json_real(secs[r]));
    json_object_set_new(out, "seconds", arr);
    char *text = json_dumps(out, JSON_COMPACT);
    printf("%s\n", text);
    free(text);
    json_decref(out);

    if (!o.keep) {
        mongoc_client_t *client = mdb_mongo_pop(m);
        mongoc_database_t *db = mongoc_client_get_database(client, o.db);
        mongoc_database_drop(db, NULL);
        mongoc_database_destroy(db);
        mdb_mongo_push(m, client);
    }
    mdb_mongo_destroy(m);
    for (size_t k = 0; k < ngroups; k++) {
        docs_clear(&groups[k].instances);
        docs_clear(&groups[k].job_files);
        docs_clear(&groups[k].series);
        docs_clear(&groups[k].studies);
        docs_clear(&groups[k].conflicts);
    }
    free(groups);
    for (size_t i = 0; i < nitems; i++) {
        mdb_msg_instance_clear(&items[i].ev);
        json_decref(items[i].dicom);
        free(items[i].feature_set);
    }
    free(items);
    free(slots);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    free(paths);
    mongoc_cleanup();
    return 0;
}
