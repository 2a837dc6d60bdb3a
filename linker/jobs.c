/* Job progress as the linker sees it. Every file outcome of a batch is a
 * job_files document {_id: job_id "\n" path, job_id, path, status
 * done|failed, ...}: inserted if new, and a failed file that later
 * succeeds becomes done (done always wins, so order does not matter).
 *
 * Counting without recounting. Each change of a job_files document is
 * counted once, by the linker that owns the partition of the record that
 * made it, in that job's progress document for the partition
 * (job_progress {_id: job "\n" "topic:partition"}, $inc, one writer at a
 * time because a partition has one owner; the $inc applies only while the
 * document's offset o is below the batch's, so a batch written twice counts
 * once: write_progress). A job's counters are the sums of
 * its progress documents. Redelivery is decided exactly by origin tags:
 * a job_files document remembers the record that inserted it (_fi {t, o, s})
 * and the one that turned it done (_fd {t, o}); a progress document
 * remembers the highest offset it counted (o). A record of this batch that
 * finds its own tag on a document with an offset above o belongs to a batch
 * that died after writing the document and before counting it: counted now.
 * instances_linked comes the same way from mdb_docs_apply (link deltas).
 *
 * files_flagged counts the done files whose event carried an "integrity"
 * object (catalogued, but damaged: mdb_extract.h): the job_files document
 * gets flagged: true from the record that makes it done (its insert, or
 * the failed -> done update), and is counted with files_done by the same
 * rules, so it is exact under redelivery as well.
 *
 * Counters are only written while the job is not final, so a slower linker
 * finishing an older batch cannot overwrite the final numbers. errors[]
 * gets the batch's DLQ reasons ($addToSet, so a redelivered record is not
 * added twice), capped at MDB_JOBS_MAX_ERRORS. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "linker.h"
#include "mdb_find.h"
#include "mdb_jobs.h"
#include "mdb_log.h"

bool linker_jobs_load(linker_t *L, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    bson_t *proj = BCON_NEW("collection", BCON_INT32(1), "producer_errors", BCON_INT32(1), "errors", BCON_INT32(1),
                            "state", BCON_INT32(1));
    json_t *docs = json_array();
    mdb_docs_append_in(&filter, "_id", ids, n);
    bool ok = docs && mdb_docs_find(L->mongo, MDB_JOBS_COLL, &filter, proj, NULL, 0, docs, err);
    for (size_t i = 0; ok && i < json_array_size(docs); i++) {
        json_t *d = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (!id)
            continue;
        json_t *e =
            json_pack("{s:O?, s:O?, s:I, s:O?}", "collection", json_object_get(d, "collection"), "producer_errors",
                      json_object_get(d, "producer_errors"), "nerrors",
                      (json_int_t)json_array_size(json_object_get(d, "errors")), "state", json_object_get(d, "state"));
        if (e)
            json_object_set_new(out, id, e);
    }
    json_decref(docs);
    bson_destroy(proj);
    bson_destroy(&filter);
    return ok;
}

static json_t *tag_of(const linker_item_t *it)
{
    char tp[600];
    linker_item_tp(it, tp, sizeof tp);
    return json_pack("{s:s, s:I}", "t", tp, "o", (json_int_t)it->offset);
}

/* The job and path a record reports an outcome for (NULL: none). */
static const char *item_file(const linker_item_t *it, const char **path, bool *done)
{
    if (it->kind == ITEM_EVENT) {
        *path = it->ev.path;
        *done = true;
        return it->ev.job_id;
    }
    if (it->kind == ITEM_DLQ && it->dlq.job_id && it->dlq.path && it->dlq.stage &&
        (!strcmp(it->dlq.stage, "worker") || !strcmp(it->dlq.stage, "linker")) && *it->dlq.job_id && *it->dlq.path) {
        *path = it->dlq.path;
        *done = false;
        return it->dlq.job_id;
    }
    return NULL;
}

/* job_files documents of the batch, _id -> doc (done wins within the batch),
 * and the tags of every record of the batch per _id (origins). */
static json_t *file_docs(const linker_batch_t *B, const char *now, json_t *origins)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        const char *path = NULL;
        bool is_done = false;
        const char *job = item_file(it, &path, &is_done);
        if (!job)
            continue;
        json_t *tag = tag_of(it);
        json_t *d = NULL;
        if (!tag)
            goto oom;
        if (is_done) {
            d = json_pack("{s:s, s:s, s:s, s:s?, s:s}", "job_id", job, "path", path, "status", "done",
                          "sop_instance_uid", mdb_msg_instance_sop_uid(&it->ev), "updated_at", now);
            if (d && it->integrity)
                json_object_set_new(d, "flagged", json_true());
        } else
            d = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:s}", "job_id", job, "path", path, "status", "failed",
                          "stage", it->dlq.stage, "error", it->dlq.error, "message", it->dlq.message, "updated_at",
                          now);
        size_t len = strlen(job) + strlen(path) + 2;
        char *id = malloc(len);
        if (!d || !id) {
            json_decref(d);
            json_decref(tag);
            free(id);
            goto oom;
        }
        snprintf(id, len, "%s\n%s", job, path);
        json_object_set_new(d, "_id", json_string(id));
        json_object_set_new(d, "_fi",
                            json_pack("{s:O, s:O, s:s}", "t", json_object_get(tag, "t"), "o", json_object_get(tag, "o"),
                                      "s", is_done ? "done" : "failed"));
        json_t *arr = json_object_get(origins, id);
        if (!arr) {
            arr = json_array();
            json_object_set_new(origins, id, arr);
        }
        json_array_append_new(arr, tag);
        json_t *cur = json_object_get(out, id);
        bool cur_done = cur && !strcmp(json_string_value(json_object_get(cur, "status")), "done");
        if (!cur_done)
            json_object_set_new(out, id, d);
        else
            json_decref(d);
        free(id);
    }
    return out;
oom:
    json_decref(out);
    return NULL;
}

typedef struct {
    json_t *ops; /* array of {sel, upd} JSON pairs */
} ops_t;

static bool add_json_op_upsert(mdb_bulk_t *b, json_t *op, bool upsert, mdb_error_t *err)
{
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER;
    bool ok = mdb_docs_json_to_bson(json_object_get(op, "sel"), &sel) &&
              mdb_docs_json_to_bson(json_object_get(op, "upd"), &upd) &&
              mdb_bulk_update_one(b, &sel, &upd, upsert, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* ops[i] as an update; an upsert when the op says "upsert": true */
static bool add_json_op(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err)
{
    json_t *op = json_array_get(((ops_t *)ud)->ops, i);
    return add_json_op_upsert(b, op, json_is_true(json_object_get(op, "upsert")), err);
}

static int64_t applied_of(const json_t *applied, const char *job, const char *tp)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\n%s", job, tp);
    const json_t *v = json_object_get(applied, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* deltas["job\ntp"][field] += n */
static bool delta_add(json_t *deltas, const char *job, const char *tp, const char *field, json_int_t n)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\n%s", job, tp);
    json_t *d = json_object_get(deltas, key);
    if (!d) {
        d = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "job_id", job, "tp", tp, "files_done", (json_int_t)0,
                      "files_failed", (json_int_t)0, "files_flagged", (json_int_t)0, "instances_linked", (json_int_t)0);
        if (!d || json_object_set_new(deltas, key, d) != 0)
            return false;
    }
    return json_object_set_new(d, field, json_integer(json_integer_value(json_object_get(d, field)) + n)) == 0;
}

/* Is tag (of a stored document) one of the batch's records for this file,
 * with an offset its progress has not counted? */
static bool uncounted(const json_t *tag, const json_t *origins, const json_t *applied, const char *job)
{
    const char *t = json_string_value(json_object_get(tag, "t"));
    const json_t *o = json_object_get(tag, "o");
    if (!t || !json_is_integer(o) || json_integer_value(o) <= applied_of(applied, job, t))
        return false;
    for (size_t i = 0; i < json_array_size(origins); i++) {
        const json_t *r = json_array_get(origins, i);
        if (json_integer_value(json_object_get(r, "o")) == json_integer_value(o) &&
            !strcmp(json_string_value(json_object_get(r, "t")), t))
            return true;
    }
    return false;
}

/* Insert the batch's job files; turn existing failed ones done when needed;
 * add every change's count to deltas. */
static bool write_files(linker_t *L, json_t *files, const json_t *origins, const json_t *applied, json_t *deltas,
                        const char *now, mdb_error_t *err)
{
    json_t *docs = json_array(), *dups = json_array(), *existing = json_array(), *dupset = json_object();
    ops_t o = {json_array()};
    const char *k;
    json_t *d;
    bool ok = docs && dups && existing && dupset && o.ops;
    json_object_foreach(files, k, d) json_array_append(docs, d);
    ok = ok && L->store->insert(L->store->ud, MDB_JOB_FILES_COLL, docs, dups, err);
    for (size_t i = 0; ok && i < json_array_size(dups); i++)
        json_object_set_new(dupset, json_string_value(json_array_get(dups, i)), json_true());
    /* new documents: counted by the record that inserted them */
    json_object_foreach(files, k, d)
    {
        if (!ok || json_object_get(dupset, k))
            continue;
        const json_t *fi = json_object_get(d, "_fi");
        const char *job = json_string_value(json_object_get(d, "job_id")),
                   *t = json_string_value(json_object_get(fi, "t"));
        ok = delta_add(deltas, job, t,
                       strcmp(json_string_value(json_object_get(d, "status")), "done") ? "files_failed" : "files_done",
                       1);
        if (ok && json_is_true(json_object_get(d, "flagged")))
            ok = delta_add(deltas, job, t, "files_flagged", 1);
    }
    size_t n = json_array_size(dups);
    if (ok && n > 0) {
        const char **ids = malloc(n * sizeof *ids);
        ok = ids != NULL;
        for (size_t i = 0; ok && i < n; i++)
            ids[i] = json_string_value(json_array_get(dups, i));
        bson_t filter = BSON_INITIALIZER;
        bson_t *proj =
            BCON_NEW("status", BCON_INT32(1), "_fi", BCON_INT32(1), "_fd", BCON_INT32(1), "flagged", BCON_INT32(1));
        if (ok)
            mdb_docs_append_in(&filter, "_id", ids, n);
        ok = ok && mdb_docs_find(L->mongo, MDB_JOB_FILES_COLL, &filter, proj, NULL, 0, existing, err);
        bson_destroy(proj);
        bson_destroy(&filter);
        free(ids);
        for (size_t i = 0; ok && i < json_array_size(existing); i++) {
            json_t *e = json_array_get(existing, i);
            const char *id = json_string_value(json_object_get(e, "_id"));
            json_t *want = id ? json_object_get(files, id) : NULL;
            if (!want)
                continue;
            const char *job = json_string_value(json_object_get(want, "job_id"));
            const char *st = json_string_value(json_object_get(e, "status"));
            const json_t *orig = json_object_get(origins, id), *fi = json_object_get(e, "_fi"),
                         *fd = json_object_get(e, "_fd");
            bool e_done = st && !strcmp(st, "done"), e_flagged = json_is_true(json_object_get(e, "flagged"));
            /* changes made by a batch of these records that died before counting them */
            if (uncounted(fi, orig, applied, job)) {
                const char *s = json_string_value(json_object_get(fi, "s"));
                bool fi_done = s && !strcmp(s, "done");
                const char *t = json_string_value(json_object_get(fi, "t"));
                ok = delta_add(deltas, job, t, fi_done ? "files_done" : "files_failed", 1);
                if (ok && fi_done && e_flagged)
                    ok = delta_add(deltas, job, t, "files_flagged", 1);
            }
            if (ok && uncounted(fd, orig, applied, job)) {
                const char *t = json_string_value(json_object_get(fd, "t"));
                ok = delta_add(deltas, job, t, "files_done", 1) && delta_add(deltas, job, t, "files_failed", -1);
                if (ok && e_flagged)
                    ok = delta_add(deltas, job, t, "files_flagged", 1);
            }
            if (!ok || strcmp(json_string_value(json_object_get(want, "status")), "done") || e_done)
                continue;
            /* failed -> done, counted by the record that did it */
            const json_t *wfi = json_object_get(want, "_fi");
            const char *t = json_string_value(json_object_get(wfi, "t"));
            json_t *op = json_pack("{s:{s:s, s:s}, s:{s:{s:s, s:O?, s:{s:s, s:O}, s:s}}}", "sel", "_id", id, "status",
                                   "failed", "upd", "$set", "status", "done", "sop_instance_uid",
                                   json_object_get(want, "sop_instance_uid"), "_fd", "t", t, "o",
                                   json_object_get(wfi, "o"), "updated_at", now);
            bool flagged = json_is_true(json_object_get(want, "flagged"));
            if (op && flagged)
                json_object_set_new(json_object_get(json_object_get(op, "upd"), "$set"), "flagged", json_true());
            ok = op && json_array_append_new(o.ops, op) == 0 && delta_add(deltas, job, t, "files_done", 1) &&
                 delta_add(deltas, job, t, "files_failed", -1) &&
                 (!flagged || delta_add(deltas, job, t, "files_flagged", 1));
        }
        ok = ok &&
             mdb_docs_bulk_write(L->mongo, MDB_JOB_FILES_COLL, L->wc, json_array_size(o.ops), add_json_op, &o, err);
    }
    json_decref(docs);
    json_decref(dups);
    json_decref(existing);
    json_decref(dupset);
    json_decref(o.ops);
    return ok;
}

/* The "job\ntp" pairs of the batch's records with the highest offset of
 * each tp: pairs -> {job_id, tp, o}. */
static json_t *batch_pairs(const linker_batch_t *B)
{
    json_t *pairs = json_object();
    for (size_t i = 0; pairs && i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        const char *path = NULL;
        bool is_done = false;
        const char *job = item_file(it, &path, &is_done);
        if (!job)
            continue;
        char tp[600], key[1024];
        linker_item_tp(it, tp, sizeof tp);
        snprintf(key, sizeof key, "%s\n%s", job, tp);
        json_t *p = json_object_get(pairs, key);
        if (!p)
            json_object_set_new(pairs, key,
                                json_pack("{s:s, s:s, s:I}", "job_id", job, "tp", tp, "o", (json_int_t)it->offset));
        else if (json_integer_value(json_object_get(p, "o")) < it->offset)
            json_object_set_new(p, "o", json_integer(it->offset));
    }
    /* the highest offset of each tp, whatever the job */
    json_t *maxo = json_object();
    const char *k;
    json_t *p;
    json_object_foreach(pairs, k, p)
    {
        const char *tp = json_string_value(json_object_get(p, "tp"));
        json_t *cur = json_object_get(maxo, tp);
        if (!cur || json_integer_value(cur) < json_integer_value(json_object_get(p, "o")))
            json_object_set(maxo, tp, json_object_get(p, "o"));
    }
    for (size_t i = 0; maxo && i < B->nitems; i++) {
        char tp[600];
        linker_item_tp(&B->items[i], tp, sizeof tp);
        json_t *cur = json_object_get(maxo, tp);
        if (cur && json_integer_value(cur) < B->items[i].offset)
            json_object_set_new(maxo, tp, json_integer(B->items[i].offset));
    }
    json_object_foreach(pairs, k, p)
        json_object_set(p, "o", json_object_get(maxo, json_string_value(json_object_get(p, "tp"))));
    json_decref(maxo);
    return pairs;
}

bool linker_jobs_load_applied(linker_t *L, const linker_batch_t *B, json_t *applied, mdb_error_t *err)
{
    json_t *pairs = batch_pairs(B), *docs = json_array();
    const char **ids = pairs ? malloc((json_object_size(pairs) + 1) * sizeof *ids) : NULL;
    size_t n = 0;
    const char *k;
    json_t *v;
    bool ok = pairs && docs && ids;
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory loading job progress");
    if (ok)
        json_object_foreach(pairs, k, v) ids[n++] = k;
    if (ok && n > 0) {
        bson_t filter = BSON_INITIALIZER;
        bson_t *proj = BCON_NEW("o", BCON_INT32(1));
        mdb_docs_append_in(&filter, "_id", ids, n);
        ok = mdb_docs_find(L->mongo, MDB_JOB_PROGRESS_COLL, &filter, proj, NULL, 0, docs, err);
        bson_destroy(proj);
        bson_destroy(&filter);
    }
    for (size_t i = 0; ok && i < json_array_size(docs); i++) {
        json_t *d = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (id && json_is_integer(json_object_get(d, "o")))
            json_object_set(applied, id, json_object_get(d, "o"));
    }
    free(ids);
    json_decref(pairs);
    json_decref(docs);
    return ok;
}

/* Two updates per (job, tp) of the batch, so that running them twice counts
 * once: an upsert that creates the progress document (o: -1) when it is
 * new, then the deltas' $inc with o set to the batch's offset, only where o
 * is still below it. The database may run a batch update again when its
 * reply was lost: libmongoc retries a write once after a network error
 * (retryWrites; the gateway answers hello as a mongos with sessions), the
 * gateway re-runs a statement whose PostgreSQL connection closed, and
 * DocumentDB keeps no retryable-write record for batch updates (its
 * update.c says so). An unconditional $inc counted such a batch twice (CI,
 * restart-database: 104 of 100 files done). A batch whose offset o has
 * reached was counted already: its deltas are 0 (every tag it could count
 * is at or below o), so skipping it loses nothing. */
static bool write_progress(linker_t *L, const linker_batch_t *B, json_t *deltas, const json_t *link_deltas,
                           const char *now, mdb_error_t *err)
{
    json_t *pairs = batch_pairs(B);
    ops_t o = {json_array()};
    bool ok = pairs && o.ops;
    const char *job, *k;
    json_t *per, *v;
    json_object_foreach((json_t *)link_deltas, job, per)
    {
        json_object_foreach(per, k, v)
        {
            if (ok)
                ok = delta_add(deltas, job, k, "instances_linked", json_integer_value(v));
        }
    }
    json_object_foreach(pairs, k, v)
    {
        if (!ok)
            break;
        const json_t *d = json_object_get(deltas, k);
        json_t *create =
            json_pack("{s:{s:s}, s:{s:{s:O, s:O, s:I}}, s:b}", "sel", "_id", k, "upd", "$setOnInsert", "job_id",
                      json_object_get(v, "job_id"), "tp", json_object_get(v, "tp"), "o", (json_int_t)-1, "upsert", 1);
        json_t *count = json_pack("{s:{s:s, s:{s:O}}, s:{s:{s:I, s:I, s:I, s:I}, s:{s:O, s:s}}}", "sel", "_id", k, "o",
                                  "$lt", json_object_get(v, "o"), "upd", "$inc", "files_done",
                                  json_integer_value(json_object_get(d, "files_done")), "files_failed",
                                  json_integer_value(json_object_get(d, "files_failed")), "files_flagged",
                                  json_integer_value(json_object_get(d, "files_flagged")), "instances_linked",
                                  json_integer_value(json_object_get(d, "instances_linked")), "$set", "o",
                                  json_object_get(v, "o"), "updated_at", now);
        ok = create && count && json_array_append(o.ops, create) == 0 && json_array_append(o.ops, count) == 0;
        json_decref(create);
        json_decref(count);
    }
    /* a delta for a pair without a record of this batch (cannot happen: every
     * tag checked belongs to one of the batch's records) would be lost here */
    ok =
        ok && mdb_docs_bulk_write(L->mongo, MDB_JOB_PROGRESS_COLL, L->wc, json_array_size(o.ops), add_json_op, &o, err);
    if (!ok && err && !err->message[0])
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory writing job progress");
    json_decref(pairs);
    json_decref(o.ops);
    return ok;
}

/* Sums of the progress documents of the jobs in ids: job -> {files_done,
 * files_failed, files_flagged, instances_linked} (a field a document lacks,
 * written before it existed, counts 0). */
static bool sum_progress(linker_t *L, const char *const *ids, size_t n, json_t *sums, mdb_error_t *err)
{
    json_t *docs = json_array();
    bson_t filter = BSON_INITIALIZER;
    mdb_docs_append_in(&filter, "job_id", ids, n);
    bool ok = docs && mdb_docs_find(L->mongo, MDB_JOB_PROGRESS_COLL, &filter, NULL, NULL, 0, docs, err);
    bson_destroy(&filter);
    static const char *const fields[] = {"files_done", "files_failed", "files_flagged", "instances_linked"};
    const size_t nfields = sizeof fields / sizeof fields[0];
    for (size_t i = 0; ok && i < json_array_size(docs); i++) {
        json_t *d = json_array_get(docs, i);
        const char *job = json_string_value(json_object_get(d, "job_id"));
        if (!job)
            continue;
        json_t *s = json_object_get(sums, job);
        if (!s) {
            s = json_pack("{s:I, s:I, s:I, s:I}", fields[0], (json_int_t)0, fields[1], (json_int_t)0, fields[2],
                          (json_int_t)0, fields[3], (json_int_t)0);
            json_object_set_new(sums, job, s);
        }
        for (size_t f = 0; s && f < nfields; f++)
            json_object_set_new(s, fields[f],
                                json_integer(json_integer_value(json_object_get(s, fields[f])) +
                                             json_integer_value(json_object_get(d, fields[f]))));
    }
    json_decref(docs);
    return ok;
}

/* The batch's DLQ reasons per job, as errors[] entries. */
static json_t *new_errors(const linker_batch_t *B)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        if (it->kind != ITEM_DLQ || !it->dlq.job_id || !*it->dlq.job_id)
            continue;
        if (!it->dlq.stage || (strcmp(it->dlq.stage, "worker") && strcmp(it->dlq.stage, "linker")))
            continue;
        json_t *arr = json_object_get(out, it->dlq.job_id);
        if (!arr) {
            arr = json_array();
            json_object_set_new(out, it->dlq.job_id, arr);
        }
        json_t *e = json_pack("{s:s?, s:s, s:s, s:s?}", "path", it->dlq.path, "stage", it->dlq.stage, "error",
                              it->dlq.error, "message", it->dlq.message);
        if (e)
            json_array_append_new(arr, e);
    }
    return out;
}

bool linker_jobs_file_docs(const linker_batch_t *B, const char *now, json_t **files, json_t **origins, mdb_error_t *err)
{
    *origins = json_object();
    *files = *origins ? file_docs(B, now, *origins) : NULL;
    if (*files)
        return true;
    json_decref(*origins);
    *origins = NULL;
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory recording job files");
    return false;
}

bool linker_jobs_write_files(linker_t *L, json_t *files, const json_t *origins, const json_t *applied, const char *now,
                             json_t **deltas, mdb_error_t *err)
{
    if (json_object_size(files) == 0)
        return true;
    json_t *d = json_object();
    bool ok = d && write_files(L, files, origins, applied, d, now, err);
    if (!d)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory recording job files");
    if (ok)
        *deltas = json_incref(d);
    json_decref(d);
    return ok;
}

bool linker_jobs_apply(linker_t *L, const linker_batch_t *B, json_t *jobs, const json_t *link_deltas, json_t *deltas,
                       const char *now, mdb_error_t *err)
{
    json_t *sums = json_object();
    json_t *errs = new_errors(B);
    ops_t o = {json_array()};
    const char **ids = NULL;
    size_t n = 0;
    bool ok = errs && sums && o.ops;
    if (!ok) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory recording job files");
        goto done;
    }
    if (!deltas)
        goto done; /* no file outcome in the batch */
    ok = write_progress(L, B, deltas, link_deltas, now, err);
    if (!ok)
        goto done;
    ids = malloc((json_object_size(jobs) + 1) * sizeof *ids);
    const char *k;
    json_t *v;
    if (!ids) {
        ok = false;
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    json_object_foreach(jobs, k, v) ids[n++] = k;
    if (n == 0)
        goto done; /* files of jobs without a document: recorded, counted when the job appears */
    ok = sum_progress(L, ids, n, sums, err);
    if (!ok)
        goto done;
    for (size_t i = 0; i < n; i++) {
        json_t *sum = json_object_get(sums, ids[i]);
        json_int_t done_n = json_integer_value(json_object_get(sum, "files_done"));
        json_int_t failed_n = json_integer_value(json_object_get(sum, "files_failed"));
        json_t *job = json_object_get(jobs, ids[i]);
        json_int_t problems = json_integer_value(json_object_get(job, "producer_errors"));
        json_int_t room = MDB_JOBS_MAX_ERRORS - json_integer_value(json_object_get(job, "nerrors"));
        json_t *add = json_object_get(errs, ids[i]);
        if (add && room > 0) {
            while ((json_int_t)json_array_size(add) > room)
                json_array_remove(add, json_array_size(add) - 1);
            json_array_append_new(o.ops, json_pack("{s:{s:s}, s:{s:{s:{s:O}}, s:{s:s}}}", "sel", "_id", ids[i], "upd",
                                                   "$addToSet", "errors", "$each", add, "$set", "updated_at", now));
        }
        const char *final_state = (failed_n > 0 || problems > 0) ? "completed_with_errors" : "completed";
        json_t *counters =
            json_pack("{s:I, s:I, s:I, s:I, s:s}", "files_done", done_n, "files_failed", failed_n, "files_flagged",
                      json_integer_value(json_object_get(sum, "files_flagged")), "instances_linked",
                      json_integer_value(json_object_get(sum, "instances_linked")), "updated_at", now);
        json_t *fin = json_deep_copy(counters);
        json_object_set_new(fin, "state", json_string(final_state));
        json_object_set_new(fin, "completed_at", json_string(now));
        json_array_append_new(o.ops,
                              json_pack("{s:{s:s, s:{s:[s,s,s]}}, s:{s:o}}", "sel", "_id", ids[i], "state", "$nin",
                                        "completed", "completed_with_errors", "failed", "upd", "$set", counters));
        json_array_append_new(o.ops,
                              json_pack("{s:{s:s, s:s, s:{s:I}}, s:{s:o}}", "sel", "_id", ids[i], "state", "running",
                                        "files_total", "$lte", done_n + failed_n, "upd", "$set", fin));
    }
    ok = mdb_docs_bulk_write(L->mongo, MDB_JOBS_COLL, L->wc, json_array_size(o.ops), add_json_op, &o, err);
done:
    free(ids);
    json_decref(sums);
    json_decref(errs);
    json_decref(o.ops);
    return ok;
}
