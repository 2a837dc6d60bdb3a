/* Unit tests of the offline natural-language translator (mdb_nl): pure
 * logic over a fixed vocabulary, no database. Each case gives a sentence
 * and the exact level, filter and joins expected (compared as JSON values,
 * so number types and operators are part of the assertion), plus the
 * refusals: empty, too long, invalid UTF-8, bad reference dates, and the
 * validation of externally written (LLM) translations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl.h"

static mdb_nl_vocab_t *vocab(void)
{
    mdb_error_t err = {0};
    mdb_nl_vocab_t *v = mdb_nl_vocab_new();
    assert_non_null(v);
    assert_true(mdb_nl_vocab_add_promoted(v, &err));
    static const char *const makers[] = {"GE MEDICAL SYSTEMS",   "SIEMENS",      "TOSHIBA", "Philips",
                                         "FUJIFILM Corporation", "GE Healthcare"};
    for (size_t i = 0; i < sizeof makers / sizeof makers[0]; i++)
        assert_true(mdb_nl_vocab_add_value(v, "manufacturer", makers[i], &err));
    static const char *const models[] = {"LightSpeed16", "Sensation 16", "Aquilion"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        assert_true(mdb_nl_vocab_add_value(v, "manufacturer_model_name", models[i], &err));
    assert_true(mdb_nl_vocab_add_value(v, "body_part_examined", "CHEST", &err));
    assert_true(mdb_nl_vocab_add_value(v, "body_part_examined", "LUNG", &err));
    assert_true(mdb_nl_vocab_add_value(v, "patient_id", "LIDC-IDRI-0001", &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_STUDIES, "modalities", MDB_QFIELD_STRING, &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_STUDIES, "metadata.PatientSex", MDB_QFIELD_ANY, &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_STUDIES, "metadata.PatientAge", MDB_QFIELD_ANY, &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_SERIES, "metadata.ContrastBolusAgent", MDB_QFIELD_ANY, &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_SERIES, "metadata.ConvolutionKernel", MDB_QFIELD_ANY, &err));
    assert_true(mdb_nl_vocab_add_value(v, "metadata.ConvolutionKernel", "B30f", &err));
    assert_true(mdb_nl_vocab_add_field(v, MDB_QUERY_INSTANCES, "metadata.Rows", MDB_QFIELD_NUMBER, &err));
    return v;
}

static const mdb_nl_options_t REF = {"2006-06-15"};

/* Translate and compare level, filter and joins ([] when joins_json is NULL;
 * joins are compared on collection/filter/negate). */
static void expect(const char *sentence, const char *level, const char *filter_json, const char *joins_json)
{
    mdb_error_t err = {0};
    mdb_nl_vocab_t *v = vocab();
    mdb_nl_result_t *r = mdb_nl_translate(v, sentence, &REF, &err);
    if (!r)
        fail_msg("'%s' refused: %s", sentence, err.message);
    json_error_t je;
    json_t *want = json_loads(filter_json, 0, &je);
    if (!want)
        fail_msg("bad expected JSON %s: %s", filter_json, je.text);
    json_t *got_joins = json_array();
    size_t i;
    json_t *j;
    json_array_foreach(mdb_nl_result_joins(r), i, j)
    {
        json_array_append_new(got_joins,
                              json_pack("{s:O, s:O, s:O}", "collection", json_object_get(j, "collection"), "filter",
                                        json_object_get(j, "filter"), "negate", json_object_get(j, "negate")));
    }
    json_t *want_joins = json_loads(joins_json ? joins_json : "[]", 0, &je);
    if (!want_joins)
        fail_msg("bad expected joins %s: %s", joins_json, je.text);
    char *gf = json_dumps(mdb_nl_result_filter(r), JSON_COMPACT | JSON_SORT_KEYS);
    char *gj = json_dumps(got_joins, JSON_COMPACT | JSON_SORT_KEYS);
    const char *gl = mdb_query_level_name(mdb_nl_result_level(r));
    if (strcmp(gl, level) || !json_equal(want, mdb_nl_result_filter(r)) || !json_equal(want_joins, got_joins))
        fail_msg("'%s'\n  got  %s %s joins %s\n  want %s %s joins %s\n  (%s)", sentence, gl, gf, gj, level, filter_json,
                 joins_json ? joins_json : "[]", mdb_nl_result_explanation(r));
    free(gf);
    free(gj);
    json_decref(want);
    json_decref(want_joins);
    json_decref(got_joins);
    mdb_nl_result_destroy(r);
    mdb_nl_vocab_destroy(v);
}

static void test_modalities_and_levels(void **state)
{
    (void)state;
    expect("CT studies", "studies", "{\"modalities\":\"CT\"}", NULL);
    expect("CT series", "series", "{\"modality\":\"CT\"}", NULL);
    expect("x-ray images", "instances", "{}",
           "[{\"collection\":\"series\",\"filter\":{\"modality\":{\"$in\":[\"CR\",\"DX\"]}},\"negate\":false}]");
    expect("MRI or CT exams", "studies", "{\"modalities\":{\"$in\":[\"MR\",\"CT\"]}}", NULL);
    expect("computed tomography", "studies", "{\"modalities\":\"CT\"}", NULL);
    expect("series that are not CT", "series", "{\"modality\":{\"$ne\":\"CT\"}}", NULL);
    expect("all studies", "studies", "{}", NULL);
}

static void test_body_parts(void **state)
{
    (void)state;
    expect("chest CT series", "series", "{\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]},\"modality\":\"CT\"}",
           NULL);
    expect("thoracic series", "series", "{\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]}}", NULL);
    expect("head series", "series", "{\"body_part_examined\":\"HEAD\"}", NULL);
    expect("series not of the lungs", "series", "{\"body_part_examined\":{\"$nin\":[\"CHEST\",\"LUNG\"]}}", NULL);
}

static void test_slices_and_units(void **state)
{
    (void)state;
    expect("thin slice series", "series", "{\"slice_thickness\":{\"$lte\":2.5}}", NULL);
    expect("thin-section CT", "series", "{\"slice_thickness\":{\"$lte\":2.5},\"modality\":\"CT\"}", NULL);
    expect("thick slices", "series", "{\"slice_thickness\":{\"$gt\":2.5}}", NULL);
    expect("1.25 mm series", "series", "{\"slice_thickness\":1.25}", NULL);
    expect("series thinner than 2mm", "series", "{\"slice_thickness\":{\"$lt\":2}}", NULL);
    expect("slices of at least 0.1 cm", "series", "{\"slice_thickness\":{\"$gte\":1}}", NULL);
    expect("slice thickness between 1 and 2.5 mm", "series", "{\"slice_thickness\":{\"$gte\":1,\"$lte\":2.5}}", NULL);
    expect("1-2.5mm series", "series", "{\"slice_thickness\":{\"$gte\":1,\"$lte\":2.5}}", NULL);
    expect("2.5 mm or less", "series", "{\"slice_thickness\":{\"$lte\":2.5}}", NULL);
    expect("no more than 3 mm", "series", "{\"slice_thickness\":{\"$lte\":3}}", NULL);
    expect("slice thickness \xe2\x89\xa4 2 mm", "series", "{\"slice_thickness\":{\"$lte\":2}}", NULL);
    expect("120 kV series", "series", "{\"kvp\":120}", NULL);
    expect("kvp above 130", "series", "{\"kvp\":{\"$gt\":130}}", NULL);
    expect("series with more than 100 images", "series", "{\"instance_count\":{\"$gt\":100}}", NULL);
    expect("series number 3", "series", "{\"series_number\":3}", NULL);
    expect("images with rows 512", "instances", "{\"metadata.Rows\":512}", NULL);
    expect("images with more than 512 rows", "instances", "{\"metadata.Rows\":{\"$gt\":512}}", NULL);
}

static void test_dates(void **state)
{
    (void)state;
    const char *j2001 = "[{\"collection\":\"studies\",\"filter\":{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":"
                        "\"20011231\"}},\"negate\":false}]";
    expect("thin-slice chest CT series from 2000 to 2001, Siemens scanners", "series",
           "{\"slice_thickness\":{\"$lte\":2.5},\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]},\"modality\":"
           "\"CT\",\"manufacturer\":\"SIEMENS\"}",
           j2001);
    expect("studies 2000-2001", "studies", "{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20011231\"}}", NULL);
    expect("studies from 2003", "studies", "{\"study_date\":{\"$gte\":\"20030101\",\"$lte\":\"20031231\"}}", NULL);
    expect("studies after March 2001", "studies", "{\"study_date\":{\"$gt\":\"20010331\"}}", NULL);
    expect("studies since March 2001", "studies", "{\"study_date\":{\"$gte\":\"20010301\"}}", NULL);
    expect("studies before 2001", "studies", "{\"study_date\":{\"$lt\":\"20010101\"}}", NULL);
    expect("studies until June 2002", "studies", "{\"study_date\":{\"$lte\":\"20020630\"}}", NULL);
    expect("studies on 15 March 2001", "studies", "{\"study_date\":{\"$gte\":\"20010315\",\"$lte\":\"20010315\"}}",
           NULL);
    expect("studies on March 15, 2001", "studies", "{\"study_date\":{\"$gte\":\"20010315\",\"$lte\":\"20010315\"}}",
           NULL);
    expect("studies dated 2004-02-29", "studies", "{\"study_date\":{\"$gte\":\"20040229\",\"$lte\":\"20040229\"}}",
           NULL);
    expect("studies in the last 5 years", "studies", "{\"study_date\":{\"$gte\":\"20010615\",\"$lte\":\"20060615\"}}",
           NULL);
    expect("studies of the past 6 months", "studies", "{\"study_date\":{\"$gte\":\"20051215\",\"$lte\":\"20060615\"}}",
           NULL);
    expect("studies last year", "studies", "{\"study_date\":{\"$gte\":\"20050101\",\"$lte\":\"20051231\"}}", NULL);
    expect("studies older than 5 years", "studies", "{\"study_date\":{\"$lt\":\"20010615\"}}", NULL);
    expect("studies from 1998 or 2003", "studies",
           "{\"$or\":[{\"study_date\":{\"$gte\":\"19980101\",\"$lte\":\"19981231\"}},{\"study_date\":{\"$gte\":"
           "\"20030101\",\"$lte\":\"20031231\"}}]}",
           NULL);
    expect("studies not from 2003", "studies",
           "{\"study_date\":{\"$not\":{\"$gte\":\"20030101\",\"$lte\":\"20031231\"}}}", NULL);
    expect("series with series date 2002", "series", "{\"series_date\":{\"$gte\":\"20020101\",\"$lte\":\"20021231\"}}",
           NULL);
    expect("series from 2002", "series", "{}",
           "[{\"collection\":\"studies\",\"filter\":{\"study_date\":{\"$gte\":\"20020101\",\"$lte\":\"20021231\"}},"
           "\"negate\":false}]");
}

static void test_negation_and_names(void **state)
{
    (void)state;
    expect("series excluding Siemens", "series", "{\"manufacturer\":{\"$ne\":\"SIEMENS\"}}", NULL);
    expect("series not made by Siemens or GE", "series",
           "{\"manufacturer\":{\"$nin\":[\"SIEMENS\",\"GE MEDICAL SYSTEMS\",\"GE Healthcare\"]}}", NULL);
    expect("Siemens and Toshiba series", "series", "{\"manufacturer\":{\"$in\":[\"SIEMENS\",\"TOSHIBA\"]}}", NULL);
    expect("not contrast", "series",
           "{\"metadata.ContrastBolusAgent\":{\"$in\":[\"\",\"NONE\",\"None\",\"none\",\"NO\",\"No\",\"no\",\"N/A\","
           "\"n/a\",null]}}",
           NULL);
    expect("CT w/o contrast", "series",
           "{\"modality\":\"CT\",\"metadata.ContrastBolusAgent\":{\"$in\":[\"\",\"NONE\",\"None\",\"none\","
           "\"NO\",\"No\",\"no\",\"N/A\",\"n/a\",null]}}",
           NULL);
    expect("contrast-enhanced series", "series",
           "{\"metadata.ContrastBolusAgent\":{\"$exists\":true,\"$nin\":[\"\",\"NONE\",\"None\",\"none\",\"NO\",\"No\","
           "\"no\",\"N/A\",\"n/a\",null]}}",
           NULL);
    expect("studies without Siemens series", "studies", "{}",
           "[{\"collection\":\"series\",\"filter\":{\"manufacturer\":\"SIEMENS\"},\"negate\":true}]");
    expect("Fujifilm x-rays", "series",
           "{\"manufacturer\":\"FUJIFILM Corporation\",\"modality\":{\"$in\":[\"CR\",\"DX\"]}}", NULL);
    expect("Hitachi series", "series",
           "{\"manufacturer\":{\"$regex\":\"(^|[^A-Za-z0-9])(HITACHI)([^A-Za-z0-9]|$)\",\"$options\":\"i\"}}", NULL);
    expect("Sensation 16 series", "series", "{\"manufacturer_model_name\":\"Sensation 16\"}", NULL);
    expect("kernel B30f or B50f", "series",
           "{\"metadata.ConvolutionKernel\":{\"$regex\":\"(^B30f$)|(^B50f$)\",\"$options\":\"i\"}}", NULL);
    expect("female patients older than 60", "studies",
           "{\"$and\":[{\"metadata.PatientSex\":\"F\"},{\"metadata.PatientAge\":{\"$gt\":\"060Y\"}},"
           "{\"metadata.PatientAge\":{\"$regex\":\"^[0-9]{3}Y$\",\"$options\":\"i\"}}]}",
           NULL);
}

static void test_identifiers(void **state)
{
    (void)state;
    expect("studies of patient LIDC-IDRI-0001", "studies", "{\"patient_id\":\"LIDC-IDRI-0001\"}", NULL);
    expect("patient lidc-idri-0001", "studies", "{\"patient_id\":\"LIDC-IDRI-0001\"}", NULL);
    expect("patients LIDC-IDRI-0001 and LIDC-IDRI-0002", "studies",
           "{\"patient_id\":{\"$in\":[\"LIDC-IDRI-0001\",\"LIDC-IDRI-0002\"]}}", NULL);
    expect("patients LIDC-IDRI-00*", "studies",
           "{\"patient_id\":{\"$regex\":\"^(LIDC-IDRI-00.*)$\",\"$options\":\"i\"}}", NULL);
    expect("accession 12345678", "studies", "{\"accession_number\":\"12345678\"}", NULL);
    expect("series of study 1.2.840.1.2", "series", "{\"study_id\":\"1.2.840.1.2\"}", NULL);
    expect("images of series 1.2.840.1.3", "instances", "{\"series_id\":\"1.2.840.1.3\"}", NULL);
    expect("1.2.840.1.4", "studies", "{\"_id\":\"1.2.840.1.4\"}", NULL);
    expect("studies with description \"lung nodule\"", "studies",
           "{\"study_description\":{\"$regex\":\"lung nodule\",\"$options\":\"i\"}}", NULL);
    expect("series described as 'a.b(c)'", "series",
           "{\"series_description\":{\"$regex\":\"a\\\\.b\\\\(c\\\\)\",\"$options\":\"i\"}}", NULL);
    expect("studies in collection LIDC-IDRI", "studies", "{\"collection_ids\":\"LIDC-IDRI\"}", NULL);
}

static void test_refusals_and_notes(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_nl_vocab_t *v = vocab();
    assert_null(mdb_nl_translate(v, "", &REF, &err));
    assert_int_equal(err.domain, MDB_ERR_QUERY);
    assert_null(mdb_nl_translate(v, "   ,;  ", &REF, &err));
    assert_null(mdb_nl_translate(v, NULL, &REF, &err));
    assert_null(mdb_nl_translate(v, "CT \xff\xfe", &REF, &err));
    assert_non_null(strstr(err.message, "UTF-8"));
    char *big = malloc(MDB_NL_MAX_SENTENCE + 10);
    memset(big, 'a', MDB_NL_MAX_SENTENCE + 9);
    big[MDB_NL_MAX_SENTENCE + 9] = '\0';
    assert_null(mdb_nl_translate(v, big, &REF, &err));
    assert_non_null(strstr(err.message, "too long"));
    free(big);
    mdb_nl_options_t bad = {"2006-02-30"};
    assert_null(mdb_nl_translate(v, "CT", &bad, &err));
    assert_non_null(strstr(err.message, "reference date"));

    /* a sentence of unknown words only is refused rather than answered with everything */
    assert_null(mdb_nl_translate(v, "wombats and platypuses", &REF, &err));
    assert_non_null(strstr(err.message, "nothing in the sentence was understood"));
    assert_non_null(strstr(err.message, "wombats"));

    /* unknown words are reported, not silently dropped */
    mdb_nl_result_t *r = mdb_nl_translate(v, "CT studies with wombats", &REF, &err);
    assert_non_null(r);
    json_t *j = mdb_nl_result_to_json(r);
    assert_int_equal(json_array_size(json_object_get(j, "ignored")), 1);
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "ignored"), 0)), "wombats");
    assert_non_null(strstr(mdb_nl_result_explanation(r), "wombats"));
    assert_string_equal(mdb_nl_result_backend(r), "offline");
    assert_null(mdb_nl_result_message(r));
    json_decref(j);
    mdb_nl_result_destroy(r);

    /* the documented default is named in the explanation */
    r = mdb_nl_translate(v, "thin slice series", &REF, &err);
    assert_non_null(strstr(mdb_nl_result_explanation(r), "2.5 mm"));
    mdb_nl_result_destroy(r);

    /* a field this catalogue does not record is not used, and the user is told */
    mdb_nl_vocab_t *bare = mdb_nl_vocab_new();
    assert_true(mdb_nl_vocab_add_promoted(bare, &err));
    r = mdb_nl_translate(bare, "female CT studies", &REF, &err);
    assert_non_null(r);
    assert_non_null(strstr(mdb_nl_result_explanation(r), "PatientSex is not recorded"));
    mdb_nl_result_destroy(r);
    mdb_nl_vocab_destroy(bare);
    mdb_nl_vocab_destroy(v);
}

static mdb_nl_result_t *from_json(const mdb_nl_vocab_t *v, const char *text, mdb_error_t *err)
{
    json_error_t je;
    json_t *t = json_loads(text, 0, &je);
    if (!t)
        fail_msg("bad test JSON %s", text);
    mdb_nl_result_t *r = mdb_nl_result_from_json(v, t, err);
    json_decref(t);
    return r;
}

/* The result's confidence and corrections (NULL: refused). */
static json_t *answer(const char *sentence)
{
    mdb_error_t err = {0};
    mdb_nl_vocab_t *v = vocab();
    mdb_nl_result_t *r = mdb_nl_translate(v, sentence, &REF, &err);
    json_t *j = r ? mdb_nl_result_to_json(r) : NULL;
    mdb_nl_result_destroy(r);
    mdb_nl_vocab_destroy(v);
    return j;
}

static void expect_confidence(const char *sentence, const char *confidence, size_t ncorrections)
{
    json_t *j = answer(sentence);
    if (!j)
        fail_msg("'%s' refused", sentence);
    const char *c = json_string_value(json_object_get(j, "confidence"));
    size_t n = json_array_size(json_object_get(j, "corrections"));
    if (!c || strcmp(c, confidence) || n != ncorrections)
        fail_msg("'%s': confidence %s with %zu corrections, want %s with %zu (%s)", sentence, c ? c : "?", n,
                 confidence, ncorrections, json_string_value(json_object_get(j, "explanation")));
    json_decref(j);
}

/* issue 15: never silently wrong */
static void test_never_silently_wrong(void **state)
{
    (void)state;
    /* a qualifier is kept: "chest x-rays" is not every x-ray */
    expect("chest x-rays", "series",
           "{\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]},\"modality\":{\"$in\":[\"CR\",\"DX\"]}}", NULL);
    /* OR stays OR when one value is not in the catalogue */
    expect("Philips or Hitachi series", "series",
           "{\"$or\":[{\"manufacturer\":\"Philips\"},{\"manufacturer\":{\"$regex\":"
           "\"(^|[^A-Za-z0-9])(HITACHI)([^A-Za-z0-9]|$)\",\"$options\":\"i\"}}]}",
           NULL);
    expect("series not made by Hitachi or Siemens", "series",
           "{\"$nor\":[{\"manufacturer\":{\"$regex\":\"(^|[^A-Za-z0-9])(HITACHI)([^A-Za-z0-9]|$)\",\"$options\":"
           "\"i\"}},{\"manufacturer\":\"SIEMENS\"}]}",
           NULL);
    /* an OR across fields cannot be kept: partial, "or" listed */
    expect_confidence("CT or Siemens series", "partial", 0);
    json_t *j = answer("CT or Siemens series");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "ignored"), 0)), "or");
    json_decref(j);
    /* presence and absence of any field */
    expect("series without a manufacturer model name", "series", "{\"manufacturer_model_name\":{\"$in\":[\"\",null]}}",
           NULL);
    expect("series with a convolution kernel", "series",
           "{\"metadata.ConvolutionKernel\":{\"$exists\":true,\"$nin\":[\"\",null]}}", NULL);
    expect("series whose kernel is missing", "series", "{\"metadata.ConvolutionKernel\":{\"$in\":[\"\",null]}}", NULL);
    expect("series with kernel B30f", "series",
           "{\"metadata.ConvolutionKernel\":{\"$regex\":\"^B30f$\",\"$options\":\"i\"}}", NULL);
    /* prefixes and case of stored values */
    expect("LightSpeed series", "series", "{\"manufacturer_model_name\":\"LightSpeed16\"}", NULL);
    expect_confidence("LightSpeed series", "complete", 1);
    expect("lightspeed16 series", "series", "{\"manufacturer_model_name\":\"LightSpeed16\"}", NULL);
    expect_confidence("lightspeed16 series", "complete", 0);
    /* spelling within 2 edits, shown */
    expect("sereis thiner than 2 mm", "series", "{\"slice_thickness\":{\"$lt\":2}}", NULL);
    expect_confidence("sereis thiner than 2 mm", "complete", 2);
    j = answer("sereis thiner than 2 mm");
    json_t *c0 = json_array_get(json_object_get(j, "corrections"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "from")), "sereis");
    assert_string_equal(json_string_value(json_object_get(c0, "to")), "series");
    assert_string_equal(json_string_value(json_object_get(c0, "kind")), "spelling");
    assert_non_null(strstr(json_string_value(json_object_get(j, "explanation")), "\"sereis\" → \"series\""));
    json_decref(j);
    expect("Siemmens CT series", "series", "{\"manufacturer\":\"SIEMENS\",\"modality\":\"CT\"}", NULL);
    /* German and French */
    expect(
        "Thorax-CT Serien dünner als 2 mm", "series",
        "{\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]},\"modality\":\"CT\",\"slice_thickness\":{\"$lt\":2}}",
        NULL);
    expect("scanner thoracique de 2002", "series",
           "{\"modality\":\"CT\",\"body_part_examined\":{\"$in\":[\"CHEST\",\"LUNG\"]}}",
           "[{\"collection\":\"studies\",\"filter\":{\"study_date\":{\"$gte\":\"20020101\",\"$lte\":\"20021231\"}},"
           "\"negate\":false}]");
    expect("Studien zwischen 2000 und 2001", "studies",
           "{\"study_date\":{\"$gte\":\"20000101\",\"$lte\":\"20011231\"}}", NULL);
    /* unknown words: partial, listed; a lone unknown or filler word is refused */
    expect_confidence("ultra-modern CT series", "partial", 0);
    expect_confidence("CT series", "complete", 0);
    assert_null(answer("scanner"));
    assert_null(answer("please show me everything"));
    assert_null(answer("wombats"));
    /* counts of series at study level; "series" after a plain number stays the level word */
    expect("studies with more than 2 series", "studies", "{\"series_count\":{\"$gt\":2}}", NULL);
    expect("kvp 120 series", "series", "{\"kvp\":120}", NULL);
    /* a field name right after its value is part of it */
    expect("B30f kernel CT series", "series", "{\"metadata.ConvolutionKernel\":\"B30f\",\"modality\":\"CT\"}", NULL);
    /* "both A and B" needs every one of them; a synonym group stays one alternative */
    expect("studies with both CT and MR series", "studies",
           "{\"$and\":[{\"modalities\":\"CT\"},{\"modalities\":\"MR\"}]}", NULL);
    expect("studies with both Siemens and GE series", "studies", "{}",
           "[{\"collection\":\"series\",\"filter\":{\"manufacturer\":\"SIEMENS\"},\"negate\":false},"
           "{\"collection\":\"series\",\"filter\":{\"manufacturer\":{\"$in\":[\"GE MEDICAL SYSTEMS\","
           "\"GE Healthcare\"]}},\"negate\":false}]");
    /* "and" between disjoint ranges of one field is either of them; overlapping ones intersect */
    expect("series thinner than 1 mm and thicker than 3 mm", "series",
           "{\"$or\":[{\"slice_thickness\":{\"$lt\":1}},{\"slice_thickness\":{\"$gt\":3}}]}", NULL);
    expect("series thicker than 1 mm and thinner than 3 mm", "series",
           "{\"$and\":[{\"slice_thickness\":{\"$gt\":1}},{\"slice_thickness\":{\"$lt\":3}}]}", NULL);
    /* a word is never "corrected" into a filler no rule uses ("mode" -> "made") */
    expect_confidence("CT series in mode", "partial", 0);
    /* English "scanner" stays a filler word */
    expect("Siemens scanners", "series", "{\"manufacturer\":\"SIEMENS\"}", NULL);
}

static void test_external_translations(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_nl_vocab_t *v = vocab();
    mdb_nl_result_t *r = from_json(v,
                                   "{\"level\":\"series\",\"filter\":{\"manufacturer\":{\"$in\":[\"SIEMENS\"]},"
                                   "\"metadata.ConvolutionKernel\":\"B30f\"},\"joins\":[{\"level\":\"studies\","
                                   "\"filter\":{\"study_date\":{\"$gte\":\"20000101\"}}}],\"explanation\":\"x\"}",
                                   &err);
    if (!r)
        fail_msg("valid translation refused: %s", err.message);
    assert_int_equal(mdb_nl_result_level(r), MDB_QUERY_SERIES);
    const json_t *j0 = json_array_get(mdb_nl_result_joins(r), 0);
    assert_string_equal(json_string_value(json_object_get(j0, "local")), "study_id");
    assert_string_equal(json_string_value(json_object_get(j0, "foreign")), "_id");
    mdb_nl_result_destroy(r);

    static const struct {
        const char *json;
        const char *reason;
    } bad[] = {
        {"{\"level\":\"series\",\"filter\":{\"vendor\":\"SIEMENS\"}}", "unknown field 'vendor'"},
        {"{\"level\":\"series\",\"filter\":{\"$where\":\"1\"}}", "$where"},
        {"{\"level\":\"series\",\"filter\":{\"kvp\":{\"$function\":{}}}}", "$function"},
        {"{\"level\":\"series\",\"filter\":{\"$expr\":{\"$eq\":[1,1]}}}", "cannot stand"},
        {"{\"level\":\"patients\",\"filter\":{}}", "level"},
        {"{\"filter\":{}}", "level"},
        {"{\"level\":\"series\",\"filter\":[]}", "object"},
        {"{\"level\":\"series\",\"filter\":{\"study_date\":\"x\"}}", "unknown field 'study_date'"},
        {"{\"level\":\"series\",\"filter\":{},\"joins\":[{\"level\":\"series\",\"filter\":{\"kvp\":1}}]}", "join"},
        {"{\"level\":\"series\",\"filter\":{},\"joins\":[{\"level\":\"studies\",\"filter\":{\"kvp\":1}}]}",
         "unknown field 'kvp'"},
        {"{\"level\":\"series\",\"filter\":{\"kvp\":{\"$in\":5}}}", "array"},
        {"{\"level\":\"series\",\"filter\":{\"$or\":[]}}", "non-empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mdb_error_clear(&err);
        r = from_json(v, bad[i].json, &err);
        if (r)
            fail_msg("accepted: %s", bad[i].json);
        if (!strstr(err.message, bad[i].reason))
            fail_msg("%s: message '%s' lacks '%s'", bad[i].json, err.message, bad[i].reason);
    }

    /* an unreachable LLM falls back to the offline translation with a message */
    mdb_nl_llm_t llm = {"http://127.0.0.1:1/v1", "none", NULL, 2000};
    r = mdb_nl_translate_llm(v, "Siemens series", &REF, &llm, &err);
    assert_non_null(r);
    assert_string_equal(mdb_nl_result_backend(r), "offline");
    assert_non_null(mdb_nl_result_message(r));
    assert_non_null(strstr(mdb_nl_result_message(r), "LLM"));
    assert_string_equal(json_string_value(json_object_get(mdb_nl_result_filter(r), "manufacturer")), "SIEMENS");
    mdb_nl_result_destroy(r);
    mdb_nl_vocab_destroy(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modalities_and_levels), cmocka_unit_test(test_body_parts),
        cmocka_unit_test(test_slices_and_units),      cmocka_unit_test(test_dates),
        cmocka_unit_test(test_negation_and_names),    cmocka_unit_test(test_identifiers),
        cmocka_unit_test(test_refusals_and_notes),    cmocka_unit_test(test_external_translations),
        cmocka_unit_test(test_never_silently_wrong),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
