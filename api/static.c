/* static.c: the dashboard's files from api.web_dir, and the OHIF viewer's
 * build from api.viewer_dir under /viewer/. Only regular files whose
 * canonical path lies inside the canonical root are served: "..", symlinks
 * leading out, NUL bytes and dot-files are refused, and a directory is never
 * listed ("/" serves index.html). Files are opened non-blocking and checked
 * with fstat before anything is read: a FIFO or device planted in the folder
 * answers 404 at once instead of pinning a thread forever. The body is
 * streamed from the open file (the viewer's bundles are tens of MB). Under
 * /viewer/ a path whose last segment has no extension is one of the single-
 * page app's routes (/viewer/viewer?StudyInstanceUIDs=...) and gets its
 * index.html. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_private.h"

#define MAX_STATIC_BYTES ((off_t)256 * 1024 * 1024)

static const char *mime_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".mjs", "text/javascript; charset=utf-8"},
                 {".json", "application/json"},
                 {".wasm", "application/wasm"},
                 {".map", "application/json"},
                 {".jpg", "image/jpeg"},
                 {".woff", "font/woff"},
                 {".ttf", "font/ttf"},
                 {".xml", "application/xml"},
                 {".svg", "image/svg+xml"},
                 {".png", "image/png"},
                 {".ico", "image/x-icon"},
                 {".txt", "text/plain; charset=utf-8"},
                 {".woff2", "font/woff2"}};
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcasecmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

static void not_found(api_response_t *res, const char *path)
{
    api_respond_error(res, 404, "not_found", "no such file: %.200s", path);
}

typedef struct {
    int fd;
} file_stream_t;

static ssize_t file_read(void *cls, char *buf, size_t max)
{
    file_stream_t *f = cls;
    for (;;) {
        ssize_t n = read(f->fd, buf, max);
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -1 : n;
    }
}

static void file_done(void *cls)
{
    file_stream_t *f = cls;
    close(f->fd);
    free(f);
}

/* rel: the path below root, starting with '/'. spa: a missing extension-less
 * path serves root/index.html. */
static void serve_file(const char *root, const char *what, const char *rel, bool spa, const api_request_t *req,
                       api_response_t *res)
{
    char full[PATH_MAX * 2], real[PATH_MAX];
    if (strlen(rel) >= PATH_MAX || strstr(rel, "/.") || strstr(rel, "..") || strchr(rel, '\\') || strstr(rel, "//")) {
        not_found(res, req->path);
        return;
    }
    snprintf(full, sizeof full, "%s%s", root, rel);
    if (!realpath(full, real)) {
        const char *last = strrchr(rel, '/');
        if (spa && errno == ENOENT && last && !strchr(last, '.')) {
            serve_file(root, what, "/index.html", false, req, res);
            return;
        }
        not_found(res, req->path);
        return;
    }
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || real[rl] != '/') {
        api_respond_error(res, 403, "forbidden", "%.200s is outside the %s folder", req->path, what);
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_STATIC_BYTES) {
        if (fd >= 0)
            close(fd);
        not_found(res, req->path);
        return;
    }
    file_stream_t *f = malloc(sizeof *f);
    if (!f) {
        close(fd);
        api_respond_error(res, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    f->fd = fd;
    api_respond_stream(res, 200, mime_type(real), (int64_t)st.st_size, file_read, file_done, f);
}

void api_h_static(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *p = req->path;
    if (!ctx->web_root[0]) {
        api_respond_error(res, 404, "no_dashboard", "the dashboard folder (api.web_dir) does not exist");
        return;
    }
    if (!strcmp(p, "/"))
        p = "/index.html";
    serve_file(ctx->web_root, "dashboard", p, false, req, res);
}

/* A build file whose name carries its content hash ("app.bundle.0f6159c501addfe9.js",
 * "5130ccb17e3f3f5b.wasm"): a dot-separated run of at least 16 hex digits
 * before the extension. Its content never changes under that name. */
static bool content_hashed(const char *path)
{
    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    const char *ext = strrchr(name, '.');
    if (!ext || ext == name)
        return false;
    const char *start = ext;
    while (start > name && start[-1] != '.')
        start--;
    size_t n = (size_t)(ext - start);
    return n >= 16 && strspn(start, "0123456789abcdef") >= n;
}

void api_h_viewer(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *p = req->path + strlen("/viewer");
    if (!ctx->viewer_root[0]) {
        api_respond_error(res, 404, "no_viewer",
                          "the OHIF viewer is not installed (api.viewer_dir; deploy/install.sh installs it)");
        return;
    }
    if (!strcmp(p, "/"))
        p = "/index.html";
    serve_file(ctx->viewer_root, "viewer", p, true, req, res);
    /* hashed build files may be kept by the browser (its compiled-code cache
     * then makes the next opening faster); the rest revalidates (no-cache) */
    if (res->status == 200 && content_hashed(p))
        api_response_header(res, "Cache-Control", "public, max-age=31536000, immutable");
}
