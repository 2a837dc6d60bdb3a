/* mdb_mongo: one client pool per process and database, plus the bulk
 * helper every writer uses: unordered upserts with an explicit write
 * concern, the server's own message in every error, and a single retry of
 * the operations that lost a duplicate-key race (two upserts of the same new
 * _id running concurrently: one inserts, the other gets E11000; rerunning it
 * turns it into an update). Round trips are counted for efficiency reports. */
#include "mdb_mongo.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "mdb_log.h"

#define MONGO_DUPLICATE_KEY 11000

struct mdb_mongo {
    mongoc_client_pool_t *pool;
    mongoc_uri_t *uri;
    char *db;
    size_t max_updates; /* update/delete statements per command; 0 = unlimited */
    atomic_uint_fast64_t round_trips;
};

mdb_mongo_t *mdb_mongo_new(const char *uri, const char *db, int pool_size, mdb_error_t *err)
{
    bson_error_t be;
    mdb_mongo_t *m = calloc(1, sizeof *m);
    if (!m) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    if (!db || !*db) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "mongo: empty database name");
        goto fail;
    }
    m->db = strdup(db);
    m->max_updates = MDB_BULK_DEFAULT_MAX_UPDATES;
    m->uri = mongoc_uri_new_with_error(uri ? uri : "", &be);
    if (!m->uri) {
        char *masked = mdb_log_mask_uri(uri ? uri : "");
        mdb_error_set(err, MDB_ERR_CONFIG, (int)be.code, "invalid mongo.uri '%s': %s", masked ? masked : "",
                      be.message);
        free(masked);
        goto fail;
    }
    if (!mongoc_uri_has_option(m->uri, MONGOC_URI_APPNAME))
        mongoc_uri_set_appname(m->uri, "metadb");
    m->pool = mongoc_client_pool_new_with_error(m->uri, &be);
    if (!m->pool || !m->db) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "cannot create mongo client pool: %s", be.message);
        goto fail;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    if (pool_size > 0)
        mongoc_client_pool_max_size(m->pool, (uint32_t)pool_size);
    return m;
fail:
    mdb_mongo_destroy(m);
    return NULL;
}

mdb_mongo_t *mdb_mongo_new_from_config(const mdb_config_t *cfg, mdb_error_t *err)
{
    mdb_mongo_t *m = mdb_mongo_new(mdb_config_get(cfg, "mongo.uri"), mdb_config_get(cfg, "mongo.db"),
                                   (int)mdb_config_get_int(cfg, "mongo.pool_size"), err);
    if (m)
        m->max_updates = (size_t)mdb_config_get_int(cfg, "mongo.max_batch_updates");
    return m;
}

void mdb_mongo_set_max_batch_updates(mdb_mongo_t *m, size_t n)
{
    m->max_updates = n;
}

void mdb_mongo_destroy(mdb_mongo_t *m)
{
    if (!m)
        return;
    if (m->pool)
        mongoc_client_pool_destroy(m->pool);
    if (m->uri)
        mongoc_uri_destroy(m->uri);
    free(m->db);
    free(m);
}

const char *mdb_mongo_db_name(const mdb_mongo_t *m)
{
    return m->db;
}

mongoc_client_t *mdb_mongo_pop(mdb_mongo_t *m)
{
    return mongoc_client_pool_pop(m->pool);
}

void mdb_mongo_push(mdb_mongo_t *m, mongoc_client_t *client)
{
    if (client)
        mongoc_client_pool_push(m->pool, client);
}

mongoc_collection_t *mdb_mongo_collection(mdb_mongo_t *m, mongoc_client_t *client, const char *name)
{
    return mongoc_client_get_collection(client, m->db, name);
}

uint64_t mdb_mongo_round_trips(const mdb_mongo_t *m)
{
    return atomic_load(&((mdb_mongo_t *)m)->round_trips);
}

void mdb_mongo_count_round_trip(mdb_mongo_t *m)
{
    atomic_fetch_add(&m->round_trips, 1);
}

bool mdb_mongo_ping(mdb_mongo_t *m, mdb_error_t *err)
{
    bson_error_t be;
    bson_t reply;
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mongoc_client_t *client = mdb_mongo_pop(m);
    mdb_mongo_count_round_trip(m);
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &be);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo ping failed: %s", be.message);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mdb_mongo_push(m, client);
    return ok;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One ping on a private, non-pooled client whose every timeout is bounded
 * by budget_ms: a database that accepts connections but never answers must
 * not hold the caller for the driver's default 5-minute socket timeout. */
static bool ping_bounded(mdb_mongo_t *m, int budget_ms, mdb_error_t *err)
{
    bson_error_t be;
    bson_t reply;
    bool ok = false;
    if (budget_ms < 100)
        budget_ms = 100;
    mongoc_uri_t *uri = mongoc_uri_copy(m->uri);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, budget_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, budget_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, budget_ms);
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(uri, &be);
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo client: %s", be.message);
        mongoc_uri_destroy(uri);
        return false;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
    mdb_mongo_count_round_trip(m);
    ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &be);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "mongo ping failed: %s", be.message);
    bson_destroy(&reply);
    bson_destroy(cmd);
    mongoc_client_destroy(client);
    mongoc_uri_destroy(uri);
    return ok;
}

bool mdb_mongo_wait_ready(mdb_mongo_t *m, int timeout_ms, mdb_error_t *err)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - now_ms();
        if (ping_bounded(m, (int)(left < 5000 ? left : 5000), err))
            return true;
        if (now_ms() >= deadline) {
            mdb_error_prefix(err, "database not ready after %d ms", timeout_ms);
            return false;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* ---- bulk ---- */

typedef enum { OP_UPDATE_ONE, OP_UPDATE_MANY, OP_DELETE_ONE, OP_INSERT_ONE, OP_REPLACE_ONE } op_kind_t;

typedef struct {
    op_kind_t kind;
    bool upsert;
    bson_t *selector; /* NULL for insert */
    bson_t *doc;      /* update / replacement / inserted document */
} op_t;

struct mdb_bulk {
    mdb_mongo_t *m;
    mongoc_client_t *client;
    char *coll_name;
    mongoc_write_concern_t *wc;
    op_t *ops;
    size_t n, cap;
};

mdb_bulk_t *mdb_bulk_new(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, const char *wc)
{
    mdb_bulk_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->m = m;
    b->client = client;
    b->coll_name = strdup(coll);
    if (!b->coll_name) {
        free(b);
        return NULL;
    }
    if (wc && *wc) {
        b->wc = mongoc_write_concern_new();
        if (!strcmp(wc, "majority")) {
            mongoc_write_concern_set_w(b->wc, MONGOC_WRITE_CONCERN_W_MAJORITY);
        } else {
            char *end = NULL;
            long w = strtol(wc, &end, 10);
            if (end && !*end && w >= 0)
                mongoc_write_concern_set_w(b->wc, (int32_t)w);
            else
                mongoc_write_concern_set_wtag(b->wc, wc);
        }
    }
    return b;
}

static bool add_op(mdb_bulk_t *b, op_kind_t kind, const bson_t *selector, const bson_t *doc, bool upsert,
                   mdb_error_t *err)
{
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        op_t *n = realloc(b->ops, ncap * sizeof *n);
        if (!n) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
        b->ops = n;
        b->cap = ncap;
    }
    op_t *o = &b->ops[b->n];
    o->kind = kind;
    o->upsert = upsert;
    o->selector = selector ? bson_copy(selector) : NULL;
    o->doc = doc ? bson_copy(doc) : NULL;
    if ((selector && !o->selector) || (doc && !o->doc)) {
        bson_destroy(o->selector);
        bson_destroy(o->doc);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    b->n++;
    return true;
}

/* Update documents must consist of $-operators; catching it here gives an
 * error at the call site instead of a failed batch. */
static bool check_update_doc(const bson_t *update, mdb_error_t *err)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, update) || !bson_iter_next(&it)) {
        mdb_error_set(err, MDB_ERR_MONGO, EINVAL, "bulk update: empty update document");
        return false;
    }
    do {
        if (bson_iter_key(&it)[0] != '$') {
            mdb_error_set(err, MDB_ERR_MONGO, EINVAL, "bulk update: field '%s' is not an update operator ($set, ...)",
                          bson_iter_key(&it));
            return false;
        }
    } while (bson_iter_next(&it));
    return true;
}

bool mdb_bulk_upsert(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, mdb_error_t *err)
{
    return check_update_doc(update, err) && add_op(b, OP_UPDATE_ONE, selector, update, true, err);
}

bool mdb_bulk_update_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert, mdb_error_t *err)
{
    return check_update_doc(update, err) && add_op(b, OP_UPDATE_ONE, selector, update, upsert, err);
}

bool mdb_bulk_update_many(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert,
                          mdb_error_t *err)
{
    return check_update_doc(update, err) && add_op(b, OP_UPDATE_MANY, selector, update, upsert, err);
}

bool mdb_bulk_delete_one(mdb_bulk_t *b, const bson_t *selector, mdb_error_t *err)
{
    return add_op(b, OP_DELETE_ONE, selector, NULL, false, err);
}

bool mdb_bulk_insert_one(mdb_bulk_t *b, const bson_t *doc, mdb_error_t *err)
{
    return add_op(b, OP_INSERT_ONE, NULL, doc, false, err);
}

bool mdb_bulk_replace_one(mdb_bulk_t *b, const bson_t *selector, const bson_t *doc, bool upsert, mdb_error_t *err)
{
    return add_op(b, OP_REPLACE_ONE, selector, doc, upsert, err);
}

size_t mdb_bulk_count(const mdb_bulk_t *b)
{
    return b->n;
}

/* Append op to a mongoc bulk. */
static bool append_op(mongoc_bulk_operation_t *bulk, const op_t *o, bson_error_t *be)
{
    bson_t opts = BSON_INITIALIZER;
    bool ok = false;
    if (o->upsert)
        BSON_APPEND_BOOL(&opts, "upsert", true);
    switch (o->kind) {
    case OP_UPDATE_ONE: ok = mongoc_bulk_operation_update_one_with_opts(bulk, o->selector, o->doc, &opts, be); break;
    case OP_UPDATE_MANY: ok = mongoc_bulk_operation_update_many_with_opts(bulk, o->selector, o->doc, &opts, be); break;
    case OP_REPLACE_ONE: ok = mongoc_bulk_operation_replace_one_with_opts(bulk, o->selector, o->doc, &opts, be); break;
    case OP_DELETE_ONE: ok = mongoc_bulk_operation_remove_one_with_opts(bulk, o->selector, NULL, be); break;
    case OP_INSERT_ONE:
        /* Documents come from jansson (valid UTF-8) through mdb_docs' own
         * conversion; the server still refuses what it does not accept.
         * Client-side validation was 10 % of the linker's CPU. */
        BSON_APPEND_BOOL(&opts, "validate", false);
        ok = mongoc_bulk_operation_insert_with_opts(bulk, o->doc, &opts, be);
        break;
    }
    bson_destroy(&opts);
    return ok;
}

/* Run ops[idx[0..n)] (or all when idx is NULL) as one unordered bulk. */
static bool run_bulk(mdb_bulk_t *b, const size_t *idx, size_t n, bson_t *reply, bson_error_t *be)
{
    bson_t opts = BSON_INITIALIZER;
    bool ok = false;
    BSON_APPEND_BOOL(&opts, "ordered", false);
    if (b->wc)
        mongoc_write_concern_append(b->wc, &opts);
    mongoc_collection_t *coll = mdb_mongo_collection(b->m, b->client, b->coll_name);
    mongoc_bulk_operation_t *bulk = mongoc_collection_create_bulk_operation_with_opts(coll, &opts);
    for (size_t i = 0; i < n; i++)
        if (!append_op(bulk, &b->ops[idx ? idx[i] : i], be)) {
            bson_init(reply);
            goto done;
        }
    mdb_mongo_count_round_trip(b->m);
    ok = mongoc_bulk_operation_execute(bulk, reply, be) != 0;
done:
    mongoc_bulk_operation_destroy(bulk);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    return ok;
}

/* If every write error in reply is a duplicate key on an upsert, collect the
 * op indexes into *out (caller frees). Returns the count, 0 otherwise. */
static size_t duplicate_key_ops(const mdb_bulk_t *b, const size_t *idx, size_t nidx, const bson_t *reply,
                                size_t **out)
{
    bson_iter_t it, arr;
    size_t n = 0, cap = 0;
    size_t *v = NULL;
    *out = NULL;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return 0;
    while (bson_iter_next(&arr)) {
        bson_iter_t e;
        int32_t code = 0;
        int64_t index = -1;
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &e))
            goto not_all;
        while (bson_iter_next(&e)) {
            if (!strcmp(bson_iter_key(&e), "code"))
                code = (int32_t)bson_iter_as_int64(&e);
            else if (!strcmp(bson_iter_key(&e), "index"))
                index = bson_iter_as_int64(&e);
        }
        /* Only an upsert that lost the insert race becomes an update when rerun;
         * a plain insert of an existing _id is a real error. */
        if (code != MONGO_DUPLICATE_KEY || index < 0 || (size_t)index >= nidx || !b->ops[idx[index]].upsert)
            goto not_all;
        index = (int64_t)idx[index];
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            size_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv)
                goto not_all;
            v = nv;
        }
        v[n++] = (size_t)index;
    }
    if (bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it)) {
        uint32_t len = 0;
        const uint8_t *data = NULL;
        bson_iter_array(&it, &len, &data);
        if (len > 5) /* non-empty array */
            goto not_all;
    }
    *out = v;
    return n;
not_all:
    free(v);
    return 0;
}

static int64_t reply_count(const bson_t *reply, const char *field)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, field) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

static const char *const reply_counts[] = {"nInserted", "nMatched", "nModified", "nRemoved", "nUpserted"};

/* Add the counts of src to the totals, keep src's error arrays in errs. */
static void merge_reply(int64_t *totals, bson_t *errs, const bson_t *src)
{
    for (size_t i = 0; i < sizeof reply_counts / sizeof reply_counts[0]; i++)
        totals[i] += reply_count(src, reply_counts[i]);
    bson_iter_t it;
    if (bson_iter_init_find(&it, src, "writeErrors") && !bson_has_field(errs, "writeErrors"))
        bson_append_iter(errs, "writeErrors", -1, &it);
    if (bson_iter_init_find(&it, src, "writeConcernErrors") && !bson_has_field(errs, "writeConcernErrors"))
        bson_append_iter(errs, "writeConcernErrors", -1, &it);
}

/* Run one chunk (op indexes idx[0..n)), retrying once the upserts that lost
 * a duplicate-key race. */
static bool run_chunk(mdb_bulk_t *b, const size_t *idx, size_t n, int64_t *totals, bson_t *errs, bson_error_t *be)
{
    bson_t r1, r2;
    bool ok = run_bulk(b, idx, n, &r1, be);
    if (!ok) {
        size_t *retry = NULL;
        size_t nretry = duplicate_key_ops(b, idx, n, &r1, &retry);
        if (nretry > 0) {
            MDB_LOG(MDB_LOG_DEBUG, "mongo: retrying %zu upsert(s) on '%s' after duplicate-key race", nretry,
                    b->coll_name);
            /* The first attempt's counts stand; its errors are replaced by the retry's. */
            for (size_t i = 0; i < sizeof reply_counts / sizeof reply_counts[0]; i++)
                totals[i] += reply_count(&r1, reply_counts[i]);
            ok = run_bulk(b, retry, nretry, &r2, be);
            free(retry);
            merge_reply(totals, errs, &r2);
            bson_destroy(&r2);
            bson_destroy(&r1);
            return ok;
        }
    }
    merge_reply(totals, errs, &r1);
    bson_destroy(&r1);
    return ok;
}

/* Operations are sent in chunks: any number of inserts, but at most
 * m->max_updates update/replace/delete statements per command. FerretDB 1.24
 * (SQLite backend) hangs for good on one update command with more than ~100
 * statements that match existing documents (reproduced: 90 works, 110
 * hangs), so the default is 50; with a real mongod set
 * mongo.max_batch_updates=0 for one command per collection and batch. */
/* Test hook: METADB_TEST_EXIT_AFTER_WRITES=N makes the process _exit(137)
 * right after the N-th write command was answered, as a kill -9 at that
 * moment would (the linker's crash-window test in tests/e2e/test_pipeline.py). */
static void test_exit_after_write(void)
{
    static long left = -2;
    if (left == -2) {
        const char *v = getenv("METADB_TEST_EXIT_AFTER_WRITES");
        left = v && *v ? atol(v) : -1;
    }
    if (left > 0 && --left == 0) {
        static const char msg[] = "METADB_TEST_EXIT_AFTER_WRITES: exiting after this write\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(137);
    }
}

bool mdb_bulk_execute(mdb_bulk_t *b, bson_t *reply, mdb_error_t *err)
{
    bson_error_t be = {0};
    int64_t totals[sizeof reply_counts / sizeof reply_counts[0]] = {0};
    bson_t errs = BSON_INITIALIZER;
    size_t *idx = NULL;
    bool ok = true;
    if (b->n == 0) {
        if (reply)
            bson_init(reply);
        bson_destroy(&errs);
        return true;
    }
    idx = malloc(b->n * sizeof *idx);
    if (!idx) {
        bson_destroy(&errs);
        if (reply)
            bson_init(reply);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    size_t start = 0;
    while (start < b->n) {
        size_t n = 0, updates = 0, i = start;
        for (; i < b->n; i++) {
            bool is_insert = b->ops[i].kind == OP_INSERT_ONE;
            if (!is_insert && b->m->max_updates && updates == b->m->max_updates)
                break;
            updates += !is_insert;
            idx[n++] = i;
        }
        bson_error_t cbe;
        if (!run_chunk(b, idx, n, totals, &errs, &cbe) && ok) {
            ok = false;
            be = cbe;
        }
        test_exit_after_write();
        start = i;
    }
    free(idx);
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "bulk write of %zu op(s) to %s.%s failed: %s", b->n,
                      b->m->db, b->coll_name, be.message);
    if (reply) {
        bson_init(reply);
        for (size_t i = 0; i < sizeof reply_counts / sizeof reply_counts[0]; i++)
            BSON_APPEND_INT64(reply, reply_counts[i], totals[i]);
        bson_concat(reply, &errs);
    }
    bson_destroy(&errs);
    return ok;
}

void mdb_bulk_destroy(mdb_bulk_t *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        bson_destroy(b->ops[i].selector);
        bson_destroy(b->ops[i].doc);
    }
    free(b->ops);
    if (b->wc)
        mongoc_write_concern_destroy(b->wc);
    free(b->coll_name);
    free(b);
}
