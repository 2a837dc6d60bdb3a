/* mdb_extract: one DICOM file + one feature set -> the instance event.
 *
 * THE EVENT (value of a metadb.instances record, key = StudyInstanceUID):
 *
 *   {
 *     "v": 1,
 *     "job_id": "<job id of the file task>",
 *     "path": "<the file task's path, as published by the producer>",
 *     "feature_set": "<name of the set used, 'default' when the task named none>",
 *     "study": {
 *       "StudyInstanceUID": "1.2.3",            always present, non-empty
 *       "<keyword>": <value>, ...               every StudyFeatures entry present in the file
 *       "promoted": { "study_instance_uid": "1.2.3", "accession_number": "A1", ... },
 *       "_invalid": ["<key>", ...]              only if some value broke its VR (see below)
 *       "_replaced": ["<key>", ...]             only if some text had undecodable bytes
 *     },
 *     "series": {
 *       "SeriesInstanceUID": "...",             always present, non-empty
 *       "StudyInstanceUID": "...",              always present (the parent link)
 *       "<keyword>": <value>, ..., "promoted": {...}, "_invalid": [...], "_replaced": [...]
 *     },
 *     "instance": {
 *       "SOPInstanceUID": "...",                always present, non-empty
 *       "<keyword>": <value>, ..., "promoted": {...}, "_invalid": [...], "_replaced": [...]
 *     },
 *     "file": { "size": <bytes>, "mtime": <seconds since epoch> },
 *     "integrity": { ... },                     only if the file is damaged (below)
 *     "dicom": { "transfer_syntax": "<UID or ''>", "specific_character_set": "<as used>" }
 *   }
 *
 * "integrity" says what is wrong with a file whose header (everything before
 * Pixel Data) is whole, so it is catalogued, but which cannot be used as an
 * image. Today one defect: Pixel Data cut short (an archive copy that
 * stopped early). Only the element headers are read to find it, no pixel:
 *   "pixel_data_truncated": true
 *   "pixel_data_bytes_expected": N   the value length the element declares;
 *                                    for encapsulated (compressed) pixel data
 *                                    the bytes of the fragments up to and
 *                                    including the one the file ends in (a
 *                                    lower bound); absent when the file ends
 *                                    inside the element's own tag/length
 *   "pixel_data_bytes_present": M    value bytes the file holds (M < N)
 *   "pixel_data_encapsulated": true  only for encapsulated pixel data
 * The linker copies the object to the instance document's "integrity"
 * (absent on whole files, so ?integrity=exists:true lists the damaged
 * ones) and counts the file in its job's files_flagged. A file cut inside
 * the header is still refused ("truncated").
 *
 * Keys of a level are DICOM keywords (retired ones included, e.g.
 * "ImagePosition"); a private or unknown tag is keyed "GGGGEEEE" (upper-case
 * hex). An attribute absent from the file is absent from the object; the
 * three UIDs above are required (else the file is refused, "missing_uid").
 * The series' parent link comes from the file's StudyInstanceUID; the
 * instance's parents are series.SeriesInstanceUID / study.StudyInstanceUID
 * of the same event.
 *
 * "promoted" holds the promoted fields of that level (promoted.conf), with
 * the same typed value as the attribute; a field whose attribute is absent
 * is absent. Promoted attributes are read even when not in the lists.
 *
 * Values, by VR:
 *   AE AS CS DA DT TM UI SH LO PN UC  string; "A\B" (VM>1) -> ["A","B"]
 *   LT ST UT UR                       string (never split)
 *   IS                                integer; DS real (always written with a
 *                                     '.' or exponent: 120 -> 120.0), digits
 *                                     as stored; VM>1 -> array; empty -> null
 *   US SS UL SL UV SV                 integer; FL FD number; VM>1 -> array
 *   AT                                "GGGGEEEE" string (array if VM>1)
 *   SQ                                array of objects (one per item), each
 *                                     keyed like a level (all non-binary
 *                                     elements of the item, recursively)
 *   OB OD OF OL OV OW UN              left out (bulk/binary)
 * Strings: decoded per Specific Character Set (mdb_charset.h), trailing
 * spaces/NULs removed as DICOM padding. Numbers that do not parse (IS "1.5",
 * DS "abc", FL NaN) are kept as the stored string and their key is listed in
 * "_invalid" ("Seq.0.Key" for one inside a sequence item). DA/TM/DT stay as
 * stored (no ISO rewrite). Implicit-VR ambiguous VRs ("US or SS") follow
 * PixelRepresentation. The three UID keys always hold the UID text, even if
 * a broken file gave them another VR. A tag present twice keeps the last.
 * These rules are pydicom's (tests/integration/test_pydicom_diff.py checks
 * every value of pydicom's test files against it; like pydicom, undeclared
 * high bytes are read as ISO 8859-1), except that NULs inside text become
 * U+FFFD.
 *
 * Thread safety: a feature set is shared read-only; each thread uses its own
 * mdb_extract_ctx_t (it holds the charset decoders and scratch buffers). */
#ifndef MDB_EXTRACT_H
#define MDB_EXTRACT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"
#include "mdb_features.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_extract_ctx mdb_extract_ctx_t;

/* Per-thread extraction context. max_header_bytes: worker.max_header_bytes
 * (0 = default 64 MiB). */
mdb_extract_ctx_t *mdb_extract_ctx_new(size_t max_header_bytes);
void mdb_extract_ctx_destroy(mdb_extract_ctx_t *ctx); /* accepts NULL */

/* Debugging aid (`metadb extract --no-uid-check`, the differential test):
 * when false, a file without the three UIDs is extracted anyway (the UID
 * keys are then absent). Workers always require them (the default). */
void mdb_extract_ctx_require_uids(mdb_extract_ctx_t *ctx, bool require);

typedef struct {
    /* parsed form (owned) */
    json_t *study;
    json_t *series;
    json_t *instance;
    json_t *dicom; /* {transfer_syntax, specific_character_set} */
    /* text form (compact JSON objects), always set on success (owned) */
    char *study_json;
    char *series_json;
    char *instance_json;
    char *dicom_json;
    /* the event's "integrity" object; both NULL when the file is whole (owned) */
    json_t *integrity;
    char *integrity_json;
    char *study_uid; /* the event key (owned); NULL only with --no-uid-check */
    int64_t file_size;
    int64_t file_mtime;
} mdb_extract_result_t;

void mdb_extract_result_clear(mdb_extract_result_t *r); /* accepts NULL */

/* Extract from an open, readable fd (the caller opened it, e.g. with
 * mdb_archive_open; it is not closed). charset_override: NULL, or a
 * Specific Character Set / iconv name that replaces the file's own (the
 * archive root's override). On failure returns false, *out is zeroed and
 * err has domain MDB_ERR_DICOM and a mdb_dicom_reason_t code (its short
 * name is the DLQ reason), or MDB_ERR_IO/MDB_ERR_SYSTEM. */
bool mdb_extract_fd(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *charset_override,
                    mdb_extract_result_t *out, mdb_error_t *err);

/* The worker's fast path: extract and write the whole event (the shape
 * above) as compact JSON text into the context: no JSON tree is built and,
 * once the context's buffers have grown, nothing is allocated per file.
 * The event, its length and study_uid (the record key; may be NULL) point into ctx
 * and stay valid until the next call on ctx. Errors as mdb_extract_fd. */
bool mdb_extract_fd_event(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *charset_override,
                          const char *job_id, const char *path, const char *feature_set, const char **event,
                          size_t *len, const char **study_uid, mdb_error_t *err);

/* Open path read-only (no archive-root check: for `metadb extract` and tests)
 * and extract. */
bool mdb_extract_path(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const char *path, const char *charset_override,
                      mdb_extract_result_t *out, mdb_error_t *err);

/* Extract from a memory image of a file (fuzzing, tests). file_size = len,
 * mtime 0. */
bool mdb_extract_buffer(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const void *data, size_t len,
                        const char *charset_override, mdb_extract_result_t *out, mdb_error_t *err);

/* The whole event object above (new reference) from a result; the result's
 * objects are referenced, not copied. job_id/path/feature_set may be NULL
 * (then omitted). NULL on OOM. */
json_t *mdb_extract_event(const mdb_extract_result_t *r, const char *job_id, const char *path, const char *feature_set);

/* The whole event as compact JSON text (malloc'd, caller frees; *len gets
 * its length; NULL on OOM), from either form of a result. job_id/path/
 * feature_set may be NULL (then omitted). */
char *mdb_extract_event_text(const mdb_extract_result_t *r, const char *job_id, const char *path,
                             const char *feature_set, size_t *len);

/* The DLQ reason code for a failed extraction's error: the mdb_dicom reason
 * name for MDB_ERR_DICOM, "outside_archive" for MDB_ERR_SECURITY,
 * "not_found" for MDB_ERR_NOTFOUND, "unreadable" for MDB_ERR_IO,
 * "internal" otherwise. */
const char *mdb_extract_reason(const mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
