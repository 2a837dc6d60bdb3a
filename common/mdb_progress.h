/* mdb_progress: the progress bar of the CLI's long operations (query --all,
 * export, reconcile, dump, index). On a terminal it redraws one line on
 * stderr at most every 100 ms:
 *
 *   dump       [##########--------------]  42%  12,345/29,001  3.1 s  3,982/s  ETA 4 s
 *   index      12,345 files  3.1 s  3,982/s  (LIDC-IDRI-0042/…)
 *
 * and clears it when done; on a pipe or file it prints nothing at all, so
 * scripted output stays clean. MDB_PROGRESS=always|never overrides the
 * terminal check (always: for tests driving a pseudo-terminal).
 *
 * mdb_progress_format is the pure formatting, unit-tested; the object only
 * adds the clock, the rate limit and the terminal. Not thread-safe: one
 * progress per thread. */
#ifndef MDB_PROGRESS_H
#define MDB_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Format one progress line into buf (NUL-terminated, cut to cap and to
 * `width` display columns when width > 0). total < 0: unknown (no bar, no
 * percentage, no ETA). unit: "rows", "files", ... (may be NULL). note: a
 * short trailing text (may be NULL). Returns strlen(buf). */
size_t mdb_progress_format(char *buf, size_t cap, const char *label, int64_t done, int64_t total, const char *unit,
                           double elapsed_s, const char *note, int width);

/* 12345678 -> "12,345,678" into buf (cap >= 32). Returns buf. */
char *mdb_progress_group(char *buf, size_t cap, int64_t n);

typedef struct mdb_progress mdb_progress_t;

/* A progress line for `label` on `out` (normally stderr). Drawn only when
 * out is a terminal (or MDB_PROGRESS=always) and not disabled; otherwise
 * every call is a cheap no-op. total < 0: unknown. NULL on OOM (the other
 * functions accept NULL). */
mdb_progress_t *mdb_progress_new(FILE *out, const char *label, const char *unit, int64_t total);
/* Is it drawing (a terminal)? */
bool mdb_progress_active(const mdb_progress_t *p);
void mdb_progress_set_total(mdb_progress_t *p, int64_t total);
/* Set the count (redraws when 100 ms have passed since the last draw). */
void mdb_progress_update(mdb_progress_t *p, int64_t done, const char *note);
void mdb_progress_add(mdb_progress_t *p, int64_t n);
/* Clear the line (a final summary is the caller's). Idempotent. */
void mdb_progress_finish(mdb_progress_t *p);
/* finish + free. Accepts NULL. */
void mdb_progress_destroy(mdb_progress_t *p);

#endif
