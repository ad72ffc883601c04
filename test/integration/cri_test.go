package integration

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/cri"
	"github.com/podcap/podcap/test/testbed"
)

// TestCRIResolveRealRuntime resolves real pods through containerd's CRI socket: the netns path
// is a pinned file under the node's netns directory, it, the PID and the sandbox's PID lead to
// the pod's own network namespace, the PID is the one crictl reports, and two pods of one name
// in two namespaces resolve apart; a wrong uid is not found; a hostNetwork pod resolves to the
// node's network with no path.
func TestCRIResolveRealRuntime(t *testing.T) {
	c := testBed(t)
	_, ctx := ktesting.NewTestContext(t)
	client, err := cri.New(ctx, c.CRIEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if name, _ := client.Runtime(); name != "containerd" {
		t.Errorf("runtime %q, want containerd", name)
	}
	host := netnsOf(t, "/proc/self/ns/net")
	seen := map[syscall.Stat_t]string{}
	for _, ns := range []string{"cri-a", "cri-b"} {
		pod := runningPod(t, c, ns, "same", testbed.PodOptions{})
		got, err := client.Resolve(ctx, ns, "same", string(pod.UID))
		if err != nil {
			t.Fatalf("Resolve(%s/same): %v", ns, err)
		}
		want, err := c.ContainerPID(t.Context(), pod)
		if err != nil {
			t.Fatal(err)
		}
		if got.PID != want || got.SandboxPID <= 0 || got.SandboxID == "" || got.ContainerID == "" || got.NodeNetwork ||
			filepath.Dir(got.NetNSPath) != c.NetNSDir {
			t.Fatalf("Resolve(%s/same) = %+v, want pid %d (crictl), the sandbox's pid, a sandbox, a container and a netns path in %s",
				ns, got, want, c.NetNSDir)
		}
		byPID, byPath := netnsOf(t, fmt.Sprintf("/proc/%d/ns/net", got.PID)), netnsOf(t, got.NetNSPath)
		bySandbox := netnsOf(t, fmt.Sprintf("/proc/%d/ns/net", got.SandboxPID))
		if byPID != byPath || bySandbox != byPath || byPID == host {
			t.Errorf("%s: pid's netns %v, sandbox pid's %v, path's %v, host's %v", ns, byPID, bySandbox, byPath, host)
		}
		if other, dup := seen[byPID]; dup {
			t.Errorf("%s/same and %s/same resolved to the same network namespace", ns, other)
		}
		seen[byPID] = ns
		if _, err := client.Resolve(ctx, ns, "same", string(pod.UID)+"-not"); !errors.Is(err, capture.ErrPodNotFound) {
			t.Errorf("Resolve with a wrong uid: %v, want ErrPodNotFound", err)
		}
	}
	pod := runningPod(t, c, "cri-hostnet", "hn", testbed.PodOptions{HostNetwork: true})
	got, err := client.Resolve(ctx, pod.Namespace, pod.Name, string(pod.UID))
	if err != nil {
		t.Fatalf("Resolve(hostNetwork pod): %v", err)
	}
	if !got.NodeNetwork || got.NetNSPath != "" || got.PID <= 0 {
		t.Errorf("Resolve(hostNetwork pod) = %+v, want the node's network, no netns path, a pid", got)
	}
}

// netnsOf identifies a network namespace by the device and inode of its file.
func netnsOf(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return syscall.Stat_t{Dev: st.Dev, Ino: st.Ino}
}
