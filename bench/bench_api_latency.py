#!/usr/bin/python3
"""Latency of filtered study/series queries through metadb-api on a synthetic
catalogue of 250,000 instances, answered by the database (the API keeps no
copy of the catalogue; issue 13: < 50 ms median on this machine).

The catalogue is generated directly in the database (no DICOM files, no
pipeline): 1,250 studies (patients LIDC-IDRI-0001.., dates 1998-2005,
CT/CR/DX/MR), 2 series each (2,500 series, slice thickness 0.625-5 mm,
CHEST/ABDOMEN/HEAD), 100 instances per series with ~30 metadata attributes
each, shaped like the linker's documents, plus the linker's indexes (the
table of common/store/mdb_indexes.c). Then metadb-api is started against it
as the read-only user and each query is asked --rounds times over one
keep-alive connection (3 warm-up rounds not counted); median, p90 and p99 are
reported and written to bench/out/api_latency.json.

  /usr/bin/python3 bench/bench_api_latency.py [--instances 250000] [--rounds 100] [--keep] [--db NAME]

`bench/run.sh --lidc` measures the same kind of queries on the catalogue the
pipeline itself wrote (bench/bench_queries.py); this tool is the quick way to
a large catalogue without the pipeline. The database URIs come from
METADB_MONGO_URI (read-write, to generate) and METADB_API_MONGO_URI
(read-only, for metadb-api), else the local stack's files under
$METADB_HOME/database/. --keep leaves the database in place (and reuses it
next time if its instance count matches), otherwise it is dropped at the end."""
import argparse
import json
import os
import random
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_queries as bq  # noqa: E402

if not os.environ.get("METADB_MONGO_URI") and bq.default_uri():
    os.environ["METADB_MONGO_URI"] = bq.default_uri()  # before mdb_api_support reads it
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from mdb_api_support import Api, mongo_db  # noqa: E402

MODS = ["CT"] * 6 + ["CR", "DX", "MR"]
PARTS = ["CHEST", "CHEST", "ABDOMEN", "HEAD"]
THICK = [0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]


def instance_meta(k, rnd):
    m = {"Rows": 512, "Columns": 512, "BitsAllocated": 16, "BitsStored": 12, "HighBit": 11,
         "PixelRepresentation": 0, "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
         "InstanceNumber": k + 1, "AcquisitionNumber": 1, "RescaleIntercept": -1024, "RescaleSlope": 1,
         "WindowCenter": [-600, 40], "WindowWidth": [1600, 400], "PixelSpacing": [0.703125, 0.703125],
         "ImagePositionPatient": [-180.0, -180.0, -10.0 - 1.25 * k], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
         "SliceLocation": -10.0 - 1.25 * k, "KVP": 120, "XRayTubeCurrent": rnd.choice([200, 250, 300]),
         "Exposure": rnd.randint(2, 9), "ConvolutionKernel": "B30f", "GantryDetectorTilt": 0,
         "TableHeight": 150.5, "RotationDirection": "CW", "FocalSpots": 1.2, "FilterType": "BODY",
         "ContentDate": "20000101", "ContentTime": "101010", "AcquisitionDate": "20000101",
         "AcquisitionTime": "101010.%03d" % k}
    return m


def generate(db, n_instances, per_series=100, series_per_study=2):
    rnd = random.Random(6)
    n_series = n_instances // per_series
    n_studies = n_series // series_per_study
    for c in ("studies", "series", "instances"):
        db[c].drop()
    studies, series = [], []
    t0 = time.time()
    inst_batch, inserted = [], 0
    for i in range(n_studies):
        suid = "1.3.6.1.4.1.9328.50.2.%d" % i
        mod = MODS[i % len(MODS)]
        year = 1998 + i % 8
        date = "%d%02d%02d" % (year, 1 + i % 12, 1 + i % 28)
        st = {"_id": suid, "study_instance_uid": suid, "patient_id": "LIDC-IDRI-%04d" % (i // 2 + 1),
              "accession_number": "A%07d" % i, "study_date": date, "modality": mod, "modalities": [mod],
              "study_description": rnd.choice(["Chest CT", "CT THORAX", "Abdomen", "Head"]),
              "collection_ids": ["LIDC-IDRI"], "job_ids": ["bench"],
              "metadata": {"PatientAge": "%03dY" % (30 + i % 50), "PatientSex": "MF"[i % 2], "StudyDate": date,
                           "StudyTime": "101010", "StudyID": str(i), "PatientName": "Anon^%d" % i},
              "series": [], "created_at": "2026-11-25T00:00:00.000Z", "updated_at": "2026-11-25T00:00:00.000Z"}
        for s in range(series_per_study):
            seuid = "%s.%d" % (suid, s + 1)
            se = {"_id": seuid, "series_instance_uid": seuid, "study_id": suid, "series_number": s + 1,
                  "modality": mod, "body_part_examined": PARTS[(i + s) % len(PARTS)], "series_date": date,
                  "manufacturer": rnd.choice(["GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA", "Philips"]),
                  "kvp": rnd.choice([100, 120, 140]), "instance_count": per_series,
                  "series_description": "Axial %s" % s, "collection_ids": ["LIDC-IDRI"],
                  "metadata": {"SeriesNumber": s + 1, "ConvolutionKernel": "B30f", "SeriesDate": date},
                  "created_at": "2026-11-25T00:00:00.000Z", "updated_at": "2026-11-25T00:00:00.000Z"}
            if mod == "CT":
                se["slice_thickness"] = THICK[(i * 3 + s) % len(THICK)]
            series.append(se)
            st["series"].append({"series_instance_uid": seuid, "series_number": s + 1, "modality": mod,
                                 "series_description": se["series_description"], "instance_count": per_series})
            for k in range(per_series):
                iuid = "%s.%d" % (seuid, k + 1)
                inst_batch.append({"_id": iuid, "sop_instance_uid": iuid, "series_id": seuid, "study_id": suid,
                                   "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": k + 1,
                                   "paths": ["/archive/LIDC-IDRI/%s/%s/%d.dcm" % (st["patient_id"], seuid, k)],
                                   "job_ids": ["bench"], "metadata": instance_meta(k, rnd)})
                if len(inst_batch) >= 5000:
                    db.instances.insert_many(inst_batch, ordered=False)
                    inserted += len(inst_batch)
                    inst_batch = []
                    rate = inserted / (time.time() - t0)
                    print("\r  instances %d/%d (%.0f/s)" % (inserted, n_instances, rate), end="", flush=True)
        studies.append(st)
    if inst_batch:
        db.instances.insert_many(inst_batch, ordered=False)
        inserted += len(inst_batch)
    db.studies.insert_many(studies)
    db.series.insert_many(series)
    print("\r  generated %d studies, %d series, %d instances in %.0f s" %
          (len(studies), len(series), inserted, time.time() - t0))
    for coll, keys in linker_indexes():
        if coll in ("studies", "series", "instances"):
            db[coll].create_index([(k, 1) for k in keys])


def linker_indexes():
    """[(collection, [keys])] of the linker's index table (common/store/mdb_indexes.c)."""
    with open(os.path.join(HERE, "..", "common", "store", "mdb_indexes.c")) as f:
        text = f.read()
    out = []
    for m in re.finditer(r'^\s*\{"(\w+)", \{((?:"[^"]+"(?:, )?)+)\}\},', text, re.M):
        out.append((m.group(1), re.findall(r'"([^"]+)"', m.group(2))))
    if not out:
        raise SystemExit("no index table found in common/store/mdb_indexes.c")
    return out


QUERIES = [
    ("studies modality=CT & study_date=2000-2001", "/api/studies?modality=CT&study_date=2000-2001"),
    ("studies patient=LIDC-IDRI-00*", "/api/studies?patient=LIDC-IDRI-00*"),
    ("studies accession=A0000421", "/api/studies?accession=A0000421"),
    ("studies metadata.PatientSex=F & date>=2003", "/api/studies?metadata.PatientSex=F&study_date=gte:2003"),
    ("series modality=CT & body_part=CHEST & slice<2.5", "/api/series?modality=CT&body_part=CHEST&slice_thickness=lt:2.5"),
    ("series CT chest <2.5 mm, study_date 2000-2001", "/api/series?modality=CT&body_part=CHEST&slice_thickness=lt:2.5&study_date=2000-2001"),
    ("series manufacturer=SIEMENS sort -slice", "/api/series?manufacturer=SIEMENS&sort=-slice_thickness"),
    ("study detail (+series)", "/api/studies/1.3.6.1.4.1.9328.50.2.421"),
    ("series detail (+100 instances)", "/api/series/1.3.6.1.4.1.9328.50.2.421.1"),
    ("instances of one series (summary fields)",
     "/api/instances?series_uid=1.3.6.1.4.1.9328.50.2.421.2&fields=instance_number,paths&limit=100"),
]


def measure(conn, path, rounds):
    times, total = [], None
    for r in range(rounds + 3):
        status, body, dt = conn.get(path)
        if status != 200:
            raise SystemExit("%s -> %d %s" % (path, status, body[:300]))
        if r >= 3:  # warm-up rounds are not counted
            times.append(dt)
        if total is None:
            total = json.loads(body).get("total", 1)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "p99_ms": times[int(0.99 * (len(times) - 1))], "min_ms": times[0], "matches": total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=250000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--db", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if not os.environ.get("METADB_MONGO_URI"):
        raise SystemExit("no database URI: export METADB_MONGO_URI=$(cat ~/.metadb/database/metadb.uri)")
    ro = bq.default_uri(read_only=True)
    name = a.db or ("b_api_latency_%d" % a.instances if a.keep else "b_api_latency_%d" % os.getpid())
    client, db = mongo_db(name)
    try:
        have = db.instances.estimated_document_count()
        if have != a.instances:
            print("generating %d instances in database %s" % (a.instances, name))
            generate(db, a.instances)
        else:
            print("reusing database %s (%d instances)" % (name, have))
        counts = {c: db[c].estimated_document_count() for c in ("studies", "series", "instances")}
        # metadb-api reads as the read-only user when there is one (api.mongo_uri)
        with Api(name, *(["--api.mongo_uri=" + ro] if ro else [])) as api:
            conn = bq.Conn(api.port)
            results = []
            print("\n%-52s %9s %9s %9s %8s" % ("query", "median", "p90", "p99", "matches"))
            for label, path in QUERIES:
                r = measure(conn, path, a.rounds)
                r.update(query=label, path=path)
                results.append(r)
                print("%-52s %7.1fms %7.1fms %7.1fms %8s" % (label, r["median_ms"], r["p90_ms"], r["p99_ms"],
                                                             r["matches"]))
            conn.close()
        filtered = [r for r in results if "detail" not in r["query"] and "instances of" not in r["query"]]
        worst = max(r["median_ms"] for r in filtered)
        report = {"counts": counts, "rounds": a.rounds, "results": results, "read_only_user": bool(ro),
                  "worst_filtered_median_ms": worst, "target_ms": 50, "ok": worst < 50,
                  "machine": os.uname().nodename, "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "api_latency.json"), "w") as f:
            json.dump(report, f, indent=2)
        print("\nworst median of filtered study/series queries: %.1f ms (target < 50 ms): %s" %
              (worst, "OK" if worst < 50 else "MISSED"))
        return 0 if worst < 50 else 1
    finally:
        if not a.keep:
            client.drop_database(name)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
