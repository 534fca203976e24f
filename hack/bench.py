#!/usr/bin/env python3
"""converge side by side with kubectl on the same control plane, in one run.

Run through hack/bench.sh, which starts the plane and builds the binaries. Every
scenario is repeated and reported as median and spread (min-max); what matters on a
shared 2-core machine is the ratio between the tools, not absolute seconds.

Writes target/bench/summary.json and prints a markdown table.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# CONVERGE_BENCH_BIN: another build to measure (e.g. a debug one, for a smoke run).
CONVERGE = Path(os.environ.get("CONVERGE_BENCH_BIN", ROOT / "target/release/converge"))
RAW = ROOT / "target/release/examples/raw_apply"
CORPUS = ROOT / "tests/fixtures/microservices-demo/kubernetes-manifests.yaml"
NAMESPACES = 4


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(cmd, env=None, check=True, quiet=True):
    """Runs a command; returns (seconds, CompletedProcess)."""
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    took = time.monotonic() - started
    if check and proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr}")
    return took, proc


def kubectl(*args, check=True):
    return run(["kubectl", *args], check=check)[1].stdout


# --- the synthetic set ---------------------------------------------------------

def configmap(name, ns, value="1"):
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"  labels: {{app: {name}, tier: bench}}\ndata:\n  value: \"{value}\"\n"
            f"  settings.yaml: |\n    replicas: 3\n    feature: {name}\n")


def secret(name, ns):
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"type: Opaque\nstringData:\n  password: {name}-secret\n")


def service(name, ns):
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"spec:\n  selector: {{app: {name}}}\n  ports:\n  - name: http\n    port: 80\n"
            f"    targetPort: http\n")


def deployment(name, ns):
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
            f"spec:\n  replicas: 0\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n"
            f"    metadata:\n      labels: {{app: {name}}}\n    spec:\n      serviceAccountName: {name}\n"
            f"      containers:\n      - name: app\n        image: registry.k8s.io/pause:3.10\n"
            f"        ports: [{{name: http, containerPort: 8080}}]\n"
            f"        resources: {{requests: {{cpu: 100m, memory: 0.125Gi}}}}\n")


def service_account(name, ns):
    return f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"


def role(name, ns):
    return (f"apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: {name}\n"
            f"  namespace: {ns}\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n"
            f"  verbs: [get, list, watch]\n")


def role_binding(name, ns):
    return (f"apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {name}\n"
            f"  namespace: {ns}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\n"
            f"subjects:\n- {{kind: ServiceAccount, name: {name}, namespace: {ns}}}\n")


# One "app" is 7 objects; the mix is ConfigMaps, Secrets, Services, Deployments,
# ServiceAccounts and RBAC, as a typical repository has them.
APP = [configmap, secret, service, deployment, service_account, role, role_binding]


def generate(directory, prefix, objects):
    """Writes `objects` synthetic objects over NAMESPACES namespaces plus the
    microservices-demo corpus (in its own namespace); returns the file list."""
    directory.mkdir(parents=True, exist_ok=True)
    namespaces = [f"{prefix}-{i}" for i in range(NAMESPACES)] + [f"{prefix}-demo"]
    files = []
    ns_docs = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n" for ns in namespaces)
    # kubectl applies files in name order and does not create Namespaces first.
    (directory / "00-namespaces.yaml").write_text(ns_docs)
    remaining = objects - len(namespaces)
    app = 0
    while remaining > 0:
        ns = namespaces[app % NAMESPACES]
        kinds = APP[: min(len(APP), remaining)]
        text = "".join("---\n" + make(f"app-{app}", ns) for make in kinds)
        (directory / ns).mkdir(exist_ok=True)
        path = directory / ns / f"app-{app:05d}.yaml"
        path.write_text(text)
        files.append(path)
        remaining -= len(kinds)
        app += 1
    corpus = CORPUS.read_text()
    corpus = re.sub(r"^metadata:\n", f"metadata:\n  namespace: {prefix}-demo\n", corpus, flags=re.M)
    (directory / f"{prefix}-demo").mkdir(exist_ok=True)
    (directory / f"{prefix}-demo" / "microservices-demo.yaml").write_text(corpus)
    return files, namespaces


def delete_namespaces(namespaces, wait=True):
    kubectl("delete", "namespace", *namespaces, "--ignore-not-found", f"--wait={str(wait).lower()}",
            "--timeout=600s", check=False)


# --- measurement helpers -------------------------------------------------------

def stats(samples):
    samples = sorted(samples)
    return {
        "median": statistics.median(samples),
        "min": samples[0],
        "max": samples[-1],
        "samples": samples,
    }


def percentile(samples, p):
    samples = sorted(samples)
    k = (len(samples) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(samples) - 1)
    return samples[lo] + (samples[hi] - samples[lo]) * (k - lo)


class Watcher:
    """`kubectl get configmaps -w` in one namespace; records when each value appears."""

    def __init__(self, namespace):
        template = '{.metadata.name}={.data.value}{"\\n"}'
        self.proc = subprocess.Popen(
            ["kubectl", "get", "configmaps", "-n", namespace, "-w", "-o", f"jsonpath={template}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.seen = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.seen.append((time.monotonic(), line.strip()))
                self.cond.notify_all()

    def wait_for(self, entry, after, timeout=30):
        """The time `entry` (name=value) was seen at or after `after`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.seen:
                    if t >= after and line == entry:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit(f"bench: never saw {entry}")
                self.cond.wait(left)

    def stop(self):
        self.proc.kill()


class Daemon:
    def __init__(self, source, name, namespace, port, interval, extra_env=None, extra_config=""):
        extra_env = extra_env or {}
        self.dir = Path(tempfile.mkdtemp(prefix="converge-bench-"))
        config = self.dir / "config.toml"
        config.write_text(
            f'state_dir = "{self.dir}/state"\n\n[[source]]\nname = "{name}"\ndir = "{source}"\n'
            f'namespace = "{namespace}"\ninterval = "{interval}"\n{extra_config}')
        self.addr = f"127.0.0.1:{port}"
        self.started = time.monotonic()
        self.log = open(self.dir / "converge.log", "w")
        self.proc = subprocess.Popen([str(CONVERGE), "run", "--config", str(config), "--listen", self.addr], env=dict(os.environ, **extra_env),
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200 and self.status()["sources"][0]["result"] == "synced":
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"bench: the daemon did not sync; log: {self.dir}/converge.log")

    def wait_observed(self, timeout=300):
        """Waits until the daemon's watches have reported every object's health (no
        object "not observed yet"), so that the idle window measures a daemon at rest,
        not its start-up. Returns the seconds since start and the CPU spent so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.status()["sources"][0].get("health", {})
            if health.get("objects") and not any(
                    o.get("message") == "not observed yet" for o in health["objects"]):
                break
            time.sleep(0.5)
        started = time.monotonic() - self.started
        log(f"daemon: every object observed {started:.1f} s after start, CPU {self.cpu_seconds():.2f} s")
        return {"observed_after_seconds": started, "cpu_seconds": self.cpu_seconds()}

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://{self.addr}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    def status(self):
        return json.loads(self.get("/status")[1])

    def metrics(self):
        values = {}
        for line in self.get("/metrics")[1].splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)
        return values

    def requests(self):
        return {re.search(r'verb="([^"]+)"', k).group(1): v
                for k, v in self.metrics().items() if k.startswith("converge_api_requests_total")}

    def rss_mib(self):
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
        hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1))
        return rss / 1024, hwm / 1024

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


# --- scenarios -----------------------------------------------------------------

def first_apply(tool, directory, prefix):
    if tool == "converge":
        cmd = [str(CONVERGE), "apply", str(directory), "--prune", "--name", prefix, "-n", f"{prefix}-0"]
        return run(cmd)[0]
    if tool == "kubectl":
        return run(["kubectl", "apply", "--server-side", "-R", "-f", str(directory)])[0]
    if tool == "kubectl-applyset":
        env = dict(os.environ, KUBECTL_APPLYSET="true")
        # kubectl's namespaced ApplySet parent needs -n, and -n refuses objects of
        # other namespaces: a kubectl user runs one applyset per namespace.
        took = run(["kubectl", "apply", "--server-side", "-f", str(directory / "00-namespaces.yaml")])[0]
        for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
            cmd = ["kubectl", "apply", "--server-side", "--prune", f"--applyset=configmaps/{prefix}",
                   "-n", sub.name, "-R", "-f", str(sub)]
            took += run(cmd, env=env)[0]
        return took
    if tool == "raw":
        return run([str(RAW), str(directory)])[0]
    raise ValueError(tool)


def change_one_percent(files, objects, value):
    """Changes one ConfigMap value in evenly spread files: 1% of the objects."""
    count = max(1, objects // 100)
    stride = max(1, len(files) // count)
    chosen = files[::stride][:count]
    for path in chosen:
        text = path.read_text()
        path.write_text(re.sub(r'value: "[^"]*"', f'value: "{value}"', text, count=1))
    return len(chosen)


def measure_daemon_only(args, work):
    """Only the daemon scenarios, on a set applied with converge (--daemon-only)."""
    prefix = f"b{args.objects}-d"
    files, namespaces = generate(work / prefix, prefix, args.objects)
    delete_namespaces(namespaces)
    first_apply("converge", work / prefix, prefix)
    try:
        return {"objects": args.objects, **daemon_scenarios(args, (work / prefix, prefix, files, namespaces))}
    finally:
        delete_namespaces(namespaces)


def measure(args, work):
    n = args.objects
    reps = args.repeat
    results = {"objects": n, "repeat": reps}
    tools = ["converge", "kubectl", "kubectl-applyset", "raw"]
    timings = {t: [] for t in tools}
    kept = {}
    for rep in range(reps):
        for tool in tools:
            prefix = f"b{n}-{tool[:2]}{tool[-3:] if tool.startswith('kubectl-') else ''}-{rep}"
            prefix = re.sub(r"[^a-z0-9-]", "", prefix.lower())
            directory = work / prefix
            files, namespaces = generate(directory, prefix, n)
            delete_namespaces(namespaces)  # leftovers of an interrupted run
            took = first_apply(tool, directory, prefix)
            timings[tool].append(took)
            log(f"first apply, {tool}, rep {rep + 1}/{reps}: {took:.2f} s")
            if rep == reps - 1 and tool in ("converge", "kubectl"):
                kept[tool] = (directory, prefix, files, namespaces)
            else:
                delete_namespaces(namespaces)
                shutil.rmtree(directory)
    results["first_apply"] = {t: stats(v) for t, v in timings.items()}

    diff = {"converge": [], "kubectl": []}
    kubectl_false_drift = 0
    for rep in range(reps):
        directory, prefix, _, _ = kept["converge"]
        took, proc = run([str(CONVERGE), "diff", str(directory), "--prune", "--name", prefix, "-n", f"{prefix}-0"],
                         check=False)
        assert proc.returncode == 0, f"converge diff found changes after apply:\n{proc.stdout[-2000:]}"
        diff["converge"].append(took)
        directory, _, _, _ = kept["kubectl"]
        took, proc = run(["kubectl", "diff", "--server-side", "-R", "-f", str(directory)], check=False)
        # kubectl diff GETs an object, then dry-runs it: a controller's status update
        # in between shows up as a change (converge re-reads in that case).
        assert proc.returncode in (0, 1), f"kubectl diff failed:\n{proc.stderr[-2000:]}"
        kubectl_false_drift += proc.returncode == 1
        diff["kubectl"].append(took)
        log(f"no-op diff rep {rep + 1}/{reps}: converge {diff['converge'][-1]:.2f} s, kubectl {took:.2f} s")
    results["noop_diff"] = {t: stats(v) for t, v in diff.items()}
    results["noop_diff"]["kubectl_runs_reporting_false_changes"] = kubectl_false_drift

    change = {"converge": [], "kubectl": []}
    for rep in range(reps):
        directory, prefix, files, _ = kept["converge"]
        changed = change_one_percent(files, n, f"c{rep}")
        cmd = [str(CONVERGE), "apply", str(directory), "--prune", "--name", prefix, "-n", f"{prefix}-0"]
        change["converge"].append(run(cmd)[0])
        directory, _, files, _ = kept["kubectl"]
        change_one_percent(files, n, f"c{rep}")
        change["kubectl"].append(run(["kubectl", "apply", "--server-side", "-R", "-f", str(directory)])[0])
        log(f"1% change ({changed} objects) rep {rep + 1}/{reps}: converge {change['converge'][-1]:.2f} s, "
            f"kubectl {change['kubectl'][-1]:.2f} s")
    results["one_percent_change"] = {t: stats(v) for t, v in change.items()}
    results["one_percent_change"]["changed_objects"] = changed

    delete_namespaces(kept["kubectl"][3])
    results.update(daemon_scenarios(args, kept["converge"]))
    delete_namespaces(kept["converge"][3])
    results.update(kustomize_scenarios(args, work))
    return results


def daemon_scenarios(args, kept):
    directory, prefix, files, namespaces = kept
    daemon = Daemon(directory, prefix, f"{prefix}-0", args.port, "30s")
    out = {}
    try:
        out["daemon_start"] = daemon.wait_observed()
        time.sleep(5)
        before_req, before_cpu = daemon.requests(), daemon.cpu_seconds()
        before_rec = daemon.metrics()
        time.sleep(args.idle)
        after_req, after_cpu = daemon.requests(), daemon.cpu_seconds()
        after_rec = daemon.metrics()
        rss, hwm = daemon.rss_mib()
        sent = {v: after_req.get(v, 0) - before_req.get(v, 0) for v in set(after_req) | set(before_req)}
        key_sum = f'converge_reconcile_duration_seconds_sum{{source="{prefix}"}}'
        key_count = f'converge_reconcile_duration_seconds_count{{source="{prefix}"}}'
        idle_reconciles = after_rec.get(key_count, 0) - before_rec.get(key_count, 0)
        idle_seconds = after_rec.get(key_sum, 0) - before_rec.get(key_sum, 0)
        out["daemon_idle"] = {
            "seconds": args.idle,
            "rss_mib": rss,
            "peak_rss_mib": hwm,
            "cpu_seconds": after_cpu - before_cpu,
            "cpu_percent": 100 * (after_cpu - before_cpu) / args.idle,
            "requests": sent,
            "writes": sum(sent.get(v, 0) for v in ("apply", "create", "delete")),
            "resync_reconciles": idle_reconciles,
            "noop_reconcile_ms": 1000 * idle_seconds / idle_reconciles if idle_reconciles else None,
        }
        log(f"daemon idle {args.idle} s: RSS {rss:.1f} MiB (peak {hwm:.1f}), CPU {after_cpu - before_cpu:.2f} s, "
            f"requests {sent}")
        for key, scenario in (("drift_latency", drift_latency), ("commit_to_converged", commit_latency)):
            before = daemon.metrics()
            out[key] = scenario(namespaces[0], files, args.edits)
            out[key].update(reconcile_cost(before, daemon.metrics(), prefix))
    finally:
        daemon.stop()
    return out


def kustomize_scenarios(args, work):
    """A dir source whose root is a kustomization of the synthetic set: resyncs of
    the unchanged overlay must not render, and a one-file change is rendered and
    applied (commit-to-converged)."""
    prefix = f"k{args.objects}"
    directory = work / prefix
    files, namespaces = generate(directory, prefix, args.objects)
    resources = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.yaml"))
    (directory / "kustomization.yaml").write_text("resources:\n" + "".join(f"- {r}\n" for r in resources))
    delete_namespaces(namespaces)
    out = {}
    key = lambda name: f'{name}{{source="{prefix}"}}'
    try:
        # Every resync full (the most a resync can do): none may render.
        daemon = Daemon(directory, prefix, f"{prefix}-0", args.port, "1s", extra_config="full_resync_every = 1\n")
        try:
            daemon.wait_observed()
            before = daemon.metrics()
            time.sleep(args.resync_window)
            after = daemon.metrics()
        finally:
            daemon.stop()
        delta = lambda name: after.get(key(name), 0) - before.get(key(name), 0)
        out["kustomize_resync"] = {
            "seconds": args.resync_window,
            "full_resyncs": delta("converge_reconcile_duration_seconds_count"),
            "renders": delta("converge_render_duration_seconds_count"),
        }
        log(f"kustomize source, {args.resync_window} s of full resyncs every second: "
            f"{out['kustomize_resync']['full_resyncs']:.0f} resyncs, {out['kustomize_resync']['renders']:.0f} renders")
        daemon = Daemon(directory, prefix, f"{prefix}-0", args.port, "30s")
        try:
            daemon.wait_observed()
            before = daemon.metrics()
            out["kustomize_commit"] = commit_latency(namespaces[0], files, args.edits)
            after = daemon.metrics()
        finally:
            daemon.stop()
        out["kustomize_commit"].update(reconcile_cost(before, after, prefix))
        renders = after.get(key("converge_render_duration_seconds_count"), 0) - \
            before.get(key("converge_render_duration_seconds_count"), 0)
        render_s = after.get(key("converge_render_duration_seconds_sum"), 0) - \
            before.get(key("converge_render_duration_seconds_sum"), 0)
        out["kustomize_commit"]["renders"] = renders
        out["kustomize_commit"]["render_ms"] = 1000 * render_s / renders if renders else None
    finally:
        delete_namespaces(namespaces)
    return out


def reconcile_cost(before, after, source):
    """What the reconciles between two /metrics readings cost: mean duration and
    mean number of desired objects each looked at (targeted vs full)."""
    def delta(name):
        key = f'{name}{{source="{source}"}}'
        return after.get(key, 0) - before.get(key, 0)
    count = delta("converge_reconcile_duration_seconds_count")
    if not count:
        return {"reconciles": 0}
    return {"reconciles": count,
            "reconcile_ms": 1000 * delta("converge_reconcile_duration_seconds_sum") / count,
            "objects_per_reconcile": delta("converge_reconciled_objects_total") / count}


def configmaps_in(files, namespace):
    names = []
    for path in files:
        text = path.read_text()
        if f"namespace: {namespace}\n" in text and "kind: ConfigMap" in text:
            names.append((path, re.search(r"kind: ConfigMap\nmetadata:\n  name: (\S+)", text).group(1)))
    return names


def drift_latency(namespace, files, edits):
    watcher = Watcher(namespace)
    time.sleep(1)
    samples = []
    targets = configmaps_in(files, namespace)
    try:
        for i in range(edits):
            _, name = targets[i % len(targets)]
            desired = re.search(r'value: "([^"]*)"', _.read_text()).group(1)
            kubectl("patch", "configmap", name, "-n", namespace, "-p", json.dumps({"data": {"value": f"drift-{i}"}}))
            drifted = watcher.wait_for(f"{name}=drift-{i}", 0)
            healed = watcher.wait_for(f"{name}={desired}", drifted)
            samples.append(healed - drifted)
    finally:
        watcher.stop()
    log(f"drift latency over {edits} edits: p50 {percentile(samples, 50) * 1000:.0f} ms, "
        f"p99 {percentile(samples, 99) * 1000:.0f} ms")
    return {"edits": edits, "p50_ms": 1000 * percentile(samples, 50), "p99_ms": 1000 * percentile(samples, 99),
            "max_ms": 1000 * max(samples)}


def commit_latency(namespace, files, edits):
    watcher = Watcher(namespace)
    time.sleep(1)
    samples = []
    targets = configmaps_in(files, namespace)
    try:
        for i in range(edits):
            path, name = targets[i % len(targets)]
            text = path.read_text()
            written = time.monotonic()
            path.write_text(re.sub(r'value: "[^"]*"', f'value: "commit-{i}"', text, count=1))
            seen = watcher.wait_for(f"{name}=commit-{i}", written)
            samples.append(seen - written)
            time.sleep(0.3)
    finally:
        watcher.stop()
    log(f"commit-to-converged over {edits} changes: p50 {percentile(samples, 50) * 1000:.0f} ms, "
        f"p99 {percentile(samples, 99) * 1000:.0f} ms")
    return {"changes": edits, "p50_ms": 1000 * percentile(samples, 50), "p99_ms": 1000 * percentile(samples, 99),
            "max_ms": 1000 * max(samples)}


# --- report --------------------------------------------------------------------

def machine():
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)
    version = json.loads(kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    return {"cores": os.cpu_count(), "memory_gib": round(int(mem) / 1024 / 1024, 1), "kubernetes": version,
            "kubectl": json.loads(kubectl("version", "-o", "json"))["clientVersion"]["gitVersion"]}


def fmt(s):
    return f"{s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f})"


def cost(scenario):
    if not scenario.get("reconciles"):
        return "no reconcile"
    return (f"{scenario['reconciles']:.0f} reconciles of {scenario['reconcile_ms']:.1f} ms, "
            f"{scenario['objects_per_reconcile']:.1f} objects each")


def table(r):
    fa, nd, oc = r["first_apply"], r["noop_diff"], r["one_percent_change"]
    ratio = lambda a, b: a["median"] / b["median"]
    idle = r["daemon_idle"]
    rows = [
        ("first apply", f"converge apply --prune: {fmt(fa['converge'])}",
         f"kubectl apply --server-side: {fmt(fa['kubectl'])}; with --prune --applyset: {fmt(fa['kubectl-applyset'])}",
         f"{ratio(fa['converge'], fa['kubectl']):.2f}× / {ratio(fa['converge'], fa['kubectl-applyset']):.2f}×"),
        ("no-op diff", f"converge diff: {fmt(nd['converge'])}", f"kubectl diff --server-side: {fmt(nd['kubectl'])}",
         f"{ratio(nd['converge'], nd['kubectl']):.2f}×"),
        (f"1% changed ({oc['changed_objects']} objects)", f"converge apply: {fmt(oc['converge'])}",
         f"kubectl apply --server-side: {fmt(oc['kubectl'])}", f"{ratio(oc['converge'], oc['kubectl']):.2f}×"),
        ("raw limit (SSA PATCHes, same concurrency)", f"{fmt(fa['raw'])}", "—",
         f"converge at {100 * fa['raw']['median'] / fa['converge']['median']:.0f}% of raw throughput"),
        (f"daemon idle {idle['seconds']} s", f"RSS {idle['rss_mib']:.1f} MiB (peak {idle['peak_rss_mib']:.1f}), "
         f"CPU {idle['cpu_percent']:.2f}%, writes {idle['writes']:.0f}, requests {sum(idle['requests'].values()):.0f}, "
         f"no-op reconcile {idle['noop_reconcile_ms'] or 0:.1f} ms", "—", "—"),
        (f"drift latency ({r['drift_latency']['edits']} edits)",
         f"p50 {r['drift_latency']['p50_ms']:.0f} ms, p99 {r['drift_latency']['p99_ms']:.0f} ms; {cost(r['drift_latency'])}",
         "—", "—"),
        (f"commit-to-converged ({r['commit_to_converged']['changes']} changes)",
         f"p50 {r['commit_to_converged']['p50_ms']:.0f} ms, p99 {r['commit_to_converged']['p99_ms']:.0f} ms; "
         f"{cost(r['commit_to_converged'])}", "—", "—"),
    ]
    if "kustomize_commit" in r:
        kc, kr = r["kustomize_commit"], r["kustomize_resync"]
        rows += [
            (f"kustomize source: commit-to-converged ({kc['changes']} changes)",
             f"p50 {kc['p50_ms']:.0f} ms, p99 {kc['p99_ms']:.0f} ms; {kc['renders']:.0f} renders of "
             f"{kc['render_ms'] or 0:.0f} ms; {cost(kc)}", "—", "—"),
            (f"kustomize source: {kr['seconds']} s of full resyncs",
             f"{kr['full_resyncs']:.0f} resyncs, {kr['renders']:.0f} renders", "—", "—"),
        ]
    lines = [f"### {r['objects']} objects (+ microservices-demo), {r['repeat']} repetitions, median (min–max)", "",
             "| scenario | converge | peer | converge / peer |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000, help="synthetic objects (default 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per scenario (default 3)")
    parser.add_argument("--idle", type=int, default=60, help="seconds the daemon idles (default 60)")
    parser.add_argument("--edits", type=int, default=50, help="drift edits and commits (default 50)")
    parser.add_argument("--port", type=int, default=19480, help="daemon HTTP port")
    parser.add_argument("--daemon-only", action="store_true",
                        help="only the daemon scenarios (idle, drift, commit); prints JSON")
    parser.add_argument("--kustomize-only", action="store_true",
                        help="only the kustomize source scenarios (resyncs, commit); prints JSON")
    parser.add_argument("--resync-window", type=int, default=10,
                        help="seconds of full resyncs of the kustomize source (default 10)")
    args = parser.parse_args()
    out_dir = ROOT / "target/bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="converge-bench-") as work:
        if args.daemon_only:
            results = measure_daemon_only(args, Path(work))
            print(json.dumps(results, indent=2))
            return
        if args.kustomize_only:
            results = {"objects": args.objects, **kustomize_scenarios(args, Path(work))}
            print(json.dumps(results, indent=2))
            return
        results = measure(args, Path(work))
    results["machine"] = machine()
    summary = out_dir / "summary.json"
    previous = json.loads(summary.read_text()) if summary.exists() else {}
    previous[str(args.objects)] = results
    summary.write_text(json.dumps(previous, indent=2))
    print(table(results))
    m = results["machine"]
    print(f"\nMachine: {m['cores']} cores, {m['memory_gib']} GiB; Kubernetes {m['kubernetes']}, kubectl {m['kubectl']}.")
    log(f"wrote {summary}")


if __name__ == "__main__":
    main()
