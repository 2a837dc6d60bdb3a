#!/usr/bin/env bash
# deploy/scale.sh — run several metadb daemons on one machine against the
# local stack (or any Kafka/MongoDB the configuration names).
#
#   deploy/scale.sh start --workers N --linkers M [--producer] [--api] [-- CONFIG FLAGS...]
#       Brings the number of running workers to N and linkers to M: missing
#       instances are started, surplus ones are stopped gracefully (highest
#       index first), so the same command scales out and in. --producer/--api
#       also start one producer / API server. CONFIG FLAGS (e.g. --config FILE,
#       --mongo.db=x, --topic.files=y) are passed to every daemon and remembered
#       for later `start` calls of the same run directory.
#   deploy/scale.sh stop [worker|linker|producer|api]
#       SIGTERM (drain, commit, exit), SIGKILL after --grace seconds (default 30).
#       Order: producer, workers, linkers, api, so work in flight can finish.
#   deploy/scale.sh status
#       One line per instance: pid, state, metrics port, assigned partitions and
#       consumer lag read from its /metrics. Exit 0 when every instance runs.
#   deploy/scale.sh kill-one worker|linker [--signal KILL|TERM] [--index I]
#       Crash (default SIGKILL) one instance, the highest-numbered unless --index:
#       the consumer group rebalances its partitions onto the others.
#
# Options (before or after the command):
#   --run-dir DIR        pid files, logs, ports (default $METADB_HOME/run)
#   --bin-dir DIR        where the metadb-* binaries are (default: build/ of this
#                        checkout if built there, else $PATH)
#   --worker-port-base P metrics port of worker i is P+i-1 (default 9201)
#   --linker-port-base P metrics port of linker i is P+i-1 (default 9301)
#   --producer-port P    (default 9103)   --grace S  (default 30)
# Files in the run directory: <role>-<i>.pid, <role>-<i>.log, <role>-<i>.port,
# scale.args (remembered config flags) and prometheus-targets.json (file_sd
# targets of every running instance, for Prometheus' file_sd_configs).
# Each instance gets --kafka.client.id=metadb-<role>-<i>, so `metadb lag` shows
# which process owns which partition.
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
METADB_HOME=${METADB_HOME:-$HOME/.metadb}
RUN_DIR=$METADB_HOME/run
BIN_DIR=
WORKER_BASE=9201
LINKER_BASE=9301
PRODUCER_PORT=9103
GRACE=30

say() { printf 'scale: %s\n' "$*"; }
die() { printf 'scale: error: %s\n' "$*" >&2; exit 1; }
usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}
is_int() { [[ ${1:-} =~ ^[0-9]+$ ]]; }

# ------------------------------------------------------------------ arguments
CMD=${1:-}
[ -n "$CMD" ] || usage 2
shift
WANT_WORKERS='' WANT_LINKERS='' WANT_PRODUCER=0 WANT_API=0 SIGNAL=KILL INDEX='' ROLE_ARG=''
EXTRA=()
HAVE_EXTRA=0
while [ $# -gt 0 ]; do
    case $1 in
        --workers) WANT_WORKERS=${2:-}; shift ;;
        --workers=*) WANT_WORKERS=${1#*=} ;;
        --linkers) WANT_LINKERS=${2:-}; shift ;;
        --linkers=*) WANT_LINKERS=${1#*=} ;;
        --producer) WANT_PRODUCER=1 ;;
        --api) WANT_API=1 ;;
        --run-dir) RUN_DIR=${2:-}; shift ;;
        --run-dir=*) RUN_DIR=${1#*=} ;;
        --bin-dir) BIN_DIR=${2:-}; shift ;;
        --bin-dir=*) BIN_DIR=${1#*=} ;;
        --worker-port-base) WORKER_BASE=${2:-}; shift ;;
        --worker-port-base=*) WORKER_BASE=${1#*=} ;;
        --linker-port-base) LINKER_BASE=${2:-}; shift ;;
        --linker-port-base=*) LINKER_BASE=${1#*=} ;;
        --producer-port) PRODUCER_PORT=${2:-}; shift ;;
        --producer-port=*) PRODUCER_PORT=${1#*=} ;;
        --grace) GRACE=${2:-}; shift ;;
        --grace=*) GRACE=${1#*=} ;;
        --signal) SIGNAL=${2:-}; shift ;;
        --signal=*) SIGNAL=${1#*=} ;;
        --index) INDEX=${2:-}; shift ;;
        --index=*) INDEX=${1#*=} ;;
        -h|--help) usage 0 ;;
        --) shift; EXTRA=("$@"); HAVE_EXTRA=1; break ;;
        worker|linker|producer|api) ROLE_ARG=$1 ;;
        *) die "unknown argument '$1' (see deploy/scale.sh --help)" ;;
    esac
    shift
done
for v in WORKER_BASE LINKER_BASE PRODUCER_PORT GRACE; do
    is_int "${!v}" || die "$v must be a number, got '${!v}'"
done
[ -n "$RUN_DIR" ] || die "--run-dir needs a directory"
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)

# ------------------------------------------------------------------ binaries
binary() { # ROLE -> path of its binary
    local name sub
    case $1 in
        worker) name=metadb-worker sub=workers ;;
        linker) name=metadb-linker sub=linker ;;
        producer) name=metadb-producer sub=producer ;;
        api) name=metadb-api sub=api ;;
    esac
    if [ -n "$BIN_DIR" ]; then
        [ -x "$BIN_DIR/$name" ] && { echo "$BIN_DIR/$name"; return; }
        [ -x "$BIN_DIR/$sub/$name" ] && { echo "$BIN_DIR/$sub/$name"; return; }
        die "$name not found in $BIN_DIR"
    fi
    [ -x "$SRC_DIR/build/$sub/$name" ] && { echo "$SRC_DIR/build/$sub/$name"; return; }
    command -v "$name" 2>/dev/null || die "$name not found (build it, or pass --bin-dir)"
}

# ------------------------------------------------------------------ instances
pidfile() { echo "$RUN_DIR/$1-$2.pid"; }

# alive ROLE I: the recorded pid runs and is that role's binary.
alive() {
    local f pid
    f=$(pidfile "$1" "$2")
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    is_int "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == *"metadb-$1"* ]]
}

# indexes ROLE: indexes with a pid file, ascending.
indexes() {
    local f
    for f in "$RUN_DIR/$1"-*.pid; do
        [ -e "$f" ] || continue
        f=${f##*/$1-}
        f=${f%.pid}
        is_int "$f" && echo "$f"
    done | sort -n
}

port_of() {
    case $1 in
        worker) echo $((WORKER_BASE + $2 - 1)) ;;
        linker) echo $((LINKER_BASE + $2 - 1)) ;;
        producer) echo "$PRODUCER_PORT" ;;
        api) echo 0 ;;
    esac
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

metrics() { # PORT -> /metrics text (empty on failure)
    curl -s -m 2 "http://127.0.0.1:$1/metrics" 2>/dev/null || true
}

start_one() { # ROLE I
    local role=$1 i=$2 bin port log pid
    if alive "$role" "$i"; then return 0; fi
    bin=$(binary "$role")
    port=$(port_of "$role" "$i")
    log=$RUN_DIR/$role-$i.log
    if [ "$port" != 0 ] && port_busy "$port"; then
        die "metrics port $port for $role-$i is in use (choose another --$role-port-base)"
    fi
    local args=("${EXTRA[@]}" "--kafka.client.id=metadb-$role-$i")
    [ "$port" != 0 ] && args+=("--$role.metrics_port=$port")
    printf '\n==== %s start %s-%s: %s %s\n' "$(date -u +%FT%TZ)" "$role" "$i" "$bin" "${args[*]}" >>"$log"
    # setsid: the daemon leaves our process group and session, so a Ctrl-C in
    # this terminal or the end of this script does not reach it.
    # no /dev/shm/mongoc-PID counter file (left behind by every kill -9)
    MONGOC_DISABLE_SHM=${MONGOC_DISABLE_SHM:-1} setsid "$bin" "${args[@]}" >>"$log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$(pidfile "$role" "$i")"
    echo "$port" >"$RUN_DIR/$role-$i.port"
    # ready: metrics answer (or, without metrics, still alive after 2 s)
    local t
    for t in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        if [ "$port" != 0 ]; then
            [ -n "$(metrics "$port")" ] && { say "$role-$i started (pid $pid, metrics :$port, log $log)"; return 0; }
        elif [ "$t" -ge 20 ]; then
            say "$role-$i started (pid $pid, log $log)"
            return 0
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$role-$i started (pid $pid) but its metrics on :$port do not answer yet; log $log"
        return 0
    fi
    rm -f "$(pidfile "$role" "$i")"
    tail -n 5 "$log" >&2
    die "$role-$i exited at start-up (log $log)"
}

stop_one() { # ROLE I
    local role=$1 i=$2 f pid t
    f=$(pidfile "$role" "$i")
    if ! alive "$role" "$i"; then
        rm -f "$f" "$RUN_DIR/$role-$i.port"
        return 0
    fi
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < GRACE * 10; t++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$role-$i (pid $pid) still running after ${GRACE}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f" "$RUN_DIR/$role-$i.port"
    say "$role-$i stopped (pid $pid)"
}

# Stop several instances of a role at once: SIGTERM all, then wait for all.
stop_many() { # ROLE I...
    local role=$1 i
    shift
    for i in "$@"; do stop_one "$role" "$i" & done
    wait
}

write_targets() {
    local role i first=1 tmp=$RUN_DIR/prometheus-targets.json.tmp
    {
        echo "["
        for role in producer worker linker; do
            for i in $(indexes "$role"); do
                alive "$role" "$i" || continue
                [ $first = 1 ] || echo ","
                first=0
                printf '  {"targets": ["127.0.0.1:%s"], "labels": {"job": "metadb-%s", "instance_name": "%s-%s"}}' \
                    "$(cat "$RUN_DIR/$role-$i.port")" "$role" "$role" "$i"
            done
        done
        echo
        echo "]"
    } >"$tmp"
    mv "$tmp" "$RUN_DIR/prometheus-targets.json"
}

scale_role() { # ROLE WANT
    local role=$1 want=$2 i running=() surplus=()
    for i in $(indexes "$role"); do
        if alive "$role" "$i"; then running+=("$i"); else rm -f "$(pidfile "$role" "$i")" "$RUN_DIR/$role-$i.port"; fi
    done
    # start the lowest free indexes first
    local have=${#running[@]} next=1
    while [ "$have" -lt "$want" ]; do
        if ! alive "$role" "$next"; then
            start_one "$role" "$next"
            have=$((have + 1))
        fi
        next=$((next + 1))
    done
    # scale in: highest indexes go first
    if [ "${#running[@]}" -gt "$want" ]; then
        mapfile -t surplus < <(printf '%s\n' "${running[@]}" | sort -rn | head -n $(("${#running[@]}" - want)))
        stop_many "$role" "${surplus[@]}"
    fi
}

remember_args() {
    if [ $HAVE_EXTRA = 1 ]; then
        printf '%s\0' "${EXTRA[@]}" >"$RUN_DIR/scale.args"
    elif [ -s "$RUN_DIR/scale.args" ]; then
        mapfile -d '' -t EXTRA <"$RUN_DIR/scale.args"
    fi
}

# ------------------------------------------------------------------ commands
cmd_start() {
    [ -n "$WANT_WORKERS$WANT_LINKERS" ] || [ $WANT_PRODUCER = 1 ] || [ $WANT_API = 1 ] ||
        die "start needs --workers N and/or --linkers M (and/or --producer, --api)"
    for v in WANT_WORKERS WANT_LINKERS; do
        [ -z "${!v}" ] || is_int "${!v}" || die "${v#WANT_} count must be a number, got '${!v}'"
    done
    remember_args
    # Downstream first: linkers are ready before events arrive, workers before tasks.
    [ -z "$WANT_LINKERS" ] || scale_role linker "$WANT_LINKERS"
    [ -z "$WANT_WORKERS" ] || scale_role worker "$WANT_WORKERS"
    [ $WANT_PRODUCER = 0 ] || start_one producer 1
    [ $WANT_API = 0 ] || start_one api 1
    write_targets
    cmd_status || true
}

cmd_stop() {
    local role roles=(producer worker linker api)
    [ -z "$ROLE_ARG" ] || roles=("$ROLE_ARG")
    for role in "${roles[@]}"; do
        local idx
        mapfile -t idx < <(indexes "$role")
        [ ${#idx[@]} -eq 0 ] || stop_many "$role" "${idx[@]}"
    done
    write_targets
}

# value of a metric (summed over its series) in a /metrics text
metric_sum() { # TEXT NAME
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 } END { if (f) printf "%d", s; else printf "-" }' <<<"$1"
}

cmd_status() {
    local role i all_ok=0 any=0 pid port text
    printf '%-12s %8s  %-8s %6s  %10s  %10s\n' INSTANCE PID STATE PORT PARTITIONS LAG
    for role in producer worker linker api; do
        for i in $(indexes "$role"); do
            any=1
            pid=$(cat "$(pidfile "$role" "$i")" 2>/dev/null || echo -)
            port=$(cat "$RUN_DIR/$role-$i.port" 2>/dev/null || echo 0)
            if alive "$role" "$i"; then
                text=
                [ "$port" = 0 ] || text=$(metrics "$port")
                printf '%-12s %8s  %-8s %6s  %10s  %10s\n' "$role-$i" "$pid" running "$port" \
                    "$(metric_sum "$text" metadb_consumer_assigned_partitions)" "$(metric_sum "$text" metadb_consumer_lag)"
            else
                printf '%-12s %8s  %-8s %6s  %10s  %10s\n' "$role-$i" "$pid" dead "$port" - -
                all_ok=1
            fi
        done
    done
    [ $any = 1 ] || say "nothing started in $RUN_DIR"
    return $all_ok
}

cmd_kill_one() {
    local role=$ROLE_ARG pid i
    case $role in worker|linker) ;; *) die "kill-one needs worker or linker" ;; esac
    case $SIGNAL in KILL|TERM|INT) ;; *) die "--signal must be KILL, TERM or INT" ;; esac
    if [ -n "$INDEX" ]; then
        alive "$role" "$INDEX" || die "$role-$INDEX is not running"
        i=$INDEX
    else
        i=
        for j in $(indexes "$role"); do alive "$role" "$j" && i=$j; done
        [ -n "$i" ] || die "no $role is running"
    fi
    pid=$(cat "$(pidfile "$role" "$i")")
    kill "-$SIGNAL" "$pid"
    if [ "$SIGNAL" = KILL ]; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$(pidfile "$role" "$i")" "$RUN_DIR/$role-$i.port"
    fi
    write_targets
    say "sent SIG$SIGNAL to $role-$i (pid $pid)"
    echo "$role-$i $pid"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill-one) cmd_kill_one ;;
    -h|--help|help) usage 0 ;;
    *) die "unknown command '$CMD' (start|stop|status|kill-one)" ;;
esac
