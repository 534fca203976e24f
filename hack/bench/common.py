"""What every part of the benchmark shares: running commands, statistics, the
per-second sampler of RSS and CPU, and the record of where a figure came from."""

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# CONVERGE_BENCH_BIN: another build to measure (e.g. a debug one, for a smoke run).
CONVERGE = Path(os.environ.get("CONVERGE_BENCH_BIN", ROOT / "target/release/converge"))
RAW = ROOT / "target/release/examples/raw_apply"
# BENCH_NS_PREFIX: put before every set's namespaces (`zb1000-…`), so that two bench
# runs on one shared plane (two worktrees) do not delete each other's sets as
# leftovers; each deletes only its own.
NS_PREFIX = os.environ.get("BENCH_NS_PREFIX", "")
# A p99 over fewer samples is the maximum under another name.
P99_MIN_SAMPLES = 100


class BenchError(SystemExit):
    """A scenario whose outcome is wrong: the run stops instead of reporting it."""

    def __init__(self, message):
        super().__init__(f"bench: error: {message}")


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class ToolTimeout(BenchError):
    """A command ran past its time budget (--tool-timeout): the tool is reported as
    not finishing, and the rest of the run goes on."""


# Seconds any one command may take when the caller gives no timeout (--tool-timeout);
# None: unbounded.
TOOL_TIMEOUT = None


def run(cmd, env=None, check=True, timeout=None):
    """Runs a command, output captured; returns (seconds, CompletedProcess)."""
    timeout = timeout if timeout is not None else TOOL_TIMEOUT
    started = time.monotonic()
    try:
        proc = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        words = [Path(str(cmd[0])).name] + [str(c) for c in cmd[1:3]]
        raise ToolTimeout(f"`{' '.join(words)} …` did not finish within {timeout} s") from e
    took = time.monotonic() - started
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return took, proc


def kubectl(*args, check=True, env=None):
    """The helper kubectl (setup, checks, clean-up); never the one measured."""
    return run(["kubectl", *args], check=check, env=env)[1].stdout


def stats(samples):
    samples = sorted(samples)
    return {"median": statistics.median(samples), "min": samples[0], "max": samples[-1], "samples": samples}


def percentile(samples, p):
    samples = sorted(samples)
    k = (len(samples) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(samples) - 1)
    return samples[lo] + (samples[hi] - samples[lo]) * (k - lo)


def latency(samples_s):
    """p50 and max in ms, and p99 only with enough samples to mean something."""
    ms = [1000 * s for s in samples_s]
    enough = len(ms) >= P99_MIN_SAMPLES
    return {"samples": len(ms), "p50_ms": percentile(ms, 50), "max_ms": max(ms),
            "p99_ms": percentile(ms, 99) if enough else None,
            **({} if enough else {"p99_note": f"{len(ms)} samples (< {P99_MIN_SAMPLES}): max reported, no p99"})}


def describe_latency(r):
    tail = f"p99 {r['p99_ms']:.0f} ms" if r.get("p99_ms") is not None else f"max {r['max_ms']:.0f} ms"
    return f"p50 {r['p50_ms']:.0f} ms, {tail} ({r['samples']} samples)"


# --- processes ---------------------------------------------------------------------

def proc_rss_kib(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))


def proc_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """RSS and CPU of a group of processes (summed), sampled every second on a thread."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.rss_mib = []
        self.cpu_percent = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _cpu(self):
        return sum(proc_cpu_seconds(p) for p in self.pids)

    def _loop(self):
        last_t, last_cpu = time.monotonic(), self._cpu()
        while not self._stop.wait(1.0):
            try:
                rss = sum(proc_rss_kib(p) for p in self.pids) / 1024
                now, cpu = time.monotonic(), self._cpu()
            except (FileNotFoundError, ProcessLookupError):
                self.died = True
                return
            self.rss_mib.append(rss)
            self.cpu_percent.append(100 * (cpu - last_cpu) / (now - last_t))
            last_t, last_cpu = now, cpu

    def __enter__(self):
        self.died = False
        self.started = time.monotonic()
        self.cpu_at_start = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = time.monotonic() - self.started
        self.cpu_seconds = self._cpu() - self.cpu_at_start if not self.died else None

    def result(self):
        if self.died or not self.rss_mib:
            raise BenchError(f"processes {self.pids} died while sampled")
        return {
            "seconds": self.seconds,
            "samples": len(self.rss_mib),
            "rss_mib": statistics.mean(self.rss_mib),
            "rss_mib_max": max(self.rss_mib),
            "cpu_percent": 100 * self.cpu_seconds / self.seconds,
            "cpu_percent_max": max(self.cpu_percent),
            "cpu_seconds": self.cpu_seconds,
        }


# --- provenance --------------------------------------------------------------------

def git_commit():
    sha = run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"])[1].stdout.strip()
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])[1].stdout.strip()
    return sha + ("-dirty" if dirty else "")


def machine():
    meminfo = Path("/proc/meminfo").read_text()
    mem = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {"nproc": os.cpu_count(), "memory_gib": round(mem / 1024 / 1024, 1), "kernel": platform.release(),
            "cpu": model.group(1).strip() if model else None, "loadavg_at_start": os.getloadavg()}


def tool_version(cmd):
    try:
        out = run(cmd, check=False, timeout=30)[1]
    except BenchError:
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].split(" ", 1)[-1] if text else None  # "converge 0.1.0" → "0.1.0"


def kube_versions(kubectl_cmd):
    out = json.loads(run([kubectl_cmd, "version", "-o", "json"])[1].stdout)
    return out["serverVersion"]["gitVersion"], out["clientVersion"]["gitVersion"]
