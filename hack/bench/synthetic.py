"""The synthetic set: "apps" of 7 objects over NAMESPACES namespaces, plus the
microservices-demo corpus in a fifth, and the edits the scenarios make to it."""

import re
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT

CORPUS = ROOT / "tests/fixtures/microservices-demo/kubernetes-manifests.yaml"
NAMESPACES = 4


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


@dataclass
class Set:
    """One generated copy of the set, under its own prefix (namespaces `prefix-*`)."""
    directory: Path
    prefix: str
    files: list          # the app files (not the namespaces or the corpus)
    namespaces: list
    expected: set        # (kind, namespace or "", name) of every object
    parts: list = None   # with generate(group=…): the parts' directories, "base" first

    @property
    def objects(self):
        return len(self.expected)


def generate(directory, prefix, objects, group=0):
    """Writes `objects` synthetic objects over NAMESPACES namespaces plus the
    microservices-demo corpus (in its own namespace). `group`: the layout of a
    repository split into parts of about that many objects, as Flux recommends one
    Kustomization per ~1000 objects (issue 28): the Namespaces and the corpus in
    `base/`, the apps in `part-NNN/<namespace>/` (`Set.parts`)."""
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / "base" if group else directory
    base.mkdir(exist_ok=True)
    namespaces = [f"{prefix}-{i}" for i in range(NAMESPACES)] + [f"{prefix}-demo"]
    files = []
    ns_docs = "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n" for ns in namespaces)
    # kubectl applies files in name order and does not create Namespaces first.
    (base / "00-namespaces.yaml").write_text(ns_docs)
    remaining = objects - len(namespaces)
    app = 0
    parts = ["base"] if group else []
    while remaining > 0:
        ns = namespaces[app % NAMESPACES]
        kinds = APP[: min(len(APP), remaining)]
        text = "".join("---\n" + make(f"app-{app}", ns) for make in kinds)
        under = directory
        if group:
            part = f"part-{app * len(APP) // group:03d}"
            if parts[-1] != part:
                parts.append(part)
            under = directory / part
        (under / ns).mkdir(parents=True, exist_ok=True)
        path = under / ns / f"app-{app:05d}.yaml"
        path.write_text(text)
        files.append(path)
        remaining -= len(kinds)
        app += 1
    corpus = CORPUS.read_text()
    corpus = re.sub(r"^metadata:\n", f"metadata:\n  namespace: {prefix}-demo\n", corpus, flags=re.M)
    (base / f"{prefix}-demo").mkdir(exist_ok=True)
    (base / f"{prefix}-demo" / "microservices-demo.yaml").write_text(corpus)
    return Set(directory, prefix, files, namespaces, expected_objects(directory), parts)


def expected_objects(directory):
    """(kind, namespace, name) of every document written (the files are ours or the
    corpus, block-style YAML: no YAML library needed, which hack/bench.sh's Python
    may lack)."""
    found = set()
    for path in sorted(directory.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in re.split(r"^---\s*$", path.read_text(), flags=re.M):
            kind = re.search(r"^kind: (\S+)", doc, flags=re.M)
            meta = re.search(r"^metadata:\n((?:[ #].*\n?)*)", doc, flags=re.M)
            if not kind or not meta:
                continue
            name = re.search(r"^  name: (\S+)", meta.group(1), flags=re.M)
            ns = re.search(r"^  namespace: (\S+)", meta.group(1), flags=re.M)
            found.add((kind.group(1), ns.group(1) if ns else "", name.group(1)))
    return found


def configmaps_in(files, namespace):
    names = []
    for path in files:
        text = path.read_text()
        if f"namespace: {namespace}\n" in text and "kind: ConfigMap" in text:
            names.append((path, re.search(r"kind: ConfigMap\nmetadata:\n  name: (\S+)", text).group(1)))
    return names


def change_one_percent(bench_set, value):
    """Changes one ConfigMap value in evenly spread files (1% of the objects);
    returns {(namespace, name): value} for the read-back."""
    count = max(1, bench_set.objects // 100)
    stride = max(1, len(bench_set.files) // count)
    chosen = bench_set.files[::stride][:count]
    changed = {}
    for path in chosen:
        text = path.read_text()
        path.write_text(re.sub(r'value: "[^"]*"', f'value: "{value}"', text, count=1))
        name = re.search(r"kind: ConfigMap\nmetadata:\n  name: (\S+)\n  namespace: (\S+)", text)
        changed[(name.group(2), name.group(1))] = value
    return changed
