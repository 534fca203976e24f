"""The cost of one relist (issue 28): the daemon owning the set (a directory source)
re-LISTs every kind it owns, metadata only and paged, and compares resourceVersions
with its watch cache. With `relist_every` short, the figures come from the daemon's
own metrics around one relist: `converge_relist_seconds` (its duration) and
`converge_api_requests_total` by verb (LIST pages and GETs; the daemon is otherwise
idle, and a watch renewal counts as `watch`). A relist of a cache that is right
repairs nothing (`converge_cache_repairs_total` stays 0).
"""

import time

from . import daemons
from .cluster import delete_namespaces, settle
from .common import BenchError, log
from .synthetic import generate

# Long enough for the first sync to finish before the relist that is measured.
RELIST_EVERY = 30


def relist_scenario(args, n, work):
    settle(args.settle_timeout)
    return measure(n, work, args.port, args.settle_timeout)


def measure(n, work, port, settle_timeout):
    """One relist of `n` objects, on a cluster the caller has settled."""
    prefix = f"d{n}-rl"
    s = generate(work / prefix, prefix, n)
    out = {"relist_every": f"{RELIST_EVERY}s", "source": "dir"}
    d = daemons.ConvergeDaemon(s.directory, prefix, f"{prefix}-0", port, "1h",
                               extra_config=f'relist_every = "{RELIST_EVERY}s"\n')
    try:
        out["first_sync_seconds"] = d.synced_after
        d.wait_observed()
        before = d.metrics()
        after = wait_relist(d, before, 3 * RELIST_EVERY + n // 100)
    finally:
        d.stop()
        delete_namespaces(s.namespaces, settle_timeout)

    def delta(name, **labels):
        return daemons.metric_sum(after, name, **labels) - daemons.metric_sum(before, name, **labels)
    relists = delta("converge_relist_seconds_count")
    out.update({
        "objects_owned": len(s.expected),
        "relists": relists,
        "seconds": delta("converge_relist_seconds_sum") / relists,
        "requests": {"list": delta("converge_api_requests_total", verb="list"),
                     "get": delta("converge_api_requests_total", verb="get"),
                     "total": delta("converge_api_requests_total")},
        "repairs": delta("converge_cache_repairs_total"),
    })
    log(f"{n} objects: one relist {out['seconds']:.2f} s, {out['requests']['list']:.0f} LIST pages, "
        f"{out['requests']['get']:.0f} GETs, {out['repairs']:.0f} repairs")
    return out


def wait_relist(d, before, timeout):
    """The metrics once one more relist finished than in `before`."""
    count = daemons.metric_sum(before, "converge_relist_seconds_count")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = d.metrics()
        if daemons.metric_sum(now, "converge_relist_seconds_count") > count:
            return now
    raise BenchError(f"no relist within {timeout} s; log: {d.dir}/converge.log")


def main(argv):
    """`hack/bench.py relist [--objects N]`: only this scenario, without the settle
    of a full run (which deletes every leftover bench namespace: not on a plane
    others use). Writes target/bench/relist.json and adds `relist` to each size of
    target/bench/summary.json."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from .common import ROOT, machine

    p = argparse.ArgumentParser(prog="hack/bench.py relist", description=main.__doc__)
    p.add_argument("--objects", default="1000", help="comma-separated sizes (default 1000)")
    p.add_argument("--port", type=int, default=19481, help="the daemon's HTTP port")
    args = p.parse_args(argv)
    results = {"machine": machine(), "sizes": {}}
    summary_path = ROOT / "target/bench/summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    for n in (int(x) for x in args.objects.split(",")):
        with tempfile.TemporaryDirectory(prefix="converge-bench-") as work:
            results["sizes"][str(n)] = measure(n, Path(work), args.port, max(600, n // 10))
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        summary.setdefault(str(n), {})["relist"] = results["sizes"][str(n)]
        summary_path.write_text(json.dumps(summary, indent=2))
    (ROOT / "target/bench/relist.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["sizes"], indent=2))
