/* Unit tests of the natural-language helpers added for issue 15: the edit
 * distance and choice of a spelling correction (mdb_nl_spell) and the
 * German/French rewrite into the translator's English (mdb_nl_lexicon). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_nl_lexicon.h"
#include "mdb_nl_spell.h"

static void test_distance(void **state)
{
    (void)state;
    assert_int_equal(mdb_nl_spell_distance("series", "series", 2), 0);
    assert_int_equal(mdb_nl_spell_distance("SERIES", "series", 2), 0);
    assert_int_equal(mdb_nl_spell_distance("sereis", "series", 2), 1); /* transposition */
    assert_int_equal(mdb_nl_spell_distance("thiner", "thinner", 2), 1);
    assert_int_equal(mdb_nl_spell_distance("abdominel", "abdominal", 2), 1);
    assert_int_equal(mdb_nl_spell_distance("kitten", "sitting", 5), 3);
    assert_int_equal(mdb_nl_spell_distance("kitten", "sitting", 2), 3); /* max + 1 */
    assert_int_equal(mdb_nl_spell_distance("", "abc", 5), 3);
    assert_int_equal(mdb_nl_spell_distance("a", "abcdef", 2), 3);
    char longw[80];
    memset(longw, 'x', sizeof longw - 1);
    longw[sizeof longw - 1] = '\0';
    assert_int_equal(mdb_nl_spell_distance(longw, "xx", 2), 3);
    assert_int_equal(mdb_nl_spell_distance(longw, longw, 2), 0);
}

static void test_best(void **state)
{
    (void)state;
    static const char *const dict[] = {"series",  "studies", "thinner", "thicker", "siemens",
                                       "emotion", "chest",   "may",     "mayo"};
    size_t n = sizeof dict / sizeof dict[0];
    int d = -1;
    assert_string_equal(mdb_nl_spell_best("sereis", dict, n, &d), "series");
    assert_int_equal(d, 1);
    assert_string_equal(mdb_nl_spell_best("studeis", dict, n, NULL), "studies");
    assert_string_equal(mdb_nl_spell_best("Siemmens", dict, n, NULL), "siemens");
    assert_string_equal(mdb_nl_spell_best("thiner", dict, n, NULL), "thinner");
    assert_string_equal(mdb_nl_spell_best("cehst", dict, n, NULL), "chest"); /* first two letters swapped */
    assert_null(mdb_nl_spell_best("series", dict, n, NULL));                 /* known: nothing to correct */
    assert_null(mdb_nl_spell_best("motion", dict, n, NULL));                 /* the first letter is kept */
    assert_null(mdb_nl_spell_best("ser", dict, n, NULL));                    /* too short to correct */
    assert_null(mdb_nl_spell_best("wombats", dict, n, NULL));
    /* a tie between two different words is not corrected */
    static const char *const tie2[] = {"abcdef", "abcdeg"};
    assert_null(mdb_nl_spell_best("abcdex", tie2, 2, NULL));
    assert_int_equal(mdb_nl_spell_limit(3), 0);
    assert_int_equal(mdb_nl_spell_limit(5), 1);
    assert_int_equal(mdb_nl_spell_limit(6), 2);
}

static void test_words(void **state)
{
    (void)state;
    mdb_nl_words_t *w = mdb_nl_words_new();
    assert_non_null(w);
    assert_true(mdb_nl_words_add_phrases(w, "thin slice*|thin section*|THIN|x ray*|2.5mm|<="));
    for (int i = 0; i < 500; i++) { /* growth and rehash */
        char buf[16];
        snprintf(buf, sizeof buf, "word%c%c", 'a' + i % 26, 'a' + i / 26);
        assert_true(mdb_nl_words_add(w, buf, strlen(buf)));
    }
    size_t n = 0;
    const char *const *list = mdb_nl_words_list(w, &n);
    assert_int_equal(n, 5 + 500);
    assert_string_equal(list[0], "thin");
    assert_string_equal(list[1], "slice");
    assert_string_equal(list[2], "section");
    assert_string_equal(list[3], "x");
    assert_string_equal(list[4], "ray");
    mdb_nl_words_destroy(w);
    mdb_nl_words_destroy(NULL);
}

/* Rewrite and compare; returns the number of corrections. */
static size_t rewrite(const char *in, const char *want)
{
    json_t *corr = json_array();
    char *out = mdb_nl_lexicon_rewrite(in, corr);
    assert_non_null(out);
    if (strcmp(out, want))
        fail_msg("'%s' -> '%s', want '%s'", in, out, want);
    size_t n = json_array_size(corr);
    free(out);
    json_decref(corr);
    return n;
}

static void test_lexicon(void **state)
{
    (void)state;
    assert_int_equal(rewrite("Thorax-CT Serien dünner als 2 mm", "Thorax-CT series thinner than 2 mm"), 2);
    assert_int_equal(rewrite("scanner thoracique de 2002", "CT thoracic of 2002"), 3);
    assert_int_equal(rewrite("STUDIEN ZWISCHEN 2000 UND 2001", "studies between 2000 and 2001"), 3);
    rewrite("Études entre mars 2001 et février 2002", "studies between March 2001 and February 2002");
    rewrite("séries sans produit de contraste", "series without contrast");
    rewrite("l'année dernière", "last year");
    rewrite("Röntgenbilder der Lunge", "x-rays the lung");
    /* English is never changed, even with words that are German or French elsewhere */
    assert_int_equal(rewrite("Siemens scanners from 2003", "Siemens scanners from 2003"), 0);
    assert_int_equal(rewrite("chest CT images in May 2004", "chest CT images in May 2004"), 0);
    assert_int_equal(rewrite("series de 2002", "series de 2002"), 0); /* no marker word: unchanged */
    assert_int_equal(rewrite("I am looking for CT series in 2003", "I am looking for CT series in 2003"), 0);
    rewrite("images des femmes", "images of women"); /* "des" is French here, not German */
    assert_int_equal(rewrite("", ""), 0);
    /* the corrections name the language */
    json_t *corr = json_array();
    char *out = mdb_nl_lexicon_rewrite("séries", corr);
    assert_string_equal(out, "series");
    json_t *c = json_array_get(corr, 0);
    assert_string_equal(json_string_value(json_object_get(c, "from")), "séries");
    assert_string_equal(json_string_value(json_object_get(c, "to")), "series");
    assert_string_equal(json_string_value(json_object_get(c, "kind")), "translation");
    assert_string_equal(json_string_value(json_object_get(c, "language")), "fr");
    free(out);
    json_decref(corr);
    out = mdb_nl_lexicon_rewrite("Serien", NULL);
    assert_string_equal(out, "series");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_best),
        cmocka_unit_test(test_words),
        cmocka_unit_test(test_lexicon),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
