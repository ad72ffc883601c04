package kubeauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(1e9, 0).Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key}
}

func (ca *testCA) pool() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(ca.cert); return p }

func (ca *testCA) client(t *testing.T, cn string, orgs []string, usage x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Unix(1e9, 0), NotAfter: time.Unix(1e9, 0).Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

func TestAuthenticateClientCertificate(t *testing.T) {
	cluster, other := newTestCA(t, "cluster-ca"), newTestCA(t, "webhook-ca")
	s := newAPIServer()
	s.review = alice
	clock := &fakeClock{t: time.Unix(1e9, 0).Add(time.Minute)}
	a, _ := newTestAuth(t, s, clock, func(o *Options) { o.ClientCAs = cluster.pool })
	withCert := func(auth string, cert *x509.Certificate) (*User, error) {
		r := request(auth)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		return a.Authenticate(t.Context(), r)
	}

	u, err := withCert("", cluster.client(t, "jane", []string{"dev", "ops"}, x509.ExtKeyUsageClientAuth))
	if err != nil || u.Name != "jane" || !slices.Equal(u.Groups, []string{"dev", "ops", AuthenticatedGroup}) || u.Static() {
		t.Fatalf("cluster CA client certificate: %+v, %v", u, err)
	}
	for name, cert := range map[string]*x509.Certificate{
		"another CA (the webhook's)": other.client(t, "alertmanager", nil, x509.ExtKeyUsageClientAuth),
		"a server certificate":       cluster.client(t, "jane", nil, x509.ExtKeyUsageServerAuth),
		"no CN":                      cluster.client(t, "", []string{"dev"}, x509.ExtKeyUsageClientAuth),
	} {
		if _, err := withCert("", cert); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: %v, want ErrUnauthenticated", name, err)
		}
	}
	clock.Step(2 * time.Hour)
	if _, err := withCert("", cluster.client(t, "jane", nil, x509.ExtKeyUsageClientAuth)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("expired certificate: %v, want ErrUnauthenticated", err)
	}
	clock.Step(-2 * time.Hour)
	// a bearer token takes precedence: the client chose it, a bad one is refused
	good := cluster.client(t, "jane", nil, x509.ExtKeyUsageClientAuth)
	if u, err := withCert("Bearer alice-token", good); err != nil || u.Name != "system:serviceaccount:a:alice" {
		t.Errorf("token and certificate: %+v, %v; want the token's user", u, err)
	}
	if _, err := withCert("Bearer garbage", good); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("bad token and good certificate: %v, want ErrUnauthenticated", err)
	}

	// without ClientCAs a certificate is not a credential
	b, _ := newTestAuth(t, s, clock, nil)
	r := request("")
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{good}}
	if _, err := b.Authenticate(t.Context(), r); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("no ClientCAs: %v, want ErrUnauthenticated", err)
	}
}
