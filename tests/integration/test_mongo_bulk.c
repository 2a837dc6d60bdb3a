/* Integration: the Mongo wrapper and the bulk writer against the live
 * database. Upserting the same documents twice (separate bulks, and twice
 * inside one bulk) leaves one document each with idempotent content;
 * concurrent bulks racing to create the same new _ids all succeed
 * (duplicate-key race retried); a bulk of any size is one round trip; a
 * server-side failure surfaces the server's own message and code (a
 * duplicate key is recognised by code 11000, whatever the server's words);
 * a malformed update is refused before it reaches the server. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "core_itest.h"
#include "mdb_bulk.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"

static int64_t count_docs(mdb_mongo_t *m, const char *coll, const bson_t *filter)
{
    bson_error_t be;
    mongoc_client_t *c = mdb_mongo_pop(m);
    mongoc_collection_t *col = mdb_mongo_collection(m, c, coll);
    bson_t empty = BSON_INITIALIZER;
    int64_t n = mongoc_collection_count_documents(col, filter ? filter : &empty, NULL, NULL, NULL, &be);
    CHECK(n >= 0, "count: %s", be.message);
    mongoc_collection_destroy(col);
    mdb_mongo_push(m, c);
    return n;
}

static bson_t *find_one(mdb_mongo_t *m, const char *coll, const char *id)
{
    mongoc_client_t *c = mdb_mongo_pop(m);
    mongoc_collection_t *col = mdb_mongo_collection(m, c, coll);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, NULL, NULL);
    const bson_t *doc;
    bson_t *out = NULL;
    if (mongoc_cursor_next(cur, &doc))
        out = bson_copy(doc);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(col);
    mdb_mongo_push(m, c);
    return out;
}

static bool upsert_study(mdb_bulk_t *b, const char *uid, const char *job, int n, mdb_error_t *err)
{
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(uid));
    bson_t *upd = BCON_NEW("$set", "{", "study_instance_uid", BCON_UTF8(uid), "n", BCON_INT32(n), "}", "$addToSet", "{",
                           "job_ids", BCON_UTF8(job), "}");
    bool ok = mdb_bulk_upsert(b, sel, upd, err);
    bson_destroy(sel);
    bson_destroy(upd);
    return ok;
}

static void upsert_twice(mdb_mongo_t *m)
{
    mdb_error_t err = {0};
    uint64_t rt0 = mdb_mongo_round_trips(m);
    for (int round = 0; round < 2; round++) {
        mongoc_client_t *c = mdb_mongo_pop(m);
        mdb_bulk_t *b = mdb_bulk_new(m, c, "studies", "1");
        CHECK(b, "bulk_new");
        CHECK(upsert_study(b, "1.2.826.0.1", "job-a", 1, &err), "%s", err.message);
        CHECK(upsert_study(b, "1.2.826.0.1", "job-a", 2, &err), "%s", err.message); /* same _id, same bulk */
        CHECK(upsert_study(b, "1.2.826.0.2", "job-a", 3, &err), "%s", err.message);
        CHECK(mdb_bulk_count(b) == 3, "count");
        bson_t reply;
        CHECK(mdb_bulk_execute(b, &reply, &err), "execute round %d: %s", round, err.message);
        bson_destroy(&reply);
        mdb_bulk_destroy(b);
        mdb_mongo_push(m, c);
    }
    CHECK(mdb_mongo_round_trips(m) - rt0 == 2, "round trips %llu",
          (unsigned long long)(mdb_mongo_round_trips(m) - rt0));
    CHECK(count_docs(m, "studies", NULL) == 2, "expected 2 documents, got %lld",
          (long long)count_docs(m, "studies", NULL));
    bson_t *doc = find_one(m, "studies", "1.2.826.0.1");
    CHECK(doc, "document missing");
    bson_iter_t it, arr;
    CHECK(bson_iter_init_find(&it, doc, "n") && bson_iter_as_int64(&it) == 2, "n should be the last write");
    CHECK(bson_iter_init_find(&it, doc, "job_ids") && BSON_ITER_HOLDS_ARRAY(&it), "job_ids");
    bson_iter_recurse(&it, &arr);
    int njobs = 0;
    while (bson_iter_next(&arr))
        njobs++;
    CHECK(njobs == 1, "job_ids has %d entries, expected 1 ($addToSet idempotent)", njobs);
    bson_destroy(doc);
    printf("upsert twice: 2 documents, 2 round trips\n");
}

/* Concurrent bulks upserting the same new _ids: one insert wins each race,
 * the others get duplicate-key errors (code 11000) that the bulk writer
 * retries once as updates. */
#define RACE_IDS 40

typedef struct {
    mdb_mongo_t *m;
    int ok;
    char err[MDB_ERROR_MSG_MAX];
} race_t;

static void *race_thread(void *arg)
{
    race_t *r = arg;
    mdb_error_t err = {0};
    mongoc_client_t *c = mdb_mongo_pop(r->m);
    mdb_bulk_t *b = mdb_bulk_new(r->m, c, "series", NULL);
    for (int i = 0; i < RACE_IDS; i++) {
        char uid[64];
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        upsert_study(b, uid, "job-race", i, &err);
    }
    r->ok = mdb_bulk_execute(b, NULL, &err);
    snprintf(r->err, sizeof r->err, "%s", err.message);
    mdb_bulk_destroy(b);
    mdb_mongo_push(r->m, c);
    return NULL;
}

static void concurrent_upserts(mdb_mongo_t *m)
{
    enum { T = 3 };
    pthread_t th[T];
    race_t r[T];
    for (int i = 0; i < T; i++) {
        r[i] = (race_t){m, 0, ""};
        pthread_create(&th[i], NULL, race_thread, &r[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(r[i].ok, "thread %d: %s", i, r[i].err);
    }
    CHECK(count_docs(m, "series", NULL) == RACE_IDS, "expected %d series, got %lld", RACE_IDS,
          (long long)count_docs(m, "series", NULL));
    printf("concurrent upserts: %d threads x %d same new ids -> %d documents\n", T, RACE_IDS, RACE_IDS);
}

static void server_errors(mdb_mongo_t *m)
{
    mdb_error_t err = {0};
    mongoc_client_t *c = mdb_mongo_pop(m);

    /* Refused locally: not an update document. */
    mdb_bulk_t *b = mdb_bulk_new(m, c, "studies", "1");
    bson_t *sel = BCON_NEW("_id", BCON_UTF8("x"));
    bson_t *bad = BCON_NEW("plain", BCON_INT32(1));
    CHECK(!mdb_bulk_upsert(b, sel, bad, &err), "non-operator update accepted");
    CHECK(strstr(err.message, "'plain' is not an update operator"), "message: %s", err.message);
    CHECK(mdb_bulk_count(b) == 0, "op added");
    mdb_bulk_destroy(b);

    /* Refused by the server: inserting an existing _id is a duplicate key,
     * and it is not retried (only upserts are). */
    b = mdb_bulk_new(m, c, "studies", "1");
    bson_t *doc = BCON_NEW("_id", BCON_UTF8("1.2.826.0.1"), "n", BCON_INT32(9));
    CHECK(mdb_bulk_insert_one(b, doc, &err), "%s", err.message);
    bson_t reply;
    uint64_t rt0 = mdb_mongo_round_trips(m);
    CHECK(!mdb_bulk_execute(b, &reply, &err), "duplicate insert succeeded");
    CHECK(mdb_mongo_round_trips(m) - rt0 == 1, "insert duplicate must not be retried");
    CHECK(err.domain == MDB_ERR_MONGO, "domain");
    CHECK(err.code == MDB_OPS_DUPLICATE_KEY, "duplicate key: code %d, expected %d (%s)", err.code,
          MDB_OPS_DUPLICATE_KEY, err.message);
    CHECK(strstr(err.message, "failed: ") && strlen(strstr(err.message, "failed: ")) > strlen("failed: ") + 5,
          "no server message in: %s", err.message);
    CHECK(strstr(err.message, "studies"), "collection missing from: %s", err.message);
    printf("server error surfaced: %s\n", err.message);
    bson_destroy(&reply);
    mdb_bulk_destroy(b);

    /* A server-side type error on $inc carries the server's words. */
    b = mdb_bulk_new(m, c, "studies", "1");
    bson_t *inc = BCON_NEW("$inc", "{", "study_instance_uid", BCON_INT32(1), "}");
    bson_t *sel2 = BCON_NEW("_id", BCON_UTF8("1.2.826.0.1"));
    CHECK(mdb_bulk_upsert(b, sel2, inc, &err), "%s", err.message);
    CHECK(!mdb_bulk_execute(b, NULL, &err), "$inc on a string succeeded");
    const char *colon = strstr(err.message, "failed: ");
    CHECK(colon && strlen(colon) > strlen("failed: ") + 5, "no server message in: %s", err.message);
    printf("server error surfaced: %s\n", err.message);
    mdb_bulk_destroy(b);
    bson_destroy(sel);
    bson_destroy(bad);
    bson_destroy(doc);
    bson_destroy(inc);
    bson_destroy(sel2);
    mdb_mongo_push(m, c);

    /* Empty bulk: nothing to do, no round trip. */
    c = mdb_mongo_pop(m);
    b = mdb_bulk_new(m, c, "studies", NULL);
    rt0 = mdb_mongo_round_trips(m);
    CHECK(mdb_bulk_execute(b, NULL, &err), "empty bulk: %s", err.message);
    CHECK(mdb_mongo_round_trips(m) == rt0, "empty bulk made a round trip");
    mdb_bulk_destroy(b);
    mdb_mongo_push(m, c);

    /* Bad URIs are reported with credentials masked. */
    CHECK(!mdb_mongo_new("mongodb://u:secret@host:notaport", "x", 2, &err), "bad uri accepted");
    CHECK(!strstr(err.message, "secret"), "password leaked: %s", err.message);
}

/* A server that accepts connections (kernel backlog) but never answers:
 * wait_ready must give up on time instead of hanging for minutes. */
static void unresponsive_server(void)
{
    mdb_error_t err = {0};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 16) == 0, "listen");
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    char uri[128];
    snprintf(uri, sizeof uri, "mongodb://127.0.0.1:%d/?serverSelectionTryOnce=false", ntohs(a.sin_port));
    mdb_mongo_t *m = mdb_mongo_new(uri, "x", 2, &err);
    CHECK(m, "%s", err.message);
    int64_t t0 = itest_now_ms();
    CHECK(!mdb_mongo_wait_ready(m, 1500, &err), "a silent server is not ready");
    int64_t took = itest_now_ms() - t0;
    CHECK(took < 8000, "wait_ready(1500) took %lld ms", (long long)took);
    CHECK(strstr(err.message, "not ready after 1500 ms"), "message: %s", err.message);
    mdb_mongo_destroy(m);
    close(s);
    printf("silent server: wait_ready gave up after %lld ms: %s\n", (long long)took, err.message);
}

/* 300 inserts, then 300 upserts that all match existing documents: each
 * bulk is one round trip (the driver alone splits at the server's
 * maxWriteBatchSize) and the reply counts every document. */
static void large_bulks_are_one_write(mdb_mongo_t *m)
{
    mdb_error_t err = {0};
    mongoc_client_t *c = mdb_mongo_pop(m);
    mdb_bulk_t *b = mdb_bulk_new(m, c, "large_bulk", NULL);
    char id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "c%04d", i);
        bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "v", BCON_INT32(0));
        CHECK(mdb_bulk_insert_one(b, doc, &err), "%s", err.message);
        bson_destroy(doc);
    }
    uint64_t rt0 = mdb_mongo_round_trips(m);
    bson_t reply;
    CHECK(mdb_bulk_execute(b, &reply, &err), "insert: %s", err.message);
    CHECK(mdb_mongo_round_trips(m) - rt0 == 1, "300 inserts take one round trip, took %llu",
          (unsigned long long)(mdb_mongo_round_trips(m) - rt0));
    bson_destroy(&reply);
    mdb_bulk_destroy(b);

    b = mdb_bulk_new(m, c, "large_bulk", NULL);
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "c%04d", i);
        bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
        bson_t *upd = BCON_NEW("$set", "{", "v", BCON_INT32(1), "}");
        CHECK(mdb_bulk_upsert(b, sel, upd, &err), "%s", err.message);
        bson_destroy(sel);
        bson_destroy(upd);
    }
    rt0 = mdb_mongo_round_trips(m);
    CHECK(mdb_bulk_execute(b, &reply, &err), "upsert: %s", err.message);
    uint64_t rts = mdb_mongo_round_trips(m) - rt0;
    CHECK(rts == 1, "300 updates take one round trip, took %llu", (unsigned long long)rts);
    bson_iter_t it;
    CHECK(bson_iter_init_find(&it, &reply, "nMatched") && bson_iter_as_int64(&it) == 300,
          "merged reply counts every matched document");
    bson_destroy(&reply);
    mdb_bulk_destroy(b);
    mdb_mongo_push(m, c);
    bson_t *one = BCON_NEW("v", BCON_INT32(1));
    CHECK(count_docs(m, "large_bulk", one) == 300, "every document updated");
    bson_destroy(one);
}

int main(void)
{
    mdb_error_t err = {0};
    mdb_config_t *cfg = itest_setup("mongobulk");
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    CHECK(m, "%s", err.message);
    CHECK(!strcmp(mdb_mongo_db_name(m), itest_db), "db name");
    CHECK(mdb_mongo_wait_ready(m, 30000, &err), "database not reachable at %s: %s", mdb_config_get(cfg, "mongo.uri"),
          err.message);
    upsert_twice(m);
    concurrent_upserts(m);
    server_errors(m);
    large_bulks_are_one_write(m);
    mdb_mongo_destroy(m);
    unresponsive_server();
    return 0;
}
