/* routes_jobs.c: job submission and status. POST /api/jobs validates a job
 * request, gives it a job id, publishes it on topic.jobs (the same message
 * `metadb submit` sends) and waits for Kafka's acknowledgement, so a 202
 * means the request is durably queued. The producer daemon creates the job
 * document; GET /api/jobs and /api/jobs/{id} read those documents and add a
 * `progress` percentage for the dashboard's bars. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_private.h"
#include "mdb_msg.h"
#include "mdb_query.h"
#include "mdb_uuid.h"

#define MAX_SELECTORS 100000
#define MAX_VALUE_LEN 256
#define DELIVERY_WAIT_MS 10000

/* Delivery state of one submitted message. The delivery callback runs only
 * inside polls made under ctx->produce_lock, so `abandoned` needs no other
 * synchronisation: a request that gave up leaves the struct for the
 * callback to free. */
typedef struct {
    bool done, ok, abandoned;
    char errstr[256];
} delivery_t;

/* mdb_kafka delivery-report callback (registered in main.c). */
void api_jobs_delivery_cb(void *msg_opaque, bool ok, const char *errstr, void *ud);
void api_jobs_delivery_cb(void *msg_opaque, bool ok, const char *errstr, void *ud)
{
    (void)ud;
    delivery_t *d = msg_opaque;
    if (!d)
        return;
    if (d->abandoned) {
        free(d);
        return;
    }
    d->done = true;
    d->ok = ok;
    snprintf(d->errstr, sizeof d->errstr, "%s", errstr ? errstr : "");
}

static bool valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return false;
    return true;
}

static bool get_string(json_t *body, const char *key, char **out, api_response_t *res)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v) || !valid_text(json_string_value(v), MAX_VALUE_LEN)) {
        api_respond_error(res, 400, "bad_job", "'%s' must be a non-empty string of at most %d characters", key,
                          MAX_VALUE_LEN);
        return false;
    }
    *out = strdup(json_string_value(v));
    return *out != NULL;
}

static bool get_strv(json_t *body, const char *key, mdb_strv_t *out, size_t *count, api_response_t *res)
{
    json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_array(v)) {
        api_respond_error(res, 400, "bad_job", "'%s' must be an array of strings", key);
        return false;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || !valid_text(json_string_value(e), MAX_VALUE_LEN)) {
            api_respond_error(res, 400, "bad_job",
                              "'%s'[%zu] must be a non-empty string of at most %d characters without control "
                              "characters",
                              key, i, MAX_VALUE_LEN);
            return false;
        }
        if (++*count > MAX_SELECTORS) {
            api_respond_error(res, 400, "bad_job", "a job may name at most %d selectors", MAX_SELECTORS);
            return false;
        }
        if (!mdb_strv_push(out, json_string_value(e))) {
            api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
            return false;
        }
    }
    return true;
}

/* Body → job message; false with res filled. */
static bool parse_job(json_t *body, mdb_job_msg_t *m, api_response_t *res)
{
    static const char *const keys[] = {"researcher_id", "collection", "accession_numbers", "patient_ids", "study_uids",
                                       "series_uids",   "all_cases",  "feature_set",       "source"};
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            known = known || !strcmp(k, keys[i]);
        if (!known) {
            api_respond_error(res, 400, "bad_job",
                              "unknown key '%.64s' (a job has researcher_id, collection, accession_numbers, "
                              "patient_ids, study_uids, series_uids, all_cases, feature_set, source)",
                              k);
            return false;
        }
    }
    size_t count = 0;
    if (!get_string(body, "researcher_id", &m->researcher_id, res) ||
        !get_string(body, "collection", &m->collection, res) ||
        !get_string(body, "feature_set", &m->feature_set, res) || !get_string(body, "source", &m->source, res) ||
        !get_strv(body, "accession_numbers", &m->accession_numbers, &count, res) ||
        !get_strv(body, "patient_ids", &m->patient_ids, &count, res) ||
        !get_strv(body, "study_uids", &m->study_uids, &count, res) ||
        !get_strv(body, "series_uids", &m->series_uids, &count, res))
        return false;
    json_t *all = json_object_get(body, "all_cases");
    if (all && !json_is_null(all)) {
        if (!json_is_boolean(all)) {
            api_respond_error(res, 400, "bad_job", "'all_cases' must be true or false");
            return false;
        }
        m->all_cases = json_is_true(all);
    }
    if (m->all_cases && !m->collection) {
        api_respond_error(res, 400, "bad_job", "'all_cases' needs a 'collection'");
        return false;
    }
    if (!mdb_msg_job_has_selector(m)) {
        api_respond_error(res, 400, "bad_job",
                          "a job needs at least one selector: accession_numbers, patient_ids, study_uids, "
                          "series_uids or all_cases with a collection");
        return false;
    }
    if (m->source && strcmp(m->source, "archive") && strcmp(m->source, "auto") &&
        (strncmp(m->source, "pacs:", 5) || !m->source[5] ||
         strspn(m->source + 5, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
             strlen(m->source + 5))) {
        api_respond_error(res, 400, "bad_job", "'source' must be \"archive\", \"auto\" or \"pacs:NAME\"");
        return false;
    }
    if (m->feature_set && strspn(m->feature_set, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                              strlen(m->feature_set)) {
        api_respond_error(res, 400, "bad_job", "'feature_set' must be a name of letters, digits, '_' and '-'");
        return false;
    }
    return true;
}

void api_h_jobs_submit(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_job_msg_t m;
    memset(&m, 0, sizeof m);
    char *text = NULL;
    json_t *body = NULL;
    char job_id[MDB_UUID_STR_LEN], now[40];
    mdb_error_t err = {0};

    if (!api_auth_write(ctx, req, res))
        return;
    if (!(body = api_request_json(req, res)))
        return;
    if (!parse_job(body, &m, res))
        goto done;
    if (!ctx->producer) {
        api_respond_error(res, 503, "backend_unavailable", "Kafka is not available to this server");
        goto done;
    }
    mdb_uuid_new(job_id);
    mdb_msg_now_iso(now, sizeof now);
    m.job_id = strdup(job_id);
    m.submitted_at = strdup(now);
    text = mdb_msg_job_encode(&m);
    delivery_t *d = calloc(1, sizeof *d);
    if (!m.job_id || !m.submitted_at || !text || !d) {
        free(d);
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        goto done;
    }
    const char *topic = mdb_config_get(ctx->cfg, "topic.jobs");
    pthread_mutex_lock(&ctx->produce_lock);
    if (!mdb_kafka_produce(ctx->producer, topic, job_id, strlen(job_id), text, strlen(text), d, &err)) {
        pthread_mutex_unlock(&ctx->produce_lock);
        free(d);
        api_respond_error(res, 503, "backend_unavailable", "cannot publish the job: %s", err.message);
        goto done;
    }
    int64_t deadline = api_now_ms() + DELIVERY_WAIT_MS;
    while (!d->done && api_now_ms() < deadline)
        mdb_kafka_producer_poll(ctx->producer, 50);
    bool done = d->done, ok = d->ok;
    char why[256];
    snprintf(why, sizeof why, "%s", d->errstr);
    if (done)
        free(d);
    else
        d->abandoned = true; /* the callback frees it when Kafka finally answers */
    pthread_mutex_unlock(&ctx->produce_lock);
    if (!done) {
        api_respond_error(res, 503, "backend_unavailable",
                          "Kafka did not acknowledge job %s within %d s; it may still be delivered, check "
                          "GET /api/jobs/%s before resubmitting",
                          job_id, DELIVERY_WAIT_MS / 1000, job_id);
        goto done;
    }
    if (!ok) {
        api_respond_error(res, 503, "backend_unavailable", "Kafka refused job %s: %s", job_id, why);
        goto done;
    }
    mdb_metric_inc(mdb_metrics_counter(ctx->metrics, "metadb_api_jobs_submitted_total", "jobs published", ""), 1);
    char location[64];
    snprintf(location, sizeof location, "/api/jobs/%s", job_id);
    api_response_header(res, "Location", location);
    api_respond_json(
        res, 202,
        json_pack("{s:s, s:s, s:s, s:s}", "job_id", job_id, "state", "submitted", "topic", topic, "submitted_at", now));
done:
    free(text);
    mdb_msg_job_clear(&m);
    json_decref(body);
}

/* progress: 100 for final states, else done+failed over total (0 when unknown). */
static void add_progress(json_t *job)
{
    const char *state = json_string_value(json_object_get(job, "state"));
    json_int_t total = json_integer_value(json_object_get(job, "files_total"));
    json_int_t done = json_integer_value(json_object_get(job, "files_done")) +
                      json_integer_value(json_object_get(job, "files_failed"));
    double p = 0;
    bool final =
        state && (!strcmp(state, "completed") || !strcmp(state, "completed_with_errors") || !strcmp(state, "failed"));
    if (final)
        p = 100;
    else if (total > 0)
        p = 100.0 * (double)done / (double)total;
    if (p > 100)
        p = 100;
    /* never show 100 % for a job that is still running */
    if (!final && p >= 100)
        p = 99.9;
    json_object_set_new(job, "progress", json_real(p));
}

void api_h_jobs_list(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    mdb_error_t err = {0};
    int64_t limit, offset;
    if (!api_arg_int(req, "limit", 50, 1, ctx->max_limit, &limit, res) ||
        !api_arg_int(req, "offset", 0, 0, 10000000, &offset, res))
        return;
    json_t *filter = json_object();
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key, *v = req->args[i].value;
        if (!strcmp(k, "limit") || !strcmp(k, "offset") || !strcmp(k, "_"))
            continue;
        if (!strcmp(k, "state") || !strcmp(k, "researcher_id") || !strcmp(k, "collection")) {
            if (!valid_text(v, MAX_VALUE_LEN)) {
                json_decref(filter);
                api_respond_error(res, 400, "bad_parameter", "'%s' needs a value", k);
                return;
            }
            json_object_set_new(filter, k, json_string(v));
            continue;
        }
        json_decref(filter);
        api_respond_error(res, 400, "bad_parameter",
                          "unknown parameter '%.64s' (jobs filter on state, researcher_id, collection)", k);
        return;
    }
    json_t *rq = json_pack("{s:s, s:o, s:{s:i, s:i}, s:{s:i, s:i, s:i}, s:I, s:I}", "collection", "jobs", "filter",
                           filter, "sort", "submitted_at", -1, "_id", 1, "projection", "errors", 0, "selectors", 0,
                           "retrievals", 0, "limit", (json_int_t)limit, "skip", (json_int_t)offset);
    mdb_query_t *q = rq ? mdb_query_new_raw(rq, "jobs", ctx->max_limit, &err) : NULL;
    json_decref(rq);
    if (!q) {
        api_respond_error(res, 400, "bad_parameter", "%s", err.message);
        return;
    }
    json_t *out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, false, &err);
    mdb_query_destroy(q);
    if (!out) {
        api_respond_mdb_error(res, &err);
        return;
    }
    size_t i;
    json_t *job;
    json_array_foreach(json_object_get(out, "items"), i, job) add_progress(job);
    api_respond_json(res, 200, out);
}

void api_h_job_get(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *id)
{
    (void)req;
    mdb_error_t err = {0};
    json_t *rq = json_pack("{s:s, s:{s:s}, s:i}", "collection", "jobs", "filter", "_id", id, "limit", 1);
    mdb_query_t *q = rq ? mdb_query_new_raw(rq, "jobs", ctx->max_limit, &err) : NULL;
    json_decref(rq);
    if (!q) {
        api_respond_error(res, 400, "bad_job_id", "%s", err.message);
        return;
    }
    json_t *out = mdb_query_run(ctx->mongo, q, ctx->query_time_ms, true, &err);
    mdb_query_destroy(q);
    if (!out) {
        api_respond_mdb_error(res, &err);
        return;
    }
    json_t *job = json_array_get(json_object_get(out, "items"), 0);
    if (!job) {
        json_decref(out);
        api_respond_error(res, 404, "not_found",
                          "no job %s (a job just submitted appears once the producer has picked it up)", id);
        return;
    }
    json_incref(job);
    json_decref(out);
    add_progress(job);
    api_respond_json(res, 200, job);
}
