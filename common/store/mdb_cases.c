/* mdb_cases: CSV case manifests and the validation rules for researcher and
 * collection fields. The CSV reader is a small RFC 4180 state machine that
 * remembers the physical line each record starts on, so every problem can be
 * reported as "line N: ...". Validation collects all problems instead of
 * stopping at the first: a user fixing a manifest wants the whole list. */
#include "mdb_cases.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_strmap.h"

/* ---- small helpers ---- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            need = 1;
            min = 0x80;
            c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            need = 2;
            min = 0x800;
            c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            need = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return false;
        }
        if (i + need >= n)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

/* Trim ASCII spaces and tabs in place; returns s. */
static char *trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    size_t k = 0;
    while (s[k] == ' ' || s[k] == '\t')
        k++;
    if (k)
        memmove(s, s + k, n - k + 1);
    return s;
}

static void problem(mdb_cases_problems_t *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void problem(mdb_cases_problems_t *p, int line, const char *fmt, ...)
{
    p->total++;
    if (p->messages.n >= MDB_CASES_MAX_PROBLEMS)
        return;
    char body[400];
    char full[460];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(full, sizeof full, "line %d: %s", line, body);
    else
        snprintf(full, sizeof full, "%s", body);
    mdb_strv_push(&p->messages, full);
}

/* ---- validation rules ---- */

bool mdb_cases_id_valid(const char *id)
{
    if (!id)
        return false;
    size_t n = strlen(id);
    if (n == 0 || n > 128 || id[0] == '.' || id[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == ':' || c == '@' || c == '+' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool mdb_cases_value_valid(const char *value)
{
    if (!value)
        return false;
    size_t n = strlen(value);
    if (n == 0 || n > 64)
        return false;
    bool only_spaces = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7F)
            return false;
        if (c != ' ')
            only_spaces = false;
    }
    return !only_spaces && utf8_valid((const unsigned char *)value, n);
}

bool mdb_cases_text_valid(const char *text, size_t max, bool multiline)
{
    if (!text)
        return false;
    size_t n = strlen(text);
    if (n == 0 || n > max)
        return false;
    bool blank = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        bool ws = c == ' ' || (multiline && (c == '\t' || c == '\n' || c == '\r'));
        if ((c < 0x20 || c == 0x7F) && !ws)
            return false;
        if (!ws)
            blank = false;
    }
    return !blank && utf8_valid((const unsigned char *)text, n);
}

static bool domain_label_ok(const char *s, size_t n)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

bool mdb_cases_email_valid(const char *email)
{
    if (!email)
        return false;
    size_t n = strlen(email);
    if (n < 3 || n > 254)
        return false;
    const char *at = strchr(email, '@');
    if (!at || strchr(at + 1, '@'))
        return false;
    size_t local_len = (size_t)(at - email);
    if (local_len == 0 || local_len > 64)
        return false;
    for (size_t i = 0; i < local_len; i++) {
        unsigned char c = (unsigned char)email[i];
        if (c <= 0x20 || c >= 0x7F || c == '"' || c == '(' || c == ')' || c == ',' || c == ':' || c == ';' ||
            c == '<' || c == '>' || c == '[' || c == ']' || c == '\\')
            return false;
    }
    if (email[0] == '.' || email[local_len - 1] == '.' || strstr(email, ".."))
        return false;
    const char *dom = at + 1;
    if (!strchr(dom, '.'))
        return false;
    const char *p = dom;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!domain_label_ok(p, len))
            return false;
        if (!dot)
            break;
        p = dot + 1;
    }
    return true;
}

/* ---- case lists ---- */

void mdb_case_clear(mdb_case_t *c)
{
    if (!c)
        return;
    free(c->case_id);
    free(c->patient_id);
    mdb_strv_clear(&c->accession_numbers);
    memset(c, 0, sizeof *c);
}

void mdb_cases_clear(mdb_cases_t *cases)
{
    if (!cases)
        return;
    for (size_t i = 0; i < cases->n; i++)
        mdb_case_clear(&cases->v[i]);
    free(cases->v);
    memset(cases, 0, sizeof *cases);
}

void mdb_cases_problems_clear(mdb_cases_problems_t *p)
{
    if (!p)
        return;
    mdb_strv_clear(&p->messages);
    p->total = 0;
}

bool mdb_cases_push(mdb_cases_t *cases, const mdb_case_t *c)
{
    if (cases->n == cases->cap) {
        size_t ncap = cases->cap ? cases->cap * 2 : 16;
        mdb_case_t *nv = realloc(cases->v, ncap * sizeof *nv);
        if (!nv)
            return false;
        cases->v = nv;
        cases->cap = ncap;
    }
    mdb_case_t copy = {0};
    copy.case_id = strdup(c->case_id ? c->case_id : "");
    copy.patient_id = strdup(c->patient_id ? c->patient_id : "");
    copy.line = c->line;
    bool ok = copy.case_id && copy.patient_id;
    for (size_t i = 0; ok && i < c->accession_numbers.n; i++)
        ok = mdb_strv_push(&copy.accession_numbers, c->accession_numbers.v[i]);
    if (!ok) {
        mdb_case_clear(&copy);
        return false;
    }
    cases->v[cases->n++] = copy;
    return true;
}

long mdb_cases_find(const mdb_cases_t *cases, const char *case_id)
{
    for (size_t i = 0; cases && case_id && i < cases->n; i++)
        if (!strcmp(cases->v[i].case_id, case_id))
            return (long)i;
    return -1;
}

static bool strv_contains(const mdb_strv_t *v, const char *s)
{
    for (size_t i = 0; i < v->n; i++)
        if (!strcmp(v->v[i], s))
            return true;
    return false;
}

bool mdb_case_equal(const mdb_case_t *a, const mdb_case_t *b)
{
    if (strcmp(a->case_id ? a->case_id : "", b->case_id ? b->case_id : "") != 0)
        return false;
    if (strcmp(a->patient_id ? a->patient_id : "", b->patient_id ? b->patient_id : "") != 0)
        return false;
    if (a->accession_numbers.n != b->accession_numbers.n)
        return false;
    for (size_t i = 0; i < a->accession_numbers.n; i++)
        if (!strv_contains(&b->accession_numbers, a->accession_numbers.v[i]))
            return false;
    return true;
}

/* ---- CSV reader ---- */

typedef struct {
    const char *buf;
    size_t len;
    size_t pos;
    int line; /* physical line of pos (1-based) */
} csv_reader_t;

typedef struct {
    char **fields;
    size_t n, cap;
    int line;       /* line the record starts on */
    bool bad_quote; /* a quote appeared inside an unquoted field */
    bool unterminated;
    bool has_nul;
} csv_record_t;

static void record_reset(csv_record_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->fields[i]);
    r->n = 0;
    r->bad_quote = r->unterminated = r->has_nul = false;
}

static void record_free(csv_record_t *r)
{
    record_reset(r);
    free(r->fields);
    r->fields = NULL;
    r->cap = 0;
}

static bool record_add(csv_record_t *r, const char *s, size_t n)
{
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 8;
        char **nf = realloc(r->fields, ncap * sizeof *nf);
        if (!nf)
            return false;
        r->fields = nf;
        r->cap = ncap;
    }
    char *f = malloc(n + 1);
    if (!f)
        return false;
    memcpy(f, s, n);
    f[n] = '\0';
    r->fields[r->n++] = f;
    return true;
}

/* A growable byte buffer for the field being read. */
typedef struct {
    char *b;
    size_t n, cap;
} buf_t;

static bool buf_put(buf_t *b, char c)
{
    if (b->n + 1 >= b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 64;
        char *nb = realloc(b->b, ncap);
        if (!nb)
            return false;
        b->b = nb;
        b->cap = ncap;
    }
    b->b[b->n++] = c;
    return true;
}

/* Read the next record. Returns 1 when a record was read, 0 at end of input,
 * -1 on OOM. Blank lines yield a record with a single empty field. */
static int csv_next(csv_reader_t *rd, csv_record_t *rec, buf_t *field)
{
    record_reset(rec);
    if (rd->pos >= rd->len)
        return 0;
    rec->line = rd->line;
    field->n = 0;
    bool quoted = false; /* inside a quoted section */
    bool was_quoted = false;
    for (;;) {
        if (rd->pos >= rd->len) {
            if (quoted)
                rec->unterminated = true;
            return record_add(rec, field->b ? field->b : "", field->n) ? 1 : -1;
        }
        char c = rd->buf[rd->pos++];
        if (c == '\0')
            rec->has_nul = true;
        if (quoted) {
            if (c == '"') {
                if (rd->pos < rd->len && rd->buf[rd->pos] == '"') {
                    rd->pos++;
                    if (!buf_put(field, '"'))
                        return -1;
                } else {
                    quoted = false;
                }
                continue;
            }
            if (c == '\n')
                rd->line++;
            if (!buf_put(field, c))
                return -1;
            continue;
        }
        if (c == '"') {
            bool only_space = true;
            for (size_t i = 0; i < field->n; i++)
                if (field->b[i] != ' ' && field->b[i] != '\t')
                    only_space = false;
            if (only_space && !was_quoted) {
                field->n = 0;
                quoted = was_quoted = true;
            } else {
                rec->bad_quote = true;
                if (!buf_put(field, c))
                    return -1;
            }
            continue;
        }
        if (c == ',') {
            if (!record_add(rec, field->b ? field->b : "", field->n))
                return -1;
            field->n = 0;
            was_quoted = false;
            continue;
        }
        if (c == '\r' && rd->pos < rd->len && rd->buf[rd->pos] == '\n')
            continue;
        if (c == '\n' || c == '\r') {
            rd->line++;
            return record_add(rec, field->b ? field->b : "", field->n) ? 1 : -1;
        }
        if (was_quoted && c != ' ' && c != '\t')
            rec->bad_quote = true;
        if (!buf_put(field, c))
            return -1;
    }
}

static bool record_blank(const csv_record_t *r)
{
    if (r->n != 1)
        return false;
    for (const char *p = r->fields[0]; *p; p++)
        if (*p != ' ' && *p != '\t')
            return false;
    return true;
}

enum { COL_CASE = 0, COL_PATIENT, COL_ACCESSIONS, NCOLS };
static const char *const col_names[NCOLS] = {"case_id", "patient_id", "accession_numbers"};

/* Map header fields to columns; records problems; returns false if unusable. */
static bool parse_header(csv_record_t *rec, int cols[NCOLS], mdb_cases_problems_t *p)
{
    bool ok = true;
    for (int k = 0; k < NCOLS; k++)
        cols[k] = -1;
    for (size_t i = 0; i < rec->n; i++) {
        char *name = trim(rec->fields[i]);
        int which = -1;
        for (int k = 0; k < NCOLS; k++)
            if (!strcasecmp(name, col_names[k]))
                which = k;
        if (which < 0) {
            problem(p, rec->line, "unknown column '%.60s' (expected case_id, patient_id, accession_numbers)", name);
            ok = false;
        } else if (cols[which] >= 0) {
            problem(p, rec->line, "column '%s' appears twice", col_names[which]);
            ok = false;
        } else {
            cols[which] = (int)i;
        }
    }
    if (cols[COL_CASE] < 0 || cols[COL_PATIENT] < 0) {
        problem(p, rec->line, "header must name the columns case_id and patient_id (and optionally accession_numbers)");
        ok = false;
    }
    return ok;
}

typedef struct {
    mdb_strmap_t *case_lines;      /* case_id -> line */
    mdb_strmap_t *accession_owner; /* accession -> index of owning case in out */
} dup_state_t;

/* Validate one data record and append it to out; problems recorded. */
static bool parse_row(csv_record_t *rec, const int cols[NCOLS], size_t ncols, mdb_cases_t *out, dup_state_t *d,
                      mdb_cases_problems_t *p)
{
    if (rec->n != ncols) {
        problem(p, rec->line, "expected %zu fields, got %zu", ncols, rec->n);
        return true;
    }
    char *case_id = trim(rec->fields[cols[COL_CASE]]);
    char *patient = trim(rec->fields[cols[COL_PATIENT]]);
    char no_accessions[1] = "";
    char *accs = cols[COL_ACCESSIONS] >= 0 ? trim(rec->fields[cols[COL_ACCESSIONS]]) : no_accessions;
    bool bad = false;

    if (!*case_id) {
        problem(p, rec->line, "empty case_id");
        bad = true;
    } else if (!mdb_cases_id_valid(case_id)) {
        problem(p, rec->line, "case_id '%.60s' is not a valid identifier (1-128 of A-Z a-z 0-9 . _ : @ + -)", case_id);
        bad = true;
    }
    if (*patient && !mdb_cases_value_valid(patient)) {
        problem(p, rec->line, "patient_id '%.60s' is not valid (1-64 printable characters)", patient);
        bad = true;
    }

    mdb_case_t c = {.case_id = case_id, .patient_id = patient, .line = rec->line};
    char *save = NULL;
    for (char *tok = strtok_r(accs, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        if (!mdb_cases_value_valid(tok)) {
            problem(p, rec->line, "accession number '%.60s' is not valid (1-64 printable characters)", tok);
            bad = true;
            continue;
        }
        if (strv_contains(&c.accession_numbers, tok))
            continue;
        if (!mdb_strv_push(&c.accession_numbers, tok)) {
            mdb_strv_clear(&c.accession_numbers);
            return false;
        }
    }
    if (!*patient && c.accession_numbers.n == 0) {
        problem(p, rec->line, "case '%.60s' has neither a patient_id nor an accession number", case_id);
        bad = true;
    }
    if (*case_id) {
        bool created = false;
        mdb_strmap_entry_t *e = mdb_strmap_put(d->case_lines, case_id, &created);
        if (!e) {
            mdb_strv_clear(&c.accession_numbers);
            return false;
        }
        if (!created) {
            problem(p, rec->line, "duplicate case_id '%.60s' (first on line %lld)", case_id, (long long)e->value);
            bad = true;
        } else {
            e->value = rec->line;
        }
    }
    for (size_t i = 0; i < c.accession_numbers.n; i++) {
        bool created = false;
        mdb_strmap_entry_t *e = mdb_strmap_put(d->accession_owner, c.accession_numbers.v[i], &created);
        if (!e) {
            mdb_strv_clear(&c.accession_numbers);
            return false;
        }
        if (!created) {
            problem(p, rec->line, "accession number '%.60s' already belongs to another case (line %lld)",
                    c.accession_numbers.v[i], (long long)e->value);
            bad = true;
        } else {
            e->value = rec->line;
        }
    }
    bool ok = true;
    if (!bad && p->total == 0)
        ok = mdb_cases_push(out, &c);
    mdb_strv_clear(&c.accession_numbers);
    return ok;
}

bool mdb_cases_parse_csv(const char *buf, size_t len, mdb_cases_t *out, mdb_cases_problems_t *problems,
                         mdb_error_t *err)
{
    csv_reader_t rd = {.buf = buf, .len = len, .pos = 0, .line = 1};
    csv_record_t rec = {0};
    buf_t field = {0};
    dup_state_t dups = {mdb_strmap_new(), mdb_strmap_new()};
    int cols[NCOLS];
    bool have_header = false, header_ok = false, oom = false;
    size_t ncols = 0, rows = 0;
    bool ok = false;

    memset(out, 0, sizeof *out);
    if (!dups.case_lines || !dups.accession_owner) {
        oom = true;
        goto done;
    }
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3))
        rd.pos = 3;
    for (;;) {
        int r = csv_next(&rd, &rec, &field);
        if (r < 0) {
            oom = true;
            goto done;
        }
        if (r == 0)
            break;
        if (record_blank(&rec) && !rec.unterminated)
            continue;
        bool utf8_ok = !rec.has_nul;
        for (size_t i = 0; utf8_ok && i < rec.n; i++)
            utf8_ok = utf8_valid((const unsigned char *)rec.fields[i], strlen(rec.fields[i]));
        if (!utf8_ok) {
            problem(problems, rec.line, "not valid UTF-8 text");
            if (!have_header)
                have_header = true;
            continue;
        }
        if (rec.unterminated) {
            problem(problems, rec.line, "unterminated quoted field (missing closing '\"')");
            break;
        }
        if (rec.bad_quote) {
            problem(problems, rec.line, "stray '\"' in a field (quote the whole field and double inner quotes)");
            if (!have_header)
                have_header = true;
            continue;
        }
        if (!have_header) {
            have_header = true;
            header_ok = parse_header(&rec, cols, problems);
            ncols = rec.n;
            continue;
        }
        if (!header_ok)
            continue;
        rows++;
        if (!parse_row(&rec, cols, ncols, out, &dups, problems)) {
            oom = true;
            goto done;
        }
    }
    if (!have_header)
        problem(problems, 0, "the manifest is empty (expected a header: case_id,patient_id,accession_numbers)");
    else if (header_ok && rows == 0 && problems->total == 0)
        problem(problems, 0, "the manifest has a header but no cases");
    ok = problems->total == 0;
done:
    if (oom)
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory while reading the manifest");
    else if (!ok)
        mdb_error_set(err, MDB_ERR_MSG, 0, "%zu problem%s in the manifest; nothing was loaded", problems->total,
                      problems->total == 1 ? "" : "s");
    if (!ok)
        mdb_cases_clear(out);
    record_free(&rec);
    free(field.b);
    mdb_strmap_destroy(dups.case_lines);
    mdb_strmap_destroy(dups.accession_owner);
    return ok && !oom;
}

bool mdb_cases_load_csv(const char *path, mdb_cases_t *out, mdb_cases_problems_t *problems, mdb_error_t *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        mdb_error_set(err, MDB_ERR_IO, errno, "cannot open manifest '%s': %s", path, strerror(errno));
        return false;
    }
    char *data = NULL;
    size_t n = 0, cap = 0;
    bool ok = false;
    for (;;) {
        if (n + 65536 > cap) {
            size_t ncap = cap ? cap * 2 : 131072;
            char *nd = realloc(data, ncap);
            if (!nd) {
                mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory reading '%s'", path);
                goto done;
            }
            data = nd;
            cap = ncap;
        }
        size_t r = fread(data + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        mdb_error_set(err, MDB_ERR_IO, errno, "cannot read manifest '%s': %s", path, strerror(errno));
        goto done;
    }
    ok = mdb_cases_parse_csv(data ? data : "", n, out, problems, err);
    if (!ok)
        mdb_error_prefix(err, "%s", path);
done:
    free(data);
    fclose(f);
    return ok;
}
