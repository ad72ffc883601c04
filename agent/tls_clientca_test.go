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
	pool, subjects, err := LoadClientCAs(write("two.pem", certA, certB))
	if err != nil || len(subjects) != 2 || subjects[0] != "CN=podcap test CA" {
		t.Fatalf("two CAs: %v %v", subjects, err)
	}
	leaf, _ := x509.ParseCertificate(b.issueClient(t, "am").Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
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
		if _, _, err := LoadClientCAs(tc.path); err == nil || !strings.Contains(err.Error(), tc.err) {
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
	if _, err := NewAPIServer(":0", APITransport{InsecureHTTP: true, ClientCAs: ca.pool}); err == nil {
		t.Error("client CAs over plain HTTP: no error")
	}
	api, err := NewAPIServer("127.0.0.1:0", APITransport{GetCertificate: ss.GetCertificate, ClientCAs: ca.pool})
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
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/api/v1/whoami", nil)
	if resp, err := client(other.issueClient(t, "intruder")).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a client certificate of another CA: %s, want a failed handshake", resp.Status)
	}
}
