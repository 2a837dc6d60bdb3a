#!/usr/bin/python3
"""Cohort export against the live stack (issue 15): metadb-api streams every
matching row as CSV / JSON / NDJSON, the CSV is byte for byte what
`metadb export` writes for the same filter, the manifest lists exactly the
cohort's files with their sizes and the sidecar counts them, parent fields
(study.*, series.*) and study-level counts (instance_count, series_count)
filter, sort and show what the catalogue holds, "Open as raw query"'s raw
form matches the same rows, and bad requests answer 400 with the JSON error
body (never a cut stream).

A synthetic catalogue of 40 studies, 80 series and 3,200 instances (more than
the API's largest page, and a CSV of several 64 KiB chunks) is written to a
private database t_export_<pid>; every expected answer is computed here from
those documents, independently of the C code. The API reads as the
read-only user when the stack provides one."""
import csv
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import Api, Checker, CLI_BIN, MONGO_URI, make_catalogue, mongo_db, run, seed  # noqa: E402

PID = os.getpid()
DB = "t_export_%d" % PID
RO_URI = os.environ.get("MDB_TEST_MONGO_RO_URI") or os.environ.get("METADB_API_MONGO_URI")

c = Checker()
client, db = mongo_db(DB)
studies, series, instances = make_catalogue(n_studies=40, per_series=40)
# what the linker stores besides make_catalogue's fields: study counts, file sizes
for k, st in enumerate(studies):
    mine = [s for s in series if s["study_id"] == st["_id"]]
    st["series_count"] = len(mine) - (1 if st["_id"].endswith(".1005") else 0)  # one study's summary lags
    st["instance_count"] = sum(s["instance_count"] for s in mine) + k % 4  # 80..83: the filter's answer varies
for n, inst in enumerate(instances):
    inst["file"] = {"size": 500000 + (n * 7919) % 10007, "mtime": 1700000000}
    if n % 97 == 5:
        inst["paths"].append(inst["paths"][0].replace("/archive/", "/mirror/"))  # one instance, two files
seed(db, studies, series, instances)
study_by_id = {s["_id"]: s for s in studies}
series_by_id = {s["_id"]: s for s in series}


def get_text(api, path, params):
    """(status, headers, body text) without parsing: NDJSON is not one JSON value."""
    import http.client
    import urllib.parse
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    conn.request("GET", path + "?" + urllib.parse.urlencode(params, doseq=True))
    r = conn.getresponse()
    data = r.read().decode("utf-8")
    h = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, h, data


def cli(*args):
    """metadb export ARGS; stdout kept byte for byte (CRLF and all)."""
    import subprocess
    r = subprocess.run([CLI_BIN, "--mongo.uri=" + MONGO_URI, "--mongo.db=" + DB, "export"] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r.stdout = r.stdout.decode("utf-8")
    r.stderr = r.stderr.decode("utf-8", "replace")
    return r


def cell(v):
    """The CSV text of a catalogue value, as docs/api.md describes it."""
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(cell(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def parse_csv(text):
    return list(csv.reader(io.StringIO(text, newline="")))


def test_stream_all_rows(api):
    st, h, body = api.get("/api/instances", {"format": "csv", "fields": "instance_number,series.modality,study.patient_id"})
    c.eq(st, 200, "instances?format=csv: 200")
    c.check(h.get("content-type", "").startswith("text/csv"), "CSV content type", h)
    disp = h.get("content-disposition", "")
    c.check(disp.startswith("attachment; filename=\"metadb-instances-") and disp.endswith(".csv\""),
            "Content-Disposition names a .csv file", disp)
    c.check("chunked" in h.get("transfer-encoding", ""), "streamed (chunked), not one buffered body", h)
    rows = parse_csv(body)
    c.eq(rows[0], ["_id", "instance_number", "series.modality", "study.patient_id"], "CSV header: the columns asked for")
    c.eq(len(rows) - 1, len(instances), "every instance is exported (3,200 rows; the largest page is 1,000)")
    want = sorted([i["_id"], str(i["instance_number"]), series_by_id[i["series_id"]]["modality"],
                   study_by_id[i["study_id"]]["patient_id"]] for i in instances)
    c.eq(sorted(rows[1:]), want, "every row's own and parent values are the catalogue's")
    c.eq([r[0] for r in rows[1:]], sorted(i["_id"] for i in instances), "rows in _id order (the default sort)")
    c.check(body.endswith("\r\n") and "\r\n" in body[:200], "CRLF line ends", body[-20:])
    # json and ndjson: the same rows
    st, h, arr = api.get("/api/series", {"format": "json", "modality": "CT", "fields": "series_number,study.study_date"})
    cts = [s for s in series if s["modality"] == "CT"]
    c.check(st == 200 and isinstance(arr, list) and len(arr) == len(cts), "series?format=json: a JSON array of every CT series",
            (st, str(arr)[:200]))
    c.check(all(d["study"]["study_date"] == study_by_id[series_by_id[d["_id"]]["study_id"]]["study_date"] for d in arr),
            "JSON rows carry study.study_date nested under study")
    st, h, text = get_text(api, "/api/series", {"format": "ndjson", "modality": "CT"})
    lines = [json.loads(x) for x in text.splitlines()]
    c.check(st == 200 and h.get("content-type", "").startswith("application/x-ndjson") and len(lines) == len(cts),
            "series?format=ndjson: one JSON object per line", (st, h.get("content-type"), len(lines)))
    # limit caps an export; the page's 1000 does not
    st, _, body = api.get("/api/instances", {"format": "csv", "limit": "1500"})
    c.eq(len(parse_csv(body)) - 1, 1500, "format=csv&limit=1500: 1,500 rows (above the page maximum)")
    st, _, body = api.get("/api/instances", {"format": "csv", "series_id": "no.such.series"})
    c.check(st == 200 and len(parse_csv(body)) == 1, "an empty cohort: 200 and the header alone", (st, body[:200]))


def test_same_as_cli(api):
    cases = [
        ("series", [("modality", "CT"), ("study_date", "2000-2002"), ("fields", "series_number,modality,slice_thickness,study.patient_id,study.study_date"),
                    ("sort", "-study.study_date,series_number")]),
        ("studies", [("instance_count", "gt:80"), ("fields", "patient_id,series_count,instance_count,modalities,metadata.PatientAge")]),
        ("instances", [("series.modality", "CT"), ("study.patient_id", "LIDC-IDRI-000*")]),
        ("studies", []),
    ]
    for level, params in cases:
        st, _, body = api.get("/api/" + level, params + [("format", "csv")])
        args = [level]
        for k, v in params:
            args += ["--where", "%s=%s" % (k, v)] if k not in ("fields", "sort") else ["--" + k, v]
        r = cli(*args)
        c.check(st == 200 and r.returncode == 0 and r.stdout == body and len(body) > 100,
                "API CSV == `metadb export %s` for %s (%d bytes)" % (level, params, len(body)),
                (st, r.returncode, r.stderr[:300], body[:300], r.stdout[:300]))
    # ndjson too
    st, _, body = get_text(api, "/api/series", {"format": "ndjson", "body_part": "CHEST", "fields": "modality,study.patient_id"})
    r = cli("series", "--body-part", "CHEST", "--fields", "modality,study.patient_id", "--format", "ndjson")
    c.check(r.returncode == 0 and r.stdout == body, "API NDJSON == `metadb export --format ndjson`", r.stderr)
    # --output writes the same file
    out = "/tmp/t_export_%d.csv" % PID
    r = cli("studies", "--output", out)
    with open(out, newline="") as f:
        data = f.read()
    os.unlink(out)
    st, _, body = api.get("/api/studies", {"format": "csv"})
    c.check(r.returncode == 0 and data == body and "40 rows" in r.stderr, "metadb export --output FILE", r.stderr)
    r = cli("studies", "--study-nonsense", "1")
    c.check(r.returncode == 2 and "study_nonsense" in r.stderr, "metadb export: a bad filter is a usage error", r.stderr)
    r = cli("series", "--format", "xlsx")
    c.check(r.returncode == 2 and "csv, json or ndjson" in r.stderr, "metadb export: a bad format is a usage error", r.stderr)


def test_counts(api):
    def ids_of(params):
        st, _, b = api.get("/api/studies", params + [("limit", "1000"), ("fields", "instance_count,series_count")])
        return st, b
    for value, pred in (("gt:80", lambda s: s["instance_count"] > 80), ("lt:81", lambda s: s["instance_count"] < 81),
                        ("80", lambda s: s["instance_count"] == 80), ("eq:81", lambda s: s["instance_count"] == 81),
                        ("81-82", lambda s: 81 <= s["instance_count"] <= 82)):
        st, b = ids_of([("instance_count", value)])
        want = sorted(s["_id"] for s in studies if pred(s))
        c.check(st == 200 and sorted(d["_id"] for d in b["items"]) == want and b["total"] == len(want) and want,
                "studies?instance_count=%s: %d studies" % (value, len(want)), (st, b if st != 200 else b["total"]))
    st, b = ids_of([("series_count", "1")])
    want = sorted(s["_id"] for s in studies if s["series_count"] == 1)
    c.check(st == 200 and sorted(d["_id"] for d in b["items"]) == want and len(want) == 1,
            "studies?series_count=1: the study whose summary says 1", b)
    st, b = ids_of([("sort", "-instance_count")])
    want = [s["_id"] for s in sorted(studies, key=lambda s: (-s["instance_count"], s["_id"]))]
    c.check(st == 200 and [d["_id"] for d in b["items"]] == want, "studies?sort=-instance_count: by count, then UID", b)
    st, _, b = api.get("/api/series", {"study.instance_count": "gt:81", "limit": "1000"})
    big = {s["_id"] for s in studies if s["instance_count"] > 81}
    want = sorted(s["_id"] for s in series if s["study_id"] in big)
    c.check(st == 200 and sorted(d["_id"] for d in b["items"]) == want and want,
            "series?study.instance_count=gt:81: series of the big studies", b)


def test_parent_fields(api):
    st, _, b = api.get("/api/series", {"fields": "series_number,study.patient_id,study.study_date", "sort": "-study.study_date",
                                        "limit": "1000"})
    c.eq(st, 200, "series?fields=study.patient_id,study.study_date&sort=-study.study_date: 200")
    items = b.get("items", [])
    ok = all(d["study"] == {"patient_id": study_by_id[series_by_id[d["_id"]]["study_id"]]["patient_id"],
                            "study_date": study_by_id[series_by_id[d["_id"]]["study_id"]]["study_date"]} for d in items)
    c.check(ok and len(items) == len(series), "each series carries its study's patient_id and study_date", items[:2])
    want = [s["_id"] for s in sorted(series, key=lambda s: s["_id"])]
    want.sort(key=lambda i: study_by_id[series_by_id[i]["study_id"]]["study_date"], reverse=True)
    c.eq([d["_id"] for d in items], want, "sorted by the study's date (newest first), then UID")
    # paging through a parent sort: pages join up
    got = []
    for off in range(0, len(series), 30):
        st, _, p = api.get("/api/series", {"sort": "-study.study_date", "limit": "30", "offset": str(off), "fields": "_id"})
        got += [d["_id"] for d in p["items"]]
    c.eq(got, want, "pages of a parent-sorted list join up")
    # instances: series.* and study.*
    st, _, b = api.get("/api/instances", {"fields": "series.modality,series.body_part_examined,study.patient_id",
                                           "series_id": series[3]["_id"], "limit": "100"})
    se = series[3]
    c.check(st == 200 and len(b["items"]) == 40 and all(
        d["series"] == {"modality": se["modality"], "body_part_examined": se["body_part_examined"]} and
        d["study"] == {"patient_id": study_by_id[se["study_id"]]["patient_id"]} for d in b["items"]),
        "instances carry series.* and study.* fields", b)
    st, _, b = api.get("/api/instances", {"sort": "series.series_number,-instance_number", "limit": "5", "fields": "instance_number"})
    firsts = sorted(instances, key=lambda i: (series_by_id[i["series_id"]]["series_number"], -i["instance_number"], i["_id"]))[:5]
    c.eq([d["_id"] for d in b.get("items", [])], [i["_id"] for i in firsts], "instances sorted by series.series_number")
    # a study field as filter by its explicit name, and metadata of a parent
    st, _, b = api.get("/api/series", {"study.metadata.PatientSex": "F", "limit": "1000"})
    want = sorted(s["_id"] for s in series if study_by_id[s["study_id"]]["metadata"]["PatientSex"] == "F")
    c.check(st == 200 and sorted(d["_id"] for d in b["items"]) == want, "series?study.metadata.PatientSex=F", b)


def test_parent_sorted_pages(api):
    """Pages sorted by a parent field join only the parents that can hold
    the page: whatever the shortcut, every page equals the full sort
    (descending: rows of missing parents come last; ascending needs parent
    conditions; ties on the boundary parent's value are all kept)."""
    def expect(rows, keys):
        out = sorted(rows, key=lambda r: r["_id"])
        for key, direction in reversed(keys):
            out.sort(key=key, reverse=direction < 0)
        return [r["_id"] for r in out]
    st_of = lambda i: study_by_id[i["study_id"]]  # noqa: E731
    cases = [
        ("-study.study_date", {}, [(lambda i: st_of(i)["study_date"], -1)], instances),
        ("-study.study_date,instance_number", {"series.modality": "CT"},
         [(lambda i: st_of(i)["study_date"], -1), (lambda i: i["instance_number"], 1)],
         [i for i in instances if series_by_id[i["series_id"]]["modality"] == "CT"]),
        ("-study.study_date,study.patient_id", {}, [(lambda i: st_of(i)["study_date"], -1),
                                                    (lambda i: st_of(i)["patient_id"], 1)], instances),
        ("study.study_date", {"study_date": "2000-2002"}, [(lambda i: st_of(i)["study_date"], 1)],
         [i for i in instances if "20000101" <= st_of(i)["study_date"] <= "20021231"]),
        ("study.study_date", {}, [(lambda i: st_of(i)["study_date"], 1)], instances),
        ("-series.instance_count,-instance_number", {"instance_number": "1-3"},
         [(lambda i: series_by_id[i["series_id"]]["instance_count"], -1), (lambda i: i["instance_number"], -1)],
         [i for i in instances if i["instance_number"] <= 3]),
    ]
    for sort, params, keys, rows in cases:
        want = expect(rows, keys)
        for offset, limit in ((0, 50), (37, 50), (400, 120), (len(want) - 20, 50)):
            p = dict(params, sort=sort, limit=str(limit), offset=str(max(0, offset)), fields="instance_number")
            st, _, b = api.get("/api/instances", p)
            c.check(st == 200 and [d["_id"] for d in b["items"]] == want[max(0, offset):max(0, offset) + limit],
                    "instances sort=%s %s offset %d: the page of the full sort" % (sort, params, max(0, offset)),
                    (st, str(b)[:300]))


def test_raw_carries_everything(api):
    params = {"study_date": "2000-2002", "modality": "CT", "sort": "-study.study_date", "fields": "modality,study.patient_id",
              "limit": "1000"}
    st, _, b = api.get("/api/series", params)
    raw = b.get("raw")
    c.check(st == 200 and raw and raw.get("parents", {}).get("studies"), "the list answers with its raw form, parents included", b)
    st, _, r = api.post("/api/query", raw)
    c.check(st == 200 and [d["_id"] for d in r["items"]] == [d["_id"] for d in b["items"]] and r["total"] == b["total"],
            "the raw form returns the same rows, in the same order (%d)" % b.get("total", -1), (st, r))
    only_own = dict(raw)
    only_own.pop("parents")
    st, _, r2 = api.post("/api/query", only_own)
    c.check(st == 200 and r2["total"] > b["total"], "without its parents the raw query would match more (%s > %s)" % (
        r2.get("total"), b.get("total")), r2)
    st, _, b = api.get("/api/series", {"series_description": "ne:Axial*,x", "limit": "5"})
    c.check(st == 200 and "raw" not in b and "wildcard" in b.get("raw_refused", ""),
            "a condition with no JSON form: no raw form, and the reason", b)


def test_manifest(api):
    params = [("level", "series"), ("modality", "CT"), ("study_date", "2000-2001")]
    st, h, body = api.get("/api/export/manifest", params)
    c.eq(st, 200, "manifest: 200")
    c.check('filename="metadb-manifest-series-' in h.get("content-disposition", ""), "manifest file name", h)
    rows = parse_csv(body)
    c.eq(rows[0], ["path", "sop_instance_uid", "series_instance_uid", "study_instance_uid", "size"], "manifest header")
    cohort = {s["_id"] for s in series if s["modality"] == "CT" and "20000101" <= study_by_id[s["study_id"]]["study_date"] <= "20011231"}
    want = sorted([p, i["_id"], i["series_id"], i["study_id"], str(i["file"]["size"])]
                  for i in instances if i["series_id"] in cohort for p in i["paths"])
    c.eq(sorted(rows[1:]), want, "manifest: exactly the cohort's files with their sizes (%d)" % len(want))
    c.check(any(r[0].startswith("/mirror/") for r in rows[1:]) or not any(
        len(i["paths"]) > 1 for i in instances if i["series_id"] in cohort), "an instance in two files gives two lines")
    r = cli("manifest", "series", "--modality", "CT", "--study-date", "2000-2001", "--sidecar", "/tmp/t_export_%d.json" % PID)
    c.check(r.returncode == 0 and r.stdout == body, "metadb export manifest == the API's manifest", r.stderr)
    with open("/tmp/t_export_%d.json" % PID) as f:
        cli_side = json.load(f)
    os.unlink("/tmp/t_export_%d.json" % PID)
    for path in ("/api/export/sidecar", "/api/export/manifest.json"):
        st, _, side = api.get(path, params)
        cinst = [i for i in instances if i["series_id"] in cohort]
        want_counts = {"rows": len(cohort), "instances": len(cinst), "files": sum(len(i["paths"]) for i in cinst),
                       "bytes": sum(len(i["paths"]) * i["file"]["size"] for i in cinst),
                       "series": len(cohort), "studies": len({i["study_id"] for i in cinst})}
        c.check(st == 200 and side.get("counts") == want_counts, "%s: counts of the cohort %s" % (path, want_counts), side)
        c.check(side.get("metadb_version") and side.get("generated_at", "").endswith("Z") and side.get("level") == "series"
                and side.get("parameters") == [["modality", "CT"], ["study_date", "2000-2001"]],
                "sidecar: version, time, level, the parameters as given", side)
        c.eq(side.get("catalogue", {}).get("instances"), len(instances), "sidecar: the catalogue's instance count")
        st, _, again = api.post("/api/query", dict(side.get("query", {}), limit=1000))
        c.check(st == 200 and sorted(d["_id"] for d in again["items"]) == sorted(cohort),
                "sidecar: its query, run as a raw query, gives the cohort back", again)
    c.eq(cli_side.get("counts"), side.get("counts"), "metadb export manifest --sidecar: the same counts")
    st, _, body = get_text(api, "/api/export/manifest", [("level", "studies"), ("patient_id", "LIDC-IDRI-0001"), ("format", "ndjson")])
    lines = [json.loads(x) for x in body.splitlines()]
    want = sum(len(i["paths"]) for i in instances if study_by_id[i["study_id"]]["patient_id"] == "LIDC-IDRI-0001")
    c.check(st == 200 and len(lines) == want and all(set(x) == {"path", "sop_instance_uid", "series_instance_uid",
                                                              "study_instance_uid", "size"} for x in lines),
            "manifest of a study cohort as NDJSON (%d files)" % want, body[:300])


def test_bad_requests(api):
    for path, params, code, needle in (
            ("/api/series", {"format": "xlsx"}, 400, "csv, json or ndjson"),
            ("/api/series", {"format": "csv", "bogus": "1"}, 400, "bogus"),
            ("/api/series", {"format": "csv", "slice_thickness": "thin"}, 400, "slice_thickness"),
            ("/api/series", {"format": "csv", "limit": "0"}, 400, "limit"),
            ("/api/series", {"fields": "series.modality"}, 400, "series.modality"),
            ("/api/series", {"sort": "study.nonsense"}, 400, "study.nonsense"),
            ("/api/studies", {"instance_count": "gt:lots"}, 400, "instance_count"),
            ("/api/studies", {"study.patient_id": "x"}, 400, "study.patient_id"),
            ("/api/export/manifest", {"modality": "CT"}, 400, "level"),
            ("/api/export/manifest", {"level": "patients"}, 400, "level"),
            ("/api/export/manifest", {"level": "series", "fields": "modality"}, 400, "fields"),
            ("/api/export/manifest", {"level": "series", "limit": "5"}, 400, "limit"),
            ("/api/export/sidecar", {"level": "series", "format": "csv"}, 400, "format"),
            ("/api/export/sidecar", {"level": "series", "modality": "ne:"}, 400, "modality"),
            ("/api/export/nothing", {}, 404, "")):
        st, h, b = api.get(path, params)
        c.check(st == code and isinstance(b, dict) and needle in b.get("detail", "") and "json" in h.get("content-type", ""),
                "%s %s: %d with the reason" % (path, params, code), (st, b))
    st, _, b = api.post("/api/query", {"collection": "series", "parents": {"series": {}}})
    c.check(st == 400 and "parents" in b.get("detail", ""), "raw parents naming a non-parent: 400", b)
    st, _, b = api.request("POST", "/api/export/manifest", body="{}")
    c.eq(st, 405, "POST on the manifest: 405")


def test_client_goes_away(api):
    """A client that leaves mid-download ends the export (its cursor, thread
    and connections); the server keeps answering."""
    import http.client
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
        conn.request("GET", "/api/instances?format=csv&fields=paths,study.patient_id,series.modality")
        r = conn.getresponse()
        first = r.read(1000)
        conn.close()
        c.check(r.status == 200 and first.startswith(b"_id,paths,"), "a download cut after 1,000 bytes", first[:80])
    # the server ends the cut exports on its own time; until then a busy answer is allowed, a cut one is not
    end = time.monotonic() + 15
    while True:
        st, _, body = api.get("/api/studies", {"format": "csv"})
        if st not in (429, 503) or time.monotonic() > end:
            break
        time.sleep(0.2)
    c.check(st == 200 and len(parse_csv(body)) == len(studies) + 1, "the next export is whole", (st, body[:200]))


def test_database_refusal():
    """A database that refuses the export is an error answer before any byte,
    never a 200 with a cut or empty file."""
    uri = "mongodb://metadb_ro:wrong@127.0.0.1:27017/?authSource=admin&serverSelectionTimeoutMS=2000"
    with Api(DB, "--api.mongo_uri=" + uri) as api:
        for path, params in (("/api/instances", {"format": "csv"}), ("/api/series", {"format": "json", "study_date": "2001"}),
                             ("/api/export/manifest", {"level": "studies"}), ("/api/export/sidecar", {"level": "studies"})):
            st, h, b = api.get(path, params)
            c.check(st == 503 and isinstance(b, dict) and b.get("error") == "backend_unavailable",
                    "%s %s with a refused login: 503 JSON error, not a stream" % (path, params), (st, str(b)[:200]))


def main():
    t0 = time.time()
    try:
        extra = ["--api.mongo_uri=" + RO_URI] if RO_URI else []
        with Api(DB, *extra) as api:
            test_stream_all_rows(api)
            test_same_as_cli(api)
            test_counts(api)
            test_parent_fields(api)
            test_parent_sorted_pages(api)
            test_raw_carries_everything(api)
            test_manifest(api)
            test_bad_requests(api)
            test_client_goes_away(api)
            c.eq(api.stop(), 0, "metadb-api exits 0 after the exports (no sanitizer report, no stuck stream)")
            if c.failed:
                print(api.logtext()[-3000:])
        test_database_refusal()
    finally:
        client.drop_database(DB)
        client.close()
    print("%.1f s" % (time.time() - t0))
    c.finish()


if __name__ == "__main__":
    main()
