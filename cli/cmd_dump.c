/* metadb dump: the canonical dump of the catalogue (mdb_dump.h) to stdout
 * or --out FILE: studies, series, instances, conflicts and job counters,
 * sorted, with timestamps and job ids removed, so two databases built from
 * the same files compare byte for byte (`cmp a.jsonl b.jsonl`). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mdb_cli.h"
#include "mdb_dump.h"
#include "mdb_log.h"
#include "mdb_mongo.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb [--mongo.db=DB] dump [--out FILE]\n"
                 "  writes the canonical dump (JSON Lines: a {\"section\",\"count\"} line per collection, then its\n"
                 "  documents sorted by _id with sorted keys; timestamps and job ids removed)\n");
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
    if (!mdb_dump_write(m, out, &n, &err)) {
        fprintf(stderr, "metadb dump: %s\n", err.message);
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
