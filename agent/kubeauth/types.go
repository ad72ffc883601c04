package kubeauth

import (
	"errors"
	"fmt"
	"slices"
)

// User is an authenticated caller.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string

	// static marks the static token's user, which Authorize allows without asking the API
	// server. Only Authenticate sets it: a group name could be claimed by a token or a
	// certificate, this field cannot.
	static bool
}

// Static reports whether u is the static token's user (--api-token-file).
func (u *User) Static() bool { return u.static }

// The static token's user, its only group, and the group every other user gets.
const (
	StaticTokenUser    = "podcap:static-token"
	StaticTokenGroup   = "podcap:static-token"
	AuthenticatedGroup = "system:authenticated"
)

// Attributes are what a caller asks to do: a verb on a resource (Resource set) or on a
// non-resource path (Path set).
type Attributes struct {
	Verb string
	// resource attributes
	Group, Resource, Subresource, Namespace, Name string
	// non-resource attributes
	Path string
}

// The virtual subresource of the agent's captures: `get pods/capture` in a namespace reads
// its pods' captures (list, download, stream, explain).
const (
	CaptureResource    = "pods"
	CaptureSubresource = "capture"
	VerbGet            = "get"
)

// PodCapture are the attributes of reading the captures of pod in namespace; an empty
// namespace means every namespace, an empty pod every pod of the namespace.
func PodCapture(namespace, pod string) Attributes {
	return Attributes{Verb: VerbGet, Resource: CaptureResource, Subresource: CaptureSubresource, Namespace: namespace, Name: pod}
}

// NonResource are the attributes of verb on a non-resource path, such as get /metrics.
func NonResource(verb, path string) Attributes { return Attributes{Verb: verb, Path: path} }

// String is the permission the attributes need, as an operator grants it: `get pods/capture
// in namespace "shop"`, `get pods/capture in all namespaces`, `get /metrics`.
func (a Attributes) String() string {
	if a.Path != "" {
		return a.Verb + " " + a.Path
	}
	r := a.Resource
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Namespace == "" {
		return a.Verb + " " + r + " in all namespaces"
	}
	return fmt.Sprintf("%s %s in namespace %q", a.Verb, r, a.Namespace)
}

// ErrUnauthenticated marks a request whose credentials are missing or refused: the caller
// answers 401. Other errors of Authenticate and Authorize mean the API server could not be
// asked: the caller answers 503.
var ErrUnauthenticated = errors.New("unauthenticated")

// unauthenticated is an ErrUnauthenticated with the reason, for the answer.
type unauthenticated struct{ reason string }

func (e *unauthenticated) Error() string { return "unauthenticated: " + e.reason }
func (e *unauthenticated) Is(target error) bool {
	return target == ErrUnauthenticated
}

func clone(u *User) *User {
	c := *u
	c.Groups = slices.Clone(u.Groups)
	if u.Extra != nil {
		c.Extra = make(map[string][]string, len(u.Extra))
		for k, v := range u.Extra {
			c.Extra[k] = slices.Clone(v)
		}
	}
	return &c
}
