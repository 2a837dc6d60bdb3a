/* libFuzzer target for the DICOM header reader + extractor + charset
 * decoder. Each input is parsed as a whole file with a '*' feature set
 * (every public attribute) plus private tags and promoted fields; the first
 * byte picks a small header bound and, sometimes, a character-set override
 * so the refusal and override paths run too. Invariants checked:
 *  - a failure always carries a DICOM reason code and a message (never
 *    "internal": the JSON text the extractor writes always parses);
 *  - a success has the three UIDs as non-empty strings, the event is valid
 *    UTF-8 JSON and passes the linker's decoder;
 *  - decoding the input as text under several character sets yields valid
 *    UTF-8.
 * (C, not C++: the reader's sources are compiled into this target so they
 * carry libFuzzer's coverage instrumentation; mdb_common is built without
 * it, and the linker then takes those modules from here, not the library.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/dicom/mdb_charset.c"
#include "../../common/dicom/mdb_dicom_parse.c"
#include "../../common/dicom/mdb_extract.c"
#include "../../common/dicom/mdb_features.c"
#include "mdb_msg.h"

static mdb_features_t *g_fs;
static mdb_extract_ctx_t *g_ctx[3];

static void check(bool cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_extract: invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    mdb_error_t err = {0};
    g_fs = mdb_features_from_text("fuzz", "*\nStudyInstanceUID\n", "*\n(0009,1001) LO\n", "*\n00291010\n",
                                  "study AccessionNumber accession_number\nseries SliceThickness slice_thickness\n"
                                  "instance ImagePosition image_position\ninstance ImageType image_type\n",
                                  &err);
    g_ctx[0] = mdb_extract_ctx_new(0);
    g_ctx[1] = mdb_extract_ctx_new(1024);
    g_ctx[2] = mdb_extract_ctx_new(300);
    check(g_fs && g_ctx[0] && g_ctx[1] && g_ctx[2], "set-up");
    /* the dictionary is built once, outside the measured inputs */
    (void)mdb_dicom_dict_by_keyword("PatientName");
    return 0;
}

static void check_event(const mdb_extract_result_t *r)
{
    json_t *ev = mdb_extract_event(r, "fuzz-job", "/archive/fuzz.dcm", "fuzz");
    check(ev != NULL, "event built");
    char *text = json_dumps(ev, JSON_COMPACT);
    check(text != NULL, "event dumps");
    size_t n = strlen(text);
    check(mdb_utf8_valid(text, n), "event is valid UTF-8");
    mdb_instance_msg_t m;
    mdb_error_t err = {0};
    check(mdb_msg_instance_decode(text, n, 0, &m, &err), "event passes the instance decoder");
    mdb_msg_instance_clear(&m);
    free(text);
    json_decref(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *overrides[] = {
        NULL, NULL, NULL, "GB18030", "ISO 2022 IR 6\\ISO 2022 IR 87", "ISO_IR 192", "\\ISO 2022 IR 149", "CP1251"};
    uint8_t sel = size ? data[size - 1] : 0;
    mdb_extract_ctx_t *ctx = g_ctx[sel % 7 == 0 ? 1 : sel % 11 == 0 ? 2 : 0];
    const char *override = overrides[(sel >> 3) % 8];
    mdb_extract_result_t r;
    mdb_error_t err = {0};
    if (mdb_extract_buffer(ctx, g_fs, data, size, override, &r, &err)) {
        for (int l = 0; l < 3; l++) {
            json_t *o = l == 0 ? r.study : l == 1 ? r.series : r.instance;
            const char *k = l == 0 ? "StudyInstanceUID" : l == 1 ? "SeriesInstanceUID" : "SOPInstanceUID";
            json_t *u = json_object_get(o, k);
            check(json_is_string(u) && json_string_length(u) > 0, "UIDs present");
        }
        check_event(&r);
        mdb_extract_result_clear(&r);
    } else {
        /* a DICOM reason; never "internal" (e.g. our JSON writer producing text
         * jansson refuses); out of memory cannot happen at these sizes */
        check(err.domain == MDB_ERR_DICOM, "failure has a DICOM reason");
        check(err.message[0] != '\0', "failure has a message");
    }
    /* the raw bytes as text values */
    static const char *sets[] = {"ISO_IR 100", "\\ISO 2022 IR 87",  "ISO 2022 IR 13\\ISO 2022 IR 87",
                                 "GBK",        "\\ISO 2022 IR 149", "ISO_IR 192"};
    mdb_charset_t *cs = g_ctx[0]->cs;
    const char *scs = sets[sel % 6];
    mdb_charset_select(cs, scs, strlen(scs), NULL);
    size_t n = size > 4096 ? 4096 : size;
    bool rep = false;
    char *s = mdb_charset_decode_dup(cs, (const char *)data, n, (mdb_cs_kind_t)(sel % 3), &rep);
    check(s != NULL && mdb_utf8_valid(s, strlen(s)), "charset output is valid UTF-8");
    free(s);
    return 0;
}
