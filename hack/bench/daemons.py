"""The daemons: converge (`converge run`) and the Flux controllers
(source-controller + kustomize-controller), each owning the same set from the same
Git host, measured the same way: idle (RSS and CPU every second, API requests from
the API server's audit log), drift correction and commit-to-converged with each
one's fastest trigger."""

import json
import os
import random
import re
import shlex
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from .common import (CONVERGE, ROOT, BenchError, Sampler, ToolTimeout, describe_latency, kubectl, latency, log, run)
from .synthetic import configmaps_in


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
        time.sleep(1)

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.seen.append((time.monotonic(), line.strip()))
                self.cond.notify_all()

    def wait_for(self, entry, after, timeout):
        """The time `entry` (name=value) was seen at or after `after`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, line in self.seen:
                    if t >= after and line == entry:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"never saw {entry} within {timeout} s")
                self.cond.wait(left)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def http_get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def prometheus(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                values[series] = float(value)
            except ValueError:
                pass
    return values


def metric_sum(values, name, **labels):
    total = 0.0
    for series, value in values.items():
        if series == name or series.startswith(name + "{"):
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += value
    return total


# --- converge --------------------------------------------------------------------------

class ConvergeDaemon:
    user = "bench-converge"

    def __init__(self, source, name, namespace, port, interval, kubeconfig=None, extra_config="",
                 more_config=""):
        """`source`: a directory (Path) or a Git URL (str). `extra_config`: more keys
        of that source; `more_config`: TOML after it (more `[[source]]`s, `[[clusters]]`).
        Ready when every source of the config has synced."""
        self.name = name
        self.kubeconfig = kubeconfig
        self.dir = Path(tempfile.mkdtemp(prefix="converge-bench-"))
        where = f'git = "{source}"\n' if isinstance(source, str) else f'dir = "{source}"\n'
        (self.dir / "config.toml").write_text(
            f'state_dir = "{self.dir}/state"\n\n[[source]]\nname = "{name}"\n{where}'
            f'namespace = "{namespace}"\ninterval = "{interval}"\n{extra_config}{more_config}')
        self.addr = f"127.0.0.1:{port}"
        self.started = time.monotonic()
        self.log = open(self.dir / "converge.log", "w")
        env = dict(os.environ, **({"KUBECONFIG": kubeconfig} if kubeconfig else {}))
        self.proc = subprocess.Popen([CONVERGE, "run", "--config", self.dir / "config.toml", "--listen", self.addr],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"converge run exited ({self.proc.returncode}); log: {self.dir}/converge.log")
            try:
                sources = self.status()["sources"] if self.get("/readyz")[0] == 200 else []
                if sources and all(s["result"] == "synced" for s in sources):
                    self.sources = [s["name"] for s in sources]
                    self.synced_after = time.monotonic() - self.started
                    return
            except (OSError, KeyError, json.JSONDecodeError):
                pass
            time.sleep(0.2)
        raise BenchError(f"the daemon did not sync; log: {self.dir}/converge.log")

    def pids(self):
        return [self.proc.pid]

    def get(self, path):
        return http_get(f"http://{self.addr}{path}")

    def status(self):
        return json.loads(self.get("/status")[1])

    def metrics(self):
        return prometheus(self.get("/metrics")[1])

    def wait_observed(self, timeout=600):
        """Until the watches have reported every object's health, of every source:
        the daemon at rest, not its start-up."""
        def observed(health):
            return health.get("objects") and not any(
                o.get("message") == "not observed yet" for o in health["objects"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(observed(s.get("health", {})) for s in self.status()["sources"]):
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise BenchError(f"the daemon did not observe every object within {timeout} s")

    def trigger(self):
        """A push webhook (unsigned: the bench source has no secret)."""
        req = urllib.request.Request(f"http://{self.addr}/hooks/git/{self.name}", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 202:
                raise BenchError(f"webhook answered {r.status}")

    def self_reported_requests(self, metrics):
        return metric_sum(metrics, "converge_api_requests_total")

    def idle_extra(self, before, after):
        """Full and skipped resyncs of every source; the window includes a full
        resync when each source had one."""
        def delta(source, result):
            return (metric_sum(after, "converge_reconciles_total", source=source, result=result)
                    - metric_sum(before, "converge_reconciles_total", source=source, result=result))
        full = [delta(s, "success") for s in self.sources]
        return {"full_resyncs": sum(full), "skipped_resyncs": sum(delta(s, "skipped") for s in self.sources),
                "includes_full_resync": all(f >= 1 for f in full)}

    def pass_state(self, metrics):
        """(full resyncs so far, seconds of every reconcile so far): a full resync
        completing between two readings is the duration added with it (a skipped
        resync in the same 2 s adds milliseconds)."""
        return (sum(metric_sum(metrics, "converge_reconciles_total", source=s, result="success") for s in self.sources),
                sum(metric_sum(metrics, "converge_reconcile_duration_seconds_sum", source=s) for s in self.sources))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


# --- Flux --------------------------------------------------------------------------------

def peers_script():
    """hack/peers.sh, or another checkout's (BENCH_PEERS_SH, to try a peers branch)."""
    return Path(os.environ.get("BENCH_PEERS_SH", ROOT / "hack/peers.sh"))


def peers_sh(*args, env=None):
    return run(["bash", peers_script(), *args], env=env, timeout=600)[1].stdout


def exports(text):
    """`export A=1 B=2` lines (as a shell would read them) as a dict."""
    found = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            found.update(w.split("=", 1) for w in words[1:] if "=" in w)
    return found


# Flux with its defaults, and with the tuning of Flux's own benchmark
# (github.com/fluxcd/flux-benchmark, manifests/install/kustomization.yaml at
# e09c533: kustomize-controller --concurrent=20, source-controller --concurrent=10;
# --kube-api-qps/--kube-api-burst left at their defaults, 50/300) plus
# --requeue-dependency=5s of Flux's "vertical scaling" guide
# (fluxcd.io/flux/installation/configuration/vertical-scaling), which matters once
# the Kustomizations depend on the one that creates the Namespaces.
FLUX_TUNINGS = {
    "flux": {"source": "", "kustomize": ""},
    "flux-tuned": {"source": "--concurrent=10", "kustomize": "--concurrent=20 --requeue-dependency=5s"},
}


class FluxControllers:
    """source-controller and kustomize-controller out of cluster (hack/peers.sh
    flux-up), reconciling one GitRepository and one Kustomization per part of the
    repository (`parts`: "base" with the Namespaces, then parts of ~1000 objects
    that depend on it, as Flux recommends)."""
    user = "bench-flux"

    def __init__(self, repo_url, namespace, git_interval, ks_interval, parts, kubeconfig=None, tuning="flux"):
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.parts = parts
        self.work = Path(tempfile.mkdtemp(prefix="converge-bench-flux-"))
        # FLUX_KUBECONFIG: the identity the controllers should run as (audited), for a
        # hack/peers.sh that honours it; `audit_gap` checks what they really use.
        self.env = dict(os.environ, **({"KUBECONFIG": kubeconfig, "FLUX_KUBECONFIG": kubeconfig}
                                       if kubeconfig else {}),
                        FLUX_SOURCE_ARGS=FLUX_TUNINGS[tuning]["source"],
                        FLUX_KUSTOMIZE_ARGS=FLUX_TUNINGS[tuning]["kustomize"])
        self.vars = exports(peers_sh("flux-up", self.work, env=self.env))
        self.up = True
        # From here on, as converge's from its start: the controllers are up and the
        # CRDs installed, the objects that ask them to apply the set not yet created.
        self.started = time.monotonic()
        kubectl("create", "namespace", namespace)
        manifest = f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: bench, namespace: {namespace}}}
spec:
  interval: {git_interval}
  url: {repo_url}
  ref: {{branch: main}}
"""
        for part in parts:
            depends = "" if part == "base" else "  dependsOn: [{name: base}]\n"
            manifest += f"""---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: {part}, namespace: {namespace}}}
spec:
  interval: {ks_interval}
  path: ./{part}
  prune: true
  timeout: 30m
  sourceRef: {{kind: GitRepository, name: bench}}
{depends}"""
        path = self.work / "bench-flux.yaml"
        path.write_text(manifest)
        kubectl("apply", "-f", path)

    def pids(self):
        return [int(self.vars["SOURCE_CONTROLLER_PID"]), int(self.vars["KUSTOMIZE_CONTROLLER_PID"])]

    def wait_applied(self, commit, timeout):
        """Until every Kustomization reports `commit` applied and Ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = json.loads(kubectl("get", "kustomizations", "-n", self.namespace, "-o", "json"))["items"]
            waiting = {}
            for ks in items:
                status = ks.get("status", {})
                ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
                if not (ready and status.get("lastAppliedRevision", "").endswith(commit)):
                    waiting[ks["metadata"]["name"]] = status
            if len(items) == len(self.parts) and not waiting:
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise BenchError(f"{len(waiting)} of {len(self.parts)} Kustomizations did not apply {commit} within "
                         f"{timeout} s, e.g. {str(list(waiting.items())[:1])[:800]}")

    def trigger(self):
        """What `flux reconcile source git` does: the requestedAt annotation. The
        kustomize-controller watches the GitRepository's artifact and reconciles
        the Kustomization when its revision changes."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        kubectl("annotate", "--overwrite", "gitrepository", "bench", "-n", self.namespace,
                f"reconcile.fluxcd.io/requestedAt={now}")

    def set_interval(self, interval):
        for part in self.parts:
            kubectl("patch", "kustomization", part, "-n", self.namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"interval": interval}}))

    def metrics(self):
        values = {}
        for key in ("FLUX_METRICS_SOURCE", "FLUX_METRICS_KUSTOMIZE"):
            url = self.vars.get(key, "")
            if url:
                url = url if url.startswith("http") else f"http://{url}/metrics"
                for series, value in prometheus(http_get(url)[1]).items():
                    values[f"{key}:{series}"] = value
        return values

    def self_reported_requests(self, metrics):
        return sum(v for k, v in metrics.items() if k.split(":", 1)[1].startswith("rest_client_requests_total"))

    def idle_extra(self, before, after):
        def delta(controller):
            name = "controller_runtime_reconcile_total"
            sel = lambda m: sum(v for k, v in m.items() if name in k and f'controller="{controller}"' in k)
            return sel(after) - sel(before)
        ks, git = delta("kustomization"), delta("gitrepository")
        # A full pass: every Kustomization reconciled (each has its own timer).
        return {"kustomization_reconciles": ks, "gitrepository_reconciles": git, "kustomizations": len(self.parts),
                "includes_full_resync": ks >= len(self.parts)}

    def stop(self):
        if not self.up:
            return
        # prune off first: deleting the Kustomization must not garbage-collect the
        # set (the namespaces are deleted next, as for every other tool).
        for part in self.parts:
            kubectl("patch", "kustomization", part, "-n", self.namespace, "--type=merge",
                    "-p", '{"spec":{"prune":false}}', check=False)
        kubectl("delete", "kustomization,gitrepository", "--all", "-n", self.namespace, "--timeout=120s",
                check=False)
        peers_sh("flux-down", self.work, env=self.env)
        self.up = False
        # A controller stopped in the middle of a pass never removed its finalizers,
        # which would keep the namespace from going.
        for kind, name in [("kustomization", part) for part in self.parts] + [("gitrepository", "bench")]:
            kubectl("patch", kind, name, "-n", self.namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)


# --- Argo CD's engine ----------------------------------------------------------------

class ArgoEngineDaemon:
    """`argo-engine run` (hack/peers/argo-engine): a sync, then a sync on every
    update of an owned object in its cluster cache (Argo CD's selfHeal). Ready when
    its first sync is printed."""
    user = "bench-argo"

    def __init__(self, directory, name, kubeconfig=None, timeout=1200):
        self.kubeconfig = kubeconfig
        self.dir = Path(tempfile.mkdtemp(prefix="converge-bench-argo-"))
        self.log = open(self.dir / "argo-engine.log", "w")
        env = dict(os.environ, **({"KUBECONFIG": kubeconfig} if kubeconfig else {}))
        self.started = time.monotonic()
        self.proc = subprocess.Popen([os.environ["ARGO_ENGINE"], "run", "--dir", directory, "--name", name],
                                     env=env, stdout=subprocess.PIPE, stderr=self.log, text=True, bufsize=1)
        self.syncs = []
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                if line.startswith('{"synced"'):
                    self.syncs.append((time.monotonic(), json.loads(line)["synced"]))
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise ToolTimeout(f"argo-engine run did not finish its first sync within {timeout} s "
                              f"(log: {self.dir}/argo-engine.log)")
        self.synced_after = self.syncs[0][0] - self.started
        self.first_sync = self.syncs[0][1]

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- scenarios shared by both ------------------------------------------------------------

def idle(daemon, seconds, audit, longest, other_planes=None):
    """RSS and CPU every second over `seconds`, and every API request the daemon
    sent meanwhile, by the API server's audit log (else by the daemon's own count).
    The window goes on past `seconds` (up to `longest`) until it holds a completed
    full pass: at 10000 objects Flux's Kustomization pass takes minutes, and a
    window ending in its middle would count only its start. `other_planes`
    ({label: Audit}): more planes the daemon talks to as the same audited user
    (a [[clusters]] entry), whose requests go to `requests_other_planes`."""
    before = daemon.metrics()
    since = time.time()
    passes = []
    with Sampler(daemon.pids()) as sampler:
        passes = watch_passes(daemon, before, seconds)
        while not daemon.idle_extra(before, daemon.metrics())["includes_full_resync"] \
                and time.time() - since < longest:
            time.sleep(5)
    until = time.time()
    after = daemon.metrics()
    out = sampler.result()
    out["extended_seconds"] = max(0.0, until - since - seconds)
    out["window_seconds"] = until - since
    if passes:
        out["full_resync_seconds"] = passes
    why_not = audit_gap(daemon, audit)
    # Both counts: when only one daemon can be audited, the two are compared by
    # what each says it sent (report.comparable_requests).
    out["requests_self_reported"] = daemon.self_reported_requests(after) - daemon.self_reported_requests(before)
    time.sleep(1)  # the log is written when a request completes
    if not why_not:
        out["requests"] = audit.requests(daemon.user, since, until)
    else:
        out["requests"] = {"total": out["requests_self_reported"],
                           "source": f"self-reported by the daemon: {why_not}"}
    if other_planes:
        # The identity on those planes is the config's (a [[clusters]] kubeconfig),
        # not the process's KUBECONFIG: only the log itself can be missing.
        out["requests_other_planes"] = {
            label: other.requests(daemon.user, since, until) if other.available() else
            {"total": None, "source": f"{other.path} does not exist (a plane started before its audit log)"}
            for label, other in other_planes.items()}
    out.update(daemon.idle_extra(before, after))
    req = out["requests"]
    # Per minute (issue 28): windows of equal length compare as they are, and a
    # window that had to be extended compares with the others.
    minutes = out["window_seconds"] / 60
    out["per_minute"] = {"requests": req["total"] / minutes, "writes": (req.get("writes") or 0) / minutes,
                         "cpu_seconds": out["cpu_seconds"] / minutes if out["cpu_seconds"] is not None else None}
    log(f"idle {out['seconds']:.0f} s: RSS mean {out['rss_mib']:.1f} MiB (max {out['rss_mib_max']:.1f}), "
        f"CPU {out['cpu_percent']:.2f}% (max {out['cpu_percent_max']:.1f}%), requests {req['total']:.0f} "
        f"({req.get('by_verb_resource', req['source'])})")
    for label, r in out.get("requests_other_planes", {}).items():
        log(f"  on the {label} plane: requests {r['total']} ({r.get('by_verb_resource', r['source'])})")
    return out


def watch_passes(daemon, before, seconds):
    """Sleeps `seconds`; for a daemon that tells its full passes apart
    (`pass_state`), reads its /metrics every 2 s meanwhile and returns how long each
    full pass that completed took (issue 28: the full resync's time; its RSS peak
    is the window's)."""
    if not hasattr(daemon, "pass_state"):
        time.sleep(seconds)
        return []
    passes, last, end = [], daemon.pass_state(before), time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(2, max(0, end - time.monotonic())))
        now = daemon.pass_state(daemon.metrics())
        if now[0] > last[0]:
            passes.append((now[1] - last[1]) / (now[0] - last[0]))
        last = now
    return passes


def audit_gap(daemon, audit):
    """Why the audit log cannot count this daemon's requests, or None: the plane
    has no audit log, or a process does not run with the audited identity."""
    if not audit.available():
        return "the plane has no audit log (started before hack/controlplane.sh had one: restart it)"
    for pid in daemon.pids():
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        kubeconfig = next((e[len(b"KUBECONFIG="):].decode() for e in env if e.startswith(b"KUBECONFIG=")), None)
        if kubeconfig != daemon.kubeconfig:
            return (f"pid {pid} runs with KUBECONFIG={kubeconfig}, not the audited identity "
                    f"{daemon.kubeconfig} (hack/peers.sh flux-up does not honour FLUX_KUBECONFIG)")
    return None


def drift(namespace, bench_set, edits, heal_timeout, spread=0.0):
    """`kubectl patch`es of owned ConfigMaps; the time until each is healed. With
    `spread`, each edit waits a random 0..spread s first: a daemon that corrects
    drift only every `spread` s would otherwise always be edited just after its
    last pass (the previous heal), and measured at its worst."""
    watcher = Watcher(namespace)
    samples = []
    targets = configmaps_in(bench_set.files, namespace)
    try:
        for i in range(edits):
            time.sleep(random.uniform(0, spread))
            path, name = targets[i % len(targets)]
            desired = re.search(r'value: "([^"]*)"', path.read_text()).group(1)
            kubectl("patch", "configmap", name, "-n", namespace, "-p", json.dumps({"data": {"value": f"drift-{i}"}}))
            drifted = watcher.wait_for(f"{name}=drift-{i}", 0, 60)
            healed = watcher.wait_for(f"{name}={desired}", drifted, heal_timeout)
            samples.append(healed - drifted)
    finally:
        watcher.stop()
    out = latency(samples)
    log(f"drift correction over {edits} edits: {describe_latency(out)}")
    return out


def commit_to_converged(namespace, bench_set, edits, publish, timeout, tag, raw=False):
    """One-file changes: after each file write, `publish()` publishes it and returns
    when the clock starts; the time until the cluster holds the new value (values
    `tag-i`: each scenario's own, so none is already there)."""
    watcher = Watcher(namespace)
    samples, starts = [], []
    targets = configmaps_in(bench_set.files, namespace)
    try:
        for i in range(edits):
            path, name = targets[i % len(targets)]
            text = path.read_text()
            path.write_text(re.sub(r'value: "[^"]*"', f'value: "{tag}-{i}"', text, count=1))
            started = publish()
            seen = watcher.wait_for(f"{name}={tag}-{i}", started, timeout)
            samples.append(seen - started)
            starts.append(started)
            time.sleep(0.3)
    finally:
        watcher.stop()
    out = latency(samples)
    # For scenarios that pool several runs or time other things from the same clocks
    # (hack/bench/notify.py); they pop these before writing results.
    if raw:
        out["raw_samples_s"], out["started_at"] = samples, starts
    log(f"commit-to-converged over {edits} changes: {describe_latency(out)}")
    return out


def reconcile_cost(before, after, source):
    """What converge's reconciles between two /metrics readings cost: mean duration
    and mean number of desired objects each looked at (targeted vs full)."""
    def delta(name):
        key = f'{name}{{source="{source}"}}'
        return after.get(key, 0) - before.get(key, 0)
    count = delta("converge_reconcile_duration_seconds_count")
    if not count:
        return {"reconciles": 0}
    return {"reconciles": count,
            "reconcile_ms": 1000 * delta("converge_reconcile_duration_seconds_sum") / count,
            "objects_per_reconcile": delta("converge_reconciled_objects_total") / count}
