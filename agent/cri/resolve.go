package cri

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

// The labels kubelet puts on every sandbox and container it creates
// (k8s.io/kubelet/pkg/types).
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
)

var _ capture.Resolver = (*Client)(nil)

// Resolve finds where to capture the pod namespace/name (with that uid, unless uid is ""):
//
//  1. the newest READY sandbox labelled with the pod's name, namespace and uid;
//  2. its RUNNING containers, oldest first; the first whose verbose ContainerStatus reports a
//     host PID gives Target.PID and Target.ContainerID;
//  3. the sandbox's verbose PodSandboxStatus gives Target.NetNSPath (the pinned netns file;
//     else the container's, as CRI-O reports it there too), Target.NodeNetwork and
//     Target.SandboxPID.
//
// Only a pinned file is reported as NetNSPath: containerd's container specs name the sandbox's
// namespace as /proc/<sandbox pid>/ns/net, which is the PID path (and SandboxPID) again. Where
// the file may be (under the configured netns directory) is checked by the engine, which opens
// it.
//
// Target.PID is always a running container's process, never the sandbox's: CRI-O usually runs
// no infra process at all, and a pod whose containers have not started (or all exited) is
// not ready to be captured yet. Such a pod, a pod without a ready sandbox, and a pod that
// disappears between calls give an error wrapping capture.ErrPodNotFound (transient: retried
// as the pod starts). Every other error (runtime unreachable, timeout, verbose info podcap
// cannot read) is returned wrapped; a dead socket is transient, an unreadable info is not
// fixed by retrying but is rare enough to be retried with backoff like the rest.
func (c *Client) Resolve(ctx context.Context, namespace, name, uid string) (capture.Target, error) {
	logger := klog.FromContext(ctx).WithValues("pod", klog.KRef(namespace, name), "uid", uid)

	sb, err := c.readySandbox(ctx, namespace, name, uid)
	if err != nil {
		return capture.Target{}, err
	}
	ctrs, err := c.runningContainers(ctx, sb.GetId())
	if err != nil {
		return capture.Target{}, err
	}
	if len(ctrs) == 0 {
		return capture.Target{}, fmt.Errorf("pod %s/%s: no running container in sandbox %s: %w", namespace, name, sb.GetId(), capture.ErrPodNotFound)
	}
	sbInfo, err := c.sandboxInfo(ctx, sb.GetId())
	if err != nil {
		return capture.Target{}, notFound(err, namespace, name)
	}
	for _, ctr := range ctrs {
		ci, err := c.containerInfo(ctx, ctr.GetId())
		if status.Code(err) == codes.NotFound {
			continue // removed since ListContainers
		}
		if err != nil {
			return capture.Target{}, err
		}
		if ci.PID == 0 {
			continue // exited since ListContainers
		}
		t := capture.Target{
			NetNSPath:   cmp.Or(pinned(sbInfo.NetNSPath), pinned(ci.NetNSPath)),
			NodeNetwork: sbInfo.NodeNetwork,
			PID:         ci.PID,
			SandboxPID:  sbInfo.PID,
			SandboxID:   sb.GetId(),
			ContainerID: ctr.GetId(),
		}
		logger.V(4).Info("Resolved pod", "sandbox", t.SandboxID, "container", t.ContainerID, "pid", t.PID,
			"sandboxPID", t.SandboxPID, "netns", t.NetNSPath, "nodeNetwork", t.NodeNetwork)
		return t, nil
	}
	return capture.Target{}, fmt.Errorf("pod %s/%s: no container with a pid in sandbox %s: %w", namespace, name, sb.GetId(), capture.ErrPodNotFound)
}

// pinned returns path if it names a pinned network namespace file, "" if it names a process'
// (/proc/<pid>/ns/net, or anything else under /proc) or nothing.
func pinned(path string) string {
	if path == "/proc" || strings.HasPrefix(path, "/proc/") || strings.HasPrefix(filepath.Clean(path), "/proc/") {
		return ""
	}
	return path
}

// readySandbox returns the pod's newest READY sandbox. It checks the answer against the pod
// too: the filter is the runtime's to apply, and a wrong pod would be captured silently.
func (c *Client) readySandbox(ctx context.Context, namespace, name, uid string) (*runtimeapi.PodSandbox, error) {
	selector := map[string]string{labelPodNamespace: namespace, labelPodName: name}
	if uid != "" {
		selector[labelPodUID] = uid
	}
	resp, err := call(ctx, c, c.rt.ListPodSandbox, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: selector,
		State:         &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY},
	}})
	if err != nil {
		return nil, fmt.Errorf("list pod sandboxes: %w", err)
	}
	var newest *runtimeapi.PodSandbox
	for _, sb := range resp.GetItems() {
		md := sb.GetMetadata()
		if sb.GetState() != runtimeapi.PodSandboxState_SANDBOX_READY ||
			md.GetNamespace() != namespace || md.GetName() != name || (uid != "" && md.GetUid() != uid) {
			continue
		}
		if newest == nil || sb.GetCreatedAt() > newest.GetCreatedAt() ||
			(sb.GetCreatedAt() == newest.GetCreatedAt() && sb.GetId() > newest.GetId()) {
			newest = sb
		}
	}
	if newest == nil {
		return nil, fmt.Errorf("pod %s/%s (uid %q): no ready sandbox: %w", namespace, name, uid, capture.ErrPodNotFound)
	}
	return newest, nil
}

// runningContainers returns the sandbox's RUNNING containers, oldest first.
func (c *Client) runningContainers(ctx context.Context, sandboxID string) ([]*runtimeapi.Container, error) {
	resp, err := call(ctx, c, c.rt.ListContainers, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: sandboxID,
		State:        &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	}})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ctrs := slices.DeleteFunc(resp.GetContainers(), func(ctr *runtimeapi.Container) bool {
		return ctr.GetPodSandboxId() != sandboxID || ctr.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING
	})
	slices.SortFunc(ctrs, func(a, b *runtimeapi.Container) int {
		return cmp.Or(cmp.Compare(a.GetCreatedAt(), b.GetCreatedAt()), cmp.Compare(a.GetId(), b.GetId()))
	})
	return ctrs, nil
}

// containerInfo reads a container's verbose status. The gRPC status stays in the error chain
// (status.Code sees through wrapping) so that the caller can tell NotFound.
func (c *Client) containerInfo(ctx context.Context, id string) (statusInfo, error) {
	resp, err := call(ctx, c, c.rt.ContainerStatus, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return statusInfo{}, fmt.Errorf("container status %s: %w", id, err)
	}
	si, err := parseInfo(resp.GetInfo())
	if err != nil {
		return statusInfo{}, fmt.Errorf("container status %s: %w", id, err)
	}
	return si, nil
}

// sandboxInfo reads a sandbox's verbose status.
func (c *Client) sandboxInfo(ctx context.Context, id string) (statusInfo, error) {
	resp, err := call(ctx, c, c.rt.PodSandboxStatus, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		return statusInfo{}, fmt.Errorf("pod sandbox status %s: %w", id, err)
	}
	si, err := parseInfo(resp.GetInfo())
	if err != nil {
		return statusInfo{}, fmt.Errorf("pod sandbox status %s: %w", id, err)
	}
	return si, nil
}

// notFound turns a gRPC NotFound (the sandbox went away between calls) into
// capture.ErrPodNotFound and leaves other errors as they are.
func notFound(err error, namespace, name string) error {
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("pod %s/%s: %w: %w", namespace, name, capture.ErrPodNotFound, err)
	}
	return err
}
