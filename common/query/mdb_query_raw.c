/* mdb_query_raw: validation of raw filters. Every key that starts with '$'
 * must be on a whitelist for its position (query document, field operator,
 * aggregation expression inside $expr); everything else is a field name and
 * may not contain a '$'-segment. The JSON is converted to BSON only after
 * that, so nothing like extended-JSON type wrappers sneaks in. */
#include "mdb_query_private.h"
#include "mdb_bson_json.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 24
#define MAX_NODES 20000

typedef struct {
    const char *name;
    const char *reason; /* NULL = allowed */
} op_rule_t;

/* Refused operators with the reason, checked before the whitelist so the
 * answer says why rather than just "unknown". */
static const op_rule_t refused_ops[] = {
    {"$where", "$where runs JavaScript on the server"},
    {"$function", "$function runs JavaScript on the server"},
    {"$accumulator", "$accumulator runs JavaScript on the server"},
    {"$out", "$out writes query results into a collection"},
    {"$merge", "$merge writes query results into a collection"},
    {"$text", "$text needs a text index, which the catalogue does not have"},
    {"$near", "geospatial operators are not supported"},
    {"$nearSphere", "geospatial operators are not supported"},
    {"$geoWithin", "geospatial operators are not supported"},
    {"$geoIntersects", "geospatial operators are not supported"},
    {"$jsonSchema", "$jsonSchema is not supported"},
    {"$lookup", "$lookup reads other collections"},
    {"$unionWith", "$unionWith reads other collections"},
};

/* Field-level query operators. */
static const char *const field_ops[] = {"$eq",  "$ne",  "$gt",        "$gte",  "$lt",    "$lte",
                                        "$in",  "$nin", "$exists",    "$type", "$regex", "$options",
                                        "$not", "$all", "$elemMatch", "$size", "$mod"};

/* Document-level operators. */
static const char *const doc_ops[] = {"$and", "$or", "$nor", "$expr", "$comment"};

/* Aggregation expression operators accepted inside $expr. */
static const char *const expr_ops[] = {
    "$eq",          "$ne",     "$gt",      "$gte",     "$lt",       "$lte",      "$cmp",      "$and",     "$or",
    "$not",         "$in",     "$size",    "$add",     "$subtract", "$multiply", "$divide",   "$mod",     "$abs",
    "$cond",        "$ifNull", "$toLower", "$toUpper", "$concat",   "$substrCP", "$strLenCP", "$literal", "$type",
    "$arrayElemAt", "$min",    "$max",     "$isArray", "$toString", "$toInt",    "$toDouble"};

bool mdb_query_in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(s, list[i]))
            return true;
    return false;
}

#define LIST(a) (a), (sizeof(a) / sizeof((a)[0]))

bool mdb_query_refused_reason(const char *op, mdb_error_t *err)
{
    for (size_t i = 0; i < sizeof refused_ops / sizeof refused_ops[0]; i++) {
        if (!strcmp(op, refused_ops[i].name)) {
            mdb_error_set(err, MDB_ERR_QUERY, 0, "operator %s is refused: %s", op, refused_ops[i].reason);
            return true;
        }
    }
    return false;
}

bool mdb_query_operator_allowed(const char *op, mdb_error_t *err)
{
    if (!op || op[0] != '$') {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "'%s' is not an operator", op ? op : "(null)");
        return false;
    }
    if (mdb_query_refused_reason(op, err))
        return false;
    if (mdb_query_in_list(op, LIST(field_ops)) || mdb_query_in_list(op, LIST(doc_ops)))
        return true;
    mdb_error_set(err, MDB_ERR_QUERY, 0,
                  "operator %s is not allowed (allowed: $and $or $nor $expr $eq $ne $gt $gte "
                  "$lt $lte $in $nin $exists $type $regex $options $not $all $elemMatch $size "
                  "$mod)",
                  op);
    return false;
}

typedef struct {
    mdb_error_t *err;
    size_t nodes;
    char where[160]; /* path of the node being checked, for messages */
} walk_t;

static bool walk_budget(walk_t *w, int depth)
{
    if (depth > MAX_DEPTH) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "query is nested too deeply (more than %d levels)", MAX_DEPTH);
        return false;
    }
    if (++w->nodes > MAX_NODES) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "query is too large (more than %d values)", MAX_NODES);
        return false;
    }
    return true;
}

/* Field names: non-empty, valid UTF-8 (jansson guarantees), no NUL, no
 * segment starting with '$', no empty segments. */
static bool check_field_name(walk_t *w, const char *key)
{
    if (!*key) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "empty field name");
        return false;
    }
    if (strlen(key) > 512) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name too long");
        return false;
    }
    bool seg_start = true;
    for (const char *p = key; *p; p++) {
        if (*p == '.') {
            if (seg_start) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' has an empty path segment", key);
                return false;
            }
            seg_start = true;
            continue;
        }
        if (seg_start && *p == '$') {
            const char *dot = strchr(p, '.');
            int n = dot ? (int)(dot - p) : (int)strlen(p);
            char op[64];
            snprintf(op, sizeof op, "%.*s", n < 60 ? n : 60, p);
            if (p == key) {
                if (!mdb_query_refused_reason(op, w->err))
                    mdb_error_set(w->err, MDB_ERR_QUERY, 0, "operator %s is not allowed here (%s)", op,
                                  w->where[0] ? w->where : "top level");
            } else {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' has a segment starting with '$'", key);
            }
            return false;
        }
        seg_start = false;
    }
    if (seg_start) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "field name '%s' ends with '.'", key);
        return false;
    }
    return true;
}

bool mdb_query_check_field_name(const char *key, mdb_error_t *err)
{
    walk_t w = {.err = err};
    return check_field_name(&w, key);
}

static bool walk_query_doc(walk_t *w, const json_t *doc, int depth);
static bool walk_field_value(walk_t *w, const char *field, const json_t *v, int depth);
static bool walk_expr(walk_t *w, const json_t *v, int depth);

/* Literal values (equality operands, $in members): no key may start with '$'. */
static bool walk_literal(walk_t *w, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (!walk_literal(w, e, depth + 1)) return false;
        return true;
    }
    if (json_is_object(v)) {
        const char *k;
        const json_t *e;
        json_object_foreach((json_t *)v, k, e)
        {
            if (k[0] == '$') {
                if (!mdb_query_refused_reason(k, w->err))
                    mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                                  "operator %s is not allowed inside a literal value (%s); MongoDB extended JSON "
                                  "type wrappers are not accepted",
                                  k, w->where);
                return false;
            }
            if (!walk_literal(w, e, depth + 1))
                return false;
        }
    }
    return true;
}

bool mdb_query_is_operator_object(const json_t *v)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return false;
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e)
    {
        (void)e;
        return k[0] == '$';
    }
    return false;
}

static bool walk_operator_object(walk_t *w, const char *field, const json_t *v, int depth)
{
    const char *op;
    const json_t *arg;
    bool has_regex = json_object_get(v, "$regex") != NULL;
    json_object_foreach((json_t *)v, op, arg)
    {
        if (op[0] != '$') {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                          "field '%s' mixes operators and field names ('%s'); use one or the other", field, op);
            return false;
        }
        if (mdb_query_refused_reason(op, w->err))
            return false;
        if (!mdb_query_in_list(op, LIST(field_ops))) {
            if (mdb_query_in_list(op, LIST(doc_ops)))
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "operator %s belongs at document level, not on field '%s'", op,
                              field);
            else
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s is not allowed (field '%s'; allowed: $eq $ne $gt $gte $lt $lte $in $nin "
                              "$exists $type $regex $options $not $all $elemMatch $size $mod)",
                              op, field);
            return false;
        }
        if (!strcmp(op, "$in") || !strcmp(op, "$nin") || !strcmp(op, "$all")) {
            if (!json_is_array(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s on field '%s' needs an array", op, field);
                return false;
            }
            if (!walk_literal(w, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$regex")) {
            if (!json_is_string(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$regex on field '%s' needs a string", field);
                return false;
            }
        } else if (!strcmp(op, "$options")) {
            const char *o = json_string_value(arg);
            if (!has_regex || !o || strspn(o, "imsx") != strlen(o)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "$options on field '%s' needs $regex and a string of the flags i, m, s, x", field);
                return false;
            }
        } else if (!strcmp(op, "$exists")) {
            if (!json_is_boolean(arg) && !json_is_number(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$exists on field '%s' needs true or false", field);
                return false;
            }
        } else if (!strcmp(op, "$size")) {
            if (!json_is_integer(arg) || json_integer_value(arg) < 0) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$size on field '%s' needs a non-negative integer", field);
                return false;
            }
        } else if (!strcmp(op, "$mod")) {
            if (!json_is_array(arg) || json_array_size(arg) != 2 || !json_is_number(json_array_get(arg, 0)) ||
                !json_is_number(json_array_get(arg, 1)) || json_number_value(json_array_get(arg, 0)) == 0) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$mod on field '%s' needs [divisor, remainder], divisor != 0",
                              field);
                return false;
            }
        } else if (!strcmp(op, "$type")) {
            if (!json_is_string(arg) && !json_is_integer(arg) && !json_is_array(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$type on field '%s' needs a type name or number", field);
                return false;
            }
            if (!walk_literal(w, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$not")) {
            if (!mdb_query_is_operator_object(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$not on field '%s' needs an operator object", field);
                return false;
            }
            if (!walk_operator_object(w, field, arg, depth + 1))
                return false;
        } else if (!strcmp(op, "$elemMatch")) {
            if (!json_is_object(arg)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$elemMatch on field '%s' needs an object", field);
                return false;
            }
            if (!(mdb_query_is_operator_object(arg) ? walk_operator_object(w, field, arg, depth + 1)
                                                    : walk_query_doc(w, arg, depth + 1)))
                return false;
        } else { /* comparison: any literal */
            if (!walk_literal(w, arg, depth + 1))
                return false;
        }
    }
    return true;
}

static bool walk_field_value(walk_t *w, const char *field, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    snprintf(w->where, sizeof w->where, "field '%.120s'", field);
    if (mdb_query_is_operator_object(v))
        return walk_operator_object(w, field, v, depth);
    return walk_literal(w, v, depth);
}

static bool walk_expr(walk_t *w, const json_t *v, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strncmp(s, "$$", 2) && strcmp(s, "$$ROOT") != 0 && strncmp(s, "$$ROOT.", 7) != 0 &&
            strcmp(s, "$$CURRENT") != 0 && strncmp(s, "$$CURRENT.", 10) != 0) {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0, "variable %s is not allowed in $expr", s);
            return false;
        }
        return true;
    }
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) if (!walk_expr(w, e, depth + 1)) return false;
        return true;
    }
    if (!json_is_object(v))
        return true;
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e)
    {
        if (k[0] == '$') {
            if (mdb_query_refused_reason(k, w->err)) {
                mdb_error_prefix(w->err, "in $expr");
                return false;
            }
            if (!mdb_query_in_list(k, LIST(expr_ops))) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "expression operator %s is not allowed in $expr", k);
                return false;
            }
            if (!strcmp(k, "$literal")) {
                if (!walk_literal(w, e, depth + 1))
                    return false;
                continue;
            }
        } else if (!check_field_name(w, k)) {
            return false;
        }
        if (!walk_expr(w, e, depth + 1))
            return false;
    }
    return true;
}

static bool walk_query_doc(walk_t *w, const json_t *doc, int depth)
{
    if (!walk_budget(w, depth))
        return false;
    if (!json_is_object(doc)) {
        mdb_error_set(w->err, MDB_ERR_QUERY, 0, "a query must be a JSON object");
        return false;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)doc, k, v)
    {
        if (k[0] != '$') {
            if (!check_field_name(w, k) || !walk_field_value(w, k, v, depth + 1))
                return false;
            continue;
        }
        if (mdb_query_refused_reason(k, w->err))
            return false;
        if (!mdb_query_in_list(k, LIST(doc_ops))) {
            if (mdb_query_in_list(k, LIST(field_ops)))
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s must be applied to a field, e.g. {\"field\": {\"%s\": ...}}", k, k);
            else
                mdb_error_set(w->err, MDB_ERR_QUERY, 0,
                              "operator %s is not allowed (allowed at document level: $and $or $nor $expr $comment)",
                              k);
            return false;
        }
        if (!strcmp(k, "$comment")) {
            if (!json_is_string(v)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "$comment needs a string");
                return false;
            }
            continue;
        }
        if (!strcmp(k, "$expr")) {
            snprintf(w->where, sizeof w->where, "$expr");
            if (!walk_expr(w, v, depth + 1))
                return false;
            continue;
        }
        /* $and / $or / $nor */
        if (!json_is_array(v) || json_array_size(v) == 0) {
            mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s needs a non-empty array of query objects", k);
            return false;
        }
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_object(e)) {
                mdb_error_set(w->err, MDB_ERR_QUERY, 0, "%s[%zu] must be a query object", k, i);
                return false;
            }
            if (!walk_query_doc(w, e, depth + 1))
                return false;
        }
    }
    return true;
}

/* JSON → BSON, after validation. Integers become int32 when they fit. */
bool mdb_query_filter_from_json(const json_t *filter, bson_t *out, mdb_error_t *err)
{
    walk_t w = {.err = err};
    if (!walk_query_doc(&w, filter, 0))
        return false;
    bson_init(out);
    /* walk_query_doc has bounded the nesting; the one JSON->BSON converter serves. */
    if (!mdb_docs_json_to_bson(filter, out)) {
        bson_destroy(out);
        mdb_error_set(err, MDB_ERR_QUERY, 0, "filter cannot be represented as BSON (too large or too deep)");
        return false;
    }
    return true;
}
