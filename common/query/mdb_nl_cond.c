/* mdb_nl_cond.c: the conditions a sentence is read into and the parser
 * state the grammar rules share: token helpers (phrase matching, marking
 * tokens read, notes), the word lists every rule consults, and committing a
 * condition (pending negation, value lists of one field, "or" between two
 * readings of a field, alternative ranges). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"
#include "mdb_nl_spell.h"

void nl_cond_free(nl_cond_t *c)
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
        nl_cond_free(&c->ors[k]);
    free(c->ors);
    json_decref(c->groups);
    memset(c, 0, sizeof *c);
}

static bool cond_same_field(const nl_cond_t *a, const nl_cond_t *b)
{
    for (int l = 0; l < NL_LEVELS; l++) {
        if (!a->paths[l] != !b->paths[l])
            return false;
        if (a->paths[l] && strcmp(a->paths[l], b->paths[l]))
            return false;
    }
    return true;
}

int nl_cond_home(const nl_cond_t *c)
{
    for (int l = 0; l < NL_LEVELS; l++)
        if (c->paths[l])
            return l;
    return -1;
}
/* ======================================================================
 * parser state and token helpers
 * ====================================================================== */

bool nl_tok_is(const nl_parser_t *p, size_t i, const char *word)
{
    if (p->collect && !mdb_nl_words_add_phrases(p->collect, word))
        ((nl_parser_t *)p)->oom = true;
    return i < p->n && p->t[i].kind == NL_T_WORD && !strcmp(p->t[i].low, word);
}

/* Does one phrase word match token i? A trailing '*' allows a plural s/es. */
static bool word_match(const nl_tok_t *t, const char *w, size_t wl)
{
    if (t->kind != NL_T_WORD && t->kind != NL_T_SYM && t->kind != NL_T_SEP)
        return false;
    bool plural = wl > 1 && w[wl - 1] == '*';
    if (plural)
        wl--;
    size_t tl = strlen(t->low);
    if (t->kind == NL_T_SYM)
        return (wl == 1 && w[0] == t->sym) || (strlen(t->text) == wl && !strncmp(t->text, w, wl));
    if (t->kind == NL_T_SEP)
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
size_t nl_phrase_at(const nl_parser_t *p, size_t i, const char *alts)
{
    if (p->collect && !mdb_nl_words_add_phrases(p->collect, alts))
        ((nl_parser_t *)p)->oom = true;
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

void nl_mark_used(nl_parser_t *p, size_t i, size_t n)
{
    for (size_t k = i; k < i + n && k < p->n; k++)
        p->t[k].used = true;
}

void nl_note(nl_parser_t *p, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    nl_u8trim(buf);
    va_end(ap);
    if (json_array_append_new(p->notes, json_string(buf)))
        p->oom = true;
}

const char *const NL_STOPWORDS =
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

bool nl_is_stopword(const char *low)
{
    size_t n = strlen(low);
    const char *s = NL_STOPWORDS;
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

bool nl_tok_is_filler(const nl_tok_t *t)
{
    return t->kind == NL_T_WORD && nl_is_stopword(t->low);
}

const char *const NL_LEVEL_WORDS = "study|studies|series|image*|instance*|exam*|examination*|slice*|file*";
const char *const NL_CONNECTORS = "and|or|nor|plus|as well as|and also|and/or|,|&";
const char *const NL_NEGATIONS =
    "not|no|non|without|w o|wo|with out|excluding|exclude|excludes|except|except for|but not|other than|never|neither|"
    "isn't|aren't|wasn't|weren't|don't|doesn't|lacking|lack|lacks|minus|omitting|omit|omits|exclusive of|"
    "apart from|leaving out|besides|ignoring|ignore|skip|skipping|free of|isnt|arent|dont|doesnt";
size_t nl_words_text(const nl_parser_t *p, size_t i, size_t n, char *out, size_t cap)
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
/* ======================================================================
 * adding conditions
 * ====================================================================== */

nl_cond_t *nl_cond_new(nl_parser_t *p)
{
    if (p->nc == p->capc) {
        size_t cap = p->capc ? p->capc * 2 : 16;
        nl_cond_t *nc = realloc(p->c, cap * sizeof *nc);
        if (!nc) {
            p->oom = true;
            return NULL;
        }
        p->c = nc;
        p->capc = cap;
    }
    nl_cond_t *c = &p->c[p->nc];
    memset(c, 0, sizeof *c);
    return c;
}

/* Set paths[] from the vocabulary: path at every level declaring it. */
bool nl_cond_field(nl_parser_t *p, nl_cond_t *c, const char *path)
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
char *nl_field_label(const char *path)
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
static bool ranges_disjoint(const nl_cond_t *a, const nl_cond_t *b)
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
static bool or_merge(nl_parser_t *p, nl_cond_t *c)
{
    if (p->nc == 0)
        return false;
    nl_cond_t *o = &p->c[p->nc - 1];
    if (o->neg != c->neg || !cond_same_field(o, c))
        return false;
    bool names = (o->kind == NL_C_IN || o->kind == NL_C_REGEX) && (c->kind == NL_C_IN || c->kind == NL_C_REGEX);
    if (!names || (o->kind == NL_C_IN && c->kind == NL_C_IN) ||
        (o->kind == NL_C_REGEX && c->kind == NL_C_REGEX && o->eq_regex && c->eq_regex))
        return false; /* merged as a value list below */
    if (o->kind == NL_C_REGEX && c->kind == NL_C_REGEX && !p->cont_or && !o->nors)
        return false; /* "described as 'a' and 'b'": both */
    nl_cond_t *no = realloc(o->ors, (o->nors + 1) * sizeof *no);
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
void nl_cond_commit(nl_parser_t *p, const char *source_words)
{
    nl_cond_t *c = &p->c[p->nc];
    p->last_generic[0] = '\0';
    if (nl_cond_home(c) < 0) {
        nl_note(p, "\"%s\" was not used: %s is not recorded in this catalogue", source_words,
                c->label ? c->label : "that field");
        nl_cond_free(c);
        p->neg = false;
        p->partial = true;
        return;
    }
    bool neg = p->neg || (p->cont && p->have_last && p->last_neg && cond_same_field(&p->last_shape, c));
    bool was_cont = p->cont;
    bool or_range = c->kind == NL_C_RANGE && p->cont && p->nc > 0 && p->c[p->nc - 1].kind == NL_C_RANGE &&
                    cond_same_field(&p->c[p->nc - 1], c) && (p->cont_or || ranges_disjoint(&p->c[p->nc - 1], c));
    c->neg = c->neg != neg; /* a condition may arrive negated already ("unenhanced") */
    if (p->both && c->kind == NL_C_IN) {
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
        nl_note(p, "\"or\" between two different fields was read as \"and\"");
        if (json_array_append_new(p->ignored, json_string("or")))
            p->oom = true;
        p->partial = true;
    }
    if (or_range && p->c[p->nc - 1].neg == c->neg) {
        /* "from 1998 or 2003": one condition with alternative ranges */
        nl_cond_t *o = &p->c[p->nc - 1];
        if (!o->alts)
            o->alts = json_array();
        json_t *alt =
            json_pack("{s:O?, s:O?, s:b, s:b}", "lo", c->lo, "hi", c->hi, "lo_incl", c->lo_incl, "hi_incl", c->hi_incl);
        if (!o->alts || !alt || json_array_append_new(o->alts, alt))
            p->oom = true;
        nl_cond_free(c);
        return;
    }
    if (c->kind == NL_C_REGEX && c->eq_regex && p->nc > 0) {
        nl_cond_t *o = &p->c[p->nc - 1];
        if (o->kind == NL_C_REGEX && o->eq_regex && o->neg == c->neg && cond_same_field(o, c) && was_cont) {
            mdb_nl_buf_t b = {0}, t = {0};
            mdb_nl_buf_addf(&b, "(%s)|(%s)", o->regex, c->regex);
            mdb_nl_buf_addf(&t, "%s or %s", o->regex_shown,
                            c->regex_shown + (strncmp(c->regex_shown, "is ", 3) ? 0 : 3));
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
            nl_cond_free(c);
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
    if (c->kind == NL_C_IN) {
        for (size_t k = 0; k < p->nc; k++) {
            nl_cond_t *o = &p->c[k];
            if (o->kind == NL_C_IN && o->neg == c->neg && cond_same_field(o, c)) {
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
                nl_cond_free(c);
                return;
            }
        }
    }
    p->nc++;
}

json_t *nl_num_json(double d)
{
    if (d == floor(d) && fabs(d) < 1e15)
        return json_integer((json_int_t)d);
    return json_real(d);
}

/* A NL_C_IN condition of strings on path. */
void nl_add_in_strings(nl_parser_t *p, const char *path_or_null, const char *label, const char *const *vals,
                       size_t nvals, const char *words)
{
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return;
    c->kind = NL_C_IN;
    c->values = json_array();
    for (size_t i = 0; i < nvals; i++)
        json_array_append_new(c->values, json_string(vals[i]));
    c->label = strdup(label);
    if (path_or_null)
        nl_cond_field(p, c, path_or_null);
    nl_cond_commit(p, words);
}
