package native

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"

	"github.com/podcap/podcap/agent/capture"
)

// maxCachedVerdicts bounds the FilterChecker's cache; it is emptied when full.
const maxCachedVerdicts = 1024

// FilterChecker tells, before a capture is decided, whether the native engine runs a filter
// exactly: it compiles the filter as Open does (tcpdump -ddd, then cookedProgram), without
// any socket or privilege, so that a decision the native engine would have to widen is
// refused when it is checked rather than failing at every start. Verdicts are cached by
// expression. It needs only tcpdump, not a working engine.
type FilterChecker struct {
	tcpdump string

	mu sync.Mutex
	// mu protects the field below.
	verdicts map[string]error
}

// NewFilterChecker compiles filters with the tcpdump at path (a name is looked up on PATH).
func NewFilterChecker(path string) *FilterChecker {
	return &FilterChecker{tcpdump: path, verdicts: map[string]error{}}
}

// Check returns nil when the native engine runs filter exactly ("" always). A refusal wraps
// capture.ErrInvalidFilter, and ErrUntranslatableFilter when tcpdump compiles the filter but
// its program cannot run on a cooked socket (`len > 100`, `link[12] = 1`, `ip protochain 6`); any
// other error is transient (tcpdump could not run). The filter is expected to have passed
// capture.FilterChecker (the agent's one filter validator) first.
func (f *FilterChecker) Check(ctx context.Context, filter string) error {
	if filter == "" {
		return nil
	}
	f.mu.Lock()
	verdict, ok := f.verdicts[filter]
	f.mu.Unlock()
	if ok {
		return verdict
	}
	tcpdump, err := exec.LookPath(f.tcpdump)
	if err != nil {
		return fmt.Errorf("find tcpdump to compile the filter for the native engine: %w", err)
	}
	_, err = compileFilter(ctx, tcpdump, filter, capture.DefaultSnaplen)
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.Is(err, ErrUntranslatableFilter):
		err = fmt.Errorf("%w: %w", capture.ErrInvalidFilter, err)
	case errors.As(err, &exit) && ctx.Err() == nil:
		err = fmt.Errorf("%w: %w", capture.ErrInvalidFilter, err) // tcpdump refused it
	default:
		return err // not cached: tcpdump could not run at all
	}
	f.mu.Lock()
	if len(f.verdicts) >= maxCachedVerdicts {
		clear(f.verdicts)
	}
	f.verdicts[filter] = err
	f.mu.Unlock()
	return err
}
