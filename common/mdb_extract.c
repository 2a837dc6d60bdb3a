/* mdb_extract: parsed header + feature set -> the instance event's typed
 * study/series/instance objects (shape and typing rules in mdb_extract.h).
 *
 * One pass over the top-level elements: each tag is looked up in the set's
 * sorted slot table and converted only if some level lists it, a level asks
 * for '*', or a promoted field needs it; one converted value is shared (by
 * reference) between the levels and promoted objects that want it.
 * Sequences convert every non-binary element of their items. Text is
 * decoded per Specific Character Set (item-level sets override their
 * parent's, a per-root override replaces them all). */
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

struct mdb_extract_ctx {
    size_t max_header;
    mdb_charset_t *cs;
    mdb_buf_t scratch;
    const char *override; /* charset override of the current call */
    bool lenient_uids;    /* extract files lacking UIDs (debugging) */
};

/* Per-call state: where invalid/replaced keys go. */
typedef struct {
    mdb_extract_ctx_t *ctx;
    const mdb_dicom_t *d;
    bool invalid;  /* set by a conversion: value broke its VR */
    bool replaced; /* set by a conversion: text had undecodable bytes */
    char path[MAX_PATH_KEY]; /* "Seq.0." prefix inside sequences */
    json_t *nested_invalid;  /* keys inside sequences, collected for the top key */
    json_t *nested_replaced;
} conv_t;

mdb_extract_ctx_t *mdb_extract_ctx_new(size_t max_header_bytes)
{
    mdb_extract_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->max_header = max_header_bytes ? max_header_bytes : MDB_DICOM_DEFAULT_MAX_HEADER;
    if (!(ctx->cs = mdb_charset_new())) {
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
    mdb_buf_free(&ctx->scratch);
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

/* Find an element of a data set by tag. */
static const mdb_dcm_elem_t *find(const mdb_dicom_t *d, int32_t first, uint32_t tag)
{
    for (int32_t i = first; i >= 0; i = d->elems[i].next)
        if (d->elems[i].tag == tag)
            return &d->elems[i];
    return NULL;
}

/* Trim trailing spaces and NULs (DICOM padding). */
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

/* An unsigned small integer element (US/UL/IS) of a data set, or -1. */
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

/* ---- value conversion ---- */

static json_t *json_str_buf(const char *s, size_t n)
{
    return json_stringn_nocheck(s, n);
}

/* latin1 (default repertoire) bytes to a JSON string. */
static json_t *default_string(conv_t *c, const uint8_t *s, size_t n)
{
    mdb_buf_t *b = &c->ctx->scratch;
    b->len = 0;
    if (!mdb_charset_decode(c->ctx->cs, (const char *)s, n, MDB_CS_DEFAULT, b, &c->replaced))
        return NULL;
    return json_str_buf(b->data ? b->data : "", b->len);
}

static json_t *text_string(conv_t *c, const uint8_t *s, size_t n, mdb_cs_kind_t kind)
{
    mdb_buf_t *b = &c->ctx->scratch;
    b->len = 0;
    if (!mdb_charset_decode(c->ctx->cs, (const char *)s, n, kind, b, &c->replaced))
        return NULL;
    /* trailing padding after decoding, as the encoded form may end in a
     * multi-byte sequence */
    size_t len = b->len;
    while (len > 0 && (b->data[len - 1] == ' '))
        len--;
    return json_str_buf(b->data ? b->data : "", len);
}

/* Wrap values: one -> itself, several -> array. Takes the array. */
static json_t *one_or_array(json_t *arr)
{
    if (!arr)
        return NULL;
    if (json_array_size(arr) == 1) {
        json_t *v = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        return v;
    }
    return arr;
}

typedef json_t *(*piece_fn)(conv_t *c, const uint8_t *s, size_t n);

/* Split s[0..n) on '\' and convert each piece. */
static json_t *split_values(conv_t *c, const uint8_t *s, size_t n, piece_fn fn)
{
    json_t *arr = json_array();
    size_t i = 0;
    if (!arr)
        return NULL;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '\\')
            j++;
        json_t *v = fn(c, s + i, j - i);
        if (!v || json_array_append_new(arr, v) != 0) {
            json_decref(arr);
            return NULL;
        }
        if (j >= n)
            break;
        i = j + 1;
    }
    return one_or_array(arr);
}

static json_t *piece_default(conv_t *c, const uint8_t *s, size_t n)
{
    return default_string(c, s, n);
}

static json_t *piece_ae(conv_t *c, const uint8_t *s, size_t n)
{
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    return default_string(c, s, n);
}

static json_t *piece_text(conv_t *c, const uint8_t *s, size_t n)
{
    return text_string(c, s, rtrim_pad(s, n), MDB_CS_TEXT);
}

/* One PN value: component groups split on '=', decoded separately, empty
 * trailing groups dropped. */
static json_t *piece_pn(conv_t *c, const uint8_t *s, size_t n)
{
    mdb_buf_t *b = &c->ctx->scratch;
    size_t ngroups = 0, keep = 0;
    b->len = 0;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < n && s[j] != '=')
            j++;
        if (ngroups > 0 && !mdb_buf_append(b, "=", 1))
            return NULL;
        if (!mdb_charset_decode(c->ctx->cs, (const char *)s + i, j - i, MDB_CS_PN, b, &c->replaced))
            return NULL;
        ngroups++;
        if (j > i)
            keep = b->len;
        if (j >= n)
            break;
        i = j + 1;
    }
    /* drop trailing empty groups: cut after the last non-empty one */
    size_t len = b->len;
    if (keep < len) {
        /* keep == 0 means every group is empty */
        len = keep;
    }
    return json_str_buf(b->data ? b->data : "", len);
}

static bool all_ws(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_ws(s[i]))
            return false;
    return true;
}

/* Parse a decimal string as Python's float() would (no hex). */
static bool parse_double(const uint8_t *s, size_t n, double *out)
{
    char buf[64];
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    if (n == 0 || n >= sizeof buf)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == 'x' || ch == 'X' || ch == '_' || ch == 0)
            return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    double v = strtod(buf, &end);
    if (end != buf + n)
        return false;
    *out = v;
    return true;
}

static json_t *invalid_string(conv_t *c, const uint8_t *s, size_t n)
{
    c->invalid = true;
    while (n > 0 && is_ws(s[0]))
        s++, n--;
    while (n > 0 && is_ws(s[n - 1]))
        n--;
    return default_string(c, s, n);
}

static json_t *piece_is(conv_t *c, const uint8_t *s, size_t n)
{
    if (all_ws(s, n))
        return json_null();
    const uint8_t *t = s;
    size_t m = n;
    while (m > 0 && is_ws(t[0]))
        t++, m--;
    while (m > 0 && is_ws(t[m - 1]))
        m--;
    size_t k = (t[0] == '+' || t[0] == '-') ? 1 : 0;
    bool digits = m > k;
    for (size_t i = k; i < m; i++)
        if (t[i] < '0' || t[i] > '9')
            digits = false;
    if (digits && m < 20) {
        char buf[24];
        memcpy(buf, t, m);
        buf[m] = '\0';
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno == 0)
            return json_integer(v);
    }
    double d;
    if (parse_double(s, n, &d) && isfinite(d) && d == floor(d) && fabs(d) < 9.2e18)
        return json_integer((json_int_t)d);
    return invalid_string(c, s, n);
}

static json_t *piece_ds(conv_t *c, const uint8_t *s, size_t n)
{
    if (all_ws(s, n))
        return json_null();
    double d;
    if (parse_double(s, n, &d) && isfinite(d))
        return json_real(d);
    return invalid_string(c, s, n);
}

static json_t *real_or_invalid(conv_t *c, double v)
{
    if (isfinite(v))
        return json_real(v);
    c->invalid = true;
    return json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
}

/* Binary numbers (US SS UL SL UV SV FL FD) and AT. */
static json_t *binary_numbers(conv_t *c, const mdb_dcm_elem_t *e, const char *vr, uint32_t tag)
{
    size_t size = vr_eq(vr, "US") || vr_eq(vr, "SS") ? 2
                  : vr_eq(vr, "FD") || vr_eq(vr, "UV") || vr_eq(vr, "SV") ? 8
                                                                             : 4;
    const uint8_t *p = val(c, e);
    bool le = e->flags & MDB_DCM_F_LE;
    if (e->len % size != 0) {
        c->invalid = true;
        return NULL;
    }
    size_t count = e->len / size;
    if (count == 0)
        return json_null();
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < count; i++, p += size) {
        json_t *v;
        if (vr_eq(vr, "US"))
            v = json_integer(u16(p, le));
        else if (vr_eq(vr, "SS")) {
            int16_t x = (int16_t)u16(p, le);
            /* LUT Descriptor read as SS: the first value is unsigned */
            if (i == 0 && x < 0 && (tag == TAG_LUT_DESCRIPTOR || tag == MDB_TAG(0x0028, 0x1101) ||
                                    tag == MDB_TAG(0x0028, 0x1102) || tag == MDB_TAG(0x0028, 0x1103)))
                v = json_integer((json_int_t)x + 65536);
            else
                v = json_integer(x);
        } else if (vr_eq(vr, "UL"))
            v = json_integer(u32(p, le));
        else if (vr_eq(vr, "SL"))
            v = json_integer((int32_t)u32(p, le));
        else if (vr_eq(vr, "UV")) {
            uint64_t x = u64(p, le);
            v = x > (uint64_t)INT64_MAX ? (c->invalid = true, json_real((double)x)) : json_integer((json_int_t)x);
        } else if (vr_eq(vr, "SV"))
            v = json_integer((json_int_t)(int64_t)u64(p, le));
        else if (vr_eq(vr, "FL")) {
            uint32_t bits = u32(p, le);
            float f;
            memcpy(&f, &bits, 4);
            v = real_or_invalid(c, f);
        } else if (vr_eq(vr, "FD")) {
            uint64_t bits = u64(p, le);
            double f;
            memcpy(&f, &bits, 8);
            v = real_or_invalid(c, f);
        } else { /* AT */
            char hex[9];
            snprintf(hex, sizeof hex, "%04X%04X", u16(p, le), u16(p + 2, le));
            v = json_string(hex);
        }
        if (!v || json_array_append_new(arr, v) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return one_or_array(arr);
}

/* The VR to convert with: explicit VR as read (UN of a known public tag ->
 * the dictionary's), implicit from the dictionary / private dictionary /
 * the feature list's hint; ambiguous VRs resolved as pydicom does. vr_out
 * gets "" for "leave out". */
typedef struct {
    long pixel_rep;     /* -1 unknown */
    bool has_pixels;    /* top level stopped at Pixel Data */
    long lut_first;     /* LUTDescriptor[0] of this data set, -1 unknown */
    int32_t first;      /* this data set's first element (creator lookup) */
} dsinfo_t;

static void resolve_vr(const conv_t *c, const mdb_dcm_elem_t *e, const char *hint, const dsinfo_t *ds, char vr[3])
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
    const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_tag(tag);
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

static json_t *convert_dataset(conv_t *c, int32_t first, dsinfo_t parent);

static json_t *convert_sequence(conv_t *c, const mdb_dcm_elem_t *e, const dsinfo_t *ds)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    size_t plen = strlen(c->path);
    size_t idx = 0;
    for (int32_t it = e->items; it >= 0; it = c->d->items[it].next, idx++) {
        snprintf(c->path + plen, sizeof c->path - plen, "%zu.", idx);
        json_t *o = convert_dataset(c, c->d->items[it].first, *ds);
        c->path[plen] = '\0';
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Convert one element; NULL with no error flag means "left out". */
static json_t *convert_elem(conv_t *c, const mdb_dcm_elem_t *e, const char *hint, const dsinfo_t *ds)
{
    if (e->flags & MDB_DCM_F_FRAGMENTS)
        return NULL;
    if (e->flags & MDB_DCM_F_SEQ)
        return convert_sequence(c, e, ds);
    char vr[3];
    resolve_vr(c, e, hint, ds, vr);
    const uint8_t *s = val(c, e);
    size_t n = e->len;
    if (vr_eq(vr, "AE"))
        return split_values(c, s, rtrim_pad(s, n), piece_ae);
    if (vr_eq(vr, "AS") || vr_eq(vr, "CS") || vr_eq(vr, "DA") || vr_eq(vr, "DT") || vr_eq(vr, "TM") ||
        vr_eq(vr, "UI"))
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
        return binary_numbers(c, e, vr, e->tag);
    return NULL; /* OB OD OF OL OV OW UN, unknown VRs */
}

static bool wanted_public(uint32_t tag)
{
    uint16_t g = MDB_TAG_GROUP(tag);
    return !(g & 1) && MDB_TAG_ELEMENT(tag) != 0 && g != 0x0002 && g != 0xFFFE && g > 0x0002;
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
    if (c->ctx->override) {
        mdb_charset_select(c->ctx->cs, c->ctx->override, strlen(c->ctx->override), NULL);
        return;
    }
    if (!scs || scs->flags & MDB_DCM_F_SEQ)
        mdb_charset_select(c->ctx->cs, NULL, 0, NULL);
    else
        mdb_charset_select(c->ctx->cs, (const char *)val(c, scs), scs->len, NULL);
}

static bool note_key(json_t **list, const char *prefix, const char *key)
{
    if (!*list && !(*list = json_array()))
        return false;
    char buf[MAX_PATH_KEY + 80];
    snprintf(buf, sizeof buf, "%s%s", prefix, key);
    return json_array_append_new(*list, json_string(buf)) == 0;
}

static dsinfo_t dsinfo_for(const conv_t *c, int32_t first, dsinfo_t parent)
{
    dsinfo_t ds = parent;
    ds.first = first;
    long pr = small_int(c->d, find(c->d, first, TAG_PIXEL_REP));
    if (pr >= 0)
        ds.pixel_rep = pr;
    const mdb_dcm_elem_t *lut = find(c->d, first, TAG_LUT_DESCRIPTOR);
    ds.lut_first = lut && lut->len >= 2 && !(lut->flags & MDB_DCM_F_SEQ) ? u16(val(c, lut), lut->flags & MDB_DCM_F_LE)
                                                                          : -1;
    return ds;
}

/* A sequence item: every non-binary element, keyed like a level. */
static json_t *convert_dataset(conv_t *c, int32_t first, dsinfo_t parent)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    dsinfo_t ds = dsinfo_for(c, first, parent);
    ds.has_pixels = false;
    const mdb_dcm_elem_t *scs = find(c->d, first, TAG_SCS);
    char saved[160] = "";
    if (scs && !c->ctx->override) {
        snprintf(saved, sizeof saved, "%s", mdb_charset_current(c->ctx->cs));
        select_charset(c, scs);
    }
    for (int32_t i = first; i >= 0; i = c->d->elems[i].next) {
        const mdb_dcm_elem_t *e = &c->d->elems[i];
        if (MDB_TAG_ELEMENT(e->tag) == 0 || MDB_TAG_GROUP(e->tag) == 0x0002)
            continue; /* group lengths */
        bool inv = c->invalid, rep = c->replaced;
        c->invalid = c->replaced = false;
        char hex[16];
        const char *key;
        key_for(e->tag, hex, &key);
        size_t plen = strlen(c->path);
        if (e->flags & MDB_DCM_F_SEQ)
            snprintf(c->path + plen, sizeof c->path - plen, "%s.", key);
        json_t *v = convert_elem(c, e, NULL, &ds);
        c->path[plen] = '\0';
        if (c->invalid && !(e->flags & MDB_DCM_F_SEQ))
            note_key(&c->nested_invalid, c->path, key);
        if (c->replaced && !(e->flags & MDB_DCM_F_SEQ))
            note_key(&c->nested_replaced, c->path, key);
        c->invalid = inv || c->invalid;
        c->replaced = rep || c->replaced;
        if (v && json_object_set_new(o, key, v) != 0) {
            json_decref(o);
            o = NULL;
            break;
        }
    }
    if (scs && !c->ctx->override)
        mdb_charset_select(c->ctx->cs, saved, strlen(saved), NULL);
    return o;
}

/* Required UID: a non-empty single string. */
static bool take_uid(json_t *v, const char *name, const char **out, mdb_error_t *err)
{
    if (!v || !json_is_string(v) || json_string_length(v) == 0) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMISSINGUID, "%s is %s", name,
                      !v ? "missing" : json_is_array(v) ? "multi-valued" : "empty");
        return false;
    }
    *out = json_string_value(v);
    return true;
}

static bool extract_tree(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const mdb_dicom_t *d,
                         mdb_extract_result_t *out, mdb_error_t *err)
{
    conv_t c;
    memset(&c, 0, sizeof c);
    c.ctx = ctx;
    c.d = d;
    json_t *obj[MDB_LEVEL_COUNT] = {0}, *prom[MDB_LEVEL_COUNT] = {0};
    json_t *inval[MDB_LEVEL_COUNT] = {0}, *repl[MDB_LEVEL_COUNT] = {0};
    json_t *uids[3] = {0};
    bool ok = false;
    bool star[MDB_LEVEL_COUNT];
    for (int l = 0; l < MDB_LEVEL_COUNT; l++) {
        star[l] = mdb_features_star(fs, l);
        obj[l] = json_object();
        prom[l] = json_object();
        if (!obj[l] || !prom[l])
            goto oom;
    }
    dsinfo_t root = {.pixel_rep = -1, .has_pixels = d->stopped_at_pixels, .lut_first = -1, .first = d->root};
    root = dsinfo_for(&c, d->root, root);
    root.has_pixels = d->stopped_at_pixels;
    select_charset(&c, find(d, d->root, TAG_SCS));

    for (int32_t i = d->root; i >= 0; i = d->elems[i].next) {
        const mdb_dcm_elem_t *e = &d->elems[i];
        const mdb_feature_slot_t *slot = mdb_features_lookup(fs, e->tag);
        unsigned mask = slot ? slot->levels : 0;
        bool pub = wanted_public(e->tag);
        for (int l = 0; l < MDB_LEVEL_COUNT; l++)
            if (star[l] && pub)
                mask |= 1u << l;
        bool is_uid = e->tag == TAG_STUDY_UID || e->tag == TAG_SERIES_UID || e->tag == TAG_SOP_UID;
        if (!mask && !(slot && slot->promoted >= 0) && !is_uid)
            continue;
        c.invalid = c.replaced = false;
        c.path[0] = '\0';
        json_decref(c.nested_invalid);
        json_decref(c.nested_replaced);
        c.nested_invalid = c.nested_replaced = NULL;
        json_t *v = convert_elem(&c, e, slot ? slot->vr : NULL, &root);
        char hex[16];
        const char *key = slot ? slot->keyword : NULL;
        if (!key)
            key_for(e->tag, hex, &key);
        if (is_uid) {
            int k = e->tag == TAG_STUDY_UID ? 0 : e->tag == TAG_SERIES_UID ? 1 : 2;
            json_decref(uids[k]);
            uids[k] = v ? json_incref(v) : NULL;
        }
        for (int l = 0; l < MDB_LEVEL_COUNT; l++) {
            if (!(mask & (1u << l)))
                continue;
            if (v && json_object_set(obj[l], key, v) != 0)
                goto oom_v;
            if (c.invalid) {
                if (c.nested_invalid) {
                    size_t k;
                    json_t *x;
                    json_array_foreach(c.nested_invalid, k, x)
                    {
                        char buf[MAX_PATH_KEY + 160];
                        snprintf(buf, sizeof buf, "%s.%s", key, json_string_value(x));
                        if (!note_key(&inval[l], "", buf))
                            goto oom_v;
                    }
                } else if (!note_key(&inval[l], "", key))
                    goto oom_v;
            }
            if (c.replaced) {
                if (c.nested_replaced) {
                    size_t k;
                    json_t *x;
                    json_array_foreach(c.nested_replaced, k, x)
                    {
                        char buf[MAX_PATH_KEY + 160];
                        snprintf(buf, sizeof buf, "%s.%s", key, json_string_value(x));
                        if (!note_key(&repl[l], "", buf))
                            goto oom_v;
                    }
                } else if (!note_key(&repl[l], "", key))
                    goto oom_v;
            }
        }
        if (v && slot)
            for (int32_t p = slot->promoted; p >= 0; p = mdb_features_promoted_next(fs, p)) {
                const mdb_promoted_t *pf = mdb_features_promoted(fs, (size_t)p);
                if (json_object_set(prom[pf->level], pf->field, v) != 0)
                    goto oom_v;
            }
        json_decref(v);
        continue;
    oom_v:
        json_decref(v);
        goto oom;
    }

    const char *study_uid, *series_uid, *sop_uid;
    if (!ctx->lenient_uids && (!take_uid(uids[0], "StudyInstanceUID (0020,000D)", &study_uid, err) ||
                               !take_uid(uids[1], "SeriesInstanceUID (0020,000E)", &series_uid, err) ||
                               !take_uid(uids[2], "SOPInstanceUID (0008,0018)", &sop_uid, err)))
        goto done;
    if ((uids[0] && json_object_set(obj[MDB_LEVEL_STUDY], "StudyInstanceUID", uids[0]) != 0) ||
        (uids[1] && json_object_set(obj[MDB_LEVEL_SERIES], "SeriesInstanceUID", uids[1]) != 0) ||
        (uids[0] && json_object_set(obj[MDB_LEVEL_SERIES], "StudyInstanceUID", uids[0]) != 0) ||
        (uids[2] && json_object_set(obj[MDB_LEVEL_INSTANCE], "SOPInstanceUID", uids[2]) != 0))
        goto oom;
    for (int l = 0; l < MDB_LEVEL_COUNT; l++) {
        if (json_object_set(obj[l], "promoted", prom[l]) != 0)
            goto oom;
        if (inval[l] && json_object_set(obj[l], "_invalid", inval[l]) != 0)
            goto oom;
        if (repl[l] && json_object_set(obj[l], "_replaced", repl[l]) != 0)
            goto oom;
    }
    out->study = json_incref(obj[MDB_LEVEL_STUDY]);
    out->series = json_incref(obj[MDB_LEVEL_SERIES]);
    out->instance = json_incref(obj[MDB_LEVEL_INSTANCE]);
    out->dicom = json_pack("{s:s, s:s}", "transfer_syntax", d->ts, "specific_character_set",
                           mdb_charset_current(ctx->cs));
    if (!out->dicom)
        goto oom;
    ok = true;
    goto done;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while extracting");
done:
    for (int l = 0; l < MDB_LEVEL_COUNT; l++) {
        json_decref(obj[l]);
        json_decref(prom[l]);
        json_decref(inval[l]);
        json_decref(repl[l]);
    }
    for (int k = 0; k < 3; k++)
        json_decref(uids[k]);
    json_decref(c.nested_invalid);
    json_decref(c.nested_replaced);
    if (!ok)
        mdb_extract_result_clear(out);
    return ok;
}

bool mdb_extract_fd(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, int fd, const char *charset_override,
                    mdb_extract_result_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    int64_t size = 0, mtime = 0;
    mdb_dicom_t *d = mdb_dicom_read_fd_until(fd, ctx->max_header, 0, &size, &mtime, err);
    if (!d)
        return false;
    ctx->override = charset_override && *charset_override ? charset_override : NULL;
    bool ok = extract_tree(ctx, fs, d, out, err);
    ctx->override = NULL;
    mdb_dicom_destroy(d);
    if (ok) {
        out->file_size = size;
        out->file_mtime = mtime;
    }
    return ok;
}

bool mdb_extract_path(mdb_extract_ctx_t *ctx, const mdb_features_t *fs, const char *path,
                      const char *charset_override, mdb_extract_result_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "cannot open: %s", strerror(errno));
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
    ctx->override = charset_override && *charset_override ? charset_override : NULL;
    bool ok = extract_tree(ctx, fs, d, out, err);
    ctx->override = NULL;
    mdb_dicom_destroy(d);
    if (ok)
        out->file_size = (int64_t)len;
    return ok;
}

json_t *mdb_extract_event(const mdb_extract_result_t *r, const char *job_id, const char *path,
                          const char *feature_set)
{
    json_t *o = json_object();
    json_t *file = json_object();
    bool ok = o && file && json_object_set_new(o, "v", json_integer(1)) == 0 &&
              (!job_id || json_object_set_new(o, "job_id", json_string(job_id)) == 0) &&
              (!path || json_object_set_new(o, "path", json_string(path)) == 0) &&
              (!feature_set || json_object_set_new(o, "feature_set", json_string(feature_set)) == 0) &&
              json_object_set(o, "study", r->study) == 0 && json_object_set(o, "series", r->series) == 0 &&
              json_object_set(o, "instance", r->instance) == 0 &&
              json_object_set_new(file, "size", json_integer(r->file_size)) == 0 &&
              json_object_set_new(file, "mtime", json_integer(r->file_mtime)) == 0 &&
              json_object_set(o, "file", file) == 0 &&
              (!r->dicom || json_object_set(o, "dicom", r->dicom) == 0);
    json_decref(file);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- the catalog fast path ---- */

bool mdb_dicom_read_tags(const char *path, const uint32_t *tags, size_t ntags, char **values, mdb_error_t *err)
{
    for (size_t i = 0; i < ntags; i++)
        values[i] = NULL;
    uint32_t maxtag = 0;
    for (size_t i = 0; i < ntags; i++)
        if (tags[i] > maxtag)
            maxtag = tags[i];
    if (maxtag < TAG_SCS)
        maxtag = TAG_SCS;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "cannot open: %s", strerror(errno));
        return false;
    }
    mdb_dicom_t *d = mdb_dicom_read_fd_until(fd, MDB_DICOM_DEFAULT_MAX_HEADER, maxtag, NULL, NULL, err);
    close(fd);
    if (!d)
        return false;
    mdb_extract_ctx_t *ctx = mdb_extract_ctx_new(0);
    bool ok = ctx != NULL;
    if (!ok)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    conv_t c;
    memset(&c, 0, sizeof c);
    c.ctx = ctx;
    c.d = d;
    if (ok)
        select_charset(&c, find(d, d->root, TAG_SCS));
    dsinfo_t root = {.pixel_rep = -1, .has_pixels = d->stopped_at_pixels, .lut_first = -1, .first = d->root};
    if (ok)
        root = dsinfo_for(&c, d->root, root);
    for (size_t i = 0; ok && i < ntags; i++) {
        const mdb_dcm_elem_t *e = find(d, d->root, tags[i]);
        if (!e || e->flags & (MDB_DCM_F_SEQ | MDB_DCM_F_FRAGMENTS))
            continue;
        json_t *v = convert_elem(&c, e, NULL, &root);
        if (!v)
            continue;
        mdb_buf_t b = {0};
        json_t *arr = json_is_array(v) ? v : NULL;
        size_t n = arr ? json_array_size(arr) : 1;
        for (size_t k = 0; ok && k < n; k++) {
            json_t *x = arr ? json_array_get(arr, k) : v;
            char num[64];
            const char *s = "";
            if (json_is_string(x))
                s = json_string_value(x);
            else if (json_is_integer(x))
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(x)), s = num;
            else if (json_is_real(x))
                snprintf(num, sizeof num, "%.17g", json_real_value(x)), s = num;
            ok = (k == 0 || mdb_buf_append(&b, "\\", 1)) && mdb_buf_append(&b, s, strlen(s));
        }
        json_decref(v);
        if (!ok) {
            mdb_buf_free(&b);
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            break;
        }
        values[i] = b.data ? b.data : strdup("");
    }
    mdb_extract_ctx_destroy(ctx);
    mdb_dicom_destroy(d);
    if (!ok)
        for (size_t i = 0; i < ntags; i++) {
            free(values[i]);
            values[i] = NULL;
        }
    return ok;
}
