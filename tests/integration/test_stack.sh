#!/usr/bin/env bash
# tests/integration/test_stack.sh — the life cycle of deploy/stack.sh on a private
# state directory and private ports (never the shared stack): start → status →
# the four topics listed by kcat with the requested partition count → SASL/PLAIN
# listener accepts the generated password and refuses a wrong one → start again is
# a no-op → stop → start keeps Kafka messages and database documents → reset wipes
# them → external-service mode starts nothing → stop. The database is DocumentDB in a
# private PostgreSQL cluster behind its gateway (unless a mongod is on PATH): its two
# users' files are private, the read-only one is refused a write. Every stack command is
# bounded by `timeout`; the whole test by the ctest TIMEOUT.
set -uo pipefail

SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
STACK=$SRC/deploy/stack.sh
PY=/usr/bin/python3
export METADB_DEPLOY_CACHE=${METADB_DEPLOY_CACHE:-${METADB_HOME:-$HOME/.metadb}/cache}
METADB_HOME=$(mktemp -d /tmp/mdb-stacktest.XXXXXX)
export METADB_HOME
unset METADB_KAFKA_BROKERS METADB_MONGO_URI METADB_TOPIC_JOBS METADB_TOPIC_FILES \
      METADB_TOPIC_INSTANCES METADB_TOPIC_DLQ METADB_TOPIC_PARTITIONS METADB_DEPLOY_KCAT_ARGS
PARTS=3
TOPICS="metadb.jobs metadb.files metadb.instances metadb.dlq"

# Four free loopback ports, chosen by the kernel (other test runs may be using the usual ones).
read -r KP CP SP MP PGP < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
export METADB_KAFKA_PORT=$KP METADB_KAFKA_CONTROLLER_PORT=$CP METADB_DEPLOY_SASL_PORT=$SP METADB_MONGO_PORT=$MP
export METADB_PG_PORT=$PGP
export METADB_DEPLOY_TIMEOUT=120
B=127.0.0.1:$KP
URI=mongodb://127.0.0.1:$MP
DOCDB=1; command -v mongod >/dev/null 2>&1 && DOCDB=0
# The local database's read-write URI (with credentials) once start made it.
uri() { if [ $DOCDB = 1 ]; then cat "$METADB_HOME/database/metadb.uri"; else echo "$URI"; fi; }

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
not() { ! "$@"; }

cleanup() {
    if [ "$FAIL" != 0 ]; then
        for f in "$METADB_HOME"/logs/*.log; do [ -f "$f" ] && { echo "--- tail $f"; tail -n 40 "$f"; }; done
    fi
    timeout 120 bash "$STACK" stop >/dev/null 2>&1
    case $METADB_HOME in /tmp/mdb-stacktest.*) rm -rf "$METADB_HOME" ;; esac
}
trap cleanup EXIT

stack() { timeout 240 bash "$STACK" "$@"; }
kpid() { cat "$METADB_HOME/kafka.pid" 2>/dev/null; }
dbpid() { cat "$METADB_HOME"/gateway.pid "$METADB_HOME"/mongod.pid 2>/dev/null | head -n1; }
pgpid() { head -n1 "$METADB_HOME/postgres/data/postmaster.pid" 2>/dev/null; }

# topics_ok N: kcat lists all four topics, each with exactly N partitions.
topics_ok() {
    local js t n
    js=$(kcat -L -J -b "$B" -m 10 2>/dev/null) || return 1
    for t in $TOPICS; do
        n=$(jq -r --arg t "$t" '[.topics[] | select(.topic == $t)][0].partitions | length' <<<"$js")
        [ "$n" = "$1" ] || { echo "  topic $t has '$n' partitions, want $1"; return 1; }
    done
}
sasl_ok() {
    kcat -L -b "127.0.0.1:$SP" -m 10 -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN \
        -X sasl.username=metadb -X "sasl.password=$1" -t metadb.jobs >/dev/null 2>&1
}
db() { "$PY" -c "
import sys, pymongo
c = pymongo.MongoClient('$(uri)', serverSelectionTimeoutMS=5000)
col = c['t_stack']['probe']
$1" ; }
# high watermark (message count) of metadb.jobs partition 0, via kcat's consumer.
jobs_messages() { kcat -C -b "$B" -t metadb.jobs -p 0 -o beginning -e -q -f '%s\n' 2>/dev/null | wc -l; }

echo "# METADB_HOME=$METADB_HOME kafka=$KP controller=$CP sasl=$SP db=$MP"
T0=$SECONDS

# 1. start from nothing
out=$(stack start --partitions "$PARTS" 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "start exits 0" [ $rc = 0 ]
check "start reports the stack up" grep -q "stack up" <<<"$out"
check "kafka pid is a JVM running kafka.Kafka" grep -q kafka.Kafka "/proc/$(kpid)/cmdline"
check "database process running" kill -0 "$(dbpid)" 2>/dev/null
check "state layout under METADB_HOME" test -f "$METADB_HOME/kafka/server.properties" -a -d "$METADB_HOME/kafka/data" -a -d "$METADB_HOME/logs"
check "sasl password is private" test "$(stat -c %a "$METADB_HOME/kafka/sasl.password")" = 600

# 2. status
out=$(stack status 2>&1); rc=$?
check "status exits 0 when up" [ $rc = 0 ]
check "status shows metadb.files with $PARTS partitions" grep -q "topic metadb.files: $PARTS partitions" <<<"$out"
if [ $DOCDB = 1 ]; then
    check "status reports PostgreSQL running" grep -q "PostgreSQL running" <<<"$out"
    check "status reports the gateway running" grep -q "gateway running" <<<"$out"
    check "status: user metadb logs in, read-write" grep -q "user metadb logs in, read-write" <<<"$out"
    check "status: user metadb_ro logs in, read-only" grep -q "user metadb_ro logs in, read-only" <<<"$out"
    check "the gateway listens on 127.0.0.1:$MP" grep -q pg_documentdb_gw "/proc/$(dbpid)/cmdline"
    check "PostgreSQL runs from METADB_HOME/postgres" grep -q "$METADB_HOME/postgres/data" "/proc/$(pgpid)/cmdline"
    check "PostgreSQL listens on 127.0.0.1 only" grep -qx "listen_addresses = '127.0.0.1'" "$METADB_HOME/postgres/data/postgresql.conf"
    for f in metadb.password metadb_ro.password metadb.uri metadb_ro.uri; do
        check "database/$f is private (0600)" test "$(stat -c %a "$METADB_HOME/database/$f")" = 600
    done
    check "an unauthenticated client is refused" not "$PY" -c "
import pymongo; pymongo.MongoClient('$URI', serverSelectionTimeoutMS=5000)['t']['x'].find_one()" 2>/dev/null
else
    check "status pings the database" grep -q "answers ping" <<<"$out"
fi

# 3. topics via kcat
check "kcat -L lists the four topics with $PARTS partitions" topics_ok "$PARTS"

# 4. authenticated path
PW=$(cat "$METADB_HOME/kafka/sasl.password")
check "SASL/PLAIN listener accepts metadb + generated password" sasl_ok "$PW"
check "SASL/PLAIN listener refuses a wrong password" not sasl_ok "wrong-$PW"
check "sasl-client.conf names the SASL listener" grep -q "kafka.brokers = 127.0.0.1:$SP" "$METADB_HOME/kafka/sasl-client.conf"

# 5. data to survive a restart
echo '{"v":1,"probe":"stack-test"}' | kcat -P -b "$B" -t metadb.jobs -p 0 2>/dev/null
db "col.replace_one({'_id': 'p1'}, {'_id': 'p1', 'x': 1}, upsert=True)"
check "a message was produced" [ "$(jobs_messages)" = 1 ]

# 6. start again is a no-op
k1=$(kpid) d1=$(dbpid)
out=$(stack start --partitions "$PARTS" 2>&1); rc=$?
check "second start exits 0" [ $rc = 0 ]
check "second start keeps the same processes" [ "$(kpid)/$(dbpid)" = "$k1/$d1" ]
check "second start says already running" grep -q "already running" <<<"$out"

# 7. a port taken by someone else is reported, not silently shared
out=$(METADB_HOME=$METADB_HOME.other METADB_KAFKA_PORT=$KP timeout 60 bash "$STACK" start 2>&1); rc=$?
rm -rf "$METADB_HOME.other"
check "start on a busy port fails with a clear error" grep -q "port $KP is in use" <<<"$out"

# 8. stop keeps data
stack stop >/dev/null 2>&1; rc=$?
check "stop exits 0" [ $rc = 0 ]
check "kafka process gone after stop" not kill -0 "$k1" 2>/dev/null
check "database process gone after stop" not kill -0 "$d1" 2>/dev/null
[ $DOCDB = 1 ] && check "PostgreSQL gone after stop" [ -z "$(pgpid)" ]
stack status >/dev/null 2>&1; rc=$?
check "status exits non-zero when stopped" [ $rc != 0 ]

# 9. start again: data kept
stack start --partitions "$PARTS" >/dev/null 2>&1; rc=$?
check "restart exits 0" [ $rc = 0 ]
check "restart runs new processes" [ "$(kpid)" != "$k1" ]
check "Kafka message survived stop/start" [ "$(jobs_messages)" = 1 ]
check "database document survived stop/start" db "sys.exit(0 if col.find_one({'_id': 'p1'}) == {'_id': 'p1', 'x': 1} else 1)"
check "topics still have $PARTS partitions" topics_ok "$PARTS"

# 10. external mode: starts nothing, only checks reachability
k2=$(kpid)
out=$(METADB_KAFKA_BROKERS=$B METADB_MONGO_URI=$(uri) timeout 60 bash "$STACK" start 2>&1); rc=$?
check "external mode start succeeds against reachable services" [ $rc = 0 ]
check "external mode reports external services" grep -q "external $B reachable" <<<"$out"
check "external mode started no new Kafka" [ "$(kpid)" = "$k2" ]
METADB_KAFKA_BROKERS=127.0.0.1:1 METADB_MONGO_URI=$(uri) timeout 60 bash "$STACK" start >/dev/null 2>&1; rc=$?
check "external mode fails on an unreachable broker" [ $rc != 0 ]

# 11. reset wipes
stack reset >/dev/null 2>&1; rc=$?
check "reset exits 0" [ $rc = 0 ]
check "reset removed Kafka data" [ ! -e "$METADB_HOME/kafka/data" ]
check "reset stopped Kafka" not kill -0 "$k2" 2>/dev/null
check "reset kept the SASL password" [ "$(cat "$METADB_HOME/kafka/sasl.password")" = "$PW" ]
stack start --partitions 2 >/dev/null 2>&1; rc=$?
check "start after reset exits 0" [ $rc = 0 ]
check "after reset topics are new (2 partitions)" topics_ok 2
check "after reset the Kafka message is gone" [ "$(jobs_messages)" = 0 ]
check "after reset the database document is gone" db "sys.exit(0 if col.find_one({'_id': 'p1'}) is None else 1)"

# 12. bad arguments
out=$(timeout 30 bash "$STACK" start --partitions zero 2>&1); rc=$?
check "a bad partition count is refused" [ $rc != 0 ]
check "a bad partition count is named in the error" grep -q "positive integer, got 'zero'" <<<"$out"

stack stop >/dev/null 2>&1; rc=$?
check "final stop exits 0" [ $rc = 0 ]
check "nothing left listening on the Kafka port" not bash -c "exec 3<>/dev/tcp/127.0.0.1/$KP" 2>/dev/null

echo "# took $((SECONDS - T0))s"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
