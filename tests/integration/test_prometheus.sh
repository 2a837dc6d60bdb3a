#!/usr/bin/env bash
# tests/integration/test_prometheus.sh — a real scraper finds every metric series
# operators rely on. Starts one producer, one worker, one linker and the API
# with deploy/scale.sh (distinct metrics ports, isolated topics/groups/database),
# runs Debian's `prometheus` in a temp dir with a generated configuration that
# scrapes them (the scaled daemons through the file_sd targets file scale.sh
# writes, the API statically), runs a job over a generated archive plus one
# non-DICOM file, and then asks Prometheus' HTTP API for each expected series:
# messages consumed/produced, files extracted and failed by reason, batch-size
# and write-latency histograms, instances linked, process RSS, consumer lag,
# and checks the counters against the job (60 files extracted, 1 failed as
# not_dicom, 60 instances linked) and every target is up. Finally GET /api/lag
# must serve exactly what `metadb lag --json` prints.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ops_lib.sh"

command -v prometheus >/dev/null || die "prometheus not installed (apt-get install prometheus)"
ops_init prom
FILES=60
ops_archive 3 $FILES 11
printf 'this is not a DICOM file\n' >"$TMP/archive/not-dicom.dcm"
mdb topics --partitions 3 >/dev/null 2>&1 || die "metadb topics failed"

read -r PROM_PORT API_PORT PRODUCER_PORT < <(free_ports 3)
WBASE=$(free_port_block 1) LBASE=$(free_port_block 1)
[ "$WBASE" != "$LBASE" ] || LBASE=$(free_port_block 1)
RUN=$TMP/run
OPS_RUNDIRS+=("$RUN")
bash "$SCALE" start --workers 1 --linkers 1 --producer --api --run-dir "$RUN" --bin-dir "$BUILD" \
    --worker-port-base "$WBASE" --linker-port-base "$LBASE" --producer-port "$PRODUCER_PORT" \
    -- "${CFG[@]}" --api.listen="127.0.0.1:$API_PORT" >"$TMP/scale.log" 2>&1 ||
    die "scale.sh start failed: $(tail -5 "$TMP/scale.log")"
ok "producer, worker, linker and api started (metrics :$PRODUCER_PORT :$WBASE :$LBASE :$API_PORT)"

mkdir -p "$TMP/prom"
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 5s
scrape_configs:
  - job_name: metadb-scaled
    file_sd_configs:
      - files: ["$RUN/prometheus-targets.json"]
        refresh_interval: 1s
  - job_name: metadb-api
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:$API_PORT"]
EOF
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
OPS_PIDS+=($!)
PROM=http://127.0.0.1:$PROM_PORT
for _ in $(seq 1 60); do curl -sf "$PROM/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
curl -sf "$PROM/-/ready" >/dev/null 2>&1 || die "prometheus not ready: $(tail -5 "$TMP/prometheus.log")"
ok "prometheus running on $PROM"

# The job: every patient of the archive plus the non-DICOM file.
# shellcheck disable=SC2046
JOB=$(mdb submit --researcher ops --collection LIDC --patient $(ops_patients) --path "$TMP/archive/not-dicom.dcm" \
    --wait --timeout 180 2>"$TMP/submit.err" | head -n1)
state=$(job_field "$JOB" state)
[ "$state" = completed_with_errors ] && ok "job $JOB completed_with_errors (the non-DICOM file)" ||
    bad "job '$JOB' state '$state' (want completed_with_errors): $(tail -3 "$TMP/submit.err")"
for _ in 1 2 3; do curl -s -m 5 "http://127.0.0.1:$API_PORT/api/lag" >/dev/null; done

# query EXPR -> JSON result vector of an instant query
query() { curl -s -m 5 --data-urlencode "query=$1" "$PROM/api/v1/query"; }
# value EXPR -> the single value of a scalar-like query ("" when empty)
value() {
    query "$1" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if len(r) == 1 else "")' 2>/dev/null
}

# Wait until the scraped counters reflect the whole job.
EXTRACTED='sum(metadb_worker_files_extracted_total)'
FAILED='sum(metadb_worker_files_failed_total{reason="not_dicom"})'
LINKED='sum(metadb_linker_instances_linked_total)'
for _ in $(seq 1 60); do
    [ "$(value "$EXTRACTED")" = "$FILES" ] && [ "$(value "$FAILED")" = 1 ] && [ "$(value "$LINKED")" = "$FILES" ] && break
    sleep 1
done
[ "$(value "$EXTRACTED")" = "$FILES" ] && ok "scraped files extracted = $FILES" ||
    bad "scraped files extracted = '$(value "$EXTRACTED")', want $FILES"
[ "$(value "$FAILED")" = 1 ] && ok "scraped files failed{reason=not_dicom} = 1" ||
    bad "scraped files failed{reason=not_dicom} = '$(value "$FAILED")', want 1"
[ "$(value "$LINKED")" = "$FILES" ] && ok "scraped instances linked = $FILES" ||
    bad "scraped instances linked = '$(value "$LINKED")', want $FILES"

# Every target up (a target is "unknown" until its first scrape: wait for it,
# a slow sanitizer build can take a few scrape intervals).
want="metadb-api=up metadb-linker=up metadb-producer=up metadb-worker=up"
for _ in $(seq 1 30); do
    targets=$(curl -s -m 5 "$PROM/api/v1/targets" | "$PY" -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(" ".join(sorted("%s=%s" % (x["labels"].get("job"), x["health"]) for x in t)))')
    [ "$targets" = "$want" ] && break
    sleep 1
done
[ "$targets" = "$want" ] && ok "all four targets scraped and up" || bad "targets: '$targets', want '$want'"

# The lag gauges appear at their first refresh after the partitions were
# assigned (every 5 s): wait until every consuming daemon has them.
for _ in $(seq 1 30); do
    [ "$(value "count(count by (job) (metadb_consumer_lag{job=~\"metadb-(worker|linker|producer)\"}))")" = 3 ] && break
    sleep 1
done

# Every expected series, per daemon (job label).
declare -A SERIES=(
    [metadb-producer]="metadb_producer_jobs_received_total metadb_producer_files_published_total
        metadb_consumer_lag metadb_consumer_assigned_partitions
        process_resident_memory_bytes metadb_up"
    [metadb-worker]="metadb_worker_messages_consumed_total metadb_worker_messages_produced_total
        metadb_worker_files_extracted_total metadb_worker_files_failed_total metadb_worker_extract_seconds_bucket
        metadb_worker_extract_seconds_count metadb_consumer_lag metadb_consumer_assigned_partitions
        process_resident_memory_bytes metadb_up"
    [metadb-linker]="metadb_linker_events_total metadb_linker_dlq_records_total metadb_linker_instances_linked_total
        metadb_linker_batch_size_bucket metadb_linker_batch_size_count metadb_linker_write_seconds_bucket
        metadb_linker_write_seconds_count metadb_consumer_lag metadb_consumer_assigned_partitions
        process_resident_memory_bytes metadb_up"
    [metadb-api]="metadb_api_requests_total metadb_api_request_duration_seconds_bucket process_resident_memory_bytes metadb_up"
)
for job in metadb-producer metadb-worker metadb-linker metadb-api; do
    missing=()
    for s in ${SERIES[$job]}; do
        n=$(query "count($s{job=\"$job\"})" | "$PY" -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else 0)' 2>/dev/null)
        [ "${n:-0}" != 0 ] || missing+=("$s")
    done
    [ ${#missing[@]} -eq 0 ] && ok "$job: all $(wc -w <<<"${SERIES[$job]}") series scraped" ||
        bad "$job: missing series: ${missing[*]}"
done

# Lag series carry their partition labels, one per partition of each topic consumed.
n=$(value "count(metadb_consumer_lag{job=\"metadb-worker\",topic=\"$TAG.files\"})")
[ "$n" = 3 ] && ok "worker exports metadb_consumer_lag for its 3 partitions" || bad "worker lag series: '$n', want 3"
# The gauges refresh every 5 s and Prometheus scrapes every second: allow both.
for _ in $(seq 1 30); do
    lag=$(value "sum(metadb_consumer_lag{job=~\"metadb-(worker|linker|producer)\"})")
    [ "$lag" = 0 ] && break
    sleep 1
done
[ "$lag" = 0 ] && ok "consumer lag scraped as 0 after the job" || bad "scraped consumer lag '$lag' 30 s after the job"
rss=$(value 'min(process_resident_memory_bytes)')
[ -n "$rss" ] && "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 1e6 else 1)' "$rss" &&
    ok "process RSS scraped (smallest $(( ${rss%.*} / 1048576 )) MiB)" || bad "process RSS: '$rss'"
# Failures by reason carry the reason label.
reasons=$(query 'metadb_worker_files_failed_total' | "$PY" -c '
import json, sys
print(" ".join(sorted(r["metric"].get("reason", "?") for r in json.load(sys.stdin)["data"]["result"])))')
[[ " $reasons " == *" not_dicom "* ]] && ok "failures are labelled by reason ($reasons)" || bad "failure reasons: '$reasons'"

# The API serves the same lag numbers as `metadb lag` (the pipeline is idle
# now; the API caches an answer for 1 s, so allow a retry).
same=0
for _ in 1 2 3 4 5; do
curl -s -m 10 "http://127.0.0.1:$API_PORT/api/lag" >"$TMP/api_lag.json"
mdb lag --json >"$TMP/cli_lag.json" 2>"$TMP/cli_lag.err"
cmp_out=$("$PY" - "$TMP/api_lag.json" "$TMP/cli_lag.json" "$TAG" <<'PYEOF'
import json, sys
def rows(path):
    d = json.load(open(path))
    return {(e["group"], e["topic"], p["partition"]): (p["committed"], p["high_watermark"], p["lag"])
            for e in d["groups"] for p in e["partitions"]}, d["total_lag"]
api, api_total = rows(sys.argv[1]); cli, cli_total = rows(sys.argv[2]); tag = sys.argv[3]
groups = {k[0] for k in cli}
want = {tag + ".workers", tag + ".linkers", tag + ".producers", tag + ".fetchers"}
if groups != want: print("groups %s, want %s" % (sorted(groups), sorted(want))); sys.exit(1)
if api != cli or api_total != cli_total: print("api %s vs cli %s" % (api, cli)); sys.exit(1)
committed = sum(c or 0 for c, _, _ in cli.values())
print("%d partitions, %d committed offsets, total lag %d" % (len(cli), committed, cli_total))
PYEOF
) && { same=1; break; }
sleep 1.5
done
[ $same = 1 ] && ok "GET /api/lag = metadb lag --json ($cmp_out)" || bad "/api/lag vs metadb lag: $cmp_out $(head -c 300 "$TMP/cli_lag.err")"

finish
