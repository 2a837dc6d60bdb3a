/* Unit tests of the reader + extractor on files built here byte by byte:
 * the same data set written as explicit VR little endian, implicit VR
 * little endian, explicit VR big endian, deflated, without preamble and
 * without meta header must give the same, exactly typed JSON (strings per
 * character set, DS/IS numbers, invalid numbers flagged, VM>1 arrays,
 * sequences, AT, ambiguous US/SS, private tags, promoted fields, binary left
 * out); Pixel Data is never read; every truncation of a valid file ends in a
 * reason, not a crash; refusals carry the right reason code; the header
 * bound holds; the event validates with mdb_msg's decoder; files from
 * tests/gen/gen_archive.py match its manifest; a file whose Pixel Data is
 * cut short (every cut, native and encapsulated) is extracted with an exact
 * "integrity" object; "Private Creator" lists the creator elements. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "mdb_dicom.h"
#include "mdb_extract.h"
#include "mdb_features.h"
#include "mdb_msg.h"

/* ---- a tiny DICOM writer ---- */

typedef struct {
    uint8_t *d;
    size_t n, cap;
    bool le, explicit_vr;
} bld_t;

static void put(bld_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->d = realloc(b->d, b->cap);
        assert_non_null(b->d);
    }
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void put16(bld_t *b, uint16_t v)
{
    uint8_t x[2] = {b->le ? (uint8_t)v : (uint8_t)(v >> 8), b->le ? (uint8_t)(v >> 8) : (uint8_t)v};
    put(b, x, 2);
}

static void put32(bld_t *b, uint32_t v)
{
    if (b->le) {
        put16(b, (uint16_t)v);
        put16(b, (uint16_t)(v >> 16));
    } else {
        put16(b, (uint16_t)(v >> 16));
        put16(b, (uint16_t)v);
    }
}

static bool long_vr(const char *vr)
{
    return strstr("OB OD OF OL OV OW SQ SV UC UN UR UT UV", vr) != NULL;
}

static void hdr(bld_t *b, uint32_t tag, const char *vr, uint32_t len)
{
    put16(b, (uint16_t)(tag >> 16));
    put16(b, (uint16_t)tag);
    if (b->explicit_vr && vr) {
        put(b, vr, 2);
        if (long_vr(vr)) {
            put16(b, 0);
            put32(b, len);
        } else
            put16(b, (uint16_t)len);
    } else
        put32(b, len);
}

static void elem(bld_t *b, uint32_t tag, const char *vr, const void *v, size_t len)
{
    hdr(b, tag, vr, (uint32_t)len);
    put(b, v, len);
}

static void str(bld_t *b, uint32_t tag, const char *vr, const char *s)
{
    size_t n = strlen(s);
    hdr(b, tag, vr, (uint32_t)(n + (n & 1)));
    put(b, s, n);
    if (n & 1)
        put(b, !strcmp(vr, "UI") ? "\0" : " ", 1);
}

static void us(bld_t *b, uint32_t tag, const char *vr, uint16_t v)
{
    hdr(b, tag, vr, 2);
    put16(b, v);
}

static void fd(bld_t *b, uint32_t tag, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    hdr(b, tag, "FD", 8);
    if (b->le) {
        put32(b, (uint32_t)bits);
        put32(b, (uint32_t)(bits >> 32));
    } else {
        put32(b, (uint32_t)(bits >> 32));
        put32(b, (uint32_t)bits);
    }
}

static void raw_tag(bld_t *b, uint32_t tag, uint32_t len)
{
    put16(b, (uint16_t)(tag >> 16));
    put16(b, (uint16_t)tag);
    put32(b, len);
}

/* Sequences/items: undefined length when undef, else patched afterwards. */
static size_t seq_begin(bld_t *b, uint32_t tag, bool undef)
{
    hdr(b, tag, "SQ", undef ? 0xFFFFFFFFu : 0);
    return b->n;
}

static void patch_len(bld_t *b, size_t start)
{
    uint32_t len = (uint32_t)(b->n - start);
    bld_t t = {.d = b->d + start - 4, .n = 0, .cap = 4, .le = b->le};
    put32(&t, len);
}

static void seq_end(bld_t *b, size_t start, bool undef)
{
    if (undef)
        raw_tag(b, 0xFFFEE0DD, 0);
    else
        patch_len(b, start);
}

static size_t item_begin(bld_t *b, bool undef)
{
    raw_tag(b, 0xFFFEE000, undef ? 0xFFFFFFFFu : 0);
    return b->n;
}

static void item_end(bld_t *b, size_t start, bool undef)
{
    if (undef)
        raw_tag(b, 0xFFFEE00D, 0);
    else
        patch_len(b, start);
}

#define STUDY_UID "1.2.826.0.1.3680043.10.1234.1"
#define SERIES_UID "1.2.826.0.1.3680043.10.1234.1.2"
#define SOP_UID "1.2.826.0.1.3680043.10.1234.1.2.3"

/* The reference data set. */
static void dataset(bld_t *b, bool undef_seq, bool with_sop)
{
    str(b, 0x00080005, "CS", "ISO_IR 100");
    str(b, 0x00080008, "CS", "ORIGINAL\\PRIMARY\\AXIAL");
    str(b, 0x00080016, "UI", "1.2.840.10008.5.1.4.1.1.2");
    if (with_sop)
        str(b, 0x00080018, "UI", SOP_UID);
    str(b, 0x00080020, "DA", "20200101");
    str(b, 0x00080050, "SH", "ACC123");
    str(b, 0x00080060, "CS", "CT");
    str(b, 0x00081030, "LO",
        "Thorax \xdc"
        "bersicht");
    size_t s = seq_begin(b, 0x00081032, undef_seq);
    size_t it = item_begin(b, undef_seq);
    str(b, 0x00080100, "SH", "CODE1");
    str(b, 0x00080104, "LO", "Meaning");
    item_end(b, it, undef_seq);
    it = item_begin(b, undef_seq);
    str(b, 0x00080005, "CS", "ISO_IR 192"); /* an item with its own character set */
    str(b, 0x00080104, "LO", "\xc3\xa9t\xc3\xa9");
    item_end(b, it, undef_seq);
    seq_end(b, s, undef_seq);
    str(b, 0x00090010, "LO", "ACME 1.0");
    str(b, 0x00091001, "LO", "secret");
    str(b, 0x00100010, "PN", "M\xfcller^Hans");
    str(b, 0x00100020, "LO", "PAT1");
    str(b, 0x00180050, "DS", "2.5");
    str(b, 0x00180060, "DS", "abc");
    str(b, 0x00181151, "IS", "1.0");
    str(b, 0x00181152, "IS", "1.5");
    fd(b, 0x00189305, 0.5);
    str(b, 0x0020000D, "UI", STUDY_UID);
    str(b, 0x0020000E, "UI", SERIES_UID);
    str(b, 0x00200011, "IS", "7");
    str(b, 0x00200013, "IS", "");
    str(b, 0x00200032, "DS", "-1\\2.5\\3e2");
    hdr(b, 0x00209165, "AT", 4);
    put16(b, 0x0020);
    put16(b, 0x0032);
    us(b, 0x00280010, "US", 16);
    us(b, 0x00280103, "US", 1);
    us(b, 0x00280120, "SS", 0xF830); /* PixelPaddingValue -2000, US or SS */
    str(b, 0x00290010, "LO", "PRIV 2");
    uint8_t ob[6] = {1, 2, 3, 4, 5, 6};
    elem(b, 0x00291010, "OB", ob, sizeof ob);
    /* Pixel Data claims far more than the file holds: it must never be read */
    hdr(b, 0x7FE00010, "OW", 0x7FFFFFF0u);
    put(b, "\x01\x02\x03\x04", 4);
}

static void meta(bld_t *f, const char *ts, const char *sop_class, bool preamble)
{
    bld_t m = {.le = true, .explicit_vr = true};
    elem(&m, 0x00020001, "OB", "\x00\x01", 2);
    str(&m, 0x00020002, "UI", sop_class);
    str(&m, 0x00020003, "UI", SOP_UID);
    str(&m, 0x00020010, "UI", ts);
    str(&m, 0x00020012, "UI", "1.2.826.0.1.3680043.10.1234.9");
    if (preamble) {
        uint8_t zero[128] = {0};
        put(f, zero, 128);
        put(f, "DICM", 4);
    }
    bld_t g = {.le = true, .explicit_vr = true};
    hdr(&g, 0x00020000, "UL", 4);
    put32(&g, (uint32_t)m.n);
    put(f, g.d, g.n);
    put(f, m.d, m.n);
    free(g.d);
    free(m.d);
}

typedef enum {
    ENC_EXPLICIT_LE,
    ENC_IMPLICIT_LE,
    ENC_EXPLICIT_BE,
    ENC_DEFLATED,
    ENC_NO_PREAMBLE,
    ENC_NO_META,
    ENC_UNDEF_SEQ,
    ENC_COUNT
} enc_t;

static bld_t make_file(enc_t enc)
{
    bld_t f = {.le = true, .explicit_vr = true};
    bld_t ds = {.le = enc != ENC_EXPLICIT_BE, .explicit_vr = enc != ENC_IMPLICIT_LE};
    dataset(&ds, enc == ENC_UNDEF_SEQ, true);
    const char *ts = enc == ENC_IMPLICIT_LE   ? "1.2.840.10008.1.2"
                     : enc == ENC_EXPLICIT_BE ? "1.2.840.10008.1.2.2"
                     : enc == ENC_DEFLATED    ? "1.2.840.10008.1.2.1.99"
                                              : "1.2.840.10008.1.2.1";
    if (enc != ENC_NO_META)
        meta(&f, ts, "1.2.840.10008.5.1.4.1.1.2", enc != ENC_NO_PREAMBLE);
    if (enc == ENC_DEFLATED) {
        z_stream z;
        memset(&z, 0, sizeof z);
        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
        uint8_t *out = malloc(ds.n + 1024);
        z.next_in = ds.d;
        z.avail_in = (uInt)ds.n;
        z.next_out = out;
        z.avail_out = (uInt)(ds.n + 1024);
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        put(&f, out, z.total_out);
        deflateEnd(&z);
        free(out);
    } else
        put(&f, ds.d, ds.n);
    free(ds.d);
    return f;
}

static mdb_features_t *test_features(void)
{
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_from_text(
        "unit", "StudyInstanceUID\nAccessionNumber\nStudyDescription\nPatientName\nProcedureCodeSequence\nStudyDate\n",
        "SeriesInstanceUID\nSliceThickness\nKVP\nSeriesNumber\nImagePositionPatient\n(0009,1001) LO\n",
        "SOPInstanceUID\nImageType\nXRayTubeCurrent\nExposure\nInstanceNumber\nRows\nPixelPaddingValue\n"
        "RevolutionTime\nDimensionIndexPointer\n(0029,1010)\n",
        "study AccessionNumber accession_number\nseries SliceThickness slice_thickness\n"
        "instance ImageType image_type\ninstance PatientID patient_id\n",
        &err);
    assert_non_null(fs);
    return fs;
}

static const char *EXPECT_STUDY =
    "{\"StudyDate\":\"20200101\",\"AccessionNumber\":\"ACC123\",\"StudyDescription\":\"Thorax \\u00dcbersicht\","
    "\"ProcedureCodeSequence\":[{\"CodeValue\":\"CODE1\",\"CodeMeaning\":\"Meaning\"},"
    "{\"SpecificCharacterSet\":\"ISO_IR 192\",\"CodeMeaning\":\"\\u00e9t\\u00e9\"}],"
    "\"PatientName\":\"M\\u00fcller^Hans\",\"StudyInstanceUID\":\"" STUDY_UID "\","
    "\"promoted\":{\"accession_number\":\"ACC123\"}}";
static const char *EXPECT_SERIES =
    "{\"00091001\":\"secret\",\"SliceThickness\":2.5,\"KVP\":\"abc\",\"SeriesInstanceUID\":\"" SERIES_UID "\","
    "\"SeriesNumber\":7,\"ImagePositionPatient\":[-1.0,2.5,300.0],\"StudyInstanceUID\":\"" STUDY_UID "\","
    "\"promoted\":{\"slice_thickness\":2.5},\"_invalid\":[\"KVP\"]}";
static const char *EXPECT_INSTANCE =
    "{\"ImageType\":[\"ORIGINAL\",\"PRIMARY\",\"AXIAL\"],\"SOPInstanceUID\":\"" SOP_UID "\","
    "\"XRayTubeCurrent\":1,\"Exposure\":\"1.5\",\"RevolutionTime\":0.5,\"InstanceNumber\":null,"
    "\"DimensionIndexPointer\":\"00200032\",\"Rows\":16,\"PixelPaddingValue\":-2000,"
    "\"promoted\":{\"image_type\":[\"ORIGINAL\",\"PRIMARY\",\"AXIAL\"],\"patient_id\":\"PAT1\"},"
    "\"_invalid\":[\"Exposure\"]}";

static void assert_json(json_t *got, const char *want_text, const char *what)
{
    json_error_t je;
    json_t *want = json_loads(want_text, 0, &je);
    if (!want)
        fail_msg("bad expected JSON for %s: %s", what, je.text);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_SORT_KEYS);
        print_error("%s:\n got  %s\n want %s\n", what, g, w);
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

static void test_encodings(void **state)
{
    (void)state;
    static const char *names[] = {"explicit LE",
                                  "implicit LE",
                                  "explicit BE",
                                  "deflated",
                                  "no preamble",
                                  "no meta",
                                  "undefined-length sequences"};
    mdb_features_t *fs = test_features();
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    for (int enc = 0; enc < ENC_COUNT; enc++) {
        bld_t f = make_file((enc_t)enc);
        mdb_extract_result_t r;
        mdb_error_t err = {0};
        if (!mdb_extract_buffer(ctx, fs, f.d, f.n, NULL, &r, &err))
            fail_msg("%s: %s", names[enc], err.message);
        char what[64];
        snprintf(what, sizeof what, "%s study", names[enc]);
        assert_json(r.study, EXPECT_STUDY, what);
        /* in implicit VR the private tag gets its VR from the list's hint */
        snprintf(what, sizeof what, "%s series", names[enc]);
        assert_json(r.series, EXPECT_SERIES, what);
        snprintf(what, sizeof what, "%s instance", names[enc]);
        assert_json(r.instance, EXPECT_INSTANCE, what);
        assert_int_equal(r.file_size, (int64_t)f.n);
        mdb_extract_result_clear(&r);
        free(f.d);
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
}

static mdb_error_t extract_bytes(const void *d, size_t n, size_t max_header, const mdb_features_t *fs,
                                 mdb_extract_result_t *r)
{
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(max_header);
    mdb_error_t err = {0};
    mdb_extract_result_t tmp;
    if (!r)
        r = &tmp;
    if (mdb_extract_buffer(ctx, fs, d, n, NULL, r, &err))
        err.code = MDB_DICOM_EOK;
    if (r == &tmp)
        mdb_extract_result_clear(r);
    mdb_extract_ctx_destroy(ctx);
    return err;
}

/* Every prefix of every encoding: a result or a precise reason, never a crash. */
static void test_every_truncation(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    for (int enc = 0; enc < ENC_COUNT; enc++) {
        bld_t f = make_file((enc_t)enc);
        size_t ok = 0, refused = 0;
        for (size_t cut = 1; cut < f.n; cut++) {
            mdb_extract_result_t r;
            mdb_error_t err = {0};
            if (mdb_extract_buffer(ctx, fs, f.d, cut, NULL, &r, &err)) {
                ok++;
                assert_non_null(json_object_get(r.instance, "SOPInstanceUID"));
                mdb_extract_result_clear(&r);
                continue;
            }
            refused++;
            assert_int_equal(err.domain, MDB_ERR_DICOM);
            assert_true(err.code == MDB_DICOM_ETRUNCATED || err.code == MDB_DICOM_ENOTDICOM ||
                        err.code == MDB_DICOM_EMALFORMED || err.code == MDB_DICOM_EMISSINGUID);
            assert_true(err.message[0] != '\0');
        }
        /* only cuts at the Pixel Data tag or later succeed (and a few at element
         * boundaries that still hold all three UIDs) */
        assert_true(ok >= 4 && ok < 60);
        assert_true(refused > f.n / 2);
        free(f.d);
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
}

static void test_refusals(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    mdb_error_t err;
    err = extract_bytes("", 0, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_EEMPTY);
    err = extract_bytes("hello, this is a text file\n", 27, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_ENOTDICOM);
    err = extract_bytes("<?xml version=\"1.0\"?><LidcReadMessage/>", 39, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_ENOTDICOM);
    /* DICM followed by junk */
    uint8_t junk[400];
    memset(junk, 0, 128);
    memcpy(junk + 128, "DICM", 4);
    unsigned seed = 7;
    for (size_t i = 132; i < sizeof junk; i++)
        junk[i] = (uint8_t)(rand_r(&seed) | 0x80);
    err = extract_bytes(junk, sizeof junk, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_EMALFORMED);
    /* a DICOMDIR */
    bld_t f = {.le = true, .explicit_vr = true};
    meta(&f, "1.2.840.10008.1.2.1", "1.2.840.10008.1.3.10", true);
    str(&f, 0x00041130, "CS", "DIR");
    err = extract_bytes(f.d, f.n, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_EDICOMDIR);
    assert_string_equal(mdb_dicom_reason_name(err.code), "dicomdir");
    free(f.d);
    /* no SOP Instance UID */
    bld_t g = {.le = true, .explicit_vr = true};
    meta(&g, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", true);
    bld_t ds = {.le = true, .explicit_vr = true};
    dataset(&ds, false, false);
    put(&g, ds.d, ds.n);
    err = extract_bytes(g.d, g.n, 0, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_EMISSINGUID);
    assert_non_null(strstr(err.message, "SOPInstanceUID"));
    free(ds.d);
    free(g.d);
    mdb_features_destroy(fs);
}

/* A header bigger than max_header_bytes is refused; Pixel Data is never
 * counted, whatever its length. */
static void test_header_bound(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    bld_t f = {.le = true, .explicit_vr = true};
    meta(&f, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", true);
    bld_t ds = {.le = true, .explicit_vr = true};
    str(&ds, 0x00080018, "UI", SOP_UID);
    uint8_t *blob = calloc(1, 200000);
    elem(&ds, 0x00091001, "OB", blob, 200000); /* 200 kB of private bulk data before the pixels */
    str(&ds, 0x0020000D, "UI", STUDY_UID);
    str(&ds, 0x0020000E, "UI", SERIES_UID);
    elem(&ds, 0x7FE00010, "OW", blob, 100000);
    put(&f, ds.d, ds.n);
    mdb_error_t err = extract_bytes(f.d, f.n, 64 * 1024, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_ETOOLARGE);
    assert_string_equal(mdb_dicom_reason_name(err.code), "header_too_large");
    err = extract_bytes(f.d, f.n, 220 * 1024, fs, NULL);
    assert_int_equal(err.code, MDB_DICOM_EOK);

    /* through a file: the incremental read grows to the header and stops */
    char path[] = "/tmp/mdb_test_extract_XXXXXX";
    int fdd = mkstemp(path);
    assert_true(fdd >= 0);
    assert_int_equal(write(fdd, f.d, f.n), (ssize_t)f.n);
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(220 * 1024);
    mdb_extract_result_t r;
    assert_true(mdb_extract_fd(ctx, fs, fdd, NULL, &r, &err));
    assert_int_equal(r.file_size, (int64_t)f.n);
    mdb_extract_result_clear(&r);
    mdb_extract_ctx_destroy(ctx);
    ctx = mdb_extract_ctx_new(100 * 1024);
    assert_false(mdb_extract_fd(ctx, fs, fdd, NULL, &r, &err));
    assert_int_equal(err.code, MDB_DICOM_ETOOLARGE);
    mdb_extract_ctx_destroy(ctx);
    close(fdd);
    unlink(path);
    free(blob);
    free(ds.d);
    free(f.d);
    mdb_features_destroy(fs);
}

/* One context for many files of very different sizes: buffers are reused
 * and given back after a huge header, results stay exact. */
static void test_ctx_reuse(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    bld_t small = make_file(ENC_EXPLICIT_LE);
    bld_t big = {.le = true, .explicit_vr = true};
    meta(&big, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", true);
    bld_t ds = {.le = true, .explicit_vr = true};
    str(&ds, 0x00080018, "UI", SOP_UID);
    uint8_t *blob = calloc(1, 3 << 20);
    elem(&ds, 0x00091001, "OB", blob, 3 << 20);
    str(&ds, 0x0020000D, "UI", STUDY_UID);
    str(&ds, 0x0020000E, "UI", SERIES_UID);
    put(&big, ds.d, ds.n);
    char ps[] = "/tmp/mdb_test_reuse_s_XXXXXX", pb[] = "/tmp/mdb_test_reuse_b_XXXXXX";
    int fs_ = mkstemp(ps), fb = mkstemp(pb);
    assert_int_equal(write(fs_, small.d, small.n), (ssize_t)small.n);
    assert_int_equal(write(fb, big.d, big.n), (ssize_t)big.n);
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(8 << 20);
    for (int round = 0; round < 3; round++) {
        int fds[3] = {fs_, fb, fs_};
        for (int k = 0; k < 3; k++) {
            const char *ev = NULL, *key = NULL;
            size_t len = 0;
            mdb_error_t err = {0};
            if (!mdb_extract_fd_event(ctx, fs, fds[k], NULL, "j", "p", "unit", &ev, &len, &key, &err))
                fail_msg("round %d file %d: %s", round, k, err.message);
            assert_string_equal(key, STUDY_UID);
            json_error_t je;
            json_t *o = json_loadb(ev, len, JSON_REJECT_DUPLICATES, &je);
            assert_non_null(o);
            if (fds[k] == fs_)
                assert_json(json_object_get(o, "instance"), EXPECT_INSTANCE, "reused context");
            json_decref(o);
        }
    }
    mdb_extract_ctx_destroy(ctx);
    close(fs_);
    close(fb);
    unlink(ps);
    unlink(pb);
    free(blob);
    free(ds.d);
    free(big.d);
    free(small.d);
    mdb_features_destroy(fs);
}

static void nest(bld_t *b, int depth)
{
    size_t s = seq_begin(b, 0x00081140, true);
    size_t it = item_begin(b, true);
    if (depth > 1)
        nest(b, depth - 1);
    else
        str(b, 0x00081150, "UI", "1.2.3");
    item_end(b, it, true);
    seq_end(b, s, true);
}

static void test_nesting(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_from_text("n", "*\n", "", "", NULL, &err);
    for (int depth = 60; depth <= 200; depth += 140) {
        bld_t f = {.le = true, .explicit_vr = true};
        meta(&f, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", true);
        bld_t ds = {.le = true, .explicit_vr = true};
        str(&ds, 0x00080018, "UI", SOP_UID);
        nest(&ds, depth);
        str(&ds, 0x0020000D, "UI", STUDY_UID);
        str(&ds, 0x0020000E, "UI", SERIES_UID);
        put(&f, ds.d, ds.n);
        mdb_extract_result_t r;
        err = extract_bytes(f.d, f.n, 0, fs, &r);
        if (depth == 60) {
            assert_int_equal(err.code, MDB_DICOM_EOK);
            json_t *v = json_object_get(r.study, "ReferencedImageSequence");
            int seen = 0;
            while (json_is_array(v)) {
                seen++;
                v = json_object_get(json_array_get(v, 0), "ReferencedImageSequence");
            }
            assert_int_equal(seen, 60);
            mdb_extract_result_clear(&r);
        } else {
            assert_int_equal(err.code, MDB_DICOM_EMALFORMED);
            assert_non_null(strstr(err.message, "nested too deeply"));
        }
        free(ds.d);
        free(f.d);
    }
    mdb_features_destroy(fs);
}

/* An archive root that lies about its character set, fixed by the override. */
static void test_charset_override(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_from_text("o", "PatientName\n", "", "", NULL, &err);
    bld_t f = {.le = true, .explicit_vr = true};
    meta(&f, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", true);
    str(&f, 0x00080005, "CS", "ISO_IR 100");
    str(&f, 0x00080018, "UI", SOP_UID);
    str(&f, 0x00100010, "PN", "\xc8\xe2\xe0\xed\xee\xe2^\xc8\xe2\xe0\xed"); /* cp1251 */
    str(&f, 0x0020000D, "UI", STUDY_UID);
    str(&f, 0x0020000E, "UI", SERIES_UID);
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    mdb_extract_result_t r;
    assert_true(mdb_extract_buffer(ctx, fs, f.d, f.n, NULL, &r, &err));
    assert_string_equal(json_string_value(json_object_get(r.study, "PatientName")), "Èâàíîâ^Èâàí");
    mdb_extract_result_clear(&r);
    assert_true(mdb_extract_buffer(ctx, fs, f.d, f.n, "CP1251", &r, &err));
    assert_string_equal(json_string_value(json_object_get(r.study, "PatientName")), "Иванов^Иван");
    assert_string_equal(json_string_value(json_object_get(r.dicom, "specific_character_set")), "CP1251");
    mdb_extract_result_clear(&r);
    mdb_extract_ctx_destroy(ctx);
    free(f.d);
    mdb_features_destroy(fs);
}

/* ---- truncated Pixel Data: catalogued and flagged ---- */

/* A small image: the three UIDs, then Pixel Data of 64 bytes (native) or
 * an empty offset table and two fragments of 40 and 24 bytes plus the
 * delimiter (encapsulated). *pix: offset of the Pixel Data tag. */
static bld_t pixel_file(bool le, bool explicit_vr, bool encapsulated, size_t *pix)
{
    bld_t f = {.le = true, .explicit_vr = true};
    const char *ts = encapsulated   ? "1.2.840.10008.1.2.4.70"
                     : !explicit_vr ? "1.2.840.10008.1.2"
                     : !le          ? "1.2.840.10008.1.2.2"
                                    : "1.2.840.10008.1.2.1";
    meta(&f, ts, "1.2.840.10008.5.1.4.1.1.2", true);
    bld_t ds = {.le = le, .explicit_vr = explicit_vr};
    str(&ds, 0x00080018, "UI", SOP_UID);
    str(&ds, 0x0020000D, "UI", STUDY_UID);
    str(&ds, 0x0020000E, "UI", SERIES_UID);
    us(&ds, 0x00280010, "US", 4);
    *pix = f.n + ds.n;
    uint8_t px[64];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i + 1);
    if (!encapsulated) {
        elem(&ds, 0x7FE00010, "OW", px, sizeof px);
    } else {
        hdr(&ds, 0x7FE00010, "OB", 0xFFFFFFFFu);
        raw_tag(&ds, 0xFFFEE000, 0); /* basic offset table, empty */
        raw_tag(&ds, 0xFFFEE000, 40);
        put(&ds, px, 40);
        raw_tag(&ds, 0xFFFEE000, 24);
        put(&ds, px + 40, 24);
        raw_tag(&ds, 0xFFFEE0DD, 0);
    }
    put(&f, ds.d, ds.n);
    free(ds.d);
    return f;
}

static json_int_t integ_num(const json_t *integ, const char *k)
{
    const json_t *v = json_object_get(integ, k);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* Every cut from the Pixel Data tag on: the header is whole, so the file is
 * extracted, and the integrity object says how much of the value is there.
 * The whole file has none. */
static void test_pixel_truncation(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    static const struct {
        bool le, ex, encap;
        const char *name;
    } kinds[] = {{true, true, false, "explicit LE"},
                 {true, false, false, "implicit LE"},
                 {false, true, false, "explicit BE"},
                 {true, true, true, "encapsulated"}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t pix = 0;
        bld_t f = pixel_file(kinds[k].le, kinds[k].ex, kinds[k].encap, &pix);
        size_t hdr_len = kinds[k].ex ? 12 : 8, vpos = pix + hdr_len;
        mdb_extract_result_t r;
        mdb_error_t err = {0};
        /* whole: nothing to say */
        if (!mdb_extract_buffer(ctx, fs, f.d, f.n, NULL, &r, &err))
            fail_msg("%s whole: %s", kinds[k].name, err.message);
        assert_null(r.integrity);
        assert_null(r.integrity_json);
        char *text = mdb_extract_event_text(&r, "j", "/p", "unit", NULL);
        assert_null(strstr(text, "integrity"));
        free(text);
        mdb_extract_result_clear(&r);
        for (size_t cut = pix + 1; cut < f.n; cut++) {
            if (!mdb_extract_buffer(ctx, fs, f.d, cut, NULL, &r, &err))
                fail_msg("%s cut at %zu (Pixel Data at %zu): refused: %s", kinds[k].name, cut, pix, err.message);
            assert_string_equal(json_string_value(json_object_get(r.instance, "SOPInstanceUID")), SOP_UID);
            const json_t *in = r.integrity;
            if (!in)
                fail_msg("%s cut at %zu: no integrity object", kinds[k].name, cut);
            assert_true(json_is_true(json_object_get(in, "pixel_data_truncated")));
            json_int_t exp = integ_num(in, "pixel_data_bytes_expected"),
                       got = integ_num(in, "pixel_data_bytes_present");
            if (cut < vpos) { /* inside the element's own header */
                assert_int_equal(exp, -1);
                assert_int_equal(got, 0);
            } else if (!kinds[k].encap) {
                assert_int_equal(exp, 64);
                assert_int_equal(got, (json_int_t)(cut - vpos));
            } else {
                /* fragments: offset table item [0,8), item 1 [8,56), item 2 [56,88),
                 * delimiter [88,96): expected runs to the end of what the cut falls in */
                size_t rel = cut - vpos;
                json_int_t want = rel < 8 ? 8 : rel < 16 ? 16 : rel < 56 ? 56 : rel < 64 ? 64 : rel < 88 ? 88 : 96;
                assert_int_equal(exp, want);
                assert_int_equal(got, (json_int_t)rel);
                assert_true(json_is_true(json_object_get(in, "pixel_data_encapsulated")));
            }
            assert_true(got < exp || exp == -1);
            /* the event carries it, and still decodes */
            text = mdb_extract_event_text(&r, "j", "/p", "unit", NULL);
            json_error_t je;
            json_t *ev = json_loads(text, JSON_REJECT_DUPLICATES, &je);
            assert_non_null(ev);
            assert_true(json_equal(json_object_get(ev, "integrity"), in));
            mdb_instance_msg_t m;
            if (!mdb_msg_instance_decode(text, strlen(text), 1 << 20, &m, &err))
                fail_msg("decode: %s", err.message);
            mdb_msg_instance_clear(&m);
            json_decref(ev);
            free(text);
            mdb_extract_result_clear(&r);
        }
        /* a cut before the Pixel Data tag loses no pixel: a header-only file */
        if (!mdb_extract_buffer(ctx, fs, f.d, pix, NULL, &r, &err))
            fail_msg("%s cut at the tag: %s", kinds[k].name, err.message);
        assert_null(r.integrity);
        mdb_extract_result_clear(&r);
        /* a cut inside the header is still refused */
        mdb_error_t e2 = extract_bytes(f.d, pix - 3, 0, fs, NULL);
        assert_int_equal(e2.domain, MDB_ERR_DICOM);
        assert_int_equal(e2.code, MDB_DICOM_ETRUNCATED);
        free(f.d);
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
}

/* The worker's path (fd, pread past the header buffer, event text): the
 * flag rides on the event; a whole file's event has none. */
static void test_pixel_truncation_fd(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    size_t pix = 0;
    bld_t f = pixel_file(true, true, false, &pix);
    /* 200 kB of pixels, so the value lies far past the first read */
    bld_t big = {.le = true, .explicit_vr = true};
    put(&big, f.d, pix);
    uint8_t *blob = calloc(1, 200000);
    elem(&big, 0x7FE00010, "OW", blob, 200000);
    bld_t enc = pixel_file(true, true, true, &pix);
    struct {
        const uint8_t *d;
        size_t n;
        const char *want; /* integrity text, NULL for none */
    } cases[] = {
        {big.d, big.n, NULL},
        {big.d, big.n - 150000,
         "{\"pixel_data_truncated\":true,\"pixel_data_bytes_expected\":200000,"
         "\"pixel_data_bytes_present\":50000}"},
        {enc.d, enc.n, NULL},
        {enc.d, enc.n - 20,
         "{\"pixel_data_truncated\":true,\"pixel_data_bytes_expected\":88,"
         "\"pixel_data_bytes_present\":76,\"pixel_data_encapsulated\":true}"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[] = "/tmp/mdb_test_pixels_XXXXXX";
        int fdd = mkstemp(path);
        assert_true(fdd >= 0);
        assert_int_equal(write(fdd, cases[k].d, cases[k].n), (ssize_t)cases[k].n);
        const char *ev = NULL, *key = NULL;
        size_t len = 0;
        mdb_error_t err = {0};
        if (!mdb_extract_fd_event(ctx, fs, fdd, NULL, "j", "p", "unit", &ev, &len, &key, &err))
            fail_msg("case %zu: %s", k, err.message);
        json_error_t je;
        json_t *o = json_loadb(ev, len, JSON_REJECT_DUPLICATES, &je);
        assert_non_null(o);
        if (!cases[k].want)
            assert_null(json_object_get(o, "integrity"));
        else
            assert_json(json_object_get(o, "integrity"), cases[k].want, "integrity");
        json_decref(o);
        /* the tree path agrees */
        mdb_extract_result_t r;
        assert_true(mdb_extract_fd(ctx, fs, fdd, NULL, &r, &err));
        if (!cases[k].want)
            assert_null(r.integrity);
        else
            assert_json(r.integrity, cases[k].want, "integrity (tree)");
        mdb_extract_result_clear(&r);
        close(fdd);
        unlink(path);
    }
    free(blob);
    free(big.d);
    free(enc.d);
    free(f.d);
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
}

/* "Private Creator" in a list: every (gggg,0010-00FF) of an odd group,
 * keyed "GGGGEEEE", whatever the encoding; the private data elements
 * themselves only when listed. */
static void test_private_creators(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_from_text("pc", "StudyInstanceUID\n", "SeriesInstanceUID\n",
                                                "SOPInstanceUID\nPrivate Creator\n", NULL, &err);
    assert_non_null(fs);
    assert_int_equal(mdb_features_warning_count(fs), 0);
    for (int enc = 0; enc < ENC_COUNT; enc++) {
        bld_t f = make_file((enc_t)enc);
        mdb_extract_result_t r;
        if (extract_bytes(f.d, f.n, 0, fs, &r).code != MDB_DICOM_EOK)
            fail_msg("encoding %d refused", enc);
        assert_json(r.instance,
                    "{\"SOPInstanceUID\":\"" SOP_UID
                    "\",\"00090010\":\"ACME 1.0\",\"00290010\":\"PRIV 2\",\"promoted\":{}}",
                    "private creators");
        assert_null(json_object_get(r.study, "00090010"));
        mdb_extract_result_clear(&r);
        free(f.d);
    }
    mdb_features_destroy(fs);
}

/* The event validates with the instance decoder the linker uses. */
static void test_event_roundtrip(void **state)
{
    (void)state;
    mdb_features_t *fs = test_features();
    bld_t f = make_file(ENC_EXPLICIT_LE);
    mdb_extract_result_t r;
    mdb_error_t err = extract_bytes(f.d, f.n, 0, fs, &r);
    assert_int_equal(err.code, MDB_DICOM_EOK);
    json_t *ev = mdb_extract_event(&r, "job-1", "/archive/a b/1-001.dcm", "unit");
    assert_non_null(ev);
    char *text = json_dumps(ev, JSON_COMPACT);
    mdb_instance_msg_t m;
    if (!mdb_msg_instance_decode(text, strlen(text), 1 << 20, &m, &err))
        fail_msg("decode: %s", err.message);
    assert_string_equal(m.job_id, "job-1");
    assert_string_equal(m.path, "/archive/a b/1-001.dcm");
    assert_string_equal(mdb_msg_instance_study_uid(&m), STUDY_UID);
    assert_string_equal(mdb_msg_instance_series_uid(&m), SERIES_UID);
    assert_string_equal(mdb_msg_instance_sop_uid(&m), SOP_UID);
    assert_int_equal(m.file_size, (int64_t)f.n);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "dicom"), "transfer_syntax")),
                        "1.2.840.10008.1.2.1");
    assert_string_equal(json_string_value(json_object_get(ev, "feature_set")), "unit");
    mdb_msg_instance_clear(&m);
    free(text);
    json_decref(ev);
    mdb_extract_result_clear(&r);
    free(f.d);
    mdb_features_destroy(fs);
}

static void test_read_tags(void **state)
{
    (void)state;
    bld_t f = make_file(ENC_IMPLICIT_LE);
    char path[] = "/tmp/mdb_test_tags_XXXXXX";
    int fdd = mkstemp(path);
    assert_int_equal(write(fdd, f.d, f.n), (ssize_t)f.n);
    close(fdd);
    uint32_t tags[] = {0x00080050, 0x00100010, 0x0020000D, 0x00280010, 0x00200032, 0x00400275};
    char *vals[6];
    mdb_error_t err = {0};
    assert_true(mdb_dicom_read_tags(path, tags, 6, vals, &err));
    assert_string_equal(vals[0], "ACC123");
    assert_string_equal(vals[1], "Müller^Hans");
    assert_string_equal(vals[2], STUDY_UID);
    assert_string_equal(vals[3], "16");
    assert_string_equal(vals[4], "-1\\2.5\\3e2"); /* as stored */
    assert_null(vals[5]);
    for (int i = 0; i < 6; i++)
        free(vals[i]);
    unlink(path);
    assert_false(mdb_dicom_read_tags("/nonexistent/x.dcm", tags, 6, vals, &err));
    assert_int_equal(err.code, MDB_DICOM_EUNREADABLE);
    for (int i = 0; i < 6; i++)
        assert_null(vals[i]);
    free(f.d);
}

/* Files written by the synthetic archive generator match its manifest. */
static void test_generated_archive(void **state)
{
    (void)state;
    const char *src = getenv("MDB_SOURCE_DIR");
    char tmpl[] = "/tmp/mdb_test_extract_gen_XXXXXX";
    char *dir = mkdtemp(tmpl);
    char cmd[8192], path[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/gen/gen_archive.py' --out '%s' --patients 6 --seed 99 --small --slices 3:5 "
             "--jobs 1 >/dev/null",
             src && *src ? src : MDB_SOURCE_DIR, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    json_error_t je;
    json_t *man = json_load_file(path, 0, &je);
    assert_non_null(man);
    snprintf(path, sizeof path, "%s/conf", src && *src ? src : MDB_SOURCE_DIR);
    mdb_error_t err = {0};
    mdb_features_t *fs = mdb_features_load(path, "default", NULL, &err);
    assert_non_null(fs);
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    size_t i, n = 0;
    json_t *inst;
    json_array_foreach(json_object_get(man, "instances"), i, inst)
    {
        mdb_extract_result_t r;
        const char *p = json_string_value(json_object_get(inst, "path"));
        if (!mdb_extract_path(ctx, fs, p, NULL, &r, &err))
            fail_msg("%s: %s", p, err.message);
        assert_string_equal(json_string_value(json_object_get(r.instance, "SOPInstanceUID")),
                            json_string_value(json_object_get(inst, "sop_uid")));
        assert_string_equal(json_string_value(json_object_get(r.series, "SeriesInstanceUID")),
                            json_string_value(json_object_get(inst, "series_uid")));
        assert_string_equal(json_string_value(json_object_get(r.study, "StudyInstanceUID")),
                            json_string_value(json_object_get(inst, "study_uid")));
        assert_int_equal(
            json_integer_value(json_object_get(json_object_get(r.instance, "promoted"), "instance_number")),
            json_integer_value(json_object_get(inst, "instance_number")));
        mdb_extract_result_clear(&r);
        n++;
    }
    assert_true(n >= 6 * 3);
    json_t *x;
    json_array_foreach(json_object_get(man, "xml_files"), i, x)
    {
        mdb_extract_result_t r;
        assert_false(mdb_extract_path(ctx, fs, json_string_value(json_object_get(x, "path")), NULL, &r, &err));
        assert_int_equal(err.code, MDB_DICOM_ENOTDICOM);
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
    json_decref(man);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encodings),         cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_refusals),          cmocka_unit_test(test_header_bound),
        cmocka_unit_test(test_nesting),           cmocka_unit_test(test_charset_override),
        cmocka_unit_test(test_event_roundtrip),   cmocka_unit_test(test_read_tags),
        cmocka_unit_test(test_generated_archive), cmocka_unit_test(test_ctx_reuse),
        cmocka_unit_test(test_pixel_truncation),  cmocka_unit_test(test_pixel_truncation_fd),
        cmocka_unit_test(test_private_creators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
