/* libFuzzer target for mdb_facets: the request side (field lists and
 * options) and the reply side (whatever documents a database might send
 * back). Input: first byte picks the level; then "name=value" lines up to a
 * NUL byte ("fields=..." sets the fields, any other name is an option);
 * the bytes after the NUL, when they are a valid BSON document, are read as
 * the first aggregation's reply and, if a second is needed, as its reply
 * too. Properties checked besides "no crash, no leak": a refusal always
 * says why; an accepted request always builds both pipelines; the answer
 * is always a JSON object with level, total and facets. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_facets.h"

/* Compiled in so the code under test carries libFuzzer's instrumentation. */
#include "../../common/query/mdb_facets.c"

static void check(bool cond)
{
    if (!cond)
        abort();
}

static void pipelines(const mdb_facets_t *f)
{
    mdb_error_t err = {0};
    bson_t p;
    check(mdb_facets_pipeline(f, NULL, &p, &err));
    bson_destroy(&p);
    check(mdb_facets_bins_pipeline(f, NULL, &p, &err));
    bson_destroy(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mdb_error_t err = {0};
    if (size < 2)
        return 0;
    mdb_facets_t *f = mdb_facets_new((mdb_query_level_t)(data[0] % 3));
    check(f != NULL);
    const uint8_t *nul = memchr(data + 1, '\0', size - 1);
    size_t tlen = nul ? (size_t)(nul - (data + 1)) : size - 1;
    char *text = malloc(tlen + 1);
    check(text != NULL);
    memcpy(text, data + 1, tlen);
    text[tlen] = '\0';
    bool ok = true;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        ok = !strcmp(line, "fields") ? mdb_facets_set_fields(f, eq + 1, &err)
                                     : mdb_facets_set_option(f, line, eq + 1, &err);
        if (!ok)
            check(err.message[0] != '\0');
    }
    free(text);
    if (ok && mdb_facets_count(f) > 0) {
        pipelines(f);
        bson_t reply;
        const uint8_t *b = nul ? nul + 1 : NULL;
        size_t blen = nul ? size - (size_t)(b - data) : 0;
        if (b && blen >= 5 && bson_init_static(&reply, b, blen) && bson_validate(&reply, BSON_VALIDATE_NONE, NULL)) {
            bool second = false;
            if (mdb_facets_read(f, &reply, &second, &err)) {
                pipelines(f);
                if (second && !mdb_facets_read_bins(f, &reply, &err))
                    check(err.message[0] != '\0');
                json_t *r = mdb_facets_result(f);
                check(r && json_is_object(json_object_get(r, "facets")) && json_object_get(r, "total"));
                json_decref(r);
            } else {
                check(err.message[0] != '\0');
            }
        }
    }
    mdb_facets_destroy(f);
    return 0;
}
