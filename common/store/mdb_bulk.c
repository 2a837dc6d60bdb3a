/* mdb_bulk: the bulk writer every database writer uses. Operations are
 * collected, then sent as one unordered bulk write with an explicit write
 * concern (mongo-c-driver splits it at the server's maxWriteBatchSize, so
 * any number of operations is one call here). Every error carries the
 * server's own message and code. The upserts that lost a duplicate-key race
 * (two upserts of the same new _id running concurrently: one inserts, the
 * other gets error code 11000; rerunning it turns it into an update) are
 * retried once. Round trips are counted on the mdb_mongo_t. */
#include "mdb_bulk.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"

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

bool mdb_bulk_update_many(mdb_bulk_t *b, const bson_t *selector, const bson_t *update, bool upsert, mdb_error_t *err)
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
static size_t duplicate_key_ops(const mdb_bulk_t *b, const bson_t *reply, size_t **out)
{
    bson_iter_t it, arr;
    size_t n = 0, cap = 0;
    size_t *v = NULL;
    *out = NULL;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &arr))
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
        if (code != MDB_OPS_DUPLICATE_KEY || index < 0 || (size_t)index >= b->n || !b->ops[index].upsert)
            goto not_all;
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

/* Run every op as one bulk, retrying once the upserts that lost a
 * duplicate-key race. */
static bool run_all(mdb_bulk_t *b, int64_t *totals, bson_t *errs, bson_error_t *be)
{
    bson_t r1, r2;
    bool ok = run_bulk(b, NULL, b->n, &r1, be);
    if (!ok) {
        size_t *retry = NULL;
        size_t nretry = duplicate_key_ops(b, &r1, &retry);
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

/* Test hook: METADB_TEST_EXIT_AFTER_WRITES=N makes the process _exit(137)
 * right after the N-th write command was answered, as a kill -9 at that
 * moment would (the linker's crash-window test in tests/e2e/test_pipeline.py). */
static void test_exit_after_write(void)
{
    /* atomic: the linker writes from two threads at once (linker/batch.c) */
    static atomic_long left = -2;
    if (atomic_load(&left) == -2) {
        const char *v = getenv("METADB_TEST_EXIT_AFTER_WRITES");
        long want = v && *v ? atol(v) : -1;
        long unset = -2;
        atomic_compare_exchange_strong(&left, &unset, want);
    }
    long cur = atomic_load(&left);
    while (cur > 0 && !atomic_compare_exchange_weak(&left, &cur, cur - 1))
        ;
    if (cur == 1) {
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
    bool ok = true;
    if (b->n > 0) {
        ok = run_all(b, totals, &errs, &be);
        test_exit_after_write();
    }
    if (!ok)
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "bulk write of %zu op(s) to %s.%s failed: %s", b->n,
                      mdb_mongo_db_name(b->m), b->coll_name, be.message);
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
