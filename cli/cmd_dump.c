/* metadb dump: the canonical dump of the catalogue (mdb_dump.h) to stdout
 * or --out FILE: studies, series, instances, conflicts and job counters,
 * sorted, with timestamps and job ids removed, so two databases built from
 * the same files compare byte for byte (`cmp a.jsonl b.jsonl`). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mdb_cli.h"
#include "mdb_docs.h"
#include "mdb_dump.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_mongo.h"
#include "mdb_ops.h"
#include "mdb_progress.h"

/* The dump's output wrapped so that every line written (one document or
 * section header) advances the progress bar on stderr. */
typedef struct {
    FILE *out;
    mdb_progress_t *progress;
    int64_t lines;
} counting_t;

static ssize_t counting_write(void *cookie, const char *buf, size_t size)
{
    counting_t *c = cookie;
    size_t n = fwrite(buf, 1, size, c->out);
    for (size_t i = 0; i < n; i++)
        c->lines += buf[i] == '\n';
    mdb_progress_update(c->progress, c->lines, NULL);
    return n == size ? (ssize_t)n : -1;
}

/* Documents the dump will write (the bar's total; -1 when unknown). */
static int64_t dump_total(mdb_mongo_t *m)
{
    static const char *const colls[] = {MDB_DOCS_STUDIES, MDB_DOCS_SERIES, MDB_DOCS_INSTANCES, MDB_DOCS_CONFLICTS,
                                        MDB_JOBS_COLL};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof colls / sizeof colls[0]; i++) {
        int64_t n = 0;
        mdb_error_t err = {0};
        if (!mdb_ops_count(m, colls[i], NULL, NULL, &n, &err))
            return -1;
        total += n + 1; /* + the section line */
    }
    return total;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb [--mongo.db=DB] dump [--out FILE]\n"
                 "  writes the canonical dump (JSON Lines: a {\"section\",\"count\"} line per collection, then its\n"
                 "  documents sorted by _id with sorted keys; timestamps and job ids removed)\n"
                 "  a progress bar is drawn on stderr when it is a terminal\n");
}

int mdb_cmd_dump(mdb_config_t *cfg, int argc, char **argv)
{
    const char *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (!strncmp(argv[i], "--out=", 6)) {
            out_path = argv[i] + 6;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "metadb dump: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    mdb_error_t err = {0};
    int rc = 1;
    FILE *out = stdout;
    mdb_mongo_t *m = mdb_mongo_new_from_config(cfg, &err);
    if (!m || !mdb_mongo_wait_ready(m, 15000, &err)) {
        fprintf(stderr, "metadb dump: %s\n", err.message);
        goto done;
    }
    if (out_path && !(out = fopen(out_path, "w"))) {
        fprintf(stderr, "metadb dump: cannot write %s: %s\n", out_path, strerror(errno));
        out = stdout;
        goto done;
    }
    size_t n = 0;
    /* a progress bar on a terminal, nothing on a pipe (mdb_progress.h) */
    counting_t cnt = {out, mdb_progress_new(stderr, "dump", "lines", -1), 0};
    FILE *counted = NULL;
    if (mdb_progress_active(cnt.progress)) {
        mdb_progress_set_total(cnt.progress, dump_total(m));
        counted = fopencookie(&cnt, "w", (cookie_io_functions_t){.write = counting_write});
    }
    bool ok = mdb_dump_write(m, counted ? counted : out, &n, &err);
    if (counted && fclose(counted) != 0)
        ok = false;
    mdb_progress_destroy(cnt.progress);
    if (!ok) {
        fprintf(stderr, "metadb dump: %s\n", err.message[0] ? err.message : "write failed");
        goto done;
    }
    if (out_path)
        fprintf(stderr, "metadb dump: %zu document(s) written to %s\n", n, out_path);
    rc = 0;
done:
    if (out != stdout && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "metadb dump: writing %s: %s\n", out_path, strerror(errno));
        rc = 1;
    }
    mdb_mongo_destroy(m);
    return rc;
}
