/* Unit tests of mdb_features: entry forms (keywords, retired keywords,
 * (gggg,eeee), gggg,eeee, ggggeeee, private tags with a VR, '*'), comments
 * and duplicates, unresolvable entries kept as warnings (never fatal), the
 * promoted map and its errors, the slot table the extractor uses, the
 * shipped conf/ defaults (the reference lists, oddities included), and the
 * registry of named sets (inheritance, names, first-use flag). */
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

#include "mdb_dicom.h"
#include "mdb_features.h"

static const char *source_dir(void)
{
    const char *s = getenv("MDB_SOURCE_DIR");
    return s && *s ? s : MDB_SOURCE_DIR;
}

static bool has_warning(const mdb_features_t *fs, const char *needle)
{
    for (size_t i = 0; i < mdb_features_warning_count(fs); i++)
        if (strstr(mdb_features_warning(fs, i), needle))
            return true;
    return false;
}

static void test_resolve(void **state)
{
    (void)state;
    uint32_t tag = 0;
    assert_true(mdb_features_resolve("PatientName", &tag));
    assert_int_equal(tag, 0x00100010);
    assert_true(mdb_features_resolve("(0010,0020)", &tag));
    assert_int_equal(tag, 0x00100020);
    assert_true(mdb_features_resolve("0018,0050", &tag));
    assert_int_equal(tag, 0x00180050);
    assert_true(mdb_features_resolve("7fe00010", &tag));
    assert_int_equal(tag, 0x7FE00010);
    assert_true(mdb_features_resolve("(0009,1001)", &tag));
    assert_int_equal(tag, 0x00091001);
    /* retired keywords of the reference lists */
    assert_true(mdb_features_resolve("ImagePosition", &tag));
    assert_int_equal(tag, 0x00200030);
    assert_true(mdb_features_resolve("ImageOrientation", &tag));
    assert_int_equal(tag, 0x00200035);
    assert_true(mdb_features_resolve("CurveDate", &tag));
    assert_int_equal(tag, 0x00080025);
    assert_true(mdb_features_resolve("UID", &tag));
    assert_int_equal(tag, 0x0040A124);
    assert_false(mdb_features_resolve("Private Creator", &tag)); /* not a tag: a list request */
    assert_true(mdb_features_is_private_creator_entry("Private Creator"));
    assert_true(mdb_features_is_private_creator_entry("PrivateCreator"));
    assert_true(mdb_features_is_private_creator_entry("private  creator"));
    assert_false(mdb_features_is_private_creator_entry("Private Creators"));
    assert_false(mdb_features_is_private_creator_entry("Private"));
    assert_false(mdb_features_is_private_creator_entry(""));
    assert_false(mdb_features_resolve("patientname", &tag));
    assert_false(mdb_features_resolve("(zzzz,0010)", &tag));
    assert_false(mdb_features_resolve("0010001", &tag));
    assert_false(mdb_features_resolve("", &tag));
    /* the dictionary: keyword and tag round-trip, ambiguous VRs split */
    const mdb_dicom_dict_entry_t *e = mdb_dicom_dict_by_tag(0x00280120);
    assert_non_null(e);
    assert_string_equal(e->keyword, "PixelPaddingValue");
    assert_string_equal(e->vr, "US");
    assert_string_equal(e->vr_alt, "SS");
    e = mdb_dicom_dict_by_tag(0x60023000); /* overlay data of group 6002 folds to 6000 */
    assert_non_null(e);
    assert_string_equal(e->keyword, "OverlayData");
    assert_true(mdb_dicom_dict_size() > 4000);
    assert_string_equal(mdb_dicom_private_vr(0x00091001, "GEMS_IDEN_01"), "LO");
}

static void test_lists(void **state)
{
    (void)state;
    mdb_error_t err = {0};
    const char *study = "# study level\n"
                        "StudyInstanceUID\n"
                        "  AccessionNumber   # trailing comment\n"
                        "\n"
                        "(0010,0010)\n"
                        "00100010\n" /* duplicate of PatientName */
                        "Private Creator\n"
                        "NotAKeyword\n";
    const char *series = "*\nSeriesNumber\n(0009,1001) LO\n";
    const char *instance = "SOPInstanceUID\n7FE00010\n(FFFE,E000)\n";
    const char *promoted = "study AccessionNumber accession_number\n"
                           "series SliceThickness slice_thickness\n"
                           "instance ImagePosition image_position\n"
                           "study StudyDate study_date\n"
                           "galaxy StudyDate x\n"
                           "study NoSuchKeyword y\n"
                           "study StudyDate Bad-Field\n"
                           "study StudyTime study_date\n"
                           "series SliceThickness\n";
    mdb_features_t *fs = mdb_features_from_text("t", study, series, instance, promoted, &err);
    assert_non_null(fs);
    assert_string_equal(mdb_features_name(fs), "t");
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_STUDY), 3);
    assert_string_equal(mdb_features_get(fs, MDB_LEVEL_STUDY, 0)->keyword, "StudyInstanceUID");
    assert_string_equal(mdb_features_get(fs, MDB_LEVEL_STUDY, 2)->keyword, "PatientName");
    assert_false(mdb_features_star(fs, MDB_LEVEL_STUDY));
    assert_true(mdb_features_star(fs, MDB_LEVEL_SERIES));
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_SERIES), 2);
    const mdb_feature_t *priv = mdb_features_get(fs, MDB_LEVEL_SERIES, 1);
    assert_int_equal(priv->tag, 0x00091001);
    assert_string_equal(priv->keyword, "00091001");
    assert_string_equal(priv->vr, "LO");
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_INSTANCE), 1);
    assert_false(has_warning(fs, "Private Creator")); /* understood: no warning */
    assert_true(mdb_features_private_creators(fs, MDB_LEVEL_STUDY));
    assert_false(mdb_features_private_creators(fs, MDB_LEVEL_SERIES));
    assert_false(mdb_features_private_creators(fs, MDB_LEVEL_INSTANCE));
    assert_true(has_warning(fs, "StudyFeatures.txt:8: 'NotAKeyword'"));
    assert_true(has_warning(fs, "'7FE00010' is not an extractable attribute"));
    assert_true(has_warning(fs, "unknown level 'galaxy'"));
    assert_true(has_warning(fs, "'NoSuchKeyword' is not a DICOM keyword"));
    assert_true(has_warning(fs, "field 'Bad-Field' must be snake_case"));
    assert_true(has_warning(fs, "field 'study_date' already promoted"));
    assert_true(has_warning(fs, "expected '<level> <keyword> <field>'"));
    assert_int_equal(mdb_features_promoted_count(fs), 4);

    /* the slot table */
    const mdb_feature_slot_t *s = mdb_features_lookup(fs, 0x00080050);
    assert_non_null(s);
    assert_int_equal(s->levels, 1u << MDB_LEVEL_STUDY);
    assert_int_equal(s->promoted, 0);
    assert_string_equal(mdb_features_promoted(fs, (size_t)s->promoted)->field, "accession_number");
    assert_int_equal(mdb_features_promoted_next(fs, s->promoted), -1);
    s = mdb_features_lookup(fs, 0x00200030); /* promoted only */
    assert_non_null(s);
    assert_int_equal(s->levels, 0);
    assert_int_equal(mdb_features_promoted(fs, (size_t)s->promoted)->level, MDB_LEVEL_INSTANCE);
    s = mdb_features_lookup(fs, 0x00091001);
    assert_non_null(s);
    assert_string_equal(s->vr, "LO");
    assert_null(mdb_features_lookup(fs, 0x00280010));
    mdb_features_destroy(fs);
}

/* The shipped defaults are the reference lists as they are. */
static void test_shipped_defaults(void **state)
{
    (void)state;
    char dir[4096];
    mdb_error_t err = {0};
    snprintf(dir, sizeof dir, "%s/conf", source_dir());
    mdb_features_t *fs = mdb_features_load(dir, "default", NULL, &err);
    assert_non_null(fs);
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_STUDY), 17);
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_SERIES), 17);
    /* 184 lines: one blank, 'Private Creator' asks for the creator elements */
    assert_int_equal(mdb_features_count(fs, MDB_LEVEL_INSTANCE), 182);
    assert_int_equal(mdb_features_warning_count(fs), 0); /* nothing to print on every run */
    assert_true(mdb_features_private_creators(fs, MDB_LEVEL_INSTANCE));
    assert_false(mdb_features_private_creators(fs, MDB_LEVEL_STUDY));
    assert_int_equal(mdb_features_promoted_count(fs), 25);
    const mdb_feature_slot_t *s = mdb_features_lookup(fs, 0x00080060); /* Modality: study list + promoted */
    assert_non_null(s);
    assert_true(s->levels & (1u << MDB_LEVEL_STUDY));
    assert_string_equal(mdb_features_promoted(fs, (size_t)s->promoted)->field, "modality");
    s = mdb_features_lookup(fs, 0x0008002A); /* AcquisitionDateTime: promoted at two levels */
    assert_non_null(s);
    int32_t p1 = s->promoted, p2 = mdb_features_promoted_next(fs, p1);
    assert_true(p1 >= 0 && p2 >= 0);
    assert_int_not_equal(mdb_features_promoted(fs, (size_t)p1)->level, mdb_features_promoted(fs, (size_t)p2)->level);
    mdb_features_destroy(fs);

    /* a missing list file is an error that names it */
    fs = mdb_features_load("/nonexistent/conf", "x", NULL, &err);
    assert_null(fs);
    assert_non_null(strstr(err.message, "StudyFeatures.txt"));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_registry(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/mdb_test_features_XXXXXX";
    char *dir = mkdtemp(tmpl);
    char path[4096];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/StudyFeatures.txt", dir);
    write_file(path, "StudyInstanceUID\nStudyDate\n");
    snprintf(path, sizeof path, "%s/SeriesFeatures.txt", dir);
    write_file(path, "SeriesInstanceUID\n");
    snprintf(path, sizeof path, "%s/InstanceFeatures.txt", dir);
    write_file(path, "SOPInstanceUID\n");
    snprintf(path, sizeof path, "%s/promoted.conf", dir);
    write_file(path, "study StudyDate study_date\n");
    snprintf(path, sizeof path, "%s/featuresets", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/featuresets/extra", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/featuresets/extra/InstanceFeatures.txt", dir);
    write_file(path, "*\nBogusEntry\n");

    mdb_error_t err = {0};
    mdb_featuresets_t *r = mdb_featuresets_new(dir, "default", &err);
    assert_non_null(r);
    bool fresh = true;
    const mdb_features_t *def = mdb_featuresets_get(r, NULL, &fresh, &err);
    assert_non_null(def);
    assert_false(fresh);
    assert_int_equal(mdb_features_count(def, MDB_LEVEL_STUDY), 2);
    assert_ptr_equal(mdb_featuresets_get(r, "default", NULL, &err), def);

    const mdb_features_t *ex = mdb_featuresets_get(r, "extra", &fresh, &err);
    assert_non_null(ex);
    assert_true(fresh);
    assert_string_equal(mdb_features_name(ex), "extra");
    assert_int_equal(mdb_features_count(ex, MDB_LEVEL_STUDY), 2); /* inherited */
    assert_true(mdb_features_star(ex, MDB_LEVEL_INSTANCE));
    assert_int_equal(mdb_features_promoted_count(ex), 1); /* inherited promoted.conf */
    assert_true(has_warning(ex, "'BogusEntry'"));
    assert_ptr_equal(mdb_featuresets_get(r, "extra", &fresh, &err), ex);
    assert_false(fresh);

    assert_null(mdb_featuresets_get(r, "missing", NULL, &err));
    assert_non_null(strstr(err.message, "not found"));
    assert_null(mdb_featuresets_get(r, "../etc", NULL, &err));
    assert_non_null(strstr(err.message, "invalid feature set name"));
    assert_null(mdb_featuresets_get(r, "a/b", NULL, &err));
    mdb_featuresets_destroy(r);

    /* a named default */
    r = mdb_featuresets_new(dir, "extra", &err);
    assert_non_null(r);
    assert_string_equal(mdb_features_name(mdb_featuresets_get(r, NULL, NULL, &err)), "extra");
    mdb_featuresets_destroy(r);
    assert_null(mdb_featuresets_new(dir, "nope", &err));

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_shipped_defaults),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
