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
// webhook is off at start, and a rotation to such a file keeps the last good token.
var errNoToken = errors.New("no usable webhook token")

// tokenFile is the webhook's bearer token, read from a file that follows its rotation: a
// Secret volume's update swaps its `..data` symlink, so the file's content changes under the
// same path. Like agent.KeyPair, a request reads the file again at most once per interval
// (a request that finds a check running does not wait for it), and only a changed content is
// loaded or logged. A changed file that holds no usable token (a Secret emptied by mistake,
// a token shorter than MinTokenLen) is logged once and the last good token stays: revoke a
// token by rotating to a new one, not by deleting the Secret.
type tokenFile struct {
	path     string
	interval time.Duration
	now      func() time.Time
	log      klog.Logger

	// digest is SHA-256 of the last good token, never nil after newTokenFile. Requests
	// compare digests, so the comparison takes the same time whatever the lengths.
	digest atomic.Pointer[[sha256.Size]byte]

	// mu protects the fields below; check only tries it.
	mu        sync.Mutex
	nextCheck time.Time
	seen      [sha256.Size]byte // digest of what the last check read: the file, or its error
}

// newTokenFile reads the token of path. An error wrapping errNoToken says why the file holds
// no usable token; any other error is the file's (unreadable).
func newTokenFile(path string, interval time.Duration, now func() time.Time, log klog.Logger) (*tokenFile, error) {
	t := &tokenFile{path: path, interval: interval, now: now, log: log}
	token, seen, err := t.read()
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(token)
	t.digest.Store(&d)
	t.seen = seen
	t.nextCheck = now().Add(interval)
	return t, nil
}

// matches reports whether got is the current token, in constant time: it compares SHA-256
// digests with crypto/subtle, so neither the token's bytes nor its length show in the time.
func (t *tokenFile) matches(got string) bool {
	t.check()
	return digestMatches(t.digest.Load(), got)
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
	if err != nil {
		t.log.Error(err, "Webhook token file changed but holds no usable token; the last good token stays", "tokenFile", t.path)
		return
	}
	d := sha256.Sum256(token)
	t.digest.Store(&d)
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
