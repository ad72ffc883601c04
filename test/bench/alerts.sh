#!/usr/bin/env bash
# alerts.sh: part D of `make bench`: Alertmanager webhook POST → first packet on disk, and the
# alerts a second the webhook records, on a real cluster with the real Alertmanager.
#
# Brings up the local test bed (test/cluster/cluster.sh, instance $BENCH_CLUSTER, default
# $PODCAP_CLUSTER, else "bench"; never `test` or `demo`), runs the agent binary as a host process in its own session (recorded in the
# instance's agent-sessions file, so `cluster.sh down` kills whatever of it survives) with the
# webhook on (a bearer token, a serving certificate for 127.0.0.1 made here with openssl),
# rules/alerts.rego (rules/ without the tests) and --max-alerts $ALERTS_MAX_ALERTS (default
# 5000: the blasts' alerts stay active), Debian's Alertmanager as a host process too (route:
# group_wait 0, group_interval 1s, group_by [...], send_resolved, the token and the
# certificate), and a workload pod that pings the bridge's gateway every LAT_PING_INTERVAL
# seconds. Then test/bench/cmd/alertlat runs ALERTS_N rounds (default 20) straight to the
# webhook, ALERTS_N through Alertmanager, and the blasts (ALERTS_BLAST alerts per
# configuration, default 1000; ALERTS_BLAST_CONFIGS, default "1x8,200x5": alerts per
# notification × notifications in flight). One JSON object per round or blast:
# $BENCH_OUT/alerts.jsonl; Alertmanager's own notification latency (its histogram
# alertmanager_notification_latency_seconds{integration="webhook"}) and the setup:
# $BENCH_OUT/alerts-meta.json. The cluster is torn down on exit, also on failure (trap).
#
# Environment: ALERTS_N, ALERTS_BLAST, ALERTS_BLAST_CONFIGS, ALERTS_MAX_ALERTS,
# LAT_PING_INTERVAL, BENCH_CLUSTER (default $PODCAP_CLUSTER, else bench), BENCH_OUT, BENCH_BIN
# (lib.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

N=${ALERTS_N:-20}
BLAST=${ALERTS_BLAST:-1000}
BLAST_CONFIGS=${ALERTS_BLAST_CONFIGS:-1x8,200x5}
MAX_ALERTS=${ALERTS_MAX_ALERTS:-5000}
PING_INTERVAL=${LAT_PING_INTERVAL:-0.001}
POD=bench-alerts
if ! [[ $N =~ ^[0-9]+$ ]]; then die "ALERTS_N=$N: want >= 0"; fi
if ! [[ $BLAST =~ ^[0-9]+$ ]]; then die "ALERTS_BLAST=$BLAST: want >= 0"; fi
if ! [[ $MAX_ALERTS =~ ^[1-9][0-9]*$ ]]; then die "ALERTS_MAX_ALERTS=$MAX_ALERTS: want >= 1"; fi
if ! [[ $PING_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]]; then die "LAT_PING_INTERVAL=$PING_INTERVAL: want seconds"; fi
AM_BIN=/usr/bin/prometheus-alertmanager
[ -x "$AM_BIN" ] || die "$AM_BIN missing (Debian's prometheus-alertmanager)"

testbed_init alerts cluster-alerts.log
AGENT=$BENCH_BIN/podcap-agent
ALERTLAT=$BENCH_BIN/alertlat
AGENT_PID=""
AM_PID=""
CAPTURE_DIR=$PODCAP_CAPTURE_DIR/alerts
SCRATCH=$PODCAP_RUN_DIR/bench-alerts
AGENT_PORT="" API_PORT="" AM_PORT=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "$AM_PID" ]; then
    stop_pid "$AM_PID" 10 TERM
    log "alerts: alertmanager stopped"
  fi
  testbed_teardown "$rc"
}

make_credentials() {
  mkdir -p "$SCRATCH/rules"
  openssl rand -hex 24 >"$SCRATCH/token"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=podcap-bench \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$SCRATCH/tls.key" -out "$SCRATCH/tls.crt" >>"$RAW/alerts-openssl.log" 2>&1 ||
    die "openssl: $(tail -3 "$RAW/alerts-openssl.log")"
  local r
  for r in "$BENCH_REPO"/rules/*.rego; do
    [[ $r == *_test.rego ]] || cp "$r" "$SCRATCH/rules/"
  done
}

start_alertmanager() {
  AM_PORT=$(free_port $(( API_PORT + 1 )))
  cat >"$SCRATCH/alertmanager.yml" <<EOF
route:
  receiver: podcap
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: podcap
  webhook_configs:
  - url: https://127.0.0.1:$API_PORT/api/v1/alerts
    send_resolved: true
    max_alerts: 200
    http_config:
      authorization: {type: Bearer, credentials_file: $SCRATCH/token}
      tls_config: {ca_file: $SCRATCH/tls.crt}
EOF
  amtool check-config "$SCRATCH/alertmanager.yml" >>"$RAW/alertmanager.log" 2>&1 || die "amtool check-config: $(tail -3 "$RAW/alertmanager.log")"
  setsid "$AM_BIN" --config.file="$SCRATCH/alertmanager.yml" --storage.path="$SCRATCH/am-data" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >>"$RAW/alertmanager.log" 2>&1 &
  AM_PID=$!
  record_session "$AM_PID"
  am_ready() { pid_running "$AM_PID" && curl -sf "http://127.0.0.1:$AM_PORT/-/ready"; }
  poll 60 am_ready || die "alertmanager not ready within 60 s: $(tail -5 "$RAW/alertmanager.log")"
  log "alerts: alertmanager pid $AM_PID ready on 127.0.0.1:$AM_PORT (group_wait 0)"
}

# am_metric NAME: the sum of Alertmanager's series NAME{integration="webhook"}
am_metric() {
  curl -sf "http://127.0.0.1:$AM_PORT/metrics" | awk -v n="$1" '
    index($0, n "{") == 1 && index($0, "integration=\"webhook\"") { s += $NF } END { printf "%.6f\n", s + 0 }'
}

trap cleanup EXIT
trap 'exit 130' INT TERM
[ -x "$ALERTLAT" ] || build_tools
[ -x "$AGENT" ] || build_agent
testbed_up
make_credentials
start_agent "$AGENT" "$RAW/agent-alerts.log" 60 \
  --tls-cert-file="$SCRATCH/tls.crt" --tls-private-key-file="$SCRATCH/tls.key" \
  --webhook-token-file="$SCRATCH/token" --policy-dir="$SCRATCH/rules" --max-alerts="$MAX_ALERTS"
start_alertmanager
start_traffic_pod "$POD" "$PING_INTERVAL"
rm -f "$BENCH_OUT/alerts.jsonl"
t0=$(now_ms)
rc=0
"$ALERTLAT" -webhook "https://127.0.0.1:$API_PORT/api/v1/alerts" -token-file "$SCRATCH/token" -ca-file "$SCRATCH/tls.crt" \
  -alertmanager "http://127.0.0.1:$AM_PORT" -metrics "http://127.0.0.1:$AGENT_PORT/metrics" \
  -kubeconfig "$PODCAP_ADMIN_KUBECONFIG" -capture-dir "$CAPTURE_DIR" -namespace default -pod "$POD" \
  -n "$N" -blast "$BLAST" -blast-configs "$BLAST_CONFIGS" -out "$BENCH_OUT/alerts.jsonl" >"$RAW/alertlat.out" 2>&1 || rc=$?
log "alerts: $N + $N rounds and blasts ($BLAST_CONFIGS of $BLAST) in $(( $(now_ms) - t0 )) ms; results $BENCH_OUT/alerts.jsonl"
jq -n --arg instance "$INSTANCE" --arg interval "$PING_INTERVAL" --argjson n "$N" --argjson blast "$BLAST" \
  --arg configs "$BLAST_CONFIGS" --argjson max "$MAX_ALERTS" \
  --arg am "$("$AM_BIN" --version 2>&1 | head -1)" \
  --argjson nsum "$(am_metric alertmanager_notification_latency_seconds_sum)" \
  --argjson ncount "$(am_metric alertmanager_notification_latency_seconds_count)" \
  --argjson nfailed "$(am_metric alertmanager_notifications_failed_total)" \
  '{instance: $instance, ping_interval_s: $interval, rounds: $n, blast_alerts: $blast, blast_configs: $configs,
    agent_max_alerts: $max, alertmanager: $am, am_route: "group_wait 0s, group_interval 1s, group_by [...]",
    am_notifications: $ncount, am_notifications_failed: $nfailed,
    am_notification_latency_mean_ms: (if $ncount > 0 then $nsum / $ncount * 1000 else null end)}' >"$BENCH_OUT/alerts-meta.json"
[ "$rc" = 0 ] || die "alertlat: $(tail -3 "$RAW/alertlat.out")"
