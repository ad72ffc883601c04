package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// DefaultEndpoints are the CRI sockets tried, in order, when no endpoint is configured. The
// runtimes that distributions embed come first: their sockets exist only where that
// distribution runs the node's kubelet, whereas /run/containerd/containerd.sock may also be
// the containerd of a Docker installed beside it. Then containerd's and CRI-O's own defaults
// (the paths the kubelet and crictl know them by), in the order podcap always tried them.
// Only sockets whose directory is mounted into the agent can be found (README, "Runtime
// sockets").
var DefaultEndpoints = []string{
	// k3s and RKE2: their embedded containerd
	"unix:///run/k3s/containerd/containerd.sock",
	// MicroK8s (snap): its containerd
	"unix:///var/snap/microk8s/common/run/containerd.sock",
	// containerd (kubeadm, kind, most managed clusters)
	"unix:///run/containerd/containerd.sock",
	// CRI-O (OpenShift, kubeadm with CRI-O)
	"unix:///var/run/crio/crio.sock",
}

// ErrNoEndpoint is returned by PickEndpoint when none of the candidate sockets exists.
var ErrNoEndpoint = errors.New("no CRI socket found")

// SocketPath returns the socket file of a CRI endpoint given as "unix:///path" or as a plain
// absolute path. Other schemes (tcp, npipe) are rejected: podcap talks to the runtime of its
// own node only.
func SocketPath(endpoint string) (string, error) {
	p := endpoint
	if scheme, rest, ok := strings.Cut(endpoint, "://"); ok {
		if scheme != "unix" {
			return "", fmt.Errorf("cri endpoint %q: unsupported scheme %q (want unix)", endpoint, scheme)
		}
		p = rest
	}
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("cri endpoint %q: want unix:///absolute/path or /absolute/path", endpoint)
	}
	return filepath.Clean(p), nil
}

// PickEndpoint returns the first candidate whose socket exists, as stat (os.Stat in
// production) sees it. Candidates that do not parse, do not exist or are not sockets are
// skipped; if none is left it returns an error wrapping ErrNoEndpoint that lists them.
func PickEndpoint(candidates []string, stat func(string) (fs.FileInfo, error)) (string, error) {
	for _, c := range candidates {
		p, err := SocketPath(c)
		if err != nil {
			continue
		}
		fi, err := stat(p)
		if err != nil || fi.Mode().Type() != fs.ModeSocket {
			continue
		}
		return c, nil
	}
	return "", fmt.Errorf("%w among %s", ErrNoEndpoint, strings.Join(candidates, ", "))
}
