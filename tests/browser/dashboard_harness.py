#!/usr/bin/python3
"""Backend for tests/browser/test_dashboard.mjs: a generated archive, the real
pipeline (metadb index, producer, worker, linker) and metadb-api, all on the
test's own database, topics and consumer groups (t_dash_<pid>).

  dashboard_harness.py      (run by the browser test; talks over stdin/stdout)

It loads the first half of the patients through the pipeline (a job
submitted with `metadb submit --wait`), starts metadb-api with a submission
token and keeps every daemon running. Then it prints ONE JSON line:
  {"base": "http://127.0.0.1:PORT", "token": T, "db": DB, "collection": C,
   "researcher": R, "remaining_patients": [...], "manifest": {...summary...}}
("damaged": {series, sop}: one file of the first job cut inside its Pixel
Data, so the dashboard has a flagged instance to show)
and waits until stdin closes (or says "stop"), stops the daemons (SIGTERM,
exit codes reported on stderr), drops the database and removes the archive.
Every failure goes to stderr and exits non-zero before the JSON line."""
import json
import os
import re
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "faults"))
import reltest as rt  # noqa: E402

PATIENTS = int(os.environ.get("DASH_PATIENTS", "8"))
# DASH_COMPRESS=j2k|rle|jpegls: one series compressed (see compress_one); "compressed" in the JSON line
# DASH_READ_TOKEN=1: reads need a token too (api.read_tokens); the JSON line
# then has "read_token" (test_images.mjs: images and OHIF with a token)
READ_TOKEN = os.environ.get("DASH_READ_TOKEN") == "1"
# DASH_FULL_SIZE=1: 512x512 images and DASH_SLICES per series (default 2:4) instead
# of 32x32 ones (for measuring the image views by hand; the tests use the small ones)
FULL_SIZE = os.environ.get("DASH_FULL_SIZE") == "1"
SLICES = os.environ.get("DASH_SLICES", "2:4")


def log(msg):
    print("harness: " + msg, file=sys.stderr, flush=True)


def damage_one(manifest, patients):
    """Cut one file of the first job inside its Pixel Data (an archive copy
    that stopped early): it is catalogued with an integrity flag, which the
    dashboard must show. Returns {series, sop}."""
    import pydicom  # Debian's python3-pydicom, like the generator
    studies = {s["uid"] for s in manifest["studies"] if s["patient_id"] in patients}
    inst = next(i for i in manifest["instances"] if i["study_uid"] in studies)
    raw = pydicom.dcmread(inst["path"], force=True)._dict[0x7FE00010]
    with open(inst["path"], "rb") as f:
        data = f.read()
    with open(inst["path"], "wb") as f:
        f.write(data[:raw.value_tell + raw.length // 2])
    return {"series": inst["series_uid"], "sop": inst["sop_uid"]}


def compress_one(manifest, patients, avoid_series, how):
    """DASH_COMPRESS=j2k|rle|jpegls: one CT series of the first job (not the
    damaged one, at least 2 instances), every file rewritten by Debian's
    gdcmconv (lossless) before indexing. Returns {series, study, how}."""
    import subprocess
    flag = {"j2k": "--j2k", "rle": "--rle", "jpegls": "--jpegls"}[how]
    studies = {s["uid"] for s in manifest["studies"] if s["patient_id"] in patients}
    se = next(x for x in manifest["series"] if x["study_uid"] in studies and x["uid"] != avoid_series
              and x["modality"] == "CT" and x["instance_count"] >= 2)
    import pydicom
    tss = set()
    for inst in manifest["instances"]:
        if inst["series_uid"] == se["uid"]:
            tmp = inst["path"] + ".tmp"
            subprocess.run(["gdcmconv", flag, inst["path"], tmp], check=True, capture_output=True, timeout=60)
            os.replace(tmp, inst["path"])
            tss.add(str(pydicom.dcmread(inst["path"], stop_before_pixels=True).file_meta.TransferSyntaxUID))
    ts = ",".join(sorted(tss))
    return {"series": se["uid"], "study": se["study_uid"], "how": how, "transfer_syntax": ts}


def main():
    tag = "t_dash_%d" % os.getpid()
    tmp = rt.tempdir("metadb-dash-")
    archive = os.path.join(tmp, "archive")
    stack = rt.Stack.shared()
    names = rt.Names(tag, stack, [archive], features_dir=os.path.join(SRC, "conf"))
    procs = rt.Procs(os.path.join(tmp))
    client = None
    ok = False
    try:
        for role in ("producer", "worker", "linker", "api", "metadb"):
            if not os.access(rt.BIN[role], os.X_OK):
                raise RuntimeError("missing binary " + rt.BIN[role])
        if FULL_SIZE:
            import subprocess
            subprocess.run([rt.PY, rt.GEN, "--out", archive, "--patients", str(PATIENTS), "--seed", "23", "--jobs", "1",
                            "--slices", SLICES], check=True, capture_output=True, text=True, timeout=1200)
        else:
            rt.generate_archive(archive, PATIENTS, 23, extra=["--slices", SLICES])
        with open(os.path.join(archive, "manifest.json")) as f:
            manifest = json.load(f)
        patients = sorted({s["patient_id"] for s in manifest["studies"]})
        first, rest = patients[: len(patients) // 2], patients[len(patients) // 2:]
        damaged = damage_one(manifest, first)
        compressed = compress_one(manifest, first, damaged["series"], os.environ["DASH_COMPRESS"]) \
            if os.environ.get("DASH_COMPRESS") else None
        rt.metadb(names, "topics")
        rt.metadb(names, "index", timeout=300)
        rt.metadb(names, "researcher", "add", "dash", "--name", "Dashboard Test", "--email", "dash@example.org")
        rt.metadb(names, "collection", "create", "LIDC-IDRI", "--description", "generated archive")
        for role in ("producer", "worker", "linker"):
            procs.start(role, names, extra=["--log.level=warn"])
        t0 = time.time()
        p = rt.metadb(names, "submit", "--researcher", "dash", "--collection", "LIDC-IDRI", "--patient", *first,
                      "--wait", "--timeout", "300", "--json", timeout=360, check=False)
        if p.returncode != 0:
            raise RuntimeError("first job did not complete: %s %s" % (p.stdout[-1500:], p.stderr[-1500:]))
        log("loaded %d patients in %.0f s" % (len(first), time.time() - t0))
        token = "dash-%d-token-0123456789" % os.getpid()  # api.tokens: at least 16 characters
        read_token = "dash-%d-read-0123456789" % os.getpid() if READ_TOKEN else None
        api = procs.start("api", names, extra=["--api.listen=127.0.0.1:0", "--api.tokens=" + token,
                                               "--api.web_dir=" + os.path.join(SRC, "api", "web")] +
                          (["--api.read_tokens=" + read_token] if read_token else []))
        port = None
        deadline = time.time() + 30
        while time.time() < deadline and port is None:
            m = re.search(r"listening on http://[^:]+:(\d+)/", api.log_text())
            if m:
                port = int(m.group(1))
            elif not api.alive():
                raise RuntimeError("metadb-api exited: " + api.log_text()[-2000:])
            time.sleep(0.1)
        if port is None:
            raise RuntimeError("metadb-api did not announce its port")
        summary = {
            "studies": len(manifest["studies"]), "series": len(manifest["series"]),
            "modalities": sorted({s["modality"] for s in manifest["series"]}),
            "loaded_patients": first,
        }
        print(json.dumps({"base": "http://127.0.0.1:%d" % port, "token": token, "db": tag,
                          "collection": "LIDC-IDRI", "researcher": "dash", "remaining_patients": rest,
                          "manifest": summary, "damaged": damaged, "read_token": read_token,
                          "compressed": compressed}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        rcs = procs.stop_all()
        bad = {pid: v for pid, v in rcs.items() if v[1] != 0}
        if bad:
            log("daemons did not exit 0: %s" % bad)
            procs.dump_logs()
            return 1
        ok = True
        return 0
    except Exception as e:  # noqa: BLE001 - reported, then cleaned up
        log("setup failed: %s" % e)
        procs.dump_logs()
        return 1
    finally:
        procs.kill_all()
        try:
            client = stack.mongo()
            client.drop_database(tag)
            client.close()
        except Exception as e:  # noqa: BLE001
            log("cannot drop %s: %s" % (tag, e))
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
