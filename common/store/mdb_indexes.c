/* mdb_indexes: the catalogue's index table and its creation. Why each
 * index exists:
 *  - every promoted field the filter parameters name (mdb_query.c's field
 *    tables; _id has its own index), including the parents' link fields a
 *    series/instance query resolves with {study_id|series_id: {$in: ids}};
 *  - studies' `modalities` (a study-level modality filter matches
 *    `modality` or `modalities`);
 *  - every QIDO-RS matching key of api/qido.c's attribute table, among
 *    them a few metadata keywords (PatientName, PatientSex, ...);
 *  - conflicts by uid and kind (`metadb reconcile`, the dashboard).
 * Filters on other metadata.<Keyword> paths have no index: they are
 * answered within api.query_time_ms or refused with the time limit.
 *
 * tests/integration/test_indexes.py parses INDEXES below (one entry per
 * line, `{"collection", {"key"[, "key"]}},`): keep that shape. */
#include "mdb_indexes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_jobs.h"

/* INDEXES-BEGIN */
static const mdb_index_spec_t INDEXES[] = {
    {"studies", {"accession_number"}},
    {"studies", {"patient_id"}},
    {"studies", {"study_date"}},
    {"studies", {"study_description"}},
    {"studies", {"modality"}},
    {"studies", {"modalities"}},
    {"studies", {"acquisition_datetime"}},
    {"studies", {"collection_ids"}},
    {"studies", {"job_ids"}},
    {"studies", {"series_count"}},
    {"studies", {"instance_count"}},
    {"studies", {"created_at"}},
    {"studies", {"updated_at"}},
    {"studies", {"metadata.StudyTime"}},
    {"studies", {"metadata.ReferringPhysicianName"}},
    {"studies", {"metadata.PatientName"}},
    {"studies", {"metadata.PatientBirthDate"}},
    {"studies", {"metadata.PatientSex"}},
    {"studies", {"metadata.StudyID"}},
    {"series", {"study_id"}},
    {"series", {"series_number"}},
    {"series", {"series_description"}},
    {"series", {"modality"}},
    {"series", {"body_part_examined"}},
    {"series", {"series_date"}},
    {"series", {"series_time"}},
    {"series", {"manufacturer"}},
    {"series", {"manufacturer_model_name"}},
    {"series", {"protocol_name"}},
    {"series", {"kvp"}},
    {"series", {"slice_thickness"}},
    {"series", {"instance_count"}},
    {"series", {"collection_ids"}},
    {"series", {"created_at"}},
    {"series", {"updated_at"}},
    {"instances", {"series_id"}},
    {"instances", {"study_id"}},
    {"instances", {"sop_class_uid"}},
    {"instances", {"instance_number"}},
    {"instances", {"acquisition_datetime"}},
    {"instances", {"paths"}},
    {"instances", {"job_ids"}},
    {"instances", {"integrity"}},
    {"instances", {"created_at"}},
    {"instances", {"updated_at"}},
    {"instances", {"metadata.NumberOfFrames"}},
    {"instances", {"metadata.Rows"}},
    {"instances", {"metadata.Columns"}},
    {"instances", {"metadata.BitsAllocated"}},
    {"conflicts", {"uid"}},
    {"conflicts", {"kind"}},
};
/* INDEXES-END */

#define NINDEXES (sizeof INDEXES / sizeof INDEXES[0])

const mdb_index_spec_t *mdb_indexes_table(size_t *n)
{
    *n = NINDEXES;
    return INDEXES;
}

void mdb_indexes_name(const mdb_index_spec_t *spec, char *out, size_t cap)
{
    size_t off = 0;
    if (!cap)
        return;
    out[0] = '\0';
    for (int k = 0; k < MDB_INDEX_MAX_KEYS && spec->keys[k] && off < cap; k++) {
        int w = snprintf(out + off, cap - off, "%s%s_1", k ? "_" : "", spec->keys[k]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    for (char *p = out; *p; p++)
        if (*p == '.')
            *p = '_';
}

/* The key patterns of a collection's existing indexes. */
typedef struct {
    bson_t **v;
    size_t n, cap;
} keyset_t;

static void keyset_clear(keyset_t *ks)
{
    for (size_t i = 0; i < ks->n; i++)
        bson_destroy(ks->v[i]);
    free(ks->v);
    memset(ks, 0, sizeof *ks);
}

static bool keyset_push(keyset_t *ks, const bson_t *key)
{
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 16;
        bson_t **v = realloc(ks->v, cap * sizeof *v);
        if (!v)
            return false;
        ks->v = v;
        ks->cap = cap;
    }
    if (!(ks->v[ks->n] = bson_copy(key)))
        return false;
    ks->n++;
    return true;
}

/* listIndexes of coll into ks. A collection that does not exist yet has
 * no indexes (the driver turns NamespaceNotFound into an empty listing). */
static bool list_keys(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, keyset_t *ks, mdb_error_t *err)
{
    mongoc_collection_t *c = mdb_mongo_collection(m, client, coll);
    mongoc_cursor_t *cur = c ? mongoc_collection_find_indexes_with_opts(c, NULL) : NULL;
    const bson_t *doc;
    bson_error_t be;
    bool ok = false;
    if (!cur) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "list indexes of %s: cannot open a cursor", coll);
        goto done;
    }
    mdb_mongo_count_round_trip(m);
    while (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        const uint8_t *data;
        uint32_t len;
        bson_t key;
        if (!bson_iter_init_find(&it, doc, "key") || !BSON_ITER_HOLDS_DOCUMENT(&it))
            continue;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&key, data, len) || !keyset_push(ks, &key)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, 0, "list indexes of %s: out of memory", coll);
            goto done;
        }
    }
    if (mongoc_cursor_error(cur, &be)) {
        mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "list indexes of %s: %s", coll, be.message);
        goto done;
    }
    ok = true;
done:
    mongoc_cursor_destroy(cur);
    if (c)
        mongoc_collection_destroy(c);
    return ok;
}

/* Is key exactly the ascending pattern of spec (same paths, same order)? */
static bool key_is(const bson_t *key, const mdb_index_spec_t *spec)
{
    bson_iter_t it;
    int k = 0;
    if (!bson_iter_init(&it, key))
        return false;
    while (bson_iter_next(&it)) {
        if (k >= MDB_INDEX_MAX_KEYS || !spec->keys[k] || strcmp(bson_iter_key(&it), spec->keys[k]) != 0)
            return false;
        bool numeric = BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_DOUBLE(&it);
        if (!numeric || bson_iter_as_double(&it) != 1.0)
            return false;
        k++;
    }
    return k == MDB_INDEX_MAX_KEYS || !spec->keys[k];
}

static bool keyset_has(const keyset_t *ks, const mdb_index_spec_t *spec)
{
    for (size_t i = 0; i < ks->n; i++)
        if (key_is(ks->v[i], spec))
            return true;
    return false;
}

/* Append {key: {...}, name} for spec to the indexes array at position i. */
static void append_index(bson_t *arr, size_t i, const mdb_index_spec_t *spec)
{
    char ikey[16], name[256];
    const char *ik;
    bson_t item, key;
    bson_uint32_to_string((uint32_t)i, &ik, ikey, sizeof ikey);
    bson_append_document_begin(arr, ik, -1, &item);
    bson_append_document_begin(&item, "key", 3, &key);
    for (int k = 0; k < MDB_INDEX_MAX_KEYS && spec->keys[k]; k++)
        BSON_APPEND_INT32(&key, spec->keys[k], 1);
    bson_append_document_end(&item, &key);
    mdb_indexes_name(spec, name, sizeof name);
    BSON_APPEND_UTF8(&item, "name", name);
    bson_append_document_end(arr, &item);
}

/* The specs of collection coll that are missing: listIndexes, then one
 * createIndexes naming them all (none when nothing is missing). */
static bool ensure_collection(mdb_mongo_t *m, mongoc_client_t *client, const char *coll, const mdb_index_spec_t *specs,
                              size_t n, size_t *created, mdb_error_t *err)
{
    keyset_t have = {0};
    bson_t cmd = BSON_INITIALIZER, arr, reply = BSON_INITIALIZER;
    bson_error_t be;
    size_t nmiss = 0;
    bool ok = false;
    if (!list_keys(m, client, coll, &have, err))
        goto done;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    bson_append_array_begin(&cmd, "indexes", -1, &arr);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(specs[i].collection, coll) != 0 || keyset_has(&have, &specs[i]))
            continue;
        append_index(&arr, nmiss++, &specs[i]);
    }
    bson_append_array_end(&cmd, &arr);
    if (nmiss > 0) {
        bson_destroy(&reply);
        bool sent = mongoc_client_write_command_with_opts(client, mdb_mongo_db_name(m), &cmd, NULL, &reply, &be);
        mdb_mongo_count_round_trip(m);
        if (!sent) {
            mdb_error_set(err, MDB_ERR_MONGO, (int)be.code, "create %zu index%s on %s: %s", nmiss,
                          nmiss == 1 ? "" : "es", coll, be.message);
            goto done;
        }
        *created += nmiss;
    }
    ok = true;
done:
    keyset_clear(&have);
    bson_destroy(&cmd);
    bson_destroy(&reply);
    return ok;
}

bool mdb_indexes_ensure_specs(mdb_mongo_t *m, const mdb_index_spec_t *specs, size_t n, size_t *created,
                              mdb_error_t *err)
{
    mongoc_client_t *client = mdb_mongo_pop(m);
    size_t made = 0;
    bool ok = true;
    if (created)
        *created = 0;
    if (!client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "indexes: no database client available");
        return false;
    }
    for (size_t i = 0; ok && i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(specs[j].collection, specs[i].collection);
        if (!seen)
            ok = ensure_collection(m, client, specs[i].collection, specs, n, &made, err);
    }
    mdb_mongo_push(m, client);
    if (created)
        *created = made;
    return ok;
}

bool mdb_indexes_ensure_jobs(mdb_mongo_t *m, mdb_error_t *err)
{
    static const mdb_index_spec_t specs[] = {
        {MDB_JOBS_COLL, {"state"}},          {MDB_JOBS_COLL, {"submitted_at"}}, {MDB_JOBS_COLL, {"researcher_id"}},
        {MDB_JOBS_COLL, {"collection"}},     {MDB_JOB_FILES_COLL, {"job_id"}},  {MDB_JOB_FILES_COLL, {"status"}},
        {MDB_JOB_PROGRESS_COLL, {"job_id"}},
    };
    return mdb_indexes_ensure_specs(m, specs, sizeof specs / sizeof specs[0], NULL, err);
}

bool mdb_indexes_ensure(mdb_mongo_t *m, mdb_error_t *err)
{
    return mdb_indexes_ensure_specs(m, INDEXES, NINDEXES, NULL, err) && mdb_indexes_ensure_jobs(m, err);
}
