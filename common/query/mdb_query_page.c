/* mdb_query_page: the rows a page sorted by a parent field can hold, found
 * by walking the parents in the sort's order (see below). */
#include "mdb_query_private.h"
#include "mdb_ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- pages sorted by a parent field ----
 * Joining every row before sorting costs the whole match (seconds for
 * 100,000 instances on DocumentDB). A page needs only the rows of the first
 * parents in that order: walk the parents in the sort's order (chunks of
 * 32, 128, 512, ... with one indexed count of their rows each) until they
 * hold skip+limit rows, add every parent that ties with the last one on the
 * sort's leading parent fields, and join only the rows of those parents.
 * Safe only when a row without a parent document cannot come first: the
 * leading direction is descending (a missing parent sorts last) or parent
 * conditions already exclude such rows; and the boundary parent has every
 * leading field (otherwise rows without a parent tie with it). Anything
 * else, or too many candidate parents, joins every row as before. */
#define CANDIDATE_MAX 20000

typedef struct {
    bson_t **v;
    size_t n, cap;
} docvec_t;

static void docvec_clear(docvec_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        bson_destroy(d->v[i]);
    d->n = 0;
}

static bool docvec_take(const bson_t *doc, void *ud, mdb_error_t *err)
{
    docvec_t *d = ud;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        bson_t **v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
        d->v = v;
        d->cap = cap;
    }
    if (!(d->v[d->n] = bson_copy(doc))) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    d->n++;
    return true;
}

/* Append the _ids of docs to the array arr (counter *n). */
static void append_ids(bson_t *arr, size_t *n, const docvec_t *docs)
{
    for (size_t i = 0; i < docs->n; i++) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, docs->v[i], "_id"))
            continue;
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)(*n)++, &k, key, sizeof key);
        bson_append_iter(arr, k, -1, &it);
    }
}

/* {$and: [a, {key: {$in: ids}}]} (or the second alone when a is empty). */
static void and_in(bson_t *out, const bson_t *a, const char *key, const bson_t *ids)
{
    bson_t in = BSON_INITIALIZER, sub;
    bson_append_document_begin(&in, key, -1, &sub);
    BSON_APPEND_ARRAY(&sub, "$in", ids);
    bson_append_document_end(&in, &sub);
    bson_init(out);
    if (bson_empty(a)) {
        bson_concat(out, &in);
    } else {
        bson_t arr;
        bson_append_array_begin(out, "$and", 4, &arr);
        BSON_APPEND_DOCUMENT(&arr, "0", a);
        BSON_APPEND_DOCUMENT(&arr, "1", &in);
        bson_append_array_end(out, &arr);
    }
    bson_destroy(&in);
}

/* On success with *usable, narrowed holds filter restricted to the rows of
 * the candidate parents (caller destroys it). */
bool mdb_query_page_candidates(mdb_mongo_t *m, const mdb_query_t *q, const bson_t *filter, int64_t need,
                               int64_t time_ms, bson_t *narrowed, bool *usable, mdb_error_t *err)
{
    bson_t psort = BSON_INITIALIZER, pproj = BSON_INITIALIZER, pfilter = BSON_INITIALIZER, ids = BSON_INITIALIZER;
    docvec_t chunk = {0};
    bson_t *last = NULL;
    bson_iter_t it;
    mdb_query_level_t L = MDB_QUERY_LEVEL_COUNT;
    int first_dir = 0;
    size_t nids = 0;
    bool ok = true;
    *usable = false;
    if (!bson_iter_init(&it, &q->sort))
        goto done;
    while (bson_iter_next(&it)) { /* the leading run of one parent level's fields */
        mdb_query_level_t pl;
        const char *rest = mdb_query_parent_prefix(q->level, bson_iter_key(&it), &pl);
        if (!rest || (L != MDB_QUERY_LEVEL_COUNT && pl != L))
            break;
        if (L == MDB_QUERY_LEVEL_COUNT) {
            L = pl;
            first_dir = bson_iter_as_int64(&it) < 0 ? -1 : 1;
        }
        BSON_APPEND_INT32(&psort, rest, bson_iter_as_int64(&it) < 0 ? -1 : 1);
        BSON_APPEND_INT32(&pproj, rest, 1);
    }
    if (L == MDB_QUERY_LEVEL_COUNT || (first_dir > 0 && q->parent[L].n == 0) || need > 10000)
        goto done;
    BSON_APPEND_INT32(&psort, "_id", 1);
    mdb_query_build_and(&q->parent[L], &pfilter);
    int64_t rows = 0, pskip = 0, k = 32;
    bool exhausted = false;
    while (rows < need) {
        bson_t *opts = BCON_NEW("sort", BCON_DOCUMENT(&psort), "projection", BCON_DOCUMENT(&pproj), "skip",
                                BCON_INT64(pskip), "limit", BCON_INT64(k));
        if (time_ms > 0)
            BSON_APPEND_INT64(opts, "maxTimeMS", time_ms);
        docvec_clear(&chunk);
        ok = mdb_ops_find(m, mdb_query_level_name(L), &pfilter, opts, docvec_take, &chunk, err);
        bson_destroy(opts);
        if (!ok)
            goto done;
        if (chunk.n == 0) {
            exhausted = true;
            break;
        }
        bson_t cids = BSON_INITIALIZER, cf;
        size_t cn = 0;
        append_ids(&cids, &cn, &chunk);
        append_ids(&ids, &nids, &chunk);
        and_in(&cf, filter, mdb_query_parent_keys[L], &cids);
        bson_t *copts = time_ms > 0 ? BCON_NEW("maxTimeMS", BCON_INT64(time_ms)) : bson_new();
        int64_t n = 0;
        ok = mdb_ops_count(m, q->collection, &cf, copts, &n, err);
        bson_destroy(copts);
        bson_destroy(&cf);
        bson_destroy(&cids);
        if (!ok)
            goto done;
        rows += n;
        bson_destroy(last);
        last = bson_copy(chunk.v[chunk.n - 1]);
        if ((int64_t)chunk.n < k) {
            exhausted = rows < need;
            break;
        }
        pskip += k;
        k *= 4;
        if (nids > CANDIDATE_MAX)
            goto done;
    }
    if (exhausted || !last)
        goto done; /* rows without a parent could belong to the page */
    /* every parent tying with the boundary on the leading fields */
    bson_t tie = BSON_INITIALIZER;
    bool complete = true;
    if (!bson_empty(&pfilter))
        bson_concat(&tie, &pfilter);
    bson_iter_init(&it, &pproj);
    while (bson_iter_next(&it)) {
        bson_iter_t top, v;
        const char *f = bson_iter_key(&it);
        if (!bson_iter_init(&top, last) || !bson_iter_find_descendant(&top, f, &v) || BSON_ITER_HOLDS_NULL(&v) ||
            BSON_ITER_HOLDS_ARRAY(&v) || BSON_ITER_HOLDS_DOCUMENT(&v)) {
            complete = false;
            break;
        }
        bson_t eq;
        if (mdb_query_has_key(&tie, f)) { /* a parent condition on the same field: AND both */
            bson_t both = BSON_INITIALIZER, arr;
            bson_append_array_begin(&both, "$and", 4, &arr);
            BSON_APPEND_DOCUMENT(&arr, "0", &tie);
            bson_append_document_begin(&arr, "1", 1, &eq);
            bson_append_iter(&eq, f, -1, &v);
            bson_append_document_end(&arr, &eq);
            bson_append_array_end(&both, &arr);
            bson_destroy(&tie);
            bson_steal(&tie, &both);
        } else {
            bson_append_iter(&tie, f, -1, &v);
        }
    }
    if (complete) {
        bson_t *opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(CANDIDATE_MAX));
        if (time_ms > 0)
            BSON_APPEND_INT64(opts, "maxTimeMS", time_ms);
        docvec_clear(&chunk);
        ok = mdb_ops_find(m, mdb_query_level_name(L), &tie, opts, docvec_take, &chunk, err);
        bson_destroy(opts);
        if (ok && chunk.n < CANDIDATE_MAX) {
            append_ids(&ids, &nids, &chunk);
            and_in(narrowed, filter, mdb_query_parent_keys[L], &ids);
            *usable = true;
        }
    }
    bson_destroy(&tie);
done:
    docvec_clear(&chunk);
    free(chunk.v);
    bson_destroy(last);
    bson_destroy(&psort);
    bson_destroy(&pproj);
    bson_destroy(&pfilter);
    bson_destroy(&ids);
    return ok;
}
