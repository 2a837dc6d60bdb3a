#!/usr/bin/env bash
# tests/e2e/test_scaleout.sh — scale-out on one machine. deploy/scale.sh starts
# 3 workers and 2 linkers (+ producer) over 6-partition topics, isolated
# topics/groups/database for this run. Then:
#   1. job 1 (3 patients): every worker owns 2 partitions and extracts files
#      (its own /metrics), both linkers own partitions, the job completes;
#   2. one worker is frozen (SIGSTOP) before job 2 (5 patients) so its 2
#      partitions stall mid-job while the others finish theirs; it is then
#      killed (SIGKILL, `deploy/scale.sh kill-one`): the group rebalances, the two
#      survivors own all 6 partitions, and job 2 completes with every file;
#   3. the same two jobs run again in a second deployment with 1 worker and 1
#      linker; `metadb dump` (canonical, job ids and timestamps removed) of the
#      two databases must be byte-identical, and both must hold every instance
#      of the generated archive's manifest.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../integration/ops_lib.sh"

ops_init scaleout
A=$TAG B=${TAG}_single
PATIENTS=8 FILES=480
"$PY" "$SRC/tests/gen/gen_archive.py" --out "$TMP/archive" --patients $PATIENTS --files $FILES --seed 23 --small \
    --jobs 1 >"$TMP/gen.log" 2>&1 || die "gen_archive failed: $(tail -3 "$TMP/gen.log")"
read -r -a PIDS_ALL < <(ops_patients)
JOB1_PATIENTS=("${PIDS_ALL[@]:0:3}") JOB2_PATIENTS=("${PIDS_ALL[@]:3}")
count_files() { # PATIENT... -> number of instances of those patients in the manifest
    "$PY" -c '
import json, sys
m = json.load(open(sys.argv[1])); want = set(sys.argv[2:])
studies = {s["uid"] for s in m["studies"] if s["patient_id"] in want}
print(sum(1 for i in m["instances"] if i["study_uid"] in studies))' "$TMP/archive/manifest.json" "$@"
}
N1=$(count_files "${JOB1_PATIENTS[@]}") N2=$(count_files "${JOB2_PATIENTS[@]}")
[ "$N1" -gt 0 ] && [ "$N2" -gt 0 ] && [ $((N1 + N2)) = $FILES ] || die "manifest split: job1 $N1, job2 $N2, total $FILES"

# deploy TAG WORKERS LINKERS RUNDIR [FLAG...]: topics (6 partitions), catalog,
# daemons (extra config flags go to every daemon).
deploy() {
    local tag=$1 nw=$2 nl=$3 rd=$4
    shift 4
    ops_use "$tag"
    local extra=("$@")
    mdb topics --partitions 6 >"$TMP/topics-$tag.log" 2>&1 || die "metadb topics failed: $(tail -2 "$TMP/topics-$tag.log")"
    ops_prepare
    local wb lb pp
    wb=$(free_port_block "$nw") lb=$(free_port_block "$nl")
    read -r pp < <(free_ports 1)
    OPS_RUNDIRS+=("$rd")
    bash "$SCALE" start --workers "$nw" --linkers "$nl" --producer --run-dir "$rd" --bin-dir "$BUILD" \
        --worker-port-base "$wb" --linker-port-base "$lb" --producer-port "$pp" -- "${CFG[@]}" "${extra[@]}" \
        >"$TMP/scale-$tag.log" 2>&1 || die "scale.sh start ($tag) failed: $(tail -5 "$TMP/scale-$tag.log")"
}

# submit PATIENT... -> job id (not waiting)
submit() { mdb submit --researcher ops --collection LIDC --patient "$@" 2>>"$TMP/submit.err" | head -n1; }
# wait_job JOB SECONDS -> 0 when the job reached completed
wait_job() {
    local s
    for _ in $(seq 1 $(($2 * 2))); do
        s=$(job_field "$1" state)
        [ "$s" = completed ] && return 0
        case $s in failed|completed_with_errors) return 1 ;; esac
        sleep 0.5
    done
    return 1
}
metric() { # RUNDIR ROLE I NAME -> summed value of a series in that instance's /metrics
    scrape "$(cat "$1/$2-$3.port")" | awk -v n="$4" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d", s }'
}

# ------------------------------------------------------------------ scale-out run
RA=$TMP/run-a
# A frozen member keeps its partitions until its session times out: 20 s
# leaves time to observe the stall before the group moves them.
deploy "$A" 3 2 "$RA" --kafka.session_timeout_ms=20000
ok "3 workers, 2 linkers and a producer started over 6 partitions"

# Partitions spread, as Kafka sees the groups (owners from `metadb lag`): 2 of the
# 6 file partitions per worker, 3 of the 6 instance partitions per linker.
spread() {
    mdb lag --group "$A.workers" --group "$A.linkers" --json 2>/dev/null | "$PY" -c '
import collections, json, sys
d = json.load(sys.stdin); tag = sys.argv[1]
own = collections.Counter()
for e in d["groups"]:
    if e["topic"] in (tag + ".files", tag + ".instances"):
        for p in e["partitions"]:
            own[(e["topic"], p["client_id"])] += 1
want = {(tag + ".files", "metadb-worker-%d" % i): 2 for i in (1, 2, 3)}
want.update({(tag + ".instances", "metadb-linker-%d" % i): 3 for i in (1, 2)})
sys.exit(0 if dict(own) == want else 1)' "$A"
}
for _ in $(seq 1 60); do spread && break; sleep 0.5; done
check "every worker owns 2 of the 6 file partitions, every linker 3 of the 6 instance partitions" spread

J1=$(submit "${JOB1_PATIENTS[@]}")
if wait_job "$J1" 120; then ok "job 1 ($N1 files) completed with 3 workers"; else bad "job 1 state '$(job_field "$J1" state)'"; fi
did_work=1
for i in 1 2 3; do
    n=$(metric "$RA" worker "$i" metadb_worker_files_extracted_total)
    echo "  worker-$i extracted $n files"
    [ "${n:-0}" -gt 0 ] || did_work=0
done
[ $did_work = 1 ] && ok "every worker extracted files of job 1" || bad "a worker extracted nothing"
done1=$(job_field "$J1" files_done)
[ "$done1" = "$N1" ] && ok "job 1 files_done = $N1" || bad "job 1 files_done '$done1', want $N1"

# Freeze worker 3, run job 2: its partitions stall mid-job.
VICTIM_PID=$(cat "$RA/worker-3.pid")
kill -STOP "$VICTIM_PID"
J2=$(submit "${JOB2_PATIENTS[@]}")
stalled=0
for _ in $(seq 1 60); do
    d=$(job_field "$J2" files_done) t=$(job_field "$J2" files_total)
    if [ -n "$t" ] && [ "$t" = "$N2" ] && [ "${d:-0}" -gt 0 ]; then
        sleep 1
        [ "$(job_field "$J2" files_done)" = "$d" ] && [ "$d" -lt "$N2" ] && { stalled=1; break; }
    fi
    sleep 0.5
done
lagv=$(mdb lag --group "$A.workers" --json 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin); print(sum(e["total_lag"] for e in d["groups"]))' 2>/dev/null)
if [ $stalled = 1 ] && [ "${lagv:-0}" -gt 0 ]; then
    ok "job 2 stalled mid-job at $(job_field "$J2" files_done)/$N2 files with worker-3 frozen (worker lag $lagv)"
else
    bad "job 2 did not stall as expected (done $(job_field "$J2" files_done)/$N2, lag '$lagv', state $(job_field "$J2" state))"
fi

# Kill it: rebalance, the survivors take its partitions and finish the job.
bash "$SCALE" kill-one worker --index 3 --run-dir "$RA" >"$TMP/kill.log" 2>&1 || bad "kill-one failed: $(cat "$TMP/kill.log")"
kill -0 "$VICTIM_PID" 2>/dev/null && bad "worker-3 still alive after kill-one" || ok "worker-3 killed with SIGKILL mid-job"
rebalanced() { # the survivors own all 6 partitions, both in Kafka's view and in their own gauges
    [ $(($(metric "$RA" worker 1 metadb_consumer_assigned_partitions) + $(metric "$RA" worker 2 metadb_consumer_assigned_partitions))) = 6 ] &&
        mdb lag --group "$A.workers" --json 2>/dev/null | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
owners = {p["client_id"] for e in d["groups"] for p in e["partitions"]}
sys.exit(0 if owners == {"metadb-worker-1", "metadb-worker-2"} else 1)'
}
for _ in $(seq 1 90); do rebalanced && break; sleep 0.5; done
check "the 2 surviving workers own all 6 partitions after the rebalance" rebalanced
if wait_job "$J2" 120; then ok "job 2 ($N2 files) completed after the rebalance"; else bad "job 2 state '$(job_field "$J2" state)'"; fi
d2=$(job_field "$J2" files_done) f2=$(job_field "$J2" files_failed) l2=$(job_field "$J2" instances_linked)
[ "$d2" = "$N2" ] && [ "$f2" = 0 ] && [ "$l2" = "$N2" ] && ok "job 2: $d2 done, 0 failed, $l2 instances linked: nothing lost" ||
    bad "job 2: done '$d2' failed '$f2' linked '$l2', want $N2/0/$N2"
# worker-3's last job-1 offsets may not have been committed when it froze:
# those tasks were redone by the survivors; job 1's counters must not move.
d1=$(job_field "$J1" files_done) l1=$(job_field "$J1" instances_linked) s1=$(job_field "$J1" state)
[ "$d1" = "$N1" ] && [ "$l1" = "$N1" ] && [ "$s1" = completed ] && ok "job 1 still exactly $N1 done / $N1 linked after the redelivery" ||
    bad "job 1 after the rebalance: state '$s1' done '$d1' linked '$l1', want completed/$N1/$N1"
# offsets are committed up to a second after the work is durable
for _ in $(seq 1 30); do
    lag_after=$(mdb lag --group "$A.workers" --group "$A.linkers" --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["total_lag"])')
    [ "$lag_after" = 0 ] && break
    sleep 0.5
done
[ "$lag_after" = 0 ] && ok "worker and linker lag back to 0" || bad "lag after the job: '$lag_after'"

# ------------------------------------------------------------------ single-worker run
RB=$TMP/run-b
deploy "$B" 1 1 "$RB"
K1=$(submit "${JOB1_PATIENTS[@]}")
wait_job "$K1" 120 || bad "single-worker job 1 state '$(job_field "$K1" state)'"
K2=$(submit "${JOB2_PATIENTS[@]}")
if wait_job "$K2" 120; then ok "single-worker deployment completed both jobs"; else bad "single-worker job 2 state '$(job_field "$K2" state)'"; fi

# ------------------------------------------------------------------ compare
ops_use "$A"; mdb dump >"$TMP/dump-a.txt" 2>"$TMP/dump-a.err" || bad "metadb dump ($A) failed: $(tail -2 "$TMP/dump-a.err")"
ops_use "$B"; mdb dump >"$TMP/dump-b.txt" 2>"$TMP/dump-b.err" || bad "metadb dump ($B) failed: $(tail -2 "$TMP/dump-b.err")"
if [ -s "$TMP/dump-a.txt" ] && cmp -s "$TMP/dump-a.txt" "$TMP/dump-b.txt"; then
    ok "canonical dumps identical ($(wc -l <"$TMP/dump-a.txt") lines, $(wc -c <"$TMP/dump-a.txt") bytes)"
else
    bad "canonical dumps differ: $(diff "$TMP/dump-a.txt" "$TMP/dump-b.txt" | head -5)"
fi
# Both hold exactly the manifest's instances.
for t in "$A" "$B"; do
    got=$("$PY" -c '
import json, sys, pymongo
m = json.load(open(sys.argv[1]))
db = pymongo.MongoClient(sys.argv[2], serverSelectionTimeoutMS=5000)[sys.argv[3]]
want = {i["sop_uid"] for i in m["instances"]}
have = {d["_id"] for d in db.instances.find({}, {"_id": 1})}
print("ok" if have == want else "missing %d, extra %d" % (len(want - have), len(have - want)))' \
        "$TMP/archive/manifest.json" "$MONGO" "$t" 2>&1)
    [ "$got" = ok ] && ok "$t holds exactly the $FILES instances of the manifest" || bad "$t instances: $got"
done

finish
