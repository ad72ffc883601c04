package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// DefaultKeyPairCheckInterval is how often, at most, a KeyPair reads its files again.
const DefaultKeyPairCheckInterval = 5 * time.Second

// KeyPairOptions configure a KeyPair.
type KeyPairOptions struct {
	// CertFile (PEM, the server certificate first, then its chain) and KeyFile (PEM) are the
	// pair, e.g. tls.crt and tls.key of a mounted kubernetes.io/tls Secret.
	CertFile, KeyFile string
	// Logger logs reloads; the zero value logs nothing.
	Logger klog.Logger
	// CheckInterval is how often, at most, a handshake reads the files again; 0 means
	// DefaultKeyPairCheckInterval.
	CheckInterval time.Duration
	// Now is the clock of the checks; nil means time.Now.
	Now func() time.Time
}

// KeyPair is a TLS certificate and key read from files, which follows their rotation: a
// Secret volume's update (the kubelet swaps its `..data` symlink), cert-manager's renewal.
// GetCertificate reads both files again at most once per check interval, and loads them when
// their content changed. A changed pair that does not load (unreadable, not PEM, a key that
// does not match the certificate: e.g. a rotation caught half-written) is logged once per
// change and the last good pair keeps serving; the next check retries once the files change
// again. A handshake never waits for another's check and never fails because of a reload.
type KeyPair struct {
	certFile, keyFile string
	log               klog.Logger
	interval          time.Duration
	now               func() time.Time

	// current is the last good pair, never nil.
	current atomic.Pointer[tls.Certificate]

	// mu protects the fields below. GetCertificate only tries it: a handshake that finds a
	// check running serves the current pair instead of waiting.
	mu        sync.Mutex
	nextCheck time.Time
	seen      [sha256.Size]byte // digest of what the last check read: both files, or the read error
}

// LoadKeyPair loads the pair of opts; a pair that does not load is an error.
func LoadKeyPair(opts KeyPairOptions) (*KeyPair, error) {
	if opts.CheckInterval < 0 {
		return nil, fmt.Errorf("key pair check interval %s: must not be negative", opts.CheckInterval)
	}
	k := &KeyPair{
		certFile: opts.CertFile,
		keyFile:  opts.KeyFile,
		log:      opts.Logger,
		interval: opts.CheckInterval,
		now:      opts.Now,
	}
	if k.interval == 0 {
		k.interval = DefaultKeyPairCheckInterval
	}
	if k.now == nil {
		k.now = time.Now
	}
	pair, digest, err := k.read()
	if err != nil {
		return nil, err
	}
	k.current.Store(pair)
	k.seen = digest
	k.nextCheck = k.now().Add(k.interval)
	k.log.Info("Loaded TLS key pair", "certFile", k.certFile, "keyFile", k.keyFile, "notAfter", pair.Leaf.NotAfter)
	return k, nil
}

// GetCertificate is the tls.Config callback: the current pair, after reading the files again
// if the check interval passed since the last check.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if k.mu.TryLock() { // a check runs already: it is not this handshake's to wait for
		k.checkLocked()
		k.mu.Unlock()
	}
	return k.current.Load(), nil
}

// checkLocked loads the files if the interval passed and they changed since the last check.
func (k *KeyPair) checkLocked() {
	now := k.now()
	if now.Before(k.nextCheck) {
		return
	}
	k.nextCheck = now.Add(k.interval)
	pair, digest, err := k.read()
	if digest == k.seen {
		return // unchanged, loaded or logged already
	}
	k.seen = digest
	if err != nil {
		k.log.Error(err, "TLS key pair changed but does not load; the last good pair keeps serving")
		return
	}
	k.current.Store(pair)
	k.log.Info("Reloaded TLS key pair", "certFile", k.certFile, "keyFile", k.keyFile, "notAfter", pair.Leaf.NotAfter)
}

// read reads and parses both files. digest identifies what it read, the files' content or
// the error reading them, so that an unchanged state is neither loaded nor logged twice.
func (k *KeyPair) read() (*tls.Certificate, [sha256.Size]byte, error) {
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		err = fmt.Errorf("read TLS certificate: %w", err)
		return nil, sha256.Sum256([]byte(err.Error())), err
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		err = fmt.Errorf("read TLS private key: %w", err)
		return nil, sha256.Sum256([]byte(err.Error())), err
	}
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint64(len(certPEM))) // hash.Hash writes never fail
	h.Write(certPEM)
	h.Write(keyPEM)
	var digest [sha256.Size]byte
	h.Sum(digest[:0])
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err == nil && pair.Leaf == nil { // set since Go 1.23, unless GODEBUG=x509keypairleaf=0
		pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0])
	}
	if err != nil {
		return nil, digest, fmt.Errorf("load TLS key pair %s, %s: %w", k.certFile, k.keyFile, err)
	}
	return &pair, digest, nil
}

// maxCABundleBytes bounds a client CA bundle file: a few hundred certificates.
const maxCABundleBytes = 1 << 20

// LoadClientCAs reads a PEM bundle of the CAs that sign the client certificates the API
// server accepts (APITransport.ClientCAs), and returns the pool and the subjects of its
// certificates, for the log. Every block must be a certificate that parses, and there must be
// at least one: a bundle that loads only in part would refuse clients silently. The bundle is
// read once; a changed CA takes a restart of the agent.
func LoadClientCAs(path string) (*x509.CertPool, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read client CA bundle: %w", err)
	}
	if len(b) > maxCABundleBytes {
		return nil, nil, fmt.Errorf("client CA bundle %s is over %d bytes", path, maxCABundleBytes)
	}
	pool := x509.NewCertPool()
	var subjects []string
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("client CA bundle %s: a %q PEM block, want only CERTIFICATE blocks", path, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("client CA bundle %s: certificate %d: %w", path, len(subjects)+1, err)
		}
		pool.AddCert(cert)
		subjects = append(subjects, cert.Subject.String())
	}
	if len(subjects) == 0 {
		return nil, nil, fmt.Errorf("client CA bundle %s: %w", path, errors.New("no PEM certificate in it"))
	}
	return pool, subjects, nil
}
