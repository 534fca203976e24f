"""converge's daemon with one cluster and with two (issue 24): a Git source of the
set on the home plane, idle; then the same config plus a `[[clusters]]` entry for a
second, independent plane and a second source of the same size on it, idle again.
Both measured as the daemon scenario measures idle (RSS and CPU every second, until
a full resync of every source completed), with the API requests counted in each
plane's audit log (an audited identity on each) and given per minute."""

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from . import daemons
from .cluster import Audit, delete_namespaces, namespaces_left, present, settle, wait_quiet
from .common import NS_PREFIX, ROOT, BenchError, log, run
from .gitserver import GitServer, Repo
from .synthetic import generate

CONTROLPLANE = ROOT / "hack/controlplane.sh"
# The [[clusters]] entry's name in converge's config (and the plane's label here).
SECOND = "second"


def default_second_plane():
    """Where hack/test.sh keeps its second plane, so that both share one."""
    return os.environ.get("CONVERGE_SECOND_CP_DIR") or f"/tmp/converge-controlplane-{os.getuid()}-second"


class PlaneUnavailable(Exception):
    """The second plane is not up and could not be started."""


def controlplane(cp_dir, *args, timeout=120, nodes=None):
    env = dict(os.environ, CONVERGE_CP_DIR=str(cp_dir), **({"CONVERGE_CP_NODES": str(nodes)} if nodes else {}))
    env.pop("CONVERGE_CP_PORT", None)
    return run(["bash", CONTROLPLANE, *args], env=env, check=False, timeout=timeout)[1]


def second_plane_up(cp_dir, wait=180):
    """Starts the second plane (one kwok node) when none of its components runs;
    whether it was started here. A plane of which some components run but that is
    not ready (a test stops its API server for a while: tests/it/clusters.rs) is
    waited for, never restarted: `up` would tear it down and wipe its state under
    whoever uses it. The plane is left up afterwards, as hack/bench.sh leaves the
    home plane."""
    status = controlplane(cp_dir, "status")
    if status.returncode == 0:
        return False
    if ": running" in status.stdout:
        log(f"clusters: the second plane in {cp_dir} is not ready; waiting up to {wait} s "
            f"({' | '.join(status.stdout.strip().splitlines())})")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(5)
            status = controlplane(cp_dir, "status")
            if status.returncode == 0:
                return False
        raise PlaneUnavailable(f"the second plane in {cp_dir} runs in part but was not ready within {wait} s "
                               f"({' | '.join(status.stdout.strip().splitlines())}); not restarted, since others "
                               f"may use it: check it with CONVERGE_CP_DIR={cp_dir} hack/controlplane.sh status")
    log(f"clusters: the second plane is not up; starting it: CONVERGE_CP_DIR={cp_dir} CONVERGE_CP_NODES=1 "
        f"hack/controlplane.sh up")
    try:
        # A cold build of the plane's binaries takes 5-10 min on 2 cores.
        proc = controlplane(cp_dir, "up", timeout=1800, nodes=1)
    except BenchError as e:
        raise PlaneUnavailable(f"starting the second plane in {cp_dir} did not finish: {e}") from e
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise PlaneUnavailable(f"CONVERGE_CP_DIR={cp_dir} CONVERGE_CP_NODES=1 hack/controlplane.sh up failed "
                               f"({proc.returncode}): {tail}")
    if not (Path(cp_dir) / "kubeconfig").is_file():
        raise PlaneUnavailable(f"the second plane in {cp_dir} started but wrote no kubeconfig")
    return True


@contextmanager
def on_plane(kubeconfig):
    """The helper kubectl (and so `present`, `settle`, `wait_quiet`,
    `delete_namespaces`) against another plane meanwhile. The bench runs one
    scenario at a time: nothing else reads $KUBECONFIG during it."""
    saved = os.environ["KUBECONFIG"]
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        yield
    finally:
        os.environ["KUBECONFIG"] = saved


class ApiServerRestarts:
    """The kube-apiserver processes that served each plane during a window, read
    from the plane's pid file every second. A restart (another user's test:
    `hack/controlplane.sh restart-apiserver`) breaks every watch, and the relists
    and new watches after it are not idle traffic: the report says so."""

    def __init__(self, planes):
        self.planes = planes   # {label: state directory}
        self.pids = {label: set() for label in planes}
        self.down = {label: 0 for label in planes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while True:
            for label, cp_dir in self.planes.items():
                try:
                    pid = int((Path(cp_dir) / "kube-apiserver.pid").read_text())
                    alive = Path(f"/proc/{pid}").exists()
                except (OSError, ValueError):
                    alive = False
                if alive:
                    self.pids[label].add(pid)
                else:
                    self.down[label] += 1
            if self._stop.wait(1.0):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def result(self):
        return {label: {"restarts": max(0, len(self.pids[label]) - 1), "seconds_down": self.down[label]}
                for label in self.planes}


def per_minute(idle, total):
    return None if total is None else 60 * total / idle["seconds"]


def requests_per_plane(idle):
    """{plane: {total, per_minute, ...}} from the audit logs, and the planes
    together ("all"); when a plane could not be audited, the daemon's own count
    (every cluster) stands for all of them."""
    by_plane = {"home": idle["requests"], **idle.get("requests_other_planes", {})}
    audited = all(r.get("source") == "audit log" for r in by_plane.values())
    out = {plane: {**r, "per_minute": per_minute(idle, r["total"])} if audited else
           {"total": None, "per_minute": None, "source": r["source"]} for plane, r in by_plane.items()}
    total = sum(r["total"] for r in by_plane.values()) if audited else idle["requests_self_reported"]
    out["all"] = {"total": total, "per_minute": per_minute(idle, total),
                  "source": "audit logs" if audited else "self-reported by the daemon (every cluster): "
                  + "; ".join(r["source"] for r in by_plane.values() if r.get("source") != "audit log")}
    return out


def at_rest(d, args, audit, kubeconfig2, audit2):
    """The daemon's start-up, then its idle window, its requests counted on both
    planes (with one cluster, the second plane's count is a check: 0), and whether
    either plane's API server restarted meanwhile."""
    out = {"first_sync_seconds": d.synced_after, "observed_after_seconds": d.wait_observed()}
    wait_quiet(args.settle_timeout, "after the daemon's first reconcile")
    with on_plane(kubeconfig2):
        wait_quiet(args.settle_timeout, f"the {SECOND} plane, after the daemon's first reconcile")
    with ApiServerRestarts({"home": audit.cp_dir, SECOND: audit2.cp_dir}) as restarts:
        idle = daemons.idle(d, args.idle, audit, 3 * args.idle, other_planes={SECOND: audit2})
    out["idle"] = idle
    out["apiserver_restarts"] = restarts.result()
    for label, r in out["apiserver_restarts"].items():
        if r["restarts"] or r["seconds_down"]:
            log(f"clusters: the {label} plane's API server restarted {r['restarts']} time(s) during the window "
                f"(down {r['seconds_down']} s, another user's test?): its requests include the reconnects")
    out["requests"] = requests_per_plane(idle)
    return out


def ratio(a, b):
    return a / b if a is not None and b else None


def clusters_scenario(args, n, work):
    cp_dir = Path(args.second_plane)
    out = {"second_plane": str(cp_dir), "source": "git (loopback git http-backend)",
           "interval": f"{args.interval_seconds}s", "full_resync_every": args.full_resync_every}
    try:
        started = second_plane_up(cp_dir)
    except PlaneUnavailable as e:
        log(f"clusters: NOT MEASURED: {e}")
        return {**out, "not_measured": str(e)}
    kubeconfig2 = cp_dir / "kubeconfig"
    home_audit, second_audit = Audit(), Audit(cp_dir)
    out["second_plane_started_here"] = started
    sets = {}
    git = GitServer(work / "git-clusters")
    try:
        settle(args.settle_timeout)
        with on_plane(kubeconfig2):
            settle(args.settle_timeout)
        repos = {}
        for which in ("one", SECOND):   # "d1000-one" on the home plane, "d1000-second" on the other
            prefix = f"{NS_PREFIX}d{n}-{which}"
            repos[which] = Repo(git, prefix, work / prefix)
            sets[which] = generate(repos[which].work, prefix, n)
            repos[which].commit_all("the set")
        user = daemons.ConvergeDaemon.user
        kubeconfig = home_audit.identity(user) if home_audit.available() else None
        # The second plane's audited identity, in the [[clusters]] entry (the plane's
        # admin kubeconfig when it has no audit log: the daemon's own count then).
        identity2 = second_audit.identity(user) if second_audit.available() else kubeconfig2
        resync = f"full_resync_every = {args.full_resync_every}\n"
        interval = f"{args.interval_seconds}s"
        one, two = sets["one"], sets[SECOND]

        log(f"{n} objects: converge with one cluster")
        d = daemons.ConvergeDaemon(repos["one"].url, one.prefix, f"{one.prefix}-0", args.port, interval,
                                   kubeconfig, extra_config=resync)
        try:
            present(one)
            out["one"] = at_rest(d, args, home_audit, kubeconfig2, second_audit)
        finally:
            d.stop()

        log(f"{n} objects: converge with two clusters (the same source, and {n} objects on the second plane)")
        second_source = (f'\n[[clusters]]\nname = "{SECOND}"\nkubeconfig = "{identity2}"\n\n'
                         f'[[source]]\nname = "{two.prefix}"\ncluster = "{SECOND}"\ngit = "{repos[SECOND].url}"\n'
                         f'namespace = "{two.prefix}-0"\ninterval = "{interval}"\n{resync}')
        d = daemons.ConvergeDaemon(repos["one"].url, one.prefix, f"{one.prefix}-0", args.port, interval,
                                   kubeconfig, extra_config=resync, more_config=second_source)
        try:
            present(one)
            with on_plane(kubeconfig2):
                present(two)
            went_home = [ns for ns in two.namespaces if ns in namespaces_left(r".*")]
            if went_home:
                raise BenchError(f"the second cluster's source wrote to the home plane: namespaces {went_home}")
            status = {s["name"]: s for s in d.status()["sources"]}
            if not status[two.prefix].get("cluster", {}).get("reachable"):
                raise BenchError(f"/status does not show {two.prefix} on a reachable cluster: {status[two.prefix]}")
            out["two"] = at_rest(d, args, home_audit, kubeconfig2, second_audit)
        finally:
            d.stop()
        out["two_over_one"] = {
            "rss_mib": ratio(out["two"]["idle"]["rss_mib"], out["one"]["idle"]["rss_mib"]),
            "rss_mib_max": ratio(out["two"]["idle"]["rss_mib_max"], out["one"]["idle"]["rss_mib_max"]),
            "cpu_percent": ratio(out["two"]["idle"]["cpu_percent"], out["one"]["idle"]["cpu_percent"]),
            "requests_per_minute": ratio(out["two"]["requests"]["all"]["per_minute"],
                                         out["one"]["requests"]["all"]["per_minute"]),
        }
        r = out["two_over_one"]
        log("clusters: two / one: " + ", ".join(f"{k} {v:.2f}×" if v is not None else f"{k} —"
                                                 for k, v in r.items()))
    finally:
        git.stop()
        if "one" in sets:
            delete_namespaces(sets["one"].namespaces, args.settle_timeout)
        if SECOND in sets:
            with on_plane(kubeconfig2):
                delete_namespaces(sets[SECOND].namespaces, args.settle_timeout)
        if started:
            log(f"clusters: the second plane started here stays up (stop it with CONVERGE_CP_DIR={cp_dir} "
                f"hack/controlplane.sh down)")
    return out
