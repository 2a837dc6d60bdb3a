#!/usr/bin/python3
"""The benchmark harness behind bench/run.sh (run that; see its --help).

Every figure is a ratio against a baseline measured in the same run, with the
median of --repeats runs, so that load from other work on a shared machine
mostly cancels out:

  extraction     bench/bench_extract.sh (metadb's reader+extractor per CPU-second
                 vs pydicom and vs bare open+read(4 KiB)+close)
  ceiling        bench_dbload ceiling: the linker's final documents bulk-written
                 straight into the database (no Kafka), --mode upsert (the issue's
                 definition) and insert; reported against both, the faster being
                 the stricter
  refshape       bench_dbload refshape: one synchronous insert per document plus a
                 find per parent (the reference pipeline's shape)
  orthanc        bench/orthanc_load.py: the same files into Orthanc's REST API,
                 2 uploaders
  end_to_end     submission -> job `completed` through producer, workers, linker
                 on the local stack (private topics, groups and database); also
                 database round trips per instance (the linker's own count),
                 Kafka bytes per instance (key+value of every record on the
                 files and instances topics), peak RSS (VmHWM) of workers and linker
  scaling        the worker stage alone, 1 vs 2 workers (1 thread each) over the
                 same file tasks: instances/s from the first to the last event's
                 Kafka timestamp
  linker_backlog one linker over the instance events of the scaling run
                 (instances/s and round trips per instance without the workers)
  database PSS   during every end-to-end run (and --lidc), every second: the
                 sum of Pss (/proc/PID/smaps_rollup) over PostgreSQL's
                 postmaster and all its descendants plus DocumentDB's gateway
                 (the local stack's pid files); the peak is reported

Writes OUT/report.json and OUT/report.md (OUT = bench/out by default).
--lidc runs the LIDC-IDRI-shaped archive through the pipeline instead, then,
before its private database is dropped, starts metadb-api on it as the
read-only user and times filtered study/series queries, the instances of one
series and counts of >= 100,000 instances (bench/bench_queries.py), and
writes OUT/lidc.json (report.md shows it when present).

Database URIs carry credentials: --mongo-uri / $METADB_MONGO_URI (read-write),
--api-mongo-uri / $METADB_API_MONGO_URI (read-only, metadb-api), else the local
stack's $METADB_HOME/database/metadb.uri and metadb_ro.uri."""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import pymongo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_queries as bq  # noqa: E402
SRC = os.path.dirname(HERE)
PY = "/usr/bin/python3"
GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
FINAL = ("completed", "completed_with_errors", "failed")

LIDC_PATIENTS = 1010
LIDC_SECOND_STUDY = 0.31
LIDC_INSTANCES = 244527


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def median(v):
    return statistics.median(v) if v else None


def sh(cmd, timeout=600, check=True, env=None, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:],
                                                        p.stderr[-3000:]))
    return p


def wait_for(fn, timeout, interval=0.1):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > end:
            return v
        time.sleep(interval)


# ---------------------------------------------------------------- archives

def ensure_archive(path, files, small, seed=2024, patients=None, second_study=None):
    """Generate (or reuse, when its manifest matches) an archive; return its manifest."""
    mf = os.path.join(path, "manifest.json")
    if os.path.exists(mf):
        with open(mf) as f:
            m = json.load(f)
        if m["counts"]["instances"] == files and bool(m["small"]) == small and \
                (patients is None or m["counts"]["patients"] == patients) and \
                (second_study is None or m.get("second_study") == second_study):
            return m
    log("generating %d %s files into %s ..." % (files, "small" if small else "full-size", path))
    shutil.rmtree(path, ignore_errors=True)
    cmd = ["nice", PY, GEN, "--out", path, "--files", str(files), "--seed", str(seed)]
    if patients:
        cmd += ["--patients", str(patients)]
    if small:
        cmd.append("--small")
    if second_study is not None:
        cmd += ["--second-study", str(second_study)]
    sh(cmd, timeout=6 * 3600)
    with open(mf) as f:
        m = json.load(f)
    if second_study is not None:
        m["second_study"] = second_study
        with open(mf, "w") as f:
            json.dump(m, f)
    return m


def write_list(manifest, path, limit=None):
    paths = [i["path"] for i in manifest["instances"]]
    if limit:
        paths = paths[:limit]
    with open(path, "w") as f:
        f.write("\n".join(paths) + "\n")
    return len(paths)


# ---------------------------------------------------------------- machine

def machine(args):
    def first(cmd):
        try:
            return sh(cmd, timeout=60, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def dpkg(pkg):
        return first(["dpkg-query", "-W", "-f=${Version}", pkg]) or None

    lscpu = first(["lscpu"])
    model = re.search(r"Model name:\s*(.*)", lscpu)
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    osr = {}
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                osr[k] = v.strip('"')
    db_version = database_version(args)
    kafka_version = None
    pom = os.path.join(SRC, "deploy", "pom.xml")
    if os.path.exists(pom):
        m = re.search(r"<kafka.version>([^<]+)</kafka.version>", open(pom).read())
        kafka_version = m.group(1) if m else None
    cache = os.path.join(args.build, "CMakeCache.txt")
    build_type = None
    if os.path.exists(cache):
        m = re.search(r"^CMAKE_BUILD_TYPE:\w+=(.*)$", open(cache).read(), re.M)
        build_type = m.group(1) if m else None
    try:
        import pydicom
        pyd = pydicom.__version__
    except ImportError:
        pyd = None
    return {
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpus": os.cpu_count(),
        "lscpu": lscpu,
        "memory_bytes": mem,
        "kernel": platform.release(),
        "os": osr.get("PRETTY_NAME"),
        "loadavg_at_start": os.getloadavg(),
        "cpu_pressure_at_start": cpu_pressure(),
        "compiler": first(["cc", "--version"]).splitlines()[0] if first(["cc", "--version"]) else None,
        "build_dir": args.build,
        "build_type": build_type,
        "git_commit": first(["git", "-C", SRC, "rev-parse", "--short", "HEAD"]),
        "versions": {
            "kafka": kafka_version,
            "database": db_version,
            "librdkafka": dpkg("librdkafka-dev"),
            "libmongoc": dpkg("libmongoc-dev"),
            "gdcm": dpkg("libgdcm-dev"),
            "jansson": dpkg("libjansson-dev"),
            "orthanc": dpkg("orthanc"),
            "pydicom": pyd,
            "python": platform.python_version(),
        },
    }


# ---------------------------------------------------------------- the database

def local_stack_pids(home):
    """(postmaster pid, gateway pid) of the local stack (deploy/stack.sh), each
    None when its pid file is missing or the process is gone."""
    def alive(pid):
        try:
            os.kill(pid, 0)
            return pid
        except (OSError, TypeError):
            return None

    def first_int(path):
        try:
            with open(path) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None
    return (alive(first_int(os.path.join(home, "postgres", "data", "postmaster.pid"))),
            alive(first_int(os.path.join(home, "gateway.pid"))))


def psql(home, sql):
    """One value from the local cluster's psql as the postgres superuser (the
    cluster's files belong to postgres; as root, map to it in a user namespace)."""
    binp = os.path.join(os.environ.get("METADB_PG_BINDIR", "/usr/lib/postgresql/15/bin"), "psql")
    cmd = [binp, "-h", os.path.join(home, "postgres", "run"), "-p", os.environ.get("METADB_PG_PORT", "9712"),
           "-U", "postgres", "-At", "-c", sql]
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postgres")
        cmd = ["unshare", "--user", "--map-user=%d" % pw.pw_uid, "--map-group=%d" % pw.pw_gid] + cmd
    p = sh(cmd, timeout=30, check=False)
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else None


def database_version(args):
    """One line: which MongoDB-wire database the run measured."""
    try:
        c = pymongo.MongoClient(args.mongo_uri, serverSelectionTimeoutMS=5000)
        bi = c.admin.command("buildInfo")
        c.close()
    except Exception as e:  # noqa: BLE001 - description only
        return "unknown (%s)" % e
    wire = bi.get("version")
    # servers that speak the wire protocol over another engine name it in
    # buildInfo (e.g. "<engine>Version"): a description only
    other = ["%s %s" % (k[:-len("Version")], v) for k, v in sorted(bi.items())
             if k.endswith("Version") and k != "version" and isinstance(v, str)]
    if other:
        return "%s (MongoDB %s wire)" % (", ".join(other), wire)
    pm, gw = local_stack_pids(args.home)
    if gw:
        ext = pg = None
        try:
            ext = psql(args.home, "SELECT extversion FROM pg_extension WHERE extname='documentdb'")
            pg = psql(args.home, "SHOW server_version")
        except Exception:  # noqa: BLE001 - psql unavailable: the short form
            pass
        if ext:
            return "DocumentDB %s in PostgreSQL %s, gateway (MongoDB %s wire)" % (ext, (pg or "15").split()[0], wire)
        return "DocumentDB (gateway, MongoDB %s wire)" % wire
    return "MongoDB %s" % wire


def proc_children():
    """{ppid: [pid, ...]} of every process."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def pss_bytes(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class DbMemory:
    """The local database's memory, sampled every second in a thread: the sum
    of Pss (/proc/PID/smaps_rollup) over PostgreSQL's postmaster and all its
    descendants (backends, DocumentDB's background workers) plus the gateway.
    PSS charges shared pages (shared_buffers) once across the processes.
    Unavailable (None) when the database is not the local stack's."""

    def __init__(self, home, interval=1.0):
        self.home = home
        self.interval = interval
        self.samples = []  # (t, postgres bytes, gateway bytes, processes)
        self.stop_ev = None
        self.thread = None
        self.why = "no local database processes (deploy/stack.sh pid files) found"

    def sample(self):
        pm, gw = local_stack_pids(self.home)
        if not pm and not gw:
            return None
        kids = proc_children()
        pg, todo = [], [pm] if pm else []
        while todo:
            p = todo.pop()
            pg.append(p)
            todo.extend(kids.get(p, []))
        gws, todo = [], [gw] if gw else []
        while todo:
            p = todo.pop()
            gws.append(p)
            todo.extend(kids.get(p, []))
        out = (time.time(), sum(pss_bytes(p) for p in pg), sum(pss_bytes(p) for p in gws), len(pg) + len(gws))
        if not out[1] and not out[2]:
            self.why = "cannot read /proc/PID/smaps_rollup of the database's processes (another user's?)"
            return None
        return out

    def start(self):
        import threading
        first = self.sample()
        if first is None:
            return self
        self.samples.append(first)
        self.stop_ev = threading.Event()

        def loop():
            while not self.stop_ev.wait(self.interval):
                s = self.sample()
                if s:
                    self.samples.append(s)
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread:
            self.stop_ev.set()
            self.thread.join()
            self.thread = None
        return self.result()

    def result(self):
        if not self.samples:
            return {"available": False, "why": self.why}
        tot = [s[1] + s[2] for s in self.samples]
        i = max(range(len(tot)), key=lambda k: tot[k])
        return {"available": True, "samples": len(self.samples), "interval_s": self.interval,
                "start_pss_bytes": tot[0], "peak_pss_bytes": tot[i], "end_pss_bytes": tot[-1],
                "peak_postgres_pss_bytes": self.samples[i][1], "peak_gateway_pss_bytes": self.samples[i][2],
                "max_postgres_pss_bytes": max(s[1] for s in self.samples),
                "max_gateway_pss_bytes": max(s[2] for s in self.samples),
                "processes_at_peak": self.samples[i][3],
                "what": "sum of Pss over the postmaster, its descendants and the gateway, sampled every %.0f s"
                        % self.interval}


def merge_mem(results):
    """The peak of several DbMemory results."""
    ok = [r for r in results if r and r.get("available")]
    if not ok:
        return results[0] if results else None
    best = dict(max(ok, key=lambda r: r["peak_pss_bytes"]))
    best["runs_peak_pss_bytes"] = [r["peak_pss_bytes"] for r in ok]
    return best


def cpu_pressure():
    """/proc/pressure/cpu "some" averages (share of time some task waited for
    a CPU: how busy the shared machine was), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            line = f.readline().split()
        return {k: float(v) for k, v in (x.split("=") for x in line[1:4])}
    except (OSError, ValueError, IndexError):
        return None


def busy_line(m, end):
    """How busy the machine was: load averages and CPU pressure at start and end."""
    def one(load, psi):
        out = "load %s" % ", ".join("%.2f" % x for x in load) if load else "load n/a"
        if psi:
            out += "; CPU pressure (some) %.0f %% / %.0f %% / %.0f %% (10 s / 60 s / 300 s)" % (
                psi["avg10"], psi["avg60"], psi["avg300"])
        return out
    s = "start: " + one(m.get("loadavg_at_start"), m.get("cpu_pressure_at_start"))
    if end:
        s += "<br>end: " + one(end.get("loadavg"), end.get("cpu_pressure"))
    return s


# ---------------------------------------------------------------- extraction

def parse_extract(text):
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0] in ("metadb", "pydicom", "bare", "io"):
            try:
                rows[parts[0]] = {"files": int(parts[1]), "wall_s": float(parts[2]), "cpu_s": float(parts[3]),
                                  "files_per_cpu_s": float(parts[4]), "failures": int(parts[6])}
            except ValueError:
                pass
    return rows


def bench_extraction(args, archive_dir, nfiles):
    runs = []
    for r in range(args.repeats):
        cmd = [os.path.join(HERE, "bench_extract.sh"), "--files", str(nfiles), "--dir", archive_dir, "--build",
               args.build, "--rounds", "3"]
        if args.pydicom_files:
            cmd += ["--pydicom-files", str(args.pydicom_files)]
        p = sh(cmd, timeout=3600)
        rows = parse_extract(p.stdout)
        if not all(k in rows for k in ("metadb", "pydicom", "bare")):
            raise RuntimeError("bench_extract.sh output not understood:\n" + p.stdout)
        rows["vs_pydicom"] = rows["metadb"]["files_per_cpu_s"] / rows["pydicom"]["files_per_cpu_s"]
        rows["cost_vs_bare"] = rows["bare"]["files_per_cpu_s"] / rows["metadb"]["files_per_cpu_s"]
        log("extraction %d/%d: metadb %.0f files/cpu-s, pydicom %.0f, bare %.0f -> %.1fx pydicom, %.2fx bare cost" % (
            r + 1, args.repeats, rows["metadb"]["files_per_cpu_s"], rows["pydicom"]["files_per_cpu_s"],
            rows["bare"]["files_per_cpu_s"], rows["vs_pydicom"], rows["cost_vs_bare"]))
        runs.append(rows)
    return {
        "runs": runs,
        "metadb_files_per_cpu_s": median([r["metadb"]["files_per_cpu_s"] for r in runs]),
        "pydicom_files_per_cpu_s": median([r["pydicom"]["files_per_cpu_s"] for r in runs]),
        "bare_files_per_cpu_s": median([r["bare"]["files_per_cpu_s"] for r in runs]),
        "io_files_per_cpu_s": median([r["io"]["files_per_cpu_s"] for r in runs if "io" in r]),
        "vs_pydicom": median([r["vs_pydicom"] for r in runs]),
        "cost_vs_bare": median([r["cost_vs_bare"] for r in runs]),
    }


# ---------------------------------------------------------------- database baselines

PRIVATE_DBS = []  # every private database this run used (all dropped at the end)


def bench_dbload(args, what, list_path, extra):
    db = "t_bench_%s_%d" % (what, os.getpid())
    if db not in PRIVATE_DBS:
        PRIVATE_DBS.append(db)
    cmd = [os.path.join(args.build, "bench", "bench_dbload"), what, list_path, "--db", db, "--uri", args.mongo_uri,
           "--features", os.path.join(SRC, "conf"), "--repeats", "1"] + extra
    p = sh(cmd, timeout=6 * 3600)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    log("%s %s: %d instances, median %.2f s = %.0f instances/s, %.4f round trips/instance" % (
        what, out["mode"], out["instances"], out["median_seconds"], out["instances_per_s"],
        out["round_trips_per_instance"]))
    return out


def bench_orthanc(args, list_path, n):
    p = sh([PY, os.path.join(HERE, "orthanc_load.py"), "--files", list_path, "--uploaders", "2", "--limit", str(n)],
           timeout=6 * 3600)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    if out.get("failed"):
        raise RuntimeError("Orthanc refused %s file(s): %s" % (out["failed"], out))
    log("orthanc: %d instances in %.2f s = %.1f instances/s" % (out["instances"], out["seconds"],
                                                               out["instances_per_s"]))
    return out


# ---------------------------------------------------------------- the pipeline

class Pipe:
    """One isolated deployment on the shared stack: private database, topics
    and consumer groups (t_bench_<name>_<pid>), the daemons' processes."""

    def __init__(self, args, name, roots, workdir):
        self.args = args
        self.tag = "t_bench_%s_%d" % (name, os.getpid())
        self.roots = roots
        self.workdir = workdir
        self.topics = {k: "%s.%s" % (self.tag, k) for k in ("jobs", "files", "instances", "dlq")}
        self.client = pymongo.MongoClient(args.mongo_uri, serverSelectionTimeoutMS=10000)
        self.client.admin.command("ping")
        self.db = self.client[self.tag]
        if self.tag not in PRIVATE_DBS:
            PRIVATE_DBS.append(self.tag)
        self.procs = []  # (role, Popen, log path)
        self.extra_topics = []

    def flags(self, instances_topic=None, files_topic=None):
        t = self.topics
        # (the database URI, with its password, goes in the environment, not
        # in the process list: env())
        return ["--kafka.brokers=" + self.args.brokers,
                "--mongo.db=" + self.tag, "--archive.roots=" + ",".join(self.roots),
                "--topic.jobs=" + t["jobs"], "--topic.files=" + (files_topic or t["files"]),
                "--topic.instances=" + (instances_topic or t["instances"]), "--topic.dlq=" + t["dlq"],
                "--topic.partitions=%d" % self.args.partitions, "--features.dir=" + os.path.join(SRC, "conf"),
                "--producer.group=%s.producers" % self.tag, "--producer.metrics_port=0",
                "--worker.group=%s.workers" % self.tag, "--worker.metrics_port=0",
                "--linker.group=%s.linkers" % self.tag, "--linker.metrics_port=0", "--log.level=info"]

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
        env["METADB_MONGO_URI"] = self.args.mongo_uri
        return env

    def metadb(self, *a, timeout=3600, flags=None):
        return sh([os.path.join(self.args.build, "cli", "metadb")] + (flags or self.flags()) + list(a),
                  timeout=timeout, env=self.env())

    def prepare(self, manifest):
        """Topics, the archive catalog, a researcher and a collection whose cases are every patient."""
        self.metadb("topics")
        t0 = time.time()
        self.metadb("index", "--quiet", timeout=6 * 3600)
        index_s = time.time() - t0
        self.metadb("researcher", "add", "bench", "--name", "Bench", "--email", "bench@example.org")
        self.metadb("collection", "create", "BENCH", "--description", "benchmark cohort")
        cases = os.path.join(self.workdir, "%s.cases.csv" % self.tag)
        with open(cases, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "patient_id", "accession_numbers"])
            for n, p in enumerate(manifest["patients"], 1):
                w.writerow(["c%d" % n, p["patient_id"], ""])
        self.metadb("collection", "add-cases", "BENCH", "--manifest", cases)
        return index_s

    def start(self, role, extra=(), instances_topic=None, files_topic=None):
        binary = {"producer": "producer/metadb-producer", "worker": "workers/metadb-worker",
                  "linker": "linker/metadb-linker"}[role]
        n = len([1 for r, _, _ in self.procs if r == role])
        path = os.path.join(self.workdir, "%s.%s-%d.log" % (self.tag, role, n))
        cmd = ["nice", "-n", str(self.args.nice)] if self.args.nice else []
        cmd += [os.path.join(self.args.build, binary)] + self.flags(instances_topic, files_topic) + list(extra)
        p = subprocess.Popen(cmd, stdout=open(path, "wb"), stderr=subprocess.STDOUT, env=self.env())
        self.procs.append((role, p, path))
        return p

    def wait_members(self, want, timeout=60, flags=None):
        """Wait until each group {group: (topic, members)} is Stable with its
        members and every partition of its topic owned (no rebalance pending
        when the clock starts)."""
        def ready():
            # (the lag tool knows a group's topic from the configured groups
            # and topics, or from the group's commits: flags name them)
            p = sh([os.path.join(self.args.build, "cli", "metadb")] + (flags or self.flags()) + ["lag", "--json"] +
                   sum([["--group", g] for g in want], []), timeout=60, check=False, env=self.env())
            try:
                doc = json.loads(p.stdout)
            except ValueError:
                return False
            seen = {}
            for g in doc.get("groups", []):
                if g.get("state") != "Stable":
                    return False
                if any(not part.get("client_id") for part in g.get("partitions", [])):
                    return False
                seen.setdefault(g["group"], set()).add(g["topic"])
                if g.get("members") != want[g["group"]][1]:
                    return False
            return all(want[g][0] <= seen.get(g, set()) for g in want)
        return wait_for(ready, timeout, 0.5)

    def peak_rss(self, role):
        """VmHWM (bytes) of each live process of role."""
        out = []
        for r, p, _ in self.procs:
            if r != role or p.poll() is not None:
                continue
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            out.append(int(line.split()[1]) * 1024)
            except OSError:
                pass
        return out

    def stop(self, role=None):
        for r, p, _ in self.procs:
            if (role is None or r == role) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for r, p, _ in self.procs:
            if role is None or r == role:
                try:
                    p.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def log_text(self, role):
        out = ""
        for r, _, path in self.procs:
            if r == role:
                with open(path, errors="replace") as f:
                    out += f.read()
        return out

    def linker_report(self):
        m = re.findall(r"linker done: (\d+) event\(s\), (\d+) new instance\(s\), (\d+) batch\(es\), "
                       r"(\d+) database round trip\(s\)", self.log_text("linker"))
        if not m:
            return None
        ev, new, batches, rts = (sum(int(x[i]) for x in m) for i in range(4))
        rep = {"events": ev, "new_instances": new, "batches": batches, "round_trips": rts}
        w = re.findall(r"linker done: .*\(([0-9.]+) s\), ([0-9.]+) events/s first event to last flush",
                       self.log_text("linker"))
        if len(w) == 1:
            rep["flush_seconds"] = float(w[0][0])
            rep["events_per_s_first_event_to_last_flush"] = float(w[0][1])
        return rep

    def cleanup(self):
        self.stop()
        try:
            self.client.drop_database(self.tag)
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the result
            log("warning: could not drop %s: %s" % (self.tag, e))
        tool = os.path.join(SRC, "deploy", "kafka-tool.sh")
        if os.path.exists(tool):
            p = sh([tool, "topics", "--bootstrap-server", self.args.brokers, "--delete", "--topic",
                    re.escape(self.tag) + r"\..*"], timeout=120, check=False)
            if p.returncode != 0:
                log("warning: could not delete topics %s.*: %s" % (self.tag, p.stderr.strip()[-300:]))


def topic_records(brokers, topic):
    """[(timestamp_ms, key_len, value_len)] of every record of topic."""
    p = sh(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%T %K %S\\n"],
           timeout=3600)
    out = []
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), max(int(parts[1]), 0), max(int(parts[2]), 0)))
    return out


def topic_count(brokers, topic, partitions):
    p = sh(["kcat", "-Q", "-b", brokers] + sum([["-t", "%s:%d:-1" % (topic, i)] for i in range(partitions)], []),
           timeout=60, check=False)
    return sum(int(x) for x in re.findall(r"offset (\d+)", p.stdout))


def parse_iso(s):
    return datetime.datetime.strptime(s.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def run_job(pipe, n, timeout):
    """Submit a job for every case and wait for its final state. Returns
    (job document, wall seconds measured here)."""
    job_id = "%s-job-%d" % (pipe.tag, int(time.time() * 1000))
    t0 = time.time()
    pipe.metadb("submit", "--researcher", "bench", "--collection", "BENCH", "--all-cases", "--job-id", job_id)
    pipe.submit_seconds = time.time() - t0
    job = wait_for(lambda: (lambda j: j if j and j.get("state") in FINAL else None)(
        pipe.db.jobs.find_one({"_id": job_id})), timeout, 0.05)
    wall = time.time() - t0
    if not job:
        raise RuntimeError("job %s did not finish in %d s: %r" % (job_id, timeout, pipe.db.jobs.find_one(
            {"_id": job_id})))
    return job, wall


def bench_e2e_once(args, manifest, root, workdir, label, measure_kafka, after=None):
    """One pipeline run. after(pipe, res), if given, runs on the finished
    catalogue before the private database is dropped."""
    n = manifest["counts"]["instances"]
    pipe = Pipe(args, label, [root], workdir)
    mem = DbMemory(args.home)
    try:
        index_s = pipe.prepare(manifest)
        mem.start()
        pipe.start("producer")
        for _ in range(args.workers):
            pipe.start("worker", ["--worker.threads=%d" % args.worker_threads])
        pipe.start("linker", args.linker_flags.split())
        want = {"%s.producers" % pipe.tag: ({pipe.topics["jobs"]}, 1),
                "%s.workers" % pipe.tag: ({pipe.topics["files"]}, args.workers),
                "%s.linkers" % pipe.tag: ({pipe.topics["instances"], pipe.topics["dlq"]}, 1)}
        if not pipe.wait_members(want, timeout=90):
            raise RuntimeError("the daemons did not join their consumer groups within 90 s")
        job, wall = run_job(pipe, n, args.job_timeout)
        job_s = parse_iso(job["completed_at"]) - parse_iso(job["submitted_at"]) \
            if job.get("completed_at") and job.get("submitted_at") else wall
        ninst = pipe.db.instances.count_documents({})
        rss_w, rss_l = pipe.peak_rss("worker"), pipe.peak_rss("linker")
        pipe.stop()
        db_mem = mem.stop()
        rep = pipe.linker_report() or {}
        res = {"instances_expected": n, "instances_in_db": ninst, "state": job.get("state"),
               "files_total": job.get("files_total"), "files_done": job.get("files_done"),
               "files_failed": job.get("files_failed"), "instances_linked": job.get("instances_linked"),
               "index_seconds": index_s, "wall_seconds": wall, "job_seconds": wall,
               "submit_command_seconds": pipe.submit_seconds,
               # what a user waits: submission until the completed state is
               # readable (the job document's completed_at is the start time
               # of the linker's last flush, up to a flush earlier)
               "instances_per_s": n / wall if wall > 0 else None,
               "job_doc_seconds": job_s,
               "worker_peak_rss_bytes": max(rss_w) if rss_w else None,
               "linker_peak_rss_bytes": max(rss_l) if rss_l else None,
               "linker": rep,
               "round_trips_per_instance": rep["round_trips"] / ninst if rep and ninst else None,
               # the database's memory from the daemons' start to the job's end
               "database_memory": db_mem}
        if measure_kafka:
            files = topic_records(args.brokers, pipe.topics["files"])
            inst = topic_records(args.brokers, pipe.topics["instances"])
            res["kafka"] = {"files_records": len(files), "files_bytes": sum(k + v for _, k, v in files),
                            "instances_records": len(inst), "instances_bytes": sum(k + v for _, k, v in inst)}
            res["kafka_bytes_per_instance"] = (res["kafka"]["files_bytes"] + res["kafka"]["instances_bytes"]) / n
        ok = job.get("state") == "completed" and ninst == n and job.get("files_done") == n
        res["ok"] = ok
        log("%s: %s, %d/%d instances in the database, %.2f s submit->completed (job document: %.2f s) = %.0f instances/s, "
            "%s round trips/instance, database peak PSS %s" % (
                label, job.get("state"), ninst, n, wall, job_s, res["instances_per_s"] or 0,
                "%.4f" % res["round_trips_per_instance"] if res["round_trips_per_instance"] is not None else "?",
                mib(db_mem.get("peak_pss_bytes"))))
        if after:
            after(pipe, res)
        return res
    finally:
        mem.stop()
        pipe.cleanup()


def summarise_e2e(args, runs):
    return {
        "runs": runs, "workers": args.workers, "worker_threads": args.worker_threads, "linkers": 1,
        "instances": runs[0]["instances_expected"],
        "job_seconds": median([r["job_seconds"] for r in runs]),
        "instances_per_s": median([r["instances_per_s"] for r in runs]),
        "round_trips_per_instance": median([r["round_trips_per_instance"] for r in runs
                                            if r["round_trips_per_instance"] is not None]),
        "kafka_bytes_per_instance": runs[0].get("kafka_bytes_per_instance"),
        "kafka": runs[0].get("kafka"),
        "worker_peak_rss_bytes": max(r["worker_peak_rss_bytes"] or 0 for r in runs),
        "linker_peak_rss_bytes": max(r["linker_peak_rss_bytes"] or 0 for r in runs),
        "database_memory": merge_mem([r.get("database_memory") for r in runs]),
    }


def summarise_runs(runs, key="instances_per_s"):
    """Median of key over the runs, plus the runs themselves."""
    out = dict(runs[0])
    out.pop("seconds", None)
    out["runs"] = runs
    out[key] = median([r[key] for r in runs])
    return out


def bench_stages(args, manifest, root, workdir):
    """Worker stage with 1 and 2 workers over the same file tasks, then one
    linker over a backlog of instance events."""
    n = manifest["counts"]["instances"]
    pipe = Pipe(args, "stages", [root], workdir)
    try:
        pipe.prepare(manifest)
        pipe.start("producer")
        job_id = "%s-job" % pipe.tag
        pipe.metadb("submit", "--researcher", "bench", "--collection", "BENCH", "--all-cases", "--job-id", job_id)
        if not wait_for(lambda: topic_count(args.brokers, pipe.topics["files"], args.partitions) >= n, 600, 0.5):
            raise RuntimeError("the producer did not publish %d file tasks" % n)
        pipe.stop("producer")
        # The file tasks, copied into a fresh topic for each run once its
        # workers have all joined their group (the local broker starts a
        # group's first generation at once, group.initial.rebalance.delay.ms
        # = 0, so workers started on a full topic would not share it).
        dump = os.path.join(workdir, "%s.files.dump" % pipe.tag)
        with open(dump, "w") as fh:
            subprocess.run(["kcat", "-C", "-b", args.brokers, "-t", pipe.topics["files"], "-o", "beginning", "-e",
                            "-q", "-f", "%k\t%s\n"], stdout=fh, check=True, timeout=600)
        scaling = {}
        backlog_topic = None
        for k in (1, 2):
            rates = []
            for r in range(args.repeats):
                ftopic = "%s.files_w%d_r%d" % (pipe.tag, k, r)
                topic = "%s.inst_w%d_r%d" % (pipe.tag, k, r)
                group = "%s.w%d_r%d" % (pipe.tag, k, r)
                pipe.metadb("topics", flags=pipe.flags(topic, ftopic))
                procs = [pipe.start("worker", ["--worker.threads=1", "--worker.group=" + group],
                                    instances_topic=topic, files_topic=ftopic) for _ in range(k)]
                if not pipe.wait_members({group: ({ftopic}, k)}, timeout=90,
                                         flags=pipe.flags(topic, ftopic) + ["--worker.group=" + group]):
                    raise RuntimeError("%d worker(s) did not join group %s" % (k, group))
                sh(["kcat", "-P", "-b", args.brokers, "-t", ftopic, "-K", "\t", "-l", dump], timeout=600)
                done = wait_for(lambda: topic_count(args.brokers, topic, args.partitions) >= n, args.job_timeout, 0.2)
                rss = pipe.peak_rss("worker")
                pipe.stop("worker")
                pipe.procs = [x for x in pipe.procs if x[1] not in procs]
                if not done:
                    raise RuntimeError("%d worker(s) did not extract %d files" % (k, n))
                ts = sorted(t for t, _, _ in topic_records(args.brokers, topic))
                span = (ts[-1] - ts[0]) / 1000.0 if len(ts) > 1 else 0
                rate = (len(ts) - 1) / span if span > 0 else None
                rates.append(rate)
                log("worker stage, %d worker(s) x 1 thread, run %d: %d events in %.2f s (first to last) = %s "
                    "instances/s, peak RSS %s" % (k, r + 1, len(ts), span, "%.0f" % rate if rate else "?",
                                                  max(rss) if rss else "?"))
                backlog_topic = backlog_topic or topic
            scaling["workers_%d" % k] = {"runs": rates, "instances_per_s": median([x for x in rates if x])}
        r1, r2 = scaling["workers_1"]["instances_per_s"], scaling["workers_2"]["instances_per_s"]
        scaling["speedup_1_to_2"] = r2 / r1 if r1 and r2 else None
        # one linker over the backlog of the first worker run
        pipe.start("linker", instances_topic=backlog_topic)
        t0 = time.time()
        job = wait_for(lambda: (lambda j: j if j and j.get("state") in FINAL else None)(
            pipe.db.jobs.find_one({"_id": job_id})), args.job_timeout, 0.05)
        wall = time.time() - t0
        rss = pipe.peak_rss("linker")
        pipe.stop("linker")
        rep = pipe.linker_report() or {}
        ninst = pipe.db.instances.count_documents({})
        # the linker's own clock: first event consumed to last batch flushed
        # (the wall time here also holds its start-up and group join)
        backlog = {"instances": ninst, "state": job and job.get("state"), "wall_seconds": wall,
                   "instances_per_s": rep.get("events_per_s_first_event_to_last_flush"), "linker": rep,
                   "round_trips_per_instance": rep["round_trips"] / ninst if rep and ninst else None,
                   "linker_peak_rss_bytes": max(rss) if rss else None}
        log("linker on a backlog of %d events: %s, %.0f instances/s (first event to last flush; %.2f s wall with "
            "start-up), %s round trips/instance" % (n, backlog["state"], backlog["instances_per_s"] or 0, wall,
                                                    backlog["round_trips_per_instance"]))
        if ninst != n:
            raise RuntimeError("linker backlog run: %d instances in the database, expected %d" % (ninst, n))
        return scaling, backlog
    finally:
        pipe.cleanup()


# ---------------------------------------------------------------- report

def rel(a, b):
    return a / b if a is not None and b else None


def ratio(value, goal_op, goal, what):
    met = None
    if value is not None:
        met = value >= goal if goal_op == ">=" else value <= goal
    return {"value": value, "goal": "%s %s" % (goal_op, goal), "met": met, "what": what}


def fmt(v, spec="%.2f"):
    return "n/a" if v is None else spec % v


def mib(v):
    return "n/a" if not v else "%.1f MiB" % (v / 1048576.0)


def mem_line(m):
    if not m:
        return "n/a"
    if not m.get("available"):
        return "not measured (%s)" % m.get("why")
    return "%s (PostgreSQL %s + gateway %s; %s at the start; %d samples)" % (
        mib(m["peak_pss_bytes"]), mib(m["peak_postgres_pss_bytes"]), mib(m["peak_gateway_pss_bytes"]),
        mib(m["start_pss_bytes"]), m["samples"])


def write_markdown(rep, path, lidc):
    f = rep["figures"]
    r = rep["ratios"]
    m = rep["machine"]
    L = []
    L.append("# metadb benchmark report\n")
    L.append("Generated %s by `%s` (commit %s, %s build). Every ratio's baseline was measured in the same run; "
             "values are medians of %d repeat(s).\n" % (rep["generated_at"], rep["command"], m["git_commit"],
                                                       m["build_type"], rep["config"]["repeats"]))
    L.append("## Machine\n")
    L.append("| | |\n|---|---|")
    L.append("| CPU | %s, %d logical CPUs |" % (m["cpu_model"], m["cpus"]))
    L.append("| memory | %.1f GiB |" % (m["memory_bytes"] / 2 ** 30))
    L.append("| OS, kernel | %s, %s |" % (m["os"], m["kernel"]))
    L.append("| how busy (other work on the machine) | %s |" % busy_line(m, rep.get("at_end")))
    L.append("| compiler | %s |" % m["compiler"])
    for k, v in m["versions"].items():
        L.append("| %s | %s |" % (k, v))
    L.append("")
    L.append("## Goals\n")
    L.append("| figure | value | goal | met |\n|---|---|---|---|")
    for k, x in r.items():
        v = x["value"]
        L.append("| %s | %s | %s | %s |" % (x["what"], fmt(v, "%.4f" if k == "round_trips_per_instance" else
                                                            "%.2f"), x["goal"],
                                             {True: "yes", False: "**no**", None: "n/a"}[x["met"]]))
    L.append("")
    if rep.get("ratios_per_repeat"):
        L.append("Per repeat (each baseline measured right before the pipeline run it is compared with):\n")
        keys = list(rep["ratios_per_repeat"][0])
        L.append("| repeat | %s |\n|---|%s" % (" | ".join(keys), "---|" * len(keys)))
        for i, x in enumerate(rep["ratios_per_repeat"], 1):
            L.append("| %d | %s |" % (i, " | ".join(fmt(x[k]) for k in keys)))
        L.append("")
    c = rep["config"]
    L.append("## Figures\n")
    L.append("Archive: %d full-size generated files (%s studies, %s series) in `%s`.\n" % (
        c["files"], c["studies"], c["series"], c["archive"]))
    e = f.get("extraction") or {}
    L.append("### Extraction (per CPU-second of one thread, warm page cache)\n")
    L.append("| reader | files per CPU-second |\n|---|---|")
    L.append("| metadb (open, header read + parse, typed extraction, event JSON, close) | %s |" %
             fmt(e.get("metadb_files_per_cpu_s"), "%.0f"))
    L.append("| pydicom dcmread(stop_before_pixels) + getattr over the same feature lists | %s |" %
             fmt(e.get("pydicom_files_per_cpu_s"), "%.0f"))
    L.append("| bare open + read(4 KiB) + close | %s |" % fmt(e.get("bare_files_per_cpu_s"), "%.0f"))
    L.append("| open + fstat + pread(8 KiB) + close (the reader's system calls alone) | %s |" %
             fmt(e.get("io_files_per_cpu_s"), "%.0f"))
    L.append("")
    e2e = f.get("end_to_end") or {}
    L.append("### End to end (submission to `completed`, local stack)\n")
    L.append("%s worker(s) x %s thread(s), 1 linker (%s), producer, Kafka and the database on the same %d CPUs. "
             "Time from `metadb submit` until the job's completed state is readable.\n" % (
                 e2e.get("workers"), e2e.get("worker_threads"), c.get("linker_flags") or "default settings",
                 m["cpus"]))
    L.append("| | value |\n|---|---|")
    L.append("| instances | %s |" % e2e.get("instances"))
    L.append("| submit -> completed (median) | %s s |" % fmt(e2e.get("job_seconds")))
    L.append("| instances/s (median) | %s |" % fmt(e2e.get("instances_per_s"), "%.0f"))
    L.append("| per run (s) | %s |" % ", ".join(fmt(x["job_seconds"]) for x in e2e.get("runs", [])))
    L.append("| database round trips per instance (linker's count) | %s |" % fmt(
        e2e.get("round_trips_per_instance"), "%.4f"))
    L.append("| Kafka bytes per instance (files + instances topics, key + value) | %s |" % fmt(
        e2e.get("kafka_bytes_per_instance"), "%.0f"))
    L.append("| worker peak RSS (VmHWM) | %s |" % mib(e2e.get("worker_peak_rss_bytes")))
    L.append("| linker peak RSS (VmHWM) | %s |" % mib(e2e.get("linker_peak_rss_bytes")))
    L.append("| database peak PSS during the runs (PostgreSQL + gateway) | %s |" % mem_line(
        e2e.get("database_memory")))
    L.append("")
    L.append("### Baselines\n")
    L.append("| baseline | instances | instances/s (median) | round trips/instance |\n|---|---|---|---|")
    for key, name in (("ceiling_upsert", "ceiling: linker's documents, bulk upserts (batches of %s)" %
                       (f.get("ceiling_upsert") or {}).get("batch")),
                      ("ceiling_insert", "ceiling: linker's documents, bulk inserts"),
                      ("refshape", "reference shape: find per parent + one insert per document")):
        x = f.get(key) or {}
        L.append("| %s | %s | %s | %s |" % (name, x.get("instances"), fmt(x.get("instances_per_s"), "%.0f"),
                                           fmt(x.get("round_trips_per_instance"), "%.4f")))
    o = f.get("orthanc") or {}
    L.append("| Orthanc %s REST POST /instances, 2 uploaders | %s | %s | - |" % (
        m["versions"].get("orthanc"), o.get("instances"), fmt(o.get("instances_per_s"), "%.1f")))
    L.append("")
    s = f.get("scaling") or {}
    b = f.get("linker_backlog") or {}
    L.append("### Stages\n")
    L.append("| | value |\n|---|---|")
    L.append("| worker stage, 1 worker x 1 thread | %s instances/s |" % fmt(
        (s.get("workers_1") or {}).get("instances_per_s"), "%.0f"))
    L.append("| worker stage, 2 workers x 1 thread | %s instances/s |" % fmt(
        (s.get("workers_2") or {}).get("instances_per_s"), "%.0f"))
    L.append("| scaling 1 -> 2 workers | %sx |" % fmt(s.get("speedup_1_to_2")))
    L.append("| linker alone on a backlog | %s instances/s, %s round trips/instance |" % (
        fmt(b.get("instances_per_s"), "%.0f"), fmt(b.get("round_trips_per_instance"), "%.4f")))
    L.append("")
    if lidc:
        L.append("## LIDC-IDRI scale (`bench/run.sh --lidc`, %s)\n" % lidc.get("generated_at"))
        L.append("A generated archive with the LIDC-IDRI shape (small pixel data) through the whole pipeline: "
                 "%s worker(s) x %s thread(s), 1 linker (%s), daemons nice'd. Machine %s.\n" % (
                     lidc.get("workers"), lidc.get("worker_threads"), lidc.get("linker_flags") or "default settings",
                     busy_line(lidc.get("machine") or {}, lidc.get("at_end")).replace("<br>", "; ")))
        L.append("| | value |\n|---|---|")
        for k, name, spec in (("patients", "patients", "%d"), ("studies", "studies", "%d"), ("series", "series", "%d"),
                              ("instances_expected", "instances in the archive", "%d"),
                              ("instances_in_db", "instances in the database afterwards", "%d"),
                              ("state", "job state", "%s"), ("files_done", "files done", "%s"),
                              ("job_seconds", "submit -> completed (s)", "%.1f"),
                              ("instances_per_s", "instances/s", "%.0f"),
                              ("round_trips_per_instance", "database round trips per instance", "%.5f")):
            v = lidc.get(k)
            L.append("| %s | %s |" % (name, "n/a" if v is None else spec % v))
        L.append("| worker / linker peak RSS | %s / %s |" % (mib(lidc.get("worker_peak_rss_bytes")),
                                                           mib(lidc.get("linker_peak_rss_bytes"))))
        L.append("| database peak PSS during the pipeline run (PostgreSQL + gateway) | %s |" % mem_line(
            lidc.get("database_memory")))
        q = lidc.get("queries")
        if q and q.get("queries"):
            L.append("| database peak PSS during the queries | %s |" % mem_line(q.get("database_memory")))
            L.append("")
            L.append("### Queries on the LIDC-IDRI-shaped catalogue, answered by the database\n")
            L.append("metadb-api as the read-only user on the run's database (%s studies, %s series, %s instances), "
                     "%s; each query %s warm-up rounds, then %s measured. `matches` is the answer's exact `total` "
                     "(a count on the server).\n" % (
                         q["counts"].get("studies"), q["counts"].get("series"), q["counts"].get("instances"),
                         q.get("connection"), q.get("warmup_rounds"), q.get("rounds")))
            L.append("| figure | value | goal | met |\n|---|---|---|---|")
            g = q.get("goals") or {}
            cnt = q.get("count") or {}
            yes = {True: "yes", False: "**no**", None: "n/a"}
            L.append("| filtered study and series queries, worst median | %s ms | < 50 ms | %s |" % (
                fmt(q.get("filtered_worst_median_ms"), "%.1f"), yes[g.get("filtered_median_lt_50ms")]))
            L.append("| instances of one series (`/api/instances?series_id=`), median | %s ms | < 50 ms | %s |" % (
                fmt(q.get("instances_of_series_median_ms"), "%.1f"), yes[g.get("instances_of_series_median_lt_50ms")]))
            L.append("| count of %s instances (%s, through the API's `total`), median | %s ms | < 500 ms | %s |" % (
                "{:,}".format(cnt["matches"]) if cnt.get("matches") else "n/a", cnt.get("query"),
                fmt(cnt.get("median_ms"), "%.1f"), yes[g.get("count_100k_lt_500ms")]))
            L.append("")
            L.append("| query | median | p90 | max | matches | bytes |\n|---|---:|---:|---:|---:|---:|")
            for x in q["queries"]:
                if x.get("median_ms") is None:
                    L.append("| %s<br>`%s` | failed: HTTP %s (%s) | | | %s | |" % (
                        x["query"], x["path"], x.get("error_status"),
                        ((x.get("errors") or [{}])[0].get("body") or "")[:120].replace("|", "/"),
                        x.get("matches_from_pymongo", "")))
                    continue
                L.append("| %s<br>`%s` | %s ms | %s ms | %s ms | %s | %s |" % (
                    x["query"], x["path"], fmt(x["median_ms"], "%.1f"), fmt(x["p90_ms"], "%.1f"),
                    fmt(x["max_ms"], "%.1f"), x.get("matches"), x.get("response_bytes") or ""))
        elif lidc.get("queries_error"):
            L.append("")
            L.append("Queries: not measured (%s)" % lidc["queries_error"])
        L.append("")
    L.append("## Method\n")
    L.append(__doc__.split("\n\n", 1)[1].split("\n\nWrites")[0])
    L.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(L) + "\n")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--home", default=os.environ.get("METADB_HOME", os.path.expanduser("~/.metadb")))
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--lidc", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite OUT/report.md from OUT/report.json (and OUT/lidc.json)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-threads", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--orthanc-files", type=int, default=1000)
    ap.add_argument("--refshape-files", type=int, default=1000)
    ap.add_argument("--pydicom-files", type=int, default=0)
    ap.add_argument("--job-timeout", type=int, default=3600)
    ap.add_argument("--nice", type=int, default=0, help="run the daemons with nice -n N")
    ap.add_argument("--linker-flags", default=None,
                    help="extra flags of the pipeline's linker (default: none, the linker's defaults)")
    ap.add_argument("--skip", default="", help="comma-separated: extraction,ceiling,refshape,orthanc,e2e,stages")
    ap.add_argument("--brokers", default=os.environ.get("METADB_KAFKA_BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--mongo-uri", default=None,
                    help="read-write URI with credentials (default: $METADB_MONGO_URI, else the local stack's "
                         "$METADB_HOME/database/metadb.uri)")
    ap.add_argument("--api-mongo-uri", default=None,
                    help="read-only URI for metadb-api in --lidc's queries (default: $METADB_API_MONGO_URI, else "
                         "$METADB_HOME/database/metadb_ro.uri)")
    ap.add_argument("--query-rounds", type=int, default=30, help="--lidc: measured rounds of each query")
    args = ap.parse_args()
    args.mongo_uri = args.mongo_uri or bq.default_uri()
    args.api_mongo_uri = args.api_mongo_uri or bq.default_uri(read_only=True)
    if not args.mongo_uri and not args.render:
        sys.exit("bench: no database URI: export METADB_MONGO_URI=$(cat ~/.metadb/database/metadb.uri)")
    if args.quick:
        args.files, args.repeats = min(args.files, 50), 1
        args.orthanc_files = min(args.orthanc_files, 50)
        args.refshape_files = min(args.refshape_files, 50)
    if args.lidc and not args.nice:
        args.nice = 10  # a long run on a machine shared with other work
    if args.linker_flags is None:
        # the linker's defaults, at LIDC scale too (it counts incrementally, so
        # no batch reads a whole collection any more; until then LIDC needed
        # batches of 20000 and a poll interval above the longest flush)
        args.linker_flags = ""
    if args.lidc and args.job_timeout == 3600:
        args.job_timeout = 8 * 3600
    skip = set(x for x in args.skip.split(",") if x)
    os.makedirs(args.out, exist_ok=True)
    if args.render:
        return render(args.out)
    bench_home = os.path.join(args.home, "bench")
    os.makedirs(bench_home, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="mdb_bench_", dir="/tmp")
    started = time.time()
    try:
        if args.lidc:
            return run_lidc(args, bench_home, workdir)
        rep = {"generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "bench/run.sh " + " ".join(sys.argv[sys.argv.index("--build") + 2:]
                                                     if "--build" in sys.argv else sys.argv[1:]),
               "machine": machine(args)}
        archive = os.path.join(bench_home, "archive_full_%d" % args.files)
        manifest = ensure_archive(archive, args.files, small=False)
        root = os.path.realpath(archive)
        n = manifest["counts"]["instances"]
        rep["config"] = {"files": n, "studies": manifest["counts"]["studies"], "series": manifest["counts"]["series"],
                         "archive": archive, "repeats": args.repeats, "workers": args.workers,
                         "worker_threads": args.worker_threads, "partitions": args.partitions,
                         "orthanc_files": min(args.orthanc_files, n), "refshape_files": min(args.refshape_files, n),
                         "private_names": "t_bench_<what>_%d" % os.getpid(),
                         "linker_flags": args.linker_flags}
        lst = os.path.join(workdir, "files.txt")
        write_list(manifest, lst)
        f = rep["figures"] = {}
        if "extraction" not in skip:
            f["extraction"] = bench_extraction(args, archive, n)
        # The baselines and the pipeline are measured in turn within each
        # repeat, and each repeat gives its own ratios: load from other work
        # then hits a ratio's two sides alike. The figures are medians.
        per = {k: [] for k in ("ceiling_upsert", "ceiling_insert", "refshape", "orthanc", "e2e")}
        rr = []  # per-repeat ratios
        for r in range(args.repeats):
            log("repeat %d/%d" % (r + 1, args.repeats))
            got = {}
            if "ceiling" not in skip:
                got["ceiling_upsert"] = bench_dbload(args, "ceiling", lst, ["--mode", "upsert"])
                got["ceiling_insert"] = bench_dbload(args, "ceiling", lst, ["--mode", "insert"])
            if "refshape" not in skip:
                got["refshape"] = bench_dbload(args, "refshape", lst, ["--limit", str(min(args.refshape_files, n))])
            if "orthanc" not in skip:
                got["orthanc"] = bench_orthanc(args, lst, min(args.orthanc_files, n))
            if "e2e" not in skip:
                res = bench_e2e_once(args, manifest, root, workdir, "e2e%d" % r, r == 0)
                if not res["ok"]:
                    raise RuntimeError("e2e%d: the job did not link every instance: %s" % (
                        r, json.dumps(res, default=str)))
                got["e2e"] = res
            for k, v in got.items():
                per[k].append(v)
            rate = {k: v.get("instances_per_s") for k, v in got.items()}
            ceil_r = max([x for x in (rate.get("ceiling_upsert"), rate.get("ceiling_insert")) if x] or [None])
            rr.append({"e2e_vs_ceiling": rel(rate.get("e2e"), ceil_r),
                       "e2e_vs_ceiling_upsert": rel(rate.get("e2e"), rate.get("ceiling_upsert")),
                       "e2e_vs_orthanc": rel(rate.get("e2e"), rate.get("orthanc")),
                       "e2e_vs_refshape": rel(rate.get("e2e"), rate.get("refshape"))})
            log("repeat %d ratios: %s" % (r + 1, ", ".join("%s %s" % (k, fmt(v)) for k, v in rr[-1].items())))
        for k in ("ceiling_upsert", "ceiling_insert", "refshape", "orthanc"):
            if per[k]:
                f[k] = summarise_runs(per[k])
        if per["e2e"]:
            f["end_to_end"] = summarise_e2e(args, per["e2e"])
        if "stages" not in skip:
            f["scaling"], f["linker_backlog"] = bench_stages(args, manifest, root, workdir)
        e2e = (f.get("end_to_end") or {}).get("instances_per_s")
        ceil = max([x for x in ((f.get("ceiling_upsert") or {}).get("instances_per_s"),
                                (f.get("ceiling_insert") or {}).get("instances_per_s")) if x] or [None])
        if ceil is not None:
            f["ceiling"] = {"instances_per_s": ceil, "mode": "upsert" if ceil == f["ceiling_upsert"][
                "instances_per_s"] else "insert"}

        def med_ratio(key):
            return median([x[key] for x in rr if x.get(key) is not None])
        ex = f.get("extraction") or {}
        rep["ratios"] = {
            "extraction_vs_pydicom": ratio(ex.get("vs_pydicom"), ">=", 10,
                                           "extraction files/s per core vs pydicom"),
            "extraction_cost_vs_bare": ratio(ex.get("cost_vs_bare"), "<=", 3,
                                             "extraction cost per file / bare open+read(4 KiB)+close"),
            "e2e_vs_ceiling_upsert": ratio(med_ratio("e2e_vs_ceiling_upsert"), ">=", 0.7,
                                           "end-to-end instances/s / database ceiling as the issue defines it "
                                           "(bulk upserts of the same documents)"),
            "e2e_vs_ceiling": ratio(med_ratio("e2e_vs_ceiling"), ">=", 0.7,
                                    "end-to-end instances/s / database ceiling, stricter (faster of upsert and "
                                    "insert)"),
            "e2e_vs_orthanc": ratio(med_ratio("e2e_vs_orthanc"), ">=", 5,
                                    "end-to-end instances/s / Orthanc REST with 2 uploaders"),
            "e2e_vs_refshape": ratio(med_ratio("e2e_vs_refshape"), ">=", 20,
                                     "end-to-end instances/s / reference shape (insert per document)"),
            "round_trips_per_instance": ratio((f.get("end_to_end") or {}).get("round_trips_per_instance"), "<=",
                                              0.02, "database round trips per instance (end to end)"),
            "scaling_1_to_2_workers": ratio((f.get("scaling") or {}).get("speedup_1_to_2"), ">=", 1.5,
                                            "worker stage speed-up from 1 to 2 workers"),
        }
        rep["ratios_per_repeat"] = rr
        rep["at_end"] = {"loadavg": os.getloadavg(), "cpu_pressure": cpu_pressure()}
        rep["config"]["private_databases"] = PRIVATE_DBS
        rep["elapsed_seconds"] = time.time() - started
        with open(os.path.join(args.out, "report.json"), "w") as fh:
            json.dump(rep, fh, indent=2, default=str)
        lidc = None
        lp = os.path.join(args.out, "lidc.json")
        if os.path.exists(lp):
            with open(lp) as fh:
                lidc = json.load(fh)
        write_markdown(rep, os.path.join(args.out, "report.md"), lidc)
        log("wrote %s and %s (%.0f s)" % (os.path.join(args.out, "report.md"), os.path.join(args.out, "report.json"),
                                         time.time() - started))
        with open(os.path.join(args.out, "report.md")) as fh:
            print(fh.read())
        return 0
    finally:
        if not os.environ.get("MDB_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def render(out):
    with open(os.path.join(out, "report.json")) as fh:
        rep = json.load(fh)
    lidc = None
    if os.path.exists(os.path.join(out, "lidc.json")):
        with open(os.path.join(out, "lidc.json")) as fh:
            lidc = json.load(fh)
    write_markdown(rep, os.path.join(out, "report.md"), lidc)
    log("wrote %s" % os.path.join(out, "report.md"))
    return 0


def run_lidc(args, bench_home, workdir):
    archive = os.path.join(bench_home, "lidc")
    # LIDC-IDRI: 1,010 patients, 1,308 studies (1,018 CT scans and CR/DX), 244,527 images
    manifest = ensure_archive(archive, LIDC_INSTANCES, small=True, seed=1010, patients=LIDC_PATIENTS,
                              second_study=LIDC_SECOND_STUDY)
    c = manifest["counts"]
    log("LIDC-shaped archive: %d patients, %d studies, %d series, %d instances" % (
        c["patients"], c["studies"], c["series"], c["instances"]))
    if c["instances"] != LIDC_INSTANCES:
        raise RuntimeError("the archive has %d instances, not %d" % (c["instances"], LIDC_INSTANCES))
    lidc_machine = machine(args)  # (load and CPU pressure at the start)

    def queries(pipe, res):
        """The catalogue is complete: time the API's queries on it, answered
        by the database, before the private database is dropped."""
        if res["instances_in_db"] != LIDC_INSTANCES:
            res["queries_error"] = "the pipeline run did not end with %d instances" % LIDC_INSTANCES
            return
        if not os.path.exists(os.path.join(args.build, "api", "metadb-api")):
            res["queries_error"] = "no %s/api/metadb-api" % args.build
            return
        uri = args.api_mongo_uri
        if not uri:
            log("warning: no read-only URI; metadb-api uses the read-write one")
            uri = args.mongo_uri
        log("LIDC queries through metadb-api (read-only user), %d rounds each ..." % args.query_rounds)
        mem = DbMemory(args.home).start()
        try:
            q = bq.run(args.build, pipe.tag, uri, args.brokers, args.query_rounds, workdir, log=log,
                       mongo_db=pipe.db)
        except Exception as e:  # noqa: BLE001 - the pipeline's figures are kept
            res["queries_error"] = str(e)[-2000:]
            log("queries failed: %s" % e)
            return
        finally:
            m = mem.stop()
        q["database_memory"] = m
        q["read_only_user"] = uri != args.mongo_uri
        res["queries"] = q
        log("queries: worst filtered median %s ms, instances of a series %s ms, count %s; goals %s" % (
            fmt(q["filtered_worst_median_ms"], "%.1f"), fmt(q["instances_of_series_median_ms"], "%.1f"),
            q["count"] and "%s ms (%s matches)" % (fmt(q["count"]["median_ms"], "%.1f"), q["count"]["matches"]),
            q["goals"]))

    res = bench_e2e_once(args, manifest, os.path.realpath(archive), workdir, "lidc", False, after=queries)
    res.update({"generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "linker_flags": args.linker_flags,
                "patients": c["patients"], "studies": c["studies"], "series": c["series"],
                "workers": args.workers, "worker_threads": args.worker_threads, "machine": lidc_machine,
                "at_end": {"loadavg": os.getloadavg(), "cpu_pressure": cpu_pressure()}})
    with open(os.path.join(args.out, "lidc.json"), "w") as fh:
        json.dump(res, fh, indent=2, default=str)
    if os.path.exists(os.path.join(args.out, "report.json")):
        render(args.out)
    if res["instances_in_db"] != LIDC_INSTANCES:
        log("FAIL: the database holds %d instances, expected %d" % (res["instances_in_db"], LIDC_INSTANCES))
        return 1
    log("LIDC: the database holds exactly %d instances; %.1f s submit->completed = %.0f instances/s" % (
        res["instances_in_db"], res["job_seconds"], res["instances_per_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
