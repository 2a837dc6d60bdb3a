"""DICOMweb test helpers: a private Orthanc with Debian's DICOMweb plugin
(orthanc-dicomweb) serving /dicom-web/, and a small HTTP front that stands
between a client and that Orthanc to play the parts a real deployment has:
a gateway that checks a bearer token, a RetrieveURL pointing to another host,
a server that is busy (503), one that cuts its answers short, one that
answers something that is not DICOMweb. Everything it forwards is logged."""

import http.client
import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from orthanc_support import OrthancServer, free_port  # noqa: E402

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
SRC = os.environ.get("MDB_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build")
PROBE_BIN = os.path.join(BUILD, "tests", "dicomweb_probe")


class DicomWebOrthanc(OrthancServer):
    """Orthanc with the DICOMweb plugin at /dicom-web/ (no DICOM port)."""

    def __init__(self, workdir, name="metadb-dicomweb", extra_config=None):
        cfg = {"DicomServerEnabled": False, "Plugins": [DICOMWEB_PLUGIN],
               "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
        cfg.update(extra_config or {})
        super().__init__(workdir, name, cfg)
        st, _ = self.request("GET", "/dicom-web/studies?limit=1")
        if st not in (200, 204):
            self.stop()
            raise RuntimeError("Orthanc's DICOMweb plugin does not answer (HTTP %d)" % st)

    @property
    def dicomweb_url(self):
        return "http://127.0.0.1:%d/dicom-web" % self.port

    def instance_files(self):
        """SOP Instance UID -> bytes of Orthanc's /instances/{id}/file, for every instance it holds."""
        st, data = self.request("GET", "/instances?expand")
        if st != 200:
            raise RuntimeError("Orthanc /instances: %d" % st)
        out = {}
        for inst in json.loads(data):
            st, blob = self.request("GET", "/instances/%s/file" % inst["ID"])
            if st != 200:
                raise RuntimeError("Orthanc /instances/%s/file: %d" % (inst["ID"], st))
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = blob
        return out


class Front:
    """An HTTP front on a free loopback port forwarding GETs to an Orthanc.

    mode: "forward" (default), "busy" (503 to everything), "truncate" (WADO-RS
    answers cut in the middle, without Content-Length, then the connection
    closed), "html" (200 text/html to everything), "lose_study" (the last
    item of every study-level QIDO instance list left out), "lose_all" (the
    same for series-level instance lists too).
    page_cap: when set, QIDO "limit=N" is forwarded as limit=page_cap (a
    server whose pages are smaller than asked).
    tls: (certfile, keyfile) to serve https instead of http.
    token: when set, requests without "Authorization: Bearer <token>" get 401.
    rewrite: (old, new) replaced in JSON answers (to point RetrieveURLs elsewhere).
    log: list of (path, authorization header or None) of every request."""

    def __init__(self, orthanc_port, token=None, rewrite=None, page_cap=None, tls=None):
        self.orthanc_port = orthanc_port
        self.scheme = "https" if tls else "http"
        self.page_cap = page_cap
        self.token = token
        self.rewrite = rewrite
        self.mode = "forward"
        self.log = []
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                front.handle(self)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.port = free_port()
        self.server = Server(("127.0.0.1", self.port), Handler)
        if tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d/dicom-web" % (self.scheme, self.port)

    def handle(self, h):
        auth = h.headers.get("Authorization")
        self.log.append((h.path, auth))
        if self.token is not None and auth != "Bearer " + self.token:
            return self.reply(h, 401, "text/plain", b"bad or missing token")
        if self.mode == "busy":
            return self.reply(h, 503, "text/plain", b"busy, come back later", {"Retry-After": "1"})
        if self.mode == "html":
            return self.reply(h, 200, "text/html", b"<html><body>login page</body></html>")
        path = h.path
        if self.page_cap:
            path = re.sub(r"limit=\d+", "limit=%d" % self.page_cap, path)
        conn = http.client.HTTPConnection("127.0.0.1", self.orthanc_port, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() in ("accept",)}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        ctype = r.getheader("Content-Type") or "application/octet-stream"
        conn.close()
        route = path.split("?")[0]
        if (self.mode == "lose_all" or (self.mode == "lose_study" and "/series/" not in route)) and \
                route.endswith("/instances") and "json" in ctype:
            items = json.loads(body)
            body = json.dumps(items[:-1]).encode()
        if self.rewrite and "json" in ctype:
            body = body.replace(self.rewrite[0].encode(), self.rewrite[1].encode())
        if self.mode == "truncate" and ctype.startswith("multipart/"):
            h.send_response(r.status)
            h.send_header("Content-Type", ctype)
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        self.reply(h, r.status, ctype, body)

    @staticmethod
    def reply(h, status, ctype, body, extra=None):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def probe(url, *args, opts=(), timeout=120):
    """Run dicomweb_probe; (exit code, list of JSON objects printed)."""
    r = subprocess.run([PROBE_BIN, *opts, url, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    out = [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]
    if r.stderr:
        sys.stderr.write(r.stderr.decode())
    return r.returncode, out


def landed(outdir):
    """SOP UID -> bytes of the files the probe's sink renamed into outdir."""
    return {f[:-4]: open(os.path.join(outdir, f), "rb").read() for f in os.listdir(outdir) if f.endswith(".dcm")}


def leftovers(outdir):
    """Files in outdir that are not landed instances (spool files left behind)."""
    return [f for f in os.listdir(outdir) if not f.endswith(".dcm")]
