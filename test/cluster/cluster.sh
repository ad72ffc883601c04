#!/usr/bin/env bash
# cluster.sh: podcap's test bed, a real single-node Kubernetes v1.37.2 cluster on this machine:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd 1.6 (Debian, CRI) +
# runc + a CNI bridge, kubelet. Everything is built from the Go module proxy and Debian packages
# and cached; there is no registry and no Docker: images are built locally (test/cmd/imgbuild)
# and imported, pods use imagePullPolicy: Never. Needs root.
#
#   cluster.sh build              apt packages + every binary and image (idempotent, cached)
#   cluster.sh up                 build if needed, PKI, bridge, all components, the agent user's
#                                 RBAC (deploy/rbac.yaml) + kubeconfig, traffic sink; waits for
#                                 the node to be Ready. Idempotent: running parts are kept
#   cluster.sh down               delete pods (deployed agents first, with their grace period),
#                                 kill what is left of agents started by tests, stop everything,
#                                 unmount, remove bridge, cgroups and state (keeps PKI, logs and
#                                 the build cache), then check that nothing is left (exit 1 if so)
#   cluster.sh status             what runs, node condition
#   cluster.sh env                shell exports for a manual session (eval "$(cluster.sh env)")
#   cluster.sh leftovers          print what is left of this instance on the host; exit 1 if any
#   cluster.sh agent-image BIN    image ghcr.io/podcap/podcap-agent:dev from the static agent binary
#                                 BIN + Debian's tcpdump and nsenter + busybox; import it
#   cluster.sh agent-rbac         re-apply the agent user's RBAC (after a test deleted deploy/'s
#                                 ClusterRole) and check it again
#   cluster.sh guard              tear the cluster down when stdin reaches EOF before a line
#                                 "release" (the test bed's guard against a test binary that dies)
#
# Environment: PODCAP_CLUSTER (instance: test | demo | ..., default test), PODCAP_CACHE (build
# cache, default <repo>/.cache), PODCAP_GOCACHE / PODCAP_GOMODCACHE (Go caches for the builds,
# default: Go's own), PODCAP_NO_APT=1 (never call apt-get). Instances differ in state dir,
# bridge, subnet, ports and cgroup root (common.sh), so several can run at once.
#
# Host footprint outside the state dir /tmp/podcap-<instance>: bridge podcap-<instance> and the
# pods' veths; cgroup dirs /sys/fs/cgroup/<ctrl>/podcap-<instance>; containerd-1.6-hardcoded
# /run/containerd/s (shim sockets) and /var/lib/cni/results (libcni cache, files named after
# our network); the empty mount points /var/lib/kubelet/device-plugins and /var/log/containers
# (kubelet hardcodes both: in its private mount namespace they are bind mounts of per-instance
# dirs). `down` removes all of it (the shared dirs once no other kubelet runs and only if we
# created them). Host sysctls, iptables and ip_forward are never changed: kubelet runs in a
# private mount namespace in which the kernel tunables it insists on are bind-mounted files
# holding the values it expects; the bridge owns the gateway address so the CNI bridge plugin
# runs with isGateway=false and pods get no default route (they reach only the bridge subnet).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$HERE/common.sh"

log() { printf '[cluster %s %s] %s\n' "$INSTANCE" "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
T0=$(now_ms)
mark() {
  mkdir -p "$LOG"
  echo "$1 $(( $(now_ms) - T0 ))" >>"$LOG/timings.txt"
  log "$1 at +$(( $(now_ms) - T0 )) ms"
}
alive() { [ -f "$RUN/$1.pid" ] && pid_running "$(cat "$RUN/$1.pid")"; }
# wait_for NAME TIMEOUT_S CMD...: poll CMD every 100 ms until it succeeds, while process NAME lives
wait_for() {
  local name=$1 t=$2 end; shift 2
  end=$(( $(now_ms) + t * 1000 ))
  while [ "$(now_ms)" -lt "$end" ]; do
    "$@" >/dev/null 2>&1 && return 0
    [ -z "$name" ] || alive "$name" || { tail -25 "$LOG/$name.log" >&2; die "$name died"; }
    sleep 0.1
  done
  die "timeout after ${t}s: $*"
}

# with_lock FILE CMD...: run CMD holding an exclusive lock on FILE (the lock is held by flock,
# not by CMD, so daemons started by CMD do not inherit it)
with_lock() {
  local f=$1 rc=0; shift
  mkdir -p "$(dirname "$f")"
  flock -o -E 75 -w 1800 "$f" "$@" || rc=$?
  [ "$rc" -ne 75 ] || die "lock $f still held after 30 min"
  return "$rc"
}

# ---------------------------------------------------------------- packages
APT_PKGS=(containerd runc containernetworking-plugins tcpdump busybox-static util-linux iproute2
          openssl curl ca-certificates prometheus prometheus-alertmanager tshark wireshark-common)
deps() {
  local p missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -gt 0 ] || return 0
  [ "${PODCAP_NO_APT:-0}" = 1 ] && die "missing packages (PODCAP_NO_APT=1): ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root"
  log "apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update >"$LOG/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
    "${missing[@]}" >>"$LOG/apt.log" 2>&1 || { tail -20 "$LOG/apt.log" >&2; die "apt-get install failed"; }
}
need_go() { command -v go >/dev/null || die "go not found (put it on PATH; /usr/local/go/bin is tried)"; }

# ---------------------------------------------------------------- build (cached in $CACHE)
# stamped NAME VERSION: $BIN/NAME exists and was built for VERSION
stamped() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# A cold build compiles for many minutes: say which step runs, how many remain, and while a
# `go build -v` runs, every 30 s how many of its packages are compiled.
STEP=0 STEPS=0
step() { STEP=$((STEP + 1)); log "[$STEP/$STEPS] building $1${2:+ ($2)}"; }
# in_dir DIR CMD...: run CMD in DIR (in the subshell progress runs it in)
in_dir() { cd "$1" && shift && "$@"; }
# progress LOGFILE TOTAL CMD...: run CMD (a go build -v writing to LOGFILE) with a heartbeat;
# TOTAL is the package count of what it builds (packages already in the Go build cache are not
# printed by -v, so a warm build finishes below it)
progress() {
  local logf=$1 total=$2 pid t0 n=0 rc=0; shift 2
  t0=$(now_ms)
  "$@" >"$logf" 2>&1 &
  pid=$!
  while pid_running "$pid"; do
    sleep 1; n=$((n + 1))
    [ $((n % 30)) -ne 0 ] || log "  ... $(( ($(now_ms) - t0) / 1000 )) s, $(grep -c -v '^#' "$logf" 2>/dev/null || echo 0) of ${total} packages compiled"
  done
  wait "$pid" || rc=$?
  return "$rc"
}

go_env() {
  [ -z "${PODCAP_GOCACHE:-}" ] || export GOCACHE=$PODCAP_GOCACHE
  [ -z "${PODCAP_GOMODCACHE:-}" ] || export GOMODCACHE=$PODCAP_GOMODCACHE
  export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
  mkdir -p "$BIN" "$SRC" "$IMAGES" "$LOG"
}

# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet from a wrapper module
# (k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/...;
# those replaces are ignored for a dependency, so every one is re-pointed at its published tag)
build_k8s() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet) todo=() c minor patch staging kmod gover ldf k t0
  for c in "${cmds[@]}"; do stamped "$c" "v$K8S_VERSION" || todo+=("$c"); done
  [ "${#todo[@]}" -gt 0 ] || return 0
  need_go
  IFS=. read -r _ minor patch <<<"$K8S_VERSION"
  staging="v0.$minor.$patch"
  local W=$SRC/k8sbuild
  mkdir -p "$W"
  if [ "$(cat "$W/.version" 2>/dev/null)" != "$K8S_VERSION" ]; then
    t0=$(now_ms)
    kmod=$(cd / && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
    [ -f "$kmod" ] || die "go mod download k8s.io/kubernetes@v$K8S_VERSION gave no go.mod"
    gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kmod")
    {
      printf 'module local/k8sbuild\n\ngo %s\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$gover" "$K8S_VERSION"
      awk -v v="$staging" '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print "\t" $1 " => " $1 " " v}' "$kmod" | sort -u
      printf ')\n'
    } >"$W/go.mod"
    rm -f "$W/go.sum"
    cat >"$W/tools.go" <<'EOF_GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
EOF_GO
    (cd "$W" && go mod tidy) >"$LOG/build-k8s-tidy.log" 2>&1 || { tail -20 "$LOG/build-k8s-tidy.log" >&2; die "k8s go mod tidy"; }
    echo "$K8S_VERSION" >"$W/.version"
    log "k8s wrapper module ready in $(( $(now_ms) - t0 )) ms"
  fi
  ldf="-s -w"
  for k in "gitVersion=v$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
           "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ldf="$ldf -X k8s.io/component-base/version.$k -X k8s.io/client-go/pkg/version.$k"
  done
  for c in "${todo[@]}"; do
    t0=$(now_ms)
    step "$c" "minutes when cold"
    k=$(cd "$W" && go list -deps "k8s.io/kubernetes/cmd/$c" 2>/dev/null | wc -l)
    progress "$LOG/build-$c.log" "$k" in_dir "$W" go build -v -ldflags "$ldf" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c" ||
      { tail -20 "$LOG/build-$c.log" >&2; die "build $c"; }
    mv "$BIN/$c.tmp" "$BIN/$c"; stamp "$c" "v$K8S_VERSION"
    log "built $c in $(( $(now_ms) - t0 )) ms"
  done
}

build_etcd() {
  stamped etcd "v$ETCD_VERSION" && return 0
  need_go
  local W=$SRC/etcdbuild t0
  mkdir -p "$W"
  cat >"$W/main.go" <<'EOF_GO'
// Command etcd wraps the upstream etcd server entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF_GO
  printf 'module local/etcdbuild\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" >"$W/go.mod"
  rm -f "$W/go.sum"
  t0=$(now_ms)
  step etcd
  (cd "$W" && go mod tidy) >"$LOG/build-etcd-tidy.log" 2>&1 || { tail -20 "$LOG/build-etcd-tidy.log" >&2; die "etcd go mod tidy"; }
  progress "$LOG/build-etcd.log" "$(cd "$W" && go list -deps . | wc -l)" in_dir "$W" go build -v -ldflags "-s -w" -o "$BIN/etcd.tmp" . ||
    { tail -20 "$LOG/build-etcd.log" >&2; die "build etcd"; }
  mv "$BIN/etcd.tmp" "$BIN/etcd"; stamp etcd "v$ETCD_VERSION"
  log "built etcd in $(( $(now_ms) - t0 )) ms"
}

# go_install NAME VERSION TOTAL LDFLAGS PACKAGE: `go install PACKAGE@vVERSION` (static) into
# $BIN as NAME, stamped VERSION, with progress. TOTAL approximates its package count: go list
# cannot count the packages of a module outside any build list.
go_install() {
  local name=$1 version=$2 total=$3 ldflags=$4 pkg=$5 t0
  stamped "$name" "v$version" && return 0
  need_go
  t0=$(now_ms)
  step "$name"
  progress "$LOG/build-$name.log" "$total" in_dir / env CGO_ENABLED=0 GOBIN="$BIN" \
    go install -v -ldflags "$ldflags" "$pkg@v$version" || { tail -20 "$LOG/build-$name.log" >&2; die "build $name"; }
  stamp "$name" "v$version"
  log "built $name in $(( $(now_ms) - t0 )) ms"
}

build_crictl() {
  go_install crictl "$CRICTL_VERSION" "about 380" "-s -w" sigs.k8s.io/cri-tools/cmd/crictl
}

# pause (test/cluster/pause) and podcap-imgbuild (test/cmd/imgbuild) from this repository.
# pause keeps the reference's stamp (bump PAUSE_STAMP when its source changes); imgbuild is
# stamped with a hash of its sources.
PAUSE_STAMP=1
imgbuild_stamp() {
  { cat "$PODCAP_REPO"/test/cmd/imgbuild/*.go; grep go-containerregistry "$PODCAP_REPO/go.mod"; } | sha256sum | cut -c1-16
}
build_repo_tools() {
  local t0 s
  s=$(imgbuild_stamp)
  if ! stamped pause "$PAUSE_STAMP" || ! stamped podcap-imgbuild "$s"; then
    need_go
    t0=$(now_ms)
    step "pause + podcap-imgbuild"
    (cd "$PODCAP_REPO" &&
      CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$BIN/pause.tmp" ./test/cluster/pause &&
      CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$BIN/podcap-imgbuild.tmp" ./test/cmd/imgbuild) \
      >"$LOG/build-repo-tools.log" 2>&1 || { tail -20 "$LOG/build-repo-tools.log" >&2; die "build pause/imgbuild"; }
    stamped pause "$PAUSE_STAMP" || { mv "$BIN/pause.tmp" "$BIN/pause"; stamp pause "$PAUSE_STAMP"; }
    mv "$BIN/podcap-imgbuild.tmp" "$BIN/podcap-imgbuild"; stamp podcap-imgbuild "$s"
    rm -f "$BIN/pause.tmp"
    log "built pause + podcap-imgbuild in $(( $(now_ms) - t0 )) ms"
  fi
}

# image NAME KEY IMGBUILD-ARGS...: $IMAGES/NAME.tar, rebuilt only when KEY changes
image() {
  local name=$1 key=$2; shift 2
  [ -f "$IMAGES/$name.tar" ] && [ "$(cat "$IMAGES/$name.key" 2>/dev/null)" = "$key" ] && return 0
  "$BIN/podcap-imgbuild" -out "$IMAGES/$name.tar" "$@" >&2 || die "imgbuild $name"
  echo "$key" >"$IMAGES/$name.key"
}

# The workload: busybox + /usr/local/bin/traffic. `traffic ping` (the default command) pings the
# bridge every 0.2 s until SIGTERM; `traffic push BYTES [COUNT]` sends COUNT x BYTES of zeros to
# the sink on the bridge with nc (busybox wget segfaults on bookworm: static glibc + NSS).
# The instance's gateway and sink port are baked in (TRAFFIC_GW / TRAFFIC_PORT override them).
write_traffic_script() {
  cat <<EOF
#!/bin/sh
# traffic: steady or bulk traffic from a pod to the bridge $GW (nothing leaves pod <-> bridge)
GW=\${TRAFFIC_GW:-$GW}
PORT=\${TRAFFIC_PORT:-$SINK_PORT}
case "\$1" in
ping)
  echo "traffic: ping \$GW every 0.2 s from \$(ip -4 -o addr show eth0 2>/dev/null | awk '{print \$4}')"
  p=
  trap '[ -n "\$p" ] && kill \$p 2>/dev/null; exit 0' TERM INT
  while :; do
    ping -i 0.2 -q "\$GW" >/dev/null 2>&1 &
    p=\$!
    wait \$p
    sleep 0.2
  done ;;
push)
  bytes=\${2:-1000000}; count=\${3:-1}; i=0
  while [ \$i -lt \$count ]; do
    head -c "\$bytes" /dev/zero | nc -w 5 "\$GW" "\$PORT" || { echo "traffic: push \$i failed" >&2; exit 1; }
    i=\$((i + 1))
  done
  echo "traffic: pushed \$count x \$bytes bytes to \$GW:\$PORT" ;;
*)
  echo "usage: traffic ping | traffic push BYTES [COUNT]" >&2; exit 2 ;;
esac
EOF
}

build_images() {
  local ib bb
  ib=$(cat "$BIN/.podcap-imgbuild.version")
  bb=$(sha256sum </bin/busybox | cut -c1-16)
  image pause "$ib $(cat "$BIN/.pause.version") $(sha256sum <"$BIN/pause" | cut -c1-16)" \
    -ref "$PAUSE_IMAGE" -file "$BIN/pause=/pause" -entrypoint /pause
  write_traffic_script >"$IMAGES/traffic-$INSTANCE"
  chmod 755 "$IMAGES/traffic-$INSTANCE"
  image "workload-$INSTANCE" "$ib $bb $(sha256sum <"$IMAGES/traffic-$INSTANCE" | cut -c1-16)" \
    -ref "$WORKLOAD_IMAGE" -file /bin/busybox=/bin/busybox -busybox-links /bin/busybox \
    -file "$IMAGES/traffic-$INSTANCE=/usr/local/bin/traffic" -cmd "/usr/local/bin/traffic ping"
}

# helm (helm lint/template and the chart's install test), with its version in `helm version`
build_helm() {
  go_install helm "$HELM_VERSION" "about 1500" "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" helm.sh/helm/v4/cmd/helm
}

# count_steps: how many binaries build_locked still has to build
count_steps() {
  local c n=0
  stamped etcd "v$ETCD_VERSION" || n=$((n + 1))
  stamped crictl "v$CRICTL_VERSION" || n=$((n + 1))
  { stamped pause "$PAUSE_STAMP" && stamped podcap-imgbuild "$(imgbuild_stamp)"; } || n=$((n + 1))
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
    stamped "$c" "v$K8S_VERSION" || n=$((n + 1))
  done
  stamped helm "v$HELM_VERSION" || n=$((n + 1))
  echo "$n"
}

build_locked() {
  local t0
  t0=$(now_ms)
  go_env
  STEPS=$(count_steps)
  [ "$STEPS" -eq 0 ] || log "$STEPS binaries to build into $BIN (cold: about 17 min on an idle 2-core machine, more on a busy one; progress every 30 s)"
  build_etcd
  build_crictl
  build_repo_tools
  build_k8s
  build_helm
  build_images
  log "build checked in $(( $(now_ms) - t0 )) ms (cache $CACHE)"
}

build() {
  mkdir -p "$LOG" "$CACHE"
  deps
  # the cache is shared by every instance: one build at a time
  with_lock "$CACHE/.build.lock" bash "$HERE/cluster.sh" _build
}

# agent-image BINARY: ghcr.io/podcap/podcap-agent:dev = the static agent + Debian's tcpdump and
# nsenter with every shared library ldd lists + busybox (sh, cat, ls for kubectl exec) + passwd
# and group with root and tcpdump. Cached by content; imported into this instance's containerd.
agent_image() {
  local bin=${1:-} f lib key out args=() libs
  if [ -z "$bin" ] || [ ! -f "$bin" ]; then die "usage: cluster.sh agent-image BINARY (a static podcap-agent)"; fi
  bin=$(readlink -f "$bin")
  ldd "$bin" >/dev/null 2>&1 && die "$bin is dynamically linked: build it with CGO_ENABLED=0"
  alive containerd || die "cluster $INSTANCE is not up (cluster.sh up)"
  go_env
  build_repo_tools
  mkdir -p "$IMAGES/agent-etc"
  { echo 'root:x:0:0:root:/root:/bin/sh'
    getent passwd tcpdump || echo 'tcpdump:x:102:105::/nonexistent:/usr/sbin/nologin'; } >"$IMAGES/agent-etc/passwd"
  { echo 'root:x:0:'
    getent group tcpdump || echo 'tcpdump:x:105:'; } >"$IMAGES/agent-etc/group"
  args=(-ref "$AGENT_IMAGE" -entrypoint /usr/local/bin/podcap-agent
        -file "$bin=/usr/local/bin/podcap-agent"
        -file /usr/bin/tcpdump=/usr/bin/tcpdump -file /usr/bin/nsenter=/usr/bin/nsenter
        -file /bin/busybox=/bin/busybox -busybox-links /bin/busybox
        -file "$IMAGES/agent-etc/passwd=/etc/passwd" -file "$IMAGES/agent-etc/group=/etc/group"
        -dir /var/lib/podcap/captures -dir /run/containerd)
  # each library at the path ldd names (what the binaries' DT_NEEDED + ld.so's default dirs
  # resolve), with the content of the file it points to
  libs=$(ldd /usr/bin/tcpdump /usr/bin/nsenter |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u)
  for lib in $libs; do args+=(-file "$(readlink -f "$lib")=$lib"); done
  key=$( { cat "$BIN/.podcap-imgbuild.version"; printf '%s\n' "${args[@]}"
           for f in "$bin" /usr/bin/tcpdump /usr/bin/nsenter /bin/busybox $libs \
                    "$IMAGES/agent-etc/passwd" "$IMAGES/agent-etc/group"; do sha256sum <"$f"; done; } |
         sha256sum | cut -c1-16)
  out=$IMAGES/podcap-agent-$key.tar
  if [ ! -f "$out" ]; then
    "$BIN/podcap-imgbuild" -out "$out" "${args[@]}" >&2 || die "imgbuild podcap-agent"
    # keep the four newest agent images
    find "$IMAGES" -maxdepth 1 -name 'podcap-agent-*.tar' -printf '%T@ %p\n' | sort -rn | tail -n +5 |
      cut -d' ' -f2- | xargs -r rm -f
  fi
  touch "$out"
  ctr -a "$SOCK" -n k8s.io images import "$out" >>"$LOG/image-import.log" 2>&1 || die "import $out"
  "${CRICTL[@]}" inspecti "$AGENT_IMAGE" >/dev/null || die "$AGENT_IMAGE not visible through CRI"
  log "imported $AGENT_IMAGE from $out"
  echo "$out"
}

# ---------------------------------------------------------------- pki + kubeconfigs
kubeconfig() { # user -> $RUN/<user>.kubeconfig from $PKI/<user>.{crt,key}
  cat >"$RUN/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podcap-$INSTANCE
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority-data: "$(base64 -w0 <"$PKI/ca.crt")"}
users:
- name: $1
  user: {client-certificate-data: "$(base64 -w0 <"$PKI/$1.crt")", client-key-data: "$(base64 -w0 <"$PKI/$1.key")"}
contexts:
- name: podcap-$INSTANCE
  context: {cluster: podcap-$INSTANCE, user: $1}
current-context: podcap-$INSTANCE
EOF
  chmod 600 "$RUN/$1.kubeconfig"
}

gen_pki() {
  local want="$NODE $GW $SVC_CIDR $API_PORT $AGENT_USER apiserver-on-gw"
  if [ "$(cat "$PKI/.done" 2>/dev/null)" != "$want" ]; then
    rm -rf "$PKI"
    mkdir -p "$PKI"
    (
      cd "$PKI"
      openssl genrsa -out ca.key 2048 2>/dev/null
      openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=podcap-$INSTANCE-ca" -out ca.crt
      cert() { # name CN O(or -) EKU SAN(or -)
        openssl genrsa -out "$1.key" 2048 2>/dev/null
        { echo 'basicConstraints=CA:FALSE'; echo 'keyUsage=critical,digitalSignature,keyEncipherment'
          echo "extendedKeyUsage=$4"; [ "$5" = - ] || echo "subjectAltName=$5"; } >"$1.ext"
        local subj="/CN=$2"; [ "$3" = - ] || subj="/O=$3/CN=$2"
        openssl req -new -key "$1.key" -subj "$subj" -out "$1.csr"
        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
          -extfile "$1.ext" -out "$1.crt" 2>/dev/null
        rm -f "$1.csr" "$1.ext"
      }
      cert apiserver kube-apiserver - serverAuth \
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$GW,IP:${SVC_CIDR%.*}.1"
      cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth -
      cert admin admin system:masters clientAuth -
      cert kcm system:kube-controller-manager - clientAuth -
      cert scheduler system:kube-scheduler - clientAuth -
      cert kubelet "system:node:$NODE" system:nodes clientAuth -
      cert kubelet-serving "$NODE" - serverAuth "DNS:$NODE,IP:$GW"
      # the agent under test: a plain user, rights only through ClusterRole podcap-agent
      cert agent "$AGENT_USER" - clientAuth -
      openssl genrsa -out sa.key 2048 2>/dev/null
      openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
      # front-proxy (aggregation) CA: without it kcm and scheduler log a missing requestheader CA
      openssl genrsa -out front-proxy-ca.key 2048 2>/dev/null
      openssl req -x509 -new -nodes -key front-proxy-ca.key -sha256 -days 3650 -subj "/CN=podcap-$INSTANCE-front-proxy-ca" -out front-proxy-ca.crt
      openssl genrsa -out front-proxy-client.key 2048 2>/dev/null
      printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth' >fp.ext
      openssl req -new -key front-proxy-client.key -subj "/CN=front-proxy-client" -out fp.csr
      openssl x509 -req -in fp.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial -days 3650 -sha256 \
        -extfile fp.ext -out front-proxy-client.crt 2>/dev/null
      rm -f fp.csr fp.ext
      chmod 600 ./*.key
    )
    echo "$want" >"$PKI/.done"
  fi
  local u
  for u in admin kcm scheduler kubelet agent; do kubeconfig "$u"; done
}

# ---------------------------------------------------------------- host network, cgroups, dirs
net_up() {
  local other
  other=$(ip -o -4 addr show | awk -v a="$GW/" -v b="$BR" 'index($4, a) == 1 && $2 != b {print $2}')
  [ -z "$other" ] || die "$GW is already on $other (another cluster with PODCAP_CLUSTER_INDEX=$IDX?)"
  ip link show "$BR" >/dev/null 2>&1 || ip link add "$BR" type bridge
  # a fixed MAC: otherwise the bridge takes the lowest MAC of its ports and changes it whenever
  # a pod's veth comes or goes, and pods that cached the old gateway MAC lose the bridge until
  # their ARP entry expires (seen as `nc: timed out` from pods older than the last change)
  ip link set "$BR" address "$BR_MAC"
  ip addr replace "$GW/24" dev "$BR"
  ip link set "$BR" up
}

cgroups_up() { # kubelet's cgroupRoot must exist in every v1 hierarchy it checks
  local c
  for c in /sys/fs/cgroup/*/; do
    c=${c%/}
    case $(basename "$c") in unified) continue ;; esac
    mkdir -p "$c/$CG"
    if [ -f "$c/cpuset.cpus" ]; then
      [ -n "$(cat "$c/$CG/cpuset.cpus")" ] || cat "$c/cpuset.cpus" >"$c/$CG/cpuset.cpus"
      [ -n "$(cat "$c/$CG/cpuset.mems")" ] || cat "$c/cpuset.mems" >"$c/$CG/cpuset.mems"
    fi
  done
}

# Host dirs that kubelet and containerd 1.6 hardcode. The first two are mount points for
# per-instance dirs in kubelet's mount namespace (start_kubelet); the others containerd creates.
# Every level that did not exist is noted in $HOST_DIRS_NOTE (shared by all instances) and
# removed, if empty, by the last instance to go down.
HOST_MOUNT_DIRS=(/var/lib/kubelet/device-plugins /var/log/containers)
HOST_OTHER_DIRS=(/run/containerd/s /var/lib/cni/results)
HOST_DIRS_NOTE=/tmp/podcap-cluster-host-dirs
host_dirs_up() {
  local d p
  for d in "${HOST_MOUNT_DIRS[@]}" "${HOST_OTHER_DIRS[@]}"; do
    p=$d
    while [ ! -e "$p" ]; do echo "$p" >>"$HOST_DIRS_NOTE"; p=$(dirname "$p"); done
  done
  mkdir -p "${HOST_MOUNT_DIRS[@]}"
}
host_dirs_down() {
  local d
  rm -f "/var/lib/cni/results/$CNI_NET"-*
  [ -f "$HOST_DIRS_NOTE" ] || return 0
  # in use while any kubelet runs or any component of another instance does (up creates the
  # dirs only once its control plane runs; down checks only after stopping everything, so
  # of two instances going down together the second one removes them)
  local busy="" f
  pgrep -x kubelet >/dev/null && busy="a kubelet runs"
  for f in /tmp/podcap-*/run/*.pid; do
    [ -f "$f" ] && [ "${f#"$RUN/"}" = "$f" ] && pid_running "$(cat "$f")" && busy="$f runs"
  done
  if [ -n "$busy" ]; then
    log "$busy: keeping the shared host dirs listed in $HOST_DIRS_NOTE"
    return 0
  fi
  sort -ru "$HOST_DIRS_NOTE" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  rm -f "$HOST_DIRS_NOTE"
}

# ---------------------------------------------------------------- control plane
start_etcd() {
  alive etcd && return 0
  "$BIN/etcd" --name=podcap-"$INSTANCE" --data-dir="$RUN/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="podcap-$INSTANCE=http://127.0.0.1:$ETCD_PEER_PORT" --log-level=warn --unsafe-no-fsync \
    >"$LOG/etcd.log" 2>&1 &
  echo $! >"$RUN/etcd.pid"
  wait_for etcd 60 sh -c "curl -fsS http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"
  mark etcd_healthy
}

# The API server listens on every address (bind 0.0.0.0), so that pods reach it on the bridge's
# gateway address too (its certificate names $GW): an agent on the pod network
# (deploy/pod-network/) has no loopback of the node and this cluster no kube-proxy.
start_apiserver() {
  alive kube-apiserver && return 0
  "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SVC_CIDR" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --profiling=false \
    >"$LOG/kube-apiserver.log" 2>&1 &
  echo $! >"$RUN/kube-apiserver.pid"
  wait_for kube-apiserver 120 sh -c "[ \"\$(curl -fsS --cacert $PKI/ca.crt --cert $PKI/admin.crt --key $PKI/admin.key https://127.0.0.1:$API_PORT/readyz)\" = ok ]"
  mark apiserver_ready
}

# The agent under test is the plain user $AGENT_USER whose only rights come from ClusterRole
# podcap-agent: the project's deploy/rbac.yaml when present (it also binds the ServiceAccount
# of the DaemonSet), else the same rules applied here; and from Role podcap-agent-alerts in
# podcap-system on the CaptureAlert CRD (alert_rbac); then prove the limits with `auth can-i`.
agent_rbac() {
  wait_for kube-apiserver 60 "${KUBECTL[@]}" get clusterrole cluster-admin
  if [ -f "$PODCAP_REPO/deploy/rbac.yaml" ]; then
    "${KUBECTL[@]}" apply -f "$PODCAP_REPO/deploy/rbac.yaml" >/dev/null || die "kubectl apply -f deploy/rbac.yaml"
  else
    "${KUBECTL[@]}" apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: podcap-agent}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [events], verbs: [create, patch]}
EOF
  fi
  "${KUBECTL[@]}" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: $AGENT_USER}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: podcap-agent}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: $AGENT_USER}]
EOF
  local G=("$BIN/kubectl" --kubeconfig "$AGENT_KUBECONFIG") v
  # RBAC is cached in the authorizer: poll until the binding is effective, then prove the limits
  wait_for "" 30 sh -c "[ \"\$('$BIN/kubectl' --kubeconfig '$AGENT_KUBECONFIG' auth can-i watch pods --all-namespaces)\" = yes ]"
  for v in "get pods" "list pods" "create events" "patch events"; do
    # shellcheck disable=SC2086  # $v is verb + resource
    [ "$("${G[@]}" auth can-i $v -n default 2>/dev/null)" = yes ] || die "agent user cannot $v"
  done
  for v in "delete pods" "patch pods" "update pods" "create pods" "create pods --subresource=exec" \
           "get secrets" "list nodes" "get configmaps" "delete events" "list events" "create clusterrolebindings" \
           "create events.events.k8s.io"; do
    # shellcheck disable=SC2086
    [ "$("${G[@]}" auth can-i $v -n default 2>/dev/null || true)" = no ] || die "agent user RBAC too wide: can $v"
  done
  alert_rbac
  mark agent_rbac
}

# alert_rbac: the CaptureAlert CRD (Established) and Role podcap-agent-alerts in podcap-system,
# bound to the ServiceAccount (deploy/alert-rbac.yaml) and to $AGENT_USER; then prove that the
# agent user can do exactly the store's verbs on capturealerts in podcap-system and nothing
# with them elsewhere. A test that deleted deploy/ (`kubectl delete -k`) may leave the
# namespace or the CRD terminating: wait for them to go before creating them again.
alert_rbac() {
  local ns=podcap-system crd=capturealerts.podcap.io r=capturealerts.podcap.io
  local G=("$BIN/kubectl" --kubeconfig "$AGENT_KUBECONFIG") A="'$BIN/kubectl' --kubeconfig '$ADMIN_KUBECONFIG'" v
  wait_for "" 120 sh -c "[ \"\$($A get namespace $ns -o jsonpath='{.status.phase}' 2>/dev/null)\" = Active ] || $A create namespace $ns"
  wait_for "" 120 sh -c "[ -z \"\$($A get crd $crd --ignore-not-found -o jsonpath='{.metadata.deletionTimestamp}')\" ]"
  "${KUBECTL[@]}" apply -f "$PODCAP_REPO/deploy/crd/capturealerts.yaml" >/dev/null || die "kubectl apply -f deploy/crd/capturealerts.yaml"
  "${KUBECTL[@]}" wait --for=condition=Established --timeout=60s "crd/$crd" >/dev/null || die "CRD $crd not Established"
  "${KUBECTL[@]}" apply -f "$PODCAP_REPO/deploy/alert-rbac.yaml" >/dev/null || die "kubectl apply -f deploy/alert-rbac.yaml"
  "${KUBECTL[@]}" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $AGENT_USER-alerts, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: podcap-agent-alerts}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: $AGENT_USER}]
EOF
  wait_for "" 30 sh -c "[ \"\$('$BIN/kubectl' --kubeconfig '$AGENT_KUBECONFIG' auth can-i watch $r -n $ns)\" = yes ]"
  for v in get list watch create patch delete; do
    [ "$("${G[@]}" auth can-i "$v" "$r" -n "$ns" 2>/dev/null)" = yes ] || die "agent user cannot $v $r in $ns"
    [ "$("${G[@]}" auth can-i "$v" "$r" -n default 2>/dev/null || true)" = no ] || die "agent user RBAC too wide: can $v $r in default"
  done
  for v in "update $r" "deletecollection $r" "patch $r --subresource=status" "list $r --all-namespaces" \
           "delete customresourcedefinitions" "patch customresourcedefinitions" "create roles" "create rolebindings"; do
    # shellcheck disable=SC2086  # $v is verb + resource + flags
    [ "$("${G[@]}" auth can-i $v -n "$ns" 2>/dev/null || true)" = no ] || die "agent user RBAC too wide: can $v in $ns"
  done
}

start_kcm() {
  alive kube-controller-manager && return 0
  "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/kcm.kubeconfig" \
    --authentication-kubeconfig="$RUN/kcm.kubeconfig" --authorization-kubeconfig="$RUN/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --leader-elect=false \
    --controllers='*' \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SVC_CIDR" \
    --flex-volume-plugin-dir="$CLUSTER_DIR/kubelet-plugins/volume/exec" \
    --profiling=false \
    >"$LOG/kube-controller-manager.log" 2>&1 &
  echo $! >"$RUN/kube-controller-manager.pid"
  wait_for kube-controller-manager 60 sh -c "[ \"\$(curl -fsSk https://127.0.0.1:$KCM_PORT/healthz)\" = ok ]"
  mark kcm_healthz
}

start_scheduler() {
  alive kube-scheduler && return 0
  "$BIN/kube-scheduler" \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
    --leader-elect=false --profiling=false \
    >"$LOG/kube-scheduler.log" 2>&1 &
  echo $! >"$RUN/kube-scheduler.pid"
  wait_for kube-scheduler 60 sh -c "[ \"\$(curl -fsSk https://127.0.0.1:$SCHED_PORT/healthz)\" = ok ]"
  mark scheduler_healthz
}

# ---------------------------------------------------------------- containerd (CRI)
write_containerd_config() {
  mkdir -p "$CRI_DIR" "$CLUSTER_DIR/cni/net.d" "$CLUSTER_DIR/containerd"
  printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\n' "$SOCK" "$SOCK" >"$CRICTL_CONFIG"
  cat >"$CLUSTER_DIR/containerd/config.toml" <<EOF
# containerd 1.6 (Debian bookworm) as the CRI runtime of kubelet $NODE, living under
# $CLUSTER_DIR (except the hardcoded shim socket dir /run/containerd/s).
version = 2
root = "$CLUSTER_DIR/containerd/root"
state = "$CLUSTER_DIR/containerd/state"
oom_score = 0

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  level = "info"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$CLUSTER_DIR/containerd/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    disable_apparmor = true
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    netns_mounts_under_state_dir = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    systemd_cgroup = false
    # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below containerd's own (0)
    restrict_oom_score_adj = true

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$CLUSTER_DIR/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$CLUSTER_DIR/containerd/state/runc"
EOF
  # bridge pre-created with the gateway address -> isGateway=false: ip_forward untouched,
  # pods get no default route and can only reach $SUBNET (pod <-> host bridge)
  cat >"$CLUSTER_DIR/cni/net.d/10-podcap.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BR",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_DIR/cni/ipam",
        "ranges": [[{"subnet": "$SUBNET", "rangeStart": "$NET3.10", "rangeEnd": "$NET3.250", "gateway": "$GW"}]]
      }
    }
  ]
}
EOF
}

start_containerd() {
  alive containerd && return 0
  write_containerd_config
  # containerd pins pods' network namespaces (bind mounts) in $NETNS_DIR: a shared mount, as
  # /run is on a systemd host, so that a DaemonSet mounting it with HostToContainer
  # propagation sees the namespaces of pods created after it started
  mkdir -p "$NETNS_DIR"
  if ! awk -v d="$NETNS_DIR" '$5 == d' /proc/self/mountinfo | grep -q shared:; then
    mount --bind "$NETNS_DIR" "$NETNS_DIR"
    mount --make-shared "$NETNS_DIR"
  fi
  containerd --config "$CLUSTER_DIR/containerd/config.toml" >"$LOG/containerd.log" 2>&1 &
  echo $! >"$RUN/containerd.pid"
  wait_for containerd 60 "${CRICTL[@]}" info
  mark containerd_cri_ready
  local i
  for i in pause "workload-$INSTANCE"; do
    ctr -a "$SOCK" -n k8s.io images import "$IMAGES/$i.tar" >>"$LOG/image-import.log" 2>&1 || die "import $i.tar"
  done
  mark images_imported
}

# ---------------------------------------------------------------- kubelet
write_kubelet_config() {
  mkdir -p "$KUBELET_DIR/device-plugins" "$CLUSTER_DIR/pod-logs" "$CLUSTER_DIR/container-logs" "$RUN/sysctl"
  printf 'nameserver %s\nsearch local\n' "$GW" >"$RUN/resolv.conf"
  cat >"$RUN/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# --- runtime + cgroups (cgroup v1 hybrid, no systemd, no CAP_SYS_RESOURCE)
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
failCgroupV1: false            # 1.37 refuses cgroup v1 hosts by default
cgroupRoot: /$CG
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
oomScoreAdj: 0                 # default -999 needs CAP_SYS_RESOURCE
failSwapOn: false
protectKernelDefaults: false   # kubelet sees the expected values through bind-mounted files (start_kubelet)
makeIPTablesUtilChains: false  # keep kubelet out of the host's iptables
# --- serving (apiserver -> kubelet for logs/exec) and authn/z
address: $GW
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
# --- host paths kept under $CLUSTER_DIR
podLogsDir: $CLUSTER_DIR/pod-logs
volumePluginDir: $CLUSTER_DIR/kubelet-plugins/volume/exec
resolvConf: $RUN/resolv.conf
clusterDomain: cluster.local
hairpinMode: none
# --- never evict or GC the locally imported images
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# --- snappier local loop
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
serializeImagePulls: false
EOF
  # the six kernel tunables kubelet (KernelTunableModify) would otherwise rewrite host-wide
  local kv k v
  : >"$RUN/sysctl/list"
  for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
            kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
    k=${kv%=*}; v=${kv#*=}
    [ "$(cat "/proc/sys/$k")" = "$v" ] && continue
    echo "$v" >"$RUN/sysctl/${k//\//.}"
    echo "$k" >>"$RUN/sysctl/list"
  done
}

start_kubelet() {
  alive kubelet && return 0
  write_kubelet_config
  # kubelet bind-mounts its root dir onto itself rshared; do it here in the host namespace so
  # that kubelet's private mount namespace below stays a peer (volume mounts propagate)
  if ! awk -v d="$KUBELET_DIR" '$5 == d' /proc/self/mountinfo | grep -q shared:; then
    mount --bind "$KUBELET_DIR" "$KUBELET_DIR"
    mount --make-rshared "$KUBELET_DIR"
  fi
  # In kubelet's own mount namespace: the sysctl files it would write, and the two host dirs it
  # hardcodes, are bind mounts of files and dirs of this instance. The mounts holding them are
  # made private there first, so none of this propagates to the host even where / is shared.
  # shellcheck disable=SC2016
  unshare -m --propagation unchanged -- /bin/sh -c '
    set -e
    R=$1 DP=$2 CL=$3; shift 3
    mkdir -p /var/lib/kubelet/device-plugins /var/log/containers
    for t in /proc/sys /var/lib/kubelet/device-plugins /var/log/containers; do
      mount --make-private "$(findmnt -n -o TARGET -T "$t")"
    done
    while read -r k; do mount --bind "$R/$(echo "$k" | tr / .)" "/proc/sys/$k"; done <"$R/list"
    mount --bind "$DP" /var/lib/kubelet/device-plugins
    mount --bind "$CL" /var/log/containers
    exec "$@"' sh "$RUN/sysctl" "$KUBELET_DIR/device-plugins" "$CLUSTER_DIR/container-logs" \
    "$BIN/kubelet" \
      --config="$RUN/kubelet-config.yaml" \
      --kubeconfig="$RUN/kubelet.kubeconfig" \
      --root-dir="$KUBELET_DIR" \
      --cert-dir="$KUBELET_DIR/pki" \
      --hostname-override="$NODE" \
      --node-ip="$GW" \
      --v=2 \
    >"$LOG/kubelet.log" 2>&1 &
  echo $! >"$RUN/kubelet.pid"
  wait_for kubelet 60 curl -fsS "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz"
  mark kubelet_healthz
  wait_for kubelet 60 "${KUBECTL[@]}" get node "$NODE"
  wait_for kubelet 120 sh -c "[ \"\$('$BIN/kubectl' --kubeconfig '$ADMIN_KUBECONFIG' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
  mark node_ready
}

# traffic sink on the bridge address: every connection's bytes go to /dev/null
start_sink() {
  alive sink && return 0
  printf '#!/bin/sh\nexec cat >/dev/null\n' >"$RUN/sink.sh"
  chmod 755 "$RUN/sink.sh"
  busybox nc -ll -p "$SINK_PORT" "$GW" -e "$RUN/sink.sh" >"$LOG/sink.log" 2>&1 &
  echo $! >"$RUN/sink.pid"
  wait_for sink 10 sh -c "ss -ltn | grep -q ' $GW:$SINK_PORT '"
  mark sink_listening
}

up() {
  [ "$(id -u)" = 0 ] || die "up needs root"
  mkdir -p "$RUN" "$LOG"
  : >"$LOG/timings.txt"
  mark start
  build; mark build_checked
  gen_pki; mark pki
  net_up; cgroups_up
  start_etcd
  start_apiserver
  agent_rbac
  start_kcm
  start_scheduler
  host_dirs_up
  start_containerd
  start_kubelet
  start_sink
  wait_for "" 60 "${KUBECTL[@]}" get serviceaccount default -n default
  mark up
  "${KUBECTL[@]}" get nodes -o wide >&2
  log "up: admin kubeconfig $ADMIN_KUBECONFIG, agent kubeconfig $AGENT_KUBECONFIG, CRI unix://$SOCK"
}

status() {
  local n rc=0
  echo "instance $INSTANCE: $CLUSTER_DIR, bridge $BR $GW/24, apiserver https://127.0.0.1:$API_PORT"
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet sink; do
    if alive "$n"; then echo "$n: running (pid $(cat "$RUN/$n.pid"))"; else echo "$n: stopped"; rc=1; fi
  done
  if alive kube-apiserver; then
    echo "node $NODE Ready=$("${KUBECTL[@]}" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || echo '?')"
  fi
  return $rc
}

# env: one `export NAME=VALUE` a line (read by test/testbed too); CRI_CONFIG_FILE points
# crictl at this instance's containerd
env_cmd() {
  local kv
  for kv in "PODCAP_CLUSTER=$INSTANCE" "KUBECONFIG=$ADMIN_KUBECONFIG" \
            "PODCAP_ADMIN_KUBECONFIG=$ADMIN_KUBECONFIG" "PODCAP_AGENT_KUBECONFIG=$AGENT_KUBECONFIG" \
            "PODCAP_AGENT_USER=$AGENT_USER" "PODCAP_API_SERVER=https://127.0.0.1:$API_PORT" \
            "PODCAP_CRI_ENDPOINT=unix://$SOCK" "PODCAP_NETNS_DIR=$NETNS_DIR" "PODCAP_NODE_NAME=$NODE" \
            "PODCAP_SUBNET=$SUBNET" "PODCAP_GATEWAY=$GW" "PODCAP_SINK_PORT=$SINK_PORT" \
            "PODCAP_BIN=$BIN" "PODCAP_CLUSTER_DIR=$CLUSTER_DIR" "PODCAP_RUN_DIR=$RUN" "PODCAP_LOG_DIR=$LOG" \
            "PODCAP_CAPTURE_DIR=$CAPTURE_DIR" "PODCAP_AGENT_SESSIONS=$AGENT_SESSIONS" \
            "PODCAP_WORKLOAD_IMAGE=$WORKLOAD_IMAGE" "PODCAP_AGENT_IMAGE=$AGENT_IMAGE" \
            "CRI_CONFIG_FILE=$CRICTL_CONFIG"; do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
  # shellcheck disable=SC2016  # $PATH is expanded by the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$BIN"
}

# ---------------------------------------------------------------- teardown
# the podcap agent's pods (deploy/daemonset.yaml), deleted first by down with their own grace
# period (10 s there), waited for at most AGENT_STOP_TIMEOUT seconds
AGENT_POD_SELECTOR=app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent
AGENT_STOP_TIMEOUT=30

stop_pid() { # name [timeout_s]
  local pid end
  [ -f "$RUN/$1.pid" ] || return 0
  pid=$(cat "$RUN/$1.pid")
  if pid_running "$pid"; then
    kill "$pid" 2>/dev/null || true
    end=$(( $(now_ms) + ${2:-10} * 1000 ))
    while pid_running "$pid" && [ "$(now_ms)" -lt "$end" ]; do sleep 0.1; done
    pid_running "$pid" && { log "$1 ($pid) ignored SIGTERM, SIGKILL"; kill -9 "$pid" 2>/dev/null; }
    log "stopped $1 ($pid)"
  fi
  rm -f "$RUN/$1.pid"
}

# agents started by tests: every process of their sessions (agent, nsenter, tcpdump)
stop_agent_sessions() {
  local sid pid
  [ -f "$AGENT_SESSIONS" ] || return 0
  while read -r sid; do
    for pid in $(ps -eo pid=,sid= | awk -v s="$sid" '$2 == s {print $1}'); do
      log "killing leftover agent-session process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100))"
      kill -9 "$pid" 2>/dev/null
    done
  done < <(sort -u "$AGENT_SESSIONS")
  rm -f "$AGENT_SESSIONS"
}

# capture processes of this instance that escaped their session: podcap-agent, nsenter or
# tcpdump whose arguments name this instance's files, or that live in one of its pods' netns
stop_capture_leftovers() {
  local netns="" pid comm ns f
  for f in "$CLUSTER_DIR"/containerd/state/io.containerd.grpc.v1.cri/netns/*; do
    [ -e "$f" ] && netns="$netns net:[$(stat -L -c %i "$f" 2>/dev/null)]"
  done
  for pid in $(pgrep -x tcpdump; pgrep -x nsenter; pgrep -x podcap-agent); do
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$CLUSTER_DIR/" ||
       { [ -n "$netns" ] && [[ " $netns " == *" $ns "* ]]; }; then
      log "killing leftover $comm $pid of this cluster"
      kill -9 "$pid" 2>/dev/null
    fi
  done
}

down() {
  set +e
  local t0 pid m c end
  t0=$(now_ms)
  # no controller may re-create what is deleted below (DaemonSet pods of a demo, ...)
  stop_pid kube-controller-manager
  if alive kube-apiserver && alive kubelet; then
    # Deployed agents first, with their own grace period: SIGTERM lets an agent stop its
    # captures (in the other pods' network namespaces) and exit; kubelet SIGKILLs it only
    # after terminationGracePeriodSeconds. Bounded: a longer grace is cut short below.
    "${KUBECTL[@]}" delete pods -A -l "$AGENT_POD_SELECTOR" --ignore-not-found --timeout="${AGENT_STOP_TIMEOUT}s" >/dev/null
    "${KUBECTL[@]}" delete pods --all -A --grace-period=1 --ignore-not-found --timeout=60s >/dev/null
  fi
  # only now what is left of agents: processes of the sessions of agents started by tests
  # (they stop their own) and capture processes of this instance outside them
  stop_agent_sessions
  stop_capture_leftovers
  if alive containerd; then # kubelet stops sandboxes of deleted pods; it removes them only at GC
    end=$(( $(now_ms) + 10000 ))
    while [ -n "$("${CRICTL[@]}" pods -q --state ready 2>/dev/null)" ] && [ "$(now_ms)" -lt "$end" ]; do sleep 0.2; done
  fi
  stop_pid kubelet 20
  if alive containerd; then
    for c in $("${CRICTL[@]}" pods -q 2>/dev/null); do "${CRICTL[@]}" stopp "$c" >/dev/null; "${CRICTL[@]}" rmp -f "$c" >/dev/null; done
  fi
  stop_pid containerd 20
  # shims only survive if a sandbox could not be removed; they carry our socket path
  for pid in $(ps -eo pid=,comm=,args= | awk -v a="-address $SOCK" '$2 ~ /^containerd-shim/ && index($0, a) {print $1}'); do
    log "killing leftover shim $pid"; kill "$pid"
  done
  # whatever still runs in our cgroups (containers of a crashed containerd) is ours
  for c in /sys/fs/cgroup/*/"$CG"; do
    [ -d "$c" ] || continue
    for pid in $(find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
      log "killing leftover process $pid in $c"; kill -9 "$pid" 2>/dev/null
    done
  done
  stop_capture_leftovers
  stop_pid sink; stop_pid kube-scheduler; stop_pid kube-apiserver 20; stop_pid etcd
  # kubelet: $KUBELET_DIR rshared bind + pods/*/volumes tmpfs; containerd: rootfs overlays, shm, netns
  awk -v p="$CLUSTER_DIR/" '{gsub(/\\040/, " ", $2)} index($2 "/", p) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  if ip link show "$BR" >/dev/null 2>&1; then
    [ -d "$RUN" ] && ip -o link show master "$BR" | awk -F': ' '{sub(/@.*/, "", $2); print $2}' >"$RUN/veths"
    ip link del "$BR"
  fi
  for c in /sys/fs/cgroup/*/"$CG"; do
    [ -d "$c" ] || continue
    # a cgroup empties asynchronously after its last process is killed
    end=$(( $(now_ms) + 5000 ))
    until find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || [ "$(now_ms)" -gt "$end" ]; do sleep 0.1; done
  done
  host_dirs_down
  rm -rf "$CLUSTER_DIR/containerd" "$CLUSTER_DIR/cni" "$CRI_DIR" "$KUBELET_DIR" "$CLUSTER_DIR/kubelet-plugins" \
         "$CLUSTER_DIR/pod-logs" "$CLUSTER_DIR/container-logs" "$RUN/etcd-data" "$RUN/sysctl" "$CAPTURE_DIR" \
         "$CLUSTER_DIR/testbed"
  log "down in $(( $(now_ms) - t0 )) ms"
  leftovers; c=$?
  set -e
  return "$c"
}

# prints what is left of this instance on the host; returns 1 if anything is
leftovers() {
  local out procs
  procs=$(ps -eo pid=,args=)   # read first, so that the filter below does not see itself
  out=$(
    awk -v p="$CLUSTER_DIR/" '{gsub(/\\040/, " ", $2)} index($2 "/", p) == 1 {print "mount: " $2}' /proc/self/mounts
    ip link show "$BR" >/dev/null 2>&1 && echo "link: bridge $BR"
    if [ -f "$RUN/veths" ]; then
      while read -r v; do [ -n "$v" ] && ip link show "$v" >/dev/null 2>&1 && echo "link: $v (was on $BR)"; done <"$RUN/veths"
    fi
    for c in /sys/fs/cgroup/*/"$CG"; do [ -d "$c" ] && echo "cgroup: $c"; done
    awk -v a="$CLUSTER_DIR/" 'index($0, a) {print "process: " $0}' <<<"$procs"
    if [ -f "$AGENT_SESSIONS" ]; then
      sort -u "$AGENT_SESSIONS" | while read -r sid; do
        ps -eo pid=,sid=,args= | awk -v s="$sid" '$2 == s {print "agent-session process: " $0}'
      done
    fi
    find /var/lib/cni/results -maxdepth 1 -name "$CNI_NET-*" -printf 'cni cache: %p\n' 2>/dev/null
    true
  )
  if [ -n "$out" ]; then echo "$out" >&2; log "leftovers above"; return 1; fi
  log "no leftovers (mounts under $CLUSTER_DIR, bridge $BR and its veths, cgroup $CG, processes)"
}

# guard: the test bed holds our stdin open for as long as its cluster is in use and writes
# "release" when it tears the cluster down itself; EOF without it means the test binary died
# (panic, timeout, SIGKILL): tear down for it.
guard() {
  local line
  while IFS= read -r line; do
    [ "$line" = release ] && exit 0
  done
  log "guard: the test process went away without releasing the cluster: down"
  exec bash "$HERE/cluster.sh" down
}

case "${1:-}" in
  build) build ;;
  _build) build_locked ;;
  up) with_lock "$LOCK" bash "$HERE/cluster.sh" _up ;;
  _up) up ;;
  down) with_lock "$LOCK" bash "$HERE/cluster.sh" _down ;;
  _down) down ;;
  agent-image) with_lock "$CACHE/.build.lock" bash "$HERE/cluster.sh" _agent-image "${2:-}" ;;
  _agent-image) agent_image "${2:-}" ;;
  agent-rbac) alive kube-apiserver || die "cluster $INSTANCE is not up"; agent_rbac ;;
  status) status ;;
  env) env_cmd ;;
  leftovers) leftovers ;;
  guard) guard ;;
  *) echo "usage: $0 build|up|down|status|env|leftovers|agent-image BINARY|agent-rbac|guard" >&2; exit 2 ;;
esac
