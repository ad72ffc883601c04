//go:build linux

package cri_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/cri"
)

// TestResolveRealRuntime resolves a running pod through a real runtime's CRI socket and checks
// that the PID and the netns path lead to the same network namespace. The test bed sets:
//
//	PODCAP_CRI_ENDPOINT   the runtime's socket (unix:///path or /path)
//	PODCAP_CRI_TEST_POD   namespace/name/uid of a running, non-host-network pod
//
// It needs root (to read another process's /proc/PID/ns/net).
func TestResolveRealRuntime(t *testing.T) {
	endpoint, spec := os.Getenv("PODCAP_CRI_ENDPOINT"), os.Getenv("PODCAP_CRI_TEST_POD")
	if endpoint == "" || spec == "" {
		t.Skip("PODCAP_CRI_ENDPOINT and PODCAP_CRI_TEST_POD=namespace/name/uid not both set: no real CRI runtime to test against")
	}
	f := strings.Split(spec, "/")
	if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
		t.Fatalf("PODCAP_CRI_TEST_POD=%q, want namespace/name/uid", spec)
	}
	namespace, name, uid := f[0], f[1], f[2]
	_, ctx := ktesting.NewTestContext(t)

	c, err := cri.New(ctx, endpoint)
	if err != nil {
		t.Fatalf("New(%s): %v", endpoint, err)
	}
	defer c.Close()
	rtName, rtVersion := c.Runtime()
	t.Logf("runtime %s %s at %s", rtName, rtVersion, c.Endpoint())

	got, err := c.Resolve(ctx, namespace, name, uid)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", spec, err)
	}
	t.Logf("Resolve(%s) = %+v", spec, got)
	if got.PID <= 0 || got.SandboxID == "" || got.ContainerID == "" {
		t.Fatalf("Resolve(%s) = %+v, want a pid, a sandbox and a container", spec, got)
	}
	if got.NetNSPath == "" {
		t.Fatalf("Resolve(%s) gave no netns path; the test pod must not use the host network", spec)
	}
	byPID, err := netnsOf(fmt.Sprintf("/proc/%d/ns/net", got.PID))
	if err != nil {
		t.Fatal(err)
	}
	byPath, err := netnsOf(got.NetNSPath)
	if err != nil {
		t.Fatal(err)
	}
	if byPID != byPath {
		t.Errorf("/proc/%d/ns/net is %v but %s is %v: not the same network namespace", got.PID, byPID, got.NetNSPath, byPath)
	}
	host, err := netnsOf("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if byPID == host {
		t.Errorf("pod %s resolved to the test's own network namespace %v", spec, host)
	}

	// The same pod under another uid (a recreated pod of the same name) is not found.
	if _, err := c.Resolve(ctx, namespace, name, uid+"-not"); !errors.Is(err, capture.ErrPodNotFound) {
		t.Errorf("Resolve with a wrong uid: %v, want ErrPodNotFound", err)
	}
}

// nsID identifies a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func netnsOf(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return nsID{dev: uint64(st.Dev), ino: st.Ino}, nil
}
