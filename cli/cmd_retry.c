/* metadb retry JOB: re-publish only the files of JOB that failed (job_files
 * with status failed, plus worker/linker errors naming a path), as a new job
 * with retry_of = JOB and paths = those files, for the same researcher and
 * collection (and feature set, unless --features names another). Requests
 * larger than a Kafka message allows are split into several retry jobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_jobs.h"
#include "mdb_cases.h"
#include "mdb_cli.h"
#include "mdb_jobs.h"
#include "mdb_uuid.h"

static void retry_usage(FILE *out)
{
    fprintf(out, "usage: metadb retry JOB [--features NAME] [--force] [--dry-run] [--wait [--timeout S]] [--json]\n"
                 "  re-publishes the failed files of JOB as a new job (retry_of = JOB); JOB may be a\n"
                 "  unique prefix of at least 6 characters\n"
                 "  --force    retry even if JOB has not finished yet\n"
                 "  --dry-run  list the files that would be retried\n");
}

int mdb_cmd_retry(mdb_config_t *cfg, int argc, char **argv)
{
    const char *job = NULL, *features = NULL, *timeout = NULL;
    bool force = false, dry = false, wait = false, json = false;
    for (int i = 1; i < argc; i++) {
        int r;
        if ((r = cli_opt("retry", argc, argv, &i, "--features", &features)) ||
            (r = cli_opt("retry", argc, argv, &i, "--timeout", &timeout))) {
            if (r < 0)
                return 2;
        } else if (!strcmp(argv[i], "--force")) {
            force = true;
        } else if (!strcmp(argv[i], "--dry-run")) {
            dry = true;
        } else if (!strcmp(argv[i], "--wait")) {
            wait = true;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            retry_usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !job) {
            job = argv[i];
        } else {
            fprintf(stderr, "metadb retry: unexpected argument '%s'\n", argv[i]);
            retry_usage(stderr);
            return 2;
        }
    }
    if (!job) {
        fprintf(stderr, "metadb retry: which job?\n");
        retry_usage(stderr);
        return 2;
    }
    if (features && !mdb_cases_id_valid(features)) {
        fprintf(stderr, "metadb retry: --features '%s' is not a valid feature set name\n", features);
        return 2;
    }
    double timeout_s = timeout ? strtod(timeout, NULL) : 0;
    mdb_mongo_t *m = cli_mongo("retry", cfg);
    if (!m)
        return 1;
    mdb_error_t err = {0};
    mdb_strv_t failed = {0};
    bson_t *doc = NULL;
    mdb_strv_t ids = {0};
    int rc = 1;
    bool db_failed = false;
    char *full = cli_job_id("retry", m, job);
    if (!full)
        goto done;
    job = full;
    if (!mdb_jobs_get(m, job, &doc, &err)) {
        fprintf(stderr, "metadb retry: %s\n", err.message);
        goto done;
    }
    const char *state = mdb_jobs_doc_str(doc, "state");
    int st = 0;
    if (!force && (!state || !mdb_job_state_parse(state, &st) || !mdb_job_state_final(st))) {
        fprintf(stderr, "metadb retry: job %s is still %s; wait for it to finish or use --force\n", job,
                state ? state : "unknown");
        goto done;
    }
    if (!mdb_jobs_failed_paths(m, job, &failed, &err)) {
        fprintf(stderr, "metadb retry: %s\n", err.message);
        goto done;
    }
    if (failed.n == 0) {
        if (json)
            printf("{\"job_id\": null, \"retry_of\": \"%s\", \"files\": 0}\n", job);
        else
            printf("job %s has no failed files: nothing to retry\n", job);
        rc = 0;
        goto done;
    }
    if (dry) {
        for (size_t i = 0; i < failed.n; i++)
            printf("%s\n", failed.v[i]);
        fprintf(stderr, "%zu file(s) would be retried\n", failed.n);
        rc = 0;
        goto done;
    }
    const char *orig_features = mdb_jobs_doc_str(doc, "feature_set");
    size_t max_bytes = (size_t)mdb_config_get_int(cfg, "kafka.max_message_bytes");
    size_t budget = max_bytes > 4096 ? max_bytes - 4096 : max_bytes / 2;
    size_t next = 0;
    while (next < failed.n) {
        mdb_job_msg_t jm = {0};
        char uuid[MDB_UUID_STR_LEN], now[40];
        mdb_uuid_new(uuid);
        mdb_msg_now_iso(now, sizeof now);
        jm.job_id = strdup(uuid);
        jm.researcher_id = strdup(mdb_jobs_doc_str(doc, "researcher_id") ? mdb_jobs_doc_str(doc, "researcher_id") : "");
        jm.collection = strdup(mdb_jobs_doc_str(doc, "collection") ? mdb_jobs_doc_str(doc, "collection") : "");
        const char *fs = features ? features : orig_features;
        jm.feature_set = fs ? strdup(fs) : NULL;
        jm.submitted_at = strdup(now);
        jm.retry_of = strdup(job);
        size_t bytes = 0;
        while (next < failed.n && (jm.paths.n == 0 || bytes + strlen(failed.v[next]) + 4 < budget)) {
            bytes += strlen(failed.v[next]) + 4;
            mdb_strv_push(&jm.paths, failed.v[next++]);
        }
        bool ok = mdb_jobs_create(m, jm.job_id, &jm, NULL, NULL, &err) && cli_publish_job(cfg, &jm, &err);
        if (!ok) {
            fprintf(stderr, "metadb retry: %s\n", err.message);
            mdb_msg_job_clear(&jm);
            goto done;
        }
        /* The producer records the link too; a failure here is still reported. */
        if (!mdb_jobs_note_retry(m, job, jm.job_id, &err)) {
            fprintf(stderr, "metadb retry: %s\n", err.message);
            db_failed = true;
        }
        mdb_strv_push(&ids, jm.job_id);
        if (!json)
            printf("%s\n", jm.job_id);
        fprintf(stderr, "retry job %s: %zu failed file(s) of %s re-published\n", jm.job_id, jm.paths.n, job);
        mdb_msg_job_clear(&jm);
    }
    fflush(stdout);
    rc = db_failed ? 1 : 0;
    for (size_t i = 0; wait && i < ids.n; i++) {
        int r = cli_wait_job(m, ids.v[i], timeout_s, json);
        if (r > rc)
            rc = r;
    }
    for (size_t i = 0; json && i < ids.n; i++) {
        bson_t *j = NULL;
        if (!mdb_jobs_get(m, ids.v[i], &j, &err)) {
            fprintf(stderr, "metadb retry: %s\n", err.message);
            rc = rc > 1 ? rc : 1;
            continue;
        }
        cli_print_json(stdout, j);
        bson_destroy(j);
    }
done:
    mdb_strv_clear(&ids);
    mdb_strv_clear(&failed);
    bson_destroy(doc);
    free(full);
    mdb_mongo_destroy(m);
    return rc;
}
