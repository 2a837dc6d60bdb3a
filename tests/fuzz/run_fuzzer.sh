#!/usr/bin/env bash
# Run a libFuzzer target for a bounded time on a scratch copy of its seed
# corpus (the checked-in corpus is never modified). Fails if the fuzzer finds
# a crash, leak or timeout; the offending input is kept and its path printed.
# usage: run_fuzzer.sh FUZZER_BINARY CORPUS_DIR   (MDB_FUZZ_SECONDS, default 30)
set -euo pipefail
fuzzer=${1:?usage: run_fuzzer.sh FUZZER CORPUS_DIR}
corpus=${2:?usage: run_fuzzer.sh FUZZER CORPUS_DIR}
seconds=${MDB_FUZZ_SECONDS:-30}
[[ -x $fuzzer ]] || { echo "run_fuzzer: $fuzzer is not an executable" >&2; exit 2; }
[[ -d $corpus ]] || { echo "run_fuzzer: corpus $corpus is not a directory" >&2; exit 2; }

name=$(basename "$fuzzer")
work=$(mktemp -d "${TMPDIR:-/tmp}/${name}.XXXXXX")
artifacts=${MDB_FUZZ_ARTIFACTS:-${MDB_BUILD_DIR:-$PWD}/fuzz-artifacts/$name}
mkdir -p "$artifacts"
cp -a "$corpus"/. "$work"/
trap 'rm -rf "$work"' EXIT

echo "run_fuzzer: $name for ${seconds}s on $(ls "$work" | wc -l) seed(s); crashes go to $artifacts/"
set +e
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" 2>&1 | tail -n 40
rc=${PIPESTATUS[0]}
set -e
if (( rc != 0 )); then
    echo "run_fuzzer: $name FAILED (exit $rc); reproducer(s) kept:" >&2
    ls -l "$artifacts" >&2 || true
    exit 1
fi
echo "run_fuzzer: $name ran ${seconds}s without a finding"
