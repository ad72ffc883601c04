package testbed

import (
	"net/http"
	"testing"
)

func TestPostWebhook(t *testing.T) {
	hook := NewWebhookRecorder(t)
	firing := WebhookAlert{Status: "firing", Labels: map[string]string{"alertname": "A"}, Fingerprint: "f1"}
	resolved := WebhookAlert{Status: "resolved", Labels: map[string]string{"alertname": "B"}, Fingerprint: "f2"}
	for _, tc := range []struct {
		name       string
		alerts     []WebhookAlert
		answer     int
		wantStatus string
	}{
		{"firing if one fires", []WebhookAlert{resolved, firing}, http.StatusOK, "firing"},
		{"resolved if none fires", []WebhookAlert{resolved}, http.StatusServiceUnavailable, "resolved"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook.SetStatus(tc.answer)
			msg := NewWebhookMessage("rec", `{}:{alertname="A"}`, map[string]string{"alertname": "A"}, tc.alerts)
			code, _, err := PostWebhook(t.Context(), http.DefaultClient, hook.URL, "tok", msg)
			if err != nil || code != tc.answer {
				t.Fatalf("PostWebhook: %d, %v; want %d", code, err, tc.answer)
			}
			n, err := hook.Wait(t.Context(), "the notification", func(n WebhookNotification) bool {
				return len(n.Message.Alerts) == len(tc.alerts) && n.Message.Alerts[0].Fingerprint == tc.alerts[0].Fingerprint
			})
			if err != nil {
				t.Fatal(err)
			}
			m := n.Message
			if n.Err != nil || n.Authorization != "Bearer tok" || m.Version != "4" || m.Status != tc.wantStatus ||
				m.Receiver != "rec" || m.GroupLabels["alertname"] != "A" {
				t.Errorf("received %+v, decode error %v", n, n.Err)
			}
		})
	}
}
