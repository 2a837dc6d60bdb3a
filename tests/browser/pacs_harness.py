#!/usr/bin/python3
"""Backend for tests/browser/test_pacs_jobs.mjs: a private Orthanc (the PACS),
the real pipeline with metadb-fetcher (pacs.test_drop=always:3, so some
instances never land) and metadb-api, on the test's own database, topics and
groups. It runs two jobs:
  "incomplete": two accessions from pacs:orthanc, ends completed_with_errors
                with the dropped SOP UIDs named;
  "waiting":    Orthanc is stopped first, so the job stays `retrieving`.
Then prints ONE JSON line {"base", "jobs": {"incomplete": ID, "waiting": ID},
"dropped": [SOP UIDs], "accessions": [...]} and waits until stdin closes (or
says "stop"); then stops everything and drops the database. Failures go to
stderr and exit non-zero before the JSON line."""
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import pacs_support as ps  # noqa: E402
from mdb_api_support import Api  # noqa: E402
from pacs_support import rt  # noqa: E402


def main():
    tmp = rt.tempdir("metadb-pacsweb-")
    tag = "t_pacsweb_%d" % os.getpid()
    pacs = pipe = None
    try:
        gen = os.path.join(tmp, "gen")
        rt.subprocess.run([rt.PY, rt.GEN, "--out", gen, "--patients", "4", "--seed", "49", "--small", "--slices",
                           "4:6", "--jobs", "1"], check=True, capture_output=True, timeout=300)
        manifest = json.load(open(os.path.join(gen, "manifest.json")))
        scp_port = ps.free_port()
        pacs = ps.Pacs(os.path.join(tmp, "orthanc"), scp_port)
        for inst in manifest["instances"]:
            pacs.upload(inst["path"])
        root = os.path.join(tmp, "landing")
        os.makedirs(root)
        pipe = ps.Pipeline(tag, [root], root, pacs.source_entry(),
                           ["--pacs.scp_port=%d" % scp_port, "--pacs.retries=100", "--pacs.backoff_ms=1000"])
        pipe.setup()
        pipe.start(fetcher_extra=["--pacs.test_drop=always:3"])
        accs = sorted(s["accession"] for s in manifest["studies"] if s.get("accession"))
        want = {}
        for a in accs[:2]:
            want.update(pacs.instances_of_accession(a))
        dropped = sorted(s for s in want if ps.fnv1a(s) % 3 == 0)
        p = pipe.submit("--accession", *accs[:2], job_id=tag + "-incomplete")
        job = pipe.job(tag + "-incomplete")
        if not job or job["state"] != "completed_with_errors" or not dropped:
            raise RuntimeError("incomplete job: %s %s %s" % (job and job.get("state"), dropped, p.stdout[-500:]))
        pacs.stop()
        pipe.submit("--accession", accs[2], job_id=tag + "-waiting", wait=False)
        rt.wait_for(lambda: (pipe.job(tag + "-waiting") or {}).get("state") == "retrieving", 30)
        with Api(pipe.names.db, "--mongo.uri=" + pipe.stack.mongo_uri) as api:
            print(json.dumps({"base": api.base, "jobs": {"incomplete": tag + "-incomplete", "waiting": tag + "-waiting"},
                              "dropped": dropped, "accessions": accs[:3]}), flush=True)
            for line in sys.stdin:
                if line.strip() == "stop":
                    break
    except Exception as e:  # noqa: BLE001
        print("pacs_harness: %s" % e, file=sys.stderr)
        if pipe:
            pipe.procs.dump_logs()
        sys.exit(1)
    finally:
        if pipe:
            pipe.stop()
            pipe.cleanup()
        if pacs and pacs.proc.poll() is None:
            pacs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
