#!/usr/bin/env python3
"""converge side by side with its peers on the same control plane, in one run.

Run through hack/bench.sh, which starts the plane, builds converge and the peers
(hack/peers.sh) and exports where they are. Per size (--objects 1000,10000,30000):

- command-line tools: converge, kubectl (within the server's skew when hack/peers.sh
  built one), kubectl with --applyset, kapp, Flux's engine (fluxcd/pkg/ssa) and the
  raw SSA limit; first apply, no-op diff and a 1% change, each repetition on a
  settled cluster, the order of the tools rotated between repetitions, every
  outcome checked (objects present, the change read back);
- daemons: converge and the Flux controllers, each owning the set from the same
  loopback Git host: idle (>= 6 min, RSS and CPU every second, API requests from
  the API server's audit log), commit-to-converged with each one's fastest trigger,
  drift correction;
- a kustomize-rendered source (converge only);
- the relist (issue 28, converge only): one relist of the kinds the daemon owns,
  its time and requests (`relist.seconds` in target/bench/summary.json);
- clusters (issue 24): converge's daemon owning the set on the home plane, idle;
  then the same config plus a [[clusters]] entry and a second source of the same
  size on a second plane (--second-plane, started when not up), idle; RSS, CPU and
  the API requests per minute on each plane (each one's audit log), two / one.

Writes bench/results/<date>-<commit>.json (every figure with the commit, versions and
machine) and target/bench/summary.json, and prints the markdown BENCHMARKS.md
quotes. `hack/bench.py report FILE.json` renders a results file again.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench.main import main  # noqa: E402  (the package next to this file)

if __name__ == "__main__":
    sys.exit(main())
