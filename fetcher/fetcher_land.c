/* fetcher_land: put one received instance in its place, atomically and once.
 *
 * The UIDs come from the object itself (mdb_dicom_read_tags), never from the
 * peer's word, and must be plain UIDs ([0-9.], so no path can escape the
 * root). A temp file from the source is fsync'ed and renamed; bytes in
 * memory are written to a temp file in the spool first. If the final path
 * exists already the instance was landed before (a redelivered task, a
 * re-request, a study partly received): nothing is moved twice. Directories
 * are fsync'ed after a rename so a crash cannot lose a landed file the
 * catalogue already lists. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetcher.h"
#include "mdb_dicom.h"
#include "mdb_log.h"

bool fetcher_uid_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 64 || !strcmp(s, ".") || !strcmp(s, ".."))
        return false;
    return strspn(s, "0123456789.") == n;
}

bool fetcher_land_path(char *buf, size_t cap, const char *root, const char *source, const char *study,
                       const char *series, const char *sop)
{
    if (!fetcher_uid_valid(study) || !fetcher_uid_valid(series) || !fetcher_uid_valid(sop))
        return false;
    int n = snprintf(buf, cap, "%s/%s/%s/%s/%s.dcm", root, source, study, series, sop);
    return n > 0 && (size_t)n < cap;
}

static bool mkdirs(char *path, mdb_error_t *err)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "mkdir %s: %s", path, strerror(errno));
            return false;
        }
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "mkdir %s: %s", path, strerror(errno));
        return false;
    }
    return true;
}

static bool fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

/* Write bytes to a fresh temp file in the spool; *tmp receives its path. */
static bool spool_bytes(const fetcher_land_t *l, const void *data, size_t len, char *tmp, size_t cap, mdb_error_t *err)
{
    snprintf(tmp, cap, "%s/.web-XXXXXX", l->spool);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "temp file in %s: %s", l->spool, strerror(errno));
        return false;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return false;
        }
        p += w;
        left -= (size_t)w;
    }
    close(fd);
    return true;
}

bool fetcher_land_sink(void *ctx, const mdb_source_item_t *item, mdb_error_t *err)
{
    fetcher_land_t *l = ctx;
    char tmpbuf[4200];
    const char *tmp = item->path;
    bool own_tmp = false;
    if (!tmp) {
        if (!item->data || !spool_bytes(l, item->data, item->len, tmpbuf, sizeof tmpbuf, err))
            return false;
        tmp = tmpbuf;
        own_tmp = true;
    }
    static const uint32_t tags[] = {0x0020000D, 0x0020000E, 0x00080018};
    char *v[3] = {NULL, NULL, NULL};
    mdb_error_t e = {0};
    bool ok = mdb_dicom_read_tags(tmp, tags, 3, v, &e);
    char dest[4200], dir[4200];
    if (!ok) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "received object is not readable DICOM: %s", e.message);
    } else if (!v[0] || !v[1] || !v[2] || !fetcher_land_path(dest, sizeof dest, l->root, l->source, v[0], v[1], v[2])) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "received object without valid Study/Series/SOP UIDs");
        ok = false;
    } else if (l->study && strcmp(v[0], l->study) != 0) {
        mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_PROTOCOL, "received an instance of study %s while retrieving %s",
                      v[0], l->study);
        ok = false;
    }
    struct stat st;
    if (ok && stat(dest, &st) == 0 && S_ISREG(st.st_mode)) {
        l->landed_dup++; /* landed before: nothing moved twice */
    } else if (ok) {
        snprintf(dir, sizeof dir, "%s", dest);
        *strrchr(dir, '/') = '\0';
        ok = mkdirs(dir, err);
        if (ok && !fsync_path(tmp, O_RDONLY)) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "fsync %s: %s", tmp, strerror(errno));
            ok = false;
        }
        if (ok && stat(tmp, &st) == 0)
            l->bytes += (uint64_t)st.st_size;
        if (ok && rename(tmp, dest) != 0) {
            mdb_error_set(err, MDB_ERR_IO, MDB_SOURCE_E_SINK, "rename to %s: %s", dest, strerror(errno));
            ok = false;
        }
        if (ok) {
            fsync_path(dir, O_RDONLY | O_DIRECTORY);
            l->landed_new++;
        }
    }
    if (own_tmp)
        unlink(tmp);
    for (int i = 0; i < 3; i++)
        free(v[i]);
    return ok;
}

/* Temp files older than an hour are leftovers of a killed fetcher (a live one
 * renames or removes its own within one instance's transfer). */
static void clean_spool(const char *spool)
{
    DIR *d = opendir(spool);
    struct dirent *e;
    time_t now = time(NULL);
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, ".dimse-", 7) && strncmp(e->d_name, ".web-", 5))
            continue;
        char path[8192];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", spool, e->d_name);
        if (stat(path, &st) == 0 && now - st.st_mtime > 3600 && unlink(path) == 0)
            MDB_LOG(MDB_LOG_INFO, "removed a stale temp file %s", path);
    }
    if (d)
        closedir(d);
}

/* fetcher.root must be one of archive.roots (so the archive gate accepts the
 * landed files); its canonical form goes into f->root, the spool is created. */
bool fetcher_setup_root(fetcher_t *f, const mdb_archive_t *a, char **root_out, mdb_error_t *err)
{
    const char *root = mdb_config_get(f->cfg, "fetcher.root");
    if (!root || !*root) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "fetcher.root is not set");
        return false;
    }
    mkdir(root, 0755);
    char *canon = realpath(root, NULL);
    if (!canon) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "fetcher.root %s does not exist", root);
        return false;
    }
    bool listed = false;
    for (size_t i = 0; i < mdb_archive_root_count(a); i++) {
        char *r = realpath(mdb_archive_root(a, i), NULL);
        listed = listed || (r && !strcmp(r, canon));
        free(r);
    }
    if (!listed) {
        mdb_error_set(err, MDB_ERR_CONFIG, 0, "fetcher.root %s is not one of archive.roots", canon);
        free(canon);
        return false;
    }
    snprintf(f->spool, sizeof f->spool, "%s/.spool", canon);
    mkdir(f->spool, 0700);
    clean_spool(f->spool);
    *root_out = canon;
    f->root = canon;
    return true;
}
