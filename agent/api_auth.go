package agent

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/kubeauth"
)

// APIAuth authenticates and authorises the API's callers; *kubeauth.Auth is the real one.
type APIAuth interface {
	// Authenticate says who sent r; an error that is kubeauth.ErrUnauthenticated is a 401,
	// any other one a failure to ask the API server (503).
	Authenticate(ctx context.Context, r *http.Request) (*kubeauth.User, error)
	// Authorize says whether u may do what attrs say; an error is a failure to ask (503).
	Authorize(ctx context.Context, u *kubeauth.User, attrs kubeauth.Attributes) (bool, error)
}

var _ APIAuth = (*kubeauth.Auth)(nil)

// APIGuard wraps the API's handlers in authentication and authorisation, one line per
// route: Pod for a route of one pod's captures ({namespace} and {pod} in its pattern), List
// for a list across namespaces, NonResource for a path such as /metrics. The answers:
// 401 with WWW-Authenticate for missing or refused credentials, 403 naming the permission
// the caller lacks, 503 when the API server could not be asked.
type APIGuard struct {
	auth APIAuth
	log  klog.Logger
	now  func() time.Time

	// the 503s' log: at most one line per unavailableLogEvery, with the count of the others
	mu         sync.Mutex
	lastLog    time.Time
	suppressed int
}

// unavailableLogEvery bounds the log of an API server that cannot be asked: every API request
// fails alike then, and a client retrying in a loop must not flood the log (the metrics
// podcap_api_authentications_total{result="error"} and ..._authorizations_total count them all).
const unavailableLogEvery = 10 * time.Second

// NewAPIGuard builds the guard of auth; log logs the failures to ask the API server.
func NewAPIGuard(auth APIAuth, log klog.Logger) *APIGuard {
	return &APIGuard{auth: auth, log: log, now: time.Now}
}

// Pod lets a request through if its caller may get pods/capture of the route's
// {namespace}/{pod}.
func (g *APIGuard) Pod(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := g.authenticate(w, r)
		if ok && g.authorize(w, r, u, kubeauth.PodCapture(r.PathValue("namespace"), r.PathValue("pod"))) {
			h.ServeHTTP(w, r)
		}
	})
}

// NonResource lets a request through if its caller may get path (a non-resource URL, as
// the kubelet's /metrics).
func (g *APIGuard) NonResource(path string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := g.authenticate(w, r)
		if ok && g.authorize(w, r, u, kubeauth.NonResource(kubeauth.VerbGet, path)) {
			h.ServeHTTP(w, r)
		}
	})
}

// List lets an authenticated request through to a list across namespaces, with what its
// caller may see in the request's context (ListVisible): every namespace if it may get pods/capture in all
// namespaces, else those of namespaces() (the namespaces that have items now) in which it
// may. ?namespace=NS narrows the list to NS, and a caller that may not see NS gets 403.
// A namespace whose items appear after the check is not visible: the list fails closed.
func (g *APIGuard) List(namespaces func() []string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := g.authenticate(w, r)
		if !ok {
			return
		}
		if only := r.URL.Query().Get("namespace"); only != "" {
			if g.authorize(w, r, u, kubeauth.PodCapture(only, "")) {
				h.ServeHTTP(w, withVisible(r, func(ns string) bool { return ns == only }))
			}
			return
		}
		all, err := g.auth.Authorize(r.Context(), u, kubeauth.PodCapture("", ""))
		if err != nil {
			g.unavailable(w, err)
			return
		}
		if all {
			h.ServeHTTP(w, withVisible(r, func(string) bool { return true }))
			return
		}
		seen := map[string]bool{}
		for _, ns := range namespaces() {
			if _, done := seen[ns]; done || ns == "" {
				continue
			}
			if seen[ns], err = g.auth.Authorize(r.Context(), u, kubeauth.PodCapture(ns, "")); err != nil {
				g.unavailable(w, err) // not a shorter list: the caller would take it for all there is
				return
			}
		}
		h.ServeHTTP(w, withVisible(r, func(ns string) bool { return seen[ns] }))
	})
}

type visibleKey struct{}

func withVisible(r *http.Request, visible func(namespace string) bool) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), visibleKey{}, visible))
}

// ListVisible is what List decided the caller of the request whose context ctx is may see:
// whether it sees a namespace's items. Outside List nothing is visible (fails closed).
func ListVisible(ctx context.Context, namespace string) bool {
	v, ok := ctx.Value(visibleKey{}).(func(string) bool)
	return ok && v(namespace)
}

// authenticate answers 401 or 503 itself when it returns false.
func (g *APIGuard) authenticate(w http.ResponseWriter, r *http.Request) (*kubeauth.User, bool) {
	u, err := g.auth.Authenticate(r.Context(), r)
	switch {
	case err == nil:
		return u, true
	case errors.Is(err, kubeauth.ErrUnauthenticated):
		challenge := `Bearer realm="podcap"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": err.Error()})
	default:
		g.unavailable(w, err)
	}
	return nil, false
}

// authorize answers 403 or 503 itself when it returns false.
func (g *APIGuard) authorize(w http.ResponseWriter, r *http.Request, u *kubeauth.User, attrs kubeauth.Attributes) bool {
	ok, err := g.auth.Authorize(r.Context(), u, attrs)
	switch {
	case err != nil:
		g.unavailable(w, err)
	case !ok:
		writeJSON(w, http.StatusForbidden, map[string]string{"error": forbidden(u, attrs)})
	}
	return ok && err == nil
}

// forbidden says which permission u lacks, in the API server's words.
func forbidden(u *kubeauth.User, attrs kubeauth.Attributes) string {
	msg := "forbidden: user " + quote(u.Name)
	if len(u.Groups) > 0 {
		msg += " (groups " + quote(slices.Sorted(slices.Values(u.Groups))...) + ")"
	}
	msg += " cannot " + attrs.String()
	if attrs.Name != "" {
		msg += " (pod " + quote(attrs.Name) + ")"
	}
	if attrs.Path == "" {
		return msg + ": a Role in the namespace must grant it (deploy/examples/capture-reader.yaml)"
	}
	return msg + ": a ClusterRole with nonResourceURLs must grant it (deploy/examples/capture-reader.yaml)"
}

// unavailable answers 503: the API server could not be asked, the caller may retry. The
// error is logged, not shown: it may name the API server's address.
func (g *APIGuard) unavailable(w http.ResponseWriter, err error) {
	g.mu.Lock()
	now, suppressed := g.now(), g.suppressed
	logIt := g.lastLog.IsZero() || now.Sub(g.lastLog) >= unavailableLogEvery
	if logIt {
		g.lastLog, g.suppressed = now, 0
	} else {
		g.suppressed++
	}
	g.mu.Unlock()
	if logIt {
		g.log.Error(err, "Could not check an API caller with the Kubernetes API server",
			"alikeNotLoggedSinceLast", suppressed, "logEvery", unavailableLogEvery.String())
	}
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{
		"error": "the agent could not check the request with the Kubernetes API server (TokenReview, SubjectAccessReview); retry",
	})
}

func quote(ss ...string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
