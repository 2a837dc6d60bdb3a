#!/usr/bin/env bash
# tests/integration/test_lag_burrow.sh — `metadb lag` agrees with Burrow.
#
# Burrow (Debian's `burrow`, and every Burrow release so far) cannot read the
# consumer offsets of Kafka 4.x: Kafka 4 writes OffsetCommitValue schema v4 to
# __consumer_offsets and removed ListOffsets v0, both of which Burrow depends
# on. So this test starts its own throwaway Apache Kafka 3.9 KRaft broker (jars
# from Maven Central via tests/integration/lag_burrow/pom.xml, cached under
# $METADB_HOME/cache/kafka3-libs) and a ZooKeeper (Burrow 1.2 refuses to start
# without one; the jar ships with Kafka 3.9), all on free loopback ports in a
# temp dir, then:
#   1. creates two topics, produces a known number of messages per partition;
#   2. sets known committed offsets for two groups with Kafka's own
#      kafka-consumer-groups tool (deploy/kafka-tool.sh consumer-groups
#      --reset-offsets --to-offset), one partition
#      left without a commit on purpose;
#   3. compares `metadb lag --json` with Burrow's /v3/kafka/<cluster>/consumer/
#      <group>/lag per partition (committed offset and lag) and with the ground
#      truth the test set up;
#   4. produces more and moves a commit, and compares again once Burrow has
#      caught up.
set -uo pipefail

SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${MDB_BUILD_DIR:-$SRC/build}
METADB=$BUILD/cli/metadb
PY=/usr/bin/python3
MDB_HOME=${METADB_HOME:-$HOME/.metadb}
CACHE=${METADB_DEPLOY_CACHE:-$MDB_HOME/cache}
K3LIBS=$CACHE/kafka3-libs
K4LIBS=$CACHE/kafka-libs
POM=$SRC/tests/integration/lag_burrow/pom.xml

PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
die() { bad "$*"; finish; }
finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ] && exit 0
    exit 1
}

[ -x "$METADB" ] || die "metadb binary not found at $METADB (set MDB_BUILD_DIR)"
command -v Burrow >/dev/null || die "Burrow not installed (apt-get install burrow)"
command -v java >/dev/null || die "java not installed"
command -v kcat >/dev/null || die "kcat not installed"
ls "$K4LIBS"/kafka-tools-*.jar >/dev/null 2>&1 || die "Kafka tools jars missing in $K4LIBS (run deploy/install.sh)"

# Kafka 3.9 jars: offline from the local Maven repository first, then Maven Central.
if ! ls "$K3LIBS"/kafka_2.13-3.9*.jar >/dev/null 2>&1; then
    mvn_args=(-q -B "-Dmaven.repo.local=$CACHE/m2" -f "$POM" dependency:copy-dependencies "-DoutputDirectory=$K3LIBS.new")
    rm -rf "$K3LIBS.new"
    if ! mvn -o "${mvn_args[@]}" >/dev/null 2>&1; then
        rm -rf "$K3LIBS.new"
        mvn "${mvn_args[@]}" >/dev/null 2>&1 || die "could not fetch Kafka 3.9 jars with maven ($POM)"
    fi
    rm -rf "$K3LIBS" && mv "$K3LIBS.new" "$K3LIBS"
fi

TMP=$(mktemp -d /tmp/mdb-lagburrow.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
    done
    case $TMP in /tmp/mdb-lagburrow.*) rm -rf "$TMP" ;; esac
}
trap cleanup EXIT

read -r KP CP ZP HP < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
B=127.0.0.1:$KP
BURROW=http://127.0.0.1:$HP

cat >"$TMP/log4j.properties" <<EOF
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
cat >"$TMP/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CP
listeners=PLAINTEXT://127.0.0.1:$KP,CONTROLLER://127.0.0.1:$CP
advertised.listeners=PLAINTEXT://127.0.0.1:$KP
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$TMP/kafka-data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
cat >"$TMP/zoo.cfg" <<EOF
tickTime=2000
dataDir=$TMP/zk
clientPort=$ZP
clientPortAddress=127.0.0.1
admin.enableServer=false
EOF
mkdir -p "$TMP/zk"
J3=(java -Xms64m -Xmx256m "-Dlog4j.configuration=file:$TMP/log4j.properties" -cp "$K3LIBS/*")

"${J3[@]}" kafka.tools.StorageTool format -t "$("${J3[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null)" \
    -c "$TMP/server.properties" >"$TMP/format.log" 2>&1 || die "formatting Kafka 3.9 storage failed: $(tail -3 "$TMP/format.log")"
"${J3[@]}" kafka.Kafka "$TMP/server.properties" >"$TMP/kafka.log" 2>&1 &
PIDS+=($!)
"${J3[@]}" org.apache.zookeeper.server.ZooKeeperServerMain "$TMP/zoo.cfg" >"$TMP/zk.log" 2>&1 &
PIDS+=($!)

up=0
for _ in $(seq 1 120); do
    if kcat -L -b "$B" -m 2 >/dev/null 2>&1; then up=1; break; fi
    sleep 0.5
done
[ $up = 1 ] || die "Kafka 3.9 broker did not come up on $B: $(tail -5 "$TMP/kafka.log")"
ok "throwaway Kafka 3.9 broker up on $B"

# Kafka's own tools through deploy/kafka-tool.sh, the way docs/operations.md
# tells operators to reset offsets.
KTOOL=$SRC/deploy/kafka-tool.sh
topic() { METADB_DEPLOY_CACHE=$CACHE bash "$KTOOL" topics --bootstrap-server "$B" "$@"; }
reset_offset() { # GROUP TOPIC:PARTITION OFFSET
    METADB_DEPLOY_CACHE=$CACHE bash "$KTOOL" consumer-groups --bootstrap-server "$B" \
        --group "$1" --topic "$2" --reset-offsets --to-offset "$3" --execute >>"$TMP/cg.log" 2>&1
}
produce() { # TOPIC PARTITION COUNT
    seq 1 "$3" | sed "s/^/m-$1-$2-/" | kcat -P -b "$B" -t "$1" -p "$2" 2>>"$TMP/kcat.log"
}

TA=t_lagburrow_a_$$ TB=t_lagburrow_b_$$ G1=g_lagburrow_1_$$ G2=g_lagburrow_2_$$
topic --create --topic "$TA" --partitions 3 >"$TMP/topics.log" 2>&1 &&
    topic --create --topic "$TB" --partitions 2 >>"$TMP/topics.log" 2>&1 ||
    die "creating topics failed: $(tail -3 "$TMP/topics.log")"

# Ground truth: high watermarks and commits.
produce "$TA" 0 20 && produce "$TA" 1 15 && produce "$TA" 2 10 && produce "$TB" 0 7 && produce "$TB" 1 5 ||
    die "producing failed: $(tail -3 "$TMP/kcat.log")"
reset_offset "$G1" "$TA:0" 12 && reset_offset "$G1" "$TA:1" 15 && reset_offset "$G1" "$TB:0" 0 &&
    reset_offset "$G1" "$TB:1" 3 && reset_offset "$G2" "$TA:0" 5 && reset_offset "$G2" "$TA:1" 5 &&
    reset_offset "$G2" "$TA:2" 5 || die "setting committed offsets failed: $(tail -5 "$TMP/cg.log")"
ok "topics created, messages produced, offsets committed with kafka-consumer-groups"

cat >"$TMP/burrow.toml" <<EOF
[general]
pidfile="$TMP/burrow.pid"
[logging]
level="warn"
[zookeeper]
servers=["127.0.0.1:$ZP"]
timeout=6
root-path="/burrow"
[client-profile.test]
client-id="burrow-lagtest"
kafka-version="2.0.0"
[cluster.test]
class-name="kafka"
servers=["$B"]
client-profile="test"
topic-refresh=5
offset-refresh=1
[consumer.test]
class-name="kafka"
cluster="test"
servers=["$B"]
client-profile="test"
offsets-topic="__consumer_offsets"
start-latest=false
group-whitelist="^g_lagburrow_"
[httpserver.test]
address="127.0.0.1:$HP"
[storage.test]
class-name="inmemory"
workers=2
intervals=10
expire-group=604800
min-distance=1
EOF
Burrow --config-dir "$TMP" >"$TMP/burrow.log" 2>&1 &
PIDS+=($!)

# compare EXPECT_JSON: polls until metadb and Burrow agree with each other and
# with the expected committed offsets / lags (Burrow refreshes broker offsets
# every second and reads commits asynchronously), up to 60 s; prints the last
# difference on failure.
compare() {
    local expect=$1 deadline=$((SECONDS + 60)) out
    while :; do
        "$METADB" --kafka.brokers="$B" lag --group "$G1" --group "$G2" --json >"$TMP/metadb.json" 2>"$TMP/metadb.err"
        for g in "$G1" "$G2"; do
            curl -s -m 5 "$BURROW/v3/kafka/test/consumer/$g/lag" >"$TMP/burrow_$g.json" 2>/dev/null
        done
        out=$("$PY" - "$TMP" "$G1" "$G2" "$expect" <<'EOF'
import json, sys
tmp, g1, g2, expect = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
problems = []
try:
    mdb = json.load(open(f"{tmp}/metadb.json"))
except Exception as e:
    print(f"metadb lag --json unreadable: {e}: {open(tmp + '/metadb.err').read()[:300]}"); sys.exit(1)
ours = {}
for e in mdb["groups"]:
    for p in e["partitions"]:
        ours[(e["group"], e["topic"], p["partition"])] = p
for g in (g1, g2):
    try:
        st = json.load(open(f"{tmp}/burrow_{g}.json"))["status"]
    except Exception as e:
        problems.append(f"burrow {g}: no answer ({e})"); continue
    theirs = {(g, p["topic"], p["partition"]): p for p in st.get("partitions", [])}
    for key, want in expect.items():
        kg, kt, kp = key.split("|"); kp = int(kp)
        if kg != g: continue
        k = (kg, kt, kp)
        o = ours.get(k); t = theirs.get(k)
        if o is None: problems.append(f"{k}: missing from metadb lag"); continue
        wc, wl = want
        if o["committed"] != wc or o["lag"] != wl:
            problems.append(f"{k}: metadb committed={o['committed']} lag={o['lag']}, truth committed={wc} lag={wl}")
        if wc is None:
            # no commit: Burrow has no offset for it either
            if t is not None and t.get("end") is not None:
                problems.append(f"{k}: Burrow has an offset {t['end']} for a partition without commit")
            continue
        if t is None or t.get("end") is None:
            problems.append(f"{k}: Burrow has no offset yet"); continue
        if t["end"]["offset"] != o["committed"] or t["current_lag"] != o["lag"]:
            problems.append(f"{k}: Burrow offset={t['end']['offset']} lag={t['current_lag']} vs metadb committed={o['committed']} lag={o['lag']}")
    # totals over committed partitions
    ours_total = sum(p["lag"] for (gg, _, _), p in ours.items() if gg == g and p["committed"] is not None)
    if st.get("totallag") != ours_total:
        problems.append(f"{g}: Burrow totallag={st.get('totallag')} vs metadb {ours_total} (committed partitions)")
if problems:
    print("; ".join(problems)); sys.exit(1)
n = len(expect)
print(f"{n} partitions agree")
EOF
)
        if [ $? -eq 0 ]; then echo "$out"; return 0; fi
        if [ $SECONDS -ge $deadline ]; then echo "$out"; return 1; fi
        sleep 1
    done
}

# partition -> [committed, lag] from the ground truth above
EXPECT1=$(cat <<EOF
{"$G1|$TA|0": [12, 8], "$G1|$TA|1": [15, 0], "$G1|$TA|2": [null, 10],
 "$G1|$TB|0": [0, 7], "$G1|$TB|1": [3, 2],
 "$G2|$TA|0": [5, 15], "$G2|$TA|1": [5, 10], "$G2|$TA|2": [5, 5]}
EOF
)
if msg=$(compare "$EXPECT1"); then ok "round 1: metadb lag = Burrow = truth ($msg)"; else bad "round 1: $msg"; fi

# totals and entry layout
if "$PY" - "$TMP/metadb.json" "$G1" "$G2" "$TA" "$TB" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); g1, g2, ta, tb = sys.argv[2:6]
entries = [(e["group"], e["topic"], e["total_lag"]) for e in d["groups"]]
want = [(g1, ta, 18), (g1, tb, 9), (g2, ta, 30)]
assert entries == want, f"entries {entries} != {want}"
assert d["total_lag"] == 57, d["total_lag"]
for e in d["groups"]:
    assert e["state"] == "Empty" and e["members"] == 0, e
    for p in e["partitions"]:
        assert p["low_watermark"] == 0 and p["high_watermark"] >= p["lag"], p
EOF
then ok "per-(group,topic) totals 18/9/30 and grand total 57"; else bad "totals or entry layout wrong"; fi

# The table form carries the same numbers.
"$METADB" --kafka.brokers="$B" lag --group "$G1" >"$TMP/table.txt" 2>&1
if grep -Eq "^$G1 +$TA +0 +12 +20 +8 " "$TMP/table.txt" && grep -Eq "^$G1 +$TA +2 +- +10 +10 " "$TMP/table.txt" &&
    grep -Eq "^TOTAL LAG 27$" "$TMP/table.txt"; then
    ok "table output shows committed/high/lag and the total"
else
    bad "table output unexpected: $(cat "$TMP/table.txt")"
fi

# Round 2: the partitions move. More messages on TA:0 (high 20 -> 26) and TB:1
# (5 -> 9); G1 catches up TA:0 to 24 and commits TA:2 for the first time.
produce "$TA" 0 6 && produce "$TB" 1 4 || die "producing (round 2) failed"
reset_offset "$G1" "$TA:0" 24 && reset_offset "$G1" "$TA:2" 4 || die "moving offsets failed: $(tail -5 "$TMP/cg.log")"
EXPECT2=$(cat <<EOF
{"$G1|$TA|0": [24, 2], "$G1|$TA|1": [15, 0], "$G1|$TA|2": [4, 6],
 "$G1|$TB|0": [0, 7], "$G1|$TB|1": [3, 6],
 "$G2|$TA|0": [5, 21], "$G2|$TA|1": [5, 10], "$G2|$TA|2": [5, 5]}
EOF
)
if msg=$(compare "$EXPECT2"); then ok "round 2 after new messages and commits: metadb lag = Burrow = truth ($msg)"; else bad "round 2: $msg"; fi

# A group nobody ever used: no topics, no lag, no error.
if "$METADB" --kafka.brokers="$B" lag --group g_lagburrow_none_$$ --json >"$TMP/none.json" 2>&1 &&
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); e=d["groups"][0]; assert e["topic"] is None and e["partitions"]==[] and d["total_lag"]==0, d' "$TMP/none.json"; then
    ok "unknown group reported with no topic and zero lag"
else
    bad "unknown group: $(cat "$TMP/none.json")"
fi

finish
