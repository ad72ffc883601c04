#!/usr/bin/env bash
# kind.sh: podcap on a kind cluster with Antrea as the CNI (the original tool's flow), for a
# machine WITH a Docker engine, kind and kubectl (and network access to pull images).
#
#   test/kind/kind.sh setup      kind create cluster (test/kind/kind-config.yaml) + Antrea
#   test/kind/kind.sh deploy     docker build the agent image, kind load it, kubectl apply -k
#                                deploy/ with the image overridden; wait for the rollout
#   test/kind/kind.sh e2e-test   test-pod.yaml, annotate tcpdump.antrea.io=3, wait for packets,
#                                write outputs/ (as test/demo.sh does), remove the annotation,
#                                check that the capture files are gone
#   test/kind/kind.sh cleanup    kind delete cluster
#
# Knobs: KIND_CLUSTER_NAME (podcap), ANTREA_VERSION (v2.7.0), PODCAP_IMAGE
# (ghcr.io/podcap/podcap-agent:kind; not :latest, so the loaded image is used, never pulled),
# KIND_TIMEOUT (seconds per wait, 300).
#
# NOT run on the project's own machines: they have no Docker engine. It is kept clean under
# the shellcheck linter and in step with test/demo.sh, which runs the same e2e flow for real on
# the local cluster (test/cluster/cluster.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER_NAME=${KIND_CLUSTER_NAME:-podcap}
ANTREA_VERSION=${ANTREA_VERSION:-v2.7.0}
IMAGE=${PODCAP_IMAGE:-ghcr.io/podcap/podcap-agent:kind}
TIMEOUT=${KIND_TIMEOUT:-300}
KUBECTL=(kubectl --context "kind-$CLUSTER_NAME")
OUT=$ROOT/outputs
KEY=tcpdump.antrea.io
FILES=3
MIN_REPLIES=3
NS=default
POD=test-pod
AGENT_NS=podcap-system
CAPTURE_DIR=/var/lib/podcap/captures        # deploy/daemonset.yaml: same path in the pod
POD_DIR=$CAPTURE_DIR/$NS/$POD
RING0=$POD_DIR/capture-$POD.pcap0

say() { printf '\n[kind] %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }
fail() { printf '[kind] FAIL: %s\n' "$*" >&2; exit 1; }
k() { "${KUBECTL[@]}" "$@"; }
need() { local c; for c in "$@"; do command -v "$c" >/dev/null || fail "$c not found"; done; }

# poll DESCRIPTION CMD...: run CMD every second until it succeeds or $TIMEOUT s have passed
poll() {
  local what=$1 end=$(( $(date +%s) + TIMEOUT )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || fail "timeout after ${TIMEOUT}s waiting for $what"
    sleep 1
  done
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; }

setup() {
  need docker kind kubectl
  if cluster_exists; then
    say "kind cluster $CLUSTER_NAME exists"
  else
    say "create kind cluster $CLUSTER_NAME (no default CNI)"
    run kind create cluster --name "$CLUSTER_NAME" --config "$ROOT/test/kind/kind-config.yaml"
  fi
  say "install Antrea $ANTREA_VERSION"
  run "${KUBECTL[@]}" apply -f "https://github.com/antrea-io/antrea/releases/download/$ANTREA_VERSION/antrea.yml"
  run "${KUBECTL[@]}" -n kube-system rollout status deploy/antrea-controller --timeout="${TIMEOUT}s"
  run "${KUBECTL[@]}" -n kube-system rollout status ds/antrea-agent --timeout="${TIMEOUT}s"
  run "${KUBECTL[@]}" wait node --all --for=condition=Ready --timeout="${TIMEOUT}s"
  run "${KUBECTL[@]}" -n kube-system rollout status deploy/coredns --timeout="${TIMEOUT}s"
}

deploy() {
  need docker kind kubectl
  cluster_exists || fail "no kind cluster $CLUSTER_NAME (run: $0 setup)"
  say "build $IMAGE"
  # the build's identity, as `make image` passes it (.dockerignore keeps .git out of the build)
  run docker build \
    --build-arg VERSION="$(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo dev)" \
    --build-arg COMMIT="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -t "$IMAGE" "$ROOT"
  say "load $IMAGE into kind cluster $CLUSTER_NAME"
  run kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"
  # an overlay of deploy/ that only swaps the image (kubectl has no `kustomize edit`)
  local overlay
  overlay=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the dir is local to this function
  trap "rm -rf '$overlay'" EXIT
  # (kustomize takes a base only by a path relative to the kustomization)
  cat >"$overlay/kustomization.yaml" <<EOF_K
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$overlay" "$ROOT/deploy")
images:
- name: ghcr.io/podcap/podcap-agent
  newName: ${IMAGE%:*}
  newTag: ${IMAGE##*:}
EOF_K
  say "deploy podcap (deploy/, image $IMAGE)"
  run "${KUBECTL[@]}" apply -k "$overlay"
  run "${KUBECTL[@]}" -n "$AGENT_NS" rollout status ds/podcap-agent --timeout="${TIMEOUT}s"
  k -n "$AGENT_NS" get pods -o wide
}

agent_on() { # NODE -> name of the agent pod on NODE
  k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent \
    --field-selector "spec.nodeName=$1" -o jsonpath='{.items[0].metadata.name}'
}
in_agent() { k -n "$AGENT_NS" exec "$AGENT" -c agent -- "$@"; }
# the first ring file holds at least $MIN_REPLIES of the node's echo replies to the pod's pings
# (read by the agent image's tcpdump; -Z root: see e2e_test)
ring0_has_replies() {
  local n
  n=$(in_agent tcpdump -Z root -nn -r "$RING0" 'icmp[icmptype] == icmp-echoreply' 2>/dev/null | wc -l)
  [ "$n" -ge "$MIN_REPLIES" ]
}
captures_gone() {
  local left
  left=$(in_agent find "$CAPTURE_DIR" -name "capture-$POD.pcap*") || return 1
  [ -z "$left" ]
}

# pod_netns NODE: the network namespace file the runtime pinned for the test pod's sandbox on
# NODE (/var/run/netns/..., mounted into the agent at the same path: the agent has no hostPID,
# so a host PID would mean nothing inside it); kind nodes are containers that ship crictl
pod_netns() {
  local sid
  sid=$(docker exec "$1" crictl pods -q --state ready --namespace "$NS" --name "$POD" | head -1)
  [ -n "$sid" ] && docker exec "$1" crictl inspectp -o go-template \
    --template '{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{end}}{{end}}' "$sid"
}

e2e_test() {
  need docker kubectl
  local node netns
  say "start $POD"
  run "${KUBECTL[@]}" apply -f "$ROOT/test-pod.yaml"
  run "${KUBECTL[@]}" -n "$NS" wait "pod/$POD" --for=condition=Ready --timeout="${TIMEOUT}s"
  node=$(k -n "$NS" get pod "$POD" -o jsonpath='{.spec.nodeName}')
  AGENT=$(agent_on "$node")
  [ -n "$AGENT" ] || fail "no podcap agent on node $node"
  echo "$POD runs on $node; agent $AGENT"

  say "capture: annotate $POD $KEY=$FILES"
  run "${KUBECTL[@]}" -n "$NS" annotate pod "$POD" "$KEY=$FILES" --overwrite
  poll "$MIN_REPLIES echo replies in $RING0" ring0_has_replies

  say "collect outputs into $OUT"
  rm -rf "$OUT"
  mkdir -p "$OUT"
  k get pods -A -o wide >"$OUT/pods.txt"
  k -n "$NS" describe pod "$POD" >"$OUT/pod-describe.txt"
  in_agent ls -l "$POD_DIR" >"$OUT/capture-files.txt"
  in_agent cat "$RING0" >"$OUT/capture-file.pcap"
  # read with the agent image's tcpdump in the pod's network namespace: Linux cooked v2 records
  # an interface index, which tcpdump names from the namespace it runs in (-Z root: without it
  # Debian's tcpdump switches to user tcpdump, which needs SETUID, not granted to the agent)
  netns=$(pod_netns "$node") || true
  [ -n "$netns" ] || fail "no network namespace file for $NS/$POD from crictl on $node"
  k -n "$AGENT_NS" exec -i "$AGENT" -c agent -- nsenter --net="$netns" tcpdump -Z root -nn -r - \
    <"$OUT/capture-file.pcap" >"$OUT/capture-output.txt"
  k -n "$AGENT_NS" logs "$AGENT" -c agent >"$OUT/agent-logs.txt"
  [ -s "$OUT/capture-output.txt" ] || fail "the capture holds no packets"
  cat "$OUT/capture-files.txt"
  head -5 "$OUT/capture-output.txt"

  say "stop: remove the annotation $KEY from $POD"
  run "${KUBECTL[@]}" -n "$NS" annotate pod "$POD" "$KEY-"
  poll "the capture files of $POD to be deleted" captures_gone
  say "e2e-test OK: outputs in $OUT"
}

cleanup() {
  need kind
  if cluster_exists; then
    run kind delete cluster --name "$CLUSTER_NAME"
  else
    say "no kind cluster $CLUSTER_NAME"
  fi
}

case "${1:-}" in
  setup) setup ;;
  deploy) deploy ;;
  e2e-test) e2e_test ;;
  cleanup) cleanup ;;
  *) echo "usage: $0 setup|deploy|e2e-test|cleanup" >&2; exit 2 ;;
esac
