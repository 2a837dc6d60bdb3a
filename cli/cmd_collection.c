/* metadb collection create|add-cases|list|show: named cohorts of cases.
 * A collection is {_id: name, description, cases: [{case_id, patient_id,
 * accession_numbers[]}], job_ids[], rev, created_at, updated_at}.
 *
 * add-cases is all-or-nothing: the manifest is parsed and checked in full
 * (every bad row reported with its line number), then checked against the
 * cases already in the collection, and only if everything is right are the
 * new cases appended, in one conditional update on `rev` so two concurrent
 * loads cannot interleave. Re-loading the same manifest adds nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_jobs.h"
#include "mdb_cases.h"
#include "mdb_cases_doc.h"
#include "mdb_cli.h"
#include "mdb_jobs.h"
#include "mdb_ops.h"
#include "mdb_strmap.h"

static void collection_usage(FILE *out)
{
    fprintf(out, "usage: metadb collection create NAME [--description TEXT]\n"
                 "       metadb collection add-cases NAME --manifest cases.csv\n"
                 "       metadb collection list [--json]\n"
                 "       metadb collection show NAME [--json]\n"
                 "manifest: CSV with header case_id,patient_id,accession_numbers; accession numbers\n"
                 "separated by ';' (quote fields that contain commas)\n");
}

static int collection_create(mdb_config_t *cfg, int argc, char **argv)
{
    const char *name = NULL, *desc = "";
    for (int i = 1; i < argc; i++) {
        int r = cli_opt("collection create", argc, argv, &i, "--description", &desc);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (argv[i][0] != '-' && !name) {
            name = argv[i];
            continue;
        }
        fprintf(stderr, "metadb collection create: unexpected argument '%s'\n", argv[i]);
        return 2;
    }
    if (!name) {
        fprintf(stderr, "metadb collection create: NAME is required\n");
        collection_usage(stderr);
        return 2;
    }
    if (!mdb_cases_id_valid(name)) {
        fprintf(stderr, "metadb collection create: '%s' is not a valid name (1-128 of A-Z a-z 0-9 . _ : @ + -)\n",
                name);
        return 2;
    }
    if (*desc && !mdb_cases_text_valid(desc, 4000, true)) {
        fprintf(stderr, "metadb collection create: the description must be printable UTF-8 text (<= 4000 bytes)\n");
        return 2;
    }
    mdb_mongo_t *m = cli_mongo("collection", cfg);
    if (!m)
        return 1;
    int rc = 1;
    char now[40];
    mdb_msg_now_iso(now, sizeof now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(name));
    bson_t *upd = BCON_NEW("$setOnInsert", "{", "description", BCON_UTF8(desc), "cases", "[", "]", "job_ids", "[", "]",
                           "rev", BCON_INT64(0), "created_at", BCON_UTF8(now), "updated_at", BCON_UTF8(now), "}");
    mdb_ops_result_t res;
    mdb_error_t err = {0};
    bson_t *doc = NULL;
    if (!mdb_ops_update_one(m, MDB_COLLECTIONS_COLL, sel, upd, true, &res, &err)) {
        fprintf(stderr, "metadb collection create: %s\n", err.message);
    } else if (res.upserted > 0) {
        printf("collection %s created\n", name);
        rc = 0;
    } else if (!mdb_ops_find_one(m, MDB_COLLECTIONS_COLL, sel, NULL, &doc, &err)) {
        fprintf(stderr, "metadb collection create: %s\n", err.message);
    } else {
        /* Exists already: fine when the description agrees (idempotent scripts). */
        const char *old = mdb_jobs_doc_str(doc, "description");
        if (old && !strcmp(old, desc)) {
            printf("collection %s already exists (unchanged)\n", name);
            rc = 0;
        } else {
            fprintf(stderr, "metadb collection create: collection %s already exists with description \"%s\"\n", name,
                    old ? old : "");
        }
    }
    bson_destroy(doc);
    bson_destroy(sel);
    bson_destroy(upd);
    mdb_mongo_destroy(m);
    return rc;
}

static void append_case(bson_t *arr, size_t i, const mdb_case_t *c)
{
    char idx[16];
    const char *ik;
    bson_t doc, accs;
    bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
    bson_append_document_begin(arr, ik, -1, &doc);
    BSON_APPEND_UTF8(&doc, "case_id", c->case_id);
    BSON_APPEND_UTF8(&doc, "patient_id", c->patient_id);
    bson_append_array_begin(&doc, "accession_numbers", -1, &accs);
    for (size_t k = 0; k < c->accession_numbers.n; k++) {
        bson_uint32_to_string((uint32_t)k, &ik, idx, sizeof idx);
        BSON_APPEND_UTF8(&accs, ik, c->accession_numbers.v[k]);
    }
    bson_append_array_end(&doc, &accs);
    bson_append_document_end(arr, &doc);
}

/* Compare the manifest with the collection: new cases go to fresh; problems
 * (same case_id with other data, an accession owned by another case) are
 * reported with the manifest line. Returns the number of problems. */
static size_t merge_check(const mdb_cases_t *existing, const mdb_cases_t *manifest, mdb_cases_t *fresh, size_t *already,
                          bool *oom)
{
    size_t problems = 0;
    mdb_strmap_t *by_id = mdb_strmap_new(), *by_acc = mdb_strmap_new();
    *already = 0;
    *oom = !by_id || !by_acc;
    for (size_t i = 0; !*oom && i < existing->n; i++) {
        mdb_strmap_entry_t *e = mdb_strmap_put(by_id, existing->v[i].case_id, NULL);
        if (!e) {
            *oom = true;
            break;
        }
        e->value = (int64_t)i;
        for (size_t k = 0; k < existing->v[i].accession_numbers.n; k++) {
            mdb_strmap_entry_t *a = mdb_strmap_put(by_acc, existing->v[i].accession_numbers.v[k], NULL);
            if (!a) {
                *oom = true;
                break;
            }
            a->value = (int64_t)i;
        }
    }
    for (size_t i = 0; !*oom && i < manifest->n; i++) {
        const mdb_case_t *c = &manifest->v[i];
        mdb_strmap_entry_t *e = mdb_strmap_get(by_id, c->case_id);
        if (e) {
            if (mdb_case_equal(&existing->v[e->value], c)) {
                (*already)++;
            } else {
                fprintf(stderr,
                        "line %d: case '%s' is already in the collection with a different patient or "
                        "accession numbers\n",
                        c->line, c->case_id);
                problems++;
            }
            continue;
        }
        bool bad = false;
        for (size_t k = 0; k < c->accession_numbers.n; k++) {
            mdb_strmap_entry_t *a = mdb_strmap_get(by_acc, c->accession_numbers.v[k]);
            if (a) {
                fprintf(stderr, "line %d: accession number '%s' already belongs to case '%s' of the collection\n",
                        c->line, c->accession_numbers.v[k], existing->v[a->value].case_id);
                bad = true;
            }
        }
        if (bad) {
            problems++;
            continue;
        }
        if (!mdb_cases_push(fresh, c))
            *oom = true;
    }
    mdb_strmap_destroy(by_id);
    mdb_strmap_destroy(by_acc);
    return problems;
}

static int collection_add_cases(mdb_config_t *cfg, int argc, char **argv)
{
    const char *name = NULL, *manifest = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_opt("collection add-cases", argc, argv, &i, "--manifest", &manifest);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (argv[i][0] != '-' && !name)
            name = argv[i];
        else if (argv[i][0] != '-' && !manifest)
            manifest = argv[i];
        else {
            fprintf(stderr, "metadb collection add-cases: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!name || !manifest) {
        fprintf(stderr, "metadb collection add-cases: NAME and --manifest FILE are required\n");
        collection_usage(stderr);
        return 2;
    }
    mdb_cases_t cases = {0}, existing = {0}, fresh = {0};
    mdb_error_t err = {0};
    if (!cli_load_manifest("collection add-cases", manifest, &cases))
        return 1;
    mdb_mongo_t *m = cli_mongo("collection", cfg);
    if (!m) {
        mdb_cases_clear(&cases);
        return 1;
    }
    int rc = 1;
    for (int attempt = 0; attempt < 10; attempt++) {
        bson_t *filter = BCON_NEW("_id", BCON_UTF8(name));
        bson_t *doc = NULL;
        bool found = mdb_ops_find_one(m, MDB_COLLECTIONS_COLL, filter, NULL, &doc, &err);
        bson_destroy(filter);
        if (!found) {
            fprintf(stderr, "metadb collection add-cases: %s\n", err.message);
            break;
        }
        if (!doc) {
            fprintf(stderr, "metadb collection add-cases: no collection '%s' (metadb collection create %s)\n", name,
                    name);
            break;
        }
        int64_t rev = mdb_jobs_doc_int(doc, "rev");
        bool oom = !mdb_cases_from_doc(doc, &existing);
        size_t already = 0, nbad = oom ? 0 : merge_check(&existing, &cases, &fresh, &already, &oom);
        bson_destroy(doc);
        if (oom) {
            fprintf(stderr, "metadb collection add-cases: out of memory\n");
            break;
        }
        if (nbad) {
            fprintf(stderr,
                    "metadb collection add-cases: %zu problem%s with the collection's cases; nothing was added\n", nbad,
                    nbad == 1 ? "" : "s");
            break;
        }
        if (fresh.n == 0) {
            printf("collection %s: 0 cases added (%zu already present)\n", name, already);
            rc = 0;
            break;
        }
        char now[40];
        mdb_msg_now_iso(now, sizeof now);
        bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, push, field, each, inc, set;
        BSON_APPEND_UTF8(&sel, "_id", name);
        BSON_APPEND_INT64(&sel, "rev", rev);
        bson_append_document_begin(&upd, "$push", -1, &push);
        bson_append_document_begin(&push, "cases", -1, &field);
        bson_append_array_begin(&field, "$each", -1, &each);
        for (size_t i = 0; i < fresh.n; i++)
            append_case(&each, i, &fresh.v[i]);
        bson_append_array_end(&field, &each);
        bson_append_document_end(&push, &field);
        bson_append_document_end(&upd, &push);
        bson_append_document_begin(&upd, "$inc", -1, &inc);
        BSON_APPEND_INT64(&inc, "rev", 1);
        bson_append_document_end(&upd, &inc);
        bson_append_document_begin(&upd, "$set", -1, &set);
        BSON_APPEND_UTF8(&set, "updated_at", now);
        bson_append_document_end(&upd, &set);
        mdb_ops_result_t res;
        bool ok = mdb_ops_update_one(m, MDB_COLLECTIONS_COLL, &sel, &upd, false, &res, &err);
        bson_destroy(&sel);
        bson_destroy(&upd);
        if (!ok) {
            fprintf(stderr, "metadb collection add-cases: %s (nothing was added)\n", err.message);
            break;
        }
        if (res.matched == 1) {
            printf("collection %s: %zu case%s added (%zu already present)\n", name, fresh.n, fresh.n == 1 ? "" : "s",
                   already);
            rc = 0;
            break;
        }
        /* Someone changed the collection meanwhile: check again against the new state. */
        mdb_cases_clear(&existing);
        mdb_cases_clear(&fresh);
    }
    mdb_cases_clear(&cases);
    mdb_cases_clear(&existing);
    mdb_cases_clear(&fresh);
    mdb_mongo_destroy(m);
    return rc;
}

static void print_collection(const bson_t *doc)
{
    mdb_cases_t cases = {0};
    printf("collection  %s\n", mdb_jobs_doc_str(doc, "_id"));
    printf("description %s\n", mdb_jobs_doc_str(doc, "description") ? mdb_jobs_doc_str(doc, "description") : "");
    printf("created     %s\n", mdb_jobs_doc_str(doc, "created_at") ? mdb_jobs_doc_str(doc, "created_at") : "-");
    printf("jobs        %zu\n", cli_doc_array_len(doc, "job_ids"));
    mdb_cases_from_doc(doc, &cases);
    printf("cases       %zu\n", cases.n);
    if (cases.n)
        printf("  %-24s %-24s %s\n", "CASE", "PATIENT", "ACCESSION NUMBERS");
    for (size_t i = 0; i < cases.n; i++) {
        printf("  %-24s %-24s ", cases.v[i].case_id, cases.v[i].patient_id);
        for (size_t k = 0; k < cases.v[i].accession_numbers.n; k++)
            printf("%s%s", k ? ";" : "", cases.v[i].accession_numbers.v[k]);
        printf("\n");
    }
    mdb_cases_clear(&cases);
}

static void list_header(void)
{
    printf("%-32s %7s %6s  %s\n", "COLLECTION", "CASES", "JOBS", "DESCRIPTION");
}

static void list_row(const bson_t *doc)
{
    printf("%-32s %7zu %6zu  %s\n", mdb_jobs_doc_str(doc, "_id"), cli_doc_array_len(doc, "cases"),
           cli_doc_array_len(doc, "job_ids"),
           mdb_jobs_doc_str(doc, "description") ? mdb_jobs_doc_str(doc, "description") : "");
}

static const cli_listing_t COLLECTIONS = {"collection", MDB_COLLECTIONS_COLL, list_header, list_row, print_collection};

int mdb_cmd_collection(mdb_config_t *cfg, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        collection_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "create"))
        return collection_create(cfg, argc - 1, argv + 1);
    if (!strcmp(sub, "add-cases"))
        return collection_add_cases(cfg, argc - 1, argv + 1);
    if (!strcmp(sub, "list") || !strcmp(sub, "show"))
        return cli_list_show(cfg, &COLLECTIONS, argc - 1, argv + 1);
    fprintf(stderr, "metadb collection: unknown action '%s'\n", sub);
    collection_usage(stderr);
    return 2;
}
