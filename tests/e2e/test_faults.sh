#!/usr/bin/env bash
# tests/e2e/test_faults.sh — the fault-injection suite, reduced form by default:
# one run per fault on ~100 files (MDB_FAULT_RUNS=N runs each for the longer
# suite, MDB_FAULT_FILES for a bigger archive, MDB_FAULTS=a,b to pick faults).
# During a running job, in turn: kill -9 the producer, a worker, the linker;
# restart the Kafka broker; restart the database; pause a worker past the
# session timeout. All of it on an isolated stack (private METADB_HOME and
# ports through deploy/stack.sh); the shared stack is never touched. Prints
# the table fault / runs / lost / duplicated / recovered-in seconds and fails
# unless every run ends with the clean run's canonical dump and exact job
# counters. The driver is tests/faults/faults.py; every process it starts
# (daemons, the isolated Kafka and database) is stopped on exit, also on
# SIGINT/SIGTERM (its own handlers, and the trap below for the stack).
set -uo pipefail
SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export MDB_SOURCE_DIR=$SRC
export MDB_BUILD_DIR=${MDB_BUILD_DIR:-$SRC/build}
export METADB_DEPLOY_CACHE=${METADB_DEPLOY_CACHE:-${METADB_HOME:-$HOME/.metadb}/cache}
/usr/bin/python3 "$SRC/tests/faults/faults.py" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT TERM
wait "$child"
