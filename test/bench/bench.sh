#!/usr/bin/env bash
# bench.sh: `make bench`: podcap's benchmarks, in one run (Linux; root for A and B; README.md).
#
#   A  capture.sh  what a capture costs the traffic: no capture vs tcpdump's own -C/-W ring vs the
#                  agent's pipeline (tcpdump engine → Pump → Ring) vs the same pipeline over the
#                  native AF_PACKET engine, full snaplen and -s 128, on small-UDP and bulk-TCP
#                  loads between two private network namespaces
#   B  latency.sh  annotation patch → first packet on disk, on the local test bed (cluster.sh)
#   C  policy.sh   decisions/s per core of the shipped rules/ (engine, controller sync with and
#                  without the decision cache) and a 110-pod node's re-evaluation after a policy
#                  change: Go benchmarks of policy/ and agent/ at GOMAXPROCS=1 and the default
#   D  alerts.sh   Alertmanager webhook POST → first packet on disk, straight to the webhook and
#                  through the real Alertmanager (group_wait 0), and alerts/s the webhook records,
#                  on the local test bed
#   E  stream.sh   what live-stream readers (1, 10) and a /metrics scrape every 100 ms cost a
#                  capture (tcpdump and native engines, full snaplen, part A's loads and
#                  namespaces), as ratios against the same capture without them in the same round
#
# then test/bench/cmd/report prints the summary tables. Results: .cache/bench/<UTC time>/
# (capture.jsonl, latency.jsonl, policy.jsonl, alerts.jsonl, stream.jsonl, meta.json, summary.md, summary.json, raw/;
# gitignored, kept by `make clean`), and .cache/bench/latest points at the newest run.
#
# Environment: T (seconds per load, default 10), REPS (rounds, default 3), LAT_N (captures,
# default 100), LAT_PING_INTERVAL (default 0.001), POLICY_BENCHTIME (default 1s), POLICY_COUNT
# (default 5), ALERTS_N (default 20), ALERTS_BLAST (default 1000), ALERTS_BLAST_CONFIGS (default
# 1x8,200x5), BENCH_PARTS (default "capture latency policy alerts stream"), BENCH_CLUSTER (test bed
# instance, default $PODCAP_CLUSTER, else bench; never test or demo), BENCH_OUT (results directory).
# No numbers are judged: a benchmark reports, it does not fail on slow results. It exits 1
# only when a part could not be measured.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

[ "$(uname -s)" = Linux ] || die "Linux only"
PARTS=${BENCH_PARTS:-capture latency policy alerts stream}
for part in $PARTS; do
  case $part in
    capture | latency | policy | alerts | stream) ;;
    *) die "BENCH_PARTS: unknown part $part (capture, latency, policy, alerts, stream)" ;;
  esac
done
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
# part C (Go benchmarks) runs as any user; A, B, D and E do not
if has_part capture || has_part latency || has_part alerts || has_part stream; then
  [ "$(id -u)" = 0 ] || die "needs root: network namespaces, tcpdump, a local Kubernetes node (sudo make bench; BENCH_PARTS=policy runs without)"
fi
export T=${T:-10} REPS=${REPS:-3} LAT_N=${LAT_N:-100} ALERTS_N=${ALERTS_N:-20}
export POLICY_BENCHTIME=${POLICY_BENCHTIME:-1s} POLICY_COUNT=${POLICY_COUNT:-5}

# one bench at a time: two would load the same two cores
LOCKFILE=/tmp/podcap-make-bench.lock
exec 9>"$LOCKFILE"
flock -n 9 || die "another bench holds $LOCKFILE"

bench_defaults
t_start=$(now_ms)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "bench: results in $BENCH_OUT (T=${T}s REPS=$REPS LAT_N=$LAT_N ALERTS_N=$ALERTS_N POLICY_BENCHTIME=$POLICY_BENCHTIME POLICY_COUNT=$POLICY_COUNT, parts: $PARTS)"
apt_need jq
if has_part capture || has_part latency || has_part stream; then apt_need iperf3 tcpdump iproute2 util-linux iputils-ping curl; fi
if has_part alerts; then apt_need tcpdump iproute2 util-linux curl openssl prometheus-alertmanager; fi
build_tools
rc=0
if has_part latency && ! (build_agent); then
  log "bench: the agent does not build: part B (latency) cannot run"
  PARTS=${PARTS//latency/}; rc=1
fi
if has_part alerts && ! (build_agent); then
  log "bench: the agent does not build: part D (alerts) cannot run"
  PARTS=${PARTS//alerts/}; rc=1
fi

declare -A took
for part in $PARTS; do
  t0=$(now_ms)
  case $part in
    capture) "$HERE/capture.sh" || { log "bench: part A (capture) failed"; rc=1; } ;;
    latency) "$HERE/latency.sh" || { log "bench: part B (latency) failed"; rc=1; } ;;
    policy) "$HERE/policy.sh" || { log "bench: part C (policy) failed"; rc=1; } ;;
    alerts) "$HERE/alerts.sh" || { log "bench: part D (alerts) failed"; rc=1; } ;;
    stream) "$HERE/stream.sh" || { log "bench: part E (stream) failed"; rc=1; } ;;
  esac
  took[$part]=$(( ($(now_ms) - t0) / 1000 ))
done
total=$(( ($(now_ms) - t_start) / 1000 ))

commit=$(git -C "$BENCH_REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$BENCH_REPO" status --porcelain -- agent cmd policy rules 2>/dev/null)" ] || commit="$commit+dirty"
jq -n --arg started "$started" --arg commit "$commit" --arg kernel "$(uname -r)" \
  --arg cpu "$(nproc) × $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
  --arg tcpdump "$(tcpdump --version 2>&1 | head -2 | tr '\n' ' ' | sed 's/ *$//')" \
  --arg iperf3 "$(iperf3 --version 2>&1 | head -1)" --arg go "$(go env GOVERSION)" \
  --arg T "$T" --arg reps "$REPS" --arg parts "$PARTS" --argjson total "$total" \
  --arg pbt "$POLICY_BENCHTIME" --arg pc "$POLICY_COUNT" \
  --arg took "$(for p in "${!took[@]}"; do printf '%s %ss, ' "$p" "${took[$p]}"; done | sed 's/, $//')" \
  --arg la0 "$load_start" --arg la1 "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --slurpfile lat <(cat "$BENCH_OUT/latency-meta.json" 2>/dev/null || true) \
  --slurpfile al <(cat "$BENCH_OUT/alerts-meta.json" 2>/dev/null || true) '
  ($parts | split(" ")) as $p
  | {started: $started, commit: $commit, kernel: $kernel, cpus: $cpu, tcpdump: $tcpdump, iperf3: $iperf3, go: $go,
   parts: $parts, "bench duration s": $total, "part durations": $took, "loadavg (1/5/15 min) at start": $la0, "loadavg at end": $la1}
  + (if ($p | index("capture")) or ($p | index("stream")) then {"load seconds (T)": ($T | tonumber), rounds: ($reps | tonumber)} else {} end)
  + (if $p | index("policy") then {"policy go test": "-benchtime \($pbt) -count \($pc), GOMAXPROCS=1 and default"} else {} end)
  + (if ($lat | length) > 0 then {"latency pod traffic": "busybox ping -i \($lat[0].ping_interval_s) to the bridge gateway: \($lat[0].pod_tx_pps) packets/s sent (plus the replies)",
       "latency cluster instance": $lat[0].instance} else {} end)
  + (if ($al | length) > 0 then {"alerts setup": "agent --max-alerts \($al[0].agent_max_alerts), rules/alerts.rego; \($al[0].alertmanager) (\($al[0].am_route)); pod pings every \($al[0].ping_interval_s) s"} else {} end)' >"$BENCH_OUT/meta.json"

"$BENCH_BIN/report" -dir "$BENCH_OUT" || rc=1
ln -sfn "$(basename "$BENCH_OUT")" "$(dirname "$BENCH_OUT")/latest" 2>/dev/null || true
log "bench: done in ${total} s; results $BENCH_OUT (summary.md, summary.json)"
exit "$rc"
