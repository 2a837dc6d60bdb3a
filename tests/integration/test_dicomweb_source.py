#!/usr/bin/python3
"""The DICOMweb source (fetcher/source_dicomweb.c) against Orthanc's DICOMweb
plugin (Debian orthanc + orthanc-dicomweb), driven through the source
interface by tests/dicomweb_probe.

A generated archive (explicit and implicit VR series) is loaded into a private
Orthanc over REST. Then:
- echo answers; a study is found by accession, patient, study UID and date
  range with Orthanc's own values; an unknown accession finds nothing;
- the instance list of every study is exactly the archive's, also through a
  front whose QIDO pages hold 2 items; a study-level list shorter than the
  study's NumberOfStudyRelatedInstances is completed series by series, and
  refused when it stays short;
- retrieving a study lands every instance, each file byte-identical to
  Orthanc's /instances/{id}/file; a series and single instances too;
- the storage test switch drops exactly the SOP UIDs it names; a sink that
  fails with "sink" stops the retrieval and leaves no spool file behind;
- an unknown study is not_found (not retryable);
- through a front that checks a bearer token and points RetrieveURLs to a
  second front: the token file is used, the WADO-RS requests go where
  RetrieveURL says and carry no token there (another origin); a wrong token
  is a config error (not retryable);
- a busy server (503) is refused (retryable); an answer cut short is a network
  error (retryable) and leaves no spool file; an HTML page is a protocol error;
- an https front with a self-signed certificate is refused (TLS verification
  is on): config, not retryable;
- Orthanc stopped: echo, find and retrieve fail with network (retryable)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dicomweb_support import PROBE_BIN, SRC, DicomWebOrthanc, Front, landed, leftovers, probe  # noqa: E402
from mdb_api_support import Checker  # noqa: E402
from orthanc_support import free_port  # noqa: E402

GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
c = Checker()


def fnv1a(s):
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def fresh(tmp, name):
    d = os.path.join(tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def main():
    if not os.access(PROBE_BIN, os.X_OK):
        print("FAIL - %s is not built" % PROBE_BIN)
        sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="metadb-dwsrc-")
    orthanc = front = wado_front = None
    try:
        archive = os.path.join(tmp, "archive")
        subprocess.run(["/usr/bin/python3", GEN, "--out", archive, "--patients", "4", "--seed", "18", "--small",
                        "--slices", "3:6", "--jobs", "1"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(archive, "manifest.json")) as f:
            manifest = json.load(f)
        orthanc = DicomWebOrthanc(os.path.join(tmp, "orthanc"))
        for inst in manifest["instances"]:
            orthanc.upload(inst["path"])
        files = orthanc.instance_files()
        c.eq(len(files), len(manifest["instances"]), "Orthanc holds the %d generated instances" % len(files))
        url = orthanc.dicomweb_url
        by_study = {}
        for inst in manifest["instances"]:
            by_study.setdefault(inst["study_uid"], []).append(inst)
        studies = manifest["studies"]
        big = max(studies, key=lambda s: len(by_study[s["uid"]]))

        # echo, find
        rc, out = probe(url, "echo")
        c.eq((rc, out), (0, [{"echo": True}]), "echo")
        rc, out = probe(url, "find", "accession", big["accession"])
        c.eq(rc, 0, "find by accession succeeds")
        c.eq([s["study_uid"] for s in out], [big["uid"]], "find by accession: exactly its study")
        if out:
            s = out[0]
            c.eq((s["accession"], s["patient_id"], s["date"], s["n_instances"], s["n_series"]),
                 (big["accession"], big["patient_id"], big["date"], len(by_study[big["uid"]]), len(big["series"])),
                 "find: Orthanc's accession, patient, date and counts")
            c.check(big["modality"] in s["modalities"].split(","), "find: modalities name the study's",
                    s["modalities"])
        rc, out = probe(url, "find", "accession", "NO-SUCH-ACC")
        c.eq((rc, out), (0, []), "unknown accession: nothing found, no error")
        rc, out = probe(url, "find", "study", big["uid"])
        c.eq([s["study_uid"] for s in out], [big["uid"]], "find by study UID")
        rc, out = probe(url, "find", "patient", big["patient_id"])
        want = sorted(s["uid"] for s in studies if s["patient_id"] == big["patient_id"])
        c.eq(sorted(s["study_uid"] for s in out), want, "find by patient: all of the patient's studies")
        rc, out = probe(url, "find", "patient", "*", big["date"], big["date"])
        want = sorted(s["uid"] for s in studies if s["date"] == big["date"])
        c.eq(sorted(s["study_uid"] for s in out), want, "find by date (patient *): the studies of that day")

        # list: every study's instances, directly and in pages of 2
        paged = Front(orthanc.port, page_cap=2)
        for st in studies:
            want = sorted((i["sop_uid"], i["series_uid"]) for i in by_study[st["uid"]])
            rc, out = probe(url, "list", st["uid"])
            got = sorted((i["sop_uid"], i["series_uid"]) for i in out)
            c.eq((rc, got), (0, want), "list %s: the %d instances of the archive" % (st["accession"], len(want)))
            del paged.log[:]
            rc, out = probe(paged.url, "list", st["uid"])
            got = sorted((i["sop_uid"], i["series_uid"]) for i in out)
            c.eq((rc, got), (0, want), "list %s in pages of 2: the same" % st["accession"])
            pages = [p for p, _ in paged.log if "/instances?" in p]
            c.eq(len(pages), len(want) // 2 + 1, "list %s in pages of 2: %d pages read to the empty one"
                 % (st["accession"], len(want) // 2 + 1))
        paged.mode = "lose_study"
        paged.page_cap = None
        del paged.log[:]
        rc, out = probe(paged.url, "list", big["uid"])
        want = sorted((i["sop_uid"], i["series_uid"]) for i in by_study[big["uid"]])
        c.eq((rc, sorted((i["sop_uid"], i["series_uid"]) for i in out)), (0, want),
             "a study-level list one short: completed series by series")
        c.check(any("/series/" in p and "/instances" in p for p, _ in paged.log), "the series were listed",
                paged.log)
        paged.mode = "lose_all"
        rc, out = probe(paged.url, "list", big["uid"])
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "protocol", False),
             "an instance list that stays short: refused (protocol)")
        c.check("of the %d instances the study announces" % len(want) in out[0].get("error", ""),
                "the message gives the announced count", out)
        paged.stop()

        # retrieve a whole study, byte for byte
        t0 = time.time()
        total = 0
        for st in studies:
            outdir = fresh(tmp, "out-" + st["uid"][-6:])
            rc, out = probe(url, "retrieve", outdir, st["uid"])
            want = {i["sop_uid"] for i in by_study[st["uid"]]}
            got = landed(outdir)
            total += len(got)
            c.eq((rc, out[0]["landed"], out[0]["received"], out[0]["completed"]), (0, len(want), len(want), len(want)),
                 "retrieve %s: counts say %d landed" % (st["accession"], len(want)))
            c.eq(set(got), want, "retrieve %s: exactly the study's instances" % st["accession"])
            c.check(all(got[k] == files[k] for k in got), "retrieve %s: every file byte-identical to Orthanc's"
                    % st["accession"])
            c.eq(out[0]["bytes"], sum(len(files[k]) for k in want), "retrieve %s: bytes counted" % st["accession"])
            c.eq(leftovers(outdir), [], "retrieve %s: no spool file left" % st["accession"])
        print("# retrieved %d instances in %.1f s" % (total, time.time() - t0))

        # a series, single instances
        insts = by_study[big["uid"]]
        series_uid = insts[0]["series_uid"]
        in_series = {i["sop_uid"] for i in insts if i["series_uid"] == series_uid}
        outdir = fresh(tmp, "out-series")
        rc, out = probe(url, "retrieve", outdir, big["uid"], series_uid)
        c.eq((rc, set(landed(outdir))), (0, in_series), "retrieve a series: exactly its instances")
        two = sorted(in_series)[:2]
        outdir = fresh(tmp, "out-instances")
        rc, out = probe(url, "retrieve", outdir, big["uid"], series_uid, *two, "1.2.3.999.404")
        got = landed(outdir)
        c.eq((rc, set(got)), (0, set(two)), "retrieve instances: those asked (an unknown one skipped)")
        c.check(all(got[k] == files[k] for k in got), "retrieve instances: byte-identical")

        # the storage test switch and a failing sink
        sops = {i["sop_uid"] for i in insts}
        drop = {s for s in sops if fnv1a(s) % 2 == 0}
        outdir = fresh(tmp, "out-drop")
        rc, out = probe(url, "retrieve", outdir, big["uid"], opts=("--drop-every", "2"))
        c.eq((rc, out[0]["dropped"], set(landed(outdir))), (0, len(drop), sops - drop),
             "test switch: the %d instances it names are dropped, the others land" % len(drop))
        c.eq(leftovers(outdir), [], "test switch: dropped instances leave no spool file")
        outdir = fresh(tmp, "out-sinkfail")
        rc, out = probe(url, "retrieve", outdir, big["uid"], opts=("--sink-fail-after", "1"))
        c.eq((rc, out[0]["ok"], out[0]["reason"], out[0]["retryable"], out[0]["landed"]), (3, False, "sink", False, 1),
             "a sink failing with 'sink' stops the retrieval")
        c.eq(leftovers(outdir), [], "a stopped retrieval leaves no spool file")

        # unknown study
        outdir = fresh(tmp, "out-unknown")
        rc, out = probe(url, "retrieve", outdir, "1.2.3.4.5.6.7.8.9")
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "not_found", False),
             "unknown study: not_found, not retryable")

        # token and RetrieveURL: front (QIDO, token) -> RetrieveURLs point to wado_front
        wado_front = Front(orthanc.port)
        front = Front(orthanc.port, token="s3cret-t0ken",
                      rewrite=("http://127.0.0.1:%d/dicom-web" % orthanc.port, wado_front.url))
        tok = os.path.join(tmp, "token")
        with open(tok, "w") as f:
            f.write("  s3cret-t0ken\n")
        outdir = fresh(tmp, "out-front")
        rc, out = probe(front.url, "retrieve", outdir, big["uid"], opts=("--token-file", tok))
        got = landed(outdir)
        c.eq((rc, set(got)), (0, sops), "through the token-checking front: the whole study")
        c.check(all(got[k] == files[k] for k in got), "through the front: byte-identical")
        c.check(front.log and all(a == "Bearer s3cret-t0ken" for _, a in front.log),
                "the front got the token on every request", front.log)
        c.check(not any("/studies/%s" % big["uid"] in p and "?" not in p for p, _ in front.log),
                "no WADO-RS request went to the base URL (RetrieveURL followed)", front.log)
        c.check(any(p.startswith("/dicom-web/studies/%s" % big["uid"]) for p, _ in wado_front.log),
                "WADO-RS went to the RetrieveURL's host", wado_front.log)
        c.check(all(a is None for _, a in wado_front.log), "no token sent to the RetrieveURL's other origin",
                wado_front.log)
        with open(tok, "w") as f:
            f.write("wrong\n")
        rc, out = probe(front.url, "find", "accession", big["accession"], opts=("--token-file", tok))
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "config", False),
             "a refused token: config, not retryable")
        c.check("401" in out[0].get("error", ""), "the message names HTTP 401", out)
        rc, out = probe(front.url, "echo", opts=("--token-file", os.path.join(tmp, "missing-token")))
        c.eq((rc, out[0].get("reason")), (3, "config"), "an unreadable token file: config")
        rc, out = probe(front.url, "echo")
        c.eq((rc, out[0].get("reason")), (3, "config"), "no token where one is required: config")

        # busy, cut short, not DICOMweb
        plain = Front(orthanc.port)
        plain.rewrite = ("http://127.0.0.1:%d/dicom-web" % orthanc.port, plain.url)  # RetrieveURLs to itself
        plain.mode = "busy"
        rc, out = probe(plain.url, "find", "accession", big["accession"])
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "refused", True), "HTTP 503: refused, retryable")
        plain.mode = "truncate"
        outdir = fresh(tmp, "out-trunc")
        rc, out = probe(plain.url, "retrieve", outdir, big["uid"])
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "network", True),
             "an answer cut short: network, retryable")
        c.check("truncated" in out[0].get("error", ""), "the message says truncated", out)
        c.check(out[0]["landed"] < len(sops), "fewer instances than the study's landed", out)
        c.eq(leftovers(outdir), [], "a cut answer leaves no spool file")
        got = landed(outdir)
        c.check(all(got[k] == files[k] for k in got), "what landed before the cut is complete and identical")
        plain.mode = "html"
        rc, out = probe(plain.url, "retrieve", fresh(tmp, "out-html"), big["uid"])
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "protocol", False),
             "an HTML page instead of multipart: protocol, not retryable")
        rc, out = probe(plain.url, "echo")
        c.eq((rc, out[0].get("reason")), (3, "protocol"), "echo of a non-DICOMweb server: protocol")
        plain.stop()

        # TLS is verified: a self-signed certificate is refused
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        tls = Front(orthanc.port, tls=(cert, key))
        rc, out = probe(tls.url, "echo")
        c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "config", False),
             "https with a self-signed certificate: refused (config, not retryable)")
        c.check("certificate" in out[0].get("error", ""), "the message names the certificate", out)
        c.eq(tls.log, [], "no request reached the unverified server")
        tls.stop()

        # nothing listening / Orthanc stopped
        orthanc.stop()
        orthanc = None
        for args in (("echo",), ("find", "accession", big["accession"]),
                     ("retrieve", fresh(tmp, "out-down"), big["uid"])):
            t0 = time.time()
            rc, out = probe(url, *args)
            c.eq((rc, out[0].get("reason"), out[0].get("retryable")), (3, "network", True),
                 "Orthanc down, %s: network, retryable (%.1f s)" % (args[0], time.time() - t0))
        rc, out = probe("http://127.0.0.1:%d/dicom-web" % free_port(), "echo", opts=("--timeout", "2"))
        c.eq((rc, out[0].get("retryable")), (3, True), "a port nobody listens on: retryable")
        rc, out = probe("ftp://127.0.0.1/x", "echo")
        c.eq((rc, out[0].get("reason")), (3, "config"), "a URL that is not http(s): config")
    finally:
        for x in (front, wado_front):
            if x:
                x.stop()
        if orthanc:
            orthanc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
