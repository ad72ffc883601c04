package testbed

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostCluster is a Cluster with only what the Prometheus and Alertmanager helpers use (work,
// log and run dirs), for tests of those helpers that need no Kubernetes. It skips the test if
// Debian's binaries are missing.
func hostCluster(t *testing.T) *Cluster {
	t.Helper()
	for _, b := range []string{AlertmanagerBinary, AmtoolBinary, PrometheusBinary, PromtoolBinary} {
		if _, err := os.Stat(b); err != nil {
			t.Skipf("%s: %v (Debian's prometheus and prometheus-alertmanager; cluster.sh build installs them)", b, err)
		}
	}
	dir := t.TempDir()
	return &Cluster{workDir: dir, LogDir: filepath.Join(dir, "logs"), RunDir: dir}
}

func TestAlertmanagerWebhook(t *testing.T) {
	c := hostCluster(t)
	ctx := t.Context()
	hook := NewWebhookRecorder(t)
	am := c.StartAlertmanager(t, AlertmanagerOptions{
		Webhooks: []Webhook{{Name: "rec", URL: hook.URL, BearerToken: "s3cret", MaxAlerts: 5}},
	})

	start := time.Now()
	labels := map[string]string{"alertname": "TestFault", "namespace": "ns1", "pod": "p1"}
	if err := am.PostAlerts(ctx, Alert{Labels: labels, Annotations: map[string]string{"summary": "x"}}); err != nil {
		t.Fatal(err)
	}
	firing, err := hook.Wait(ctx, "firing p1", func(n WebhookNotification) bool {
		return n.Message.Status == "firing" && len(n.Message.Alerts) == 1 && n.Message.Alerts[0].Labels["pod"] == "p1"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("posted -> webhook in %s", firing.Received.Sub(start).Round(time.Millisecond))
	if firing.Authorization != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the bearer token", firing.Authorization)
	}
	if m := firing.Message; m.Version != "4" || m.Receiver != "rec" || m.Alerts[0].Fingerprint == "" {
		t.Errorf("message %+v", m)
	}
	alerts, err := am.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 || alerts[0].Labels["pod"] != "p1" || alerts[0].Status.State != "active" || alerts[0].Fingerprint != firing.Message.Alerts[0].Fingerprint {
		t.Errorf("alerts %+v", alerts)
	}
	sent, err := am.Metric(ctx, "alertmanager_notifications_total", map[string]string{"integration": "webhook"})
	if err != nil || sent < 1 {
		t.Errorf("alertmanager_notifications_total{integration=webhook} = %v, %v; want >= 1", sent, err)
	}
	if _, err := am.Metric(ctx, "alertmanager_notifications_total", map[string]string{"integration": "nope"}); err == nil {
		t.Error("Metric: want an error for labels no series has")
	}

	// resolved by EndsAt in the past
	if err := am.PostAlerts(ctx, Alert{Labels: labels, StartsAt: start.Add(-time.Minute), EndsAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := hook.Wait(ctx, "resolved p1", func(n WebhookNotification) bool {
		return n.Message.Status == "resolved" && len(n.Message.Alerts) == 1 && n.Message.Alerts[0].Labels["pod"] == "p1"
	}); err != nil {
		t.Fatal(err)
	}

	// a receiver that answers 500: Alertmanager retries with backoff, and counts the
	// notification as failed once its retries ran out (≈ 10 s)
	hook.SetStatus(http.StatusInternalServerError)
	failedBefore, err := am.Metric(ctx, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"})
	if err != nil {
		t.Fatal(err)
	}
	if err := am.PostAlerts(ctx, Alert{Labels: map[string]string{"alertname": "TestFault", "pod": "p2"}}); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = poll(waitCtx, func(ctx context.Context) (bool, error) {
		v, err := am.Metric(ctx, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"})
		return v > failedBefore, err
	}, "alertmanager_notifications_failed_total to grow")
	if err != nil {
		t.Fatal(err)
	}

	// reload: a new token, a route that only takes pod p3
	hook.SetStatus(http.StatusOK)
	if err := am.Reload(ctx, AlertmanagerOptions{Webhooks: []Webhook{{URL: hook.URL, BearerToken: "rotated", Matchers: []string{`pod="p3"`}}}}); err != nil {
		t.Fatal(err)
	}
	if err := am.PostAlerts(ctx, Alert{Labels: map[string]string{"alertname": "TestFault", "pod": "p3"}}); err != nil {
		t.Fatal(err)
	}
	n, err := hook.Wait(ctx, "firing p3", func(n WebhookNotification) bool {
		return n.Message.Status == "firing" && n.Message.Alerts[0].Labels["pod"] == "p3"
	})
	if err != nil {
		t.Fatal(err)
	}
	if n.Authorization != "Bearer rotated" || n.Message.Receiver != "webhook-0" {
		t.Errorf("after reload: Authorization %q, receiver %q", n.Authorization, n.Message.Receiver)
	}

	// a config amtool rejects is an error, and the running one stays
	if err := am.Reload(ctx, AlertmanagerOptions{Config: "route: {receiver: missing}\n"}); err == nil {
		t.Error("Reload of a bad config: want an error")
	}
	if _, err := am.Alerts(ctx); err != nil {
		t.Errorf("after a rejected reload: %v", err)
	}
	if err := am.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

// TestAlertmanagerWebhookStatusCodes pins what Debian's Alertmanager does with a webhook's
// answer: a 4xx, 429 included, is one attempt, counted as failed at once (group_interval 1h:
// no second flush during the test); a 5xx is retried with backoff until the flush's timeout
// (group_interval, at least 10 s) and then counted once. A failed notification is sent again
// at the group's next flush (every group_interval).
func TestAlertmanagerWebhookStatusCodes(t *testing.T) {
	c := hostCluster(t)
	for _, tc := range []struct {
		code    int
		retried bool
	}{
		{http.StatusBadRequest, false},
		{http.StatusUnauthorized, false},
		{http.StatusRequestEntityTooLarge, false},
		{http.StatusTooManyRequests, false},
		{http.StatusInternalServerError, true},
		{http.StatusServiceUnavailable, true},
	} {
		t.Run(http.StatusText(tc.code), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			hook := NewWebhookRecorder(t)
			hook.SetStatus(tc.code)
			interval := time.Hour
			if tc.retried {
				interval = time.Second // the flush times out after 10 s
			}
			am := c.StartAlertmanager(t, AlertmanagerOptions{Webhooks: []Webhook{{URL: hook.URL}}, GroupInterval: interval})
			start := time.Now()
			if err := am.PostAlerts(ctx, Alert{Labels: map[string]string{"alertname": "X"}}); err != nil {
				t.Fatal(err)
			}
			err := poll(ctx, func(ctx context.Context) (bool, error) {
				v, err := am.Metric(ctx, "alertmanager_notifications_failed_total", map[string]string{"integration": "webhook"})
				return v == 1, err
			}, "one failed notification")
			if err != nil {
				t.Fatal(err)
			}
			attempts := len(hook.Notifications())
			t.Logf("%d: counted as failed after %s, %d attempts", tc.code, time.Since(start).Round(time.Millisecond), attempts)
			if tc.retried && attempts < 2 || !tc.retried && attempts != 1 {
				t.Errorf("%d attempts; retried: want %v", attempts, tc.retried)
			}
		})
	}
}

// TestAlertmanagerWebhookPinnedCA: the certificate PinnedCertificatePEM fetches (checked
// against the fingerprint a log names, as an agent logs its self-signed one) is what
// Alertmanager's tls_config.ca_file needs to trust the server.
func TestAlertmanagerWebhookPinnedCA(t *testing.T) {
	c := hostCluster(t)
	ctx := t.Context()
	hook := NewTLSWebhookRecorder(t)
	addr := strings.TrimPrefix(strings.TrimSuffix(hook.URL, "/"), "https://")
	sum := sha256.Sum256(hook.Certificate().Raw)
	var fp []string
	for _, b := range sum {
		fp = append(fp, fmt.Sprintf("%02X", b))
	}
	log := `I1206 06:00:00.000000 1 selfsigned.go:89] "Generated a self-signed TLS certificate" sha256Fingerprint="` + strings.Join(fp, ":") + `"`

	if _, err := PinnedCertificatePEM(ctx, addr, strings.Replace(log, fp[0], "00", 1)); err == nil {
		t.Fatal("a certificate whose fingerprint is not the logged one: want an error")
	}
	pemBytes, err := PinnedCertificatePEM(ctx, addr, log)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	am := c.StartAlertmanager(t, AlertmanagerOptions{Webhooks: []Webhook{{URL: hook.URL, CAFile: caFile, BearerToken: "t"}}})
	if err := am.PostAlerts(ctx, Alert{Labels: map[string]string{"alertname": "X"}}); err != nil {
		t.Fatal(err)
	}
	n, err := hook.Wait(ctx, "firing X", func(n WebhookNotification) bool { return n.Message.Status == "firing" })
	if err != nil {
		t.Fatal(err)
	}
	if n.Authorization != "Bearer t" {
		t.Errorf("Authorization %q", n.Authorization)
	}
}
