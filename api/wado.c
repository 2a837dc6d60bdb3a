/* api/wado.c: DICOMweb WADO-RS (PS3.18 §10.4) over the archive files the
 * catalogue points at.
 *
 *   GET /dicomweb/studies/{st}                               retrieve (multipart/related; type="application/dicom")
 *   GET /dicomweb/studies/{st}/series/{se}                   retrieve
 *   GET /dicomweb/studies/{st}/series/{se}/instances/{sop}   retrieve
 *   GET .../metadata                                         DICOM JSON (wado_metadata.c), study/series/instance
 *   GET .../instances/{sop}/frames/{list}                    frames (wado_frames.c)
 *   GET .../instances/{sop}/bulkdata/{tag}                   a bulk data element (wado_metadata.c)
 *   GET .../series/{se}/rendered|thumbnail                   the middle instance (instance order) as an image
 *   GET /dicomweb/studies/{st}/thumbnail                     the middle series' (series number) thumbnail
 *   GET .../instances/{sop}/rendered|thumbnail               PNG / JPEG (window, viewport, quality)
 *   GET .../instances/{sop}/frames/{n}/rendered              frame n as an image
 *
 * Files are found through the catalogue and opened through the worker's
 * gate by wado_files.c (refusals 403, missing files 404, each counted).
 * Retrievals are streamed file by file (api_respond_stream), never held in
 * memory.
 *
 * Rendered images and thumbnails go through the on-disk cache
 * (thumbcache.c, api.thumbnail_dir / api.thumbnail_cache_mb); the answer
 * says X-Metadb-Cache: hit|miss. Every answer is Cache-Control: no-store,
 * except thumbnails when api.thumbnail_cacheable is set. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mdb_archive.h"
#include "mdb_dicom.h"
#include "mdb_dicom_private.h"
#include "mdb_find.h"
#include "mdb_log.h"
#include "wado.h"

/* ------------------------------------------------------------ retrieve */

typedef struct {
    api_ctx_t *ctx;
    json_t *docs;   /* the instances that could be opened at the check */
    int64_t *sizes; /* their sizes then: the Content-Length promised */
    size_t next;
    int fd;
    int64_t left;
    char hdr[640];
    size_t hdr_len, hdr_off;
    char boundary[48];
    bool finished;
} retrieve_t;

/* The part header of file f (the first part has no leading CRLF). */
static size_t part_header(const retrieve_t *r, const wado_file_t *f, int64_t size, bool first, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "%s--%s\r\nContent-Type: application/dicom%s%s\r\nContent-Length: %lld\r\n"
                     "Content-Location: /dicomweb/studies/%s/series/%s/instances/%s\r\n\r\n",
                     first ? "" : "\r\n", r->boundary, f->ts[0] ? "; transfer-syntax=" : "", f->ts, (long long)size,
                     f->study, f->series, f->sop);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t closing_delimiter(const retrieve_t *r, char *out, size_t cap)
{
    int n = snprintf(out, cap, "\r\n--%s--\r\n", r->boundary);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Fill buf with the next bytes of the body: part headers and file bytes
 * back to back, so each call hands over a full block. A file that is gone
 * or has another size than at the check aborts the response (its length
 * was promised). */
static ssize_t retrieve_read(void *cls, char *buf, size_t max)
{
    retrieve_t *r = cls;
    size_t filled = 0;
    while (filled < max) {
        if (r->hdr_off < r->hdr_len) {
            size_t n = r->hdr_len - r->hdr_off;
            n = n < max - filled ? n : max - filled;
            memcpy(buf + filled, r->hdr + r->hdr_off, n);
            r->hdr_off += n;
            filled += n;
            continue;
        }
        if (r->fd >= 0) {
            if (r->left > 0) {
                size_t want = (int64_t)(max - filled) < r->left ? max - filled : (size_t)r->left;
                ssize_t n = read(r->fd, buf + filled, want);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    return -1; /* the file shrank under us */
                r->left -= n;
                filled += (size_t)n;
                continue;
            }
            close(r->fd);
            r->fd = -1;
        }
        if (r->finished)
            break;
        r->hdr_off = 0;
        if (r->next < json_array_size(r->docs)) {
            wado_file_t f;
            int status;
            char reason[64];
            size_t i = r->next++;
            if (!wado_open_doc(r->ctx, json_array_get(r->docs, i), &f, &status, reason, sizeof reason)) {
                wado_count_file_error(r->ctx, reason);
                return -1;
            }
            if (f.size != r->sizes[i]) {
                close(f.fd);
                wado_count_file_error(r->ctx, "changed");
                return -1;
            }
            r->hdr_len = part_header(r, &f, f.size, i == 0, r->hdr, sizeof r->hdr);
            r->fd = f.fd;
            r->left = f.size;
            continue;
        }
        r->hdr_len = closing_delimiter(r, r->hdr, sizeof r->hdr);
        r->finished = true;
    }
    return (ssize_t)filled;
}

static void retrieve_done(void *cls)
{
    retrieve_t *r = cls;
    if (r->fd >= 0)
        close(r->fd);
    json_decref(r->docs);
    free(r->sizes);
    free(r);
}

/* Accept for a retrieve: multipart/related with type application/dicom (or
 * a wildcard). *ts receives an explicit transfer-syntax parameter ("" or
 * "*" when any is fine). */
static bool retrieve_accept(const char *accept, char *ts, size_t cap)
{
    ts[0] = '\0';
    if (!accept || !*accept)
        return true;
    const char *p = accept;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
        char *t = item;
        while (*t == ' ')
            t++;
        if (!strncmp(t, "*/*", 3))
            return true;
        if (!strncasecmp(t, "multipart/related", 17)) {
            const char *ty = strcasestr(t, "type=");
            bool type_ok =
                !ty || !strncasecmp(ty + 5, "\"application/dicom\"", 19) ||
                (!strncasecmp(ty + 5, "application/dicom", 17) && (ty[22] == ';' || ty[22] == '\0' || ty[22] == ' '));
            if (type_ok) {
                const char *x = strcasestr(t, "transfer-syntax=");
                if (x) {
                    x += 16;
                    if (*x == '"')
                        x++;
                    size_t l = strcspn(x, "\";, ");
                    snprintf(ts, cap, "%.*s", (int)(l < cap ? l : cap - 1), x);
                }
                return true;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

static void h_retrieve(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                       const char *series, const char *sop)
{
    char want_ts[72];
    if (!retrieve_accept(req->accept, want_ts, sizeof want_ts)) {
        api_respond_error(res, 406, "not_acceptable",
                          "retrieve answers multipart/related; type=\"application/dicom\" (Accept: %.100s)",
                          req->accept);
        return;
    }
    json_t *docs = json_array();
    mdb_error_t err = {0};
    if (!wado_find_docs(ctx, study, series, sop, docs, &err)) {
        json_decref(docs);
        api_respond_mdb_error(res, &err);
        return;
    }
    size_t total = json_array_size(docs);
    if (!total) {
        json_decref(docs);
        api_respond_error(res, 404, "not_found", "no %s %s in the catalogue",
                          sop      ? "instance"
                          : series ? "series"
                                   : "study",
                          sop      ? sop
                          : series ? series
                                   : study);
        return;
    }
    retrieve_t *r = calloc(1, sizeof *r);
    int64_t *sizes = calloc(total, sizeof *sizes);
    if (!r || !sizes) {
        free(r);
        free(sizes);
        json_decref(docs);
        api_respond_error(res, 500, "internal", "out of memory");
        return;
    }
    r->ctx = ctx;
    r->fd = -1;
    r->sizes = sizes;
    unsigned char rnd[12] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(rnd, &ts, sizeof rnd < sizeof ts ? sizeof rnd : sizeof ts);
    }
    int bn = snprintf(r->boundary, sizeof r->boundary, "metadb-");
    for (size_t i = 0; i < sizeof rnd; i++)
        bn += snprintf(r->boundary + bn, sizeof r->boundary - (size_t)bn, "%02x", rnd[i]);

    /* check every file first: what is gone or refused is left out (and
     * counted) before the status and the exact length are decided */
    json_t *ok = json_array();
    int first_status = 0;
    char first_reason[64] = "";
    int64_t length = 0;
    for (size_t i = 0; i < total; i++) {
        json_t *d = json_array_get(docs, i);
        wado_file_t f;
        int status;
        char reason[64];
        if (!wado_open_doc(ctx, d, &f, &status, reason, sizeof reason)) {
            if (!first_status) {
                first_status = status;
                snprintf(first_reason, sizeof first_reason, "%s", reason);
            }
            wado_count_file_error(ctx, reason);
            continue;
        }
        close(f.fd);
        if (want_ts[0] && strcmp(want_ts, "*") && strcmp(want_ts, f.ts)) {
            json_decref(docs);
            json_decref(ok);
            retrieve_done(r);
            api_respond_error(res, 406, "not_acceptable",
                              "instance %s is stored as %s; transcoding is not offered (ask transfer-syntax=*)", f.sop,
                              f.ts[0] ? f.ts : "an unknown transfer syntax");
            return;
        }
        char hdr[640];
        sizes[json_array_size(ok)] = f.size;
        length += (int64_t)part_header(r, &f, f.size, json_array_size(ok) == 0, hdr, sizeof hdr) + f.size;
        json_array_append(ok, d);
    }
    json_decref(docs);
    r->docs = ok;
    if (!json_array_size(ok)) {
        retrieve_done(r);
        wado_file_error(ctx, res, first_status, first_reason, sop ? sop : "(all)", false);
        return;
    }
    char tail[128];
    length += (int64_t)closing_delimiter(r, tail, sizeof tail);
    if (json_array_size(ok) < total) {
        char warn[200];
        snprintf(warn, sizeof warn, "299 metadb: \"%zu of %zu instances could not be read and are left out\"",
                 total - json_array_size(ok), total);
        api_response_header(res, "Warning", warn);
    }
    char ctype[sizeof res->content_type];
    snprintf(ctype, sizeof ctype, "multipart/related; type=\"application/dicom\"; boundary=%.40s", r->boundary);
    api_respond_stream(res, 200, ctype, length, retrieve_read, retrieve_done, r);
}

/* ------------------------------------------------------------ rendered */

typedef struct {
    int fd, frame;
    const wado_render_params_t *p;
} render_job_t;

/* Decode and render (runs in the isolated child). */
static bool render_job(void *arg, uint8_t **out, size_t *len, mdb_error_t *err)
{
    const render_job_t *j = arg;
    wado_pixels_t px;
    if (!wado_decode_frame(j->fd, j->frame, &px, err))
        return false;
    bool ok = wado_render(&px, j->p, out, len, err);
    wado_pixels_free(&px);
    return ok;
}

static void h_rendered(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                       const char *series, const char *sop, int frame, bool thumbnail)
{
    wado_render_params_t p;
    if (!wado_render_params_parse(req, thumbnail, &p, res))
        return;
    char middle[72], mid_series[72];
    if (!series) {
        /* study thumbnail: the middle series by series number */
        json_t *list = json_array();
        mdb_error_t lerr = {0};
        bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, sort = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&filter, "study_id", study);
        BSON_APPEND_INT32(&proj, "series_number", 1);
        BSON_APPEND_INT32(&sort, "series_number", 1);
        BSON_APPEND_INT32(&sort, "_id", 1);
        bool ok = mdb_docs_find(api_ctx_mongo(ctx), "series", &filter, &proj, &sort, 0, list, &lerr);
        bson_destroy(&filter);
        bson_destroy(&proj);
        bson_destroy(&sort);
        if (!ok) {
            json_decref(list);
            api_respond_mdb_error(res, &lerr);
            return;
        }
        size_t n = json_array_size(list);
        if (!n) {
            json_decref(list);
            api_respond_error(res, 404, "not_found", "no study %s in the catalogue", study);
            return;
        }
        snprintf(mid_series, sizeof mid_series, "%s",
                 json_string_value(json_object_get(json_array_get(list, n / 2), "_id")));
        json_decref(list);
        series = mid_series;
    }
    if (!sop) {
        json_t *docs = json_array();
        mdb_error_t lerr = {0};
        if (!wado_find_ids(ctx, study, series, docs, &lerr)) {
            json_decref(docs);
            api_respond_mdb_error(res, &lerr);
            return;
        }
        size_t n = json_array_size(docs);
        if (!n) {
            json_decref(docs);
            api_respond_error(res, 404, "not_found", "no series %s in study %s in the catalogue", series, study);
            return;
        }
        snprintf(middle, sizeof middle, "%s", json_string_value(json_object_get(json_array_get(docs, n / 2), "_id")));
        json_decref(docs);
        sop = middle;
    }
    wado_file_t f;
    if (!wado_open_instance(ctx, study, series, sop, &f, res))
        return;
    char key[256], pk[200];
    wado_render_params_key(&p, pk, sizeof pk);
    snprintf(key, sizeof key, "%s;frame=%d;%s", thumbnail ? "thumb" : "rendered", frame, pk);
    const char *ctype = p.jpeg ? "image/jpeg" : "image/png";
    /* only a thumbnail answered with an image may be cached by the browser, never an error */
    bool cacheable = thumbnail && mdb_config_get_bool(api_ctx_config(ctx), "api.thumbnail_cacheable");
    uint8_t *img = NULL;
    size_t len = 0;
    mdb_metrics_t *m = api_ctx_metrics(ctx);
    if (wado_cache() && thumbcache_get(wado_cache(), sop, key, f.size, f.mtime_ns, &img, &len)) {
        close(f.fd);
        mdb_metric_inc(
            mdb_metrics_counter(m, "metadb_api_wado_cache_total", "rendered-image cache lookups", "result=\"hit\""), 1);
        api_response_header(res, "X-Metadb-Cache", "hit");
        if (cacheable)
            api_response_header(res, "Cache-Control", "private, max-age=86400");
        api_respond_bytes(res, 200, ctype, img, len);
        free(img);
        return;
    }
    mdb_error_t err = {0};
    render_job_t job = {.fd = f.fd, .frame = frame, .p = &p};
    bool ok =
        wado_check_pixels(f.fd, &err) && wado_isolated(render_job, &job, WADO_DECODE_TIMEOUT_MS, &img, &len, &err);
    close(f.fd);
    if (!ok) {
        if (err.domain == MDB_ERR_QUERY)
            api_respond_error(res, 404, "not_found", "%s", err.message);
        else if (err.domain == MDB_ERR_SYSTEM)
            api_respond_error(res, 503, "out_of_memory", "%s", err.message);
        else
            api_respond_error(res, 422, "not_renderable", "instance %s: %s", sop, err.message);
        return;
    }
    if (wado_cache()) {
        thumbcache_put(wado_cache(), sop, key, f.size, f.mtime_ns, img, len);
        mdb_metric_inc(
            mdb_metrics_counter(m, "metadb_api_wado_cache_total", "rendered-image cache lookups", "result=\"miss\""),
            1);
        mdb_metric_set(mdb_metrics_gauge(m, "metadb_api_wado_cache_bytes", "bytes in the rendered-image cache", ""),
                       (double)thumbcache_bytes(wado_cache()));
        api_response_header(res, "X-Metadb-Cache", "miss");
    }
    if (cacheable)
        api_response_header(res, "Cache-Control", "private, max-age=86400");
    api_respond_bytes(res, 200, ctype, img, len);
    free(img);
}

/* ------------------------------------------------------------ routing */

bool api_route_wado(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *rest)
{
    char buf[1024];
    if (strlen(rest) >= sizeof buf)
        return false;
    snprintf(buf, sizeof buf, "%s", rest);
    char *seg[10];
    int ns = 0;
    for (char *save = NULL, *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (ns == 10)
            return false;
        seg[ns++] = s;
    }
    if (ns < 2 || strcmp(seg[0], "studies"))
        return false;
    const char *study = seg[1], *series = NULL, *sop = NULL, *frames = NULL, *what = NULL;
    int i = 2;
    if (i + 1 < ns && !strcmp(seg[i], "series"))
        series = seg[i + 1], i += 2;
    if (series && i + 1 < ns && !strcmp(seg[i], "instances"))
        sop = seg[i + 1], i += 2;
    if (sop && i + 1 < ns && !strcmp(seg[i], "frames"))
        frames = seg[i + 1], i += 2;
    const char *bulk_tag = NULL;
    if (i < ns)
        what = seg[i++];
    if (what && !strcmp(what, "bulkdata") && sop && !frames && i < ns)
        bulk_tag = seg[i++];
    if (i != ns)
        return false;
    if (what && strcmp(what, "metadata") && strcmp(what, "rendered") && strcmp(what, "thumbnail") && !bulk_tag)
        return false;
    if (frames && what && strcmp(what, "rendered") && strcmp(what, "thumbnail"))
        return false;
    if (what && strcmp(what, "metadata") && !series && strcmp(what, "thumbnail"))
        return false; /* study-level rendered: not offered (a study has no one image) */
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        api_response_header(res, "Allow", "GET, HEAD");
        api_respond_error(res, 405, "method_not_allowed", "WADO-RS answers GET only (no STOW-RS here)");
        return true;
    }
    if (!wado_uid_ok(study) || (series && !wado_uid_ok(series)) || (sop && !wado_uid_ok(sop))) {
        api_respond_error(res, 400, "bad_uid", "a UID in the path is not a valid UID (digits and dots, at most 64)");
        return true;
    }
    wado_state_init(ctx);
    if (wado_archive_error()) {
        api_respond_error(res, 503, "archive_unavailable", "the archive roots could not be opened: %s",
                          wado_archive_error());
        return true;
    }
    if (frames && !what) {
        wado_h_frames(ctx, req, res, study, series, sop, frames);
        return true;
    }
    if (!what) {
        h_retrieve(ctx, req, res, study, series, sop);
        return true;
    }
    if (!strcmp(what, "metadata")) {
        wado_h_metadata(ctx, req, res, study, series, sop);
        return true;
    }
    if (bulk_tag) {
        wado_h_bulkdata(ctx, req, res, study, series, sop, bulk_tag);
        return true;
    }
    int frame = 1;
    if (frames) {
        char *end;
        long f = strtol(frames, &end, 10);
        if (*end || f < 1 || f > 1000000) {
            api_respond_error(res, 400, "bad_frame", "one frame number (1..) is rendered at a time, got '%.40s'",
                              frames);
            return true;
        }
        frame = (int)f;
    }
    h_rendered(ctx, req, res, study, series, sop, frame, !strcmp(what, "thumbnail"));
    return true;
}
