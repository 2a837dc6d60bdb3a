/* mdb_dicom: reading DICOM files in metadb.
 *
 * Two halves:
 *  - the data dictionary (mdb_dicom.cpp): keyword <-> tag <-> VR, taken from
 *    GDCM's public and private dictionaries at first use and frozen into flat
 *    C tables, so lookups on the hot path are a binary search, not a C++ call;
 *  - the header reader (mdb_dicom_parse.c): reads a file's data set up to,
 *    not including, Pixel Data (never pixels), zero-copy over one bounded
 *    buffer (at most max_header_bytes), and yields a tree of elements
 *    (mdb_dicom_private.h) that mdb_extract.c turns into typed JSON; it
 *    also compares Pixel Data's declared length (or fragment item headers)
 *    with the file's size, so a copy cut inside the pixels is catalogued
 *    and flagged (mdb_extract.h, "integrity") instead of refused.
 *
 * Why not gdcm::Reader for the parse: it allocates each element's declared
 * length before checking it against the file (a 4-byte lie makes it reserve
 * 4 GB), it carries vendor work-arounds that silently rewrite lengths, it is
 * slower than the bare read it is measured against, and it cannot be
 * instrumented by the fuzzer. The parse here is a small, bounded,
 * sanitizer-fuzzed state machine; GDCM stays the source of the dictionary.
 *
 * Every entry point is plain C behind extern "C"; C++ exceptions never
 * cross this header. The extraction API (typed values, feature sets) is in
 * mdb_extract.h. */
#ifndef MDB_DICOM_H
#define MDB_DICOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_TAG(group, element) ((uint32_t)(((uint32_t)(group) << 16) | (uint32_t)(element)))
#define MDB_TAG_GROUP(tag) ((uint16_t)((tag) >> 16))
#define MDB_TAG_ELEMENT(tag) ((uint16_t)((tag)&0xFFFF))

typedef struct mdb_dicom mdb_dicom_t;

/* Fast path for the archive catalog: read only the given top-level tags
 * (any order) and stop parsing after the largest one. values[i] receives a
 * malloc'd UTF-8 string with DICOM padding trimmed, or NULL if absent; the
 * caller frees each. fd-less: opens path read-only itself (callers pass a
 * path already checked by mdb_archive_resolve). Returns false (values all
 * NULL) for non-DICOM/unreadable files, err says why (code MDB_DICOM_E*).
 * Multi-valued attributes come back as stored ("A\B"). Text VRs are decoded
 * per the file's Specific Character Set. */
bool mdb_dicom_read_tags(const char *path, const uint32_t *tags, size_t ntags, char **values, mdb_error_t *err);

/* Reason codes (mdb_error_t.code when domain == MDB_ERR_DICOM); the short
 * name (mdb_dicom_reason_name) is what goes into DLQ "error" fields. */
typedef enum {
    MDB_DICOM_EOK = 0,
    MDB_DICOM_EEMPTY,      /* "empty_file" */
    MDB_DICOM_ENOTDICOM,   /* "not_dicom" */
    MDB_DICOM_ETRUNCATED,  /* "truncated" */
    MDB_DICOM_EUNREADABLE, /* "unreadable" (permissions, I/O) */
    MDB_DICOM_EMISSINGUID, /* "missing_uid" (no Study/Series/SOP Instance UID) */
    MDB_DICOM_ETOOLARGE,   /* "header_too_large" */
    MDB_DICOM_EMALFORMED,  /* "malformed" */
    MDB_DICOM_EDICOMDIR    /* "dicomdir" (a media directory, not an instance) */
} mdb_dicom_reason_t;

const char *mdb_dicom_reason_name(int code);

/* ---- reading a header ---- */

#define MDB_DICOM_DEFAULT_MAX_HEADER (64u * 1024u * 1024u)

/* Read and parse the header of an open file (fd stays the caller's; it is
 * read with pread from offset 0). max_header_bytes bounds the buffer: a
 * header (everything before Pixel Data) larger than that is refused with
 * MDB_DICOM_ETOOLARGE. 0 means MDB_DICOM_DEFAULT_MAX_HEADER. Returns NULL
 * with err (domain MDB_ERR_DICOM, code mdb_dicom_reason_t) on failure.
 * file_size (may be NULL) receives the size from fstat. */
mdb_dicom_t *mdb_dicom_read_fd(int fd, size_t max_header_bytes, int64_t *file_size, mdb_error_t *err);

/* Same over a memory image of a whole file (tests, fuzzing). The buffer is
 * copied (at most max_header_bytes of it are looked at). */
mdb_dicom_t *mdb_dicom_read_buffer(const void *data, size_t len, size_t max_header_bytes, mdb_error_t *err);

void mdb_dicom_destroy(mdb_dicom_t *d); /* accepts NULL */

/* Transfer Syntax UID as read from the meta header ("" when there was none
 * and it was guessed); owned by d. */
const char *mdb_dicom_transfer_syntax(const mdb_dicom_t *d);

/* ---- the data dictionary (GDCM's, frozen at first use; thread-safe) ---- */

typedef struct {
    uint32_t tag;   /* for repeating groups (50xx, 60xx, 7Fxx) the xx=00 form */
    char vr[3];     /* "DS", "SQ", ... ; "" when GDCM lists none */
    char vr_alt[3]; /* second VR of "US or SS", "US or OW", "OB or OW"; "" otherwise */
    bool retired;
    const char *keyword; /* "" when GDCM has none */
} mdb_dicom_dict_entry_t;

/* Entry for a public tag (repeating groups are folded), or NULL. */
const mdb_dicom_dict_entry_t *mdb_dicom_dict_by_tag(uint32_t tag);

/* Entry for a keyword (case-sensitive, as in the standard), or NULL. */
const mdb_dicom_dict_entry_t *mdb_dicom_dict_by_keyword(const char *keyword);

/* VR of a private element from GDCM's private dictionary, given its
 * private creator; NULL if unknown. */
const char *mdb_dicom_private_vr(uint32_t tag, const char *creator);

/* Number of public dictionary entries (tests). */
size_t mdb_dicom_dict_size(void);

#ifdef __cplusplus
}
#endif
#endif
