/* metadb index: crawl archive roots into the catalog (mdb_catalog). Shows a
 * one-line progress display on a terminal and a summary per root at the end
 * (directories scanned/unchanged/removed, DICOM files indexed, non-DICOM
 * files skipped, elapsed time, files per second). Ctrl-C stops cleanly:
 * what was indexed stays, nothing is removed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_jobs.h"
#include "mdb_archive.h"
#include "mdb_catalog.h"
#include "mdb_cli.h"
#include "mdb_progress.h"
#include "mdb_signal.h"

static void index_usage(FILE *out)
{
    fprintf(out, "usage: metadb index [--archive ROOT]... [--full] [--verify] [--json] [--quiet]\n"
                 "  crawls ROOT (default: every archive.roots entry) into the catalog; directories whose\n"
                 "  mtime did not change are skipped\n"
                 "  --full    re-read every directory\n"
                 "  --verify  also re-read directories whose files changed in place (size/mtime)\n"
                 "  --json    print the summary as JSON\n");
}

/* The crawl's progress line (mdb_progress.h; the total is unknown while crawling). */
static void progress(const mdb_catalog_stats_t *st, const char *dir, void *ud)
{
    const char *tail = dir;
    size_t n = strlen(dir);
    if (n > 40)
        tail = dir + n - 40;
    char note[160];
    snprintf(note, sizeof note, "%llu dirs (%llu scanned, %llu unchanged), %llu non-DICOM  %s%s",
             (unsigned long long)st->dirs_visited, (unsigned long long)st->dirs_scanned,
             (unsigned long long)st->dirs_unchanged, (unsigned long long)st->nondicom, n > 40 ? "…" : "", tail);
    mdb_progress_update(ud, (int64_t)st->files_indexed, note);
}

static void warn_line(const char *path, const char *what, void *ud)
{
    bool tty = *(bool *)ud;
    fprintf(stderr, "%swarning: %s: %s\n", tty ? "\r\033[K" : "", path, what);
}

static bool stop_requested(void *ud)
{
    (void)ud;
    return mdb_signal_stop_requested();
}

static void print_summary(const char *root, const mdb_catalog_stats_t *st, bool ok, const char *error, bool json)
{
    double rate = st->elapsed_s > 0 ? (double)st->files_indexed / st->elapsed_s : 0;
    if (json) {
        json_t *o = json_pack(
            "{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f}", "root", root, "ok", ok,
            "dirs_visited", (json_int_t)st->dirs_visited, "dirs_scanned", (json_int_t)st->dirs_scanned,
            "dirs_unchanged", (json_int_t)st->dirs_unchanged, "dirs_removed", (json_int_t)st->dirs_removed,
            "dirs_failed", (json_int_t)st->dirs_failed, "files_indexed", (json_int_t)st->files_indexed,
            "files_cataloged", (json_int_t)st->files_cataloged, "nondicom_skipped", (json_int_t)st->nondicom,
            "symlinks_refused", (json_int_t)st->symlinks_refused, "symlinks_skipped", (json_int_t)st->symlinks_skipped,
            "series", (json_int_t)st->series, "elapsed_s", st->elapsed_s, "files_per_s", rate);
        if (o && error)
            json_object_set_new(o, "error", json_string(error));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
        return;
    }
    printf("%s%s\n", root, ok ? "" : " (INCOMPLETE)");
    printf("  directories  %llu visited: %llu scanned, %llu unchanged (skipped), %llu removed from the catalog",
           (unsigned long long)st->dirs_visited, (unsigned long long)st->dirs_scanned,
           (unsigned long long)st->dirs_unchanged, (unsigned long long)st->dirs_removed);
    if (st->dirs_failed)
        printf(", %llu unreadable", (unsigned long long)st->dirs_failed);
    printf("\n  files        %llu DICOM files indexed, %llu non-DICOM skipped; %llu DICOM files in the catalog\n",
           (unsigned long long)st->files_indexed, (unsigned long long)st->nondicom,
           (unsigned long long)st->files_cataloged);
    if (st->symlinks_refused || st->symlinks_skipped)
        printf("  symlinks     %llu refused (outside the archive roots), %llu skipped\n",
               (unsigned long long)st->symlinks_refused, (unsigned long long)st->symlinks_skipped);
    printf("  time         %.2f s, %.0f files/s\n", st->elapsed_s, rate);
    if (error)
        printf("  error        %s\n", error);
}

int mdb_cmd_index(mdb_config_t *cfg, int argc, char **argv)
{
    mdb_catalog_index_opts_t opts = {0};
    bool json = false, quiet = false;
    const char **roots = calloc((size_t)argc + 1, sizeof *roots);
    size_t nroots = 0;
    char **cfg_roots = NULL;
    int rc = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r = cli_opt("index", argc, argv, &i, "--archive", &v);
        if (r < 0) {
            free(roots);
            return 2;
        }
        if (r > 0)
            roots[nroots++] = v;
        else if (!strcmp(argv[i], "--full"))
            opts.full = true;
        else if (!strcmp(argv[i], "--verify"))
            opts.verify = true;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
            quiet = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            index_usage(stdout);
            free(roots);
            return 0;
        } else {
            fprintf(stderr, "metadb index: unexpected argument '%s'\n", argv[i]);
            index_usage(stderr);
            free(roots);
            return 2;
        }
    }
    size_t ncfg = 0;
    cfg_roots = mdb_config_get_list(cfg, "archive.roots", &ncfg);
    if (nroots == 0) {
        for (size_t i = 0; i < ncfg; i++)
            roots[nroots++] = cfg_roots[i];
        if (nroots == 0) {
            fprintf(stderr, "metadb index: no archive root: give --archive ROOT or set archive.roots\n");
            mdb_config_strv_free(cfg_roots);
            free(roots);
            return 2;
        }
    } else {
        /* The producer only publishes files under archive.roots: say so early. */
        for (size_t i = 0; i < nroots; i++) {
            char *canon = realpath(roots[i], NULL);
            bool configured = false;
            for (size_t k = 0; canon && k < ncfg && !configured; k++) {
                char *c2 = realpath(cfg_roots[k], NULL);
                configured = c2 && !strcmp(c2, canon);
                free(c2);
            }
            if (canon && !configured)
                fprintf(stderr,
                        "metadb index: note: %s is not in archive.roots; the producer will refuse its files "
                        "until it is\n",
                        roots[i]);
            free(canon);
        }
    }
    mdb_error_t err = {0};
    mdb_archive_t *archive = mdb_archive_new(roots, nroots, &err);
    mdb_mongo_t *m = NULL;
    mdb_catalog_t *cat = NULL;
    if (!archive) {
        fprintf(stderr, "metadb index: %s\n", err.message);
        goto done;
    }
    if (!(m = cli_mongo("index", cfg)))
        goto done;
    cat = mdb_catalog_new(m, archive, &err);
    if (!cat || !mdb_catalog_ensure_indexes(cat, &err)) {
        fprintf(stderr, "metadb index: %s\n", err.message);
        goto done;
    }
    mdb_progress_t *bar = quiet || json ? NULL : mdb_progress_new(stderr, "index", "files", -1);
    bool tty = mdb_progress_active(bar);
    opts.progress = tty ? progress : NULL;
    opts.progress_ud = bar;
    opts.should_stop = stop_requested;
    opts.warn = quiet ? NULL : warn_line;
    opts.warn_ud = &tty;
    rc = 0;
    mdb_catalog_stats_t total = {0};
    size_t narch = mdb_archive_root_count(archive);
    for (size_t i = 0; i < narch; i++) {
        mdb_catalog_stats_t st;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(mdb_archive_root(archive, j), mdb_archive_root(archive, i));
        if (seen)
            continue; /* the same root named twice */
        mdb_error_clear(&err);
        bool ok = mdb_catalog_index_root(cat, mdb_archive_root(archive, i), &opts, &st, &err);
        mdb_progress_finish(bar);
        print_summary(mdb_archive_root(archive, i), &st, ok, ok ? NULL : err.message, json);
        if (!ok) {
            if (!json)
                fprintf(stderr, "metadb index: %s\n", err.message);
            rc = 1;
        }
        total.files_indexed += st.files_indexed;
        total.elapsed_s += st.elapsed_s;
        if (mdb_signal_stop_requested())
            break;
    }
    mdb_progress_destroy(bar);
    if (narch > 1 && !json)
        printf("total: %llu DICOM files indexed in %.2f s (%.0f files/s)\n", (unsigned long long)total.files_indexed,
               total.elapsed_s, total.elapsed_s > 0 ? (double)total.files_indexed / total.elapsed_s : 0);
done:
    mdb_catalog_destroy(cat);
    mdb_mongo_destroy(m);
    if (archive)
        mdb_archive_destroy(archive);
    mdb_config_strv_free(cfg_roots);
    free(roots);
    return rc;
}
