/* wado_image.c: rendering parameters (PS3.18 §8.3.5: window, viewport,
 * quality, the media type) and the encoders (libpng, libjpeg-turbo), for
 * WADO-RS rendered and thumbnail resources. The pixel arithmetic
 * (windowing, MONOCHROME1, fitting into the viewport) is wado_window.c. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE and size_t */
#include <jpeglib.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wado.h"

#define THUMB_DEFAULT 128 /* thumbnail viewport when none is asked */
#define VIEWPORT_MAX 4096

/* ------------------------------------------------------------ parameters */

static bool parse_function(const char *s, int *fn)
{
    if (!strcasecmp(s, "linear"))
        *fn = WADO_FN_LINEAR;
    else if (!strcasecmp(s, "linear-exact") || !strcasecmp(s, "linear_exact"))
        *fn = WADO_FN_LINEAR_EXACT;
    else if (!strcasecmp(s, "sigmoid"))
        *fn = WADO_FN_SIGMOID;
    else
        return false;
    return true;
}

static bool parse_number(const char *s, double *out)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    double v = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (end == s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Split s at commas into at most max parts (copied into buf). */
static int split_commas(const char *s, char *buf, size_t cap, char **parts, int max)
{
    snprintf(buf, cap, "%s", s);
    int n = 0;
    char *p = buf;
    while (n < max) {
        parts[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            return n;
        *c = '\0';
        p = c + 1;
    }
    return strchr(p, ',') || *p ? max + 1 : n;
}

bool wado_render_params_parse(const api_request_t *req, bool thumbnail, wado_render_params_t *p, api_response_t *res)
{
    memset(p, 0, sizeof *p);
    p->quality = thumbnail ? 80 : 90;
    if (thumbnail)
        p->vw = p->vh = THUMB_DEFAULT;
    for (size_t i = 0; i < req->nargs; i++) {
        const char *k = req->args[i].key;
        if (strcmp(k, "window") && strcmp(k, "viewport") && strcmp(k, "quality") && strcmp(k, "accept") &&
            strcmp(k, "_")) {
            api_respond_error(res, 400, "bad_parameter",
                              "unknown query parameter '%.64s' (window, viewport, quality, accept)", k);
            return false;
        }
    }
    char buf[256], *parts[7];
    const char *v = api_arg(req, "window");
    if (v) {
        int n = split_commas(v, buf, sizeof buf, parts, 3);
        double c, w;
        if (n != 3 || !parse_number(parts[0], &c) || !parse_number(parts[1], &w) ||
            !parse_function(parts[2], &p->function)) {
            api_respond_error(res, 400, "bad_parameter",
                              "window must be center,width,function (function linear, linear-exact or sigmoid)");
            return false;
        }
        if (w < (p->function == WADO_FN_LINEAR ? 1.0 : 1e-9)) {
            api_respond_error(res, 400, "bad_parameter", "window width must be %s",
                              p->function == WADO_FN_LINEAR ? "at least 1 for linear" : "positive");
            return false;
        }
        p->window_given = true;
        p->center = c;
        p->width = w;
    }
    v = api_arg(req, "viewport");
    if (v) {
        int n = split_commas(v, buf, sizeof buf, parts, 6);
        double vw, vh;
        if (n != 2 || !parse_number(parts[0], &vw) || !parse_number(parts[1], &vh) || vw != floor(vw) ||
            vh != floor(vh) || vw < 1 || vh < 1 || vw > VIEWPORT_MAX || vh > VIEWPORT_MAX) {
            api_respond_error(res, 400, "bad_parameter",
                              "viewport must be vw,vh (integers 1..%d; the cropping form is not supported)",
                              VIEWPORT_MAX);
            return false;
        }
        p->vw = (int)vw;
        p->vh = (int)vh;
    }
    v = api_arg(req, "quality");
    if (v) {
        double q;
        if (!parse_number(v, &q) || q != floor(q) || q < 1 || q > 100) {
            api_respond_error(res, 400, "bad_parameter", "quality must be an integer 1..100");
            return false;
        }
        p->quality = (int)q;
    }
    const char *accept = api_arg(req, "accept");
    int m = wado_choose_media(accept ? accept : req->accept);
    if (!m) {
        api_respond_error(res, 406, "not_acceptable",
                          "rendered images are offered as image/jpeg or image/png (Accept: %.100s)",
                          accept ? accept : req->accept);
        return false;
    }
    p->jpeg = m == 2;
    return true;
}

void wado_render_params_key(const wado_render_params_t *p, char *out, size_t cap)
{
    char win[96] = "auto";
    if (p->window_given)
        snprintf(win, sizeof win, "%.17g,%.17g,%d", p->center, p->width, p->function);
    snprintf(out, cap, "fmt=%s;q=%d;vp=%dx%d;win=%s", p->jpeg ? "jpeg" : "png", p->jpeg ? p->quality : 0, p->vw, p->vh,
             win);
}

/* ------------------------------------------------------------ encoders */

typedef struct {
    uint8_t *data;
    size_t len, cap;
    bool oom;
} membuf_t;

static void png_write_mem(png_structp png, png_bytep data, png_size_t len)
{
    membuf_t *m = png_get_io_ptr(png);
    if (m->oom)
        return;
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 65536;
        while (cap < m->len + len)
            cap *= 2;
        uint8_t *n = realloc(m->data, cap);
        if (!n) {
            m->oom = true;
            return;
        }
        m->data = n;
        m->cap = cap;
    }
    memcpy(m->data + m->len, data, len);
    m->len += len;
}

static void png_flush_mem(png_structp png)
{
    (void)png;
}

static bool encode_png(const uint8_t *pix, int w, int h, int ch, uint8_t **out, size_t *len, mdb_error_t *err)
{
    membuf_t m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "libpng: out of memory");
        return false;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.data);
        mdb_error_set(err, MDB_ERR_SYSTEM, EIO, "libpng could not encode the image");
        return false;
    }
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, ch == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 1);
    png_set_filter(png, 0, PNG_FILTER_SUB);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(pix + (size_t)y * (size_t)w * (size_t)ch));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (m.oom) {
        free(m.data);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory encoding PNG");
        return false;
    }
    *out = m.data;
    *len = m.len;
    return true;
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} jpeg_err_t;

static void jpeg_fail(j_common_ptr cinfo)
{
    jpeg_err_t *e = (jpeg_err_t *)cinfo->err;
    longjmp(e->jump, 1);
}

static bool encode_jpeg(const uint8_t *pix, int w, int h, int ch, int quality, uint8_t **out, size_t *len,
                        mdb_error_t *err)
{
    struct jpeg_compress_struct cinfo;
    jpeg_err_t jerr;
    unsigned char *mem = NULL;
    unsigned long mlen = 0;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_fail;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(mem);
        mdb_error_set(err, MDB_ERR_SYSTEM, EIO, "libjpeg could not encode the image");
        return false;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &mem, &mlen);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = ch;
    cinfo.in_color_space = ch == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (size_t)cinfo.next_scanline * (size_t)w * (size_t)ch);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    /* jpeg_mem_dest allocates with malloc: the caller frees it */
    *out = mem;
    *len = mlen;
    return true;
}

bool wado_render(const wado_pixels_t *px, const wado_render_params_t *p, uint8_t **img, size_t *len, mdb_error_t *err)
{
    *img = NULL;
    *len = 0;
    int ch = px->samples == 3 ? 3 : 1;
    uint8_t *base = ch == 3 ? px->rgb : wado_window_grey(px, p);
    if (!base) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory rendering");
        return false;
    }
    int w, h;
    uint8_t *scaled = wado_fit_viewport(base, px->cols, px->rows, ch, p->vw, p->vh, &w, &h);
    bool ok = false;
    if (!scaled)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory scaling");
    else if (p->jpeg)
        ok = encode_jpeg(scaled, w, h, ch, p->quality, img, len, err);
    else
        ok = encode_png(scaled, w, h, ch, img, len, err);
    if (scaled && scaled != base)
        free(scaled);
    if (base != px->rgb)
        free(base);
    return ok;
}
