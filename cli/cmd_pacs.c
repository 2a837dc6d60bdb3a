/* metadb pacs: talk to a configured PACS without moving anything.
 *   metadb pacs list                         the entries of pacs.sources
 *   metadb pacs echo NAME                    C-ECHO (DIMSE) or a cheap QIDO (DICOMweb)
 *   metadb pacs find NAME [--accession A | --patient P | --study UID]
 *                    [--from YYYYMMDD] [--to YYYYMMDD] [--json]
 * find previews what a job with "source": "pacs:NAME" would fetch: one line
 * per study (UID, date, modalities, number of series and instances). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdb_cli.h"
#include "source.h"
#include "source_config.h"

static void pacs_usage(FILE *out)
{
    fprintf(out, "usage: metadb pacs list\n"
                 "       metadb pacs echo NAME\n"
                 "       metadb pacs find NAME (--accession A | --patient P | --study UID | --from D [--to D])\n"
                 "                        [--from YYYYMMDD] [--to YYYYMMDD] [--json]\n"
                 "  NAME is an entry of pacs.sources (docs/pacs.md). Nothing is retrieved.\n"
                 "exit status: 0 ok, 1 the PACS failed or answered an error, 2 usage\n");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool valid_date(const char *d)
{
    return d && strlen(d) == 8 && strspn(d, "0123456789") == 8;
}

static int cmd_list(const mdb_source_config_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const mdb_source_config_t *s = &list[i];
        if (s->kind == MDB_SOURCE_DIMSE)
            printf("%-16s dimse     %s@%s:%d (we are %s, storage SCP port %d), max %d association(s)\n", s->name,
                   s->called_ae, s->host, s->port, s->calling_ae, s->scp_port, s->max_associations);
        else
            printf("%-16s dicomweb  %s%s, max %d retrieval(s)\n", s->name, s->url, s->token_file[0] ? " (token)" : "",
                   s->max_associations);
    }
    return 0;
}

static int print_studies(const mdb_source_studies_t *st, bool json, double dt)
{
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < st->n; i++) {
            const mdb_source_study_t *s = &st->items[i];
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "study_uid", s->study_uid,
                                                 "accession", s->accession, "patient_id", s->patient_id, "date",
                                                 s->date, "modalities", s->modalities, "description", s->description,
                                                 "series", s->n_series, "instances", s->n_instances));
        }
        char *out = arr ? json_dumps(arr, JSON_INDENT(1)) : NULL;
        json_decref(arr);
        if (!out)
            return 1;
        printf("%s\n", out);
        free(out);
        return 0;
    }
    printf("%-64s %-8s %-12s %-16s %6s %9s\n", "study_uid", "date", "modalities", "accession", "series", "instances");
    for (size_t i = 0; i < st->n; i++) {
        const mdb_source_study_t *s = &st->items[i];
        printf("%-64s %-8s %-12s %-16s %6d %9d\n", s->study_uid, s->date, s->modalities, s->accession, s->n_series,
               s->n_instances);
    }
    printf("%zu stud%s (%.2f s)\n", st->n, st->n == 1 ? "y" : "ies", dt);
    return 0;
}

int mdb_cmd_pacs(mdb_config_t *cfg, int argc, char **argv)
{
    mdb_error_t err = {0};
    mdb_source_config_t *list = NULL;
    size_t n = 0;
    int rc = 2;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        pacs_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!mdb_source_load(cfg, &list, &n, &err)) {
        fprintf(stderr, "metadb pacs: %s\n", err.message);
        return 2;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "list")) {
        rc = cmd_list(list, n);
        goto done;
    }
    if ((strcmp(verb, "echo") && strcmp(verb, "find")) || argc < 3) {
        pacs_usage(stderr);
        goto done;
    }
    const mdb_source_config_t *sc = mdb_source_find(list, n, argv[2]);
    if (!sc) {
        fprintf(stderr, "metadb pacs: no source named '%s' in pacs.sources (metadb pacs list)\n", argv[2]);
        goto done;
    }
    mdb_source_selector_t sel = {0};
    bool json = false;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = !strcmp(a, "--accession") ? &sel.accession
                            : !strcmp(a, "--patient") ? &sel.patient_id
                            : !strcmp(a, "--study")   ? &sel.study_uid
                            : !strcmp(a, "--from")    ? &sel.date_from
                            : !strcmp(a, "--to")      ? &sel.date_to
                                                      : NULL;
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (slot && i + 1 < argc && *argv[i + 1]) {
            *slot = argv[++i];
        } else {
            fprintf(stderr, "metadb pacs: unexpected argument '%s'\n", a);
            goto done;
        }
    }
    bool is_find = !strcmp(verb, "find");
    if (is_find && !sel.accession && !sel.patient_id && !sel.study_uid && !sel.date_from && !sel.date_to) {
        fprintf(stderr, "metadb pacs find: give --accession, --patient, --study or a date range\n");
        goto done;
    }
    if ((sel.date_from && !valid_date(sel.date_from)) || (sel.date_to && !valid_date(sel.date_to))) {
        fprintf(stderr, "metadb pacs find: dates are YYYYMMDD\n");
        goto done;
    }
    if (is_find && !sel.accession && !sel.patient_id && !sel.study_uid)
        sel.patient_id = "*";
    rc = 1;
    mdb_source_t *src = mdb_source_open(sc, "/tmp", &err);
    if (!src) {
        fprintf(stderr, "metadb pacs: %s\n", err.message);
        goto done;
    }
    double t0 = now_s();
    if (!is_find) {
        if (mdb_source_echo(src, &err)) {
            printf("%s: echo ok (%.0f ms)\n", sc->name, (now_s() - t0) * 1000);
            rc = 0;
        } else {
            fprintf(stderr, "metadb pacs echo %s: %s (%s)\n", sc->name, err.message, mdb_source_errc_name(err.code));
        }
    } else {
        mdb_source_studies_t st = {0};
        if (mdb_source_find_studies(src, &sel, &st, &err))
            rc = print_studies(&st, json, now_s() - t0);
        else
            fprintf(stderr, "metadb pacs find %s: %s (%s)\n", sc->name, err.message, mdb_source_errc_name(err.code));
        mdb_source_studies_free(&st);
    }
    mdb_source_close(src);
done:
    free(list);
    return rc;
}
