/* mdb_nl_numbers.c: numbers with units and comparators ("at most 2.5 mm",
 * "between 100 and 120 kV", "more than 100 images"): the numeric fields named
 * explicitly, patient age, a unit without a field, and "thin"/"thick"
 * slices. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

static size_t unit_at(const nl_parser_t *p, size_t i, nl_unit_t *u, double *scale)
{
    size_t n;
    *scale = 1;
    if ((n = nl_phrase_at(p, i, "mm|millimeter*|millimetre*"))) {
        *u = NL_U_MM;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "cm|centimeter*|centimetre*"))) {
        *u = NL_U_MM;
        *scale = 10;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "kv|kvp|kilovolt*|kilovolt peak"))) {
        *u = NL_U_KV;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "image*|instance*|slice*|file*|frame*|picture*|sop instance*"))) {
        *u = NL_U_COUNT;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "years old|year old|yo|y|years of age|yrs old|yr old"))) {
        *u = NL_U_YEARS;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "year*|yr*"))) {
        *u = NL_U_YEARS;
        return n;
    }
    *u = NL_U_NONE;
    return 0;
}

bool nl_unit_follows(const nl_parser_t *p, size_t i)
{
    nl_unit_t u;
    double s;
    return unit_at(p, i, &u, &s) > 0 && u != NL_U_YEARS && u != NL_U_COUNT;
}

static size_t comparator_at(const nl_parser_t *p, size_t i, nl_nop_t *op)
{
    size_t n;
    if ((n = nl_phrase_at(p, i,
                          "at most|no more than|not more than|up to|<=|l|maximum|max|no greater than|not greater than|"
                          "no thicker than|not thicker than|no larger than|not exceeding|no higher than|not above|"
                          "less than or equal to|smaller than or equal to|lower than or equal to|below or equal to|"
                          "no older than|not older than"))) {
        *op = NL_N_LE;
        return n;
    }
    if ((n = nl_phrase_at(p, i,
                          "at least|no less than|not less than|>=|g|minimum|min|no thinner than|not thinner than|"
                          "no fewer than|not below|greater than or equal to|more than or equal to|"
                          "larger than or equal to|above or equal to|no younger than|not younger than"))) {
        *op = NL_N_GE;
        return n;
    }
    if ((n = nl_phrase_at(p, i,
                          "less than|lower than|below|under|smaller than|thinner than|fewer than|<|younger than|"
                          "shorter than|beneath|finer than|thinner then|less then"))) {
        *op = NL_N_LT;
        return n;
    }
    if ((n = nl_phrase_at(p, i,
                          "more than|greater than|above|over|larger than|thicker than|higher than|>|exceeding|"
                          "older than|bigger than|more then|greater then|in excess of"))) {
        *op = NL_N_GT;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "equal to|equals|exactly|=|of exactly|precisely"))) {
        *op = NL_N_EQ;
        return n;
    }
    return 0;
}

/* The symbol tokens carry their text; map them to the words phrase_at knows. */
static bool num_tok(const nl_parser_t *p, size_t i)
{
    return i < p->n && !p->t[i].used && p->t[i].kind == NL_T_NUM;
}

/* A numeric constraint at i: [comparator] N [unit] [to M [unit]] [or less|or more],
 * or "between N and M [unit]". */
bool nl_parse_numc(const nl_parser_t *p, size_t i, nl_numc_t *nc)
{
    memset(nc, 0, sizeof *nc);
    size_t k = i, n;
    double scale = 1, scale2 = 1;
    nl_unit_t u2 = NL_U_NONE;
    if ((n = nl_phrase_at(p, k, "between|from"))) {
        bool between = p->t[k].low[0] == 'b';
        k += n;
        if (!num_tok(p, k))
            return false;
        double a = p->t[k].num;
        k++;
        k += unit_at(p, k, &nc->unit, &scale);
        size_t sep = between ? nl_phrase_at(p, k, "and|to|-") : nl_phrase_at(p, k, "to|-");
        if (!sep || !num_tok(p, k + sep))
            return false;
        k += sep;
        double b = p->t[k].num;
        k++;
        k += unit_at(p, k, &u2, &scale2);
        if (nc->unit == NL_U_NONE) {
            nc->unit = u2;
            scale = scale2;
        }
        if (!between && nc->unit == NL_U_NONE)
            return false; /* "from 2000 to 2001" is a date range */
        nc->op = NL_N_RANGE;
        nc->a = fmin(a, b) * scale;
        nc->b = fmax(a, b) * (u2 != NL_U_NONE ? scale2 : scale);
        nc->had_cmp = true;
        nc->len = k - i;
        return true;
    }
    nl_nop_t op = NL_N_EQ;
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
        size_t sep = nl_phrase_at(p, k, "to|-|through");
        if (sep && num_tok(p, k + sep)) {
            double b = p->t[k + sep].num;
            size_t k2 = k + sep + 1;
            size_t ul = unit_at(p, k2, &u2, &scale2);
            if (nc->unit == NL_U_NONE && ul) {
                nc->unit = u2;
                nc->a *= scale2;
                scale = scale2;
            }
            nc->op = NL_N_RANGE;
            nc->b = b * (ul ? scale2 : scale);
            if (nc->b < nc->a) {
                double t = nc->a;
                nc->a = nc->b;
                nc->b = t;
            }
            nc->had_cmp = true;
            k = k2 + ul;
        } else if ((n = nl_phrase_at(p, k,
                                     "or less|or fewer|or under|or below|and below|and under|or thinner|or lower|"
                                     "or smaller|at most|max|maximum|or finer|and thinner|and less"))) {
            nc->op = NL_N_LE;
            nc->had_cmp = true;
            k += n;
        } else if ((n = nl_phrase_at(p, k,
                                     "or more|or greater|or above|and above|and over|or thicker|or higher|or larger|"
                                     "at least|min|minimum|plus|+|and more|and thicker|or older|and older"))) {
            nc->op = NL_N_GE;
            nc->had_cmp = true;
            k += n;
        }
    }
    nc->len = k - i;
    return true;
}

void nl_numc_to_cond(nl_cond_t *c, const nl_numc_t *nc)
{
    c->kind = nc->op == NL_N_EQ ? NL_C_IN : NL_C_RANGE;
    switch (nc->op) {
    case NL_N_EQ:
        c->values = json_array();
        json_array_append_new(c->values, nl_num_json(nc->a));
        break;
    case NL_N_LT:
    case NL_N_LE:
        c->hi = nl_num_json(nc->a);
        c->hi_incl = nc->op == NL_N_LE;
        break;
    case NL_N_GT:
    case NL_N_GE:
        c->lo = nl_num_json(nc->a);
        c->lo_incl = nc->op == NL_N_GE;
        break;
    case NL_N_RANGE:
        c->lo = nl_num_json(nc->a);
        c->hi = nl_num_json(nc->b);
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
    {"kvp|kv|tube voltage|peak kilovoltage|kilovoltage|voltage|tube potential|peak voltage", "kvp", "kVp", "kV", false},
    {"series number|series no|series nr|series #|seriesnumber", "series_number", "series number", NULL, false},
    {"instance number|image number|instance no|image no|instancenumber|slice number", "instance_number",
     "instance number", NULL, false},
    {"number of images|number of slices|number of instances|number of files|image count|instance count|"
     "images count|slice count|instances count|images per series|number of frames",
     "instance_count", "number of instances", NULL, false},
};

size_t nl_rule_numeric_field(nl_parser_t *p, size_t i)
{
    for (size_t f = 0; f < sizeof NUMFIELDS / sizeof NUMFIELDS[0]; f++) {
        size_t n = nl_phrase_at(p, i, NUMFIELDS[f].phrases);
        if (!n)
            continue;
        size_t k = i + n;
        k += nl_phrase_at(p, k, "of|is|=|:|was|were|at|with|set to|being|are|has|have");
        nl_numc_t nc;
        if (!nl_parse_numc(p, k, &nc))
            continue;
        if (NUMFIELDS[f].needs_cmp && !nc.had_cmp && nc.unit != NL_U_MM)
            continue;
        if (nc.unit == NL_U_COUNT || nc.unit == NL_U_YEARS)
            continue;
        size_t total = k + nc.len - i;
        nl_cond_t *c = nl_cond_new(p);
        if (!c)
            return 0;
        nl_numc_to_cond(c, &nc);
        c->label = strdup(NUMFIELDS[f].label);
        c->unit = NUMFIELDS[f].unit;
        nl_cond_field(p, c, NUMFIELDS[f].path);
        char words[256];
        nl_words_text(p, i, total, words, sizeof words);
        nl_mark_used(p, i, total);
        nl_cond_commit(p, words);
        return total;
    }
    return 0;
}

/* Age: "patients older than 60", "aged 40 to 60", "60 years old". PatientAge
 * is a DICOM AS string ("061Y"); years compare as zero-padded strings and a
 * pattern restricts the match to ages given in years. */
static void add_age(nl_parser_t *p, const nl_numc_t *nc, const char *words)
{
    bool known = false;
    for (int l = 0; l < NL_LEVELS; l++)
        known = known || mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, "metadata.PatientAge", NULL);
    if (!known) {
        nl_note(p, "\"%s\" was not used: PatientAge is not recorded in this catalogue", words);
        p->neg = false;
        return;
    }
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return;
    char a[8], b[8];
    snprintf(a, sizeof a, "%03dY", (int)nc->a);
    snprintf(b, sizeof b, "%03dY", (int)nc->b);
    c->label = strdup("patient age (years)");
    nl_cond_field(p, c, "metadata.PatientAge");
    if (nc->op == NL_N_EQ) {
        c->kind = NL_C_IN;
        c->values = json_array();
        json_array_append_new(c->values, json_string(a));
    } else {
        c->kind = NL_C_RANGE;
        if (nc->op == NL_N_GT || nc->op == NL_N_GE || nc->op == NL_N_RANGE) {
            c->lo = json_string(a);
            c->lo_incl = nc->op != NL_N_GT;
        }
        if (nc->op == NL_N_LT || nc->op == NL_N_LE) {
            c->hi = json_string(a);
            c->hi_incl = nc->op == NL_N_LE;
        }
        if (nc->op == NL_N_RANGE) {
            c->hi = json_string(b);
            c->hi_incl = true;
        }
    }
    bool neg = p->neg;
    nl_cond_commit(p, words);
    if (nc->op == NL_N_EQ)
        return;
    /* keep to ages in years: a second condition on the same field */
    nl_cond_t *g = nl_cond_new(p);
    if (!g)
        return;
    g->kind = NL_C_REGEX;
    g->regex = strdup("^[0-9]{3}Y$");
    g->regex_shown = strdup("is given in years");
    g->label = strdup("patient age");
    nl_cond_field(p, g, "metadata.PatientAge");
    p->neg = false;
    if (!neg)
        nl_cond_commit(p, words);
    else
        nl_cond_free(g);
}

size_t nl_rule_age(nl_parser_t *p, size_t i)
{
    size_t n =
        nl_phrase_at(p, i, "aged|age|patient age|patients aged|patient aged|ages|patients|patient|subjects|people");
    size_t k = i + n;
    k += nl_phrase_at(p, k, "of|is|=|:|was|were|are|between");
    if (n && k > i + n && !strcmp(p->t[k - 1].low, "between"))
        k--;
    nl_numc_t nc;
    if (!nl_parse_numc(p, k, &nc))
        return 0;
    bool explicit_age = n && strcmp(p->t[i].low, "patients") && strcmp(p->t[i].low, "patient") &&
                        strcmp(p->t[i].low, "subjects") && strcmp(p->t[i].low, "people");
    /* "female patients older than 60": a person word just before, read by another rule */
    bool person = n > 0;
    if (!n && i > 0) {
        const nl_tok_t *prev = &p->t[i - 1];
        static const char *const persons[] = {"patient", "patients", "subject", "subjects", "people",  "men", "women",
                                              "male",    "males",    "female",  "females",  "persons", NULL};
        for (int q = 0; persons[q] && prev->kind == NL_T_WORD; q++)
            if (!strcmp(prev->low, persons[q]))
                person = true;
    }
    size_t total = k + nc.len - i;
    if (nc.unit == NL_U_YEARS) {
        /* "60 years old" needs "old" or an age word; "5 years" alone is a time span */
        if (!explicit_age && !(person && nc.had_cmp) && !strstr(p->t[k + nc.len - 1].low, "old") &&
            !nl_tok_is(p, k + nc.len, "old"))
            return 0;
        if (nl_tok_is(p, i + total, "old"))
            total++;
    } else if (nc.unit != NL_U_NONE) {
        return 0;
    } else if (!explicit_age && !(person && nc.had_cmp)) {
        return 0;
    } else if (nl_tok_is(p, i + total, "old")) {
        total++;
    }
    char words[256];
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    add_age(p, &nc, words);
    return total;
}

/* A number with a unit and no field: 2.5 mm → slice thickness, 120 kV → kVp,
 * more than 100 images → number of instances. */
size_t nl_rule_numeric_unit(nl_parser_t *p, size_t i)
{
    nl_numc_t nc;
    if (!nl_parse_numc(p, i, &nc) || nc.unit == NL_U_YEARS)
        return 0;
    size_t total = nc.len;
    if (nc.unit == NL_U_NONE && nc.had_cmp && nl_tok_is(p, i + total, "series")) {
        nc.unit = NL_U_SERIES; /* "studies with more than 2 series" */
        total++;
    }
    if (nc.unit == NL_U_NONE)
        return 0;
    const char *path = NULL, *label = NULL, *unit = NULL;
    if (nc.unit == NL_U_MM) {
        path = "slice_thickness", label = "slice thickness", unit = "mm";
        total += nl_phrase_at(p, i + total, "slice*|section*|thick|thickness|cut*|sliced|thin");
    } else if (nc.unit == NL_U_KV) {
        path = "kvp", label = "kVp", unit = "kV";
    } else if (nc.unit == NL_U_SERIES) {
        path = "series_count", label = "number of series";
    } else {
        if (!nc.had_cmp && !nl_phrase_at(p, i + total, "or more|or less|each|per series|in total"))
            return 0; /* "3 images" alone is too vague */
        path = "instance_count", label = "number of instances";
    }
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    nl_numc_to_cond(c, &nc);
    c->label = strdup(label);
    c->unit = unit;
    nl_cond_field(p, c, path);
    char words[256];
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    nl_cond_commit(p, words);
    return total;
}

size_t nl_rule_thin_thick(nl_parser_t *p, size_t i)
{
    size_t n;
    bool thin;
    if ((n = nl_phrase_at(p, i,
                          "thin|thinly|thin slice*|thin section*|thin cut*|thinly sliced|thin sliced|"
                          "high resolution|hi res|high res|thin layer*|fine slice*|thin slab*"))) {
        thin = true;
    } else if ((n = nl_phrase_at(p, i, "thick|thick slice*|thick section*|thick cut*|thickly sliced|thick sliced"))) {
        thin = false;
    } else {
        return 0;
    }
    if (nl_tok_is(p, i + n, "than") || nl_tok_is(p, i + n, "then"))
        return 0;
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    c->kind = NL_C_RANGE;
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
    nl_words_text(p, i, n, words, sizeof words);
    char nt[200];
    snprintf(nt, sizeof nt, "\"%s\": default threshold %.1f mm", words, MDB_NL_THIN_SLICE_MM);
    nl_u8trim(nt);
    c->note = strdup(nt);
    nl_cond_field(p, c, "slice_thickness");
    nl_mark_used(p, i, n);
    nl_cond_commit(p, words);
    return n;
}
