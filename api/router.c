/* router.c: maps (method, path) to a handler. Read routes pass the read-token
 * check first; job submission checks the write token in its handler. Paths
 * under /api/nl and /dicomweb/ go to the optional handlers through weak hooks.
 * Anything unknown under /api/ is a JSON 404; a known path with the wrong
 * method is a 405 with an Allow header; everything else is a static file. */
#include <string.h>

#include "api_private.h"

static bool is_get(const api_request_t *req)
{
    return !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
}

static void method_not_allowed(api_response_t *res, const api_request_t *req, const char *allow)
{
    api_respond_error(res, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)", req->method, req->path,
                      allow);
    api_response_header(res, "Allow", allow);
}

/* An identifier in a path: 1..128 characters of [0-9A-Za-z._-]. */
static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    return strspn(s, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-") == n;
}

/* /api/<level> and /api/<level>/<uid> */
static bool route_level(api_ctx_t *ctx, const api_request_t *req, api_response_t *res, const char *prefix, int level)
{
    const char *rest = api_path_after(req, prefix);
    if (!rest || (rest[0] != '\0' && rest[0] != '/'))
        return false;
    if (!is_get(req)) {
        method_not_allowed(res, req, "GET, HEAD");
        return true;
    }
    if (!api_auth_read(ctx, req, res))
        return true;
    if (rest[0] == '\0' || !strcmp(rest, "/")) {
        api_h_list(ctx, req, res, level);
        return true;
    }
    const char *uid = rest + 1;
    if (!valid_id(uid)) {
        if (strchr(uid, '/'))
            api_respond_error(res, 404, "not_found", "no such resource: %.200s", req->path);
        else
            api_respond_error(res, 400, "bad_uid", "'%.80s' is not a valid UID (digits and dots, at most 128)", uid);
        return true;
    }
    api_h_get_one(ctx, req, res, level, uid);
    return true;
}

static bool route_jobs(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *rest = api_path_after(req, "/api/jobs");
    if (!rest || (rest[0] != '\0' && rest[0] != '/'))
        return false;
    if (rest[0] == '\0' || !strcmp(rest, "/")) {
        if (!strcmp(req->method, "POST")) {
            api_h_jobs_submit(ctx, req, res);
        } else if (is_get(req)) {
            if (api_auth_read(ctx, req, res))
                api_h_jobs_list(ctx, req, res);
        } else {
            method_not_allowed(res, req, "GET, HEAD, POST");
        }
        return true;
    }
    if (!is_get(req)) {
        method_not_allowed(res, req, "GET, HEAD");
        return true;
    }
    if (!api_auth_read(ctx, req, res))
        return true;
    const char *id = rest + 1;
    if (!valid_id(id)) {
        api_respond_error(res, 400, "bad_job_id", "'%.80s' is not a valid job id", id);
        return true;
    }
    api_h_job_get(ctx, req, res, id);
    return true;
}

/* Exact path with a single allowed method set. */
static bool route_exact(const api_request_t *req, api_response_t *res, const char *path, bool post)
{
    if (strcmp(req->path, path) != 0)
        return false;
    if (post ? strcmp(req->method, "POST") != 0 : !is_get(req)) {
        method_not_allowed(res, req, post ? "POST" : "GET, HEAD");
        return false;
    }
    return true;
}

static bool under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/');
}

void api_route(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *p = req->path;
    if (!p || p[0] != '/') {
        api_respond_error(res, 400, "bad_path", "the request path must start with '/'");
        return;
    }
    if (!strcmp(p, "/healthz")) {
        if (route_exact(req, res, "/healthz", false))
            api_h_health(ctx, req, res);
        return;
    }
    if (!strcmp(p, "/metrics")) {
        if (route_exact(req, res, "/metrics", false))
            api_h_metrics(ctx, req, res);
        return;
    }
    if (under(p, "/api/nl") || under(p, "/dicomweb")) {
        bool nl = under(p, "/api/nl");
        if (!api_auth_read(ctx, req, res))
            return;
        bool (*hook)(api_ctx_t *, const api_request_t *, api_response_t *) = nl ? api_route_nl : api_route_qido;
        if (!hook) {
            api_respond_error(res, 501, "not_implemented", "%s is not part of this build",
                              nl ? "natural-language search" : "DICOMweb");
            return;
        }
        if (!hook(ctx, req, res) || res->status == 0)
            api_respond_error(res, 404, "not_found", "no such resource: %.200s", p);
        return;
    }
    if (!strncmp(p, "/api/", 5) || !strcmp(p, "/api")) {
        if (route_level(ctx, req, res, "/api/studies", 0) || route_level(ctx, req, res, "/api/series", 1) ||
            route_level(ctx, req, res, "/api/instances", 2) || route_jobs(ctx, req, res))
            return;
        if (!strcmp(p, "/api/query")) {
            if (route_exact(req, res, p, true) && api_auth_read(ctx, req, res))
                api_h_query(ctx, req, res);
            return;
        }
        if (!strcmp(p, "/api/export/manifest") || !strcmp(p, "/api/export/sidecar") ||
            !strcmp(p, "/api/export/manifest.json")) {
            if (route_exact(req, res, p, false) && api_auth_read(ctx, req, res)) {
                if (!strcmp(p, "/api/export/manifest"))
                    api_h_export_manifest(ctx, req, res);
                else
                    api_h_export_sidecar(ctx, req, res);
            }
            return;
        }
        if (!strcmp(p, "/api/fields")) {
            if (route_exact(req, res, p, false) && api_auth_read(ctx, req, res))
                api_h_fields(ctx, req, res);
            return;
        }
        if (!strcmp(p, "/api/facets")) {
            if (route_exact(req, res, p, false) && api_auth_read(ctx, req, res))
                api_h_facets(ctx, req, res);
            return;
        }
        if (!strcmp(p, "/api/lag")) {
            if (route_exact(req, res, p, false) && api_auth_read(ctx, req, res))
                api_h_lag(ctx, req, res);
            return;
        }
        api_respond_error(res, 404, "not_found", "no such API resource: %.200s", p);
        return;
    }
    if (!is_get(req)) {
        method_not_allowed(res, req, "GET, HEAD");
        return;
    }
    if (!strcmp(p, "/viewer")) {
        api_response_header(res, "Location", "/viewer/");
        api_respond_error(res, 301, "moved", "the viewer is at /viewer/");
        return;
    }
    if (under(p, "/viewer")) {
        api_h_viewer(ctx, req, res);
        return;
    }
    api_h_static(ctx, req, res);
}
