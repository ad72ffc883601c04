package kubeauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// Authenticate says who sent r: the user of its bearer token (the static token, else a
// TokenReview), else, without an Authorization header, the subject of its client
// certificate if ClientCAs verify it. The error is an ErrUnauthenticated with the reason
// for missing or refused credentials (a bad token is refused even with a good
// certificate: the client chose the token), any other error a failure to ask the API
// server.
func (a *Auth) Authenticate(ctx context.Context, r *http.Request) (*User, error) {
	u, err := a.authenticate(ctx, r)
	switch {
	case err == nil:
		a.m.authentications.WithLabelValues(resultOK).Inc()
	case errors.Is(err, ErrUnauthenticated):
		a.m.authentications.WithLabelValues(resultUnauthenticated).Inc()
	default:
		a.m.authentications.WithLabelValues(resultError).Inc()
	}
	return u, err
}

func (a *Auth) authenticate(ctx context.Context, r *http.Request) (*User, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		token = strings.TrimSpace(token)
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			return nil, &unauthenticated{"the Authorization header is not a bearer token"}
		}
		return a.token(ctx, token)
	}
	if a.cas != nil && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return a.certificate(r.TLS.PeerCertificates)
	}
	if a.cas != nil {
		return nil, &unauthenticated{"no credentials: send a bearer token (Authorization: Bearer <token>) or a client certificate"}
	}
	return nil, &unauthenticated{"no credentials: send a bearer token (Authorization: Bearer <token>)"}
}

// tokenKey is what the token cache holds for a token: its SHA-256 digest, never the token.
func tokenKey(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// token authenticates a bearer token: the static one (digests compared in constant time,
// so neither its bytes nor its length show), else the cache, else a TokenReview.
func (a *Auth) token(ctx context.Context, token string) (*User, error) {
	key := tokenKey(token)
	if a.static != nil && subtle.ConstantTimeCompare(key[:], a.static[:]) == 1 {
		return &User{Name: StaticTokenUser, Groups: []string{StaticTokenGroup, AuthenticatedGroup}, static: true}, nil
	}
	if v, ok := a.tokenCache.Get(key); ok {
		return v.(tokenResult).result()
	}
	v, err, _ := a.inflight.Do("token:"+string(key[:]), func() (any, error) { return a.reviewToken(ctx, token, key) })
	if err != nil {
		return nil, err
	}
	return v.(tokenResult).result()
}

// reviewToken asks the API server about token and caches the answer (not an error). It runs
// once for every request waiting on the same token: the first one's cancellation does not end
// it for the others, the review timeout does.
func (a *Auth) reviewToken(ctx context.Context, token string, key [sha256.Size]byte) (tokenResult, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	review, err := a.tokens.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return tokenResult{}, fmt.Errorf("token review: %w", err) // not cached: the next request asks again
	}
	st := review.Status
	res := tokenResult{reason: "the bearer token was refused (TokenReview)"}
	if st.Authenticated && st.User.Username != "" {
		res = tokenResult{user: &User{Name: st.User.Username, UID: st.User.UID, Groups: slices.Clone(st.User.Groups)}}
		for k, v := range st.User.Extra {
			if res.user.Extra == nil {
				res.user.Extra = map[string][]string{}
			}
			res.user.Extra[k] = slices.Clone(v)
		}
		a.tokenCache.Add(key, res, a.tokenTTL)
	} else {
		// the review's error says why (expired, bad signature); the log has it, not the caller
		klog.FromContext(ctx).V(4).Info("Bearer token refused by TokenReview", "error", st.Error)
		a.tokenCache.Add(key, res, a.tokenFailureTTL)
	}
	return res, nil
}

func (r tokenResult) result() (*User, error) {
	if r.user == nil {
		return nil, &unauthenticated{r.reason}
	}
	return clone(r.user), nil // the caller may change its copy
}

// certificate authenticates a client certificate chain (leaf first, as the client sent it)
// against ClientCAs, for client authentication, now. The TLS server verified it already,
// but against its whole pool, which may hold CAs given for another route.
func (a *Auth) certificate(chain []*x509.Certificate) (*User, error) {
	leaf := chain[0]
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: a.cas(), Intermediates: intermediates, CurrentTime: a.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, &unauthenticated{"the client certificate is not one of the agent's --api-client-ca-file: " + err.Error()}
	}
	if leaf.Subject.CommonName == "" {
		return nil, &unauthenticated{"the client certificate has no common name (CN, the user name)"}
	}
	groups := append(slices.Clone(leaf.Subject.Organization), AuthenticatedGroup)
	return &User{Name: leaf.Subject.CommonName, Groups: groups}, nil
}
