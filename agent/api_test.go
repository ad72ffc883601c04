package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"k8s.io/klog/v2"
)

// testToken is a bearer token of the minimum length, MinAPITokenLen, that testGuard lets do
// everything.
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

// The decisions route answers behind the guard: 401 without a token, 403 in a namespace
// not granted, the explanation or 404 when granted.
func TestAPIDecisionsBehindGuard(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p, pod("web", nil))
	f.sync(t, "default/web")
	auth := &fakeAuth{users: map[string]string{"tok-default": "dev", "tok-other": "other"},
		grants: map[string][]string{"dev": {"default"}, "other": {"shop"}}}
	srv := handlerOnlyAPIServer(t)
	f.c.RegisterAPI(srv, NewAPIGuard(auth, klog.Background()), noCaptures{})
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/api/v1/decisions/default/web", "", http.StatusUnauthorized},
		{"/api/v1/decisions/default/web", "tok-other", http.StatusForbidden},
		{"/api/v1/decisions/default/gone", "tok-other", http.StatusForbidden}, // no hint whether it exists
		{"/api/v1/decisions/default/gone", "tok-default", http.StatusNotFound},
		{"/api/v1/decisions/default/web", "tok-default", http.StatusOK},
	} {
		rec := serve(srv.Handler(), tc.path, tc.token)
		if rec.Code != tc.want {
			t.Fatalf("%s with %q: %d, want %d: %s", tc.path, tc.token, rec.Code, tc.want, rec.Body)
		}
		if tc.want == http.StatusOK {
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
	f.c.RegisterAPI(srv, testGuard(), noCaptures{})
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
