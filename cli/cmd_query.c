/* metadb query: the command-line face of mdb_query, the same builder the
 * HTTP API uses, so `metadb query series --modality CT` and
 * GET /api/series?modality=CT answer the same.
 *
 *   metadb query studies|series|instances [--FIELD VALUE ...] [--where FIELD=EXPR ...]
 *                [--limit N] [--offset N] [--sort SPEC] [--fields LIST] [--all]
 *                [--format table|json|csv] [--explain]
 *   metadb query raw '{"filter": {...}, ...}' [--collection series] [--format ...]
 *   metadb query nl ...   (natural language; provided by the NL module when linked)
 *
 * --FIELD VALUE is any filter parameter with '-' for '_' (--study-date,
 * --slice-thickness lt:2.5, --patient 'LIDC-IDRI-00*'); --where takes the
 * same as FIELD=VALUE, for metadata keywords and anything else. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_filter.h"
#include "mdb_cli.h"
#include "mdb_mongo.h"
#include "mdb_progress.h"
#include "mdb_query.h"

/* Provided by the natural-language module when it is part of the build. */
int mdb_cmd_query_nl(mdb_config_t *cfg, int argc, char **argv) __attribute__((weak));

typedef enum { FMT_TABLE, FMT_JSON, FMT_CSV } fmt_t;

#define CELL_MAX 48

static void usage(FILE *out)
{
    fprintf(out,
            "usage: metadb query studies|series|instances [--FIELD VALUE ...] [--where FIELD=EXPR ...]\n"
            "                    [--limit N] [--offset N] [--sort [-]FIELD,...] [--fields F1,F2,...] [--all]\n"
            "                    [--format table|json|csv] [--explain]\n"
            "       metadb query raw '{\"filter\": {...}, \"parents\": {\"studies\": {...}}, \"sort\": {...}, "
            "\"projection\": {...}, \"limit\": N, \"skip\": N}'\n"
            "                    [--collection studies|series|instances|jobs|collections|conflicts] [--format ...]\n"
            "       metadb query nl WORDS...\n\n"
            "values: CT | CT,MR (any of) | 20000101-20011231, 2000-2001 (ranges) | lt:2.5 lte: gt: gte: ne: eq: |\n"
            "        exists:true | LIDC-IDRI-00* and ? (wildcards)\n"
            "fields: --modality --study-date --patient --accession --body-part --slice-thickness --kvp\n"
            "        --manufacturer --series-description --collection --job ... and --where metadata.Keyword=VALUE\n"
            "        (a study-level field on series/instances filters through their studies)\n");
}

/* ---- cell rendering ---- */

/* Text of a JSON value for a cell: strings as is, arrays joined with ';'. Caller frees. */
static char *cell_text(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("");
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_array(v)) {
        size_t i, cap = 64, len = 0;
        json_t *e;
        char *out = malloc(cap);
        if (!out)
            return NULL;
        out[0] = '\0';
        json_array_foreach(v, i, e)
        {
            char *t = cell_text(e);
            size_t tl = t ? strlen(t) : 0;
            while (len + tl + 2 > cap) {
                cap *= 2;
                char *n = realloc(out, cap);
                if (!n) {
                    free(t);
                    free(out);
                    return NULL;
                }
                out = n;
            }
            if (i)
                out[len++] = ';';
            memcpy(out + len, t ? t : "", tl);
            len += tl;
            out[len] = '\0';
            free(t);
        }
        return out;
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Value at a dotted path ("metadata.PatientAge"). */
static const json_t *get_path(const json_t *doc, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const json_t *cur = doc;
    char *save = NULL;
    for (char *seg = strtok_r(buf, ".", &save); seg && cur; seg = strtok_r(NULL, ".", &save))
        cur = json_is_object(cur) ? json_object_get(cur, seg) : NULL;
    return cur;
}

/* Number of display columns of a UTF-8 string (code points). */
static size_t u8len(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

/* Truncate to at most max code points, marking with "…". In place. */
static void u8trunc(char *s, size_t max)
{
    size_t n = 0;
    for (char *p = s; *p; p++) {
        if (((unsigned char)*p & 0xc0) != 0x80) {
            if (n == max - 1 && u8len(p) > 1) {
                strcpy(p, "\xe2\x80\xa6");
                return;
            }
            n++;
        }
    }
}

static void csv_field(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

/* ---- columns ---- */

static const char *const default_cols[][9] = {
    {"_id", "patient_id", "study_date", "modality", "modalities", "accession_number", "study_description", NULL},
    {"_id", "study_id", "series_number", "modality", "body_part_examined", "slice_thickness", "instance_count",
     "series_description", NULL},
    {"_id", "series_id", "instance_number", "sop_class_uid", "paths", NULL},
};

typedef struct {
    char **v;
    size_t n;
} cols_t;

static void cols_add(cols_t *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->v[i], name))
            return;
    char **v = realloc(c->v, (c->n + 1) * sizeof *v);
    if (!v)
        return;
    c->v = v;
    c->v[c->n++] = strdup(name);
}

static void cols_free(cols_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i]);
    free(c->v);
}

/* Columns: the projection when given, else the level's defaults that occur,
 * else (raw on other collections) the top-level keys of the items. */
static void choose_columns(cols_t *c, const mdb_query_t *q, int level, const json_t *items)
{
    bson_iter_t it;
    const bson_t *proj = mdb_query_projection(q);
    bool include = false;
    if (!bson_empty(proj) && bson_iter_init(&it, proj)) {
        while (bson_iter_next(&it))
            if (bson_iter_as_int64(&it) == 1 || bson_iter_as_bool(&it))
                include = true;
    }
    if (include) {
        cols_add(c, "_id");
        bson_iter_init(&it, proj);
        while (bson_iter_next(&it))
            if (bson_iter_as_int64(&it) == 1 || bson_iter_as_bool(&it))
                cols_add(c, bson_iter_key(&it));
        return;
    }
    if (level >= 0) {
        for (const char *const *p = default_cols[level]; *p; p++) {
            size_t i;
            json_t *doc;
            bool seen = !strcmp(*p, "_id") || json_array_size(items) == 0;
            json_array_foreach(items, i, doc) if (!seen && json_object_get(doc, *p)) seen = true;
            if (seen)
                cols_add(c, *p);
        }
        return;
    }
    size_t i;
    json_t *doc;
    json_array_foreach(items, i, doc)
    {
        const char *k;
        json_t *v;
        json_object_foreach(doc, k, v) if (c->n < 12 && strcmp(k, "metadata") != 0) cols_add(c, k);
    }
}

static void print_table(FILE *out, const cols_t *c, const json_t *items)
{
    size_t nrows = json_array_size(items);
    size_t *w = calloc(c->n, sizeof *w);
    char **cells = calloc((nrows + 1) * c->n, sizeof *cells);
    if (!w || !cells)
        goto done;
    for (size_t j = 0; j < c->n; j++) {
        cells[j] = strdup(c->v[j]);
        w[j] = u8len(c->v[j]);
    }
    for (size_t r = 0; r < nrows; r++) {
        for (size_t j = 0; j < c->n; j++) {
            char *t = cell_text(get_path(json_array_get(items, r), c->v[j]));
            if (!t)
                continue;
            for (char *p = t; *p; p++)
                if (*p == '\n' || *p == '\r' || *p == '\t')
                    *p = ' ';
            u8trunc(t, CELL_MAX);
            cells[(r + 1) * c->n + j] = t;
            if (u8len(t) > w[j])
                w[j] = u8len(t);
        }
    }
    for (size_t r = 0; r <= nrows; r++) {
        for (size_t j = 0; j < c->n; j++) {
            const char *t = cells[r * c->n + j] ? cells[r * c->n + j] : "";
            fputs(t, out);
            if (j + 1 < c->n)
                for (size_t k = u8len(t); k < w[j] + 2; k++)
                    fputc(' ', out);
        }
        fputc('\n', out);
        if (r == 0) {
            for (size_t j = 0; j < c->n; j++) {
                for (size_t k = 0; k < w[j]; k++)
                    fputc('-', out);
                if (j + 1 < c->n)
                    fputs("  ", out);
            }
            fputc('\n', out);
        }
    }
done:
    for (size_t i = 0; cells && i < (nrows + 1) * c->n; i++)
        free(cells[i]);
    free(cells);
    free(w);
}

static void print_csv(FILE *out, const cols_t *c, const json_t *items, bool header)
{
    if (header) {
        for (size_t j = 0; j < c->n; j++) {
            if (j)
                fputc(',', out);
            csv_field(out, c->v[j]);
        }
        fputs("\r\n", out);
    }
    size_t i;
    json_t *doc;
    json_array_foreach(items, i, doc)
    {
        for (size_t j = 0; j < c->n; j++) {
            char *t = cell_text(get_path(doc, c->v[j]));
            if (j)
                fputc(',', out);
            csv_field(out, t ? t : "");
            free(t);
        }
        fputs("\r\n", out);
    }
}

/* ---- running ---- */

static int run_query(mdb_config_t *cfg, mdb_query_t *q, int level, fmt_t fmt, bool all, bool explain)
{
    mdb_error_t err = {0};
    int rc = 1;
    if (explain) {
        char *s = mdb_query_filter_json(q);
        fprintf(stderr, "collection: %s\nfilter: %s\n", mdb_query_collection(q), s ? s : "?");
        bson_free(s);
    }
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    if (!m) {
        fprintf(stderr, "metadb query: %s\n", err.message);
        return 1;
    }
    int64_t time_ms = mdb_config_get_int(cfg, "api.query_time_ms");
    cols_t cols = {0};
    json_t *all_items = json_array();
    int64_t total = -1, shown = 0;
    /* --all: a progress bar on a terminal, nothing on a pipe (mdb_progress.h) */
    mdb_progress_t *bar = all ? mdb_progress_new(stderr, "query", "rows", -1) : NULL;
    for (int page = 0;; page++) {
        json_t *res = mdb_query_run(m, q, time_ms, all && page > 0, &err);
        if (!res) {
            fprintf(stderr, "metadb query: %s\n", err.message);
            rc = err.domain == MDB_ERR_QUERY ? 2 : 1;
            goto done;
        }
        json_t *items = json_object_get(res, "items");
        if (page == 0) {
            total = json_integer_value(json_object_get(res, "total"));
            choose_columns(&cols, q, level, items);
            mdb_progress_set_total(bar, total);
        }
        size_t n = json_array_size(items);
        shown += (int64_t)n;
        mdb_progress_update(bar, shown, NULL);
        if (fmt == FMT_CSV)
            print_csv(stdout, &cols, items, page == 0);
        else
            json_array_extend(all_items, items);
        json_decref(res);
        if (!all || (int64_t)n < mdb_query_limit(q))
            break;
        if (!mdb_query_set_offset(q, mdb_query_offset(q) + mdb_query_limit(q), &err))
            break;
    }
    mdb_progress_destroy(bar);
    bar = NULL;
    if (fmt == FMT_JSON) {
        json_t *out =
            json_pack("{s:I, s:I, s:O}", "total", (json_int_t)total, "count", (json_int_t)shown, "items", all_items);
        json_dumpf(out, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        json_decref(out);
    } else if (fmt == FMT_TABLE) {
        print_table(stdout, &cols, all_items);
        fprintf(stdout, "(%lld of %lld %s)\n", (long long)shown, (long long)total, mdb_query_collection(q));
    }
    rc = 0;
done:
    mdb_progress_destroy(bar);
    fflush(stdout);
    cols_free(&cols);
    json_decref(all_items);
    mdb_mongo_destroy(m);
    return rc;
}

static bool parse_format(const char *s, fmt_t *out)
{
    if (!strcmp(s, "table"))
        *out = FMT_TABLE;
    else if (!strcmp(s, "json"))
        *out = FMT_JSON;
    else if (!strcmp(s, "csv"))
        *out = FMT_CSV;
    else
        return false;
    return true;
}

static int cmd_raw(mdb_config_t *cfg, int argc, char **argv)
{
    const char *text = NULL, *coll = NULL;
    fmt_t fmt = FMT_TABLE;
    bool explain = false;
    for (int i = 1; i < argc; i++) {
        char name[64];
        if (!strncmp(argv[i], "--", 2)) {
            if (!strcmp(argv[i], "--explain")) {
                explain = true;
                continue;
            }
            const char *v = cli_opt_value(argc, argv, &i, name, sizeof name);
            if (!v) {
                fprintf(stderr, "metadb query raw: --%s needs a value\n", name);
                return 2;
            }
            if (!strcmp(name, "collection"))
                coll = v;
            else if (!strcmp(name, "format") && parse_format(v, &fmt))
                ;
            else {
                fprintf(stderr, "metadb query raw: unknown option --%s or bad value '%s'\n", name, v);
                return 2;
            }
        } else if (!text) {
            text = argv[i];
        } else {
            fprintf(stderr, "metadb query raw: one JSON argument expected (quote it)\n");
            return 2;
        }
    }
    if (!text) {
        usage(stderr);
        return 2;
    }
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        fprintf(stderr, "metadb query raw: malformed JSON at column %d: %s\n", jerr.column, jerr.text);
        return 2;
    }
    /* --collection overrides; a bare filter object (no known keys) is accepted too. */
    if (json_is_object(j) && !json_object_get(j, "filter") && !json_object_get(j, "collection") &&
        !json_object_get(j, "parents") && !json_object_get(j, "sort") && !json_object_get(j, "projection") &&
        !json_object_get(j, "limit") && !json_object_get(j, "skip") && json_object_size(j) > 0) {
        json_t *wrapped = json_pack("{s:o}", "filter", j);
        j = wrapped;
    }
    if (coll && json_is_object(j))
        json_object_set_new(j, "collection", json_string(coll));
    mdb_error_t err = {0};
    mdb_query_t *q = mdb_query_new_raw(j, "studies", mdb_config_get_int(cfg, "api.max_limit"), &err);
    json_decref(j);
    if (!q) {
        fprintf(stderr, "metadb query raw: %s\n", err.message);
        return 2;
    }
    mdb_query_level_t level;
    int lv = mdb_query_level_parse(mdb_query_collection(q), &level) ? (int)level : -1;
    int rc = run_query(cfg, q, lv, fmt, false, explain);
    mdb_query_destroy(q);
    return rc;
}

int mdb_cmd_query(mdb_config_t *cfg, int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "nl")) {
        if (!mdb_cmd_query_nl) {
            fprintf(stderr, "metadb query nl: natural-language search is not part of this build\n");
            return 1;
        }
        return mdb_cmd_query_nl(cfg, argc - 1, argv + 1);
    }
    if (!strcmp(argv[1], "raw"))
        return cmd_raw(cfg, argc - 1, argv + 1);

    mdb_query_level_t level;
    if (!mdb_query_level_parse(argv[1], &level)) {
        fprintf(stderr, "metadb query: unknown level '%s' (studies, series, instances, raw, nl)\n", argv[1]);
        return 2;
    }
    mdb_query_t *q = mdb_query_new(level, mdb_config_get_int(cfg, "api.max_limit"));
    if (!q) {
        fprintf(stderr, "metadb query: out of memory\n");
        return 1;
    }
    fmt_t fmt = FMT_TABLE;
    bool all = false, explain = false;
    int rc = 2;
    mdb_error_t err = {0};
    for (int i = 2; i < argc; i++) {
        char name[128];
        if (strncmp(argv[i], "--", 2) != 0 || !argv[i][2]) {
            fprintf(stderr, "metadb query: unexpected argument '%s' (filters are --FIELD VALUE)\n", argv[i]);
            goto done;
        }
        if (!strcmp(argv[i], "--all")) {
            all = true;
            continue;
        }
        if (!strcmp(argv[i], "--explain")) {
            explain = true;
            continue;
        }
        const char *v = cli_opt_value(argc, argv, &i, name, sizeof name);
        if (!v) {
            fprintf(stderr, "metadb query: --%s needs a value\n", name);
            goto done;
        }
        if (!strcmp(name, "format")) {
            if (!parse_format(v, &fmt)) {
                fprintf(stderr, "metadb query: --format must be table, json or csv\n");
                goto done;
            }
            continue;
        }
        char field[256];
        const char *value = cli_filter_param(name, v, field, sizeof field);
        if (!value) {
            fprintf(stderr, "metadb query: --where expects FIELD=VALUE, got '%s'\n", v);
            goto done;
        }
        if (!mdb_query_add_param(q, field, value, &err)) {
            fprintf(stderr, "metadb query: %s\n", err.message);
            goto done;
        }
    }
    rc = run_query(cfg, q, (int)level, fmt, all, explain);
done:
    mdb_query_destroy(q);
    return rc;
}
