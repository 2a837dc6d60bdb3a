/* respond.c: the helpers of api.h that handlers share: JSON and error
 * responses, query-argument getters, body parsing, path matching, token
 * checks and the context accessors. Nothing here blocks or talks to a
 * backend, so every handler can answer bad input before touching one. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_private.h"

int64_t api_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const mdb_config_t *api_ctx_config(const api_ctx_t *ctx)
{
    return ctx->cfg;
}

mdb_mongo_t *api_ctx_mongo(api_ctx_t *ctx)
{
    return ctx->mongo;
}

mdb_kafka_producer_t *api_ctx_producer(api_ctx_t *ctx)
{
    return ctx->producer;
}

mdb_metrics_t *api_ctx_metrics(api_ctx_t *ctx)
{
    return ctx->metrics;
}

/* Drop a stream the response held (its done runs now: it was never sent). */
static void drop_stream(api_response_t *res)
{
    if (res->stream_read && res->stream_done)
        res->stream_done(res->stream_cls);
    res->stream_read = NULL;
    res->stream_done = NULL;
    res->stream_cls = NULL;
    res->stream_size = 0;
}

static void set_body(api_response_t *res, int status, const char *ctype, char *body, size_t len)
{
    drop_stream(res);
    free(res->body);
    res->status = status;
    res->body = body;
    res->body_len = len;
    snprintf(res->content_type, sizeof res->content_type, "%s", ctype);
}

static void respond_oom(api_response_t *res)
{
    static const char msg[] = "{\"error\":\"out_of_memory\",\"detail\":\"the server is out of memory\"}";
    char *b = malloc(sizeof msg);
    if (b)
        memcpy(b, msg, sizeof msg);
    set_body(res, 500, "application/json", b, b ? sizeof msg - 1 : 0);
}

void api_respond_json_ct(api_response_t *res, int status, json_t *body, const char *ctype)
{
    char *text = json_dumps(body ? body : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(body);
    if (!text) {
        respond_oom(res);
        return;
    }
    set_body(res, status, ctype ? ctype : "application/json", text, strlen(text));
}

void api_respond_json(api_response_t *res, int status, json_t *body)
{
    api_respond_json_ct(res, status, body, NULL);
}

void api_respond_error(api_response_t *res, int status, const char *error, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* Details quote user input: keep the JSON valid even if it was not UTF-8. */
    json_t *d = json_string(detail);
    if (!d)
        d = json_string("(detail not representable)");
    api_respond_json(res, status, json_pack("{s:s, s:o}", "error", error, "detail", d));
}

void api_respond_mdb_error(api_response_t *res, const mdb_error_t *err)
{
    switch (err->domain) {
    case MDB_ERR_QUERY:
        if (err->code == 50) /* MaxTimeMSExpired */
            api_respond_error(res, 408, "query_timeout", "%s", err->message);
        else
            api_respond_error(res, 400, "bad_query", "%s", err->message);
        return;
    case MDB_ERR_NOTFOUND: api_respond_error(res, 404, "not_found", "%s", err->message); return;
    case MDB_ERR_SECURITY: api_respond_error(res, 403, "forbidden", "%s", err->message); return;
    case MDB_ERR_MONGO:
    case MDB_ERR_KAFKA: api_respond_error(res, 503, "backend_unavailable", "%s", err->message); return;
    case MDB_ERR_MSG:
    case MDB_ERR_CONFIG: api_respond_error(res, 400, "bad_request", "%s", err->message); return;
    default: api_respond_error(res, 500, "internal", "%s", err->message);
    }
}

void api_respond_bytes(api_response_t *res, int status, const char *ctype, const void *data, size_t len)
{
    char *b = malloc(len + 1);
    if (!b) {
        respond_oom(res);
        return;
    }
    if (len)
        memcpy(b, data, len);
    b[len] = '\0';
    set_body(res, status, ctype, b, len);
}

void api_respond_stream(api_response_t *res, int status, const char *ctype, int64_t size, api_stream_read_fn read,
                        api_stream_done_fn done, void *cls)
{
    set_body(res, status, ctype, NULL, 0);
    res->stream_read = read;
    res->stream_done = done;
    res->stream_cls = cls;
    res->stream_size = size < 0 ? -1 : size;
}

void api_response_header(api_response_t *res, const char *name, const char *value)
{
    if (res->nheaders >= API_MAX_HEADERS)
        return;
    snprintf(res->headers[res->nheaders].name, sizeof res->headers[0].name, "%s", name);
    snprintf(res->headers[res->nheaders].value, sizeof res->headers[0].value, "%s", value);
    res->nheaders++;
}

const char *api_arg(const api_request_t *req, const char *key)
{
    for (size_t i = 0; i < req->nargs; i++)
        if (!strcmp(req->args[i].key, key))
            return req->args[i].value;
    return NULL;
}

bool api_arg_int(const api_request_t *req, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
                 api_response_t *res)
{
    const char *v = api_arg(req, key);
    if (!v) {
        *out = def;
        return true;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || isspace((unsigned char)*v)) {
        api_respond_error(res, 400, "bad_parameter", "'%s' expects an integer, got '%.64s'", key, v);
        return false;
    }
    if (n < min || n > max) {
        api_respond_error(res, 400, "bad_parameter", "'%s' must be between %lld and %lld, got %lld", key,
                          (long long)min, (long long)max, n);
        return false;
    }
    *out = n;
    return true;
}

json_t *api_request_json(const api_request_t *req, api_response_t *res)
{
    /* Only application/json: a browser sends text/plain, form-encoded and
     * multipart bodies (or a body without a type) cross-site without asking
     * first; application/json needs a CORS preflight this server never grants. */
    const char *ct = req->content_type ? req->content_type : "";
    size_t n = strcspn(ct, "; \t");
    if (n != 16 || strncasecmp(ct, "application/json", 16) != 0) {
        api_respond_error(res, 415, "unsupported_media_type",
                          "request bodies must be sent with Content-Type: application/json, got '%.64s'",
                          req->content_type ? req->content_type : "(none)");
        return NULL;
    }
    if (req->body_len == 0) {
        api_respond_error(res, 400, "bad_json", "the request body is empty; expected a JSON object");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        api_respond_error(res, 400, "bad_json", "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
                          jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_respond_error(res, 400, "bad_json", "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

const char *api_path_after(const api_request_t *req, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(req->path, prefix, n) == 0 ? req->path + n : NULL;
}

/* Constant-time comparison so tokens cannot be guessed byte by byte. */
static bool token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
    return diff == 0 && la > 0;
}

static const char *bearer(const api_request_t *req)
{
    const char *h = req->authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static bool token_in(char **list, const char *tok)
{
    bool found = false;
    for (size_t i = 0; list && list[i]; i++)
        found |= token_equal(tok, list[i]);
    return found;
}

static void unauthorized(api_response_t *res, const char *detail)
{
    api_respond_error(res, 401, "unauthorized", "%s", detail);
    api_response_header(res, "WWW-Authenticate", "Bearer realm=\"metadb\"");
}

/* A client that sent api.auth_failures wrong tokens this minute gets 429 for
 * any token until the window ends, the right one included: guessing stays slow. */
static bool auth_blocked(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    int retry = api_limits_auth_blocked(ctx->limits, req->remote_addr ? req->remote_addr : "?");
    if (!retry)
        return false;
    char after[16];
    snprintf(after, sizeof after, "%d", retry);
    api_respond_error(res, 429, "too_many_auth_failures", "too many wrong tokens from this client; try again in %d s",
                      retry);
    api_response_header(res, "Retry-After", after);
    return true;
}

static void auth_failed(api_ctx_t *ctx, const api_request_t *req)
{
    api_limits_auth_failed(ctx->limits, req->remote_addr ? req->remote_addr : "?");
}

bool api_auth_read(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    if (!ctx->read_tokens || !ctx->read_tokens[0])
        return true;
    const char *tok = bearer(req);
    if (!tok) {
        unauthorized(res, "this server requires a read token: send 'Authorization: Bearer <token>'");
        return false;
    }
    if (auth_blocked(ctx, req, res))
        return false;
    if (token_in(ctx->read_tokens, tok) || token_in(ctx->tokens, tok))
        return true;
    auth_failed(ctx, req);
    unauthorized(res, "the token is not valid for reading");
    return false;
}

bool api_auth_write(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    if (!ctx->tokens || !ctx->tokens[0]) {
        api_respond_error(res, 403, "submission_disabled",
                          "job submission is disabled on this server (api.tokens is empty)");
        return false;
    }
    const char *tok = bearer(req);
    if (!tok) {
        unauthorized(res, "job submission requires a token: send 'Authorization: Bearer <token>'");
        return false;
    }
    if (auth_blocked(ctx, req, res))
        return false;
    if (token_in(ctx->tokens, tok))
        return true;
    auth_failed(ctx, req);
    api_respond_error(res, 403, "forbidden", "the token is not allowed to submit jobs");
    return false;
}

bool api_auth_has_token(api_ctx_t *ctx, const api_request_t *req)
{
    const char *tok = bearer(req);
    if (!tok || api_limits_auth_blocked(ctx->limits, req->remote_addr ? req->remote_addr : "?"))
        return false;
    if (token_in(ctx->read_tokens, tok) || token_in(ctx->tokens, tok))
        return true;
    auth_failed(ctx, req);
    return false;
}
