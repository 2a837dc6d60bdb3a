/* mdb_nl.c: the offline natural-language translator (vocabulary, tokenizer,
 * grammar, lowering to a MongoDB filter with joins) and the result object.
 *
 * How a sentence is read: it is cut into tokens (words, numbers, ISO dates,
 * UIDs, identifiers such as LIDC-IDRI-0001, quoted strings, comparison
 * symbols). A left-to-right scan tries the rules below at each unread token,
 * most specific first; a rule that matches reads its tokens and adds one
 * condition. Words no rule wants are either known filler ("show me all the")
 * or listed in the result as ignored, so the user sees what was not
 * understood. Negation words ("not", "no", "without", "excluding") apply to
 * the next condition, and to the further values of the same field joined by
 * "and"/"or"/"," ("excluding Siemens or GE"). Values of one field given
 * together mean any of them ("CT and MR studies" = CT or MR).
 *
 * Never silently wrong (issue 15): German and French words are rewritten
 * into English first (mdb_nl_lexicon_de_fr.c); a word no rule reads is
 * replaced by its spelling correction when there is exactly one
 * (mdb_nl_spell.c) and the sentence read again; stored values are also
 * matched by prefix; every rewrite is reported in the result's corrections.
 * What still cannot be read makes the answer partial (confidence), an "or"
 * between two readings of one field stays an $or, and a sentence of filler
 * words only is refused.
 *
 * Each condition knows, per level, which document field carries it (from the
 * vocabulary). Lowering for the chosen level keeps the conditions whose field
 * exists there in the level's filter and turns the others into joins on the
 * nearest level that has the field (see mdb_nl.h). */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_nl_lexicon.h"
#include "mdb_nl_private.h"
#include "mdb_nl_spell.h"

#define NL_MAX_VALUES_PER_FIELD 20000
#define NL_MAX_VALUE_LEN 128
#define NL_LEVELS MDB_QUERY_LEVEL_COUNT

/* ======================================================================
 * vocabulary
 * ====================================================================== */

typedef struct {
    char *path;
    mdb_qfield_type_t type;
} nl_field_t;

typedef struct {
    char *path;
    char **vals;
    size_t n, cap;
} nl_values_t;

struct mdb_nl_vocab {
    nl_field_t *fields[NL_LEVELS];
    size_t nfields[NL_LEVELS], capfields[NL_LEVELS];
    nl_values_t *values;
    size_t nvalues, capvalues;
};

mdb_nl_vocab_t *mdb_nl_vocab_new(void)
{
    return calloc(1, sizeof(mdb_nl_vocab_t));
}

void mdb_nl_vocab_destroy(mdb_nl_vocab_t *v)
{
    if (!v)
        return;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t i = 0; i < v->nfields[l]; i++)
            free(v->fields[l][i].path);
        free(v->fields[l]);
    }
    for (size_t i = 0; i < v->nvalues; i++) {
        for (size_t j = 0; j < v->values[i].n; j++)
            free(v->values[i].vals[j]);
        free(v->values[i].vals);
        free(v->values[i].path);
    }
    free(v->values);
    free(v);
}

bool mdb_nl_vocab_has_field(const mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path,
                            mdb_qfield_type_t *type)
{
    if (!v || (int)level < 0 || level >= NL_LEVELS || !path)
        return false;
    for (size_t i = 0; i < v->nfields[level]; i++)
        if (!strcmp(v->fields[level][i].path, path)) {
            if (type)
                *type = v->fields[level][i].type;
            return true;
        }
    return false;
}

bool mdb_nl_vocab_add_field(mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path,
                            mdb_qfield_type_t type, mdb_error_t *err)
{
    if (!v || (int)level < 0 || level >= NL_LEVELS || !path || !*path) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "vocabulary field needs a level and a non-empty path");
        return false;
    }
    if (mdb_nl_vocab_has_field(v, level, path, NULL))
        return true;
    if (v->nfields[level] == v->capfields[level]) {
        size_t cap = v->capfields[level] ? v->capfields[level] * 2 : 32;
        nl_field_t *nf = realloc(v->fields[level], cap * sizeof *nf);
        if (!nf)
            goto oom;
        v->fields[level] = nf;
        v->capfields[level] = cap;
    }
    char *dup = strdup(path);
    if (!dup)
        goto oom;
    v->fields[level][v->nfields[level]].path = dup;
    v->fields[level][v->nfields[level]].type = type;
    v->nfields[level]++;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    return false;
}

static nl_values_t *vocab_values_entry(const mdb_nl_vocab_t *v, const char *path)
{
    for (size_t i = 0; i < v->nvalues; i++)
        if (!strcmp(v->values[i].path, path))
            return &v->values[i];
    return NULL;
}

const char *const *mdb_nl_vocab_values(const mdb_nl_vocab_t *v, const char *path, size_t *n)
{
    nl_values_t *e = v ? vocab_values_entry(v, path) : NULL;
    *n = e ? e->n : 0;
    return e ? (const char *const *)e->vals : NULL;
}

bool mdb_nl_vocab_add_value(mdb_nl_vocab_t *v, const char *path, const char *value, mdb_error_t *err)
{
    if (!v || !path || !*path) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "vocabulary value needs a field path");
        return false;
    }
    if (!value || !*value || strlen(value) > NL_MAX_VALUE_LEN)
        return true;
    nl_values_t *e = vocab_values_entry(v, path);
    if (!e) {
        if (v->nvalues == v->capvalues) {
            size_t cap = v->capvalues ? v->capvalues * 2 : 16;
            nl_values_t *nv = realloc(v->values, cap * sizeof *nv);
            if (!nv)
                goto oom;
            v->values = nv;
            v->capvalues = cap;
        }
        e = &v->values[v->nvalues];
        memset(e, 0, sizeof *e);
        e->path = strdup(path);
        if (!e->path)
            goto oom;
        v->nvalues++;
    }
    if (e->n >= NL_MAX_VALUES_PER_FIELD)
        return true;
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->vals[i], value))
            return true;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        char **nv = realloc(e->vals, cap * sizeof *nv);
        if (!nv)
            goto oom;
        e->vals = nv;
        e->cap = cap;
    }
    e->vals[e->n] = strdup(value);
    if (!e->vals[e->n])
        goto oom;
    e->n++;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
    return false;
}

bool mdb_nl_vocab_add_promoted(mdb_nl_vocab_t *v, mdb_error_t *err)
{
    for (int l = 0; l < NL_LEVELS; l++) {
        size_t n = 0;
        const mdb_qfield_t *f = mdb_query_fields((mdb_query_level_t)l, &n);
        for (size_t i = 0; f && i < n; i++)
            if (!mdb_nl_vocab_add_field(v, (mdb_query_level_t)l, f[i].name, f[i].type, err))
                return false;
    }
    /* Link and summary fields the linker writes (DESIGN.md). */
    static const struct {
        int level;
        const char *path;
        mdb_qfield_type_t type;
    } extra[] = {
        {MDB_QUERY_STUDIES, "collection_ids", MDB_QFIELD_STRING},
        {MDB_QUERY_SERIES, "study_id", MDB_QFIELD_STRING},
        {MDB_QUERY_SERIES, "instance_count", MDB_QFIELD_NUMBER},
        {MDB_QUERY_SERIES, "collection_ids", MDB_QFIELD_STRING},
        {MDB_QUERY_INSTANCES, "study_id", MDB_QFIELD_STRING},
        {MDB_QUERY_INSTANCES, "series_id", MDB_QFIELD_STRING},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        if (!mdb_nl_vocab_add_field(v, (mdb_query_level_t)extra[i].level, extra[i].path, extra[i].type, err))
            return false;
    return true;
}

static const char *qtype_name(mdb_qfield_type_t t)
{
    switch (t) {
    case MDB_QFIELD_DATE:
        return "date";
    case MDB_QFIELD_NUMBER:
        return "number";
    case MDB_QFIELD_ANY:
        return "any";
    default:
        return "string";
    }
}

json_t *mdb_nl_vocab_to_json(const mdb_nl_vocab_t *v)
{
    json_t *out = json_object();
    if (!out || !v)
        return out;
    for (int l = 0; l < NL_LEVELS; l++) {
        json_t *lv = json_object();
        for (size_t i = 0; lv && i < v->nfields[l]; i++)
            json_object_set_new(lv, v->fields[l][i].path, json_string(qtype_name(v->fields[l][i].type)));
        json_object_set_new(out, mdb_query_level_name((mdb_query_level_t)l), lv ? lv : json_null());
    }
    json_t *vals = json_object();
    for (size_t i = 0; vals && i < v->nvalues; i++) {
        json_t *arr = json_array();
        for (size_t j = 0; arr && j < v->values[i].n; j++)
            json_array_append_new(arr, json_string(v->values[i].vals[j]));
        json_object_set_new(vals, v->values[i].path, arr ? arr : json_null());
    }
    json_object_set_new(out, "values", vals ? vals : json_null());
    return out;
}

/* ======================================================================
 * tokens
 * ====================================================================== */

typedef enum { T_WORD, T_NUM, T_DATE, T_UID, T_ID, T_QUOTED, T_SYM, T_SEP } tkind_t;

typedef struct {
    tkind_t kind;
    char *text; /* as typed (quotes removed) */
    char *low;  /* ASCII lower case */
    double num; /* T_NUM */
    bool integer;
    char sym;    /* T_SYM: < > = l(<=) g(>=) !(!=) - : */
    int y, m, d; /* T_DATE: m and d are 0 when absent */
    bool glued;  /* joined to the previous token by '-' or '/' with no space */
    bool upper;  /* typed in capitals */
    bool used;
    bool ignored; /* listed as not understood */
    const char *src; /* where the token starts in the tokenized string (spelling rewrites) */
    size_t srclen;
} tok_t;

typedef struct {
    tok_t *t;
    size_t n, cap;
    bool oom;
} toks_t;

static void toks_free(toks_t *ts)
{
    for (size_t i = 0; i < ts->n; i++) {
        free(ts->t[i].text);
        free(ts->t[i].low);
    }
    free(ts->t);
    ts->t = NULL;
    ts->n = ts->cap = 0;
}

static tok_t *toks_push(toks_t *ts, tkind_t kind, const char *s, size_t n)
{
    if (ts->oom)
        return NULL;
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 32;
        tok_t *nt = realloc(ts->t, cap * sizeof *nt);
        if (!nt) {
            ts->oom = true;
            return NULL;
        }
        ts->t = nt;
        ts->cap = cap;
    }
    tok_t *t = &ts->t[ts->n];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->src = s;
    t->srclen = n;
    t->text = strndup(s, n);
    t->low = strndup(s, n);
    if (!t->text || !t->low) {
        free(t->text);
        free(t->low);
        ts->oom = true;
        return NULL;
    }
    bool has_alpha = false, has_lower = false;
    for (char *c = t->low; *c; c++) {
        if (isalpha((unsigned char)*c)) {
            has_alpha = true;
            if (islower((unsigned char)*c))
                has_lower = true;
        }
        *c = (char)tolower((unsigned char)*c);
    }
    t->upper = has_alpha && !has_lower;
    ts->n++;
    return t;
}

static bool all_digits(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return (m >= 1 && m <= 12) ? dm[m - 1] : 0;
}

static bool valid_ymd(int y, int m, int d)
{
    if (y < 1800 || y > 2200)
        return false;
    if (m == 0)
        return d == 0;
    if (m < 1 || m > 12)
        return false;
    return d == 0 || (d >= 1 && d <= days_in_month(y, m));
}

/* "2001-03-15", "2001/03/15", "2001-03", "03/2001". */
static bool parse_date_run(const char *s, size_t n, int *y, int *m, int *d)
{
    char buf[16];
    if (n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    int a = 0, b = 0, c = 0, consumed = 0;
    char s1 = 0, s2 = 0;
    if (sscanf(buf, "%4d%c%2d%c%2d%n", &a, &s1, &b, &s2, &c, &consumed) == 5 && (size_t)consumed == n &&
        s1 == s2 && (s1 == '-' || s1 == '/') && n >= 8 && isdigit((unsigned char)buf[3]) &&
        !isdigit((unsigned char)buf[4])) {
        *y = a, *m = b, *d = c;
        return valid_ymd(a, b, c);
    }
    consumed = 0;
    if (sscanf(buf, "%4d%c%2d%n", &a, &s1, &b, &consumed) == 3 && (size_t)consumed == n && s1 == '-' && n == 7 &&
        isdigit((unsigned char)buf[3])) {
        *y = a, *m = b, *d = 0;
        return valid_ymd(a, b, 0);
    }
    consumed = 0;
    if (sscanf(buf, "%2d%c%4d%n", &b, &s1, &a, &consumed) == 3 && (size_t)consumed == n && s1 == '/' &&
        (n == 6 || n == 7) && buf[n - 5] == '/') {
        *y = a, *m = b, *d = 0;
        return valid_ymd(a, b, 0);
    }
    return false;
}

static bool is_uid_run(const char *s, size_t n)
{
    int dots = 0;
    if (!n || !isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
            dots++;
        } else if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return dots >= 2;
}

/* Length of a leading decimal number (digits, optional .digits); 0 if none. */
static size_t number_prefix(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == 0)
        return 0;
    if (i + 1 < n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
        i++;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    }
    return i;
}

static void push_number(toks_t *ts, const char *s, size_t n)
{
    tok_t *t = toks_push(ts, T_NUM, s, n);
    if (!t)
        return;
    t->num = strtod(t->text, NULL);
    t->integer = memchr(s, '.', n) == NULL;
}

static bool is_unit_suffix(const char *s, size_t n)
{
    static const char *const units[] = {"mm", "cm", "kv", "kvp", "y", "yr", "yrs", "yo", "years", "year",
                                        "st", "nd", "rd", "th", "mo", "months", "month", "days", "weeks", NULL};
    for (int i = 0; units[i]; i++)
        if (strlen(units[i]) == n && !strncasecmp(units[i], s, n))
            return true;
    return false;
}

/* One whitespace/punctuation-delimited run of the sentence. */
static void classify_run(toks_t *ts, const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '.' || s[n - 1] == '\''))
        n--;
    if (n >= 2 && (s[n - 1] == 's' || s[n - 1] == 'S') && s[n - 2] == '\'')
        n -= 2;
    if (n >= 4 && (s[n - 1] == 's' || s[n - 1] == 'S') && !memcmp(s + n - 4, "\xe2\x80\x99", 3))
        n -= 4;
    if (!n)
        return;
    int y, m, d;
    if (parse_date_run(s, n, &y, &m, &d)) {
        tok_t *t = toks_push(ts, T_DATE, s, n);
        if (t)
            t->y = y, t->m = m, t->d = d;
        return;
    }
    if (is_uid_run(s, n)) {
        toks_push(ts, T_UID, s, n);
        return;
    }
    size_t np = number_prefix(s, n);
    if (np == n) {
        push_number(ts, s, n);
        return;
    }
    if (np > 0 && is_unit_suffix(s + np, n - np)) {
        push_number(ts, s, np);
        if (strncasecmp(s + np, "st", 2) && strncasecmp(s + np, "nd", 2) && strncasecmp(s + np, "rd", 2) &&
            strncasecmp(s + np, "th", 2))
            toks_push(ts, T_WORD, s + np, n - np);
        return;
    }
    /* numeric ranges: "2000-2001", "1-2.5mm", "1.0-2.5" */
    if (np > 0 && s[np] == '-') {
        size_t np2 = number_prefix(s + np + 1, n - np - 1);
        size_t rest = n - np - 1 - np2;
        if (np2 > 0 && (rest == 0 || is_unit_suffix(s + np + 1 + np2, rest))) {
            push_number(ts, s, np);
            tok_t *t = toks_push(ts, T_SYM, "-", 1);
            if (t)
                t->sym = '-';
            push_number(ts, s + np + 1, np2);
            if (rest)
                toks_push(ts, T_WORD, s + np + 1 + np2, rest);
            return;
        }
    }
    bool idlike = false;
    for (size_t i = 0; i < n; i++)
        if (isdigit((unsigned char)s[i]) || s[i] == '*' || s[i] == '?' || s[i] == '_')
            idlike = true;
    if (idlike) {
        toks_push(ts, T_ID, s, n);
        return;
    }
    /* plain words; hyphenated and slashed compounds become glued words */
    size_t start = 0;
    bool glued = false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '-' || s[i] == '/') {
            if (i > start) {
                tok_t *t = toks_push(ts, T_WORD, s + start, i - start);
                if (t)
                    t->glued = glued;
                glued = true;
            }
            start = i + 1;
        }
    }
}

/* Length of a special UTF-8 sequence at s (≤ ≥ ≠ and typographic quotes), else 0. */
static size_t special_utf8(const char *s, char *what)
{
    static const struct {
        const char *seq;
        char what;
    } sp[] = {{"\xe2\x89\xa4", 'l'}, {"\xe2\x89\xa5", 'g'}, {"\xe2\x89\xa0", '!'}, {"\xe2\x80\x9c", '"'},
              {"\xe2\x80\x9d", 'D'}, {"\xe2\x80\x98", '\''}, {"\xe2\x80\x99", 'Q'}};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        if (!strncmp(s, sp[i].seq, 3)) {
            *what = sp[i].what;
            return 3;
        }
    return 0;
}

static void push_sym(toks_t *ts, char sym, const char *s, size_t n)
{
    tok_t *t = toks_push(ts, T_SYM, s, n);
    if (t)
        t->sym = sym;
}

static void tokenize(const char *s, toks_t *ts)
{
    size_t i = 0;
    bool at_start = true; /* previous char was whitespace or start */
    while (s[i] && !ts->oom) {
        unsigned char c = (unsigned char)s[i];
        char what = 0;
        size_t sl = special_utf8(s + i, &what);
        if (isspace(c)) {
            i++;
            at_start = true;
            continue;
        }
        /* quoted strings: "..." “...” and, at a word start, '...' ‘...’ */
        if (c == '"' || what == '"' || (at_start && (c == '\'' || what == '\''))) {
            bool dbl = (c == '"' || what == '"');
            size_t open = sl ? sl : 1;
            size_t j = i + open;
            size_t end = j;
            while (s[end]) {
                char w2 = 0;
                size_t l2 = special_utf8(s + end, &w2);
                if ((dbl && (s[end] == '"' || w2 == 'D' || w2 == '"')) ||
                    (!dbl && ((s[end] == '\'' && (!s[end + 1] || !isalnum((unsigned char)s[end + 1]))) || w2 == 'Q')))
                    break;
                end += l2 ? l2 : 1;
            }
            if (end > j)
                toks_push(ts, T_QUOTED, s + j, end - j);
            i = end;
            if (s[i]) {
                char w3 = 0;
                size_t l3 = special_utf8(s + i, &w3);
                i += l3 ? l3 : 1;
            }
            at_start = false;
            continue;
        }
        if (sl && (what == 'l' || what == 'g' || what == '!')) {
            push_sym(ts, what, s + i, sl);
            i += sl;
            at_start = true;
            continue;
        }
        if (c == '<' || c == '>' || c == '=' || c == '!') {
            bool eq = s[i + 1] == '=';
            char sym = c == '<' ? (eq ? 'l' : '<') : c == '>' ? (eq ? 'g' : '>') : c == '!' ? (eq ? '!' : 0) : '=';
            size_t len = eq ? 2 : 1;
            if (c == '=' && eq)
                sym = '=';
            if (sym)
                push_sym(ts, sym, s + i, len);
            i += len;
            at_start = true;
            continue;
        }
        if (c == ':') {
            push_sym(ts, ':', s + i, 1);
            i++;
            at_start = true;
            continue;
        }
        if (c == ',' || c == ';' || c == '&') {
            toks_push(ts, T_SEP, s + i, 1);
            i++;
            at_start = true;
            continue;
        }
        if (c == '(' || c == ')' || c == '[' || c == ']' || c == '{' || c == '}' || c == '?' || c == '"') {
            i++;
            at_start = true;
            continue;
        }
        size_t j = i;
        while (s[j] && !isspace((unsigned char)s[j]) && !strchr(",;&()[]{}\"<>=!?:", s[j])) {
            char w4 = 0;
            if (special_utf8(s + j, &w4))
                break;
            j++;
        }
        if (j == i) { /* a typographic character with no use here (a closing quote): skip it whole */
            char w5 = 0;
            size_t l5 = special_utf8(s + i, &w5);
            i += l5 ? l5 : 1;
            at_start = true;
            continue;
        }
        classify_run(ts, s + i, j - i);
        i = j;
        at_start = false;
    }
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n = (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2 : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (*p == 0xC0 || *p == 0xC1) || *p > 0xF4)
            return false;
        for (int k = 1; k <= n; k++)
            if ((p[k] & 0xC0) != 0x80)
                return false;
        /* no overlong forms, no surrogates, nothing above U+10FFFF */
        if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) || (p[0] == 0xF0 && p[1] < 0x90) ||
            (p[0] == 0xF4 && p[1] > 0x8F))
            return false;
        p += n + 1;
    }
    return true;
}

/* Cut a string truncated by snprintf back to whole UTF-8 characters. */
static void u8trim(char *s)
{
    size_t n = strlen(s), k = n;
    while (k > 0 && ((unsigned char)s[k - 1] & 0xC0) == 0x80)
        k--;
    if (k == 0)
        return;
    unsigned char lead = (unsigned char)s[k - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (k - 1) < need)
        s[k - 1] = '\0';
}

/* ======================================================================
 * conditions
 * ====================================================================== */

typedef enum { C_IN, C_RANGE, C_REGEX, C_PRESENT } ckind_t;

typedef struct cond {
    char *paths[NL_LEVELS]; /* field per level; NULL where documents lack it */
    ckind_t kind;
    bool neg;
    bool flexible;  /* does not steer the automatic level choice */
    json_t *values; /* C_IN: array */
    json_t *lo, *hi;
    bool lo_incl, hi_incl;
    char *regex;       /* C_REGEX */
    char *regex_shown; /* C_REGEX: human form ("contains 'x'") */
    json_t *absent;    /* C_PRESENT: values that count as absent */
    bool eq_regex;     /* C_REGEX of an equality: a list of them means any of them */
    json_t *alts;      /* C_RANGE: further ranges ORed in ("in 1998 or 2003"): [{lo, hi, lo_incl, hi_incl}] */
    char *label;       /* human field name */
    char *note;        /* where it came from, e.g. "\"thin slice\" default" */
    const char *unit;  /* "mm", "kV" or NULL */
    bool is_date;
    struct cond *ors;  /* further conditions on the same field ORed in ("Philips or Hitachi") */
    bool all;          /* C_IN: "both CT and DX": one value of every group, not any value */
    json_t *groups;    /* ... the groups: [[values of one mention], ...] */
    size_t nors;
} cond_t;

static void cond_free(cond_t *c)
{
    for (int l = 0; l < NL_LEVELS; l++)
        free(c->paths[l]);
    json_decref(c->values);
    json_decref(c->lo);
    json_decref(c->hi);
    free(c->regex);
    free(c->regex_shown);
    json_decref(c->absent);
    json_decref(c->alts);
    free(c->label);
    free(c->note);
    for (size_t k = 0; k < c->nors; k++)
        cond_free(&c->ors[k]);
    free(c->ors);
    json_decref(c->groups);
    memset(c, 0, sizeof *c);
}

static bool cond_same_field(const cond_t *a, const cond_t *b)
{
    for (int l = 0; l < NL_LEVELS; l++) {
        if (!a->paths[l] != !b->paths[l])
            return false;
        if (a->paths[l] && strcmp(a->paths[l], b->paths[l]))
            return false;
    }
    return true;
}

static int cond_home(const cond_t *c)
{
    for (int l = 0; l < NL_LEVELS; l++)
        if (c->paths[l])
            return l;
    return -1;
}

/* ======================================================================
 * parser state and token helpers
 * ====================================================================== */

typedef struct {
    const mdb_nl_vocab_t *v;
    tok_t *t;
    size_t n;
    int level;          /* -1 until a level word is read */
    bool neg;           /* a negation word waits for its condition */
    bool cont;          /* a list connector follows the last condition */
    cond_t last_shape;  /* paths of the last condition (for list continuation) */
    bool last_neg;
    bool cont_or;       /* ... and that connector was "or" */
    char last_generic[200]; /* field of the last generic "FIELD VALUE" condition, for value lists */
    bool have_last;
    cond_t *c;
    size_t nc, capc;
    json_t *ignored;
    json_t *notes;
    int ref_y, ref_m, ref_d;
    bool partial;            /* a condition was dropped or an "or" could not be kept */
    bool both;               /* "both" waits for its value list */
    mdb_nl_words_t *collect; /* when set, every word the grammar tries is added (spelling dictionary) */
    json_t *corrections;     /* prefix matches of stored values ({from, to, kind}) */
    json_t *fillers;         /* filler words skipped (no rule used them) */
    bool oom;
} parser_t;

static bool tok_is(const parser_t *p, size_t i, const char *word)
{
    if (p->collect && !mdb_nl_words_add_phrases(p->collect, word))
        ((parser_t *)p)->oom = true;
    return i < p->n && p->t[i].kind == T_WORD && !strcmp(p->t[i].low, word);
}

/* Does one phrase word match token i? A trailing '*' allows a plural s/es. */
static bool word_match(const tok_t *t, const char *w, size_t wl)
{
    if (t->kind != T_WORD && t->kind != T_SYM && t->kind != T_SEP)
        return false;
    bool plural = wl > 1 && w[wl - 1] == '*';
    if (plural)
        wl--;
    size_t tl = strlen(t->low);
    if (t->kind == T_SYM)
        return (wl == 1 && w[0] == t->sym) || (strlen(t->text) == wl && !strncmp(t->text, w, wl));
    if (t->kind == T_SEP)
        return tl == wl && !strncmp(t->text, w, wl);
    if (tl == wl && !strncmp(t->low, w, wl))
        return true;
    if (plural && tl == wl + 1 && !strncmp(t->low, w, wl) && t->low[wl] == 's')
        return true;
    if (plural && tl == wl + 2 && !strncmp(t->low, w, wl) && !strcmp(t->low + wl, "es"))
        return true;
    return false;
}

/* Longest alternative of alts ("thin slice*|thin section*") matching at i;
 * returns the number of tokens, 0 when none. */
static size_t phrase_at(const parser_t *p, size_t i, const char *alts)
{
    if (p->collect && !mdb_nl_words_add_phrases(p->collect, alts))
        ((parser_t *)p)->oom = true;
    size_t best = 0;
    const char *a = alts;
    while (*a) {
        const char *end = strchr(a, '|');
        if (!end)
            end = a + strlen(a);
        size_t k = 0;
        const char *w = a;
        bool ok = true;
        while (w < end) {
            const char *we = w;
            while (we < end && *we != ' ')
                we++;
            if (i + k >= p->n || p->t[i + k].used || !word_match(&p->t[i + k], w, (size_t)(we - w))) {
                ok = false;
                break;
            }
            k++;
            w = we;
            while (w < end && *w == ' ')
                w++;
        }
        if (ok && k > best)
            best = k;
        a = *end ? end + 1 : end;
    }
    return best;
}

static void mark_used(parser_t *p, size_t i, size_t n)
{
    for (size_t k = i; k < i + n && k < p->n; k++)
        p->t[k].used = true;
}

static void note(parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(parser_t *p, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    u8trim(buf);
    va_end(ap);
    if (json_array_append_new(p->notes, json_string(buf)))
        p->oom = true;
}

static const char *const STOPWORDS =
    "a|an|the|all|any|every|each|show|me|find|list|get|give|search|display|fetch|return|want|need|i|we|please|"
    "with|of|for|in|on|at|by|to|that|which|who|whose|where|were|was|are|is|be|been|being|having|have|has|had|"
    "scan|scans|scanned|acquired|performed|done|taken|made|imaging|imaged|data|dataset|datasets|using|used|via|"
    "per|their|its|there|those|these|some|only|just|also|both|either|as|scanner|scanners|machine|machines|"
    "vendor|vendors|device|devices|equipment|dicom|catalogue|catalog|archive|records|record|kind|type|types|"
    "what|how|many|do|does|did|can|could|would|you|our|my|it|them|they|from|into|containing|contain|contains|"
    "available|existing|stored|present|here|out|up|about|over|under|than|like|such|include|including|"
    "includes|show|showing|look|looking|ones|one|whatever|then|so|if|acquisition|acquisitions|obtained|"
    "recorded|imaged|taken|captured|exist|exists|let|see|view|body|part|parts|examined|region|anatomy|"
    "modality|modalities|manufacturer|manufacturers|made|built|produced|brand|make|vendor|sex|gender|"
    "date|dated|dates|time|period|range|between|during|within|please|thanks|thank|hi|hello|retrieve|pull|"
    "select|query|filter|matching|match|matches|named|called|whose|everything|anything|none|patient|patients|"
    "people|subjects|persons|individuals";

static bool is_stopword(const char *low)
{
    size_t n = strlen(low);
    const char *s = STOPWORDS;
    while (*s) {
        const char *e = strchr(s, '|');
        if (!e)
            e = s + strlen(s);
        if ((size_t)(e - s) == n && !strncmp(s, low, n))
            return true;
        s = *e ? e + 1 : e;
    }
    return false;
}

static bool tok_is_filler(const tok_t *t)
{
    return t->kind == T_WORD && is_stopword(t->low);
}

static const char *const LEVEL_WORDS = "study|studies|series|image*|instance*|exam*|examination*|slice*|file*";
static const char *const CONNECTORS = "and|or|nor|plus|as well as|and also|and/or|,|&";
static const char *const NEGATIONS =
    "not|no|non|without|w o|wo|with out|excluding|exclude|excludes|except|except for|but not|other than|never|neither|"
    "isn't|aren't|wasn't|weren't|don't|doesn't|lacking|lack|lacks|minus|omitting|omit|omits|exclusive of|"
    "apart from|leaving out|besides|ignoring|ignore|skip|skipping|free of|isnt|arent|dont|doesnt";

/* ======================================================================
 * adding conditions
 * ====================================================================== */

static cond_t *cond_new(parser_t *p)
{
    if (p->nc == p->capc) {
        size_t cap = p->capc ? p->capc * 2 : 16;
        cond_t *nc = realloc(p->c, cap * sizeof *nc);
        if (!nc) {
            p->oom = true;
            return NULL;
        }
        p->c = nc;
        p->capc = cap;
    }
    cond_t *c = &p->c[p->nc];
    memset(c, 0, sizeof *c);
    return c;
}

/* Set paths[] from the vocabulary: path at every level declaring it. */
static bool cond_field(parser_t *p, cond_t *c, const char *path)
{
    bool any = false;
    for (int l = 0; l < NL_LEVELS; l++) {
        if (mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, path, NULL)) {
            c->paths[l] = strdup(path);
            if (!c->paths[l])
                p->oom = true;
            any = true;
        }
    }
    return any;
}

/* The human name of a field path: "metadata.ConvolutionKernel" → "ConvolutionKernel",
 * "body_part_examined" → "body part examined". */
static char *field_label(const char *path)
{
    const char *s = strncmp(path, "metadata.", 9) ? path : path + 9;
    char *l = strdup(s);
    if (l && s == path)
        for (char *c = l; *c; c++)
            if (*c == '_')
                *c = ' ';
    return l;
}

/* a < b for two numbers or two strings (dates are "YYYYMMDD"); false otherwise. */
static bool value_before(const json_t *a, const json_t *b, bool or_equal)
{
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        return or_equal ? x <= y : x < y;
    }
    if (json_is_string(a) && json_is_string(b)) {
        int d = strcmp(json_string_value(a), json_string_value(b));
        return or_equal ? d <= 0 : d < 0;
    }
    return false;
}

/* Can no value satisfy both ranges ("from 2003 and from 2004")? Then
 * "and" between them means either of them, as people say it. */
static bool ranges_disjoint(const cond_t *a, const cond_t *b)
{
    if (json_array_size(a->alts) || json_array_size(b->alts) || a->neg != b->neg)
        return false;
    /* a entirely below b, or b entirely below a */
    if (a->hi && b->lo && value_before(a->hi, b->lo, !(a->hi_incl && b->lo_incl)))
        return true;
    if (b->hi && a->lo && value_before(b->hi, a->lo, !(b->hi_incl && a->lo_incl)))
        return true;
    return false;
}

/* "Philips or Hitachi" where Hitachi is not in the data (a pattern) and
 * Philips is (a value list): the two readings of one field are ORed, never
 * ANDed. Moves c into the previous condition's ors and returns true when it
 * applies. */
static bool or_merge(parser_t *p, cond_t *c)
{
    if (p->nc == 0)
        return false;
    cond_t *o = &p->c[p->nc - 1];
    if (o->neg != c->neg || !cond_same_field(o, c))
        return false;
    bool names = (o->kind == C_IN || o->kind == C_REGEX) && (c->kind == C_IN || c->kind == C_REGEX);
    if (!names || (o->kind == C_IN && c->kind == C_IN) || (o->kind == C_REGEX && c->kind == C_REGEX && o->eq_regex &&
                                                          c->eq_regex))
        return false; /* merged as a value list below */
    if (o->kind == C_REGEX && c->kind == C_REGEX && !p->cont_or && !o->nors)
        return false; /* "described as 'a' and 'b'": both */
    cond_t *no = realloc(o->ors, (o->nors + 1) * sizeof *no);
    if (!no) {
        p->oom = true;
        return false;
    }
    o->ors = no;
    o->ors[o->nors++] = *c;
    memset(c, 0, sizeof *c);
    return true;
}

/* Commit the condition at p->c[p->nc] (filled by the caller): apply the
 * pending negation, merge with an earlier same-field value list, or drop it
 * (with a note) when no level carries its field. */
static void cond_commit(parser_t *p, const char *source_words)
{
    cond_t *c = &p->c[p->nc];
    p->last_generic[0] = '\0';
    if (cond_home(c) < 0) {
        note(p, "\"%s\" was not used: %s is not recorded in this catalogue", source_words,
             c->label ? c->label : "that field");
        cond_free(c);
        p->neg = false;
        p->partial = true;
        return;
    }
    bool neg = p->neg || (p->cont && p->have_last && p->last_neg && cond_same_field(&p->last_shape, c));
    bool was_cont = p->cont;
    bool or_range = c->kind == C_RANGE && p->cont && p->nc > 0 && p->c[p->nc - 1].kind == C_RANGE &&
                    cond_same_field(&p->c[p->nc - 1], c) && (p->cont_or || ranges_disjoint(&p->c[p->nc - 1], c));
    c->neg = c->neg != neg; /* a condition may arrive negated already ("unenhanced") */
    if (p->both && c->kind == C_IN) {
        c->all = true;
        c->groups = json_pack("[o]", json_copy(c->values)); /* a copy: later values merge into c->values */
        if (!c->groups)
            p->oom = true;
    }
    p->both = false;
    bool was_or = p->cont && p->cont_or;
    p->neg = false;
    p->cont = false;
    if (was_cont && or_merge(p, c))
        return;
    if (was_or && p->have_last && !cond_same_field(&p->last_shape, c)) {
        /* "CT or Siemens": an OR across fields is not in the grammar; say so rather than AND silently */
        note(p, "\"or\" between two different fields was read as \"and\"");
        if (json_array_append_new(p->ignored, json_string("or")))
            p->oom = true;
        p->partial = true;
    }
    if (or_range && p->c[p->nc - 1].neg == c->neg) {
        /* "from 1998 or 2003": one condition with alternative ranges */
        cond_t *o = &p->c[p->nc - 1];
        if (!o->alts)
            o->alts = json_array();
        json_t *alt = json_pack("{s:O?, s:O?, s:b, s:b}", "lo", c->lo, "hi", c->hi, "lo_incl", c->lo_incl, "hi_incl",
                                c->hi_incl);
        if (!o->alts || !alt || json_array_append_new(o->alts, alt))
            p->oom = true;
        cond_free(c);
        return;
    }
    if (c->kind == C_REGEX && c->eq_regex && p->nc > 0) {
        cond_t *o = &p->c[p->nc - 1];
        if (o->kind == C_REGEX && o->eq_regex && o->neg == c->neg && cond_same_field(o, c) && was_cont) {
            mdb_nl_buf_t b = {0}, t = {0};
            mdb_nl_buf_addf(&b, "(%s)|(%s)", o->regex, c->regex);
            mdb_nl_buf_addf(&t, "%s or %s", o->regex_shown, c->regex_shown + (strncmp(c->regex_shown, "is ", 3) ? 0 : 3));
            char *nr = mdb_nl_buf_steal(&b), *nt = mdb_nl_buf_steal(&t);
            if (!nr || !nt) {
                p->oom = true;
                free(nr);
                free(nt);
            } else {
                free(o->regex);
                free(o->regex_shown);
                o->regex = nr;
                o->regex_shown = nt;
            }
            cond_free(c);
            return;
        }
    }
    /* remember the shape for list continuation */
    for (int l = 0; l < NL_LEVELS; l++) {
        free(p->last_shape.paths[l]);
        p->last_shape.paths[l] = c->paths[l] ? strdup(c->paths[l]) : NULL;
    }
    p->last_neg = c->neg;
    p->have_last = true;
    if (c->kind == C_IN) {
        for (size_t k = 0; k < p->nc; k++) {
            cond_t *o = &p->c[k];
            if (o->kind == C_IN && o->neg == c->neg && cond_same_field(o, c)) {
                size_t i;
                json_t *val;
                if (o->all && json_array_append_new(o->groups, json_copy(c->values)))
                    p->oom = true;
                json_array_foreach(c->values, i, val)
                {
                    bool dup = false;
                    size_t j;
                    json_t *ov;
                    json_array_foreach(o->values, j, ov) if (json_equal(ov, val)) dup = true;
                    if (!dup && json_array_append(o->values, val))
                        p->oom = true;
                }
                cond_free(c);
                return;
            }
        }
    }
    p->nc++;
}

static json_t *num_json(double d)
{
    if (d == floor(d) && fabs(d) < 1e15)
        return json_integer((json_int_t)d);
    return json_real(d);
}

/* A C_IN condition of strings on path. */
static void add_in_strings(parser_t *p, const char *path_or_null, const char *label, const char *const *vals,
                           size_t nvals, const char *words)
{
    cond_t *c = cond_new(p);
    if (!c)
        return;
    c->kind = C_IN;
    c->values = json_array();
    for (size_t i = 0; i < nvals; i++)
        json_array_append_new(c->values, json_string(vals[i]));
    c->label = strdup(label);
    if (path_or_null)
        cond_field(p, c, path_or_null);
    cond_commit(p, words);
}

/* ======================================================================
 * dates
 * ====================================================================== */

typedef struct {
    int y, m, d; /* m, d = 0: whole year / month */
    size_t len;
} datept_t;

static int month_of(const char *low)
{
    static const char *const names[] = {"january", "february", "march",     "april",   "may",      "june",
                                        "july",    "august",   "september", "october", "november", "december"};
    static const char *const abbr[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};
    for (int i = 0; i < 12; i++)
        if (!strcmp(low, names[i]) || !strcmp(low, abbr[i]))
            return i + 1;
    if (!strcmp(low, "sept"))
        return 9;
    return 0;
}

static bool tok_is_year(const tok_t *t)
{
    return t->kind == T_NUM && t->integer && strlen(t->text) == 4 && t->num >= 1900 && t->num <= 2100;
}

static bool unit_follows(const parser_t *p, size_t i);

/* A point in time at i: "2001", "March 2001", "March 15, 2001", "15 March
 * 2001", "2001-03-15", "2001-03", "20010315". */
static bool date_point(const parser_t *p, size_t i, datept_t *dp)
{
    if (i >= p->n || p->t[i].used)
        return false;
    const tok_t *t = &p->t[i];
    memset(dp, 0, sizeof *dp);
    if (t->kind == T_DATE) {
        dp->y = t->y, dp->m = t->m, dp->d = t->d, dp->len = 1;
        return true;
    }
    if (t->kind == T_NUM && t->integer && strlen(t->text) == 8) {
        int y = atoi(t->text) / 10000, m = atoi(t->text) / 100 % 100, d = atoi(t->text) % 100;
        if (valid_ymd(y, m, d) && d) {
            dp->y = y, dp->m = m, dp->d = d, dp->len = 1;
            return true;
        }
        return false;
    }
    if (tok_is_year(t)) {
        if (unit_follows(p, i + 1))
            return false;
        dp->y = (int)t->num, dp->len = 1;
        return true;
    }
    if (t->kind == T_WORD && month_of(t->low)) {
        int m = month_of(t->low);
        size_t k = i + 1;
        int d = 0;
        if (k < p->n && p->t[k].kind == T_NUM && p->t[k].integer && p->t[k].num >= 1 && p->t[k].num <= 31 &&
            !tok_is_year(&p->t[k])) {
            d = (int)p->t[k].num;
            k++;
            if (k < p->n && p->t[k].kind == T_SEP)
                k++;
        }
        if (k < p->n && tok_is_year(&p->t[k]) && !p->t[k].used) {
            dp->y = (int)p->t[k].num, dp->m = m, dp->d = d, dp->len = k + 1 - i;
            return valid_ymd(dp->y, dp->m, dp->d);
        }
        return false;
    }
    if (t->kind == T_NUM && t->integer && t->num >= 1 && t->num <= 31 && i + 2 < p->n && p->t[i + 1].kind == T_WORD &&
        month_of(p->t[i + 1].low) && tok_is_year(&p->t[i + 2])) {
        dp->y = (int)p->t[i + 2].num, dp->m = month_of(p->t[i + 1].low), dp->d = (int)t->num, dp->len = 3;
        return valid_ymd(dp->y, dp->m, dp->d);
    }
    return false;
}

static void date_start(const datept_t *dp, char out[9])
{
    snprintf(out, 9, "%04d%02d%02d", dp->y, dp->m ? dp->m : 1, dp->d ? dp->d : 1);
}

static void date_end(const datept_t *dp, char out[9])
{
    int m = dp->m ? dp->m : 12;
    int d = dp->d ? dp->d : days_in_month(dp->y, m);
    snprintf(out, 9, "%04d%02d%02d", dp->y, m, d);
}

/* Shift y/m/d back by n units ('y', 'm', 'w', 'd'); clamps the day. */
static void date_back(int *y, int *m, int *d, int n, char unit)
{
    if (unit == 'y') {
        *y -= n;
    } else if (unit == 'm') {
        int total = *y * 12 + (*m - 1) - n;
        *y = total / 12;
        *m = total % 12 + 1;
    } else {
        struct tm tmv = {0};
        tmv.tm_year = *y - 1900;
        tmv.tm_mon = *m - 1;
        tmv.tm_mday = *d - n * (unit == 'w' ? 7 : 1);
        tmv.tm_hour = 12;
        time_t tt = timegm(&tmv);
        struct tm out;
        gmtime_r(&tt, &out);
        *y = out.tm_year + 1900, *m = out.tm_mon + 1, *d = out.tm_mday;
        return;
    }
    int dim = days_in_month(*y, *m);
    if (*d > dim)
        *d = dim;
}

static int number_word(const tok_t *t)
{
    static const char *const words[] = {"zero", "one",   "two",    "three",  "four", "five", "six",
                                        "seven", "eight", "nine",   "ten",    "eleven", "twelve", NULL};
    if (t->kind == T_NUM && t->integer && t->num >= 0 && t->num <= 1000)
        return (int)t->num;
    if (t->kind != T_WORD)
        return -1;
    for (int i = 0; words[i]; i++)
        if (!strcmp(t->low, words[i]))
            return i;
    if (!strcmp(t->low, "fifteen"))
        return 15;
    if (!strcmp(t->low, "twenty"))
        return 20;
    if (!strcmp(t->low, "thirty"))
        return 30;
    if (!strcmp(t->low, "a") || !strcmp(t->low, "an"))
        return 1;
    return -1;
}

static char time_unit(const tok_t *t)
{
    if (t->kind != T_WORD)
        return 0;
    if (!strcmp(t->low, "year") || !strcmp(t->low, "years") || !strcmp(t->low, "yr") || !strcmp(t->low, "yrs"))
        return 'y';
    if (!strcmp(t->low, "month") || !strcmp(t->low, "months") || !strcmp(t->low, "mo"))
        return 'm';
    if (!strcmp(t->low, "week") || !strcmp(t->low, "weeks"))
        return 'w';
    if (!strcmp(t->low, "day") || !strcmp(t->low, "days"))
        return 'd';
    return 0;
}

typedef struct {
    char lo[9], hi[9];
    bool has_lo, has_hi, lo_incl, hi_incl;
    char *shown; /* optional human form (relative dates) */
} drange_t;

/* The field a date phrase refers to, read from an optional prefix. */
typedef struct {
    const char *path;
    const char *label;
} datefield_t;

static size_t date_field_prefix(const parser_t *p, size_t i, datefield_t *f)
{
    size_t n;
    f->path = "study_date";
    f->label = "study date";
    if ((n = phrase_at(p, i, "series date|series dated|series acquired|series acquired on")) > 0) {
        f->path = "series_date";
        f->label = "series date";
        return n;
    }
    if ((n = phrase_at(p, i, "born|birth date|date of birth|birthdate|dob|birthday|patients born|patient born")) > 0) {
        f->path = "metadata.PatientBirthDate";
        f->label = "PatientBirthDate";
        return n;
    }
    if ((n = phrase_at(p, i, "study date|studydate|study dated|exam date|examination date|date of study|dated")) > 0)
        return n;
    return 0;
}

/* Relative expressions ending at the reference date. */
static size_t relative_date(parser_t *p, size_t i, drange_t *r)
{
    char ref[9];
    snprintf(ref, sizeof ref, "%04d%02d%02d", p->ref_y, p->ref_m, p->ref_d);
    size_t k = i;
    size_t n;
    bool rolling_the = false;
    if ((n = phrase_at(p, k, "in the|within the|during the|over the|from the|for the|in|within|during|over"))) {
        rolling_the = true;
        k += n;
    }
    /* last/past N units; "last year" = previous calendar year unless "the last year" */
    if ((n = phrase_at(p, k, "last|past|previous|preceding|recent|most recent"))) {
        size_t j = k + n;
        int num = 1;
        if (j < p->n && number_word(&p->t[j]) > 0 && j + 1 < p->n && time_unit(&p->t[j + 1])) {
            num = number_word(&p->t[j]);
            j++;
        }
        if (j >= p->n || !time_unit(&p->t[j]) || p->t[j].used)
            return 0;
        char unit = time_unit(&p->t[j]);
        int y = p->ref_y, m = p->ref_m, d = p->ref_d;
        bool calendar = !rolling_the && num == 1 && j == k + n && (unit == 'y' || unit == 'm');
        if (calendar) {
            /* "last year": the previous calendar year; "last month": previous month */
            datept_t dp = {0};
            if (unit == 'y') {
                dp.y = p->ref_y - 1;
            } else {
                date_back(&y, &m, &d, 1, 'm');
                dp.y = y, dp.m = m;
            }
            date_start(&dp, r->lo);
            date_end(&dp, r->hi);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
            return j + 1 - i;
        }
        date_back(&y, &m, &d, num, unit);
        snprintf(r->lo, sizeof r->lo, "%04d%02d%02d", y, m, d);
        memcpy(r->hi, ref, 9);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return j + 1 - i;
    }
    k = i;
    if ((n = phrase_at(p, k, "this year|current year|this month|current month"))) {
        bool year = p->t[k + 1].low[0] == 'y';
        snprintf(r->lo, sizeof r->lo, "%04d%02d01", p->ref_y, year ? 1 : p->ref_m);
        memcpy(r->hi, ref, 9);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return n;
    }
    /* [more than|less than|over|under|within] N units ago / older than N years */
    int cmp = 0; /* 0 = that period, <0 = before, >0 = since */
    if ((n = phrase_at(p, k, "more than|over|older than|at least|earlier than"))) {
        cmp = -1;
        k += n;
    } else if ((n = phrase_at(p, k, "less than|under|fewer than|within|at most|no more than|newer than"))) {
        cmp = 1;
        k += n;
    }
    if (k + 1 < p->n && number_word(&p->t[k]) >= 0 && time_unit(&p->t[k + 1])) {
        int num = number_word(&p->t[k]);
        char unit = time_unit(&p->t[k + 1]);
        size_t j = k + 2;
        bool ago = tok_is(p, j, "ago") || phrase_at(p, j, "back|before now|before today");
        if (ago)
            j += tok_is(p, j, "ago") ? 1 : phrase_at(p, j, "back|before now|before today");
        bool old = phrase_at(p, i, "older than|newer than|within") > 0;
        if (!ago && !old)
            return 0;
        if (!ago && old && tok_is(p, j, "old"))
            return 0; /* "older than 60 years old" is an age */
        int y = p->ref_y, m = p->ref_m, d = p->ref_d;
        date_back(&y, &m, &d, num, unit);
        char pt[9];
        snprintf(pt, sizeof pt, "%04d%02d%02d", y, m, d);
        if (cmp < 0) {
            memcpy(r->hi, pt, 9);
            r->has_hi = true;
            r->hi_incl = false;
        } else if (cmp > 0) {
            memcpy(r->lo, pt, 9);
            memcpy(r->hi, ref, 9);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        } else {
            /* "5 years ago": that calendar year / month / day */
            datept_t dp = {.y = y, .m = unit == 'y' ? 0 : m, .d = (unit == 'd' || unit == 'w') ? d : 0};
            if (unit == 'w') {
                memcpy(r->lo, pt, 9);
                int y2 = y, m2 = m, d2 = d;
                date_back(&y2, &m2, &d2, -6, 'd');
                snprintf(r->hi, sizeof r->hi, "%04d%02d%02d", y2, m2, d2);
            } else {
                date_start(&dp, r->lo);
                date_end(&dp, r->hi);
            }
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        }
        return j - i;
    }
    return 0;
}

/* Absolute date expressions. */
static size_t absolute_date(const parser_t *p, size_t i, drange_t *r)
{
    datept_t a, b;
    size_t n, k;
    /* between A and B / from A to B */
    if ((n = phrase_at(p, i, "between|from|starting|beginning|starting from|starting in|beginning in|as of"))) {
        bool between = !strcmp(p->t[i].low, "between");
        bool from = !strcmp(p->t[i].low, "from");
        if (!date_point(p, i + n, &a))
            return 0;
        k = i + n + a.len;
        size_t sep = between ? phrase_at(p, k, "and|to|-|through|until|till")
                             : phrase_at(p, k, "to|-|through|thru|until|till|up to|and");
        if (sep && date_point(p, k + sep, &b)) {
            date_start(&a, r->lo);
            date_end(&b, r->hi);
            r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
            return k + sep + b.len - i;
        }
        if (between)
            return 0;
        size_t on = phrase_at(p, k, "on|onwards|onward|forward|forwards|and later|or later|and after|or after");
        if (!from || on) {
            date_start(&a, r->lo);
            r->has_lo = r->lo_incl = true;
            return k + on - i;
        }
        /* "from 2001" alone: during 2001 */
        date_start(&a, r->lo);
        date_end(&a, r->hi);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return k - i;
    }
    if ((n = phrase_at(p, i, "after|later than|newer than|following|post|since"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        if (!strcmp(p->t[i].low, "since")) {
            date_start(&a, r->lo);
            r->lo_incl = true;
        } else {
            date_end(&a, r->lo);
            r->lo_incl = false;
        }
        r->has_lo = true;
        return n + a.len;
    }
    if ((n = phrase_at(p, i, "before|prior to|earlier than|older than|preceding|pre"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        date_start(&a, r->hi);
        r->has_hi = true;
        r->hi_incl = false;
        return n + a.len;
    }
    if ((n = phrase_at(p, i, "until|till|through|thru|up to|up until|no later than|not later than|by|to"))) {
        if (!date_point(p, i + n, &a))
            return 0;
        date_end(&a, r->hi);
        r->has_hi = r->hi_incl = true;
        return n + a.len;
    }
    size_t pre = phrase_at(p, i, "in|on|during|of|in year|in the year|dated|year|from year|around");
    if (!date_point(p, i + pre, &a))
        return 0;
    k = i + pre + a.len;
    size_t sep = phrase_at(p, k, "to|-|through|thru|until|till");
    if (sep && date_point(p, k + sep, &b)) {
        date_start(&a, r->lo);
        date_end(&b, r->hi);
        r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
        return k + sep + b.len - i;
    }
    size_t later = phrase_at(p, k, "or later|and later|onwards|onward|or after|and after|or newer|and newer|and beyond");
    if (later) {
        date_start(&a, r->lo);
        r->has_lo = r->lo_incl = true;
        return k + later - i;
    }
    size_t earlier = phrase_at(p, k, "or earlier|and earlier|or before|and before|or older|and older|and prior");
    if (earlier) {
        date_end(&a, r->hi);
        r->has_hi = r->hi_incl = true;
        return k + earlier - i;
    }
    date_start(&a, r->lo);
    date_end(&a, r->hi);
    r->has_lo = r->has_hi = r->lo_incl = r->hi_incl = true;
    return k - i;
}

static size_t words_text(const parser_t *p, size_t i, size_t n, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t k = i; k < i + n && k < p->n; k++) {
        int w = snprintf(out + len, cap - len, "%s%s", len ? " " : "", p->t[k].text);
        if (w < 0 || (size_t)w >= cap - len) {
            out[len] = '\0';
            break;
        }
        len += (size_t)w;
    }
    return len;
}

static size_t rule_date(parser_t *p, size_t i)
{
    datefield_t f;
    size_t pre = date_field_prefix(p, i, &f);
    size_t k = i + pre;
    k += phrase_at(p, k, "is|was|of|:|=|were|in the|in");
    drange_t r;
    memset(&r, 0, sizeof r);
    size_t n = relative_date(p, k, &r);
    if (!n) {
        memset(&r, 0, sizeof r);
        n = absolute_date(p, k, &r);
    }
    if (!n) {
        /* "in"/"of" consumed by the filler may belong to the date itself */
        k = i + pre;
        memset(&r, 0, sizeof r);
        n = relative_date(p, k, &r);
        if (!n) {
            memset(&r, 0, sizeof r);
            n = absolute_date(p, k, &r);
        }
        if (!n)
            return 0;
    }
    size_t total = k + n - i;
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    c->kind = C_RANGE;
    c->is_date = true;
    if (r.has_lo)
        c->lo = json_string(r.lo);
    if (r.has_hi)
        c->hi = json_string(r.hi);
    c->lo_incl = r.lo_incl;
    c->hi_incl = r.hi_incl;
    c->label = strdup(f.label);
    cond_field(p, c, f.path);
    char words[256];
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    cond_commit(p, words);
    return total;
}

/* ======================================================================
 * numbers with units
 * ====================================================================== */

typedef enum { U_NONE = 0, U_MM, U_KV, U_COUNT, U_SERIES, U_YEARS } unit_t; /* U_SERIES: set by rule_numeric_unit */
typedef enum { N_EQ, N_LT, N_LE, N_GT, N_GE, N_RANGE } nop_t;

typedef struct {
    nop_t op;
    double a, b;
    unit_t unit;
    bool had_cmp;
    size_t len;
} numc_t;

static size_t unit_at(const parser_t *p, size_t i, unit_t *u, double *scale)
{
    size_t n;
    *scale = 1;
    if ((n = phrase_at(p, i, "mm|millimeter*|millimetre*"))) {
        *u = U_MM;
        return n;
    }
    if ((n = phrase_at(p, i, "cm|centimeter*|centimetre*"))) {
        *u = U_MM;
        *scale = 10;
        return n;
    }
    if ((n = phrase_at(p, i, "kv|kvp|kilovolt*|kilovolt peak"))) {
        *u = U_KV;
        return n;
    }
    if ((n = phrase_at(p, i, "image*|instance*|slice*|file*|frame*|picture*|sop instance*"))) {
        *u = U_COUNT;
        return n;
    }
    if ((n = phrase_at(p, i, "years old|year old|yo|y|years of age|yrs old|yr old"))) {
        *u = U_YEARS;
        return n;
    }
    if ((n = phrase_at(p, i, "year*|yr*"))) {
        *u = U_YEARS;
        return n;
    }
    *u = U_NONE;
    return 0;
}

static bool unit_follows(const parser_t *p, size_t i)
{
    unit_t u;
    double s;
    return unit_at(p, i, &u, &s) > 0 && u != U_YEARS && u != U_COUNT;
}

static size_t comparator_at(const parser_t *p, size_t i, nop_t *op)
{
    size_t n;
    if ((n = phrase_at(p, i,
                       "at most|no more than|not more than|up to|<=|l|maximum|max|no greater than|not greater than|"
                       "no thicker than|not thicker than|no larger than|not exceeding|no higher than|not above|"
                       "less than or equal to|smaller than or equal to|lower than or equal to|below or equal to|"
                       "no older than|not older than"))) {
        *op = N_LE;
        return n;
    }
    if ((n = phrase_at(p, i,
                       "at least|no less than|not less than|>=|g|minimum|min|no thinner than|not thinner than|"
                       "no fewer than|not below|greater than or equal to|more than or equal to|"
                       "larger than or equal to|above or equal to|no younger than|not younger than"))) {
        *op = N_GE;
        return n;
    }
    if ((n = phrase_at(p, i,
                       "less than|lower than|below|under|smaller than|thinner than|fewer than|<|younger than|"
                       "shorter than|beneath|finer than|thinner then|less then"))) {
        *op = N_LT;
        return n;
    }
    if ((n = phrase_at(p, i,
                       "more than|greater than|above|over|larger than|thicker than|higher than|>|exceeding|"
                       "older than|bigger than|more then|greater then|in excess of"))) {
        *op = N_GT;
        return n;
    }
    if ((n = phrase_at(p, i, "equal to|equals|exactly|=|of exactly|precisely"))) {
        *op = N_EQ;
        return n;
    }
    return 0;
}

/* The symbol tokens carry their text; map them to the words phrase_at knows. */
static bool num_tok(const parser_t *p, size_t i)
{
    return i < p->n && !p->t[i].used && p->t[i].kind == T_NUM;
}

/* A numeric constraint at i: [comparator] N [unit] [to M [unit]] [or less|or more],
 * or "between N and M [unit]". */
static bool parse_numc(const parser_t *p, size_t i, numc_t *nc)
{
    memset(nc, 0, sizeof *nc);
    size_t k = i, n;
    double scale = 1, scale2 = 1;
    unit_t u2 = U_NONE;
    if ((n = phrase_at(p, k, "between|from"))) {
        bool between = p->t[k].low[0] == 'b';
        k += n;
        if (!num_tok(p, k))
            return false;
        double a = p->t[k].num;
        k++;
        k += unit_at(p, k, &nc->unit, &scale);
        size_t sep = between ? phrase_at(p, k, "and|to|-") : phrase_at(p, k, "to|-");
        if (!sep || !num_tok(p, k + sep))
            return false;
        k += sep;
        double b = p->t[k].num;
        k++;
        k += unit_at(p, k, &u2, &scale2);
        if (nc->unit == U_NONE) {
            nc->unit = u2;
            scale = scale2;
        }
        if (!between && nc->unit == U_NONE)
            return false; /* "from 2000 to 2001" is a date range */
        nc->op = N_RANGE;
        nc->a = fmin(a, b) * scale;
        nc->b = fmax(a, b) * (u2 != U_NONE ? scale2 : scale);
        nc->had_cmp = true;
        nc->len = k - i;
        return true;
    }
    nop_t op = N_EQ;
    n = comparator_at(p, k, &op);
    nc->had_cmp = n > 0;
    k += n;
    if (!num_tok(p, k))
        return false;
    nc->a = p->t[k].num;
    k++;
    k += unit_at(p, k, &nc->unit, &scale);
    nc->a *= scale;
    nc->op = op;
    if (!nc->had_cmp) {
        size_t sep = phrase_at(p, k, "to|-|through");
        if (sep && num_tok(p, k + sep)) {
            double b = p->t[k + sep].num;
            size_t k2 = k + sep + 1;
            size_t ul = unit_at(p, k2, &u2, &scale2);
            if (nc->unit == U_NONE && ul) {
                nc->unit = u2;
                nc->a *= scale2;
                scale = scale2;
            }
            nc->op = N_RANGE;
            nc->b = b * (ul ? scale2 : scale);
            if (nc->b < nc->a) {
                double t = nc->a;
                nc->a = nc->b;
                nc->b = t;
            }
            nc->had_cmp = true;
            k = k2 + ul;
        } else if ((n = phrase_at(p, k,
                                  "or less|or fewer|or under|or below|and below|and under|or thinner|or lower|"
                                  "or smaller|at most|max|maximum|or finer|and thinner|and less"))) {
            nc->op = N_LE;
            nc->had_cmp = true;
            k += n;
        } else if ((n = phrase_at(p, k,
                                  "or more|or greater|or above|and above|and over|or thicker|or higher|or larger|"
                                  "at least|min|minimum|plus|+|and more|and thicker|or older|and older"))) {
            nc->op = N_GE;
            nc->had_cmp = true;
            k += n;
        }
    }
    nc->len = k - i;
    return true;
}

static void numc_to_cond(cond_t *c, const numc_t *nc)
{
    c->kind = nc->op == N_EQ ? C_IN : C_RANGE;
    switch (nc->op) {
    case N_EQ:
        c->values = json_array();
        json_array_append_new(c->values, num_json(nc->a));
        break;
    case N_LT:
    case N_LE:
        c->hi = num_json(nc->a);
        c->hi_incl = nc->op == N_LE;
        break;
    case N_GT:
    case N_GE:
        c->lo = num_json(nc->a);
        c->lo_incl = nc->op == N_GE;
        break;
    case N_RANGE:
        c->lo = num_json(nc->a);
        c->hi = num_json(nc->b);
        c->lo_incl = c->hi_incl = true;
        break;
    }
}

/* A numeric field named explicitly. */
typedef struct {
    const char *phrases;
    const char *path;
    const char *label;
    const char *unit;
    bool needs_cmp; /* ambiguous phrase: only with a comparator or unit */
} numfield_t;

static const numfield_t NUMFIELDS[] = {
    {"slice thickness|section thickness|slice width|slicethickness|thickness|thicknesses|"
     "slice thicknesses|slice thickness of",
     "slice_thickness", "slice thickness", "mm", false},
    {"slice*|section*|cut*", "slice_thickness", "slice thickness", "mm", true},
    {"kvp|kv|tube voltage|peak kilovoltage|kilovoltage|voltage|tube potential|peak voltage", "kvp", "kVp", "kV",
     false},
    {"series number|series no|series nr|series #|seriesnumber", "series_number", "series number", NULL, false},
    {"instance number|image number|instance no|image no|instancenumber|slice number", "instance_number",
     "instance number", NULL, false},
    {"number of images|number of slices|number of instances|number of files|image count|instance count|"
     "images count|slice count|instances count|images per series|number of frames",
     "instance_count", "number of instances", NULL, false},
};

static size_t rule_numeric_field(parser_t *p, size_t i)
{
    for (size_t f = 0; f < sizeof NUMFIELDS / sizeof NUMFIELDS[0]; f++) {
        size_t n = phrase_at(p, i, NUMFIELDS[f].phrases);
        if (!n)
            continue;
        size_t k = i + n;
        k += phrase_at(p, k, "of|is|=|:|was|were|at|with|set to|being|are|has|have");
        numc_t nc;
        if (!parse_numc(p, k, &nc))
            continue;
        if (NUMFIELDS[f].needs_cmp && !nc.had_cmp && nc.unit != U_MM)
            continue;
        if (nc.unit == U_COUNT || nc.unit == U_YEARS)
            continue;
        size_t total = k + nc.len - i;
        cond_t *c = cond_new(p);
        if (!c)
            return 0;
        numc_to_cond(c, &nc);
        c->label = strdup(NUMFIELDS[f].label);
        c->unit = NUMFIELDS[f].unit;
        cond_field(p, c, NUMFIELDS[f].path);
        char words[256];
        words_text(p, i, total, words, sizeof words);
        mark_used(p, i, total);
        cond_commit(p, words);
        return total;
    }
    return 0;
}

/* Age: "patients older than 60", "aged 40 to 60", "60 years old". PatientAge
 * is a DICOM AS string ("061Y"); years compare as zero-padded strings and a
 * pattern restricts the match to ages given in years. */
static void add_age(parser_t *p, const numc_t *nc, const char *words)
{
    bool known = false;
    for (int l = 0; l < NL_LEVELS; l++)
        known = known || mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, "metadata.PatientAge", NULL);
    if (!known) {
        note(p, "\"%s\" was not used: PatientAge is not recorded in this catalogue", words);
        p->neg = false;
        return;
    }
    cond_t *c = cond_new(p);
    if (!c)
        return;
    char a[8], b[8];
    snprintf(a, sizeof a, "%03dY", (int)nc->a);
    snprintf(b, sizeof b, "%03dY", (int)nc->b);
    c->label = strdup("patient age (years)");
    cond_field(p, c, "metadata.PatientAge");
    if (nc->op == N_EQ) {
        c->kind = C_IN;
        c->values = json_array();
        json_array_append_new(c->values, json_string(a));
    } else {
        c->kind = C_RANGE;
        if (nc->op == N_GT || nc->op == N_GE || nc->op == N_RANGE) {
            c->lo = json_string(a);
            c->lo_incl = nc->op != N_GT;
        }
        if (nc->op == N_LT || nc->op == N_LE) {
            c->hi = json_string(a);
            c->hi_incl = nc->op == N_LE;
        }
        if (nc->op == N_RANGE) {
            c->hi = json_string(b);
            c->hi_incl = true;
        }
    }
    bool neg = p->neg;
    cond_commit(p, words);
    if (nc->op == N_EQ)
        return;
    /* keep to ages in years: a second condition on the same field */
    cond_t *g = cond_new(p);
    if (!g)
        return;
    g->kind = C_REGEX;
    g->regex = strdup("^[0-9]{3}Y$");
    g->regex_shown = strdup("is given in years");
    g->label = strdup("patient age");
    cond_field(p, g, "metadata.PatientAge");
    p->neg = false;
    if (!neg)
        cond_commit(p, words);
    else
        cond_free(g);
}

static size_t rule_age(parser_t *p, size_t i)
{
    size_t n = phrase_at(p, i, "aged|age|patient age|patients aged|patient aged|ages|patients|patient|subjects|people");
    size_t k = i + n;
    k += phrase_at(p, k, "of|is|=|:|was|were|are|between");
    if (n && k > i + n && !strcmp(p->t[k - 1].low, "between"))
        k--;
    numc_t nc;
    if (!parse_numc(p, k, &nc))
        return 0;
    bool explicit_age = n && strcmp(p->t[i].low, "patients") && strcmp(p->t[i].low, "patient") &&
                        strcmp(p->t[i].low, "subjects") && strcmp(p->t[i].low, "people");
    /* "female patients older than 60": a person word just before, read by another rule */
    bool person = n > 0;
    if (!n && i > 0) {
        const tok_t *prev = &p->t[i - 1];
        static const char *const persons[] = {"patient", "patients", "subject", "subjects", "people", "men",
                                              "women", "male", "males", "female", "females", "persons", NULL};
        for (int q = 0; persons[q] && prev->kind == T_WORD; q++)
            if (!strcmp(prev->low, persons[q]))
                person = true;
    }
    size_t total = k + nc.len - i;
    if (nc.unit == U_YEARS) {
        /* "60 years old" needs "old" or an age word; "5 years" alone is a time span */
        if (!explicit_age && !(person && nc.had_cmp) && !strstr(p->t[k + nc.len - 1].low, "old") &&
            !tok_is(p, k + nc.len, "old"))
            return 0;
        if (tok_is(p, i + total, "old"))
            total++;
    } else if (nc.unit != U_NONE) {
        return 0;
    } else if (!explicit_age && !(person && nc.had_cmp)) {
        return 0;
    } else if (tok_is(p, i + total, "old")) {
        total++;
    }
    char words[256];
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    add_age(p, &nc, words);
    return total;
}

/* A number with a unit and no field: 2.5 mm → slice thickness, 120 kV → kVp,
 * more than 100 images → number of instances. */
static size_t rule_numeric_unit(parser_t *p, size_t i)
{
    numc_t nc;
    if (!parse_numc(p, i, &nc) || nc.unit == U_YEARS)
        return 0;
    size_t total = nc.len;
    if (nc.unit == U_NONE && nc.had_cmp && tok_is(p, i + total, "series")) {
        nc.unit = U_SERIES; /* "studies with more than 2 series" */
        total++;
    }
    if (nc.unit == U_NONE)
        return 0;
    const char *path = NULL, *label = NULL, *unit = NULL;
    if (nc.unit == U_MM) {
        path = "slice_thickness", label = "slice thickness", unit = "mm";
        total += phrase_at(p, i + total, "slice*|section*|thick|thickness|cut*|sliced|thin");
    } else if (nc.unit == U_KV) {
        path = "kvp", label = "kVp", unit = "kV";
    } else if (nc.unit == U_SERIES) {
        path = "series_count", label = "number of series";
    } else {
        if (!nc.had_cmp && !phrase_at(p, i + total, "or more|or less|each|per series|in total"))
            return 0; /* "3 images" alone is too vague */
        path = "instance_count", label = "number of instances";
    }
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    numc_to_cond(c, &nc);
    c->label = strdup(label);
    c->unit = unit;
    cond_field(p, c, path);
    char words[256];
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    cond_commit(p, words);
    return total;
}

static size_t rule_thin_thick(parser_t *p, size_t i)
{
    size_t n;
    bool thin;
    if ((n = phrase_at(p, i, "thin|thinly|thin slice*|thin section*|thin cut*|thinly sliced|thin sliced|"
                             "high resolution|hi res|high res|thin layer*|fine slice*|thin slab*"))) {
        thin = true;
    } else if ((n = phrase_at(p, i, "thick|thick slice*|thick section*|thick cut*|thickly sliced|thick sliced"))) {
        thin = false;
    } else {
        return 0;
    }
    if (tok_is(p, i + n, "than") || tok_is(p, i + n, "then"))
        return 0;
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    c->kind = C_RANGE;
    if (thin) {
        c->hi = json_real(MDB_NL_THIN_SLICE_MM);
        c->hi_incl = true;
    } else {
        c->lo = json_real(MDB_NL_THIN_SLICE_MM);
        c->lo_incl = false;
    }
    c->unit = "mm";
    c->label = strdup("slice thickness");
    char words[128];
    words_text(p, i, n, words, sizeof words);
    char nt[200];
    snprintf(nt, sizeof nt, "\"%s\": default threshold %.1f mm", words, MDB_NL_THIN_SLICE_MM);
    u8trim(nt);
    c->note = strdup(nt);
    cond_field(p, c, "slice_thickness");
    mark_used(p, i, n);
    cond_commit(p, words);
    return n;
}

/* ======================================================================
 * names: modality, body part, manufacturer, sex, contrast
 * ====================================================================== */

typedef struct {
    const char *phrases;
    const char *codes; /* space separated */
    bool upper_only;   /* ambiguous English word: only when typed in capitals */
} synonym_t;

static const synonym_t MODALITIES[] = {
    {"computed tomography|ct|cts|ct scan*|cat scan*|computerized tomography|computerised tomography|"
     "computed tomographies|multislice ct|mdct|msct|ldct|low dose ct",
     "CT", false},
    {"magnetic resonance|magnetic resonance imaging|mri|mris|mr|nmr|mri scan*|mr scan*", "MR", false},
    {"x ray*|xray*|x rays|radiograph*|radiography|plain film*|plain radiograph*|projection radiography|"
     "roentgen*",
     "CR DX", false},
    {"computed radiography|cr", "CR", false},
    {"digital radiography|digital x ray*|digital radiograph*|dx", "DX", false},
    {"pet|positron emission tomography|pet scan*", "PT", false},
    {"pt", "PT", true},
    {"ultrasound|sonography|ultrasonography|echography|sonogram*|ultrasound scan*", "US", false},
    {"us", "US", true},
    {"mammography|mammogram*|mammo|mammograph*", "MG", false},
    {"mg", "MG", true},
    {"nuclear medicine|scintigraphy|spect", "NM", false},
    {"nm", "NM", true},
    {"angiography|angiogram*|xa", "XA", false},
    {"segmentation*|seg", "SEG", false},
    {"structured report*", "SR", false},
    {"sr", "SR", true},
    {"rtstruct|rt struct|rt structure set*", "RTSTRUCT", false},
    {"ot", "OT", true},
};

typedef struct {
    const char *phrases;
    const char *canonical;
    const char *group; /* stored spellings that mean the same, space separated */
} bodypart_t;

static const bodypart_t BODYPARTS[] = {
    {"chest|chests|thorax|thoracic|lung*|pulmonary|thoraces|chest wall", "CHEST", "CHEST THORAX LUNG LUNGS"},
    {"head|brain*|skull|cranial|cranium|neuro|cerebral|intracranial", "HEAD", "HEAD BRAIN SKULL"},
    {"abdomen|abdominal|abdomens|belly", "ABDOMEN", "ABDOMEN ABD"},
    {"pelvis|pelvic", "PELVIS", "PELVIS"},
    {"neck|cervical", "NECK", "NECK CSPINE"},
    {"breast*|mammary", "BREAST", "BREAST"},
    {"heart|cardiac|coronary|coronaries", "HEART", "HEART CARDIAC"},
    {"spine|spinal|vertebral|back", "SPINE", "SPINE LSPINE TSPINE CSPINE"},
    {"knee*", "KNEE", "KNEE"},
    {"liver|hepatic", "LIVER", "LIVER"},
    {"extremity|extremities|limb*|arm*|leg*", "EXTREMITY", "EXTREMITY"},
    {"whole body|wholebody|total body", "WHOLEBODY", "WHOLEBODY"},
};

typedef struct {
    const char *phrases;
    const char *key; /* upper-case word a stored manufacturer starts with or contains */
} maker_t;

static const maker_t MAKERS[] = {
    {"ge|general electric|ge medical|ge medical systems|ge healthcare|g e", "GE"},
    {"siemens|siemens healthineers|siemens healthcare|siemens medical", "SIEMENS"},
    {"philips|philips medical|philips healthcare", "PHILIPS"},
    {"toshiba", "TOSHIBA"},
    {"canon|canon medical", "CANON"},
    {"hitachi", "HITACHI"},
    {"fuji|fujifilm|fuji film", "FUJI|FUJIFILM"},
    {"agfa", "AGFA"},
    {"kodak", "KODAK"},
    {"carestream", "CARESTREAM"},
    {"konica|konica minolta", "KONICA"},
    {"hologic", "HOLOGIC"},
    {"samsung", "SAMSUNG"},
    {"imatron", "IMATRON"},
    {"picker", "PICKER"},
    {"elscint", "ELSCINT"},
    {"marconi", "MARCONI"},
    {"varian", "VARIAN"},
};

/* Does stored value `val` belong to maker key (word-start match,
 * case-insensitive)? key may list spellings: "FUJI|FUJIFILM". */
static bool maker_matches(const char *val, const char *keys)
{
    const char *bar = strchr(keys, '|');
    if (bar) {
        char first[64];
        snprintf(first, sizeof first, "%.*s", (int)(bar - keys), keys);
        if (maker_matches(val, first))
            return true;
        return maker_matches(val, bar + 1);
    }
    const char *key = keys;
    size_t kl = strlen(key);
    for (const char *s = val; *s; s++) {
        if ((s == val || !isalnum((unsigned char)s[-1])) && !strncasecmp(s, key, kl) &&
            !isalnum((unsigned char)s[kl]))
            return true;
    }
    return false;
}

static bool modality_fields(parser_t *p, cond_t *c)
{
    const char *study = mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "modalities", NULL) ? "modalities"
                        : mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "modality", NULL) ? "modality"
                                                                                           : NULL;
    const char *paths[NL_LEVELS] = {study,
                                    mdb_nl_vocab_has_field(p->v, MDB_QUERY_SERIES, "modality", NULL) ? "modality" : NULL,
                                    mdb_nl_vocab_has_field(p->v, MDB_QUERY_INSTANCES, "modality", NULL) ? "modality"
                                                                                                      : NULL};
    bool any = false;
    for (int l = 0; l < NL_LEVELS; l++)
        if (paths[l]) {
            c->paths[l] = strdup(paths[l]);
            any = true;
        }
    return any;
}

static void add_modalities(parser_t *p, const char *codes, const char *words)
{
    cond_t *c = cond_new(p);
    if (!c)
        return;
    c->kind = C_IN;
    c->values = json_array();
    char buf[64];
    snprintf(buf, sizeof buf, "%s", codes);
    for (char *save = NULL, *tkn = strtok_r(buf, " ", &save); tkn; tkn = strtok_r(NULL, " ", &save))
        json_array_append_new(c->values, json_string(tkn));
    c->label = strdup("modality");
    modality_fields(p, c);
    cond_commit(p, words);
}

static size_t rule_modality(parser_t *p, size_t i)
{
    size_t best = 0, which = 0;
    for (size_t m = 0; m < sizeof MODALITIES / sizeof MODALITIES[0]; m++) {
        size_t n = phrase_at(p, i, MODALITIES[m].phrases);
        if (n > best && (!MODALITIES[m].upper_only || p->t[i].upper)) {
            best = n;
            which = m;
        }
    }
    if (best) {
        char words[128];
        words_text(p, i, best, words, sizeof words);
        mark_used(p, i, best);
        add_modalities(p, MODALITIES[which].codes, words);
        return best;
    }
    /* any modality code seen in the data, typed in capitals ("SEG", "RTSTRUCT") */
    const tok_t *t = &p->t[i];
    if ((t->kind == T_WORD || t->kind == T_ID) && t->upper && strlen(t->text) >= 2) {
        size_t nv = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, "modality", &nv);
        for (size_t k = 0; k < nv; k++)
            if (!strcmp(vals[k], t->text)) {
                mark_used(p, i, 1);
                add_modalities(p, vals[k], t->text);
                return 1;
            }
    }
    return 0;
}

static size_t rule_body_part(parser_t *p, size_t i)
{
    size_t best = 0, which = 0;
    for (size_t b = 0; b < sizeof BODYPARTS / sizeof BODYPARTS[0]; b++) {
        size_t n = phrase_at(p, i, BODYPARTS[b].phrases);
        if (n > best) {
            best = n;
            which = b;
        }
    }
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, "body_part_examined", &nv);
    if (!best) {
        /* a body part spelled as stored ("CHEST_ABDOMEN") */
        const tok_t *t = &p->t[i];
        if (t->kind != T_WORD && t->kind != T_ID)
            return 0;
        for (size_t k = 0; k < nv; k++)
            if (!strcasecmp(vals[k], t->text) && strlen(vals[k]) >= 3) {
                mark_used(p, i, 1);
                add_in_strings(p, "body_part_examined", "body part examined", &vals[k], 1, t->text);
                return 1;
            }
        return 0;
    }
    const bodypart_t *bp = &BODYPARTS[which];
    const char *chosen[16];
    size_t nchosen = 0;
    chosen[nchosen++] = bp->canonical;
    for (size_t k = 0; k < nv && nchosen < 16; k++) {
        char grp[96];
        snprintf(grp, sizeof grp, "%s", bp->group);
        for (char *save = NULL, *g = strtok_r(grp, " ", &save); g; g = strtok_r(NULL, " ", &save))
            if (!strcasecmp(vals[k], g) && strcmp(vals[k], bp->canonical)) {
                chosen[nchosen++] = vals[k];
                break;
            }
    }
    char words[128];
    words_text(p, i, best, words, sizeof words);
    mark_used(p, i, best);
    add_in_strings(p, "body_part_examined", "body part examined", chosen, nchosen, words);
    return best;
}

/* Tokenize a stored value the same way as sentences, for phrase comparison. */
static size_t value_matches_at(const parser_t *p, size_t i, const char *value)
{
    toks_t vt = {0};
    tokenize(value, &vt);
    size_t k = 0;
    bool ok = vt.n > 0 && !vt.oom;
    for (; ok && k < vt.n; k++) {
        if (i + k >= p->n || p->t[i + k].used || strcmp(p->t[i + k].low, vt.t[k].low))
            ok = false;
    }
    size_t n = ok ? vt.n : 0;
    toks_free(&vt);
    return n;
}

static size_t rule_manufacturer(parser_t *p, size_t i)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, "manufacturer", &nv);
    size_t best = 0;
    const char *key = NULL;
    for (size_t m = 0; m < sizeof MAKERS / sizeof MAKERS[0]; m++) {
        size_t n = phrase_at(p, i, MAKERS[m].phrases);
        if (n > best) {
            best = n;
            key = MAKERS[m].key;
        }
    }
    /* a stored name typed in full ("GE MEDICAL SYSTEMS") beats an alias */
    const char *full = NULL;
    for (size_t k = 0; k < nv; k++) {
        size_t n = value_matches_at(p, i, vals[k]);
        if (n > best || (n && n == best && !full)) {
            best = n;
            full = vals[k];
        }
    }
    /* the first word of a stored name ("Philips" of "Philips Medical Systems") */
    if (!best && (p->t[i].kind == T_WORD) && strlen(p->t[i].low) >= 3 && !is_stopword(p->t[i].low)) {
        for (size_t k = 0; k < nv; k++) {
            if (maker_matches(vals[k], p->t[i].text) && !strncasecmp(vals[k], p->t[i].text, strlen(p->t[i].text))) {
                best = 1;
                key = p->t[i].text;
                break;
            }
        }
    }
    if (!best)
        return 0;
    size_t total = best;
    total += phrase_at(p, i + total, "scanner*|machine*|system*|device*|equipment|unit*|vendor*|manufacturer*");
    char words[200];
    words_text(p, i, best, words, sizeof words);
    const char *chosen[64];
    size_t nchosen = 0;
    if (full) {
        chosen[nchosen++] = full;
    } else {
        for (size_t k = 0; k < nv && nchosen < 64; k++)
            if (maker_matches(vals[k], key))
                chosen[nchosen++] = vals[k];
    }
    mark_used(p, i, total);
    if (nchosen) {
        add_in_strings(p, "manufacturer", "manufacturer", chosen, nchosen, words);
        return total;
    }
    /* no such maker in the data: a case-insensitive word match still says so honestly */
    cond_t *c = cond_new(p);
    if (!c)
        return total;
    c->kind = C_REGEX;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, "(^|[^A-Za-z0-9])(");
    for (const char *s = key; *s; s++) {
        if (*s != '|' && strchr(".^$()[]{}*+?\\", *s))
            mdb_nl_buf_add(&b, "\\");
        char ch[2] = {*s, 0};
        mdb_nl_buf_add(&b, ch);
    }
    mdb_nl_buf_add(&b, ")([^A-Za-z0-9]|$)");
    c->regex = mdb_nl_buf_steal(&b);
    char shown[160];
    snprintf(shown, sizeof shown, "mentions \"%s\"", key);
    u8trim(shown);
    c->regex_shown = strdup(shown);
    c->label = strdup("manufacturer");
    c->note = strdup("no such manufacturer seen in the data");
    cond_field(p, c, "manufacturer");
    cond_commit(p, words);
    return total;
}

static size_t rule_sex(parser_t *p, size_t i)
{
    size_t n;
    const char *code;
    if ((n = phrase_at(p, i, "male|males|men|man|boy*|gentlemen"))) {
        code = "M";
    } else if ((n = phrase_at(p, i, "female|females|women|woman|girl*|ladies"))) {
        code = "F";
    } else {
        return 0;
    }
    char words[128];
    words_text(p, i, n, words, sizeof words);
    mark_used(p, i, n);
    add_in_strings(p, "metadata.PatientSex", "PatientSex", &code, 1, words);
    return n;
}

static const char *const NO_CONTRAST_VALUES[] = {"", "NONE", "None", "none", "NO", "No", "no", "N/A", "n/a", NULL};

static size_t rule_contrast(parser_t *p, size_t i)
{
    size_t n;
    bool negative = false;
    if ((n = phrase_at(p, i, "noncontrast|unenhanced|nonenhanced|precontrast|pre contrast|plain ct|native ct|"
                             "non contrast|non enhanced"))) {
        negative = true;
        if (!strcmp(p->t[i].low, "plain") || !strcmp(p->t[i].low, "native"))
            n = 1; /* leave "CT" for the modality rule */
    } else if (!(n = phrase_at(p, i,
                               "contrast|contrast enhanced|enhanced|with contrast|iv contrast|contrast agent*|"
                               "contrast media|contrast medium|postcontrast|post contrast|contrasted|"
                               "contrast material|contrast bolus|contrastbolusagent|contrast bolus agent|"
                               "contrast enhancement"))) {
        return 0;
    }
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    c->kind = C_PRESENT;
    c->absent = json_array();
    for (int k = 0; NO_CONTRAST_VALUES[k]; k++)
        json_array_append_new(c->absent, json_string(NO_CONTRAST_VALUES[k]));
    c->neg = negative;
    c->label = strdup("ContrastBolusAgent");
    cond_field(p, c, "metadata.ContrastBolusAgent");
    char words[128];
    words_text(p, i, n, words, sizeof words);
    mark_used(p, i, n);
    cond_commit(p, words);
    return n;
}

/* ======================================================================
 * identifiers: patients, accessions, UIDs, collections
 * ====================================================================== */

static bool has_wildcard(const char *s)
{
    return strchr(s, '*') || strchr(s, '?');
}

/* DICOM wildcard (* ?) → anchored regex body, other characters escaped. */
static void wildcard_regex(mdb_nl_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '*')
            mdb_nl_buf_add(b, ".*");
        else if (*s == '?')
            mdb_nl_buf_add(b, ".");
        else {
            if (strchr(".^$|()[]{}+\\/", *s))
                mdb_nl_buf_add(b, "\\");
            char ch[2] = {*s, 0};
            mdb_nl_buf_add(b, ch);
        }
    }
}

/* Read an identifier value at i: an ID/number/UID/quoted token, or a word
 * compound ("LIDC-IDRI"). Returns tokens read; *out is malloc'd. */
static size_t read_ident(const parser_t *p, size_t i, bool allow_word, char **out)
{
    *out = NULL;
    if (i >= p->n || p->t[i].used)
        return 0;
    const tok_t *t = &p->t[i];
    if (t->kind == T_ID || t->kind == T_NUM || t->kind == T_UID || t->kind == T_QUOTED || t->kind == T_DATE) {
        *out = strdup(t->text);
        return 1;
    }
    if (t->kind != T_WORD || !allow_word || is_stopword(t->low) || phrase_at(p, i, CONNECTORS) ||
        phrase_at(p, i, NEGATIONS) || phrase_at(p, i, LEVEL_WORDS))
        return 0;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, t->text);
    size_t k = i + 1;
    while (k < p->n && p->t[k].glued && p->t[k].kind == T_WORD && !p->t[k].used) {
        mdb_nl_buf_add(&b, "-");
        mdb_nl_buf_add(&b, p->t[k].text);
        k++;
    }
    *out = mdb_nl_buf_steal(&b);
    return k - i;
}

/* Map typed identifiers onto stored spellings (case-insensitive) when the
 * vocabulary knows the field's values. */
static const char *stored_spelling(const parser_t *p, const char *path, const char *typed)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, path, &nv);
    for (size_t k = 0; k < nv; k++)
        if (!strcmp(vals[k], typed))
            return vals[k];
    for (size_t k = 0; k < nv; k++)
        if (!strcasecmp(vals[k], typed))
            return vals[k];
    return typed;
}

/* A list of identifiers for path: values joined by , and or; wildcards
 * become one anchored regex alternation. */
static size_t ident_list(parser_t *p, size_t i, const char *path, const char *label, bool allow_word, size_t lead)
{
    size_t k = i;
    char *vals[64];
    size_t nv = 0;
    bool wild = false;
    while (nv < 64) {
        char *val = NULL;
        size_t n = read_ident(p, k, allow_word, &val);
        if (!n) {
            free(val);
            break;
        }
        if (has_wildcard(val))
            wild = true;
        vals[nv++] = val;
        k += n;
        size_t sep = phrase_at(p, k, "and|or|,|nor");
        size_t sep2 = sep ? phrase_at(p, k + sep, "and|or") : 0;
        char *peek = NULL;
        size_t more = sep ? read_ident(p, k + sep + sep2, allow_word, &peek) : 0;
        free(peek);
        if (!more)
            break;
        k += sep + sep2;
    }
    if (!nv)
        return 0;
    size_t total = k - i;
    char words[256];
    words_text(p, i - lead, total + lead, words, sizeof words);
    mark_used(p, i - lead, total + lead);
    cond_t *c = cond_new(p);
    if (!c)
        goto done;
    c->label = strdup(label);
    cond_field(p, c, path);
    if (wild) {
        mdb_nl_buf_t b = {0};
        mdb_nl_buf_add(&b, "^(");
        for (size_t k2 = 0; k2 < nv; k2++) {
            if (k2)
                mdb_nl_buf_add(&b, "|");
            wildcard_regex(&b, vals[k2]);
        }
        mdb_nl_buf_add(&b, ")$");
        c->kind = C_REGEX;
        c->regex = mdb_nl_buf_steal(&b);
        mdb_nl_buf_t s = {0};
        mdb_nl_buf_add(&s, "matches ");
        for (size_t k2 = 0; k2 < nv; k2++)
            mdb_nl_buf_addf(&s, "%s%s", k2 ? " or " : "", vals[k2]);
        c->regex_shown = mdb_nl_buf_steal(&s);
    } else {
        c->kind = C_IN;
        c->values = json_array();
        for (size_t k2 = 0; k2 < nv; k2++)
            json_array_append_new(c->values, json_string(stored_spelling(p, path, vals[k2])));
    }
    cond_commit(p, words);
done:
    for (size_t k2 = 0; k2 < nv; k2++)
        free(vals[k2]);
    return total + lead;
}

static size_t rule_patient(parser_t *p, size_t i)
{
    size_t n = phrase_at(p, i,
                         "patient|patients|patient id|patient ids|patientid|patient ID|subject*|subject id*|case|"
                         "cases|case id*|participant*|pid|mrn|patient number|patient no");
    if (!n)
        return 0;
    size_t k = i + n;
    k += phrase_at(p, k, "id|ids|number|numbers|no|#|:|=|is|with id|with ids|named|called|with patient id");
    return ident_list(p, k, "patient_id", "patient id", false, k - i);
}

static size_t rule_accession(parser_t *p, size_t i)
{
    size_t n = phrase_at(p, i,
                         "accession|accessions|accession number*|accession no|accession nr|acc no|acc|accession #|"
                         "accessionnumber|accession id*");
    if (!n)
        return 0;
    size_t k = i + n;
    k += phrase_at(p, k, "number*|no|#|:|=|is|of|id");
    return ident_list(p, k, "accession_number", "accession number", false, k - i);
}

static size_t rule_collection(parser_t *p, size_t i)
{
    size_t n = phrase_at(p, i, "collection|collections|project|projects|cohort|cohorts|in collection|from collection");
    if (!n)
        return 0;
    size_t k = i + n;
    k += phrase_at(p, k, ":|=|is|named|called|id");
    return ident_list(p, k, "collection_ids", "collection", true, k - i);
}

typedef struct {
    const char *phrases;
    int level;
} uidphrase_t;

static const uidphrase_t UIDPHRASES[] = {
    {"study|studies|study uid|study instance uid|studyinstanceuid|study uids|exam|examination", MDB_QUERY_STUDIES},
    {"series|series uid|series instance uid|seriesinstanceuid|series uids", MDB_QUERY_SERIES},
    {"instance|instances|image|images|sop instance uid|sop uid|sopinstanceuid|instance uid|image uid|"
     "sop instance*|slice|file",
     MDB_QUERY_INSTANCES},
};

/* The field holding the UID of level `of` in documents of each level. */
static void uid_paths(parser_t *p, cond_t *c, int of)
{
    static const char *const links[NL_LEVELS][NL_LEVELS] = {
        /* of study */ {"_id", "study_id", "study_id"},
        /* of series */ {NULL, "_id", "series_id"},
        /* of instance */ {NULL, NULL, "_id"},
    };
    for (int l = 0; l < NL_LEVELS; l++) {
        const char *f = links[of][l];
        if (f && (!strcmp(f, "_id") || mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, f, NULL))) {
            c->paths[l] = strdup(f);
            if (!c->paths[l])
                p->oom = true;
        }
    }
}

static size_t rule_uid(parser_t *p, size_t i)
{
    int of = -1;
    size_t n = 0;
    for (size_t u = 0; u < sizeof UIDPHRASES / sizeof UIDPHRASES[0]; u++) {
        size_t m = phrase_at(p, i, UIDPHRASES[u].phrases);
        if (m > n) {
            n = m;
            of = UIDPHRASES[u].level;
        }
    }
    size_t k = i + n;
    if (n)
        k += phrase_at(p, k, "uid|uids|instance uid|id|:|=|is|with uid|number");
    if (k >= p->n || p->t[k].kind != T_UID || p->t[k].used)
        return 0;
    /* a list of UIDs */
    size_t j = k;
    json_t *vals = json_array();
    while (j < p->n && p->t[j].kind == T_UID && !p->t[j].used) {
        json_array_append_new(vals, json_string(p->t[j].text));
        j++;
        size_t sep = phrase_at(p, j, "and|or|,");
        if (sep && j + sep < p->n && p->t[j + sep].kind == T_UID)
            j += sep;
    }
    cond_t *c = cond_new(p);
    if (!c) {
        json_decref(vals);
        return 0;
    }
    c->kind = C_IN;
    c->values = vals;
    if (of < 0) {
        /* a bare UID: the documents' own UID at whatever level is asked for */
        for (int l = 0; l < NL_LEVELS; l++)
            c->paths[l] = strdup("_id");
        c->flexible = true;
        c->label = strdup("UID");
    } else {
        uid_paths(p, c, of);
        c->label = strdup(of == MDB_QUERY_STUDIES ? "StudyInstanceUID"
                          : of == MDB_QUERY_SERIES ? "SeriesInstanceUID"
                                                   : "SOPInstanceUID");
    }
    char words[256];
    words_text(p, i, j - i, words, sizeof words);
    mark_used(p, i, j - i);
    cond_commit(p, words);
    return j - i;
}

/* ======================================================================
 * free text, generic fields, values spotted from the data, level words
 * ====================================================================== */

static void regex_escape(mdb_nl_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (strchr(".^$|()[]{}*+?\\/", *s))
            mdb_nl_buf_add(b, "\\");
        char ch[2] = {*s, 0};
        mdb_nl_buf_add(b, ch);
    }
}

/* Consecutive plain words (no filler, connector, negation) as one value. */
static size_t read_text_value(const parser_t *p, size_t i, char **out)
{
    *out = NULL;
    if (i >= p->n || p->t[i].used)
        return 0;
    if (p->t[i].kind == T_QUOTED) {
        *out = strdup(p->t[i].text);
        return 1;
    }
    mdb_nl_buf_t b = {0};
    size_t k = i;
    while (k < p->n && !p->t[k].used &&
           (p->t[k].kind == T_WORD || p->t[k].kind == T_ID || p->t[k].kind == T_NUM) &&
           !(p->t[k].kind == T_WORD && (is_stopword(p->t[k].low) || phrase_at(p, k, CONNECTORS) ||
                                        phrase_at(p, k, NEGATIONS) || phrase_at(p, k, "series|studies|images|study")))) {
        if (k > i)
            mdb_nl_buf_add(&b, p->t[k].glued ? "-" : " ");
        mdb_nl_buf_add(&b, p->t[k].text);
        k++;
    }
    if (k == i) {
        mdb_nl_buf_free(&b);
        return 0;
    }
    *out = mdb_nl_buf_steal(&b);
    return k - i;
}

typedef enum { M_EQ, M_CONTAINS, M_PREFIX } match_t;

static size_t text_operator(const parser_t *p, size_t i, match_t *m, bool *neg)
{
    size_t n;
    *m = M_EQ;
    *neg = false;
    if ((n = phrase_at(p, i, "does not contain|doesn't contain|not containing|without|not like|not matching"))) {
        *m = M_CONTAINS;
        *neg = true;
        return n;
    }
    if ((n = phrase_at(p, i, "is not|isn't|!=|!|not|other than|not equal to|is other than"))) {
        *neg = true;
        return n;
    }
    if ((n = phrase_at(p, i, "contains|containing|contain|including|includes|with|like|matching|mentioning|"
                             "mentions|that contains|that mention*|with the word*|has|having"))) {
        *m = M_CONTAINS;
        return n;
    }
    if ((n = phrase_at(p, i, "starts with|starting with|begins with|beginning with|start with|prefix"))) {
        *m = M_PREFIX;
        return n;
    }
    return phrase_at(p, i, "is|=|:|equals|equal to|of|was|as|being|set to");
}

static void add_text_cond(parser_t *p, const char *paths[NL_LEVELS], bool flexible, const char *label,
                          const char *val, match_t m, bool neg, const char *words)
{
    cond_t *c = cond_new(p);
    if (!c)
        return;
    for (int l = 0; l < NL_LEVELS; l++)
        if (paths[l] && mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, paths[l], NULL))
            c->paths[l] = strdup(paths[l]);
    c->flexible = flexible;
    c->label = strdup(label);
    c->kind = C_REGEX;
    mdb_nl_buf_t b = {0};
    if (has_wildcard(val)) {
        mdb_nl_buf_add(&b, "^");
        wildcard_regex(&b, val);
        mdb_nl_buf_add(&b, "$");
    } else {
        if (m != M_CONTAINS)
            mdb_nl_buf_add(&b, "^");
        regex_escape(&b, val);
        if (m == M_EQ)
            mdb_nl_buf_add(&b, "$");
    }
    c->regex = mdb_nl_buf_steal(&b);
    mdb_nl_buf_t shown = {0};
    mdb_nl_buf_addf(&shown, "%s \"%s\"",
                    has_wildcard(val) ? "matches" : m == M_CONTAINS ? "contains" : m == M_PREFIX ? "starts with" : "is",
                    val);
    c->regex_shown = mdb_nl_buf_steal(&shown);
    c->note = strdup("case-insensitive");
    c->neg = neg;
    c->eq_regex = m == M_EQ;
    cond_commit(p, words);
}

static size_t rule_description(parser_t *p, size_t i)
{
    size_t n;
    const char *paths[NL_LEVELS] = {NULL, NULL, NULL};
    const char *label = "description";
    bool flexible = false;
    if ((n = phrase_at(p, i, "study description|studydescription|study descriptions|study desc"))) {
        paths[0] = "study_description";
        label = "study description";
    } else if ((n = phrase_at(p, i, "series description|seriesdescription|series descriptions|series desc"))) {
        paths[1] = "series_description";
        label = "series description";
    } else if ((n = phrase_at(p, i, "protocol|protocol name|protocolname|protocols"))) {
        paths[1] = "protocol_name";
        label = "protocol name";
    } else if ((n = phrase_at(p, i, "description|descriptions|described as|labeled|labelled|labeled as|"
                                    "labelled as|titled|named|called|desc|with description|described"))) {
        paths[0] = "study_description";
        paths[1] = "series_description";
        flexible = true;
    } else if (p->t[i].kind == T_QUOTED) {
        paths[0] = "study_description";
        paths[1] = "series_description";
        flexible = true;
        n = 0;
    } else {
        return 0;
    }
    match_t m;
    bool neg;
    size_t k = i + n;
    size_t op = text_operator(p, k, &m, &neg);
    k += op;
    if (n && !op && strncmp(p->t[i].low, "desc", 4) && strncmp(p->t[i].low, "prot", 4) &&
        strcmp(p->t[i].low, "study") && strcmp(p->t[i].low, "series"))
        m = M_CONTAINS; /* "labeled X", "called X": contains */
    if (!n)
        m = M_CONTAINS;
    if (n && !op && m == M_EQ)
        m = M_CONTAINS;
    char *val = NULL;
    size_t vl = read_text_value(p, k, &val);
    if (!vl) {
        free(val);
        return 0;
    }
    size_t total = k + vl - i;
    char words[300];
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    add_text_cond(p, paths, flexible, label, val, m, neg, words);
    free(val);
    return total;
}

/* Fields with a dedicated rule; the generic field rule leaves them alone. */
static bool dedicated_field(const char *path)
{
    static const char *const ded[] = {
        "modality", "modalities", "body_part_examined", "manufacturer", "study_date", "series_date",
        "slice_thickness", "kvp", "patient_id", "accession_number", "study_instance_uid", "series_instance_uid",
        "sop_instance_uid", "collection_ids", "instance_count", "series_number", "instance_number",
        "study_description", "series_description", "protocol_name", "study_id", "series_id", "job_ids",
        "metadata.Modality", "metadata.ModalitiesInStudy", "metadata.BodyPartExamined", "metadata.Manufacturer",
        "metadata.StudyDate", "metadata.SeriesDate", "metadata.SliceThickness", "metadata.KVP",
        "metadata.PatientID", "metadata.AccessionNumber", "metadata.StudyInstanceUID",
        "metadata.SeriesInstanceUID", "metadata.SOPInstanceUID", "metadata.ContrastBolusAgent",
        "metadata.PatientSex", "metadata.SeriesNumber", "metadata.InstanceNumber", "metadata.StudyDescription",
        "metadata.SeriesDescription", "metadata.ProtocolName", "metadata.PatientAge", "metadata.PatientBirthDate",
        NULL};
    for (int i = 0; ded[i]; i++)
        if (!strcmp(ded[i], path))
            return true;
    return false;
}

/* Words of a field path: "manufacturer_model_name" → "manufacturer model name",
 * "metadata.ConvolutionKernel" → "convolution kernel". Lower case. */
static void field_words(const char *path, char *out, size_t cap)
{
    const char *s = strncmp(path, "metadata.", 9) ? path : path + 9;
    size_t len = 0;
    for (size_t i = 0; s[i] && len + 2 < cap; i++) {
        char c = s[i];
        bool boundary = i > 0 && isupper((unsigned char)c) &&
                        (islower((unsigned char)s[i - 1]) ||
                         (isupper((unsigned char)s[i - 1]) && s[i + 1] && islower((unsigned char)s[i + 1])));
        if (c == '_' || c == '.') {
            out[len++] = ' ';
            continue;
        }
        if (boundary)
            out[len++] = ' ';
        out[len++] = (char)tolower((unsigned char)c);
    }
    out[len] = '\0';
}

static mdb_qfield_type_t field_type_any_level(const mdb_nl_vocab_t *v, const char *path)
{
    mdb_qfield_type_t t = MDB_QFIELD_STRING;
    for (int l = 0; l < NL_LEVELS; l++)
        if (mdb_nl_vocab_has_field(v, (mdb_query_level_t)l, path, &t))
            return t;
    return t;
}

static size_t generic_value(parser_t *p, size_t i, size_t k, const char *best_path, mdb_qfield_type_t type,
                            const char *label_in, match_t m, bool neg);

/* "kernel B30f or B50f": a further value of the last generic field. */
static size_t generic_more(parser_t *p, size_t i, bool stored_only)
{
    if (!p->cont || !p->last_generic[0] || (p->t[i].kind == T_WORD && is_stopword(p->t[i].low)))
        return 0;
    if (stored_only) {
        size_t nv = 0, hit = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, p->last_generic, &nv);
        for (size_t j = 0; j < nv && !hit; j++)
            hit = value_matches_at(p, i, vals[j]);
        if (!hit)
            return 0;
    }
    char path[200];
    snprintf(path, sizeof path, "%s", p->last_generic);
    mdb_qfield_type_t type = field_type_any_level(p->v, path);
    if (type == MDB_QFIELD_NUMBER || type == MDB_QFIELD_DATE)
        return 0;
    char *label = field_label(path);
    size_t n = label ? generic_value(p, i, i, path, type, label, M_EQ, false) : 0;
    free(label);
    return n;
}

/* Before the other rules: a stored value of the listed field ("kernel B30f or LUNG"). */
static size_t rule_generic_more_stored(parser_t *p, size_t i)
{
    return generic_more(p, i, true);
}

static size_t rule_generic_more(parser_t *p, size_t i)
{
    return generic_more(p, i, false);
}

static size_t rule_generic_field(parser_t *p, size_t i)
{
    const char *best_path = NULL;
    size_t best = 0;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const char *path = p->v->fields[l][f].path;
            if (dedicated_field(path))
                continue;
            char words[160], alt[300];
            field_words(path, words, sizeof words);
            const char *kw = strncmp(path, "metadata.", 9) ? path : path + 9;
            snprintf(alt, sizeof alt, "%s|%.*s", words, 100, kw);
            for (char *c = alt; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            size_t n = phrase_at(p, i, alt);
            if (n > best) {
                best = n;
                best_path = path;
            }
        }
    }
    /* everyday names of a few fields */
    static const struct {
        const char *phrases;
        const char *path;
    } aliases[] = {
        {"kernel|kernels|reconstruction kernel|recon kernel|reconstruction filter", "metadata.ConvolutionKernel"},
        {"station|stations|station name", "metadata.StationName"},
        {"institution|institutions|hospital|hospitals|site|sites", "metadata.InstitutionName"},
        {"model|models|scanner model|model name|scanner type", "manufacturer_model_name"},
        {"software|software version*", "metadata.SoftwareVersions"},
    };
    for (size_t a = 0; a < sizeof aliases / sizeof aliases[0]; a++) {
        size_t n = phrase_at(p, i, aliases[a].phrases);
        bool known = false;
        for (int l = 0; l < NL_LEVELS; l++)
            known = known || mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, aliases[a].path, NULL);
        if (n > best && known) {
            best = n;
            best_path = aliases[a].path;
        }
    }
    if (!best)
        return 0;
    mdb_qfield_type_t type = field_type_any_level(p->v, best_path);
    size_t k = i + best;
    char *label = field_label(best_path);
    size_t total = 0;
    char words[300];
    if (type == MDB_QFIELD_NUMBER) {
        k += phrase_at(p, k, "of|is|=|:|was|were|at|with|set to|being");
        numc_t nc;
        if (parse_numc(p, k, &nc)) {
            total = k + nc.len - i;
            cond_t *c = cond_new(p);
            if (c) {
                numc_to_cond(c, &nc);
                c->label = label;
                label = NULL;
                cond_field(p, c, best_path);
                words_text(p, i, total, words, sizeof words);
                mark_used(p, i, total);
                cond_commit(p, words);
            }
        }
        free(label);
        return total;
    }
    if (type == MDB_QFIELD_DATE) {
        free(label);
        return 0; /* dates go through rule_date's prefixes */
    }
    match_t m;
    bool neg;
    k += text_operator(p, k, &m, &neg);
    size_t vlen = generic_value(p, i, k, best_path, type, label, m, neg);
    free(label);
    return vlen ? k + vlen - i : 0;
}

/* Is the word at k one another rule reads (a modality, body part, maker,
 * level or negation word)? */
static bool known_elsewhere(const parser_t *p, size_t k)
{
    for (size_t m = 0; m < sizeof MODALITIES / sizeof MODALITIES[0]; m++)
        if (phrase_at(p, k, MODALITIES[m].phrases) && (!MODALITIES[m].upper_only || p->t[k].upper))
            return true;
    for (size_t b = 0; b < sizeof BODYPARTS / sizeof BODYPARTS[0]; b++)
        if (phrase_at(p, k, BODYPARTS[b].phrases))
            return true;
    for (size_t m = 0; m < sizeof MAKERS / sizeof MAKERS[0]; m++)
        if (phrase_at(p, k, MAKERS[m].phrases))
            return true;
    return phrase_at(p, k, LEVEL_WORDS) || phrase_at(p, k, NEGATIONS) || phrase_at(p, k, CONNECTORS);
}

/* The value part of "FIELD [op] VALUE" at k (words of the whole phrase
 * start at i): a stored spelling, an identifier or plain words. Returns the
 * tokens read at k (0: no value, nothing added). */
static size_t generic_value(parser_t *p, size_t i, size_t k, const char *best_path, mdb_qfield_type_t type,
                            const char *label_in, match_t m, bool neg)
{
    char words[300];
    size_t total;
    char *label = strdup(label_in);
    /* a stored value typed out (longest first) */
    size_t nv = 0, vl = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, best_path, &nv);
    const char *stored = NULL;
    for (size_t j = 0; j < nv; j++) {
        size_t n = value_matches_at(p, k, vals[j]);
        if (n > vl) {
            vl = n;
            stored = vals[j];
        }
    }
    char *val = NULL;
    if (!vl && nv > 0 && k < p->n && p->t[k].kind == T_WORD && known_elsewhere(p, k)) {
        /* "model CT series": CT is no stored model but a modality; do not read it as the model */
        free(label);
        return 0;
    }
    if (!vl) {
        vl = read_ident(p, k, true, &val);
        if (!vl)
            vl = read_text_value(p, k, &val);
    }
    if (!vl) {
        free(val);
        free(label);
        return 0;
    }
    total = k + vl - i;
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    const char *paths[NL_LEVELS] = {best_path, best_path, best_path};
    /* equality is a case-insensitive anchored pattern, so that lists merge
     * into one alternation and spellings differing in case still match */
    if (type == MDB_QFIELD_ANY && val && !has_wildcard(val) && m == M_EQ &&
        number_prefix(val, strlen(val)) == strlen(val)) {
        /* metadata values may be stored as numbers or strings */
        cond_t *c = cond_new(p);
        if (c) {
            c->kind = C_IN;
            c->values = json_array();
            json_array_append_new(c->values, num_json(strtod(val, NULL)));
            json_array_append_new(c->values, json_string(val));
            c->label = label;
            label = NULL;
            c->neg = neg;
            cond_field(p, c, best_path);
            cond_commit(p, words);
        }
    } else {
        add_text_cond(p, paths, false, label, stored ? stored : val, m, neg, words);
    }
    snprintf(p->last_generic, sizeof p->last_generic, "%s", best_path);
    free(val);
    free(label);
    return vl;
}

/* "more than 512 rows", "2 acquisitions": a number, then a numeric field's name. */
static size_t rule_numeric_postfix(parser_t *p, size_t i)
{
    numc_t nc;
    if (!parse_numc(p, i, &nc) || nc.unit != U_NONE)
        return 0;
    size_t k = i + nc.len, best = 0;
    const char *path = NULL;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const nl_field_t *fd = &p->v->fields[l][f];
            if (fd->type != MDB_QFIELD_NUMBER || dedicated_field(fd->path))
                continue;
            char words[160], alt[400];
            field_words(fd->path, words, sizeof words);
            snprintf(alt, sizeof alt, "%s|%s*", words, words);
            size_t n = phrase_at(p, k, alt);
            if (n > best) {
                best = n;
                path = fd->path;
            }
        }
    }
    if (!best)
        return 0;
    size_t total = nc.len + best;
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    numc_to_cond(c, &nc);
    c->label = field_label(path);
    cond_field(p, c, path);
    char words[256];
    words_text(p, i, total, words, sizeof words);
    mark_used(p, i, total);
    cond_commit(p, words);
    return total;
}

/* Names taken from the data: model names, kernels, stations, collections,
 * patient IDs typed without a field word. */
static size_t rule_vocab_value(parser_t *p, size_t i)
{
    static const char *const spot[] = {"manufacturer_model_name", "metadata.ManufacturerModelName",
                                       "metadata.ConvolutionKernel", "metadata.StationName",
                                       "metadata.InstitutionName", "collection_ids", "patient_id", NULL};
    const tok_t *t = &p->t[i];
    if (t->kind == T_WORD && (is_stopword(t->low) || strlen(t->low) < 3))
        return 0;
    if (t->kind == T_SYM || t->kind == T_SEP || t->kind == T_QUOTED)
        return 0;
    for (int s = 0; spot[s]; s++) {
        size_t nv = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, spot[s], &nv);
        size_t best = 0;
        const char *which = NULL;
        for (size_t k = 0; k < nv; k++) {
            if (strlen(vals[k]) < 3)
                continue;
            size_t n = value_matches_at(p, i, vals[k]);
            if (n > best) {
                best = n;
                which = vals[k];
            }
        }
        if (!best)
            continue;
        char *label = field_label(spot[s]);
        char words[256];
        words_text(p, i, best, words, sizeof words);
        mark_used(p, i, best);
        add_in_strings(p, spot[s], label ? label : spot[s], &which, 1, words);
        free(label);
        return best;
    }
    /* a patient ID pattern with wildcards ("LIDC-IDRI-00*") */
    if (t->kind == T_ID && has_wildcard(t->text)) {
        size_t nv = 0;
        mdb_nl_vocab_values(p->v, "patient_id", &nv);
        if (nv || mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "patient_id", NULL))
            return ident_list(p, i, "patient_id", "patient id", false, 0);
    }
    return 0;
}

static size_t rule_level(parser_t *p, size_t i)
{
    static const struct {
        const char *phrases;
        int level;
    } lv[] = {
        {"study|studies|exam*|examination*|visit*|stud*", MDB_QUERY_STUDIES},
        {"series|serie|sequence*|series level", MDB_QUERY_SERIES},
        {"image*|instance*|slice*|file*|frame*|sop instance*|dicom file*|picture*|object*", MDB_QUERY_INSTANCES},
    };
    for (size_t k = 0; k < sizeof lv / sizeof lv[0]; k++) {
        size_t n = phrase_at(p, i, lv[k].phrases);
        if (n) {
            if (p->level < 0)
                p->level = lv[k].level;
            mark_used(p, i, n);
            return n;
        }
    }
    return 0;
}

/* ======================================================================
 * presence and absence of any field, prefixes of stored values
 * ====================================================================== */

/* Everyday names of fields for "with/without a ..." (only used when the
 * catalogue declares the field). */
static const struct {
    const char *phrases;
    const char *path;
} PRESENCE_NAMES[] = {
    {"body part|body part examined|body region", "body_part_examined"},
    {"model|model name|scanner model|manufacturer model|manufacturer model name", "manufacturer_model_name"},
    {"kernel|convolution kernel|reconstruction kernel|recon kernel", "metadata.ConvolutionKernel"},
    {"manufacturer|vendor|maker", "manufacturer"},
    {"accession|accession number|accession no", "accession_number"},
    {"slice thickness|thickness", "slice_thickness"},
    {"station|station name", "metadata.StationName"},
    {"institution|institution name", "metadata.InstitutionName"},
    {"protocol|protocol name", "protocol_name"},
    {"kvp|tube voltage|kv", "kvp"},
    {"sex|gender|patient sex", "metadata.PatientSex"},
    {"age|patient age", "metadata.PatientAge"},
    {"study description", "study_description"},
    {"series description", "series_description"},
    {"series number", "series_number"},
};

/* The longest field name at i: its path (borrowed) and token count. */
static size_t field_name_at(parser_t *p, size_t i, const char **path)
{
    size_t best = 0;
    *path = NULL;
    for (size_t a = 0; a < sizeof PRESENCE_NAMES / sizeof PRESENCE_NAMES[0]; a++) {
        size_t n = phrase_at(p, i, PRESENCE_NAMES[a].phrases);
        if (n > best) {
            best = n;
            *path = PRESENCE_NAMES[a].path;
        }
    }
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const char *fp = p->v->fields[l][f].path;
            char words[160], alt[300];
            field_words(fp, words, sizeof words);
            const char *kw = strncmp(fp, "metadata.", 9) ? fp : fp + 9;
            snprintf(alt, sizeof alt, "%s|%.*s", words, 100, kw);
            for (char *c = alt; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            size_t n = phrase_at(p, i, alt);
            if (n > best) {
                best = n;
                *path = fp;
            }
        }
    }
    return best;
}

/* Does nothing that looks like a value follow at k (end, separator, a
 * connector, a level word, a filler such as "from")? */
static bool no_value_at(parser_t *p, size_t k)
{
    if (k >= p->n || p->t[k].kind == T_SEP)
        return true;
    if (p->t[k].kind != T_WORD)
        return false;
    if (phrase_at(p, k, "of|is|are|was|were|at|set to|equal*|above|below|over|under|between|than|like|"
                        "containing|contains|starting|ending|matching|named|called"))
        return false;
    return is_stopword(p->t[k].low) || phrase_at(p, k, CONNECTORS) || phrase_at(p, k, NEGATIONS) ||
           phrase_at(p, k, LEVEL_WORDS) || phrase_at(p, k, "series|from|since|before|after|until");
}

/* "series without a manufacturer model name", "studies with an accession
 * number", "series whose kernel is missing": presence (recorded, not empty)
 * or absence (missing or empty) of any field. */
static size_t rule_presence(parser_t *p, size_t i)
{
    size_t k = i, n;
    int absent = -1; /* -1: no lead word, 0: present, 1: absent */
    if ((n = phrase_at(p, k, "without|with no|with out|w o|wo|lacking|missing|that lack*|which lack*|"
                             "that have no|which have no|having no|has no|have no|no"))) {
        absent = 1;
    } else if ((n = phrase_at(p, k, "with|having|has|have|that have|which have|that has|which has"))) {
        absent = 0;
    }
    k += n;
    k += phrase_at(p, k, "a|an|any|the|some|their|its");
    const char *path = NULL;
    size_t fl = field_name_at(p, k, &path);
    if (!fl)
        return 0;
    k += fl;
    size_t st = phrase_at(p, k, "is|are|was|were");
    size_t sn;
    if ((sn = phrase_at(p, k + st, "missing|empty|absent|unknown|blank|not recorded|not set|not given|unset|"
                                   "not present|not filled|not filled in"))) {
        absent = absent == 1 ? 0 : 1;
        k += st + sn;
    } else if ((sn = phrase_at(p, k + st, "recorded|set|present|given|filled|filled in|known|entered|available"))) {
        if (absent < 0)
            absent = 0;
        k += st + sn;
    } else if (absent < 0) {
        return 0; /* a bare field name: the value rules read it */
    } else {
        k += phrase_at(p, k, "value*|information|info|recorded|set");
    }
    if (!no_value_at(p, k))
        return 0;
    cond_t *c = cond_new(p);
    if (!c)
        return 0;
    c->kind = C_PRESENT;
    c->absent = json_array();
    json_array_append_new(c->absent, json_string(""));
    c->neg = absent == 1;
    c->label = field_label(path);
    cond_field(p, c, path);
    char words[256];
    words_text(p, i, k - i, words, sizeof words);
    mark_used(p, i, k - i);
    cond_commit(p, words);
    return k - i;
}

/* "STANDARD kernel", "Siemens manufacturer": the name of the field whose
 * value was just read, right after it, is part of that condition. */
static size_t rule_field_echo(parser_t *p, size_t i)
{
    if (p->nc == 0 || i == 0 || !p->t[i - 1].used || p->t[i - 1].kind == T_SEP)
        return 0;
    const char *path = NULL;
    size_t n = field_name_at(p, i, &path);
    if (!n)
        return 0;
    const cond_t *last = &p->c[p->nc - 1];
    for (int l = 0; l < NL_LEVELS; l++) {
        if (last->paths[l] && !strcmp(last->paths[l], path)) {
            mark_used(p, i, n);
            return n;
        }
    }
    return 0;
}

/* "LightSpeed" for stored LightSpeed16 and LightSpeed Ultra: every stored
 * value that starts with the typed word (case-insensitive), shown as a
 * correction. After the other rules, so words they know never get here. */
static size_t rule_vocab_prefix(parser_t *p, size_t i)
{
    static const char *const spot[] = {"manufacturer_model_name", "metadata.ManufacturerModelName",
                                       "metadata.ConvolutionKernel", "metadata.StationName",
                                       "metadata.InstitutionName", "manufacturer", "body_part_examined",
                                       "collection_ids", NULL};
    const tok_t *t = &p->t[i];
    if ((t->kind != T_WORD && t->kind != T_ID) || strlen(t->text) < 4 || is_stopword(t->low))
        return 0;
    size_t len = strlen(t->text);
    for (int s = 0; spot[s]; s++) {
        size_t nv = 0, nm = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, spot[s], &nv);
        const char *match[64];
        for (size_t k = 0; k < nv && nm < 64; k++)
            if (strlen(vals[k]) > len && !strncasecmp(vals[k], t->text, len))
                match[nm++] = vals[k];
        if (!nm)
            continue;
        mdb_nl_buf_t b = {0};
        for (size_t k = 0; k < nm; k++)
            mdb_nl_buf_addf(&b, "%s%s", k ? ", " : "", match[k]);
        char *to = mdb_nl_buf_steal(&b);
        json_t *corr = json_pack("{s:s, s:s?, s:s}", "from", t->text, "to", to, "kind", "prefix");
        if (!to || !corr || json_array_append_new(p->corrections, corr))
            p->oom = true;
        note(p, "\"%s\" matched the stored %s starting with it: %s", t->text,
             nm > 1 ? "values" : "value", to ? to : "");
        free(to);
        char *label = field_label(spot[s]);
        mark_used(p, i, 1);
        add_in_strings(p, spot[s], label ? label : spot[s], match, nm, t->text);
        free(label);
        return 1;
    }
    return 0;
}

/* ======================================================================
 * the scan
 * ====================================================================== */

typedef size_t (*rule_fn)(parser_t *p, size_t i);

static const rule_fn RULES[] = {
    rule_generic_more_stored, rule_uid,        rule_presence,  rule_date,         rule_patient,      rule_accession,     rule_collection,
    rule_thin_thick, rule_numeric_field, rule_age,         rule_numeric_unit,  rule_contrast,
    rule_description, rule_modality,    rule_body_part,    rule_manufacturer,  rule_sex,
    rule_field_echo, rule_generic_field, rule_generic_more, rule_numeric_postfix, rule_vocab_value, rule_level,
    rule_vocab_prefix,
};

static void parse(parser_t *p)
{
    for (size_t i = 0; i < p->n && !p->oom;) {
        if (p->t[i].used) {
            i++;
            continue;
        }
        size_t n = 0;
        for (size_t r = 0; r < sizeof RULES / sizeof RULES[0] && !n; r++)
            n = RULES[r](p, i);
        if (n) {
            i += n;
            continue;
        }
        size_t m;
        if ((m = phrase_at(p, i, CONNECTORS))) {
            if (p->have_last) {
                p->cont = true;
                p->cont_or = phrase_at(p, i, "or|nor|and/or") > 0;
            }
            mark_used(p, i, m);
            i += m;
            continue;
        }
        if ((m = phrase_at(p, i, "both"))) {
            p->both = true; /* "both CT and DX": every value */
            mark_used(p, i, m);
            i += m;
            continue;
        }
        if ((m = phrase_at(p, i, NEGATIONS))) {
            p->neg = true;
            mark_used(p, i, m);
            i += m;
            continue;
        }
        const tok_t *t = &p->t[i];
        p->t[i].used = true;
        i++;
        if (tok_is_filler(t) && json_array_append_new(p->fillers, json_string(t->low)))
            p->oom = true;
        if (t->kind == T_SEP || t->kind == T_SYM || tok_is_filler(t))
            continue;
        p->t[i - 1].ignored = true;
        if (json_array_append_new(p->ignored, json_string(t->text)))
            p->oom = true;
        p->cont = false;
    }
    if (p->neg)
        note(p, "a negation at the end of the sentence had nothing to apply to");
}

/* ======================================================================
 * lowering to a filter
 * ====================================================================== */

static json_t *range_ops(const json_t *lo, const json_t *hi, bool lo_incl, bool hi_incl)
{
    json_t *r = json_object();
    if (lo && !json_is_null(lo))
        json_object_set(r, lo_incl ? "$gte" : "$gt", (json_t *)lo);
    if (hi && !json_is_null(hi))
        json_object_set(r, hi_incl ? "$lte" : "$lt", (json_t *)hi);
    return r;
}

static json_t *cond_ops(const cond_t *c, bool neg);

static json_t *cond_item_one(const cond_t *c, const char *path, bool neg);

/* {path: ops} for c, or {$or|$nor: [...]} when c has alternative ranges or
 * ORed conditions on the same field. */
static json_t *cond_item(const cond_t *c, const char *path, bool neg)
{
    if (!c->nors)
        return cond_item_one(c, path, neg);
    json_t *list = json_array();
    json_array_append_new(list, cond_item_one(c, path, false));
    for (size_t k = 0; k < c->nors; k++)
        json_array_append_new(list, cond_item_one(&c->ors[k], path, false));
    return json_pack("{s:o}", neg ? "$nor" : "$or", list);
}

/* {path: value} or {path: {$in: group}} for one group of a "both" list. */
static json_t *group_item(const char *path, const json_t *group)
{
    if (json_array_size(group) == 1)
        return json_pack("{s:O}", path, json_array_get(group, 0));
    return json_pack("{s:{s:O}}", path, "$in", group);
}

static bool all_of(const cond_t *c)
{
    return c->kind == C_IN && c->all && json_array_size(c->groups) > 1;
}

static json_t *cond_item_one(const cond_t *c, const char *path, bool neg)
{
    if (all_of(c)) {
        /* "both CT and DX": a value of every group ({$and: [...]}, $nor of it when negated) */
        json_t *list = json_array();
        size_t gi;
        json_t *g;
        json_array_foreach(c->groups, gi, g) json_array_append_new(list, group_item(path, g));
        json_t *and = json_pack("{s:o}", "$and", list);
        return neg ? json_pack("{s:[o]}", "$nor", and) : and;
    }
    if (c->kind != C_RANGE || !json_array_size(c->alts))
        return json_pack("{s:o}", path, cond_ops(c, neg));
    json_t *list = json_array();
    json_array_append_new(list, json_pack("{s:o}", path, range_ops(c->lo, c->hi, c->lo_incl, c->hi_incl)));
    size_t i;
    json_t *a;
    json_array_foreach(c->alts, i, a)
    {
        json_array_append_new(list, json_pack("{s:o}", path,
                                              range_ops(json_object_get(a, "lo"), json_object_get(a, "hi"),
                                                        json_is_true(json_object_get(a, "lo_incl")),
                                                        json_is_true(json_object_get(a, "hi_incl")))));
    }
    return json_pack("{s:o}", neg ? "$nor" : "$or", list);
}

static json_t *cond_ops(const cond_t *c, bool neg)
{
    json_t *o = NULL;
    switch (c->kind) {
    case C_IN:
        if (json_array_size(c->values) == 1 && !neg)
            return json_incref(json_array_get(c->values, 0));
        o = json_object();
        json_object_set(o, json_array_size(c->values) == 1 ? "$ne" : neg ? "$nin" : "$in",
                        json_array_size(c->values) == 1 ? json_array_get(c->values, 0) : c->values);
        return o;
    case C_RANGE: {
        json_t *r = json_object();
        if (c->lo)
            json_object_set(r, c->lo_incl ? "$gte" : "$gt", c->lo);
        if (c->hi)
            json_object_set(r, c->hi_incl ? "$lte" : "$lt", c->hi);
        if (!neg)
            return r;
        o = json_object();
        json_object_set_new(o, "$not", r);
        return o;
    }
    case C_REGEX: {
        json_t *r = json_pack("{s:s, s:s}", "$regex", c->regex, "$options", "i");
        if (!neg)
            return r;
        o = json_object();
        json_object_set_new(o, "$not", r);
        return o;
    }
    case C_PRESENT: {
        json_t *absent = json_deep_copy(c->absent);
        json_array_append_new(absent, json_null());
        if (neg)
            return json_pack("{s:o}", "$in", absent);
        return json_pack("{s:b, s:o}", "$exists", 1, "$nin", absent);
    }
    }
    return json_null();
}

/* AND of per-field items into one object; a field twice → $and. */
static json_t *and_filter(json_t *items)
{
    if (json_array_size(items) == 0)
        return json_object();
    json_t *merged = json_object();
    size_t i;
    json_t *it;
    bool clash = false;
    json_array_foreach(items, i, it)
    {
        const char *k;
        json_t *val;
        json_object_foreach(it, k, val)
        {
            if (json_object_get(merged, k))
                clash = true;
            json_object_set(merged, k, val);
        }
    }
    if (!clash)
        return merged;
    json_decref(merged);
    if (json_array_size(items) == 1)
        return json_incref(json_array_get(items, 0));
    return json_pack("{s:O}", "$and", items);
}

static void fmt_value(mdb_nl_buf_t *b, const json_t *v, const cond_t *c)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (c->is_date && strlen(s) == 8)
            mdb_nl_buf_addf(b, "%.4s-%.2s-%.2s", s, s + 4, s + 6);
        else
            mdb_nl_buf_add(b, s);
    } else if (json_is_integer(v)) {
        mdb_nl_buf_addf(b, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        mdb_nl_buf_addf(b, "%g", json_real_value(v));
    }
    if (c->unit && json_is_number(v))
        mdb_nl_buf_addf(b, " %s", c->unit);
}

static void describe_range(mdb_nl_buf_t *b, const cond_t *c, const json_t *lo, const json_t *hi, bool lo_incl,
                           bool hi_incl)
{
    if (lo && json_is_null(lo))
        lo = NULL;
    if (hi && json_is_null(hi))
        hi = NULL;
    if (lo && hi && lo_incl && hi_incl) {
        mdb_nl_buf_add(b, "from ");
        fmt_value(b, lo, c);
        mdb_nl_buf_add(b, " to ");
        fmt_value(b, hi, c);
        return;
    }
    if (lo) {
        mdb_nl_buf_add(b, c->is_date ? (lo_incl ? "on or after " : "after ") : (lo_incl ? "≥ " : "> "));
        fmt_value(b, lo, c);
    }
    if (hi) {
        mdb_nl_buf_add(b, lo ? " and " : "");
        mdb_nl_buf_add(b, c->is_date ? (hi_incl ? "on or before " : "before ") : (hi_incl ? "≤ " : "< "));
        fmt_value(b, hi, c);
    }
}

static void describe_one(mdb_nl_buf_t *b, const cond_t *c, bool neg);

static void describe(mdb_nl_buf_t *b, const cond_t *c, bool neg)
{
    describe_one(b, c, neg);
    for (size_t k = 0; k < c->nors; k++) {
        mdb_nl_buf_add(b, neg ? ", nor " : ", or ");
        describe_one(b, &c->ors[k], neg);
    }
}

static void describe_one(mdb_nl_buf_t *b, const cond_t *c, bool neg)
{
    mdb_nl_buf_add(b, c->label ? c->label : "field");
    switch (c->kind) {
    case C_IN: {
        size_t n = json_array_size(c->values);
        if (all_of(c)) {
            mdb_nl_buf_add(b, neg ? " does not have every one of " : " has every one of ");
            size_t gi;
            json_t *g;
            json_array_foreach(c->groups, gi, g)
            {
                mdb_nl_buf_add(b, gi ? ", " : "");
                for (size_t k = 0; k < json_array_size(g); k++) {
                    mdb_nl_buf_add(b, k ? "/" : "");
                    fmt_value(b, json_array_get(g, k), c);
                }
            }
            break;
        }
        mdb_nl_buf_add(b, neg ? (n > 1 ? " is none of " : " is not ") : (n > 1 ? " is one of " : " is "));
        for (size_t k = 0; k < n; k++) {
            if (k)
                mdb_nl_buf_add(b, ", ");
            fmt_value(b, json_array_get(c->values, k), c);
        }
        break;
    }
    case C_RANGE: {
        mdb_nl_buf_add(b, neg ? " is not " : " is ");
        describe_range(b, c, c->lo, c->hi, c->lo_incl, c->hi_incl);
        size_t i;
        json_t *a;
        json_array_foreach(c->alts, i, a)
        {
            mdb_nl_buf_add(b, neg ? " nor " : " or ");
            describe_range(b, c, json_object_get(a, "lo"), json_object_get(a, "hi"),
                           json_is_true(json_object_get(a, "lo_incl")), json_is_true(json_object_get(a, "hi_incl")));
        }
        break;
    }
    case C_REGEX:
        mdb_nl_buf_addf(b, " %s%s", neg ? "does not satisfy: " : "", c->regex_shown ? c->regex_shown : c->regex);
        break;
    case C_PRESENT:
        mdb_nl_buf_add(b, neg ? " is absent or empty" : " is recorded");
        break;
    }
    if (c->note)
        mdb_nl_buf_addf(b, " (%s)", c->note);
}

static const char *level_noun(int level, bool plural)
{
    static const char *const s[] = {"study", "series", "instance"};
    static const char *const pl[] = {"studies", "series", "instances"};
    return plural ? pl[level] : s[level];
}

struct mdb_nl_result {
    mdb_query_level_t level;
    json_t *filter;
    json_t *joins;
    char *explanation;
    char backend[16];
    char *message;
    json_t *ignored;
    json_t *notes;
    json_t *corrections; /* [{from, to, kind}] */
    json_t *fillers;     /* filler words no rule used (not shown; judges spelling corrections) */
    bool partial;
};

void mdb_nl_link_fields(mdb_query_level_t level, mdb_query_level_t other, const char **local, const char **foreign)
{
    if (other < level) { /* a parent level: my link field → its _id */
        *local = other == MDB_QUERY_STUDIES ? "study_id" : "series_id";
        *foreign = "_id";
    } else { /* a child level: my _id ← its link field */
        *local = "_id";
        *foreign = level == MDB_QUERY_STUDIES ? "study_id" : "series_id";
    }
}

/* The level a condition is applied at when the query asks for `level`. */
static int apply_level(const cond_t *c, int level)
{
    if (c->paths[level])
        return level;
    /* nearest level holding the field; on a tie the parent */
    for (int d = 1; d < NL_LEVELS; d++) {
        if (level - d >= 0 && c->paths[level - d])
            return level - d;
        if (level + d < NL_LEVELS && c->paths[level + d])
            return level + d;
    }
    return -1;
}

static bool lower(parser_t *p, mdb_nl_result_t *r)
{
    int level = p->level;
    if (level < 0) {
        level = MDB_QUERY_STUDIES;
        for (size_t k = 0; k < p->nc; k++)
            if (!p->c[k].flexible && cond_home(&p->c[k]) > level)
                level = cond_home(&p->c[k]);
    }
    r->level = (mdb_query_level_t)level;
    json_t *local = json_array();
    json_t *joins = json_array();
    json_t *join_items[NL_LEVELS] = {NULL, NULL, NULL};
    mdb_nl_buf_t ex = {0}, jx[NL_LEVELS] = {{0}};
    bool have_local = false;
    const char *lnoun = level_noun(level, true);
    mdb_nl_buf_addf(&ex, "%c%s", toupper((unsigned char)lnoun[0]), lnoun + 1);
    for (size_t k = 0; k < p->nc; k++) {
        cond_t *c = &p->c[k];
        int at = apply_level(c, level);
        if (at < 0)
            continue;
        if (at == level) {
            json_array_append_new(local, cond_item(c, c->paths[at], c->neg));
            mdb_nl_buf_add(&ex, have_local ? "; " : " where ");
            describe(&ex, c, c->neg);
            have_local = true;
            continue;
        }
        if (all_of(c) && !c->neg) {
            /* "studies with both CT and DX series": a linked document per group */
            const char *lf, *ff;
            mdb_nl_link_fields((mdb_query_level_t)level, (mdb_query_level_t)at, &lf, &ff);
            size_t gi;
            json_t *g;
            json_array_foreach(c->groups, gi, g)
            {
                json_array_append_new(joins, json_pack("{s:s, s:o, s:s, s:s, s:b}", "collection",
                                                       mdb_query_level_name((mdb_query_level_t)at), "filter",
                                                       group_item(c->paths[at], g), "local", lf, "foreign", ff,
                                                       "negate", 0));
                mdb_nl_buf_add(&ex, have_local ? "; " : " ");
                have_local = true;
                mdb_nl_buf_addf(&ex, at < level ? "whose %s's %s is " : "having a %s whose %s is ",
                                level_noun(at, false), c->label ? c->label : "field");
                for (size_t k = 0; k < json_array_size(g); k++) {
                    mdb_nl_buf_add(&ex, k ? " or " : "");
                    fmt_value(&ex, json_array_get(g, k), c);
                }
            }
            continue;
        }
        json_t *item = cond_item(c, c->paths[at], false);
        if (c->neg) {
            /* an anti-join of its own: no linked document satisfies it */
            const char *lf, *ff;
            mdb_nl_link_fields((mdb_query_level_t)level, (mdb_query_level_t)at, &lf, &ff);
            json_array_append_new(joins, json_pack("{s:s, s:o, s:s, s:s, s:b}", "collection",
                                                   mdb_query_level_name((mdb_query_level_t)at), "filter", item,
                                                   "local", lf, "foreign", ff, "negate", 1));
            mdb_nl_buf_add(&ex, have_local ? "; " : " ");
            have_local = true;
            if (at < level)
                mdb_nl_buf_addf(&ex, "whose %s does not match: ", level_noun(at, false));
            else
                mdb_nl_buf_addf(&ex, "having no %s that matches: ", level_noun(at, false));
            describe(&ex, c, false);
            continue;
        }
        if (!join_items[at])
            join_items[at] = json_array();
        json_array_append_new(join_items[at], item);
        if (jx[at].len)
            mdb_nl_buf_add(&jx[at], " and ");
        describe(&jx[at], c, false);
    }
    for (int at = 0; at < NL_LEVELS; at++) {
        if (!join_items[at])
            continue;
        const char *lf, *ff;
        mdb_nl_link_fields((mdb_query_level_t)level, (mdb_query_level_t)at, &lf, &ff);
        json_array_append_new(joins, json_pack("{s:s, s:o, s:s, s:s, s:b}", "collection",
                                               mdb_query_level_name((mdb_query_level_t)at), "filter",
                                               and_filter(join_items[at]), "local", lf, "foreign", ff, "negate", 0));
        json_decref(join_items[at]);
        mdb_nl_buf_add(&ex, have_local ? "; " : " ");
        have_local = true;
        if (at < level)
            mdb_nl_buf_addf(&ex, "whose %s matches: %s", level_noun(at, false), jx[at].s ? jx[at].s : "");
        else
            mdb_nl_buf_addf(&ex, "having a %s that matches: %s", level_noun(at, false), jx[at].s ? jx[at].s : "");
    }
    for (int at = 0; at < NL_LEVELS; at++)
        mdb_nl_buf_free(&jx[at]);
    if (!have_local)
        mdb_nl_buf_add(&ex, " (all of them: no condition was recognised)");
    mdb_nl_buf_add(&ex, ".");
    if (p->level < 0)
        mdb_nl_buf_addf(&ex, " Level %s chosen from the conditions (say \"studies\", \"series\" or \"images\" to "
                             "choose).",
                        level_noun(level, false));
    if (json_array_size(p->ignored)) {
        mdb_nl_buf_add(&ex, " Not understood: ");
        size_t k;
        json_t *w;
        json_array_foreach(p->ignored, k, w) mdb_nl_buf_addf(&ex, "%s\"%s\"", k ? ", " : "", json_string_value(w));
        mdb_nl_buf_add(&ex, ".");
    }
    size_t k;
    json_t *nt;
    json_array_foreach(p->notes, k, nt) mdb_nl_buf_addf(&ex, " Note: %s.", json_string_value(nt));
    json_t *filter = and_filter(local);
    json_decref(local);
    mdb_nl_result_adopt(r, filter, joins);
    free(r->explanation);
    r->explanation = mdb_nl_buf_steal(&ex);
    return r->explanation && r->filter && r->joins;
}

/* ======================================================================
 * results
 * ====================================================================== */

mdb_nl_result_t *mdb_nl_result_new(mdb_query_level_t level)
{
    mdb_nl_result_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->level = level;
    r->filter = json_object();
    r->joins = json_array();
    r->ignored = json_array();
    r->notes = json_array();
    r->corrections = json_array();
    snprintf(r->backend, sizeof r->backend, "offline");
    if (!r->filter || !r->joins || !r->ignored || !r->notes || !r->corrections) {
        mdb_nl_result_destroy(r);
        return NULL;
    }
    return r;
}

void mdb_nl_result_destroy(mdb_nl_result_t *r)
{
    if (!r)
        return;
    json_decref(r->filter);
    json_decref(r->joins);
    json_decref(r->ignored);
    json_decref(r->notes);
    json_decref(r->corrections);
    json_decref(r->fillers);
    free(r->explanation);
    free(r->message);
    free(r);
}

void mdb_nl_result_adopt(mdb_nl_result_t *r, json_t *filter, json_t *joins)
{
    if (filter) {
        json_decref(r->filter);
        r->filter = filter;
    }
    if (joins) {
        json_decref(r->joins);
        r->joins = joins;
    }
}

bool mdb_nl_result_set_explanation(mdb_nl_result_t *r, const char *text)
{
    char *d = strdup(text ? text : "");
    if (!d)
        return false;
    free(r->explanation);
    r->explanation = d;
    return true;
}

bool mdb_nl_result_set_message(mdb_nl_result_t *r, const char *text)
{
    char *d = text ? strdup(text) : NULL;
    if (text && !d)
        return false;
    free(r->message);
    r->message = d;
    return true;
}

void mdb_nl_result_set_backend(mdb_nl_result_t *r, const char *backend)
{
    snprintf(r->backend, sizeof r->backend, "%s", backend);
}

mdb_query_level_t mdb_nl_result_level(const mdb_nl_result_t *r)
{
    return r->level;
}

const json_t *mdb_nl_result_filter(const mdb_nl_result_t *r)
{
    return r->filter;
}

const json_t *mdb_nl_result_joins(const mdb_nl_result_t *r)
{
    return r->joins;
}

const char *mdb_nl_result_explanation(const mdb_nl_result_t *r)
{
    return r->explanation ? r->explanation : "";
}

const char *mdb_nl_result_backend(const mdb_nl_result_t *r)
{
    return r->backend;
}

const char *mdb_nl_result_message(const mdb_nl_result_t *r)
{
    return r->message;
}

bool mdb_nl_result_partial(const mdb_nl_result_t *r)
{
    return r->partial || json_array_size(r->ignored) > 0;
}

const json_t *mdb_nl_result_corrections(const mdb_nl_result_t *r)
{
    return r->corrections;
}

json_t *mdb_nl_result_to_json(const mdb_nl_result_t *r)
{
    json_t *o = json_pack("{s:s, s:O, s:O, s:s, s:s, s:O}", "level", mdb_query_level_name(r->level), "filter",
                          r->filter, "joins", r->joins, "explanation", mdb_nl_result_explanation(r), "backend",
                          r->backend, "ignored", r->ignored);
    if (o) {
        json_object_set_new(o, "confidence", json_string(mdb_nl_result_partial(r) ? "partial" : "complete"));
        json_object_set(o, "corrections", r->corrections);
    }
    if (o && r->message)
        json_object_set_new(o, "message", json_string(r->message));
    return o;
}

/* ======================================================================
 * entry point
 * ====================================================================== */

static bool parse_ref_date(const char *s, int *y, int *m, int *d)
{
    if (!s || !*s) {
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        *y = tmv.tm_year + 1900, *m = tmv.tm_mon + 1, *d = tmv.tm_mday;
        return true;
    }
    size_t n = strlen(s);
    if (n == 8 && all_digits(s, 8)) {
        int v = atoi(s);
        *y = v / 10000, *m = v / 100 % 100, *d = v % 100;
    } else if (n == 10 && s[4] == '-' && s[7] == '-' && all_digits(s, 4) && all_digits(s + 5, 2) &&
               all_digits(s + 8, 2)) {
        *y = atoi(s), *m = atoi(s + 5), *d = atoi(s + 8);
    } else {
        return false;
    }
    return valid_ymd(*y, *m, *d) && *m && *d;
}

/* Words a correction may be taken from: every word the grammar tried on
 * this sentence (collected by a second parse), the filler words and the
 * words of the stored names. NULL on OOM. */
static mdb_nl_words_t *spell_dictionary(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3]);

static void parser_clear(parser_t *p)
{
    for (size_t k = 0; k < p->nc; k++)
        cond_free(&p->c[k]);
    free(p->c);
    cond_free(&p->last_shape);
    json_decref(p->ignored);
    json_decref(p->notes);
    json_decref(p->corrections);
    json_decref(p->fillers);
    memset(p, 0, sizeof *p);
}

/* Tokenize and parse sentence into p (and ts). false on OOM. */
static bool parse_sentence(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3], mdb_nl_words_t *collect,
                           parser_t *p, toks_t *ts)
{
    memset(p, 0, sizeof *p);
    tokenize(sentence, ts);
    if (ts->oom)
        return false;
    p->v = v;
    p->t = ts->t;
    p->n = ts->n;
    p->level = -1;
    p->ref_y = ref[0], p->ref_m = ref[1], p->ref_d = ref[2];
    p->collect = collect;
    p->ignored = json_array();
    p->notes = json_array();
    p->corrections = json_array();
    p->fillers = json_array();
    if (!p->ignored || !p->notes || !p->corrections || !p->fillers)
        return false;
    parse(p);
    return !p->oom;
}

static void add_value_words(mdb_nl_words_t *w, const mdb_nl_vocab_t *v, const char *path, bool *ok)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(v, path, &nv);
    for (size_t k = 0; k < nv && k < 2000; k++) {
        const char *s = vals[k];
        while (*s) {
            while (*s && !isalpha((unsigned char)*s))
                s++;
            const char *e = s;
            while (isalpha((unsigned char)*e))
                e++;
            if (e - s >= 4 && (!*e || !isdigit((unsigned char)*e)) && !mdb_nl_words_add(w, s, (size_t)(e - s)))
                *ok = false;
            s = e;
        }
    }
}

static mdb_nl_words_t *spell_dictionary(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3])
{
    static const char *const names[] = {"manufacturer", "manufacturer_model_name", "body_part_examined", "modality",
                                        "metadata.ConvolutionKernel", "metadata.StationName",
                                        "metadata.InstitutionName", "collection_ids", NULL};
    static const char *const extra = "january|february|march|april|may|june|july|august|september|october|november|"
                                     "december|years|months|weeks|days|than|thinner|thicker";
    mdb_nl_words_t *w = mdb_nl_words_new();
    if (!w)
        return NULL;
    parser_t p;
    toks_t ts = {0};
    bool ok = parse_sentence(v, sentence, ref, w, &p, &ts);
    parser_clear(&p);
    toks_free(&ts);
    /* fillers stay in the dictionary so that a word close to one is not "corrected" into
     * a less close content word; respell() then leaves it alone */
    ok = ok && mdb_nl_words_add_phrases(w, STOPWORDS) && mdb_nl_words_add_phrases(w, extra);
    for (int k = 0; names[k]; k++)
        add_value_words(w, v, names[k], &ok);
    if (!ok) {
        mdb_nl_words_destroy(w);
        return NULL;
    }
    return w;
}

static bool in_strings(const json_t *list, const char *s)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (!strcasecmp(json_string_value(x), s)) return true;
    return false;
}

/* The sentence with its ignored, misspelled words replaced by their
 * corrections (malloc'd), or NULL when none can be corrected. Words whose
 * correction is in `useless` (corrections that were not understood either)
 * are left alone. Each correction is appended to corrections. *oom is set
 * on OOM. */
static char *respell(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3], const toks_t *ts,
                     const json_t *useless, json_t *corrections, bool *oom)
{
    bool any = false;
    for (size_t k = 0; k < ts->n && !any; k++)
        any = ts->t[k].ignored && ts->t[k].kind == T_WORD;
    if (!any)
        return NULL;
    mdb_nl_words_t *dict = spell_dictionary(v, sentence, ref);
    if (!dict) {
        *oom = true;
        return NULL;
    }
    size_t nd = 0;
    const char *const *words = mdb_nl_words_list(dict, &nd);
    mdb_nl_buf_t b = {0};
    size_t copied = 0, fixed = 0;
    for (size_t k = 0; k < ts->n; k++) {
        const tok_t *t = &ts->t[k];
        bool alpha = t->kind == T_WORD && t->src >= sentence && t->src + t->srclen <= sentence + strlen(sentence);
        for (size_t c = 0; alpha && c < t->srclen; c++)
            alpha = isalpha((unsigned char)t->src[c]);
        if (!t->ignored || !alpha)
            continue;
        const char *fix = mdb_nl_spell_best(t->low, words, nd, NULL);
        if (!fix || (useless && in_strings(useless, fix)))
            continue;
        size_t from = (size_t)(t->src - sentence);
        mdb_nl_buf_addf(&b, "%.*s%s", (int)(from - copied), sentence + copied, fix);
        copied = from + t->srclen;
        json_t *c = json_pack("{s:s, s:s, s:s}", "from", t->text, "to", fix, "kind", "spelling");
        if (!c || json_array_append_new(corrections, c))
            *oom = true;
        fixed++;
    }
    mdb_nl_words_destroy(dict);
    if (!fixed) {
        mdb_nl_buf_free(&b);
        return NULL;
    }
    mdb_nl_buf_add(&b, sentence + copied);
    char *out = mdb_nl_buf_steal(&b);
    if (!out)
        *oom = true;
    return out;
}

/* One reading of an (English) sentence. NULL with err on refusal/OOM. When
 * respelled is not NULL it gets the sentence with misspellings corrected
 * (or NULL) and spelling gets the corrections. */
static mdb_nl_result_t *translate_once(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3],
                                       char **respelled, const json_t *useless, json_t *spelling, mdb_error_t *err)
{
    mdb_nl_result_t *r = NULL;
    toks_t ts = {0};
    parser_t p;
    bool oom = false;
    if (!parse_sentence(v, sentence, ref, NULL, &p, &ts))
        goto oom;
    if (respelled) {
        *respelled = respell(v, sentence, ref, &ts, useless, spelling, &oom);
        if (oom)
            goto oom;
    }
    size_t content = 0;
    for (size_t k = 0; k < ts.n; k++)
        content += ts.t[k].kind != T_SEP && ts.t[k].kind != T_SYM;
    if (content == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "empty sentence: say what to look for, e.g. \"chest CT series from 2001\"");
        goto done;
    }
    if (p.nc == 0 && (json_array_size(p.ignored) > 0 || p.level < 0)) {
        /* nothing but unknown or filler words: answering "everything" would mislead */
        mdb_nl_buf_t b = {0};
        size_t k;
        json_t *w;
        json_array_foreach(p.ignored, k, w) mdb_nl_buf_addf(&b, "%s\"%s\"", k ? ", " : "", json_string_value(w));
        if (!json_array_size(p.ignored))
            for (size_t t = 0; t < ts.n; t++)
                if (ts.t[t].kind == T_WORD)
                    mdb_nl_buf_addf(&b, "%s\"%s\"", b.len ? ", " : "", ts.t[t].text);
        char *list = mdb_nl_buf_steal(&b);
        mdb_error_set(err, MDB_ERR_QUERY, MDB_NL_ERR_NOT_UNDERSTOOD,
                      "nothing in the sentence was understood (%s); try e.g. \"chest CT series from 2001\"",
                      list ? list : "");
        free(list);
        goto done;
    }
    r = mdb_nl_result_new(MDB_QUERY_STUDIES);
    if (!r || !lower(&p, r))
        goto oom;
    json_decref(r->ignored);
    r->ignored = json_incref(p.ignored);
    json_decref(r->notes);
    r->notes = json_incref(p.notes);
    json_decref(r->corrections);
    r->corrections = json_incref(p.corrections);
    r->fillers = json_incref(p.fillers);
    r->partial = p.partial;
    goto done;
oom:
    mdb_nl_result_destroy(r);
    r = NULL;
    if (respelled) {
        free(*respelled);
        *respelled = NULL;
    }
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    parser_clear(&p);
    toks_free(&ts);
    return r;
}

/* Put the corrections (translations, spellings) in front of the result's
 * own and say them in the explanation. */
static bool add_corrections(mdb_nl_result_t *r, json_t *before)
{
    json_t *all = json_array();
    if (!all || json_array_extend(all, before) || json_array_extend(all, r->corrections)) {
        json_decref(all);
        return false;
    }
    json_decref(r->corrections);
    r->corrections = all;
    if (!json_array_size(before))
        return true;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, r->explanation ? r->explanation : "");
    mdb_nl_buf_add(&b, " Read as:");
    size_t k;
    json_t *c;
    json_array_foreach(before, k, c)
        mdb_nl_buf_addf(&b, "%s \"%s\" → \"%s\"", k ? "," : "", json_string_value(json_object_get(c, "from")),
                        json_string_value(json_object_get(c, "to")));
    mdb_nl_buf_add(&b, ".");
    char *ex = mdb_nl_buf_steal(&b);
    if (!ex)
        return false;
    free(r->explanation);
    r->explanation = ex;
    return true;
}

mdb_nl_result_t *mdb_nl_translate_offline(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                          mdb_error_t *err)
{
    mdb_nl_result_t *r = NULL, *r2 = NULL;
    char *english = NULL, *respelled = NULL;
    json_t *corr = NULL, *spelling = NULL;
    int ref[3];
    if (!sentence) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "no sentence given");
        return NULL;
    }
    size_t len = strlen(sentence);
    if (len > MDB_NL_MAX_SENTENCE) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sentence too long (%zu bytes, at most %d)", len, MDB_NL_MAX_SENTENCE);
        return NULL;
    }
    if (!utf8_valid(sentence)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sentence is not valid UTF-8");
        return NULL;
    }
    if (!parse_ref_date(opt ? opt->reference_date : NULL, &ref[0], &ref[1], &ref[2])) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "reference date '%s' is not a valid YYYYMMDD or YYYY-MM-DD date",
                      opt->reference_date);
        return NULL;
    }
    corr = json_array();
    spelling = json_array();
    if (!corr || !spelling || !(english = mdb_nl_lexicon_rewrite(sentence, corr)))
        goto oom;
    r = translate_once(v, english, ref, &respelled, NULL, spelling, err);
    if (!r && err && err->domain == MDB_ERR_SYSTEM)
        goto done;
    if (respelled) {
        mdb_error_t err2 = {0};
        r2 = translate_once(v, respelled, ref, NULL, NULL, NULL, &err2);
        if (r2) {
            /* a correction that is not understood either ("Mayo" → "may"), or that only
             * turns a word into a filler no rule uses ("mode" → "made": a content word
             * would vanish silently), is not made */
            json_t *useless = json_array();
            size_t k;
            json_t *c;
            json_array_foreach(spelling, k, c)
            {
                const char *to = json_string_value(json_object_get(c, "to"));
                if (useless && (in_strings(r2->ignored, to) || (r2->fillers && in_strings(r2->fillers, to))))
                    json_array_append_new(useless, json_string(to));
            }
            if (!useless)
                goto oom;
            if (json_array_size(useless)) {
                mdb_nl_result_destroy(r2);
                r2 = NULL;
                free(respelled);
                respelled = NULL;
                json_array_clear(spelling);
                mdb_nl_result_t *again = translate_once(v, english, ref, &respelled, useless, spelling, &err2);
                mdb_nl_result_destroy(again);
                if (respelled)
                    r2 = translate_once(v, respelled, ref, NULL, NULL, NULL, &err2);
            }
            json_decref(useless);
        }
        if (r2 && (!r || json_array_size(r2->ignored) < json_array_size(r->ignored))) {
            mdb_nl_result_destroy(r);
            r = r2;
            r2 = NULL;
            if (json_array_extend(corr, spelling))
                goto oom;
        }
    }
    if (r && !add_corrections(r, corr))
        goto oom;
    goto done;
oom:
    mdb_nl_result_destroy(r);
    r = NULL;
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    mdb_nl_result_destroy(r2);
    free(english);
    free(respelled);
    json_decref(corr);
    json_decref(spelling);
    return r;
}

mdb_nl_result_t *mdb_nl_translate(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                  mdb_error_t *err)
{
    return mdb_nl_translate_offline(v, sentence, opt, err);
}
