"""Shared helpers of the metadb-api tests (integration, cross-check, browser
fixtures and the latency bench): start a metadb-api on a free port against a
test database, talk HTTP to it, and seed catalogue documents shaped like the
linker's (DESIGN.md: studies / series / instances keyed by UID).

Not a test itself (ctest registers test_*.py only)."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

SRC = os.environ.get("MDB_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build")
API_BIN = os.path.join(BUILD, "api", "metadb-api")
CLI_BIN = os.path.join(BUILD, "cli", "metadb")
MONGO_URI = os.environ.get("METADB_MONGO_URI", "mongodb://127.0.0.1:27017")
BROKERS = os.environ.get("METADB_KAFKA_BROKERS", "127.0.0.1:9092")


class Api:
    """A running metadb-api process. Use as a context manager."""

    def __init__(self, db, *extra, env=None):
        self.db = db
        self.log = tempfile.NamedTemporaryFile(prefix="metadb-api-", suffix=".log", delete=False)
        args = [API_BIN, "--mongo.db=" + db, "--mongo.uri=" + MONGO_URI, "--kafka.brokers=" + BROKERS,
                "--api.listen=127.0.0.1:0", "--api.web_dir=" + os.path.join(SRC, "api", "web")] + list(extra)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.port = None
        deadline = time.time() + 20
        while time.time() < deadline:
            with open(self.log.name, errors="replace") as f:
                m = re.search(r"listening on http://[^:]+:(\d+)/", f.read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            raise RuntimeError("metadb-api did not start:\n" + self.logtext())
        self.base = "http://127.0.0.1:%d" % self.port

    def logtext(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers dict lower-case, parsed JSON or text). path is sent as is."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        rh = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        ctype = rh.get("content-type", "")
        if "json" in ctype:
            try:
                return r.status, rh, json.loads(data)
            except ValueError:
                raise AssertionError("invalid JSON from %s %s: %r" % (method, path, data[:200]))
        return r.status, rh, data.decode("utf-8", "replace")

    def get(self, path, params=None, headers=None):
        if params:
            path += "?" + urllib.parse.urlencode(params, doseq=True)
        return self.request("GET", path, headers=headers)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body=body, headers=headers)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


def mongo_db(name):
    import pymongo  # Debian python3-pymongo
    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=10000)
    client.admin.command("ping")
    return client, client[name]


# ---------------------------------------------------------------------------
# A small synthetic catalogue with known answers.

CT_THICKNESS = [0.625, 1.25, 2.5, 3.0, 5.0]
DATES = ["19981103", "19990517", "20000110", "20000704", "20001231", "20010101", "20010615", "20011231",
         "20020202", "20030303"]


def make_catalogue(n_studies=30, per_series=5):
    """Returns (studies, series, instances) lists of documents."""
    studies, series, instances = [], [], []
    for i in range(n_studies):
        suid = "1.3.6.1.4.1.9328.50.1.%d" % (1000 + i)
        modality = "CR" if i % 5 == 4 else ("DX" if i % 6 == 5 else "CT")
        date = DATES[i % len(DATES)]
        st = {
            "_id": suid, "study_instance_uid": suid,
            "patient_id": "LIDC-IDRI-%04d" % (i // 2 + 1),
            "study_date": date,
            "study_description": ["Chest CT", "CT THORAX W/O", "Chest X-ray", "Abdomen"][i % 4],
            "modality": modality,
            "collection_ids": ["OTHER"] if i % 10 == 9 else ["LIDC-IDRI"],
            "job_ids": ["job-a" if i < 15 else "job-b"],
            "metadata": {"PatientAge": "%03dY" % (40 + i), "PatientSex": "MF"[i % 2],
                         "PatientName": "Doe^%d" % i, "StudyDate": date, "StudyID": str(i)},
            "created_at": "2026-11-25T08:00:00.000Z", "updated_at": "2026-11-25T08:00:00.000Z",
        }
        if i % 7 != 3:  # de-identified studies have no accession number
            st["accession_number"] = "ACC%05d" % i
        mods, summary = set(), []
        for s in range(2):
            seuid = "%s.%d" % (suid, s + 1)
            m = modality if s == 0 else ("CT" if modality == "CT" else "SR" if i % 2 else modality)
            mods.add(m)
            se = {
                "_id": seuid, "series_instance_uid": seuid, "study_id": suid, "series_number": s + 1,
                "modality": m, "body_part_examined": "CHEST" if (i + s) % 3 else "ABDOMEN",
                "series_date": date, "manufacturer": ["GE MEDICAL SYSTEMS", "SIEMENS", "TOSHIBA"][i % 3],
                "kvp": [120, 140][i % 2], "instance_count": per_series,
                "series_description": "a.b(c)[d]+e" if i == 7 and s == 1 else "Axial %d" % (s + 1),
                "collection_ids": st["collection_ids"],
                "metadata": {"SeriesNumber": s + 1, "ConvolutionKernel": ["B30f", "STANDARD"][s]},
                "created_at": "2026-11-25T08:00:00.000Z", "updated_at": "2026-11-25T08:00:00.000Z",
            }
            if m == "CT":
                se["slice_thickness"] = CT_THICKNESS[(i + s) % len(CT_THICKNESS)]
                se["metadata"]["SliceThickness"] = se["slice_thickness"]
            series.append(se)
            summary.append({k: se[k] for k in ("series_number", "modality", "instance_count")} |
                           {"series_instance_uid": seuid, "series_description": se["series_description"]})
            for k in range(per_series):
                iuid = "%s.%d" % (seuid, k + 1)
                instances.append({
                    "_id": iuid, "sop_instance_uid": iuid, "series_id": seuid, "study_id": suid,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": k + 1,
                    "paths": ["/archive/%s/%s/%d.dcm" % (st["patient_id"], seuid, k + 1)],
                    "job_ids": st["job_ids"],
                    "metadata": {"Rows": 512, "Columns": 512 if k % 2 == 0 else 256, "InstanceNumber": k + 1},
                })
        st["modalities"] = sorted(mods)
        st["series"] = summary
        studies.append(st)
    return studies, series, instances


def seed(db, studies, series, instances):
    for name, docs in (("studies", studies), ("series", series), ("instances", instances)):
        db[name].drop()
        if docs:
            db[name].insert_many([dict(d) for d in docs])


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Checker:
    """Counts assertions; prints one line each; exits non-zero on any failure."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print("ok   - " + what)
        else:
            self.failed += 1
            print("FAIL - " + what + (("\n       " + str(detail)[:1500]) if detail else ""))
        sys.stdout.flush()
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, what, "got  %r\n       want %r" % (got, want))

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(0 if self.failed == 0 and self.passed > 0 else 1)
