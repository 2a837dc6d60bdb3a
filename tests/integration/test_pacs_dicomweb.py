#!/usr/bin/python3
"""PACS retrieval over DICOMweb (QIDO-RS + WADO-RS) against a real Orthanc with
Debian's DICOMweb plugin (orthanc-dicomweb): the source pacs:orthanc-web.

A generated archive is loaded into a private Orthanc over its REST API; the
files are NOT under metadb's archive roots. Then, through the real pipeline
(producer, worker, linker, metadb-fetcher on private topics/groups/database):
  1. `metadb pacs echo` and `metadb pacs find` answer through DICOMweb;
  2. a job by accession with source pacs:orthanc-web ends `completed`; the
     database holds exactly Orthanc's instances of those accessions; every
     landed file is byte-identical, whole, to Orthanc's /instances/{id}/file
     (WADO-RS with transfer-syntax=* hands over the stored objects);
  3. the same accessions again: nothing is moved twice;
  4. partial transfer: instances dropped once on receipt (pacs.test_drop
     once:3) are noticed and re-requested, the job completes with every one;
     dropped for good (always:3) the job ends completed_with_errors naming
     each missing SOP Instance UID;
  5. an accession unknown to the PACS: selector not_found;
  6. Orthanc stopped during a job: the job waits in `retrieving` and
     completes once Orthanc is back (HTTP connect failures are retried)."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pacs_support as ps  # noqa: E402
from dicomweb_support import DICOMWEB_PLUGIN  # noqa: E402
from pacs_support import rt  # noqa: E402

c = rt.Checks("test_pacs_dicomweb")
SOURCE = "orthanc-web"


def main():
    tmp = rt.tempdir("metadb-pacsweb-")
    tag = "t_pacsweb_%d" % os.getpid()
    pacs = pipe = None
    ok = False
    try:
        gen = os.path.join(tmp, "gen")  # the PACS's content, outside every archive root
        manifest = rt.generate_archive(gen, 9, 47, ["--slices", "3:5"])
        pacs = ps.load_pacs(os.path.join(tmp, "orthanc"), ps.free_port(), manifest["instances"],
                            {"DicomServerEnabled": False, "Plugins": [DICOMWEB_PLUGIN],
                             "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        entry = "%s:dicomweb:http://127.0.0.1:%d/dicom-web" % (SOURCE, pacs.port)
        pipe = ps.Pipeline(tag, [root], root, entry, ["--pacs.retries=8"])
        pipe.setup()
        accs = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))
        c.check(len(accs) >= 8, "the generated PACS holds %d accessions" % len(accs))

        # 1. preview without moving anything
        p = pipe.metadb("pacs", "echo", SOURCE, check=False)
        c.eq(p.returncode, 0, "metadb pacs echo %s succeeds (%s)" % (SOURCE, p.stdout.strip() or p.stderr.strip()))
        p = pipe.metadb("pacs", "find", SOURCE, "--accession", accs[0], "--json", check=False)
        found = json.loads(p.stdout) if p.returncode == 0 else []
        want_study = [s["uid"] for s in manifest["studies"] if s["accession"] == accs[0]]
        c.check(p.returncode == 0 and [f["study_uid"] for f in found] == want_study,
                "metadb pacs find --accession lists the study over QIDO-RS", p.stdout[-500:] + p.stderr[-500:])
        n_inst = sum(1 for i in manifest["instances"] if i["study_uid"] in want_study)
        c.check(found and found[0].get("instances") == n_inst,
                "pacs find reports the study's instance count (%d)" % n_inst, found)
        c.eq(pipe.landed(), {}, "pacs find moved nothing")

        # 2. a job by accession through DICOMweb
        pipe.start()
        t0 = time.time()
        p = pipe.submit("--accession", *accs[:3], source="pacs:" + SOURCE, job_id=tag + "-a")
        dt = time.time() - t0
        job = pipe.job(tag + "-a")
        c.check(p.returncode == 0 and job and job["state"] == "completed",
                "job by accession from pacs:%s completed in %.1f s" % (SOURCE, dt),
                (p.returncode, job and job.get("state"), job and job.get("errors"), p.stdout[-800:], p.stderr[-800:]))
        want = {}
        for a in accs[:3]:
            want.update(pacs.instances_of_accession(a))
        db = pipe.db()
        got = sorted(d["_id"] for d in db.instances.find({}, {"_id": 1}))
        c.eq(got, sorted(want), "the database holds exactly Orthanc's %d instances of the accessions" % len(want))
        landed = pipe.landed()
        c.eq(sorted(landed), sorted(want), "every instance landed once under fetcher.root")
        differ = [sop for sop, oid in want.items() if sop in landed and open(landed[sop], "rb").read() != pacs.file_of(oid)]
        c.eq(differ, [], "every landed file is byte-identical to Orthanc's /instances/{id}/file")
        rel = {os.path.relpath(v, root).split("/")[0] for v in landed.values()}
        c.eq(rel, {SOURCE}, "files land under <root>/%s/" % SOURCE)
        c.check(job and len(job.get("retrievals", {})) == 3 and
                all(r["status"] == "done" and r.get("source") == SOURCE for r in job["retrievals"].values()),
                "per-selector retrieval progress recorded as done", job and job.get("retrievals"))

        # 3. the same accessions again: nothing moves twice
        before = {sop: (os.stat(p_).st_ino, os.stat(p_).st_mtime_ns) for sop, p_ in landed.items()}
        pipe.submit("--accession", *accs[:3], source="pacs:" + SOURCE, job_id=tag + "-b")
        job = pipe.job(tag + "-b")
        c.check(job and job["state"] == "completed", "second job on the same accessions completed",
                job and (job.get("state"), job.get("errors")))
        after = {sop: (os.stat(p_).st_ino, os.stat(p_).st_mtime_ns) for sop, p_ in pipe.landed().items()}
        c.eq(after, before, "no landed file was moved or rewritten by the second job")
        c.eq(db.instances.count_documents({}), len(want), "no duplicate instance document")

        # 4. partial transfers
        pipe.restart_fetcher(["--pacs.test_drop=once:3"])
        ps.check_dropped_transfers(c, pipe, pacs, accs[3:5], accs[5:7], tag, source="pacs:" + SOURCE)
        pipe.restart_fetcher()

        # 5. unknown accession
        pipe.submit("--accession", "NO-SUCH-ACC-1", source="pacs:" + SOURCE, job_id=tag + "-c")
        job = pipe.job(tag + "-c")
        c.check(job and job["state"] == "completed_with_errors", "unknown accession: job completed_with_errors",
                job and job.get("state"))
        r = job and list(job.get("retrievals", {}).values())
        c.check(r and r[0]["status"] == "not_found", "unknown accession: selector not_found", r)

        # 6. Orthanc stopped during a job
        pacs.stop()
        pipe.submit("--accession", accs[7], source="pacs:" + SOURCE, job_id=tag + "-down", wait=False)
        # the fetcher has tried and failed at least once: the job must now wait, not fail
        tried = pipe.wait_fetcher_log(r"job=%s-down source \S+: \w+ attempt \d+ failed" % re.escape(tag), 90)
        c.check(tried, "while Orthanc is down the fetcher's attempts fail and are logged", pipe.fetcher_log()[-800:])
        state = (pipe.job(tag + "-down") or {}).get("state")
        c.check(state == "retrieving", "while Orthanc is down the job waits in retrieving", state)
        pacs.restart()
        job = pipe.wait_final(tag + "-down", 120)
        c.check(job and job["state"] == "completed", "the job completed once Orthanc was back",
                job and (job["state"], job.get("errors")))
        r = job and list(job.get("retrievals", {}).values())
        c.check(r and r[0].get("attempts", 0) > 1, "it took retries", r)
        want3 = pacs.instances_of_accession(accs[7])
        got = {d["_id"] for d in db.instances.find({"_id": {"$in": list(want3)}}, {"_id": 1})}
        c.eq(sorted(got), sorted(want3), "after the outage: every instance of the accession is catalogued")
        ok = True
    finally:
        ps.teardown(c, pipe, pacs, tmp, ok, check_exits=True)
    sys.exit(c.summary())


if __name__ == "__main__":
    main()
