#!/usr/bin/python3
"""Cohort export throughput and memory through metadb-api (issue 15).

    /usr/bin/python3 bench/bench_export.py --build BUILD [--db NAME] [--instances 250000] [--keep]

1. Builds (or reuses, with --keep, when it already holds the wanted count) a
   synthetic catalogue in database NAME (default bench_export): studies of
   5 series, series of --per-series instances, documents shaped like the
   linker's (promoted fields, a metadata object of about 25 attributes, paths,
   file size), loaded directly with pymongo, then every index of
   common/store/mdb_indexes.c is created.
2. Starts metadb-api on it as the read-only user and streams
   `GET /api/instances?format=csv&fields=...` (every row), then the same
   with parent columns (study.patient_id, series.modality), and
   `/api/export/manifest`, sampling the API's RSS (/proc/PID/status VmRSS)
   every 50 ms during each export. Reports rows, seconds, rows/s, RSS at the
   start, peak and end, and checks the row count against the database.
Prints a table and writes JSON (--out, default bench/out/export.json)."""

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_queries import default_uri  # noqa: E402

SERIES_PER_STUDY = 5
MODALITIES = ["CT", "CT", "CT", "MR", "CR"]
BODY = ["CHEST", "CHEST", "ABDOMEN", "HEAD", "CHEST"]
MAKERS = ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "TOSHIBA"]


def index_table():
    with open(os.path.join(SRC, "common", "store", "mdb_indexes.c")) as f:
        text = f.read()
    block = text[text.index("INDEXES-BEGIN"):text.index("INDEXES-END")]
    out = []
    for m in re.finditer(r'\{"(\w+)",\s*\{([^}]*)\}\}', block):
        keys = re.findall(r'"([^"]+)"', m.group(2))
        out.append((m.group(1), keys))
    return out


def uid(*parts):
    return "1.2.826.0.1.3680043.10.999." + ".".join(str(p) for p in parts)


def build_catalogue(db, n_instances, per_series):
    n_series = (n_instances + per_series - 1) // per_series
    n_studies = (n_series + SERIES_PER_STUDY - 1) // SERIES_PER_STUDY
    for c in ("studies", "series", "instances"):
        db[c].drop()
    studies, series, batch = [], [], []
    left = n_instances
    t0 = time.time()
    for st in range(n_studies):
        st_uid = uid(1, st)
        year = 1995 + st % 15
        sums = []
        for k in range(SERIES_PER_STUDY):
            sn = st * SERIES_PER_STUDY + k
            if sn >= n_series:
                break
            count = min(per_series, left)
            left -= count
            se_uid = uid(2, sn)
            mod = MODALITIES[k]
            series.append({
                "_id": se_uid, "series_instance_uid": se_uid, "study_id": st_uid, "series_number": k + 1,
                "series_description": "Series %d, %s" % (k + 1, mod), "modality": mod, "body_part_examined": BODY[k],
                "slice_thickness": [0.625, 1.25, 2.5, 5.0][sn % 4], "manufacturer": MAKERS[st % 4], "kvp": 120.0,
                "series_date": "%04d%02d%02d" % (year, 1 + st % 12, 1 + st % 28), "instance_count": count,
                "collection_ids": ["BENCH"],
                "metadata": {"Modality": mod, "SeriesNumber": k + 1, "Manufacturer": MAKERS[st % 4]}})
            sums.append({"series_instance_uid": se_uid, "series_number": k + 1, "modality": mod,
                         "instance_count": count})
            for i in range(count):
                iu = uid(3, sn, i + 1)
                path = "/archive/BENCH-%05d/%d/%d-%03d.dcm" % (st, k + 1, k + 1, i + 1)
                batch.append({
                    "_id": iu, "sop_instance_uid": iu, "series_id": se_uid, "study_id": st_uid,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": i + 1,
                    "paths": [path], "file": {"size": 525000 + (i * 7919) % 4096, "mtime": 1700000000},
                    "job_ids": ["bench-export"], "feature_set": "default",
                    "metadata": {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "SOPInstanceUID": iu,
                                 "InstanceNumber": i + 1, "Rows": 512, "Columns": 512, "BitsAllocated": 16,
                                 "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0,
                                 "SliceLocation": -100.0 + i * 1.25, "ImagePositionPatient": [-160.0, -160.0, -100.0 + i],
                                 "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                                 "PixelSpacing": [0.703125, 0.703125], "WindowCenter": -600, "WindowWidth": 1500,
                                 "RescaleIntercept": -1024.0, "RescaleSlope": 1.0, "KVP": 120.0,
                                 "AcquisitionDate": "%04d0101" % year, "ContentTime": "101010",
                                 "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PhotometricInterpretation": "MONOCHROME2",
                                 "SamplesPerPixel": 1, "ConvolutionKernel": "B30f", "ExposureTime": 500},
                    "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"})
                if len(batch) >= 5000:
                    db.instances.insert_many(batch, ordered=False)
                    batch = []
        mods = sorted({s["modality"] for s in sums})
        studies.append({
            "_id": st_uid, "study_instance_uid": st_uid, "patient_id": "BENCH-%05d" % st,
            "study_date": "%04d%02d%02d" % (year, 1 + st % 12, 1 + st % 28), "accession_number": "A%07d" % st,
            "study_description": "CHEST CT %d" % (st % 7), "modality": mods[0], "modalities": mods,
            "collection_ids": ["BENCH"], "series": sums, "series_count": len(sums),
            "instance_count": sum(s["instance_count"] for s in sums), "metadata": {"PatientSex": "FM"[st % 2]}})
    if batch:
        db.instances.insert_many(batch, ordered=False)
    db.series.insert_many(series, ordered=False)
    db.studies.insert_many(studies, ordered=False)
    t_load = time.time() - t0
    t0 = time.time()
    by_coll = {}
    for coll, keys in index_table():
        by_coll.setdefault(coll, []).append(keys)
    import pymongo
    for coll, specs in by_coll.items():
        if coll not in ("studies", "series", "instances"):
            continue
        db[coll].create_indexes([pymongo.IndexModel([(k, 1) for k in ks]) for ks in specs])
    return {"studies": len(studies), "series": len(series), "instances": n_instances,
            "load_s": round(t_load, 1), "index_s": round(time.time() - t0, 1)}


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed_export(port, pid, path):
    """Stream path, counting lines; sample the API's RSS every 50 ms."""
    samples = [rss_kib(pid)]
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(rss_kib(pid))
            time.sleep(0.05)
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.time()
    conn.request("GET", path)
    r = conn.getresponse()
    lines = nbytes = 0
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        nbytes += len(chunk)
        lines += chunk.count(b"\n")
    dt = time.time() - t0
    stop.set()
    th.join()
    conn.close()
    samples.append(rss_kib(pid))
    return {"status": r.status, "lines": lines, "bytes": nbytes, "seconds": round(dt, 3),
            "rss_start_mib": round(samples[0] / 1024, 1), "rss_peak_mib": round(max(samples) / 1024, 1),
            "rss_end_mib": round(samples[-1] / 1024, 1), "samples": len(samples)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--db", default="bench_export")
    ap.add_argument("--instances", type=int, default=250000)
    ap.add_argument("--per-series", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="reuse the database when it holds --instances, keep it after")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "export.json"))
    a = ap.parse_args()
    import pymongo
    client = pymongo.MongoClient(default_uri(), serverSelectionTimeoutMS=10000)
    db = client[a.db]
    built = None
    if not (a.keep and db.instances.count_documents({}) == a.instances):
        built = build_catalogue(db, a.instances, a.per_series)
        print("catalogue: %s" % built)
    n = db.instances.count_documents({})
    log = tempfile.NamedTemporaryFile(prefix="bench-export-api-", suffix=".log", delete=False)
    api = subprocess.Popen([os.path.join(a.build, "api", "metadb-api"), "--mongo.db=" + a.db,
                            "--api.mongo_uri=" + default_uri(read_only=True), "--mongo.uri=" + default_uri(),
                            "--api.listen=127.0.0.1:0"], stdout=log, stderr=subprocess.STDOUT)
    port = None
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not port:
            time.sleep(0.1)
            with open(log.name) as f:
                m = re.search(r"listening on http://[^:]+:(\d+)/", f.read())
            if m:
                port = int(m.group(1))
        if not port:
            with open(log.name) as f:
                raise RuntimeError("metadb-api did not start:\n" + f.read()[-2000:])
        runs = [
            ("instances, 4 own columns", "/api/instances?format=csv&fields=instance_number,sop_class_uid,paths"),
            ("instances + parent columns (study.patient_id, study.study_date, series.modality)",
             "/api/instances?format=csv&fields=instance_number,paths,study.patient_id,study.study_date,series.modality"),
            ("instances, whole documents as NDJSON", "/api/instances?format=ndjson"),
            ("instances sorted by a parent field (-study.study_date, $lookup)",
             "/api/instances?format=csv&fields=instance_number,study.study_date&sort=-study.study_date"),
            ("file manifest of every study", "/api/export/manifest?level=studies"),
            ("instances, first 25,000 rows (memory reference)", "/api/instances?format=csv&limit=25000"
             "&fields=instance_number,paths,study.patient_id,study.study_date,series.modality"),
        ]
        results = []
        timed_export(port, api.pid, runs[0][1])  # warm-up
        for label, path in runs:
            res = timed_export(port, api.pid, path)
            res["rows"] = res["lines"] - (0 if "ndjson" in path else 1)
            res["rows_per_s"] = int(res["rows"] / res["seconds"]) if res["seconds"] else 0
            res["query"] = label
            res["path"] = path
            results.append(res)
            print("%-80s %7d rows %6.2f s %7d rows/s  RSS %.1f -> peak %.1f -> %.1f MiB" % (
                label, res["rows"], res["seconds"], res["rows_per_s"], res["rss_start_mib"], res["rss_peak_mib"],
                res["rss_end_mib"]))
        ok = all(r["status"] == 200 for r in results) and results[0]["rows"] == n
        out = {"instances": n, "catalogue": built, "results": results, "ok": ok,
               "load": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=2)
        print("load average %s; written %s" % (out["load"], a.out))
        return 0 if ok else 1
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=15)
        os.unlink(log.name)
        if not a.keep:
            client.drop_database(a.db)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
