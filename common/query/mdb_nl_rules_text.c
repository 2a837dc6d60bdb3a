/* mdb_nl_rules_text.c: free text and any other field: descriptions and
 * protocol names ("contains", "starts with", "is"), "FIELD VALUE" for every
 * field of the vocabulary, "N FIELD" for its numeric fields, values spotted
 * from the data without a field word, and the level words. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

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
static size_t read_text_value(const nl_parser_t *p, size_t i, char **out)
{
    *out = NULL;
    if (i >= p->n || p->t[i].used)
        return 0;
    if (p->t[i].kind == NL_T_QUOTED) {
        *out = strdup(p->t[i].text);
        return 1;
    }
    mdb_nl_buf_t b = {0};
    size_t k = i;
    while (k < p->n && !p->t[k].used &&
           (p->t[k].kind == NL_T_WORD || p->t[k].kind == NL_T_ID || p->t[k].kind == NL_T_NUM) &&
           !(p->t[k].kind == NL_T_WORD &&
             (nl_is_stopword(p->t[k].low) || nl_phrase_at(p, k, NL_CONNECTORS) || nl_phrase_at(p, k, NL_NEGATIONS) ||
              nl_phrase_at(p, k, "series|studies|images|study")))) {
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

static size_t text_operator(const nl_parser_t *p, size_t i, match_t *m, bool *neg)
{
    size_t n;
    *m = M_EQ;
    *neg = false;
    if ((n = nl_phrase_at(p, i, "does not contain|doesn't contain|not containing|without|not like|not matching"))) {
        *m = M_CONTAINS;
        *neg = true;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "is not|isn't|!=|!|not|other than|not equal to|is other than"))) {
        *neg = true;
        return n;
    }
    if ((n = nl_phrase_at(p, i,
                          "contains|containing|contain|including|includes|with|like|matching|mentioning|"
                          "mentions|that contains|that mention*|with the word*|has|having"))) {
        *m = M_CONTAINS;
        return n;
    }
    if ((n = nl_phrase_at(p, i, "starts with|starting with|begins with|beginning with|start with|prefix"))) {
        *m = M_PREFIX;
        return n;
    }
    return nl_phrase_at(p, i, "is|=|:|equals|equal to|of|was|as|being|set to");
}

static void add_text_cond(nl_parser_t *p, const char *paths[NL_LEVELS], bool flexible, const char *label,
                          const char *val, match_t m, bool neg, const char *words)
{
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return;
    for (int l = 0; l < NL_LEVELS; l++)
        if (paths[l] && mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, paths[l], NULL))
            c->paths[l] = strdup(paths[l]);
    c->flexible = flexible;
    c->label = strdup(label);
    c->kind = NL_C_REGEX;
    mdb_nl_buf_t b = {0};
    if (nl_has_wildcard(val)) {
        mdb_nl_buf_add(&b, "^");
        nl_wildcard_regex(&b, val);
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
                    nl_has_wildcard(val) ? "matches"
                    : m == M_CONTAINS    ? "contains"
                    : m == M_PREFIX      ? "starts with"
                                         : "is",
                    val);
    c->regex_shown = mdb_nl_buf_steal(&shown);
    c->note = strdup("case-insensitive");
    c->neg = neg;
    c->eq_regex = m == M_EQ;
    nl_cond_commit(p, words);
}

size_t nl_rule_description(nl_parser_t *p, size_t i)
{
    size_t n;
    const char *paths[NL_LEVELS] = {NULL, NULL, NULL};
    const char *label = "description";
    bool flexible = false;
    if ((n = nl_phrase_at(p, i, "study description|studydescription|study descriptions|study desc"))) {
        paths[0] = "study_description";
        label = "study description";
    } else if ((n = nl_phrase_at(p, i, "series description|seriesdescription|series descriptions|series desc"))) {
        paths[1] = "series_description";
        label = "series description";
    } else if ((n = nl_phrase_at(p, i, "protocol|protocol name|protocolname|protocols"))) {
        paths[1] = "protocol_name";
        label = "protocol name";
    } else if ((n = nl_phrase_at(p, i,
                                 "description|descriptions|described as|labeled|labelled|labeled as|"
                                 "labelled as|titled|named|called|desc|with description|described"))) {
        paths[0] = "study_description";
        paths[1] = "series_description";
        flexible = true;
    } else if (p->t[i].kind == NL_T_QUOTED) {
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
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    add_text_cond(p, paths, flexible, label, val, m, neg, words);
    free(val);
    return total;
}

/* Fields with a dedicated rule; the generic field rule leaves them alone. */
static bool dedicated_field(const char *path)
{
    static const char *const ded[] = {"modality",
                                      "modalities",
                                      "body_part_examined",
                                      "manufacturer",
                                      "study_date",
                                      "series_date",
                                      "slice_thickness",
                                      "kvp",
                                      "patient_id",
                                      "accession_number",
                                      "study_instance_uid",
                                      "series_instance_uid",
                                      "sop_instance_uid",
                                      "collection_ids",
                                      "instance_count",
                                      "series_number",
                                      "instance_number",
                                      "study_description",
                                      "series_description",
                                      "protocol_name",
                                      "study_id",
                                      "series_id",
                                      "job_ids",
                                      "metadata.Modality",
                                      "metadata.ModalitiesInStudy",
                                      "metadata.BodyPartExamined",
                                      "metadata.Manufacturer",
                                      "metadata.StudyDate",
                                      "metadata.SeriesDate",
                                      "metadata.SliceThickness",
                                      "metadata.KVP",
                                      "metadata.PatientID",
                                      "metadata.AccessionNumber",
                                      "metadata.StudyInstanceUID",
                                      "metadata.SeriesInstanceUID",
                                      "metadata.SOPInstanceUID",
                                      "metadata.ContrastBolusAgent",
                                      "metadata.PatientSex",
                                      "metadata.SeriesNumber",
                                      "metadata.InstanceNumber",
                                      "metadata.StudyDescription",
                                      "metadata.SeriesDescription",
                                      "metadata.ProtocolName",
                                      "metadata.PatientAge",
                                      "metadata.PatientBirthDate",
                                      NULL};
    for (int i = 0; ded[i]; i++)
        if (!strcmp(ded[i], path))
            return true;
    return false;
}

/* Words of a field path: "manufacturer_model_name" → "manufacturer model name",
 * "metadata.ConvolutionKernel" → "convolution kernel". Lower case. */
void nl_field_words(const char *path, char *out, size_t cap)
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

static size_t generic_value(nl_parser_t *p, size_t i, size_t k, const char *best_path, mdb_qfield_type_t type,
                            const char *label_in, match_t m, bool neg);

/* "kernel B30f or B50f": a further value of the last generic field. */
static size_t generic_more(nl_parser_t *p, size_t i, bool stored_only)
{
    if (!p->cont || !p->last_generic[0] || (p->t[i].kind == NL_T_WORD && nl_is_stopword(p->t[i].low)))
        return 0;
    if (stored_only) {
        size_t nv = 0, hit = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, p->last_generic, &nv);
        for (size_t j = 0; j < nv && !hit; j++)
            hit = nl_value_matches_at(p, i, vals[j]);
        if (!hit)
            return 0;
    }
    char path[200];
    snprintf(path, sizeof path, "%s", p->last_generic);
    mdb_qfield_type_t type = field_type_any_level(p->v, path);
    if (type == MDB_QFIELD_NUMBER || type == MDB_QFIELD_DATE)
        return 0;
    char *label = nl_field_label(path);
    size_t n = label ? generic_value(p, i, i, path, type, label, M_EQ, false) : 0;
    free(label);
    return n;
}

/* Before the other rules: a stored value of the listed field ("kernel B30f or LUNG"). */
size_t nl_rule_generic_more_stored(nl_parser_t *p, size_t i)
{
    return generic_more(p, i, true);
}

size_t nl_rule_generic_more(nl_parser_t *p, size_t i)
{
    return generic_more(p, i, false);
}

size_t nl_rule_generic_field(nl_parser_t *p, size_t i)
{
    const char *best_path = NULL;
    size_t best = 0;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const char *path = p->v->fields[l][f].path;
            if (dedicated_field(path))
                continue;
            char words[160], alt[300];
            nl_field_words(path, words, sizeof words);
            const char *kw = strncmp(path, "metadata.", 9) ? path : path + 9;
            snprintf(alt, sizeof alt, "%s|%.*s", words, 100, kw);
            for (char *c = alt; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            size_t n = nl_phrase_at(p, i, alt);
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
        size_t n = nl_phrase_at(p, i, aliases[a].phrases);
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
    char *label = nl_field_label(best_path);
    size_t total = 0;
    char words[300];
    if (type == MDB_QFIELD_NUMBER) {
        k += nl_phrase_at(p, k, "of|is|=|:|was|were|at|with|set to|being");
        nl_numc_t nc;
        if (nl_parse_numc(p, k, &nc)) {
            total = k + nc.len - i;
            nl_cond_t *c = nl_cond_new(p);
            if (c) {
                nl_numc_to_cond(c, &nc);
                c->label = label;
                label = NULL;
                nl_cond_field(p, c, best_path);
                nl_words_text(p, i, total, words, sizeof words);
                nl_mark_used(p, i, total);
                nl_cond_commit(p, words);
            }
        }
        free(label);
        return total;
    }
    if (type == MDB_QFIELD_DATE) {
        free(label);
        return 0; /* dates go through nl_rule_date's prefixes */
    }
    match_t m;
    bool neg;
    k += text_operator(p, k, &m, &neg);
    size_t vlen = generic_value(p, i, k, best_path, type, label, m, neg);
    free(label);
    return vlen ? k + vlen - i : 0;
}

/* The value part of "FIELD [op] VALUE" at k (words of the whole phrase
 * start at i): a stored spelling, an identifier or plain words. Returns the
 * tokens read at k (0: no value, nothing added). */
static size_t generic_value(nl_parser_t *p, size_t i, size_t k, const char *best_path, mdb_qfield_type_t type,
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
        size_t n = nl_value_matches_at(p, k, vals[j]);
        if (n > vl) {
            vl = n;
            stored = vals[j];
        }
    }
    char *val = NULL;
    if (!vl && nv > 0 && k < p->n && p->t[k].kind == NL_T_WORD && nl_known_elsewhere(p, k)) {
        /* "model CT series": CT is no stored model but a modality; do not read it as the model */
        free(label);
        return 0;
    }
    if (!vl) {
        vl = nl_read_ident(p, k, true, &val);
        if (!vl)
            vl = read_text_value(p, k, &val);
    }
    if (!vl) {
        free(val);
        free(label);
        return 0;
    }
    total = k + vl - i;
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    const char *paths[NL_LEVELS] = {best_path, best_path, best_path};
    /* equality is a case-insensitive anchored pattern, so that lists merge
     * into one alternation and spellings differing in case still match */
    if (type == MDB_QFIELD_ANY && val && !nl_has_wildcard(val) && m == M_EQ &&
        nl_number_prefix(val, strlen(val)) == strlen(val)) {
        /* metadata values may be stored as numbers or strings */
        nl_cond_t *c = nl_cond_new(p);
        if (c) {
            c->kind = NL_C_IN;
            c->values = json_array();
            json_array_append_new(c->values, nl_num_json(strtod(val, NULL)));
            json_array_append_new(c->values, json_string(val));
            c->label = label;
            label = NULL;
            c->neg = neg;
            nl_cond_field(p, c, best_path);
            nl_cond_commit(p, words);
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
size_t nl_rule_numeric_postfix(nl_parser_t *p, size_t i)
{
    nl_numc_t nc;
    if (!nl_parse_numc(p, i, &nc) || nc.unit != NL_U_NONE)
        return 0;
    size_t k = i + nc.len, best = 0;
    const char *path = NULL;
    for (int l = 0; l < NL_LEVELS; l++) {
        for (size_t f = 0; f < p->v->nfields[l]; f++) {
            const nl_field_t *fd = &p->v->fields[l][f];
            if (fd->type != MDB_QFIELD_NUMBER || dedicated_field(fd->path))
                continue;
            char words[160], alt[400];
            nl_field_words(fd->path, words, sizeof words);
            snprintf(alt, sizeof alt, "%s|%s*", words, words);
            size_t n = nl_phrase_at(p, k, alt);
            if (n > best) {
                best = n;
                path = fd->path;
            }
        }
    }
    if (!best)
        return 0;
    size_t total = nc.len + best;
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    nl_numc_to_cond(c, &nc);
    c->label = nl_field_label(path);
    nl_cond_field(p, c, path);
    char words[256];
    nl_words_text(p, i, total, words, sizeof words);
    nl_mark_used(p, i, total);
    nl_cond_commit(p, words);
    return total;
}

/* Names taken from the data: model names, kernels, stations, collections,
 * patient IDs typed without a field word. */
size_t nl_rule_vocab_value(nl_parser_t *p, size_t i)
{
    static const char *const spot[] = {"manufacturer_model_name",
                                       "metadata.ManufacturerModelName",
                                       "metadata.ConvolutionKernel",
                                       "metadata.StationName",
                                       "metadata.InstitutionName",
                                       "collection_ids",
                                       "patient_id",
                                       NULL};
    const nl_tok_t *t = &p->t[i];
    if (t->kind == NL_T_WORD && (nl_is_stopword(t->low) || strlen(t->low) < 3))
        return 0;
    if (t->kind == NL_T_SYM || t->kind == NL_T_SEP || t->kind == NL_T_QUOTED)
        return 0;
    for (int s = 0; spot[s]; s++) {
        size_t nv = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, spot[s], &nv);
        size_t best = 0;
        const char *which = NULL;
        for (size_t k = 0; k < nv; k++) {
            if (strlen(vals[k]) < 3)
                continue;
            size_t n = nl_value_matches_at(p, i, vals[k]);
            if (n > best) {
                best = n;
                which = vals[k];
            }
        }
        if (!best)
            continue;
        char *label = nl_field_label(spot[s]);
        char words[256];
        nl_words_text(p, i, best, words, sizeof words);
        nl_mark_used(p, i, best);
        nl_add_in_strings(p, spot[s], label ? label : spot[s], &which, 1, words);
        free(label);
        return best;
    }
    /* a patient ID pattern with wildcards ("LIDC-IDRI-00*") */
    if (t->kind == NL_T_ID && nl_has_wildcard(t->text)) {
        size_t nv = 0;
        mdb_nl_vocab_values(p->v, "patient_id", &nv);
        if (nv || mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "patient_id", NULL))
            return nl_ident_list(p, i, "patient_id", "patient id", false, 0);
    }
    return 0;
}

size_t nl_rule_level(nl_parser_t *p, size_t i)
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
        size_t n = nl_phrase_at(p, i, lv[k].phrases);
        if (n) {
            if (p->level < 0)
                p->level = lv[k].level;
            nl_mark_used(p, i, n);
            return n;
        }
    }
    return 0;
}
