#!/usr/bin/env bash
# Soak (issue #16; not part of CI): the daemon owns OBJECTS ConfigMaps while files
# change, objects drift and (optionally) the API server restarts, for MINUTES.
# Every SAMPLE seconds it records the daemon's RSS, open file descriptors, threads
# and reconciles, then prints the slope of each over the second half of the run
# (after warm-up) and leaves the samples as CSV.
#
#   hack/soak.sh                      # 1000 objects, 30 minutes
#   OBJECTS=1000 MINUTES=120 RESTART_EVERY=600 hack/soak.sh
#   PROFILE=debug MINUTES=2 hack/soak.sh   # check the script quickly
#
# Needs the control plane (`hack/controlplane.sh up`; honours CONVERGE_CP_DIR) and
# builds converge in release mode. Tokio's task count is not exposed by the daemon;
# threads stand in for it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OBJECTS=${OBJECTS:-1000}
MINUTES=${MINUTES:-30}
SAMPLE=${SAMPLE:-5}
RESTART_EVERY=${RESTART_EVERY:-0}   # seconds between API server restarts; 0: never
PROFILE=${PROFILE:-release}          # debug: a quick check of the script itself
FILES=10

eval "$(bash "$ROOT/hack/controlplane.sh" env)"
bash "$ROOT/hack/controlplane.sh" status >/dev/null || { echo "soak: the control plane is not up" >&2; exit 1; }
if [[ $PROFILE == release ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
else
  (cd "$ROOT" && cargo build --quiet)
fi
BIN=$ROOT/target/$PROFILE/converge

WORK=$(mktemp -d /tmp/converge-soak.XXXXXX)
NS=soak-$$
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/manifests"
cleanup() {
  [[ -n ${DAEMON:-} ]] && kill "$DAEMON" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

write_file() { # file index, value
  local f=$1 value=$2 per=$((OBJECTS / FILES)) i
  for ((i = f * per; i < (f + 1) * per; i++)); do
    printf -- '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d}\ndata: {value: "%s"}\n' "$i" "$value"
  done > "$WORK/manifests/file-$f.yaml"
}
for ((f = 0; f < FILES; f++)); do write_file "$f" v0; done
kubectl create namespace "$NS" >/dev/null
cat > "$WORK/config.toml" <<EOF
state_dir = "$WORK/state"
[[source]]
name = "$NS"
dir = "$WORK/manifests"
namespace = "$NS"
interval = "30s"
prune = true
self_heal = true
EOF
"$BIN" run --config "$WORK/config.toml" --listen "127.0.0.1:$PORT" --log-format json \
  > "$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 300); do curl -fs "127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done

metric() { curl -fs "127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 { s += $NF } END { print s + 0 }'; }
CSV=$WORK/samples.csv
echo "seconds,rss_kib,fds,threads,reconciles" > "$CSV"
START=$SECONDS
END=$((START + MINUTES * 60))
NEXT_SAMPLE=$START
NEXT_RESTART=$((RESTART_EVERY > 0 ? START + RESTART_EVERY : END + 1))
round=0
while ((SECONDS < END)); do
  kill -0 "$DAEMON" 2>/dev/null || { echo "soak: the daemon died; log: $WORK/daemon.log" >&2; exit 1; }
  round=$((round + 1))
  write_file $((round % FILES)) "v$round"                       # a changed file
  kubectl patch configmap "cm-$((RANDOM % OBJECTS))" -n "$NS" \
    -p "{\"data\":{\"value\":\"drift-$round\"}}" >/dev/null 2>&1 || true   # drift
  if ((SECONDS >= NEXT_RESTART)); then
    bash "$ROOT/hack/controlplane.sh" restart-apiserver >/dev/null 2>&1 || true
    NEXT_RESTART=$((SECONDS + RESTART_EVERY))
  fi
  if ((SECONDS >= NEXT_SAMPLE)); then
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON/status")
    threads=$(awk '/^Threads/ { print $2 }' "/proc/$DAEMON/status")
    fds=$(ls "/proc/$DAEMON/fd" | wc -l)
    echo "$((SECONDS - START)),$rss,$fds,$threads,$(metric converge_reconciles_total)" >> "$CSV"
    NEXT_SAMPLE=$((SECONDS + SAMPLE))
  fi
  sleep 0.5
done

python3 - "$CSV" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
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
last = rows[-1]
print(f"soak: {len(rows)} samples, {last['reconciles']} reconciles, last RSS {last['rss_kib']} KiB, "
      f"{last['fds']} fds, {last['threads']} threads")
for key, unit in [("rss_kib", "KiB"), ("fds", "fds"), ("threads", "threads")]:
    print(f"soak: slope of {key} over the second half: {slope(key):+.1f} {unit}/hour")
EOF
echo "soak: samples in $CSV, daemon log in $WORK/daemon.log"
