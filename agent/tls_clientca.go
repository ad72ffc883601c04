package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"
)

// maxCABundleBytes bounds a client CA bundle file: a few hundred certificates.
const maxCABundleBytes = 1 << 20

// ClientCAOptions configure ClientCAs.
type ClientCAOptions struct {
	File string // PEM bundle, e.g. ca.crt of a mounted Secret or ConfigMap
	// Logger logs loads and reloads; the zero value logs nothing.
	Logger klog.Logger
	// CheckInterval is how often, at most, a handshake reads the file again; 0 means
	// DefaultKeyPairCheckInterval.
	CheckInterval time.Duration
	// Now is the clock of the checks; nil means time.Now.
	Now func() time.Time
}

// ClientCAs are the CAs that sign the client certificates the API server accepts
// (APITransport.ClientCAs), read from a PEM bundle that follows its rotation as a KeyPair
// does: a handshake reads the file again at most once per check interval, a changed bundle
// that loads replaces the pool, one that does not is logged and the last good pool stays.
type ClientCAs struct {
	file string
	r    reloader[clientCAPool]
}

type clientCAPool struct {
	pool     *x509.CertPool
	certs    []*x509.Certificate
	subjects []string
}

// LoadClientCAs reads the bundle of opts. Every block must be a certificate that parses, and
// there must be at least one: a bundle that loads only in part would refuse clients silently.
func LoadClientCAs(opts ClientCAOptions) (*ClientCAs, error) {
	if opts.CheckInterval < 0 {
		return nil, fmt.Errorf("client CA check interval %s: must not be negative", opts.CheckInterval)
	}
	c := &ClientCAs{file: opts.File}
	c.r = reloader[clientCAPool]{
		what: "client CA bundle", read: c.read, log: opts.Logger, interval: opts.CheckInterval, now: opts.Now,
		describe: func(p *clientCAPool) []any { return []any{"file", c.file, "subjects", p.subjects} },
	}
	if err := c.r.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Pool returns the current pool, after reading the file again if the check interval passed.
func (c *ClientCAs) Pool() *x509.CertPool { return c.r.get().pool }

// JoinedPool is the pool of the TLS server when several routes verify client certificates
// against their own bundles (--webhook-client-ca-file, --api-client-ca-file): each
// handshake gets a pool of all their current certificates. A route must then verify a
// certificate against its own bundle again, not trust r.TLS.VerifiedChains alone.
func JoinedPool(cas ...*ClientCAs) func() *x509.CertPool {
	return func() *x509.CertPool {
		pool := x509.NewCertPool()
		for _, c := range cas {
			for _, cert := range c.r.get().certs {
				pool.AddCert(cert)
			}
		}
		return pool
	}
}

// Subjects are the subjects of the current pool's certificates, in the file's order.
func (c *ClientCAs) Subjects() []string { return c.r.current.Load().subjects }

func (c *ClientCAs) read() (*clientCAPool, [sha256.Size]byte, error) {
	b, err := os.ReadFile(c.file)
	if err != nil {
		err = fmt.Errorf("read client CA bundle: %w", err)
		return nil, errDigest(err), err
	}
	digest := sha256.Sum256(b)
	if len(b) > maxCABundleBytes {
		return nil, digest, fmt.Errorf("client CA bundle %s is over %d bytes", c.file, maxCABundleBytes)
	}
	p := &clientCAPool{pool: x509.NewCertPool()}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, digest, fmt.Errorf("client CA bundle %s: a %q PEM block, want only CERTIFICATE blocks", c.file, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, digest, fmt.Errorf("client CA bundle %s: certificate %d: %w", c.file, len(p.subjects)+1, err)
		}
		p.pool.AddCert(cert)
		p.certs = append(p.certs, cert)
		p.subjects = append(p.subjects, cert.Subject.String())
	}
	if len(p.subjects) == 0 {
		return nil, digest, fmt.Errorf("client CA bundle %s: %w", c.file, errors.New("no PEM certificate in it"))
	}
	return p, digest, nil
}
