#!/usr/bin/env bash
# demo.sh: podcap end to end on a local single-node cluster (`make demo`; root, Debian 12).
#
#   1. build bin/podcap-agent (CGO_ENABLED=0)
#   2. build and start the local cluster instance "demo" (test/cluster/cluster.sh, state in
#      /tmp/podcap-demo), import the agent image, create the webhook token Secret
#      podcap-webhook-token (deploy/webhook-secret.md), deploy the agent with deploy/ (DaemonSet,
#      policy ConfigMap from rules/, CaptureAlert CRD and Role, Service podcap-webhook) + the
#      local overlay (test/deploy/local), wait for the DaemonSet rollout
#   3. manual capture: start test-pod (test-pod.yaml, image swapped for the local busybox
#      workload image), annotate it tcpdump.antrea.io=3, wait until its first ring file holds
#      its pings
#   4. write outputs/: pods.txt, pod-describe.txt, capture-files.txt, capture-file.pcap,
#      capture-output.txt, agent-logs.txt
#   5. retrieval (test/demo-retrieval.sh): as ServiceAccount default/ci holding only a token and
#      deploy/examples/capture-reader.yaml's grants, `kubectl podcap` ls, explain, get (compared
#      with the agent's file), stream | tcpdump -r -, and ls -n kube-system refused (403);
#      outputs/retrieval/
#   6. remove the annotation, wait until the capture files are gone
#   7. alert capture (test/demo-alert.sh): pod shop/cart serves a metric; Debian's Prometheus
#      and Alertmanager run as host processes on 127.0.0.1 (ports 27210, 27211 for "demo");
#      Alertmanager's receiver is the agent's webhook at the podcap-webhook Service's endpoint
#      (bearer token file, the agent's self-signed certificate pinned to the fingerprint it
#      logged as ca_file). The demo sets the metric to 1: the rule fires, Alertmanager notifies,
#      a CaptureAlert appears, rules/alerts.rego captures the pod into pcapng files whose
#      comments name the alert (Event CaptureStarted); it sets the metric to 0: resolved,
#      CaptureStopping, CaptureStopped after the 10 s stop grace, files kept
#   8. write outputs/alert/: prometheus-rule.yaml, prometheus.yml, alertmanager.yml (the token
#      is only a file path), alertmanager-alerts.txt, capturealerts.yaml, events.txt,
#      capture-files.txt, capinfos.txt, capture-file.pcapng, capture-output.txt, agent-logs.txt,
#      timeline.txt
#   9. stop Prometheus and Alertmanager and tear the cluster down (also on failure; KEEP=1
#      leaves all of it running, and `cluster.sh down` stops it later)
#
# Every wait polls with a deadline. Exits non-zero if any step fails. Knobs: KEEP=1,
# DEMO_TIMEOUT (seconds per wait, default 120).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PODCAP_CLUSTER=${PODCAP_CLUSTER:-demo}
CLUSTER=$ROOT/test/cluster/cluster.sh
# shellcheck source=cluster/common.sh
. "$ROOT/test/cluster/common.sh"     # CLUSTER_DIR, API_PORT, CRI_DIR, CAPTURE_DIR, KUBECTL, images
# shellcheck source=deploy/local/render.sh
. "$ROOT/test/deploy/local/render.sh"

KEEP=${KEEP:-0}
TIMEOUT=${DEMO_TIMEOUT:-120}
OUT=$ROOT/outputs
KEY=tcpdump.antrea.io
FILES=3
MIN_REPLIES=3
NS=default
POD=test-pod
AGENT_NS=podcap-system
POD_DIR=$CAPTURE_DIR/$NS/$POD               # as the agent sees it (mounted at the same path)
RING0=$POD_DIR/capture-$POD.pcap0
OVERLAY=$CLUSTER_DIR/deploy
# shellcheck source=demo-alert.sh
. "$ROOT/test/demo-alert.sh"         # alert_prepare, alert_demo, alert_stop, alert_dump_state
# shellcheck source=demo-retrieval.sh
. "$ROOT/test/demo-retrieval.sh"     # retrieval_demo

T0=$(date +%s)
say() { printf '\n[demo +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }
fail() { printf '\n[demo] FAIL: %s\n' "$*" >&2; exit 1; }
k() { "${KUBECTL[@]}" "$@"; }

# poll DESCRIPTION CMD...: run CMD every 0.5 s until it succeeds or $TIMEOUT s have passed
poll() {
  local what=$1 end=$(( $(date +%s) + TIMEOUT )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || fail "timeout after ${TIMEOUT}s waiting for $what"
    sleep 0.5
  done
}

agent_pod() {
  k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent \
    --field-selector "spec.nodeName=$NODE" -o jsonpath='{.items[0].metadata.name}'
}
in_agent() { k -n "$AGENT_NS" exec "$AGENT" -c agent -- "$@"; }

# the first ring file holds at least $MIN_REPLIES of the node's echo replies to the pod's pings:
# the capture sees the pod's own traffic (a copy, read with the host's tcpdump)
ring0_has_replies() {
  local n
  in_agent cat "$RING0" >"$CLUSTER_DIR/ring0.pcap" 2>/dev/null || return 1
  n=$(tcpdump -nn -r "$CLUSTER_DIR/ring0.pcap" 'icmp[icmptype] == icmp-echoreply' 2>/dev/null | wc -l)
  [ "$n" -ge "$MIN_REPLIES" ]
}
# no capture file of the pod is left (the pod's dir may go too)
captures_gone() {
  local left
  left=$(in_agent find "$CAPTURE_DIR" -name "capture-$POD.pcap*") || return 1
  [ -z "$left" ]
}
# PID (host PID namespace) of the test pod's container, through the CRI
pod_pid() {
  local cid
  cid=$("${CRICTL[@]}" ps -q --state running --label "io.kubernetes.pod.namespace=$NS" \
        --label "io.kubernetes.pod.name=$POD" 2>/dev/null | head -1)
  [ -n "$cid" ] && "${CRICTL[@]}" inspect -o go-template --template '{{.info.pid}}' "$cid" 2>/dev/null
}

dump_state() {
  echo "--- pods"; k get pods -A -o wide || true
  echo "--- agent logs (tail 40)"
  if [ -n "${AGENT:-}" ]; then k -n "$AGENT_NS" logs "$AGENT" -c agent --tail=40 || true; fi
  echo "--- events in $NS"; k -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 || true
  alert_dump_state
}

finish() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ "${CLUSTER_STARTED:-0}" = 1 ]; then
    [ "$rc" -eq 0 ] || dump_state >&2
    if [ "$KEEP" = 1 ]; then
      say "KEEP=1: cluster $PODCAP_CLUSTER left running; use it with:"
      echo "  eval \"\$(PODCAP_CLUSTER=$PODCAP_CLUSTER $CLUSTER env)\""
      echo "  Prometheus $PROM_URL, Alertmanager $AM_URL (if started; configs and logs in $ALERT_DIR)"
      echo "  tear it all down with: PODCAP_CLUSTER=$PODCAP_CLUSTER $CLUSTER down"
    else
      say "stop Prometheus and Alertmanager"
      alert_stop
      say "tear down the cluster"
      "$CLUSTER" down || { echo "[demo] teardown left something behind (see above)" >&2; rc=1; }
    fi
  fi
  if [ "$rc" -eq 0 ]; then say "demo OK: outputs in $OUT"; else say "demo FAILED (exit $rc)"; fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || fail "run as root (the local cluster runs containerd and kubelet)"

say "build the agent"
run make --no-print-directory -C "$ROOT" build # the Makefile's -ldflags: version, commit, build date

say "build the local cluster (cached under $CACHE)"
run "$CLUSTER" build

say "start cluster $PODCAP_CLUSTER (state in $CLUSTER_DIR)"
CLUSTER_STARTED=1
run "$CLUSTER" up

say "import the agent image $AGENT_IMAGE"
run "$CLUSTER" agent-image bin/podcap-agent

alert_prepare

say "deploy the agent: deploy/ + test/deploy/local, rendered into $OVERLAY"
render_local_overlay "$OVERLAY" "$API_PORT" "$CRI_DIR" "$CAPTURE_DIR" "$NETNS_DIR"
run "${KUBECTL[@]}" apply -k "$OVERLAY"
run "${KUBECTL[@]}" -n "$AGENT_NS" rollout status ds/podcap-agent --timeout="${TIMEOUT}s"
AGENT=$(agent_pod)
[ -n "$AGENT" ] || fail "no agent pod on node $NODE"
echo "agent pod: $AGENT"

say "start $POD (test-pod.yaml with image $WORKLOAD_IMAGE, no registry)"
sed -E "s|^([[:space:]]*)image: busybox:1\.36\$|\1image: $WORKLOAD_IMAGE\n\1imagePullPolicy: Never|" \
  test-pod.yaml >"$CLUSTER_DIR/test-pod.yaml"
grep -q "image: $WORKLOAD_IMAGE\$" "$CLUSTER_DIR/test-pod.yaml" || fail "could not swap the image in test-pod.yaml"
run "${KUBECTL[@]}" apply -f "$CLUSTER_DIR/test-pod.yaml"
run "${KUBECTL[@]}" -n "$NS" wait "pod/$POD" --for=condition=Ready --timeout="${TIMEOUT}s"

say "capture: annotate $POD $KEY=$FILES"
run "${KUBECTL[@]}" -n "$NS" annotate pod "$POD" "$KEY=$FILES" --overwrite
echo "waiting for $MIN_REPLIES echo replies in $RING0 (inside $AGENT)"
poll "$MIN_REPLIES echo replies in $RING0" ring0_has_replies

say "collect outputs into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT"
k get pods -A -o wide >"$OUT/pods.txt"
k -n "$NS" describe pod "$POD" >"$OUT/pod-describe.txt"
in_agent ls -l "$POD_DIR" >"$OUT/capture-files.txt"
in_agent cat "$RING0" >"$OUT/capture-file.pcap"
# read in the pod's network namespace: Linux cooked v2 records an interface index, which tcpdump
# names from the namespace it runs in (on the host the pod's eth0 would show as a host device)
PID=$(pod_pid) || fail "no PID for $NS/$POD through the CRI"
nsenter -n -t "$PID" tcpdump -nn -r "$OUT/capture-file.pcap" >"$OUT/capture-output.txt" 2>"$CLUSTER_DIR/tcpdump-r.err" ||
  { cat "$CLUSTER_DIR/tcpdump-r.err" >&2; fail "tcpdump cannot read $OUT/capture-file.pcap"; }
k -n "$AGENT_NS" logs "$AGENT" -c agent >"$OUT/agent-logs.txt"
[ -s "$OUT/capture-output.txt" ] || fail "the capture holds no packets"
cat "$OUT/capture-files.txt"
echo "capture-file.pcap: $(wc -c <"$OUT/capture-file.pcap") bytes, $(wc -l <"$OUT/capture-output.txt") packets; the first ones:"
head -8 "$OUT/capture-output.txt"

retrieval_demo

say "stop: remove the annotation $KEY from $POD"
run "${KUBECTL[@]}" -n "$NS" annotate pod "$POD" "$KEY-"
poll "the capture files of $POD to be deleted" captures_gone
echo "no capture-$POD.pcap* left under $CAPTURE_DIR:"
in_agent ls -lR "$CAPTURE_DIR"

alert_demo
