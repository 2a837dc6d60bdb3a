/* mdb_archive: the only gate through which metadb opens archive files
 * (see mdb_archive.h). Roots are canonicalised once with realpath(3); a path
 * is canonicalised (every '..' and symlink resolved) and must equal a root
 * or lie below one ("<root>/..."). The open uses O_NOFOLLOW and then checks
 * the opened file's own path again, which closes the window between the
 * check and the open. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdb_archive.h"

typedef struct {
    char *root;
    char *charset;
} override_t;

struct mdb_archive {
    char **roots;
    size_t nroots;
    override_t *overrides;
    size_t noverrides;
};

void mdb_archive_destroy(mdb_archive_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nroots; i++)
        free(a->roots[i]);
    free(a->roots);
    for (size_t i = 0; i < a->noverrides; i++) {
        free(a->overrides[i].root);
        free(a->overrides[i].charset);
    }
    free(a->overrides);
    free(a);
}

static char *canonical(const char *path, mdb_error_t *err, const char *what)
{
    char *c = realpath(path, NULL);
    if (!c) {
        int e = errno;
        mdb_error_set(err, e == ENOENT || e == ENOTDIR ? MDB_ERR_NOTFOUND : MDB_ERR_IO, e, "%s '%s': %s", what, path,
                      e == ENOENT ? "no such file or directory" : strerror(e));
    }
    return c;
}

/* Is canonical path p equal to root r or below it? */
static bool under(const char *r, const char *p)
{
    size_t n = strlen(r);
    if (n == 1 && r[0] == '/')
        return p[0] == '/';
    return strncmp(r, p, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

mdb_archive_t *mdb_archive_new(const char *const *roots, size_t nroots, mdb_error_t *err)
{
    mdb_archive_t *a = calloc(1, sizeof *a);
    if (!a || (nroots && !(a->roots = calloc(nroots, sizeof *a->roots)))) {
        mdb_archive_destroy(a);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < nroots; i++) {
        char *c = canonical(roots[i], err, "archive root");
        if (!c) {
            mdb_archive_destroy(a);
            return NULL;
        }
        a->roots[a->nroots++] = c;
    }
    return a;
}

bool mdb_archive_add_charset_override(mdb_archive_t *a, const char *root, const char *charset, mdb_error_t *err)
{
    if (!charset || !*charset) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "archive.charset_overrides: empty character set for '%s'", root);
        return false;
    }
    char *c = canonical(root, err, "archive.charset_overrides root");
    if (!c)
        return false;
    override_t *n = realloc(a->overrides, (a->noverrides + 1) * sizeof *n);
    char *cs = strdup(charset);
    if (!n || !cs) {
        free(c);
        free(cs);
        if (n)
            a->overrides = n;
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    a->overrides = n;
    n[a->noverrides].root = c;
    n[a->noverrides].charset = cs;
    a->noverrides++;
    return true;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

mdb_archive_t *mdb_archive_new_from_config(const mdb_config_t *cfg, mdb_error_t *err)
{
    size_t n = 0;
    char **roots = mdb_config_get_list(cfg, "archive.roots", &n);
    if (!roots) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    mdb_archive_t *a = mdb_archive_new((const char *const *)roots, n, err);
    mdb_config_strv_free(roots);
    if (!a)
        return NULL;
    char *spec = strdup(mdb_config_get(cfg, "archive.charset_overrides"));
    if (!spec) {
        mdb_archive_destroy(a);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *item = strtok_r(spec, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *t = trim(item);
        if (!*t)
            continue;
        char *eq = strrchr(t, '=');
        if (!eq) {
            mdb_error_set(err, MDB_ERR_CONFIG, EINVAL,
                          "archive.charset_overrides: '%s' is not ROOT=CHARSET (entries separated by ';')", t);
            goto fail;
        }
        *eq = '\0';
        if (!mdb_archive_add_charset_override(a, trim(t), trim(eq + 1), err))
            goto fail;
    }
    free(spec);
    return a;
fail:
    free(spec);
    mdb_archive_destroy(a);
    return NULL;
}

char *mdb_archive_resolve(const mdb_archive_t *a, const char *path, const char **root_out, mdb_error_t *err)
{
    if (root_out)
        *root_out = NULL;
    if (!path || !*path) {
        mdb_error_set(err, MDB_ERR_SECURITY, EINVAL, "empty path");
        return NULL;
    }
    if (a->nroots == 0) {
        mdb_error_set(err, MDB_ERR_SECURITY, EACCES, "'%s' refused: no archive roots configured (archive.roots)", path);
        return NULL;
    }
    char *c = canonical(path, err, "path");
    if (!c)
        return NULL;
    for (size_t i = 0; i < a->nroots; i++)
        if (under(a->roots[i], c)) {
            if (root_out)
                *root_out = a->roots[i];
            return c;
        }
    mdb_error_set(err, MDB_ERR_SECURITY, EACCES, "'%s' (resolved to '%s') is outside archive roots", path, c);
    free(c);
    return NULL;
}

int mdb_archive_open(const mdb_archive_t *a, const char *path, mdb_error_t *err)
{
    return mdb_archive_open_ex(a, path, NULL, NULL, err);
}

int mdb_archive_open_ex(const mdb_archive_t *a, const char *path, char **canonical_out, const char **root_out,
                        mdb_error_t *err)
{
    if (canonical_out)
        *canonical_out = NULL;
    char *c = mdb_archive_resolve(a, path, root_out, err);
    if (!c)
        return -1;
    /* O_NONBLOCK: opening a FIFO (or a device) planted in the archive must not block
     * the thread forever; the reader refuses anything but a regular file after fstat. */
    int fd = open(c, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        mdb_error_set(err,
                      e == ELOOP    ? MDB_ERR_SECURITY
                      : e == ENOENT ? MDB_ERR_NOTFOUND
                                    : MDB_ERR_IO,
                      e, "open '%s': %s", c, e == ELOOP ? "became a symlink after the check" : strerror(e));
        free(c);
        return -1;
    }
    char proc[64], real[PATH_MAX + 1];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, real, PATH_MAX);
    if (n > 0) {
        real[n] = '\0';
        bool ok = false;
        for (size_t i = 0; i < a->nroots && !ok; i++)
            ok = under(a->roots[i], real);
        if (!ok) {
            mdb_error_set(err, MDB_ERR_SECURITY, EACCES, "'%s' opened as '%s', outside archive roots", c, real);
            close(fd);
            free(c);
            return -1;
        }
    }
    if (canonical_out)
        *canonical_out = c;
    else
        free(c);
    return fd;
}

size_t mdb_archive_root_count(const mdb_archive_t *a)
{
    return a->nroots;
}

const char *mdb_archive_root(const mdb_archive_t *a, size_t i)
{
    return i < a->nroots ? a->roots[i] : NULL;
}

const char *mdb_archive_charset_for(const mdb_archive_t *a, const char *canonical_path)
{
    const char *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < a->noverrides; i++) {
        size_t n = strlen(a->overrides[i].root);
        if (n >= best_len && under(a->overrides[i].root, canonical_path)) {
            best = a->overrides[i].charset;
            best_len = n;
        }
    }
    return best;
}
