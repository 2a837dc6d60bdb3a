/* wado_metadata.c: GET .../metadata for a study, a series or an instance
 * (PS3.18 §10.4.1.1.2): application/dicom+json, one data set per instance
 * (PS3.18 Annex F), built from the file's whole header, not from the
 * catalogue's feature set.
 *
 * The header is read with metadb's own bounded reader (mdb_dicom, the one
 * the workers use: everything up to Pixel Data, worker.max_header_bytes at
 * most) and its element tree is encoded here:
 *   - VR: as read for explicit VR (UN of a known public tag: the
 *     dictionary's, as pydicom does); implicit VR from the dictionary, the
 *     private dictionary through the block's private creator, LO for the
 *     creators themselves; "US or SS" by PixelRepresentation;
 *   - strings split at '\', padding trimmed, SH/LO/UC/ST/LT/UT/PN decoded
 *     per Specific Character Set (mdb_charset; an item's own (0008,0005)
 *     applies inside it); PN as {"Alphabetic", "Ideographic", "Phonetic"};
 *     IS/DS as numbers (kept as the stored string when they do not parse);
 *     binary numbers in the data set's byte order; AT as "GGGGEEEE";
 *   - sequences recursively; bulk data (OB OD OF OL OV OW UN) of the top
 *     level as {"vr", "BulkDataURI": ".../instances/{sop}/bulkdata/{tag}"}
 *     (wado_h_bulkdata answers it), inside sequences left out; Pixel Data
 *     is not listed (frames/rendered serve it); File Meta (group 0002) and
 *     group lengths are left out.
 * Study and series answers are streamed instance by instance (one header in
 * memory at a time); an instance whose file cannot be read is left out and
 * counted (metadb_api_wado_file_errors_total). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_charset.h"
#include "mdb_dicom.h"
#include "mdb_dicom_private.h"
#include "wado.h"

#define TAG_SCS MDB_TAG(0x0008, 0x0005)
#define TAG_PIXEL_REP MDB_TAG(0x0028, 0x0103)

typedef struct {
    const mdb_dicom_t *d;
    mdb_charset_t *cs;
    int pixel_rep;
    char base[300]; /* the instance's WADO-RS path, for BulkDataURI */
} mctx_t;

static const uint8_t *val(const mctx_t *m, const mdb_dcm_elem_t *e)
{
    return m->d->buf + e->off;
}

static uint16_t rd16(const uint8_t *p, bool le)
{
    return le ? (uint16_t)(p[0] | p[1] << 8) : (uint16_t)(p[1] | p[0] << 8);
}

static uint32_t rd32(const uint8_t *p, bool le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static uint64_t rd64(const uint8_t *p, bool le)
{
    uint64_t a = rd32(p, le), b = rd32(p + 4, le);
    return le ? (b << 32 | a) : (a << 32 | b);
}

static bool vr_in(const char vr[2], const char *list)
{
    for (const char *p = list; p[0] && p[1]; p += 3)
        if (p[0] == vr[0] && p[1] == vr[1])
            return true;
    return false;
}

static const mdb_dcm_elem_t *find_in(const mdb_dicom_t *d, int32_t first, uint32_t tag)
{
    for (int32_t i = first; i >= 0; i = d->elems[i].next)
        if (d->elems[i].tag == tag)
            return &d->elems[i];
    return NULL;
}

/* The VR the element is encoded with (see the file comment). */
static void resolve_vr(const mctx_t *m, const mdb_dcm_elem_t *e, int32_t first, char vr[3])
{
    uint16_t group = MDB_TAG_GROUP(e->tag), elem = MDB_TAG_ELEMENT(e->tag);
    vr[2] = '\0';
    if ((e->flags & MDB_DCM_F_EXPLICIT) && !(e->vr[0] == 'U' && e->vr[1] == 'N' && !(group & 1))) {
        vr[0] = e->vr[0], vr[1] = e->vr[1];
        return;
    }
    if (group & 1) {
        if (e->flags & MDB_DCM_F_EXPLICIT) {
            vr[0] = e->vr[0], vr[1] = e->vr[1];
            return;
        }
        if (elem >= 0x0010 && elem <= 0x00FF) {
            memcpy(vr, "LO", 2);
            return;
        }
        memcpy(vr, "UN", 2);
        const mdb_dcm_elem_t *ce = elem >= 0x1000 ? find_in(m->d, first, MDB_TAG(group, elem >> 8)) : NULL;
        if (ce && ce->len > 0 && ce->len <= 64 && !(ce->flags & MDB_DCM_F_SEQ)) {
            char creator[65];
            size_t n = ce->len;
            memcpy(creator, val(m, ce), n);
            while (n && (creator[n - 1] == ' ' || creator[n - 1] == '\0'))
                n--;
            creator[n] = '\0';
            const char *pv = mdb_dicom_private_vr(e->tag, creator);
            if (pv && pv[0])
                memcpy(vr, pv, 2);
        }
        return;
    }
    const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_tag(e->tag);
    if (!de || !de->vr[0]) {
        if (e->flags & MDB_DCM_F_EXPLICIT)
            vr[0] = e->vr[0], vr[1] = e->vr[1];
        else
            memcpy(vr, elem == 0 ? "UL" : "UN", 2);
        return;
    }
    if ((e->flags & MDB_DCM_F_EXPLICIT) && e->len == 0xFFFFFFFFu) {
        vr[0] = e->vr[0], vr[1] = e->vr[1];
        return;
    }
    memcpy(vr, de->vr, 2);
    if (!de->vr_alt[0])
        return;
    bool us_ss =
        (vr_in(de->vr, "US ") && vr_in(de->vr_alt, "SS ")) || (vr_in(de->vr, "SS ") && vr_in(de->vr_alt, "US "));
    if (us_ss)
        memcpy(vr, m->pixel_rep == 1 ? "SS" : "US", 2);
    else
        memcpy(vr, "OW", 2);
}

static size_t trim_right(const uint8_t *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    return n;
}

static json_t *decoded(mctx_t *m, const uint8_t *s, size_t n, mdb_cs_kind_t kind)
{
    bool rep = false;
    char *t = mdb_charset_decode_dup(m->cs, (const char *)s, n, kind, &rep);
    if (!t)
        return json_null();
    json_t *j = json_string(t);
    free(t);
    return j ? j : json_null();
}

/* One PN value "A=I=P" → {"Alphabetic", "Ideographic", "Phonetic"}. */
static json_t *person_name(mctx_t *m, const uint8_t *s, size_t n)
{
    static const char *groups[3] = {"Alphabetic", "Ideographic", "Phonetic"};
    json_t *o = json_object();
    size_t start = 0;
    for (int g = 0; g < 3 && start <= n; g++) {
        size_t end = start;
        while (end < n && s[end] != '=')
            end++;
        size_t l = trim_right(s + start, end - start);
        if (l)
            json_object_set_new(o, groups[g], decoded(m, s + start, l, MDB_CS_PN));
        start = end + 1;
    }
    return o;
}

static json_t *number_text(const uint8_t *s, size_t n, bool integer)
{
    char buf[64];
    while (n && isspace(s[0]))
        s++, n--;
    while (n && isspace(s[n - 1]))
        n--;
    if (!n)
        return json_null();
    if (n >= sizeof buf)
        return json_stringn((const char *)s, n) ?: json_null();
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    if (integer) {
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (!*end && !errno)
            return json_integer(v);
    } else {
        double v = strtod(buf, &end);
        if (!*end && isfinite(v))
            return json_real(v);
    }
    return json_string(buf) ?: json_null();
}

/* Text values split at backslashes. */
static json_t *string_values(mctx_t *m, const char vr[2], const uint8_t *s, size_t n)
{
    json_t *arr = json_array();
    bool single = vr_in(vr, "LT ST UT UR ");
    bool text = vr_in(vr, "SH LO UC LT ST UT ");
    size_t start = 0;
    for (;;) {
        size_t end = start;
        if (single)
            end = n;
        else
            while (end < n && s[end] != '\\')
                end++;
        const uint8_t *p = s + start;
        size_t l = end - start;
        if (!vr_in(vr, "LT ST UT ")) /* leading spaces are padding except in free text */
            while (l && p[0] == ' ')
                p++, l--;
        l = trim_right(p, l);
        json_t *v;
        if (vr_in(vr, "PN "))
            v = l ? person_name(m, p, l) : json_null();
        else if (vr_in(vr, "IS DS "))
            v = number_text(p, l, vr[0] == 'I');
        else if (!l)
            v = json_null();
        else
            v = decoded(m, p, l, text ? MDB_CS_TEXT : MDB_CS_DEFAULT);
        json_array_append_new(arr, v);
        if (end >= n)
            break;
        start = end + 1;
    }
    return arr;
}

static json_t *binary_values(const mctx_t *m, const mdb_dcm_elem_t *e, const char vr[2])
{
    size_t size = vr_in(vr, "US SS ") ? 2 : vr_in(vr, "FD UV SV ") ? 8 : 4;
    if (e->len % size)
        return NULL;
    bool le = e->flags & MDB_DCM_F_LE;
    const uint8_t *p = val(m, e);
    json_t *arr = json_array();
    for (size_t i = 0; i < e->len / size; i++, p += size) {
        json_t *v;
        if (vr_in(vr, "US "))
            v = json_integer(rd16(p, le));
        else if (vr_in(vr, "SS "))
            v = json_integer((int16_t)rd16(p, le));
        else if (vr_in(vr, "UL "))
            v = json_integer(rd32(p, le));
        else if (vr_in(vr, "SL "))
            v = json_integer((int32_t)rd32(p, le));
        else if (vr_in(vr, "UV ")) {
            uint64_t x = rd64(p, le);
            v = x > (uint64_t)INT64_MAX ? json_real((double)x) : json_integer((json_int_t)x);
        } else if (vr_in(vr, "SV "))
            v = json_integer((json_int_t)(int64_t)rd64(p, le));
        else if (vr_in(vr, "FL ")) {
            uint32_t bits = rd32(p, le);
            float f;
            memcpy(&f, &bits, 4);
            v = isfinite(f) ? json_real(f) : json_null();
        } else if (vr_in(vr, "FD ")) {
            uint64_t bits = rd64(p, le);
            double f;
            memcpy(&f, &bits, 8);
            v = isfinite(f) ? json_real(f) : json_null();
        } else {
            char at[12];
            snprintf(at, sizeof at, "%04X%04X", rd16(p, le), rd16(p + 2, le));
            v = json_string(at);
        }
        json_array_append_new(arr, v);
    }
    return arr;
}

static json_t *encode_dataset(mctx_t *m, int32_t first, int depth);

/* {"vr", "Value"} of one element; NULL when it is left out (bulk data). */
static json_t *encode_elem(mctx_t *m, const mdb_dcm_elem_t *e, int32_t first, int depth)
{
    if (e->flags & MDB_DCM_F_FRAGMENTS)
        return NULL;
    if (e->flags & MDB_DCM_F_SEQ) {
        json_t *items = json_array();
        for (int32_t it = e->items; it >= 0 && depth < 32; it = m->d->items[it].next)
            json_array_append_new(items, encode_dataset(m, m->d->items[it].first, depth + 1));
        json_t *o = json_pack("{s:s}", "vr", "SQ");
        if (json_array_size(items))
            json_object_set_new(o, "Value", items);
        else
            json_decref(items);
        return o;
    }
    char vr[3];
    resolve_vr(m, e, first, vr);
    if (!isupper((unsigned char)vr[0]) || !isupper((unsigned char)vr[1]))
        return NULL;
    if (vr_in(vr, "OB OD OF OL OV OW UN ")) {
        /* bulk data: top-level elements by reference (.../bulkdata/{tag}), nested ones left out */
        if (depth > 0 || !m->base[0])
            return NULL;
        char uri[340];
        snprintf(uri, sizeof uri, "%s/bulkdata/%08X", m->base, e->tag);
        return json_pack("{s:s, s:s}", "vr", vr, "BulkDataURI", uri);
    }
    json_t *values = NULL;
    if (e->len == 0)
        values = NULL;
    else if (vr_in(vr, "US SS UL SL UV SV FL FD AT "))
        values = binary_values(m, e, vr);
    else
        values = string_values(m, vr, val(m, e), e->len);
    json_t *o = json_pack("{s:s}", "vr", vr);
    if (values && json_array_size(values))
        json_object_set_new(o, "Value", values);
    else
        json_decref(values);
    return o;
}

static json_t *encode_dataset(mctx_t *m, int32_t first, int depth)
{
    json_t *ds = json_object();
    const mdb_dcm_elem_t *scs = find_in(m->d, first, TAG_SCS);
    char saved[160] = "";
    if (scs && depth > 0) {
        snprintf(saved, sizeof saved, "%s", mdb_charset_current(m->cs));
    }
    if (scs && !(scs->flags & MDB_DCM_F_SEQ))
        mdb_charset_select(m->cs, (const char *)val(m, scs), scs->len, NULL);
    int saved_rep = m->pixel_rep;
    const mdb_dcm_elem_t *pr = find_in(m->d, first, TAG_PIXEL_REP);
    if (pr && pr->len == 2 && !(pr->flags & MDB_DCM_F_SEQ))
        m->pixel_rep = rd16(val(m, pr), pr->flags & MDB_DCM_F_LE);
    for (int32_t i = first; i >= 0; i = m->d->elems[i].next) {
        const mdb_dcm_elem_t *e = &m->d->elems[i];
        uint16_t g = MDB_TAG_GROUP(e->tag);
        if (MDB_TAG_ELEMENT(e->tag) == 0 || g == 0x0002 || g == 0xFFFE || e->tag == MDB_TAG(0x7FE0, 0x0010))
            continue;
        json_t *v = encode_elem(m, e, first, depth);
        if (!v)
            continue;
        char key[12];
        snprintf(key, sizeof key, "%08X", e->tag);
        json_object_set_new(ds, key, v); /* a repeated tag keeps the last */
    }
    m->pixel_rep = saved_rep;
    if (scs && depth > 0)
        mdb_charset_select(m->cs, saved, strlen(saved), NULL);
    return ds;
}

/* The DICOM JSON of one open file (NULL with err). */
static json_t *file_metadata(const wado_file_t *f, size_t max_header, mdb_error_t *err)
{
    mdb_dicom_t *d = mdb_dicom_read_fd(f->fd, max_header, NULL, err);
    if (!d)
        return NULL;
    mctx_t m = {.d = d, .cs = mdb_charset_new(), .pixel_rep = 0};
    snprintf(m.base, sizeof m.base, "/dicomweb/studies/%s/series/%s/instances/%s", f->study, f->series, f->sop);
    json_t *ds = NULL;
    if (m.cs) {
        mdb_charset_select(m.cs, NULL, 0, NULL);
        ds = encode_dataset(&m, d->root, 0);
    } else {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    }
    mdb_charset_destroy(m.cs);
    mdb_dicom_destroy(d);
    return ds;
}

/* ---- streaming many instances ---- */

typedef struct {
    api_ctx_t *ctx;
    json_t *docs;
    size_t next, max_header;
    char *chunk;
    size_t len, off;
    bool any, finished, opened;
} meta_stream_t;

static ssize_t meta_read(void *cls, char *buf, size_t max)
{
    meta_stream_t *s = cls;
    for (;;) {
        if (s->off < s->len) {
            size_t n = s->len - s->off < max ? s->len - s->off : max;
            memcpy(buf, s->chunk + s->off, n);
            s->off += n;
            return (ssize_t)n;
        }
        free(s->chunk);
        s->chunk = NULL;
        s->len = s->off = 0;
        if (s->finished)
            return 0;
        if (!s->opened) {
            s->opened = true;
            s->chunk = strdup("[");
            s->len = s->chunk ? 1 : 0;
            if (!s->chunk)
                return -1;
            continue;
        }
        if (s->next >= json_array_size(s->docs)) {
            s->finished = true;
            s->chunk = strdup("]");
            s->len = s->chunk ? 1 : 0;
            if (!s->chunk)
                return -1;
            continue;
        }
        wado_file_t f;
        int status;
        char reason[64];
        if (!wado_open_doc(s->ctx, json_array_get(s->docs, s->next++), &f, &status, reason, sizeof reason)) {
            wado_count_file_error(s->ctx, reason);
            continue;
        }
        mdb_error_t err = {0};
        json_t *ds = file_metadata(&f, s->max_header, &err);
        close(f.fd);
        if (!ds) {
            wado_count_file_error(s->ctx, "unparsable");
            continue;
        }
        char *text = json_dumps(ds, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(ds);
        if (!text)
            return -1;
        size_t tl = strlen(text);
        s->chunk = malloc(tl + 2);
        if (!s->chunk) {
            free(text);
            return -1;
        }
        size_t k = 0;
        if (s->any)
            s->chunk[k++] = ',';
        memcpy(s->chunk + k, text, tl);
        s->len = k + tl;
        free(text);
        s->any = true;
    }
}

static void meta_done(void *cls)
{
    meta_stream_t *s = cls;
    json_decref(s->docs);
    free(s->chunk);
    free(s);
}

static bool json_accept(const char *accept)
{
    if (!accept || !*accept)
        return true;
    return strstr(accept, "application/dicom+json") || strstr(accept, "application/json") || strstr(accept, "*/*") ||
           strstr(accept, "application/*");
}

void wado_h_metadata(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                     const char *series, const char *sop)
{
    if (!json_accept(req->accept)) {
        api_respond_error(res, 406, "not_acceptable", "metadata is offered as application/dicom+json (Accept: %.100s)",
                          req->accept);
        return;
    }
    size_t max_header = (size_t)mdb_config_get_int(api_ctx_config(ctx), "worker.max_header_bytes");
    if (sop) {
        wado_file_t f;
        if (!wado_open_instance(ctx, study, series, sop, &f, res))
            return;
        mdb_error_t err = {0};
        json_t *ds = file_metadata(&f, max_header, &err);
        close(f.fd);
        if (!ds) {
            wado_count_file_error(ctx, "unparsable");
            api_respond_error(res, 422, "unparsable", "instance %s: %s", sop, err.message);
            return;
        }
        api_respond_json_ct(res, 200, json_pack("[o]", ds), "application/dicom+json");
        return;
    }
    json_t *docs = wado_list_instances(ctx, study, series, res);
    if (!docs)
        return;
    if (!json_array_size(docs)) {
        json_decref(docs);
        api_respond_error(res, 404, "not_found", "no %s %s in the catalogue", series ? "series" : "study",
                          series ? series : study);
        return;
    }
    /* the status is decided on what can be read: all gone is 404, not an empty 200 */
    bool any = false;
    int first_status = 404;
    char first_reason[64] = "missing";
    for (size_t i = 0; i < json_array_size(docs) && !any; i++) {
        wado_file_t f;
        int status;
        char reason[64];
        if (wado_open_doc(ctx, json_array_get(docs, i), &f, &status, reason, sizeof reason)) {
            close(f.fd);
            any = true;
        } else if (i == 0) {
            first_status = status;
            snprintf(first_reason, sizeof first_reason, "%s", reason);
        }
    }
    if (!any) {
        json_decref(docs);
        wado_count_file_error(ctx, first_reason);
        if (first_status == 404)
            api_respond_error(res, 404, "file_missing", "no file of %s %s is where the catalogue says (%s)",
                              series ? "series" : "study", series ? series : study, first_reason);
        else
            api_respond_error(res, first_status == 503 ? 503 : 403, "file_refused",
                              "the files of %s %s are not served (%s)", series ? "series" : "study",
                              series ? series : study, first_reason);
        return;
    }
    meta_stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(docs);
        api_respond_error(res, 500, "internal", "out of memory");
        return;
    }
    s->ctx = ctx;
    s->docs = docs;
    s->max_header = max_header;
    api_respond_stream(res, 200, "application/dicom+json", -1, meta_read, meta_done, s);
}

/* GET .../instances/{sop}/bulkdata/{tag}: the value bytes of one top-level
 * bulk data element, as stored (the file's byte order), single part when
 * the client accepts application/octet-stream, else multipart/related. */
void wado_h_bulkdata(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *study,
                     const char *series, const char *sop, const char *tag_text)
{
    char *end;
    unsigned long tag = strtoul(tag_text, &end, 16);
    if (strlen(tag_text) != 8 || *end) {
        api_respond_error(res, 400, "bad_tag", "bulkdata/{tag}: 8 hexadecimal digits (GGGGEEEE), got '%.20s'",
                          tag_text);
        return;
    }
    wado_file_t f;
    if (!wado_open_instance(ctx, study, series, sop, &f, res))
        return;
    mdb_error_t err = {0};
    mdb_dicom_t *d =
        mdb_dicom_read_fd(f.fd, (size_t)mdb_config_get_int(api_ctx_config(ctx), "worker.max_header_bytes"), NULL, &err);
    close(f.fd);
    if (!d) {
        api_respond_error(res, 422, "unparsable", "instance %s: %s", sop, err.message);
        return;
    }
    const mdb_dcm_elem_t *e = find_in(d, d->root, (uint32_t)tag);
    if (!e || (e->flags & (MDB_DCM_F_SEQ | MDB_DCM_F_FRAGMENTS))) {
        mdb_dicom_destroy(d);
        api_respond_error(res, 404, "not_found", "instance %s has no top-level bulk data element %08lX", sop, tag);
        return;
    }
    const char *accept = req->accept;
    bool single = accept && strstr(accept, "application/octet-stream") && !strstr(accept, "multipart/");
    if (single) {
        api_respond_bytes(res, 200, "application/octet-stream", d->buf + e->off, e->len);
        mdb_dicom_destroy(d);
        return;
    }
    char head[200], tail[64];
    const char *b = "metadb-bulkdata-9f1c2e";
    int hl = snprintf(head, sizeof head, "--%s\r\nContent-Type: application/octet-stream%s%s\r\n\r\n", b,
                      f.ts[0] ? "; transfer-syntax=" : "", f.ts);
    int tl = snprintf(tail, sizeof tail, "\r\n--%s--\r\n", b);
    size_t n = (size_t)hl + e->len + (size_t)tl;
    char *body = malloc(n);
    if (!body) {
        mdb_dicom_destroy(d);
        api_respond_error(res, 503, "out_of_memory", "out of memory");
        return;
    }
    memcpy(body, head, (size_t)hl);
    memcpy(body + hl, d->buf + e->off, e->len);
    memcpy(body + hl + e->len, tail, (size_t)tl);
    mdb_dicom_destroy(d);
    char ctype[sizeof res->content_type];
    snprintf(ctype, sizeof ctype, "multipart/related; type=\"application/octet-stream\"; boundary=%s", b);
    api_respond_bytes(res, 200, ctype, body, n);
    free(body);
}
