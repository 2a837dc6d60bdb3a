/* mdb_query_clause: the MongoDB clause of one filter parameter
 * (name=value on a field of a given type): equality, lists, ranges,
 * wildcards and the op: prefixes. */
#include "mdb_query_private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OP_EQ, OP_NE, OP_LT, OP_LTE, OP_GT, OP_GTE, OP_EXISTS } op_t;

static const struct {
    const char *prefix;
    op_t op;
    const char *mongo;
} op_prefixes[] = {
    {"lte:", OP_LTE, "$lte"}, {"lt:", OP_LT, "$lt"}, {"gte:", OP_GTE, "$gte"},          {"gt:", OP_GT, "$gt"},
    {"ne:", OP_NE, "$ne"},    {"eq:", OP_EQ, "$eq"}, {"exists:", OP_EXISTS, "$exists"},
};

/* Append the condition for one scalar item to `cond` under key `key` (a
 * field path for equality inside $or documents, or an operator). Used by
 * helpers below; they produce {path: <something>} documents. */

/* {path: {$regex: pattern}} */
static void clause_regex(bson_t *c, const char *path, const char *pattern)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    BSON_APPEND_UTF8(&sub, "$regex", pattern);
    bson_append_document_end(c, &sub);
}

/* {path: {$gte: lo, $lte: hi}} with string or number bounds (either may be absent). */
static void clause_range_str(bson_t *c, const char *path, const char *lo, const char *hi)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    if (lo)
        BSON_APPEND_UTF8(&sub, "$gte", lo);
    if (hi)
        BSON_APPEND_UTF8(&sub, "$lte", hi);
    bson_append_document_end(c, &sub);
}

static void clause_range_num(bson_t *c, const char *path, const double *lo, const double *hi)
{
    bson_t sub;
    bson_append_document_begin(c, path, -1, &sub);
    if (lo)
        mdb_query_append_number(&sub, "$gte", *lo);
    if (hi)
        mdb_query_append_number(&sub, "$lte", *hi);
    bson_append_document_end(c, &sub);
}

/* Try to read item as a numeric range "a-b", "a-" (open end). Leading '-'
 * belongs to a negative number, so "-5" is not a range. */
static bool parse_num_range(const char *s, bool *has_lo, double *lo, bool *has_hi, double *hi)
{
    size_t len = strlen(s);
    for (size_t i = 1; i < len; i++) {
        if (s[i] != '-' || s[i - 1] == 'e' || s[i - 1] == 'E')
            continue;
        char left[64];
        if (i >= sizeof left)
            return false;
        memcpy(left, s, i);
        left[i] = '\0';
        const char *right = s + i + 1;
        if (!mdb_query_parse_number(left, lo))
            continue;
        if (!*right) {
            *has_lo = true;
            *has_hi = false;
            return true;
        }
        if (mdb_query_parse_number(right, hi)) {
            *has_lo = *has_hi = true;
            return true;
        }
    }
    return false;
}

/* Try to read item as a date range: "A-B", "A-", "-B" where A and B are
 * dates in any mdb_query_parse_date form. */
static bool parse_date_range(const char *s, char lo[9], char hi[9], bool *has_lo, bool *has_hi)
{
    size_t len = strlen(s);
    char a[9], b[9];
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '-')
            continue;
        bool lo_ok = i == 0 || mdb_query_parse_date(s, i, lo, a);
        bool hi_ok = i + 1 == len || mdb_query_parse_date(s + i + 1, len - i - 1, b, hi);
        if (!lo_ok || !hi_ok || (i == 0 && i + 1 == len))
            continue;
        *has_lo = i != 0;
        *has_hi = i + 1 != len;
        (void)a;
        (void)b;
        return true;
    }
    return false;
}

/* Build {path: cond} for one list item on a field of the given type.
 * Returns a new document or NULL with err. */
static bson_t *item_clause(const char *param, const char *path, mdb_qfield_type_t type, const mdb_query_item_t *it,
                           mdb_error_t *err)
{
    bson_t *c = bson_new();
    const char *s = it->text;
    if (it->pattern) {
        if (type == MDB_QFIELD_NUMBER) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is a number field: wildcards are not allowed ('%s')", param, s);
            goto fail;
        }
        clause_regex(c, path, it->pattern);
        return c;
    }
    switch (type) {
    case MDB_QFIELD_STRING: BSON_APPEND_UTF8(c, path, s); return c;
    case MDB_QFIELD_DATE: {
        char lo[9], hi[9];
        bool has_lo, has_hi;
        if (mdb_query_parse_date(s, strlen(s), lo, hi)) {
            if (!strcmp(lo, hi))
                BSON_APPEND_UTF8(c, path, lo);
            else
                clause_range_str(c, path, lo, hi);
            return c;
        }
        if (parse_date_range(s, lo, hi, &has_lo, &has_hi)) {
            if (has_lo && has_hi && strcmp(lo, hi) > 0) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': range '%s' ends before it starts", param, s);
                goto fail;
            }
            clause_range_str(c, path, has_lo ? lo : NULL, has_hi ? hi : NULL);
            return c;
        }
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "'%s' expects a date (YYYY, YYYYMM, YYYYMMDD or YYYY-MM-DD) or a range A-B, got '%s'", param, s);
        goto fail;
    }
    case MDB_QFIELD_NUMBER:
    case MDB_QFIELD_ANY: {
        double v, lo, hi;
        bool has_lo, has_hi;
        if (mdb_query_parse_number(s, &v)) {
            if (type == MDB_QFIELD_NUMBER) {
                mdb_query_append_number(c, path, v);
            } else { /* metadata: match the number or the string as stored */
                bson_t sub, arr;
                bson_append_document_begin(c, path, -1, &sub);
                bson_append_array_begin(&sub, "$in", 3, &arr);
                mdb_query_append_number(&arr, "0", v);
                BSON_APPEND_UTF8(&arr, "1", s);
                bson_append_array_end(&sub, &arr);
                bson_append_document_end(c, &sub);
            }
            return c;
        }
        if (parse_num_range(s, &has_lo, &lo, &has_hi, &hi)) {
            if (has_lo && has_hi && lo > hi) {
                mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': range '%s' ends before it starts", param, s);
                goto fail;
            }
            clause_range_num(c, path, has_lo ? &lo : NULL, has_hi ? &hi : NULL);
            return c;
        }
        if (type == MDB_QFIELD_ANY) {
            BSON_APPEND_UTF8(c, path, s);
            return c;
        }
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a number or a range A-B, got '%s'", param, s);
        goto fail;
    }
    }
    mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': unsupported field type", param);
fail:
    bson_destroy(c);
    return NULL;
}

/* Append a typed comparison value for op on a field. */
static bool append_cmp_value(bson_t *sub, const char *opname, op_t op, const char *param, mdb_qfield_type_t type,
                             const char *s, mdb_error_t *err)
{
    double v;
    if (type == MDB_QFIELD_DATE) {
        char lo[9], hi[9];
        if (!mdb_query_parse_date(s, strlen(s), lo, hi)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a date (YYYY, YYYYMM, YYYYMMDD or YYYY-MM-DD), got '%s'",
                          param, s);
            return false;
        }
        /* A partial date compares by the whole period it names. */
        const char *bound = (op == OP_LT || op == OP_GTE) ? lo : hi;
        if (op == OP_NE || op == OP_EQ)
            bound = lo;
        BSON_APPEND_UTF8(sub, opname, bound);
        return true;
    }
    if (type == MDB_QFIELD_NUMBER) {
        if (!mdb_query_parse_number(s, &v)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' expects a number, got '%s'", param, s);
            return false;
        }
        mdb_query_append_number(sub, opname, v);
        return true;
    }
    if (type == MDB_QFIELD_ANY && mdb_query_parse_number(s, &v)) {
        mdb_query_append_number(sub, opname, v);
        return true;
    }
    BSON_APPEND_UTF8(sub, opname, s);
    return true;
}

/* name=op:value forms. */
static bson_t *op_clause(const char *param, const char *path, mdb_qfield_type_t type, op_t op, const char *mongo,
                         const char *s, mdb_error_t *err)
{
    bson_t *c = bson_new();
    bson_t sub;
    if (op == OP_EXISTS) {
        bool want;
        if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes"))
            want = true;
        else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no"))
            want = false;
        else {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': exists: expects true or false, got '%s'", param, s);
            goto fail;
        }
        bson_append_document_begin(c, path, -1, &sub);
        BSON_APPEND_BOOL(&sub, "$exists", want);
        bson_append_document_end(c, &sub);
        return c;
    }
    if (!*s) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': '%s' needs a value", param, mongo + 1);
        goto fail;
    }
    if (op == OP_NE || op == OP_EQ) {
        /* ne:/eq: take a list too: ne:CT,MR = none of them. */
        mdb_query_item_t *items = NULL;
        size_t n = 0;
        if (!mdb_query_split_items(s, true, &items, &n, err))
            goto fail;
        bson_t arr;
        bson_append_document_begin(c, path, -1, &sub);
        bson_append_array_begin(&sub, op == OP_NE ? "$nin" : "$in", -1, &arr);
        for (size_t i = 0; i < n; i++) {
            char key[16];
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
            if (items[i].pattern) {
                bson_append_regex(&arr, k, -1, items[i].pattern, "");
            } else if (!append_cmp_value(&arr, k, op, param, type, items[i].text, err)) {
                mdb_query_items_free(items, n);
                goto fail;
            }
        }
        bson_append_array_end(&sub, &arr);
        bson_append_document_end(c, &sub);
        mdb_query_items_free(items, n);
        return c;
    }
    bson_append_document_begin(c, path, -1, &sub);
    if (!append_cmp_value(&sub, mongo, op, param, type, s, err))
        goto fail;
    bson_append_document_end(c, &sub);
    return c;
fail:
    bson_destroy(c);
    return NULL;
}

/* Build the clause for param=value on path. */
bson_t *mdb_query_param_clause(const char *param, const char *path, mdb_qfield_type_t type, const char *value,
                               mdb_error_t *err)
{
    for (size_t i = 0; i < sizeof op_prefixes / sizeof op_prefixes[0]; i++) {
        size_t pl = strlen(op_prefixes[i].prefix);
        if (!strncmp(value, op_prefixes[i].prefix, pl))
            return op_clause(param, path, type, op_prefixes[i].op, op_prefixes[i].mongo, value + pl, err);
    }
    if (!*value) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' needs a value", param);
        return NULL;
    }
    mdb_query_item_t *items = NULL;
    size_t n = 0;
    if (!mdb_query_split_items(value, true, &items, &n, err))
        return NULL;
    bson_t *c = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].text[0]) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s': empty value in list '%s'", param, value);
            goto done;
        }
    }
    if (n == 1) {
        c = item_clause(param, path, type, &items[0], err);
        goto done;
    }
    /* Several values: plain scalars of string/number fields become $in;
     * anything else (ranges, wildcards, metadata) becomes $or. */
    bool simple = type == MDB_QFIELD_STRING;
    for (size_t i = 0; simple && i < n; i++)
        simple = !items[i].pattern;
    c = bson_new();
    bson_t arr;
    if (simple) {
        bson_t sub;
        bson_append_document_begin(c, path, -1, &sub);
        bson_append_array_begin(&sub, "$in", 3, &arr);
        for (size_t i = 0; i < n; i++) {
            char key[16];
            const char *k;
            bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
            BSON_APPEND_UTF8(&arr, k, items[i].text);
        }
        bson_append_array_end(&sub, &arr);
        bson_append_document_end(c, &sub);
        goto done;
    }
    bson_append_array_begin(c, "$or", 3, &arr);
    for (size_t i = 0; i < n; i++) {
        bson_t *one = item_clause(param, path, type, &items[i], err);
        if (!one) {
            bson_destroy(c);
            c = NULL;
            goto done;
        }
        char key[16];
        const char *k;
        bson_uint32_to_string((uint32_t)i, &k, key, sizeof key);
        bson_append_document(&arr, k, -1, one);
        bson_destroy(one);
    }
    bson_append_array_end(c, &arr);
done:
    mdb_query_items_free(items, n);
    return c;
}

/* Studies carry both `modality` and the `modalities` of their series: a
 * modality filter on studies matches either (both must hold for negations:
 * ne: and exists:false). Takes ownership of a and b. */
bson_t *mdb_query_either_clause(bson_t *a, bson_t *b, bool negation)
{
    bson_t *out = bson_new();
    bson_t arr;
    bson_append_array_begin(out, negation ? "$and" : "$or", -1, &arr);
    bson_append_document(&arr, "0", 1, a);
    bson_append_document(&arr, "1", 1, b);
    bson_append_array_end(out, &arr);
    bson_destroy(a);
    bson_destroy(b);
    return out;
}
