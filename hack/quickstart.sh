#!/usr/bin/env bash
# The main job from a fresh clone: start the local control plane (building it the
# first time), build converge, and run the daemon on config.toml, which keeps
# examples/guestbook converged into the cluster. Ctrl-C stops the daemon; the
# control plane keeps running until `hack/controlplane.sh down`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

command -v cargo >/dev/null || { echo "quickstart: cargo is not installed: install Rust (https://rustup.rs)" >&2; exit 1; }
bash hack/install-deps.sh
bash hack/controlplane.sh up
eval "$(bash hack/controlplane.sh env)"
eval "$(bash hack/tools.sh env)"   # kustomize and helm, for rendered sources
echo "quickstart: building converge" >&2
cargo build --quiet --bin converge

cat >&2 <<MSG

converge is about to run on config.toml, converging examples/guestbook into the
local cluster. In another terminal:

  cd $ROOT && eval "\$(hack/controlplane.sh env)"
  target/debug/converge status                 # sources, revisions, drift
  kubectl get deploy,svc,cm,secret -l app.kubernetes.io/part-of=guestbook
  kubectl scale deploy guestbook --replicas=5  # drift: healed within a second
  sed -i 's/replicas: 2/replicas: 3/' examples/guestbook/deployment.yaml   # a change: applied at once
  curl -s localhost:9476/metrics | grep converge_

Ctrl-C stops the daemon (hack/controlplane.sh down stops the cluster).

MSG
exec target/debug/converge run --config config.toml
