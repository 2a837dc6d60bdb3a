/* mdb_nl_lexicon_de_fr.c: the German and French word table and the rewrite
 * into English (see mdb_nl_lexicon.h). The table covers the vocabulary of
 * the table in docs/nl_qido.md; phrases are matched longest first. */
#include "mdb_nl_lexicon.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mdb_nl_private.h"

typedef struct {
    char lang;           /* 'd' German, 'f' French */
    bool marker;         /* this word says which language the sentence is in */
    const char *foreign; /* lower-case words separated by one space */
    const char *english;
} lex_t;

#define DE(m, f, e)                                                                                                    \
    {                                                                                                                  \
        'd', m, f, e                                                                                                   \
    }
#define FR(m, f, e)                                                                                                    \
    {                                                                                                                  \
        'f', m, f, e                                                                                                   \
    }

static const lex_t LEXICON[] = {
    /* ---- German: levels */
    DE(true, "studien", "studies"),
    DE(true, "studie", "study"),
    DE(true, "untersuchungen", "studies"),
    DE(true, "untersuchung", "study"),
    DE(true, "serien", "series"),
    DE(false, "serie", "series"),
    DE(true, "bilder", "images"),
    DE(true, "bildern", "images"),
    DE(true, "bild", "image"),
    DE(true, "aufnahmen", "images"),
    DE(true, "aufnahme", "image"),
    DE(true, "schichtbilder", "images"),
    DE(true, "dateien", "files"),
    /* modalities */
    DE(true, "computertomographie", "computed tomography"),
    DE(true, "computertomografie", "computed tomography"),
    DE(true, "magnetresonanztomographie", "MRI"),
    DE(true, "magnetresonanztomografie", "MRI"),
    DE(true, "kernspintomographie", "MRI"),
    DE(true, "kernspin", "MRI"),
    DE(true, "mrt", "MRI"),
    DE(true, "röntgenaufnahmen", "x-rays"),
    DE(true, "röntgenbilder", "x-rays"),
    DE(true, "röntgen", "x-ray"),
    DE(true, "ultraschall", "ultrasound"),
    DE(true, "sonographie", "ultrasound"),
    DE(true, "mammographie", "mammography"),
    DE(true, "mammografie", "mammography"),
    /* body parts */
    DE(true, "brustkorb", "chest"),
    DE(true, "brust", "chest"),
    DE(true, "lunge", "lung"),
    DE(true, "lungen", "lungs"),
    DE(true, "kopf", "head"),
    DE(true, "schädel", "skull"),
    DE(true, "gehirn", "brain"),
    DE(true, "bauch", "abdomen"),
    DE(true, "becken", "pelvis"),
    DE(true, "wirbelsäule", "spine"),
    DE(true, "knie", "knee"),
    DE(true, "hals", "neck"),
    DE(true, "herz", "heart"),
    DE(true, "leber", "liver"),
    DE(true, "thorakal", "thoracic"),
    DE(true, "abdominal", "abdominal"),
    /* slice thickness and numbers */
    DE(true, "dünnschicht", "thin-slice"),
    DE(true, "dünnschichtig", "thin-slice"),
    DE(true, "dickschicht", "thick-slice"),
    DE(true, "schichtdicke", "slice thickness"),
    DE(true, "schichten", "slices"),
    DE(true, "schicht", "slice"),
    DE(true, "dünner als", "thinner than"),
    DE(true, "dicker als", "thicker than"),
    DE(true, "dünne", "thin"),
    DE(true, "dünnen", "thin"),
    DE(true, "dünn", "thin"),
    DE(true, "dicke", "thick"),
    DE(true, "dicken", "thick"),
    DE(true, "mehr als", "more than"),
    DE(true, "weniger als", "fewer than"),
    DE(true, "höchstens", "at most"),
    DE(true, "mindestens", "at least"),
    DE(true, "über", "over"),
    DE(true, "unter", "under"),
    DE(true, "älter als", "older than"),
    DE(true, "jünger als", "younger than"),
    DE(true, "als", "than"),
    /* dates */
    DE(true, "zwischen", "between"),
    DE(true, "von", "from"),
    DE(true, "vom", "from"),
    DE(true, "bis", "to"),
    DE(true, "seit", "since"),
    DE(false, "ab", "from"),
    DE(true, "vor", "before"),
    DE(true, "nach", "after"),
    DE(true, "aus dem jahr", "from"),
    DE(true, "im jahr", "in"),
    DE(true, "aus", "from"),
    DE(true, "in den letzten", "in the last"),
    DE(true, "letzten", "last"),
    DE(true, "letztes jahr", "last year"),
    DE(true, "letzten monat", "last month"),
    DE(true, "dieses jahr", "this year"),
    DE(true, "jahren", "years"),
    DE(true, "jahre", "years"),
    DE(true, "jahr", "year"),
    DE(true, "monaten", "months"),
    DE(true, "monate", "months"),
    DE(true, "monat", "month"),
    DE(true, "januar", "January"),
    DE(true, "jänner", "January"),
    DE(true, "februar", "February"),
    DE(true, "märz", "March"),
    DE(false, "april", "April"),
    DE(false, "mai", "May"),
    DE(true, "juni", "June"),
    DE(true, "juli", "July"),
    DE(false, "august", "August"),
    DE(false, "september", "September"),
    DE(true, "oktober", "October"),
    DE(false, "november", "November"),
    DE(true, "dezember", "December"),
    DE(false, "in", "in"),
    DE(false, "im", "in"),
    /* connectors, negation, fillers */
    DE(true, "und", "and"),
    DE(true, "oder", "or"),
    DE(true, "nicht", "not"),
    DE(true, "ohne", "without"),
    DE(true, "kein", "no"),
    DE(true, "keine", "no"),
    DE(true, "keinen", "no"),
    DE(true, "außer", "except"),
    DE(true, "mit", "with"),
    DE(true, "der", "the"),
    DE(false, "die", "the"),
    DE(true, "das", "the"),
    DE(true, "dem", "the"),
    DE(false, "den", "the"),
    DE(false, "des", "of"),
    DE(true, "ein", "a"),
    DE(true, "eine", "a"),
    DE(true, "einer", "a"),
    DE(true, "einem", "a"),
    DE(true, "alle", "all"),
    DE(true, "zeige", "show"),
    DE(true, "zeig", "show"),
    DE(true, "mir", "me"),
    DE(true, "finde", "find"),
    DE(true, "suche", "find"),
    DE(true, "zum", "to"),
    DE(true, "zur", "to"),
    DE(false, "am", "at"),
    DE(true, "vom", "from"),
    DE(true, "gerät", "scanner"),
    DE(true, "geräte", "scanners"),
    DE(true, "geräten", "scanners"),
    DE(true, "hersteller", "manufacturer"),
    DE(true, "modell", "model"),
    /* patients, contrast */
    DE(true, "patienten", "patients"),
    DE(true, "patientinnen", "women"),
    DE(true, "männer", "men"),
    DE(true, "männern", "men"),
    DE(true, "frauen", "women"),
    DE(true, "männlich", "male"),
    DE(true, "männliche", "male"),
    DE(true, "männlichen", "male"),
    DE(true, "weiblich", "female"),
    DE(true, "weibliche", "female"),
    DE(true, "weiblichen", "female"),
    DE(true, "kontrastmittel", "contrast"),
    DE(true, "kontrast", "contrast"),
    DE(true, "nativ", "non-contrast"),

    /* ---- French: levels */
    FR(true, "études", "studies"),
    FR(true, "étude", "study"),
    FR(true, "etudes", "studies"),
    FR(true, "etude", "study"),
    FR(true, "examens", "studies"),
    FR(true, "examen", "study"),
    FR(true, "séries", "series"),
    FR(true, "série", "series"),
    FR(false, "images", "images"),
    FR(false, "image", "image"),
    FR(true, "fichiers", "files"),
    /* modalities */
    FR(true, "tomodensitométrie", "CT"),
    FR(true, "tomodensitometrie", "CT"),
    FR(false, "scanners", "CT"),
    FR(false, "scanner", "CT"),
    FR(false, "tdm", "CT"),
    FR(true, "irm", "MRI"),
    FR(true, "tep", "PET"),
    FR(true, "radiographies", "radiographs"),
    FR(true, "radiographie", "radiograph"),
    FR(false, "radios", "x-rays"),
    FR(false, "radio", "x-ray"),
    FR(true, "échographie", "ultrasound"),
    FR(true, "échographies", "ultrasound"),
    FR(true, "mammographie", "mammography"),
    /* body parts */
    FR(true, "thoracique", "thoracic"),
    FR(true, "thoraciques", "thoracic"),
    FR(true, "poitrine", "chest"),
    FR(true, "poumons", "lungs"),
    FR(true, "poumon", "lung"),
    FR(true, "pulmonaire", "pulmonary"),
    FR(true, "pulmonaires", "pulmonary"),
    FR(true, "tête", "head"),
    FR(true, "cerveau", "brain"),
    FR(true, "crâne", "skull"),
    FR(true, "abdominale", "abdominal"),
    FR(true, "abdominaux", "abdominal"),
    FR(true, "bassin", "pelvis"),
    FR(true, "pelvien", "pelvic"),
    FR(true, "pelvienne", "pelvic"),
    FR(true, "colonne", "spine"),
    FR(true, "genou", "knee"),
    FR(true, "cou", "neck"),
    FR(true, "cœur", "heart"),
    FR(true, "foie", "liver"),
    /* slice thickness and numbers */
    FR(true, "plus fines que", "thinner than"),
    FR(true, "plus fine que", "thinner than"),
    FR(true, "plus fins que", "thinner than"),
    FR(true, "plus fin que", "thinner than"),
    FR(true, "plus épaisses que", "thicker than"),
    FR(true, "plus épaisse que", "thicker than"),
    FR(true, "plus épais que", "thicker than"),
    FR(true, "épaisseur de coupe", "slice thickness"),
    FR(true, "coupes fines", "thin slices"),
    FR(true, "coupe fine", "thin slice"),
    FR(true, "coupes épaisses", "thick slices"),
    FR(true, "coupe épaisse", "thick slice"),
    FR(true, "coupes", "slices"),
    FR(true, "coupe", "slice"),
    FR(false, "fines", "thin"),
    FR(false, "fine", "thin"),
    FR(true, "épaisses", "thick"),
    FR(true, "épaisse", "thick"),
    FR(true, "épaisseur", "thickness"),
    FR(true, "plus de", "more than"),
    FR(true, "moins de", "fewer than"),
    FR(true, "au moins", "at least"),
    FR(true, "au plus", "at most"),
    FR(true, "âgés de plus de", "older than"),
    FR(true, "âgées de plus de", "older than"),
    FR(true, "âgés de moins de", "younger than"),
    FR(true, "âgées de moins de", "younger than"),
    FR(true, "plus de", "more than"),
    /* dates */
    FR(true, "entre", "between"),
    FR(true, "depuis", "since"),
    FR(true, "avant", "before"),
    FR(true, "après", "after"),
    FR(true, "jusqu en", "until"),
    FR(true, "jusqu à", "until"),
    FR(true, "à partir de", "from"),
    FR(true, "l année dernière", "last year"),
    FR(true, "année dernière", "last year"),
    FR(true, "le mois dernier", "last month"),
    FR(true, "cette année", "this year"),
    FR(true, "années", "years"),
    FR(true, "ans", "years"),
    FR(true, "année", "year"),
    FR(true, "mois", "months"),
    FR(true, "janvier", "January"),
    FR(true, "février", "February"),
    FR(false, "mars", "March"),
    FR(true, "avril", "April"),
    FR(false, "mai", "May"),
    FR(true, "juin", "June"),
    FR(true, "juillet", "July"),
    FR(true, "août", "August"),
    FR(true, "septembre", "September"),
    FR(true, "octobre", "October"),
    FR(true, "novembre", "November"),
    FR(true, "décembre", "December"),
    FR(false, "en", "in"),
    FR(true, "à", "to"),
    /* connectors, negation, fillers */
    FR(true, "et", "and"),
    FR(true, "ou", "or"),
    FR(true, "pas", "not"),
    FR(true, "sans", "without"),
    FR(true, "sauf", "except"),
    FR(false, "non", "non"),
    FR(true, "avec", "with"),
    FR(false, "de", "of"),
    FR(true, "du", "of"),
    FR(false, "des", "of"),
    FR(true, "d", "of"),
    FR(false, "la", "the"),
    FR(false, "le", "the"),
    FR(true, "les", "the"),
    FR(false, "l", "the"),
    FR(true, "une", "a"),
    FR(false, "un", "a"),
    FR(true, "toutes", "all"),
    FR(true, "tous", "all"),
    FR(true, "montre", "show"),
    FR(true, "montrez", "show"),
    FR(true, "moi", "me"),
    FR(true, "trouve", "find"),
    FR(true, "cherche", "find"),
    FR(true, "au", "at"),
    FR(true, "aux", "at"),
    FR(true, "qui", "which"),
    FR(true, "sont", "are"),
    FR(true, "fabricant", "manufacturer"),
    FR(true, "modèle", "model"),
    FR(true, "noyau", "kernel"),
    FR(true, "filtre", "kernel"),
    FR(true, "appareil", "scanner"),
    FR(true, "appareils", "scanners"),
    /* patients, contrast */
    FR(true, "patientes", "women"),
    FR(false, "patients", "patients"),
    FR(true, "hommes", "men"),
    FR(true, "femmes", "women"),
    FR(true, "masculin", "male"),
    FR(true, "féminin", "female"),
    FR(true, "produit de contraste", "contrast"),
    FR(true, "injecté", "contrast-enhanced"),
    FR(true, "injectée", "contrast-enhanced"),
    FR(true, "injectés", "contrast-enhanced"),
    FR(true, "injectées", "contrast-enhanced"),
    FR(true, "contraste", "contrast"),
};

#define MAX_WORDS 256

typedef struct {
    size_t off, len;
    char low[64];
} word_t;

static bool word_byte(unsigned char c)
{
    return isalpha(c) || c >= 0x80;
}

/* Lower-case a UTF-8 word: ASCII, Latin-1 capitals (U+00C0–U+00DE but ×) and Œ. */
static void lower_utf8(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0xC3 && i + 1 < n && k + 2 < cap) {
            unsigned char d = (unsigned char)s[i + 1];
            out[k++] = (char)c;
            out[k++] = (char)(d >= 0x80 && d <= 0x9E && d != 0x97 ? d + 0x20 : d);
            i++;
            continue;
        }
        if (c == 0xC5 && i + 1 < n && (unsigned char)s[i + 1] == 0x92 && k + 2 < cap) {
            out[k++] = (char)0xC5;
            out[k++] = (char)0x93;
            i++;
            continue;
        }
        out[k++] = (char)tolower(c);
    }
    out[k] = '\0';
}

static size_t split_words(const char *s, word_t *w, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; s[i] && n < cap;) {
        if (!word_byte((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (s[j] && word_byte((unsigned char)s[j]))
            j++;
        w[n].off = i;
        w[n].len = j - i;
        lower_utf8(s + i, j - i, w[n].low, sizeof w[n].low);
        n++;
        i = j;
    }
    return n;
}

/* Only spaces, apostrophes (' ’) and hyphens between two words of a phrase. */
static bool phrase_gap(const char *s, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\'' || c == '-' || c == '\t')
            continue;
        if (c == 0xE2 && i + 2 < to && (unsigned char)s[i + 1] == 0x80 && (unsigned char)s[i + 2] == 0x99) {
            i += 2;
            continue;
        }
        return false;
    }
    return true;
}

/* Words of entry e matching at word i: their count, 0 when it does not match. */
static size_t entry_matches(const char *s, const word_t *w, size_t nw, size_t i, const lex_t *e)
{
    const char *f = e->foreign;
    size_t k = 0;
    while (*f) {
        const char *end = strchr(f, ' ');
        size_t fl = end ? (size_t)(end - f) : strlen(f);
        if (i + k >= nw || strlen(w[i + k].low) != fl || strncmp(w[i + k].low, f, fl))
            return 0;
        if (k > 0 && !phrase_gap(s, w[i + k - 1].off + w[i + k - 1].len, w[i + k].off))
            return 0;
        k++;
        f = end ? end + 1 : f + fl;
    }
    return k;
}

/* Longest entry at word i, of language lang (0: any). */
static const lex_t *best_entry(const char *s, const word_t *w, size_t nw, size_t i, char lang, size_t *len)
{
    const lex_t *best = NULL;
    *len = 0;
    for (size_t e = 0; e < sizeof LEXICON / sizeof LEXICON[0]; e++) {
        if (lang && LEXICON[e].lang != lang)
            continue;
        size_t k = entry_matches(s, w, nw, i, &LEXICON[e]);
        if (k > *len) {
            *len = k;
            best = &LEXICON[e];
        }
    }
    return best;
}

/* 'd', 'f' or 0: the language with more marker words. */
static char detect(const char *s, const word_t *w, size_t nw)
{
    int de = 0, fr = 0;
    for (size_t i = 0; i < nw; i++) {
        for (size_t e = 0; e < sizeof LEXICON / sizeof LEXICON[0]; e++) {
            const lex_t *x = &LEXICON[e];
            if (!x->marker || !entry_matches(s, w, nw, i, x))
                continue;
            if (x->lang == 'd')
                de++;
            else
                fr++;
            break;
        }
    }
    return de > fr ? 'd' : fr > de ? 'f' : 0;
}

char *mdb_nl_lexicon_rewrite(const char *sentence, json_t *corrections)
{
    word_t *w = calloc(MAX_WORDS, sizeof *w);
    if (!w)
        return NULL;
    size_t nw = split_words(sentence, w, MAX_WORDS);
    char lang = detect(sentence, w, nw);
    if (!lang) {
        free(w);
        return strdup(sentence);
    }
    mdb_nl_buf_t out = {0};
    size_t copied = 0; /* bytes of sentence already in out */
    for (size_t i = 0; i < nw;) {
        size_t k = 0;
        const lex_t *e = best_entry(sentence, w, nw, i, lang, &k);
        if (!e) {
            i++;
            continue;
        }
        size_t from = w[i].off, to = w[i + k - 1].off + w[i + k - 1].len;
        mdb_nl_buf_addf(&out, "%.*s", (int)(from - copied), sentence + copied);
        mdb_nl_buf_add(&out, e->english);
        copied = to;
        if (corrections && strncasecmp(sentence + from, e->english, to - from)) {
            json_t *c = json_pack("{s:s%, s:s, s:s, s:s}", "from", sentence + from, to - from, "to", e->english, "kind",
                                  "translation", "language", lang == 'd' ? "de" : "fr");
            if (!c || json_array_append_new(corrections, c))
                out.oom = true;
        }
        i += k;
    }
    mdb_nl_buf_add(&out, sentence + copied);
    free(w);
    return mdb_nl_buf_steal(&out);
}
