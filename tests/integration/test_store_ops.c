/* Integration: mdb_ops, the single-collection operations the commands and
 * the producer use, and the job documents built on them, against the live
 * database. Checked: find/find_one/count/aggregate/update_one/command return
 * what the server holds and count one round trip each; a client is always
 * returned to the pool (a pool of one serves a hundred calls); the server's
 * error CODE reaches err->code (duplicate key = 11000, whatever the words);
 * a query the server refuses is MDB_ERR_QUERY, an unreachable server is
 * MDB_ERR_MONGO, and neither is an empty result; the job error list keeps
 * the first MDB_JOBS_MAX_ERRORS entries in one update each while
 * producer_errors counts every problem. */
#include "core_itest.h"
#include "mdb_indexes.h"
#include "mdb_jobs.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"

static bool count_one(const bson_t *doc, void *ud, mdb_error_t *err)
{
    (void)doc;
    (void)err;
    (*(int *)ud)++;
    return true;
}

static bool stop_at_two(const bson_t *doc, void *ud, mdb_error_t *err)
{
    (void)doc;
    if (++*(int *)ud < 2)
        return true;
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "stopped by the callback");
    return false;
}

static void basic_ops(mdb_mongo_t *m)
{
    mdb_error_t err = {0};
    mdb_ops_result_t res;
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "d%d", i);
        bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
        bson_t *upd = BCON_NEW("$set", "{", "n", BCON_INT32(i), "odd", BCON_BOOL(i % 2), "}");
        CHECK(mdb_ops_update_one(m, "ops", sel, upd, true, &res, &err), "upsert: %s", err.message);
        CHECK(res.upserted == 1 && res.matched == 0, "first upsert inserts (%lld/%lld)", (long long)res.upserted,
              (long long)res.matched);
        CHECK(mdb_ops_update_one(m, "ops", sel, upd, true, &res, &err), "upsert again: %s", err.message);
        CHECK(res.upserted == 0 && res.matched == 1 && res.modified == 0, "second upsert matches, changes nothing");
        bson_destroy(sel);
        bson_destroy(upd);
    }
    bson_t *none = BCON_NEW("_id", BCON_UTF8("absent"));
    bson_t *set = BCON_NEW("$set", "{", "n", BCON_INT32(9), "}");
    CHECK(mdb_ops_update_one(m, "ops", none, set, false, &res, &err), "%s", err.message);
    CHECK(res.matched == 0 && res.upserted == 0, "update without upsert of an absent document");
    bson_t *doc = NULL;
    CHECK(mdb_ops_find_one(m, "ops", none, NULL, &doc, &err) && doc == NULL, "find_one of nothing: true, NULL");

    bson_t *odd = BCON_NEW("odd", BCON_BOOL(true));
    int64_t n = -1;
    CHECK(mdb_ops_count(m, "ops", odd, NULL, &n, &err) && n == 2, "count odd = 2 (%lld)", (long long)n);
    CHECK(mdb_ops_count(m, "ops", NULL, NULL, &n, &err) && n == 5, "count all = 5 (%lld)", (long long)n);
    int seen = 0;
    bson_t *opts = BCON_NEW("sort", "{", "n", BCON_INT32(-1), "}", "limit", BCON_INT64(3));
    uint64_t rt0 = mdb_mongo_round_trips(m);
    CHECK(mdb_ops_find(m, "ops", NULL, opts, count_one, &seen, &err) && seen == 3, "find limit 3 (%d)", seen);
    CHECK(mdb_mongo_round_trips(m) == rt0 + 1, "a find is one counted round trip");
    CHECK(mdb_ops_find_one(m, "ops", NULL, opts, &doc, &err) && doc, "find_one: %s", err.message);
    bson_iter_t it;
    CHECK(bson_iter_init_find(&it, doc, "n") && bson_iter_as_int64(&it) == 4, "find_one honours the sort");
    bson_destroy(doc);
    seen = 0;
    CHECK(!mdb_ops_find(m, "ops", NULL, NULL, stop_at_two, &seen, &err), "a callback's false fails the find");
    CHECK(err.domain == MDB_ERR_SYSTEM && strstr(err.message, "stopped by the callback"), "its error is kept: %s",
          err.message);

    bson_t *pipeline = BCON_NEW("pipeline", "[", "{", "$group", "{", "_id", BCON_UTF8("$odd"), "c", "{", "$sum",
                                BCON_INT32(1), "}", "}", "}", "]");
    seen = 0;
    CHECK(mdb_ops_aggregate(m, "ops", pipeline, NULL, count_one, &seen, &err) && seen == 2, "aggregate: %s",
          err.message);
    bson_t *cmd = BCON_NEW("distinct", BCON_UTF8("ops"), "key", BCON_UTF8("odd"));
    bson_t reply;
    CHECK(mdb_ops_command(m, cmd, true, &reply, &err), "distinct: %s", err.message);
    CHECK(bson_iter_init_find(&it, &reply, "values") && BSON_ITER_HOLDS_ARRAY(&it), "distinct values");
    bson_destroy(&reply);

    /* Refusals: the server's code, domain QUERY for reads, MONGO for writes. */
    bson_t *bad = BCON_NEW("n", "{", "$bogus", BCON_INT32(1), "}");
    seen = 0;
    mdb_error_clear(&err);
    CHECK(!mdb_ops_find(m, "ops", bad, NULL, count_one, &seen, &err), "an unknown operator is an error, not 0 rows");
    CHECK(err.domain == MDB_ERR_QUERY && err.code != 0 && seen == 0, "refused find: query domain, code %d: %s",
          err.code, err.message);
    mdb_error_clear(&err);
    CHECK(!mdb_ops_count(m, "ops", bad, NULL, &n, &err) && err.domain == MDB_ERR_QUERY, "refused count: %s",
          err.message);
    bson_t *idx = BCON_NEW("createIndexes", BCON_UTF8("uniq"), "indexes", "[", "{", "key", "{", "u", BCON_INT32(1), "}",
                           "name", BCON_UTF8("u_1"), "unique", BCON_BOOL(true), "}", "]");
    CHECK(mdb_ops_command(m, idx, false, NULL, &err), "createIndexes: %s", err.message);
    bson_t *u1 = BCON_NEW("_id", BCON_UTF8("d1")), *u2 = BCON_NEW("_id", BCON_UTF8("d2"));
    bson_t *setu = BCON_NEW("$set", "{", "u", BCON_UTF8("same"), "}");
    CHECK(mdb_ops_update_one(m, "uniq", u1, setu, true, NULL, &err), "%s", err.message);
    mdb_error_clear(&err);
    CHECK(!mdb_ops_update_one(m, "uniq", u2, setu, true, NULL, &err), "a duplicate key is refused");
    CHECK(err.code == MDB_OPS_DUPLICATE_KEY && err.domain == MDB_ERR_MONGO, "duplicate key by code: %d %s", err.code,
          err.message);

    bson_destroy(none);
    bson_destroy(set);
    bson_destroy(odd);
    bson_destroy(opts);
    bson_destroy(pipeline);
    bson_destroy(cmd);
    bson_destroy(bad);
    bson_destroy(idx);
    bson_destroy(u1);
    bson_destroy(u2);
    bson_destroy(setu);
}

/* Pool of one: a leaked client would block the second call forever. */
static void pool_of_one(const mdb_config_t *cfg)
{
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new(mdb_config_get(cfg, "mongo.uri"), mdb_config_get(cfg, "mongo.db"), 1, &err);
    CHECK(m, "%s", err.message);
    bson_t *bad = BCON_NEW("n", "{", "$bogus", BCON_INT32(1), "}");
    for (int i = 0; i < 100; i++) {
        int64_t n;
        int seen = 0;
        bson_t *doc = NULL;
        CHECK(mdb_ops_count(m, "ops", NULL, NULL, &n, &err), "%s", err.message);
        CHECK(mdb_ops_find_one(m, "ops", NULL, NULL, &doc, &err), "%s", err.message);
        bson_destroy(doc);
        CHECK(!mdb_ops_find(m, "ops", bad, NULL, count_one, &seen, &err), "refused");
        CHECK(!mdb_ops_find(m, "ops", NULL, NULL, stop_at_two, &seen, &err), "stopped");
    }
    bson_destroy(bad);
    mdb_mongo_destroy(m);
}

static void unreachable(void)
{
    mdb_error_t err = {0};
    mdb_mongo_t *m =
        mdb_mongo_new("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300", "nowhere", 1, &err);
    CHECK(m, "%s", err.message);
    int64_t n = 7;
    int seen = 0;
    CHECK(!mdb_ops_count(m, "x", NULL, NULL, &n, &err), "count on a dead server fails");
    CHECK(err.domain == MDB_ERR_MONGO && err.message[0], "backend error: %s", err.message);
    mdb_error_clear(&err);
    CHECK(!mdb_ops_find(m, "x", NULL, NULL, count_one, &seen, &err) && seen == 0, "find on a dead server fails");
    CHECK(err.domain == MDB_ERR_MONGO && err.message[0], "backend error: %s", err.message);
    mdb_mongo_destroy(m);
}

static void job_error_cap(mdb_mongo_t *m)
{
    mdb_error_t err = {0};
    mdb_job_msg_t msg = {0};
    msg.researcher_id = (char *)"r";
    msg.collection = (char *)"c";
    bool created = false;
    CHECK(mdb_jobs_create(m, "job-cap", &msg, NULL, &created, &err) && created, "create job: %s", err.message);
    int total = MDB_JOBS_MAX_ERRORS + 5;
    uint64_t rt0 = mdb_mongo_round_trips(m);
    for (int i = 0; i < total; i++) {
        char path[32];
        snprintf(path, sizeof path, "/a/%03d.dcm", i);
        CHECK(mdb_jobs_add_error(m, "job-cap", path, "producer", "refused", NULL, true, &err), "add error: %s",
              err.message);
    }
    CHECK(mdb_mongo_round_trips(m) == rt0 + (uint64_t)total, "one round trip per error, also once full (%llu)",
          (unsigned long long)(mdb_mongo_round_trips(m) - rt0));
    bson_t *job = NULL;
    CHECK(mdb_jobs_get(m, "job-cap", &job, &err), "%s", err.message);
    CHECK(mdb_jobs_doc_int(job, "producer_errors") == total, "every problem counted (%lld)",
          (long long)mdb_jobs_doc_int(job, "producer_errors"));
    bson_iter_t it, arr;
    int n = 0;
    const char *last = NULL;
    CHECK(bson_iter_init_find(&it, job, "errors") && bson_iter_recurse(&it, &arr), "errors array");
    while (bson_iter_next(&arr)) {
        bson_iter_t p;
        n++;
        if (bson_iter_recurse(&arr, &p) && bson_iter_find(&p, "path"))
            last = bson_iter_utf8(&p, NULL);
    }
    CHECK(n == MDB_JOBS_MAX_ERRORS, "the list is capped at %d (%d)", MDB_JOBS_MAX_ERRORS, n);
    char want[32];
    snprintf(want, sizeof want, "/a/%03d.dcm", MDB_JOBS_MAX_ERRORS - 1);
    CHECK(last && !strcmp(last, want), "the first ones are kept (last %s)", last ? last : "(none)");
    bson_destroy(job);
    CHECK(mdb_indexes_ensure_jobs(m, &err), "job indexes: %s", err.message);
    CHECK(mdb_indexes_ensure_jobs(m, &err), "job indexes again: %s", err.message);
}

int main(void)
{
    mdb_config_t *cfg = itest_setup("store_ops");
    mdb_error_t err = {0};
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    CHECK(m, "%s", err.message);
    CHECK(mdb_mongo_wait_ready(m, 30000, &err), "%s", err.message);
    basic_ops(m);
    pool_of_one(cfg);
    unreachable();
    job_error_cap(m);
    mdb_mongo_destroy(m);
    printf("test_store_ops: ok\n");
    return 0;
}
