/* Unit tests of the four message codecs: every encoder's output decodes to
 * the same values, and each kind of bad input is rejected with its own
 * specific reason (malformed JSON, wrong types, unknown version, missing
 * fields, oversized, invalid UTF-8). Unknown fields are ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_msg.h"

#define MAXB 1048576

#define assert_contains(hay, needle)                                                                                   \
    do {                                                                                                               \
        if (!strstr((hay), (needle)))                                                                                  \
            fail_msg("expected '%s' in '%s'", (needle), (hay));                                                        \
    } while (0)

static void test_job_roundtrip(void **state)
{
    (void)state;
    mdb_job_msg_t in = {0}, out = {0};
    mdb_error_t err = {0};
    in.job_id = "5f0c6a5e-7d8b-4d4e-9a51-0b2a4c1f9e11";
    in.researcher_id = "alice";
    in.collection = "LIDC-IDRI";
    assert_true(mdb_strv_push(&in.accession_numbers, "ACC1"));
    assert_true(mdb_strv_push(&in.accession_numbers, "ACC2 ü"));
    assert_true(mdb_strv_push(&in.patient_ids, "LIDC-IDRI-0001"));
    assert_true(mdb_strv_push(&in.study_uids, "1.2.3"));
    assert_true(mdb_strv_push(&in.series_uids, "1.2.3.4"));
    assert_true(mdb_strv_push(&in.paths, "/archive/a.dcm"));
    in.all_cases = true;
    in.feature_set = "lung";
    in.submitted_at = "2026-01-02T03:04:05.678Z";
    in.retry_of = "old-job";
    char *s = mdb_msg_job_encode(&in);
    assert_non_null(s);
    assert_true(mdb_msg_job_decode(s, strlen(s), MAXB, &out, &err));
    assert_string_equal(out.job_id, in.job_id);
    assert_string_equal(out.researcher_id, "alice");
    assert_string_equal(out.collection, "LIDC-IDRI");
    assert_int_equal(out.accession_numbers.n, 2);
    assert_string_equal(out.accession_numbers.v[1], "ACC2 ü");
    assert_null(out.accession_numbers.v[2]);
    assert_string_equal(out.patient_ids.v[0], "LIDC-IDRI-0001");
    assert_string_equal(out.study_uids.v[0], "1.2.3");
    assert_string_equal(out.series_uids.v[0], "1.2.3.4");
    assert_string_equal(out.paths.v[0], "/archive/a.dcm");
    assert_true(out.all_cases);
    assert_string_equal(out.feature_set, "lung");
    assert_string_equal(out.submitted_at, in.submitted_at);
    assert_string_equal(out.retry_of, "old-job");
    assert_true(mdb_msg_job_has_selector(&out));
    free(s);
    mdb_msg_job_clear(&out);
    assert_null(out.job_id);
    mdb_strv_clear(&in.accession_numbers);
    mdb_strv_clear(&in.patient_ids);
    mdb_strv_clear(&in.study_uids);
    mdb_strv_clear(&in.series_uids);
    mdb_strv_clear(&in.paths);

    /* Minimal job: only a version and one selector; optional fields absent. */
    const char *min = "{\"v\":1,\"accession_numbers\":[\"A\"],\"job_id\":null,\"future_field\":{\"x\":[1,2]}}";
    assert_true(mdb_msg_job_decode(min, strlen(min), MAXB, &out, &err));
    assert_null(out.job_id);
    assert_null(out.collection);
    assert_false(out.all_cases);
    assert_true(mdb_msg_job_has_selector(&out));
    mdb_msg_job_clear(&out);
    const char *none = "{\"v\":1,\"researcher_id\":\"r\"}";
    assert_true(mdb_msg_job_decode(none, strlen(none), MAXB, &out, &err));
    assert_false(mdb_msg_job_has_selector(&out));
    mdb_msg_job_clear(&out);
}

static void test_file_roundtrip(void **state)
{
    (void)state;
    mdb_file_msg_t in = {"job-1", "/archive/LIDC-IDRI-0001/a b/1-001.dcm", "accession:1234", NULL};
    mdb_file_msg_t out;
    mdb_error_t err = {0};
    char *s = mdb_msg_file_encode(&in);
    assert_non_null(s);
    assert_null(strstr(s, "feature_set")); /* NULL fields are omitted */
    assert_true(mdb_msg_file_decode(s, strlen(s), MAXB, &out, &err));
    assert_string_equal(out.job_id, "job-1");
    assert_string_equal(out.path, in.path);
    assert_string_equal(out.selector, "accession:1234");
    assert_null(out.feature_set);
    mdb_msg_file_clear(&out);
    free(s);
}

static void test_instance_roundtrip(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_instance_msg_t in = {0}, out;
    in.job_id = "job-2";
    in.path = "/archive/x.dcm";
    in.study = json_pack("{s:s, s:s, s:i}", "StudyInstanceUID", "1.2.840.1", "PatientName", "Müller^Hans", "n", 3);
    in.series = json_pack("{s:s, s:[f,f]}", "SeriesInstanceUID", "1.2.840.1.2", "PixelSpacing", 0.5, 0.75);
    in.instance = json_pack("{s:s}", "SOPInstanceUID", "1.2.840.1.2.3");
    in.file_size = 526336;
    in.file_mtime = 1700000000;
    char *s = mdb_msg_instance_encode(&in);
    assert_non_null(s);
    assert_true(mdb_msg_instance_decode(s, strlen(s), MAXB, &out, &err));
    assert_string_equal(out.job_id, "job-2");
    assert_string_equal(mdb_msg_instance_study_uid(&out), "1.2.840.1");
    assert_string_equal(mdb_msg_instance_series_uid(&out), "1.2.840.1.2");
    assert_string_equal(mdb_msg_instance_sop_uid(&out), "1.2.840.1.2.3");
    assert_true(json_equal(out.study, in.study));
    assert_true(json_equal(out.series, in.series));
    assert_int_equal(out.file_size, 526336);
    assert_int_equal(out.file_mtime, 1700000000);
    mdb_msg_instance_clear(&out);
    json_decref(in.study);
    json_decref(in.series);
    json_decref(in.instance);
    free(s);
}

/* decode_root hands back the parsed message (fields the struct does not
 * carry, e.g. "dicom"), and NULL when the message is refused. */
static void test_instance_decode_root(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_instance_msg_t out;
    const char *ok = "{\"v\":1,\"job_id\":\"j1\",\"path\":\"/a/b.dcm\",\"feature_set\":\"fs2\","
                     "\"study\":{\"StudyInstanceUID\":\"1.2\"},\"series\":{\"SeriesInstanceUID\":\"1.2.3\"},"
                     "\"instance\":{\"SOPInstanceUID\":\"1.2.3.4\"},\"file\":{\"size\":10,\"mtime\":5},"
                     "\"dicom\":{\"transfer_syntax\":\"1.2.840.10008.1.2.1\"}}";
    json_t *root = NULL;
    assert_true(mdb_msg_instance_decode_root(ok, strlen(ok), MAXB, &out, &root, &err));
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "dicom"), "transfer_syntax")),
                        "1.2.840.10008.1.2.1");
    assert_string_equal(json_string_value(json_object_get(root, "feature_set")), "fs2");
    assert_string_equal(mdb_msg_instance_sop_uid(&out), "1.2.3.4");
    json_decref(root);
    mdb_msg_instance_clear(&out);
    /* NULL root pointer: same as mdb_msg_instance_decode */
    assert_true(mdb_msg_instance_decode_root(ok, strlen(ok), MAXB, &out, NULL, &err));
    mdb_msg_instance_clear(&out);
    const char *bad = "{\"v\":1,\"job_id\":\"j1\",\"path\":\"/a/b.dcm\",\"study\":{}}";
    root = json_object(); /* overwritten with NULL, not leaked: the test owns this one */
    json_t *mine = root;
    assert_false(mdb_msg_instance_decode_root(bad, strlen(bad), MAXB, &out, &root, &err));
    assert_null(root);
    assert_null(out.job_id);
    json_decref(mine);
}

static void test_dlq_roundtrip(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_dlq_msg_t in = {"job-3", "/archive/bad.dcm", "worker", "not_dicom", "no DICM preamble"}, out;
    char *s = mdb_msg_dlq_encode(&in);
    assert_non_null(s);
    assert_true(mdb_msg_dlq_decode(s, strlen(s), MAXB, &out, &err));
    assert_string_equal(out.job_id, "job-3");
    assert_string_equal(out.path, "/archive/bad.dcm");
    assert_string_equal(out.stage, "worker");
    assert_string_equal(out.error, "not_dicom");
    assert_string_equal(out.message, "no DICM preamble");
    mdb_msg_dlq_clear(&out);
    free(s);

    /* A DLQ record must be encodable even when its path is not UTF-8. */
    mdb_dlq_msg_t bad = {NULL, "/archive/caf\xe9.dcm", "producer", "bad_path", NULL};
    s = mdb_msg_dlq_encode(&bad);
    assert_non_null(s);
    assert_true(mdb_msg_dlq_decode(s, strlen(s), MAXB, &out, &err));
    assert_string_equal(out.path, "/archive/caf\xef\xbf\xbd.dcm");
    assert_null(out.job_id);
    mdb_msg_dlq_clear(&out);
    free(s);
}

/* Decode with every decoder expecting failure; return the file decoder's message. */
static void expect_file_error(const char *json, size_t len, const char *needle)
{
    mdb_file_msg_t out;
    mdb_error_t err = {0};
    out.job_id = (char *)0x1; /* must be zeroed on failure */
    assert_false(mdb_msg_file_decode(json, len, MAXB, &out, &err));
    assert_null(out.job_id);
    assert_null(out.path);
    assert_int_equal(err.domain, MDB_ERR_MSG);
    assert_contains(err.message, needle);
}

static void test_malformed(void **state)
{
    (void)state;
    const char *j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\"";
    expect_file_error(j, strlen(j), "malformed JSON");
    j = "not json at all";
    expect_file_error(j, strlen(j), "malformed JSON at line 1");
    j = "[1,2,3]";
    expect_file_error(j, strlen(j), "expected a JSON object, got array");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"path\":\"/y\"}";
    expect_file_error(j, strlen(j), "malformed JSON");
    expect_file_error("", 0, "empty");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\"}\0trailing";
    expect_file_error(j, 40, "NUL byte");
}

static void test_wrong_types(void **state)
{
    (void)state;
    const char *j = "{\"v\":1,\"job_id\":\"a\",\"path\":42}";
    expect_file_error(j, strlen(j), "field 'path': expected string, got integer");
    j = "{\"v\":\"1\",\"job_id\":\"a\",\"path\":\"/x\"}";
    expect_file_error(j, strlen(j), "field 'v': expected integer, got string");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"selector\":[\"s\"]}";
    expect_file_error(j, strlen(j), "field 'selector': expected string, got array");

    mdb_job_msg_t job;
    mdb_error_t err = {0};
    j = "{\"v\":1,\"accession_numbers\":\"A1\"}";
    assert_false(mdb_msg_job_decode(j, strlen(j), MAXB, &job, &err));
    assert_contains(err.message, "field 'accession_numbers': expected array of strings, got string");
    j = "{\"v\":1,\"patient_ids\":[\"p\",7]}";
    assert_false(mdb_msg_job_decode(j, strlen(j), MAXB, &job, &err));
    assert_contains(err.message, "field 'patient_ids[1]': expected string, got integer");
    assert_null(job.patient_ids.v); /* partial array freed */
    j = "{\"v\":1,\"all_cases\":\"yes\"}";
    assert_false(mdb_msg_job_decode(j, strlen(j), MAXB, &job, &err));
    assert_contains(err.message, "field 'all_cases': expected boolean, got string");
    j = "{\"v\":1,\"job_id\":\"a\\nb\",\"all_cases\":true}";
    assert_false(mdb_msg_job_decode(j, strlen(j), MAXB, &job, &err));
    assert_contains(err.message, "field 'job_id': contains a control character");

    mdb_instance_msg_t in;
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"study\":[],\"series\":{},\"instance\":{},"
        "\"file\":{\"size\":1,\"mtime\":2}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "field 'study': expected object, got array");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"study\":{\"StudyInstanceUID\":\"1\"},"
        "\"series\":{\"SeriesInstanceUID\":\"2\"},\"instance\":{\"SOPInstanceUID\":\"3\"},"
        "\"file\":{\"size\":\"big\",\"mtime\":2}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "field 'file.size': expected integer, got string");
    assert_null(in.study); /* references released on failure */
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"study\":{\"StudyInstanceUID\":1.5},"
        "\"series\":{},\"instance\":{},\"file\":{}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "field 'study.StudyInstanceUID': expected string, got number");

    mdb_dlq_msg_t d;
    j = "{\"v\":1,\"stage\":\"loader\",\"error\":\"x\"}";
    assert_false(mdb_msg_dlq_decode(j, strlen(j), MAXB, &d, &err));
    assert_contains(err.message, "field 'stage': 'loader' is not one of");
    j = "{\"v\":1,\"stage\":\"worker\",\"error\":false}";
    assert_false(mdb_msg_dlq_decode(j, strlen(j), MAXB, &d, &err));
    assert_contains(err.message, "field 'error': expected string, got boolean");
}

static void test_version(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *j = "{\"v\":2,\"job_id\":\"a\",\"path\":\"/x\"}";
    expect_file_error(j, strlen(j), "unsupported version v=2");
    j = "{\"job_id\":\"a\",\"path\":\"/x\"}";
    expect_file_error(j, strlen(j), "missing field 'v'");
    mdb_dlq_msg_t d;
    j = "{\"v\":0,\"stage\":\"worker\",\"error\":\"e\"}";
    assert_false(mdb_msg_dlq_decode(j, strlen(j), MAXB, &d, &err));
    assert_contains(err.message, "unsupported version v=0");
    mdb_job_msg_t job;
    j = "{\"v\":1.0,\"all_cases\":true}";
    assert_false(mdb_msg_job_decode(j, strlen(j), MAXB, &job, &err));
    assert_contains(err.message, "field 'v': expected integer, got number");
}

static void test_missing_fields(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *j = "{\"v\":1,\"path\":\"/x\"}";
    expect_file_error(j, strlen(j), "missing field 'job_id'");
    j = "{\"v\":1,\"job_id\":\"a\"}";
    expect_file_error(j, strlen(j), "missing field 'path'");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"\"}";
    expect_file_error(j, strlen(j), "field 'path': must not be empty");

    mdb_instance_msg_t in;
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"study\":{\"StudyInstanceUID\":\"1\"},"
        "\"series\":{\"SeriesInstanceUID\":\"2\"},\"instance\":{},\"file\":{\"size\":1,\"mtime\":2}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "missing field 'instance.SOPInstanceUID'");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"study\":{\"StudyInstanceUID\":\"1\"},"
        "\"series\":{\"SeriesInstanceUID\":\"2\"},\"instance\":{\"SOPInstanceUID\":\"3\"}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "missing field 'file'");
    j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\",\"series\":{},\"instance\":{},\"file\":{}}";
    assert_false(mdb_msg_instance_decode(j, strlen(j), MAXB, &in, &err));
    assert_contains(err.message, "missing field 'study'");

    mdb_dlq_msg_t d;
    j = "{\"v\":1,\"stage\":\"worker\"}";
    assert_false(mdb_msg_dlq_decode(j, strlen(j), MAXB, &d, &err));
    assert_contains(err.message, "missing field 'error'");
}

static void test_oversized(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_file_msg_t out;
    const char *j = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\"}";
    size_t len = strlen(j);
    assert_true(mdb_msg_file_decode(j, len, len, &out, &err)); /* exactly at the limit: fine */
    mdb_msg_file_clear(&out);
    assert_false(mdb_msg_file_decode(j, len, len - 1, &out, &err));
    assert_contains(err.message, "exceeds the limit");
    assert_null(out.path);
    /* max_bytes 0 means no limit */
    assert_true(mdb_msg_file_decode(j, len, 0, &out, &err));
    mdb_msg_file_clear(&out);
}

static void test_bad_utf8(void **state)
{
    (void)state;
    const char *cases[] = {
        "{\"v\":1,\"job_id\":\"a\",\"path\":\"/caf\xe9\"}",          /* Latin-1 byte */
        "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xc0\xaf\"}",         /* overlong '/' */
        "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xed\xa0\x80\"}",     /* UTF-16 surrogate */
        "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xe2\x82\"}",         /* truncated sequence */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_file_error(cases[i], strlen(cases[i]), "invalid UTF-8 at byte");
    const char *t = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xe2\x82";
    expect_file_error(t, strlen(t), "invalid UTF-8 at byte 29");
    /* Valid multi-byte text passes. */
    mdb_file_msg_t out;
    mdb_error_t err = {0};
    const char *ok = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/\xe6\x97\xa5\xf0\x9f\x98\x80\"}";
    assert_true(mdb_msg_file_decode(ok, strlen(ok), MAXB, &out, &err));
    mdb_msg_file_clear(&out);
    /* An escaped NUL inside a string is refused, not silently truncated. */
    const char *nul = "{\"v\":1,\"job_id\":\"a\",\"path\":\"/x\\u0000y\"}";
    expect_file_error(nul, strlen(nul), "malformed JSON");
}

static void test_now_iso(void **state)
{
    (void)state;
    char buf[32];
    mdb_msg_now_iso(buf, sizeof buf);
    assert_int_equal(strlen(buf), 24);
    assert_int_equal(buf[4], '-');
    assert_int_equal(buf[10], 'T');
    assert_int_equal(buf[19], '.');
    assert_int_equal(buf[23], 'Z');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_roundtrip),      cmocka_unit_test(test_file_roundtrip),
        cmocka_unit_test(test_instance_roundtrip), cmocka_unit_test(test_instance_decode_root),
        cmocka_unit_test(test_dlq_roundtrip),      cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_wrong_types),        cmocka_unit_test(test_version),
        cmocka_unit_test(test_missing_fields),     cmocka_unit_test(test_oversized),
        cmocka_unit_test(test_bad_utf8),           cmocka_unit_test(test_now_iso),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
