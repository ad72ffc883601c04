package alerts_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/podcap/podcap/agent/alerts"
)

// issue makes a CA (self-signed, when ca is nil) or a client certificate signed by ca.
func issue(t *testing.T, cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	parent, signer := tmpl, key
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	} else {
		tmpl.ExtKeyUsage, tmpl.KeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, x509.KeyUsageDigitalSignature
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// With its own CAs the webhook refuses a certificate the TLS server verified against another
// route's CA (the API's user CA, --api-client-ca-file), and takes one of its own.
func TestWebhookVerifiesItsOwnCA(t *testing.T) {
	hookCA, hookKey := issue(t, "webhook-ca", nil, nil)
	userCA, userKey := issue(t, "cluster-ca", nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(hookCA)
	f := newFixture(t, alerts.WebhookOptions{RequireClientCert: true, ClientCAs: func() *x509.CertPool { return pool }})
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want int
	}{
		{"the webhook's CA", must(issue(t, "alertmanager", hookCA, hookKey)), http.StatusOK},
		{"the API's user CA", must(issue(t, "jane", userCA, userKey)), http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodPost, alerts.WebhookPath, strings.NewReader(body(t, 1, false)))
		r.Header.Set("Content-Type", "application/json")
		// the TLS server verified it against its joined pool: VerifiedChains is set either way
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{tc.cert}, VerifiedChains: [][]*x509.Certificate{{tc.cert}}}
		w := httptest.NewRecorder()
		f.hook.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
}

func must(c *x509.Certificate, _ *ecdsa.PrivateKey) *x509.Certificate { return c }
