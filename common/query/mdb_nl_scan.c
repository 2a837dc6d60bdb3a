/* mdb_nl_scan.c: the left-to-right scan. At each unread token the rules
 * are tried, most specific first; the first that matches reads its tokens
 * and adds a condition. Connectors, "both" and negation words are kept for
 * the next condition; any other word is filler or listed as not understood. */
#include <string.h>

#include "mdb_nl_private.h"

typedef size_t (*rule_fn)(nl_parser_t *p, size_t i);

static const rule_fn RULES[] = {
    nl_rule_generic_more_stored, nl_rule_uid,         nl_rule_presence,    nl_rule_date,          nl_rule_patient,
    nl_rule_accession,           nl_rule_collection,  nl_rule_thin_thick,  nl_rule_numeric_field, nl_rule_age,
    nl_rule_numeric_unit,        nl_rule_contrast,    nl_rule_description, nl_rule_modality,      nl_rule_body_part,
    nl_rule_manufacturer,        nl_rule_sex,         nl_rule_field_echo,  nl_rule_generic_field, nl_rule_generic_more,
    nl_rule_numeric_postfix,     nl_rule_vocab_value, nl_rule_level,       nl_rule_vocab_prefix,
};

static void parse(nl_parser_t *p)
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
        if ((m = nl_phrase_at(p, i, NL_CONNECTORS))) {
            if (p->have_last) {
                p->cont = true;
                p->cont_or = nl_phrase_at(p, i, "or|nor|and/or") > 0;
            }
            nl_mark_used(p, i, m);
            i += m;
            continue;
        }
        if ((m = nl_phrase_at(p, i, "both"))) {
            p->both = true; /* "both CT and DX": every value */
            nl_mark_used(p, i, m);
            i += m;
            continue;
        }
        if ((m = nl_phrase_at(p, i, NL_NEGATIONS))) {
            p->neg = true;
            nl_mark_used(p, i, m);
            i += m;
            continue;
        }
        const nl_tok_t *t = &p->t[i];
        p->t[i].used = true;
        i++;
        if (nl_tok_is_filler(t) && json_array_append_new(p->fillers, json_string(t->low)))
            p->oom = true;
        if (t->kind == NL_T_SEP || t->kind == NL_T_SYM || nl_tok_is_filler(t))
            continue;
        p->t[i - 1].ignored = true;
        if (json_array_append_new(p->ignored, json_string(t->text)))
            p->oom = true;
        p->cont = false;
    }
    if (p->neg)
        nl_note(p, "a negation at the end of the sentence had nothing to apply to");
}
void nl_parser_clear(nl_parser_t *p)
{
    for (size_t k = 0; k < p->nc; k++)
        nl_cond_free(&p->c[k]);
    free(p->c);
    nl_cond_free(&p->last_shape);
    json_decref(p->ignored);
    json_decref(p->notes);
    json_decref(p->corrections);
    json_decref(p->fillers);
    memset(p, 0, sizeof *p);
}

/* Tokenize and parse sentence into p (and ts). false on OOM. */
bool nl_parse_sentence(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3], mdb_nl_words_t *collect,
                       nl_parser_t *p, nl_toks_t *ts)
{
    memset(p, 0, sizeof *p);
    nl_tokenize(sentence, ts);
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
