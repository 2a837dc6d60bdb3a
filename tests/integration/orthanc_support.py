"""A private Orthanc (Debian's) for the cross-check tests: started on free
local ports with RemoteAccessAllowed false (Orthanc 1.10 cannot bind one
address), waited for, fed over REST, stopped."""

import http.client
import json
import os
import random
import socket
import subprocess
import time


def free_port():
    """A port free now and below the kernel's ephemeral range (32768-60999
    here): a port the kernel handed out by bind(0) can be taken again as the
    local port of any outgoing connection before the server it is meant for
    binds it (CI saw a fetcher's storage SCP port taken that way)."""
    lo = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    lo = max(lo, 12000)
    for _ in range(200):
        port = random.randint(10000, lo - 1)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port below %d" % lo)


class OrthancServer:
    def __init__(self, workdir, name, extra_config=None):
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        cfg = {"Name": name, "StorageDirectory": os.path.join(workdir, "storage"),
               "IndexDirectory": os.path.join(workdir, "index"), "HttpPort": self.port, "DicomPort": free_port(),
               "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpThreadsCount": 4,
               "ConcurrentJobs": 1, "Plugins": []}
        cfg.update(extra_config or {})
        path = os.path.join(workdir, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.log = open(os.path.join(workdir, "orthanc.log"), "w")
        self.proc = subprocess.Popen(["Orthanc", path], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.request("GET", "/system")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        with open(self.log.name) as f:
            raise RuntimeError("Orthanc did not start; log: " + f.read()[-2000:])

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def upload(self, path):
        with open(path, "rb") as f:
            status, data = self.request("POST", "/instances", f.read(), {"Content-Type": "application/dicom"})
        if status != 200:
            raise RuntimeError("Orthanc refused %s: %s %s" % (path, status, data[:200]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
