/* mdb_log: one line per event on stderr, plain text or JSON, each emitted
 * with a single write(2) so lines from concurrent threads never interleave.
 * libmongoc's logger is routed here by mdb_log_mongoc.c (librdkafka's by
 * mdb_kafka via log_cb). URIs are masked before they are logged: credentials never reach
 * a log file. */
#include "mdb_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int mdb_log_current_level = MDB_LOG_INFO;

static char log_daemon[64] = "metadb";
static bool log_json = false;

static const char *level_names[] = {"error", "warn", "info", "debug"};

/* A growable string builder that starts on the caller's stack buffer. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool heap;
    bool oom;
} sb_t;

static void sb_init(sb_t *b, char *stack, size_t cap)
{
    b->buf = stack;
    b->len = 0;
    b->cap = cap;
    b->heap = false;
    b->oom = false;
    b->buf[0] = '\0';
}

static bool sb_reserve(sb_t *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t ncap = b->cap * 2;
    while (ncap < b->len + extra + 1)
        ncap *= 2;
    char *n = b->heap ? realloc(b->buf, ncap) : malloc(ncap);
    if (!n) {
        b->oom = true;
        return false;
    }
    if (!b->heap)
        memcpy(n, b->buf, b->len + 1);
    b->buf = n;
    b->cap = ncap;
    b->heap = true;
    return true;
}

static void sb_add(sb_t *b, const char *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_adds(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* JSON string body escaping (no surrounding quotes). Bytes >= 0x80 are
 * passed through; invalid UTF-8 in log text is the caller's problem but
 * control characters can never break the line. */
static void sb_add_json(sb_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': sb_add(b, "\\\"", 2); break;
        case '\\': sb_add(b, "\\\\", 2); break;
        case '\n': sb_add(b, "\\n", 2); break;
        case '\r': sb_add(b, "\\r", 2); break;
        case '\t': sb_add(b, "\\t", 2); break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                sb_add(b, esc, 6);
            } else {
                sb_add(b, (const char *)p, 1);
            }
        }
    }
}

/* Plain lines must stay one line and must not drive the terminal that shows
 * them: newlines in messages become spaces, every other control byte but tab
 * (ESC of an ANSI sequence in a request path, a bell, a DEL) becomes \xNN. */
static void sb_add_plain(sb_t *b, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const unsigned char *run = p;
        while (*p && (*p >= 0x20 || *p == '\t') && *p != 0x7f)
            p++;
        sb_add(b, (const char *)run, (size_t)(p - run));
        if (!*p)
            break;
        if (*p == '\n' || *p == '\r') {
            sb_add(b, " ", 1);
        } else {
            char esc[8];
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            sb_add(b, esc, 4);
        }
    }
}

bool mdb_log_init(const char *daemon, const char *level_name, const char *format)
{
    int level = -1;
    for (int i = 0; i < 4; i++)
        if (level_name && !strcasecmp(level_name, level_names[i]))
            level = i;
    if (level_name && !strcasecmp(level_name, "warning"))
        level = MDB_LOG_WARN;
    if (level < 0)
        return false;
    bool json;
    if (format && !strcasecmp(format, "json"))
        json = true;
    else if (!format || !strcasecmp(format, "plain"))
        json = false;
    else
        return false;
    snprintf(log_daemon, sizeof log_daemon, "%s", daemon ? daemon : "metadb");
    log_json = json;
    mdb_log_current_level = level;
    return true;
}

static void write_all(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void format_time(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

static void emit(int level, const char *job, const char *path, const char *msg)
{
    char ts[40];
    char stack[1024];
    sb_t b;
    if (level < MDB_LOG_ERROR)
        level = MDB_LOG_ERROR;
    if (level > MDB_LOG_DEBUG)
        level = MDB_LOG_DEBUG;
    format_time(ts, sizeof ts);
    sb_init(&b, stack, sizeof stack);
    if (log_json) {
        sb_adds(&b, "{\"ts\":\"");
        sb_adds(&b, ts);
        sb_adds(&b, "\",\"level\":\"");
        sb_adds(&b, level_names[level]);
        sb_adds(&b, "\",\"daemon\":\"");
        sb_add_json(&b, log_daemon);
        sb_adds(&b, "\"");
        if (job) {
            sb_adds(&b, ",\"job\":\"");
            sb_add_json(&b, job);
            sb_adds(&b, "\"");
        }
        if (path) {
            sb_adds(&b, ",\"path\":\"");
            sb_add_json(&b, path);
            sb_adds(&b, "\"");
        }
        sb_adds(&b, ",\"msg\":\"");
        sb_add_json(&b, msg);
        sb_adds(&b, "\"}\n");
    } else {
        char head[128];
        snprintf(head, sizeof head, "%s %-5s %s[%d]: ", ts, level_names[level], log_daemon, (int)getpid());
        sb_adds(&b, head);
        if (job) {
            sb_adds(&b, "job=");
            sb_add_plain(&b, job);
            sb_adds(&b, " ");
        }
        if (path) {
            sb_adds(&b, "path=");
            sb_add_plain(&b, path);
            sb_adds(&b, " ");
        }
        sb_add_plain(&b, msg);
        sb_adds(&b, "\n");
    }
    if (b.oom) {
        static const char oom[] = "log: out of memory formatting a log line\n";
        write_all(oom, sizeof oom - 1);
    } else {
        write_all(b.buf, b.len);
    }
    if (b.heap)
        free(b.buf);
}

/* Rate limiting of repeated warnings and errors, keyed by the format string
 * (one call site = one kind of event). Off until mdb_log_set_rate_limit. */
#define RL_SLOTS 64
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static int rl_burst = 0, rl_window_ms = 0;
static struct {
    const char *fmt;
    int64_t start_ms;
    int count;
    long suppressed;
} rl[RL_SLOTS];

void mdb_log_set_rate_limit(int burst, int window_ms)
{
    pthread_mutex_lock(&rl_lock);
    rl_burst = burst > 0 && window_ms > 0 ? burst : 0;
    rl_window_ms = window_ms;
    memset(rl, 0, sizeof rl);
    pthread_mutex_unlock(&rl_lock);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* true when this line may be written; *dropped is set to the number of lines
 * of the same kind suppressed in the window that just ended (report them). */
static bool rl_admit(const char *fmt, long *dropped, int *window_s)
{
    *dropped = 0;
    pthread_mutex_lock(&rl_lock);
    if (!rl_burst) {
        pthread_mutex_unlock(&rl_lock);
        return true;
    }
    int64_t now = mono_ms();
    size_t slot = ((uintptr_t)fmt >> 3) % RL_SLOTS;
    if (rl[slot].fmt != fmt) { /* a new kind takes the slot over; a collision only loosens the limit */
        rl[slot].fmt = fmt;
        rl[slot].start_ms = now;
        rl[slot].count = 0;
        rl[slot].suppressed = 0;
    }
    if (now - rl[slot].start_ms >= rl_window_ms) {
        *dropped = rl[slot].suppressed;
        rl[slot].start_ms = now;
        rl[slot].count = 0;
        rl[slot].suppressed = 0;
    }
    bool ok = rl[slot].count < rl_burst;
    if (ok)
        rl[slot].count++;
    else
        rl[slot].suppressed++;
    *window_s = (rl_window_ms + 999) / 1000;
    pthread_mutex_unlock(&rl_lock);
    return ok;
}

void mdb_log_write(int level, const char *job, const char *path, const char *fmt, ...)
{
    if (level <= MDB_LOG_WARN) {
        long dropped;
        int window_s;
        bool ok = rl_admit(fmt, &dropped, &window_s);
        if (dropped) {
            char note[200];
            snprintf(note, sizeof note, "%ld more %s lines like the next one were suppressed in %d s", dropped,
                     level == MDB_LOG_ERROR ? "error" : "warning", window_s);
            emit(level, NULL, NULL, note);
        }
        if (!ok)
            return;
    }
    char stack[512];
    char *msg = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0) {
        snprintf(stack, sizeof stack, "(bad log format)");
    } else if ((size_t)n >= sizeof stack) {
        char *heap = malloc((size_t)n + 1);
        if (heap) {
            va_start(ap, fmt);
            vsnprintf(heap, (size_t)n + 1, fmt, ap);
            va_end(ap);
            msg = heap;
        }
    }
    emit(level, job, path, msg);
    if (msg != stack)
        free(msg);
}

/* Characters that end a URI in free text. The credentials end at the LAST '@'
 * before one of them: libmongoc accepts unescaped ',', ';', '?', '#', '/' and
 * quotes inside a password, so stopping at the first '/' or ',' would print
 * the rest of such a password (an '@' later in the query string only makes
 * the mask longer, never shorter). */
static bool ends_uri_text(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char *mdb_log_mask_uri(const char *uri)
{
    if (!uri)
        return NULL;
    size_t n = strlen(uri);
    /* Masking never grows a credential by more than "***:***" over an empty one. */
    char *out = malloc(n * 2 + 16);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = uri;
    while (*p) {
        const char *scheme = NULL;
        size_t slen = 0;
        if (!strncasecmp(p, "mongodb://", 10)) {
            scheme = p;
            slen = 10;
        } else if (!strncasecmp(p, "mongodb+srv://", 14)) {
            scheme = p;
            slen = 14;
        }
        if (!scheme) {
            out[o++] = *p++;
            continue;
        }
        memcpy(out + o, p, slen);
        o += slen;
        p += slen;
        const char *end = p;
        const char *at = NULL;
        const char *colon = NULL;
        while (!ends_uri_text(*end)) {
            if (*end == '@')
                at = end;
            end++;
        }
        if (at) {
            for (const char *q = p; q < at; q++)
                if (*q == ':') {
                    colon = q;
                    break;
                }
            const char *mask = colon ? "***:***@" : "***@";
            size_t ml = strlen(mask);
            memcpy(out + o, mask, ml);
            o += ml;
            p = at + 1;
        }
    }
    out[o] = '\0';
    return out;
}
