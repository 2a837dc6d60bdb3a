/* wado_image.c: from decoded modality values to a PNG or JPEG, for WADO-RS
 * rendered and thumbnail resources (PS3.18 §8.3.5 rendering parameters).
 *
 * The VOI window comes from the request (window=center,width,function),
 * else from the file (WindowCenter/WindowWidth/VOILUTFunction, first
 * value), else from the frame's pixel range (LINEAR_EXACT from min to max).
 * The functions are PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) onto
 * 0..255; MONOCHROME1 is inverted after the window. The viewport
 * (viewport=vw,vh) scales the image to fit, aspect ratio kept: an area
 * average when shrinking, nearest neighbour when enlarging. Encoding is
 * libpng / libjpeg-turbo. */
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

#define THUMB_DEFAULT 128
#define VIEWPORT_MAX 4096

double wado_window_value(double x, double c, double w, int fn)
{
    switch (fn) {
    case WADO_FN_SIGMOID: return 255.0 / (1.0 + exp(-4.0 * (x - c) / w));
    case WADO_FN_LINEAR_EXACT:
        if (x <= c - w / 2)
            return 0;
        if (x > c + w / 2)
            return 255;
        return ((x - c) / w + 0.5) * 255.0;
    default:
        if (x <= c - 0.5 - (w - 1) / 2)
            return 0;
        if (x > c - 0.5 + (w - 1) / 2)
            return 255;
        return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0;
    }
}

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

/* The media type chosen from an Accept value (or the accept= query
 * parameter): 1 PNG, 2 JPEG, 0 none offered. Tokens are compared whole,
 * so image/apng is not image/png; q=0 excludes. */
static int choose_media(const char *accept)
{
    if (!accept || !*accept)
        return 2;
    int best = 0;
    double best_q = -1;
    const char *p = accept;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char item[128];
        snprintf(item, sizeof item, "%.*s", (int)(n < sizeof item ? n : sizeof item - 1), p);
        double q = 1.0;
        char *semi = strchr(item, ';');
        if (semi) {
            char *qp = strstr(semi, "q=");
            if (qp)
                q = strtod(qp + 2, NULL);
            *semi = '\0';
        }
        char *t = item;
        while (isspace((unsigned char)*t))
            t++;
        size_t tl = strlen(t);
        while (tl && isspace((unsigned char)t[tl - 1]))
            t[--tl] = '\0';
        int m = !strcasecmp(t, "image/png") ? 1
                : (!strcasecmp(t, "image/jpeg") || !strcasecmp(t, "image/*") || !strcmp(t, "*/*")) ? 2
                                                                                                     : 0;
        /* an explicit type beats a wildcard of the same weight */
        bool wildcard = strchr(t, '*') != NULL;
        if (m && q > 0 && (q > best_q || (q == best_q && !wildcard && best == 2 && m == 1))) {
            best = m;
            best_q = q;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return best;
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
    int m = choose_media(accept ? accept : req->accept);
    if (!m) {
        api_respond_error(res, 406, "not_acceptable", "rendered images are offered as image/jpeg or image/png (Accept: %.100s)",
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

/* ------------------------------------------------------------ pixels */

/* Window the grey values into 8 bits (rows*cols bytes). */
static uint8_t *window_grey(const wado_pixels_t *px, const wado_render_params_t *p)
{
    size_t n = (size_t)px->rows * (size_t)px->cols;
    uint8_t *out = malloc(n ? n : 1);
    if (!out)
        return NULL;
    double c, w;
    int fn;
    if (p->window_given) {
        c = p->center, w = p->width, fn = p->function;
    } else if (px->has_window) {
        c = px->center, w = px->width, fn = px->function;
    } else {
        double lo = px->grey[0], hi = px->grey[0];
        for (size_t i = 1; i < n; i++) {
            if (px->grey[i] < lo)
                lo = px->grey[i];
            if (px->grey[i] > hi)
                hi = px->grey[i];
        }
        fn = WADO_FN_LINEAR_EXACT;
        c = (lo + hi) / 2;
        w = hi > lo ? hi - lo : 1;
    }
    if (fn == WADO_FN_LINEAR && w < 1)
        w = 1;
    for (size_t i = 0; i < n; i++) {
        double y = wado_window_value(px->grey[i], c, w, fn);
        long v = lrint(y);
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        out[i] = (uint8_t)(px->monochrome1 ? 255 - v : v);
    }
    return out;
}

/* Scale src (w x h, ch channels) to fit vw x vh; returns src itself when no
 * viewport or the size stays the same. */
static uint8_t *fit_viewport(uint8_t *src, int w, int h, int ch, int vw, int vh, int *ow, int *oh)
{
    *ow = w, *oh = h;
    if (vw <= 0 || vh <= 0)
        return src;
    double s = fmin((double)vw / w, (double)vh / h);
    int tw = (int)lrint(w * s), th = (int)lrint(h * s);
    tw = tw < 1 ? 1 : tw > vw ? vw : tw;
    th = th < 1 ? 1 : th > vh ? vh : th;
    if (tw == w && th == h)
        return src;
    uint8_t *dst = malloc((size_t)tw * (size_t)th * (size_t)ch);
    if (!dst)
        return NULL;
    for (int oy = 0; oy < th; oy++) {
        int y0 = (int)((int64_t)oy * h / th), y1 = (int)((int64_t)(oy + 1) * h / th);
        if (y1 <= y0)
            y1 = y0 + 1;
        for (int ox = 0; ox < tw; ox++) {
            int x0 = (int)((int64_t)ox * w / tw), x1 = (int)((int64_t)(ox + 1) * w / tw);
            if (x1 <= x0)
                x1 = x0 + 1;
            for (int c = 0; c < ch; c++) {
                uint32_t sum = 0;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++)
                        sum += src[((size_t)y * w + x) * ch + c];
                uint32_t cnt = (uint32_t)((y1 - y0) * (x1 - x0));
                dst[((size_t)oy * tw + ox) * ch + c] = (uint8_t)((sum + cnt / 2) / cnt);
            }
        }
    }
    *ow = tw, *oh = th;
    return dst;
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
    uint8_t *base = ch == 3 ? px->rgb : window_grey(px, p);
    if (!base) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory rendering");
        return false;
    }
    int w, h;
    uint8_t *scaled = fit_viewport(base, px->cols, px->rows, ch, p->vw, p->vh, &w, &h);
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
