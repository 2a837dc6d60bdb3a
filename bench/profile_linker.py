#!/usr/bin/python3
"""Where the linker's time goes, database round trip by round trip.

A generated archive (the full-size one of bench/run.sh, --files N, default
5000) is extracted by the producer and two workers into a private instances
topic while no linker runs; then one metadb-linker links the backlog with
--log.level=debug, which logs the duration of every database operation.
This prints and writes (bench/out/profile_linker[_LABEL].json):

  - per (operation, collection): count, seconds, share of the flush time,
    and how the cost grows from the first batches to the last ones (a
    growing cost per batch is a scan of a growing collection);
  - per batch: events, seconds, round trips;
  - the database's cost model on the result: a find by _id, by $in on _id,
    by a secondary (indexed) field, and a count, on the instances collection
    the run just wrote (a cost that grows with the collection means a scan).

--callgrind also runs the linker under valgrind --tool=callgrind (CPU
instructions of the linker itself: decoding, merging, BSON), writing the
profile next to the JSON. Everything runs in t_bench_prof_<pid> (database,
topics, groups), removed at the end.

    /usr/bin/python3 bench/profile_linker.py --build BUILD [--files N] [--label L] [--callgrind]
        [-- extra linker flags, e.g. --linker.batch_size=2000]"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_queries as bq  # noqa: E402
import bench_run as br  # noqa: E402

OP = re.compile(r"mongo: (?:(find|aggregate) (?:in|on) (\S+): \d+ \S+ in ([0-9.]+) s|"
                r"insert of (\d+) document\(s\) into (\S+) in ([0-9.]+) s|"
                r"(\d+) update\(s\) on (\S+) in ([0-9.]+) s)")
BATCH = re.compile(r"batch of (\d+) record\(s\).* (?:written|recounted) in ([0-9.]+) s, (\d+) round trip")


def parse(text):
    ops, batches, cur = [], [], []
    for line in text.splitlines():
        m = OP.search(line)
        if m:
            if m.group(1):
                cur.append((m.group(1), m.group(2), float(m.group(3)), 0))
            elif m.group(4):
                cur.append(("insert", m.group(5), float(m.group(6)), int(m.group(4))))
            else:
                cur.append(("update", m.group(8), float(m.group(9)), int(m.group(7))))
            continue
        b = BATCH.search(line)
        if b:
            batches.append({"events": int(b.group(1)), "seconds": float(b.group(2)), "round_trips": int(b.group(3)),
                            "ops": cur})
            cur = []
    return batches


def summarise(batches):
    total = sum(b["seconds"] for b in batches) or 1e-9
    by = {}
    for i, b in enumerate(batches):
        for op, coll, secs, n in b["ops"]:
            e = by.setdefault("%s %s" % (op, coll), {"count": 0, "seconds": 0.0, "statements": 0,
                                                       "per_batch": [0.0] * len(batches)})
            e["count"] += 1
            e["seconds"] += secs
            e["statements"] += n
            e["per_batch"][i] += secs
    for e in by.values():
        e["share"] = e["seconds"] / total
        k = max(1, len(batches) // 3)
        e["first_batches_mean_s"] = sum(e["per_batch"][:k]) / k
        e["last_batches_mean_s"] = sum(e["per_batch"][-k:]) / k
    return dict(sorted(by.items(), key=lambda kv: -kv[1]["seconds"])), total


def cost_model(db, n):
    inst = [d["_id"] for d in db.instances.find({}, {"_id": 1}).limit(200)]
    series = [d["_id"] for d in db.series.find({}, {"_id": 1}).limit(50)]
    out = {}

    def t(name, fn, reps=3):
        t0 = time.time()
        for _ in range(reps):
            fn()
        out[name] = (time.time() - t0) / reps
    if inst and series:
        t("instances: find {_id: X}", lambda: list(db.instances.find({"_id": inst[0]})))
        t("instances: find {_id: {$in: [100 ids]}}", lambda: list(db.instances.find({"_id": {"$in": inst[:100]}})), 1)
        t("instances: find {series_id: X} (indexed)", lambda: list(db.instances.find({"series_id": series[0]},
                                                                                     {"_id": 1})), 1)
        t("instances: count_documents({})", lambda: db.instances.count_documents({}), 1)
        t("series: find {_id: X}", lambda: list(db.series.find({"_id": series[0]})))
    out["instances"] = n
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--mongo-uri", default=bq.default_uri(),
                    help="read-write URI with credentials (default: $METADB_MONGO_URI, else "
                         "$METADB_HOME/database/metadb.uri)")
    ap.add_argument("linker_flags", nargs="*")
    a = ap.parse_args()
    if not a.mongo_uri:
        sys.exit("profile_linker: no database URI: export METADB_MONGO_URI=$(cat ~/.metadb/database/metadb.uri)")
    args = argparse.Namespace(build=a.build, brokers=a.brokers, mongo_uri=a.mongo_uri, partitions=6, nice=0,
                              job_timeout=7200, repeats=1)
    home = os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb"))
    archive = os.path.join(home, "bench", "archive_full_%d" % a.files)
    manifest = br.ensure_archive(archive, a.files, small=False)
    n = manifest["counts"]["instances"]
    os.makedirs(a.out, exist_ok=True)
    workdir = os.path.join("/tmp", "mdb_profile_linker_%d" % os.getpid())
    os.makedirs(workdir, exist_ok=True)
    pipe = br.Pipe(args, "prof", [os.path.realpath(archive)], workdir)
    suffix = ("_" + a.label) if a.label else ""
    try:
        pipe.prepare(manifest)
        pipe.start("producer")
        job_id = pipe.tag + "-job"
        pipe.metadb("submit", "--researcher", "bench", "--collection", "BENCH", "--all-cases", "--job-id", job_id)
        for _ in range(2):
            pipe.start("worker", ["--worker.threads=1"])
        if not br.wait_for(lambda: br.topic_count(a.brokers, pipe.topics["instances"], 6) >= n, 1800, 0.3):
            raise RuntimeError("the workers did not extract %d files" % n)
        pipe.stop("worker")
        pipe.stop("producer")
        br.log("backlog of %d instance events ready; linking" % n)
        flags = ["--log.level=debug"] + a.linker_flags
        cg = os.path.join(a.out, "callgrind_linker%s.out" % suffix)
        t0 = time.time()
        if a.callgrind:
            log_path = os.path.join(workdir, "linker.log")
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg,
                   os.path.join(a.build, "linker", "metadb-linker")] + pipe.flags() + flags
            p = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=pipe.env())
            pipe.procs.append(("linker", p, log_path))
        else:
            pipe.start("linker", flags)
        job = br.wait_for(lambda: (lambda j: j if j and j.get("state") in br.FINAL else None)(
            pipe.db.jobs.find_one({"_id": job_id})), 7200, 0.1)
        wall = time.time() - t0
        pipe.stop("linker")
        batches = parse(pipe.log_text("linker"))
        by, total = summarise(batches)
        ninst = pipe.db.instances.count_documents({})
        model = cost_model(pipe.db, ninst)
        rep = pipe.linker_report() or {}
        res = {"files": n, "instances_in_db": ninst, "state": job and job.get("state"), "wall_seconds": wall,
               "linker": rep, "flush_seconds": total, "linker_flags": flags, "callgrind": a.callgrind,
               "operations": by, "batches": [{k: v for k, v in b.items() if k != "ops"} for b in batches],
               "cost_model_seconds": model, "commit": br.sh(["git", "-C", br.SRC, "rev-parse", "--short", "HEAD"],
                                                          check=False).stdout.strip()}
        path = os.path.join(a.out, "profile_linker%s.json" % suffix)
        with open(path, "w") as f:
            json.dump(res, f, indent=2)
        print("linker on a backlog of %d events: %s, %.1f s wall, %.1f s flushing in %d batches, %s" % (
            n, res["state"], wall, total, len(batches), json.dumps(rep)))
        print("%-34s %6s %10s %9s %7s %14s %14s" % ("operation", "count", "statements", "seconds", "share",
                                                    "first batches", "last batches"))
        for k, e in by.items():
            print("%-34s %6d %10d %9.2f %6.1f%% %12.3f s %12.3f s" % (k, e["count"], e["statements"], e["seconds"],
                                                                       100 * e["share"], e["first_batches_mean_s"],
                                                                       e["last_batches_mean_s"]))
        print("database cost model on %d instance documents:" % ninst)
        for k, v in model.items():
            if k != "instances":
                print("  %-45s %8.3f s" % (k, v))
        print("wrote %s" % path)
        return 0 if ninst == n else 1
    finally:
        pipe.cleanup()
        br.shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
