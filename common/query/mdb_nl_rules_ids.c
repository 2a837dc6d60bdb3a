/* mdb_nl_rules_ids.c: the rules for identifiers: patient IDs, accession
 * numbers, collections (lists, DICOM wildcards) and study/series/instance
 * UIDs. */
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

bool nl_has_wildcard(const char *s)
{
    return strchr(s, '*') || strchr(s, '?');
}

/* DICOM wildcard (* ?) → anchored regex body, other characters escaped. */
void nl_wildcard_regex(mdb_nl_buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '*')
            mdb_nl_buf_add(b, ".*");
        else if (*s == '?')
            mdb_nl_buf_add(b, ".");
        else {
            if (strchr(".^$|()[]{}+\\/", *s))
                mdb_nl_buf_add(b, "\\");
            char ch[2] = {*s, 0};
            mdb_nl_buf_add(b, ch);
        }
    }
}

/* Read an identifier value at i: an ID/number/UID/quoted token, or a word
 * compound ("LIDC-IDRI"). Returns tokens read; *out is malloc'd. */
size_t nl_read_ident(const nl_parser_t *p, size_t i, bool allow_word, char **out)
{
    *out = NULL;
    if (i >= p->n || p->t[i].used)
        return 0;
    const nl_tok_t *t = &p->t[i];
    if (t->kind == NL_T_ID || t->kind == NL_T_NUM || t->kind == NL_T_UID || t->kind == NL_T_QUOTED ||
        t->kind == NL_T_DATE) {
        *out = strdup(t->text);
        return 1;
    }
    if (t->kind != NL_T_WORD || !allow_word || nl_is_stopword(t->low) || nl_phrase_at(p, i, NL_CONNECTORS) ||
        nl_phrase_at(p, i, NL_NEGATIONS) || nl_phrase_at(p, i, NL_LEVEL_WORDS))
        return 0;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, t->text);
    size_t k = i + 1;
    while (k < p->n && p->t[k].glued && p->t[k].kind == NL_T_WORD && !p->t[k].used) {
        mdb_nl_buf_add(&b, "-");
        mdb_nl_buf_add(&b, p->t[k].text);
        k++;
    }
    *out = mdb_nl_buf_steal(&b);
    return k - i;
}

/* Map typed identifiers onto stored spellings (case-insensitive) when the
 * vocabulary knows the field's values. */
static const char *stored_spelling(const nl_parser_t *p, const char *path, const char *typed)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, path, &nv);
    for (size_t k = 0; k < nv; k++)
        if (!strcmp(vals[k], typed))
            return vals[k];
    for (size_t k = 0; k < nv; k++)
        if (!strcasecmp(vals[k], typed))
            return vals[k];
    return typed;
}

/* A list of identifiers for path: values joined by , and or; wildcards
 * become one anchored regex alternation. */
size_t nl_ident_list(nl_parser_t *p, size_t i, const char *path, const char *label, bool allow_word, size_t lead)
{
    size_t k = i;
    char *vals[64];
    size_t nv = 0;
    bool wild = false;
    while (nv < 64) {
        char *val = NULL;
        size_t n = nl_read_ident(p, k, allow_word, &val);
        if (!n) {
            free(val);
            break;
        }
        if (nl_has_wildcard(val))
            wild = true;
        vals[nv++] = val;
        k += n;
        size_t sep = nl_phrase_at(p, k, "and|or|,|nor");
        size_t sep2 = sep ? nl_phrase_at(p, k + sep, "and|or") : 0;
        char *peek = NULL;
        size_t more = sep ? nl_read_ident(p, k + sep + sep2, allow_word, &peek) : 0;
        free(peek);
        if (!more)
            break;
        k += sep + sep2;
    }
    if (!nv)
        return 0;
    size_t total = k - i;
    char words[256];
    nl_words_text(p, i - lead, total + lead, words, sizeof words);
    nl_mark_used(p, i - lead, total + lead);
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        goto done;
    c->label = strdup(label);
    nl_cond_field(p, c, path);
    if (wild) {
        mdb_nl_buf_t b = {0};
        mdb_nl_buf_add(&b, "^(");
        for (size_t k2 = 0; k2 < nv; k2++) {
            if (k2)
                mdb_nl_buf_add(&b, "|");
            nl_wildcard_regex(&b, vals[k2]);
        }
        mdb_nl_buf_add(&b, ")$");
        c->kind = NL_C_REGEX;
        c->regex = mdb_nl_buf_steal(&b);
        mdb_nl_buf_t s = {0};
        mdb_nl_buf_add(&s, "matches ");
        for (size_t k2 = 0; k2 < nv; k2++)
            mdb_nl_buf_addf(&s, "%s%s", k2 ? " or " : "", vals[k2]);
        c->regex_shown = mdb_nl_buf_steal(&s);
    } else {
        c->kind = NL_C_IN;
        c->values = json_array();
        for (size_t k2 = 0; k2 < nv; k2++)
            json_array_append_new(c->values, json_string(stored_spelling(p, path, vals[k2])));
    }
    nl_cond_commit(p, words);
done:
    for (size_t k2 = 0; k2 < nv; k2++)
        free(vals[k2]);
    return total + lead;
}

size_t nl_rule_patient(nl_parser_t *p, size_t i)
{
    size_t n = nl_phrase_at(p, i,
                            "patient|patients|patient id|patient ids|patientid|patient ID|subject*|subject id*|case|"
                            "cases|case id*|participant*|pid|mrn|patient number|patient no");
    if (!n)
        return 0;
    size_t k = i + n;
    k += nl_phrase_at(p, k, "id|ids|number|numbers|no|#|:|=|is|with id|with ids|named|called|with patient id");
    return nl_ident_list(p, k, "patient_id", "patient id", false, k - i);
}

size_t nl_rule_accession(nl_parser_t *p, size_t i)
{
    size_t n = nl_phrase_at(p, i,
                            "accession|accessions|accession number*|accession no|accession nr|acc no|acc|accession #|"
                            "accessionnumber|accession id*");
    if (!n)
        return 0;
    size_t k = i + n;
    k += nl_phrase_at(p, k, "number*|no|#|:|=|is|of|id");
    return nl_ident_list(p, k, "accession_number", "accession number", false, k - i);
}

size_t nl_rule_collection(nl_parser_t *p, size_t i)
{
    size_t n =
        nl_phrase_at(p, i, "collection|collections|project|projects|cohort|cohorts|in collection|from collection");
    if (!n)
        return 0;
    size_t k = i + n;
    k += nl_phrase_at(p, k, ":|=|is|named|called|id");
    return nl_ident_list(p, k, "collection_ids", "collection", true, k - i);
}

typedef struct {
    const char *phrases;
    int level;
} uidphrase_t;

static const uidphrase_t UIDPHRASES[] = {
    {"study|studies|study uid|study instance uid|studyinstanceuid|study uids|exam|examination", MDB_QUERY_STUDIES},
    {"series|series uid|series instance uid|seriesinstanceuid|series uids", MDB_QUERY_SERIES},
    {"instance|instances|image|images|sop instance uid|sop uid|sopinstanceuid|instance uid|image uid|"
     "sop instance*|slice|file",
     MDB_QUERY_INSTANCES},
};

/* The field holding the UID of level `of` in documents of each level. */
static void uid_paths(nl_parser_t *p, nl_cond_t *c, int of)
{
    static const char *const links[NL_LEVELS][NL_LEVELS] = {
        /* of study */ {"_id", "study_id", "study_id"},
        /* of series */ {NULL, "_id", "series_id"},
        /* of instance */ {NULL, NULL, "_id"},
    };
    for (int l = 0; l < NL_LEVELS; l++) {
        const char *f = links[of][l];
        if (f && (!strcmp(f, "_id") || mdb_nl_vocab_has_field(p->v, (mdb_query_level_t)l, f, NULL))) {
            c->paths[l] = strdup(f);
            if (!c->paths[l])
                p->oom = true;
        }
    }
}

size_t nl_rule_uid(nl_parser_t *p, size_t i)
{
    int of = -1;
    size_t n = 0;
    for (size_t u = 0; u < sizeof UIDPHRASES / sizeof UIDPHRASES[0]; u++) {
        size_t m = nl_phrase_at(p, i, UIDPHRASES[u].phrases);
        if (m > n) {
            n = m;
            of = UIDPHRASES[u].level;
        }
    }
    size_t k = i + n;
    if (n)
        k += nl_phrase_at(p, k, "uid|uids|instance uid|id|:|=|is|with uid|number");
    if (k >= p->n || p->t[k].kind != NL_T_UID || p->t[k].used)
        return 0;
    /* a list of UIDs */
    size_t j = k;
    json_t *vals = json_array();
    while (j < p->n && p->t[j].kind == NL_T_UID && !p->t[j].used) {
        json_array_append_new(vals, json_string(p->t[j].text));
        j++;
        size_t sep = nl_phrase_at(p, j, "and|or|,");
        if (sep && j + sep < p->n && p->t[j + sep].kind == NL_T_UID)
            j += sep;
    }
    nl_cond_t *c = nl_cond_new(p);
    if (!c) {
        json_decref(vals);
        return 0;
    }
    c->kind = NL_C_IN;
    c->values = vals;
    if (of < 0) {
        /* a bare UID: the documents' own UID at whatever level is asked for */
        for (int l = 0; l < NL_LEVELS; l++)
            c->paths[l] = strdup("_id");
        c->flexible = true;
        c->label = strdup("UID");
    } else {
        uid_paths(p, c, of);
        c->label = strdup(of == MDB_QUERY_STUDIES  ? "StudyInstanceUID"
                          : of == MDB_QUERY_SERIES ? "SeriesInstanceUID"
                                                   : "SOPInstanceUID");
    }
    char words[256];
    nl_words_text(p, i, j - i, words, sizeof words);
    nl_mark_used(p, i, j - i);
    nl_cond_commit(p, words);
    return j - i;
}
