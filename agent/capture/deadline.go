package capture

import (
	"context"
	"time"
)

// update takes the deadline and reason of a later Ensure of the same capture: the deadline
// becomes now + MaxDuration (a policy that says "the next 10 minutes" keeps saying so).
func (r *run) update(spec Spec, now time.Time) {
	var deadline time.Time
	if spec.MaxDuration > 0 {
		deadline = now.Add(spec.MaxDuration)
	}
	r.mu.Lock()
	moved := !deadline.Equal(r.deadline) && (deadline.IsZero() || r.deadline.IsZero() || deadline.Sub(r.deadline).Abs() > time.Second)
	if moved {
		r.deadline = deadline
	}
	r.reason = spec.Reason
	r.mu.Unlock()
	if moved {
		select {
		case r.deadlineMoved <- struct{}{}:
		default:
		}
	}
}

// watchDeadline cancels the capture (through cancel) when its deadline passes and marks it
// expired; it returns when ctx ends.
func (m *Manager) watchDeadline(ctx context.Context, r *run, cancel context.CancelFunc) {
	for {
		r.mu.Lock()
		deadline := r.deadline
		r.mu.Unlock()
		var fire <-chan time.Time
		stop := func() {}
		if !deadline.IsZero() {
			t := time.NewTimer(deadline.Sub(m.cfg.Clock.Now()))
			fire, stop = t.C, func() { t.Stop() }
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-r.deadlineMoved:
			stop()
			continue
		case <-fire:
			m.mu.Lock()
			r.expired = true
			m.mu.Unlock()
			cancel()
			return
		}
	}
}
