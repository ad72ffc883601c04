package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// issueClient returns a client certificate (ExtKeyUsageClientAuth) signed by ca.
func (ca *testCA) issueClient(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestLoadClientCAs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, blocks ...*pem.Block) string {
		var b []byte
		for _, bl := range blocks {
			b = append(b, pem.EncodeToMemory(bl)...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := newTestCA(t), newTestCA(t)
	certA, certB := &pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}, &pem.Block{Type: "CERTIFICATE", Bytes: b.cert.Raw}
	cas, err := LoadClientCAs(ClientCAOptions{File: write("two.pem", certA, certB)})
	if err != nil || len(cas.Subjects()) != 2 || cas.Subjects()[0] != "CN=podcap test CA" {
		t.Fatalf("two CAs: %v", err)
	}
	leaf, _ := x509.ParseCertificate(b.issueClient(t, "am").Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cas.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("a client certificate of the second CA does not verify: %v", err)
	}
	for name, tc := range map[string]struct{ path, err string }{
		"missing":     {filepath.Join(dir, "missing"), "no such file"},
		"empty":       {write("empty.pem"), "no PEM certificate"},
		"not PEM":     {filepath.Join(dir, "garbage"), "no PEM certificate"},
		"a key in it": {write("key.pem", certA, &pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), `a "PRIVATE KEY" PEM block`},
		"broken cert": {write("broken.pem", certA, &pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), "certificate 2"},
	} {
		if name == "not PEM" {
			_ = os.WriteFile(tc.path, []byte("hello"), 0o600)
		}
		if _, err := LoadClientCAs(ClientCAOptions{File: tc.path}); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.err)
		}
	}
}

// With client CAs the API server verifies a client certificate that is given, and still serves
// clients without one (the API's routes take bearer tokens); a certificate of another CA fails
// the handshake. Client CAs need TLS.
func TestAPIServerClientCAs(t *testing.T) {
	ss, err := NewSelfSigned(SelfSignedOptions{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ca, other := newTestCA(t), newTestCA(t)
	if _, err := NewAPIServer(":0", APITransport{InsecureHTTP: true, ClientCAs: func() *x509.CertPool { return ca.pool }}); err == nil {
		t.Error("client CAs over plain HTTP: no error")
	}
	// the bundle is a file that rotates from ca to other: the server follows it
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ca.crt")
	writeCA := func(c *testCA) {
		t.Helper()
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, bundle); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(ca)
	var now atomic.Int64 // the checks' clock, read by the server's handshakes
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	logger, logged := bufferedLogger(t)
	cas, err := LoadClientCAs(ClientCAOptions{File: bundle, Logger: logger, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	api, err := NewAPIServer("127.0.0.1:0", APITransport{GetCertificate: ss.GetCertificate, ClientCAs: cas.Pool})
	if err != nil {
		t.Fatal(err)
	}
	served := countingAPI(api)
	api.Handle("GET /api/v1/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", len(r.TLS.VerifiedChains))
	}))
	addr := serveLocal(t, api)
	client := func(certs ...tls.Certificate) *http.Client {
		c := pinnedClient(ss.Certificate(), "")
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = certs
		return c
	}

	if code, body := get(t, client(), "https://"+addr+"/api/v1/captures", testToken); code != http.StatusOK || served.Load() != 1 {
		t.Fatalf("the API without a client certificate: %d %s", code, body)
	}
	if code, body := get(t, client(), "https://"+addr+"/api/v1/whoami", ""); code != http.StatusOK || body != "0" {
		t.Errorf("no client certificate: %d, %s verified chains; want 0", code, body)
	}
	if code, body := get(t, client(ca.issueClient(t, "alertmanager")), "https://"+addr+"/api/v1/whoami", ""); code != http.StatusOK || body != "1" {
		t.Errorf("a client certificate of the CA: %d, %s verified chains; want 1", code, body)
	}
	refused := func(cert tls.Certificate) bool {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/api/v1/whoami", nil)
		resp, err := client(cert).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	}
	if !refused(other.issueClient(t, "intruder")) {
		t.Errorf("a client certificate of another CA: want a failed handshake")
	}

	// rotation: within the check interval the old bundle holds; after it, the new one
	writeCA(other)
	if !refused(other.issueClient(t, "alertmanager")) {
		t.Error("the new CA's certificate accepted before the check interval passed")
	}
	now.Add(int64(DefaultKeyPairCheckInterval))
	if code, body := get(t, client(other.issueClient(t, "alertmanager")), "https://"+addr+"/api/v1/whoami", ""); code != http.StatusOK || body != "1" {
		t.Errorf("a client certificate of the rotated-to CA: %d, %s verified chains; want 1", code, body)
	}
	if !refused(ca.issueClient(t, "alertmanager")) {
		t.Error("the old CA's certificate still accepted after the rotation")
	}
	// a broken bundle keeps the last good one
	if err := os.WriteFile(bundle, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(DefaultKeyPairCheckInterval))
	if code, _ := get(t, client(other.issueClient(t, "alertmanager")), "https://"+addr+"/api/v1/whoami", ""); code != http.StatusOK {
		t.Errorf("after a broken rotation: %d, want the last good bundle to serve", code)
	}
	if errs := errorEntries(logged()); len(errs) != 1 || !strings.Contains(errs[0].Message, "client CA bundle changed but does not load") {
		t.Errorf("the broken bundle logged as %+v, want one error", errs)
	}
}

// JoinedPool verifies the certificates of every bundle, each as it is now.
func TestJoinedPool(t *testing.T) {
	dir := t.TempDir()
	load := func(name string, ca *testCA) *ClientCAs {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		cas, err := LoadClientCAs(ClientCAOptions{File: p})
		if err != nil {
			t.Fatal(err)
		}
		return cas
	}
	hook, users, other := newTestCA(t), newTestCA(t), newTestCA(t)
	pool := JoinedPool(load("hook.pem", hook), load("users.pem", users))()
	for name, tc := range map[string]struct {
		ca   *testCA
		want bool
	}{"webhook CA": {hook, true}, "user CA": {users, true}, "another CA": {other, false}} {
		leaf, err := x509.ParseCertificate(tc.ca.issueClient(t, "x").Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (err == nil) != tc.want {
			t.Errorf("%s: verify %v, want ok %v", name, err, tc.want)
		}
	}
}
