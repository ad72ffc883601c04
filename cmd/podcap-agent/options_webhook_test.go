package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2/ktesting"

	"github.com/podcap/podcap/agent/alerts"
)

func TestOptionsWebhook(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" valid
	}{
		{[]string{"--webhook-token-file=/etc/podcap/webhook-token/token"}, ""},
		{[]string{"--webhook-token-file=/t", "--webhook-client-ca-file=/ca.crt"}, ""},
		{[]string{"--webhook-client-ca-file=/ca.crt", "--insecure-serve-api-over-http"}, "--webhook-client-ca-file needs TLS"},
		{[]string{"--webhook-token-file=/t", "--api-token-file=/t"}, "are the same file"},
	} {
		_, err := parseOptions(t, append([]string{"--node-name=n1"}, tc.args...)...)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.err)
		}
	}
}

type okRecorder struct{}

func (okRecorder) Record(_ context.Context, n alerts.Notification) (alerts.Recorded, error) {
	return alerts.Recorded{Recorded: len(n.Alerts)}, nil
}

// The webhook's start says whether it is on and how it authenticates, or why it is off.
func TestNewWebhookLogs(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    Options
		rec  alerts.Recorder
		log  string
	}{
		{"no store", Options{WebhookTokenFile: token}, nil, "off: it answers 404 why no alert store"},
		{"no authentication", Options{}, okRecorder{}, "off: it answers 404 why no authentication configured"},
		{"token missing", Options{WebhookTokenFile: token + ".missing"}, okRecorder{}, "does not exist"},
		{"token", Options{WebhookTokenFile: token}, okRecorder{}, "on path /api/v1/alerts bearerToken true clientCertificate false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
			if _, err := newWebhook(logger, &tc.o, prometheus.NewRegistry(), tc.rec, nil); err != nil {
				t.Fatal(err)
			}
			entries := logger.GetSink().(ktesting.Underlier).GetBuffer().Data()
			if len(entries) != 1 || !strings.Contains(entries[0].Message+" "+strings.TrimSpace(fmt.Sprintln(entries[0].ParameterKVList...)), tc.log) {
				t.Fatalf("log %+v, want one entry with %q", entries, tc.log)
			}
		})
	}
}
