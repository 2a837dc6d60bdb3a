#!/usr/bin/python3
"""DICOMweb retrieval bench (issue 18): instances/s fetching from Orthanc by WADO-RS.

  /usr/bin/python3 bench/bench_dicomweb.py [--build DIR] [--files N] [--small] [--repeats R] [--no-e2e] [--out FILE]

Generates N (default 2,000) instances with tests/gen/gen_archive.py (512x512
16-bit CT/CR/DX, ~0.5 MB each; --small for 32x32), uploads them into a private
Orthanc with Debian's DICOMweb plugin and then, per repeat, retrieves every
study by WADO-RS (multipart/related; type="application/dicom";
transfer-syntax=*) with:
  - metadb's DICOMweb source (fetcher/source_dicomweb.c through
    tests/dicomweb_probe, one process, one source: QIDO-RS lookup of every
    study, then study after study WADO-RS, multipart parsing, one spool file
    per instance, the sink renames it into place), checking that every
    instance landed; "metadb_wado_only" is the retrieval phase alone (the
    fetcher has found the studies before it retrieves them);
  - curl (one process, every study's URL) writing each study's multipart body
    to one file (no parsing, no per-instance file): the transfer itself, the
    floor any client pays;
  - dicomweb-client 0.61 (Python, the library DICOMweb users script with;
    $METADB_HOME/cache/venv) retrieve_study, instances parsed by pydicom.
Reports instances/s and MB/s (median wall time of R) and the ratio metadb /
curl, and each client's CPU time (user + sys of its processes, median): on a
shared machine the wall time swings with the load, the CPU time does not.
Unless --no-e2e, also the end-to-end figure the issue asks for: one job naming
every accession, source pacs:orthanc-web, through producer, worker, linker and
metadb-fetcher (private topics, groups and database), from submission to
`completed` (fsync'ed landing, catalogue, extraction, linking).
Prints and writes (default bench/out/dicomweb.json) one JSON object."""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
ACCEPT = 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*'

DWC_SCRIPT = r"""
import sys, time
from dicomweb_client.api import DICOMwebClient
url, studies = sys.argv[1], sys.argv[2:]
c = DICOMwebClient(url)
n = 0
t0 = time.perf_counter()
for s in studies:
    n += len(c.retrieve_study(s))
print(n, time.perf_counter() - t0)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build"))
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "dicomweb.json"))
    a = ap.parse_args()
    os.environ["MDB_BUILD_DIR"] = a.build
    from dicomweb_support import PROBE_BIN, DicomWebOrthanc  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="metadb-bench-dw-")
    orthanc = None
    res = {"files": a.files, "small": a.small, "repeats": a.repeats, "build": a.build}
    try:
        gen = os.path.join(tmp, "gen")
        cmd = [sys.executable, GEN, "--out", gen, "--files", str(a.files), "--seed", "18", "--jobs", "2"]
        subprocess.run(cmd + (["--small"] if a.small else []), check=True, stdout=subprocess.DEVNULL)
        manifest = json.load(open(os.path.join(gen, "manifest.json")))
        insts = manifest["instances"]
        total_bytes = sum(os.path.getsize(i["path"]) for i in insts)
        res.update(instances=len(insts), studies=len(manifest["studies"]), bytes=total_bytes)
        orthanc = DicomWebOrthanc(os.path.join(tmp, "orthanc"), extra_config={"StorageCompression": False})
        t0 = time.time()
        with ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda i: orthanc.upload(i["path"]), insts))
        res["upload_s"] = round(time.time() - t0, 1)
        print("# %d instances (%.0f MB) in %d studies uploaded in %.0f s" %
              (len(insts), total_bytes / 1e6, len(manifest["studies"]), res["upload_s"]), flush=True)
        url = orthanc.dicomweb_url
        studies = [s["uid"] for s in manifest["studies"]]
        want = {i["sop_uid"] for i in insts}
        venv_py = os.path.join(os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb")), "cache", "venv",
                               "bin", "python3")
        runs = {"metadb": [], "metadb_wado_only": [], "curl": [], "dicomweb_client": []}
        cpu = {k: [] for k in runs}

        def child_cpu():
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime
        for rep in range(a.repeats):
            out = os.path.join(tmp, "out")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            c0, t0 = child_cpu(), time.perf_counter()
            r = subprocess.run([PROBE_BIN, url, "retrieve-studies", out] + studies, stdout=subprocess.PIPE,
                               check=False)
            if r.returncode != 0:
                raise RuntimeError("probe retrieve-studies: %s" % r.stdout[-500:])
            phases = json.loads(r.stdout.decode().splitlines()[-1])
            runs["metadb_wado_only"].append(phases["retrieve_s"])
            runs["metadb"].append(time.perf_counter() - t0)
            cpu["metadb"].append(child_cpu() - c0)
            got = {f[:-4] for f in os.listdir(out) if f.endswith(".dcm")}
            if got != want:
                raise RuntimeError("metadb landed %d of %d instances" % (len(got & want), len(want)))
            shutil.rmtree(out)
            os.makedirs(out)
            c0, t0 = child_cpu(), time.perf_counter()
            cmd = ["curl", "-sf", "-H", ACCEPT]
            for k, s in enumerate(studies):
                cmd += ["-o", os.path.join(out, "%d.multipart" % k), "%s/studies/%s" % (url, s)]
            subprocess.run(cmd, check=True)
            runs["curl"].append(time.perf_counter() - t0)
            cpu["curl"].append(child_cpu() - c0)
            shutil.rmtree(out)
            if os.access(venv_py, os.X_OK):
                c0 = child_cpu()
                r = subprocess.run([venv_py, "-c", DWC_SCRIPT, url] + studies, stdout=subprocess.PIPE, check=True,
                                   text=True)
                n, dt = r.stdout.split()
                if int(n) != len(want):
                    raise RuntimeError("dicomweb-client got %s of %d" % (n, len(want)))
                runs["dicomweb_client"].append(float(dt))
                cpu["dicomweb_client"].append(child_cpu() - c0)
            print("# repeat %d: %s" % (rep + 1, {k: round(v[-1], 2) for k, v in runs.items() if v}), flush=True)
        for k, v in runs.items():
            if not v:
                continue
            med = statistics.median(v)
            res[k] = {"seconds": [round(x, 3) for x in v], "median_s": round(med, 3),
                      "instances_per_s": round(len(insts) / med, 1), "MB_per_s": round(total_bytes / 1e6 / med, 1),
                      "cpu_s": round(statistics.median(cpu[k]), 3) if cpu[k] else None}
        res["load_average"] = os.getloadavg()
        res["metadb_vs_curl"] = round(res["curl"]["median_s"] / res["metadb"]["median_s"], 2)
        res["metadb_wado_only_vs_curl"] = round(res["curl"]["median_s"] / res["metadb_wado_only"]["median_s"], 2)
        if "dicomweb_client" in res:
            res["metadb_vs_dicomweb_client"] = round(res["dicomweb_client"]["median_s"] / res["metadb"]["median_s"], 2)
        if not a.no_e2e:
            res["e2e"] = e2e(tmp, orthanc, manifest)
    finally:
        if orthanc:
            orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


def e2e(tmp, orthanc, manifest):
    """One job naming every accession, through the whole pipeline; seconds from submission to completed."""
    import pacs_support as ps
    tag = "b_dweb_%d" % os.getpid()
    root = os.path.join(tmp, "landing")
    os.makedirs(root)
    entry = "orthanc-web:dicomweb:%s" % orthanc.dicomweb_url
    pipe = ps.Pipeline(tag, [root], root, entry, ["--pacs.max_associations=2"])
    try:
        pipe.setup()
        pipe.start()
        accs = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))
        t0 = time.time()
        p = pipe.submit("--accession", *accs, source="pacs:orthanc-web", job_id=tag + "-all", timeout=1800)
        dt = time.time() - t0
        job = pipe.job(tag + "-all") or {}
        n = pipe.db().instances.count_documents({})
        want = sum(1 for i in manifest["instances"]
                   if any(s["uid"] == i["study_uid"] and s.get("accession") for s in manifest["studies"]))
        out = {"state": job.get("state"), "seconds": round(dt, 1), "instances": n, "expected": want,
               "instances_per_s": round(n / dt, 1) if dt > 0 else None, "submit_rc": p.returncode}
        print("# end to end: %s" % out, flush=True)
        return out
    finally:
        pipe.stop()
        pipe.cleanup()


if __name__ == "__main__":
    main()
