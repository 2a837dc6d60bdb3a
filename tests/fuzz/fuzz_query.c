/* libFuzzer target for mdb_query: the raw-query validator (whitelist, JSON
 * to BSON) and the filter-parameter parser, plus the in-memory evaluator the
 * API's cache uses. First byte: 'R' = the rest is a raw query (JSON); else
 * its low two bits pick a level and the rest is "name=value" lines.
 * Properties checked besides "no crash, no leak":
 *  - an accepted raw query's filter converts back to JSON;
 *  - every filter the parameter builder accepts is fully supported by
 *    mdb_query_match (the cache never has to fall back for them), and
 *    evaluating, sorting and projecting sample documents never fails. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_query.h"

/* Compiled in so the code under test carries libFuzzer's instrumentation. */
#include "../../common/mdb_query.c"

static void check(bool cond)
{
    if (!cond)
        abort();
}

static const char *const samples[] = {
    "{\"_id\":\"1.2\",\"modality\":\"CT\",\"modalities\":[\"CT\",\"SR\"],\"study_date\":\"20000704\","
    "\"patient_id\":\"LIDC-IDRI-0012\",\"slice_thickness\":2.5,\"series_number\":3,\"study_id\":\"1\","
    "\"metadata\":{\"Rows\":512,\"PatientName\":\"Doe^J\",\"Seq\":[{\"Code\":\"A\"},{\"Code\":\"B\"}]}}",
    "{\"_id\":\"1.3\",\"modality\":null,\"study_date\":19990101,\"patient_id\":[\"a\",1],\"metadata\":[]}",
    "{\"_id\":\"1.4\"}",
};

static void exercise(const mdb_query_t *q, bool must_be_supported)
{
    const bson_t *f = mdb_query_filter(q);
    char *s = mdb_query_filter_json(q);
    check(s != NULL);
    bson_free(s);
    json_t *j = mdb_query_bson_to_json(f);
    check(j != NULL);
    json_decref(j);
    bool supported = mdb_query_match_supported(f);
    if (must_be_supported)
        check(supported);
    bson_t *docs[3];
    const bson_t *v[3];
    for (int i = 0; i < 3; i++) {
        bson_error_t be;
        docs[i] = bson_new_from_json((const uint8_t *)samples[i], -1, &be);
        check(docs[i] != NULL);
        v[i] = docs[i];
        int m = mdb_query_match(f, docs[i]);
        check(supported ? m >= 0 : true);
        bson_t p;
        mdb_query_project(docs[i], mdb_query_projection(q), &p);
        bson_destroy(&p);
    }
    check(mdb_query_sort_docs(v, 3, mdb_query_sort(q)));
    for (int i = 0; i < 3; i++)
        bson_destroy(docs[i]);
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
            exercise(q, false);
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
    exercise(q, true);
    bson_t pf;
    for (int l = 0; l < 3; l++) {
        if (mdb_query_parent_filter(q, (mdb_query_level_t)l, &pf)) {
            check(mdb_query_match_supported(&pf));
            bson_destroy(&pf);
        }
    }
    free(text);
    mdb_query_destroy(q);
    return 0;
}
