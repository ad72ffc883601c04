package capture

import (
	"context"
	"time"
)

// update takes the reason and max_duration of a later Ensure of the same capture. The
// deadline counts from when the capture started (time spent queued or waiting for the pod's
// previous capture to stop does not count). A later decision with the same max_duration
// leaves it alone; one with another max_duration moves it to now + that duration, so a rule
// may return the time left until an absolute end (rules/debug-until.rego does).
func (r *run) update(spec Spec, now time.Time) {
	r.mu.Lock()
	r.reason = spec.Reason
	moved := false
	if spec.MaxDuration != r.maxDuration {
		r.maxDuration = spec.MaxDuration
		if r.armed {
			r.deadline = deadlineAfter(now, spec.MaxDuration)
			moved = true
		}
	}
	r.mu.Unlock()
	if moved {
		select {
		case r.deadlineMoved <- struct{}{}:
		default:
		}
	}
}

// armDeadline starts the capture's max_duration clock; called once, as the capture starts.
func (r *run) armDeadline(now time.Time) {
	r.mu.Lock()
	r.armed = true
	r.deadline = deadlineAfter(now, r.maxDuration)
	r.mu.Unlock()
}

func deadlineAfter(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// watchDeadline cancels the capture (through cancel) when its deadline passes and marks it
// expired; it returns when ctx ends. Its timer runs on the manager's clock.
func (m *Manager) watchDeadline(ctx context.Context, r *run, cancel context.CancelFunc) {
	for {
		r.mu.Lock()
		deadline := r.deadline
		r.mu.Unlock()
		var fire <-chan time.Time
		stop := func() {}
		if !deadline.IsZero() {
			left := deadline.Sub(m.cfg.Clock.Now())
			if left <= 0 {
				expire(r, cancel)
				return
			}
			t := m.cfg.Clock.NewTimer(left)
			fire, stop = t.C(), func() { t.Stop() }
		}
		select {
		case <-ctx.Done():
			stop()
			return
		case <-r.deadlineMoved:
			stop()
		case <-fire:
			// the deadline may have moved while the timer fired: the loop reads it again
		}
	}
}

// expire marks r as ended by its deadline and cancels it.
func expire(r *run, cancel context.CancelFunc) {
	r.mu.Lock()
	r.expired = true
	r.mu.Unlock()
	cancel()
}
