/* mdb_nl_result.c: the result object of a translation (level, filter,
 * joins, explanation, what was not understood, corrections) and its JSON
 * form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

mdb_nl_result_t *mdb_nl_result_new(mdb_query_level_t level)
{
    mdb_nl_result_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->level = level;
    r->filter = json_object();
    r->joins = json_array();
    r->ignored = json_array();
    r->notes = json_array();
    r->corrections = json_array();
    snprintf(r->backend, sizeof r->backend, "offline");
    if (!r->filter || !r->joins || !r->ignored || !r->notes || !r->corrections) {
        mdb_nl_result_destroy(r);
        return NULL;
    }
    return r;
}

void mdb_nl_result_destroy(mdb_nl_result_t *r)
{
    if (!r)
        return;
    json_decref(r->filter);
    json_decref(r->joins);
    json_decref(r->ignored);
    json_decref(r->notes);
    json_decref(r->corrections);
    json_decref(r->fillers);
    free(r->explanation);
    free(r->message);
    free(r);
}

void mdb_nl_result_adopt(mdb_nl_result_t *r, json_t *filter, json_t *joins)
{
    if (filter) {
        json_decref(r->filter);
        r->filter = filter;
    }
    if (joins) {
        json_decref(r->joins);
        r->joins = joins;
    }
}

bool mdb_nl_result_set_explanation(mdb_nl_result_t *r, const char *text)
{
    char *d = strdup(text ? text : "");
    if (!d)
        return false;
    free(r->explanation);
    r->explanation = d;
    return true;
}

bool mdb_nl_result_set_message(mdb_nl_result_t *r, const char *text)
{
    char *d = text ? strdup(text) : NULL;
    if (text && !d)
        return false;
    free(r->message);
    r->message = d;
    return true;
}

void mdb_nl_result_set_backend(mdb_nl_result_t *r, const char *backend)
{
    snprintf(r->backend, sizeof r->backend, "%s", backend);
}

mdb_query_level_t mdb_nl_result_level(const mdb_nl_result_t *r)
{
    return r->level;
}

const json_t *mdb_nl_result_filter(const mdb_nl_result_t *r)
{
    return r->filter;
}

const json_t *mdb_nl_result_joins(const mdb_nl_result_t *r)
{
    return r->joins;
}

const char *mdb_nl_result_explanation(const mdb_nl_result_t *r)
{
    return r->explanation ? r->explanation : "";
}

const char *mdb_nl_result_backend(const mdb_nl_result_t *r)
{
    return r->backend;
}

const char *mdb_nl_result_message(const mdb_nl_result_t *r)
{
    return r->message;
}

bool mdb_nl_result_partial(const mdb_nl_result_t *r)
{
    return r->partial || json_array_size(r->ignored) > 0;
}

const json_t *mdb_nl_result_corrections(const mdb_nl_result_t *r)
{
    return r->corrections;
}

json_t *mdb_nl_result_to_json(const mdb_nl_result_t *r)
{
    json_t *o = json_pack("{s:s, s:O, s:O, s:s, s:s, s:O}", "level", mdb_query_level_name(r->level), "filter",
                          r->filter, "joins", r->joins, "explanation", mdb_nl_result_explanation(r), "backend",
                          r->backend, "ignored", r->ignored);
    if (o) {
        json_object_set_new(o, "confidence", json_string(mdb_nl_result_partial(r) ? "partial" : "complete"));
        json_object_set(o, "corrections", r->corrections);
    }
    if (o && r->message)
        json_object_set_new(o, "message", json_string(r->message));
    return o;
}
