/* metadb submit: publish a job request to topic.jobs (keyed by job_id) and
 * print the job id. The request is exactly the JSON any Kafka client could
 * publish (README "Job requests"); the CLI only adds checks a person wants
 * before waiting: the researcher and collection exist, the selectors are
 * well-formed, a manifest is valid. It also creates the job document in
 * state submitted, so `metadb status` knows the job before a producer has
 * picked it up. --wait follows the job to its final state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_jobs.h"
#include "mdb_cases.h"
#include "mdb_cli.h"
#include "mdb_jobs.h"
#include "mdb_ops.h"
#include "mdb_uuid.h"

static void submit_usage(FILE *out)
{
    fprintf(out, "usage: metadb submit --researcher R --collection C [selectors] [--features NAME]\n"
                 "       [--source archive|auto|pacs:NAME]  (where the studies come from; docs/pacs.md)\n"
                 "                     [--job-id ID] [--wait [--timeout S]] [--json]\n"
                 "selectors (any combination, at least one; each flag takes one or more values):\n"
                 "  --accession A...   AccessionNumber\n"
                 "  --patient P...     PatientID\n"
                 "  --study UID...     StudyInstanceUID\n"
                 "  --series UID...    SeriesInstanceUID\n"
                 "  --path FILE...     explicit files (must lie under archive.roots)\n"
                 "  --manifest CSV     cases file (case_id,patient_id,accession_numbers): each case selects its\n"
                 "                     accession numbers, or its patient when it has none\n"
                 "  --all-cases        every case of the collection\n"
                 "exit codes with --wait: 0 completed, 3 completed with errors, 1 failed, 4 timeout\n");
}

/* Collect the values following argv[*i] up to the next option. */
static int take_values(const char *flag, int argc, char **argv, int *i, mdb_strv_t *out)
{
    const char *a = argv[*i];
    size_t fl = strlen(flag);
    if (a[fl] == '=') {
        if (!mdb_strv_push(out, a + fl + 1))
            return -1;
        return 1;
    }
    int n = 0;
    while (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        if (!mdb_strv_push(out, argv[++*i]))
            return -1;
        n++;
    }
    if (n == 0) {
        fprintf(stderr, "metadb submit: %s needs at least one value\n", flag);
        return -1;
    }
    return 1;
}

static bool flag_is(const char *arg, const char *flag)
{
    size_t n = strlen(flag);
    return !strncmp(arg, flag, n) && (arg[n] == '\0' || arg[n] == '=');
}

/* Check that the researcher and the collection exist. */
static bool check_refs(mdb_mongo_t *m, const char *researcher, const char *collection)
{
    static const struct {
        const char *coll, *what, *how;
    } refs[] = {{MDB_RESEARCHERS_COLL, "researcher", "metadb researcher add"},
                {MDB_COLLECTIONS_COLL, "collection", "metadb collection create"}};
    const char *ids[] = {researcher, collection};
    bool ok = true;
    for (size_t k = 0; k < 2; k++) {
        bson_t *filter = BCON_NEW("_id", BCON_UTF8(ids[k]));
        mdb_error_t err = {0};
        int64_t n = 0;
        if (!mdb_ops_count(m, refs[k].coll, filter, NULL, &n, &err)) {
            fprintf(stderr, "metadb submit: %s\n", err.message);
            ok = false;
        } else if (n == 0) {
            fprintf(stderr, "metadb submit: unknown %s '%s' (create it with %s)\n", refs[k].what, ids[k], refs[k].how);
            ok = false;
        }
        bson_destroy(filter);
    }
    return ok;
}

static bool add_manifest(const char *path, mdb_job_msg_t *jm)
{
    mdb_cases_t cases = {0};
    if (!cli_load_manifest("submit", path, &cases))
        return false;
    bool ok = true;
    for (size_t i = 0; ok && i < cases.n; i++) {
        const mdb_case_t *c = &cases.v[i];
        if (c->accession_numbers.n == 0) {
            ok = mdb_strv_push(&jm->patient_ids, c->patient_id);
            continue;
        }
        for (size_t k = 0; ok && k < c->accession_numbers.n; k++)
            ok = mdb_strv_push(&jm->accession_numbers, c->accession_numbers.v[k]);
    }
    mdb_cases_clear(&cases);
    return ok;
}

int mdb_cmd_submit(mdb_config_t *cfg, int argc, char **argv)
{
    mdb_job_msg_t jm = {0};
    mdb_selectors_t sels = {0};
    mdb_error_t err = {0};
    mdb_mongo_t *m = NULL;
    const char *researcher = NULL, *collection = NULL, *features = NULL, *job_id = NULL, *timeout = NULL;
    const char *source = NULL; /* archive | auto | pacs:NAME */
    bool wait = false, json = false;
    int rc = 2;
    char uuid[MDB_UUID_STR_LEN], now[40];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            submit_usage(stdout);
            rc = 0;
            goto done;
        }
        if ((r = cli_opt("submit", argc, argv, &i, "--researcher", &researcher)) ||
            (r = cli_opt("submit", argc, argv, &i, "--collection", &collection)) ||
            (r = cli_opt("submit", argc, argv, &i, "--features", &features)) ||
            (r = cli_opt("submit", argc, argv, &i, "--job-id", &job_id)) ||
            (r = cli_opt("submit", argc, argv, &i, "--timeout", &timeout)) ||
            (r = cli_opt("submit", argc, argv, &i, "--source", &source))) {
            if (r < 0)
                goto done;
            continue;
        }
        if (flag_is(a, "--manifest")) {
            const char *path = NULL;
            if (cli_opt("submit", argc, argv, &i, "--manifest", &path) < 0)
                goto done;
            if (!add_manifest(path, &jm)) {
                rc = 1;
                goto done;
            }
            continue;
        }
        mdb_strv_t *target = flag_is(a, "--accession") ? &jm.accession_numbers
                             : flag_is(a, "--patient") ? &jm.patient_ids
                             : flag_is(a, "--study")   ? &jm.study_uids
                             : flag_is(a, "--series")  ? &jm.series_uids
                             : flag_is(a, "--path")    ? &jm.paths
                                                       : NULL;
        if (target) {
            const char *flag = a;
            char name[32];
            size_t fl = strcspn(flag, "=");
            snprintf(name, sizeof name, "%.*s", (int)(fl < sizeof name - 1 ? fl : sizeof name - 1), flag);
            if (take_values(name, argc, argv, &i, target) < 0)
                goto done;
            continue;
        }
        if (!strcmp(a, "--all-cases"))
            jm.all_cases = true;
        else if (!strcmp(a, "--wait"))
            wait = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else {
            fprintf(stderr, "metadb submit: unexpected argument '%s'\n", a);
            submit_usage(stderr);
            goto done;
        }
    }
    if (!researcher || !collection) {
        fprintf(stderr, "metadb submit: --researcher and --collection are required\n");
        submit_usage(stderr);
        goto done;
    }
    if (!mdb_cases_id_valid(researcher) || !mdb_cases_id_valid(collection)) {
        fprintf(stderr, "metadb submit: researcher and collection must be valid identifiers\n");
        goto done;
    }
    if (features && !mdb_cases_id_valid(features)) {
        fprintf(stderr, "metadb submit: --features '%s' is not a valid feature set name\n", features);
        goto done;
    }
    if (job_id && !mdb_cases_id_valid(job_id)) {
        fprintf(stderr, "metadb submit: --job-id '%s' is not a valid identifier\n", job_id);
        goto done;
    }
    double timeout_s = timeout ? strtod(timeout, NULL) : 0;
    if (timeout && timeout_s <= 0) {
        fprintf(stderr, "metadb submit: --timeout must be a positive number of seconds\n");
        goto done;
    }
    for (size_t i = 0; i < jm.paths.n; i++) {
        /* Relative paths mean relative to here for a person typing them. */
        if (jm.paths.v[i][0] != '/') {
            char *abs = realpath(jm.paths.v[i], NULL);
            if (abs) {
                free(jm.paths.v[i]);
                jm.paths.v[i] = abs;
            }
        }
    }
    if (!mdb_selectors_from_job(&jm, &sels, &err)) {
        fprintf(stderr, "metadb submit: %s\n", err.message);
        goto done;
    }
    if (!job_id) {
        mdb_uuid_new(uuid);
        job_id = uuid;
    }
    mdb_msg_now_iso(now, sizeof now);
    jm.job_id = strdup(job_id);
    jm.researcher_id = strdup(researcher);
    jm.collection = strdup(collection);
    jm.feature_set = features ? strdup(features) : NULL;
    jm.source = source ? strdup(source) : NULL;
    jm.submitted_at = strdup(now);
    rc = 1;
    if (!jm.job_id || !jm.researcher_id || !jm.collection || !jm.submitted_at || (features && !jm.feature_set)) {
        fprintf(stderr, "metadb submit: out of memory\n");
        goto done;
    }
    if (!(m = cli_mongo("submit", cfg)) || !check_refs(m, researcher, collection))
        goto done;
    int state = 0;
    bool created = false;
    if (!mdb_jobs_create(m, jm.job_id, &jm, &state, &created, &err)) {
        fprintf(stderr, "metadb submit: %s\n", err.message);
        goto done;
    }
    if (!created) {
        fprintf(stderr, "metadb submit: job %s already exists (state %s)\n", jm.job_id, mdb_job_state_name(state));
        goto done;
    }
    if (!cli_publish_job(cfg, &jm, &err)) {
        mdb_error_t e2 = {0};
        fprintf(stderr, "metadb submit: %s\n", err.message);
        if (!mdb_jobs_fail(m, jm.job_id, "publish_failed", err.message, &e2))
            fprintf(stderr, "metadb submit: also could not mark the job failed: %s\n", e2.message);
        goto done;
    }
    if (!json)
        printf("%s\n", jm.job_id);
    fflush(stdout);
    rc = 0;
    if (wait)
        rc = cli_wait_job(m, jm.job_id, timeout_s, json);
    if (json || wait) {
        /* The job is submitted either way; a failed read-back is still a
         * database error, reported (the id stays on stdout for scripts). */
        bson_t *doc = NULL;
        if (!mdb_jobs_get(m, jm.job_id, &doc, &err)) {
            fprintf(stderr, "metadb submit: job %s submitted, but reading it back failed: %s\n", jm.job_id,
                    err.message);
            if (json)
                printf("{\"job_id\": \"%s\"}\n", jm.job_id);
            if (rc == 0)
                rc = 1;
        } else if (json) {
            cli_print_json(stdout, doc);
        } else {
            cli_print_job(stderr, doc, 10);
        }
        bson_destroy(doc);
    }
done:
    mdb_selectors_clear(&sels);
    mdb_msg_job_clear(&jm);
    mdb_mongo_destroy(m);
    return rc;
}
