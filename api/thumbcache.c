/* thumbcache.c: the on-disk cache of rendered images and thumbnails (see
 * wado.h).
 *
 * One file per entry, dir/<2 hex>/<32 hex>, named by a hash of (SOP
 * Instance UID, rendering parameters). The file starts with one text line
 * "MDBTHUMB1 <size> <mtime_ns> <sop> <params>\n" and then holds the encoded
 * image: the line is checked on every read, so a hash collision is a miss,
 * and an entry rendered from a file of another size or mtime (the archive
 * file changed) is deleted and is a miss. Entries are written to a
 * temporary file and renamed, so a reader never sees half an entry and a
 * crash leaves at most a stray temporary (removed at the next start).
 *
 * LRU by access time: a hit sets the entry's atime explicitly (futimens,
 * independent of the mount's atime policy); when a write takes the folder
 * over the cap, the entries are listed and the oldest accessed are removed
 * until 90% of the cap is left. The byte count is taken from the folder at
 * start, so the cache and its cap survive restarts. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wado.h"

#define MAGIC "MDBTHUMB1 "
#define MAX_ENTRY (64 * 1024 * 1024)

struct thumbcache {
    char *dir;
    int64_t cap;
    atomic_llong bytes;
    atomic_ulong seq;
    pthread_mutex_t evict_lock;
};

static uint64_t fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void entry_path(const thumbcache_t *c, const char *sop, const char *params, char *out, size_t cap)
{
    uint64_t a = fnv1a(params, fnv1a("\x1f", fnv1a(sop, 0xcbf29ce484222325ULL)));
    uint64_t b = fnv1a(params, fnv1a("\x1e", fnv1a(sop, 0x84222325cbf29ce4ULL)));
    snprintf(out, cap, "%s/%02x/%016llx%016llx", c->dir, (unsigned)(a >> 56), (unsigned long long)a,
             (unsigned long long)b);
}

static bool mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return false;
        *p = '/';
    }
    return mkdir(tmp, 0700) == 0 || errno == EEXIST;
}

typedef struct {
    char *path;
    int64_t size;
    struct timespec atime;
} entry_t;

/* Every entry of the folder (and stray temporaries removed). */
static entry_t *list_entries(const thumbcache_t *c, size_t *n, int64_t *total)
{
    size_t cap = 256;
    entry_t *v = malloc(cap * sizeof *v);
    *n = 0;
    *total = 0;
    if (!v)
        return NULL;
    DIR *top = opendir(c->dir);
    if (!top)
        return v;
    struct dirent *de;
    while ((de = readdir(top))) {
        if (strlen(de->d_name) != 2)
            continue;
        char sub[4200];
        snprintf(sub, sizeof sub, "%s/%s", c->dir, de->d_name);
        DIR *d = opendir(sub);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.' && (e->d_name[1] == '\0' || e->d_name[1] == '.'))
                continue;
            char p[4600];
            snprintf(p, sizeof p, "%s/%s", sub, e->d_name);
            if (!strncmp(e->d_name, ".tmp", 4)) {
                unlink(p);
                continue;
            }
            struct stat st;
            if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (*n == cap) {
                entry_t *nv = realloc(v, cap * 2 * sizeof *nv);
                if (!nv)
                    break;
                v = nv;
                cap *= 2;
            }
            v[*n].path = strdup(p);
            if (!v[*n].path)
                break;
            v[*n].size = st.st_size;
            v[*n].atime = st.st_atim;
            *total += st.st_size;
            (*n)++;
        }
        closedir(d);
    }
    closedir(top);
    return v;
}

static void free_entries(entry_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

thumbcache_t *thumbcache_new(const char *dir, int64_t cap_bytes, mdb_error_t *err)
{
    if (cap_bytes <= 0)
        return NULL;
    if (!dir || !*dir || !mkdir_p(dir)) {
        mdb_error_set(err, MDB_ERR_IO, errno, "cannot create the thumbnail folder '%s': %s", dir ? dir : "",
                      strerror(errno));
        return NULL;
    }
    thumbcache_t *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        free(c);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    c->cap = cap_bytes;
    pthread_mutex_init(&c->evict_lock, NULL);
    size_t n;
    int64_t total;
    entry_t *v = list_entries(c, &n, &total);
    free_entries(v, n);
    atomic_store(&c->bytes, total);
    return c;
}

void thumbcache_destroy(thumbcache_t *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->evict_lock);
    free(c->dir);
    free(c);
}

int64_t thumbcache_bytes(thumbcache_t *c)
{
    return c ? atomic_load(&c->bytes) : 0;
}

static int cmp_atime(const void *x, const void *y)
{
    const entry_t *a = x, *b = y;
    if (a->atime.tv_sec != b->atime.tv_sec)
        return a->atime.tv_sec < b->atime.tv_sec ? -1 : 1;
    return a->atime.tv_nsec < b->atime.tv_nsec ? -1 : a->atime.tv_nsec > b->atime.tv_nsec;
}

static void evict(thumbcache_t *c)
{
    if (pthread_mutex_trylock(&c->evict_lock) != 0)
        return; /* another thread is evicting */
    size_t n;
    int64_t total;
    entry_t *v = list_entries(c, &n, &total);
    if (v) {
        qsort(v, n, sizeof *v, cmp_atime);
        int64_t target = c->cap - c->cap / 10;
        for (size_t i = 0; i < n && total > target; i++)
            if (unlink(v[i].path) == 0)
                total -= v[i].size;
        atomic_store(&c->bytes, total);
        free_entries(v, n);
    }
    pthread_mutex_unlock(&c->evict_lock);
}

static void remove_entry(thumbcache_t *c, const char *path, int64_t size)
{
    if (unlink(path) == 0)
        atomic_fetch_sub(&c->bytes, size);
}

bool thumbcache_get(thumbcache_t *c, const char *sop, const char *params, int64_t size, int64_t mtime_ns,
                    uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (!c)
        return false;
    char path[4400];
    entry_path(c, sop, params, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_ENTRY + 4096) {
        close(fd);
        return false;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        close(fd);
        return false;
    }
    buf[got] = '\0';
    char *nl = memchr(buf, '\n', got);
    char expect[1024];
    int hl =
        snprintf(expect, sizeof expect, MAGIC "%lld %lld %s %s", (long long)size, (long long)mtime_ns, sop, params);
    size_t line = nl ? (size_t)(nl - (char *)buf) : 0;
    if (!nl || hl < 0 || (size_t)hl != line || memcmp(buf, expect, line)) {
        /* same (sop, params) rendered from a file that has changed since:
         * stale, removed; anything else (a collision) is left alone */
        char prefix[256];
        int pl = snprintf(prefix, sizeof prefix, MAGIC);
        bool stale = false;
        if (nl && !strncmp((char *)buf, prefix, (size_t)pl)) {
            char *rest = strchr((char *)buf + pl, ' ');
            rest = rest ? strchr(rest + 1, ' ') : NULL;
            char tail[900];
            snprintf(tail, sizeof tail, " %s %s", sop, params);
            stale = rest && (size_t)(nl - rest) == strlen(tail) && !memcmp(rest, tail, strlen(tail));
        }
        free(buf);
        close(fd);
        if (stale)
            remove_entry(c, path, st.st_size);
        return false;
    }
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    futimens(fd, ts);
    close(fd);
    *len = got - line - 1;
    memmove(buf, nl + 1, *len);
    *data = buf;
    return true;
}

void thumbcache_put(thumbcache_t *c, const char *sop, const char *params, int64_t size, int64_t mtime_ns,
                    const uint8_t *data, size_t len)
{
    if (!c || len > MAX_ENTRY || (int64_t)len > c->cap / 2)
        return;
    char path[4400], tmp[4500];
    entry_path(c, sop, params, path, sizeof path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    if (!mkdir_p(path))
        return;
    snprintf(tmp, sizeof tmp, "%s/.tmp.%d.%lu", path, (int)getpid(), (unsigned long)atomic_fetch_add(&c->seq, 1));
    *slash = '/';
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char head[1024];
    int hl = snprintf(head, sizeof head, MAGIC "%lld %lld %s %s\n", (long long)size, (long long)mtime_ns, sop, params);
    bool ok = hl > 0 && (size_t)hl < sizeof head && write(fd, head, (size_t)hl) == hl;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        off += ok ? (size_t)w : 0;
    }
    if (close(fd) != 0)
        ok = false;
    struct stat old;
    bool had = stat(path, &old) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return;
    }
    atomic_fetch_add(&c->bytes, (long long)((size_t)hl + len) - (had ? (long long)old.st_size : 0));
    if (atomic_load(&c->bytes) > c->cap)
        evict(c);
}
