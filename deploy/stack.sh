#!/usr/bin/env bash
# deploy/stack.sh — the local single-node stack metadb runs against on one
# machine: Apache Kafka in KRaft mode (broker+controller in one JVM, from the jars
# deploy/install.sh fetched) and a MongoDB-wire database (a real mongod when one is
# on PATH, otherwise FerretDB with its SQLite backend).
#
#   deploy/stack.sh start [--partitions N]   start what is not running, wait until
#                                            ready, create the four topics (idempotent)
#   deploy/stack.sh status                   show processes, topics, database ping
#                                            (exit 0 only when everything is up)
#   deploy/stack.sh stop                     stop both, keep the data
#   deploy/stack.sh stop --only kafka|database   stop one of them
#   deploy/stack.sh reset                    stop both and wipe their data and logs
#   deploy/stack.sh running                  print the local services running now
#                                            ("kafka", "database"), one a line
#
# Layout under $METADB_HOME (default $HOME/.metadb):
#   kafka/server.properties, kafka/log4j2.yaml, kafka/data/, kafka/sasl.password,
#   kafka/sasl-client.conf (metadb.conf snippet for the SASL listener),
#   ferretdb/ (SQLite files) or mongo/ (mongod dbpath), logs/*.log,
#   kafka.pid, ferretdb.pid | mongod.pid, cache/ (install.sh's downloads).
#
# Environment (defaults in brackets):
#   METADB_HOME [~/.metadb]  METADB_DEPLOY_CACHE [$METADB_HOME/cache]
#   METADB_KAFKA_PORT [9092]  METADB_KAFKA_CONTROLLER_PORT [9093]
#   METADB_DEPLOY_SASL_PORT [9094]  METADB_MONGO_PORT [27017]
#   METADB_TOPIC_PARTITIONS [6]  METADB_TOPIC_JOBS|FILES|INSTANCES|DLQ [metadb.*]
#   METADB_DEPLOY_KAFKA_HEAP [512m]  METADB_DEPLOY_TIMEOUT [120] seconds to wait for readiness
#   METADB_KAFKA_BROKERS / METADB_MONGO_URI: external services. When set, nothing is
#   started for that service; start/status only check that it is reachable
#   (METADB_DEPLOY_KCAT_ARGS adds kcat options, e.g. "-X security.protocol=SASL_SSL ...").
set -euo pipefail

METADB_HOME=${METADB_HOME:-$HOME/.metadb}
CACHE=${METADB_DEPLOY_CACHE:-$METADB_HOME/cache}
KAFKA_PORT=${METADB_KAFKA_PORT:-9092}
CONTROLLER_PORT=${METADB_KAFKA_CONTROLLER_PORT:-9093}
SASL_PORT=${METADB_DEPLOY_SASL_PORT:-9094}
MONGO_PORT=${METADB_MONGO_PORT:-27017}
PARTITIONS=${METADB_TOPIC_PARTITIONS:-6}
KAFKA_HEAP=${METADB_DEPLOY_KAFKA_HEAP:-512m}
TIMEOUT=${METADB_DEPLOY_TIMEOUT:-120}
FERRETDB_DEBUG_ADDR=${METADB_DEPLOY_FERRETDB_DEBUG_ADDR:--}
TOPICS=("${METADB_TOPIC_JOBS:-metadb.jobs}" "${METADB_TOPIC_FILES:-metadb.files}"
        "${METADB_TOPIC_INSTANCES:-metadb.instances}" "${METADB_TOPIC_DLQ:-metadb.dlq}")
EXT_BROKERS=${METADB_KAFKA_BROKERS:-}
EXT_MONGO=${METADB_MONGO_URI:-}
read -r -a KCAT_EXTRA <<<"${METADB_DEPLOY_KCAT_ARGS:-}"

KDIR=$METADB_HOME/kafka
LOGS=$METADB_HOME/logs
LIBS=$CACHE/kafka-libs
KAFKA_PID=$METADB_HOME/kafka.pid
BROKERS=${EXT_BROKERS:-127.0.0.1:$KAFKA_PORT}
MONGO_URI=${EXT_MONGO:-mongodb://127.0.0.1:$MONGO_PORT}
PY=/usr/bin/python3

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

# ---------------------------------------------------------------- helpers
is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is running and its command line has PATTERN.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    is_int "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"$2"* ]]
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# launch PIDFILE LOGFILE WORKDIR CMD...: starts CMD detached in its own session;
# the pid file holds CMD's own pid (bash writes $$, then execs CMD).
launch() {
    local pidfile=$1 logfile=$2 workdir=$3; shift 3
    rm -f "$pidfile"
    # The background subshell is not a process-group leader, so setsid needs no fork:
    # subshell -> setsid -> bash -c -> CMD all keep one pid. Every inherited descriptor
    # is redirected or closed (fd 9 is our lock: a daemon must not hold it).
    (cd "$workdir" || exit 1
     exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$logfile" 2>&1 </dev/null 9>&-) &
    local i
    for i in $(seq 1 50); do [ -s "$pidfile" ] && return 0; sleep 0.1; done
    die "could not start $1"
}

# stop_pid PIDFILE PATTERN NAME SECONDS: SIGTERM, wait, SIGKILL after SECONDS.
stop_pid() {
    local pidfile=$1 pattern=$2 name=$3 secs=$4 pid i
    if ! pid_alive "$pidfile" "$pattern"; then
        rm -f "$pidfile"
        say "$name: not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name: still running after ${secs}s, killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    say "$name: stopped (pid $pid)"
}

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: run deploy/install.sh first"; }

kcat_ok() { kcat -L -b "$1" -m "${2:-2}" "${@:3}" >/dev/null 2>&1; }

sasl_password() { cat "$KDIR/sasl.password"; }
sasl_args() { echo "-X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=metadb -X sasl.password=$(sasl_password)"; }

# ---------------------------------------------------------------- database
mongo_kind() {
    if [ -n "$EXT_MONGO" ]; then echo external
    elif command -v mongod >/dev/null 2>&1; then echo mongod
    else echo ferretdb; fi
}
mongo_pidfile() { echo "$METADB_HOME/$(mongo_kind).pid"; }
mongo_pattern() { [ "$(mongo_kind)" = mongod ] && echo mongod || echo "ferretdb --listen-addr=127.0.0.1:$MONGO_PORT"; }
ferretdb_bin() {
    if [ -x "$CACHE/bin/ferretdb" ]; then echo "$CACHE/bin/ferretdb"
    elif command -v ferretdb >/dev/null 2>&1; then command -v ferretdb
    else die "ferretdb not found in $CACHE/bin or on PATH: run deploy/install.sh first"; fi
}

# mongo_ping URI: a wire-protocol ping (pymongo), prints the server version.
# Bounded: a server that accepts connections but never answers (a wedged FerretDB)
# fails the ping after a few seconds instead of hanging the caller.
mongo_ping() {
    timeout 15 "$PY" - "$1" <<'EOF' 2>/dev/null
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1500, connectTimeoutMS=1500,
                        socketTimeoutMS=5000)
c.admin.command("ping")
print(c.server_info().get("version", "?"))
EOF
}

mongo_start() {
    local kind pidfile deadline
    kind=$(mongo_kind)
    if [ "$kind" = external ]; then
        mongo_ping "$MONGO_URI" >/dev/null || die "external database $MONGO_URI (METADB_MONGO_URI) is not reachable"
        say "database: external $MONGO_URI reachable"
        return
    fi
    pidfile=$(mongo_pidfile)
    if pid_alive "$pidfile" "$(mongo_pattern)"; then
        say "database: $kind already running (pid $(cat "$pidfile"))"
    else
        port_busy "$MONGO_PORT" && die "port $MONGO_PORT is in use by another process (not our $kind): set METADB_MONGO_PORT"
        if [ "$kind" = mongod ]; then
            mkdir -p "$METADB_HOME/mongo"
            launch "$pidfile" "$LOGS/mongod.log" "$METADB_HOME/mongo" \
                mongod --dbpath "$METADB_HOME/mongo" --bind_ip 127.0.0.1 --port "$MONGO_PORT"
        else
            local bin
            bin=$(ferretdb_bin)
            mkdir -p "$METADB_HOME/ferretdb"
            launch "$pidfile" "$LOGS/ferretdb.log" "$METADB_HOME/ferretdb" \
                "$bin" --listen-addr="127.0.0.1:$MONGO_PORT" --handler=sqlite \
                --sqlite-url="file:$METADB_HOME/ferretdb/" --state-dir="$METADB_HOME/ferretdb" \
                --debug-addr="$FERRETDB_DEBUG_ADDR" --telemetry=disable --log-level=warn
        fi
        say "database: started $kind (pid $(cat "$pidfile")) on 127.0.0.1:$MONGO_PORT"
    fi
    deadline=$((SECONDS + TIMEOUT))
    until mongo_ping "$MONGO_URI" >/dev/null; do
        if ! pid_alive "$pidfile" "$(mongo_pattern)"; then
            tail -n 20 "$LOGS/$kind.log" >&2 || true
            die "$kind exited during start-up (log: $LOGS/$kind.log)"
        fi
        [ $SECONDS -lt $deadline ] || die "$kind (pid $(cat "$pidfile")) not answering a ping on $MONGO_URI after ${TIMEOUT}s; if it is wedged: deploy/stack.sh stop --only database && deploy/stack.sh start"
        sleep 0.2
    done
    say "database: $MONGO_URI answers ping"
}

# ---------------------------------------------------------------- kafka
kafka_write_config() {
    mkdir -p "$KDIR/data" "$LOGS"
    if [ ! -s "$KDIR/sasl.password" ]; then
        (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$KDIR/sasl.password")
    fi
    local pw tmp
    pw=$(sasl_password)
    tmp=$KDIR/server.properties.tmp
    (umask 077; cat >"$tmp" <<EOF
# generated by deploy/stack.sh — single-node KRaft broker for metadb (edit deploy/stack.sh, not this file)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="metadb" password="$pw" user_metadb="$pw";
log.dirs=$KDIR/data
num.partitions=$PARTITIONS
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
    )
    mv "$tmp" "$KDIR/server.properties"
    [ -f "$KDIR/log4j2.yaml" ] || cat >"$KDIR/log4j2.yaml" <<'EOF'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
EOF
}

# metadb.conf snippet for clients of the authenticated listener.
kafka_write_client_conf() {
    local tmp=$KDIR/sasl-client.conf.tmp
    (umask 077; cat >"$tmp" <<EOF
# metadb configuration for the local SASL/PLAIN listener (generated by deploy/stack.sh)
kafka.brokers = 127.0.0.1:$SASL_PORT
kafka.security.protocol = SASL_PLAINTEXT
kafka.sasl.mechanisms = PLAIN
kafka.sasl.username = metadb
kafka.sasl.password = $(sasl_password)
EOF
    )
    mv "$tmp" "$KDIR/sasl-client.conf"
}

kafka_java() {
    java "-Dlog4j2.configurationFile=$KDIR/log4j2.yaml" -cp "$LIBS/*" "$@"
}

kafka_start() {
    if [ -n "$EXT_BROKERS" ]; then
        kcat_ok "$BROKERS" 10 "${KCAT_EXTRA[@]}" || die "external Kafka $BROKERS (METADB_KAFKA_BROKERS) is not reachable"
        say "kafka: external $BROKERS reachable (topics are not created on external clusters)"
        return
    fi
    need_cmd java
    need_cmd kcat
    ls "$LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no Kafka jars in $LIBS: run deploy/install.sh first"
    if pid_alive "$KAFKA_PID" kafka.Kafka; then
        say "kafka: already running (pid $(cat "$KAFKA_PID"))"
    else
        local p
        for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$SASL_PORT"; do
            port_busy "$p" && die "port $p is in use by another process (not our Kafka): set METADB_KAFKA_PORT / _CONTROLLER_PORT / _SASL_PORT"
        done
        kafka_write_config
        if [ ! -f "$KDIR/data/meta.properties" ]; then
            local cid
            # 16 random bytes, base64url (Kafka's cluster id form); never starting with
            # '-', which the tool's argument parser would take for an option.
            cid=-
            while [[ $cid == -* ]]; do cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
            kafka_java -Xmx256m kafka.tools.StorageTool format --config "$KDIR/server.properties" \
                --cluster-id "$cid" >>"$LOGS/kafka.log" 2>&1 || die "formatting $KDIR/data failed (see $LOGS/kafka.log)"
            say "kafka: formatted $KDIR/data (cluster id $cid)"
        fi
        launch "$KAFKA_PID" "$LOGS/kafka.log" "$KDIR" \
            java "-Xmx$KAFKA_HEAP" -Xms256m "-Dlog4j2.configurationFile=$KDIR/log4j2.yaml" \
            -cp "$LIBS/*" kafka.Kafka "$KDIR/server.properties"
        say "kafka: started (pid $(cat "$KAFKA_PID")) on 127.0.0.1:$KAFKA_PORT, SASL_PLAINTEXT on 127.0.0.1:$SASL_PORT"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until kcat_ok "$BROKERS" 2; do
        if ! pid_alive "$KAFKA_PID" kafka.Kafka; then
            tail -n 30 "$LOGS/kafka.log" >&2 || true
            die "Kafka exited during start-up (log: $LOGS/kafka.log)"
        fi
        [ $SECONDS -lt $deadline ] || die "Kafka not answering metadata requests on $BROKERS after ${TIMEOUT}s"
        sleep 0.3
    done
    if ! grep -q "^listeners=.*SASL_PLAINTEXT://127.0.0.1:$SASL_PORT" "$KDIR/server.properties" 2>/dev/null; then
        say "kafka: WARNING: the running broker was started without the SASL listener on 127.0.0.1:$SASL_PORT;"
        say "       restart it to add it: deploy/stack.sh stop --only kafka && deploy/stack.sh start"
        return 0
    fi
    # shellcheck disable=SC2046
    until kcat_ok "127.0.0.1:$SASL_PORT" 2 $(sasl_args); do
        [ $SECONDS -lt $deadline ] || die "Kafka SASL listener 127.0.0.1:$SASL_PORT not ready after ${TIMEOUT}s"
        sleep 0.3
    done
    kafka_write_client_conf
    say "kafka: ready on $BROKERS (SASL/PLAIN user metadb on 127.0.0.1:$SASL_PORT, password in $KDIR/sasl.password)"
}

# topic_partitions: "name count" per topic, from the broker's metadata.
topic_partitions() {
    kcat -L -J -b "$BROKERS" -m 5 "${KCAT_EXTRA[@]}" 2>/dev/null |
        jq -r '.topics[] | select(.topic | startswith("__") | not) | "\(.topic) \(.partitions | length)"'
}

kafka_topics() {
    [ -n "$EXT_BROKERS" ] && return 0
    local have t n deadline
    have=$(topic_partitions) || die "cannot read topic metadata from $BROKERS"
    for t in "${TOPICS[@]}"; do
        n=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$have")
        if [ -z "$n" ]; then
            kafka_java -Xmx256m org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
                --create --if-not-exists --topic "$t" --partitions "$PARTITIONS" --replication-factor 1 >/dev/null ||
                die "creating topic $t failed"
            say "kafka: created topic $t ($PARTITIONS partitions)"
        elif [ "$n" -lt "$PARTITIONS" ]; then
            kafka_java -Xmx256m org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
                --alter --topic "$t" --partitions "$PARTITIONS" >/dev/null || die "adding partitions to $t failed"
            say "kafka: topic $t grown from $n to $PARTITIONS partitions"
        elif [ "$n" -gt "$PARTITIONS" ]; then
            say "kafka: topic $t has $n partitions (> $PARTITIONS requested; Kafka cannot shrink a topic, kept)"
        else
            say "kafka: topic $t exists ($n partitions)"
        fi
    done
    # Wait until the metadata shows every topic with at least the requested partitions.
    deadline=$((SECONDS + 30))
    while :; do
        have=$(topic_partitions || true)
        local ok=1
        for t in "${TOPICS[@]}"; do
            n=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$have")
            { [ -n "$n" ] && [ "$n" -ge "$PARTITIONS" ]; } || ok=0
        done
        [ $ok = 1 ] && break
        [ $SECONDS -lt $deadline ] || die "topics not visible in metadata after 30s"
        sleep 0.3
    done
}

# ---------------------------------------------------------------- commands
cmd_start() {
    mkdir -p "$METADB_HOME" "$LOGS"
    kafka_start
    kafka_topics
    mongo_start
    say "stack up: kafka $BROKERS, database $MONGO_URI, topics ${TOPICS[*]}"
}

cmd_status() {
    local rc=0 kind pidfile v
    if [ -n "$EXT_BROKERS" ]; then
        if kcat_ok "$BROKERS" 5 "${KCAT_EXTRA[@]}"; then say "kafka:    external $BROKERS reachable"
        else say "kafka:    external $BROKERS NOT reachable"; rc=1; fi
    elif pid_alive "$KAFKA_PID" kafka.Kafka; then
        if kcat_ok "$BROKERS" 3; then
            say "kafka:    running (pid $(cat "$KAFKA_PID")) $BROKERS, SASL_PLAINTEXT 127.0.0.1:$SASL_PORT"
        else
            say "kafka:    process running (pid $(cat "$KAFKA_PID")) but $BROKERS not answering"; rc=1
        fi
    else
        say "kafka:    stopped"; rc=1
    fi
    if [ $rc = 0 ]; then
        local have t n
        have=$(topic_partitions || true)
        for t in "${TOPICS[@]}"; do
            n=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$have")
            if [ -n "$n" ]; then say "  topic $t: $n partitions"; else say "  topic $t: MISSING"; rc=1; fi
        done
    fi
    kind=$(mongo_kind)
    if [ "$kind" != external ]; then
        pidfile=$(mongo_pidfile)
        if pid_alive "$pidfile" "$(mongo_pattern)"; then
            say "database: $kind running (pid $(cat "$pidfile")) $MONGO_URI"
        else
            say "database: $kind stopped"; rc=1
        fi
    fi
    if v=$(mongo_ping "$MONGO_URI"); then say "database: $MONGO_URI answers ping (server version $v)"
    else say "database: $MONGO_URI NOT reachable"; rc=1; fi
    say "state:    $METADB_HOME"
    return $rc
}

cmd_stop() {
    if [ "$ONLY" != database ]; then
        if [ -n "$EXT_BROKERS" ]; then say "kafka: external, nothing to stop"
        else stop_pid "$KAFKA_PID" kafka.Kafka kafka 60; fi
    fi
    if [ "$ONLY" != kafka ]; then
        local kind
        kind=$(mongo_kind)
        if [ "$kind" = external ]; then say "database: external, nothing to stop"
        else stop_pid "$(mongo_pidfile)" "$(mongo_pattern)" "$kind" 30; fi
    fi
}

# running_services: prints "kafka" and/or "database" for the local services running now.
cmd_running() {
    if [ -z "$EXT_BROKERS" ] && pid_alive "$KAFKA_PID" kafka.Kafka; then echo kafka; fi
    local kind
    kind=$(mongo_kind)
    if [ "$kind" != external ] && pid_alive "$(mongo_pidfile)" "$(mongo_pattern)"; then echo database; fi
    return 0
}

cmd_reset() {
    cmd_stop
    rm -rf "$KDIR/data" "$METADB_HOME/ferretdb" "$METADB_HOME/mongo" "$LOGS"
    say "wiped Kafka data, database files and logs under $METADB_HOME (cache and SASL password kept)"
}

main() {
    local cmd=${1:-}
    ONLY=
    [ -n "$cmd" ] || usage 2
    shift
    while [ $# -gt 0 ]; do
        case $1 in
            --partitions) [ $# -ge 2 ] || die "--partitions needs a value"; PARTITIONS=$2; shift 2 ;;
            --partitions=*) PARTITIONS=${1#*=}; shift ;;
            --only) [ $# -ge 2 ] || die "--only needs kafka or database"; ONLY=$2; shift 2 ;;
            -h|--help) usage 0 ;;
            *) die "unknown argument: $1 (see deploy/stack.sh --help)" ;;
        esac
    done
    case $ONLY in ''|kafka|database) ;; *) die "--only takes kafka or database, got '$ONLY'" ;; esac
    { is_int "$PARTITIONS" && [ "$PARTITIONS" -ge 1 ]; } || die "partition count must be a positive integer, got '$PARTITIONS'"
    for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$MONGO_PORT"; do
        { is_int "$p" && [ "$p" -ge 1 ] && [ "$p" -le 65535 ]; } || die "bad port '$p'"
    done
    [ -x "$PY" ] || die "$PY not found (Debian python3 with python3-pymongo): run deploy/install.sh"
    mkdir -p "$METADB_HOME"
    # One stack command at a time per state directory.
    exec 9>"$METADB_HOME/.stack.lock"
    flock -w 300 9 || die "another deploy/stack.sh holds $METADB_HOME/.stack.lock"
    case $cmd in
        start) cmd_start ;;
        status) cmd_status ;;
        stop) cmd_stop ;;
        reset) ONLY=; cmd_reset ;;
        running) cmd_running ;;
        help|-h|--help) usage 0 ;;
        *) die "unknown command '$cmd' (start|stop|status|reset)" ;;
    esac
}

main "$@"
