# shellcheck shell=bash disable=SC2034  # (the variables are used by the scripts that source this)
# common.sh: layout of one local cluster instance, sourced by cluster.sh and by scripts that
# drive a cluster (test/demo.sh, test/bench/bench.sh). Everything is derived from the instance
# name, so that `test` (go test) and `demo` (make demo) can run side by side:
#
#   PODCAP_CLUSTER   instance name: test (default), demo, or any [a-z][a-z0-9]{0,7}
#   PODCAP_CACHE     build cache, shared by all instances (default <repo>/.cache, gitignored)
#
# Per instance (N = 1 for test, 2 for demo, 3..42 for other names, or PODCAP_CLUSTER_INDEX):
#   state dir  /tmp/podcap-<instance>             bridge  podcap-<instance>, MAC 02:70:63:00:NN:01
#   subnet     10.244.(100+N).0/24, gateway .1     services 10.96.(100+N).0/24
#   ports      27000+100N + 1 etcd, 2 etcd peer, 3 kube-apiserver, 4 kube-controller-manager,
#              5 kube-scheduler, 6 kubelet (on the gateway), 7 kubelet healthz, 8 traffic sink
#   cgroup     /podcap-<instance> in every cgroup v1 hierarchy (kubelet cgroupRoot)
#   node       podcap-<instance>

PODCAP_REPO=${PODCAP_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PODCAP_CACHE=${PODCAP_CACHE:-$PODCAP_REPO/.cache}
INSTANCE=${PODCAP_CLUSTER:-test}

if ! [[ $INSTANCE =~ ^[a-z][a-z0-9]{0,7}$ ]]; then
  echo "PODCAP_CLUSTER=$INSTANCE: want [a-z][a-z0-9]{0,7}" >&2
  exit 2
fi
case $INSTANCE in
  test) IDX=1 ;;
  demo) IDX=2 ;;
  *) IDX=$(( $(printf %s "$INSTANCE" | cksum | cut -d' ' -f1) % 40 + 3 )) ;;
esac
IDX=${PODCAP_CLUSTER_INDEX:-$IDX}
if ! [[ $IDX =~ ^[0-9]+$ ]] || [ "$IDX" -lt 1 ] || [ "$IDX" -gt 42 ]; then
  echo "PODCAP_CLUSTER_INDEX=$IDX: want 1..42" >&2
  exit 2
fi

K8S_VERSION=1.37.2
ETCD_VERSION=3.6.16
CRICTL_VERSION=1.37.0
HELM_VERSION=4.3.2

# build cache (shared by every instance; the same layout as shared/reference/local-cluster)
CACHE=$PODCAP_CACHE/cluster
BIN=$CACHE/bin
SRC=$CACHE/src
IMAGES=$CACHE/images

# instance state
CLUSTER_DIR=/tmp/podcap-$INSTANCE
RUN=$CLUSTER_DIR/run
PKI=$RUN/pki
LOG=$CLUSTER_DIR/logs
CRI_DIR=$CLUSTER_DIR/cri
SOCK=$CRI_DIR/containerd.sock
NETNS_DIR=$CLUSTER_DIR/containerd/state/io.containerd.grpc.v1.cri/netns  # pods' pinned netns (netns_mounts_under_state_dir)
KUBELET_DIR=$CLUSTER_DIR/kubelet
CAPTURE_DIR=$CLUSTER_DIR/captures           # suggested root for agents' --capture-dir
ADMIN_KUBECONFIG=$RUN/admin.kubeconfig
AGENT_KUBECONFIG=$RUN/agent.kubeconfig      # user $AGENT_USER: only ClusterRole podcap-agent
AGENT_SESSIONS=$RUN/agent-sessions          # session ids of agents started by tests (killed by down)
LOCK=/tmp/podcap-$INSTANCE.lock             # serialises up/down/agent-image of this instance

NODE=podcap-$INSTANCE
AGENT_USER=podcap-agent-under-test
BR=podcap-$INSTANCE
BR_MAC=$(printf '02:70:63:00:%02x:01' "$IDX")  # fixed, locally administered (see net_up)
NET3=10.244.$((100 + IDX))
GW=$NET3.1
SUBNET=$NET3.0/24
SVC_CIDR=10.96.$((100 + IDX)).0/24
PORT_BASE=$((27000 + 100 * IDX))
ETCD_PORT=$((PORT_BASE + 1))
ETCD_PEER_PORT=$((PORT_BASE + 2))
API_PORT=$((PORT_BASE + 3))
KCM_PORT=$((PORT_BASE + 4))
SCHED_PORT=$((PORT_BASE + 5))
KUBELET_PORT=$((PORT_BASE + 6))             # served on $GW
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 7))     # 127.0.0.1
SINK_PORT=$((PORT_BASE + 8))                # traffic sink on $GW (`traffic push` sends to it)
CG=podcap-$INSTANCE
CNI_NET=podcap-$INSTANCE

PAUSE_IMAGE=podcap.local/pause:1
WORKLOAD_IMAGE=podcap.local/workload:1
AGENT_IMAGE=ghcr.io/podcap/podcap-agent:dev  # the one image name (Makefile REGISTRY/IMAGE), tag dev: imported, never pulled

# Go: the official tarball's location unless go is on PATH already
command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export PATH

KUBECTL=("$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG")
CRICTL_CONFIG=$RUN/crictl.yaml             # written by up (the endpoints below)
CRICTL=("$BIN/crictl" --config "$CRICTL_CONFIG" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 10s)

now_ms() { date +%s%3N; }
# shellcheck source=test/cluster/proc.sh
source "$PODCAP_REPO/test/cluster/proc.sh"
