/* mdb_cases: the pure rules behind researchers and collections, kept free of
 * MongoDB so they can be unit-tested: the CSV case manifest
 * (case_id,patient_id,accession_numbers with ';'-separated accessions), e-mail
 * and identifier validation. A manifest is all-or-nothing: the parser reports
 * every bad row with its line number and returns no cases if any row is bad,
 * so a caller never writes half a manifest. */
#ifndef MDB_CASES_H
#define MDB_CASES_H

#include <stdbool.h>
#include <stddef.h>

#include "mdb_error.h"
#include "mdb_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One case of a collection. */
typedef struct {
    char *case_id;
    char *patient_id;             /* may be "" when the row names accessions only */
    mdb_strv_t accession_numbers; /* de-duplicated, in manifest order */
    int line;                     /* manifest line the case came from (0 if not from a file) */
} mdb_case_t;

typedef struct {
    mdb_case_t *v;
    size_t n;
    size_t cap;
} mdb_cases_t;

/* Problems found in a manifest, one message per bad row ("line 7: duplicate
 * case_id 'C3' (first on line 4)"). At most MDB_CASES_MAX_PROBLEMS are kept;
 * `total` counts all of them. */
#define MDB_CASES_MAX_PROBLEMS 200
typedef struct {
    mdb_strv_t messages;
    size_t total;
} mdb_cases_problems_t;

/* Parse a CSV manifest held in buf (len bytes; need not be NUL-terminated).
 * Accepts an optional UTF-8 BOM, CRLF or LF line ends, RFC 4180 quoting
 * ("a,b", "" for a quote), blank lines, and the columns case_id, patient_id
 * and accession_numbers (the last optional) in any order, named in a header
 * row. Every problem is appended to `problems` with its line number; on any
 * problem the function returns false and `out` stays empty. On success `out`
 * holds the cases (caller clears with mdb_cases_clear) and problems is empty.
 * err gets a one-line summary on failure. */
bool mdb_cases_parse_csv(const char *buf, size_t len, mdb_cases_t *out, mdb_cases_problems_t *problems,
                         mdb_error_t *err);

/* Read path fully and parse it as above. A file that cannot be read is a
 * failure with MDB_ERR_IO and no problems. */
bool mdb_cases_load_csv(const char *path, mdb_cases_t *out, mdb_cases_problems_t *problems, mdb_error_t *err);

/* Append a copy of c to cases. False on OOM (cases unchanged). */
bool mdb_cases_push(mdb_cases_t *cases, const mdb_case_t *c);

/* Index of the case with case_id in cases, or -1. */
long mdb_cases_find(const mdb_cases_t *cases, const char *case_id);

/* True if both cases name the same patient and the same set of accessions. */
bool mdb_case_equal(const mdb_case_t *a, const mdb_case_t *b);

void mdb_case_clear(mdb_case_t *c);
void mdb_cases_clear(mdb_cases_t *cases);
void mdb_cases_problems_clear(mdb_cases_problems_t *p);

/* A practical e-mail check: one '@', a local part of 1..64 printable ASCII
 * characters without spaces or quotes, a domain of dot-separated labels
 * (letters, digits, '-', not starting or ending with '-') with at least one
 * dot, total length <= 254. Non-ASCII addresses are refused. */
bool mdb_cases_email_valid(const char *email);

/* Identifiers (researcher ids, collection names, case ids, job ids): 1..128
 * characters of [A-Za-z0-9._:@+-], not starting with '.' or '-'. Keeping them
 * this tame makes them safe in paths, keys and URLs. */
bool mdb_cases_id_valid(const char *id);

/* DICOM-ish values used as selectors (accession numbers, patient ids, UIDs):
 * 1..64 bytes, printable (no control characters), not only spaces, valid
 * UTF-8. */
bool mdb_cases_value_valid(const char *value);

/* Free text (names, descriptions): 1..max bytes of valid UTF-8 without
 * control characters (tabs and newlines allowed when multiline), not only
 * whitespace. */
bool mdb_cases_text_valid(const char *text, size_t max, bool multiline);

#ifdef __cplusplus
}
#endif
#endif
