#!/usr/bin/env bash
# A local OCI registry on loopback for the OCI source tests (tests/it/oci.rs):
# go-containerregistry's in-memory `registry`, and `crane` from the same pinned module
# as a second, independent OCI client, both built from the Go module proxy into a
# cache keyed by version (as hack/tools.sh builds kustomize and helm).
#
#   hack/registry.sh up       build if needed, start (or reuse) the registry
#   hack/registry.sh env      print `export REGISTRY=127.0.0.1:PORT REGISTRY_LOG=… PATH=…`
#                             (eval it)
#   hack/registry.sh status   say what runs where; exit 1 when not up
#   hack/registry.sh down     stop what `up` started, remove its state
#   hack/registry.sh build    only build (or reuse) the cached binaries
#
# Environment:
#   CONVERGE_REGISTRY_DIR    state directory (default /tmp/converge-registry-$UID)
#   CONVERGE_REGISTRY_CACHE  binary cache (default $HOME/.cache/converge)
#
# The registry keeps everything in memory: `down` then `up` starts empty.
# Cold build on 2 cores: ~1 min.
set -euo pipefail

GGCR_VERSION=v0.22.1

STATE=${CONVERGE_REGISTRY_DIR:-/tmp/converge-registry-$(id -u)}
CACHE=${CONVERGE_REGISTRY_CACHE:-$HOME/.cache/converge}
BIN=$CACHE/registry-$GGCR_VERSION/bin

log() { printf 'registry: %s\n' "$*" >&2; }
die() { printf 'registry: error: %s\n' "$*" >&2; exit 1; }

cmd_build() {
  [[ -x $BIN/registry && -x $BIN/crane ]] && return 0
  command -v go >/dev/null ||
    die "Go is not installed; it is needed once to build the registry $GGCR_VERSION into $BIN"
  mkdir -p "$CACHE"
  local logf=$CACHE/registry-$GGCR_VERSION.build.log start=$SECONDS
  log "building registry and crane $GGCR_VERSION from the Go module proxy (log: $logf)"
  # A temporary GOBIN moved into place at the end: an interrupted build leaves no
  # half-written binary that a later run would take for a cached one.
  local tmp; tmp=$(mktemp -d "$CACHE/.registry-XXXXXX")
  if ! (cd /tmp && CGO_ENABLED=0 GOBIN=$tmp GOFLAGS=-buildvcs=false go install -trimpath \
      -ldflags "-s -w" \
      "github.com/google/go-containerregistry/cmd/registry@$GGCR_VERSION" \
      "github.com/google/go-containerregistry/cmd/crane@$GGCR_VERSION") >"$logf" 2>&1; then
    rm -rf "$tmp"
    tail -n 20 "$logf" >&2
    die "building the registry $GGCR_VERSION failed; full log: $logf"
  fi
  rm -rf "$BIN"
  mkdir -p "$(dirname "$BIN")"
  mv "$tmp" "$BIN"
  log "registry and crane $GGCR_VERSION built in $((SECONDS - start)) s"
}

# The port of the running registry, or nothing (exit 1) when it is not up.
running_port() {
  [[ -f $STATE/pid && -f $STATE/port ]] || return 1
  kill -0 "$(cat "$STATE/pid")" 2>/dev/null || return 1
  local port; port=$(cat "$STATE/port")
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/" || return 1
  echo "$port"
}

cmd_up() {
  if running_port >/dev/null; then
    log "already up on 127.0.0.1:$(cat "$STATE/port")"
    return 0
  fi
  cmd_build
  rm -rf "$STATE"
  mkdir -p "$STATE"
  # -port 0: the kernel picks a free port; the registry logs it. It listens on
  # localhost only.
  setsid "$BIN/registry" -port 0 >"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$STATE/pid"
  local port="" i
  for i in $(seq 1 100); do
    port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$STATE/registry.log" | head -n1)
    [[ -n $port ]] && break
    kill -0 "$(cat "$STATE/pid")" 2>/dev/null ||
      die "the registry exited at start: $(tail -n 5 "$STATE/registry.log")"
    sleep 0.1
  done
  [[ -n $port ]] || die "the registry did not say its port within 10 s; log: $STATE/registry.log"
  echo "$port" >"$STATE/port"
  for i in $(seq 1 50); do
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/v2/"; then
      log "up on 127.0.0.1:$port (log: $STATE/registry.log)"
      return 0
    fi
    sleep 0.1
  done
  die "the registry on 127.0.0.1:$port does not answer /v2/; log: $STATE/registry.log"
}

cmd_down() {
  if [[ -f $STATE/pid ]]; then
    local pid; pid=$(cat "$STATE/pid")
    kill "$pid" 2>/dev/null || true
    log "stopped (pid $pid)"
  fi
  rm -rf "$STATE"
}

cmd_env() {
  local port
  port=$(running_port) || die "the registry is not up; run hack/registry.sh up"
  # REGISTRY_LOG: the registry logs every request; tests count downloads in it.
  echo "export REGISTRY=127.0.0.1:$port REGISTRY_LOG=$STATE/registry.log PATH=$BIN:\$PATH"
}

cmd_status() {
  local port
  if port=$(running_port); then
    echo "registry $GGCR_VERSION: up on 127.0.0.1:$port (pid $(cat "$STATE/pid"))"
  else
    echo "registry $GGCR_VERSION: not up (hack/registry.sh up)"
    return 1
  fi
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  build) cmd_build ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
