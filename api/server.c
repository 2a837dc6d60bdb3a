/* server.c: the only file of metadb-api that knows libmicrohttpd. It binds
 * api.listen, collects each request (method, decoded path, query arguments,
 * a few headers, a body of at most API_MAX_BODY bytes) into an api_request_t,
 * hands it to the router and sends back the api_response_t. One thread per
 * connection: handlers block on MongoDB and Kafka, and a slow query must not
 * stall other clients. Every response carries conservative security headers;
 * every request is counted and timed in the metrics registry.
 *
 * What a hostile client or web page meets before any handler runs:
 *   - the raw request line is inspected as soon as it arrives (the URI log
 *     callback, before libmicrohttpd decodes it): an encoded NUL (%00), a URI
 *     over API_MAX_URI or more than API_MAX_PARAMS parameters is answered
 *     with the JSON error once the headers are in, never silently truncated;
 *   - a Host header outside the allow-list (api.allowed_hosts; by default the
 *     listen address and the loopback names) gets 421: a page on another
 *     origin cannot reach the API through DNS rebinding (/healthz and
 *     /metrics, which carry no patient data, answer any Host);
 *   - an announced body over API_DISCARD_BODY (or over API_MAX_BODY with
 *     "Expect: 100-continue") gets 413 before it is read; a body that is
 *     only a little too large is read and thrown away first, so that clients
 *     that write before they read get the 413 and not a reset;
 *   - per address: api.max_connections_per_ip connections,
 *     api.client_concurrency requests in flight; over all clients,
 *     api.query_concurrency database queries in flight, so one connection of
 *     the pool always stays free for /healthz;
 *   - api.connection_timeout_s bounds idle connections and slow headers and
 *     bodies.
 * libmicrohttpd answers a few malformed requests itself (a request line or
 * headers that do not fit its per-connection memory, an unsupported HTTP
 * version, syntax errors) with its own HTML body: version 0.9.75 has no hook
 * to change it. The memory limit is set far above the limits enforced here,
 * so every request of a size a client could mean gets the JSON error. */
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
#include "limits.h"
#include "mdb_log.h"

/* Longest request URI, most query parameters, largest sum of header lines. */
#define API_MAX_URI 32768
#define API_MAX_PARAMS 256
#define API_MAX_HEADER_BYTES 16384
/* Most bytes of an oversize body read and thrown away to deliver the 413. */
#define API_DISCARD_BODY (8 * 1024 * 1024)
/* libmicrohttpd's memory per connection (read buffer, parsed headers and
 * arguments): far above the limits above so that it never has to refuse a
 * request itself (its refusals are HTML; default 32 KiB). */
#define MHD_POOL_BYTES (256 * 1024)
/* How long a request waits for its client's slot, and for a database slot. */
#define CLIENT_WAIT_MS 1000
#define DB_WAIT_MS 2000

struct api_server {
    struct MHD_Daemon *daemon;
    api_ctx_t *ctx;
    int port;
    int64_t timeout_ms;
    mdb_metric_t *oversize;
    mdb_metric_t *refused;
    char **hosts;     /* allowed Host names (NULL-terminated); an entry without a port matches any port */
    bool any_host;    /* api.allowed_hosts has "*" */
    bool ip_literals; /* listening on a wildcard address: any IP-literal Host is fine (no DNS, no rebinding) */
};

/* What the request line already showed to be refused (see on_uri). */
typedef enum { EARLY_NONE = 0, EARLY_NUL, EARLY_URI_LONG, EARLY_PARAMS } early_t;

/* Per-request state across the access handler's calls; made by on_uri. */
typedef struct {
    char *body;
    size_t len, cap;
    size_t discarded; /* bytes of an oversize chunked body thrown away */
    bool too_large;
    bool headers_seen; /* the access handler ran once */
    early_t early;
    int64_t start_ms;
} req_state_t;

typedef struct {
    api_arg_t *v;
    size_t n, cap;
    bool oom;
} args_t;

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
                                        "/api/facets",  "/dicomweb",   "/metrics",       "/healthz"};
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
    mdb_metric_inc(mdb_metrics_counter(ctx->metrics, "metadb_api_requests_total", "HTTP requests answered", labels), 1);
    snprintf(labels, sizeof labels, "route=\"%s\"", route);
    mdb_metric_observe(mdb_metrics_histogram(ctx->metrics, "metadb_api_request_duration_seconds",
                                             "time to answer an HTTP request", labels, bounds,
                                             sizeof bounds / sizeof bounds[0]),
                       seconds);
}

static bool under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/');
}

/* The dashboard's files; everything else is API (and may carry patient data). */
static bool is_static(const char *path)
{
    return !under(path, "/api") && !under(path, "/dicomweb") && strcmp(path, "/metrics") != 0 &&
           strcmp(path, "/healthz") != 0;
}

/* The limit slots a request holds after its handler returned. */
typedef struct {
    bool db, client;
    char addr[64];
} limit_slots_t;

static void release_slots(api_server_t *s, const limit_slots_t *slots)
{
    if (!slots)
        return;
    if (slots->db)
        api_limits_db_leave(s->ctx->limits);
    if (slots->client)
        api_limits_client_leave(s->ctx->limits, slots->addr);
}

/* A streamed body on its way out, with the request's limit slots it holds
 * until the last byte (or the client going away). */
typedef struct {
    api_server_t *s;
    api_stream_read_fn read;
    api_stream_done_fn done;
    void *cls;
    bool db;     /* holds a database slot */
    bool client; /* holds a client slot of addr */
    char addr[64];
} stream_t;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_t *st = cls;
    ssize_t n = st->read(st->cls, buf, max);
    if (n > 0)
        return n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
    stream_t *st = cls;
    if (st->done)
        st->done(st->cls);
    if (st->db)
        api_limits_db_leave(st->s->ctx->limits);
    if (st->client)
        api_limits_client_leave(st->s->ctx->limits, st->addr);
    free(st);
}

/* slots: what route_limited left taken for a streamed response (handed to
 * the stream, released when it ends). */
static enum MHD_Result send_response(api_server_t *s, struct MHD_Connection *conn, const char *path,
                                     api_response_t *res, const limit_slots_t *slots)
{
    if (res->status == 0)
        api_respond_error(res, 500, "internal", "the handler gave no answer");
    struct MHD_Response *r;
    if (res->stream_read) {
        stream_t *st = calloc(1, sizeof *st);
        if (!st) {
            api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
            release_slots(s, slots);
            return send_response(s, conn, path, res, NULL);
        }
        *st = (stream_t){.s = s, .read = res->stream_read, .done = res->stream_done, .cls = res->stream_cls};
        if (slots) {
            st->db = slots->db;
            st->client = slots->client;
            snprintf(st->addr, sizeof st->addr, "%s", slots->addr);
        }
        res->stream_read = NULL; /* the stream owns them now */
        res->stream_done = NULL;
        r = MHD_create_response_from_callback(res->stream_size < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)res->stream_size,
                                              64 * 1024, stream_read, st, stream_free);
        if (!r) {
            stream_free(st);
            return MHD_NO;
        }
    } else {
        release_slots(s, slots);
        r = MHD_create_response_from_buffer(res->body_len, res->body ? res->body : (void *)"", MHD_RESPMEM_MUST_COPY);
    }
    if (!r)
        return MHD_NO;
    if (res->content_type[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->content_type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    bool api = !is_static(path) || res->status >= 400;
    bool has_cache = false;
    for (size_t i = 0; i < res->nheaders; i++) {
        MHD_add_response_header(r, res->headers[i].name, res->headers[i].value);
        has_cache = has_cache || !strcasecmp(res->headers[i].name, "Cache-Control");
    }
    if (!has_cache)
        MHD_add_response_header(r, "Cache-Control", api ? "no-store" : "no-cache");
    /* The dashboard draws fetched images (sent with its token) as blob: URLs.
     * The OHIF build under /viewer/ needs more: WebAssembly for its codecs,
     * blob: workers and scripts, inline styles, data: fonts; that relaxed
     * policy applies to /viewer/ alone (its inline scripts were moved to a
     * file by deploy/install.sh, so still no 'unsafe-inline' scripts). */
    if (!strncmp(res->content_type, "text/html", 9) && !strncmp(path, "/viewer/", 8))
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self' 'wasm-unsafe-eval' blob:; "
                                "worker-src 'self' blob:; font-src 'self' data:; connect-src 'self' data: blob:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
    else if (!strncmp(res->content_type, "text/html", 9))
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'self'");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned int)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Called by libmicrohttpd with the raw request URI (not yet decoded) as soon
 * as the request line is in; what it returns becomes the request's state.
 * Decoding would turn %00 into a terminator, silently shortening a path or a
 * value, so an encoded NUL is noticed here. A URI that is too long or has
 * too many parameters is noticed here too, and its query string blanked in
 * libmicrohttpd's buffer: parsing thousands of arguments would exhaust the
 * connection's memory and the connection would be closed with no answer;
 * blanked, the request reaches on_request, which answers the JSON error.
 * A raw NUL byte in the request line (never sent by a browser, which encodes
 * it) is not visible here: libmicrohttpd hands over a C string. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)cls;
    (void)conn;
    req_state_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->start_ms = api_now_ms();
    size_t n = strlen(uri), params = 0;
    const char *q = strchr(uri, '?');
    for (const char *p = q; p && *p; p++)
        params += *p == '&';
    if (q && q[1])
        params++;
    for (const char *p = uri; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == '0' && p[2] == '0') {
            st->early = EARLY_NUL;
            break;
        }
    bool too_long = n > API_MAX_URI, too_many = params > API_MAX_PARAMS;
    if (!st->early)
        st->early = too_long ? EARLY_URI_LONG : too_many ? EARLY_PARAMS : EARLY_NONE;
    /* libmicrohttpd's own, writable line buffer; it splits the arguments out
     * of it after this callback (test_api_hardening's 5000-parameter probe
     * notices a version that no longer does) */
    if ((too_long || too_many) && q)
        memset((char *)q, '\0', strlen(q));
    return st;
}

/* "host" or "host:port" or "[v6]" or "[v6]:port": the host part into buf. */
static bool host_part(const char *host, char *buf, size_t size, const char **port)
{
    const char *end;
    *port = NULL;
    if (host[0] == '[') {
        end = strchr(host, ']');
        if (!end)
            return false;
        end++;
    } else {
        end = strchr(host, ':');
        if (!end)
            end = host + strlen(host);
    }
    if ((size_t)(end - host) >= size)
        return false;
    snprintf(buf, size, "%.*s", (int)(end - host), host);
    if (*end == ':')
        *port = end + 1;
    else if (*end)
        return false;
    return true;
}

static bool is_ip_literal(const char *h)
{
    unsigned char addr[16];
    char v6[64];
    size_t n = strlen(h);
    if (n > 2 && h[0] == '[' && h[n - 1] == ']' && n - 2 < sizeof v6) {
        snprintf(v6, sizeof v6, "%.*s", (int)(n - 2), h + 1);
        return inet_pton(AF_INET6, v6, addr) == 1;
    }
    return inet_pton(AF_INET, h, addr) == 1;
}

/* The Host header against the allow-list. A request without one (HTTP/1.0)
 * did not come from a browser, which always sends it. */
static bool host_allowed(const api_server_t *s, const char *host)
{
    char name[256];
    const char *port;
    if (!host || s->any_host)
        return true;
    if (!host_part(host, name, sizeof name, &port) || (port && (!*port || strspn(port, "0123456789") != strlen(port))))
        return false;
    for (size_t i = 0; s->hosts && s->hosts[i]; i++) {
        const char *e = s->hosts[i], *eport;
        char ename[256];
        if (!host_part(e, ename, sizeof ename, &eport) || strcasecmp(ename, name) != 0)
            continue;
        if (!eport || (port && !strcmp(eport, port)))
            return true;
    }
    return s->ip_literals && is_ip_literal(name);
}

/* Sum of the header lines, to answer 431 from our own limit. */
static enum MHD_Result add_header_len(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    size_t *sum = cls;
    *sum += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* The refusals decided from the request line and headers alone, before any
 * body is read. true when res was filled. */
static bool refuse_early(api_server_t *s, struct MHD_Connection *conn, const char *url, req_state_t *st,
                         api_response_t *res)
{
    size_t hbytes = 0;
    switch (st->early) {
    case EARLY_NUL:
        api_respond_error(res, 400, "bad_request", "the request URI contains an encoded NUL byte (%%00)");
        return true;
    case EARLY_URI_LONG:
        api_respond_error(res, 414, "uri_too_long", "request URIs are limited to %d bytes", API_MAX_URI);
        return true;
    case EARLY_PARAMS:
        api_respond_error(res, 400, "too_many_parameters", "at most %d query parameters per request", API_MAX_PARAMS);
        return true;
    case EARLY_NONE: break;
    }
    MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_len, &hbytes);
    if (hbytes > API_MAX_HEADER_BYTES) {
        api_respond_error(res, 431, "headers_too_large", "request headers are limited to %d bytes",
                          API_MAX_HEADER_BYTES);
        return true;
    }
    if (api_now_ms() - st->start_ms > s->timeout_ms) {
        api_respond_error(res, 408, "request_timeout", "the request headers took longer than %lld s",
                          (long long)(s->timeout_ms / 1000));
        return true;
    }
    /* /healthz and /metrics carry no patient data and are asked for by probes
     * and scrapers under whatever name the cluster gives the service. */
    const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    bool infra = !strcmp(url, "/healthz") || !strcmp(url, "/metrics");
    if (!infra && !host_allowed(s, host)) {
        api_respond_error(res, 421, "misdirected_request",
                          "this server does not answer for host '%.100s' (api.allowed_hosts)", host);
        return true;
    }
    /* An announced oversize body is refused before it is read when the client
     * waits for "100 Continue" or when the body is huge. A smaller one is read
     * and thrown away first: a client that writes its whole body before it
     * reads (most libraries) would otherwise meet a reset, not the 413. */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    unsigned long long announced = cl ? strtoull(cl, NULL, 10) : 0;
    if (announced > API_MAX_BODY) {
        if (announced <= API_DISCARD_BODY && !(expect && !strcasecmp(expect, "100-continue"))) {
            st->too_large = true;
            return false;
        }
        api_respond_error(res, 413, "body_too_large", "request bodies are limited to %d bytes", API_MAX_BODY);
        mdb_metric_inc(s->oversize, 1);
        return true;
    }
    return false;
}

/* Take a body chunk: keep it, or count it away once the body is too large.
 * false closes the connection (a body that keeps coming far past the limit,
 * or that trickles in slower than the timeout allows). */
static bool take_body(api_server_t *s, req_state_t *st, const char *data, size_t n)
{
    if (api_now_ms() - st->start_ms > s->timeout_ms)
        return false;
    if (st->too_large || st->len + n > API_MAX_BODY) {
        st->too_large = true;
        st->discarded += n;
        return st->discarded <= API_DISCARD_BODY;
    }
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 4096;
        while (cap < st->len + n + 1)
            cap *= 2;
        char *b = realloc(st->body, cap);
        if (!b)
            return false;
        st->body = b;
        st->cap = cap;
    }
    memcpy(st->body + st->len, data, n);
    st->len += n;
    st->body[st->len] = '\0';
    return true;
}

/* API requests take one of the client's slots; those that read the catalogue
 * also take a database slot (not /api/lag, which asks Kafka, nor job
 * submission, which only produces). Static files, /healthz and /metrics take
 * neither: the health check must answer while queries queue. The slots taken
 * are left in *slots: released by send_response, or by the end of a stream. */
static void route_limited(api_server_t *s, const api_request_t *req, api_response_t *res, limit_slots_t *slots)
{
    api_ctx_t *ctx = s->ctx;
    const char *p = req->path;
    memset(slots, 0, sizeof *slots);
    if (is_static(p) || !strcmp(p, "/healthz") || !strcmp(p, "/metrics")) {
        api_route(ctx, req, res);
        return;
    }
    bool db = strcmp(p, "/api/lag") != 0 && !(!strcmp(req->method, "POST") && under(p, "/api/jobs"));
    if (!api_limits_client_enter(ctx->limits, req->remote_addr, CLIENT_WAIT_MS)) {
        api_respond_error(res, 429, "too_many_requests",
                          "this client already has %lld requests in flight (api.client_concurrency)",
                          (long long)mdb_config_get_int(ctx->cfg, "api.client_concurrency"));
        api_response_header(res, "Retry-After", "1");
        mdb_metric_inc(s->refused, 1);
        return;
    }
    slots->client = true;
    snprintf(slots->addr, sizeof slots->addr, "%s", req->remote_addr);
    if (db && !api_limits_db_enter(ctx->limits, DB_WAIT_MS)) {
        api_respond_error(res, 503, "busy", "every database connection for queries is busy; try again shortly");
        api_response_header(res, "Retry-After", "1");
        mdb_metric_inc(s->refused, 1);
        return;
    }
    slots->db = db;
    api_route(ctx, req, res);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    api_server_t *s = cls;
    req_state_t *st = *con_cls;
    api_response_t res;
    memset(&res, 0, sizeof res);
    limit_slots_t slots = {0};
    char addr[64];
    client_address(conn, addr, sizeof addr);
    if (!st) { /* on_uri could not allocate */
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        st->start_ms = api_now_ms();
        *con_cls = st;
    }
    if (!st->headers_seen) {
        st->headers_seen = true;
        if (!refuse_early(s, conn, url, st, &res))
            return MHD_YES; /* go on reading the body, if any */
        /* answered before the body: libmicrohttpd then closes the connection */
    } else if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return take_body(s, st, upload_data, n) ? MHD_YES : MHD_NO;
    } else if (st->too_large) {
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
            route_limited(s, &req, &res, &slots);
        free(args.v);
    }
    double secs = (double)(api_now_ms() - st->start_ms) / 1000.0;
    observe(s->ctx, url, res.status ? res.status : 500, secs);
    if (res.status >= 500)
        MDB_LOG(MDB_LOG_WARN, "%s %s %s -> %d (%.1f ms)", addr, method, url, res.status, secs * 1000);
    else
        MDB_LOG(MDB_LOG_DEBUG, "%s %s %s -> %d (%.1f ms)", addr, method, url, res.status, secs * 1000);
    enum MHD_Result ret = send_response(s, conn, url, &res, &slots);
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

/* The Host allow-list: api.allowed_hosts plus the listen address and the
 * loopback names (each with any port). On a wildcard listen address any
 * IP-literal Host is accepted as well: DNS rebinding needs a name. */
static bool build_hosts(api_server_t *s, const char *listen, mdb_error_t *err)
{
    char **extra = mdb_config_get_list(s->ctx->cfg, "api.allowed_hosts", NULL);
    size_t n = 0;
    while (extra && extra[n])
        n++;
    s->hosts = calloc(n + 5, sizeof *s->hosts);
    if (!s->hosts) {
        mdb_config_strv_free(extra);
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return false;
    }
    size_t k = 0;
    static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < 3; i++)
        s->hosts[k++] = strdup(loopback[i]);
    char host[160];
    const char *port;
    if (host_part(listen, host, sizeof host, &port) && host[0]) {
        s->ip_literals = !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]") || !strcmp(host, "[0:0:0:0:0:0:0:0]");
        s->hosts[k++] = strdup(host);
    }
    for (size_t i = 0; i < n; i++) {
        s->any_host = s->any_host || !strcmp(extra[i], "*");
        s->hosts[k++] = extra[i];
        extra[i] = NULL;
    }
    free(extra);
    for (size_t i = 0; i < k; i++)
        if (!s->hosts[i]) {
            mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
            return false;
        }
    return true;
}

static void free_hosts(char **hosts)
{
    for (size_t i = 0; hosts && hosts[i]; i++)
        free(hosts[i]);
    free(hosts);
}

api_server_t *api_server_start(api_ctx_t *ctx, const char *listen, mdb_error_t *err)
{
    struct sockaddr_storage ss;
    bool v6;
    if (!parse_listen(listen ? listen : "", &ss, &v6, err))
        return NULL;
    int64_t per_ip = mdb_config_get_int(ctx->cfg, "api.max_connections_per_ip");
    int64_t timeout_s = mdb_config_get_int(ctx->cfg, "api.connection_timeout_s");
    if (per_ip < 1 || per_ip > 100000 || timeout_s < 1 || timeout_s > 86400) {
        mdb_error_set(err, MDB_ERR_CONFIG, EINVAL,
                      "api.max_connections_per_ip must be 1..100000 and api.connection_timeout_s 1..86400");
        return NULL;
    }
    api_server_t *s = calloc(1, sizeof *s);
    if (!s) {
        mdb_error_set(err, MDB_ERR_SYSTEM, ENOMEM, "out of memory");
        return NULL;
    }
    s->ctx = ctx;
    s->timeout_ms = timeout_s * 1000;
    if (!build_hosts(s, listen, err)) {
        free_hosts(s->hosts);
        free(s);
        return NULL;
    }
    s->oversize = mdb_metrics_counter(ctx->metrics, "metadb_api_oversize_bodies_total",
                                      "requests refused because the body was too large", "");
    s->refused = mdb_metrics_counter(ctx->metrics, "metadb_api_throttled_total",
                                     "requests refused by api.client_concurrency or api.query_concurrency", "");
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                         MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
                                 NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT,
                                 (unsigned int)256, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)per_ip,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)timeout_s,
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_POOL_BYTES, MHD_OPTION_END);
    if (!s->daemon) {
        mdb_error_set(err, MDB_ERR_SYSTEM, errno, "cannot listen on %s: %s", listen,
                      errno ? strerror(errno) : "libmicrohttpd refused to start");
        free_hosts(s->hosts);
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
    free_hosts(s->hosts);
    free(s);
}
