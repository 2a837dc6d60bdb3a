/* mdb_nl_run.c: the database side of natural-language search. Builds a
 * vocabulary from what the catalogue actually holds (fields present in a
 * sample of documents, metadata keywords, the distinct values of name-like
 * fields) and executes a translation: every filter coming from a sentence or
 * an LLM is validated through mdb_query's raw-query whitelist, joins are
 * resolved into $in/$nin lists of UIDs read from the linked collection, and
 * the final query runs with a server time limit and a capped page. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"
#include "mdb_ops.h"
#include "mdb_strmap.h"

/* ---------------------------------------------------------------- vocab */

static mdb_qfield_type_t type_of(const bson_iter_t *it, const char *key, bool meta)
{
    size_t kl = strlen(key);
    bool date_name = kl >= 4 && (!strcmp(key + kl - 4, "Date") || !strcmp(key + kl - 4, "date"));
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
    case BSON_TYPE_DOUBLE: return MDB_QFIELD_NUMBER;
    case BSON_TYPE_UTF8: return date_name ? MDB_QFIELD_DATE : (meta ? MDB_QFIELD_ANY : MDB_QFIELD_STRING);
    default: return meta ? MDB_QFIELD_ANY : MDB_QFIELD_STRING;
    }
}

/* Metadata strings worth recognising by name when typed in a sentence. */
static bool spot_keyword(const char *kw)
{
    static const char *const spot[] = {"ConvolutionKernel", "StationName", "InstitutionName", "ManufacturerModelName",
                                       NULL};
    for (int i = 0; spot[i]; i++)
        if (!strcmp(spot[i], kw))
            return true;
    return false;
}

static bool skip_top_key(const char *k)
{
    static const char *const skip[] = {"_id",        "metadata",   "series", "paths",     "job_ids",
                                       "created_at", "updated_at", "file",   "conflicts", NULL};
    for (int i = 0; skip[i]; i++)
        if (!strcmp(skip[i], k))
            return true;
    return k[0] == '_';
}

typedef struct {
    mdb_nl_vocab_t *v;
    mdb_query_level_t level;
    bool failed; /* the vocabulary refused a field, not the database */
} sample_ctx_t;

/* Fields (and spotted metadata values) of one sampled document. */
static bool sample_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    sample_ctx_t *sc = ud;
    bson_iter_t it;
    bool ok = true;
    char path[300];
    if (!bson_iter_init(&it, doc))
        return true;
    while (ok && bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (!strcmp(k, "metadata") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            bson_iter_t mi;
            if (!bson_iter_recurse(&it, &mi))
                continue;
            while (ok && bson_iter_next(&mi)) {
                const char *mk = bson_iter_key(&mi);
                snprintf(path, sizeof path, "metadata.%s", mk);
                ok = mdb_nl_vocab_add_field(sc->v, sc->level, path, type_of(&mi, mk, true), err);
                if (ok && spot_keyword(mk) && BSON_ITER_HOLDS_UTF8(&mi))
                    ok = mdb_nl_vocab_add_value(sc->v, path, bson_iter_utf8(&mi, NULL), err);
            }
            continue;
        }
        if (skip_top_key(k))
            continue;
        ok = mdb_nl_vocab_add_field(sc->v, sc->level, k, type_of(&it, k, false), err);
    }
    sc->failed = !ok;
    return ok;
}

static bool sample_level(mdb_nl_vocab_t *v, mdb_mongo_t *m, mdb_query_level_t level, int sample, mdb_error_t *err)
{
    bson_t opts = BSON_INITIALIZER;
    sample_ctx_t sc = {v, level, false};
    BSON_APPEND_INT64(&opts, "limit", sample);
    BSON_APPEND_INT64(&opts, "maxTimeMS", 10000);
    bool ok = mdb_ops_find(m, mdb_query_level_name(level), NULL, &opts, sample_doc, &sc, err);
    if (!ok && !sc.failed)
        mdb_error_prefix(err, "sampling documents");
    bson_destroy(&opts);
    return ok;
}

static bool add_distinct(mdb_nl_vocab_t *v, mdb_mongo_t *m, const char *coll, const char *field, mdb_error_t *err)
{
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_UTF8(&cmd, "distinct", coll);
    BSON_APPEND_UTF8(&cmd, "key", field);
    bool ok = mdb_ops_command(m, &cmd, true, &reply, err);
    if (!ok) {
        mdb_error_prefix(err, "reading distinct values");
    } else {
        bson_iter_t it, ai;
        if (bson_iter_init_find(&it, &reply, "values") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &ai))
            while (ok && bson_iter_next(&ai))
                if (BSON_ITER_HOLDS_UTF8(&ai))
                    ok = mdb_nl_vocab_add_value(v, field, bson_iter_utf8(&ai, NULL), err);
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
    return ok;
}

bool mdb_nl_vocab_load(mdb_nl_vocab_t *v, mdb_mongo_t *m, int sample, mdb_error_t *err)
{
    static const struct {
        mdb_query_level_t level;
        const char *field;
    } distinct[] = {
        {MDB_QUERY_SERIES, "manufacturer"},       {MDB_QUERY_SERIES, "manufacturer_model_name"},
        {MDB_QUERY_SERIES, "body_part_examined"}, {MDB_QUERY_SERIES, "modality"},
        {MDB_QUERY_STUDIES, "modality"},          {MDB_QUERY_STUDIES, "patient_id"},
        {MDB_QUERY_STUDIES, "collection_ids"},
    };
    if (!mdb_nl_vocab_add_promoted(v, err))
        return false;
    if (sample <= 0)
        sample = 200;
    bool ok = true;
    for (int l = 0; ok && l < MDB_QUERY_LEVEL_COUNT; l++)
        ok = sample_level(v, m, (mdb_query_level_t)l, sample, err);
    for (size_t i = 0; ok && i < sizeof distinct / sizeof distinct[0]; i++)
        ok = add_distinct(v, m, mdb_query_level_name(distinct[i].level), distinct[i].field, err);
    return ok;
}

/* ------------------------------------------------------------- execution */

typedef struct {
    const char *coll, *field;
    mdb_strmap_t *set;
    json_t *out;
} collect_ctx_t;

static bool collect_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    collect_ctx_t *cc = ud;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, cc->field) || !BSON_ITER_HOLDS_UTF8(&it))
        return true;
    const char *id = bson_iter_utf8(&it, NULL);
    bool created = false;
    if (!mdb_strmap_put(cc->set, id, &created)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (!created)
        return true;
    if (json_array_size(cc->out) >= MDB_NL_MAX_JOIN_IDS) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "the condition on %s matches more than %d documents; add a narrower condition", cc->coll,
                      MDB_NL_MAX_JOIN_IDS);
        return false;
    }
    if (json_array_append_new(cc->out, json_string(id))) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

/* Collect the distinct string values of `field` over coll docs matching filter. */
static bool collect_ids(mdb_mongo_t *m, const char *coll, const bson_t *filter, const char *field, int64_t time_ms,
                        mdb_strmap_t *set, json_t *out, mdb_error_t *err)
{
    bson_t opts = BSON_INITIALIZER, proj = BSON_INITIALIZER;
    collect_ctx_t cc = {coll, field, set, out};
    BSON_APPEND_INT32(&proj, field, 1);
    BSON_APPEND_DOCUMENT(&opts, "projection", &proj);
    if (time_ms > 0)
        BSON_APPEND_INT64(&opts, "maxTimeMS", time_ms);
    bool ok = mdb_ops_find(m, coll, filter, &opts, collect_doc, &cc, err);
    bson_destroy(&opts);
    bson_destroy(&proj);
    return ok;
}

/* Validate a translated filter: whitelist and conversion to BSON. */
static bool validated(const json_t *filter, bson_t *out, const char *what, mdb_error_t *err)
{
    if (!mdb_query_filter_from_json(filter, out, err)) {
        mdb_error_prefix(err, "%s", what);
        return false;
    }
    return true;
}

/* Append {local: {$in|$nin: [ids]}} to the array builder arr at index idx. */
static void append_id_clause(bson_t *arr, size_t idx, const char *local, bool negate, const json_t *ids)
{
    char key[16];
    const char *k;
    bson_t clause, cond, list;
    bson_uint32_to_string((uint32_t)idx, &k, key, sizeof key);
    bson_append_document_begin(arr, k, -1, &clause);
    bson_append_document_begin(&clause, local, -1, &cond);
    bson_append_array_begin(&cond, negate ? "$nin" : "$in", -1, &list);
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_utf8(&list, k, -1, json_string_value(id), -1);
    }
    bson_append_array_end(&cond, &list);
    bson_append_document_end(&clause, &cond);
    bson_append_document_end(arr, &clause);
}

/* Resolve r into one BSON filter {$and: [filter, id clauses...]} and, when
 * json_out is given, the same as JSON. out is always initialized. */
static bool resolve(mdb_mongo_t *m, const mdb_nl_result_t *r, int64_t time_ms, bson_t *out, json_t **json_out,
                    mdb_error_t *err)
{
    const json_t *joins = mdb_nl_result_joins(r);
    json_t *jitems = json_array();
    bson_t own, arr;
    size_t n = 0;
    bool ok = false, open_arr = false;
    bson_init(out);
    if (!jitems) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (!validated(mdb_nl_result_filter(r), &own, "translated filter", err))
        goto done;
    bson_append_array_begin(out, "$and", -1, &arr);
    open_arr = true;
    {
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)n++, &k, key, sizeof key);
        bson_append_document(&arr, k, -1, &own);
        bson_destroy(&own);
        json_array_append(jitems, (json_t *)mdb_nl_result_filter(r));
    }
    size_t i;
    json_t *j;
    json_array_foreach(joins, i, j)
    {
        const char *coll_name = json_string_value(json_object_get(j, "collection"));
        const char *local = json_string_value(json_object_get(j, "local"));
        const char *foreign = json_string_value(json_object_get(j, "foreign"));
        bool negate = json_is_true(json_object_get(j, "negate"));
        mdb_query_level_t jl;
        if (!coll_name || !local || !foreign || !mdb_query_level_parse(coll_name, &jl)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "join %zu is malformed", i);
            goto done;
        }
        bson_t jf;
        if (!validated(json_object_get(j, "filter"), &jf, "join filter", err))
            goto done;
        mdb_strmap_t *set = mdb_strmap_new();
        json_t *ids = json_array();
        bool jok = set && ids;
        if (!jok)
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        jok = jok && collect_ids(m, coll_name, &jf, foreign, time_ms, set, ids, err);
        mdb_strmap_destroy(set);
        bson_destroy(&jf);
        if (!jok) {
            json_decref(ids);
            goto done;
        }
        append_id_clause(&arr, n++, local, negate, ids);
        if (json_out)
            json_array_append_new(jitems, json_pack("{s:{s:O}}", local, negate ? "$nin" : "$in", ids));
        json_decref(ids);
    }
    if (json_out) {
        *json_out =
            json_array_size(jitems) == 1 ? json_incref(json_array_get(jitems, 0)) : json_pack("{s:O}", "$and", jitems);
        if (!*json_out) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            goto done;
        }
    }
    ok = true;
done:
    if (open_arr)
        bson_append_array_end(out, &arr);
    json_decref(jitems);
    if (!ok)
        bson_reinit(out);
    return ok;
}

json_t *mdb_nl_resolve(mdb_mongo_t *m, const mdb_nl_result_t *r, int64_t time_ms, mdb_error_t *err)
{
    bson_t b;
    json_t *out = NULL;
    bool ok = resolve(m, r, time_ms, &b, &out, err);
    bson_destroy(&b);
    return ok ? out : NULL;
}

json_t *mdb_nl_run(mdb_mongo_t *m, const mdb_nl_result_t *r, int64_t limit, int64_t offset, int64_t max_limit,
                   int64_t time_ms, mdb_error_t *err)
{
    return mdb_nl_run_projected(m, r, NULL, limit, offset, max_limit, time_ms, err);
}

/* One result document, as JSON, onto the items array. */
static bool append_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    json_t *jd = mdb_query_bson_to_json(doc);
    if (!jd || json_array_append_new((json_t *)ud, jd)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    return true;
}

json_t *mdb_nl_run_projected(mdb_mongo_t *m, const mdb_nl_result_t *r, const json_t *projection, int64_t limit,
                             int64_t offset, int64_t max_limit, int64_t time_ms, mdb_error_t *err)
{
    if (max_limit <= 0)
        max_limit = 1000;
    if (limit <= 0 || limit > max_limit) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "limit must be between 1 and %lld", (long long)max_limit);
        return NULL;
    }
    if (offset < 0 || offset > 10000000) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "offset must be between 0 and 10000000");
        return NULL;
    }
    json_t *result = NULL, *items = NULL;
    bson_t filter, opts = BSON_INITIALIZER, count_opts = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    if (!resolve(m, r, time_ms, &filter, NULL, err)) {
        bson_destroy(&filter);
        bson_destroy(&opts);
        bson_destroy(&count_opts);
        bson_destroy(&sort);
        return NULL;
    }
    const char *cname = mdb_query_level_name(mdb_nl_result_level(r));
    items = json_array();
    if (!items) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    if (time_ms > 0) {
        BSON_APPEND_INT64(&opts, "maxTimeMS", time_ms);
        BSON_APPEND_INT64(&count_opts, "maxTimeMS", time_ms);
    }
    BSON_APPEND_INT32(&sort, "_id", 1);
    BSON_APPEND_DOCUMENT(&opts, "sort", &sort);
    if (json_object_size(projection)) {
        bson_t proj = BSON_INITIALIZER;
        const char *pk;
        json_t *pv;
        json_object_foreach((json_t *)projection, pk, pv) BSON_APPEND_INT32(&proj, pk, 1);
        BSON_APPEND_DOCUMENT(&opts, "projection", &proj);
        bson_destroy(&proj);
    }
    if (offset > 0)
        BSON_APPEND_INT64(&opts, "skip", offset);
    BSON_APPEND_INT64(&opts, "limit", limit);
    if (!mdb_ops_find(m, cname, &filter, &opts, append_doc, items, err))
        goto done;
    int64_t total;
    if (offset == 0 && (int64_t)json_array_size(items) < limit)
        total = (int64_t)json_array_size(items);
    else if (!mdb_ops_count(m, cname, &filter, &count_opts, &total, err))
        goto done;
    result = json_pack("{s:I, s:I, s:I, s:O}", "total", (json_int_t)total, "limit", (json_int_t)limit, "offset",
                       (json_int_t)offset, "items", items);
    if (!result)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
done:
    json_decref(items);
    bson_destroy(&filter);
    bson_destroy(&opts);
    bson_destroy(&count_opts);
    bson_destroy(&sort);
    return result;
}
