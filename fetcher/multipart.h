/* multipart: a streaming parser of multipart bodies (RFC 2046, as used by
 * DICOMweb's multipart/related answers, PS3.18 8.6.1.2). Bytes are fed in
 * whatever pieces the network delivers; each part's headers are handed over
 * whole, its content is handed over in pieces as it arrives, so a study of
 * gigabytes never sits in memory. The parser holds at most one part's headers
 * and a delimiter's worth of content.
 *
 * Rules followed: a delimiter is CRLF "--" boundary (the first one may open the
 * body), followed by optional spaces/tabs and CRLF (a bare LF is accepted), or
 * by "--" for the close delimiter; the preamble and the epilogue are ignored;
 * a part's headers end at an empty line (CRLF or LF line ends, folded lines
 * joined); the CRLF before a delimiter belongs to the delimiter, not to the
 * content. A body that ends before its close delimiter is truncated: finish()
 * says so and no part_end is reported for the open part. */
#ifndef MDB_MULTIPART_H
#define MDB_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MDB_MULTIPART_BOUNDARY_MAX 70 /* RFC 2046: 1 to 70 characters */

/* The parts of a Content-Type value that matter for a multipart body. */
typedef struct {
    char media_type[128];                          /* lower case, e.g. "multipart/related" */
    char boundary[MDB_MULTIPART_BOUNDARY_MAX + 1]; /* unquoted */
    char type[128];                                /* the type= parameter, unquoted, lower case; "" if absent */
} mdb_multipart_ctype_t;

/* Parse a Content-Type header value such as
 *   multipart/related; type="application/dicom"; boundary="a b:c"
 * (parameter names case-insensitive, values tokens or quoted strings with
 * backslash escapes, spaces around ';' and '='). Fails (err filled, out
 * zeroed) when the media type is not multipart/..., the boundary is missing,
 * empty, longer than 70 characters or holds a control character, or the value
 * is malformed. */
bool mdb_multipart_parse_content_type(const char *value, mdb_multipart_ctype_t *out, mdb_error_t *err);

/* True when the media type of a Content-Type value (parameters ignored, case
 * ignored, spaces trimmed) equals type, e.g. ("application/dicom;
 * transfer-syntax=1.2.840.10008.1.2.1", "application/dicom"). NULL value = false. */
bool mdb_multipart_media_type_is(const char *value, const char *type);

/* One part as seen by part_begin: its headers, valid during the call only. */
typedef struct mdb_multipart_part mdb_multipart_part_t;

/* Value of the part's header name (case-insensitive), leading/trailing spaces
 * trimmed; NULL when absent. The first of repeated headers wins. */
const char *mdb_multipart_part_header(const mdb_multipart_part_t *part, const char *name);

/* Number of headers and the i-th one (for diagnostics). */
size_t mdb_multipart_part_header_count(const mdb_multipart_part_t *part);
void mdb_multipart_part_header_at(const mdb_multipart_part_t *part, size_t i, const char **name, const char **value);

/* Index of the part in the body (0-based). */
size_t mdb_multipart_part_index(const mdb_multipart_part_t *part);

/* What the caller does with the parts. Any callback may be NULL. A callback
 * returning false stops the parse: feed() then fails with the callback's err
 * (or a generic message if it left err empty), and nothing more is called. */
typedef struct {
    bool (*part_begin)(void *ctx, const mdb_multipart_part_t *part, mdb_error_t *err);
    /* len > 0; data valid during the call only. */
    bool (*part_data)(void *ctx, const uint8_t *data, size_t len, mdb_error_t *err);
    /* The part's content is complete (its closing delimiter was seen). */
    bool (*part_end)(void *ctx, mdb_error_t *err);
} mdb_multipart_callbacks_t;

/* Limits; 0 = the default shown. */
typedef struct {
    size_t max_header_bytes;   /* one part's header block; default 16 KiB */
    size_t max_headers;        /* header lines per part; default 64 */
    uint64_t max_part_bytes;   /* one part's content; default unlimited (UINT64_MAX) */
    size_t max_parts;          /* parts per body; default unlimited (SIZE_MAX) */
    size_t max_preamble_bytes; /* bytes before the first delimiter; default 64 KiB */
} mdb_multipart_limits_t;

typedef struct mdb_multipart mdb_multipart_t;

/* A parser for a body whose boundary is `boundary` (as found by
 * mdb_multipart_parse_content_type). cb is copied; ctx is passed to the
 * callbacks; limits may be NULL (defaults). Returns NULL with err filled on a
 * bad boundary or OOM. Free with mdb_multipart_destroy. */
mdb_multipart_t *mdb_multipart_new(const char *boundary, const mdb_multipart_callbacks_t *cb, void *ctx,
                                   const mdb_multipart_limits_t *limits, mdb_error_t *err);

/* Feed the next len bytes of the body (any split, len may be 0). Returns false
 * with err filled on malformed input, a limit exceeded or a callback's refusal;
 * the parser then stays failed (further feeds fail with the same message). */
bool mdb_multipart_feed(mdb_multipart_t *mp, const void *data, size_t len, mdb_error_t *err);

/* The body has ended. Fails with err filled when it is truncated (no close
 * delimiter: ended in the preamble, inside a part's headers or content) or the
 * parser had already failed. */
bool mdb_multipart_finish(mdb_multipart_t *mp, mdb_error_t *err);

/* True once the close delimiter was seen (the rest is epilogue). */
bool mdb_multipart_done(const mdb_multipart_t *mp);

/* Parts completed so far (part_end reported). */
size_t mdb_multipart_parts(const mdb_multipart_t *mp);

/* Accepts NULL. */
void mdb_multipart_destroy(mdb_multipart_t *mp);

#ifdef __cplusplus
}
#endif
#endif
