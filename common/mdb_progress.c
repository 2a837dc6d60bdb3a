/* mdb_progress.c: progress lines for long CLI operations (see mdb_progress.h). */
#include "mdb_progress.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 24
#define REDRAW_S 0.1

struct mdb_progress {
    FILE *out;
    char label[32];
    char unit[16];
    int64_t total, done;
    double start, last_draw;
    bool active, drawn;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

char *mdb_progress_group(char *buf, size_t cap, int64_t n)
{
    char digits[32];
    bool neg = n < 0;
    unsigned long long u = neg ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    int nd = snprintf(digits, sizeof digits, "%llu", u);
    size_t k = 0;
    if (neg && k + 1 < cap)
        buf[k++] = '-';
    for (int i = 0; i < nd && k + 1 < cap; i++) {
        if (i > 0 && (nd - i) % 3 == 0 && k + 1 < cap)
            buf[k++] = ',';
        if (k + 1 < cap)
            buf[k++] = digits[i];
    }
    buf[k] = '\0';
    return buf;
}

/* "4 s", "2 min 05 s", "1 h 02 min". */
static void fmt_duration(char *buf, size_t cap, double s)
{
    if (s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (s < 10)
        snprintf(buf, cap, "%.1f s", s);
    else if (t < 60)
        snprintf(buf, cap, "%ld s", t);
    else if (t < 3600)
        snprintf(buf, cap, "%ld min %02ld s", t / 60, t % 60);
    else
        snprintf(buf, cap, "%ld h %02ld min", t / 3600, t / 60 % 60);
}

/* Cut s to at most cols display columns (UTF-8 code points). */
static size_t cut_columns(char *s, int cols)
{
    int n = 0;
    for (char *p = s; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && n++ == cols) {
            *p = '\0';
            return (size_t)(p - s);
        }
    }
    return strlen(s);
}

size_t mdb_progress_format(char *buf, size_t cap, const char *label, int64_t done, int64_t total, const char *unit,
                           double elapsed_s, const char *note, int width)
{
    char d[32], t[32], el[32], rate[48] = "", eta[48] = "", bar[BAR_WIDTH * 3 + 3] = "";
    if (!cap)
        return 0;
    mdb_progress_group(d, sizeof d, done);
    fmt_duration(el, sizeof el, elapsed_s);
    if (elapsed_s > 0.05 && done > 0) {
        char r[32];
        mdb_progress_group(r, sizeof r, (int64_t)((double)done / elapsed_s));
        snprintf(rate, sizeof rate, "  %s/s", r);
    }
    int len;
    if (total >= 0) {
        int64_t shown = done > total ? total : done;
        double frac = total > 0 ? (double)shown / (double)total : 1.0;
        int fill = (int)(frac * BAR_WIDTH);
        bar[0] = '[';
        for (int i = 0; i < BAR_WIDTH; i++)
            bar[1 + i] = i < fill ? '#' : '-';
        bar[BAR_WIDTH + 1] = ']';
        bar[BAR_WIDTH + 2] = '\0';
        if (done > 0 && done < total && elapsed_s > 0.5) {
            char e[32];
            fmt_duration(e, sizeof e, elapsed_s * (double)(total - done) / (double)done);
            snprintf(eta, sizeof eta, "  ETA %s", e);
        }
        mdb_progress_group(t, sizeof t, total);
        len = snprintf(buf, cap, "%-10s %s %3d%%  %s/%s%s%s  %s%s%s%s%s", label ? label : "", bar, (int)(frac * 100), d,
                       t, unit ? " " : "", unit ? unit : "", el, rate, eta, note ? "  " : "", note ? note : "");
    } else {
        len = snprintf(buf, cap, "%-10s %s%s%s  %s%s%s%s", label ? label : "", d, unit ? " " : "", unit ? unit : "", el,
                       rate, note ? "  " : "", note ? note : "");
    }
    if (len < 0) {
        buf[0] = '\0';
        return 0;
    }
    size_t n = (size_t)len < cap ? (size_t)len : cap - 1;
    buf[n] = '\0';
    /* never leave half a UTF-8 character at the end */
    while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80) {
        size_t k = n;
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xC0) == 0x80)
            k--;
        unsigned char lead = k > 0 ? (unsigned char)buf[k - 1] : 0;
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (n - (k - 1) >= need)
            break;
        buf[k - 1] = '\0';
        n = k - 1;
    }
    if (width > 0)
        n = cut_columns(buf, width);
    return n;
}

static bool want_drawing(FILE *out)
{
    const char *e = getenv("MDB_PROGRESS");
    if (e && !strcmp(e, "always"))
        return true;
    if (e && !strcmp(e, "never"))
        return false;
    return out && isatty(fileno(out));
}

mdb_progress_t *mdb_progress_new(FILE *out, const char *label, const char *unit, int64_t total)
{
    mdb_progress_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->out = out;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->start = now_s();
    p->last_draw = 0;
    p->active = want_drawing(out);
    return p;
}

bool mdb_progress_active(const mdb_progress_t *p)
{
    return p && p->active;
}

void mdb_progress_set_total(mdb_progress_t *p, int64_t total)
{
    if (p)
        p->total = total;
}

static int columns(void)
{
    const char *c = getenv("COLUMNS");
    int n = c ? atoi(c) : 0;
    return n > 20 ? n - 1 : 119;
}

void mdb_progress_update(mdb_progress_t *p, int64_t done, const char *note)
{
    if (!p)
        return;
    p->done = done;
    if (!p->active)
        return;
    double t = now_s();
    if (p->drawn && t - p->last_draw < REDRAW_S && !(p->total >= 0 && done >= p->total))
        return;
    char line[512];
    mdb_progress_format(line, sizeof line, p->label, done, p->total, p->unit[0] ? p->unit : NULL, t - p->start, note,
                        columns());
    fprintf(p->out, "\r\033[K%s", line);
    fflush(p->out);
    p->last_draw = t;
    p->drawn = true;
}

void mdb_progress_add(mdb_progress_t *p, int64_t n)
{
    if (p)
        mdb_progress_update(p, p->done + n, NULL);
}

void mdb_progress_finish(mdb_progress_t *p)
{
    if (!p || !p->active || !p->drawn)
        return;
    fprintf(p->out, "\r\033[K");
    fflush(p->out);
    p->drawn = false;
}

void mdb_progress_destroy(mdb_progress_t *p)
{
    if (!p)
        return;
    mdb_progress_finish(p);
    free(p);
}
