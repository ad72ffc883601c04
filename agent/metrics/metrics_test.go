package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.Packets.WithLabelValues("default", "web").Add(3)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestForgetCaptureDeletesSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.Packets.WithLabelValues("default", "web").Add(3)
	m.Bytes.WithLabelValues("default", "web").Add(300)
	m.Packets.WithLabelValues("other", "web").Add(1)
	m.ForgetCapture("default", "web")
	if n := testutil.CollectAndCount(m.Packets); n != 1 {
		t.Fatalf("packets series after forget = %d, want 1", n)
	}
	want := `
# HELP podcap_capture_packets_total Packets written to the capture files of a running capture.
# TYPE podcap_capture_packets_total counter
podcap_capture_packets_total{namespace="other",pod="web"} 1
`
	if err := testutil.CollectAndCompare(m.Packets, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestAPITLSInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	RegisterAPITLS(reg, APITLSOff)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Fatalf("promlint: %v %+v", err, problems)
	}
	want := `
# HELP podcap_api_tls_info How the HTTP API protects its bearer tokens: tls="files" (mounted key pair), "self_signed" (made at start) or "off" (plain HTTP, --insecure-serve-api-over-http).
# TYPE podcap_api_tls_info gauge
podcap_api_tls_info{tls="off"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	RegisterBuildInfo(reg, "v1.2.3", "fedcba9", "go1.26.0")
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Fatalf("promlint: %v %+v", err, problems)
	}
	want := `
# HELP podcap_build_info The agent's build: version, git commit and Go release; always 1.
# TYPE podcap_build_info gauge
podcap_build_info{commit="fedcba9",goversion="go1.26.0",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
