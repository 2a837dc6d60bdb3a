/* metadb status [JOB]: a job's state, file totals, per-selector resolution
 * and last errors (or, without JOB, the most recent jobs). FLAGGED counts
 * the done files catalogued with an integrity flag (Pixel Data cut short). --json prints the
 * job document(s) as JSON, one per line. Exit code for a single job follows
 * its state: 0 completed, 3 completed with errors, 1 failed, 5 still going. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_jobs.h"
#include "mdb_cli.h"
#include "mdb_jobs.h"

static void status_usage(FILE *out)
{
    fprintf(out, "usage: metadb status [JOB] [--json] [--limit N] [--errors N]\n"
                 "  JOB      show one job (state, totals, selectors, last errors); a unique prefix of\n"
                 "           at least 6 characters will do (the dashboard shows 8)\n"
                 "  --limit  number of recent jobs listed without JOB (default 20)\n"
                 "  --errors number of last errors shown for a job (default 10)\n");
}

typedef struct {
    bool json;
    size_t n;
} list_ctx_t;

static bool list_one(const bson_t *doc, void *ud)
{
    list_ctx_t *c = ud;
    c->n++;
    if (c->json) {
        cli_print_json(stdout, doc);
        return true;
    }
    const char *id = mdb_jobs_doc_str(doc, "_id"), *state = mdb_jobs_doc_str(doc, "state"),
               *r = mdb_jobs_doc_str(doc, "researcher_id"), *col = mdb_jobs_doc_str(doc, "collection"),
               *at = mdb_jobs_doc_str(doc, "submitted_at");
    char files[64];
    snprintf(files, sizeof files, "%lld/%lld", (long long)mdb_jobs_doc_int(doc, "files_done"),
             (long long)mdb_jobs_doc_int(doc, "files_total"));
    printf("%-36s %-21s %13s %7lld %7lld %-16s %-20s %s\n", id ? id : "?", state ? state : "?", files,
           (long long)mdb_jobs_doc_int(doc, "files_failed"), (long long)mdb_jobs_doc_int(doc, "files_flagged"),
           r ? r : "-", col ? col : "-", at ? at : "-");
    return true;
}

int mdb_cmd_status(mdb_config_t *cfg, int argc, char **argv)
{
    const char *job = NULL, *limit_s = NULL, *errors_s = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r;
        if ((r = cli_opt("status", argc, argv, &i, "--limit", &limit_s)) ||
            (r = cli_opt("status", argc, argv, &i, "--errors", &errors_s))) {
            if (r < 0)
                return 2;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            status_usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && !job) {
            job = argv[i];
        } else {
            fprintf(stderr, "metadb status: unexpected argument '%s'\n", argv[i]);
            status_usage(stderr);
            return 2;
        }
    }
    long limit = limit_s ? strtol(limit_s, NULL, 10) : 20;
    long max_errors = errors_s ? strtol(errors_s, NULL, 10) : 10;
    if (limit < 1 || limit > 100000 || max_errors < 0 || max_errors > 1000) {
        fprintf(stderr, "metadb status: --limit must be 1..100000 and --errors 0..1000\n");
        return 2;
    }
    mdb_mongo_t *m = cli_mongo("status", cfg);
    if (!m)
        return 1;
    mdb_error_t err = {0};
    int rc = 0;
    char *full = job ? cli_job_id("status", m, job) : NULL;
    if (job && !full) {
        rc = 1;
    } else if (job) {
        bson_t *doc = NULL;
        if (!mdb_jobs_get(m, full, &doc, &err)) {
            fprintf(stderr, "metadb status: %s\n", err.message);
            rc = 1;
        } else {
            if (json)
                cli_print_json(stdout, doc);
            else
                cli_print_job(stdout, doc, (size_t)max_errors);
            rc = cli_exit_code_for_state(mdb_jobs_doc_str(doc, "state"));
            if (rc < 0)
                rc = 5;
            bson_destroy(doc);
        }
    } else {
        list_ctx_t c = {json, 0};
        if (!json)
            printf("%-36s %-21s %13s %7s %7s %-16s %-20s %s\n", "JOB", "STATE", "DONE/TOTAL", "FAILED", "FLAGGED",
                   "RESEARCHER", "COLLECTION", "SUBMITTED");
        if (!mdb_jobs_list_recent(m, limit, list_one, &c, &err)) {
            fprintf(stderr, "metadb status: %s\n", err.message);
            rc = 1;
        } else if (c.n == 0 && !json) {
            printf("(no jobs)\n");
        }
    }
    free(full);
    mdb_mongo_destroy(m);
    return rc;
}
