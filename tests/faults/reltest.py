"""reltest: helpers shared by the reliability tests (tests/integration/
test_hostile.py, test_badinput.py, tests/e2e/test_faults.py ...).

What it gives a test:
  - Checks: collects failures, prints "ok"/"FAIL" lines, exits non-zero at the end;
  - Stack: where Kafka and the database are (the shared stack by default, or an
    isolated one started with deploy/stack.sh under a private METADB_HOME and
    private ports, which a test may restart at will);
  - Names: private database, topics and consumer groups (t_<test>_<pid>);
  - Procs: every daemon a test starts, its log, stop (SIGTERM, exit status),
    kill -9, SIGSTOP/SIGCONT; everything still running is killed at exit, even
    when the test dies of an exception or a signal;
  - preflight, stop_checked, teardown: how a pipeline test starts (binaries
    built, stack reachable) and ends (exit codes, logs, database dropped);
  - bounded helpers: kcat produce/consume, `metadb lag --json` commit checks,
    a database ping with socket timeouts (a database that stops answering is
    reported, never waited on forever), wait_for.

Every blocking call has a timeout. Nothing here talks to a service the test
did not name."""

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pymongo

SRC = os.environ.get("MDB_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("MDB_BUILD_DIR") or os.path.join(SRC, "build")
BIN = {
    "producer": os.path.join(BUILD, "producer", "metadb-producer"),
    "worker": os.path.join(BUILD, "workers", "metadb-worker"),
    "linker": os.path.join(BUILD, "linker", "metadb-linker"),
    "api": os.path.join(BUILD, "api", "metadb-api"),
    "metadb": os.path.join(BUILD, "cli", "metadb"),
}
PY = "/usr/bin/python3"
GEN = os.path.join(SRC, "tests", "gen", "gen_archive.py")
GEN_BAD = os.path.join(SRC, "tests", "gen", "gen_badinput.py")
STACK_SH = os.path.join(SRC, "deploy", "stack.sh")
SANITIZED = os.environ.get("MDB_SANITIZE") == "1"


def linker_expected():
    """The linker is part of this checkout (committed sources; or, outside git,
    any sources): tests must then use it and fail when it is not built."""
    try:
        p = subprocess.run(["git", "-C", SRC, "ls-files", "linker/*.c"], capture_output=True, text=True, timeout=30)
        if p.returncode == 0:
            return bool(p.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    d = os.path.join(SRC, "linker")
    return os.path.isdir(d) and any(n.endswith(".c") for n in os.listdir(d))


def have(role):
    return os.access(BIN[role], os.X_OK)


def preflight(without_linker):
    """What a pipeline test needs before it starts: producer, worker and metadb
    built, the linker too when the checkout has it (without_linker: what goes
    untested when it has not), the shared stack's Kafka and database answering.
    Dies otherwise; returns (the shared Stack, whether the linker is built)."""
    for role in ("producer", "worker", "metadb"):
        if not have(role):
            die("%s not built at %s" % (role, BIN[role]))
    with_linker = have("linker")
    if not with_linker:
        if linker_expected():
            die("linker/ has sources but %s is not built" % BIN["linker"])
        note("NOTE: metadb-linker is not part of this checkout yet: " + without_linker)
    stack = Stack.shared()
    if not stack.kafka_ok():
        die("Kafka at %s is not reachable" % stack.brokers)
    if not stack.ping():
        die("database at %s is not reachable" % stack.mongo_uri)
    return stack, with_linker


# ------------------------------------------------------------------ checks
class Checks:
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
            print("FAIL %s%s" % (what, (": %s" % _short(detail)) if detail is not None else ""), flush=True)
        return bool(cond)

    def eq(self, got, want, what):
        return self.check(got == want, what, "got %r, want %r" % (got, want))

    def summary(self):
        print("%s: %d checks passed, %d failed" % (self.name, self.passed, len(self.failures)), flush=True)
        for f in self.failures:
            print("  failed: %s" % f, flush=True)
        return 1 if self.failures else 0


def _short(v, n=800):
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) < n else s[:n] + "..."


def note(msg):
    print("# " + msg, flush=True)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(fn, timeout, interval=0.5):
    """Poll fn() until truthy or timeout seconds pass; returns its last value."""
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= end:
            return v
        time.sleep(interval)


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


# ------------------------------------------------------------------ stack
class Stack:
    """Kafka + database endpoints. Stack.shared() is the live local stack (never
    restarted by a test); Stack.isolated(...) starts a private one through
    deploy/stack.sh which the test owns and may stop/start/restart."""

    def __init__(self, brokers, mongo_uri, home=None, env=None):
        self.brokers = brokers
        self._mongo_uri = mongo_uri
        self.home = home
        self.env = env or {}

    @property
    def mongo_uri(self):
        """The read-write user's URI: an isolated stack's own DocumentDB writes it
        (with its generated password) when it starts."""
        if self.home:
            f = os.path.join(self.home, "database", "metadb.uri")
            if os.path.exists(f):
                return open(f).read().strip()
        return self._mongo_uri

    @classmethod
    def shared(cls):
        return cls(os.environ.get("MDB_TEST_BROKERS", "127.0.0.1:9092"),
                   os.environ.get("MDB_TEST_MONGO_URI") or os.environ.get("METADB_MONGO_URI", "mongodb://127.0.0.1:27017"))

    @classmethod
    def isolated(cls, partitions=3):
        home = tempfile.mkdtemp(prefix="mdb-rel-stack.", dir="/tmp")
        kp, cp, sp, mp, pgp = free_ports(5)
        cache = os.environ.get("METADB_DEPLOY_CACHE") or os.path.join(
            os.environ.get("METADB_HOME") or os.path.expanduser("~/.metadb"), "cache")
        env = {"METADB_HOME": home, "METADB_DEPLOY_CACHE": cache, "METADB_KAFKA_PORT": str(kp),
               "METADB_KAFKA_CONTROLLER_PORT": str(cp), "METADB_DEPLOY_SASL_PORT": str(sp),
               "METADB_MONGO_PORT": str(mp), "METADB_PG_PORT": str(pgp), "METADB_DEPLOY_TIMEOUT": "150",
               "METADB_TOPIC_PARTITIONS": str(partitions), "METADB_DEPLOY_KAFKA_HEAP": "384m"}
        st = cls("127.0.0.1:%d" % kp, "mongodb://127.0.0.1:%d" % mp, home, env)
        _ISOLATED.append(st)
        return st

    def stack_cmd(self, *args, timeout=300):
        """Run deploy/stack.sh ARGS on the isolated stack; (rc, output)."""
        assert self.home, "stack.sh is only run on an isolated stack"
        env = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
        env.update(self.env)
        try:
            p = subprocess.run(["bash", STACK_SH] + list(args), capture_output=True, text=True, timeout=timeout,
                               env=env)
            return p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            return 124, "deploy/stack.sh %s timed out after %ds: %s" % (" ".join(args), timeout, e.output)

    def pidfile(self, what):
        names = ["kafka.pid"] if what == "kafka" else ["gateway.pid", "mongod.pid"]
        for n in names:
            p = os.path.join(self.home, n)
            if os.path.exists(p):
                return p
        return None

    def pid(self, what):
        f = self.pidfile(what)
        try:
            return int(open(f).read().strip()) if f else None
        except (OSError, ValueError):
            return None

    def destroy(self):
        if not self.home:
            return
        self.stack_cmd("stop", timeout=180)
        shutil.rmtree(self.home, ignore_errors=True)
        self.home = None

    def mongo(self, timeout_ms=10000):
        return pymongo.MongoClient(self.mongo_uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                                   socketTimeoutMS=max(timeout_ms, 20000))

    def ping(self, timeout_s=15):
        """A bounded database ping in a child process (a wedged server cannot hang us)."""
        code = ("import pymongo,sys\nc=pymongo.MongoClient(sys.argv[1],serverSelectionTimeoutMS=3000,"
                "connectTimeoutMS=3000,socketTimeoutMS=5000)\nc.admin.command('ping')\n")
        try:
            return subprocess.run([PY, "-c", code, self.mongo_uri], capture_output=True,
                                  timeout=timeout_s).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def kafka_ok(self):
        try:
            return subprocess.run(["kcat", "-L", "-b", self.brokers, "-m", "5"], capture_output=True,
                                  timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False


_ISOLATED = []


# ------------------------------------------------------------------ names
class Names:
    """Private names of one test (or one run of a test): database, topics, groups."""

    def __init__(self, tag, stack, roots, features_dir=None, partitions=3):
        self.tag = tag
        self.stack = stack
        self.db = tag
        self.roots = roots
        self.features_dir = features_dir or os.path.join(SRC, "conf")
        self.partitions = partitions
        self.topics = {k: "%s.%s" % (tag, k) for k in ("jobs", "files", "instances", "dlq")}
        self.groups = {r: "%s.%ss" % (tag, r) for r in ("producer", "worker", "linker")}

    def flags(self, extra=()):
        f = ["--kafka.brokers=" + self.stack.brokers, "--mongo.uri=" + self.stack.mongo_uri,
             "--mongo.db=" + self.db, "--archive.roots=" + ",".join(self.roots),
             "--features.dir=" + self.features_dir, "--topic.partitions=%d" % self.partitions,
             "--log.level=info"]
        f += ["--topic.%s=%s" % (k, v) for k, v in self.topics.items()]
        f += ["--%s.group=%s" % (r, g) for r, g in self.groups.items()]
        return f + list(extra)

    def daemon_flags(self, role, port=0, extra=()):
        f = self.flags()
        if role in ("producer", "worker", "linker"):
            f.append("--%s.metrics_port=%d" % (role, port))
        return f + list(extra)


def clean_env(extra=None):
    """The environment for metadb binaries: no inherited METADB_* (flags say everything)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
    if extra:
        e.update(extra)
    return e


def metadb(names, *args, timeout=120, check=True, extra_flags=(), input=None, env=None):
    cmd = [BIN["metadb"]] + names.flags(extra_flags) + list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or clean_env(), input=input)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("metadb %s timed out after %ds" % (" ".join(args), timeout)) from e
    if check and p.returncode != 0:
        raise RuntimeError("metadb %s failed (%d):\nstdout: %s\nstderr: %s" % (
            " ".join(args), p.returncode, _short(p.stdout, 3000), _short(p.stderr, 3000)))
    return p


# ------------------------------------------------------------------ processes
class Proc:
    """A daemon started in its own session (process group). With a wrapper
    (strace, setpriv ...) signals go to the real daemon, the wrapper's child."""

    def __init__(self, role, cmd, log_path, env, port, wrapped=False):
        self.role = role
        self.wrapped = wrapped
        self.cmd = cmd
        self.log_path = log_path
        self.port = port
        self.log = open(log_path, "ab")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.p.pid
        self.stopped_rc = None

    def alive(self):
        return self.p.poll() is None

    def daemon_pid(self):
        """The daemon's pid: the wrapper's (first) child when wrapped, else ours."""
        if not self.wrapped:
            return self.pid
        end = time.time() + 10
        while self.alive() and time.time() < end:
            try:
                with open("/proc/%d/task/%d/children" % (self.pid, self.pid)) as f:
                    kids = [int(x) for x in f.read().split()]
                if kids:
                    return kids[0]
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def signal(self, sig):
        if self.alive():
            os.kill(self.daemon_pid() or self.pid, sig)

    def kill9(self):
        """kill -9 the daemon (a wrapper then exits on its own); the group too after 30 s."""
        if self.alive():
            os.kill(self.daemon_pid() or self.pid, signal.SIGKILL)
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.killpg()
        self.log.close()

    def killpg(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout=60):
        """SIGTERM the daemon and wait; returns its exit status (or 'timeout' after SIGKILL of its group)."""
        if self.alive():
            target = self.daemon_pid() or self.pid
            os.kill(target, signal.SIGCONT)
            os.kill(target, signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.killpg()
            rc = "timeout"
        self.log.close()
        self.stopped_rc = rc
        return rc

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def metric(self, name):
        """Sum of a Prometheus metric's samples, or None when unreadable."""
        import urllib.request
        if not self.port:
            return None
        try:
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=3).read().decode()
        except Exception:  # noqa: BLE001 - any failure means "not readable now"
            return None
        total, found = 0.0, False
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                rest = line[len(name):]
                if rest[:1] in (" ", "{"):
                    total += float(line.rsplit(" ", 1)[1])
                    found = True
        return total if found else None


class Procs:
    """All daemons of a test. kill_all() runs at exit and on SIGTERM/SIGINT."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.all = []
        self.seq = 0
        _PROCS.append(self)

    def start(self, role, names, extra=(), wrapper=(), env=None, metrics=True):
        self.seq += 1
        port = free_ports(1)[0] if metrics and role in ("producer", "worker", "linker") else 0
        cmd = list(wrapper) + [BIN[role]] + names.daemon_flags(role, port, extra)
        log = os.path.join(self.logdir, "%s-%d.log" % (role, self.seq))
        p = Proc(role, cmd, log, env or clean_env(), port, wrapped=bool(wrapper))
        self.all.append(p)
        return p

    def running(self, role=None):
        return [p for p in self.all if p.alive() and (role is None or p.role == role)]

    def stop_all(self, timeout=60):
        """SIGTERM every running daemon (producer, workers, linkers, api order); returns {pid: rc}."""
        out = {}
        for role in ("producer", "worker", "linker", "api"):
            for p in self.running(role):
                out[p.pid] = (p.role, p.stop(timeout))
        return out

    def kill_all(self):
        """SIGKILL every daemon's process group (also when a wrapper already
        exited and left its child behind)."""
        for p in self.all:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.p.wait(timeout=10)
            except Exception:  # noqa: BLE001
                pass

    def dump_logs(self, tail=4000):
        for p in self.all:
            print("---- %s (%s, pid %d) tail ----" % (os.path.basename(p.log_path), p.role, p.pid))
            print(p.log_text()[-tail:])


_PROCS = []


def _cleanup():
    for ps in _PROCS:
        ps.kill_all()
    for st in list(_ISOLATED):
        try:
            st.destroy()
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            print("warning: isolated stack cleanup: %s" % e)


atexit.register(_cleanup)


def _on_signal(sig, _frame):
    _cleanup()
    os._exit(128 + sig)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


def stop_checked(c, procs):
    """SIGTERM to every daemon still running: each must exit 0."""
    for pid, (role, rc) in procs.stop_all().items():
        c.eq(rc, 0, "%s (pid %d) exits 0 on SIGTERM" % (role, pid))


def teardown(c, procs, mc, db_name):
    """The end of a pipeline test, also after an exception: the daemons' logs
    when anything failed, every daemon killed, the test's database dropped
    (a failure to drop is only a warning)."""
    if c.failures:
        procs.dump_logs()
    procs.kill_all()
    try:
        mc.drop_database(db_name)
    except Exception as e:  # noqa: BLE001
        print("warning: drop %s: %s" % (db_name, e))


# ------------------------------------------------------------------ kafka
def kcat_produce(brokers, topic, records, big=False, partition=None):
    """records: [(key, value)] as bytes/str; no tab/newline inside (JSON from json.dumps has none)."""
    data = b""
    for k, v in records:
        k = k.encode() if isinstance(k, str) else k
        v = v.encode() if isinstance(v, str) else v
        assert b"\n" not in k + v and b"\t" not in k, "kcat records must be single lines"
        data += k + b"\t" + v + b"\n"
    cmd = ["kcat", "-P", "-b", brokers, "-t", topic, "-K", "\t"]
    if partition is not None:
        cmd += ["-p", str(partition)]
    if big:
        cmd += ["-X", "message.max.bytes=20000000"]
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("kcat produce to %s: %s" % (topic, p.stderr.decode()[-2000:]))


def kcat_consume(brokers, topic, timeout=120):
    """[(partition, offset, key, value-str)] of every message of topic, start to end."""
    p = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q",
                        "-X", "fetch.message.max.bytes=20000000",
                        "-f", "%p\t%o\t%k\t%s\n"], capture_output=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("kcat consume %s: %s" % (topic, p.stderr.decode()[-2000:]))
    out = []
    for line in p.stdout.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        part, off, k, v = line.split("\t", 3)
        out.append((int(part), int(off), k, v))
    return out


def kcat_json(brokers, topic):
    out = []
    for _p, _o, k, v in kcat_consume(brokers, topic):
        try:
            out.append((k, json.loads(v)))
        except ValueError:
            out.append((k, None))
    return out


def topic_config(brokers, partitions, configs, topics, timeout=240):
    """Create/alter topics with topic-level configs (one JVM, tests/faults/TopicConfig.java)."""
    cache = os.environ.get("METADB_DEPLOY_CACHE") or os.path.join(
        os.environ.get("METADB_HOME") or os.path.expanduser("~/.metadb"), "cache")
    libs = os.path.join(cache, "kafka-libs")
    cmd = ["java", "-Xmx256m", "-cp", libs + "/*", os.path.join(SRC, "tests", "faults", "TopicConfig.java"),
           brokers, str(partitions), ",".join("%s=%s" % kv for kv in configs.items())] + list(topics)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("TopicConfig failed: %s" % (p.stdout + p.stderr)[-3000:])


def lag(names, group, timeout=60):
    """`metadb lag --json --group G` parsed: {topic: {partition: (committed, high)}}."""
    p = metadb(names, "lag", "--json", "--group", group, timeout=timeout, check=False)
    if p.returncode != 0:
        return None
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        return None
    out = {}
    for g in doc.get("groups", []):
        if g.get("group") != group:
            continue
        out[g.get("topic")] = {pt["partition"]: (pt.get("committed"), pt.get("high_watermark"))
                               for pt in g.get("partitions", [])}
    return out


def fully_committed(names, group, topic):
    """True when group's committed offset equals the high watermark on every partition of topic."""
    lg = lag(names, group)
    if not lg or topic not in lg:
        return False
    return all((c is not None and c == h) or (c is None and not h) for c, h in lg[topic].values())


# ------------------------------------------------------------------ archive
def generate_archive(out, patients, seed, extra=(), small=True):
    """tests/gen/gen_archive.py into out (one job; small images unless small is
    false); returns its manifest."""
    cmd = [PY, GEN, "--out", out, "--patients", str(patients), "--seed", str(seed), "--jobs", "1"]
    cmd += ["--small"] if small else []
    subprocess.run(cmd + list(extra), check=True, capture_output=True, text=True, timeout=600)
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def die(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)
