#!/usr/bin/python3
"""PACS retrieval under faults, against a real Orthanc (DIMSE, C-MOVE):
  1. partial transfer, once: the storage SCP drops some C-STOREs on purpose
     (pacs.test_drop=once:3, a silent loss: Orthanc is told "success"); the
     fetcher notices the missing instances, re-requests them and the job
     completes with every instance;
  2. partial transfer for good (always:3): the job ends completed_with_errors
     and its errors name each missing SOP Instance UID, exactly those dropped;
  3. kill -9 of the fetcher in the middle of a C-MOVE: after a restart the job
     completes, no duplicate file, no duplicate document;
  4. Orthanc stopped during a job: the fetcher retries with backoff and the job
     completes when Orthanc is back; stopped for good, the selector fails after
     the configured attempts and the job completes with errors;
  5. source auto: half the accessions in the archive (indexed), half only in
     Orthanc: each instance comes from where it is."""
import os
import re
import shutil
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pacs_support as ps  # noqa: E402
from pacs_support import rt  # noqa: E402

c = rt.Checks("test_pacs_faults")


def main():
    tmp = rt.tempdir("metadb-pacsf-")
    tag = "t_pacsf_%d" % os.getpid()
    pacs = pipe = None
    ok = False
    try:
        small = rt.generate_archive(os.path.join(tmp, "small"), 8, 43, ["--slices", "3:5"])
        # 512x512: a C-MOVE that takes a while
        big = rt.generate_archive(os.path.join(tmp, "big"), 1, 44, ["--slices", "60:60"], small=False)
        scp_port = ps.free_port()
        pacs = ps.load_pacs(os.path.join(tmp, "orthanc"), scp_port, small["instances"] + big["instances"])
        archive = os.path.join(tmp, "archive")
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        accs = sorted(s["accession"] for s in small["studies"] if s.get("accession"))
        # 5's archive half: copies of some studies' files under an archive root
        in_archive = accs[6:8]
        for inst in small["instances"]:
            st = next(s for s in small["studies"] if s["uid"] == inst["study_uid"])
            if st.get("accession") in in_archive:
                dst = os.path.join(archive, inst["relpath"])
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy(inst["path"], dst)
        pipe = ps.Pipeline(tag, [archive, root], root, pacs.source_entry(),
                           ["--pacs.scp_port=%d" % scp_port, "--pacs.retries=6"])
        pipe.setup()
        pipe.metadb("index")
        pipe.start(roles=("producer", "worker", "linker"))
        db = pipe.db()

        # 1. dropped once, then re-requested
        pipe.start_fetcher(["--pacs.test_drop=once:3"])
        # 2. dropped for good
        ps.check_dropped_transfers(c, pipe, pacs, accs[:2], accs[2:4], tag)

        # 3. kill -9 in the middle of a C-MOVE
        fet = pipe.restart_fetcher()
        big_acc = big["studies"][0]["accession"]
        want3 = pacs.instances_of_accession(big_acc)
        pipe.submit("--accession", big_acc, job_id=tag + "-kill", wait=False)
        big_dir = os.path.join(root, "orthanc", big["studies"][0]["uid"])

        def n_landed():
            return sum(len(f) for _, _, f in os.walk(big_dir))
        rt.wait_for(lambda: n_landed() >= 5, 60, 0.02)
        at_kill = n_landed()
        fet.kill9()
        c.check(0 < at_kill < len(want3), "fetcher killed -9 mid C-MOVE (%d of %d landed)" % (at_kill, len(want3)))
        pipe.start_fetcher()
        job = pipe.wait_final(tag + "-kill", 120)
        c.check(job and job["state"] == "completed", "after the restart the job completed", job and job.get("state"))
        files = [f for _, _, fs in os.walk(big_dir) for f in fs]
        c.eq(sorted(f[:-4] for f in files), sorted(want3), "no duplicate or missing file after kill -9")
        c.eq(db.instances.count_documents({"_id": {"$in": list(want3)}}), len(want3), "no duplicate document")

        # 4. Orthanc stopped during a job
        pacs.stop()
        pipe.submit("--accession", accs[4], job_id=tag + "-down", wait=False)
        # the fetcher has tried and failed at least once: the job must now wait, not fail
        tried = pipe.wait_fetcher_log(r"job=%s-down source \S+: \w+ attempt \d+ failed" % re.escape(tag), 90)
        c.check(tried, "while Orthanc is down the fetcher's attempts fail and are logged", pipe.fetcher_log()[-800:])
        state = (pipe.job(tag + "-down") or {}).get("state")
        c.check(state == "retrieving", "while Orthanc is down the job waits in retrieving", state)
        p = pipe.metadb("status", tag + "-down", check=False)
        c.check("state       retrieving" in p.stdout and "accession:%s" % accs[4] in p.stdout,
                "metadb status shows the job retrieving and its selector", p.stdout[-800:])
        pacs.restart()
        job = pipe.wait_final(tag + "-down", 90)
        c.check(job and job["state"] == "completed", "the job completed once Orthanc was back",
                job and (job["state"], job.get("errors")))
        r = job and list(job.get("retrievals", {}).values())
        c.check(r and r[0].get("attempts", 0) > 1, "it took retries", r)

        # 4b. Orthanc down for good: after the configured attempts the selector fails with the reason
        pipe.restart_fetcher(["--pacs.retries=2", "--pacs.backoff_ms=200"])
        pacs.stop()
        pipe.submit("--accession", accs[4], job_id=tag + "-gone", timeout=60)
        job = pipe.job(tag + "-gone")
        r = job and list(job.get("retrievals", {}).values())
        c.check(job and job["state"] == "completed_with_errors" and r and r[0]["status"] == "failed" and
                r[0].get("attempts") == 3,
                "Orthanc gone: after 1 + 2 attempts the job completes with errors", job and (job["state"], r))
        c.check(any(e.get("error") == "retrieve_failed" for e in (job or {}).get("errors", [])),
                "Orthanc gone: the job's errors say the retrieval failed, with the reason",
                job and job.get("errors"))
        pacs.restart()
        pipe.restart_fetcher()

        # 5. source auto: archive first, the PACS for the rest
        mixed = [accs[5]] + in_archive
        pipe.submit("--accession", *mixed, source="auto", job_id=tag + "-auto")
        job = pipe.job(tag + "-auto")
        c.check(job and job["state"] == "completed", "source auto: job completed", job and (job["state"], job.get("errors")))
        from_pacs = pacs.instances_of_accession(accs[5])
        ok_where = True
        for a in mixed:
            for sop in pacs.instances_of_accession(a):
                d = db.instances.find_one({"_id": sop}, {"paths": 1}) or {}
                paths = d.get("paths", [])
                where = os.path.realpath(root) if a == accs[5] else os.path.realpath(archive)
                if not paths or not all(p.startswith(where + "/") for p in paths):
                    ok_where = False
                    print("  %s of %s at %s" % (sop, a, paths))
        c.check(ok_where, "source auto: archived accessions come from the archive, the other from the PACS")
        c.check(len((job or {}).get("retrievals", {})) == 1, "source auto: one retrieval (the accession not archived)",
                job and job.get("retrievals"))
        ok = True
    finally:
        ps.teardown(c, pipe, pacs, tmp, ok)
    sys.exit(c.summary())


if __name__ == "__main__":
    main()
