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
)

// MaxFilterLen bounds a BPF filter expression; real filters are far shorter.
const MaxFilterLen = 1024

// maxCachedFilters bounds the verdict cache; it is emptied when full.
const maxCachedFilters = 1024

// FilterChecker decides whether a BPF filter expression may reach a capture process. It is the
// agent's one filter validator: the manual annotation has no filter, and a policy decision's
// filter is checked here, not by package policy (which cannot import this one). A filter
// passes the checks of checkFilterText, then tcpdump must compile it as one argv element
// (`tcpdump -d -y LINUX_SLL2 -- <filter>`, no shell anywhere). Verdicts are cached by
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
	if err := checkFilterText(filter); err != nil {
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

// checkFilterText makes the checks of a filter that need no tcpdump. They are the agent's
// only filter rules besides tcpdump's own verdict (policy decisions are checked here too):
//   - at most MaxFilterLen bytes: bounds the tcpdump runs and the verdict cache;
//   - printable ASCII on one line: libpcap's grammar has no use for anything else (it splits
//     "host café" into "host caf" and garbage), and the filter is quoted in Events, logs and
//     capture.json, where a newline, an escape sequence or a bidi override would forge or hide
//     text. Tabs and newlines, which libpcap reads as blanks, are refused too: one spelling of
//     a blank keeps messages and Spec comparisons plain;
//   - not only blanks: "" is the one spelling of "all traffic";
//   - no leading '-': it would be read as a tcpdump option (`-z /tmp/x`), were it ever passed
//     without the "--" both tcpdump command lines put before it;
//   - none of ; $ ` : never BPF, so refused with a message that says the filter is never
//     shell input, instead of tcpdump's "syntax error".
func checkFilterText(filter string) error {
	if len(filter) > MaxFilterLen {
		return fmt.Errorf("%d bytes, longer than the limit of %d", len(filter), MaxFilterLen)
	}
	for i := 0; i < len(filter); i++ {
		if c := filter[i]; c < ' ' || c > '~' {
			return fmt.Errorf("byte %d is %q: a filter is printable ASCII on one line (no control characters, tabs, newlines, NUL or non-ASCII text)", i, filter[i:i+1])
		}
	}
	if strings.Trim(filter, " ") == "" {
		return errors.New(`only blanks: "" captures all traffic`)
	}
	if strings.HasPrefix(strings.TrimLeft(filter, " "), "-") {
		return errors.New("starts with '-': tcpdump would read it as an option")
	}
	if i := strings.IndexAny(filter, ";$`"); i >= 0 {
		return fmt.Errorf("%q is not part of BPF syntax (a filter is one argument of tcpdump, never shell input)", filter[i])
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
