/* worker_task: what an extraction thread does with one file task.
 * decode the task -> pick its feature set -> open the path through the
 * archive gate -> extract -> encode the event (key StudyInstanceUID) or a
 * DLQ record {stage: "worker", error: <reason>, message} -> hand it to the
 * producer with the task as delivery opaque. Every failure ends as exactly
 * one DLQ record; nothing is dropped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdb_charset.h"
#include "mdb_log.h"
#include "mdb_msg.h"
#include "worker.h"

void worker_task_free(worker_task_t *t)
{
    if (!t)
        return;
    free(t->payload);
    free(t->key);
    free(t->out_key);
    free(t->out_value);
    free(t);
}

void worker_complete(worker_shared_t *ws, worker_task_t *t)
{
    pthread_mutex_lock(&ws->clock);
    t->next = ws->chead;
    ws->chead = t;
    pthread_mutex_unlock(&ws->clock);
}

void worker_count_failure(worker_shared_t *ws, const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    mdb_metric_t *m = mdb_metrics_counter(ws->metrics, "metadb_worker_files_failed_total",
                                          "file tasks that ended in the DLQ, by reason", labels);
    if (m)
        mdb_metric_inc(m, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The job id of an undecodable task, if its JSON still shows one. */
static char *salvage_job_id(const worker_task_t *t)
{
    json_error_t je;
    json_t *o = json_loadb(t->payload ? t->payload : "", t->payload_len, 0, &je);
    json_t *j = o ? json_object_get(o, "job_id") : NULL;
    char *id = json_is_string(j) && json_string_length(j) > 0 && json_string_length(j) <= 200 &&
                       mdb_utf8_valid(json_string_value(j), json_string_length(j))
                   ? strdup(json_string_value(j))
                   : NULL;
    json_decref(o);
    return id;
}

/* Fill the task's output with a DLQ record. */
static bool make_dlq(worker_shared_t *ws, worker_task_t *t, const char *job_id, const char *path, const char *reason,
                     const char *message)
{
    char *pathcopy = NULL;
    /* the task key is the path; a task whose JSON broke still names it */
    if (!path && t->key && t->key_len > 0 && mdb_utf8_valid(t->key, t->key_len) && !memchr(t->key, 0, t->key_len) &&
        (pathcopy = malloc(t->key_len + 1))) {
        memcpy(pathcopy, t->key, t->key_len);
        pathcopy[t->key_len] = '\0';
        path = pathcopy;
    }
    mdb_dlq_msg_t d = {.job_id = (char *)job_id,
                       .path = (char *)path,
                       .stage = "worker",
                       .error = (char *)reason,
                       .message = (char *)message};
    free(t->out_value);
    free(t->out_key);
    t->out_value = mdb_msg_dlq_encode(&d);
    t->out_key = job_id ? strdup(job_id) : NULL;
    t->out_len = t->out_value ? strlen(t->out_value) : 0;
    t->out_topic = ws->topic_dlq;
    t->is_dlq = true;
    snprintf(t->reason, sizeof t->reason, "%s", reason);
    worker_count_failure(ws, reason);
    MDB_LOGX(MDB_LOG_WARN, job_id, path, "to DLQ: %s: %s", reason, message ? message : "");
    free(pathcopy);
    return t->out_value != NULL;
}

/* Build the event; false with reason/message when it cannot be produced. */
static bool make_event(worker_shared_t *ws, mdb_extract_ctx_t *ctx, worker_task_t *t, const mdb_file_msg_t *m,
                       const mdb_features_t *fs, char *reason, size_t rcap, mdb_error_t *err)
{
    char *canonical = NULL;
    const char *root = NULL, *event = NULL, *key = NULL;
    size_t len = 0;
    bool ok = false;
    int fd = mdb_archive_open_ex(ws->archive, m->path, &canonical, &root, err);
    if (fd < 0) {
        snprintf(reason, rcap, "%s", mdb_extract_reason(err));
        return false;
    }
    double t0 = now_s();
    const char *override = mdb_archive_charset_for(ws->archive, canonical);
    if (!mdb_extract_fd_event(ctx, fs, fd, override, m->job_id, m->path, mdb_features_name(fs), &event, &len, &key,
                              err)) {
        snprintf(reason, rcap, "%s", mdb_extract_reason(err));
        goto done;
    }
    mdb_metric_observe(ws->m_extract_seconds, now_s() - t0);
    if (ws->max_message_bytes && len > ws->max_message_bytes) {
        snprintf(reason, rcap, "event_too_large");
        mdb_error_set(err, MDB_ERR_MSG, EMSGSIZE,
                      "the event is %zu bytes, over kafka.max_message_bytes (%zu); use a smaller feature set", len,
                      ws->max_message_bytes);
        goto done;
    }
    free(t->out_value);
    free(t->out_key);
    t->out_value = malloc(len + 1);
    t->out_key = key ? strdup(key) : NULL;
    if (!t->out_value || !t->out_key) {
        snprintf(reason, rcap, "internal");
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    memcpy(t->out_value, event, len + 1);
    t->out_len = len;
    t->out_topic = ws->topic_instances;
    t->is_dlq = false;
    ok = true;
done:
    close(fd);
    free(canonical);
    return ok;
}

void worker_process(worker_shared_t *ws, mdb_extract_ctx_t *ctx, worker_task_t *t)
{
    mdb_file_msg_t m = {0};
    mdb_error_t err = {0};
    char reason[40] = "";
    bool ready;
    if (!mdb_msg_file_decode(t->payload, t->payload_len, ws->max_message_bytes, &m, &err)) {
        char *job = salvage_job_id(t);
        ready = make_dlq(ws, t, job, NULL, "bad_message", err.message);
        free(job);
    } else {
        bool fresh = false;
        const mdb_features_t *fs = mdb_featuresets_get(ws->sets, m.feature_set, &fresh, &err);
        if (fs && fresh)
            for (size_t i = 0; i < mdb_features_warning_count(fs); i++)
                MDB_LOG(MDB_LOG_WARN, "feature set '%s': %s", mdb_features_name(fs), mdb_features_warning(fs, i));
        if (!fs)
            ready = make_dlq(ws, t, m.job_id, m.path, "unknown_feature_set", err.message);
        else if (make_event(ws, ctx, t, &m, fs, reason, sizeof reason, &err))
            ready = true;
        else
            ready = make_dlq(ws, t, m.job_id, m.path, reason, err.message);
    }
    mdb_msg_file_clear(&m);
    if (!ready) {
        t->delivered_ok = false;
        snprintf(t->dr_error, sizeof t->dr_error, "out of memory building the output");
        worker_complete(ws, t);
        return;
    }
    if (!mdb_kafka_produce(ws->kp, t->out_topic, t->out_key, t->out_key ? strlen(t->out_key) : 0, t->out_value,
                           t->out_len, t, &err)) {
        t->delivered_ok = false;
        snprintf(t->dr_error, sizeof t->dr_error, "%s", err.message);
        worker_complete(ws, t);
    }
}
