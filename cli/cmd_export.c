/* metadb export: a cohort to a file, through mdb_export, the builder behind
 * GET /api/<level>?format= and /api/export/manifest, so the CLI's file and
 * the API's download are the same bytes for the same filter.
 *
 *   metadb export studies|series|instances [--FIELD VALUE ...] [--where FIELD=EXPR ...]
 *                 [--fields F1,study.F2,...] [--sort SPEC] [--limit N]
 *                 [--format csv|json|ndjson] [--output FILE]
 *   metadb export manifest studies|series|instances [filters as above]
 *                 [--format csv|json|ndjson] [--output FILE] [--sidecar FILE]
 *
 * Filters are those of `metadb query` (--study-date 2000-2001, --where
 * study.patient_id=X, --instance-count gt:50). Every matching row is
 * written, streamed (constant memory). On a terminal, stderr shows the rows
 * written so far; on a pipe nothing. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_filter.h"
#include "mdb_cli.h"
#include "mdb_export.h"
#include "mdb_mongo.h"
#include "mdb_query.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb export studies|series|instances [--FIELD VALUE ...] [--where FIELD=EXPR ...]\n"
                 "                     [--fields F1,study.F2,...] [--sort [-]FIELD,...] [--limit N]\n"
                 "                     [--format csv|json|ndjson] [--output FILE]\n"
                 "       metadb export manifest studies|series|instances [filters] [--format csv|json|ndjson]\n"
                 "                     [--output FILE] [--sidecar FILE]\n\n"
                 "Writes every row matching the filters (those of `metadb query`), the same bytes as\n"
                 "GET /api/<level>?format=...; manifest writes one line per file (path, SOP/series/study UID,\n"
                 "size) and --sidecar a JSON description of the cohort (query, counts, catalogue, version).\n");
}

typedef struct {
    FILE *out;
    int64_t bytes;
    bool progress;
    int64_t *rows_seen;
    time_t last;
} sink_t;

static bool write_out(const char *data, size_t len, void *ud, mdb_error_t *err)
{
    sink_t *s = ud;
    if (fwrite(data, 1, len, s->out) != len) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "write failed: %s", strerror(errno));
        return false;
    }
    s->bytes += (int64_t)len;
    if (s->progress) {
        time_t now = time(NULL);
        if (now != s->last) {
            s->last = now;
            fprintf(stderr, "\rmetadb export: %.1f MB written", (double)s->bytes / 1e6);
        }
    }
    return true;
}

typedef struct {
    mdb_export_format_t format;
    const char *output, *sidecar;
    int64_t limit;
    json_t *params; /* [[name, value], ...] as given, for the sidecar */
} opts_t;

/* Parse filters and options after the level into q and o. 0 or the exit code. */
static int parse_args(const char *cmd, int argc, char **argv, int start, mdb_query_t *q, opts_t *o)
{
    mdb_error_t err = {0};
    for (int i = start; i < argc; i++) {
        char name[128];
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return -1;
        }
        if (strncmp(argv[i], "--", 2) != 0 || !argv[i][2]) {
            fprintf(stderr, "%s: unexpected argument '%s' (filters are --FIELD VALUE)\n", cmd, argv[i]);
            return 2;
        }
        const char *v = cli_opt_value(argc, argv, &i, name, sizeof name);
        if (!v) {
            fprintf(stderr, "%s: --%s needs a value\n", cmd, name);
            return 2;
        }
        if (!strcmp(name, "format")) {
            if (!mdb_export_format_parse(v, &o->format)) {
                fprintf(stderr, "%s: --format must be csv, json or ndjson\n", cmd);
                return 2;
            }
            continue;
        }
        if (!strcmp(name, "output") || !strcmp(name, "o")) {
            o->output = v;
            continue;
        }
        if (!strcmp(name, "sidecar")) {
            o->sidecar = v;
            continue;
        }
        if (!strcmp(name, "limit")) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (errno || *end || n < 1) {
                fprintf(stderr, "%s: --limit expects a positive integer, got '%s'\n", cmd, v);
                return 2;
            }
            o->limit = n;
            continue;
        }
        char field[256];
        const char *value = cli_filter_param(name, v, field, sizeof field);
        if (!value) {
            fprintf(stderr, "%s: --where expects FIELD=VALUE, got '%s'\n", cmd, v);
            return 2;
        }
        if (!strcmp(field, "offset")) {
            fprintf(stderr, "%s: an export has no --offset (it writes every matching row)\n", cmd);
            return 2;
        }
        if (!mdb_query_add_param(q, field, value, &err)) {
            fprintf(stderr, "%s: %s\n", cmd, err.message);
            return 2;
        }
        json_array_append_new(o->params, json_pack("[s, s]", field, value));
    }
    return 0;
}

static FILE *open_out(const char *cmd, const char *path)
{
    if (!path || !strcmp(path, "-"))
        return stdout;
    FILE *f = fopen(path, "wb");
    if (!f)
        fprintf(stderr, "%s: cannot write %s: %s\n", cmd, path, strerror(errno));
    return f;
}

int mdb_cmd_export(mdb_config_t *cfg, int argc, char **argv)
{
    const char *cmd = "metadb export";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    bool manifest = !strcmp(argv[1], "manifest");
    int li = manifest ? 2 : 1;
    mdb_query_level_t level;
    if (li >= argc || !mdb_query_level_parse(argv[li], &level)) {
        fprintf(stderr, "%s: expected studies, series or instances%s, got '%s'\n", cmd,
                manifest ? " after manifest" : " (or manifest LEVEL)", li < argc ? argv[li] : "");
        return 2;
    }
    int rc = 2;
    mdb_error_t err = {0};
    mdb_mongo_t *m = NULL;
    mdb_query_t *q = mdb_query_new(level, mdb_config_get_int(cfg, "api.max_limit")), *iq = NULL;
    opts_t o = {.format = MDB_EXPORT_CSV, .params = json_array()};
    FILE *out = NULL;
    if (!q || !o.params) {
        fprintf(stderr, "%s: out of memory\n", cmd);
        rc = 1;
        goto done;
    }
    int prc = parse_args(cmd, argc, argv, li + 1, q, &o);
    if (prc) {
        rc = prc < 0 ? 0 : prc;
        goto done;
    }
    if (!manifest && o.sidecar) {
        fprintf(stderr, "%s: --sidecar belongs to `metadb export manifest`\n", cmd);
        goto done;
    }
    if (manifest && !(iq = mdb_export_manifest_query(q, &err))) {
        fprintf(stderr, "%s: %s\n", cmd, err.message);
        goto done;
    }
    rc = 1;
    if (!(m = mdb_mongo_new_from_config(cfg, &err))) {
        fprintf(stderr, "%s: %s\n", cmd, err.message);
        goto done;
    }
    if (!(out = open_out(cmd, o.output)))
        goto done;
    int64_t time_ms = mdb_config_get_int(cfg, "api.query_time_ms");
    sink_t s = {.out = out, .progress = isatty(2) && (out != stdout || !isatty(1))};
    int64_t rows = 0, files = 0, bytes = 0;
    bool ok = manifest ? mdb_export_manifest_run(m, iq, o.format, time_ms, write_out, &s, &files, &bytes, &err)
                       : mdb_export_run(m, q, o.format, time_ms, o.limit, write_out, &s, &rows, &err);
    if (s.progress)
        fputc('\n', stderr);
    if (fflush(out) != 0 && ok) {
        mdb_error_set(&err, MDB_ERR_SYSTEM, errno, "write failed: %s", strerror(errno));
        ok = false;
    }
    if (!ok) {
        fprintf(stderr, "%s: %s\n", cmd, err.message);
        rc = err.domain == MDB_ERR_QUERY ? 2 : 1;
        goto done;
    }
    if (manifest && o.sidecar) {
        json_t *sc = mdb_export_sidecar(m, q, o.params, time_ms, &err);
        FILE *sf = sc ? open_out(cmd, o.sidecar) : NULL;
        if (!sc) {
            fprintf(stderr, "%s: sidecar: %s\n", cmd, err.message);
            goto done;
        }
        if (!sf || json_dumpf(sc, sf, JSON_INDENT(2)) != 0 || fputc('\n', sf) == EOF ||
            (sf != stdout && fclose(sf) != 0)) {
            json_decref(sc);
            if (sf)
                fprintf(stderr, "%s: cannot write %s\n", cmd, o.sidecar);
            goto done;
        }
        json_decref(sc);
    }
    if (o.output && strcmp(o.output, "-") != 0)
        fprintf(stderr, "%s: %lld %s to %s\n", cmd, (long long)(manifest ? files : rows), manifest ? "files" : "rows",
                o.output);
    rc = 0;
done:
    if (out && out != stdout)
        fclose(out);
    json_decref(o.params);
    mdb_query_destroy(iq);
    mdb_query_destroy(q);
    mdb_mongo_destroy(m);
    return rc;
}
