/* mdb_query_params: the API's parameters on a query: filter fields (own
 * level first, then the parents), limit, offset, sort= and fields=. */
#include "mdb_query_private.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PARAM_VALUE 8192

bool mdb_query_is_page_param(const char *name)
{
    return name &&
           (!strcmp(name, "limit") || !strcmp(name, "offset") || !strcmp(name, "sort") || !strcmp(name, "fields"));
}

static bool check_value(const char *name, const char *value, mdb_error_t *err)
{
    size_t len = strlen(value);
    if (len > MAX_PARAM_VALUE) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "value of '%s' is too long (%zu bytes, at most %d)", name, len,
                      MAX_PARAM_VALUE);
        return false;
    }
    if (!bson_utf8_validate(value, len, false)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "value of '%s' is not valid UTF-8", name);
        return false;
    }
    return true;
}

bool mdb_query_add_param(mdb_query_t *q, const char *name, const char *value, mdb_error_t *err)
{
    if (!name || !value) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "parameter without a name or value");
        return false;
    }
    if (q->raw) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "filter parameters cannot be added to a raw query");
        return false;
    }
    if (!check_value(name, value, err))
        return false;
    if (!strcmp(name, "limit") || !strcmp(name, "offset")) {
        int64_t v;
        if (!mdb_query_parse_int64(value, &v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects an integer, got '%s'", name, value);
            return false;
        }
        return name[0] == 'l' ? mdb_query_set_limit(q, v, err) : mdb_query_set_offset(q, v, err);
    }
    if (!strcmp(name, "sort"))
        return mdb_query_set_sort(q, value, err);
    if (!strcmp(name, "fields"))
        return mdb_query_set_fields(q, value, err);

    /* "study.<field>" / "series.<field>" name a parent's field explicitly;
     * else own level first, then the parents (series → studies; instances →
     * series, studies). */
    mdb_query_level_t level = q->level;
    bool meta = false;
    const char *display = name;
    const char *rest = mdb_query_parent_prefix(q->level, name, &level);
    const mdb_qfield_t *f = NULL;
    if (rest) {
        name = rest;
        f = mdb_query_find_field(level, name, &meta);
    } else {
        f = mdb_query_find_field(level, name, &meta);
    }
    if (!f && !meta && !rest) {
        for (int l = (int)q->level - 1; l >= 0 && !f; l--) {
            if ((f = mdb_query_find_field((mdb_query_level_t)l, name, &meta)) != NULL && strcmp(f->name, "_id") != 0)
                level = (mdb_query_level_t)l;
            else
                f = NULL;
        }
    }
    if (!f) {
        char known[768];
        mdb_query_known_fields(level, known, sizeof known);
        if (!strncmp(name, "metadata.", 9))
            mdb_error_set(err, MDB_ERR_QUERY, 0,
                          "'%s' is not a valid metadata keyword path (letters, digits, '_', dots between levels)",
                          display);
        else
            mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown filter field '%s' for %s (known: %s%s)", display,
                          mdb_query_level_name(level), known,
                          rest || q->level == MDB_QUERY_STUDIES ? ""
                          : q->level == MDB_QUERY_SERIES        ? "; and study.<field>"
                                                                : "; and series.<field>, study.<field>");
        return false;
    }
    const char *path = meta ? name : f->name;
    if (!meta && !strcmp(f->name, "integrity") && strncmp(value, "exists:", 7)) {
        /* an object, not a value: only its presence is a question */
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' takes exists:true or exists:false, got '%s'", name, value);
        return false;
    }
    bson_t *c = mdb_query_param_clause(name, path, f->type, value, err);
    if (!c)
        return false;
    if (level == MDB_QUERY_STUDIES && !meta && !strcmp(f->name, "modality")) {
        bson_t *alt = mdb_query_param_clause(name, "modalities", f->type, value, err);
        if (!alt) {
            bson_destroy(c);
            return false;
        }
        bool negation = !strncmp(value, "ne:", 3) || !strcmp(value, "exists:false") || !strcmp(value, "exists:0") ||
                        !strcmp(value, "exists:no");
        c = mdb_query_either_clause(c, alt, negation);
    }
    mdb_query_clauses_t *list = level == q->level ? &q->clauses : &q->parent[level];
    if (!mdb_query_clauses_push(list, c)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    q->filter_dirty = true;
    return true;
}

/* A sortable/projectable field spec item: own-level field, alias or
 * metadata.*, or a parent's field as "study.<field>" / "series.<field>"
 * (written "study.<document path>"). The path is written to out (cap bytes). */
static const char *spec_field(mdb_query_t *q, const char *name, char *out, size_t cap, mdb_error_t *err)
{
    bool meta;
    mdb_query_level_t level = q->level;
    const char *rest = q->level < MDB_QUERY_LEVEL_COUNT ? mdb_query_parent_prefix(q->level, name, &level) : NULL;
    const mdb_qfield_t *f = mdb_query_find_field(level, rest ? rest : name, &meta);
    if (!f) {
        char known[768];
        mdb_query_known_fields(level, known, sizeof known);
        mdb_error_set(err, MDB_ERR_QUERY, 0, "unknown field '%s' for %s (known: %s%s)", name,
                      mdb_query_level_name(level), known,
                      rest || q->level == MDB_QUERY_STUDIES ? ""
                      : q->level == MDB_QUERY_SERIES        ? "; and study.<field>"
                                                            : "; and series.<field>, study.<field>");
        return NULL;
    }
    const char *path = meta ? (rest ? rest : name) : f->name;
    int w = rest ? snprintf(out, cap, "%s.%s", mdb_query_parent_names[level], path) : snprintf(out, cap, "%s", path);
    if (w < 0 || (size_t)w >= cap) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "field name '%.64s...' is too long", name);
        return NULL;
    }
    return out;
}

bool mdb_query_set_sort(mdb_query_t *q, const char *spec, mdb_error_t *err)
{
    if (!check_value("sort", spec, err))
        return false;
    bson_t sort = BSON_INITIALIZER;
    bool id_seen = false;
    char *copy = strdup(spec), *save = NULL;
    if (!copy) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        bson_destroy(&sort);
        return false;
    }
    int count = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        int dir = 1;
        if (*tok == '-' || *tok == '+') {
            dir = *tok == '-' ? -1 : 1;
            tok++;
        }
        char pbuf[256];
        const char *path = spec_field(q, tok, pbuf, sizeof pbuf, err);
        if (!path)
            goto fail;
        if (mdb_query_has_key(&sort, path)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort names '%s' twice", tok);
            goto fail;
        }
        if (++count > 8) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "sort on at most 8 fields");
            goto fail;
        }
        id_seen = id_seen || !strcmp(path, "_id");
        BSON_APPEND_INT32(&sort, path, dir);
    }
    if (count == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sort needs at least one field");
        goto fail;
    }
    if (!id_seen)
        BSON_APPEND_INT32(&sort, "_id", 1);
    free(copy);
    bson_destroy(&q->sort);
    bson_steal(&q->sort, &sort);
    return true;
fail:
    free(copy);
    bson_destroy(&sort);
    return false;
}

bool mdb_query_set_fields(mdb_query_t *q, const char *spec, mdb_error_t *err)
{
    if (!check_value("fields", spec, err))
        return false;
    bson_t proj = BSON_INITIALIZER;
    char *copy = strdup(spec), *save = NULL;
    if (!copy) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        bson_destroy(&proj);
        return false;
    }
    int count = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char pbuf[256];
        const char *path = !strcmp(tok, "metadata") ? "metadata" : spec_field(q, tok, pbuf, sizeof pbuf, err);
        if (!path)
            goto fail;
        if (mdb_query_has_key(&proj, path))
            continue;
        if (++count > 100) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "fields lists at most 100 fields");
            goto fail;
        }
        BSON_APPEND_INT32(&proj, path, 1);
    }
    if (count == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "fields needs at least one field");
        goto fail;
    }
    /* metadata and metadata.X together is a path collision for the server. */
    if (bson_has_field(&proj, "metadata")) {
        bson_t clean = BSON_INITIALIZER;
        bson_iter_t it;
        bson_iter_init(&it, &proj);
        while (bson_iter_next(&it))
            if (strncmp(bson_iter_key(&it), "metadata.", 9) != 0)
                bson_append_iter(&clean, NULL, 0, &it);
        bson_destroy(&proj);
        bson_steal(&proj, &clean);
    }
    free(copy);
    bson_destroy(&q->projection);
    bson_steal(&q->projection, &proj);
    return true;
fail:
    free(copy);
    bson_destroy(&proj);
    return false;
}

bool mdb_query_project_path(mdb_query_t *q, const char *path, mdb_error_t *err)
{
    if (!path || !*path || path[0] == '$' || strstr(path, ".$") || strstr(path, "..")) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is not a document path", path ? path : "(null)");
        return false;
    }
    if (!mdb_query_has_key(&q->projection, path))
        BSON_APPEND_INT32(&q->projection, path, 1);
    return true;
}
