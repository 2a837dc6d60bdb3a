/* multipart: the streaming multipart parser (see multipart.h for the rules).
 *
 * The delimiter CRLF "--" boundary is found with a Knuth-Morris-Pratt matcher
 * that keeps its state across feeds: the bytes of a partial match are held
 * back (they are a prefix of the pattern, so they need no buffer of their own)
 * and released as content when the match fails. Where no partial match is
 * pending, Horspool's shifts skip ahead by up to the delimiter's length per
 * look (a byte absent from the delimiter rules out every window holding it),
 * so content is scanned fast and handed over in the pieces the network
 * delivered; the last delimiter-length bytes of a piece go through the byte
 * matcher so a delimiter split across feeds is found. The preamble is scanned
 * as if the body started with CRLF, so a delimiter may open it. */
#include "multipart.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAT_MAX (4 + MDB_MULTIPART_BOUNDARY_MAX)

enum {
    ST_PREAMBLE, /* before the first delimiter */
    ST_AD_START, /* just after a delimiter: "--", padding or line end next */
    ST_AD_DASH,  /* saw one '-' after a delimiter */
    ST_AD_LWSP,  /* transport padding after a delimiter */
    ST_AD_CR,    /* CR after a delimiter, LF next */
    ST_HEADERS,  /* inside a part's header block */
    ST_DATA,     /* inside a part's content */
    ST_EPILOGUE, /* after the close delimiter */
    ST_FAILED
};

typedef struct {
    const char *name;
    const char *value;
} header_t;

struct mdb_multipart_part {
    const mdb_multipart_t *mp;
};

struct mdb_multipart {
    char pat[PAT_MAX + 1]; /* CR LF "--" boundary */
    size_t patlen;
    size_t fail[PAT_MAX + 1]; /* fail[m]: longest proper border of pat[0..m) */
    uint8_t skip[256];        /* Horspool shift by the last byte of a window */
    size_t matched;           /* bytes of pat matched at the end of what was fed */
    int state;
    mdb_multipart_callbacks_t cb;
    void *ctx;
    mdb_multipart_limits_t lim;
    char *raw; /* the current part's header block as received */
    size_t raw_len;
    size_t line_start; /* offset in raw of the line being received */
    char *text;        /* parsed headers: NUL-terminated names and values */
    header_t *headers;
    size_t nheaders;
    uint64_t part_bytes; /* content bytes of the current part */
    size_t preamble_bytes;
    size_t parts_begun;
    size_t parts_done;
    mdb_error_t failure;
};

/* ------------------------------------------------------------------ */
/* Content-Type values                                                 */

static bool is_ws(int c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ws(const char *p)
{
    while (is_ws((unsigned char)*p))
        p++;
    return p;
}

/* A token ends at a separator of RFC 2045's tspecials that matters here. */
static bool token_char(int c)
{
    return c > 0x20 && c < 0x7f && !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Read a parameter value (token or quoted-string) at *pp into out[cap].
 * Returns false when malformed or longer than cap-1. */
static bool read_value(const char **pp, char *out, size_t cap, bool *too_long)
{
    const char *p = *pp;
    size_t n = 0;
    *too_long = false;
    if (*p == '"') {
        p++;
        for (;;) {
            char c = *p;
            if (c == '\0')
                return false; /* unterminated */
            if (c == '"') {
                p++;
                break;
            }
            if (c == '\\') {
                p++;
                if (*p == '\0')
                    return false;
                c = *p;
            }
            if (n + 1 >= cap) {
                *too_long = true;
                return false;
            }
            out[n++] = c;
            p++;
        }
    } else {
        /* A token; lenient like most readers: anything visible but ';' and '"' */
        while (*p > 0x20 && *p < 0x7f && *p != ';' && *p != '"') {
            if (n + 1 >= cap) {
                *too_long = true;
                return false;
            }
            out[n++] = *p++;
        }
        if (n == 0)
            return false;
    }
    out[n] = '\0';
    *pp = p;
    return true;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

bool mdb_multipart_parse_content_type(const char *value, mdb_multipart_ctype_t *out, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (value == NULL) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "no Content-Type");
        return false;
    }
    const char *p = skip_ws(value);
    size_t n = 0;
    while (*p && *p != ';' && !is_ws((unsigned char)*p)) {
        if (n + 1 >= sizeof out->media_type) {
            mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: media type too long");
            goto bad;
        }
        out->media_type[n++] = *p++;
    }
    out->media_type[n] = '\0';
    lower(out->media_type);
    if (strncmp(out->media_type, "multipart/", 10) != 0 || out->media_type[10] == '\0') {
        mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type is \"%.100s\", not multipart", out->media_type);
        goto bad;
    }
    bool have_boundary = false;
    for (;;) {
        p = skip_ws(p);
        if (*p == '\0')
            break;
        if (*p != ';') {
            mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: expected ';' at \"%.40s\"", p);
            goto bad;
        }
        p = skip_ws(p + 1);
        if (*p == '\0')
            break; /* a trailing ';' */
        char name[64];
        size_t k = 0;
        while (token_char((unsigned char)*p)) {
            if (k + 1 >= sizeof name) {
                mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: parameter name too long");
                goto bad;
            }
            name[k++] = (char)tolower((unsigned char)*p++);
        }
        name[k] = '\0';
        p = skip_ws(p);
        if (k == 0 || *p != '=') {
            mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: malformed parameter at \"%.40s\"", p);
            goto bad;
        }
        p = skip_ws(p + 1);
        char val[256];
        bool too_long;
        if (!read_value(&p, val, sizeof val, &too_long)) {
            mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: %s parameter %s", name,
                          too_long ? "too long" : "malformed");
            goto bad;
        }
        if (strcmp(name, "boundary") == 0 && !have_boundary) {
            size_t bl = strlen(val);
            if (bl == 0 || bl > MDB_MULTIPART_BOUNDARY_MAX) {
                mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: boundary of %zu characters (1 to %d allowed)", bl,
                              MDB_MULTIPART_BOUNDARY_MAX);
                goto bad;
            }
            for (size_t i = 0; i < bl; i++) {
                unsigned char c = (unsigned char)val[i];
                if (c < 0x20 || c >= 0x7f) {
                    mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: boundary holds byte 0x%02x", c);
                    goto bad;
                }
            }
            memcpy(out->boundary, val, bl + 1);
            have_boundary = true;
        } else if (strcmp(name, "type") == 0 && out->type[0] == '\0') {
            if (strlen(val) >= sizeof out->type) {
                mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type: type parameter too long");
                goto bad;
            }
            strcpy(out->type, val);
            lower(out->type);
        }
    }
    if (!have_boundary) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "Content-Type %.100s has no boundary", out->media_type);
        goto bad;
    }
    return true;
bad:
    memset(out, 0, sizeof *out);
    return false;
}

bool mdb_multipart_media_type_is(const char *value, const char *type)
{
    if (value == NULL || type == NULL)
        return false;
    const char *p = skip_ws(value);
    size_t n = strlen(type);
    if (strncasecmp(p, type, n) != 0)
        return false;
    p = skip_ws(p + n);
    return *p == '\0' || *p == ';';
}

/* ------------------------------------------------------------------ */
/* parts                                                               */

const char *mdb_multipart_part_header(const mdb_multipart_part_t *part, const char *name)
{
    const mdb_multipart_t *mp = part->mp;
    for (size_t i = 0; i < mp->nheaders; i++)
        if (strcasecmp(mp->headers[i].name, name) == 0)
            return mp->headers[i].value;
    return NULL;
}

size_t mdb_multipart_part_header_count(const mdb_multipart_part_t *part)
{
    return part->mp->nheaders;
}

void mdb_multipart_part_header_at(const mdb_multipart_part_t *part, size_t i, const char **name, const char **value)
{
    const mdb_multipart_t *mp = part->mp;
    *name = i < mp->nheaders ? mp->headers[i].name : NULL;
    *value = i < mp->nheaders ? mp->headers[i].value : NULL;
}

size_t mdb_multipart_part_index(const mdb_multipart_part_t *part)
{
    return part->mp->parts_begun - 1;
}

/* ------------------------------------------------------------------ */
/* the parser                                                          */

mdb_multipart_t *mdb_multipart_new(const char *boundary, const mdb_multipart_callbacks_t *cb, void *ctx,
                                   const mdb_multipart_limits_t *limits, mdb_error_t *err)
{
    size_t bl = boundary ? strlen(boundary) : 0;
    if (bl == 0 || bl > MDB_MULTIPART_BOUNDARY_MAX || strpbrk(boundary, "\r\n")) {
        mdb_error_set(err, MDB_ERR_MSG, 0, "multipart: invalid boundary");
        return NULL;
    }
    mdb_multipart_t *mp = calloc(1, sizeof *mp);
    if (mp == NULL) {
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    if (limits)
        mp->lim = *limits;
    if (mp->lim.max_header_bytes == 0)
        mp->lim.max_header_bytes = 16384;
    if (mp->lim.max_headers == 0)
        mp->lim.max_headers = 64;
    if (mp->lim.max_part_bytes == 0)
        mp->lim.max_part_bytes = UINT64_MAX;
    if (mp->lim.max_parts == 0)
        mp->lim.max_parts = SIZE_MAX;
    if (mp->lim.max_preamble_bytes == 0)
        mp->lim.max_preamble_bytes = 65536;
    mp->raw = malloc(mp->lim.max_header_bytes);
    mp->text = malloc(mp->lim.max_header_bytes + 1);
    mp->headers = calloc(mp->lim.max_headers, sizeof *mp->headers);
    if (mp->raw == NULL || mp->text == NULL || mp->headers == NULL) {
        mdb_multipart_destroy(mp);
        mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
        return NULL;
    }
    if (cb)
        mp->cb = *cb;
    mp->ctx = ctx;
    snprintf(mp->pat, sizeof mp->pat, "\r\n--%s", boundary);
    mp->patlen = 4 + bl;
    mp->fail[0] = mp->fail[1] = 0;
    for (size_t m = 2, k = 0; m <= mp->patlen; m++) {
        while (k > 0 && mp->pat[m - 1] != mp->pat[k])
            k = mp->fail[k];
        if (mp->pat[m - 1] == mp->pat[k])
            k++;
        mp->fail[m] = k;
    }
    memset(mp->skip, (int)mp->patlen, sizeof mp->skip);
    for (size_t j = 0; j + 1 < mp->patlen; j++)
        mp->skip[(uint8_t)mp->pat[j]] = (uint8_t)(mp->patlen - 1 - j);
    mp->state = ST_PREAMBLE;
    mp->matched = 2; /* the body is scanned as if it began with CRLF */
    return mp;
}

void mdb_multipart_destroy(mdb_multipart_t *mp)
{
    if (mp == NULL)
        return;
    free(mp->raw);
    free(mp->text);
    free(mp->headers);
    free(mp);
}

bool mdb_multipart_done(const mdb_multipart_t *mp)
{
    return mp->state == ST_EPILOGUE;
}

size_t mdb_multipart_parts(const mdb_multipart_t *mp)
{
    return mp->parts_done;
}

/* Enter the failed state with a formatted message, copied to err. */
__attribute__((format(printf, 3, 4))) static bool mp_fail(mdb_multipart_t *mp, mdb_error_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[MDB_ERROR_MSG_MAX];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mdb_error_set(&mp->failure, MDB_ERR_MSG, 0, "multipart: %s", msg);
    mp->state = ST_FAILED;
    if (err)
        *err = mp->failure;
    return false;
}

/* A callback refused: keep its error (or say it stopped). */
static bool refused(mdb_multipart_t *mp, mdb_error_t *cb_err, mdb_error_t *err)
{
    if (cb_err->message[0] == '\0')
        mdb_error_set(cb_err, MDB_ERR_MSG, 0, "multipart: the receiver stopped at part %zu", mp->parts_begun);
    mp->failure = *cb_err;
    mp->state = ST_FAILED;
    if (err)
        *err = mp->failure;
    return false;
}

/* Content bytes of the current part (or preamble bytes, which are dropped). */
static bool emit(mdb_multipart_t *mp, const void *data, size_t len, mdb_error_t *err)
{
    if (len == 0)
        return true;
    if (mp->state == ST_PREAMBLE) {
        mp->preamble_bytes += len; /* counts the CRLF the scan starts with */
        if (mp->preamble_bytes - 2 > mp->lim.max_preamble_bytes)
            return mp_fail(mp, err, "no boundary \"%s\" within the first %zu bytes", mp->pat + 4,
                           mp->lim.max_preamble_bytes);
        return true;
    }
    if (len > mp->lim.max_part_bytes - mp->part_bytes)
        return mp_fail(mp, err, "part %zu larger than %llu bytes", mp->parts_begun - 1,
                       (unsigned long long)mp->lim.max_part_bytes);
    mp->part_bytes += len;
    if (mp->cb.part_data) {
        mdb_error_t cb_err = {0};
        if (!mp->cb.part_data(mp->ctx, data, len, &cb_err))
            return refused(mp, &cb_err, err);
    }
    return true;
}

/* Run the delimiter matcher over p[0..n) in the preamble or a part's content.
 * Sets *used to the bytes consumed and *found when a delimiter ended there.
 * Everything before the delimiter (or before a pending partial match) is
 * released through emit(). */
static bool scan(mdb_multipart_t *mp, const uint8_t *p, size_t n, size_t *used, bool *found, mdb_error_t *err)
{
    const size_t carried = mp->matched; /* pat[0..carried) precede p */
    size_t m = carried, i = 0;
    *found = false;
    const size_t L = mp->patlen;
    while (i < n) {
        if (m > 0 && i >= m && i - m + L <= n) {
            /* The pending partial match lies inside p with room for a whole
             * window: no window before it can match, so look again from its
             * start with shifts (content full of CRs would otherwise keep a
             * 1-byte partial match alive and go byte by byte). */
            i -= m;
            m = 0;
        }
        if (m == 0) {
            /* No window starting before s holds the delimiter, not even in part:
             * each shift is by the last byte of a window lying inside p. */
            size_t s = i;
            while (s + L <= n) {
                uint8_t last = p[s + L - 1];
                if (last == (uint8_t)mp->pat[L - 1] && memcmp(p + s, mp->pat, L - 1) == 0) {
                    i = s + L;
                    m = L;
                    break;
                }
                s += mp->skip[last];
            }
            if (m == L) {
                *found = true;
                break;
            }
            i = s < n ? s : n;
            if (i == n)
                break;
        }
        uint8_t c = p[i++];
        while (m > 0 && (uint8_t)mp->pat[m] != c)
            m = mp->fail[m];
        if ((uint8_t)mp->pat[m] == c)
            m++;
        if (m == mp->patlen) {
            *found = true;
            break;
        }
    }
    /* The stream seen is pat[0..carried) then p[0..i); its last m bytes are a
     * (partial or whole) delimiter; the rest is confirmed content. */
    size_t confirmed = carried + i - m;
    size_t from_pat = confirmed < carried ? confirmed : carried;
    *used = i;
    mp->matched = *found ? 0 : m;
    if (!emit(mp, mp->pat, from_pat, err))
        return false;
    return emit(mp, p, confirmed - from_pat, err);
}

/* Split the received header block into names and values (folded lines joined). */
static bool parse_headers(mdb_multipart_t *mp, mdb_error_t *err)
{
    size_t part = mp->parts_begun - 1;
    size_t out = 0, pos = 0, end = mp->line_start; /* the empty line is not parsed */
    mp->nheaders = 0;
    while (pos < end) {
        const char *line = mp->raw + pos;
        const char *nl = memchr(line, '\n', end - pos);
        size_t len = (size_t)(nl - line); /* every line in raw ends with '\n' */
        pos += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (memchr(line, '\0', len) || memchr(line, '\r', len))
            return mp_fail(mp, err, "part %zu: control byte in a header line", part);
        if (is_ws((unsigned char)line[0])) {
            if (mp->nheaders == 0)
                return mp_fail(mp, err, "part %zu: header block starts with a continuation line", part);
            size_t s = 0;
            while (s < len && is_ws((unsigned char)line[s]))
                s++;
            while (len > s && is_ws((unsigned char)line[len - 1]))
                len--;
            if (len > s) { /* the previous value ends at out-1 (its NUL) */
                if (mp->headers[mp->nheaders - 1].value[0] == '\0')
                    out--; /* an empty value takes the folded text as it is */
                else
                    mp->text[out - 1] = ' ';
                memcpy(mp->text + out, line + s, len - s);
                out += len - s;
                mp->text[out++] = '\0';
            }
            continue;
        }
        const char *colon = memchr(line, ':', len);
        if (colon == NULL)
            return mp_fail(mp, err, "part %zu: header line without ':' (\"%.*s\")", part, (int)(len < 40 ? len : 40),
                           line);
        size_t nlen = (size_t)(colon - line);
        while (nlen > 0 && is_ws((unsigned char)line[nlen - 1]))
            nlen--;
        if (nlen == 0)
            return mp_fail(mp, err, "part %zu: header line with an empty name", part);
        if (mp->nheaders == mp->lim.max_headers)
            return mp_fail(mp, err, "part %zu: more than %zu header lines", part, mp->lim.max_headers);
        size_t vs = (size_t)(colon - line) + 1, ve = len;
        while (vs < ve && is_ws((unsigned char)line[vs]))
            vs++;
        while (ve > vs && is_ws((unsigned char)line[ve - 1]))
            ve--;
        header_t *h = &mp->headers[mp->nheaders++];
        memcpy(mp->text + out, line, nlen);
        h->name = mp->text + out;
        out += nlen;
        mp->text[out++] = '\0';
        memcpy(mp->text + out, line + vs, ve - vs);
        h->value = mp->text + out;
        out += ve - vs;
        mp->text[out++] = '\0';
    }
    return true;
}

/* Header block bytes; on its empty line, parse and begin the part's content. */
static bool feed_headers(mdb_multipart_t *mp, const uint8_t *p, size_t n, size_t *used, mdb_error_t *err)
{
    size_t i = 0;
    while (i < n) {
        const uint8_t *nl = memchr(p + i, '\n', n - i);
        size_t seg = nl ? (size_t)(nl - (p + i)) + 1 : n - i;
        if (seg > mp->lim.max_header_bytes - mp->raw_len)
            return mp_fail(mp, err, "part %zu: headers longer than %zu bytes", mp->parts_begun - 1,
                           mp->lim.max_header_bytes);
        memcpy(mp->raw + mp->raw_len, p + i, seg);
        mp->raw_len += seg;
        i += seg;
        if (nl == NULL)
            break;
        size_t line_len = mp->raw_len - mp->line_start;
        bool empty = line_len == 1 || (line_len == 2 && mp->raw[mp->line_start] == '\r');
        if (!empty) {
            mp->line_start = mp->raw_len;
            continue;
        }
        if (!parse_headers(mp, err))
            return false;
        mp->state = ST_DATA;
        mp->matched = 0;
        mp->part_bytes = 0;
        if (mp->cb.part_begin) {
            mdb_multipart_part_t part = {mp};
            mdb_error_t cb_err = {0};
            if (!mp->cb.part_begin(mp->ctx, &part, &cb_err))
                return refused(mp, &cb_err, err);
        }
        break;
    }
    *used = i;
    return true;
}

/* A new part's header block starts. */
static bool begin_headers(mdb_multipart_t *mp, mdb_error_t *err)
{
    if (mp->parts_begun >= mp->lim.max_parts)
        return mp_fail(mp, err, "more than %zu parts", mp->lim.max_parts);
    mp->parts_begun++;
    mp->state = ST_HEADERS;
    mp->raw_len = 0;
    mp->line_start = 0;
    mp->nheaders = 0;
    return true;
}

/* One byte after a delimiter: "--" closes, padding and a line end open a part. */
static bool after_delimiter(mdb_multipart_t *mp, uint8_t c, mdb_error_t *err)
{
    switch (mp->state) {
    case ST_AD_START:
        if (c == '-') {
            mp->state = ST_AD_DASH;
            return true;
        }
        /* fall through */
    case ST_AD_LWSP:
        if (is_ws(c)) {
            mp->state = ST_AD_LWSP;
            return true;
        }
        if (c == '\r') {
            mp->state = ST_AD_CR;
            return true;
        }
        if (c == '\n')
            return begin_headers(mp, err);
        break;
    case ST_AD_DASH:
        if (c == '-') {
            mp->state = ST_EPILOGUE;
            return true;
        }
        break;
    case ST_AD_CR:
        if (c == '\n')
            return begin_headers(mp, err);
        break;
    }
    return mp_fail(mp, err, "byte 0x%02x after the boundary delimiter (part %zu)", c, mp->parts_begun);
}

bool mdb_multipart_feed(mdb_multipart_t *mp, const void *data, size_t len, mdb_error_t *err)
{
    const uint8_t *p = data;
    size_t i = 0;
    while (i < len) {
        size_t used = 0;
        bool found = false;
        switch (mp->state) {
        case ST_FAILED:
            if (err)
                *err = mp->failure;
            return false;
        case ST_EPILOGUE: return true;
        case ST_PREAMBLE:
        case ST_DATA:
            if (!scan(mp, p + i, len - i, &used, &found, err))
                return false;
            i += used;
            if (!found)
                break;
            if (mp->state == ST_DATA) {
                mp->parts_done++;
                if (mp->cb.part_end) {
                    mdb_error_t cb_err = {0};
                    if (!mp->cb.part_end(mp->ctx, &cb_err))
                        return refused(mp, &cb_err, err);
                }
            }
            mp->state = ST_AD_START;
            break;
        case ST_HEADERS:
            if (!feed_headers(mp, p + i, len - i, &used, err))
                return false;
            i += used;
            break;
        default:
            if (!after_delimiter(mp, p[i++], err))
                return false;
            break;
        }
    }
    if (mp->state == ST_FAILED) {
        if (err)
            *err = mp->failure;
        return false;
    }
    return true;
}

bool mdb_multipart_finish(mdb_multipart_t *mp, mdb_error_t *err)
{
    switch (mp->state) {
    case ST_EPILOGUE: return true;
    case ST_FAILED:
        if (err)
            *err = mp->failure;
        return false;
    case ST_PREAMBLE: return mp_fail(mp, err, "truncated: the body ended before its first boundary");
    case ST_HEADERS:
        return mp_fail(mp, err, "truncated: the body ended inside the headers of part %zu", mp->parts_begun - 1);
    case ST_DATA:
        return mp_fail(mp, err, "truncated: the body ended inside part %zu after %llu bytes", mp->parts_begun - 1,
                       (unsigned long long)mp->part_bytes);
    default:
        return mp_fail(mp, err, "truncated: the body ended after a boundary delimiter without its close delimiter");
    }
}
