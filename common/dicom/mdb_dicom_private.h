/* mdb_dicom_private: the parse tree shared by the header reader
 * (mdb_dicom_parse.c) and the extractor (mdb_extract.c). Not a public
 * interface: other modules use mdb_dicom.h / mdb_extract.h.
 *
 * A parsed header is one owned byte buffer plus two arrays: elements and
 * sequence items, linked by index (arrays grow with realloc, so indices,
 * not pointers). Values are (offset, length) into the buffer: zero-copy. */
#ifndef MDB_DICOM_PRIVATE_H
#define MDB_DICOM_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    MDB_DCM_F_LE = 1u << 0,       /* value bytes are little endian */
    MDB_DCM_F_EXPLICIT = 1u << 1, /* vr[] was read from the file */
    MDB_DCM_F_SEQ = 1u << 2,      /* value is a sequence (items) */
    MDB_DCM_F_UNDEF = 1u << 3,    /* undefined length in the file */
    MDB_DCM_F_FRAGMENTS = 1u << 4 /* encapsulated fragments (skipped; binary) */
};

typedef struct {
    uint32_t tag;
    uint32_t len;  /* value length (0 for sequences / fragments) */
    uint32_t off;  /* value offset in mdb_dicom.buf */
    int32_t next;  /* next element of the same data set, -1 at the end */
    int32_t items; /* sequence: first item, -1 if none */
    char vr[2];    /* as read (explicit VR), else "\0\0" */
    uint8_t flags; /* MDB_DCM_F_* */
} mdb_dcm_elem_t;

typedef struct {
    int32_t first; /* first element of the item's data set, -1 if empty */
    int32_t next;  /* next item of the same sequence, -1 */
} mdb_dcm_item_t;

/* What the file holds of its Pixel Data (the header reader checks the
 * element's length against the file without reading any pixel). */
typedef struct {
    bool truncated;      /* the file ends before the Pixel Data value does */
    bool encapsulated;   /* undefined length: fragments (expected is then a lower bound) */
    bool expected_known; /* false when the file ends inside the element's own header */
    uint64_t expected;   /* value bytes the element declares (encapsulated: fragments up to the cut) */
    uint64_t present;    /* value bytes the file holds */
} mdb_dcm_pixels_t;

struct mdb_dicom {
    uint8_t *buf; /* owned: header bytes (for deflate: meta + inflated data set) */
    size_t len;
    size_t buf_cap;
    mdb_dcm_elem_t *elems;
    size_t nelems, elems_cap;
    mdb_dcm_item_t *items;
    size_t nitems, items_cap;
    int32_t root;       /* first top-level element, -1 if none */
    char ts[68];        /* Transfer Syntax UID from the meta header, "" if none */
    char sop_class[68]; /* MediaStorageSOPClassUID, "" if none */
    bool has_meta;
    bool little;      /* data set byte order */
    bool explicit_vr; /* data set VR encoding */
    bool deflated;
    bool stopped_at_pixels;
    size_t pixel_off;        /* offset of the Pixel Data tag in buf (when stopped_at_pixels) */
    mdb_dcm_pixels_t pixels; /* checked after a full read (stop_after 0); zero otherwise */
    size_t header_end;       /* bytes the last parse needed: the next read's size hint */
};

/* mdb_dicom_read_fd with a stop: the walk ends at the first top-level tag
 * greater than stop_after (0 = no limit; Pixel Data always stops), so a
 * catalog crawl reads only the first few hundred bytes. file_mtime (may be
 * NULL) receives st_mtime. */
mdb_dicom_t *mdb_dicom_read_fd_until(int fd, size_t max_header_bytes, uint32_t stop_after, int64_t *file_size,
                                     int64_t *file_mtime, mdb_error_t *err);

/* Read into an existing object, reusing its buffers (one per extraction
 * context, so a worker thread allocates nothing per file once warm). */
bool mdb_dicom_read_fd_into(mdb_dicom_t *d, int fd, size_t max_header_bytes, uint32_t stop_after, int64_t *file_size,
                            int64_t *file_mtime, mdb_error_t *err);

/* An empty object for mdb_dicom_read_fd_into. */
mdb_dicom_t *mdb_dicom_new(void);

static inline const mdb_dcm_elem_t *mdb_dcm_elem(const mdb_dicom_t *d, int32_t i)
{
    return i >= 0 ? &d->elems[i] : NULL;
}

#ifdef __cplusplus
}
#endif
#endif
