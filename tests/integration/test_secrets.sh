#!/usr/bin/env bash
# tests/integration/test_secrets.sh — secrets come from the environment or
# files and never reach a log, an error message, a metric, a Kafka message or
# a database document.
#
# Planted secrets (fresh random values each run, except the broker's SASL
# password, which is the local stack's own):
#   - the password of mongo.uri (with ',' and ';' in it: legal in a URI's
#     userinfo and easy to mis-mask) and of api.mongo_uri (the API's read URI),
#   - the Kafka SASL/PLAIN password (METADB_KAFKA_SASL_PASSWORD, SASL listener),
#     and a wrong one for the failure paths,
#   - the API submission token (api.tokens=@FILE) and read token (api.read_tokens),
#   - the LLM API key (api.nl_llm_api_key), with the LLM endpoint down.
# Every daemon (producer, worker, linker when built, api) runs at
# log.level=debug with librdkafka's conf/security/broker debug contexts; the CLI
# runs topics, index, researcher, collection, submit, status, lag, query; the
# API serves reads and a submission (good, missing and wrong tokens) and an NL
# query that has to reach the (dead) LLM. Failure paths: wrong SASL password
# (CLI and a worker), unreachable database, malformed and misspelled keys
# carrying a secret. Then every output, log, /metrics page, the test's topics
# and its database are searched for every secret (raw and percent-decoded).
set -uo pipefail

SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
BIN_METADB=$BUILD/cli/metadb
PY=/usr/bin/python3
MDB_HOME=${METADB_HOME:-$HOME/.metadb}
PWFILE=$MDB_HOME/kafka/sasl.password
SASL=127.0.0.1:${METADB_DEPLOY_SASL_PORT:-9094}
PLAIN=127.0.0.1:${METADB_KAFKA_PORT:-9092}
MONGO_HOSTPORT=127.0.0.1:${METADB_MONGO_PORT:-27017}
# The stack's own read-write URI (cleanup and the final database search use it).
ADMIN_URI=${METADB_MONGO_URI:-$(cat "$MDB_HOME/database/metadb.uri" 2>/dev/null)}
for v in $(compgen -e | grep '^METADB_'); do unset "$v"; done

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

ID=t_secrets_$$
TMP=$(mktemp -d /tmp/mdb-secrets.XXXXXX)
OUT=$TMP/out   # every log and captured output goes here
mkdir -p "$OUT"
PIDS=() USERS=()
stack_user() { METADB_HOME=$MDB_HOME bash "$SRC/deploy/stack.sh" user "$@"; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    "$PY" -c 'import pymongo,sys; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000).drop_database(sys.argv[2])' \
        "$ADMIN_URI" "$ID" >/dev/null 2>&1
    for u in "${USERS[@]}"; do stack_user drop "$u" >/dev/null 2>&1; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
    exit $?
}

[ -x "$BIN_METADB" ] || { bad "metadb not built at $BIN_METADB"; finish; }
[ -s "$PWFILE" ] || { bad "no SASL password file $PWFILE (deploy/stack.sh start)"; finish; }
kcat -L -b "$PLAIN" -m 10 >/dev/null 2>&1 || { bad "Kafka not reachable at $PLAIN"; finish; }

rnd() { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 16; }
S_SASL=$(head -n1 "$PWFILE")
S_SASL_WRONG="wrongSasl$(rnd)"
S_MONGO="Mg,$(rnd);pw"          # ',' and ';' are legal unescaped in the userinfo
S_MONGO_ENC="Mg%40$(rnd)"       # percent-encoded '@': the decoded form is secret too
S_MONGO_ENC_DEC=${S_MONGO_ENC/\%40/@}
S_MONGO_SLASH="Sl/$(rnd)?x"     # an unescaped '/' makes the URI invalid: the error must still mask it
S_APIMONGO="Api$(rnd)ro"
S_TOKEN="tok$(rnd)$(rnd)"
S_READ="rd$(rnd)$(rnd)"
S_LLM="sk-$(rnd)$(rnd)"
SECRETS=("$S_SASL" "$S_SASL_WRONG" "$S_MONGO" "$S_MONGO_ENC" "$S_MONGO_ENC_DEC" "$S_MONGO_SLASH" "$S_APIMONGO"
         "$S_TOKEN" "$S_READ" "$S_LLM")
SECRET_NAMES=(kafka-sasl kafka-sasl-wrong mongo-uri mongo-uri-encoded mongo-uri-decoded mongo-uri-invalid api-mongo-uri
              api-token read-token llm-key)
printf '%s\n' "$S_TOKEN" >"$TMP/api.tokens"
# Real database users whose passwords are planted secrets (the local DocumentDB checks
# them): read-write with S_MONGO, read-only with S_APIMONGO, and one whose password is
# S_MONGO_ENC's decoded form (written percent-encoded in its URI).
[ -s "$MDB_HOME/database/metadb.uri" ] || { bad "the local DocumentDB stack is not running ($MDB_HOME/database/metadb.uri)"; finish; }
U_RW=t_sec_rw_$$ U_RO=t_sec_ro_$$ U_ENC=t_sec_enc_$$
for spec in "$U_RW rw $S_MONGO" "$U_RO ro $S_APIMONGO" "$U_ENC rw $S_MONGO_ENC_DEC"; do
    read -r u kind pw <<<"$spec"
    (umask 077; printf '%s\n' "$pw" >"$TMP/pw.$u")
    USERS+=("$u")
    stack_user add "$u" "$kind" "$TMP/pw.$u" >"$OUT/stack-user-$u.txt" 2>&1 || { bad "creating database user $u"; finish; }
    rm -f "$TMP/pw.$u"
done
chmod 600 "$TMP/api.tokens"

# ---------------------------------------------------------------- the configuration
ARCHIVE=$TMP/archive
"$PY" "$SRC/tests/gen/gen_archive.py" --out "$ARCHIVE" --patients 2 --seed 5 --small --slices 3:4 --jobs 1 >/dev/null ||
    { bad "gen_archive failed"; finish; }
ARCHIVE=$(realpath "$ARCHIVE")
read -r API_PORT DEAD_PORT < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
export METADB_KAFKA_BROKERS=$SASL
export METADB_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT
export METADB_KAFKA_SASL_MECHANISMS=PLAIN
export METADB_KAFKA_SASL_USERNAME=metadb
export METADB_KAFKA_SASL_PASSWORD=$S_SASL
export METADB_KAFKA_DEBUG=conf,security,broker,generic
export METADB_MONGO_URI="mongodb://$U_RW:$S_MONGO@$MONGO_HOSTPORT/?authSource=admin"
export METADB_API_MONGO_URI="mongodb://$U_RO:$S_APIMONGO@$MONGO_HOSTPORT/?authSource=admin&appname=metadb-api-ro"
export METADB_API_TOKENS=@$TMP/api.tokens
export METADB_API_READ_TOKENS=$S_READ
export METADB_API_NL_LLM_URL=http://127.0.0.1:$DEAD_PORT/v1/chat/completions
export METADB_API_NL_LLM_MODEL=test-model
export METADB_API_NL_LLM_API_KEY=$S_LLM
export METADB_API_NL_LLM_TIMEOUT_MS=2000
export METADB_API_LISTEN=127.0.0.1:$API_PORT
export METADB_API_WEB_DIR=$SRC/api/web
export METADB_LOG_LEVEL=debug
export METADB_MONGO_DB=$ID
export METADB_ARCHIVE_ROOTS=$ARCHIVE
export METADB_FEATURES_DIR=$SRC/conf
export METADB_TOPIC_JOBS=$ID.jobs METADB_TOPIC_FILES=$ID.files METADB_TOPIC_INSTANCES=$ID.instances METADB_TOPIC_DLQ=$ID.dlq
export METADB_TOPIC_PARTITIONS=2
export METADB_PRODUCER_GROUP=$ID.producers METADB_WORKER_GROUP=$ID.workers METADB_LINKER_GROUP=$ID.linkers
export METADB_PRODUCER_METRICS_PORT=0 METADB_LINKER_METRICS_PORT=0
WORKER_METRICS=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export METADB_WORKER_METRICS_PORT=$WORKER_METRICS

# run NAME ARGS...: a CLI command, output kept in $OUT/cli-NAME.txt, returns its status.
run() { local name=$1; shift; timeout 120 "$BIN_METADB" "$@" >"$OUT/cli-$name.txt" 2>&1; }
start() { # start ROLE BINARY [ARGS]: a daemon in the background, log in $OUT/ROLE.log
    local role=$1 bin=$2; shift 2
    "$bin" "$@" >"$OUT/$role.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$role=$!"
}

# ---------------------------------------------------------------- the happy path
check "metadb topics over SASL" run topics topics
check "metadb index" run index index
check "metadb researcher add" run researcher researcher add carol --name Carol --email carol@example.org
check "metadb collection create" run collection collection create SECRETS --description "secret test"
start producer "$BUILD/producer/metadb-producer"
start worker "$BUILD/workers/metadb-worker"
HAVE_LINKER=0
if [ -x "$BUILD/linker/metadb-linker" ]; then
    HAVE_LINKER=1
    start linker "$BUILD/linker/metadb-linker"
else
    echo "# NOTE: metadb-linker not built: not part of this run"
fi
start api "$BUILD/api/metadb-api"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$API_PORT/healthz" && break; sleep 0.2; done
PATIENT=$(jq -r '.studies[0].patient_id' "$ARCHIVE/manifest.json")
check "metadb submit" run submit submit --researcher carol --collection SECRETS --patient "$PATIENT" --job-id "$ID-cli"
API=http://127.0.0.1:$API_PORT
code() { curl -s -o "$OUT/http-$1.txt" -w '%{http_code}' "${@:2}"; }
check "API POST /api/jobs with the token -> 202" [ "$(code post-ok -X POST -H "Authorization: Bearer $S_TOKEN" \
    -H 'Content-Type: application/json' --data "{\"researcher_id\":\"carol\",\"collection\":\"SECRETS\",\"patient_ids\":[\"$PATIENT\"]}" \
    "$API/api/jobs")" = 202 ]
check "API POST /api/jobs without a token -> 401" [ "$(code post-none -X POST -H 'Content-Type: application/json' \
    --data '{"researcher_id":"carol","collection":"SECRETS","patient_ids":["x"]}' "$API/api/jobs")" = 401 ]
check "API POST /api/jobs with the read token -> 403" [ "$(code post-read -X POST -H "Authorization: Bearer $S_READ" \
    -H 'Content-Type: application/json' --data '{"researcher_id":"carol","collection":"SECRETS","patient_ids":["x"]}' \
    "$API/api/jobs")" = 403 ]
check "API GET /api/studies with the read token -> 200" [ "$(code studies -H "Authorization: Bearer $S_READ" "$API/api/studies")" = 200 ]
check "API GET /api/studies with a wrong token -> 401" [ "$(code studies-wrong -H "Authorization: Bearer x$S_READ" "$API/api/studies")" = 401 ]
check "API GET /api/studies with a token in the query string is refused (401)" \
    [ "$(code studies-qs "$API/api/studies?token=$S_READ&access_token=$S_READ")" = 401 ]
code nl -H "Authorization: Bearer $S_READ" "$API/api/nl?q=CT+studies+of+2001" >/dev/null
code lag -H "Authorization: Bearer $S_READ" "$API/api/lag" >/dev/null
code jobs -H "Authorization: Bearer $S_READ" "$API/api/jobs" >/dev/null
code metrics "$API/metrics" >/dev/null
curl -s "http://127.0.0.1:$WORKER_METRICS/metrics" >"$OUT/worker-metrics.txt" 2>&1
# let the job flow: tasks published and extracted
NFILES=$(jq "[.instances[] | select(.study_uid as \$s | [\"$(jq -r '.studies[0].uid' "$ARCHIVE/manifest.json")\"] | index(\$s))] | length" "$ARCHIVE/manifest.json")
for _ in $(seq 1 120); do
    n=$(kcat -C -b "$PLAIN" -t "$ID.instances" -o beginning -e -q -f 'x\n' 2>/dev/null | wc -l)
    [ "$n" -ge "$NFILES" ] && break
    sleep 0.5
done
check "the job's files were extracted over SASL ($n events)" [ "$n" -ge "$NFILES" ]
if [ $HAVE_LINKER = 1 ]; then
    for _ in $(seq 1 120); do run status-wait status "$ID-cli"; [ $? = 0 ] && break; sleep 0.5; done
fi
run status status "$ID-cli"
run status-json status "$ID-cli" --json
run lag lag
run query query studies
check "metadb lag over SASL" grep -q "$ID" "$OUT/cli-lag.txt"

# ---------------------------------------------------------------- failure paths
METADB_KAFKA_SASL_PASSWORD=$S_SASL_WRONG run lag-wrong-sasl lag
check "wrong SASL password: metadb lag fails" [ $? != 0 ]
check "wrong SASL password: the error says authentication failed" grep -qi "auth" "$OUT/cli-lag-wrong-sasl.txt"
METADB_KAFKA_SASL_PASSWORD=$S_SASL_WRONG METADB_WORKER_METRICS_PORT=0 METADB_WORKER_GROUP=$ID.wrong \
    timeout -s TERM 8 "$BUILD/workers/metadb-worker" >"$OUT/worker-wrong-sasl.log" 2>&1
METADB_MONGO_URI="mongodb://$U_RW:$S_MONGO@127.0.0.1:$DEAD_PORT/?authSource=admin&serverSelectionTimeoutMS=1500" \
    run status-dead-db status
check "unreachable database: metadb status fails" [ $? != 0 ]
METADB_MONGO_URI="mongodb://$U_ENC:$S_MONGO_ENC@$MONGO_HOSTPORT/?authSource=admin" run status-encoded status
METADB_MONGO_URI="mongodb://$U_RW:$S_MONGO@[bad-host/?authSource=admin" run status-bad-uri status
check "malformed mongo.uri: metadb status fails" [ $? != 0 ]
run misspelled-key "--mongo.urii=mongodb://metadb:$S_MONGO@$MONGO_HOSTPORT/" status
check "misspelled key carrying a URI: refused" [ $? != 0 ]
METADB_MONGO_URII="mongodb://metadb:$S_MONGO@$MONGO_HOSTPORT/" run misspelled-env status
check "misspelled METADB_ variable carrying a URI: refused" [ $? != 0 ]
run bad-int "--mongo.pool_size=mongodb://metadb:$S_MONGO@$MONGO_HOSTPORT/" status
check "a URI given to an integer key: refused" [ $? != 0 ]
METADB_MONGO_URI="mongodb://metadb:$S_MONGO_SLASH@$MONGO_HOSTPORT/" run status-invalid-uri status
check "a URI made invalid by its password: refused" [ $? != 0 ]
# the API without api.mongo_uri reads through mongo.uri (and logs it, masked)
env -u METADB_API_MONGO_URI METADB_API_LISTEN=127.0.0.1:0 timeout -s TERM 4 "$BUILD/api/metadb-api" \
    >"$OUT/api-mongo-uri-only.log" 2>&1
check "the API logs the database it reads (masked)" grep -q "mongodb://\*\*\*:\*\*\*@" "$OUT/api-mongo-uri-only.log"
METADB_API_MONGO_URI="mongodb://$U_RO:$S_APIMONGO@127.0.0.1:$DEAD_PORT/?serverSelectionTimeoutMS=1000&authSource=admin" \
METADB_API_LISTEN=127.0.0.1:0 timeout -s TERM 6 "$BUILD/api/metadb-api" >"$OUT/api-dead-db.log" 2>&1 &
PIDS+=($!)
DEADAPI=$!
sleep 1

# ---------------------------------------------------------------- stop, then search
for role in producer worker linker api; do
    pid_var=PID_$role
    [ -n "${!pid_var:-}" ] || continue
    kill -TERM "${!pid_var}" 2>/dev/null
done
for role in producer worker linker api; do
    pid_var=PID_$role
    [ -n "${!pid_var:-}" ] || continue
    wait "${!pid_var}"
    rc=$?
    check "$role exits 0 on SIGTERM" [ $rc = 0 ]
done
wait "$DEADAPI" 2>/dev/null
for t in jobs files instances dlq; do
    kcat -C -b "$PLAIN" -t "$ID.$t" -o beginning -e -q -f '%k %s\n' >"$OUT/topic-$t.txt" 2>&1
done
"$PY" - "$ADMIN_URI" "$ID" >"$OUT/database.txt" 2>&1 <<'EOF'
import sys, pymongo
from bson import json_util
db = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)[sys.argv[2]]
for name in sorted(db.list_collection_names()):
    for doc in db[name].find({}):
        print(name, json_util.dumps(doc))
EOF
check "the debug logs are not empty (debug level really on)" [ "$(cat "$OUT"/*.log | grep -c ' debug ')" -gt 10 ]
check "librdkafka's debug output is routed into the logs" grep -qi "sasl\|security" "$OUT/worker.log"
for i in "${!SECRETS[@]}"; do
    s=${SECRETS[$i]}
    hits=$(grep -rlF -- "$s" "$OUT" 2>/dev/null | sed "s|$OUT/||" | tr '\n' ' ')
    check "secret ${SECRET_NAMES[$i]} appears in no log, output, metric, message or document" [ -z "$hits" ]
    [ -n "$hits" ] && { echo "  found in: $hits"; grep -rhF -- "$s" "$OUT" | head -n 3 | cut -c1-300 | sed 's/^/  | /'; }
done
echo "# searched $(ls "$OUT" | wc -l) files, $(cat "$OUT"/* | wc -c) bytes"
finish
