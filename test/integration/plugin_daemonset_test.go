package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/podcap/podcap/test/testbed"
)

// TestPluginDaemonSet runs kubectl-podcap against the real DaemonSet from deploy/ (the
// agent's API port on the host network, port 9696: one such test at a time on a machine) as
// a ServiceAccount authorised the Kubernetes way (TokenReview and SubjectAccessReview of
// pods/capture by the agent, no static token): ls, explain, get (identical to the file on
// the node), get --merge, stream | tcpdump -r -, and in a namespace where the user may get
// pods but not pods/capture, 403 with what to ask for.
func TestPluginDaemonSet(t *testing.T) {
	c := testBed(t)
	bin := buildPlugin(t, c)
	captureDir := filepath.Join(c.CaptureDirRoot, "plugin-daemonset")
	deployDaemonSet(t, c, captureDir)

	pod := runningPod(t, c, "plugin-ds", "web", testbed.PodOptions{Annotations: map[string]string{annotation: "3"}})
	other := runningPod(t, c, "plugin-ds2", "web", testbed.PodOptions{Annotations: map[string]string{annotation: "3"}})
	reader := newPluginUser(t, c, "plugin-ds", "reader", map[string][]rbacv1.PolicyRule{
		"plugin-ds":     captureRules,
		"podcap-system": reachAgentRules,
		"plugin-ds2":    {{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}},
	})
	diskDir := filepath.Join(captureDir, pod.Namespace, pod.Name)
	for _, p := range []string{filepath.Join(diskDir, "capture-web.pcap0"), filepath.Join(captureDir, other.Namespace, other.Name, "capture-web.pcap0")} {
		waitFor(t, 60*time.Second, "a packet in "+p, func() (bool, error) { return fileSize(p) > 24, nil })
	}
	waitPodIP(t, filepath.Join(diskDir, "capture-web.pcap0"), pod.Status.PodIP)

	r := runPlugin(t, bin, reader, "ls")
	if r.Code != 0 || !hasRow(r.Stdout, "plugin-ds", "web", c.NodeName, "manual", "running") {
		t.Errorf("ls: %+v", r)
	}
	r = runPlugin(t, bin, reader, "ls", "-A")
	if r.Code != 0 || strings.Contains(r.Stdout, "plugin-ds2") {
		t.Errorf("ls -A lists a namespace the user may not read: %+v", r)
	}
	caps := lsJSON(t, bin, reader)
	if len(caps) != 1 || caps[0].Node != c.NodeName || len(caps[0].Files) == 0 {
		t.Fatalf("ls -o json: %+v (want the capture with its files: the retrieval API)", caps)
	}
	checkExplain(t, bin, reader, pod)
	checkRetrieval(t, bin, reader, pod, diskDir)

	r = runPlugin(t, bin, reader, "stream", "web", "-n", other.Namespace)
	if r.Code != 1 || !strings.Contains(r.Stderr, "you may not read captures in namespace plugin-ds2: ask for get pods/capture") {
		t.Errorf("stream in a namespace without pods/capture: %+v", r)
	}
	r = runPlugin(t, bin, reader, "get", "web", "-n", other.Namespace, "-o", t.TempDir())
	if r.Code != 1 || !strings.Contains(r.Stderr, "you may not read captures in namespace plugin-ds2: ask for get pods/capture") {
		t.Errorf("get in a namespace without pods/capture: %+v", r)
	}
}
