/* mdb_dicom: the C API over GDCM (the only C++ in metadb, mdb_dicom.cpp).
 * Reads a file's data set up to, not including, Pixel Data; never reads
 * pixels. Every entry point catches C++ exceptions and turns them into an
 * mdb_error_t; no C++ type crosses this header. The full extraction API
 * (typed values, feature sets) is in mdb_extract.h. */
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

typedef struct mdb_dicom mdb_dicom_t;

/* Fast path for the archive catalog: read only the given top-level tags
 * (any order) and stop parsing after the largest one. values[i] receives a
 * malloc'd UTF-8 string with DICOM padding trimmed, or NULL if absent; the
 * caller frees each. fd-less: opens path read-only itself (callers pass a
 * path already checked by mdb_archive_resolve). Returns false (values all
 * NULL) for non-DICOM/unreadable files, err says why (code MDB_DICOM_E*). */
bool mdb_dicom_read_tags(const char *path, const uint32_t *tags, size_t ntags, char **values, mdb_error_t *err);

/* Reason codes (mdb_error_t.code when domain == MDB_ERR_DICOM); the short
 * name (mdb_dicom_reason_name) is what goes into DLQ "error" fields. */
typedef enum {
    MDB_DICOM_EOK = 0,
    MDB_DICOM_EEMPTY,       /* "empty_file" */
    MDB_DICOM_ENOTDICOM,    /* "not_dicom" */
    MDB_DICOM_ETRUNCATED,   /* "truncated" */
    MDB_DICOM_EUNREADABLE,  /* "unreadable" (permissions, I/O) */
    MDB_DICOM_EMISSINGUID,  /* "missing_uid" (no Study/Series/SOP Instance UID) */
    MDB_DICOM_ETOOLARGE,    /* "header_too_large" */
    MDB_DICOM_EMALFORMED,   /* "malformed" */
    MDB_DICOM_EDICOMDIR     /* "dicomdir" (a media directory, not an instance) */
} mdb_dicom_reason_t;

const char *mdb_dicom_reason_name(int code);

#ifdef __cplusplus
}
#endif
#endif
