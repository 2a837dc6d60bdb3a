/* producer_job: turn one job request into file tasks.
 *
 * Order of work, chosen so that a crash at any point is repaired by the
 * redelivery of the same message:
 *   1. decode + validate; a bad message goes to the DLQ (and, when it names a
 *      usable job id, its job document is marked failed with the reason);
 *   2. create the job document idempotently (job_id is the key; a message
 *      without one gets a name-based UUID of topic/partition/offset, so a
 *      redelivery maps to the same job);
 *   3. a job already running or finished is a duplicate delivery: nothing is
 *      published again;
 *   4. link the job to its researcher and collection (both must exist);
 *   5. resolve every selector (catalog, or the archive gate for explicit
 *      paths) and record per selector what was found, not found or refused;
 *   6. publish one task per unique file, wait for every delivery report;
 *   7. set files_total and move the job to running (or straight to completed
 *      when there is nothing to do).
 * A job interrupted between 2 and 7 is still submitted/resolving when its
 * message comes back, so it is resolved and published again in full; file
 * tasks are idempotent downstream and files_total is set exactly. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uuid/uuid.h>

#include "mdb_cases.h"
#include "mdb_cases_doc.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_msg.h"
#include "mdb_ops.h"
#include "mdb_retrieval.h"
#include "mdb_strmap.h"
#include "mdb_uuid.h"
#include "producer.h"

static void inc(mdb_metric_t *m, double v)
{
    if (m)
        mdb_metric_inc(m, v);
}

/* Wait until every message of round d (n produced) is reported (drained
 * even after the timeout: d lives on the caller's stack). */
static bool wait_deliveries(producer_t *p, producer_delivery_t *d, uint64_t n, mdb_error_t *err)
{
    bool ok = mdb_daemon_delivery_wait(p->kp, d, n, p->delivery_timeout_ms, err);
    if (d->failed)
        inc(p->m_publish_failures, (double)d->failed);
    return ok;
}

/* Publish a DLQ record for an unusable job message and wait for it. */
static bool send_dlq(producer_t *p, const char *job_id, const char *error, const char *message, mdb_error_t *err)
{
    mdb_dlq_msg_t dm = {.job_id = (char *)job_id,
                        .path = NULL,
                        .stage = (char *)"producer",
                        .error = (char *)error,
                        .message = (char *)message};
    char *json = mdb_msg_dlq_encode(&dm);
    producer_delivery_t d = {0};
    const char *key = job_id ? job_id : "";
    if (!json) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    bool ok = mdb_kafka_produce(p->kp, p->topic_dlq, key, strlen(key), json, strlen(json), &d, err) &&
              wait_deliveries(p, &d, 1, err);
    free(json);
    return ok;
}

/* A job id usable as a document key, from the message or derived from its
 * position (so redelivery yields the same id). */
static void derive_job_id(const rd_kafka_message_t *msg, char out[MDB_UUID_STR_LEN])
{
    static const uuid_t ns = {0x6d, 0x65, 0x74, 0x61, 0x64, 0x62, 0x4a, 0x4f,
                              0x42, 0x53, 0x9a, 0x31, 0x0c, 0x4e, 0x21, 0x7f};
    char name[512];
    uuid_t u;
    int n = snprintf(name, sizeof name, "%s/%d/%lld", msg->rkt ? rd_kafka_topic_name(msg->rkt) : "",
                     (int)msg->partition, (long long)msg->offset);
    uuid_generate_sha1(u, ns, name, (size_t)n);
    uuid_unparse_lower(u, out);
}

/* Best effort: the job id of a message that failed validation, if usable:
 * its job_id field, else its key (topic.jobs is keyed by job id). */
static char *salvage_job_id(const rd_kafka_message_t *msg)
{
    json_error_t je;
    json_t *root = msg->payload ? json_loadb(msg->payload, msg->len, 0, &je) : NULL;
    char *id = NULL;
    if (root && json_is_object(root)) {
        const char *s = json_string_value(json_object_get(root, "job_id"));
        if (s && mdb_cases_id_valid(s))
            id = strdup(s);
    }
    json_decref(root);
    if (!id && msg->key && msg->key_len > 0 && msg->key_len <= 128) {
        char *k = strndup(msg->key, msg->key_len);
        if (k && strlen(k) == msg->key_len && mdb_cases_id_valid(k))
            id = k;
        else
            free(k);
    }
    return id;
}

/* Reject a message: DLQ record + (when a job id is known) a failed job document. */
static producer_result_t reject(producer_t *p, const rd_kafka_message_t *msg, const mdb_job_msg_t *jm,
                                const char *job_id, const char *error, const char *message, mdb_error_t *err)
{
    inc(p->m_jobs_invalid, 1);
    MDB_LOGX(MDB_LOG_WARN, job_id, NULL, "job request at %s[%d]@%lld rejected (%s): %s",
             msg->rkt ? rd_kafka_topic_name(msg->rkt) : "?", (int)msg->partition, (long long)msg->offset, error,
             message);
    if (!send_dlq(p, job_id, error, message, err))
        return PRODUCER_RETRY;
    if (job_id) {
        mdb_job_msg_t empty = {0};
        int state = 0;
        if (!mdb_jobs_create(p->mongo, job_id, jm ? jm : &empty, &state, NULL, err))
            return PRODUCER_RETRY;
        if (!mdb_job_state_final(state) && !mdb_jobs_fail(p->mongo, job_id, error, message, err))
            return PRODUCER_RETRY;
    }
    return PRODUCER_DONE;
}

/* ---- resolution ---- */

typedef struct {
    producer_t *p;
    const char *job_id;
    mdb_strmap_t *seen;   /* canonical path -> selector index */
    mdb_strv_t paths;     /* canonical paths, publishing order */
    mdb_strv_t selectors; /* selector text per path */
    size_t sel_index;     /* selector being resolved */
    const char *sel_text;
    size_t found, refused, missing; /* of the selector being resolved */
    char first_refusal[MDB_ERROR_MSG_MAX];
    /* Problems for the job's errors[] (path, error code, message), kept up to
     * MDB_JOBS_MAX_ERRORS; nproblems counts all of them. */
    mdb_strv_t prob_path, prob_code, prob_msg;
    size_t nproblems;
    const struct prefetch_s *prefetch;
    mdb_error_t *err;
} resolve_ctx_t;

static bool add_problem(resolve_ctx_t *rc, const char *path, const char *code, const char *message)
{
    rc->nproblems++;
    if (rc->prob_path.n >= MDB_JOBS_MAX_ERRORS)
        return true;
    bool ok = mdb_strv_push(&rc->prob_path, path) && mdb_strv_push(&rc->prob_code, code) &&
              mdb_strv_push(&rc->prob_msg, message);
    if (!ok)
        mdb_error_set(rc->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return ok;
}

/* Lexical checks done before the file system is touched: a path must be
 * absolute, free of '.'/'..' components, and start with an archive root. */
static const char *path_lexically_refused(const mdb_archive_t *a, const char *path)
{
    if (path[0] != '/')
        return "not an absolute path";
    for (const char *c = path; *c;) {
        while (*c == '/')
            c++;
        size_t n = strcspn(c, "/");
        if ((n == 2 && c[0] == '.' && c[1] == '.') || (n == 1 && c[0] == '.'))
            return "path contains a '.' or '..' component (traversal is refused)";
        c += n;
    }
    for (size_t i = 0; i < mdb_archive_root_count(a); i++) {
        const char *r = mdb_archive_root(a, i);
        size_t n = strlen(r);
        while (n > 1 && r[n - 1] == '/')
            n--;
        if (!strncmp(path, r, n) && (path[n] == '/' || (n == 1 && r[0] == '/')))
            return NULL;
    }
    return "outside archive roots";
}

/* Record one file for the job after checking it with the archive gate. */
static bool take_file(const char *path, void *ud)
{
    resolve_ctx_t *rc = ud;
    mdb_error_t e = {0};
    const char *lex = path_lexically_refused(rc->p->archive, path);
    if (lex)
        mdb_error_set(&e, MDB_ERR_SECURITY, 0, "%s", lex);
    char *canon = lex ? NULL : mdb_archive_resolve(rc->p->archive, path, NULL, &e);
    if (!canon) {
        bool security = e.domain == MDB_ERR_SECURITY;
        if (security) {
            rc->refused++;
            inc(rc->p->m_files_refused, 1);
            if (!rc->first_refusal[0])
                snprintf(rc->first_refusal, sizeof rc->first_refusal, "%s", e.message);
        } else {
            rc->missing++;
        }
        MDB_LOGX(MDB_LOG_WARN, rc->job_id, path, "%s: %s", security ? "refused" : "not publishable", e.message);
        return add_problem(rc, path, security ? "outside_root" : "missing", e.message);
    }
    struct stat st;
    if (stat(canon, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc->missing++;
        bool ok = add_problem(rc, canon, "not_a_file", "not a regular file");
        free(canon);
        return ok;
    }
    rc->found++;
    bool created = false;
    mdb_strmap_entry_t *ent = mdb_strmap_put(rc->seen, canon, &created);
    bool ok = ent != NULL;
    if (ok && created) {
        ent->value = (int64_t)rc->sel_index;
        ok = mdb_strv_push(&rc->paths, canon) && mdb_strv_push(&rc->selectors, rc->sel_text);
    }
    free(canon);
    if (!ok)
        mdb_error_set(rc->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return ok;
}

static void conclude_selector(resolve_ctx_t *rc, mdb_selector_t *sel, const char *not_found_reason)
{
    char reason[MDB_ERROR_MSG_MAX + 64];
    if (rc->found > 0) {
        if (rc->refused || rc->missing) {
            snprintf(reason, sizeof reason, "%zu file(s) refused, %zu missing", rc->refused, rc->missing);
            mdb_selector_set(sel, MDB_SEL_FOUND, rc->found, reason);
        } else {
            mdb_selector_set(sel, MDB_SEL_FOUND, rc->found, NULL);
        }
    } else if (rc->refused > 0) {
        snprintf(reason, sizeof reason, "%s", rc->first_refusal);
        mdb_selector_set(sel, MDB_SEL_REFUSED, 0, reason);
    } else if (rc->missing > 0) {
        snprintf(reason, sizeof reason, "%zu cataloged file(s) no longer exist (re-run metadb index)", rc->missing);
        mdb_selector_set(sel, MDB_SEL_NOT_FOUND, 0, reason);
    } else {
        mdb_selector_set(sel, MDB_SEL_NOT_FOUND, 0, not_found_reason);
    }
}

/* An explicit path (retry, or a request naming files): only the archive gate decides. */
static bool resolve_path(resolve_ctx_t *rc, mdb_selector_t *sel)
{
    mdb_error_t e = {0};
    const char *lex = path_lexically_refused(rc->p->archive, sel->value);
    if (lex)
        mdb_error_set(&e, MDB_ERR_SECURITY, 0, "%s", lex);
    char *canon = lex ? NULL : mdb_archive_resolve(rc->p->archive, sel->value, NULL, &e);
    if (!canon) {
        bool security = e.domain == MDB_ERR_SECURITY;
        char reason[MDB_ERROR_MSG_MAX + 32];
        snprintf(reason, sizeof reason, "%s", e.message);
        mdb_selector_set(sel, security ? MDB_SEL_REFUSED : MDB_SEL_NOT_FOUND, 0, reason);
        inc(security ? rc->p->m_files_refused : rc->p->m_selectors_not_found, 1);
        MDB_LOGX(MDB_LOG_WARN, rc->job_id, sel->value, "%s", reason);
        return add_problem(rc, sel->value, security ? "outside_root" : "not_found", e.message);
    }
    free(canon);
    bool ok = take_file(sel->value, rc);
    if (ok)
        conclude_selector(rc, sel, "not a regular file");
    return ok;
}

/* The catalog values a job needs, resolved per kind in a few round trips
 * before the selectors are walked (a job of 1000 patients is 2 queries, not
 * 1000). */
#define NCATKINDS (MDB_SEL_SERIES + 1)
typedef struct prefetch_s {
    mdb_strmap_t *pos[NCATKINDS]; /* value -> index in values[kind] */
    mdb_strv_t values[NCATKINDS];
    mdb_strv_t *paths[NCATKINDS]; /* paths[kind][index] */
} prefetch_t;

static bool prefetch_add(prefetch_t *pf, int kind, const char *value)
{
    bool created = false;
    if (!pf->pos[kind] && !(pf->pos[kind] = mdb_strmap_new()))
        return false;
    mdb_strmap_entry_t *e = mdb_strmap_put(pf->pos[kind], value, &created);
    if (!e)
        return false;
    if (created) {
        e->value = (int64_t)pf->values[kind].n;
        return mdb_strv_push(&pf->values[kind], value);
    }
    return true;
}

static bool prefetch_run(producer_t *p, const mdb_selectors_t *sels, prefetch_t *pf, mdb_error_t *err)
{
    bool ok = true;
    for (size_t i = 0; ok && i < sels->n; i++) {
        const mdb_selector_t *sel = &sels->v[i];
        if (sel->kind <= MDB_SEL_SERIES)
            ok = prefetch_add(pf, sel->kind, sel->value);
        else if (sel->kind == MDB_SEL_CASE && sel->case_accessions.n == 0)
            ok = prefetch_add(pf, MDB_SEL_PATIENT, sel->case_patient_id);
        else if (sel->kind == MDB_SEL_CASE)
            for (size_t k = 0; ok && k < sel->case_accessions.n; k++)
                ok = prefetch_add(pf, MDB_SEL_ACCESSION, sel->case_accessions.v[k]);
    }
    if (!ok) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    for (int kind = 0; kind < NCATKINDS; kind++) {
        size_t n = pf->values[kind].n;
        if (n == 0)
            continue;
        if (!(pf->paths[kind] = calloc(n, sizeof(mdb_strv_t)))) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
        if (!mdb_resolver_resolve_many(p->resolver, kind, (const char *const *)pf->values[kind].v, n, pf->paths[kind],
                                       err))
            return false;
    }
    return true;
}

static void prefetch_clear(prefetch_t *pf)
{
    for (int kind = 0; kind < NCATKINDS; kind++) {
        for (size_t i = 0; pf->paths[kind] && i < pf->values[kind].n; i++)
            mdb_strv_clear(&pf->paths[kind][i]);
        free(pf->paths[kind]);
        mdb_strv_clear(&pf->values[kind]);
        mdb_strmap_destroy(pf->pos[kind]);
    }
    memset(pf, 0, sizeof *pf);
}

/* Feed the prefetched paths of (kind, value) through take_file. */
static bool resolve_one(resolve_ctx_t *rc, int kind, const char *value, mdb_error_t *err)
{
    (void)err;
    const prefetch_t *pf = rc->prefetch;
    mdb_strmap_entry_t *e = pf->pos[kind] ? mdb_strmap_get(pf->pos[kind], value) : NULL;
    if (!e || !pf->paths[kind])
        return true;
    const mdb_strv_t *paths = &pf->paths[kind][e->value];
    for (size_t i = 0; i < paths->n; i++)
        if (!take_file(paths->v[i], rc))
            return false;
    return true;
}

/* Resolve selector i; false only on database/OOM errors (err filled). */
static bool resolve_selector(resolve_ctx_t *rc, mdb_selectors_t *sels, size_t i)
{
    mdb_selector_t *sel = &sels->v[i];
    rc->sel_index = i;
    rc->sel_text = sel->text;
    rc->found = rc->refused = rc->missing = 0;
    rc->first_refusal[0] = '\0';
    char reason[256];

    if (sel->kind == MDB_SEL_PATH)
        return resolve_path(rc, sel);
    if (sel->kind == MDB_SEL_CASE) {
        bool ok = true;
        if (sel->case_accessions.n > 0) {
            for (size_t k = 0; ok && k < sel->case_accessions.n; k++)
                ok = resolve_one(rc, MDB_SEL_ACCESSION, sel->case_accessions.v[k], rc->err);
            snprintf(reason, sizeof reason, "no catalog entry for the case's accession number(s)");
        } else {
            ok = resolve_one(rc, MDB_SEL_PATIENT, sel->case_patient_id, rc->err);
            snprintf(reason, sizeof reason, "no catalog entry for patient '%.100s'", sel->case_patient_id);
        }
        if (!ok)
            return false;
        conclude_selector(rc, sel, reason);
        if (sel->status == MDB_SEL_NOT_FOUND)
            inc(rc->p->m_selectors_not_found, 1);
        return true;
    }
    if (!resolve_one(rc, sel->kind, sel->value, rc->err))
        return false;
    snprintf(reason, sizeof reason, "no file with this %s in the catalog",
             sel->kind == MDB_SEL_ACCESSION ? "AccessionNumber"
             : sel->kind == MDB_SEL_PATIENT ? "PatientID"
             : sel->kind == MDB_SEL_STUDY   ? "StudyInstanceUID"
                                            : "SeriesInstanceUID");
    conclude_selector(rc, sel, reason);
    if (sel->status == MDB_SEL_NOT_FOUND)
        inc(rc->p->m_selectors_not_found, 1);
    return true;
}

/* Add one case selector per case of the collection. */
static bool add_collection_cases(producer_t *p, const char *collection, mdb_selectors_t *sels, size_t *ncases,
                                 mdb_error_t *err)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(collection));
    bson_t *opts = BCON_NEW("projection", "{", "cases", BCON_INT32(1), "}");
    bson_t *doc = NULL;
    mdb_cases_t cases = {0};
    bool ok = true;
    *ncases = 0;
    if (!mdb_ops_find_one(p->mongo, MDB_COLLECTIONS_COLL, filter, opts, &doc, err)) {
        mdb_error_prefix(err, "read collection '%s'", collection);
        ok = false;
        goto done;
    }
    ok = mdb_cases_from_doc(doc, &cases);
    for (size_t i = 0; ok && i < cases.n; i++) {
        const mdb_case_t *c = &cases.v[i];
        ok = mdb_selectors_add_case(sels, c->case_id, c->patient_id ? c->patient_id : "",
                                    (const char *const *)c->accession_numbers.v, c->accession_numbers.n);
        (*ncases)++;
    }
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
done:
    mdb_cases_clear(&cases);
    bson_destroy(doc);
    bson_destroy(filter);
    bson_destroy(opts);
    return ok;
}

/* The end of a publishing round (ok: no produce call failed; produced
 * messages enqueued): wait for their reports even on failure. false with
 * err when the round or a delivery failed (the round's own error is kept). */
static bool finish_round(producer_t *p, producer_delivery_t *d, uint64_t produced, bool ok, mdb_error_t *err)
{
    mdb_error_t werr = {0};
    bool delivered = wait_deliveries(p, d, produced, &werr);
    if (ok && !delivered) {
        if (err)
            *err = werr;
        ok = false;
    }
    return ok;
}

/* Publish one task per path and wait for all delivery reports. */
static bool publish_tasks(producer_t *p, const char *job_id, const char *feature_set, const resolve_ctx_t *rc,
                          mdb_error_t *err)
{
    producer_delivery_t d = {0};
    uint64_t produced = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < rc->paths.n; i++) {
        mdb_file_msg_t fm = {.job_id = (char *)job_id,
                             .path = rc->paths.v[i],
                             .selector = rc->selectors.v[i],
                             .feature_set = (char *)feature_set};
        char *json = mdb_msg_file_encode(&fm);
        if (!json) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            ok = false;
            break;
        }
        ok = mdb_kafka_produce(p->kp, p->topic_files, fm.path, strlen(fm.path), json, strlen(json), &d, err);
        free(json);
        if (ok)
            produced++;
        if ((i & 255) == 255)
            mdb_kafka_producer_poll(p->kp, 0);
    }
    ok = finish_round(p, &d, produced, ok, err);
    if (ok)
        inc(p->m_files_published, (double)produced);
    return ok;
}

/* One retrieve task per selector to fetch; waits for every delivery report. */
bool producer_publish_retrieves(producer_t *p, const char *job_id, const char *feature_set, const char *pacs,
                                const void *selsv, const size_t *idx, size_t n, mdb_error_t *err)
{
    const mdb_selectors_t *sels = selsv;
    producer_delivery_t d = {0};
    uint64_t produced = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        const mdb_selector_t *sel = &sels->v[idx[i]];
        mdb_retrieve_msg_t rm = {.job_id = (char *)job_id,
                                 .selector_index = (int64_t)idx[i],
                                 .selector = sel->text,
                                 .kind = (char *)mdb_selector_kind_name(sel->kind),
                                 .value = sel->value,
                                 .source = (char *)pacs,
                                 .feature_set = (char *)feature_set};
        char *json = mdb_retrieve_msg_encode(&rm);
        if (!json) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            ok = false;
            break;
        }
        ok = mdb_kafka_produce(p->kp, p->topic_retrieve, job_id, strlen(job_id), json, strlen(json), &d, err);
        free(json);
        if (ok)
            produced++;
    }
    return finish_round(p, &d, produced, ok, err);
}

static size_t *realloc_idx(size_t *v, size_t n)
{
    size_t *nv = realloc(v, n * sizeof *v);
    if (!nv)
        free(v);
    return nv;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

producer_result_t producer_handle(producer_t *p, const rd_kafka_message_t *msg, mdb_error_t *err)
{
    mdb_job_msg_t jm = {0};
    mdb_selectors_t sels = {0};
    resolve_ctx_t rc = {0};
    prefetch_t pf = {0};
    char job_id_buf[MDB_UUID_STR_LEN];
    const char *job_id = NULL;
    char *salvaged = NULL;
    producer_result_t res = PRODUCER_RETRY;
    mdb_error_t verr = {0};
    double t0 = now_s();
    int state = 0;
    size_t *retr_idx = NULL; /* selectors sent to a PACS */
    size_t n_retr = 0;

    inc(p->m_jobs_received, 1);
    if (!msg->payload || msg->len == 0) {
        salvaged = salvage_job_id(msg);
        res = reject(p, msg, NULL, salvaged, "invalid_job", "empty message", err);
        goto done;
    }
    if (!mdb_msg_job_decode(msg->payload, msg->len, p->max_message_bytes, &jm, &verr)) {
        salvaged = salvage_job_id(msg);
        res = reject(p, msg, NULL, salvaged, "invalid_job", verr.message, err);
        goto done;
    }
    if (jm.job_id && !mdb_cases_id_valid(jm.job_id)) {
        res = reject(p, msg, NULL, NULL, "invalid_job",
                     "job_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ + - (not starting with . or -)", err);
        goto done;
    }
    if (jm.job_id) {
        job_id = jm.job_id;
    } else {
        derive_job_id(msg, job_id_buf);
        job_id = job_id_buf;
    }
    if (!jm.researcher_id || !mdb_cases_id_valid(jm.researcher_id)) {
        res = reject(p, msg, &jm, job_id, "invalid_job", "researcher_id is missing or not a valid identifier", err);
        goto done;
    }
    if (!jm.collection || !mdb_cases_id_valid(jm.collection)) {
        res = reject(p, msg, &jm, job_id, "invalid_job", "collection is missing or not a valid identifier", err);
        goto done;
    }
    if (jm.feature_set && !mdb_cases_id_valid(jm.feature_set)) {
        res = reject(p, msg, &jm, job_id, "invalid_job", "feature_set is not a valid name", err);
        goto done;
    }
    if (!mdb_selectors_from_job(&jm, &sels, &verr)) {
        res = reject(p, msg, &jm, job_id, "invalid_job", verr.message, err);
        goto done;
    }
    int src_mode = PRODUCER_SRC_ARCHIVE;
    const char *pacs = NULL;
    char src_why[256];
    if (!producer_source_mode(p, jm.source, &src_mode, &pacs, src_why, sizeof src_why)) {
        res = reject(p, msg, &jm, job_id, "invalid_job", src_why, err);
        goto done;
    }

    /* 2-3: the job document, and duplicate deliveries. */
    bool created = false;
    if (!mdb_jobs_create(p->mongo, job_id, &jm, &state, &created, err))
        goto done;
    if (state == MDB_JOB_RUNNING || mdb_job_state_final(state)) { /* retrieving: resolved again below */
        inc(p->m_jobs_duplicate, 1);
        MDB_LOGX(MDB_LOG_INFO, job_id, NULL, "job already %s: redelivered request ignored", mdb_job_state_name(state));
        res = PRODUCER_DONE;
        goto done;
    }
    bool first_attempt = state == MDB_JOB_SUBMITTED;
    if (!first_attempt)
        MDB_LOGX(MDB_LOG_INFO, job_id, NULL, "job found in state %s: resolving and publishing again",
                 mdb_job_state_name(state));

    /* 4: researcher and collection. */
    bool r_found = false, c_found = false;
    if (!mdb_jobs_link(p->mongo, job_id, jm.researcher_id, jm.collection, &r_found, &c_found, err))
        goto done;
    if (!r_found || !c_found) {
        char why[400];
        snprintf(why, sizeof why, "unknown %s '%s' (create it with metadb %s)", !r_found ? "researcher" : "collection",
                 !r_found ? jm.researcher_id : jm.collection, !r_found ? "researcher add" : "collection create");
        MDB_LOGX(MDB_LOG_WARN, job_id, NULL, "job failed: %s", why);
        if (!mdb_jobs_fail(p->mongo, job_id, !r_found ? "unknown_researcher" : "unknown_collection", why, err))
            goto done;
        inc(p->m_jobs_failed, 1);
        res = PRODUCER_DONE;
        goto done;
    }
    if (jm.retry_of && !mdb_jobs_note_retry(p->mongo, jm.retry_of, job_id, err))
        goto done;

    /* 5: resolution. */
    static const int from_sub[] = {MDB_JOB_SUBMITTED, MDB_JOB_RESOLVING};
    if (!mdb_jobs_set_state(p->mongo, job_id, MDB_JOB_RESOLVING, from_sub, 2, NULL, err))
        goto done;
    if (jm.all_cases) {
        size_t ncases = 0;
        if (!add_collection_cases(p, jm.collection, &sels, &ncases, err))
            goto done;
        if (ncases == 0 && sels.n == 0) {
            char why[300];
            snprintf(why, sizeof why,
                     "all_cases was asked but collection '%s' has no cases (metadb collection add-cases)",
                     jm.collection);
            if (!mdb_jobs_fail(p->mongo, job_id, "no_cases", why, err))
                goto done;
            inc(p->m_jobs_failed, 1);
            res = PRODUCER_DONE;
            goto done;
        }
    }
    rc.p = p;
    rc.job_id = job_id;
    rc.err = err;
    rc.seen = mdb_strmap_new();
    if (!rc.seen) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    if (!prefetch_run(p, &sels, &pf, err))
        goto done;
    rc.prefetch = &pf;
    for (size_t i = 0; i < sels.n; i++) {
        bool to_pacs = src_mode == PRODUCER_SRC_PACS && producer_kind_retrievable(sels.v[i].kind);
        if (!to_pacs && !resolve_selector(&rc, &sels, i))
            goto done;
        if (to_pacs || (src_mode == PRODUCER_SRC_AUTO && producer_kind_retrievable(sels.v[i].kind) &&
                        sels.v[i].status == MDB_SEL_NOT_FOUND)) {
            char why[160];
            snprintf(why, sizeof why, "retrieving from pacs:%s", pacs);
            mdb_selector_set(&sels.v[i], MDB_SEL_PENDING, 0, why);
            if (!(retr_idx = realloc_idx(retr_idx, n_retr + 1))) {
                mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
                goto done;
            }
            retr_idx[n_retr++] = i;
        }
    }
    if (!mdb_jobs_record_selectors(p->mongo, job_id, &sels, (int64_t)rc.nproblems, err))
        goto done;
    /* The problem list is pushed once: a job resumed after a crash already has it. */
    for (size_t i = 0; first_attempt && i < rc.prob_path.n; i++)
        if (!mdb_jobs_add_error(p->mongo, job_id, rc.prob_path.v[i], "producer", rc.prob_code.v[i], rc.prob_msg.v[i],
                                false, err))
            goto done;

    /* 6-7: publish, then running. */
    if (!publish_tasks(p, job_id, jm.feature_set, &rc, err)) {
        mdb_error_prefix(err, "publishing %zu file tasks", rc.paths.n);
        goto done;
    }
    int final_state = 0;
    if (n_retr > 0) {
        /* retrieving first (so the fetcher's records land), then the tasks; a
         * crash in between is repaired by the redelivery (resolved again). */
        if (!mdb_retrieval_start(p->mongo, job_id, (int64_t)rc.paths.n, (int64_t)n_retr, err) ||
            !producer_publish_retrieves(p, job_id, jm.feature_set, pacs, &sels, retr_idx, n_retr, err))
            goto done;
        final_state = MDB_JOB_RETRIEVING;
    } else if (!mdb_jobs_start_running(p->mongo, job_id, (int64_t)rc.paths.n, &final_state, err)) {
        goto done;
    }
    inc(p->m_jobs_published, 1);
    if (p->m_job_seconds)
        mdb_metric_observe(p->m_job_seconds, now_s() - t0);
    size_t nf = 0, nr = 0;
    for (size_t i = 0; i < sels.n; i++) {
        nf += sels.v[i].status == MDB_SEL_NOT_FOUND;
        nr += sels.v[i].status == MDB_SEL_REFUSED;
    }
    MDB_LOGX(MDB_LOG_INFO, job_id, NULL,
             "job published: %zu selector(s) (%zu not found, %zu refused), %zu file task(s), %zu retrieve task(s), "
             "state %s",
             sels.n, nf, nr, rc.paths.n, n_retr, mdb_job_state_name(final_state));
    res = PRODUCER_DONE;
done:
    if (res == PRODUCER_RETRY && err && !err->message[0])
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "job handling failed");
    prefetch_clear(&pf);
    mdb_strmap_destroy(rc.seen);
    mdb_strv_clear(&rc.paths);
    mdb_strv_clear(&rc.selectors);
    mdb_strv_clear(&rc.prob_path);
    mdb_strv_clear(&rc.prob_code);
    mdb_strv_clear(&rc.prob_msg);
    mdb_selectors_clear(&sels);
    mdb_msg_job_clear(&jm);
    free(salvaged);
    free(retr_idx);
    return res;
}
