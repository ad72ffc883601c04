# shellcheck shell=bash
# lib.sh: helpers shared by test/bench/bench.sh, capture.sh, latency.sh, policy.sh and alerts.sh
# (sourced).
#
#   BENCH_OUT   results directory of this bench run (default .cache/bench/<UTC time>: under the
#               gitignored build cache, which `make clean` keeps)
#   BENCH_BIN   where the bench's Go programs are built (default $BENCH_OUT/bin)

BENCH_REPO=${BENCH_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

now_ms() { date +%s%3N; }
now_s() { date +%s.%N; }
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# shellcheck source=test/cluster/proc.sh
source "$BENCH_REPO/test/cluster/proc.sh" # pid_running

# poll TIMEOUT_S CMD...: run CMD every 20 ms until it succeeds; 1 after TIMEOUT_S
poll() {
  local end=$(( $(now_ms) + $1 * 1000 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$end" ] || return 1
    sleep 0.02
  done
}

# stop_pid PID [TIMEOUT_S] [SIGNAL]: signal PID (default TERM), wait for it to end (SIGKILL
# after TIMEOUT_S, default 10) and reap it if it is our child. Only for processes we started.
stop_pid() {
  local pid=$1 t=${2:-10} sig=${3:-TERM} end
  [ -n "$pid" ] || return 0
  if pid_running "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    end=$(( $(now_ms) + t * 1000 ))
    while pid_running "$pid" && [ "$(now_ms)" -lt "$end" ]; do sleep 0.02; done
    if pid_running "$pid"; then
      log "pid $pid ignored SIG$sig for ${t}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# apt_need PKG...: install the Debian packages that are missing (BENCH_NO_APT=1: fail instead)
apt_need() {
  local p missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${BENCH_NO_APT:-0}" != 1 ] || die "missing Debian packages: ${missing[*]} (BENCH_NO_APT=1)"
  log "apt-get install ${missing[*]}"
  # iperf3's postinst asks whether to start a daemon: the default (no) is what we want
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]}"
}

# build_tools: the bench's Go programs (static, like the agent) into $BENCH_BIN
build_tools() {
  mkdir -p "$BENCH_BIN"
  (cd "$BENCH_REPO" && CGO_ENABLED=0 go build -o "$BENCH_BIN/" ./test/bench/cmd/...) ||
    die "go build ./test/bench/cmd/..."
}

# build_agent: $BENCH_BIN/podcap-agent from this tree (part B runs it)
build_agent() {
  mkdir -p "$BENCH_BIN"
  (cd "$BENCH_REPO" && CGO_ENABLED=0 go build -o "$BENCH_BIN/podcap-agent" ./cmd/podcap-agent) ||
    die "go build ./cmd/podcap-agent"
}

bench_defaults() {
  BENCH_OUT=${BENCH_OUT:-$BENCH_REPO/.cache/bench/$(date -u +%Y%m%dT%H%M%SZ)}
  BENCH_BIN=${BENCH_BIN:-$BENCH_OUT/bin}
  mkdir -p "$BENCH_OUT"
  BENCH_OUT=$(cd "$BENCH_OUT" && pwd)
  export BENCH_OUT BENCH_BIN
}

# ---- parts B and D (latency.sh, alerts.sh): the test bed, the agent, a traffic pod --------
#
#   BENCH_CLUSTER   the test bed instance (default $PODCAP_CLUSTER, else bench); never test or
#                   demo: the part takes its instance down when it ends. PODCAP_CLUSTER_INDEX
#                   and PODCAP_CACHE go to cluster.sh as they are.

# testbed_init PART CLUSTER_LOG: root, the results dirs, and the instance's layout: INSTANCE,
# CLUSTER (cluster.sh), CLUSTER_LOG, RAW and cluster.sh's PODCAP_* exports. PART (latency,
# alerts) prefixes the log lines.
testbed_init() {
  PART=$1
  [ "$(id -u)" = 0 ] || die "needs root (the test bed, the agent's nsenter)"
  INSTANCE=${BENCH_CLUSTER:-${PODCAP_CLUSTER:-bench}}
  case $INSTANCE in
    test | demo) die "instance $INSTANCE is go test's or make demo's, and $PART takes its instance down: set BENCH_CLUSTER" ;;
  esac
  bench_defaults
  RAW=$BENCH_OUT/raw
  CLUSTER_LOG=$RAW/$2
  mkdir -p "$RAW"
  CLUSTER=$BENCH_REPO/test/cluster/cluster.sh
  [ -x "$CLUSTER" ] || die "$CLUSTER is missing: $PART needs the test bed"
  export PODCAP_CLUSTER=$INSTANCE
  local env
  # an instance name the test bed does not accept fails here, before anything is started
  env=$("$CLUSTER" env) || die "test/cluster/cluster.sh does not accept instance $INSTANCE"
  eval "$(grep '^export ' <<<"$env")"
}

# testbed_up: cluster.sh up (idempotent; waits for the node)
testbed_up() {
  local t0
  t0=$(now_ms)
  log "$PART: cluster $INSTANCE up (log $CLUSTER_LOG)"
  "$CLUSTER" up >>"$CLUSTER_LOG" 2>&1 || die "cluster.sh up failed: $(tail -5 "$CLUSTER_LOG")"
  log "$PART: cluster up in $(( $(now_ms) - t0 )) ms"
}

# testbed_teardown RC: the EXIT trap's end: stop the agent (AGENT_PID), take the cluster down
# and exit RC (1 if down failed). A part that started more stops it first.
testbed_teardown() {
  local rc=$1
  set +e
  trap - EXIT INT TERM
  if [ -n "${AGENT_PID:-}" ]; then
    stop_pid "$AGENT_PID" 30 TERM
    log "$PART: agent stopped"
  fi
  log "$PART: cluster $INSTANCE down"
  "$CLUSTER" down >>"$CLUSTER_LOG" 2>&1 || { log "FAIL: cluster.sh down (see $CLUSTER_LOG)"; rc=1; }
  exit "$rc"
}

kubectl() { "$PODCAP_BIN/kubectl" --kubeconfig "$PODCAP_ADMIN_KUBECONFIG" "$@"; }

# free_port FROM: the first port from FROM on that nothing listens on
free_port() {
  local p=$1
  while [ -n "$(ss -Hltn "sport = :$p")" ]; do p=$(( p + 1 )); done
  echo "$p"
}

# record_session PID: `cluster.sh down` kills the session if we cannot
record_session() {
  local sid
  # setsid execs directly (a background job is no process group leader): pid = session id
  sid=$(ps -o sid= -p "$1" | tr -d ' ')
  echo "${sid:-$1}" >>"$PODCAP_AGENT_SESSIONS"
}

# agent_ready: the agent start_agent started runs and answers /readyz (for poll)
agent_ready() { pid_running "$AGENT_PID" && curl -sf "http://127.0.0.1:$AGENT_PORT/readyz"; }

# start_agent AGENT LOG OFFSET [ARG...]: the agent binary as a host process in its own session
# (recorded), with the test bed's agent kubeconfig, node name, CRI socket and netns dir (its
# containerd pins the pods' network namespaces there; the agent enters only files under it),
# --capture-dir CAPTURE_DIR and ARGs; health and metrics on AGENT_PORT, the API (HTTPS) on
# API_PORT, the first free ports from sink port + OFFSET (cluster.sh uses base+1..8; the API is
# kept off the node's default :9696). Sets AGENT_PID, AGENT_PORT, API_PORT; returns when
# /readyz answers.
start_agent() {
  local agent=$1 agent_log=$2
  AGENT_PORT=$(free_port $(( PODCAP_SINK_PORT + $3 )))
  API_PORT=$(free_port $(( AGENT_PORT + 1 )))
  shift 3
  mkdir -p "$CAPTURE_DIR"
  setsid "$agent" --kubeconfig="$PODCAP_AGENT_KUBECONFIG" --node-name="$PODCAP_NODE_NAME" \
    --cri-endpoint="$PODCAP_CRI_ENDPOINT" --netns-dir="$PODCAP_NETNS_DIR" --capture-dir="$CAPTURE_DIR" \
    --listen-address="127.0.0.1:$AGENT_PORT" --api-listen-address="127.0.0.1:$API_PORT" "$@" >"$agent_log" 2>&1 &
  AGENT_PID=$!
  record_session "$AGENT_PID"
  poll 60 agent_ready || die "agent not ready within 60 s: $(tail -5 "$agent_log")"
  log "$PART: agent pid $AGENT_PID ready: metrics 127.0.0.1:$AGENT_PORT, API https://127.0.0.1:$API_PORT, capture dir $CAPTURE_DIR"
}

# start_traffic_pod POD INTERVAL: a workload pod in default that pings the bridge's gateway
# every INTERVAL seconds until SIGTERM; returns when it is Ready.
start_traffic_pod() {
  kubectl apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: traffic
    image: $PODCAP_WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "ping -q -i $2 $PODCAP_GATEWAY >/dev/null & p=\$!; trap 'kill \$p; exit 0' TERM; wait \$p"]
EOT
  kubectl wait --for=condition=Ready "pod/$1" --timeout=120s >/dev/null || die "pod $1 not Ready"
}
