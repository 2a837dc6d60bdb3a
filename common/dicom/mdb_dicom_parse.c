/* mdb_dicom_parse: the bounded, zero-copy DICOM header reader.
 *
 * Reads the File Meta Information (group 0002, explicit VR little endian,
 * with or without the 128-byte preamble), picks the data set encoding from
 * the Transfer Syntax (checked against the first element, as broken writers
 * lie), inflates deflated data sets, and walks the data set up to Pixel Data
 * (7FE0,0010 / 0008 / 0009), which it never reads. Sequences (defined or
 * undefined length, SQ, UN-encoded SQ in implicit VR little endian, and
 * implicit-VR SQ known from the dictionary) become items; encapsulated
 * fragments (e.g. an icon's pixel data) are skipped.
 *
 * Bounded: every length is checked against its container and the buffer
 * before it is used; nothing is allocated from a length read in the file;
 * nesting is limited to MDB_DCM_MAX_DEPTH; the buffer never exceeds
 * max_header_bytes. A file is read in growing chunks (first what the
 * previous file of the same reader needed, 8 KiB at first; then x4, keeping
 * what was read) until the walk reaches Pixel Data or EOF; the buffers of a
 * mdb_dicom_t are reused from file to file.
 *
 * After a full read the Pixel Data element is checked against the file
 * (check_pixels): its length, and for encapsulated pixel data each
 * fragment's item header, are compared with the bytes the file holds, so a
 * copy cut short inside the pixels is reported (mdb_dcm_pixels_t) rather
 * than refused; a file cut inside the Pixel Data tag itself counts as a
 * whole header. Pixel values are never read.
 *
 * Files without a meta header are accepted when the first element looks
 * like a DICOM data set (group <= 0010, valid VR or plausible length), and
 * any structural error in such a file is reported as "not_dicom". */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "mdb_dicom_private.h"

#define MDB_DCM_MAX_DEPTH 128
#define INITIAL_READ (8u * 1024u)

#define TAG_ITEM 0xFFFEE000u
#define TAG_ITEM_DELIM 0xFFFEE00Du
#define TAG_SEQ_DELIM 0xFFFEE0DDu
#define TAG_PIXEL_DATA 0x7FE00010u
#define TAG_FLOAT_PIXEL_DATA 0x7FE00008u
#define TAG_DOUBLE_PIXEL_DATA 0x7FE00009u
#define UNDEFINED_LENGTH 0xFFFFFFFFu
#define NO_LIMIT ((size_t)-1)

#define TS_IMPLICIT_LE "1.2.840.10008.1.2"
#define TS_EXPLICIT_BE "1.2.840.10008.1.2.2"
#define TS_DEFLATED "1.2.840.10008.1.2.1.99"
#define SOP_DICOMDIR "1.2.840.10008.1.3.10"

typedef enum { PS_OK = 0, PS_NEED, PS_ERR } ps_t;

typedef struct {
    mdb_dicom_t *d;
    const uint8_t *b;
    size_t len;
    bool complete;
    bool no_meta; /* structural errors mean "not DICOM" */
    bool suspect; /* 'DICM' without a group-0002 meta header: errors are "malformed" */
    uint32_t stop_after;
    size_t max_bytes;
    size_t need;
    mdb_error_t *err;
} parser_t;

const char *mdb_dicom_reason_name(int code)
{
    switch (code) {
    case MDB_DICOM_EOK: return "ok";
    case MDB_DICOM_EEMPTY: return "empty_file";
    case MDB_DICOM_ENOTDICOM: return "not_dicom";
    case MDB_DICOM_ETRUNCATED: return "truncated";
    case MDB_DICOM_EUNREADABLE: return "unreadable";
    case MDB_DICOM_EMISSINGUID: return "missing_uid";
    case MDB_DICOM_ETOOLARGE: return "header_too_large";
    case MDB_DICOM_EMALFORMED: return "malformed";
    case MDB_DICOM_EDICOMDIR: return "dicomdir";
    default: return "malformed";
    }
}

static uint16_t rd16(const uint8_t *p, bool le)
{
    return le ? (uint16_t)(p[0] | (p[1] << 8)) : (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p, bool le)
{
    return le ? ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24))
              : (((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
}

static uint32_t rdtag(const uint8_t *p, bool le)
{
    return ((uint32_t)rd16(p, le) << 16) | rd16(p + 2, le);
}

static bool vr_is(const char *vr, const char *s)
{
    return vr[0] == s[0] && vr[1] == s[1];
}

/* VRs with a 2-byte reserved field and a 4-byte length in explicit VR:
 * OB OD OF OL OV OW SQ SV UC UN UR UT UV. */
static bool vr_long(const char *vr)
{
    switch (vr[0]) {
    case 'O': return vr[1] == 'B' || vr[1] == 'D' || vr[1] == 'F' || vr[1] == 'L' || vr[1] == 'V' || vr[1] == 'W';
    case 'S': return vr[1] == 'Q' || vr[1] == 'V';
    case 'U': return vr[1] == 'C' || vr[1] == 'N' || vr[1] == 'R' || vr[1] == 'T' || vr[1] == 'V';
    default: return false;
    }
}

static bool vr_known(const uint8_t *v)
{
    static const char *const K[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
                                    "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
                                    "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};
    for (size_t i = 0; i < sizeof K / sizeof K[0]; i++)
        if (v[0] == (uint8_t)K[i][0] && v[1] == (uint8_t)K[i][1])
            return true;
    return false;
}

static bool vr_letters(const uint8_t *v)
{
    return v[0] >= 'A' && v[0] <= 'Z' && v[1] >= 'A' && v[1] <= 'Z';
}

static ps_t fail(parser_t *p, int code, const char *fmt, size_t at)
{
    if (p->suspect && code == MDB_DICOM_ETRUNCATED)
        code = MDB_DICOM_EMALFORMED;
    if (p->no_meta && (code == MDB_DICOM_EMALFORMED || code == MDB_DICOM_ETRUNCATED))
        mdb_error_set(p->err, MDB_ERR_DICOM, MDB_DICOM_ENOTDICOM,
                      "no DICOM preamble/meta header and the bytes do not parse as a data set (at byte %zu)", at);
    else
        mdb_error_set(p->err, MDB_ERR_DICOM, code, fmt, at);
    return PS_ERR;
}

/* pos+n must lie within the container (limit) and the buffer. */
static ps_t need_bytes(parser_t *p, size_t pos, size_t n, size_t limit)
{
    if (limit != NO_LIMIT && pos + n > limit)
        return fail(p, MDB_DICOM_EMALFORMED, "element runs past the end of its item/sequence (at byte %zu)", pos);
    if (pos + n <= p->len)
        return PS_OK;
    if (!p->complete) {
        p->need = pos + n;
        return PS_NEED;
    }
    return fail(p, MDB_DICOM_ETRUNCATED, "file ends inside an element (at byte %zu)", pos);
}

/* A value that runs past the end of a complete file is "truncated" when the
 * element header looks genuine (a known VR, or a tag the dictionary knows);
 * otherwise the bytes were never a data set here: "malformed". */
static ps_t value_fits(parser_t *p, size_t pos, size_t vpos, uint32_t len, size_t limit, bool ex, const char *vr,
                       uint32_t tag)
{
    if ((limit == NO_LIMIT || vpos + len <= limit) && vpos + len > p->len && p->complete) {
        bool genuine = ex ? vr_known((const uint8_t *)vr) : (MDB_TAG_GROUP(tag) & 1) || mdb_dicom_dict_by_tag(tag);
        if (!genuine || p->suspect)
            return fail(p, MDB_DICOM_EMALFORMED, "element length runs past the end of the file (at byte %zu)", pos);
    }
    return need_bytes(p, vpos, len, limit);
}

static int32_t add_elem(parser_t *p, uint32_t tag, const char *vr, uint32_t len, size_t off, uint8_t flags)
{
    mdb_dicom_t *d = p->d;
    if (d->nelems == d->elems_cap) {
        size_t cap = d->elems_cap ? d->elems_cap * 2 : 256;
        mdb_dcm_elem_t *n = realloc(d->elems, cap * sizeof *n);
        if (!n)
            return -1;
        d->elems = n;
        d->elems_cap = cap;
    }
    mdb_dcm_elem_t *e = &d->elems[d->nelems];
    e->tag = tag;
    e->len = len;
    e->off = (uint32_t)off;
    e->next = -1;
    e->items = -1;
    e->vr[0] = vr ? vr[0] : 0;
    e->vr[1] = vr ? vr[1] : 0;
    e->flags = flags;
    return (int32_t)d->nelems++;
}

static int32_t add_item(parser_t *p)
{
    mdb_dicom_t *d = p->d;
    if (d->nitems == d->items_cap) {
        size_t cap = d->items_cap ? d->items_cap * 2 : 32;
        mdb_dcm_item_t *n = realloc(d->items, cap * sizeof *n);
        if (!n)
            return -1;
        d->items = n;
        d->items_cap = cap;
    }
    d->items[d->nitems].first = -1;
    d->items[d->nitems].next = -1;
    return (int32_t)d->nitems++;
}

static ps_t oom(parser_t *p)
{
    mdb_error_set(p->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while parsing");
    return PS_ERR;
}

static ps_t parse_dataset(parser_t *p, size_t *pos, size_t limit, bool le, bool explicit_vr, bool top, bool undef_item,
                          int depth, int32_t *first);

/* Is a defined-length implicit-VR element a sequence? Public: the
 * dictionary says SQ. Private: GDCM's private dictionary, given the creator
 * found among the earlier elements of the same data set. */
static bool implicit_is_sq(parser_t *p, uint32_t tag, int32_t first)
{
    uint16_t group = MDB_TAG_GROUP(tag), elem = MDB_TAG_ELEMENT(tag);
    if (!(group & 1)) {
        const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_tag(tag);
        return de && vr_is(de->vr, "SQ");
    }
    if (elem < 0x1000)
        return false;
    uint32_t ctag = MDB_TAG(group, elem >> 8);
    for (int32_t i = first; i >= 0; i = p->d->elems[i].next) {
        const mdb_dcm_elem_t *e = &p->d->elems[i];
        if (e->tag != ctag || e->len == 0 || e->len > 64)
            continue;
        char creator[65];
        size_t n = e->len;
        memcpy(creator, p->b + e->off, n);
        while (n > 0 && (creator[n - 1] == ' ' || creator[n - 1] == '\0'))
            n--;
        creator[n] = '\0';
        const char *vr = mdb_dicom_private_vr(tag, creator);
        return vr && vr_is(vr, "SQ");
    }
    return false;
}

/* Skip encapsulated fragments: items of defined length up to the sequence
 * delimiter. */
static ps_t parse_fragments(parser_t *p, size_t *pos, size_t limit, bool le)
{
    for (;;) {
        ps_t r = need_bytes(p, *pos, 8, limit);
        if (r != PS_OK)
            return r;
        uint32_t tag = rdtag(p->b + *pos, le);
        uint32_t len = rd32(p->b + *pos + 4, le);
        if (tag == TAG_SEQ_DELIM) {
            *pos += 8;
            return PS_OK;
        }
        if (tag != TAG_ITEM || len == UNDEFINED_LENGTH)
            return fail(p, MDB_DICOM_EMALFORMED, "bad encapsulated fragment (at byte %zu)", *pos);
        if ((r = need_bytes(p, *pos, 8 + (size_t)len, limit)) != PS_OK)
            return r;
        *pos += 8 + (size_t)len;
    }
}

/* Items of a sequence whose value starts at *pos. seq_end: end of a
 * defined-length sequence, NO_LIMIT for undefined (ends at the delimiter). */
static ps_t parse_items(parser_t *p, int32_t seq, size_t *pos, size_t seq_end, size_t limit, bool le, bool explicit_vr,
                        int depth)
{
    int32_t last = -1;
    if (depth > MDB_DCM_MAX_DEPTH)
        return fail(p, MDB_DICOM_EMALFORMED, "sequences nested too deeply (at byte %zu)", *pos);
    for (;;) {
        if (seq_end != NO_LIMIT && *pos == seq_end)
            return PS_OK;
        size_t ilimit = seq_end != NO_LIMIT ? seq_end : limit;
        ps_t r = need_bytes(p, *pos, 8, ilimit);
        if (r != PS_OK)
            return r;
        uint32_t tag = rdtag(p->b + *pos, le);
        uint32_t len = rd32(p->b + *pos + 4, le);
        if (tag == TAG_SEQ_DELIM) {
            *pos += 8;
            if (seq_end == NO_LIMIT)
                return PS_OK;
            continue; /* stray delimiter inside a defined-length sequence */
        }
        if (tag == TAG_ITEM_DELIM) {
            *pos += 8;
            continue; /* stray */
        }
        if (tag != TAG_ITEM)
            return fail(p, MDB_DICOM_EMALFORMED, "expected a sequence item (at byte %zu)", *pos);
        int32_t it = add_item(p);
        if (it < 0)
            return oom(p);
        if (last < 0)
            p->d->elems[seq].items = it;
        else
            p->d->items[last].next = it;
        last = it;
        *pos += 8;
        int32_t first = -1;
        if (len == UNDEFINED_LENGTH) {
            r = parse_dataset(p, pos, ilimit, le, explicit_vr, false, true, depth + 1, &first);
        } else {
            if ((r = need_bytes(p, *pos, len, ilimit)) != PS_OK)
                return r;
            r = parse_dataset(p, pos, *pos + len, le, explicit_vr, false, false, depth + 1, &first);
        }
        p->d->items[it].first = first;
        if (r != PS_OK)
            return r;
    }
}

/* Are the n (< 4) bytes at b the start of a Pixel Data tag (7FE0,0010 /
 * 0008 / 0009) in the data set's byte order? */
static bool pixel_tag_prefix(const uint8_t *b, size_t n, bool le)
{
    static const uint32_t tags[3] = {TAG_PIXEL_DATA, TAG_FLOAT_PIXEL_DATA, TAG_DOUBLE_PIXEL_DATA};
    for (int k = 0; k < 3; k++) {
        uint8_t t[4];
        uint16_t g = MDB_TAG_GROUP(tags[k]), e = MDB_TAG_ELEMENT(tags[k]);
        t[0] = le ? (uint8_t)g : (uint8_t)(g >> 8);
        t[1] = le ? (uint8_t)(g >> 8) : (uint8_t)g;
        t[2] = le ? (uint8_t)e : (uint8_t)(e >> 8);
        t[3] = le ? (uint8_t)(e >> 8) : (uint8_t)e;
        if (n > 0 && n < 4 && !memcmp(b, t, n))
            return true;
    }
    return false;
}

/* One data set: from *pos to limit (defined length), to an item delimiter
 * (undef_item), or to the end of the file / Pixel Data (top). */
static ps_t parse_dataset(parser_t *p, size_t *pos, size_t limit, bool le, bool explicit_vr, bool top, bool undef_item,
                          int depth, int32_t *first)
{
    int32_t last = -1;
    *first = -1;
    for (;;) {
        if (limit != NO_LIMIT && *pos == limit) {
            if (undef_item)
                return fail(p, MDB_DICOM_EMALFORMED, "item without delimiter (at byte %zu)", *pos);
            return PS_OK;
        }
        if (top && *pos == p->len) {
            if (p->complete)
                return PS_OK;
            p->need = *pos + 8;
            return PS_NEED;
        }
        if (top && p->complete && *pos + 4 > p->len && pixel_tag_prefix(p->b + *pos, p->len - *pos, le)) {
            /* the file ends inside the Pixel Data tag: the header is whole */
            p->d->stopped_at_pixels = true;
            p->d->pixel_off = *pos;
            p->d->header_end = *pos + 12;
            return PS_OK;
        }
        ps_t r = need_bytes(p, *pos, top ? 4 : 8, limit);
        if (r != PS_OK)
            return r;
        uint32_t tag = rdtag(p->b + *pos, le);
        if (top && (tag == TAG_PIXEL_DATA || tag == TAG_FLOAT_PIXEL_DATA || tag == TAG_DOUBLE_PIXEL_DATA)) {
            p->d->stopped_at_pixels = true;
            p->d->pixel_off = *pos;
            p->d->header_end = *pos + 12;
            return PS_OK;
        }
        if (top && p->stop_after && tag > p->stop_after)
            return PS_OK;
        if ((r = need_bytes(p, *pos, 8, limit)) != PS_OK)
            return r;
        if (MDB_TAG_GROUP(tag) == 0xFFFE) {
            uint32_t len = rd32(p->b + *pos + 4, le);
            if (tag == TAG_ITEM_DELIM) {
                *pos += 8;
                if (undef_item)
                    return PS_OK;
                continue; /* stray */
            }
            if (tag == TAG_SEQ_DELIM) {
                *pos += 8;
                continue; /* stray */
            }
            (void)len;
            return fail(p, MDB_DICOM_EMALFORMED, "unexpected item tag in a data set (at byte %zu)", *pos);
        }
        char vr[2] = {0, 0};
        uint32_t len;
        size_t hdr;
        uint8_t flags = le ? MDB_DCM_F_LE : 0;
        bool ex = explicit_vr;
        if (ex && !vr_letters(p->b + *pos + 4)) {
            /* An explicit-VR data set with an element lacking a VR: some
             * writers switch to implicit VR mid-stream. Read it implicitly. */
            ex = false;
        }
        if (ex) {
            vr[0] = (char)p->b[*pos + 4];
            vr[1] = (char)p->b[*pos + 5];
            flags |= MDB_DCM_F_EXPLICIT;
            if (vr_long(vr)) {
                if ((r = need_bytes(p, *pos, 12, limit)) != PS_OK)
                    return r;
                len = rd32(p->b + *pos + 8, le);
                hdr = 12;
            } else {
                len = rd16(p->b + *pos + 6, le);
                hdr = 8;
            }
        } else {
            len = rd32(p->b + *pos + 4, le);
            hdr = 8;
        }
        size_t vpos = *pos + hdr;
        int32_t ei;
        if (len == UNDEFINED_LENGTH) {
            bool seq, inner_le = le, inner_ex = explicit_vr;
            if (ex)
                seq = vr_is(vr, "SQ") || vr_is(vr, "UN");
            else
                seq = tag != TAG_PIXEL_DATA;
            if (ex && vr_is(vr, "UN")) {
                inner_le = true;
                inner_ex = false;
            }
            ei = add_elem(p, tag, vr, 0, vpos, flags | MDB_DCM_F_UNDEF | (seq ? MDB_DCM_F_SEQ : MDB_DCM_F_FRAGMENTS));
            if (ei < 0)
                return oom(p);
            if (last < 0)
                *first = ei;
            else
                p->d->elems[last].next = ei;
            last = ei;
            *pos = vpos;
            r = seq ? parse_items(p, ei, pos, NO_LIMIT, limit, inner_le, inner_ex, depth)
                    : parse_fragments(p, pos, limit, le);
            if (r != PS_OK)
                return r;
            continue;
        }
        if ((r = value_fits(p, *pos, vpos, len, limit, ex, vr, tag)) != PS_OK)
            return r;
        bool seq = false, inner_le = le, inner_ex = explicit_vr;
        if (ex && vr_is(vr, "SQ")) {
            seq = true;
        } else if (ex && vr_is(vr, "UN") && !(MDB_TAG_GROUP(tag) & 1) && len >= 8) {
            const mdb_dicom_dict_entry_t *de = mdb_dicom_dict_by_tag(tag);
            if (de && vr_is(de->vr, "SQ")) {
                seq = true;
                inner_le = true;
                inner_ex = false;
            }
        } else if (!ex && len > 0 && implicit_is_sq(p, tag, *first)) {
            seq = true;
        }
        ei = add_elem(p, tag, vr, seq ? 0 : len, vpos, flags | (seq ? MDB_DCM_F_SEQ : 0));
        if (ei < 0)
            return oom(p);
        if (last < 0)
            *first = ei;
        else
            p->d->elems[last].next = ei;
        last = ei;
        *pos = vpos;
        if (seq) {
            r = parse_items(p, ei, pos, vpos + len, vpos + len, inner_le, inner_ex, depth);
            if (r != PS_OK)
                return r;
            if (*pos != vpos + len)
                return fail(p, MDB_DICOM_EMALFORMED, "sequence length does not match its items (at byte %zu)", vpos);
        } else {
            *pos = vpos + len;
        }
    }
}

/* Copy a short meta string value, trimmed of padding. */
static void meta_str(char *dst, size_t cap, const uint8_t *v, uint32_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, v, n);
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
        n--;
    dst[n] = '\0';
}

/* Group 0002 from pos; stops at the first other group. */
static ps_t parse_meta(parser_t *p, size_t *pos)
{
    for (;;) {
        if (*pos + 8 > p->len) {
            if (!p->complete) {
                p->need = *pos + 8;
                return PS_NEED;
            }
            return PS_OK; /* meta then EOF: an empty data set */
        }
        const uint8_t *b = p->b + *pos;
        if (rd16(b, true) != 0x0002)
            return PS_OK;
        uint32_t tag = rdtag(b, true), len;
        size_t hdr;
        if (vr_letters(b + 4)) {
            char vr[2] = {(char)b[4], (char)b[5]};
            if (vr_long(vr)) {
                ps_t r = need_bytes(p, *pos, 12, NO_LIMIT);
                if (r != PS_OK)
                    return r;
                len = rd32(b + 8, true);
                hdr = 12;
            } else {
                len = rd16(b + 6, true);
                hdr = 8;
            }
        } else {
            len = rd32(b + 4, true);
            hdr = 8;
        }
        if (len == UNDEFINED_LENGTH)
            return fail(p, MDB_DICOM_EMALFORMED, "undefined length in the meta header (at byte %zu)", *pos);
        ps_t r = need_bytes(p, *pos + hdr, len, NO_LIMIT);
        if (r != PS_OK)
            return r;
        const uint8_t *v = p->b + *pos + hdr;
        if (tag == MDB_TAG(0x0002, 0x0010))
            meta_str(p->d->ts, sizeof p->d->ts, v, len);
        else if (tag == MDB_TAG(0x0002, 0x0002))
            meta_str(p->d->sop_class, sizeof p->d->sop_class, v, len);
        *pos += hdr + len;
    }
}

/* Inflate the deflated data set after the meta header into a new buffer
 * (meta prefix + inflated bytes) that replaces p->b. */
static ps_t inflate_dataset(parser_t *p, size_t pos, uint8_t **outbuf, size_t *outlen, bool *ended)
{
    size_t cap = 64 * 1024, limit = p->max_bytes;
    uint8_t *out = malloc(cap);
    if (!out)
        return oom(p);
    memcpy(out, p->b, pos < cap ? pos : cap);
    if (pos > cap) {
        free(out);
        return fail(p, MDB_DICOM_EMALFORMED, "meta header too large (at byte %zu)", pos);
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) {
        free(out);
        return oom(p);
    }
    z.next_in = (Bytef *)(p->b + pos);
    z.avail_in = (uInt)(p->len - pos);
    size_t have = pos;
    int zr = Z_OK;
    *ended = false;
    while (zr == Z_OK) {
        if (have == cap) {
            if (cap >= limit) {
                inflateEnd(&z);
                free(out);
                mdb_error_set(p->err, MDB_ERR_DICOM, MDB_DICOM_ETOOLARGE,
                              "inflated header exceeds worker.max_header_bytes (%zu)", limit);
                return PS_ERR;
            }
            size_t ncap = cap * 2 > limit ? limit : cap * 2;
            uint8_t *n = realloc(out, ncap);
            if (!n) {
                inflateEnd(&z);
                free(out);
                return oom(p);
            }
            out = n;
            cap = ncap;
        }
        z.next_out = out + have;
        z.avail_out = (uInt)(cap - have);
        zr = inflate(&z, Z_NO_FLUSH);
        have = cap - z.avail_out;
        if (zr == Z_BUF_ERROR && z.avail_out > 0)
            break; /* input exhausted */
        if (zr == Z_BUF_ERROR)
            zr = Z_OK;
    }
    inflateEnd(&z);
    if (zr == Z_STREAM_END)
        *ended = true;
    else if (zr != Z_OK && zr != Z_BUF_ERROR) {
        free(out);
        return fail(p, MDB_DICOM_EMALFORMED, "deflated data set does not inflate (at byte %zu)", pos);
    }
    *outbuf = out;
    *outlen = have;
    return PS_OK;
}

/* Decide byte order and VR encoding of a data set starting at pos. */
static void guess_encoding(parser_t *p, size_t pos, bool *le, bool *explicit_vr)
{
    if (pos + 6 > p->len)
        return;
    const uint8_t *b = p->b + pos;
    if (!p->d->has_meta || !p->d->ts[0]) {
        uint16_t gle = rd16(b, true), gbe = rd16(b, false);
        if (gbe <= 0x0010 && gle > 0x0010)
            *le = false;
        else
            *le = true;
    }
    *explicit_vr = vr_known(b + 4);
}

static bool plausible_raw_dataset(const uint8_t *b, size_t len, size_t fsize, bool le, bool explicit_vr)
{
    if (len < 8)
        return false;
    uint16_t group = rd16(b, le);
    if (group > 0x0010 || (group & 1))
        return false;
    if (explicit_vr)
        return true;
    uint32_t vlen = rd32(b + 4, le);
    return vlen == UNDEFINED_LENGTH || vlen <= fsize;
}

/* Forget the previous parse, keep the allocations. */
static void dicom_reset(mdb_dicom_t *d)
{
    d->len = 0;
    d->nelems = d->nitems = 0;
    d->root = -1;
    d->ts[0] = d->sop_class[0] = '\0';
    d->has_meta = d->deflated = d->stopped_at_pixels = false; /* header_end is kept: a read-size hint */
    d->pixel_off = 0;
    memset(&d->pixels, 0, sizeof d->pixels);
    d->little = d->explicit_vr = true;
}

/* Parse d->buf[0..len) (the first len bytes of the file). */
static bool parse_image(mdb_dicom_t *d, size_t len, bool complete, uint32_t stop_after, size_t max_bytes, size_t fsize,
                        size_t *need, mdb_error_t *err)
{
    uint8_t *buf = d->buf;
    dicom_reset(d);
    parser_t p = {.d = d,
                  .b = buf,
                  .len = len,
                  .complete = complete,
                  .stop_after = stop_after,
                  .max_bytes = max_bytes,
                  .err = err};
    d->len = len;
    *need = 0;
    size_t pos = 0;
    bool le = true, explicit_vr = true;
    if (len >= 132 && memcmp(buf + 128, "DICM", 4) == 0) {
        d->has_meta = true;
        pos = 132;
    } else if (len >= 4 && memcmp(buf, "DICM", 4) == 0) {
        d->has_meta = true;
        pos = 4;
    } else if (len >= 8 && rd16(buf, true) == 0x0002 && vr_letters(buf + 4)) {
        d->has_meta = true; /* meta without preamble */
    } else if (len < 132 && !complete) {
        *need = 132;
        return true;
    }
    ps_t r;
    if (d->has_meta) {
        size_t meta_start = pos;
        if ((r = parse_meta(&p, &pos)) != PS_OK)
            goto out;
        if (pos == meta_start)
            p.suspect = true;
        if (!strcmp(d->sop_class, SOP_DICOMDIR)) {
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EDICOMDIR, "a DICOMDIR (media directory), not an instance");
            return false;
        }
        if (!strcmp(d->ts, TS_EXPLICIT_BE))
            le = false;
        if (!strcmp(d->ts, TS_DEFLATED)) {
            uint8_t *inflated = NULL;
            size_t ilen = 0;
            bool ended = false;
            if (!complete && len < max_bytes) {
                /* the whole compressed stream is needed before inflating */
                *need = fsize < max_bytes ? fsize : max_bytes;
                return true;
            }
            if ((r = inflate_dataset(&p, pos, &inflated, &ilen, &ended)) != PS_OK)
                goto out;
            free(d->buf);
            d->buf = buf = inflated;
            d->buf_cap = ilen;
            p.b = inflated;
            d->len = p.len = len = ilen;
            d->deflated = true;
            p.complete = complete = complete || ended;
        }
        guess_encoding(&p, pos, &le, &explicit_vr);
    } else {
        guess_encoding(&p, pos, &le, &explicit_vr);
        if (!plausible_raw_dataset(buf, len, fsize, le, explicit_vr)) {
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ENOTDICOM,
                          "not a DICOM file (no 'DICM' preamble and no data set at byte 0)");
            return false;
        }
        p.no_meta = true;
    }
    d->little = le;
    d->explicit_vr = explicit_vr;
    r = parse_dataset(&p, &pos, NO_LIMIT, le, explicit_vr, true, false, 0, &d->root);
out:
    if (r == PS_NEED) {
        *need = p.need;
        return true;
    }
    return r == PS_OK;
}

/* Where the bytes after the header buffer come from: the file (fd) or the
 * caller's memory image (mem); a deflated data set has none beyond buf. */
typedef struct {
    int fd;
    const uint8_t *mem;
    size_t total; /* bytes of the (inflated) file */
} pixsrc_t;

/* Up to n bytes at off into dst; *got = bytes copied (fewer at the end). */
static bool pixsrc_read(const mdb_dicom_t *d, const pixsrc_t *s, size_t off, uint8_t *dst, size_t n, size_t *got,
                        mdb_error_t *err)
{
    *got = 0;
    if (off >= s->total)
        return true;
    if (n > s->total - off)
        n = s->total - off;
    if (off + n <= d->len || d->deflated) {
        size_t have = off < d->len ? d->len - off : 0;
        *got = n < have ? n : have;
        memcpy(dst, d->buf + off, *got);
        return true;
    }
    if (s->mem) {
        memcpy(dst, s->mem + off, n);
        *got = n;
        return true;
    }
    while (*got < n) {
        ssize_t k = pread(s->fd, dst + *got, n - *got, (off_t)(off + *got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "read failed: %s", strerror(e));
            return false;
        }
        if (k == 0)
            break;
        *got += (size_t)k;
    }
    return true;
}

#define MAX_FRAGMENTS (1u << 20)

/* d->pixels: does the file hold the whole Pixel Data value? Reads only the
 * element's header and, for encapsulated pixel data, each fragment's 8-byte
 * item header (one pread per fragment), never a pixel. A fragment stream
 * that is malformed rather than cut short is left alone: nothing is said. */
static bool check_pixels(mdb_dicom_t *d, const pixsrc_t *s, mdb_error_t *err)
{
    mdb_dcm_pixels_t *px = &d->pixels;
    memset(px, 0, sizeof *px);
    if (!d->stopped_at_pixels)
        return true;
    uint8_t h[12];
    size_t got = 0, pos = d->pixel_off, hdr = 8;
    if (!pixsrc_read(d, s, pos, h, sizeof h, &got, err))
        return false;
    bool le = d->little, ex = d->explicit_vr && got >= 6 && vr_letters(h + 4);
    if (ex && vr_long((const char *)h + 4))
        hdr = 12;
    if (got < hdr || (d->explicit_vr && got < 6)) {
        px->truncated = true; /* the element's own header is cut: its length is unknown */
        return true;
    }
    uint32_t len = ex && hdr == 8 ? rd16(h + 6, le) : rd32(h + hdr - 4, le);
    size_t vpos = pos + hdr, avail = s->total - vpos;
    px->expected_known = true;
    px->present = avail;
    if (len != UNDEFINED_LENGTH) {
        px->expected = len;
        px->present = avail < len ? avail : len;
        px->truncated = avail < len;
        return true;
    }
    px->encapsulated = true;
    size_t o = vpos;
    for (uint32_t n = 0; n < MAX_FRAGMENTS; n++) {
        if (!pixsrc_read(d, s, o, h, 8, &got, err))
            return false;
        if (got < 8) {
            px->truncated = true;
            px->expected = o + 8 - vpos;
            return true;
        }
        uint32_t tag = rdtag(h, le), ilen = rd32(h + 4, le);
        if (tag == TAG_SEQ_DELIM || tag != TAG_ITEM || ilen == UNDEFINED_LENGTH)
            break;
        if ((uint64_t)o + 8 + ilen > s->total) {
            px->truncated = true;
            px->expected = o + 8 + (uint64_t)ilen - vpos;
            return true;
        }
        o += 8 + (size_t)ilen;
    }
    px->expected = o - vpos;
    return true;
}

static mdb_dicom_t *dicom_new(void)
{
    mdb_dicom_t *d = calloc(1, sizeof(mdb_dicom_t));
    if (d)
        d->root = -1;
    return d;
}

mdb_dicom_t *mdb_dicom_new(void)
{
    return dicom_new();
}

void mdb_dicom_destroy(mdb_dicom_t *d)
{
    if (!d)
        return;
    free(d->buf);
    free(d->elems);
    free(d->items);
    free(d);
}

const char *mdb_dicom_transfer_syntax(const mdb_dicom_t *d)
{
    return d->ts;
}

static bool reserve_buf(mdb_dicom_t *d, size_t n, mdb_error_t *err)
{
    if (n <= d->buf_cap)
        return true;
    uint8_t *b = realloc(d->buf, n);
    if (!b) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory (%zu-byte header buffer)", n);
        return false;
    }
    d->buf = b;
    d->buf_cap = n;
    return true;
}

/* pread [from, to) into d->buf; *got = bytes now held (< to at EOF). */
static bool pread_range(int fd, mdb_dicom_t *d, size_t from, size_t to, size_t *got, mdb_error_t *err)
{
    size_t have = from;
    while (have < to) {
        ssize_t k = pread(fd, d->buf + have, to - have, (off_t)have);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "read failed: %s", strerror(e));
            return false;
        }
        if (k == 0)
            break;
        have += (size_t)k;
    }
    *got = have;
    return true;
}

bool mdb_dicom_read_fd_into(mdb_dicom_t *d, int fd, size_t max_header_bytes, uint32_t stop_after, int64_t *file_size,
                            int64_t *file_mtime, mdb_error_t *err)
{
    struct stat st;
    dicom_reset(d);
    if (max_header_bytes == 0)
        max_header_bytes = MDB_DICOM_DEFAULT_MAX_HEADER;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "fstat failed: %s", strerror(e));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "not a regular file");
        return false;
    }
    if (file_size)
        *file_size = (int64_t)st.st_size;
    if (file_mtime)
        *file_mtime = (int64_t)st.st_mtime;
    if (st.st_size == 0) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EEMPTY, "empty file (0 bytes)");
        return false;
    }
    size_t fsize = (size_t)st.st_size;
    size_t cap = fsize < max_header_bytes ? fsize : max_header_bytes;
    /* Files of one archive have similar headers: start from the size the
     * previous file needed (at least 4 KiB), 8 KiB for the first one. */
    size_t first = INITIAL_READ;
    if (d->header_end) {
        first = (d->header_end + 1024 + 4095) & ~(size_t)4095;
        if (first < 4096)
            first = 4096;
        if (first > 65536)
            first = 65536; /* one odd file must not make every later read big */
    }
    size_t want = cap < first ? cap : first;
    size_t have = 0;
    for (;;) {
        /* grow the buffer, keeping what was read; read only the new part */
        if (!reserve_buf(d, want, err) || !pread_range(fd, d, have, want, &have, err))
            return false;
        if (have == 0) {
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EEMPTY, "empty file (0 bytes read)");
            return false;
        }
        bool complete = have < want || have == fsize;
        size_t need = 0;
        bool deflate_before = false;
        if (!parse_image(d, have, complete, stop_after, max_header_bytes, fsize, &need, err))
            return false;
        deflate_before = d->deflated;
        if (need == 0) {
            if (!d->stopped_at_pixels && !d->deflated)
                d->header_end = have < 65536 ? have : 65536;
            pixsrc_t src = {.fd = fd, .total = d->deflated ? d->len : fsize};
            return stop_after != 0 || check_pixels(d, &src, err);
        }
        if (deflate_before || want >= cap) {
            mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ETOOLARGE,
                          "header (data before Pixel Data) larger than worker.max_header_bytes (%zu)",
                          max_header_bytes);
            return false;
        }
        size_t next = want * 4;
        if (next < need)
            next = need;
        want = next < cap ? next : cap;
    }
}

mdb_dicom_t *mdb_dicom_read_fd_until(int fd, size_t max_header_bytes, uint32_t stop_after, int64_t *file_size,
                                     int64_t *file_mtime, mdb_error_t *err)
{
    mdb_dicom_t *d = dicom_new();
    if (!d) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    if (!mdb_dicom_read_fd_into(d, fd, max_header_bytes, stop_after, file_size, file_mtime, err)) {
        mdb_dicom_destroy(d);
        return NULL;
    }
    return d;
}

mdb_dicom_t *mdb_dicom_read_fd(int fd, size_t max_header_bytes, int64_t *file_size, mdb_error_t *err)
{
    return mdb_dicom_read_fd_until(fd, max_header_bytes, 0, file_size, NULL, err);
}

mdb_dicom_t *mdb_dicom_read_buffer(const void *data, size_t len, size_t max_header_bytes, mdb_error_t *err)
{
    if (max_header_bytes == 0)
        max_header_bytes = MDB_DICOM_DEFAULT_MAX_HEADER;
    if (len == 0) {
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EEMPTY, "empty file (0 bytes)");
        return NULL;
    }
    size_t cap = len < max_header_bytes ? len : max_header_bytes;
    mdb_dicom_t *d = dicom_new();
    if (!d || !reserve_buf(d, cap, err)) {
        mdb_dicom_destroy(d);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(d->buf, data, cap);
    size_t need = 0;
    bool ok = parse_image(d, cap, cap == len, 0, max_header_bytes, len, &need, err);
    pixsrc_t src = {.fd = -1, .mem = data, .total = d->deflated ? d->len : len};
    if (ok && need == 0) {
        if (check_pixels(d, &src, err))
            return d;
        ok = false;
    }
    mdb_dicom_destroy(d);
    if (ok)
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ETOOLARGE,
                      "header (data before Pixel Data) larger than max_header_bytes (%zu)", max_header_bytes);
    return NULL;
}
