#!/usr/bin/env bash
# Benchmarks converge side by side with its peers (kubectl, kapp, Flux's engine and
# controllers) on the local control plane, and reports ratios and the targets of
# issue 17 (see hack/bench.py for the scenarios and the method).
#
#   hack/bench.sh [--objects 1000,10000,30000] [--repeat 3,3,1] [--idle 360] ...
#   hack/bench.sh report bench/results/FILE.json     render a results file again
#   hack/bench.sh relist [--objects 10000]           only the relist (issue 28), no settle
#
# Writes bench/results/<date>-<commit>.json and target/bench/summary.json, prints the
# markdown table. The API server's audit log (hack/controlplane.sh, since issue 17)
# counts the daemons' idle requests: a plane started before that needs a restart.
# The clusters part (issue 24) uses a second plane (--second-plane, default
# hack/test.sh's), started by hack/bench.py when it is not up. The peers are built
# only when the run has the CLI tools, Flux or Argo CD's engine (not --skip
# cli,flux,flux-tuned,argo). --objects 100000 (issue 28) runs every part; a peer
# that does not finish within --tool-timeout (default 3600 s) is reported as "did
# not finish" at that size and the run goes on with converge.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [[ ${1:-} == report ]]; then exec python3 hack/bench.py "$@"; fi
if [[ ${1:-} == relist ]]; then
  eval "$(bash hack/controlplane.sh env)"
  cargo build --release --quiet --bin converge
  exec python3 hack/bench.py "$@"
fi
# The cost of health evaluation (issue 25): 1000 objects, 10 CEL rules loaded, against
# the built-in rules alone; no cluster needed (health is pure).
#   hack/bench.sh health        only this
health_eval() {
  cargo build --release --quiet --example health_eval
  mkdir -p target/bench
  ./target/release/examples/health_eval 1000 9 | tee target/bench/health.json
}
if [[ ${1:-} == health ]]; then health_eval; exit; fi
# The cost of SOPS decryption (issue 26): 1000 Secrets, one a file, encrypted by the
# real sops for an age key, loaded against the same Secrets in plain text; no
# cluster needed (decryption happens before anything is sent).
#   hack/bench.sh sops          only this
sops_decrypt() {
  eval "$(bash hack/sops-tools.sh)"
  local dir=target/bench/sops n=1000
  if [[ ! -f $dir/done-$n ]]; then
    rm -rf "$dir" && mkdir -p "$dir/plain" "$dir/encrypted"
    age-keygen -o "$dir/bench.agekey" 2>/dev/null   # a throw-away test key
    local recipient; recipient=$(age-keygen -y "$dir/bench.agekey")
    for ((i = 0; i < n; i++)); do
      printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: s%04d\n  labels: {app: bench}\nstringData:\n  password: bench-%04d-%s\n  user: admin\n' \
        "$i" "$i" "$RANDOM$RANDOM" >"$dir/plain/s$i.yaml"
    done
    ls "$dir/plain" | xargs -P 2 -I{} sops encrypt --age "$recipient" \
      --encrypted-regex '^(data|stringData)$' --output "$dir/encrypted/{}" "$dir/plain/{}"
    touch "$dir/done-$n"
  fi
  cargo build --release --quiet --example sops_decrypt
  ./target/release/examples/sops_decrypt "$dir/encrypted" "$dir/plain" "$dir/bench.agekey" 5 | tee target/bench/sops.json
}
if [[ ${1:-} == sops ]]; then sops_decrypt; exit; fi
# Notifications (issue 30): commit-to-converged with no [[notify]] target, a healthy
# receiver and a receiver that never answers, in one run (hack/bench/notify.py); on
# the running plane (start it with hack/controlplane.sh up).
#   hack/bench.sh notify [--objects 100] [--edits 100] [--rounds 2]
if [[ ${1:-} == notify ]]; then
  eval "$(bash hack/controlplane.sh env)"
  kubectl get --raw /readyz >/dev/null 2>&1 ||
    { echo "bench notify: the control plane does not answer; start it with hack/controlplane.sh up" >&2; exit 2; }
  echo "bench: building converge (release)" >&2
  cargo build --release --quiet --bin converge
  exec python3 hack/bench.py "$@"
fi
bash hack/install-deps.sh
bash hack/controlplane.sh up
eval "$(bash hack/tools.sh env)"   # kustomize, for the kustomize source scenario
eval "$(bash hack/controlplane.sh env)"
# The parts left out (--skip): a run without the CLI tools and Flux needs no peer.
skip=
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --skip=*) a=${!i}; skip=${a#--skip=} ;;
    --skip) j=$((i + 1)); skip=${!j:-} ;;
  esac
done
needs_peers=0
for part in cli flux flux-tuned argo; do [[ ,$skip, == *,$part,* ]] || needs_peers=1; done
# The peers: a peer that cannot be built is reported as "not built: <reason>" and
# the rest is measured.
if ((!needs_peers)); then
  export BENCH_PEERS_ERROR="not built: this run skips cli, flux, flux-tuned and argo, the parts that use them"
  eval "$(bash hack/peers.sh env 2>/dev/null)" || true   # their versions, if cached
elif [[ -f hack/peers.sh ]]; then
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
echo "bench: health evaluation, ms per 1000 objects (10 CEL rules / built-in only):" >&2
health_eval >&2
echo "bench: SOPS decryption, ms per 1000 encrypted Secrets:" >&2
sops_decrypt >&2
exec python3 hack/bench.py "$@"
