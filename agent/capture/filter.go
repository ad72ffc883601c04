package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
	"unicode"
)

// MaxFilterLen bounds a BPF filter expression; real filters are far shorter.
const MaxFilterLen = 1024

// maxCachedFilters bounds the verdict cache; it is emptied when full.
const maxCachedFilters = 1024

// FilterChecker decides whether a BPF filter expression may reach a capture process: the
// expression is one argv element that tcpdump compiles (`tcpdump -d -y LINUX_SLL2 -- <filter>`,
// no shell anywhere), at most MaxFilterLen bytes, with no control characters and no leading '-'
// (so that it can never be read as a tcpdump option, e.g. `-z /tmp/x`). Verdicts are cached by
// expression, so an unchanged policy costs one tcpdump run per distinct filter.
type FilterChecker struct {
	tcpdump string
	timeout time.Duration

	mu sync.Mutex
	// mu protects the fields below.
	verdicts map[string]error
	compiles int // tcpdump runs, for tests
}

// NewFilterChecker checks filters with the tcpdump binary at path (a name is looked up on PATH).
func NewFilterChecker(path string) *FilterChecker {
	return &FilterChecker{tcpdump: path, timeout: 10 * time.Second, verdicts: map[string]error{}}
}

// ErrInvalidFilter wraps every refusal, with the reason.
var ErrInvalidFilter = errors.New("invalid capture filter")

// Check returns nil if filter may be used; "" (capture everything) is always valid.
func (f *FilterChecker) Check(ctx context.Context, filter string) error {
	if filter == "" {
		return nil
	}
	if err := staticFilterCheck(filter); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidFilter, err)
	}
	f.mu.Lock()
	verdict, ok := f.verdicts[filter]
	f.mu.Unlock()
	if ok {
		return verdict
	}
	verdict, transient := f.compile(ctx, filter)
	if transient {
		return verdict // not cached: tcpdump could not be run at all
	}
	f.mu.Lock()
	if len(f.verdicts) >= maxCachedFilters {
		clear(f.verdicts)
	}
	f.verdicts[filter] = verdict
	f.compiles++
	f.mu.Unlock()
	return verdict
}

func staticFilterCheck(filter string) error {
	if len(filter) > MaxFilterLen {
		return fmt.Errorf("%d bytes, at most %d allowed", len(filter), MaxFilterLen)
	}
	if strings.TrimSpace(filter) == "" {
		return errors.New("only white space")
	}
	if strings.HasPrefix(strings.TrimLeftFunc(filter, unicode.IsSpace), "-") {
		return errors.New("starts with '-': it could be read as a tcpdump option")
	}
	for _, r := range filter {
		if r != ' ' && r != '\t' && unicode.IsControl(r) {
			return fmt.Errorf("contains the control character %U", r)
		}
		if r == unicode.ReplacementChar {
			return errors.New("is not valid UTF-8")
		}
	}
	return nil
}

// filterLinkType is the link type of `tcpdump -i any` captures (libpcap ≥ 1.10): the filter
// is compiled for it, so its verdict is the capture's.
const filterLinkType = "LINUX_SLL2"

// compile runs `tcpdump -d -y LINUX_SLL2 -- filter`; transient reports that tcpdump could not
// run. Without -i, tcpdump compiles for the link type alone (pcap_open_dead): it opens no
// capture socket, needs no privilege and touches no interface of the host, whereas
// `-d -i any` would open an AF_PACKET socket on the host just to learn the link type.
func (f *FilterChecker) compile(ctx context.Context, filter string) (err error, transient bool) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.tcpdump, "-d", "-y", filterLinkType, "--", filter)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	var exit *exec.ExitError
	switch {
	case runErr == nil:
		return nil, false
	case errors.As(runErr, &exit) && ctx.Err() == nil:
		msg := strings.TrimSpace(lastLine(stderr.String()))
		msg = strings.TrimPrefix(msg, "tcpdump: ")
		if msg == "" {
			msg = runErr.Error()
		}
		return fmt.Errorf("%w: tcpdump does not accept %q: %s", ErrInvalidFilter, filter, msg), false
	default:
		return fmt.Errorf("check capture filter with %s: %w", f.tcpdump, runErr), true
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
