#!/usr/bin/python3
"""Backend for tests/browser/test_facets.mjs: the synthetic catalogue of
tests/integration/mdb_api_support.py (30 studies, 60 series, 300 instances)
in a private database t_facetsweb_<pid>, served by metadb-api.

Prints ONE JSON line {"base": "http://127.0.0.1:PORT", "db": DB} when ready,
then waits until stdin closes (or says "stop"), stops metadb-api and drops
the database. Failures go to stderr and exit non-zero before the JSON line."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from mdb_api_support import Api, make_catalogue, mongo_db, seed  # noqa: E402


def main():
    db_name = "t_facetsweb_%d" % os.getpid()
    client, db = mongo_db(db_name)
    try:
        seed(db, *make_catalogue())
        with Api(db_name) as api:
            print(json.dumps({"base": api.base, "db": db_name}), flush=True)
            for line in sys.stdin:
                if line.strip() == "stop":
                    break
    finally:
        client.drop_database(db_name)


if __name__ == "__main__":
    main()
