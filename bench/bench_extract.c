/* bench_extract: single-threaded timing helper for bench/bench_extract.sh.
 *
 *   bench_extract extract LIST FEATURES_DIR [ROUNDS]   the worker's per-file work without Kafka:
 *                                                     open, header read + parse, typed extraction
 *                                                     of the feature set, event JSON text, close
 *                                                     (mdb_extract_fd_event, as the worker does)
 *   bench_extract bare LIST [ROUNDS]                   open + read(4 KiB) + close of the same files
 *   bench_extract io LIST [ROUNDS]                     the reader's system calls alone: open + fstat +
 *                                                     pread(8 KiB) + close (no parsing)
 *
 * LIST holds one path per line. Each mode makes one untimed warm-up pass
 * (page cache) and then ROUNDS (default 3) timed passes; it prints one line
 * "mode files wall_s cpu_s files_per_cpu_s failures" for the best pass.
 * CPU time (CLOCK_THREAD_CPUTIME_ID) is what "per core" means on a machine
 * shared with other work. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdb_extract.h"
#include "mdb_features.h"

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static char **read_list(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench_extract: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char **v = NULL;
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    *n = 0;
    while ((len = getline(&line, &lcap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!len)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            v = realloc(v, cap * sizeof *v);
        }
        v[(*n)++] = strdup(line);
    }
    free(line);
    fclose(f);
    return v;
}

typedef struct {
    double wall, cpu;
    size_t failures;
} pass_t;

static pass_t pass_extract(char **paths, size_t n, const mdb_features_t *fs, mdb_extract_ctx_t *ctx)
{
    pass_t p = {0};
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        mdb_error_t err;
        const char *event = NULL, *key = NULL;
        size_t len = 0;
        if (fd < 0 ||
            !mdb_extract_fd_event(ctx, fs, fd, NULL, "bench-job", paths[i], mdb_features_name(fs), &event, &len, &key,
                                  &err) ||
            !key || len == 0)
            p.failures++;
        if (fd >= 0)
            close(fd);
    }
    p.wall = clock_s(CLOCK_MONOTONIC) - w0;
    p.cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    return p;
}

static pass_t pass_io(char **paths, size_t n)
{
    pass_t p = {0};
    static char buf[8192];
    struct stat st;
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || fstat(fd, &st) != 0 || pread(fd, buf, sizeof buf, 0) <= 0)
            p.failures++;
        if (fd >= 0)
            close(fd);
    }
    p.wall = clock_s(CLOCK_MONOTONIC) - w0;
    p.cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    return p;
}

static pass_t pass_bare(char **paths, size_t n)
{
    pass_t p = {0};
    char buf[4096];
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
    for (size_t i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || read(fd, buf, sizeof buf) <= 0)
            p.failures++;
        if (fd >= 0)
            close(fd);
    }
    p.wall = clock_s(CLOCK_MONOTONIC) - w0;
    p.cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "extract") && strcmp(argv[1], "bare") && strcmp(argv[1], "io")) ||
        (!strcmp(argv[1], "extract") && argc < 4)) {
        fprintf(stderr, "usage: bench_extract extract LIST FEATURES_DIR [ROUNDS] | bare|io LIST [ROUNDS]\n");
        return 2;
    }
    bool extract = !strcmp(argv[1], "extract");
    int rounds = atoi(argc > (extract ? 4 : 3) ? argv[extract ? 4 : 3] : "3");
    if (rounds < 1)
        rounds = 1;
    size_t n = 0;
    char **paths = read_list(argv[2], &n);
    mdb_features_t *fs = NULL;
    mdb_extract_ctx_t *ctx = NULL;
    if (extract) {
        mdb_error_t err = {0};
        fs = mdb_features_load(argv[3], "default", NULL, &err);
        ctx = mdb_extract_ctx_new(0);
        if (!fs || !ctx) {
            fprintf(stderr, "bench_extract: %s\n", err.message);
            return 2;
        }
    }
    pass_t best = {0};
    for (int r = 0; r <= rounds; r++) {
        pass_t p = extract                  ? pass_extract(paths, n, fs, ctx)
                   : !strcmp(argv[1], "io") ? pass_io(paths, n)
                                            : pass_bare(paths, n);
        if (r == 0)
            continue; /* warm-up */
        if (r == 1 || p.cpu < best.cpu)
            best = p;
    }
    printf("%s %zu %.6f %.6f %.1f %zu\n", argv[1], n, best.wall, best.cpu, best.cpu > 0 ? n / best.cpu : 0.0,
           best.failures);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    mdb_extract_ctx_destroy(ctx);
    mdb_features_destroy(fs);
    return 0;
}
