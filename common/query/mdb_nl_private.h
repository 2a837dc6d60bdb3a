/* mdb_nl_private.h: internals shared by the files of the natural-language
 * module (mdb_nl.c: the offline translator's entry point; mdb_nl_vocab.c,
 * mdb_nl_tokens.c, mdb_nl_cond.c, mdb_nl_dates.c, mdb_nl_numbers.c,
 * mdb_nl_rules_*.c, mdb_nl_scan.c, mdb_nl_lower.c: its parts;
 * mdb_nl_result.c: results; mdb_nl_buf.c: growable strings; mdb_nl_spell.c:
 * spelling corrections; mdb_nl_lexicon_de_fr.c: the German/French rewrite; mdb_nl_llm.c: the LLM backend; mdb_nl_run.c:
 * database vocabulary and execution). Not for use outside mdb_nl*.c. */
#ifndef MDB_NL_PRIVATE_H
#define MDB_NL_PRIVATE_H

#include "mdb_nl.h"
#include "mdb_nl_spell.h"

#define NL_LEVELS MDB_QUERY_LEVEL_COUNT

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

/* ---- the offline translator's parts (mdb_nl_vocab.c ... mdb_nl_lower.c) ---- */

/* The vocabulary (mdb_nl_vocab.c): fields per level, values per field. */
typedef struct {
    char *path;
    mdb_qfield_type_t type;
} nl_field_t;

typedef struct {
    char *path;
    char **vals;
    size_t n, cap;
} nl_values_t;

struct mdb_nl_vocab {
    nl_field_t *fields[NL_LEVELS];
    size_t nfields[NL_LEVELS], capfields[NL_LEVELS];
    nl_values_t *values;
    size_t nvalues, capvalues;
};

/* Tokens (mdb_nl_tokens.c). */
typedef enum { NL_T_WORD, NL_T_NUM, NL_T_DATE, NL_T_UID, NL_T_ID, NL_T_QUOTED, NL_T_SYM, NL_T_SEP } nl_tkind_t;

typedef struct {
    nl_tkind_t kind;
    char *text; /* as typed (quotes removed) */
    char *low;  /* ASCII lower case */
    double num; /* NL_T_NUM */
    bool integer;
    char sym;    /* NL_T_SYM: < > = l(<=) g(>=) !(!=) - : */
    int y, m, d; /* NL_T_DATE: m and d are 0 when absent */
    bool glued;  /* joined to the previous token by '-' or '/' with no space */
    bool upper;  /* typed in capitals */
    bool used;
    bool ignored;    /* listed as not understood */
    const char *src; /* where the token starts in the tokenized string (spelling rewrites) */
    size_t srclen;
} nl_tok_t;

typedef struct {
    nl_tok_t *t;
    size_t n, cap;
    bool oom;
} nl_toks_t;

/* Conditions and the parser state (mdb_nl_cond.c). */
typedef enum { NL_C_IN, NL_C_RANGE, NL_C_REGEX, NL_C_PRESENT } nl_ckind_t;

typedef struct nl_cond {
    char *paths[NL_LEVELS]; /* field per level; NULL where documents lack it */
    nl_ckind_t kind;
    bool neg;
    bool flexible;  /* does not steer the automatic level choice */
    json_t *values; /* NL_C_IN: array */
    json_t *lo, *hi;
    bool lo_incl, hi_incl;
    char *regex;       /* NL_C_REGEX */
    char *regex_shown; /* NL_C_REGEX: human form ("contains 'x'") */
    json_t *absent;    /* NL_C_PRESENT: values that count as absent */
    bool eq_regex;     /* NL_C_REGEX of an equality: a list of them means any of them */
    json_t *alts;      /* NL_C_RANGE: further ranges ORed in ("in 1998 or 2003"): [{lo, hi, lo_incl, hi_incl}] */
    char *label;       /* human field name */
    char *note;        /* where it came from, e.g. "\"thin slice\" default" */
    const char *unit;  /* "mm", "kV" or NULL */
    bool is_date;
    struct nl_cond *ors; /* further conditions on the same field ORed in ("Philips or Hitachi") */
    bool all;            /* NL_C_IN: "both CT and DX": one value of every group, not any value */
    json_t *groups;      /* ... the groups: [[values of one mention], ...] */
    size_t nors;
} nl_cond_t;

typedef struct {
    const mdb_nl_vocab_t *v;
    nl_tok_t *t;
    size_t n;
    int level;            /* -1 until a level word is read */
    bool neg;             /* a negation word waits for its condition */
    bool cont;            /* a list connector follows the last condition */
    nl_cond_t last_shape; /* paths of the last condition (for list continuation) */
    bool last_neg;
    bool cont_or;           /* ... and that connector was "or" */
    char last_generic[200]; /* field of the last generic "FIELD VALUE" condition, for value lists */
    bool have_last;
    nl_cond_t *c;
    size_t nc, capc;
    json_t *ignored;
    json_t *notes;
    int ref_y, ref_m, ref_d;
    bool partial;            /* a condition was dropped or an "or" could not be kept */
    bool both;               /* "both" waits for its value list */
    mdb_nl_words_t *collect; /* when set, every word the grammar tries is added (spelling dictionary) */
    json_t *corrections;     /* prefix matches of stored values ({from, to, kind}) */
    json_t *fillers;         /* filler words skipped (no rule used them) */
    bool oom;
} nl_parser_t;

/* Numbers with units (mdb_nl_numbers.c). */
/* NL_U_SERIES: set by nl_rule_numeric_unit */
typedef enum { NL_U_NONE = 0, NL_U_MM, NL_U_KV, NL_U_COUNT, NL_U_SERIES, NL_U_YEARS } nl_unit_t;
typedef enum { NL_N_EQ, NL_N_LT, NL_N_LE, NL_N_GT, NL_N_GE, NL_N_RANGE } nl_nop_t;

typedef struct {
    nl_nop_t op;
    double a, b;
    nl_unit_t unit;
    bool had_cmp;
    size_t len;
} nl_numc_t;

/* The result (mdb_nl_result.c). */
struct mdb_nl_result {
    mdb_query_level_t level;
    json_t *filter;
    json_t *joins;
    char *explanation;
    char backend[16];
    char *message;
    json_t *ignored;
    json_t *notes;
    json_t *corrections; /* [{from, to, kind}] */
    json_t *fillers;     /* filler words no rule used (not shown; judges spelling corrections) */
    bool partial;
};

/* Tokens and UTF-8 (mdb_nl_tokens.c). */
void nl_toks_free(nl_toks_t *ts);
bool nl_all_digits(const char *s, size_t n);
int nl_days_in_month(int y, int m);
bool nl_valid_ymd(int y, int m, int d);
size_t nl_number_prefix(const char *s, size_t n);
void nl_tokenize(const char *s, nl_toks_t *ts);
bool nl_utf8_valid(const char *s);
void nl_u8trim(char *s);

/* Parser state, token helpers, word lists, adding conditions (mdb_nl_cond.c). */
void nl_cond_free(nl_cond_t *c);
int nl_cond_home(const nl_cond_t *c);
bool nl_tok_is(const nl_parser_t *p, size_t i, const char *word);
size_t nl_phrase_at(const nl_parser_t *p, size_t i, const char *alts);
void nl_mark_used(nl_parser_t *p, size_t i, size_t n);
void nl_note(nl_parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool nl_is_stopword(const char *low);
bool nl_tok_is_filler(const nl_tok_t *t);
size_t nl_words_text(const nl_parser_t *p, size_t i, size_t n, char *out, size_t cap);
nl_cond_t *nl_cond_new(nl_parser_t *p);
bool nl_cond_field(nl_parser_t *p, nl_cond_t *c, const char *path);
char *nl_field_label(const char *path);
void nl_cond_commit(nl_parser_t *p, const char *source_words);
json_t *nl_num_json(double d);
void nl_add_in_strings(nl_parser_t *p, const char *path_or_null, const char *label, const char *const *vals,
                       size_t nvals, const char *words);
extern const char *const NL_STOPWORDS;
extern const char *const NL_LEVEL_WORDS;
extern const char *const NL_CONNECTORS;
extern const char *const NL_NEGATIONS;

/* The grammar rules, tried by the scan (mdb_nl_scan.c) at token i: each returns
 * the number of tokens it read (0: no match, nothing added). Dates (mdb_nl_dates.c). */
size_t nl_rule_date(nl_parser_t *p, size_t i);

/* Numbers with units (mdb_nl_numbers.c). */
bool nl_unit_follows(const nl_parser_t *p, size_t i);
bool nl_parse_numc(const nl_parser_t *p, size_t i, nl_numc_t *nc);
void nl_numc_to_cond(nl_cond_t *c, const nl_numc_t *nc);
size_t nl_rule_numeric_field(nl_parser_t *p, size_t i);
size_t nl_rule_age(nl_parser_t *p, size_t i);
size_t nl_rule_numeric_unit(nl_parser_t *p, size_t i);
size_t nl_rule_thin_thick(nl_parser_t *p, size_t i);

/* Modality, body part, manufacturer, sex, contrast (mdb_nl_rules_names.c). */
size_t nl_rule_modality(nl_parser_t *p, size_t i);
size_t nl_rule_body_part(nl_parser_t *p, size_t i);
size_t nl_value_matches_at(const nl_parser_t *p, size_t i, const char *value);
size_t nl_rule_manufacturer(nl_parser_t *p, size_t i);
size_t nl_rule_sex(nl_parser_t *p, size_t i);
size_t nl_rule_contrast(nl_parser_t *p, size_t i);
bool nl_known_elsewhere(const nl_parser_t *p, size_t k);

/* Identifiers (mdb_nl_rules_ids.c). */
bool nl_has_wildcard(const char *s);
void nl_wildcard_regex(mdb_nl_buf_t *b, const char *s);
size_t nl_read_ident(const nl_parser_t *p, size_t i, bool allow_word, char **out);
size_t nl_ident_list(nl_parser_t *p, size_t i, const char *path, const char *label, bool allow_word, size_t lead);
size_t nl_rule_patient(nl_parser_t *p, size_t i);
size_t nl_rule_accession(nl_parser_t *p, size_t i);
size_t nl_rule_collection(nl_parser_t *p, size_t i);
size_t nl_rule_uid(nl_parser_t *p, size_t i);

/* Free text, generic fields, values from the data, level words (mdb_nl_rules_text.c). */
size_t nl_rule_description(nl_parser_t *p, size_t i);
void nl_field_words(const char *path, char *out, size_t cap);
size_t nl_rule_generic_more_stored(nl_parser_t *p, size_t i);
size_t nl_rule_generic_more(nl_parser_t *p, size_t i);
size_t nl_rule_generic_field(nl_parser_t *p, size_t i);
size_t nl_rule_numeric_postfix(nl_parser_t *p, size_t i);
size_t nl_rule_vocab_value(nl_parser_t *p, size_t i);
size_t nl_rule_level(nl_parser_t *p, size_t i);

/* Presence, field echoes, prefixes (mdb_nl_rules_presence.c). */
size_t nl_rule_presence(nl_parser_t *p, size_t i);
size_t nl_rule_field_echo(nl_parser_t *p, size_t i);
size_t nl_rule_vocab_prefix(nl_parser_t *p, size_t i);

/* The scan (mdb_nl_scan.c). */
void nl_parser_clear(nl_parser_t *p);
bool nl_parse_sentence(const mdb_nl_vocab_t *v, const char *sentence, const int ref[3], mdb_nl_words_t *collect,
                       nl_parser_t *p, nl_toks_t *ts);

/* Lowering to a filter (mdb_nl_lower.c). */
bool nl_lower(nl_parser_t *p, mdb_nl_result_t *r);

#endif
