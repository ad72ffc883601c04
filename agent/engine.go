package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/policy"
)

// Engines is what the agent knows of its capture engines when it decides a capture.
type Engines struct {
	// Default is the agent's --engine (capture.EngineTcpdump or capture.EngineNative; ""
	// is tcpdump): the engine of manual captures and of decisions that name none.
	Default string
	// NativeFilters checks that the native engine runs a filter exactly
	// (native.FilterChecker): a refusal wraps capture.ErrInvalidFilter, any other error is
	// transient. Required to decide captures with a filter on the native engine.
	NativeFilters FilterChecker
}

// Of is the engine a capture of d runs on: the decision's engine, else the default.
func (e Engines) Of(d policy.Decision) string {
	switch {
	case d.Engine == policy.EngineNative:
		return capture.EngineNative
	case d.Engine == policy.EngineTcpdump:
		return capture.EngineTcpdump
	}
	return e.defaultEngine()
}

func (e Engines) defaultEngine() string {
	if e.Default == "" {
		return capture.EngineTcpdump
	}
	return e.Default
}

// checkNativeFilter refuses a filter the native engine cannot run exactly, for a capture
// that would run on it: never widened, never run on tcpdump instead.
func (e Engines) checkNativeFilter(ctx context.Context, d policy.Decision) error {
	if d.Filter == "" || e.Of(d) != capture.EngineNative {
		return nil
	}
	if e.NativeFilters == nil {
		return errors.New("check the filter for the native engine: the agent has no checker") // transient
	}
	if err := e.NativeFilters.Check(ctx, d.Filter); err != nil {
		if !errors.Is(err, capture.ErrInvalidFilter) {
			return err
		}
		how := "the agent's --engine"
		if d.Engine != "" {
			how = "its engine field"
		}
		return fmt.Errorf("%w (the capture would run on the native engine, by %s: it never widens a filter nor falls back to tcpdump; "+
			"ask for engine \"tcpdump\" to use this filter)", err, how)
	}
	return nil
}
