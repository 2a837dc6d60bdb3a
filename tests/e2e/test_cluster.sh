#!/usr/bin/env bash
# tests/e2e/test_cluster.sh — the cluster fault suite (issue 17): a replicated
# 3-broker Kafka cluster (deploy/stack.sh start --brokers 3: three KRaft JVMs,
# replication factor 3, min.insync.replicas 2) and 2 workers + 2 linkers as nodes
# in their own network namespaces (tests/faults/netns.py), during a running job of
# 2,000 files: kill -9 of the broker leading most instance partitions (restarted
# 30 s later); a second broker stopped while the first is down (writes refused,
# the job completes once a broker returns); a worker node cut off past the session
# timeout; a linker node cut in the middle of a bulk write; 500 ms on a linker's
# database link for the whole job. Prints the table fault / runs / lost /
# duplicated / recovered-in seconds / dump==clean and fails unless every run ends
# with the clean run's canonical dump and exact counters.
#
# Default (ctest, tests/run.sh): one run per fault. The full table:
#   MDB_CLUSTER_RUNS=3 tests/e2e/test_cluster.sh
# (MDB_CLUSTER_FILES, MDB_CLUSTER_FAULTS=a,b, MDB_CLUSTER_OPEN_DELAY_US tune it.)
# Needs root (network namespaces); exits 77 (skipped) otherwise. Everything it
# starts (daemons, the isolated brokers and database, namespaces, links) is
# removed on exit, also on SIGINT/SIGTERM.
set -uo pipefail
SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export MDB_SOURCE_DIR=$SRC
export MDB_BUILD_DIR=${MDB_BUILD_DIR:-$SRC/build}
export METADB_DEPLOY_CACHE=${METADB_DEPLOY_CACHE:-${METADB_HOME:-$HOME/.metadb}/cache}
/usr/bin/python3 "$SRC/tests/faults/cluster.py" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT TERM
wait "$child"
