#!/usr/bin/env bash
# The rendering tools converge runs (`kustomize build`, `helm template`), built from
# pinned Go modules of the Go module proxy into a cache keyed by version, the same way
# hack/controlplane.sh builds the control plane, so that tests, the quickstart and CI
# have them on a fresh machine with only package registries reachable.
#
#   hack/tools.sh build    build (or reuse) the cached binaries
#   hack/tools.sh env      build if needed, print `export PATH=…` (eval it)
#   hack/tools.sh path     print that line without building (hack/controlplane.sh env)
#   hack/tools.sh status   say which tools are cached where; exit 1 when one is missing
#
# Environment:
#   CONVERGE_TOOLS_CACHE   binary cache (default $HOME/.cache/converge/tools)
#
# Cold build on 2 cores: helm ~80 s, kustomize ~40 s (both at once when there is room).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1   # what kubectl 1.36 embeds (`kubectl kustomize`)
HELM_VERSION=v3.22.0       # v3.18+ is what converge supports

CACHE=${CONVERGE_TOOLS_CACHE:-$HOME/.cache/converge/tools}
KUSTOMIZE_BIN=$CACHE/kustomize-$KUSTOMIZE_VERSION/bin
HELM_BIN=$CACHE/helm-$HELM_VERSION/bin

log() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: error: %s\n' "$*" >&2; exit 1; }

# go_install NAME VERSION BIN_DIR PACKAGE LDFLAGS: one tool, logged, cached by version.
go_install() {
  local name=$1 version=$2 bin=$3 package=$4 ldflags=$5
  [[ -x $bin/$name ]] && return 0
  command -v go >/dev/null || die "Go is not installed; it is needed once to build $name $version into $bin"
  local logf=$CACHE/$name-$version.build.log start=$SECONDS
  mkdir -p "$CACHE"
  log "building $name $version from the Go module proxy (cold: ~1-2 min; log: $logf)"
  # A temporary GOBIN, moved into place at the end: an interrupted build leaves no
  # half-written binary that a later run would take for a cached one.
  local tmp; tmp=$(mktemp -d "$CACHE/.$name-XXXXXX")
  if ! (cd /tmp && CGO_ENABLED=0 GOBIN=$tmp GOFLAGS=-buildvcs=false \
      go install -trimpath -ldflags "$ldflags" "$package@$version") >"$logf" 2>&1; then
    rm -rf "$tmp"
    tail -n 20 "$logf" >&2
    die "building $name $version failed; full log: $logf"
  fi
  rm -rf "$bin"
  mkdir -p "$(dirname "$bin")"
  mv "$tmp" "$bin"
  log "$name $version built in $((SECONDS - start)) s"
}

build_kustomize() {
  go_install kustomize "$KUSTOMIZE_VERSION" "$KUSTOMIZE_BIN" \
    sigs.k8s.io/kustomize/kustomize/v5 "-s -w"
}

# helm's Makefile stamps its version; without it `helm version` says only "v3.22".
build_helm() {
  go_install helm "$HELM_VERSION" "$HELM_BIN" helm.sh/helm/v3/cmd/helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}

# Both at once: each is mostly one long link, so two cores finish them together in
# about the time of the longer one.
cmd_build() {
  local kustomize_pid helm_pid failed=0
  build_kustomize & kustomize_pid=$!
  build_helm & helm_pid=$!
  wait "$kustomize_pid" || failed=1
  wait "$helm_pid" || failed=1
  ((failed == 0)) || die "a tool did not build (see above)"
}

cmd_path() { echo "export PATH=$KUSTOMIZE_BIN:$HELM_BIN:\$PATH"; }

cmd_env() { cmd_build; cmd_path; }

cmd_status() {
  local ok=0
  if [[ -x $KUSTOMIZE_BIN/kustomize ]]; then echo "kustomize $KUSTOMIZE_VERSION: $KUSTOMIZE_BIN/kustomize"
  else echo "kustomize $KUSTOMIZE_VERSION: not built (hack/tools.sh build)"; ok=1; fi
  if [[ -x $HELM_BIN/helm ]]; then echo "helm $HELM_VERSION: $HELM_BIN/helm"
  else echo "helm $HELM_VERSION: not built (hack/tools.sh build)"; ok=1; fi
  return $ok
}

case ${1:-} in
  build) cmd_build ;;
  env) cmd_env ;;
  path) cmd_path ;;
  status) cmd_status ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
