/* mdb_store_mem: the in-memory implementation of mdb_store_t, for the unit
 * tests of the merge model. Four JSON objects (_id -> document) stand for
 * the collections; reads return deep copies, as a database would. A
 * failure can be injected into the n-th write call: it writes the first
 * half of its documents and fails, which is what a linker killed in the
 * middle of a bulk write leaves behind. Counting walks every instance: the
 * same answer the MongoDB store gets from its indexes. */
#include <stdlib.h>
#include <string.h>

#include "mdb_docs.h"
#include "mdb_store.h"

enum { MEM_STUDIES, MEM_SERIES, MEM_INSTANCES, MEM_CONFLICTS, MEM_NCOLL };

typedef struct {
    json_t *coll[MEM_NCOLL]; /* _id -> document */
    size_t writes;           /* documents inserted or upserted */
    int fail_at;             /* > 0: the fail_at-th write call from now fails half-way */
} mem_t;

static json_t *mem_coll(mem_t *m, const char *name)
{
    static const char *const names[MEM_NCOLL] = {MDB_DOCS_STUDIES, MDB_DOCS_SERIES, MDB_DOCS_INSTANCES,
                                                 MDB_DOCS_CONFLICTS};
    for (int i = 0; name && i < MEM_NCOLL; i++)
        if (!strcmp(name, names[i]))
            return m->coll[i];
    return NULL;
}

/* Injected failure: true if this write call must fail after writing *n of its documents. */
static bool mem_fails(mem_t *m, size_t *n)
{
    if (m->fail_at <= 0 || --m->fail_at > 0)
        return false;
    *n /= 2;
    return true;
}

static bool injected(mdb_error_t *err)
{
    mdb_error_set(err, MDB_ERR_MONGO, 0, "injected failure");
    return false;
}

static bool in_list(const char *s, const char *const *ids, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        if (!strcmp(s, ids[i]))
            return true;
    return false;
}

static bool copy_out(json_t *out, const json_t *d)
{
    return json_array_append_new(out, json_deep_copy(d)) == 0;
}

static bool load_by(mem_t *m, json_t *coll, const char *key, const char *const *ids, size_t n, json_t *out)
{
    const char *k;
    json_t *d;
    (void)m;
    json_object_foreach(coll, k, d)
    {
        if (in_list(json_string_value(json_object_get(d, key)), ids, n) && !copy_out(out, d))
            return false;
    }
    return true;
}

static bool m_load_studies(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    return load_by(m, m->coll[MEM_STUDIES], "_id", ids, n, out);
}

static bool m_load_series(void *ud, const char *const *ids, size_t n, const char *const *sids, size_t ns, json_t *out,
                          mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    const char *k;
    json_t *d;
    json_object_foreach(m->coll[MEM_SERIES], k, d)
    {
        bool hit = in_list(k, ids, n) || in_list(json_string_value(json_object_get(d, "study_id")), sids, ns);
        if (hit && !copy_out(out, d))
            return false;
    }
    return true;
}

static bool m_load_conflicts(void *ud, const char *const *uids, size_t n, json_t *out, mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    return load_by(m, m->coll[MEM_CONFLICTS], "uid", uids, n, out);
}

static bool m_load_instances(void *ud, const char *const *ids, size_t n, json_t *out, mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    return load_by(m, m->coll[MEM_INSTANCES], "_id", ids, n, out);
}

static bool m_insert(void *ud, const char *coll, const json_t *docs, json_t *dups, mdb_error_t *err)
{
    mem_t *m = ud;
    json_t *c = mem_coll(m, coll);
    size_t n = json_array_size(docs);
    bool fail = mem_fails(m, &n);
    if (!c) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "no collection %s", coll);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (!id)
            continue;
        if (json_object_get(c, id)) {
            json_array_append(dups, json_object_get(d, "_id"));
            continue;
        }
        json_object_set_new(c, id, json_deep_copy(d));
        m->writes++;
    }
    return fail ? injected(err) : true;
}

static void bump(json_t *counts, const char *key)
{
    json_object_set_new(counts, key, json_integer(json_integer_value(json_object_get(counts, key)) + 1));
}

static bool m_count(void *ud, const char *const *ids, size_t n, const char *const *jobs, size_t nj, json_t *counts,
                    json_t *job_counts, mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    for (size_t i = 0; i < n; i++)
        json_object_set_new(counts, ids[i], json_integer(0));
    for (size_t i = 0; job_counts && i < nj; i++)
        json_object_set_new(job_counts, jobs[i], json_integer(0));
    const char *k;
    json_t *d;
    json_object_foreach(m->coll[MEM_INSTANCES], k, d)
    {
        const char *s = json_string_value(json_object_get(d, "series_id"));
        if (in_list(s, ids, n))
            bump(counts, s);
        json_t *jl = json_object_get(d, "job_ids");
        for (size_t i = 0; job_counts && i < json_array_size(jl); i++) {
            const char *j = json_string_value(json_array_get(jl, i));
            if (in_list(j, jobs, nj))
                bump(job_counts, j);
        }
    }
    return true;
}

static bool m_count_series(void *ud, const char *const *ids, size_t n, const char *tp, int64_t upto, json_t *counts,
                           mdb_error_t *err)
{
    (void)err;
    mem_t *m = ud;
    for (size_t i = 0; i < n; i++)
        json_object_set_new(counts, ids[i], json_integer(0));
    const char *k;
    json_t *d;
    json_object_foreach(m->coll[MEM_INSTANCES], k, d)
    {
        const char *s = json_string_value(json_object_get(d, "series_id"));
        json_t *ins = json_object_get(d, "_ins");
        const char *t = json_string_value(json_object_get(ins, "t"));
        bool late = tp && t && !strcmp(t, tp) && json_integer_value(json_object_get(ins, "o")) > upto;
        if (in_list(s, ids, n) && !late)
            bump(counts, s);
    }
    return true;
}

static bool m_upsert(void *ud, const char *coll, const json_t *docs, const json_t *unset, const char *now,
                     mdb_error_t *err)
{
    mem_t *m = ud;
    json_t *c = mem_coll(m, coll);
    size_t n = json_array_size(docs);
    bool fail = mem_fails(m, &n);
    if (!c) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "no collection %s", coll);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(docs, i);
        const char *id = json_string_value(json_object_get(d, "_id"));
        if (!id)
            continue;
        json_t *cur = json_object_get(c, id);
        if (!cur) {
            cur = json_object();
            json_object_set_new(cur, "created_at", json_string(now));
            json_object_set_new(c, id, cur);
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)d, k, v)
        {
            if (strcmp(k, "created_at") && strcmp(k, "updated_at") && strcmp(k, MDB_STORE_IF_UPDATED_AT))
                json_object_set_new(cur, k, json_deep_copy(v));
        }
        size_t j;
        json_t *name;
        json_array_foreach(json_array_get(unset, i), j, name) json_object_del(cur, json_string_value(name));
        json_object_set_new(cur, "updated_at", json_string(now));
        m->writes++;
    }
    return fail ? injected(err) : true;
}

mdb_store_t *mdb_store_mem_new(void)
{
    mdb_store_t *st = calloc(1, sizeof *st);
    mem_t *m = calloc(1, sizeof *m);
    bool ok = st && m;
    for (int i = 0; ok && i < MEM_NCOLL; i++)
        ok = (m->coll[i] = json_object()) != NULL;
    if (!ok) {
        for (int i = 0; m && i < MEM_NCOLL; i++)
            json_decref(m->coll[i]);
        free(m);
        free(st);
        return NULL;
    }
    st->ud = m;
    st->load_studies = m_load_studies;
    st->load_series = m_load_series;
    st->load_conflicts = m_load_conflicts;
    st->load_instances = m_load_instances;
    st->insert = m_insert;
    st->count_instances = m_count;
    st->count_series = m_count_series;
    st->upsert = m_upsert;
    return st;
}

void mdb_store_mem_destroy(mdb_store_t *st)
{
    if (!st)
        return;
    mem_t *m = st->ud;
    for (int i = 0; m && i < MEM_NCOLL; i++)
        json_decref(m->coll[i]);
    free(m);
    free(st);
}

json_t *mdb_store_mem_collection(mdb_store_t *st, const char *coll)
{
    return mem_coll(st->ud, coll);
}

size_t mdb_store_mem_writes(const mdb_store_t *st)
{
    return ((const mem_t *)st->ud)->writes;
}

void mdb_store_mem_fail_at(mdb_store_t *st, int n)
{
    ((mem_t *)st->ud)->fail_at = n;
}
