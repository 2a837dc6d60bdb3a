#!/usr/bin/python3
"""Latency of GET /api/facets (distributions computed by the database) on the
synthetic LIDC-shaped catalogue of bench_api_latency.py (250,000 instances,
2,500 series, 1,250 studies, the linker's indexes), through metadb-api as the
read-only user. Each request is asked --rounds times over one keep-alive
connection (2 warm-up rounds not counted); median, p90 and the number of
aggregations are reported and written to bench/out/facets.json.

  /usr/bin/python3 bench/bench_facets.py [--instances 250000] [--rounds 20] [--keep] [--db NAME]

--keep leaves the database in place (and reuses it next time if its instance
count matches); otherwise it is dropped at the end."""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_queries as bq  # noqa: E402

if not os.environ.get("METADB_MONGO_URI") and bq.default_uri():
    os.environ["METADB_MONGO_URI"] = bq.default_uri()
import bench_api_latency as lat  # noqa: E402
from mdb_api_support import Api, mongo_db  # noqa: E402  (path set by bench_api_latency)

SERIES_FIELDS = "modality,manufacturer,body_part_examined,slice_thickness,series_date"
QUERIES = [
    ("studies: modality, study_date, collection", "/api/facets?level=studies&fields=modality,study_date,collection"),
    ("studies by month, modality=CT", "/api/facets?level=studies&fields=study_date&interval=month&modality=CT"),
    ("series: 5 fields (values, histogram, dates)", "/api/facets?level=series&fields=" + SERIES_FIELDS),
    ("series: 5 fields, CT & study_date 2000-2001", "/api/facets?level=series&fields=" + SERIES_FIELDS +
     "&modality=CT&study_date=2000-2001"),
    ("series: slice_thickness, explicit bins", "/api/facets?level=series&fields=slice_thickness&bins.slice_thickness=0,1,2,3,5,10"),
    ("instances: instance_number, sop_class (all 250k)", "/api/facets?level=instances&fields=instance_number,sop_class_uid"),
    ("instances: same, series CT & CHEST", "/api/facets?level=instances&fields=instance_number,sop_class_uid"
     "&modality=CT&body_part=CHEST"),
    ("instances: metadata.XRayTubeCurrent values", "/api/facets?level=instances&fields=metadata.XRayTubeCurrent"),
]


def measure(conn, path, rounds):
    times, info = [], None
    for r in range(rounds + 2):
        status, body, dt = conn.get(path)
        if status != 200:
            raise SystemExit("%s -> %d %s" % (path, status, body[:300]))
        if r >= 2:
            times.append(dt)
        if info is None:
            b = json.loads(body)
            info = {"matches": b["total"], "aggregations": b["aggregations"]}
    times.sort()
    out = {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "min_ms": times[0]}
    out.update(info)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=250000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--db", default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    ro = bq.default_uri(read_only=True)
    name = a.db or ("b_facets_%d" % a.instances if a.keep else "b_facets_%d" % os.getpid())
    client, db = mongo_db(name)
    try:
        have = db.instances.count_documents({})  # the estimate lags behind loads on DocumentDB
        if have != a.instances:
            print("generating %d instances in database %s" % (a.instances, name))
            lat.generate(db, a.instances)
        else:
            print("reusing database %s (%d instances)" % (name, have))
        counts = {c: db[c].estimated_document_count() for c in ("studies", "series", "instances")}
        with Api(name, *(["--api.mongo_uri=" + ro] if ro else []), "--api.query_time_ms=60000") as api:
            conn = bq.Conn(api.port)
            results = []
            print("\n%-52s %9s %9s %5s %8s" % ("facets request", "median", "p90", "aggr", "matches"))
            for label, path in QUERIES:
                r = measure(conn, path, a.rounds)
                r.update(query=label, path=path)
                results.append(r)
                print("%-52s %7.1fms %7.1fms %5d %8d" % (label, r["median_ms"], r["p90_ms"], r["aggregations"],
                                                         r["matches"]))
            conn.close()
        report = {"counts": counts, "rounds": a.rounds, "results": results, "read_only_user": bool(ro),
                  "machine": os.uname().nodename, "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "facets.json"), "w") as f:
            json.dump(report, f, indent=1)
        print("written bench/out/facets.json")
    finally:
        if not a.keep:
            client.drop_database(name)


if __name__ == "__main__":
    main()
