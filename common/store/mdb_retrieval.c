/* mdb_retrieval: retrieve task messages and the job document's retrieval
 * fields (see mdb_retrieval.h for the protocol). */
#include "mdb_retrieval.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_jobs.h"
#include "mdb_ops.h"

static const char *const status_names[] = {"retrieving", "done", "incomplete", "not_found", "failed"};

const char *mdb_retrieval_status_name(int status)
{
    return status >= 0 && status <= MDB_RETR_FAILED ? status_names[status] : "unknown";
}

static bool status_final(const char *s)
{
    return s && strcmp(s, "retrieving") != 0;
}

/* ---- the message ---- */

static bool take_str(json_t *root, const char *name, bool required, char **out, mdb_error_t *err)
{
    json_t *v = json_object_get(root, name);
    if (!v || json_is_null(v)) {
        if (required)
            mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task: '%s' is missing", name);
        return !required;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 4096) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task: '%s' must be a non-empty string", name);
        return false;
    }
    *out = strdup(json_string_value(v));
    if (!*out)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return *out != NULL;
}

bool mdb_retrieve_msg_decode(const char *buf, size_t len, size_t max_bytes, mdb_retrieve_msg_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (len > max_bytes) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task of %zu bytes exceeds %zu", len, max_bytes);
        return false;
    }
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task is not a JSON object%s%s", root ? "" : ": ",
                      root ? "" : je.text);
        json_decref(root);
        return false;
    }
    json_t *idx = json_object_get(root, "selector_index");
    bool ok = take_str(root, "job_id", true, &out->job_id, err) &&
              take_str(root, "selector", true, &out->selector, err) && take_str(root, "kind", true, &out->kind, err) &&
              take_str(root, "value", true, &out->value, err) && take_str(root, "source", true, &out->source, err) &&
              take_str(root, "feature_set", false, &out->feature_set, err);
    if (ok && (!json_is_integer(idx) || json_integer_value(idx) < 0)) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task: 'selector_index' must be a non-negative integer");
        ok = false;
    }
    if (ok)
        out->selector_index = json_integer_value(idx);
    if (ok && strcmp(out->kind, "accession") && strcmp(out->kind, "patient") && strcmp(out->kind, "study")) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "retrieve task: kind '%s' is not accession, patient or study", out->kind);
        ok = false;
    }
    json_decref(root);
    if (!ok)
        mdb_retrieve_msg_clear(out);
    return ok;
}

char *mdb_retrieve_msg_encode(const mdb_retrieve_msg_t *m)
{
    json_t *o = json_pack("{s:i, s:s, s:I, s:s, s:s, s:s, s:s}", "v", 1, "job_id", m->job_id, "selector_index",
                          (json_int_t)m->selector_index, "selector", m->selector, "kind", m->kind, "value", m->value,
                          "source", m->source);
    if (!o)
        return NULL;
    if (m->feature_set && json_object_set_new(o, "feature_set", json_string(m->feature_set)) != 0) {
        json_decref(o);
        return NULL;
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

void mdb_retrieve_msg_clear(mdb_retrieve_msg_t *m)
{
    if (!m)
        return;
    free(m->job_id);
    free(m->selector);
    free(m->kind);
    free(m->value);
    free(m->source);
    free(m->feature_set);
    memset(m, 0, sizeof *m);
}

/* ---- the job document ---- */

static bool db_fail(mdb_error_t *err, const char *what)
{
    if (err && err->domain == MDB_ERR_QUERY)
        err->domain = MDB_ERR_MONGO;
    mdb_error_prefix(err, "%s", what);
    return false;
}

static void now_iso(char buf[40])
{
    mdb_msg_now_iso(buf, 40);
}

bool mdb_retrieval_start(mdb_mongo_t *m, const char *job_id, int64_t files_archive, int64_t retrieve_total,
                         mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(job_id), "state", "{", "$in", "[", BCON_UTF8("submitted"),
                           BCON_UTF8("resolving"), "]", "}");
    bson_t *upd = BCON_NEW("$set", "{", "state", BCON_UTF8("retrieving"), "files_total", BCON_INT64(files_archive),
                           "files_archive", BCON_INT64(files_archive), "retrieve_total", BCON_INT64(retrieve_total),
                           "retrieving_at", BCON_UTF8(now), "updated_at", BCON_UTF8(now), "}");
    bool ok = mdb_ops_update_one(m, MDB_JOBS_COLL, sel, upd, false, NULL, err) || db_fail(err, "start retrieving");
    bson_destroy(sel);
    bson_destroy(upd);
    return ok;
}

bool mdb_retrieval_record(mdb_mongo_t *m, const char *job_id, int64_t index, const mdb_retrieval_t *r, mdb_error_t *err)
{
    char now[40], key[64];
    now_iso(now);
    snprintf(key, sizeof key, "retrievals.%lld", (long long)index);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, doc, arr;
    BSON_APPEND_UTF8(&sel, "_id", job_id);
    BSON_APPEND_UTF8(&sel, "state", "retrieving");
    bson_append_document_begin(&upd, "$set", -1, &set);
    bson_append_document_begin(&set, key, -1, &doc);
    BSON_APPEND_INT64(&doc, "index", index);
    BSON_APPEND_UTF8(&doc, "selector", r->selector ? r->selector : "");
    BSON_APPEND_UTF8(&doc, "source", r->source ? r->source : "");
    BSON_APPEND_UTF8(&doc, "status", mdb_retrieval_status_name(r->status));
    BSON_APPEND_INT64(&doc, "studies", r->studies);
    BSON_APPEND_INT64(&doc, "expected", r->expected);
    BSON_APPEND_INT64(&doc, "received", r->received);
    BSON_APPEND_INT64(&doc, "landed", r->landed);
    BSON_APPEND_INT64(&doc, "files", r->files);
    BSON_APPEND_INT64(&doc, "attempts", r->attempts);
    BSON_APPEND_INT64(&doc, "missing_count", (int64_t)r->n_missing);
    bson_append_array_begin(&doc, "missing", -1, &arr);
    for (size_t i = 0; i < r->n_missing && i < MDB_RETRIEVAL_MAX_MISSING; i++) {
        char ik[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, ik, sizeof ik);
        BSON_APPEND_UTF8(&arr, k, r->missing[i]);
    }
    bson_append_array_end(&doc, &arr);
    if (r->reason)
        BSON_APPEND_UTF8(&doc, "reason", r->reason);
    BSON_APPEND_UTF8(&doc, "updated_at", now);
    bson_append_document_end(&set, &doc);
    if (r->status != MDB_RETR_RETRIEVING) {
        /* The selector's own line (selectors[index], written by the producer as
         * pending) tells the outcome too. */
        char k[96], why[600];
        bool found = r->files > 0;
        if (r->status == MDB_RETR_DONE)
            snprintf(why, sizeof why, "retrieved from pacs:%s", r->source ? r->source : "?");
        else if (found)
            snprintf(why, sizeof why, "retrieved from pacs:%s, %zu instance(s) missing", r->source ? r->source : "?",
                     r->n_missing);
        else
            snprintf(why, sizeof why, "pacs:%s: %.500s", r->source ? r->source : "?", r->reason ? r->reason : "failed");
        snprintf(k, sizeof k, "selectors.%lld.status", (long long)index);
        BSON_APPEND_UTF8(&set, k, found ? "found" : "not_found");
        snprintf(k, sizeof k, "selectors.%lld.files", (long long)index);
        BSON_APPEND_INT64(&set, k, r->files);
        snprintf(k, sizeof k, "selectors.%lld.reason", (long long)index);
        BSON_APPEND_UTF8(&set, k, why);
    }
    BSON_APPEND_UTF8(&set, "updated_at", now);
    bson_append_document_end(&upd, &set);
    bool ok = mdb_ops_update_one(m, MDB_JOBS_COLL, &sel, &upd, false, NULL, err) || db_fail(err, "record retrieval");
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

/* Append one error document {path, stage, error, message} to arr. */
static void push_error(bson_t *arr, uint32_t *n, const char *path, const char *error, const char *message)
{
    char ik[16];
    const char *k;
    bson_t e;
    bson_uint32_to_string((*n)++, &k, ik, sizeof ik);
    bson_append_document_begin(arr, k, -1, &e);
    if (path)
        BSON_APPEND_UTF8(&e, "path", path);
    else
        BSON_APPEND_NULL(&e, "path");
    BSON_APPEND_UTF8(&e, "stage", "fetcher");
    BSON_APPEND_UTF8(&e, "error", error);
    BSON_APPEND_UTF8(&e, "message", message);
    bson_append_document_end(arr, &e);
}

bool mdb_retrieval_finish(mdb_mongo_t *m, const char *job_id, int *state_out, mdb_error_t *err)
{
    bson_t *doc = NULL;
    if (!mdb_jobs_get(m, job_id, &doc, err))
        return false;
    const char *state = mdb_jobs_doc_str(doc, "state");
    int64_t total = mdb_jobs_doc_int(doc, "retrieve_total");
    int64_t files = mdb_jobs_doc_int(doc, "files_archive");
    int64_t problems = 0, finals = 0;
    uint32_t nerr = 0;
    bson_t arr = BSON_INITIALIZER;
    bson_iter_t it, rit;
    if (!state || strcmp(state, "retrieving") != 0) {
        bson_destroy(doc);
        bson_destroy(&arr);
        return state_out ? mdb_jobs_get_state(m, job_id, state_out, err) : true;
    }
    if (bson_iter_init_find(&it, doc, "retrievals") && BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &rit)) {
        while (bson_iter_next(&rit)) {
            const uint8_t *data;
            uint32_t len;
            bson_t r;
            if (!BSON_ITER_HOLDS_DOCUMENT(&rit))
                continue;
            bson_iter_document(&rit, &len, &data);
            if (!bson_init_static(&r, data, len))
                continue;
            const char *st = mdb_jobs_doc_str(&r, "status");
            if (!status_final(st))
                continue;
            finals++;
            files += mdb_jobs_doc_int(&r, "files");
            const char *selector = mdb_jobs_doc_str(&r, "selector");
            const char *reason = mdb_jobs_doc_str(&r, "reason");
            char msg[1024];
            if (!strcmp(st, "not_found") || !strcmp(st, "failed")) {
                problems++;
                snprintf(msg, sizeof msg, "%s: %s", selector ? selector : "?", reason ? reason : st);
                if (nerr < MDB_JOBS_MAX_ERRORS)
                    push_error(&arr, &nerr, NULL, !strcmp(st, "failed") ? "retrieve_failed" : "not_found", msg);
            }
            bson_iter_t mi, ma;
            int64_t missing = mdb_jobs_doc_int(&r, "missing_count");
            problems += missing;
            if (bson_iter_init_find(&mi, &r, "missing") && BSON_ITER_HOLDS_ARRAY(&mi) && bson_iter_recurse(&mi, &ma))
                while (bson_iter_next(&ma) && nerr < MDB_JOBS_MAX_ERRORS) {
                    if (!BSON_ITER_HOLDS_UTF8(&ma))
                        continue;
                    snprintf(msg, sizeof msg, "SOP Instance %s of %s was not received from %s (%s)",
                             bson_iter_utf8(&ma, NULL), selector ? selector : "?",
                             mdb_jobs_doc_str(&r, "source") ? mdb_jobs_doc_str(&r, "source") : "?",
                             reason ? reason : "missing after re-requests");
                    push_error(&arr, &nerr, bson_iter_utf8(&ma, NULL), "missing_instance", msg);
                }
        }
    }
    bson_destroy(doc);
    if (finals < total) {
        bson_destroy(&arr);
        return state_out ? mdb_jobs_get_state(m, job_id, state_out, err) : true;
    }
    char now[40];
    now_iso(now);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set, inc, push, each;
    BSON_APPEND_UTF8(&sel, "_id", job_id);
    BSON_APPEND_UTF8(&sel, "state", "retrieving");
    bson_append_document_begin(&upd, "$set", -1, &set);
    BSON_APPEND_UTF8(&set, "state", "running");
    BSON_APPEND_INT64(&set, "files_total", files);
    BSON_APPEND_UTF8(&set, "running_at", now);
    BSON_APPEND_UTF8(&set, "updated_at", now);
    bson_append_document_end(&upd, &set);
    bson_append_document_begin(&upd, "$inc", -1, &inc);
    BSON_APPEND_INT64(&inc, "producer_errors", problems);
    bson_append_document_end(&upd, &inc);
    if (nerr > 0) {
        bson_append_document_begin(&upd, "$push", -1, &push);
        bson_append_document_begin(&push, "errors", -1, &each);
        BSON_APPEND_ARRAY(&each, "$each", &arr);
        BSON_APPEND_INT32(&each, "$slice", MDB_JOBS_MAX_ERRORS);
        bson_append_document_end(&push, &each);
        bson_append_document_end(&upd, &push);
    }
    bool ok = mdb_ops_update_one(m, MDB_JOBS_COLL, &sel, &upd, false, NULL, err) || db_fail(err, "finish retrieval");
    bson_destroy(&sel);
    bson_destroy(&upd);
    bson_destroy(&arr);
    return ok && mdb_jobs_refresh_progress(m, job_id, state_out, err);
}
