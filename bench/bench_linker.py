#!/usr/bin/python3
"""Linker efficiency on the live stack: database round trips per linked
instance and linked instances per second, with the linker's default
batching (linker.batch_size, linker.batch_ms: conf defaults).

A generated archive (--files N, default 3000) is extracted by the producer
and two workers while no linker runs, so the instance events wait in the
topic as a backlog; then one metadb-linker links them all and its exit
report gives the numbers. With --rerun the same job runs a second time (every
instance exists already: the idempotent path) and is measured too.

    /usr/bin/python3 bench/bench_linker.py [--files N] [--rerun] [--keep]

Everything lives in its own database and topics (t_benchlinker_<pid>) and is
dropped at the end unless --keep."""

import argparse
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_queries as bq  # noqa: E402

# the database needs credentials: METADB_MONGO_URI, else the local stack's
# generated URI (set before producer_support reads it)
if not (os.environ.get("MDB_TEST_MONGO_URI") or os.environ.get("METADB_MONGO_URI")) and bq.default_uri():
    os.environ["METADB_MONGO_URI"] = bq.default_uri()
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import producer_support as ps  # noqa: E402

WORKER = os.path.join(ps.BUILD, "workers", "metadb-worker")
LINKER = os.path.join(ps.BUILD, "linker", "metadb-linker")
FEATURES = os.path.join(ps.SRC, "conf")


def topic_count(topic):
    p = subprocess.run(["kcat", "-C", "-b", ps.BROKERS, "-t", topic, "-e", "-q", "-o", "beginning", "-f", "x\n"],
                       capture_output=True, timeout=300)
    return p.stdout.count(b"\n")


def run_linker(env, base, name, expect_jobs_done):
    log_path = os.path.join(base, name + ".log")
    with open(log_path, "wb") as log:
        t0 = time.time()
        p = subprocess.Popen([LINKER] + env.config_flags() + [
            "--features.dir=" + FEATURES, "--linker.group=%s.linkers" % env.tag, "--linker.metrics_port=0"] + (["--log.level=debug"] if os.environ.get("BENCH_DEBUG") else []),
            stdout=log, stderr=subprocess.STDOUT, env=env.env())
        ok = ps.wait_for(lambda: env.db.jobs.count_documents({"state": "completed"}) >= expect_jobs_done,
                         timeout=3600, interval=0.2)
        wall = time.time() - t0
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
    with open(log_path, errors="replace") as f:
        text = f.read()
    rep = re.findall(r"linker done: .*", text)
    return ok, rc, wall, rep[-1] if rep else "(no report)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--rerun", action="store_true", help="also measure the same job a second time")
    ap.add_argument("--keep", action="store_true", help="keep the database and the files")
    args = ap.parse_args()
    base = ps.tempdir("t_benchlinker_")
    root = os.path.join(base, "archive")
    env = None
    procs = []
    try:
        t0 = time.time()
        manifest = ps.generate_archive(root, patients=args.patients, seed=11, extra=["--files", str(args.files)])
        root = os.path.realpath(root)
        print("archive: %d instances in %d series, %d studies (%.1f s)" % (
            len(manifest["instances"]), len(manifest["series"]), len(manifest["studies"]), time.time() - t0))
        env = ps.Env("benchlinker", [root])
        flags = ["--features.dir=" + FEATURES]
        env.metadb(*flags, "topics")
        env.metadb(*flags, "index", "--quiet", timeout=900)
        env.metadb(*flags, "researcher", "add", "bench", "--name", "Bench", "--email", "bench@example.org")
        env.metadb(*flags, "collection", "create", "BENCH", "--description", "linker benchmark")
        cases = os.path.join(base, "cases.csv")
        with open(cases, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "patient_id", "accession_numbers"])
            for n, p in enumerate(manifest["patients"], 1):
                w.writerow(["c%d" % n, p["patient_id"], ""])
        env.metadb(*flags, "collection", "add-cases", "BENCH", "--manifest", cases)
        log = open(os.path.join(base, "pipeline.log"), "wb")
        procs.append(subprocess.Popen([ps.PRODUCER] + env.config_flags() + flags, stdout=log,
                                      stderr=subprocess.STDOUT, env=env.env()))
        for _ in range(2):
            procs.append(subprocess.Popen([WORKER] + env.config_flags() + flags + [
                "--worker.group=%s.workers" % env.tag, "--worker.metrics_port=0"], stdout=log,
                stderr=subprocess.STDOUT, env=env.env()))
        n = len(manifest["instances"])
        rounds = 2 if args.rerun else 1
        for r in range(rounds):
            env.metadb(*flags, "submit", "--researcher", "bench", "--collection", "BENCH", "--all-cases")
        t1 = time.time()
        if not ps.wait_for(lambda: topic_count(env.topics["instances"]) >= rounds * n, timeout=3600, interval=1):
            sys.exit("workers did not produce %d events" % (rounds * n))
        print("backlog: %d instance events extracted in %.1f s (producer + 2 workers)" % (rounds * n,
                                                                                       time.time() - t1))
        ok, rc, wall, rep = run_linker(env, base, "linker", rounds)
        print("linker: %s" % rep)
        m = re.search(r"(\d+) event\(s\).*?(\d+) database round trip\(s\).*?\(([0-9.]+) per event\)", rep)
        if ok and m:
            events, rts = int(m.group(1)), int(m.group(2))
            print("RESULT linker: %d events (%d instances, %d job run(s)) linked in %.1f s wall = %.0f events/s; "
                  "%d round trips = %.4f per event (target <= 0.02)" % (events, n, rounds, wall, events / wall, rts,
                                                                         rts / events))
        else:
            print("RESULT linker: did not finish (jobs completed: %s, exit %r)" % (ok, rc))
            sys.exit(1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if env and not args.keep:
            env.cleanup()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print("kept %s (database %s)" % (base, env.db_name if env else "?"))


if __name__ == "__main__":
    main()
