package kubeauth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
)

// TokenReviewer creates TokenReviews: client-go's
// AuthenticationV1().TokenReviews() of a clientset.
type TokenReviewer interface {
	Create(ctx context.Context, review *authnv1.TokenReview, opts metav1.CreateOptions) (*authnv1.TokenReview, error)
}

// SubjectAccessReviewer creates SubjectAccessReviews: client-go's
// AuthorizationV1().SubjectAccessReviews() of a clientset.
type SubjectAccessReviewer interface {
	Create(ctx context.Context, review *authzv1.SubjectAccessReview, opts metav1.CreateOptions) (*authzv1.SubjectAccessReview, error)
}

// How long results are cached. A token that authenticated is trusted for 10 s: a deleted
// ServiceAccount or an expired token stops working within 10 s, and a client that makes
// many requests (`kubectl podcap get` downloads a ring file by file) costs one TokenReview.
// A refused token is remembered for 5 s only, so that a token just created (or a binding
// just made, for decisions) works almost at once, while a client that retries a bad token
// in a loop still costs at most one review per 5 s. Decisions: allowed 10 s (a Role removed
// stops granting within 10 s), denied 5 s. The API server's own webhook caches default to
// minutes; podcap's callers are few, so the shorter times cost little.
const (
	DefaultTokenTTL        = 10 * time.Second
	DefaultTokenFailureTTL = 5 * time.Second
	DefaultAllowedTTL      = 10 * time.Second
	DefaultDeniedTTL       = 5 * time.Second
	// DefaultCacheSize bounds each cache (tokens, decisions), in entries of a few hundred
	// bytes; the least recently used entry goes first.
	DefaultCacheSize = 4096
	// DefaultReviewTimeout bounds one TokenReview or SubjectAccessReview: a stalled API
	// server is a 503 within it, not a request hanging until the server's write timeout.
	DefaultReviewTimeout = 5 * time.Second
)

// Options configure an Auth.
type Options struct {
	// TokenReviews and SubjectAccessReviews reach the API server; both required.
	TokenReviews         TokenReviewer
	SubjectAccessReviews SubjectAccessReviewer
	// StaticToken, if not empty, is a bearer token that authenticates as StaticTokenUser,
	// whom Authorize allows everything without asking the API server (--api-token-file).
	StaticToken string
	// ClientCAs, if set, are the CAs whose client certificates authenticate their subject:
	// CN the user, O the groups (--api-client-ca-file). The certificate is verified against
	// them here, whatever else the TLS server's pool holds (another route's CAs).
	ClientCAs func() *x509.CertPool
	// Cache times and size, and the review timeout; 0 means the Default… value.
	TokenTTL, TokenFailureTTL, AllowedTTL, DeniedTTL time.Duration
	CacheSize                                        int
	ReviewTimeout                                    time.Duration
	// Registerer registers the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock of the caches and of certificate validity; nil means time.Now.
	Now func() time.Time
}

// Auth authenticates and authorises requests; safe for concurrent use.
type Auth struct {
	tokens  TokenReviewer
	sars    SubjectAccessReviewer
	static  *[sha256.Size]byte // digest of the static token, nil without one
	cas     func() *x509.CertPool
	now     func() time.Time
	timeout time.Duration

	tokenTTL, tokenFailureTTL, allowedTTL, deniedTTL time.Duration
	// tokenCache maps tokenKey(token) (a digest, never the token) to a tokenResult;
	// decisionCache maps decisionKey(user, attributes) to a bool (allowed).
	tokenCache, decisionCache *cache.LRUExpireCache
	// inflight shares one review among the requests that need the same answer at once (a
	// client downloading a ring file by file, ten stream readers starting): keyed by the
	// cache key, so N requests with a new token cost one TokenReview, not N.
	inflight singleflight.Group

	m authMetrics
}

type tokenResult struct {
	user   *User  // nil: refused
	reason string // why it was refused
}

type clockFunc func() time.Time

func (f clockFunc) Now() time.Time { return f() }

// New builds an Auth of o and registers its metrics.
func New(o Options) (*Auth, error) {
	if o.TokenReviews == nil || o.SubjectAccessReviews == nil {
		return nil, errors.New("kubeauth: TokenReviews and SubjectAccessReviews are required")
	}
	if o.TokenTTL < 0 || o.TokenFailureTTL < 0 || o.AllowedTTL < 0 || o.DeniedTTL < 0 || o.CacheSize < 0 || o.ReviewTimeout < 0 {
		return nil, errors.New("kubeauth: cache times, cache size and review timeout must not be negative")
	}
	a := &Auth{
		tokens: o.TokenReviews, sars: o.SubjectAccessReviews, cas: o.ClientCAs, now: o.Now,
		timeout:         cmp.Or(o.ReviewTimeout, DefaultReviewTimeout),
		tokenTTL:        cmp.Or(o.TokenTTL, DefaultTokenTTL),
		tokenFailureTTL: cmp.Or(o.TokenFailureTTL, DefaultTokenFailureTTL),
		allowedTTL:      cmp.Or(o.AllowedTTL, DefaultAllowedTTL),
		deniedTTL:       cmp.Or(o.DeniedTTL, DefaultDeniedTTL),
	}
	if a.now == nil {
		a.now = time.Now
	}
	size := cmp.Or(o.CacheSize, DefaultCacheSize)
	a.tokenCache = cache.NewLRUExpireCacheWithClock(size, clockFunc(a.now))
	a.decisionCache = cache.NewLRUExpireCacheWithClock(size, clockFunc(a.now))
	if o.StaticToken != "" {
		d := sha256.Sum256([]byte(o.StaticToken))
		a.static = &d
	}
	var err error
	if a.m, err = newAuthMetrics(o.Registerer); err != nil {
		return nil, err
	}
	return a, nil
}

// HasStaticToken and VerifiesClientCerts say how a accepts callers, for the log.
func (a *Auth) HasStaticToken() bool      { return a.static != nil }
func (a *Auth) VerifiesClientCerts() bool { return a.cas != nil }
