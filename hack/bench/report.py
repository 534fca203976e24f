"""From a results file to the markdown BENCHMARKS.md quotes (`hack/bench.py report
FILE.json`), and to target/bench/summary.json."""

import argparse
import json
import re
import sys
from pathlib import Path

PEERS = ["kubectl", "kubectl-applyset", "kapp", "flux-ssa", "argo-engine"]
COLUMNS = ["converge", *PEERS, "raw"]
TITLES = {"converge": "converge", "kubectl": "kubectl", "kubectl-applyset": "kubectl --applyset",
          "kapp": "kapp", "flux-ssa": "Flux engine (pkg/ssa)", "argo-engine": "Argo CD engine (gitops-engine)",
          "raw": "raw SSA limit"}
SCENARIOS = [("first_apply", "first apply"), ("noop_diff", "no-op diff"),
             ("noop_sync", "no-op sync (Argo CD: a sync that finds nothing to change)"),
             ("one_percent_change", "1% changed")]
# The daemons, in the columns of the daemon table (issue 28: Flux with its defaults
# and with its benchmark's tuning; Argo CD's engine for its first sync and drift).
DAEMONS = [("converge", "converge"), ("flux", "Flux controllers, defaults"),
           ("flux-tuned", "Flux controllers, tuned as Flux's benchmark"), ("argo", "Argo CD engine (selfHeal)")]
TARGET_SIZE = "1000"


def times(x):
    """A ratio: two decimals, or two significant digits below 0.01 (not "0.00×")."""
    return f"{x:.2f}×" if x >= 0.01 or x == 0 else f"{x:.2g}×"


def measured(cell):
    return isinstance(cell, dict) and "median" in cell


def absent(c):
    """Why a tool has no figure: not built here, or it did not finish in its budget."""
    return isinstance(c, dict) and (c.get("not_built") or c.get("not_measured"))


def unfinished_or_dash(c):
    """The cell of a scaling table without a figure."""
    return "did not finish" if isinstance(c, dict) and c.get("not_measured") else "—"


def cell(per_tool, tool):
    c = per_tool.get(tool)
    if c is None:
        return "—"
    if not measured(c):
        return absent(c) or "—"
    text = f"{c['median']:.2f} s ({c['min']:.2f}–{c['max']:.2f})"
    conv = per_tool.get("converge")
    if tool not in ("converge", "raw") and measured(conv):
        text += f"; converge **{times(conv['median'] / c['median'])}**"
    if tool == "raw" and measured(conv):
        text += f"; converge at {100 * c['median'] / conv['median']:.0f}% of its throughput"
    return text


def latency_text(r):
    if not r:
        return "—"
    if "not_built" in r:
        return r["not_built"]
    tail = f"p99 {r['p99_ms']:.0f}" if r.get("p99_ms") is not None else f"max {r['max_ms']:.0f}"
    return f"p50 {r['p50_ms']:.0f} ms, {tail} ms ({r['samples']} samples)"


def requests_text(req, seconds=None):
    if not req:
        return "—"
    rate = f"{60 * req['total'] / seconds:.1f}/min: " if seconds else ""
    if req.get("source") != "audit log":
        return f"{rate}{req['total']:.0f} ({req['source']})"
    detail = ", ".join(f"{v} {k}" for k, v in req["by_verb_resource"].items()) or "none"
    dry = f", {req['dry_runs']} dry runs" if req.get("dry_runs") is not None else ""
    return (f"{rate}{req['total']} ({req['writes']} writes{dry}, {req['per_object']} per-object, "
            f"{req['watches']} watches, {req['lists']} lists: {detail})")


def idle_text(idle):
    per_min = idle.get("per_minute", {}).get("cpu_seconds")
    cpu_min = f", {per_min:.2f} CPU-s/min" if per_min is not None else ""
    return (f"RSS mean {idle['rss_mib']:.1f} MiB, peak {idle['rss_mib_max']:.1f}; CPU {idle['cpu_percent']:.2f}%"
            f"{cpu_min} (max {idle['cpu_percent_max']:.1f}%); {idle['samples']} samples over "
            f"{idle.get('window_seconds', idle['seconds']):.0f} s")


def size_tables(n, r):
    repeated = "first_apply" in r or any(k in r.get("daemons", {}) for k in ("converge", "flux"))
    lines = [f"### {n} objects (+ microservices-demo)"
             + (f": {r['repeat']} repetition(s), median (min–max)" if repeated else ""), ""]
    if "first_apply" in r:
        lines += ["| scenario | " + " | ".join(TITLES[c] for c in COLUMNS) + " |",
                  "|---" * (len(COLUMNS) + 1) + "|"]
        for key, title in SCENARIOS:
            if key not in r:
                continue   # a results file from before the scenario existed
            if key == "one_percent_change":
                title += f" ({r[key].get('changed_objects', '?')} objects)"
            lines.append(f"| {title} | " + " | ".join(cell(r[key], c) for c in COLUMNS) + " |")
        false = {k: v for k, v in r["noop_diff"].get("runs_reporting_false_changes", {}).items() if v}
        lines += ["", f"Order of the tools per repetition (rotated from size to size): {r.get('order')}"
                      + ("; each tool had one uncounted warm-up run before." if r.get("warmup") else ".")]
        if r.get("sample_checked"):
            lines.append("Objects read back field by field after each tool's first apply: "
                         + ", ".join(f"{k} {v}" for k, v in r["sample_checked"].items()) + ".")
        if false:
            lines.append(f"No-op diffs that reported a change (a controller wrote status between read and "
                         f"dry-run): {false}.")
        lines.append("")
    lines += daemon_table(r.get("daemons", {}))
    if "kustomize_commit" in r:
        kc, kr = r["kustomize_commit"], r["kustomize_resync"]
        lines += ["", f"Kustomize source: commit-to-converged {latency_text(kc)}, {kc['renders']:.0f} renders of "
                      f"{kc['render_ms'] or 0:.0f} ms; {kr['seconds']} s of full resyncs every second: "
                      f"{kr['full_resyncs']:.0f} resyncs, {kr['renders']:.0f} renders."]
    if "relist" in r:
        rl = r["relist"]
        lines += ["", f"Relist (the safety net under the watch cache): one relist of {rl['objects_owned']} objects "
                      f"took {rl['seconds']:.2f} s, {rl['requests']['list']:.0f} LIST pages and "
                      f"{rl['requests']['get']:.0f} GETs, {rl['repairs']:.0f} repairs."]
    if "clusters" in r:
        lines += ([""] if lines[-1] else []) + clusters_table(n, r["clusters"])
    return lines


def plane_requests(req):
    """A plane's idle requests per minute, with the count and its kinds."""
    if req.get("per_minute") is None:
        return f"— ({req['source']})"
    if req.get("source") != "audit log":
        return f"{req['per_minute']:.2f}/min ({req['total']:.0f}; {req['source']})"
    return (f"{req['per_minute']:.2f}/min ({req['total']}: {req['writes']} writes, {req['per_object']} per-object, "
            f"{req['watches']} watches, {req['lists']} lists)")


def clusters_table(n, c):
    """converge's daemon idle with one cluster and with two (issue 24)."""
    title = f"#### converge idle with one and two clusters ({n} objects per cluster)"
    if absent(c):
        return [title, "", f"Not measured: {absent(c)}", ""]
    one, two, r = c["one"], c["two"], c["two_over_one"]
    ratio = lambda x: f"**{times(x)}**" if x is not None else "—"
    rows = [("first sync (start to every source applied)", lambda x: f"{x['first_sync_seconds']:.1f} s", None),
            ("idle window", lambda x: f"{x['idle']['seconds']:.0f} s, {x['idle']['samples']} samples, "
                                      f"{x['idle']['full_resyncs']:.0f} full resync(s)", None),
            ("RSS mean", lambda x: f"{x['idle']['rss_mib']:.1f} MiB", r["rss_mib"]),
            ("RSS max", lambda x: f"{x['idle']['rss_mib_max']:.1f} MiB", r["rss_mib_max"]),
            ("CPU mean (max)", lambda x: f"{x['idle']['cpu_percent']:.2f}% ({x['idle']['cpu_percent_max']:.1f}%)",
             r["cpu_percent"]),
            ("API requests, home plane", lambda x: plane_requests(x["requests"]["home"]), None),
            ("API requests, second plane", lambda x: plane_requests(x["requests"]["second"]), None),
            (f"API requests, both planes ({one['requests']['all']['source']})",
             lambda x: f"{x['requests']['all']['per_minute']:.2f}/min ({x['requests']['all']['total']:.0f})",
             r["requests_per_minute"]),
            ("API requests the daemon counted (converge_api_requests_total)",
             lambda x: f"{x['idle']['requests_self_reported']:.0f}", None)]
    restarts = lambda x: ", ".join(f"{plane} {r['restarts']} ({r['seconds_down']} s down)"
                                   for plane, r in x.get("apiserver_restarts", {}).items()) or "not recorded"
    rows.append(("API server restarts in the window (others' tests)", restarts, None))
    lines = [title, "", "| converge daemon, idle | one cluster | two clusters | two / one |", "|---|---|---|---|"]
    lines += [f"| {name} | {get(one)} | {get(two)} | {ratio(x)} |" for name, get, x in rows]
    if any(r["restarts"] or r["seconds_down"] for x in (one, two) for r in x.get("apiserver_restarts", {}).values()):
        lines += ["", "**An API server restarted during a window**: every watch on that plane broke, and the "
                      "relists and new watches that followed are counted with the idle requests of that window."]
    detail = lambda x: "; ".join(f"{plane}: " + (", ".join(f"{v} {k}" for k, v in req["by_verb_resource"].items())
                                                 or "none")
                                 for plane, req in x["requests"].items() if "by_verb_resource" in req)
    lines += ["", f"One cluster: a Git source of {n} objects on the home plane. Two clusters: the same config plus "
                  f"a `[[clusters]]` entry for the second plane (`{c['second_plane']}`) and a second Git source of "
                  f"{n} objects on it; one process. Interval {c['interval']}, full_resync_every "
                  f"{c['full_resync_every']}; each window runs until every source completed a full resync. The "
                  f"second plane is up during both (the same background load). Requests by kind, one cluster: "
                  f"{detail(one) or '—'}; two clusters: {detail(two) or '—'}."]
    return lines + [""]


def daemon_table(d):
    present_ = [(k, title) for k, title in DAEMONS if d.get(k)]
    if not present_:
        return []
    cv = d.get("converge")
    peers = [(k, title) for k, title in present_ if k != "converge"]

    def row(name, get, ratio=None):
        cells = []
        for k, _ in present_:
            x = d[k]
            try:
                cells.append(absent(x) or get(x))
            except (KeyError, TypeError):
                cells.append("—")
        if ratio:
            for k, _ in peers:
                x = d[k]
                try:
                    cells.append(ratio(cv, x) if cv and not absent(cv) and not absent(x) else "—")
                except (KeyError, TypeError, ZeroDivisionError):
                    cells.append("—")
        else:
            cells += ["—"] * len(peers)
        return f"| {name} | " + " | ".join(cells) + " |"
    div = lambda f: lambda a, b: f"**{times(f(a) / f(b))}**"
    lines = ["| daemon, same set from the same Git host | " + " | ".join(t for _, t in present_) + " | "
             + " | ".join(f"converge / {t}" for _, t in peers) + " |",
             "|---" * (1 + len(present_) + len(peers)) + "|"]
    commit = lambda x: x.get("commit_git") or x["commit"]
    lines.append(row("first sync (start to applied)", lambda x: f"{x['first_sync_seconds']:.1f} s",
                     div(lambda x: x["first_sync_seconds"])))
    lines.append(row("objects read back field by field after it", lambda x: f"{x['sample_checked']}"))
    lines.append(row("idle: one window of equal length for every daemon, per minute",
                     lambda x: idle_text(x["idle"]), div(lambda x: x["idle"]["rss_mib"])))
    lines.append(row("idle RSS peak (the Pod limit must cover it)", lambda x: f"{x['idle']['rss_mib_max']:.1f} MiB",
                     div(lambda x: x["idle"]["rss_mib_max"])))
    lines.append(row("idle API requests per minute (dry runs are not writes)",
                     lambda x: requests_text(x["idle"]["requests"], x["idle"].get("window_seconds",
                                                                                    x["idle"]["seconds"]))))
    if cv and "flux" in d and not absent(d["flux"]) and not absent(cv):
        (a, b), source = comparable_requests(cv, d["flux"])
        ratio = f"**{times(a / b)}**" if b else "—"
        lines.append(f"| idle API requests, converge / Flux defaults ({source}) | {a:.0f} / {b:.0f} = {ratio} |"
                     + " |" * (len(present_) + len(peers) - 1))
    lines.append(row("full passes in the idle window", passes_text))
    lines.append(row("full resync time (converge; its peak is the RSS peak above)",
                     lambda x: ", ".join(f"{s:.1f} s" for s in x["idle"]["full_resync_seconds"])))
    lines.append(row("commit-to-converged, Git, fastest trigger", lambda x: latency_text(commit(x)),
                     div(lambda x: commit(x)["p50_ms"])))
    lines.append(row("drift correction", lambda x: latency_text(x["drift"]) + (
        f" (Kustomization interval {x['drift']['kustomization_interval']})"
        if "kustomization_interval" in x["drift"] else " (watch)"), div(lambda x: x["drift"]["p50_ms"])))
    if cv and "commit_dir" in cv:
        lines.append(row("commit-to-converged, directory source",
                         lambda x: latency_text(x["commit_dir"]) if "commit_dir" in x else "—"))
    notes = []
    if cv and not absent(cv):
        notes.append(f"converge: interval {cv['interval']}, full_resync_every {cv['full_resync_every']}, "
                     f"webhook trigger.")
    for k, title in peers:
        x = d[k]
        if k.startswith("flux") and not absent(x):
            layout = (f"{x['kustomizations']} Kustomizations (the Namespaces and the corpus, then one per ~1000 "
                      f"objects, depending on the first)" if "kustomizations" in x else
                      "one Kustomization over the whole set (a results file from before issue 28)")
            notes.append(f"{title}: GitRepository interval {x['gitrepository_interval']}, {layout}, interval "
                         f"{x['kustomization_interval']} (= "
                         f"converge's full resync period); flags: source-controller "
                         f"`{x.get('tuning', {}).get('source') or 'defaults'}`, kustomize-controller "
                         f"`{x.get('tuning', {}).get('kustomize') or 'defaults'}`; trigger: {x['trigger']}.")
        if k == "argo" and not absent(x):
            notes.append(f"{title}: `argo-engine run`, {x['trigger']}; RSS while healing drift "
                         f"{x['rss_during_drift']['rss_mib']:.1f} MiB (max {x['rss_during_drift']['rss_mib_max']:.1f}).")
    if d.get("order"):
        notes.append(f"Order of the daemons at this size: {', '.join(d['order'])}.")
    return lines + [""] + notes


def passes_text(x):
    i = x["idle"]
    held = "" if i.get("includes_full_resync") else " — **the window missed a full pass**"
    if "full_resyncs" in i:
        return f"{i['full_resyncs']:.0f} full resyncs, {i['skipped_resyncs']:.0f} skipped{held}"
    return (f"{i['kustomization_reconciles']:.0f} Kustomization reconciles (of {i.get('kustomizations', 1)}), "
            f"{i['gitrepository_reconciles']:.0f} GitRepository{held}")


def comparable_requests(cv, fx):
    """The two daemons' idle request counts from the same source: the audit log
    when it counted both, else what each daemon says it sent."""
    rc, rf = cv["idle"]["requests"], fx["idle"]["requests"]
    if rc.get("source") == "audit log" and rf.get("source") == "audit log":
        return (rc["total"], rf["total"]), "audit log"
    return (cv["idle"].get("requests_self_reported", 0), fx["idle"].get("requests_self_reported", 0)), \
        "self-reported by each daemon: the audit log did not count both"


def scaling(results):
    sizes = sorted(results["sizes"], key=int)
    if len(sizes) < 2:
        return []
    lines = ["### Cost per 1000 objects as N grows (median seconds / N × 1000)", "",
             "| tool | scenario | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for key, title in SCENARIOS:
        for tool in COLUMNS:
            vals = [results["sizes"][n].get(key, {}).get(tool) for n in sizes]
            if not any(measured(v) for v in vals):
                continue
            cells = [f"{1000 * v['median'] / int(n):.2f}" if measured(v) else unfinished_or_dash(v)
                     for v, n in zip(vals, sizes)]
            lines.append(f"| {TITLES[tool]} | {title} | " + " | ".join(cells) + " |")
    return lines + [""] if len(lines) > 4 else []


DAEMON_ROWS = [
    ("first sync (s)", lambda x: x.get("first_sync_seconds"), "{:.1f}"),
    ("commit-to-converged p50 (ms)", lambda x: (x.get("commit_git") or x.get("commit") or {}).get("p50_ms"), "{:.0f}"),
    ("drift correction p50 (ms)", lambda x: x.get("drift", {}).get("p50_ms"), "{:.0f}"),
    ("idle RSS mean (MiB)", lambda x: x.get("idle", {}).get("rss_mib"), "{:.1f}"),
    ("idle RSS peak (MiB)", lambda x: x.get("idle", {}).get("rss_mib_max"), "{:.1f}"),
    ("idle CPU mean (%)", lambda x: x.get("idle", {}).get("cpu_percent"), "{:.2f}"),
    ("idle API requests", lambda x: x.get("idle", {}).get("requests", {}).get("total"), "{:.0f}"),
]


def daemon_scaling(results):
    """converge's and Flux's daemon figures side by side per size: how each grows."""
    sizes = [n for n in sorted(results["sizes"], key=int) if results["sizes"][n].get("daemons")]
    if len(sizes) < 2:
        return []
    lines = ["### Daemons as N grows (converge against Flux's controllers and Argo CD's engine)", "",
             "| daemon | figure | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for title, get, fmt in DAEMON_ROWS:
        for which, label in DAEMONS:
            cells = []
            if not any(results["sizes"][n]["daemons"].get(which) for n in sizes):
                continue
            for n in sizes:
                d = results["sizes"][n]["daemons"].get(which)
                value = get(d) if d and not absent(d) else None
                cells.append(fmt.format(value) if value is not None else unfinished_or_dash(d))
            lines.append(f"| {label} | {title} | " + " | ".join(cells) + " |")
    return lines + [""]


def verdict(ok):
    return "**met**" if ok else "**missed**"


def targets(results):
    sizes = results["sizes"]
    n = TARGET_SIZE if TARGET_SIZE in sizes else min(sizes, key=int)
    r = sizes[n]
    rows = []
    fa, nd = r.get("first_apply", {}), r.get("noop_diff", {})
    conv = fa.get("converge")
    for peer in PEERS:
        p = fa.get(peer)
        if measured(conv) and measured(p):
            x = conv["median"] / p["median"]
            rows.append((f"first apply: converge faster than {TITLES[peer]} (< 1×)", times(x), verdict(x < 1)))
        elif p is not None:
            rows.append((f"first apply vs {TITLES[peer]}", absent(p) or "not measured", "not measured"))
    if measured(conv) and measured(fa.get("raw")):
        share = fa["raw"]["median"] / conv["median"]
        rows.append(("first apply ≥ 85% of the raw SSA throughput", f"{100 * share:.0f}%", verdict(share >= 0.85)))
    conv = nd.get("converge")
    for peer in PEERS:
        p = nd.get(peer)
        if measured(conv) and measured(p):
            x = conv["median"] / p["median"]
            rows.append((f"no-op diff ≤ 0.2× {TITLES[peer]}", times(x), verdict(x <= 0.2)))
        elif absent(p):
            rows.append((f"no-op diff vs {TITLES[peer]}", absent(p), "not measured"))
    d = r.get("daemons", {})
    cv, fx = d.get("converge"), d.get("flux")
    if cv and fx and not absent(fx):
        a, b = cv["commit_git"], fx["commit"]
        key = "p99_ms" if a.get("p99_ms") is not None and b.get("p99_ms") is not None else "p50_ms"
        x = a[key] / b[key]
        rows.append((f"commit-to-converged ≤ 0.2× Flux ({key[:3]})", f"{a[key]:.0f} / {b[key]:.0f} ms = {times(x)}",
                     verdict(x <= 0.2)))
        x = cv["idle"]["rss_mib"] / fx["idle"]["rss_mib"]
        rows.append(("idle RSS ≤ 0.5× Flux's controllers together",
                     f"{cv['idle']['rss_mib']:.1f} / {fx['idle']['rss_mib']:.1f} MiB = {times(x)}", verdict(x <= 0.5)))
        (a, b), source = comparable_requests(cv, fx)
        rows.append(("idle: fewer API requests than Flux", f"{a:.0f} vs {b:.0f} ({source})", verdict(a < b)))
    elif fx:
        rows.append(("daemon targets vs Flux", absent(fx) or "not run", "not measured"))
    if cv:
        req = cv["idle"]["requests"]
        if req.get("source") == "audit log":
            ok = req["writes"] == 0 and req["per_object"] == 0
            rows.append(("idle: no write, no per-object request", f"{req['writes']} writes, {req['per_object']} "
                         f"per-object", verdict(ok)))
        else:
            rows.append(("idle: no write, no per-object request", req["source"], "not measured"))
        covered = cv["idle"].get("includes_full_resync")
        rows.append(("the idle window includes a full resync and a watch renewal",
                     f"{cv['idle'].get('full_resyncs', 0):.0f} full resyncs, "
                     f"{req.get('watches', '?')} watches", verdict(covered and req.get("watches", 0) > 0)))
    if not rows:
        return []   # e.g. a run of the clusters part alone
    lines = [f"### Targets (issue 17), at {n} objects", "", "| target | figure | met? |", "|---|---|---|"]
    return lines + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]


def render(results):
    m = results["meta"]
    mach = m["machine"]
    lines = [f"## Results of {m['date']} at commit `{m['commit']}`" + (" (SMOKE RUN: not for quoting)"
                                                                     if m.get("smoke") else ""), "",
             f"`{m['command']}`; {mach['nproc']} cores ({mach['cpu']}), {mach['memory_gib']} GiB, kernel "
             f"{mach['kernel']}, load average at start {', '.join(f'{x:.2f}' for x in mach['loadavg_at_start'])}. "
             f"Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + "."]
    if isinstance(m.get("binary"), str):   # a results file that names only its path
        lines.append(f"Measured binary: `{m['binary']}`.")
    elif m.get("binary"):
        b = m["binary"]
        lines.append(f"Measured binary: `{b['path']}`, sha256 `{b['sha256'][:16]}…`, built {b['modified']}; "
                     f"`converge version`: " + "; ".join(b["version_output"].splitlines()) + ".")
    if m.get("kubectl_note"):
        lines.append(f"kubectl: {m['kubectl_note']}.")
    lines.append("")
    for n in sorted(results["sizes"], key=int):
        lines += size_tables(n, results["sizes"][n]) + [""]
    lines += scaling(results) + daemon_scaling(results) + targets(results)
    return "\n".join(lines)


def summary(r, meta):
    """One size in target/bench/summary.json's shape (older readers keep working)."""
    out = {k: v for k, v in r.items() if k != "daemons"}
    d = r.get("daemons", {})
    cv = d.get("converge")
    if cv:
        idle = cv["idle"]
        req = idle["requests"]
        out["daemon_idle"] = {**idle, "peak_rss_mib": idle["rss_mib_max"], "writes": req.get("writes"),
                              "requests": req.get("by_verb_resource", {"total": req["total"]}),
                              "requests_total": req["total"]}
        out["drift_latency"] = cv["drift"]
        out["commit_to_converged"] = cv["commit_dir"]
        out["commit_to_converged_git"] = cv["commit_git"]
    peers = {}
    for name in ("flux", "flux-tuned"):
        x = d.get(name)
        if x:
            peers[name] = x if absent(x) else {
                "commit_to_converged": x["commit"], "drift_correction": x["drift"],
                "idle": {**x["idle"], "requests": x["idle"]["requests"]["total"],
                         "requests_detail": x["idle"]["requests"]},
                "first_sync_seconds": x["first_sync_seconds"]}
    if d.get("argo"):
        peers["argo"] = d["argo"]
    if peers:
        out["daemon_peers"] = peers
    # Per size, the peers that finished (issue 28): the command-line tools and the
    # daemons that made their figures within --tool-timeout.
    out["peers_finished"] = sorted((set(r.get("finished", [])) | set(d.get("finished", []))) - {"converge"})
    out["machine"] = {**meta["machine"], **meta["versions"], "commit": meta["commit"], "date": meta["date"]}
    if meta.get("binary"):
        out["machine"]["converge_binary"] = meta["binary"]
    return out


def write_summary(results, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    for n, r in results["sizes"].items():
        previous[n] = summary(r, results["meta"])
    path.write_text(json.dumps(previous, indent=2))


def render_any(results):
    """The markdown of any results file in bench/results/: a run over sizes (the
    default), or a notify run (`hack/bench.sh notify`, with its own table); None
    for a file of neither shape, which the caller names and skips. Issue 28: one
    notify file (it has no `sizes`) among the size runs made `report` fail."""
    if "sizes" in results:
        return render(results)
    if "notify" in results:
        from .notify import render as render_notify   # its scenario's imports only when needed
        return render_notify(results)
    return None


def skipped(path, results):
    """What `report` says on stderr about a file it leaves out."""
    shape = ", ".join(f"`{k}`" for k in results if k != "meta") or "nothing but `meta`"
    return f"{path}: not a results file of sizes (it has {shape}): skipped"


def scaling_across(files, note=lambda line: print(line, file=sys.stderr)):
    """The scaling tables over the sizes of several results files (a size's parts are
    merged, a later file's part winning), with the files each size comes from. A
    file of another mode (no `sizes`, e.g. a notify run) has no size to add: it is
    named through `note` and left out."""
    merged, sources = {"sizes": {}}, {}
    for path in files:
        results = json.loads(path.read_text())
        if "sizes" not in results:
            note(skipped(path, results))
            continue
        for n, r in results["sizes"].items():
            size = merged["sizes"].setdefault(n, {})
            for key, part in r.items():
                if isinstance(part, dict) and isinstance(size.get(key), dict):
                    size[key].update(part)   # e.g. one file's daemons, another's CLI tools
                else:
                    size[key] = part
            sources.setdefault(n, []).append(path.name)
    lines = scaling(merged) + daemon_scaling(merged)
    return lines + [f"- {n} objects: " + ", ".join(f"`{f}`" for f in sources[n])
                    for n in sorted(sources, key=int)] + [""]


# A generated block of a markdown file (issue 28: BENCHMARKS.md's tables come from
# results files, never typed): the opening comment names the report's arguments.
GENERATED = re.compile(r"(<!-- generated: hack/bench\.sh report (?P<args>[^>]*?) -->\n)(?P<body>.*?)"
                       r"(<!-- end generated -->)", re.S)


def update(doc, root):
    """Regenerates every generated block of `doc` (paths relative to `root`);
    returns how many blocks there were."""
    text = doc.read_text()

    def block(m):
        args = m.group("args").split()
        scaling = "--scaling" in args
        files = [root / a for a in args if a != "--scaling"]
        if scaling:
            body = "\n".join(scaling_across(files))
        else:
            rendered = []
            for f in files:
                results = json.loads(f.read_text())
                text = render_any(results)
                if text is None:
                    print(skipped(f, results), file=sys.stderr)
                else:
                    rendered.append(text)
            body = "\n".join(rendered)
        return m.group(1) + body.rstrip("\n") + "\n" + m.group(4)
    new, count = GENERATED.subn(block, text)
    doc.write_text(new)
    return count


def main(argv):
    p = argparse.ArgumentParser(prog="hack/bench.py report", description="Render results files as markdown.")
    p.add_argument("files", type=Path, nargs="*", metavar="FILE")
    p.add_argument("--scaling", action="store_true",
                   help="only the tables of how figures grow with N, over the sizes of all FILEs "
                        "(a size's parts from several files are merged; a later file's part wins)")
    p.add_argument("--update", type=Path, metavar="DOC",
                   help="regenerate every block of DOC between `<!-- generated: hack/bench.sh report ARGS -->` "
                        "and `<!-- end generated -->` from the results files its ARGS name (e.g. BENCHMARKS.md)")
    args = p.parse_args(argv)
    if args.update:
        count = update(args.update, Path(__file__).resolve().parent.parent.parent)
        print(f"{args.update}: {count} generated block(s) regenerated", file=sys.stderr)
        return
    if not args.files:
        p.error("FILE: at least one results file (or --update DOC)")
    if args.scaling:
        print("\n".join(scaling_across(args.files)))
        return
    rendered = 0
    for path in args.files:
        results = json.loads(path.read_text())
        text = render_any(results)
        if text is None:
            print(skipped(path, results), file=sys.stderr)
            continue
        print(text)
        rendered += 1
    if not rendered:
        sys.exit("report: none of the FILEs is a results file hack/bench.sh can render")
