/* mdb_nl_tokens.c: cutting a sentence into tokens (words, numbers, ISO
 * dates, UIDs, identifiers such as LIDC-IDRI-0001, quoted strings, comparison
 * symbols, separators), and the UTF-8 checks the translator's texts need. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

void nl_toks_free(nl_toks_t *ts)
{
    for (size_t i = 0; i < ts->n; i++) {
        free(ts->t[i].text);
        free(ts->t[i].low);
    }
    free(ts->t);
    ts->t = NULL;
    ts->n = ts->cap = 0;
}

static nl_tok_t *toks_push(nl_toks_t *ts, nl_tkind_t kind, const char *s, size_t n)
{
    if (ts->oom)
        return NULL;
    if (ts->n == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 32;
        nl_tok_t *nt = realloc(ts->t, cap * sizeof *nt);
        if (!nt) {
            ts->oom = true;
            return NULL;
        }
        ts->t = nt;
        ts->cap = cap;
    }
    nl_tok_t *t = &ts->t[ts->n];
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

bool nl_all_digits(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

int nl_days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return (m >= 1 && m <= 12) ? dm[m - 1] : 0;
}

bool nl_valid_ymd(int y, int m, int d)
{
    if (y < 1800 || y > 2200)
        return false;
    if (m == 0)
        return d == 0;
    if (m < 1 || m > 12)
        return false;
    return d == 0 || (d >= 1 && d <= nl_days_in_month(y, m));
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
    if (sscanf(buf, "%4d%c%2d%c%2d%n", &a, &s1, &b, &s2, &c, &consumed) == 5 && (size_t)consumed == n && s1 == s2 &&
        (s1 == '-' || s1 == '/') && n >= 8 && isdigit((unsigned char)buf[3]) && !isdigit((unsigned char)buf[4])) {
        *y = a, *m = b, *d = c;
        return nl_valid_ymd(a, b, c);
    }
    consumed = 0;
    if (sscanf(buf, "%4d%c%2d%n", &a, &s1, &b, &consumed) == 3 && (size_t)consumed == n && s1 == '-' && n == 7 &&
        isdigit((unsigned char)buf[3])) {
        *y = a, *m = b, *d = 0;
        return nl_valid_ymd(a, b, 0);
    }
    consumed = 0;
    if (sscanf(buf, "%2d%c%4d%n", &b, &s1, &a, &consumed) == 3 && (size_t)consumed == n && s1 == '/' &&
        (n == 6 || n == 7) && buf[n - 5] == '/') {
        *y = a, *m = b, *d = 0;
        return nl_valid_ymd(a, b, 0);
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
size_t nl_number_prefix(const char *s, size_t n)
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

static void push_number(nl_toks_t *ts, const char *s, size_t n)
{
    nl_tok_t *t = toks_push(ts, NL_T_NUM, s, n);
    if (!t)
        return;
    t->num = strtod(t->text, NULL);
    t->integer = memchr(s, '.', n) == NULL;
}

static bool is_unit_suffix(const char *s, size_t n)
{
    static const char *const units[] = {"mm", "cm", "kv", "kvp", "y",  "yr",     "yrs",   "yo",   "years", "year",
                                        "st", "nd", "rd", "th",  "mo", "months", "month", "days", "weeks", NULL};
    for (int i = 0; units[i]; i++)
        if (strlen(units[i]) == n && !strncasecmp(units[i], s, n))
            return true;
    return false;
}

/* One whitespace/punctuation-delimited run of the sentence. */
static void classify_run(nl_toks_t *ts, const char *s, size_t n)
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
        nl_tok_t *t = toks_push(ts, NL_T_DATE, s, n);
        if (t)
            t->y = y, t->m = m, t->d = d;
        return;
    }
    if (is_uid_run(s, n)) {
        toks_push(ts, NL_T_UID, s, n);
        return;
    }
    size_t np = nl_number_prefix(s, n);
    if (np == n) {
        push_number(ts, s, n);
        return;
    }
    if (np > 0 && is_unit_suffix(s + np, n - np)) {
        push_number(ts, s, np);
        if (strncasecmp(s + np, "st", 2) && strncasecmp(s + np, "nd", 2) && strncasecmp(s + np, "rd", 2) &&
            strncasecmp(s + np, "th", 2))
            toks_push(ts, NL_T_WORD, s + np, n - np);
        return;
    }
    /* numeric ranges: "2000-2001", "1-2.5mm", "1.0-2.5" */
    if (np > 0 && s[np] == '-') {
        size_t np2 = nl_number_prefix(s + np + 1, n - np - 1);
        size_t rest = n - np - 1 - np2;
        if (np2 > 0 && (rest == 0 || is_unit_suffix(s + np + 1 + np2, rest))) {
            push_number(ts, s, np);
            nl_tok_t *t = toks_push(ts, NL_T_SYM, "-", 1);
            if (t)
                t->sym = '-';
            push_number(ts, s + np + 1, np2);
            if (rest)
                toks_push(ts, NL_T_WORD, s + np + 1 + np2, rest);
            return;
        }
    }
    bool idlike = false;
    for (size_t i = 0; i < n; i++)
        if (isdigit((unsigned char)s[i]) || s[i] == '*' || s[i] == '?' || s[i] == '_')
            idlike = true;
    if (idlike) {
        toks_push(ts, NL_T_ID, s, n);
        return;
    }
    /* plain words; hyphenated and slashed compounds become glued words */
    size_t start = 0;
    bool glued = false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '-' || s[i] == '/') {
            if (i > start) {
                nl_tok_t *t = toks_push(ts, NL_T_WORD, s + start, i - start);
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
    } sp[] = {{"\xe2\x89\xa4", 'l'}, {"\xe2\x89\xa5", 'g'},  {"\xe2\x89\xa0", '!'}, {"\xe2\x80\x9c", '"'},
              {"\xe2\x80\x9d", 'D'}, {"\xe2\x80\x98", '\''}, {"\xe2\x80\x99", 'Q'}};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        if (!strncmp(s, sp[i].seq, 3)) {
            *what = sp[i].what;
            return 3;
        }
    return 0;
}

static void push_sym(nl_toks_t *ts, char sym, const char *s, size_t n)
{
    nl_tok_t *t = toks_push(ts, NL_T_SYM, s, n);
    if (t)
        t->sym = sym;
}

void nl_tokenize(const char *s, nl_toks_t *ts)
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
                toks_push(ts, NL_T_QUOTED, s + j, end - j);
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
            toks_push(ts, NL_T_SEP, s + i, 1);
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

bool nl_utf8_valid(const char *s)
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
void nl_u8trim(char *s)
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
