package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podcap/podcap/test/testbed"
)

// TestSmoke checks the test bed itself: the node is Ready, a workload pod created through the
// API runs with an IP in the bridge subnet, its container's PID (found through the CRI) lives
// in a network namespace of its own (a hostNetwork pod has the node's IP and the host's netns),
// and the agent's credentials can read pods but not write them.
func TestSmoke(t *testing.T) {
	c := testBed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel) // not defer: the parallel subtests run after this function returns

	node, err := c.Admin().CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !nodeReady(node) {
		t.Fatalf("node %s is not Ready: %+v", c.NodeName, node.Status.Conditions)
	}

	const ns = "smoke"
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	hostNetNS, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		hostNetwork bool
	}{
		{name: "pod-network"},
		{name: "host-network", hostNetwork: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := c.CreatePod(ctx, ns, tc.name, testbed.PodOptions{
				Labels:      map[string]string{"app": "smoke"},
				HostNetwork: tc.hostNetwork,
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.DeletePod(context.WithoutCancel(ctx), ns, tc.name); err != nil {
					t.Error(err)
				}
			})
			pod, err := c.WaitPodRunning(ctx, ns, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if pod.Spec.NodeName != c.NodeName {
				t.Errorf("pod on node %q, want %q", pod.Spec.NodeName, c.NodeName)
			}
			ip, err := netip.ParseAddr(pod.Status.PodIP)
			if err != nil {
				t.Fatalf("pod IP %q: %v", pod.Status.PodIP, err)
			}
			switch {
			case tc.hostNetwork && ip != c.Gateway:
				t.Errorf("hostNetwork pod IP %s, want the node's %s", ip, c.Gateway)
			case !tc.hostNetwork && (!c.Subnet.Contains(ip) || ip == c.Gateway):
				t.Errorf("pod IP %s, want one in %s other than the gateway %s", ip, c.Subnet, c.Gateway)
			}

			pid, err := c.ContainerPID(ctx, pod)
			if err != nil {
				t.Fatal(err)
			}
			podNetNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				t.Fatal(err)
			}
			if same := podNetNS == hostNetNS; same != tc.hostNetwork {
				t.Errorf("container pid %d netns %s, host %s: same = %v, want %v", pid, podNetNS, hostNetNS, same, tc.hostNetwork)
			}
		})
	}

	t.Run("agent-credentials", func(t *testing.T) {
		t.Parallel()
		agent := c.AgentClient()
		if _, err := agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + c.NodeName}); err != nil {
			t.Errorf("agent cannot list its node's pods: %v", err)
		}
		_, err := agent.CoreV1().Pods(ns).Patch(ctx, "pod-network", types.MergePatchType,
			[]byte(`{"metadata":{"annotations":{"podcap.test/x":"y"}}}`), metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("agent patching a pod: %v, want Forbidden", err)
		}
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
