/* mdb_catalog: crawl archive roots into the `catalog` collection and resolve
 * selectors against it.
 *
 * The crawl is an explicit-stack depth-first walk with openat-free absolute
 * paths built from the canonical root, so every path it opens is canonical by
 * construction (directory symlinks are never followed; file symlinks are
 * checked with mdb_archive_resolve). Before walking, the catalog documents of
 * the root are loaded into a hash map (dir -> mtime, signature, file count);
 * each directory is compared with its entry and only changed ones are read.
 * Writes go through one unordered bulk, flushed every thousand
 * directories. Entries not seen by a complete crawl are deleted. */
#include "mdb_find.h"
#include "mdb_catalog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mdb_dicom.h"
#include "mdb_indexes.h"
#include "mdb_jobs.h"
#include "mdb_log.h"
#include "mdb_ops.h"
#include "mdb_strmap.h"

struct mdb_catalog {
    mdb_mongo_t *m;
    const mdb_archive_t *a;
};

mdb_catalog_t *mdb_catalog_new(mdb_mongo_t *m, const mdb_archive_t *a, mdb_error_t *err)
{
    mdb_catalog_t *c = calloc(1, sizeof *c);
    if (!c) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    c->m = m;
    c->a = a;
    return c;
}

void mdb_catalog_destroy(mdb_catalog_t *c)
{
    free(c);
}

/* Whether a failed mdb_ops call failed in the database (not in a callback,
 * which only runs out of memory here). The catalogue is the system's own
 * data, so a refusal by the server is a database error, not a bad query. */
static bool from_database(mdb_error_t *err)
{
    if (!err || err->domain == MDB_ERR_SYSTEM)
        return false;
    if (err->domain == MDB_ERR_QUERY)
        err->domain = MDB_ERR_MONGO;
    return true;
}

bool mdb_catalog_ensure_indexes(mdb_catalog_t *c, mdb_error_t *err)
{
    static const mdb_index_spec_t specs[] = {
        {MDB_CATALOG_COLL, {"series.accession_number"}},
        {MDB_CATALOG_COLL, {"series.patient_id"}},
        {MDB_CATALOG_COLL, {"series.study_uid"}},
        {MDB_CATALOG_COLL, {"series.series_uid"}},
        {MDB_CATALOG_COLL, {"root"}},
    };
    return mdb_indexes_ensure_specs(c->m, specs, sizeof specs / sizeof specs[0], NULL, err);
}

/* ---- crawl ---- */

enum { TAG_STUDY = 0, TAG_SERIES, TAG_ACCESSION, TAG_PATIENT, TAG_MODALITY, NTAGS };
static const uint32_t crawl_tags[NTAGS] = {MDB_TAG(0x0020, 0x000D), MDB_TAG(0x0020, 0x000E), MDB_TAG(0x0008, 0x0050),
                                           MDB_TAG(0x0010, 0x0020), MDB_TAG(0x0008, 0x0060)};

/* Directories per bulk round trip: bounds the memory of a pending bulk (one
 * upsert with the file list per directory) and how much an interrupted
 * crawl has to redo. The driver itself splits a bulk at the server's
 * maxWriteBatchSize. */
#define BULK_DIRS 1000

typedef struct {
    char *name;      /* entry name in the directory */
    char *read_path; /* path to read (canonical target for symlinks), NULL = dir/name */
    int64_t size;
    int64_t mtime_ns;
    bool stated; /* size/mtime known */
} file_ent_t;

typedef struct {
    char *study, *series, *accession, *patient, *modality;
    mdb_strv_t files;
} series_ent_t;

typedef struct {
    mdb_catalog_t *c;
    const mdb_catalog_index_opts_t *opts;
    mdb_catalog_stats_t *st;
    const char *root; /* canonical */
    mdb_strmap_t *known;
    mongoc_client_t *client;
    mdb_bulk_t *bulk;
    size_t bulk_dirs;
    struct timespec t0, last_progress;
    mdb_error_t *err;
} crawl_t;

static double elapsed_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void maybe_progress(crawl_t *cr, const char *dir)
{
    if (!cr->opts || !cr->opts->progress)
        return;
    if (elapsed_since(&cr->last_progress) < 0.2)
        return;
    clock_gettime(CLOCK_MONOTONIC, &cr->last_progress);
    cr->st->elapsed_s = elapsed_since(&cr->t0);
    cr->opts->progress(cr->st, dir, cr->opts->progress_ud);
}

static void warn(crawl_t *cr, const char *path, const char *what)
{
    if (cr->opts && cr->opts->warn)
        cr->opts->warn(path, what, cr->opts->warn_ud);
    else
        MDB_LOGX(MDB_LOG_WARN, NULL, path, "%s", what);
}

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a == 0 || dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static uint64_t fnv_bytes(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const file_ent_t *)a)->name, ((const file_ent_t *)b)->name);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Signature over the (sorted) names, sizes and mtimes of a directory's files. */
static int64_t files_signature(const file_ent_t *f, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h = fnv_bytes(h, f[i].name, strlen(f[i].name) + 1);
        h = fnv_bytes(h, &f[i].size, sizeof f[i].size);
        h = fnv_bytes(h, &f[i].mtime_ns, sizeof f[i].mtime_ns);
    }
    return (int64_t)(h & 0x7FFFFFFFFFFFFFFFULL);
}

static void files_free(file_ent_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].name);
        free(f[i].read_path);
    }
    free(f);
}

static void series_free(series_ent_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].study);
        free(s[i].series);
        free(s[i].accession);
        free(s[i].patient);
        free(s[i].modality);
        mdb_strv_clear(&s[i].files);
    }
    free(s);
}

/* Mark every known entry at or below dir as kept (used when dir is unreadable). */
typedef struct {
    const char *dir;
    size_t len;
} prefix_t;

static bool keep_prefix(mdb_strmap_entry_t *e, void *ud)
{
    const prefix_t *p = ud;
    if (!strncmp(e->key, p->dir, p->len) && (e->key[p->len] == '\0' || e->key[p->len] == '/'))
        e->mark = true;
    return true;
}

static bool flush_bulk(crawl_t *cr)
{
    if (!cr->bulk || mdb_bulk_count(cr->bulk) == 0)
        return true;
    bool ok = mdb_bulk_execute(cr->bulk, NULL, cr->err);
    mdb_bulk_destroy(cr->bulk);
    cr->bulk = NULL;
    cr->bulk_dirs = 0;
    if (!ok)
        mdb_error_prefix(cr->err, "catalog write");
    return ok;
}

static bool bulk_ready(crawl_t *cr)
{
    if (cr->bulk)
        return true;
    cr->bulk = mdb_bulk_new(cr->c->m, cr->client, MDB_CATALOG_COLL, NULL);
    if (!cr->bulk)
        mdb_error_set(cr->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return cr->bulk != NULL;
}

static bool series_add_file(series_ent_t **sv, size_t *n, size_t *cap, char **vals, const char *name)
{
    for (size_t i = 0; i < *n; i++) {
        series_ent_t *s = &(*sv)[i];
        if (!strcmp(s->study, vals[TAG_STUDY]) && !strcmp(s->series, vals[TAG_SERIES]))
            return mdb_strv_push(&s->files, name);
    }
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        series_ent_t *nv = realloc(*sv, ncap * sizeof *nv);
        if (!nv)
            return false;
        *sv = nv;
        *cap = ncap;
    }
    series_ent_t *s = &(*sv)[*n];
    memset(s, 0, sizeof *s);
    (*n)++;
    s->study = strdup(vals[TAG_STUDY]);
    s->series = strdup(vals[TAG_SERIES]);
    s->accession = strdup(vals[TAG_ACCESSION] ? vals[TAG_ACCESSION] : "");
    s->patient = strdup(vals[TAG_PATIENT] ? vals[TAG_PATIENT] : "");
    s->modality = strdup(vals[TAG_MODALITY] ? vals[TAG_MODALITY] : "");
    if (!s->study || !s->series || !s->accession || !s->patient || !s->modality)
        return false;
    return mdb_strv_push(&s->files, name);
}

static void append_series(bson_t *set, series_ent_t *sv, size_t n)
{
    bson_t arr, item, files;
    char idx[16];
    const char *ik;
    bson_append_array_begin(set, "series", -1, &arr);
    for (size_t i = 0; i < n; i++) {
        series_ent_t *s = &sv[i];
        bson_uint32_to_string((uint32_t)i, &ik, idx, sizeof idx);
        bson_append_document_begin(&arr, ik, -1, &item);
        BSON_APPEND_UTF8(&item, "study_uid", s->study);
        BSON_APPEND_UTF8(&item, "series_uid", s->series);
        BSON_APPEND_UTF8(&item, "accession_number", s->accession);
        BSON_APPEND_UTF8(&item, "patient_id", s->patient);
        BSON_APPEND_UTF8(&item, "modality", s->modality);
        bson_append_array_begin(&item, "files", -1, &files);
        for (size_t k = 0; k < s->files.n; k++) {
            bson_uint32_to_string((uint32_t)k, &ik, idx, sizeof idx);
            BSON_APPEND_UTF8(&files, ik, s->files.v[k]);
        }
        bson_append_array_end(&item, &files);
        bson_append_document_end(&arr, &item);
    }
    bson_append_array_end(set, &arr);
}

/* Read the tags of every file of dir and queue the directory's document. */
static bool scan_dir(crawl_t *cr, const char *dir, int64_t mtime_ns, file_ent_t *files, size_t nfiles, int64_t sig)
{
    series_ent_t *sv = NULL;
    size_t nsv = 0, capsv = 0;
    uint64_t dicom = 0, nondicom = 0;
    bool ok = false;
    char now[40];

    for (size_t i = 0; i < nfiles; i++) {
        char *vals[NTAGS] = {0};
        mdb_error_t rerr = {0};
        char *path = files[i].read_path ? NULL : join_path(dir, files[i].name);
        const char *rp = files[i].read_path ? files[i].read_path : path;
        if (!rp) {
            mdb_error_set(cr->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            goto done;
        }
        bool read_ok = mdb_dicom_read_tags(rp, crawl_tags, NTAGS, vals, &rerr);
        bool indexed = read_ok && vals[TAG_STUDY] && *vals[TAG_STUDY] && vals[TAG_SERIES] && *vals[TAG_SERIES];
        if (!indexed) {
            nondicom++;
            MDB_LOGX(MDB_LOG_DEBUG, NULL, rp, "not indexed: %s",
                     read_ok ? "no Study/Series Instance UID" : rerr.message);
        }
        free(path); /* rp may point into it: only after the log line above */
        if (indexed) {
            dicom++;
            if (!series_add_file(&sv, &nsv, &capsv, vals, files[i].name)) {
                for (int k = 0; k < NTAGS; k++)
                    free(vals[k]);
                mdb_error_set(cr->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
                goto done;
            }
        }
        for (int k = 0; k < NTAGS; k++)
            free(vals[k]);
        maybe_progress(cr, dir);
    }
    cr->st->files_indexed += dicom;
    cr->st->files_cataloged += dicom;
    cr->st->nondicom += nondicom;
    cr->st->series += nsv;
    cr->st->dirs_scanned++;
    for (size_t i = 0; i < nsv; i++)
        if (sv[i].files.n > 1)
            qsort(sv[i].files.v, sv[i].files.n, sizeof(char *), cmp_cstr);

    if (!bulk_ready(cr))
        goto done;
    mdb_msg_now_iso(now, sizeof now);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(dir));
    bson_t upd = BSON_INITIALIZER, set;
    bson_append_document_begin(&upd, "$set", -1, &set);
    BSON_APPEND_UTF8(&set, "root", cr->root);
    BSON_APPEND_UTF8(&set, "dir", dir);
    BSON_APPEND_INT64(&set, "mtime", mtime_ns);
    BSON_APPEND_INT64(&set, "sig", sig);
    BSON_APPEND_INT64(&set, "files", (int64_t)dicom);
    BSON_APPEND_INT64(&set, "nondicom", (int64_t)nondicom);
    append_series(&set, sv, nsv);
    BSON_APPEND_UTF8(&set, "indexed_at", now);
    bson_append_document_end(&upd, &set);
    ok = mdb_bulk_upsert(cr->bulk, sel, &upd, cr->err);
    bson_destroy(sel);
    bson_destroy(&upd);
    if (ok) {
        bool created;
        mdb_strmap_entry_t *e = mdb_strmap_put(cr->known, dir, &created);
        if (e) {
            e->mark = true;
            e->value = mtime_ns;
            e->value2 = sig;
            e->value3 = (int64_t)dicom;
        }
        if (++cr->bulk_dirs >= BULK_DIRS)
            ok = flush_bulk(cr);
    }
done:
    series_free(sv, nsv);
    return ok;
}

/* Stat + classify one symlink entry; fills f on success (returns 1), 0 to skip. */
static int take_symlink(crawl_t *cr, const char *dir, const char *name, file_ent_t *f)
{
    char *link = join_path(dir, name);
    mdb_error_t e = {0};
    if (!link)
        return -1;
    char *canon = mdb_archive_resolve(cr->c->a, link, NULL, &e);
    if (!canon) {
        if (e.domain == MDB_ERR_SECURITY) {
            cr->st->symlinks_refused++;
            warn(cr, link, "symlink refused: it points outside the archive roots");
        } else {
            cr->st->symlinks_skipped++;
        }
        free(link);
        return 0;
    }
    free(link);
    struct stat st;
    if (stat(canon, &st) != 0 || !S_ISREG(st.st_mode)) {
        cr->st->symlinks_skipped++;
        free(canon);
        return 0;
    }
    f->read_path = canon;
    f->size = (int64_t)st.st_size;
    f->mtime_ns = ts_ns(&st.st_mtim);
    return 1;
}

typedef struct {
    char **v;
    size_t n, cap;
} pathstack_t;

static bool stack_push(pathstack_t *s, char *p)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, ncap * sizeof *nv);
        if (!nv)
            return false;
        s->v = nv;
        s->cap = ncap;
    }
    s->v[s->n++] = p;
    return true;
}

/* Visit one directory: push its subdirectories, read or skip its files. */
static bool visit_dir(crawl_t *cr, const char *dir, pathstack_t *stack)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat dst;
    file_ent_t *files = NULL;
    size_t nfiles = 0, capfiles = 0;
    char **subdirs = NULL;
    size_t nsub = 0, capsub = 0;
    bool ok = false, has_links = false;
    DIR *d = NULL;

    cr->st->dirs_visited++;
    if (fd < 0 || fstat(fd, &dst) != 0 || !(d = fdopendir(fd))) {
        char what[160];
        snprintf(what, sizeof what, "directory not readable (%s); its catalog entries are kept", strerror(errno));
        warn(cr, dir, what);
        if (fd >= 0)
            close(fd);
        cr->st->dirs_failed++;
        prefix_t p = {dir, strlen(dir)};
        mdb_strmap_foreach(cr->known, keep_prefix, &p);
        return true;
    }
    int64_t mtime_ns = ts_ns(&dst.st_mtim);
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        unsigned char type = de->d_type;
        struct stat st;
        bool have_st = false;
        if (type == DT_UNKNOWN) {
            if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue; /* vanished meanwhile */
            have_st = true;
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : S_ISLNK(st.st_mode) ? DT_LNK : DT_FIFO;
        }
        if (type == DT_DIR) {
            if (nsub == capsub) {
                size_t ncap = capsub ? capsub * 2 : 16;
                char **nv = realloc(subdirs, ncap * sizeof *nv);
                if (!nv)
                    goto oom;
                subdirs = nv;
                capsub = ncap;
            }
            if (!(subdirs[nsub] = join_path(dir, name)))
                goto oom;
            nsub++;
            continue;
        }
        if (type != DT_REG && type != DT_LNK)
            continue; /* fifos, sockets, devices: never opened */
        if (nfiles == capfiles) {
            size_t ncap = capfiles ? capfiles * 2 : 64;
            file_ent_t *nv = realloc(files, ncap * sizeof *nv);
            if (!nv)
                goto oom;
            files = nv;
            capfiles = ncap;
        }
        file_ent_t *f = &files[nfiles];
        memset(f, 0, sizeof *f);
        if (!(f->name = strdup(name)))
            goto oom;
        if (type == DT_LNK) {
            has_links = true;
            int r = take_symlink(cr, dir, name, f);
            if (r < 0) {
                free(f->name);
                goto oom;
            }
            if (r == 0) {
                free(f->name);
                continue;
            }
        } else if (have_st) {
            f->size = (int64_t)st.st_size;
            f->mtime_ns = ts_ns(&st.st_mtim);
            f->stated = true;
        }
        nfiles++;
    }

    /* Subdirectories in reverse name order, so the stack pops them sorted. */
    if (nsub > 1)
        qsort(subdirs, nsub, sizeof *subdirs, cmp_cstr);
    for (size_t i = nsub; i > 0; i--) {
        if (!stack_push(stack, subdirs[i - 1]))
            goto oom;
        subdirs[i - 1] = NULL;
    }
    if (nfiles == 0) {
        ok = true;
        goto done;
    }
    qsort(files, nfiles, sizeof *files, cmp_file);
    mdb_strmap_entry_t *e = mdb_strmap_get(cr->known, dir);
    /* A symlink's target can change without touching this directory: such
     * directories (rare in archives) are always read again. */
    bool unchanged = e && !cr->opts->full && e->value == mtime_ns && !has_links;
    if (unchanged && !cr->opts->verify) {
        e->mark = true;
        cr->st->dirs_unchanged++;
        cr->st->files_cataloged += (uint64_t)e->value3;
        ok = true;
        goto done;
    }
    /* Sizes and mtimes only when they matter: a scan or a verify. */
    for (size_t i = 0; i < nfiles; i++) {
        struct stat st;
        if (files[i].stated)
            continue;
        if (fstatat(dirfd(d), files[i].name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            files[i].size = (int64_t)st.st_size;
            files[i].mtime_ns = ts_ns(&st.st_mtim);
        }
        files[i].stated = true;
    }
    int64_t sig = files_signature(files, nfiles);
    unchanged = unchanged && e->value2 == sig;
    if (unchanged) {
        e->mark = true;
        cr->st->dirs_unchanged++;
        cr->st->files_cataloged += (uint64_t)e->value3;
        ok = true;
        goto done;
    }
    MDB_LOGX(MDB_LOG_DEBUG, NULL, dir, "reading directory (%s)",
             !e                     ? "new"
             : cr->opts->full       ? "full"
             : e->value != mtime_ns ? "mtime changed"
             : has_links            ? "holds symlinks"
                                    : "files changed");
    ok = scan_dir(cr, dir, mtime_ns, files, nfiles, sig);
    goto done;
oom:
    mdb_error_set(cr->err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
done:
    if (d)
        closedir(d);
    for (size_t i = 0; i < nsub; i++)
        free(subdirs[i]);
    free(subdirs);
    files_free(files, nfiles);
    return ok;
}

static bool known_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    crawl_t *cr = ud;
    const char *id = mdb_jobs_doc_str(doc, "_id");
    if (!id)
        return true;
    mdb_strmap_entry_t *e = mdb_strmap_put(cr->known, id, NULL);
    if (!e) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    e->value = mdb_jobs_doc_int(doc, "mtime");
    e->value2 = mdb_jobs_doc_int(doc, "sig");
    e->value3 = mdb_jobs_doc_int(doc, "files");
    return true;
}

/* Load {_id, mtime, sig, files} of every catalog document of root. */
static bool load_known(crawl_t *cr)
{
    bson_t *filter = BCON_NEW("root", BCON_UTF8(cr->root));
    bson_t *opts =
        BCON_NEW("projection", "{", "mtime", BCON_INT32(1), "sig", BCON_INT32(1), "files", BCON_INT32(1), "}");
    bool ok = mdb_ops_find(cr->c->m, MDB_CATALOG_COLL, filter, opts, known_doc, cr, cr->err);
    if (!ok && from_database(cr->err))
        mdb_error_prefix(cr->err, "read catalog");
    bson_destroy(filter);
    bson_destroy(opts);
    return ok;
}

typedef struct {
    crawl_t *cr;
    bool ok;
} prune_t;

static bool prune_entry(mdb_strmap_entry_t *e, void *ud)
{
    prune_t *p = ud;
    if (e->mark)
        return true;
    if (!bulk_ready(p->cr)) {
        p->ok = false;
        return false;
    }
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(e->key));
    p->ok = mdb_bulk_delete_one(p->cr->bulk, sel, p->cr->err);
    bson_destroy(sel);
    if (!p->ok)
        return false;
    p->cr->st->dirs_removed++;
    if (++p->cr->bulk_dirs >= BULK_DIRS)
        p->ok = flush_bulk(p->cr);
    return p->ok;
}

static const char *find_root(const mdb_archive_t *a, const char *root)
{
    char *canon = realpath(root, NULL);
    const char *found = NULL;
    for (size_t i = 0; i < mdb_archive_root_count(a) && !found; i++) {
        const char *r = mdb_archive_root(a, i);
        if (!strcmp(r, root) || (canon && !strcmp(r, canon)))
            found = r;
    }
    free(canon);
    return found;
}

bool mdb_catalog_index_root(mdb_catalog_t *c, const char *root, const mdb_catalog_index_opts_t *opts,
                            mdb_catalog_stats_t *stats, mdb_error_t *err)
{
    static const mdb_catalog_index_opts_t no_opts = {0};
    crawl_t cr = {.c = c, .opts = opts ? opts : &no_opts, .st = stats, .err = err};
    pathstack_t stack = {0};
    bool ok = false, interrupted = false;

    memset(stats, 0, sizeof *stats);
    clock_gettime(CLOCK_MONOTONIC, &cr.t0);
    cr.last_progress = cr.t0;
    cr.root = find_root(c->a, root);
    if (!cr.root) {
        mdb_error_set(err, MDB_ERR_SECURITY, 0, "'%s' is not one of the configured archive roots", root);
        return false;
    }
    struct stat rst;
    if (stat(cr.root, &rst) != 0 || !S_ISDIR(rst.st_mode)) {
        mdb_error_set(err, MDB_ERR_IO, errno, "archive root '%s' is not a readable directory", cr.root);
        return false;
    }
    cr.known = mdb_strmap_new();
    if (!cr.known) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    /* Before popping the crawl's own client: with mongo.pool_size=1 a
     * second pop would wait forever. */
    if (!load_known(&cr))
        goto done;
    cr.client = mdb_mongo_pop(c->m);
    if (!cr.client) {
        mdb_error_set(err, MDB_ERR_MONGO, 0, "index: no database client available");
        goto done;
    }
    char *first = strdup(cr.root);
    if (!first || !stack_push(&stack, first)) {
        free(first);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        goto done;
    }
    while (stack.n > 0) {
        if (cr.opts->should_stop && cr.opts->should_stop(cr.opts->stop_ud)) {
            interrupted = true;
            break;
        }
        char *dir = stack.v[--stack.n];
        bool vok = visit_dir(&cr, dir, &stack);
        maybe_progress(&cr, dir);
        free(dir);
        if (!vok)
            goto done;
    }
    if (!interrupted) {
        prune_t p = {&cr, true};
        mdb_strmap_foreach(cr.known, prune_entry, &p);
        if (!p.ok)
            goto done;
    }
    if (!flush_bulk(&cr))
        goto done;
    if (interrupted) {
        mdb_error_set(err, MDB_ERR_IO, EINTR, "indexing of '%s' interrupted; nothing was removed", cr.root);
        goto done;
    }
    ok = true;
done:
    mdb_bulk_destroy(cr.bulk);
    while (stack.n > 0)
        free(stack.v[--stack.n]);
    free(stack.v);
    if (cr.client)
        mdb_mongo_push(c->m, cr.client);
    mdb_strmap_destroy(cr.known);
    stats->elapsed_s = elapsed_since(&cr.t0);
    return ok;
}

/* ---- resolvers ---- */

struct mdb_resolver {
    const mdb_resolver_ops_t *ops;
    void *self;
};

mdb_resolver_t *mdb_resolver_new(const mdb_resolver_ops_t *ops, void *self)
{
    mdb_resolver_t *r = calloc(1, sizeof *r);
    if (!r) {
        if (ops && ops->destroy)
            ops->destroy(self);
        return NULL;
    }
    r->ops = ops;
    r->self = self;
    return r;
}

bool mdb_resolver_resolve(mdb_resolver_t *r, int kind, const char *value, mdb_resolver_file_fn fn, void *ud,
                          size_t *nfiles, mdb_error_t *err)
{
    *nfiles = 0;
    return r->ops->resolve(r->self, kind, value, fn, ud, nfiles, err);
}

static bool push_path(const char *path, void *ud)
{
    return mdb_strv_push(ud, path);
}

bool mdb_resolver_resolve_many(mdb_resolver_t *r, int kind, const char *const *values, size_t n, mdb_strv_t *out,
                               mdb_error_t *err)
{
    for (size_t i = 0; i < n; i++)
        mdb_strv_clear(&out[i]);
    if (r->ops->resolve_many)
        return r->ops->resolve_many(r->self, kind, values, n, out, err);
    for (size_t i = 0; i < n; i++) {
        size_t nf = 0;
        if (!r->ops->resolve(r->self, kind, values[i], push_path, &out[i], &nf, err))
            return false;
    }
    return true;
}

const char *mdb_resolver_name(const mdb_resolver_t *r)
{
    return r && r->ops ? r->ops->name : "";
}

void mdb_resolver_destroy(mdb_resolver_t *r)
{
    if (!r)
        return;
    if (r->ops->destroy)
        r->ops->destroy(r->self);
    free(r);
}

const char *mdb_catalog_field_for_kind(int kind, const char **entry_key)
{
    static const char *const fields[] = {"series.accession_number", "series.patient_id", "series.study_uid",
                                         "series.series_uid"};
    if (kind < MDB_SEL_ACCESSION || kind > MDB_SEL_SERIES)
        return NULL;
    if (entry_key)
        *entry_key = fields[kind] + strlen("series.");
    return fields[kind];
}

/* Append dir/<each file of a matching series entry> to out. */
static bool collect_doc_files(const bson_t *doc, const char *entry_key, const char *value, mdb_strv_t *out)
{
    const char *dir = mdb_jobs_doc_str(doc, "dir");
    bson_iter_t it, arr;
    if (!dir || !bson_iter_init_find(&it, doc, "series") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return true;
    while (bson_iter_next(&arr)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
            continue;
        const uint8_t *data;
        uint32_t len;
        bson_t entry;
        bson_iter_document(&arr, &len, &data);
        if (!bson_init_static(&entry, data, len))
            continue;
        const char *v = mdb_jobs_doc_str(&entry, entry_key);
        if (!v || strcmp(v, value) != 0)
            continue;
        bson_iter_t fit, farr;
        if (!bson_iter_init_find(&fit, &entry, "files") || !BSON_ITER_HOLDS_ARRAY(&fit) ||
            !bson_iter_recurse(&fit, &farr))
            continue;
        while (bson_iter_next(&farr)) {
            if (!BSON_ITER_HOLDS_UTF8(&farr))
                continue;
            char *p = join_path(dir, bson_iter_utf8(&farr, NULL));
            bool pushed = p && mdb_strv_push(out, p);
            free(p);
            if (!pushed)
                return false;
        }
    }
    return true;
}

typedef struct {
    const char *entry_key, *value;
    mdb_strv_t *paths;
} resolve_ctx_t;

static bool resolve_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    resolve_ctx_t *rc = ud;
    if (collect_doc_files(doc, rc->entry_key, rc->value, rc->paths))
        return true;
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return false;
}

static bool catalog_resolve(void *self, int kind, const char *value, mdb_resolver_file_fn fn, void *ud, size_t *nfiles,
                            mdb_error_t *err)
{
    mdb_catalog_t *c = self;
    const char *entry_key = NULL;
    const char *field = mdb_catalog_field_for_kind(kind, &entry_key);
    mdb_strv_t paths = {0};
    bool ok = true;
    if (!field) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "the catalog cannot resolve %s selectors", mdb_selector_kind_name(kind));
        return false;
    }
    bson_t *filter = BCON_NEW(field, BCON_UTF8(value));
    bson_t *opts = BCON_NEW("projection", "{", "dir", BCON_INT32(1), "series", BCON_INT32(1), "}");
    resolve_ctx_t rc = {entry_key, value, &paths};
    ok = mdb_ops_find(c->m, MDB_CATALOG_COLL, filter, opts, resolve_doc, &rc, err);
    if (!ok && from_database(err))
        mdb_error_prefix(err, "catalog look-up of %s '%s'", mdb_selector_kind_name(kind), value);
    bson_destroy(filter);
    bson_destroy(opts);
    if (ok && paths.n > 1)
        qsort(paths.v, paths.n, sizeof(char *), cmp_cstr);
    for (size_t i = 0; ok && i < paths.n; i++) {
        if (i > 0 && !strcmp(paths.v[i], paths.v[i - 1]))
            continue;
        (*nfiles)++;
        if (!fn(paths.v[i], ud)) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "resolution aborted");
            ok = false;
        }
    }
    mdb_strv_clear(&paths);
    return ok;
}

/* Route every file of doc's series entries whose key value is one of the
 * wanted values (map: value -> index) into out[index]. */
static bool collect_many(const bson_t *doc, const char *entry_key, mdb_strmap_t *wanted, mdb_strv_t *out)
{
    const char *dir = mdb_jobs_doc_str(doc, "dir");
    bson_iter_t it, arr;
    if (!dir || !bson_iter_init_find(&it, doc, "series") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr))
        return true;
    while (bson_iter_next(&arr)) {
        const uint8_t *data;
        uint32_t len;
        bson_t entry;
        if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
            continue;
        bson_iter_document(&arr, &len, &data);
        if (!bson_init_static(&entry, data, len))
            continue;
        const char *v = mdb_jobs_doc_str(&entry, entry_key);
        mdb_strmap_entry_t *w = v ? mdb_strmap_get(wanted, v) : NULL;
        bson_iter_t fit, farr;
        if (!w || !bson_iter_init_find(&fit, &entry, "files") || !BSON_ITER_HOLDS_ARRAY(&fit) ||
            !bson_iter_recurse(&fit, &farr))
            continue;
        while (bson_iter_next(&farr)) {
            if (!BSON_ITER_HOLDS_UTF8(&farr))
                continue;
            char *p = join_path(dir, bson_iter_utf8(&farr, NULL));
            bool pushed = p && mdb_strv_push(&out[w->value], p);
            free(p);
            if (!pushed)
                return false;
        }
    }
    return true;
}

/* Values per look-up: keeps each $in list (and the command) small. */
#define RESOLVE_CHUNK 500

typedef struct {
    const char *entry_key;
    mdb_strmap_t *wanted;
    mdb_strv_t *out;
} many_ctx_t;

static bool many_doc(const bson_t *doc, void *ud, mdb_error_t *err)
{
    many_ctx_t *mc = ud;
    if (collect_many(doc, mc->entry_key, mc->wanted, mc->out))
        return true;
    mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
    return false;
}

static bool catalog_resolve_many(void *self, int kind, const char *const *values, size_t n, mdb_strv_t *out,
                                 mdb_error_t *err)
{
    mdb_catalog_t *c = self;
    const char *entry_key = NULL;
    const char *field = mdb_catalog_field_for_kind(kind, &entry_key);
    bool ok = true;
    if (!field) {
        mdb_error_set(err, MDB_ERR_QUERY, 0, "the catalog cannot resolve %s selectors", mdb_selector_kind_name(kind));
        return false;
    }
    for (size_t start = 0; ok && start < n; start += RESOLVE_CHUNK) {
        size_t end = start + RESOLVE_CHUNK < n ? start + RESOLVE_CHUNK : n;
        mdb_strmap_t *wanted = mdb_strmap_new();
        bson_t filter = BSON_INITIALIZER, cond, in;
        char idx[16];
        const char *ik;
        if (!wanted) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            ok = false;
            break;
        }
        bson_append_document_begin(&filter, field, -1, &cond);
        bson_append_array_begin(&cond, "$in", -1, &in);
        for (size_t i = start; ok && i < end; i++) {
            mdb_strmap_entry_t *w = mdb_strmap_put(wanted, values[i], NULL);
            if (!w) {
                mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
                ok = false;
                break;
            }
            w->value = (int64_t)i;
            bson_uint32_to_string((uint32_t)(i - start), &ik, idx, sizeof idx);
            BSON_APPEND_UTF8(&in, ik, values[i]);
        }
        bson_append_array_end(&cond, &in);
        bson_append_document_end(&filter, &cond);
        bson_t *opts = BCON_NEW("projection", "{", "dir", BCON_INT32(1), "series", BCON_INT32(1), "}");
        many_ctx_t mc = {entry_key, wanted, out};
        if (ok && !mdb_ops_find(c->m, MDB_CATALOG_COLL, &filter, opts, many_doc, &mc, err)) {
            ok = false;
            if (from_database(err))
                mdb_error_prefix(err, "catalog look-up of %zu %s value(s)", end - start, mdb_selector_kind_name(kind));
        }
        bson_destroy(opts);
        bson_destroy(&filter);
        mdb_strmap_destroy(wanted);
    }
    /* Sorted and unique per value, as resolve() reports them. */
    for (size_t i = 0; ok && i < n; i++) {
        mdb_strv_t *v = &out[i];
        if (v->n < 2)
            continue;
        qsort(v->v, v->n, sizeof(char *), cmp_cstr);
        size_t w = 1;
        for (size_t k = 1; k < v->n; k++) {
            if (!strcmp(v->v[k], v->v[w - 1])) {
                free(v->v[k]);
                continue;
            }
            v->v[w++] = v->v[k];
        }
        v->n = w;
        v->v[w] = NULL;
    }
    return ok;
}

static const mdb_resolver_ops_t catalog_ops = {"catalog", catalog_resolve, NULL, catalog_resolve_many};

mdb_resolver_t *mdb_catalog_resolver_new(mdb_catalog_t *c)
{
    return mdb_resolver_new(&catalog_ops, c);
}
