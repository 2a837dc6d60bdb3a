#!/usr/bin/python3
"""The fault-injection suite (run by tests/e2e/test_faults.sh).

Everything runs on an ISOLATED stack (deploy/stack.sh with a private
METADB_HOME and private ports): the broker and the database are restarted
here, and processes are killed in the middle of queries, which must never
touch the shared stack.

One generated archive (~100 files, MDB_FAULT_FILES) is processed by the full
pipeline: metadb index -> metadb submit -> metadb-producer -> two
metadb-workers -> metadb-linker. Each run uses its own database, topics and
consumer groups. A clean run gives the reference canonical dump
(`metadb dump`); then, for each fault, MDB_FAULT_RUNS runs (default 1) inject
it in the middle of the job:

  kill9-producer   kill -9 the producer while it resolves (odd runs) / publishes (even runs) the job, restart it
  kill9-worker     kill -9 one worker with ~30% of the events produced, restart it
  kill9-linker     kill -9 the linker with ~30% of the files linked, restart it
  restart-kafka    stop the broker (deploy/stack.sh stop --only kafka) at ~30%, start it again
  restart-database stop the database at ~30%, start it again
  pause-worker     SIGSTOP one worker at ~30% for kafka.session_timeout_ms + 4 s, then SIGCONT

Workers open each DICOM file through `strace -e inject=openat:delay_enter`
(a few ms per file) so that a job of ~100 files lasts long enough for a
fault to land in its middle; this changes timing only.

After recovery the job must reach `completed` with files_done == files_total
== files in the archive, files_failed == 0, instances_linked == files; every
consumer group must have committed everything; the canonical dump must be
byte-identical to the clean run's. The suite prints a table:
  fault, runs, lost, duplicated, recovered-in seconds (max over runs), dump == clean
"lost": archive instances missing from the database plus files the job
counters are short of; "duplicated": counter surplus (done+failed over total,
instances_linked over files), instance_count surplus over the children, and
repeated entries in paths[]/job_ids[].
A database that stops answering is detected by a bounded ping, reported, and
restarted ("restart-database" stops and starts PostgreSQL and the gateway).
Exit status 0 only when every run of every fault is exact.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reltest as rt  # noqa: E402

RUNS = int(os.environ.get("MDB_FAULT_RUNS", "1"))
FILES = int(os.environ.get("MDB_FAULT_FILES", "100"))
ONLY = [f for f in os.environ.get("MDB_FAULTS", "").split(",") if f]
SESSION_MS = 6000
OPEN_DELAY_US = int(os.environ.get("MDB_FAULT_OPEN_DELAY_US", "40000"))
JOB_TIMEOUT = 240
FAULTS = ["kill9-producer", "kill9-worker", "kill9-linker", "restart-kafka", "restart-database", "pause-worker"]


class Run:
    """One pipeline deployment (db, topics, groups) on the isolated stack."""

    def __init__(self, stack, root, base, tag, patients, n=1):
        self.n = n
        self.stack = stack
        self.names = rt.Names(tag, stack, [root], partitions=3)
        self.procs = rt.Procs(os.path.join(base, tag))
        os.makedirs(self.procs.logdir, exist_ok=True)
        self.patients = patients
        self.job = tag + "-job"
        self.workers = []
        self.linker = None
        self.producer = None
        self.notes = []
        self.mid_job = None

    def metadb(self, *args, **kw):
        return rt.metadb(self.names, *args, **kw)

    def prepare(self):
        self.metadb("topics", timeout=120)
        self.metadb("index", "--quiet", timeout=300)
        self.metadb("researcher", "add", "fault", "--name", "Fault Tester", "--email", "fault@example.org")
        self.metadb("collection", "create", "FAULTS", "--description", "fault injection")

    def start_producer(self):
        self.producer = self.procs.start("producer", self.names)
        return self.producer

    def start_worker(self):
        env = rt.clean_env()
        # LeakSanitizer cannot run under ptrace; ASan/UBSan still do
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        wrapper = ["strace", "-f", "-qq", "-o", "/dev/null", "--seccomp-bpf", "-e", "trace=openat",
                   "-e", "inject=openat:delay_enter=%d" % OPEN_DELAY_US]
        w = self.procs.start("worker", self.names, wrapper=wrapper, env=env,
                             extra=["--worker.threads=1", "--kafka.session_timeout_ms=%d" % SESSION_MS])
        self.workers.append(w)
        return w

    def start_linker(self):
        self.linker = self.procs.start("linker", self.names,
                                       extra=["--linker.batch_size=8", "--linker.batch_ms=100",
                                              "--kafka.session_timeout_ms=%d" % SESSION_MS])
        return self.linker

    def submit(self):
        args = ["submit", "--researcher", "fault", "--collection", "FAULTS", "--job-id", self.job, "--patient"]
        self.metadb(*(args + self.patients), timeout=120)

    def job_doc(self, timeout_ms=5000):
        try:
            c = self.stack.mongo(timeout_ms)
            try:
                return c[self.names.db].jobs.find_one({"_id": self.job}) or {}
            finally:
                c.close()
        except Exception:  # noqa: BLE001 - the database may be down (that is a fault we inject)
            return None

    def events_produced(self):
        """Instance events on the topic so far (sum of high watermarks)."""
        lg = rt.lag(self.names, self.names.groups["linker"], timeout=30)
        if not lg or self.names.topics["instances"] not in lg:
            return 0
        return sum(h or 0 for _c, h in lg[self.names.topics["instances"]].values())

    def wait_started(self, timeout=90):
        """Every running daemon has logged "<role> started" (signal handlers are
        in place: a SIGTERM earlier kills a process that is still loading)."""
        def probe():
            return all("%s started" % p.role in p.log_text() for p in self.procs.running())
        return rt.wait_for(probe, timeout, interval=0.2)

    def final(self, timeout):
        def probe():
            j = self.job_doc()
            return j if j and j.get("state") in ("completed", "completed_with_errors", "failed") else None
        return rt.wait_for(probe, timeout, interval=0.5)

    def all_committed(self):
        n = self.names
        return all(rt.fully_committed(n, n.groups[g], n.topics[t]) for g, t in
                   (("producer", "jobs"), ("worker", "files"), ("linker", "instances"), ("linker", "dlq")))

    def dump(self):
        return self.metadb("dump", timeout=300).stdout

    def drop(self):
        try:
            c = self.stack.mongo(5000)
            c.drop_database(self.names.db)
            c.close()
        except Exception as e:  # noqa: BLE001
            print("warning: drop %s: %s" % (self.names.db, e))


def wait_progress(run, what, frac, timeout=120):
    """Wait until `what` (events|linked) reached frac of FILES; returns the value seen."""
    want = max(1, int(FILES * frac))

    def probe():
        if what == "events":
            v = run.events_produced()
        else:
            j = run.job_doc() or {}
            v = (j.get("files_done") or 0) + (j.get("files_failed") or 0)
        return v if v >= want else None
    return rt.wait_for(probe, timeout, interval=0.05)


def pipeline(run, linkers=1):
    """Prepare run and start its producer, two workers and the linkers."""
    run.prepare()
    run.start_producer()
    run.start_worker()
    run.start_worker()
    for _ in range(linkers):
        run.start_linker()
    if not run.wait_started():
        raise RuntimeError("the daemons did not start within 90s")


def landed_mid_job(run):
    """True while the job is not final (the fault is about to hit a running job)."""
    j = run.job_doc() or {}
    return j.get("state") not in ("completed", "completed_with_errors", "failed")


def inject(run, fault, stack):
    """Inject fault into run's job in flight; returns (t_fault, note, mid_job)."""
    t, note = inject_fault(run, fault, stack)
    return t, note, run.mid_job


def inject_fault(run, fault, stack):
    if fault == "kill9-producer":
        run.submit()
        if run.n % 2:  # odd runs: as soon as the producer took the job (resolving)
            seen = rt.wait_for(lambda: (run.job_doc() or {}).get("state") not in (None, "submitted") and
                               (run.job_doc() or {}).get("state"), 60, interval=0.01)
        else:  # even runs: once its first task was delivered (publishing)
            rt.wait_for(lambda: (run.producer.metric("metadb_producer_files_published_total") or 0) >= 1, 60,
                        interval=0.005)
            seen = (run.job_doc() or {}).get("state")
        run.mid_job = landed_mid_job(run)
        t = time.time()
        pub = run.producer.metric("metadb_producer_files_published_total")
        run.producer.kill9()
        time.sleep(0.5)
        run.start_producer()
        return t, "killed in job state %s after %s task(s) delivered" % (seen, pub)
    run.submit()
    if fault == "kill9-worker":
        v = wait_progress(run, "events", 0.3)
        w = run.workers[0]
        run.mid_job = landed_mid_job(run)
        t = time.time()
        w.kill9()
        run.start_worker()
        return t, "worker killed at %s events" % v
    if fault == "kill9-linker":
        v = wait_progress(run, "linked", 0.3)
        run.mid_job = landed_mid_job(run)
        t = time.time()
        run.linker.kill9()
        run.start_linker()
        return t, "linker killed at %s files linked" % v
    if fault == "restart-kafka":
        v = wait_progress(run, "events", 0.3)
        run.mid_job = landed_mid_job(run)
        t = time.time()
        rc, out = stack.stack_cmd("stop", "--only", "kafka", timeout=180)
        down = time.time() - t
        rc2, out2 = stack.stack_cmd("start", timeout=300)
        if rc != 0 or rc2 != 0:
            raise RuntimeError("broker restart failed: %s\n%s" % (out[-1500:], out2[-1500:]))
        return t, "broker restarted at %s events (stop %.0fs, back after %.0fs)" % (v, down, time.time() - t)
    if fault == "restart-database":
        v = wait_progress(run, "linked", 0.3)
        run.mid_job = landed_mid_job(run)
        t = time.time()
        rc, out = stack.stack_cmd("stop", "--only", "database", timeout=120)
        time.sleep(3)
        rc2, out2 = stack.stack_cmd("start", timeout=300)
        if rc != 0 or rc2 != 0:
            raise RuntimeError("database restart failed: %s\n%s" % (out[-1500:], out2[-1500:]))
        return t, "database restarted at %s files linked (down %.0fs)" % (v, time.time() - t)
    if fault == "pause-worker":
        v = wait_progress(run, "events", 0.3)
        target = run.workers[0].daemon_pid()
        run.mid_job = landed_mid_job(run)
        t = time.time()
        os.kill(target, signal.SIGSTOP)
        time.sleep(SESSION_MS / 1000.0 + 4)
        os.kill(target, signal.SIGCONT)
        return t, "worker paused %.0fs at %s events" % (time.time() - t, v)
    raise ValueError(fault)


def measure(run, manifest, clean_dump, fault, t_fault):
    """Wait for recovery and compare; returns a result dict."""
    res = {"fault": fault, "lost": None, "dup": None, "secs": None, "dump_eq": False, "ok": False, "why": []}
    j = run.final(JOB_TIMEOUT)
    if not j:
        res["why"].append("job not final within %ds: %r" % (JOB_TIMEOUT, {
            k: (run.job_doc() or {}).get(k) for k in ("state", "files_total", "files_done", "files_failed")}))
    res["secs"] = time.time() - t_fault if j else None
    if not rt.wait_for(run.all_committed, 120, interval=1):
        res["why"].append("consumer groups did not commit every offset within 120s")
    if not run.wait_started():
        res["why"].append("a restarted daemon did not start within 90s")
    dead = [p for p in run.procs.all if p.stopped_rc is None and not p.alive() and p.p.returncode not in (-9, None)
            and not getattr(p, "killed_on_purpose", False)]
    rcs = run.procs.stop_all()
    for pid, (role, rc) in rcs.items():
        if rc != 0:
            res["why"].append("%s (pid %d) exit %r on SIGTERM" % (role, pid, rc))
    for p in dead:
        res["why"].append("%s (pid %d) died on its own: exit %r" % (p.role, p.pid, p.p.returncode))
    if not run.stack.ping():
        res["why"].append("database not answering a ping after the run (wedged?)")
        return res
    c = run.stack.mongo(20000)
    db = c[run.names.db]
    j = db.jobs.find_one({"_id": run.job}) or {}
    want_sops = {i["sop_uid"] for i in manifest["instances"]}
    have = {}
    dup = 0
    for d in db.instances.find({}, {"_id": 1, "paths": 1, "job_ids": 1}):
        have[d["_id"]] = d
        dup += len(d.get("paths") or []) - len(set(d.get("paths") or []))
        dup += len(d.get("job_ids") or []) - len(set(d.get("job_ids") or []))
    for s in db.series.find({}, {"_id": 1, "instance_count": 1}):
        n = db.instances.count_documents({"series_id": s["_id"]})
        dup += max(0, (s.get("instance_count") or 0) - n)
    c.close()
    done, failed, total, linked = (j.get("files_done") or 0, j.get("files_failed") or 0, j.get("files_total") or 0,
                                   j.get("instances_linked") or 0)
    lost = len(want_sops - set(have)) + max(0, FILES - done) + max(0, FILES - linked)
    dup += max(0, done + failed - total) + max(0, linked - FILES) + max(0, total - FILES)
    res["lost"], res["dup"] = lost, dup
    if (j.get("state"), total, done, failed, linked) != ("completed", FILES, FILES, 0, FILES):
        res["why"].append("job %r: total %d done %d failed %d linked %d (want completed, %d/%d/0/%d)" % (
            j.get("state"), total, done, failed, linked, FILES, FILES, FILES))
    d = run.dump()
    res["dump"] = d
    res["dump_eq"] = clean_dump is not None and d == clean_dump
    if clean_dump is not None and not res["dump_eq"]:
        res["why"].append("canonical dump differs from the clean run's: %s" % first_diff(clean_dump, d))
    res["ok"] = not res["why"] and lost == 0 and dup == 0 and res["dump_eq"]
    return res


def first_diff(a, b):
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return "line %d: clean %s | run %s" % (i + 1, x[:300], y[:300])
    return "clean has %d lines, run %d" % (len(la), len(lb))


def recover_database(stack):
    """A database that no longer answers is restarted (and reported)."""
    if stack.ping():
        return True
    print("# the isolated database does not answer a bounded ping: restarting it", flush=True)
    stack.stack_cmd("stop", "--only", "database", timeout=120)
    rc, out = stack.stack_cmd("start", timeout=300)
    return rc == 0 and stack.ping()


def main():
    for role in ("producer", "worker", "linker", "metadb"):
        if not rt.have(role):
            rt.die("%s not built at %s" % (role, rt.BIN[role]))
    if not shutil.which("strace"):
        rt.die("strace is needed to pace the workers")
    faults = [f for f in FAULTS if not ONLY or f in ONLY]
    t_suite = time.time()
    base = rt.tempdir("mdb_faults_")
    os.chmod(base, 0o755)
    root = os.path.realpath(os.path.join(base, "archive"))
    stack = rt.Stack.isolated(partitions=3)
    results = []
    failed_setup = None
    try:
        rt.note("isolated stack in %s (kafka %s, database %s)" % (stack.home, stack.brokers, stack.mongo_uri))
        rc, out = stack.stack_cmd("start", timeout=400)
        if rc != 0 or not stack.kafka_ok() or not stack.ping():
            raise RuntimeError("the isolated stack did not start:\n" + out[-3000:])
        rt.note("stack up in %.0fs" % (time.time() - t_suite))
        manifest = generate(root)
        patients = sorted({s["patient_id"] for s in manifest["studies"]})
        rt.note("archive: %d files, %d patients, %d studies, %d series" % (
            len(manifest["instances"]), len(patients), len(manifest["studies"]), len(manifest["series"])))

        clean = Run(stack, root, base, "t_faults_%d_clean" % os.getpid(), patients)
        t0 = time.time()
        pipeline(clean)
        clean.submit()
        res = measure(clean, manifest, None, "clean", t0)
        clean_dump = res.get("dump")
        res["ok"] = not res["why"] and res["lost"] == 0 and res["dup"] == 0
        rt.note("clean run: %.1fs, lost %s, duplicated %s %s" % (time.time() - t0, res["lost"], res["dup"],
                                                              "; ".join(res["why"])))
        clean.drop()
        if not res["ok"] or not clean_dump:
            clean.procs.dump_logs()
            raise RuntimeError("the clean run is not exact: " + "; ".join(res["why"]))
        for fault in faults:
            for n in range(1, RUNS + 1):
                if not recover_database(stack):
                    results.append({"fault": fault, "ok": False, "why": ["database down, could not restart it"]})
                    continue
                run = Run(stack, root, base, "t_faults_%d_%s_%d" % (os.getpid(), fault.replace("-", "_"), n),
                          patients, n)
                t0 = time.time()
                try:
                    pipeline(run)
                    t_fault, note, mid = inject(run, fault, stack)
                    res = measure(run, manifest, clean_dump, fault, t_fault)
                    res["note"] = note
                    if not mid:
                        res["ok"] = False
                        res["why"].append("the fault landed after the job had completed: nothing was tested")
                except Exception as e:  # noqa: BLE001 - one run's failure must not end the suite
                    res = {"fault": fault, "ok": False, "why": ["%s: %s" % (type(e).__name__, e)], "lost": None,
                           "dup": None, "secs": None, "dump_eq": False, "note": ""}
                res["run_secs"] = time.time() - t0
                print("# %-16s run %d: %s in %.0fs; %s%s" % (
                    fault, n, "ok" if res["ok"] else "FAILED", res["run_secs"], res.get("note", ""),
                    "" if res["ok"] else "\n#   " + "\n#   ".join(res["why"])), flush=True)
                if not res["ok"]:
                    run.procs.dump_logs(tail=2500)
                run.procs.kill_all()
                if stack.ping():
                    run.drop()
                results.append(res)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        failed_setup = "%s: %s" % (type(e).__name__, e)
    finally:
        for ps_ in rt._PROCS:
            ps_.kill_all()
        stack.destroy()
        shutil.rmtree(base, ignore_errors=True)
    return report(results, faults, failed_setup, time.time() - t_suite)


def generate(root):
    cmd = [rt.PY, rt.GEN, "--out", root, "--files", str(FILES), "--seed", "2024", "--small", "--jobs", "1"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    with open(os.path.join(root, "manifest.json")) as f:
        m = json.load(f)
    if len(m["instances"]) != FILES:
        raise RuntimeError("gen_archive wrote %d files, not %d" % (len(m["instances"]), FILES))
    return m


def report(results, faults, failed_setup, secs):
    print()
    print("%-18s %5s %6s %11s %16s %10s" % ("fault", "runs", "lost", "duplicated", "recovered-in (s)", "dump==clean"))
    ok_all = failed_setup is None
    for f in faults:
        rs = [r for r in results if r["fault"] == f]
        if not rs:
            print("%-18s %5s %6s %11s %16s %10s" % (f, 0, "-", "-", "-", "-"))
            ok_all = False
            continue
        lost = sum(r["lost"] for r in rs if r.get("lost") is not None)
        dup = sum(r["dup"] for r in rs if r.get("dup") is not None)
        unknown = any(r.get("lost") is None for r in rs)
        secs_ = [r["secs"] for r in rs if r.get("secs") is not None]
        rec = "%.1f" % max(secs_) if len(secs_) == len(rs) else "not recovered"
        eq = sum(1 for r in rs if r.get("dump_eq"))
        print("%-18s %5d %6s %11s %16s %10s" % (f, len(rs), "?" if unknown else lost, "?" if unknown else dup, rec,
                                                "%d/%d" % (eq, len(rs))))
        ok_all = ok_all and all(r["ok"] for r in rs)
    if failed_setup:
        print("suite setup failed: %s" % failed_setup)
    print("fault suite: %s in %.0fs (%d run(s) per fault, %d files)" % ("PASSED" if ok_all else "FAILED", secs, RUNS,
                                                                         FILES))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
