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
    bson_t *upd = BCON_NEW("$setOnInsert", "{", "name", BCON_UTF8(name), "email", BCON_UTF8(email), "job_ids", "[",
                           "]", "created_at", BCON_UTF8(now), "updated_at", BCON_UTF8(now), "}");
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
        fprintf(stderr,
                "metadb researcher add: researcher %s exists as \"%s\" <%s>; use --update to change it\n", id,
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

static size_t array_len(const bson_t *doc, const char *key)
{
    bson_iter_t it, arr;
    size_t n = 0;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
        while (bson_iter_next(&arr))
            n++;
    return n;
}

typedef struct {
    const char *id;
    bool json;
    size_t n;
} list_ctx_t;

/* The table header, printed with the first row (or after an empty, successful
 * find), so that a failed find leaves stdout empty. */
static void list_header(const list_ctx_t *lc)
{
    if (!lc->json && !lc->id)
        printf("%-24s %-30s %-36s %s\n", "RESEARCHER", "NAME", "EMAIL", "JOBS");
}

static bool list_one(const bson_t *doc, void *ud, mdb_error_t *err)
{
    list_ctx_t *lc = ud;
    (void)err;
    if (lc->n++ == 0)
        list_header(lc);
    if (lc->json) {
        cli_print_json(stdout, doc);
    } else if (lc->id) {
        bson_iter_t it, arr;
        printf("researcher %s\nname       %s\nemail      %s\ncreated    %s\njobs      ",
               mdb_jobs_doc_str(doc, "_id"), mdb_jobs_doc_str(doc, "name") ? mdb_jobs_doc_str(doc, "name") : "",
               mdb_jobs_doc_str(doc, "email") ? mdb_jobs_doc_str(doc, "email") : "",
               mdb_jobs_doc_str(doc, "created_at") ? mdb_jobs_doc_str(doc, "created_at") : "-");
        if (bson_iter_init_find(&it, doc, "job_ids") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &arr))
            while (bson_iter_next(&arr))
                if (BSON_ITER_HOLDS_UTF8(&arr))
                    printf(" %s", bson_iter_utf8(&arr, NULL));
        printf("\n");
    } else {
        printf("%-24s %-30s %-36s %zu\n", mdb_jobs_doc_str(doc, "_id"),
               mdb_jobs_doc_str(doc, "name") ? mdb_jobs_doc_str(doc, "name") : "",
               mdb_jobs_doc_str(doc, "email") ? mdb_jobs_doc_str(doc, "email") : "", array_len(doc, "job_ids"));
    }
    return true;
}

static int researcher_list(mdb_config_t *cfg, const char *id, bool json)
{
    mdb_mongo_t *m = cli_mongo("researcher", cfg);
    if (!m)
        return 1;
    int rc = 0;
    list_ctx_t lc = {id, json, 0};
    mdb_error_t err = {0};
    bson_t *filter = id ? BCON_NEW("_id", BCON_UTF8(id)) : bson_new();
    bson_t *opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
    if (!mdb_ops_find(m, MDB_RESEARCHERS_COLL, filter, opts, list_one, &lc, &err)) {
        fprintf(stderr, "metadb researcher: %s\n", err.message);
        rc = 1;
    } else if (lc.n == 0 && !id) {
        list_header(&lc);
    } else if (id && lc.n == 0) {
        fprintf(stderr, "metadb researcher: no researcher '%s'\n", id);
        rc = 1;
    }
    bson_destroy(filter);
    bson_destroy(opts);
    mdb_mongo_destroy(m);
    return rc;
}

int mdb_cmd_researcher(mdb_config_t *cfg, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        researcher_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "add"))
        return researcher_add(cfg, argc - 1, argv + 1);
    if (!strcmp(sub, "list") || !strcmp(sub, "show")) {
        bool json = false;
        const char *id = NULL;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--json"))
                json = true;
            else if (!strcmp(sub, "show") && !id && argv[i][0] != '-')
                id = argv[i];
            else {
                fprintf(stderr, "metadb researcher %s: unexpected argument '%s'\n", sub, argv[i]);
                return 2;
            }
        }
        if (!strcmp(sub, "show") && !id) {
            fprintf(stderr, "metadb researcher show: which researcher?\n");
            return 2;
        }
        return researcher_list(cfg, id, json);
    }
    fprintf(stderr, "metadb researcher: unknown action '%s'\n", sub);
    researcher_usage(stderr);
    return 2;
}
