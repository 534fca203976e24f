#!/usr/bin/env bash
# Benchmarks converge side by side with its peers (kubectl, kapp, Flux's engine and
# controllers) on the local control plane, and reports ratios and the targets of
# issue 17 (see hack/bench.py for the scenarios and the method).
#
#   hack/bench.sh [--objects 1000,10000,30000] [--repeat 3,3,1] [--idle 360] ...
#   hack/bench.sh report bench/results/FILE.json     render a results file again
#
# Writes bench/results/<date>-<commit>.json and target/bench/summary.json, prints the
# markdown table. The API server's audit log (hack/controlplane.sh, since issue 17)
# counts the daemons' idle requests: a plane started before that needs a restart.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ ${1:-} == report ]]; then exec python3 hack/bench.py "$@"; fi
bash hack/install-deps.sh
bash hack/controlplane.sh up
eval "$(bash hack/tools.sh env)"   # kustomize, for the kustomize source scenario
eval "$(bash hack/controlplane.sh env)"
# The peers: a peer that cannot be built is reported as "not built: <reason>" and
# the rest is measured.
if [[ -f hack/peers.sh ]]; then
  mkdir -p target/bench
  if bash hack/peers.sh build >target/bench/peers-build.log 2>&1; then
    eval "$(bash hack/peers.sh env)"
  else
    export BENCH_PEERS_ERROR="hack/peers.sh build failed: $(tail -n 1 target/bench/peers-build.log) (log: target/bench/peers-build.log)"
    echo "bench: $BENCH_PEERS_ERROR" >&2
    eval "$(bash hack/peers.sh env 2>/dev/null)" || true
  fi
else
  export BENCH_PEERS_ERROR="hack/peers.sh does not exist on this commit"
fi
echo "bench: building converge (release)" >&2
cargo build --release --quiet --bin converge --example raw_apply
exec python3 hack/bench.py "$@"
