#!/usr/bin/env bash
# render.sh: the per-run kustomize overlay for the local test cluster.
#
#   . test/deploy/local/render.sh
#   render_local_overlay OUTDIR API_PORT CRI_DIR CAPTURE_DIR NETNS_DIR [CRI_SOCKET_NAME]
#   kubectl apply -k OUTDIR
#
# or run it: test/deploy/local/render.sh OUTDIR API_PORT CRI_DIR CAPTURE_DIR NETNS_DIR [CRI_SOCKET_NAME]
#
# OUTDIR/kustomization.yaml builds on this directory's overlay (image, pull policy) and adds
# what only the running cluster knows:
# - the API server at 127.0.0.1:API_PORT: the local cluster has no kube-proxy, so the
#   `kubernetes` Service VIP that in-cluster config uses is dead; the agent shares the node's
#   network (hostNetwork) and reaches the API server on loopback (its cert has IP SAN 127.0.0.1);
# - the CRI socket in CRI_DIR (containerd.sock unless CRI_SOCKET_NAME), mounted at the same
#   path instead of /run/containerd, and --cri-endpoint;
# - the capture dir CAPTURE_DIR on the node, mounted at the same path, and --capture-dir;
# - the dir NETNS_DIR where the node's containerd pins pods' network namespaces, mounted at
#   the same path (read-only, HostToContainer, as the base mounts /var/run/netns), and
#   --netns-dir.
# Plain heredocs, no envsubst; the values are checked first because they land in YAML.

# _render_move_mount VOLUME BASE_PATH PATH [readOnly [PROPAGATION]]: strategic-merge list
# items (each line led by a newline) that move VOLUME's mount from BASE_PATH to PATH,
# read-only with a 4th argument and with mountPropagation PROPAGATION (as the base mounts it:
# the delete drops the base's fields too); nothing if the paths are the same
_render_move_mount() {
  [ "$2" = "$3" ] && return 0
  # shellcheck disable=SC2016  # $patch is a literal kustomize directive
  printf '\n        - mountPath: %s\n          $patch: delete' "$2"
  printf '\n        - name: %s\n          mountPath: %s' "$1" "$3"
  [ -z "${4:-}" ] || printf '\n          readOnly: true'
  [ -z "${5:-}" ] || printf '\n          mountPropagation: %s' "$5"
}

render_local_overlay() {
  if [ "$#" -lt 5 ] || [ "$#" -gt 6 ]; then
    echo "usage: render_local_overlay OUTDIR API_PORT CRI_DIR CAPTURE_DIR NETNS_DIR [CRI_SOCKET_NAME]" >&2
    return 2
  fi
  local out=$1 port=$2 cri=$3 cap=$4 netns=$5 sock=${6:-containerd.sock} here base p
  case $port in '' | *[!0-9]*) echo "render_local_overlay: bad API port '$port'" >&2; return 2 ;; esac
  for p in "$out" "$cri" "$cap" "$netns"; do
    case $p in
      /*) ;;
      *) echo "render_local_overlay: not an absolute path: '$p'" >&2; return 2 ;;
    esac
  done
  for p in "$cri" "$cap" "$netns" "$sock"; do
    case $p in
      *[!A-Za-z0-9._/-]*) echo "render_local_overlay: unsupported character in '$p'" >&2; return 2 ;;
    esac
  done
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  mkdir -p "$out"
  # kustomize takes a base only by a path relative to the kustomization
  base=$(realpath --relative-to="$out" "$here")
  cat >"$out/kustomization.yaml" <<EOF_K
# Rendered by $here/render.sh; do not edit.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization

resources:
- $base

patches:
- path: agent-run.yaml
# args is a plain list (a strategic merge would replace it): append, and the later flag wins
- target: {group: apps, version: v1, kind: DaemonSet, name: podcap-agent, namespace: podcap-system}
  patch: |-
    - op: test
      path: /spec/template/spec/containers/0/name
      value: agent
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --cri-endpoint=unix://$cri/$sock
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --capture-dir=$cap
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --netns-dir=$netns
EOF_K
  # a mount moves only where the path differs from the base's: a strategic-merge delete and an
  # add of the same mountPath (the merge key) would leave no mount at all
  local mounts
  mounts=$(_render_move_mount cri-socket /run/containerd "$cri" readOnly
           _render_move_mount captures /var/lib/podcap/captures "$cap"
           _render_move_mount netns /var/run/netns "$netns" readOnly HostToContainer)
  cat >"$out/agent-run.yaml" <<EOF_P
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: podcap-agent
  namespace: podcap-system
spec:
  template:
    spec:
      containers:
      - name: agent
        env:
        - name: KUBERNETES_SERVICE_HOST
          value: "127.0.0.1"
        - name: KUBERNETES_SERVICE_PORT
          value: "$port"
        volumeMounts:${mounts:- []}
      volumes:
      - name: cri-socket
        hostPath:
          path: $cri
      - name: captures
        hostPath:
          path: $cap
      - name: netns
        hostPath:
          path: $netns
EOF_P
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  render_local_overlay "$@"
fi
