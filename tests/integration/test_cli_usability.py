#!/usr/bin/python3
"""The CLI's usability (issue 15, point 5), driving the built `metadb`
binary against the local stack:

1. help: `metadb help CMD` and `metadb CMD --help` (also after a
   sub-command: `metadb query studies --help`) print that command's usage
   on stdout and exit 0, for every command the global help lists, without
   touching Kafka or the database; an unknown command is a usage error.
2. job ids: `metadb status` and `metadb retry` accept any unique prefix of
   at least 6 characters of a job id (jobs submitted for real with
   `metadb submit --job-id` on the test's own topics); an ambiguous prefix is
   an error listing the candidates; a 5-character prefix is refused.
3. no truncation: `--format csv|json` of `metadb query` and `metadb query
   nl` carry every UID whole (no "…"), equal to the database's.
4. progress: `metadb dump`, `metadb reconcile` and `metadb query --all` draw a
   progress bar on stderr when it is a terminal (a pseudo-terminal here) and
   write nothing extra to stderr on a pipe; stdout is the same both ways.
"""
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import nl_support  # noqa: E402
import reltest as rt  # noqa: E402
from mdb_api_support import CLI_BIN, Checker  # noqa: E402


def run(names, *args, tty=False, timeout=120):
    """metadb with the test's flags; with tty=True stderr is a pseudo-terminal.
    Returns (rc, stdout, stderr)."""
    cmd = [CLI_BIN] + names.flags(["--log.level=error"]) + list(args)
    env = rt.clean_env({"MDB_PROGRESS": ""})
    env.pop("MDB_PROGRESS")
    if not tty:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env)  # bytes: keep CSV's \r\n
        return p.returncode, p.stdout.decode(), p.stderr.decode("utf-8", "replace")
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = p.stdout.read().decode()
        p.wait(timeout=timeout)
        return p.returncode, out, b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def main():
    ck = Checker()
    tmp = tempfile.mkdtemp(prefix="metadb-cli-")
    tag = "t_cli_%d" % os.getpid()
    stack = rt.Stack.shared()
    names = rt.Names(tag, stack, [os.path.join(tmp, "archive")])
    client = None
    try:
        # ------------------------------------------------------------ 1. help
        rc, out, err = run(names, "help")
        commands = re.findall(r"^  (\w+) ", out.split("commands:")[1].split("\n\n")[0], re.M) if "commands:" in out else []
        ck.check(rc == 0 and len(commands) >= 12 and "metadb help COMMAND" in out,
                 "metadb help lists the commands (%d) and says how to get a command's help" % len(commands), out[:400])
        for c in commands:
            r1 = run(names, "help", c)
            r2 = run(names, c, "--help")
            ok = all(r[0] == 0 and re.match(r"usage: metadb (\[[^]]*\] )*%s\b" % c, r[1]) for r in (r1, r2))
            ck.check(ok and r1[1] == r2[1], "metadb help %s == metadb %s --help: its usage, exit 0" % (c, c),
                     "%r %r" % (r1[:2], r2[:2]))
        for args, want in [(("query", "studies", "--help"), "metadb query studies"),
                           (("query", "series", "--limit", "3", "-h"), "metadb query studies|series"),
                           (("query", "raw", "--help"), "metadb query raw"),
                           (("help", "query", "nl"), "metadb query nl"),
                           (("query", "nl", "--help"), "metadb query nl"),
                           (("researcher", "add", "--help"), "metadb researcher add"),
                           (("collection", "create", "--help"), "metadb collection create")]:
            rc, out, err = run(names, *args)
            ck.check(rc == 0 and want in out and "needs a value" not in err and "unexpected" not in err,
                     "metadb %s prints the usage" % " ".join(args),
                     "rc %d out %r err %r" % (rc, out[:200], err[:200]))
        rc, out, err = run(names, "help", "frobnicate")
        ck.check(rc == 2 and "unknown command" in err, "metadb help frobnicate is a usage error", err)

        # ------------------------------------------------------ data for 2-4
        manifest = nl_support.generate(os.path.join(tmp, "archive"), patients=4, seed=5)
        client, db = nl_support.load_direct(tag, os.path.join(tmp, "archive"))
        rt.metadb(names, "topics")
        rt.metadb(names, "researcher", "add", "cli-test", "--name", "CLI test", "--email", "cli@example.org")
        rt.metadb(names, "collection", "create", "CLI", "--description", "cli test")
        patient = manifest["studies"][0]["patient_id"]
        ids = ["c0ffee11-aaaa-4aaa-8aaa-%012d" % (os.getpid() % 10 ** 12),
               "c0ffee11-bbbb-4bbb-8bbb-%012d" % (os.getpid() % 10 ** 12),
               "d00d1e22-cccc-4ccc-8ccc-%012d" % (os.getpid() % 10 ** 12)]
        for jid in ids:
            rt.metadb(names, "submit", "--researcher", "cli-test", "--collection", "CLI", "--patient", patient,
                      "--job-id", jid)

        # ------------------------------------------------------ 2. job ids
        for arg in (ids[2], ids[2][:8], ids[2][:6], ids[0][:10]):
            rc, out, err = run(names, "status", arg, "--json")
            doc = json.loads(out) if out.strip() else {}
            want = ids[2] if arg.startswith("d00d") else ids[0]
            ck.check(doc.get("_id") == want, "metadb status %s finds job %s" % (arg, want),
                     "rc %d out %r err %r" % (rc, out[:200], err[:300]))
        rc, out, err = run(names, "status", ids[0][:8])
        ck.check(rc == 1 and "ambiguous" in err and ids[0] in err and ids[1] in err,
                 "an ambiguous prefix is an error listing the candidates", err)
        rc, out, err = run(names, "status", ids[2][:5])
        ck.check(rc == 1 and "at least 6" in err, "a 5-character prefix is refused", err)
        rc, out, err = run(names, "status", "ffffff99")
        ck.check(rc == 1 and "no job" in err, "an unknown prefix says there is no such job", err)
        rc, out, err = run(names, "retry", ids[2][:8], "--dry-run", "--force")
        ck.check(rc == 0 and ids[2] in out + err and "ambiguous" not in err,
                 "metadb retry takes a prefix too (resolved to the full id)", "rc %d %r %r" % (rc, out[:300], err[:300]))

        # ------------------------------------------------- 3. no truncation
        uids = {d["_id"] for d in db.series.find({}, {"_id": 1})}
        longest = max(len(u) for u in uids)
        rc, out, err = run(names, "query", "series", "--all", "--fields", "_id,series_description", "--format", "csv")
        got = {line.split(",")[0] for line in out.strip().splitlines()[1:]}
        ck.check(rc == 0 and got == uids and "\u2026" not in out,
                 "query --format csv: every series UID whole (%d, up to %d characters)" % (len(uids), longest), out[:300])
        rc, out, err = run(names, "query", "series", "--all", "--format", "json")
        got = {d["_id"] for d in json.loads(out)["items"]} if rc == 0 else set()
        ck.check(got == uids and "\u2026" not in out, "query --format json: every series UID whole", err[:300])
        rc, out, err = run(names, "query", "nl", "--offline", "--format", "csv", "--limit", "1000", "CT series")
        want = {d["_id"] for d in db.series.find({"modality": "CT"}, {"_id": 1})}
        got = {line.split(",")[0] for line in out.strip().splitlines()[1:]}
        ck.check(rc == 0 and got == want and "\u2026" not in out, "query nl --format csv: every UID whole", err[:300])

        # ------------------------------------------------------ 4. progress
        for args, label in [(("dump",), "dump"), (("reconcile",), "reconcile"),
                            (("query", "instances", "--all", "--limit", "5", "--format", "csv"), "query")]:
            rc_p, out_p, err_p = run(names, *args)
            rc_t, out_t, err_t = run(names, *args, tty=True)
            bar = re.search(r"\r\x1b\[K%s +(\[[#-]+\] +\d+%%|\d)" % label, err_t)
            ck.check(rc_t == rc_p and out_t == out_p and bar is not None and err_t.rstrip().endswith("\x1b[K"),
                     "metadb %s: a progress bar on a terminal, cleared at the end; same stdout" % " ".join(args),
                     "rc %s/%s same stdout %s stderr(tty) %r" % (rc_p, rc_t, out_t == out_p, err_t[-300:]))
            ck.check("\r" not in err_p and "\x1b" not in err_p and "%" not in err_p,
                     "metadb %s: nothing of it on a pipe" % " ".join(args), repr(err_p[-300:]))
        rc, out, err = run(names, "query", "instances", "--all", "--limit", "5", "--format", "csv", tty=True)
        m = re.findall(r"query +\[[#-]+\] +(\d+)%  ([\d,]+)/([\d,]+) rows", err)
        n = db.instances.count_documents({})
        ck.check(m and m[-1][0] == "100" and m[-1][1].replace(",", "") == str(n) and m[-1][2].replace(",", "") == str(n),
                 "query --all's bar counts pages up to the total (%d instances)" % n, repr(err[-300:]))
    finally:
        if client:
            nl_support.drop(client, tag)
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
