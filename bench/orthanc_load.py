#!/usr/bin/python3
"""Peer baseline: load the same DICOM files into Orthanc (Debian) through its
REST API (POST /instances) with N parallel uploaders and report instances/s.

Usage: bench/orthanc_load.py --files LIST.txt [--uploaders 2] [--limit N]
Prints one JSON object: {instances, seconds, instances_per_s, uploaders, failed}.
Orthanc runs in a temporary folder on a free port with RemoteAccessAllowed
false (Orthanc 1.10 cannot bind one address) and is stopped at the end.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_orthanc(workdir):
    http_port, dicom_port = free_port(), free_port()
    cfg = {
        "Name": "metadb-bench",
        "StorageDirectory": os.path.join(workdir, "storage"),
        "IndexDirectory": os.path.join(workdir, "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": False,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "HttpThreadsCount": 8,
        "StorageCompression": False,
    }
    path = os.path.join(workdir, "orthanc.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    log = open(os.path.join(workdir, "orthanc.log"), "w")
    proc = subprocess.Popen(["Orthanc", path], stdout=log, stderr=subprocess.STDOUT)
    url = "http://127.0.0.1:%d" % http_port
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/system", timeout=2).read()
            return proc, url
        except Exception:
            if proc.poll() is not None:
                raise SystemExit("Orthanc exited; see " + log.name)
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("Orthanc did not become ready in 60 s")


def upload_all(url, files, uploaders):
    lock = threading.Lock()
    queue = list(files)
    failed = [0]

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            with open(path, "rb") as f:
                body = f.read()
            req = urllib.request.Request(url + "/instances", data=body, method="POST",
                                         headers={"Content-Type": "application/dicom"})
            try:
                urllib.request.urlopen(req, timeout=60).read()
            except Exception:
                with lock:
                    failed[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(uploaders)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, failed[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", required=True, help="text file, one DICOM path per line")
    ap.add_argument("--uploaders", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    files = [l.strip() for l in open(args.files) if l.strip()]
    if args.limit:
        files = files[: args.limit]
    workdir = tempfile.mkdtemp(prefix="metadb-orthanc-")
    proc, url = start_orthanc(workdir)
    try:
        seconds, failed = upload_all(url, files, args.uploaders)
        stats = json.load(urllib.request.urlopen(url + "/statistics"))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    n = int(stats.get("CountInstances", 0))
    print(json.dumps({"instances": n, "files": len(files), "seconds": round(seconds, 3),
                      "instances_per_s": round(n / seconds, 1) if seconds else 0,
                      "uploaders": args.uploaders, "failed": failed}))
    return 0 if n > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
