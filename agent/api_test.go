package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podcap/podcap/agent/capture"
)

func TestAPIAuthentication(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	list := func() []capture.Status { s, _ := f.captures.Status("default", "web"); return []capture.Status{s} }
	for _, tc := range []struct {
		name, token, auth string
		want              int
	}{
		{"api off without a token", "", "Bearer x", http.StatusForbidden},
		{"no credentials", "s3cret", "", http.StatusUnauthorized},
		{"wrong token", "s3cret", "Bearer s3cre", http.StatusUnauthorized},
		{"basic auth is not a bearer", "s3cret", "Basic czNjcmV0", http.StatusUnauthorized},
		{"right token", "s3cret", "Bearer s3cret", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := NewServer("127.0.0.1:0", prometheus.NewRegistry(), func() bool { return true })
			f.c.RegisterAPI(srv, tc.token, list)
			for _, path := range []string{"/api/v1/decisions/default/web", "/api/v1/captures"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				rec := httptest.NewRecorder()
				srv.Handler().ServeHTTP(rec, req)
				if rec.Code != tc.want {
					t.Fatalf("%s: %d, want %d: %s", path, rec.Code, tc.want, rec.Body)
				}
			}
		})
	}
	srv := NewServer("127.0.0.1:0", prometheus.NewRegistry(), func() bool { return true })
	f.c.RegisterAPI(srv, "s3cret", list)
	for path, want := range map[string]int{"/api/v1/decisions/default/web": 200, "/api/v1/decisions/default/gone": 404} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("%s: %d, want %d", path, rec.Code, want)
		}
		if want == 200 {
			var e struct {
				Decision struct{ Filter string } `json:"decision"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Decision.Filter != "udp port 53" {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
		}
	}
}
