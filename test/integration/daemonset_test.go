package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/test/testbed"
)

// TestDaemonSetEndToEnd runs podcap as the real DaemonSet from deploy/ (through the local
// overlay: image, API address, the test node's CRI socket and capture dir), from an image
// assembled from the built binary plus Debian's tcpdump and nsenter, and drives the seed flow
// through it: annotate → ring files on the node with the pod's packets → remove → gone.
// The DaemonSet has neither hostPID nor SYS_PTRACE: it enters the pod's network namespace by
// the file containerd pins, mounted with HostToContainer propagation; the pod is created after
// the agent started, so its namespace reaches the agent only through that propagation.
func TestDaemonSetEndToEnd(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	captureDir := filepath.Join(c.CaptureDirRoot, "daemonset")
	deployDaemonSet(t, c, captureDir)
	criSock, err := url.Parse(c.CRIEndpoint)
	if err != nil {
		t.Fatal(err)
	}

	pod := runningPod(t, c, "ds-e2e", "test-pod", testbed.PodOptions{})
	annotate(t, c, pod, "3")
	dir := filepath.Join(captureDir, pod.Namespace, pod.Name)
	first := filepath.Join(dir, "capture-test-pod.pcap0")
	waitFor(t, 60*time.Second, "a packet in "+first, func() (bool, error) { return fileSize(first) > 24, nil })
	waitPodIP(t, first, pod.Status.PodIP)
	e := waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "ring of 3 files")
	if e.Source.Host != c.NodeName {
		t.Errorf("event source host %q, want %q", e.Source.Host, c.NodeName)
	}
	// the files are visible from inside the agent's pod, as users copy them out
	out, err := c.Kubectl(ctx, "-n", "podcap-system", "exec", "ds/podcap-agent", "--", "ls", dir)
	if err != nil || !slices.Contains(splitLines(out), "capture-test-pod.pcap0") {
		t.Errorf("ls in the agent pod: %v\n%s", err, out)
	}
	agents, err := c.Admin().CoreV1().Pods("podcap-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podcap"})
	if err != nil || len(agents.Items) != 1 {
		t.Fatalf("agent pods: %v, %d", err, len(agents.Items))
	}
	if sc := agents.Items[0].Spec.Containers[0].SecurityContext; sc == nil || sc.Privileged != nil && *sc.Privileged {
		t.Errorf("agent runs privileged: %+v", sc)
	} else if sc.Capabilities == nil || slices.Contains(sc.Capabilities.Add, "SYS_PTRACE") {
		t.Errorf("agent capabilities %+v, want no SYS_PTRACE", sc.Capabilities)
	}
	if agents.Items[0].Spec.HostPID {
		t.Error("agent runs with hostPID")
	}
	checkAgentPodDefaults(t, c, &agents.Items[0])
	netnsMounted := false
	for _, m := range agents.Items[0].Spec.Containers[0].VolumeMounts {
		if m.Name == "netns" {
			netnsMounted = m.MountPath == c.NetNSDir && m.ReadOnly &&
				m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer
		}
	}
	if !netnsMounted {
		t.Errorf("mounts %+v, want %s mounted read-only with HostToContainer propagation", agents.Items[0].Spec.Containers[0].VolumeMounts, c.NetNSDir)
	}
	// the CRI socket's directory is mounted read-only, and the capture above shows that the
	// socket answers through it
	criDir := filepath.Dir(criSock.Path)
	for _, m := range agents.Items[0].Spec.Containers[0].VolumeMounts {
		if m.Name == "cri-socket" && (!m.ReadOnly || m.MountPath != criDir) {
			t.Errorf("CRI socket mount %+v, want %s read-only", m, criDir)
		}
	}
	probe := filepath.Join(criDir, ".podcap-write-probe")
	if _, err := c.Kubectl(ctx, "-n", "podcap-system", "exec", "ds/podcap-agent", "--", "touch", probe); err == nil ||
		!strings.Contains(err.Error(), "Read-only file system") { // kubectl's error carries the command's stderr
		_ = os.Remove(probe)
		t.Errorf("touch in the CRI socket's directory from the agent pod: %v, want Read-only file system", err)
	}

	checkDaemonSetServing(t, c)
	// the cost of the host network (SECURITY.md): a port-forward to the agent pod reaches a
	// port open only on the node's loopback; deploy/pod-network/ closes it (TestDeployPodNetwork)
	checkLoopbackReach(t, c, &agents.Items[0], true)

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(dir), nil })
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted")
}

// deployDaemonSet deploys podcap from deploy/ through the local overlay (image, API address,
// the test node's CRI socket, netns dir and the capture dir captureDir), with the kustomize
// Components of deploy/ named (e.g. "native"), waits for its rollout and deletes it at the
// end of the test. The DaemonSet's ports 9695 and 9696 are on the host network: one such
// test at a time on a machine.
func deployDaemonSet(t *testing.T, c *testbed.Cluster, captureDir string, components ...string) {
	t.Helper()
	ctx := t.Context()
	api, criSock := importAgentImage(t, c)
	overlay := filepath.Join(t.TempDir(), "overlay")
	render := exec.CommandContext(ctx, filepath.Join(c.RepoRoot, "test/deploy/local/render.sh"),
		overlay, api.Port(), filepath.Dir(criSock.Path), captureDir, c.NetNSDir, filepath.Base(criSock.Path))
	if out, err := render.CombinedOutput(); err != nil {
		t.Fatalf("render overlay: %v\n%s", err, out)
	}
	if slices.Contains(components, "pod-network") {
		// on the pod network the agent has no loopback of the node: it reaches the API server
		// at the bridge's gateway (where the test bed's API server listens too; no kube-proxy
		// here for the kubernetes Service). Last in the overlay's patches, after the loopback one.
		writeFile(t, filepath.Join(overlay, "pod-network-api.yaml"), fmt.Sprintf(`apiVersion: apps/v1
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
          value: %q
`, c.Gateway.String()))
		k := filepath.Join(overlay, "kustomization.yaml")
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, k, string(b)+"- path: pod-network-api.yaml\n")
	}
	if len(components) > 0 {
		deployDir, err := filepath.Rel(overlay, filepath.Join(c.RepoRoot, "deploy"))
		if err != nil {
			t.Fatal(err)
		}
		k := filepath.Join(overlay, "kustomization.yaml")
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, "components:\n"...)
		for _, name := range components {
			b = append(b, "- "+deployDir+"/"+name+"\n"...)
		}
		writeFile(t, k, string(b))
	}
	if out, err := c.Kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := c.Kubectl(ctx, "delete", "-k", overlay, "--wait=true", "--timeout=90s"); err != nil {
			t.Errorf("kubectl delete -k: %v\n%s", err, out)
		}
		// deploy/ includes the ClusterRole the test bed's agent user is bound to: restore it
		if err := c.ApplyAgentRBAC(ctx); err != nil {
			t.Errorf("restore the agent's RBAC: %v", err)
		}
		_ = os.RemoveAll(captureDir)
	})
	if out, err := c.Kubectl(ctx, "-n", "podcap-system", "rollout", "status", "ds/podcap-agent", "--timeout=120s"); err != nil {
		logs, _ := c.Kubectl(context.Background(), "-n", "podcap-system", "logs", "ds/podcap-agent", "--tail=50")
		desc, _ := c.Kubectl(context.Background(), "-n", "podcap-system", "describe", "pods")
		t.Fatalf("rollout: %v\n%s\n%s\n%s", err, out, logs, desc)
	}
}

// importAgentImage builds the agent and imports its image into the node (the image the
// DaemonSet and the chart name, never pulled), and returns the API server's and the CRI
// socket's URLs, which a deployment on this test bed must point the agent at.
func importAgentImage(t *testing.T, c *testbed.Cluster) (api, criSock *url.URL) {
	t.Helper()
	if err := c.ImportAgentImage(t.Context(), c.BuildAgent(t)); err != nil {
		t.Fatalf("agent image: %v", err)
	}
	api, err := url.Parse(c.APIServer)
	if err != nil {
		t.Fatal(err)
	}
	if criSock, err = url.Parse(c.CRIEndpoint); err != nil {
		t.Fatal(err)
	}
	return api, criSock
}

// checkAgentPodDefaults checks the scheduling defaults of deploy/ on the deployed agent pod:
// admitted by the real API server with the priority of PriorityClass podcap-agent (resolved
// by the Priority admission plugin), the Linux node selector, every taint tolerated, an
// ephemeral-storage request and limit, and Running on the node.
func checkAgentPodDefaults(t *testing.T, c *testbed.Cluster, pod *corev1.Pod) {
	t.Helper()
	spec := pod.Spec
	if spec.PriorityClassName != "podcap-agent" || spec.Priority == nil || *spec.Priority != 1000000 {
		t.Errorf("agent pod priority class %q, priority %v; want podcap-agent, 1000000", spec.PriorityClassName, spec.Priority)
	}
	pc, err := c.Admin().SchedulingV1().PriorityClasses().Get(t.Context(), "podcap-agent", metav1.GetOptions{})
	if err != nil || pc.Value != 1000000 || pc.GlobalDefault {
		t.Errorf("PriorityClass podcap-agent: %v %+v", err, pc)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" || len(spec.NodeSelector) != 1 {
		t.Errorf("agent node selector %v, want exactly kubernetes.io/os: linux", spec.NodeSelector)
	}
	// the DaemonSet controller adds its own tolerations (not-ready, unreachable, ...); the
	// manifest's tolerate-everything one must be there
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("agent tolerations %+v, want one that tolerates every taint", spec.Tolerations)
	}
	res := spec.Containers[0].Resources
	if q := res.Requests[corev1.ResourceEphemeralStorage]; q.String() != "64Mi" {
		t.Errorf("agent ephemeral-storage request %s, want 64Mi", q.String())
	}
	if q := res.Limits[corev1.ResourceEphemeralStorage]; q.String() != "256Mi" {
		t.Errorf("agent ephemeral-storage limit %s, want 256Mi", q.String())
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Spec.NodeName != c.NodeName {
		t.Errorf("agent pod %s on node %q, want Running on %q", pod.Status.Phase, pod.Spec.NodeName, c.NodeName)
	}
}

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// checkDaemonSetServing checks the deployed agent's two ports on the node (host network):
// the API only over HTTPS, with the self-signed certificate whose fingerprint the agent
// logged (Kubernetes authentication: no credentials and a bad token are 401, the latter through
// a real TokenReview the DaemonSet may make), and health and metrics over plain HTTP.
func checkDaemonSetServing(t *testing.T, c *testbed.Cluster) {
	t.Helper()
	ctx := t.Context()
	logs, err := c.Kubectl(ctx, "-n", "podcap-system", "logs", "ds/podcap-agent")
	if err != nil {
		t.Fatalf("agent logs: %v", err)
	}
	client, err := testbed.PinnedAPIClient(logs)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs)
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct {
		client *http.Client
		url    string
		token  string
		code   int
		body   string // in the response
	}{
		{client, "https://127.0.0.1:9696/api/v1/captures", "", http.StatusUnauthorized, "no credentials"},
		// a TokenReview by the DaemonSet's ServiceAccount (deploy/rbac.yaml grants it): 401, not 503
		{client, "https://127.0.0.1:9696/api/v1/captures", "not-a-token-" + strings.Repeat("x", 32), http.StatusUnauthorized, "refused"},
		{plain, "http://127.0.0.1:9696/api/v1/captures", "", http.StatusBadRequest, "HTTPS"},
		{plain, "http://127.0.0.1:9695/readyz", "", http.StatusOK, "ok"},
		{plain, "http://127.0.0.1:9695/metrics", "", http.StatusOK, `podcap_api_tls_info{tls="self_signed"} 1`},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", tc.url, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.body) {
			t.Errorf("GET %s: %d, want %d with %q:\n%.2000s", tc.url, resp.StatusCode, tc.code, tc.body, b)
		}
	}
}

// TestDeployTLSComponent: the Component deploy/tls/ (bring your own Secret) renders onto
// deploy/ with the Secret's mount and the two flags, and leaves the plain HTTP probes alone.
func TestDeployTLSComponent(t *testing.T) {
	c := testBed(t)
	dir := t.TempDir()
	deployDir, err := filepath.Rel(dir, filepath.Join(c.RepoRoot, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "kustomization.yaml"), "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"+
		"resources:\n- "+deployDir+"\ncomponents:\n- "+deployDir+"/tls\n")
	out, err := c.Kubectl(t.Context(), "kustomize", dir)
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	var ds *appsv1.DaemonSet
	for _, doc := range strings.Split(out, "\n---\n") {
		var obj appsv1.DaemonSet
		if err := yaml.Unmarshal([]byte(doc), &obj); err == nil && obj.Kind == "DaemonSet" {
			ds = &obj
		}
	}
	if ds == nil {
		t.Fatalf("no DaemonSet in\n%s", out)
	}
	agent := ds.Spec.Template.Spec.Containers[0]
	for _, arg := range []string{"--api-listen-address=:9696", "--tls-cert-file=/etc/podcap/tls/tls.crt", "--tls-private-key-file=/etc/podcap/tls/tls.key"} {
		if !slices.Contains(agent.Args, arg) {
			t.Errorf("args %q lack %s", agent.Args, arg)
		}
	}
	if !slices.ContainsFunc(agent.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "tls" && m.MountPath == "/etc/podcap/tls" && m.ReadOnly
	}) || !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == "tls" && v.Secret != nil && v.Secret.SecretName == "podcap-agent-tls"
	}) {
		t.Errorf("no read-only mount of Secret podcap-agent-tls at /etc/podcap/tls: %+v %+v", agent.VolumeMounts, ds.Spec.Template.Spec.Volumes)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": agent.LivenessProbe, "readiness": agent.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "metrics" || p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			t.Errorf("%s probe %+v, want plain HTTP on port metrics", name, p)
		}
	}
}

// TestDeployNativeComponent runs the native-only DaemonSet: deploy/ with the Component
// deploy/native, on the test bed. Its agent has exactly CAP_SYS_ADMIN and CAP_NET_RAW (no
// SETGID, no SYS_PTRACE), no hostPID, and --engine=native; an annotated pod's packets reach
// the ring, so do a labelled pod's (a policy capture: its capture.json says native), and no
// tcpdump or nsenter process runs for either capture.
// test/deploy/local/capcheck.sh (NATIVE=1) shows that each of the two capabilities is needed.
func TestDeployNativeComponent(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	captureDir := filepath.Join(c.CaptureDirRoot, "daemonset-native")
	deployDaemonSet(t, c, captureDir, "native")

	agents, err := c.Admin().CoreV1().Pods("podcap-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podcap"})
	if err != nil || len(agents.Items) != 1 {
		t.Fatalf("agent pods: %v, %d", err, len(agents.Items))
	}
	spec := agents.Items[0].Spec
	agent := spec.Containers[0]
	if !slices.Contains(agent.Args, "--engine=native") {
		t.Errorf("args %q lack --engine=native", agent.Args)
	}
	sc := agent.SecurityContext
	if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"SYS_ADMIN", "NET_RAW"}) {
		t.Errorf("agent securityContext %+v, want capabilities drop [ALL] add [SYS_ADMIN NET_RAW], not privileged", sc)
	}
	if spec.HostPID {
		t.Error("agent runs with hostPID")
	}

	pod := runningPod(t, c, "ds-native", "test-pod", testbed.PodOptions{})
	annotate(t, c, pod, "2")
	dir := filepath.Join(captureDir, pod.Namespace, pod.Name)
	first := filepath.Join(dir, "capture-test-pod.pcap0")
	waitFor(t, 60*time.Second, "a packet in "+first, func() (bool, error) { return fileSize(first) > 24, nil })
	waitPodIP(t, first, pod.Status.PodIP)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "with the native engine into a ring of 2 files")

	// a policy capture (rules/labels.rego, from the ConfigMap deploy/ mounts; its decision
	// names no engine) runs on the native engine too, and its capture.json says so
	labelled := runningPod(t, c, "ds-native", "labelled", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture": "true"}})
	var session string
	waitFor(t, 60*time.Second, "a policy capture of "+labelled.Name, func() (bool, error) {
		m, err := filepath.Glob(filepath.Join(captureDir, labelled.Namespace, labelled.Name, "policy-*", "capture.json"))
		if len(m) == 0 || err != nil {
			return false, err
		}
		session = filepath.Dir(m[len(m)-1])
		return fileSize(filepath.Join(session, "capture-labelled.pcap0")) > 24, nil
	})
	waitPodIP(t, filepath.Join(session, "capture-labelled.pcap0"), labelled.Status.PodIP)
	var meta struct{ Engine, Source string }
	b, err := os.ReadFile(filepath.Join(session, "capture.json"))
	if err == nil {
		err = json.Unmarshal(b, &meta)
	}
	if err != nil || meta.Engine != "native" {
		t.Errorf("capture.json: engine %q, want native: %v %s", meta.Engine, err, b)
	}

	// the agent's process on the node (its args name this test's capture dir) runs the
	// capture itself: nothing below it is tcpdump or nsenter
	agentPID := 0
	procs := hostProcs(t)
	for pid, p := range procs {
		if p.comm == "podcap-agent" && strings.Contains(p.cmdline, "--capture-dir="+captureDir+"\x00") {
			agentPID = pid
		}
	}
	if agentPID == 0 {
		t.Fatal("no podcap-agent process of the DaemonSet on the node")
	}
	for pid, p := range procs {
		for q := p.ppid; q > 1; q = procs[q].ppid {
			if q == agentPID {
				if p.comm == "tcpdump" || p.comm == "nsenter" {
					t.Errorf("process %d (%s) runs under the agent %d: the native engine needs none", pid, p.comm, agentPID)
				}
				break
			}
		}
	}
	for series, want := range map[string]string{
		`podcap_engine_captures_running{engine="native"}`:  "2",
		`podcap_engine_captures_running{engine="tcpdump"}`: "0",
	} {
		if got := metricsOfDaemonSet(t, series); got != want {
			t.Errorf("%s = %q, want %s", series, got, want)
		}
	}

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(dir), nil })
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted")
}

type hostProc struct {
	comm, cmdline string
	ppid          int
}

// hostProcs reads every process of the node from /proc.
func hostProcs(t *testing.T) map[int]hostProc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	procs := map[int]hostProc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // ended
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses
		open, end := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if open < 0 || end < open {
			continue
		}
		var p hostProc
		p.comm = string(stat[open+1 : end])
		fields := strings.Fields(string(stat[end+1:]))
		if len(fields) < 2 {
			continue
		}
		p.ppid, _ = strconv.Atoi(fields[1])
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		p.cmdline = string(cmdline)
		procs[pid] = p
	}
	return procs
}

// metricsOfDaemonSet returns the value of series on the deployed agent's metrics port.
func metricsOfDaemonSet(t *testing.T, series string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:9695/metrics", nil)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestDeployDefaults renders deploy/ and deploy/cleanup/: the DaemonSet's scheduling defaults
// (Linux node selector, PriorityClass podcap-agent shipped with it, every taint tolerated,
// ephemeral-storage bounds) and the clean-up DaemonSet reaching the same nodes and deleting
// under the same capture hostPath.
func TestDeployDefaults(t *testing.T) {
	c := testBed(t)
	out, err := c.Kubectl(t.Context(), "kustomize", filepath.Join(c.RepoRoot, "deploy"))
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	var ds *appsv1.DaemonSet
	var pc *schedulingv1.PriorityClass
	for _, doc := range strings.Split(out, "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "DaemonSet":
			ds = &appsv1.DaemonSet{}
			if err := yaml.Unmarshal([]byte(doc), ds); err != nil {
				t.Fatal(err)
			}
		case "PriorityClass":
			pc = &schedulingv1.PriorityClass{}
			if err := yaml.Unmarshal([]byte(doc), pc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ds == nil || pc == nil {
		t.Fatalf("no DaemonSet or PriorityClass in\n%s", out)
	}
	spec := ds.Spec.Template.Spec
	if pc.Name != "podcap-agent" || pc.Value != 1000000 || pc.GlobalDefault ||
		pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("PriorityClass %+v", pc)
	}
	if spec.PriorityClassName != pc.Name {
		t.Errorf("priorityClassName %q, want %q", spec.PriorityClassName, pc.Name)
	}
	linuxOnly := map[string]string{"kubernetes.io/os": "linux"}
	everything := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	if !maps.Equal(spec.NodeSelector, linuxOnly) {
		t.Errorf("nodeSelector %v, want %v", spec.NodeSelector, linuxOnly)
	}
	if !slices.Equal(spec.Tolerations, everything) {
		t.Errorf("tolerations %+v, want %+v", spec.Tolerations, everything)
	}
	res := spec.Containers[0].Resources
	req, lim := res.Requests[corev1.ResourceEphemeralStorage], res.Limits[corev1.ResourceEphemeralStorage]
	if req.String() != "64Mi" || lim.String() != "256Mi" {
		t.Errorf("ephemeral-storage request %s, limit %s; want 64Mi, 256Mi", req.String(), lim.String())
	}
	captures := ""
	for _, v := range spec.Volumes {
		if v.Name == "captures" && v.HostPath != nil {
			captures = v.HostPath.Path
		}
	}

	b, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy/cleanup/cleanup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var clean *appsv1.DaemonSet
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var obj appsv1.DaemonSet
		if err := yaml.Unmarshal([]byte(doc), &obj); err == nil && obj.Kind == "DaemonSet" {
			clean = &obj
		}
	}
	if clean == nil {
		t.Fatal("no DaemonSet in deploy/cleanup/cleanup.yaml")
	}
	cs := clean.Spec.Template.Spec
	if !maps.Equal(cs.NodeSelector, linuxOnly) || !slices.Equal(cs.Tolerations, everything) {
		t.Errorf("clean-up nodeSelector %v tolerations %+v, want the agent's", cs.NodeSelector, cs.Tolerations)
	}
	if len(cs.Volumes) != 1 || cs.Volumes[0].HostPath == nil || cs.Volumes[0].HostPath.Path != captures || captures == "" {
		t.Errorf("clean-up volumes %+v, want the agent's captures hostPath %q", cs.Volumes, captures)
	}
	if len(cs.InitContainers) != 1 || !strings.Contains(strings.Join(cs.InitContainers[0].Command, " "), "cd /captures && rm -rf -- * .[!.]* ..?*") {
		t.Errorf("clean-up init containers %+v", cs.InitContainers)
	}
}

// TestDeployCleanup runs deploy/cleanup/cleanup.yaml on the test bed (its image replaced by
// the local busybox workload image, its hostPath by a test capture dir holding capture files):
// the rollout finishes only after every file under the dir is deleted, and the dir stays.
// It also asks the real API server (dry run) whether system-node-critical, the README's
// override, is admitted outside kube-system under the default admission plugins.
func TestDeployCleanup(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	captureDir := filepath.Join(c.CaptureDirRoot, "cleanup")
	for _, f := range []string{"ns1/pod1/capture-app.pcap0", "ns1/pod1/capture.json", "ns2/pod2/capture-web.pcap3", "stray", ".hidden"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(captureDir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(captureDir, f), "pcap")
	}
	t.Cleanup(func() { _ = os.RemoveAll(captureDir) })
	b, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy/cleanup/cleanup.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(b)
	for old, new := range map[string]string{
		"        image: busybox:1.37\n":    "        image: " + c.WorkloadImage + "\n        imagePullPolicy: Never\n",
		"path: /var/lib/podcap/captures\n": "path: " + captureDir + "\n",
	} {
		if !strings.Contains(m, old) {
			t.Fatalf("deploy/cleanup/cleanup.yaml has no %q", old)
		}
		m = strings.ReplaceAll(m, old, new)
	}
	manifest := filepath.Join(t.TempDir(), "cleanup.yaml")
	writeFile(t, manifest, m)
	if out, err := c.Kubectl(ctx, "apply", "-f", manifest); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if out, err := c.Kubectl(ctx, "delete", "-f", manifest, "--wait=true", "--timeout=90s"); err != nil {
			t.Errorf("kubectl delete: %v\n%s", err, out)
		}
	})
	if out, err := c.Kubectl(ctx, "-n", "podcap-cleanup", "rollout", "status", "ds/podcap-cleanup", "--timeout=120s"); err != nil {
		logs, _ := c.Kubectl(context.Background(), "-n", "podcap-cleanup", "logs", "ds/podcap-cleanup", "-c", "delete-captures")
		t.Fatalf("rollout: %v\n%s\ninit container log:\n%s", err, out, logs)
	}
	entries, err := os.ReadDir(captureDir)
	if err != nil || len(entries) != 0 {
		t.Errorf("capture dir after the clean-up: %v, %d entries, want it empty", err, len(entries))
	}
	out, err := c.Kubectl(ctx, "-n", "podcap-cleanup", "logs", "ds/podcap-cleanup", "-c", "delete-captures")
	if err != nil || !strings.Contains(out, "capture files deleted on "+c.NodeName) {
		t.Errorf("clean-up log: %v\n%s", err, out)
	}

	// the README's override: system-node-critical in a namespace other than kube-system
	pod := c.WorkloadPod("podcap-cleanup", "critical-probe", testbed.PodOptions{})
	pod.Spec.PriorityClassName = "system-node-critical"
	created, err := c.Admin().CoreV1().Pods("podcap-cleanup").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Errorf("system-node-critical outside kube-system: %v", err)
	} else if created.Spec.Priority == nil || *created.Spec.Priority != 2000001000 {
		t.Errorf("system-node-critical pod priority %v, want 2000001000", created.Spec.Priority)
	}
}
