/* metadb researcher add|list|show: the people jobs are submitted for.
 * A researcher is {_id: researcher_id, name, email, job_ids[], created_at,
 * updated_at}. `add` is idempotent: adding the same researcher again is a
 * no-op, adding a different name/email for an existing id is refused unless
 * --update is given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_jobs.h"
#include "mdb_cases.h"
#include "mdb_cli.h"
#include "mdb_jobs.h"
#include "mdb_ops.h"

static void researcher_usage(FILE *out)
{
    fprintf(out, "usage: metadb researcher add ID --name NAME --email EMAIL [--update]\n"
                 "       metadb researcher list [--json]\n"
                 "       metadb researcher show ID [--json]\n");
}

static int researcher_add(mdb_config_t *cfg, int argc, char **argv)
{
    const char *id = NULL, *name = NULL, *email = NULL;
    bool update = false;
    for (int i = 1; i < argc; i++) {
        int r;
        if ((r = cli_opt("researcher", argc, argv, &i, "--name", &name)) != 0) {
            if (r < 0)
                return 2;
        } else if ((r = cli_opt("researcher", argc, argv, &i, "--email", &email)) != 0) {
            if (r < 0)
                return 2;
        } else if (!strcmp(argv[i], "--update")) {
            update = true;
        } else if (argv[i][0] != '-' && !id) {
            id = argv[i];
        } else {
            fprintf(stderr, "metadb researcher add: unexpected argument '%s'\n", argv[i]);
            researcher_usage(stderr);
            return 2;
        }
    }
    if (!id || !name || !email) {
        fprintf(stderr, "metadb researcher add: ID, --name and --email are required\n");
        researcher_usage(stderr);
        return 2;
    }
    if (!mdb_cases_id_valid(id)) {
        fprintf(stderr, "metadb researcher add: '%s' is not a valid id (1-128 of A-Z a-z 0-9 . _ : @ + -)\n", id);
        return 2;
    }
    if (!mdb_cases_text_valid(name, 200, false)) {
        fprintf(stderr, "metadb researcher add: the name must be 1-200 printable characters\n");
        return 2;
    }
    if (!mdb_cases_email_valid(email)) {
        fprintf(stderr, "metadb researcher add: '%s' is not a valid e-mail address\n", email);
        return 2;
    }
    mdb_mongo_t *m = cli_mongo("researcher", cfg);
    if (!m)
        return 1;
    int rc = 1;
    char now[40];
    mdb_msg_now_iso(now, sizeof now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *upd = BCON_NEW("$setOnInsert", "{", "name", BCON_UTF8(name), "email", BCON_UTF8(email), "job_ids", "[", "]",
                           "created_at", BCON_UTF8(now), "updated_at", BCON_UTF8(now), "}");
    bson_t *doc = NULL;
    mdb_ops_result_t res;
    mdb_error_t err = {0};
    if (!mdb_ops_update_one(m, MDB_RESEARCHERS_COLL, sel, upd, true, &res, &err)) {
        fprintf(stderr, "metadb researcher add: %s\n", err.message);
        goto done;
    }
    if (res.upserted > 0) {
        printf("researcher %s added\n", id);
        rc = 0;
        goto done;
    }
    /* It existed: same data is fine, different data needs --update. */
    if (!mdb_ops_find_one(m, MDB_RESEARCHERS_COLL, sel, NULL, &doc, &err)) {
        fprintf(stderr, "metadb researcher add: %s\n", err.message);
        goto done;
    }
    const char *old_name = mdb_jobs_doc_str(doc, "name"), *old_email = mdb_jobs_doc_str(doc, "email");
    bool same = old_name && old_email && !strcmp(old_name, name) && !strcmp(old_email, email);
    if (same) {
        printf("researcher %s already exists (unchanged)\n", id);
        rc = 0;
    } else if (!update) {
        fprintf(stderr, "metadb researcher add: researcher %s exists as \"%s\" <%s>; use --update to change it\n", id,
                old_name ? old_name : "", old_email ? old_email : "");
    } else {
        bson_t *set = BCON_NEW("$set", "{", "name", BCON_UTF8(name), "email", BCON_UTF8(email), "updated_at",
                               BCON_UTF8(now), "}");
        if (mdb_ops_update_one(m, MDB_RESEARCHERS_COLL, sel, set, false, NULL, &err)) {
            printf("researcher %s updated\n", id);
            rc = 0;
        } else {
            fprintf(stderr, "metadb researcher add: %s\n", err.message);
        }
        bson_destroy(set);
    }
done:
    bson_destroy(doc);
    bson_destroy(sel);
    bson_destroy(upd);
    mdb_mongo_destroy(m);
    return rc;
}

static const char *str_or_empty(const bson_t *doc, const char *key)
{
    const char *s = mdb_jobs_doc_str(doc, key);
    return s ? s : "";
}

static void list_header(void)
{
    printf("%-24s %-30s %-36s %s\n", "RESEARCHER", "NAME", "EMAIL", "JOBS");
}

static void list_row(const bson_t *doc)
{
    printf("%-24s %-30s %-36s %zu\n", mdb_jobs_doc_str(doc, "_id"), str_or_empty(doc, "name"),
           str_or_empty(doc, "email"), cli_doc_array_len(doc, "job_ids"));
}

static void show_researcher(const bson_t *doc)
{
    bson_iter_t it, arr;
    printf("researcher %s\nname       %s\nemail      %s\ncreated    %s\njobs      ", mdb_jobs_doc_str(doc, "_id"),
           str_or_empty(doc, "name"), str_or_empty(doc, "email"),
           mdb_jobs_doc_str(doc, "created_at") ? mdb_jobs_doc_str(doc, "created_at") : "-");
    if (bson_iter_init_find(&it, doc, "job_ids") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            if (BSON_ITER_HOLDS_UTF8(&arr))
                printf(" %s", bson_iter_utf8(&arr, NULL));
    printf("\n");
}

static const cli_listing_t RESEARCHERS = {"researcher", MDB_RESEARCHERS_COLL, list_header, list_row, show_researcher};

int mdb_cmd_researcher(mdb_config_t *cfg, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        researcher_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "add"))
        return researcher_add(cfg, argc - 1, argv + 1);
    if (!strcmp(sub, "list") || !strcmp(sub, "show"))
        return cli_list_show(cfg, &RESEARCHERS, argc - 1, argv + 1);
    fprintf(stderr, "metadb researcher: unknown action '%s'\n", sub);
    researcher_usage(stderr);
    return 2;
}
