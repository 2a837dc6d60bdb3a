/* mdb_extract: parsed header + feature set -> the instance event's typed
 * study/series/instance objects (shape and typing rules in mdb_extract.h).
 *
 * One pass over the top-level elements: each tag is looked up in the set's
 * sorted slot table and converted only if some level lists it, a level asks
 * for '*', or a promoted field needs it. A value is converted once, as JSON
 * text, into a reusable buffer and copied into every level/promoted object
 * that wants it: no JSON tree is built on the worker's path (building and
 * dumping one cost more than reading the file). Sequences convert every
 * non-binary element of their items. Text is decoded per Specific Character
 * Set (item-level sets override their parent's; a per-root override
 * replaces them all). Numbers keep the digits the file stored (normalised to
 * JSON syntax), so no precision is invented or lost.
 *
 * Duplicate tags (broken files) keep the last occurrence, as a dictionary
 * would; the output never repeats a key. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_charset.h"
#include "mdb_dicom_private.h"
#include "mdb_extract.h"

#define TAG_SCS MDB_TAG(0x0008, 0x0005)
#define TAG_SOP_UID MDB_TAG(0x0008, 0x0018)
#define TAG_STUDY_UID MDB_TAG(0x0020, 0x000D)
#define TAG_SERIES_UID MDB_TAG(0x0020, 0x000E)
#define TAG_PIXEL_REP MDB_TAG(0x0028, 0x0103)
#define TAG_LUT_DATA MDB_TAG(0x0028, 0x3006)
#define TAG_LUT_DESCRIPTOR MDB_TAG(0x0028, 0x3002)
#define MAX_PATH_KEY 512

enum { L_STUDY = MDB_LEVEL_STUDY, L_SERIES = MDB_LEVEL_SERIES, L_INSTANCE = MDB_LEVEL_INSTANCE, NLEV = 3 };

struct mdb_extract_ctx {
    size_t max_header;
    mdb_charset_t *cs;
    mdb_buf_t dec;         /* decoded text of one value piece */
    mdb_buf_t val;         /* JSON text of the value being converted */
    mdb_buf_t obj[NLEV];   /* level object bodies ("k":v,"k":v) */
    mdb_buf_t prom[NLEV];  /* promoted object bodies */
    mdb_buf_t inval[NLEV]; /* _invalid list bodies ("k","k") */
    mdb_buf_t repl[NLEV];  /* _replaced list bodies */
    mdb_buf_t nest_inv;    /* keys inside the current top element's sequences */
    mdb_buf_t nest_rep;
    mdb_buf_t level[NLEV]; /* finished level objects */
    mdb_buf_t dicom;       /* finished "dicom" object */
    mdb_buf_t integ;       /* finished "integrity" object, empty when the file is whole */
    mdb_buf_t event;       /* the whole event (fast path) */
    mdb_buf_t uid[3];      /* study, series, SOP instance UID text */
    mdb_dicom_t *dcm;      /* parse buffers, reused file to file */
    const char *override;  /* charset override of the current call */
    bool lenient_uids;     /* extract files lacking UIDs (debugging) */
};

/* Per-call conversion state. */
typedef struct {
    mdb_extract_ctx_t *ctx;
    const mdb_dicom_t *d;
    bool invalid;            /* the value broke its VR */
    bool replaced;           /* text had undecodable bytes */
    char path[MAX_PATH_KEY]; /* "Seq.0." prefix inside sequences */
} conv_t;

typedef struct {
    long pixel_rep;  /* -1 unknown */
    bool has_pixels; /* top level stopped at Pixel Data */
    long lut_first;  /* LUTDescriptor[0] of this data set, -1 unknown */
    int32_t first;   /* this data set's first element (creator lookup) */
} dsinfo_t;

mdb_extract_ctx_t *mdb_extract_ctx_new(size_t max_header_bytes)
{
    mdb_extract_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->max_header = max_header_bytes ? max_header_bytes : MDB_DICOM_DEFAULT_MAX_HEADER;
    if (!(ctx->cs = mdb_charset_new()) || !(ctx->dcm = mdb_dicom_new())) {
        mdb_charset_destroy(ctx->cs);
        free(ctx);
        return NULL;
    }
    return ctx;
}

void mdb_extract_ctx_destroy(mdb_extract_ctx_t *ctx)
{
    if (!ctx)
        return;
    mdb_charset_destroy(ctx->cs);
    mdb_buf_free(&ctx->dec);
    mdb_buf_free(&ctx->val);
    for (int l = 0; l < NLEV; l++) {
        mdb_buf_free(&ctx->obj[l]);
        mdb_buf_free(&ctx->prom[l]);
        mdb_buf_free(&ctx->inval[l]);
        mdb_buf_free(&ctx->repl[l]);
    }
    mdb_buf_free(&ctx->nest_inv);
    mdb_buf_free(&ctx->nest_rep);
    for (int l = 0; l < NLEV; l++) {
        mdb_buf_free(&ctx->level[l]);
        mdb_buf_free(&ctx->uid[l]);
    }
    mdb_buf_free(&ctx->dicom);
    mdb_buf_free(&ctx->integ);
    mdb_buf_free(&ctx->event);
    mdb_dicom_destroy(ctx->dcm);
    free(ctx);
}

void mdb_extract_ctx_require_uids(mdb_extract_ctx_t *ctx, bool require)
{
    ctx->lenient_uids = !require;
}

void mdb_extract_result_clear(mdb_extract_result_t *r)
{
    if (!r)
        return;
    json_decref(r->study);
    json_decref(r->series);
    json_decref(r->instance);
    json_decref(r->dicom);
    json_decref(r->integrity);
    free(r->integrity_json);
    free(r->study_json);
    free(r->series_json);
    free(r->instance_json);
    free(r->dicom_json);
    free(r->study_uid);
    memset(r, 0, sizeof *r);
}

const char *mdb_extract_reason(const mdb_error_t *err)
{
    switch (err->domain) {
    case MDB_ERR_DICOM: return mdb_dicom_reason_name(err->code);
    case MDB_ERR_SECURITY: return "outside_archive";
    case MDB_ERR_IO: return "unreadable";
    case MDB_ERR_NOTFOUND: return "not_found";
    default: return "internal";
    }
}

/* ---- small helpers ---- */

static bool vr_eq(const char *vr, const char *s)
{
    return vr[0] == s[0] && vr[1] == s[1];
}

static const uint8_t *val(const conv_t *c, const mdb_dcm_elem_t *e)
{
    return c->d->buf + e->off;
}

static uint16_t u16(const uint8_t *p, bool le)
{
    return le ? (uint16_t)(p[0] | (p[1] << 8)) : (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t u32(const uint8_t *p, bool le)
{
    return le ? ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24))
              : (((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static uint64_t u64(const uint8_t *p, bool le)
{
    uint64_t a = u32(p, le), b = u32(p + 4, le);
    return le ? (a | (b << 32)) : ((a << 32) | b);
}

static const mdb_dcm_elem_t *find(const mdb_dicom_t *d, int32_t first, uint32_t tag)
{
    const mdb_dcm_elem_t *found = NULL;
    for (int32_t i = first; i >= 0; i = d->elems[i].next)
        if (d->elems[i].tag == tag)
            found = &d->elems[i]; /* the last of duplicates */
    return found;
}

static size_t rtrim_pad(const uint8_t *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    return n;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static long small_int(const mdb_dicom_t *d, const mdb_dcm_elem_t *e)
{
    if (!e || e->flags & MDB_DCM_F_SEQ)
        return -1;
    const uint8_t *p = d->buf + e->off;
    bool le = e->flags & MDB_DCM_F_LE;
    if (e->len == 2)
        return u16(p, le);
    if (e->len == 4 && !(e->vr[0] == 'I' && e->vr[1] == 'S'))
        return (long)u32(p, le);
    return -1;
}

/* ---- JSON text writing ---- */

static inline bool put(mdb_buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap && !mdb_buf_reserve(b, n))
        return false;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

/* Decimal text of an integer into buf (>= 24 bytes); returns its length. */
static size_t fmt_int(char *buf, long long v)
{
    char tmp[24];
    size_t n = 0, o = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[o++] = '-';
    while (n)
        buf[o++] = tmp[--n];
    buf[o] = '\0';
    return o;
}

static bool put_int(mdb_buf_t *b, long long v)
{
    char num[24];
    return put(b, num, fmt_int(num, v));
}

static bool puts_(mdb_buf_t *b, const char *s)
{
    return mdb_buf_append(b, s, strlen(s));
}

/* Does the 8-byte word hold a byte JSON must escape (< 0x20, '"', '\\')? */
static inline bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    uint64_t ctrl = (w - ones * 0x20) & ~w;
    uint64_t q = (quote - ones) & ~quote, b = (bslash - ones) & ~bslash;
    return ((ctrl | q | b) & highs) != 0;
}

/* A JSON string literal of UTF-8 text s[0..n). */
static bool put_jstr(mdb_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!mdb_buf_reserve(b, n + 2))
        return false;
    b->data[b->len++] = '"';
    size_t run = 0, i = 0;
    for (; i + 8 <= n; i += 8) { /* skip clean 8-byte words */
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (word_needs_escape(w))
            break;
    }
    for (; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        if (!put(b, s + run, i - run))
            return false;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        if (!put(b, esc, el))
            return false;
        run = i + 1;
    }
    return put(b, s + run, n - run) && put(b, "\"", 1);
}

/* Object member separator and key. Keys are DICOM keywords, hex tags and
 * snake_case field names: never anything JSON would need escaped. */
static bool put_key(mdb_buf_t *b, const char *key)
{
    size_t n = strlen(key);
    if (b->len + n + 5 > b->cap && !mdb_buf_reserve(b, n + 4))
        return false;
    char *o = b->data + b->len;
    if (b->len > 0)
        *o++ = ',';
    *o++ = '"';
    memcpy(o, key, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    *o = '\0';
    b->len = (size_t)(o - b->data);
    return true;
}

/* ---- value conversion (appends JSON text to ctx->val) ---- */

/* Bytes 0x01..0x7F except ESC decode to themselves in every character set
 * metadb knows (all are ASCII-compatible outside escape sequences), so such
 * text skips the decoder. */
static bool plain_ascii(const uint8_t *s, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, esc;
        memcpy(&w, s + i, 8);
        esc = w ^ (ones * 0x1b);
        if ((w & highs) || (((w - ones) & ~w & highs)) || (((esc - ones) & ~esc & highs)))
            return false;
    }
    for (; i < n; i++)
        if (s[i] == 0 || s[i] >= 0x80 || s[i] == 0x1b)
            return false;
    return true;
}

/* Decoded text of s[0..n) as a JSON string. */
static bool default_string(conv_t *c, const uint8_t *s, size_t n)
{
    if (plain_ascii(s, n))
        return put_jstr(&c->ctx->val, (const char *)s, n);
    mdb_buf_t *d = &c->ctx->dec;
    d->len = 0;
    if (!mdb_charset_decode(c->ctx->cs, (const char *)s, n, MDB_CS_DEFAULT, d, &c->replaced))
        return false;
    return put_jstr(&c->ctx->val, d->data ? d->data : "", d->len);
}

static bool text_string(conv_t *c, const uint8_t *s, size_t n, mdb_cs_kind_t kind)
{
    if (plain_ascii(s, n)) {
        while (n > 0 && s[n - 1] == ' ')
            n--;
        return put_jstr(&c->ctx->val, (const char *)s, n);
    }
    mdb_buf_t *d = &c->ctx->dec;
    d->len = 0;
    if (!mdb_charset_decode(c->ctx->cs, (const char *)s, n, kind, d, &c->replaced))
        return false;
    size_t len = d->len;
    while (len > 0 && d->data[len - 1] == ' ')
        len--; /* padding may follow a multi-byte sequence */
    return put_jstr(&c->ctx->val, d->data ? d->data : "", len);
}

typedef bool (*piece_fn)(conv_t *c, const uint8_t *s, size_t n);

/* Split s[0..n) on '\': one piece -> the value itself, several -> array. */
static bool split_values(conv_t *c, const uint8_t *s, size_t n, piece_fn fn)
{
    const uint8_t *bs = memchr(s, '\\', n);
    if (!bs)
        return fn(c, s, n);
    mdb_buf_t *v = &c->ctx->val;
    if (!put(v, "[", 1))
        return false;
    size_t i = 0;
    for (bool first = true;; first = false) {
        size_t j = i;
        while (j < n && s[j] != '\\')
            j++;
        if ((!first && !put(v, ",", 1)) || !fn(c, s + i, j - i))
            return false;
        if (j >= n)
            break;
        i = j + 1;
    }
    return put(v, "]", 1);
}

static bool piece_default(conv_t *c, const uint8_t *s, size_t n)
{
    return default_string(c, s, n);
}

static bool piece_ae(conv_t *c, const uint8_t *s, size_t n)
{
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    return default_string(c, s, n);
}

static bool piece_text(conv_t *c, const uint8_t *s, size_t n)
{
    return text_string(c, s, rtrim_pad(s, n), MDB_CS_TEXT);
}

/* One PN value: component groups split on '=', decoded separately, empty
 * trailing groups dropped. */
static bool piece_pn(conv_t *c, const uint8_t *s, size_t n)
{
    if (plain_ascii(s, n) && (n == 0 || s[n - 1] != '=')) /* no trailing empty groups to drop */
        return put_jstr(&c->ctx->val, (const char *)s, n);
    mdb_buf_t *d = &c->ctx->dec;
    size_t keep = 0, ngroups = 0, i = 0;
    d->len = 0;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '=')
            j++;
        if (ngroups > 0 && !mdb_buf_append(d, "=", 1))
            return false;
        if (!mdb_charset_decode(c->ctx->cs, (const char *)s + i, j - i, MDB_CS_PN, d, &c->replaced))
            return false;
        ngroups++;
        if (j > i)
            keep = d->len;
        if (j >= n)
            break;
        i = j + 1;
    }
    return put_jstr(&c->ctx->val, d->data ? d->data : "", keep);
}

static bool all_ws(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_ws(s[i]))
            return false;
    return true;
}

/* Decimal string (Python float() syntax without inf/nan/underscores) ->
 * JSON number text in out (no sign '+', no leading zeros, digits kept).
 * *value gets its double. False when it is not such a number. */
static bool decimal_to_json(const uint8_t *s, size_t n, char *out, size_t cap, double *value, bool *integral_form)
{
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    if (n == 0 || n + 4 > cap)
        return false;
    size_t i = 0, o = 0;
    if (s[i] == '+' || s[i] == '-')
        if (s[i++] == '-')
            out[o++] = '-';
    size_t int_start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    size_t int_len = i - int_start, frac_start = 0, frac_len = 0;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        frac_len = i - frac_start;
    }
    if (int_len == 0 && frac_len == 0)
        return false;
    /* integer part without leading zeros ("0" when none is left) */
    size_t z = int_start;
    while (z < int_start + int_len - (int_len > 0 ? 1 : 0) && s[z] == '0')
        z++;
    if (int_len == 0)
        out[o++] = '0';
    else {
        memcpy(out + o, s + z, int_start + int_len - z);
        o += int_start + int_len - z;
    }
    *integral_form = frac_len == 0;
    if (frac_len > 0) {
        out[o++] = '.';
        memcpy(out + o, s + frac_start, frac_len);
        o += frac_len;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        out[o++] = 'e';
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            out[o++] = (char)s[i++];
        size_t e0 = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            out[o++] = (char)s[i++];
        if (i == e0)
            return false;
        *integral_form = false;
    }
    if (i != n)
        return false;
    out[o] = '\0';
    if (*integral_form && int_len < 19) {
        /* the common case, exactly: an integer of up to 18 digits */
        long long v = 0;
        for (size_t k = z; k < int_start + int_len; k++)
            v = v * 10 + (s[k] - '0');
        *value = out[0] == '-' ? -(double)v : (double)v;
        return true;
    }
    if (!*integral_form && i == frac_start + frac_len && int_len + frac_len < 300) {
        *value = 0.5; /* a plain decimal without exponent: always finite, never integral-checked */
        return true;
    }
    errno = 0;
    *value = strtod(out, NULL);
    return isfinite(*value);
}

static bool invalid_string(conv_t *c, const uint8_t *s, size_t n)
{
    c->invalid = true;
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    return default_string(c, s, n);
}

static bool piece_is(conv_t *c, const uint8_t *s, size_t n)
{
    if (all_ws(s, n))
        return puts_(&c->ctx->val, "null");
    char num[96];
    double d;
    bool integral;
    if (!decimal_to_json(s, n, num, sizeof num, &d, &integral))
        return invalid_string(c, s, n);
    size_t nl = strlen(num);
    if (integral && nl < 19)
        return puts_(&c->ctx->val, strcmp(num, "-0") ? num : "0");
    if (!integral) {
        errno = 0;
        d = strtod(num, NULL); /* "1.0", "1e3": an integer written as a real */
    }
    if (!isfinite(d) || d != floor(d) || fabs(d) >= 9.2e18)
        return invalid_string(c, s, n);
    return put_int(&c->ctx->val, (long long)d);
}

static bool piece_ds(conv_t *c, const uint8_t *s, size_t n)
{
    if (all_ws(s, n))
        return puts_(&c->ctx->val, "null");
    char num[96];
    double d;
    bool integral;
    if (!decimal_to_json(s, n, num, sizeof num, &d, &integral))
        return invalid_string(c, s, n);
    if (integral)
        strcat(num, ".0"); /* a DS is a decimal: always a JSON real, never an integer */
    return puts_(&c->ctx->val, num);
}

static bool put_real(conv_t *c, double v)
{
    char num[40];
    if (!isfinite(v)) {
        c->invalid = true;
        return put_jstr(&c->ctx->val,
                        isnan(v) ? "NaN"
                        : v > 0  ? "Infinity"
                                 : "-Infinity",
                        isnan(v) ? 3
                        : v > 0  ? 8
                                 : 9);
    }
    /* most stored reals are short decimals (0.5, 1.25, 949.075): print
     * m / 10^k exactly when that round-trips, else the full %.17g */
    static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    if (fabs(v) < 1e12)
        for (int k = 0; k <= 6; k++) {
            double scaled = v * p10[k];
            long long m = llround(scaled);
            if ((double)m != scaled || (double)m / p10[k] != v)
                continue;
            char digits[24];
            size_t dl = fmt_int(digits, m < 0 ? -m : m), o = 0;
            if (v < 0 || (v == 0 && signbit(v)))
                num[o++] = '-';
            if ((size_t)k >= dl) { /* 0.00ddd */
                num[o++] = '0';
                num[o++] = '.';
                for (size_t z = dl; z < (size_t)k; z++)
                    num[o++] = '0';
                memcpy(num + o, digits, dl);
                o += dl;
            } else {
                memcpy(num + o, digits, dl - (size_t)k);
                o += dl - (size_t)k;
                num[o++] = '.';
                if (k == 0)
                    num[o++] = '0';
                memcpy(num + o, digits + dl - k, (size_t)k);
                o += (size_t)k;
            }
            return put(&c->ctx->val, num, o);
        }
    snprintf(num, sizeof num, "%.17g", v);
    if (!strpbrk(num, ".eEn"))
        strcat(num, ".0");
    return puts_(&c->ctx->val, num);
}

static bool lut_descriptor(uint32_t tag)
{
    return tag == TAG_LUT_DESCRIPTOR || tag == MDB_TAG(0x0028, 0x1101) || tag == MDB_TAG(0x0028, 0x1102) ||
           tag == MDB_TAG(0x0028, 0x1103);
}

/* Binary numbers (US SS UL SL UV SV FL FD) and AT. false = OOM; *none =
 * nothing written (length not a multiple of the value size). */
static bool binary_numbers(conv_t *c, const mdb_dcm_elem_t *e, const char *vr, bool *none)
{
    size_t size = vr_eq(vr, "US") || vr_eq(vr, "SS")                      ? 2
                  : vr_eq(vr, "FD") || vr_eq(vr, "UV") || vr_eq(vr, "SV") ? 8
                                                                          : 4;
    const uint8_t *p = val(c, e);
    bool le = e->flags & MDB_DCM_F_LE;
    mdb_buf_t *v = &c->ctx->val;
    *none = false;
    if (e->len % size != 0) {
        c->invalid = true;
        *none = true;
        return true;
    }
    size_t count = e->len / size;
    if (count == 0)
        return puts_(v, "null");
    if (count > 1 && !put(v, "[", 1))
        return false;
    for (size_t i = 0; i < count; i++, p += size) {
        char num[40];
        bool ok = true;
        if (i > 0 && !put(v, ",", 1))
            return false;
        if (vr_eq(vr, "US"))
            fmt_int(num, u16(p, le));
        else if (vr_eq(vr, "SS")) {
            int x = (int16_t)u16(p, le);
            fmt_int(num, i == 0 && x < 0 && lut_descriptor(e->tag) ? x + 65536 : x);
        } else if (vr_eq(vr, "UL"))
            fmt_int(num, u32(p, le));
        else if (vr_eq(vr, "SL"))
            fmt_int(num, (int32_t)u32(p, le));
        else if (vr_eq(vr, "UV")) {
            uint64_t x = u64(p, le);
            if (x > (uint64_t)INT64_MAX) {
                c->invalid = true;
                ok = put_real(c, (double)x);
                num[0] = '\0';
            } else
                snprintf(num, sizeof num, "%llu", (unsigned long long)x);
        } else if (vr_eq(vr, "SV"))
            snprintf(num, sizeof num, "%lld", (long long)(int64_t)u64(p, le));
        else if (vr_eq(vr, "FL") || vr_eq(vr, "FD")) {
            double f;
            if (vr_eq(vr, "FL")) {
                uint32_t bits = u32(p, le);
                float x;
                memcpy(&x, &bits, 4);
                f = x;
            } else {
                uint64_t bits = u64(p, le);
                memcpy(&f, &bits, 8);
            }
            ok = put_real(c, f);
            num[0] = '\0';
        } else { /* AT */
            snprintf(num, sizeof num, "\"%04X%04X\"", u16(p, le), u16(p + 2, le));
        }
        if (!ok || (num[0] && !puts_(v, num)))
            return false;
    }
    return count == 1 || put(v, "]", 1);
}

/* The VR to convert with: explicit VR as read (UN of a known public tag ->
 * the dictionary's), implicit from the dictionary / private dictionary /
 * the feature list's hint; ambiguous VRs resolved as pydicom does. */
static void resolve_vr(const conv_t *c, const mdb_dcm_elem_t *e, const char *hint, const mdb_dicom_dict_entry_t *dict,
                       const dsinfo_t *ds, char vr[3])
{
    uint32_t tag = e->tag;
    uint16_t group = MDB_TAG_GROUP(tag), elem = MDB_TAG_ELEMENT(tag);
    vr[0] = vr[1] = vr[2] = '\0';
    if (e->flags & MDB_DCM_F_EXPLICIT) {
        vr[0] = e->vr[0];
        vr[1] = e->vr[1];
        if (!vr_eq(vr, "UN"))
            return;
        if (group & 1) {
            if (hint && hint[0])
                memcpy(vr, hint, 2);
            return;
        }
        if (e->len >= 0xFFFF)
            return;
    } else if (group & 1) {
        if (hint && hint[0]) {
            memcpy(vr, hint, 2);
            return;
        }
        if (elem >= 0x0010 && elem <= 0x00FF) {
            memcpy(vr, "LO", 2); /* private creator */
            return;
        }
        const mdb_dcm_elem_t *ce = elem >= 0x1000 ? find(c->d, ds->first, MDB_TAG(group, elem >> 8)) : NULL;
        if (ce && ce->len > 0 && ce->len <= 64 && !(ce->flags & MDB_DCM_F_SEQ)) {
            char creator[65];
            size_t n = rtrim_pad(val(c, ce), ce->len);
            memcpy(creator, val(c, ce), n);
            creator[n] = '\0';
            const char *pv = mdb_dicom_private_vr(tag, creator);
            if (pv)
                memcpy(vr, pv, 2);
        }
        if (!vr[0])
            memcpy(vr, "UN", 2);
        return;
    }
    const mdb_dicom_dict_entry_t *de = dict ? dict : mdb_dicom_dict_by_tag(tag);
    if (!de || !de->vr[0]) {
        if (!(e->flags & MDB_DCM_F_EXPLICIT))
            memcpy(vr, elem == 0 ? "UL" : "UN", 2);
        return;
    }
    memcpy(vr, de->vr, 2);
    if (!de->vr_alt[0])
        return;
    if (tag == TAG_LUT_DATA) {
        memcpy(vr, ds->lut_first == 1 ? "US" : "OW", 2);
    } else if ((vr_eq(de->vr, "US") && vr_eq(de->vr_alt, "SS")) || (vr_eq(de->vr, "SS") && vr_eq(de->vr_alt, "US"))) {
        bool us = (ds->pixel_rep < 0 && !ds->has_pixels) || ds->pixel_rep == 0;
        memcpy(vr, us ? "US" : "SS", 2);
    } else {
        memcpy(vr, "OW", 2); /* OB or OW, US or OW: bulk */
    }
}

static bool convert_dataset(conv_t *c, int32_t first, dsinfo_t parent);

static bool convert_sequence(conv_t *c, const mdb_dcm_elem_t *e, const dsinfo_t *ds)
{
    mdb_buf_t *v = &c->ctx->val;
    size_t plen = strlen(c->path), idx = 0;
    if (!put(v, "[", 1))
        return false;
    for (int32_t it = e->items; it >= 0; it = c->d->items[it].next, idx++) {
        snprintf(c->path + plen, sizeof c->path - plen, "%zu.", idx);
        bool ok = (idx == 0 || put(v, ",", 1)) && convert_dataset(c, c->d->items[it].first, *ds);
        c->path[plen] = '\0';
        if (!ok)
            return false;
    }
    return put(v, "]", 1);
}

/* Append the element's JSON value to ctx->val. false = OOM; *none = the
 * element is left out (binary VR, or a length that breaks its VR). */
static bool convert_elem(conv_t *c, const mdb_dcm_elem_t *e, const char *hint, const mdb_dicom_dict_entry_t *dict,
                         const dsinfo_t *ds, bool *none)
{
    *none = false;
    if (e->flags & MDB_DCM_F_FRAGMENTS) {
        *none = true;
        return true;
    }
    if (e->flags & MDB_DCM_F_SEQ)
        return convert_sequence(c, e, ds);
    char vr[3];
    resolve_vr(c, e, hint, dict, ds, vr);
    const uint8_t *s = val(c, e);
    size_t n = e->len;
    if (vr_eq(vr, "AE"))
        return split_values(c, s, rtrim_pad(s, n), piece_ae);
    if (vr_eq(vr, "AS") || vr_eq(vr, "CS") || vr_eq(vr, "DA") || vr_eq(vr, "DT") || vr_eq(vr, "TM") || vr_eq(vr, "UI"))
        return split_values(c, s, rtrim_pad(s, n), piece_default);
    if (vr_eq(vr, "UR")) {
        while (n > 0 && is_ws(s[n - 1]))
            n--;
        return default_string(c, s, n);
    }
    if (vr_eq(vr, "SH") || vr_eq(vr, "LO") || vr_eq(vr, "UC"))
        return split_values(c, s, n, piece_text);
    if (vr_eq(vr, "LT") || vr_eq(vr, "ST") || vr_eq(vr, "UT"))
        return text_string(c, s, rtrim_pad(s, n), MDB_CS_TEXT);
    if (vr_eq(vr, "PN"))
        return split_values(c, s, rtrim_pad(s, n), piece_pn);
    if (vr_eq(vr, "IS"))
        return split_values(c, s, rtrim_pad(s, n), piece_is);
    if (vr_eq(vr, "DS")) {
        while (n > 0 && is_ws(s[0]))
            s++, n--;
        return split_values(c, s, rtrim_pad(s, n), piece_ds);
    }
    if (vr_eq(vr, "US") || vr_eq(vr, "SS") || vr_eq(vr, "UL") || vr_eq(vr, "SL") || vr_eq(vr, "FL") ||
        vr_eq(vr, "FD") || vr_eq(vr, "UV") || vr_eq(vr, "SV") || vr_eq(vr, "AT"))
        return binary_numbers(c, e, vr, none);
    *none = true; /* OB OD OF OL OV OW UN, unknown VRs */
    return true;
}

static bool wanted_public(uint32_t tag)
{
    uint16_t g = MDB_TAG_GROUP(tag);
    return !(g & 1) && MDB_TAG_ELEMENT(tag) != 0 && g > 0x0002 && g != 0xFFFE;
}

/* (gggg,0010-00FF) of an odd group: a private creator element (pydicom's
 * is_private_creator). */
static bool is_private_creator(uint32_t tag)
{
    uint16_t e = MDB_TAG_ELEMENT(tag);
    return (MDB_TAG_GROUP(tag) & 1) && e >= 0x0010 && e <= 0x00FF;
}

static void key_for(uint32_t tag, char out[16], const char **key)
{
    const mdb_dicom_dict_entry_t *de = !(MDB_TAG_GROUP(tag) & 1) ? mdb_dicom_dict_by_tag(tag) : NULL;
    if (de && de->tag == tag && de->keyword[0]) {
        *key = de->keyword;
        return;
    }
    snprintf(out, 16, "%08X", tag);
    *key = out;
}

static void select_charset(conv_t *c, const mdb_dcm_elem_t *scs)
{
    if (c->ctx->override)
        mdb_charset_select(c->ctx->cs, c->ctx->override, strlen(c->ctx->override), NULL);
    else if (!scs || scs->flags & MDB_DCM_F_SEQ)
        mdb_charset_select(c->ctx->cs, NULL, 0, NULL);
    else
        mdb_charset_select(c->ctx->cs, (const char *)val(c, scs), scs->len, NULL);
}

/* Append "prefix+key" to a JSON list body. */
static bool note_key(mdb_buf_t *list, const char *prefix, const char *key)
{
    char buf[MAX_PATH_KEY + 80];
    int n = snprintf(buf, sizeof buf, "%s%s", prefix, key);
    if (n < 0)
        return false;
    return (list->len == 0 || put(list, ",", 1)) && put_jstr(list, buf, strlen(buf));
}

/* Nested keys are kept raw, NUL-separated, until the top-level key that
 * holds them is known. */
static bool note_raw(mdb_buf_t *list, const char *prefix, const char *key)
{
    return puts_(list, prefix) && puts_(list, key) && put(list, "", 1);
}

static bool note_nested(mdb_buf_t *list, const char *key, const mdb_buf_t *nested)
{
    char prefix[MAX_PATH_KEY];
    snprintf(prefix, sizeof prefix, "%s.", key);
    for (size_t i = 0; i < nested->len;) {
        const char *entry = nested->data + i;
        if (!note_key(list, prefix, entry))
            return false;
        i += strlen(entry) + 1;
    }
    return true;
}

static dsinfo_t dsinfo_for(const conv_t *c, int32_t first, dsinfo_t parent)
{
    dsinfo_t ds = parent;
    ds.first = first;
    long pr = small_int(c->d, find(c->d, first, TAG_PIXEL_REP));
    if (pr >= 0)
        ds.pixel_rep = pr;
    const mdb_dcm_elem_t *lut = find(c->d, first, TAG_LUT_DESCRIPTOR);
    ds.lut_first =
        lut && lut->len >= 2 && !(lut->flags & MDB_DCM_F_SEQ) ? u16(val(c, lut), lut->flags & MDB_DCM_F_LE) : -1;
    return ds;
}

/* Tags of a data set strictly increasing (the normal case: no duplicates)? */
static bool strictly_ordered(const mdb_dicom_t *d, int32_t first)
{
    uint32_t prev = 0;
    bool any = false;
    for (int32_t i = first; i >= 0; i = d->elems[i].next) {
        if (any && d->elems[i].tag <= prev)
            return false;
        prev = d->elems[i].tag;
        any = true;
    }
    return true;
}

/* Does a later element of the same data set carry the same tag? */
static bool superseded(const mdb_dicom_t *d, int32_t i)
{
    for (int32_t j = d->elems[i].next; j >= 0; j = d->elems[j].next)
        if (d->elems[j].tag == d->elems[i].tag)
            return true;
    return false;
}

/* A sequence item: every non-binary element, keyed like a level. */
static bool convert_dataset(conv_t *c, int32_t first, dsinfo_t parent)
{
    mdb_buf_t *v = &c->ctx->val;
    dsinfo_t ds = dsinfo_for(c, first, parent);
    ds.has_pixels = false;
    const mdb_dcm_elem_t *scs = find(c->d, first, TAG_SCS);
    char saved[160] = "";
    bool ordered = strictly_ordered(c->d, first), ok = true, any = false;
    if (scs && !c->ctx->override) {
        snprintf(saved, sizeof saved, "%s", mdb_charset_current(c->ctx->cs));
        select_charset(c, scs);
    }
    ok = put(v, "{", 1);
    for (int32_t i = first; ok && i >= 0; i = c->d->elems[i].next) {
        const mdb_dcm_elem_t *e = &c->d->elems[i];
        if (MDB_TAG_ELEMENT(e->tag) == 0 || MDB_TAG_GROUP(e->tag) == 0x0002 || (!ordered && superseded(c->d, i)))
            continue; /* group lengths, stray meta, earlier duplicates */
        bool inv = c->invalid, rep = c->replaced, none = false;
        c->invalid = c->replaced = false;
        char hex[16];
        const char *key;
        key_for(e->tag, hex, &key);
        size_t mark = v->len, plen = strlen(c->path);
        ok = (!any || put(v, ",", 1)) && put_jstr(v, key, strlen(key)) && put(v, ":", 1);
        if (e->flags & MDB_DCM_F_SEQ)
            snprintf(c->path + plen, sizeof c->path - plen, "%s.", key);
        ok = ok && convert_elem(c, e, NULL, NULL, &ds, &none);
        c->path[plen] = '\0';
        if (ok && c->invalid && !(e->flags & MDB_DCM_F_SEQ))
            ok = note_raw(&c->ctx->nest_inv, c->path, key);
        if (ok && c->replaced && !(e->flags & MDB_DCM_F_SEQ))
            ok = note_raw(&c->ctx->nest_rep, c->path, key);
        c->invalid = inv || c->invalid;
        c->replaced = rep || c->replaced;
        if (none) {
            v->len = mark; /* left out: take the key back */
            v->data[v->len] = '\0';
        } else
            any = true;
    }
    if (scs && !c->ctx->override)
        mdb_charset_select(c->ctx->cs, saved, strlen(saved), NULL);
    return ok && put(v, "}", 1);
}

/* The text of a top-level UID element (UI rules) into out; false with err
 * (missing_uid, or OOM). */
static bool uid_text(conv_t *c, int32_t root, uint32_t tag, const char *name, mdb_buf_t *out, mdb_error_t *err)
{
    out->len = 0;
    const mdb_dcm_elem_t *e = find(c->d, root, tag);
    const char *why = "missing";
    if (e && !(e->flags & (MDB_DCM_F_SEQ | MDB_DCM_F_FRAGMENTS))) {
        const uint8_t *s = val(c, e);
        size_t n = rtrim_pad(s, e->len);
        if (n == 0)
            why = "empty";
        else if (memchr(s, '\\', n))
            why = "multi-valued";
        else {
            bool rep = false;
            if (mdb_charset_decode(c->ctx->cs, (const char *)s, n, MDB_CS_DEFAULT, out, &rep))
                return true;
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
    }
    mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMISSINGUID, "%s is %s", name, why);
    return false;
}

/* Finish one level into ctx->level[l]: body + UIDs not listed + promoted +
 * _invalid/_replaced. uids[k] may be NULL (lenient mode). */
static bool finish_level(mdb_extract_ctx_t *ctx, int l, const mdb_buf_t *const uids[2], const char *const uid_keys[2],
                         const bool listed[2])
{
    mdb_buf_t *b = &ctx->obj[l];
    for (int k = 0; k < 2; k++)
        if (uids[k] && uids[k]->data && !listed[k] &&
            !(put_key(b, uid_keys[k]) && put_jstr(b, uids[k]->data, uids[k]->len)))
            return false;
    if (!put_key(b, "promoted") || !put(b, "{", 1) ||
        !put(b, ctx->prom[l].data ? ctx->prom[l].data : "", ctx->prom[l].len) || !put(b, "}", 1))
        return false;
    if (ctx->inval[l].len &&
        !(put_key(b, "_invalid") && put(b, "[", 1) && put(b, ctx->inval[l].data, ctx->inval[l].len) && put(b, "]", 1)))
        return false;
    if (ctx->repl[l].len &&
        !(put_key(b, "_replaced") && put(b, "[", 1) && put(b, ctx->repl[l].data, ctx->repl[l].len) && put(b, "]", 1)))
        return false;
    mdb_buf_t *o = &ctx->level[l];
    o->len = 0;
    return put(o, "{", 1) && put(o, b->data, b->len) && put(o, "}", 1);
}

static void reset_buffers(mdb_extract_ctx_t *ctx)
{
    for (int l = 0; l < NLEV; l++)
        ctx->obj[l].len = ctx->prom[l].len = ctx->inval[l].len = ctx->repl[l].len = 0;
}

/* Record the keys a converted top-level value broke, for each level it went to. */
static bool note_flags(conv_t *c, unsigned mask, const char *key)
{
    mdb_extract_ctx_t *ctx = c->ctx;
    for (int l = 0; l < NLEV; l++) {
        if (!(mask & (1u << l)))
            continue;
        if (c->invalid &&
            !(ctx->nest_inv.len ? note_nested(&ctx->inval[l], key, &ctx->nest_inv) : note_key(&ctx->inval[l], "", key)))
            return false;
        if (c->replaced &&
            !(ctx->nest_rep.len ? note_nested(&ctx->repl[l], key, &ctx->nest_rep) : note_key(&ctx->repl[l], "", key)))
            return false;
    }
    return true;
}

/* A string taken from the file as it is (transfer syntax, character set
 * name), as a JSON string: bytes read as ISO 8859-1 like any non-text VR. */
static bool put_raw_text(conv_t *c, mdb_buf_t *out, const char *raw)
{
    mdb_buf_t *d = &c->ctx->dec;
    d->len = 0;
    bool rep = false;
    return mdb_charset_decode(c->ctx->cs, raw, strlen(raw), MDB_CS_DEFAULT, d, &rep) &&
           put_jstr(out, d->data ? d->data : "", d->len);
}

/* The event's "integrity" object (mdb_extract.h) into ctx->integ; left
 * empty when the file holds everything it declares. */
static bool integrity_text(mdb_extract_ctx_t *ctx, const mdb_dicom_t *d)
{
    const mdb_dcm_pixels_t *px = &d->pixels;
    mdb_buf_t *b = &ctx->integ;
    char num[160];
    b->len = 0;
    if (!px->truncated)
        return true;
    if (!puts_(b, "{\"pixel_data_truncated\":true"))
        return false;
    if (px->expected_known) {
        snprintf(num, sizeof num, ",\"pixel_data_bytes_expected\":%llu", (unsigned long long)px->expected);
        if (!puts_(b, num))
            return false;
    }
    snprintf(num, sizeof num, ",\"pixel_data_bytes_present\":%llu", (unsigned long long)px->present);
    return puts_(b, num) && (!px->encapsulated || puts_(b, ",\"pixel_data_encapsulated\":true")) && put(b, "}", 1);
}

static bool extract_tree(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const mdb_dicom_t *d,
                         mdb_extract_result_t *out, mdb_error_t *err)
{
    (void)out;
    conv_t c;
    memset(&c, 0, sizeof c);
    c.ctx = ctx;
    c.d = d;
    reset_buffers(ctx);
    bool star[NLEV], ok = true;
    unsigned creators = 0; /* levels asking for "Private Creator" */
    for (int l = 0; l < NLEV; l++) {
        star[l] = mdb_features_star(fs, l);
        if (mdb_features_private_creators(fs, l))
            creators |= 1u << l;
    }
    /* one walk for what the conversion needs to know up front */
    const mdb_dcm_elem_t *scs = NULL, *pr = NULL, *lut = NULL;
    bool ordered = true;
    uint32_t prev = 0;
    for (int32_t i = d->root; i >= 0; i = d->elems[i].next) {
        const mdb_dcm_elem_t *e = &d->elems[i];
        if (i != d->root && e->tag <= prev)
            ordered = false;
        prev = e->tag;
        if (e->tag == TAG_SCS)
            scs = e;
        else if (e->tag == TAG_PIXEL_REP)
            pr = e;
        else if (e->tag == TAG_LUT_DESCRIPTOR)
            lut = e;
    }
    dsinfo_t root = {
        .pixel_rep = small_int(d, pr), .has_pixels = d->stopped_at_pixels, .lut_first = -1, .first = d->root};
    if (lut && lut->len >= 2 && !(lut->flags & MDB_DCM_F_SEQ))
        root.lut_first = u16(val(&c, lut), lut->flags & MDB_DCM_F_LE);
    select_charset(&c, scs);
    /* the three UIDs first: a file without them is refused before any work,
     * and the UID keys always carry the UID text (whatever VR the file gave) */
    static const uint32_t uid_tags[3] = {TAG_STUDY_UID, TAG_SERIES_UID, TAG_SOP_UID};
    static const char *const uid_names[3] = {"StudyInstanceUID (0020,000D)", "SeriesInstanceUID (0020,000E)",
                                             "SOPInstanceUID (0008,0018)"};
    const mdb_buf_t *uid[3];
    for (int k = 0; k < 3; k++) {
        mdb_error_t uerr = {0};
        uid[k] = &ctx->uid[k];
        if (!uid_text(&c, d->root, uid_tags[k], uid_names[k], &ctx->uid[k], &uerr)) {
            if (uerr.domain == MDB_ERR_SYSTEM || !ctx->lenient_uids) {
                *err = uerr;
                return false;
            }
            uid[k] = NULL;
        }
    }
    bool listed_study_uid[NLEV] = {false}, listed_series_uid[NLEV] = {false}, listed_sop_uid[NLEV] = {false};
    mdb_buf_t *v = &ctx->val;

    for (int32_t i = d->root; ok && i >= 0; i = d->elems[i].next) {
        const mdb_dcm_elem_t *e = &d->elems[i];
        const mdb_feature_slot_t *slot = mdb_features_lookup(fs, e->tag);
        unsigned mask = slot ? slot->levels : 0;
        if (wanted_public(e->tag))
            for (int l = 0; l < NLEV; l++)
                if (star[l])
                    mask |= 1u << l;
        if (creators && is_private_creator(e->tag))
            mask |= creators;
        bool promoted = slot && slot->promoted >= 0;
        if ((!mask && !promoted) || (!ordered && superseded(d, i)))
            continue;
        c.invalid = c.replaced = false;
        c.path[0] = '\0';
        ctx->nest_inv.len = ctx->nest_rep.len = 0;
        char hex[16];
        const char *key = slot ? slot->keyword : NULL;
        if (!key)
            key_for(e->tag, hex, &key);
        int uk = e->tag == TAG_STUDY_UID ? 0 : e->tag == TAG_SERIES_UID ? 1 : e->tag == TAG_SOP_UID ? 2 : -1;
        bool none = false;
        if (!promoted && uk < 0 && (mask & (mask - 1)) == 0) {
            /* one level only (the common case): convert straight into it */
            int l = mask == 1 ? 0 : mask == 2 ? 1 : 2;
            mdb_buf_t *o = &ctx->obj[l], tmp;
            size_t mark = o->len;
            if (!put_key(o, key)) {
                ok = false;
                break;
            }
            tmp = *v, *v = *o, *o = tmp; /* the conversion appends to ctx->val */
            ok = convert_elem(&c, e, slot ? slot->vr : NULL, slot ? slot->dict : NULL, &root, &none);
            tmp = *v, *v = *o, *o = tmp;
            if (!ok)
                break;
            if (none) {
                o->len = mark;
                o->data[mark] = '\0';
            }
            if (c.invalid || c.replaced)
                ok = note_flags(&c, mask, key);
            continue;
        }
        v->len = 0;
        if (!convert_elem(&c, e, slot ? slot->vr : NULL, slot ? slot->dict : NULL, &root, &none)) {
            ok = false;
            break;
        }
        if (uk >= 0 && uid[uk]) {
            v->len = 0;
            c.invalid = c.replaced = false;
            if (!put_jstr(v, uid[uk]->data, uid[uk]->len)) {
                ok = false;
                break;
            }
            none = false;
        }
        for (int l = 0; l < NLEV && !none; l++) {
            if (!(mask & (1u << l)))
                continue;
            if (!put_key(&ctx->obj[l], key) || !put(&ctx->obj[l], v->data, v->len)) {
                ok = false;
                break;
            }
            listed_study_uid[l] |= e->tag == TAG_STUDY_UID;
            listed_series_uid[l] |= e->tag == TAG_SERIES_UID;
            listed_sop_uid[l] |= e->tag == TAG_SOP_UID;
        }
        if (ok && (c.invalid || c.replaced))
            ok = note_flags(&c, mask, key);
        if (ok && !none && promoted)
            for (int32_t p = slot->promoted; ok && p >= 0; p = mdb_features_promoted_next(fs, p)) {
                const mdb_promoted_t *pf = mdb_features_promoted(fs, (size_t)p);
                ok = put_key(&ctx->prom[pf->level], pf->field) && put(&ctx->prom[pf->level], v->data, v->len);
            }
    }
    if (!ok) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while extracting");
        return false;
    }

    const mdb_buf_t *study_uids[2] = {uid[0], NULL}, *series_uids[2] = {uid[1], uid[0]}, *sop_uids[2] = {uid[2], NULL};
    const char *study_keys[2] = {"StudyInstanceUID", NULL}, *series_keys[2] = {"SeriesInstanceUID", "StudyInstanceUID"},
               *sop_keys[2] = {"SOPInstanceUID", NULL};
    bool study_listed[2] = {listed_study_uid[L_STUDY], true};
    bool series_listed[2] = {listed_series_uid[L_SERIES], listed_study_uid[L_SERIES]};
    bool sop_listed[2] = {listed_sop_uid[L_INSTANCE], true};
    mdb_buf_t *dj = &ctx->dicom;
    dj->len = 0;
    ok = finish_level(ctx, L_STUDY, study_uids, study_keys, study_listed) &&
         finish_level(ctx, L_SERIES, series_uids, series_keys, series_listed) &&
         finish_level(ctx, L_INSTANCE, sop_uids, sop_keys, sop_listed) && puts_(dj, "{\"transfer_syntax\":") &&
         put_raw_text(&c, dj, d->ts) && puts_(dj, ",\"specific_character_set\":") &&
         put_raw_text(&c, dj, mdb_charset_current(ctx->cs)) && put(dj, "}", 1) && integrity_text(ctx, d);
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while extracting");
    return ok;
}

/* Copy the finished objects out of the context into a result. */
static bool copy_out(mdb_extract_ctx_t *ctx, mdb_extract_result_t *out, mdb_error_t *err)
{
    char **dst[4] = {&out->study_json, &out->series_json, &out->instance_json, &out->dicom_json};
    mdb_buf_t *src[4] = {&ctx->level[0], &ctx->level[1], &ctx->level[2], &ctx->dicom};
    bool ok = true;
    for (int k = 0; k < 4 && ok; k++)
        ok = (*dst[k] = strndup(src[k]->data, src[k]->len)) != NULL;
    if (ok && ctx->uid[0].len)
        ok = (out->study_uid = strndup(ctx->uid[0].data, ctx->uid[0].len)) != NULL;
    if (ok && ctx->integ.len)
        ok = (out->integrity_json = strndup(ctx->integ.data, ctx->integ.len)) != NULL;
    if (!ok) {
        mdb_extract_result_clear(out);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while extracting");
    }
    return ok;
}

static bool extract_dicom(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const mdb_dicom_t *d, const char *override,
                          bool want_json, mdb_extract_result_t *out, mdb_error_t *err)
{
    ctx->override = override && *override ? override : NULL;
    bool ok = extract_tree(ctx, fs, d, out, err);
    ctx->override = NULL;
    ok = ok && copy_out(ctx, out, err);
    if (ok && want_json) {
        json_error_t je;
        char **texts[4] = {&out->study_json, &out->series_json, &out->instance_json, &out->dicom_json};
        json_t **objs[4] = {&out->study, &out->series, &out->instance, &out->dicom};
        for (int k = 0; ok && k < 4; k++) {
            *objs[k] = json_loads(*texts[k], JSON_REJECT_DUPLICATES, &je);
            if (!*objs[k]) {
                /* our writer produced something jansson refuses: a bug, never data */
                mdb_error_set(err, MDB_ERR_SYSTEM, EINVAL, "internal: extracted JSON does not parse: %s", je.text);
                ok = false;
            }
        }
        if (ok && out->integrity_json && !(out->integrity = json_loads(out->integrity_json, 0, &je))) {
            mdb_error_set(err, MDB_ERR_SYSTEM, EINVAL, "internal: integrity JSON does not parse: %s", je.text);
            ok = false;
        }
        if (!ok)
            mdb_extract_result_clear(out);
    }
    return ok;
}

/* After a file with an unusually large header, give the memory back: a
 * worker thread should not keep tens of MiB for the rest of its life. */
#define KEEP_BYTES (1u << 20)
static void trim_buffers(mdb_extract_ctx_t *ctx)
{
    mdb_buf_t *bufs[] = {&ctx->dec,      &ctx->val,     &ctx->obj[0],   &ctx->obj[1],   &ctx->obj[2],
                         &ctx->prom[0],  &ctx->prom[1], &ctx->prom[2],  &ctx->level[0], &ctx->level[1],
                         &ctx->level[2], &ctx->event,   &ctx->nest_inv, &ctx->nest_rep};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]->cap > 4 * KEEP_BYTES)
            mdb_buf_free(bufs[i]);
    if (ctx->dcm->buf_cap > KEEP_BYTES || ctx->dcm->elems_cap > 65536 || ctx->dcm->items_cap > 65536) {
        mdb_dicom_destroy(ctx->dcm);
        ctx->dcm = mdb_dicom_new(); /* NULL on OOM: the next call reports it */
    }
}

static bool extract_fd(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *override, bool want_json,
                       mdb_extract_result_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    int64_t size = 0, mtime = 0;
    trim_buffers(ctx);
    if (!ctx->dcm) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (!mdb_dicom_read_fd_into(ctx->dcm, fd, ctx->max_header, 0, &size, &mtime, err))
        return false;
    bool ok = extract_dicom(ctx, fs, ctx->dcm, override, want_json, out, err);
    if (ok) {
        out->file_size = size;
        out->file_mtime = mtime;
    }
    return ok;
}

/* The event text from the finished objects in ctx (or a result). */
static bool build_event(mdb_buf_t *b, const char *job_id, const char *path, const char *feature_set,
                        const char *const texts[4], const size_t lens[4], int64_t size, int64_t mtime,
                        const char *integrity, size_t integrity_len)
{
    static const char *const names[4] = {",\"study\":", ",\"series\":", ",\"instance\":", ",\"dicom\":"};
    char num[64];
    b->len = 0;
    bool ok = puts_(b, "{\"v\":1");
    if (ok && job_id)
        ok = puts_(b, ",\"job_id\":") && put_jstr(b, job_id, strlen(job_id));
    if (ok && path)
        ok = puts_(b, ",\"path\":") && put_jstr(b, path, strlen(path));
    if (ok && feature_set)
        ok = puts_(b, ",\"feature_set\":") && put_jstr(b, feature_set, strlen(feature_set));
    for (int k = 0; ok && k < 4; k++) {
        if (!texts[k])
            continue;
        ok = puts_(b, names[k]) && put(b, texts[k], lens[k]);
        if (ok && k == 2) {
            snprintf(num, sizeof num, ",\"file\":{\"size\":%lld,\"mtime\":%lld}", (long long)size, (long long)mtime);
            ok = puts_(b, num);
            if (ok && integrity && integrity_len)
                ok = puts_(b, ",\"integrity\":") && put(b, integrity, integrity_len);
        }
    }
    return ok && put(b, "}", 1);
}

bool mdb_extract_fd_event(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *charset_override,
                          const char *job_id, const char *path, const char *feature_set, const char **event,
                          size_t *len, const char **study_uid, mdb_error_t *err)
{
    int64_t size = 0, mtime = 0;
    mdb_extract_result_t unused;
    trim_buffers(ctx);
    if (!ctx->dcm) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    if (!mdb_dicom_read_fd_into(ctx->dcm, fd, ctx->max_header, 0, &size, &mtime, err))
        return false;
    ctx->override = charset_override && *charset_override ? charset_override : NULL;
    bool ok = extract_tree(ctx, fs, ctx->dcm, &unused, err);
    ctx->override = NULL;
    if (!ok)
        return false;
    const char *texts[4] = {ctx->level[0].data, ctx->level[1].data, ctx->level[2].data, ctx->dicom.data};
    const size_t lens[4] = {ctx->level[0].len, ctx->level[1].len, ctx->level[2].len, ctx->dicom.len};
    if (!build_event(&ctx->event, job_id, path, feature_set, texts, lens, size, mtime, ctx->integ.data,
                     ctx->integ.len)) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory encoding the event");
        return false;
    }
    *event = ctx->event.data;
    *len = ctx->event.len;
    if (study_uid)
        *study_uid = ctx->uid[0].len ? ctx->uid[0].data : NULL;
    return true;
}

bool mdb_extract_fd(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *charset_override,
                    mdb_extract_result_t *out, mdb_error_t *err)
{
    return extract_fd(ctx, fs, fd, charset_override, true, out, err);
}

bool mdb_extract_path(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const char *path, const char *charset_override,
                      mdb_extract_result_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block; fstat refuses it */
    if (fd < 0) {
        int e = errno;
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "cannot open: %s", strerror(e));
        return false;
    }
    bool ok = mdb_extract_fd(ctx, fs, fd, charset_override, out, err);
    close(fd);
    return ok;
}

bool mdb_extract_buffer(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const void *data, size_t len,
                        const char *charset_override, mdb_extract_result_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    mdb_dicom_t *d = mdb_dicom_read_buffer(data, len, ctx->max_header, err);
    if (!d)
        return false;
    bool ok = extract_dicom(ctx, fs, d, charset_override, true, out, err);
    mdb_dicom_destroy(d);
    if (ok)
        out->file_size = (int64_t)len;
    return ok;
}

char *mdb_extract_event_text(const mdb_extract_result_t *r, const char *job_id, const char *path,
                             const char *feature_set, size_t *len)
{
    json_t *objs[4] = {r->study, r->series, r->instance, r->dicom};
    const char *given[4] = {r->study_json, r->series_json, r->instance_json, r->dicom_json};
    char *dumped[4] = {NULL, NULL, NULL, NULL};
    const char *texts[4];
    size_t lens[4];
    bool ok = true;
    for (int k = 0; k < 4; k++) {
        texts[k] = given[k];
        if (!texts[k] && objs[k])
            texts[k] = dumped[k] = json_dumps(objs[k], JSON_COMPACT);
        if (!texts[k] && k < 3)
            ok = false;
        lens[k] = texts[k] ? strlen(texts[k]) : 0;
    }
    const char *integ = r->integrity_json;
    char *integ_dumped = NULL;
    if (!integ && r->integrity)
        integ = integ_dumped = json_dumps(r->integrity, JSON_COMPACT);
    if (r->integrity && !integ)
        ok = false;
    mdb_buf_t b = {0};
    ok = ok && build_event(&b, job_id, path, feature_set, texts, lens, r->file_size, r->file_mtime, integ,
                           integ ? strlen(integ) : 0);
    free(integ_dumped);
    for (int k = 0; k < 4; k++)
        free(dumped[k]);
    if (!ok) {
        mdb_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.data;
}

json_t *mdb_extract_event(const mdb_extract_result_t *r, const char *job_id, const char *path, const char *feature_set)
{
    char *text = mdb_extract_event_text(r, job_id, path, feature_set, NULL);
    if (!text)
        return NULL;
    json_error_t je;
    json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    free(text);
    return o;
}

/* ---- the catalog fast path ---- */

/* A value as stored: text decoded and trimmed, numbers formatted, VM>1
 * joined with '\'. Appends to out; false on OOM; *none for binary VRs. */
static bool plain_value(conv_t *c, const mdb_dcm_elem_t *e, const dsinfo_t *ds, mdb_buf_t *out, bool *none)
{
    char vr[3];
    *none = false;
    resolve_vr(c, e, NULL, NULL, ds, vr);
    const uint8_t *s = val(c, e);
    size_t n = rtrim_pad(s, e->len);
    mdb_cs_kind_t kind =
        vr_eq(vr, "SH") || vr_eq(vr, "LO") || vr_eq(vr, "UC") || vr_eq(vr, "LT") || vr_eq(vr, "ST") || vr_eq(vr, "UT")
            ? MDB_CS_TEXT
        : vr_eq(vr, "PN") ? MDB_CS_PN
                          : MDB_CS_DEFAULT;
    if (strstr("AE AS CS DA DT TM UI UR SH LO UC LT ST UT PN IS DS", vr) && vr[0]) {
        if (kind != MDB_CS_PN)
            return mdb_charset_decode(c->ctx->cs, (const char *)s, n, kind, out, &c->replaced);
        for (size_t i = 0;;) { /* PN: each component group on its own */
            size_t j = i;
            while (j < n && s[j] != '=' && s[j] != '\\')
                j++;
            if (!mdb_charset_decode(c->ctx->cs, (const char *)s + i, j - i, MDB_CS_PN, out, &c->replaced))
                return false;
            if (j >= n)
                return true;
            if (!put(out, (const char *)s + j, 1))
                return false;
            i = j + 1;
        }
    }
    if (!strstr("US SS UL SL UV SV FL FD AT", vr) || !vr[0]) {
        *none = true;
        return true;
    }
    c->ctx->val.len = 0;
    if (!binary_numbers(c, e, vr, none))
        return false;
    if (*none)
        return true;
    /* strip the JSON decoration: [a,b] -> a\b, "00200032" -> 00200032 */
    for (size_t i = 0; i < c->ctx->val.len; i++) {
        char ch = c->ctx->val.data[i];
        if (ch == '[' || ch == ']' || ch == '"')
            continue;
        if (!put(out, ch == ',' ? "\\" : &ch, 1))
            return false;
    }
    return true;
}

bool mdb_dicom_read_tags(const char *path, const uint32_t *tags, size_t ntags, char **values, mdb_error_t *err)
{
    for (size_t i = 0; i < ntags; i++)
        values[i] = NULL;
    uint32_t maxtag = TAG_SCS;
    for (size_t i = 0; i < ntags; i++)
        if (tags[i] > maxtag)
            maxtag = tags[i];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK); /* a FIFO must not block */
    if (fd < 0) {
        int e = errno;
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "cannot open: %s", strerror(e));
        return false;
    }
    mdb_dicom_t *d = mdb_dicom_read_fd_until(fd, MDB_DICOM_DEFAULT_MAX_HEADER, maxtag, NULL, NULL, err);
    close(fd);
    if (!d)
        return false;
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    bool ok = ctx != NULL;
    conv_t c;
    memset(&c, 0, sizeof c);
    c.ctx = ctx;
    c.d = d;
    dsinfo_t root = {.pixel_rep = -1, .has_pixels = d->stopped_at_pixels, .lut_first = -1, .first = d->root};
    if (ok) {
        select_charset(&c, find(d, d->root, TAG_SCS));
        root = dsinfo_for(&c, d->root, root);
    }
    for (size_t i = 0; ok && i < ntags; i++) {
        const mdb_dcm_elem_t *e = find(d, d->root, tags[i]);
        if (!e || e->flags & (MDB_DCM_F_SEQ | MDB_DCM_F_FRAGMENTS))
            continue;
        mdb_buf_t b = {0};
        bool none = false;
        ok = plain_value(&c, e, &root, &b, &none);
        if (ok && !none)
            ok = (values[i] = b.data ? b.data : strdup("")) != NULL;
        else
            mdb_buf_free(&b);
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_dicom_destroy(d);
    if (!ok) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        for (size_t i = 0; i < ntags; i++) {
            free(values[i]);
            values[i] = NULL;
        }
    }
    return ok;
}
