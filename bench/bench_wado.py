#!/usr/bin/python3
"""WADO-RS bench (issue 14): rendered thumbnails and series retrieval.

  /usr/bin/python3 bench/bench_wado.py [--build DIR] [--instances N] [--repeats R] [--out FILE]

Builds a series of N (default 200) 512x512 16-bit CT instances (CT_small's
pixels from pydicom's test files, upscaled 4x with noise so they do not
compress to nothing; explicit VR little endian, ~520 KB each) in a temporary
archive, catalogues it in a private database (documents shaped like the
linker's) and starts metadb-api on it (archive.roots = that folder, its own
empty thumbnail cache). Measures:
  - thumbnail of a 512x512 CT instance, cold (first request of each of 20
    instances: catalogue lookup, GDCM decode, window, scale, JPEG, cache
    write; also for 20 JPEG 2000 copies made with gdcmconv -K) and warm (the same instance again, 200 times, served from the
    on-disk cache): median and p95 ms (goal: warm median < 5 ms); the
    series thumbnail (the middle of the N instances, what the dashboard
    shows), warm, 100 times;
  - WADO-RS series retrieve (multipart/related; type="application/dicom";
    transfer-syntax=*, whole body read by one client) from metadb and from
    Orthanc's DICOMweb plugin (Debian orthanc + orthanc-dicomweb, private
    instance, RemoteAccessAllowed false, the same files uploaded first):
    median MB/s of R repeats and the ratio metadb / Orthanc (goal >= 1).
Prints and writes (default bench/out/wado.json) one JSON object. Needs the
local stack's database (METADB_MONGO_URI or $METADB_HOME/database/metadb.uri).
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pydicom

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

UID = "1.2.826.0.1.3680043.10.543.77."


def make_series(root, n):
    src = pydicom.dcmread(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm"))
    base = np.kron(src.pixel_array.astype(np.int32), np.ones((4, 4), dtype=np.int32))
    rng = np.random.default_rng(7)
    files = []
    study, series = UID + "1", UID + "2"
    for i in range(n):
        ds = src.copy()
        px = np.clip(base + rng.integers(-20, 21, size=base.shape), -2000, 3000).astype(np.int16)
        ds.Rows, ds.Columns = 512, 512
        ds.PixelData = px.tobytes()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = UID + "3.%d" % (i + 1)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        path = os.path.join(root, "ct_%04d.dcm" % (i + 1))
        ds.save_as(path, write_like_original=False)
        files.append({"path": path, "sop": ds.SOPInstanceUID, "series": series, "study": study, "number": i + 1,
                      "ts": str(ds.file_meta.TransferSyntaxUID), "kind": "CT", "source": path})
    return files


def make_j2k(root, files, n):
    """JPEG 2000 (lossless, gdcmconv -K) copies of the first n files, in a series of their own."""
    import subprocess
    out = []
    series = UID + "4"
    for i, f in enumerate(files[:n]):
        ds = pydicom.dcmread(f["path"])
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = UID + "5.%d" % (i + 1)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        tmp = os.path.join(root, ".tmp.dcm")
        ds.save_as(tmp, write_like_original=False)
        path = os.path.join(root, "j2k_%04d.dcm" % (i + 1))
        subprocess.run(["gdcmconv", "-K", tmp, path], check=True)
        os.unlink(tmp)
        out.append(dict(f, path=path, sop=ds.SOPInstanceUID, series=series, ts="1.2.840.10008.1.2.4.90",
                        source=path))
    return out


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    conn.close()
    if r.status != 200:
        raise RuntimeError("GET %s -> %d %s" % (path, r.status, data[:300]))
    return dt, data, {k.lower(): v for k, v in r.getheaders()}


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build-release"))
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "wado.json"))
    a = ap.parse_args()
    os.environ["MDB_BUILD_DIR"] = a.build
    home = os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb"))
    if "METADB_MONGO_URI" not in os.environ:
        with open(os.path.join(home, "database", "metadb.uri")) as f:
            os.environ["METADB_MONGO_URI"] = f.read().strip()
    import mdb_api_support as mas  # noqa: E402 (reads MDB_BUILD_DIR / METADB_MONGO_URI at import)
    import wado_support as ws  # noqa: E402
    from orthanc_support import OrthancServer  # noqa: E402

    tmp = tempfile.mkdtemp(prefix="metadb-bench-wado-")
    db_name = "bench_wado_%d" % os.getpid()
    client = orthanc = None
    result = {"instances": a.instances, "repeats": a.repeats, "build": a.build}
    try:
        arch = os.path.join(tmp, "archive")
        os.makedirs(arch)
        files = make_series(arch, a.instances)
        total_bytes = sum(os.path.getsize(f["path"]) for f in files)
        result["series_bytes"] = total_bytes
        j2k = make_j2k(arch, files, 20)
        client, db = mas.mongo_db(db_name)
        ws.seed(db, files + j2k)
        study, series = files[0]["study"], files[0]["series"]
        se_path = "/studies/%s/series/%s" % (study, series)
        accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
        with mas.Api(db_name, "--archive.roots=" + arch, "--api.thumbnail_dir=" + os.path.join(tmp, "cache")) as api:
            # thumbnails: cold = first request of an instance, warm = cached
            cold = []
            for f in files[:20]:
                dt, data, hd = get(api.port, "/dicomweb" + se_path + "/instances/%s/thumbnail" % f["sop"])
                assert hd.get("x-metadb-cache") == "miss", hd
                cold.append(dt * 1000)
            cold_j2k = []
            for f in j2k:
                dt, data, hd = get(api.port, "/dicomweb/studies/%s/series/%s/instances/%s/thumbnail" %
                                   (f["study"], f["series"], f["sop"]))
                assert hd.get("x-metadb-cache") == "miss", hd
                cold_j2k.append(dt * 1000)
            warm = []
            inst = "/dicomweb" + se_path + "/instances/%s/thumbnail" % files[0]["sop"]
            for _ in range(200):
                dt, data, hd = get(api.port, inst)
                assert hd.get("x-metadb-cache") == "hit", hd
                warm.append(dt * 1000)
            series_warm = []
            get(api.port, "/dicomweb" + se_path + "/thumbnail")
            for _ in range(100):
                dt, sdata, hd = get(api.port, "/dicomweb" + se_path + "/thumbnail")
                assert hd.get("x-metadb-cache") == "hit", hd
                series_warm.append(dt * 1000)
            result["thumbnail_ms"] = {
                "series_warm_median": round(statistics.median(series_warm), 2),
                "series_warm_p95": round(pct(series_warm, 95), 2),
                "cold_median": round(statistics.median(cold), 2), "cold_p95": round(pct(cold, 95), 2),
                "cold_j2k_median": round(statistics.median(cold_j2k), 2),
                "cold_j2k_p95": round(pct(cold_j2k, 95), 2),
                "warm_median": round(statistics.median(warm), 2), "warm_p95": round(pct(warm, 95), 2),
                "bytes": len(data)}
            # series retrieve
            times = []
            for _ in range(a.repeats):
                dt, data, hd = get(api.port, "/dicomweb" + se_path, accept)
                parts = ws.split_multipart(data, hd["content-type"])
                assert len(parts) == a.instances, len(parts)
                times.append(dt)
            m = statistics.median(times)
            result["metadb_retrieve"] = {"seconds_median": round(m, 3), "MB_per_s": round(total_bytes / m / 1e6, 1),
                                         "instances_per_s": round(a.instances / m, 1)}
            api.stop()
        plugin = None
        for d in ("/usr/share/orthanc/plugins", "/usr/lib/orthanc"):
            if os.path.isdir(d):
                plugin = next((os.path.join(d, n) for n in sorted(os.listdir(d))
                               if n.startswith("libOrthancDicomWeb.so")), plugin)
        if not plugin:
            raise SystemExit("the Orthanc DICOMweb plugin (orthanc-dicomweb) is not installed")
        orthanc = OrthancServer(os.path.join(tmp, "orthanc"), "metadb-bench-wado",
                                {"Plugins": [plugin], "StorageCompression": False, "HttpThreadsCount": 8,
                                 "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
        for f in files:
            orthanc.upload(f["path"])
        times = []
        for _ in range(a.repeats):
            dt, data, hd = get(orthanc.port, "/dicom-web" + se_path, accept)
            parts = ws.split_multipart(data, hd["content-type"])
            assert len(parts) == a.instances, len(parts)
            times.append(dt)
        m = statistics.median(times)
        result["orthanc_retrieve"] = {"seconds_median": round(m, 3), "MB_per_s": round(total_bytes / m / 1e6, 1),
                                      "instances_per_s": round(a.instances / m, 1)}
        result["retrieve_ratio_metadb_over_orthanc"] = round(result["orthanc_retrieve"]["seconds_median"] /
                                                             result["metadb_retrieve"]["seconds_median"], 2)
    finally:
        if orthanc:
            orthanc.stop()
        if client:
            client.drop_database(db_name)
            client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
