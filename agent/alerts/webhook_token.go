package alerts

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// MinTokenLen is the shortest webhook bearer token accepted, in bytes, as for the agent's API
// (agent.MinAPITokenLen): a guessable token would let anyone on the node's network start
// captures by posting alerts.
const MinTokenLen = 16

// maxTokenFileBytes bounds what a token file read takes; a token is tens of bytes.
const maxTokenFileBytes = 4 << 10

// DefaultTokenCheckInterval is how often, at most, the webhook reads its token file again.
const DefaultTokenCheckInterval = 5 * time.Second

// errNoToken marks a token file that holds no usable token (missing, empty, too short): the
// webhook is off until the file holds one, and a rotation to such a file keeps the last good
// token.
var errNoToken = errors.New("no usable webhook token")

// tokenFile is the webhook's bearer token, read from a file that follows its rotation: a
// Secret volume's update swaps its `..data` symlink, so the file's content changes under the
// same path. Like agent.KeyPair, a request reads the file again at most once per interval
// (a request that finds a check running does not wait for it), and only a changed content is
// loaded or logged. A changed file that holds no usable token (a Secret emptied by mistake,
// a token shorter than MinTokenLen) is logged once and the last good token stays: revoke a
// token by rotating to a new one, not by deleting the Secret.
//
// A file that holds no usable token from the start (the optional Secret is created after the
// agent started, and the kubelet fills the volume later) leaves the digest nil: nothing
// matches, missing says why, and the same checks load the token when it appears.
type tokenFile struct {
	path     string
	interval time.Duration
	now      func() time.Time
	log      klog.Logger

	// digest is SHA-256 of the last good token, nil until there is one. Requests compare
	// digests, so the comparison takes the same time whatever the lengths.
	digest atomic.Pointer[[sha256.Size]byte]
	// why says why there is no good token yet; nil once digest is set.
	why atomic.Pointer[string]

	// mu protects the fields below; check only tries it.
	mu        sync.Mutex
	nextCheck time.Time
	seen      [sha256.Size]byte // digest of what the last check read: the file, or its error
}

// newTokenFile reads the token of path. A file without a usable token (errNoToken) is not an
// error: missing then says why until one appears. An unreadable file is an error.
func newTokenFile(path string, interval time.Duration, now func() time.Time, log klog.Logger) (*tokenFile, error) {
	t := &tokenFile{path: path, interval: interval, now: now, log: log}
	token, seen, err := t.read()
	switch {
	case errors.Is(err, errNoToken):
		why := err.Error()
		t.why.Store(&why)
	case err != nil:
		return nil, err
	default:
		d := sha256.Sum256(token)
		t.digest.Store(&d)
	}
	t.seen = seen
	t.nextCheck = now().Add(interval)
	return t, nil
}

// missing checks the file (at most once per interval) and says why there is no usable token
// yet, or "" once there is one.
func (t *tokenFile) missing() string {
	if t.digest.Load() != nil {
		return ""
	}
	t.check()
	if why := t.why.Load(); why != nil && t.digest.Load() == nil {
		return *why
	}
	return ""
}

// matches reports whether got is the current token, in constant time: it compares SHA-256
// digests with crypto/subtle, so neither the token's bytes nor its length show in the time.
// Nothing matches while there is no usable token.
func (t *tokenFile) matches(got string) bool {
	t.check()
	d := t.digest.Load()
	return d != nil && digestMatches(d, got)
}

func digestMatches(want *[sha256.Size]byte, got string) bool {
	d := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(d[:], want[:]) == 1
}

// check reads the file again if the interval passed, and loads a changed usable token.
func (t *tokenFile) check() {
	if !t.mu.TryLock() {
		return // another request checks now; this one uses the current token
	}
	defer t.mu.Unlock()
	now := t.now()
	if now.Before(t.nextCheck) {
		return
	}
	t.nextCheck = now.Add(t.interval)
	token, seen, err := t.read()
	if seen == t.seen {
		return // unchanged: loaded or logged already
	}
	t.seen = seen
	first := t.digest.Load() == nil
	switch {
	case err != nil && first:
		why := err.Error()
		t.why.Store(&why)
		t.log.Info("Webhook token file changed but holds no usable token yet; the webhook stays off", "why", why)
		return
	case err != nil:
		t.log.Error(err, "Webhook token file changed but holds no usable token; the last good token stays", "tokenFile", t.path)
		return
	}
	d := sha256.Sum256(token)
	t.digest.Store(&d)
	if first {
		t.log.Info("Loaded webhook token: the Alertmanager webhook is on", "tokenFile", t.path, "path", WebhookPath) // never the token
		return
	}
	t.log.Info("Reloaded webhook token", "tokenFile", t.path) // never the token
}

// read reads the token (surrounding white space trimmed). seen identifies what it read, the
// content or the error, so that an unchanged state is neither loaded nor logged twice.
func (t *tokenFile) read() (token []byte, seen [sha256.Size]byte, err error) {
	defer func() {
		if err != nil {
			seen = sha256.Sum256([]byte(err.Error()))
		}
	}()
	f, err := os.Open(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, seen, fmt.Errorf("%w: --webhook-token-file %s does not exist", errNoToken, t.path)
	}
	if err != nil {
		return nil, seen, fmt.Errorf("read webhook token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return nil, seen, fmt.Errorf("read webhook token file %s: %w", t.path, err)
	}
	if len(b) > maxTokenFileBytes {
		return nil, seen, fmt.Errorf("%w: --webhook-token-file %s is over %d bytes", errNoToken, t.path, maxTokenFileBytes)
	}
	seen = sha256.Sum256(b)
	token = []byte(strings.TrimSpace(string(b)))
	if len(token) < MinTokenLen {
		return nil, seen, fmt.Errorf("%w: the token in --webhook-token-file %s is %d bytes, shorter than the minimum of %d (e.g. openssl rand -hex 24)",
			errNoToken, t.path, len(token), MinTokenLen)
	}
	return token, seen, nil
}
