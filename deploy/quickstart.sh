#!/usr/bin/env bash
# deploy/quickstart.sh — from a fresh Debian 12 machine to a first research catalogue:
#   1. deploy/install.sh (packages, Kafka jars, DocumentDB + its gateway; cached after the first run)
#   2. builds the daemons and the CLI in build/ (cmake, -DMDB_WERROR=ON)
#   3. deploy/stack.sh start (Kafka + database + the four topics)
#   4. generates a small synthetic LIDC-IDRI-like archive (tests/gen/gen_archive.py),
#      indexes it (`metadb index`), registers a researcher and a collection, runs
#      metadb-producer, metadb-worker and metadb-linker, submits a job for every
#      patient of the archive and waits for it (`metadb submit --wait`), prints a few
#      `metadb query` results, then stops the daemons it started (the stack keeps
#      running; `deploy/stack.sh stop` stops it).
# Until every piece of step 4 is part of the build, it ends after step 3 with
# "stack up, topics created, database reachable".
#
# Options: --keep  leave the daemons (and metadb-api on api.listen, the dashboard)
#                  running after the job; stop them with deploy/quickstart.sh --stop
#          --stop  stop daemons a previous --keep left running
# Environment: METADB_HOME (state, default ~/.metadb), MDB_BUILD_DIR (default
# <source>/build), MDB_QS_PATIENTS (default 5), and any METADB_* configuration key
# (e.g. METADB_MONGO_DB) for the metadb commands and daemons.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export METADB_HOME=${METADB_HOME:-$HOME/.metadb}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
QS=$METADB_HOME/quickstart
PATIENTS=${MDB_QS_PATIENTS:-5}
PY=/usr/bin/python3
KEEP=0
say() { printf '\nquickstart: %s\n' "$*"; }
die() { printf 'quickstart: error: %s\n' "$*" >&2; exit 1; }

DAEMONS=(producer worker linker api)
stop_daemons() {
    local d pid
    for d in "${DAEMONS[@]}"; do
        [ -s "$QS/$d.pid" ] || continue
        pid=$(cat "$QS/$d.pid")
        if kill -0 "$pid" 2>/dev/null && grep -q "metadb-$d" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
            echo "stopped metadb-$d (pid $pid)"
        fi
        rm -f "$QS/$d.pid"
    done
}

case ${1:-} in
    --keep) KEEP=1 ;;
    --stop) stop_daemons; exit 0 ;;
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (--keep, --stop, --help)" ;;
esac

T0=$SECONDS
say "1/4 install"
bash "$SRC/deploy/install.sh"

say "2/4 build ($BUILD)"
cmake -S "$SRC" -B "$BUILD" -DMDB_WERROR=ON >/dev/null
# Only the product (the daemons and the CLI): the tests need tools the quick start does
# not install (deploy/install.sh --with-tests; tests/run.sh builds everything).
make -C "$BUILD" -j"${MDB_JOBS:-2}" --no-print-directory metadb-producer metadb-worker metadb-linker metadb-api metadb \
    >"$BUILD/quickstart-build.log" 2>&1 ||
    { tail -n 40 "$BUILD/quickstart-build.log"; die "build failed (log: $BUILD/quickstart-build.log)"; }
echo "built in $BUILD"

say "3/4 local stack"
bash "$SRC/deploy/stack.sh" start

METADB=$BUILD/cli/metadb
have_command() { [ -x "$METADB" ] && "$METADB" "$1" --help >/dev/null 2>&1; }
missing=()
for b in producer/metadb-producer workers/metadb-worker linker/metadb-linker api/metadb-api cli/metadb; do
    [ -x "$BUILD/$b" ] || missing+=("$(basename "$b")")
done
for c in index researcher collection submit query; do have_command "$c" || missing+=("metadb $c"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "not yet part of this build: ${missing[*]}"
    echo "stack up, topics created, database reachable"
    exit 0
fi

say "4/4 first job"
mkdir -p "$QS" "$METADB_HOME/logs"
ARCHIVE=$QS/archive
if [ ! -f "$ARCHIVE/manifest.json" ]; then
    rm -rf "$ARCHIVE"
    "$PY" "$SRC/tests/gen/gen_archive.py" --out "$ARCHIVE" --patients "$PATIENTS" --seed 1 --small >/dev/null
fi
echo "archive: $ARCHIVE ($("$PY" -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print("%d patients, %d studies, %d series, %d instances" % (c["patients"], c["studies"], c["series"], c["instances"]))' "$ARCHIVE/manifest.json"))"

# One configuration for every command and daemon below (flags and METADB_* still win).
(umask 077; : >"$QS/metadb.conf") # it holds the database passwords below
cat >"$QS/metadb.conf" <<EOF
# written by deploy/quickstart.sh
archive.roots = $ARCHIVE
features.dir = $SRC/conf
api.web_dir = $SRC/api/web
EOF
# The local database's users (deploy/stack.sh): read-write for the pipeline and the
# CLI, read-only for the API. An external METADB_MONGO_URI still wins (environment).
if [ -s "$METADB_HOME/database/metadb.uri" ]; then
    (umask 077; {
        echo "mongo.uri = $(cat "$METADB_HOME/database/metadb.uri")"
        echo "api.mongo_uri = $(cat "$METADB_HOME/database/metadb_ro.uri")"
    } >>"$QS/metadb.conf")
fi
export METADB_CONFIG=$QS/metadb.conf

"$METADB" index --archive "$ARCHIVE"
"$METADB" researcher add quickstart --name "Quick Start" --email quickstart@example.org --update
"$METADB" collection create LIDC-IDRI-QS --description "deploy/quickstart.sh synthetic archive" >/dev/null 2>&1 || true

stop_daemons
trap '[ $KEEP = 1 ] || stop_daemons' EXIT
for d in "${DAEMONS[@]}"; do
    [ "$d" = api ] && [ $KEEP = 0 ] && continue
    dir=$d; [ "$d" = worker ] && dir=workers
    # Metrics ports off: other processes on this machine may hold the defaults.
    args=("--$d.metrics_port=0"); [ "$d" = api ] && args=()
    MONGOC_DISABLE_SHM=${MONGOC_DISABLE_SHM:-1} setsid "$BUILD/$dir/metadb-$d" "${args[@]}" \
        >>"$METADB_HOME/logs/quickstart-$d.log" 2>&1 </dev/null &
    echo $! >"$QS/$d.pid"
    echo "started metadb-$d (pid $!, log $METADB_HOME/logs/quickstart-$d.log)"
done
sleep 1
for d in producer worker linker; do
    kill -0 "$(cat "$QS/$d.pid")" 2>/dev/null || { tail -n 20 "$METADB_HOME/logs/quickstart-$d.log"; die "metadb-$d exited"; }
done

mapfile -t PIDS < <("$PY" -c 'import json,sys; [print(p["patient_id"]) for p in json.load(open(sys.argv[1]))["patients"]]' "$ARCHIVE/manifest.json")
set +e
"$METADB" submit --researcher quickstart --collection LIDC-IDRI-QS --patient "${PIDS[@]}" --wait --timeout 600
rc=$?
set -e
case $rc in
    0) echo "job completed" ;;
    3) echo "job completed with errors (see metadb status)" ;;
    *) die "job did not complete (metadb submit exit code $rc)" ;;
esac

say "query results"
"$METADB" query studies --limit 5 --fields study_instance_uid,patient_id,accession_number,study_date,modality
"$METADB" query series --limit 5 --fields series_instance_uid,series_number,modality,series_description,instance_count

LISTEN=${METADB_API_LISTEN:-127.0.0.1:8080}
if [ $KEEP = 1 ]; then
    say "daemons left running (deploy/quickstart.sh --stop stops them); dashboard: http://$LISTEN/ (OHIF viewer: http://$LISTEN/viewer/)"
else
    say "dashboard: deploy/quickstart.sh --keep leaves metadb-api running at http://$LISTEN/"
fi
say "done in $((SECONDS - T0))s — stack still running (deploy/stack.sh status | stop)"
