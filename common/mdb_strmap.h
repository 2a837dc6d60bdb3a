/* mdb_strmap: a small open-addressing hash map from string keys to an int64
 * value plus a user pointer, for the look-ups done in bulk by the catalog
 * crawl (directory -> indexed mtime) and the manifest parser (duplicate
 * detection). Keys are copied; values are plain data. Not thread-safe. */
#ifndef MDB_STRMAP_H
#define MDB_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdb_strmap mdb_strmap_t;

typedef struct {
    const char *key; /* owned by the map */
    int64_t value;
    int64_t value2;
    int64_t value3;
    bool mark; /* free for the caller (e.g. "seen during this crawl") */
} mdb_strmap_entry_t;

/* Empty map; NULL on OOM. */
mdb_strmap_t *mdb_strmap_new(void);
void mdb_strmap_destroy(mdb_strmap_t *m); /* accepts NULL */

/* Entry for key, or NULL. The pointer is valid until the next insert. */
mdb_strmap_entry_t *mdb_strmap_get(mdb_strmap_t *m, const char *key);

/* Entry for key, created (value 0, mark false) if absent; *created says which.
 * NULL on OOM (map unchanged). The pointer is valid until the next insert. */
mdb_strmap_entry_t *mdb_strmap_put(mdb_strmap_t *m, const char *key, bool *created);

size_t mdb_strmap_count(const mdb_strmap_t *m);

/* Visit every entry (unspecified order); stop early if fn returns false. */
typedef bool (*mdb_strmap_fn)(mdb_strmap_entry_t *e, void *ud);
void mdb_strmap_foreach(mdb_strmap_t *m, mdb_strmap_fn fn, void *ud);

#ifdef __cplusplus
}
#endif
#endif
