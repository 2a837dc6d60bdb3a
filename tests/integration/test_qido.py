#!/usr/bin/python3
"""DICOMweb QIDO-RS: metadb against Orthanc's DICOMweb plugin, and an
external QIDO client.

A small generated archive is loaded through metadb's pipeline (index,
producer, worker, linker; private topics, groups and database) and
uploaded to a private Orthanc (Debian orthanc + orthanc-dicomweb, started
here in a temporary directory on free ports, RemoteAccessAllowed false).
The same QIDO queries go to both (attribute matching: single value, UID
lists, wildcards, date ranges; resource paths; limit/offset paging;
fuzzymatching=false; includefield) and must return the same UID sets and
the same values of the compared attributes. Then `dicomweb-client` from
PyPI (a QIDO client no one here wrote; venv under $METADB_HOME/cache/venv,
see deploy/install.sh) lists studies, series and instances from metadb.
Finally metadb's refusals: unsupported parameters and values -> 400 with a
Warning header, Accept without JSON -> 406, other methods -> 405.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nl_support  # noqa: E402
from orthanc_support import OrthancServer  # noqa: E402
from mdb_api_support import Api, Checker  # noqa: E402

ORTHANC_PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]
METADB_HOME = os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb"))
VENV_PY = os.path.join(METADB_HOME, "cache", "venv", "bin", "python")

UID_TAG = {"studies": "0020000D", "series": "0020000E", "instances": "00080018"}


def find_plugin():
    for d in ORTHANC_PLUGIN_DIRS:
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                if name.startswith("libOrthancDicomWeb.so"):
                    return os.path.join(d, name)
    raise SystemExit("FAIL: the Orthanc DICOMweb plugin (orthanc-dicomweb) is not installed")


class Orthanc(OrthancServer):
    def __init__(self, workdir):
        try:
            super().__init__(workdir, "metadb-qido-check",
                             {"Plugins": [find_plugin()], "StableAge": 1,
                              "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}})
        except RuntimeError as e:
            raise SystemExit("FAIL: " + str(e))

    def upload(self, path):
        try:
            super().upload(path)
        except RuntimeError as e:
            raise SystemExit("FAIL: " + str(e))

    def qido(self, resource, params):
        q = qs(params)
        status, data = self.request("GET", "/dicom-web/" + resource + ("?" + q if q else ""),
                                    headers={"Accept": "application/dicom+json"})
        return status, json.loads(data) if data else []


def qs(params):
    """Query string with * ? , \\ left as typed: Orthanc does not decode %2A, %3F, %2C in QIDO values."""
    return urllib.parse.urlencode(params, safe="*?,\\")


def metadb_qido(api, resource, params):
    q = qs(params)
    status, headers, body = api.request("GET", "/dicomweb/" + resource + ("?" + q if q else ""),
                                        headers={"Accept": "application/dicom+json"})
    return status, headers, body


def first(ds, tag):
    v = ds.get(tag, {}).get("Value")
    if not v:
        return None
    x = v[0]
    if isinstance(x, dict):
        return x.get("Alphabetic")
    return x


def uid_set(answer, level_key):
    return {first(ds, UID_TAG[level_key]) for ds in answer}


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-qido-")
    db_name = "t_qido_%d" % os.getpid()
    client = orthanc = None
    try:
        archive = os.path.join(tmp, "archive")
        manifest = nl_support.generate(archive, patients=12, seed=11)
        client, db = nl_support.load_pipeline(db_name, archive, manifest)
        orthanc = Orthanc(tmp)
        for inst in manifest["instances"]:
            orthanc.upload(inst["path"])
        studies, series = manifest["studies"], manifest["series"]
        s0, s1 = studies[0], studies[1]
        se0 = next(se for se in series if se["study_uid"] == s0["uid"])
        ct_series = [se for se in series if se["modality"] == "CT"]
        xr = next((s for s in studies if s["modality"] in ("CR", "DX")), None)
        acc = next(s["accession"] for s in studies if s["accession"])
        queries = [
            ("studies", {}),
            ("studies", {"PatientID": s0["patient_id"]}),
            ("studies", {"PatientID": "LIDC-IDRI-000*"}),
            ("studies", {"PatientID": "LIDC-IDRI-001?"}),
            ("studies", {"00100020": s1["patient_id"]}),
            ("studies", {"PatientName": "LIDC-IDRI-000*"}),
            ("studies", {"StudyDate": "20000101-20031231"}),
            ("studies", {"StudyDate": "-20011231"}),
            ("studies", {"StudyDate": "20030101-"}),
            ("studies", {"StudyDate": s0["date"]}),
            ("studies", {"AccessionNumber": acc}),
            ("studies", {"StudyInstanceUID": "%s,%s" % (s0["uid"], s1["uid"])}),
            ("studies", {"StudyInstanceUID": s0["uid"], "fuzzymatching": "false"}),
            ("studies", {"ModalitiesInStudy": "CT"}),
            ("studies", {"ModalitiesInStudy": xr["modality"] if xr else "DX"}),
            ("studies", {"StudyDescription": "*CONTRAST*"}),
            ("studies", {"PatientSex": "F"}),
            ("series", {}),
            ("series", {"Modality": "CT"}),
            ("series", {"Modality": "CT", "SeriesDescription": "Recon*"}),
            ("series", {"SeriesDescription": "*Std"}),
            ("studies", {"PatientName": "lidc-idri-000*"}),
            ("series", {"SeriesInstanceUID": "%s,%s" % (ct_series[0]["uid"], ct_series[1]["uid"])}),
            ("series", {"PatientID": s1["patient_id"]}),
            ("series", {"StudyDate": "20020101-20041231", "Modality": "CT"}),
            ("series", {"Manufacturer": "SIEMENS"}),
            ("series", {"BodyPartExamined": "LUNG"}),
            ("series", {"SeriesNumber": "1"}),
            ("studies/%s/series" % s0["uid"], {}),
            ("studies/%s/series" % s0["uid"], {"Modality": "CT"}),
            ("studies/%s/series/%s/instances" % (s0["uid"], se0["uid"]), {}),
            ("studies/%s/instances" % s1["uid"], {}),
            ("instances", {"SOPInstanceUID": manifest["instances"][0]["sop_uid"]}),
            ("instances", {"StudyInstanceUID": s0["uid"]}),
            ("instances", {"InstanceNumber": "1", "StudyInstanceUID": s1["uid"]}),
        ]
        compared_attrs = {"studies": ["00100020", "00080020", "00080050", "00081030", "00100040"],
                          "series": ["00080060", "0020000D", "0008103E"],
                          "instances": ["0020000E", "0020000D", "00080016"]}
        agree = 0
        with Api(db_name) as api:
            for resource, params in queries:
                level = resource.split("/")[-1]
                ostatus, oans = orthanc.qido(resource, params)
                mstatus, mheaders, mans = metadb_qido(api, resource, params)
                ok = (ostatus == 200 and mstatus == 200 and
                      mheaders.get("content-type", "").startswith("application/dicom+json"))
                oset = uid_set(oans, level) if ok else set()
                mset = uid_set(mans, level) if ok else set()
                same_values = True
                if ok:
                    by_uid = {first(ds, UID_TAG[level]): ds for ds in oans}
                    for ds in mans:
                        o = by_uid.get(first(ds, UID_TAG[level]))
                        for tag in compared_attrs[level]:
                            if o is not None and first(o, tag) is not None and first(o, tag) != first(ds, tag):
                                same_values = False
                same = ok and oset == mset and same_values
                agree += same
                ck.check(same, "QIDO %s %s: metadb = Orthanc (%d UIDs)" % (resource, params, len(oset)),
                         "status orthanc %s metadb %s; only orthanc %s; only metadb %s; values equal %s" %
                         (ostatus, mstatus, sorted(oset - mset)[:3], sorted(mset - oset)[:3], same_values))
            print("QIDO cross-check: %d/%d queries give the same UID sets as Orthanc" % (agree, len(queries)))

            # paging: limit/offset pages cover the whole result exactly once
            pages, offset = [], 0
            while True:
                st, _, ans = metadb_qido(api, "series", {"limit": "4", "offset": str(offset)})
                if st != 200 or not ans:
                    break
                pages.extend(uid_set(ans, "series"))
                offset += 4
            _, oall = orthanc.qido("series", {})
            ck.check(sorted(pages) == sorted(uid_set(oall, "series")) and len(pages) == len(set(pages)),
                     "limit/offset pages of /series cover Orthanc's series exactly once (%d)" % len(pages))
            st, _, ans = metadb_qido(api, "studies", {"limit": "2"})
            ck.check(st == 200 and len(ans) == 2, "limit=2 returns 2 studies")

            # wildcard case: PS3.4 C.2.2.2.4 matches case-sensitively except person names. (Orthanc
            # 1.10's wildcard matching ignores case for every VR, so this is checked on metadb alone.)
            st, _, ans = metadb_qido(api, "series", {"SeriesDescription": "*LUNG*"})
            descs = {first(ds, "0008103E") for ds in ans}
            want = {se["description"] for se in series if "LUNG" in se["description"]}
            ck.check(st == 200 and descs == want, "wildcards match case-sensitively on LO (%s)" % sorted(descs))

            # includefield
            st, _, ans = metadb_qido(api, "series", {"SeriesInstanceUID": ct_series[0]["uid"],
                                                     "includefield": "ConvolutionKernel,00180050"})
            _, oans = orthanc.qido("series", {"SeriesInstanceUID": ct_series[0]["uid"],
                                              "includefield": "ConvolutionKernel,00180050"})
            ck.check(st == 200 and len(ans) == 1 and first(ans[0], "00181210") is not None and
                     first(ans[0], "00181210") == first(oans[0], "00181210") and
                     float(first(ans[0], "00180050")) == float(first(oans[0], "00180050")),
                     "includefield=ConvolutionKernel,00180050 returns the same values as Orthanc",
                     "%s vs %s" % (json.dumps(ans)[:300], json.dumps(oans)[:300]))
            st, _, ans = metadb_qido(api, "studies", {"StudyInstanceUID": s0["uid"], "includefield": "all"})
            ck.check(st == 200 and first(ans[0], "00101010") is not None and ans[0]["00100010"]["vr"] == "PN",
                     "includefield=all adds the stored attributes (PatientAge), PN encoded as Alphabetic")
            ck.check(st == 200 and first(ans[0], "00201206") == len(s0["series"]),
                     "NumberOfStudyRelatedSeries is computed from the series documents")

            # refusals
            for resource, params, status, what in [
                ("studies", {"NoSuchKeyword": "x"}, 400, "unknown attribute"),
                ("studies", {"StudyDate": "2001"}, 400, "malformed date"),
                ("studies", {"StudyInstanceUID": "1.2.abc"}, 400, "malformed UID"),
                ("studies", {"limit": "0"}, 400, "limit 0"),
                ("studies", {"limit": "x"}, 400, "limit not a number"),
                ("studies", {"fuzzymatching": "maybe"}, 400, "fuzzymatching neither true nor false"),
                ("studies", {"includefield": "Nope"}, 400, "unknown includefield"),
                ("series", {"ReferencedStudySequence": "x"}, 400, "sequence matching"),
                ("series", {"ModalitiesInStudy": "CT"}, 400, "ModalitiesInStudy outside study level"),
                ("studies", {"NumberOfStudyRelatedSeries": "2"}, 400, "matching on a computed attribute"),
            ]:
                st, hd, body = metadb_qido(api, resource, params)
                ck.check(st == status and "warning" in hd and "detail" in body,
                         "QIDO %s %s -> %d with a Warning header (%s)" % (resource, params, status, what),
                         "%s %s %s" % (st, hd.get("warning"), body))
            st, hd, body = api.request("GET", "/dicomweb/studies?PatientID=%FF%FE")
            ck.check(st == 400, "a value that is not UTF-8 -> 400", "%s %s" % (st, body))
            st, hd, body = api.request("GET", "/dicomweb/studies", headers={"Accept": "application/dicom+xml"})
            ck.check(st == 406, "Accept: application/dicom+xml -> 406", "%s %s" % (st, body))
            st, hd, body = api.request("POST", "/dicomweb/studies", body=b"x",
                                       headers={"Content-Type": "application/dicom"})
            ck.check(st == 405, "POST /dicomweb/studies -> 405", "%s %s" % (st, body))
            st, hd, body = metadb_qido(api, "studies", {"fuzzymatching": "true", "StudyInstanceUID": s0["uid"]})
            ck.check(st == 200 and "fuzzymatching" in hd.get("warning", ""),
                     "fuzzymatching=true answers with the standard warning")
            st, hd, body = api.request("GET", "/dicomweb/studies/%s/series/x/y" % s0["uid"])
            ck.check(st == 404, "unknown DICOMweb resource -> 404", "%s" % st)

            # an external QIDO client
            if not os.path.exists(VENV_PY):
                ck.check(False, "dicomweb-client venv exists at %s (run deploy/install.sh)" % VENV_PY)
            else:
                script = (
                    "import json, sys\n"
                    "from dicomweb_client.api import DICOMwebClient\n"
                    "c = DICOMwebClient(url=sys.argv[1])\n"
                    "st = c.search_for_studies()\n"
                    "se = c.search_for_series(study_instance_uid=sys.argv[2])\n"
                    "ins = c.search_for_instances(study_instance_uid=sys.argv[2], series_instance_uid=sys.argv[3])\n"
                    "f = c.search_for_studies(search_filters={'PatientID': sys.argv[4]}, fields=['PatientAge'])\n"
                    "print(json.dumps({'studies': [d['0020000D']['Value'][0] for d in st],\n"
                    "  'series': [d['0020000E']['Value'][0] for d in se],\n"
                    "  'instances': [d['00080018']['Value'][0] for d in ins],\n"
                    "  'filtered': [d['0020000D']['Value'][0] for d in f],\n"
                    "  'age': [d.get('00101010', {}).get('Value') for d in f]}))\n")
                r = subprocess.run([VENV_PY, "-c", script, api.base + "/dicomweb", s0["uid"], se0["uid"],
                                    s0["patient_id"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=120)
                out = json.loads(r.stdout) if r.returncode == 0 else {}
                want_inst = {i["sop_uid"] for i in manifest["instances"] if i["series_uid"] == se0["uid"]}
                want_pat = {s["uid"] for s in studies if s["patient_id"] == s0["patient_id"]}
                ck.check(r.returncode == 0 and set(out["studies"]) == {s["uid"] for s in studies},
                         "dicomweb-client lists all %d studies from metadb" % len(studies), r.stderr[-800:])
                ck.check(r.returncode == 0 and set(out["series"]) == set(s0["series"]) and
                         set(out["instances"]) == want_inst and set(out["filtered"]) == want_pat and
                         all(a for a in out["age"]),
                         "dicomweb-client: series of a study, instances of a series, PatientID filter + fields")
            rc = api.stop()
            ck.check(rc == 0 and "Sanitizer" not in api.logtext(), "metadb-api exits cleanly (rc %s, no sanitizer report)" % rc,
                     api.logtext()[-1500:])
    finally:
        if orthanc:
            orthanc.stop()
        if client:
            nl_support.drop(client, db_name)
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
