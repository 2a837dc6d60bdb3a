/* mdb_charset: DICOM Specific Character Set -> UTF-8.
 *
 * Every string metadb stores is valid UTF-8. Text VRs (SH, LO, ST, LT, UC,
 * UT, PN) are decoded per (0008,0005): single-byte ISO_IR 100/101/109/110/
 * 144/127/126/138/148/166, ISO_IR 13 (JIS X 0201), ISO_IR 192 (UTF-8),
 * GB18030, GBK, and the ISO 2022 code-extension forms (ISO 2022 IR 6/13/87/
 * 159/149/58/100/... with escape sequences, PN component groups and text
 * delimiters resetting to the first character set). Other VRs, and a missing
 * or empty (0008,0005), use the default repertoire read as ISO 8859-1 (as
 * pydicom does, so stray high bytes are kept as Latin-1 rather than lost).
 * Bytes that cannot be decoded become U+FFFD; nothing is passed through raw.
 * Common misspellings ("ISO IR 100", "ISO-IR 192") are accepted, and an
 * unknown term is tried as an iconv name (CP1251, GBK, ...): that is what
 * the per-archive override (archive.charset_overrides) uses.
 *
 * Latin-1, ASCII and UTF-8 are decoded in C; other sets go through iconv.
 * A decoder holds its iconv handles and is NOT thread-safe: use one per
 * thread (mdb_extract keeps one in each extraction context). */
#ifndef MDB_CHARSET_H
#define MDB_CHARSET_H

#include <stdbool.h>
#include <stddef.h>

#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A growable byte buffer, reused across calls (no allocation per value). */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} mdb_buf_t;

bool mdb_buf_reserve(mdb_buf_t *b, size_t extra);
bool mdb_buf_append(mdb_buf_t *b, const void *p, size_t n);
void mdb_buf_free(mdb_buf_t *b);

/* How a value's bytes are delimited for code-extension resets. */
typedef enum {
    MDB_CS_DEFAULT = 0, /* non-text VRs: default repertoire only */
    MDB_CS_TEXT,        /* SH LO ST LT UC UT: CR LF TAB FF reset */
    MDB_CS_PN           /* one PN component group: '^' resets */
} mdb_cs_kind_t;

typedef struct mdb_charset mdb_charset_t;

mdb_charset_t *mdb_charset_new(void);
void mdb_charset_destroy(mdb_charset_t *cs); /* accepts NULL */

/* Select the character set from the raw (0008,0005) value ("ISO_IR 100",
 * "\ISO 2022 IR 87", "ISO 2022 IR 6\ISO 2022 IR 149"; NULL or "" = default).
 * Unknown terms fall back to the default and are reported through
 * *unknown_term (may be NULL; points into an internal copy, valid until the
 * next select). Always succeeds. */
void mdb_charset_select(mdb_charset_t *cs, const char *scs, size_t len, const char **unknown_term);

/* The selection as it was given (after trimming), for messages. */
const char *mdb_charset_current(const mdb_charset_t *cs);

/* Append the UTF-8 form of in[0..len) to out. kind selects the delimiter
 * rules. *replaced is set true (never reset) when a byte had to be replaced
 * by U+FFFD. Returns false only on OOM. NUL bytes become U+FFFD too. */
bool mdb_charset_decode(mdb_charset_t *cs, const char *in, size_t len, mdb_cs_kind_t kind, mdb_buf_t *out,
                        bool *replaced);

/* Convenience: decode to a malloc'd NUL-terminated string (caller frees). */
char *mdb_charset_decode_dup(mdb_charset_t *cs, const char *in, size_t len, mdb_cs_kind_t kind, bool *replaced);

/* Is s[0..len) valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF)? */
bool mdb_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
