/* Unit tests of fetcher/fetcher_land.c: UIDs are the only path components
 * taken from received objects, so only plain UIDs pass; the landing path
 * layout; and the sink on real files: a DICOM file lands under its own UIDs
 * (temp renamed), a second copy moves nothing, bytes in memory land too, a
 * non-DICOM object and an object of another study are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "fetcher.h"

static void test_uid_valid(void **state)
{
    (void)state;
    assert_true(fetcher_uid_valid("1.2.840.10008.5.1.4.1.1.2"));
    assert_false(fetcher_uid_valid(""));
    assert_false(fetcher_uid_valid(NULL));
    assert_false(fetcher_uid_valid(".."));
    assert_false(fetcher_uid_valid("."));
    assert_false(fetcher_uid_valid("1.2/../3"));
    assert_false(fetcher_uid_valid("1.2.3 "));
    assert_false(fetcher_uid_valid("12345678901234567890123456789012345678901234567890123456789012345"));
    char buf[256];
    assert_true(fetcher_land_path(buf, sizeof buf, "/r", "orthanc", "1.2", "1.2.3", "1.2.3.4"));
    assert_string_equal(buf, "/r/orthanc/1.2/1.2.3/1.2.3.4.dcm");
    assert_false(fetcher_land_path(buf, sizeof buf, "/r", "orthanc", "1.2", "..", "1.2.3.4"));
    assert_false(fetcher_land_path(buf, 10, "/r", "orthanc", "1.2", "1.2.3", "1.2.3.4"));
}

/* A minimal Part 10 file: preamble, DICM, meta group, Study/Series/SOP UIDs (explicit VR LE). */
static size_t put_el(unsigned char *p, uint16_t g, uint16_t e, const char *vr, const char *val)
{
    size_t len = strlen(val), pad = len & 1;
    p[0] = g & 0xff;
    p[1] = g >> 8;
    p[2] = e & 0xff;
    p[3] = e >> 8;
    p[4] = vr[0];
    p[5] = vr[1];
    p[6] = (len + pad) & 0xff;
    p[7] = (len + pad) >> 8;
    memcpy(p + 8, val, len);
    if (pad)
        p[8 + len] = 0;
    return 8 + len + pad;
}

static size_t make_dicom(unsigned char *buf, const char *study, const char *series, const char *sop)
{
    memset(buf, 0, 128);
    memcpy(buf + 128, "DICM", 4);
    size_t pos = 132;
    unsigned char meta[256];
    size_t ml = 0;
    ml += put_el(meta + ml, 0x0002, 0x0002, "UI", "1.2.840.10008.5.1.4.1.1.7");
    ml += put_el(meta + ml, 0x0002, 0x0003, "UI", sop);
    ml += put_el(meta + ml, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1");
    unsigned char gl[12] = {0x02, 0, 0, 0, 'U', 'L', 4, 0, (unsigned char)(ml & 0xff), (unsigned char)(ml >> 8), 0, 0};
    memcpy(buf + pos, gl, 12);
    pos += 12;
    memcpy(buf + pos, meta, ml);
    pos += ml;
    pos += put_el(buf + pos, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.7");
    pos += put_el(buf + pos, 0x0008, 0x0018, "UI", sop);
    pos += put_el(buf + pos, 0x0020, 0x000D, "UI", study);
    pos += put_el(buf + pos, 0x0020, 0x000E, "UI", series);
    return pos;
}

static void test_sink(void **state)
{
    (void)state;
    char root[] = "/tmp/metadb-land-XXXXXX";
    assert_non_null(mkdtemp(root));
    char spool[300], tmp[400], dest[400];
    snprintf(spool, sizeof spool, "%s/.spool", root);
    assert_int_equal(mkdir(spool, 0700), 0);
    fetcher_land_t l = {.root = root, .source = "orthanc", .spool = spool, .study = "1.2"};
    unsigned char buf[2048];
    size_t n = make_dicom(buf, "1.2", "1.2.3", "1.2.3.4");
    snprintf(tmp, sizeof tmp, "%s/.dimse-1", spool);
    FILE *f = fopen(tmp, "wb");
    assert_non_null(f);
    fwrite(buf, 1, n, f);
    fclose(f);
    mdb_source_item_t item = {.path = tmp, .sop_uid = "1.2.3.4"};
    mdb_error_t err = {0};
    assert_true(fetcher_land_sink(&l, &item, &err));
    snprintf(dest, sizeof dest, "%s/orthanc/1.2/1.2.3/1.2.3.4.dcm", root);
    struct stat st;
    assert_int_equal(stat(dest, &st), 0);
    assert_int_equal((size_t)st.st_size, n);
    assert_int_not_equal(access(tmp, F_OK), 0); /* renamed, not copied */
    assert_int_equal(l.landed_new, 1);
    /* the same instance again, in memory: nothing moved twice */
    mdb_source_item_t mem = {.data = buf, .len = n};
    assert_true(fetcher_land_sink(&l, &mem, &err));
    assert_int_equal(l.landed_new, 1);
    assert_int_equal(l.landed_dup, 1);
    /* another instance in memory lands */
    n = make_dicom(buf, "1.2", "1.2.3", "1.2.3.5");
    mem.len = n;
    assert_true(fetcher_land_sink(&l, &mem, &err));
    assert_int_equal(l.landed_new, 2);
    /* another study is refused; not DICOM is refused */
    n = make_dicom(buf, "9.9", "9.9.1", "9.9.1.1");
    mem.len = n;
    assert_false(fetcher_land_sink(&l, &mem, &err));
    assert_int_equal(err.code, MDB_SOURCE_E_PROTOCOL);
    mdb_source_item_t junk = {.data = "not dicom at all", .len = 16};
    assert_false(fetcher_land_sink(&l, &junk, &err));
    /* a UID that would escape the root is refused */
    n = make_dicom(buf, "1.2", "..", "1.2.3.6");
    mem.len = n;
    assert_false(fetcher_land_sink(&l, &mem, &err));
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_uid_valid), cmocka_unit_test(test_sink)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
