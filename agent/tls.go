package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"
)

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
	r                 reloader[tls.Certificate]
}

// LoadKeyPair loads the pair of opts; a pair that does not load is an error.
func LoadKeyPair(opts KeyPairOptions) (*KeyPair, error) {
	if opts.CheckInterval < 0 {
		return nil, fmt.Errorf("key pair check interval %s: must not be negative", opts.CheckInterval)
	}
	k := &KeyPair{certFile: opts.CertFile, keyFile: opts.KeyFile}
	k.r = reloader[tls.Certificate]{
		what: "TLS key pair", read: k.read, log: opts.Logger, interval: opts.CheckInterval, now: opts.Now,
		describe: func(pair *tls.Certificate) []any {
			return []any{"certFile", k.certFile, "keyFile", k.keyFile, "notAfter", pair.Leaf.NotAfter}
		},
	}
	if err := k.r.load(); err != nil {
		return nil, err
	}
	return k, nil
}

// GetCertificate is the tls.Config callback: the current pair, after reading the files again
// if the check interval passed since the last check.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.r.get(), nil
}

// read reads and parses both files. digest identifies what it read, the files' content or
// the error reading them, so that an unchanged state is neither loaded nor logged twice.
func (k *KeyPair) read() (*tls.Certificate, [sha256.Size]byte, error) {
	certPEM, err := os.ReadFile(k.certFile)
	if err != nil {
		err = fmt.Errorf("read TLS certificate: %w", err)
		return nil, errDigest(err), err
	}
	keyPEM, err := os.ReadFile(k.keyFile)
	if err != nil {
		err = fmt.Errorf("read TLS private key: %w", err)
		return nil, errDigest(err), err
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
