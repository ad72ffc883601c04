package integration

import (
	"context"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/test/testbed"
)

// TestAlertFanOut: Alertmanager reaches one agent, another captures. The real Alertmanager
// (group_wait 0, bearer token) posts only to agent B, which serves a second Node that runs no
// pods; agent B records the CaptureAlert, agent A (the real node's, its webhook off) learns it
// from the API server and captures the pod rules/alerts.rego maps the alert to; agent B
// captures nothing. The resolve, also posted to B alone, stops A's capture.
//
// The second Node is a plain Node object with no kubelet behind it: the agent never reads its
// Node (it watches the pods whose spec.nodeName is --node-name, and the CaptureAlert objects),
// so what makes B "another node's agent" is only its --node-name, its own capture directory,
// ports and webhook token. A second kubelet would need a second containerd, cgroup root and
// CNI bridge on this host for nothing the test asserts. The Node is unschedulable and tainted
// NoSchedule, so that no pod of this or a concurrent test is scheduled onto it (nothing would
// run it), and deleted when the test ends.
func TestAlertFanOut(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	objects := alertObjects(t, c)

	nodeB := c.NodeName + "-fanout"
	createEmptyNode(t, c, nodeB)
	pod := runningPod(t, c, "alert-fanout", "cart", testbed.PodOptions{})

	rules := policyDir(t, c, nil)
	policyArgs := []string{"--policy-dir=" + rules, "--policy-poll-interval=100ms", "--policy-eval-timeout=10s"}
	// A: the real node's agent, no webhook credentials (the webhook answers 404)
	a := startAgent(t, c, policyArgs...)
	// B: the second node's agent, the only one Alertmanager knows
	scratch := t.TempDir()
	token := "fanout-webhook-token-0123456789"
	tokenFile := filepath.Join(scratch, "webhook-token")
	writeFile(t, tokenFile, token+"\n")
	b := startAgent(t, c, append([]string{"--node-name=" + nodeB, "--webhook-token-file=" + tokenFile,
		"--capture-dir=" + filepath.Join(scratch, "captures-b")}, policyArgs...)...)
	caFile := filepath.Join(scratch, "agent-b.crt")
	if err := b.WriteCertificatePEM(ctx, caFile); err != nil {
		t.Fatal(err)
	}
	am := c.StartAlertmanager(t, testbed.AlertmanagerOptions{
		Webhooks: []testbed.Webhook{{URL: b.APIURL(alerts.WebhookPath), BearerToken: token, CAFile: caFile}},
	})

	alert := testbed.Alert{
		Labels: map[string]string{"alertname": "FanOut", "namespace": pod.Namespace, "pod": pod.Name},
		// the capture stops as soon as the alert resolves
		Annotations: map[string]string{"podcap_stop_grace": "0s"},
	}
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}

	// the object, written by B
	fp := waitCaptureAlert(t, objects, pod.Name, alerts.StatusFiring)
	obj := getAlert(t, objects, fp)
	if by, _, _ := unstructured.NestedString(obj.Object, "status", "receivedBy"); by != nodeB {
		t.Errorf("CaptureAlert %s status.receivedBy = %q, want %q (agent B)", fp, by, nodeB)
	}
	if n := len(listAlerts(t, objects)); n != 1 {
		t.Errorf("%d CaptureAlert objects, want 1", n)
	}

	// A captures the pod into pcapng files that name the alert
	dir := alertSession(t, a, pod, 0)
	file := filepath.Join(dir, "capture-"+pod.Name+".pcapng0")
	waitFor(t, 30*time.Second, "packets in "+file, func() (bool, error) { return pcapngPackets(t, file) > 0, nil })
	waitEvent(t, c, pod, corev1.EventTypeNormal, "CaptureStarted", "FanOut")

	// B learned the alert too (it wrote it) but has no pod to capture
	waitFor(t, 30*time.Second, "both agents to see the alert as active", func() (bool, error) {
		return metric(t, a, "podcap_alerts_active") == 1 && metric(t, b, "podcap_alerts_active") == 1, nil
	})
	for _, m := range []struct {
		agent  *testbed.AgentProcess
		name   string
		series string
		want   func(float64) bool
		what   string
	}{
		{b, "B", `podcap_webhook_requests_total{code="200"}`, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{b, "B", `podcap_alerts_recorded_total{status="firing"}`, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{b, "B", `podcap_capture_starts_total{source="alert"}`, func(v float64) bool { return v == 0 }, "0"},
		{b, "B", `podcap_captures_running{source="alert"}`, func(v float64) bool { return v == 0 }, "0"},
		{a, "A", `podcap_webhook_requests_total{code="200"}`, func(v float64) bool { return v == 0 }, "0"},
		{a, "A", `podcap_alerts_recorded_total{status="firing"}`, func(v float64) bool { return v == 0 }, "0"},
		{a, "A", `podcap_capture_starts_total{source="alert"}`, func(v float64) bool { return v == 1 }, "1"},
		{a, "A", `podcap_captures_running{source="alert"}`, func(v float64) bool { return v == 1 }, "1"},
	} {
		if v := metric(t, m.agent, m.series); !m.want(v) {
			t.Errorf("agent %s: %s = %v, want %s", m.name, m.series, v, m.what)
		}
	}
	if n, err := am.Metric(ctx, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"}); err != nil || n != 0 {
		t.Errorf("alertmanager_notifications_failed_total{integration=webhook} = %v, %v; want 0", n, err)
	}
	if p := sessionProcs(t, b, "tcpdump"); len(p) != 0 {
		t.Errorf("agent B runs tcpdump %v, want none", p)
	}

	// the resolve, to B alone, stops A's capture; the files stay
	alert.EndsAt = time.Now().Add(-time.Second)
	if err := am.PostAlerts(ctx, alert); err != nil {
		t.Fatal(err)
	}
	waitCaptureAlert(t, objects, pod.Name, alerts.StatusResolved)
	waitFor(t, time.Minute, "agent A's alert capture to stop", func() (bool, error) {
		return len(sessionProcs(t, a, "tcpdump")) == 0 && metric(t, a, `podcap_captures_running{source="alert"}`) == 0, nil
	})
	if pcapngPackets(t, file) == 0 {
		t.Errorf("%s: the files of the stopped capture were not kept", file)
	}

	// B's capture directory holds nothing at all: no pod, no capture, no file
	var found []string
	err := filepath.WalkDir(b.CaptureDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != b.CaptureDir {
			found = append(found, path)
		}
		return nil
	})
	if err != nil || len(found) != 0 {
		t.Errorf("agent B's capture directory %s: %v, %v; want it empty", b.CaptureDir, found, err)
	}
}

// createEmptyNode creates a Node object that no kubelet serves and no pod is scheduled onto
// (unschedulable and tainted NoSchedule), and deletes it when the test ends.
func createEmptyNode(t *testing.T, c *testbed.Cluster, name string) {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"podcap.io/test": "no-kubelet"}},
		Spec: corev1.NodeSpec{
			Unschedulable: true,
			Taints:        []corev1.Taint{{Key: "podcap.io/no-kubelet", Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	nodes := c.Admin().CoreV1().Nodes()
	if _, err := nodes.Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := nodes.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", name, err)
		}
	})
}

// getAlert reads one CaptureAlert object.
func getAlert(t *testing.T, objects capturealerts, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range listAlerts(t, objects) {
		if o.GetName() == name {
			return &o
		}
	}
	t.Fatalf("no CaptureAlert %s", name)
	return nil
}
