#!/usr/bin/python3
"""Integration test of metadb-producer and the job commands against the live
local Kafka and MongoDB (private database, topics and consumer group).

The producer runs under strace for the whole test. Checked:
  - a job for three accession numbers, published once with kcat (raw JSON)
    and once with `metadb submit`, produces exactly the files of those
    accessions, one task per file keyed by path, and the same tasks for both;
    both jobs reach the same state with the same per-selector resolution and
    are linked to their researcher and collection;
  - malformed job messages (bad JSON, no selector, not an object) go to the
    DLQ with a reason, their job (when the key names one) is marked failed,
    and the producer keeps going;
  - an unknown accession is recorded "not found" and the job completes;
  - redelivery of the same job message creates no second job and publishes
    nothing more; a job interrupted mid-publish (state resolving) is
    published again in full on redelivery, with files_total exact, and
    completes at once when the linker already accounted for every file;
  - traversal attempts ('..', an absolute path elsewhere, a symlink escaping
    the root, a relative path) are refused and recorded on the job, and only
    the legitimate file of the request is published;
  - --all-cases and --manifest select the collection's cases; --features is
    carried by every task; unknown researcher -> job failed;
  - `metadb retry` re-publishes exactly the failed files as a new job;
  - `metadb status` (text and JSON);
  - database errors surface: as the read-only user, `researcher add` and
    `collection add-cases` exit 1 with the server's refusal, reads still work;
  - strace: the producer opened nothing outside the archive root (it opens no
    DICOM file at all) and exits 0 on SIGTERM.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import producer_support as ps  # noqa: E402


def tasks_by_job(env):
    out = {}
    for key, value in ps.kcat_consume_all(env.topics["files"]):
        try:
            m = json.loads(value)
        except ValueError:
            out.setdefault("__bad__", []).append(value)
            continue
        out.setdefault(m.get("job_id"), []).append((key, m.get("path"), m.get("selector"), m.get("feature_set")))
    return out


def read_only_uri():
    """The read-only user's URI: tests/run.sh exports it; the local stack keeps it in a file."""
    uri = os.environ.get("MDB_TEST_MONGO_RO_URI", "")
    path = os.path.join(os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb")), "database", "metadb_ro.uri")
    if not uri and os.path.exists(path):
        with open(path) as f:
            uri = f.read().strip()
    return uri


def job(env, job_id):
    return env.db.jobs.find_one({"_id": job_id})


def wait_state(env, job_id, states, timeout=60):
    def probe():
        j = job(env, job_id)
        return j if j and j.get("state") in states else None
    return ps.wait_for(probe, timeout=timeout)


def submit(env, *args, check=True):
    p = env.metadb("submit", "--researcher", "alice", "--collection", "LIDC", *args, check=check)
    return p.stdout.strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else None, p


def stop(proc, traced):
    """SIGTERM the producer (under strace: strace's child) and return its exit status."""
    kids = []
    if traced:
        # strace exits with its child's status; signal the child itself.
        try:
            with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
    for k in kids:
        os.kill(k, signal.SIGTERM)
    if not kids:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for k in kids:
            os.kill(k, signal.SIGKILL)
        proc.kill()
        return proc.wait()


def main():
    c = ps.Checks("test_producer")
    base = ps.tempdir("mdb_producer_")
    root = os.path.join(base, "archive")
    outside = os.path.join(base, "outside-secret")
    env = None
    prod = None
    log_path = os.path.join(base, "producer.log")
    trace = os.path.join(base, "strace.txt")
    pid = os.getpid()
    try:
        manifest = ps.generate_archive(root, patients=6, seed=73)
        root = os.path.realpath(root)
        studies = manifest["studies"]
        paths_of_study = {}
        for inst in manifest["instances"]:
            paths_of_study.setdefault(inst["study_uid"], set()).add(os.path.realpath(inst["path"]))
        os.makedirs(outside)
        some_file = sorted(paths_of_study[studies[0]["uid"]])[0]
        with open(some_file, "rb") as f, open(os.path.join(outside, "secret.dcm"), "wb") as g:
            g.write(f.read())
        escape_link = os.path.join(os.path.dirname(some_file), "escape.dcm")
        os.symlink(os.path.join(outside, "secret.dcm"), escape_link)

        env = ps.Env("producer", [root])
        env.metadb("topics")
        env.metadb("index", "--quiet")
        env.metadb("researcher", "add", "alice", "--name", "Alice Example", "--email", "alice@example.org")
        env.metadb("collection", "create", "LIDC", "--description", "producer test cohort")
        # Cases: three patients; the first by accession, the others by patient id.
        cases_csv = os.path.join(base, "cases.csv")
        case_studies = studies[:3]
        with open(cases_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "patient_id", "accession_numbers"])
            w.writerow(["case-1", case_studies[0]["patient_id"], case_studies[0]["accession"]])
            for i, s in enumerate(case_studies[1:], 2):
                w.writerow(["case-%d" % i, s["patient_id"], ""])
        env.metadb("collection", "add-cases", "LIDC", "--manifest", cases_csv)

        # --- researchers and collections: validation, idempotence, all-or-nothing manifests ---
        p = env.metadb("researcher", "add", "eve", "--name", "Eve", "--email", "eve@localhost", check=False)
        c.check(p.returncode == 2 and "e-mail" in p.stderr, "invalid e-mail refused", p.stderr)
        p = env.metadb("researcher", "add", "alice", "--name", "Alice Example", "--email", "alice@example.org")
        c.check("unchanged" in p.stdout, "adding the same researcher again is a no-op", p.stdout)
        p = env.metadb("researcher", "add", "alice", "--name", "Alice B", "--email", "alice@example.org", check=False)
        c.check(p.returncode == 1 and "--update" in p.stderr, "changing a researcher needs --update", p.stderr)
        p = env.metadb("researcher", "list")
        c.check("alice" in p.stdout and "alice@example.org" in p.stdout, "researcher list", p.stdout)
        p = env.metadb("collection", "create", "LIDC", "--description", "producer test cohort")
        c.check("unchanged" in p.stdout, "creating the same collection again is a no-op", p.stdout)
        p = env.metadb("collection", "create", "LIDC", "--description", "other", check=False)
        c.eq(p.returncode, 1, "same collection with another description refused")
        p = env.metadb("collection", "add-cases", "LIDC", "--manifest", cases_csv)
        c.check("0 cases added (3 already present)" in p.stdout, "re-loading a manifest adds nothing", p.stdout)
        conflict_csv = os.path.join(base, "conflict.csv")
        with open(conflict_csv, "w") as f:
            f.write("case_id,patient_id,accession_numbers\ncase-9,NEWPATIENT,\ncase-1,SOMEONE-ELSE,\n")
        p = env.metadb("collection", "add-cases", "LIDC", "--manifest", conflict_csv, check=False)
        c.check(p.returncode == 1 and "line 3" in p.stderr and "case-1" in p.stderr,
                "a case conflicting with the collection is reported by line", p.stderr)
        broken_csv = os.path.join(base, "broken.csv")
        with open(broken_csv, "w") as f:
            f.write("case_id,patient_id,accession_numbers\ncase-8,P8,\ncase-7\ncase-8,P9,\n")
        p = env.metadb("collection", "add-cases", "LIDC", "--manifest", broken_csv, check=False)
        c.check(p.returncode == 1 and "line 3: expected 3 fields" in p.stderr and "line 4: duplicate case_id" in p.stderr,
                "malformed and duplicate rows reported by line number", p.stderr)
        c.eq(len(env.db.collections.find_one({"_id": "LIDC"})["cases"]), 3,
             "nothing written by refused manifests")
        p = env.metadb("collection", "show", "LIDC")
        c.check("case-1" in p.stdout and "cases       3" in p.stdout, "collection show lists the cases", p.stdout)

        # --- database errors surface: a write the server refuses (read-only user) ---
        ro_uri = read_only_uri()
        if c.check(ro_uri, "a read-only URI (MDB_TEST_MONGO_RO_URI or $METADB_HOME/database/metadb_ro.uri)"):
            def as_ro(*args):
                flags = [f if not f.startswith("--mongo.uri=") else "--mongo.uri=" + ro_uri for f in env.config_flags()]
                return subprocess.run([ps.METADB] + flags + list(args), capture_output=True, text=True, timeout=120,
                                      env=env.env())
            p = as_ro("researcher", "add", "bob", "--name", "Bob", "--email", "bob@example.org")
            c.check(p.returncode == 1 and "metadb researcher add:" in p.stderr and "authoriz" in p.stderr.lower(),
                    "a refused write exits 1 with the server's message", p.stderr)
            more_csv = os.path.join(base, "more.csv")
            with open(more_csv, "w") as f:
                f.write("case_id,patient_id,accession_numbers\ncase-ro,RO-PATIENT,\n")
            p = as_ro("collection", "add-cases", "LIDC", "--manifest", more_csv)
            c.check(p.returncode == 1 and "nothing was added" in p.stderr and "authoriz" in p.stderr.lower(),
                    "add-cases refused by the server: exit 1, the server's message", p.stderr)
            p = as_ro("researcher", "list")
            c.check(p.returncode == 0 and "alice" in p.stdout, "reads still work as the read-only user", p.stderr)
            c.eq(env.db.researchers.find_one({"_id": "bob"}), None, "nothing written through the read-only user")

        prod_cmd = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,creat", "-o", trace,
                    ps.PRODUCER] + env.config_flags()
        log = open(log_path, "w")
        prod = subprocess.Popen(prod_cmd, stdout=log, stderr=subprocess.STDOUT, env=env.env(traced=True))

        # --- bad messages first: the producer must keep going after them ---
        ps.kcat_produce(env.topics["jobs"], "broken-%d" % pid, '{"v":1,"job_id":"broken-%d", broken' % pid)
        ps.kcat_produce(env.topics["jobs"], "nosel-%d" % pid,
                        json.dumps({"v": 1, "job_id": "nosel-%d" % pid, "researcher_id": "alice",
                                    "collection": "LIDC"}))
        ps.kcat_produce(env.topics["jobs"], "array-%d" % pid, "[1, 2, 3]")

        # --- three accession numbers, by kcat and by metadb submit ---
        three = [s for s in studies if s["accession"]][:3]
        accs = [s["accession"] for s in three]
        want_paths = set().union(*(paths_of_study[s["uid"]] for s in three))
        kcat_id = "kcat-%d" % pid
        kcat_msg = json.dumps({"v": 1, "job_id": kcat_id, "researcher_id": "alice", "collection": "LIDC",
                               "accession_numbers": accs, "submitted_at": "2026-01-01T00:00:00.000Z"})
        ps.kcat_produce(env.topics["jobs"], kcat_id, kcat_msg)
        cli_id, p = submit(env, "--accession", *accs)
        c.check(cli_id is not None, "metadb submit prints the job id", p.stderr)
        jk = wait_state(env, kcat_id, ("running",))
        jc = wait_state(env, cli_id, ("running",))
        c.check(jk is not None, "kcat job reaches running", job(env, kcat_id))
        c.check(jc is not None, "CLI job reaches running", job(env, cli_id))
        tasks = tasks_by_job(env)
        tk, tc = tasks.get(kcat_id, []), tasks.get(cli_id, [])
        c.eq(len(tk), len(want_paths), "kcat job: one task per file")
        c.eq({t[1] for t in tk}, want_paths, "kcat job publishes exactly the files of the three accessions")
        c.eq(sorted((t[1], t[2], t[3]) for t in tk), sorted((t[1], t[2], t[3]) for t in tc),
             "kcat and CLI jobs publish the same file tasks")
        c.check(all(t[0] == t[1] for t in tk + tc), "tasks are keyed by path")
        if jk and jc:
            c.eq(jk["files_total"], len(want_paths), "files_total of the kcat job")
            c.eq(jc["files_total"], len(want_paths), "files_total of the CLI job")
            sel_k = [(s["selector"], s["status"], s["files"]) for s in jk["selectors"]]
            sel_c = [(s["selector"], s["status"], s["files"]) for s in jc["selectors"]]
            c.eq(sel_k, sel_c, "same per-selector resolution")
            c.eq(sel_k, [("accession:" + s["accession"], "found", len(paths_of_study[s["uid"]])) for s in three],
                 "per-selector counts")
        r = env.db.researchers.find_one({"_id": "alice"})
        col = env.db.collections.find_one({"_id": "LIDC"})
        c.check(kcat_id in r.get("job_ids", []) and cli_id in r.get("job_ids", []), "jobs linked to the researcher")
        c.check(kcat_id in col.get("job_ids", []) and cli_id in col.get("job_ids", []),
                "jobs linked to the collection")

        # --- the bad messages: DLQ + failed jobs, producer alive ---
        def dlq():
            return [json.loads(v) for _, v in ps.kcat_consume_all(env.topics["dlq"])]
        recs = ps.wait_for(lambda: (lambda d: d if len(d) >= 3 else None)(dlq()), timeout=30) or dlq()
        c.eq(len(recs), 3, "three DLQ records")
        c.check(all(x.get("stage") == "producer" and x.get("error") == "invalid_job" and x.get("message")
                    for x in recs), "DLQ records carry stage, reason and message", recs)
        c.eq(sorted(x.get("job_id") or "" for x in recs),
             sorted(["array-%d" % pid, "broken-%d" % pid, "nosel-%d" % pid]),
             "DLQ records name the job (from the message, else its key)")
        for bad in ("broken-%d" % pid, "nosel-%d" % pid, "array-%d" % pid):
            j = job(env, bad)
            c.check(j is not None and j["state"] == "failed" and j["errors"], "%s recorded as failed" % bad, j)
        c.check(prod.poll() is None, "producer still running after bad messages")

        # --- unknown accession: not found, job completes ---
        nope = "NOPE-%d" % pid
        p = env.metadb("submit", "--researcher", "alice", "--collection", "LIDC", "--accession", nope, "--wait",
                       "--timeout", "60", check=False)
        c.eq(p.returncode, 0, "job with only an unknown accession completes (exit 0)")
        nope_id = p.stdout.strip().splitlines()[0] if p.stdout.strip() else None
        jn = job(env, nope_id) if nope_id else None
        c.check(jn is not None and jn["state"] == "completed" and jn["files_total"] == 0,
                "unknown accession: completed with 0 files", jn)
        if jn:
            c.eq([(s["selector"], s["status"]) for s in jn["selectors"]], [("accession:" + nope, "not_found")],
                 "unknown accession recorded as not found")
            c.check("not found" in p.stderr.lower() or "NOT FOUND" in p.stderr, "--wait shows the resolution",
                    p.stderr)
        mixed_id, _ = submit(env, "--accession", accs[0], nope)
        jm = wait_state(env, mixed_id, ("running",))
        c.check(jm is not None and [s["status"] for s in jm["selectors"]] == ["found", "not_found"],
                "known + unknown accession: found and not_found", jm and jm["selectors"])

        # --- redelivery of the same message: no second job, nothing more published ---
        before = job(env, kcat_id)
        ps.kcat_produce(env.topics["jobs"], kcat_id, kcat_msg)
        seen = ps.wait_for(lambda: "job=%s job already running" % kcat_id in open(log_path).read(), timeout=30)
        c.check(seen, "producer reports the redelivered request as a duplicate")
        after = job(env, kcat_id)
        c.eq(env.db.jobs.count_documents({"_id": kcat_id}), 1, "still one job document")
        c.eq((after["state"], after["files_total"], after["selectors"]),
             (before["state"], before["files_total"], before["selectors"]), "redelivery changes no count")
        c.eq(len(tasks_by_job(env).get(kcat_id, [])), len(want_paths), "redelivery publishes no task")

        # --- crash mid-publish: state resolving -> everything published again, files_total exact ---
        env.db.jobs.update_one({"_id": kcat_id}, {"$set": {"state": "resolving", "files_total": 0}})
        env.db.job_files.insert_many([{"_id": kcat_id + "\n" + pth, "job_id": kcat_id, "path": pth,
                                       "status": "done"} for pth in sorted(want_paths)])
        ps.kcat_produce(env.topics["jobs"], kcat_id, kcat_msg)
        jr = wait_state(env, kcat_id, ("completed", "completed_with_errors"))
        c.check(jr is not None and jr["state"] == "completed", "resumed job re-published and completed", jr)
        if jr:
            c.eq((jr["files_total"], jr["files_done"], jr["files_failed"]), (len(want_paths), len(want_paths), 0),
                 "resumed job: exact totals")
        tk2 = tasks_by_job(env).get(kcat_id, [])
        c.eq(len(tk2), 2 * len(want_paths), "resumed job re-published every task once more")
        c.eq({t[1] for t in tk2}, want_paths, "re-published tasks are the same files")

        # --- traversal attempts ---
        legit = sorted(paths_of_study[studies[1]["uid"]])[0]
        trav_id = "trav-%d" % pid
        attempts = [root + "/../outside-secret/secret.dcm", os.path.join(outside, "secret.dcm"), escape_link,
                    "archive/relative.dcm", root + "/./" + os.path.relpath(legit, root)]
        ps.kcat_produce(env.topics["jobs"], trav_id, json.dumps(
            {"v": 1, "job_id": trav_id, "researcher_id": "alice", "collection": "LIDC", "paths": attempts + [legit]}))
        jt = wait_state(env, trav_id, ("running",))
        c.check(jt is not None, "traversal job processed", job(env, trav_id))
        if jt:
            st = {s["value"]: s for s in jt["selectors"]}
            for a in attempts:
                s = st.get(a, {})
                c.check(s.get("status") == "refused" and s.get("reason"), "refused with a reason: %s" % a, s)
            c.eq(st.get(legit, {}).get("status"), "found", "legitimate path in the same job accepted")
            c.eq(jt["files_total"], 1, "only the legitimate file counted")
            errs = {e.get("path"): e for e in jt.get("errors", [])}
            c.check(all(a in errs and errs[a]["stage"] == "producer" for a in attempts),
                    "every refusal recorded in the job's errors", jt.get("errors"))
            c.check("traversal" in st[attempts[0]]["reason"], "'..' refused as traversal", st[attempts[0]])
        c.eq([t[1] for t in tasks_by_job(env).get(trav_id, [])], [legit], "traversal job publishes only the legit file")
        only_id = "trav-only-%d" % pid
        ps.kcat_produce(env.topics["jobs"], only_id, json.dumps(
            {"v": 1, "job_id": only_id, "researcher_id": "alice", "collection": "LIDC", "paths": ["/etc/passwd"]}))
        jo = wait_state(env, only_id, ("completed_with_errors", "completed", "failed"))
        c.check(jo is not None and jo["state"] == "completed_with_errors", "job of only refused paths: with errors",
                jo)

        # --- all cases and manifest ---
        case_paths = set()
        case_paths |= paths_of_study[case_studies[0]["uid"]]
        for s in case_studies[1:]:
            case_paths |= set().union(*(paths_of_study[x["uid"]] for x in studies if x["patient_id"] == s["patient_id"]))
        all_id, _ = submit(env, "--all-cases")
        man_id, _ = submit(env, "--manifest", cases_csv, "--features", "extended")
        ja = wait_state(env, all_id, ("running",))
        jmf = wait_state(env, man_id, ("running",))
        tasks = tasks_by_job(env)
        c.eq({t[1] for t in tasks.get(all_id, [])}, case_paths, "--all-cases publishes the files of every case")
        c.eq({t[1] for t in tasks.get(man_id, [])}, case_paths, "--manifest selects the same files")
        c.check(ja is not None and [s["selector"] for s in ja["selectors"]] == ["case:case-1", "case:case-2",
                                                                                  "case:case-3"],
                "--all-cases: one selector per case", ja and ja["selectors"])
        c.check(bool(tasks.get(man_id)) and all(t[3] == "extended" for t in tasks.get(man_id, [])),
                "--features carried by every task")
        c.check(jmf is not None and jmf.get("feature_set") == "extended", "feature set recorded on the job")
        bad_csv = os.path.join(base, "bad.csv")
        with open(bad_csv, "w") as f:
            f.write("case_id,patient_id,accession_numbers\nX1,P1,A\nX1,P2,B\n")
        _, p = submit(env, "--manifest", bad_csv, check=False)
        c.check(p.returncode == 1 and "line 3" in p.stderr, "bad manifest refused with its line number", p.stderr)

        # --- unknown researcher ---
        ur_id = "unknown-r-%d" % pid
        ps.kcat_produce(env.topics["jobs"], ur_id, json.dumps(
            {"v": 1, "job_id": ur_id, "researcher_id": "mallory", "collection": "LIDC", "accession_numbers": accs}))
        ju = wait_state(env, ur_id, ("failed",))
        c.check(ju is not None and any(e["error"] == "unknown_researcher" for e in ju["errors"]),
                "unknown researcher: job failed with the reason", job(env, ur_id))
        p = env.metadb("submit", "--researcher", "mallory", "--collection", "LIDC", "--accession", "x", check=False)
        c.check(p.returncode == 1 and "unknown researcher" in p.stderr, "CLI refuses an unknown researcher", p.stderr)

        # --- retry: exactly the failed files ---
        p = env.metadb("retry", cli_id, check=False)
        c.check(p.returncode == 1 and "still running" in p.stderr, "retry of a running job is refused", p.stderr)
        failed = sorted(want_paths)[:2]
        env.db.job_files.insert_many([{"_id": cli_id + "\n" + pth, "job_id": cli_id, "path": pth,
                                       "status": "failed" if pth in failed else "done"} for pth in sorted(want_paths)])
        env.db.jobs.update_one({"_id": cli_id}, {"$set": {"state": "completed_with_errors"}})
        p = env.metadb("retry", cli_id, "--features", "extended", check=False)
        c.eq(p.returncode, 0, "metadb retry succeeds")
        retry_id = p.stdout.strip().splitlines()[0] if p.stdout.strip() else None
        jrt = wait_state(env, retry_id, ("running",)) if retry_id else None
        c.check(jrt is not None and jrt.get("retry_of") == cli_id, "retry job records retry_of", jrt)
        rt = tasks_by_job(env).get(retry_id, [])
        c.eq(sorted(t[1] for t in rt), failed, "retry publishes exactly the failed files")
        c.check(rt and all(t[3] == "extended" for t in rt), "retry carries the new feature set")
        c.check(retry_id in (job(env, cli_id) or {}).get("retries", []), "original job lists its retry")

        # --- status ---
        p = env.metadb("status", kcat_id, check=False)
        c.check(p.returncode == 0 and "completed" in p.stdout and "accession:" in p.stdout,
                "status shows state and selectors", p.stdout)
        p = env.metadb("status", trav_id, "--json", check=False)
        try:
            sj = json.loads(p.stdout)
        except ValueError:
            sj = {}
        c.eq(sj.get("_id"), trav_id, "status --json prints the job document")
        c.eq(p.returncode, 5, "status exit code of a running job")
        p = env.metadb("status", check=False)
        c.check(p.returncode == 0 and kcat_id in p.stdout and cli_id in p.stdout, "status lists recent jobs")
        p = env.metadb("status", "no-such-job", check=False)
        c.check(p.returncode == 1 and "no job" in p.stderr, "status of an unknown job", p.stderr)

        c.check(prod.poll() is None, "producer still running at the end")
        c.eq(stop(prod, True), 0, "producer exits 0 on SIGTERM")
        prod = None

        # --- a second producer, not traced (so LeakSanitizer runs in sanitizer builds) ---
        log2 = open(log_path + ".2", "w")
        prod2 = subprocess.Popen([ps.PRODUCER] + env.config_flags(), stdout=log2, stderr=subprocess.STDOUT,
                                 env=env.env())
        try:
            last_id = "last-%d" % pid
            ps.kcat_produce(env.topics["jobs"], "bad-again-%d" % pid, "{not json")
            ps.kcat_produce(env.topics["jobs"], last_id, json.dumps(
                {"v": 1, "job_id": last_id, "researcher_id": "alice", "collection": "LIDC",
                 "accession_numbers": [accs[0], nope], "paths": ["/etc/passwd"], "feature_set": "extended"}))
            ps.kcat_produce(env.topics["jobs"], kcat_id, kcat_msg)  # duplicate of a finished job
            jl = wait_state(env, last_id, ("running",))
            c.check(jl is not None and [s["status"] for s in jl["selectors"]] == ["found", "not_found", "refused"],
                    "second producer: found / not_found / refused", jl and jl["selectors"])
            c.check(ps.wait_for(lambda: "job=%s job already completed" % kcat_id in open(log_path + ".2").read(),
                                timeout=30), "second producer ignores the duplicate of a completed job")
        finally:
            c.eq(stop(prod2, False), 0, "untraced producer exits 0 on SIGTERM (no leak under LSan)")
            log2.close()
        if c.failures:
            with open(log_path + ".2") as f:
                print("---- second producer log ----\n" + f.read()[-4000:])
    finally:
        if prod is not None and prod.poll() is None:
            stop(prod, True)
        with open(log_path) if os.path.exists(log_path) else open(os.devnull) as f:
            logtext = f.read()
        if c.failures:
            print("---- producer log ----\n" + logtext[-6000:])
        if os.path.exists(trace):
            with open(trace, errors="replace") as f:
                lines = f.read().splitlines()
            c.check(len(lines) > 0, "strace recorded the producer's opens")
            c.eq([ln for ln in lines if outside in ln], [], "strace: nothing outside the archive root opened")
            c.eq([ln for ln in lines if ".dcm" in ln], [], "strace: the producer opens no DICOM file")
        if env:
            env.cleanup()
        ps.rmtree(base)
    c.done()


if __name__ == "__main__":
    main()
