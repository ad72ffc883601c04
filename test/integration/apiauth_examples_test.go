package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deploy/examples/capture-reader.yaml applies to a real API server and grants what its
// comments say, no more: its subjects may get pods/capture in shop and not elsewhere,
// port-forward to the agents in podcap-system and not elsewhere, and Prometheus may get
// /metrics. The answers are the API server's own (kubectl auth can-i, a SubjectAccessReview
// like the agent's).
func TestCaptureReaderExample(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	for _, ns := range []string{"shop", "monitoring", "podcap-system"} {
		if err := c.EnsureNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(c.RepoRoot, "deploy", "examples", "capture-reader.yaml")
	if out, err := c.Kubectl(ctx, "apply", "-f", file); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	t.Cleanup(func() {
		if out, err := c.Kubectl(context.Background(), "delete", "--ignore-not-found", "-f", file); err != nil {
			t.Errorf("%s: %v", out, err)
		}
	})
	dev := []string{"--as=jane", "--as-group=shop-developers"}
	ci := []string{"--as=system:serviceaccount:shop:ci", "--as-group=system:serviceaccounts"}
	prom := []string{"--as=system:serviceaccount:monitoring:prometheus-k8s", "--as-group=system:serviceaccounts"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append([]string{"get", "pods", "--subresource=capture", "-n", "shop"}, dev...), "yes"},
		{append([]string{"get", "pods", "--subresource=capture", "-n", "shop"}, ci...), "yes"},
		{append([]string{"get", "pods", "--subresource=capture", "-n", "default"}, dev...), "no"},
		{append([]string{"list", "pods", "--subresource=capture", "-n", "shop"}, dev...), "no"},
		{append([]string{"get", "pods", "-n", "shop"}, dev...), "no"}, // the capture subresource only
		{append([]string{"create", "pods", "--subresource=portforward", "-n", "podcap-system"}, dev...), "yes"},
		{append([]string{"get", "pods", "--subresource=portforward", "-n", "podcap-system"}, dev...), "yes"},
		{append([]string{"create", "pods", "--subresource=portforward", "-n", "podcap-system"}, ci...), "yes"},
		{append([]string{"list", "pods", "-n", "podcap-system"}, dev...), "yes"},
		{append([]string{"create", "pods", "--subresource=portforward", "-n", "shop"}, dev...), "no"},
		{append([]string{"create", "pods", "--subresource=exec", "-n", "podcap-system"}, dev...), "no"},
		{append([]string{"get", "/metrics"}, prom...), "yes"},
		{append([]string{"get", "/metrics"}, dev...), "no"},
	} {
		// RBAC reaches the authorizer through its informers: poll briefly for each answer
		var got string
		deadline := time.Now().Add(15 * time.Second)
		for {
			out, _ := c.Kubectl(ctx, append([]string{"auth", "can-i"}, tc.args...)...) // "no" exits 1
			if got = strings.TrimSpace(out); got == tc.want || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got != tc.want {
			t.Errorf("kubectl auth can-i %s: %q, want %q", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}
