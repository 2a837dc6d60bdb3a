/* libFuzzer target for the natural-language translator and the validation
 * of externally written translations. Each input is (1) translated as a
 * sentence over a fixed vocabulary: the result is either a refusal with an
 * MDB_ERR_QUERY message or a translation whose filter and joins pass the
 * raw-query whitelist (mdb_query_filter_from_json) and whose JSON form
 * carries level, filter, joins and a UTF-8 explanation; (2) parsed as JSON
 * and, if it parses, validated as an LLM answer: either refused with a
 * message or accepted with a whitelisted filter.
 * (The translator's sources are compiled into this target so they carry
 * libFuzzer's coverage instrumentation; the linker then takes their symbols
 * from here, not from the library. Every file of the offline translator is
 * listed: one left out would be linked uninstrumented from the library.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/query/mdb_nl_vocab.c"
#include "../../common/query/mdb_nl_tokens.c"
#include "../../common/query/mdb_nl_cond.c"
#include "../../common/query/mdb_nl_dates.c"
#include "../../common/query/mdb_nl_numbers.c"
#include "../../common/query/mdb_nl_rules_names.c"
#include "../../common/query/mdb_nl_rules_ids.c"
#include "../../common/query/mdb_nl_rules_text.c"
#include "../../common/query/mdb_nl_rules_presence.c"
#include "../../common/query/mdb_nl_scan.c"
#include "../../common/query/mdb_nl_lower.c"
#include "../../common/query/mdb_nl_result.c"
#include "../../common/query/mdb_nl.c"

static mdb_nl_vocab_t *g_v;

static void check(bool cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_nl: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    mdb_error_t err = {0};
    g_v = mdb_nl_vocab_new();
    mdb_nl_vocab_add_promoted(g_v, &err);
    static const char *const values[][2] = {
        {"manufacturer", "SIEMENS"},
        {"manufacturer", "GE MEDICAL SYSTEMS"},
        {"manufacturer", "Philips"},
        {"manufacturer_model_name", "Sensation 16"},
        {"body_part_examined", "LUNG"},
        {"patient_id", "LIDC-IDRI-0001"},
        {"metadata.ConvolutionKernel", "B30f"},
        {"collection_ids", "LIDC-IDRI"},
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        mdb_nl_vocab_add_value(g_v, values[i][0], values[i][1], &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_STUDIES, "modalities", MDB_QFIELD_STRING, &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_STUDIES, "metadata.PatientSex", MDB_QFIELD_ANY, &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_STUDIES, "metadata.PatientAge", MDB_QFIELD_ANY, &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_SERIES, "metadata.ContrastBolusAgent", MDB_QFIELD_ANY, &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_SERIES, "metadata.ConvolutionKernel", MDB_QFIELD_ANY, &err);
    mdb_nl_vocab_add_field(g_v, MDB_QUERY_INSTANCES, "metadata.Rows", MDB_QFIELD_NUMBER, &err);
    return 0;
}

static void check_result(const mdb_nl_result_t *r)
{
    mdb_error_t err = {0};
    bson_t b;
    check(mdb_query_filter_from_json(mdb_nl_result_filter(r), &b, &err), "filter passes the whitelist");
    bson_destroy(&b);
    size_t i;
    json_t *j;
    json_array_foreach(mdb_nl_result_joins(r), i, j)
    {
        check(mdb_query_filter_from_json(json_object_get(j, "filter"), &b, &err), "join filter passes the whitelist");
        bson_destroy(&b);
        check(json_is_string(json_object_get(j, "local")) && json_is_string(json_object_get(j, "foreign")),
              "join has link fields");
    }
    json_t *out = mdb_nl_result_to_json(r);
    check(out && json_object_get(out, "level") && json_object_get(out, "filter"), "result JSON");
    check(nl_utf8_valid(mdb_nl_result_explanation(r)), "explanation is UTF-8");
    char *text = json_dumps(out, JSON_COMPACT);
    check(text != NULL, "result serializes");
    free(text);
    json_decref(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    mdb_error_t err = {0};
    mdb_nl_options_t opt = {"20060615"};
    mdb_nl_result_t *r = mdb_nl_translate(g_v, s, &opt, &err);
    if (r)
        check_result(r);
    else
        check(err.domain == MDB_ERR_QUERY && err.message[0], "refusal has a message");
    mdb_nl_result_destroy(r);

    json_error_t je;
    json_t *t = json_loadb((const char *)data, size, 0, &je);
    if (t) {
        mdb_error_clear(&err);
        r = mdb_nl_result_from_json(g_v, t, &err);
        if (r)
            check_result(r);
        else
            check(err.message[0] != '\0', "validation refusal has a message");
        mdb_nl_result_destroy(r);
        json_decref(t);
    }
    free(s);
    return 0;
}
