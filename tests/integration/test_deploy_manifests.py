#!/usr/bin/env python3
"""tests/integration/test_deploy_manifests.py — the deployment files are valid and
carry what README/DESIGN promise:

- `docker compose config` accepts docker-compose.yml (the compose v2 plugin must be
  installed: deploy/install.sh does it); the services, the scalable worker (no
  container_name, no published ports), the read-only archive, KRaft Kafka, the
  MongoDB replica set and its init, Prometheus and Grafana with provisioning;
- deploy/Dockerfile is multi-stage (build with -dev packages, runtime without);
- every deploy/k8s manifest parses and carries the documented fields: Deployments
  for producer/worker/linker/api with resources.requests on every container and
  secretKeyRef for the Mongo URI and the Kafka SASL credentials, a Service for the
  API, a KEDA ScaledObject (trigger type kafka, consumerGroup metadb-workers,
  lagThreshold) aimed at the worker Deployment;
- every METADB_* variable set by compose or the ConfigMap is a configuration key of
  common/mdb_config_keys.def (or a METADB_KAFKA_* librdkafka pass-through): a typo
  would stop the daemons at start-up;
- Prometheus configs scrape every daemon on its default metrics port, the Grafana
  dashboard parses and covers throughput, lag and errors, deploy/burrow.toml parses.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import yaml

SRC = os.environ.get("MDB_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(SRC, "deploy")
K8S = os.path.join(DEPLOY, "k8s")

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print("ok   - " + what)
    else:
        failed += 1
        print("FAIL - " + what)
    return cond


# ---------------------------------------------------------------- config schema
def schema():
    keys = {}
    with open(os.path.join(SRC, "common", "mdb_config_keys.def"), encoding="utf-8") as f:
        for m in re.finditer(r'MDB_CONFIG_KEY\("([^"]+)",\s*(\w+),\s*"([^"]*)"', f.read()):
            keys[m.group(1)] = (m.group(2), m.group(3))
    return keys


KEYS = schema()
ENV_OF = {"METADB_" + k.upper().replace(".", "_"): k for k in KEYS}


def env_ok(name):
    return name in ENV_OF or (name.startswith("METADB_KAFKA_") and len(name) > len("METADB_KAFKA_"))


def default_port(key):
    return int(KEYS[key][1])


check(len(KEYS) > 20, "mdb_config_keys.def parsed (%d keys)" % len(KEYS))
API_PORT = int(KEYS["api.listen"][1].rsplit(":", 1)[1])
PORTS = {
    "worker": default_port("worker.metrics_port"),
    "linker": default_port("linker.metrics_port"),
    "producer": default_port("producer.metrics_port"),
    "fetcher": default_port("fetcher.metrics_port"),
    "api": API_PORT,
}

# ---------------------------------------------------------------- docker compose
docker = shutil.which("docker")
compose = None
if check(docker is not None, "docker CLI on PATH"):
    p = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    check(p.returncode == 0, "docker compose v2 plugin installed (%s)" % (p.stdout.strip() or p.stderr.strip()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("METADB_")}
    p = subprocess.run([docker, "compose", "-f", os.path.join(SRC, "docker-compose.yml"), "--profile", "pacs", "config",
                        "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=SRC, env=env)
    if check(p.returncode == 0, "docker compose config succeeds"):
        compose = json.loads(p.stdout)
    else:
        print(p.stderr)

if compose:
    svcs = compose.get("services", {})
    for s in ["kafka", "kafka-init", "mongo", "mongo-init", "mongo-express", "producer", "worker", "linker", "api",
              "fetcher", "prometheus", "grafana"]:
        check(s in svcs, "compose service %s" % s)
    kafka = svcs.get("kafka", {})
    check(kafka.get("image", "").startswith("apache/kafka:"), "kafka uses the apache/kafka image")
    check("controller" in str(kafka.get("environment", {}).get("KAFKA_PROCESS_ROLES", "")), "kafka runs in KRaft mode")
    check("--replSet" in (svcs.get("mongo", {}).get("command") or []), "mongo runs as a replica set")
    init_cmd = " ".join(svcs.get("mongo-init", {}).get("command") or []) + " ".join(
        svcs.get("mongo-init", {}).get("entrypoint") or [])
    check("rs.initiate" in init_cmd, "mongo-init initiates the replica set")
    topics_cmd = " ".join(svcs.get("kafka-init", {}).get("command") or [])
    check(all(t in topics_cmd for t in ["metadb.jobs", "metadb.files", "metadb.instances", "metadb.dlq",
                                        "metadb.retrieve"]), "kafka-init creates the five topics")
    w = svcs.get("worker", {})
    check("container_name" not in w and not w.get("ports"), "worker is scalable (no container_name, no published ports)")
    for s in ["producer", "worker", "linker", "api", "fetcher"]:
        sv = svcs.get(s, {})
        env = sv.get("environment", {}) or {}
        cmd = sv.get("command") or []
        check(cmd and cmd[0] == "metadb-" + s, "%s runs metadb-%s" % (s, s))
        check(env.get("METADB_KAFKA_BROKERS") == "kafka:9092", "%s points at the compose Kafka" % s)
        check("replicaSet=rs0" in env.get("METADB_MONGO_URI", ""), "%s points at the replica set" % s)
        bad = [k for k in env if k.startswith("METADB_") and not env_ok(k)]
        check(not bad, "%s sets only known METADB_* keys %s" % (s, bad or ""))
        check(env.get("METADB_METRICS_BIND") == "0.0.0.0", "%s serves metrics beyond loopback" % s)
    for s in ["producer", "worker"]:
        vols = svcs.get(s, {}).get("volumes") or []
        check(any(v.get("target") == "/archive" and v.get("read_only") for v in vols), "%s mounts the archive read-only" % s)
    # The fetcher lands files in a volume the workers read (read-only) and that is an archive root of both.
    fvols = svcs.get("fetcher", {}).get("volumes") or []
    froot = (svcs.get("fetcher", {}).get("environment") or {}).get("METADB_FETCHER_ROOT", "")
    check(froot and any(v.get("target") == froot and not v.get("read_only") for v in fvols),
          "fetcher writes its landing volume (%s)" % froot)
    wvols = svcs.get("worker", {}).get("volumes") or []
    check(any(v.get("target") == froot and v.get("read_only") and v.get("source") ==
              next((f.get("source") for f in fvols if f.get("target") == froot), None) for v in wvols),
          "workers read the fetcher's landing volume read-only")
    for s in ["worker", "fetcher"]:
        roots = ((svcs.get(s, {}).get("environment") or {}).get("METADB_ARCHIVE_ROOTS") or "").split(",")
        check(froot in roots, "%s has the landing folder among archive.roots" % s)
    check(str(svcs.get("worker", {}).get("environment", {}).get("METADB_WORKER_METRICS_PORT")) == str(PORTS["worker"]),
          "worker metrics port matches the schema default")
    check(svcs.get("api", {}).get("environment", {}).get("METADB_API_LISTEN") == "0.0.0.0:%d" % API_PORT,
          "api listens on all interfaces inside its container")
    build = svcs.get("worker", {}).get("build", {})
    check(build.get("dockerfile") == "deploy/Dockerfile", "daemons are built from deploy/Dockerfile")
    # Every host file a service mounts exists in the repository.
    for s, sv in svcs.items():
        for v in sv.get("volumes") or []:
            if v.get("type") == "bind" and v.get("target") != "/archive":
                check(os.path.exists(v["source"]), "%s: mounted %s exists" % (s, os.path.relpath(v["source"], SRC)))

# ---------------------------------------------------------------- Dockerfile
with open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8") as f:
    dockerfile = f.read()
stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I)
check(len(stages) >= 2, "Dockerfile is multi-stage (%d stages)" % len(stages))
parts = re.split(r"^FROM\s", dockerfile, flags=re.M)[1:]
if len(parts) >= 2:
    check(all(p in parts[0] for p in ["librdkafka-dev", "libmongoc-dev", "libgdcm-dev", "libjansson-dev", "uuid-dev"]),
          "build stage installs the -dev packages")
    check("-dev" not in re.sub(r"#.*", "", parts[-1]), "runtime stage installs no -dev package")
    check(all(b in parts[-1] or "/out/bin" in parts[-1] for b in ["--from=build"]), "runtime stage copies from the build stage")
    for b in ["metadb-producer", "metadb-worker", "metadb-linker", "metadb-api"]:
        check(b in parts[0], "build stage builds %s" % b)
    check(os.path.exists(os.path.join(DEPLOY, "Dockerfile.dockerignore")), "build context filter exists")

# ---------------------------------------------------------------- Kubernetes
docs = []
files = sorted(f for f in os.listdir(K8S) if f.endswith((".yaml", ".yml")))
check(len(files) >= 6, "deploy/k8s has manifests (%d files)" % len(files))
for f in files:
    try:
        with open(os.path.join(K8S, f), encoding="utf-8") as fh:
            loaded = [d for d in yaml.safe_load_all(fh) if d is not None]
        ok = all(isinstance(d, dict) and d.get("apiVersion") and d.get("kind") for d in loaded) and loaded
        check(ok, "%s parses (%d documents)" % (f, len(loaded)))
        docs += [(f, d) for d in loaded]
    except yaml.YAMLError as e:
        check(False, "%s parses: %s" % (f, e))


def by_kind(kind):
    return [d for _, d in docs if d.get("kind") == kind]


for _, d in docs:
    if d["kind"] not in ("Kustomization", "Namespace"):
        check(d.get("metadata", {}).get("namespace") == "metadb",
              "%s/%s lives in namespace metadb" % (d["kind"], d["metadata"].get("name")))
check(any(d["metadata"]["name"] == "metadb" for d in by_kind("Namespace")), "Namespace metadb")

cms = {d["metadata"]["name"]: d for d in by_kind("ConfigMap")}
cm = cms.get("metadb-config", {}).get("data", {})
check(bool(cm), "ConfigMap metadb-config")
bad = [k for k in cm if not env_ok(k)]
check(not bad, "ConfigMap sets only known METADB_* keys %s" % (bad or ""))
check(not any(re.search(r"PASSWORD|TOKEN", k) for k in cm) and "@" not in cm.get("METADB_MONGO_URI", ""),
      "ConfigMap holds no secrets")
check(cm.get("METADB_METRICS_BIND") == "0.0.0.0", "ConfigMap lets Prometheus reach the metrics endpoints")
# the producer/consumer properties the cluster suite (tests/e2e/test_cluster.sh) relies on
check(cm.get("METADB_KAFKA_ENABLE_IDEMPOTENCE") == "true" and cm.get("METADB_KAFKA_ACKS") in ("all", "-1"),
      "ConfigMap keeps the producers idempotent with acks=all")
check(int(cm.get("METADB_KAFKA_SESSION_TIMEOUT_MS", "0")) >= 6000 and
      int(cm.get("METADB_KAFKA_MESSAGE_TIMEOUT_MS", "0")) >= 60000,
      "ConfigMap sets the consumer session timeout and the producer message timeout")
mdb_kafka = open(os.path.join(SRC, "common", "mdb_kafka.c"), encoding="utf-8").read()
check('"enable.idempotence", "true"' in mdb_kafka and not re.search(r'"acks"\s*,\s*"(0|1)"', mdb_kafka),
      "common/mdb_kafka.c makes every producer idempotent (acks=all)")

deps = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
for name in ["producer", "worker", "linker", "api", "fetcher"]:
    dep = deps.get("metadb-" + name)
    if not check(dep is not None, "Deployment metadb-%s" % name):
        continue
    spec = dep["spec"]["template"]["spec"]
    sel = dep["spec"]["selector"]["matchLabels"]
    check(all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items()),
          "metadb-%s selector matches its pod labels" % name)
    for c in spec["containers"]:
        req = (c.get("resources") or {}).get("requests") or {}
        check("cpu" in req and "memory" in req, "metadb-%s/%s has resources.requests cpu+memory" % (name, c["name"]))
        mem = str(req.get("memory", ""))
        check(re.fullmatch(r"[0-9]+(Mi|Gi)", mem) is not None, "metadb-%s memory request is a real size (%s)" % (name, mem))
        check(c.get("command", [""])[0] == "metadb-" + name, "metadb-%s runs metadb-%s" % (name, name))
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
        check("METADB_MONGO_URI" in refs, "metadb-%s takes the Mongo URI from a secretKeyRef" % name)
        check("METADB_KAFKA_SASL_PASSWORD" in refs, "metadb-%s takes the Kafka SASL password from a secretKeyRef" % name)
        check(all(r.get("name") and r.get("key") for r in refs.values()), "metadb-%s secretKeyRefs name a secret and key" % name)
        envs = [e["name"] for e in c.get("env", [])]
        bad = [k for k in envs if k.startswith("METADB_") and not env_ok(k)]
        check(not bad, "metadb-%s sets only known METADB_* keys %s" % (name, bad or ""))
        ports = [p["containerPort"] for p in c.get("ports", [])]
        check(PORTS[name] in ports, "metadb-%s exposes port %d" % (name, PORTS[name]))
        check(c.get("envFrom", [{}])[0].get("configMapRef", {}).get("name") == "metadb-config",
              "metadb-%s reads ConfigMap metadb-config" % name)
    if name in ("producer", "worker"):
        mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])]
        check(any(m["mountPath"] == "/archive" and m.get("readOnly") for m in mounts),
              "metadb-%s mounts the archive read-only" % name)
check("replicas" not in deps.get("metadb-worker", {}).get("spec", {}), "worker replica count is left to KEDA")

svcs = {d["metadata"]["name"]: d for d in by_kind("Service")}
api_svc = svcs.get("metadb-api")
if check(api_svc is not None, "Service metadb-api"):
    api_labels = deps.get("metadb-api", {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    check(all(api_labels.get(k) == v for k, v in api_svc["spec"]["selector"].items()), "Service selects the API pods")

sos = by_kind("ScaledObject")
if check(len(sos) == 1, "one KEDA ScaledObject"):
    so = sos[0]
    check(so["apiVersion"].startswith("keda.sh/"), "ScaledObject apiVersion keda.sh")
    check(so["spec"]["scaleTargetRef"]["name"] == "metadb-worker", "ScaledObject scales metadb-worker")
    trig = so["spec"]["triggers"]
    kt = [t for t in trig if t.get("type") == "kafka"]
    if check(len(kt) == 1, "ScaledObject trigger type kafka"):
        md = kt[0]["metadata"]
        check(md.get("consumerGroup") == KEYS["worker.group"][1] == "metadb-workers", "trigger consumerGroup metadb-workers")
        check(str(md.get("lagThreshold", "")).isdigit() and int(md["lagThreshold"]) > 0, "trigger lagThreshold set")
        check(md.get("topic") == KEYS["topic.files"][1], "trigger watches the files topic")
        auth = kt[0].get("authenticationRef", {}).get("name")
        tas = {d["metadata"]["name"]: d for d in by_kind("TriggerAuthentication")}
        check(auth in tas, "trigger authentication %s exists" % auth)
        if auth in tas:
            check(all(r.get("name") and r.get("key") for r in tas[auth]["spec"]["secretTargetRef"]),
                  "TriggerAuthentication reads the Secret")
    parts_cm = int(cm.get("METADB_TOPIC_PARTITIONS", "0") or 0)
    check(0 < so["spec"]["maxReplicaCount"] <= parts_cm, "maxReplicaCount (%s) <= partitions (%s)"
          % (so["spec"]["maxReplicaCount"], parts_cm))

kust = os.path.join(K8S, "kustomization.yaml")
if check(os.path.exists(kust), "kustomization.yaml"):
    with open(kust, encoding="utf-8") as f:
        res = yaml.safe_load(f).get("resources", [])
    want = [f for f in files if f != "kustomization.yaml"]
    check(sorted(res) == sorted(want), "kustomization lists every manifest")

# ---------------------------------------------------------------- Prometheus, Grafana, Burrow
promtool = shutil.which("promtool")
for rel, style in [("deploy/prometheus.yml", "static"), ("deploy/compose/prometheus.yml", "compose")]:
    path = os.path.join(SRC, rel)
    with open(path, encoding="utf-8") as f:
        prom = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs", [])}
    for d, port in PORTS.items():
        j = jobs.get("metadb-" + d, {})
        targets = [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
        dns_ports = [sd.get("port") for sd in j.get("dns_sd_configs", [])]
        check(any(t.endswith(":%d" % port) for t in targets) or port in dns_ports,
              "%s scrapes metadb-%s on port %d" % (rel, d, port))
    if promtool:
        p = subprocess.run([promtool, "check", "config", "--syntax-only", path], capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, "promtool accepts %s" % rel)

with open(os.path.join(DEPLOY, "grafana", "dashboards", "metadb.json"), encoding="utf-8") as f:
    dash = json.load(f)
titles = " ".join(p.get("title", "") for p in dash["panels"]).lower()
for word in ["throughput", "lag", "failures"]:
    check(word in titles, "dashboard has a %s panel" % word)
exprs = [t.get("expr", "") for p in dash["panels"] for t in p.get("targets", [])]
check(exprs and all(exprs), "every dashboard query has an expression (%d)" % len(exprs))
check(any("metadb_consumer_lag" in e for e in exprs), "dashboard draws metadb_consumer_lag")
with open(os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yml"), encoding="utf-8") as f:
    ds_uid = yaml.safe_load(f)["datasources"][0]["uid"]
check(all(p.get("datasource", {}).get("uid") == ds_uid for p in dash["panels"] if p["type"] != "row"),
      "dashboard panels use the provisioned datasource")

with open(os.path.join(DEPLOY, "burrow.toml"), "rb") as f:
    burrow = tomllib.load(f)
check("local" in burrow.get("cluster", {}) and "127.0.0.1:9092" in burrow["cluster"]["local"]["servers"],
      "burrow.toml watches the local broker")
check(re.search(burrow["consumer"]["local"]["group-whitelist"], KEYS["worker.group"][1]) is not None,
      "burrow.toml evaluates metadb-workers")

# ---------------------------------------------------------------- README
p = subprocess.run(["/usr/bin/python3", os.path.join(DEPLOY, "tools", "config_table.py"), "--check"],
                   capture_output=True, text=True, timeout=60)
check(p.returncode == 0, "README configuration table matches mdb_config_keys.def %s" % p.stdout.strip())
with open(os.path.join(SRC, "README.md"), encoding="utf-8") as f:
    readme = f.read()
qs = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, re.S)
check(qs is not None and qs.group(1).split("\n")[:2] == ["deploy/quickstart.sh", "tests/run.sh"]
      and len(qs.group(1).strip().split("\n")) == 2, "README quick start is exactly the two commands")
for path in ["deploy/quickstart.sh", "tests/run.sh", "deploy/stack.sh", "deploy/install.sh", ".ci/run"]:
    check(os.access(os.path.join(SRC, path), os.X_OK), "%s exists and is executable" % path)
with open(os.path.join(SRC, ".ci", "run"), encoding="utf-8") as f:
    ci = [l for l in f.read().splitlines() if l.strip() and not l.lstrip().startswith("#")]
check(len(ci) == 1 and "tests/run.sh" in ci[0], ".ci/run calls tests/run.sh and nothing else")

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
