#!/usr/bin/python3
"""WADO-RS over every file of pydicom's test corpus (Debian python3-pydicom's
data/test_files: valid, odd and deliberately broken DICOM: truncated,
deflated, big endian, no meta header, bad VRs, 1-bit, 32-bit, float,
multi-frame, JPEG/J2K/RLE/JPEG-LS, ...).

Each file is catalogued as one instance (the catalogue's UIDs are the test's
own: WADO-RS serves the file at the path) and asked for retrieve,
metadata, frames/1, rendered and thumbnail. Every answer must be a success
or a 4xx with the API's JSON error body, never a 5xx or a dropped
connection; retrieve must hand back the file's exact bytes; the server must
still answer afterwards and exit cleanly (under MDB_SANITIZE=1 builds:
without a sanitizer report). Counts of each outcome are printed.
"""
import http.client
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wado_support as ws  # noqa: E402
from mdb_api_support import Api, Checker, mongo_db  # noqa: E402


def get(api, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, {}, repr(e).encode()
    finally:
        conn.close()


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-wado-corpus-")
    db_name = "t_wado_corpus_%d" % os.getpid()
    client = None
    try:
        arch = os.path.join(tmp, "archive")
        os.makedirs(arch)
        docs, files = [], []
        for i, name in enumerate(sorted(os.listdir(ws.PYDICOM_FILES))):
            src = os.path.join(ws.PYDICOM_FILES, name)
            if not os.path.isfile(src) or os.path.getsize(src) > 8 * 1024 * 1024:
                continue
            dst = os.path.join(arch, "%03d_%s" % (i, name))
            shutil.copy(src, dst)
            sop = ws.UID_ROOT + "7.%d" % (i + 1)
            files.append((name, sop, dst))
            docs.append({"_id": sop, "series_id": ws.UID_ROOT + "7.0", "study_id": ws.UID_ROOT + "7", "paths": [dst],
                         "instance_number": i, "dicom": {"transfer_syntax": ""}})
        client, db = mongo_db(db_name)
        db.instances.insert_many(docs)
        outcomes, bad = {}, []
        with Api(db_name, "--archive.roots=" + arch, "--api.thumbnail_dir=" + os.path.join(tmp, "cache")) as api:
            base = "/dicomweb/studies/%s/series/%s/instances/" % (ws.UID_ROOT + "7", ws.UID_ROOT + "7.0")
            for name, sop, path in files:
                with open(path, "rb") as fh:
                    content = fh.read()
                for suffix, headers in (("", {}), ("/metadata", {}), ("/frames/1", {}),
                                        ("/frames/1", {"Accept": 'multipart/related; type="application/octet-stream";'
                                                                 ' transfer-syntax=*'}),
                                        ("/rendered", {"Accept": "image/png"}), ("/thumbnail", {})):
                    status, hd, body = get(api, base + sop + suffix, headers)
                    key = "%s %s" % (suffix or "retrieve", status)
                    outcomes[key] = outcomes.get(key, 0) + 1
                    ok = status is not None and (status < 300 or (400 <= status < 500 and
                                                                  hd.get("content-type") == "application/json"))
                    if ok and status == 200 and suffix == "":
                        parts = ws.split_multipart(body, hd.get("content-type", ""))
                        ok = len(parts) == 1 and parts[0][1] == content
                    if not ok:
                        bad.append("%s%s -> %s %s" % (name, suffix, status, body[:200]))
            status, _, _ = get(api, "/healthz")
            ck.check(not bad, "%d files x 6 requests: every answer a success or a 4xx with a JSON error, retrieve "
                     "byte-exact" % len(files), "\n".join(bad[:20]))
            ck.check(status == 200, "the server still answers")
            rc = api.stop()
            ck.check(rc == 0 and "Sanitizer" not in api.logtext() and "runtime error" not in api.logtext(),
                     "metadb-api exits cleanly (no sanitizer report)", api.logtext()[-2000:])
        for k in sorted(outcomes):
            print("# %-22s %d" % (k, outcomes[k]))
    finally:
        if client:
            try:
                client.drop_database(db_name)
            finally:
                client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
