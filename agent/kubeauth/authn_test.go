package kubeauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const staticToken = "static-static-static"

// fakeClock is a clock the test steps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// apiServer is a fake clientset whose TokenReviews and SubjectAccessReviews answer with
// the test's functions and are counted.
type apiServer struct {
	client         *fake.Clientset
	tokenReviews   atomic.Int64
	accessReviews  atomic.Int64
	review         func(token string) (authnv1.TokenReviewStatus, error)
	access         func(spec authzv1.SubjectAccessReviewSpec) (authzv1.SubjectAccessReviewStatus, error)
	mu             sync.Mutex
	lastAccessSpec authzv1.SubjectAccessReviewSpec
}

func newAPIServer() *apiServer {
	s := &apiServer{client: fake.NewClientset()}
	s.review = func(string) (authnv1.TokenReviewStatus, error) { return authnv1.TokenReviewStatus{}, nil }
	s.access = func(authzv1.SubjectAccessReviewSpec) (authzv1.SubjectAccessReviewStatus, error) {
		return authzv1.SubjectAccessReviewStatus{}, nil
	}
	s.client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		s.tokenReviews.Add(1)
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
		st, err := s.review(tr.Spec.Token)
		if err != nil {
			return true, nil, err
		}
		tr.Status = st
		return true, tr, nil
	})
	s.client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, k8sruntime.Object, error) {
		s.accessReviews.Add(1)
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview).DeepCopy()
		s.mu.Lock()
		s.lastAccessSpec = sar.Spec
		s.mu.Unlock()
		st, err := s.access(sar.Spec)
		if err != nil {
			return true, nil, err
		}
		sar.Status = st
		return true, sar, nil
	})
	return s
}

func newTestAuth(t *testing.T, s *apiServer, clock *fakeClock, mutate func(*Options)) (*Auth, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o := Options{
		TokenReviews: s.client.AuthenticationV1().TokenReviews(), SubjectAccessReviews: s.client.AuthorizationV1().SubjectAccessReviews(),
		StaticToken: staticToken, Registerer: reg, Now: clock.Now,
	}
	if mutate != nil {
		mutate(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func request(auth string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/api/v1/captures", nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// alice is what the fake API server says of the token "alice-token".
func alice(token string) (authnv1.TokenReviewStatus, error) {
	if token != "alice-token" {
		return authnv1.TokenReviewStatus{Error: "invalid bearer token"}, nil
	}
	return authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{
		Username: "system:serviceaccount:a:alice", UID: "u-1", Groups: []string{"system:serviceaccounts", "system:authenticated"},
		Extra: map[string]authnv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"p"}},
	}}, nil
}

func TestAuthenticateRefusesMissingAndMalformedCredentials(t *testing.T) {
	s := newAPIServer()
	a, _ := newTestAuth(t, s, &fakeClock{}, nil)
	for _, auth := range []string{"", "Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "Token alice-token"} {
		_, err := a.Authenticate(t.Context(), request(auth))
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authorization %q: %v, want ErrUnauthenticated", auth, err)
		}
	}
	if n := s.tokenReviews.Load(); n != 0 {
		t.Errorf("%d token reviews for requests without a bearer token, want 0", n)
	}
}

func TestAuthenticateStaticToken(t *testing.T) {
	s := newAPIServer()
	s.review = alice
	a, _ := newTestAuth(t, s, &fakeClock{}, nil)
	u, err := a.Authenticate(t.Context(), request("Bearer "+staticToken))
	if err != nil || u.Name != StaticTokenUser || !u.Static() || !slices.Contains(u.Groups, StaticTokenGroup) {
		t.Fatalf("static token: %+v, %v", u, err)
	}
	ok, err := a.Authorize(t.Context(), u, PodCapture("b", "p"))
	if !ok || err != nil || s.accessReviews.Load() != 0 {
		t.Fatalf("static user: allowed %v, %v, %d access reviews; want allowed without a review", ok, err, s.accessReviews.Load())
	}
	// a prefix of the static token, or the token with a byte more, is another token
	for _, tok := range []string{staticToken[:len(staticToken)-1], staticToken + "x"} {
		if _, err := a.Authenticate(t.Context(), request("Bearer "+tok)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("token %q: %v, want ErrUnauthenticated", tok, err)
		}
	}
	if n := s.tokenReviews.Load(); n != 2 {
		t.Errorf("%d token reviews, want 2 (the static token is never sent to the API server)", n)
	}
}

// A user whom the API server puts in the static token's group is not the static user: the
// group grants nothing by itself.
func TestStaticGroupFromTokenReviewGrantsNothing(t *testing.T) {
	s := newAPIServer()
	s.review = func(string) (authnv1.TokenReviewStatus, error) {
		return authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: StaticTokenUser, Groups: []string{StaticTokenGroup}}}, nil
	}
	a, _ := newTestAuth(t, s, &fakeClock{}, nil)
	u, err := a.Authenticate(t.Context(), request("Bearer impostor"))
	if err != nil || u.Static() {
		t.Fatalf("%+v, %v: want a user that is not the static one", u, err)
	}
	if ok, err := a.Authorize(t.Context(), u, PodCapture("b", "p")); ok || err != nil || s.accessReviews.Load() != 1 {
		t.Fatalf("allowed %v, %v, %d access reviews; want denied by one review", ok, err, s.accessReviews.Load())
	}
}

func TestAuthenticateTokenReviewCached(t *testing.T) {
	s := newAPIServer()
	s.review = alice
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	a, reg := newTestAuth(t, s, clock, nil)
	ctx := t.Context()

	u, err := a.Authenticate(ctx, request("Bearer alice-token"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "system:serviceaccount:a:alice" || u.UID != "u-1" || !slices.Equal(u.Groups, []string{"system:serviceaccounts", "system:authenticated"}) ||
		!slices.Equal(u.Extra["authentication.kubernetes.io/pod-name"], []string{"p"}) {
		t.Fatalf("user %+v", u)
	}
	u.Groups[0] = "changed by the caller" // must not reach the cache
	clock.Step(DefaultTokenTTL - time.Millisecond)
	u, err = a.Authenticate(ctx, request("bearer alice-token")) // the scheme is case-insensitive
	if err != nil || u.Groups[0] != "system:serviceaccounts" {
		t.Fatalf("cached: %+v, %v", u, err)
	}
	if n := s.tokenReviews.Load(); n != 1 {
		t.Fatalf("%d token reviews within the TTL, want 1", n)
	}
	clock.Step(2 * time.Millisecond)
	if _, err := a.Authenticate(ctx, request("Bearer alice-token")); err != nil {
		t.Fatal(err)
	}
	if n := s.tokenReviews.Load(); n != 2 {
		t.Fatalf("%d token reviews after the TTL, want 2", n)
	}

	// refused: 401, cached for the shorter failure TTL
	for range 3 {
		if _, err := a.Authenticate(ctx, request("Bearer garbage")); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("garbage token: %v, want ErrUnauthenticated", err)
		}
	}
	if n := s.tokenReviews.Load(); n != 3 {
		t.Fatalf("%d token reviews, want 3 (a refused token is cached)", n)
	}
	clock.Step(DefaultTokenFailureTTL + time.Millisecond)
	if _, err := a.Authenticate(ctx, request("Bearer garbage")); !errors.Is(err, ErrUnauthenticated) || s.tokenReviews.Load() != 4 {
		t.Fatalf("garbage token after the failure TTL: %v, %d reviews, want ErrUnauthenticated and 4", err, s.tokenReviews.Load())
	}
	wantCounts(t, reg, "podcap_api_authentications_total", map[string]float64{"ok": 3, "unauthenticated": 4, "error": 0})
}

// A failure to reach the API server is an error (503), not a refusal, and is never cached.
func TestAuthenticateReviewErrorNotCached(t *testing.T) {
	s := newAPIServer()
	var down atomic.Bool
	down.Store(true)
	s.review = func(token string) (authnv1.TokenReviewStatus, error) {
		if down.Load() {
			return authnv1.TokenReviewStatus{}, errors.New("connection refused")
		}
		return alice(token)
	}
	a, reg := newTestAuth(t, s, &fakeClock{}, nil)
	for range 2 {
		_, err := a.Authenticate(t.Context(), request("Bearer alice-token"))
		if err == nil || errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("API server down: %v, want an error that is not ErrUnauthenticated", err)
		}
	}
	down.Store(false)
	if _, err := a.Authenticate(t.Context(), request("Bearer alice-token")); err != nil {
		t.Fatalf("API server back: %v", err)
	}
	if n := s.tokenReviews.Load(); n != 3 {
		t.Fatalf("%d token reviews, want 3: errors are not cached", n)
	}
	wantCounts(t, reg, "podcap_api_authentications_total", map[string]float64{"ok": 1, "unauthenticated": 0, "error": 2})
}

// Neither cache holds a token in clear: not as a key, not in a value.
func TestCachesNeverHoldTheToken(t *testing.T) {
	s := newAPIServer()
	token := "alice-token"
	s.review = alice
	s.access = func(authzv1.SubjectAccessReviewSpec) (authzv1.SubjectAccessReviewStatus, error) {
		return authzv1.SubjectAccessReviewStatus{Allowed: true}, nil
	}
	a, _ := newTestAuth(t, s, &fakeClock{}, nil)
	for _, tok := range []string{token, "garbage-token"} {
		u, err := a.Authenticate(t.Context(), request("Bearer "+tok))
		if err == nil {
			if _, err := a.Authorize(t.Context(), u, PodCapture("a", "p")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(a.tokenCache.Keys()) != 2 || len(a.decisionCache.Keys()) != 1 {
		t.Fatalf("cache keys: %d tokens, %d decisions; want 2 and 1", len(a.tokenCache.Keys()), len(a.decisionCache.Keys()))
	}
	for _, c := range []struct {
		name string
		keys []any
		get  func(any) (any, bool)
	}{{"token", a.tokenCache.Keys(), a.tokenCache.Get}, {"decision", a.decisionCache.Keys(), a.decisionCache.Get}} {
		for _, k := range c.keys {
			v, _ := c.get(k)
			dump := []byte(fmt.Sprintf("%#v %#v", k, v))
			if key, ok := k.([32]byte); !ok {
				t.Errorf("%s cache key %T, want a SHA-256 digest", c.name, k)
			} else {
				dump = append(dump, key[:]...)
			}
			for _, tok := range []string{token, "garbage-token"} {
				if bytes.Contains(dump, []byte(tok)) {
					t.Errorf("%s cache holds the token %q: %s", c.name, tok, dump)
				}
			}
		}
	}
}

func wantCounts(t *testing.T, reg *prometheus.Registry, name string, want map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s{result=%q} = %v, want %v (all: %v)", name, k, got[k], v, got)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	_, reg := newTestAuth(t, newAPIServer(), &fakeClock{}, nil)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 6 {
		t.Fatalf("%d series, %v; want 6, pre-initialised", n, err)
	}
}

// blockingReviewer is a TokenReviewer and SubjectAccessReviewer that counts its calls and
// holds each until release is closed (the fake clientset runs reactors one at a time, which
// would hide concurrent calls).
type blockingReviewer struct {
	calls   atomic.Int64
	release chan struct{}
}

func (b *blockingReviewer) Create(ctx context.Context, tr *authnv1.TokenReview, _ metav1.CreateOptions) (*authnv1.TokenReview, error) {
	b.calls.Add(1)
	<-b.release
	out := tr.DeepCopy()
	out.Status, _ = alice(tr.Spec.Token)
	return out, nil
}

type blockingAccess struct{ blockingReviewer }

func (b *blockingAccess) Create(ctx context.Context, sar *authzv1.SubjectAccessReview, _ metav1.CreateOptions) (*authzv1.SubjectAccessReview, error) {
	b.calls.Add(1)
	<-b.release
	out := sar.DeepCopy()
	out.Status.Allowed = true
	return out, nil
}

// Requests that need the same review at the same time share one: ten requests with a token
// the cache does not know yet cost one TokenReview, and ten checks of the same permission one
// SubjectAccessReview; every request gets the answer.
func TestConcurrentRequestsShareOneReview(t *testing.T) {
	tokens := &blockingReviewer{release: make(chan struct{})}
	access := &blockingAccess{blockingReviewer{release: make(chan struct{})}}
	a, err := New(Options{TokenReviews: tokens, SubjectAccessReviews: access})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	var started sync.WaitGroup
	users := make(chan *User, n)
	errs := make(chan error, n)
	started.Add(n)
	for range n {
		go func() {
			started.Done()
			u, err := a.Authenticate(context.Background(), request("Bearer alice-token"))
			if err == nil {
				var ok bool
				ok, err = a.Authorize(context.Background(), u, Attributes{Verb: "get", Resource: "pods", Subresource: "capture", Namespace: "a"})
				if err == nil && !ok {
					err = errors.New("denied")
				}
			}
			users <- u
			errs <- err
		}()
	}
	started.Wait()
	// without sharing, every request would be in its own review by now; with it, one is
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && tokens.calls.Load() < n {
		runtime.Gosched()
	}
	if got := tokens.calls.Load(); got != 1 {
		t.Fatalf("%d TokenReviews for %d concurrent requests with one token, want 1", got, n)
	}
	close(tokens.release)
	deadline = time.Now().Add(time.Second)
	for time.Now().Before(deadline) && access.calls.Load() < n {
		runtime.Gosched()
	}
	if got := access.calls.Load(); got != 1 {
		t.Fatalf("%d SubjectAccessReviews for %d concurrent checks of one permission, want 1", got, n)
	}
	close(access.release)
	for range n {
		if u, err := <-users, <-errs; err != nil || u == nil || u.Name != "system:serviceaccount:a:alice" {
			t.Errorf("request: %v, %+v", err, u)
		}
	}
}
