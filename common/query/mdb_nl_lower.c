/* mdb_nl_lower.c: lowering the conditions to a filter for the chosen level.
 * A condition whose field the level's documents carry goes into the level's
 * filter; the others become joins on the nearest level that has the field
 * (anti-joins when negated). The explanation says each condition in words. */
#include <ctype.h>
#include <stdlib.h>

#include "mdb_nl_private.h"

static json_t *range_ops(const json_t *lo, const json_t *hi, bool lo_incl, bool hi_incl)
{
    json_t *r = json_object();
    if (lo && !json_is_null(lo))
        json_object_set(r, lo_incl ? "$gte" : "$gt", (json_t *)lo);
    if (hi && !json_is_null(hi))
        json_object_set(r, hi_incl ? "$lte" : "$lt", (json_t *)hi);
    return r;
}

static json_t *cond_ops(const nl_cond_t *c, bool neg);

static json_t *cond_item_one(const nl_cond_t *c, const char *path, bool neg);

/* {path: ops} for c, or {$or|$nor: [...]} when c has alternative ranges or
 * ORed conditions on the same field. */
static json_t *cond_item(const nl_cond_t *c, const char *path, bool neg)
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

static bool all_of(const nl_cond_t *c)
{
    return c->kind == NL_C_IN && c->all && json_array_size(c->groups) > 1;
}

static json_t *cond_item_one(const nl_cond_t *c, const char *path, bool neg)
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
    if (c->kind != NL_C_RANGE || !json_array_size(c->alts))
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

static json_t *cond_ops(const nl_cond_t *c, bool neg)
{
    json_t *o = NULL;
    switch (c->kind) {
    case NL_C_IN:
        if (json_array_size(c->values) == 1 && !neg)
            return json_incref(json_array_get(c->values, 0));
        o = json_object();
        json_object_set(o,
                        json_array_size(c->values) == 1 ? "$ne"
                        : neg                           ? "$nin"
                                                        : "$in",
                        json_array_size(c->values) == 1 ? json_array_get(c->values, 0) : c->values);
        return o;
    case NL_C_RANGE: {
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
    case NL_C_REGEX: {
        json_t *r = json_pack("{s:s, s:s}", "$regex", c->regex, "$options", "i");
        if (!neg)
            return r;
        o = json_object();
        json_object_set_new(o, "$not", r);
        return o;
    }
    case NL_C_PRESENT: {
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

static void fmt_value(mdb_nl_buf_t *b, const json_t *v, const nl_cond_t *c)
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

static void describe_range(mdb_nl_buf_t *b, const nl_cond_t *c, const json_t *lo, const json_t *hi, bool lo_incl,
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

static void describe_one(mdb_nl_buf_t *b, const nl_cond_t *c, bool neg);

static void describe(mdb_nl_buf_t *b, const nl_cond_t *c, bool neg)
{
    describe_one(b, c, neg);
    for (size_t k = 0; k < c->nors; k++) {
        mdb_nl_buf_add(b, neg ? ", nor " : ", or ");
        describe_one(b, &c->ors[k], neg);
    }
}

static void describe_one(mdb_nl_buf_t *b, const nl_cond_t *c, bool neg)
{
    mdb_nl_buf_add(b, c->label ? c->label : "field");
    switch (c->kind) {
    case NL_C_IN: {
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
    case NL_C_RANGE: {
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
    case NL_C_REGEX:
        mdb_nl_buf_addf(b, " %s%s", neg ? "does not satisfy: " : "", c->regex_shown ? c->regex_shown : c->regex);
        break;
    case NL_C_PRESENT: mdb_nl_buf_add(b, neg ? " is absent or empty" : " is recorded"); break;
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
static int apply_level(const nl_cond_t *c, int level)
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

bool nl_lower(nl_parser_t *p, mdb_nl_result_t *r)
{
    int level = p->level;
    if (level < 0) {
        level = MDB_QUERY_STUDIES;
        for (size_t k = 0; k < p->nc; k++)
            if (!p->c[k].flexible && nl_cond_home(&p->c[k]) > level)
                level = nl_cond_home(&p->c[k]);
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
        nl_cond_t *c = &p->c[k];
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
                json_array_append_new(joins,
                                      json_pack("{s:s, s:o, s:s, s:s, s:b}", "collection",
                                                mdb_query_level_name((mdb_query_level_t)at), "filter",
                                                group_item(c->paths[at], g), "local", lf, "foreign", ff, "negate", 0));
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
                                                   mdb_query_level_name((mdb_query_level_t)at), "filter", item, "local",
                                                   lf, "foreign", ff, "negate", 1));
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
        mdb_nl_buf_addf(&ex,
                        " Level %s chosen from the conditions (say \"studies\", \"series\" or \"images\" to "
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
