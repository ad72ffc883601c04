package cri

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// infoKey is the key of the verbose status map that both containerd and CRI-O fill with a
// JSON document (CRI leaves the map's content to the runtime).
const infoKey = "info"

// statusInfo is what podcap reads from a runtime's verbose ContainerStatus or
// PodSandboxStatus.
type statusInfo struct {
	// PID is the host PID of the container's (or the sandbox's infra) process; 0 when there
	// is none: the process is not running, or CRI-O dropped the pod's infra container.
	PID int
	// NetNSPath is runtimeSpec.linux.namespaces[type=network].path: a bind-mounted netns
	// file (/var/run/netns/cni-… for containerd, <namespaces_dir>/netns/<uuid> for CRI-O) or
	// /proc/<pid>/ns/net; "" for host-network pods or when the runtime does not report it.
	NetNSPath string
	// NodeNetwork: the spec lists the process' namespaces and a network namespace is not
	// among them, so the process stays in the runtime's, the node's (a hostNetwork pod).
	NodeNetwork bool
}

// verboseInfo is the part of the "info" JSON podcap decodes. Both runtimes put these two
// keys at the top level, for containers and sandboxes alike:
//
//   - containerd (pkg/cri/server container_status.go / sandbox_status.go, 1.6 and later):
//     {"sandboxID", "pid", "removing", "snapshotKey", "snapshotter", "runtimeType",
//     "runtimeOptions", "config", "runtimeSpec"} for a container and {"pid",
//     "processStatus", "netNamespaceClosed", "image", …, "runtimeSpec", "cniResult"} for
//     a sandbox; see testdata/containerd-1.6-*.json, captured from a real containerd 1.6.20.
//   - CRI-O (server/container_status.go createContainerInfo, server/sandbox_status.go
//     createSandboxInfo): {"sandboxID", "pid", "runtimeSpec", "privileged"} for a container,
//     {"image", "pid", "runtimeSpec"} for a sandbox with an infra container, and only
//     {"runtimeSpec"} when the infra container is dropped (drop_infra_ctr, the default for
//     pods without a shared PID namespace): no sandbox PID then, only the pinned netns path.
//
// Everything else is ignored: the documents are large and vary between versions.
type verboseInfo struct {
	PID         *int `json:"pid"`
	RuntimeSpec *struct {
		Linux *struct {
			Namespaces []struct {
				Type string `json:"type"`
				Path string `json:"path"`
			} `json:"namespaces"`
		} `json:"linux"`
	} `json:"runtimeSpec"`
}

// errNoInfo means the runtime answered a verbose status without the "info" document.
var errNoInfo = errors.New(`no "info" in verbose status`)

// parseInfo reads the PID and the network namespace path out of a verbose status map.
func parseInfo(info map[string]string) (statusInfo, error) {
	raw, ok := info[infoKey]
	if !ok {
		return statusInfo{}, fmt.Errorf("%w (keys %q)", errNoInfo, slices.Sorted(maps.Keys(info)))
	}
	var v verboseInfo
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return statusInfo{}, fmt.Errorf("decode verbose info: %w", err)
	}
	if v.PID == nil && v.RuntimeSpec == nil {
		return statusInfo{}, errors.New(`verbose info has neither "pid" nor "runtimeSpec"`)
	}
	var si statusInfo
	if v.PID != nil {
		if *v.PID < 0 {
			return statusInfo{}, fmt.Errorf("verbose info: invalid pid %d", *v.PID)
		}
		si.PID = *v.PID
	}
	if v.RuntimeSpec != nil && v.RuntimeSpec.Linux != nil && v.RuntimeSpec.Linux.Namespaces != nil {
		si.NodeNetwork = true
		for _, ns := range v.RuntimeSpec.Linux.Namespaces {
			if ns.Type == "network" {
				si.NetNSPath, si.NodeNetwork = ns.Path, false
				break
			}
		}
	}
	return si, nil
}
