#!/usr/bin/env bash
# bench/run.sh — THE metadb benchmark: one command, one report.
#
#   bench/run.sh [--quick] [--files N] [--repeats R] [--build DIR] [--out DIR] [-- more options]
#   bench/run.sh --lidc [--build DIR]
#
# Generates (once, then reuses) a synthetic archive of N full-size files
# (default 5000) under $METADB_HOME/bench/, then measures, each against a
# baseline taken in the same run, with the median of R repeats (default 3):
#   - extraction files/s per core vs pydicom (goal >= 10x) and vs bare
#     open+read(4 KiB)+close (goal: within 3x)       (bench/bench_extract.sh)
#   - end to end, submission -> job `completed` on the local stack (producer,
#     2 workers, 1 linker on private topics, groups and database): instances/s
#     vs the database ceiling (same documents bulk-written directly, goal
#     >= 70 %), vs Orthanc's REST API with 2 uploaders (goal >= 5x), vs the
#     reference pipeline's shape (one insert per document + a find per
#     parent, goal >= 20x)                           (bench/bench_dbload.c)
#   - database round trips per instance (goal <= 0.02), Kafka bytes per
#     instance, worker and linker peak RSS, worker scaling 1 -> 2
#   - the database's peak PSS (PostgreSQL's processes + DocumentDB's gateway,
#     sampled every second) during the end-to-end runs
# and writes bench/out/report.md and bench/out/report.json (machine
# description included). --quick: ~50 files, 1 repeat (a smoke run; its
# numbers mean little). --lidc: an LIDC-IDRI-shaped archive (1,010 patients,
# 244,527 instances, small pixel data) through the whole pipeline (daemons
# nice'd); asserts the database then holds exactly 244,527 instances, then
# starts metadb-api on that catalogue as the read-only user and times
# filtered study/series queries (goal: median < 50 ms), the instances of one
# series (< 50 ms) and a count of >= 100,000 instances (< 500 ms), all
# answered by the database (bench/bench_queries.py), with the database's
# peak PSS; writes bench/out/lidc.json (report.md shows it). It needs ~2.5 GB
# of disk and takes long on 2 cores.
#
# The database: METADB_MONGO_URI (read-write) and METADB_API_MONGO_URI
# (read-only, for metadb-api), else the local stack's generated
# $METADB_HOME/database/metadb.uri and metadb_ro.uri.
#
# The build: --build DIR or $MDB_BUILD_DIR, else build-release/ of this
# checkout, configured with -DCMAKE_BUILD_TYPE=Release and built here if
# needed. Needs the local stack (deploy/stack.sh start), Debian's
# /usr/bin/python3 (pydicom, pymongo), kcat and Orthanc. Options after
# `--` go to bench/bench_run.py (--skip, --workers, --orthanc-files, ...;
# /usr/bin/python3 bench/bench_run.py --help).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/.." && pwd)
build=${MDB_BUILD_DIR:-}
args=()
while (( $# )); do
    case $1 in
        --build) build=$2; shift 2 ;;
        --build=*) build=${1#*=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; args+=("$@"); break ;;
        *) args+=("$1"); shift ;;
    esac
done
build=${build:-$src/build-release}
need=(cli/metadb producer/metadb-producer workers/metadb-worker linker/metadb-linker bench/bench_extract
      bench/bench_dbload)
[[ " ${args[*]-} " == *" --lidc "* ]] && need+=(api/metadb-api)  # the queries on the LIDC catalogue
missing=0
for b in "${need[@]}"; do [[ -x $build/$b ]] || missing=1; done
if (( missing )); then
    echo "bench: building $build (Release) ..."
    [[ -f $build/CMakeCache.txt ]] || cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    make -C "$build" -j2 metadb metadb-producer metadb-worker metadb-linker metadb-api bench_extract \
        bench_dbload >/dev/null
fi
if [[ -f $build/CMakeCache.txt ]] && ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release' "$build/CMakeCache.txt"; then
    echo "bench: warning: $build is not a Release build; numbers will be pessimistic" >&2
fi
exec /usr/bin/python3 "$here/bench_run.py" --build "$build" "${args[@]}"
