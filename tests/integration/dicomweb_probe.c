/* dicomweb_probe: drives the DICOMweb source (fetcher/source_dicomweb.c)
 * through the source interface, one call per run, for
 * tests/integration/test_dicomweb_source.py and the WADO-RS bench.
 *
 *   dicomweb_probe [options] URL echo
 *   dicomweb_probe [options] URL find accession|patient|study VALUE [FROM TO]
 *   dicomweb_probe [options] URL list STUDY
 *   dicomweb_probe [options] URL retrieve OUTDIR STUDY [SERIES [SOP...]]
 *   dicomweb_probe [options] URL retrieve-studies OUTDIR STUDY...
 *       finds every study (QIDO-RS), then retrieves them one after the other
 *       with the same source, and prints the seconds each phase took
 * options: --token-file F  --timeout S  --spool DIR (default OUTDIR or /tmp)
 *          --drop-every N [--drop-always]  (the storage test switch)
 *          --sink-fail-after N  (the sink refuses with MDB_SOURCE_E_SINK after N items)
 *
 * Output (stdout, one JSON object per line): find prints one object per study,
 * list one per instance, retrieve the counts; the retrieve sink renames each
 * item to OUTDIR/<SOP UID>.dcm. On failure it prints
 * {"error": message, "reason": errc name, "retryable": bool} and exits 3
 * (2 on bad usage). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "source.h"

typedef struct {
    const char *outdir;
    int fail_after;
    int seen;
} sink_t;

static bool sink(void *ctx, const mdb_source_item_t *item, mdb_error_t *err)
{
    sink_t *s = ctx;
    if (s->fail_after >= 0 && s->seen++ >= s->fail_after) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "test sink: disk full");
        return false;
    }
    if (item->path == NULL || item->sop_uid == NULL || item->sop_uid[0] == '\0') {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "item without a file or a SOP UID");
        return false;
    }
    char dst[4096];
    snprintf(dst, sizeof dst, "%s/%s.dcm", s->outdir, item->sop_uid);
    if (rename(item->path, dst) != 0) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "rename %s: %s", dst, strerror(errno));
        return false;
    }
    return true;
}

static int fail(const mdb_error_t *err)
{
    json_t *o = json_pack("{s:s, s:s, s:b}", "error", err->message, "reason", mdb_source_errc_name(err->code),
                          "retryable", mdb_source_error_retryable(err));
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(o);
    return 3;
}

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(o);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int usage(void)
{
    fprintf(stderr, "usage: dicomweb_probe [--token-file F] [--timeout S] [--spool DIR] [--drop-every N "
                    "[--drop-always]] [--sink-fail-after N] URL echo|find|list|retrieve ...\n");
    return 2;
}

int main(int argc, char **argv)
{
    mdb_source_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.name, sizeof cfg.name, "probe");
    cfg.kind = MDB_SOURCE_DICOMWEB;
    cfg.timeout_s = 10;
    const char *spool = NULL;
    int fail_after = -1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc)
            snprintf(cfg.token_file, sizeof cfg.token_file, "%s", argv[++i]);
        else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
            cfg.timeout_s = atoi(argv[++i]);
        else if (strcmp(argv[i], "--spool") == 0 && i + 1 < argc)
            spool = argv[++i];
        else if (strcmp(argv[i], "--drop-every") == 0 && i + 1 < argc)
            cfg.test_drop_every = atoi(argv[++i]);
        else if (strcmp(argv[i], "--drop-always") == 0)
            cfg.test_drop_always = true;
        else if (strcmp(argv[i], "--sink-fail-after") == 0 && i + 1 < argc)
            fail_after = atoi(argv[++i]);
        else
            return usage();
    }
    if (argc - i < 2)
        return usage();
    snprintf(cfg.url, sizeof cfg.url, "%s", argv[i]);
    const char *cmd = argv[i + 1];
    char **args = argv + i + 2;
    int nargs = argc - i - 2;
    bool many = strcmp(cmd, "retrieve-studies") == 0;
    bool retrieve = many || strcmp(cmd, "retrieve") == 0;
    if (retrieve && nargs < 2)
        return usage();
    if (spool == NULL)
        spool = retrieve ? args[0] : "/tmp";

    mdb_error_t err = {0};
    mdb_source_t *src = mdb_source_open(&cfg, spool, &err);
    if (src == NULL)
        return fail(&err);
    int rc = 0;
    if (strcmp(cmd, "echo") == 0) {
        if (!mdb_source_echo(src, &err))
            rc = fail(&err);
        else
            emit(json_pack("{s:b}", "echo", 1));
    } else if (strcmp(cmd, "find") == 0 && (nargs == 2 || nargs == 4)) {
        mdb_source_selector_t sel = {0};
        if (strcmp(args[0], "accession") == 0)
            sel.accession = args[1];
        else if (strcmp(args[0], "patient") == 0)
            sel.patient_id = args[1];
        else if (strcmp(args[0], "study") == 0)
            sel.study_uid = args[1];
        else
            return usage();
        if (nargs == 4) {
            sel.date_from = args[2];
            sel.date_to = args[3];
        }
        mdb_source_studies_t out = {0};
        if (!mdb_source_find_studies(src, &sel, &out, &err))
            rc = fail(&err);
        for (size_t k = 0; rc == 0 && k < out.n; k++) {
            const mdb_source_study_t *s = &out.items[k];
            emit(json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "study_uid", s->study_uid, "accession",
                           s->accession, "patient_id", s->patient_id, "date", s->date, "modalities", s->modalities,
                           "description", s->description, "n_series", s->n_series, "n_instances", s->n_instances));
        }
        mdb_source_studies_free(&out);
    } else if (strcmp(cmd, "list") == 0 && nargs == 1) {
        mdb_source_instances_t out = {0};
        if (!mdb_source_list_instances(src, args[0], &out, &err))
            rc = fail(&err);
        for (size_t k = 0; rc == 0 && k < out.n; k++)
            emit(json_pack("{s:s, s:s}", "sop_uid", out.items[k].sop_uid, "series_uid", out.items[k].series_uid));
        mdb_source_instances_free(&out);
    } else if (many) {
        sink_t s = {args[0], fail_after, 0};
        long long landed = 0, bytes = 0;
        double t0 = now_s();
        for (int k = 1; k < nargs && rc == 0; k++) {
            mdb_source_selector_t sel = {.study_uid = args[k]};
            mdb_source_studies_t found = {0};
            if (!mdb_source_find_studies(src, &sel, &found, &err))
                rc = fail(&err);
            mdb_source_studies_free(&found);
        }
        double t1 = now_s();
        for (int k = 1; k < nargs && rc == 0; k++) {
            mdb_source_retrieve_t req = {.study_uid = args[k]};
            mdb_source_counts_t counts;
            if (!mdb_source_retrieve(src, &req, sink, &s, &counts, &err))
                rc = fail(&err);
            landed += counts.landed;
            bytes += (long long)counts.bytes;
        }
        if (rc == 0)
            emit(json_pack("{s:b, s:I, s:I, s:f, s:f}", "ok", 1, "landed", (json_int_t)landed, "bytes",
                           (json_int_t)bytes, "find_s", t1 - t0, "retrieve_s", now_s() - t1));
    } else if (retrieve) {
        mdb_source_retrieve_t req = {.study_uid = args[1]};
        if (nargs >= 3)
            req.series_uid = args[2];
        if (nargs >= 4) {
            req.sop_uids = (const char *const *)(args + 3);
            req.n_sop_uids = (size_t)(nargs - 3);
        }
        sink_t s = {args[0], fail_after, 0};
        mdb_source_counts_t counts;
        bool ok = mdb_source_retrieve(src, &req, sink, &s, &counts, &err);
        json_t *o = json_pack("{s:b, s:i, s:i, s:i, s:i, s:i, s:i, s:I}", "ok", ok, "completed", counts.completed,
                              "failed", counts.failed, "warning", counts.warning, "received", counts.received, "landed",
                              counts.landed, "dropped", counts.dropped, "bytes", (json_int_t)counts.bytes);
        if (!ok) {
            json_object_set_new(o, "error", json_string(err.message));
            json_object_set_new(o, "reason", json_string(mdb_source_errc_name(err.code)));
            json_object_set_new(o, "retryable", json_boolean(mdb_source_error_retryable(&err)));
            rc = 3;
        }
        emit(o);
    } else {
        rc = usage();
    }
    mdb_source_close(src);
    return rc;
}
