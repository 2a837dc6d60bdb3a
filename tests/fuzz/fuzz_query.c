/* libFuzzer target for mdb_query: the raw-query validator (whitelist, JSON
 * to BSON) and the filter-parameter parser. First byte: 'R' = the rest is a
 * raw query (JSON); else it picks a level and the rest is "name=value"
 * lines. Properties checked besides "no crash, no leak": a refusal always
 * says why, and an accepted query's filter, sort, projection and page read
 * back (the filter converts to JSON). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_query.h"

/* Compiled in so the code under test carries libFuzzer's instrumentation. */
#include "../../common/query/mdb_query.c"
#include "../../common/query/mdb_query_fields.c"
#include "../../common/query/mdb_query_value.c"
#include "../../common/query/mdb_query_clause.c"
#include "../../common/query/mdb_query_params.c"
#include "../../common/query/mdb_query_raw.c"
#include "../../common/query/mdb_query_raw_form.c"
#include "../../common/query/mdb_query_json.c"
#include "../../common/query/mdb_query_exec.c"
#include "../../common/query/mdb_query_rows.c"
#include "../../common/query/mdb_query_page.c"

static void check(bool cond)
{
    if (!cond)
        abort();
}

/* Every accessor of an accepted query works and the filter prints. */
static void exercise(const mdb_query_t *q)
{
    char *s = mdb_query_filter_json(q);
    check(s != NULL);
    bson_free(s);
    json_t *j = mdb_query_bson_to_json(mdb_query_filter(q));
    check(j != NULL);
    json_decref(j);
    check(mdb_query_sort(q) != NULL && mdb_query_projection(q) != NULL);
    check(mdb_query_limit(q) >= 0 && mdb_query_offset(q) >= 0); /* 0 = the count alone */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mdb_error_t err = {0};
    if (size == 0)
        return 0;
    if (data[0] == 'R') {
        json_error_t jerr;
        json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &jerr);
        if (!j)
            return 0;
        mdb_query_t *q = mdb_query_new_raw(j, "series", 1000, &err);
        json_decref(j);
        if (q) {
            exercise(q);
            mdb_query_destroy(q);
        } else {
            check(err.message[0] != '\0');
        }
        return 0;
    }
    mdb_query_t *q = mdb_query_new((mdb_query_level_t)(data[0] % 3), 1000);
    check(q != NULL);
    char *text = malloc(size);
    check(text != NULL);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        if (!mdb_query_add_param(q, line, eq + 1, &err))
            check(err.message[0] != '\0');
    }
    exercise(q);
    free(text);
    mdb_query_destroy(q);
    return 0;
}
