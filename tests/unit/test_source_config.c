/* Unit tests of fetcher/source_config.c and source.c's pure parts: parsing
 * pacs.sources entries (DIMSE and DICOMweb, options, bad input named),
 * allowed hours (wrapping midnight), the storage test switch (stable hash,
 * once = whole-study retrievals only), and the retrieve task message codec
 * (common/store/mdb_retrieval.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mdb_retrieval.h"
#include "source.h"
#include "source_config.h"

static mdb_source_config_t defaults(void)
{
    mdb_source_config_t d;
    memset(&d, 0, sizeof d);
    strcpy(d.calling_ae, "METADB");
    d.scp_port = 11112;
    d.max_associations = 2;
    d.retries = 5;
    d.backoff_ms = 1000;
    d.timeout_s = 30;
    d.hours_from = d.hours_to = -1;
    return d;
}

static void test_parse_dimse_and_web(void **state)
{
    (void)state;
    mdb_source_config_t d = defaults(), *l = NULL;
    size_t n = 0;
    mdb_error_t err = {0};
    assert_true(mdb_source_parse_list(" orthanc:dimse:10.0.0.5:4242:ORTHANC;max_associations=1;hours=19-07;ae=ME ,"
                                      "web:dicomweb:https://pacs.example/dicom-web/;token_file=/etc/t,"
                                      "v6:dimse:[::1]:104:PACS;retrieve=get",
                                      &d, &l, &n, &err));
    assert_int_equal(n, 3);
    assert_string_equal(l[0].name, "orthanc");
    assert_int_equal(l[0].kind, MDB_SOURCE_DIMSE);
    assert_string_equal(l[0].host, "10.0.0.5");
    assert_int_equal(l[0].port, 4242);
    assert_string_equal(l[0].called_ae, "ORTHANC");
    assert_string_equal(l[0].calling_ae, "ME");
    assert_int_equal(l[0].max_associations, 1);
    assert_int_equal(l[0].hours_from, 19);
    assert_int_equal(l[0].hours_to, 7);
    assert_int_equal(l[0].scp_port, 11112); /* from the defaults */
    assert_int_equal(l[1].kind, MDB_SOURCE_DICOMWEB);
    assert_string_equal(l[1].url, "https://pacs.example/dicom-web"); /* trailing '/' removed */
    assert_string_equal(l[1].token_file, "/etc/t");
    assert_int_equal(l[1].max_associations, 2);
    assert_string_equal(l[2].host, "::1");
    assert_true(l[2].dimse_cget);
    assert_false(l[0].dimse_cget);
    assert_ptr_equal(mdb_source_find(l, n, "web"), &l[1]);
    assert_null(mdb_source_find(l, n, "nope"));
    free(l);
    assert_true(mdb_source_parse_list("", &d, &l, &n, &err));
    assert_int_equal(n, 0);
    free(l);
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "orthanc",                                      /* no kind */
        "orthanc:dimse:host:4242",                      /* no AE */
        "orthanc:dimse:host:99999:AE",                  /* port */
        "orthanc:dimse:host:42:AE_TITLE_MUCH_TOO_LONG", /* AE > 16 */
        "orthanc:smtp:host:42:AE",                      /* kind */
        "web:dicomweb:ftp://x",                         /* URL scheme */
        "a b:dimse:h:1:AE",                             /* name */
        "o:dimse:h:1:AE;bogus=1",                       /* option */
        "o:dimse:h:1:AE;hours=7-7",                     /* empty window */
        "o:dimse:h:1:AE;max_associations=0",            /* cap < 1 */
        "o:dimse:h:1:AE,o:dimse:h:2:AE",                /* duplicate name */
        "o:dimse:h:1:AE;retrieve=push",                 /* retrieve mode */
    };
    mdb_source_config_t d = defaults(), *l = NULL;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 7;
        mdb_error_t err = {0};
        assert_false(mdb_source_parse_list(bad[i], &d, &l, &n, &err));
        assert_null(l);
        assert_int_equal(n, 0);
        assert_int_equal(err.domain, MDB_ERR_CONFIG);
        assert_non_null(strstr(err.message, "pacs.sources entry"));
    }
}

static void test_hours(void **state)
{
    (void)state;
    mdb_source_config_t c = defaults();
    mdb_error_t err = {0};
    assert_true(mdb_source_hour_allowed(&c, 12)); /* no window: always */
    assert_true(mdb_source_parse_hours("19:00-07:00", &c.hours_from, &c.hours_to, &err));
    assert_true(mdb_source_hour_allowed(&c, 19));
    assert_true(mdb_source_hour_allowed(&c, 23));
    assert_true(mdb_source_hour_allowed(&c, 0));
    assert_true(mdb_source_hour_allowed(&c, 6));
    assert_false(mdb_source_hour_allowed(&c, 7));
    assert_false(mdb_source_hour_allowed(&c, 12));
    assert_true(mdb_source_parse_hours("8-17", &c.hours_from, &c.hours_to, &err));
    assert_true(mdb_source_hour_allowed(&c, 8));
    assert_false(mdb_source_hour_allowed(&c, 17));
    assert_false(mdb_source_parse_hours("19", &c.hours_from, &c.hours_to, &err));
    assert_false(mdb_source_parse_hours("25-3", &c.hours_from, &c.hours_to, &err));
}

static void test_drop_switch(void **state)
{
    (void)state;
    mdb_source_config_t c = defaults();
    mdb_source_retrieve_t study = {.study_uid = "1.2"}, series = {.study_uid = "1.2", .series_uid = "1.2.3"};
    char uid[64];
    int dropped = 0;
    assert_false(mdb_source_test_should_drop(&c, &study, "1.2.3.4")); /* off */
    c.test_drop_every = 3;
    for (int i = 0; i < 300; i++) {
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        bool d = mdb_source_test_should_drop(&c, &study, uid);
        dropped += d;
        assert_false(mdb_source_test_should_drop(&c, &series, uid)); /* once: re-requests get everything */
        c.test_drop_always = true;
        assert_int_equal(mdb_source_test_should_drop(&c, &series, uid), d); /* always: the same ones */
        c.test_drop_always = false;
    }
    assert_in_range(dropped, 60, 140); /* about a third */
    assert_true(mdb_source_error_retryable(&(mdb_error_t){.domain = MDB_ERR_IO, .code = MDB_SOURCE_E_NETWORK}));
    assert_false(mdb_source_error_retryable(&(mdb_error_t){.domain = MDB_ERR_IO, .code = MDB_SOURCE_E_PROTOCOL}));
    assert_string_equal(mdb_source_errc_name(MDB_SOURCE_E_REFUSED), "refused");
}

static void test_retrieve_msg(void **state)
{
    (void)state;
    mdb_retrieve_msg_t m = {.job_id = "j1",
                            .selector_index = 3,
                            .selector = "accession:A1",
                            .kind = "accession",
                            .value = "A1",
                            .source = "orthanc",
                            .feature_set = NULL};
    char *json = mdb_retrieve_msg_encode(&m);
    assert_non_null(json);
    mdb_retrieve_msg_t out;
    mdb_error_t err = {0};
    assert_true(mdb_retrieve_msg_decode(json, strlen(json), 1 << 20, &out, &err));
    assert_string_equal(out.job_id, "j1");
    assert_int_equal(out.selector_index, 3);
    assert_string_equal(out.source, "orthanc");
    assert_null(out.feature_set);
    mdb_retrieve_msg_clear(&out);
    free(json);
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"job_id\":\"j\",\"selector\":\"s\",\"kind\":\"path\",\"value\":\"v\",\"source\":\"o\",\"selector_index\":0}",
        "{\"job_id\":\"j\",\"selector\":\"s\",\"kind\":\"study\",\"value\":\"v\",\"source\":\"o\",\"selector_index\":-1}",
        "{\"job_id\":\"\",\"selector\":\"s\",\"kind\":\"study\",\"value\":\"v\",\"source\":\"o\",\"selector_index\":0}",
        "not json"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_false(mdb_retrieve_msg_decode(bad[i], strlen(bad[i]), 1 << 20, &out, &err));
        assert_int_equal(err.domain, MDB_ERR_MSG);
    }
    assert_string_equal(mdb_retrieval_status_name(MDB_RETR_INCOMPLETE), "incomplete");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_dimse_and_web), cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_hours),
        cmocka_unit_test(test_drop_switch),         cmocka_unit_test(test_retrieve_msg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
