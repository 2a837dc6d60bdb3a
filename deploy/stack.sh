#!/usr/bin/env bash
# deploy/stack.sh — the local single-node stack metadb runs against on one
# machine: Apache Kafka in KRaft mode (broker+controller in one JVM, from the jars
# deploy/install.sh fetched) and a MongoDB-wire database: DocumentDB in a private
# PostgreSQL 15 cluster behind DocumentDB's gateway (pg_documentdb_gw) on 127.0.0.1:27017,
# or a real mongod when one is on PATH.
#
#   deploy/stack.sh start [--partitions N]   start what is not running, wait until
#                                            ready, create the four topics (idempotent)
#   deploy/stack.sh start --brokers 3        a 3-broker KRaft cluster instead of one broker
#                                            (replication factor 3, min.insync.replicas 2;
#                                            remembered: later commands need no flag)
#   deploy/stack.sh start|stop --broker I    start/stop broker I of the cluster only
#   deploy/stack.sh start --only kafka|database   start one of them
#   deploy/stack.sh status                   show processes, topics, database ping
#                                            (exit 0 only when everything is up)
#   deploy/stack.sh stop                     stop both, keep the data
#   deploy/stack.sh stop --only kafka|database   stop one of them
#   deploy/stack.sh reset                    stop both and wipe their data and logs
#   deploy/stack.sh running                  print the local services running now
#                                            ("kafka", "database"), one a line
#   deploy/stack.sh user add NAME rw|ro PWFILE  another database user (DocumentDB),
#                                            password read from PWFILE
#   deploy/stack.sh user drop NAME           remove such a user
#
# Layout under $METADB_HOME (default $HOME/.metadb):
#   kafka/server.properties, kafka/log4j2.yaml, kafka/data/, kafka/sasl.password,
#   (a cluster: kafka/brokers, kafka/cluster.id, and kafka-I/{server.properties,data/},
#   kafka-I.pid, logs/kafka-I.log for brokers I >= 2),
#   kafka/sasl-client.conf (metadb.conf snippet for the SASL listener),
#   postgres/data (the PostgreSQL cluster), postgres/run (its socket, 0700),
#   database/ (0700: gateway.json, its self-signed certificate, and per user
#   metadb|metadb_ro: <user>.password and <user>.uri, mode 0600; metadb is read-write,
#   metadb_ro has readAnyDatabase and is the API's api.mongo_uri), gateway.pid,
#   or mongo/ (mongod dbpath) + mongod.pid; logs/*.log, kafka.pid, cache/.
#
# Environment (defaults in brackets):
#   METADB_HOME [~/.metadb]  METADB_DEPLOY_CACHE [$METADB_HOME/cache]
#   METADB_KAFKA_PORT [9092]  METADB_KAFKA_CONTROLLER_PORT [9093]
#   METADB_DEPLOY_SASL_PORT [9094]  METADB_MONGO_PORT [27017] (the gateway)
#   METADB_PG_PORT [9712] (PostgreSQL, 127.0.0.1)  METADB_PG_BINDIR [/usr/lib/postgresql/15/bin]
#   METADB_TOPIC_PARTITIONS [6]  METADB_TOPIC_JOBS|FILES|INSTANCES|DLQ [metadb.*]
#   METADB_DEPLOY_KAFKA_HEAP [512m; 384m per broker in a cluster]  METADB_DEPLOY_TIMEOUT [120] seconds to wait for readiness
#   Cluster (--brokers N): METADB_KAFKA_PORTS, METADB_KAFKA_CONTROLLER_PORTS, METADB_DEPLOY_SASL_PORTS
#   (comma lists, one port per broker; default: the ports above + 100 per broker);
#   METADB_KAFKA_EXTRA_HOST (+ METADB_KAFKA_EXTRA_PORTS [PLAINTEXT port + 4]): one more listener,
#   NODES://HOST:PORT, for clients in other network namespaces (tests/faults/netns.py)
#   METADB_KAFKA_BROKERS / METADB_MONGO_URI: external services. When set (and not the
#   local stack's own database/metadb.uri), nothing is started for that service; start/status only check that it is reachable
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
TOPICS=("${METADB_TOPIC_JOBS:-metadb.jobs}" "${METADB_TOPIC_FILES:-metadb.files}"
        "${METADB_TOPIC_INSTANCES:-metadb.instances}" "${METADB_TOPIC_DLQ:-metadb.dlq}"
        "${METADB_TOPIC_RETRIEVE:-metadb.retrieve}")
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
# The local database is DocumentDB (a PostgreSQL extension) in a private PostgreSQL 15
# cluster under $PGDATA, behind DocumentDB's own gateway (pg_documentdb_gw) on
# 127.0.0.1:$MONGO_PORT. A mongod on PATH replaces both; METADB_MONGO_URI replaces
# everything (unless it is exactly the local stack's own read-write URI, which
# tests/run.sh exports so that every client finds the credentials).
PGDIR=$METADB_HOME/postgres
PGDATA=$PGDIR/data
PGRUN=$PGDIR/run
PG_PORT=${METADB_PG_PORT:-9712}
PGBIN=${METADB_PG_BINDIR:-/usr/lib/postgresql/15/bin}
DBDIR=$METADB_HOME/database
GW_PID=$METADB_HOME/gateway.pid

if [ -n "$EXT_MONGO" ] && [ -s "$DBDIR/metadb.uri" ] && [ "$EXT_MONGO" = "$(cat "$DBDIR/metadb.uri")" ]; then
    EXT_MONGO=
fi

mongo_kind() {
    if [ -n "$EXT_MONGO" ]; then echo external
    elif command -v mongod >/dev/null 2>&1; then echo mongod
    else echo documentdb; fi
}

# PostgreSQL refuses to run as root. As root, it runs in a user namespace where root
# appears as the postgres account: the files stay root's (no chmod of $HOME), and the
# server is an unprivileged process all the same.
pg_as() {
    if [ "$(id -u)" = 0 ]; then
        unshare --user --map-user="$(id -u postgres)" --map-group="$(id -g postgres)" "$@"
    else "$@"; fi
}
pg_ctl_() { pg_as "$PGBIN/pg_ctl" -D "$PGDATA" "$@"; }
psql_() { pg_as "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGRUN" -p "$PG_PORT" -U postgres -d postgres "$@"; }
pg_alive() { [ -f "$PGDATA/PG_VERSION" ] && pg_ctl_ status >/dev/null 2>&1; }
pg_ready() { "$PGBIN/pg_isready" -q -h "$PGRUN" -p "$PG_PORT" -U postgres -d postgres 2>/dev/null; }

need_pg() {
    [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 not found in $PGBIN: run deploy/install.sh first"
    [ -f /usr/share/postgresql/15/extension/documentdb.control ] || die "the documentdb extension is not installed: run deploy/install.sh first"
    [ -x "$CACHE/bin/pg_documentdb_gw" ] || die "the gateway $CACHE/bin/pg_documentdb_gw is missing: run deploy/install.sh first"
    id postgres >/dev/null 2>&1 || die "no 'postgres' account (apt-get install postgresql-15)"
}

pg_init() {
    [ -f "$PGDATA/PG_VERSION" ] && return 0
    mkdir -p "$PGDIR" "$PGRUN" "$LOGS"
    chmod 0700 "$PGDIR" "$PGRUN"
    pg_as "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >>"$LOGS/postgres.log" 2>&1 || die "initdb $PGDATA failed (see $LOGS/postgres.log)"
    # Sized for the 2-core / 24 GiB machines metadb runs on (a linker batch of 5,000
    # instances is ~25 MB of BSON; the LIDC catalogue of 244,527 instances ~1.2 GB):
    #  - shared_buffers 1 GB keeps the indexes and recent pages of a 250k catalogue in
    #    PostgreSQL's cache (peak ~1.0 GiB PSS measured for the 250k load); the OS page
    #    cache holds the rest (effective_cache_size tells the planner so).
    #  - max_wal_size 4 GB: bulk upserts of whole batches would otherwise force a
    #    checkpoint every few batches. synchronous_commit stays on: the linker commits
    #    Kafka offsets as soon as a bulk write is acknowledged, so an acknowledged write
    #    must survive a crash.
    #  - work_mem 32 MB: facet aggregations and $in look-ups of 5,000 ids sort in memory.
    #  - max_connections 200: the gateway's pools (system, authentication, one per user)
    #    plus daemons, API and tests on one machine.
    #  - jit off: the queries are short index look-ups; JIT costs more than it saves.
    #  - parallel workers fit two cores; random_page_cost 1.1 for SSD storage keeps the
    #    planner on the indexes.
    cat >>"$PGDATA/postgresql.conf" <<PGCONF

# ---- metadb (deploy/stack.sh) ----
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGRUN'
unix_socket_permissions = 0700
shared_buffers = 1GB
effective_cache_size = 8GB
work_mem = 32MB
maintenance_work_mem = 256MB
max_connections = 200
max_wal_size = 4GB
checkpoint_timeout = 15min
synchronous_commit = on
jit = off
random_page_cost = 1.1
max_worker_processes = 8
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
shared_preload_libraries = 'pg_cron, pg_documentdb_core, pg_documentdb'
cron.database_name = 'postgres'
cron.host = '$PGRUN'
documentdb.enableBackgroundWorker = 'true'
documentdb.localhost_connection_string = 'host=$PGRUN'
log_min_messages = warning
PGCONF
    # The private socket (its folder is 0700, so only this account reaches it) trusts
    # every role: the gateway checks each client's SCRAM proof itself, then opens that
    # user's PostgreSQL sessions over the socket without a password, and pg_cron and
    # DocumentDB's background index builds connect the same way (cron.host and
    # localhost_connection_string above). Over TCP (127.0.0.1 only) every role needs
    # its SCRAM password.
    printf '%s\n' '# generated by deploy/stack.sh' 'local all all trust' \
        'host  all all 127.0.0.1/32 scram-sha-256' >"$PGDATA/pg_hba.conf"
    say "database: initialised the PostgreSQL cluster $PGDATA (port $PG_PORT)"
}

pg_start() {
    need_pg
    pg_init
    if pg_alive; then
        say "database: PostgreSQL already running ($PGDATA)"
    else
        port_busy "$PG_PORT" && die "port $PG_PORT is in use by another process (not our PostgreSQL): set METADB_PG_PORT"
        mkdir -p "$PGRUN"
        # fd 9 is our lock: the server must not inherit it.
        pg_ctl_ -l "$LOGS/postgres.log" -w -t "$TIMEOUT" start >/dev/null 9>&- ||
            { tail -n 20 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start (log: $LOGS/postgres.log)"; }
        say "database: started PostgreSQL ($PGDATA, 127.0.0.1:$PG_PORT)"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until pg_ready; do
        [ $SECONDS -lt $deadline ] || die "PostgreSQL not accepting connections after ${TIMEOUT}s"
        sleep 0.2
    done
    if [ -z "$(psql_ -At -c "SELECT 1 FROM pg_extension WHERE extname = 'documentdb'")" ]; then
        psql_ -c 'CREATE EXTENSION IF NOT EXISTS documentdb CASCADE' >>"$LOGS/postgres.log" 2>&1 ||
            { tail -n 20 "$LOGS/postgres.log" >&2; die "CREATE EXTENSION documentdb failed (run deploy/install.sh)"; }
        say "database: created the documentdb extension"
    fi
}

gw_write_config() {
    mkdir -p "$DBDIR"
    chmod 0700 "$DBDIR"
    if [ ! -s "$DBDIR/gateway.key" ] || [ ! -s "$DBDIR/gateway.crt" ]; then
        # Release builds of the gateway panic without a certificate: a self-signed pair.
        # Plain TCP stays allowed on 127.0.0.1 (EnforceSslTcp false); TLS is offered too.
        (umask 077; openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
            -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -keyout "$DBDIR/gateway.key" -out "$DBDIR/gateway.crt" >/dev/null 2>&1) ||
            die "openssl could not make the gateway's certificate"
    fi
    (umask 077; cat >"$DBDIR/gateway.json.tmp" <<GWCONF
{
  "NodeHostName": "localhost",
  "BlockedRolePrefixes": ["documentdb", "pg", "internal_role"],
  "UseLocalHost": true,
  "GatewayListenPort": $MONGO_PORT,
  "PostgresHostName": "$PGRUN",
  "PostgresPort": $PG_PORT,
  "PostgresSystemUser": "postgres",
  "PostgresDatabase": "postgres",
  "EnforceSslTcp": false,
  "TransactionTimeoutSecs": 30,
  "CursorTimeoutSecs": 600,
  "PostgresCommandTimeoutSecs": 300,
  "CertificateOptions": {"CertType": "pem_file", "FilePath": "$DBDIR/gateway.crt", "KeyFilePath": "$DBDIR/gateway.key"}
}
GWCONF
    )
    mv "$DBDIR/gateway.json.tmp" "$DBDIR/gateway.json"
}

gw_alive() { pid_alive "$GW_PID" pg_documentdb_gw; }

gw_start() {
    if gw_alive; then
        say "database: gateway already running (pid $(cat "$GW_PID"))"
        return
    fi
    port_busy "$MONGO_PORT" && die "port $MONGO_PORT is in use by another process (not our gateway): set METADB_MONGO_PORT"
    gw_write_config
    launch "$GW_PID" "$LOGS/gateway.log" "$DBDIR" "$CACHE/bin/pg_documentdb_gw" "$DBDIR/gateway.json"
    say "database: started the gateway (pid $(cat "$GW_PID")) on 127.0.0.1:$MONGO_PORT"
}

scram_verifier() {
    "$PY" - "$1" <<'PYEOF'
import base64, hashlib, hmac, os, sys
pw, salt = sys.argv[1].encode(), os.urandom(28)
salted = hashlib.pbkdf2_hmac("sha256", pw, salt, 4096)
ck = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
sk = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
b = lambda x: base64.b64encode(x).decode()
print("SCRAM-SHA-256$4096:%s$%s:%s" % (b(salt), b(hashlib.sha256(ck).digest()), b(sk)))
PYEOF
}

# The two users: metadb (read-write: producer, linker, CLI) and metadb_ro
# (readAnyDatabase: the API). Passwords are generated once into files of mode 0600,
# and stored in PostgreSQL as SCRAM-SHA-256 verifiers with a 28-byte salt, which
# Debian's mongo-c-driver 1.23 requires (PostgreSQL's own have 16-byte salts:
# "SCRAM Failure: invalid salt length of 16"). Idempotent.
db_users() {
    local u pw
    for u in metadb metadb_ro; do
        [ -s "$DBDIR/$u.password" ] ||
            (umask 077; head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$DBDIR/$u.password")
        pw=$(cat "$DBDIR/$u.password")
        db_user_set "$u" "$([ $u = metadb ] && echo rw || echo ro)" "$pw"
        (umask 077; printf 'mongodb://%s:%s@127.0.0.1:%s/?authSource=admin\n' "$u" "$pw" "$MONGO_PORT" >"$DBDIR/$u.uri.tmp")
        mv "$DBDIR/$u.uri.tmp" "$DBDIR/$u.uri"
    done
}

# db_user_set NAME rw|ro PASSWORD: creates the user if missing (DocumentDB's createUser,
# as the superuser: the gateway's users cannot create users) and sets its password.
db_user_set() {
    local u=$1 kind=$2 pw=$3 role pwjson
    [[ $u =~ ^[A-Za-z][A-Za-z0-9_]{0,62}$ ]] || die "bad user name '$u' (letters, digits, _)"
    if [ "$kind" = rw ]; then role='[{"role":"clusterAdmin","db":"admin"},{"role":"readWriteAnyDatabase","db":"admin"}]'
    else role='[{"role":"readAnyDatabase","db":"admin"}]'; fi
    if [ -z "$(psql_ -At -c "SELECT 1 FROM pg_roles WHERE rolname = '$u'")" ]; then
        # The initial password is random (createUser's verifier is replaced just below),
        # so the real one never appears on a command line or in a JSON string.
        pwjson=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
        psql_ -c "SELECT documentdb_api.create_user('{\"createUser\":\"$u\",\"pwd\":\"$pwjson\",\"roles\":$role}')" >/dev/null ||
            die "creating the database user $u failed"
        say "database: created user $u ($kind)"
    fi
    printf "ALTER ROLE %s PASSWORD '%s'\n" "$u" "$(scram_verifier "$pw")" | psql_ -f - >/dev/null ||
        die "setting the password of $u failed"
}

# user add NAME rw|ro PASSWORD-FILE / user drop NAME: more database users (for tests,
# other tools or people); the password is read from a file, never from the command line.
cmd_user() {
    [ "$(mongo_kind)" = documentdb ] || die "user management is for the local DocumentDB only (mongod: use createUser)"
    pg_alive || die "the local database is not running (deploy/stack.sh start)"
    case ${1:-} in
        add)
            [ $# = 4 ] || die "usage: deploy/stack.sh user add NAME rw|ro PASSWORD-FILE"
            case $3 in rw|ro) ;; *) die "user kind must be rw or ro, got '$3'" ;; esac
            [ -r "$4" ] || die "cannot read the password file $4"
            db_user_set "$2" "$3" "$(head -n1 "$4")"
            say "database: user $2 ($3) ready" ;;
        drop)
            [ $# = 2 ] || die "usage: deploy/stack.sh user drop NAME"
            case $2 in metadb|metadb_ro|postgres) die "refusing to drop $2" ;; esac
            [[ $2 =~ ^[A-Za-z][A-Za-z0-9_]{0,62}$ ]] || die "bad user name '$2'"
            psql_ -c "DROP ROLE IF EXISTS $2" >/dev/null || die "dropping user $2 failed"
            say "database: user $2 dropped" ;;
        *) die "usage: deploy/stack.sh user add NAME rw|ro PASSWORD-FILE | user drop NAME" ;;
    esac
}

# mongo_ping URI: a wire-protocol ping (pymongo), prints the server version. Bounded:
# a server that accepts connections but never answers fails after a few seconds.
mongo_ping() {
    timeout 15 "$PY" - "$1" <<'PYEOF' 2>/dev/null
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1500, connectTimeoutMS=1500,
                        socketTimeoutMS=5000)
c.admin.command("ping")
print(c.server_info().get("version", "?"))
PYEOF
}

# user_check URI: logs in, reads, and tries a write into a scratch database (removed
# again): prints "read-write" or "read-only (...)", so status shows the roles hold.
user_check() {
    timeout 20 "$PY" - "$1" <<'PYEOF' 2>/dev/null
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000, connectTimeoutMS=3000, socketTimeoutMS=10000)
db = c["metadb_stack_probe"]
db["probe"].find_one({})
try:
    db["probe"].insert_one({"probe": 1})
    c.drop_database("metadb_stack_probe")
    print("read-write")
except pymongo.errors.OperationFailure as e:
    print("read-only (a write is refused: code %s)" % e.code)
PYEOF
}

local_uri() { cat "$DBDIR/metadb.uri"; }

mongod_start() {
    if pid_alive "$METADB_HOME/mongod.pid" mongod; then
        say "database: mongod already running (pid $(cat "$METADB_HOME/mongod.pid"))"
    else
        port_busy "$MONGO_PORT" && die "port $MONGO_PORT is in use by another process (not our mongod): set METADB_MONGO_PORT"
        mkdir -p "$METADB_HOME/mongo"
        launch "$METADB_HOME/mongod.pid" "$LOGS/mongod.log" "$METADB_HOME/mongo" \
            mongod --dbpath "$METADB_HOME/mongo" --bind_ip 127.0.0.1 --port "$MONGO_PORT"
    fi
    local deadline=$((SECONDS + TIMEOUT))
    until mongo_ping "$MONGO_URI" >/dev/null; do
        pid_alive "$METADB_HOME/mongod.pid" mongod || { tail -n 20 "$LOGS/mongod.log" >&2; die "mongod exited during start-up"; }
        [ $SECONDS -lt $deadline ] || die "mongod not answering a ping on $MONGO_URI after ${TIMEOUT}s"
        sleep 0.2
    done
    say "database: mongod $MONGO_URI answers ping"
}

mongo_start() {
    local deadline
    case $(mongo_kind) in
        external)
            mongo_ping "$MONGO_URI" >/dev/null || die "external database $MONGO_URI (METADB_MONGO_URI) is not reachable"
            say "database: external $MONGO_URI reachable"
            return ;;
        mongod) mongod_start; return ;;
    esac
    pg_start
    gw_start
    db_users
    deadline=$((SECONDS + TIMEOUT))
    until mongo_ping "$(local_uri)" >/dev/null; do
        if ! gw_alive; then
            tail -n 20 "$LOGS/gateway.log" >&2 || true
            die "the gateway exited during start-up (log: $LOGS/gateway.log)"
        fi
        [ $SECONDS -lt $deadline ] || die "the gateway (pid $(cat "$GW_PID")) not answering on 127.0.0.1:$MONGO_PORT after ${TIMEOUT}s (log: $LOGS/gateway.log)"
        sleep 0.2
    done
    say "database: DocumentDB gateway answers on 127.0.0.1:$MONGO_PORT (users metadb and metadb_ro; URIs in $DBDIR/*.uri, mode 0600)"
}

mongo_status() {
    local rc=0 v u r
    case $(mongo_kind) in
        external)
            if v=$(mongo_ping "$MONGO_URI"); then say "database: external $MONGO_URI answers ping (server version $v)"
            else say "database: external $MONGO_URI NOT reachable"; rc=1; fi ;;
        mongod)
            if pid_alive "$METADB_HOME/mongod.pid" mongod && v=$(mongo_ping "$MONGO_URI"); then
                say "database: mongod running (pid $(cat "$METADB_HOME/mongod.pid")) $MONGO_URI (server version $v)"
            else say "database: mongod stopped or not answering"; rc=1; fi ;;
        documentdb)
            if pg_alive && pg_ready; then say "database: PostgreSQL running ($PGDATA, 127.0.0.1:$PG_PORT)"
            else say "database: PostgreSQL stopped"; rc=1; fi
            if gw_alive; then say "database: gateway running (pid $(cat "$GW_PID")) on 127.0.0.1:$MONGO_PORT"
            else say "database: gateway stopped"; rc=1; fi
            for u in metadb metadb_ro; do
                if [ -s "$DBDIR/$u.uri" ] && r=$(user_check "$(cat "$DBDIR/$u.uri")") && [ -n "$r" ]; then
                    say "database: user $u logs in, $r"
                else say "database: user $u cannot log in"; rc=1; fi
            done ;;
    esac
    return $rc
}

mongo_stop() {
    case $(mongo_kind) in
        external) say "database: external, nothing to stop" ;;
        mongod) stop_pid "$METADB_HOME/mongod.pid" mongod mongod 30 ;;
        documentdb)
            stop_pid "$GW_PID" pg_documentdb_gw gateway 15
            if pg_alive; then
                pg_ctl_ -m fast -w -t 60 stop >/dev/null || die "PostgreSQL did not stop"
                say "PostgreSQL: stopped"
            else say "PostgreSQL: not running"; fi ;;
    esac
}

mongo_running() {
    case $(mongo_kind) in
        mongod) pid_alive "$METADB_HOME/mongod.pid" mongod ;;
        documentdb) gw_alive || pg_alive ;;
        *) return 1 ;;
    esac
}

# ---------------------------------------------------------------- kafka
# One broker by default (node 1: kafka/, kafka.pid, logs/kafka.log, exactly the
# single-node stack). `start --brokers N` makes an N-node KRaft cluster on 127.0.0.1
# (each node broker+controller, controller quorum of N): node i > 1 lives in kafka-i/,
# kafka-i.pid, logs/kafka-i.log. The count is remembered in kafka/brokers, so later
# start/stop/status need no flag. With N >= 3, topics get replication factor 3 and
# min.insync.replicas=2 (an acknowledged write is on two brokers; with one broker left
# a partition refuses writes instead of losing them); with N = 2, RF 2 and min ISR 1.
NBROKERS_FILE=$KDIR/brokers

# kafka_layout: the node list, ports and bootstrap list for NBROKERS nodes (after
# argument parsing). Ports of node i: METADB_KAFKA_PORTS / METADB_KAFKA_CONTROLLER_PORTS /
# METADB_DEPLOY_SASL_PORTS (comma lists) or the single-node ports + 100*(i-1).
# METADB_KAFKA_EXTRA_HOST adds a listener NODES://HOST:PORT on every node (an address
# of this machine that other network namespaces reach, e.g. a test's 10.231.0.1) with
# ports METADB_KAFKA_EXTRA_PORTS or the PLAINTEXT port + 4; it is advertised on that
# listener only, so clients bootstrapping there are given that host for every broker.
kafka_layout() {
    local i list
    if [ -z "$NBROKERS" ]; then
        NBROKERS=1
        [ -s "$NBROKERS_FILE" ] && NBROKERS=$(cat "$NBROKERS_FILE")
    fi
    { is_int "$NBROKERS" && [ "$NBROKERS" -ge 1 ] && [ "$NBROKERS" -le 9 ]; } || die "broker count must be 1..9, got '$NBROKERS'"
    KP=() KC=() KS=() KE=()
    _kafka_ports KP "${METADB_KAFKA_PORTS:-}" "$KAFKA_PORT" 0
    _kafka_ports KC "${METADB_KAFKA_CONTROLLER_PORTS:-}" "$CONTROLLER_PORT" 0
    _kafka_ports KS "${METADB_DEPLOY_SASL_PORTS:-}" "$SASL_PORT" 0
    _kafka_ports KE "${METADB_KAFKA_EXTRA_PORTS:-}" "$KAFKA_PORT" 4
    EXTRA_HOST=${METADB_KAFKA_EXTRA_HOST:-}
    if [ -n "$EXTRA_HOST" ]; then
        [[ $EXTRA_HOST =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "METADB_KAFKA_EXTRA_HOST must be an IPv4 address, got '$EXTRA_HOST'"
    fi
    if [ "$NBROKERS" -ge 3 ]; then KRF=3; KMINISR=2
    elif [ "$NBROKERS" = 2 ]; then KRF=2; KMINISR=1
    else KRF=1; KMINISR=1; fi
    list=
    for ((i = 1; i <= NBROKERS; i++)); do list+=${list:+,}127.0.0.1:${KP[i]}; done
    BROKERS=${EXT_BROKERS:-$list}
    [ "$NBROKERS" -gt 1 ] && [ -z "${METADB_DEPLOY_KAFKA_HEAP:-}" ] && KAFKA_HEAP=384m
    return 0
}

# _kafka_ports ARRAY LIST BASE ADD: ARRAY[i] for i in 1..NBROKERS from the comma LIST
# or BASE + ADD + 100*(i-1).
_kafka_ports() {
    local -n _arr=$1
    local i p
    local -a given=()
    [ -n "$2" ] && IFS=, read -r -a given <<<"$2"
    for ((i = 1; i <= NBROKERS; i++)); do
        if [ -n "$2" ]; then p=${given[i - 1]:-}; else p=$(($3 + $4 + 100 * (i - 1))); fi
        { is_int "$p" && [ "$p" -ge 1 ] && [ "$p" -le 65535 ]; } || die "no valid port for broker $i in '${2:-$3}'"
        _arr[i]=$p
    done
}

kdir() { if [ "$1" = 1 ]; then echo "$KDIR"; else echo "$METADB_HOME/kafka-$1"; fi; }
kpid() { if [ "$1" = 1 ]; then echo "$KAFKA_PID"; else echo "$METADB_HOME/kafka-$1.pid"; fi; }
klog() { if [ "$1" = 1 ]; then echo "$LOGS/kafka.log"; else echo "$LOGS/kafka-$1.log"; fi; }
kalive() { pid_alive "$(kpid "$1")" kafka.Kafka; }
# the nodes a command acts on: --broker I, or all of them
knodes() { if [ -n "$ONE_BROKER" ]; then echo "$ONE_BROKER"; else seq 1 "$NBROKERS"; fi; }

kafka_write_config() {
    local i=${1:-1} d
    d=$(kdir "$i")
    mkdir -p "$d/data" "$LOGS" "$KDIR"
    if [ ! -s "$KDIR/sasl.password" ]; then
        (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$KDIR/sasl.password")
    fi
    local pw tmp voters listeners advertised protomap j
    pw=$(sasl_password)
    tmp=$d/server.properties.tmp
    voters=
    for ((j = 1; j <= NBROKERS; j++)); do voters+=${voters:+,}$j@127.0.0.1:${KC[j]}; done
    listeners=PLAINTEXT://127.0.0.1:${KP[i]},CONTROLLER://127.0.0.1:${KC[i]},SASL_PLAINTEXT://127.0.0.1:${KS[i]}
    advertised=PLAINTEXT://127.0.0.1:${KP[i]},SASL_PLAINTEXT://127.0.0.1:${KS[i]}
    protomap=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
    if [ -n "$EXTRA_HOST" ]; then
        listeners+=,NODES://$EXTRA_HOST:${KE[i]}
        advertised+=,NODES://$EXTRA_HOST:${KE[i]}
        protomap+=,NODES:PLAINTEXT
    fi
    (umask 077; {
     if [ "$NBROKERS" = 1 ]; then
         echo "# generated by deploy/stack.sh — single-node KRaft broker for metadb (edit deploy/stack.sh, not this file)"
     else
         echo "# generated by deploy/stack.sh — node $i of a $NBROKERS-node KRaft cluster for metadb (edit deploy/stack.sh, not this file)"
     fi
     cat <<EOF
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protomap
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="metadb" password="$pw" user_metadb="$pw";
log.dirs=$d/data
num.partitions=$PARTITIONS
offsets.topic.replication.factor=$KRF
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$KRF
transaction.state.log.min.isr=$KMINISR
share.coordinator.state.topic.replication.factor=$KRF
share.coordinator.state.topic.min.isr=$KMINISR
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
     if [ "$NBROKERS" -gt 1 ]; then
         cat <<EOF
# replication: every topic created without an explicit factor (metadb's own topic
# creation asks for the broker default) gets $KRF replicas; a write with acks=all (what
# metadb's idempotent producers use) is acknowledged once $KMINISR of them have it.
default.replication.factor=$KRF
min.insync.replicas=$KMINISR
unclean.leader.election.enable=false
# a broker back from a failure leads its preferred partitions again within ~30 s
leader.imbalance.check.interval.seconds=30
EOF
     fi
    } >"$tmp")
    mv "$tmp" "$d/server.properties"
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
    local tmp=$KDIR/sasl-client.conf.tmp i list=
    for ((i = 1; i <= NBROKERS; i++)); do list+=${list:+,}127.0.0.1:${KS[i]}; done
    (umask 077; cat >"$tmp" <<EOF
# metadb configuration for the local SASL/PLAIN listener (generated by deploy/stack.sh)
kafka.brokers = $list
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

# kafka_cluster_id: the id every node is formatted with (node 1's, once it exists).
kafka_cluster_id() {
    local cid=
    [ -s "$KDIR/data/meta.properties" ] && cid=$(sed -n 's/^cluster\.id=//p' "$KDIR/data/meta.properties" | head -n 1)
    [ -z "$cid" ] && [ -s "$KDIR/cluster.id" ] && cid=$(head -n 1 "$KDIR/cluster.id")
    if [ -n "$cid" ]; then echo "$cid"; return; fi
    # 16 random bytes, base64url (Kafka's cluster id form); never starting with
    # '-', which the tool's argument parser would take for an option.
    cid=-
    while [[ $cid == -* ]]; do cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
    [ "$NBROKERS" = 1 ] || echo "$cid" >"$KDIR/cluster.id"
    echo "$cid"
}

# kafka_start_node I: start node I unless it runs (no waiting).
kafka_start_node() {
    local i=$1 d p cid
    d=$(kdir "$i")
    if kalive "$i"; then
        say "kafka: broker $i already running (pid $(cat "$(kpid "$i")"))"
        return 0
    fi
    for p in "${KP[i]}" "${KC[i]}" "${KS[i]}"; do
        port_busy "$p" && die "port $p is in use by another process (not our Kafka): set METADB_KAFKA_PORT / _CONTROLLER_PORT / _SASL_PORT"
    done
    kafka_write_config "$i"
    if [ ! -f "$d/data/meta.properties" ]; then
        cid=$(kafka_cluster_id)
        kafka_java -Xmx256m kafka.tools.StorageTool format --config "$d/server.properties" \
            --cluster-id "$cid" >>"$(klog "$i")" 2>&1 || die "formatting $d/data failed (see $(klog "$i"))"
        say "kafka: formatted $d/data (cluster id $cid)"
    fi
    launch "$(kpid "$i")" "$(klog "$i")" "$d" \
        java "-Xmx$KAFKA_HEAP" -Xms256m "-Dlog4j2.configurationFile=$KDIR/log4j2.yaml" \
        -cp "$LIBS/*" kafka.Kafka "$d/server.properties"
    if [ "$NBROKERS" = 1 ]; then
        say "kafka: started (pid $(cat "$KAFKA_PID")) on 127.0.0.1:$KAFKA_PORT, SASL_PLAINTEXT on 127.0.0.1:$SASL_PORT"
    else
        say "kafka: started broker $i (pid $(cat "$(kpid "$i")")) on 127.0.0.1:${KP[i]}, SASL_PLAINTEXT on 127.0.0.1:${KS[i]}${EXTRA_HOST:+, NODES on $EXTRA_HOST:${KE[i]}}"
    fi
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
    local i
    if [ -s "$NBROKERS_FILE" ] && [ "$(cat "$NBROKERS_FILE")" != "$NBROKERS" ] && [ -f "$KDIR/data/meta.properties" ]; then
        die "the Kafka data under $METADB_HOME belongs to a $(cat "$NBROKERS_FILE")-broker stack, not $NBROKERS: deploy/stack.sh reset first"
    fi
    if [ ! -s "$NBROKERS_FILE" ] && [ "$NBROKERS" != 1 ] && [ -f "$KDIR/data/meta.properties" ]; then
        die "the Kafka data under $METADB_HOME belongs to a single-broker stack: deploy/stack.sh reset first"
    fi
    mkdir -p "$KDIR"
    [ "$NBROKERS" = 1 ] || echo "$NBROKERS" >"$NBROKERS_FILE"
    for i in $(knodes); do kafka_start_node "$i"; done
    # Every node answers metadata requests on its own listener (each needs a
    # controller quorum, i.e. a majority of the nodes, to finish starting).
    local deadline=$((SECONDS + TIMEOUT))
    for i in $(knodes); do
        until kcat_ok "127.0.0.1:${KP[i]}" 2; do
            if ! kalive "$i"; then
                tail -n 30 "$(klog "$i")" >&2 || true
                die "Kafka broker $i exited during start-up (log: $(klog "$i"))"
            fi
            [ $SECONDS -lt $deadline ] || die "Kafka broker $i not answering metadata requests on 127.0.0.1:${KP[i]} after ${TIMEOUT}s"
            sleep 0.3
        done
    done
    if ! grep -q "^listeners=.*SASL_PLAINTEXT://127.0.0.1:$SASL_PORT" "$KDIR/server.properties" 2>/dev/null; then
        say "kafka: WARNING: the running broker was started without the SASL listener on 127.0.0.1:$SASL_PORT;"
        say "       restart it to add it: deploy/stack.sh stop --only kafka && deploy/stack.sh start"
        return 0
    fi
    for i in $(knodes); do
        # shellcheck disable=SC2046
        until kcat_ok "127.0.0.1:${KS[i]}" 2 $(sasl_args); do
            [ $SECONDS -lt $deadline ] || die "Kafka SASL listener 127.0.0.1:${KS[i]} not ready after ${TIMEOUT}s"
            sleep 0.3
        done
    done
    kafka_write_client_conf
    if [ "$NBROKERS" = 1 ]; then
        say "kafka: ready on $BROKERS (SASL/PLAIN user metadb on 127.0.0.1:$SASL_PORT, password in $KDIR/sasl.password)"
    else
        say "kafka: $NBROKERS-broker cluster ready on $BROKERS (replication factor $KRF, min.insync.replicas $KMINISR; SASL/PLAIN user metadb, client settings in $KDIR/sasl-client.conf)"
    fi
}

kafka_metadata() { kcat -L -J -b "$BROKERS" -m 5 "${KCAT_EXTRA[@]}" 2>/dev/null; }

# topic_partitions: "name count" per topic, from the broker's metadata.
topic_partitions() {
    kafka_metadata | jq -r '.topics[] | select(.topic | startswith("__") | not) | "\(.topic) \(.partitions | length)"'
}

kafka_topics() {
    [ -n "$EXT_BROKERS" ] && return 0
    local have t n deadline
    local -a cfg=()
    [ "$NBROKERS" -gt 1 ] && cfg=(--config "min.insync.replicas=$KMINISR")
    have=$(topic_partitions) || die "cannot read topic metadata from $BROKERS"
    for t in "${TOPICS[@]}"; do
        n=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$have")
        if [ -z "$n" ]; then
            kafka_java -Xmx256m org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
                --create --if-not-exists --topic "$t" --partitions "$PARTITIONS" --replication-factor "$KRF" \
                "${cfg[@]}" >/dev/null || die "creating topic $t failed"
            if [ "$NBROKERS" = 1 ]; then say "kafka: created topic $t ($PARTITIONS partitions)"
            else say "kafka: created topic $t ($PARTITIONS partitions, replication factor $KRF, min.insync.replicas $KMINISR)"; fi
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

# kafka_status: one line per broker; per topic its partitions and, on a cluster,
# replication, leaders per broker and the under-replicated partitions (ISR shorter
# than the replica list: a replica is down or catching up). Returns 1 when a broker
# is down or a topic is missing.
kafka_status() {
    local rc=0 i up=0 meta have t n
    if [ -n "$EXT_BROKERS" ]; then
        if kcat_ok "$BROKERS" 5 "${KCAT_EXTRA[@]}"; then say "kafka:    external $BROKERS reachable"
        else say "kafka:    external $BROKERS NOT reachable"; return 1; fi
    elif [ "$NBROKERS" = 1 ]; then
        if pid_alive "$KAFKA_PID" kafka.Kafka; then
            if kcat_ok "$BROKERS" 3; then
                say "kafka:    running (pid $(cat "$KAFKA_PID")) $BROKERS, SASL_PLAINTEXT 127.0.0.1:$SASL_PORT"
            else
                say "kafka:    process running (pid $(cat "$KAFKA_PID")) but $BROKERS not answering"; return 1
            fi
        else
            say "kafka:    stopped"; return 1
        fi
    else
        for ((i = 1; i <= NBROKERS; i++)); do
            if kalive "$i"; then
                if kcat_ok "127.0.0.1:${KP[i]}" 3; then
                    say "kafka:    broker $i running (pid $(cat "$(kpid "$i")")) 127.0.0.1:${KP[i]}, SASL_PLAINTEXT 127.0.0.1:${KS[i]}${EXTRA_HOST:+, NODES $EXTRA_HOST:${KE[i]}}"
                    up=$((up + 1))
                else
                    say "kafka:    broker $i process running (pid $(cat "$(kpid "$i")")) but 127.0.0.1:${KP[i]} not answering"; rc=1
                fi
            else
                say "kafka:    broker $i stopped"; rc=1
            fi
        done
        say "kafka:    $up of $NBROKERS brokers up (controller quorum needs $((NBROKERS / 2 + 1)); writes need $KMINISR in-sync replicas)"
        [ "$up" -gt 0 ] || return 1
    fi
    meta=$(kafka_metadata || true)
    if [ -z "$meta" ]; then say "kafka:    no metadata from $BROKERS"; return 1; fi
    if [ -n "$EXT_BROKERS" ] || [ "$NBROKERS" = 1 ]; then
        have=$(jq -r '.topics[] | select(.topic | startswith("__") | not) | "\(.topic) \(.partitions | length)"' <<<"$meta")
        for t in "${TOPICS[@]}"; do
            n=$(awk -v t="$t" '$1 == t { print $2 }' <<<"$have")
            if [ -n "$n" ]; then say "  topic $t: $n partitions"; else say "  topic $t: MISSING"; rc=1; fi
        done
        return $rc
    fi
    say "  brokers in metadata: $(jq -r '[.brokers[] | "\(.id)@\(.name)"] | join(" ")' <<<"$meta")"
    for t in "${TOPICS[@]}" __consumer_offsets; do
        n=$(jq -r --arg t "$t" '
            [.topics[] | select(.topic == $t)][0] // empty |
            .partitions as $p |
            ($p | map(select((.isrs | length) < (.replicas | length)))) as $under |
            "\($p | length) partitions, replication \([$p[] | .replicas | length] | max // 0), leaders " +
            ([$p[] | .leader] | group_by(.) | map("b\(.[0]):\(length)") | join(" ")) +
            (if ($under | length) == 0 then ", all in sync"
             else ", \($under | length) UNDER-REPLICATED (" +
                  ($under | map("p\(.partition) isr \([.isrs[].id] | join(","))/\([.replicas[].id] | join(","))") | join("; ")) + ")"
             end)' <<<"$meta")
        if [ -n "$n" ]; then say "  topic $t: $n"
        elif [ "$t" != __consumer_offsets ]; then say "  topic $t: MISSING"; rc=1; fi
    done
    return $rc
}

kafka_stop() {
    local i
    if [ -n "$EXT_BROKERS" ]; then say "kafka: external, nothing to stop"; return 0; fi
    if [ "$NBROKERS" = 1 ]; then stop_pid "$KAFKA_PID" kafka.Kafka kafka 60; return 0; fi
    # All at once: a node shutting down while the others already left waits for a
    # controller quorum that will not come back (stop_pid kills it after 60 s).
    for i in $(knodes); do stop_pid "$(kpid "$i")" kafka.Kafka "kafka broker $i" 60 & done
    wait
}

kafka_running() {
    local i
    [ -n "$EXT_BROKERS" ] && return 1
    for ((i = 1; i <= NBROKERS; i++)); do kalive "$i" && return 0; done
    return 1
}

# ---------------------------------------------------------------- commands
cmd_start() {
    mkdir -p "$METADB_HOME" "$LOGS"
    if [ "$ONLY" != database ]; then
        kafka_start
        kafka_topics
    fi
    [ "$ONLY" = kafka ] || mongo_start
    say "stack up: kafka $BROKERS, database $MONGO_URI, topics ${TOPICS[*]}"
}

cmd_status() {
    local rc=0
    kafka_status || rc=1
    mongo_status || rc=1
    say "state:    $METADB_HOME"
    return $rc
}

cmd_stop() {
    [ "$ONLY" != database ] && kafka_stop
    [ "$ONLY" != kafka ] && mongo_stop
    return 0
}

# running_services: prints "kafka" and/or "database" for the local services running now.
cmd_running() {
    if kafka_running; then echo kafka; fi
    if mongo_running; then echo database; fi
    return 0
}

cmd_reset() {
    cmd_stop
    rm -rf "$KDIR/data" "$NBROKERS_FILE" "$KDIR/cluster.id" "$METADB_HOME"/kafka-[0-9] "$PGDIR" "$METADB_HOME/mongo" "$LOGS"
    say "wiped Kafka data, database files and logs under $METADB_HOME (cache, SASL password and database passwords kept)"
}

main() {
    local cmd=${1:-}
    ONLY=
    NBROKERS=
    ONE_BROKER=
    [ -n "$cmd" ] || usage 2
    shift
    ARGS=()
    if [ "$cmd" = user ]; then ARGS=("$@"); set --; fi
    while [ $# -gt 0 ]; do
        case $1 in
            --partitions) [ $# -ge 2 ] || die "--partitions needs a value"; PARTITIONS=$2; shift 2 ;;
            --partitions=*) PARTITIONS=${1#*=}; shift ;;
            --only) [ $# -ge 2 ] || die "--only needs kafka or database"; ONLY=$2; shift 2 ;;
            --brokers) [ $# -ge 2 ] || die "--brokers needs a count"; NBROKERS=$2; shift 2 ;;
            --brokers=*) NBROKERS=${1#*=}; shift ;;
            --broker) [ $# -ge 2 ] || die "--broker needs a node number"; ONE_BROKER=$2; shift 2 ;;
            --broker=*) ONE_BROKER=${1#*=}; shift ;;
            -h|--help) usage 0 ;;
            *) die "unknown argument: $1 (see deploy/stack.sh --help)" ;;
        esac
    done
    case $ONLY in ''|kafka|database) ;; *) die "--only takes kafka or database, got '$ONLY'" ;; esac
    { is_int "$PARTITIONS" && [ "$PARTITIONS" -ge 1 ]; } || die "partition count must be a positive integer, got '$PARTITIONS'"
    for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$MONGO_PORT"; do
        { is_int "$p" && [ "$p" -ge 1 ] && [ "$p" -le 65535 ]; } || die "bad port '$p'"
    done
    kafka_layout
    if [ -n "$ONE_BROKER" ]; then
        { is_int "$ONE_BROKER" && [ "$ONE_BROKER" -ge 1 ] && [ "$ONE_BROKER" -le "$NBROKERS" ]; } ||
            die "--broker takes 1..$NBROKERS, got '$ONE_BROKER'"
        ONLY=kafka
    fi
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
        user) cmd_user "${ARGS[@]}" ;;
        help|-h|--help) usage 0 ;;
        *) die "unknown command '$cmd' (start|stop|status|reset)" ;;
    esac
}

main "$@"
