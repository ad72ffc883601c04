// Package kubeauth authenticates and authorises the callers of the agent's HTTP API the way
// the kubelet does for its own API: the caller's bearer token is checked with a TokenReview
// (authentication.k8s.io/v1), then what it asks for with a SubjectAccessReview
// (authorization.k8s.io/v1) on a virtual subresource, pods/capture, or on a non-resource path
// (/metrics). So a Role in a namespace grants reading that namespace's captures and nothing
// else, and the API server's RBAC stays the one place that says who may.
//
// Two other ways in, both opt-in: a static token (--api-token-file), which grants everything
// as it always did, for use without Kubernetes credentials; and a client certificate
// verified against the operator's client CA bundle (--api-client-ca-file), whose CN is the
// user and whose O are the groups, as the API server reads them.
//
// Results are cached briefly and in bounded caches; a failure to ask the API server is an
// error (the caller answers 503), counted, and never cached.
package kubeauth
