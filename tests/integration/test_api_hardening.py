#!/usr/bin/python3
"""metadb-api against a hostile browser or client: the regression tests of the
security review's seven findings (issue 16), each against a live metadb-api
and the local database (private database t_harden_<pid>).

  1. a FIFO in the dashboard folder answers 404 at once, SIGTERM still stops;
  2. DNS rebinding: a Host outside the allow-list gets 421; request bodies
     only as application/json (415 otherwise) on every POST endpoint;
  3. ten parallel slow raw queries from one client: /healthz still answers
     within 2 s, the excess gets 429/503 with the JSON error body;
  4. tokens shorter than 16 characters stop the start; wrong tokens are
     rate-limited per client (429), other clients are not affected;
  5. per-IP connection cap, idle/slow-request timeout, early 413 from
     Content-Length;
  6. an encoded NUL anywhere in the path, a parameter name or value -> 400;
  7. JSON error bodies for over-long URIs, too many parameters and large
     headers (a connection with ~450+ parameters gets an answer),
     Cache-Control: no-store on /dicomweb, control bytes escaped in the log,
     /healthz without a token shows no database address or driver error,
     repeated warnings rate-limited in the log.
Each function fails on the code before the fix."""
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mdb_api_support import (Api, Checker, API_BIN, BROKERS, MONGO_URI, make_catalogue, mongo_db, seed)  # noqa: E402

PID = os.getpid()
DB = "t_harden_%d" % PID
TOKEN = "hardening-%d-write-token" % PID
READ_TOKEN = "hardening-%d-read-token" % PID
SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

c = Checker()
client, db = mongo_db(DB)
studies, series, instances = make_catalogue()
seed(db, studies, series, instances)
# Documents that make a backtracking regex run until the query time limit.
db.studies.insert_many([{"_id": "9.9.%d" % i, "study_instance_uid": "9.9.%d" % i, "patient_id": "SLOW",
                         "study_description": "a" * 40 + "!", "collection_ids": ["SLOW"]} for i in range(400)])
SLOW_QUERY = {"collection": "studies", "filter": {"study_description": {"$regex": "^(a+)+$"}}, "limit": 5}


def raw(port, data, timeout=10, source=None, read=True):
    """Send raw bytes, return (status or None, headers dict, body bytes) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    try:
        s.sendall(data)
        if not read:
            return None, {}, b""
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
    finally:
        s.close()
    return parse_answer(out)


def parse_answer(out):
    head, _, body = out.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower().decode()] = v.strip().decode("latin-1")
    return (int(m.group(1)) if m else None), hdrs, body


def get_raw(port, target, host=None, headers=None, source=None):
    host = "127.0.0.1:%d" % port if host is None else host
    lines = ["GET %s HTTP/1.1" % target, "Host: %s" % host, "Connection: close"]
    lines += ["%s: %s" % kv for kv in (headers or {}).items()]
    return raw(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), source=source)


def json_error(status, hdrs, body, want_status, want_error=None):
    """True when the answer is want_status with the documented JSON error body."""
    if status != want_status or not hdrs.get("content-type", "").startswith("application/json"):
        return False
    try:
        b = json.loads(body)
    except ValueError:
        return False
    return isinstance(b, dict) and isinstance(b.get("detail"), str) and b.get("detail") and \
        (b.get("error") == want_error if want_error else isinstance(b.get("error"), str))


# ---------------------------------------------------------------- finding 1
def test_fifo_in_web_dir():
    tmp = tempfile.mkdtemp(prefix="mdb_fifo_")
    try:
        web = os.path.join(tmp, "web")
        os.makedirs(web)
        with open(os.path.join(web, "index.html"), "w") as f:
            f.write("<html>ok</html>")
        os.mkfifo(os.path.join(web, "pipe.js"))
        os.mkfifo(os.path.join(web, "index.fifo.html"))
        api = Api(DB, "--api.web_dir=" + web)
        try:
            for path in ("/pipe.js", "/index.fifo.html"):
                t0 = time.time()
                try:
                    st, _, b = api.request("GET", path, timeout=5)
                except OSError as e:
                    st, b = None, repr(e)
                c.check(st in (403, 404) and isinstance(b, dict) and b.get("error"),
                        "a FIFO in the dashboard folder (%s) is refused at once (%s in %.2f s)" % (path, st,
                                                                                          time.time() - t0), b)
            st, _, b = api.get("/")
            c.check(st == 200 and "ok" in b, "the regular files are still served", b)
        finally:
            t0 = time.time()
            api.proc.send_signal(signal.SIGTERM)
            try:
                rc = api.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            c.check(rc == 0, "SIGTERM stops metadb-api after FIFO requests (rc %s in %.1f s)" % (rc, time.time() - t0))
            api.__exit__(None, None, None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- finding 2
def test_host_allow_list():
    # a private jobs topic: nothing these probes submit may reach a real producer
    with Api(DB, "--api.tokens=" + TOKEN, "--topic.jobs=t_harden_%d.jobs" % PID) as api:
        p = api.port
        for host in ("evil.example", "evil.example:%d" % p, "127.0.0.1.nip.io:%d" % p, "localhost.evil.example",
                     "[::2]:%d" % p, "127.0.0.1:%d:1" % p, ""):
            st, h, b = get_raw(p, "/api/studies?limit=1", host=host)
            c.check(json_error(st, h, b, 421, "misdirected_request"),
                    "Host '%s' (DNS rebinding) -> 421 misdirected_request" % host, (st, b[:200]))
        st, h, b = get_raw(p, "/", host="evil.example:%d" % p)
        c.check(st == 421, "the dashboard too refuses a foreign Host", (st, b[:200]))
        for host in ("127.0.0.1:%d" % p, "127.0.0.1", "localhost:%d" % p, "LOCALHOST", "[::1]:%d" % p, "[::1]"):
            st, h, b = get_raw(p, "/api/studies?limit=1", host=host)
            c.check(st == 200, "Host '%s' is answered" % host, (st, b[:200]))
        st, h, b = raw(p, b"GET /api/studies?limit=1 HTTP/1.0\r\n\r\n")
        c.check(st == 200, "HTTP/1.0 without Host (not a browser) is answered", (st, b[:200]))
        st, h, b = get_raw(p, "/healthz", host="prometheus-target:%d" % p)
        c.check(st == 200, "/healthz answers any Host (probes and scrapers; no patient data)", (st, b[:200]))

        # JSON bodies only as application/json, on every POST endpoint
        bad_types = [None, "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                     "multipart/form-data; boundary=xyz", "application/jsonx", "text/json", "application/x+json"]
        for path, body, auth in (("/api/query", {"collection": "studies", "limit": 1}, {}),
                                 ("/api/jobs", {"accession_numbers": ["A1"], "researcher_id": "r",
                                                "collection": "C"}, {"Authorization": "Bearer " + TOKEN})):
            for ctype in bad_types:
                hdrs = dict(auth)
                if ctype:
                    hdrs["Content-Type"] = ctype
                st, _, b = api.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
                c.check(st == 415 and isinstance(b, dict) and b.get("error") == "unsupported_media_type",
                        "POST %s with Content-Type %s -> 415" % (path, ctype), (st, b))
        st, _, b = api.request("POST", "/api/query", body=b'{"collection":"studies","limit":1}',
                               headers={"Content-Type": "application/json; charset=utf-8"})
        c.check(st == 200, "POST /api/query with application/json; charset=utf-8 is answered", (st, b))
    with Api(DB, "--api.allowed_hosts=metadb.example.org, other.example:8443") as api:
        p = api.port
        for host, want in (("metadb.example.org", 200), ("metadb.example.org:%d" % p, 200),
                           ("other.example:8443", 200), ("other.example:8444", 421), ("localhost:%d" % p, 200),
                           ("evil.example", 421)):
            st, h, b = get_raw(p, "/api/studies?limit=1", host=host)
            c.check(st == want, "api.allowed_hosts: Host '%s' -> %d" % (host, want), (st, b[:200]))
    with Api(DB, "--api.allowed_hosts=*") as api:
        st, h, b = get_raw(api.port, "/api/studies?limit=1", host="anything.example")
        c.check(st == 200, "api.allowed_hosts=* answers any Host", (st, b[:200]))


# ---------------------------------------------------------------- finding 3
def test_query_concurrency():
    with Api(DB, "--api.query_time_ms=3000") as api:
        def slow(_i):
            t0 = time.time()
            try:
                st, h, b = api.request("POST", "/api/query", body=SLOW_QUERY, timeout=30)
            except OSError as e:
                return None, {}, repr(e), time.time() - t0
            return st, h, b, time.time() - t0

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as ex:
            futs = [ex.submit(slow, i) for i in range(10)]
            time.sleep(0.5)
            t0 = time.time()
            try:
                st, _, hb = api.request("GET", "/healthz", timeout=10)
            except OSError as e:
                st, hb = None, repr(e)
            health_s = time.time() - t0

            def health(_i):
                t = time.time()
                try:
                    return api.request("GET", "/healthz", timeout=10)[0], time.time() - t
                except OSError:
                    return None, time.time() - t
            with concurrent.futures.ThreadPoolExecutor(max_workers=20) as hx:
                flood = list(hx.map(health, range(20)))
            results = [f.result() for f in futs]
        print("# /healthz during ten parallel slow queries: %d in %.3f s" % (st or 0, health_s))
        c.check(st == 200 and health_s < 2.0, "/healthz answers 200 within 2 s while one client floods queries "
                "(%.3f s)" % health_s, (st, hb))
        print("# twenty parallel /healthz meanwhile: slowest %.3f s" % max(t for _s, t in flood))
        c.check(all(st == 200 and t < 2.0 for st, t in flood),
                "twenty parallel /healthz during the flood all answer 200 within 2 s (they share one ping)", flood)
        codes = sorted(r[0] or 0 for r in results)
        print("# the ten queries: %s" % ", ".join("%s/%.1fs" % (r[0], r[3]) for r in results))
        refused = [r for r in results if r[0] in (429, 503)]
        c.check(len(refused) >= 1, "the excess of ten parallel queries gets 429/503", codes)
        c.check(all(isinstance(r[2], dict) and r[2].get("error") and r[2].get("detail") for r in refused),
                "429/503 answers carry the JSON error body", [r[2] for r in refused][:2])
        c.check(all(r[0] is not None for r in results), "every query got an answer", codes)
        c.check(any(r[1].get("retry-after") for r in refused), "Retry-After on the refusals",
                [r[1] for r in refused][:1])
        st, _, b = api.get("/api/studies", {"limit": "1"})
        c.check(st == 200, "the API answers normally afterwards", (st, b))


# ---------------------------------------------------------------- finding 4
def test_tokens():
    for key, tok in (("api.tokens", "short-tok-1234"), ("api.read_tokens", "x")):
        args = [API_BIN, "--mongo.db=" + DB, "--mongo.uri=" + MONGO_URI, "--kafka.brokers=" + BROKERS,
                "--api.listen=127.0.0.1:0", "--%s=%s,%s" % (key, READ_TOKEN, tok)]
        try:
            r = subprocess.run(args, capture_output=True, text=True, timeout=20)
            out, rc = r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = str(e.stdout or "") + str(e.stderr or ""), None
        c.check(rc not in (0, None) and key in out and "at least 16" in out and "listening" not in out,
                "%s with a %d-character token: start refused with a clear error" % (key, len(tok)), out[-600:])
        c.check(tok not in out.replace(key, "") or len(tok) < 2, "%s: the error does not print the token" % key,
                out[-600:])

    with Api(DB, "--api.read_tokens=" + READ_TOKEN, "--api.tokens=" + TOKEN, "--api.auth_failures=5",
             "--topic.jobs=t_harden_%d.jobs" % PID) as api:
        p = api.port
        for i in range(5):
            st, _, b = api.get("/api/studies", headers={"Authorization": "Bearer wrong-token-%02d-xxxxxxxx" % i})
            c.check(st == 401, "wrong token %d -> 401" % (i + 1), (st, b))
        st, h, b = api.get("/api/studies", headers={"Authorization": "Bearer wrong-token-99-xxxxxxxx"})
        c.check(st == 429 and isinstance(b, dict) and b.get("error") == "too_many_auth_failures" and
                h.get("retry-after"), "the 6th wrong token in a minute -> 429 with Retry-After", (st, h, b))
        st, _, b = api.get("/api/studies", headers={"Authorization": "Bearer " + READ_TOKEN})
        c.check(st == 429, "while blocked, even the right token gets 429 (no guessing)", (st, b))
        st, _, b = api.post("/api/jobs", {"accession_numbers": ["A"]}, headers={"Authorization": "Bearer nope-nope"})
        c.check(st == 429, "job submission shares the failure count", (st, b))
        st, h, b = get_raw(p, "/api/studies?limit=1", headers={"Authorization": "Bearer " + READ_TOKEN},
                           source="127.0.0.2")
        c.check(st == 200, "another client (127.0.0.2) is not blocked", (st, b[:200]))
        st, _, b = api.get("/healthz")
        c.check(st == 200, "/healthz still answers the blocked client", (st, b))


# ---------------------------------------------------------------- finding 5
def test_connection_limits():
    with Api(DB, "--api.max_connections_per_ip=4", "--api.connection_timeout_s=2") as api:
        p = api.port
        held = [socket.create_connection(("127.0.0.1", p), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.3)
            s = socket.create_connection(("127.0.0.1", p), timeout=5)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = s.recv(4096)
            except OSError:
                data = b""
            s.close()
            c.check(data == b"", "a 5th connection from one address is refused (api.max_connections_per_ip=4)", data)
            st, _, b = get_raw(p, "/healthz", source="127.0.0.2")
            c.check(st == 200, "another address still gets in", (st, b[:200]))
        finally:
            for s in held:
                s.close()
        # the server notices the closes on its own time: wait for it (bounded), not a fixed 0.5 s
        end = time.monotonic() + 15
        while True:
            st, _, b = get_raw(p, "/healthz")
            if st == 200 or time.monotonic() > end:
                break
            time.sleep(0.2)
        c.check(st == 200, "after they close, the address gets in again", (st, b[:200]))

        # a slow client: half a request line, then nothing
        s = socket.create_connection(("127.0.0.1", p), timeout=10)
        s.sendall(b"GET /api/studies HTTP/1.1\r\nHost: 127.0.0")
        t0 = time.time()
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        waited = time.time() - t0
        s.close()
        c.check(waited < 8, "an idle half request is dropped after api.connection_timeout_s=2 (%.1f s)" % waited,
                data[:200])

        # early 413: the body is never sent
        t0 = time.time()
        st, h, b = raw(p, b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 50000000\r\n\r\n{", timeout=5)
        c.check(json_error(st, h, b, 413, "body_too_large") and time.time() - t0 < 3,
                "Content-Length of 50 MB -> 413 before the body is read (%.2f s)" % (time.time() - t0), (st, b[:200]))
        st, h, b = raw(p, b"POST /api/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Expect: 100-continue\r\nContent-Length: 2000000\r\n\r\n", timeout=5)
        c.check(json_error(st, h, b, 413, "body_too_large"),
                "Expect: 100-continue with 2 MB -> 413 instead of 100 Continue", (st, b[:200]))
        st, _, b = api.request("POST", "/api/query", body=b'{"filter": "' + b"x" * (1024 * 1024) + b'"}',
                               headers={"Content-Type": "application/json"})
        c.check(st == 413, "a client that writes its 1 MB body before reading still gets the 413", (st, b))


# ---------------------------------------------------------------- finding 6
def test_nul_bytes():
    tmp = tempfile.mkdtemp(prefix="mdb_nul_")
    try:
        web = os.path.join(tmp, "web")
        os.makedirs(web)
        with open(os.path.join(web, "index.html"), "w") as f:
            f.write("<html>ok</html>")
        with Api(DB, "--api.web_dir=" + web) as api:
            for target in ("/api/studies?patient_id=a%00b", "/api/studies?patient_id=LIDC-IDRI-0001%00",
                           "/api/studies?patient%00_id=x", "/api/studies?%00=1", "/api/studies/1.2%00.3",
                           "/index.html%00.js", "/%00", "/dicomweb/studies?PatientID=a%00b",
                           "/api/nl?q=CT%00studies", "/api/studies?modality=CT&patient_id=%00"):
                st, h, b = get_raw(api.port, target)
                c.check(json_error(st, h, b, 400), "NUL byte: %s -> 400 with the JSON error" % target,
                        (st, b[:200]))
            st, h, b = get_raw(api.port, "/api/studies?patient_id=a%2500b")
            c.check(st == 200, "an encoded '%' followed by 00 is not a NUL", (st, b[:200]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- finding 7
def test_error_bodies_and_headers():
    with Api(DB, "--log.level=debug") as api:
        p = api.port
        for n in (450, 1000, 5000):
            target = "/api/studies?" + "&".join("metadata.K%d=v" % i for i in range(n))
            st, h, b = get_raw(p, target)
            c.check(st in (400, 414, 431) and json_error(st, h, b, st),
                    "%d query parameters -> an answer with the JSON error (%s), not a closed connection" % (n, st),
                    (st, b[:200]))
        st, h, b = get_raw(p, "/api/studies?patient_id=" + "x" * 60000)
        c.check(json_error(st, h, b, 414, "uri_too_long"), "a 60 KB URI -> 414 with the JSON error", (st, b[:200]))
        st, h, b = get_raw(p, "/api/studies", headers={"X-Big": "y" * 30000})
        c.check(json_error(st, h, b, 431, "headers_too_large"), "30 KB of headers -> 431 with the JSON error",
                (st, b[:200]))
        st, h, b = get_raw(p, "/api/studies", headers={"X-%d" % i: "v" * 100 for i in range(200)})
        c.check(json_error(st, h, b, 431), "200 headers -> 431 with the JSON error", (st, b[:200]))

        for path in ("/dicomweb/studies", "/dicomweb/studies?PatientID=LIDC-IDRI-0001", "/dicomweb/nothing",
                     "/api/studies", "/api/nl?q=CT&backend=offline", "/healthz"):
            st, h, _ = get_raw(p, path)
            c.eq(h.get("cache-control"), "no-store", "Cache-Control: no-store on %s (%s)" % (path, st))

        st, _, _ = get_raw(p, "/api/%1B[31mred%07bell%7F")
        log = api.logtext()
        c.check("\x1b" not in log and "\x07" not in log and "\x7f" not in log,
                "control bytes of a request path never reach the log raw", repr(log[-500:]))
        c.check("\\x1b[31mred\\x07bell\\x7f" in log, "they are logged escaped as \\xNN",
                [ln for ln in log.splitlines() if "red" in ln][-2:])

        before = api.logtext().count("\n")
        for _ in range(150):
            raw(p, b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.3)
        lines = api.logtext().splitlines()[before:]
        warns = [ln for ln in lines if " warn " in ln]
        print("# 150 malformed requests wrote %d warn lines" % len(warns))
        c.check(len(warns) <= 40, "150 malformed requests write at most 40 warn lines (%d)" % len(warns),
                warns[-3:])
        time.sleep(10.5)
        raw(p, b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.3)
        tail = api.logtext().splitlines()[before:]
        c.check(any("suppressed" in ln for ln in tail), "the suppressed warnings are counted in the log",
                tail[-3:])


def test_healthz_detail():
    dead = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=800"
    with Api(DB, "--api.mongo_uri=" + dead, "--api.read_tokens=" + READ_TOKEN) as api:
        st, _, b = api.get("/healthz")
        text = json.dumps(b)
        c.check(st == 503 and b.get("status") == "degraded" and "127.0.0.1" not in text and ":1" not in text and
                b.get("mongo") == "unavailable", "/healthz without a token: down, but no address or driver error",
                b)
        st, _, b = api.get("/healthz", headers={"Authorization": "Bearer wrong-but-long-enough"})
        c.check(st == 503 and "127.0.0.1" not in json.dumps(b), "/healthz with a wrong token: no detail", b)
        st, _, b = api.get("/healthz", headers={"Authorization": "Bearer " + READ_TOKEN})
        c.check(st == 503 and b.get("mongo") not in (None, "ok", "unavailable"),
                "/healthz with a read token shows the driver's error", b)
    with Api(DB, "--api.mongo_uri=" + dead) as api:
        st, _, b = api.get("/healthz")
        c.check(st == 503 and b.get("mongo") not in (None, "ok", "unavailable"),
                "without api.read_tokens /healthz keeps its detail", b)


def main():
    try:
        for t in (test_fifo_in_web_dir, test_host_allow_list, test_query_concurrency, test_tokens,
                  test_connection_limits, test_nul_bytes, test_error_bodies_and_headers, test_healthz_detail):
            print("# " + t.__name__)
            sys.stdout.flush()
            try:
                t()
            except Exception as e:  # noqa: BLE001 - one broken probe must not hide the others
                import traceback
                traceback.print_exc()
                c.check(False, "%s raised %s: %s" % (t.__name__, type(e).__name__, e))
    finally:
        client.drop_database(DB)
        client.close()
    c.finish()


if __name__ == "__main__":
    main()
