"""Shared by the PACS retrieval tests (test_pacs_*.py): a private Orthanc
(Debian's, as the PACS) that knows metadb's AE for C-MOVE, loaded over its
REST API with a generated archive that is NOT under metadb's archive roots;
and the metadb pipeline (producer, worker, linker, fetcher) on private
topics, groups and database (tests/faults/reltest.py's Names/Procs)."""
import hashlib
import json
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
import reltest as rt  # noqa: E402
from orthanc_support import OrthancServer, free_port  # noqa: E402

rt.BIN["fetcher"] = os.path.join(rt.BUILD, "fetcher", "metadb-fetcher")
AE = "METADB"


class Pacs(OrthancServer):
    """Orthanc with its DICOM server on a free port and metadb's AE registered."""

    def __init__(self, workdir, scp_port, extra=None):
        self.scp_port = scp_port
        cfg = {"DicomAet": "ORTHANC", "DicomServerEnabled": True, "DicomModalities": {"metadb": [AE, "127.0.0.1", scp_port]},
               "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
               "LimitFindResults": 0, "LimitFindInstances": 0, "DicomAssociationCloseDelay": 0,
               "StorageCompression": False}
        cfg.update(extra or {})
        self.workdir = workdir
        self.extra = cfg
        super().__init__(workdir, "metadb-pacs", cfg)
        with open(os.path.join(workdir, "orthanc.json")) as f:
            self.dicom_port = json.load(f)["DicomPort"]

    def restart(self, verbose=False):
        """Start Orthanc again on the same configuration (ports, storage)."""
        import subprocess
        self.log = open(os.path.join(self.workdir, "orthanc.log"), "a")
        self.proc = subprocess.Popen(["Orthanc"] + (["--verbose"] if verbose else []) +
                                     [os.path.join(self.workdir, "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/system")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not come back")

    def get_json(self, path):
        st, data = self.request("GET", path)
        if st != 200:
            raise RuntimeError("Orthanc GET %s: %d %s" % (path, st, data[:200]))
        return json.loads(data)

    def find(self, level, query):
        body = json.dumps({"Level": level, "Query": query, "Expand": True})
        st, data = self.request("POST", "/tools/find", body, {"Content-Type": "application/json"})
        if st != 200:
            raise RuntimeError("Orthanc /tools/find: %d %s" % (st, data[:200]))
        return json.loads(data)

    def instances_of_accession(self, acc):
        """{SOPInstanceUID: orthanc id} of every instance of the studies with this accession."""
        out = {}
        for st in self.find("Study", {"AccessionNumber": acc}):
            for inst in self.get_json("/studies/%s/instances" % st["ID"]):
                out[inst["MainDicomTags"]["SOPInstanceUID"]] = inst["ID"]
        return out

    def file_of(self, orthanc_id):
        st, data = self.request("GET", "/instances/%s/file" % orthanc_id)
        if st != 200:
            raise RuntimeError("Orthanc file %s: %d" % (orthanc_id, st))
        return data

    def source_entry(self, name="orthanc", options=""):
        return "%s:dimse:127.0.0.1:%d:ORTHANC%s" % (name, self.dicom_port, options)


def fnv1a(s):
    """fetcher/source.c's uid_hash: which SOP UIDs the test switch drops."""
    h = 2166136261
    for ch in s.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def same_dataset(a, b, check_ts=True):
    """Equal data sets, element by element, values included (pixel data too);
    check_ts: in the same transfer syntax."""
    import io
    import pydicom
    da = pydicom.dcmread(io.BytesIO(a))
    db = pydicom.dcmread(io.BytesIO(b))
    if check_ts and da.file_meta.TransferSyntaxUID != db.file_meta.TransferSyntaxUID:
        return False, "transfer syntax %s vs %s" % (da.file_meta.TransferSyntaxUID, db.file_meta.TransferSyntaxUID)
    ka = [e.tag for e in da]
    kb = [e.tag for e in db]
    if ka != kb:
        return False, "tags differ: %s" % sorted(set(ka) ^ set(kb))[:5]
    for e in da:
        if e.value != db[e.tag].value:
            return False, "value of %s differs" % e.tag
    return True, ""


def dataset_tail_identical(a, b):
    """Byte-identical data sets: the bytes after each file's meta group."""
    def tail(blob):
        import struct
        pos = 132
        # meta group length element (0002,0000) UL: tag(4) VR(2) len(2) value(4)
        glen = struct.unpack("<I", blob[pos + 8:pos + 12])[0]
        return blob[pos + 12 + glen:]
    return tail(a) == tail(b)


class Pipeline:
    """producer + worker + linker + fetcher for one test, with its own names."""

    def __init__(self, tag, roots, fetch_root, sources, extra=()):
        self.stack = rt.Stack.shared()
        self.names = rt.Names(tag, self.stack, roots)
        self.names.topics["retrieve"] = tag + ".retrieve"
        self.names.groups["fetcher"] = tag + ".fetchers"
        self.fetch_root = fetch_root
        self.extra = ["--pacs.sources=" + sources, "--fetcher.root=" + fetch_root, "--pacs.ae_title=" + AE,
                      "--fetcher.metrics_port=0", "--pacs.backoff_ms=300"] + list(extra)
        self.logdir = rt.tempdir("metadb-pacs-logs-")
        self.procs = rt.Procs(self.logdir)

    def metadb(self, *args, **kw):
        return rt.metadb(self.names, *args, extra_flags=self.extra, **kw)

    def setup(self, collection="PACS"):
        self.metadb("topics")
        self.metadb("researcher", "add", "pacs-test", "--name", "PACS test", "--email", "p@example.org")
        self.metadb("collection", "create", collection, "--description", "retrieved from a PACS")

    def start(self, roles=("producer", "worker", "linker", "fetcher"), fetcher_extra=()):
        for role in roles:
            self.procs.start(role, self.names, extra=self.extra + ["--log.level=info"] +
                             (list(fetcher_extra) if role == "fetcher" else []))

    def start_fetcher(self, extra=()):
        return self.procs.start("fetcher", self.names, extra=self.extra + ["--log.level=info"] + list(extra))

    def restart_fetcher(self, extra=()):
        """Stop every running fetcher (SIGTERM) and start one with extra flags."""
        for p in self.procs.running("fetcher"):
            p.stop(60)
        return self.start_fetcher(extra)

    def submit(self, *selectors, source="pacs:orthanc", timeout=120, job_id=None, wait=True):
        args = ["submit", "--researcher", "pacs-test", "--collection", "PACS", "--source", source, "--json"]
        if job_id:
            args += ["--job-id", job_id]
        if wait:
            args += ["--wait", "--timeout", str(timeout)]
        return self.metadb(*(args + list(selectors)), timeout=timeout + 60, check=False)

    def db(self):
        return self.stack.mongo()[self.names.db]

    def job(self, job_id):
        return self.db().jobs.find_one({"_id": job_id})

    def wait_final(self, job_id, timeout):
        """The job's document once it is completed, completed_with_errors or
        failed; after timeout seconds, whatever it is then."""
        end = time.time() + timeout
        while time.time() < end:
            job = self.job(job_id) or {}
            if job.get("state") in ("completed", "completed_with_errors", "failed"):
                return job
            time.sleep(0.5)
        return self.job(job_id)

    def fetcher_log(self):
        return "".join(pr.log_text() for pr in self.procs.running("fetcher"))

    def wait_fetcher_log(self, pattern, timeout=60):
        """The first match of pattern in the running fetchers' logs, waiting up to
        timeout seconds for it; None when it never appeared. Tests wait for the
        event itself rather than sleeping a fixed time that a slow CI may outrun."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.fetcher_log())
            if m or time.monotonic() >= end:
                return m
            time.sleep(0.1)

    def landed(self):
        out = {}
        for dirpath, _, files in os.walk(self.fetch_root):
            if "/.spool" in dirpath or dirpath.endswith(".spool"):
                continue
            for f in files:
                out[f[:-4]] = os.path.join(dirpath, f)
        return out

    def stop(self):
        rcs = {}
        for p in self.procs.running():
            rcs[p.pid] = (p.role, p.stop(60))
        return rcs

    def cleanup(self, dump=False):
        if dump:
            self.procs.dump_logs()
        self.procs.kill_all()
        try:
            self.stack.mongo().drop_database(self.names.db)
        except Exception as e:  # noqa: BLE001
            print("warning: drop %s: %s" % (self.names.db, e))


def check_dropped_transfers(c, pipe, pacs, once_accs, good_accs, tag, source="pacs:orthanc"):
    """Partial transfers, the fetcher running with --pacs.test_drop=once:3
    (pipe restarts it with always:3): the instances of once_accs dropped once
    are noticed and re-requested, job <tag>-drop1 completes with every one;
    dropped for good, job <tag>-drop2 over good_accs ends completed_with_errors
    naming exactly the dropped SOP Instance UIDs, every other one catalogued."""
    db = pipe.db()
    want = {}
    for a in once_accs:
        want.update(pacs.instances_of_accession(a))
    dropped = sorted(s for s in want if fnv1a(s) % 3 == 0)
    c.check(len(dropped) > 0, "the drop switch selects some of the %d instances (%d)" % (len(want), len(dropped)))
    pipe.submit("--accession", *once_accs, source=source, job_id=tag + "-drop1")
    job = pipe.job(tag + "-drop1")
    c.check(job and job["state"] == "completed", "dropped once: job completed",
            job and (job["state"], job.get("errors")))
    got = {d["_id"] for d in db.instances.find({"_id": {"$in": list(want)}}, {"_id": 1})}
    c.eq(sorted(got), sorted(want), "dropped once: every instance is in the database")
    log = pipe.procs.running("fetcher")[0].log_text()
    c.check("re-requesting" in log, "dropped once: the fetcher noticed and re-requested the missing instances")

    pipe.restart_fetcher(["--pacs.test_drop=always:3"])
    want = {}
    for a in good_accs:
        want.update(pacs.instances_of_accession(a))
    dropped = sorted(s for s in want if fnv1a(s) % 3 == 0)
    pipe.submit("--accession", *good_accs, source=source, job_id=tag + "-drop2")
    job = pipe.job(tag + "-drop2")
    c.check(job and job["state"] == "completed_with_errors", "dropped for good: job completed_with_errors",
            job and job["state"])
    named = sorted(e.get("path") for e in (job or {}).get("errors", []) if e.get("error") == "missing_instance")
    c.eq(named, dropped, "dropped for good: the job's errors name each missing SOP Instance UID")
    got = {d["_id"] for d in db.instances.find({"_id": {"$in": list(want)}}, {"_id": 1})}
    c.eq(sorted(got), sorted(set(want) - set(dropped)), "dropped for good: every other instance is catalogued")


def load_pacs(workdir, scp_port, manifest_instances, extra=None):
    """A Pacs in workdir holding every file of manifest_instances."""
    pacs = Pacs(workdir, scp_port, extra)
    for inst in manifest_instances:
        pacs.upload(inst["path"])
    return pacs


def teardown(c, pipe, pacs, tmp, ok, check_exits=False):
    """The end of a PACS test, also after an exception: stop the daemons
    (check_exits: each must exit 0 on SIGTERM), drop the database, show the
    logs when anything failed or the test did not get to its end (ok false),
    stop Orthanc and remove tmp."""
    if pipe:
        rcs = pipe.stop()
        if check_exits:
            c.check(all(v[1] == 0 for v in rcs.values()), "every daemon exits 0 on SIGTERM", rcs)
        pipe.cleanup(dump=bool(c.failures) or not ok)
    if pacs:
        pacs.stop()
    shutil.rmtree(tmp, ignore_errors=True)
