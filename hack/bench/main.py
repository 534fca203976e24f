"""Orchestration: per size, the command-line tools (rotated between repetitions,
each on a settled cluster), then the daemons, then the rendered-source scenarios,
then converge's daemon with one cluster and with two."""

import argparse
import hashlib
import json
import os
import re
import subprocess
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from . import cluster, common, daemons, report
from .clusters import clusters_scenario, default_second_plane
from .cluster import Audit, delete_namespaces, present, sample_matches, settle, wait_quiet, written
from .common import (CONVERGE, NS_PREFIX, ROOT, BenchError, ToolTimeout, git_commit, run, kube_versions, log, machine, stats, tool_version)
from .gitserver import GitServer, Repo
from .relist import main as relist_main, relist_scenario
from .synthetic import change_one_percent, generate
from .tools import kubectl_measured, tools

IDLE_MIN = 360  # a full resync (10 × 30 s) and a watch renewal (240-300 s) fit in it
# The default budget of one command of a tool (issue 28): at 100 000 objects the peers
# that do not finish in an hour are reported as such, and converge's figures are
# still made.
TOOL_TIMEOUT = 3600


# --- command-line tools ----------------------------------------------------------------

def cli_scenarios(args, n, work, index=0):
    """`index`: the size's position in the run, which shifts the rotation so that
    with --repeat 1 the order still changes from size to size (issue 28)."""
    available, absent = [], {}
    for tool in tools():
        reason = tool.missing()
        (absent.__setitem__(tool.name, (reason, tool.scenarios)) if reason else available.append(tool))
        if reason:
            log(f"{tool.name}: {reason}")
    out = {s: {t.name: [] for t in available if s in t.scenarios}
           for s in ("first_apply", "noop_diff", "noop_sync", "one_percent_change")}
    false_changes = {t.name: 0 for t in available if "noop_diff" in t.scenarios}
    orders, changed_objects, unfinished, sampled = [], 0, {}, {}
    # Repetition -1 is each tool's warm-up (issue 28): its page cache, the API
    # server's caches of its kinds, Go's and kubectl's discovery caches; its figures
    # are dropped.
    warmups = [-1] if args.warmup else []
    for rep in warmups + list(range(args.repeat)):
        k = (rep + index) % len(available)
        order = available[k:] + available[:k]
        if rep >= 0:
            orders.append([t.name for t in order])
        for tool in order:
            if tool.name in unfinished:
                continue
            settle(args.settle_timeout)
            prefix = f"{NS_PREFIX}b{n}-{tool.name.replace('-', '')[:8]}-{'w' if rep < 0 else rep}"
            s = generate(work / prefix, prefix, n)
            try:
                record = out if rep >= 0 else {k: {t.name: [] for t in available} for k in out}
                false_change, changed, checked = tool_scenarios(args, n, rep, tool, s, record)
                sampled[tool.name] = checked
                if tool.name in false_changes and rep >= 0:
                    false_changes[tool.name] += false_change
                changed_objects = changed or changed_objects
            except ToolTimeout as e:
                unfinished[tool.name] = e.args[0].removeprefix("bench: error: ")
                which = "warm-up" if rep < 0 else f"rep {rep + 1}/{args.repeat}"
                log(f"{n} objects, {which}, {tool.name}: {unfinished[tool.name]}; left out from here on")
            delete_namespaces(s.namespaces, args.settle_timeout)
            tool.cleanup(s)
            shutil.rmtree(s.directory)
    results = {scenario: {name: stats(v) for name, v in per_tool.items() if v} for scenario, per_tool in out.items()}
    for scenario, per_tool in results.items():
        for name, (reason, scenarios) in absent.items():
            if scenario in scenarios:
                per_tool[name] = {"not_built": reason}
        for name, reason in unfinished.items():
            per_tool.setdefault(name, {"not_measured": reason})
    results["noop_diff"]["runs_reporting_false_changes"] = false_changes
    results["one_percent_change"]["changed_objects"] = changed_objects
    results["order"] = orders
    results["warmup"] = bool(warmups)
    results["sample_checked"] = sampled
    results["finished"] = sorted(set(t.name for t in available) - set(unfinished))
    return results


def tool_scenarios(args, n, rep, tool, s, out):
    """One tool's first apply, no-op diff and 1% change on the set `s`; whether its
    no-op diff reported a change, how many objects the change wrote, and how many
    were read back field by field after the first apply."""
    took = tool.first_apply(s)
    present(s)
    checked = sample_matches(s, tool.name)
    out["first_apply"][tool.name].append(took)
    which = "warm-up" if rep < 0 else f"rep {rep + 1}/{args.repeat}"
    line = f"{n} objects, {which}, {tool.name}: first apply {took:.2f} s ({checked} objects checked field by field)"
    false_change, changed = 0, 0
    if "noop_diff" in tool.scenarios:
        wait_quiet(args.settle_timeout, f"after {tool.name}'s first apply")
        took, false_change = tool.noop_diff(s)
        out["noop_diff"][tool.name].append(took)
        if "noop_sync" in tool.scenarios:
            took_sync = tool.noop_sync(s)
            out["noop_sync"][tool.name].append(took_sync)
            line_sync = f", no-op sync {took_sync:.2f} s"
        else:
            line_sync = ""
        changes = change_one_percent(s, f"c{rep}")
        took_change = tool.change(s)
        written(changes)
        changed = len(changes)
        out["one_percent_change"][tool.name].append(took_change)
        line += f", no-op diff {took:.2f} s{line_sync}, 1% ({changed} objects) {took_change:.2f} s"
    log(line)
    return false_change, changed, checked


# --- daemons ---------------------------------------------------------------------------------

def full_resync_period(args):
    return args.interval_seconds * args.full_resync_every


def idle_window(args, n):
    """The idle window of every daemon at `n` objects (issue 28): one length for all,
    long enough to hold a full pass of each (the full resync period, plus the time
    a pass over `n` objects may take), so that no window is extended and the
    figures compare; each one says whether it held a full pass."""
    return max(args.idle, full_resync_period(args) + 60 + n // 50)


# Each part of a daemon's repository (one Flux Kustomization) holds about this many
# objects, as Flux recommends (issue 28); converge reads the same repository.
PART_OBJECTS = 1000


def converge_daemon(args, n, work, git, audit):
    prefix = f"{NS_PREFIX}d{n}-cv"
    repo = Repo(git, prefix, work / prefix)
    s = generate(repo.work, prefix, n, group=PART_OBJECTS)
    repo.commit_all("the set")
    kubeconfig = audit.identity(daemons.ConvergeDaemon.user) if audit.available() else None
    out = {"source": "git (loopback git http-backend)", "interval": f"{args.interval_seconds}s",
           "full_resync_every": args.full_resync_every}
    d = daemons.ConvergeDaemon(repo.url, prefix, f"{prefix}-0", args.port, f"{args.interval_seconds}s", kubeconfig,
                               extra_config=f"full_resync_every = {args.full_resync_every}\n")
    try:
        out["first_sync_seconds"] = d.synced_after
        present(s)
        out["sample_checked"] = sample_matches(s, "converge's daemon")
        out["observed_after_seconds"] = d.wait_observed()
        wait_quiet(args.settle_timeout, "after the daemon's first reconcile")
        window = idle_window(args, n)
        out["idle"] = daemons.idle(d, window, audit, window)
        ns = s.namespaces[0]
        before = d.metrics()
        out["drift"] = daemons.drift(ns, s, args.edits, 60)
        out["drift"].update(daemons.reconcile_cost(before, d.metrics(), prefix))

        def publish():
            repo.commit_all("one file")
            started = time.monotonic()
            d.trigger()
            return started
        before = d.metrics()
        out["commit_git"] = daemons.commit_to_converged(ns, s, args.edits, publish, 120, "git")
        out["commit_git"].update(daemons.reconcile_cost(before, d.metrics(), prefix))
    finally:
        d.stop()
    # The same set as a directory source: a file write is the commit.
    d = daemons.ConvergeDaemon(repo.work, prefix, f"{prefix}-0", args.port, f"{args.interval_seconds}s", kubeconfig)
    try:
        d.wait_observed()
        before = d.metrics()
        out["commit_dir"] = daemons.commit_to_converged(s.namespaces[0], s, args.edits, time.monotonic, 60, "dir")
        out["commit_dir"].update(daemons.reconcile_cost(before, d.metrics(), prefix))
    finally:
        d.stop()
    delete_namespaces(s.namespaces, args.settle_timeout)
    return out


def flux_daemon(args, n, work, git, audit, tuning="flux"):
    """Flux's controllers with their defaults (`flux`) or with the tuning of Flux's
    own benchmark (`flux-tuned`, daemons.FLUX_TUNINGS), one Kustomization per part."""
    prefix = f"{NS_PREFIX}d{n}-{'ft' if tuning == 'flux-tuned' else 'fx'}"
    if not daemons.peers_script().exists() or os.environ.get("BENCH_PEERS_ERROR"):
        return {"not_built": "not built: " + os.environ.get("BENCH_PEERS_ERROR", "hack/peers.sh does not exist")}
    if not os.environ.get("SOURCE_CONTROLLER"):
        return {"not_built": "not built: $SOURCE_CONTROLLER is not set (hack/peers.sh env)"}
    repo = Repo(git, prefix, work / prefix)
    s = generate(repo.work, prefix, n, group=PART_OBJECTS)
    commit = repo.commit_all("the set")
    kubeconfig = audit.identity(daemons.FluxControllers.user) if audit.available() else None
    ks_interval = f"{full_resync_period(args)}s"
    out = {"gitrepository_interval": f"{args.interval_seconds}s", "kustomization_interval": ks_interval,
           "kustomizations": len(s.parts), "tuning": daemons.FLUX_TUNINGS[tuning],
           "trigger": "reconcile.fluxcd.io/requestedAt on the GitRepository (flux reconcile source git); "
                      "the clock starts when the annotation is written"}
    try:
        f = daemons.FluxControllers(repo.url, f"{prefix}-flux", f"{args.interval_seconds}s", ks_interval, s.parts,
                                    kubeconfig, tuning)
    except BenchError as e:
        return {"not_built": f"hack/peers.sh flux-up failed: {e}"}
    try:
        budget = common.TOOL_TIMEOUT or args.settle_timeout * 4
        try:
            out["first_sync_seconds"] = f.wait_applied(commit, budget)
        except BenchError as e:
            if not common.TOOL_TIMEOUT:
                raise
            log(f"Flux did not finish its first sync within --tool-timeout {budget} s: left out at {n} objects")
            out["not_measured"] = f"did not finish its first sync within {budget} s (--tool-timeout): {str(e)[:300]}"
            return out
        present(s)
        out["sample_checked"] = sample_matches(s, f"{tuning}'s controllers")
        wait_quiet(args.settle_timeout, "after Flux's first reconcile")
        window = idle_window(args, n)
        out["idle"] = daemons.idle(f, window, audit, window)
        ns = s.namespaces[0]

        def publish():
            repo.commit_all("one file")
            f.trigger()
            return time.monotonic()
        # A commit landing during a pass waits for it and then a whole pass of its own
        # (over 4 minutes each at 10000 objects).
        pass_budget = 300 + n // 20
        out["commit"] = daemons.commit_to_converged(ns, s, args.flux_edits, publish, 2 * pass_budget, "flux")
        # Flux has no watch on what it applied: drift is corrected at the next
        # interval, so the latency is set by the interval chosen here.
        f.set_interval(args.flux_drift_interval)
        time.sleep(2)
        interval = int(args.flux_drift_interval.rstrip("s"))
        # An edit landing just after a pass read the object waits for the next one.
        out["drift"] = daemons.drift(ns, s, args.flux_edits, 3 * interval + 2 * pass_budget, spread=interval)
        out["drift"]["kustomization_interval"] = args.flux_drift_interval
    finally:
        f.stop()
        delete_namespaces(s.namespaces + [f"{prefix}-flux"], args.settle_timeout)
    return out


def argo_daemon(args, n, work, audit):
    """Argo CD's engine as a daemon (`argo-engine run`): its first sync, RSS while
    it holds the set, and drift healed by selfHeal (a watch event of its cluster
    cache triggers a sync)."""
    if not os.environ.get("ARGO_ENGINE"):
        return {"not_built": "not built: " + os.environ.get("BENCH_PEERS_ERROR", "$ARGO_ENGINE is not set "
                                                             "(hack/peers.sh env)")}
    prefix = f"{NS_PREFIX}d{n}-ar"
    s = generate(work / prefix, prefix, n)
    kubeconfig = audit.identity(daemons.ArgoEngineDaemon.user) if audit.available() else None
    out = {"trigger": "selfHeal: a refresh (a diff against its cluster cache) on every watch event of an owned "
                      "object, a sync when it finds a difference"}
    try:
        try:
            d = daemons.ArgoEngineDaemon(s.directory, prefix, kubeconfig, common.TOOL_TIMEOUT or 1200)
        except ToolTimeout as e:
            log(f"Argo CD's engine: {e.args[0]}: left out at {n} objects")
            return {"not_measured": e.args[0].removeprefix("bench: error: ")}
        try:
            out["first_sync_seconds"] = d.synced_after
            out["first_sync"] = d.first_sync
            present(s)
            out["sample_checked"] = sample_matches(s, "Argo CD's engine")
            wait_quiet(args.settle_timeout, "after Argo CD's engine's first sync")
            try:
                with common.Sampler(d.pids()) as sampler:
                    out["drift"] = daemons.drift(s.namespaces[0], s, args.flux_edits, 600)
                out["rss_during_drift"] = sampler.result()
            except BenchError as e:
                # A peer that does not heal is a finding about the peer (or its
                # harness), not a reason to lose the run's other figures.
                log(f"Argo CD's engine: drift not healed: {e.args[0]}")
                out["drift"] = {"not_measured": e.args[0].removeprefix("bench: error: ")}
            out["syncs"] = len(d.syncs)
        finally:
            d.stop()
    finally:
        delete_namespaces(s.namespaces, args.settle_timeout)
    return out


DAEMONS = ["converge", "flux", "flux-tuned", "argo"]


def daemon_scenarios(args, n, work, audit, index):
    """Every daemon in turn, the order rotated from size to size."""
    git = GitServer(work / "git-server")
    out = {}
    try:
        k = index % len(DAEMONS)
        order = [w for w in DAEMONS[k:] + DAEMONS[:k] if w not in args.skip]
        for which in order:
            settle(args.settle_timeout)
            log(f"{n} objects: the {which} daemon")
            if which == "converge":
                out[which] = converge_daemon(args, n, work, git, audit)
            elif which == "argo":
                out[which] = argo_daemon(args, n, work, audit)
            else:
                out[which] = flux_daemon(args, n, work, git, audit, which)
        out["order"] = order
        out["finished"] = [w for w in order if isinstance(out[w], dict) and not
                           (out[w].get("not_built") or out[w].get("not_measured"))]
    finally:
        git.stop()
    return out


def kustomize_scenarios(args, n, work):
    """A dir source whose root is a kustomization of the set: resyncs of the
    unchanged overlay must not render; a one-file change is rendered and applied."""
    prefix = f"{NS_PREFIX}k{n}"
    s = generate(work / prefix, prefix, n)
    resources = sorted(str(p.relative_to(s.directory)) for p in s.directory.rglob("*.yaml"))
    (s.directory / "kustomization.yaml").write_text("resources:\n" + "".join(f"- {r}\n" for r in resources))
    out = {}
    key = lambda name: f'{name}{{source="{prefix}"}}'
    settle(args.settle_timeout)
    try:
        d = daemons.ConvergeDaemon(s.directory, prefix, f"{prefix}-0", args.port, "1s",
                                   extra_config="full_resync_every = 1\n")
        try:
            d.wait_observed()
            before = d.metrics()
            time.sleep(args.resync_window)
            after = d.metrics()
        finally:
            d.stop()
        delta = lambda name: after.get(key(name), 0) - before.get(key(name), 0)
        out["kustomize_resync"] = {"seconds": args.resync_window,
                                   "full_resyncs": delta("converge_reconcile_duration_seconds_count"),
                                   "renders": delta("converge_render_duration_seconds_count")}
        d = daemons.ConvergeDaemon(s.directory, prefix, f"{prefix}-0", args.port, "30s")
        try:
            d.wait_observed()
            before = d.metrics()
            out["kustomize_commit"] = daemons.commit_to_converged(s.namespaces[0], s, args.kustomize_edits,
                                                                  time.monotonic, 60, "kustomize")
            after = d.metrics()
        finally:
            d.stop()
        out["kustomize_commit"].update(daemons.reconcile_cost(before, after, prefix))
        renders = delta("converge_render_duration_seconds_count")
        out["kustomize_commit"]["renders"] = renders
        out["kustomize_commit"]["render_ms"] = 1000 * delta("converge_render_duration_seconds_sum") / renders \
            if renders else None
    finally:
        delete_namespaces(s.namespaces, args.settle_timeout)
    return out


# --- the run ------------------------------------------------------------------------------

def provenance(args, audit):
    server, helper = kube_versions("kubectl")
    cmd, note = kubectl_measured()
    measured = json.loads(subprocess.run([cmd, "version", "--client", "-o", "json"],
                                         capture_output=True, text=True).stdout)
    versions = {"converge": tool_version([CONVERGE, "version"]), "kubernetes": server,
                "kubectl_measured": measured["clientVersion"]["gitVersion"], "kubectl_helper": helper}
    for t in tools():
        if t.name in ("kapp", "flux-ssa", "argo-engine") and not t.missing():
            versions[t.name] = t.version()
    for key in ("SOURCE_CONTROLLER_VERSION", "KUSTOMIZE_CONTROLLER_VERSION", "KUBECTL_SKEW_VERSION"):
        if os.environ.get(key):
            versions[key.lower().removesuffix("_version")] = os.environ[key]
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": git_commit(),
            "binary": measured_binary(),
            "command": "hack/bench.sh " + " ".join(sys.argv[1:]), "machine": machine(), "versions": versions,
            "kubectl_note": note, "audit_log": audit.available(), "smoke": args.smoke,
            "settings": {k: v for k, v in vars(args).items() if k != "skip"} | {"skip": sorted(args.skip)}}


def measured_binary():
    """What was measured (issue 28), not only the script's commit: `converge
    version`'s output, and the binary's path, size, time and digest (a binary built
    from another tree, CONVERGE_BENCH_BIN, shows here)."""
    out = run([CONVERGE, "version"], check=False)[1]
    data = CONVERGE.read_bytes()
    return {"path": str(CONVERGE), "version_output": (out.stdout or out.stderr).strip(),
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "modified": datetime.fromtimestamp(CONVERGE.stat().st_mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def parse(argv):
    p = argparse.ArgumentParser(prog="hack/bench.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", default="1000",
                   help="comma-separated sizes, e.g. 1000,10000,30000 (default 1000)")
    p.add_argument("--repeat", default="3",
                   help="repetitions per size: one number, or one per size (e.g. 3,3,1); default 3")
    p.add_argument("--idle", type=int, default=IDLE_MIN, help=f"idle window in seconds (>= {IDLE_MIN})")
    p.add_argument("--edits", type=int, default=100, help="converge: drift edits and commits (default 100)")
    p.add_argument("--flux-edits", type=int, default=20, help="Flux: commits and drift edits (default 20)")
    p.add_argument("--flux-drift-interval", default="10s",
                   help="the Kustomization interval while Flux's drift correction is measured (default 10s)")
    p.add_argument("--kustomize-edits", type=int, default=30, help="commits of the kustomize source (default 30)")
    p.add_argument("--interval-seconds", type=int, default=30, help="converge's interval; Flux's GitRepository's")
    p.add_argument("--full-resync-every", type=int, default=10,
                   help="converge's full_resync_every; Flux's Kustomization interval is interval × this")
    p.add_argument("--resync-window", type=int, default=10, help="seconds of the kustomize source's full resyncs")
    p.add_argument("--settle-timeout", type=int, default=0,
                   help="seconds a settle or deletion may take (default: 600, or N/10 when larger)")
    p.add_argument("--port", type=int, default=19480, help="the converge daemon's HTTP port")
    p.add_argument("--tool-timeout", type=int, default=TOOL_TIMEOUT,
                   help="seconds one command of a tool (or a daemon's first sync) may take; a tool past it is "
                        f"reported as \"did not finish\" at that size and left out, the run goes on (default "
                        f"{TOOL_TIMEOUT}; 0: no limit)")
    p.add_argument("--quiet-writes", type=int, default=cluster.QUIET_WRITES,
                   help="writes (of anyone) the API server may see in 6 s for the cluster to count as settled "
                        f"(default {cluster.QUIET_WRITES}: leases only; a plane shared with running tests needs more, "
                        "and its figures are then not for quoting)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="leave out each command-line tool's uncounted warm-up run")
    p.add_argument("--skip", default="",
                   help="comma-separated parts to leave out: cli,converge,flux,flux-tuned,argo,kustomize,relist,clusters")
    p.add_argument("--second-plane", default=default_second_plane(),
                   help="state directory of the second plane for the clusters part, started there (one kwok "
                        "node) when not up (default $CONVERGE_SECOND_CP_DIR, else "
                        "/tmp/converge-controlplane-$UID-second, hack/test.sh's)")
    p.add_argument("--out", help="results file (default bench/results/<date>-<commit>.json)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # allows a short --idle
    args = p.parse_args(argv)
    args.sizes = [int(x) for x in args.objects.split(",")]
    reps = [int(x) for x in args.repeat.split(",")]
    if len(reps) not in (1, len(args.sizes)):
        p.error("--repeat: one number, or one per size")
    args.repeats = reps * len(args.sizes) if len(reps) == 1 else reps
    args.skip = {x for x in args.skip.split(",") if x}
    args.settle_timeout_given = args.settle_timeout
    if not re.fullmatch(r"[1-9]\d*s", args.flux_drift_interval):
        p.error(f"--flux-drift-interval {args.flux_drift_interval}: whole seconds, e.g. 10s")
    if args.idle < IDLE_MIN and not args.smoke:
        p.error(f"--idle {args.idle}: the window must be >= {IDLE_MIN} s to include a full resync and a watch renewal")
    return args


def notify_main(argv):
    """`hack/bench.sh notify`: commit-to-converged with no [[notify]] target, a
    healthy receiver and one that never answers (hack/bench/notify.py)."""
    from . import notify
    p = argparse.ArgumentParser(prog="hack/bench.sh notify", description=notify.__doc__)
    p.add_argument("--objects", type=int, default=100, help="objects in the set (default 100)")
    p.add_argument("--edits", type=int, default=100, help="commits per mode (default 100: enough for a p99)")
    p.add_argument("--rounds", type=int, default=2, help="turns the modes take, the order rotated (default 2)")
    p.add_argument("--port", type=int, default=19480, help="the converge daemon's HTTP port")
    p.add_argument("--settle-timeout", type=int, default=600, help="seconds a namespace deletion may take")
    p.add_argument("--out", help="results file (default bench/results/<date>-<commit>-notify.json)")
    args = p.parse_args(argv)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "commit": git_commit(),
            "command": "hack/bench.sh " + " ".join(sys.argv[1:]), "machine": machine(),
            "versions": {"converge": tool_version([CONVERGE, "--version"])}, "binary": str(CONVERGE),
            "settings": vars(args)}
    out = Path(args.out) if args.out else ROOT / "bench/results" / f"{meta['date'][:10]}-{meta['commit']}-notify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="converge-bench-") as work:
        work = Path(work)
        git = GitServer(work / "git")
        try:
            results = {"meta": meta, "notify": notify.notify_scenario(args, work, git)}
        finally:
            git.stop()
    results["meta"]["seconds"] = time.monotonic() - started
    out.write_text(json.dumps(results, indent=2))
    print(notify.render(results))
    log(f"wrote {out}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report.main(argv[1:])
    if argv[:1] == ["notify"]:
        return notify_main(argv[1:])
    if argv[:1] == ["relist"]:
        return relist_main(argv[1:])
    args = parse(argv)
    common.TOOL_TIMEOUT = args.tool_timeout or None
    cluster.QUIET_WRITES = args.quiet_writes
    audit = Audit()
    if not audit.available():
        log("the plane has no audit log (started before hack/controlplane.sh enabled it): idle requests will be "
            "the daemons' own counts. Restart the plane for the API server's.")
    meta = provenance(args, audit)
    results = {"meta": meta, "sizes": {}}
    out = Path(args.out) if args.out else \
        ROOT / "bench/results" / f"{meta['date'][:10]}-{meta['commit']}{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for index, (n, reps) in enumerate(zip(args.sizes, args.repeats)):
        args.repeat = reps
        args.settle_timeout = args.settle_timeout_given or max(600, n // 10)
        size_started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="converge-bench-") as work:
            work = Path(work)
            r = {"objects": n, "repeat": reps}
            if "cli" not in args.skip:
                r.update(cli_scenarios(args, n, work, index))
            r["daemons"] = daemon_scenarios(args, n, work, audit, index)
            if "kustomize" not in args.skip:
                r.update(kustomize_scenarios(args, n, work))
            if "relist" not in args.skip:
                r["relist"] = relist_scenario(args, n, work)
            if "clusters" not in args.skip:
                r["clusters"] = clusters_scenario(args, n, work)
        r["seconds"] = time.monotonic() - size_started
        results["sizes"][str(n)] = r
        out.write_text(json.dumps(results, indent=2))  # after every size: a crash keeps what was measured
        log(f"{n} objects done in {r['seconds'] / 60:.1f} min; wrote {out}")
    results["meta"]["seconds"] = time.monotonic() - started
    out.write_text(json.dumps(results, indent=2))
    report.write_summary(results, ROOT / "target/bench/summary.json")
    print(report.render(results))
    log(f"wrote {out} and target/bench/summary.json; render again with: python3 hack/bench.py report {out}")
