"""Helpers of the natural-language and DICOMweb tests (test_nl.py,
test_qido.py): build a small generated archive, enrich it a little so every
kind of sentence has something to find, and load it into an isolated
database.

Loading: load_pipeline runs the real pipeline (metadb index, producer,
worker, linker) on the test's own topics, groups and database. load_direct
builds the same document shapes from `metadb extract` events without Kafka,
for quick experiments.

Not a test itself (ctest registers test_*.py only)."""
import glob
import json
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import BUILD, CLI_BIN, SRC, mongo_db  # noqa: E402

GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
CONF = os.path.join(SRC, "conf")


def generate(out, patients=24, seed=7):
    """A --small generated archive with a few deliberate variations.

    The generator writes only CHEST CT/CR/DX without contrast information;
    real collections vary, so some series get BodyPartExamined LUNG/THORAX
    (synonyms of CHEST) or ABDOMEN, and the CT series of studies described
    "WITH CONTRAST" get a ContrastBolusAgent (those "W/O CONTRAST" an empty
    one). Returns the manifest (updated with the variations)."""
    subprocess.run(["/usr/bin/python3", GEN, "--out", out, "--patients", str(patients), "--seed", str(seed),
                    "--small", "--slices", "2:4"], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    import pydicom
    rng = random.Random(seed)
    studies = {s["uid"]: s for s in manifest["studies"]}
    by_series = {}
    for inst in manifest["instances"]:
        by_series.setdefault(inst["series_uid"], []).append(inst["path"])
    for se in manifest["series"]:
        changes = {}
        desc = studies[se["study_uid"]]["description"].upper()
        if se["modality"] == "CT":
            if "WITH CONTRAST" in desc:
                changes["ContrastBolusAgent"] = "OMNIPAQUE 350"
            elif "W/O CONTRAST" in desc:
                changes["ContrastBolusAgent"] = ""
            roll = rng.random()
            if roll < 0.15:
                changes["BodyPartExamined"] = "LUNG"
            elif roll < 0.25:
                changes["BodyPartExamined"] = "THORAX"
            elif roll < 0.32:
                changes["BodyPartExamined"] = "ABDOMEN"
        if not changes:
            continue
        for path in by_series[se["uid"]]:
            ds = pydicom.dcmread(path)
            for k, v in changes.items():
                setattr(ds, k, v)
            ds.save_as(path)
        if "BodyPartExamined" in changes:
            se["body_part"] = changes["BodyPartExamined"]
        if "ContrastBolusAgent" in changes:
            se["contrast"] = changes["ContrastBolusAgent"]
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def _extract(paths):
    """Instance events of `metadb extract` for paths (in batches)."""
    events = []
    for i in range(0, len(paths), 200):
        r = subprocess.run([CLI_BIN, "--features.dir=" + CONF, "--log.level=error", "extract", "--quiet"] +
                           paths[i:i + 200], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("metadb extract failed: " + r.stderr[-2000:])
        for line in r.stdout.splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


def _split(level_obj):
    promoted = dict(level_obj.get("promoted", {}))
    meta = {k: v for k, v in level_obj.items() if k not in ("promoted", "_invalid", "_replaced")}
    return promoted, meta


def build_documents(archive, collection="LIDC-IDRI"):
    """Studies, series and instances documents (DESIGN.md shapes) for every
    DICOM file of the archive, from `metadb extract`."""
    paths = sorted(glob.glob(os.path.join(archive, "**", "*.dcm"), recursive=True))
    studies, series, instances = {}, {}, {}
    for ev in _extract(paths):
        if "study" not in ev:
            raise RuntimeError("extract refused %s: %s" % (ev.get("path"), ev))
        sp, sm = _split(ev["study"])
        ep, em = _split(ev["series"])
        ip, im = _split(ev["instance"])
        suid = ev["study"]["StudyInstanceUID"]
        seuid = ev["series"]["SeriesInstanceUID"]
        iuid = ev["instance"]["SOPInstanceUID"]
        st = studies.setdefault(suid, dict(_id=suid, metadata={}, collection_ids=[collection], modalities=[]))
        st.update(sp)
        st["metadata"].update(sm)
        se = series.setdefault(seuid, dict(_id=seuid, study_id=suid, metadata={}, collection_ids=[collection],
                                           instance_count=0))
        se.update(ep)
        se["metadata"].update(em)
        se["instance_count"] += 1
        mod = ev["series"].get("Modality") or ev["study"].get("Modality")
        if mod:
            se["modality"] = mod
            if mod not in st["modalities"]:
                st["modalities"].append(mod)
        inst = dict(_id=iuid, series_id=seuid, study_id=suid, metadata=im, paths=[ev["path"]])
        inst.update(ip)
        instances[iuid] = inst
    for st in studies.values():
        st["modalities"].sort()
        st["series"] = [dict(series_instance_uid=s["_id"], series_number=s.get("series_number"),
                             series_description=s.get("series_description"), modality=s.get("modality"),
                             instance_count=s["instance_count"]) for s in series.values() if s["study_id"] == st["_id"]]
    return list(studies.values()), list(series.values()), list(instances.values())


def load_direct(db_name, archive):
    """Insert documents built from the archive into db_name. Returns (client, db)."""
    client, db = mongo_db(db_name)
    studies, series, instances = build_documents(archive)
    for name, docs in (("studies", studies), ("series", series), ("instances", instances)):
        db[name].drop()
        db[name].insert_many(docs)
    return client, db


def load_pipeline(db_name, archive, manifest, collection="LIDC-IDRI"):
    """Load the archive through the real pipeline: `metadb topics` and `metadb
    index` with the test's own topics and groups, producer + worker + linker
    daemons, one job selecting every patient (`metadb submit --wait`), then
    the daemons are stopped. Returns (client, db). Raises RuntimeError (with
    the daemons' logs) when the job does not complete cleanly."""
    sys.path.insert(0, os.path.join(SRC, "tests", "faults"))
    import reltest as rt
    stack = rt.Stack.shared()
    names = rt.Names(db_name, stack, [os.path.abspath(archive)], features_dir=CONF)
    logdir = rt.tempdir("metadb-nl-logs-")
    procs = rt.Procs(logdir)
    try:
        rt.metadb(names, "topics")
        rt.metadb(names, "index", timeout=300)
        rt.metadb(names, "researcher", "add", "nl-test", "--name", "NL test", "--email", "nl@example.org")
        rt.metadb(names, "collection", "create", collection, "--description", "generated archive")
        for role in ("producer", "worker", "linker"):
            procs.start(role, names, extra=["--log.level=warn"])
        patients = sorted({s["patient_id"] for s in manifest["studies"]})
        p = rt.metadb(names, "submit", "--researcher", "nl-test", "--collection", collection, "--patient",
                      *patients, "--wait", "--timeout", "300", "--json", timeout=360, check=False)
        if p.returncode != 0:
            raise RuntimeError("job did not complete (exit %d): %s %s" % (p.returncode, p.stdout[-1500:],
                                                                         p.stderr[-1500:]))
        rcs = procs.stop_all()
        bad = {pid: v for pid, v in rcs.items() if v[1] != 0}
        if bad:
            raise RuntimeError("daemons did not exit 0: %s" % bad)
    except Exception:
        procs.dump_logs()
        raise
    finally:
        procs.kill_all()
        shutil.rmtree(logdir, ignore_errors=True)
    return mongo_db(db_name)


def drop(client, db_name):
    try:
        client.drop_database(db_name)
    finally:
        client.close()


if __name__ == "__main__":
    # For non-Python tests (the browser test): set up or drop a database.
    #   nl_support.py setup DB DIR [PATIENTS [SEED]]   -> prints the manifest path
    #   nl_support.py drop DB
    if len(sys.argv) >= 4 and sys.argv[1] == "setup":
        patients = int(sys.argv[4]) if len(sys.argv) > 4 else 12
        seed = int(sys.argv[5]) if len(sys.argv) > 5 else 11
        manifest = generate(sys.argv[3], patients=patients, seed=seed)
        c, _ = load_pipeline(sys.argv[2], sys.argv[3], manifest)
        c.close()
        print(os.path.join(sys.argv[3], "manifest.json"))
    elif len(sys.argv) == 3 and sys.argv[1] == "drop":
        c, _ = mongo_db(sys.argv[2])
        drop(c, sys.argv[2])
    else:
        sys.exit("usage: nl_support.py setup DB DIR [PATIENTS [SEED]] | drop DB")
