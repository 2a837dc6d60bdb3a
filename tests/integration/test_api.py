#!/usr/bin/python3
"""metadb-api against the live stack: every endpoint, every documented filter
form, and a table of bad inputs that must each get the right 4xx with
{error, detail} (never a 5xx, never a crash).

A synthetic catalogue (30 studies, 60 series, 300 instances shaped like the
linker's documents) is written to a private database t_api_<pid>; expected
answers are computed here in Python from the same documents, independently of
the C query builder. Job submission goes to a private topic, and the
published message is read back with kcat."""
import json
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import (Api, Checker, API_BIN, BROKERS, CLI_BIN, make_catalogue, mongo_db, run, seed)  # noqa: E402

PID = os.getpid()
DB = "t_api_%d" % PID
TOPIC_JOBS = "t_api_%d.jobs" % PID
TOKEN = "tok-%d-write-0123456789" % PID  # api.tokens: at least 16 characters
READ_TOKEN = "tok-%d-read-0123456789" % PID

c = Checker()
client, db = mongo_db(DB)
studies, series, instances = make_catalogue()
seed(db, studies, series, instances)
study_by_id = {s["_id"]: s for s in studies}


def ids(items):
    return sorted(d["_id"] for d in items)


def want(docs, pred):
    return sorted(d["_id"] for d in docs if pred(d))


def in_range(v, lo, hi):
    return v is not None and lo <= v <= hi


def get_all(api, level, params):
    """All ids of a filtered list (pages through with limit/offset)."""
    out, offset, total = [], 0, None
    while True:
        p = list(params) + [("limit", "7"), ("offset", str(offset))]
        st, _, body = api.get("/api/" + level, p)
        if st != 200:
            return st, body
        total = body["total"] if total is None else total
        out += [d["_id"] for d in body["items"]]
        offset += 7
        if len(body["items"]) < 7:
            break
    if total != len(out):
        return 0, "total %s != items %d" % (total, len(out))
    return 200, sorted(out)


def filt(api, level, params, expected, what):
    st, got = get_all(api, level, params)
    if not c.check(st == 200, what + " (HTTP 200)", got):
        return
    c.eq(got, expected, what)
    c.check(len(expected) > 0 or "empty" in what, what + " matches something", "expected set is empty")


def ct_thickness(s, pred):
    return s.get("slice_thickness") is not None and pred(s["slice_thickness"])


def test_database_answers(api):
    """Every answer comes from the database: a new or deleted document shows
    at once, and the API keeps no copy (no ?fresh, no source/cache_age_ms)."""
    st, _, b = api.get("/api/series", {"modality": "CT", "limit": "1"})
    c.check(st == 200 and "source" not in b and "cache_age_ms" not in b, "no cache fields in answers", b)
    st, _, b = api.get("/api/studies", {"limit": "1", "fresh": "true"})
    c.check(st == 400 and b.get("error") == "bad_parameter", "?fresh is gone (400 unknown field)", b)
    extra = dict(studies[0], _id="9.9.9.1", study_instance_uid="9.9.9.1", patient_id="LIDC-IDRI-9999")
    db.studies.insert_one(extra)
    st, _, b = api.get("/api/studies", {"patient": "LIDC-IDRI-9999"})
    c.check(st == 200 and [d["_id"] for d in b["items"]] == ["9.9.9.1"], "a new study shows up at once", b)
    se = series[3]
    params = {"series_uid": se["_id"], "fields": "instance_number,paths", "sort": "-instance_number"}
    st, _, b = api.get("/api/instances", params)
    c.check(st == 200 and [d["instance_number"] for d in b["items"]] == [5, 4, 3, 2, 1]
            and all(set(d) == {"_id", "instance_number", "paths"} for d in b["items"]),
            "instance page of a series, sorted and projected", b)
    st, _, b = api.get("/api/instances", [("modality", "CR"), ("patient", "LIDC-IDRI-000*"), ("fields", "series_id"),
                                          ("limit", "1000")])
    exp = want(instances, lambda d: study_by_id[d["study_id"]]["patient_id"].startswith("LIDC-IDRI-000") and
               any(x["_id"] == d["series_id"] and x["modality"] == "CR" for x in series))
    c.check(st == 200 and ids(b["items"]) == exp and exp, "instances through series and study conditions", b)
    st, _, b = api.get("/api/instances", {"series_uid": se["_id"]})
    c.check(st == 200 and b["items"][0].get("metadata"), "whole instance documents", b)
    st, _, b = api.get("/api/studies/9.9.9.1")
    c.check(st == 200 and b["_id"] == "9.9.9.1", "detail of the new study", b)
    db.studies.delete_one({"_id": "9.9.9.1"})
    st, _, b = api.get("/api/studies", {"patient": "LIDC-IDRI-9999"})
    c.check(st == 200 and b["total"] == 0, "a deleted study is gone at once", b)


def test_database_errors():
    """No database error becomes an empty 200: with a bad password and with a
    dead server every read answers 503 with the JSON error body."""
    for what, uri in (("a wrong password", "mongodb://metadb_ro:wrong@127.0.0.1:27017/?authSource=admin"
                       "&serverSelectionTimeoutMS=2000"),
                      ("a dead server", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1500")):
        with Api(DB, "--api.mongo_uri=" + uri) as api:
            for path, params in (("/api/studies", {"modality": "CT"}), ("/api/series/1.2.3", None),
                                 ("/api/fields", {"collection": "instances"}), ("/dicomweb/studies", {"PatientID": "X"}),
                                 ("/api/nl", {"q": "CT studies", "backend": "offline"}), ("/api/jobs", None)):
                st, _, b = api.get(path, params)
                c.check(st == 503 and isinstance(b, dict) and b.get("error") == "backend_unavailable" and b.get("detail"),
                        "%s with %s: 503 backend_unavailable" % (path, what), (st, b))


def test_filters(api):
    # equality, aliases
    filt(api, "series", [("modality", "CT")], want(series, lambda s: s["modality"] == "CT"), "series modality=CT")
    filt(api, "studies", [("modality", "CR")],
         want(studies, lambda s: s["modality"] == "CR" or "CR" in s["modalities"]), "studies modality=CR (+modalities)")
    filt(api, "studies", [("accession", "ACC00012")], ["1.3.6.1.4.1.9328.50.1.1012"], "accession alias")
    filt(api, "studies", [("patient_id", "LIDC-IDRI-0003")],
         want(studies, lambda s: s["patient_id"] == "LIDC-IDRI-0003"), "patient_id equality")
    filt(api, "series", [("body_part", "CHEST")], want(series, lambda s: s["body_part_examined"] == "CHEST"),
         "body_part alias")
    filt(api, "series", [("series_number", "2")], want(series, lambda s: s["series_number"] == 2),
         "number equality")
    # lists
    filt(api, "series", [("modality", "CR,DX")], want(series, lambda s: s["modality"] in ("CR", "DX")),
         "list modality=CR,DX")
    filt(api, "studies", [("patient", "LIDC-IDRI-0001,LIDC-IDRI-0015")],
         want(studies, lambda s: s["patient_id"] in ("LIDC-IDRI-0001", "LIDC-IDRI-0015")), "list of patients")
    # date ranges, all forms
    y0001 = want(studies, lambda s: in_range(s["study_date"], "20000101", "20011231"))
    filt(api, "studies", [("study_date", "20000101-20011231")], y0001, "study_date=20000101-20011231")
    filt(api, "studies", [("study_date", "2000-2001")], y0001, "study_date=2000-2001")
    filt(api, "studies", [("study_date", "2000-01-01-2001-12-31")], y0001, "study_date ISO range")
    filt(api, "studies", [("study_date", "2000")], want(studies, lambda s: s["study_date"].startswith("2000")),
         "study_date=2000 (a year)")
    filt(api, "studies", [("study_date", "200007")], want(studies, lambda s: s["study_date"].startswith("200007")),
         "study_date=200007 (a month)")
    filt(api, "studies", [("study_date", "20001231")], want(studies, lambda s: s["study_date"] == "20001231"),
         "study_date exact day")
    filt(api, "studies", [("study_date", "20010101-")], want(studies, lambda s: s["study_date"] >= "20010101"),
         "open-ended range A-")
    filt(api, "studies", [("study_date", "-1999")], want(studies, lambda s: s["study_date"] <= "19991231"),
         "open-started range -B")
    filt(api, "studies", [("study_date", "lt:2000")], want(studies, lambda s: s["study_date"] < "20000101"),
         "study_date=lt:2000")
    filt(api, "studies", [("study_date", "gte:2002")], want(studies, lambda s: s["study_date"] >= "20020101"),
         "study_date=gte:2002")
    # numeric comparisons
    for op, f in (("lt", lambda v: v < 2.5), ("lte", lambda v: v <= 2.5), ("gt", lambda v: v > 2.5),
                  ("gte", lambda v: v >= 2.5)):
        filt(api, "series", [("slice_thickness", "%s:2.5" % op)], want(series, lambda s: ct_thickness(s, f)),
             "slice_thickness=%s:2.5" % op)
    filt(api, "series", [("slice_thickness", "ne:2.5")],
         want(series, lambda s: s.get("slice_thickness") != 2.5), "slice_thickness=ne:2.5 (incl. missing)")
    filt(api, "series", [("slice_thickness", "1-3")], want(series, lambda s: ct_thickness(s, lambda v: 1 <= v <= 3)),
         "numeric range 1-3")
    filt(api, "series", [("slice_thickness", "gt:1"), ("slice_thickness", "lt:3")],
         want(series, lambda s: ct_thickness(s, lambda v: 1 < v < 3)), "repeated parameter ANDs")
    filt(api, "series", [("modality", "ne:CT")], want(series, lambda s: s["modality"] != "CT"), "modality=ne:CT")
    filt(api, "series", [("slice_thickness", "exists:false")], want(series, lambda s: "slice_thickness" not in s),
         "exists:false")
    filt(api, "series", [("kvp", "140")], want(series, lambda s: s["kvp"] == 140), "kvp=140")
    # wildcards
    filt(api, "studies", [("patient", "LIDC-IDRI-000*")],
         want(studies, lambda s: s["patient_id"].startswith("LIDC-IDRI-000")), "wildcard *")
    filt(api, "studies", [("patient", "LIDC-IDRI-001?")],
         want(studies, lambda s: s["patient_id"].startswith("LIDC-IDRI-001") and len(s["patient_id"]) == 14),
         "wildcard ?")
    filt(api, "series", [("series_description", "a.b(c)[d]+*")],
         want(series, lambda s: s["series_description"].startswith("a.b(c)[d]+")), "wildcard with regex metachars")
    filt(api, "series", [("series_description", "a?b*")], want(series, lambda s: s["series_description"] == "a.b(c)[d]+e"),
         "'.' in data matched by '?' only")
    filt(api, "studies", [("study_description", "*CT*")], want(studies, lambda s: "CT" in s["study_description"]),
         "wildcard both sides")
    # collection and job
    filt(api, "studies", [("collection", "LIDC-IDRI")], want(studies, lambda s: "LIDC-IDRI" in s["collection_ids"]),
         "collection filter")
    filt(api, "series", [("collection", "OTHER")], want(series, lambda s: "OTHER" in s["collection_ids"]),
         "collection filter on series")
    filt(api, "studies", [("job", "job-b")], want(studies, lambda s: "job-b" in s["job_ids"]), "job filter")
    filt(api, "series", [("job", "job-a")], want(series, lambda s: "job-a" in study_by_id[s["study_id"]]["job_ids"]),
         "job filter on series (through studies)")
    # metadata keywords
    filt(api, "studies", [("metadata.PatientSex", "F")], want(studies, lambda s: s["metadata"]["PatientSex"] == "F"),
         "metadata.PatientSex=F")
    filt(api, "instances", [("metadata.Columns", "256")], want(instances, lambda d: d["metadata"]["Columns"] == 256),
         "metadata number equality")
    filt(api, "instances", [("metadata.InstanceNumber", "gte:4")],
         want(instances, lambda d: d["metadata"]["InstanceNumber"] >= 4), "metadata comparison")
    filt(api, "studies", [("metadata.PatientName", "Doe^1*")],
         want(studies, lambda s: s["metadata"]["PatientName"].startswith("Doe^1")), "metadata wildcard with ^")
    filt(api, "studies", [("metadata.StudyDate", "2000-2001")], y0001, "metadata date range")
    # parent-level filters and the scenario
    filt(api, "series", [("study_date", "2000-2001")],
         want(series, lambda s: in_range(study_by_id[s["study_id"]]["study_date"], "20000101", "20011231")),
         "series filtered by study_date (through studies)")
    scenario = want(series, lambda s: s["modality"] == "CT" and s["body_part_examined"] == "CHEST"
                    and ct_thickness(s, lambda v: v < 2.5)
                    and in_range(study_by_id[s["study_id"]]["study_date"], "20000101", "20011231"))
    filt(api, "series", [("modality", "CT"), ("body_part", "CHEST"), ("slice_thickness", "lt:2.5"),
                         ("study_date", "2000-2001")], scenario, "CT chest series < 2.5 mm from 2000-2001")
    st, _, raw = api.post("/api/query", {"collection": "series", "filter": {
        "modality": "CT", "body_part_examined": "CHEST", "slice_thickness": {"$lt": 2.5},
        "series_date": {"$gte": "20000101", "$lte": "20011231"}}, "limit": 1000})
    c.check(st == 200, "scenario as raw query", raw)
    if st == 200:
        c.eq(ids(raw["items"]), scenario, "raw query gives the same series as the filter parameters")
    filt(api, "instances", [("slice_thickness", "lt:1")],
         want(instances, lambda d: any(s["_id"] == d["series_id"] and ct_thickness(s, lambda v: v < 1) for s in series)),
         "instances filtered by a series field")
    filt(api, "instances", [("patient", "LIDC-IDRI-0002")],
         want(instances, lambda d: study_by_id[d["study_id"]]["patient_id"] == "LIDC-IDRI-0002"),
         "instances filtered by a study field")
    filt(api, "series", [("study_date", "1900")], [], "empty parent match gives empty result")


def test_paging_sort_fields(api):
    st, _, b = api.get("/api/studies", {"limit": "5", "offset": "10", "sort": "-study_date,patient"})
    c.check(st == 200 and b["limit"] == 5 and b["offset"] == 10 and b["total"] == 30 and len(b["items"]) == 5,
            "limit/offset/total", b)
    expect = [s["_id"] for s in sorted(studies, key=lambda s: (s["study_date"], [-ord(ch) for ch in s["patient_id"]],
                                                               [-ord(ch) for ch in s["_id"]]), reverse=True)]
    if st == 200:
        c.eq([d["_id"] for d in b["items"]], expect[10:15], "sort=-study_date,patient (+_id tie-break)")
    st, _, b = api.get("/api/series", {"fields": "modality,slice_thickness", "limit": "3"})
    c.check(st == 200 and all(set(d) <= {"_id", "modality", "slice_thickness"} for d in b["items"]),
            "fields projection", b)
    st, _, b = api.get("/api/studies", {"total": "false", "limit": "2"})
    c.check(st == 200 and "total" not in b and len(b["items"]) == 2, "total=false skips the count", b)
    st, _, b = api.get("/api/studies", {"modality": "CT", "limit": "0"})
    want = sum(1 for s in studies if s.get("modality") == "CT" or "CT" in (s.get("modalities") or []))
    c.check(st == 200 and b.get("items") == [] and b.get("total") == want,
            "limit=0 answers the count alone (%d CT studies)" % want, b)
    st, _, b = api.get("/api/studies", {"modality": "CT", "limit": "1"})
    c.check(st == 200 and "explain" in b and b["explain"]["collection"] == "studies", "explain echoes the filter", b)


def test_details(api):
    sid = studies[0]["_id"]
    st, _, b = api.get("/api/studies/" + sid)
    c.check(st == 200 and b["_id"] == sid and b["series_total"] == 2 and len(b["series"]) == 2, "GET study + series", b)
    if st == 200:
        c.eq([x["series_number"] for x in b["series"]], [1, 2], "series summary sorted by number")
    seid = series[0]["_id"]
    st, _, b = api.get("/api/series/" + seid, {"limit": "2", "offset": "1"})
    c.check(st == 200 and b["_id"] == seid and b["instances"]["total"] == 5 and
            [x["instance_number"] for x in b["instances"]["items"]] == [2, 3], "GET series + page of instances", b)
    c.check(st == 200 and b.get("metadata", {}).get("ConvolutionKernel") == "B30f", "series detail has all metadata")
    iid = instances[3]["_id"]
    st, _, b = api.get("/api/instances/" + iid)
    c.check(st == 200 and b["_id"] == iid and b["metadata"]["Rows"] == 512, "GET instance", b)


def test_raw(api):
    st, _, b = api.post("/api/query", {"collection": "studies", "filter": {"$or": [{"modality": "CR"},
                                                                                   {"patient_id": {"$regex": "^LIDC-IDRI-000[12]$"}}]},
                                       "sort": {"study_date": 1}, "projection": {"study_date": 1}, "limit": 100})
    exp = want(studies, lambda s: s["modality"] == "CR" or s["patient_id"] in ("LIDC-IDRI-0001", "LIDC-IDRI-0002"))
    c.check(st == 200 and ids(b["items"]) == exp and b["total"] == len(exp), "raw $or/$regex query", b)
    c.check(st == 200 and [d["study_date"] for d in b["items"]] == sorted(d["study_date"] for d in b["items"]),
            "raw sort")
    st, _, b = api.post("/api/query", {"collection": "instances", "filter": {"metadata.Columns": {"$in": [256]}},
                                       "skip": 10, "limit": 5})
    c.check(st == 200 and b["total"] == 120 and len(b["items"]) == 5 and b["offset"] == 10, "raw skip/limit/total", b)
    st, _, b = api.post("/api/query", {"collection": "series", "filter": {"$and": [{"kvp": {"$gte": 130}},
                                                                                  {"modality": {"$nin": ["CT"]}}]}})
    c.check(st == 200 and ids(b["items"]) == want(series, lambda s: s["kvp"] >= 130 and s["modality"] != "CT"),
            "raw $and/$nin", b)


def test_fields(api):
    st, _, b = api.get("/api/fields", {"collection": "series"})
    c.check(st == 200 and b["collection"] == "series" and b["scanned"] == 60, "GET /api/fields series", b)
    if st != 200:
        return
    prom = {f["name"]: f for f in b["promoted"]}
    c.eq(prom["slice_thickness"]["count"], sum(1 for s in series if "slice_thickness" in s), "promoted field count")
    mods = {v["value"]: v["count"] for v in prom["modality"].get("values", [])}
    c.eq(mods.get("CT"), sum(1 for s in series if s["modality"] == "CT"), "promoted field values with counts")
    meta = {m["keyword"]: m["count"] for m in b["metadata"]}
    c.eq(meta.get("ConvolutionKernel"), 60, "metadata keyword count")
    c.eq(meta.get("SliceThickness"), sum(1 for s in series if "slice_thickness" in s), "metadata keyword partial count")
    st, _, b = api.get("/api/fields")
    c.check(st == 200 and b["collection"] == "studies", "fields defaults to studies", b)


def kcat_messages(topic, timeout=20):
    deadline = time.time() + timeout
    msgs = []
    while time.time() < deadline:
        r = run(["kcat", "-C", "-b", BROKERS, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"],
                timeout=30)
        msgs = [ln for ln in r.stdout.splitlines() if ln.strip()]
        if msgs:
            return msgs
        time.sleep(0.5)
    return msgs


def test_jobs(api):
    auth = {"Authorization": "Bearer " + TOKEN}
    job = {"researcher_id": "r1", "collection": "LIDC-IDRI", "accession_numbers": ["ACC00001", "ACC00002"],
           "patient_ids": ["LIDC-IDRI-0009"], "feature_set": "default"}
    st, h, b = api.post("/api/jobs", job, headers=auth)
    c.check(st == 202 and b.get("state") == "submitted" and len(b.get("job_id", "")) == 36, "POST /api/jobs -> 202", b)
    c.check(h.get("location") == "/api/jobs/%s" % b.get("job_id"), "Location header", h)
    msgs = kcat_messages(TOPIC_JOBS)
    found = [json.loads(m.split("\t", 1)[1]) for m in msgs if m.split("\t", 1)[0] == b.get("job_id")]
    c.check(len(found) == 1, "job message published on topic.jobs, keyed by job_id", msgs)
    if found:
        m = found[0]
        c.check(m.get("v") == 1 and m.get("accession_numbers") == job["accession_numbers"] and
                m.get("patient_ids") == job["patient_ids"] and m.get("researcher_id") == "r1" and
                m.get("collection") == "LIDC-IDRI" and m.get("submitted_at"), "job message content", m)
    # the producer would create the document; simulate two jobs
    db.jobs.insert_many([
        {"_id": "jr-1", "state": "running", "researcher_id": "r1", "collection": "LIDC-IDRI", "files_total": 10,
         "files_done": 4, "files_failed": 1, "instances_linked": 4, "errors": [], "selectors": [],
         "submitted_at": "2026-11-25T08:00:00.000Z", "updated_at": "2026-11-25T08:01:00.000Z"},
        {"_id": "jr-2", "state": "completed", "researcher_id": "r2", "collection": "LIDC-IDRI", "files_total": 3,
         "files_done": 3, "files_failed": 0, "instances_linked": 3, "errors": [], "selectors": [],
         "submitted_at": "2026-11-25T09:00:00.000Z", "updated_at": "2026-11-25T09:01:00.000Z"}])
    st, _, b = api.get("/api/jobs")
    c.check(st == 200 and [j["_id"] for j in b["items"]] == ["jr-2", "jr-1"], "GET /api/jobs newest first", b)
    c.check(st == 200 and all("errors" not in j for j in b["items"]), "job list leaves out error lists")
    st, _, b = api.get("/api/jobs", {"state": "running"})
    c.check(st == 200 and [j["_id"] for j in b["items"]] == ["jr-1"], "GET /api/jobs?state=running", b)
    st, _, b = api.get("/api/jobs/jr-1")
    c.check(st == 200 and abs(b.get("progress", -1) - 50.0) < 1e-9 and b["files_done"] == 4, "GET job progress 50%", b)
    st, _, b = api.get("/api/jobs/jr-2")
    c.check(st == 200 and b.get("progress") == 100, "completed job is 100%", b)


def test_ops(api):
    st, h, b = api.get("/healthz")
    c.check(st == 200 and b["status"] == "ok" and b["mongo"] == "ok", "GET /healthz", b)
    st, _, b = api.get("/api/lag", {"history": "true"})
    c.check(st == 200 and isinstance(b.get("groups"), list) and len(b["groups"]) >= 1 and "total_lag" in b,
            "GET /api/lag", b)
    c.check(st == 200 and isinstance(b.get("history"), list) and len(b["history"]) >= 1, "lag history kept", b)
    st, _, b = api.get("/api/lag", {"group": "t_api_%d-nogroup" % PID})
    c.check(st == 200 and b["groups"][0]["group"] == "t_api_%d-nogroup" % PID, "lag of a named group", b)
    st, h, text = api.get("/metrics")
    c.check(st == 200 and "metadb_api_requests_total" in text and "metadb_up" in text and
            h.get("content-type", "").startswith("text/plain"), "GET /metrics", text[:300])
    st, h, text = api.get("/")
    c.check(st == 200 and "<html" in text.lower() and "text/html" in h.get("content-type", ""), "dashboard index", h)
    c.check("default-src 'self'" in h.get("content-security-policy", ""), "dashboard CSP forbids external sources")
    st, h, _ = api.get("/app.js")
    c.check(st == 200 and "javascript" in h.get("content-type", ""), "static JS", h)


def test_cli(api):
    if not os.path.exists(CLI_BIN):
        c.check(False, "metadb CLI present", CLI_BIN)
        return
    base = [CLI_BIN, "--mongo.db=" + DB]
    r = run(base + ["query", "series", "--modality", "CT", "--body-part", "CHEST", "--slice-thickness", "lt:2.5",
                    "--study-date", "2000-2001", "--format", "json"])
    st, _, b = api.get("/api/series", [("modality", "CT"), ("body_part", "CHEST"), ("slice_thickness", "lt:2.5"),
                                       ("study_date", "2000-2001"), ("limit", "1000")])
    c.check(r.returncode == 0, "metadb query series (json) exits 0", r.stderr)
    if r.returncode == 0:
        c.eq(ids(json.loads(r.stdout)["items"]), ids(b["items"]), "CLI and API give the same series")
    r = run(base + ["query", "studies", "--patient", "LIDC-IDRI-00*", "--study-date", "2000-2001", "--format", "csv",
                    "--fields", "patient_id,study_date"])
    lines = r.stdout.strip().splitlines()
    c.check(r.returncode == 0 and lines[0] == "_id,patient_id,study_date" and
            sorted(ln.split(",")[0] for ln in lines[1:]) ==
            want(studies, lambda s: s["patient_id"].startswith("LIDC-IDRI-00") and
                 in_range(s["study_date"], "20000101", "20011231")), "CLI csv output", r.stdout + r.stderr)
    r = run(base + ["query", "raw", '{"filter": {"modality": "CR"}}', "--collection", "series"])
    c.check(r.returncode == 0 and "(%d of %d series)" % ((n := sum(1 for s in series if s["modality"] == "CR")), n)
            in r.stdout, "CLI raw query, table output", r.stdout + r.stderr)
    r = run(base + ["query", "raw", '{"filter": {"$where": "1"}}'])
    c.check(r.returncode == 2 and "JavaScript" in r.stderr, "CLI refuses $where with the reason", r.stderr)
    r = run(base + ["query", "studies", "--colour", "red"])
    c.check(r.returncode == 2 and "unknown filter field 'colour'" in r.stderr, "CLI refuses unknown field", r.stderr)


BIG = "x" * (1024 * 1024 + 10)
DEEP = '{"filter":' + '{"$and":[' * 60 + '{"a":1}' + ']}' * 60 + '}'
AUTH = {"Authorization": "Bearer " + TOKEN}
JSON_CT = {"Content-Type": "application/json"}

# (method, path, body, headers, status, error code)
BAD = [
    ("GET", "/api/studies?foo=1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?study_date=2001-13-45", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?study_date=yesterday", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?study_date=2002-2001", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?slice_thickness=thin", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?slice_thickness=lt:", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?slice_thickness=lt:abc", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?slice_thickness=1*", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?body_part=exists:perhaps", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?modality=", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?modality=CT,,MR", None, {}, 400, "bad_parameter"),
    ("GET", "/api/series?modality=%FF%FE", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?metadata.bad-key=1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?metadata.$where=1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?$where=1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?limit=-1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?limit=-5", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?limit=abc", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?limit=1001", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?limit=99999999999999999999999", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?offset=-1", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?offset=999999999999", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?sort=shoe_size", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?sort=", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?fields=password", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?total=maybe", None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies?modality=" + "A" * 9000, None, {}, 400, "bad_parameter"),
    ("GET", "/api/studies/1.2%20OR%201", None, {}, 400, "bad_uid"),
    ("GET", "/api/studies/1.2;drop", None, {}, 400, "bad_uid"),
    ("GET", "/api/studies/" + "1" * 200, None, {}, 400, "bad_uid"),
    ("GET", "/api/studies/1.2.999.999", None, {}, 404, "not_found"),
    ("GET", "/api/series/1.2.999.999", None, {}, 404, "not_found"),
    ("GET", "/api/instances/1.2.999.999", None, {}, 404, "not_found"),
    ("GET", "/api/studies/1.2/extra", None, {}, 404, "not_found"),
    ("GET", "/api/nothing", None, {}, 404, "not_found"),
    ("POST", "/api/studies", "{}", JSON_CT, 405, "method_not_allowed"),
    ("DELETE", "/api/jobs", None, {}, 405, "method_not_allowed"),
    ("PUT", "/api/query", "{}", JSON_CT, 405, "method_not_allowed"),
    ("GET", "/api/query", None, {}, 405, "method_not_allowed"),
    ("POST", "/healthz", "", {}, 405, "method_not_allowed"),
    ("POST", "/api/query", "{not json", JSON_CT, 400, "bad_json"),
    ("POST", "/api/query", "[1,2]", JSON_CT, 400, "bad_json"),
    ("POST", "/api/query", "", JSON_CT, 400, "bad_json"),
    ("POST", "/api/query", '{"filter":{},"filter":{}}', JSON_CT, 400, "bad_json"),
    ("POST", "/api/query", "{}", {"Content-Type": "image/png"}, 415, "unsupported_media_type"),
    ("POST", "/api/query", '{"filter":{"$where":"sleep(1000)"}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter":{"$expr":{"$function":{"body":"x","args":[],"lang":"js"}}}}', JSON_CT, 400,
     "bad_query"),
    ("POST", "/api/query", '{"filter":{"$expr":{"$accumulator":{}}}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"pipeline":[{"$out":"stolen"}]}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"$merge":"x"}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter":{"a":{"$foo":1}}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter":{"a.$b":1}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"collection":"researchers"}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"collection":"system.users"}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"limit":100000}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"limit":"ten"}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"skip":-3}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"sort":{"a":"up"}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"projection":{"a":1,"b":0}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter":{"d":{"$date":"2000-01-01"}}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", DEEP, JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter":{"a":{"$regex":"("}}}', JSON_CT, 400, "bad_query"),
    ("POST", "/api/query", '{"filter": ' + BIG + '}', JSON_CT, 413, "body_too_large"),
    ("GET", "/api/fields?collection=patients", None, {}, 400, "bad_parameter"),
    ("GET", "/api/fields?colour=red", None, {}, 400, "bad_parameter"),
    ("POST", "/api/jobs", '{"accession_numbers":["A"]}', JSON_CT, 401, "unauthorized"),
    ("POST", "/api/jobs", '{"accession_numbers":["A"]}', dict(JSON_CT, Authorization="Bearer wrong"), 403,
     "forbidden"),
    ("POST", "/api/jobs", '{"accession_numbers":["A"]}', dict(JSON_CT, Authorization="Basic eDp5"), 401,
     "unauthorized"),
    ("POST", "/api/jobs", "{oops", dict(JSON_CT, **AUTH), 400, "bad_json"),
    ("POST", "/api/jobs", '{"researcher_id":"r1"}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":"A1"}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":[1,2]}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":[""]}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":["A\\u0001"]}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"all_cases":true}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"all_cases":"yes","collection":"C"}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":["A"],"priority":9}', dict(JSON_CT, **AUTH), 400, "bad_job"),
    ("POST", "/api/jobs", '{"accession_numbers":["A"],"feature_set":"../../etc"}', dict(JSON_CT, **AUTH), 400,
     "bad_job"),
    ("GET", "/api/jobs?limit=0", None, {}, 400, "bad_parameter"),
    ("GET", "/api/jobs?colour=red", None, {}, 400, "bad_parameter"),
    ("GET", "/api/jobs/bad%20id", None, {}, 400, "bad_job_id"),
    ("GET", "/api/jobs/no-such-job", None, {}, 404, "not_found"),
    ("GET", "/api/lag?group=bad%20group", None, {}, 400, "bad_parameter"),
    ("GET", "/api/lag?colour=red", None, {}, 400, "bad_parameter"),
    ("GET", "/api/lag?history=perhaps", None, {}, 400, "bad_parameter"),
    ("GET", "/../../etc/passwd", None, {}, 404, "not_found"),
    ("GET", "/%2e%2e/%2e%2e/etc/passwd", None, {}, 404, "not_found"),
    ("GET", "/.git/config", None, {}, 404, "not_found"),
    ("GET", "/nonexistent.html", None, {}, 404, "not_found"),
]


def test_bad_inputs(api):
    for method, path, body, headers, status, error in BAD:
        what = "%s %s -> %d %s" % (method, path[:70], status, error)
        try:
            st, h, b = api.request(method, path, body=body, headers=headers)
        except Exception as e:  # a dropped connection is a failure, not a pass
            c.check(False, what, repr(e))
            continue
        ok = st == status and isinstance(b, dict) and b.get("error") == error and isinstance(b.get("detail"), str) \
            and len(b["detail"]) > 0
        c.check(ok, what, "got %d %r" % (st, b))
    st, _, b = api.get("/healthz")
    c.check(st == 200, "server alive after the bad-input table", b)
    c.check(api.proc.poll() is None, "process still running")


def test_static():
    """A private web root with a subfolder, a secret next to it and a symlink out."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        web = os.path.join(tmp, "web")
        os.makedirs(os.path.join(web, "sub"))
        with open(os.path.join(web, "index.html"), "w") as f:
            f.write("<html>hi</html>")
        with open(os.path.join(web, "sub", "a.css"), "w") as f:
            f.write("body{}")
        with open(os.path.join(tmp, "secret.txt"), "w") as f:
            f.write("secret")
        os.symlink(os.path.join(tmp, "secret.txt"), os.path.join(web, "link.txt"))
        with Api(DB, "--api.web_dir=" + web) as api:
            st, h, b = api.get("/")
            c.check(st == 200 and b == "<html>hi</html>", "index.html served for /", b)
            st, h, b = api.get("/sub/a.css")
            c.check(st == 200 and h["content-type"].startswith("text/css"), "file in a subfolder", h)
            for path in ("/sub/", "/sub", "/link.txt", "/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt"):
                st, _, b = api.request("GET", path)
                c.check(st in (403, 404) and isinstance(b, dict) and "secret" not in json.dumps(b.get("error")),
                        "refused: " + path, (st, b))


def test_read_tokens():
    with Api(DB, "--api.read_tokens=" + READ_TOKEN, "--api.tokens=" + TOKEN, "--topic.jobs=" + TOPIC_JOBS) as api:
        st, h, b = api.get("/api/studies")
        c.check(st == 401 and b["error"] == "unauthorized" and "bearer" in h.get("www-authenticate", "").lower(),
                "reads need a token when api.read_tokens is set", b)
        st, _, b = api.get("/api/studies", headers={"Authorization": "Bearer nope"})
        c.check(st == 401, "a wrong read token is refused", b)
        st, _, b = api.get("/api/studies", headers={"Authorization": "Bearer " + READ_TOKEN})
        c.check(st == 200 and b["total"] == 30, "the read token works", b)
        st, _, b = api.post("/api/jobs", {"accession_numbers": ["A"]}, headers={"Authorization": "Bearer " + READ_TOKEN})
        c.check(st == 403, "a read token cannot submit jobs", b)
        st, _, b = api.get("/healthz")
        c.check(st == 200, "healthz needs no token", b)
    with Api(DB) as api:
        st, _, b = api.post("/api/jobs", {"accession_numbers": ["A"]}, headers=AUTH)
        c.check(st == 403 and b["error"] == "submission_disabled", "submission disabled without api.tokens", b)


def test_bind_default():
    r = run([API_BIN, "--help"])
    c.check(r.returncode == 0 and "127.0.0.1:8080" in r.stdout, "binds 127.0.0.1:8080 by default", r.stdout[-500:])


def main():
    try:
        r = run([CLI_BIN, "--topic.jobs=" + TOPIC_JOBS, "--topic.files=" + TOPIC_JOBS + ".f",
                 "--topic.instances=" + TOPIC_JOBS + ".i", "--topic.dlq=" + TOPIC_JOBS + ".d", "topics",
                 "--partitions=1"])
        c.check(r.returncode == 0, "create test topics", r.stderr)
        with Api(DB, "--api.tokens=" + TOKEN, "--topic.jobs=" + TOPIC_JOBS, "--worker.group=t_api_%d-w" % PID,
                 "--linker.group=t_api_%d-l" % PID, "--producer.group=t_api_%d-p" % PID) as api:
            test_database_answers(api)
            test_filters(api)
            test_paging_sort_fields(api)
            test_details(api)
            test_raw(api)
            test_fields(api)
            test_jobs(api)
            test_ops(api)
            test_cli(api)
            test_bad_inputs(api)
            rc = api.stop()
            c.eq(rc, 0, "metadb-api exits 0 on SIGTERM")
            if c.failed:
                print(api.logtext()[-3000:])
        test_database_errors()
        test_read_tokens()
        test_static()
        test_bind_default()
    finally:
        client.drop_database(DB)
        client.close()
    c.finish()


if __name__ == "__main__":
    main()
