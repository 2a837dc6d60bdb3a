#!/usr/bin/env python3
"""test_indexes: every API filter parameter and every QIDO-RS matching key is
answered through an index (issue 13, point 5).

 1. Loads 2,000 studies, 8,000 series and 24,000 instances into a private
    database (pymongo). Every promoted field has a rare value (about 0.4 % of
    the documents) that the queries below ask for.
 2. Starts metadb-linker briefly on private topics and group: at start it
    runs mdb_indexes_ensure. Checks that every index of the table in
    common/store/mdb_indexes.c exists, once.
 3. For every promoted field of every level (the list comes from the API's
    own /api/fields, so a new field without a case here fails), asks the API
    for the rare value, takes the filter the API ran from its `explain`,
    and asserts from the database's explain of that find (sort _id, limit,
    as mdb_query_run sends it) and of its count that the plan uses the
    field's index and no collection scan (IXSCAN of <field>_1, no
    COLLSCAN; see plan_verdict for DocumentDB's shape). The
    API's total must equal the count computed here from the generated
    documents.
 4. The same for every QIDO matching key of api/qido.c's attribute table
    (parsed from the source): the condition QIDO builds, explained, and the
    number of data sets the QIDO endpoint answers.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from bson import json_util  # Debian python3-bson (with python3-pymongo)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import Api, BROKERS, BUILD, MONGO_URI, SRC, Checker, mongo_db  # noqa: E402

PID = os.getpid()
DB = "t_idx_%d" % PID
N_STUDIES, SERIES_PER, INST_PER = 2000, 4, 3
RARE_EVERY = 250  # documents whose index % RARE_EVERY == RARE_AT carry the rare values
RARE_AT = 7
LINKER_BIN = os.path.join(BUILD, "linker", "metadb-linker")
LEVELS = ("studies", "series", "instances")


# ---------------------------------------------------------------------------
# the index table and the QIDO attribute table, read from the sources

def index_table():
    """[(collection, [keys])] parsed from common/store/mdb_indexes.c."""
    with open(os.path.join(SRC, "common", "store", "mdb_indexes.c")) as f:
        text = f.read()
    block = text[text.index("INDEXES-BEGIN"):text.index("INDEXES-END")]
    out = []
    for coll, keys in re.findall(r'\{"(\w+)",\s*\{([^}]*)\}\}', block):
        out.append((coll, re.findall(r'"([^"]+)"', keys)))
    return out


def qido_attrs():
    """[(keyword, vr, {level index: path})] of api/qido.c's ATTRS that can be matched."""
    with open(os.path.join(SRC, "api", "qido.c")) as f:
        text = f.read()
    block = text[text.index("static const qattr_t ATTRS[]"):]
    block = block[:block.index("};")]
    out = []
    rx = r'\{"(\w+)",\s*0x[0-9A-Fa-f]{8},\s*"(\w\w)",\s*(L_\w+),\s*\{([^}]*)\},\s*([^}]*?)\}'
    for kw, vr, _home, paths, flags in re.findall(rx, block, re.S):
        if "F_NOMATCH" in flags:
            continue
        ps = [p.strip() for p in paths.split(",")]
        lv = {i: p.strip('"') for i, p in enumerate(ps) if p and p != "NULL"}
        if lv:
            out.append((kw, vr, lv))
    return out


# ---------------------------------------------------------------------------
# the catalogue

def rare(i):
    return i % RARE_EVERY == RARE_AT


def make_docs():
    studies, series, instances = [], [], []
    for i in range(N_STUDIES):
        r = rare(i)
        suid = "1.2.826.0.1.3680043.8.498.%d" % (100000 + i)
        date = "19870321" if r else "2000%02d%02d" % (i % 12 + 1, i % 28 + 1)
        st = {
            "_id": suid, "study_instance_uid": suid,
            "accession_number": "RACC" if r else "ACC%06d" % i,
            "patient_id": "RARE-PATIENT" if r else "PAT-%05d" % (i // 2),
            "study_date": date,
            "study_description": "Rare study" if r else "Study %d" % (i % 10),
            "modality": "PT" if r else "CT",
            "acquisition_datetime": "19870321101500" if r else "20000101%06d" % i,
            "collection_ids": ["RARE-COLL"] if r else ["COLL-%d" % (i % 5)],
            "job_ids": ["job-rare"] if r else ["job-%d" % (i % 7)],
            "series_count": 7 if r else SERIES_PER,  # issue 15: counts as filters
            "instance_count": 7777 if r else SERIES_PER * INST_PER,
            "created_at": "2025-01-01T00:00:00.000Z" if r else "2026-11-%02dT08:00:00.000Z" % (i % 28 + 1),
            "updated_at": "2025-01-02T00:00:00.000Z" if r else "2026-12-%02dT08:00:00.000Z" % (i % 28 + 1),
            "metadata": {
                "StudyTime": "031500" if r else "%02d0000" % (i % 12 + 8),
                "ReferringPhysicianName": "Rare^Doctor" if r else "Doc^%d" % (i % 20),
                "PatientName": "Rare^Patient" if r else "Pat^%05d" % (i // 2),
                "PatientBirthDate": "19010101" if r else "19%02d0101" % (i % 60 + 30),
                "PatientSex": "O" if r else "MF"[i % 2],
                "StudyID": "RSTUDY" if r else str(i),
            },
        }
        mods = set()
        for s in range(SERIES_PER):
            j = i * SERIES_PER + s
            rs = rare(j)
            seuid = "%s.%d" % (suid, s + 1)
            m = "PT" if r else ("MR" if rs else "CT")
            mods.add(m)
            se = {
                "_id": seuid, "series_instance_uid": seuid, "study_id": suid,
                "series_number": 9999 if rs else s + 1,
                "series_description": "Rare series" if rs else "Axial %d" % (s + 1),
                "modality": m,
                "body_part_examined": "RAREPART" if rs else ("CHEST" if j % 3 else "ABDOMEN"),
                "series_date": "19870322" if rs else date,
                "series_time": "031600" if rs else "%02d1000" % (j % 12 + 8),
                "manufacturer": "RARE MEDICAL" if rs else ["GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA"][j % 3],
                "manufacturer_model_name": "Rare 1" if rs else "Model %d" % (j % 9),
                "protocol_name": "Rare protocol" if rs else "Protocol %d" % (j % 11),
                "kvp": 77 if rs else [100, 120, 140][j % 3],
                "slice_thickness": 0.3 if rs else [0.625, 1.25, 2.5, 5.0][j % 4],
                "instance_count": 99 if rs else INST_PER,
                "collection_ids": ["RARE-SCOLL"] if rs else st["collection_ids"],
                "created_at": "2025-02-01T00:00:00.000Z" if rs else st["created_at"],
                "updated_at": "2025-02-02T00:00:00.000Z" if rs else st["updated_at"],
                "metadata": {"SeriesNumber": s + 1},
            }
            series.append(se)
            for k in range(INST_PER):
                n = j * INST_PER + k
                ri = rare(n)
                iuid = "%s.%d" % (seuid, k + 1)
                instances.append({
                    "_id": iuid, "sop_instance_uid": iuid, "series_id": seuid, "study_id": suid,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.128" if ri else "1.2.840.10008.5.1.4.1.1.2",
                    "instance_number": 9999 if ri else k + 1,
                    "acquisition_datetime": "19870321103000" if ri else "20000101%06d" % n,
                    "paths": ["/archive/rare/%d.dcm" % n] if ri else ["/archive/%s/%d.dcm" % (seuid, k + 1)],
                    "job_ids": ["job-rare-i"] if ri else st["job_ids"],
                    "created_at": "2025-03-01T00:00:00.000Z" if ri else st["created_at"],
                    "updated_at": "2025-03-02T00:00:00.000Z" if ri else st["updated_at"],
                    "metadata": {"Rows": 17 if ri else 512, "Columns": 19 if ri else 512,
                                 "BitsAllocated": 8 if ri else 16, "NumberOfFrames": 7 if ri else 1,
                                 "InstanceNumber": k + 1},
                })
                if ri:  # a damaged file (Pixel Data cut short): the field exists only then
                    instances[-1]["integrity"] = {"pixel_data_truncated": True, "pixel_data_bytes_expected": 524288,
                                                  "pixel_data_bytes_present": 4096}
        st["modalities"] = sorted(mods)
        studies.append(st)
    return {"studies": studies, "series": series, "instances": instances}


# The rare value asked for each API filter parameter (field name → value as
# given in the URL). "_id"/link fields ask for one known document's UID.
def api_cases(docs):
    s0 = docs["studies"][RARE_AT]
    se0 = docs["series"][RARE_AT]
    i0 = docs["instances"][RARE_AT]
    return {
        "studies": {
            "_id": s0["_id"], "accession_number": "RACC", "patient_id": "RARE-PATIENT", "study_date": "19870321",
            "study_description": "Rare study", "modality": "PT", "acquisition_datetime": "19870321101500",
            "collection_ids": "RARE-COLL", "job_ids": "job-rare", "created_at": "2025-01-01T00:00:00.000Z",
            "updated_at": "2025-01-02T00:00:00.000Z", "series_count": "7", "instance_count": "7777",
        },
        "series": {
            "_id": se0["_id"], "study_id": s0["_id"], "series_number": "9999", "series_description": "Rare series",
            "modality": "MR", "body_part_examined": "RAREPART", "series_date": "19870322", "series_time": "031600",
            "manufacturer": "RARE MEDICAL", "manufacturer_model_name": "Rare 1", "protocol_name": "Rare protocol",
            "kvp": "77", "slice_thickness": "0.3", "instance_count": "99", "collection_ids": "RARE-SCOLL",
            "created_at": "2025-02-01T00:00:00.000Z", "updated_at": "2025-02-02T00:00:00.000Z",
        },
        "instances": {
            "_id": i0["_id"], "series_id": se0["_id"], "study_id": s0["_id"],
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.128", "instance_number": "9999",
            "acquisition_datetime": "19870321103000", "paths": i0["paths"][0], "job_ids": "job-rare-i",
            "integrity": "exists:true",
            "created_at": "2025-03-01T00:00:00.000Z", "updated_at": "2025-03-02T00:00:00.000Z",
        },
    }


def holds(doc, path, value):
    """Does doc's value at path equal value (or contain it, for arrays)?"""
    cur = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return value in cur if isinstance(cur, list) else cur == value


def expected_count(docs, level, field, value, ftype):
    """Documents of a level whose field equals value (number fields compare as numbers;
    "exists:true": documents that have the field)."""
    if value == "exists:true":
        return sum(field in d for d in docs[level])
    v = (float(value) if "." in value else int(value)) if ftype == "number" else value
    n = 0
    for d in docs[level]:
        ok = holds(d, field, v)
        if level == "studies" and field == "modality":
            ok = ok or holds(d, "modalities", v)
        n += ok
    return n


# ---------------------------------------------------------------------------
# explain, in both shapes

def walk(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(str(k))
            walk(v, out)
    elif isinstance(node, list):
        for v in node:
            walk(v, out)
    else:
        out.append(str(node))
    return out


def plan_verdict(explain, paths):
    """(ok, why). ok when the winning plan has no collection scan and an
    IXSCAN on each path's index (<path>_1 with dots as '_', or _id_).
    MongoDB reports COLLSCAN for a filter without an index; DocumentDB's
    gateway reports the same MongoDB shape (winningPlan stages, indexName)
    but shows such a filter as an IXSCAN of the whole _id_ index with a
    runtimeFilterSet, hence the check of the index name and not only the
    absence of COLLSCAN. A PostgreSQL-style plan ("Seq Scan") fails too."""
    doc = dict(explain)
    doc.pop("rejectedPlans", None)
    qp = doc.get("queryPlanner")
    if isinstance(qp, dict):
        qp = dict(qp)
        qp.pop("rejectedPlans", None)
        doc["queryPlanner"] = qp
    for k in ("command", "serverInfo", "serverParameters", "originalCommand", "parsedQuery"):
        doc.pop(k, None)
        if isinstance(qp, dict):
            qp.pop(k, None)
    tokens = walk(doc, [])
    text = " ".join(tokens)
    if "COLLSCAN" in tokens or re.search(r"\bSeq Scan\b", text):
        return False, "collection scan: " + text[:600]
    for path in paths:
        name = "_id_" if path == "_id" else path.replace(".", "_") + "_1"
        if name not in tokens:
            return False, "no index scan on %s (index %s) in the plan: %s" % (path, name, text[:600])
    return True, ""


def explain_find(db, coll, flt):
    return db.command("explain", {"find": coll, "filter": flt, "sort": {"_id": 1}, "limit": 50},
                      verbosity="queryPlanner")


def explain_count(db, coll, flt):
    """The count as mongoc's count_documents sends it: an aggregate."""
    pipeline = [{"$match": flt}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
    return db.command("explain", {"aggregate": coll, "pipeline": pipeline, "cursor": {}},
                      verbosity="queryPlanner")


def check_plans(c, db, coll, flt, paths, what):
    for kind, fn in (("find", explain_find), ("count", explain_count)):
        try:
            ex = fn(db, coll, flt)
        except Exception as e:  # pymongo.errors.OperationFailure
            c.check(False, "%s: explain of the %s runs" % (what, kind), e)
            continue
        ok, why = plan_verdict(ex, paths)
        c.check(ok, "%s: the %s uses an index (%s)" % (what, kind, "/".join(paths)), why)


# ---------------------------------------------------------------------------

def ensure_with_linker(c, db, table):
    """Start metadb-linker on private topics/group until the indexes exist."""
    log = tempfile.NamedTemporaryFile(prefix="metadb-linker-idx-", suffix=".log", delete=False)
    args = [LINKER_BIN, "--mongo.uri=" + MONGO_URI, "--mongo.db=" + DB, "--kafka.brokers=" + BROKERS,
            "--topic.instances=t_idx_%d.instances" % PID, "--topic.dlq=t_idx_%d.dlq" % PID,
            "--linker.group=t_idx_%d-linkers" % PID, "--linker.metrics_port=0", "--log.level=info"]
    t0 = time.time()
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    want = {(coll, tuple(keys)) for coll, keys in table}
    have = set()
    try:
        while time.time() - t0 < 180:
            have = set()
            for coll in {w[0] for w in want}:
                for ix in db[coll].list_indexes():
                    have.add((coll, tuple(ix["key"].keys())))
            if want <= have or proc.poll() is not None:
                break
            time.sleep(0.5)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    with open(log.name, errors="replace") as f:
        text = f.read()
    os.unlink(log.name)
    missing = sorted(want - have)
    c.check(not missing, "metadb-linker created every index of the table (%d, in %.1f s)" % (len(want), took),
            "missing %s\nlinker log:\n%s" % (missing, text[-3000:]))
    return not missing


def main():
    c = Checker()
    table = index_table()
    c.check(len(table) >= 40, "the index table in mdb_indexes.c parses (%d entries)" % len(table))
    attrs = qido_attrs()
    c.check(len(attrs) >= 20, "the QIDO attribute table in api/qido.c parses (%d matching keys)" % len(attrs))
    client, db = mongo_db(DB)
    try:
        client.drop_database(DB)
        docs = make_docs()
        t0 = time.time()
        for name in LEVELS:
            batch = docs[name]
            for k in range(0, len(batch), 2000):
                db[name].insert_many(batch[k:k + 2000], ordered=False)
        c.eq(db.instances.count_documents({}), N_STUDIES * SERIES_PER * INST_PER,
             "loaded %d instances (%d series, %d studies) in %.0f s" % (
                 N_STUDIES * SERIES_PER * INST_PER, N_STUDIES * SERIES_PER, N_STUDIES, time.time() - t0))
        if not ensure_with_linker(c, db, table):
            c.finish()
        # every index of the table exactly once (no duplicate under another name)
        for coll in LEVELS + ("conflicts",):
            keys = [tuple(ix["key"].items()) for ix in db[coll].list_indexes()]
            dups = sorted({k for k in keys if keys.count(k) > 1})
            c.check(not dups, "%s: no index key pattern twice" % coll, dups)
        indexed = {(coll, keys[0]) for coll, keys in table} | {(l, "_id") for l in LEVELS}
        # the checker is not vacuous: a field without an index is caught
        neg = explain_find(db, "series", {"metadata.SeriesNumber": 3})
        ok, why = plan_verdict(neg, ["metadata.SeriesNumber"])
        c.check(not ok, "control: a filter on an unindexed field is reported as not using an index", neg)

        cases = api_cases(docs)
        with Api(DB) as api:
            # ---- API filter parameters ----
            for level in LEVELS:
                st, _, fields = api.get("/api/fields", {"collection": level})
                c.check(st == 200, "/api/fields?collection=%s answers from the database" % level, fields)
                if st != 200:
                    continue
                c.eq(fields.get("total"), len(docs[level]), "/api/fields %s: total is the collection's size" % level)
                c.check(fields.get("sampled") == (fields.get("scanned", 0) < len(docs[level])),
                        "/api/fields %s: 'sampled' says whether the counts come from a sample" % level, fields.get("scanned"))
                for f in fields["promoted"]:
                    name = f["name"]
                    what = "%s?%s" % (level, name)
                    if not c.check(name in cases[level], what + ": the test has a case for this field"):
                        continue
                    c.check((level, name) in indexed, what + ": the index table has %s.%s" % (level, name))
                    value = cases[level][name]
                    st, _, body = api.get("/api/" + level, {name: value, "limit": "1000"})
                    want = expected_count(docs, level, name, value, f["type"])
                    c.check(st == 200 and body.get("total") == want and want > 0,
                            "%s=%s: the API answers %d document(s)" % (what, value, want),
                            "status %s, total %s" % (st, body.get("total") if isinstance(body, dict) else body))
                    if st != 200 or "explain" not in body:
                        continue
                    flt = json_util.loads(json.dumps(body["explain"]["filter"]))
                    paths = [name, "modalities"] if (level, name) == ("studies", "modality") else [name]
                    check_plans(c, db, body["explain"]["collection"], flt, paths, what)

            # ---- QIDO-RS matching keys ----
            s0, se0, i0 = docs["studies"][RARE_AT], docs["series"][RARE_AT], docs["instances"][RARE_AT]
            sample = {"studies": s0, "series": se0, "instances": i0}
            for kw, vr, paths in attrs:
                for li, path in sorted(paths.items()):
                    level = LEVELS[li]
                    what = "QIDO %s on /%s (%s)" % (kw, level, path)
                    c.check((level, path) in indexed, what + ": the index table has it")
                    cur = sample[level]
                    for part in path.split("."):
                        cur = cur.get(part) if isinstance(cur, dict) else None
                    if isinstance(cur, list):
                        cur = cur[0]
                    if cur is None:
                        c.check(False, what + ": the test catalogue has a value for it")
                        continue
                    if vr == "PN":
                        flt = {path: {"$regex": "^" + re.escape(cur) + "$", "$options": "i"}}
                    else:
                        flt = {path: cur}
                    check_plans(c, db, level, flt, [path], what)
                    want = db[level].count_documents(flt)
                    st, _, body = api.get("/dicomweb/" + level, {kw: str(cur), "limit": "1000"})
                    c.check(st == 200 and isinstance(body, list) and len(body) == want and want > 0,
                            what + ": QIDO answers %d data set(s)" % want,
                            "status %s: %s" % (st, str(body)[:300]))
    finally:
        client.drop_database(DB)
        client.close()
    c.finish()


if __name__ == "__main__":
    main()
