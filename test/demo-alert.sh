# shellcheck shell=bash
# demo-alert.sh: the alert part of `make demo`, sourced by test/demo.sh (which defines k, run,
# say, fail, poll, AGENT, AGENT_NS, TIMEOUT, OUT and the cluster layout of common.sh).
#
#   alert_prepare   before the agent is deployed: a fresh $ALERT_DIR, the webhook token and
#                   Secret podcap-webhook-token (so that the DaemonSet's webhook is on from its
#                   first start, no restart needed)
#   alert_demo      after the manual part: metric pod shop/cart; Debian's Prometheus and
#                   Alertmanager as host processes on 127.0.0.1 (private ports of the instance);
#                   the rule fires -> Alertmanager -> the agent's webhook (the podcap-webhook
#                   Service's endpoint, HTTPS verified against the agent's own certificate) ->
#                   CaptureAlert -> rules/alerts.rego -> pcapng capture; resolve -> stop grace ->
#                   stop, files kept; outputs/alert/
#   alert_stop      stop Prometheus and Alertmanager (demo.sh's exit trap; KEEP=1 leaves them)
#   alert_dump_state  their log tails, for a failed run
#
# Prometheus and Alertmanager run in sessions of their own whose ids are recorded in
# $AGENT_SESSIONS, so `cluster.sh down` kills them too if this script could not.
# shellcheck disable=SC2153,SC2154  # k, AGENT, AGENT_NS, OUT, TIMEOUT, ... come from demo.sh

ALERT_DIR=$CLUSTER_DIR/alert                 # configs, token, TSDB, logs of this part
ALERT_OUT=$OUT/alert
PROM_PORT=$((PORT_BASE + 10))                 # the instance's private ports (27210, 27211 for demo)
AM_PORT=$((PORT_BASE + 11))
PROM_URL=http://127.0.0.1:$PROM_PORT
AM_URL=http://127.0.0.1:$AM_PORT
ALERT_NS=shop
ALERT_POD=cart
ALERT_NAME=CartCheckoutErrors
METRIC=cart_checkout_errors
METRIC_PORT=8080
STOP_GRACE=10s
TOKEN_FILE=$ALERT_DIR/webhook-token
CA_FILE=$ALERT_DIR/agent-cert.pem
ALERT_POD_DIR=$CAPTURE_DIR/$ALERT_NS/$ALERT_POD

# ms since the epoch; ISO time (UTC, ms) of such a value
ms_now() { date +%s%3N; }
iso_ms() { date -u -d "@$(( $1 / 1000 )).$(printf '%03d' $(( $1 % 1000 )))" +%Y-%m-%dT%H:%M:%S.%3NZ; }
# ms since the epoch of an RFC 3339 time (any fraction)
rfc_ms() { date -u -d "$1" +%s%3N; }

# tl MS WHAT SOURCE: a timeline entry
tl() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$ALERT_DIR/timeline"; }
# seen WHAT: a timeline entry observed now by this script
seen() { tl "$(ms_now)" "$1" "observed by demo.sh"; }

# ------------------------------------------------------------------ processes

# alert_start_daemon NAME ARGV...: run ARGV in a session of its own (its pid is the session id,
# recorded for `cluster.sh down`), output to $ALERT_DIR/NAME.log, pid in $ALERT_DIR/NAME.pid
alert_start_daemon() {
  local name=$1 pid sid end; shift
  printf '+ %s\n' "$*"
  # a background job of a script is never its process group's leader: setsid(1) does not fork
  setsid "$@" </dev/null >"$ALERT_DIR/$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$ALERT_DIR/$name.pid"
  echo "$pid" >>"$AGENT_SESSIONS"
  # the forked shell becomes setsid(1) and calls setsid(2) a moment later
  end=$(( $(ms_now) + 5000 ))
  until sid=$(ps -o sid= -p "$pid" | tr -d ' ') && [ "$sid" = "$pid" ]; do
    pid_running "$pid" || fail "$name exited at once: $(tail -5 "$ALERT_DIR/$name.log")"
    [ "$(ms_now)" -lt "$end" ] || fail "$name ($pid) is not in a session of its own (sid '$sid')"
    sleep 0.05
  done
}

# alert_stop_daemon NAME: SIGTERM, up to 15 s, then SIGKILL; and whatever is left of its session
alert_stop_daemon() {
  local name=$1 pid end p cmd
  [ -f "$ALERT_DIR/$name.pid" ] || return 0
  pid=$(cat "$ALERT_DIR/$name.pid")
  # only our own process: a pid file of an earlier run may name a reused pid
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || cmd=
  if pid_running "$pid" && [[ $cmd == *"$ALERT_DIR/"* ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    end=$(( $(ms_now) + 15000 ))
    while pid_running "$pid" && [ "$(ms_now)" -lt "$end" ]; do sleep 0.1; done
    if pid_running "$pid"; then
      echo "[demo] $name ($pid) ignored SIGTERM for 15 s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopped $name ($pid)"
  fi
  wait "$pid" 2>/dev/null || true   # reap it if it is our child
  for p in $(ps -eo pid=,sid= | awk -v s="$pid" '$2 == s {print $1}'); do
    echo "[demo] killing leftover process $p of $name's session" >&2
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ -f "$AGENT_SESSIONS" ]; then
    grep -vx "$pid" "$AGENT_SESSIONS" >"$AGENT_SESSIONS.tmp" || true
    mv "$AGENT_SESSIONS.tmp" "$AGENT_SESSIONS"
  fi
  rm -f "$ALERT_DIR/$name.pid"
}

alert_stop() {
  alert_stop_daemon prometheus
  alert_stop_daemon alertmanager
}

alert_dump_state() {
  local f
  for f in prometheus alertmanager; do
    [ -f "$ALERT_DIR/$f.log" ] || continue
    echo "--- $f log (tail 30, $ALERT_DIR/$f.log)"; tail -30 "$ALERT_DIR/$f.log"
  done
  echo "--- capturealerts"; k -n "$AGENT_NS" get capturealerts -o wide 2>&1 || true
  echo "--- events in $ALERT_NS"; k -n "$ALERT_NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 || true
}

# http_ready URL: GET answers 200
http_ready() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
port_free() { [ -z "$(ss -Htln "sport = :$1")" ]; }

# ------------------------------------------------------------------ before the deploy

alert_prepare() {
  say "alert part, before the deploy: webhook token Secret (deploy/webhook-secret.md)"
  alert_stop   # Prometheus and Alertmanager of an earlier KEEP=1 run of this instance
  rm -rf "$ALERT_DIR"
  mkdir -p "$ALERT_DIR"
  : >"$ALERT_DIR/timeline"
  local p
  for p in "$PROM_PORT" "$AM_PORT"; do port_free "$p" || fail "port $p (Prometheus/Alertmanager of the demo) is in use"; done
  # the token never appears on a command line: a file (0600) for both the Secret and Alertmanager
  (umask 077; openssl rand -hex 24 | tr -d '\n' >"$TOKEN_FILE")
  k get namespace "$AGENT_NS" >/dev/null 2>&1 || run "${KUBECTL[@]}" create namespace "$AGENT_NS"
  k -n "$AGENT_NS" create secret generic podcap-webhook-token --from-file=token="$TOKEN_FILE" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
  echo "Secret $AGENT_NS/podcap-webhook-token (key token) from $TOKEN_FILE; the DaemonSet mounts it at its first start"
}

# ------------------------------------------------------------------ the workload

# set_metric VALUE: the cart pod serves $METRIC VALUE from its next scrape on (rename: a scrape
# never reads half a file)
set_metric() {
  # shellcheck disable=SC2016  # expanded by the pod's sh
  k -n "$ALERT_NS" exec "$ALERT_POD" -c app -- sh -c \
    'printf "# TYPE %s gauge\n%s %s\n" "$1" "$1" "$2" >/www/.metrics && mv /www/.metrics /www/metrics' \
    set "$METRIC" "$1"
}

start_metric_pod() {
  say "start $ALERT_NS/$ALERT_POD: busybox httpd serving $METRIC 0 on :$METRIC_PORT/metrics"
  cat >"$ALERT_DIR/cart.yaml" <<EOF_POD
apiVersion: v1
kind: Namespace
metadata:
  name: $ALERT_NS
---
# a workload whose metric the demo flips: busybox httpd serves /www/metrics, which set_metric
# rewrites through kubectl exec
apiVersion: v1
kind: Pod
metadata:
  name: $ALERT_POD
  namespace: $ALERT_NS
  labels:
    app: $ALERT_POD
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: [/bin/sh, -c]
    args:
    - |
      mkdir -p /www
      printf '# TYPE $METRIC gauge\n$METRIC 0\n' >/www/metrics
      exec httpd -f -p $METRIC_PORT -h /www
    ports:
    - name: metrics
      containerPort: $METRIC_PORT
    readinessProbe:
      httpGet:
        path: /metrics
        port: metrics
      periodSeconds: 1
EOF_POD
  run "${KUBECTL[@]}" apply -f "$ALERT_DIR/cart.yaml"
  run "${KUBECTL[@]}" -n "$ALERT_NS" wait "pod/$ALERT_POD" --for=condition=Ready --timeout="${TIMEOUT}s"
  CART_IP=$(k -n "$ALERT_NS" get pod "$ALERT_POD" -o jsonpath='{.status.podIP}')
  [ -n "$CART_IP" ] || fail "no IP for $ALERT_NS/$ALERT_POD"
  poll "http://$CART_IP:$METRIC_PORT/metrics from the host" http_ready "http://$CART_IP:$METRIC_PORT/metrics"
  echo "$ALERT_NS/$ALERT_POD at $CART_IP:"
  curl -fsS "http://$CART_IP:$METRIC_PORT/metrics"
}

# ------------------------------------------------------------------ the agent's webhook

# the podcap-webhook Service's ready endpoint, host:port (the node's IP: the agents use the host
# network)
webhook_endpoint() {
  local ip port
  ip=$(k -n "$AGENT_NS" get endpointslices -l kubernetes.io/service-name=podcap-webhook -o go-template \
       --template '{{range .items}}{{range .endpoints}}{{if .conditions.ready}}{{index .addresses 0}}{{"\n"}}{{end}}{{end}}{{end}}' \
       2>/dev/null | head -1) || return 1
  port=$(k -n "$AGENT_NS" get endpointslices -l kubernetes.io/service-name=podcap-webhook -o go-template \
         --template '{{range .items}}{{range .ports}}{{if eq .name "api"}}{{.port}}{{"\n"}}{{end}}{{end}}{{end}}' \
         2>/dev/null | head -1) || return 1
  [ -n "$ip" ] && [ -n "$port" ] || return 1
  WEBHOOK_ADDR=$ip:$port
}

# the agent's certificate, fetched with a TLS handshake and trusted only if its SHA-256
# fingerprint is the one the agent logged (read with cluster credentials, not over the
# network): Alertmanager's ca_file. A self-signed certificate is its own CA.
fetch_agent_cert() {
  local logged got
  logged=$(k -n "$AGENT_NS" logs "$AGENT" -c agent | grep -F 'Generated a self-signed TLS certificate' |
           grep -o 'sha256Fingerprint="[^"]*"' | tail -1 | cut -d'"' -f2)
  [ -n "$logged" ] || fail "the agent logged no self-signed certificate (does it serve a mounted one?)"
  openssl s_client -connect "$WEBHOOK_ADDR" </dev/null 2>/dev/null | openssl x509 -outform PEM >"$CA_FILE" ||
    fail "no certificate from $WEBHOOK_ADDR"
  got=$(openssl x509 -in "$CA_FILE" -noout -fingerprint -sha256 | cut -d= -f2)
  [ "$got" = "$logged" ] || fail "the certificate at $WEBHOOK_ADDR ($got) is not the one $AGENT logged ($logged)"
  openssl x509 -in "$CA_FILE" -noout -checkip "${WEBHOOK_ADDR%:*}" | grep -q 'does match' ||
    fail "the agent's certificate does not name ${WEBHOOK_ADDR%:*}"
  echo "agent certificate pinned (SHA-256 $got, as logged by $AGENT), names ${WEBHOOK_ADDR%:*}: $CA_FILE"
}

check_agent_alert_setup() {
  say "the agent: policy rules/alerts.rego loaded, webhook on, CaptureAlert CRD and Role in place"
  local log
  log=$(k -n "$AGENT_NS" logs "$AGENT" -c agent)
  grep -F '"Policy loaded"' <<<"$log" | tail -1 | grep -qF 'alerts.rego' ||
    fail "the agent did not load rules/alerts.rego (ConfigMap podcap-rules)"
  grep -F '"Alertmanager webhook on"' <<<"$log" | grep -qF 'bearerToken=true' ||
    fail "the agent's webhook is not on with a bearer token"
  grep -F -e '"Policy loaded"' -e '"Alertmanager webhook on"' <<<"$log" | tail -2
  run "${KUBECTL[@]}" get crd capturealerts.podcap.io
  run "${KUBECTL[@]}" -n "$AGENT_NS" get role,rolebinding podcap-agent-alerts
  poll "a ready endpoint of Service podcap-webhook" webhook_endpoint
  echo "Service $AGENT_NS/podcap-webhook endpoint: $WEBHOOK_ADDR"
  fetch_agent_cert
}

# ------------------------------------------------------------------ Prometheus, Alertmanager

write_configs() {
  cat >"$ALERT_DIR/prometheus-rule.yaml" <<EOF_R
# The alerting rule of the demo: $ALERT_NAME fires while $ALERT_NS/$ALERT_POD reports failed
# checkouts. Its series carry the target's labels namespace and pod, so the alert names the pod
# and rules/alerts.rego captures it. podcap_* annotations (underscores: Prometheus 2 refuses
# annotation names with dots or slashes) set the capture.
groups:
- name: podcap-demo
  rules:
  - alert: $ALERT_NAME
    expr: $METRIC > 0
    for: 0s
    labels:
      severity: warning
    annotations:
      summary: 'checkouts of {{ \$labels.namespace }}/{{ \$labels.pod }} fail'
      podcap_format: pcapng
      podcap_files: "3"
      podcap_stop_grace: $STOP_GRACE
      podcap_cooldown: 1m
EOF_R
  cat >"$ALERT_DIR/prometheus.yml" <<EOF_P
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
- $ALERT_DIR/prometheus-rule.yaml
alerting:
  alertmanagers:
  - api_version: v2
    static_configs:
    - targets: [127.0.0.1:$AM_PORT]
scrape_configs:
- job_name: cart
  static_configs:
  - targets: ['$CART_IP:$METRIC_PORT']
    labels:
      namespace: $ALERT_NS
      pod: $ALERT_POD
EOF_P
  # the receiver and route of deploy/alertmanager/alertmanager-receiver.yaml; group_interval
  # 1s (there 1m) so that the resolve reaches the agent within a second
  cat >"$ALERT_DIR/alertmanager.yml" <<EOF_A
route:
  receiver: default
  routes:
  - receiver: podcap
    matchers:
    - namespace=~".+"
    continue: true
    group_by: [...]
    group_wait: 0s
    group_interval: 1s
    repeat_interval: 1h
receivers:
- name: default
- name: podcap
  webhook_configs:
  # the podcap-webhook Service's endpoint (the agent on this node, host network)
  - url: https://$WEBHOOK_ADDR/api/v1/alerts
    send_resolved: true
    max_alerts: 200
    http_config:
      authorization:
        type: Bearer
        # the value of Secret $AGENT_NS/podcap-webhook-token, key token (not in this file)
        credentials_file: $TOKEN_FILE
      tls_config:
        # the agent's self-signed certificate, pinned to the fingerprint it logged
        ca_file: $CA_FILE
EOF_A
  run promtool check config "$ALERT_DIR/prometheus.yml"
  run amtool check-config "$ALERT_DIR/alertmanager.yml"
}

start_alerting() {
  say "start Alertmanager ($AM_URL) and Prometheus ($PROM_URL), Debian's, as host processes"
  write_configs
  alert_start_daemon alertmanager prometheus-alertmanager \
    --config.file="$ALERT_DIR/alertmanager.yml" --storage.path="$ALERT_DIR/alertmanager-data" \
    --web.listen-address="127.0.0.1:$AM_PORT" --web.external-url="$AM_URL/" \
    --cluster.listen-address= --log.level=debug
  alert_start_daemon prometheus prometheus \
    --config.file="$ALERT_DIR/prometheus.yml" --storage.tsdb.path="$ALERT_DIR/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.external-url="$PROM_URL/" \
    --rules.alert.resend-delay=1s
  poll "Alertmanager ready" http_ready "$AM_URL/-/ready"
  poll "Prometheus ready" http_ready "$PROM_URL/-/ready"
  poll "Prometheus to scrape $ALERT_NS/$ALERT_POD" prom_has "$METRIC{namespace=\"$ALERT_NS\",pod=\"$ALERT_POD\"}"
  prom_query "$METRIC"
}

# prom_query EXPR: the instant vector, one sample a line (empty: none)
prom_query() { promtool query instant "$PROM_URL" "$1"; }
prom_has() { [ -n "$(prom_query "$1" 2>/dev/null)" ]; }
# the alerts of Prometheus's rules now (GET /api/v1/alerts, JSON), in PROM_ALERTS
prom_alerts() { PROM_ALERTS=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/alerts"); }
prom_firing() {
  prom_alerts && [[ $PROM_ALERTS == *"\"alertname\":\"$ALERT_NAME\""* ]] && [[ $PROM_ALERTS == *'"state":"firing"'* ]]
}
prom_clear() { prom_alerts && [[ $PROM_ALERTS == *'"alerts":[]'* ]]; }

# am_metric NAME: the sum of Alertmanager's series NAME{...integration="webhook"...}
am_metric() {
  curl -fsS --max-time 5 "$AM_URL/metrics" |
    awk -v n="$1" 'index($1, n "{") == 1 && $1 ~ /integration="webhook"/ {s += $2; f = 1} END {if (!f) exit 1; print s + 0}'
}
am_notified_more_than() { local n; n=$(am_metric alertmanager_notifications_total) && [ "$n" -gt "$1" ]; }

# ------------------------------------------------------------------ the capture

# capture_alert_is STATUS: a CaptureAlert for the pod with that status; sets ALERT_OBJ
capture_alert_is() {
  ALERT_OBJ=$(k -n "$AGENT_NS" get capturealerts -o go-template='{{range .items}}{{if and (eq (index .spec.labels "pod") "'"$ALERT_POD"'") (eq .spec.status "'"$1"'")}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}' 2>/dev/null |
              head -1)
  [ -n "$ALERT_OBJ" ]
}
alert_field() { k -n "$AGENT_NS" get capturealert "$ALERT_OBJ" -o jsonpath="$1"; }

# the alert capture's directory and first ring file exist; sets SESSION_DIR, RING0
session_exists() {
  local d
  d=$(find "$ALERT_POD_DIR" -mindepth 1 -maxdepth 1 -type d -name 'alert-*' 2>/dev/null | sort | head -1)
  [ -n "$d" ] && [ -s "$d/capture-$ALERT_POD.pcapng0" ] || return 1
  SESSION_DIR=$d
  RING0=$d/capture-$ALERT_POD.pcapng0
}
# the epoch time of the first packet of the (growing) first ring file, read from a copy
first_packet_time() {
  cp "$RING0" "$ALERT_DIR/ring0.pcapng" 2>/dev/null || return 1
  FIRST_PKT=$(tshark -n -r "$ALERT_DIR/ring0.pcapng" -c 1 -T fields -e frame.time_epoch 2>/dev/null | head -1 || true)
  [ -n "$FIRST_PKT" ]
}

# event_msg REASON: the message of the pod's latest Event with that reason
event_msg() {
  k -n "$ALERT_NS" get events --field-selector "involvedObject.kind=Pod,involvedObject.name=$ALERT_POD,reason=$1" \
    -o go-template='{{range .items}}{{.message}}{{"\n"}}{{end}}' 2>/dev/null | tail -1
}
# has_event REASON TEXT: an Event of the pod with that reason whose message holds TEXT
has_event() { EVENT_MSG=$(event_msg "$1") && [ -n "$EVENT_MSG" ] && [[ $EVENT_MSG == *"$2"* ]]; }

# the pod's capture is over: capture.json has its stop and no tcpdump runs in the agent pod
# (its own PID namespace: no hostPID; the manual capture of the first part is over)
capture_stopped() {
  local comms
  grep -q '"stopped"' "$SESSION_DIR/capture.json" 2>/dev/null || return 1
  # shellcheck disable=SC2016  # expanded by the agent pod's sh
  comms=$(in_agent sh -c 'cat /proc/[0-9]*/comm 2>/dev/null' || true)
  [ -n "$comms" ] && ! grep -qx tcpdump <<<"$comms"
}
# json_field FILE KEY: a string field of a flat JSON object (capture.json is the agent's, indented)
json_field() { sed -nE "s/^  \"$2\": \"(.*)\",?\$/\1/p" "$1" | head -1; }

# ------------------------------------------------------------------ the flow

alert_demo() {
  check_agent_alert_setup
  start_metric_pod
  start_alerting
  local notified t_fire t_resolve active stops_at stopped

  say "fire: set $METRIC 1 in $ALERT_NS/$ALERT_POD"
  notified=$(am_metric alertmanager_notifications_total) || notified=0
  t_fire=$(ms_now)
  poll "kubectl exec to set $METRIC 1" set_metric 1   # idempotent: a failed exec is retried
  tl "$t_fire" "metric $METRIC set to 1 (kubectl exec)" "demo.sh"
  poll "Prometheus alert $ALERT_NAME firing" prom_firing
  seen "Prometheus: $ALERT_NAME firing"
  active=$(grep -o '"activeAt":"[^"]*"' <<<"$PROM_ALERTS" | head -1 | cut -d'"' -f4)
  tl "$(rfc_ms "$active")" "Prometheus: $ALERT_NAME active" "Prometheus activeAt"
  echo "$PROM_ALERTS"
  poll "Alertmanager to notify the webhook" am_notified_more_than "$notified"
  seen "Alertmanager: webhook notified (alertmanager_notifications_total)"
  echo "Alertmanager webhook notifications: $(am_metric alertmanager_notifications_total || echo ?)," \
    "failed: $(am_metric alertmanager_notifications_failed_total || echo ?)"
  amtool alert query --alertmanager.url="$AM_URL" -o extended | tee "$ALERT_DIR/alertmanager-alerts.txt"
  poll "a firing CaptureAlert for $ALERT_POD" capture_alert_is firing
  seen "CaptureAlert $ALERT_OBJ firing"
  run "${KUBECTL[@]}" -n "$AGENT_NS" get capturealerts -o wide
  poll "the alert capture's first ring file under $ALERT_POD_DIR" session_exists
  seen "capture directory and first ring file exist"
  poll "a packet in $RING0" first_packet_time
  seen "first packet on disk (read back from the ring file)"
  # %.0f: mawk's %d is 32 bits
  tl "$(awk -v t="$FIRST_PKT" 'BEGIN {printf "%.0f", t * 1000}')" "first packet captured" "its pcapng timestamp"
  tl "$(rfc_ms "$(json_field "$SESSION_DIR/capture.json" started)")" "capture decided: its directory created" \
    "capture.json started, as first written"
  echo "capture: $SESSION_DIR"
  # the section header (at the start of every ring file) names the alert and its fingerprint
  # (tr reads it all: no `| grep -q`, whose early exit would fail the pipe under pipefail)
  local shb
  shb=$(head -c 16384 "$ALERT_DIR/ring0.pcapng" | tr -c '[:print:]' '.')
  [[ $shb == *"$ALERT_NAME"* ]] || fail "$RING0's section header does not name $ALERT_NAME"
  [[ $shb == *"fingerprint=$ALERT_OBJ"* ]] || fail "$RING0's section header does not name fingerprint $ALERT_OBJ"
  poll "Event CaptureStarted with trigger alert $ALERT_NAME" has_event CaptureStarted "trigger: alert $ALERT_NAME firing"
  seen "Event CaptureStarted"
  echo "CaptureStarted: $EVENT_MSG"

  say "resolve: set $METRIC 0"
  t_resolve=$(ms_now)
  poll "kubectl exec to set $METRIC 0" set_metric 0   # idempotent: a failed exec is retried
  tl "$t_resolve" "metric $METRIC set to 0 (kubectl exec)" "demo.sh"
  poll "Prometheus alert $ALERT_NAME gone" prom_clear
  seen "Prometheus: no alert"
  poll "the CaptureAlert to be resolved" capture_alert_is resolved
  seen "CaptureAlert $ALERT_OBJ resolved"
  tl "$(rfc_ms "$(alert_field '{.spec.endsAt}')")" "alert ended" "CaptureAlert spec.endsAt"
  poll "Event CaptureStopping" has_event CaptureStopping "stop grace"
  seen "Event CaptureStopping"
  echo "CaptureStopping: $EVENT_MSG"
  stops_at=$(grep -oE 'stops at [0-9TZ:.-]+' <<<"$EVENT_MSG" | cut -d' ' -f3)
  [ -n "$stops_at" ] || fail "no 'stops at' time in CaptureStopping: $EVENT_MSG"
  tl "$(rfc_ms "$stops_at")" "end of the stop grace ($STOP_GRACE)" "CaptureStopping message"
  poll "Event CaptureStopped (files kept)" has_event CaptureStopped "files kept"
  seen "Event CaptureStopped"
  echo "CaptureStopped: $EVENT_MSG"
  poll "the capture's end in capture.json and no tcpdump left in $AGENT" capture_stopped
  stopped=$(json_field "$SESSION_DIR/capture.json" stopped)
  tl "$(rfc_ms "$stopped")" "capture stopped: $(json_field "$SESSION_DIR/capture.json" stop_reason)" "capture.json stopped"
  tl "$(rfc_ms "$(json_field "$SESSION_DIR/capture.json" started)")" "capture running (tcpdump started)" \
    "capture.json started, as last written"
  # the agent's clock rounds "stops at" to the second
  [ "$(rfc_ms "$stopped")" -ge $(( $(rfc_ms "$stops_at") - 1000 )) ] ||
    fail "the capture stopped at $stopped, before the end of its stop grace ($stops_at)"
  [ -s "$RING0" ] || fail "the alert capture's files were not kept"
  echo "stopped $stopped (grace until $stops_at); files kept:"
  ls -l "$SESSION_DIR"

  alert_collect "$t_fire"
}

# ------------------------------------------------------------------ outputs/alert/

alert_collect() {
  local t0=$1 f
  say "collect outputs into $ALERT_OUT"
  rm -rf "$ALERT_OUT"
  mkdir -p "$ALERT_OUT"
  cp "$ALERT_DIR/prometheus-rule.yaml" "$ALERT_DIR/prometheus.yml" "$ALERT_DIR/alertmanager.yml" "$ALERT_OUT/"
  grep -qF "$(cat "$TOKEN_FILE")" "$ALERT_OUT/alertmanager.yml" && fail "the token leaked into alertmanager.yml"
  cp "$ALERT_DIR/alertmanager-alerts.txt" "$ALERT_OUT/"
  k -n "$AGENT_NS" get capturealerts -o yaml >"$ALERT_OUT/capturealerts.yaml"
  k -n "$ALERT_NS" get events --field-selector "involvedObject.kind=Pod,involvedObject.name=$ALERT_POD" \
    --sort-by=.firstTimestamp \
    -o custom-columns='FIRST:.firstTimestamp,LAST:.lastTimestamp,TYPE:.type,REASON:.reason,FROM:.source.component,MESSAGE:.message' \
    >"$ALERT_OUT/events.txt"
  {
    echo "# ls -l --full-time of $ALERT_POD_DIR (the capture dir on the node, the agent's hostPath), recursively"
    ls -lR --full-time "$ALERT_POD_DIR"
    echo
    echo "# $SESSION_DIR/capture.json"
    cat "$SESSION_DIR/capture.json"
  } >"$ALERT_OUT/capture-files.txt"
  # the ring's files, each a complete pcapng with the alert in its section header
  for f in "$SESSION_DIR"/capture-"$ALERT_POD".pcapng*; do
    echo "=== capinfos $f"
    capinfos "$f" 2>&1 || true
    echo
  done >"$ALERT_OUT/capinfos.txt"
  cp "$RING0" "$ALERT_OUT/capture-file.pcapng"
  tshark -n -r "$ALERT_OUT/capture-file.pcapng" -c 30 >"$ALERT_OUT/capture-output.txt" 2>"$ALERT_DIR/tshark.err" ||
    { cat "$ALERT_DIR/tshark.err" >&2; fail "tshark cannot read $RING0"; }
  k -n "$AGENT_NS" logs "$AGENT" -c agent >"$ALERT_OUT/agent-logs.txt"
  write_timeline "$t0" >"$ALERT_OUT/timeline.txt"

  grep -qF "$ALERT_NAME" "$ALERT_OUT/capinfos.txt" || fail "capinfos shows no comment naming $ALERT_NAME"
  echo "the agent's webhook and alert counters (http://${WEBHOOK_ADDR%:*}:9695/metrics):"
  curl -fsS --max-time 5 "http://${WEBHOOK_ADDR%:*}:9695/metrics" |
    grep -E '^podcap_(webhook_requests_total|alerts_received_total)' || true
  echo "outputs/alert/:"
  ls -l "$ALERT_OUT"
  echo "--- capinfos (section comments of the first ring file)"
  grep -iA12 '^Capture comment' "$ALERT_OUT/capinfos.txt" | head -14 || true
  echo "--- first packets (tshark -r capture-file.pcapng)"
  head -6 "$ALERT_OUT/capture-output.txt"
  echo "--- timeline"
  cat "$ALERT_OUT/timeline.txt"
}

# write_timeline T0: the entries sorted by time, with the offset from T0 (the metric flip)
write_timeline() {
  local t0=$1 ms what src d
  echo "# The alert flow of make demo, $(iso_ms "$t0"): time (UTC), offset from setting the metric to 1,"
  echo "# what happened, and where the time comes from (observed: when demo.sh's poll saw it,"
  echo "# every 0.5 s plus a kubectl call; the others are the components' own timestamps)."
  sort -n -k1,1 "$ALERT_DIR/timeline" | while IFS=$'\t' read -r ms what src; do
    d=$(( ms - t0 ))
    printf '%s  %s%d.%03ds  %-70s %s\n' "$(iso_ms "$ms")" "$([ "$d" -lt 0 ] && echo - || echo +)" \
      $(( ${d#-} / 1000 )) $(( ${d#-} % 1000 )) "$what" "[$src]"
  done
}
