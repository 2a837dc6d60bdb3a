/* mdb_nl: natural-language search over the catalogue. A researcher types
 * "thin-slice chest CT series from 2000 to 2001, Siemens scanners" and gets
 * the same kind of validated MongoDB filter the filter parameters of
 * mdb_query produce, plus a sentence explaining how every word was read.
 *
 * Two translators, one result:
 *  - the offline translator (mdb_nl_translate): a small grammar, no model,
 *    no network. It knows the promoted fields, the metadata keywords and a
 *    few value lists seen in the database (a vocabulary, mdb_nl_vocab_t),
 *    synonyms (chest/thorax/lung → CHEST, x-ray → CR/DX, ...), numbers with
 *    units (mm, cm, kV), dates and date ranges ("2000 to 2001", "after March
 *    2001", "last 5 years" relative to a reference date), negation ("not
 *    contrast", "excluding Siemens") and the level (studies, series, images).
 *    Documented defaults: "thin slice" = slice_thickness <= 2.5 mm, "thick
 *    slice" = slice_thickness > 2.5 mm; with no level word the level is the
 *    most specific one any condition needs (study when there is none).
 *  - an optional LLM backend (mdb_nl_translate_llm): an OpenAI-compatible
 *    chat-completions endpoint (e.g. a local Ollama) asked for JSON. Its
 *    answer is validated against the same vocabulary and the raw-query
 *    operator whitelist of mdb_query; anything invalid falls back to the
 *    offline translator and the result carries a message saying why.
 *
 * A condition on a field that lives at another level than the one asked for
 * (a study date in a series search, a manufacturer in a study search)
 * becomes a join: "series whose study matches {...}", "studies having a
 * series that matches {...}", or for negated conditions "studies having no
 * series that matches {...}". mdb_nl_run resolves joins into $in/$nin lists
 * of UIDs and executes the final filter through mdb_query (whitelist, time
 * limit, result cap).
 *
 * Thread-safety: a vocabulary is read-only once built and may be shared by
 * threads; results are independent objects. */
#ifndef MDB_NL_H
#define MDB_NL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdb_config.h"
#include "mdb_error.h"
#include "mdb_mongo.h"
#include "mdb_query.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mdb_error_t.code of a refusal because no word of the sentence was understood
 * (other refusals: code 0). */
#define MDB_NL_ERR_NOT_UNDERSTOOD 1

/* Longest sentence accepted (bytes). */
#define MDB_NL_MAX_SENTENCE 2000
/* The documented "thin slice" threshold in millimetres (inclusive). */
#define MDB_NL_THIN_SLICE_MM 2.5
/* Most UIDs a join may resolve to before mdb_nl_run refuses the query as too broad. */
#define MDB_NL_MAX_JOIN_IDS 200000

/* ---- vocabulary ---- */
typedef struct mdb_nl_vocab mdb_nl_vocab_t;

/* Empty vocabulary (no fields, no values). NULL on OOM. */
mdb_nl_vocab_t *mdb_nl_vocab_new(void);
void mdb_nl_vocab_destroy(mdb_nl_vocab_t *v); /* accepts NULL */

/* Declare that documents of level carry field path (a promoted field such as
 * "manufacturer" or "metadata.<Keyword>") of the given type. Declaring twice
 * is harmless. false only on OOM or an empty path. */
bool mdb_nl_vocab_add_field(mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path, mdb_qfield_type_t type,
                            mdb_error_t *err);
/* Record a value seen in the data for field path (any level), e.g.
 * ("manufacturer", "SIEMENS"). Values make names recognisable in sentences
 * and let the translator match stored spellings exactly. Empty values and
 * values longer than 128 bytes are ignored (returns true). */
bool mdb_nl_vocab_add_value(mdb_nl_vocab_t *v, const char *path, const char *value, mdb_error_t *err);
/* Declare every promoted field of every level (mdb_query_fields) plus the
 * link and count fields (study_id, series_id, instance_count, modalities,
 * collection_ids). */
bool mdb_nl_vocab_add_promoted(mdb_nl_vocab_t *v, mdb_error_t *err);
/* Fill v from the database behind m: promoted fields, the metadata keywords
 * occurring in a sample of up to `sample` documents per level, and the
 * distinct values of the name-like fields (manufacturer, model, body part,
 * modality, patient id, collection, short metadata strings). false with err
 * when the database cannot be read (v then holds what was gathered). */
bool mdb_nl_vocab_load(mdb_nl_vocab_t *v, mdb_mongo_t *m, int sample, mdb_error_t *err);
/* Is path declared at level? If so and type is non-NULL, *type gets its type. */
bool mdb_nl_vocab_has_field(const mdb_nl_vocab_t *v, mdb_query_level_t level, const char *path,
                            mdb_qfield_type_t *type);
/* {"studies": {"field": "type", ...}, "series": ..., "instances": ...,
 * "values": {"field": [..]}} for prompts and diagnostics. New reference. */
json_t *mdb_nl_vocab_to_json(const mdb_nl_vocab_t *v);

/* ---- translation ---- */
typedef struct {
    /* "YYYYMMDD" or "YYYY-MM-DD": the day relative dates ("last 5 years")
     * count back from. NULL or "" = today (UTC). */
    const char *reference_date;
} mdb_nl_options_t;

typedef struct mdb_nl_result mdb_nl_result_t;

/* Translate sentence with the offline grammar. NULL with err (MDB_ERR_QUERY)
 * when the sentence is empty, too long, not UTF-8, or the reference date is
 * malformed, and (code MDB_NL_ERR_NOT_UNDERSTOOD) when no word of it was
 * understood. A sentence of which only some words were understood still
 * translates: the explanation lists the words that were ignored. */
mdb_nl_result_t *mdb_nl_translate(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                  mdb_error_t *err);

/* The LLM endpoint. url: the chat-completions URL, or a base URL to which
 * "/chat/completions" is appended (".../v1"). api_key may be NULL/"". */
typedef struct {
    const char *url;
    const char *model;
    const char *api_key;
    long timeout_ms; /* <= 0: 30000 */
} mdb_nl_llm_t;

/* Ask the LLM, validate its JSON answer (level, filter, joins) against v and
 * the raw-query operator whitelist; on any failure (network, HTTP status,
 * malformed or invalid output) translate offline instead and set the
 * result's message to the reason. NULL with err only when the offline
 * fallback fails too (empty sentence, ...). */
mdb_nl_result_t *mdb_nl_translate_llm(const mdb_nl_vocab_t *v, const char *sentence, const mdb_nl_options_t *opt,
                                      const mdb_nl_llm_t *llm, mdb_error_t *err);

/* The backend chosen by configuration: the LLM when api.nl_llm_url is set,
 * else the offline translator. */
mdb_nl_result_t *mdb_nl_translate_config(const mdb_config_t *cfg, const mdb_nl_vocab_t *v, const char *sentence,
                                         const mdb_nl_options_t *opt, mdb_error_t *err);

/* Build a result from a JSON translation {level, filter, joins?,
 * explanation?} as an LLM (or a client) would write it, after validating
 * every field against v and every operator against the whitelist. NULL with
 * err (MDB_ERR_QUERY, naming the offending field/operator) when invalid. */
mdb_nl_result_t *mdb_nl_result_from_json(const mdb_nl_vocab_t *v, const json_t *translation, mdb_error_t *err);

/* A result from a filter and joins built by the caller (e.g. DICOMweb
 * attribute matching) rather than from a sentence: the filter and every
 * join filter are checked against the raw-query whitelist, link fields are
 * filled in from the levels. joins: NULL or [{"level", "filter", "negate"?}].
 * explanation may be NULL. NULL with err (MDB_ERR_QUERY) when refused. */
mdb_nl_result_t *mdb_nl_result_from_filter(mdb_query_level_t level, const json_t *filter, const json_t *joins,
                                           const char *explanation, mdb_error_t *err);

void mdb_nl_result_destroy(mdb_nl_result_t *r); /* accepts NULL */

mdb_query_level_t mdb_nl_result_level(const mdb_nl_result_t *r);
/* The filter on the level's own collection (borrowed; never NULL, may be {}). */
const json_t *mdb_nl_result_filter(const mdb_nl_result_t *r);
/* Joins: array of {"collection", "filter", "local", "foreign", "negate"}
 * meaning local ∈ (or ∉ when negate) {foreign of collection docs matching
 * filter}. Borrowed; never NULL, may be []. */
const json_t *mdb_nl_result_joins(const mdb_nl_result_t *r);
const char *mdb_nl_result_explanation(const mdb_nl_result_t *r);
/* "offline" or "llm". */
const char *mdb_nl_result_backend(const mdb_nl_result_t *r);
/* NULL, or why the LLM answer was not used. */
const char *mdb_nl_result_message(const mdb_nl_result_t *r);
/* Is the translation partial: a word that is not a filler was not
 * understood (listed in ignored), a condition was dropped (its field is not
 * recorded) or an "or" between different fields could not be kept? The
 * answer then covers more than the sentence asked for. */
bool mdb_nl_result_partial(const mdb_nl_result_t *r);
/* How the sentence was read before the grammar: [{"from", "to", "kind"}]
 * with kind "translation" (German/French word, plus "language"),
 * "spelling" (a misspelling within mdb_nl_spell_limit edits of a known word
 * or stored value) or "prefix" (stored values starting with the typed
 * word). Borrowed; never NULL, may be []. */
const json_t *mdb_nl_result_corrections(const mdb_nl_result_t *r);
/* {"level", "filter", "joins", "explanation", "backend", "message"?,
 * "ignored": [...], "confidence": "complete"|"partial", "corrections": [...]}
 * as shown to users. New reference. */
json_t *mdb_nl_result_to_json(const mdb_nl_result_t *r);

/* ---- execution ---- */
/* Resolve joins, validate the final filter through mdb_query_new_raw (the
 * raw-query whitelist) and run it: returns mdb_query_run's
 * {"total", "limit", "offset", "items"} (new reference). sort may be NULL
 * (by _id). NULL with err: MDB_ERR_QUERY for a refused/too broad query or
 * a server refusal, MDB_ERR_MONGO when the database is unreachable. */
json_t *mdb_nl_run(mdb_mongo_t *m, const mdb_nl_result_t *r, int64_t limit, int64_t offset, int64_t max_limit,
                   int64_t time_ms, mdb_error_t *err);

/* Like mdb_nl_run, with an include-projection (NULL or {} = whole
 * documents; _id is always returned). */
json_t *mdb_nl_run_projected(mdb_mongo_t *m, const mdb_nl_result_t *r, const json_t *projection, int64_t limit,
                             int64_t offset, int64_t max_limit, int64_t time_ms, mdb_error_t *err);

/* The final filter with joins resolved (UID lists), as run by mdb_nl_run.
 * New reference or NULL with err. */
json_t *mdb_nl_resolve(mdb_mongo_t *m, const mdb_nl_result_t *r, int64_t time_ms, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
