#!/usr/bin/python3
"""Bench: retrieve N instances (default 2,000) from Orthanc by C-MOVE.

metadb: a job by accession with source pacs:orthanc through the real pipeline
(producer, worker, linker, metadb-fetcher); reports the fetcher's C-MOVE time
(metadb_fetcher_request_seconds{op="retrieve"}), instances/s, and the end-to-end
time from submission to `completed`.
DCMTK: `storescp` (writing every file) + `movescu` per study (STUDY level) on
the same studies from the same Orthanc; instances/s over the wall time of the
movescu runs. Each side lands into its own empty directory; the instances are
checked to be all there.

    MDB_BUILD_DIR=build /usr/bin/python3 bench/bench_pacs.py [--files 2000] [--full-size]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import pacs_support as ps  # noqa: E402
from pacs_support import rt  # noqa: E402


def count_files(d):
    return sum(len([f for f in fs if not f.startswith(".")]) for p, _, fs in os.walk(d) if ".spool" not in p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--full-size", action="store_true", help="512x512 images instead of 32x32")
    a = ap.parse_args()
    tmp = rt.tempdir("metadb-bpacs-")
    tag = "b_pacs_%d" % os.getpid()
    pacs = pipe = storescp = None
    try:
        gen = os.path.join(tmp, "gen")
        extra = [] if a.full_size else ["--small"]
        subprocess.run([rt.PY, rt.GEN, "--out", gen, "--files", str(a.files), "--seed", "47", "--jobs", "2"] + extra,
                       check=True, capture_output=True, timeout=1800)
        manifest = json.load(open(os.path.join(gen, "manifest.json")))
        scp_port, dcmtk_port = ps.free_port(), ps.free_port()
        pacs = ps.Pacs(os.path.join(tmp, "orthanc"), scp_port)
        t0 = time.time()
        for inst in manifest["instances"]:
            pacs.upload(inst["path"])
        print("# %d instances in %d studies uploaded to Orthanc in %.0f s" % (
            len(manifest["instances"]), len(manifest["studies"]), time.time() - t0), flush=True)
        pacs.stop()
        cfg_path = os.path.join(pacs.workdir, "orthanc.json")
        cfg = json.load(open(cfg_path))
        cfg["DicomModalities"]["dcmtk"] = ["DCMTK", "127.0.0.1", dcmtk_port]
        json.dump(cfg, open(cfg_path, "w"))
        pacs.restart()
        n = len(manifest["instances"])
        size = sum(os.path.getsize(i["path"]) for i in manifest["instances"])

        # DCMTK
        out = os.path.join(tmp, "dcmtk")
        os.makedirs(out)
        storescp = subprocess.Popen(["storescp", "-aet", "DCMTK", "-od", out, "+xa", str(dcmtk_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        t0 = time.time()
        for st in manifest["studies"]:
            subprocess.run(["movescu", "-S", "-aet", "BENCH", "-aec", "ORTHANC", "-aem", "DCMTK", "-k",
                            "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=" + st["uid"], "127.0.0.1",
                            str(pacs.dicom_port)], check=True, capture_output=True, timeout=600)
        dcmtk_s = time.time() - t0
        dcmtk_n = count_files(out)
        storescp.terminate()
        storescp.wait()

        # metadb
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        mport = rt.free_ports(1)[0]
        pipe = ps.Pipeline(tag, [root], root, pacs.source_entry(), ["--pacs.scp_port=%d" % scp_port])
        pipe.setup()
        pipe.start(roles=("producer", "worker", "linker"))
        pipe.start_fetcher(["--fetcher.metrics_port=%d" % mport, "--log.level=warn"])
        accs = sorted({s["accession"] for s in manifest["studies"] if s.get("accession")})
        t0 = time.time()
        p = pipe.submit("--accession", *accs, job_id=tag, timeout=1800)
        e2e = time.time() - t0
        job = pipe.job(tag) or {}
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=10).read().decode()
        move_s = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("metadb_fetcher_request_seconds_sum") and 'op="retrieve"' in line)
        list_s = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("metadb_fetcher_request_seconds_sum") and 'op="list"' in line)
        mine_n = count_files(root)
        retr_started = job.get("retrieving_at")
        print(json.dumps({"instances": n, "studies": len(manifest["studies"]), "bytes": size,
                          "dcmtk": {"seconds": round(dcmtk_s, 2), "files": dcmtk_n, "instances_per_s": round(dcmtk_n / dcmtk_s, 1)},
                          "metadb": {"cmove_seconds": round(move_s, 2), "image_level_find_seconds": round(list_s, 2),
                                     "files": mine_n, "instances_per_s": round(mine_n / move_s, 1) if move_s else None,
                                     "submission_to_completed_s": round(e2e, 1), "state": job.get("state"),
                                     "retrieving_at": retr_started, "completed_at": job.get("completed_at")}},
                         indent=1), flush=True)
        if p.returncode != 0 or dcmtk_n != n or mine_n != n:
            print("bench: incomplete run", p.stdout[-500:], p.stderr[-500:])
            return 1
        return 0
    finally:
        if storescp and storescp.poll() is None:
            storescp.kill()
        if pipe:
            pipe.stop()
            pipe.cleanup()
        if pacs and pacs.proc.poll() is None:
            pacs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
