#!/usr/bin/python3
"""Cross-check of metadb's study/series queries against Orthanc, a DICOM
server no one here wrote.

The same generated archive (tests/gen/gen_archive.py, with the body-part
variations of nl_support.generate) is loaded into metadb through the real
pipeline (metadb index, producer, worker, linker on private topics, groups
and database t_orthx_<pid>) and uploaded into a private Orthanc (Debian
`orthanc`, temporary storage, a free loopback port, RemoteAccessAllowed
false) with POST /instances. Then, for study- and series-level queries on
modality, date ranges, patient wildcards, accession numbers and body part,
the set of UIDs metadb-api returns (GET /api/studies, /api/series) must equal
the set Orthanc's POST /tools/find returns, and for the series ones also
metadb's raw query and `metadb query` (one query builder, three doors)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import Api, CLI_BIN, Checker  # noqa: E402
import nl_support  # noqa: E402
from orthanc_support import OrthancServer  # noqa: E402

PID = os.getpid()
DB = "t_orthx_%d" % PID
c = Checker()


class Orthanc(OrthancServer):
    def __init__(self, workdir):
        super().__init__(workdir, "metadb-crosscheck",
                         {"DicomServerEnabled": False, "LimitFindResults": 0, "LimitFindInstances": 0})

    def find(self, level, query):
        body = json.dumps({"Level": level, "Query": query, "Expand": True, "CaseSensitive": True})
        st, data = self.request("POST", "/tools/find", body, {"Content-Type": "application/json"})
        if st != 200:
            raise RuntimeError("Orthanc /tools/find %s: %s %s" % (query, st, data[:300]))
        key = "StudyInstanceUID" if level == "Study" else "SeriesInstanceUID"
        return sorted(r["MainDicomTags"][key] for r in json.loads(data))


def metadb_ids(api, level, params):
    st, _, b = api.get("/api/" + level, list(params) + [("limit", "1000"), ("fields", "_id")])
    if st != 200:
        raise RuntimeError("GET /api/%s %s -> %d %s" % (level, params, st, b))
    if b["total"] != len(b["items"]):
        raise RuntimeError("more than one page")
    return sorted(d["_id"] for d in b["items"])


def main():
    tmp = tempfile.mkdtemp(prefix="metadb-orthx-")
    client = orthanc = None
    try:
        archive = os.path.join(tmp, "archive")
        manifest = nl_support.generate(archive, patients=20, seed=29)
        t0 = time.time()
        client, _ = nl_support.load_pipeline(DB, archive, manifest)
        print("# loaded %d instances into metadb through the pipeline in %.0f s" %
              (len(manifest["instances"]), time.time() - t0))
        orthanc = Orthanc(os.path.join(tmp, "orthanc"))
        t0 = time.time()
        for inst in manifest["instances"]:
            orthanc.upload(inst["path"])
        print("# uploaded %d instances into Orthanc in %.0f s" % (len(manifest["instances"]), time.time() - t0))
        st, data = orthanc.request("GET", "/statistics")
        c.eq(json.loads(data)["CountInstances"], len(manifest["instances"]), "Orthanc holds every instance")

        studies, series = manifest["studies"], manifest["series"]
        dates = sorted(s["date"] for s in studies)
        mid_lo, mid_hi = dates[len(dates) // 4], dates[3 * len(dates) // 4]
        years = sorted({d[:4] for d in dates})
        year_lo, year_hi = years[0], years[len(years) // 2]
        accs = sorted(s["accession"] for s in studies if s.get("accession"))
        pid = studies[len(studies) // 2]["patient_id"]
        stem = pid[:-1]  # e.g. LIDC-IDRI-001 for the patients 0010..0019

        with Api(DB) as api:
            # wait for the API's cache (answers are the same from the database; this makes the check cover the cache)
            deadline = time.time() + 30
            while time.time() < deadline and api.get("/api/series", {"limit": "1"})[2].get("source") != "cache":
                time.sleep(0.2)
            st, _, b = api.get("/api/studies", {"limit": "1"})
            c.eq(b["total"], len(studies), "metadb holds every study")
            cases = [
                # (level, metadb params, Orthanc query, what)
                ("studies", [("modality", "CT")], {"ModalitiesInStudy": "CT"}, "studies with CT"),
                ("studies", [("modality", "CR,DX")], {"ModalitiesInStudy": "CR\\DX"}, "studies with CR or DX"),
                ("studies", [("study_date", "%s-%s" % (mid_lo, mid_hi))], {"StudyDate": "%s-%s" % (mid_lo, mid_hi)},
                 "study date range %s-%s" % (mid_lo, mid_hi)),
                ("studies", [("study_date", "%s-%s" % (year_lo, year_hi))],
                 {"StudyDate": "%s0101-%s1231" % (year_lo, year_hi)}, "study years %s-%s" % (year_lo, year_hi)),
                ("studies", [("study_date", "-%s" % mid_lo)], {"StudyDate": "-%s" % mid_lo}, "study date up to " + mid_lo),
                ("studies", [("study_date", "%s-" % mid_hi)], {"StudyDate": "%s-" % mid_hi}, "study date from " + mid_hi),
                ("studies", [("patient", stem + "*")], {"PatientID": stem + "*"}, "patient wildcard " + stem + "*"),
                ("studies", [("patient", "LIDC-IDRI-000?")], {"PatientID": "LIDC-IDRI-000?"}, "patient wildcard with ?"),
                ("studies", [("patient", pid)], {"PatientID": pid}, "one patient"),
                ("studies", [("accession", accs[0])], {"AccessionNumber": accs[0]}, "accession " + accs[0]),
                ("studies", [("accession", accs[-1][:-2] + "*")], {"AccessionNumber": accs[-1][:-2] + "*"},
                 "accession wildcard"),
                ("studies", [("modality", "CT"), ("study_date", "%s-%s" % (year_lo, year_hi))],
                 {"ModalitiesInStudy": "CT", "StudyDate": "%s0101-%s1231" % (year_lo, year_hi)}, "CT studies in years"),
                ("series", [("modality", "CT")], {"Modality": "CT"}, "CT series"),
                ("series", [("modality", "CR,DX")], {"Modality": "CR\\DX"}, "CR or DX series"),
                ("series", [("body_part", "CHEST")], {"BodyPartExamined": "CHEST"}, "series of body part CHEST"),
                ("series", [("body_part", "LUNG,THORAX")], {"BodyPartExamined": "LUNG\\THORAX"},
                 "series of body part LUNG or THORAX"),
                ("series", [("modality", "CT"), ("body_part", "CHEST")], {"Modality": "CT", "BodyPartExamined": "CHEST"},
                 "CT chest series"),
                ("series", [("modality", "CT"), ("study_date", "%s-%s" % (year_lo, year_hi))],
                 {"Modality": "CT", "StudyDate": "%s0101-%s1231" % (year_lo, year_hi)}, "CT series in study years"),
                ("series", [("patient", stem + "*"), ("modality", "CT")], {"PatientID": stem + "*", "Modality": "CT"},
                 "CT series of a patient wildcard"),
                ("series", [("accession", accs[1])], {"AccessionNumber": accs[1]}, "series of one accession"),
                ("series", [("series_description", "*Recon*")], {"SeriesDescription": "*Recon*"},
                 "series description wildcard"),
            ]
            agree = 0
            for level, params, oq, what in cases:
                want = orthanc.find("Study" if level == "studies" else "Series", oq)
                got = metadb_ids(api, level, params)
                same = got == want
                agree += same
                c.check(same and len(want) > 0, "%s: metadb = Orthanc (%d UIDs)" % (what, len(want)),
                        "orthanc %d, metadb %d; only Orthanc %s; only metadb %s" % (
                            len(want), len(got), sorted(set(want) - set(got))[:3],
                            sorted(set(got) - set(want))[:3]))
            print("# %d/%d queries give the same UID sets as Orthanc" % (agree, len(cases)))

            # The scenario through the three doors: API filters, raw query, CLI.
            params = [("modality", "CT"), ("body_part", "CHEST"), ("slice_thickness", "lt:2.5"),
                      ("study_date", "%s-%s" % (year_lo, year_hi))]
            api_ids = metadb_ids(api, "series", params)
            want = sorted(s["uid"] for s in series if s["modality"] == "CT" and s.get("body_part") == "CHEST" and
                          s["slice_thickness"] < 2.5 and
                          year_lo + "0101" <= next(t["date"] for t in studies if t["uid"] == s["study_uid"]) <=
                          year_hi + "1231")
            c.check(api_ids == want and want, "thin CT chest series in the years: API = manifest (%d)" % len(want),
                    (api_ids, want))
            ortho = orthanc.find("Series", {"Modality": "CT", "BodyPartExamined": "CHEST",
                                            "StudyDate": "%s0101-%s1231" % (year_lo, year_hi)})
            c.check(set(api_ids) <= set(ortho), "those series are among Orthanc's CT chest series of the years")
            st, _, raw = api.post("/api/query", {"collection": "series", "limit": 1000, "filter": {
                "modality": "CT", "body_part_examined": "CHEST", "slice_thickness": {"$lt": 2.5},
                "study_id": {"$in": metadb_ids(api, "studies", [("study_date", "%s-%s" % (year_lo, year_hi))])}}})
            c.check(st == 200 and sorted(d["_id"] for d in raw["items"]) == want, "raw query gives the same series", raw)
            r = subprocess.run([CLI_BIN, "--mongo.db=" + DB, "query", "series"] +
                               sum([["--" + k.replace("_", "-"), v] for k, v in params], []) + ["--format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            c.check(r.returncode == 0 and sorted(d["_id"] for d in json.loads(r.stdout or "{}").get("items", [])) == want,
                    "metadb query series gives the same series", r.stderr)
    finally:
        if orthanc:
            orthanc.stop()
        if client:
            nl_support.drop(client, DB)
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
