package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcap/podcap/test/testbed"
)

// TestPluginStartStop: `kubectl podcap start/stop` set and remove the capture annotation on a
// real pod with the user's own credentials, and a user who may not patch the pod is told so.
func TestPluginStartStop(t *testing.T) {
	c := testBed(t)
	bin := buildPlugin(t, c)
	pod := runningPod(t, c, "plugin-a", "web", testbed.PodOptions{})
	capper := newPluginUser(t, c, "plugin-a", "capper", map[string][]rbacv1.PolicyRule{"plugin-a": captureRules})
	value := func() (string, bool) {
		p, err := c.Admin().CoreV1().Pods(pod.Namespace).Get(t.Context(), pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, ok := p.Annotations[annotation]
		return v, ok
	}

	r := runPlugin(t, bin, capper, "start", "web", "--files", "4")
	if r.Code != 0 || r.Stdout != "pod/web: capture requested (tcpdump.antrea.io=4)\n" {
		t.Errorf("start: %+v", r)
	}
	if v, _ := value(); v != "4" {
		t.Errorf("annotation %q after start, want 4", v)
	}
	if r := runPlugin(t, bin, capper, "stop", "web", "-n", "plugin-a"); r.Code != 0 {
		t.Errorf("stop: %+v", r)
	}
	if v, ok := value(); ok {
		t.Errorf("annotation %q after stop, want none", v)
	}

	nobody := newPluginUser(t, c, "plugin-a", "nobody", nil)
	r = runPlugin(t, bin, nobody, "start", "web")
	if r.Code != 1 || !strings.HasPrefix(r.Stderr, "error: you may not annotate pod plugin-a/web: ask for patch pods in namespace plugin-a") {
		t.Errorf("start without rights: %+v", r)
	}
	if v, ok := value(); ok {
		t.Errorf("annotation %q set by a user without rights", v)
	}
	if r := runPlugin(t, bin, capper, "stop", "nope"); r.Code != 1 || !strings.Contains(r.Stderr, "pod plugin-a/nope not found") {
		t.Errorf("stop of a missing pod: %+v", r)
	}
}

// TestPluginHostAgent runs the plugin's ls and explain (and get and stream when the agent
// serves the retrieval API) through a real port-forward: the real API server and kubelet,
// containerd's port-forward into a host-network pod. The agent is the test bed's host
// process; a host-network stand-in pod in podcap-system with the DaemonSet's labels and its
// API port is what the plugin finds and port-forwards to, so the tunnel ends in the host's
// network namespace where the agent listens. The reader's bearer token is also the agent's
// static API token; the other users' tokens go through TokenReview and SubjectAccessReview.
func TestPluginHostAgent(t *testing.T) {
	c := testBed(t)
	bin := buildPlugin(t, c)
	pod := runningPod(t, c, "plugin-b", "web", testbed.PodOptions{Annotations: map[string]string{annotation: "3"}})
	reader := newPluginUser(t, c, "plugin-b", "reader", map[string][]rbacv1.PolicyRule{
		"plugin-b": captureRules, "podcap-system": reachAgentRules})
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, reader.Token)
	agent := startAgent(t, c, "--api-token-file="+tokenFile)
	first := waitPackets(t, agent, pod, "capture-web.pcap0")
	waitPodIP(t, first, pod.Status.PodIP)
	standInAgentPod(t, c, agent)

	r := runPlugin(t, bin, reader, "ls")
	if r.Code != 0 || !hasRow(r.Stdout, "plugin-b", "web", c.NodeName, "manual", "running") {
		t.Errorf("ls: %+v", r)
	}
	caps := lsJSON(t, bin, reader)
	if len(caps) != 1 || caps[0].Pod != "web" || caps[0].Node != c.NodeName || caps[0].Packets == 0 {
		t.Fatalf("ls -o json: %+v", caps)
	}
	checkExplain(t, bin, reader, pod)

	// only create pods/portforward: the WebSocket upgrade (a GET) is refused, SPDY works
	spdyOnly := newPluginUser(t, c, "plugin-b", "spdy-only", map[string][]rbacv1.PolicyRule{
		"plugin-b": captureRules, "podcap-system": {reachAgentRules[0],
			{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}}}})
	// and the agent, which reviews tokens other than its static one (TokenReview, then a
	// SubjectAccessReview of get pods/capture), shows the capture
	r = runPlugin(t, bin, spdyOnly, "ls")
	if r.Code != 0 || !hasRow(r.Stdout, "plugin-b", "web", c.NodeName) {
		t.Errorf("ls with create pods/portforward only: %+v", r)
	}

	// a user who may get the pod and reach the agent but not get pods/capture: 403 with what
	// to ask for (ls of the namespace and explain), nothing listed across namespaces
	outsider := newPluginUser(t, c, "plugin-b", "outsider", map[string][]rbacv1.PolicyRule{
		"plugin-b": {{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}, "podcap-system": reachAgentRules})
	for _, args := range [][]string{{"ls"}, {"explain", "web"}} {
		r := runPlugin(t, bin, outsider, args...)
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, "error: you may not read captures in namespace plugin-b: ask for get pods/capture (403 from the podcap agent on node "+c.NodeName) {
			t.Errorf("%s without pods/capture: %+v", args[0], r)
		}
	}
	if r := runPlugin(t, bin, outsider, "ls", "-A"); r.Code != 0 || r.Stdout != "" || r.Stderr != "No captures found.\n" {
		t.Errorf("ls -A without pods/capture: %+v", r)
	}

	limited := newPluginUser(t, c, "plugin-b", "limited", map[string][]rbacv1.PolicyRule{
		"plugin-b": captureRules, "podcap-system": reachAgentRules[:1]})
	if r := runPlugin(t, bin, limited, "ls"); r.Code != 1 || !strings.Contains(r.Stderr, `cannot create resource "pods/portforward"`) {
		t.Errorf("ls without pods/portforward: %+v", r)
	}

	if caps[0].Files == nil {
		t.Log("the agent lists no capture files (no retrieval API yet): get and stream are not checked")
		return
	}
	checkRetrieval(t, bin, reader, pod, podDir(agent, pod))
}

// standInAgentPod runs a host-network pod with the agent's labels and a container port "api"
// at the host agent's API port, for the plugin to find and port-forward to.
func standInAgentPod(t *testing.T, c *testbed.Cluster, agent *testbed.AgentProcess) {
	t.Helper()
	_, p, err := splitHostPort(agent.APIListenAddress)
	if err != nil {
		t.Fatal(err)
	}
	runningPod(t, c, "podcap-system", "agent-stand-in", testbed.PodOptions{
		HostNetwork: true, Command: []string{"sleep", "3600"},
		Labels: map[string]string{"app.kubernetes.io/name": "podcap", "app.kubernetes.io/component": "agent"},
		Mutate: func(p2 *corev1.Pod) {
			p2.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "api", ContainerPort: int32(p), Protocol: corev1.ProtocolTCP}}
		},
	})
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	p, err := strconv.Atoi(addr[i+1:])
	return addr[:i], p, err
}

// hasRow tells whether a table has a row starting with the given columns, ignoring case
// (the agents before the retrieval API name the state "Running").
func hasRow(table string, cols ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) >= len(cols) && strings.EqualFold(strings.Join(f[:len(cols)], " "), strings.Join(cols, " ")) {
			return true
		}
	}
	return false
}

// pluginCapture is the part of `ls -o json`'s items the tests check.
type pluginCapture struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Node      string `json:"node"`
	Source    string `json:"source"`
	Packets   uint64 `json:"packets"`
	Files     []struct {
		Name string `json:"name"`
	} `json:"files"`
}

func lsJSON(t *testing.T, bin string, u *pluginUser) []pluginCapture {
	t.Helper()
	r := runPlugin(t, bin, u, "ls", "-o", "json")
	var caps []pluginCapture
	if err := json.Unmarshal([]byte(r.Stdout), &caps); r.Code != 0 || err != nil {
		t.Fatalf("ls -o json: %v: %+v", err, r)
	}
	return caps
}

// checkExplain: explain's summary and JSON name the pod's running manual capture.
func checkExplain(t *testing.T, bin string, u *pluginUser, pod *corev1.Pod) {
	t.Helper()
	r := runPlugin(t, bin, u, "explain", pod.Name)
	if r.Code != 0 || !strings.Contains(strings.ToLower(r.Stdout), "capture:   running (source manual, 3 files") {
		t.Errorf("explain: %+v", r)
	}
	r = runPlugin(t, bin, u, "explain", pod.Name, "-o", "json")
	var ex struct {
		Namespace string `json:"namespace"`
		Capture   struct {
			Source string `json:"source"`
		} `json:"capture"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &ex); r.Code != 0 || err != nil || ex.Namespace != pod.Namespace || ex.Capture.Source != "manual" {
		t.Errorf("explain -o json: %v, %+v: %+v", err, ex, r)
	}
}

// checkRetrieval: `get` downloads the ring's first file as it is on disk (the file only grows
// while the capture runs: the download is a prefix of the file read afterwards), `get
// --merge` writes one readable pcap with the pod's packets, and `stream | tcpdump -r - -c 3`
// reads packets of the running capture, after which the plugin ends cleanly (EPIPE).
func checkRetrieval(t *testing.T, bin string, u *pluginUser, pod *corev1.Pod, diskDir string) {
	t.Helper()
	dir := t.TempDir()
	r := runPlugin(t, bin, u, "get", pod.Name, "-n", pod.Namespace, "-o", dir)
	got, err := os.ReadFile(filepath.Join(dir, "capture-"+pod.Name+".pcap0"))
	if r.Code != 0 || err != nil {
		t.Fatalf("get: %v: %+v", err, r)
	}
	disk, err := os.ReadFile(filepath.Join(diskDir, "capture-"+pod.Name+".pcap0"))
	if err != nil || len(got) <= 24 || !strings.HasPrefix(string(disk), string(got)) {
		t.Errorf("downloaded file (%d bytes) is not the file on disk (%d bytes, %v)", len(got), len(disk), err)
	}
	r = runPlugin(t, bin, u, "get", pod.Name, "-n", pod.Namespace, "--merge", "-o", dir)
	merged := filepath.Join(dir, pod.Name+".pcap")
	if r.Code != 0 || strings.TrimSpace(r.Stdout) != merged {
		t.Fatalf("get --merge: %+v", r)
	}
	if s := readPcap(t, merged); s.packets == 0 || s.ips[pod.Status.PodIP] == 0 {
		t.Errorf("merged file: %d packets, %d of the pod", s.packets, s.ips[pod.Status.PodIP])
	}
	checkStreamToTcpdump(t, bin, u, pod)
}

// checkStreamToTcpdump runs `kubectl-podcap stream POD | tcpdump -nn -r - -c 3`.
func checkStreamToTcpdump(t *testing.T, bin string, u *pluginUser, pod *corev1.Pod) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	plugin := exec.CommandContext(ctx, bin, "--kubeconfig", u.Kubeconfig, "stream", pod.Name, "-n", pod.Namespace)
	tcpdump := exec.CommandContext(ctx, "tcpdump", "-nn", "-r", "-", "-c", "3")
	// an os.Pipe whose ends only the two processes hold: when tcpdump exits, the plugin's
	// next write fails with EPIPE
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	plugin.Stdout, tcpdump.Stdin = wr, rd
	var pluginErr, dumpOut, dumpErr strings.Builder
	plugin.Stderr, tcpdump.Stdout, tcpdump.Stderr = &pluginErr, &dumpOut, &dumpErr
	startErr := plugin.Start()
	if startErr == nil {
		startErr = tcpdump.Start()
	}
	rd.Close()
	wr.Close()
	if startErr != nil {
		t.Fatal(startErr)
	}
	if err := tcpdump.Wait(); err != nil {
		t.Errorf("tcpdump -r -: %v\n%s", err, dumpErr.String())
	}
	// tcpdump has exited: the plugin's next write fails with EPIPE, and it ends with 0
	if err := plugin.Wait(); err != nil {
		t.Errorf("stream after its reader went away: %v\n%s", err, pluginErr.String())
	}
	lines := splitLines(dumpOut.String())
	if len(lines) != 3 || !strings.Contains(dumpOut.String(), pod.Status.PodIP) {
		t.Errorf("tcpdump read from the stream:\n%s\n%s", dumpOut.String(), dumpErr.String())
	}
}
