#!/usr/bin/python3
"""The fetcher's DICOMweb client (fetcher/source_dicomweb.c, through
tests/dicomweb_probe) against metadb-api's own DICOMweb server (api/qido.c,
api/wado.c): two implementations in this repository checked against each other,
besides each one's check against Orthanc / dicomweb-client.

A 30-instance CT series (bench_wado's, 512x512) is catalogued in a private
database (documents shaped like the linker's, wado_support.seed); metadb-api
serves it with archive.roots set. Then: echo; find by
study UID with the right instance count; the instance list is the catalogue's;
retrieving the study lands every file byte-identical to the archive's; an
unknown study is not_found (not retryable)."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import mdb_api_support as mas  # noqa: E402
from bench_wado import make_series  # noqa: E402
from dicomweb_support import PROBE_BIN, landed, leftovers, probe  # noqa: E402
import wado_support as ws  # noqa: E402

c = mas.Checker()


def main():
    tmp = tempfile.mkdtemp(prefix="metadb-dwinterop-")
    client, db = mas.mongo_db("t_dwinterop_%d" % os.getpid())
    try:
        arch = os.path.join(tmp, "archive")
        os.makedirs(arch)
        files = make_series(arch, 30)
        ws.seed(db, files)
        study = files[0]["study"]
        with mas.Api(db.name, "--archive.roots=" + arch) as api:
            url = "http://127.0.0.1:%d/dicomweb" % api.port
            rc, out = probe(url, "echo")
            c.eq((rc, out), (0, [{"echo": True}]), "echo metadb-api's DICOMweb")
            rc, out = probe(url, "find", "study", study)
            c.eq((rc, [(s["study_uid"], s["n_instances"]) for s in out]), (0, [(study, len(files))]),
                 "find by study UID: the study with its %d instances" % len(files))
            rc, out = probe(url, "list", study)
            c.eq((rc, sorted((i["sop_uid"], i["series_uid"]) for i in out)),
                 (0, sorted((f["sop"], f["series"]) for f in files)), "the instance list is the catalogue's")
            outdir = os.path.join(tmp, "out")
            os.makedirs(outdir)
            rc, out = probe(url, "retrieve", outdir, study)
            got = landed(outdir)
            c.eq((rc, out[0].get("landed"), sorted(got)), (0, len(files), sorted(f["sop"] for f in files)),
                 "retrieve the study: every instance landed")
            differ = [f["sop"] for f in files if got.get(f["sop"]) != open(f["path"], "rb").read()]
            c.eq(differ, [], "every landed file is byte-identical to the archive's")
            c.eq(leftovers(outdir), [], "no spool file left")
            rc, out = probe(url, "retrieve", os.path.join(tmp, "out"), "1.2.3.4.5.6.7.8.9.404")
            c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "not_found", False),
                 "unknown study: not_found, not retryable")
    finally:
        client.drop_database(db.name)
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    if not os.access(PROBE_BIN, os.X_OK):
        print("FAIL - %s is not built" % PROBE_BIN)
        sys.exit(1)
    main()
