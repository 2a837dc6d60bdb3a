#!/usr/bin/env bash
# tests/run.sh — THE test command of metadb (CI's .ci/run calls exactly this).
#
#   1. deploy/install.sh --with-tests (cached: a no-op on a ready machine)
#   2. builds build/ (-DMDB_WERROR=ON), build-asan/ (-DMDB_SANITIZE=ON) and, when
#      clang is present, build-fuzz/ (clang, -DMDB_FUZZ=ON -DMDB_SANITIZE=ON)
#   3. starts the local stack (deploy/stack.sh) if it is not running
#   4. ctest in build/ (every label: unit, integration, e2e, browser),
#      ctest -L 'unit|integration' in build-asan/, ctest -L fuzz in build-fuzz/
#   5. stops what it started (the machine is left as it was found), prints a
#      summary and a last line "N passed, N failed"; exits non-zero on any failure
#      (a build that fails counts as one failure).
#
# Environment: MDB_BUILD_PREFIX (default <source>/build: build dirs are PREFIX,
# PREFIX-asan, PREFIX-fuzz), MDB_JOBS (make/ctest parallelism, default 2),
# MDB_SKIP_FUZZ=1, MDB_SKIP_ASAN=1, MDB_CTEST_ARGS (extra ctest arguments,
# e.g. "-R api"), METADB_HOME, plus everything deploy/stack.sh reads.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${MDB_BUILD_PREFIX:-$SRC/build}
JOBS=${MDB_JOBS:-2}
export METADB_HOME=${METADB_HOME:-$HOME/.metadb}
CACHE=${METADB_DEPLOY_CACHE:-$METADB_HOME/cache}
read -r -a CTEST_EXTRA <<<"${MDB_CTEST_ARGS:-}"
T_START=$SECONDS

TOTAL_PASS=0 TOTAL_FAIL=0
SUMMARY=()
note() { printf '\n==== %s\n' "$*"; }
record() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }

# ---------------------------------------------------------------- install
note "install (deploy/install.sh)"
if ! bash "$SRC/deploy/install.sh" --with-tests; then
    echo "run: deploy/install.sh failed; nothing can be built or tested"
    echo "0 passed, 1 failed"
    exit 1
fi
export NODE_PATH=$CACHE/node/node_modules${NODE_PATH:+:$NODE_PATH}
export PATH=$CACHE/bin:$PATH
export CTEST_OUTPUT_ON_FAILURE=1
# libmongoc creates /dev/shm/mongoc-PID for its debugging counters when it is
# loaded, and only a clean exit removes it. The suite kills daemons with -9,
# so files stay behind; with PIDs wrapping at 32,768, a later process whose
# PID matches one warns "Falling back to malloc for counters" on stderr
# (CI: in the middle of `metadb lag --json` output). No counters, then, and
# the files of dead processes go.
export MONGOC_DISABLE_SHM=1
for f in /dev/shm/mongoc-*; do
    [ -e "$f" ] || continue
    pid=${f##*/mongoc-}
    [ -d "/proc/$pid" ] || rm -f "$f" 2>/dev/null
done

# ---------------------------------------------------------------- builds
# build DIR NAME CMAKE-ARGS...: configure + make; records a failure when it breaks.
build() {
    local dir=$1 name=$2 t0=$SECONDS; shift 2
    note "build $name ($dir)"
    mkdir -p "$dir"
    if cmake -S "$SRC" -B "$dir" "$@" >"$dir/metadb-configure.log" 2>&1 &&
       make -C "$dir" -j"$JOBS" --no-print-directory >"$dir/metadb-build.log" 2>&1; then
        echo "ok ($((SECONDS - t0))s)"
        record "build $name" "ok ($((SECONDS - t0))s)"
        return 0
    fi
    tail -n 30 "$dir/metadb-configure.log"
    [ -f "$dir/metadb-build.log" ] && grep -E -B2 -A6 'error|Error' "$dir/metadb-build.log" | head -n 80
    record "build $name" "FAILED ($((SECONDS - t0))s, logs in $dir/metadb-*.log)"
    TOTAL_FAIL=$((TOTAL_FAIL + 1))
    return 1
}

mkdir -p "$(dirname "$PREFIX")"
BUILD_OK=0 ASAN_OK=0 FUZZ_OK=0
build "$PREFIX" "build/" -DMDB_WERROR=ON && BUILD_OK=1
if [ "${MDB_SKIP_ASAN:-0}" != 1 ]; then
    build "$PREFIX-asan" "build-asan/" -DMDB_SANITIZE=ON && ASAN_OK=1
else
    record "build build-asan/" "skipped (MDB_SKIP_ASAN=1)"
fi
if [ "${MDB_SKIP_FUZZ:-0}" != 1 ] && command -v clang >/dev/null && command -v clang++ >/dev/null; then
    CC=clang CXX=clang++ build "$PREFIX-fuzz" "build-fuzz/" -DMDB_FUZZ=ON -DMDB_SANITIZE=ON && FUZZ_OK=1
else
    record "build build-fuzz/" "skipped (no clang or MDB_SKIP_FUZZ=1)"
fi

# ---------------------------------------------------------------- stack
STACK=$SRC/deploy/stack.sh
BEFORE=$(bash "$STACK" running 2>/dev/null || true)
stop_started() {
    local svc
    for svc in kafka database; do
        if ! grep -qx "$svc" <<<"$BEFORE" && grep -qx "$svc" <<<"$(bash "$STACK" running 2>/dev/null)"; then
            note "stopping $svc (this run started it)"
            bash "$STACK" stop --only "$svc" || true
        fi
    done
}
trap stop_started EXIT
trap 'echo "run: interrupted"; exit 130' INT TERM
note "stack (deploy/stack.sh start; running before: ${BEFORE:-nothing})"
if ! bash "$STACK" start; then
    echo "run: the local stack did not come up; integration tests cannot run"
    record "stack" "FAILED to start"
    TOTAL_FAIL=$((TOTAL_FAIL + 1))
fi

# The local database needs credentials: every client of the tests (daemons, CLI,
# pymongo, kcat-side scripts) takes the read-write user's URI from METADB_MONGO_URI
# (stack.sh still treats that URI as its own, not as an external database), and
# every metadb-api the tests start reads as the read-only user (api.mongo_uri).
DBDIR=$METADB_HOME/database
if [ -z "${METADB_MONGO_URI:-}" ] && [ -s "$DBDIR/metadb.uri" ]; then
    METADB_MONGO_URI=$(cat "$DBDIR/metadb.uri")
    export METADB_MONGO_URI
fi
if [ -z "${METADB_API_MONGO_URI:-}" ] && [ -s "$DBDIR/metadb_ro.uri" ]; then
    METADB_API_MONGO_URI=$(cat "$DBDIR/metadb_ro.uri")
    export METADB_API_MONGO_URI
fi
[ -n "${METADB_MONGO_URI:-}" ] && export MDB_TEST_MONGO_URI=${MDB_TEST_MONGO_URI:-$METADB_MONGO_URI}
[ -n "${METADB_API_MONGO_URI:-}" ] && export MDB_TEST_MONGO_RO_URI=${MDB_TEST_MONGO_RO_URI:-$METADB_API_MONGO_URI}

# ---------------------------------------------------------------- tests
# run_ctest NAME DIR CTEST-ARGS...: runs ctest, adds its counts to the totals.
run_ctest() {
    local name=$1 dir=$2 t0=$SECONDS out rc pass fail total; shift 2
    note "ctest $name"
    out=$(mktemp)
    (cd "$dir" && ctest --output-on-failure -j"$JOBS" "$@" "${CTEST_EXTRA[@]}") 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    if grep -q 'No tests were found' "$out"; then
        pass=0 fail=0 total=0
    else
        read -r fail total < <(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\1 \2/p' "$out" | tail -n1)
        if [ -z "${total:-}" ]; then
            # ctest died before its summary (timeout of the whole run, crash): one failure.
            pass=0 fail=1 total=1
        else
            pass=$((total - fail))
        fi
    fi
    if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
    rm -f "$out"
    TOTAL_PASS=$((TOTAL_PASS + pass))
    TOTAL_FAIL=$((TOTAL_FAIL + fail))
    record "ctest $name" "$pass passed, $fail failed ($((SECONDS - t0))s)"
}

if [ $BUILD_OK = 1 ]; then run_ctest "build/ (all labels)" "$PREFIX"
else record "ctest build/" "not run (build failed)"; fi
if [ $ASAN_OK = 1 ]; then
    # Once (in build/) is enough for the deploy scripts' tests and the format check (they run no
    # metadb binary) and for test_valgrind (valgrind cannot run ASan binaries:
    # in build-asan/ it would run build/'s binaries a second time).
    run_ctest "build-asan/ (unit|integration)" "$PREFIX-asan" -L 'unit|integration' \
        -E '^(integration/(test_stack|test_deploy_manifests|test_valgrind)|unit/test_format)$'
fi
if [ $FUZZ_OK = 1 ]; then run_ctest "build-fuzz/ (fuzz)" "$PREFIX-fuzz" -L fuzz; fi

stop_started
trap - EXIT

# ---------------------------------------------------------------- summary
note "summary ($((SECONDS - T_START))s)"
printf '%s\n' "${SUMMARY[@]}"
echo
echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" = 0 ]
