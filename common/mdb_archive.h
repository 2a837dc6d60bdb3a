/* mdb_archive: the only gate through which metadb opens archive files.
 * Paths are canonicalised (realpath: '..' and every symlink resolved) and must
 * then lie under one of the configured archive roots (themselves
 * canonicalised); anything else is refused with MDB_ERR_SECURITY. */
#ifndef MDB_ARCHIVE_H
#define MDB_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>

#include "mdb_config.h"
#include "mdb_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_archive mdb_archive_t;

/* Roots from archive.roots (comma list). A root that does not exist is an error.
 * Zero roots is allowed but then every path is refused. */
mdb_archive_t *mdb_archive_new_from_config(const mdb_config_t *cfg, mdb_error_t *err);
mdb_archive_t *mdb_archive_new(const char *const *roots, size_t nroots, mdb_error_t *err);
void mdb_archive_destroy(mdb_archive_t *a); /* accepts NULL */

/* Canonical form of path if it lies under a root: malloc'd string (caller
 * frees), else NULL with a reason: MDB_ERR_SECURITY "outside archive roots",
 * MDB_ERR_NOTFOUND "no such file", MDB_ERR_IO for other errors.
 * root_out, if given, receives the root it lies under (owned by a). */
char *mdb_archive_resolve(const mdb_archive_t *a, const char *path, const char **root_out, mdb_error_t *err);

/* open(2) a file read-only (O_RDONLY|O_CLOEXEC|O_NOFOLLOW on the canonical
 * path) after mdb_archive_resolve, then re-checks what was opened
 * (/proc/self/fd) so a directory swapped for a symlink between the check and
 * the open is refused too. Returns fd or -1 with err filled. */
int mdb_archive_open(const mdb_archive_t *a, const char *path, mdb_error_t *err);

/* mdb_archive_open that also hands back the canonical path (malloc'd,
 * caller frees; may be NULL if not wanted) and the root it lies under
 * (owned by a), resolving the path once. */
int mdb_archive_open_ex(const mdb_archive_t *a, const char *path, char **canonical_out, const char **root_out,
                        mdb_error_t *err);

size_t mdb_archive_root_count(const mdb_archive_t *a);
const char *mdb_archive_root(const mdb_archive_t *a, size_t i);

/* Character-set override for a canonical path: the CHARSET of the longest
 * archive.charset_overrides entry ("ROOT=CHARSET;ROOT2=CHARSET2", ROOT
 * canonicalised at creation) whose ROOT contains the path, or NULL. CHARSET
 * is a Specific Character Set term ("ISO_IR 144") or an iconv name ("GBK",
 * "CP1251"). Owned by a. */
const char *mdb_archive_charset_for(const mdb_archive_t *a, const char *canonical_path);

/* Add one override (tests and tools; config uses archive.charset_overrides).
 * root must exist. */
bool mdb_archive_add_charset_override(mdb_archive_t *a, const char *root, const char *charset, mdb_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
