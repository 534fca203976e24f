#!/usr/bin/env bash
# Benchmarks converge side by side with kubectl on the local control plane, in one
# run, and reports ratios (see hack/bench.py for the scenarios).
#
#   hack/bench.sh [--objects N] [--repeat R] [--idle SECONDS] [--edits E]
#
# Writes target/bench/summary.json (every figure, per N) and prints a markdown table.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash hack/install-deps.sh
bash hack/controlplane.sh up
eval "$(bash hack/tools.sh env)"   # kustomize, for the kustomize source scenario
eval "$(bash hack/controlplane.sh env)"
echo "bench: building converge (release)" >&2
cargo build --release --quiet --bin converge --example raw_apply
exec python3 hack/bench.py "$@"
