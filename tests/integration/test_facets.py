#!/usr/bin/python3
"""GET /api/facets against the live stack: value counts, numeric histograms
and date bins for several fields and filters must equal the counts computed
here in Python from the same synthetic catalogue (independently of the C
pipeline builder); every bin's "filter" given back to the list endpoint must
select exactly that bin's count (the dashboard's click-to-filter contract);
bad input answers 400 with a reason; a read token is enforced.

The catalogue (30 studies, 60 series, 300 instances) is written to a private
database t_facets_<pid> and dropped at the end."""
import collections
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import Api, Checker, make_catalogue, mongo_db, seed  # noqa: E402

PID = os.getpid()
DB = "t_facets_%d" % PID
READ_TOKEN = "tok-%d-facets-read-0123" % PID

c = Checker()
client, db = mongo_db(DB)
studies, series, instances = make_catalogue()
# a few awkward values: a missing manufacturer, a comma in a value, a series without a date
series[3].pop("manufacturer")
series[4]["manufacturer"] = "ACME, Inc."
series[5].pop("series_date")
series[6]["series_date"] = "2001"  # malformed DA: counts as missing
# more distinct instance numbers than the first aggregation lists (1,000): a second one bins them
for k in range(1100):
    iuid = "%s.x%d" % (series[0]["_id"], k)
    instances.append({"_id": iuid, "sop_instance_uid": iuid, "series_id": series[0]["_id"],
                      "study_id": series[0]["study_id"], "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                      "instance_number": 1000 + k * 0.5})
seed(db, studies, series, instances)
study_by_id = {s["_id"]: s for s in studies}
series_by_id = {s["_id"]: s for s in series}


def as_list(v):
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def values_expected(docs, path, top):
    counts = collections.Counter()
    missing = 0
    for d in docs:
        vs = as_list(d.get(path)) if "." not in path else as_list(d.get("metadata", {}).get(path.split(".", 1)[1]))
        if path == "modality" and "modalities" in d:
            vs = as_list(d["modalities"])
        vs = [v for v in vs if v is not None]
        if not vs:
            missing += 1
        counts.update(vs)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    listed = ranked[:top]
    return {"values": [[v, n] for v, n in listed], "other": sum(counts.values()) - sum(n for _, n in listed),
            "distinct": len(counts), "missing": missing}


def dates_expected(docs, path, length):
    counts = collections.Counter()
    missing = 0
    for d in docs:
        v = d.get(path)
        if isinstance(v, str) and len(v) >= 8 and v[:length].isdigit():
            counts[v[:length]] += 1
        else:
            missing += 1
    return dict(counts), missing


def facets(api, level, fields, params=(), headers=None):
    p = [("level", level), ("fields", fields)] + list(params)
    return api.get("/api/facets?" + urllib.parse.urlencode(p), headers=headers)


def list_total(api, level, params):
    st, _, body = api.get("/api/" + level + "?" + urllib.parse.urlencode(list(params) + [("limit", "0")]))
    return body.get("total") if st == 200 else ("HTTP %d %s" % (st, body))


def check_values(api, level, docs, fname, got, top, params):
    exp = values_expected(docs, fname, top)
    c.eq([[x["value"], x["count"]] for x in got["values"]], exp["values"], "%s %s %s: top values" % (level, fname, params))
    c.eq((got["other"], got["distinct"], got["missing"]), (exp["other"], exp["distinct"], exp["missing"]),
         "%s %s %s: other, distinct, missing" % (level, fname, params))
    for x in got["values"][:3]:
        n = list_total(api, level, list(params) + [(fname, x["filter"])])
        c.eq(n, x["count"], "%s %s: the filter of %r selects its count" % (level, fname, x["value"]))


def check_dates(api, level, docs, fname, got, length, params):
    exp, missing = dates_expected(docs, fname, length)
    nonzero = {b["value"]: b["count"] for b in got["bins"] if b["count"]}
    c.eq(nonzero, exp, "%s %s %s by %s: counts" % (level, fname, params, got["interval"]))
    c.eq(got["missing"], missing, "%s %s: missing dates" % (level, fname))
    vals = [b["value"] for b in got["bins"]]
    c.check(vals == sorted(vals) and len(set(vals)) == len(vals), "%s %s: bins ascending, no gaps repeated" % (level, fname))
    for b in [b for b in got["bins"] if b["count"]][:3]:
        c.eq(list_total(api, level, list(params) + [(fname, b["filter"])]), b["count"],
             "%s %s: the filter %s selects its count" % (level, fname, b["filter"]))


def check_histogram(api, level, docs, fname, got, params):
    nums = [d[fname] for d in docs if isinstance(d.get(fname), (int, float))]
    c.eq(got["count"], len(nums), "%s %s %s: numeric count" % (level, fname, params))
    c.eq(got["missing"], len(docs) - len(nums), "%s %s: missing" % (level, fname))
    if nums:
        c.eq((got["min"], got["max"]), (min(nums), max(nums)), "%s %s: min, max" % (level, fname))
    inside = 0
    for b in got["bins"]:
        n = sum(1 for v in nums if b["lo"] <= v < b["hi"])
        inside += n
        if not c.eq(b["count"], n, "%s %s: bin [%g, %g)" % (level, fname, b["lo"], b["hi"])):
            break
    c.eq(got["other"], len(nums) - inside, "%s %s: values outside the bins" % (level, fname))
    for b in [b for b in got["bins"] if b["count"]][:2]:
        c.eq(list_total(api, level, list(params) + [(fname, f) for f in b["filter"]]), b["count"],
             "%s %s: the filter %s selects its count" % (level, fname, b["filter"]))


def test_counts(api):
    # studies: values (modality from the series' modalities, an array field), dates by year
    st, _, b = facets(api, "studies", "modality,study_date,collection,metadata.PatientSex", [("top", "2")])
    if c.eq(st, 200, "studies facets: 200"):
        c.eq(b["total"], len(studies), "studies: total")
        c.eq(b["aggregations"], 1, "studies: one aggregation without histograms")
        f = b["facets"]
        check_values(api, "studies", studies, "modality", f["modality"], 2, [])
        check_values(api, "studies", studies, "collection_ids", f["collection_ids"], 2, [])
        check_values(api, "studies", studies, "metadata.PatientSex", f["metadata.PatientSex"], 2, [])
        check_dates(api, "studies", studies, "study_date", f["study_date"], 4, [])

    # studies filtered, dates by month
    params = [("modality", "CT"), ("study_date", "2000-2001")]
    sel = [s for s in studies if "CT" in s["modalities"] + [s["modality"]] and "20000101" <= s["study_date"] <= "20011231"]
    st, _, b = facets(api, "studies", "study_date,patient_id", params + [("interval", "month")])
    if c.eq(st, 200, "studies filtered facets: 200"):
        c.eq(b["total"], len(sel), "studies filtered: total")
        check_dates(api, "studies", sel, "study_date", b["facets"]["study_date"], 6, params)
        check_values(api, "studies", sel, "patient_id", b["facets"]["patient_id"], 10, params)

    # series: several filters, values + histograms (auto bins: two aggregations) + dates
    for params in ([], [("modality", "CT")], [("manufacturer", "SIEMENS,TOSHIBA")], [("kvp", "gte:130")],
                   [("study_date", "2000-2001")], [("modality", "CT"), ("study.patient_id", "LIDC-IDRI-000*")]):
        def keep(s):
            ok = True
            for k, v in params:
                if k == "modality":
                    ok = ok and s["modality"] == v
                elif k == "manufacturer":
                    ok = ok and s.get("manufacturer") in v.split(",")
                elif k == "kvp":
                    ok = ok and s["kvp"] >= 130
                elif k == "study_date":
                    ok = ok and "20000101" <= study_by_id[s["study_id"]]["study_date"] <= "20011231"
                elif k == "study.patient_id":
                    ok = ok and study_by_id[s["study_id"]]["patient_id"].startswith("LIDC-IDRI-000")
            return ok
        if params and params[-1][0] == "study.patient_id":
            probe = list_total(api, "series", params)
            if not isinstance(probe, int):  # "study.<field>" filters are not in this build's list endpoint
                print("note: %s not accepted by /api/series (%s): skipped in facets too" % (params, probe))
                continue
        sel = [s for s in series if keep(s)]
        st, _, b = facets(api, "series", "manufacturer,body_part_examined,slice_thickness,kvp,series_date", params)
        if not c.eq(st, 200, "series facets %s: 200" % params):
            print(b)
            continue
        c.eq(b["total"], len(sel), "series %s: total" % params)
        c.eq(b["total"], list_total(api, "series", params), "series %s: total equals the list's" % params)
        f = b["facets"]
        check_values(api, "series", sel, "manufacturer", f["manufacturer"], 10, params)
        check_values(api, "series", sel, "body_part_examined", f["body_part_examined"], 10, params)
        check_histogram(api, "series", sel, "slice_thickness", f["slice_thickness"], params)
        check_histogram(api, "series", sel, "kvp", f["kvp"], params)
        check_dates(api, "series", sel, "series_date", f["series_date"], 4, params)
        c.eq(b["aggregations"], 1, "series %s: few distinct numbers are binned from the first aggregation" % params)

    # explicit boundaries: one aggregation, values outside counted as other
    st, _, b = facets(api, "series", "slice_thickness", [("bins.slice_thickness", "1,2.5,4")])
    if c.eq(st, 200, "explicit bins: 200"):
        c.eq(b["aggregations"], 1, "explicit bins: one aggregation")
        c.eq([(x["lo"], x["hi"]) for x in b["facets"]["slice_thickness"]["bins"]], [(1, 2.5), (2.5, 4)],
             "explicit bins: the boundaries asked for")
        check_histogram(api, "series", series, "slice_thickness", b["facets"]["slice_thickness"], [])

    # bins=N: about N bins of a nice step covering [min, max]
    st, _, b = facets(api, "series", "slice_thickness", [("bins", "4"), ("modality", "CT")])
    if c.eq(st, 200, "bins=4: 200"):
        h = b["facets"]["slice_thickness"]
        c.check(2 <= len(h["bins"]) <= 6, "bins=4: about four bins", h["bins"])
        c.check(h["bins"][0]["lo"] <= h["min"] and h["bins"][-1]["hi"] > h["max"], "bins=4: cover [min, max]", h)

    # instances with a parent (series) filter: the list's own parent resolution
    params = [("modality", "CT")]
    sel = [i for i in instances if series_by_id[i["series_id"]]["modality"] == "CT"]
    st, _, b = facets(api, "instances", "instance_number,sop_class_uid", params)
    if c.eq(st, 200, "instances facets with a series filter: 200"):
        c.eq(b["total"], len(sel), "instances modality=CT: total")
        c.eq(b["aggregations"], 2, "instances: 1,100+ distinct instance numbers are counted by a second aggregation")
        check_histogram(api, "instances", sel, "instance_number", b["facets"]["instance_number"], params)
        check_values(api, "instances", sel, "sop_class_uid", b["facets"]["sop_class_uid"], 10, params)

    # an empty cohort
    st, _, b = facets(api, "series", "manufacturer,kvp,series_date", [("modality", "NOPE")])
    if c.eq(st, 200, "empty cohort: 200"):
        c.eq(b["total"], 0, "empty cohort: total 0")
        c.eq(b["facets"]["manufacturer"]["values"], [], "empty cohort: no values")
        c.eq(b["facets"]["kvp"]["bins"], [], "empty cohort: no bins")


def test_bad_input(api):
    bad = [
        ("no fields", [("level", "series")]),
        ("unknown field", [("level", "series"), ("fields", "nope")]),
        ("a study field on series", [("level", "series"), ("fields", "patient_id")]),
        ("bad level", [("level", "patients"), ("fields", "modality")]),
        ("duplicate field", [("level", "series"), ("fields", "modality,modality")]),
        ("top=0", [("level", "series"), ("fields", "modality"), ("top", "0")]),
        ("bins=0", [("level", "series"), ("fields", "kvp"), ("bins", "0")]),
        ("bins on a string field", [("level", "series"), ("fields", "modality"), ("bins.modality", "1,2")]),
        ("descending bins", [("level", "series"), ("fields", "kvp"), ("bins.kvp", "140,120")]),
        ("interval=week", [("level", "series"), ("fields", "series_date"), ("interval", "week")]),
        ("limit is a list parameter", [("level", "series"), ("fields", "modality"), ("limit", "5")]),
        ("sort is a list parameter", [("level", "series"), ("fields", "modality"), ("sort", "kvp")]),
        ("unknown filter", [("level", "series"), ("fields", "modality"), ("colour", "red")]),
        ("bad filter value", [("level", "series"), ("fields", "modality"), ("kvp", "abc")]),
        ("bad date filter", [("level", "studies"), ("fields", "modality"), ("study_date", "20xx")]),
        ("operator as field", [("level", "series"), ("fields", "$where")]),
    ]
    for what, params in bad:
        st, _, b = api.get("/api/facets?" + urllib.parse.urlencode(params))
        c.check(st == 400 and isinstance(b, dict) and b.get("error") and b.get("detail"),
                "400 with a reason: %s" % what, (st, b))
    st, h, b = api.request("POST", "/api/facets?level=series&fields=modality", body="")
    c.eq(st, 405, "POST /api/facets: 405")
    st, _, m = api.get("/metrics")
    c.check(st == 200 and 'route="/api/facets",code="200"' in m and 'route="/api/facets",code="400"' in m,
            "/metrics counts facets requests under their own route label", str(m)[:300])


def test_read_token():
    with Api(DB, "--api.read_tokens=" + READ_TOKEN) as api:
        st, _, b = facets(api, "series", "modality")
        c.eq(st, 401, "facets need a read token when api.read_tokens is set")
        st, _, b = facets(api, "series", "modality", headers={"Authorization": "Bearer wrong-token-0123456789"})
        c.check(st in (401, 403), "a wrong token is refused", (st, b))
        st, _, b = facets(api, "series", "modality", headers={"Authorization": "Bearer " + READ_TOKEN})
        c.eq(st, 200, "the read token reads facets")


try:
    with Api(DB) as api:
        test_counts(api)
        test_bad_input(api)
    test_read_token()
finally:
    client.drop_database(DB)
c.finish()
