package integration

import (
	"bufio"
	"context"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcap/podcap/test/testbed"
)

// TestDeployPodNetwork runs the DaemonSet with the Component deploy/pod-network/: the agent
// pod is on the pod network (its own IP, not the node's), still captures a pod's traffic, is
// reachable through a port-forward on its own port, and a port-forward to it can no longer
// reach a port that listens only on the node's loopback (the reason for the Component; the
// host-network agent reaches it, checkLoopbackReach in TestDaemonSetEndToEnd).
func TestDeployPodNetwork(t *testing.T) {
	c := testBed(t)
	captureDir := filepath.Join(c.CaptureDirRoot, "podnetwork")
	deployDaemonSet(t, c, captureDir, "pod-network")
	agent := agentPod(t, c)
	if agent.Spec.HostNetwork || agent.Status.PodIP == "" || agent.Status.PodIP == agent.Status.HostIP {
		t.Fatalf("agent pod hostNetwork %v, pod IP %q, host IP %q: want the pod network", agent.Spec.HostNetwork, agent.Status.PodIP, agent.Status.HostIP)
	}
	if agent.Spec.DNSPolicy != corev1.DNSClusterFirst {
		t.Errorf("dnsPolicy %s, want ClusterFirst", agent.Spec.DNSPolicy)
	}

	pod := runningPod(t, c, "podnet-e2e", "test-pod", testbed.PodOptions{})
	annotate(t, c, pod, "2")
	first := filepath.Join(captureDir, pod.Namespace, pod.Name, "capture-test-pod.pcap0")
	waitFor(t, 60*time.Second, "a packet in "+first, func() (bool, error) { return fileSize(first) > 24, nil })
	waitPodIP(t, first, pod.Status.PodIP)

	if got := portForwardRead(t, c, agent, "9695", "GET /readyz HTTP/1.0\r\n\r\n"); !strings.Contains(got, "200 OK") {
		t.Errorf("port-forward to the agent's own port 9695: %q, want its /readyz", got)
	}
	checkLoopbackReach(t, c, agent, false)
	unannotate(t, c, pod)
}

// agentPod is the one deployed agent pod in podcap-system.
func agentPod(t *testing.T, c *testbed.Cluster) *corev1.Pod {
	t.Helper()
	pods, err := c.Admin().CoreV1().Pods("podcap-system").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("agent pods: %v, %d", err, len(pods.Items))
	}
	return &pods.Items[0]
}

// checkLoopbackReach opens a port on the node's loopback only (this test process runs on the
// node) and port-forwards to it through the agent pod: reached says whether the banner must
// come back (host network) or must not (pod network).
func checkLoopbackReach(t *testing.T, c *testbed.Cluster, agent *corev1.Pod, reached bool) {
	t.Helper()
	const banner = "podcap-loopback-probe\n"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, banner)
			conn.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	got := portForwardRead(t, c, agent, port, "")
	if reached && got != banner {
		t.Errorf("port-forward through the host-network agent to node loopback port %s: %q, want %q", port, got, banner)
	}
	if !reached && strings.Contains(got, "podcap-loopback-probe") {
		t.Errorf("port-forward through the pod-network agent reached the node's loopback port %s", port)
	}
}

var forwardingFrom = regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) ->`)

// portForwardRead runs `kubectl port-forward` to remotePort of pod, sends request through
// the tunnel and returns what comes back until the connection closes (or 10 s pass).
func portForwardRead(t *testing.T, c *testbed.Cluster, pod *corev1.Pod, remotePort, request string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), "--kubeconfig", c.AdminKubeconfig,
		"-n", pod.Namespace, "port-forward", "pod/"+pod.Name, "0:"+remotePort)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	local := ""
	sc := bufio.NewScanner(stdout)
	for local == "" && sc.Scan() {
		if m := forwardingFrom.FindStringSubmatch(sc.Text()); m != nil {
			local = m[1]
		}
	}
	if local == "" {
		t.Fatalf("kubectl port-forward to %s:%s printed no local port", pod.Name, remotePort)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+local, 10*time.Second)
	if err != nil {
		return ""
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if request != "" {
		if _, err := io.WriteString(conn, request); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(conn)
	return string(b)
}
