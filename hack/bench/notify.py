"""Notifications (issue 30): commit-to-converged of converge's daemon with no
[[notify]] target, with a healthy receiver, and with a receiver that never
answers, in one run on the same set from the same loopback Git host.

Each mode is its own daemon (the set stays applied between them); the modes take
turns in rounds (the order rotated), so a machine whose load changes during the
run weighs on all three alike. The healthy receiver answers 201 at once and
records when each `synced` notice arrived; the hanging one accepts the
connection, reads the request and never answers (the target's timeout is the
default, 10 s, then retries). Reported: p50/p99 per mode, and hanging / none and
healthy / none as ratios; a ratio near 1 means notifications cost a reconcile
nothing."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import daemons
from .cluster import delete_namespaces, present
from .common import describe_latency, latency, log
from .gitserver import Repo
from .synthetic import generate

MODES = ("none", "healthy", "hanging")
KEY_ENV = "BENCH_NOTIFY_KEY"


class Receiver:
    """A loopback HTTP server; `hang`: it reads each request and never answers."""

    def __init__(self, hang):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.monotonic(), body))
                if hang:
                    time.sleep(3600)
                    return
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def synced_at(self, revision):
        for at, body in self.received:
            try:
                notice = json.loads(body)
            except ValueError:
                continue
            if notice.get("event") == "synced" and notice.get("revision") == revision:
                return at
        return None


def target(receiver):
    return (f'\n[[notify]]\nname = "bench"\nkind = "webhook"\nurl = "{receiver.url()}"\n'
            f'events = ["synced", "failed", "drifted", "healed", "degraded", "recovered"]\n'
            f'secret_env = "{KEY_ENV}"\n')


def notify_scenario(args, work, git):
    """The three modes; `args.objects` objects, `args.edits` commits per mode."""
    os.environ[KEY_ENV] = "bench-notify-key"
    n = args.objects
    prefix = f"n{n}-cv"
    repo = Repo(git, prefix, work / prefix)
    s = generate(repo.work, prefix, n)
    repo.commit_all("the set")
    ns = s.namespaces[0]
    receivers = {"healthy": Receiver(hang=False), "hanging": Receiver(hang=True)}
    samples = {mode: [] for mode in MODES}
    notice_lag = []
    rounds = max(1, args.rounds)
    per_round = max(1, args.edits // rounds)
    out = {"objects": n, "edits_per_mode": per_round * rounds, "rounds": rounds,
           "source": "git (loopback git http-backend), webhook trigger"}
    try:
        for r in range(rounds):
            order = MODES[r % 3:] + MODES[:r % 3]
            for mode in order:
                more = target(receivers[mode]) if mode in receivers else ""
                d = daemons.ConvergeDaemon(repo.url, prefix, f"{prefix}-0", args.port, "30s", more_config=more)
                try:
                    present(s)
                    d.wait_observed()
                    commits = []

                    def publish():
                        commits.append(repo.commit_all(f"{mode} {r}"))
                        started = time.monotonic()
                        d.trigger()
                        return started
                    tag = f"{mode}{r}"
                    result = daemons.commit_to_converged(ns, s, per_round, publish, 60, tag, raw=True)
                    samples[mode].extend(result.pop("raw_samples_s"))
                    if mode == "healthy":
                        time.sleep(1)
                        for revision, started in zip(commits, result.pop("started_at")):
                            at = receivers["healthy"].synced_at(revision)
                            if at is not None:
                                notice_lag.append(at - started)
                        out["healthy_notices_missing"] = out.get("healthy_notices_missing", 0) + \
                            per_round - sum(1 for c in commits if receivers["healthy"].synced_at(c) is not None)
                    result.pop("started_at", None)
                    if mode == "hanging":
                        m = d.metrics()
                        out.setdefault("hanging_metrics", []).append({
                            k: v for k, v in m.items() if k.startswith("converge_notifications_total")})
                finally:
                    d.stop()
    finally:
        delete_namespaces(s.namespaces, args.settle_timeout)
    for mode in MODES:
        out[mode] = latency(samples[mode])
        log(f"notify, {mode}: commit-to-converged {describe_latency(out[mode])}")
    out["healthy_commit_to_notice"] = latency(notice_lag) if notice_lag else None
    out["hanging_requests_received"] = len(receivers["hanging"].received)

    def ratio(mode, key):
        a, b = out[mode].get(key), out["none"].get(key)
        return a / b if a and b else None
    out["ratios"] = {f"{mode}_over_none_{key[:3]}": ratio(mode, key)
                     for mode in ("healthy", "hanging") for key in ("p50_ms", "p99_ms", "max_ms")}
    return out


def render(results):
    """The BENCHMARKS.md table of a notify run."""
    r = results["notify"]
    meta = results["meta"]

    def cell(x):
        tail = f"p99 {x['p99_ms']:.0f}" if x.get("p99_ms") is not None else f"max {x['max_ms']:.0f}"
        return f"p50 {x['p50_ms']:.0f} ms, {tail} ms ({x['samples']})"

    def times(v):
        return f"{v:.2f}×" if v is not None else "—"
    q = r["ratios"]
    lines = [f"Notifications, {r['objects']} objects, {r['edits_per_mode']} commits per mode in "
             f"{r['rounds']} rounds, commit {meta['commit']}, {meta['date']}:", "",
             "| target | commit-to-converged | ratio to none (p50 / p99) |", "|---|---|---|",
             f"| none | {cell(r['none'])} | 1 |",
             f"| healthy receiver | {cell(r['healthy'])} | {times(q['healthy_over_none_p50'])} / "
             f"{times(q['healthy_over_none_p99'])} |",
             f"| receiver that never answers | {cell(r['hanging'])} | {times(q['hanging_over_none_p50'])} / "
             f"{times(q['hanging_over_none_p99'])} |"]
    if r.get("healthy_commit_to_notice"):
        lines += ["", f"Healthy receiver: commit → `synced` notice {describe_latency(r['healthy_commit_to_notice'])}; "
                      f"missing notices: {r.get('healthy_notices_missing', 0)}. The hanging receiver was sent "
                      f"{r['hanging_requests_received']} requests and answered none."]
    return "\n".join(lines)
