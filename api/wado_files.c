/* api/wado_files.c: how WADO-RS finds and opens an instance's file. The
 * instance documents come from the catalogue (instances collection, by
 * study / series / SOP UID); each path is opened through mdb_archive, the
 * worker's gate: canonical path below archive.roots (no symlink out),
 * O_NOFOLLOW|O_NONBLOCK, then fstat must show a regular file, so a FIFO or a
 * directory in its place is refused before any byte is read. Refusals and
 * missing files become the API's JSON errors (403 file_refused, 404
 * file_missing) and are counted in metadb_api_wado_file_errors_total{reason}.
 * Also the module state built at the first request: the archive gate and the
 * rendered-image cache (api.thumbnail_dir, api.thumbnail_cache_mb). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdb_archive.h"
#include "mdb_dicom.h"
#include "mdb_dicom_private.h"
#include "mdb_find.h"
#include "mdb_log.h"
#include "wado.h"

/* Module state, built from the configuration at the first WADO request. */
static struct {
    pthread_mutex_t lock;
    bool init;
    mdb_archive_t *archive;
    thumbcache_t *cache;
    char archive_err[MDB_ERROR_MSG_MAX];
} W = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void default_cache_dir(char *out, size_t cap)
{
    const char *home = getenv("METADB_HOME");
    if (home && *home) {
        snprintf(out, cap, "%s/cache/thumbnails", home);
        return;
    }
    const char *h = getenv("HOME");
    snprintf(out, cap, "%s/.metadb/cache/thumbnails", h && *h ? h : "/tmp");
}

void wado_state_init(api_ctx_t *ctx)
{
    pthread_mutex_lock(&W.lock);
    if (!W.init) {
        const mdb_config_t *cfg = api_ctx_config(ctx);
        mdb_error_t err = {0};
        W.archive = mdb_archive_new_from_config(cfg, &err);
        if (!W.archive) {
            snprintf(W.archive_err, sizeof W.archive_err, "%s", err.message);
            MDB_LOG(MDB_LOG_ERROR, "wado: archive: %s (image endpoints answer 503)", err.message);
        }
        char dir[4096];
        const char *d = mdb_config_get(cfg, "api.thumbnail_dir");
        if (!d || !*d) {
            default_cache_dir(dir, sizeof dir);
            d = dir;
        }
        int64_t mb = mdb_config_get_int(cfg, "api.thumbnail_cache_mb");
        mdb_error_t cerr = {0};
        W.cache = thumbcache_new(d, mb * 1024 * 1024, &cerr);
        if (!W.cache && mb > 0)
            MDB_LOG(MDB_LOG_WARN, "wado: thumbnail cache off: %s", cerr.message);
        W.init = true;
    }
    pthread_mutex_unlock(&W.lock);
}

bool wado_uid_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 64 && strspn(s, "0123456789.") == n;
}

void wado_count_file_error(api_ctx_t *ctx, const char *reason)
{
    char labels[80];
    snprintf(labels, sizeof labels, "reason=\"%s\"", reason);
    mdb_metric_inc(mdb_metrics_counter(api_ctx_metrics(ctx), "metadb_api_wado_file_errors_total",
                                       "archive files WADO-RS could not serve, by reason", labels),
                   1);
}

bool wado_check_pixels(int fd, mdb_error_t *err)
{
    mdb_dicom_t *d = mdb_dicom_read_fd(fd, 0, NULL, err);
    if (!d)
        return false;
    bool ok = false;
    if (!d->stopped_at_pixels)
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_EMALFORMED, "the file has no Pixel Data: not an image");
    else if (d->pixels.truncated)
        mdb_error_set(err, MDB_ERR_DICOM, MDB_DICOM_ETRUNCATED,
                      "the file ends inside its Pixel Data (%llu of %llu bytes): an incomplete copy",
                      (unsigned long long)d->pixels.present, (unsigned long long)d->pixels.expected);
    else
        ok = true;
    mdb_dicom_destroy(d);
    return ok;
}

/* ------------------------------------------------------------ catalogue */

static const char *INSTANCE_FIELDS[] = {"paths", "_src", "file", "dicom", "series_id", "study_id", "instance_number"};

bool wado_find_docs(api_ctx_t *ctx, const char *study, const char *series, const char *sop, json_t *out,
                    mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    if (sop)
        BSON_APPEND_UTF8(&filter, "_id", sop);
    if (series)
        BSON_APPEND_UTF8(&filter, "series_id", series);
    if (study)
        BSON_APPEND_UTF8(&filter, "study_id", study);
    for (size_t i = 0; i < sizeof INSTANCE_FIELDS / sizeof INSTANCE_FIELDS[0]; i++)
        BSON_APPEND_INT32(&proj, INSTANCE_FIELDS[i], 1);
    BSON_APPEND_INT32(&sort, "series_id", 1);
    BSON_APPEND_INT32(&sort, "instance_number", 1);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bool ok = mdb_docs_find(api_ctx_mongo(ctx), "instances", &filter, &proj, sop ? NULL : &sort, sop ? 1 : 0, out, err);
    bson_destroy(&filter);
    bson_destroy(&proj);
    bson_destroy(&sort);
    return ok;
}

/* The SOP Instance UIDs of a series in instance order (documents {_id,
 * instance_number} only: the series thumbnail needs no more). */
bool wado_find_ids(api_ctx_t *ctx, const char *study, const char *series, json_t *out, mdb_error_t *err)
{
    bson_t filter = BSON_INITIALIZER, proj = BSON_INITIALIZER, sort = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "series_id", series);
    BSON_APPEND_UTF8(&filter, "study_id", study);
    BSON_APPEND_INT32(&proj, "instance_number", 1);
    BSON_APPEND_INT32(&sort, "instance_number", 1);
    BSON_APPEND_INT32(&sort, "_id", 1);
    bool ok = mdb_docs_find(api_ctx_mongo(ctx), "instances", &filter, &proj, &sort, 0, out, err);
    bson_destroy(&filter);
    bson_destroy(&proj);
    bson_destroy(&sort);
    return ok;
}

json_t *wado_list_instances(api_ctx_t *ctx, const char *study, const char *series, api_response_t *res)
{
    json_t *out = json_array();
    mdb_error_t err = {0};
    if (!wado_find_docs(ctx, study, series, NULL, out, &err)) {
        json_decref(out);
        api_respond_mdb_error(res, &err);
        return NULL;
    }
    return out;
}

/* Open one path through the gate; a regular file only. */
static int open_path(const char *path, wado_file_t *f, int *status, char *reason, size_t rcap)
{
    mdb_error_t err = {0};
    int fd = mdb_archive_open_ex(W.archive, path, NULL, NULL, &err);
    if (fd < 0) {
        bool gone = err.domain == MDB_ERR_NOTFOUND;
        *status = gone ? 404 : 403;
        snprintf(reason, rcap, "%s",
                 gone                             ? "missing"
                 : err.domain == MDB_ERR_SECURITY ? "outside_archive"
                                                  : "unreadable");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *status = 403;
        snprintf(reason, rcap, "not_regular_file");
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    f->size = st.st_size;
    f->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return fd;
}

bool wado_open_doc(api_ctx_t *ctx, const json_t *doc, wado_file_t *f, int *status, char *reason, size_t rcap)
{
    (void)ctx;
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->sop, sizeof f->sop, "%s", json_string_value(json_object_get(doc, "_id")) ?: "");
    snprintf(f->series, sizeof f->series, "%s", json_string_value(json_object_get(doc, "series_id")) ?: "");
    snprintf(f->study, sizeof f->study, "%s", json_string_value(json_object_get(doc, "study_id")) ?: "");
    snprintf(f->ts, sizeof f->ts, "%s",
             json_string_value(json_object_get(json_object_get(doc, "dicom"), "transfer_syntax")) ?: "");
    *status = 404;
    snprintf(reason, rcap, "no_path");
    if (!W.archive) {
        *status = 503;
        snprintf(reason, rcap, "archive_unavailable");
        return false;
    }
    const json_t *paths = json_object_get(doc, "paths");
    size_t n = json_array_size(paths);
    /* the first path that opens; the first refusal is the one reported */
    int first_status = 0;
    char first_reason[64] = "";
    for (size_t i = 0; i <= n; i++) {
        const char *p = i < n ? json_string_value(json_array_get(paths, i))
                              : (n ? NULL : json_string_value(json_object_get(doc, "_src")));
        if (!p)
            continue;
        int st;
        char why[64];
        int fd = open_path(p, f, &st, why, sizeof why);
        if (fd >= 0) {
            f->fd = fd;
            return true;
        }
        if (!first_status) {
            first_status = st;
            snprintf(first_reason, sizeof first_reason, "%s", why);
        }
    }
    if (first_status) {
        *status = first_status;
        snprintf(reason, rcap, "%s", first_reason);
    }
    return false;
}

void wado_file_error(api_ctx_t *ctx, api_response_t *res, int status, const char *reason, const char *sop, bool count)
{
    if (count)
        wado_count_file_error(ctx, reason);
    if (status == 404)
        api_respond_error(res, 404, "file_missing",
                          "the file of instance %s is no longer where the catalogue says (moved or deleted since "
                          "indexing: %s)",
                          sop, reason);
    else if (status == 503)
        api_respond_error(res, 503, "archive_unavailable", "the archive roots could not be opened: %s", W.archive_err);
    else
        api_respond_error(res, 403, "file_refused",
                          "the file of instance %s is not served (%s: only regular files below archive.roots)", sop,
                          reason);
}

bool wado_open_instance(api_ctx_t *ctx, const char *study, const char *series, const char *sop, wado_file_t *f,
                        api_response_t *res)
{
    json_t *docs = json_array();
    mdb_error_t err = {0};
    if (!wado_find_docs(ctx, study, series, sop, docs, &err)) {
        json_decref(docs);
        api_respond_mdb_error(res, &err);
        return false;
    }
    if (!json_array_size(docs)) {
        json_decref(docs);
        api_respond_error(res, 404, "not_found", "no instance %s%s%s in the catalogue", sop,
                          series ? " in series " : "", series ? series : "");
        return false;
    }
    int status;
    char reason[64];
    bool ok = wado_open_doc(ctx, json_array_get(docs, 0), f, &status, reason, sizeof reason);
    json_decref(docs);
    if (!ok)
        wado_file_error(ctx, res, status, reason, sop, true);
    return ok;
}

thumbcache_t *wado_cache(void)
{
    return W.cache;
}

const char *wado_archive_error(void)
{
    return W.archive ? NULL : W.archive_err;
}
