/* api.h: the contract between metadb-api's HTTP server (api/server.c, which
 * owns libmicrohttpd) and its route handlers (api/routes_*.c, and the
 * natural-language and DICOMweb handlers in api/nl.c and api/qido.c).
 *
 * A handler never sees libmicrohttpd: the server collects one request (method,
 * decoded path, query arguments, selected headers, body) into an
 * api_request_t, calls the router, and sends whatever the handler left in the
 * api_response_t. Handlers are called from several server threads at once;
 * everything reachable from api_ctx_t is thread-safe (the Mongo pool, the
 * Kafka producer, the metrics registry) or read-only (the configuration).
 *
 * Errors: every 4xx/5xx body is {"error": "<short code>", "detail": "<human
 * sentence>"} (api_respond_error). Bad input is a 4xx, never a 500. */
#ifndef METADB_API_H
#define METADB_API_H

#include <jansson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mdb_config.h"
#include "mdb_error.h"
#include "mdb_kafka.h"
#include "mdb_metrics.h"
#include "mdb_mongo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The process-wide server context (opaque; use the accessors below). */
typedef struct api_ctx api_ctx_t;

/* One query-string argument, URL-decoded. A key given twice appears twice,
 * in request order. value is "" for "?flag" without '='. */
typedef struct {
    const char *key;
    const char *value;
} api_arg_t;

/* One HTTP request as handlers see it. Every pointer is owned by the server
 * and valid for the duration of the handler call only. */
typedef struct {
    const char *method;    /* "GET", "POST", "HEAD", ... */
    const char *path;      /* URL path without the query string, e.g. "/api/studies/1.2.3" */
    const api_arg_t *args; /* query arguments, nargs of them */
    size_t nargs;
    const char *body; /* request body (NUL-terminated for convenience), "" if none */
    size_t body_len;
    const char *content_type;  /* Content-Type header or NULL */
    const char *accept;        /* Accept header or NULL */
    const char *authorization; /* Authorization header or NULL */
    const char *remote_addr;   /* textual client address: logs, per-client limits */
} api_request_t;

#define API_MAX_HEADERS 8

/* A streamed body (exports, WADO-RS): see api_respond_stream. read fills at
 * most max bytes of buf and returns how many (> 0), 0 at the end of the
 * body, or -1 to abort (the connection is closed mid-body). done is called
 * exactly once: after the last read, when the client went away, or when the
 * response is replaced before it was sent. */
typedef ssize_t (*api_stream_read_fn)(void *cls, char *buf, size_t max);
typedef void (*api_stream_done_fn)(void *cls);

/* What the handler answers. Start state (set by the server): status 0, no
 * body. Use the api_respond_* helpers: each replaces any earlier body. */
typedef struct {
    int status;
    char *body; /* malloc'd, owned by the response; freed by the server */
    size_t body_len;
    api_stream_read_fn stream_read; /* non-NULL: the body is streamed instead */
    api_stream_done_fn stream_done;
    void *stream_cls;
    int64_t stream_size; /* -1: unknown (chunked transfer encoding) */
    char content_type[96];
    struct {
        char name[48];
        char value[256];
    } headers[API_MAX_HEADERS];
    size_t nheaders;
} api_response_t;

/* ---- context accessors (never NULL once the server runs, except where noted) ---- */
const mdb_config_t *api_ctx_config(const api_ctx_t *ctx);
/* The read pool: api.mongo_uri when set (a read-only user), else mongo.uri. */
mdb_mongo_t *api_ctx_mongo(api_ctx_t *ctx);
/* The job producer; NULL when Kafka could not be set up (job submission then answers 503). */
mdb_kafka_producer_t *api_ctx_producer(api_ctx_t *ctx);
mdb_metrics_t *api_ctx_metrics(api_ctx_t *ctx);

/* ---- responses ---- */
/* Serialize body (reference stolen, may be NULL → "null") as compact JSON with
 * Content-Type application/json (or ctype when non-NULL, e.g.
 * "application/dicom+json"). On OOM answers a bare 500. */
void api_respond_json(api_response_t *res, int status, json_t *body);
void api_respond_json_ct(api_response_t *res, int status, json_t *body, const char *ctype);
/* {"error": error, "detail": <printf>} with the given status. */
void api_respond_error(api_response_t *res, int status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Map an mdb_error_t onto a response: QUERY → 400 bad_query, NOTFOUND → 404,
 * SECURITY → 403, MONGO/KAFKA → 503 backend_unavailable (or 400 when the
 * server refused the query itself), anything else → 500 internal. */
void api_respond_mdb_error(api_response_t *res, const mdb_error_t *err);
/* Copy bytes as the body with the given content type. */
void api_respond_bytes(api_response_t *res, int status, const char *ctype, const void *data, size_t len);
/* Stream the body: the server calls read(cls, ...) from the connection's
 * own thread (it may block on a cursor or a file) until it returns 0, then
 * done(cls). size is the exact body length or -1 (chunked). Decide the
 * status before streaming: once bytes are out, a failure can only abort the
 * connection (read returns -1), so check what can fail (the query, the
 * file's existence) in the handler and answer an ordinary error instead.
 * The request's database slot (api.query_concurrency) stays taken until
 * done, so a stream holding a cursor counts as a running query. A later
 * api_respond_* call on the same response calls done and replaces it. */
void api_respond_stream(api_response_t *res, int status, const char *ctype, int64_t size, api_stream_read_fn read,
                        api_stream_done_fn done, void *cls);
/* Add a response header (silently ignored beyond API_MAX_HEADERS). */
void api_response_header(api_response_t *res, const char *name, const char *value);

/* ---- request helpers ---- */
/* First value of query argument key, or NULL. */
const char *api_arg(const api_request_t *req, const char *key);
/* Integer argument in [min, max]; def when absent. false (res filled with
 * 400 bad_parameter naming the argument) when not an integer or out of range. */
bool api_arg_int(const api_request_t *req, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
                 api_response_t *res);
/* Parse the body as a JSON object. NULL (res filled: 400 bad_json with line
 * and column, or 415 unless the Content-Type is application/json: a browser
 * sends other types, or none, cross-site without a preflight) on failure.
 * Caller decrefs. */
json_t *api_request_json(const api_request_t *req, api_response_t *res);
/* If path starts with prefix, return the rest (may be ""), else NULL. */
const char *api_path_after(const api_request_t *req, const char *prefix);

/* ---- auth ---- */
/* Reads: true when api.read_tokens is empty or the request carries
 * "Authorization: Bearer <one of them>" (job tokens are accepted too).
 * Writes (job submission): a token of api.tokens is required; when
 * api.tokens is empty, submission is disabled (403). On false res is filled
 * (401 with WWW-Authenticate, or 403). */
bool api_auth_read(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);
bool api_auth_write(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);

/* ---- routing hooks for optional handlers ----
 * Defined (strongly) by api/nl.c and api/qido.c when they are part of the
 * build. The router calls api_route_nl for every path under /api/nl and
 * api_route_qido for every path under /dicomweb/, after the read-token check.
 * Return true when the request was answered (res filled, any status); false
 * means "no such resource" and the router answers 404. When a hook is not
 * linked the router answers 501 not_implemented. */
bool api_route_nl(api_ctx_t *ctx, const api_request_t *req, api_response_t *res) __attribute__((weak));
bool api_route_qido(api_ctx_t *ctx, const api_request_t *req, api_response_t *res) __attribute__((weak));

/* ---- the router (api/router.c) ---- */
/* Dispatch one request to its handler. Always leaves a response in res. */
void api_route(api_ctx_t *ctx, const api_request_t *req, api_response_t *res);

#ifdef __cplusplus
}
#endif
#endif
