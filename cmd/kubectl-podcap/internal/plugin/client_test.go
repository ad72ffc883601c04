package plugin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// echoServer answers with the caller's Authorization, impersonation header and client
// certificate's CN.
func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := "-"
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = w.Write([]byte(r.Header.Get("Authorization") + "|" + r.Header.Get("Impersonate-User") + "|" + cn + "|" + r.UserAgent()))
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func fetchVia(t *testing.T, f HTTPClientFactory, serverName, url string) (string, error) {
	t.Helper()
	hc, err := f(serverName)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// selfSigned writes a self-signed certificate for cn (also its DNS name) and returns its PEM
// files.
func selfSigned(t *testing.T, cn string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCredentials(t *testing.T) {
	srv := echoServer(t)
	certFile, keyFile := selfSigned(t, "alice", x509.ExtKeyUsageClientAuth)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, []byte("from-file-token"))
	for name, tc := range map[string]struct {
		cfg  rest.Config
		want string
	}{
		"bearer token, no impersonation": {rest.Config{BearerToken: "tok", Impersonate: rest.ImpersonationConfig{UserName: "bob"},
			TLSClientConfig: rest.TLSClientConfig{CAData: []byte("the API server's CA, not the agent's")}}, "Bearer tok||-|ua"},
		"token file":         {rest.Config{BearerTokenFile: tokenFile}, "Bearer from-file-token||-|ua"},
		"client certificate": {rest.Config{TLSClientConfig: rest.TLSClientConfig{CertFile: certFile, KeyFile: keyFile}}, "||alice|ua"},
		"auth provider wrapper": {rest.Config{WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				r = r.Clone(r.Context())
				r.Header.Set("Authorization", "Bearer from-plugin")
				return rt.RoundTrip(r)
			})
		}}, "Bearer from-plugin||-|ua"},
	} {
		t.Run(name, func(t *testing.T) {
			f, err := NewHTTPClientFactory(&tc.cfg, "", "ua")
			if err != nil {
				t.Fatal(err)
			}
			got, err := fetchVia(t, f, "ignored-without-ca", srv.URL)
			if err != nil || got != tc.want {
				t.Errorf("server saw %q (err %v), want %q", got, err, tc.want)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestAgentCAFile(t *testing.T) {
	srv := echoServer(t)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	f, err := NewHTTPClientFactory(&rest.Config{BearerToken: "tok"}, caFile, "ua")
	if err != nil {
		t.Fatal(err)
	}
	// httptest's certificate names example.com
	if got, err := fetchVia(t, f, "example.com", srv.URL); err != nil || got != "Bearer tok||-|ua" {
		t.Errorf("with the right CA and name: %q, %v", got, err)
	}
	if _, err := fetchVia(t, f, "node-1", srv.URL); err == nil || !strings.Contains(err.Error(), "certificate is valid for") {
		t.Errorf("a name the certificate lacks: %v, want a verification error", err)
	}
	// same name, another key (every httptest server has the same certificate)
	other := httptest.NewUnstartedServer(http.NotFoundHandler())
	certFile, keyFile := selfSigned(t, "example.com", x509.ExtKeyUsageServerAuth)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	other.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	other.StartTLS()
	defer other.Close()
	if _, err := fetchVia(t, f, "example.com", other.URL); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("another certificate: %v, want a verification error", err)
	}
	writeFile(t, caFile, []byte("junk"))
	if _, err := NewHTTPClientFactory(&rest.Config{}, caFile, "ua"); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk CA file: %v", err)
	}
}
