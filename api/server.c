/* server.c: the only file of metadb-api that knows libmicrohttpd. It binds
 * api.listen, collects each request (method, decoded path, query arguments,
 * a few headers, a body of at most API_MAX_BODY bytes) into an api_request_t,
 * hands it to the router and sends back the api_response_t. One thread per
 * connection: handlers block on MongoDB and Kafka, and a slow query must not
 * stall other clients. Every response carries conservative security headers;
 * every request is counted and timed in the metrics registry. */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "api_private.h"
#include "mdb_log.h"

struct api_server {
    struct MHD_Daemon *daemon;
    api_ctx_t *ctx;
    int port;
    mdb_metric_t *oversize;
};

/* Per-request state across the access handler's calls. */
typedef struct {
    char *body;
    size_t len, cap;
    bool too_large;
    int64_t start_ms;
} req_state_t;

typedef struct {
    api_arg_t *v;
    size_t n, cap;
    bool oom;
} args_t;

int64_t api_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    args_t *a = cls;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        if (cap > 4096) /* absurd numbers of arguments are ignored beyond this */
            return MHD_NO;
        api_arg_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            a->oom = true;
            return MHD_NO;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n].key = key ? key : "";
    a->v[a->n].value = value ? value : "";
    a->n++;
    return MHD_YES;
}

static void client_address(struct MHD_Connection *conn, char *buf, size_t size)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, size, "?");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf, (socklen_t)size);
}

/* Bounded label for metrics: the first two path segments of API routes. */
static void route_label(const char *path, char *buf, size_t size)
{
    static const char *const known[] = {"/api/studies", "/api/series", "/api/instances", "/api/query",
                                        "/api/fields",  "/api/jobs",   "/api/lag",       "/api/nl",
                                        "/dicomweb",    "/metrics",    "/healthz"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t n = strlen(known[i]);
        if (!strncmp(path, known[i], n) && (path[n] == '\0' || path[n] == '/')) {
            snprintf(buf, size, "%s%s", known[i], path[n] == '/' && path[n + 1] ? "/{id}" : "");
            return;
        }
    }
    snprintf(buf, size, "%s", !strncmp(path, "/api/", 5) ? "/api/other" : "static");
}

static void observe(api_ctx_t *ctx, const char *path, int status, double seconds)
{
    static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    char route[48], labels[128];
    route_label(path, route, sizeof route);
    snprintf(labels, sizeof labels, "route=\"%s\",code=\"%d\"", route, status);
    mdb_metric_inc(mdb_metrics_counter(ctx->metrics, "metadb_api_requests_total", "HTTP requests answered", labels),
                   1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    mdb_metric_observe(mdb_metrics_histogram(ctx->metrics, "metadb_api_request_duration_seconds",
                                             "time to answer an HTTP request", labels, bounds,
                                             sizeof bounds / sizeof bounds[0]),
                       seconds);
}

static enum MHD_Result send_response(struct MHD_Connection *conn, const char *path, api_response_t *res)
{
    if (res->status == 0)
        api_respond_error(res, 500, "internal", "the handler gave no answer");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(res->body_len, res->body ? res->body : (void *)"", MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (res->content_type[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    bool api = strncmp(path, "/api/", 5) == 0 || strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0;
    bool has_cache = false;
    for (size_t i = 0; i < res->nheaders; i++) {
        MHD_add_response_header(r, res->headers[i].name, res->headers[i].value);
        has_cache = has_cache || !strcasecmp(res->headers[i].name, "Cache-Control");
    }
    if (!has_cache)
        MHD_add_response_header(r, "Cache-Control", api ? "no-store" : "no-cache");
    if (!strncmp(res->content_type, "text/html", 9))
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned int)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    api_server_t *s = cls;
    req_state_t *st = *con_cls;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        st->start_ms = api_now_ms();
        *con_cls = st;
        /* Refuse an announced oversize body before reading it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > API_MAX_BODY)
            st->too_large = true;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->too_large || st->len + n > API_MAX_BODY) {
            st->too_large = true;
            return MHD_YES;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n + 1)
                cap *= 2;
            char *b = realloc(st->body, cap);
            if (!b)
                return MHD_NO;
            st->body = b;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        st->body[st->len] = '\0';
        return MHD_YES;
    }

    api_response_t res;
    memset(&res, 0, sizeof res);
    char addr[64];
    client_address(conn, addr, sizeof addr);
    if (st->too_large) {
        api_respond_error(&res, 413, "body_too_large", "request bodies are limited to %d bytes", API_MAX_BODY);
        mdb_metric_inc(s->oversize, 1);
    } else {
        args_t args = {0};
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, &args);
        api_request_t req = {
            .method = method,
            .path = url,
            .args = args.v,
            .nargs = args.n,
            .body = st->body ? st->body : "",
            .body_len = st->len,
            .content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
            .accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT),
            .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
            .remote_addr = addr,
        };
        if (args.oom)
            api_respond_error(&res, 503, "out_of_memory", "the server is out of memory");
        else if (st->len && memchr(st->body, '\0', st->len))
            api_respond_error(&res, 400, "bad_body", "the request body contains a NUL byte");
        else
            api_route(s->ctx, &req, &res);
        free(args.v);
    }
    double secs = (double)(api_now_ms() - st->start_ms) / 1000.0;
    observe(s->ctx, url, res.status ? res.status : 500, secs);
    if (res.status >= 500)
        MDB_LOG(MDB_LOG_WARN, "%s %s %s -> %d (%.1f ms)", addr, method, url, res.status, secs * 1000);
    else
        MDB_LOG(MDB_LOG_DEBUG, "%s %s %s -> %d (%.1f ms)", addr, method, url, res.status, secs * 1000);
    enum MHD_Result ret = send_response(conn, url, &res);
    free(res.body);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_state_t *st = *con_cls;
    if (st) {
        free(st->body);
        free(st);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    MDB_LOG(MDB_LOG_WARN, "http: %s", buf);
}

/* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:0", ":8080" (= 127.0.0.1). */
static bool parse_listen(const char *listen, struct sockaddr_storage *ss, bool *v6, mdb_error_t *err)
{
    char host[128];
    const char *port_s;
    memset(ss, 0, sizeof *ss);
    *v6 = false;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (!end || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(end - listen - 1), listen + 1);
        port_s = end + 2;
        *v6 = true;
    } else {
        const char *colon = strrchr(listen, ':');
        if (!colon || (size_t)(colon - listen) >= sizeof host)
            goto bad;
        snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
        if (!host[0])
            snprintf(host, sizeof host, "127.0.0.1");
        port_s = colon + 1;
    }
    char *end;
    errno = 0;
    long port = strtol(port_s, &end, 10);
    if (errno || *end || !*port_s || port < 0 || port > 65535)
        goto bad;
    if (*v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            goto bad;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            goto bad;
    }
    return true;
bad:
    mdb_error_set(err, MDB_ERR_CONFIG, EINVAL,
                  "api.listen '%s' is not ADDRESS:PORT (e.g. 127.0.0.1:8080 or [::1]:8080)", listen);
    return false;
}

api_server_t *api_server_start(api_ctx_t *ctx, const char *listen, mdb_error_t *err)
{
    struct sockaddr_storage ss;
    bool v6;
    if (!parse_listen(listen ? listen : "", &ss, &v6, err))
        return NULL;
    api_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    s->ctx = ctx;
    s->oversize = mdb_metrics_counter(ctx->metrics, "metadb_api_oversize_bodies_total",
                                      "requests refused because the body was too large", "");
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                         MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
                                 on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)256,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)60, MHD_OPTION_END);
    if (!s->daemon) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "cannot listen on %s: %s", listen,
                      errno ? strerror(errno) : "libmicrohttpd refused to start");
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : 0;
    return s;
}

int api_server_port(const api_server_t *s)
{
    return s ? s->port : 0;
}

void api_server_stop(api_server_t *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    free(s);
}
