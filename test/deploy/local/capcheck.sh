#!/usr/bin/env bash
# capcheck.sh: prove on a real local cluster that the agent container's securityContext in
# deploy/ (as `kubectl kustomize deploy/` renders it) is enough for the capture command and
# that every capability it adds is needed. For the manifest's set, and for the set less each
# capability in turn, a pod with that securityContext (hostNetwork, no hostPID, the CRI socket
# dir, containerd's netns dir and a capture dir mounted, the agent image) runs what the agent
# runs:
#   nsenter --net=<the sandbox's pinned netns> tcpdump -i any -U --immediate-mode -Z root -c 5 -w - > /captures/<v>.pcap
# against a root workload with the runtime's default capabilities, and opens the network
# namespace of a uid-1000 workload. The full set must capture 5 packets; each reduced set must
# fail (the error it gives is printed: deploy/daemonset.yaml quotes them).
# With NATIVE=1 it checks the native-only agent instead: the securityContext of deploy/ with
# the Component deploy/native, and in place of nsenter + tcpdump what the native engine does
# (test/deploy/local/nativecap: native.New, which probes setns and an AF_PACKET socket as the
# agent does at start, then a capture of 5 packets by setns into the pinned netns, AF_PACKET,
# a filter compiled by `tcpdump -ddd`); deploy/native/kustomization.yaml quotes the errors.
#
#   test/deploy/local/capcheck.sh          (root; its own cluster instance "capchk", torn down
#   NATIVE=1 test/deploy/local/capcheck.sh  at exit; KEEP=1 leaves it running)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT"
export PODCAP_CLUSTER=${PODCAP_CLUSTER:-capchk}
CLUSTER=$ROOT/test/cluster/cluster.sh
# shellcheck source=../../cluster/common.sh
. "$ROOT/test/cluster/common.sh"
KEEP=${KEEP:-0}
NATIVE=${NATIVE:-0}
WORK=$CLUSTER_DIR/capcheck
CAPS=$CAPTURE_DIR/capcheck
k() { "${KUBECTL[@]}" "$@"; }
fail() { echo "capcheck: FAIL: $*" >&2; exit 1; }

finish() {
  local rc=$?
  trap - EXIT
  if [ "${STARTED:-0}" = 1 ] && [ "$KEEP" != 1 ]; then "$CLUSTER" down >&2 || rc=1; fi
  exit "$rc"
}
trap finish EXIT

[ "$(id -u)" = 0 ] || fail "run as root"
CGO_ENABLED=0 go build -o bin/podcap-agent ./cmd/podcap-agent
if [ "$NATIVE" = 1 ]; then
  # run from the capture dir's mount in the check pods (the image holds only the agent)
  mkdir -p "$CAPS"
  CGO_ENABLED=0 go build -o "$CAPS/nativecap" ./test/deploy/local/nativecap
fi
"$CLUSTER" build
STARTED=1
"$CLUSTER" up
"$CLUSTER" agent-image bin/podcap-agent >/dev/null
mkdir -p "$WORK"

# the agent container's securityContext as deploy/ (NATIVE=1: with deploy/native) renders it
# (JSON is YAML)
SRC=deploy
if [ "$NATIVE" = 1 ]; then
  SRC=$WORK/native
  mkdir -p "$SRC"
  rel=$(realpath --relative-to="$SRC" "$ROOT/deploy")
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\ncomponents:\n- %s/native\n' \
    "$rel" "$rel" >"$SRC/kustomization.yaml"
fi
k kustomize "$SRC" | awk 'BEGIN {RS = "\n---\n"} /\nkind: DaemonSet\n/ {print}' >"$WORK/daemonset.yaml"
ds() { k create --dry-run=client -f "$WORK/daemonset.yaml" -o jsonpath="{.spec.template.spec.containers[0].$1}"; }
SC=$(ds securityContext)
[ -n "$SC" ] || fail "no DaemonSet securityContext in $SRC"
read -r -a ADD <<<"$(ds 'securityContext.capabilities.add[*]')"
[ "${#ADD[@]}" -gt 0 ] || fail "the DaemonSet adds no capability: nothing to check"
if [ "$NATIVE" = 1 ]; then
  ARGS=$(ds 'args[*]')
  [[ " $ARGS " == *" --engine=native "* ]] || fail "$SRC: the agent's args lack --engine=native: $ARGS"
fi
echo "$SRC securityContext: $SC"

k apply -f - >/dev/null <<EOF_W
apiVersion: v1
kind: Pod
metadata: {name: target-root, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: app, image: $WORKLOAD_IMAGE, imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: target-user, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, runAsGroup: 1000}
  containers:
  - name: app
    image: $WORKLOAD_IMAGE
    imagePullPolicy: Never
    command: [/bin/sh, -c, 'trap "exit 0" TERM; while :; do sleep 1; done']
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
EOF_W

# variants: "all" (the manifest's set), then "no-<cap>" for each
variants=(all)
for c in "${ADD[@]}"; do variants+=("no-$c"); done
caps_of() { # variant -> JSON list of the capabilities it adds
  local v=$1 c out=()
  for c in "${ADD[@]}"; do [ "$v" = "no-$c" ] || out+=("\"$c\""); done
  local IFS=,; echo "[${out[*]}]"
}
podname() { echo "cap-$1" | tr 'A-Z_' 'a-z-'; }
for v in "${variants[@]}"; do
  sc=$(sed -E "s/\"add\":\[[^]]*\]/\"add\":$(caps_of "$v")/" <<<"$SC")
  k apply -f - >/dev/null <<EOF_P
apiVersion: v1
kind: Pod
metadata: {name: $(podname "$v"), namespace: default}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: agent
    image: $AGENT_IMAGE
    imagePullPolicy: Never
    command: [/bin/sh, -c, 'trap "exit 0" TERM; while :; do sleep 1; done']
    securityContext: $sc
    volumeMounts:
    - {name: cri, mountPath: $CRI_DIR}
    - {name: netns, mountPath: $NETNS_DIR, readOnly: true, mountPropagation: HostToContainer}
    - {name: captures, mountPath: /captures}
  volumes:
  - {name: cri, hostPath: {path: $CRI_DIR, type: Directory}}
  - {name: netns, hostPath: {path: $NETNS_DIR, type: Directory}}
  - {name: captures, hostPath: {path: $CAPS, type: DirectoryOrCreate}}
EOF_P
done
k wait pods --all --for=condition=Ready --timeout=120s >/dev/null

netns_of() { # pod name -> its sandbox's pinned network namespace file
  local sb
  sb=$("${CRICTL[@]}" pods -q --state ready --label "io.kubernetes.pod.name=$1" 2>/dev/null)
  "${CRICTL[@]}" inspectp -o go-template \
    --template '{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{end}}{{end}}' "$sb" 2>/dev/null
}
NS1=$(netns_of target-root)
NS2=$(netns_of target-user)
if [ -z "$NS1" ] || [ -z "$NS2" ]; then fail "no workload network namespaces"; fi

bad=0
for v in "${variants[@]}"; do
  pod=$(podname "$v")
  echo "=== $v: adds $(caps_of "$v") ($(k exec "$pod" -- grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -s '\t\n' '  '))"
  rm -f "$CAPS/$pod.pcap"
  rc=0 ns=0
  if [ "$NATIVE" = 1 ]; then
    k exec "$pod" -- /captures/nativecap -netns-dir "$NETNS_DIR" -filter 'ip or ip6 or arp' -count 5 "$NS1" \
      >"$WORK/$pod.log" 2>&1 || rc=$?
    n=0
    grep -q ': 5 packets' "$WORK/$pod.log" && n=5
    k exec "$pod" -- /captures/nativecap -netns-dir "$NETNS_DIR" -count 0 "$NS2" >>"$WORK/$pod.log" 2>&1 || ns=$?
  else
    # /usr/bin/nsenter: util-linux, as the agent runs it (busybox's sh would prefer its own applet)
    k exec "$pod" -- sh -c "timeout 20 /usr/bin/nsenter --net=$NS1 tcpdump -i any -U --immediate-mode -Z root -c 5 -w - >/captures/$pod.pcap" \
      >"$WORK/$pod.log" 2>&1 || rc=$?
    n=$( { tcpdump -nn -r "$CAPS/$pod.pcap" 2>/dev/null || true; } | wc -l)
    k exec "$pod" -- /usr/bin/nsenter --net="$NS2" true >>"$WORK/$pod.log" 2>&1 || ns=$?
  fi
  grep -vE '^(tcpdump: (data link type|listening on)|[0-9]+ packets (captured|received|dropped))' "$WORK/$pod.log" | sed 's/^/    /' || true
  echo "    capture rc=$rc packets=$n; netns of the uid-1000 pod rc=$ns"
  if [ "$v" = all ]; then
    if [ "$rc" != 0 ] || [ "$n" -lt 5 ] || [ "$ns" != 0 ]; then
      echo "    FAIL: the manifest's set does not capture"; bad=1
    fi
  else
    [ "$rc" != 0 ] || [ "$ns" != 0 ] || { echo "    FAIL: ${v#no-} is not needed"; bad=1; }
  fi
done
[ "$bad" = 0 ] || fail "see above"
echo "capcheck OK: ${ADD[*]} are enough, and each is needed"
