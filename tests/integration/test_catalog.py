#!/usr/bin/python3
"""Integration test of the archive catalog (`metadb index`) against the live
local MongoDB.

A generated LIDC-IDRI-like archive is extended with the awkward cases of a
real archive: non-DICOM files (text, empty, garbage named .dcm, the XML
annotations), a directory mixing two series of two studies, a symlink to a
file inside the root (indexed), symlinks to a file and a directory outside
the root (refused), a symlink to a directory inside (not followed), a FIFO
(never opened). Then:
  1. index (under strace): counts are exact; the catalog (every file with its
     study/series/accession/patient) equals what is on disk; the mixed
     directory has one entry per series; nothing outside the root is opened;
     indexes on accession/patient/study/series exist;
  2. re-index with no change reads nothing and keeps the same catalog;
  3. add files (also in a new directory), remove a file, remove a series
     directory, touch a file and a directory, re-index: catalog == disk;
  4. a file rewritten in place (directory mtime unchanged) is invisible to the
     mtime check, and picked up by --verify; --full re-reads everything.
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import producer_support as ps  # noqa: E402


def disk_expectation(manifest):
    """path -> (study_uid, series_uid, accession, patient_id) from the generator's ground truth."""
    studies = {s["uid"]: s for s in manifest["studies"]}
    exp = {}
    for inst in manifest["instances"]:
        st = studies[inst["study_uid"]]
        exp[os.path.realpath(inst["path"])] = (inst["study_uid"], inst["series_uid"], st["accession"], st["patient_id"])
    return exp


def catalog_state(db):
    """path -> (study, series, accession, patient) as recorded in the catalog, plus duplicate paths."""
    got, dups = {}, []
    for d in db.catalog.find({}):
        for s in d.get("series", []):
            for f in s["files"]:
                p = os.path.join(d["dir"], f)
                if p in got:
                    dups.append(p)
                got[p] = (s["study_uid"], s["series_uid"], s["accession_number"], s["patient_id"])
    return got, dups


def index(env, *extra, strace_out=None):
    cmd = [ps.METADB] + env.config_flags() + ["index", "--json"] + list(extra)
    if strace_out:
        cmd = ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,creat,execve", "-o", strace_out] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env.env(traced=bool(strace_out)))
    if p.returncode != 0:
        raise RuntimeError("metadb index failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]), p.stderr


def compare(c, env, exp, what):
    got, dups = catalog_state(env.db)
    c.eq(dups, [], "%s: no file recorded twice" % what)
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    c.eq(missing, [], "%s: every DICOM file on disk is in the catalog" % what)
    c.eq(extra, [], "%s: the catalog holds nothing that is not on disk" % what)
    wrong = sorted(p for p in set(exp) & set(got) if exp[p] != got[p])
    c.eq(wrong[:5], [], "%s: study/series/accession/patient of every file" % what)
    return got


def main():
    c = ps.Checks("test_catalog")
    base = ps.tempdir("mdb_catalog_")
    root = os.path.join(base, "archive")
    outside = os.path.join(base, "outside-secret")
    env = None
    try:
        manifest = ps.generate_archive(root, patients=5, seed=41, extra=["--missing-accession", "0.3"])
        root = os.path.realpath(root)
        exp = disk_expectation(manifest)
        series_dirs = sorted({os.path.dirname(p) for p in exp})
        nondicom = len(manifest["xml_files"])

        # --- the awkward cases ---
        os.makedirs(outside)
        some = sorted(exp)
        shutil.copy(some[0], os.path.join(outside, "secret.dcm"))
        with open(os.path.join(root, "README.txt"), "w") as f:
            f.write("not DICOM\n")
        open(os.path.join(series_dirs[0], "empty.dcm"), "w").close()
        with open(os.path.join(series_dirs[1], "garbage.dcm"), "wb") as f:
            f.write(os.urandom(700))
        # A directory mixing two series of two different studies.
        by_series = {}
        for p, meta in exp.items():
            by_series.setdefault(meta[1], []).append(p)
        studies_seen, picked = set(), []
        for uid in sorted(by_series):
            st = exp[by_series[uid][0]][0]
            if st not in studies_seen:
                studies_seen.add(st)
                picked.append(sorted(by_series[uid])[:2])
            if len(picked) == 2:
                break
        mixed = os.path.join(root, "MIXED")
        os.makedirs(mixed)
        for group in picked:
            for i, src in enumerate(group):
                dst = os.path.join(mixed, "%s-%d.dcm" % (exp[src][1][-6:], i))
                shutil.copy(src, dst)
                exp[dst] = exp[src]
        # Symlinks: to a file inside (indexed under the link's name), to a file and a
        # directory outside (refused), to a directory inside (not followed).
        os.symlink(some[1], os.path.join(mixed, "link-inside.dcm"))
        exp[os.path.join(mixed, "link-inside.dcm")] = exp[some[1]]
        os.symlink(os.path.join(outside, "secret.dcm"), os.path.join(series_dirs[0], "escape.dcm"))
        os.symlink(outside, os.path.join(root, "escape-dir"))
        os.symlink(os.path.dirname(series_dirs[0]), os.path.join(root, "dir-link"))
        os.mkfifo(os.path.join(mixed, "fifo"))

        env = ps.Env("catalog", [root])
        # Every regular file on disk that is not a DICOM instance (XML, manifest.json, the extras).
        nondicom = sum(1 for d, _, fs in os.walk(root) for f in fs
                       if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))
                       and os.path.join(d, f) not in exp)
        # Directories holding symlinks are always read again (a target can change
        # without touching the directory).
        link_dirs = {mixed, series_dirs[0], root}

        # --- 1. first index ---
        trace = os.path.join(base, "strace.txt")
        st, stderr = index(env, strace_out=trace)
        print("first index: %s" % json.dumps(st))
        c.eq(st["ok"], True, "index succeeds")
        c.eq(st["files_indexed"], len(exp), "files indexed == DICOM files on disk")
        c.eq(st["files_cataloged"], len(exp), "files in catalog == DICOM files on disk")
        c.eq(st["nondicom_skipped"], nondicom, "non-DICOM files skipped and counted")
        c.eq(st["symlinks_refused"], 2, "symlinks escaping the root refused")
        c.eq(st["symlinks_skipped"], 1, "symlink to a directory inside the root not followed")
        c.check("escape.dcm" in stderr and "outside the archive roots" in stderr, "refused symlink is reported",
                stderr)
        dirs_with_files = len({os.path.dirname(p) for p in exp} | {os.path.dirname(x["path"]) for x in manifest["xml_files"]}
                              | {root})
        c.eq(st["dirs_scanned"], dirs_with_files, "every directory holding files was scanned")
        got = compare(c, env, exp, "first index")
        c.eq(len(got), len(exp), "catalog file count")

        mixed_doc = env.db.catalog.find_one({"_id": mixed})
        c.check(mixed_doc is not None, "mixed directory has a catalog document")
        if mixed_doc:
            c.eq(len(mixed_doc["series"]), 2, "mixed directory: one entry per series")
            c.eq(len({s["study_uid"] for s in mixed_doc["series"]}), 2, "mixed directory: two studies")
            c.eq(sorted(f for s in mixed_doc["series"] for f in s["files"]),
                 sorted(os.path.basename(p) for p in exp if os.path.dirname(p) == mixed),
                 "mixed directory: file names (FIFO never listed)")
        c.check(env.db.catalog.find_one({"_id": os.path.join(root, "escape-dir")}) is None,
                "escaping directory symlink not crawled")

        with open(trace, errors="replace") as f:
            lines = f.read().splitlines()
        opens_outside = [ln for ln in lines if outside in ln]
        c.eq(opens_outside, [], "strace: nothing outside the archive root was opened")
        dcm_opens = [ln for ln in lines if ".dcm\"" in ln and ("open" in ln)]
        c.check(len(dcm_opens) >= len(exp) - 1, "strace saw the indexer open the DICOM files",
                "%d opens" % len(dcm_opens))
        bad = [ln for ln in dcm_opens if ('"' + root + "/") not in ln]
        c.eq(bad, [], "strace: every DICOM file opened lies under the root")
        fifo_opens = [ln for ln in lines if "/MIXED/fifo" in ln]
        c.eq(fifo_opens, [], "strace: the FIFO was never opened")

        names = set()
        for ix in env.db.catalog.list_indexes():
            names.update(ix["key"].keys())
        for k in ("series.accession_number", "series.patient_id", "series.study_uid", "series.series_uid"):
            c.check(k in names, "index on %s" % k, sorted(names))

        # --- 2. unchanged re-index ---
        st2, _ = index(env)
        c.eq(st2["dirs_scanned"], len(link_dirs), "re-index without changes reads only directories with symlinks")
        c.eq(st2["files_indexed"], sum(1 for p in exp if os.path.dirname(p) in link_dirs),
             "re-index without changes reads only the files of those directories")
        c.eq(st2["dirs_unchanged"], dirs_with_files - len(link_dirs), "every other directory skipped as unchanged")
        c.eq(st2["files_cataloged"], len(exp), "unchanged catalog count")
        compare(c, env, exp, "unchanged re-index")

        # --- 3. add, remove, touch ---
        src = some[2]
        target_dir = series_dirs[-1]
        added = os.path.join(target_dir, "added-from-elsewhere.dcm")
        shutil.copy(src, added)
        exp[added] = exp[src]
        newdir = os.path.join(root, "NEW", "deeper")
        os.makedirs(newdir)
        for i in range(3):
            p = os.path.join(newdir, "n%d.dcm" % i)
            shutil.copy(some[3 + i], p)
            exp[p] = exp[some[3 + i]]
        removed_file = sorted(p for p in exp if os.path.dirname(p) == series_dirs[1])[0]
        os.unlink(removed_file)
        del exp[removed_file]
        gone_dir = series_dirs[2]
        shutil.rmtree(gone_dir)
        for p in [p for p in exp if os.path.dirname(p) == gone_dir]:
            del exp[p]
        for p in [p for p in exp if os.path.islink(p) and not os.path.exists(p)]:
            del exp[p]  # a link whose target vanished
        touched = sorted(p for p in exp if os.path.dirname(p) == series_dirs[3])[0]
        os.utime(touched, None)
        os.utime(series_dirs[4], None)
        st3, _ = index(env)
        print("after changes: %s" % json.dumps(st3))
        c.check(st3["dirs_removed"] >= 1, "removed directory dropped from the catalog", st3["dirs_removed"])
        c.eq(st3["files_cataloged"], len(exp), "catalog count after add/remove/touch")
        compare(c, env, exp, "after add/remove/touch")
        c.check(env.db.catalog.find_one({"_id": gone_dir}) is None, "no document for the removed directory")

        # --- 4. in-place rewrite: invisible to the mtime check, found by --verify ---
        victim_dir = series_dirs[3]
        victim = sorted(p for p in exp if os.path.dirname(p) == victim_dir)[-1]
        donor = next(p for p in sorted(exp) if exp[p][1] != exp[victim][1] and not os.path.islink(p))
        dir_mtime = os.stat(victim_dir).st_mtime_ns
        with open(donor, "rb") as f:
            data = f.read()
        with open(victim, "r+b") as f:
            f.write(data)
            f.truncate()
        os.utime(victim_dir, ns=(dir_mtime, dir_mtime))  # keep the directory's mtime exactly
        old_meta = exp[victim]
        exp[victim] = exp[donor]
        st4, _ = index(env)
        got4, _ = catalog_state(env.db)
        c.eq(st4["dirs_scanned"], len(link_dirs), "plain re-index trusts the unchanged directory mtime")
        c.eq(got4.get(victim), old_meta, "in-place rewrite not seen without --verify (documented)")
        st5, _ = index(env, "--verify")
        c.eq(st5["dirs_scanned"], len(link_dirs) + 1, "--verify re-reads exactly the directory whose file changed")
        compare(c, env, exp, "after --verify")
        st6, _ = index(env, "--full")
        c.eq(st6["files_indexed"], len(exp), "--full re-reads every file")
        compare(c, env, exp, "after --full")
        rate = st["files_indexed"] / st["elapsed_s"] if st["elapsed_s"] > 0 else 0
        print("index rate on this small archive (under strace): %.0f files/s; --full: %.0f files/s"
              % (rate, st6["files_per_s"]))

        # --- usage errors ---
        p = env.metadb("index", "--archive", os.path.join(base, "does-not-exist"), check=False)
        c.check(p.returncode != 0 and "does-not-exist" in p.stderr, "missing root is a clear error", p.stderr)
        p = env.metadb("index", "--bogus", check=False)
        c.eq(p.returncode, 2, "unknown option is a usage error")
    finally:
        if env:
            env.cleanup()
        ps.rmtree(base)
    c.done()


if __name__ == "__main__":
    main()
