/* The linker's batch: records consumed from topic.instances and topic.dlq
 * since the last flush, with their offsets. A flush is the unit of durable
 * work: the documents (mdb_docs_apply), the job files and job counters
 * (jobs.c) are written and acknowledged first, then every offset of the
 * batch is stored, so a crash at any point before the store replays the
 * whole batch into idempotent writes, and nothing after it is lost.
 *
 * An instance event that fails validation, or whose path is not below
 * archive.roots (when configured; checked lexically, the linker needs no
 * access to the archive), becomes a DLQ record of stage "linker" (its file
 * then counts as failed for its job) and its offset is stored with the batch
 * once that record is delivered. A DLQ record that fails validation becomes
 * a DLQ record "invalid_dlq_record" without a path (it counts for no file).
 * This cannot loop: every record the linker sends is checked to decode
 * (salvaged ids are dropped otherwise), so it is consumed as a valid one. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "linker.h"
#include "mdb_log.h"

int64_t linker_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t linker_batch_count(const linker_t *L)
{
    return L->batch.nitems + (L->writing ? L->wbatch.nitems : 0);
}

static void item_clear(linker_item_t *it)
{
    free(it->topic);
    mdb_msg_instance_clear(&it->ev);
    json_decref(it->dicom);
    json_decref(it->integrity);
    free(it->feature_set);
    mdb_msg_dlq_clear(&it->dlq);
    memset(it, 0, sizeof *it);
}

void linker_batch_clear(linker_batch_t *B)
{
    for (size_t i = 0; i < B->nitems; i++)
        item_clear(&B->items[i]);
    B->nitems = 0;
    B->dlq_pending = 0;
    B->started_ms = 0;
}

void linker_batch_free(linker_batch_t *B)
{
    linker_batch_clear(B);
    free(B->items);
    memset(B, 0, sizeof *B);
}

void linker_batch_drop(linker_t *L)
{
    linker_batch_clear(&L->batch);
}

bool linker_batch_prepend(linker_batch_t *dst, linker_batch_t *src)
{
    if (src->nitems == 0)
        return true;
    size_t n = src->nitems + dst->nitems;
    if (n > src->capitems) {
        linker_item_t *grown = realloc(src->items, n * sizeof *grown);
        if (!grown) {
            linker_batch_clear(src);
            linker_batch_clear(dst);
            return false;
        }
        src->items = grown;
        src->capitems = n;
    }
    /* dst's items move behind src's (ownership moves with the bytes) */
    if (dst->nitems)
        memcpy(src->items + src->nitems, dst->items, dst->nitems * sizeof *dst->items);
    src->nitems = n;
    src->dlq_pending += dst->dlq_pending;
    if (dst->started_ms && (!src->started_ms || dst->started_ms < src->started_ms))
        src->started_ms = dst->started_ms;
    linker_batch_t t = *dst;
    *dst = *src;
    t.nitems = 0; /* its items now belong to dst */
    t.dlq_pending = 0;
    t.started_ms = 0;
    *src = t;
    return true;
}

/* Best-effort job_id/path of an undecodable event, for its DLQ record. */
static void sniff_ids(const void *buf, size_t len, char **job_id, char **path)
{
    json_t *root = buf ? json_loadb(buf, len, 0, NULL) : NULL;
    const char *j = json_string_value(json_object_get(root, "job_id"));
    const char *p = json_string_value(json_object_get(root, "path"));
    *job_id = j && *j ? strdup(j) : NULL;
    *path = p && *p ? strdup(p) : NULL;
    json_decref(root);
}

#define SALVAGED_PATH_MAX 4096

/* Send a DLQ record of stage "linker" for msg: error is the reason code,
 * with_path says whether the salvaged path is kept (it makes the file count
 * as failed for its job). */
static bool send_invalid(linker_t *L, const rd_kafka_message_t *msg, const char *error, const char *what,
                         const char *why, bool with_path, mdb_error_t *err)
{
    char *job_id = NULL, *path = NULL;
    if (msg->payload && msg->len <= L->max_message_bytes + 0u)
        sniff_ids(msg->payload, msg->len, &job_id, &path);
    if (path && (!with_path || strlen(path) > SALVAGED_PATH_MAX)) {
        free(path);
        path = NULL;
    }
    /* The message names no offset: a replayed copy must be the same record
     * (job errors[] de-duplicates identical entries). */
    char detail[MDB_ERROR_MSG_MAX + 64];
    snprintf(detail, sizeof detail, "%s: %s", what, why);
    mdb_dlq_msg_t d = {.job_id = job_id, .path = path, .stage = "linker", .error = (char *)error, .message = detail};
    char *json = mdb_msg_dlq_encode(&d);
    mdb_dlq_msg_t chk = {0};
    mdb_error_t cerr = {0};
    if (json && !mdb_msg_dlq_decode(json, strlen(json), L->max_message_bytes, &chk, &cerr)) {
        /* a salvaged id the decoder refuses would make this record invalid in
         * turn (and come back here): send it without them */
        free(json);
        d.job_id = NULL;
        d.path = NULL;
        json = mdb_msg_dlq_encode(&d);
    }
    mdb_msg_dlq_clear(&chk);
    const char *key = d.job_id ? d.job_id : "";
    bool ok = json && mdb_kafka_produce(L->dlq_producer, L->topic_dlq, key, strlen(key), json, strlen(json), NULL, err);
    if (!json)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory encoding a DLQ record");
    if (ok) {
        L->batch.dlq_pending++;
        mdb_metric_inc(L->mx.invalid, 1);
        MDB_LOGX(MDB_LOG_WARN, d.job_id, d.path, "%s %s[%d]@%lld sent to %s as %s: %s", what,
                 rd_kafka_topic_name(msg->rkt), (int)msg->partition, (long long)msg->offset, L->topic_dlq, error, why);
    }
    free(json);
    free(job_id);
    free(path);
    return ok;
}

/* The "dicom" and "integrity" objects and "feature_set" that mdb_msg's decoder leaves out,
 * from the message it parsed (parsing an event twice was a third of the
 * linker's CPU time). */
static void extras(linker_item_t *it, const json_t *root)
{
    json_t *d = json_object_get(root, "dicom");
    if (json_is_object(d))
        it->dicom = json_incref(d);
    json_t *integ = json_object_get(root, "integrity");
    if (json_is_object(integ) && json_object_size(integ) > 0)
        it->integrity = json_incref(integ);
    const char *fs = json_string_value(json_object_get(root, "feature_set"));
    if (fs && *fs)
        it->feature_set = strdup(fs);
}

bool linker_roots_load(linker_t *L, mdb_error_t *err)
{
    size_t n = 0;
    char **given = mdb_config_get_list(L->cfg, "archive.roots", &n);
    L->roots = given ? calloc(2 * n + 1, sizeof *L->roots) : NULL;
    if (!L->roots) {
        mdb_config_strv_free(given);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(given[i]);
        while (len > 1 && given[i][len - 1] == '/')
            given[i][--len] = '\0';
        if (!len)
            continue;
        /* the root as configured, and canonical when this host can resolve it */
        char *canon = realpath(given[i], NULL);
        if (!(L->roots[L->nroots] = strdup(given[i]))) {
            free(canon);
            mdb_config_strv_free(given);
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
        L->nroots++;
        if (canon && strcmp(canon, given[i]))
            L->roots[L->nroots++] = canon;
        else
            free(canon);
    }
    mdb_config_strv_free(given);
    return true;
}

void linker_roots_free(linker_t *L)
{
    for (size_t i = 0; L->roots && i < L->nroots; i++)
        free(L->roots[i]);
    free(L->roots);
    L->roots = NULL;
    L->nroots = 0;
}

/* NULL when path may be linked; else why not. Without archive.roots every
 * path is accepted. Lexical: absolute, no "." or ".." component, below a root. */
static const char *path_refusal(const linker_t *L, const char *path)
{
    if (L->nroots == 0)
        return NULL;
    if (!path || path[0] != '/')
        return "the path is not absolute";
    for (const char *c = path; *c;) {
        while (*c == '/')
            c++;
        size_t k = strcspn(c, "/");
        if ((k == 1 && c[0] == '.') || (k == 2 && c[0] == '.' && c[1] == '.'))
            return "the path has a '.' or '..' component";
        c += k;
    }
    for (size_t i = 0; i < L->nroots; i++) {
        const char *r = L->roots[i];
        size_t k = strlen(r);
        if ((k == 1 && r[0] == '/') || (!strncmp(r, path, k) && (path[k] == '\0' || path[k] == '/')))
            return NULL;
    }
    return "the path is outside archive.roots";
}

bool linker_batch_add(linker_t *L, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    linker_batch_t *B = &L->batch;
    if (B->nitems == B->capitems) {
        size_t ncap = B->capitems ? B->capitems * 2 : 1024;
        linker_item_t *n = realloc(B->items, ncap * sizeof *n);
        if (!n) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory growing the batch");
            return false;
        }
        B->items = n;
        B->capitems = ncap;
    }
    linker_item_t *it = &B->items[B->nitems];
    memset(it, 0, sizeof *it);
    const char *topic = rd_kafka_topic_name(msg->rkt);
    it->topic = strdup(topic);
    it->partition = msg->partition;
    it->offset = msg->offset;
    it->kind = ITEM_SKIP;
    if (!it->topic) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (B->nitems == 0)
        B->started_ms = linker_now_ms();
    if (!L->first_event_ms)
        L->first_event_ms = linker_now_ms();
    B->nitems++;
    mdb_error_t derr = {0};
    if (!strcmp(topic, L->topic_instances)) {
        mdb_metric_inc(L->mx.events, 1);
        json_t *root = NULL;
        if (msg->payload &&
            mdb_msg_instance_decode_root(msg->payload, msg->len, L->max_message_bytes, &it->ev, &root, &derr)) {
            const char *refusal = path_refusal(L, it->ev.path);
            if (!refusal) {
                it->kind = ITEM_EVENT;
                extras(it, root);
                json_decref(root);
                return true;
            }
            json_decref(root);
            mdb_msg_instance_clear(&it->ev);
            return send_invalid(L, msg, "outside_archive", "instance event refused", refusal, true, err);
        }
        return send_invalid(L, msg, "invalid_event", "instance event failed validation",
                            msg->payload ? derr.message : "empty message", true, err);
    }
    if (!strcmp(topic, L->topic_dlq)) {
        mdb_metric_inc(L->mx.dlq_records, 1);
        if (msg->payload && mdb_msg_dlq_decode(msg->payload, msg->len, L->max_message_bytes, &it->dlq, &derr)) {
            it->kind = ITEM_DLQ;
            return true;
        }
        return send_invalid(L, msg, "invalid_dlq_record", "DLQ record failed validation",
                            msg->payload ? derr.message : "empty message", false, err);
    }
    MDB_LOG(MDB_LOG_WARN, "record from unexpected topic %s ignored", topic);
    return true;
}

/* A DLQ record that names a file the worker or linker could not turn into
 * an event: it counts for the file's job. Producer/api records are the
 * producer's own bookkeeping (producer_errors). */
static bool dlq_counts(const mdb_dlq_msg_t *d)
{
    return d->job_id && *d->job_id && d->path && *d->path && d->stage &&
           (!strcmp(d->stage, "worker") || !strcmp(d->stage, "linker"));
}

bool linker_batch_ready(linker_t *L, linker_batch_t *B, mdb_error_t *err)
{
    if (B->dlq_pending == 0)
        return true;
    uint64_t before = mdb_kafka_producer_failures(L->dlq_producer);
    if (!mdb_kafka_producer_flush(L->dlq_producer, 30000, err))
        return false;
    if (mdb_kafka_producer_failures(L->dlq_producer) != before) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "a DLQ record of this batch was not delivered");
        return false;
    }
    B->dlq_pending = 0;
    return true;
}

static bool build_model(const linker_batch_t *B, mdb_docs_model_t *model, const json_t *jobs, mdb_error_t *err)
{
    for (size_t i = 0; i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        if (it->kind != ITEM_EVENT)
            continue;
        json_t *job = json_object_get(jobs, it->ev.job_id);
        json_t *file =
            json_pack("{s:I, s:I}", "size", (json_int_t)it->ev.file_size, "mtime", (json_int_t)it->ev.file_mtime);
        char tp[600];
        linker_item_tp(it, tp, sizeof tp);
        mdb_docs_event_t ev = {.job_id = it->ev.job_id,
                               .path = it->ev.path,
                               .collection = json_string_value(json_object_get(job, "collection")),
                               .feature_set = it->feature_set,
                               .study = it->ev.study,
                               .series = it->ev.series,
                               .instance = it->ev.instance,
                               .file = file,
                               .dicom = it->dicom,
                               .integrity = it->integrity,
                               .origin = tp,
                               .offset = it->offset};
        bool ok = file && mdb_docs_model_add_event(model, &ev, err);
        json_decref(file);
        if (!ok)
            return false;
    }
    return true;
}

static bool load_jobs(linker_t *L, const linker_batch_t *B, json_t *jobs, mdb_error_t *err)
{
    json_t *seen = json_object();
    const char **ids = malloc((B->nitems + 1) * sizeof *ids);
    size_t n = 0;
    bool ok = seen && ids;
    for (size_t i = 0; ok && i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        const char *j = it->kind == ITEM_EVENT                         ? it->ev.job_id
                        : it->kind == ITEM_DLQ && dlq_counts(&it->dlq) ? it->dlq.job_id
                                                                       : NULL;
        if (j && !json_object_get(seen, j)) {
            json_object_set_new(seen, j, json_true());
            ids[n++] = j;
        }
    }
    ok = ok && (n == 0 || linker_jobs_load(L, ids, n, jobs, err));
    free(ids);
    json_decref(seen);
    return ok;
}

static bool store_offsets(linker_t *L, const linker_batch_t *B, mdb_error_t *err)
{
    for (size_t i = 0; i < B->nitems; i++) {
        const linker_item_t *it = &B->items[i];
        /* consumption order per partition: the last one wins, storing all is cheap */
        if (!mdb_kafka_consumer_store(L->consumer, it->topic, it->partition, it->offset, err))
            return false;
    }
    return true;
}

/* The job_files step of a write, on its own thread beside the documents. */
typedef struct {
    linker_t *L;
    /* its own objects (no jansson object is shared across the two threads) */
    json_t *files, *origins, *applied;
    const char *now;
    json_t *deltas;
    bool ok;
    mdb_error_t err;
} files_step_t;

static void *files_main(void *arg)
{
    files_step_t *f = arg;
    f->ok = linker_jobs_write_files(f->L, f->files, f->origins, f->applied, f->now, &f->deltas, &f->err);
    return NULL;
}

void linker_batch_write(linker_t *L, const linker_batch_t *B, linker_write_result_t *res)
{
    memset(res, 0, sizeof *res);
    mdb_error_t *err = &res->err;
    int64_t t0 = linker_now_ms();
    uint64_t rt0 = mdb_mongo_round_trips(L->mongo);
    char now[40];
    mdb_msg_now_iso(now, sizeof now);
    json_t *jobs = json_object(), *applied = json_object();
    mdb_docs_model_t *model = mdb_docs_model_new();
    files_step_t files = {.L = L, .now = now};
    bool ok = jobs && applied && model;
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory starting a flush");
    ok = ok && load_jobs(L, B, jobs, err) && linker_jobs_load_applied(L, B, applied, err) &&
         build_model(B, model, jobs, err);
    if (ok) {
        mdb_docs_model_set_applied(model, applied);
        files.applied = json_deep_copy(applied);
        ok = files.applied != NULL && linker_jobs_file_docs(B, now, &files.files, &files.origins, err);
        if (!files.applied)
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory starting a flush");
    }
    /* The job files do not depend on the documents (origin tags decide their
     * counting, and the progress that counts them is written after both):
     * they are written on a second connection while the documents are. */
    pthread_t th;
    bool threaded = ok && pthread_create(&th, NULL, files_main, &files) == 0;
    if (ok && !threaded)
        files_main(&files);
    bool docs_ok = true;
    if (ok && mdb_docs_model_event_count(model) > 0)
        docs_ok = mdb_docs_apply(model, L->store, now, &res->stats, err);
    if (threaded)
        pthread_join(th, NULL);
    if (ok && docs_ok && !files.ok)
        *err = files.err;
    ok = ok && docs_ok && files.ok &&
         linker_jobs_apply(L, B, jobs, mdb_docs_model_link_deltas(model), files.deltas, now, err);
    json_decref(files.deltas);
    json_decref(files.files);
    json_decref(files.origins);
    json_decref(files.applied);
    mdb_docs_model_destroy(model);
    json_decref(jobs);
    json_decref(applied);
    res->ok = ok;
    res->seconds = (double)(linker_now_ms() - t0) / 1000.0;
    res->round_trips = mdb_mongo_round_trips(L->mongo) - rt0;
}

bool linker_batch_done(linker_t *L, linker_batch_t *B, const linker_write_result_t *res, mdb_error_t *err)
{
    if (L->broken) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "earlier records were dropped unwritten: no offset is stored");
        return false;
    }
    if (!store_offsets(L, B, err))
        return false;
    const mdb_docs_stats_t *stats = &res->stats;
    size_t n = B->nitems;
    mdb_metric_observe(L->mx.batch_size, (double)n);
    mdb_metric_observe(L->mx.write_seconds, res->seconds);
    mdb_metric_inc(L->mx.batches, 1);
    mdb_metric_inc(L->mx.instances_linked, (double)stats->instances_new);
    mdb_metric_inc(L->mx.instances_existing, (double)stats->instances_existing);
    mdb_metric_inc(L->mx.conflicts, (double)stats->conflicts_written);
    mdb_metric_set(L->mx.round_trips, (double)mdb_mongo_round_trips(L->mongo));
    L->total_events += stats->events;
    L->total_instances_new += stats->instances_new;
    L->total_batches++;
    L->total_flush_seconds += res->seconds;
    L->last_flush_ms = linker_now_ms();
    MDB_LOG(MDB_LOG_DEBUG,
            "batch of %zu record(s): %zu event(s), %zu new instance(s), %zu existing (%zu changed), %zu series, "
            "%zu studies, %zu conflict(s) written, %zu series recounted in %.3f s, %llu round trip(s)",
            n, stats->events, stats->instances_new, stats->instances_existing, stats->instances_written,
            stats->series_written, stats->studies_written, stats->conflicts_written, stats->series_recounted,
            res->seconds, (unsigned long long)res->round_trips);
    linker_batch_clear(B);
    return true;
}
