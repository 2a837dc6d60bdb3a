#!/usr/bin/python3
"""PACS retrieval over DIMSE against a real Orthanc (Debian's `orthanc`).

A generated archive is loaded into a private Orthanc over its REST API; the
files are NOT under metadb's archive roots. Orthanc knows metadb's AE for
C-MOVE. Then, through the real pipeline (producer, worker, linker,
metadb-fetcher on private topics/groups/database):
  1. a job by accession with source pacs:orthanc ends `completed`; the database
     holds exactly Orthanc's instances of those accessions; every landed file
     carries the same data set as Orthanc's /instances/{id}/file (byte-identical
     after the meta header, and element by element);
  2. the same accessions again (a second job): nothing is moved twice (landed
     files keep their inode and mtime; Orthanc counts no new C-MOVE
     sub-operations), the job completes with the same instances;
  3. an accession unknown to the PACS: selector not_found, job
     completed_with_errors;
  4. `metadb pacs echo` and `metadb pacs find` answer from Orthanc;
  5. retrieve=get: C-GET under an AE title Orthanc does not know completes too."""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pacs_support as ps  # noqa: E402
from pacs_support import rt  # noqa: E402

c = rt.Checks("test_pacs_dimse")


def main():
    tmp = rt.tempdir("metadb-pacs-")
    tag = "t_pacs_%d" % os.getpid()
    pacs = pipe = None
    ok = False
    try:
        gen = os.path.join(tmp, "gen")  # the PACS's content, outside every archive root
        manifest = rt.generate_archive(gen, 6, 41, ["--slices", "3:5"])
        scp_port = ps.free_port()
        pacs = ps.load_pacs(os.path.join(tmp, "orthanc"), scp_port, manifest["instances"])
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        # orthanc-get: C-GET under an AE title Orthanc does not know (C-MOVE could not reach it)
        sources = pacs.source_entry() + "," + pacs.source_entry("orthanc-get", ";retrieve=get;ae=STRANGER")
        pipe = ps.Pipeline(tag, [root], root, sources, ["--pacs.scp_port=%d" % scp_port])
        pipe.setup()

        # 4. preview without moving anything
        p = pipe.metadb("pacs", "echo", "orthanc", check=False)
        c.eq(p.returncode, 0, "metadb pacs echo orthanc succeeds (%s)" % (p.stdout.strip() or p.stderr.strip()))
        accs = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))[:3]
        p = pipe.metadb("pacs", "find", "orthanc", "--accession", accs[0], "--json", check=False)
        found = json.loads(p.stdout) if p.returncode == 0 else []
        want_study = [s for s in manifest["studies"] if s["accession"] == accs[0]]
        c.check(p.returncode == 0 and [f["study_uid"] for f in found] == [s["uid"] for s in want_study],
                "metadb pacs find --accession lists the study", p.stdout[-500:] + p.stderr[-500:])
        n_inst = sum(1 for i in manifest["instances"] if i["study_uid"] == want_study[0]["uid"])
        c.check(found and found[0]["instances"] == n_inst, "pacs find reports the study's instance count (%d)" % n_inst,
                found)
        c.eq(pipe.landed(), {}, "pacs find moved nothing")

        # 1. a job by accession from the PACS
        pipe.start()
        t0 = time.time()
        p = pipe.submit("--accession", *accs, job_id=tag + "-a")
        dt = time.time() - t0
        job = pipe.job(tag + "-a")
        c.check(p.returncode == 0 and job and job["state"] == "completed",
                "job by accession from pacs:orthanc completed in %.1f s" % dt,
                (p.returncode, job and job.get("state"), job and job.get("errors"), p.stdout[-800:]))
        want = {}
        for a in accs:
            want.update(pacs.instances_of_accession(a))
        db = pipe.db()
        got = sorted(d["_id"] for d in db.instances.find({}, {"_id": 1}))
        c.eq(got, sorted(want), "the database holds exactly Orthanc's %d instances of the accessions" % len(want))
        landed = pipe.landed()
        c.eq(sorted(landed), sorted(want), "every instance landed once under fetcher.root")
        bad_ident, bad_same = [], []
        for sop, oid in want.items():
            if sop not in landed:
                continue
            mine = open(landed[sop], "rb").read()
            theirs = pacs.file_of(oid)
            if not ps.dataset_tail_identical(mine, theirs):
                bad_ident.append(sop)
            same, why = ps.same_dataset(mine, theirs)
            if not same:
                bad_same.append((sop, why))
        c.eq(bad_same, [], "landed data sets equal Orthanc's element by element")
        c.eq(bad_ident, [], "landed data sets are byte-identical to Orthanc's (after the meta header)")
        rel = sorted(os.path.relpath(v, root).split("/")[0] for v in landed.values())
        c.check(set(rel) == {"orthanc"}, "files land under <root>/<source>/", set(rel))
        sample = next(iter(landed.values()))
        parts = os.path.relpath(sample, root).split("/")
        c.check(len(parts) == 4 and parts[3].endswith(".dcm"), "layout <source>/<Study>/<Series>/<SOP>.dcm", parts)
        inst_paths = db.instances.find_one({"_id": parts[3][:-4]})
        c.check(inst_paths and os.path.realpath(sample) in inst_paths.get("paths", []),
                "the instance document lists the landed path", inst_paths and inst_paths.get("paths"))
        c.check(job and len(job.get("retrievals", {})) == len(accs) and
                all(r["status"] == "done" for r in job["retrievals"].values()),
                "per-selector retrieval progress recorded as done", job and job.get("retrievals"))

        # per-selector progress through the CLI and the API
        p = pipe.metadb("status", tag + "-a", check=False)
        c.check("retrievals" in p.stdout and "accession:%s" % accs[0] in p.stdout and " done " in p.stdout,
                "metadb status shows the per-selector retrieval", p.stdout[-1200:])
        from mdb_api_support import Api
        with Api(pipe.names.db, "--mongo.uri=" + pipe.stack.mongo_uri) as api:
            st, _, b = api.get("/api/jobs/" + tag + "-a")
            rs = list((b or {}).get("retrievals", {}).values()) if st == 200 else []
            c.check(len(rs) == len(accs) and all(r["landed"] == r["expected"] > 0 for r in rs),
                    "GET /api/jobs/{id} carries the retrievals (found, received)", (st, rs))
            st, _, b = api.get("/api/jobs", {"limit": "5"})
            c.check(st == 200 and all("retrievals" not in j for j in b.get("items", [])),
                    "the job list leaves the retrieval details out", st)

        # 2. the same accessions again: nothing moves twice
        before = {sop: (os.stat(p_).st_ino, os.stat(p_).st_mtime_ns) for sop, p_ in landed.items()}
        stats0 = pacs.get_json("/statistics")
        p = pipe.submit("--accession", *accs, job_id=tag + "-b")
        job = pipe.job(tag + "-b")
        c.check(job and job["state"] == "completed", "second job on the same accessions completed",
                job and (job.get("state"), job.get("errors")))
        after = {sop: (os.stat(p_).st_ino, os.stat(p_).st_mtime_ns) for sop, p_ in pipe.landed().items()}
        c.eq(after, before, "no landed file was moved or rewritten by the second job")
        c.eq(db.instances.count_documents({}), len(want), "no duplicate instance document")
        c.check(job and job.get("files_total") == len(want), "the second job still catalogues every instance",
                job and job.get("files_total"))

        # C-GET instead of C-MOVE (same association; the data set is re-wrapped in our meta header)
        acc_get = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))[3]
        p = pipe.submit("--accession", acc_get, source="pacs:orthanc-get", job_id=tag + "-get")
        job = pipe.job(tag + "-get")
        want_get = pacs.instances_of_accession(acc_get)
        c.check(job and job["state"] == "completed", "C-GET (retrieve=get, AE unknown to Orthanc): job completed",
                job and (job.get("state"), job.get("errors")))
        got_get = pipe.landed()
        diffs = [(s_, ps.same_dataset(open(got_get[s_], "rb").read(), pacs.file_of(o), check_ts=False)[1])
                 for s_, o in want_get.items() if s_ in got_get]
        c.check(set(want_get) <= set(got_get) and all(not d for _, d in diffs),
                "C-GET: every instance landed with Orthanc's data set (element by element)", diffs)
        c.eq(db.instances.count_documents({"_id": {"$in": list(want_get)}}), len(want_get), "C-GET: catalogued")

        # our storage SCP port taken for a moment (CI once saw an outgoing connection hold it):
        # retried with backoff like a network failure, and the job completes once it is free.
        # The SCP lives as long as the fetcher: a fresh fetcher meets the taken port.
        acc_busy = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))[4]
        for pr in pipe.procs.running("fetcher"):
            pr.stop(60)
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", scp_port))
        holder.listen(1)
        pipe.start_fetcher()
        p = pipe.submit("--accession", acc_busy, job_id=tag + "-busy", wait=False)
        # hold the port until the fetcher has met it (not for a fixed time: the task may reach the
        # fresh fetcher later than any fixed hold, as CI once saw), then free it
        met = pipe.wait_fetcher_log(r"retrieve attempt 1 failed \(network\): storage SCP port %d: .*, retrying"
                                    % scp_port)
        holder.close()
        c.check(met, "the busy port was retried (network class), not given up as configuration",
                pipe.fetcher_log()[-1500:])
        job = pipe.wait_final(tag + "-busy", 120)
        c.check(job and job["state"] == "completed", "SCP port busy: the job completed once the port was free",
                job and (job.get("state"), job.get("errors")))
        want_busy = pacs.instances_of_accession(acc_busy)
        c.check(set(want_busy) <= set(pipe.landed()), "SCP port busy: every instance landed afterwards")

        # 3. unknown accession
        p = pipe.submit("--accession", "NO-SUCH-ACC-1", job_id=tag + "-c")
        job = pipe.job(tag + "-c")
        c.check(job and job["state"] == "completed_with_errors", "unknown accession: job completed_with_errors",
                job and job.get("state"))
        r = job and list(job.get("retrievals", {}).values())
        c.check(r and r[0]["status"] == "not_found", "unknown accession: selector not_found", r)

        ok = True
    finally:
        ps.teardown(c, pipe, pacs, tmp, ok, check_exits=True)
    sys.exit(c.summary())


if __name__ == "__main__":
    main()
