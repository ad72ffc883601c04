package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent"
)

func TestOptionsAPIAuth(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" valid
	}{
		{nil, ""}, // Kubernetes authentication by default, no static token needed
		{[]string{"--api-client-ca-file=/etc/kubernetes/pki/ca.crt", "--metrics-require-auth"}, ""},
		{[]string{"--api-client-ca-file=/ca.crt", "--webhook-client-ca-file=/hook-ca.crt"}, ""},
		{[]string{"--api-client-ca-file=/ca.crt", "--insecure-serve-api-over-http"}, "--api-client-ca-file needs TLS"},
		{[]string{"--api-client-ca-file=/ca.crt", "--webhook-client-ca-file=/ca.crt"}, "are the same file"},
	} {
		o, err := parseOptions(t, append([]string{"--node-name=n1"}, tc.args...)...)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.err)
		}
		if err == nil && o.MetricsRequireAuth != strings.Contains(strings.Join(tc.args, " "), "--metrics-require-auth") {
			t.Errorf("%v: MetricsRequireAuth %v", tc.args, o.MetricsRequireAuth)
		}
	}
}

// newServers with --metrics-require-auth: /metrics leaves the plain server (404 saying
// where it went) for the API server, where it needs credentials; health stays open.
func TestMetricsRequireAuthMovesMetrics(t *testing.T) {
	o := &Options{NodeName: "n1", ListenAddress: "127.0.0.1:0", APIListenAddress: "127.0.0.1:1", MetricsRequireAuth: true}
	ctrl := &agent.Controller{}
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	servers, err := newServers(logger, o, &rest.Config{Host: "https://127.0.0.1:1"}, prometheus.NewRegistry(), ctrl, nil,
		agent.APITransport{InsecureHTTP: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func(s *agent.Server, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec
	}
	if rec := get(servers[0], "/metrics"); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "--metrics-require-auth") {
		t.Errorf("plain /metrics: %d %s", rec.Code, rec.Body)
	}
	if rec := get(servers[0], "/healthz"); rec.Code != http.StatusOK {
		t.Errorf("/healthz: %d", rec.Code)
	}
	if rec := get(servers[1], "/metrics"); rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("API server /metrics without credentials: %d %s", rec.Code, rec.Body)
	}
	entries := logger.GetSink().(ktesting.Underlier).GetBuffer().String()
	if !strings.Contains(entries, "TokenReview") || !strings.Contains(entries, "metricsRequireAuth=true") {
		t.Errorf("log %s, want how the API authenticates", entries)
	}
}
