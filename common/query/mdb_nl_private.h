/* mdb_nl_private.h: internals shared by the files of the natural-language
 * module (mdb_nl.c: vocabulary, grammar, results; mdb_nl_buf.c: growable
 * strings; mdb_nl_spell.c: spelling corrections; mdb_nl_lexicon_de_fr.c: the
 * German/French rewrite; mdb_nl_llm.c: the LLM backend; mdb_nl_run.c:
 * database vocabulary and execution). Not for use outside mdb_nl*.c. */
#ifndef MDB_NL_PRIVATE_H
#define MDB_NL_PRIVATE_H

#include "mdb_nl.h"

/* A growable string; all appends are no-ops after an allocation failure
 * (oom is then set and the text is unusable). */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} mdb_nl_buf_t;

void mdb_nl_buf_add(mdb_nl_buf_t *b, const char *s);
void mdb_nl_buf_addf(mdb_nl_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the string over (caller frees); NULL after OOM. Resets b. */
char *mdb_nl_buf_steal(mdb_nl_buf_t *b);
void mdb_nl_buf_free(mdb_nl_buf_t *b);

/* Values recorded for path (NULL when none); *n gets the count. */
const char *const *mdb_nl_vocab_values(const mdb_nl_vocab_t *v, const char *path, size_t *n);

/* A bare result: level, filter {} and joins [] (owned by the result),
 * backend "offline". NULL on OOM. */
mdb_nl_result_t *mdb_nl_result_new(mdb_query_level_t level);
/* Replace the explanation/message (copied). */
bool mdb_nl_result_set_explanation(mdb_nl_result_t *r, const char *text);
bool mdb_nl_result_set_message(mdb_nl_result_t *r, const char *text);
void mdb_nl_result_set_backend(mdb_nl_result_t *r, const char *backend);
/* Adopt filter / joins (references stolen). */
void mdb_nl_result_adopt(mdb_nl_result_t *r, json_t *filter, json_t *joins);

/* Link fields joining level `level` to documents of level `other`: documents
 * of `level` whose *local is in the set of *foreign values of matching
 * `other` documents. */
void mdb_nl_link_fields(mdb_query_level_t level, mdb_query_level_t other, const char **local, const char **foreign);

/* Offline translation; fills the fallback message when given. */
mdb_nl_result_t *mdb_nl_translate_offline(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                          mdb_error_t *err);

#endif
