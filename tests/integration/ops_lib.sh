# shellcheck shell=bash
# tests/integration/ops_lib.sh — shared by the operations tests
# (test_prometheus.sh, tests/e2e/test_scaleout.sh): isolated names per run,
# free ports, the metadb configuration flags every daemon of a run gets, a
# generated archive with a job over it, and clean-up of everything the run
# created (daemons, topics, database, temp dir). Source it; it is not a test.
#
# After `ops_init NAME`: $TAG (t_NAME_PID: database, topic prefix, groups),
# $TMP, $SRC, $BUILD, $METADB, $BROKERS, $MONGO, and the array CFG of config
# flags. Kafka and MongoDB come from METADB_KAFKA_BROKERS / METADB_MONGO_URI
# (default: the local stack); every METADB_* variable is then removed from the
# environment so daemons see only CFG.

PY=/usr/bin/python3
SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
METADB=$BUILD/cli/metadb
SCALE=$SRC/deploy/scale.sh
OPS_HOME=${METADB_HOME:-$HOME/.metadb}
OPS_CACHE=${METADB_DEPLOY_CACHE:-$OPS_HOME/cache}
BROKERS=${METADB_KAFKA_BROKERS:-127.0.0.1:${METADB_KAFKA_PORT:-9092}}
MONGO=${METADB_MONGO_URI:-mongodb://127.0.0.1:${METADB_MONGO_PORT:-27017}}
for _v in $(compgen -e | grep '^METADB_'); do unset "$_v"; done

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
die() { bad "$*"; finish; }
finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ] && exit 0
    exit 1
}

# free_ports N: N distinct free loopback ports chosen by the kernel.
free_ports() {
    "$PY" -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()' "$1"
}

# free_port_block N: a base port P with P..P+N-1 all free (for scale.sh bases).
free_port_block() {
    "$PY" -c '
import random, socket, sys
n = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 60000 - n)
    ss = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); ss.append(s)
    except OSError:
        continue
    finally:
        for s in ss: s.close()
    print(base); break
else:
    sys.exit("no free port block")' "$1"
}

OPS_PIDS=()
OPS_RUNDIRS=()
OPS_TAGS=()
ops_cleanup() {
    local d p
    for d in "${OPS_RUNDIRS[@]}"; do
        timeout 120 bash "$SCALE" stop --run-dir "$d" --grace 20 >/dev/null 2>&1
    done
    for p in "${OPS_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${OPS_PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    for t in "${OPS_TAGS[@]}"; do
        "$PY" -c 'import pymongo,sys; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000, socketTimeoutMS=60000).drop_database(sys.argv[2])' \
            "$MONGO" "$t" >/dev/null 2>&1 || echo "warning: could not drop database $t"
        if ls "$OPS_CACHE"/kafka-libs/kafka-tools-*.jar >/dev/null 2>&1; then
            timeout 60 java -Xmx128m -cp "$OPS_CACHE/kafka-libs/*" org.apache.kafka.tools.TopicCommand \
                --bootstrap-server "$BROKERS" --delete --topic "$t\\..*" >/dev/null 2>&1
        fi
    done
    case $TMP in /tmp/mdb-ops.*) rm -rf "$TMP" ;; esac
}

# ops_init NAME: names, temp dir, CFG, clean-up trap.
ops_init() {
    TAG=t_$1_$$
    TMP=$(mktemp -d /tmp/mdb-ops.XXXXXX)
    trap ops_cleanup EXIT
    for b in cli/metadb producer/metadb-producer workers/metadb-worker linker/metadb-linker api/metadb-api; do
        [ -x "$BUILD/$b" ] || die "binary not found: $BUILD/$b (set MDB_BUILD_DIR)"
    done
    kcat -L -b "$BROKERS" -m 10 >/dev/null 2>&1 || die "Kafka not reachable at $BROKERS"
    "$PY" -c 'import pymongo,sys; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000).admin.command("ping")' \
        "$MONGO" >/dev/null 2>&1 || die "MongoDB not reachable at $MONGO"
    mkdir -p "$TMP/archive"
    ops_use "$TAG"
}

# ops_use TAG: CFG names database, topics and groups after TAG (a second,
# independent deployment of the same run uses another TAG).
ops_use() {
    TAG=$1
    [[ " ${OPS_TAGS[*]} " == *" $TAG "* ]] || OPS_TAGS+=("$TAG")
    CFG=(--kafka.brokers="$BROKERS" --mongo.uri="$MONGO" --mongo.db="$TAG"
         --topic.jobs="$TAG.jobs" --topic.files="$TAG.files" --topic.instances="$TAG.instances" --topic.dlq="$TAG.dlq"
         --topic.retrieve="$TAG.retrieve" --producer.group="$TAG.producers" --worker.group="$TAG.workers"
         --linker.group="$TAG.linkers" --fetcher.group="$TAG.fetchers"
         --archive.roots="$TMP/archive" --features.dir="$SRC/conf" --api.web_dir="$SRC/api/web")
}

mdb() { "$METADB" "${CFG[@]}" "$@"; }

# ops_archive PATIENTS FILES SEED: generated archive under $TMP/archive, then ops_prepare.
ops_archive() {
    "$PY" "$SRC/tests/gen/gen_archive.py" --out "$TMP/archive" --patients "$1" --files "$2" --seed "$3" --small \
        --jobs 1 >"$TMP/gen.log" 2>&1 || die "gen_archive failed: $(tail -3 "$TMP/gen.log")"
    ops_prepare
}

# ops_prepare: topics are created by the caller; this indexes the archive into
# the current TAG's database and adds researcher "ops" and collection "LIDC".
ops_prepare() {
    mdb index >"$TMP/index.log" 2>&1 || die "metadb index failed: $(tail -3 "$TMP/index.log")"
    mdb researcher add ops --name "Ops Test" --email ops@example.org >/dev/null 2>&1 &&
        mdb collection create LIDC --description "operations test" >/dev/null 2>&1 ||
        die "creating researcher/collection failed"
}

# patients of the generated archive, space separated
ops_patients() {
    "$PY" -c 'import json,sys; print(" ".join(p["patient_id"] for p in json.load(open(sys.argv[1]))["patients"]))' \
        "$TMP/archive/manifest.json"
}

# job_field JOB FIELD: a field of the job document (via metadb status --json)
job_field() {
    mdb status "$1" --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2" 2>/dev/null
}

# scrape PORT: the /metrics text of a daemon
scrape() { curl -s -m 5 "http://127.0.0.1:$1/metrics"; }
