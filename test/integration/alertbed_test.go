package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/podcap/podcap/test/testbed"
)

// TestAlertBed proves the alerting test bed end to end without the agent: a pod serves
// test_fault, the real Prometheus scrapes it (labels namespace, pod) and fires the rule
// test_fault > 0, the real Alertmanager (group_wait 0, bearer token) notifies a webhook in
// this process; clearing the metric brings the resolved notification.
func TestAlertBed(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	mp := c.StartMetricPod(t, "alertbed", "faulty", testbed.MetricPodOptions{Metrics: map[string]float64{"test_fault": 0}})
	if v, err := mp.Metric(ctx, "test_fault"); err != nil || v != 0 {
		t.Fatalf("test_fault from %s = %v, %v; want 0", mp.URL(), v, err)
	}

	hook := testbed.NewWebhookRecorder(t)
	am := c.StartAlertmanager(t, testbed.AlertmanagerOptions{
		Webhooks: []testbed.Webhook{{URL: hook.URL, BearerToken: "alertbed-token"}},
	})
	prom := c.StartPrometheus(t, testbed.PrometheusOptions{
		Targets: []testbed.ScrapeTarget{mp.ScrapeTarget()},
		Rules: `groups:
- name: alertbed
  rules:
  - alert: TestFault
    expr: test_fault > 0
    for: 0s
`,
		AlertmanagerURL: am.URL(),
	})

	waitFor(t, time.Minute, "Prometheus to scrape the pod", func() (bool, error) {
		s, err := prom.Query(ctx, `test_fault{namespace="alertbed", pod="faulty"}`)
		return len(s) == 1 && s[0].Value == 0, err
	})

	set := time.Now()
	if err := mp.SetMetric(ctx, "test_fault", 1); err != nil {
		t.Fatal(err)
	}
	firing, err := hook.Wait(ctx, "firing TestFault for alertbed/faulty", func(n testbed.WebhookNotification) bool {
		return n.Message.Status == "firing" && len(n.Message.Alerts) == 1 &&
			n.Message.Alerts[0].Labels["namespace"] == "alertbed" && n.Message.Alerts[0].Labels["pod"] == "faulty"
	})
	if err != nil {
		t.Fatalf("%v\nPrometheus alerts: %v", err, promAlerts(ctx, prom))
	}
	t.Logf("metric set -> firing notification in %s (scrape and evaluation every 1 s, group_wait 0)",
		firing.Received.Sub(set).Round(time.Millisecond))
	if firing.Authorization != "Bearer alertbed-token" {
		t.Errorf("Authorization %q, want the bearer token", firing.Authorization)
	}
	if a := firing.Message.Alerts[0]; a.Labels["alertname"] != "TestFault" || a.Fingerprint == "" || a.GeneratorURL == "" {
		t.Errorf("alert %+v", a)
	}

	cleared := time.Now()
	if err := mp.SetMetric(ctx, "test_fault", 0); err != nil {
		t.Fatal(err)
	}
	resolved, err := hook.Wait(ctx, "resolved TestFault", func(n testbed.WebhookNotification) bool {
		return n.Message.Status == "resolved" && len(n.Message.Alerts) == 1 && n.Message.Alerts[0].Labels["pod"] == "faulty"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metric cleared -> resolved notification in %s", resolved.Received.Sub(cleared).Round(time.Millisecond))
	if resolved.Message.Alerts[0].Fingerprint != firing.Message.Alerts[0].Fingerprint {
		t.Errorf("resolved fingerprint %s, firing %s", resolved.Message.Alerts[0].Fingerprint, firing.Message.Alerts[0].Fingerprint)
	}
	sent, err := am.Metric(ctx, "alertmanager_notifications_total", map[string]string{"integration": "webhook"})
	if err != nil || sent < 2 {
		t.Errorf("alertmanager_notifications_total{integration=webhook} = %v, %v; want >= 2", sent, err)
	}
}

// TestAgentCertificateAsCA: the agent's self-signed certificate, fetched and pinned to the
// fingerprint it logged, is a CA file a client (Alertmanager's tls_config.ca_file) verifies
// the agent's API with, for 127.0.0.1.
func TestAgentCertificateAsCA(t *testing.T) {
	c := testBed(t)
	ctx := t.Context()
	a := startAgent(t, c)
	caFile := filepath.Join(t.TempDir(), "agent-ca.pem")
	if err := a.WriteCertificatePEM(ctx, caFile); err != nil {
		t.Fatalf("%v\n%s", err, a.Log())
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in the PEM")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.APIURL("/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req) // any status: the handshake is what is tested
	if err != nil {
		t.Fatalf("HTTPS to the agent with its certificate as the CA: %v", err)
	}
	resp.Body.Close()
}

func promAlerts(ctx context.Context, p *testbed.PrometheusProcess) any {
	alerts, err := p.Alerts(ctx)
	if err != nil {
		return err
	}
	return alerts
}
