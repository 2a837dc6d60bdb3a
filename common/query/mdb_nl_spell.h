/* mdb_nl_spell: spelling correction for the natural-language translator.
 * A word no rule of the grammar reads ("sereis", "thiner", "Siemmens") is
 * compared with the words the grammar and the catalogue know; when exactly one
 * of them is close enough it replaces the typed word and the answer says so
 * ("sereis → series").
 *
 * Distance: optimal string alignment (Levenshtein plus adjacent
 * transposition), ASCII case-insensitive, counted in bytes. How far a word
 * may be from its correction grows with its length (mdb_nl_spell_limit), so
 * that short words, where two edits make another word, are not "corrected".
 * Pure functions, no allocation beyond a stack buffer, thread-safe. */
#ifndef MDB_NL_SPELL_H
#define MDB_NL_SPELL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest word compared (bytes); longer words are never corrected. */
#define MDB_NL_SPELL_MAX_WORD 48

/* Edit distance between a and b (case-insensitive), or max + 1 when it is
 * larger than max (the computation stops early). Words longer than
 * MDB_NL_SPELL_MAX_WORD are max + 1 apart unless equal. */
int mdb_nl_spell_distance(const char *a, const char *b, int max);

/* How many edits a typed word of len bytes may need: 0 below 4 bytes,
 * 1 for 4–5, 2 from 6 on. */
int mdb_nl_spell_limit(size_t len);

/* The one entry of dict (n words) closest to word within
 * mdb_nl_spell_limit(strlen(word)) edits and starting with the same letter
 * (or with its first two letters swapped), or NULL when none is, when word
 * itself is in dict, or when two different entries are equally close (an
 * ambiguous correction is not made). *dist (may be NULL) gets the distance. */
const char *mdb_nl_spell_best(const char *word, const char *const *dict, size_t n, int *dist);

/* A set of known words (the dictionary corrections are taken from).
 * Words are stored lower-case (ASCII); adding one twice is harmless. */
typedef struct mdb_nl_words mdb_nl_words_t;

mdb_nl_words_t *mdb_nl_words_new(void);       /* NULL on OOM */
void mdb_nl_words_destroy(mdb_nl_words_t *w); /* accepts NULL */
/* Add the len bytes at word (empty words and words longer than
 * MDB_NL_SPELL_MAX_WORD are skipped). false on OOM. */
bool mdb_nl_words_add(mdb_nl_words_t *w, const char *word, size_t len);
/* Add every word of an alternatives string as the grammar writes them:
 * "thin slice*|thin section*" adds thin, slice, section. false on OOM. */
bool mdb_nl_words_add_phrases(mdb_nl_words_t *w, const char *alts);
/* The words, in insertion order (borrowed, valid until the next add). */
const char *const *mdb_nl_words_list(const mdb_nl_words_t *w, size_t *n);

#endif
