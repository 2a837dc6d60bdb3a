/* fetcher_task: one retrieve task, from selector to file tasks.
 *
 *   1. find the studies of the selector (study-level C-FIND / QIDO-RS);
 *   2. per study, learn what a complete retrieval delivers (IMAGE-level C-FIND /
 *      QIDO instances) and what is landed already (a redelivered task, a study
 *      partly received before a crash): only what is missing is requested;
 *   3. retrieve (whole study the first time, then each series still missing
 *      something), with the source's gentleness: allowed hours, a pause
 *      between retrievals, retries with exponential backoff on refusal or
 *      network failure; at most pacs.max_associations associations per source
 *      across every fetcher process (fetcher_slots.c);
 *   4. check every expected SOP Instance landed; re-request what is missing
 *      (FETCHER_PASSES passes), then list what never came, with the reason;
 *   5. catalogue the landing root, publish one file task per landed expected
 *      instance for the job (the archive path's extraction and linking follow),
 *      wait for their delivery reports;
 *   6. record the selector's outcome on the job and, when it was the job's last
 *      retrieval, move the job to running (mdb_retrieval_finish).
 * Every step is idempotent, so a redelivered task (kill -9 at any point)
 * moves nothing twice and ends with the same job document. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fetcher.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_msg.h"
#include "mdb_retrieval.h"
#include "mdb_signal.h"
#include "source_config.h"

#define FETCHER_PASSES 3 /* retrievals per study: the first, then re-requests of what is missing */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep ms, polling the producer; false if a stop was requested. */
static bool nap(fetcher_t *f, int64_t ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (mdb_signal_stop_requested())
            return false;
        mdb_kafka_producer_poll(f->kp, 0);
        int64_t left = end - now_ms();
        struct timespec ts = {0, (left > 100 ? 100 : (left > 0 ? left : 0)) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return !mdb_signal_stop_requested();
}

/* ---- metrics ---- */

static const double lat_bounds[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};

static void metric_inc(fetcher_t *f, const char *name, const char *help, const char *source, const char *reason,
                       double v)
{
    if (!f->metrics)
        return;
    char labels[256];
    if (reason)
        snprintf(labels, sizeof labels, "source=\"%s\",reason=\"%s\"", source, reason);
    else
        snprintf(labels, sizeof labels, "source=\"%s\"", source);
    mdb_metric_t *m = mdb_metrics_counter(f->metrics, name, help, labels);
    if (m)
        mdb_metric_inc(m, v);
}

static void metric_latency(fetcher_t *f, const char *op, const char *source, double s)
{
    if (!f->metrics)
        return;
    char labels[256];
    snprintf(labels, sizeof labels, "source=\"%s\",op=\"%s\"", source, op);
    mdb_metric_t *m = mdb_metrics_histogram(f->metrics, "metadb_fetcher_request_seconds",
                                            "latency of one PACS exchange (op: echo, find, list, retrieve)", labels,
                                            lat_bounds, sizeof lat_bounds / sizeof lat_bounds[0]);
    if (m)
        mdb_metric_observe(m, s);
}

void fetcher_metrics_init(fetcher_t *f, mdb_metrics_t *m)
{
    f->metrics = m;
    for (size_t i = 0; i < f->n_sources; i++) {
        const char *s = f->sources[i].name;
        metric_inc(f, "metadb_fetcher_instances_total", "instances landed from a PACS", s, NULL, 0);
        metric_inc(f, "metadb_fetcher_bytes_total", "bytes landed from a PACS", s, NULL, 0);
        metric_inc(f, "metadb_fetcher_tasks_total", "retrieve tasks finished", s, NULL, 0);
    }
}

/* ---- one PACS exchange with gentleness ---- */

typedef enum { OP_FIND, OP_LIST, OP_RETRIEVE } op_kind_t;

typedef struct {
    op_kind_t kind;
    const mdb_source_selector_t *sel;
    mdb_source_studies_t *studies;
    const char *study_uid;
    mdb_source_instances_t *instances;
    const mdb_source_retrieve_t *req;
    fetcher_land_t *land;
    mdb_source_counts_t counts;
} op_t;

/* Wait until the source's allowed hours; false on stop. */
static bool wait_allowed(fetcher_t *f, const mdb_source_config_t *sc, const char *job_id)
{
    bool told = false;
    for (;;) {
        time_t t = time(NULL);
        struct tm lt;
        localtime_r(&t, &lt);
        if (mdb_source_hour_allowed(sc, lt.tm_hour))
            return true;
        if (!told)
            MDB_LOGX(MDB_LOG_INFO, job_id, NULL, "source %s: outside its allowed hours %02d-%02d, waiting", sc->name,
                     sc->hours_from, sc->hours_to);
        told = true;
        if (!nap(f, 30000))
            return false;
    }
}

/* Run op against src with retries; false + err after the last attempt (or on stop). */
static bool run_op(fetcher_t *f, mdb_source_t *src, size_t si, op_t *op, const char *job_id, int64_t *attempts,
                   mdb_error_t *err)
{
    const mdb_source_config_t *sc = mdb_source_config(src);
    static const char *const names[] = {"find", "list", "retrieve"};
    int64_t backoff = sc->backoff_ms > 0 ? sc->backoff_ms : 1;
    for (int attempt = 0;; attempt++) {
        if (!wait_allowed(f, sc, job_id)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "stop requested");
            return false;
        }
        if (op->kind == OP_RETRIEVE && sc->pause_ms > 0) {
            int64_t since = now_ms() - f->last_retrieve_ms[si];
            if (since < sc->pause_ms && !nap(f, sc->pause_ms - since)) {
                mdb_error_set(err, MDB_ERR_SYSTEM, 0, "stop requested");
                return false;
            }
        }
        mdb_error_clear(err);
        char slot[MDB_SOURCE_NAME_MAX + 16];
        if (!fetcher_slot_acquire(f, sc, slot, sizeof slot, err)) {
            if (mdb_signal_stop_requested())
                return false;
            /* the database is away: wait and try again (not an attempt on the PACS) */
            MDB_LOGX(MDB_LOG_WARN, job_id, NULL, "source %s: association slot: %s", sc->name, err->message);
            if (!nap(f, backoff))
                return false;
            attempt--;
            continue;
        }
        int64_t t0 = now_ms();
        bool ok = false;
        if (attempts)
            (*attempts)++;
        switch (op->kind) {
        case OP_FIND:
            mdb_source_studies_free(op->studies);
            ok = mdb_source_find_studies(src, op->sel, op->studies, err);
            break;
        case OP_LIST:
            mdb_source_instances_free(op->instances);
            ok = mdb_source_list_instances(src, op->study_uid, op->instances, err);
            break;
        case OP_RETRIEVE:
            ok = mdb_source_retrieve(src, op->req, fetcher_land_sink, op->land, &op->counts, err);
            f->last_retrieve_ms[si] = now_ms();
            break;
        }
        fetcher_slot_release(f, slot);
        metric_latency(f, names[op->kind], sc->name, (double)(now_ms() - t0) / 1000.0);
        if (ok)
            return true;
        metric_inc(f, "metadb_fetcher_failures_total", "failed PACS exchanges by reason", sc->name,
                   mdb_source_errc_name(err->code), 1);
        bool retry = mdb_source_error_retryable(err) && attempt < sc->retries;
        MDB_LOGX(MDB_LOG_WARN, job_id, NULL, "source %s: %s attempt %d failed (%s): %s%s", sc->name, names[op->kind],
                 attempt + 1, mdb_source_errc_name(err->code), err->message, retry ? ", retrying" : "");
        if (!retry)
            return false;
        if (!nap(f, backoff)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "stop requested");
            return false;
        }
        backoff = backoff * 2 > 60000 ? 60000 : backoff * 2;
    }
}

/* ---- bookkeeping of one study ---- */

typedef struct {
    mdb_strv_t files;   /* landed expected instances (paths), for the file tasks */
    mdb_strv_t missing; /* SOP UIDs never received */
    int64_t expected, received, landed, attempts;
    char reason[1024];
} outcome_t;

static bool landed_path(const fetcher_t *f, const char *source, const char *study, const mdb_source_instance_t *in,
                        char *path, size_t cap)
{
    struct stat st;
    return fetcher_land_path(path, cap, f->root, source, study, in->series_uid, in->sop_uid) && stat(path, &st) == 0 &&
           S_ISREG(st.st_mode);
}

/* Retrieve one study until every expected instance is landed or the passes
 * are spent. false only on stop or a sink (disk) failure. */
static bool retrieve_study(fetcher_t *f, mdb_source_t *src, size_t si, const char *study, const char *job_id,
                           outcome_t *out, mdb_error_t *err)
{
    const mdb_source_config_t *sc = mdb_source_config(src);
    mdb_source_instances_t exp = {0};
    op_t op = {.kind = OP_LIST, .study_uid = study, .instances = &exp};
    char path[4200];
    bool ok = run_op(f, src, si, &op, job_id, &out->attempts, err);
    if (!ok) {
        snprintf(out->reason, sizeof out->reason, "listing study %.64s: %.800s", study, err->message);
        mdb_strv_push(&out->missing, study); /* nothing of it can be checked: the whole study counts as missing */
        mdb_source_instances_free(&exp);
        return !mdb_signal_stop_requested() && err->code != MDB_SOURCE_E_SINK;
    }
    out->expected += (int64_t)exp.n;
    bool *have = calloc(exp.n ? exp.n : 1, sizeof *have);
    if (!have) {
        mdb_source_instances_free(&exp);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    fetcher_land_t land = {.root = f->root, .source = sc->name, .spool = f->spool, .study = study};
    for (int pass = 0; ok && pass < FETCHER_PASSES; pass++) {
        size_t have_n = 0;
        for (size_t i = 0; i < exp.n; i++)
            have_n += (have[i] = have[i] || landed_path(f, sc->name, study, &exp.items[i], path, sizeof path));
        if (have_n == exp.n)
            break;
        if (pass > 0)
            MDB_LOGX(MDB_LOG_WARN, job_id, NULL,
                     "study %s: %zu of %zu instance(s) missing after pass %d: re-requesting", study, exp.n - have_n,
                     exp.n, pass);
        /* The whole study when nothing is here, else each series missing something. */
        mdb_strv_t series = {0};
        for (size_t i = 0; have_n > 0 && i < exp.n; i++) {
            bool dup = have[i];
            for (size_t k = 0; !dup && k < series.n; k++)
                dup = !strcmp(series.v[k], exp.items[i].series_uid);
            if (!dup)
                mdb_strv_push(&series, exp.items[i].series_uid);
        }
        size_t nreq = have_n == 0 ? 1 : series.n;
        for (size_t r = 0; ok && r < nreq; r++) {
            mdb_source_retrieve_t req = {.study_uid = study, .series_uid = have_n == 0 ? NULL : series.v[r]};
            op_t rop = {.kind = OP_RETRIEVE, .req = &req, .land = &land};
            int64_t before = land.landed_new;
            uint64_t bytes_before = land.bytes;
            mdb_error_t e = {0};
            bool r_ok = run_op(f, src, si, &rop, job_id, &out->attempts, &e);
            out->received += rop.counts.received;
            metric_inc(f, "metadb_fetcher_instances_total", "instances landed from a PACS", sc->name, NULL,
                       (double)(land.landed_new - before));
            metric_inc(f, "metadb_fetcher_bytes_total", "bytes landed from a PACS", sc->name, NULL,
                       (double)(land.bytes - bytes_before));
            if (rop.counts.failed > 0)
                snprintf(out->reason, sizeof out->reason, "the PACS reported %d failed sub-operation(s)",
                         rop.counts.failed);
            if (!r_ok) {
                snprintf(out->reason, sizeof out->reason, "%.900s", e.message);
                if (mdb_signal_stop_requested() || e.code == MDB_SOURCE_E_SINK) {
                    *err = e;
                    ok = false;
                }
                /* otherwise: what did land stays; the check below lists the rest */
            }
        }
        mdb_strv_clear(&series);
    }
    for (size_t i = 0; ok && i < exp.n; i++) {
        if (landed_path(f, sc->name, study, &exp.items[i], path, sizeof path))
            ok = mdb_strv_push(&out->files, path);
        else
            ok = mdb_strv_push(&out->missing, exp.items[i].sop_uid);
    }
    if (ok && out->missing.n > 0 && !out->reason[0])
        snprintf(out->reason, sizeof out->reason, "not received after %d retrieval pass(es)", FETCHER_PASSES);
    out->landed = (int64_t)out->files.n;
    free(have);
    mdb_source_instances_free(&exp);
    return ok;
}

/* ---- the task ---- */

static bool wait_deliveries(fetcher_t *f, fetcher_delivery_t *d, uint64_t n, mdb_error_t *err)
{
    return mdb_daemon_delivery_wait(f->kp, d, n, 330000, err);
}

static bool publish_files(fetcher_t *f, const mdb_retrieve_msg_t *rm, const mdb_strv_t *files, mdb_error_t *err)
{
    fetcher_delivery_t d = {0};
    uint64_t produced = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < files->n; i++) {
        mdb_file_msg_t fm = {
            .job_id = rm->job_id, .path = files->v[i], .selector = rm->selector, .feature_set = rm->feature_set};
        char *json = mdb_msg_file_encode(&fm);
        if (!json) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            ok = false;
            break;
        }
        ok = mdb_kafka_produce(f->kp, f->topic_files, fm.path, strlen(fm.path), json, strlen(json), &d, err);
        free(json);
        produced += ok;
        if ((i & 255) == 255)
            mdb_kafka_producer_poll(f->kp, 0);
    }
    mdb_error_t werr = {0};
    bool delivered = wait_deliveries(f, &d, produced, &werr);
    if (ok && !delivered) {
        *err = werr;
        ok = false;
    }
    return ok;
}

/* The job may have been finished already (a redelivered last task): then
 * recording is a no-op (conditional on retrieving) and finish reads the state. */
static bool conclude(fetcher_t *f, const mdb_retrieve_msg_t *rm, const mdb_retrieval_t *r, mdb_error_t *err)
{
    int state = 0;
    if (!mdb_retrieval_record(f->mongo, rm->job_id, rm->selector_index, r, err) ||
        !mdb_retrieval_finish(f->mongo, rm->job_id, &state, err))
        return false;
    metric_inc(f, "metadb_fetcher_tasks_total", "retrieve tasks finished", rm->source, NULL, 1);
    MDB_LOGX(MDB_LOG_INFO, rm->job_id, NULL,
             "%s from %s: %s (%lld studies, %lld/%lld instances, %zu missing)%s%s; job %s", rm->selector, rm->source,
             mdb_retrieval_status_name(r->status), (long long)r->studies, (long long)r->landed, (long long)r->expected,
             r->n_missing, r->reason ? ": " : "", r->reason ? r->reason : "", mdb_job_state_name(state));
    return true;
}

static void selector_of(const mdb_retrieve_msg_t *rm, mdb_source_selector_t *sel)
{
    memset(sel, 0, sizeof *sel);
    if (!strcmp(rm->kind, "accession"))
        sel->accession = rm->value;
    else if (!strcmp(rm->kind, "patient"))
        sel->patient_id = rm->value;
    else
        sel->study_uid = rm->value;
}

static bool catalogue(fetcher_t *f, mdb_error_t *err)
{
    mdb_catalog_stats_t st;
    mdb_catalog_index_opts_t opts = {0};
    return mdb_catalog_index_root(f->catalog, f->root, &opts, &st, err);
}

fetcher_result_t fetcher_handle(fetcher_t *f, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    mdb_retrieve_msg_t rm = {0};
    mdb_error_t verr = {0};
    mdb_source_t *src = NULL;
    mdb_source_studies_t studies = {0};
    outcome_t out = {0};
    mdb_retrieval_t r = {0};
    fetcher_result_t res = FETCHER_RETRY;
    if (!msg->payload || !mdb_retrieve_msg_decode(msg->payload, msg->len, f->max_message_bytes, &rm, &verr)) {
        MDB_LOG(MDB_LOG_WARN, "retrieve task %s[%d]@%lld rejected: %s", rd_kafka_topic_name(msg->rkt),
                (int)msg->partition, (long long)msg->offset, msg->payload ? verr.message : "empty message");
        mdb_dlq_msg_t dm = {.stage = (char *)"fetcher", .error = (char *)"invalid_task", .message = verr.message};
        char *json = mdb_msg_dlq_encode(&dm);
        fetcher_delivery_t d = {0};
        bool ok = json && mdb_kafka_produce(f->kp, f->topic_dlq, "", 0, json, strlen(json), &d, err) &&
                  wait_deliveries(f, &d, 1, err);
        free(json);
        return ok ? FETCHER_DONE : FETCHER_RETRY;
    }
    int state = 0;
    if (!mdb_jobs_get_state(f->mongo, rm.job_id, &state, err)) {
        if (err->domain == MDB_ERR_NOTFOUND) { /* no such job: nothing to fetch for */
            MDB_LOGX(MDB_LOG_WARN, rm.job_id, NULL, "retrieve task for %s: the job does not exist; ignored",
                     rm.selector);
            res = FETCHER_DONE;
        }
        goto done;
    }
    if (state != MDB_JOB_RETRIEVING) {
        MDB_LOGX(MDB_LOG_INFO, rm.job_id, NULL, "job is %s: retrieve task for %s already handled",
                 mdb_job_state_name(state), rm.selector);
        res = FETCHER_DONE;
        goto done;
    }
    r.selector = rm.selector;
    r.source = rm.source;
    size_t si = 0;
    while (si < f->n_sources && strcmp(f->sources[si].name, rm.source))
        si++;
    if (si == f->n_sources) {
        r.status = MDB_RETR_FAILED;
        r.reason = "no PACS of that name in this fetcher's pacs.sources";
        res = conclude(f, &rm, &r, err) ? FETCHER_DONE : FETCHER_RETRY;
        goto done;
    }
    src = mdb_source_open(&f->sources[si], f->spool, err);
    if (!src) {
        r.status = MDB_RETR_FAILED;
        r.reason = err->message;
        res = conclude(f, &rm, &r, err) ? FETCHER_DONE : FETCHER_RETRY;
        goto done;
    }
    r.status = MDB_RETR_RETRIEVING;
    if (!mdb_retrieval_record(f->mongo, rm.job_id, rm.selector_index, &r, err))
        goto done;

    mdb_source_selector_t sel;
    selector_of(&rm, &sel);
    op_t fop = {.kind = OP_FIND, .sel = &sel, .studies = &studies};
    mdb_error_t ferr = {0};
    if (!run_op(f, src, si, &fop, rm.job_id, &out.attempts, &ferr)) {
        if (mdb_signal_stop_requested()) {
            res = FETCHER_STOP;
            goto done;
        }
        char why[700];
        snprintf(why, sizeof why, "C-FIND/QIDO failed: %.600s", ferr.message);
        r.status = MDB_RETR_FAILED;
        r.reason = why;
        r.attempts = out.attempts;
        res = conclude(f, &rm, &r, err) ? FETCHER_DONE : FETCHER_RETRY;
        goto done;
    }
    r.studies = (int64_t)studies.n;
    if (studies.n == 0) {
        r.status = MDB_RETR_NOT_FOUND;
        r.reason = "the PACS has no study for this selector";
        r.attempts = out.attempts;
        res = conclude(f, &rm, &r, err) ? FETCHER_DONE : FETCHER_RETRY;
        goto done;
    }
    for (size_t i = 0; i < studies.n; i++) {
        if (!fetcher_uid_valid(studies.items[i].study_uid)) {
            mdb_strv_push(&out.missing, studies.items[i].study_uid);
            snprintf(out.reason, sizeof out.reason, "study UID '%.64s' is not a valid UID", studies.items[i].study_uid);
            continue;
        }
        if (!retrieve_study(f, src, si, studies.items[i].study_uid, rm.job_id, &out, err)) {
            res = mdb_signal_stop_requested() ? FETCHER_STOP : FETCHER_RETRY;
            goto done;
        }
        r.expected = out.expected;
        r.received = out.received;
        r.landed = (int64_t)out.files.n;
        r.attempts = out.attempts;
        if (!mdb_retrieval_record(f->mongo, rm.job_id, rm.selector_index, &r, err))
            goto done;
    }
    if (out.files.n > 0 && !catalogue(f, err)) {
        mdb_error_prefix(err, "catalogue %s", f->root);
        goto done;
    }
    if (!publish_files(f, &rm, &out.files, err))
        goto done;
    r.files = (int64_t)out.files.n;
    r.landed = (int64_t)out.files.n;
    r.expected = out.expected;
    r.received = out.received;
    r.attempts = out.attempts;
    r.missing = (const char *const *)out.missing.v;
    r.n_missing = out.missing.n;
    r.status = out.missing.n ? (out.files.n ? MDB_RETR_INCOMPLETE : MDB_RETR_FAILED) : MDB_RETR_DONE;
    r.reason = out.reason[0] ? out.reason : NULL;
    res = conclude(f, &rm, &r, err) ? FETCHER_DONE : FETCHER_RETRY;
done:
    mdb_source_close(src);
    mdb_source_studies_free(&studies);
    mdb_strv_clear(&out.files);
    mdb_strv_clear(&out.missing);
    mdb_retrieve_msg_clear(&rm);
    return res;
}
