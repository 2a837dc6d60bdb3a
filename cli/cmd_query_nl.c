/* metadb query nl: natural-language search from the command line, through
 * the same translator and execution as GET /api/nl.
 *
 *   metadb query nl [--format table|json|csv] [--limit N] [--offset N]
 *                   [--reference-date YYYY-MM-DD] [--offline] [--explain] WORDS...
 *
 * The translation (level, filter, joins, explanation, corrections, confidence)
 * is printed before the results so the user sees how the sentence was read;
 * a partial translation (words not understood) says so in capitals. --explain stops after
 * the translation; --offline ignores a configured LLM endpoint. The words
 * may be given as one quoted argument or as several. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdb_cli.h"
#include "mdb_mongo.h"
#include "mdb_nl.h"

int mdb_cmd_query_nl(mdb_config_t *cfg, int argc, char **argv);

typedef enum { NL_TABLE, NL_JSON, NL_CSV } nl_fmt_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: metadb query nl [--format table|json|csv] [--limit N] [--offset N]\n"
            "                       [--reference-date YYYY-MM-DD] [--offline] [--explain] WORDS...\n"
            "example: metadb query nl \"thin-slice chest CT series from 2000 to 2001, Siemens scanners\"\n"
            "  understood: modalities (CT, MRI, x-ray...), body parts (chest, lung, head...), manufacturers\n"
            "  seen in the data, \"thin slice\" (<= %.1f mm), numbers with mm/kV, dates and ranges\n"
            "  (\"2000 to 2001\", \"after March 2001\", \"last 5 years\"), negation (\"not\", \"without\",\n"
            "  \"excluding\"), patients, accessions, UIDs, descriptions in quotes, metadata keywords,\n"
            "  and the level: studies, series or images.\n",
            MDB_NL_THIN_SLICE_MM);
}

static const char *const COLUMNS[MDB_QUERY_LEVEL_COUNT][8] = {
    {"_id", "patient_id", "study_date", "modality", "accession_number", "study_description", NULL},
    {"_id", "modality", "body_part_examined", "manufacturer", "slice_thickness", "series_description", NULL},
    {"_id", "series_id", "instance_number", "sop_class_uid", NULL},
};

static char *cell(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Characters (code points) of a UTF-8 string. */
static size_t u8len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Cut s after max code points (in place). */
static void u8cut(char *s, size_t max)
{
    size_t n = 0;
    for (char *p = s; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && n++ == max) {
            *p = '\0';
            return;
        }
    }
}

#define CELL_MAX 64

static void print_table(const json_t *items, int level)
{
    const char *const *cols = COLUMNS[level];
    size_t ncols = 0, w[8] = {0};
    while (cols[ncols])
        ncols++;
    for (size_t c = 0; c < ncols; c++)
        w[c] = strlen(cols[c]);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) for (size_t c = 0; c < ncols; c++)
    {
        char *s = cell(json_object_get(it, cols[c]));
        size_t l = s ? u8len(s) : 0;
        if (l > CELL_MAX)
            l = CELL_MAX;
        if (l > w[c])
            w[c] = l;
        free(s);
    }
    for (size_t c = 0; c < ncols; c++)
        printf("%-*s%s", (int)w[c], cols[c], c + 1 < ncols ? "  " : "\n");
    json_array_foreach(items, i, it)
    {
        for (size_t c = 0; c < ncols; c++) {
            char *s = cell(json_object_get(it, cols[c]));
            if (s)
                u8cut(s, CELL_MAX);
            size_t l = s ? u8len(s) : 0;
            printf("%s%*s%s", s ? s : "", c + 1 < ncols ? (int)(w[c] - l) : 0, "", c + 1 < ncols ? "  " : "\n");
            free(s);
        }
    }
}

/* How the sentence was read: corrections, and for a partial translation the
 * words that were not understood (the answer then covers more than asked). */
static void print_reading(FILE *tx, const mdb_nl_result_t *r, const json_t *ignored)
{
    size_t i;
    json_t *c;
    json_array_foreach(mdb_nl_result_corrections(r), i, c) fprintf(
        tx, "%s%s → %s (%s)\n", i ? "             " : "read as:     ", json_string_value(json_object_get(c, "from")),
        json_string_value(json_object_get(c, "to")), json_string_value(json_object_get(c, "kind")));
    if (!mdb_nl_result_partial(r)) {
        fprintf(tx, "confidence:  complete\n");
        return;
    }
    fprintf(tx, "confidence:  PARTIAL: the results may include more than asked; not understood:");
    json_array_foreach(ignored, i, c) fprintf(tx, "%s \"%s\"", i ? "," : "", json_string_value(c));
    fprintf(tx, "%s\n", json_array_size(ignored) ? "" : " (see the notes in the explanation)");
}

static void csv_field(const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"')
            putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void print_csv(const json_t *items, int level)
{
    const char *const *cols = COLUMNS[level];
    for (size_t c = 0; cols[c]; c++) {
        csv_field(cols[c]);
        putchar(cols[c + 1] ? ',' : '\n');
    }
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        for (size_t c = 0; cols[c]; c++) {
            char *s = cell(json_object_get(it, cols[c]));
            csv_field(s ? s : "");
            free(s);
            putchar(cols[c + 1] ? ',' : '\n');
        }
    }
}

static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end)
        return false;
    *out = v;
    return true;
}

int mdb_cmd_query_nl(mdb_config_t *cfg, int argc, char **argv)
{
    nl_fmt_t fmt = NL_TABLE;
    int64_t limit = 50, offset = 0;
    const char *refdate = NULL;
    bool offline = false, explain = false;
    char *sentence = NULL;
    size_t slen = 0;
    int rc = 2;
    mdb_error_t err = {0};
    mdb_mongo_t *m = NULL;
    mdb_nl_vocab_t *v = NULL;
    mdb_nl_result_t *r = NULL;
    json_t *out = NULL, *page = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(a, "--offline")) {
            offline = true;
            continue;
        }
        if (!strcmp(a, "--explain")) {
            explain = true;
            continue;
        }
        if (!strcmp(a, "--json")) {
            fmt = NL_JSON;
            continue;
        }
        static const char *const valued[] = {"--format", "--limit", "--offset", "--reference-date", NULL};
        int which = -1;
        for (int k = 0; valued[k]; k++) {
            size_t l = strlen(valued[k]);
            if (!strcmp(a, valued[k])) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "metadb query nl: %s needs a value\n", a);
                    goto done;
                }
                val = argv[++i];
                which = k;
            } else if (!strncmp(a, valued[k], l) && a[l] == '=') {
                val = a + l + 1;
                which = k;
            }
        }
        if (which == 0) {
            if (!strcmp(val, "table"))
                fmt = NL_TABLE;
            else if (!strcmp(val, "json"))
                fmt = NL_JSON;
            else if (!strcmp(val, "csv"))
                fmt = NL_CSV;
            else {
                fprintf(stderr, "metadb query nl: --format must be table, json or csv\n");
                goto done;
            }
            continue;
        }
        if (which == 1 || which == 2) {
            int64_t n;
            if (!parse_int(val, &n) || n < (which == 1 ? 1 : 0)) {
                fprintf(stderr, "metadb query nl: %s must be a %s integer\n", valued[which],
                        which == 1 ? "positive" : "non-negative");
                goto done;
            }
            *(which == 1 ? &limit : &offset) = n;
            continue;
        }
        if (which == 3) {
            refdate = val;
            continue;
        }
        bool rest = !strcmp(a, "--");
        if (!rest && a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "metadb query nl: unknown option %s\n", a);
            usage(stderr);
            goto done;
        }
        /* a word of the sentence, or after "--" all remaining words */
        for (int k = rest ? i + 1 : i; k < (rest ? argc : i + 1); k++) {
            size_t l = strlen(argv[k]);
            char *ns = realloc(sentence, slen + l + 2);
            if (!ns) {
                fprintf(stderr, "metadb query nl: out of memory\n");
                rc = 1;
                goto done;
            }
            sentence = ns;
            if (slen)
                sentence[slen++] = ' ';
            memcpy(sentence + slen, argv[k], l + 1);
            slen += l;
        }
        if (rest)
            break;
    }
    if (!sentence || !*sentence) {
        fprintf(stderr, "metadb query nl: say what to look for\n");
        usage(stderr);
        goto done;
    }

    rc = 1;
    m = mdb_mongo_new_from_config(cfg, &err);
    v = mdb_nl_vocab_new();
    if (!m || !v) {
        fprintf(stderr, "metadb query nl: %s\n", m ? "out of memory" : err.message);
        goto done;
    }
    if (!mdb_nl_vocab_load(v, m, 200, &err)) {
        fprintf(stderr, "metadb query nl: cannot read the catalogue's fields: %s\n", err.message);
        goto done;
    }
    mdb_nl_options_t opt = {refdate};
    r = offline ? mdb_nl_translate(v, sentence, &opt, &err) : mdb_nl_translate_config(cfg, v, sentence, &opt, &err);
    if (!r) {
        fprintf(stderr, "metadb query nl: %s\n", err.message);
        rc = err.domain == MDB_ERR_QUERY ? 2 : 1;
        goto done;
    }
    out = mdb_nl_result_to_json(r);
    if (!out) {
        fprintf(stderr, "metadb query nl: out of memory\n");
        goto done;
    }
    json_object_set_new(out, "query", json_string(sentence));
    if (mdb_nl_result_message(r))
        fprintf(stderr, "metadb query nl: %s\n", mdb_nl_result_message(r));
    if (!explain) {
        int64_t max_limit = mdb_config_get_int(cfg, "api.max_limit");
        if (limit > max_limit) {
            fprintf(stderr, "metadb query nl: --limit is at most %lld (api.max_limit)\n", (long long)max_limit);
            rc = 2;
            goto done;
        }
        page = mdb_nl_run(m, r, limit, offset, max_limit, mdb_config_get_int(cfg, "api.query_time_ms"), &err);
        if (!page) {
            fprintf(stderr, "metadb query nl: %s\n", err.message);
            goto done;
        }
        json_object_update(out, page);
    }
    if (fmt == NL_JSON) {
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
        rc = 0;
        goto done;
    }
    /* the translation first, on stderr for csv so that stdout stays a clean table */
    FILE *tx = fmt == NL_CSV ? stderr : stdout;
    char *f = json_dumps(mdb_nl_result_filter(r), JSON_COMPACT);
    fprintf(tx, "level:       %s\nfilter:      %s\n", mdb_query_level_name(mdb_nl_result_level(r)), f ? f : "?");
    free(f);
    size_t i;
    json_t *j;
    json_array_foreach(mdb_nl_result_joins(r), i, j)
    {
        char *jf = json_dumps(json_object_get(j, "filter"), JSON_COMPACT);
        fprintf(tx, "join:        %s %s %s(%s matching %s)\n", json_string_value(json_object_get(j, "local")),
                json_is_true(json_object_get(j, "negate")) ? "not in" : "in",
                json_string_value(json_object_get(j, "foreign")), json_string_value(json_object_get(j, "collection")),
                jf ? jf : "?");
        free(jf);
    }
    fprintf(tx, "explanation: %s\nbackend:     %s\n", mdb_nl_result_explanation(r), mdb_nl_result_backend(r));
    print_reading(tx, r, json_object_get(out, "ignored"));
    if (explain) {
        rc = 0;
        goto done;
    }
    fprintf(tx, "total:       %lld\n\n", (long long)json_integer_value(json_object_get(page, "total")));
    if (fmt == NL_CSV)
        print_csv(json_object_get(page, "items"), mdb_nl_result_level(r));
    else
        print_table(json_object_get(page, "items"), mdb_nl_result_level(r));
    rc = 0;
done:
    json_decref(page);
    json_decref(out);
    mdb_nl_result_destroy(r);
    mdb_nl_vocab_destroy(v);
    mdb_mongo_destroy(m);
    free(sentence);
    return rc;
}
