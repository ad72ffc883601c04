package capturetest

import (
	"context"
	"fmt"
	"sync"

	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
)

var _ capture.Engine = (*Engine)(nil)

// OpenCall is one call of Engine.Open.
type OpenCall struct {
	Target  capture.Target
	Options capture.SourceOptions
}

// Engine is a capture.Engine that opens fake Sources and records its calls.
type Engine struct {
	newSource func(capture.Target, capture.SourceOptions) *Source

	// mu protects the fields below.
	mu      sync.Mutex
	err     error
	opens   []OpenCall
	sources []*Source
}

// NewEngine returns an engine whose Open returns newSource(target, options). A nil
// newSource opens held LINUX_SLL2 sources without packets: captures that run until closed.
func NewEngine(newSource func(capture.Target, capture.SourceOptions) *Source) *Engine {
	if newSource == nil {
		newSource = func(_ capture.Target, o capture.SourceOptions) *Source {
			return NewSource(layers.LinkTypeLinuxSLL2, snaplen(o)).Hold()
		}
	}
	return &Engine{newSource: newSource}
}

func snaplen(o capture.SourceOptions) uint32 {
	if o.Snaplen > 0 {
		return uint32(o.Snaplen)
	}
	return capture.DefaultSnaplen
}

// SetErr makes the following Opens fail with err (nil: succeed again).
func (e *Engine) SetErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

// Open implements capture.Engine. Failed calls are recorded too.
func (e *Engine) Open(ctx context.Context, t capture.Target, o capture.SourceOptions) (capture.Source, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.opens = append(e.opens, OpenCall{Target: t, Options: o})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e.err != nil {
		return nil, e.err
	}
	s := e.newSource(t, o)
	e.sources = append(e.sources, s)
	return s, nil
}

// Opens returns the calls of Open so far.
func (e *Engine) Opens() []OpenCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]OpenCall(nil), e.opens...)
}

// Sources returns the sources opened so far, oldest first.
func (e *Engine) Sources() []*Source {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Source(nil), e.sources...)
}

var _ capture.Resolver = (*Resolver)(nil)

// Resolver is a capture.Resolver backed by a map of pods ("namespace/name") to targets or
// errors. Unknown pods resolve to capture.ErrPodNotFound.
type Resolver struct {
	// mu protects the fields below.
	mu      sync.Mutex
	targets map[string]capture.Target
	errs    map[string]error
	calls   int
}

// NewResolver returns an empty resolver.
func NewResolver() *Resolver {
	return &Resolver{targets: map[string]capture.Target{}, errs: map[string]error{}}
}

// Set makes the pod resolve to t.
func (r *Resolver) Set(namespace, name string, t capture.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.errs, namespace+"/"+name)
	r.targets[namespace+"/"+name] = t
}

// SetErr makes resolving the pod fail with err.
func (r *Resolver) SetErr(namespace, name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, namespace+"/"+name)
	r.errs[namespace+"/"+name] = err
}

// Delete forgets the pod: it resolves to capture.ErrPodNotFound.
func (r *Resolver) Delete(namespace, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, namespace+"/"+name)
	delete(r.errs, namespace+"/"+name)
}

// Calls reports how many times Resolve was called.
func (r *Resolver) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Resolve implements capture.Resolver.
func (r *Resolver) Resolve(ctx context.Context, namespace, name, _ string) (capture.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := ctx.Err(); err != nil {
		return capture.Target{}, err
	}
	key := namespace + "/" + name
	if err, ok := r.errs[key]; ok {
		return capture.Target{}, err
	}
	if t, ok := r.targets[key]; ok {
		return t, nil
	}
	return capture.Target{}, fmt.Errorf("pod %s: %w", key, capture.ErrPodNotFound)
}
