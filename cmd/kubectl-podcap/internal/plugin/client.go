package plugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
)

// agentClient talks to one agent's API through a tunnel (the local end of a port-forward).
type agentClient struct {
	base string // https://127.0.0.1:<local port>
	node string // the agent's node, for messages
	http *http.Client
}

// APIError is an agent's answer other than 200. Its message says what the user can do.
type APIError struct {
	Code      int
	Node      string
	Namespace string // "" for a list across namespaces
	What      string // what was asked for: "capture shop/web", "file x of shop/web"
	Body      string // the agent's own words, shortened
}

func (e *APIError) Error() string {
	agent := "the podcap agent on node " + e.Node
	switch e.Code {
	case http.StatusUnauthorized:
		return fmt.Sprintf("%s did not accept your credentials (401: %s): it needs a bearer token "+
			"(or a client certificate it trusts) from your kubeconfig; see 'kubectl podcap --help'", agent, e.Body)
	case http.StatusForbidden:
		ns := "namespace " + e.Namespace
		if e.Namespace == "" {
			ns = "all namespaces"
		}
		return fmt.Sprintf("you may not read captures in %s: ask for get pods/capture (403 from %s: %s)", ns, agent, e.Body)
	case http.StatusNotFound:
		return fmt.Sprintf("%s: not found on %s (404: %s)", e.What, agent, e.Body)
	}
	return fmt.Sprintf("%s: %s answered %d: %s", e.What, agent, e.Code, e.Body)
}

// IsNotFound tells whether err is an agent's 404.
func IsNotFound(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == http.StatusNotFound
}

// get sends GET path and returns the response if it is 200, else an *APIError.
func (c *agentClient) get(ctx context.Context, path, namespace, what string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: agent on node %s: %w", what, c.node, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	body := strings.TrimSpace(string(b))
	var j struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &j) == nil && j.Error != "" {
		body = j.Error
	}
	return nil, &APIError{Code: resp.StatusCode, Node: c.node, Namespace: namespace, What: what, Body: body}
}

// getJSON decodes the 200 answer to GET path into v.
func (c *agentClient) getJSON(ctx context.Context, path, namespace, what string, v any) error {
	resp, err := c.get(ctx, path, namespace, what)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBytes)).Decode(v); err != nil {
		return fmt.Errorf("%s: agent on node %s: decode answer: %w", what, c.node, err)
	}
	return nil
}

// maxJSONBytes bounds an agent's JSON answer.
const maxJSONBytes = 64 << 20

// Captures lists the agent's captures in namespace ns ("" for every namespace the caller may
// read), each with the agent's node.
func (c *agentClient) Captures(ctx context.Context, ns string) ([]Capture, error) {
	path := "/api/v1/captures"
	if ns != "" {
		path += "?namespace=" + url.QueryEscape(ns)
	}
	var items []wireCapture
	if err := c.getJSON(ctx, path, ns, "list captures", &items); err != nil {
		return nil, err
	}
	out := make([]Capture, 0, len(items))
	for _, w := range items {
		if ns != "" && w.Namespace != ns { // an agent that ignores ?namespace=
			continue
		}
		cp := w.capture()
		cp.Node = c.node
		out = append(out, cp)
	}
	return out, nil
}

// Decision returns the agent's raw answer to GET /api/v1/decisions/{ns}/{pod}.
func (c *agentClient) Decision(ctx context.Context, ns, pod string) (json.RawMessage, error) {
	var raw json.RawMessage
	path := "/api/v1/decisions/" + url.PathEscape(ns) + "/" + url.PathEscape(pod)
	if err := c.getJSON(ctx, path, ns, "explain pod "+ns+"/"+pod, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// File opens one file of the capture of ns/pod.
func (c *agentClient) File(ctx context.Context, ns, pod, name string) (io.ReadCloser, error) {
	path := "/api/v1/captures/" + url.PathEscape(ns) + "/" + url.PathEscape(pod) + "/files/" + url.PathEscape(name)
	resp, err := c.get(ctx, path, ns, "file "+name+" of "+ns+"/"+pod)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Stream opens the live pcap stream of the running capture of ns/pod.
func (c *agentClient) Stream(ctx context.Context, ns, pod string) (io.ReadCloser, error) {
	path := "/api/v1/captures/" + url.PathEscape(ns) + "/" + url.PathEscape(pod) + "/stream"
	resp, err := c.get(ctx, path, ns, "stream of "+ns+"/"+pod)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// HTTPClientFactory makes the HTTP client for one agent; serverName is the name its
// certificate is verified against when a CA is given.
type HTTPClientFactory func(serverName string) (*http.Client, error)

// NewHTTPClientFactory builds the agents' HTTP clients from the user's rest.Config: the same
// credentials the user presents to the API server (bearer token or token file, an exec or
// auth-provider plugin's token through the config's transport wrappers, client certificates
// as the TLS client certificate), never impersonation (the agent authorises the caller's own
// identity). With caFile the agent's certificate must chain to it; without, it is not
// verified: the connection runs inside the port-forward tunnel, which the user's client opened
// to the authenticated API server, and the API server to the kubelet of the agent's node.
func NewHTTPClientFactory(cfg *rest.Config, caFile, userAgent string) (HTTPClientFactory, error) {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{}
	c.CAFile, c.CAData, c.ServerName = "", nil, "" // those are the API server's
	c.Insecure = true
	c.UserAgent = userAgent
	tc, err := c.TransportConfig()
	if err != nil {
		return nil, fmt.Errorf("credentials from kubeconfig: %w", err)
	}
	clientTLS, err := transport.TLSConfigFor(tc)
	if err != nil {
		return nil, fmt.Errorf("client certificate from kubeconfig: %w", err)
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("agent CA: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("agent CA: no PEM certificate in %s", caFile)
		}
	}
	return func(serverName string) (*http.Client, error) {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if clientTLS != nil {
			t = clientTLS.Clone()
		}
		t.InsecureSkipVerify = roots == nil
		t.RootCAs, t.ServerName = roots, serverName
		base := &http.Transport{TLSClientConfig: t, TLSHandshakeTimeout: 10 * time.Second, DisableCompression: true, MaxIdleConnsPerHost: 4}
		rt, err := transport.HTTPWrappersForConfig(tc, base)
		if err != nil {
			return nil, fmt.Errorf("credentials from kubeconfig: %w", err)
		}
		return &http.Client{Transport: rt}, nil
	}, nil
}
