#!/usr/bin/python3
"""Least privilege, checked on the running binaries (live local stack,
private database/topics/groups):

1. Workers open files read-only and only under the archive roots. A worker
   runs under strace (open/openat/openat2/creat) on tasks for archive files,
   the bad-input corpus, and hostile paths: /etc/shadow, '..' escapes, a
   symlink inside the root pointing at a file outside it, a directory symlink
   escaping the root, a FIFO. Every open it makes is O_RDONLY (no write,
   create or truncate flag anywhere); every open below the test directory is
   below the archive root; the files outside the root are never opened; every
   hostile task ends in the DLQ.
2. The API serves nothing outside its API and its static files: traversal
   requests sent raw (not normalised by a client) - '..', percent-encoded
   '..' and '/', double encoding, backslashes, NUL, absolute paths, dot-files,
   a symlink in the web folder leading out - get a 4xx and never the content
   of the target; the dashboard itself is served (200).
3. The API reads through api.mongo_uri, as the read-only database user
   metadb_ro (readAnyDatabase) that deploy/stack.sh creates
   (MDB_TEST_MONGO_RO_URI, exported by tests/run.sh): a write through that
   connection is refused by the server (Unauthorized, code 13); an API given
   mongo.uri at a dead port and api.mongo_uri = the read-only user answers
   every read endpoint (studies, series, instances, one document of each,
   fields, raw query, jobs, QIDO-RS, NL); with api.mongo_uri dead and
   mongo.uri alive, reads fail (5xx) - mongo.uri is never used for reads.
"""
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pymongo

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import reltest as rt  # noqa: E402

WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def parse_strace(prefix):
    """[(pid, syscall, path, flags, result)] of every open-like call.

    strace runs with -ff, one file per thread (PREFIX.<pid>), so calls are never split
    into '<unfinished ...>' / '<... resumed>' halves by another thread's line."""
    out = []
    rx = re.compile(r'^(open|openat|openat2|creat)\((.*)\)\s+=\s+(-?\d+)')
    for path in sorted(glob.glob(prefix + ".*")):
        pid = int(path.rsplit(".", 1)[1])
        with open(path, errors="replace") as f:
            for line in f:
                m = rx.match(line.strip())
                if not m:
                    continue
                args = m.group(2)
                pm = re.search(r'"((?:[^"\\]|\\.)*)"', args)
                p = pm.group(1) if pm else "?"
                rest = args[pm.end():] if pm else args
                out.append((pid, m.group(1), p, rest, int(m.group(3))))
    return out


def worker_part(c, stack, base):
    root = os.path.realpath(os.path.join(base, "archive"))
    outside = os.path.realpath(os.path.join(base, "outside"))
    os.makedirs(outside)
    man = rt.generate_archive(os.path.join(root, "lidc"), patients=1, seed=17, extra=["--slices", "3:3"])
    subprocess.run([rt.PY, rt.GEN_BAD, "--out", os.path.join(root, "bad"), "--seed", "4"], check=True,
                   capture_output=True, timeout=300)
    bad = [e["path"] for e in json.load(open(os.path.join(root, "bad", "expected.json"))) if e["expect"] != "none"]
    secret = os.path.join(outside, "secret.dcm")
    shutil.copy(man["instances"][0]["path"], secret)
    os.symlink(secret, os.path.join(root, "link-to-secret.dcm"))
    os.symlink(outside, os.path.join(root, "dirlink"))
    names = rt.Names("t_lpriv_%d" % os.getpid(), stack, [root], partitions=1)
    rt.metadb(names, "topics")
    good = [i["path"] for i in man["instances"]]
    hostile = ["/etc/shadow", root + "/../outside/secret.dcm", root + "/link-to-secret.dcm",
               root + "/dirlink/secret.dcm", root + "/" + "/.." * 12 + "/etc/shadow"]
    recs = [(p, json.dumps({"v": 1, "job_id": "lp", "path": p})) for p in good + bad + hostile]
    rt.kcat_produce(stack.brokers, names.topics["files"], recs)
    trace = os.path.join(base, "worker.strace")
    procs = rt.Procs(base)
    env = rt.clean_env()
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")  # LSan cannot run under ptrace
    w = procs.start("worker", names, wrapper=["strace", "-ff", "-qq", "-e", "trace=open,openat,openat2,creat",
                                              "-o", trace], env=env)
    try:
        def done():
            n = len(rt.kcat_consume(stack.brokers, names.topics["instances"])) + \
                len(rt.kcat_consume(stack.brokers, names.topics["dlq"]))
            return n >= len(recs) or not w.alive()
        rt.wait_for(done, 180, interval=1)
        dlq = {v.get("path"): v for _k, v in rt.kcat_json(stack.brokers, names.topics["dlq"]) if isinstance(v, dict)}
        events = {v.get("path") for _k, v in rt.kcat_json(stack.brokers, names.topics["instances"])
                  if isinstance(v, dict)}
        rc = w.stop()
        c.eq(rc, 0, "worker under strace exits 0 on SIGTERM")
        for p in hostile:
            c.check(p in dlq and p not in events and dlq[p].get("error") in ("outside_archive", "not_found"),
                    "hostile task %s ends in the DLQ (%s)" % (p, (dlq.get(p) or {}).get("error")))
        c.check(all(p in events for p in good), "the archive files were extracted (%d)" % len(good))
        opens = parse_strace(trace)
        c.check(len(opens) > len(good), "strace saw the worker's opens (%d)" % len(opens))
        writes = [o for o in opens if any(f in o[3] for f in WRITE_FLAGS)]
        c.check(not writes, "every open by the worker is read-only (no write/create/truncate flag)",
                [(o[2], o[3]) for o in writes[:5]])
        below_base = [o for o in opens if o[2].startswith(base + "/")]
        stray = [o for o in below_base if not (o[2] == root or o[2].startswith(root + "/"))]
        c.check(not stray, "every file the worker opens in the test tree lies below the archive root",
                [o[2] for o in stray[:5]])
        leaked = [o for o in opens if o[2] in ("/etc/shadow", secret) or o[2].startswith(outside)]
        c.check(not leaked, "the files outside the root were never opened (/etc/shadow, the symlink targets)",
                [(o[2], o[4]) for o in leaked[:5]])
        tasks_opened = {o[2] for o in opens if o[2].startswith(root + "/") and o[4] >= 0}
        c.check(tasks_opened <= set(good) | set(bad) | {root + "/link-to-secret.dcm"} or not tasks_opened - (
            set(good) | set(bad)), "the worker opens only the files it was asked for",
            sorted(tasks_opened - set(good) - set(bad))[:5])
        nonblock = [o for o in opens if o[2].endswith("fifo.dcm")]
        c.check(all("O_NONBLOCK" in o[3] for o in nonblock) and nonblock,
                "the FIFO is opened non-blocking (it cannot hang the worker)", [(o[2], o[3]) for o in nonblock])
    finally:
        if c.failures:
            procs.dump_logs()
        procs.kill_all()


def raw_get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def start_api(names, base, extra, tag):
    port = rt.free_ports(1)[0]
    cmd = [rt.BIN["api"]] + names.flags(["--api.listen=127.0.0.1:%d" % port] + extra)
    log = open(os.path.join(base, "api-%s.log" % tag), "wb")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=rt.clean_env(), start_new_session=True)
    ok = rt.wait_for(lambda: _up(port) or p.poll() is not None, 30, interval=0.2)
    return p, port, ok and p.poll() is None


def _up(port):
    try:
        return raw_get(port, "/healthz")[0] in (200, 503)
    except OSError:
        return False


def stop_api(p):
    p.terminate()
    try:
        return p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def api_part(c, stack, base):
    web = os.path.join(base, "web")
    shutil.copytree(os.path.join(rt.SRC, "api", "web"), web)
    secret_dir = os.path.join(base, "private")
    os.makedirs(secret_dir)
    with open(os.path.join(secret_dir, "secret.txt"), "w") as f:
        f.write("TOP-SECRET-CONTENT\n")
    os.symlink(os.path.join(secret_dir, "secret.txt"), os.path.join(web, "leak.txt"))
    os.symlink(secret_dir, os.path.join(web, "leakdir"))
    with open(os.path.join(web, ".hidden"), "w") as f:
        f.write("TOP-SECRET-CONTENT\n")
    names = rt.Names("t_lpriv_api_%d" % os.getpid(), stack, [base], partitions=1)
    p, port, up = start_api(names, base, ["--api.web_dir=" + web], "traversal")
    try:
        if not c.check(up, "metadb-api starts"):
            return
        st, body = raw_get(port, "/")
        c.check(st == 200 and b"<html" in body.lower(), "the dashboard is served (GET / -> 200)")
        st, body = raw_get(port, "/app.js")
        c.eq(st, 200, "a static file is served (GET /app.js)")
        probes = ["/../../../../etc/passwd", "/..%2f..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                  "/%252e%252e/%252e%252e/etc/passwd", "/..\\..\\..\\etc\\passwd", "/%2e%2e%5c%2e%2e%5cetc%5cpasswd",
                  "//etc/passwd", "/index.html/../../../../etc/passwd", "/etc/passwd",
                  "/leak.txt", "/leakdir/secret.txt", "/.hidden", "/%2ehidden", "/api/../../../etc/passwd",
                  "/api/studies/../../../../etc/passwd", "/dicomweb/../../etc/passwd",
                  "/" + "../" * 40 + "etc/passwd", "/" + os.path.relpath(secret_dir, web) + "/secret.txt",
                  "/..;/..;/etc/passwd", "/.%2e/.%2e/etc/passwd", "/web/../private/secret.txt"]
        for path in probes:
            st, body = raw_get(port, path)
            c.check(400 <= st < 500 and b"root:x:0:0" not in body and b"TOP-SECRET-CONTENT" not in body,
                    "GET %s -> %d (4xx, no content of the target)" % (path, st))
        # libmicrohttpd decodes %00 before the handler sees the path, which then
        # ends at the NUL: "/app.js%00.html" can only name a file of the web folder.
        app = open(os.path.join(web, "app.js"), "rb").read()
        for path in ("/app.js%00.html", "/app.js%00/../../../../etc/passwd"):
            st, body = raw_get(port, path)
            c.check((400 <= st < 500) or (st == 200 and body == app),
                    "GET %s -> %d (refused, or the web folder's own app.js)" % (path, st))
    finally:
        rc = stop_api(p)
        c.eq(rc, 0, "metadb-api exits 0 on SIGTERM")


def api_uri_part(c, stack, base):
    ro_uri = os.environ.get("MDB_TEST_MONGO_RO_URI", "")
    if not c.check(ro_uri != "", "MDB_TEST_MONGO_RO_URI names the read-only user (tests/run.sh exports it)"):
        return
    dead = "mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=1500&connectTimeoutMS=1500" % rt.free_ports(1)[0]
    names = rt.Names("t_lpriv_uri_%d" % os.getpid(), stack, [base], partitions=1)
    mc = stack.mongo()
    db = mc[names.db]
    db.studies.insert_one({"_id": "1.2.3.4", "study_instance_uid": "1.2.3.4", "patient_id": "LP-1",
                           "modality": "CT", "series": [], "collection_ids": [], "job_ids": []})
    db.series.insert_one({"_id": "1.2.3.4.5", "study_id": "1.2.3.4", "series_instance_uid": "1.2.3.4.5",
                          "modality": "CT", "instance_count": 1, "collection_ids": []})
    db.instances.insert_one({"_id": "1.2.3.4.5.6", "series_id": "1.2.3.4.5", "study_id": "1.2.3.4",
                             "sop_instance_uid": "1.2.3.4.5.6", "paths": ["/nonexistent/a.dcm"], "job_ids": []})
    ro = pymongo.MongoClient(ro_uri, serverSelectionTimeoutMS=10000)
    try:
        c.eq(ro[names.db].studies.find_one({"_id": "1.2.3.4"})["patient_id"], "LP-1",
             "the read-only user reads the catalogue")
        for what, fn in (("insert", lambda: ro[names.db].studies.insert_one({"_id": "x"})),
                         ("update", lambda: ro[names.db].studies.update_one({"_id": "1.2.3.4"},
                                                                            {"$set": {"patient_id": "HACK"}})),
                         ("delete", lambda: ro[names.db].instances.delete_many({})),
                         ("createIndexes", lambda: ro[names.db].studies.create_index("hack_field")),
                         ("drop", lambda: ro[names.db].series.drop())):
            try:
                fn()
                c.check(False, "a %s through api.mongo_uri (read-only user) is refused" % what)
            except pymongo.errors.OperationFailure as e:
                c.check(e.code == 13, "a %s through api.mongo_uri is refused by the server: code %s (Unauthorized = 13)"
                        % (what, e.code), str(e)[:300])
        c.eq(db.studies.find_one({"_id": "1.2.3.4"})["patient_id"], "LP-1", "nothing was written by the refused update")
        c.eq(db.instances.count_documents({}), 1, "nothing was deleted by the refused delete")

        reads = ["/api/studies?limit=5", "/api/studies/1.2.3.4", "/api/series?modality=CT",
                 "/api/series/1.2.3.4.5", "/api/instances?series_id=1.2.3.4.5", "/api/instances/1.2.3.4.5.6",
                 "/api/fields?collection=studies", "/api/fields?collection=series", "/api/jobs",
                 "/dicomweb/studies?PatientID=LP-1", "/dicomweb/studies/1.2.3.4/series",
                 "/api/nl?q=CT%20series"]
        for tag, extra, want_ok in (("ro-uri", ["--mongo.uri=" + dead, "--api.mongo_uri=" + ro_uri], True),
                                    ("dead-ro-uri", ["--mongo.uri=" + stack.mongo_uri, "--api.mongo_uri=" + dead],
                                     False)):
            p, port, up = start_api(names, base, extra, tag)
            try:
                if not c.check(up, "metadb-api starts (%s)" % tag):
                    continue
                if not want_ok:
                    st, body = raw_get(port, "/api/studies?limit=5")
                    c.check(st >= 500, "api.mongo_uri dead, mongo.uri alive: reads fail (%d), mongo.uri is not used"
                            % st, body[:300])
                    continue
                for path in reads:
                    st, body = raw_get(port, path)
                    c.check(st == 200, "read-only API: GET %s -> %d" % (path, st), body[:300])
                st, body = raw_get(port, "/api/studies?limit=5")
                c.check(b"1.2.3.4" in body, "read-only API lists the study", body[:300])
                st, body = raw_post(port, "/api/query", json.dumps({"collection": "series", "filter": {"modality": "CT"}}))
                c.check(st == 200 and b"1.2.3.4.5" in body, "read-only API: POST /api/query -> %d" % st, body[:300])
            finally:
                stop_api(p)
    finally:
        ro.close()
        mc.drop_database(names.db)


def raw_post(port, path, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def main():
    c = rt.Checks("test_least_privilege")
    for role in ("worker", "api", "metadb"):
        if not rt.have(role):
            rt.die("%s not built at %s" % (role, rt.BIN[role]))
    if not shutil.which("strace"):
        rt.die("strace not installed")
    stack = rt.Stack.shared()
    if not stack.kafka_ok() or not stack.ping():
        rt.die("the local stack (Kafka %s, database %s) is not reachable" % (stack.brokers, stack.mongo_uri))
    base = os.path.realpath(rt.tempdir("mdb_lpriv_"))
    try:
        for part in (worker_part, api_part, api_uri_part):
            t0 = time.time()
            try:
                part(c, stack, base)
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                c.check(False, "%s raised %s: %s" % (part.__name__, type(e).__name__, e))
            rt.note("%s: %.1fs" % (part.__name__, time.time() - t0))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return c.summary()


if __name__ == "__main__":
    sys.exit(main())
