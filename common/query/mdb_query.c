/* mdb_query: turns filter parameters and raw JSON queries into MongoDB
 * filters, and runs them. The HTTP API, the CLI and the dashboard all go
 * through here, so a filter means the same thing everywhere.
 *
 * Filter parameters become a list of clauses that are ANDed. A clause on a
 * field that the level's documents do not carry but a parent level does
 * (series?study_date=..., instances?modality=...) is kept as a parent clause:
 * mdb_query_run first resolves the parent documents' _ids and then filters on
 * study_id/series_id with $in. That keeps documents free of copied fields
 * while letting researchers ask series questions with study attributes.
 *
 * Raw queries are validated by walking the JSON: every key that starts with
 * '$' must be on a whitelist for its position (query document, field
 * operator, aggregation expression inside $expr); everything else is a field
 * name and may not contain a '$'-segment. The JSON is converted to BSON by
 * hand so nothing like extended-JSON type wrappers sneaks in.
 *
 * This file holds the levels and the query object (clause lists, page,
 * accessors, descend); the other parts are the mdb_query_*.c files listed
 * in mdb_query_private.h. */
#include "mdb_query_private.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT 50
#define DEFAULT_MAX_LIMIT 1000

static const char *const level_names[MDB_QUERY_LEVEL_COUNT] = {"studies", "series", "instances"};

const char *mdb_query_level_name(mdb_query_level_t level)
{
    return level < MDB_QUERY_LEVEL_COUNT ? level_names[level] : "?";
}

bool mdb_query_level_parse(const char *name, mdb_query_level_t *out)
{
    static const struct {
        const char *name;
        mdb_query_level_t level;
    } names[] = {{"studies", MDB_QUERY_STUDIES},
                 {"study", MDB_QUERY_STUDIES},
                 {"series", MDB_QUERY_SERIES},
                 {"instances", MDB_QUERY_INSTANCES},
                 {"instance", MDB_QUERY_INSTANCES}};
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!strcmp(names[i].name, name)) {
            *out = names[i].level;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* the query object                                                          */

void mdb_query_clauses_clear(mdb_query_clauses_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        bson_destroy(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Takes ownership of c (destroys it on failure). */
bool mdb_query_clauses_push(mdb_query_clauses_t *l, bson_t *c)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        bson_t **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            bson_destroy(c);
            return false;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = c;
    return true;
}

void mdb_query_build_and(const mdb_query_clauses_t *l, bson_t *out)
{
    bson_reinit(out);
    if (l->n == 1) {
        bson_concat(out, l->v[0]);
        return;
    }
    if (l->n == 0)
        return;
    bson_t arr;
    bson_append_array_begin(out, "$and", 4, &arr);
    for (size_t i = 0; i < l->n; i++) {
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_document(&arr, k, -1, l->v[i]);
    }
    bson_append_array_end(out, &arr);
}

mdb_query_t *mdb_query_new(mdb_query_level_t level, int64_t max_limit)
{
    if (level >= MDB_QUERY_LEVEL_COUNT)
        return NULL;
    mdb_query_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->level = level;
    snprintf(q->collection, sizeof q->collection, "%s", level_names[level]);
    bson_init(&q->filter);
    bson_init(&q->sort);
    bson_init(&q->projection);
    BSON_APPEND_INT32(&q->sort, "_id", 1);
    q->max_limit = max_limit > 0 ? max_limit : DEFAULT_MAX_LIMIT;
    q->limit = DEFAULT_LIMIT < q->max_limit ? DEFAULT_LIMIT : q->max_limit;
    return q;
}

void mdb_query_destroy(mdb_query_t *q)
{
    if (!q)
        return;
    mdb_query_clauses_clear(&q->clauses);
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++)
        mdb_query_clauses_clear(&q->parent[i]);
    bson_destroy(&q->filter);
    bson_destroy(&q->sort);
    bson_destroy(&q->projection);
    free(q);
}

const char *mdb_query_collection(const mdb_query_t *q)
{
    return q->collection;
}

const bson_t *mdb_query_filter(const mdb_query_t *q)
{
    mdb_query_t *mq = (mdb_query_t *)q; /* the cache is logically const */
    if (mq->filter_dirty && !mq->raw) {
        mdb_query_build_and(&mq->clauses, &mq->filter);
        mq->filter_dirty = false;
    }
    return &q->filter;
}

const bson_t *mdb_query_sort(const mdb_query_t *q)
{
    return &q->sort;
}

const bson_t *mdb_query_projection(const mdb_query_t *q)
{
    return &q->projection;
}

int64_t mdb_query_limit(const mdb_query_t *q)
{
    return q->limit;
}

int64_t mdb_query_offset(const mdb_query_t *q)
{
    return q->offset;
}

char *mdb_query_filter_json(const mdb_query_t *q)
{
    const bson_t *f = mdb_query_filter(q);
    bool parents = false;
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++)
        parents = parents || q->parent[i].n > 0;
    if (!parents)
        return bson_as_relaxed_extended_json(f, NULL);
    /* Show parent clauses the way mdb_query_run applies them. */
    bson_t all = BSON_INITIALIZER, tmp = BSON_INITIALIZER;
    bson_append_document(&all, q->collection, -1, f);
    for (int i = 0; i < MDB_QUERY_LEVEL_COUNT; i++) {
        if (!q->parent[i].n)
            continue;
        mdb_query_build_and(&q->parent[i], &tmp);
        bson_append_document(&all, level_names[i], -1, &tmp);
    }
    char *s = bson_as_relaxed_extended_json(&all, NULL);
    bson_destroy(&all);
    bson_destroy(&tmp);
    return s;
}

bool mdb_query_set_limit(mdb_query_t *q, int64_t limit, mdb_error_t *err)
{
    if (limit < 0 || limit > q->max_limit) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "limit must be between 0 (the count alone) and %lld, got %lld",
                      (long long)q->max_limit, (long long)limit);
        return false;
    }
    q->limit = limit;
    return true;
}

bool mdb_query_set_offset(mdb_query_t *q, int64_t offset, mdb_error_t *err)
{
    if (offset < 0 || offset > MDB_QUERY_MAX_OFFSET) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "offset must be between 0 and %d, got %lld", MDB_QUERY_MAX_OFFSET,
                      (long long)offset);
        return false;
    }
    q->offset = offset;
    return true;
}

/* Is key a top-level key of b (dotted keys compared whole, not as paths)? */
bool mdb_query_has_key(const bson_t *b, const char *key)
{
    bson_iter_t it;
    if (!bson_iter_init(&it, b))
        return false;
    while (bson_iter_next(&it))
        if (!strcmp(bson_iter_key(&it), key))
            return true;
    return false;
}

mdb_query_t *mdb_query_descend(const mdb_query_t *q, mdb_query_level_t child, mdb_error_t *err)
{
    if (q->level >= MDB_QUERY_LEVEL_COUNT || child >= MDB_QUERY_LEVEL_COUNT || child < q->level) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "%s has no %s below it", q->collection,
                      child < MDB_QUERY_LEVEL_COUNT ? level_names[child] : "?");
        return NULL;
    }
    mdb_query_t *d = mdb_query_new(child, q->max_limit);
    if (!d)
        goto oom;
    for (int l = 0; l < MDB_QUERY_LEVEL_COUNT; l++)
        for (size_t i = 0; i < q->parent[l].n; i++)
            if (!mdb_query_clauses_push(l == (int)child ? &d->clauses : &d->parent[l], bson_copy(q->parent[l].v[i])))
                goto oom;
    mdb_query_clauses_t *own = child == q->level ? &d->clauses : &d->parent[q->level];
    if (q->raw) {
        if (!bson_empty(&q->filter) && !mdb_query_clauses_push(own, bson_copy(&q->filter)))
            goto oom;
    } else {
        for (size_t i = 0; i < q->clauses.n; i++)
            if (!mdb_query_clauses_push(own, bson_copy(q->clauses.v[i])))
                goto oom;
    }
    d->filter_dirty = true;
    return d;
oom:
    mdb_query_destroy(d);
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return NULL;
}
