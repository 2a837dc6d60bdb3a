/* cache.c: an in-memory copy of the studies and series collections, so that
 * filtered study/series queries answer in milliseconds even where the
 * database cannot use indexes (FerretDB's SQLite backend scans and decodes
 * every document for any filter other than _id equality: ~0.3 s for a
 * thousand studies).
 *
 * Snapshots are immutable and reference-counted: a request takes the
 * current snapshot, evaluates the filter with mdb_query_match (the same
 * semantics as the server for everything the filter-parameter builder
 * produces; anything else goes to the database), and releases it. A
 * background thread reloads a collection when a request finds its snapshot
 * older than api.cache_ms (stale-while-revalidate: the request is answered
 * from the older snapshot and says how old it is). Idle servers do not
 * reload. ?fresh=true bypasses the cache.
 *
 * Instances are too many to copy whole; the cache keeps a summary of each
 * (_id, parents, instance number, SOP class, acquisition time, paths: about
 * 250 bytes) so a series' instance page and instance lists that ask only for
 * those fields answer without a scan of the instances collection. A full
 * reload of it costs a scan, so it happens at most once a minute and only
 * when the series' instance counts no longer add up to what it holds. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "api_private.h"
#include "mdb_log.h"
#include "mdb_query.h"

#define CACHE_MAX_DOCS 500000
#define CACHE_MAX_INSTANCES 1000000

struct api_snapshot {
    atomic_int refs;
    bson_t **docs;
    size_t n;
    /* open-addressing table: _id -> index (+1; 0 = empty) */
    uint32_t *ids;
    size_t idcap;
    /* parent index (series: study_id): sorted (parent, index) pairs */
    struct {
        const char *parent;
        uint32_t idx;
    } *children;
    size_t nchildren;
    int64_t loaded_ms;
};

typedef struct {
    api_cache_t *c;
    bool instances; /* this thread loads the instance summary, else studies and series */
} refresher_arg_t;

struct api_cache {
    refresher_arg_t args[2];
    mdb_mongo_t *mongo;
    int64_t ttl_ms;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t threads[2]; /* studies+series; instance summary (a slow scan must not delay the others) */
    int nthreads;
    atomic_bool stop;
    api_snapshot_t *snap[3];
    bool want[3], loading[3], disabled[3];
};

#define INSTANCE_RELOAD_MIN_MS 60000

static const char *const coll_names[3] = {"studies", "series", "instances"};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static const char *doc_id(const bson_t *doc)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static const char *doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static void snapshot_free(api_snapshot_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        bson_destroy(s->docs[i]);
    free(s->docs);
    free(s->ids);
    free(s->children);
    free(s);
}

void api_snapshot_release(api_snapshot_t *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        snapshot_free(s);
}

size_t api_snapshot_count(const api_snapshot_t *s)
{
    return s->n;
}

const bson_t *api_snapshot_doc(const api_snapshot_t *s, size_t i)
{
    return i < s->n ? s->docs[i] : NULL;
}

int64_t api_snapshot_age_ms(const api_snapshot_t *s)
{
    return api_now_ms() - s->loaded_ms;
}

const bson_t *api_snapshot_get(const api_snapshot_t *s, const char *id)
{
    if (!s->idcap || !id)
        return NULL;
    size_t mask = s->idcap - 1;
    for (size_t h = hash_str(id) & mask;; h = (h + 1) & mask) {
        uint32_t v = s->ids[h];
        if (!v)
            return NULL;
        const char *cand = doc_id(s->docs[v - 1]);
        if (cand && !strcmp(cand, id))
            return s->docs[v - 1];
    }
}

static int cmp_child(const void *a, const void *b)
{
    const char *pa = *(const char *const *)a, *pb = *(const char *const *)b;
    return strcmp(pa, pb);
}

size_t api_snapshot_children(const api_snapshot_t *s, const char *parent, const bson_t **out, size_t max)
{
    size_t lo = 0, hi = s->nchildren, n = 0;
    if (!parent)
        return 0;
    while (lo < hi) { /* first entry >= parent */
        size_t mid = (lo + hi) / 2;
        if (strcmp(s->children[mid].parent, parent) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < s->nchildren && !strcmp(s->children[i].parent, parent); i++)
        if (n < max)
            out[n++] = s->docs[s->children[i].idx];
    return n;
}

/* Read a whole collection into a new snapshot. NULL with err. */
static api_snapshot_t *load(mdb_mongo_t *m, int which, const atomic_bool *stop, mdb_error_t *err)
{
    api_snapshot_t *s = calloc(1, sizeof *s);
    mongoc_client_t *client = mdb_mongo_pop(m);
    mongoc_collection_t *coll = NULL;
    mongoc_cursor_t *cur = NULL;
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = which == 2 ? BCON_NEW("batchSize", BCON_INT32(5000), "projection", "{", "series_id", BCON_INT32(1),
                                         "study_id", BCON_INT32(1), "instance_number", BCON_INT32(1),
                                         "sop_class_uid", BCON_INT32(1), "acquisition_datetime", BCON_INT32(1),
                                         "paths", BCON_INT32(1), "}")
                              : BCON_NEW("batchSize", BCON_INT32(2000));
    size_t cap = 0;
    bson_error_t be;
    const bson_t *doc;
    if (!s || !client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "no database client");
        goto fail;
    }
    atomic_init(&s->refs, 1);
    coll = mdb_mongo_collection(m, client, coll_names[which]);
    cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    while (mongoc_cursor_next(cur, &doc)) {
        if (atomic_load(stop)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ECANCELED, "stopping");
            goto fail;
        }
        size_t max = which == 2 ? CACHE_MAX_INSTANCES : CACHE_MAX_DOCS;
        if (s->n == max) {
            mdb_error_set(err, MDB_ERR_SYSTEM, E2BIG, "%s has more than %zu documents", coll_names[which], max);
            goto fail;
        }
        if (s->n == cap) {
            cap = cap ? cap * 2 : 1024;
            bson_t **d = realloc(s->docs, cap * sizeof *d);
            if (!d)
                goto oom;
            s->docs = d;
        }
        if (!(s->docs[s->n] = bson_copy(doc)))
            goto oom;
        s->n++;
    }
    if (mongoc_cursor_error(cur, &be)) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "%s: %s", coll_names[which], be.message);
        goto fail;
    }
    /* _id table at most half full */
    s->idcap = 16;
    while (s->idcap < s->n * 2 + 2)
        s->idcap *= 2;
    if (!(s->ids = calloc(s->idcap, sizeof *s->ids)))
        goto oom;
    for (size_t i = 0; i < s->n; i++) {
        const char *id = doc_id(s->docs[i]);
        if (!id)
            continue;
        size_t h = hash_str(id) & (s->idcap - 1);
        while (s->ids[h])
            h = (h + 1) & (s->idcap - 1);
        s->ids[h] = (uint32_t)(i + 1);
    }
    if (which >= 1) { /* series by study_id, instances by series_id */
        if (s->n && !(s->children = malloc(s->n * sizeof *s->children)))
            goto oom;
        for (size_t i = 0; i < s->n; i++) {
            const char *p = doc_str(s->docs[i], which == 1 ? "study_id" : "series_id");
            if (p) {
                s->children[s->nchildren].parent = p;
                s->children[s->nchildren].idx = (uint32_t)i;
                s->nchildren++;
            }
        }
        if (s->nchildren) /* qsort must not get NULL, even for 0 elements */
            qsort(s->children, s->nchildren, sizeof *s->children, cmp_child);
    }
    s->loaded_ms = api_now_ms();
    goto done;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
fail:
    snapshot_free(s);
    s = NULL;
done:
    mongoc_cursor_destroy(cur);
    if (coll)
        mongoc_collection_destroy(coll);
    if (client)
        mdb_mongo_push(m, client);
    bson_destroy(&filter);
    bson_destroy(opts);
    return s;
}

/* Sum of instance_count over the series. */
static int64_t series_instance_total(const api_snapshot_t *s)
{
    int64_t total = 0;
    for (size_t i = 0; i < s->n; i++) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, s->docs[i], "instance_count") && BSON_ITER_HOLDS_NUMBER(&it))
            total += bson_iter_as_int64(&it);
    }
    return total;
}

static void *refresher(void *arg)
{
    refresher_arg_t *ra = arg;
    api_cache_t *c = ra->c;
    pthread_mutex_lock(&c->lock);
    while (!atomic_load(&c->stop)) {
        int which = ra->instances ? (c->want[2] ? 2 : -1) : c->want[0] ? 0 : c->want[1] ? 1 : -1;
        if (which < 0) {
            pthread_cond_wait(&c->cond, &c->lock);
            continue;
        }
        c->want[which] = false;
        if (which == 2 && c->snap[2] && c->snap[1] && series_instance_total(c->snap[1]) == (int64_t)c->snap[2]->n)
            continue; /* the instance counts still add up: nothing new */
        c->loading[which] = true;
        pthread_mutex_unlock(&c->lock);
        mdb_error_t err = {0};
        int64_t t0 = api_now_ms();
        api_snapshot_t *s = load(c->mongo, which, &c->stop, &err);
        int64_t took = api_now_ms() - t0;
        pthread_mutex_lock(&c->lock);
        c->loading[which] = false;
        if (!s) {
            if (err.domain == MDB_ERR_SYSTEM && err.code == E2BIG) {
                c->disabled[which] = true;
                MDB_LOG(MDB_LOG_WARN, "cache: %s; queries on it go to the database", err.message);
            } else if (err.code != ECANCELED) {
                MDB_LOG(MDB_LOG_WARN, "cache: cannot load %s: %s", coll_names[which], err.message);
            }
            continue;
        }
        api_snapshot_t *old = c->snap[which];
        c->snap[which] = s;
        MDB_LOG(MDB_LOG_DEBUG, "cache: loaded %zu %s in %lld ms", s->n, coll_names[which], (long long)took);
        pthread_mutex_unlock(&c->lock);
        api_snapshot_release(old);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

api_cache_t *api_cache_start(mdb_mongo_t *m, int64_t ttl_ms)
{
    api_cache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->mongo = m;
    c->ttl_ms = ttl_ms;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    atomic_init(&c->stop, false);
    c->want[0] = c->want[1] = c->want[2] = true; /* first load right away */
    for (int i = 0; i < 2; i++) {
        c->args[i] = (refresher_arg_t){c, i == 1};
        if (pthread_create(&c->threads[i], NULL, refresher, &c->args[i]) != 0) {
            api_cache_stop(c);
            return NULL;
        }
        c->nthreads++;
    }
    return c;
}

void api_cache_stop(api_cache_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stop, true);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    for (int i = 0; i < c->nthreads; i++)
        pthread_join(c->threads[i], NULL);
    for (int i = 0; i < 3; i++)
        api_snapshot_release(c->snap[i]);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

api_snapshot_t *api_cache_acquire(api_cache_t *c, int level)
{
    if (!c || level < 0 || level > 2)
        return NULL;
    pthread_mutex_lock(&c->lock);
    api_snapshot_t *s = c->disabled[level] ? NULL : c->snap[level];
    if (s)
        atomic_fetch_add(&s->refs, 1);
    int64_t ttl = level == 2 ? (c->ttl_ms > INSTANCE_RELOAD_MIN_MS ? c->ttl_ms : INSTANCE_RELOAD_MIN_MS) : c->ttl_ms;
    bool stale = !s || api_now_ms() - s->loaded_ms > ttl;
    if (stale && !c->disabled[level] && !c->loading[level] && !c->want[level]) {
        c->want[level] = true;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    return s;
}

void api_cache_invalidate(api_cache_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < 3; i++)
        if (!c->disabled[i] && !c->loading[i])
            c->want[i] = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}
