#!/usr/bin/python3
"""End-to-end: producer -> workers -> linker on a generated archive.

A generated LIDC-like archive (a few hundred files) plus one crafted file - a
copy of an instance with the same SOPInstanceUID under another series - goes
through the whole pipeline (metadb-producer, two metadb-workers,
metadb-linker) on the live stack, in this test's own database and topics.

  1. counts: studies/instances equal the manifest's, series = manifest + the
     crafted one; every instance_count and study series[] summary is exact;
     sampled values equal pydicom's reading of the same files; the job ends
     completed with exact counters; the crafted duplicate is in conflicts.
  2. reconcile on the clean result reports zero problems.
  3. idempotence: the same job again changes no document and no count, only
     adds the new job id to job_ids.
  4. out of order: every instance event of both jobs, shuffled, replayed into
     a fresh database by a linker alone gives the same canonical dump (this
     run also measures the linker on a backlog: round trips per event).
  5. crash: a second deployment where the linker and a worker are killed -9
     in the middle of the job and restarted gives a canonical dump
     byte-identical to the clean run's.
  Three files are cut inside their Pixel Data (header whole): their
  instances carry the exact "integrity" object and every job counts them in
  files_flagged, in the clean, repeated, shuffled and crash-point runs (the
  dumps compare files_flagged and the objects too), and reconcile --repair
  rebuilds them from the files.
  6. reconcile: a series deleted and a count broken by hand are reported;
     --repair restores the clean dump; a second run finds nothing; a file
     lost from the middle of a series is reported as an InstanceNumber gap.

MDB_PIPELINE_FILES (default 300) and MDB_PIPELINE_PATIENTS size the archive.
"""

import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import producer_support as ps  # noqa: E402

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

WORKER = os.path.join(ps.BUILD, "workers", "metadb-worker")
LINKER = os.path.join(ps.BUILD, "linker", "metadb-linker")
FEATURES = os.path.join(ps.SRC, "conf")
c = ps.Checks("test_pipeline")


class Deployment:
    """One isolated pipeline: Env (db, topics) + the daemons' processes."""

    def __init__(self, name, root, base):
        self.env = ps.Env(name, [root])
        self.base = base
        self.procs = {}
        self.logs = {}

    def flags(self):
        return self.env.config_flags() + ["--features.dir=" + FEATURES]

    def metadb(self, *args, **kw):
        return self.env.metadb("--features.dir=" + FEATURES, *args, **kw)

    def start(self, what, extra=(), env_add=None):
        tag = self.env.tag
        if what == "producer":
            cmd = [ps.PRODUCER] + self.flags()
        elif what.startswith("worker"):
            cmd = [WORKER] + self.flags() + ["--worker.group=%s.workers" % tag, "--worker.metrics_port=0",
                                              "--worker.threads=1"]
        else:
            cmd = [LINKER] + self.flags() + ["--linker.group=%s.linkers" % tag, "--linker.metrics_port=0"]
        cmd += list(extra)
        n = len([k for k in self.logs if k.startswith(what)])
        path = os.path.join(self.base, "%s-%s-%d.log" % (tag, what, n))
        self.logs["%s-%d" % (what, n)] = path
        log = open(path, "wb")
        env = self.env.env()
        env.update(env_add or {})
        self.procs[what] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.procs[what]

    def kill9(self, what):
        p = self.procs.pop(what)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)

    def stop(self, what):
        p = self.procs.pop(what, None)
        if p is None:
            return None
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            return "timeout"

    def stop_all(self):
        for what in list(self.procs):
            rc = self.stop(what)
            c.eq(rc, 0, "%s %s exits 0 after SIGTERM" % (self.env.tag, what))

    def log_text(self, prefix):
        out = ""
        for k, path in self.logs.items():
            if k.startswith(prefix):
                with open(path, errors="replace") as f:
                    out += f.read()
        return out

    def dump(self):
        return self.metadb("dump", timeout=300).stdout


def sections(dump):
    """{section: text of its lines}"""
    out, cur = {}, None
    for line in dump.splitlines(True):
        if line.startswith('{"count":') and '"section":' in line:
            cur = json.loads(line)["section"]
            out[cur] = ""
        out[cur] += line
    return out


def replay_deployment(name, root, base, src, payload, deps):
    """A fresh deployment holding src's jobs (reset to running, zero counters)
    and payload (key\\tvalue lines) published to its instances topic."""
    d = Deployment(name, root, base)
    deps.append(d)
    d.metadb("topics")
    for jdoc in src.env.db.jobs.find({}):
        jdoc.update({"state": "running", "files_done": 0, "files_failed": 0, "instances_linked": 0})
        d.env.db.jobs.insert_one(jdoc)
    pp = subprocess.run(["kcat", "-P", "-b", ps.BROKERS, "-t", d.env.topics["instances"], "-K", "\t"],
                        input=payload, capture_output=True, text=True, timeout=120)
    c.check(pp.returncode == 0, "%s: republish the events" % name, pp.stderr)
    return d


def wait_job(dep, job_id, timeout=300):
    def probe():
        j = dep.env.db.jobs.find_one({"_id": job_id})
        return j if j and j.get("state") in ("completed", "completed_with_errors", "failed") else None
    j = ps.wait_for(probe, timeout=timeout, interval=0.3)
    if not j:
        j = dep.env.db.jobs.find_one({"_id": job_id})
        print("job %s did not finish: %r" % (job_id, j))
    return j


def submit(dep):
    p = dep.metadb("submit", "--researcher", "alice", "--collection", "LIDC", "--all-cases")
    return p.stdout.strip().splitlines()[-1]


def prepare(dep, cases_csv):
    dep.metadb("topics")
    dep.metadb("index", "--quiet", timeout=300)
    dep.metadb("researcher", "add", "alice", "--name", "Alice Example", "--email", "alice@example.org")
    dep.metadb("collection", "create", "LIDC", "--description", "pipeline test cohort")
    dep.metadb("collection", "add-cases", "LIDC", "--manifest", cases_csv)


def craft_duplicate(manifest, root):
    """Copy the first CT instance into a new series directory of its study with
    another SeriesInstanceUID (same SOPInstanceUID). The directory sorts after
    the original's, so the original path is the smaller one."""
    ct = sorted((s for s in manifest["series"] if s["modality"] == "CT"), key=lambda s: s["uid"])[0]
    inst = sorted((i for i in manifest["instances"] if i["series_uid"] == ct["uid"]), key=lambda i: i["path"])[0]
    ds = pydicom.dcmread(inst["path"])
    new_series = generate_uid(prefix="1.2.826.0.1.3680043.10.1234.99.")
    ds.SeriesInstanceUID = new_series
    ds.SeriesNumber = 99
    ds.SeriesDescription = "CRAFTED DUPLICATE"
    d = os.path.join(os.path.dirname(os.path.dirname(inst["path"])), "zzz-crafted-duplicate")
    os.makedirs(d)
    path = os.path.join(d, "1-001.dcm")
    ds.save_as(path)
    return {"sop": inst["sop_uid"], "orig_series": ct["uid"], "orig_path": os.path.realpath(inst["path"]),
            "dup_series": new_series, "dup_path": os.path.realpath(path), "study": ct["study_uid"]}


def damage_some(manifest, dup):
    """Cut three files inside their Pixel Data (archive copies that stopped
    early; the header stays whole), one of them in the series step 6 deletes
    so that reconcile --repair must rebuild its integrity object from the
    file. Returns {sop_uid: expected integrity object}."""
    victim = sorted(s["uid"] for s in manifest["series"] if s["modality"] == "CT")[-1]
    insts = sorted((i for i in manifest["instances"] if i["sop_uid"] != dup["sop"]), key=lambda i: i["path"])
    chosen = [next(i for i in insts if i["series_uid"] == victim)]
    chosen += [i for i in insts[::max(1, len(insts) // 3)] if i["series_uid"] != victim][:2]
    out = {}
    for i in chosen:
        raw = pydicom.dcmread(i["path"], force=True)._dict[0x7FE00010]
        with open(i["path"], "rb") as f:
            data = f.read()
        keep = raw.length // 2
        with open(i["path"], "wb") as f:
            f.write(data[:raw.value_tell + keep])
        out[i["sop_uid"]] = {"pixel_data_truncated": True, "pixel_data_bytes_expected": raw.length,
                             "pixel_data_bytes_present": keep}
    return out


def check_damaged(dep, damaged, what):
    got = {d["_id"]: d["integrity"] for d in dep.env.db.instances.find({"integrity": {"$exists": True}},
                                                                        {"integrity": 1})}
    c.eq(got, damaged, "%s: exactly the damaged files' instances carry their integrity object" % what)


def check_documents(dep, manifest, dup, job_id):
    db = dep.env.db
    m_series = {s["uid"]: s for s in manifest["series"]}
    c.eq(db.studies.count_documents({}), len(manifest["studies"]), "studies = manifest")
    c.eq(db.series.count_documents({}), len(manifest["series"]) + 1, "series = manifest + the crafted one")
    c.eq(db.instances.count_documents({}), len(manifest["instances"]), "instances = manifest (the copy is no new one)")
    bad_counts = []
    for s in db.series.find({}, {"instance_count": 1, "study_id": 1, "series_number": 1, "modality": 1,
                                  "series_description": 1}):
        if s["_id"] == dup["dup_series"]:
            c.eq(s.get("instance_count"), 0, "crafted series owns no instance (the original path is smaller)")
            continue
        ms = m_series.get(s["_id"])
        if not ms or s.get("instance_count") != ms["instance_count"] or s.get("study_id") != ms["study_uid"]:
            bad_counts.append((s["_id"], s.get("instance_count"), ms and ms["instance_count"]))
            continue
        if s.get("series_number") != ms["number"] or s.get("modality") != ms["modality"] or \
                (s.get("series_description") or "") != (ms["description"] or ""):
            bad_counts.append((s["_id"], "attributes", s, ms))
    c.eq(bad_counts, [], "every series: exact instance_count, parent, number, modality, description")
    # real instance counts from the instances themselves
    agg = {r["_id"]: r["n"] for r in db.instances.aggregate([{"$group": {"_id": "$series_id", "n": {"$sum": 1}}}])}
    c.eq(agg, {u: s["instance_count"] for u, s in m_series.items()}, "instances per series = manifest")
    bad_studies = []
    for st in manifest["studies"]:
        doc = db.studies.find_one({"_id": st["uid"]})
        want = sorted(
            [{"series_instance_uid": u, "series_number": m_series[u]["number"],
              "series_description": m_series[u]["description"] or None, "modality": m_series[u]["modality"],
              "instance_count": m_series[u]["instance_count"]} for u in st["series"]],
            key=lambda x: (x["series_number"], x["series_instance_uid"]))
        if st["uid"] == dup["study"]:
            want.append({"series_instance_uid": dup["dup_series"], "series_number": 99,
                         "series_description": "CRAFTED DUPLICATE", "modality": "CT", "instance_count": 0})
            want.sort(key=lambda x: (x["series_number"], x["series_instance_uid"]))
        got = doc.get("series") if doc else None
        if got is not None:
            for g in got:
                if g.get("series_description") == "":
                    g["series_description"] = None
        if got != want or doc.get("instance_count") != sum(w["instance_count"] for w in want) or \
                doc.get("accession_number", "") != st["accession"] or doc.get("patient_id") != st["patient_id"] or \
                "LIDC" not in doc.get("collection_ids", []) or job_id not in doc.get("job_ids", []):
            bad_studies.append((st["uid"], got, want))
    c.eq(bad_studies, [], "every study: series[] summary, totals, accession, patient, collection and job links")
    conf = db.conflicts.find_one({"_id": "instance_parent:%s:series_id" % dup["sop"]})
    c.check(conf is not None and conf.get("values") == [
        {"value": dup["orig_series"], "path": dup["orig_path"]},
        {"value": dup["dup_series"], "path": dup["dup_path"]}], "duplicate SOPInstanceUID recorded in conflicts", conf)
    inst = db.instances.find_one({"_id": dup["sop"]})
    c.check(inst and inst["series_id"] == dup["orig_series"] and sorted(inst["paths"]) ==
            sorted([dup["orig_path"], dup["dup_path"]]), "the duplicate's instance lists both paths", inst)


def check_sampled_values(dep, manifest):
    """Header values in the documents equal pydicom's for the same files."""
    db = dep.env.db
    insts = sorted(manifest["instances"], key=lambda i: i["path"])
    step = max(1, len(insts) // 12)
    diffs = []

    def num(v):
        return None if v is None or v == "" else float(v)

    for i in insts[::step]:
        ds = pydicom.dcmread(i["path"], stop_before_pixels=True)
        doc = db.instances.find_one({"_id": i["sop_uid"]})
        se = db.series.find_one({"_id": i["series_uid"]})
        st = db.studies.find_one({"_id": i["study_uid"]})
        if not doc or not se or not st:
            diffs.append((i["sop_uid"], "missing documents"))
            continue
        md = doc.get("metadata", {})
        pairs = [
            ("instance_number", doc.get("instance_number"), int(ds.InstanceNumber)),
            ("sop_class_uid", doc.get("sop_class_uid"), str(ds.SOPClassUID)),
            ("Rows", md.get("Rows"), int(ds.Rows)),
            ("Columns", md.get("Columns"), int(ds.Columns)),
            ("series_id", doc.get("series_id"), str(ds.SeriesInstanceUID)),
            ("study_id", doc.get("study_id"), str(ds.StudyInstanceUID)),
            ("study.patient_id", st.get("patient_id"), str(ds.PatientID)),
            ("study.study_date", st.get("study_date"), str(ds.StudyDate)),
            ("study.accession_number", st.get("accession_number", ""), str(ds.get("AccessionNumber", ""))),
            ("series.manufacturer", se.get("manufacturer"), str(ds.get("Manufacturer", "")) or None),
            ("series.slice_thickness", num(se.get("slice_thickness")), num(ds.get("SliceThickness"))),
            ("series.kvp", num(se.get("kvp")), num(ds.get("KVP"))),
        ]
        if "SliceLocation" in ds:
            pairs.append(("SliceLocation", num(md.get("SliceLocation")), num(ds.SliceLocation)))
        for name, got, want in pairs:
            if got != want:
                diffs.append((i["path"], name, got, want))
    c.eq(diffs, [], "sampled values equal pydicom's (%d files)" % len(insts[::step]))


def reconcile(dep, *args):
    p = dep.metadb("reconcile", "--json", *args, check=False, timeout=600)
    try:
        return p.returncode, json.loads(p.stdout), p
    except ValueError:
        return p.returncode, None, p


def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def scrape(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            return r.read().decode()
    except OSError as e:
        return "unreachable: %s" % e


def linker_report(dep):
    lines = re.findall(r"linker done: .*", dep.log_text("linker"))
    return lines


def main():
    base = ps.tempdir("t_pipeline_")
    root = os.path.join(base, "archive")
    deps = []
    try:
        files = int(os.environ.get("MDB_PIPELINE_FILES", "300"))
        patients = int(os.environ.get("MDB_PIPELINE_PATIENTS", str(max(4, files // 75))))
        manifest = ps.generate_archive(root, patients=patients, seed=2024, extra=["--files", str(files)])
        root = os.path.realpath(root)
        dup = craft_duplicate(manifest, root)
        damaged = damage_some(manifest, dup)
        nflag = len(damaged)
        for i in manifest["instances"]:
            i["path"] = os.path.realpath(i["path"])
        cases_csv = os.path.join(base, "cases.csv")
        with open(cases_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "patient_id", "accession_numbers"])
            for n, p in enumerate(manifest["patients"], 1):
                w.writerow(["case-%d" % n, p["patient_id"], ""])
        nfiles = len(manifest["instances"]) + 1

        # ---- 1. clean run ----
        a = Deployment("pipeline", root, base)
        deps.append(a)
        prepare(a, cases_csv)
        a.start("producer")
        a.start("worker1")
        a.start("worker2")
        a.start("linker")
        t0 = time.time()
        job1 = submit(a)
        j = wait_job(a, job1)
        elapsed = time.time() - t0
        c.check(j and j["state"] == "completed", "job completed", j)
        if j:
            c.eq((j.get("files_total"), j.get("files_done"), j.get("files_failed"), j.get("files_flagged"),
                  j.get("instances_linked")),
                 (nfiles, nfiles, 0, nflag, len(manifest["instances"])), "job counters exact")
        print("clean run: %d files through producer -> 2 workers -> linker in %.1f s" % (nfiles, elapsed))
        check_documents(a, manifest, dup, job1)
        check_damaged(a, damaged, "clean run")
        check_sampled_values(a, manifest)
        want_idx = {"studies": ["accession_number", "patient_id", "study_date", "modality", "modalities",
                                "study_description", "collection_ids", "job_ids"],
                    "series": ["study_id", "series_number", "modality", "body_part_examined", "manufacturer",
                               "slice_thickness", "kvp", "series_date", "collection_ids"],
                    "instances": ["series_id", "study_id", "sop_class_uid", "job_ids"]}
        missing = []
        for coll, keys in want_idx.items():
            have = {k for ix in a.env.db[coll].index_information().values() for k, _ in ix["key"]}
            missing += ["%s.%s" % (coll, k) for k in keys if k not in have]
        c.eq(missing, [], "indexes on every promoted filter field, job_ids and collection_ids")

        # ---- 2. reconcile on the clean result ----
        rc, rep, p = reconcile(a)
        c.check(rc == 0 and rep and rep["found"]["total_problems"] == 0, "reconcile: zero problems on a clean run",
                p.stdout + p.stderr)
        dump1 = a.dump()

        # ---- 3. the same job again ----
        job2 = submit(a)
        j2 = wait_job(a, job2)
        c.check(j2 and j2["state"] == "completed", "second job completed", j2)
        if j2:
            c.eq((j2.get("files_done"), j2.get("files_failed"), j2.get("files_flagged"), j2.get("instances_linked")),
                 (nfiles, 0, nflag, len(manifest["instances"])), "second job counters exact")
        dump2 = a.dump()
        s1, s2 = sections(dump1), sections(dump2)
        for sec in ("studies", "series", "instances", "conflicts"):
            c.check(s1.get(sec) == s2.get(sec), "running the job again changes no %s document" % sec)
        c.eq(a.env.db.instances.count_documents({"job_ids": {"$all": [job1, job2]}}), len(manifest["instances"]),
             "every instance links both job ids")
        c.eq(a.env.db.studies.count_documents({"job_ids": {"$all": [job1, job2]}}), len(manifest["studies"]),
             "every study links both job ids")
        c.eq(a.env.db.jobs.find_one({"_id": job1}).get("files_done"), nfiles, "first job's counters unchanged")
        a.stop_all()
        for line in linker_report(a):
            print("clean-run linker: " + line)

        # ---- 4. every event, shuffled, into a fresh database ----
        events = ps.kcat_consume_all(a.env.topics["instances"])
        c.eq(len(events), 2 * nfiles, "instance topic holds one event per file and job")
        random.Random(7).shuffle(events)
        payload = "".join("%s\t%s\n" % (k, v) for k, v in events)
        o = replay_deployment("pipeline_ooo", root, base, a, payload, deps)
        port = free_port()
        o.start("linker", ["--linker.metrics_port=%d" % port])
        done = ps.wait_for(lambda: o.env.db.jobs.count_documents({"state": "completed"}) == 2, timeout=300)
        c.check(done, "both jobs complete from shuffled events")
        metrics = scrape(port)
        m = re.search(r"^metadb_linker_instances_linked_total(?:\{[^}]*\})? ([0-9.e+]+)$", metrics, re.M)
        c.check(m and float(m.group(1)) == len(manifest["instances"]), "metrics: instances_linked_total",
                metrics[:1500])
        c.check(re.search(r"^metadb_linker_batch_size_count(?:\{[^}]*\})? [1-9]", metrics, re.M) and
                re.search(r"^metadb_linker_write_seconds_bucket", metrics, re.M) and
                re.search(r"^metadb_linker_db_round_trips(?:\{[^}]*\})? [1-9]", metrics, re.M),
                "metrics: batch size and write time histograms, round trips")
        o.stop_all()
        dump_o = o.dump()
        c.check(dump_o == dump2, "shuffled delivery gives a byte-identical dump")
        for line in linker_report(o):
            print("backlog linker (%d events): %s" % (len(events), line))
        rt = re.search(r"\(([0-9.]+) per event\)", " ".join(linker_report(o)))
        if rt:
            c.check(float(rt.group(1)) <= 0.05, "round trips per event on a backlog <= 0.05", rt.group(1))

        # ---- 4b. the same events through a linker that dies after random writes ----
        # METADB_TEST_EXIT_AFTER_WRITES=N: the linker _exits right after its
        # N-th write command was answered, anywhere inside a batch (instances
        # written but not the series, job files but not the progress, ...);
        # restarted each time until both jobs complete. Counts are
        # incremental (origin tags decide redelivery), so this is where a
        # double count or a lost one would show.
        cp = replay_deployment("pipeline_cp", root, base, a, payload, deps)
        rnd = random.Random(11)
        crashes = 0
        t_cp = time.time()

        def both_done():
            return cp.env.db.jobs.count_documents({"state": "completed"}) == 2

        for run in range(60):
            last = run == 59
            env_add = {} if last else {"METADB_TEST_EXIT_AFTER_WRITES": str(rnd.randint(1, 20))}
            # static membership: a restarted linker takes its partitions back at
            # once instead of waiting for the dead one's session to time out
            proc = cp.start("linker", ["--linker.batch_size=%d" % rnd.randint(20, 90),
                                       "--kafka.group.instance.id=%s-linker" % cp.env.tag], env_add=env_add)
            deadline = time.time() + 180
            while proc.poll() is None and time.time() < deadline and not both_done():
                time.sleep(0.1)
            if proc.poll() is None:
                cp.stop("linker")
            else:
                cp.procs.pop("linker", None)
                crashes += proc.returncode == 137
            if both_done():
                break
        c.check(crashes >= 5, "the linker died inside batches and was restarted (%d times, %d runs, %.0f s)"
                % (crashes, run + 1, time.time() - t_cp))
        c.check(cp.env.db.jobs.count_documents({"state": "completed"}) == 2, "both jobs complete despite the crashes")
        for jid in (job1, job2):
            jd = cp.env.db.jobs.find_one({"_id": jid}) or {}
            c.eq((jd.get("files_done"), jd.get("files_failed"), jd.get("files_flagged"), jd.get("instances_linked")),
                 (nfiles, 0, nflag, len(manifest["instances"])), "crash-point run: job %s counters exact" % jid[:8])
        dump_cp = cp.dump()
        c.check(dump_cp == dump2, "crash-point run gives a byte-identical dump")
        if dump_cp != dump2:
            for sec in ("studies", "series", "instances", "conflicts", "jobs"):
                if sections(dump_cp).get(sec) != sections(dump2).get(sec):
                    print("  section %s differs" % sec)

        # ---- 5. kill -9 of the linker and a worker mid-job ----
        b = Deployment("pipeline_crash", root, base)
        deps.append(b)
        prepare(b, cases_csv)
        b.start("producer")
        b.start("worker1")
        b.start("worker2")
        b.start("linker", ["--linker.batch_size=25"])
        job3 = submit(b)
        seen = ps.wait_for(lambda: b.env.db.instances.count_documents({}) >= len(manifest["instances"]) // 4,
                           timeout=300, interval=0.05)
        at_kill = b.env.db.instances.count_documents({})
        b.kill9("linker")
        b.kill9("worker1")
        c.check(seen and at_kill < len(manifest["instances"]),
                "killed mid-job (%d of %d instances linked)" % (at_kill, len(manifest["instances"])))
        time.sleep(1)
        b.start("worker1")
        b.start("linker")
        j3 = wait_job(b, job3)
        c.check(j3 and j3["state"] == "completed", "job completes after the crash", j3)
        b.stop_all()
        dump_b = b.dump()
        c.check(dump_b == dump1, "crash run: canonical dump byte-identical to the clean run's")
        if dump_b != dump1:
            for sec in ("studies", "series", "instances", "conflicts", "jobs"):
                if sections(dump_b).get(sec) != sections(dump1).get(sec):
                    print("  section %s differs" % sec)
        # completeness: a file lost from the middle of a series is a gap repair cannot fill
        ct = max((s for s in manifest["series"] if s["modality"] == "CT"), key=lambda s: s["instance_count"])
        mid = sorted((i for i in manifest["instances"] if i["series_uid"] == ct["uid"]),
                     key=lambda i: i["instance_number"])[ct["instance_count"] // 2]
        b.env.db.instances.delete_one({"_id": mid["sop_uid"]})
        rc, rep, p = reconcile(b, "--repair")
        gaps = (rep or {}).get("after", {}).get("problems", {}).get("instance_number_gap", {})
        c.check(rc == 3 and any(ct["uid"] in e and "first %d" % mid["instance_number"] in e
                                for e in gaps.get("examples", [])),
                "a missing instance is reported as an InstanceNumber gap and stays a problem", p.stdout[-2000:])
        c.eq(b.env.db.series.find_one({"_id": ct["uid"]})["instance_count"], ct["instance_count"] - 1,
             "repair recounts the series with the missing instance")

        # ---- 6. reconcile finds and repairs broken links ----
        db = a.env.db
        victim = sorted(s["uid"] for s in manifest["series"] if s["modality"] == "CT")[-1]
        other = sorted(s["uid"] for s in manifest["series"] if s["uid"] != victim)[0]
        db.series.delete_one({"_id": victim})
        db.series.update_one({"_id": other}, {"$inc": {"instance_count": 5}})
        rc, rep, p = reconcile(a)
        probs = (rep or {}).get("found", {}).get("problems", {})
        c.check(rc == 3, "reconcile exits 3 when problems are found", p.stdout[-2000:] + p.stderr[-2000:])
        c.check("instance_without_series" in probs and any(victim in e for e in probs["instance_without_series"]
                                                           ["examples"]), "deleted series reported", probs)
        c.check("instance_count_mismatch" in probs and any(other in e for e in probs["instance_count_mismatch"]
                                                           ["examples"]), "broken count reported", probs)
        rc, rep, p = reconcile(a, "--repair")
        c.check(rc == 0 and rep and rep["after"]["total_problems"] == 0, "reconcile --repair fixes everything",
                p.stdout[-3000:] + p.stderr[-2000:])
        check_damaged(a, damaged, "after reconcile --repair")
        dump_r = a.dump()
        c.check(sections(dump_r).get("series") == s2.get("series") and
                sections(dump_r).get("studies") == s2.get("studies") and dump_r == dump2,
                "repair restores the clean dump byte for byte")
        before = a.dump()
        rc, rep, p = reconcile(a, "--repair")
        c.check(rc == 0 and rep and rep["found"]["total_problems"] == 0 and "repaired" not in rep,
                "a second reconcile finds nothing", p.stdout[-2000:])
        c.check(a.dump() == before, "a second reconcile changes nothing")
    finally:
        for d in deps:
            for what in list(d.procs):
                d.stop(what)
            d.env.cleanup()
        if c.failures:
            print("logs kept in %s" % base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
