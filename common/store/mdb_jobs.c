/* mdb_jobs: job documents and job selectors. Every write is an idempotent,
 * conditional update so that redelivered job messages, a producer restarted
 * mid-publish and several linkers updating progress all converge on the same
 * document. */
#include "mdb_jobs.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_cases.h"
#include "mdb_ops.h"

static const char *const state_names[MDB_JOB_NSTATES] = {
    "submitted", "resolving", "running", "completed", "completed_with_errors", "failed", "retrieving"};
static const char *const kind_names[MDB_SEL_NKINDS] = {"accession", "patient", "study", "series", "case", "path"};
static const char *const status_names[] = {"pending", "found", "not_found", "refused"};

const char *mdb_job_state_name(int state)
{
    return state >= 0 && state < MDB_JOB_NSTATES ? state_names[state] : "unknown";
}

bool mdb_job_state_parse(const char *name, int *state)
{
    for (int i = 0; name && i < MDB_JOB_NSTATES; i++) {
        if (!strcmp(name, state_names[i])) {
            *state = i;
            return true;
        }
    }
    return false;
}

bool mdb_job_state_final(int state)
{
    return state == MDB_JOB_COMPLETED || state == MDB_JOB_COMPLETED_WITH_ERRORS || state == MDB_JOB_FAILED;
}

const char *mdb_selector_kind_name(int kind)
{
    return kind >= 0 && kind < MDB_SEL_NKINDS ? kind_names[kind] : "unknown";
}

const char *mdb_selector_status_name(int status)
{
    return status >= 0 && status <= MDB_SEL_REFUSED ? status_names[status] : "unknown";
}

/* ---- selectors ---- */

static void selector_free(mdb_selector_t *sel)
{
    free(sel->value);
    free(sel->text);
    free(sel->reason);
    free(sel->case_patient_id);
    mdb_strv_clear(&sel->case_accessions);
    memset(sel, 0, sizeof *sel);
}

void mdb_selectors_clear(mdb_selectors_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        selector_free(&s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

bool mdb_selectors_add(mdb_selectors_t *s, int kind, const char *value, size_t *index_out)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->v[i].kind == kind && !strcmp(s->v[i].value, value)) {
            if (index_out)
                *index_out = i;
            return true;
        }
    }
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        mdb_selector_t *nv = realloc(s->v, ncap * sizeof *nv);
        if (!nv)
            return false;
        s->v = nv;
        s->cap = ncap;
    }
    mdb_selector_t sel = {.kind = kind, .status = MDB_SEL_PENDING};
    const char *kn = mdb_selector_kind_name(kind);
    size_t tl = strlen(kn) + 1 + strlen(value) + 1;
    sel.value = strdup(value);
    sel.text = malloc(tl);
    if (!sel.value || !sel.text) {
        selector_free(&sel);
        return false;
    }
    snprintf(sel.text, tl, "%s:%s", kn, value);
    if (index_out)
        *index_out = s->n;
    s->v[s->n++] = sel;
    return true;
}

bool mdb_selectors_add_case(mdb_selectors_t *s, const char *case_id, const char *patient_id,
                            const char *const *accessions, size_t naccessions)
{
    size_t at = 0;
    size_t before = s->n;
    if (!mdb_selectors_add(s, MDB_SEL_CASE, case_id, &at))
        return false;
    if (s->n == before)
        return true; /* the same case twice: keep the first */
    mdb_selector_t *sel = &s->v[at];
    sel->case_patient_id = strdup(patient_id ? patient_id : "");
    if (!sel->case_patient_id)
        return false;
    for (size_t i = 0; i < naccessions; i++)
        if (!mdb_strv_push(&sel->case_accessions, accessions[i]))
            return false;
    return true;
}

void mdb_selector_set(mdb_selector_t *sel, int status, size_t files, const char *reason)
{
    sel->status = status;
    sel->files = files;
    free(sel->reason);
    sel->reason = reason ? strdup(reason) : NULL;
}

static bool path_value_valid(const char *p)
{
    size_t n = strlen(p);
    return n > 0 && n < 4096;
}

bool mdb_selectors_from_job(const mdb_job_msg_t *m, mdb_selectors_t *out, mdb_error_t *err)
{
    struct {
        int kind;
        const mdb_strv_t *v;
    } lists[] = {{MDB_SEL_ACCESSION, &m->accession_numbers},
                 {MDB_SEL_PATIENT, &m->patient_ids},
                 {MDB_SEL_STUDY, &m->study_uids},
                 {MDB_SEL_SERIES, &m->series_uids},
                 {MDB_SEL_PATH, &m->paths}};
    memset(out, 0, sizeof *out);
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
        for (size_t i = 0; i < lists[l].v->n; i++) {
            const char *val = lists[l].v->v[i];
            bool ok = lists[l].kind == MDB_SEL_PATH ? path_value_valid(val) : mdb_cases_value_valid(val);
            if (!ok) {
                mdb_error_set(err, MDB_ERR_MSG, 0, "invalid %s selector '%.80s' (%s)",
                              mdb_selector_kind_name(lists[l].kind), val,
                              lists[l].kind == MDB_SEL_PATH ? "empty or longer than 4095 bytes"
                                                            : "1-64 printable characters expected");
                mdb_selectors_clear(out);
                return false;
            }
            if (!mdb_selectors_add(out, lists[l].kind, val, NULL)) {
                mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
                mdb_selectors_clear(out);
                return false;
            }
        }
    }
    if (out->n == 0 && !m->all_cases) {
        mdb_error_set(err, MDB_ERR_MSG, 0,
                      "the job selects nothing (give accession_numbers, patient_ids, study_uids, series_uids, "
                      "paths or all_cases)");
        return false;
    }
    return true;
}

bool mdb_selectors_append_bson(const mdb_selectors_t *s, bson_t *doc, const char *key)
{
    bson_t arr, item;
    char idx[16];
    const char *ik;
    if (!bson_append_array_begin(doc, key, -1, &arr))
        return false;
    for (size_t i = 0; i < s->n; i++) {
        const mdb_selector_t *sel = &s->v[i];
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        bson_append_document_begin(&arr, ik, -1, &item);
        BSON_APPEND_UTF8(&item, "selector", sel->text);
        BSON_APPEND_UTF8(&item, "kind", mdb_selector_kind_name(sel->kind));
        BSON_APPEND_UTF8(&item, "value", sel->value);
        BSON_APPEND_INT64(&item, "files", (int64_t)sel->files);
        BSON_APPEND_UTF8(&item, "status", mdb_selector_status_name(sel->status));
        if (sel->reason)
            BSON_APPEND_UTF8(&item, "reason", sel->reason);
        bson_append_document_end(&arr, &item);
    }
    return bson_append_array_end(doc, &arr);
}

/* ---- document helpers ---- */

int64_t mdb_jobs_doc_int(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (!doc || !bson_iter_init_find(&it, doc, key))
        return 0;
    if (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_DOUBLE(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

const char *mdb_jobs_doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (!doc || !bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_UTF8(&it))
        return NULL;
    return bson_iter_utf8(&it, NULL);
}

/* Job documents are the system's own, not a user's query: a refusal by the
 * server is a database error here, whatever mdb_ops classifies it as. */
static bool db_fail(mdb_error_t *err, const char *what)
{
    if (err && err->domain == MDB_ERR_QUERY)
        err->domain = MDB_ERR_MONGO;
    mdb_error_prefix(err, "%s", what);
    return false;
}

/* update_one; *matched / *upserted receive the counts (may be NULL). */
static bool update_one(mdb_mongo_t *m, const char *collname, const bson_t *sel, const bson_t *upd, bool upsert,
                       int64_t *matched, int64_t *upserted, mdb_error_t *err, const char *what)
{
    mdb_ops_result_t res;
    if (!mdb_ops_update_one(m, collname, sel, upd, upsert, &res, err))
        return db_fail(err, what);
    if (matched)
        *matched = res.matched;
    if (upserted)
        *upserted = res.upserted;
    return true;
}

static bool find_one(mdb_mongo_t *m, const char *collname, const bson_t *filter, const bson_t *projection, bson_t **out,
                     mdb_error_t *err, const char *what)
{
    bson_t opts = BSON_INITIALIZER;
    if (projection)
        BSON_APPEND_DOCUMENT(&opts, "projection", projection);
    bool ok = mdb_ops_find_one(m, collname, filter, &opts, out, err);
    bson_destroy(&opts);
    return ok || db_fail(err, what);
}

static void now_iso(char buf[40])
{
    mdb_msg_now_iso(buf, 40);
}

/* ---- job documents ---- */

bool mdb_jobs_get(mdb_mongo_t *m, const char *job_id, bson_t **doc, mdb_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(job_id));
    bool ok = find_one(m, MDB_JOBS_COLL, filter, NULL, doc, err, "read job");
    bson_destroy(filter);
    if (ok && !*doc) {
        mdb_error_set(err, MDB_ERR_NOTFOUND, 0, "no job '%s'", job_id);
        return false;
    }
    return ok;
}

bool mdb_jobs_get_state(mdb_mongo_t *m, const char *job_id, int *state, mdb_error_t *err)
{
    bson_t *doc = NULL;
    if (!mdb_jobs_get(m, job_id, &doc, err))
        return false;
    const char *s = mdb_jobs_doc_str(doc, "state");
    bool ok = s && mdb_job_state_parse(s, state);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, 0, "job '%s' has an unknown state '%s'", job_id, s ? s : "(none)");
    bson_destroy(doc);
    return ok;
}

static void append_strv(bson_t *doc, const char *key, const mdb_strv_t *v)
{
    bson_t arr;
    char idx[16];
    const char *ik;
    bson_append_array_begin(doc, key, -1, &arr);
    for (size_t i = 0; i < v->n; i++) {
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        BSON_APPEND_UTF8(&arr, ik, v->v[i]);
    }
    bson_append_array_end(doc, &arr);
}

bool mdb_jobs_create(mdb_mongo_t *m, const char *job_id, const mdb_job_msg_t *msg, int *state_out, bool *created_out,
                     mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(job_id));
    bson_t upd = BSON_INITIALIZER, soi, req;
    int64_t upserted = 0;
    bool ok;

    bson_append_document_begin(&upd, "$setOnInsert", -1, &soi);
    BSON_APPEND_UTF8(&soi, "state", "submitted");
    BSON_APPEND_UTF8(&soi, "researcher_id", msg->researcher_id ? msg->researcher_id : "");
    BSON_APPEND_UTF8(&soi, "collection", msg->collection ? msg->collection : "");
    if (msg->feature_set)
        BSON_APPEND_UTF8(&soi, "feature_set", msg->feature_set);
    else
        BSON_APPEND_NULL(&soi, "feature_set");
    if (msg->retry_of)
        BSON_APPEND_UTF8(&soi, "retry_of", msg->retry_of);
    /* What was asked, as asked (the resolution goes to selectors[]). */
    bson_append_document_begin(&soi, "request", -1, &req);
    append_strv(&req, "accession_numbers", &msg->accession_numbers);
    append_strv(&req, "patient_ids", &msg->patient_ids);
    append_strv(&req, "study_uids", &msg->study_uids);
    append_strv(&req, "series_uids", &msg->series_uids);
    BSON_APPEND_BOOL(&req, "all_cases", msg->all_cases);
    BSON_APPEND_INT64(&req, "paths", (int64_t)msg->paths.n);
    bson_append_document_end(&soi, &req);
    bson_t empty;
    bson_append_array_begin(&soi, "selectors", -1, &empty);
    bson_append_array_end(&soi, &empty);
    bson_append_array_begin(&soi, "errors", -1, &empty);
    bson_append_array_end(&soi, &empty);
    BSON_APPEND_INT64(&soi, "files_total", 0);
    BSON_APPEND_INT64(&soi, "files_done", 0);
    BSON_APPEND_INT64(&soi, "files_failed", 0);
    BSON_APPEND_INT64(&soi, "files_flagged", 0);
    BSON_APPEND_INT64(&soi, "instances_linked", 0);
    BSON_APPEND_INT64(&soi, "producer_errors", 0);
    BSON_APPEND_UTF8(&soi, "submitted_at", msg->submitted_at && *msg->submitted_at ? msg->submitted_at : now);
    BSON_APPEND_UTF8(&soi, "updated_at", now);
    bson_append_document_end(&upd, &soi);

    ok = update_one(m, MDB_JOBS_COLL, sel, &upd, true, NULL, &upserted, err, "create job");
    bson_destroy(sel);
    bson_destroy(&upd);
    if (!ok)
        return false;
    if (created_out)
        *created_out = upserted > 0;
    if (state_out)
        return mdb_jobs_get_state(m, job_id, state_out, err);
    return true;
}

static void append_state_filter(bson_t *sel, const int *from, size_t nfrom)
{
    bson_t st, arr;
    char idx[16];
    const char *ik;
    bson_append_document_begin(sel, "state", -1, &st);
    bson_append_array_begin(&st, "$in", -1, &arr);
    if (nfrom == 0) {
        uint32_t k = 0;
        for (int s = 0; s < MDB_JOB_NSTATES; s++) {
            if (mdb_job_state_final(s))
                continue;
            bson_uint32_to_string(k++, &ik, idx, sizeof idx);
            BSON_APPEND_UTF8(&arr, ik, mdb_job_state_name(s));
        }
    } else {
        for (size_t i = 0; i < nfrom; i++) {
            bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
            BSON_APPEND_UTF8(&arr, ik, mdb_job_state_name(from[i]));
        }
    }
    bson_append_array_end(&st, &arr);
    bson_append_document_end(sel, &st);
}

bool mdb_jobs_set_state(mdb_mongo_t *m, const char *job_id, int to, const int *from, size_t nfrom, bool *changed,
                        mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    int64_t matched = 0;
    BSON_APPEND_UTF8(&sel, "_id", job_id);
    append_state_filter(&sel, from, nfrom);
    bson_append_document_begin(&upd, "$set", -1, &set);
    BSON_APPEND_UTF8(&set, "state", mdb_job_state_name(to));
    BSON_APPEND_UTF8(&set, "updated_at", now);
    if (mdb_job_state_final(to))
        BSON_APPEND_UTF8(&set, "completed_at", now);
    bson_append_document_end(&upd, &set);
    bool ok = update_one(m, MDB_JOBS_COLL, &sel, &upd, false, &matched, NULL, err, "update job state");
    bson_destroy(&sel);
    bson_destroy(&upd);
    if (!ok)
        return false;
    if (changed)
        *changed = matched > 0;
    if (matched == 0) {
        int cur;
        mdb_error_t e2 = {0};
        if (!mdb_jobs_get_state(m, job_id, &cur, &e2)) {
            if (err)
                *err = e2;
            return false;
        }
    }
    return true;
}

bool mdb_jobs_add_error(mdb_mongo_t *m, const char *job_id, const char *path, const char *stage, const char *error,
                        const char *message, bool count_as_problem, mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, doc, field, each, sub;
    BSON_APPEND_UTF8(&sel, "_id", job_id);

    /* $slice keeps the first MDB_JOBS_MAX_ERRORS: once the list is full a
     * new error is dropped, but still counted below, in the same update. */
    bson_append_document_begin(&upd, "$push", -1, &doc);
    bson_append_document_begin(&doc, "errors", -1, &field);
    bson_append_array_begin(&field, "$each", -1, &each);
    bson_append_document_begin(&each, "0", -1, &sub);
    if (path)
        BSON_APPEND_UTF8(&sub, "path", path);
    else
        BSON_APPEND_NULL(&sub, "path");
    BSON_APPEND_UTF8(&sub, "stage", stage);
    BSON_APPEND_UTF8(&sub, "error", error);
    if (message)
        BSON_APPEND_UTF8(&sub, "message", message);
    BSON_APPEND_UTF8(&sub, "at", now);
    bson_append_document_end(&each, &sub);
    bson_append_array_end(&field, &each);
    BSON_APPEND_INT32(&field, "$slice", MDB_JOBS_MAX_ERRORS);
    bson_append_document_end(&doc, &field);
    bson_append_document_end(&upd, &doc);
    bson_append_document_begin(&upd, "$set", -1, &doc);
    BSON_APPEND_UTF8(&doc, "updated_at", now);
    bson_append_document_end(&upd, &doc);
    if (count_as_problem) {
        bson_append_document_begin(&upd, "$inc", -1, &doc);
        BSON_APPEND_INT64(&doc, "producer_errors", 1);
        bson_append_document_end(&upd, &doc);
    }
    bool ok = update_one(m, MDB_JOBS_COLL, &sel, &upd, false, NULL, NULL, err, "record job error");
    bson_destroy(&sel);
    bson_destroy(&upd);
    return ok;
}

bool mdb_jobs_fail(mdb_mongo_t *m, const char *job_id, const char *error, const char *message, mdb_error_t *err)
{
    if (!mdb_jobs_add_error(m, job_id, NULL, "producer", error, message, true, err))
        return false;
    return mdb_jobs_set_state(m, job_id, MDB_JOB_FAILED, NULL, 0, NULL, err);
}

bool mdb_jobs_record_selectors(mdb_mongo_t *m, const char *job_id, const mdb_selectors_t *s, int64_t producer_errors,
                               mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(job_id));
    bson_t upd = BSON_INITIALIZER, set;
    bson_append_document_begin(&upd, "$set", -1, &set);
    mdb_selectors_append_bson(s, &set, "selectors");
    BSON_APPEND_INT64(&set, "producer_errors", producer_errors);
    BSON_APPEND_UTF8(&set, "updated_at", now);
    bson_append_document_end(&upd, &set);
    bool ok = update_one(m, MDB_JOBS_COLL, sel, &upd, false, NULL, NULL, err, "record selectors");
    bson_destroy(sel);
    bson_destroy(&upd);
    return ok;
}

bool mdb_jobs_start_running(mdb_mongo_t *m, const char *job_id, int64_t files_total, int *state_out, mdb_error_t *err)
{
    char now[40];
    now_iso(now);
    static const int from[] = {MDB_JOB_SUBMITTED, MDB_JOB_RESOLVING};
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&sel, "_id", job_id);
    append_state_filter(&sel, from, 2);
    bson_append_document_begin(&upd, "$set", -1, &set);
    BSON_APPEND_INT64(&set, "files_total", files_total);
    BSON_APPEND_UTF8(&set, "state", "running");
    BSON_APPEND_UTF8(&set, "updated_at", now);
    BSON_APPEND_UTF8(&set, "running_at", now);
    bson_append_document_end(&upd, &set);
    bool ok = update_one(m, MDB_JOBS_COLL, &sel, &upd, false, NULL, NULL, err, "start job");
    bson_destroy(&sel);
    bson_destroy(&upd);
    if (!ok)
        return false;
    return mdb_jobs_refresh_progress(m, job_id, state_out, err);
}

typedef struct {
    int64_t done, failed, flagged;
} file_counts_t;

static bool count_status(const bson_t *doc, void *ud, mdb_error_t *err)
{
    file_counts_t *fc = ud;
    const char *st = mdb_jobs_doc_str(doc, "_id");
    (void)err;
    if (st && !strcmp(st, "done")) {
        fc->done = mdb_jobs_doc_int(doc, "n");
        fc->flagged = mdb_jobs_doc_int(doc, "flagged");
    } else if (st && !strcmp(st, "failed"))
        fc->failed = mdb_jobs_doc_int(doc, "n");
    return true;
}

/* done/failed/flagged counts of a job from job_files (indexed on job_id). */
static bool count_job_files(mdb_mongo_t *m, const char *job_id, file_counts_t *out, mdb_error_t *err)
{
    bson_t *pipeline = BCON_NEW("pipeline", "[", "{", "$match", "{", "job_id", BCON_UTF8(job_id), "}", "}", "{",
                                "$group", "{", "_id", BCON_UTF8("$status"), "n", "{", "$sum", BCON_INT32(1), "}",
                                "flagged", "{", "$sum", "{", "$cond", "[", "{", "$eq", "[", BCON_UTF8("$flagged"),
                                BCON_BOOL(true), "]", "}", BCON_INT32(1), BCON_INT32(0), "]", "}", "}", "}", "}", "]");
    file_counts_t fc = {0, 0, 0};
    bool ok = mdb_ops_aggregate(m, MDB_JOB_FILES_COLL, pipeline, NULL, count_status, &fc, err);
    bson_destroy(pipeline);
    *out = fc;
    return ok || db_fail(err, "count job files");
}

bool mdb_jobs_refresh_progress(mdb_mongo_t *m, const char *job_id, int *state_out, mdb_error_t *err)
{
    file_counts_t fc = {0, 0, 0};
    bson_t *doc = NULL;
    bool ok = false;
    char now[40];
    now_iso(now);
    if (!count_job_files(m, job_id, &fc, err))
        return false;
    int64_t done = fc.done, failed = fc.failed;
    if (!mdb_jobs_get(m, job_id, &doc, err))
        return false;
    int state = MDB_JOB_SUBMITTED;
    mdb_job_state_parse(mdb_jobs_doc_str(doc, "state"), &state);
    int64_t total = mdb_jobs_doc_int(doc, "files_total");
    int64_t problems = mdb_jobs_doc_int(doc, "producer_errors");

    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    BSON_APPEND_UTF8(&sel, "_id", job_id);
    bson_append_document_begin(&upd, "$set", -1, &set);
    BSON_APPEND_INT64(&set, "files_done", done);
    BSON_APPEND_INT64(&set, "files_failed", failed);
    BSON_APPEND_INT64(&set, "files_flagged", fc.flagged);
    BSON_APPEND_UTF8(&set, "updated_at", now);
    int final_state = -1;
    if (state == MDB_JOB_RUNNING && done + failed >= total) {
        final_state = (failed > 0 || problems > 0) ? MDB_JOB_COMPLETED_WITH_ERRORS : MDB_JOB_COMPLETED;
        static const int from[] = {MDB_JOB_RUNNING};
        append_state_filter(&sel, from, 1);
        BSON_APPEND_UTF8(&set, "state", mdb_job_state_name(final_state));
        BSON_APPEND_UTF8(&set, "completed_at", now);
    }
    bson_append_document_end(&upd, &set);
    ok = update_one(m, MDB_JOBS_COLL, &sel, &upd, false, NULL, NULL, err, "update job progress");
    bson_destroy(&sel);
    bson_destroy(&upd);
    bson_destroy(doc);
    if (ok && state_out) {
        if (final_state >= 0)
            return mdb_jobs_get_state(m, job_id, state_out, err);
        *state_out = state;
    }
    return ok;
}

typedef struct {
    mdb_jobs_visit_fn fn;
    void *ud;
    bool stopped;
} visit_ctx_t;

static bool visit_job(const bson_t *doc, void *ud, mdb_error_t *err)
{
    visit_ctx_t *vc = ud;
    (void)err;
    vc->stopped = !vc->fn(doc, vc->ud);
    return !vc->stopped;
}

bool mdb_jobs_list_recent(mdb_mongo_t *m, int64_t limit, mdb_jobs_visit_fn fn, void *ud, mdb_error_t *err)
{
    bson_t *opts = BCON_NEW("sort", "{", "submitted_at", BCON_INT32(-1), "}", "limit", BCON_INT64(limit));
    visit_ctx_t vc = {fn, ud, false};
    bool ok = mdb_ops_find(m, MDB_JOBS_COLL, NULL, opts, visit_job, &vc, err);
    bson_destroy(opts);
    return ok || vc.stopped || db_fail(err, "list jobs");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    mdb_strv_t *failed, *done;
} failed_ctx_t;

static bool sort_file(const bson_t *doc, void *ud, mdb_error_t *err)
{
    failed_ctx_t *fc = ud;
    const char *path = mdb_jobs_doc_str(doc, "path");
    const char *st = mdb_jobs_doc_str(doc, "status");
    (void)err;
    if (!path || !st)
        return true;
    if (!strcmp(st, "failed"))
        mdb_strv_push(fc->failed, path);
    else if (!strcmp(st, "done"))
        mdb_strv_push(fc->done, path);
    return true;
}

bool mdb_jobs_failed_paths(mdb_mongo_t *m, const char *job_id, mdb_strv_t *out, mdb_error_t *err)
{
    mdb_strv_t done = {0};
    bool ok;
    mdb_strv_clear(out);

    /* job_files: failed paths (and done ones, to filter errors[] below). */
    bson_t *filter = BCON_NEW("job_id", BCON_UTF8(job_id));
    bson_t *opts = BCON_NEW("projection", "{", "path", BCON_INT32(1), "status", BCON_INT32(1), "}");
    failed_ctx_t fc = {out, &done};
    ok = mdb_ops_find(m, MDB_JOB_FILES_COLL, filter, opts, sort_file, &fc, err) || db_fail(err, "read failed files");
    bson_destroy(filter);
    bson_destroy(opts);

    /* errors[] of the job: worker/linker errors carrying a path. */
    bson_t *job = NULL;
    if (ok && (ok = mdb_jobs_get(m, job_id, &job, err))) {
        bson_iter_t it, arr;
        if (bson_iter_init_find(&it, job, "errors") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr)) {
            while (bson_iter_next(&arr)) {
                if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
                    continue;
                const uint8_t *data;
                uint32_t len;
                bson_t sub;
                bson_iter_document(&arr, &len, &data);
                if (!bson_init_static(&sub, data, len))
                    continue;
                const char *path = mdb_jobs_doc_str(&sub, "path");
                const char *stage = mdb_jobs_doc_str(&sub, "stage");
                if (!path || !stage || (strcmp(stage, "worker") && strcmp(stage, "linker")))
                    continue;
                bool is_done = false;
                for (size_t i = 0; i < done.n && !is_done; i++)
                    is_done = !strcmp(done.v[i], path);
                if (!is_done)
                    mdb_strv_push(out, path);
            }
        }
        bson_destroy(job);
    }
    mdb_strv_clear(&done);
    if (!ok) {
        mdb_strv_clear(out);
        return false;
    }
    /* sort + unique */
    if (out->n > 1) {
        qsort(out->v, out->n, sizeof *out->v, cmp_str);
        size_t w = 1;
        for (size_t i = 1; i < out->n; i++) {
            if (!strcmp(out->v[i], out->v[w - 1])) {
                free(out->v[i]);
                continue;
            }
            out->v[w++] = out->v[i];
        }
        out->n = w;
        out->v[w] = NULL;
    }
    return true;
}

static bool add_job_link(mdb_mongo_t *m, const char *collname, const char *id, const char *job_id, bool *found,
                         mdb_error_t *err)
{
    int64_t matched = 0;
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *upd = BCON_NEW("$addToSet", "{", "job_ids", BCON_UTF8(job_id), "}");
    bool ok = update_one(m, collname, sel, upd, false, &matched, NULL, err, "link job");
    bson_destroy(sel);
    bson_destroy(upd);
    if (found)
        *found = ok && matched > 0;
    return ok;
}

bool mdb_jobs_link(mdb_mongo_t *m, const char *job_id, const char *researcher_id, const char *collection,
                   bool *researcher_found, bool *collection_found, mdb_error_t *err)
{
    return add_job_link(m, MDB_RESEARCHERS_COLL, researcher_id, job_id, researcher_found, err) &&
           add_job_link(m, MDB_COLLECTIONS_COLL, collection, job_id, collection_found, err);
}

bool mdb_jobs_note_retry(mdb_mongo_t *m, const char *original, const char *retry_job, mdb_error_t *err)
{
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(original));
    bson_t *upd = BCON_NEW("$addToSet", "{", "retries", BCON_UTF8(retry_job), "}");
    bool ok = update_one(m, MDB_JOBS_COLL, sel, upd, false, NULL, NULL, err, "note retry");
    bson_destroy(sel);
    bson_destroy(upd);
    return ok;
}

/* ---- job id prefixes ("9eb167cc" as the dashboard shows it) ---- */

bool mdb_jobs_prefix_valid(const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    if (n < MDB_JOBS_MIN_PREFIX || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)prefix[i]) && prefix[i] != '-' && prefix[i] != '_')
            return false;
    return true;
}

typedef struct {
    mdb_strv_t ids;
} prefix_ctx_t;

static bool collect_id(const bson_t *doc, void *ud, mdb_error_t *err)
{
    prefix_ctx_t *pc = ud;
    const char *id = mdb_jobs_doc_str(doc, "_id");
    (void)err;
    if (id)
        mdb_strv_push(&pc->ids, id);
    return true;
}

bool mdb_jobs_resolve(mdb_mongo_t *m, const char *id_or_prefix, char **job_id, mdb_error_t *err)
{
    *job_id = NULL;
    bson_t *doc = NULL;
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id_or_prefix));
    bool ok = find_one(m, MDB_JOBS_COLL, filter, NULL, &doc, err, "read job");
    bson_destroy(filter);
    if (!ok)
        return false;
    if (doc) {
        bson_destroy(doc);
        *job_id = strdup(id_or_prefix);
        if (!*job_id)
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return *job_id != NULL;
    }
    if (!mdb_jobs_prefix_valid(id_or_prefix)) {
        mdb_error_set(err, MDB_ERR_NOTFOUND, 0, "no job '%s'%s", id_or_prefix,
                      strlen(id_or_prefix) < MDB_JOBS_MIN_PREFIX ? " (a job id prefix needs at least 6 characters)"
                                                                 : "");
        return false;
    }
    /* the prefix is letters, digits, '-' and '_' only: no regex escaping needed */
    char rx[80];
    snprintf(rx, sizeof rx, "^%s", id_or_prefix);
    filter = BCON_NEW("_id", "{", "$regex", BCON_UTF8(rx), "}");
    bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}", "sort", "{", "_id", BCON_INT32(1), "}",
                            "limit", BCON_INT64(MDB_JOBS_MAX_CANDIDATES + 1));
    prefix_ctx_t pc = {{0}};
    ok = mdb_ops_find(m, MDB_JOBS_COLL, filter, opts, collect_id, &pc, err) || db_fail(err, "find job by prefix");
    bson_destroy(filter);
    bson_destroy(opts);
    if (ok && pc.ids.n == 0) {
        mdb_error_set(err, MDB_ERR_NOTFOUND, 0, "no job '%s' (no job id starts with it)", id_or_prefix);
        ok = false;
    } else if (ok && pc.ids.n > 1) {
        char list[1024] = "";
        size_t len = 0;
        for (size_t i = 0; i < pc.ids.n && i < MDB_JOBS_MAX_CANDIDATES; i++) {
            int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", pc.ids.v[i]);
            if (w < 0 || (size_t)w >= sizeof list - len)
                break;
            len += (size_t)w;
        }
        mdb_error_set(err, MDB_ERR_QUERY, 0, "job id prefix '%s' is ambiguous; it starts %s%zu jobs: %s%s",
                      id_or_prefix, pc.ids.n > MDB_JOBS_MAX_CANDIDATES ? "more than " : "",
                      pc.ids.n > MDB_JOBS_MAX_CANDIDATES ? (size_t)MDB_JOBS_MAX_CANDIDATES : pc.ids.n, list,
                      pc.ids.n > MDB_JOBS_MAX_CANDIDATES ? ", …" : "");
        ok = false;
    } else if (ok) {
        *job_id = strdup(pc.ids.v[0]);
        if (!*job_id) {
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
            ok = false;
        }
    }
    mdb_strv_clear(&pc.ids);
    return ok;
}
