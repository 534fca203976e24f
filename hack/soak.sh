#!/usr/bin/env bash
# Soak (issue #16; not part of CI): the daemon owns OBJECTS ConfigMaps in FILES files
# of SOURCES directory sources while one object of one file changes every EDIT_EVERY
# seconds (a targeted reconcile each), a live object drifts every DRIFT_EVERY seconds
# (kubectl patch, healed through the watch), and a
# proxy between the daemon and kube-apiserver cuts every connection (watches
# included) every CUT_EVERY seconds. It stops after RECONCILES reconciles (the
# daemon's own converge_reconciles_total, success + failure) or MINUTES minutes,
# whichever comes first. Every SAMPLE seconds it records the daemon's RSS, open file
# descriptors, threads and alive Tokio tasks (converge_tokio_alive_tasks); at the end
# it checks that every object carries its last desired value and prints the slope of
# each figure over the second half of the run (after warm-up).
#
#   hack/soak.sh                              # 1000 objects, 10,000 reconciles
#   RECONCILES=0 MINUTES=120 hack/soak.sh     # by time only
#   PROFILE=debug RECONCILES=200 hack/soak.sh # check the script quickly
#   SOURCES=2 EDIT_EVERY=0.15 hack/soak.sh    # ~6.5 reconciles/s here, vs ~4 for one
#   OUT=/tmp/soak-$(date +%F) hack/soak.sh    # where the CSV, summary and logs go
#
# Needs the control plane (`hack/controlplane.sh up`; honours CONVERGE_CP_DIR);
# RESTART_EVERY>0 restarts its API server, so only use it on a plane of your own.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OBJECTS=${OBJECTS:-1000}
FILES=${FILES:-100}
SOURCES=${SOURCES:-1}
RECONCILES=${RECONCILES:-10000}     # 0: by time only
MINUTES=${MINUTES:-90}
SAMPLE=${SAMPLE:-5}
EDIT_EVERY=${EDIT_EVERY:-0.25}      # seconds between file edits (below ~0.2 they coalesce)
DRIFT_EVERY=${DRIFT_EVERY:-2}       # seconds between kubectl drift edits
CUT_EVERY=${CUT_EVERY:-60}          # seconds between connection cuts; 0: no proxy
RESTART_EVERY=${RESTART_EVERY:-0}   # seconds between API server restarts; 0: never
PROFILE=${PROFILE:-release}         # debug: a quick check of the script itself
PER=$((OBJECTS / FILES))

eval "$(bash "$ROOT/hack/controlplane.sh" env)"
bash "$ROOT/hack/controlplane.sh" status >/dev/null || { echo "soak: the control plane is not up" >&2; exit 1; }
if [[ -z ${BIN:-} ]]; then                 # BIN=path: a converge built before
  if [[ $PROFILE == release ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
  else
    (cd "$ROOT" && cargo build --quiet)
  fi
  BIN=$ROOT/target/$PROFILE/converge
fi

WORK=$(mktemp -d /tmp/converge-soak.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
for ((s = 0; s < SOURCES; s++)); do mkdir -p "$WORK/manifests-$s"; done
NS=soak-$$
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
cleanup() {
  [[ -n ${DAEMON:-} ]] && kill "$DAEMON" 2>/dev/null || true
  [[ -n ${PROXY:-} ]] && kill "$PROXY" 2>/dev/null || true
  [[ -n ${DRIFTER:-} ]] && kill "$DRIFTER" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The daemon's kubeconfig: the plane's, through the cutting proxy when CUT_EVERY > 0.
DAEMON_KUBECONFIG=$KUBECONFIG
if ((CUT_EVERY > 0)); then
  upstream=$(awk '/server:/ { n = split($2, a, ":"); print a[n]; exit }' "$KUBECONFIG")
  proxy_port=$(free_port)
  python3 "$ROOT/hack/cutproxy.py" "$proxy_port" "$upstream" "$CUT_EVERY" > "$OUT/proxy.log" 2>&1 &
  PROXY=$!
  DAEMON_KUBECONFIG=$WORK/kubeconfig
  sed "s#127.0.0.1:$upstream#127.0.0.1:$proxy_port#" "$KUBECONFIG" > "$DAEMON_KUBECONFIG"
fi

declare -a VALUES
for ((i = 0; i < OBJECTS; i++)); do VALUES[i]=v0; done
write_file() { # file index; written aside and renamed, so the watcher never reads half a file
  local f=$1 i
  for ((i = f * PER; i < (f + 1) * PER; i++)); do
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d}\ndata: {value: "%s"}\n' "$i" "${VALUES[i]}"
  done > "$WORK/next.yaml"
  mv "$WORK/next.yaml" "$WORK/manifests-$((f % SOURCES))/file-$f.yaml"
}
for ((f = 0; f < FILES; f++)); do write_file "$f"; done
kubectl create namespace "$NS" >/dev/null
echo "state_dir = \"$WORK/state\"" > "$WORK/config.toml"
for ((s = 0; s < SOURCES; s++)); do
  cat >> "$WORK/config.toml" <<EOF
[[source]]
name = "$NS-$s"
dir = "$WORK/manifests-$s"
namespace = "$NS"
interval = "30s"
prune = true
self_heal = true
EOF
done
KUBECONFIG=$DAEMON_KUBECONFIG "$BIN" run --config "$WORK/config.toml" --listen "127.0.0.1:$PORT" \
  --log-format json > "$OUT/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 300); do curl -fs "127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done

metrics() { curl -fs "127.0.0.1:$PORT/metrics" || true; }
reconciles() { # success + failure: the reconciles that ran
  awk '/^converge_reconciles_total\{.*result="(success|failure)"/ { s += $NF } END { print s + 0 }'
}
failures() { awk '/^converge_reconciles_total\{.*result="failure"/ { s += $NF } END { print s + 0 }'; }
gauge() { awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }

# Drift, beside the edits: kubectl patches a random object every DRIFT_EVERY s.
(
  n=0
  while sleep "$DRIFT_EVERY"; do
    n=$((n + 1))
    kubectl patch configmap "cm-$((RANDOM % OBJECTS))" -n "$NS" \
      -p "{\"data\":{\"value\":\"drift-$n\"}}" >/dev/null 2>&1 && echo "$n" > "$WORK/drifts" || true
  done
) &
DRIFTER=$!

CSV=$OUT/samples.csv
echo "seconds,rss_kib,fds,threads,tasks,reconciles,failures" > "$CSV"
START=$SECONDS
END=$((START + MINUTES * 60))
NEXT_SAMPLE=$START
NEXT_RESTART=$((RESTART_EVERY > 0 ? START + RESTART_EVERY : END + 1))
round=0 done_reconciles=0
while ((SECONDS < END)) && ((RECONCILES == 0 || done_reconciles < RECONCILES)); do
  kill -0 "$DAEMON" 2>/dev/null || { echo "soak: the daemon died; log: $OUT/daemon.log" >&2; exit 1; }
  round=$((round + 1))
  f=$((round % FILES))                        # files in turn, so sources alternate
  obj=$((f * PER + (round / FILES) % PER))    # a changed object
  VALUES[obj]=v$round
  write_file "$f"
  if ((SECONDS >= NEXT_RESTART)); then
    bash "$ROOT/hack/controlplane.sh" restart-apiserver >/dev/null 2>&1 || true
    NEXT_RESTART=$((SECONDS + RESTART_EVERY))
  fi
  if ((SECONDS >= NEXT_SAMPLE)); then
    m=$(metrics)
    done_reconciles=$(reconciles <<< "$m")
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON/status")
    threads=$(awk '/^Threads/ { print $2 }' "/proc/$DAEMON/status")
    fds=$(ls "/proc/$DAEMON/fd" | wc -l)
    tasks=$(gauge converge_tokio_alive_tasks <<< "$m")
    echo "$((SECONDS - START)),$rss,$fds,$threads,$tasks,$done_reconciles,$(failures <<< "$m")" >> "$CSV"
    NEXT_SAMPLE=$((SECONDS + SAMPLE))
  fi
  sleep "$EDIT_EVERY"
done
DURATION=$((SECONDS - START))
metrics > "$OUT/metrics.txt"   # requests by verb, reconcile durations: what it cost
kill "$DRIFTER" 2>/dev/null || true
drifts=$(cat "$WORK/drifts" 2>/dev/null || echo 0)

# Nothing lost: every object converges to its last desired value (drift healed too).
converged=no
for _ in $(seq 120); do
  live=$(kubectl get configmaps -n "$NS" -o jsonpath='{range .items[*]}{.metadata.name}={.data.value}{"\n"}{end}')
  want=$(for ((i = 0; i < OBJECTS; i++)); do echo "cm-$i=${VALUES[i]}"; done | sort)
  if [[ $(grep '^cm-' <<< "$live" | sort) == "$want" ]]; then converged=yes; break; fi
  sleep 1
done

python3 - "$CSV" "$DURATION" "$round" "$drifts" "$converged" "$OBJECTS" "$SOURCES" <<'EOF' | tee "$OUT/summary.txt"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
duration, edits, drifts, converged, objects, sources = sys.argv[2:8]
half = rows[len(rows) // 2:]
def slope(key):
    xs = [float(r["seconds"]) for r in half]
    ys = [float(r[key]) for r in half]
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 3600
first, last = rows[0], rows[-1]
print(f"soak: {objects} objects in {sources} sources, {last['reconciles']} reconciles ({last['failures']} failed) in {duration} s, "
      f"{edits} file edits, {drifts} drift edits; converged at the end: {converged}")
for key, unit in [("rss_kib", "KiB"), ("fds", "fds"), ("threads", "threads"), ("tasks", "tasks")]:
    vals = [float(r[key]) for r in rows]
    print(f"soak: {key}: start {first[key]}, end {last[key]}, max {max(vals):.0f}, "
          f"slope over the second half {slope(key):+.1f} {unit}/hour")
EOF
[[ -f $OUT/proxy.log ]] && echo "soak: $(grep -c cut "$OUT/proxy.log") connection cuts" | tee -a "$OUT/summary.txt"
echo "soak: samples in $CSV, daemon log in $OUT/daemon.log"
[[ $converged == yes ]]
