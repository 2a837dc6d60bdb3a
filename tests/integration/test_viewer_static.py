#!/usr/bin/python3
"""metadb-api's /viewer/ (api.viewer_dir, api/static.c): the OHIF build's
files served from a folder of this test's own making, with the dashboard
folder's safety rules and the single-page app's routes.

- files come back byte for byte with their type (a 20 MB file too: bodies
  are streamed), HEAD gives the length;
- a path without an extension that is not a file is an OHIF route and gets
  index.html; a missing file with an extension is 404;
- "..", dot-files, a symlink out of the folder, a FIFO and a directory are
  refused at once and the server keeps answering;
- /viewer redirects to /viewer/; pages under /viewer/ carry their own
  Content-Security-Policy, the dashboard keeps its strict one;
- without the folder, /viewer/ answers 404 no_viewer.
No database is needed for any of it (static files)."""
import hashlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import Api, Checker  # noqa: E402

c = Checker()
DB = "t_viewer_static_%d" % os.getpid()


def raw(api, method, path, timeout=10):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
    conn.request(method, path)
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, data


def stop_clean(api, what):
    """SIGTERM; exit 0 and no sanitizer report (ASan/UBSan builds) in its log."""
    rc = api.stop()
    log = api.logtext()
    c.check(rc == 0 and "Sanitizer" not in log and "runtime error" not in log,
            "metadb-api (%s) exits 0 with a clean log (rc %s)" % (what, rc), log[-1500:])
    api.__exit__(None, None, None)


def main():
    tmp = tempfile.mkdtemp(prefix="mdb_viewer_")
    try:
        root = os.path.join(tmp, "viewer")
        os.makedirs(os.path.join(root, "assets"))
        index = b"<!doctype html><html><head><script src=\"/viewer/app-config.js\"></script></head><body>ohif</body></html>"
        with open(os.path.join(root, "index.html"), "wb") as f:
            f.write(index)
        with open(os.path.join(root, "app-config.js"), "wb") as f:
            f.write(b"window.config = {};\n")
        big = os.urandom(20 * 1024 * 1024)
        with open(os.path.join(root, "app.bundle.js"), "wb") as f:
            f.write(big)
        with open(os.path.join(root, "chunk.0123456789abcdef.js"), "wb") as f:
            f.write(b"/* hashed */\n")
        with open(os.path.join(root, "codec.wasm"), "wb") as f:
            f.write(b"\0asm\1\0\0\0")
        with open(os.path.join(root, ".metadb-ready"), "w") as f:
            f.write("")
        secret = os.path.join(tmp, "secret.txt")
        with open(secret, "w") as f:
            f.write("TOP-SECRET-CONTENT")
        os.symlink(secret, os.path.join(root, "leak.js"))
        os.mkfifo(os.path.join(root, "pipe.js"))
        os.makedirs(os.path.join(root, "dir.js"))

        api = Api(DB, "--api.viewer_dir=" + root)
        try:
            st, h, body = raw(api, "GET", "/viewer/")
            c.check(st == 200 and body == index and h.get("content-type", "").startswith("text/html"),
                    "/viewer/ serves the build's index.html", (st, h, body[:100]))
            csp = h.get("content-security-policy", "")
            c.check("'wasm-unsafe-eval'" in csp and "worker-src 'self' blob:" in csp and "'unsafe-eval'" not in csp
                    and "frame-ancestors 'none'" in csp and "script-src 'self' 'wasm-unsafe-eval' blob:;" in csp,
                    "/viewer/ pages get the viewer's CSP (WebAssembly, blob: workers; no eval, no inline scripts)", csp)
            st, h, _ = raw(api, "GET", "/")
            dash = h.get("content-security-policy", "")
            c.check(st == 200 and "script-src 'self';" in dash and "wasm" not in dash and "img-src 'self' data: blob:" in dash,
                    "the dashboard keeps its strict CSP (blob: images only)", dash)
            st, h, body = raw(api, "GET", "/viewer/viewer?StudyInstanceUIDs=1.2.3")
            c.check(st == 200 and body == index, "an OHIF route (/viewer/viewer?...) gets index.html", (st, body[:80]))
            st, h, body = raw(api, "GET", "/viewer/segmentation/deep/route")
            c.check(st == 200 and body == index, "a nested route without an extension gets index.html too", st)
            t0 = time.time()
            st, h, body = raw(api, "GET", "/viewer/app.bundle.js", timeout=60)
            c.check(st == 200 and hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
                    and h.get("content-type", "").startswith("text/javascript") and h.get("content-length") == str(len(big)),
                    "a 20 MB bundle comes back byte for byte, streamed (%.2f s)" % (time.time() - t0), (st, h))
            st, h, body = raw(api, "HEAD", "/viewer/app.bundle.js")
            c.check(st == 200 and h.get("content-length") == str(len(big)) and body == b"", "HEAD gives the length", (st, h))
            st, h, body = raw(api, "GET", "/viewer/codec.wasm")
            c.check(st == 200 and h.get("content-type") == "application/wasm" and body.startswith(b"\0asm"),
                    "WebAssembly is served as application/wasm (streaming compilation)", (st, h))
            st, h, _ = raw(api, "GET", "/viewer/chunk.0123456789abcdef.js")
            st2, h2, _ = raw(api, "GET", "/viewer/app-config.js")
            st3, h3, _ = raw(api, "GET", "/viewer/viewer")
            c.check(st == 200 and h.get("cache-control") == "public, max-age=31536000, immutable"
                    and h2.get("cache-control") == "no-cache" and h3.get("cache-control") == "no-cache",
                    "content-hashed build files may be cached for good; app-config.js and pages revalidate",
                    (h.get("cache-control"), h2.get("cache-control"), h3.get("cache-control")))
            st, h, body = raw(api, "GET", "/viewer")
            c.check(st == 301 and h.get("location") == "/viewer/", "/viewer redirects to /viewer/", (st, h))
            for path, what in (("/viewer/missing.js", "a missing file with an extension"),
                               ("/viewer/.metadb-ready", "a dot-file"),
                               ("/viewer/../viewer/index.html", "a path with .."),
                               ("/viewer/assets/../../secret.txt", "a path climbing out"),
                               ("/viewer/leak.js", "a symlink out of the folder"),
                               ("/viewer/pipe.js", "a FIFO"),
                               ("/viewer/dir.js", "a directory"),
                               ("/viewer//index.html", "an empty segment")):
                t0 = time.time()
                try:
                    st, h, body = raw(api, "GET", path, timeout=5)
                except OSError as e:
                    st, body = None, repr(e).encode()
                c.check(st in (403, 404) and b"TOP-SECRET" not in body and b'"error"' in body,
                        "%s is refused at once (%s in %.2f s)" % (what, st, time.time() - t0), body[:200])
            st, _, body = raw(api, "POST", "/viewer/index.html")
            c.check(st == 405, "POST under /viewer/ is refused (405)", (st, body[:120]))
            st, _, body = raw(api, "GET", "/viewer/app-config.js")
            c.check(st == 200 and body == b"window.config = {};\n", "the server still answers after the refusals", st)
        finally:
            stop_clean(api, "viewer folder")

        api = Api(DB, "--api.viewer_dir=" + os.path.join(tmp, "nowhere"))
        try:
            st, _, body = raw(api, "GET", "/viewer/")
            c.check(st == 404 and b"no_viewer" in body, "without the folder /viewer/ answers 404 no_viewer", body[:200])
            c.check("OHIF viewer folder" in api.logtext(), "and the log says where it looked", api.logtext()[-400:])
        finally:
            stop_clean(api, "no viewer folder")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
