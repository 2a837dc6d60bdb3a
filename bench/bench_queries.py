#!/usr/bin/python3
"""Query latency through metadb-api, answered by the database (no cache).

Used by `bench/run.sh --lidc` on the LIDC-IDRI-shaped catalogue the pipeline
just wrote (before its private database is dropped), and runnable alone on
any catalogue database:

    /usr/bin/python3 bench/bench_queries.py --build BUILD --db NAME [--rounds 30] [--out FILE]

It starts metadb-api on the database as the read-only user (api.mongo_uri =
$METADB_API_MONGO_URI, else $METADB_HOME/database/metadb_ro.uri), picks real
values from the catalogue (a study's accession, a typical and the largest
CT series, the commonest values), and asks, over one keep-alive HTTP
connection, each query 3 times unmeasured and then --rounds times:

  - filtered study and series queries (`/api/studies?...`, `/api/series?...`:
    the filter parameters of docs/api.md, parent filters and sorts included)
    with the API's default page (50) and its exact `total`;
  - the instances of one series (`/api/instances?series_id=UID`, default page,
    then the whole series in one page, then only summary fields);
  - counts of filters matching >= 100,000 instances, through the API: the list
    endpoint's exact `total` with `limit=0` (the count alone: one countDocuments;
    a first page sorted by _id of such a match costs seconds on DocumentDB); for each
    direct filter, pymongo `count_documents` and that page alone as
    references (what the count costs by itself, what the page adds).

Goals (issue 13): filtered study/series median < 50 ms, instances of one
series median < 50 ms, a count of >= 100,000 instances < 500 ms. Prints a
table and writes JSON (median, p90, min, max, matches, response bytes)."""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COUNT_GOAL_MATCHES = 100000


def default_uri(read_only=False):
    """The database URI with credentials: METADB_API_MONGO_URI / METADB_MONGO_URI,
    else the local stack's generated files under $METADB_HOME/database/."""
    env = os.environ.get("METADB_API_MONGO_URI" if read_only else "METADB_MONGO_URI")
    if env:
        return env
    home = os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb"))
    path = os.path.join(home, "database", "metadb_ro.uri" if read_only else "metadb.uri")
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


class ApiProcess:
    """metadb-api on a free port against one database (read-only user)."""

    def __init__(self, build, db, uri, brokers, workdir):
        self.log_path = os.path.join(workdir, "metadb-api-%s.log" % db)
        cmd = [os.path.join(build, "api", "metadb-api"), "--mongo.db=" + db, "--kafka.brokers=" + brokers,
               "--api.listen=127.0.0.1:0", "--api.web_dir=" + os.path.join(SRC, "api", "web"), "--log.level=info"]
        # the URI (with its password) in the environment, not in the process list
        env = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
        env["METADB_MONGO_URI"] = env["METADB_API_MONGO_URI"] = uri
        self.proc = subprocess.Popen(cmd, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT, env=env)
        self.port = None
        end = time.time() + 30
        while time.time() < end and self.proc.poll() is None:
            with open(self.log_path, errors="replace") as f:
                m = re.search(r"listening on http://[^:]+:(\d+)/", f.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            with open(self.log_path, errors="replace") as f:
                raise RuntimeError("metadb-api did not start:\n" + f.read()[-3000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Conn:
    """One keep-alive HTTP/1.1 connection (re-opened only if the server closes it)."""

    def __init__(self, port):
        self.port = port
        self.c = None
        self.reconnects = -1

    def get(self, path):
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.reconnects += 1
            try:
                t = time.perf_counter()
                self.c.request("GET", path)
                r = self.c.getresponse()
                body = r.read()
                dt = (time.perf_counter() - t) * 1000.0
                if r.getheader("Connection", "").lower() == "close":
                    self.c.close()
                    self.c = None
                return r.status, body, dt
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.c:
            self.c.close()


def pct(sorted_v, q):
    return sorted_v[min(len(sorted_v) - 1, int(round(q * (len(sorted_v) - 1))))]


def stats(times):
    s = sorted(times)
    return {"median_ms": statistics.median(s), "p90_ms": pct(s, 0.9), "min_ms": s[0], "max_ms": s[-1],
            "rounds": len(s)}


def time_http(conn, path, rounds, warmup=3, max_errors=3):
    """Median etc. of rounds answers of 200; an error answer (e.g. 408 when the
    server's api.query_time_ms ran out) is recorded, and after max_errors of
    them the query is given up (its time is then at least the time limit)."""
    times, total, size, n_items, explain, errors = [], None, None, None, None, []
    r = 0
    while r < warmup + rounds:
        status, body, dt = conn.get(path)
        if status != 200:
            errors.append({"status": status, "ms": dt, "body": body[:300].decode("utf-8", "replace")})
            if len(errors) >= max_errors:
                break
            continue
        if r >= warmup:
            times.append(dt)
        r += 1
        if total is None:
            j = json.loads(body)
            total = j.get("total")
            n_items = len(j.get("items") or [])
            size = len(body)
            explain = j.get("explain")
    out = stats(times) if times else {"median_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None,
                                      "rounds": 0}
    out.update(matches=total, items=n_items, response_bytes=size, explain=explain)
    if errors:
        out["errors"] = errors
        out["error_status"] = errors[0]["status"]
    return out


def time_call(fn, rounds, warmup=2):
    times, val = [], None
    for r in range(warmup + rounds):
        t = time.perf_counter()
        val = fn()
        dt = (time.perf_counter() - t) * 1000.0
        if r >= warmup:
            times.append(dt)
    out = stats(times)
    out["matches"] = val
    return out


def plan(db):
    """Realistic queries with values taken from the catalogue itself."""
    st = db.studies.find_one({"modality": "CT", "accession_number": {"$nin": ["", None]}},
                             {"accession_number": 1, "patient_id": 1}, sort=[("_id", 1)])
    ct_series = list(db.series.find({"modality": "CT", "instance_count": {"$gte": 2}},
                                    {"instance_count": 1, "study_id": 1}))
    ct_series.sort(key=lambda s: (s.get("instance_count") or 0, s["_id"]))
    typical = ct_series[len(ct_series) // 2] if ct_series else None
    largest = ct_series[-1] if ct_series else None
    man = db.series.aggregate([{"$group": {"_id": "$manufacturer", "n": {"$sum": 1}}}, {"$sort": {"n": -1}},
                               {"$limit": 1}])
    man = [m["_id"] for m in man]
    q = []

    def add(kind, label, path):
        q.append({"kind": kind, "query": label, "path": path})
    add("study", "studies modality=CT & study_date=2000-2001", "/api/studies?modality=CT&study_date=2000-2001")
    add("study", "studies patient=LIDC-IDRI-00* (wildcard)", "/api/studies?patient=LIDC-IDRI-00*")
    if st:
        add("study", "studies accession=<one>", "/api/studies?accession=" + urllib.parse.quote(st["accession_number"]))
    add("study", "studies metadata.PatientSex=F & study_date>=2003",
        "/api/studies?metadata.PatientSex=F&study_date=gte:2003")
    add("study", "studies modality=CR,DX sort -study_date", "/api/studies?modality=CR,DX&sort=-study_date")
    add("study", "studies collection=BENCH & 1998-1999, sort patient",
        "/api/studies?collection=BENCH&study_date=1998-1999&sort=patient_id")
    add("series", "series modality=CT & body_part=CHEST & slice<2.5",
        "/api/series?modality=CT&body_part=CHEST&slice_thickness=lt:2.5")
    add("series", "series CT chest <2.5 mm, study_date 2000-2001 (parent)",
        "/api/series?modality=CT&body_part=CHEST&slice_thickness=lt:2.5&study_date=2000-2001")
    if man:
        add("series", "series manufacturer=<commonest> sort -slice",
            "/api/series?manufacturer=%s&sort=-slice_thickness" % urllib.parse.quote(man[0]))
    add("series", "series kvp=120 & instance_count>=150", "/api/series?kvp=120&instance_count=gte:150")
    add("series", "series description=Scout* & patient LIDC-IDRI-01* (parent)",
        "/api/series?series_description=Scout*&patient=LIDC-IDRI-01*")
    if typical:
        add("study_series", "series of one study (study=<uid>)", "/api/series?study=" + typical["study_id"])
        add("instances", "instances of one series (series_id=<typical, %d>)" % typical["instance_count"],
            "/api/instances?series_id=" + typical["_id"])
        add("instances_page", "instances of one series, whole series in one page (%d)" % typical["instance_count"],
            "/api/instances?series_id=%s&limit=%d" % (typical["_id"], min(1000, typical["instance_count"])))
        add("instances_page", "instances of one series, summary fields, whole series",
            "/api/instances?series_id=%s&fields=instance_number,paths&limit=%d" % (
                typical["_id"], min(1000, typical["instance_count"])))
    if largest and largest is not typical:
        add("instances_page", "instances of the largest series (%d), whole series" % largest["instance_count"],
            "/api/instances?series_id=%s&limit=%d" % (largest["_id"], min(1000, largest["instance_count"])))
    add("count", "count instances, sop_class_uid=CT Image Storage",
        "/api/instances?sop_class_uid=%s&limit=0" % CT_IMAGE)
    # instance numbers run 1..n in each series: the smallest K with
    # sum(min(n, K)) >= 100,000 gives an indexed filter just above 100,000
    sizes = [s.get("instance_count") or 0 for s in db.series.find({}, {"instance_count": 1})]
    k = 1
    while sum(min(n, k) for n in sizes) < COUNT_GOAL_MATCHES and k < max(sizes or [0]):
        k += 1
    add("count", "count instances, instance_number=1-%d" % k,
        "/api/instances?instance_number=1-%d&limit=0" % k)
    add("count", "count instances of studies 1998-2001 (parent filter)",
        "/api/instances?study_date=1998-2001&limit=0")
    add("count", "count instances of CT chest series < 2.5 mm (parent filter)",
        "/api/instances?modality=CT&body_part=CHEST&slice_thickness=lt:2.5&limit=0")
    return q, {"typical_series": typical, "largest_series": largest}


def run(build, db_name, ro_uri, brokers, rounds, workdir, log=print, mongo_db=None):
    """Start metadb-api on db_name and time the plan. mongo_db: a pymongo
    Database (any user) to pick the values; else opened with ro_uri."""
    import pymongo
    client = None
    if mongo_db is None:
        client = pymongo.MongoClient(ro_uri, serverSelectionTimeoutMS=10000)
        mongo_db = client[db_name]
    ro = pymongo.MongoClient(ro_uri, serverSelectionTimeoutMS=10000)[db_name]
    queries, picked = plan(mongo_db)
    counts = {c: mongo_db[c].estimated_document_count() for c in ("studies", "series", "instances")}
    api = ApiProcess(build, db_name, ro_uri, brokers, workdir)
    conn = Conn(api.port)
    t_all = time.time()
    def show(q):
        if q.get("median_ms") is None:
            log("  %-62s FAILED: %d x HTTP %s (%s)" % (q["query"][:62], len(q.get("errors", [])), q.get("error_status"),
                                                     (q.get("errors") or [{}])[0].get("body", "")[:160]))
        else:
            log("  %-62s median %7.1f ms  p90 %7.1f ms  matches %s%s" % (
                q["query"][:62], q["median_ms"], q["p90_ms"], q["matches"],
                "  (%d error answer(s))" % len(q["errors"]) if q.get("errors") else ""))
    try:
        for q in queries:
            q.update(time_http(conn, q["path"], rounds))
            show(q)
        # References for the counts: the same filter with pymongo's
        # count_documents (no time limit; what the API's `total` costs without
        # the page it also fetches: find(filter).sort({_id: 1}).limit(1))
        for q in [x for x in queries if x["kind"] == "count"]:
            f = (q.get("explain") or {}).get("filter")
            if not isinstance(f, dict) or any(k in ("studies", "series", "instances") for k in f):
                # parent filters: the API's explain names each level's part
                continue
            r = time_call(lambda: ro.instances.count_documents(f), max(5, rounds // 3), warmup=1)
            r.update(kind="count_pymongo", query="pymongo count_documents, same filter: " + q["query"][6:],
                     path="instances.count_documents(%s)" % json.dumps(f))
            queries.append(r)
            show(r)
            r = time_call(lambda: len(list(ro.instances.find(f, {"_id": 1}).sort([("_id", 1)]).limit(1))),
                          max(5, rounds // 3), warmup=1)
            r.update(kind="page_pymongo", query="pymongo find(same).sort(_id).limit(1): the API's page",
                     path="instances.find(%s, {_id: 1}).sort({_id: 1}).limit(1)" % json.dumps(f))
            queries.append(r)
            show(r)
    finally:
        conn.close()
        api.stop()
        if client:
            client.close()
        ro.client.close()
    return summarise(queries, counts, rounds, picked, conn.reconnects, time.time() - t_all)


def worst(v):
    """The largest median, or None when any query failed (no median)."""
    if not v or any(x is None for x in v):
        return None
    return max(v)


def summarise(queries, counts, rounds, picked, reconnects, seconds):
    filt = [q for q in queries if q["kind"] in ("study", "series")]
    inst = [q for q in queries if q["kind"] == "instances"]
    big = [q for q in queries if q["kind"] == "count" and (q.get("matches") or 0) >= COUNT_GOAL_MATCHES]
    # the headline count: the filter closest to (and not below) 100,000 matches;
    # a count that failed (no answer within api.query_time_ms) is the headline
    # when its pymongo reference shows >= 100,000 matches
    for q in queries:
        if q["kind"] == "count" and q.get("matches") is None:
            ref = [r for r in queries if r["kind"] == "count_pymongo" and r["query"].endswith(q["query"][6:])]
            if ref and (ref[0].get("matches") or 0) >= COUNT_GOAL_MATCHES:
                q["matches_from_pymongo"] = ref[0]["matches"]
                big.append(q)
    headline = min(big, key=lambda q: q.get("matches") or q.get("matches_from_pymongo")) if big else None
    out = {
        "counts": counts, "rounds": rounds, "warmup_rounds": 3, "connection": "one keep-alive HTTP/1.1 connection",
        "reconnects": reconnects, "seconds": seconds, "queries": queries,
        "typical_series": (picked.get("typical_series") or {}).get("_id"),
        "filtered_worst_median_ms": worst([q["median_ms"] for q in filt]),
        "filtered_median_of_medians_ms": statistics.median([q["median_ms"] for q in filt
                                                            if q["median_ms"] is not None] or [0]) if filt else None,
        "filtered_failed": [q["query"] for q in filt if q["median_ms"] is None],
        "study_worst_median_ms": worst([q["median_ms"] for q in filt if q["kind"] == "study"]),
        "series_worst_median_ms": worst([q["median_ms"] for q in filt if q["kind"] == "series"]),
        "instances_of_series_median_ms": inst[0]["median_ms"] if inst else None,
        "count": ({"query": headline["query"], "path": headline["path"],
                   "matches": headline.get("matches") or headline.get("matches_from_pymongo"),
                   "median_ms": headline["median_ms"], "p90_ms": headline["p90_ms"],
                   "error_status": headline.get("error_status"), "via": "the API's total (countDocuments)"}
                  if headline else None),
        "count_worst_median_ms_100k": worst([q["median_ms"] for q in big]),
    }
    out["goals"] = {
        "filtered_median_lt_50ms": out["filtered_worst_median_ms"] is not None and out["filtered_worst_median_ms"] < 50,
        "instances_of_series_median_lt_50ms": out["instances_of_series_median_ms"] is not None and
        out["instances_of_series_median_ms"] < 50,
        "count_100k_lt_500ms": headline is not None and headline["median_ms"] is not None and
        headline["median_ms"] < 500,
    }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--uri", default=default_uri(read_only=True), help="read-only URI (metadb-api's)")
    ap.add_argument("--brokers", default=os.environ.get("METADB_KAFKA_BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "queries.json"))
    a = ap.parse_args()
    if not a.uri:
        sys.exit("bench_queries: no database URI (export METADB_API_MONGO_URI=$(cat ~/.metadb/database/metadb_ro.uri))")
    wd = tempfile.mkdtemp(prefix="mdb_queries_", dir="/tmp")
    res = run(a.build, a.db, a.uri, a.brokers, a.rounds, wd)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print("worst filtered median %s ms, instances of a series %s ms, count %s; goals %s; wrote %s" % (
        res["filtered_worst_median_ms"], res["instances_of_series_median_ms"], res["count"], res["goals"], a.out))
    return 0 if all(res["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
