package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
)

// Validity of a self-signed certificate, and how long before its end a new one replaces it.
// A year: clients that enforce a maximum validity on certificates they are told to trust
// (Apple's platforms: 825 days) accept it.
const (
	SelfSignedValidity    = 365 * 24 * time.Hour
	SelfSignedRenewBefore = 30 * 24 * time.Hour
)

// SelfSignedOptions configure a SelfSigned certificate.
type SelfSignedOptions struct {
	// Hosts are the certificate's subject alternative names: IP addresses, and DNS names
	// (a node's name is one). Empty entries and repeats are ignored.
	Hosts []string
	// Logger logs every certificate made, with its fingerprints; the zero value logs nothing.
	Logger klog.Logger
	// Now is the clock of the validity period; nil means time.Now.
	Now func() time.Time
}

// SelfSigned is a TLS certificate the agent makes for itself, when no key pair is mounted: an
// ECDSA P-256 key that lives in memory only, and a certificate signed by that key for
// SelfSignedValidity. No client trusts it by default; a client pins it instead, by the
// fingerprints the agent logs when it makes it (the log is read with the cluster's
// credentials, not over the network the API serves on). GetCertificate replaces it with a new
// one, logged the same way, SelfSignedRenewBefore before it expires.
type SelfSigned struct {
	ips   []net.IP
	names []string
	log   klog.Logger
	now   func() time.Time

	// current is the certificate served, never nil.
	current atomic.Pointer[tls.Certificate]
	// renewing is held by the one handshake that replaces an expiring certificate.
	renewing sync.Mutex
}

// NewSelfSigned makes a self-signed certificate for opts.Hosts; a host that is neither an IP
// address nor a DNS name is an error.
func NewSelfSigned(opts SelfSignedOptions) (*SelfSigned, error) {
	s := &SelfSigned{log: opts.Logger, now: opts.Now}
	if s.now == nil {
		s.now = time.Now
	}
	for _, h := range opts.Hosts {
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			if !slices.ContainsFunc(s.ips, ip.Equal) {
				s.ips = append(s.ips, ip)
			}
		case len(validation.IsDNS1123Subdomain(h)) == 0:
			if !slices.Contains(s.names, h) {
				s.names = append(s.names, h)
			}
		default:
			return nil, fmt.Errorf("self-signed certificate: host %q is neither an IP address nor a DNS name", h)
		}
	}
	cert, err := s.make()
	if err != nil {
		return nil, err
	}
	s.current.Store(cert)
	s.logMade("Generated a self-signed TLS certificate", cert)
	return s, nil
}

// GetCertificate is the tls.Config callback: the current certificate, replaced first if it is
// due (one handshake replaces it, the others serve the current one meanwhile).
func (s *SelfSigned) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := s.current.Load()
	if s.now().Before(cert.Leaf.NotAfter.Add(-SelfSignedRenewBefore)) || !s.renewing.TryLock() {
		return cert, nil
	}
	defer s.renewing.Unlock()
	if cert = s.current.Load(); !s.now().Before(cert.Leaf.NotAfter.Add(-SelfSignedRenewBefore)) {
		next, err := s.make()
		if err != nil { // the current one serves until it expires
			s.log.Error(err, "Could not renew the self-signed TLS certificate")
			return cert, nil
		}
		s.current.Store(next)
		s.logMade("Renewed the self-signed TLS certificate", next)
		cert = next
	}
	return cert, nil
}

// Certificate is the certificate served now, for clients to pin.
func (s *SelfSigned) Certificate() *x509.Certificate { return s.current.Load().Leaf }

// make generates a new key and its certificate.
func (s *SelfSigned) make() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: serial number: %w", err)
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"podcap"}, CommonName: "podcap-agent"},
		NotBefore:             now.Add(-time.Hour), // clients whose clock is a little behind
		NotAfter:              now.Add(SelfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IPAddresses:           s.ips,
		DNSNames:              s.names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func (s *SelfSigned) logMade(msg string, cert *tls.Certificate) {
	s.log.Info(msg, "sha256Fingerprint", Fingerprint(cert.Leaf), "pinnedPubKey", PinnedPubKey(cert.Leaf),
		"dnsNames", cert.Leaf.DNSNames, "ipAddresses", cert.Leaf.IPAddresses, "notAfter", cert.Leaf.NotAfter)
}

// Fingerprint is the SHA-256 digest of the certificate, as `openssl x509 -fingerprint
// -sha256` prints it: upper-case hex bytes joined by colons.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// PinnedPubKey is the SHA-256 digest of the certificate's public key (its DER
// SubjectPublicKeyInfo), in the form of curl's --pinnedpubkey: "sha256//<base64>".
func PinnedPubKey(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256//" + base64.StdEncoding.EncodeToString(sum[:])
}
