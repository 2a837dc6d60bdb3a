/* cli_jobs: what submit, retry and status have in common, and what
 * researcher and collection share with them. Publishing waits for the
 * broker's delivery report, so "submitted" printed by the CLI means the
 * request is durably in topic.jobs. Waiting polls the job document (the
 * producer and linker keep it current) twice a second. */
#include "cli_jobs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdb_jobs.h"
#include "mdb_kafka.h"
#include "mdb_ops.h"
#include "mdb_signal.h"

int cli_opt(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "metadb %s: %s needs a value\n", cmd, name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

mdb_mongo_t *cli_mongo(const char *cmd, const mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    if (!m || !mdb_mongo_ping(m, &err)) {
        fprintf(stderr, "metadb %s: database: %s\n", cmd, err.message);
        mdb_mongo_destroy(m);
        return NULL;
    }
    return m;
}

typedef struct {
    int done;
    bool ok;
    char error[256];
} one_delivery_t;

static void one_dr(void *opaque, bool ok, const char *errstr, void *ud)
{
    (void)ud;
    one_delivery_t *d = opaque;
    if (!d)
        return;
    d->done = 1;
    d->ok = ok;
    if (!ok)
        snprintf(d->error, sizeof d->error, "%s", errstr ? errstr : "delivery failed");
}

bool cli_publish_job(const mdb_config_t *cfg, const mdb_job_msg_t *m, mdb_error_t *err)
{
    one_delivery_t d = {0};
    char *json = mdb_msg_job_encode(m);
    const char *topic = mdb_config_get(cfg, "topic.jobs");
    bool ok = false;
    if (!json) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    mdb_kafka_producer_t *kp = mdb_kafka_producer_new(cfg, one_dr, NULL, err);
    if (!kp)
        goto done;
    if (!mdb_kafka_produce(kp, topic, m->job_id, strlen(m->job_id), json, strlen(json), &d, err))
        goto done;
    if (!mdb_kafka_producer_flush(kp, 60000, err))
        goto done;
    mdb_kafka_producer_poll(kp, 0);
    if (!d.done || !d.ok) {
        mdb_error_set(err, MDB_ERR_KAFKA, 0, "publishing to %s failed: %s", topic,
                      d.done ? d.error : "no delivery report");
        goto done;
    }
    ok = true;
done:
    mdb_kafka_producer_destroy(kp);
    free(json);
    return ok;
}

int cli_exit_code_for_state(const char *state)
{
    if (!state)
        return -1;
    if (!strcmp(state, "completed"))
        return 0;
    if (!strcmp(state, "failed"))
        return 1;
    if (!strcmp(state, "completed_with_errors"))
        return 3;
    return -1;
}

static double mono_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int cli_wait_job(mdb_mongo_t *m, const char *job_id, double timeout_s, bool quiet)
{
    bool tty = isatty(STDERR_FILENO) && !quiet;
    double t0 = mono_now();
    char last_state[40] = "";
    int64_t last_done = -1;
    bool printed_line = false;
    for (;;) {
        bson_t *doc = NULL;
        mdb_error_t err = {0};
        if (!mdb_jobs_get(m, job_id, &doc, &err)) {
            if (err.domain != MDB_ERR_NOTFOUND) {
                fprintf(stderr, "%smetadb: %s\n", printed_line ? "\n" : "", err.message);
                return 1;
            }
        }
        const char *state = doc ? mdb_jobs_doc_str(doc, "state") : "submitted";
        if (!state)
            state = "unknown";
        int64_t total = mdb_jobs_doc_int(doc, "files_total");
        int64_t done = mdb_jobs_doc_int(doc, "files_done");
        int64_t failed = mdb_jobs_doc_int(doc, "files_failed");
        double el = mono_now() - t0;
        int code = cli_exit_code_for_state(state);
        bool changed = strcmp(state, last_state) != 0 || done + failed != last_done;
        if (tty) {
            const char *hint = !doc || !strcmp(state, "submitted") ? " (waiting for a producer)" : "";
            if (total > 0)
                fprintf(stderr, "\r\033[K%s: %s %lld/%lld files (%lld failed) %3.0f%% %5.1fs%s", job_id, state,
                        (long long)(done + failed), (long long)total, (long long)failed,
                        100.0 * (double)(done + failed) / (double)total, el, hint);
            else
                fprintf(stderr, "\r\033[K%s: %s %5.1fs%s", job_id, state, el, hint);
            printed_line = true;
        } else if (!quiet && changed) {
            fprintf(stderr, "%s: %s %lld/%lld files (%lld failed)\n", job_id, state, (long long)(done + failed),
                    (long long)total, (long long)failed);
        }
        snprintf(last_state, sizeof last_state, "%s", state);
        last_done = done + failed;
        bson_destroy(doc);
        if (code >= 0) {
            if (tty)
                fputc('\n', stderr);
            return code;
        }
        if (mdb_signal_stop_requested() || (timeout_s > 0 && el > timeout_s)) {
            if (tty)
                fputc('\n', stderr);
            if (!quiet)
                fprintf(stderr, "metadb: stopped waiting for %s (state %s); it goes on in the background\n", job_id,
                        state);
            return 4;
        }
        usleep(500000);
    }
}

void cli_print_json(FILE *out, const bson_t *doc)
{
    char *s = bson_as_relaxed_extended_json(doc, NULL);
    if (s) {
        fprintf(out, "%s\n", s);
        bson_free(s);
    }
}

static const char *str_or(const bson_t *doc, const char *key, const char *dflt)
{
    const char *s = mdb_jobs_doc_str(doc, key);
    return s ? s : dflt;
}

static bool sub_doc(const bson_iter_t *it, bson_t *out)
{
    const uint8_t *data;
    uint32_t len;
    if (!BSON_ITER_HOLDS_DOCUMENT(it))
        return false;
    bson_iter_document(it, &len, &data);
    return bson_init_static(out, data, len);
}

void cli_print_job(FILE *out, const bson_t *job, size_t max_errors)
{
    bson_iter_t it, arr;
    fprintf(out, "job         %s\n", str_or(job, "_id", "?"));
    fprintf(out, "state       %s\n", str_or(job, "state", "?"));
    fprintf(out, "researcher  %s\n", str_or(job, "researcher_id", "-"));
    fprintf(out, "collection  %s\n", str_or(job, "collection", "-"));
    fprintf(out, "feature set %s\n", str_or(job, "feature_set", "default"));
    if (mdb_jobs_doc_str(job, "retry_of"))
        fprintf(out, "retry of    %s\n", mdb_jobs_doc_str(job, "retry_of"));
    fprintf(out, "submitted   %s\n", str_or(job, "submitted_at", "-"));
    if (mdb_jobs_doc_str(job, "completed_at"))
        fprintf(out, "completed   %s\n", mdb_jobs_doc_str(job, "completed_at"));
    else
        fprintf(out, "updated     %s\n", str_or(job, "updated_at", "-"));
    int64_t total = mdb_jobs_doc_int(job, "files_total"), done = mdb_jobs_doc_int(job, "files_done"),
            failed = mdb_jobs_doc_int(job, "files_failed");
    fprintf(out, "files       %lld total, %lld done, %lld failed, %lld pending\n", (long long)total, (long long)done,
            (long long)failed, (long long)(total - done - failed > 0 ? total - done - failed : 0));
    int64_t flagged = mdb_jobs_doc_int(job, "files_flagged");
    if (flagged > 0)
        fprintf(out,
                "flagged     %lld of the done files are damaged (catalogued with an integrity flag: "
                "instances?integrity=exists:true)\n",
                (long long)flagged);
    fprintf(out, "instances   %lld linked\n", (long long)mdb_jobs_doc_int(job, "instances_linked"));
    if (bson_iter_init_find(&it, job, "retries") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr)) {
        fprintf(out, "retries    ");
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                fprintf(out, " %s", bson_iter_utf8(&arr, NULL));
        fputc('\n', out);
    }
    if (bson_iter_init_find(&it, job, "selectors") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr)) {
        size_t n = 0;
        while (bson_iter_next(&arr)) {
            bson_t sel;
            if (!sub_doc(&arr, &sel))
                continue;
            if (n++ == 0)
                fprintf(out, "selectors\n");
            const char *status = str_or(&sel, "status", "?");
            const char *reason = mdb_jobs_doc_str(&sel, "reason");
            if (!strcmp(status, "found"))
                fprintf(out, "  %-50s found %lld file(s)%s%s\n", str_or(&sel, "selector", "?"),
                        (long long)mdb_jobs_doc_int(&sel, "files"), reason ? "; " : "", reason ? reason : "");
            else
                fprintf(out, "  %-50s %s%s%s\n", str_or(&sel, "selector", "?"),
                        !strcmp(status, "not_found") ? "NOT FOUND"
                        : !strcmp(status, "refused") ? "REFUSED"
                                                     : status,
                        reason ? ": " : "", reason ? reason : "");
        }
        if (n == 0)
            fprintf(out, "selectors   (not resolved yet)\n");
    }
    /* PACS retrievals (mdb_retrieval.h): per selector, found studies and instances received. */
    if (bson_iter_init_find(&it, job, "retrievals") && BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &arr)) {
        size_t n = 0;
        while (bson_iter_next(&arr)) {
            bson_t r;
            if (!sub_doc(&arr, &r))
                continue;
            if (n++ == 0)
                fprintf(out, "retrievals  (%lld expected)\n", (long long)mdb_jobs_doc_int(job, "retrieve_total"));
            const char *reason = mdb_jobs_doc_str(&r, "reason");
            fprintf(
                out,
                "  %-40s %-10s from %s: %lld stud%s, %lld/%lld instance(s) landed, %lld missing, %lld attempt(s)%s%s\n",
                str_or(&r, "selector", "?"), str_or(&r, "status", "?"), str_or(&r, "source", "?"),
                (long long)mdb_jobs_doc_int(&r, "studies"), mdb_jobs_doc_int(&r, "studies") == 1 ? "y" : "ies",
                (long long)mdb_jobs_doc_int(&r, "landed"), (long long)mdb_jobs_doc_int(&r, "expected"),
                (long long)mdb_jobs_doc_int(&r, "missing_count"), (long long)mdb_jobs_doc_int(&r, "attempts"),
                reason ? "; " : "", reason ? reason : "");
        }
    }
    if (bson_iter_init_find(&it, job, "errors") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr)) {
        /* Show the last max_errors. */
        size_t count = 0;
        bson_iter_t c = arr;
        while (bson_iter_next(&c))
            count++;
        if (count > 0)
            fprintf(out, "errors      %zu recorded%s\n", count, count > max_errors ? " (last ones shown)" : "");
        size_t i = 0;
        while (bson_iter_next(&arr)) {
            bson_t e;
            if (i++ < (count > max_errors ? count - max_errors : 0) || !sub_doc(&arr, &e))
                continue;
            const char *path = mdb_jobs_doc_str(&e, "path");
            const char *msg = mdb_jobs_doc_str(&e, "message");
            fprintf(out, "  [%s] %s%s%s%s%s\n", str_or(&e, "stage", "?"), str_or(&e, "error", "?"), path ? " " : "",
                    path ? path : "", msg ? ": " : "", msg ? msg : "");
        }
    }
}

char *cli_job_id(const char *cmd, mdb_mongo_t *m, const char *arg)
{
    mdb_error_t err = {0};
    char *id = NULL;
    if (!mdb_jobs_resolve(m, arg, &id, &err)) {
        fprintf(stderr, "metadb %s: %s\n", cmd, err.message);
        return NULL;
    }
    return id;
}

bool cli_load_manifest(const char *cmd, const char *path, mdb_cases_t *cases)
{
    mdb_cases_problems_t problems = {0};
    mdb_error_t err = {0};
    if (mdb_cases_load_csv(path, cases, &problems, &err))
        return true;
    for (size_t i = 0; i < problems.messages.n; i++)
        fprintf(stderr, "%s: %s\n", path, problems.messages.v[i]);
    if (problems.total > problems.messages.n)
        fprintf(stderr, "%s: ... and %zu more\n", path, problems.total - problems.messages.n);
    fprintf(stderr, "metadb %s: %s\n", cmd, err.message);
    mdb_cases_problems_clear(&problems);
    return false;
}

size_t cli_doc_array_len(const bson_t *doc, const char *key)
{
    bson_iter_t it, arr;
    size_t n = 0;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            n++;
    return n;
}

typedef struct {
    const cli_listing_t *l;
    const char *id; /* show ID; NULL for list */
    bool json;
    size_t n;
} list_ctx_t;

/* The table header, printed with the first row (or after an empty, successful
 * find), so that a failed find leaves stdout empty. */
static void list_header(const list_ctx_t *lc)
{
    if (!lc->json && !lc->id)
        lc->l->header();
}

static bool list_one(const bson_t *doc, void *ud, mdb_error_t *err)
{
    list_ctx_t *lc = ud;
    (void)err;
    if (lc->n++ == 0)
        list_header(lc);
    if (lc->json)
        cli_print_json(stdout, doc);
    else if (lc->id)
        lc->l->show(doc);
    else
        lc->l->row(doc);
    return true;
}

int cli_list_show(const mdb_config_t *cfg, const cli_listing_t *l, int argc, char **argv)
{
    const char *sub = argv[0];
    bool show = !strcmp(sub, "show");
    list_ctx_t lc = {.l = l};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            lc.json = true;
        else if (show && !lc.id && argv[i][0] != '-')
            lc.id = argv[i];
        else {
            fprintf(stderr, "metadb %s %s: unexpected argument '%s'\n", l->cmd, sub, argv[i]);
            return 2;
        }
    }
    if (show && !lc.id) {
        fprintf(stderr, "metadb %s show: which %s?\n", l->cmd, l->cmd);
        return 2;
    }
    mdb_mongo_t *m = cli_mongo(l->cmd, cfg);
    if (!m)
        return 1;
    int rc = 0;
    mdb_error_t err = {0};
    bson_t *filter = lc.id ? BCON_NEW("_id", BCON_UTF8(lc.id)) : bson_new();
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    if (!mdb_ops_find(m, l->coll, filter, opts, list_one, &lc, &err)) {
        fprintf(stderr, "metadb %s: %s\n", l->cmd, err.message);
        rc = 1;
    } else if (lc.n == 0 && !lc.id) {
        list_header(&lc);
    } else if (lc.id && lc.n == 0) {
        fprintf(stderr, "metadb %s: no %s '%s'\n", l->cmd, l->cmd, lc.id);
        rc = 1;
    }
    bson_destroy(filter);
    bson_destroy(opts);
    mdb_mongo_destroy(m);
    return rc;
}
