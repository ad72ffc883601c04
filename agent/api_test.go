package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// testToken is a bearer token of the minimum length, MinAPITokenLen.
const testToken = "s3cret-s3cret-s3"

// handlerOnlyAPIServer is an API server whose routes the test calls through Handler, never
// through a listener (so its transport does not matter).
func handlerOnlyAPIServer(t *testing.T) *Server {
	t.Helper()
	srv, err := NewAPIServer("127.0.0.1:0", APITransport{InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func TestAPIAuthentication(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	for _, tc := range []struct {
		name, token, auth string
		want              int
	}{
		{"api off without a token", "", "Bearer x", http.StatusForbidden},
		{"api off with a token under 16 bytes", "s3cret-s3cret-s", "Bearer s3cret-s3cret-s", http.StatusForbidden},
		{"no credentials", testToken, "", http.StatusUnauthorized},
		{"wrong token", testToken, "Bearer " + testToken[:len(testToken)-1], http.StatusUnauthorized},
		{"basic auth is not a bearer", testToken, "Basic czNjcmV0LXMzY3JldC1zMw==", http.StatusUnauthorized},
		{"right token", testToken, "Bearer " + testToken, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := handlerOnlyAPIServer(t)
			f.c.RegisterAPI(srv, tc.token, noCaptures{})
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
	srv := handlerOnlyAPIServer(t)
	f.c.RegisterAPI(srv, testToken, noCaptures{})
	for path, want := range map[string]int{"/api/v1/decisions/default/web": 200, "/api/v1/decisions/default/gone": 404} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
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

// A client that goes away during an evaluation does not turn its cancellation into the
// pod's decision: the explanation is evaluated to its end, and the next sync keeps the capture.
func TestAPIClientGoneDoesNotStopCapture(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	before, _ := f.captures.spec("default/web")
	p.mu.Lock()
	p.version = "v2" // the next evaluation is a fresh one, by the API
	p.mu.Unlock()

	srv := handlerOnlyAPIServer(t)
	f.c.RegisterAPI(srv, testToken, noCaptures{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client is gone
	req := httptest.NewRequest(http.MethodGet, "/api/v1/decisions/default/web", nil).WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	var e struct {
		Error    string
		Decision *struct{ Capture bool } `json:"decision"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusOK || e.Error != "" || e.Decision == nil || !e.Decision.Capture {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}

	f.sync(t, "default/web")
	if s, ok := f.captures.spec("default/web"); !ok || s != before || len(f.captures.stopped) != 0 {
		t.Fatalf("capture %+v %v (stopped %v) after the client went away, want it unchanged", s, ok, f.captures.stopped)
	}
	if ev := f.events(); len(ev) != 0 {
		t.Fatalf("events = %q", ev)
	}
}
