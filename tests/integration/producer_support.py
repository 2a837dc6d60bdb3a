"""Helpers shared by test_catalog.py and test_producer.py: a private database,
private topic names and consumer group per test run, the `metadb` CLI with
those settings, a generated archive, kcat wrappers and a small assertion
helper that reports every failed check instead of stopping at the first.

Every test owns t_<name>_<pid> (database, topic prefix, group) and drops the
database at the end; a test that cannot reach Kafka or MongoDB fails."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pymongo

BROKERS = os.environ.get("MDB_TEST_BROKERS", "127.0.0.1:9092")
MONGO_URI = os.environ.get("MDB_TEST_MONGO_URI") or os.environ.get("METADB_MONGO_URI", "mongodb://127.0.0.1:27017")
SRC = os.environ.get("MDB_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build")
METADB = os.path.join(BUILD, "cli", "metadb")
PRODUCER = os.path.join(BUILD, "producer", "metadb-producer")
GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
PY = "/usr/bin/python3"


class Checks:
    """Collects failures; `done()` prints a summary and exits non-zero if any."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.passed = 0

    def check(self, cond, what, detail=None):
        if cond:
            self.passed += 1
            print("ok   %s" % what, flush=True)
        else:
            self.failures.append(what)
            print("FAIL %s%s" % (what, (": %s" % detail) if detail is not None else ""), flush=True)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, what, "got %r, want %r" % (_short(got), _short(want)))

    def done(self):
        print("%s: %d checks passed, %d failed" % (self.name, self.passed, len(self.failures)), flush=True)
        for f in self.failures:
            print("  failed: %s" % f)
        sys.exit(1 if self.failures else 0)


def _short(v):
    s = repr(v)
    return s if len(s) < 600 else s[:600] + "..."


class Env:
    """Private names for one test run plus the CLI/daemon command lines."""

    def __init__(self, name, roots):
        self.tag = "t_%s_%d" % (name, os.getpid())
        self.db_name = self.tag
        self.roots = roots
        self.topics = {
            "jobs": self.tag + ".jobs",
            "files": self.tag + ".files",
            "instances": self.tag + ".instances",
            "dlq": self.tag + ".dlq",
        }
        self.client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
        self.client.admin.command("ping")  # fail (not skip) when the database is down
        self.db = self.client[self.db_name]

    def config_flags(self):
        return [
            "--kafka.brokers=" + BROKERS,
            "--mongo.uri=" + MONGO_URI,
            "--mongo.db=" + self.db_name,
            "--archive.roots=" + ",".join(self.roots),
            "--topic.jobs=" + self.topics["jobs"],
            "--topic.files=" + self.topics["files"],
            "--topic.instances=" + self.topics["instances"],
            "--topic.dlq=" + self.topics["dlq"],
            "--topic.partitions=3",
            "--producer.group=" + self.tag + ".producers",
            "--producer.metrics_port=0",
            "--log.level=info",
        ]

    def env(self, traced=False):
        e = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
        if traced:
            # LeakSanitizer cannot run under ptrace; ASan/UBSan still do.
            e["ASAN_OPTIONS"] = (e.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        return e

    def metadb(self, *args, check=True, timeout=120, input=None):
        cmd = [METADB] + self.config_flags() + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), input=input)
        if check and p.returncode != 0:
            raise RuntimeError("metadb %s failed (%d):\nstdout: %s\nstderr: %s"
                               % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def cleanup(self):
        try:
            self.client.drop_database(self.db_name)
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the result
            print("warning: could not drop %s: %s" % (self.db_name, e))
        # Topics are left behind (tiny, uniquely named): the stack has no topic deletion helper.


def generate_archive(out, patients, seed, extra=()):
    cmd = [PY, GEN, "--out", out, "--patients", str(patients), "--seed", str(seed), "--small", "--jobs", "1"]
    cmd += list(extra)
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def kcat_produce(topic, key, value):
    p = subprocess.run(["kcat", "-P", "-b", BROKERS, "-t", topic, "-k", key], input=value + "\n",
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("kcat produce failed: %s" % p.stderr)


def kcat_consume_all(topic):
    """Every (key, value) of topic, read from the beginning to the end."""
    p = subprocess.run(["kcat", "-C", "-b", BROKERS, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-f", "%k\t%s\n"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("kcat consume failed: %s" % p.stderr)
    out = []
    for line in p.stdout.splitlines():
        if not line:
            continue
        k, _, v = line.partition("\t")
        out.append((k, v))
    return out


def wait_for(fn, timeout=60, interval=0.2):
    """Poll fn() until it returns a truthy value or timeout seconds pass; returns its last value."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(interval)


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)
