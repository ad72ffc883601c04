// Package alertstest has hand-written fakes of package alerts' interfaces, for unit tests.
package alertstest

import (
	"context"
	"sync"

	"github.com/podcap/podcap/agent/alerts"
)

var _ alerts.Recorder = (*Recorder)(nil)

// Recorder is a fake alerts.Recorder: it keeps every notification it is given and answers
// with Err (if set) or Result (if set; else every alert recorded). With Block set, Record
// first sends on Entered (if set) and then waits until Block is closed or ctx ends (then it
// returns ctx's cause), or only until Block is closed with IgnoreContext: a test holds a
// request in flight.
type Recorder struct {
	Err           error
	Result        *alerts.Recorded
	Block         chan struct{}
	Entered       chan struct{}
	IgnoreContext bool

	// mu protects the fields below.
	mu  sync.Mutex
	got []alerts.Notification
}

// Record implements alerts.Recorder.
func (r *Recorder) Record(ctx context.Context, n alerts.Notification) (alerts.Recorded, error) {
	if r.Block != nil {
		if r.Entered != nil {
			r.Entered <- struct{}{}
		}
		var done <-chan struct{}
		if !r.IgnoreContext {
			done = ctx.Done()
		}
		select {
		case <-r.Block:
		case <-done:
			return alerts.Recorded{}, context.Cause(ctx)
		}
	}
	r.mu.Lock()
	r.got = append(r.got, n)
	r.mu.Unlock()
	if r.Err != nil {
		return alerts.Recorded{}, r.Err
	}
	if r.Result != nil {
		return *r.Result, nil
	}
	return alerts.Recorded{Recorded: len(n.Alerts)}, nil
}

// Got returns the notifications Record was given, oldest first.
func (r *Recorder) Got() []alerts.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alerts.Notification(nil), r.got...)
}
