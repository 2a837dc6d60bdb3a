#!/usr/bin/env bash
# Extraction throughput per core, one command:
#   bench/bench_extract.sh [--files N] [--dir DIR] [--build BUILD_DIR] [--rounds R] [--pydicom-files M]
#
# 1. Generates (once; reused while its manifest matches) a synthetic archive of
#    N full-size files (512x512 16-bit CT + CR/DX, default N=5000) with
#    tests/gen/gen_archive.py into DIR (default /tmp/mdb_bench_archive_N).
# 2. Times, single-threaded and with a warm page cache, over the same files:
#      metadb   open + header read/parse + typed extraction of the default feature
#               sets (conf/) + event JSON encoding + close   (bench/bench_extract.c)
#      pydicom  dcmread(stop_before_pixels=True) + getattr over the same three
#               feature lists                                (bench/bench_pydicom.py)
#      bare     open + read(4 KiB) + close                   (bench/bench_extract.c)
#      io       open + fstat + pread(8 KiB) + close: the system calls the reader makes,
#               without parsing (shows how much of metadb's cost is CPU work)
#    Rates are files per CPU-second of the measuring thread ("per core"), so other
#    load on a shared machine does not distort them; wall times are shown too.
# 3. Prints the ratios: metadb / pydicom (goal >= 10x) and metadb cost / bare cost
#    (goal <= 3x).
# Needs the build (cmake ... && make bench_extract) and Debian's /usr/bin/python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
files=5000
dir=""
build=${MDB_BUILD_DIR:-}
rounds=3
pyfiles=""
while (( $# )); do
    case $1 in
        --files) files=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --build) build=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --pydicom-files) pyfiles=$2; shift 2 ;;
        -h|--help) sed -n 2,20p "$0"; exit 0 ;;
        *) echo "bench_extract: unknown argument $1" >&2; exit 2 ;;
    esac
done
dir=${dir:-/tmp/mdb_bench_archive_$files}
if [[ -z $build ]]; then
    for b in "$src"/build "$src"/build-*; do [[ -x $b/bench/bench_extract ]] && { build=$b; break; }; done
fi
helper=$build/bench/bench_extract
[[ -x $helper ]] || { echo "bench_extract: $helper not built (make bench_extract in your build dir, or --build)" >&2; exit 2; }
(( files >= 1 )) || { echo "bench_extract: --files must be >= 1" >&2; exit 2; }

if [[ ! -f $dir/manifest.json ]] || ! /usr/bin/python3 -c "
import json,sys; m=json.load(open('$dir/manifest.json'))
sys.exit(0 if m['counts']['instances']==$files and not m['small'] else 1)"; then
    echo "generating $files full-size files into $dir ..."
    rm -rf "$dir"
    /usr/bin/python3 "$src/tests/gen/gen_archive.py" --out "$dir" --files "$files" --seed 2024
fi
list=$(mktemp /tmp/mdb_bench_list.XXXXXX)
trap 'rm -f "$list"' EXIT
/usr/bin/python3 -c "
import json; m=json.load(open('$dir/manifest.json'))
print('\n'.join(i['path'] for i in m['instances']))" > "$list"
n=$(wc -l < "$list")
bytes=$(/usr/bin/python3 -c "
import json,os; m=json.load(open('$dir/manifest.json'))
print(sum(os.path.getsize(i['path']) for i in m['instances'][:50])//50)")
echo "archive: $n DICOM files (~$((bytes / 1024)) KiB each) in $dir; $rounds timed pass(es) after a warm-up"

read -r _ _ m_wall m_cpu m_rate m_fail < <("$helper" extract "$list" "$src/conf" "$rounds")
read -r _ _ b_wall b_cpu b_rate b_fail < <("$helper" bare "$list" "$rounds")
read -r _ _ i_wall i_cpu i_rate i_fail < <("$helper" io "$list" "$rounds")
read -r _ p_n p_wall p_cpu p_rate p_fail < <(/usr/bin/python3 "$here/bench_pydicom.py" "$list" "$src/conf" 1 ${pyfiles:-})

printf '%-8s %8s %10s %10s %14s %10s %9s\n' mode files wall_s cpu_s files/cpu-s us/file failures
printf '%-8s %8d %10.3f %10.3f %14.0f %10.1f %9d\n' metadb "$n" "$m_wall" "$m_cpu" "$m_rate" \
    "$(echo "1000000 / $m_rate" | bc -l)" "$m_fail"
printf '%-8s %8d %10.3f %10.3f %14.0f %10.1f %9d\n' pydicom "$p_n" "$p_wall" "$p_cpu" "$p_rate" \
    "$(echo "1000000 / $p_rate" | bc -l)" "$p_fail"
printf '%-8s %8d %10.3f %10.3f %14.0f %10.1f %9d\n' bare "$n" "$b_wall" "$b_cpu" "$b_rate" \
    "$(echo "1000000 / $b_rate" | bc -l)" "$b_fail"
printf '%-8s %8d %10.3f %10.3f %14.0f %10.1f %9d   (the reader'"'"'s syscalls alone: open+fstat+pread 8KiB+close)\n' \
    io "$n" "$i_wall" "$i_cpu" "$i_rate" "$(echo "1000000 / $i_rate" | bc -l)" "$i_fail"
speedup=$(echo "$m_rate / $p_rate" | bc -l)
overhead=$(echo "$b_rate / $m_rate" | bc -l)
printf '\nmetadb vs pydicom: %.1fx faster per core (goal >= 10x: %s)\n' "$speedup" \
    "$( (( $(echo "$speedup >= 10" | bc) )) && echo met || echo NOT met)"
printf 'metadb vs bare open+read(4KiB)+close: %.2fx the bare cost (goal <= 3x: %s)\n' "$overhead" \
    "$( (( $(echo "$overhead <= 3" | bc) )) && echo met || echo NOT met)"
(( m_fail == 0 && p_fail == 0 && b_fail == 0 )) || { echo "bench_extract: some files failed" >&2; exit 1; }
