package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/kubeauth"
)

// fakeAuth authenticates the bearer tokens of users; grants says what each user may get
// pods/capture in ("*" all namespaces); down makes every call fail as an unreachable API
// server would. It records the attributes it was asked about.
type fakeAuth struct {
	users  map[string]string // token → user name
	grants map[string][]string
	down   bool

	mu    sync.Mutex
	asked []kubeauth.Attributes
}

var _ APIAuth = (*fakeAuth)(nil)

var errAPIServerDown = errors.New("connection refused")

func (f *fakeAuth) Authenticate(_ context.Context, r *http.Request) (*kubeauth.User, error) {
	if f.down {
		return nil, errAPIServerDown
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if name, known := f.users[token]; ok && known {
		return &kubeauth.User{Name: name, Groups: []string{"system:authenticated"}}, nil
	}
	return nil, kubeauth.ErrUnauthenticated
}

func (f *fakeAuth) Authorize(_ context.Context, u *kubeauth.User, a kubeauth.Attributes) (bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, a)
	f.mu.Unlock()
	if f.down {
		return false, errAPIServerDown
	}
	g := f.grants[u.Name]
	if a.Path != "" {
		return slices.Contains(g, a.Path), nil
	}
	return slices.Contains(g, "*") || (a.Namespace != "" && slices.Contains(g, a.Namespace)), nil
}

// testGuard lets testToken (user "admin") do everything, as the static token does.
func testGuard() *APIGuard {
	return NewAPIGuard(&fakeAuth{users: map[string]string{testToken: "admin"}, grants: map[string][]string{"admin": {"*"}}}, klog.Background())
}

func serve(h http.Handler, path, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAPIGuardAnswers(t *testing.T) {
	auth := &fakeAuth{users: map[string]string{"tok-a": "alice"}, grants: map[string][]string{"alice": {"a", "/metrics"}}}
	mux := http.NewServeMux()
	g := NewAPIGuard(auth, klog.Background())
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.Handle("GET /api/v1/captures/{namespace}/{pod}/stream", g.Pod(ok))
	mux.Handle("GET /metrics", g.NonResource("/metrics", ok))
	for _, tc := range []struct {
		name, path, token string
		down              bool
		want              int
		wantBody          string
	}{
		{"no token", "/api/v1/captures/a/web/stream", "", false, 401, "unauthenticated"},
		{"garbage token", "/api/v1/captures/a/web/stream", "garbage", false, 401, "unauthenticated"},
		{"granted namespace", "/api/v1/captures/a/web/stream", "tok-a", false, 200, "ok"},
		{"other namespace", "/api/v1/captures/b/web/stream", "tok-a", false, 403, `cannot get pods/capture in namespace \"b\" (pod \"web\")`},
		{"metrics granted", "/metrics", "tok-a", false, 200, "ok"},
		{"API server down", "/api/v1/captures/a/web/stream", "tok-a", true, 503, "retry"},
		{"API server down, metrics", "/metrics", "tok-a", true, 503, "retry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth.down = tc.down
			rec := serve(mux, tc.path, tc.token)
			if rec.Code != tc.want || !strings.Contains(rec.Body.String(), tc.wantBody) {
				t.Fatalf("%d %s, want %d with %q", rec.Code, rec.Body, tc.want, tc.wantBody)
			}
			wantChallenge := map[string]string{"": `Bearer realm="podcap"`, "garbage": `Bearer realm="podcap", error="invalid_token"`}[tc.token]
			if got := rec.Header().Get("WWW-Authenticate"); rec.Code == 401 && got != wantChallenge {
				t.Fatalf("WWW-Authenticate %q, want %q", got, wantChallenge)
			}
		})
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	want := kubeauth.Attributes{Verb: "get", Resource: "pods", Subresource: "capture", Namespace: "a", Name: "web"}
	if !slices.Contains(auth.asked, want) {
		t.Fatalf("asked %+v, want among them %+v", auth.asked, want)
	}
}

// listedCaptures is a Retrieval of captures in the namespaces given, pod "web" each.
type listedCaptures struct {
	noCaptures
	namespaces []string
}

func (l listedCaptures) Captures(only string) []capture.Listing {
	var out []capture.Listing
	for _, ns := range l.namespaces {
		if only == "" || ns == only {
			out = append(out, capture.Listing{Namespace: ns, Pod: "web", State: "running"})
		}
	}
	return out
}

func captureList(namespaces ...string) Retrieval { return listedCaptures{namespaces: namespaces} }

func listNamespaces(t *testing.T, body []byte) []string {
	t.Helper()
	var items []struct{ Namespace string }
	if err := json.Unmarshal(body, &items); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Namespace)
	}
	return out
}

// The list shows the captures of the namespaces the caller may see, and only those.
func TestAPICapturesListFilteredByNamespace(t *testing.T) {
	p := &fakePolicy{version: "v1", decide: capturing(dnsDecision)}
	f := newPolicyCtrl(t, p)
	auth := &fakeAuth{
		users:  map[string]string{"tok-a": "alice", "tok-admin": "admin", "tok-none": "nobody"},
		grants: map[string][]string{"alice": {"a", "c"}, "admin": {"*"}},
	}
	srv := handlerOnlyAPIServer(t)
	f.c.RegisterAPI(srv, NewAPIGuard(auth, klog.Background()), captureList("a", "b", "a", "c"))
	for _, tc := range []struct {
		name, query, token string
		want               int
		namespaces         []string
		asked              int // authorisations asked
	}{
		{"granted in a and c", "", "tok-a", 200, []string{"a", "a", "c"}, 4}, // all, then a, b, c once each
		{"cluster-wide grant", "", "tok-admin", 200, []string{"a", "b", "a", "c"}, 1},
		{"no grant: empty list", "", "tok-none", 200, nil, 4},
		{"narrowed to a granted namespace", "?namespace=c", "tok-a", 200, []string{"c"}, 1},
		{"narrowed to a namespace not granted", "?namespace=b", "tok-a", 403, nil, 1},
		{"narrowed by a cluster-wide user", "?namespace=b", "tok-admin", 200, []string{"b"}, 1},
		{"no token", "", "", 401, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth.mu.Lock()
			auth.asked = nil
			auth.mu.Unlock()
			rec := serve(srv.Handler(), "/api/v1/captures"+tc.query, tc.token)
			if rec.Code != tc.want {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tc.want)
			}
			if rec.Code == 200 {
				if got := listNamespaces(t, rec.Body.Bytes()); !slices.Equal(got, tc.namespaces) {
					t.Fatalf("namespaces %q, want %q", got, tc.namespaces)
				}
			}
			auth.mu.Lock()
			defer auth.mu.Unlock()
			if len(auth.asked) != tc.asked {
				t.Fatalf("asked %d times (%+v), want %d", len(auth.asked), auth.asked, tc.asked)
			}
		})
	}
	auth.down = true
	if rec := serve(srv.Handler(), "/api/v1/captures", "tok-a"); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("API server down: %d %s, want 503 (never a shorter list)", rec.Code, rec.Body)
	}
}

// A handler outside List sees nothing: a route wired without the guard fails closed.
func TestListVisibleOutsideListIsNothing(t *testing.T) {
	if ListVisible(t.Context(), "a") {
		t.Fatal("visible outside List")
	}
}

// An API server that cannot be asked makes every request a 503, each counted by the metrics;
// the log says so once per unavailableLogEvery, with how many alike it left out.
func TestAPIGuardLogsAPIServerDownOncePerInterval(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) { mu.Lock(); lines = append(lines, args); mu.Unlock() }, funcr.Options{})
	auth := &fakeAuth{users: map[string]string{"tok-a": "alice"}, down: true}
	g := NewAPIGuard(auth, log)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	h := g.NonResource("/metrics", http.NotFoundHandler())
	for range 5 {
		if rec := serve(h, "/metrics", "tok-a"); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%d, want 503", rec.Code)
		}
	}
	now = now.Add(unavailableLogEvery)
	serve(h, "/metrics", "tok-a")
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 2 || !strings.Contains(lines[0], `"alikeNotLoggedSinceLast"=0`) || !strings.Contains(lines[1], `"alikeNotLoggedSinceLast"=4`) {
		t.Fatalf("log lines %q, want 2: the first 503, then one %s later with the 4 left out", lines, unavailableLogEvery)
	}
}
