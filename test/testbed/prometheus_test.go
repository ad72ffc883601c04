package testbed

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testFaultRule = `groups:
- name: test
  rules:
  - alert: TestFault
    expr: test_fault > 0
    for: 0s
    annotations:
      summary: "test_fault is {{ $value }} on {{ $labels.pod }}"
`

// TestPrometheusToAlertmanager runs the whole chain on the host: a metric served by the test
// -> Prometheus (rule test_fault > 0) -> Alertmanager (group_wait 0) -> webhook.
func TestPrometheusToAlertmanager(t *testing.T) {
	c := hostCluster(t)
	ctx := t.Context()
	var fault atomic.Int64
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE test_fault gauge\ntest_fault %d\n", fault.Load())
	}))
	t.Cleanup(metrics.Close)

	hook := NewWebhookRecorder(t)
	am := c.StartAlertmanager(t, AlertmanagerOptions{Webhooks: []Webhook{{URL: hook.URL, BearerToken: "tok"}}})
	prom := c.StartPrometheus(t, PrometheusOptions{
		Targets: []ScrapeTarget{{
			Address: strings.TrimPrefix(metrics.URL, "http://"),
			Labels:  map[string]string{"namespace": "ns1", "pod": "p1"},
		}},
		Rules:           testFaultRule,
		AlertmanagerURL: am.URL(),
	})

	// scraped
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		s, err := prom.Query(ctx, `test_fault{pod="p1"}`)
		return len(s) == 1 && s[0].Labels["namespace"] == "ns1", err
	}, "test_fault scraped")
	if err != nil {
		t.Fatal(err)
	}

	fired := time.Now()
	fault.Store(1)
	n, err := hook.Wait(ctx, "firing TestFault", func(n WebhookNotification) bool {
		return n.Message.Status == "firing" && len(n.Message.Alerts) == 1 && n.Message.Alerts[0].Labels["pod"] == "p1"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metric set -> firing webhook in %s", n.Received.Sub(fired).Round(time.Millisecond))
	a := n.Message.Alerts[0]
	if a.Labels["alertname"] != "TestFault" || a.Labels["namespace"] != "ns1" || a.Annotations["summary"] != "test_fault is 1 on p1" ||
		!strings.HasPrefix(a.GeneratorURL, "http://") || n.Authorization != "Bearer tok" {
		t.Errorf("notification %+v, Authorization %q", n.Message, n.Authorization)
	}
	alerts, err := prom.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 || alerts[0].State != "firing" {
		t.Errorf("prometheus alerts %+v", alerts)
	}

	resolved := time.Now()
	fault.Store(0)
	n, err = hook.Wait(ctx, "resolved TestFault", func(n WebhookNotification) bool {
		return n.Message.Status == "resolved" && len(n.Message.Alerts) == 1 && n.Message.Alerts[0].Labels["pod"] == "p1"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("metric cleared -> resolved webhook in %s", n.Received.Sub(resolved).Round(time.Millisecond))
}

// TestPrometheusConfigChecked: promtool's complaint about a rule is a clear error.
func TestPrometheusConfigChecked(t *testing.T) {
	c := hostCluster(t)
	p := &PrometheusProcess{d: c.newDaemon(t, "prometheus")}
	p.ConfigPath, p.RulesPath = p.d.dir+"/prometheus.yml", p.d.dir+"/rules.yml"
	cfg, err := p.render(PrometheusOptions{Rules: "x", AlertmanagerURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.ConfigPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: test_fault >\n"
	if err := os.WriteFile(p.RulesPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	err = checkConfig(t.Context(), p.ConfigPath, PromtoolBinary, "check", "config", p.ConfigPath)
	if err == nil || !strings.Contains(err.Error(), "rules.yml") {
		t.Errorf("err = %v, want promtool's complaint about rules.yml", err)
	}
	if _, err := p.render(PrometheusOptions{AlertmanagerURL: "127.0.0.1:9093"}); err == nil {
		t.Error("an AlertmanagerURL without scheme: want an error")
	}
}
