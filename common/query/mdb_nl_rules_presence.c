/* mdb_nl_rules_presence.c: presence and absence of any field ("series
 * without a kernel"), a field's name echoed after its value ("Siemens
 * manufacturer"), and stored values matched by the prefix typed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

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
static size_t field_name_at(nl_parser_t *p, size_t i, const char **path)
{
    size_t best = 0;
    *path = NULL;
    for (size_t a = 0; a < sizeof PRESENCE_NAMES / sizeof PRESENCE_NAMES[0]; a++) {
        size_t n = nl_phrase_at(p, i, PRESENCE_NAMES[a].phrases);
        if (n > best) {
            best = n;
            *path = PRESENCE_NAMES[a].path;
        }
    }
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const char *fp = p->v->fields[l][f].path;
            char words[160], alt[300];
            nl_field_words(fp, words, sizeof words);
            const char *kw = strncmp(fp, "metadata.", 9) ? fp : fp + 9;
            snprintf(alt, sizeof alt, "%s|%.*s", words, 100, kw);
            for (char *c = alt; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            size_t n = nl_phrase_at(p, i, alt);
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
static bool no_value_at(nl_parser_t *p, size_t k)
{
    if (k >= p->n || p->t[k].kind == NL_T_SEP)
        return true;
    if (p->t[k].kind != NL_T_WORD)
        return false;
    if (nl_phrase_at(p, k,
                     "of|is|are|was|were|at|set to|equal*|above|below|over|under|between|than|like|"
                     "containing|contains|starting|ending|matching|named|called"))
        return false;
    return nl_is_stopword(p->t[k].low) || nl_phrase_at(p, k, NL_CONNECTORS) || nl_phrase_at(p, k, NL_NEGATIONS) ||
           nl_phrase_at(p, k, NL_LEVEL_WORDS) || nl_phrase_at(p, k, "series|from|since|before|after|until");
}

/* "series without a manufacturer model name", "studies with an accession
 * number", "series whose kernel is missing": presence (recorded, not empty)
 * or absence (missing or empty) of any field. */
size_t nl_rule_presence(nl_parser_t *p, size_t i)
{
    size_t k = i, n;
    int absent = -1; /* -1: no lead word, 0: present, 1: absent */
    if ((n = nl_phrase_at(p, k,
                          "without|with no|with out|w o|wo|lacking|missing|that lack*|which lack*|"
                          "that have no|which have no|having no|has no|have no|no"))) {
        absent = 1;
    } else if ((n = nl_phrase_at(p, k, "with|having|has|have|that have|which have|that has|which has"))) {
        absent = 0;
    }
    k += n;
    k += nl_phrase_at(p, k, "a|an|any|the|some|their|its");
    const char *path = NULL;
    size_t fl = field_name_at(p, k, &path);
    if (!fl)
        return 0;
    k += fl;
    size_t st = nl_phrase_at(p, k, "is|are|was|were");
    size_t sn;
    if ((sn = nl_phrase_at(p, k + st,
                           "missing|empty|absent|unknown|blank|not recorded|not set|not given|unset|"
                           "not present|not filled|not filled in"))) {
        absent = absent == 1 ? 0 : 1;
        k += st + sn;
    } else if ((sn = nl_phrase_at(p, k + st, "recorded|set|present|given|filled|filled in|known|entered|available"))) {
        if (absent < 0)
            absent = 0;
        k += st + sn;
    } else if (absent < 0) {
        return 0; /* a bare field name: the value rules read it */
    } else {
        k += nl_phrase_at(p, k, "value*|information|info|recorded|set");
    }
    if (!no_value_at(p, k))
        return 0;
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    c->kind = NL_C_PRESENT;
    c->absent = json_array();
    json_array_append_new(c->absent, json_string(""));
    c->neg = absent == 1;
    c->label = nl_field_label(path);
    nl_cond_field(p, c, path);
    char words[256];
    nl_words_text(p, i, k - i, words, sizeof words);
    nl_mark_used(p, i, k - i);
    nl_cond_commit(p, words);
    return k - i;
}

/* "STANDARD kernel", "Siemens manufacturer": the name of the field whose
 * value was just read, right after it, is part of that condition. */
size_t nl_rule_field_echo(nl_parser_t *p, size_t i)
{
    if (p->nc == 0 || i == 0 || !p->t[i - 1].used || p->t[i - 1].kind == NL_T_SEP)
        return 0;
    const char *path = NULL;
    size_t n = field_name_at(p, i, &path);
    if (!n)
        return 0;
    const nl_cond_t *last = &p->c[p->nc - 1];
    for (int l = 0; l < NL_LEVELS; l++) {
        if (last->paths[l] && !strcmp(last->paths[l], path)) {
            nl_mark_used(p, i, n);
            return n;
        }
    }
    return 0;
}

/* "LightSpeed" for stored LightSpeed16 and LightSpeed Ultra: every stored
 * value that starts with the typed word (case-insensitive), shown as a
 * correction. After the other rules, so words they know never get here. */
size_t nl_rule_vocab_prefix(nl_parser_t *p, size_t i)
{
    static const char *const spot[] = {"manufacturer_model_name",
                                       "metadata.ManufacturerModelName",
                                       "metadata.ConvolutionKernel",
                                       "metadata.StationName",
                                       "metadata.InstitutionName",
                                       "manufacturer",
                                       "body_part_examined",
                                       "collection_ids",
                                       NULL};
    const nl_tok_t *t = &p->t[i];
    if ((t->kind != NL_T_WORD && t->kind != NL_T_ID) || strlen(t->text) < 4 || nl_is_stopword(t->low))
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
        nl_note(p, "\"%s\" matched the stored %s starting with it: %s", t->text, nm > 1 ? "values" : "value",
                to ? to : "");
        free(to);
        char *label = nl_field_label(spot[s]);
        nl_mark_used(p, i, 1);
        nl_add_in_strings(p, spot[s], label ? label : spot[s], match, nm, t->text);
        free(label);
        return 1;
    }
    return 0;
}
