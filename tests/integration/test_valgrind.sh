#!/usr/bin/env bash
# tests/integration/test_valgrind.sh — memory safety outside the sanitizers:
# two scenarios under valgrind (memcheck, --leak-check=full, definite and
# indirect leaks count as errors), each must report zero errors:
#   1. `metadb extract` over the bad-input corpus (tests/gen/gen_badinput.py:
#      truncations, lying lengths, deep nesting, charsets, DICOMDIR, FIFO ...)
#      plus a few generated archive files;
#   2. metadb-worker consuming a small batch of file tasks (the same files,
#      plus undecodable task messages) from private topics on the live Kafka,
#      producing events and DLQ records, then stopped with SIGTERM; every task
#      must have produced exactly one record and the worker must exit 0;
#   3. metadb-linker linking that worker output (events and DLQ records, plus
#      an invalid event and an invalid DLQ record) into a private database,
#      stopped with SIGTERM: every event's instance is in the database.
# Only the MDB_BUILD_DIR build is meaningful here: in an ASan build (MDB_SANITIZE=1)
# valgrind cannot run, so the test then runs the build/ binaries next to it
# when they exist and fails otherwise.
set -uo pipefail
SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
PY=/usr/bin/python3
BROKER=${MDB_TEST_BROKERS:-127.0.0.1:9092}
for v in $(compgen -e | grep '^METADB_'); do unset "$v"; done
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]; exit $?; }

if [ "${MDB_SANITIZE:-0}" = 1 ] || nm -D "$BUILD/cli/metadb" 2>/dev/null | grep -q __asan_init; then
    # valgrind and ASan cannot share a process: use the plain build of this checkout
    BUILD=$(dirname "$BUILD")/$(basename "$BUILD" | sed 's/-asan$//')
    echo "# sanitizer build: running valgrind on $BUILD"
fi
command -v valgrind >/dev/null || { bad "valgrind not installed"; finish; }
for b in cli/metadb workers/metadb-worker linker/metadb-linker; do
    [ -x "$BUILD/$b" ] || { bad "$BUILD/$b not built"; finish; }
    nm -D "$BUILD/$b" 2>/dev/null | grep -q __asan_init && { bad "$BUILD/$b is a sanitizer build"; finish; }
done
kcat -L -b "$BROKER" -m 10 >/dev/null 2>&1 || { bad "Kafka not reachable at $BROKER"; finish; }

TMP=$(mktemp -d /tmp/mdb-valgrind.XXXXXX)
WPID=
cleanup() {
    [ -n "$WPID" ] && { kill -KILL "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null; }
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

VG=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --track-origins=yes --num-callers=30 --trace-children=no
    --suppressions="$SRC/tests/valgrind.supp")
# vg_clean LOG: valgrind's summary says zero errors and no definite/indirect leak.
vg_clean() {
    grep -q "ERROR SUMMARY: 0 errors" "$1" &&
        ! grep -Eq "definitely lost: [1-9]|indirectly lost: [1-9]" "$1"
}
vg_show() { echo "  --- valgrind report ($1) ---"; grep -E "^==[0-9]+==" "$1" | head -n 80 | sed 's/^/  /'; }

ROOT=$TMP/archive
mkdir -p "$ROOT"
"$PY" "$SRC/tests/gen/gen_badinput.py" --out "$ROOT/bad" --seed 5 >/dev/null 2>&1 || { bad "gen_badinput failed"; finish; }
"$PY" "$SRC/tests/gen/gen_archive.py" --out "$ROOT/lidc" --patients 1 --seed 9 --small --slices 3:3 --jobs 1 >/dev/null ||
    { bad "gen_archive failed"; finish; }
ROOT=$(realpath "$ROOT")
mapfile -t FILES < <(jq -r '.[] | select(.expect != "none") | .path' "$ROOT/bad/expected.json"; jq -r '.instances[].path' "$ROOT/lidc/manifest.json")
echo "# ${#FILES[@]} files"

# ---------------------------------------------------------------- 1. metadb extract
T0=$SECONDS
"${VG[@]}" --log-file="$TMP/vg-extract.log" "$BUILD/cli/metadb" --features.dir="$SRC/conf" extract --quiet "${FILES[@]}" \
    >"$TMP/extract.out" 2>"$TMP/extract.err"
rc=$?
check "metadb extract under valgrind: not a valgrind error exit (exit $rc, $((SECONDS - T0))s)" [ $rc != 99 ]
check "metadb extract under valgrind: one JSON line per file" [ "$(jq -c . "$TMP/extract.out" 2>/dev/null | wc -l)" = "${#FILES[@]}" ]
if vg_clean "$TMP/vg-extract.log"; then ok "metadb extract: valgrind reports 0 errors, 0 definite/indirect leaks"
else bad "metadb extract: valgrind reports"; vg_show "$TMP/vg-extract.log"; fi

# ---------------------------------------------------------------- 2. metadb-worker
ID=t_valgrind_$$
FLAGS=(--kafka.brokers="$BROKER" --topic.jobs="$ID.jobs" --topic.files="$ID.files" --topic.instances="$ID.instances"
       --topic.dlq="$ID.dlq" --topic.partitions=1 --worker.group="$ID.workers" --worker.metrics_port=0
       --worker.threads=2 --archive.roots="$ROOT" --features.dir="$SRC/conf")
"$BUILD/cli/metadb" "${FLAGS[@]}" topics >/dev/null 2>&1 || { bad "cannot create topics"; finish; }
{
    for f in "${FILES[@]}"; do
        printf '%s\t{"v":1,"job_id":"%s","path":%s}\n' "$f" "$ID" "$(jq -Rn --arg p "$f" '$p')"
    done
    printf 'poison-1\tnot json\n'
    printf 'poison-2\t{"v":1,"job_id":"%s","path":17}\n' "$ID"
    printf 'poison-3\t{"v":1,"job_id":"%s","path":"/etc/passwd"}\n' "$ID"
} >"$TMP/tasks.txt"
NTASKS=$(wc -l <"$TMP/tasks.txt")
kcat -P -b "$BROKER" -t "$ID.files" -K $'\t' <"$TMP/tasks.txt" || { bad "kcat produce failed"; finish; }
count() { kcat -C -b "$BROKER" -t "$1" -o beginning -e -q -f 'x\n' 2>/dev/null | wc -l; }
T0=$SECONDS
"${VG[@]}" --log-file="$TMP/vg-worker.log" "$BUILD/workers/metadb-worker" "${FLAGS[@]}" >"$TMP/worker.log" 2>&1 &
WPID=$!
n=0
for _ in $(seq 1 600); do
    n=$(( $(count "$ID.instances") + $(count "$ID.dlq") ))
    [ "$n" -ge "$NTASKS" ] && break
    kill -0 "$WPID" 2>/dev/null || break
    sleep 1
done
check "worker under valgrind: $NTASKS tasks -> $n records ($((SECONDS - T0))s)" [ "$n" = "$NTASKS" ]
sleep 6 # a commit interval, so the final commit has work to do
kill -TERM "$WPID" 2>/dev/null
rc=
for _ in $(seq 1 120); do kill -0 "$WPID" 2>/dev/null || break; sleep 1; done
if kill -0 "$WPID" 2>/dev/null; then
    bad "worker under valgrind did not stop within 120s of SIGTERM"
else
    wait "$WPID"; rc=$?
    check "worker under valgrind exits 0 on SIGTERM (exit $rc)" [ "$rc" = 0 ]
fi
WPID=
if vg_clean "$TMP/vg-worker.log"; then ok "metadb-worker: valgrind reports 0 errors, 0 definite/indirect leaks"
else bad "metadb-worker: valgrind reports"; vg_show "$TMP/vg-worker.log"; tail -n 20 "$TMP/worker.log"; fi

# ---------------------------------------------------------------- 3. metadb-linker
MONGO=${MDB_TEST_MONGO_URI:-mongodb://127.0.0.1:27017}
LFLAGS=("${FLAGS[@]}" --mongo.uri="$MONGO" --mongo.db="$ID" --linker.group="$ID.linkers" --linker.metrics_port=0
        --linker.batch_size=10)
printf 'bad-event\t{"v":1,"job_id":"%s","path":"%s/x.dcm","study":"no"}\n' "$ID" "$ROOT" |
    kcat -P -b "$BROKER" -t "$ID.instances" -K $'\t'
printf 'bad-dlq\t{"v":1,"job_id":"%s","stage":7}\n' "$ID" | kcat -P -b "$BROKER" -t "$ID.dlq" -K $'\t'
NEV=$(kcat -C -b "$BROKER" -t "$ID.instances" -o beginning -e -q -f '%s\n' 2>/dev/null | jq -r 'select(.instance.SOPInstanceUID) | .instance.SOPInstanceUID' 2>/dev/null | sort -u | wc -l)
T0=$SECONDS
"${VG[@]}" --log-file="$TMP/vg-linker.log" "$BUILD/linker/metadb-linker" "${LFLAGS[@]}" >"$TMP/linker.log" 2>&1 &
WPID=$!
ninst=0
for _ in $(seq 1 300); do
    ninst=$("$PY" -c 'import sys,pymongo; print(pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000)[sys.argv[2]].instances.count_documents({}))' "$MONGO" "$ID" 2>/dev/null || echo 0)
    [ "$ninst" -ge "$NEV" ] && break
    kill -0 "$WPID" 2>/dev/null || break
    sleep 1
done
check "linker under valgrind: $ninst of $NEV instances linked ($((SECONDS - T0))s)" [ "$ninst" = "$NEV" ]
sleep 3
kill -TERM "$WPID" 2>/dev/null
for _ in $(seq 1 120); do kill -0 "$WPID" 2>/dev/null || break; sleep 1; done
if kill -0 "$WPID" 2>/dev/null; then
    bad "linker under valgrind did not stop within 120s of SIGTERM"
else
    wait "$WPID"; rc=$?
    check "linker under valgrind exits 0 on SIGTERM (exit $rc)" [ "$rc" = 0 ]
fi
WPID=
"$PY" -c 'import sys,pymongo; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000).drop_database(sys.argv[2])' "$MONGO" "$ID" >/dev/null 2>&1
if vg_clean "$TMP/vg-linker.log"; then ok "metadb-linker: valgrind reports 0 errors, 0 definite/indirect leaks"
else bad "metadb-linker: valgrind reports"; vg_show "$TMP/vg-linker.log"; tail -n 20 "$TMP/linker.log"; fi
finish
