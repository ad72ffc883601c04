package capture

import (
	"context"
	"time"
)

// update takes the informative fields, stop grace, cooldown and max_duration of a later
// Ensure of the same capture. The deadline counts from when the capture started (time spent
// queued or waiting for the pod's previous capture to stop does not count). A later decision
// with the same max_duration leaves it alone; one with another max_duration moves it to now +
// that duration, so a rule may return the time left until an absolute end
// (rules/debug-until.rego does). A capture in its stop grace continues: its deadline is the
// one it had before. resumed reports that.
func (r *run) update(spec Spec, now time.Time) (resumed bool) {
	r.mu.Lock()
	r.reason, r.alerts, r.trigger = spec.Reason, spec.Alerts, spec.Trigger
	r.stopGrace, r.cooldown = spec.StopGrace, spec.Cooldown
	moved := false
	if !r.graceUntil.IsZero() {
		r.graceUntil, r.deadline, r.heldDeadline = time.Time{}, r.heldDeadline, time.Time{}
		moved, resumed = true, true
	}
	if spec.MaxDuration != r.maxDuration {
		r.maxDuration = spec.MaxDuration
		if r.armed {
			r.deadline = deadlineAfter(now, spec.MaxDuration)
			moved = true
		}
	}
	r.mu.Unlock()
	if moved {
		r.deadlineChanged()
	}
	return resumed
}

// deadlineChanged tells watchDeadline to read the deadline again; never blocks.
func (r *run) deadlineChanged() {
	select {
	case r.deadlineMoved <- struct{}{}:
	default:
	}
}

// armDeadline starts the capture's max_duration clock; called once, as the capture starts.
// now is also when the capture began, its capture.json's started. A capture already in its
// stop grace keeps the earlier of the two ends.
func (r *run) armDeadline(now time.Time) {
	r.mu.Lock()
	r.armed, r.began = true, now
	r.deadline = deadlineAfter(now, r.maxDuration)
	if !r.graceUntil.IsZero() {
		r.heldDeadline, r.deadline = r.deadline, earlier(r.deadline, r.graceUntil)
	}
	r.mu.Unlock()
}

// graceful reports whether the capture may run on for a stop grace once it is no longer
// desired: a started (or starting) non-manual capture of the pod uid whose latest decision
// asked for one.
func (r *run) graceful(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.phase {
	case PhaseStarting, PhaseRunning, PhaseBackoff:
	default:
		return false
	}
	return r.spec.Source != SourceManual && r.spec.UID == uid && r.stopGrace > 0
}

// beginGrace starts the capture's stop grace at now, unless it is in it already: its
// deadline becomes the end of the grace, or stays the max_duration end if that comes first.
// It returns when the capture stops and whether this call began the grace.
func (r *run) beginGrace(now time.Time) (until time.Time, began bool) {
	r.mu.Lock()
	if !r.graceUntil.IsZero() {
		defer r.mu.Unlock()
		return r.graceUntil, false
	}
	r.graceUntil = now.Add(r.stopGrace)
	r.heldDeadline = r.deadline
	if r.armed {
		r.deadline = earlier(r.deadline, r.graceUntil)
	}
	until = r.graceUntil
	r.mu.Unlock()
	r.deadlineChanged()
	return until, true
}

// inGrace reports whether the capture is in its stop grace.
func (r *run) inGrace() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.graceUntil.IsZero()
}

// earlier is the earlier of two deadlines, zero meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
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
				if r.inGrace() {
					m.endGrace(r) // no longer desired: it stops as if Stop came now
					return
				}
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
