/* mdb_strmap: open addressing with linear probing over a power-of-two table,
 * FNV-1a hashes, grown at 70% load. Entries are never removed (the users
 * build a map, query it, and throw it away). */
#include "mdb_strmap.h"

#include <stdlib.h>
#include <string.h>

struct mdb_strmap {
    mdb_strmap_entry_t *slots; /* key == NULL: empty */
    uint64_t *hashes;
    size_t cap; /* power of two */
    size_t count;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

mdb_strmap_t *mdb_strmap_new(void)
{
    mdb_strmap_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cap = 64;
    m->slots = calloc(m->cap, sizeof *m->slots);
    m->hashes = calloc(m->cap, sizeof *m->hashes);
    if (!m->slots || !m->hashes) {
        free(m->slots);
        free(m->hashes);
        free(m);
        return NULL;
    }
    return m;
}

void mdb_strmap_destroy(mdb_strmap_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free((char *)m->slots[i].key);
    free(m->slots);
    free(m->hashes);
    free(m);
}

static size_t find_slot(const mdb_strmap_t *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    while (m->slots[i].key && (m->hashes[i] != h || strcmp(m->slots[i].key, key) != 0))
        i = (i + 1) & mask;
    return i;
}

static bool grow(mdb_strmap_t *m)
{
    size_t ncap = m->cap * 2;
    mdb_strmap_entry_t *ns = calloc(ncap, sizeof *ns);
    uint64_t *nh = calloc(ncap, sizeof *nh);
    if (!ns || !nh) {
        free(ns);
        free(nh);
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = (size_t)m->hashes[i] & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
        nh[j] = m->hashes[i];
    }
    free(m->slots);
    free(m->hashes);
    m->slots = ns;
    m->hashes = nh;
    m->cap = ncap;
    return true;
}

mdb_strmap_entry_t *mdb_strmap_get(mdb_strmap_t *m, const char *key)
{
    if (!m || !key)
        return NULL;
    size_t i = find_slot(m, key, hash_key(key));
    return m->slots[i].key ? &m->slots[i] : NULL;
}

mdb_strmap_entry_t *mdb_strmap_put(mdb_strmap_t *m, const char *key, bool *created)
{
    if (created)
        *created = false;
    if (!m || !key)
        return NULL;
    uint64_t h = hash_key(key);
    size_t i = find_slot(m, key, h);
    if (m->slots[i].key)
        return &m->slots[i];
    if ((m->count + 1) * 10 > m->cap * 7) {
        if (!grow(m))
            return NULL;
        i = find_slot(m, key, h);
    }
    char *copy = strdup(key);
    if (!copy)
        return NULL;
    memset(&m->slots[i], 0, sizeof m->slots[i]);
    m->slots[i].key = copy;
    m->hashes[i] = h;
    m->count++;
    if (created)
        *created = true;
    return &m->slots[i];
}

size_t mdb_strmap_count(const mdb_strmap_t *m)
{
    return m ? m->count : 0;
}

void mdb_strmap_foreach(mdb_strmap_t *m, mdb_strmap_fn fn, void *ud)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && !fn(&m->slots[i], ud))
            return;
}
