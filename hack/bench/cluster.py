"""The cluster between scenarios: settled before each one (no set left, the
controllers done writing), every outcome checked, and the API server's audit log
read for the requests of one identity."""

import base64
import json
import os
import re
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from .common import NS_PREFIX, ROOT, BenchError, kubectl, log, run

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
# Counted from apiserver_request_total: every client's writes, the controllers' too.
WRITE_METRIC_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}


def cluster_writes(outage=60):
    """Writes the API server counted since it started. A restart (another user's
    test: hack/controlplane.sh restart-apiserver) is waited out for up to `outage` s."""
    deadline = time.monotonic() + outage
    while True:
        _, proc = run(["kubectl", "get", "--raw", "/metrics"], check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    if proc.returncode != 0:
        raise BenchError(f"kubectl get --raw /metrics failed ({proc.returncode}) for {outage} s:\n{proc.stderr[-2000:]}")
    total = 0.0
    for line in proc.stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            verb = re.search(r'verb="([^"]+)"', line).group(1)
            if verb in WRITE_METRIC_VERBS:
                total += float(line.rpartition(" ")[2])
    return total


# Writes of anyone the API server may see in `window` s for the cluster to count as
# settled (--quiet-writes): 4 on a quiet machine, more on a plane others' tests share.
QUIET_WRITES = 4


def wait_quiet(timeout, what, window=6, allowed=None):
    """Waits until the API server saw at most `allowed` writes (of anyone: leases of
    the API server and kwok nodes renew every 10 s) in `window` seconds, i.e. the
    controller-manager has worked through what the last scenario created. A cluster
    that never settles is an error: its figures would measure something else."""
    allowed = QUIET_WRITES if allowed is None else allowed
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    history = [(time.monotonic(), cluster_writes())]
    while True:
        time.sleep(2)
        history.append((time.monotonic(), cluster_writes()))
        if history[-1][1] < history[-2][1]:
            history = history[-1:]   # the API server restarted: its counts start again
        past = [h for h in history if h[0] <= history[-1][0] - window]
        if past and history[-1][1] - past[-1][1] <= allowed:
            took = time.monotonic() - started
            if took > window + 3:
                log(f"settled ({what}) after {took:.0f} s")
            return took
        if time.monotonic() > deadline:
            rate = (history[-1][1] - history[0][1]) / max(history[-1][0] - history[0][0], 1e-9)
            raise BenchError(f"the cluster did not settle ({what}) within {timeout} s: still {rate:.1f} writes/s")


def namespaces_left(prefix_pattern):
    out = kubectl("get", "namespaces", "-o", "name")
    return [n.split("/", 1)[1] for n in out.split() if re.fullmatch(prefix_pattern, n.split("/", 1)[1])]


def delete_namespaces(namespaces, timeout):
    """Deletes the namespaces and waits until they are gone; a deletion that does
    not finish is an error, not a leftover for the next scenario to trip on."""
    if not namespaces:
        return 0.0
    took, proc = run(["kubectl", "delete", "namespace", *namespaces, "--ignore-not-found", "--wait=true",
                      f"--timeout={timeout}s"], check=False, timeout=timeout + 60)
    left = [n for n in namespaces if n in namespaces_left(r".*")]
    if proc.returncode != 0 or left:
        raise BenchError(f"deleting namespaces {left or namespaces} did not finish within {timeout} s:\n"
                         f"{proc.stderr[-2000:]}")
    return took


def settle(timeout):
    """Before a scenario: no namespace of an earlier bench set, no write storm."""
    left = namespaces_left(re.escape(NS_PREFIX) + r"[bdk]\d+-.*")
    if left:
        log(f"deleting leftover bench namespaces: {' '.join(left)}")
        delete_namespaces(left, timeout)
    return wait_quiet(timeout, "before the scenario")


def present(bench_set):
    """Every object of the set exists (kind, namespace, name); returns the count."""
    kinds = sorted({k for k, _, _ in bench_set.expected if k != "Namespace"})
    seen = set()
    for ns in bench_set.namespaces:
        out = kubectl("get", ",".join(kinds), "-n", ns, "--no-headers",
                      "-o", "custom-columns=KIND:.kind,NAME:.metadata.name")
        seen |= {(k, ns, n) for k, n in (line.split() for line in out.splitlines() if line.strip())}
    namespaces = set(namespaces_left(r".*"))
    seen |= {("Namespace", "", n) for n in bench_set.namespaces if n in namespaces}
    missing = bench_set.expected - seen
    if missing:
        raise BenchError(f"{len(missing)} of {bench_set.objects} objects missing after the apply, e.g. "
                         f"{sorted(missing)[:5]}")
    return len(bench_set.expected)


def configmap_values(namespace):
    template = '{range .items[*]}{.metadata.name}={.data.value}{"\\n"}{end}'
    out = kubectl("get", "configmaps", "-n", namespace, "-o", f"jsonpath={template}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def written(changes):
    """The 1% change was written: every changed ConfigMap holds its new value."""
    wrong = []
    for ns in sorted({ns for ns, _ in changes}):
        values = configmap_values(ns)
        wrong += [(ns, n, values.get(n)) for (cns, n), v in changes.items() if cns == ns and values.get(n) != v]
    if wrong:
        raise BenchError(f"{len(wrong)} of {len(changes)} changed ConfigMaps do not hold the new value, "
                         f"e.g. {wrong[:3]}")
    return len(changes)


# --- the audit log -------------------------------------------------------------------

class Audit:
    """Requests of audited identities (hack/controlplane.sh identity NAME), from the
    API server's audit log; `None` when the plane was started without one. The
    plane is $KUBECONFIG's, or the one whose state directory is `cp_dir`."""

    def __init__(self, cp_dir=None):
        state = Path(cp_dir) if cp_dir else Path(os.environ["KUBECONFIG"]).parent
        self.cp_dir = state
        self.path = state / "audit.log"

    def available(self):
        return self.path.exists()

    def identity(self, name):
        """A kubeconfig whose requests the audit log records (user `name`)."""
        env = dict(os.environ, CONVERGE_CP_DIR=str(self.cp_dir))
        return run(["bash", ROOT / "hack/controlplane.sh", "identity", name], env=env)[1].stdout.strip()

    def requests(self, user, since, until):
        """Requests by `user` received in [since, until] (wall-clock seconds): one
        per audit ID, watches counted when they start."""
        seen = {}
        for path in (self.path.with_name("audit.log"), *sorted(self.path.parent.glob("audit-*.log"))):
            with open(path) as f:
                for line in f:
                    if f'"username":"{user}"' not in line:
                        continue
                    event = json.loads(line)
                    received = parse_time(event["requestReceivedTimestamp"])
                    if since <= received <= until:
                        seen[event["auditID"]] = event
        return summarize(seen.values())


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def dry_run(event):
    """A request with ?dryRun=All: the server validates and answers, nothing is
    stored (issue 28: Flux dry-runs every object of a pass, which is no write)."""
    return "dryRun=" in event.get("requestURI", "")


def summarize(events):
    by_kind = Counter()
    agents = Counter()
    writes = per_object = dry_runs = 0
    for e in events:
        ref = e.get("objectRef", {})
        resource = ref.get("resource", e.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        dry = e["verb"] in WRITE_VERBS and dry_run(e)
        by_kind[f"{e['verb']} {resource}" + (" (dry run)" if dry else "")] += 1
        agents[e.get("userAgent", "?").split(" ")[0]] += 1
        dry_runs += dry
        writes += e["verb"] in WRITE_VERBS and not dry
        per_object += bool(ref.get("name")) and e["verb"] != "watch"
    return {"total": sum(by_kind.values()), "writes": writes, "dry_runs": dry_runs, "per_object": per_object,
            "watches": sum(v for k, v in by_kind.items() if k.startswith("watch ")),
            "lists": sum(v for k, v in by_kind.items() if k.startswith("list ")),
            "by_verb_resource": dict(sorted(by_kind.items())), "user_agents": dict(agents), "source": "audit log"}


# --- outcomes read back field by field ----------------------------------------------

SAMPLE = 24
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|m|k|M|G|T)?$")
UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
         "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40}


def quantity(value):
    """A resource quantity as a number ("0.125Gi" and "128Mi" are equal), else None."""
    m = QUANTITY.match(value) if isinstance(value, str) else None
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def mismatches(desired, live, path=""):
    """Where `live` does not hold what `desired` says: every field the manifest sets
    must be there with its value (the server may add defaults; a list is compared
    item by item). Quantities compare by value."""
    if desired is None or desired == {}:
        return []   # `creationTimestamp: null`, `status: {}` of a client-side rendering
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [m for k, v in desired.items() for m in mismatches(v, live.get(k), f"{path}.{k}")]
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) < len(desired):
            return [f"{path}: {live!r} lacks items of {desired!r}"]
        return [m for i, (d, l) in enumerate(zip(desired, live)) for m in mismatches(d, l, f"{path}[{i}]")]
    if desired == live or (quantity(desired) is not None and quantity(desired) == quantity(live)):
        return []
    return [f"{path}: {live!r}, not {desired!r}"]


def as_stored(doc):
    """A Secret's stringData is stored base64-encoded under data."""
    if doc.get("kind") == "Secret" and "stringData" in doc:
        doc = dict(doc)
        data = dict(doc.get("data") or {})
        data.update({k: base64.b64encode(v.encode()).decode() for k, v in doc.pop("stringData").items()})
        doc["data"] = data
    return doc


def json_documents(text):
    """The objects of kubectl's `-o json` output for several documents: one JSON
    object after the other, or a List."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return docs
        doc, at = decoder.raw_decode(text, at)
        docs += doc["items"] if doc.get("kind") == "List" else [doc]


def sample_matches(bench_set, tool, size=SAMPLE):
    """After a first apply: a sample of the set (evenly spread over the files, every
    kind, the microservices-demo corpus too) read back with the helper kubectl and
    compared field by field with the manifests, not only found (issue 28). The
    manifests are parsed by `kubectl create --dry-run=client` (no YAML library
    needed). A tool that stores something else fails the run."""
    files = sorted(p for p in bench_set.directory.rglob("*.yaml") if p.name != "kustomization.yaml")
    docs = []
    chosen = files[:: max(1, len(files) // size)]
    for path in chosen + [p for p in files if p.parent.name.endswith("-demo") and p not in chosen]:
        docs += json_documents(kubectl("create", "--dry-run=client", "-o", "json", "-f", path))
    docs = docs[:: max(1, len(docs) // size)][:size]
    wrong = []
    for doc in docs:
        group, _, version = doc["apiVersion"].rpartition("/")
        resource = f"{doc['kind']}.{version}.{group}" if group else f"{doc['kind']}.{version}."
        meta = doc["metadata"]
        args = ["get", resource, meta["name"], "-o", "json"] + (["-n", meta["namespace"]] if meta.get("namespace") else [])
        live = json.loads(kubectl(*args))
        desired = {k: v for k, v in as_stored(doc).items() if k not in ("apiVersion", "kind")}
        desired["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
        wrong += [f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']}{m}" for m in mismatches(desired, live)]
    if wrong:
        raise BenchError(f"after {tool}'s first apply, {len(wrong)} fields of a sample of {len(docs)} objects "
                         f"differ from the manifests, e.g. {wrong[:5]}")
    return len(docs)
