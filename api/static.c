/* static.c: the dashboard's files from api.web_dir. Only regular files whose
 * canonical path lies inside the canonical web root are served: "..",
 * symlinks leading out, NUL bytes and dot-files are refused, and a directory
 * is never listed ("/" serves index.html). Files are opened non-blocking and
 * checked with fstat before anything is read: a FIFO or device planted in
 * the folder answers 404 at once instead of pinning a thread forever. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_private.h"

#define MAX_STATIC_BYTES (16 * 1024 * 1024)

static const char *mime_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".mjs", "text/javascript; charset=utf-8"},
                 {".json", "application/json"},
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

void api_h_static(api_ctx_t *ctx, const api_request_t *req, api_response_t *res)
{
    const char *p = req->path;
    char rel[PATH_MAX], full[PATH_MAX * 2], real[PATH_MAX];
    if (!ctx->web_root[0]) {
        api_respond_error(res, 404, "no_dashboard", "the dashboard folder (api.web_dir) does not exist");
        return;
    }
    if (!strcmp(p, "/") || !strcmp(p, "/index.html"))
        p = "/index.html";
    if (strlen(p) >= sizeof rel || strstr(p, "/.") || strstr(p, "..") || strchr(p, '\\') || strstr(p, "//")) {
        not_found(res, req->path);
        return;
    }
    snprintf(rel, sizeof rel, "%s", p);
    snprintf(full, sizeof full, "%s%s", ctx->web_root, rel);
    if (!realpath(full, real)) {
        not_found(res, req->path);
        return;
    }
    size_t rl = strlen(ctx->web_root);
    if (strncmp(real, ctx->web_root, rl) != 0 || real[rl] != '/') {
        api_respond_error(res, 403, "forbidden", "%.200s is outside the dashboard folder", req->path);
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
    char *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!buf || got != (size_t)st.st_size) {
        free(buf);
        api_respond_error(res, 503, "read_failed", "cannot read %.200s", req->path);
        return;
    }
    api_respond_bytes(res, 200, mime_type(real), buf, got);
    free(buf);
}
