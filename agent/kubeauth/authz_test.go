package kubeauth

import (
	"errors"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
)

func TestAttributesString(t *testing.T) {
	for a, want := range map[Attributes]string{
		PodCapture("shop", "web"):      `get pods/capture in namespace "shop"`,
		PodCapture("", ""):             "get pods/capture in all namespaces",
		NonResource("get", "/metrics"): "get /metrics",
	} {
		if got := a.String(); got != want {
			t.Errorf("%+v: %q, want %q", a, got, want)
		}
	}
}

// The review asks exactly what the attributes say, for exactly the authenticated user.
func TestAuthorizeSendsAttributes(t *testing.T) {
	s := newAPIServer()
	s.review = alice
	a, _ := newTestAuth(t, s, &fakeClock{}, nil)
	u, err := a.Authenticate(t.Context(), request("Bearer alice-token"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		attrs Attributes
		check func(authzv1.SubjectAccessReviewSpec) bool
	}{
		{PodCapture("shop", "web"), func(s authzv1.SubjectAccessReviewSpec) bool {
			return s.NonResourceAttributes == nil && *s.ResourceAttributes == authzv1.ResourceAttributes{
				Namespace: "shop", Verb: "get", Group: "", Resource: "pods", Subresource: "capture", Name: "web"}
		}},
		{NonResource("get", "/metrics"), func(s authzv1.SubjectAccessReviewSpec) bool {
			return s.ResourceAttributes == nil && *s.NonResourceAttributes == authzv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}
		}},
	} {
		if _, err := a.Authorize(t.Context(), u, tc.attrs); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		spec := s.lastAccessSpec
		s.mu.Unlock()
		if spec.User != u.Name || spec.UID != "u-1" || len(spec.Groups) != 2 || spec.Extra["authentication.kubernetes.io/pod-name"][0] != "p" || !tc.check(spec) {
			t.Errorf("%s: review spec %+v", tc.attrs, spec)
		}
	}
}

func TestAuthorizeCachedAndErrorsNot(t *testing.T) {
	s := newAPIServer()
	var down bool
	s.access = func(spec authzv1.SubjectAccessReviewSpec) (authzv1.SubjectAccessReviewStatus, error) {
		if down {
			return authzv1.SubjectAccessReviewStatus{}, errors.New("etcdserver: request timed out")
		}
		return authzv1.SubjectAccessReviewStatus{Allowed: spec.ResourceAttributes.Namespace == "a", Reason: "RBAC"}, nil
	}
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	a, reg := newTestAuth(t, s, clock, nil)
	ctx := t.Context()
	alice := &User{Name: "alice", Groups: []string{"dev"}}
	bob := &User{Name: "bob", Groups: []string{"dev"}}
	check := func(u *User, ns string, want bool, reviews int64) {
		t.Helper()
		got, err := a.Authorize(ctx, u, PodCapture(ns, "p"))
		if err != nil || got != want || s.accessReviews.Load() != reviews {
			t.Fatalf("%s in %s: %v, %v, %d reviews; want %v, %d reviews", u.Name, ns, got, err, s.accessReviews.Load(), want, reviews)
		}
	}
	check(alice, "a", true, 1)
	check(alice, "a", true, 1)  // cached
	check(bob, "a", true, 2)    // another user, another key
	check(alice, "b", false, 3) // denied
	check(alice, "b", false, 3) // cached
	clock.Step(DefaultDeniedTTL + time.Millisecond)
	check(alice, "b", false, 4) // the denial expired first
	check(alice, "a", true, 4)  // the allowance not yet
	clock.Step(DefaultAllowedTTL - DefaultDeniedTTL)
	check(alice, "a", true, 5)

	down = true
	for range 2 {
		if ok, err := a.Authorize(ctx, &User{Name: "carol"}, PodCapture("a", "p")); ok || err == nil {
			t.Fatalf("API server down: %v, %v; want an error", ok, err)
		}
	}
	down = false
	check(&User{Name: "carol"}, "a", true, 8) // two failed reviews, not cached, and this one
	wantCounts(t, reg, "podcap_api_authorizations_total", map[string]float64{"allowed": 6, "denied": 3, "error": 2})
}

// The cache is bounded: beyond its size the least recently used decision goes.
func TestDecisionCacheBounded(t *testing.T) {
	s := newAPIServer()
	a, _ := newTestAuth(t, s, &fakeClock{}, func(o *Options) { o.CacheSize = 2 })
	for _, ns := range []string{"a", "b", "c", "d"} {
		if _, err := a.Authorize(t.Context(), &User{Name: "alice"}, PodCapture(ns, "")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(a.decisionCache.Keys()); n != 2 {
		t.Fatalf("%d cached decisions, want 2", n)
	}
}
