#!/usr/bin/python3
"""Being gentle with the PACS, against a real Orthanc: two metadb-fetcher
processes in one group, source option max_associations=1, several jobs at
once. Orthanc's own log (--verbose: "Association Received from AET METADB",
"Finishing association with AET METADB") must never show two associations
from metadb open at the same time, while both fetchers did work and every job
completes. Then the fetchers' Prometheus metrics: instances and bytes landed
per source, C-FIND/C-MOVE latency histograms; and `metadb lag` lists the
fetchers' group."""
import json
import os
import re
import sys
import time
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pacs_support as ps  # noqa: E402
from pacs_support import rt  # noqa: E402

c = rt.Checks("test_pacs_cap")


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def metric_value(text, name, labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def spread_job_ids(tag, n, partitions):
    """n job ids whose retrieve tasks (keyed by job id; librdkafka's default
    partitioner puts a key on CRC-32(key) mod partitions) cover every
    partition, so each fetcher holding any partition gets a task: with plain
    ids, all 8 landing on one fetcher's partitions had a ~1% chance."""
    ids = []
    for i in range(n):
        k = 0
        while zlib.crc32(("%s-%d-%d" % (tag, i, k)).encode()) % partitions != i % partitions:
            k += 1
        ids.append("%s-%d-%d" % (tag, i, k))
    return ids


def main():
    tmp = rt.tempdir("metadb-pacsc-")
    tag = "t_pacsc_%d" % os.getpid()
    pacs = pipe = None
    ok = False
    try:
        gen = os.path.join(tmp, "gen")
        manifest = rt.generate_archive(gen, 8, 45, ["--slices", "3:5"])
        scp_ports = [ps.free_port(), ps.free_port()]
        pacs = ps.load_pacs(os.path.join(tmp, "orthanc"), scp_ports[0], manifest["instances"])
        # Orthanc routes C-MOVE destinations by AE title: each fetcher has its own AE and SCP port.
        pacs.stop()
        cfg_path = os.path.join(pacs.workdir, "orthanc.json")
        cfg = json.load(open(cfg_path))
        cfg["DicomModalities"] = {"metadb1": ["METADB1", "127.0.0.1", scp_ports[0]],
                                  "metadb2": ["METADB2", "127.0.0.1", scp_ports[1]]}
        json.dump(cfg, open(cfg_path, "w"))
        pacs.restart(verbose=True)
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        pipe = ps.Pipeline(tag, [root], root, pacs.source_entry(options=";max_associations=1"))
        pipe.setup()
        pipe.start(roles=("producer", "worker", "linker"))
        mports = rt.free_ports(2)
        for i in range(2):
            pipe.start_fetcher(["--pacs.ae_title=METADB%d" % (i + 1), "--pacs.scp_port=%d" % scp_ports[i],
                                "--fetcher.metrics_port=%d" % mports[i]])
        # Both fetchers must hold partitions before any task is published: a fetcher that joins late
        # (slow start under ASan) would find the other one done with every task, and the cap would
        # then be checked within one process only.
        end = time.time() + 60
        while time.time() < end:
            joined = [p for p in pipe.procs.running("fetcher")
                      if re.search(r"kafka: assigned [1-9][0-9]* partition", p.log_text())]
            if len(joined) == 2:
                break
            time.sleep(0.3)
        c.eq(len(joined), 2, "both fetchers were assigned partitions of the retrieve topic")
        accs = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))
        jobs = spread_job_ids(tag, len(accs), pipe.names.partitions)
        for j, a in zip(jobs, accs):
            pipe.submit("--accession", a, job_id=j, wait=False)
        end = time.time() + 120
        states = {}
        while time.time() < end:
            states = {j: (pipe.job(j) or {}).get("state") for j in jobs}
            if all(s in ("completed", "completed_with_errors", "failed") for s in states.values()):
                break
            time.sleep(0.5)
        c.check(all(s == "completed" for s in states.values()), "all %d jobs completed" % len(jobs), states)
        # associations from either fetcher's AE open at once (with max_associations=2 this is 2)
        cur = peak_all = 0
        with open(os.path.join(pacs.workdir, "orthanc.log"), errors="replace") as f:
            for line in f:
                if "Association Received from AET METADB" in line:
                    cur += 1
                    peak_all = max(peak_all, cur)
                elif "Finishing association with AET METADB" in line:
                    cur -= 1
        n_assoc = open(os.path.join(pacs.workdir, "orthanc.log"), errors="replace").read().count(
            "Association Received from AET METADB")
        c.check(n_assoc >= 2 * len(jobs), "Orthanc saw the fetchers' associations (%d)" % n_assoc)
        c.eq(peak_all, 1, "Orthanc never saw two associations from metadb at once (cap 1, two fetchers)")
        worked = [p for p in pipe.procs.running("fetcher") if " from orthanc: done" in p.log_text()]
        c.eq(len(worked), 2, "both fetchers retrieved studies")

        # metrics
        db = pipe.db()
        n_inst = db.instances.count_documents({})
        text = "".join(metrics(p) for p in mports)
        c.eq(metric_value(text, "metadb_fetcher_instances_total", 'source="orthanc"'), float(n_inst),
             "metadb_fetcher_instances_total counts every landed instance")
        size = sum(os.path.getsize(p) for p in pipe.landed().values())
        c.eq(metric_value(text, "metadb_fetcher_bytes_total", 'source="orthanc"'), float(size),
             "metadb_fetcher_bytes_total counts the landed bytes")
        c.check(metric_value(text, "metadb_fetcher_request_seconds_count", 'op="retrieve"') >= len(jobs),
                "C-MOVE latency histogram observed every retrieval")
        c.check(metric_value(text, "metadb_fetcher_request_seconds_count", 'op="find"') >= len(jobs),
                "C-FIND latency histogram observed every search")
        p = pipe.metadb("lag", "--json", check=False)
        c.check(p.returncode == 0 and pipe.names.groups["fetcher"] in p.stdout, "metadb lag lists the fetchers' group",
                p.stdout[-300:] + p.stderr[-300:])
        ok = True
    finally:
        ps.teardown(c, pipe, pacs, tmp, ok)
    sys.exit(c.summary())


if __name__ == "__main__":
    main()
