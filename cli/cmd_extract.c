/* metadb extract: print the instance event a worker would produce for each
 * given DICOM file, one JSON object per line, byte for byte the record a
 * worker publishes (or indented with --pretty).
 * A file that cannot be extracted prints {"path", "error", "message"} with
 * the DLQ reason code instead, and the exit status becomes 1. Nothing is
 * sent to Kafka; no archive-root check is made (it is a debugging and
 * scripting tool), but archive.charset_overrides apply when configured. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_archive.h"
#include "mdb_cli.h"
#include "mdb_extract.h"
#include "mdb_features.h"
#include "mdb_log.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: metadb [--features.dir=DIR] extract [--feature-set NAME] [--charset CHARSET]\n"
                 "                [--job-id ID] [--pretty] [--quiet] [--no-uid-check] FILE...\n"
                 "  Prints one instance event (or one error object) per file.\n"
                 "  --feature-set NAME  a set under <features.dir>/featuresets/ (default: features.default)\n"
                 "  --charset CHARSET   decode text as CHARSET (DICOM term or iconv name), ignoring the file's\n"
                 "  --quiet             do not log unresolved feature-set entries\n"
                 "  --no-uid-check      extract files lacking Study/Series/SOP Instance UID anyway (debugging)\n");
}

static void print_json(json_t *o, bool pretty)
{
    char *s = json_dumps(o, pretty ? JSON_INDENT(2) : JSON_COMPACT);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

int mdb_cmd_extract(mdb_config_t *cfg, int argc, char **argv)
{
    const char *set = NULL, *charset = NULL, *job_id = NULL;
    bool pretty = false, quiet = false, uid_check = true;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--feature-set") && i + 1 < argc)
            set = argv[++i];
        else if (!strncmp(a, "--feature-set=", 14))
            set = a + 14;
        else if (!strcmp(a, "--charset") && i + 1 < argc)
            charset = argv[++i];
        else if (!strncmp(a, "--charset=", 10))
            charset = a + 10;
        else if (!strcmp(a, "--job-id") && i + 1 < argc)
            job_id = argv[++i];
        else if (!strcmp(a, "--pretty"))
            pretty = true;
        else if (!strcmp(a, "--quiet"))
            quiet = true;
        else if (!strcmp(a, "--no-uid-check"))
            uid_check = false;
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "metadb extract: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else
            break;
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    mdb_error_t err = {0};
    int rc = 1;
    mdb_archive_t *archive = NULL;
    mdb_extract_ctx_t *ctx = NULL;
    mdb_featuresets_t *sets =
        mdb_featuresets_new(mdb_config_get(cfg, "features.dir"), mdb_config_get(cfg, "features.default"), &err);
    if (!sets) {
        fprintf(stderr, "metadb extract: %s\n", err.message);
        goto done;
    }
    bool fresh = false;
    const mdb_features_t *fs = mdb_featuresets_get(sets, set, &fresh, &err);
    if (!fs) {
        fprintf(stderr, "metadb extract: %s\n", err.message);
        goto done;
    }
    if (!quiet)
        for (size_t w = 0; w < mdb_features_warning_count(fs); w++)
            MDB_LOG(MDB_LOG_WARN, "feature set '%s': %s", mdb_features_name(fs), mdb_features_warning(fs, w));
    if (!charset && *mdb_config_get(cfg, "archive.charset_overrides")) {
        if (!(archive = mdb_archive_new_from_config(cfg, &err))) {
            fprintf(stderr, "metadb extract: %s\n", err.message);
            goto done;
        }
    }
    ctx = mdb_extract_ctx_new((size_t)mdb_config_get_int(cfg, "worker.max_header_bytes"));
    if (!ctx) {
        fprintf(stderr, "metadb extract: out of memory\n");
        goto done;
    }
    mdb_extract_ctx_require_uids(ctx, uid_check);
    rc = 0;
    for (; i < argc; i++) {
        const char *path = argv[i];
        const char *cs = charset;
        char *canon = NULL;
        if (!cs && archive && (canon = realpath(path, NULL)))
            cs = mdb_archive_charset_for(archive, canon);
        mdb_error_clear(&err);
        const char *event = NULL;
        size_t len = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block; the reader refuses it */
        if (fd < 0)
            mdb_error_set(&err, MDB_ERR_DICOM, MDB_DICOM_EUNREADABLE, "cannot open: %s", strerror(errno));
        bool ok = fd >= 0 &&
                  mdb_extract_fd_event(ctx, fs, fd, cs, job_id, path, mdb_features_name(fs), &event, &len, NULL, &err);
        if (fd >= 0)
            close(fd);
        free(canon);
        if (ok && !pretty) {
            /* byte for byte what a worker would produce */
            fwrite(event, 1, len, stdout);
            fputc('\n', stdout);
            continue;
        }
        json_error_t je;
        json_t *o =
            ok ? json_loadb(event, len, 0, &je)
               : json_pack("{s:s, s:s, s:s}", "path", path, "error", mdb_extract_reason(&err), "message", err.message);
        if (!ok)
            rc = 1;
        if (!o) {
            fprintf(stderr, "metadb extract: out of memory\n");
            rc = 1;
            break;
        }
        print_json(o, pretty);
        json_decref(o);
    }
done:
    fflush(stdout);
    mdb_extract_ctx_destroy(ctx);
    mdb_archive_destroy(archive);
    mdb_featuresets_destroy(sets);
    return rc;
}
