#!/usr/bin/python3
"""WADO-RS file safety and the rendered-image cache (api/wado.c, api/thumbcache.c).

Path safety (the worker's rules, through mdb_archive): catalogue entries whose
file lies outside archive.roots, is a symlink out of them, is reached through
'..', is a FIFO, or was replaced by a directory answer 403 with a JSON error on
every resource (retrieve, metadata, rendered, thumbnail, frames); nothing is
read (the bytes waiting in the FIFO are all still there afterwards); a file
deleted since indexing answers 404 file_missing and is counted in
metadb_api_wado_file_errors_total{reason="missing"}; a series with one file
gone is retrieved without it (Warning header); the server keeps answering.

Cache: a second thumbnail request is a hit (X-Metadb-Cache and the
metadb_api_wado_cache_total metric); the cache survives a restart of
metadb-api; touching the archive file (new mtime) invalidates the entry; with
api.thumbnail_cache_mb=1 the folder never holds more than 1 MiB while
recently used entries survive eviction and the oldest go (LRU by access time);
api.thumbnail_cacheable=true turns thumbnails (only) cacheable for browsers.
"""
import http.client
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wado_support as ws  # noqa: E402
from mdb_api_support import Api, Checker, mongo_db  # noqa: E402


def raw_get(api, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hd, data


def metric(api, name, labels):
    status, _, text = raw_get(api, "/metrics")
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), text.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def folder_bytes(path):
    total = 0
    for d, _, names in os.walk(path):
        total += sum(os.path.getsize(os.path.join(d, n)) for n in names)
    return total


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-wado-safety-")
    db_name = "t_wado_safety_%d" % os.getpid()
    client = None
    fifo_fd = None
    try:
        arch = os.path.join(tmp, "archive")
        files = [f for f in ws.build_archive(arch) if f["kind"] in ("CT", "MR", "MR RLE", "MR JPEG 2000")]
        ct = next(f for f in files if f["kind"] == "CT")
        outside = os.path.join(tmp, "outside")
        os.makedirs(outside)
        out_file = os.path.join(outside, "ct.dcm")
        shutil.copy(ct["path"], out_file)
        bad = []

        def entry(name, path, number):
            f = dict(ct, sop=ws.UID_ROOT + "9.%d" % number, series=ws.UID_ROOT + "9.0", number=number, path=path,
                     kind=name)
            bad.append(f)
            return f
        entry("outside the roots", out_file, 1)
        os.symlink(out_file, os.path.join(arch, "link.dcm"))
        entry("a symlink out", os.path.join(arch, "link.dcm"), 2)
        entry("a '..' path", os.path.join(arch, "..", "outside", "ct.dcm"), 3)
        fifo = os.path.join(arch, "fifo.dcm")
        os.mkfifo(fifo)
        fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer with bytes waiting
        os.write(fifo_fd, b"DICM" * 64)
        entry("a FIFO", fifo, 4)
        as_dir = os.path.join(arch, "replaced.dcm")
        shutil.copy(ct["path"], as_dir)
        entry("a file replaced by a directory", as_dir, 5)
        gone = os.path.join(arch, "gone.dcm")
        shutil.copy(ct["path"], gone)
        gone_entry = entry("a deleted file", gone, 6)

        # damaged files: served as they are by retrieve, refused (422) by the decoders before GDCM sees them
        cut = os.path.join(arch, "cut.dcm")
        with open(ct["path"], "rb") as fh:
            whole = fh.read()
        with open(cut, "wb") as fh:
            fh.write(whole[:len(whole) - 5000])
        text = os.path.join(arch, "notes.dcm")
        with open(text, "w") as fh:
            fh.write("not a DICOM file\n" * 100)
        damaged = [dict(ct, sop=ws.UID_ROOT + "8.1", series=ws.UID_ROOT + "8.0", number=1, path=cut, kind="cut"),
                   dict(ct, sop=ws.UID_ROOT + "8.2", series=ws.UID_ROOT + "8.0", number=2, path=text, kind="text")]
        client, db = mongo_db(db_name)
        docs = [ws.instance_doc(f) for f in files + bad + damaged]
        db.instances.insert_many(docs)
        os.unlink(as_dir)
        os.mkdir(as_dir)
        os.unlink(gone)
        cache = os.path.join(tmp, "cache")
        args = ["--archive.roots=" + arch, "--api.thumbnail_dir=" + cache]
        with Api(db_name, *args) as api:
            for f in bad:
                base = "/dicomweb/studies/%s/series/%s/instances/%s" % (f["study"], f["series"], f["sop"])
                want = 404 if f is gone_entry else 403
                answers = []
                for suffix in ("", "/metadata", "/rendered", "/thumbnail", "/frames/1"):
                    status, hd, body = api.request("GET", base + suffix)
                    answers.append((suffix, status, isinstance(body, dict) and body.get("error")))
                ck.check(all(s == want and e for _, s, e in answers),
                         "%s: %d with a JSON error on retrieve, metadata, rendered, thumbnail, frames" % (f["kind"], want),
                         str(answers))
            left = os.read(fifo_fd, 4096)
            ck.check(left == b"DICM" * 64, "nothing was read from the FIFO (all 256 bytes still waiting)",
                     "%d bytes left" % len(left))
            missing = metric(api, "metadb_api_wado_file_errors_total", 'reason="missing"')
            ck.check(missing >= 5, "deleted file counted in metadb_api_wado_file_errors_total{reason=\"missing\"}",
                     str(missing))
            status, hd, body = api.request("GET", "/dicomweb/studies/%s/series/%s/instances/%s/rendered" %
                                           (gone_entry["study"], gone_entry["series"], gone_entry["sop"]))
            ck.check(status == 404 and body.get("error") == "file_missing" and "moved or deleted" in body.get("detail", ""),
                     "deleted file: 404 file_missing with the reason", str(body))
            ck.check(metric(api, "metadb_api_wado_file_errors_total", 'reason="missing"') == missing + 1,
                     "each refusal counts once in the metric")
            # the bad series: the good parts of it are served, the rest left out with a warning
            db.instances.insert_one(ws.instance_doc(dict(ct, sop=ws.UID_ROOT + "9.99", series=ws.UID_ROOT + "9.0",
                                                         number=99)))
            status, hd, raw = raw_get(api, "/dicomweb/studies/%s/series/%s" % (ct["study"], ws.UID_ROOT + "9.0"))
            parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
            with open(ct["path"], "rb") as fh:
                ct_bytes = fh.read()
            ck.check(status == 200 and len(parts) == 1 and parts[0][1] == ct_bytes and
                     "6 of 7 instances could not be read" in hd.get("warning", ""),
                     "series retrieve with refused/missing files: the readable one, and a Warning", "%s %s" %
                     (status, hd.get("warning")))
            for f, why in ((damaged[0], "ends inside its Pixel Data"), (damaged[1], "")):
                base = "/dicomweb/studies/%s/series/%s/instances/%s" % (f["study"], f["series"], f["sop"])
                answers = [api.request("GET", base + x)[:3:2] for x in ("/rendered", "/thumbnail", "/frames/1")]
                st_raw, _, raw = raw_get(api, base)
                parts = ws.split_multipart(raw, _.get("content-type", "")) if st_raw == 200 else []
                with open(f["path"], "rb") as fh:
                    ok_raw = len(parts) == 1 and parts[0][1] == fh.read()
                ck.check(all(s == 422 and why in b.get("detail", "") for s, b in answers) and ok_raw,
                         "%s file: rendered/thumbnail/frames 422 with the reason, retrieve serves its bytes as they are" %
                         ("a truncated" if f is damaged[0] else "a non-DICOM"), str(answers))
            status, _, _ = api.request("GET", "/healthz")
            st2, hd, raw = raw_get(api, "/dicomweb/studies/%s/series/%s/instances/%s/rendered" %
                                   (ct["study"], ct["series"], ct["sop"]), {"Accept": "image/png"})
            ck.check(status == 200 and st2 == 200 and raw[:4] == b"\x89PNG", "the server keeps answering")

            # ---- cache
            thumb = "/dicomweb/studies/%s/series/%s/instances/%s/thumbnail" % (ct["study"], ct["series"], ct["sop"])
            s1, h1, b1 = raw_get(api, thumb)
            s2, h2, b2 = raw_get(api, thumb)
            ck.check(s1 == 200 and s2 == 200 and h1.get("x-metadb-cache") == "miss" and
                     h2.get("x-metadb-cache") == "hit" and b1 == b2 and h2.get("cache-control") == "no-store",
                     "second thumbnail request is served from the cache (same bytes, no-store)", "%s %s" % (h1, h2))
            ck.check(metric(api, "metadb_api_wado_cache_total", 'result="hit"') >= 1,
                     "metadb_api_wado_cache_total{result=\"hit\"} counts it")
            rc = api.stop()
            ck.check(rc == 0 and "Sanitizer" not in api.logtext(), "metadb-api exits cleanly", api.logtext()[-1500:])
        with Api(db_name, *args) as api:
            s3, h3, b3 = raw_get(api, thumb)
            ck.check(s3 == 200 and h3.get("x-metadb-cache") == "hit" and b3 == b1,
                     "the cache survives a restart of metadb-api", str(h3))
            st = os.stat(ct["path"])
            os.utime(ct["path"], ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
            s4, h4, b4 = raw_get(api, thumb)
            s5, h5, b5 = raw_get(api, thumb)
            ck.check(h4.get("x-metadb-cache") == "miss" and h5.get("x-metadb-cache") == "hit",
                     "a changed file (mtime) invalidates its cached thumbnail", "%s %s" % (h4, h5))
            api.stop()
        small = os.path.join(tmp, "cache-small")
        with Api(db_name, "--archive.roots=" + arch, "--api.thumbnail_dir=" + small, "--api.thumbnail_cache_mb=1",
                 "--api.thumbnail_cacheable=true") as api:
            rend = "/dicomweb/studies/%s/series/%s/instances/%s/rendered" % (ct["study"], ct["series"], ct["sop"])
            keep = rend + "?window=0,1000,linear&accept=image/png"
            sizes, max_bytes = [], 0
            raw_get(api, keep)
            first_other = rend + "?window=1,500,linear&accept=image/png"
            for i in range(1, 240):
                status, hd, body = raw_get(api, rend + "?window=%d,500,linear&accept=image/png" % i)
                sizes.append(len(body))
                max_bytes = max(max_bytes, folder_bytes(small))
                if i % 10 == 0:
                    raw_get(api, keep)  # a hit: refreshes its access time
            written = sum(sizes)
            _, hk, _ = raw_get(api, keep)
            _, hf, _ = raw_get(api, first_other)
            ck.check(written > 1.5 * 1024 * 1024 and max_bytes <= 1024 * 1024,
                     "size cap: %d KiB rendered, the folder never held more than 1 MiB (max %d KiB)" %
                     (written // 1024, max_bytes // 1024))
            ck.check(hk.get("x-metadb-cache") == "hit" and hf.get("x-metadb-cache") == "miss",
                     "LRU by access time: a recently used entry survives eviction, the oldest unused one is gone",
                     "%s %s" % (hk.get("x-metadb-cache"), hf.get("x-metadb-cache")))
            _, ht, _ = raw_get(api, thumb)
            _, hr, _ = raw_get(api, rend)
            se, he, _ = raw_get(api, "/dicomweb/studies/%s/series/%s/instances/%s/thumbnail" %
                                (gone_entry["study"], gone_entry["series"], gone_entry["sop"]))
            ck.check(ht.get("cache-control") == "private, max-age=86400" and hr.get("cache-control") == "no-store" and
                     se == 404 and he.get("cache-control") == "no-store",
                     "api.thumbnail_cacheable: thumbnails cacheable by the browser; rendered images and a thumbnail's "
                     "error still no-store", "%s / %s / %s %s" % (ht.get("cache-control"), hr.get("cache-control"), se,
                                                                  he.get("cache-control")))
    finally:
        if fifo_fd is not None:
            os.close(fifo_fd)
        if client:
            try:
                client.drop_database(db_name)
            finally:
                client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
