/* Integration test of the linker's job counters (linker/jobs.c) against the
 * live database: a batch's progress write counts once even when the
 * database runs it twice. DocumentDB does so when a reply is lost: its
 * gateway re-runs a statement whose PostgreSQL connection closed, and it
 * keeps no retryable-write record for batch updates. The fault suite's
 * restart-database row once ended with 104 of 100 files done this way.
 * Here the second run is made on purpose: linker_jobs_apply is called twice
 * with the same deltas, as the database would have run the same command.
 * Later batches (higher offsets) still count, a failed file that turns
 * done moves one count from failed to done, and a batch from before the
 * counted offset changes nothing. */
#include <stdint.h>

#include "linker.h"
#include "linker_itest.h"
#include "mdb_mongo.h"

#define JOB "job-progress"
#define TOPIC "t.instances"

static void add_event(linker_batch_t *B, int32_t part, int64_t off, const char *path)
{
    if (B->nitems == B->capitems) {
        B->capitems = B->capitems ? 2 * B->capitems : 4;
        B->items = realloc(B->items, B->capitems * sizeof *B->items);
        CHECK(B->items, "oom");
    }
    linker_item_t *it = &B->items[B->nitems++];
    memset(it, 0, sizeof *it);
    it->kind = ITEM_EVENT;
    it->topic = strdup(TOPIC);
    it->partition = part;
    it->offset = off;
    it->ev.job_id = strdup(JOB);
    it->ev.path = strdup(path);
    CHECK(it->topic && it->ev.job_id && it->ev.path, "oom");
}

/* {"JOB\ntopic:part": {job_id, tp, files_done, files_failed, files_flagged: 0, instances_linked}} */
static json_t *deltas_of(int32_t part, json_int_t done, json_int_t failed, json_int_t linked)
{
    char tp[64], key[128];
    snprintf(tp, sizeof tp, "%s:%d", TOPIC, (int)part);
    snprintf(key, sizeof key, "%s\n%s", JOB, tp);
    json_t *d = json_pack("{s:{s:s, s:s, s:I, s:I, s:I, s:I}}", key, "job_id", JOB, "tp", tp, "files_done", done,
                          "files_failed", failed, "files_flagged", (json_int_t)0, "instances_linked", linked);
    CHECK(d, "oom");
    return d;
}

/* linker_jobs_apply of B with deltas, times times over (the database running the same command again). */
static void apply(linker_t *L, const linker_batch_t *B, json_t *deltas, int times)
{
    for (int i = 0; i < times; i++) {
        mdb_error_t err = {0};
        const char *ids[] = {JOB};
        json_t *jobs = json_object(), *links = json_object();
        CHECK(jobs && links, "oom");
        CHECK(linker_jobs_load(L, ids, 1, jobs, &err), "load job: %s", err.message);
        CHECK(linker_jobs_apply(L, B, jobs, links, deltas, "2026-01-01T00:00:00.000Z", &err), "apply: %s", err.message);
        json_decref(jobs);
        json_decref(links);
    }
    json_decref(deltas);
}

static int64_t field_of(const char *db, const char *coll_name, const char *id, const char *field)
{
    mongoc_client_t *c = litest_client();
    mongoc_collection_t *coll = mongoc_client_get_collection(c, db, coll_name);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    const bson_t *doc;
    int64_t v = INT64_MIN;
    bson_iter_t it;
    if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, field))
        v = bson_iter_as_int64(&it);
    bson_error_t be;
    CHECK(!mongoc_cursor_error(cur, &be), "find %s: %s", id, be.message);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return v;
}

static void expect_counts(const char *db, int64_t done, int64_t failed, int64_t linked, const char *when)
{
    int64_t d = field_of(db, "jobs", JOB, "files_done"), f = field_of(db, "jobs", JOB, "files_failed"),
            l = field_of(db, "jobs", JOB, "instances_linked");
    CHECK(d == done && f == failed && l == linked, "%s: done %lld failed %lld linked %lld, want %lld %lld %lld", when,
          (long long)d, (long long)f, (long long)l, (long long)done, (long long)failed, (long long)linked);
    printf("ok   %s: done %lld, failed %lld, linked %lld\n", when, (long long)d, (long long)f, (long long)l);
}

int main(void)
{
    mdb_config_t *cfg = litest_setup("linker_progress");
    const char *db = mdb_config_get(cfg, "mongo.db");
    mdb_error_t err = {0};
    linker_t L = {0};
    L.cfg = cfg;
    L.wc = mdb_config_get(cfg, "mongo.write_concern");
    L.mongo = mdb_mongo_new_from_config(cfg, &err);
    CHECK(L.mongo && mdb_mongo_wait_ready(L.mongo, 30000, &err), "database: %s", err.message);
    litest_create_job(db, JOB, "C", 100);

    /* batch 1: offsets 0..2 of partition 0, 3 files done (one failed first, see batch 3) */
    linker_batch_t b1 = {0};
    add_event(&b1, 0, 0, "/a/1.dcm");
    add_event(&b1, 0, 1, "/a/2.dcm");
    add_event(&b1, 0, 2, "/a/3.dcm");
    apply(&L, &b1, deltas_of(0, 2, 1, 2), 1);
    expect_counts(db, 2, 1, 2, "batch 1 written once");
    apply(&L, &b1, deltas_of(0, 2, 1, 2), 2);
    expect_counts(db, 2, 1, 2, "batch 1's progress run twice more by the database");

    char key[128];
    snprintf(key, sizeof key, "%s\n%s:0", JOB, TOPIC);
    CHECK(field_of(db, "job_progress", key, "o") == 2, "progress offset %lld, want 2",
          (long long)field_of(db, "job_progress", key, "o"));
    printf("ok   the progress document remembers offset 2\n");

    /* batch 2: partition 1 is a document of its own, counted once as well */
    linker_batch_t b2 = {0};
    add_event(&b2, 1, 0, "/b/1.dcm");
    apply(&L, &b2, deltas_of(1, 1, 0, 1), 2);
    expect_counts(db, 3, 1, 3, "batch 2 (another partition) run twice");

    /* batch 3: the failed file of batch 1 turns done, and one more file */
    linker_batch_t b3 = {0};
    add_event(&b3, 0, 3, "/a/3.dcm");
    add_event(&b3, 0, 4, "/a/4.dcm");
    apply(&L, &b3, deltas_of(0, 2, -1, 2), 2);
    expect_counts(db, 5, 0, 5, "batch 3 (failed -> done, one new) run twice");

    /* a batch from before the counted offset (its records were counted) changes nothing */
    apply(&L, &b1, deltas_of(0, 0, 0, 0), 1);
    expect_counts(db, 5, 0, 5, "batch 1 again after batch 3");
    CHECK(field_of(db, "job_progress", key, "o") == 4, "progress offset went back: %lld",
          (long long)field_of(db, "job_progress", key, "o"));
    printf("ok   the progress offset never goes back (4)\n");

    linker_batch_free(&b1);
    linker_batch_free(&b2);
    linker_batch_free(&b3);
    mdb_mongo_destroy(L.mongo);
    printf("test_linker_progress: OK\n");
    return 0;
}
