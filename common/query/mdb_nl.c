/* mdb_nl.c: the offline natural-language translator's entry point: a
 * sentence is rewritten into English, read, respelled and read again when
 * that understands more, and lowered to a MongoDB filter with joins.
 *
 * This file keeps the entry point; the parts live in files of their own:
 * mdb_nl_vocab.c (vocabulary), mdb_nl_tokens.c (tokenizer), mdb_nl_cond.c
 * (conditions, parser state), mdb_nl_dates.c, mdb_nl_numbers.c,
 * mdb_nl_rules_names.c, mdb_nl_rules_ids.c, mdb_nl_rules_text.c,
 * mdb_nl_rules_presence.c (the grammar rules), mdb_nl_scan.c (the scan),
 * mdb_nl_lower.c (lowering to a filter), mdb_nl_result.c (the result).
 *
 * How a sentence is read: it is cut into tokens (words, numbers, ISO dates,
 * UIDs, identifiers such as LIDC-IDRI-0001, quoted strings, comparison
 * symbols). A left-to-right scan tries the grammar rules at each unread token,
 * most specific first; a rule that matches reads its tokens and adds one
 * condition. Words no rule wants are either known filler ("show me all the")
 * or listed in the result as ignored, so the user sees what was not
 * understood. Negation words ("not", "no", "without", "excluding") apply to
 * the next condition, and to the further values of the same field joined by
 * "and"/"or"/"," ("excluding Siemens or GE"). Values of one field given
 * together mean any of them ("CT and MR studies" = CT or MR).
 *
 * Never silently wrong (issue 15): German and French words are rewritten
 * into English first (mdb_nl_lexicon_de_fr.c); a word no rule reads is
 * replaced by its spelling correction when there is exactly one
 * (mdb_nl_spell.c) and the sentence read again; stored values are also
 * matched by prefix; every rewrite is reported in the result's corrections.
 * What still cannot be read makes the answer partial (confidence), an "or"
 * between two readings of one field stays an $or, and a sentence of filler
 * words only is refused.
 *
 * Each condition knows, per level, which document field carries it (from the
 * vocabulary). Lowering for the chosen level keeps the conditions whose field
 * exists there in the level's filter and turns the others into joins on the
 * nearest level that has the field (see mdb_nl.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_nl_lexicon.h"
#include "mdb_nl_private.h"
#include "mdb_nl_spell.h"

static bool parse_ref_date(const char *s, int *y, int *m, int *d)
{
    if (!s || !*s) {
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        *y = tmv.tm_year + 1900, *m = tmv.tm_mon + 1, *d = tmv.tm_mday;
        return true;
    }
    size_t n = strlen(s);
    if (n == 8 && nl_all_digits(s, 8)) {
        int v = atoi(s);
        *y = v / 10000, *m = v / 100 % 100, *d = v % 100;
    } else if (n == 10 && s[4] == '-' && s[7] == '-' && nl_all_digits(s, 4) && nl_all_digits(s + 5, 2) &&
               nl_all_digits(s + 8, 2)) {
        *y = atoi(s), *m = atoi(s + 5), *d = atoi(s + 8);
    } else {
        return false;
    }
    return nl_valid_ymd(*y, *m, *d) && *m && *d;
}

/* Words a correction may be taken from: every word the grammar tried on
 * this sentence (collected by a second parse), the filler words and the
 * words of the stored names. NULL on OOM. */
static mdb_nl_words_t *spell_dictionary(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3]);

static void add_value_words(mdb_nl_words_t *w, const mdb_nl_vocab_t *v, const char *path, bool *ok)
{
    size_t nv = 0;
    const char *const *vals = mdb_nl_vocab_values(v, path, &nv);
    for (size_t k = 0; k < nv && k < 2000; k++) {
        const char *s = vals[k];
        while (*s) {
            while (*s && !isalpha((unsigned char)*s))
                s++;
            const char *e = s;
            while (isalpha((unsigned char)*e))
                e++;
            if (e - s >= 4 && (!*e || !isdigit((unsigned char)*e)) && !mdb_nl_words_add(w, s, (size_t)(e - s)))
                *ok = false;
            s = e;
        }
    }
}

static mdb_nl_words_t *spell_dictionary(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3])
{
    static const char *const names[] = {"manufacturer",
                                        "manufacturer_model_name",
                                        "body_part_examined",
                                        "modality",
                                        "metadata.ConvolutionKernel",
                                        "metadata.StationName",
                                        "metadata.InstitutionName",
                                        "collection_ids",
                                        NULL};
    static const char *const extra = "january|february|march|april|may|june|july|august|september|october|november|"
                                     "december|years|months|weeks|days|than|thinner|thicker";
    mdb_nl_words_t *w = mdb_nl_words_new();
    if (!w)
        return NULL;
    nl_parser_t p;
    nl_toks_t ts = {0};
    bool ok = nl_parse_sentence(v, sentence, ref, w, &p, &ts);
    nl_parser_clear(&p);
    nl_toks_free(&ts);
    /* fillers stay in the dictionary so that a word close to one is not "corrected" into
     * a less close content word; respell() then leaves it alone */
    ok = ok && mdb_nl_words_add_phrases(w, NL_STOPWORDS) && mdb_nl_words_add_phrases(w, extra);
    for (int k = 0; names[k]; k++)
        add_value_words(w, v, names[k], &ok);
    if (!ok) {
        mdb_nl_words_destroy(w);
        return NULL;
    }
    return w;
}

static bool in_strings(const json_t *list, const char *s)
{
    size_t i;
    json_t *x;
    json_array_foreach(list, i, x) if (!strcasecmp(json_string_value(x), s)) return true;
    return false;
}

/* The sentence with its ignored, misspelled words replaced by their
 * corrections (malloc'd), or NULL when none can be corrected. Words whose
 * correction is in `useless` (corrections that were not understood either)
 * are left alone. Each correction is appended to corrections. *oom is set
 * on OOM. */
static char *respell(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3], const nl_toks_t *ts,
                     const json_t *useless, json_t *corrections, bool *oom)
{
    bool any = false;
    for (size_t k = 0; k < ts->n && !any; k++)
        any = ts->t[k].ignored && ts->t[k].kind == NL_T_WORD;
    if (!any)
        return NULL;
    mdb_nl_words_t *dict = spell_dictionary(v, sentence, ref);
    if (!dict) {
        *oom = true;
        return NULL;
    }
    size_t nd = 0;
    const char *const *words = mdb_nl_words_list(dict, &nd);
    mdb_nl_buf_t b = {0};
    size_t copied = 0, fixed = 0;
    for (size_t k = 0; k < ts->n; k++) {
        const nl_tok_t *t = &ts->t[k];
        bool alpha = t->kind == NL_T_WORD && t->src >= sentence && t->src + t->srclen <= sentence + strlen(sentence);
        for (size_t c = 0; alpha && c < t->srclen; c++)
            alpha = isalpha((unsigned char)t->src[c]);
        if (!t->ignored || !alpha)
            continue;
        const char *fix = mdb_nl_spell_best(t->low, words, nd, NULL);
        if (!fix || (useless && in_strings(useless, fix)))
            continue;
        size_t from = (size_t)(t->src - sentence);
        mdb_nl_buf_addf(&b, "%.*s%s", (int)(from - copied), sentence + copied, fix);
        copied = from + t->srclen;
        json_t *c = json_pack("{s:s, s:s, s:s}", "from", t->text, "to", fix, "kind", "spelling");
        if (!c || json_array_append_new(corrections, c))
            *oom = true;
        fixed++;
    }
    mdb_nl_words_destroy(dict);
    if (!fixed) {
        mdb_nl_buf_free(&b);
        return NULL;
    }
    mdb_nl_buf_add(&b, sentence + copied);
    char *out = mdb_nl_buf_steal(&b);
    if (!out)
        *oom = true;
    return out;
}

/* One reading of an (English) sentence. NULL with err on refusal/OOM. When
 * respelled is not NULL it gets the sentence with misspellings corrected
 * (or NULL) and spelling gets the corrections. */
static mdb_nl_result_t *translate_once(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3],
                                       char **respelled, const json_t *useless, json_t *spelling, mdb_error_t *err)
{
    mdb_nl_result_t *r = NULL;
    nl_toks_t ts = {0};
    nl_parser_t p;
    bool oom = false;
    if (!nl_parse_sentence(v, sentence, ref, NULL, &p, &ts))
        goto oom;
    if (respelled) {
        *respelled = respell(v, sentence, ref, &ts, useless, spelling, &oom);
        if (oom)
            goto oom;
    }
    size_t content = 0;
    for (size_t k = 0; k < ts.n; k++)
        content += ts.t[k].kind != NL_T_SEP && ts.t[k].kind != NL_T_SYM;
    if (content == 0) {
        mdb_error_set(err, MDB_ERR_QUERY, 0,
                      "empty sentence: say what to look for, e.g. \"chest CT series from 2001\"");
        goto done;
    }
    if (p.nc == 0 && (json_array_size(p.ignored) > 0 || p.level < 0)) {
        /* nothing but unknown or filler words: answering "everything" would mislead */
        mdb_nl_buf_t b = {0};
        size_t k;
        json_t *w;
        json_array_foreach(p.ignored, k, w) mdb_nl_buf_addf(&b, "%s\"%s\"", k ? ", " : "", json_string_value(w));
        if (!json_array_size(p.ignored))
            for (size_t t = 0; t < ts.n; t++)
                if (ts.t[t].kind == NL_T_WORD)
                    mdb_nl_buf_addf(&b, "%s\"%s\"", b.len ? ", " : "", ts.t[t].text);
        char *list = mdb_nl_buf_steal(&b);
        mdb_error_set(err, MDB_ERR_QUERY, MDB_NL_ERR_NOT_UNDERSTOOD,
                      "nothing in the sentence was understood (%s); try e.g. \"chest CT series from 2001\"",
                      list ? list : "");
        free(list);
        goto done;
    }
    r = mdb_nl_result_new(MDB_QUERY_STUDIES);
    if (!r || !nl_lower(&p, r))
        goto oom;
    json_decref(r->ignored);
    r->ignored = json_incref(p.ignored);
    json_decref(r->notes);
    r->notes = json_incref(p.notes);
    json_decref(r->corrections);
    r->corrections = json_incref(p.corrections);
    r->fillers = json_incref(p.fillers);
    r->partial = p.partial;
    goto done;
oom:
    mdb_nl_result_destroy(r);
    r = NULL;
    if (respelled) {
        free(*respelled);
        *respelled = NULL;
    }
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    nl_parser_clear(&p);
    nl_toks_free(&ts);
    return r;
}

/* Put the corrections (translations, spellings) in front of the result's
 * own and say them in the explanation. */
static bool add_corrections(mdb_nl_result_t *r, json_t *before)
{
    json_t *all = json_array();
    if (!all || json_array_extend(all, before) || json_array_extend(all, r->corrections)) {
        json_decref(all);
        return false;
    }
    json_decref(r->corrections);
    r->corrections = all;
    if (!json_array_size(before))
        return true;
    mdb_nl_buf_t b = {0};
    mdb_nl_buf_add(&b, r->explanation ? r->explanation : "");
    mdb_nl_buf_add(&b, " Read as:");
    size_t k;
    json_t *c;
    json_array_foreach(before, k, c)
        mdb_nl_buf_addf(&b, "%s \"%s\" → \"%s\"", k ? "," : "", json_string_value(json_object_get(c, "from")),
                        json_string_value(json_object_get(c, "to")));
    mdb_nl_buf_add(&b, ".");
    char *ex = mdb_nl_buf_steal(&b);
    if (!ex)
        return false;
    free(r->explanation);
    r->explanation = ex;
    return true;
}

mdb_nl_result_t *mdb_nl_translate_offline(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                          mdb_error_t *err)
{
    mdb_nl_result_t *r = NULL, *r2 = NULL;
    char *english = NULL, *respelled = NULL;
    json_t *corr = NULL, *spelling = NULL;
    int ref[3];
    if (!sentence) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "no sentence given");
        return NULL;
    }
    size_t len = strlen(sentence);
    if (len > MDB_NL_MAX_SENTENCE) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sentence too long (%zu bytes, at most %d)", len, MDB_NL_MAX_SENTENCE);
        return NULL;
    }
    if (!nl_utf8_valid(sentence)) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "sentence is not valid UTF-8");
        return NULL;
    }
    if (!parse_ref_date(opt ? opt->reference_date : NULL, &ref[0], &ref[1], &ref[2])) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "reference date '%s' is not a valid YYYYMMDD or YYYY-MM-DD date",
                      opt->reference_date);
        return NULL;
    }
    corr = json_array();
    spelling = json_array();
    if (!corr || !spelling || !(english = mdb_nl_lexicon_rewrite(sentence, corr)))
        goto oom;
    r = translate_once(v, english, ref, &respelled, NULL, spelling, err);
    if (!r && err && err->domain == MDB_ERR_SYSTEM)
        goto done;
    if (respelled) {
        mdb_error_t err2 = {0};
        r2 = translate_once(v, respelled, ref, NULL, NULL, NULL, &err2);
        if (r2) {
            /* a correction that is not understood either ("Mayo" → "may"), or that only
             * turns a word into a filler no rule uses ("mode" → "made": a content word
             * would vanish silently), is not made */
            json_t *useless = json_array();
            size_t k;
            json_t *c;
            json_array_foreach(spelling, k, c)
            {
                const char *to = json_string_value(json_object_get(c, "to"));
                if (useless && (in_strings(r2->ignored, to) || (r2->fillers && in_strings(r2->fillers, to))))
                    json_array_append_new(useless, json_string(to));
            }
            if (!useless)
                goto oom;
            if (json_array_size(useless)) {
                mdb_nl_result_destroy(r2);
                r2 = NULL;
                free(respelled);
                respelled = NULL;
                json_array_clear(spelling);
                mdb_nl_result_t *again = translate_once(v, english, ref, &respelled, useless, spelling, &err2);
                mdb_nl_result_destroy(again);
                if (respelled)
                    r2 = translate_once(v, respelled, ref, NULL, NULL, NULL, &err2);
            }
            json_decref(useless);
        }
        if (r2 && (!r || json_array_size(r2->ignored) < json_array_size(r->ignored))) {
            mdb_nl_result_destroy(r);
            r = r2;
            r2 = NULL;
            if (json_array_extend(corr, spelling))
                goto oom;
        }
    }
    if (r && !add_corrections(r, corr))
        goto oom;
    goto done;
oom:
    mdb_nl_result_destroy(r);
    r = NULL;
    mdb_error_set(err, MDB_ERR_SYSTEM, 0, "out of memory");
done:
    mdb_nl_result_destroy(r2);
    free(english);
    free(respelled);
    json_decref(corr);
    json_decref(spelling);
    return r;
}

mdb_nl_result_t *mdb_nl_translate(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                  mdb_error_t *err)
{
    return mdb_nl_translate_offline(v, sentence, opt, err);
}
