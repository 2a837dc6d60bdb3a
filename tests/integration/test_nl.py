#!/usr/bin/python3
"""Natural-language search end to end.

1. The sentence set (tests/nl/sentences.tsv, >= 60 sentences): a generated
   archive is loaded through the real pipeline (index, producer, worker,
   linker on the test's own topics, groups and database); every sentence goes through
   GET /api/nl (offline translator) and must return exactly the UID set of
   its expected filter, evaluated here with pymongo independently of the
   translator. Every translated filter and join filter must also pass the
   raw-query whitelist (POST /api/query). A third of the sentences also go
   through `metadb query nl --json` and must give the same answer. Prints
   the accuracy; fails below 100 %.
2. The LLM backend against a fake OpenAI-compatible chat server (a Python
   http.server in this process): valid answers are used (backend "llm") and
   give the expected UIDs; invalid ones (unknown field, $where, prose,
   malformed JSON, wrong level, HTTP 500, timeout) fall back to the offline
   translator with a message naming the reason.
3. Bad input to /api/nl answers 4xx.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nl_support  # noqa: E402
from mdb_api_support import CLI_BIN, MONGO_URI, SRC, Api, Checker  # noqa: E402

REF_DATE = "2006-06-15"
OUTCOMES = ("exact", "corrected", "partial", "refused")
PARENT = {"series": {"studies": "study_id"}, "instances": {"studies": "study_id", "series": "series_id"}}


def linked_ids(db, level, other, flt):
    """_ids of `level` documents linked to at least one `other` document matching flt."""
    if other in PARENT.get(level, {}):
        link = PARENT[level][other]
        parents = [d["_id"] for d in db[other].find(flt, {"_id": 1})]
        return {d["_id"] for d in db[level].find({link: {"$in": parents}}, {"_id": 1})}
    link = PARENT[other][level]
    return {d[link] for d in db[other].find(flt, {link: 1}) if link in d}


def expected_ids(db, level, expected):
    ids = {d["_id"] for d in db[level].find(expected.get(level, {}), {"_id": 1})}
    for key, flt in expected.items():
        if key == level:
            continue
        neg = key.startswith("!")
        other = key.lstrip("!")
        linked = linked_ids(db, level, other, flt)
        ids = ids - linked if neg else ids & linked
    return ids


def load_sentences(manifest):
    subst = {"${study0}": manifest["studies"][0]["uid"], "${series0}": manifest["series"][0]["uid"]}
    out = []
    with open(os.path.join(SRC, "tests", "nl", "sentences.tsv"), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            for k, v in subst.items():
                line = line.replace(k, v)
            parts = line.split("\t")
            if len(parts) not in (3, 4):
                raise SystemExit("sentences.tsv:%d: expected 3 or 4 tab-separated columns, got %d" % (n, len(parts)))
            outcome = parts[3] if len(parts) == 4 else "exact"
            if outcome not in OUTCOMES:
                raise SystemExit("sentences.tsv:%d: unknown outcome %r" % (n, outcome))
            out.append((parts[0], parts[1], json.loads(parts[2]), n, outcome))
    return out


def judge(outcome, level, want, status, body):
    """(as expected?, silently wrong?) for one answer of /api/nl or `metadb query nl --json`.
    Silently wrong: a 200 that claims to be complete but is not exactly the expected set."""
    if status != 200:
        return outcome == "refused", False
    got = {d["_id"] for d in body["items"]}
    exact = body["level"] == level and got == want and body["total"] == len(got)
    complete = body.get("confidence") == "complete"
    silent = complete and not exact
    if outcome == "exact":
        ok = exact and complete and not body["ignored"]
    elif outcome == "corrected":
        ok = exact and complete and not body["ignored"] and len(body.get("corrections", [])) > 0
    elif outcome == "partial":
        ok = body.get("confidence") == "partial" and len(body["ignored"]) > 0
    else:
        ok = False
    return ok, silent


def nl_get(api, sentence, **extra):
    params = {"q": sentence, "reference_date": REF_DATE, "limit": "1000"}
    params.update(extra)
    return api.get("/api/nl", params)


def whitelist_ok(api, collection, flt):
    status, _, body = api.post("/api/query", {"collection": collection, "filter": flt, "limit": 1})
    return status == 200, body


# ---------------------------------------------------------------- fake LLM

class FakeLLM:
    """An OpenAI-compatible /v1/chat/completions that answers by sentence."""

    def __init__(self):
        self.answers = {}
        self.requests = []
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                req = json.loads(self.rfile.read(n))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": req})
                sentence = req["messages"][-1]["content"]
                kind, payload = fake.answers.get(sentence, ("http", 404))
                if kind == "sleep":
                    time.sleep(payload)
                    kind, payload = "content", "{}"
                if kind == "http":
                    self.send_response(payload)
                    self.end_headers()
                    self.wfile.write(b'{"error": "boom"}')
                    return
                text = payload if isinstance(payload, str) else json.dumps(payload)
                body = json.dumps({"id": "x", "object": "chat.completion", "model": req.get("model"),
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except BrokenPipeError:  # the "slow" case: metadb gave up waiting, as it should
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-nl-")
    db_name = "t_nl_%d" % os.getpid()
    client = None
    fake = None
    try:
        manifest = nl_support.generate(os.path.join(tmp, "archive"), patients=40, seed=7)
        client, db = nl_support.load_pipeline(db_name, os.path.join(tmp, "archive"), manifest)
        sentences = load_sentences(manifest)
        ck.check(len(sentences) >= 60, "the sentence set has at least 60 sentences (%d)" % len(sentences))

        # ---------------------------------------------------------- 1. the set
        with Api(db_name) as api:
            correct, empty_expected, silent_wrong = 0, [], []
            kinds = {k: 0 for k in OUTCOMES}
            for idx, (sentence, level, expected, line, outcome) in enumerate(sentences):
                kinds[outcome] += 1
                want = expected_ids(db, level, expected) if outcome != "refused" else set()
                if not want and outcome in ("exact", "corrected"):
                    empty_expected.append(sentence)
                status, _, body = nl_get(api, sentence, backend="offline")
                ok, silent = judge(outcome, level, want, status, body)
                if silent:
                    silent_wrong.append(sentence)
                if ok:
                    correct += 1
                if status != 200:
                    ck.check(ok and "error" in body, "line %d %r -> %s (got %d)" % (line, sentence, outcome, status),
                             json.dumps(body)[:300])
                    continue
                got = {d["_id"] for d in body["items"]}
                ck.check(ok, "line %d %r -> %s, %s: %d UIDs" % (line, sentence, outcome, level, len(want)),
                         "level %s total %s missing %d extra %d confidence %s ignored %s corrections %s\n"
                         "  filter %s\n  joins %s\n  %s" %
                         (body["level"], body["total"], len(want - got), len(got - want), body.get("confidence"),
                          body["ignored"], body.get("corrections"), json.dumps(body["filter"]),
                          json.dumps(body["joins"]), body["explanation"]))
                # whatever the translation, it must pass the raw-query whitelist
                wl, detail = whitelist_ok(api, body["level"], body["filter"])
                for j in body["joins"]:
                    jok, jd = whitelist_ok(api, j["collection"], j["filter"])
                    wl, detail = wl and jok, detail if not jok else jd
                ck.check(wl, "line %d: translation passes the raw-query whitelist" % line, str(detail))
                if idx % 3 == 0:
                    r = subprocess.run([CLI_BIN, "--mongo.uri=" + MONGO_URI, "--mongo.db=" + db_name,
                                        "--log.level=error", "query", "nl", "--offline", "--json", "--limit", "1000",
                                        "--reference-date", REF_DATE, sentence],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    cli_ok = r.returncode == 0
                    cli = json.loads(r.stdout) if cli_ok else {}
                    cli_ids = {d["_id"] for d in cli["items"]} if cli_ok else None
                    ck.check(cli_ok and cli_ids == got and cli.get("confidence") == body.get("confidence") and
                             cli.get("corrections") == body.get("corrections"),
                             "line %d: metadb query nl gives the same answer" % line, r.stderr[-500:])
            accuracy = 100.0 * correct / len(sentences)
            print("NL accuracy: %d/%d sentences = %.1f %% (%s)" % (correct, len(sentences), accuracy,
                                                                ", ".join("%s %d" % kv for kv in kinds.items())))
            print("silent wrong answers (200, confidence complete, wrong set): %d %s" % (len(silent_wrong), silent_wrong))
            ck.check(not silent_wrong, "0 silent wrong answers over the %d sentences" % len(sentences))
            ck.check(kinds["corrected"] + kinds["partial"] + kinds["refused"] >= 60,
                     "at least 60 sentences exercise corrections, partial answers and refusals (%d)" %
                     (kinds["corrected"] + kinds["partial"] + kinds["refused"]))
            print("sentences whose expected set is empty: %d %s" % (len(empty_expected), empty_expected))
            ck.check(accuracy == 100.0, "accuracy is 100 %% (%.1f %%)" % accuracy)
            ck.check(len(empty_expected) <= len(sentences) // 20,
                     "the set is meaningful: at most 5 %% of sentences expect nothing (%d)" % len(empty_expected))

            # ------------------------------------------------------ 3. bad input
            for params, want_status, what in [
                ({}, 400, "no q"), ({"q": ""}, 400, "empty q"), ({"q": "x" * 3000}, 400, "too long"),
                ({"q": "CT", "reference_date": "2006-13-45"}, 400, "bad reference date"),
                ({"q": "CT", "limit": "0"}, 400, "limit 0"), ({"q": "CT", "limit": "abc"}, 400, "limit abc"),
                ({"q": "CT", "offset": "-1"}, 400, "negative offset"), ({"q": "CT", "bogus": "1"}, 400, "unknown parameter"),
                ({"q": "CT", "backend": "magic"}, 400, "unknown backend"),
                ({"q": "wombats and platypuses"}, 400, "nothing understood"),
            ]:
                status, _, body = api.get("/api/nl", params)
                ck.check(status == want_status and "error" in body and "detail" in body,
                         "/api/nl %s -> %d" % (what, want_status), "%s %s" % (status, body))
            status, _, body = api.request("POST", "/api/nl?q=CT", body="")
            ck.check(status == 405, "POST /api/nl -> 405", "%s %s" % (status, body))
            status, _, body = api.get("/api/nl", {"q": "\u00e9t\u00e9 \u2264 2 mm \u201cchest\u201d series",
                                                  "reference_date": REF_DATE})
            ck.check(status == 200 and body["filter"].get("slice_thickness") == {"$lte": 2},
                     "typographic symbols (\u2264, curly quotes) are understood", json.dumps(body)[:300])
            status, _, body = api.get("/api/nl", {"q": "CT studies", "explain": "1"})
            ck.check(status == 200 and "items" not in body and body["level"] == "studies",
                     "explain=1 translates without running", json.dumps(body)[:300])
            rc = api.stop()
            ck.check(rc == 0 and "Sanitizer" not in api.logtext(), "metadb-api exits cleanly (rc %s, no sanitizer report)" % rc,
                     api.logtext()[-1500:])

        # ------------------------------------------------------- 2. the LLM
        fake = FakeLLM()
        want_siemens = expected_ids(db, "series", {"series": {"manufacturer": "SIEMENS"}})
        want_join = expected_ids(db, "series", {"series": {"modality": "CT"},
                                                "studies": {"study_date": {"$gte": "20030101", "$lte": "20031231"}}})
        fake.answers = {
            "siemens things": ("content", {"level": "series", "filter": {"manufacturer": "SIEMENS"},
                                           "explanation": "series made by Siemens"}),
            "ct series of 2003": ("content", "Here you go:\n```json\n" + json.dumps(
                {"level": "series", "filter": {"modality": "CT"},
                 "joins": [{"level": "studies", "filter": {"study_date": {"$gte": "20030101", "$lte": "20031231"}}}]})
                + "\n```"),
            "Siemens series, unknown field": ("content", {"level": "series", "filter": {"vendor_name": "SIEMENS"}}),
            "Siemens series, where": ("content", {"level": "series", "filter": {"$where": "this.manufacturer == 'SIEMENS'"}}),
            "Siemens series, prose": ("content", "I think you want Siemens scanners."),
            "Siemens series, broken": ("content", '{"level": "series", "filter": {"manufacturer": '),
            "Siemens series, level": ("content", {"level": "patients", "filter": {}}),
            "Siemens series, http": ("http", 500),
            "Siemens series, slow": ("sleep", 3),
            "frobnicate the gizmo": ("content", {"level": "series", "filter": {"manufacturer": "SIEMENS"}}),
        }
        url = "http://127.0.0.1:%d/v1" % fake.port
        with Api(db_name, "--api.nl_llm_url=" + url, "--api.nl_llm_model=fake-model",
                 "--api.nl_llm_api_key=sekrit", "--api.nl_llm_timeout_ms=1500") as api:
            status, _, body = nl_get(api, "siemens things")
            ck.check(status == 200 and body["backend"] == "llm" and "message" not in body and
                     {d["_id"] for d in body["items"]} == want_siemens,
                     "valid LLM answer is used and finds the %d Siemens series" % len(want_siemens),
                     json.dumps(body)[:400])
            req = fake.requests[-1] if fake.requests else {}
            ck.check(req.get("path") == "/v1/chat/completions" and req.get("auth") == "Bearer sekrit" and
                     req["body"]["model"] == "fake-model" and "manufacturer" in req["body"]["messages"][0]["content"]
                     and "SIEMENS" in req["body"]["messages"][0]["content"],
                     "the chat request names the model, carries the key and lists fields and seen values",
                     json.dumps(req)[:300])
            status, _, body = nl_get(api, "ct series of 2003")
            ck.check(status == 200 and body["backend"] == "llm" and
                     {d["_id"] for d in body["items"]} == want_join and body["joins"][0]["local"] == "study_id",
                     "LLM answer in a code fence with a join is validated and used (%d series)" % len(want_join),
                     json.dumps(body)[:400])
            for sentence, reason in [("Siemens series, unknown field", "unknown field 'vendor_name'"),
                                     ("Siemens series, where", "$where"),
                                     ("Siemens series, prose", "JSON object"),
                                     ("Siemens series, broken", "does not parse"),
                                     ("Siemens series, level", "level"),
                                     ("Siemens series, http", "HTTP 500"),
                                     ("Siemens series, slow", "LLM endpoint")]:
                status, _, body = nl_get(api, sentence)
                ck.check(status == 200 and body["backend"] == "offline" and reason in body.get("message", "") and
                         {d["_id"] for d in body["items"]} == want_siemens,
                         "LLM answer %r falls back to the offline translator (message names %r)" %
                         (sentence.split(", ")[1], reason), json.dumps(body)[:400])
            status, _, body = nl_get(api, "frobnicate the gizmo")
            ck.check(status == 200 and body["backend"] == "llm" and {d["_id"] for d in body["items"]} == want_siemens,
                     "a sentence the grammar cannot read is still answered by the LLM", json.dumps(body)[:300])
            status, _, body = nl_get(api, "wombats and platypuses")
            ck.check(status == 400 and "nothing in the sentence was understood" in body.get("detail", "") and
                     "LLM" in body.get("detail", ""),
                     "unreadable sentence + unusable LLM answer -> 400 naming both", json.dumps(body)[:300])
            status, _, body = nl_get(api, "siemens things", backend="offline")
            ck.check(status == 200 and body["backend"] == "offline", "backend=offline skips the LLM")
        r = subprocess.run([CLI_BIN, "--mongo.uri=" + MONGO_URI, "--mongo.db=" + db_name, "--log.level=error",
                            "--api.nl_llm_url=" + url, "--api.nl_llm_model=fake-model", "query", "nl", "--json",
                            "siemens things"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ok = r.returncode == 0 and json.loads(r.stdout)["backend"] == "llm"
        ck.check(ok and {d["_id"] for d in json.loads(r.stdout)["items"]} == want_siemens,
                 "metadb query nl uses the configured LLM", r.stderr[-300:])
    finally:
        if fake:
            fake.close()
        if client:
            nl_support.drop(client, db_name)
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
