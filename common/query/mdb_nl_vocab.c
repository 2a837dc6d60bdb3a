/* mdb_nl_vocab.c: the vocabulary the offline translator reads sentences
 * against: per level, the fields documents carry (with their types), and per
 * field the values seen in the data (model names, kernels, patient IDs...),
 * from which names typed in a sentence are recognised. */
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

#define NL_MAX_VALUES_PER_FIELD 20000
#define NL_MAX_VALUE_LEN 128

mdb_nl_vocab_t *mdb_nl_vocab_new(void)
{
    return calloc(1, sizeof(mdb_nl_vocab_t));
}

void mdb_nl_vocab_destroy(mdb_nl_vocab_t *v)
{
    if (!v)
        return;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t i = 0; i < v->nfields[l]; i++)
            free(v->fields[l][i].path);
        free(v->fields[l]);
    }
    for (size_t i = 0; i < v->nvalues; i++) {
        for (size_t j = 0; j < v->values[i].n; j++)
            free(v->values[i].vals[j]);
        free(v->values[i].vals);
        free(v->values[i].path);
    }
    free(v->values);
    free(v);
}

bool mdb_nl_vocab_has_field(const mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path, mdb_qfield_type_t *type)
{
    if (!v || (int)level < 0 || level >= NL_LEVELS || !path)
        return false;
    for (size_t i = 0; i < v->nfields[level]; i++)
        if (!strcmp(v->fields[level][i].path, path)) {
            if (type)
                *type = v->fields[level][i].type;
            return true;
        }
    return false;
}

bool mdb_nl_vocab_add_field(mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path, mdb_qfield_type_t type,
                            mdb_error_t *err)
{
    if (!v || (int)level < 0 || level >= NL_LEVELS || !path || !*path) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "vocabulary field needs a level and a non-empty path");
        return false;
    }
    if (mdb_nl_vocab_has_field(v, level, path, NULL))
        return true;
    if (v->nfields[level] == v->capfields[level]) {
        size_t cap = v->capfields[level] ? v->capfields[level] * 2 : 32;
        nl_field_t *nf = realloc(v->fields[level], cap * sizeof *nf);
        if (!nf)
            goto oom;
        v->fields[level] = nf;
        v->capfields[level] = cap;
    }
    char *dup = strdup(path);
    if (!dup)
        goto oom;
    v->fields[level][v->nfields[level]].path = dup;
    v->fields[level][v->nfields[level]].type = type;
    v->nfields[level]++;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    return false;
}

static nl_values_t *vocab_values_entry(const mdb_nl_vocab_t *v, const char *path)
{
    for (size_t i = 0; i < v->nvalues; i++)
        if (!strcmp(v->values[i].path, path))
            return &v->values[i];
    return NULL;
}

const char *const *mdb_nl_vocab_values(const mdb_nl_vocab_t *v, const char *path, size_t *n)
{
    nl_values_t *e = v ? vocab_values_entry(v, path) : NULL;
    *n = e ? e->n : 0;
    return e ? (const char *const *)e->vals : NULL;
}

bool mdb_nl_vocab_add_value(mdb_nl_vocab_t *v, const char *path, const char *value, mdb_error_t *err)
{
    if (!v || !path || !*path) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "vocabulary value needs a field path");
        return false;
    }
    if (!value || !*value || strlen(value) > NL_MAX_VALUE_LEN)
        return true;
    nl_values_t *e = vocab_values_entry(v, path);
    if (!e) {
        if (v->nvalues == v->capvalues) {
            size_t cap = v->capvalues ? v->capvalues * 2 : 16;
            nl_values_t *nv = realloc(v->values, cap * sizeof *nv);
            if (!nv)
                goto oom;
            v->values = nv;
            v->capvalues = cap;
        }
        e = &v->values[v->nvalues];
        memset(e, 0, sizeof *e);
        e->path = strdup(path);
        if (!e->path)
            goto oom;
        v->nvalues++;
    }
    if (e->n >= NL_MAX_VALUES_PER_FIELD)
        return true;
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->vals[i], value))
            return true;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        char **nv = realloc(e->vals, cap * sizeof *nv);
        if (!nv)
            goto oom;
        e->vals = nv;
        e->cap = cap;
    }
    e->vals[e->n] = strdup(value);
    if (!e->vals[e->n])
        goto oom;
    e->n++;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    return false;
}

bool mdb_nl_vocab_add_promoted(mdb_nl_vocab_t *v, mdb_error_t *err)
{
    for (int l = 0; l < NL_LEVELS; l++) {
        size_t n = 0;
        const mdb_qfield_t *f = mdb_query_fields((mdb_query_level_t)l, &n);
        for (size_t i = 0; f && i < n; i++)
            if (!mdb_nl_vocab_add_field(v, (mdb_query_level_t)l, f[i].name, f[i].type, err))
                return false;
    }
    /* Link and summary fields the linker writes (DESIGN.md). */
    static const struct {
        int level;
        const char *path;
        mdb_qfield_type_t type;
    } extra[] = {
        {MDB_QUERY_STUDIES, "collection_ids", MDB_QFIELD_STRING},
        {MDB_QUERY_SERIES, "study_id", MDB_QFIELD_STRING},
        {MDB_QUERY_SERIES, "instance_count", MDB_QFIELD_NUMBER},
        {MDB_QUERY_SERIES, "collection_ids", MDB_QFIELD_STRING},
        {MDB_QUERY_INSTANCES, "study_id", MDB_QFIELD_STRING},
        {MDB_QUERY_INSTANCES, "series_id", MDB_QFIELD_STRING},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (!mdb_nl_vocab_add_field(v, (mdb_query_level_t)extra[i].level, extra[i].path, extra[i].type, err))
            return false;
    return true;
}

static const char *qtype_name(mdb_qfield_type_t t)
{
    switch (t) {
    case MDB_QFIELD_DATE: return "date";
    case MDB_QFIELD_NUMBER: return "number";
    case MDB_QFIELD_ANY: return "any";
    default: return "string";
    }
}

json_t *mdb_nl_vocab_to_json(const mdb_nl_vocab_t *v)
{
    json_t *out = json_object();
    if (!out || !v)
        return out;
    for (int l = 0; l < NL_LEVELS; l++) {
        json_t *lv = json_object();
        for (size_t i = 0; lv && i < v->nfields[l]; i++)
            json_object_set_new(lv, v->fields[l][i].path, json_string(qtype_name(v->fields[l][i].type)));
        json_object_set_new(out, mdb_query_level_name((mdb_query_level_t)l), lv ? lv : json_null());
    }
    json_t *vals = json_object();
    for (size_t i = 0; vals && i < v->nvalues; i++) {
        json_t *arr = json_array();
        for (size_t j = 0; arr && j < v->values[i].n; j++)
            json_array_append_new(arr, json_string(v->values[i].vals[j]));
        json_object_set_new(vals, v->values[i].path, arr ? arr : json_null());
    }
    json_object_set_new(out, "values", vals ? vals : json_null());
    return out;
}
