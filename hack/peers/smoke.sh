# `hack/peers.sh smoke`: proves each peer works on the local plane with
# tests/fixtures/microservices-demo, the way hack/bench.py drives it. Sourced by
# hack/peers.sh (uses its variables, log, die, kc, wait_for, cmd_flux_up/down).

SMOKE_APP=peers-smoke
SMOKE_NAMESPACES=(peers-smoke-kapp peers-smoke-fluxssa peers-smoke-flux)
DEMO=$ROOT/tests/fixtures/microservices-demo/kubernetes-manifests.yaml

now() { echo "$EPOCHREALTIME"; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(now)"; }

# namespaced_demo NS FILE: the demo with every object in NS, and NS itself first.
namespaced_demo() {
  local ns=$1 out=$2 kdir
  kdir=$(mktemp -d "$SMOKE_WORK/kustomize-XXXXXX")
  cp "$DEMO" "$kdir/"
  printf 'namespace: %s\nresources:\n- kubernetes-manifests.yaml\n' "$ns" > "$kdir/kustomization.yaml"
  mkdir -p "$(dirname "$out")"
  { printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n---\n' "$ns"; kc kustomize "$kdir"; } > "$out"
}

smoke_kubectl() {
  local client server
  client=$(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
  server=$(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
  [[ $client == "$KUBECTL_SKEW_VERSION" ]] || die "kubectl reports $client, not $KUBECTL_SKEW_VERSION"
  log "kubectl: client $client, server $server"
}

smoke_kapp() {
  local dir=$SMOKE_WORK/kapp t
  namespaced_demo peers-smoke-kapp "$dir/demo.yaml"
  t=$(now)
  "$KAPP_BIN" deploy -a "$SMOKE_APP" -n default -f "$dir" -y --wait=false >"$SMOKE_WORK/kapp-deploy.log" 2>&1 \
    || { tail -n 20 "$SMOKE_WORK/kapp-deploy.log" >&2; die "kapp deploy failed"; }
  log "kapp deploy: $(since "$t") s"
  t=$(now)
  # Not --diff-exit-status: it reports "pending changes" (3) for the "noop"
  # operations kapp lists for every object it would wait for.
  "$KAPP_BIN" deploy -a "$SMOKE_APP" -n default -f "$dir" --diff-run >"$SMOKE_WORK/kapp-diff.log" 2>&1 \
    || { tail -n 20 "$SMOKE_WORK/kapp-diff.log" >&2; die "kapp deploy --diff-run failed"; }
  grep -Eq '^Op: +0 create, 0 delete, 0 update,' "$SMOKE_WORK/kapp-diff.log" \
    || { tail -n 30 "$SMOKE_WORK/kapp-diff.log" >&2; die "kapp deploy --diff-run found changes after a deploy"; }
  log "kapp deploy --diff-run: $(grep -E '^Op:' "$SMOKE_WORK/kapp-diff.log" | tr -s ' '), $(since "$t") s"
  # Without waiting, kapp delete fails on the still terminating Namespace and keeps
  # its record of the app (a ConfigMap of the app's name): removed by hand.
  "$KAPP_BIN" delete -a "$SMOKE_APP" -n default -y --wait=false >/dev/null 2>&1 || true
  kc delete configmap "$SMOKE_APP" -n default --ignore-not-found >/dev/null
}

smoke_flux_ssa() {
  local dir=$SMOKE_WORK/flux-ssa out rc=0
  namespaced_demo peers-smoke-fluxssa "$dir/demo.yaml"
  out=$("$FLUX_SSA_BIN" apply --dir "$dir") || die "flux-ssa apply failed"
  log "flux-ssa apply: $out"
  out=$("$FLUX_SSA_BIN" diff --dir "$dir") || rc=$?
  # Diff GETs an object, then dry-runs it: a controller's write in between (the
  # deployment controller's, right after the apply) shows as a change. Once more.
  if [[ $rc == 1 ]]; then
    log "flux-ssa diff right after the apply: $out (a controller's write between GET and dry-run); again"
    sleep 2
    rc=0 && out=$("$FLUX_SSA_BIN" diff --dir "$dir") || rc=$?
  fi
  [[ $rc == 0 ]] || die "flux-ssa diff exited $rc after an apply, not 0: $out"
  log "flux-ssa diff: $out"
}

git_in() { git -C "$SMOKE_WORK/src" -c user.name=peers -c user.email=peers@localhost "$@"; }

# The demo (as it is: the Kustomization's targetNamespace places it) in a bare
# repository served over smart HTTP.
start_git_server() {
  mkdir -p "$SMOKE_WORK/git" "$SMOKE_WORK/src"
  git init -q --bare -b main "$SMOKE_WORK/git/demo.git"
  git -C "$SMOKE_WORK/git/demo.git" config http.receivepack true
  git init -q -b main "$SMOKE_WORK/src"
  cp "$DEMO" "$SMOKE_WORK/src/"
  git_in add -A && git_in commit -q -m demo
  git_in push -q "$SMOKE_WORK/git/demo.git" main
  setsid python3 "$PEERS/git_http.py" "$SMOKE_WORK/git" "$SMOKE_WORK/git.port" \
    >"$SMOKE_WORK/git_http.log" 2>&1 </dev/null &
  echo $! > "$SMOKE_WORK/git_http.pid"
  wait_for "the Git server is up" 20 test -s "$SMOKE_WORK/git.port" || die "the Git server did not start"
  GIT_URL=http://127.0.0.1:$(cat "$SMOKE_WORK/git.port")/demo.git
  git ls-remote "$GIT_URL" >/dev/null || die "git ls-remote $GIT_URL failed (log: $SMOKE_WORK/git_http.log)"
}

apply_flux_objects() {
  kc apply --server-side --field-manager=peers.sh -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: peers-smoke-flux}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: $SMOKE_APP, namespace: flux-system}
spec:
  interval: 1m
  url: $GIT_URL
  ref: {branch: main}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: $SMOKE_APP, namespace: flux-system}
spec:
  interval: 1m
  prune: true
  path: ./
  targetNamespace: peers-smoke-flux
  sourceRef: {kind: GitRepository, name: $SMOKE_APP}
EOF
}

marker_value() { kc get configmap peers-smoke-marker -n peers-smoke-flux -o 'jsonpath={.data.rev}' 2>/dev/null; }
marker_is() { [[ $(marker_value) == "$1" ]]; }
artifact_has() {
  [[ $(kc get gitrepository "$SMOKE_APP" -n flux-system -o 'jsonpath={.status.artifact.revision}') == *"$1"* ]]
}

# A commit, then `flux reconcile source git` and `flux reconcile kustomization`'s
# equivalent: the reconcile.fluxcd.io/requestedAt annotation on each.
commit_and_reconcile() {
  local rev=$1 t sha
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: peers-smoke-marker\ndata:\n  rev: "%s"\n' "$rev" \
    > "$SMOKE_WORK/src/marker.yaml"
  t=$(now)
  git_in add -A && git_in commit -q -m "marker $rev" && git_in push -q "$SMOKE_WORK/git/demo.git" main
  sha=$(git_in rev-parse HEAD)
  kc annotate --overwrite gitrepository "$SMOKE_APP" -n flux-system "reconcile.fluxcd.io/requestedAt=$(date +%s%N)" >/dev/null
  wait_for "source-controller has the commit" 120 artifact_has "$sha" || die "the GitRepository did not fetch $sha"
  log "commit to artifact: $(since "$t") s"
  kc annotate --overwrite kustomization "$SMOKE_APP" -n flux-system "reconcile.fluxcd.io/requestedAt=$(date +%s%N)" >/dev/null
  wait_for "kustomize-controller applied the commit" 120 marker_is "$rev" || die "the commit was not applied"
  log "commit to converged: $(since "$t") s"
}

smoke_flux_controllers() {
  local t exports
  start_git_server
  exports=$(cmd_flux_up "$SMOKE_WORK/flux") || die "hack/peers.sh flux-up failed"
  eval "$exports"
  log "controllers: source-controller pid $SOURCE_CONTROLLER_PID ($FLUX_METRICS_SOURCE), kustomize-controller pid $KUSTOMIZE_CONTROLLER_PID ($FLUX_METRICS_KUSTOMIZE)"
  t=$(now)
  apply_flux_objects
  kc wait --for=condition=Ready "kustomization/$SMOKE_APP" -n flux-system --timeout=180s >/dev/null || {
    kc get gitrepository,kustomization -n flux-system -o yaml >&2 || true
    die "the Kustomization did not become Ready (logs: $SMOKE_WORK/flux)"
  }
  log "GitRepository + Kustomization Ready: $(since "$t") s, $(kc get deployments -n peers-smoke-flux --no-headers | wc -l) Deployments in peers-smoke-flux"
  commit_and_reconcile "$(date +%s)"
  # Read whole before grep: `curl | grep -q` fails under pipefail when grep stops early.
  local metrics; metrics=$(curl -fsS "$FLUX_METRICS_KUSTOMIZE") || die "no metrics at $FLUX_METRICS_KUSTOMIZE"
  grep -q '^gotk_reconcile_duration_seconds' <<<"$metrics" \
    || die "kustomize-controller's metrics lack gotk_reconcile_duration_seconds"
  log "metrics: both controllers serve /metrics"
}

# Everything the smoke made is removed; with the controllers still up, so that the
# Kustomization's finalizer prunes what it applied.
smoke_cleanup() {
  set +e
  if [[ -f $SMOKE_WORK/flux/kustomize-controller.pid ]]; then
    kc delete kustomization "$SMOKE_APP" -n flux-system --ignore-not-found --timeout=60s >/dev/null 2>&1
    kc delete gitrepository "$SMOKE_APP" -n flux-system --ignore-not-found --timeout=60s >/dev/null 2>&1
    cmd_flux_down "$SMOKE_WORK/flux"
  fi
  [[ -f $SMOKE_WORK/git_http.pid ]] && kill "$(cat "$SMOKE_WORK/git_http.pid")" 2>/dev/null
  kc delete namespace "${SMOKE_NAMESPACES[@]}" --ignore-not-found --wait=false >/dev/null 2>&1
  log "smoke state removed (logs kept in $SMOKE_WORK)"
}

cmd_smoke() {
  local missing=()
  [[ -x $KAPP_BIN ]] || missing+=(kapp)
  [[ -x $FLUX_SSA_BIN ]] || missing+=(flux-ssa)
  [[ -x $KUBECTL_SKEW_BIN ]] || missing+=(kubectl)
  [[ -x $SOURCE_CONTROLLER_BIN && -x $KUSTOMIZE_CONTROLLER_BIN ]] || missing+=(flux-controllers)
  ((${#missing[@]} == 0)) || die "not built: ${missing[*]} (hack/peers.sh build)"
  plane_env
  # A previous run's namespaces may still be terminating: objects cannot go there.
  kc delete namespace "${SMOKE_NAMESPACES[@]}" --ignore-not-found --timeout=180s >/dev/null \
    || die "the namespaces of a previous smoke are not gone: ${SMOKE_NAMESPACES[*]}"
  SMOKE_WORK=$(mktemp -d /tmp/peers-smoke-XXXXXX)
  trap smoke_cleanup EXIT
  smoke_kubectl
  smoke_kapp
  smoke_flux_ssa
  smoke_flux_controllers
  log "smoke passed"
}
