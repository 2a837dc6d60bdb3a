/* worker_track: per-partition, in-order offset tracking for the worker.
 * Tasks of a partition finish out of order (several extraction threads,
 * delivery reports in any order); the offset stored for commit must never
 * pass one whose output is not yet delivered. Each partition keeps its
 * offsets in consumption order with a done flag; advancing pops the leading
 * run of done offsets. Used by the main thread only (no locking). */
#include <stdlib.h>
#include <string.h>

#include "worker.h"

typedef struct {
    int64_t offset;
    bool done;
} entry_t;

typedef struct {
    int32_t partition;
    uint64_t epoch;
    entry_t *e;
    size_t head, len, cap;
} part_t;

struct worker_tracker {
    part_t *parts;
    size_t nparts;
    uint64_t next_epoch;
};

worker_tracker_t *worker_tracker_new(void)
{
    worker_tracker_t *t = calloc(1, sizeof *t);
    if (t)
        t->next_epoch = 1;
    return t;
}

void worker_tracker_destroy(worker_tracker_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nparts; i++)
        free(t->parts[i].e);
    free(t->parts);
    free(t);
}

static part_t *find_part(const worker_tracker_t *t, int32_t partition)
{
    for (size_t i = 0; i < t->nparts; i++)
        if (t->parts[i].partition == partition)
            return &t->parts[i];
    return NULL;
}

uint64_t worker_tracker_reset(worker_tracker_t *t, int32_t partition)
{
    part_t *p = find_part(t, partition);
    if (!p) {
        part_t *n = realloc(t->parts, (t->nparts + 1) * sizeof *n);
        if (!n)
            return 0;
        t->parts = n;
        p = &n[t->nparts++];
        memset(p, 0, sizeof *p);
        p->partition = partition;
    }
    p->head = p->len = 0;
    p->epoch = t->next_epoch++;
    return p->epoch;
}

uint64_t worker_tracker_epoch(const worker_tracker_t *t, int32_t partition)
{
    const part_t *p = find_part(t, partition);
    return p ? p->epoch : 0;
}

bool worker_tracker_add(worker_tracker_t *t, int32_t partition, int64_t offset)
{
    part_t *p = find_part(t, partition);
    if (!p) {
        if (!worker_tracker_reset(t, partition))
            return false;
        p = find_part(t, partition);
    }
    if (p->len > p->head && p->e[p->len - 1].offset >= offset)
        return false; /* not in consumption order: a rewind; caller resets */
    if (p->head > 0 && p->head * 2 >= p->len) {
        memmove(p->e, p->e + p->head, (p->len - p->head) * sizeof *p->e);
        p->len -= p->head;
        p->head = 0;
    }
    if (p->len == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        entry_t *n = realloc(p->e, cap * sizeof *n);
        if (!n)
            return false;
        p->e = n;
        p->cap = cap;
    }
    p->e[p->len].offset = offset;
    p->e[p->len].done = false;
    p->len++;
    return true;
}

bool worker_tracker_done(worker_tracker_t *t, int32_t partition, int64_t offset)
{
    part_t *p = find_part(t, partition);
    if (!p)
        return false;
    size_t lo = p->head, hi = p->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->e[mid].offset == offset) {
            p->e[mid].done = true;
            return true;
        }
        if (p->e[mid].offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int64_t worker_tracker_advance(worker_tracker_t *t, int32_t partition)
{
    part_t *p = find_part(t, partition);
    int64_t last = -1;
    if (!p)
        return -1;
    while (p->head < p->len && p->e[p->head].done)
        last = p->e[p->head++].offset;
    return last;
}

size_t worker_tracker_pending(const worker_tracker_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nparts; i++)
        n += t->parts[i].len - t->parts[i].head;
    return n;
}

size_t worker_tracker_partitions(const worker_tracker_t *t, int32_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nparts && n < max; i++)
        out[n++] = t->parts[i].partition;
    return n;
}
