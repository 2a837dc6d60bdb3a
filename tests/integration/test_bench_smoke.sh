#!/usr/bin/env bash
# Smoke test of the benchmark command: `bench/run.sh --quick` (~50 full-size
# generated files, 1 repeat) runs every measurement on the live stack and
# writes report.json/report.md with every figure, the machine description,
# a pipeline run that linked every file, and no leftover private database.
# No timing is asserted: the goals are ratios reported by the benchmark, not
# pass/fail conditions of the test suite.
set -euo pipefail
src=${MDB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${MDB_BUILD_DIR:-$src/build}
out=$(mktemp -d /tmp/t_bench_smoke_XXXXXX)
trap 'rm -rf "$out"' EXIT
for b in bench/bench_extract bench/bench_dbload cli/metadb workers/metadb-worker linker/metadb-linker; do
    [[ -x $build/$b ]] || { echo "FAIL: $build/$b is not built"; exit 1; }
done
if ! "$src/bench/run.sh" --build "$build" --quick --out "$out" > "$out/run.log" 2>&1; then
    tail -50 "$out/run.log"
    echo "FAIL: bench/run.sh --quick exited non-zero"
    exit 1
fi
/usr/bin/python3 - "$out" <<'EOF'
import json, os, sys
import pymongo
out = sys.argv[1]
rep = json.load(open(os.path.join(out, "report.json")))
fails = []
def need(path, kind=(int, float)):
    v = rep
    for k in path.split("."):
        if not isinstance(v, dict) or k not in v:
            fails.append("missing %s" % path)
            return None
        v = v[k]
    if kind and not isinstance(v, kind):
        fails.append("%s is %r, expected %s" % (path, v, kind))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
        fails.append("%s is %r, expected > 0" % (path, v))
    return v
for p in ("machine.cpus", "machine.memory_bytes"):
    need(p)
for p in ("machine.cpu_model", "machine.kernel", "machine.lscpu", "machine.versions.kafka",
          "machine.versions.database", "machine.versions.gdcm", "machine.versions.orthanc"):
    need(p, str)
for p in ("extraction.metadb_files_per_cpu_s", "extraction.pydicom_files_per_cpu_s",
          "extraction.bare_files_per_cpu_s", "ceiling_upsert.instances_per_s", "ceiling_insert.instances_per_s",
          "ceiling.instances_per_s", "refshape.instances_per_s", "orthanc.instances_per_s",
          "end_to_end.job_seconds", "end_to_end.instances_per_s", "end_to_end.round_trips_per_instance",
          "end_to_end.kafka_bytes_per_instance", "end_to_end.worker_peak_rss_bytes",
          "end_to_end.linker_peak_rss_bytes", "scaling.workers_1.instances_per_s",
          "scaling.workers_2.instances_per_s", "scaling.speedup_1_to_2", "linker_backlog.instances_per_s",
          "linker_backlog.round_trips_per_instance"):
    need("figures." + p)
for r in ("extraction_vs_pydicom", "extraction_cost_vs_bare", "e2e_vs_ceiling", "e2e_vs_orthanc",
          "e2e_vs_refshape", "round_trips_per_instance", "scaling_1_to_2_workers"):
    need("ratios.%s.value" % r)
    need("ratios.%s.goal" % r, str)
    need("ratios.%s.met" % r, bool)
n = need("config.files", int)
for run in rep.get("figures", {}).get("end_to_end", {}).get("runs", []):
    if run.get("instances_in_db") != n or run.get("state") != "completed" or run.get("files_done") != n:
        fails.append("end-to-end run did not link every file: %r" % {k: run.get(k) for k in (
            "instances_in_db", "state", "files_done", "files_total")})
kb = rep.get("figures", {}).get("end_to_end", {}).get("kafka", {})
if kb.get("files_records") != n or kb.get("instances_records") != n:
    fails.append("Kafka record counts %r, expected %d on each topic" % (kb, n))
for k in ("ceiling_upsert", "ceiling_insert"):
    if rep["figures"].get(k, {}).get("instances") != n:
        fails.append("%s wrote %r instances, expected %d" % (k, rep["figures"].get(k, {}).get("instances"), n))
md = open(os.path.join(out, "report.md")).read()
for s in ("## Machine", "## Goals", "### End to end", "### Baselines", "### Stages"):
    if s not in md:
        fails.append("report.md lacks %s" % s)
client = pymongo.MongoClient(os.environ.get("METADB_MONGO_URI", "mongodb://127.0.0.1:27017"), serverSelectionTimeoutMS=10000)
dbs = rep.get("config", {}).get("private_databases") or []
if len(dbs) < 4:
    fails.append("report names %d private databases, expected ceiling, refshape, e2e and stages ones" % len(dbs))
left = [d for d in dbs if client[d].list_collection_names()]
if left:
    fails.append("private databases left behind: %s" % left)
for f in fails:
    print("FAIL: " + f)
print("test_bench_smoke: %s (%d file(s), %d problem(s))" % ("ok" if not fails else "FAILED", n or 0, len(fails)))
sys.exit(1 if fails else 0)
EOF
