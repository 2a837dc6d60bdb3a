/* wado_window.c: the pure pixel arithmetic of WADO-RS rendering (see
 * wado.h): the VOI window functions, the choice of the media type from an
 * Accept value, windowing a decoded grey frame into 8 bits and fitting an
 * image into a viewport. No I/O, no library beyond libc and libm: unit
 * tested in tests/unit/test_wado_window.c.
 *
 * The VOI window comes from the request (window=center,width,function),
 * else from the file (WindowCenter/WindowWidth/VOILUTFunction, first
 * value), else from the frame's pixel range (LINEAR_EXACT from min to max).
 * The functions are PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) onto
 * 0..255; MONOCHROME1 is inverted after the window. The viewport scales the
 * image to fit, aspect ratio kept: an area average when shrinking, nearest
 * neighbour when enlarging. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "wado.h"

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

/* The media type chosen from an Accept value (or the accept= query
 * parameter): 1 PNG, 2 JPEG, 0 none offered. Tokens are compared whole,
 * so image/apng is not image/png; q=0 excludes. */
int wado_choose_media(const char *accept)
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
        int m = !strcasecmp(t, "image/png")                                                        ? 1
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

/* Window the grey values into 8 bits (rows*cols bytes). */
uint8_t *wado_window_grey(const wado_pixels_t *px, const wado_render_params_t *p)
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
uint8_t *wado_fit_viewport(uint8_t *src, int w, int h, int ch, int vw, int vh, int *ow, int *oh)
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
