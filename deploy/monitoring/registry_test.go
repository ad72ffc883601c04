package monitoring_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/alerts"
	"github.com/podcap/podcap/agent/alerts/alertstest"
	"github.com/podcap/podcap/agent/kubeauth"
	"github.com/podcap/podcap/agent/metrics"
)

// metricInfo is what the queries may use of one metric family.
type metricInfo struct {
	labels    []string // the agent's own labels (not the scrape's: see scrapeLabels)
	histogram bool     // histogram or summary: _bucket, _sum and _count series
}

// scrapeLabels are the labels every series gets from the scrape (the PodMonitor's job and
// node, Prometheus's instance), whatever the agent exports.
var scrapeLabels = []string{"job", "instance", "node"}

// prometheusMetrics are the series Prometheus itself makes for a scrape.
var prometheusMetrics = map[string]metricInfo{"up": {}}

// descRecorder registers collectors on a registry and records the descriptions they
// announce, so that vectors without a series yet are known too (Gather would not show them).
type descRecorder struct {
	reg     *prometheus.Registry
	metrics map[string]metricInfo
}

var _ prometheus.Registerer = (*descRecorder)(nil)

// descPattern matches prometheus.Desc.String: the name and the variable labels.
var descPattern = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	var histogram bool
	switch c.(type) {
	case prometheus.Observer, *prometheus.HistogramVec, *prometheus.SummaryVec:
		histogram = true
	}
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descPattern.FindStringSubmatch(d.String())
		if m == nil {
			panic("unexpected prometheus.Desc format: " + d.String())
		}
		var labels []string
		if m[2] != "" {
			for _, l := range strings.Split(m[2], ",") {
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"))
			}
		}
		r.metrics[m[1]] = metricInfo{labels: labels, histogram: histogram}
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *descRecorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// agentMetrics are the metric families the agent registers, built as cmd/podcap-agent builds
// them (agent/metrics, the policy status, the API's TLS info, the build info, the alert store, the webhook,
// the API's authentication, the live streams and the API's request counter) on a fresh
// registry.
func agentMetrics(t *testing.T) map[string]metricInfo {
	t.Helper()
	r := &descRecorder{reg: prometheus.NewRegistry(), metrics: map[string]metricInfo{}}
	metrics.New(r)
	metrics.RegisterPolicyStatus(r, func() (bool, time.Time) { return true, time.Time{} })
	metrics.RegisterAPITLS(r, metrics.APITLSSelfSigned)
	metrics.RegisterBuildInfo(r, "dev", "unknown", "go1.x")
	if _, err := alerts.NewStore(dynamicfake.NewSimpleDynamicClient(runtime.NewScheme()),
		alerts.StoreOptions{Namespace: "podcap-system", Node: "n1", Registerer: r}); err != nil {
		t.Fatalf("alert store: %v", err)
	}
	if _, err := alerts.NewWebhook(alerts.WebhookOptions{Recorder: &alertstest.Recorder{}, Registerer: r}); err != nil {
		t.Fatalf("webhook: %v", err)
	}
	client := kubefake.NewClientset()
	if _, err := kubeauth.New(kubeauth.Options{TokenReviews: client.AuthenticationV1().TokenReviews(),
		SubjectAccessReviews: client.AuthorizationV1().SubjectAccessReviews(), Registerer: r}); err != nil {
		t.Fatalf("API authentication: %v", err)
	}
	metrics.NewStreams(r)
	api, err := agent.NewAPIServer("127.0.0.1:0", agent.APITransport{InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	api.CountRequests(r)
	// the recorder's own check: a family each of the nine registrations makes, with its labels
	for name, labels := range map[string][]string{
		"podcap_capture_packets_total":         {"namespace", "pod"},
		"podcap_policy_last_reload_successful": nil,
		"podcap_api_tls_info":                  {"tls"},
		"podcap_build_info":                    {"version", "commit", "goversion"},
		"podcap_alert_store_errors_total":      {"operation"},
		"podcap_webhook_requests_total":        {"code"},
		"podcap_api_authorizations_total":      {"result"},
		"podcap_stream_readers_cut_total":      nil,
		"podcap_api_requests_total":            {"route", "code"},
	} {
		if got, ok := r.metrics[name]; !ok || !slices.Equal(got.labels, labels) {
			t.Fatalf("registry: %s = %+v, %v; want labels %v", name, got, ok, labels)
		}
	}
	if !r.metrics["podcap_webhook_request_duration_seconds"].histogram {
		t.Fatal("registry: podcap_webhook_request_duration_seconds is not recorded as a histogram")
	}
	return r.metrics
}
