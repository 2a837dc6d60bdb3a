/* mdb_nl_lexicon: German and French words for the vocabulary of the
 * natural-language translator (levels, modalities, body parts, slice
 * thickness, dates, counts, negation, sex, contrast). A sentence such as
 * "Thorax-CT Serien dünner als 2 mm" or "scanner thoracique de 2002" is
 * rewritten word by word into the English the grammar reads ("Thorax CT
 * series thinner than 2 mm", "CT thoracic of 2002") before it is parsed, and
 * every rewrite is reported so the user sees how the sentence was read.
 *
 * Language detection: some words belong to one language only ("Serien",
 * "dünner", "thoracique", "études"); the language with more of them in the
 * sentence is chosen and only its words are rewritten. Words that are also
 * English (or mean something else in English: "scanner" is a CT in French,
 * a filler word in English; "die", "de", "mai") are rewritten only then, so
 * an English sentence is never changed. Case-insensitive, also for ä ö ü é
 * è à ç and the other Latin-1 letters.
 *
 * Pure function, thread-safe. */
#ifndef MDB_NL_LEXICON_H
#define MDB_NL_LEXICON_H

#include <jansson.h>

/* The sentence with its German or French words rewritten into English
 * (malloc'd, caller frees; an English sentence comes back unchanged). Each
 * rewrite is appended to corrections (may be NULL) as {"from": typed words,
 * "to": English words, "kind": "translation", "language": "de"|"fr"}.
 * NULL on OOM. */
char *mdb_nl_lexicon_rewrite(const char *sentence, json_t *corrections);

#endif
