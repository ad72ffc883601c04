package agent

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// DefaultKeyPairCheckInterval is how often, at most, a KeyPair or ClientCAs reads its files
// again.
const DefaultKeyPairCheckInterval = 5 * time.Second

// reloader holds a value read from mounted files (a Secret volume, which the kubelet updates
// by swapping its `..data` symlink) and follows their changes: get reads them again at most
// once per interval and loads them when their content changed. A changed state that does not
// load (unreadable, malformed, a rotation caught half-written) is logged once per change and
// the last good value stays; the next check retries once the files change again. A caller
// never waits for another's check and never fails because of a reload.
type reloader[T any] struct {
	what     string // for the log: "TLS key pair", "client CA bundle"
	read     func() (*T, [sha256.Size]byte, error)
	describe func(*T) []any // key/value pairs of a loaded value, for the log
	log      klog.Logger
	interval time.Duration
	now      func() time.Time
	// current is the last good value, never nil after load.
	current atomic.Pointer[T]
	// mu protects the fields below. get only tries it: a caller that finds a check running
	// takes the current value instead of waiting.
	mu        sync.Mutex
	nextCheck time.Time
	seen      [sha256.Size]byte // digest of what the last check read: the files, or the read error
}

// load reads the value a first time; a value that does not load is an error.
func (r *reloader[T]) load() error {
	if r.interval == 0 {
		r.interval = DefaultKeyPairCheckInterval
	}
	if r.now == nil {
		r.now = time.Now
	}
	v, digest, err := r.read()
	if err != nil {
		return err
	}
	r.current.Store(v)
	r.seen = digest
	r.nextCheck = r.now().Add(r.interval)
	r.log.Info("Loaded "+r.what, r.describe(v)...)
	return nil
}

// get returns the current value, after reading the files again if the interval passed since
// the last check.
func (r *reloader[T]) get() *T {
	if r.mu.TryLock() { // a check runs already: it is not this caller's to wait for
		r.checkLocked()
		r.mu.Unlock()
	}
	return r.current.Load()
}

// checkLocked loads the files if the interval passed and they changed since the last check.
func (r *reloader[T]) checkLocked() {
	now := r.now()
	if now.Before(r.nextCheck) {
		return
	}
	r.nextCheck = now.Add(r.interval)
	v, digest, err := r.read()
	if digest == r.seen {
		return // unchanged, loaded or logged already
	}
	r.seen = digest
	if err != nil {
		r.log.Error(err, r.what+" changed but does not load; the last good one stays in use")
		return
	}
	r.current.Store(v)
	r.log.Info("Reloaded "+r.what, r.describe(v)...)
}

// errDigest identifies a read error, so that the same error is logged once.
func errDigest(err error) [sha256.Size]byte { return sha256.Sum256([]byte(err.Error())) }
