package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// get requests url with client and returns the status and body; a transport error fails the test.
func get(t *testing.T, client *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pinnedClient trusts exactly cert (the self-signed certificate as its own root) and checks
// the host name against its SANs, as curl --cacert does with the certificate.
func pinnedClient(cert *x509.Certificate, serverName string) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName}, DisableKeepAlives: true}}
}

// countingAPI is an API server route that counts the requests it served.
func countingAPI(srv *Server) *atomic.Int64 {
	var n atomic.Int64
	srv.Handle("GET /api/v1/captures", testGuard().List(func() []string { return nil }, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		_, _ = w.Write([]byte("[]\n"))
	})))
	return &n
}

// The API server refuses to be built without TLS unless plain HTTP is asked for explicitly.
func TestNewAPIServerNeedsTLSOrOptOut(t *testing.T) {
	if _, err := NewAPIServer(":0", APITransport{}); !errors.Is(err, ErrAPIWithoutTLS) {
		t.Fatalf("no certificate, no opt-out: %v, want ErrAPIWithoutTLS", err)
	}
	ss, err := NewSelfSigned(SelfSignedOptions{Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewAPIServer(":0", APITransport{GetCertificate: ss.GetCertificate, InsecureHTTP: true}); err == nil {
		t.Fatal("a certificate and plain HTTP both: no error")
	}
	for name, tr := range map[string]APITransport{"tls": {GetCertificate: ss.GetCertificate}, "opt-out": {InsecureHTTP: true}} {
		if _, err := NewAPIServer(":0", tr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The two listeners: health and metrics over plain HTTP on one, the API over TLS only on the
// other. A plain HTTP request to the API port is never served, not even with the right token;
// the metrics port serves no API.
func TestServersSplitPlainMetricsTLSAPI(t *testing.T) {
	metricsAddr := serveLocal(t, NewMetricsServer("127.0.0.1:0", prometheus.NewRegistry(), func() bool { return true }))
	ss, err := NewSelfSigned(SelfSignedOptions{Hosts: []string{"node-1", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPIServer("127.0.0.1:0", APITransport{GetCertificate: ss.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	served := countingAPI(api)
	apiAddr := serveLocal(t, api)
	plain := &http.Client{Timeout: 10 * time.Second}

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, body := get(t, plain, "http://"+metricsAddr+path, ""); code != http.StatusOK {
			t.Errorf("plain GET %s on the metrics port: %d %s", path, code, body)
		}
	}
	if code, body := get(t, plain, "http://"+metricsAddr+"/api/v1/captures", testToken); code != http.StatusNotFound ||
		!strings.Contains(body, "--api-listen-address") {
		t.Errorf("the API on the metrics port: %d %q, want 404 saying where the API is", code, body)
	}

	client := pinnedClient(ss.Certificate(), "")
	if code, body := get(t, client, "https://"+apiAddr+"/api/v1/captures", testToken); code != http.StatusOK || served.Load() != 1 {
		t.Fatalf("GET the API over TLS: %d %s, served %d", code, body, served.Load())
	}
	if code, _ := get(t, client, "https://"+apiAddr+"/api/v1/captures", ""); code != http.StatusUnauthorized {
		t.Errorf("GET the API over TLS without a token: %d, want 401", code)
	}
	if code, _ := get(t, client, "https://"+apiAddr+"/metrics", ""); code != http.StatusNotFound {
		t.Errorf("GET /metrics on the API port: %d, want 404 (metrics are on their own port)", code)
	}
	code, body := get(t, plain, "http://"+apiAddr+"/api/v1/captures", testToken)
	if code != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Errorf("plain HTTP to the API port: %d %q, want net/http's 400 for HTTP to an HTTPS server", code, body)
	}
	if served.Load() != 1 {
		t.Errorf("the API served %d requests, want only the one over TLS", served.Load())
	}
}

// With the explicit opt-out the API server speaks plain HTTP.
func TestAPIServerInsecureOptOut(t *testing.T) {
	api, err := NewAPIServer("127.0.0.1:0", APITransport{InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	served := countingAPI(api)
	addr := serveLocal(t, api)
	if code, body := get(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/api/v1/captures", testToken); code != http.StatusOK || served.Load() != 1 {
		t.Fatalf("plain GET with the opt-out: %d %s", code, body)
	}
}

// Every phase of a connection is bounded on both servers: a stalled client holds a connection
// for a bounded time.
func TestServerTimeouts(t *testing.T) {
	api, err := NewAPIServer("127.0.0.1:0", APITransport{InsecureHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Server{NewMetricsServer("127.0.0.1:0", prometheus.NewRegistry(), func() bool { return true }), api} {
		srv := s.httpServer()
		for name, d := range map[string]time.Duration{"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
			"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout} {
			if d <= 0 {
				t.Errorf("%s: %s is not set", s.name, name)
			}
		}
		// a response may take a fresh policy evaluation, up to --policy-eval-timeout's maximum
		if srv.WriteTimeout < 10*time.Second {
			t.Errorf("%s: WriteTimeout %s is shorter than the longest policy evaluation", s.name, srv.WriteTimeout)
		}
	}
}

// The generated certificate is an ECDSA P-256 server certificate that verifies, as its own
// root, for every host it was made for and no other; the logged fingerprints are those of
// the served certificate.
func TestSelfSignedCertificate(t *testing.T) {
	logger, logged := bufferedLogger(t)
	ss, err := NewSelfSigned(SelfSignedOptions{Logger: logger,
		Hosts: []string{"node-1.example", "localhost", "127.0.0.1", "::1", "10.0.0.7", "", "localhost", "10.0.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ss.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if key, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || key.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", cert.PrivateKey)
	}
	if len(leaf.DNSNames) != 2 || len(leaf.IPAddresses) != 3 {
		t.Errorf("SANs %v %v, want 2 names and 3 addresses, without repeats", leaf.DNSNames, leaf.IPAddresses)
	}
	if leaf.IsCA || leaf.NotAfter.Sub(leaf.NotBefore) > SelfSignedValidity+time.Hour || time.Until(leaf.NotAfter) < SelfSignedValidity-time.Hour {
		t.Errorf("IsCA %v, valid %s to %s", leaf.IsCA, leaf.NotBefore, leaf.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for host, ok := range map[string]bool{"node-1.example": true, "localhost": true, "127.0.0.1": true, "::1": true, "10.0.0.7": true,
		"node-2.example": false, "10.0.0.8": false} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != ok {
			t.Errorf("verify for %s: %v, want ok=%v", host, err, ok)
		}
	}

	sum := sha256.Sum256(leaf.Raw)
	if want := strings.ToUpper(hex.EncodeToString(sum[:])); strings.ReplaceAll(Fingerprint(leaf), ":", "") != want ||
		len(Fingerprint(leaf)) != 32*3-1 {
		t.Errorf("fingerprint %s, want %s with colons", Fingerprint(leaf), want)
	}
	spki, err := x509.MarshalPKIXPublicKey(&cert.PrivateKey.(*ecdsa.PrivateKey).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	spkiSum := sha256.Sum256(spki)
	if want := "sha256//" + base64.StdEncoding.EncodeToString(spkiSum[:]); PinnedPubKey(leaf) != want {
		t.Errorf("pinned public key %s, want %s", PinnedPubKey(leaf), want)
	}
	entries := logged()
	if len(entries) != 1 || !strings.Contains(fmt.Sprint(entries[0].ParameterKVList...), Fingerprint(leaf)) ||
		!strings.Contains(fmt.Sprint(entries[0].ParameterKVList...), PinnedPubKey(leaf)) {
		t.Errorf("log %+v, want one entry with both fingerprints", entries)
	}

	if _, err := NewSelfSigned(SelfSignedOptions{Hosts: []string{"not a host"}}); err == nil {
		t.Error("a host that is neither an address nor a name: no error")
	}
}

// A self-signed certificate is replaced SelfSignedRenewBefore before it expires, once, and
// the new one is logged.
func TestSelfSignedRenewal(t *testing.T) {
	logger, logged := bufferedLogger(t)
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ss, err := NewSelfSigned(SelfSignedOptions{Hosts: []string{"localhost"}, Logger: logger, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	first := ss.Certificate()
	served := func() *x509.Certificate {
		t.Helper()
		c, err := ss.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf
	}
	advance(SelfSignedValidity - SelfSignedRenewBefore - time.Second)
	if c := served(); !bytes.Equal(c.Raw, first.Raw) {
		t.Fatal("renewed before it was due")
	}
	advance(time.Second)
	second := served()
	if bytes.Equal(second.Raw, first.Raw) || !second.NotAfter.Equal(clock().Add(SelfSignedValidity)) {
		t.Fatalf("not renewed when due: notAfter %s", second.NotAfter)
	}
	if c := served(); !bytes.Equal(c.Raw, second.Raw) {
		t.Fatal("renewed twice")
	}
	if entries := logged(); len(entries) != 2 || entries[1].Message != "Renewed the self-signed TLS certificate" {
		t.Fatalf("log %+v, want the start and one renewal", entries)
	}
}
