/* mdb_charset: DICOM Specific Character Set -> UTF-8 (see mdb_charset.h).
 *
 * The rules follow PS3.5 6.1 and, where the standard leaves room, what
 * pydicom does (it is the reference of our differential test):
 *  - a value without escape sequences is decoded with the first character
 *    set; if that fails, it is decoded again with replacement characters;
 *  - with code extensions, the value is cut before every ESC; a fragment
 *    starting with a known escape sequence of a declared set is decoded with
 *    that set (ISO 2022 IR 87/159 keep their escapes: iconv's ISO-2022-JP(-2)
 *    understands them), and for single-byte/EUC sets the text after the
 *    first delimiter (CR LF TAB FF for text, '^' in a PN group) goes back to
 *    the first set;
 *  - the default repertoire is read as ISO 8859-1.
 * ISO_IR 13 uses CP932 in iconv, whose 0x5C/0x7E are '\' and '~' like
 * Python's shift_jis (glibc's SHIFT_JIS maps them to YEN/OVERLINE). */
#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mdb_charset.h"

#define MAX_TERMS 8
#define MAX_ENCS 24

enum { K_LATIN1 = 0, K_UTF8, K_ICONV };

/* DICOM defined terms -> encoding (iconv name, or the built-in kinds). */
typedef struct {
    const char *term;
    const char *enc;
} term_def_t;

static const term_def_t TERMS[] = {
    {"ISO_IR 6", "latin1"},
    {"ISO_IR 13", "CP932"},
    {"ISO_IR 100", "latin1"},
    {"ISO_IR 101", "ISO-8859-2"},
    {"ISO_IR 109", "ISO-8859-3"},
    {"ISO_IR 110", "ISO-8859-4"},
    {"ISO_IR 126", "ISO-8859-7"},
    {"ISO_IR 127", "ISO-8859-6"},
    {"ISO_IR 138", "ISO-8859-8"},
    {"ISO_IR 144", "ISO-8859-5"},
    {"ISO_IR 148", "ISO-8859-9"},
    {"ISO_IR 166", "TIS-620"},
    {"ISO 2022 IR 6", "latin1"},
    {"ISO 2022 IR 13", "CP932"},
    {"ISO 2022 IR 87", "ISO-2022-JP"},
    {"ISO 2022 IR 100", "latin1"},
    {"ISO 2022 IR 101", "ISO-8859-2"},
    {"ISO 2022 IR 109", "ISO-8859-3"},
    {"ISO 2022 IR 110", "ISO-8859-4"},
    {"ISO 2022 IR 126", "ISO-8859-7"},
    {"ISO 2022 IR 127", "ISO-8859-6"},
    {"ISO 2022 IR 138", "ISO-8859-8"},
    {"ISO 2022 IR 144", "ISO-8859-5"},
    {"ISO 2022 IR 148", "ISO-8859-9"},
    {"ISO 2022 IR 149", "EUC-KR"},
    {"ISO 2022 IR 159", "ISO-2022-JP-2"},
    {"ISO 2022 IR 166", "TIS-620"},
    {"ISO 2022 IR 58", "GB2312"},
    {"ISO_IR 192", "utf8"},
    {"GB18030", "GB18030"},
    {"ISO 2022 GBK", "GBK"},
    {"ISO 2022 58", "GB2312"},
    {"GBK", "GBK"},
};

/* Escape sequences (PS3.3 C.12-3/-4) -> encoding. keep_escape: iconv
 * decodes the escape itself. */
typedef struct {
    const char *seq;
    const char *enc;
    bool keep_escape;
} esc_def_t;

static const esc_def_t ESCAPES[] = {
    {"\x1b(B", "latin1", false},        {"\x1b-A", "latin1", false},     {"\x1b)I", "CP932", false},
    {"\x1b(J", "CP932", false},         {"\x1b$B", "ISO-2022-JP", true}, {"\x1b-B", "ISO-8859-2", false},
    {"\x1b-C", "ISO-8859-3", false},    {"\x1b-D", "ISO-8859-4", false}, {"\x1b-F", "ISO-8859-7", false},
    {"\x1b-G", "ISO-8859-6", false},    {"\x1b-H", "ISO-8859-8", false}, {"\x1b-L", "ISO-8859-5", false},
    {"\x1b-M", "ISO-8859-9", false},    {"\x1b-T", "TIS-620", false},    {"\x1b$)C", "EUC-KR", false},
    {"\x1b$(D", "ISO-2022-JP-2", true}, {"\x1b$)A", "GB2312", false},
};

typedef struct {
    char name[48];
    int kind;
    iconv_t h;
    bool opened;
    bool failed;
} enc_t;

struct mdb_charset {
    int terms[MAX_TERMS]; /* encoding index per declared term */
    size_t nterms;
    char current[160];
    char unknown[64];
    enc_t encs[MAX_ENCS];
    size_t nencs;
    mdb_buf_t tmp;
};

/* ---- buffers ---- */

bool mdb_buf_reserve(mdb_buf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *n = realloc(b->data, cap);
    if (!n)
        return false;
    b->data = n;
    b->cap = cap;
    return true;
}

bool mdb_buf_append(mdb_buf_t *b, const void *p, size_t n)
{
    if (!mdb_buf_reserve(b, n))
        return false;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

void mdb_buf_free(mdb_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static bool put_replacement(mdb_buf_t *out)
{
    return mdb_buf_append(out, "\xEF\xBF\xBD", 3);
}

/* ---- decoders ---- */

static bool decode_latin1(const unsigned char *in, size_t len, mdb_buf_t *out)
{
    size_t ascii = 0;
    while (ascii < len && in[ascii] < 0x80)
        ascii++;
    if (ascii == len) /* the common case: plain ASCII is already UTF-8 */
        return mdb_buf_append(out, in, len);
    if (!mdb_buf_reserve(out, len * 2))
        return false;
    char *o = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = in[i];
        if (c < 0x80) {
            *o++ = (char)c;
        } else {
            *o++ = (char)(0xC0 | (c >> 6));
            *o++ = (char)(0x80 | (c & 0x3F));
        }
    }
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return true;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid; *bad
 * gets the length of the maximal invalid subpart to replace by one U+FFFD. */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if (k >= len)
            goto invalid;
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (s[k] < lo_k || s[k] > hi_k)
            goto invalid;
        *bad = k + 1;
    }
    return need + 1;
invalid:
    return 0;
}

bool mdb_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, bad;
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i, &bad);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* strict: fail on the first invalid sequence (out unchanged). */
static bool decode_utf8(const unsigned char *in, size_t len, mdb_buf_t *out, bool strict, bool *ok)
{
    size_t start = out->len, i = 0, bad;
    *ok = true;
    if (!mdb_buf_reserve(out, len + 8))
        return false;
    while (i < len) {
        size_t n = utf8_seq(in + i, len - i, &bad);
        if (n) {
            if (!mdb_buf_append(out, in + i, n))
                return false;
            i += n;
            continue;
        }
        *ok = false;
        if (strict) {
            out->len = start;
            if (out->data)
                out->data[start] = '\0';
            return true;
        }
        if (!put_replacement(out))
            return false;
        i += bad;
    }
    return true;
}

static enc_t *enc_get(mdb_charset_t *cs, int idx)
{
    enc_t *e = &cs->encs[idx];
    if (e->kind != K_ICONV || e->opened || e->failed)
        return e;
    e->h = iconv_open("UTF-8", e->name);
    if (e->h == (iconv_t)-1)
        e->failed = true;
    else
        e->opened = true;
    return e;
}

/* Index of an encoding by name, adding it (unopened) if new; -1 if full. */
static int enc_index(mdb_charset_t *cs, const char *name)
{
    for (size_t i = 0; i < cs->nencs; i++)
        if (!strcmp(cs->encs[i].name, name))
            return (int)i;
    if (cs->nencs == MAX_ENCS)
        return -1;
    enc_t *e = &cs->encs[cs->nencs];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->kind = !strcmp(name, "latin1") ? K_LATIN1 : !strcmp(name, "utf8") ? K_UTF8 : K_ICONV;
    return (int)cs->nencs++;
}

/* iconv with U+FFFD for every byte it rejects (strict: fail instead). */
static bool decode_iconv(enc_t *e, const unsigned char *in, size_t len, mdb_buf_t *out, bool strict, bool *ok)
{
    size_t start = out->len;
    *ok = true;
    if (!e->opened) {
        /* set unusable in this libc: every byte is a replacement */
        *ok = false;
        if (strict)
            return true;
        for (size_t i = 0; i < len; i++)
            if (!put_replacement(out))
                return false;
        return true;
    }
    iconv(e->h, NULL, NULL, NULL, NULL);
    char *ip = (char *)in;
    size_t il = len;
    while (il > 0) {
        if (!mdb_buf_reserve(out, il * 4 + 16))
            return false;
        char *op = out->data + out->len;
        size_t ol = out->cap - out->len - 1;
        size_t r = iconv(e->h, &ip, &il, &op, &ol);
        out->len = (size_t)(op - out->data);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG)
            continue;
        *ok = false;
        if (strict) {
            out->len = start;
            out->data[start] = '\0';
            return true;
        }
        if (!put_replacement(out))
            return false;
        ip++;
        il--;
        iconv(e->h, NULL, NULL, NULL, NULL);
    }
    /* flush shift state */
    if (!mdb_buf_reserve(out, 16))
        return false;
    char *op = out->data + out->len;
    size_t ol = out->cap - out->len - 1;
    iconv(e->h, NULL, NULL, &op, &ol);
    out->len = (size_t)(op - out->data);
    out->data[out->len] = '\0';
    return true;
}

static bool decode_with(mdb_charset_t *cs, int idx, const unsigned char *in, size_t len, mdb_buf_t *out, bool strict,
                        bool *ok)
{
    enc_t *e = enc_get(cs, idx);
    *ok = true;
    switch (e->kind) {
    case K_LATIN1: return decode_latin1(in, len, out);
    case K_UTF8: return decode_utf8(in, len, out, strict, ok);
    default: return decode_iconv(e, in, len, out, strict, ok);
    }
}

/* Strict first; on failure the first declared set with replacements. */
static bool decode_or_replace(mdb_charset_t *cs, int idx, const unsigned char *in, size_t len, mdb_buf_t *out,
                              bool *replaced)
{
    bool ok;
    if (!decode_with(cs, idx, in, len, out, true, &ok))
        return false;
    if (ok)
        return true;
    *replaced = true;
    return decode_with(cs, cs->terms[0], in, len, out, false, &ok);
}

static bool declared(const mdb_charset_t *cs, int idx)
{
    for (size_t i = 0; i < cs->nterms; i++)
        if (cs->terms[i] == idx)
            return true;
    return false;
}

static bool is_delim(unsigned char c, mdb_cs_kind_t kind)
{
    if (kind == MDB_CS_PN)
        return c == '^';
    return c == 0x0d || c == 0x0a || c == 0x09 || c == 0x0c;
}

/* One fragment that starts with ESC. */
static bool decode_escaped(mdb_charset_t *cs, const unsigned char *f, size_t n, mdb_cs_kind_t kind, mdb_buf_t *out,
                           bool *replaced)
{
    for (size_t k = 0; k < sizeof ESCAPES / sizeof ESCAPES[0]; k++) {
        size_t sl = strlen(ESCAPES[k].seq);
        if (n < sl || memcmp(f, ESCAPES[k].seq, sl) != 0)
            continue;
        int idx = enc_index(cs, ESCAPES[k].enc);
        if (idx < 0 || (!declared(cs, idx) && strcmp(ESCAPES[k].enc, "latin1") != 0))
            break;
        if (ESCAPES[k].keep_escape)
            return decode_or_replace(cs, idx, f, n, out, replaced);
        f += sl;
        n -= sl;
        size_t d = 0;
        while (d < n && !is_delim(f[d], kind))
            d++;
        if (!decode_or_replace(cs, idx, f, d, out, replaced))
            return false;
        return d == n || decode_or_replace(cs, cs->terms[0], f + d, n - d, out, replaced);
    }
    /* unknown or undeclared escape: the first set, with replacements */
    bool ok;
    if (!decode_with(cs, cs->terms[0], f, n, out, false, &ok))
        return false;
    if (!ok)
        *replaced = true;
    return true;
}

/* NUL is not a character we store: replace it. */
static bool scrub_nul(mdb_buf_t *out, size_t from, bool *replaced)
{
    if (!memchr(out->data + from, '\0', out->len - from))
        return true;
    mdb_buf_t t = {0};
    for (size_t i = from; i < out->len; i++) {
        bool ok = out->data[i] ? mdb_buf_append(&t, &out->data[i], 1) : put_replacement(&t);
        if (!ok) {
            mdb_buf_free(&t);
            return false;
        }
    }
    *replaced = true;
    out->len = from;
    bool ok = mdb_buf_append(out, t.data ? t.data : "", t.len);
    mdb_buf_free(&t);
    return ok;
}

bool mdb_charset_decode(mdb_charset_t *cs, const char *in, size_t len, mdb_cs_kind_t kind, mdb_buf_t *out,
                        bool *replaced)
{
    const unsigned char *u = (const unsigned char *)in;
    size_t from = out->len;
    bool ok = true;
    if (!mdb_buf_reserve(out, len))
        return false;
    if (kind == MDB_CS_DEFAULT) {
        ok = decode_latin1(u, len, out);
    } else if (!memchr(u, 0x1b, len)) {
        ok = decode_or_replace(cs, cs->terms[0], u, len, out, replaced);
    } else {
        size_t i = 0;
        while (ok && i < len) {
            size_t j = i + 1;
            while (j < len && u[j] != 0x1b)
                j++;
            if (u[i] == 0x1b)
                ok = decode_escaped(cs, u + i, j - i, kind, out, replaced);
            else
                ok = decode_or_replace(cs, cs->terms[0], u + i, j - i, out, replaced);
            i = j;
        }
    }
    return ok && scrub_nul(out, from, replaced);
}

char *mdb_charset_decode_dup(mdb_charset_t *cs, const char *in, size_t len, mdb_cs_kind_t kind, bool *replaced)
{
    mdb_buf_t b = {0};
    bool dummy = false;
    if (!mdb_charset_decode(cs, in, len, kind, &b, replaced ? replaced : &dummy)) {
        mdb_buf_free(&b);
        return NULL;
    }
    if (!b.data)
        return strdup("");
    return b.data;
}

/* ---- selection ---- */

static const char *term_encoding(const char *term)
{
    for (size_t i = 0; i < sizeof TERMS / sizeof TERMS[0]; i++)
        if (!strcmp(TERMS[i].term, term))
            return TERMS[i].enc;
    return NULL;
}

static bool standalone(const char *enc)
{
    return !strcmp(enc, "utf8") || !strcmp(enc, "GB18030") || !strcmp(enc, "GBK");
}

/* A term to an encoding name: defined term, common misspelling, or an
 * iconv name. NULL if none. */
static const char *resolve_term(mdb_charset_t *cs, const char *term, char *scratch, size_t cap)
{
    const char *enc = term_encoding(term);
    if (enc)
        return enc;
    size_t n = strlen(term);
    if (n > 6 && !strncasecmp(term, "ISO", 3) && term[3] != '_' && !strncasecmp(term + 4, "IR", 2) &&
        strncasecmp(term, "ISO 2022", 8) != 0 && !(n > 8 && term[3] != ' ' && !strncasecmp(term + 4, "2022", 4))) {
        snprintf(scratch, cap, "ISO_IR%s", term + 6);
        if ((enc = term_encoding(scratch)))
            return enc;
    }
    if (n > 12 && !strncasecmp(term, "ISO", 3) && !strncasecmp(term + 4, "2022", 4) &&
        !strncasecmp(term + 9, "IR", 2)) {
        snprintf(scratch, cap, "ISO 2022 IR %s", term + 12);
        if ((enc = term_encoding(scratch)))
            return enc;
    }
    /* an iconv name (the archive override uses these: CP1251, GBK, ...) */
    if (!strcasecmp(term, "UTF-8") || !strcasecmp(term, "UTF8"))
        return "utf8";
    if (!strcasecmp(term, "latin1") || !strcasecmp(term, "ISO-8859-1"))
        return "latin1";
    iconv_t h = iconv_open("UTF-8", term);
    if (h == (iconv_t)-1)
        return NULL;
    iconv_close(h);
    (void)cs;
    snprintf(scratch, cap, "%s", term);
    return scratch;
}

void mdb_charset_select(mdb_charset_t *cs, const char *scs, size_t len, const char **unknown_term)
{
    char buf[160];
    if (unknown_term)
        *unknown_term = NULL;
    cs->unknown[0] = '\0';
    if (!scs)
        len = 0;
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, scs ? scs : "", len);
    buf[len] = '\0';
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\0'))
        buf[--len] = '\0';
    snprintf(cs->current, sizeof cs->current, "%s", buf);
    cs->nterms = 0;
    char *save = NULL, *p = buf;
    size_t ti = 0;
    for (;;) {
        char *bs = strchr(p, '\\');
        if (bs)
            *bs = '\0';
        char *t = p;
        while (*t == ' ')
            t++;
        size_t tl = strlen(t);
        while (tl > 0 && t[tl - 1] == ' ')
            t[--tl] = '\0';
        const char *enc;
        char scratch[64];
        if (!tl && ti == 0)
            enc = "latin1";
        else if (!tl)
            enc = NULL;
        else if (!(enc = resolve_term(cs, t, scratch, sizeof scratch))) {
            if (!cs->unknown[0])
                snprintf(cs->unknown, sizeof cs->unknown, "%.*s", (int)(sizeof cs->unknown - 1),
                         t); /* cut on purpose */
            enc = "latin1";
        }
        if (enc && cs->nterms < MAX_TERMS) {
            bool skip = ti > 0 && (standalone(enc) || (cs->nterms > 0 && standalone(cs->encs[cs->terms[0]].name)));
            int idx = skip ? -1 : enc_index(cs, enc);
            if (idx >= 0)
                cs->terms[cs->nterms++] = idx;
        }
        ti++;
        if (!bs)
            break;
        p = bs + 1;
    }
    (void)save;
    if (cs->nterms == 0)
        cs->terms[cs->nterms++] = 0; /* index 0 is always latin1 */
    if (unknown_term && cs->unknown[0])
        *unknown_term = cs->unknown;
}

const char *mdb_charset_current(const mdb_charset_t *cs)
{
    return cs->current;
}

mdb_charset_t *mdb_charset_new(void)
{
    mdb_charset_t *cs = calloc(1, sizeof *cs);
    if (!cs)
        return NULL;
    enc_index(cs, "latin1"); /* index 0: the default */
    cs->terms[0] = 0;
    cs->nterms = 1;
    return cs;
}

void mdb_charset_destroy(mdb_charset_t *cs)
{
    if (!cs)
        return;
    for (size_t i = 0; i < cs->nencs; i++)
        if (cs->encs[i].opened)
            iconv_close(cs->encs[i].h);
    mdb_buf_free(&cs->tmp);
    free(cs);
}
