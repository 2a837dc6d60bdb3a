/* mdb_metrics: a minimal Prometheus client. Series are registered up front
 * (under a lock) and updated lock-free (atomic doubles as 64-bit patterns),
 * so hot paths pay one compare-and-swap. The registry renders the text
 * exposition format, served on /metrics by libmicrohttpd's own thread. */
#include "mdb_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

struct mdb_metric {
    struct mdb_metric *next; /* next series of the same family */
    char *labels;
    _Atomic uint64_t value; /* double bits (counter/gauge) or histogram sum */
    size_t nbounds;
    double *bounds;
    _Atomic uint64_t *buckets; /* nbounds + 1 (+Inf), non-cumulative */
    _Atomic uint64_t count;
};

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    kind_t kind;
    mdb_metric_t *series, *last;
} family_t;

struct mdb_metrics {
    pthread_mutex_t lock;
    family_t *families, *last;
    char *daemon;
    struct MHD_Daemon *httpd;
};

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *a, double v)
{
    uint64_t old = atomic_load(a);
    while (!atomic_compare_exchange_weak(a, &old, d2u(u2d(old) + v)))
        ;
}

mdb_metrics_t *mdb_metrics_new(const char *daemon)
{
    mdb_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->daemon = strdup(daemon ? daemon : "metadb");
    char labels[160];
    snprintf(labels, sizeof labels, "daemon=\"%s\"", m->daemon ? m->daemon : "metadb");
    mdb_metric_t *up = mdb_metrics_gauge(m, "metadb_up", "1 while the daemon runs", labels);
    if (!m->daemon || !up) {
        mdb_metrics_destroy(m);
        return NULL;
    }
    mdb_metric_set(up, 1);
    return m;
}

static void free_series(mdb_metric_t *s)
{
    free(s->labels);
    free(s->bounds);
    free((void *)s->buckets);
    free(s);
}

void mdb_metrics_destroy(mdb_metrics_t *m)
{
    if (!m)
        return;
    if (m->httpd)
        MHD_stop_daemon(m->httpd);
    family_t *f = m->families;
    while (f) {
        family_t *nf = f->next;
        mdb_metric_t *s = f->series;
        while (s) {
            mdb_metric_t *ns = s->next;
            free_series(s);
            s = ns;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = nf;
    }
    pthread_mutex_destroy(&m->lock);
    free(m->daemon);
    free(m);
}

static mdb_metric_t *register_series(mdb_metrics_t *m, kind_t kind, const char *name, const char *help,
                                     const char *labels, const double *bounds, size_t nbounds)
{
    if (!m || !name || !*name)
        return NULL;
    if (!labels)
        labels = "";
    mdb_metric_t *result = NULL;
    pthread_mutex_lock(&m->lock);
    family_t *f = m->families;
    while (f && strcmp(f->name, name))
        f = f->next;
    if (f && f->kind != kind)
        goto done; /* same name, different type: refuse */
    if (f) {
        for (mdb_metric_t *s = f->series; s; s = s->next)
            if (!strcmp(s->labels, labels)) {
                result = s;
                goto done;
            }
    } else {
        f = calloc(1, sizeof *f);
        if (!f)
            goto done;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        f->kind = kind;
        if (!f->name || !f->help) {
            free(f->name);
            free(f->help);
            free(f);
            goto done;
        }
        if (m->last)
            m->last->next = f;
        else
            m->families = f;
        m->last = f;
    }
    mdb_metric_t *s = calloc(1, sizeof *s);
    if (!s)
        goto done;
    s->labels = strdup(labels);
    if (kind == KIND_HISTOGRAM) {
        s->nbounds = nbounds;
        s->bounds = malloc((nbounds ? nbounds : 1) * sizeof *s->bounds);
        s->buckets = calloc(nbounds + 1, sizeof *s->buckets);
        if (s->bounds && nbounds)
            memcpy(s->bounds, bounds, nbounds * sizeof *bounds);
    }
    if (!s->labels || (kind == KIND_HISTOGRAM && (!s->bounds || !s->buckets))) {
        free_series(s);
        goto done;
    }
    if (f->last)
        f->last->next = s;
    else
        f->series = s;
    f->last = s;
    result = s;
done:
    pthread_mutex_unlock(&m->lock);
    return result;
}

mdb_metric_t *mdb_metrics_counter(mdb_metrics_t *m, const char *name, const char *help, const char *labels)
{
    return register_series(m, KIND_COUNTER, name, help, labels, NULL, 0);
}

mdb_metric_t *mdb_metrics_gauge(mdb_metrics_t *m, const char *name, const char *help, const char *labels)
{
    return register_series(m, KIND_GAUGE, name, help, labels, NULL, 0);
}

mdb_metric_t *mdb_metrics_histogram(mdb_metrics_t *m, const char *name, const char *help, const char *labels,
                                    const double *bounds, size_t nbounds)
{
    for (size_t i = 1; i < nbounds; i++)
        if (!(bounds[i] > bounds[i - 1]))
            return NULL; /* bounds must be strictly ascending */
    return register_series(m, KIND_HISTOGRAM, name, help, labels, bounds, nbounds);
}

void mdb_metric_inc(mdb_metric_t *c, double v)
{
    if (c)
        atomic_add_double(&c->value, v);
}

void mdb_metric_set(mdb_metric_t *g, double v)
{
    if (g)
        atomic_store(&g->value, d2u(v));
}

void mdb_metric_observe(mdb_metric_t *h, double v)
{
    if (!h || !h->buckets)
        return;
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    atomic_fetch_add(&h->buckets[i], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_add_double(&h->value, v);
}

/* ---- rendering ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} out_t;

static void out_printf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(out_t *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = o->cap * 2 + (size_t)n;
        char *nb = realloc(o->buf, ncap);
        if (!nb) {
            o->oom = true;
            return;
        }
        o->buf = nb;
        o->cap = ncap;
    }
}

static void fmt_double(char *buf, size_t size, double v)
{
    if (isnan(v))
        snprintf(buf, size, "NaN");
    else if (isinf(v))
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    else {
        /* Shortest text that reads back as the same double: 0.1, not 0.10000000000000001. */
        snprintf(buf, size, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, size, "%.17g", v);
    }
}

/* HELP text escaping: backslash and newline. */
static void out_help(out_t *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            out_printf(o, "\\\\");
        else if (*s == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *s);
    }
}

static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &rss);
    fclose(f);
    if (n != 2)
        return 0;
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static void render_series_name(out_t *o, const char *name, const char *suffix, const char *labels, const char *extra)
{
    bool has = labels && *labels;
    bool hasx = extra && *extra;
    out_printf(o, "%s%s", name, suffix);
    if (has || hasx)
        out_printf(o, "{%s%s%s}", has ? labels : "", has && hasx ? "," : "", hasx ? extra : "");
}

char *mdb_metrics_render(mdb_metrics_t *m)
{
    out_t o = {malloc(4096), 0, 4096, false};
    char num[64];
    if (!o.buf)
        return NULL;
    o.buf[0] = '\0';
    pthread_mutex_lock(&m->lock);
    for (family_t *f = m->families; f; f = f->next) {
        static const char *const kinds[] = {"counter", "gauge", "histogram"};
        out_printf(&o, "# HELP %s ", f->name);
        out_help(&o, f->help);
        out_printf(&o, "\n# TYPE %s %s\n", f->name, kinds[f->kind]);
        for (mdb_metric_t *s = f->series; s; s = s->next) {
            if (f->kind != KIND_HISTOGRAM) {
                render_series_name(&o, f->name, "", s->labels, NULL);
                fmt_double(num, sizeof num, u2d(atomic_load(&s->value)));
                out_printf(&o, " %s\n", num);
                continue;
            }
            uint64_t cum = 0;
            for (size_t i = 0; i <= s->nbounds; i++) {
                char le[80];
                cum += atomic_load(&s->buckets[i]);
                if (i < s->nbounds) {
                    fmt_double(num, sizeof num, s->bounds[i]);
                    snprintf(le, sizeof le, "le=\"%s\"", num);
                } else {
                    snprintf(le, sizeof le, "le=\"+Inf\"");
                }
                render_series_name(&o, f->name, "_bucket", s->labels, le);
                out_printf(&o, " %llu\n", (unsigned long long)cum);
            }
            render_series_name(&o, f->name, "_sum", s->labels, NULL);
            fmt_double(num, sizeof num, u2d(atomic_load(&s->value)));
            out_printf(&o, " %s\n", num);
            render_series_name(&o, f->name, "_count", s->labels, NULL);
            /* _count equals the +Inf bucket: use the same cumulative sum so a
             * concurrent observe never makes them disagree in one scrape. */
            out_printf(&o, " %llu\n", (unsigned long long)cum);
        }
    }
    pthread_mutex_unlock(&m->lock);
    fmt_double(num, sizeof num, resident_bytes());
    out_printf(&o,
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %s\n",
               num);
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    return o.buf;
}

/* ---- HTTP ---- */

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned int status, const char *ctype, char *body,
                                 enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size, void **ptr)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)ptr;
    mdb_metrics_t *m = cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n",
                         MHD_RESPMEM_PERSISTENT);
    if (!strcmp(url, "/metrics")) {
        char *body = mdb_metrics_render(m);
        if (!body)
            return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n",
                             MHD_RESPMEM_PERSISTENT);
        return send_text(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, MHD_RESPMEM_MUST_FREE);
    }
    if (!strcmp(url, "/") || !strcmp(url, "/healthz"))
        return send_text(conn, MHD_HTTP_OK, "text/plain", "ok: metrics on /metrics\n", MHD_RESPMEM_PERSISTENT);
    return send_text(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n", MHD_RESPMEM_PERSISTENT);
}

bool mdb_metrics_serve(mdb_metrics_t *m, const char *bind_addr, int port, mdb_error_t *err)
{
    if (port == 0)
        return true;
    if (port < 0 || port > 65535) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "metrics port %d out of range", port);
        return false;
    }
    if (m->httpd) {
        mdb_error_set(err, MDB_ERR_SYSTEM, EALREADY, "metrics server already running");
        return false;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    const char *host = bind_addr && *bind_addr ? bind_addr : "127.0.0.1";
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL, "metrics bind address '%s' is not an IPv4 address", host);
        return false;
    }
    m->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, handle, m,
                                MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
                                (unsigned int)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (!m->httpd) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "cannot serve metrics on %s:%d: %s", host, port,
                      errno ? strerror(errno) : "libmicrohttpd failed to start");
        return false;
    }
    return true;
}
