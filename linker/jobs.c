/* Job progress as the linker sees it. Every file outcome of a batch is a
 * job_files document {_id: job_id "\n" path, job_id, path, status
 * done|failed, ...}: inserted if new, and a failed file that later
 * succeeds becomes done (done always wins, so order does not matter). The
 * counters of each touched job are then recounted from job_files (one
 * aggregation per batch, whatever the number of jobs; instances_linked comes
 * from the instance count mdb_docs_apply does anyway) and set; a running
 * job whose files are all accounted for moves to completed (or
 * completed_with_errors) in the same command. Recounting instead of
 * incrementing is what keeps the counters exact under redelivery.
 *
 * Counters are only written while the job is not final, so a slower linker
 * finishing an older batch cannot overwrite the final numbers. errors[]
 * gets the batch's DLQ reasons ($addToSet, so a redelivered record is not
 * added twice), capped at MDB_JOBS_MAX_ERRORS. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "linker.h"
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
        json_t *e = json_pack("{s:O?, s:O?, s:I, s:O?}", "collection", json_object_get(d, "collection"),
                              "producer_errors", json_object_get(d, "producer_errors"), "nerrors",
                              (json_int_t)json_array_size(json_object_get(d, "errors")), "state",
                              json_object_get(d, "state"));
        if (e)
            json_object_set_new(out, id, e);
    }
    json_decref(docs);
    bson_destroy(proj);
    bson_destroy(&filter);
    return ok;
}

/* job_files documents of the batch, _id -> doc (done wins within the batch). */
static json_t *file_docs(linker_t *L, const char *now)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < L->nitems; i++) {
        const linker_item_t *it = &L->items[i];
        json_t *d = NULL;
        const char *job = NULL, *path = NULL;
        if (it->kind == ITEM_EVENT) {
            job = it->ev.job_id;
            path = it->ev.path;
            d = json_pack("{s:s, s:s, s:s, s:s?, s:s}", "job_id", job, "path", path, "status", "done",
                          "sop_instance_uid", mdb_msg_instance_sop_uid(&it->ev), "updated_at", now);
        } else if (it->kind == ITEM_DLQ && it->dlq.job_id && it->dlq.path && it->dlq.stage &&
                   (!strcmp(it->dlq.stage, "worker") || !strcmp(it->dlq.stage, "linker")) && *it->dlq.job_id &&
                   *it->dlq.path) {
            job = it->dlq.job_id;
            path = it->dlq.path;
            d = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:s}", "job_id", job, "path", path, "status", "failed",
                          "stage", it->dlq.stage, "error", it->dlq.error, "message", it->dlq.message, "updated_at",
                          now);
        }
        if (!d)
            continue;
        size_t len = strlen(job) + strlen(path) + 2;
        char *id = malloc(len);
        if (!id) {
            json_decref(d);
            json_decref(out);
            return NULL;
        }
        snprintf(id, len, "%s\n%s", job, path);
        json_object_set_new(d, "_id", json_string(id));
        json_t *cur = json_object_get(out, id);
        bool cur_done = cur && !strcmp(json_string_value(json_object_get(cur, "status")), "done");
        if (!cur_done)
            json_object_set_new(out, id, d);
        else
            json_decref(d);
        free(id);
    }
    return out;
}

typedef struct {
    json_t *ops; /* array of {sel, upd} JSON pairs */
} ops_t;

static bool add_json_op(mdb_bulk_t *b, size_t i, void *ud, mdb_error_t *err)
{
    ops_t *o = ud;
    json_t *op = json_array_get(o->ops, i);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER;
    bool ok = mdb_docs_json_to_bson(json_object_get(op, "sel"), &sel) &&
              mdb_docs_json_to_bson(json_object_get(op, "upd"), &upd) &&
              mdb_bulk_update_one(b, &sel, &upd, false, err);
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* Insert the batch's job files; turn existing failed ones done when needed. */
static bool write_files(linker_t *L, json_t *files, const char *now, mdb_error_t *err)
{
    json_t *docs = json_array(), *dups = json_array(), *existing = json_array();
    ops_t o = {json_array()};
    const char *k;
    json_t *d;
    bool ok = docs && dups && existing && o.ops;
    json_object_foreach(files, k, d) json_array_append(docs, d);
    ok = ok && L->store->insert(L->store->ud, MDB_JOB_FILES_COLL, docs, dups, err);
    size_t n = json_array_size(dups);
    if (ok && n > 0) {
        const char **ids = malloc(n * sizeof *ids);
        ok = ids != NULL;
        for (size_t i = 0; ok && i < n; i++)
            ids[i] = json_string_value(json_array_get(dups, i));
        bson_t filter = BSON_INITIALIZER;
        bson_t *proj = BCON_NEW("status", BCON_INT32(1));
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
            if (!want || strcmp(json_string_value(json_object_get(want, "status")), "done") ||
                !strcmp(json_string_value(json_object_get(e, "status")) ? json_string_value(json_object_get(e, "status"))
                                                                        : "",
                        "done"))
                continue;
            json_t *op = json_pack("{s:{s:s}, s:{s:{s:s, s:O?, s:s}}}", "sel", "_id", id, "upd", "$set", "status",
                                   "done", "sop_instance_uid", json_object_get(want, "sop_instance_uid"),
                                   "updated_at", now);
            if (op)
                json_array_append_new(o.ops, op);
        }
        ok = ok && mdb_docs_bulk_chunked(L->mongo, MDB_JOB_FILES_COLL, L->wc, L->update_chunk, json_array_size(o.ops),
                                         add_json_op, &o,
                                         err);
    }
    json_decref(docs);
    json_decref(dups);
    json_decref(existing);
    json_decref(o.ops);
    return ok;
}

/* done/failed per job: {$match: {job_id: {$in: ids}}},
 * {$group: {_id: {j: "$job_id", s: "$status"}, n: {$sum: 1}}}. */
static bool count_files(linker_t *L, const char *const *ids, size_t n, json_t *rows, mdb_error_t *err)
{
    bson_t pipe = BSON_INITIALIZER, s0, match, s1, g1, gid, sum;
    bson_append_document_begin(&pipe, "0", -1, &s0);
    bson_append_document_begin(&s0, "$match", -1, &match);
    mdb_docs_append_in(&match, "job_id", ids, n);
    bson_append_document_end(&s0, &match);
    bson_append_document_end(&pipe, &s0);
    bson_append_document_begin(&pipe, "1", -1, &s1);
    bson_append_document_begin(&s1, "$group", -1, &g1);
    bson_append_document_begin(&g1, "_id", -1, &gid);
    BSON_APPEND_UTF8(&gid, "j", "$job_id");
    BSON_APPEND_UTF8(&gid, "s", "$status");
    bson_append_document_end(&g1, &gid);
    bson_append_document_begin(&g1, "n", -1, &sum);
    BSON_APPEND_INT32(&sum, "$sum", 1);
    bson_append_document_end(&g1, &sum);
    bson_append_document_end(&s1, &g1);
    bson_append_document_end(&pipe, &s1);
    bool ok = mdb_docs_aggregate(L->mongo, MDB_JOB_FILES_COLL, &pipe, rows, err);
    bson_destroy(&pipe);
    return ok;
}

/* The batch's DLQ reasons per job, as errors[] entries. */
static json_t *new_errors(linker_t *L)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < L->nitems; i++) {
        const linker_item_t *it = &L->items[i];
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

bool linker_jobs_apply(linker_t *L, json_t *jobs, const json_t *linked, const char *now, mdb_error_t *err)
{
    json_t *files = file_docs(L, now);
    json_t *errs = new_errors(L);
    json_t *status_rows = json_array();
    ops_t o = {json_array()};
    const char **ids = NULL;
    size_t n = 0;
    bool ok = files && errs && status_rows && o.ops;
    if (!ok) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory recording job files");
        goto done;
    }
    if (json_object_size(files) == 0)
        goto done;
    ok = write_files(L, files, now, err);
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
    ok = count_files(L, ids, n, status_rows, err);
    if (!ok)
        goto done;
    for (size_t i = 0; i < n; i++) {
        json_int_t done_n = 0, failed_n = 0;
        for (size_t r = 0; r < json_array_size(status_rows); r++) {
            json_t *row = json_array_get(status_rows, r), *id = json_object_get(row, "_id");
            const char *j = json_string_value(json_object_get(id, "j"));
            const char *s = json_string_value(json_object_get(id, "s"));
            if (!j || !s || strcmp(j, ids[i]))
                continue;
            if (!strcmp(s, "done"))
                done_n = json_integer_value(json_object_get(row, "n"));
            else if (!strcmp(s, "failed"))
                failed_n = json_integer_value(json_object_get(row, "n"));
        }
        json_t *nlinked = json_object_get(linked, ids[i]); /* absent: a batch of DLQ records only */
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
        json_t *counters = json_pack("{s:I, s:I, s:s}", "files_done", done_n, "files_failed", failed_n, "updated_at", now);
        if (json_is_integer(nlinked))
            json_object_set(counters, "instances_linked", nlinked);
        json_t *fin = json_deep_copy(counters);
        json_object_set_new(fin, "state", json_string(final_state));
        json_object_set_new(fin, "completed_at", json_string(now));
        json_array_append_new(o.ops, json_pack("{s:{s:s, s:{s:[s,s,s]}}, s:{s:o}}", "sel", "_id", ids[i], "state",
                                               "$nin", "completed", "completed_with_errors", "failed", "upd", "$set",
                                               counters));
        json_array_append_new(o.ops, json_pack("{s:{s:s, s:s, s:{s:I}}, s:{s:o}}", "sel", "_id", ids[i], "state",
                                               "running", "files_total", "$lte", done_n + failed_n, "upd", "$set",
                                               fin));
    }
    ok = mdb_docs_bulk_chunked(L->mongo, MDB_JOBS_COLL, L->wc, L->update_chunk, json_array_size(o.ops), add_json_op,
                               &o, err);
done:
    free(ids);
    json_decref(files);
    json_decref(errs);
    json_decref(status_rows);
    json_decref(o.ops);
    return ok;
}
