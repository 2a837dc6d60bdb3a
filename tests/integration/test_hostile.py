#!/usr/bin/python3
"""Hostile messages on every topic, against the live local stack (private
database, topics and groups; each topic has ONE partition so "the partition
keeps flowing" is observable, and allows 16 MB messages so the 10 MB values
reach the consumers instead of being refused by the broker).

For each consumed topic - jobs (producer), files (worker), instances (linker),
dlq (linker) - these messages are published before any daemon starts:
malformed JSON, a JSON array, an empty value, invalid UTF-8, wrong types,
unknown "v", missing required fields, a 10 MB non-JSON value, a 10 MB value
that is well-formed JSON, and paths outside the archive root. Then valid
messages follow on the same partitions. Checked:
  - every hostile message yields exactly one DLQ record of the consuming
    stage with a non-empty reason (a job whose only selector is a path
    outside the root is a valid request: it must be refused on the job
    document with a reason and publish no task);
  - the valid messages after them are processed (tasks published, events
    produced, documents written, failures counted);
  - the consumer groups' committed offsets reach the high watermark of every
    partition (`metadb lag --json`), i.e. the hostile offsets were committed;
  - no daemon crashed; each exits 0 on SIGTERM (ASan/UBSan builds: clean).
"""
import json
import shutil
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import reltest as rt  # noqa: E402

TEN_MB = 10 * 1024 * 1024


def hostile_common(topic, key):
    """The forms every topic gets, as (case, key, value bytes)."""
    return [
        ("malformed_json", key + "-malformed", b'{"v":1,"job_id":"' + key.encode() + b'-malformed", broken'),
        ("json_array", key + "-array", b"[1,2,3]"),
        ("empty_value", key + "-empty", b""),
        ("json_null", key + "-null", b"null"),
        ("invalid_utf8", key + "-utf8", b'{"v":1,"job_id":"bad\xff\xfeutf8","path":"/x\xc3"}'),
        ("huge_garbage_10MB", key + "-huge", b"A" * TEN_MB),
    ]


def main():
    c = rt.Checks("test_hostile")
    stack, with_linker = rt.preflight("the instances and dlq topics are NOT tested")

    base = rt.tempdir("mdb_hostile_")
    root = os.path.realpath(os.path.join(base, "archive"))
    up_to_slash = root + "/.." * root.count("/")  # resolves to "/"
    names = rt.Names("t_hostile_%d" % os.getpid(), stack, [root], partitions=1)
    procs = rt.Procs(base)
    mc = stack.mongo()
    db = mc[names.db]
    try:
        man = rt.generate_archive(root, patients=2, seed=91, extra=["--slices", "3:4"])
        patients = sorted({s["patient_id"] for s in man["studies"]})
        rt.topic_config(stack.brokers, 1, {"max.message.bytes": 16 * 1024 * 1024}, names.topics.values())
        rt.metadb(names, "index", "--quiet", timeout=300)
        rt.metadb(names, "researcher", "add", "alice", "--name", "Alice", "--email", "alice@example.org")
        rt.metadb(names, "collection", "create", "HOSTILE", "--description", "hostile messages")
        good_path = man["instances"][0]["path"]
        p = rt.metadb(names, "extract", "--job-id", "valid-event", good_path)
        good_event = json.loads(p.stdout.splitlines()[0])

        expect_dlq = {"producer": [], "worker": [], "linker": []}
        T = names.topics

        # ---------------- jobs -> producer
        jobs = hostile_common("jobs", "hj")
        jobs += [
            ("wrong_types", "hj-types", json.dumps({"v": 1, "job_id": "hj-types", "researcher_id": 5,
                                                    "collection": ["HOSTILE"], "patient_ids": "P"}).encode()),
            ("unknown_v", "hj-v", json.dumps({"v": 2, "job_id": "hj-v", "researcher_id": "alice",
                                              "collection": "HOSTILE", "patient_ids": patients[:1]}).encode()),
            ("missing_fields", "hj-missing", json.dumps({"v": 1, "job_id": "hj-missing", "researcher_id": "alice",
                                                         "collection": "HOSTILE"}).encode()),
            ("missing_v", "hj-nov", json.dumps({"job_id": "hj-nov", "researcher_id": "alice",
                                                "collection": "HOSTILE", "patient_ids": patients[:1]}).encode()),
            ("huge_json_10MB", "hj-hugejson", json.dumps({"v": 1, "job_id": "hj-hugejson", "researcher_id": "alice",
                                                          "collection": "HOSTILE",
                                                          "patient_ids": ["P" * TEN_MB]}).encode()),
        ]
        expect_dlq["producer"] = [(case, key) for case, key, _ in jobs]
        outside_jobs = [
            ("outside_root_abs", "hj-out-abs", {"paths": ["/etc/passwd"]}),
            ("outside_root_dotdot", "hj-out-dots", {"paths": [up_to_slash + "/etc/passwd"]}),
        ]
        for case, key, sel in outside_jobs:
            v = {"v": 1, "job_id": key, "researcher_id": "alice", "collection": "HOSTILE"}
            v.update(sel)
            jobs.append((case, key, json.dumps(v).encode()))

        # ---------------- files -> worker
        files = hostile_common("files", "hf")
        files += [
            ("wrong_types", "hf-types", json.dumps({"v": 1, "job_id": "hf-types", "path": 17}).encode()),
            ("unknown_v", "hf-v", json.dumps({"v": 99, "job_id": "hf-v", "path": good_path}).encode()),
            ("missing_fields", "hf-missing", json.dumps({"v": 1, "job_id": "hf-missing"}).encode()),
            ("huge_json_10MB", "hf-hugejson", json.dumps({"v": 1, "job_id": "hf-hugejson",
                                                          "path": root + "/" + "a" * TEN_MB}).encode()),
            ("outside_root_abs", "hf-out-abs", json.dumps({"v": 1, "job_id": "hf-out-abs",
                                                           "path": "/etc/passwd"}).encode()),
            ("outside_root_dotdot", "hf-out-dots", json.dumps({"v": 1, "job_id": "hf-out-dots",
                                                               "path": up_to_slash + "/etc/passwd"}).encode()),
            ("outside_root_relative", "hf-out-rel", json.dumps({"v": 1, "job_id": "hf-out-rel",
                                                                "path": "etc/passwd"}).encode()),
        ]
        expect_dlq["worker"] = [(case, key) for case, key, _ in files]

        # ---------------- instances -> linker
        def ev(mut, job):
            e = json.loads(json.dumps(good_event))
            e["job_id"] = job
            mut(e)
            return json.dumps(e).encode()

        def drop_sop(e):
            del e["instance"]["SOPInstanceUID"]

        def set_(path, value):
            def f(e):
                o = e
                for k in path[:-1]:
                    o = o[k]
                o[path[-1]] = value
            return f

        inst = hostile_common("instances", "hi")
        inst += [
            ("wrong_types", "hi-types", ev(set_(["study"], "not an object"), "hi-types")),
            ("wrong_types_size", "hi-size", ev(set_(["file", "size"], "big"), "hi-size")),
            ("unknown_v", "hi-v", ev(set_(["v"], 7), "hi-v")),
            ("missing_fields", "hi-missing", ev(drop_sop, "hi-missing")),
            ("huge_json_10MB", "hi-hugejson", ev(set_(["study", "StudyDescription"], "d" * TEN_MB), "hi-hugejson")),
            ("outside_root_abs", "hi-out-abs", ev(set_(["path"], "/etc/passwd"), "hi-out-abs")),
            ("outside_root_dotdot", "hi-out-dots", ev(set_(["path"], up_to_slash + "/etc/passwd"), "hi-out-dots")),
        ]

        # ---------------- dlq -> linker
        def rec(**kw):
            r = {"v": 1, "job_id": "hd-job", "path": root + "/x.dcm", "stage": "worker", "error": "not_dicom"}
            r.update(kw)
            return json.dumps({k: v for k, v in r.items() if v is not None}).encode()

        dlq = hostile_common("dlq", "hd")
        dlq += [
            ("wrong_types", "hd-types", rec(stage=5)),
            ("unknown_v", "hd-v", rec(v=3)),
            ("missing_fields", "hd-missing", rec(error=None)),
            ("unknown_stage", "hd-stage", rec(stage="martian")),
            ("huge_json_10MB", "hd-hugejson", rec(message="m" * TEN_MB)),
        ]
        if with_linker:
            expect_dlq["linker"] = [(case, "instances:" + key) for case, key, _ in inst] + \
                                   [(case, "dlq:" + key) for case, key, _ in dlq]

        # ---------------- publish hostile, then valid
        rt.kcat_produce(stack.brokers, T["jobs"], [(k, v) for _, k, v in jobs], big=True)
        rt.kcat_produce(stack.brokers, T["files"], [(k, v) for _, k, v in files], big=True)
        if with_linker:
            rt.kcat_produce(stack.brokers, T["instances"], [(k, v) for _, k, v in inst], big=True)
            rt.kcat_produce(stack.brokers, T["dlq"], [(k, v) for _, k, v in dlq], big=True)
        dlq_own = len(rt.kcat_consume(stack.brokers, T["dlq"]))  # records we published ourselves
        # valid after hostile: a job, a direct file task, a direct event, a direct DLQ record
        rt.metadb(names, "submit", "--researcher", "alice", "--collection", "HOSTILE", "--job-id", "valid-job",
                  "--patient", patients[0])
        rt.kcat_produce(stack.brokers, T["files"], [(good_path, json.dumps(
            {"v": 1, "job_id": "valid-file", "path": good_path}))])
        direct_sop = None
        if with_linker:
            other = man["instances"][-1]
            ev2 = json.loads(rt.metadb(names, "extract", "--job-id", "valid-event", other["path"]).stdout.splitlines()[0])
            direct_sop = other["sop_uid"]
            rt.kcat_produce(stack.brokers, T["instances"], [(other["study_uid"], json.dumps(ev2))])
            rt.kcat_produce(stack.brokers, T["dlq"], [("valid-dlq", json.dumps(
                {"v": 1, "job_id": "valid-dlq", "path": root + "/missing.dcm", "stage": "worker",
                 "error": "not_found", "message": "planted"}))])
        dlq_own_total = dlq_own + (1 if with_linker else 0)

        # ---------------- run the daemons
        procs.start("producer", names)
        procs.start("worker", names, extra=["--worker.threads=2"])
        if with_linker:
            procs.start("linker", names)

        job_files = {i["path"] for i in man["instances"] if i["study_uid"] in
                     {s["uid"] for s in man["studies"] if s["patient_id"] == patients[0]}}

        def dlq_records():
            out = []
            for _p, off, k, v in rt.kcat_consume(stack.brokers, T["dlq"]):
                if off < dlq_own_total and _p == 0:
                    continue
                try:
                    out.append((k, json.loads(v)))
                except ValueError:
                    out.append((k, {"unparseable": v[:200]}))
            return out

        def settled():
            recs = dlq_records()
            by_stage = {}
            for _k, r in recs:
                by_stage[r.get("stage")] = by_stage.get(r.get("stage"), 0) + 1
            want = all(by_stage.get(s, 0) >= len(v) for s, v in expect_dlq.items())
            groups = [("producer", T["jobs"]), ("worker", T["files"])]
            if with_linker:
                groups += [("linker", T["instances"]), ("linker", T["dlq"])]
            committed = all(rt.fully_committed(names, names.groups[g], t) for g, t in groups)
            return want and committed and all(p.alive() for p in procs.all)

        t0 = time.time()
        ok = rt.wait_for(lambda: settled() or any(not p.alive() for p in procs.all), timeout=240, interval=2)
        rt.note("settled after %.0fs" % (time.time() - t0))
        for p in procs.all:
            c.check(p.alive(), "%s (pid %d) still running after the hostile messages" % (p.role, p.pid),
                    p.log_text()[-1500:])
        c.check(ok, "every hostile message answered and every offset committed within 240s")

        recs = dlq_records()
        by_stage = {}
        for k, r in recs:
            by_stage.setdefault(r.get("stage"), []).append((k, r))
        for stage, exp in expect_dlq.items():
            got = by_stage.get(stage, [])
            c.eq(len(got), len(exp), "%s: one DLQ record per hostile message (%d)" % (stage, len(exp)))
            empty = [r for _k, r in got if not (isinstance(r.get("error"), str) and r["error"])]
            c.check(not empty, "%s: every DLQ record has a reason" % stage, empty[:3])
            reasons = {}
            for _k, r in got:
                reasons[r.get("error")] = reasons.get(r.get("error"), 0) + 1
            rt.note("%s DLQ reasons: %s" % (stage, json.dumps(reasons, sort_keys=True)))
        unexpected = [s for s in by_stage if s not in expect_dlq or (s == "linker" and not with_linker)]
        c.check(not unexpected, "no DLQ records from other stages", unexpected)

        # worker: every hostile task's DLQ record names it (path from the key, or the salvaged job id)
        wrecs = by_stage.get("worker", [])
        for case, key in expect_dlq["worker"]:
            n = sum(1 for _k, r in wrecs if key in (r.get("job_id"), r.get("path")))
            c.check(n == 1 or case in ("invalid_utf8",), "worker DLQ names hostile %s (%s): %d record(s)" % (
                case, key, n))
        outside = [r for _k, r in wrecs if (r.get("job_id") or "").startswith("hf-out")]
        c.check(len(outside) == 3 and all(r["error"] in ("outside_archive", "not_found") for r in outside),
                "worker refuses paths outside the root with outside_archive/not_found",
                [(r.get("job_id"), r.get("error")) for r in outside])
        # producer: hostile job ids that are usable ids got a failed job document
        for case, key in expect_dlq["producer"]:
            n = sum(1 for k, r in by_stage.get("producer", []) if r.get("job_id") == key or k == key)
            if case not in ("invalid_utf8", "malformed_json"):
                c.check(n == 1, "producer DLQ names hostile %s (%s): %d record(s)" % (case, key, n))
        for case, key, _sel in outside_jobs:
            j = db.jobs.find_one({"_id": key}) or {}
            sels = j.get("selectors") or []
            c.check(j.get("state") in ("completed", "completed_with_errors", "failed") and sels and
                    all(s.get("status") == "refused" and s.get("reason") for s in sels),
                    "job %s (%s) refused on its document with a reason" % (key, case),
                    {k: j.get(k) for k in ("state", "selectors", "errors")})
        tasks = rt.kcat_json(stack.brokers, T["files"])
        leaked = [v.get("path") for _k, v in tasks if isinstance(v, dict) and (v.get("job_id") or "").startswith(
            "hj-")]
        c.check(not leaked, "no task published for a hostile job", leaked[:5])

        # valid messages after the hostile ones were processed
        vtasks = {v.get("path") for _k, v in tasks if isinstance(v, dict) and v.get("job_id") == "valid-job"}
        c.eq(vtasks, job_files, "the valid job after the hostile ones published its %d tasks" % len(job_files))
        events = rt.kcat_json(stack.brokers, T["instances"])
        ev_paths = {(v.get("job_id"), v.get("path")) for _k, v in events if isinstance(v, dict)}
        c.check(("valid-file", good_path) in ev_paths, "the valid file task after the hostile ones became an event")
        c.check(all(("valid-job", p) in ev_paths for p in job_files), "the valid job's files became events")
        if with_linker:
            c.check(rt.wait_for(lambda: db.instances.find_one({"_id": direct_sop}, {"_id": 1}), 60),
                    "the valid event after the hostile ones was linked (instances/%s)" % direct_sop)
            jf = rt.wait_for(lambda: db.job_files.find_one({"_id": "valid-dlq\n" + root + "/missing.dcm"}), 60)
            c.check(jf and jf.get("status") == "failed", "the valid DLQ record after the hostile ones was counted",
                    jf)
            for bad_path in ("/etc/passwd",):
                d = db.instances.find_one({"paths": bad_path}, {"_id": 1})
                c.check(d is None, "no instance document carries the path %s from a hostile event" % bad_path, d)

        # offsets committed, per group and topic
        groups = [("producer", T["jobs"]), ("worker", T["files"])]
        if with_linker:
            groups += [("linker", T["instances"]), ("linker", T["dlq"])]
        for g, t in groups:
            c.check(rt.fully_committed(names, names.groups[g], t), "%s group committed every offset of %s" % (g, t),
                    rt.lag(names, names.groups[g]))
        rt.stop_checked(c, procs)
    except Exception as e:  # noqa: BLE001 - report, clean up, fail
        import traceback
        traceback.print_exc()
        c.check(False, "test raised %s: %s" % (type(e).__name__, e))
    finally:
        rt.teardown(c, procs, mc, names.db)
        shutil.rmtree(base, ignore_errors=True)
    return c.summary()


if __name__ == "__main__":
    sys.exit(main())
