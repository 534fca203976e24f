#!/usr/bin/env bash
# The tools converge is benchmarked against (issue 17), built from pinned Go modules
# of the Go module proxy into a cache keyed by version, the way hack/tools.sh and
# hack/controlplane.sh build theirs. Wrapper modules (go.mod + go.sum pinned) and the
# Flux and Argo CD engine harnesses live under hack/peers/.
#
#   hack/peers.sh build            build (or reuse) every peer; a peer that does not
#                                  build is reported with its error, the rest are
#                                  kept; exit 1 only when none built
#   hack/peers.sh env              print `export KAPP=… FLUX_SSA=… KUBECTL_SKEW=…
#                                  SOURCE_CONTROLLER=… KUSTOMIZE_CONTROLLER=…
#                                  FLUX_CRDS=… ARGO_ENGINE=…` and their *_VERSION
#                                  for what is built
#   hack/peers.sh status           say which peers are cached where; exit 1 when one
#                                  is missing
#   hack/peers.sh flux-up DIR      install the Flux CRDs, start source-controller and
#                                  kustomize-controller against the local plane (state,
#                                  logs and pids in DIR); print `export …_PID=…
#                                  FLUX_METRICS_SOURCE=… FLUX_METRICS_KUSTOMIZE=…`;
#                                  FLUX_KUBECONFIG=… runs them as that identity;
#                                  FLUX_SOURCE_ARGS=… FLUX_KUSTOMIZE_ARGS=… add
#                                  flags (hack/bench.py's tuned Flux)
#   hack/peers.sh flux-down DIR    stop them (the CRDs stay)
#   hack/peers.sh smoke            prove each peer works on the local plane
#
# Environment:
#   CONVERGE_PEERS_CACHE   binary cache (default $HOME/.cache/converge/peers)
#
# Cold build on 2 busy cores: see BENCHMARKS.md ("Peers").
set -euo pipefail

KAPP_VERSION=v0.64.2
FLUX_VERSION=v1.9.6          # source-controller and kustomize-controller
FLUX_SSA_VERSION=v0.76.2     # github.com/fluxcd/pkg/ssa of kustomize-controller v1.9.6
KUBECTL_SKEW_VERSION=v1.34.4 # the control plane's release (hack/controlplane.sh)
ARGO_ENGINE_VERSION=v3.6.2   # github.com/argoproj/argo-cd/gitops-engine/v3 (Argo CD v3.6.2's)
# The gitops-engine module of Argo CD 3.6 says `go 1.27.0`: built with that
# toolchain (the go command fetches it from the module proxy once, into its cache).
ARGO_ENGINE_TOOLCHAIN=go1.27.3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS=$ROOT/hack/peers
CACHE=${CONVERGE_PEERS_CACHE:-$HOME/.cache/converge/peers}
KAPP_BIN=$CACHE/kapp-$KAPP_VERSION/bin/kapp
FLUX_SSA_BIN=$CACHE/flux-ssa-$FLUX_SSA_VERSION/bin/flux-ssa
KUBECTL_SKEW_BIN=$CACHE/kubectl-$KUBECTL_SKEW_VERSION/bin/kubectl
SOURCE_CONTROLLER_BIN=$CACHE/source-controller-$FLUX_VERSION/bin/source-controller
KUSTOMIZE_CONTROLLER_BIN=$CACHE/kustomize-controller-$FLUX_VERSION/bin/kustomize-controller
FLUX_CRDS_DIR=$CACHE/flux-crds-$FLUX_VERSION
ARGO_ENGINE_BIN=$CACHE/argo-engine-$ARGO_ENGINE_VERSION/bin/argo-engine

log() { printf 'peers: %s\n' "$*" >&2; }
die() { printf 'peers: error: %s\n' "$*" >&2; exit 1; }

# --- build -----------------------------------------------------------------------

# A stamp of a wrapper module and its link flags: a changed go.mod/go.sum/harness
# source/version stamp rebuilds.
build_stamp() { # module-dir ldflags
  { cat "$1"/go.mod "$1"/go.sum "$1"/*.go; echo "$2"; } | sha256sum | cut -c1-16
}

# go_build BINARY MODULE_DIR PACKAGE LDFLAGS: one peer, logged, cached by version
# and module stamp; on failure the error is printed and the function returns 1.
go_build() {
  local binary=$1 module=$2 package=$3 ldflags=$4
  local name bindir stamp logf tmp start=$SECONDS
  name=$(basename "$binary") bindir=$(dirname "$binary") stamp=$(build_stamp "$module" "$ldflags")
  [[ -x $binary && $(cat "$bindir/.stamp" 2>/dev/null) == "$stamp" ]] && return 0
  command -v go >/dev/null || { log "error: Go is not installed; it is needed once to build $name into $bindir"; return 1; }
  logf=${bindir%/bin}.build.log
  mkdir -p "$CACHE"
  log "building $name (${bindir#"$CACHE/"}) from the Go module proxy (log: $logf)"
  # Built into a temporary directory and moved into place at the end: an
  # interrupted build leaves nothing a later run would take for a cached binary.
  tmp=$(mktemp -d "$CACHE/.$name-XXXXXX")
  if ! (cd "$module" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 \
      go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$package") >"$logf" 2>&1; then
    rm -rf "$tmp"
    log "error: building $name failed; full log: $logf"
    tail -n 20 "$logf" | sed 's/^/    /' >&2
    return 1
  fi
  echo "$stamp" > "$tmp/.stamp"
  rm -rf "$bindir"
  mkdir -p "$(dirname "$bindir")"
  mv "$tmp" "$bindir"
  log "$name built in $((SECONDS - start)) s: $binary"
}

# The version kubectl reports, stamped as hack/controlplane.sh stamps the plane.
kubectl_ldflags() {
  local flags="-s -w" pkg minor=${KUBECTL_SKEW_VERSION#v1.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBECTL_SKEW_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# kapp's release build stamps its version (without the v) as below.
build_kapp() {
  go_build "$KAPP_BIN" "$PEERS/kapp" carvel.dev/kapp/cmd/kapp \
    "-s -w -X carvel.dev/kapp/pkg/kapp/version.Version=${KAPP_VERSION#v}"
}
build_flux_ssa() { go_build "$FLUX_SSA_BIN" "$PEERS/flux-ssa" . "-s -w"; }
build_argo_engine() {
  GOTOOLCHAIN=$ARGO_ENGINE_TOOLCHAIN go_build "$ARGO_ENGINE_BIN" "$PEERS/argo-engine" . "-s -w"
}
build_kubectl() { go_build "$KUBECTL_SKEW_BIN" "$PEERS/kubectl" k8s.io/kubernetes/cmd/kubectl "$(kubectl_ldflags)"; }

build_source_controller() {
  go_build "$SOURCE_CONTROLLER_BIN" "$PEERS/source-controller" github.com/fluxcd/source-controller "-s -w"
}

build_kustomize_controller() {
  go_build "$KUSTOMIZE_CONTROLLER_BIN" "$PEERS/kustomize-controller" github.com/fluxcd/kustomize-controller "-s -w"
}

# The CRDs ship in each controller's module (config/crd/bases), which the build
# has just put in the module cache.
copy_flux_crds() {
  [[ -f $FLUX_CRDS_DIR/.complete ]] && return 0
  local name dir
  rm -rf "$FLUX_CRDS_DIR" && mkdir -p "$FLUX_CRDS_DIR"
  for name in source-controller kustomize-controller; do
    dir=$(cd "$PEERS/$name" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$name") \
      || { log "error: github.com/fluxcd/$name is not in the module cache"; return 1; }
    cp "$dir"/config/crd/bases/*.yaml "$FLUX_CRDS_DIR/"
  done
  chmod u+w "$FLUX_CRDS_DIR"/*.yaml
  touch "$FLUX_CRDS_DIR/.complete"
}

# One at a time: each build already uses both cores, and the machine is shared. The
# daemons' peers first (kubectl drives flux-up), then the command-line ones.
cmd_build() {
  local step failed=() ok=0
  for step in build_kubectl build_argo_engine build_source_controller build_kustomize_controller \
      build_flux_ssa build_kapp; do
    if "$step"; then ok=$((ok + 1)); else failed+=("${step#build_}"); fi
  done
  if [[ -x $SOURCE_CONTROLLER_BIN && -x $KUSTOMIZE_CONTROLLER_BIN ]]; then
    copy_flux_crds || failed+=(flux_crds)
  fi
  ((${#failed[@]} == 0)) || log "not built: ${failed[*]} (errors above)"
  ((ok > 0)) || die "no peer could be built"
}

# --- env / status ----------------------------------------------------------------

cmd_env() {
  local missing=()
  if [[ -x $KAPP_BIN ]]; then echo "export KAPP=$KAPP_BIN KAPP_VERSION=$KAPP_VERSION"; else missing+=(kapp); fi
  if [[ -x $FLUX_SSA_BIN ]]; then echo "export FLUX_SSA=$FLUX_SSA_BIN FLUX_SSA_VERSION=$FLUX_SSA_VERSION"; else missing+=(flux-ssa); fi
  if [[ -x $KUBECTL_SKEW_BIN ]]; then echo "export KUBECTL_SKEW=$KUBECTL_SKEW_BIN KUBECTL_SKEW_VERSION=$KUBECTL_SKEW_VERSION"; else missing+=(kubectl); fi
  if [[ -x $ARGO_ENGINE_BIN ]]; then echo "export ARGO_ENGINE=$ARGO_ENGINE_BIN ARGO_ENGINE_VERSION=$ARGO_ENGINE_VERSION"; else missing+=(argo-engine); fi
  if [[ -x $SOURCE_CONTROLLER_BIN && -x $KUSTOMIZE_CONTROLLER_BIN && -f $FLUX_CRDS_DIR/.complete ]]; then
    echo "export SOURCE_CONTROLLER=$SOURCE_CONTROLLER_BIN KUSTOMIZE_CONTROLLER=$KUSTOMIZE_CONTROLLER_BIN FLUX_CRDS=$FLUX_CRDS_DIR FLUX_VERSION=$FLUX_VERSION"
  else
    missing+=(flux-controllers)
  fi
  ((${#missing[@]} == 0)) || log "not built (hack/peers.sh build): ${missing[*]}"
}

cmd_status() {
  local ok=0 pair name binary
  for pair in "kapp $KAPP_VERSION:$KAPP_BIN" "flux-ssa $FLUX_SSA_VERSION:$FLUX_SSA_BIN" \
      "kubectl $KUBECTL_SKEW_VERSION:$KUBECTL_SKEW_BIN" \
      "source-controller $FLUX_VERSION:$SOURCE_CONTROLLER_BIN" \
      "kustomize-controller $FLUX_VERSION:$KUSTOMIZE_CONTROLLER_BIN" \
      "argo-engine $ARGO_ENGINE_VERSION:$ARGO_ENGINE_BIN"; do
    name=${pair%%:*} binary=${pair#*:}
    if [[ -x $binary ]]; then echo "$name: $binary"; else echo "$name: not built (hack/peers.sh build)"; ok=1; fi
  done
  return $ok
}

# --- Flux controllers ------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

plane_env() {
  eval "$(bash "$ROOT/hack/controlplane.sh" env)"
  bash "$ROOT/hack/controlplane.sh" status >/dev/null \
    || die "the local control plane is not up (hack/controlplane.sh up)"
}

kc() { "$KUBECTL_SKEW_BIN" "$@"; }

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  log "$what after $((SECONDS - deadline + secs)) s"
}

# True when DIR/NAME.pid names a live process running our binary (not a reused pid).
controller_running() {
  local pid; pid=$(cat "$1/$2.pid" 2>/dev/null) || return 1
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- "/$2 "
}

# start_controller DIR NAME BINARY ARGS...: in its own session, so that it outlives
# this script; the ports it was given are kept in DIR/NAME.{metrics,health}.
start_controller() {
  local dir=$1 name=$2 binary=$3; shift 3
  local metrics health
  metrics=$(free_port) health=$(free_port)
  echo "$metrics" > "$dir/$name.metrics"
  echo "$health" > "$dir/$name.health"
  # FLUX_KUBECONFIG: the controllers' own identity (hack/controlplane.sh identity),
  # so that the API server's audit log tells their requests apart; the CRDs are
  # installed with the admin kubeconfig either way.
  KUBECONFIG=${FLUX_KUBECONFIG:-$KUBECONFIG} RUNTIME_NAMESPACE=flux-system \
    setsid "$binary" --enable-leader-election=false \
    --metrics-addr="127.0.0.1:$metrics" --health-addr="127.0.0.1:$health" \
    --log-encoding=json --log-level=info "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! > "$dir/$name.pid"
}

# Ready is /readyz answering and the controller's workers started (its caches are
# synced): /readyz alone answers before the informers have listed anything.
controller_ready() { # dir name kind
  curl -fsS "http://127.0.0.1:$(cat "$1/$2.health")/readyz" \
    && grep -q "\"msg\":\"Starting workers\",\"controller\":\"$3\"" "$1/$2.log"
}

cmd_flux_up() {
  local dir=${1:-}; [[ -n $dir ]] || die "usage: hack/peers.sh flux-up DIR"
  [[ -x $SOURCE_CONTROLLER_BIN && -x $KUSTOMIZE_CONTROLLER_BIN && -f $FLUX_CRDS_DIR/.complete && -x $KUBECTL_SKEW_BIN ]] \
    || die "the Flux controllers or kubectl are not built (hack/peers.sh build)"
  plane_env
  mkdir -p "$dir/storage"
  dir=$(cd "$dir" && pwd)
  local name
  for name in source-controller kustomize-controller; do
    ! controller_running "$dir" "$name" || die "$name already runs from $dir (hack/peers.sh flux-down $dir)"
  done
  kc apply --server-side --field-manager=peers.sh -f "$FLUX_CRDS_DIR" >/dev/null
  kc wait --for=condition=Established crd --all --timeout=60s >/dev/null \
    || die "the Flux CRDs did not become Established"
  kc create namespace flux-system --dry-run=client -o yaml | kc apply --server-side --field-manager=peers.sh -f - >/dev/null
  local storage; storage=$(free_port)
  # Whatever fails from here on stops what was started; the logs stay for reading.
  trap "cmd_flux_down '$dir'" EXIT
  # shellcheck disable=SC2086 # FLUX_*_ARGS: flags, split on spaces
  start_controller "$dir" source-controller "$SOURCE_CONTROLLER_BIN" \
    --storage-path="$dir/storage" --storage-addr="127.0.0.1:$storage" --storage-adv-addr="127.0.0.1:$storage" \
    ${FLUX_SOURCE_ARGS:-}
  # shellcheck disable=SC2086 # FLUX_*_ARGS: flags, split on spaces
  start_controller "$dir" kustomize-controller "$KUSTOMIZE_CONTROLLER_BIN" ${FLUX_KUSTOMIZE_ARGS:-}
  for name in source-controller:gitrepository kustomize-controller:kustomization; do
    wait_for "${name%:*} is ready" 120 controller_ready "$dir" "${name%:*}" "${name#*:}" || {
      name=${name%:*}
      tail -n 20 "$dir/$name.log" >&2
      die "$name did not become ready within 120 s (log: $dir/$name.log)"
    }
  done
  trap - EXIT
  echo "export SOURCE_CONTROLLER_PID=$(cat "$dir/source-controller.pid")" \
    "KUSTOMIZE_CONTROLLER_PID=$(cat "$dir/kustomize-controller.pid")" \
    "FLUX_METRICS_SOURCE=http://127.0.0.1:$(cat "$dir/source-controller.metrics")/metrics" \
    "FLUX_METRICS_KUSTOMIZE=http://127.0.0.1:$(cat "$dir/kustomize-controller.metrics")/metrics"
}

cmd_flux_down() {
  local dir=${1:-} name pid; [[ -n $dir ]] || die "usage: hack/peers.sh flux-down DIR"
  for name in kustomize-controller source-controller; do
    controller_running "$dir" "$name" || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name stopped"
  done
  rm -f "$dir"/*.pid
}

# --- smoke -----------------------------------------------------------------------

source "$PEERS/smoke.sh"

case ${1:-} in
  build) cmd_build ;;
  env) cmd_env ;;
  status) cmd_status ;;
  flux-up) cmd_flux_up "${2:-}" ;;
  flux-down) cmd_flux_down "${2:-}" ;;
  smoke) cmd_smoke ;;
  *) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
