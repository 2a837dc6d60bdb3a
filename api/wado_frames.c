/* wado_frames.c: GET .../instances/{sop}/frames/{list} (PS3.18 §10.4.1.1.3).
 *
 * Answers multipart/related; type="application/octet-stream", one part per
 * requested frame (in the order asked), each part's Content-Type naming its
 * transfer syntax:
 *   - compressed files (encapsulated pixel data) are passed through as
 *     stored when the client accepts their transfer syntax (transfer-
 *     syntax=* or the file's own, e.g. what OHIF asks): the frame's
 *     fragments are read from the file (one fragment per frame, all
 *     fragments of a single-frame file, or the Basic Offset Table);
 *   - otherwise, and for every uncompressed file, the frame is decoded with
 *     GDCM to native little-endian pixels: transfer-syntax
 *     1.2.840.10008.1.2.1 (the default of application/octet-stream).
 * Frame numbers start at 1; a number beyond the instance's frames is 404. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "mdb_dicom.h"
#include "mdb_dicom_private.h"
#include "wado.h"

#define EXPLICIT_LE "1.2.840.10008.1.2.1"
#define MAX_FRAMES_ASKED 1024

static bool ts_uncompressed(const char *ts)
{
    return !ts[0] || !strcmp(ts, "1.2.840.10008.1.2") || !strcmp(ts, EXPLICIT_LE) ||
           !strcmp(ts, "1.2.840.10008.1.2.2") || !strcmp(ts, "1.2.840.10008.1.2.1.99");
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool pread_all(int fd, void *buf, size_t n, int64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + (int64_t)got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

typedef struct {
    int64_t off;
    uint32_t len;
} frag_t;

/* The fragments of the encapsulated Pixel Data starting at file offset
 * pix (the tag). *bot/nbot: the Basic Offset Table entries. */
static frag_t *read_fragments(int fd, int64_t pix, int64_t fsize, size_t *n, uint32_t **bot, size_t *nbot)
{
    uint8_t h[12];
    *n = 0;
    *bot = NULL;
    *nbot = 0;
    if (!pread_all(fd, h, 12, pix) || le32(h + 8) != 0xFFFFFFFFu)
        return NULL;
    int64_t off = pix + 12;
    size_t cap = 16;
    frag_t *v = malloc(cap * sizeof *v);
    bool first = true;
    while (v && off + 8 <= fsize) {
        if (!pread_all(fd, h, 8, off))
            break;
        uint32_t tag = (uint32_t)(h[0] | h[1] << 8) << 16 | (uint32_t)(h[2] | h[3] << 8);
        uint32_t len = le32(h + 4);
        if (tag == 0xFFFEE0DD)
            return v;
        if (tag != 0xFFFEE000 || len == 0xFFFFFFFFu || off + 8 + (int64_t)len > fsize)
            break;
        if (first) {
            first = false;
            if (len >= 4 && len % 4 == 0) {
                *bot = malloc(len);
                if (!*bot || !pread_all(fd, *bot, len, off + 8))
                    break;
                *nbot = len / 4;
            }
        } else {
            if (*n == cap) {
                frag_t *nv = realloc(v, cap * 2 * sizeof *nv);
                if (!nv)
                    break;
                v = nv;
                cap *= 2;
            }
            v[*n].off = off + 8;
            v[*n].len = len;
            (*n)++;
        }
        off += 8 + (int64_t)len;
    }
    /* a file cut before the sequence delimiter still yields what it holds */
    if (v && *n)
        return v;
    free(v);
    free(*bot);
    *bot = NULL;
    *nbot = 0;
    *n = 0;
    return NULL;
}

typedef struct {
    uint8_t *data;
    size_t len, cap;
} out_t;

static bool out_add(out_t *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 65536;
        while (cap < o->len + n)
            cap *= 2;
        uint8_t *d = realloc(o->data, cap);
        if (!d)
            return false;
        o->data = d;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
    return true;
}

/* Append the stored bytes of frame f (1-based) to o; false when the
 * fragments do not say where the frame is. */
static bool stored_frame(int fd, const frag_t *fr, size_t nfr, const uint32_t *bot, size_t nbot, int frames, int f,
                         out_t *o)
{
    size_t first = 0, last = 0; /* fragment range [first, last) */
    if (frames == 1) {
        first = 0, last = nfr;
    } else if ((size_t)frames == nfr) {
        first = (size_t)f - 1, last = (size_t)f;
    } else if (nbot == (size_t)frames) {
        int64_t base = fr[0].off - 8;
        int64_t start = base + le32((const uint8_t *)&bot[f - 1]);
        int64_t end = f < frames ? base + le32((const uint8_t *)&bot[f]) : INT64_MAX;
        bool found = false;
        for (size_t i = 0; i < nfr; i++) {
            int64_t item = fr[i].off - 8;
            if (item == start)
                first = i, found = true;
            if (found && item < end)
                last = i + 1;
        }
        if (!found)
            return false;
    } else {
        return false;
    }
    for (size_t i = first; i < last; i++) {
        size_t at = o->len;
        uint8_t *tmp = malloc(fr[i].len ? fr[i].len : 1);
        bool ok = tmp && pread_all(fd, tmp, fr[i].len, fr[i].off) && out_add(o, tmp, fr[i].len);
        free(tmp);
        if (!ok) {
            o->len = at;
            return false;
        }
    }
    return true;
}

/* A top-level US value (or IS text when is_text) of the header; -1 if absent. */
static int header_int(const mdb_dicom_t *d, uint32_t tag, bool is_text)
{
    for (int32_t i = d->root; i >= 0; i = d->elems[i].next) {
        const mdb_dcm_elem_t *e = &d->elems[i];
        if (e->tag != tag || (e->flags & (MDB_DCM_F_SEQ | MDB_DCM_F_FRAGMENTS)))
            continue;
        const uint8_t *v = d->buf + e->off;
        if (!is_text)
            return e->len >= 2 ? (e->flags & MDB_DCM_F_LE ? v[0] | v[1] << 8 : v[1] | v[0] << 8) : -1;
        char nb[16];
        if (e->len == 0 || e->len >= sizeof nb)
            return -1;
        memcpy(nb, v, e->len);
        nb[e->len] = '\0';
        return atoi(nb);
    }
    return -1;
}

/* Where the frames of a native little-endian file lie, so a frame is read
 * straight from the file (no decoding of the whole pixel data per frame). */
typedef struct {
    bool ok;
    int64_t value_off;
    size_t frame_bytes;
    int frames;
} native_t;

static void native_layout(const mdb_dicom_t *d, int frames, native_t *n)
{
    memset(n, 0, sizeof *n);
    bool explicit_le = !strcmp(d->ts, EXPLICIT_LE), implicit_le = !strcmp(d->ts, "1.2.840.10008.1.2");
    if ((!explicit_le && !implicit_le) || d->pixels.encapsulated || d->pixels.truncated || !d->little)
        return;
    int rows = header_int(d, MDB_TAG(0x0028, 0x0010), false), cols = header_int(d, MDB_TAG(0x0028, 0x0011), false);
    int spp = header_int(d, MDB_TAG(0x0028, 0x0002), false), bits = header_int(d, MDB_TAG(0x0028, 0x0100), false);
    if (rows <= 0 || cols <= 0 || (spp != 1 && spp != 3) || (bits != 8 && bits != 16 && bits != 32 && bits != 64))
        return;
    size_t fb = (size_t)rows * (size_t)cols * (size_t)spp * (size_t)(bits / 8);
    if (!d->pixels.expected_known || d->pixels.expected < (uint64_t)fb * (uint64_t)frames)
        return;
    n->value_off = (int64_t)d->pixel_off + (d->explicit_vr ? 12 : 8);
    n->frame_bytes = fb;
    n->frames = frames;
    n->ok = true;
}

typedef struct {
    int fd, frame;
} raw_job_t;

/* Decode one frame to native little endian (runs in the isolated child). */
static bool raw_job(void *arg, uint8_t **out, size_t *len, mdb_error_t *err)
{
    const raw_job_t *j = arg;
    return wado_decode_frame_raw(j->fd, j->frame, out, len, err);
}

/* What the Accept header allows: *any_ts when the file's own (compressed)
 * syntax is fine; false when nothing we offer is acceptable. */
static bool frames_accept(const char *accept, const char *file_ts, bool *pass_through)
{
    *pass_through = false;
    if (!accept || !*accept)
        return true;
    bool ok = false;
    const char *p = accept;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
        const char *t = item;
        while (*t == ' ')
            t++;
        if (!strncmp(t, "*/*", 3)) {
            ok = true;
        } else if (!strncasecmp(t, "multipart/related", 17)) {
            const char *x = strcasestr(t, "transfer-syntax=");
            char ts[72] = "";
            if (x) {
                x += 16;
                if (*x == '"')
                    x++;
                size_t l = strcspn(x, "\";, ");
                snprintf(ts, sizeof ts, "%.*s", (int)(l < sizeof ts ? l : sizeof ts - 1), x);
            }
            const char *ty = strcasestr(t, "type=");
            bool octet = !ty || strcasestr(ty, "application/octet-stream");
            if (!strcmp(ts, "*") || (ts[0] && !strcmp(ts, file_ts)))
                *pass_through = true, ok = true;
            else if (octet && (!ts[0] || !strcmp(ts, EXPLICIT_LE)))
                ok = true;
            else if (!octet && !ts[0] && ty)
                *pass_through = true, ok = true; /* image/jpeg, image/jp2, ...: the stored bytes */
        }
        if (!end)
            break;
        p = end + 1;
    }
    return ok;
}

void wado_h_frames(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study, const char *series,
                   const char *sop, const char *list)
{
    int want[MAX_FRAMES_ASKED];
    size_t nwant = 0;
    for (const char *p = list; *p;) {
        char *end;
        long f = strtol(p, &end, 10);
        if (end == p || f < 1 || f > 1000000 || (*end && *end != ',') || nwant == MAX_FRAMES_ASKED) {
            api_respond_error(res, 400, "bad_frame_list",
                              "frames must be a comma-separated list of frame numbers (1.., at most %d)",
                              MAX_FRAMES_ASKED);
            return;
        }
        want[nwant++] = (int)f;
        p = *end ? end + 1 : end;
    }
    if (!nwant) {
        api_respond_error(res, 400, "bad_frame_list", "no frame number given");
        return;
    }
    wado_file_t f;
    if (!wado_open_instance(ctx, study, series, sop, &f, res))
        return;
    bool pass = false;
    if (!frames_accept(req->accept, f.ts, &pass)) {
        close(f.fd);
        api_respond_error(res, 406, "not_acceptable",
                          "frames are offered as multipart/related; type=\"application/octet-stream\" "
                          "(transfer-syntax=%s or the stored %s) (Accept: %.100s)",
                          EXPLICIT_LE, f.ts, req->accept);
        return;
    }
    mdb_error_t err = {0};
    if (!wado_check_pixels(f.fd, &err)) {
        close(f.fd);
        api_respond_error(res, 422, "not_decodable", "instance %s: %s", sop, err.message);
        return;
    }
    frag_t *fr = NULL;
    uint32_t *bot = NULL;
    size_t nfr = 0, nbot = 0;
    int frames = 1;
    native_t nat = {0};
    {
        int64_t fsize = 0;
        mdb_dicom_t *d = mdb_dicom_read_fd(f.fd, 0, &fsize, &err);
        if (d && d->stopped_at_pixels && !d->deflated) {
            frames = header_int(d, MDB_TAG(0x0028, 0x0008), true);
            frames = frames > 0 ? frames : 1;
            if (pass && !ts_uncompressed(f.ts))
                fr = read_fragments(f.fd, (int64_t)d->pixel_off, fsize, &nfr, &bot, &nbot);
            else
                native_layout(d, frames, &nat);
        }
        mdb_dicom_destroy(d);
    }
    unsigned char rnd[8] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memcpy(rnd, &f.size, sizeof rnd);
    char boundary[40];
    snprintf(boundary, sizeof boundary, "metadb-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5], rnd[6], rnd[7]);
    out_t o = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < nwant; i++) {
        char head[256];
        bool stored = fr && want[i] <= frames;
        if (fr && want[i] > frames) {
            err.domain = MDB_ERR_QUERY;
            snprintf(err.message, sizeof err.message, "frame %d does not exist (the instance has %d)", want[i], frames);
            ok = false;
            break;
        }
        int hl =
            snprintf(head, sizeof head, "%s--%s\r\nContent-Type: application/octet-stream; transfer-syntax=%s\r\n\r\n",
                     i ? "\r\n" : "", boundary, stored ? f.ts : EXPLICIT_LE);
        size_t mark = o.len;
        ok = out_add(&o, head, (size_t)hl);
        if (ok && stored && stored_frame(f.fd, fr, nfr, bot, nbot, frames, want[i], &o))
            continue;
        if (!ok)
            break;
        if (stored) { /* the fragments do not say where the frame is: decode instead */
            o.len = mark;
            hl = snprintf(head, sizeof head,
                          "%s--%s\r\nContent-Type: application/octet-stream; transfer-syntax=%s\r\n\r\n",
                          i ? "\r\n" : "", boundary, EXPLICIT_LE);
            ok = out_add(&o, head, (size_t)hl);
        }
        if (ok && nat.ok) { /* native little endian: the frame's bytes straight from the file */
            if (want[i] > nat.frames) {
                err.domain = MDB_ERR_QUERY;
                snprintf(err.message, sizeof err.message, "frame %d does not exist (the instance has %d)", want[i],
                         nat.frames);
                ok = false;
                break;
            }
            uint8_t *tmp = malloc(nat.frame_bytes ? nat.frame_bytes : 1);
            ok = tmp &&
                 pread_all(f.fd, tmp, nat.frame_bytes, nat.value_off + (int64_t)nat.frame_bytes * (want[i] - 1)) &&
                 out_add(&o, tmp, nat.frame_bytes);
            free(tmp);
            if (!ok)
                snprintf(err.message, sizeof err.message, "reading frame %d failed", want[i]);
            continue;
        }
        uint8_t *raw = NULL;
        size_t rlen = 0;
        raw_job_t job = {.fd = f.fd, .frame = want[i]};
        ok = ok && wado_isolated(raw_job, &job, WADO_DECODE_TIMEOUT_MS, &raw, &rlen, &err) && out_add(&o, raw, rlen);
        free(raw);
    }
    close(f.fd);
    free(fr);
    free(bot);
    if (!ok) {
        free(o.data);
        if (err.domain == MDB_ERR_QUERY)
            api_respond_error(res, 404, "not_found", "%s", err.message);
        else if (err.domain == MDB_ERR_DICOM)
            api_respond_error(res, 422, "not_decodable", "instance %s: %s", sop, err.message);
        else
            api_respond_error(res, 503, "out_of_memory", "frames could not be assembled: %s", err.message);
        return;
    }
    char tail[64];
    int tl = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", boundary);
    if (!out_add(&o, tail, (size_t)tl)) {
        free(o.data);
        api_respond_error(res, 503, "out_of_memory", "out of memory");
        return;
    }
    char ctype[sizeof res->content_type];
    snprintf(ctype, sizeof ctype, "multipart/related; type=\"application/octet-stream\"; boundary=%.30s", boundary);
    api_respond_bytes(res, 200, ctype, o.data, o.len);
    free(o.data);
}
