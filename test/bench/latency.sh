#!/usr/bin/env bash
# latency.sh: part B of `make bench`: annotation patch → first packet on disk, on a real cluster.
#
# Brings up the local test bed (test/cluster/cluster.sh, instance $BENCH_CLUSTER, default
# "bench", so that it never touches the `test` or `demo` instances), runs the agent binary as
# a host process in its own session (recorded in the instance's agent-sessions file, so
# `cluster.sh down` kills whatever of it survives), creates a workload pod that pings the
# bridge's gateway every LAT_PING_INTERVAL seconds (busybox ping; default 0.001: up to 1000
# requests and as many replies a second (the rate reached is measured and reported), so a
# running capture sees a packet within about a millisecond), then
# test/bench/cmd/latency annotates the pod LAT_N times (default 100), each time measuring until
# the capture file holds a packet, and removes the annotation again (until the directory is
# gone). One JSON object per capture: $BENCH_OUT/latency.jsonl. The cluster is torn down on
# exit, also on failure or interrupt (trap).
#
# Environment: LAT_N, LAT_PING_INTERVAL, BENCH_CLUSTER, BENCH_OUT, BENCH_BIN (lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

N=${LAT_N:-100}
PING_INTERVAL=${LAT_PING_INTERVAL:-0.001}
INSTANCE=${BENCH_CLUSTER:-bench}
POD=bench-traffic
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then die "LAT_N=$N: want >= 1"; fi
if ! [[ $PING_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]]; then die "LAT_PING_INTERVAL=$PING_INTERVAL: want seconds"; fi
[ "$(id -u)" = 0 ] || die "needs root (the test bed, the agent's nsenter)"

bench_defaults
RAW=$BENCH_OUT/raw
mkdir -p "$RAW"
CLUSTER=$BENCH_REPO/test/cluster/cluster.sh
[ -x "$CLUSTER" ] || die "$CLUSTER is missing: part B needs the test bed"
export PODCAP_CLUSTER=$INSTANCE
# an instance name the test bed does not accept fails here, before anything is started
ENV=$("$CLUSTER" env) || die "test/cluster/cluster.sh does not accept instance $INSTANCE"
eval "$(grep '^export ' <<<"$ENV")"
AGENT=$BENCH_BIN/podcap-agent
LATENCY=$BENCH_BIN/latency
AGENT_PID=""
CAPTURE_DIR=$PODCAP_CAPTURE_DIR/latency

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$AGENT_PID" ]; then
    stop_pid "$AGENT_PID" 30 TERM
    log "latency: agent stopped"
  fi
  log "latency: cluster $INSTANCE down"
  "$CLUSTER" down >>"$RAW/cluster.log" 2>&1 || { log "FAIL: cluster.sh down (see $RAW/cluster.log)"; rc=1; }
  exit "$rc"
}

kubectl() { "$PODCAP_BIN/kubectl" --kubeconfig "$PODCAP_ADMIN_KUBECONFIG" "$@"; }

start_agent() {
  local port api_port sid
  # ports of this instance's range that nothing listens on (cluster.sh uses base+1..8): health
  # and metrics, and the API (HTTPS, unused here, kept off the node's default :9696)
  port=$(( PODCAP_SINK_PORT + 50 ))
  while [ -n "$(ss -Hltn "sport = :$port")" ]; do port=$(( port + 1 )); done
  api_port=$(( port + 1 ))
  while [ -n "$(ss -Hltn "sport = :$api_port")" ]; do api_port=$(( api_port + 1 )); done
  mkdir -p "$CAPTURE_DIR"
  setsid "$AGENT" --kubeconfig="$PODCAP_AGENT_KUBECONFIG" --node-name="$PODCAP_NODE_NAME" \
    --cri-endpoint="$PODCAP_CRI_ENDPOINT" --capture-dir="$CAPTURE_DIR" \
    --listen-address="127.0.0.1:$port" --api-listen-address="127.0.0.1:$api_port" >"$RAW/agent.log" 2>&1 &
  AGENT_PID=$!
  # setsid execs directly (a background job is no process group leader): pid = session id
  sid=$(ps -o sid= -p "$AGENT_PID" | tr -d ' ')
  echo "${sid:-$AGENT_PID}" >>"$PODCAP_AGENT_SESSIONS"
  agent_ready() { pid_running "$AGENT_PID" && curl -sf "http://127.0.0.1:$port/readyz"; }
  poll 60 agent_ready || die "agent not ready within 60 s: $(tail -5 "$RAW/agent.log")"
  log "latency: agent pid $AGENT_PID ready on 127.0.0.1:$port, capture dir $CAPTURE_DIR"
}

start_pod() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $POD
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: traffic
    image: $PODCAP_WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "ping -q -i $PING_INTERVAL $PODCAP_GATEWAY >/dev/null & p=\$!; trap 'kill \$p; exit 0' TERM; wait \$p"]
EOF
  kubectl wait --for=condition=Ready "pod/$POD" --timeout=120s >/dev/null || die "pod $POD not Ready"
}

# the pod's transmit rate, from its eth0 counters over about a second
pod_tx_pps() {
  local a b t0 t1
  a=$(kubectl exec "$POD" -- cat /proc/net/dev | awk '$1 == "eth0:" {print $11}'); t0=$(now_ms)
  sleep 1
  b=$(kubectl exec "$POD" -- cat /proc/net/dev | awk '$1 == "eth0:" {print $11}'); t1=$(now_ms)
  echo $(( (b - a) * 1000 / (t1 - t0) ))
}

trap cleanup EXIT
trap 'exit 130' INT TERM
[ -x "$LATENCY" ] || build_tools
[ -x "$AGENT" ] || build_agent
t0=$(now_ms)
log "latency: cluster $INSTANCE up (log $RAW/cluster.log)"
"$CLUSTER" up >>"$RAW/cluster.log" 2>&1 || die "cluster.sh up failed: $(tail -5 "$RAW/cluster.log")"
log "latency: cluster up in $(( $(now_ms) - t0 )) ms"
start_agent
start_pod
pps=$(pod_tx_pps)
log "latency: pod $POD pings $PODCAP_GATEWAY every $PING_INTERVAL s: it sends $pps packets/s"
jq -n --arg instance "$INSTANCE" --arg interval "$PING_INTERVAL" --argjson pps "$pps" --argjson n "$N" \
  '{instance: $instance, ping_interval_s: $interval, pod_tx_pps: $pps, captures: $n}' >"$BENCH_OUT/latency-meta.json"
rm -f "$BENCH_OUT/latency.jsonl"
t0=$(now_ms)
"$LATENCY" -kubeconfig "$PODCAP_ADMIN_KUBECONFIG" -pod "$POD" -capture-dir "$CAPTURE_DIR" -n "$N" \
  -out "$BENCH_OUT/latency.jsonl" >"$RAW/latency.out" 2>&1 || die "latency: $(tail -3 "$RAW/latency.out")"
log "latency: $N captures in $(( $(now_ms) - t0 )) ms; results $BENCH_OUT/latency.jsonl"
