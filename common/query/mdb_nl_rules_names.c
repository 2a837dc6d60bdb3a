/* mdb_nl_rules_names.c: the rules for names with fixed synonyms: modality,
 * body part, manufacturer (with the stored spellings of each maker), sex and
 * contrast. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_private.h"

typedef struct {
    const char *phrases;
    const char *codes; /* space separated */
    bool upper_only;   /* ambiguous English word: only when typed in capitals */
} synonym_t;

static const synonym_t MODALITIES[] = {
    {"computed tomography|ct|cts|ct scan*|cat scan*|computerized tomography|computerised tomography|"
     "computed tomographies|multislice ct|mdct|msct|ldct|low dose ct",
     "CT", false},
    {"magnetic resonance|magnetic resonance imaging|mri|mris|mr|nmr|mri scan*|mr scan*", "MR", false},
    {"x ray*|xray*|x rays|radiograph*|radiography|plain film*|plain radiograph*|projection radiography|"
     "roentgen*",
     "CR DX", false},
    {"computed radiography|cr", "CR", false},
    {"digital radiography|digital x ray*|digital radiograph*|dx", "DX", false},
    {"pet|positron emission tomography|pet scan*", "PT", false},
    {"pt", "PT", true},
    {"ultrasound|sonography|ultrasonography|echography|sonogram*|ultrasound scan*", "US", false},
    {"us", "US", true},
    {"mammography|mammogram*|mammo|mammograph*", "MG", false},
    {"mg", "MG", true},
    {"nuclear medicine|scintigraphy|spect", "NM", false},
    {"nm", "NM", true},
    {"angiography|angiogram*|xa", "XA", false},
    {"segmentation*|seg", "SEG", false},
    {"structured report*", "SR", false},
    {"sr", "SR", true},
    {"rtstruct|rt struct|rt structure set*", "RTSTRUCT", false},
    {"ot", "OT", true},
};

typedef struct {
    const char *phrases;
    const char *canonical;
    const char *group; /* stored spellings that mean the same, space separated */
} bodypart_t;

static const bodypart_t BODYPARTS[] = {
    {"chest|chests|thorax|thoracic|lung*|pulmonary|thoraces|chest wall", "CHEST", "CHEST THORAX LUNG LUNGS"},
    {"head|brain*|skull|cranial|cranium|neuro|cerebral|intracranial", "HEAD", "HEAD BRAIN SKULL"},
    {"abdomen|abdominal|abdomens|belly", "ABDOMEN", "ABDOMEN ABD"},
    {"pelvis|pelvic", "PELVIS", "PELVIS"},
    {"neck|cervical", "NECK", "NECK CSPINE"},
    {"breast*|mammary", "BREAST", "BREAST"},
    {"heart|cardiac|coronary|coronaries", "HEART", "HEART CARDIAC"},
    {"spine|spinal|vertebral|back", "SPINE", "SPINE LSPINE TSPINE CSPINE"},
    {"knee*", "KNEE", "KNEE"},
    {"liver|hepatic", "LIVER", "LIVER"},
    {"extremity|extremities|limb*|arm*|leg*", "EXTREMITY", "EXTREMITY"},
    {"whole body|wholebody|total body", "WHOLEBODY", "WHOLEBODY"},
};

typedef struct {
    const char *phrases;
    const char *key; /* upper-case word a stored manufacturer starts with or contains */
} maker_t;

static const maker_t MAKERS[] = {
    {"ge|general electric|ge medical|ge medical systems|ge healthcare|g e", "GE"},
    {"siemens|siemens healthineers|siemens healthcare|siemens medical", "SIEMENS"},
    {"philips|philips medical|philips healthcare", "PHILIPS"},
    {"toshiba", "TOSHIBA"},
    {"canon|canon medical", "CANON"},
    {"hitachi", "HITACHI"},
    {"fuji|fujifilm|fuji film", "FUJI|FUJIFILM"},
    {"agfa", "AGFA"},
    {"kodak", "KODAK"},
    {"carestream", "CARESTREAM"},
    {"konica|konica minolta", "KONICA"},
    {"hologic", "HOLOGIC"},
    {"samsung", "SAMSUNG"},
    {"imatron", "IMATRON"},
    {"picker", "PICKER"},
    {"elscint", "ELSCINT"},
    {"marconi", "MARCONI"},
    {"varian", "VARIAN"},
};

/* Does stored value `val` belong to maker key (word-start match,
 * case-insensitive)? key may list spellings: "FUJI|FUJIFILM". */
static bool maker_matches(const char *val, const char *keys)
{
    const char *bar = strchr(keys, '|');
    if (bar) {
        char first[64];
        snprintf(first, sizeof first, "%.*s", (int)(bar - keys), keys);
        if (maker_matches(val, first))
            return true;
        return maker_matches(val, bar + 1);
    }
    const char *key = keys;
    size_t kl = strlen(key);
    for (const char *s = val; *s; s++) {
        if ((s == val || !isalnum((unsigned char)s[-1])) && !strncasecmp(s, key, kl) && !isalnum((unsigned char)s[kl]))
            return true;
    }
    return false;
}

static bool modality_fields(nl_parser_t *p, nl_cond_t *c)
{
    const char *study = mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "modalities", NULL) ? "modalities"
                        : mdb_nl_vocab_has_field(p->v, MDB_QUERY_STUDIES, "modality", NULL) ? "modality"
                                                                                            : NULL;
    const char *paths[NL_LEVELS] = {
        study, mdb_nl_vocab_has_field(p->v, MDB_QUERY_SERIES, "modality", NULL) ? "modality" : NULL,
        mdb_nl_vocab_has_field(p->v, MDB_QUERY_INSTANCES, "modality", NULL) ? "modality" : NULL};
    bool any = false;
    for (int l = 0; l < NL_LEVELS; l++)
        if (paths[l]) {
            c->paths[l] = strdup(paths[l]);
            any = true;
        }
    return any;
}

static void add_modalities(nl_parser_t *p, const char *codes, const char *words)
{
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return;
    c->kind = NL_C_IN;
    c->values = json_array();
    char buf[64];
    snprintf(buf, sizeof buf, "%s", codes);
    for (char *save = NULL, *tkn = strtok_r(buf, " ", &save); tkn; tkn = strtok_r(NULL, " ", &save))
        json_array_append_new(c->values, json_string(tkn));
    c->label = strdup("modality");
    modality_fields(p, c);
    nl_cond_commit(p, words);
}

size_t nl_rule_modality(nl_parser_t *p, size_t i)
{
    size_t best = 0, which = 0;
    for (size_t m = 0; m < sizeof MODALITIES / sizeof MODALITIES[0]; m++) {
        size_t n = nl_phrase_at(p, i, MODALITIES[m].phrases);
        if (n > best && (!MODALITIES[m].upper_only || p->t[i].upper)) {
            best = n;
            which = m;
        }
    }
    if (best) {
        char words[128];
        nl_words_text(p, i, best, words, sizeof words);
        nl_mark_used(p, i, best);
        add_modalities(p, MODALITIES[which].codes, words);
        return best;
    }
    /* any modality code seen in the data, typed in capitals ("SEG", "RTSTRUCT") */
    const nl_tok_t *t = &p->t[i];
    if ((t->kind == NL_T_WORD || t->kind == NL_T_ID) && t->upper && strlen(t->text) >= 2) {
        size_t nv = 0;
        const char *const *vals = mdb_nl_vocab_values(p->v, "modality", &nv);
        for (size_t k = 0; k < nv; k++)
            if (!strcmp(vals[k], t->text)) {
                nl_mark_used(p, i, 1);
                add_modalities(p, vals[k], t->text);
                return 1;
            }
    }
    return 0;
}

size_t nl_rule_body_part(nl_parser_t *p, size_t i)
{
    size_t best = 0, which = 0;
    for (size_t b = 0; b < sizeof BODYPARTS / sizeof BODYPARTS[0]; b++) {
        size_t n = nl_phrase_at(p, i, BODYPARTS[b].phrases);
        if (n > best) {
            best = n;
            which = b;
        }
    }
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, "body_part_examined", &nv);
    if (!best) {
        /* a body part spelled as stored ("CHEST_ABDOMEN") */
        const nl_tok_t *t = &p->t[i];
        if (t->kind != NL_T_WORD && t->kind != NL_T_ID)
            return 0;
        for (size_t k = 0; k < nv; k++)
            if (!strcasecmp(vals[k], t->text) && strlen(vals[k]) >= 3) {
                nl_mark_used(p, i, 1);
                nl_add_in_strings(p, "body_part_examined", "body part examined", &vals[k], 1, t->text);
                return 1;
            }
        return 0;
    }
    const bodypart_t *bp = &BODYPARTS[which];
    const char *chosen[16];
    size_t nchosen = 0;
    chosen[nchosen++] = bp->canonical;
    for (size_t k = 0; k < nv && nchosen < 16; k++) {
        char grp[96];
        snprintf(grp, sizeof grp, "%s", bp->group);
        for (char *save = NULL, *g = strtok_r(grp, " ", &save); g; g = strtok_r(NULL, " ", &save))
            if (!strcasecmp(vals[k], g) && strcmp(vals[k], bp->canonical)) {
                chosen[nchosen++] = vals[k];
                break;
            }
    }
    char words[128];
    nl_words_text(p, i, best, words, sizeof words);
    nl_mark_used(p, i, best);
    nl_add_in_strings(p, "body_part_examined", "body part examined", chosen, nchosen, words);
    return best;
}

/* Tokenize a stored value the same way as sentences, for phrase comparison. */
size_t nl_value_matches_at(const nl_parser_t *p, size_t i, const char *value)
{
    nl_toks_t vt = {0};
    nl_tokenize(value, &vt);
    size_t k = 0;
    bool ok = vt.n > 0 && !vt.oom;
    for (; ok && k < vt.n; k++) {
        if (i + k >= p->n || p->t[i + k].used || strcmp(p->t[i + k].low, vt.t[k].low))
            ok = false;
    }
    size_t n = ok ? vt.n : 0;
    nl_toks_free(&vt);
    return n;
}

size_t nl_rule_manufacturer(nl_parser_t *p, size_t i)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(p->v, "manufacturer", &nv);
    size_t best = 0;
    const char *key = NULL;
    for (size_t m = 0; m < sizeof MAKERS / sizeof MAKERS[0]; m++) {
        size_t n = nl_phrase_at(p, i, MAKERS[m].phrases);
        if (n > best) {
            best = n;
            key = MAKERS[m].key;
        }
    }
    /* a stored name typed in full ("GE MEDICAL SYSTEMS") beats an alias */
    const char *full = NULL;
    for (size_t k = 0; k < nv; k++) {
        size_t n = nl_value_matches_at(p, i, vals[k]);
        if (n > best || (n && n == best && !full)) {
            best = n;
            full = vals[k];
        }
    }
    /* the first word of a stored name ("Philips" of "Philips Medical Systems") */
    if (!best && (p->t[i].kind == NL_T_WORD) && strlen(p->t[i].low) >= 3 && !nl_is_stopword(p->t[i].low)) {
        for (size_t k = 0; k < nv; k++) {
            if (maker_matches(vals[k], p->t[i].text) && !strncasecmp(vals[k], p->t[i].text, strlen(p->t[i].text))) {
                best = 1;
                key = p->t[i].text;
                break;
            }
        }
    }
    if (!best)
        return 0;
    size_t total = best;
    total += nl_phrase_at(p, i + total, "scanner*|machine*|system*|device*|equipment|unit*|vendor*|manufacturer*");
    char words[200];
    nl_words_text(p, i, best, words, sizeof words);
    const char *chosen[64];
    size_t nchosen = 0;
    if (full) {
        chosen[nchosen++] = full;
    } else {
        for (size_t k = 0; k < nv && nchosen < 64; k++)
            if (maker_matches(vals[k], key))
                chosen[nchosen++] = vals[k];
    }
    nl_mark_used(p, i, total);
    if (nchosen) {
        nl_add_in_strings(p, "manufacturer", "manufacturer", chosen, nchosen, words);
        return total;
    }
    /* no such maker in the data: a case-insensitive word match still says so honestly */
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return total;
    c->kind = NL_C_REGEX;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, "(^|[^A-Za-z0-9])(");
    for (const char *s = key; *s; s++) {
        if (*s != '|' && strchr(".^$()[]{}*+?\\", *s))
            mdb_nl_buf_add(&b, "\\");
        char ch[2] = {*s, 0};
        mdb_nl_buf_add(&b, ch);
    }
    mdb_nl_buf_add(&b, ")([^A-Za-z0-9]|$)");
    c->regex = mdb_nl_buf_steal(&b);
    char shown[160];
    snprintf(shown, sizeof shown, "mentions \"%s\"", key);
    nl_u8trim(shown);
    c->regex_shown = strdup(shown);
    c->label = strdup("manufacturer");
    c->note = strdup("no such manufacturer seen in the data");
    nl_cond_field(p, c, "manufacturer");
    nl_cond_commit(p, words);
    return total;
}

size_t nl_rule_sex(nl_parser_t *p, size_t i)
{
    size_t n;
    const char *code;
    if ((n = nl_phrase_at(p, i, "male|males|men|man|boy*|gentlemen"))) {
        code = "M";
    } else if ((n = nl_phrase_at(p, i, "female|females|women|woman|girl*|ladies"))) {
        code = "F";
    } else {
        return 0;
    }
    char words[128];
    nl_words_text(p, i, n, words, sizeof words);
    nl_mark_used(p, i, n);
    nl_add_in_strings(p, "metadata.PatientSex", "PatientSex", &code, 1, words);
    return n;
}

static const char *const NO_CONTRAST_VALUES[] = {"", "NONE", "None", "none", "NO", "No", "no", "N/A", "n/a", NULL};

size_t nl_rule_contrast(nl_parser_t *p, size_t i)
{
    size_t n;
    bool negative = false;
    if ((n = nl_phrase_at(p, i,
                          "noncontrast|unenhanced|nonenhanced|precontrast|pre contrast|plain ct|native ct|"
                          "non contrast|non enhanced"))) {
        negative = true;
        if (!strcmp(p->t[i].low, "plain") || !strcmp(p->t[i].low, "native"))
            n = 1; /* leave "CT" for the modality rule */
    } else if (!(n = nl_phrase_at(p, i,
                                  "contrast|contrast enhanced|enhanced|with contrast|iv contrast|contrast agent*|"
                                  "contrast media|contrast medium|postcontrast|post contrast|contrasted|"
                                  "contrast material|contrast bolus|contrastbolusagent|contrast bolus agent|"
                                  "contrast enhancement"))) {
        return 0;
    }
    nl_cond_t *c = nl_cond_new(p);
    if (!c)
        return 0;
    c->kind = NL_C_PRESENT;
    c->absent = json_array();
    for (int k = 0; NO_CONTRAST_VALUES[k]; k++)
        json_array_append_new(c->absent, json_string(NO_CONTRAST_VALUES[k]));
    c->neg = negative;
    c->label = strdup("ContrastBolusAgent");
    nl_cond_field(p, c, "metadata.ContrastBolusAgent");
    char words[128];
    nl_words_text(p, i, n, words, sizeof words);
    nl_mark_used(p, i, n);
    nl_cond_commit(p, words);
    return n;
}
/* Is the word at k one another rule reads (a modality, body part, maker,
 * level or negation word)? */
bool nl_known_elsewhere(const nl_parser_t *p, size_t k)
{
    for (size_t m = 0; m < sizeof MODALITIES / sizeof MODALITIES[0]; m++)
        if (nl_phrase_at(p, k, MODALITIES[m].phrases) && (!MODALITIES[m].upper_only || p->t[k].upper))
            return true;
    for (size_t b = 0; b < sizeof BODYPARTS / sizeof BODYPARTS[0]; b++)
        if (nl_phrase_at(p, k, BODYPARTS[b].phrases))
            return true;
    for (size_t m = 0; m < sizeof MAKERS / sizeof MAKERS[0]; m++)
        if (nl_phrase_at(p, k, MAKERS[m].phrases))
            return true;
    return nl_phrase_at(p, k, NL_LEVEL_WORDS) || nl_phrase_at(p, k, NL_NEGATIONS) || nl_phrase_at(p, k, NL_CONNECTORS);
}
