"""The command-line tools measured side by side: each applies a set for the first
time, diffs it unchanged, and applies a 1% change. A peer that was not built is
kept in the results as "not built: <reason>"."""

import json
import os
import re

from .common import CONVERGE, RAW, BenchError, run, tool_version

def kubectl_measured():
    """The kubectl whose runs are timed: one within the server's skew (hack/peers.sh
    builds it) when there is one, else the helper kubectl, with the reason."""
    skew = os.environ.get("KUBECTL_SKEW")
    if skew and os.access(skew, os.X_OK):
        return skew, None
    return "kubectl", ("KUBECTL_SKEW is not set (hack/peers.sh env): the kubectl on PATH is used, "
                       "which may be outside the server's ±1 skew")


class Tool:
    name = ""
    label = ""            # what the report calls the command
    scenarios = ("first_apply", "noop_diff", "one_percent_change")

    def missing(self):
        """None when runnable, else why not."""
        return None

    def version(self):
        return None

    def cleanup(self, bench_set):
        """Anything beyond the set's namespaces (records kept elsewhere)."""


class Converge(Tool):
    name = "converge"
    label = "converge apply --prune"

    def _args(self, s):
        return ["--prune", "--name", s.prefix, "-n", f"{s.prefix}-0"]

    def missing(self):
        return None if CONVERGE.exists() else f"{CONVERGE} does not exist (cargo build --release)"

    def version(self):
        return tool_version([CONVERGE, "--version"])

    def first_apply(self, s):
        return run([CONVERGE, "apply", s.directory, *self._args(s)])[0]

    def change(self, s):
        return self.first_apply(s)

    def noop_diff(self, s):
        took, proc = run([CONVERGE, "diff", s.directory, *self._args(s)], check=False)
        if proc.returncode != 0:
            raise BenchError(f"converge diff found changes after apply ({proc.returncode}):\n{proc.stdout[-2000:]}")
        return took, False


class Kubectl(Tool):
    name = "kubectl"
    label = "kubectl apply --server-side"

    def __init__(self):
        self.cmd, self.note = kubectl_measured()

    def version(self):
        out = json.loads(run([self.cmd, "version", "--client", "-o", "json"])[1].stdout)
        return out["clientVersion"]["gitVersion"] + (f" ({self.note})" if self.note else "")

    def first_apply(self, s):
        return run([self.cmd, "apply", "--server-side", "-R", "-f", s.directory])[0]

    def change(self, s):
        return self.first_apply(s)

    def noop_diff(self, s):
        took, proc = run([self.cmd, "diff", "--server-side", "-R", "-f", s.directory], check=False)
        # kubectl diff GETs an object, then dry-runs it: a controller's status update
        # in between shows up as a change (converge re-reads in that case).
        if proc.returncode not in (0, 1):
            raise BenchError(f"kubectl diff failed:\n{proc.stderr[-2000:]}")
        return took, proc.returncode == 1


class KubectlApplySet(Kubectl):
    name = "kubectl-applyset"
    label = "kubectl apply --server-side --prune --applyset"
    scenarios = ("first_apply",)

    def first_apply(self, s):
        env = dict(os.environ, KUBECTL_APPLYSET="true")
        # kubectl's namespaced ApplySet parent needs -n, and -n refuses objects of
        # other namespaces: a kubectl user runs one applyset per namespace.
        took = run([self.cmd, "apply", "--server-side", "-f", s.directory / "00-namespaces.yaml"])[0]
        for sub in sorted(p for p in s.directory.iterdir() if p.is_dir()):
            took += run([self.cmd, "apply", "--server-side", "--prune", f"--applyset=configmaps/{s.prefix}",
                         "-n", sub.name, "-R", "-f", sub], env=env)[0]
        return took


class Raw(Tool):
    name = "raw"
    label = "raw limit: the same SSA PATCHes, same concurrency, no reads or diffing"
    scenarios = ("first_apply",)

    def missing(self):
        return None if RAW.exists() else f"{RAW} does not exist (cargo build --release --example raw_apply)"

    def first_apply(self, s):
        return run([RAW, s.directory])[0]


def peer_binary(variable, hint):
    path = os.environ.get(variable)
    if not path:
        why = os.environ.get("BENCH_PEERS_ERROR") or \
            f"${variable} is not set ({hint}; hack/bench.sh logs it to target/bench/peers-build.log)"
        return None, f"not built: {why}"
    if not os.access(path, os.X_OK):
        return None, f"not built: ${variable}={path} is not an executable ({hint})"
    return path, None


class Kapp(Tool):
    name = "kapp"
    label = "kapp deploy --wait=false"

    def __init__(self):
        self.cmd, self.reason = peer_binary("KAPP", "bash hack/peers.sh build")

    def missing(self):
        return self.reason

    def version(self):
        return os.environ.get("KAPP_VERSION") or tool_version([self.cmd, "version"])

    def first_apply(self, s):
        # --wait=false: kapp waits for readiness by default, which times the
        # controllers, not the apply (the other tools do not wait either).
        return run([self.cmd, "deploy", "-a", s.prefix, "-n", "default", "-f", s.directory, "-y", "--wait=false"])[0]

    def change(self, s):
        return self.first_apply(s)

    def noop_diff(self, s):
        # --diff-exit-status: 2 no changes, 3 changes pending (kapp's
        # deploy_diff_exit_status.go).
        took, proc = run([self.cmd, "deploy", "-a", s.prefix, "-n", "default", "-f", s.directory, "--diff-run",
                          "--diff-exit-status"], check=False)
        if proc.returncode not in (2, 3):
            raise BenchError(f"kapp deploy --diff-run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        # Exit 3 also means "waiting to reconcile" with no operation (a LoadBalancer
        # Service without ingress on kwok): only a planned operation is a change.
        return took, not re.search(r"Op:\s+0 create, 0 delete, 0 update", proc.stdout)

    def cleanup(self, s):
        # kapp keeps its app record (and change records) in the default namespace;
        # the set's own namespaces are already gone, so this deletes only records.
        run([self.cmd, "delete", "-a", s.prefix, "-n", "default", "-y", "--wait=false"], check=False, timeout=600)


class FluxSsa(Tool):
    name = "flux-ssa"
    label = "Flux's engine (fluxcd/pkg/ssa ApplyAllStaged)"

    def __init__(self):
        self.cmd, self.reason = peer_binary("FLUX_SSA", "bash hack/peers.sh build")

    def missing(self):
        return self.reason

    def version(self):
        return os.environ.get("FLUX_SSA_VERSION")

    def first_apply(self, s):
        took, proc = run([self.cmd, "apply", "--dir", s.directory])
        self.last = json.loads(proc.stdout.strip().splitlines()[-1])
        return took

    def change(self, s):
        return self.first_apply(s)

    def noop_diff(self, s):
        took, proc = run([self.cmd, "diff", "--dir", s.directory], check=False)
        if proc.returncode not in (0, 1):
            raise BenchError(f"flux-ssa diff failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return took, proc.returncode == 1


class ArgoEngine(Tool):
    """Argo CD's engine (hack/peers/argo-engine): each command builds the cluster
    cache first (every kind of the cluster listed and watched), which a running
    application controller has already; the harness prints that part apart
    (`cache_seconds`), kept in `last`."""
    name = "argo-engine"
    label = "Argo CD's engine (gitops-engine sync)"
    scenarios = ("first_apply", "noop_diff", "noop_sync", "one_percent_change")

    def __init__(self):
        self.cmd, self.reason = peer_binary("ARGO_ENGINE", "bash hack/peers.sh build")

    def missing(self):
        return self.reason

    def version(self):
        return os.environ.get("ARGO_ENGINE_VERSION")

    def first_apply(self, s):
        took, proc = run([self.cmd, "sync", "--dir", s.directory, "--name", s.prefix])
        self.last = json.loads(proc.stdout.strip().splitlines()[-1])
        return took

    def change(self, s):
        return self.first_apply(s)

    def noop_sync(self, s):
        """A sync of the unchanged set: what Argo CD does when a sync is requested
        (or auto-sync runs) and nothing changed; every task must end Synced."""
        took = self.first_apply(s)
        statuses = self.last.get("by_status", {})
        if set(statuses) - {"Synced"}:
            raise BenchError(f"argo-engine's no-op sync did not end Synced: {self.last}")
        return took

    def noop_diff(self, s):
        # The comparison of a refresh (exit 1: something differs). Argo CD's no-op
        # sync (a sync that finds nothing to change) is `sync` again: it dry-runs
        # and re-applies every object.
        took, proc = run([self.cmd, "diff", "--dir", s.directory, "--name", s.prefix], check=False)
        if proc.returncode not in (0, 1):
            raise BenchError(f"argo-engine diff failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return took, proc.returncode == 1


ALL = [Converge, Kubectl, KubectlApplySet, Raw, Kapp, FluxSsa, ArgoEngine]


def tools():
    return [cls() for cls in ALL]

