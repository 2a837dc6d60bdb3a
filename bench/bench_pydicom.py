#!/usr/bin/python3
"""The reference Python approach, timed like bench_extract: for each file,
pydicom.dcmread(path, stop_before_pixels=True), then getattr(ds, keyword,
None) for every entry of the three feature lists. One untimed warm-up pass,
then ROUNDS timed passes; prints "pydicom files wall_s cpu_s files_per_cpu_s
failures" for the best pass.

usage: /usr/bin/python3 bench/bench_pydicom.py LIST FEATURES_DIR [ROUNDS] [MAX_FILES]
"""
import os
import sys
import time
import warnings

import pydicom

warnings.simplefilter("ignore")


def keywords(features_dir):
    out = []
    for name in ("StudyFeatures.txt", "SeriesFeatures.txt", "InstanceFeatures.txt"):
        for line in open(os.path.join(features_dir, name)):
            kw = line.split("#", 1)[0].strip()
            if kw:
                out.append(kw)
    return out


def one_pass(paths, kws):
    failures = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            for kw in kws:
                getattr(ds, kw, None)
        except Exception:
            failures += 1
    return time.perf_counter() - w0, time.process_time() - c0, failures


def main():
    paths = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
    kws = keywords(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if len(sys.argv) > 4:
        paths = paths[:int(sys.argv[4])]
    one_pass(paths[:200], kws)  # warm-up (page cache, imports, dictionaries)
    best = None
    for _ in range(rounds):
        r = one_pass(paths, kws)
        if best is None or r[1] < best[1]:
            best = r
    wall, cpu, failures = best
    print("pydicom %d %.6f %.6f %.1f %d" % (len(paths), wall, cpu, len(paths) / cpu if cpu else 0, failures))


if __name__ == "__main__":
    main()
