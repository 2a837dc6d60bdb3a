#!/usr/bin/python3
"""The bad-input corpus (tests/gen/gen_badinput.py) through the real pipeline
on the live local stack (private database, topics and groups):

  metadb index (the crawl must terminate on the directory symlink loop and
  skip the FIFO) -> a job naming every corpus file explicitly (raw JSON on
  topic.jobs, so no CLI pre-check filters anything) -> metadb-producer ->
  two metadb-workers (run as user nobody when the test runs as root, so the
  unreadable file really is unreadable) -> metadb-linker when it is built.

Every corpus file must be accounted for exactly once:
  - a document: one instance event, whose UIDs and PatientID equal pydicom's
    reading of the file, and (with the linker) an `instances` document with
    that _id, its series and study, and the path in `paths`;
  - or one DLQ record {stage: worker, error: <reason>} for that path;
  - or, for a path the producer cannot publish (a symlink escaping the root,
    a FIFO), an entry with a reason in the job's `errors`;
  "document"/"dlq" expectations of expected.json are enforced ("either"
  allows both). With the linker the job completes (completed_with_errors),
  files_done + files_failed == files_total, both duplicate-UID files end as
  one instance document with two paths.
The corpus is pushed through three times (three jobs): nothing crashes or
hangs (each pass is bounded), and worker RSS stays bounded and stops growing
(pass 3 vs pass 2).
"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import reltest as rt  # noqa: E402

PASSES = 3


def pydicom_uids(path):
    """(study, series, sop, patient_id) as pydicom reads them, or None."""
    code = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import pydicom
try:
    ds = pydicom.dcmread(sys.argv[1], force=True, stop_before_pixels=True)
    print(json.dumps([str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID")]))
except Exception as e:
    print("null")
"""
    try:
        p = subprocess.run([rt.PY, "-c", code, path], capture_output=True, text=True, timeout=30)
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def main():
    c = rt.Checks("test_badinput")
    stack, with_linker = rt.preflight("documents and job completion are NOT checked")

    base = rt.tempdir("mdb_badinput_")
    os.chmod(base, 0o755)
    root = os.path.realpath(os.path.join(base, "archive"))
    corpus = os.path.join(root, "bad")
    names = rt.Names("t_badinput_%d" % os.getpid(), stack, [root], partitions=3)
    procs = rt.Procs(base)
    mc = stack.mongo()
    db = mc[names.db]
    as_nobody = os.geteuid() == 0 and shutil.which("setpriv")
    wrapper = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_nobody else []
    try:
        os.makedirs(root)
        os.chmod(root, 0o755)
        subprocess.run([rt.PY, rt.GEN_BAD, "--out", corpus, "--seed", "11"], check=True, capture_output=True,
                       timeout=300)
        expected = [e for e in json.load(open(os.path.join(corpus, "expected.json"))) if e["expect"] != "none"]
        if as_nobody:
            for e in expected:
                if e["case"] == "unreadable":
                    e["expect"] = "dlq"  # the worker runs as nobody: mode 0000 is unreadable
        rt.note("%d corpus files (+ symlink loop); workers run as %s" % (len(expected),
                                                                        "nobody" if as_nobody else "this user"))
        rt.metadb(names, "topics")
        t0 = time.time()
        p = rt.metadb(names, "index", timeout=180, check=False)
        c.check(p.returncode == 0, "metadb index over the corpus (symlink loop, FIFO) finishes and exits 0 (%.1fs)" % (
            time.time() - t0), p.stderr[-1500:])
        rt.metadb(names, "researcher", "add", "bob", "--name", "Bob", "--email", "bob@example.org")
        rt.metadb(names, "collection", "create", "BAD", "--description", "bad input")

        procs.start("producer", names)
        workers = [procs.start("worker", names, extra=["--worker.threads=2"], wrapper=wrapper) for _ in range(2)]
        if with_linker:
            procs.start("linker", names)

        truth = {e["path"]: pydicom_uids(e["path"]) for e in expected
                 if e["case"] not in ("fifo", "unreadable") and not os.path.islink(e["path"])}
        rss = []
        for n in range(1, PASSES + 1):
            job = "badinput-%d-pass%d" % (os.getpid(), n)
            req = {"v": 1, "job_id": job, "researcher_id": "bob", "collection": "BAD",
                   "paths": [e["path"] for e in expected]}
            rt.kcat_produce(stack.brokers, names.topics["jobs"], [(job, json.dumps(req))])
            t0 = time.time()
            res = run_pass(c, stack, names, db, job, expected, with_linker, procs, n)
            rt.note("pass %d settled in %.1fs" % (n, time.time() - t0))
            if res is None:
                break
            if n == 1:
                check_pass(c, stack, names, db, job, expected, truth, with_linker, res)
            else:
                same = res["outcomes"] == rss_outcomes_first[0]
                c.check(same, "pass %d: every file has the same outcome as in pass 1" % n)
            if n == 1:
                rss_outcomes_first = [res["outcomes"]]
            rss.append([rt.rss_kb(w.pid) or 0 for w in workers])
            rt.note("pass %d worker RSS (kB): %s" % (n, rss[-1]))
        for p in procs.all:
            c.check(p.alive(), "%s (pid %d) survived the corpus" % (p.role, p.pid), p.log_text()[-1500:])
        if len(rss) == PASSES:
            limit = 1500 * 1024 if rt.SANITIZED else 256 * 1024
            grow = 64 * 1024 if rt.SANITIZED else 8 * 1024
            for i in range(len(workers)):
                c.check(max(r[i] for r in rss) < limit, "worker %d RSS stays under %d MB (max %d kB)" % (
                    i + 1, limit // 1024, max(r[i] for r in rss)))
                c.check(rss[-1][i] - rss[-2][i] < grow, "worker %d RSS does not grow from pass %d to %d (%+d kB)" % (
                    i + 1, PASSES - 1, PASSES, rss[-1][i] - rss[-2][i]))
        rt.stop_checked(c, procs)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        c.check(False, "test raised %s: %s" % (type(e).__name__, e))
    finally:
        rt.teardown(c, procs, mc, names.db)
        subprocess.run(["chmod", "-R", "u+rwX", base], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return c.summary()


def run_pass(c, stack, names, db, job, expected, with_linker, procs, n):
    """Wait until every file of the job is accounted for; returns the observations or None."""
    paths = {e["path"] for e in expected}

    def observe():
        events = [v for _k, v in rt.kcat_json(stack.brokers, names.topics["instances"])
                  if isinstance(v, dict) and v.get("job_id") == job]
        dlq = [v for _k, v in rt.kcat_json(stack.brokers, names.topics["dlq"])
               if isinstance(v, dict) and v.get("job_id") == job]
        tasks = [v for _k, v in rt.kcat_json(stack.brokers, names.topics["files"])
                 if isinstance(v, dict) and v.get("job_id") == job]
        jd = db.jobs.find_one({"_id": job}) or {}
        return {"events": events, "dlq": dlq, "tasks": tasks, "job": jd}

    state = {}

    def settled():
        if any(not p.alive() for p in procs.all):
            return True
        o = observe()
        state["o"] = o
        jd = o["job"]
        if jd.get("state") not in ("running", "completed", "completed_with_errors", "failed"):
            return False
        if with_linker:
            return jd.get("state") in ("completed", "completed_with_errors", "failed")
        task_paths = {t["path"] for t in o["tasks"]}
        done = {e.get("path") for e in o["events"]} | {d.get("path") for d in o["dlq"]}
        return task_paths and task_paths <= done

    ok = rt.wait_for(settled, timeout=240, interval=2)
    if not c.check(ok and all(p.alive() for p in procs.all),
                   "pass %d: the job's %d files are all accounted for within 240s, no daemon died" % (n, len(paths)),
                   {k: state.get("o", {}).get("job", {}).get(k) for k in ("state", "files_total", "files_done",
                                                                          "files_failed")}):
        return None
    o = state["o"]
    if with_linker:  # the linker counted: the topics hold everything by now
        o = observe()
    outcomes = {}
    for p in paths:
        ne = sum(1 for e in o["events"] if e.get("path") == p)
        nd = sum(1 for d in o["dlq"] if d.get("path") == p)
        nj = sum(1 for e in o["job"].get("errors", []) if e.get("path") == p and e.get("stage", "producer") ==
                 "producer")
        outcomes[p] = (ne, nd, nj)
    o["outcomes"] = outcomes
    return o


def check_pass(c, stack, names, db, job, expected, truth, with_linker, o):
    outcomes = o["outcomes"]
    reasons = {}
    for e in expected:
        p, exp = e["path"], e["expect"]
        ne, nd, nj = outcomes[p]
        name = os.path.basename(p)
        if not c.check(ne + nd + nj == 1, "%s (%s): exactly one outcome" % (name, e["case"]),
                       "events %d, DLQ %d, job errors %d" % (ne, nd, nj)):
            continue
        if exp == "document":
            c.check(ne == 1, "%s (%s): a document, as expected" % (name, e["case"]),
                    [d.get("error") for d in o["dlq"] if d.get("path") == p])
        elif exp == "dlq":
            c.check(nd + nj == 1, "%s (%s): refused with a reason, as expected" % (name, e["case"]))
        if nd:
            d = next(d for d in o["dlq"] if d.get("path") == p)
            c.check(d.get("stage") == "worker" and d.get("error"), "%s: DLQ record has stage worker and a reason" % name,
                    d)
            if e.get("reason"):
                c.eq(d.get("error"), e["reason"], "%s: refused as %s" % (name, e["reason"]))
            reasons[name] = d.get("error")
        if nj:
            je = next(x for x in o["job"]["errors"] if x.get("path") == p)
            c.check(je.get("error") and je.get("message"), "%s: job error has a reason" % name, je)
            reasons[name] = "job:" + str(je.get("error"))
        if ne:
            ev = next(x for x in o["events"] if x.get("path") == p)
            want = truth.get(p)
            got = [ev.get("study", {}).get("StudyInstanceUID"), ev.get("series", {}).get("SeriesInstanceUID"),
                   ev.get("instance", {}).get("SOPInstanceUID"), ev.get("study", {}).get("PatientID")]
            if want and all(want[:3]):
                c.check(got[:3] == want[:3] and (got[3] or "") == want[3],
                        "%s: event UIDs/PatientID equal pydicom's" % name, {"got": got, "pydicom": want})
            if "integrity" in e:  # header whole, pixels cut: catalogued and flagged, exactly
                c.eq(ev.get("integrity"), e["integrity"], "%s: event flags the damage exactly" % name)
            elif e["case"] == "valid":
                c.check("integrity" not in ev, "%s: a whole file's event has no integrity object" % name,
                        ev.get("integrity"))
            reasons[name] = "document"
    rt.note("outcomes: " + json.dumps(reasons, sort_keys=True))
    if not with_linker:
        return
    jd = o["job"]
    tasks = len({t["path"] for t in o["tasks"]})
    c.eq(jd.get("files_total"), tasks, "job files_total equals the tasks published")
    ndlq = sum(1 for v in outcomes.values() if v[1])
    nev = sum(1 for v in outcomes.values() if v[0])
    c.eq((jd.get("files_done"), jd.get("files_failed")), (nev, ndlq), "job files_done/files_failed exact")
    nflag = sum(1 for e in o["events"] if e.get("integrity") and e.get("job_id") == job)
    want_flag = sum(1 for e in expected if "integrity" in e)
    c.check(nflag >= want_flag, "the %d damaged-pixel files of the corpus gave flagged events (%d)" % (want_flag, nflag))
    c.eq(jd.get("files_flagged"), nflag, "job files_flagged = events with an integrity object")
    c.eq(jd.get("state"), "completed_with_errors", "job state")
    for e in expected:
        p = e["path"]
        if outcomes[p][0] != 1:
            continue
        ev = next(x for x in o["events"] if x.get("path") == p)
        sop = ev["instance"]["SOPInstanceUID"]
        d = db.instances.find_one({"_id": sop}) or {}
        c.check(p in (d.get("paths") or []) and d.get("series_id") == ev["series"]["SeriesInstanceUID"] and
                d.get("study_id") == ev["study"]["StudyInstanceUID"],
                "%s: instance document %s with its path and parents" % (os.path.basename(p), sop),
                {k: d.get(k) for k in ("paths", "series_id", "study_id")})
        if "integrity" in e:
            c.eq(d.get("integrity"), e["integrity"], "%s: instance document carries the integrity object" %
                 os.path.basename(p))
        c.check(db.series.count_documents({"_id": ev["series"]["SeriesInstanceUID"]}) == 1 and
                db.studies.count_documents({"_id": ev["study"]["StudyInstanceUID"]}) == 1,
                "%s: its series and study documents exist" % os.path.basename(p))
    dups = [e["path"] for e in expected if e["case"] == "duplicate_uid"]
    sops = {next(x for x in o["events"] if x.get("path") == p)["instance"]["SOPInstanceUID"] for p in dups}
    c.eq(len(sops), 1, "duplicate-UID files share one SOPInstanceUID")
    d = db.instances.find_one({"_id": sops.pop()}) or {}
    c.eq(sorted(d.get("paths") or []), sorted(dups), "the duplicate UID is one document listing both paths")


if __name__ == "__main__":
    sys.exit(main())
