/* wado.h: what metadb-api's WADO-RS modules share (PS3.18 §10.4, retrieve).
 *
 *   api/wado.c           routing under /dicomweb/studies/..., retrieve (multipart
 *                        stream), rendered / thumbnail
 *   api/wado_files.c     file lookup through the catalogue and the archive gate,
 *                        the module state (gate, render cache)
 *   api/wado_metadata.c  .../metadata: DICOM JSON from the files' full headers
 *   api/wado_frames.c    .../frames/{list}
 *   api/wado_image.c     windowing, viewport scaling, PNG / JPEG encoding (pure)
 *   api/render.cpp       GDCM: decoding the pixel data of one file
 *   api/thumbcache.c     the on-disk cache of rendered images
 *
 * api/qido.c hands every /dicomweb/ path it does not answer itself to
 * api_route_wado. Everything here reads archive files read-only, through
 * mdb_archive (canonical path below archive.roots, no symlink out, regular
 * files only). */
#ifndef METADB_API_WADO_H
#define METADB_API_WADO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- routing (wado.c) ---- */
/* Answer a WADO-RS path (rest = the path after "/dicomweb"); false when the
 * path is not a WADO-RS resource (the caller answers 404). */
bool api_route_wado(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *rest);

/* ---- one archive file, opened through the gate ---- */
typedef struct {
    char sop[72], series[72], study[72];
    char ts[72];            /* transfer syntax from the catalogue ("" if unknown) */
    int fd;                 /* open, read-only, a regular file */
    int64_t size, mtime_ns; /* from fstat at open time */
} wado_file_t;

/* Find instance sop (of series/study when given, may be NULL) in the
 * catalogue and open its file. false: res holds the 4xx/5xx answer (404 no
 * such instance; 404 file_missing when the file moved or was deleted; 403
 * when the path is outside the roots, a symlink out, or not a regular file),
 * and the refusal was counted. On true the caller closes f->fd. */
bool wado_open_instance(api_ctx_t *ctx, const char *study, const char *series, const char *sop, wado_file_t *f,
                        api_response_t *res);

/* The instances of a study (series may be NULL) in series then instance
 * order: a JSON array of {"_id", "series_id", "paths", "dicom", ...}. NULL
 * with res filled on a database error; an empty array when none match. */
json_t *wado_list_instances(api_ctx_t *ctx, const char *study, const char *series, api_response_t *res);

/* Open one listed instance document's file; false with *status/reason
 * (for messages and metrics) when it cannot be served. */
bool wado_open_doc(api_ctx_t *ctx, const json_t *doc, wado_file_t *f, int *status, char *reason, size_t rcap);

/* ---- files and module state (wado_files.c) ---- */
typedef struct thumbcache thumbcache_t;
/* Build the archive gate and the render cache at the first request. */
void wado_state_init(api_ctx_t *ctx);
/* NULL when the archive gate is open, else why it is not (answers 503). */
const char *wado_archive_error(void);
/* The rendered-image cache, NULL when off. */
thumbcache_t *wado_cache(void);
/* Instance documents (paths, study/series, instance number) of a study,
 * series or one SOP, in series then instance order; or only the SOP UIDs
 * and instance numbers of a series (wado_find_ids). */
bool wado_find_docs(api_ctx_t *ctx, const char *study, const char *series, const char *sop, json_t *out,
                    mdb_error_t *err);
bool wado_find_ids(api_ctx_t *ctx, const char *study, const char *series, json_t *out, mdb_error_t *err);
/* Answer a file that could not be opened (status/reason from wado_open_doc),
 * counting it when count is true. */
void wado_file_error(api_ctx_t *ctx, api_response_t *res, int status, const char *reason, const char *sop, bool count);
/* Count a file that could not be served (metadb_api_wado_file_errors_total{reason}). */
void wado_count_file_error(api_ctx_t *ctx, const char *reason);

/* A UID in a path: 1..64 digits and dots. */
bool wado_uid_ok(const char *s);

/* Before GDCM sees a file: the bounded header reader (mdb_dicom) must find
 * a whole Pixel Data element (not cut short). false with err
 * (MDB_ERR_DICOM) otherwise. */
bool wado_check_pixels(int fd, mdb_error_t *err);

/* ---- decoding (render.cpp) ---- */
/* One decoded frame as modality values (RescaleSlope/Intercept applied),
 * or interleaved 8-bit RGB for colour images. */
typedef struct {
    int rows, cols;
    int samples;      /* 1 (grey) or 3 (RGB) */
    float *grey;      /* rows*cols modality values (samples == 1), malloc'd; float halves the memory of big images */
    uint8_t *rgb;     /* rows*cols*3 (samples == 3), malloc'd */
    bool monochrome1; /* invert after windowing */
    bool has_window;  /* WindowCenter/Width from the file */
    double center, width;
    int function; /* WADO_FN_* from VOILUTFunction */
    int frames;   /* number of frames in the file */
} wado_pixels_t;

enum { WADO_FN_LINEAR = 0, WADO_FN_LINEAR_EXACT = 1, WADO_FN_SIGMOID = 2 };

/* Decode frame (1-based) of the DICOM file open as fd (read from offset 0;
 * fd stays the caller's) with GDCM: any transfer syntax GDCM decodes
 * (uncompressed, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000).
 * false with err (MDB_ERR_DICOM: not an image / cannot decode; MDB_ERR_QUERY:
 * frame out of range). */
bool wado_decode_frame(int fd, int frame, wado_pixels_t *out, mdb_error_t *err);
void wado_pixels_free(wado_pixels_t *p); /* accepts NULL and zeroed */

/* The raw bytes of one frame decoded to native little-endian (what
 * transfer syntax 1.2.840.10008.1.2.1 holds): malloc'd into *data. */
bool wado_decode_frame_raw(int fd, int frame, uint8_t **data, size_t *len, mdb_error_t *err);

/* GDCM's warnings and errors off (they go to stderr, one per odd file). */
void wado_quiet_decoder(void);

/* ---- isolation (wado_isolate.c) ---- */
/* A decoding job: fills *out (malloc'd) or err. */
typedef bool (*wado_job_fn)(void *arg, uint8_t **out, size_t *len, mdb_error_t *err);
/* Run fn(arg) in a forked child and hand back its result: a decoder that
 * aborts or crashes on a file (GDCM asserts), or runs past timeout_ms
 * (killed), becomes an MDB_ERR_DICOM error instead of taking the server
 * down. Errors fn reports keep their domain (MDB_ERR_QUERY: no such frame). */
bool wado_isolated(wado_job_fn fn, void *arg, int timeout_ms, uint8_t **out, size_t *len, mdb_error_t *err);

#define WADO_DECODE_TIMEOUT_MS 30000

/* ---- rendering (wado_image.c) ---- */
typedef struct {
    bool window_given; /* window= in the request */
    double center, width;
    int function;
    int vw, vh;  /* viewport; 0 = native size */
    int quality; /* JPEG 1..100 */
    bool jpeg;   /* else PNG */
} wado_render_params_t;

/* Parse window=, viewport=, quality= and the Accept header into p (thumbnail:
 * default viewport 128x128). false with res filled (400 / 406). */
bool wado_render_params_parse(const api_request_t *req, bool thumbnail, wado_render_params_t *p, api_response_t *res);

/* Canonical text of the parameters, part of a cache key. */
void wado_render_params_key(const wado_render_params_t *p, char *out, size_t cap);

/* Window (request, else the file's, else the pixel range), invert
 * MONOCHROME1, scale into the viewport, encode. *img malloc'd. */
bool wado_render(const wado_pixels_t *px, const wado_render_params_t *p, uint8_t **img, size_t *len, mdb_error_t *err);

/* ---- pixel arithmetic (wado_window.c, pure) ---- */
/* 8-bit value (unrounded, 0..255) of modality value x for window (c, w)
 * and function fn (PS3.3 C.11.2.1.2/3). */
double wado_window_value(double x, double c, double w, int fn);
/* Media type from an Accept value: 1 PNG, 2 JPEG (also for an absent
 * value and image/ or any wildcard), 0 when neither is acceptable. Types
 * compare whole (image/apng is not image/png), q=0 excludes, an explicit
 * type beats a wildcard of the same weight. */
int wado_choose_media(const char *accept);
/* The grey frame windowed into rows*cols bytes (request window, else the
 * file's, else the pixel range; MONOCHROME1 inverted). malloc'd; NULL on OOM. */
uint8_t *wado_window_grey(const wado_pixels_t *px, const wado_render_params_t *p);
/* src (w x h, ch channels) fitted into vw x vh (aspect kept); returns src
 * itself when there is no viewport or the size stays; NULL on OOM. *ow,
 * *oh: the result's size. */
uint8_t *wado_fit_viewport(uint8_t *src, int w, int h, int ch, int vw, int vh, int *ow, int *oh);

/* ---- the cache (thumbcache.c) ---- */
/* dir is created if missing; cap_bytes 0 disables the cache (NULL is
 * returned with err unset). The folder's content is counted at start, so a
 * restart keeps what was cached. */
thumbcache_t *thumbcache_new(const char *dir, int64_t cap_bytes, mdb_error_t *err);
void thumbcache_destroy(thumbcache_t *c); /* accepts NULL */
/* Look up (sop, params) for a file of the given size and mtime: true with a
 * malloc'd copy in *data. An entry written for another size/mtime (the file
 * changed) is deleted and is a miss. A hit refreshes the entry's access
 * time (LRU). */
bool thumbcache_get(thumbcache_t *c, const char *sop, const char *params, int64_t size, int64_t mtime_ns,
                    uint8_t **data, size_t *len);
/* Store an entry (best effort: failures are silent), then evict the least
 * recently used entries while the folder holds more than the cap. */
void thumbcache_put(thumbcache_t *c, const char *sop, const char *params, int64_t size, int64_t mtime_ns,
                    const uint8_t *data, size_t len);
/* Bytes held now. */
int64_t thumbcache_bytes(thumbcache_t *c);

/* ---- the other resources ---- */
void wado_h_metadata(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                     const char *series, const char *sop);
void wado_h_bulkdata(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                     const char *series, const char *sop, const char *tag);
void wado_h_frames(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study, const char *series,
                   const char *sop, const char *list);

#ifdef __cplusplus
}
#endif
#endif
