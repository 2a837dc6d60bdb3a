/* mdb_ops: generic single-collection operations over the client pool, so
 * that the code outside common/store/ never touches a mongoc client,
 * collection or cursor. Each call is one pop/push of a pooled client, one
 * counted round trip, and a bool + mdb_error_t carrying the server's code and
 * message; see mdb_ops.h for how the error domain is chosen. */
#include "mdb_ops.h"

#include <errno.h>
#include <string.h>

#define CODE_UNAUTHORIZED 13
#define CODE_AUTH_FAILED 18

/* Reads: the server refusing the request is the request's fault (a bad
 * filter, a time limit); a failure to reach or log in to the server is the
 * backend's. Writes are always the database's. */
static void set_err(mdb_error_t *err, const bson_error_t *be, bool read, const char *verb, const char *coll)
{
    bool refused = read && (be->domain == MONGOC_ERROR_SERVER || be->domain == MONGOC_ERROR_QUERY) &&
                   be->code != CODE_UNAUTHORIZED && be->code != CODE_AUTH_FAILED;
    mdb_error_set(err, refused ? MDB_ERR_QUERY : MDB_ERR_MONGO, (int)be->code, "%s %s: %s", verb, coll, be->message);
}

/* Pop a client and open coll on it; false (err filled) when none is available. */
static bool open_coll(mdb_mongo_t *m, const char *coll, mongoc_client_t **client, mongoc_collection_t **c,
                      mdb_error_t *err)
{
    *c = NULL;
    *client = mdb_mongo_pop(m);
    if (!*client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "%s: no database client available", coll);
        return false;
    }
    *c = mdb_mongo_collection(m, *client, coll);
    if (!*c) {
        mdb_mongo_push(m, *client);
        *client = NULL;
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "%s: out of memory", coll);
        return false;
    }
    return true;
}

static void close_coll(mdb_mongo_t *m, mongoc_client_t *client, mongoc_collection_t *c)
{
    if (c)
        mongoc_collection_destroy(c);
    mdb_mongo_push(m, client);
}

/* Drain cur through fn; the cursor is destroyed. */
static bool drain(mdb_mongo_t *m, mongoc_cursor_t *cur, const char *verb, const char *coll, mdb_ops_doc_fn fn, void *ud,
                  mdb_error_t *err)
{
    const bson_t *doc;
    bson_error_t be;
    bool ok = true;
    mdb_mongo_count_round_trip(m);
    while (ok && mongoc_cursor_next(cur, &doc))
        ok = fn(doc, ud, err);
    if (ok && mongoc_cursor_error(cur, &be)) {
        set_err(err, &be, true, verb, coll);
        ok = false;
    }
    mongoc_cursor_destroy(cur);
    return ok;
}

bool mdb_ops_find(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, mdb_ops_doc_fn fn,
                  void *ud, mdb_error_t *err)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t empty = BSON_INITIALIZER;
    if (!open_coll(m, coll, &client, &c, err))
        return false;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter ? filter : &empty, opts, NULL);
    bool ok = drain(m, cur, "find in", coll, fn, ud, err);
    close_coll(m, client, c);
    bson_destroy(&empty);
    return ok;
}

static bool keep_first(const bson_t *doc, void *ud, mdb_error_t *err)
{
    bson_t **out = ud;
    if (*out)
        return true;
    *out = bson_copy(doc);
    if (!*out) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

bool mdb_ops_find_one(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, bson_t **out,
                      mdb_error_t *err)
{
    bson_t o = BSON_INITIALIZER;
    *out = NULL;
    if (opts)
        bson_concat(&o, opts);
    if (!opts || !bson_has_field(opts, "limit"))
        BSON_APPEND_INT64(&o, "limit", 1);
    bool ok = mdb_ops_find(m, coll, filter, &o, keep_first, out, err);
    if (!ok) {
        bson_destroy(*out);
        *out = NULL;
    }
    bson_destroy(&o);
    return ok;
}

bool mdb_ops_count(mdb_mongo_t *m, const char *coll, const bson_t *filter, const bson_t *opts, int64_t *n,
                   mdb_error_t *err)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t empty = BSON_INITIALIZER;
    bson_error_t be;
    *n = 0;
    if (!open_coll(m, coll, &client, &c, err))
        return false;
    mdb_mongo_count_round_trip(m);
    int64_t r = mongoc_collection_count_documents(c, filter ? filter : &empty, opts, NULL, NULL, &be);
    if (r < 0)
        set_err(err, &be, true, "count in", coll);
    else
        *n = r;
    close_coll(m, client, c);
    bson_destroy(&empty);
    return r >= 0;
}

bool mdb_ops_aggregate(mdb_mongo_t *m, const char *coll, const bson_t *pipeline, const bson_t *opts, mdb_ops_doc_fn fn,
                       void *ud, mdb_error_t *err)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    if (!open_coll(m, coll, &client, &c, err))
        return false;
    mongoc_cursor_t *cur = mongoc_collection_aggregate(c, MONGOC_QUERY_NONE, pipeline, opts, NULL);
    bool ok = drain(m, cur, "aggregate on", coll, fn, ud, err);
    close_coll(m, client, c);
    return ok;
}

static int64_t reply_int(const bson_t *reply, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return 0;
}

bool mdb_ops_update_one(mdb_mongo_t *m, const char *coll, const bson_t *selector, const bson_t *update, bool upsert,
                        mdb_ops_result_t *res, mdb_error_t *err)
{
    mongoc_client_t *client;
    mongoc_collection_t *c;
    bson_t opts = BSON_INITIALIZER, reply;
    bson_error_t be;
    if (res)
        memset(res, 0, sizeof *res);
    if (!open_coll(m, coll, &client, &c, err)) {
        bson_destroy(&opts);
        return false;
    }
    if (upsert)
        BSON_APPEND_BOOL(&opts, "upsert", true);
    mdb_mongo_count_round_trip(m);
    bool ok = mongoc_collection_update_one(c, selector, update, &opts, &reply, &be);
    if (!ok) {
        set_err(err, &be, false, "update in", coll);
    } else if (res) {
        res->matched = reply_int(&reply, "matchedCount");
        res->modified = reply_int(&reply, "modifiedCount");
        res->upserted = reply_int(&reply, "upsertedCount");
    }
    bson_destroy(&reply);
    bson_destroy(&opts);
    close_coll(m, client, c);
    return ok;
}

bool mdb_ops_command(mdb_mongo_t *m, const bson_t *cmd, bool read, bson_t *reply, mdb_error_t *err)
{
    bson_t local;
    bson_error_t be;
    bson_t *r = reply ? reply : &local;
    mongoc_client_t *client = mdb_mongo_pop(m);
    bson_iter_t it;
    const char *name = bson_iter_init(&it, cmd) && bson_iter_next(&it) ? bson_iter_key(&it) : "command";
    if (!client) {
        bson_init(r);
        if (!reply)
            bson_destroy(&local);
        mdb_error_set(err, MDB_ERR_MONGO, 0, "%s: no database client available", name);
        return false;
    }
    mdb_mongo_count_round_trip(m);
    bool ok = read ? mongoc_client_read_command_with_opts(client, mdb_mongo_db_name(m), cmd, NULL, NULL, r, &be)
                   : mongoc_client_write_command_with_opts(client, mdb_mongo_db_name(m), cmd, NULL, r, &be);
    if (!ok)
        set_err(err, &be, read, "command", name);
    if (!reply)
        bson_destroy(&local);
    mdb_mongo_push(m, client);
    return ok;
}
