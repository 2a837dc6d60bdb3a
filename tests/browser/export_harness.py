#!/usr/bin/python3
"""Backend for tests/browser/test_export.mjs: a synthetic catalogue (the
documents of tests/integration/mdb_api_support.make_catalogue, 60 studies,
120 series, 1,200 instances, with study counts and file sizes) in a private
database t_bexport_<pid>, served by metadb-api (read-only user when the stack
has one).

Prints ONE JSON line {"base": "http://127.0.0.1:PORT", "db": DB}, then reads
requests from stdin, one JSON array per line: the arguments of
`metadb export ...`, run on the same database; each answers one JSON line
{"rc": N, "stdout": "...", "stderr": "..."} (stdout byte for byte, CRLF
kept). An empty line or end of input stops metadb-api and drops the
database. The database credentials never leave this process."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from mdb_api_support import Api, CLI_BIN, MONGO_URI, make_catalogue, mongo_db, seed  # noqa: E402


def main():
    db_name = "t_bexport_%d" % os.getpid()
    client, db = mongo_db(db_name)
    api = None
    try:
        studies, series, instances = make_catalogue(n_studies=60, per_series=10)
        for st in studies:
            mine = [s for s in series if s["study_id"] == st["_id"]]
            st["series_count"] = len(mine)
            st["instance_count"] = sum(s["instance_count"] for s in mine)
        for n, inst in enumerate(instances):
            inst["file"] = {"size": 400000 + n, "mtime": 1700000000}
        seed(db, studies, series, instances)
        ro = os.environ.get("MDB_TEST_MONGO_RO_URI") or os.environ.get("METADB_API_MONGO_URI")
        api = Api(db_name, *(["--api.mongo_uri=" + ro] if ro else []))
        print(json.dumps({"base": api.base, "db": db_name}), flush=True)
        for line in sys.stdin:
            line = line.strip()
            if not line or line == "stop":
                break
            args = json.loads(line)
            r = subprocess.run([CLI_BIN, "--mongo.uri=" + MONGO_URI, "--mongo.db=" + db_name, "export"] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            print(json.dumps({"rc": r.returncode, "stdout": r.stdout.decode("utf-8"),
                              "stderr": r.stderr.decode("utf-8", "replace")}), flush=True)
    finally:
        if api:
            rc = api.stop()
            if rc != 0:
                print("export_harness: metadb-api exited %s\n%s" % (rc, api.logtext()[-2000:]), file=sys.stderr)
            os.unlink(api.log.name)
        client.drop_database(db_name)
        client.close()


if __name__ == "__main__":
    main()
