package kubeauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

// Authorize says whether u may do what attrs say: always for the static token's user, else
// as a SubjectAccessReview answers (cached). An error means the API server could not be
// asked; it is not cached.
func (a *Auth) Authorize(ctx context.Context, u *User, attrs Attributes) (bool, error) {
	allowed, err := a.authorize(ctx, u, attrs)
	switch {
	case err != nil:
		a.m.authorizations.WithLabelValues(resultError).Inc()
	case allowed:
		a.m.authorizations.WithLabelValues(resultAllowed).Inc()
	default:
		a.m.authorizations.WithLabelValues(resultDenied).Inc()
	}
	return allowed, err
}

func (a *Auth) authorize(ctx context.Context, u *User, attrs Attributes) (bool, error) {
	if u.static {
		return true, nil
	}
	key, err := decisionKey(u, attrs)
	if err != nil {
		return false, err
	}
	if v, ok := a.decisionCache.Get(key); ok {
		return v.(bool), nil
	}
	v, err, _ := a.inflight.Do("access:"+string(key[:]), func() (any, error) { return a.reviewAccess(ctx, u, attrs, key) })
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// reviewAccess asks the API server whether u may do attrs and caches the answer (not an
// error); shared as reviewToken is.
func (a *Auth) reviewAccess(ctx context.Context, u *User, attrs Attributes, key [sha256.Size]byte) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	review, err := a.sars.Create(ctx, &authzv1.SubjectAccessReview{Spec: reviewSpec(u, attrs)}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review: %w", err) // not cached
	}
	st := review.Status
	if st.Allowed {
		a.decisionCache.Add(key, true, a.allowedTTL)
		return true, nil
	}
	// an evaluation error is a denial too (the API server's authorizers gave no yes); the
	// log says why, the caller gets the permission it lacks
	klog.FromContext(ctx).V(2).Info("Access denied", "user", u.Name, "permission", attrs.String(), "reason", st.Reason, "evaluationError", st.EvaluationError)
	a.decisionCache.Add(key, false, a.deniedTTL)
	return false, nil
}

func reviewSpec(u *User, attrs Attributes) authzv1.SubjectAccessReviewSpec {
	spec := authzv1.SubjectAccessReviewSpec{User: u.Name, UID: u.UID, Groups: u.Groups}
	for k, v := range u.Extra {
		if spec.Extra == nil {
			spec.Extra = map[string]authzv1.ExtraValue{}
		}
		spec.Extra[k] = v
	}
	if attrs.Path != "" {
		spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: attrs.Path, Verb: attrs.Verb}
	} else {
		spec.ResourceAttributes = &authzv1.ResourceAttributes{
			Namespace: attrs.Namespace, Verb: attrs.Verb, Group: attrs.Group, Resource: attrs.Resource,
			Subresource: attrs.Subresource, Name: attrs.Name,
		}
	}
	return spec
}

// decisionKey is the decision cache's key of u doing attrs: a digest of both (user names and
// groups only; a User never holds a token).
func decisionKey(u *User, attrs Attributes) ([sha256.Size]byte, error) {
	b, err := json.Marshal(struct {
		Name, UID string
		Groups    []string
		Extra     map[string][]string // json sorts map keys: the encoding is deterministic
		Attrs     Attributes
	}{u.Name, u.UID, u.Groups, u.Extra, attrs})
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("decision cache key: %w", err)
	}
	return sha256.Sum256(b), nil
}
