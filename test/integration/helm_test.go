package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/podcap/podcap/test/testbed"
)

// helmOnlyLabels are the labels the chart adds to every object and selector that deploy/ has
// no equivalent of; the comparison ignores them.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}

// TestHelmMatchesKustomize renders deploy/helm/podcap with `helm template` and deploy/ with
// `kubectl kustomize` for the same settings and requires the same objects, field for field:
// the defaults against deploy/ alone, and each row of the chart README's table (engine
// native, own TLS Secret, monitoring, the users' RBAC of deploy/examples). Only the Namespace
// (kustomize creates it, Helm installs into it) and Helm's own labels differ.
func TestHelmMatchesKustomize(t *testing.T) {
	c := testBed(t)
	examples := filepath.Join(c.RepoRoot, "deploy/examples/capture-reader.yaml")
	for _, tc := range []struct {
		name       string
		values     string   // helm values (YAML)
		components []string // of deploy/
		resources  []string // more files, copied into the overlay
	}{
		{name: "defaults"},
		{name: "native", values: "engine: native\n", components: []string{"native"}},
		{name: "tls", values: "tls: {secretName: podcap-agent-tls}\n", components: []string{"tls"}},
		{name: "pod network", values: "hostNetwork: false\n", components: []string{"pod-network"}},
		{name: "monitoring", values: "monitoring: {podMonitor: true, prometheusRule: true, dashboard: true}\n", components: []string{"monitoring"}},
		{name: "all components", values: "engine: native\nhostNetwork: false\ntls: {secretName: podcap-agent-tls}\nmonitoring: {podMonitor: true, prometheusRule: true, dashboard: true}\n",
			components: []string{"native", "tls", "pod-network", "monitoring"}},
		{name: "users' RBAC", values: `rbac:
  captureReaders:
  - namespace: shop
    subjects:
    - {kind: Group, apiGroup: rbac.authorization.k8s.io, name: shop-developers}
    - {kind: ServiceAccount, name: ci, namespace: shop}
  pluginUsers:
  - {kind: Group, apiGroup: rbac.authorization.k8s.io, name: shop-developers}
  - {kind: ServiceAccount, name: ci, namespace: shop}
  metricsReaders:
  - {kind: ServiceAccount, name: prometheus-k8s, namespace: monitoring}
`, resources: []string{examples}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			dir := t.TempDir()
			values := filepath.Join(dir, "values.yaml")
			writeFile(t, values, tc.values)
			helmOut, err := c.Helm(ctx, "template", "podcap", filepath.Join(c.RepoRoot, "deploy/helm/podcap"),
				"-n", "podcap-system", "--include-crds", "-f", values)
			if err != nil {
				t.Fatal(err)
			}
			overlay := filepath.Join(dir, "overlay")
			if err := os.Mkdir(overlay, 0o755); err != nil {
				t.Fatal(err)
			}
			deployDir, err := filepath.Rel(overlay, filepath.Join(c.RepoRoot, "deploy"))
			if err != nil {
				t.Fatal(err)
			}
			k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- " + deployDir + "\n"
			for _, r := range tc.resources {
				b, err := os.ReadFile(r)
				if err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(overlay, filepath.Base(r)), string(b))
				k += "- " + filepath.Base(r) + "\n"
			}
			if len(tc.components) > 0 {
				k += "components:\n"
				for _, comp := range tc.components {
					k += "- " + deployDir + "/" + comp + "\n"
				}
			}
			writeFile(t, filepath.Join(overlay, "kustomization.yaml"), k)
			kustOut, err := c.Kubectl(ctx, "kustomize", overlay)
			if err != nil {
				t.Fatal(err)
			}

			helmObjs, kustObjs := renderedObjects(t, helmOut), renderedObjects(t, kustOut)
			if _, ok := kustObjs["Namespace//podcap-system"]; !ok {
				t.Errorf("kustomize rendered no Namespace podcap-system")
			}
			delete(kustObjs, "Namespace//podcap-system")
			for _, key := range sortedKeys(kustObjs) {
				h, ok := helmObjs[key]
				if !ok {
					t.Errorf("%s: rendered by kustomize, not by Helm", key)
					continue
				}
				if !reflect.DeepEqual(h, kustObjs[key]) {
					hy, _ := yaml.Marshal(h)
					ky, _ := yaml.Marshal(kustObjs[key])
					t.Errorf("%s differs:\n%s", key, lineDiff(string(ky), string(hy)))
				}
			}
			for _, key := range sortedKeys(helmObjs) {
				if _, ok := kustObjs[key]; !ok {
					t.Errorf("%s: rendered by Helm, not by kustomize", key)
				}
			}
			if !t.Failed() {
				t.Logf("%d objects, the same both ways", len(kustObjs))
			}
		})
	}
}

// renderedObjects decodes a stream of YAML documents into objects keyed kind/namespace/name,
// without Helm's own labels (and a labels map left empty by that).
func renderedObjects(t *testing.T, out string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode: %v\n%s", err, out)
		}
		if o == nil {
			continue
		}
		meta, _ := o["metadata"].(map[string]any)
		ns, _ := meta["namespace"].(string)
		key := fmt.Sprintf("%s/%s/%s", o["kind"], ns, meta["name"])
		if _, dup := objs[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		stripLabels(meta, "labels")
		if spec, ok := o["spec"].(map[string]any); ok {
			stripLabels(spec, "selector")
			if sel, ok := spec["selector"].(map[string]any); ok {
				stripLabels(sel, "matchLabels")
			}
			if tmpl, ok := spec["template"].(map[string]any); ok {
				if tm, ok := tmpl["metadata"].(map[string]any); ok {
					stripLabels(tm, "labels")
				}
			}
		}
		objs[key] = o
	}
	return objs
}

func stripLabels(m map[string]any, field string) {
	labels, ok := m[field].(map[string]any)
	if !ok {
		return
	}
	for _, l := range helmOnlyLabels {
		delete(labels, l)
	}
	if len(labels) == 0 {
		delete(m, field)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// lineDiff shows the lines of want (-) and got (+) that the other lacks.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- kustomize: " + l + "\n")
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ helm:      " + l + "\n")
		}
	}
	return b.String()
}

// TestHelmChartCaptures installs deploy/helm/podcap on the test bed with `helm install` (the
// image imported into the node, the node's CRI socket, netns dir and a capture dir as values,
// the API server on loopback through extraEnv), as release "helmcap" in its own namespace,
// and drives it: the annotation captures the pod's traffic into the ring on the node, the
// shipped rules (the chart's ConfigMap) start a DNS capture for a labelled pod, the agent
// reports a policy loaded, and `helm uninstall` removes every agent.
func TestHelmChartCaptures(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	const ns, release = "podcap-helm", "helmcap"
	captureDir := filepath.Join(c.CaptureDirRoot, "helm")
	api, sock := importAgentImage(t, c)
	repo, tag, _ := strings.Cut(c.AgentImage, ":")
	values := filepath.Join(t.TempDir(), "values.yaml")
	writeFile(t, values, fmt.Sprintf(`image: {repository: %q, tag: %q, pullPolicy: Never}
runtime: {socketDir: %q, endpoint: %q, netnsDir: %q}
captureDir: %q
extraEnv:
- {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
- {name: KUBERNETES_SERVICE_PORT, value: %q}
`, repo, tag, filepath.Dir(sock.Path), "unix://"+sock.Path, c.NetNSDir, captureDir, api.Port()))

	out, err := c.Helm(ctx, "install", release, filepath.Join(c.RepoRoot, "deploy/helm/podcap"), "-n", ns, "--create-namespace", "-f", values)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// the test uninstalls it at its end; this is for a test that failed before
		if out, err := c.Helm(ctx, "uninstall", release, "-n", ns, "--ignore-not-found", "--wait", "--timeout=90s"); err != nil {
			t.Errorf("helm uninstall: %v\n%s", err, out)
		}
		if out, err := c.Kubectl(ctx, "delete", "namespace", ns, "--wait=true", "--timeout=90s"); err != nil {
			t.Errorf("delete namespace: %v\n%s", err, out)
		}
		_ = os.RemoveAll(captureDir)
	})
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	// NOTES.txt: what to do next, with this release's names
	for _, want := range []string{"DaemonSet " + ns + "/helmcap-podcap-agent", "kubectl annotate pod <pod> tcpdump.antrea.io=3", "--agent-namespace=" + ns, "deploy/cleanup/"} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install output lacks %q:\n%s", want, out)
		}
	}
	if out, err := c.Kubectl(ctx, "-n", ns, "rollout", "status", "ds/helmcap-podcap-agent", "--timeout=120s"); err != nil {
		logs, _ := c.Kubectl(context.Background(), "-n", ns, "logs", "ds/helmcap-podcap-agent", "--tail=50")
		t.Fatalf("rollout: %v\n%s\n%s", err, out, logs)
	}
	agents, err := c.Admin().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podcap,app.kubernetes.io/component=agent"})
	if err != nil || len(agents.Items) != 1 {
		t.Fatalf("agent pods found by kubectl podcap's selector: %v, %d", err, len(agents.Items))
	}
	spec := agents.Items[0].Spec
	if spec.PriorityClassName != "helmcap-podcap-agent" || spec.Priority == nil || *spec.Priority != 1000000 || spec.ServiceAccountName != "helmcap-podcap-agent" {
		t.Errorf("agent pod: priority class %q (%v), service account %q", spec.PriorityClassName, spec.Priority, spec.ServiceAccountName)
	}

	// the manual annotation, end to end
	pod := runningPod(t, c, "helm-e2e", "test-pod", testbed.PodOptions{})
	annotate(t, c, pod, "2")
	dir := filepath.Join(captureDir, pod.Namespace, pod.Name)
	first := filepath.Join(dir, "capture-test-pod.pcap0")
	waitFor(t, 60*time.Second, "a packet in "+first, func() (bool, error) { return fileSize(first) > 24, nil })
	waitPodIP(t, first, pod.Status.PodIP)
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "ring of 2 files")

	// the chart's ConfigMap of the shipped rules: rules/dns.rego captures a labelled pod
	dnsPod := runningPod(t, c, "helm-e2e", "dns-pod", testbed.PodOptions{Labels: map[string]string{"podcap.io/capture-dns": "true"}})
	waitFor(t, 60*time.Second, "a policy capture of "+dnsPod.Name, func() (bool, error) {
		m, err := filepath.Glob(filepath.Join(captureDir, dnsPod.Namespace, dnsPod.Name, "policy-*"))
		return len(m) > 0, err
	})

	if v := metricsOfDaemonSet(t, "podcap_policy_last_reload_successful"); v != "1" {
		t.Errorf("podcap_policy_last_reload_successful %q, want 1 (the chart's rules ConfigMap loaded)", v)
	}

	unannotate(t, c, pod)
	waitFor(t, 30*time.Second, "files deleted", func() (bool, error) { return gone(dir), nil })

	if out, err := c.Helm(ctx, "uninstall", release, "-n", ns, "--wait", "--timeout=90s"); err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	waitFor(t, 90*time.Second, "no agent pods", func() (bool, error) {
		pods, err := c.Admin().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, err
	})
	if _, err := c.Admin().SchedulingV1().PriorityClasses().Get(ctx, "helmcap-podcap-agent", metav1.GetOptions{}); err == nil {
		t.Error("PriorityClass helmcap-podcap-agent is still there after helm uninstall")
	}
}

// TestOneImageName: the agent image has one name everywhere: what `make image push` builds
// and pushes ($(REGISTRY)/$(IMAGE):$(TAG)), the chart's default repository and appVersion,
// deploy/'s image, and the test bed's imported image.
func TestOneImageName(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	mk := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "make", append([]string{"-s", "-C", c.RepoRoot}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	def := mk("image-ref")
	repo, tag, _ := strings.Cut(def, ":")
	if repo != "ghcr.io/podcap/podcap-agent" || tag == "" {
		t.Errorf("make image-ref = %q, want ghcr.io/podcap/podcap-agent:<version>", def)
	}
	if got := mk("tag"); got != tag {
		t.Errorf("make tag = %q, want %q", got, tag)
	}
	// the commands of `make image push` for a user's registry (no Docker engine here: -n)
	dry := mk("-n", "image", "push", "REGISTRY=registry.example.com/platform", "TAG=v9.9.9", "DOCKER=podman")
	for _, want := range []string{
		"podman build --build-arg VERSION=", "-t registry.example.com/platform/podcap-agent:v9.9.9 .",
		"podman push registry.example.com/platform/podcap-agent:v9.9.9",
		"podman image inspect --format '{{index .RepoDigests 0}}' registry.example.com/platform/podcap-agent:v9.9.9",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("make -n image push lacks %q:\n%s", want, dry)
		}
	}

	chart, err := os.ReadFile(filepath.Join(c.RepoRoot, "deploy/helm/podcap/Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(chart, &meta); err != nil {
		t.Fatal(err)
	}
	out, err := c.Kubectl(ctx, "kustomize", filepath.Join(c.RepoRoot, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "image: " + repo + ":" + meta.AppVersion; !strings.Contains(out, want) {
		t.Errorf("deploy/ renders no %q (the chart's default image)", want)
	}
	values, err := c.Helm(ctx, "show", "values", filepath.Join(c.RepoRoot, "deploy/helm/podcap"))
	if err != nil || !strings.Contains(values, "repository: "+repo+"\n") {
		t.Errorf("chart values: %v, want repository %s", err, repo)
	}
	if got, _, _ := strings.Cut(c.AgentImage, ":"); got != repo {
		t.Errorf("the test bed's agent image %q, want repository %s", c.AgentImage, repo)
	}
}

// TestQuickStartOverlay renders the README quick start's kustomize overlay, as the README
// writes it, and finds the user's image in the DaemonSet.
func TestQuickStartOverlay(t *testing.T) {
	c := testBed(t)
	b, err := os.ReadFile(filepath.Join(c.RepoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "cat >my-podcap/kustomization.yaml <<EOF\n")
	overlay, _, ok2 := strings.Cut(rest, "\nEOF\n")
	if !ok || !ok2 {
		t.Fatal("README: no quick start overlay (cat >my-podcap/kustomization.yaml <<EOF ... EOF)")
	}
	dir := filepath.Join(t.TempDir(), "my-podcap")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	deployDir, err := filepath.Rel(dir, filepath.Join(c.RepoRoot, "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	overlay = strings.ReplaceAll(overlay, "../deploy", deployDir)
	overlay = strings.ReplaceAll(overlay, "$(make -s tag)", "v9.9.9")
	writeFile(t, filepath.Join(dir, "kustomization.yaml"), overlay+"\n")
	out, err := c.Kubectl(t.Context(), "kustomize", dir)
	if err != nil {
		t.Fatalf("the README's overlay does not render: %v\n%s", err, overlay)
	}
	if want := "image: registry.example.com/platform/podcap-agent:v9.9.9\n"; !strings.Contains(out, want) {
		t.Errorf("the README's overlay renders no %q", want)
	}
}
