#!/usr/bin/env bash
# tests/integration/test_kafka_sasl.sh — Kafka security settings pass through
# configuration unchanged. The local stack runs a SASL_PLAINTEXT listener with
# the PLAIN mechanism (deploy/stack.sh: 127.0.0.1:$METADB_DEPLOY_SASL_PORT,
# default 9094, user metadb, password in $METADB_HOME/kafka/sasl.password).
# metadb components are pointed at it with nothing but pass-through keys
#   --kafka.security.protocol=SASL_PLAINTEXT --kafka.sasl.mechanism=PLAIN
#   --kafka.sasl.username=metadb   and the password in METADB_KAFKA_SASL_PASSWORD
# (or kafka.sasl.password=@FILE), and must:
#   - create topics (metadb topics, admin API),
#   - consume and produce (metadb-producer consumes job requests, produces DLQ
#     records for the invalid ones, commits its offsets),
#   - read group offsets (metadb lag, admin API),
# while a wrong password fails with an error that says authentication failed,
# and neither password ever appears in any output (debug logging on, with
# librdkafka's own security/broker/conf debug contexts).
# Other clients (kcat) use the plaintext listener of the same broker to check.
set -uo pipefail

SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
METADB=$BUILD/cli/metadb
PRODUCER=$BUILD/producer/metadb-producer
PY=/usr/bin/python3
MDB_HOME=${METADB_HOME:-$HOME/.metadb}
PWFILE=$MDB_HOME/kafka/sasl.password
CACHE=${METADB_DEPLOY_CACHE:-$MDB_HOME/cache}
SASL=127.0.0.1:${METADB_DEPLOY_SASL_PORT:-9094}
PLAIN=${METADB_KAFKA_BROKERS:-127.0.0.1:${METADB_KAFKA_PORT:-9092}}
MONGO=${METADB_MONGO_URI:-mongodb://127.0.0.1:${METADB_MONGO_PORT:-27017}}
# The components get the broker and the security settings from the flags below
# only, not from whatever the caller's environment holds (stack.sh variables
# such as METADB_DEPLOY_* are meant for scripts, not for the components).
for v in $(compgen -e | grep '^METADB_'); do unset "$v"; done

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
die() { bad "$*"; finish; }
finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ] && exit 0
    exit 1
}

for b in "$METADB" "$PRODUCER"; do [ -x "$b" ] || die "binary not found: $b (set MDB_BUILD_DIR)"; done
[ -s "$PWFILE" ] || die "no SASL password file $PWFILE (start the stack with deploy/stack.sh start)"
PW=$(head -n1 "$PWFILE")
WRONG="not-${PW:0:6}-but-wrong-$$"
kcat -L -b "$SASL" -m 10 -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=metadb \
    -X "sasl.password=$PW" >/dev/null 2>&1 || die "SASL/PLAIN listener not answering on $SASL"
kcat -L -b "$PLAIN" -m 10 >/dev/null 2>&1 || die "plaintext listener not answering on $PLAIN"

ID=t_sasl_$$
TMP=$(mktemp -d /tmp/mdb-sasl.XXXXXX)
PRODUCER_PID=
cleanup() {
    if [ -n "$PRODUCER_PID" ]; then kill "$PRODUCER_PID" 2>/dev/null; wait "$PRODUCER_PID" 2>/dev/null; fi
    "$PY" -c 'import pymongo,sys; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000).drop_database(sys.argv[2])' \
        "$MONGO" "$ID" >/dev/null 2>&1
    if ls "$CACHE"/kafka-libs/kafka-tools-*.jar >/dev/null 2>&1; then
        timeout 60 java -Xmx128m -cp "$CACHE/kafka-libs/*" org.apache.kafka.tools.TopicCommand \
            --bootstrap-server "$PLAIN" --delete --topic "$ID\\..*" >/dev/null 2>&1
    fi
    case $TMP in /tmp/mdb-sasl.*) rm -rf "$TMP" ;; esac
}
trap cleanup EXIT
mkdir -p "$TMP/archive"

SEC=(--kafka.brokers="$SASL" --kafka.security.protocol=SASL_PLAINTEXT --kafka.sasl.mechanism=PLAIN
     --kafka.sasl.username=metadb)
TOPICS=(--topic.jobs="$ID.jobs" --topic.files="$ID.files" --topic.instances="$ID.instances" --topic.dlq="$ID.dlq"
        --producer.group="g_$ID" --mongo.uri="$MONGO" --mongo.db="$ID")
DEBUG=(--log.level=debug "--kafka.debug=security,broker,conf")

count_msgs() { kcat -C -b "$PLAIN" -t "$1" -o beginning -e -q 2>/dev/null | grep -c . ; }

# 1. topics over SASL
if METADB_KAFKA_SASL_PASSWORD=$PW timeout 60 "$METADB" "${SEC[@]}" "${TOPICS[@]}" "${DEBUG[@]}" topics --partitions 2 \
    >"$TMP/topics.log" 2>&1; then
    n=$(kcat -L -J -b "$PLAIN" -m 10 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin); pre = sys.argv[1] + "."
print(sum(1 for t in d["topics"] if t["topic"].startswith(pre) and len(t["partitions"]) == 2))' "$ID")
    [ "$n" = 4 ] && ok "metadb topics over SASL created 4 topics" || bad "metadb topics over SASL: $n of 4 topics visible"
else
    bad "metadb topics over SASL failed: $(tail -3 "$TMP/topics.log")"
fi

# 2. a daemon consumes and produces over SASL: two invalid job requests (no
# selectors) go in through the plaintext listener, the producer reads them over
# SASL and publishes one DLQ record each over SASL, then commits.
for j in 1 2; do
    printf '{"v":1,"job_id":"%s-job-%d","researcher_id":"r","collection":"c"}\n' "$ID" "$j" |
        kcat -P -b "$PLAIN" -t "$ID.jobs" -k "$ID-job-$j" 2>>"$TMP/kcat.log"
done
METADB_KAFKA_SASL_PASSWORD=$PW "$PRODUCER" "${SEC[@]}" "${TOPICS[@]}" "${DEBUG[@]}" --producer.metrics_port=0 \
    --archive.roots="$TMP/archive" >"$TMP/producer.log" 2>&1 &
PRODUCER_PID=$!
dlq=0
for _ in $(seq 1 60); do
    dlq=$(count_msgs "$ID.dlq")
    [ "$dlq" -ge 2 ] && break
    kill -0 "$PRODUCER_PID" 2>/dev/null || break
    sleep 0.5
done
if [ "$dlq" = 2 ] && [ "$(kcat -C -b "$PLAIN" -t "$ID.dlq" -o beginning -e -q 2>/dev/null | grep -c '"error":"invalid_job"')" = 2 ]; then
    ok "metadb-producer over SASL consumed 2 job requests and produced 2 DLQ records"
else
    bad "metadb-producer over SASL: $dlq DLQ records (want 2); log: $(tail -5 "$TMP/producer.log")"
fi

# 3. committed offsets read back over SASL, password from a file this time
lag_ok=0
for _ in $(seq 1 20); do
    if timeout 30 "$METADB" "${SEC[@]}" --kafka.sasl.password="@$PWFILE" "${TOPICS[@]}" lag --group "g_$ID" --json \
        >"$TMP/lag.json" 2>"$TMP/lag.err" &&
        "$PY" -c '
import json, sys
d = json.load(open(sys.argv[1])); e = d["groups"][0]
assert e["topic"] == sys.argv[2] + ".jobs", e
assert sum(p["committed"] or 0 for p in e["partitions"]) == 2 and e["total_lag"] == 0, e' "$TMP/lag.json" "$ID" 2>/dev/null
    then lag_ok=1; break; fi
    sleep 0.5
done
[ $lag_ok = 1 ] && ok "metadb lag over SASL (password @file) sees 2 committed, lag 0" ||
    bad "metadb lag over SASL: $(cat "$TMP/lag.json" "$TMP/lag.err" 2>/dev/null | head -c 600)"

kill -TERM "$PRODUCER_PID"
rc=0; wait "$PRODUCER_PID" || rc=$?
PRODUCER_PID=
[ $rc = 0 ] && ok "producer stopped cleanly on SIGTERM" || bad "producer exit status $rc on SIGTERM"

# 4. wrong password: clear errors, nothing consumed or produced
start=$SECONDS
METADB_KAFKA_SASL_PASSWORD=$WRONG timeout 60 "$METADB" "${SEC[@]}" "${TOPICS[@]}" "${DEBUG[@]}" lag --group "g_$ID" \
    >"$TMP/lag_wrong.out" 2>"$TMP/lag_wrong.err"
rc=$?
if [ $rc = 1 ] && grep -qi 'authentication failed' "$TMP/lag_wrong.err" && [ $((SECONDS - start)) -le 15 ]; then
    ok "metadb lag with a wrong password exits 1 within $((SECONDS - start)) s: $(grep -i 'metadb lag:' "$TMP/lag_wrong.err" | head -c 200)"
else
    bad "metadb lag with a wrong password: rc=$rc after $((SECONDS - start)) s: $(tail -2 "$TMP/lag_wrong.err")"
fi

METADB_KAFKA_SASL_PASSWORD=$WRONG timeout 90 "$METADB" "${SEC[@]}" "${TOPICS[@]}" --topic.jobs="$ID.never" "${DEBUG[@]}" \
    topics --partitions 1 >"$TMP/topics_wrong.log" 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -qi 'authentication failed' "$TMP/topics_wrong.log" &&
    ! kcat -L -b "$PLAIN" -m 10 2>/dev/null | grep -q "\"$ID.never\""; then
    ok "metadb topics with a wrong password fails (rc=$rc), says authentication failed, creates nothing"
else
    bad "metadb topics with a wrong password: rc=$rc: $(grep -v ' debug ' "$TMP/topics_wrong.log" | tail -3)"
fi

printf '{"v":1,"job_id":"%s-job-3","researcher_id":"r","collection":"c"}\n' "$ID" |
    kcat -P -b "$PLAIN" -t "$ID.jobs" -k "$ID-job-3" 2>>"$TMP/kcat.log"
METADB_KAFKA_SASL_PASSWORD=$WRONG "$PRODUCER" "${SEC[@]}" "${TOPICS[@]}" "${DEBUG[@]}" --producer.metrics_port=0 \
    --archive.roots="$TMP/archive" >"$TMP/producer_wrong.log" 2>&1 &
PRODUCER_PID=$!
for _ in $(seq 1 40); do
    grep -qi 'authentication failed' "$TMP/producer_wrong.log" && break
    kill -0 "$PRODUCER_PID" 2>/dev/null || break
    sleep 0.25
done
sleep 2
kill -TERM "$PRODUCER_PID" 2>/dev/null
wait "$PRODUCER_PID" 2>/dev/null
PRODUCER_PID=
dlq=$(count_msgs "$ID.dlq")
if grep -qi 'authentication failed' "$TMP/producer_wrong.log" && [ "$dlq" = 2 ]; then
    ok "metadb-producer with a wrong password logs the authentication failure and handles nothing"
else
    bad "metadb-producer with a wrong password: DLQ has $dlq (want 2); log: $(grep -v ' debug ' "$TMP/producer_wrong.log" | tail -3)"
fi

# 5. no secret in any output
leaks=$(grep -lF -e "$PW" -e "$WRONG" "$TMP"/*.log "$TMP"/*.err "$TMP"/*.out "$TMP"/*.json 2>/dev/null)
lines=$(cat "$TMP"/*.log "$TMP"/*.err 2>/dev/null | wc -l)
if [ -z "$leaks" ] && [ "$lines" -gt 50 ]; then
    ok "neither password appears in $lines lines of debug output"
else
    bad "password leaked in: ${leaks:-none} (or too little output to judge: $lines lines)"
fi

finish
