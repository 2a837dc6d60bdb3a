/* metadb lag: consumer lag per group, topic and partition, the number that
 * says whether the workers keep up. Lag is the distance from a group's
 * committed offset to the partition's high watermark (mdb_lag.h), so it
 * counts work that is not yet durably done. With --watch the table is
 * redrawn every few seconds with each group's consumption rate (averaged
 * over up to the last minute) and the time it would take to drain at that
 * rate; with --json one JSON document is
 * printed (one per line when watching) in the format GET /api/lag serves.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdb_cli.h"
#include "mdb_lag.h"
#include "mdb_signal.h"

static void lag_usage(FILE *out)
{
    fprintf(out, "usage: metadb lag [--group G ...] [--json] [--watch [SECONDS]]\n"
                 "  --group G        consumer group to show (repeatable or comma-separated);\n"
                 "                   default: worker.group, linker.group, producer.group, fetcher.group\n"
                 "  --json           print JSON (one document per refresh with --watch)\n"
                 "  --watch [S]      refresh every S seconds (default 2) until interrupted;\n"
                 "                   shows consumption rate and time to drain per group\n"
                 "lag = high watermark - committed offset; a partition without a commit counts\n"
                 "every retained message. Exit status: 0 ok, 1 Kafka unreachable, 2 usage.\n");
}

typedef struct {
    char **groups;
    size_t ngroups;
    bool json;
    bool watch;
    double interval;
} lag_opts_t;

static bool add_groups(lag_opts_t *o, const char *csv)
{
    char *copy = strdup(csv), *save = NULL;
    if (!copy)
        return false;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ')
            tok[--n] = '\0';
        if (!n)
            continue;
        char **g = realloc(o->groups, (o->ngroups + 1) * sizeof *g);
        if (!g) {
            free(copy);
            return false;
        }
        o->groups = g;
        if (!(o->groups[o->ngroups] = strdup(tok))) {
            free(copy);
            return false;
        }
        o->ngroups++;
    }
    free(copy);
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0.2 || v > 86400)
        return false;
    *out = v;
    return true;
}

/* 0 ok, 2 usage error (message printed). */
static int parse_args(lag_opts_t *o, int argc, char **argv)
{
    o->interval = 2.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            lag_usage(stdout);
            return -1;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--group") || !strcmp(a, "-g")) {
            if (i + 1 >= argc || !*argv[i + 1]) {
                fprintf(stderr, "metadb lag: --group needs a group name\n");
                return 2;
            }
            if (!add_groups(o, argv[++i]))
                return 2;
        } else if (!strncmp(a, "--group=", 8)) {
            if (!a[8]) {
                fprintf(stderr, "metadb lag: --group needs a group name\n");
                return 2;
            }
            if (!add_groups(o, a + 8))
                return 2;
        } else if (!strcmp(a, "--watch")) {
            o->watch = true;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                if (!parse_seconds(argv[i + 1], &o->interval)) {
                    fprintf(stderr, "metadb lag: --watch expects seconds between 0.2 and 86400, got '%s'\n",
                            argv[i + 1]);
                    return 2;
                }
                i++;
            }
        } else if (!strncmp(a, "--watch=", 8)) {
            o->watch = true;
            if (!parse_seconds(a + 8, &o->interval)) {
                fprintf(stderr, "metadb lag: --watch expects seconds between 0.2 and 86400, got '%s'\n", a + 8);
                return 2;
            }
        } else {
            fprintf(stderr, "metadb lag: unknown argument '%s'\n", a);
            lag_usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* ---- table ---- */

static void fmt_int_or_dash(char *buf, size_t len, json_t *v)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        snprintf(buf, len, "-");
}

static void fmt_owner(char *buf, size_t len, json_t *row)
{
    const char *cid = json_string_value(json_object_get(row, "client_id"));
    const char *host = json_string_value(json_object_get(row, "host"));
    if (!cid) {
        snprintf(buf, len, "-");
        return;
    }
    if (host && *host == '/')
        host++;
    snprintf(buf, len, "%s%s%s", cid, host && *host ? "@" : "", host ? host : "");
}

static void fmt_duration(char *buf, size_t len, double s)
{
    if (s < 60)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%.0fm%02.0fs", floor(s / 60), fmod(s, 60));
    else
        snprintf(buf, len, "%.0fh%02.0fm", floor(s / 3600), floor(fmod(s, 3600) / 60));
}

/* Sum of committed offsets of an entry over partitions committed in both
 * snapshots; used for the consumption rate. */
static json_t *find_entry(json_t *doc, const char *group, const char *topic)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "groups"), i, e)
    {
        const char *g = json_string_value(json_object_get(e, "group"));
        const char *t = json_string_value(json_object_get(e, "topic"));
        if (g && t && !strcmp(g, group) && !strcmp(t, topic))
            return e;
    }
    return NULL;
}

static bool consumed_since(json_t *prev, json_t *cur, double *delta)
{
    size_t i, j;
    json_t *pc, *pp;
    double d = 0;
    bool any = false;
    json_array_foreach(json_object_get(cur, "partitions"), i, pc)
    {
        json_t *c1 = json_object_get(pc, "committed");
        if (!json_is_integer(c1))
            continue;
        json_array_foreach(json_object_get(prev, "partitions"), j, pp)
        {
            if (json_integer_value(json_object_get(pp, "partition")) !=
                json_integer_value(json_object_get(pc, "partition")))
                continue;
            json_t *c0 = json_object_get(pp, "committed");
            if (json_is_integer(c0)) {
                d += (double)(json_integer_value(c1) - json_integer_value(c0));
                any = true;
            }
        }
    }
    *delta = d;
    return any;
}

static void print_table(FILE *out, json_t *doc, json_t *prev, double dt)
{
    size_t i, j;
    json_t *e, *row;
    int wg = 5, wt = 5;
    char c[32], h[32], l[32], owner[300];

    json_array_foreach(json_object_get(doc, "groups"), i, e)
    {
        const char *g = json_string_value(json_object_get(e, "group"));
        const char *t = json_string_value(json_object_get(e, "topic"));
        if (g && (int)strlen(g) > wg)
            wg = (int)strlen(g);
        if (t && (int)strlen(t) > wt)
            wt = (int)strlen(t);
    }
    fprintf(out, "%-*s  %-*s  %9s  %12s  %12s  %10s  %s\n", wg, "GROUP", wt, "TOPIC", "PARTITION", "COMMITTED", "HIGH",
            "LAG", "OWNER");
    json_array_foreach(json_object_get(doc, "groups"), i, e)
    {
        const char *g = json_string_value(json_object_get(e, "group"));
        const char *t = json_string_value(json_object_get(e, "topic"));
        const char *state = json_string_value(json_object_get(e, "state"));
        json_int_t members = json_integer_value(json_object_get(e, "members"));
        if (!t) {
            fprintf(out, "%-*s  %-*s  (no committed offsets, no known topic; state %s)\n", wg, g, wt, "-",
                    state ? state : "?");
            continue;
        }
        json_array_foreach(json_object_get(e, "partitions"), j, row)
        {
            fmt_int_or_dash(c, sizeof c, json_object_get(row, "committed"));
            fmt_int_or_dash(h, sizeof h, json_object_get(row, "high_watermark"));
            fmt_int_or_dash(l, sizeof l, json_object_get(row, "lag"));
            fmt_owner(owner, sizeof owner, row);
            const char *perr = json_string_value(json_object_get(row, "error"));
            fprintf(out, "%-*s  %-*s  %9" JSON_INTEGER_FORMAT "  %12s  %12s  %10s  %s%s%s\n", wg, g, wt, t,
                    json_integer_value(json_object_get(row, "partition")), c, h, l, owner, perr ? "  error: " : "",
                    perr ? perr : "");
        }
        json_int_t total = json_integer_value(json_object_get(e, "total_lag"));
        fprintf(out,
                "%-*s  %-*s  %9s  %12s  %12s  %10" JSON_INTEGER_FORMAT "  state %s, %" JSON_INTEGER_FORMAT " member%s",
                wg, g, wt, t, "total", "", "", total, state ? state : "?", members, members == 1 ? "" : "s");
        const char *terr = json_string_value(json_object_get(e, "error"));
        if (terr)
            fprintf(out, ", error: %s", terr);
        json_t *pe = prev ? find_entry(prev, g, t) : NULL;
        double delta;
        if (pe && dt > 0 && consumed_since(pe, e, &delta)) {
            double rate = delta / dt;
            fprintf(out, ", %.1f msg/s", rate);
            if (total > 0 && rate > 0) {
                fmt_duration(l, sizeof l, (double)total / rate);
                fprintf(out, ", drains in ~%s", l);
            } else if (total > 0) {
                fprintf(out, ", not draining");
            }
        }
        fputc('\n', out);
    }
    fprintf(out, "TOTAL LAG %" JSON_INTEGER_FORMAT "\n", json_integer_value(json_object_get(doc, "total_lag")));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_interruptible(double s)
{
    double until = now_s() + s;
    while (!mdb_signal_stop_requested() && now_s() < until)
        usleep(100000);
}

/* Samples kept for the rate: the oldest one not older than RATE_WINDOW_S
 * seconds is the base, so the rate is an average over up to a minute
 * instead of the jumpy difference of two consecutive refreshes. */
#define RATE_SAMPLES 32
#define RATE_WINDOW_S 60.0

typedef struct {
    json_t *doc;
    double t;
} sample_t;

/* Append doc (ownership taken) and drop samples outside the window. */
static void samples_push(sample_t *ring, size_t *n, json_t *doc, double t)
{
    if (*n == RATE_SAMPLES) {
        json_decref(ring[0].doc);
        memmove(ring, ring + 1, (RATE_SAMPLES - 1) * sizeof *ring);
        (*n)--;
    }
    ring[(*n)++] = (sample_t){doc, t};
    while (*n > 1 && t - ring[0].t > RATE_WINDOW_S) {
        json_decref(ring[0].doc);
        memmove(ring, ring + 1, (*n - 1) * sizeof *ring);
        (*n)--;
    }
}

int mdb_cmd_lag(mdb_config_t *cfg, int argc, char **argv)
{
    lag_opts_t o = {0};
    int rc = parse_args(&o, argc, argv);
    sample_t ring[RATE_SAMPLES];
    size_t nring = 0;
    bool tty = isatty(STDOUT_FILENO);

    if (rc != 0) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    do {
        mdb_error_t err = {0};
        json_t *doc = mdb_lag_collect(cfg, (const char *const *)o.groups, o.ngroups, &err);
        double t = now_s();
        if (!doc) {
            fprintf(stderr, "metadb lag: %s\n", err.message);
            rc = 1;
            if (!o.watch)
                break;
        } else if (o.json) {
            json_dumpf(doc, stdout, o.watch ? JSON_COMPACT : JSON_INDENT(2));
            fputc('\n', stdout);
            rc = 0;
        } else {
            if (o.watch && tty)
                fputs("\033[H\033[2J", stdout);
            if (o.watch)
                printf("metadb lag  every %gs  %s  (Ctrl-C to stop)\n", o.interval,
                       json_string_value(json_object_get(doc, "time")));
            /* rate base: the oldest sample in the window */
            print_table(stdout, doc, nring ? ring[0].doc : NULL, nring ? t - ring[0].t : 0);
            rc = 0;
        }
        fflush(stdout);
        if (doc && o.watch)
            samples_push(ring, &nring, doc, t);
        else
            json_decref(doc);
        if (o.watch)
            sleep_interruptible(o.interval);
    } while (o.watch && !mdb_signal_stop_requested());
    if (o.watch && mdb_signal_stop_requested())
        rc = 0;
done:
    for (size_t i = 0; i < nring; i++)
        json_decref(ring[i].doc);
    for (size_t i = 0; i < o.ngroups; i++)
        free(o.groups[i]);
    free(o.groups);
    return rc;
}
