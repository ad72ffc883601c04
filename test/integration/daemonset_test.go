package integration

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	bin := c.BuildAgent(t)
	if err := c.ImportAgentImage(ctx, bin); err != nil {
		t.Fatalf("agent image: %v", err)
	}
	api, err := url.Parse(c.APIServer)
	if err != nil {
		t.Fatal(err)
	}
	criSock, err := url.Parse(c.CRIEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	captureDir := filepath.Join(c.CaptureDirRoot, "daemonset")
	overlay := filepath.Join(t.TempDir(), "overlay")
	render := exec.CommandContext(ctx, filepath.Join(c.RepoRoot, "test/deploy/local/render.sh"),
		overlay, api.Port(), filepath.Dir(criSock.Path), captureDir, c.NetNSDir, filepath.Base(criSock.Path))
	if out, err := render.CombinedOutput(); err != nil {
		t.Fatalf("render overlay: %v\n%s", err, out)
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

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(dir), nil })
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStopped", "deleted")
}

func splitLines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// checkDaemonSetServing checks the deployed agent's two ports on the node (host network):
// the API only over HTTPS, with the self-signed certificate whose fingerprint the agent
// logged (no token Secret: the API answers 403), and health and metrics over plain HTTP.
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
		code   int
		body   string // in the response
	}{
		{client, "https://127.0.0.1:9696/api/v1/captures", http.StatusForbidden, "the API is disabled"},
		{plain, "http://127.0.0.1:9696/api/v1/captures", http.StatusBadRequest, "HTTPS"},
		{plain, "http://127.0.0.1:9695/readyz", http.StatusOK, "ok"},
		{plain, "http://127.0.0.1:9695/metrics", http.StatusOK, `podcap_api_tls_info{tls="self_signed"} 1`},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
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
