#!/usr/bin/python3
"""WADO-RS (api/wado*.c): retrieval, metadata, frames and rendering against
independent readers.

An archive of real files (tests/integration/wado_support.py: pydicom's CT and
MR test files, the MR as JPEG lossless / JPEG 2000 / RLE / JPEG-LS made with
gdcmconv, implicit-VR and big-endian copies, a MONOCHROME1 CR) is catalogued
in a private database and served by a metadb-api whose archive.roots is that
folder. Then:
  - dicomweb-client (PyPI, the installed venv) retrieves the study, a series
    and an instance: every data set equals pydicom's reading of the archive
    file, pixel data included; the raw multipart bodies carry each file's
    exact bytes;
  - dicomweb-client's metadata (study, series, instance) holds, for every
    attribute pydicom reads from the file, the same VR and value, and nothing
    pydicom does not read; top-level bulk data is a BulkDataURI whose bytes
    (single part and multipart) are pydicom's value;
  - frames: uncompressed and decoded frames equal pydicom's pixel bytes;
    transfer-syntax=* passes the stored JPEG 2000 fragments through as is;
  - rendered PNGs match pydicom's windowing (apply_windowing, normalised to
    8 bits) of the same pixels within one grey level on >= 99.9 % of pixels:
    the file's window, the pixel range when the file has none, explicit
    windows (linear, linear-exact, sigmoid), MONOCHROME1 inverted, for the
    uncompressed and the compressed files; thumbnails and the series
    thumbnail (the middle instance) have the asked viewport; JPEG answers
    are JPEGs;
  - QIDO answers carry RetrieveURL; bad parameters are 400, unknown
    resources 404, other methods 405, unacceptable types 406; everything
    is Cache-Control: no-store; read tokens apply to every image endpoint.
"""
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_windowing, convert_color_space

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wado_support as ws  # noqa: E402
from mdb_api_support import Api, Checker, mongo_db  # noqa: E402

METADB_HOME = os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb"))
VENV_PY = os.path.join(METADB_HOME, "cache", "venv", "bin", "python")
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"}
TOKEN = "wado-read-token-0123456789"

CLIENT_SCRIPT = r"""
import json, sys
import pydicom
from dicomweb_client.api import DICOMwebClient
base, study, series, sop, paths_json = sys.argv[1:6]
paths = json.load(open(paths_json))
c = DICOMwebClient(url=base)
out = {"study": [], "series": [], "instance": [], "mismatch": []}
def check(kind, datasets):
    for ds in datasets:
        uid = ds.SOPInstanceUID
        out[kind].append(uid)
        ref = pydicom.dcmread(paths[uid])
        if ds != ref or ds.PixelData != ref.PixelData:
            out["mismatch"].append([kind, uid])
check("study", c.retrieve_study(study))
check("series", c.retrieve_series(study, series))
check("instance", [c.retrieve_instance(study, series, sop)])
out["meta_study"] = c.retrieve_study_metadata(study)
out["meta_series"] = c.retrieve_series_metadata(study, series)
out["meta_instance"] = [c.retrieve_instance_metadata(study, series, sop)]
print(json.dumps(out))
"""


def first(v):
    return v[0] if isinstance(v, pydicom.multival.MultiValue) else v


def pn_text(v):
    parts = [v.get("Alphabetic", ""), v.get("Ideographic", ""), v.get("Phonetic", "")]
    return "=".join(parts).rstrip("=")


def same_value(vr, ours, elem):
    """ours: the DICOM JSON "Value" list (or None); elem: pydicom's element."""
    v = elem.value
    if v is None or v == "" or (isinstance(v, (list, pydicom.multival.MultiValue)) and len(v) == 0):
        return not ours or all(x is None for x in ours)
    vals = list(v) if isinstance(v, (list, pydicom.multival.MultiValue)) else [v]
    if ours is None or len(ours) != len(vals):
        return False
    for a, b in zip(ours, vals):
        if vr == "PN":
            if (pn_text(a) if a else "") != str(b):
                return False
        elif vr in ("IS", "DS", "FL", "FD", "US", "SS", "UL", "SL", "UV", "SV"):
            if b == "" or b is None:
                if a is not None:
                    return False
            elif a is None or abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(b))):
                return False
        elif vr == "AT":
            if a != "%08X" % int(b):
                return False
        else:
            if (a if a is not None else "") != str(b):
                return False
    return True


def compare_dataset(ours, ds, where, problems, fetch=None, top=True):
    """Every non-bulk element pydicom reads equals ours; top-level bulk data is a BulkDataURI whose bytes
    (fetched with fetch(uri), when given) are pydicom's value; ours holds nothing else."""
    seen = set()
    for elem in ds:
        tag = "%08X" % int(elem.tag)
        if elem.tag.group == 0x0002 or elem.tag.element == 0 or elem.tag == 0x7FE00010:
            continue
        if elem.VR in BULK_VRS:
            if not top:
                continue
            seen.add(tag)
            uri = ours.get(tag, {}).get("BulkDataURI")
            if not uri or not uri.endswith("/bulkdata/" + tag):
                problems.append("%s %s (%s, bulk): no BulkDataURI: %r" % (where, tag, elem.keyword, ours.get(tag)))
            elif fetch:
                got = fetch(uri)
                if got != elem.value:
                    problems.append("%s %s: bulk data %r, pydicom %r" % (where, tag, got[:40], elem.value[:40]))
            continue
        seen.add(tag)
        mine = ours.get(tag)
        if mine is None:
            problems.append("%s %s (%s) missing" % (where, tag, elem.keyword))
            continue
        if "or" not in elem.VR and mine.get("vr") != elem.VR:
            problems.append("%s %s: VR %s, pydicom %s" % (where, tag, mine.get("vr"), elem.VR))
            continue
        if elem.VR == "SQ":
            items = mine.get("Value", [])
            if len(items) != len(elem.value):
                problems.append("%s %s: %d items, pydicom %d" % (where, tag, len(items), len(elem.value)))
                continue
            for i, (a, b) in enumerate(zip(items, elem.value)):
                compare_dataset(a, b, "%s %s[%d]" % (where, tag, i), problems, top=False)
            continue
        if not same_value(mine.get("vr"), mine.get("Value"), elem):
            problems.append("%s %s (%s): %r, pydicom %r" % (where, tag, elem.keyword, mine.get("Value"),
                                                            elem.value))
    extra = set(ours) - seen
    if extra:
        problems.append("%s: attributes pydicom does not read (or reads as bulk): %s" % (where, sorted(extra)[:8]))


def reference_render(f, window=None):
    """pydicom's windowed rendering of the file's pixels on 0..255 (float)."""
    head = pydicom.dcmread(f["path"], stop_before_pixels=True)
    src = pydicom.dcmread(f["source"])
    x = apply_modality_lut(src.pixel_array, head).astype(np.float64)
    ds = pydicom.Dataset()
    ds.BitsStored = head.BitsStored
    ds.PhotometricInterpretation = head.PhotometricInterpretation
    ds.PixelRepresentation = head.PixelRepresentation
    if "RescaleSlope" in head and "RescaleIntercept" in head:
        ds.RescaleSlope, ds.RescaleIntercept = head.RescaleSlope, head.RescaleIntercept
    if window:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = window
    elif "WindowCenter" in head:
        ds.WindowCenter, ds.WindowWidth = first(head.WindowCenter), first(head.WindowWidth)
        ds.VOILUTFunction = head.get("VOILUTFunction", "LINEAR")
    else:
        lo, hi = float(x.min()), float(x.max())
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = (lo + hi) / 2, max(hi - lo, 1), "LINEAR_EXACT"
    y = apply_windowing(x, ds)
    bits = int(head.BitsStored)
    ymin, ymax = (0, 2 ** bits - 1) if head.PixelRepresentation == 0 else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds:
        ymin = ymin * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ymax = ymax * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    y = (y - min(ymin, ymax)) / abs(ymax - ymin) * 255.0
    if head.PhotometricInterpretation == "MONOCHROME1":
        y = 255.0 - y
    return y


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-wado-")
    db_name = "t_wado_%d" % os.getpid()
    client = None
    try:
        arch = os.path.join(tmp, "archive")
        files = ws.build_archive(arch)
        by_kind = {f["kind"]: f for f in files}
        ck.check(by_kind["MR JPEG lossless"]["ts"] in ("1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57") and
                 by_kind["MR JPEG 2000"]["ts"] == "1.2.840.10008.1.2.4.90" and
                 by_kind["MR RLE"]["ts"] == "1.2.840.10008.1.2.5",
                 "gdcmconv made JPEG lossless, JPEG 2000 and RLE files",
                 str([(f["kind"], f["ts"]) for f in files]))
        client, db = mongo_db(db_name)
        ws.seed(db, files)
        mr, ct = by_kind["MR"], by_kind["CT"]
        mr_files = [f for f in files if f["series"] == mr["series"]]
        paths = {f["sop"]: f["path"] for f in files}
        with Api(db_name, "--archive.roots=" + arch, "--api.thumbnail_dir=" + os.path.join(tmp, "cache")) as api:
            base = api.base + "/dicomweb"
            st_url = "/dicomweb/studies/%s" % mr["study"]
            se_url = st_url + "/series/%s" % mr["series"]

            # ---- dicomweb-client: retrieve and metadata
            pj = os.path.join(tmp, "paths.json")
            with open(pj, "w") as fh:
                json.dump(paths, fh)
            if not os.path.exists(VENV_PY):
                ck.check(False, "dicomweb-client venv exists at %s (run deploy/install.sh)" % VENV_PY)
                out = {}
            else:
                r = subprocess.run([VENV_PY, "-c", CLIENT_SCRIPT, base, mr["study"], mr["series"], mr["sop"], pj],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
                out = json.loads(r.stdout) if r.returncode == 0 else {}
                ck.check(r.returncode == 0, "dicomweb-client ran", r.stderr[-1500:])
            want = sorted(f["sop"] for f in mr_files)
            ck.check(sorted(out.get("study", [])) == want and sorted(out.get("series", [])) == want and
                     out.get("instance") == [mr["sop"]],
                     "dicomweb-client retrieves the study (%d instances), the series and an instance" % len(want),
                     str(out.get("study")))
            ck.check(out and not out.get("mismatch"),
                     "every retrieved data set equals pydicom's reading of the archive file (pixel data included)",
                     str(out.get("mismatch")))
            fetched = []

            def fetch(uri):
                """A bulk data element: single part for OHIF's Accept, multipart otherwise (both must agree)."""
                st1, h1, single = raw_get(api, uri, {"Accept": "application/octet-stream"})
                st2, h2, multi = raw_get(api, uri, {})
                parts = ws.split_multipart(multi, h2.get("content-type", "")) if st2 == 200 else []
                fetched.append(uri)
                if st1 != 200 or len(parts) != 1 or parts[0][1] != single:
                    return b"<%s %s>" % (str(st1).encode(), str(st2).encode())
                return single
            problems = []
            metas = out.get("meta_study", []) + out.get("meta_series", []) + out.get("meta_instance", [])
            for m in metas:
                sop = m.get("00080018", {}).get("Value", [None])[0]
                if sop not in paths:
                    problems.append("metadata of unknown instance %s" % sop)
                    continue
                compare_dataset(m, pydicom.dcmread(paths[sop], stop_before_pixels=True), os.path.basename(paths[sop]),
                                problems, fetch)
            ck.check(len(out.get("meta_study", [])) == len(want) and len(out.get("meta_series", [])) == len(want) and
                     len(out.get("meta_instance", [])) == 1 and not problems,
                     "metadata (study, series, instance; %d data sets, implicit VR, big endian and compressed files) "
                     "equals pydicom's reading attribute by attribute" % len(metas), "\n".join(problems[:20]))

            problems = []
            others = [f for f in files if f["series"] != mr["series"]]
            for f in others:
                status, hd, body = api.request("GET", "/dicomweb/studies/%s/series/%s/instances/%s/metadata" %
                                               (f["study"], f["series"], f["sop"]))
                if status != 200 or len(body) != 1:
                    problems.append("%s: %s" % (f["kind"], status))
                    continue
                compare_dataset(body[0], pydicom.dcmread(f["path"], stop_before_pixels=True), f["kind"], problems, fetch)
            ck.check(fetched, "bulk data was fetched through BulkDataURIs (%d elements)" % len(fetched))
            ck.check(not problems, "instance metadata of %s equals pydicom's reading" %
                     ", ".join(f["kind"] for f in others), "\n".join(problems[:20]))

            # ---- raw bytes of the multipart bodies
            for url, sops in ((st_url, want), (se_url, want),
                              (se_url + "/instances/%s" % by_kind["MR JPEG 2000"]["sop"], [by_kind["MR JPEG 2000"]["sop"]])):
                status, hd, raw = raw_get(api, url, {"Accept": 'multipart/related; type="application/dicom"; '
                                                               'transfer-syntax=*'})
                parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
                got = {}
                for h, payload in parts:
                    loc = h.get("content-location", "")
                    got[loc.rsplit("/", 1)[-1]] = (h, payload)
                ok = status == 200 and sorted(got) == sorted(sops)
                for s in sops:
                    with open(paths[s], "rb") as fh:
                        ok = ok and got.get(s, ({}, b""))[1] == fh.read()
                ts_ok = all(("transfer-syntax=" + next(f["ts"] for f in files if f["sop"] == s)) in got[s][0].get(
                    "content-type", "") for s in sops if s in got)
                ck.check(ok and ts_ok and hd.get("cache-control") == "no-store" and
                         hd.get("content-type", "").startswith('multipart/related; type="application/dicom"'),
                         "retrieve %s: %d parts with the archive files' exact bytes and their transfer syntax, "
                         "no-store" % (url.count("/") > 4 and "instance/series" or "study", len(sops)),
                         "%s %s" % (status, hd))
            status, hd, body = api.request("GET", se_url, headers={
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
            ck.check(status == 406, "retrieve asking a transfer syntax the files are not in -> 406", "%s" % status)
            status, hd, body = api.request("GET", se_url, headers={"Accept": "application/json"})
            ck.check(status == 406, "retrieve with Accept application/json -> 406", "%s" % status)

            # ---- frames
            src = pydicom.dcmread(mr["path"])
            want_px = src.pixel_array.astype("<i2" if src.PixelRepresentation else "<u2").tobytes()
            for f in (mr, by_kind["MR implicit VR"], by_kind["MR JPEG 2000"], by_kind["MR RLE"],
                      by_kind["MR big endian"]):
                status, hd, raw = raw_get(api, se_url + "/instances/%s/frames/1" % f["sop"], {
                    "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'})
                parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
                exp = want_px if f["kind"] != "MR big endian" else pydicom.dcmread(f["path"]).pixel_array.astype(
                    "<i2" if src.PixelRepresentation else "<u2").tobytes()
                ck.check(len(parts) == 1 and parts[0][1] == exp and
                         "1.2.840.10008.1.2.1" in parts[0][0].get("content-type", ""),
                         "frames/1 of %s decoded to explicit little endian = pydicom's pixels" % f["kind"],
                         "%s %s" % (status, len(parts)))
            j2k = by_kind["MR JPEG 2000"]
            status, hd, raw = raw_get(api, se_url + "/instances/%s/frames/1" % j2k["sop"], {
                "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
            parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
            jds = pydicom.dcmread(j2k["path"])
            stored = b"".join(pydicom.encaps.generate_pixel_data_frame(jds.PixelData, 1))
            ck.check(len(parts) == 1 and parts[0][1] == stored and j2k["ts"] in parts[0][0].get("content-type", ""),
                     "frames/1 with transfer-syntax=* passes the stored JPEG 2000 codestream through",
                     "%s %s" % (status, parts and parts[0][0]))
            status, hd, body = api.request("GET", se_url + "/instances/%s/frames/2" % mr["sop"])
            ck.check(status == 404, "a frame beyond the instance's frames -> 404", "%s %s" % (status, body))
            status, hd, body = api.request("GET", se_url + "/instances/%s/frames/x" % mr["sop"])
            ck.check(status == 400, "a malformed frame list -> 400", "%s" % status)

            # ---- rendering vs pydicom's windowing
            cases = [(f, None) for f in files if not f.get("color")]
            cases += [(ct, (40.0, 400.0, "LINEAR")), (ct, (100.0, 800.0, "LINEAR_EXACT")),
                      (mr, (500.0, 700.0, "SIGMOID")), (by_kind["CR MONOCHROME1"], (1200.0, 900.0, "LINEAR"))]
            for f, window in cases:
                url = "/dicomweb/studies/%s/series/%s/instances/%s/rendered" % (f["study"], f["series"], f["sop"])
                if window:
                    url += "?window=%g,%g,%s" % (window[0], window[1], window[2].lower().replace("_", "-"))
                status, hd, raw = raw_get(api, url, {"Accept": "image/png"})
                if status != 200 or hd.get("content-type") != "image/png":
                    ck.check(False, "rendered %s %s answers a PNG" % (f["kind"], window), "%s %s" % (status, raw[:300]))
                    continue
                img = ws.read_png(raw).astype(np.float64)
                ref = reference_render(f, window)
                close = np.abs(img - np.rint(ref)) <= 1.0 if img.shape == ref.shape else np.zeros(1, bool)
                frac = float(close.mean())
                ck.check(img.shape == ref.shape and frac >= 0.999 and hd.get("cache-control") == "no-store",
                         "rendered %s (%s, %s): %.4f of %d pixels within one grey level of pydicom's windowing" %
                         (f["kind"], ws.TS_NAMES.get(f["ts"], f["ts"]), "window %s" % (window,) if window else
                          "file's window" if "WindowCenter" in pydicom.dcmread(f["path"], stop_before_pixels=True)
                          else "pixel range", frac, img.size),
                         "shape %s vs %s" % (img.shape, ref.shape))
            # colour: shown as RGB, no window (YBR converted); frame 2 of a multi-frame file
            rgb2, ybr = by_kind["RGB RLE 2 frames"], by_kind["YBR_FULL_422"]
            inst = "/dicomweb/studies/%s/series/%s/instances/%%s" % (rgb2["study"], rgb2["series"])
            want2 = pydicom.dcmread(rgb2["path"]).pixel_array[1]
            status, hd, raw = raw_get(api, inst % rgb2["sop"] + "/frames/2/rendered?accept=image/png", {})
            got = ws.read_png(raw) if status == 200 else None
            ck.check(got is not None and got.shape == want2.shape and np.array_equal(got, want2),
                     "frames/2/rendered of an RGB RLE file = pydicom's second frame, exactly", "%s" % status)
            status, hd, raw = raw_get(api, inst % rgb2["sop"] + "/frames/2", {
                "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'})
            parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
            ck.check(len(parts) == 1 and parts[0][1] == want2.tobytes(),
                     "frames/2 of an RGB RLE file decoded = pydicom's second frame (interleaved RGB)", "%s" % status)
            jb, rle = by_kind["JPEG baseline YBR_FULL_422"], by_kind["RGB RLE"]
            status, hd, raw = raw_get(api, inst % jb["sop"] + "/rendered?accept=image/png", {})
            got = ws.read_png(raw).astype(np.int32) if status == 200 else None
            ref = pydicom.dcmread(rle["path"]).pixel_array.astype(np.int32)
            d = np.abs(got - ref) if got is not None and got.shape == ref.shape else None
            ck.check(d is not None and d.mean() < 5 and (d <= 16).mean() >= 0.9,
                     "JPEG baseline YBR_FULL_422 rendered as RGB = pydicom's reading of the lossless RLE copy of the "
                     "same picture, within JPEG loss (mean %.2f levels)" % (d.mean() if d is not None else -1),
                     "%s" % status)
            nat = by_kind["RGB native 2 frames"]
            nds = pydicom.dcmread(nat["path"])
            status, hd, raw = raw_get(api, inst % nat["sop"] + "/frames/2,1", {
                "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'})
            parts = ws.split_multipart(raw, hd.get("content-type", "")) if status == 200 else []
            ck.check(nds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and len(parts) == 2 and
                     parts[0][1] == nds.pixel_array[1].tobytes() and parts[1][1] == nds.pixel_array[0].tobytes(),
                     "frames/2,1 of a native multi-frame file: both frames, in the order asked, = pydicom's",
                     "%s %d" % (status, len(parts)))
            status, hd, body = api.request("GET", inst % nat["sop"] + "/frames/3")
            ck.check(status == 404, "frames/3 of a 2-frame native file -> 404", "%s" % status)
            yds = pydicom.dcmread(ybr["path"])
            wanty = convert_color_space(yds.pixel_array, "YBR_FULL", "RGB").astype(np.int32)
            status, hd, raw = raw_get(api, inst % ybr["sop"] + "/rendered?accept=image/png", {})
            got = ws.read_png(raw).astype(np.int32) if status == 200 else None
            frac = float((np.abs(got - wanty) <= 2).mean()) if got is not None and got.shape == wanty.shape else 0
            ck.check(frac >= 0.999, "rendered YBR_FULL_422 (uncompressed) = pydicom's RGB conversion within 2 levels "
                     "(%.4f of samples)" % frac, "%s" % status)
            status, hd, raw = raw_get(api, se_url + "/instances/%s/thumbnail?viewport=32,16" % mr["sop"],
                                      {"Accept": "image/png"})
            ck.check(status == 200 and ws.read_png(raw).shape == (16, 16),
                     "thumbnail viewport=32,16 of a 64x64 image is 16x16 (aspect kept)", "%s" % status)
            status, hd, raw = raw_get(api, "/dicomweb/studies/%s/series/%s/thumbnail" % (ct["study"], ct["series"]),
                                      {})
            ck.check(status == 200 and hd.get("content-type") == "image/jpeg" and raw[:2] == b"\xff\xd8",
                     "series thumbnail without Accept is a JPEG", "%s %s" % (status, hd.get("content-type")))
            # the middle instance of the MR series by instance order
            middle = sorted(mr_files, key=lambda f: f["number"])[len(mr_files) // 2]
            _, _, a = raw_get(api, se_url + "/thumbnail?accept=image/png", {})
            _, _, b = raw_get(api, se_url + "/instances/%s/thumbnail?accept=image/png" % middle["sop"], {})
            ck.check(a == b and a[:4] == b"\x89PNG", "series thumbnail = the middle instance's (instance %d of %d)" %
                     (middle["number"], len(mr_files)))
            _, _, c = raw_get(api, st_url + "/thumbnail?accept=image/png", {})
            ck.check(c == a, "study thumbnail = its (middle) series' thumbnail")
            for q, what in (("window=40", "window without width"), ("window=40,0,linear", "zero width"),
                            ("window=40,400,cubic", "unknown function"), ("viewport=0,10", "zero viewport"),
                            ("viewport=1,2,3,4,5,6", "cropping viewport"), ("quality=101", "quality 101"),
                            ("bogus=1", "unknown parameter")):
                status, hd, body = api.request("GET", se_url + "/instances/%s/rendered?%s" % (mr["sop"], q))
                ck.check(status == 400 and isinstance(body, dict) and body.get("error") == "bad_parameter",
                         "rendered with %s -> 400 bad_parameter" % what, "%s %s" % (status, body))
            status, hd, body = api.request("GET", se_url + "/instances/%s/rendered" % mr["sop"],
                                           headers={"Accept": "image/gif"})
            ck.check(status == 406, "rendered with Accept image/gif -> 406", "%s" % status)

            # ---- QIDO RetrieveURL, errors, methods
            status, hd, body = api.request("GET", se_url + "/instances")
            urls = sorted(d.get("00081190", {}).get("Value", [""])[0] for d in body) if status == 200 else []
            ck.check(urls == sorted(se_url + "/instances/" + s for s in want),
                     "QIDO instances carry RetrieveURL (0008,1190) to their WADO-RS resource", str(urls[:2]))
            status, hd, body = api.request("GET", "/dicomweb/studies")
            ck.check(status == 200 and any(d.get("00081190", {}).get("Value") == ["/dicomweb/studies/" + mr["study"]]
                                           for d in body), "QIDO studies carry RetrieveURL")
            for url, code in ((st_url + "/series/1.2.3", 404), (st_url + "/series/1.2.3/instances/4.5", 404),
                              ("/dicomweb/studies/1.2.3/metadata", 404), (st_url + "/series/abc", 400),
                              (se_url + "/instances/%s/bogus" % mr["sop"], 404), (st_url + "/rendered", 404),
                              ("/dicomweb/studies/1.2.3/thumbnail", 404)):
                status, hd, body = api.request("GET", url)
                ck.check(status == code and isinstance(body, dict) and "error" in body,
                         "GET %s -> %d with a JSON error" % (url.replace(st_url, "{study}"), code), "%s %s" % (status, body))
            status, hd, body = api.request("DELETE", se_url)
            ck.check(status == 405 and "GET" in hd.get("allow", ""), "DELETE on a series -> 405", "%s" % status)
            status, hd, body = api.request("GET", se_url + "/metadata", headers={"Accept": "image/png"})
            ck.check(status == 406, "metadata with Accept image/png -> 406", "%s" % status)
            rc = api.stop()
            ck.check(rc == 0 and "Sanitizer" not in api.logtext(), "metadb-api exits cleanly", api.logtext()[-1500:])

        # ---- read tokens
        with Api(db_name, "--archive.roots=" + arch, "--api.read_tokens=" + TOKEN,
                 "--api.thumbnail_cache_mb=0") as api:
            inst = "/dicomweb/studies/%s/series/%s/instances/%s" % (mr["study"], mr["series"], mr["sop"])
            for suffix in ("", "/metadata", "/rendered", "/thumbnail", "/frames/1"):
                status, _, _ = api.request("GET", inst + suffix)
                status2, hd, _ = raw_get(api, inst + suffix, {"Authorization": "Bearer " + TOKEN})
                ck.check(status == 401 and status2 == 200 and hd.get("cache-control") == "no-store",
                         "%s: 401 without the read token, 200 (no-store) with it" % (suffix or "retrieve"),
                         "%s %s" % (status, status2))
    finally:
        if client:
            try:
                client.drop_database(db_name)
            finally:
                client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


def raw_get(api, path, headers):
    """(status, headers lower-case, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=60)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    data = r.read()
    hd = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hd, data


if __name__ == "__main__":
    main()
