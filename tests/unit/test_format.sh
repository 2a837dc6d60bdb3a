#!/usr/bin/env bash
# The layout of every C and C++ file git tracks is the one .clang-format
# describes (STYLE.md: "A .clang-format is checked in and applied"). Fails
# naming the files that drift; fix with
#   git ls-files '*.c' '*.h' '*.cpp' | xargs clang-format -i
# clang-format comes from deploy/install.sh --with-tests (Debian 12: 14.0).
set -uo pipefail
SRC=${MDB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
cd "$SRC" || exit 1
command -v clang-format >/dev/null || { echo "FAIL - clang-format not installed (deploy/install.sh --with-tests)"; exit 1; }
[ -f .clang-format ] || { echo "FAIL - no .clang-format in $SRC"; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp')
else
    mapfile -t files < <(find . -path ./build\* -prune -o \( -name '*.c' -o -name '*.h' -o -name '*.cpp' \) -print)
fi
bad=()
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    clang-format --dry-run -Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
echo "# $(clang-format --version | head -n1); ${#files[@]} files"
if [ ${#bad[@]} -gt 0 ]; then
    printf 'FAIL - not formatted: %s\n' "${bad[@]}"
    clang-format --dry-run --style=file "${bad[0]}" 2>&1 | head -n 20
    echo "0 passed, 1 failed"
    exit 1
fi
echo "ok   - every file is laid out as .clang-format says"
echo "1 passed, 0 failed"
