/* mdb_query_value: the values of filter parameters: integers, decimal
 * numbers, (partial) dates, and lists of items with escapes and DICOM
 * wildcards. */
#include "mdb_query_private.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST_ITEMS 1000

bool mdb_query_parse_int64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Decimal number (no hex, no inf/nan, no leading/trailing space). */
bool mdb_query_parse_number(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return false;
    for (const char *p = s; *p; p++)
        if (!(isdigit((unsigned char)*p) || *p == '.' || *p == '-' || *p == '+' || *p == 'e' || *p == 'E'))
            return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno == ERANGE || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* Append a number as int64 when it is integral (so equality on integer
 * fields behaves), else double. */
void mdb_query_append_number(bson_t *b, const char *key, double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        BSON_APPEND_INT64(b, key, (int64_t)v);
    else
        BSON_APPEND_DOUBLE(b, key, v);
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

/* "YYYYMMDD" into out[9]; y is 0..9999 (four digits by construction). */
static void format_ymd(char out[9], int y, int m, int d)
{
    int v[3] = {y, m, d}, w[3] = {4, 2, 2};
    size_t o = 0;
    for (int i = 0; i < 3; i++)
        for (int k = w[i] - 1; k >= 0; k--) {
            int p = 1;
            for (int e = 0; e < k; e++)
                p *= 10;
            out[o++] = (char)('0' + (v[i] / p) % 10);
        }
    out[8] = '\0';
}

/* Parse a (possibly partial) date: YYYY, YYYYMM, YYYYMMDD, YYYY-MM,
 * YYYY-MM-DD, YYYY.MM.DD. Writes the first and last YYYYMMDD it covers. */
bool mdb_query_parse_date(const char *s, size_t len, char lo[9], char hi[9])
{
    char d[9];
    size_t n = 0;
    if (len == 7 || len == 10) { /* YYYY-MM or YYYY-MM-DD */
        char sep = s[4];
        if (sep != '-' && sep != '.')
            return false;
        if (len == 10 && s[7] != sep)
            return false;
        for (size_t i = 0; i < len; i++) {
            if (i == 4 || i == 7)
                continue;
            if (!isdigit((unsigned char)s[i]))
                return false;
            d[n++] = s[i];
        }
    } else if (len == 4 || len == 6 || len == 8) {
        if (!all_digits(s, len))
            return false;
        memcpy(d, s, len);
        n = len;
    } else {
        return false;
    }
    d[n] = '\0';
    int y = (d[0] - '0') * 1000 + (d[1] - '0') * 100 + (d[2] - '0') * 10 + (d[3] - '0');
    int m1 = 1, m2 = 12, d1 = 1, d2;
    if (n >= 6) {
        m1 = m2 = (d[4] - '0') * 10 + (d[5] - '0');
        if (m1 < 1 || m1 > 12)
            return false;
    }
    d2 = days_in_month(y, m2);
    if (n == 8) {
        d1 = d2 = (d[6] - '0') * 10 + (d[7] - '0');
        if (d1 < 1 || d1 > days_in_month(y, m1))
            return false;
    }
    format_ymd(lo, y, m1, d1);
    format_ymd(hi, y, m2, d2);
    return true;
}

void mdb_query_items_free(mdb_query_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].text);
        free(items[i].pattern);
    }
    free(items);
}

static bool is_regex_meta(char c)
{
    return strchr("\\^$.|?*+()[]{}/", c) != NULL;
}

/* Split value on unescaped commas (split=false: one item), unescape "\,"
 * "\*" "\?" "\\", and build a regex for items with wildcards. */
bool mdb_query_split_items(const char *value, bool split, mdb_query_item_t **out, size_t *nout, mdb_error_t *err)
{
    size_t len = strlen(value);
    mdb_query_item_t *items = NULL;
    size_t n = 0, cap = 0;
    char *text = malloc(len + 1), *pat = malloc(len * 2 + 3);
    if (!text || !pat)
        goto oom;
    size_t tl = 0, pl = 0;
    bool wild = false;
    pat[pl++] = '^';
    for (size_t i = 0; i <= len; i++) {
        char c = value[i];
        if (c == '\0' || (split && c == ',')) {
            if (n == MAX_LIST_ITEMS) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "too many values in one list (at most %d)", MAX_LIST_ITEMS);
                goto fail;
            }
            if (n == cap) {
                cap = cap ? cap * 2 : 4;
                mdb_query_item_t *v = realloc(items, cap * sizeof *v);
                if (!v)
                    goto oom;
                items = v;
            }
            text[tl] = '\0';
            pat[pl++] = '$';
            pat[pl] = '\0';
            items[n].text = strdup(text);
            items[n].pattern = wild ? strdup(pat) : NULL;
            n++;
            if (!items[n - 1].text || (wild && !items[n - 1].pattern))
                goto oom;
            tl = 0;
            pl = 1;
            wild = false;
            continue;
        }
        if (c == '\\' && value[i + 1] && strchr(",*?\\", value[i + 1])) {
            c = value[++i];
            text[tl++] = c;
            if (is_regex_meta(c))
                pat[pl++] = '\\';
            pat[pl++] = c;
            continue;
        }
        if (c == '*' || c == '?') {
            wild = true;
            text[tl++] = c;
            if (c == '*') {
                pat[pl++] = '.';
                pat[pl++] = '*';
            } else {
                pat[pl++] = '.';
            }
            continue;
        }
        text[tl++] = c;
        if (is_regex_meta(c))
            pat[pl++] = '\\';
        pat[pl++] = c;
    }
    free(text);
    free(pat);
    *out = items;
    *nout = n;
    return true;
oom:
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
fail:
    free(text);
    free(pat);
    mdb_query_items_free(items, n);
    return false;
}
