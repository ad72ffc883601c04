#!/usr/bin/env bash
# latency.sh: part B of `make bench`: annotation patch → first packet on disk, on a real cluster.
#
# Brings up the local test bed (test/cluster/cluster.sh, instance $BENCH_CLUSTER, default
# $PODCAP_CLUSTER, else "bench"; never `test` or `demo`), runs the agent binary as
# a host process in its own session (recorded in the instance's agent-sessions file, so
# `cluster.sh down` kills whatever of it survives), creates a workload pod that pings the
# bridge's gateway every LAT_PING_INTERVAL seconds (busybox ping; default 0.001: up to 1000
# requests and as many replies a second (the rate reached is measured and reported), so a
# running capture sees a packet within about a millisecond), then
# test/bench/cmd/latency annotates the pod LAT_N times (default 100), each time measuring until
# the capture file holds a packet, and removes the annotation again (until the directory is
# gone). One JSON object per capture: $BENCH_OUT/latency.jsonl. Then the same with the agent
# restarted with --engine native: $BENCH_OUT/latency-native.jsonl. The cluster is torn down on
# exit, also on failure or interrupt (trap).
#
# Environment: LAT_N, LAT_PING_INTERVAL, BENCH_CLUSTER (default $PODCAP_CLUSTER, else bench),
# BENCH_OUT, BENCH_BIN (lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

N=${LAT_N:-100}
PING_INTERVAL=${LAT_PING_INTERVAL:-0.001}
POD=bench-traffic
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then die "LAT_N=$N: want >= 1"; fi
if ! [[ $PING_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]]; then die "LAT_PING_INTERVAL=$PING_INTERVAL: want seconds"; fi

testbed_init latency cluster.log
AGENT=$BENCH_BIN/podcap-agent
LATENCY=$BENCH_BIN/latency
AGENT_PID=""
CAPTURE_DIR=$PODCAP_CAPTURE_DIR/latency

# the pod's transmit rate, from its eth0 counters over about a second
pod_tx_pps() {
  local a b t0 t1
  a=$(kubectl exec "$POD" -- cat /proc/net/dev | awk '$1 == "eth0:" {print $11}'); t0=$(now_ms)
  sleep 1
  b=$(kubectl exec "$POD" -- cat /proc/net/dev | awk '$1 == "eth0:" {print $11}'); t1=$(now_ms)
  echo $(( (b - a) * 1000 / (t1 - t0) ))
}

trap 'testbed_teardown $?' EXIT
trap 'exit 130' INT TERM
[ -x "$LATENCY" ] || build_tools
[ -x "$AGENT" ] || build_agent
testbed_up
start_agent "$AGENT" "$RAW/agent.log" 50
start_traffic_pod "$POD" "$PING_INTERVAL"
pps=$(pod_tx_pps)
log "latency: pod $POD pings $PODCAP_GATEWAY every $PING_INTERVAL s: it sends $pps packets/s"
jq -n --arg instance "$INSTANCE" --arg interval "$PING_INTERVAL" --argjson pps "$pps" --argjson n "$N" \
  '{instance: $instance, ping_interval_s: $interval, pod_tx_pps: $pps, captures: $n}' >"$BENCH_OUT/latency-meta.json"
# measure ENGINE OUT: the annotation loop against the running agent, into $BENCH_OUT/OUT
measure() {
  local t0
  rm -f "$BENCH_OUT/$2"
  t0=$(now_ms)
  "$LATENCY" -kubeconfig "$PODCAP_ADMIN_KUBECONFIG" -pod "$POD" -capture-dir "$CAPTURE_DIR" -n "$N" \
    -out "$BENCH_OUT/$2" >"$RAW/latency-$1.out" 2>&1 || die "latency ($1 engine): $(tail -3 "$RAW/latency-$1.out")"
  log "latency: $N captures on the $1 engine in $(( $(now_ms) - t0 )) ms; results $BENCH_OUT/$2"
}
measure tcpdump latency.jsonl
# the same on the native engine: the agent again, with --engine native
stop_pid "$AGENT_PID" 30 TERM
AGENT_PID=""
start_agent "$AGENT" "$RAW/agent-native.log" 50 --engine=native
measure native latency-native.jsonl
